//! What Raft nodes say to each other, as metadata. Entry bytes never pass
//! through the core: an [`Append`] names a range of the leader's WAL ring and
//! the shard sends those records; the receiving shard hands the core the
//! received records' (term, size) as [`EntryMeta`].

use ringraft_wal::IoId;

/// A node's id within its group.
pub type NodeId = u64;

/// A control message (small and state-like: a newer one of a kind replaces
/// an older one that was not yet sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (for a PreVote request: the term it would campaign in).
    pub term: u64,
    /// What it says.
    pub body: Body,
}

/// The kinds of control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Ask for a vote (or, with `pre_vote`, whether a vote would be granted).
    RequestVote {
        /// A PreVote round: nobody changes term.
        pre_vote: bool,
        /// Candidate's last (term, index).
        last: IoId,
        /// Sent on a leader's TimeoutNow: voters ignore their leader lease.
        transfer: bool,
    },
    /// Answer to [`Body::RequestVote`].
    Vote {
        /// Answers a PreVote request.
        pre_vote: bool,
        /// Granted or not.
        granted: bool,
    },
    /// Leader is alive; `commit` is capped at what the follower has matched.
    Heartbeat {
        /// Commit index the follower may adopt.
        commit: u64,
        /// Heartbeat round, echoed back; confirms ReadIndex requests and leases.
        round: u64,
    },
    /// Answer to [`Body::Heartbeat`].
    HeartbeatResponse {
        /// Round being answered.
        round: u64,
        /// The follower's log is not confirmed up to the leader's commit: an
        /// append would help it catch up.
        lagging: bool,
    },
    /// Answer to an [`Append`].
    AppendResponse {
        /// The append's previous entry did not match.
        reject: bool,
        /// Accepted: highest index durable and matching the leader.
        /// Rejected: the `prev.index` of the rejected append.
        index: u64,
        /// Rejected: (term, index) of the follower's last entry with a term
        /// at most the append's `prev.term`, for fast back-off.
        hint: IoId,
    },
    /// Leader transfer: campaign now.
    TimeoutNow,
    /// A chunk of a snapshot: the sender reads `len` bytes at `offset` of
    /// snapshot `snapshot` from its state machine.
    SnapshotChunk {
        /// Last (term, index) the snapshot covers.
        snapshot: IoId,
        /// Byte offset of this chunk.
        offset: u64,
        /// Chunk length, at most `msg_bytes_max`.
        len: u64,
        /// Size of the whole snapshot.
        total_bytes: u64,
    },
    /// Answer to a chunk: how far the receiver got (resume point).
    SnapshotResponse {
        /// Snapshot being answered.
        snapshot: IoId,
        /// Bytes received in order so far; the next chunk starts here.
        next_offset: u64,
        /// The snapshot is installed and durable.
        done: bool,
    },
}

impl Body {
    /// Number of kinds; the outbox keeps one slot per kind and peer.
    pub const KINDS: usize = 8;

    /// Slot of this kind in the outbox.
    pub fn kind(&self) -> usize {
        match self {
            Body::RequestVote { .. } => 0,
            Body::Vote { .. } => 1,
            Body::Heartbeat { .. } => 2,
            Body::HeartbeatResponse { .. } => 3,
            Body::AppendResponse { .. } => 4,
            Body::TimeoutNow => 5,
            Body::SnapshotChunk { .. } => 6,
            Body::SnapshotResponse { .. } => 7,
        }
    }
}

/// A leader's instruction to send entries `prev.index + 1 ..= last` of its
/// log, read from its WAL ring, to `to`. `last == prev.index` is an empty
/// append (a probe that only checks `prev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Append {
    /// Sender (the leader).
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Leader's term.
    pub term: u64,
    /// (term, index) of the entry before the first one sent.
    pub prev: IoId,
    /// Index of the last entry sent.
    pub last: u64,
    /// Leader's commit index.
    pub commit: u64,
    /// Record bytes of the entries.
    pub bytes: u64,
}

/// Metadata of one received record, in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Entry's term.
    pub term: u64,
    /// Record bytes (header + padded payload).
    pub bytes: u64,
}

/// Something the caller must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// A control message.
    Control(Message),
    /// An append to read from the WAL ring and send.
    Append(Append),
}
