//! [`Node`]: the library face of the engine. A node runs one shard thread
//! per Raft group; other threads talk to a shard only through its bounded
//! mailbox (fixed slots + eventfd wake-up).
//!
//! Addresses: shard `i` of a node listens for its peers on the node's peer
//! address with port `+ i`; shard `i` of every node forms group `i`.
//!
//! A server that wants its client connections served by the shard threads
//! themselves (no thread per connection, no mailbox hop) starts the node
//! with [`Node::start_with_frontends`]: each shard builds its
//! [`Frontend`](super::frontend::Frontend) on its own thread.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use ringraft_wal::CreateOptions;

use super::fault::Faults;
use super::frontend::{FrontendContext, FrontendFactory};
use super::mailbox::{CallError, Outcome, RequestKind};
use super::membership::{self, Membership, MembershipCheck, MembershipError};
use super::runtime::{
    self, ShardBounds, ShardConfig, ShardError, ShardShared, ShardStatus, SnapshotConfig,
};
use super::state_machine::StateMachine;
use crate::raft::{Config, NodeId};

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (one of `peers`).
    pub id: NodeId,
    /// Every node of the cluster (this one included) and its base peer
    /// address; shard `i` uses port + `i`.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Number of shards (= Raft groups).
    pub shards: u32,
    /// Where the WAL files live (`shard-<i>.wal`).
    pub data_dir: PathBuf,
    /// Cluster id: a WAL or a peer of another cluster is refused.
    pub cluster_id: u64,
    /// Length of a Raft tick.
    pub tick: Duration,
    /// Raft options (id and voters are filled in per shard).
    pub raft: Config,
    /// Geometry of WAL files created now; its `tuning` (buffers, queues,
    /// `sync_writes` for `--durability none`) applies to every open too.
    pub wal: CreateOptions,
    /// Queue bounds per shard.
    pub bounds: ShardBounds,
    /// Largest reply of a read (`StateMachine::query`); each mailbox slot
    /// reserves this much (zeroed, so only touched pages become resident).
    pub read_reply_bytes_max: usize,
    /// Pin shard `i` to core `(first_core + i) % cores`.
    pub pin_cores: bool,
    /// The core of shard 0 when pinning: nodes that share a machine (a
    /// local cluster) spread their shards over the cores instead of all
    /// taking core 0.
    pub first_core: usize,
    /// Hand group `i`'s leadership to node `peers[i % n]` when it is caught up,
    /// so every node leads some groups.
    pub spread_leaders: bool,
    /// When each shard compacts its log into `shard-<i>.snap`.
    pub snapshot: SnapshotConfig,
    /// TESTING ONLY: fault hooks (slow WAL writes, throttled peer data
    /// lanes), all off by default; see [`super::fault`].
    pub faults: Faults,
}

impl NodeConfig {
    /// Defaults: 10 ms ticks (elections after 100-200 ms), WAL files of
    /// 256 MiB with 32 MiB of ring memory, leadership spread.
    pub fn new(
        id: NodeId,
        peers: Vec<(NodeId, SocketAddr)>,
        shards: u32,
        data_dir: PathBuf,
    ) -> NodeConfig {
        let voters: Vec<NodeId> = peers.iter().map(|p| p.0).collect();
        let mut raft = Config::new(id, &voters);
        // Raised to the WAL's capacity / 32 at start; term runs: one per
        // leader change kept in the log (no compaction yet).
        raft.log_entries_max = 1 << 21;
        raft.term_runs_max = 1 << 16;
        // Reads served under the leader lease (CheckQuorum keeps it safe)
        // instead of waiting for a heartbeat round each.
        raft.lease_reads = true;
        raft.uncommitted_entries_max = 1 << 14;
        let wal = CreateOptions {
            capacity_bytes: 256 << 20,
            ring_bytes: 32 << 20,
            inflight_bytes_max: 8 << 20,
            ..CreateOptions::default()
        };
        NodeConfig {
            id,
            peers,
            shards,
            data_dir,
            cluster_id: 1,
            tick: Duration::from_millis(10),
            raft,
            wal,
            bounds: ShardBounds::default(),
            read_reply_bytes_max: 1 << 20,
            pin_cores: true,
            first_core: 0,
            spread_leaders: true,
            snapshot: SnapshotConfig::default(),
            faults: Faults::default(),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is inconsistent.
    #[error("bad configuration: {0}")]
    Config(String),
    /// A peer port could not be bound.
    #[error("shard {shard}: cannot listen on {address}: {source}")]
    Listen {
        /// Shard index.
        shard: u32,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard failed to start or stopped on an error.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The data directory belongs to another node, voter set, shard count
    /// or cluster (or its membership file cannot be read or written).
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a request to a shard came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// This node does not lead the group.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows.
        leader: Option<NodeId>,
    },
    /// Not admitted within `ShardBounds::admission_timeout` (the group's
    /// ring or uncommitted bytes stayed full: the quorum does not keep
    /// up), or too many reads wait: retry later.
    #[error("busy: not admitted in time")]
    Busy,
    /// The proposal was overwritten by a new leader (not applied).
    #[error("dropped by a leader change")]
    Dropped,
    /// The shard stopped.
    #[error("shard stopped")]
    Stopped,
    /// No such shard.
    #[error("no shard {0}")]
    NoShard(u32),
    /// The mailbox refused or timed out.
    #[error(transparent)]
    Call(#[from] CallError),
}

#[derive(Debug)]
struct ShardHandle {
    shared: Arc<ShardShared>,
    thread: Option<JoinHandle<Result<(), ShardError>>>,
}

/// A running node.
///
/// ```
/// use ringraft_engine::shard::{ApplyError, Entry, Node, NodeConfig, ResponseSlots,
///     ResponseWriter, SnapshotChunk, SnapshotError, StateMachine};
/// use ringraft_wal::IoId;
///
/// /// Sums the bytes of every payload and replies with the running total.
/// #[derive(Default)]
/// struct Sum { total: u64, applied: IoId }
///
/// impl StateMachine for Sum {
///     fn response_bytes_max(&self) -> usize { 8 }
///     fn apply<'a, I: Iterator<Item = Entry<'a>>>(&mut self, entries: I, out: &mut ResponseSlots)
///         -> Result<(), ApplyError> {
///         for e in entries {
///             self.total += e.payload.iter().map(|b| u64::from(*b)).sum::<u64>();
///             self.applied = e.id;
///             out.writer(e.id).write(&self.total.to_le_bytes()).unwrap();
///         }
///         Ok(())
///     }
///     fn applied(&self) -> IoId { self.applied }
///     fn query(&self, _: &[u8], reply: &mut ResponseWriter<'_>) -> Result<(), ApplyError> {
///         reply.write(&self.total.to_le_bytes()).unwrap();
///         Ok(())
///     }
///     fn snapshot_chunk(&mut self, _: u64, _: &mut [u8]) -> Result<SnapshotChunk, SnapshotError> {
///         Err(SnapshotError::UnexpectedOffset { expected: 0, got: 0 })
///     }
///     fn install_chunk(&mut self, _: IoId, _: u64, _: &[u8], _: bool) -> Result<(), SnapshotError> {
///         Err(SnapshotError::UnexpectedOffset { expected: 0, got: 0 })
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// // A one-node cluster: it elects itself.
/// let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let mut config = NodeConfig::new(1, vec![(1, peer)], 1, dir.path().into());
/// config.wal.capacity_bytes = 16 << 20;
/// config.wal.ring_bytes = 8 << 20;
/// config.wal.inflight_bytes_max = 3 << 20;
/// let node = Node::start(config, vec![Sum::default()]).unwrap();
/// while node.leader(0) != Some(1) {
///     std::thread::sleep(std::time::Duration::from_millis(10));
/// }
/// let mut reply = Vec::new();
/// node.propose(0, &[2, 3], &mut reply).unwrap(); // committed and applied
/// assert_eq!(reply, 5u64.to_le_bytes());
/// node.read_index(0, b"", &mut reply).unwrap(); // linearizable read
/// assert_eq!(reply, 5u64.to_le_bytes());
/// assert!(node.status()[0].applied >= 2);
/// node.stop().unwrap();
/// ```
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    shards: Vec<ShardHandle>,
    timeout: Duration,
}

impl Node {
    /// Starts one shard per state machine (`machines.len()` must equal
    /// `config.shards`). Returns once every shard opened its WAL and its
    /// peer listener, or the first error.
    pub fn start<S>(config: NodeConfig, machines: Vec<S>) -> Result<Node, NodeError>
    where
        S: StateMachine + Send + 'static,
    {
        Node::start_inner(config, machines, None)
    }

    /// Like [`Node::start`], and each shard also runs a frontend built by
    /// `factory` on the shard's thread (client connections served by the
    /// shard loop). The factory gets every shard's shared state, so a
    /// frontend can forward to another local shard's mailbox.
    pub fn start_with_frontends<S>(
        config: NodeConfig,
        machines: Vec<S>,
        factory: FrontendFactory<S>,
    ) -> Result<Node, NodeError>
    where
        S: StateMachine + Send + 'static,
    {
        Node::start_inner(config, machines, Some(factory))
    }

    fn start_inner<S>(
        config: NodeConfig,
        machines: Vec<S>,
        factory: Option<FrontendFactory<S>>,
    ) -> Result<Node, NodeError>
    where
        S: StateMachine + Send + 'static,
    {
        if machines.len() != config.shards as usize || config.shards == 0 {
            return Err(NodeError::Config(format!(
                "{} state machines for {} shards",
                machines.len(),
                config.shards
            )));
        }
        let Some(&(_, base)) = config.peers.iter().find(|p| p.0 == config.id) else {
            return Err(NodeError::Config(format!(
                "node {} is not in the peer list",
                config.id
            )));
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let voters: Vec<NodeId> = config.peers.iter().map(|p| p.0).collect();
        // Bind every listener first, so a port in use fails before any shard starts.
        let mut listeners = Vec::new();
        for shard in 0..config.shards {
            let address = with_port_offset(base, shard);
            let listener = TcpListener::bind(address).map_err(|source| NodeError::Listen {
                shard,
                address,
                source,
            })?;
            listeners.push(listener);
        }
        // After the ports: a start that cannot even listen records nothing.
        check_membership(&config)?;
        let mut node = Node {
            id: config.id,
            shards: Vec::new(),
            timeout: Duration::from_secs(5),
        };
        // Every shard's shared state exists before any shard starts, so a
        // frontend can reach all of them from the first turn.
        let mut all = Vec::with_capacity(machines.len());
        for (shard, sm) in (0..config.shards).zip(&machines) {
            all.push(Arc::new(
                ShardShared::new(
                    shard,
                    config.id,
                    &voters,
                    &config.bounds,
                    sm.response_bytes_max().max(config.read_reply_bytes_max),
                )
                .map_err(|source| NodeError::DataDir {
                    path: config.data_dir.clone(),
                    source,
                })?,
            ));
        }
        let all: Arc<[Arc<ShardShared>]> = all.into();
        for ((shard, sm), listener) in (0..config.shards).zip(machines).zip(listeners) {
            let shared = all[shard as usize].clone();
            let shard_config = ShardConfig {
                node_id: config.id,
                shard_id: shard,
                cluster_id: config.cluster_id,
                voters: config
                    .peers
                    .iter()
                    .map(|&(id, addr)| (id, with_port_offset(addr, shard)))
                    .collect(),
                listener,
                wal_path: config.data_dir.join(format!("shard-{shard}.wal")),
                wal_create: config.wal,
                raft: config.raft.clone(),
                tick: config.tick,
                bounds: config.bounds,
                core: config
                    .pin_cores
                    .then_some((config.first_core + shard as usize) % cores),
                preferred_leader: config
                    .spread_leaders
                    .then(|| voters[shard as usize % voters.len()]),
                snapshot: config.snapshot,
            };
            if config.faults.any() {
                shared.faults.set(config.faults);
            }
            // On error, `node` drops and stops the shards already running.
            let maker = factory.clone().map(|factory| {
                let context = FrontendContext {
                    shard,
                    shards: all.clone(),
                };
                Box::new(move || factory(context)) as runtime::FrontendMaker<S>
            });
            let thread = runtime::spawn(shard_config, sm, shared.clone(), maker)?;
            node.shards.push(ShardHandle {
                shared,
                thread: Some(thread),
            });
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards.len() as u32
    }

    /// How long a call waits for its answer (default 5 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn call(
        &self,
        shard: u32,
        kind: RequestKind,
        request: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), RequestError> {
        let handle = self
            .shards
            .get(shard as usize)
            .ok_or(RequestError::NoShard(shard))?;
        match handle
            .shared
            .mailbox
            .call(kind, request, reply, self.timeout)?
        {
            Outcome::Replied => Ok(()),
            Outcome::NotLeader { leader } => Err(RequestError::NotLeader { leader }),
            Outcome::Busy => Err(RequestError::Busy),
            Outcome::TooLarge {
                bytes,
                request_bytes_max,
            } => Err(RequestError::Call(CallError::TooLarge {
                bytes,
                request_bytes_max,
            })),
            Outcome::Dropped => Err(RequestError::Dropped),
            Outcome::Stopped => Err(RequestError::Stopped),
        }
    }

    /// Replicates `payload` through group `shard`; returns once it is
    /// committed (durable on a quorum) and applied here, with the state
    /// machine's reply in `reply`.
    pub fn propose(
        &self,
        shard: u32,
        payload: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), RequestError> {
        self.call(shard, RequestKind::Propose, payload, reply)
    }

    /// A linearizable read: the leader confirms its leadership with a
    /// quorum (ReadIndex), waits until that index is applied, then runs
    /// `StateMachine::query(request)` into `reply`.
    pub fn read_index(
        &self,
        shard: u32,
        request: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), RequestError> {
        self.call(shard, RequestKind::Read, request, reply)
    }

    /// TESTING ONLY: runs every shard with `faults` from its next tick on
    /// (see [`super::fault`]); `Faults::default()` turns them off.
    pub fn set_faults(&self, faults: Faults) {
        for s in &self.shards {
            s.shared.faults.set(faults);
        }
    }

    /// Every shard's shared state (status, mailbox, fault switch), for a
    /// handle that must outlive a borrow of the node (the testing-only
    /// `DEBUG FAULT` command of `ringraft serve`).
    pub fn shared_states(&self) -> Vec<Arc<ShardShared>> {
        self.shards.iter().map(|s| s.shared.clone()).collect()
    }

    /// The fault hooks asked for (see [`Node::set_faults`]).
    pub fn faults(&self) -> Faults {
        self.shards
            .first()
            .map_or(Faults::default(), |s| s.shared.faults.get())
    }

    /// The leader of group `shard` as this node knows it.
    pub fn leader(&self, shard: u32) -> Option<NodeId> {
        let id = self
            .shards
            .get(shard as usize)?
            .shared
            .leader
            .load(Ordering::Acquire);
        (id != 0).then_some(id)
    }

    /// Every shard's role, term, commit, applied and peers.
    pub fn status(&self) -> Vec<ShardStatus> {
        self.shards
            .iter()
            .map(|s| {
                s.shared
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .collect()
    }

    /// The first error a shard stopped on, if any (a stopped shard means
    /// the node must be restarted: fail-stop).
    pub fn failure(&self) -> Option<String> {
        self.status().into_iter().find_map(|s| s.failed)
    }

    /// Stops every shard and waits for the threads; returns the first error.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), NodeError> {
        for s in &self.shards {
            s.shared.request_stop();
        }
        let mut first = Ok(());
        for s in &mut self.shards {
            if let Some(thread) = s.thread.take() {
                match thread.join() {
                    Ok(Err(e)) if first.is_ok() => first = Err(NodeError::Shard(e)),
                    Err(_) if first.is_ok() => {
                        first = Err(NodeError::Config("a shard thread panicked".into()))
                    }
                    _ => {}
                }
            }
        }
        first
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// Refuses a data directory of another node, voter set, shard count or
/// cluster; records the membership of a new one (see `membership.rs`).
fn check_membership(config: &NodeConfig) -> Result<(), MembershipError> {
    let configured = Membership::new(config.cluster_id, config.id, config.shards, &config.peers);
    let dir = config.data_dir.display();
    match membership::check_or_store(&config.data_dir, &configured)? {
        MembershipCheck::Created | MembershipCheck::Matched => {}
        MembershipCheck::Adopted { wal_files } => log::info!(
            "{dir}: {wal_files} WAL files and no membership file (an older version): \
             recorded node {}, voters and {} shards from the configuration",
            config.id,
            config.shards
        ),
        MembershipCheck::AddressesMoved(moved) => {
            for (id, old, new) in moved {
                log::warn!("{dir}: node {id} moved from {old} to {new}; recorded");
            }
        }
    }
    Ok(())
}

/// `address` with its port moved up by `offset`.
pub fn with_port_offset(mut address: SocketAddr, offset: u32) -> SocketAddr {
    address.set_port(address.port() + offset as u16);
    address
}
