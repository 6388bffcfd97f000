//! `ringraft serve`: a node of the replicated KV/stream service.
//!
//! ```text
//!  shard threads (one per group, pinned), each: Raft + WAL + peer transport
//!  + Kv + the client service of the connections it accepted (frontend.rs):
//!    parse RESP, dispatch ──▶ PING/INFO/CLUSTER/-MOVED answered at once
//!    SET/DEL/XADD on its own group ─▶ proposed straight into its ring
//!    reads, and writes on another local group ─▶ that shard's mailbox
//!                                                (non-blocking submit)
//! ```
//!
//! No thread per connection: the shard loop owns the sockets, so a write
//! goes from the socket to the ring and back without a thread hop.
//!
//! Client addresses: node k's client port is `client port of this node - this
//! node's id + k`, on the host of node k's peer address (`ringraft cluster`
//! and the tests use `base + id`). That is how a node writes `-MOVED` for a
//! group another node leads.

pub mod connection;
pub mod frontend;
pub mod logger;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::serve::Durability;
use frontend::{ClientService, ServiceConfig};
use ringraft_engine::shard::{Frontend, FrontendFactory, Node, NodeError};
use ringraft_tools::service::kv::{Kv, KvConfig};
use ringraft_tools::service::resp::Limits;
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
    /// Open client connections at most (per node).
    pub connections_max: usize,
    /// Commands a connection may have in flight (pipelined) before the
    /// server stops reading it.
    pub pipeline_max: usize,
    /// Admission control: uncommitted record bytes per group at most.
    pub uncommitted_bytes_max: u64,
    /// How long a write waits for admission before `-BUSY`.
    pub admission_timeout: Duration,
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
    /// When each shard snapshots and purges its log (`--snapshot-log-percent`,
    /// `--snapshot-entries`).
    pub snapshot: ringraft_engine::shard::SnapshotConfig,
    /// Bounds of each shard's KV (equal on every replica).
    pub kv: KvConfig,
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
    /// A shard stopped on an error (the node is fail-stop).
    #[error("a shard stopped: {0}")]
    ShardStopped(String),
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

/// A node serving clients in this process (see [`start`]).
#[derive(Debug)]
pub struct RunningServer {
    node: Node,
    client_addr: SocketAddr,
}

impl RunningServer {
    /// Where clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The first error a shard stopped on, if any (then the node must be
    /// stopped and restarted: fail-stop).
    pub fn failure(&self) -> Option<String> {
        self.node.failure()
    }

    /// Stops every shard (closing the client connections) and waits for them.
    pub fn stop(self) -> Result<(), ServeError> {
        self.node.stop().map_err(ServeError::Node)
    }
}

fn check(config: &ServerConfig) -> Result<(), ServeError> {
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
    if config.connections_max == 0 || config.pipeline_max == 0 || config.pipeline_max > 1 << 16 {
        return Err(ServeError::Flag(
            "--connections-max must be > 0 and --pipeline-max in 1..=65536".into(),
        ));
    }
    Ok(())
}

/// Starts the node in this process, its shards serving clients on
/// `config.client_addr`; returns once every shard is up.
pub fn start(config: ServerConfig) -> Result<RunningServer, ServeError> {
    check(&config)?;
    let nodes = client_addresses(&config)?;
    let routing = RoutingTable::new(config.id, &nodes, config.shards as u16)
        .map_err(|e| ServeError::Flag(e.to_string()))?;
    // Bound before the node starts, so a port in use fails first.
    let listener =
        TcpListener::bind(config.client_addr).map_err(|source| ServeError::ClientListen {
            address: config.client_addr,
            source,
        })?;
    let client_addr = listener
        .local_addr()
        .map_err(|source| ServeError::ClientListen {
            address: config.client_addr,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::ClientListen {
            address: config.client_addr,
            source,
        })?;
    let node_config = crate::serve::node_config(&config);
    let budget = crate::serve::memory_budget(&config, &node_config);
    let limits = Limits::default();
    let service = Arc::new(ServiceConfig {
        routing,
        cluster_id: config.cluster_id,
        fsync: config.durability == Durability::Fsync,
        limits,
        pipeline_max: config.pipeline_max,
        out_bytes: frontend::out_bytes(&node_config),
        out_pause_bytes: 256 << 10,
        connections_max: config.connections_max,
        open: AtomicUsize::new(0),
        listener,
    });
    let factory: FrontendFactory<Kv> = Arc::new(move |context| {
        let service = ClientService::new(context, service.clone())?;
        Ok(Box::new(service) as Box<dyn Frontend<Kv>>)
    });
    let machines = (0..config.shards).map(|_| Kv::new(config.kv)).collect();
    let node = Node::start_with_frontends(node_config, machines, factory)?;
    log::info!(
        "node {} serving clients on {} with {} shards, durability {} (peers {:?})",
        config.id,
        client_addr,
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
    crate::serve::register_process_hooks(node.shared_states(), &config, &budget);
    Ok(RunningServer { node, client_addr })
}

/// Starts the node and serves clients until a shard fails (then returns
/// its error) or SIGINT/SIGTERM arrives.
pub fn run(config: ServerConfig) -> Result<(), ServeError> {
    let server = start(config)?;
    // Fail-stop: a shard that stopped on an IO error ends the process.
    // SIGINT/SIGTERM end it too, with status 0: every acknowledged write is
    // already flushed, so stopping here loses nothing a client was told.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(signal) = crate::signals::received() {
            log::info!(
                "signal {signal}: stopping the node on {}",
                server.client_addr()
            );
            return server.stop();
        }
        if let Some(failure) = server.failure() {
            return Err(ServeError::ShardStopped(failure));
        }
    }
}
