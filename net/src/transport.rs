//! One shard's peer transport: per peer, a control lane and a data lane in
//! each direction, each its own TCP connection, driven from the shard's own
//! thread through io_uring.
//!
//! ```text
//!            this shard (node A)                        peer shard (node B)
//!  send_control ─▶ [latest-wins slots] ─▶ out control ══▶ in control ─▶ next_control
//!  send_append  ─▶ header + ring slices ─▶ out data   ══▶ in data    ─▶ recv_data(dst)
//!  next_control ◀─                         in control ◀══ out control
//!  recv_data    ◀─                         in data    ◀══ out data
//! ```
//!
//! Each node dials its peers for what it sends and accepts what they send,
//! so no tie-break between simultaneous dials is needed.
//!
//! IO model (chosen by measurement, see `examples/socket_rtt.rs` and the
//! README): bytes move with nonblocking `read`/`writev` syscalls issued from
//! the shard's loop, and the loop waits for readiness with io_uring `PollAdd`
//! operations, one per connection and direction at most, whose `user_data`
//! is the connection's slot index and generation. An idle transport sleeps in
//! `io_uring_enter`.
//!
//! Bounds: connection slots are fixed at start-up (listener, four per peer,
//! `pending_connections_max` for handshakes); every buffer is allocated once
//! (`control_buffer_bytes` per inbound control lane, `frame_bytes_max` for a
//! data lane's unsent tail); the data lane receives straight into the
//! caller's buffer and stops reading when that has no room. `peek_data`
//! shows a frame's head and payload length before any payload byte is
//! placed, so the caller can pick the buffer (a follower: its WAL ring for
//! a run that follows its log, a scratch buffer otherwise).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use ringraft_wal::IoId;
use ringraft_wal::record::{RunSummary, verify_run};

mod handshake;

use crate::auth::{self, Binding, Role};
use crate::config::TransportConfig;
use crate::counters::{CloseReason, Counters};
use crate::error::{FrameError, TransportError};
use crate::frame::{
    self, AppendEntries, CONTROL_FRAME_BYTES_MAX, ErrorCode, ErrorFrame, FRAME_HEADER_BYTES,
    FrameHeader, Hello, InstallSnapshot, Kind, Lane, MAC_BYTES, Message, NONCE_BYTES,
    PROTOCOL_VERSION,
};

/// Ring slices one data frame may be sent from (a ring wrap makes two).
pub const SEND_SLICES_MAX: usize = 4;
/// Connections accepted per `poll` at most, so a connect flood cannot starve
/// the shard.
const ACCEPTS_PER_POLL_MAX: usize = 64;
/// Bytes a data-lane reader reads before it knows the frame's kind: header
/// plus the smallest data-lane head, so it never reads past a valid frame.
const DATA_FIRST_READ_BYTES: usize = FRAME_HEADER_BYTES + Kind::AppendEntries.head_bytes();

/// Control kinds, each with one latest-wins send slot per peer.
const CONTROL_KINDS: [Kind; 11] = [
    Kind::AppendResponse,
    Kind::Vote,
    Kind::PreVote,
    Kind::VoteReply,
    Kind::PreVoteReply,
    Kind::Heartbeat,
    Kind::HeartbeatReply,
    Kind::InstallSnapshotReply,
    Kind::TimeoutNow,
    Kind::ReadIndex,
    Kind::ReadIndexReply,
];

fn control_slot(kind: Kind) -> Option<usize> {
    CONTROL_KINDS.iter().position(|k| *k == kind)
}

/// Slot layout: 0 is the listener; peer `p` owns slots `1 + 4p + LANE_*`;
/// pending (handshaking) inbound connections follow.
const OUT_CONTROL: usize = 0;
const OUT_DATA: usize = 1;
const IN_CONTROL: usize = 2;
const IN_DATA: usize = 3;
const SLOTS_PER_PEER: usize = 4;
const LISTENER_SLOT: usize = 0;

/// `user_data` of a readiness poll: generation (32 bits), slot, direction.
fn user_data(generation: u32, slot: usize, out: bool) -> u64 {
    (generation as u64) << 32 | (slot as u64) << 1 | out as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    /// Nonblocking connect in progress (dialer).
    Connecting,
    /// Hello sent or awaited; for auth, the proof too.
    Handshaking,
    Up,
}

/// Where a data-lane reader is inside the current frame.
#[derive(Debug, Default)]
struct DataReader {
    header: Option<FrameHeader>,
    message: Option<Message>,
    /// Payload bytes read into the caller's buffer.
    payload_filled: usize,
    /// Address of the caller's buffer while a payload is partly read: it
    /// must not move until the frame completes.
    payload_at: usize,
}

#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    /// Bumped on close, so completions of an old connection's polls are
    /// recognised and ignored.
    generation: u32,
    phase: Phase,
    /// Dialer (outbound slots) or acceptor (inbound and pending slots).
    dialer: bool,
    lane: Lane,
    /// Peer index, known at start for peer slots, after Hello for pending.
    peer: Option<usize>,
    handshake_deadline: Option<Instant>,
    poll_in_armed: bool,
    poll_out_armed: bool,
    readable: bool,
    writable: bool,
    /// Received bytes not yet consumed: `inbox[inbox_start..inbox_end]`.
    inbox: Box<[u8]>,
    inbox_start: usize,
    inbox_end: usize,
    /// Bytes not yet written: `outbox[outbox_start..outbox_end]`.
    outbox: Box<[u8]>,
    outbox_start: usize,
    outbox_end: usize,
    /// Our challenge to the other side (auth only).
    nonce: [u8; NONCE_BYTES],
    data: DataReader,
    /// Dialer only: consecutive failed attempts and when to try again.
    failures: u32,
    reconnect_at: Option<Instant>,
}

impl Conn {
    fn new(dialer: bool, lane: Lane, peer: Option<usize>, inbox: usize, outbox: usize) -> Conn {
        Conn {
            stream: None,
            generation: 0,
            phase: Phase::Closed,
            dialer,
            lane,
            peer,
            handshake_deadline: None,
            poll_in_armed: false,
            poll_out_armed: false,
            readable: false,
            writable: false,
            inbox: vec![0; inbox].into_boxed_slice(),
            inbox_start: 0,
            inbox_end: 0,
            outbox: vec![0; outbox].into_boxed_slice(),
            outbox_start: 0,
            outbox_end: 0,
            nonce: [0; NONCE_BYTES],
            data: DataReader::default(),
            failures: 0,
            reconnect_at: None,
        }
    }

    /// Forgets the connection but keeps the slot's buffers and identity;
    /// bumps the generation so polls in flight for the old socket are
    /// ignored when they complete.
    fn reset(&mut self, peer: Option<usize>) {
        self.stream = None;
        self.generation = self.generation.wrapping_add(1);
        self.phase = Phase::Closed;
        self.peer = peer;
        self.handshake_deadline = None;
        self.poll_in_armed = false;
        self.poll_out_armed = false;
        self.readable = false;
        self.writable = false;
        self.inbox_start = 0;
        self.inbox_end = 0;
        self.outbox_start = 0;
        self.outbox_end = 0;
        self.data = DataReader::default();
    }

    fn outbox_empty(&self) -> bool {
        self.outbox_start == self.outbox_end
    }

    /// Appends bytes to the outbox; the caller checked they fit.
    fn queue(&mut self, bytes: &[u8]) {
        if self.outbox_empty() {
            self.outbox_start = 0;
            self.outbox_end = 0;
        }
        let end = self.outbox_end + bytes.len();
        self.outbox[self.outbox_end..end].copy_from_slice(bytes);
        self.outbox_end = end;
    }
}

/// What [`Transport::recv_data`] found on a peer's data lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEvent {
    /// No complete frame yet (nothing readable, or a frame partly read).
    Idle,
    /// The next frame's payload needs `needed` bytes and the buffer offered
    /// is smaller: nothing more is read from this lane until a call offers
    /// room (TCP backpressure reaches the sender).
    NoRoom {
        /// Payload bytes of the waiting frame.
        needed: usize,
    },
    /// An AppendEntries whose records now fill `dst[..records_bytes]` and
    /// passed `verify_run` after `(prev_term, prev_index)`.
    Append {
        /// The frame's head.
        head: AppendEntries,
        /// Bytes of records written at the start of `dst`.
        records_bytes: usize,
        /// Entries and last id of the run.
        summary: RunSummary,
    },
    /// A snapshot chunk now in `dst[..bytes]`, its CRC checked.
    SnapshotChunk {
        /// The frame's head.
        head: InstallSnapshot,
        /// Bytes of the chunk written at the start of `dst`.
        bytes: usize,
    },
}

/// A data frame whose header and head arrived (see [`Transport::peek_data`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPending {
    /// The frame's head: `AppendEntries` or `InstallSnapshot`.
    pub message: Message,
    /// Bytes of the payload (the records, or the snapshot chunk).
    pub payload_bytes: usize,
    /// Payload bytes already received into the caller's buffer.
    pub payload_filled: usize,
}

/// One shard's transport. `!Send` by design: it lives on the shard's core.
pub struct Transport {
    config: TransportConfig,
    ring: IoUring,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// Slot 0 is a placeholder for the listener; see the slot layout.
    conns: Vec<Conn>,
    listener_generation: u32,
    listener_armed: bool,
    listener_readable: bool,
    /// `control_slots[peer][i]`: the newest unsent message of
    /// `CONTROL_KINDS[i]` for that peer.
    control_slots: Vec<[Option<Message>; CONTROL_KINDS.len()]>,
    /// Peer whose inbound control lane `next_control` looks at first, so one
    /// chatty peer cannot starve the others.
    next_control_peer: usize,
    /// Fault hook (`fault_data_recv_bytes_per_sec`): per peer, the data lane
    /// is not read before this instant.
    data_recv_resume_at: Vec<Option<Instant>>,
    /// Fault hook (`fault_data_send_bytes_per_sec`): per peer, no data frame
    /// is sent before this instant.
    data_send_resume_at: Vec<Option<Instant>>,
    counters: Counters,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.config.node_id)
            .field("shard_id", &self.config.shard_id)
            .field("local_addr", &self.local_addr)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds the listener and starts dialing every peer.
    pub fn new(config: TransportConfig) -> Result<Transport, TransportError> {
        let listener = TcpListener::bind(config.listen)?;
        Transport::with_listener(config, listener)
    }

    /// As [`new`](Self::new), with a listener bound beforehand (so that every
    /// node's address is known before any transport starts; `config.listen`
    /// is ignored).
    pub fn with_listener(
        config: TransportConfig,
        listener: TcpListener,
    ) -> Result<Transport, TransportError> {
        config.check()?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let peers = config.peers.len();
        let mut conns =
            Vec::with_capacity(1 + SLOTS_PER_PEER * peers + config.pending_connections_max);
        let handshake_bytes = 2 * CONTROL_FRAME_BYTES_MAX;
        conns.push(Conn::new(false, Lane::Control, None, 0, 0));
        let control_out_bytes = CONTROL_KINDS.len() * CONTROL_FRAME_BYTES_MAX;
        for peer in 0..peers {
            let p = Some(peer);
            conns.push(Conn::new(
                true,
                Lane::Control,
                p,
                handshake_bytes,
                control_out_bytes,
            ));
            conns.push(Conn::new(
                true,
                Lane::Data,
                p,
                handshake_bytes,
                config.frame_bytes_max,
            ));
            conns.push(Conn::new(
                false,
                Lane::Control,
                p,
                config.control_buffer_bytes,
                handshake_bytes,
            ));
            conns.push(Conn::new(
                false,
                Lane::Data,
                p,
                handshake_bytes,
                handshake_bytes,
            ));
        }
        for _ in 0..config.pending_connections_max {
            conns.push(Conn::new(
                false,
                Lane::Control,
                None,
                handshake_bytes,
                handshake_bytes,
            ));
        }
        // Each slot has at most two polls in flight (in and out); old
        // generations' polls complete promptly because closing shuts the
        // socket down.
        let entries = (2 * conns.len()).next_power_of_two() as u32;
        let ring = IoUring::builder()
            .setup_cqsize(4 * entries)
            .build(entries)?;
        let now = Instant::now();
        for peer in 0..peers {
            for lane in [OUT_CONTROL, OUT_DATA] {
                conns[1 + SLOTS_PER_PEER * peer + lane].reconnect_at = Some(now);
            }
        }
        Ok(Transport {
            control_slots: vec![[None; CONTROL_KINDS.len()]; peers],
            config,
            ring,
            listener,
            local_addr,
            conns,
            listener_generation: 0,
            listener_armed: false,
            listener_readable: true,
            next_control_peer: 0,
            data_recv_resume_at: vec![None; peers],
            data_send_resume_at: vec![None; peers],
            counters: Counters::default(),
            _not_send: std::marker::PhantomData,
        })
    }

    /// Bytes of buffers a transport with `config` allocates at start-up
    /// (connection inboxes and outboxes; see the slot layout), for memory
    /// budgets. Sockets' kernel buffers are not counted.
    pub fn buffer_bytes(config: &TransportConfig) -> usize {
        let handshake = 2 * CONTROL_FRAME_BYTES_MAX;
        let control_out = CONTROL_KINDS.len() * CONTROL_FRAME_BYTES_MAX;
        let per_peer = (handshake + control_out)
            + (handshake + config.frame_bytes_max)
            + (config.control_buffer_bytes + handshake)
            + (handshake + handshake);
        let control_slots = CONTROL_KINDS.len() * std::mem::size_of::<Option<Message>>();
        config.peers.len() * (per_peer + control_slots)
            + config.pending_connections_max * 2 * handshake
    }

    /// TESTING ONLY: changes [`TransportConfig::fault_data_recv_bytes_per_sec`]
    /// while running (0 lifts the limit at once).
    pub fn set_fault_data_recv_bytes_per_sec(&mut self, bytes_per_sec: u64) {
        self.config.fault_data_recv_bytes_per_sec = bytes_per_sec;
        if bytes_per_sec == 0 {
            self.data_recv_resume_at.fill(None);
        }
    }

    /// TESTING ONLY: changes [`TransportConfig::fault_data_send_bytes_per_sec`]
    /// and the peer node it applies to (None: all) while running.
    pub fn set_fault_data_send_bytes_per_sec(&mut self, bytes_per_sec: u64, node: Option<u32>) {
        self.config.fault_data_send_bytes_per_sec = bytes_per_sec;
        self.config.fault_data_send_node = node;
        self.data_send_resume_at.fill(None);
    }

    /// Charges a received data frame to the throttle (fault hook only).
    fn throttle_data_recv(&mut self, peer: usize, bytes: usize) {
        let rate = self.config.fault_data_recv_bytes_per_sec;
        charge(&mut self.data_recv_resume_at[peer], rate, bytes);
    }

    /// Charges a sent data frame to the throttle (fault hook only).
    fn throttle_data_send(&mut self, peer: usize, bytes: usize) {
        let node = self.config.peers[peer].node_id;
        if self.config.fault_data_send_node.is_none_or(|n| n == node) {
            let rate = self.config.fault_data_send_bytes_per_sec;
            charge(&mut self.data_send_resume_at[peer], rate, bytes);
        }
    }

    /// The address the listener is bound to (the port, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The io_uring instance's file descriptor, for another event loop to
    /// wait on: it is readable when a completion is ready. After
    /// `poll(Duration::ZERO)` has armed the readiness polls, a shard loop that
    /// also waits for other things (timers, a runtime) can wait for this fd
    /// and call `poll(Duration::ZERO)` again when it is readable.
    pub fn ring_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }

    /// What happened so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Index of the peer with `node_id` in the configuration.
    pub fn peer_index(&self, node_id: u32) -> Option<usize> {
        self.config.peers.iter().position(|p| p.node_id == node_id)
    }

    fn slot(peer: usize, lane: usize) -> usize {
        1 + SLOTS_PER_PEER * peer + lane
    }

    fn pending_slots(&self) -> std::ops::Range<usize> {
        1 + SLOTS_PER_PEER * self.config.peers.len()..self.conns.len()
    }

    /// Whether our connection of `lane` to `peer` is up (handshake done).
    pub fn outbound_up(&self, peer: usize, lane: Lane) -> bool {
        let lane = if lane == Lane::Control {
            OUT_CONTROL
        } else {
            OUT_DATA
        };
        self.conns[Self::slot(peer, lane)].phase == Phase::Up
    }

    /// Whether `peer`'s connection of `lane` to us is up.
    pub fn inbound_up(&self, peer: usize, lane: Lane) -> bool {
        let lane = if lane == Lane::Control {
            IN_CONTROL
        } else {
            IN_DATA
        };
        self.conns[Self::slot(peer, lane)].phase == Phase::Up
    }

    /// Queues a control message for `peer`. A newer message of the same
    /// kind replaces one not yet sent (they are state: the newest heartbeat,
    /// ack or vote reply says everything the older one did). Sent by the
    /// next [`flush`](Self::flush) or [`poll`](Self::poll) while the lane is
    /// up; kept until then.
    pub fn send_control(&mut self, peer: usize, message: Message) {
        let slot = control_slot(message.kind())
            .unwrap_or_else(|| panic!("{:?} is not a control message", message.kind()));
        if self.control_slots[peer][slot].replace(message).is_some() {
            self.counters.control_replaced += 1;
        }
    }

    /// Writes queued control messages to every peer whose control lane is up
    /// and has no unsent bytes, in one `write` per peer.
    pub fn flush(&mut self) {
        for peer in 0..self.config.peers.len() {
            let slot = Self::slot(peer, OUT_CONTROL);
            let conn = &mut self.conns[slot];
            if conn.phase != Phase::Up || !conn.outbox_empty() {
                continue;
            }
            let mut any = false;
            for message in self.control_slots[peer].iter_mut() {
                if let Some(message) = message.take() {
                    let mut buf = [0u8; CONTROL_FRAME_BYTES_MAX];
                    let size = frame::encode(&mut buf, &message, 0);
                    conn.queue(&buf[..size]);
                    self.counters.control_sent += 1;
                    any = true;
                }
            }
            if any {
                self.write_outbox(slot);
            }
        }
    }

    /// Whether `peer`'s data lane can take a frame now: up, and the previous
    /// frame fully handed to the kernel.
    pub fn data_send_ready(&self, peer: usize) -> bool {
        let conn = &self.conns[Self::slot(peer, OUT_DATA)];
        conn.phase == Phase::Up
            && conn.outbox_empty()
            && self.data_send_resume_at[peer].is_none_or(|at| Instant::now() >= at)
    }

    /// Sends an AppendEntries whose records are the concatenation of
    /// `records` (slices of the WAL ring, up to `msg_bytes_max` in all), with
    /// one vectored write of header + slices. If the socket takes only part,
    /// the rest is copied into the lane's bounded send buffer and written as
    /// the socket drains; until then [`data_send_ready`](Self::data_send_ready)
    /// is false.
    pub fn send_append(
        &mut self,
        peer: usize,
        head: AppendEntries,
        records: &[&[u8]],
    ) -> Result<(), TransportError> {
        let bytes: usize = records.iter().map(|r| r.len()).sum();
        assert!(bytes.is_multiple_of(8), "records are 8-byte aligned");
        self.send_data(peer, Message::AppendEntries(head), records, bytes)
    }

    /// Sends one snapshot chunk (its CRC is computed here).
    pub fn send_snapshot_chunk(
        &mut self,
        peer: usize,
        mut head: InstallSnapshot,
        chunk: &[u8],
    ) -> Result<(), TransportError> {
        head.data_crc = crc32c::crc32c(chunk);
        self.send_data(peer, Message::InstallSnapshot(head), &[chunk], chunk.len())
    }

    fn send_data(
        &mut self,
        peer: usize,
        message: Message,
        slices: &[&[u8]],
        payload_bytes: usize,
    ) -> Result<(), TransportError> {
        assert!(
            slices.len() <= SEND_SLICES_MAX,
            "at most {SEND_SLICES_MAX} slices"
        );
        let node_id = self.config.peers[peer].node_id;
        if payload_bytes > self.config.msg_bytes_max {
            return Err(TransportError::TooLarge {
                bytes: payload_bytes,
                msg_bytes_max: self.config.msg_bytes_max,
            });
        }
        let slot = Self::slot(peer, OUT_DATA);
        let conn = &mut self.conns[slot];
        if conn.phase != Phase::Up {
            return Err(TransportError::NotConnected {
                node_id,
                lane: Lane::Data,
            });
        }
        if !conn.outbox_empty() {
            return Err(TransportError::Busy { node_id });
        }
        let mut header = [0u8; CONTROL_FRAME_BYTES_MAX];
        let header_bytes = frame::encode(&mut header, &message, payload_bytes);
        let mut iov_storage = [IoSlice::new(&[]); 1 + SEND_SLICES_MAX];
        iov_storage[0] = IoSlice::new(&header[..header_bytes]);
        for (i, s) in slices.iter().enumerate() {
            iov_storage[1 + i] = IoSlice::new(s);
        }
        let mut iov = &mut iov_storage[..1 + slices.len()];
        let total = header_bytes + payload_bytes;
        self.throttle_data_send(peer, total);
        let conn = &mut self.conns[slot];
        let stream = conn.stream.as_mut().expect("an up connection has a stream");
        let mut written = 0;
        while written < total {
            match stream.write_vectored(iov) {
                Ok(n) => {
                    written += n;
                    IoSlice::advance_slices(&mut iov, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Keep the unsent tail: the ring may reuse its memory once
                    // we return. Bounded: a frame fits `frame_bytes_max`.
                    for s in iov.iter() {
                        conn.queue(s);
                    }
                    conn.writable = false;
                    self.counters.data_send_partial += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(slot, CloseReason::PeerClosed, &e);
                    return Err(TransportError::NotConnected {
                        node_id,
                        lane: Lane::Data,
                    });
                }
            }
        }
        Ok(())
    }

    /// The next control message received from any peer, as (peer index,
    /// message). Messages of one peer come in the order sent.
    pub fn next_control(&mut self) -> Option<(usize, Message)> {
        let peers = self.config.peers.len();
        for i in 0..peers {
            let peer = (self.next_control_peer + i) % peers;
            if let Some(message) = self.maybe_decode_control(peer) {
                self.next_control_peer = (peer + 1) % peers;
                self.counters.control_received += 1;
                return Some((peer, message));
            }
        }
        None
    }

    fn maybe_decode_control(&mut self, peer: usize) -> Option<Message> {
        let slot = Self::slot(peer, IN_CONTROL);
        loop {
            let conn = &mut self.conns[slot];
            if conn.phase != Phase::Up {
                return None;
            }
            let bytes = &conn.inbox[conn.inbox_start..conn.inbox_end];
            match frame::decode(bytes, CONTROL_FRAME_BYTES_MAX) {
                Ok(None) => {
                    if conn.readable {
                        self.read_control(slot);
                        continue;
                    }
                    return None;
                }
                Ok(Some((frame, used))) => {
                    conn.inbox_start += used;
                    let kind = frame.message.kind();
                    if control_slot(kind).is_none() {
                        self.close(slot, CloseReason::UnexpectedKind, &kind);
                        return None;
                    }
                    return Some(frame.message);
                }
                Err(error) => {
                    self.close_for_frame_error(slot, error);
                    return None;
                }
            }
        }
    }

    /// Whether `peer`'s data lane has something to read (call
    /// [`recv_data`](Self::recv_data)).
    pub fn data_ready(&self, peer: usize) -> bool {
        let conn = &self.conns[Self::slot(peer, IN_DATA)];
        conn.phase == Phase::Up
            && conn.readable
            && self.data_recv_resume_at[peer].is_none_or(|at| Instant::now() >= at)
    }

    /// The data frame now arriving on `peer`'s lane once its header and
    /// head are in (read now if the socket has them), before any payload
    /// byte is placed: the caller chooses where the payload goes (a frame
    /// that follows the log into the WAL ring, anything else into a scratch
    /// buffer) and how large a buffer to offer. `payload_filled > 0` means
    /// the payload is partly received and its buffer is fixed.
    pub fn peek_data(&mut self, peer: usize) -> Option<DataPending> {
        let slot = Self::slot(peer, IN_DATA);
        let (header, message) = self.read_data_head(slot)?;
        Some(DataPending {
            message,
            payload_bytes: header.payload_bytes(),
            payload_filled: self.conns[slot].data.payload_filled,
        })
    }

    /// Gives up a partly received frame on `peer`'s data lane (its buffer
    /// is about to be reused): the lane is closed, as a stream cut inside a
    /// frame cannot be resumed, and the peer reconnects and resends what
    /// its Raft core still needs. Nothing happens if no payload byte of the
    /// current frame was received.
    pub fn drop_partial_data(&mut self, peer: usize, why: &dyn std::fmt::Display) {
        let slot = Self::slot(peer, IN_DATA);
        if self.conns[slot].data.payload_filled > 0 {
            // No reason of its own in the counters: counted with the
            // ordinary closes, the log line says why.
            self.close(slot, CloseReason::PeerClosed, why);
        }
    }

    /// Reads the next data frame's header and head into the inbox (once),
    /// checking them; None while they are incomplete or the lane closed.
    fn read_data_head(&mut self, slot: usize) -> Option<(FrameHeader, Message)> {
        loop {
            let conn = &mut self.conns[slot];
            if conn.phase != Phase::Up {
                return None;
            }
            let reader = &mut conn.data;
            let Some(header) = reader.header else {
                // Header and head in one read when they are there; the
                // header is checked as soon as it is complete.
                let read = self.read_into_inbox(slot, DATA_FIRST_READ_BYTES);
                let conn = &mut self.conns[slot];
                if read.is_err() || conn.inbox_end < FRAME_HEADER_BYTES {
                    return None;
                }
                let raw = conn.inbox[..FRAME_HEADER_BYTES]
                    .try_into()
                    .expect("16 bytes");
                match frame::decode_header(raw, self.config.frame_bytes_max) {
                    Ok(header) if header.kind.is_data() => conn.data.header = Some(header),
                    Ok(header) => {
                        self.close(slot, CloseReason::UnexpectedKind, &header.kind);
                        return None;
                    }
                    Err(error) => {
                        self.close_for_frame_error(slot, error);
                        return None;
                    }
                }
                continue;
            };
            let head_frame_bytes = header.head_frame_bytes();
            if reader.message.is_none() && conn.inbox_end < head_frame_bytes {
                match self.read_into_inbox(slot, head_frame_bytes) {
                    Ok(true) => continue,
                    Ok(false) | Err(()) => return None,
                }
            }
            let Some(message) = reader.message else {
                match frame::decode_head(&header, &conn.inbox[..head_frame_bytes]) {
                    Ok(message) => {
                        conn.data.message = Some(message);
                        // The head is consumed; the inbox now collects the
                        // start of the next frame, read with the payload.
                        conn.inbox_end = 0;
                    }
                    Err(error) => {
                        self.close_for_frame_error(slot, error);
                        return None;
                    }
                }
                continue;
            };
            return Some((header, message));
        }
    }

    /// Receives from `peer`'s data lane straight into `dst` (the free space
    /// of the WAL ring, or a scratch buffer). A frame's payload is written at
    /// the start of `dst`; while a frame is partly read, later calls must
    /// pass a buffer starting at the same address. Records are checked with
    /// `verify_run` before they are reported; a failure closes the connection.
    pub fn recv_data(&mut self, peer: usize, dst: &mut [u8]) -> DataEvent {
        let slot = Self::slot(peer, IN_DATA);
        let Some((header, message)) = self.read_data_head(slot) else {
            return DataEvent::Idle;
        };
        let conn = &mut self.conns[slot];
        let reader = &mut conn.data;
        let needed = header.payload_bytes();
        if dst.len() < needed {
            return DataEvent::NoRoom { needed };
        }
        if reader.payload_filled == 0 {
            reader.payload_at = dst.as_ptr() as usize;
        }
        assert_eq!(
            reader.payload_at,
            dst.as_ptr() as usize,
            "a partly received frame's buffer must not move"
        );
        while reader.payload_filled < needed {
            let stream = conn.stream.as_mut().expect("an up connection has a stream");
            // The payload, and in the same syscall the next frame's
            // header and head (never past them: every data frame is at
            // least DATA_FIRST_READ_BYTES long).
            let mut iov = [
                IoSliceMut::new(&mut dst[reader.payload_filled..needed]),
                IoSliceMut::new(&mut conn.inbox[..DATA_FIRST_READ_BYTES]),
            ];
            match stream.read_vectored(&mut iov) {
                Ok(0) => {
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    self.close(slot, CloseReason::PeerClosed, &eof);
                    return DataEvent::Idle;
                }
                Ok(n) => {
                    let into_payload = n.min(needed - reader.payload_filled);
                    reader.payload_filled += into_payload;
                    conn.inbox_end = n - into_payload;
                    if conn.inbox_end < DATA_FIRST_READ_BYTES {
                        // A short read: drained, as in read_into_inbox.
                        conn.readable = false;
                    }
                    if reader.payload_filled < needed {
                        return DataEvent::Idle;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return DataEvent::Idle;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(slot, CloseReason::PeerClosed, &e);
                    return DataEvent::Idle;
                }
            }
        }
        conn.data = DataReader::default();
        conn.inbox_start = 0;
        self.throttle_data_recv(peer, header.head_frame_bytes() + needed);
        self.finish_data_frame(slot, message, &dst[..needed])
    }

    fn finish_data_frame(&mut self, slot: usize, message: Message, payload: &[u8]) -> DataEvent {
        match message {
            Message::AppendEntries(head) => {
                let prev = IoId::new(head.prev_term, head.prev_index);
                match verify_run(payload, prev) {
                    Ok(summary) => {
                        self.counters.data_frames_received += 1;
                        DataEvent::Append {
                            head,
                            records_bytes: payload.len(),
                            summary,
                        }
                    }
                    Err((offset, error)) => {
                        let why = format_args!("record at offset {offset}: {error}");
                        self.close(slot, CloseReason::BadRecords, &why);
                        DataEvent::Idle
                    }
                }
            }
            Message::InstallSnapshot(head) => {
                let computed = crc32c::crc32c(payload);
                if computed != head.data_crc {
                    let error = FrameError::BadCrc {
                        stored: head.data_crc,
                        computed,
                    };
                    self.close(slot, CloseReason::BadFrame, &error);
                    return DataEvent::Idle;
                }
                self.counters.data_frames_received += 1;
                DataEvent::SnapshotChunk {
                    head,
                    bytes: payload.len(),
                }
            }
            other => unreachable!("only data kinds reach here, not {:?}", other.kind()),
        }
    }

    /// Reads into the inbox until it holds `target` bytes. `Ok(true)`: it
    /// does; `Ok(false)`: the socket has nothing more now; `Err`: closed.
    fn read_into_inbox(&mut self, slot: usize, target: usize) -> Result<bool, ()> {
        let conn = &mut self.conns[slot];
        while conn.inbox_end < target {
            let stream = conn
                .stream
                .as_mut()
                .expect("a live connection has a stream");
            match stream.read(&mut conn.inbox[conn.inbox_end..target]) {
                Ok(0) => {
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    self.close(slot, CloseReason::PeerClosed, &eof);
                    return Err(());
                }
                Ok(n) => {
                    conn.inbox_end += n;
                    if conn.inbox_end < target {
                        // A short read almost always drained the socket:
                        // wait for readiness instead of paying a read that
                        // fails with EAGAIN (a poll on a socket that still
                        // has data completes at once).
                        conn.readable = false;
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(slot, CloseReason::PeerClosed, &e);
                    return Err(());
                }
            }
        }
        Ok(true)
    }

    /// Reads what fits into an inbound control lane's buffer.
    fn read_control(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if conn.inbox_start > 0 {
            conn.inbox.copy_within(conn.inbox_start..conn.inbox_end, 0);
            conn.inbox_end -= conn.inbox_start;
            conn.inbox_start = 0;
        }
        let capacity = conn.inbox.len();
        if conn.inbox_end == capacity {
            // Full of undecoded frames: the caller drains with next_control.
            return;
        }
        let _ = self.read_into_inbox(slot, capacity);
    }

    /// Waits up to `timeout` for network events and handles them: accepts,
    /// handshakes, reconnects, control-lane reads, pending writes. Then
    /// [`next_control`](Self::next_control) and [`data_ready`](Self::data_ready)
    /// tell what arrived.
    pub fn poll(&mut self, timeout: Duration) -> Result<(), TransportError> {
        self.flush();
        self.arm_polls()?;
        let now = Instant::now();
        let wait = self
            .nearest_deadline()
            .map_or(timeout, |d| timeout.min(d.saturating_duration_since(now)));
        self.wait(wait)?;
        self.reap_completions();
        self.handle_events();
        self.handle_timers(Instant::now());
        self.flush();
        Ok(())
    }

    fn arm_polls(&mut self) -> Result<(), TransportError> {
        let mut entries: [Option<io_uring::squeue::Entry>; 2] = [None, None];
        if !self.listener_armed && !self.listener_readable {
            self.listener_armed = true;
            let fd = types::Fd(self.listener.as_raw_fd());
            let ud = user_data(self.listener_generation, LISTENER_SLOT, false);
            self.push(
                opcode::PollAdd::new(fd, libc::POLLIN as u32)
                    .build()
                    .user_data(ud),
            )?;
        }
        for slot in 1..self.conns.len() {
            let conn = &mut self.conns[slot];
            let Some(stream) = conn.stream.as_ref() else {
                continue;
            };
            let fd = types::Fd(stream.as_raw_fd());
            let want_in = !conn.readable
                && !conn.poll_in_armed
                && match conn.phase {
                    Phase::Closed | Phase::Connecting => false,
                    Phase::Handshaking => true,
                    Phase::Up => conn.dialer || conn.inbox_end < conn.inbox.len(),
                };
            let want_out = !conn.writable
                && !conn.poll_out_armed
                && (conn.phase == Phase::Connecting || !conn.outbox_empty());
            if want_in {
                conn.poll_in_armed = true;
                let ud = user_data(conn.generation, slot, false);
                entries[0] = Some(
                    opcode::PollAdd::new(fd, libc::POLLIN as u32)
                        .build()
                        .user_data(ud),
                );
            }
            if want_out {
                conn.poll_out_armed = true;
                let ud = user_data(conn.generation, slot, true);
                entries[1] = Some(
                    opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                        .build()
                        .user_data(ud),
                );
            }
            for entry in entries.iter_mut() {
                if let Some(entry) = entry.take() {
                    self.push(entry)?;
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) -> Result<(), TransportError> {
        // SAFETY: a PollAdd references no memory, only the fd, which stays
        // open until its poll completes (closing shuts the socket down first,
        // which completes the poll).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    fn wait(&mut self, wait: Duration) -> Result<(), TransportError> {
        let any_ready = self.listener_readable
            || self.conns.iter().any(|c| {
                c.stream.is_some()
                    && ((c.readable && c.phase != Phase::Up) || (c.writable && !c.outbox_empty()))
            });
        let spin = self.config.spin_before_park.min(wait);
        let result = if (wait.is_zero() || any_ready) && self.ring.submission().is_empty() {
            // Nothing to hand over and no reason to sleep: completions are
            // read from the shared queue without entering the kernel (the
            // caller's own wait already ran any pending completion work).
            Ok(0)
        } else if wait.is_zero() || any_ready {
            self.ring.submit()
        } else if !spin.is_zero() && self.spin_for_completion(spin)? {
            Ok(0)
        } else {
            let ts = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Enters the kernel without sleeping (which runs its pending
    /// completion work) until a completion is there or `spin` has passed.
    /// Keeps this core awake for a moment after activity: waking a parked
    /// core costs tens of microseconds on virtual machines.
    fn spin_for_completion(&mut self, spin: Duration) -> Result<bool, TransportError> {
        let start = Instant::now();
        loop {
            self.ring.submit()?;
            if !self.ring.completion().is_empty() {
                return Ok(true);
            }
            if start.elapsed() >= spin {
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }

    fn reap_completions(&mut self) {
        for cqe in self.ring.completion() {
            let ud = cqe.user_data();
            let generation = (ud >> 32) as u32;
            let slot = ((ud & 0xFFFF_FFFF) >> 1) as usize;
            let out = ud & 1 == 1;
            if slot == LISTENER_SLOT {
                self.listener_armed = false;
                self.listener_readable = true;
                continue;
            }
            let conn = &mut self.conns[slot];
            if conn.generation != generation {
                continue; // a poll of a connection since closed
            }
            if out {
                conn.poll_out_armed = false;
                conn.writable = true;
            } else {
                conn.poll_in_armed = false;
                conn.readable = true;
            }
        }
    }

    fn handle_events(&mut self) {
        if self.listener_readable {
            self.accept_all();
        }
        for slot in 1..self.conns.len() {
            let conn = &self.conns[slot];
            if conn.stream.is_none() {
                continue;
            }
            if conn.writable {
                match conn.phase {
                    Phase::Connecting => self.finish_connect(slot),
                    Phase::Handshaking | Phase::Up if !conn.outbox_empty() => {
                        self.write_outbox(slot)
                    }
                    _ => {}
                }
            }
            let conn = &self.conns[slot];
            if conn.stream.is_none() || !conn.readable {
                continue;
            }
            match conn.phase {
                Phase::Handshaking => self.read_handshake(slot),
                Phase::Up if conn.dialer => self.read_on_outbound(slot),
                Phase::Up if conn.lane == Lane::Control => self.read_control(slot),
                _ => {} // data lanes are read by recv_data
            }
        }
    }

    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_POLL_MAX {
            match self.listener.accept() {
                Ok((stream, _)) => self.adopt_inbound(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ECONNABORTED, EMFILE...: the next poll tries again.
                    log::warn!("shard {}: accept failed: {e}", self.config.shard_id);
                    self.listener_readable = false;
                    return;
                }
            }
        }
    }

    fn adopt_inbound(&mut self, stream: TcpStream) {
        let free = self
            .pending_slots()
            .find(|&slot| self.conns[slot].stream.is_none());
        let Some(slot) = free else {
            self.counters.count_close(CloseReason::PendingFull);
            log::warn!(
                "shard {}: refused a connection: all {} handshake slots busy",
                self.config.shard_id,
                self.config.pending_connections_max
            );
            let _ = stream.shutdown(Shutdown::Both);
            return;
        };
        if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
            return;
        }
        let deadline = Instant::now() + self.config.handshake_timeout;
        let conn = &mut self.conns[slot];
        conn.stream = Some(stream);
        conn.phase = Phase::Handshaking;
        conn.peer = None;
        conn.handshake_deadline = Some(deadline);
        conn.readable = true; // the Hello may already be there
    }

    fn queue_frame(&mut self, slot: usize, message: &Message) {
        let mut buf = [0u8; CONTROL_FRAME_BYTES_MAX];
        let size = frame::encode(&mut buf, message, 0);
        self.conns[slot].queue(&buf[..size]);
    }

    /// Writes the outbox until it is empty or the socket is full.
    fn write_outbox(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        while !conn.outbox_empty() {
            let stream = conn.stream.as_mut().expect("writing needs a stream");
            match stream.write(&conn.outbox[conn.outbox_start..conn.outbox_end]) {
                Ok(n) => conn.outbox_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(slot, CloseReason::PeerClosed, &e);
                    return;
                }
            }
        }
    }

    /// A peer sends nothing on our outbound connections once they are up but
    /// an Error frame before closing; anything readable means the end.
    fn read_on_outbound(&mut self, slot: usize) {
        let capacity = self.conns[slot].inbox.len();
        let _ = self.read_into_inbox(slot, capacity);
        let conn = &self.conns[slot];
        if conn.stream.is_none() || conn.inbox_end == 0 {
            return; // closed by the read, or a spurious wake-up
        }
        let bytes = &conn.inbox[..conn.inbox_end];
        match frame::decode(bytes, CONTROL_FRAME_BYTES_MAX) {
            Ok(Some((frame, _))) => match frame.message {
                Message::Error(e) => self.close(slot, CloseReason::RefusedByPeer, &e),
                other => self.close(slot, CloseReason::UnexpectedKind, &other.kind()),
            },
            Ok(None) => self.close(
                slot,
                CloseReason::UnexpectedKind,
                &"bytes on a send-only lane",
            ),
            Err(error) => self.close_for_frame_error(slot, error),
        }
    }

    fn close_for_frame_error(&mut self, slot: usize, error: FrameError) {
        let reason = match error {
            FrameError::TooLong { .. } => CloseReason::FrameTooLong,
            FrameError::UnsupportedVersion(_) => CloseReason::UnsupportedVersion,
            _ => CloseReason::BadFrame,
        };
        let conn = &self.conns[slot];
        if !conn.dialer && conn.phase == Phase::Handshaking {
            let code = match reason {
                CloseReason::FrameTooLong => ErrorCode::FrameTooLong,
                CloseReason::UnsupportedVersion => ErrorCode::UnsupportedVersion,
                _ => ErrorCode::Protocol,
            };
            let error = ErrorFrame {
                code,
                detail: PROTOCOL_VERSION as u64,
            };
            self.queue_frame(slot, &Message::Error(error));
            self.write_outbox(slot);
        }
        if self.conns[slot].stream.is_some() {
            self.close(slot, reason, &error);
        }
    }

    /// Closes a connection: counted, logged, polls retired, dialers
    /// scheduled to reconnect with jittered exponential back-off.
    fn close(&mut self, slot: usize, reason: CloseReason, why: &dyn std::fmt::Display) {
        if self.conns[slot].stream.is_none() {
            return;
        }
        let delay = self.reconnect_delay(self.conns[slot].failures);
        let pending = slot >= self.pending_slots().start;
        let conn = &self.conns[slot];
        let peer = match conn.peer {
            Some(p) => format!("node {}", self.config.peers[p].node_id),
            None => "an unidentified peer".to_string(),
        };
        let direction = if conn.dialer { "to" } else { "from" };
        // A peer going away (or not there yet) is ordinary life; anything
        // else is a peer or an attacker breaking the protocol.
        let level = match reason {
            CloseReason::PeerClosed | CloseReason::Replaced => log::Level::Info,
            _ => log::Level::Warn,
        };
        log::log!(
            level,
            "shard {}: closed {:?} lane {direction} {peer}: {reason}: {why}",
            self.config.shard_id,
            conn.lane
        );
        let conn = &mut self.conns[slot];
        let Some(stream) = conn.stream.take() else {
            return;
        };
        // Completes any poll in flight on this socket, whose reference would
        // otherwise keep it open.
        let _ = stream.shutdown(Shutdown::Both);
        drop(stream);
        self.counters.count_close(reason);
        let keep_peer = if pending { None } else { conn.peer };
        conn.reset(keep_peer);
        if conn.dialer {
            conn.failures += 1;
            conn.reconnect_at = Some(Instant::now() + delay);
        }
    }

    fn reconnect_delay(&self, failures: u32) -> Duration {
        let (min, max) = (
            self.config.reconnect_delay_min,
            self.config.reconnect_delay_max,
        );
        backoff_delay(min, max, failures, fastrand::f64())
    }

    fn nearest_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|c| match (c.reconnect_at, c.handshake_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
            .min()
    }

    fn handle_timers(&mut self, now: Instant) {
        for slot in 1..self.conns.len() {
            let conn = &self.conns[slot];
            if conn.handshake_deadline.is_some_and(|d| d <= now) && conn.stream.is_some() {
                let timeout = self.config.handshake_timeout;
                self.close(
                    slot,
                    CloseReason::HandshakeTimeout,
                    &format_args!("no handshake in {timeout:?}"),
                );
                continue;
            }
            let conn = &mut self.conns[slot];
            if conn.dialer && conn.stream.is_none() && conn.reconnect_at.is_some_and(|t| t <= now) {
                conn.reconnect_at = None;
                self.start_connect(slot);
            }
        }
    }

    fn start_connect(&mut self, slot: usize) {
        let peer = self.conns[slot]
            .peer
            .expect("dialer slots belong to a peer");
        let address = self.config.peers[peer].address;
        self.counters.connect_attempts += 1;
        match crate::socket::start_connect(address) {
            Ok(stream) => {
                let conn = &mut self.conns[slot];
                conn.stream = Some(stream);
                conn.phase = Phase::Connecting;
                conn.nonce = auth::random_nonce();
                conn.inbox_start = 0;
                conn.inbox_end = 0;
                conn.outbox_start = 0;
                conn.outbox_end = 0;
            }
            Err(error) => {
                let delay = self.reconnect_delay(self.conns[slot].failures);
                let conn = &mut self.conns[slot];
                conn.failures += 1;
                conn.reconnect_at = Some(Instant::now() + delay);
                log::info!(
                    "shard {}: connect to {address} failed: {error}",
                    self.config.shard_id
                );
            }
        }
    }
}

/// Delay before reconnect attempt number `failures + 1`: `min` doubled per
/// failure, capped at `max`, then scaled into [50%, 100%] by `unit` (a
/// random number in [0, 1)) so peers restarted together do not dial in
/// lockstep.
/// Moves a throttle's resume time `bytes / rate` later (from now if it
/// passed); a rate of 0 means no throttle.
fn charge(resume_at: &mut Option<Instant>, rate: u64, bytes: usize) {
    if rate == 0 {
        *resume_at = None;
        return;
    }
    let now = Instant::now();
    let from = resume_at.map_or(now, |at| at.max(now));
    *resume_at = Some(from + Duration::from_secs_f64(bytes as f64 / rate as f64));
}

fn backoff_delay(min: Duration, max: Duration, failures: u32, unit: f64) -> Duration {
    let doubled = min.saturating_mul(1u32 << failures.min(20));
    doubled.min(max).mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_the_cap_with_jitter_below_it() {
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(1));
        let top = |failures| backoff_delay(min, max, failures, 1.0);
        assert_eq!(top(0), min);
        assert_eq!(top(1), min * 2);
        assert_eq!(top(3), min * 8);
        assert_eq!(top(7), max);
        assert_eq!(top(u32::MAX), max);
        assert_eq!(backoff_delay(min, max, 3, 0.0), min * 4);
        let jittered = backoff_delay(min, max, 3, 0.3);
        assert!(jittered > min * 4 && jittered < min * 8);
    }
}
