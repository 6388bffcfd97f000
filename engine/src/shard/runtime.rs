//! One shard's thread: the loop that glues the Raft core, the WAL ring, the
//! peer transport, the state machine and the mailbox.
//!
//! ```text
//!  epoll_wait({transport ring fd, WAL completion eventfd, mailbox eventfd,
//!              frontend epoll fd},
//!             timeout = time to the next tick)      ← an idle shard sleeps here
//!   ├─ tick due?            raft.tick()
//!   ├─ transport.poll(0)    accepts, handshakes, control reads, pending writes
//!   ├─ WAL completions      flush_reap ─▶ raft.flushed(io ids now durable)
//!   ├─ control frames       raft.step
//!   ├─ data frames          records ─▶ lent ring memory (run follows the log) or
//!   │                       scratch ─▶ raft.step_append ─▶ commit in place, or
//!   │                       truncate_after / append_raw (runtime/receive.rs)
//!   ├─ mailbox              Propose, if admitted (ring room, uncommitted bytes):
//!   │                       raft.propose(len) ─▶ wal.append_with (payload
//!   │                       copied once, into the ring), else waits (FIFO,
//!   │                       Busy past admission_timeout) ; Read: raft.read_index
//!   ├─ frontend.poll        client sockets on this thread (requests.rs): a
//!   │                       write's payload, encoded into one per-shard buffer,
//!   │                       is copied once into the ring, tagged
//!   ├─ outputs              hard state ─▶ superblock (before any message), the
//!                           leader's no-op, pop_outgoing ─▶ control slots / ring
//!                           slices on the data lane, flush_submit, apply
//!                           committed entries from the ring ─▶ replies
//!                           (mailbox slots, or frontend.proposal_done(tag))
//!   └─ frontend.flush       replies written to the client sockets
//! ```
//!
//! Entries never travel through a channel: the mailbox carries a request's
//! bytes once into the ring; replication, flushing and apply read the ring.
//! Every queue here has a bound fixed at start-up (see [`ShardBounds`]).

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringraft_net::frame::AppendEntries;
use ringraft_net::{DataEvent, PeerConfig, Transport, TransportConfig};
use ringraft_wal::record::{RecordKind, Records};
use ringraft_wal::{CreateOptions, IoId, OpenOptions, Wal};

mod receive;

use super::frontend::Frontend;
use super::mailbox::{Mailbox, Outcome, Ticket};
use super::state_machine::{ResponseSlots, ResponseWriter, StateMachine};
use super::wire;

// The frontend hook (client sockets served on this thread) and the origin
// of a proposal (mailbox ticket or frontend tag) live next door; so do
// snapshots. Child modules, so their `impl Shard` reaches private fields.
#[path = "requests.rs"]
mod requests;
#[path = "snapshot.rs"]
mod snapshot;
use crate::raft::{
    Append, AppendOutcome, Body, Config, EntryMeta, HardState, LogMeta, NodeId, Outgoing,
    ProgressState, RaftNode, ReadError, ReadState, Recovered, Role, SplitMix64,
};
use requests::Origin;
pub use requests::{FrontendMaker, ShardRequests};
pub use snapshot::{Damage, SnapshotConfig, SnapshotFileError, SnapshotHeader};

/// Why a shard could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The WAL refused (open, create, write, read).
    #[error("shard {shard}: WAL {path}: {source}")]
    Wal {
        /// Shard index.
        shard: u32,
        /// The WAL file.
        path: PathBuf,
        /// What the WAL said.
        source: ringraft_wal::WalError,
    },
    /// The transport could not start or wait.
    #[error("shard {shard}: transport: {source}")]
    Transport {
        /// Shard index.
        shard: u32,
        /// What the transport said.
        source: ringraft_net::TransportError,
    },
    /// The Raft configuration or recovered log is refused.
    #[error("shard {shard}: raft: {source}")]
    Raft {
        /// Shard index.
        shard: u32,
        /// What the core said.
        source: crate::raft::ConfigError,
    },
    /// The state machine could not apply a committed entry.
    #[error("shard {shard}: apply: {source}")]
    Apply {
        /// Shard index.
        shard: u32,
        /// What the state machine said.
        source: super::state_machine::ApplyError,
    },
    /// A snapshot file is damaged, missing, or could not be written.
    #[error("shard {shard}: snapshot: {source}")]
    Snapshot {
        /// Shard index.
        shard: u32,
        /// What is wrong.
        source: SnapshotFileError,
    },
    /// The WAL ring is too small to ever take a whole peer frame, so this
    /// node, as a follower, would never receive an entry.
    #[error(
        "shard {shard}: WAL ring memory of {ring_bytes} bytes cannot receive a peer's data \
         frame of up to frame_bytes_max {frame_bytes_max} bytes; a follower needs a ring of at \
         least {ring_bytes_min} bytes (a larger ring_bytes / --ring-mib, or a larger WAL file)"
    )]
    RingTooSmall {
        /// Shard index.
        shard: u32,
        /// The WAL's ring memory.
        ring_bytes: u64,
        /// The transport's largest data frame.
        frame_bytes_max: usize,
        /// The least ring memory that receives such a frame.
        ring_bytes_min: u64,
    },
    /// epoll or eventfd failed.
    #[error("shard {shard}: {context}: {source}")]
    Os {
        /// Shard index.
        shard: u32,
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Fixed bounds of one shard's queues, chosen at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardBounds {
    /// Requests that may wait in (and be served from) the mailbox at once.
    pub mailbox_slots_max: usize,
    /// Largest request (a proposal's payload or a read request).
    pub request_bytes_max: usize,
    /// Follower writes awaiting their flush before data reads pause.
    pub follower_writes_max: usize,
    /// Appends per peer held back while its data lane is busy.
    pub deferred_appends_max: usize,
    /// Proposals of the shard's frontend (client connections) awaiting
    /// their apply; past it a proposal is answered `Busy`.
    pub frontend_proposals_max: usize,
    /// Admission control: record bytes proposed and not yet committed at
    /// most (a proposal that would pass it waits; one larger than it goes
    /// alone when nothing is uncommitted).
    pub uncommitted_bytes_max: u64,
    /// How long a proposal waits for admission before it is answered
    /// `Busy` (mailbox callers wait in `mailbox_slots_max` FIFO slots).
    pub admission_timeout: Duration,
}

impl Default for ShardBounds {
    fn default() -> ShardBounds {
        ShardBounds {
            mailbox_slots_max: 256,
            request_bytes_max: 64 << 10,
            follower_writes_max: 1024,
            deferred_appends_max: 32,
            frontend_proposals_max: 4096,
            uncommitted_bytes_max: 4 << 20,
            admission_timeout: Duration::from_secs(1),
        }
    }
}

/// Everything one shard needs to start.
#[derive(Debug)]
pub struct ShardConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Shard index = Raft group.
    pub shard_id: u32,
    /// Cluster id (WAL superblock and transport handshake).
    pub cluster_id: u64,
    /// Every voter (including this node) with its peer address for this shard.
    pub voters: Vec<(NodeId, SocketAddr)>,
    /// The bound peer listener of this shard.
    pub listener: TcpListener,
    /// The WAL file (created if absent).
    pub wal_path: PathBuf,
    /// WAL geometry for a file created now.
    pub wal_create: CreateOptions,
    /// Raft options (id and voters are set from the fields above).
    pub raft: Config,
    /// Length of a Raft tick.
    pub tick: Duration,
    /// Queue bounds.
    pub bounds: ShardBounds,
    /// Pin the thread to this CPU.
    pub core: Option<usize>,
    /// The node that should lead this group when it is healthy (leadership
    /// is handed to it once it is caught up), or None.
    pub preferred_leader: Option<NodeId>,
    /// When to compact the log (snapshot file: the WAL path with `.snap`).
    pub snapshot: SnapshotConfig,
}

/// One peer's replication state as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's node id.
    pub id: NodeId,
    /// Highest index known replicated and durable there (leader only).
    pub matched: u64,
    /// Replication state (leader only; `Probe` otherwise).
    pub state: ProgressState,
}

/// A shard's state, refreshed by its loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    /// Shard index.
    pub shard: u32,
    /// Raft role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Leader known, if any.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Durable log index.
    pub durable_index: u64,
    /// Last entry covered by this shard's snapshot (0: none yet); the WAL
    /// holds only the entries after it.
    pub snapshot_index: u64,
    /// Every other voter.
    pub peers: Vec<PeerStatus>,
    /// Set when the shard stopped on an error.
    pub failed: Option<String>,
}

/// What a shard shares with other threads: its mailbox, its status and a stop flag.
#[derive(Debug)]
pub struct ShardShared {
    /// Requests into the shard.
    pub mailbox: Mailbox,
    /// Refreshed every loop turn.
    pub status: Mutex<ShardStatus>,
    /// Leader node id (0: unknown); read without a lock on every client command.
    pub leader: AtomicU64,
    /// Ask the loop to end.
    pub stop: AtomicBool,
    /// TESTING ONLY: fault hooks, applied by the loop at its next tick.
    pub faults: super::fault::FaultSwitch,
}

impl ShardShared {
    /// Shared state for shard `shard` of a group of `voters`.
    pub fn new(
        shard: u32,
        me: NodeId,
        voters: &[NodeId],
        bounds: &ShardBounds,
        reply_bytes_max: usize,
    ) -> std::io::Result<ShardShared> {
        let peers = voters
            .iter()
            .filter(|v| **v != me)
            .map(|&id| PeerStatus {
                id,
                matched: 0,
                state: ProgressState::Probe,
            })
            .collect();
        Ok(ShardShared {
            mailbox: Mailbox::new(
                bounds.mailbox_slots_max,
                bounds.request_bytes_max,
                reply_bytes_max,
            )?,
            status: Mutex::new(ShardStatus {
                shard,
                role: Role::Follower,
                term: 0,
                leader: None,
                commit: 0,
                applied: 0,
                last_index: 0,
                durable_index: 0,
                snapshot_index: 0,
                peers,
                failed: None,
            }),
            leader: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            faults: super::fault::FaultSwitch::default(),
        })
    }

    /// Asks the loop to end (it notices within one wake-up).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to the mailbox eventfd.
        unsafe { libc::write(self.mailbox.eventfd(), (&raw const one).cast(), 8) };
    }
}

/// Read ids given to the core: `generation << 24 | slot`.
const READ_SLOT_BITS: u32 = 24;

fn read_id(ticket: Ticket) -> u64 {
    (ticket.generation << READ_SLOT_BITS) | u64::from(ticket.slot)
}

fn read_ticket(id: u64) -> Ticket {
    Ticket {
        slot: (id & ((1 << READ_SLOT_BITS) - 1)) as u32,
        generation: id >> READ_SLOT_BITS,
    }
}

/// One running shard (lives on its own thread; `!Send` parts inside).
struct Shard<S: StateMachine> {
    shard: u32,
    me: NodeId,
    wal_path: PathBuf,
    raft: RaftNode<SplitMix64>,
    wal: Wal,
    transport: Transport,
    sm: S,
    slots: ResponseSlots,
    shared: Arc<ShardShared>,
    epoll: OwnedFd,
    /// Receive buffer of one data frame that does not go straight into the
    /// ring (see `runtime/receive.rs`).
    scratch: Box<[u8]>,
    /// Which buffer each partly received data frame sits in.
    receiver: receive::Receiver,
    /// Transport peer index → node id.
    peer_ids: Vec<NodeId>,
    deferred: Vec<VecDeque<Append>>,
    /// Per peer, an ack held back while a follower write that covers more
    /// is in flight (see `hold_ack`): one slot per peer.
    held_acks: Vec<Option<crate::raft::message::Message>>,
    follower_writes: VecDeque<IoId>,
    /// Our proposals awaiting apply, in index order (bound: mailbox
    /// slots + `frontend_proposals_max`).
    proposals: VecDeque<(IoId, Origin)>,
    /// Client service on this thread, if any (taken out while it polls).
    frontend: Option<Box<dyn Frontend<S>>>,
    /// Frontend proposals in `proposals` (≤ `frontend_proposals_max`).
    frontend_proposals: usize,
    /// Frontend proposals failed while the frontend was polling (and so
    /// out of `frontend`), handed back right after (≤ `frontend_proposals_max`).
    frontend_failed: VecDeque<(u64, Outcome)>,
    /// Mailbox proposals waiting for admission, oldest first, with their
    /// deadline (≤ `mailbox_slots_max`: each holds a mailbox slot).
    admission_waiting: VecDeque<(Ticket, Instant)>,
    /// Reads confirmed by ReadIndex, waiting for apply: (index, ticket).
    reads_ready: VecDeque<(u64, Ticket)>,
    /// Reads that asked before the new leader committed in its term.
    reads_retry: VecDeque<Ticket>,
    bounds: ShardBounds,
    tick: Duration,
    next_tick: Instant,
    preferred_leader: Option<NodeId>,
    leader_since: Option<Instant>,
    transfer_tried_term: u64,
    send_bytes_max: usize,
    /// Something happened in this loop turn: turn once more before sleeping,
    /// so the transport re-arms its socket polls (done in `poll`) and what
    /// they find right away is handled now, not at the next tick.
    worked: bool,
    /// Snapshot build, send and receive state.
    compaction: snapshot::Compaction,
    /// Which eventfds the last `epoll_wait` reported readable: the loop
    /// reads (clears) an eventfd only then, not every turn (two `read`s
    /// per turn saved, most of which would find nothing).
    ready: Ready,
}

/// Eventfds found readable by the last wait (level-triggered epoll: one
/// not read stays readable, so nothing is missed by skipping the others).
#[derive(Debug, Clone, Copy)]
struct Ready {
    wal: bool,
    mailbox: bool,
    /// The frontend's epoll fd (the frontend then asks it for events).
    frontend: bool,
}

impl Ready {
    /// Unknown (first turn): look at everything.
    const ALL: Ready = Ready {
        wal: true,
        mailbox: true,
        frontend: true,
    };
    /// The wait was interrupted: io_uring completion work ran (the WAL's
    /// or the transport's; the transport's queue is read every turn anyway).
    /// A mailbox or frontend fd that is readable too stays so and is
    /// reported by the next wait, which then returns at once.
    const INTERRUPTED: Ready = Ready {
        wal: true,
        mailbox: false,
        frontend: false,
    };
}

/// Starts a shard on a new thread. Returns once it has opened its WAL and
/// transport (or failed to), with the thread's handle.
pub fn spawn<S>(
    config: ShardConfig,
    sm: S,
    shared: Arc<ShardShared>,
    frontend: Option<FrontendMaker<S>>,
) -> Result<std::thread::JoinHandle<Result<(), ShardError>>, ShardError>
where
    S: StateMachine + Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let shard = config.shard_id;
    let handle = std::thread::Builder::new()
        .name(format!("shard-{shard}"))
        .spawn(move || {
            if let Some(core) = config.core {
                pin_to_core(core);
            }
            let opened = Shard::open(config, sm, shared.clone())
                .and_then(|mut s| s.attach_frontend(frontend).map(|()| s));
            let mut s = match opened {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(error) => {
                    let text = error.to_string();
                    let _ = ready_tx.send(Err(error));
                    return Err(ShardError::Os {
                        shard,
                        context: "start",
                        source: std::io::Error::other(text),
                    });
                }
            };
            let result = s.run();
            if let Err(error) = &result {
                log::error!("{error}; shard stopped");
                s.shared
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failed = Some(error.to_string());
            }
            s.fail_all(Outcome::Stopped);
            result
        })
        .map_err(|source| ShardError::Os {
            shard,
            context: "spawn",
            source,
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(error)) => {
            let _ = handle.join();
            Err(error)
        }
        Err(_) => {
            let _ = handle.join();
            Err(ShardError::Os {
                shard,
                context: "start",
                source: std::io::Error::other("the shard thread panicked"),
            })
        }
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read/write the local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            log::warn!(
                "could not pin to core {core}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn epoll_add(epoll: RawFd, fd: RawFd) -> std::io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl<S: StateMachine> Shard<S> {
    fn open(
        config: ShardConfig,
        mut sm: S,
        shared: Arc<ShardShared>,
    ) -> Result<Shard<S>, ShardError> {
        let shard = config.shard_id;
        let wal_err = |source| ShardError::Wal {
            shard,
            path: config.wal_path.clone(),
            source,
        };
        let mut wal = if config.wal_path.exists() {
            let options = OpenOptions {
                cluster_id: Some(u128::from(config.cluster_id)),
                tuning: config.wal_create.tuning,
                ..OpenOptions::default()
            };
            let wal = Wal::open(&config.wal_path, &options).map_err(wal_err)?;
            let report = wal.recovery_report();
            log::info!(
                "shard {shard}: recovered {} entries up to {} from {} (torn tail: {} records cut)",
                report.entries,
                report.last,
                config.wal_path.display(),
                report.discarded_records
            );
            wal
        } else {
            let mut options = config.wal_create;
            options.cluster_id = u128::from(config.cluster_id);
            options.shard_id = u64::from(shard);
            log::info!(
                "shard {shard}: creating {} ({} MiB)",
                config.wal_path.display(),
                options.capacity_bytes >> 20
            );
            Wal::create(&config.wal_path, &options).map_err(wal_err)?
        };
        let persisted = snapshot::load_at_start(&config, &mut wal, &mut sm)?;
        let snapshot_bytes = persisted.as_ref().map_or(0, |p| p.bytes);
        let (raft, hard) = Self::recover_raft(&config, &mut wal, snapshot_bytes)?;
        let compaction = snapshot::Compaction::new(&config, config.voters.len() - 1, persisted);
        log::info!(
            "shard {shard}: hard state term {} vote {:?}, log {}",
            hard.term,
            hard.vote,
            raft.log().last_id()
        );
        let mut tcfg = TransportConfig::new(
            config.cluster_id,
            config.node_id as u32,
            shard,
            config
                .listener
                .local_addr()
                .map_err(|source| ShardError::Os {
                    shard,
                    context: "listener address",
                    source,
                })?,
        );
        let mut peer_ids = Vec::new();
        for &(id, address) in &config.voters {
            if id != config.node_id {
                tcfg.peers.push(PeerConfig {
                    node_id: id as u32,
                    address,
                });
                peer_ids.push(id);
            }
        }
        let send_bytes_max = tcfg.msg_bytes_max;
        let ring_bytes = wal.superblock().ring_bytes;
        let ring_bytes_min = receive_ring_bytes_min(tcfg.frame_bytes_max);
        if ring_bytes < ring_bytes_min {
            return Err(ShardError::RingTooSmall {
                shard,
                ring_bytes,
                frame_bytes_max: tcfg.frame_bytes_max,
                ring_bytes_min,
            });
        }
        let scratch = vec![0u8; tcfg.frame_bytes_max].into_boxed_slice();
        let transport = Transport::with_listener(tcfg, config.listener)
            .map_err(|source| ShardError::Transport { shard, source })?;
        let os = |context| {
            move |source| ShardError::Os {
                shard,
                context,
                source,
            }
        };
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(os("epoll_create1")(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh epoll fd owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        epoll_add(fd, transport.ring_fd()).map_err(os("epoll transport"))?;
        epoll_add(fd, wal.completion_eventfd()).map_err(os("epoll wal"))?;
        epoll_add(fd, shared.mailbox.eventfd()).map_err(os("epoll mailbox"))?;
        let bounds = config.bounds;
        let peers = peer_ids.len();
        let slots = ResponseSlots::new(bounds.mailbox_slots_max.max(64), sm.response_bytes_max());
        Ok(Shard {
            shard,
            me: config.node_id,
            wal_path: config.wal_path,
            raft,
            wal,
            transport,
            sm,
            slots,
            shared,
            epoll,
            scratch,
            receiver: receive::Receiver::default(),
            peer_ids,
            deferred: (0..peers)
                .map(|_| VecDeque::with_capacity(bounds.deferred_appends_max))
                .collect(),
            held_acks: vec![None; peers],
            follower_writes: VecDeque::with_capacity(bounds.follower_writes_max),
            proposals: VecDeque::with_capacity(
                bounds.mailbox_slots_max + bounds.frontend_proposals_max,
            ),
            frontend: None,
            frontend_proposals: 0,
            frontend_failed: VecDeque::with_capacity(bounds.frontend_proposals_max),
            admission_waiting: VecDeque::with_capacity(bounds.mailbox_slots_max),
            reads_ready: VecDeque::with_capacity(bounds.mailbox_slots_max),
            reads_retry: VecDeque::with_capacity(bounds.mailbox_slots_max),
            bounds,
            tick: config.tick,
            next_tick: Instant::now() + config.tick,
            preferred_leader: config.preferred_leader,
            leader_since: None,
            transfer_tried_term: 0,
            send_bytes_max,
            worked: false,
            compaction,
            ready: Ready::ALL,
        })
    }

    /// The core restarted from the snapshot (`snapshot_bytes` long; the WAL
    /// starts right after it) and the WAL: its hard state and every entry's
    /// (term, size) after the snapshot.
    fn recover_raft(
        config: &ShardConfig,
        wal: &mut Wal,
        snapshot_bytes: u64,
    ) -> Result<(RaftNode<SplitMix64>, HardState), ShardError> {
        let shard = config.shard_id;
        let sb = wal.superblock();
        let hard = HardState {
            term: sb.hard_state.term,
            vote: (sb.hard_state.vote != 0).then_some(sb.hard_state.vote),
        };
        let snapshot = sb.start_prev;
        let last = wal.last_id();
        let mut metas = Vec::new();
        let mut next = snapshot.index + 1;
        while next <= last.index {
            let view = wal.read(next, 1 << 20).map_err(|source| ShardError::Wal {
                shard,
                path: config.wal_path.clone(),
                source,
            })?;
            for record in view.records().filter_map(Result::ok) {
                if record.header.kind == RecordKind::Entry {
                    metas.push(EntryMeta {
                        term: record.header.term,
                        bytes: LogMeta::entry_bytes(record.payload.len()),
                    });
                    next = record.header.index + 1;
                }
            }
            if view.is_empty() {
                break;
            }
        }
        let mut cfg = config.raft.clone();
        // Compaction is driven by the file's bytes, so the core must be able
        // to hold every entry the file can: a record takes at least 32 bytes.
        cfg.log_entries_max = cfg
            .log_entries_max
            .max((wal.capacity_bytes() / ringraft_wal::record::HEADER_BYTES as u64) as usize);
        cfg.id = config.node_id;
        cfg.voters = config.voters.iter().map(|v| v.0).collect();
        let seed = config.node_id.wrapping_mul(0x9E37_79B9)
            ^ u64::from(shard).wrapping_mul(0x85EB_CA6B)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let recovered = Recovered {
            hard_state: hard,
            snapshot,
            snapshot_bytes,
        };
        let raft = RaftNode::new(cfg, SplitMix64::new(seed), recovered, metas)
            .map_err(|source| ShardError::Raft { shard, source })?;
        Ok((raft, hard))
    }

    fn wal_error(&self, source: ringraft_wal::WalError) -> ShardError {
        ShardError::Wal {
            shard: self.shard,
            path: self.wal_path.clone(),
            source,
        }
    }

    fn run(&mut self) -> Result<(), ShardError> {
        while !self.shared.stop.load(Ordering::Acquire) {
            self.wait()?;
            let now = Instant::now();
            if now >= self.next_tick {
                self.raft.tick();
                self.next_tick += self.tick;
                if self.next_tick < now {
                    // A stall (e.g. a slow superblock write): do not replay missed ticks.
                    self.next_tick = now + self.tick;
                }
                self.maybe_transfer_leadership(now);
                if let Some(faults) = self.shared.faults.take_change() {
                    log::warn!("shard {}: TESTING fault hooks now {faults}", self.shard);
                    faults.apply(&mut self.wal, &mut self.transport);
                }
            }
            self.transport
                .poll(Duration::ZERO)
                .map_err(|source| ShardError::Transport {
                    shard: self.shard,
                    source,
                })?;
            self.reap_flushes()?;
            self.receive_control();
            self.receive_data()?;
            self.take_requests()?;
            self.poll_frontend()?;
            self.drive()?;
            self.flush_frontend();
            self.publish_status();
        }
        Ok(())
    }

    fn wait(&mut self) -> Result<(), ShardError> {
        let left = if std::mem::take(&mut self.worked) {
            Duration::ZERO
        } else {
            self.next_tick.saturating_duration_since(Instant::now())
        };
        // Round up so a wake-up never comes just before the tick is due.
        let timeout_ms = left.as_micros().div_ceil(1000) as i32;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: `events` is a valid array of 4 epoll_event for the kernel to fill.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(ShardError::Os {
                    shard: self.shard,
                    context: "epoll_wait",
                    source: error,
                });
            }
            self.ready = Ready::INTERRUPTED;
            return Ok(());
        }
        let wal_fd = self.wal.completion_eventfd() as u64;
        let mailbox_fd = self.shared.mailbox.eventfd() as u64;
        let frontend_fd = self.frontend.as_ref().map(|f| f.fd() as u64);
        self.ready = Ready {
            wal: false,
            mailbox: false,
            frontend: false,
        };
        for event in &events[..n as usize] {
            let fd = event.u64;
            self.ready.wal |= fd == wal_fd;
            self.ready.mailbox |= fd == mailbox_fd;
            self.ready.frontend |= Some(fd) == frontend_fd;
        }
        Ok(())
    }

    fn reap_flushes(&mut self) -> Result<(), ShardError> {
        if self.ready.wal {
            self.wal.clear_completion_eventfd();
        }
        let flushed = self.wal.flush_reap().map_err(|e| self.wal_error(e))?;
        if flushed != self.raft.log().flushed_id() {
            self.worked = true;
        }
        // The leader's writes carry their own ids; a follower's write ids
        // carry the leader's term, so they are reported as their index is covered.
        self.raft.flushed(flushed);
        while let Some(&id) = self.follower_writes.front() {
            if id.index > flushed.index {
                break;
            }
            self.follower_writes.pop_front();
            self.raft.flushed(id);
        }
        Ok(())
    }

    fn receive_control(&mut self) {
        while let Some((peer, frame)) = self.transport.next_control() {
            self.worked = true;
            let from = self.peer_ids[peer];
            match wire::from_frame(&frame, from, self.me) {
                Some(msg) => {
                    self.raft.step(msg);
                }
                None => log::debug!("shard {}: ignored {frame:?} from {from}", self.shard),
            }
        }
    }

    fn receive_data(&mut self) -> Result<(), ShardError> {
        for peer in 0..self.peer_ids.len() {
            // Only receive what the ring can surely take (else TCP pushes back).
            while self.transport.data_ready(peer)
                && self.follower_writes.len() < self.bounds.follower_writes_max
                && wal_has_room(&self.wal, self.scratch.len())
            {
                let event = self.receive_frame(peer);
                self.worked |= !matches!(event, DataEvent::Idle);
                match event {
                    DataEvent::Idle => break,
                    DataEvent::NoRoom { needed } => {
                        log::warn!(
                            "shard {}: a {needed}-byte frame exceeds the receive buffer",
                            self.shard
                        );
                        break;
                    }
                    DataEvent::Append {
                        head,
                        records_bytes,
                        summary,
                    } => {
                        let last = if summary.entries == 0 {
                            head.prev_index
                        } else {
                            summary.last.index
                        };
                        self.on_append(peer, head, records_bytes, last)?;
                    }
                    DataEvent::SnapshotChunk { head, bytes } => {
                        self.on_snapshot_chunk(peer, head, bytes)?;
                    }
                }
            }
        }
        self.release_stale_receives();
        Ok(())
    }

    fn on_append(
        &mut self,
        peer: usize,
        head: AppendEntries,
        records_bytes: usize,
        last: u64,
    ) -> Result<(), ShardError> {
        let append = Append {
            from: self.peer_ids[peer],
            to: self.me,
            term: head.term,
            prev: IoId::new(head.prev_term, head.prev_index),
            last,
            commit: head.leader_commit,
            bytes: records_bytes as u64,
        };
        if let Some(result) = self.maybe_append_in_place(&append, records_bytes) {
            return result;
        }
        let bytes = &self.scratch[..records_bytes];
        let outcome = self.raft.step_append(&append, entry_metas(bytes));
        let AppendOutcome::Write {
            truncate_after,
            first,
            last,
            io_id,
        } = outcome
        else {
            return Ok(());
        };
        self.write_from_scratch(truncate_after, first, last, io_id, records_bytes)
    }

    /// Writes what the core accepted of the run in `scratch[..records_bytes]`.
    fn write_from_scratch(
        &mut self,
        truncate_after: Option<u64>,
        first: u64,
        last: u64,
        io_id: IoId,
        records_bytes: usize,
    ) -> Result<(), ShardError> {
        if let Some(index) = truncate_after {
            self.drop_proposals_from(index + 1);
            self.wal
                .truncate_after(index, io_id.term)
                .map_err(|e| self.wal_error(e))?;
        }
        if last >= first {
            let (start, end) = run_range(&self.scratch[..records_bytes], first, last);
            let run = &self.scratch[start..end];
            self.wal.append_raw(run).map_err(|e| ShardError::Wal {
                shard: self.shard,
                path: self.wal_path.clone(),
                source: e,
            })?;
        }
        self.follower_writes.push_back(io_id);
        Ok(())
    }

    fn take_requests(&mut self) -> Result<(), ShardError> {
        if self.ready.mailbox {
            self.shared.mailbox.clear_eventfd();
        }
        for _ in 0..self.reads_retry.len() {
            let ticket = self.reads_retry.pop_front().expect("counted");
            self.start_read(ticket);
        }
        let now = Instant::now();
        self.retry_admission(now)?;
        while let Some(ticket) = self.shared.mailbox.pop() {
            self.worked = true;
            // The no-op of a new leader goes first, so proposals are accepted.
            self.take_noop()?;
            self.take_ticket(ticket, now)?;
        }
        Ok(())
    }

    fn start_read(&mut self, ticket: Ticket) {
        match self.raft.read_index(read_id(ticket)) {
            Ok(()) => {}
            Err(ReadError::NotLeader) => self.shared.mailbox.fail(
                ticket,
                Outcome::NotLeader {
                    leader: self.raft.leader(),
                },
            ),
            Err(ReadError::NoCommitInTerm) => self.reads_retry.push_back(ticket),
            Err(ReadError::Busy { .. }) => self.shared.mailbox.fail(ticket, Outcome::Busy),
        }
    }

    fn take_noop(&mut self) -> Result<(), ShardError> {
        if let Some(id) = self.raft.take_noop() {
            let written = self
                .wal
                .append(id.term, &[])
                .map_err(|e| self.wal_error(e))?;
            assert_eq!(written, id, "the WAL and the core agree on the no-op's id");
        }
        Ok(())
    }

    fn drive(&mut self) -> Result<(), ShardError> {
        if let Some((hard, version)) = self.raft.hard_state_to_persist() {
            let state = ringraft_wal::HardState {
                term: hard.term,
                vote: hard.vote.unwrap_or(0),
                commit: self.raft.committed_index(),
            };
            self.wal
                .save_hard_state(state)
                .map_err(|e| self.wal_error(e))?;
            self.raft.hard_state_persisted(version);
        }
        self.take_noop()?;
        while let Some(out) = self.raft.pop_outgoing() {
            self.worked = true;
            match out {
                Outgoing::Control(msg) => {
                    let Some(peer) = self.transport.peer_index(msg.to as u32) else {
                        continue;
                    };
                    if let Body::SnapshotChunk { .. } = msg.body {
                        // Its bytes come from the snapshot file, on the data lane.
                        self.queue_snapshot_chunk(peer, msg);
                        continue;
                    }
                    if self.hold_ack(peer, &msg) {
                        continue;
                    }
                    self.send_message(peer, &msg);
                }
                Outgoing::Append(append) => {
                    let Some(peer) = self.transport.peer_index(append.to as u32) else {
                        continue;
                    };
                    let queue = &mut self.deferred[peer];
                    if queue.len() == self.bounds.deferred_appends_max {
                        // The core resends what is lost (probe / heartbeat lagging).
                        queue.pop_front();
                    }
                    queue.push_back(append);
                }
            }
        }
        // Order matters for latency. The write is submitted first: a
        // follower's, before its control messages are written (an ack sent
        // now only repeats what is already durable; the one that counts
        // follows the flush); a leader's, before its appends go out. The
        // leader's submission delays the appends by one system call, but its
        // write then starts a network hop ahead of the followers' writes:
        // on a disk the replicas share (a cluster on one machine) their
        // flushes then overlap less, and the 1-client p50 measured 249 µs
        // against 264 µs with the appends first (5 alternating runs each).
        self.wal.flush_submit().map_err(|e| self.wal_error(e))?;
        self.release_held_acks();
        self.send_deferred()?;
        self.send_snapshot_chunks();
        self.transport.flush();
        self.apply()?;
        self.maybe_compact()?;
        Ok(())
    }

    fn send_message(&mut self, peer: usize, msg: &crate::raft::message::Message) {
        match wire::to_frame(msg) {
            Some(frame) => self.transport.send_control(peer, frame),
            None => log::debug!("shard {}: not sent: {msg:?}", self.shard),
        }
    }

    /// A follower answers every append at once, with what is durable so
    /// far; while a write of the append's entries is in flight that answer
    /// only repeats an older one, and the ack that counts follows the
    /// write's flush (`reap_flushes`). Sending it anyway costs a send here
    /// and a wake-up of the leader per append, on the 1-client critical
    /// path and at full load alike, so it is held until that write is
    /// durable: then either a newer ack replaced it, or it is sent
    /// (`release_held_acks`). Returns true if `msg` was held.
    fn hold_ack(&mut self, peer: usize, msg: &crate::raft::message::Message) -> bool {
        let Body::AppendResponse { reject, index, .. } = msg.body else {
            return false;
        };
        if reject {
            return false;
        }
        // Any ack to this peer makes an older held one moot.
        self.held_acks[peer] = None;
        let covered_later = self
            .follower_writes
            .back()
            .is_some_and(|write| write.index > index);
        if index == 0 || !covered_later || msg.term != self.raft.term() {
            return false;
        }
        self.held_acks[peer] = Some(*msg);
        true
    }

    /// Sends each held ack whose reason to wait is gone (no follower write
    /// beyond it in flight any more).
    fn release_held_acks(&mut self) {
        for peer in 0..self.held_acks.len() {
            let Some(msg) = self.held_acks[peer] else {
                continue;
            };
            let Body::AppendResponse { index, .. } = msg.body else {
                unreachable!("only acks are held");
            };
            let waiting = self
                .follower_writes
                .back()
                .is_some_and(|write| write.index > index);
            if !waiting || msg.term != self.raft.term() {
                self.held_acks[peer] = None;
                if msg.term == self.raft.term() {
                    self.send_message(peer, &msg);
                }
            }
        }
    }

    fn send_deferred(&mut self) -> Result<(), ShardError> {
        for peer in 0..self.deferred.len() {
            while self.transport.data_send_ready(peer) {
                let Some(append) = self.deferred[peer].pop_front() else {
                    break;
                };
                if let Some(rest) = self.send_append(peer, append)? {
                    // Room: one was just popped.
                    self.deferred[peer].push_front(rest);
                }
            }
        }
        Ok(())
    }

    /// Sends what one read of the WAL gives of `append` (ring memory, or
    /// the bounded file read buffer once the entries left the ring; a read
    /// stops at a ring segment's end too). Returns the rest, if the read
    /// fell short, to be sent next as its own append: the follower then sees
    /// contiguous runs and the window the core counted is really sent.
    fn send_append(&mut self, peer: usize, append: Append) -> Result<Option<Append>, ShardError> {
        let head = AppendEntries {
            term: append.term,
            prev_term: append.prev.term,
            prev_index: append.prev.index,
            leader_commit: append.commit,
        };
        let shard = self.shard;
        let mut rest = None;
        let result = if append.last == append.prev.index {
            self.transport.send_append(peer, head, &[])
        } else {
            let view = match self.wal.read(append.prev.index + 1, self.send_bytes_max) {
                Ok(view) => view,
                Err(error @ ringraft_wal::WalError::Purged { .. }) => {
                    // Queued before a compaction purged them: the core
                    // sends this follower a snapshot once it asks again.
                    log::debug!(
                        "shard {shard}: entries after {} left the log before sending: {error}",
                        append.prev
                    );
                    return Ok(None);
                }
                Err(error) => {
                    log::warn!(
                        "shard {shard}: cannot read entries after {} to send: {error}",
                        append.prev
                    );
                    return Ok(None);
                }
            };
            let bytes = view.bytes();
            let (start, end) = run_range(bytes, append.prev.index + 1, append.last);
            let got = view.last();
            if got.index < append.last && !view.is_empty() {
                rest = Some(Append {
                    prev: got,
                    ..append
                });
            }
            self.transport
                .send_append(peer, head, &[&bytes[start..end]])
        };
        match result {
            Ok(()) => Ok(rest),
            Err(error) => {
                // Not connected or busy: the core notices the missing ack and resends.
                log::debug!("shard {shard}: append to peer {peer} not sent: {error}");
                Ok(None)
            }
        }
    }

    fn apply(&mut self) -> Result<(), ShardError> {
        // Committed means durable on a quorum, which need not include this
        // node: when its own write is the quorum's slowest, waiting for it
        // too would add its flush to the client's latency for nothing. (A
        // snapshot waits for local durability instead: `compaction_due`.)
        let target = self.raft.committed_index();
        let batch_max = self.slots.slots_max();
        // A snapshot build reads the state across loop turns: it must not
        // change, unless the state machine keeps the build's view aside.
        while self.sm.applied().index < target
            && (!self.compaction.building() || self.sm.applies_during_build())
        {
            let from = self.sm.applied().index + 1;
            let view = self
                .wal
                .read(from, 1 << 20)
                .map_err(|source| ShardError::Wal {
                    shard: self.shard,
                    path: self.wal_path.clone(),
                    source,
                })?;
            let entries = view
                .records()
                .filter_map(Result::ok)
                .filter(|r| r.header.kind == RecordKind::Entry)
                .take_while(|r| r.header.index <= target)
                .take(batch_max)
                .map(|r| super::state_machine::Entry {
                    id: r.header.io_id(),
                    payload: r.payload,
                });
            self.sm
                .apply(entries, &mut self.slots)
                .map_err(|source| ShardError::Apply {
                    shard: self.shard,
                    source,
                })?;
            let applied = self.sm.applied();
            assert!(
                applied.index >= from,
                "the state machine applied nothing from {from}"
            );
            self.raft.applied(applied);
            self.complete_proposals(applied.index);
        }
        self.complete_reads();
        Ok(())
    }

    /// Our entries from `index` on were replaced (truncated by a new
    /// leader, or overwritten after we led again): their proposals will
    /// never apply. Keeps `proposals` sorted by index.
    fn drop_proposals_from(&mut self, index: u64) {
        while let Some(&(id, origin)) = self.proposals.back() {
            if id.index < index {
                break;
            }
            self.proposals.pop_back();
            self.fail_origin(origin, Outcome::Dropped);
        }
    }

    fn complete_proposals(&mut self, applied: u64) {
        while let Some(&(id, origin)) = self.proposals.front() {
            if id.index > applied {
                break;
            }
            self.proposals.pop_front();
            let ticket = match origin {
                Origin::Mailbox(ticket) => ticket,
                Origin::Frontend(tag) => {
                    self.frontend_done(tag, id);
                    continue;
                }
            };
            let slots = &self.slots;
            self.shared
                .mailbox
                .complete(ticket, |view| match slots.response(id) {
                    Some(reply) if reply.len() <= view.reply.len() => {
                        view.reply[..reply.len()].copy_from_slice(reply);
                        (reply.len(), Outcome::Replied)
                    }
                    // Another leader's entry took this index: ours was dropped.
                    _ => (0, Outcome::Dropped),
                });
        }
    }

    fn complete_reads(&mut self) {
        while let Some(read) = self.raft.take_read() {
            match read {
                ReadState::Ready { id, index } => {
                    self.reads_ready.push_back((index, read_ticket(id)));
                }
                ReadState::Failed { id } => self.shared.mailbox.fail(
                    read_ticket(id),
                    Outcome::NotLeader {
                        leader: self.raft.leader(),
                    },
                ),
            }
        }
        let applied = self.sm.applied().index;
        let sm = &self.sm;
        for _ in 0..self.reads_ready.len() {
            let (index, ticket) = self.reads_ready.pop_front().expect("counted");
            if index > applied {
                self.reads_ready.push_back((index, ticket));
                continue;
            }
            self.shared.mailbox.complete(ticket, |view| {
                let mut len = 0;
                let ok = {
                    let mut writer = ResponseWriter::new(view.reply, &mut len);
                    sm.query(view.request, &mut writer).is_ok()
                };
                if ok {
                    (len, Outcome::Replied)
                } else {
                    (0, Outcome::Busy)
                }
            });
        }
    }

    fn maybe_transfer_leadership(&mut self, now: Instant) {
        if self.raft.role() != Role::Leader {
            self.leader_since = None;
            return;
        }
        let since = *self.leader_since.get_or_insert(now);
        let Some(target) = self.preferred_leader else {
            return;
        };
        let term = self.raft.term();
        if target == self.me
            || self.transfer_tried_term == term
            || now.duration_since(since) < Duration::from_millis(500)
        {
            return;
        }
        let caught_up = self
            .raft
            .progress(target)
            .is_some_and(|p| p.recent_active && p.matched == self.raft.log().last_index());
        if caught_up {
            self.transfer_tried_term = term;
            log::info!(
                "shard {}: handing leadership of term {term} to node {target}",
                self.shard
            );
            let _ = self.raft.transfer_leadership(target);
        }
    }

    fn publish_status(&mut self) {
        let leader = self.raft.leader().unwrap_or(0);
        self.shared.leader.store(leader, Ordering::Release);
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        status.role = self.raft.role();
        status.term = self.raft.term();
        status.leader = self.raft.leader();
        status.commit = self.raft.committed_index();
        status.applied = self.sm.applied().index;
        status.last_index = self.raft.log().last_index();
        status.durable_index = self.raft.log().durable_index();
        status.snapshot_index = self.raft.log().snapshot().index;
        let is_leader = status.role == Role::Leader;
        for peer in status.peers.iter_mut() {
            match self.raft.progress(peer.id) {
                Some(p) if is_leader => {
                    peer.matched = p.matched;
                    peer.state = p.state;
                }
                _ => {
                    peer.matched = 0;
                    peer.state = ProgressState::Probe;
                }
            }
        }
    }

    fn fail_all(&mut self, outcome: Outcome) {
        while let Some((_, origin)) = self.proposals.pop_front() {
            self.fail_origin(origin, outcome);
        }
        while let Some((_, ticket)) = self.reads_ready.pop_front() {
            self.shared.mailbox.fail(ticket, outcome);
        }
        while let Some(ticket) = self.reads_retry.pop_front() {
            self.shared.mailbox.fail(ticket, outcome);
        }
        while let Some((ticket, _)) = self.admission_waiting.pop_front() {
            self.shared.mailbox.fail(ticket, outcome);
        }
        while let Some(ticket) = self.shared.mailbox.pop() {
            self.shared.mailbox.fail(ticket, outcome);
        }
    }
}

/// Whether the WAL can take `bytes` more of records now, with room to
/// spare for a segment's padding and block padding: in ring memory (space
/// is freed as the flusher makes it durable) and in the file (freed only by
/// purging). Checked before the core is told of a write, so the core and the
/// WAL never disagree about what was appended.
fn wal_has_room(wal: &Wal, bytes: usize) -> bool {
    let p = wal.positions();
    let ring_free = wal.superblock().ring_bytes - (p.accepted - p.durable);
    let file_free = wal.capacity_bytes() - (p.accepted - p.start);
    ring_free >= receive_ring_bytes_min(bytes) && file_free >= receive_ring_bytes_min(bytes)
}

/// Free ring (and file) bytes `wal_has_room` asks for a write of `bytes`:
/// the write and a segment's and blocks' padding, twice. A follower reads a
/// data frame only once there is room for the largest one
/// (`frame_bytes_max`), so a ring smaller than this for it never receives
/// anything: refused at start.
fn receive_ring_bytes_min(bytes: usize) -> u64 {
    2 * (bytes as u64 + 3 * ringraft_wal::BLOCK_BYTES as u64)
}

/// The (term, size) of each entry of a run the transport verified
/// (`verify_run`): walked without recomputing CRCs.
fn entry_metas(bytes: &[u8]) -> impl Iterator<Item = EntryMeta> + '_ {
    Records::verified(bytes)
        .filter_map(Result::ok)
        .filter(|r| r.header.kind == RecordKind::Entry)
        .map(|r| EntryMeta {
            term: r.header.term,
            bytes: LogMeta::entry_bytes(r.payload.len()),
        })
}

/// Byte range of the records with indexes `first..=last` in a run that
/// starts on a record boundary (padding between them included; append_raw
/// drops it). The run was verified already (by the transport, or by the WAL
/// that wrote or read it), so its CRCs are not computed again.
fn run_range(bytes: &[u8], first: u64, last: u64) -> (usize, usize) {
    let mut offset = 0;
    let mut start = None;
    let mut end = 0;
    for record in Records::verified(bytes).filter_map(Result::ok) {
        let len = record.bytes.len();
        if record.header.kind == RecordKind::Entry {
            let index = record.header.index;
            if index >= first && start.is_none() {
                start = Some(offset);
            }
            if index <= last {
                end = offset + len;
            }
            if index >= last {
                break;
            }
        }
        offset += len;
    }
    let start = start.unwrap_or(end);
    (start, end.max(start))
}
