//! The wire format: every frame is a 16-byte header, a fixed-size head whose
//! size depends on the kind, then (for three kinds) a variable payload.
//!
//! ```text
//!  frame header (16 bytes, little-endian)
//!  offset  size  field
//!  0       4     magic       0x544E_5252 ("RRNT" as bytes 52 52 4E 54)
//!  4       1     version     PROTOCOL_VERSION (1)
//!  5       1     kind        see the table below
//!  6       2     reserved    0
//!  8       4     body_len    bytes after this header: head + payload
//!  12      4     crc32c      CRC32C of header bytes [0, 12) and the head
//!  16      ...   head        fixed size per kind (below)
//!  16+head ...   payload     AppendEntries: WAL records verbatim (own CRCs,
//!                            8-byte multiple); InstallSnapshot: chunk bytes
//!                            (CRC in the head); every other kind: none
//!
//!  kind  name                 head bytes  head fields (u64 unless noted)
//!  1     Hello                72          cluster_id, node_id u32, shard_id u32,
//!                                         version u16, lane u8, auth u8,
//!                                         reserved u32, nonce [16], mac [32]
//!  2     HelloProof           32          mac [32]
//!  3     Error                16          code u32, reserved u32, detail
//!  4     AppendEntries        32          term, prev_term, prev_index, leader_commit
//!  5     AppendResponse       40          term, index, hint_term, hint_index,
//!                                         success (0/1)
//!  6     Vote                 32          term, last_term, last_index, transfer (0/1)
//!  7     PreVote              32          as Vote
//!  8     VoteReply            16          term, granted (0/1)
//!  9     PreVoteReply         16          as VoteReply
//!  10    Heartbeat            24          term, commit, read_context
//!  11    HeartbeatReply       16          term, read_context
//!  12    InstallSnapshot      48          term, snapshot_term, snapshot_index,
//!                                         offset, total_bytes,
//!                                         data_crc u32, last u32 (0/1)
//!  13    InstallSnapshotReply 32          term, snapshot_index, next_offset,
//!                                         rejected (0/1)
//!  14    TimeoutNow           8           term
//!  15    ReadIndex            16          term, read_context
//!  16    ReadIndexReply       24          term, read_context, index
//! ```
//!
//! The header CRC covers the head, so no field that steers the receiver is
//! unprotected; the payload is protected by the records' own CRCs or by the
//! snapshot chunk's `data_crc`. A decoder reads the header first, learns the
//! full length and rejects it before reading further if it is too long: it
//! never allocates from a length the peer claims.

use crate::error::FrameError;

/// Frame magic, little-endian bytes "RRNT".
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RRNT");
/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the frame header.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest head of any kind.
pub const HEAD_BYTES_MAX: usize = 72;
/// Largest frame without a payload (header + largest head): every control
/// frame fits a buffer of this size.
pub const CONTROL_FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + HEAD_BYTES_MAX;
/// Bytes of a Hello nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;

/// Frame kinds; the discriminant is the byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Handshake: who is calling, for which lane.
    Hello = 1,
    /// Handshake: the dialer's answer to the acceptor's HMAC challenge.
    HelloProof = 2,
    /// The sender refuses something and closes the connection.
    Error = 3,
    /// Log entries (WAL records verbatim) after `prev`.
    AppendEntries = 4,
    /// A follower's answer to AppendEntries.
    AppendResponse = 5,
    /// Request for a vote.
    Vote = 6,
    /// Pre-vote (does not bump the term).
    PreVote = 7,
    /// Answer to Vote.
    VoteReply = 8,
    /// Answer to PreVote.
    PreVoteReply = 9,
    /// Leader liveness and commit index; carries a ReadIndex context.
    Heartbeat = 10,
    /// Answer to Heartbeat.
    HeartbeatReply = 11,
    /// One chunk of a snapshot.
    InstallSnapshot = 12,
    /// Answer to a snapshot chunk.
    InstallSnapshotReply = 13,
    /// Leader transfer: campaign now.
    TimeoutNow = 14,
    /// A follower asks the leader for a read index.
    ReadIndex = 15,
    /// The leader's confirmed read index.
    ReadIndexReply = 16,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 16] = [
        Kind::Hello,
        Kind::HelloProof,
        Kind::Error,
        Kind::AppendEntries,
        Kind::AppendResponse,
        Kind::Vote,
        Kind::PreVote,
        Kind::VoteReply,
        Kind::PreVoteReply,
        Kind::Heartbeat,
        Kind::HeartbeatReply,
        Kind::InstallSnapshot,
        Kind::InstallSnapshotReply,
        Kind::TimeoutNow,
        Kind::ReadIndex,
        Kind::ReadIndexReply,
    ];

    /// The kind of a wire byte.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.get((byte as usize).wrapping_sub(1)).copied()
    }

    /// Size of this kind's fixed head.
    pub const fn head_bytes(self) -> usize {
        match self {
            Kind::Hello => 72,
            Kind::HelloProof => 32,
            Kind::Error => 16,
            Kind::AppendEntries => 32,
            Kind::AppendResponse => 40,
            Kind::Vote | Kind::PreVote => 32,
            Kind::VoteReply | Kind::PreVoteReply => 16,
            Kind::Heartbeat => 24,
            Kind::HeartbeatReply => 16,
            Kind::InstallSnapshot => 48,
            Kind::InstallSnapshotReply => 32,
            Kind::TimeoutNow => 8,
            Kind::ReadIndex => 16,
            Kind::ReadIndexReply => 24,
        }
    }

    /// Whether a payload may follow the head.
    pub const fn has_payload(self) -> bool {
        matches!(self, Kind::AppendEntries | Kind::InstallSnapshot)
    }

    /// Whether frames of this kind travel on the data lane.
    pub const fn is_data(self) -> bool {
        self.has_payload()
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} frame")
    }
}

impl std::fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer refused: {:?} (detail {})", self.code, self.detail)
    }
}

const _: () = {
    let mut i = 0;
    while i < Kind::ALL.len() {
        assert!(Kind::ALL[i] as usize == i + 1);
        assert!(Kind::ALL[i].head_bytes() <= HEAD_BYTES_MAX);
        assert!(Kind::ALL[i].head_bytes().is_multiple_of(8));
        i += 1;
    }
};

/// Which connection of a peer pair a Hello opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Lane {
    /// Votes, heartbeats, acks: small, state-like, never behind data.
    Control = 1,
    /// Appends and snapshot chunks.
    Data = 2,
}

/// Why a peer refused a connection, carried in an Error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The Hello named another cluster.
    WrongCluster = 1,
    /// The Hello named a node id this node does not know.
    UnknownNode = 2,
    /// The Hello asked for a protocol version this node does not speak.
    UnsupportedVersion = 3,
    /// The Hello named a shard this connection does not serve.
    WrongShard = 4,
    /// HMAC authentication failed or was missing.
    AuthFailed = 5,
    /// A frame broke the protocol (bad magic, CRC, length, kind...).
    Protocol = 6,
    /// A frame was longer than `frame_bytes_max`.
    FrameTooLong = 7,
}

impl ErrorCode {
    fn from_u32(code: u32) -> Option<ErrorCode> {
        Some(match code {
            1 => ErrorCode::WrongCluster,
            2 => ErrorCode::UnknownNode,
            3 => ErrorCode::UnsupportedVersion,
            4 => ErrorCode::WrongShard,
            5 => ErrorCode::AuthFailed,
            6 => ErrorCode::Protocol,
            7 => ErrorCode::FrameTooLong,
            _ => return None,
        })
    }
}

/// Handshake fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Cluster the sender belongs to.
    pub cluster_id: u64,
    /// Sender's node id.
    pub node_id: u32,
    /// Shard (Raft group) of this connection.
    pub shard_id: u32,
    /// Protocol version the sender speaks.
    pub version: u16,
    /// Lane this connection carries.
    pub lane: Lane,
    /// Whether the sender authenticates with the cluster secret.
    pub auth: bool,
    /// Random challenge for the other side (zero without auth).
    pub nonce: [u8; NONCE_BYTES],
    /// HMAC tag answering the other side's challenge (zero if none yet).
    pub mac: [u8; MAC_BYTES],
}

/// AppendEntries head; the records follow as the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendEntries {
    /// Leader's term.
    pub term: u64,
    /// Term of the entry before the first record.
    pub prev_term: u64,
    /// Index of the entry before the first record.
    pub prev_index: u64,
    /// Leader's commit index.
    pub leader_commit: u64,
}

/// A follower's answer to AppendEntries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResponse {
    /// Follower's term.
    pub term: u64,
    /// On success the follower's last matching index; on refusal the index
    /// refused.
    pub index: u64,
    /// Conflict hint: term at `hint_index` in the follower's log.
    pub hint_term: u64,
    /// Conflict hint: where the leader should probe next.
    pub hint_index: u64,
    /// Whether the entries were accepted.
    pub success: bool,
}

/// Vote or PreVote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// Candidate's (prospective) term.
    pub term: u64,
    /// Term of the candidate's last entry.
    pub last_term: u64,
    /// Index of the candidate's last entry.
    pub last_index: u64,
    /// Part of a leader transfer (ignore the leader lease).
    pub transfer: bool,
}

/// Vote or PreVote reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteReply {
    /// Voter's term.
    pub term: u64,
    /// Whether the vote is granted.
    pub granted: bool,
}

/// Leader heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Leader's term.
    pub term: u64,
    /// Commit index the follower may apply up to (min with its match).
    pub commit: u64,
    /// ReadIndex round this heartbeat confirms leadership for (0: none).
    pub read_context: u64,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Follower's term.
    pub term: u64,
    /// The heartbeat's read context, echoed.
    pub read_context: u64,
}

/// Snapshot chunk head; the chunk bytes follow as the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// Leader's term.
    pub term: u64,
    /// Term of the last entry the snapshot covers.
    pub snapshot_term: u64,
    /// Index of the last entry the snapshot covers.
    pub snapshot_index: u64,
    /// Byte offset of this chunk in the snapshot.
    pub offset: u64,
    /// Size of the whole snapshot.
    pub total_bytes: u64,
    /// CRC32C of this chunk's bytes.
    pub data_crc: u32,
    /// Whether this is the last chunk.
    pub last: bool,
}

/// Answer to a snapshot chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallSnapshotReply {
    /// Follower's term.
    pub term: u64,
    /// Snapshot the reply is about.
    pub snapshot_index: u64,
    /// Offset of the next chunk the follower wants.
    pub next_offset: u64,
    /// Whether the follower refused the snapshot.
    pub rejected: bool,
}

/// ReadIndex request (follower to leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndex {
    /// Sender's term.
    pub term: u64,
    /// Caller's tag for the read, echoed in the reply.
    pub read_context: u64,
}

/// ReadIndex confirmation (leader to follower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndexReply {
    /// Leader's term.
    pub term: u64,
    /// The request's tag.
    pub read_context: u64,
    /// Commit index confirmed by a quorum: reads may be served once applied.
    pub index: u64,
}

/// A refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFrame {
    /// Why.
    pub code: ErrorCode,
    /// A number that helps the reader (e.g. the expected cluster id).
    pub detail: u64,
}

/// One decoded frame head. Plain data: no allocation, `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Message {
    Hello(Hello),
    HelloProof { mac: [u8; MAC_BYTES] },
    Error(ErrorFrame),
    AppendEntries(AppendEntries),
    AppendResponse(AppendResponse),
    Vote(Vote),
    PreVote(Vote),
    VoteReply(VoteReply),
    PreVoteReply(VoteReply),
    Heartbeat(Heartbeat),
    HeartbeatReply(HeartbeatReply),
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotReply(InstallSnapshotReply),
    TimeoutNow { term: u64 },
    ReadIndex(ReadIndex),
    ReadIndexReply(ReadIndexReply),
}

/// A decoded frame, borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The head.
    pub message: Message,
    /// The payload (records or snapshot bytes; empty for other kinds).
    pub payload: &'a [u8],
}

/// A validated frame header: the kind and how many bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame kind.
    pub kind: Kind,
    /// Bytes after the header (head + payload).
    pub body_len: usize,
    /// CRC32C stored in the header.
    pub crc: u32,
}

impl FrameHeader {
    /// Bytes of the header plus the head: what must be read before the
    /// message can be checked and decoded.
    pub fn head_frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.kind.head_bytes()
    }

    /// Bytes of the payload.
    pub fn payload_bytes(&self) -> usize {
        self.body_len - self.kind.head_bytes()
    }

    /// Bytes of the whole frame.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_len
    }
}

impl Message {
    /// The kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::HelloProof { .. } => Kind::HelloProof,
            Message::Error(_) => Kind::Error,
            Message::AppendEntries(_) => Kind::AppendEntries,
            Message::AppendResponse(_) => Kind::AppendResponse,
            Message::Vote(_) => Kind::Vote,
            Message::PreVote(_) => Kind::PreVote,
            Message::VoteReply(_) => Kind::VoteReply,
            Message::PreVoteReply(_) => Kind::PreVoteReply,
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::HeartbeatReply(_) => Kind::HeartbeatReply,
            Message::InstallSnapshot(_) => Kind::InstallSnapshot,
            Message::InstallSnapshotReply(_) => Kind::InstallSnapshotReply,
            Message::TimeoutNow { .. } => Kind::TimeoutNow,
            Message::ReadIndex(_) => Kind::ReadIndex,
            Message::ReadIndexReply(_) => Kind::ReadIndexReply,
        }
    }
}

/// Little-endian writer over a fixed slice; panics past its end, which
/// callers rule out by sizing `dst` from [`Kind::head_bytes`].
struct Writer<'a> {
    dst: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.dst[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
    fn flag(&mut self, value: bool) {
        self.u64(value as u64);
    }
}

/// Little-endian reader over a head whose length was checked.
struct Reader<'a> {
    src: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let out: [u8; N] = self.src[self.at..self.at + N].try_into().expect("N bytes");
        self.at += N;
        out
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn flag(&mut self, kind: Kind) -> Result<bool, FrameError> {
        match self.u64() {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::BadField { kind }),
        }
    }
}

fn write_head(message: &Message, w: &mut Writer<'_>) {
    match *message {
        Message::Hello(h) => {
            w.u64(h.cluster_id);
            w.u32(h.node_id);
            w.u32(h.shard_id);
            w.bytes(&h.version.to_le_bytes());
            w.bytes(&[h.lane as u8, h.auth as u8]);
            w.u32(0);
            w.bytes(&h.nonce);
            w.bytes(&h.mac);
        }
        Message::HelloProof { mac } => w.bytes(&mac),
        Message::Error(e) => {
            w.u32(e.code as u32);
            w.u32(0);
            w.u64(e.detail);
        }
        Message::AppendEntries(a) => {
            w.u64(a.term);
            w.u64(a.prev_term);
            w.u64(a.prev_index);
            w.u64(a.leader_commit);
        }
        Message::AppendResponse(r) => {
            w.u64(r.term);
            w.u64(r.index);
            w.u64(r.hint_term);
            w.u64(r.hint_index);
            w.flag(r.success);
        }
        Message::Vote(v) | Message::PreVote(v) => {
            w.u64(v.term);
            w.u64(v.last_term);
            w.u64(v.last_index);
            w.flag(v.transfer);
        }
        Message::VoteReply(r) | Message::PreVoteReply(r) => {
            w.u64(r.term);
            w.flag(r.granted);
        }
        Message::Heartbeat(h) => {
            w.u64(h.term);
            w.u64(h.commit);
            w.u64(h.read_context);
        }
        Message::HeartbeatReply(h) => {
            w.u64(h.term);
            w.u64(h.read_context);
        }
        Message::InstallSnapshot(s) => {
            w.u64(s.term);
            w.u64(s.snapshot_term);
            w.u64(s.snapshot_index);
            w.u64(s.offset);
            w.u64(s.total_bytes);
            w.u32(s.data_crc);
            w.u32(s.last as u32);
        }
        Message::InstallSnapshotReply(s) => {
            w.u64(s.term);
            w.u64(s.snapshot_index);
            w.u64(s.next_offset);
            w.flag(s.rejected);
        }
        Message::TimeoutNow { term } => w.u64(term),
        Message::ReadIndex(r) => {
            w.u64(r.term);
            w.u64(r.read_context);
        }
        Message::ReadIndexReply(r) => {
            w.u64(r.term);
            w.u64(r.read_context);
            w.u64(r.index);
        }
    }
}

fn read_head(kind: Kind, head: &[u8]) -> Result<Message, FrameError> {
    let r = &mut Reader { src: head, at: 0 };
    let message = match kind {
        Kind::Hello => {
            let cluster_id = r.u64();
            let node_id = r.u32();
            let shard_id = r.u32();
            let version = r.u16();
            let lane = match r.u8() {
                1 => Lane::Control,
                2 => Lane::Data,
                _ => return Err(FrameError::BadField { kind }),
            };
            let auth = match r.u8() {
                0 => false,
                1 => true,
                _ => return Err(FrameError::BadField { kind }),
            };
            if r.u32() != 0 {
                return Err(FrameError::BadField { kind });
            }
            Message::Hello(Hello {
                cluster_id,
                node_id,
                shard_id,
                version,
                lane,
                auth,
                nonce: r.array(),
                mac: r.array(),
            })
        }
        Kind::HelloProof => Message::HelloProof { mac: r.array() },
        Kind::Error => {
            let code = ErrorCode::from_u32(r.u32()).ok_or(FrameError::BadField { kind })?;
            if r.u32() != 0 {
                return Err(FrameError::BadField { kind });
            }
            Message::Error(ErrorFrame {
                code,
                detail: r.u64(),
            })
        }
        Kind::AppendEntries => Message::AppendEntries(AppendEntries {
            term: r.u64(),
            prev_term: r.u64(),
            prev_index: r.u64(),
            leader_commit: r.u64(),
        }),
        Kind::AppendResponse => Message::AppendResponse(AppendResponse {
            term: r.u64(),
            index: r.u64(),
            hint_term: r.u64(),
            hint_index: r.u64(),
            success: r.flag(kind)?,
        }),
        Kind::Vote | Kind::PreVote => {
            let vote = Vote {
                term: r.u64(),
                last_term: r.u64(),
                last_index: r.u64(),
                transfer: r.flag(kind)?,
            };
            if kind == Kind::Vote {
                Message::Vote(vote)
            } else {
                Message::PreVote(vote)
            }
        }
        Kind::VoteReply | Kind::PreVoteReply => {
            let reply = VoteReply {
                term: r.u64(),
                granted: r.flag(kind)?,
            };
            if kind == Kind::VoteReply {
                Message::VoteReply(reply)
            } else {
                Message::PreVoteReply(reply)
            }
        }
        Kind::Heartbeat => Message::Heartbeat(Heartbeat {
            term: r.u64(),
            commit: r.u64(),
            read_context: r.u64(),
        }),
        Kind::HeartbeatReply => Message::HeartbeatReply(HeartbeatReply {
            term: r.u64(),
            read_context: r.u64(),
        }),
        Kind::InstallSnapshot => Message::InstallSnapshot(InstallSnapshot {
            term: r.u64(),
            snapshot_term: r.u64(),
            snapshot_index: r.u64(),
            offset: r.u64(),
            total_bytes: r.u64(),
            data_crc: r.u32(),
            last: match r.u32() {
                0 => false,
                1 => true,
                _ => return Err(FrameError::BadField { kind }),
            },
        }),
        Kind::InstallSnapshotReply => Message::InstallSnapshotReply(InstallSnapshotReply {
            term: r.u64(),
            snapshot_index: r.u64(),
            next_offset: r.u64(),
            rejected: r.flag(kind)?,
        }),
        Kind::TimeoutNow => Message::TimeoutNow { term: r.u64() },
        Kind::ReadIndex => Message::ReadIndex(ReadIndex {
            term: r.u64(),
            read_context: r.u64(),
        }),
        Kind::ReadIndexReply => Message::ReadIndexReply(ReadIndexReply {
            term: r.u64(),
            read_context: r.u64(),
            index: r.u64(),
        }),
    };
    debug_assert_eq!(r.at, kind.head_bytes());
    Ok(message)
}

fn header_crc(header: &[u8], head: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..12]), head)
}

/// Writes the header and head of `message` into `dst`, announcing
/// `payload_len` payload bytes that the caller sends right after (a vectored
/// send straight from ring memory). Returns the bytes written.
///
/// Panics if `dst` is shorter than `FRAME_HEADER_BYTES + head_bytes`, or if
/// a payload is announced for a kind that has none (both caller bugs).
pub fn encode(dst: &mut [u8], message: &Message, payload_len: usize) -> usize {
    let kind = message.kind();
    assert!(
        payload_len == 0 || kind.has_payload(),
        "{kind:?} carries no payload"
    );
    let head_bytes = kind.head_bytes();
    let total = FRAME_HEADER_BYTES + head_bytes;
    let body_len = u32::try_from(head_bytes + payload_len).expect("frame body fits u32");
    let (header, rest) = dst[..total].split_at_mut(FRAME_HEADER_BYTES);
    header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[4] = PROTOCOL_VERSION;
    header[5] = kind as u8;
    header[6..8].copy_from_slice(&[0, 0]);
    header[8..12].copy_from_slice(&body_len.to_le_bytes());
    write_head(message, &mut Writer { dst: rest, at: 0 });
    let crc = header_crc(header, rest);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    total
}

/// Encodes a whole frame, payload included, into `dst`; returns its size.
/// For tests and small frames: the data lane sends payloads from the ring
/// without this copy.
pub fn encode_with_payload(dst: &mut [u8], message: &Message, payload: &[u8]) -> usize {
    let head = encode(dst, message, payload.len());
    dst[head..head + payload.len()].copy_from_slice(payload);
    head + payload.len()
}

/// Validates a frame header: magic, version, kind, and a length that fits
/// the kind and `frame_bytes_max`. The CRC is checked with the head, by
/// [`decode_head`].
pub fn decode_header(
    header: &[u8; FRAME_HEADER_BYTES],
    frame_bytes_max: usize,
) -> Result<FrameHeader, FrameError> {
    let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if header[4] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    let kind = Kind::from_byte(header[5]).ok_or(FrameError::UnknownKind(header[5]))?;
    if header[6..8] != [0, 0] {
        return Err(FrameError::BadField { kind });
    }
    let body_len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if FRAME_HEADER_BYTES + body_len > frame_bytes_max {
        return Err(FrameError::TooLong {
            frame_bytes: FRAME_HEADER_BYTES + body_len,
            frame_bytes_max,
        });
    }
    let head_bytes = kind.head_bytes();
    let payload_ok = if kind.has_payload() {
        // Records are 8-byte aligned, so a run of them is an 8-byte multiple.
        body_len >= head_bytes
            && (kind != Kind::AppendEntries || (body_len - head_bytes).is_multiple_of(8))
    } else {
        body_len == head_bytes
    };
    if !payload_ok {
        return Err(FrameError::BadLength { kind, body_len });
    }
    let crc = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    Ok(FrameHeader {
        kind,
        body_len,
        crc,
    })
}

/// Checks the CRC over header and head and decodes the head.
/// `head_frame` holds exactly `header.head_frame_bytes()` bytes: the frame
/// header followed by the head.
pub fn decode_head(header: &FrameHeader, head_frame: &[u8]) -> Result<Message, FrameError> {
    assert_eq!(head_frame.len(), header.head_frame_bytes());
    let (raw_header, head) = head_frame.split_at(FRAME_HEADER_BYTES);
    let computed = header_crc(raw_header, head);
    if computed != header.crc {
        return Err(FrameError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    read_head(header.kind, head)
}

/// Decodes the frame at the start of `src`. Returns the frame and its size,
/// `Ok(None)` if `src` holds only part of a frame (read more; at most
/// `frame_bytes_max` in all), or why the bytes are not a frame.
pub fn decode(
    src: &[u8],
    frame_bytes_max: usize,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(raw_header) = src.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let header = decode_header(raw_header, frame_bytes_max)?;
    let frame_bytes = header.frame_bytes();
    if src.len() < frame_bytes {
        return Ok(None);
    }
    let message = decode_head(&header, &src[..header.head_frame_bytes()])?;
    let payload = &src[header.head_frame_bytes()..frame_bytes];
    if let Message::InstallSnapshot(s) = message {
        let computed = crc32c::crc32c(payload);
        if computed != s.data_crc {
            return Err(FrameError::BadCrc {
                stored: s.data_crc,
                computed,
            });
        }
    }
    Ok(Some((Frame { message, payload }, frame_bytes)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flag() -> impl Strategy<Value = bool> {
        any::<bool>()
    }

    /// Any message that a well-behaved peer may send.
    pub(crate) fn message() -> impl Strategy<Value = Message> {
        let u = any::<u64>;
        prop_oneof![
            (
                u(),
                any::<u32>(),
                any::<u32>(),
                any::<u16>(),
                flag(),
                flag(),
                any::<[u8; 16]>(),
                any::<[u8; 32]>()
            )
                .prop_map(
                    |(cluster_id, node_id, shard_id, version, data, auth, nonce, mac)| {
                        Message::Hello(Hello {
                            cluster_id,
                            node_id,
                            shard_id,
                            version,
                            lane: if data { Lane::Data } else { Lane::Control },
                            auth,
                            nonce,
                            mac,
                        })
                    }
                ),
            any::<[u8; 32]>().prop_map(|mac| Message::HelloProof { mac }),
            (0..7u32, u()).prop_map(|(c, detail)| Message::Error(ErrorFrame {
                code: ErrorCode::from_u32(c + 1).unwrap(),
                detail
            })),
            (u(), u(), u(), u()).prop_map(|(term, prev_term, prev_index, leader_commit)| {
                Message::AppendEntries(AppendEntries {
                    term,
                    prev_term,
                    prev_index,
                    leader_commit,
                })
            }),
            (u(), u(), u(), u(), flag()).prop_map(
                |(term, index, hint_term, hint_index, success)| {
                    Message::AppendResponse(AppendResponse {
                        term,
                        index,
                        hint_term,
                        hint_index,
                        success,
                    })
                }
            ),
            (u(), u(), u(), flag(), flag()).prop_map(
                |(term, last_term, last_index, transfer, pre)| {
                    let v = Vote {
                        term,
                        last_term,
                        last_index,
                        transfer,
                    };
                    if pre {
                        Message::PreVote(v)
                    } else {
                        Message::Vote(v)
                    }
                }
            ),
            (u(), flag(), flag()).prop_map(|(term, granted, pre)| {
                let r = VoteReply { term, granted };
                if pre {
                    Message::PreVoteReply(r)
                } else {
                    Message::VoteReply(r)
                }
            }),
            (u(), u(), u()).prop_map(|(term, commit, read_context)| Message::Heartbeat(
                Heartbeat {
                    term,
                    commit,
                    read_context
                }
            )),
            (u(), u()).prop_map(
                |(term, read_context)| Message::HeartbeatReply(HeartbeatReply {
                    term,
                    read_context
                })
            ),
            (u(), u(), u(), u(), u(), flag()).prop_map(
                |(term, snapshot_term, snapshot_index, offset, total_bytes, last)| {
                    Message::InstallSnapshot(InstallSnapshot {
                        term,
                        snapshot_term,
                        snapshot_index,
                        offset,
                        total_bytes,
                        data_crc: 0,
                        last,
                    })
                }
            ),
            (u(), u(), u(), flag()).prop_map(|(term, snapshot_index, next_offset, rejected)| {
                Message::InstallSnapshotReply(InstallSnapshotReply {
                    term,
                    snapshot_index,
                    next_offset,
                    rejected,
                })
            }),
            u().prop_map(|term| Message::TimeoutNow { term }),
            (u(), u()).prop_map(|(term, read_context)| Message::ReadIndex(ReadIndex {
                term,
                read_context
            })),
            (u(), u(), u()).prop_map(|(term, read_context, index)| Message::ReadIndexReply(
                ReadIndexReply {
                    term,
                    read_context,
                    index
                }
            )),
        ]
    }

    /// A payload fitting the kind: 8-byte multiples for appends, the chunk
    /// CRC filled in for snapshots.
    fn with_payload(mut message: Message, bytes: Vec<u8>) -> (Message, Vec<u8>) {
        match &mut message {
            Message::AppendEntries(_) => {
                let len = bytes.len() / 8 * 8;
                (message, bytes[..len].to_vec())
            }
            Message::InstallSnapshot(s) => {
                s.data_crc = crc32c::crc32c(&bytes);
                (message, bytes)
            }
            _ => (message, Vec::new()),
        }
    }

    const MAX: usize = 1 << 16;

    proptest! {
        #[test]
        fn every_message_round_trips(
            message in message(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let (message, payload) = with_payload(message, bytes);
            let mut buf = vec![0u8; CONTROL_FRAME_BYTES_MAX + payload.len() + 5];
            let size = encode_with_payload(&mut buf, &message, &payload);
            prop_assert_eq!(size, FRAME_HEADER_BYTES + message.kind().head_bytes() + payload.len());
            // Trailing bytes belong to the next frame and are not consumed.
            let (frame, used) = decode(&buf, MAX).unwrap().unwrap();
            prop_assert_eq!(used, size);
            prop_assert_eq!(frame.message, message);
            prop_assert_eq!(frame.payload, &payload[..]);
            // Every strict prefix is "need more", never an error or a frame.
            for cut in 0..size {
                prop_assert_eq!(decode(&buf[..cut], MAX), Ok(None));
            }
        }

        #[test]
        fn a_flipped_bit_in_header_or_head_is_refused(
            message in message(),
            bit in any::<usize>(),
        ) {
            let mut buf = [0u8; CONTROL_FRAME_BYTES_MAX];
            let size = encode(&mut buf, &message, 0);
            let bit = bit % (size * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // A flipped length bit may also turn the frame into "need more".
            prop_assert!(!matches!(decode(&buf[..size], MAX), Ok(Some(_))));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, MAX);
        }
    }

    #[test]
    fn hostile_headers_are_named() {
        let mut buf = [0u8; CONTROL_FRAME_BYTES_MAX];
        let size = encode(&mut buf, &Message::TimeoutNow { term: 3 }, 0);
        let frame = &buf[..size];

        let mut bad = frame.to_vec();
        bad[0] = b'X';
        assert!(matches!(decode(&bad, MAX), Err(FrameError::BadMagic(_))));

        let mut bad = frame.to_vec();
        bad[4] = 9;
        assert_eq!(decode(&bad, MAX), Err(FrameError::UnsupportedVersion(9)));

        let mut bad = frame.to_vec();
        bad[5] = 77;
        assert_eq!(decode(&bad, MAX), Err(FrameError::UnknownKind(77)));

        let mut bad = frame.to_vec();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bad, MAX), Err(FrameError::TooLong { .. })));

        let mut bad = frame.to_vec();
        bad[8..12].copy_from_slice(&16u32.to_le_bytes());
        assert!(matches!(
            decode(&bad, MAX),
            Err(FrameError::BadLength {
                kind: Kind::TimeoutNow,
                body_len: 16
            })
        ));

        let mut bad = frame.to_vec();
        bad[20] ^= 1;
        assert!(matches!(decode(&bad, MAX), Err(FrameError::BadCrc { .. })));
    }

    #[test]
    fn a_snapshot_chunk_with_damaged_bytes_is_refused() {
        let data = b"snapshot bytes";
        let message = Message::InstallSnapshot(InstallSnapshot {
            term: 1,
            snapshot_term: 1,
            snapshot_index: 9,
            offset: 0,
            total_bytes: data.len() as u64,
            data_crc: crc32c::crc32c(data),
            last: true,
        });
        let mut buf = [0u8; 200];
        let size = encode_with_payload(&mut buf, &message, data);
        assert!(decode(&buf[..size], MAX).unwrap().is_some());
        buf[size - 1] ^= 0x40;
        assert!(matches!(
            decode(&buf[..size], MAX),
            Err(FrameError::BadCrc { .. })
        ));
    }
}
