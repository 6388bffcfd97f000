//! `ringraft serve`: a node of the replicated KV/stream service.
//!
//! ```text
//!  client ─▶ acceptor thread ─▶ one thread per connection (≤ connections_max)
//!              parse RESP, dispatch ──▶ PING/INFO/CLUSTER/-MOVED answered here
//!              SET/DEL/XADD ─▶ Node::propose(group)   ─┐ bounded mailbox of
//!              GET/XRANGE/XLEN ─▶ Node::read_index(group) ┘ the group's shard
//!  shard threads (one per group, pinned): Raft + WAL + peer transport + Kv
//! ```
//!
//! Client addresses: node k's client port is `client port of this node - this
//! node's id + k`, on the host of node k's peer address (`ringraft cluster`
//! and the tests use `base + id`). That is how a node writes `-MOVED` for a
//! group another node leads.

pub mod connection;
pub mod logger;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::serve::Durability;
use ringraft_engine::shard::{Node, NodeError, ShardStatus};
use ringraft_tools::service::command::{PeerStatus, ReplicationStatus};
use ringraft_tools::service::kv::{Kv, KvConfig};
use ringraft_tools::service::slots::{NodeAddr, RoutingTable};

/// Everything `ringraft serve` needs, parsed from flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id.
    pub id: u64,
    /// WAL directory.
    pub data_dir: PathBuf,
    /// Every node's base peer address.
    pub peers: Vec<(u64, SocketAddr)>,
    /// Where clients connect to this node.
    pub client_addr: SocketAddr,
    /// Shards (groups).
    pub shards: u32,
    /// Cluster id.
    pub cluster_id: u64,
    /// WAL file size per shard (created now), bytes.
    pub wal_capacity_bytes: u64,
    /// Open client connections at most.
    pub connections_max: usize,
    /// Pin shard i to core (first_core + i) mod cores.
    pub pin_cores: bool,
    /// Core of shard 0 when pinning.
    pub first_core: usize,
    /// Whether log writes wait for stable storage (`--durability`).
    pub durability: Durability,
    /// TESTING ONLY: fault hooks (`--fault`) and `DEBUG FAULT` (`--enable-debug-fault`).
    pub faults: ringraft_engine::shard::Faults,
    /// TESTING ONLY: answer `DEBUG FAULT`.
    pub enable_debug_fault: bool,
    /// Ring memory per shard (`--ring-mib`); None: half the file, at most 64 MiB.
    pub ring_bytes: Option<u64>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag is wrong.
    #[error("{0}")]
    Flag(String),
    /// The client port could not be bound.
    #[error("cannot listen for clients on {address}: {source}")]
    ClientListen {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Parses `1=HOST:PORT,2=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> Result<Vec<(u64, SocketAddr)>, ServeError> {
    let mut peers = Vec::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| ServeError::Flag(format!("--peers: `{item}` is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| ServeError::Flag(format!("--peers: `{id}` is not a node id")))?;
        if id == 0 {
            return Err(ServeError::Flag("--peers: node ids start at 1".into()));
        }
        let addr = addr
            .trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ServeError::Flag(format!("--peers: cannot resolve `{addr}`")))?;
        if peers.iter().any(|(other, _)| *other == id) {
            return Err(ServeError::Flag(format!(
                "--peers: node {id} is listed twice"
            )));
        }
        peers.push((id, addr));
    }
    Ok(peers)
}

/// What every connection thread shares.
#[derive(Debug)]
pub struct Shared {
    /// The running node.
    pub node: Node,
    /// Routing template (leaders refreshed per command from the node).
    pub routing: RoutingTable,
    /// Cluster id.
    pub cluster_id: u64,
    /// Log writes wait for stable storage (INFO, CONFIG GET appendonly).
    pub fsync: bool,
}

impl Shared {
    /// Every local shard's status as the service's INFO wants it.
    pub fn replication_status(&self) -> Vec<ReplicationStatus> {
        self.node.status().iter().map(to_replication).collect()
    }
}

fn to_replication(s: &ShardStatus) -> ReplicationStatus {
    ReplicationStatus {
        role: s.role,
        term: s.term,
        leader: s.leader,
        commit: s.commit,
        applied: s.applied,
        peers: s
            .peers
            .iter()
            .map(|p| PeerStatus {
                node: p.id,
                matched: p.matched,
                state: p.state,
            })
            .collect(),
    }
}

/// The client address of every node (see the module docs).
pub fn client_addresses(config: &ServerConfig) -> Result<Vec<NodeAddr>, ServeError> {
    let base = i64::from(config.client_addr.port()) - config.id as i64;
    config
        .peers
        .iter()
        .map(|&(id, peer)| {
            let port = base + id as i64;
            let port = u16::try_from(port).map_err(|_| {
                ServeError::Flag(format!("node {id}'s client port {port} is out of range"))
            })?;
            let client = if id == config.id {
                config.client_addr
            } else {
                SocketAddr::new(peer.ip(), port)
            };
            Ok(NodeAddr {
                id,
                client,
                bus_port: peer.port(),
            })
        })
        .collect()
}

/// Starts the node and serves clients until a shard fails (then returns its error).
pub fn run(config: ServerConfig) -> Result<(), ServeError> {
    if !config.peers.iter().any(|p| p.0 == config.id) {
        return Err(ServeError::Flag(format!(
            "--id {} is not in --peers",
            config.id
        )));
    }
    if config.wal_capacity_bytes < 8 << 20 || !config.wal_capacity_bytes.is_power_of_two() {
        return Err(ServeError::Flag(
            "--wal-mib must be a power of two, at least 8".into(),
        ));
    }
    if config.shards == 0 || config.shards > 16384 {
        return Err(ServeError::Flag("--shards must be in 1..=16384".into()));
    }
    let nodes = client_addresses(&config)?;
    let routing = RoutingTable::new(config.id, &nodes, config.shards as u16)
        .map_err(|e| ServeError::Flag(e.to_string()))?;
    let listener =
        TcpListener::bind(config.client_addr).map_err(|source| ServeError::ClientListen {
            address: config.client_addr,
            source,
        })?;
    let node_config = crate::serve::node_config(&config);
    let budget = crate::serve::memory_budget(&config, &node_config);
    let machines = (0..config.shards)
        .map(|_| Kv::new(KvConfig::default()))
        .collect();
    let node = Node::start(node_config, machines)?;
    log::info!(
        "node {} serving clients on {} with {} shards, durability {} (peers {:?})",
        config.id,
        config.client_addr,
        config.shards,
        config.durability.name(),
        config.peers
    );
    if config.durability == Durability::None {
        log::warn!(
            "--durability none: log writes are not synced (no RWF_DSYNC); \
             acknowledged writes may be lost on power failure"
        );
    }
    let shared = Arc::new(Shared {
        node,
        routing,
        cluster_id: config.cluster_id,
        fsync: config.durability == Durability::Fsync,
    });
    crate::serve::register_process_hooks(&shared, &config, &budget);
    let open = Arc::new(AtomicUsize::new(0));
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || accept_loop(listener, shared, open, config.connections_max))
            .map_err(|e| ServeError::Flag(format!("cannot start the acceptor: {e}")))?;
    }
    // Fail-stop: a shard that stopped on an IO error ends the process.
    // SIGINT/SIGTERM end it too, with status 0: every acknowledged write is
    // already flushed, so stopping here loses nothing a client was told.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(signal) = crate::signals::received() {
            log::info!("signal {signal}: stopping");
            return Ok(());
        }
        if let Some(failure) = shared.node.failure() {
            return Err(ServeError::Flag(format!("a shard stopped: {failure}")));
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    open: Arc<AtomicUsize>,
    connections_max: usize,
) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                log::warn!("accept: {error}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if open.load(Ordering::Acquire) >= connections_max {
            log::warn!("refusing a client: {connections_max} connections are open");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let shared = shared.clone();
        let open = open.clone();
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .stack_size(256 << 10)
            .spawn(move || {
                if let Err(error) = connection::serve(stream, shared) {
                    log::debug!("client connection ended: {error}");
                }
                open.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(error) = spawned {
            log::warn!("cannot start a client thread: {error}");
        }
    }
}
