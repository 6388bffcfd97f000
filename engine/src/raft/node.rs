//! One Raft node: election, replication, commit, reads and snapshots, as a
//! deterministic state machine over ticks, messages and IO notifications.
//!
//! ```text
//!  inputs                         the node                     outputs (bounded)
//!  tick()                  ─┐                               ┌─ hard_state_to_persist()
//!  step(Message)            │   role, HardState{term,vote}   ├─ pop_outgoing(): control
//!  step_append(Append, ..)  ├─▶ LogMeta (terms, sizes)     ─▶│   messages and Append
//!  propose(len)             │   Progress per peer           │   descriptors; released only
//!  flushed(IoId)            │   committed / applied          │   once the hard state they
//!  applied(IoId)            │   (Watermarks)                 │   depend on is persisted
//!  hard_state_persisted(v)  │                               ├─ take_noop(): leader's entry
//!  compacted / snapshot_*  ─┘                               ├─ AppendOutcome: follower write
//!                                                           └─ take_read(): ReadIndex results
//! ```
//!
//! Rules kept here (each has a test in `tests.rs` or the simulator):
//! - A message leaves only when the term and vote it depends on are durable.
//! - A follower acknowledges only entries that are flushed and that it has
//!   confirmed to match the current leader; the leader counts its own log
//!   toward commit only up to what is flushed.
//! - Commit moves only by counting an entry of the current term, never back.

use std::sync::Arc;

use ringraft_wal::{IoId, Watermark};

use super::config::{Config, ConfigError, VOTERS_MAX};
use super::log::{LogFull, LogMeta};
use super::message::{Append, Body, EntryMeta, Message, NodeId, Outgoing};
use super::outbox::Outbox;
use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::read_index::{ReadError, ReadQueue, ReadState};
use super::rng::RaftRng;

/// Heartbeat rounds whose send tick is remembered for the lease.
const LEASE_ROUNDS_MAX: usize = 64;

/// Unsent appends a peer's ring holds beyond the replicate window: the
/// newest probe and one empty append nudging a lagging follower.
const APPENDS_BEYOND_WINDOW: usize = 2;

/// What a node must persist before messages depending on it are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Candidate voted for in `term`.
    pub vote: Option<NodeId>,
}

/// The durable state a node restarts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Last persisted hard state.
    pub hard_state: HardState,
    /// Last (term, index) covered by the local snapshot (ZERO if none).
    pub snapshot: IoId,
    /// Size of that snapshot, for sending it in chunks.
    pub snapshot_bytes: u64,
}

/// Role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether a vote would be granted (PreVote).
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// A leader transfer is in progress.
    #[error("leadership is being transferred")]
    Transferring,
    /// The new leader's empty entry must be taken (`take_noop`) and written first.
    #[error("the leader's empty entry has not been taken yet")]
    NoopPending,
    /// Too many entries wait for commit: retry after some commit.
    #[error("{uncommitted_entries_max} entries are uncommitted")]
    TooManyUncommitted {
        /// Configured bound.
        uncommitted_entries_max: usize,
    },
    /// The log metadata is full.
    #[error(transparent)]
    LogFull(#[from] LogFull),
}

/// Why a leader transfer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader transfers leadership.
    #[error("not the leader")]
    NotLeader,
    /// The target is this node or not a voter.
    #[error("node {0} is not another voter")]
    BadTarget(NodeId),
}

/// Why a compaction was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// Only applied entries may be covered by a snapshot.
    #[error("snapshot index {index} is past applied index {applied}")]
    NotApplied {
        /// Requested snapshot index.
        index: u64,
        /// Applied index.
        applied: u64,
    },
    /// The snapshot's (term, index) is not in the log.
    #[error("snapshot {0} is not an entry of the log")]
    Unknown(IoId),
}

/// What a follower must do with a received append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Write nothing (stale, rejected, or every entry already present).
    Nothing,
    /// Drop the log after `truncate_after` (if set), then write the received
    /// entries `first..=last`, as write `io_id`; report `flushed(io_id)`.
    Write {
        /// Keep entries up to here, drop the rest, before writing.
        truncate_after: Option<u64>,
        /// First received entry to write.
        first: u64,
        /// Last received entry to write (entries past it did not fit;
        /// `first - 1` if none did).
        last: u64,
        /// Id of this write.
        io_id: IoId,
    },
}

/// What a follower must do with a received control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing to store.
    Done,
    /// Store `len` bytes of the chunk at `offset` of snapshot `snapshot`.
    /// With `complete`, the snapshot is whole: install it durably, then call
    /// `snapshot_installed(snapshot)`.
    StoreSnapshotChunk {
        /// Snapshot the chunk belongs to.
        snapshot: IoId,
        /// Offset of the chunk.
        offset: u64,
        /// Length of the chunk.
        len: u64,
        /// Last chunk received.
        complete: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct IncomingSnapshot {
    snapshot: IoId,
    received_bytes: u64,
    total_bytes: u64,
}

/// A Raft node.
#[derive(Debug)]
pub struct RaftNode<R: RaftRng> {
    cfg: Config,
    /// This node's slot in `cfg.voters`.
    me: usize,
    rng: R,
    role: Role,
    hard: HardState,
    hard_version: u64,
    hard_persisted_version: u64,
    leader: Option<NodeId>,
    log: LogMeta,
    committed_index: u64,
    committed: Arc<Watermark>,
    applied: Arc<Watermark>,
    /// Slot i is voter i's progress; this node's own slot is unused.
    progress: Box<[Progress]>,
    votes: [Option<bool>; VOTERS_MAX],
    now_ticks: u64,
    election_elapsed_ticks: u64,
    heartbeat_elapsed_ticks: u64,
    randomized_timeout_ticks: u64,
    /// Refuse votes until one election timeout after a restart (the lease a
    /// leader may hold counts on this node's memory of its heartbeats).
    restart_guard: bool,
    transfer_target: Option<usize>,
    outbox: Outbox,
    /// Appends may be sent (new entries, acks or unpaused peers).
    appends_dirty: bool,
    noop: Option<IoId>,
    /// Follower: the log matches the current leader's up to here.
    confirmed_index: u64,
    acked_index: u64,
    heartbeat_round: u64,
    acked_rounds: [u64; VOTERS_MAX],
    round_sent_ticks: [u64; LEASE_ROUNDS_MAX],
    lease_until_ticks: u64,
    /// A TimeoutNow went out in this term: its target campaigns ignoring
    /// every follower's lease, whenever it arrives, so no lease holds until
    /// the term ends.
    lease_revoked: bool,
    reads: ReadQueue,
    snapshot_bytes: u64,
    /// Leader: bytes of the snapshot acknowledged by each peer.
    snapshot_acked: [u64; VOTERS_MAX],
    incoming_snapshot: Option<IncomingSnapshot>,
}

impl<R: RaftRng> RaftNode<R> {
    /// A node restarting from `recovered` with the log entries after the
    /// snapshot (`entries`, in order, all durable).
    pub fn new(
        cfg: Config,
        rng: R,
        recovered: Recovered,
        entries: impl IntoIterator<Item = EntryMeta>,
    ) -> Result<RaftNode<R>, ConfigError> {
        cfg.validate()?;
        let me = cfg
            .voters
            .iter()
            .position(|v| *v == cfg.id)
            .expect("validated");
        let mut log = LogMeta::new(cfg.log_entries_max, cfg.term_runs_max, recovered.snapshot);
        for e in entries {
            log.append(e.term, e.bytes)
                .map_err(ConfigError::RecoveredLogTooLarge)?;
        }
        let last = log.last_id();
        log.accept(last);
        log.flushed(last);
        let mut hard = recovered.hard_state;
        hard.term = hard.term.max(last.term);
        let voters = cfg.voters.len();
        let progress = (0..voters)
            .map(|_| Progress::new(0, cfg.inflight_msgs_max, cfg.inflight_bytes_max))
            .collect();
        let snap = recovered.snapshot;
        let mut node = RaftNode {
            me,
            rng,
            role: Role::Follower,
            hard,
            hard_version: 0,
            hard_persisted_version: 0,
            leader: None,
            log,
            committed_index: snap.index,
            committed: Arc::new(Watermark::new("committed", snap, cfg.watermark_waiters_max)),
            applied: Arc::new(Watermark::new("applied", snap, cfg.watermark_waiters_max)),
            progress,
            votes: [None; VOTERS_MAX],
            now_ticks: 0,
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_timeout_ticks: 0,
            // A node that never had a term never acknowledged a leader.
            restart_guard: cfg.check_quorum && recovered.hard_state.term > 0,
            transfer_target: None,
            outbox: Outbox::new(voters, cfg.inflight_msgs_max + APPENDS_BEYOND_WINDOW),
            appends_dirty: false,
            noop: None,
            confirmed_index: snap.index,
            acked_index: 0,
            heartbeat_round: 0,
            acked_rounds: [0; VOTERS_MAX],
            round_sent_ticks: [0; LEASE_ROUNDS_MAX],
            lease_until_ticks: 0,
            lease_revoked: false,
            reads: ReadQueue::new(cfg.reads_max),
            snapshot_bytes: recovered.snapshot_bytes,
            snapshot_acked: [0; VOTERS_MAX],
            incoming_snapshot: None,
            cfg,
        };
        if node.hard != recovered.hard_state {
            node.hard_version = 1;
        }
        node.randomize_timeout();
        Ok(node)
    }

    // ----- accessors -------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.hard.term
    }

    /// The hard state (maybe not yet persisted).
    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Log metadata.
    pub fn log(&self) -> &LogMeta {
        &self.log
    }

    /// Commit index.
    pub fn committed_index(&self) -> u64 {
        self.committed_index
    }

    /// The `committed` watermark: (term of the entry, index).
    pub fn committed(&self) -> &Arc<Watermark> {
        &self.committed
    }

    /// The `applied` watermark.
    pub fn applied_watermark(&self) -> &Arc<Watermark> {
        &self.applied
    }

    /// Progress of voter `id` (leader only).
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        if self.role != Role::Leader {
            return None;
        }
        let slot = self.slot(id)?;
        (slot != self.me).then(|| &self.progress[slot])
    }

    /// Ticks elapsed since this node was created.
    pub fn now_ticks(&self) -> u64 {
        self.now_ticks
    }

    fn slot(&self, id: NodeId) -> Option<usize> {
        self.cfg.voters.iter().position(|v| *v == id)
    }

    fn voters(&self) -> usize {
        self.cfg.voters.len()
    }

    fn peers(&self) -> impl Iterator<Item = usize> + use<R> {
        let me = self.me;
        (0..self.cfg.voters.len()).filter(move |s| *s != me)
    }

    // ----- hard state ------------------------------------------------------

    /// The hard state to persist and its version, if it changed since the
    /// last `hard_state_persisted`. No message leaves until it is persisted.
    pub fn hard_state_to_persist(&self) -> Option<(HardState, u64)> {
        (self.hard_version != self.hard_persisted_version).then_some((self.hard, self.hard_version))
    }

    /// The caller made hard state `version` durable.
    pub fn hard_state_persisted(&mut self, version: u64) {
        assert!(
            version <= self.hard_version,
            "persisted a version never handed out"
        );
        self.hard_persisted_version = self.hard_persisted_version.max(version);
    }

    fn set_hard(&mut self, term: u64, vote: Option<NodeId>) {
        let next = HardState { term, vote };
        if next != self.hard {
            assert!(term >= self.hard.term, "term regress");
            if term > self.hard.term {
                // What this node confirmed matched belongs to an older leader.
                self.confirmed_index = self.committed_index;
                self.acked_index = 0;
            }
            self.hard = next;
            self.hard_version += 1;
        }
    }

    // ----- outputs ---------------------------------------------------------

    /// The next message to send, or `None` (also while the hard state it may
    /// depend on is not persisted).
    pub fn pop_outgoing(&mut self) -> Option<Outgoing> {
        if self.hard_state_to_persist().is_some() {
            return None;
        }
        if self.appends_dirty && self.role == Role::Leader {
            self.appends_dirty = false;
            for peer in self.peers() {
                while self.maybe_send_append(peer, false) {}
            }
        }
        self.outbox.pop()
    }

    /// Messages waiting in the outbox (appends not yet generated excluded).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// A new leader's empty entry: write it (zero-length payload) at this id
    /// before any proposal.
    pub fn take_noop(&mut self) -> Option<IoId> {
        self.noop.take()
    }

    /// The next read whose outcome is known.
    pub fn take_read(&mut self) -> Option<ReadState> {
        self.reads.pop()
    }

    // ----- time ------------------------------------------------------------

    fn randomize_timeout(&mut self) {
        let e = self.cfg.election_timeout_ticks;
        self.randomized_timeout_ticks = self.rng.range(e, 2 * e);
    }

    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && (self.leader.is_some() || self.restart_guard)
            && self.election_elapsed_ticks < self.cfg.election_timeout_ticks
    }

    /// Advances virtual time by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks {
            self.restart_guard = false;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed_ticks >= self.randomized_timeout_ticks {
            let role = if self.cfg.pre_vote {
                Role::PreCandidate
            } else {
                Role::Candidate
            };
            self.campaign(role, false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            self.transfer_target = None;
            if self.cfg.check_quorum && !self.quorum_active() {
                let term = self.hard.term;
                self.become_follower(term, None);
                return;
            }
        }
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
            for peer in self.peers() {
                self.progress[peer].on_heartbeat_interval();
                if self.progress[peer].state == ProgressState::Snapshot {
                    // Resend from the last acknowledged offset (resumable).
                    self.send_snapshot_chunk(peer);
                }
            }
            self.appends_dirty = true;
        }
    }

    /// True if a quorum (this node included) was heard from since the last
    /// check; resets the marks.
    fn quorum_active(&mut self) -> bool {
        let mut active = 1;
        for peer in self.peers() {
            if std::mem::take(&mut self.progress[peer].recent_active) {
                active += 1;
            }
        }
        active >= quorum::majority(self.voters())
    }

    // ----- roles -----------------------------------------------------------

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if term > self.hard.term {
            self.set_hard(term, None);
        }
        if self.role == Role::Leader {
            self.outbox.clear();
            self.noop = None;
        }
        self.reads.fail_unconfirmed();
        self.role = Role::Follower;
        self.leader = leader;
        self.election_elapsed_ticks = 0;
        self.transfer_target = None;
        self.randomize_timeout();
    }

    fn campaign(&mut self, role: Role, transfer: bool) {
        self.election_elapsed_ticks = 0;
        self.randomize_timeout();
        let campaign_term = self.hard.term + 1;
        if !self.log.can_append(campaign_term, 1) {
            // A leader must write an empty entry; without room it could not
            // commit anything. Stay a follower until the log is purged.
            return;
        }
        self.role = role;
        self.leader = None;
        self.votes = [None; VOTERS_MAX];
        self.votes[self.me] = Some(true);
        if role == Role::Candidate {
            self.set_hard(campaign_term, Some(self.cfg.id));
        }
        if quorum::vote_result(&self.votes[..self.voters()]) == VoteResult::Won {
            self.won_vote();
            return;
        }
        let last = self.log.last_id();
        for peer in self.peers() {
            let msg = Message {
                from: self.cfg.id,
                to: self.cfg.voters[peer],
                term: campaign_term,
                body: Body::RequestVote {
                    pre_vote: role == Role::PreCandidate,
                    last,
                    transfer,
                },
            };
            self.outbox.put(peer, msg);
        }
    }

    fn won_vote(&mut self) {
        if self.role == Role::PreCandidate {
            self.campaign(Role::Candidate, false);
        } else {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.heartbeat_elapsed_ticks = 0;
        self.election_elapsed_ticks = 0;
        self.transfer_target = None;
        let last = self.log.last_index();
        for peer in self.peers() {
            let pr = &mut self.progress[peer];
            *pr = Progress::new(
                last,
                self.cfg.inflight_msgs_max,
                self.cfg.inflight_bytes_max,
            );
            pr.recent_active = true;
        }
        self.outbox.clear();
        self.acked_rounds = [0; VOTERS_MAX];
        self.lease_until_ticks = 0;
        self.lease_revoked = false;
        let term = self.hard.term;
        let index = self
            .log
            .append(term, LogMeta::entry_bytes(0))
            .expect("campaign checked room for the empty entry");
        let id = IoId::new(term, index);
        self.log.accept(id);
        self.noop = Some(id);
        self.appends_dirty = true;
        self.maybe_commit();
    }

    /// Asks `target` to take over leadership: once it has the whole log, it
    /// is told to campaign at once. Proposals are refused meanwhile; the
    /// transfer is abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        let slot = self
            .slot(target)
            .filter(|s| *s != self.me)
            .ok_or(TransferError::BadTarget(target))?;
        self.transfer_target = Some(slot);
        self.election_elapsed_ticks = 0;
        self.maybe_send_timeout_now(slot);
        self.appends_dirty = true;
        Ok(())
    }

    fn maybe_send_timeout_now(&mut self, slot: usize) {
        if self.transfer_target == Some(slot)
            && self.progress[slot].matched == self.log.last_index()
        {
            let msg = self.message(slot, Body::TimeoutNow);
            self.outbox.put(slot, msg);
            // The target will campaign ignoring leases: ours ends now, and a
            // heartbeat acknowledged later cannot renew it (the TimeoutNow
            // may still be on its way).
            self.lease_revoked = true;
            self.lease_until_ticks = 0;
        }
    }

    fn message(&self, slot: usize, body: Body) -> Message {
        Message {
            from: self.cfg.id,
            to: self.cfg.voters[slot],
            term: self.hard.term,
            body,
        }
    }

    // ----- proposals -------------------------------------------------------

    /// Appends an entry with a `payload_len`-byte payload. The caller writes
    /// its record at the returned id (and may do so before it is flushed
    /// anywhere: the leader sends before its own flush).
    pub fn propose(&mut self, payload_len: usize) -> Result<IoId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::Transferring);
        }
        if self.noop.is_some() {
            return Err(ProposeError::NoopPending);
        }
        let uncommitted = self.log.last_index() - self.committed_index;
        if uncommitted >= self.cfg.uncommitted_entries_max as u64 {
            return Err(ProposeError::TooManyUncommitted {
                uncommitted_entries_max: self.cfg.uncommitted_entries_max,
            });
        }
        let term = self.hard.term;
        let index = self.log.append(term, LogMeta::entry_bytes(payload_len))?;
        let id = IoId::new(term, index);
        self.log.accept(id);
        self.appends_dirty = true;
        if self.voters() == 1 {
            self.maybe_commit();
        }
        Ok(id)
    }

    // ----- IO notifications ------------------------------------------------

    /// The caller's writes up to `io_id` are durable. Out-of-order (older)
    /// notifications are ignored.
    pub fn flushed(&mut self, io_id: IoId) {
        if !self.log.flushed(io_id) {
            return;
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        } else {
            self.maybe_ack();
        }
    }

    /// The state machine applied entries up to `io_id`. Never moves back.
    pub fn applied(&mut self, io_id: IoId) {
        assert!(
            io_id.index <= self.committed_index,
            "applied {io_id} past commit {}",
            self.committed_index
        );
        self.applied.advance(io_id);
    }

    fn commit_to(&mut self, index: u64) {
        if index <= self.committed_index {
            return;
        }
        let term = self.log.term_at(index).expect("commit within the log");
        self.committed_index = index;
        self.committed.advance(IoId::new(term, index));
    }

    fn maybe_commit(&mut self) {
        let mut acked = [0u64; VOTERS_MAX];
        for (slot, a) in acked.iter_mut().enumerate().take(self.voters()) {
            *a = if slot == self.me {
                self.log.durable_index()
            } else {
                self.progress[slot].matched
            };
        }
        let index = quorum::committed_index(&acked[..self.voters()]);
        // Only an entry of the current term is committed by counting
        // (Raft §5.4.2); earlier entries follow it.
        if index > self.committed_index && self.log.term_at(index) == Some(self.hard.term) {
            self.commit_to(index);
            self.appends_dirty = true;
        }
    }

    // ----- follower: appends -----------------------------------------------

    /// A follower receives an append whose entries' metadata is `entries`
    /// (`append.last - append.prev.index` of them, in order).
    pub fn step_append(
        &mut self,
        append: &Append,
        entries: impl IntoIterator<Item = EntryMeta>,
    ) -> AppendOutcome {
        let Some(slot) = self.slot(append.from) else {
            return AppendOutcome::Nothing;
        };
        if append.term < self.hard.term {
            // Tell a stale leader our term so it steps down.
            let body = Body::AppendResponse {
                reject: false,
                index: 0,
                hint: IoId::ZERO,
            };
            let msg = self.message(slot, body);
            self.outbox.put(slot, msg);
            return AppendOutcome::Nothing;
        }
        if append.term > self.hard.term
            || self.role != Role::Follower
            || self.leader != Some(append.from)
        {
            self.become_follower(append.term, Some(append.from));
        }
        self.election_elapsed_ticks = 0;
        let prev = append.prev;
        if prev.index < self.committed_index {
            // Everything up to our commit is known to match; answer with what
            // we hold so the leader skips ahead.
            self.confirmed_index = self.confirmed_index.max(self.committed_index);
            self.queue_ack(slot, true);
            return AppendOutcome::Nothing;
        }
        if self.log.term_at(prev.index) != Some(prev.term) {
            let hint_index = self
                .log
                .terms()
                .last_index_with_term_at_most(prev.index, prev.term);
            let hint_term = self.log.term_at(hint_index).unwrap_or(0);
            let body = Body::AppendResponse {
                reject: true,
                index: prev.index,
                hint: IoId::new(hint_term, hint_index),
            };
            let msg = self.message(slot, body);
            self.outbox.put(slot, msg);
            return AppendOutcome::Nothing;
        }
        let outcome = self.append_entries(append, entries);
        let commit = append.commit.min(self.confirmed_index);
        self.commit_to(commit);
        self.queue_ack(slot, true);
        outcome
    }

    fn append_entries(
        &mut self,
        append: &Append,
        entries: impl IntoIterator<Item = EntryMeta>,
    ) -> AppendOutcome {
        let mut index = append.prev.index;
        let mut truncate_after = None;
        let mut first_written = None;
        for e in entries {
            if index >= append.last {
                break;
            }
            let at = index + 1;
            if first_written.is_none() {
                match self.log.term_at(at) {
                    Some(t) if t == e.term => {
                        index = at;
                        continue;
                    }
                    Some(_) => {
                        assert!(
                            at > self.committed_index,
                            "conflict at committed index {at}"
                        );
                        self.log.truncate_after(at - 1, append.term);
                        truncate_after = Some(at - 1);
                    }
                    None => {}
                }
                first_written = Some(at);
            }
            if self.log.append(e.term, e.bytes).is_err() {
                // Out of metadata room: accept the prefix that fit.
                break;
            }
            index = at;
        }
        self.confirmed_index = self.confirmed_index.max(index);
        match first_written {
            // `index < first` when the first entry to write did not fit: the
            // write is then only the truncation.
            Some(first) => {
                let io_id = IoId::new(append.term, index);
                self.log.accept(io_id);
                AppendOutcome::Write {
                    truncate_after,
                    first,
                    last: index,
                    io_id,
                }
            }
            None => AppendOutcome::Nothing,
        }
    }

    /// The index a follower may acknowledge: flushed and matching the leader.
    fn ackable_index(&self) -> u64 {
        self.log.durable_index().min(self.confirmed_index)
    }

    fn queue_ack(&mut self, slot: usize, always: bool) {
        let index = self.ackable_index();
        if index > self.acked_index || always {
            self.acked_index = self.acked_index.max(index);
            let body = Body::AppendResponse {
                reject: false,
                index,
                hint: IoId::ZERO,
            };
            let msg = self.message(slot, body);
            self.outbox.put(slot, msg);
        }
    }

    fn maybe_ack(&mut self) {
        if self.role != Role::Follower {
            return;
        }
        if let Some(slot) = self.leader.and_then(|l| self.slot(l)) {
            self.queue_ack(slot, false);
        }
    }

    // ----- leader: appends -------------------------------------------------

    /// Queues one append (or snapshot chunk) for `peer` if its Progress allows.
    /// Returns true if an append with entries was queued.
    fn maybe_send_append(&mut self, peer: usize, send_if_empty: bool) -> bool {
        let pr = &self.progress[peer];
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next - 1;
        let Some(prev_term) = self.log.term_at(prev_index) else {
            // The follower's next entry was purged: it needs the snapshot.
            let snap = self.log.snapshot();
            self.progress[peer].become_snapshot(snap.index);
            self.outbox.clear_appends(peer);
            self.snapshot_acked[peer] = 0;
            self.send_snapshot_chunk(peer);
            return false;
        };
        let last_index = self.log.last_index();
        assert!(
            prev_index <= last_index,
            "next {} past the log end {last_index}",
            pr.next
        );
        let has_entries = pr.next <= last_index;
        if !has_entries && !send_if_empty {
            return false;
        }
        let last = if has_entries {
            self.log.last_within(pr.next, self.cfg.msg_bytes_max)
        } else {
            prev_index
        };
        let bytes = self.log.bytes_between(prev_index + 1, last);
        let append = Append {
            from: self.cfg.id,
            to: self.cfg.voters[peer],
            term: self.hard.term,
            prev: IoId::new(prev_term, prev_index),
            last,
            commit: self.committed_index,
            bytes,
        };
        if self.progress[peer].state == ProgressState::Probe {
            // Only the newest probe matters.
            self.outbox.clear_appends(peer);
        }
        self.outbox.push_append(peer, append);
        self.progress[peer].sent_entries(last, bytes);
        has_entries && self.progress[peer].state == ProgressState::Replicate
    }

    fn step_append_response(&mut self, peer: usize, reject: bool, index: u64, hint: IoId) {
        self.progress[peer].recent_active = true;
        if reject {
            let probe_from = if hint.index > 0 {
                self.log
                    .terms()
                    .last_index_with_term_at_most(hint.index, hint.term)
            } else {
                0
            };
            if self.progress[peer].on_reject(index, probe_from) {
                self.outbox.clear_appends(peer);
                self.maybe_send_append(peer, true);
            }
            return;
        }
        if !self.progress[peer].on_ack(index) {
            return;
        }
        self.maybe_commit();
        self.maybe_send_timeout_now(peer);
        self.appends_dirty = true;
    }

    // ----- heartbeats, reads, lease -----------------------------------------

    fn broadcast_heartbeat(&mut self) {
        self.heartbeat_round += 1;
        let round = self.heartbeat_round;
        self.round_sent_ticks[(round as usize) % LEASE_ROUNDS_MAX] = self.now_ticks;
        self.acked_rounds[self.me] = round;
        for peer in self.peers() {
            let commit = self.progress[peer].matched.min(self.committed_index);
            let msg = self.message(peer, Body::Heartbeat { commit, round });
            self.outbox.put(peer, msg);
        }
        if self.voters() == 1 {
            self.confirm_rounds();
        }
    }

    fn confirm_rounds(&mut self) {
        let confirmed = quorum::committed_index(&self.acked_rounds[..self.voters()]);
        self.reads.confirm_up_to(confirmed);
        if confirmed + (LEASE_ROUNDS_MAX as u64) > self.heartbeat_round {
            let sent = self.round_sent_ticks[(confirmed as usize) % LEASE_ROUNDS_MAX];
            // Followers that acked round `confirmed` refuse votes for an
            // election timeout after receiving it, which was after `sent`.
            let until = sent + self.cfg.election_timeout_ticks - 1;
            self.lease_until_ticks = self.lease_until_ticks.max(until);
        }
    }

    fn committed_in_term(&self) -> bool {
        self.log.term_at(self.committed_index) == Some(self.hard.term)
    }

    /// Asks for a linearizable read `id`; its outcome comes from `take_read`.
    pub fn read_index(&mut self, id: u64) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader);
        }
        if !self.committed_in_term() {
            return Err(ReadError::NoCommitInTerm);
        }
        if self.cfg.lease_reads && !self.lease_revoked && self.now_ticks < self.lease_until_ticks {
            return self.reads.push(id, self.committed_index, 0, true);
        }
        self.reads
            .push(id, self.committed_index, self.heartbeat_round + 1, false)?;
        self.broadcast_heartbeat();
        Ok(())
    }

    // ----- snapshots -------------------------------------------------------

    /// The caller built a snapshot covering entries up to `snapshot` (all
    /// applied), `snapshot_bytes` long, and purged the log up to it.
    pub fn compacted(&mut self, snapshot: IoId, snapshot_bytes: u64) -> Result<(), CompactError> {
        let applied = self.applied.get().index;
        if snapshot.index > applied {
            return Err(CompactError::NotApplied {
                index: snapshot.index,
                applied,
            });
        }
        if snapshot.index <= self.log.snapshot().index {
            return Ok(());
        }
        if self.log.term_at(snapshot.index) != Some(snapshot.term) {
            return Err(CompactError::Unknown(snapshot));
        }
        self.log.purge_to(snapshot.index);
        self.snapshot_bytes = snapshot_bytes;
        self.appends_dirty = true;
        Ok(())
    }

    fn send_snapshot_chunk(&mut self, peer: usize) {
        let snapshot = self.log.snapshot();
        if self.progress[peer].pending_snapshot != snapshot.index {
            // A newer snapshot replaced the one being sent: start it over.
            self.progress[peer].pending_snapshot = snapshot.index;
            self.snapshot_acked[peer] = 0;
        }
        let offset = self.snapshot_acked[peer];
        let len = self
            .snapshot_bytes
            .saturating_sub(offset)
            .min(self.cfg.msg_bytes_max);
        let body = Body::SnapshotChunk {
            snapshot,
            offset,
            len,
            total_bytes: self.snapshot_bytes,
        };
        let msg = self.message(peer, body);
        self.outbox.put(peer, msg);
    }

    /// Sending the snapshot to `peer` failed for good (e.g. the caller could
    /// not read it): go back to probing.
    pub fn snapshot_failed(&mut self, peer: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(slot) = self.slot(peer).filter(|s| *s != self.me)
            && self.progress[slot].on_snapshot_failed()
        {
            self.appends_dirty = true;
        }
    }

    fn step_snapshot_response(
        &mut self,
        peer: usize,
        snapshot: IoId,
        next_offset: u64,
        done: bool,
    ) {
        self.progress[peer].recent_active = true;
        let pr = &mut self.progress[peer];
        if pr.state != ProgressState::Snapshot || snapshot.index != pr.pending_snapshot {
            return;
        }
        if done {
            pr.on_snapshot_done(snapshot.index);
            self.appends_dirty = true;
            self.maybe_commit();
        } else if next_offset != self.snapshot_acked[peer] {
            // Resume where the follower is (forward, or back to 0 if it
            // dropped a partial snapshot); duplicates of a response resend nothing.
            self.snapshot_acked[peer] = next_offset.min(self.snapshot_bytes);
            if next_offset < self.snapshot_bytes {
                self.send_snapshot_chunk(peer);
            }
        }
    }

    fn step_snapshot_chunk(
        &mut self,
        slot: usize,
        snapshot: IoId,
        offset: u64,
        len: u64,
        total_bytes: u64,
    ) -> StepOutcome {
        let respond = |node: &mut Self, next_offset: u64, done: bool| {
            let body = Body::SnapshotResponse {
                snapshot,
                next_offset,
                done,
            };
            let msg = node.message(slot, body);
            node.outbox.put(slot, msg);
        };
        if snapshot.index <= self.committed_index {
            // We already hold everything it covers, committed.
            self.confirmed_index = self.confirmed_index.max(self.committed_index);
            respond(self, total_bytes, true);
            return StepOutcome::Done;
        }
        let current = match self.incoming_snapshot {
            Some(s) if s.snapshot == snapshot => s,
            Some(s) if s.received_bytes >= s.total_bytes => {
                // A complete snapshot is being installed; a newer one waits
                // until `snapshot_installed` (the leader resends on heartbeat).
                return StepOutcome::Done;
            }
            _ => IncomingSnapshot {
                snapshot,
                received_bytes: 0,
                total_bytes,
            },
        };
        self.incoming_snapshot = Some(current);
        if offset != current.received_bytes {
            respond(self, current.received_bytes, false);
            return StepOutcome::Done;
        }
        let received = offset + len;
        self.incoming_snapshot = Some(IncomingSnapshot {
            received_bytes: received,
            ..current
        });
        let complete = received >= current.total_bytes;
        if !complete {
            respond(self, received, false);
        }
        StepOutcome::StoreSnapshotChunk {
            snapshot,
            offset,
            len,
            complete,
        }
    }

    /// The caller installed snapshot `snapshot` durably (after a complete
    /// chunk): the log now starts after it.
    pub fn snapshot_installed(&mut self, snapshot: IoId, snapshot_bytes: u64) {
        // Any snapshot a leader sent covers only committed entries, so one
        // that completed earlier is as good as the one being received now.
        if self
            .incoming_snapshot
            .is_some_and(|s| s.snapshot.index <= snapshot.index)
        {
            self.incoming_snapshot = None;
        }
        if snapshot.index <= self.committed_index {
            return;
        }
        if self.log.term_at(snapshot.index) == Some(snapshot.term) {
            // Our log holds the snapshot's last entry: keep the suffix.
            self.log.purge_to(snapshot.index);
        } else {
            let io_id = IoId::new(self.hard.term, snapshot.index).max(self.log.accepted());
            self.log.reset_to_snapshot(snapshot, io_id);
        }
        self.snapshot_bytes = snapshot_bytes;
        self.confirmed_index = self.confirmed_index.max(snapshot.index);
        self.commit_to(snapshot.index);
        self.applied.advance(snapshot);
        if let Some(slot) = self.leader.and_then(|l| self.slot(l)) {
            let body = Body::SnapshotResponse {
                snapshot,
                next_offset: snapshot_bytes,
                done: true,
            };
            let msg = self.message(slot, body);
            self.outbox.put(slot, msg);
        }
    }

    // ----- control messages ------------------------------------------------

    /// Handles a control message.
    pub fn step(&mut self, msg: Message) -> StepOutcome {
        let Some(slot) = self.slot(msg.from).filter(|s| *s != self.me) else {
            return StepOutcome::Done;
        };
        if msg.term > self.hard.term {
            match msg.body {
                Body::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    if self.in_lease() && !transfer {
                        return StepOutcome::Done;
                    }
                    if !pre_vote {
                        self.become_follower(msg.term, None);
                    }
                }
                Body::Vote {
                    pre_vote: true,
                    granted: true,
                } => {}
                Body::Heartbeat { .. } | Body::SnapshotChunk { .. } => {
                    self.become_follower(msg.term, Some(msg.from));
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.hard.term {
            match msg.body {
                Body::Heartbeat { .. } | Body::SnapshotChunk { .. } => {
                    let body = Body::AppendResponse {
                        reject: false,
                        index: 0,
                        hint: IoId::ZERO,
                    };
                    let reply = self.message(slot, body);
                    self.outbox.put(slot, reply);
                }
                Body::RequestVote { pre_vote: true, .. } => {
                    let body = Body::Vote {
                        pre_vote: true,
                        granted: false,
                    };
                    let reply = self.message(slot, body);
                    self.outbox.put(slot, reply);
                }
                _ => {}
            }
            return StepOutcome::Done;
        }
        match msg.body {
            Body::RequestVote { pre_vote, last, .. } => {
                self.step_request_vote(slot, msg, pre_vote, last)
            }
            Body::Vote { pre_vote, granted } => self.step_vote(slot, pre_vote, granted),
            Body::Heartbeat { commit, round } => self.step_heartbeat(slot, msg.from, commit, round),
            Body::HeartbeatResponse { round, lagging } => {
                self.step_heartbeat_response(slot, round, lagging)
            }
            Body::AppendResponse {
                reject,
                index,
                hint,
            } => {
                if self.role == Role::Leader {
                    self.step_append_response(slot, reject, index, hint);
                }
            }
            Body::TimeoutNow => {
                if self.role != Role::Leader {
                    self.campaign(Role::Candidate, true);
                }
            }
            Body::SnapshotChunk {
                snapshot,
                offset,
                len,
                total_bytes,
            } => {
                if self.role != Role::Follower || self.leader != Some(msg.from) {
                    self.become_follower(msg.term, Some(msg.from));
                }
                self.election_elapsed_ticks = 0;
                return self.step_snapshot_chunk(slot, snapshot, offset, len, total_bytes);
            }
            Body::SnapshotResponse {
                snapshot,
                next_offset,
                done,
            } => {
                if self.role == Role::Leader {
                    self.step_snapshot_response(slot, snapshot, next_offset, done);
                }
            }
        }
        StepOutcome::Done
    }

    fn step_request_vote(&mut self, slot: usize, msg: Message, pre_vote: bool, last: IoId) {
        let can_vote = self.hard.vote == Some(msg.from)
            || (self.hard.vote.is_none() && self.leader.is_none())
            || (pre_vote && msg.term > self.hard.term);
        // (term, index) order is exactly "at least as up to date" (§5.4.1).
        let granted = can_vote && last >= self.log.last_id();
        if granted && !pre_vote {
            self.election_elapsed_ticks = 0;
            self.set_hard(self.hard.term, Some(msg.from));
        }
        let term = if granted { msg.term } else { self.hard.term };
        let reply = Message {
            from: self.cfg.id,
            to: msg.from,
            term,
            body: Body::Vote { pre_vote, granted },
        };
        self.outbox.put(slot, reply);
    }

    fn step_vote(&mut self, slot: usize, pre_vote: bool, granted: bool) {
        let expected = if pre_vote {
            Role::PreCandidate
        } else {
            Role::Candidate
        };
        if self.role != expected {
            return;
        }
        self.votes[slot] = Some(granted);
        match quorum::vote_result(&self.votes[..self.voters()]) {
            VoteResult::Won => self.won_vote(),
            VoteResult::Lost => {
                let term = self.hard.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    fn step_heartbeat(&mut self, slot: usize, from: NodeId, commit: u64, round: u64) {
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.hard.term;
            self.become_follower(term, Some(from));
        }
        self.election_elapsed_ticks = 0;
        self.commit_to(commit.min(self.confirmed_index));
        let body = Body::HeartbeatResponse {
            round,
            lagging: self.confirmed_index < commit,
        };
        let reply = self.message(slot, body);
        self.outbox.put(slot, reply);
    }

    fn step_heartbeat_response(&mut self, peer: usize, round: u64, lagging: bool) {
        if self.role != Role::Leader {
            return;
        }
        let pr = &mut self.progress[peer];
        pr.on_heartbeat_response();
        let behind = pr.matched < self.log.last_index() || lagging;
        if behind {
            self.maybe_send_append(peer, true);
        }
        if round > self.acked_rounds[peer] && round <= self.heartbeat_round {
            self.acked_rounds[peer] = round;
            self.confirm_rounds();
        }
    }
}
