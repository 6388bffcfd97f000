//! One client connection as the shard loop keeps it: non-blocking socket,
//! input buffer, parser, output buffer with partial-write offset, and the
//! ring of commands waiting for their reply.
//!
//! ```text
//!  input  [ handled | parsed-not-yet | free ]     ≤ command_bytes_max: a whole
//!           0      at              filled           command always fits
//!  pending ring: seq head .. tail (≤ pipeline_max), entry = seq % pipeline_max
//!           head ─▶ [Local: waiting] [Mailbox: ticket] [Local: done] ◀─ tail
//!  out    [ sent | unsent | free ]                  replies in command order
//! ```
//!
//! Replies leave in command order: only the head of the pending ring is
//! ever written to `out`; a later command that completes first keeps its
//! (small) reply in its entry, or in the other shard's mailbox slot. A
//! command answered at once (PING, -MOVED, INFO) while others wait is not
//! taken until the ring is empty (a barrier), so its reply needs no storage.
//! Every buffer is allocated when the connection slot is first used and
//! reused by later connections of that slot; nothing grows with load.

use std::io::{Read, Write};
use std::net::TcpStream;

use ringraft_engine::shard::{CallError, Outcome, ResponseTooLarge, Ticket};
use ringraft_tools::service::kv::RESPONSE_BYTES_MAX;
use ringraft_tools::service::resp::{Parser, RespSink};

/// A command waiting for its reply.
#[derive(Debug, Clone, Copy)]
pub enum Pending {
    /// Proposed on this shard; `outcome` set by the completion, with the
    /// state machine's reply (at most `RESPONSE_BYTES_MAX`).
    Local {
        /// The key's slot (for -MOVED if leadership moved).
        slot: u16,
        /// None while in flight.
        outcome: Option<Outcome>,
        /// Reply bytes used.
        reply_len: u8,
        /// The reply.
        reply: [u8; RESPONSE_BYTES_MAX],
    },
    /// Submitted to a shard's mailbox (a read, or a write for a group
    /// another local shard leads); the reply stays in the mailbox slot
    /// until this entry is the head.
    Mailbox {
        /// The shard (group) whose mailbox holds it.
        shard: u32,
        /// The key's slot.
        slot: u16,
        /// The mailbox ticket.
        ticket: Ticket,
        /// A proposal (else a read).
        write: bool,
    },
    /// Refused before submission.
    Refused(CallError),
}

const _: () = assert!(RESPONSE_BYTES_MAX <= u8::MAX as usize);

/// Why a connection does not take its next command now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Nothing holds it.
    None,
    /// The next command is answered at once: it waits for an empty ring.
    Barrier,
    /// The target shard's mailbox is full: retried every loop turn.
    MailboxFull,
    /// The next command is a write not admitted yet (admission control):
    /// the connection waits in the service's FIFO.
    Admission,
}

/// The bounded output buffer: replies appended at `len`, written from `sent`.
#[derive(Debug)]
pub struct OutBuf {
    bytes: Box<[u8]>,
    sent: usize,
    len: usize,
}

impl OutBuf {
    fn new(capacity_bytes: usize) -> OutBuf {
        OutBuf {
            bytes: vec![0; capacity_bytes].into_boxed_slice(),
            sent: 0,
            len: 0,
        }
    }

    /// Bytes not yet written to the socket.
    pub fn unsent_bytes(&self) -> usize {
        self.len - self.sent
    }

    /// Room for `bytes` more (moving the unsent bytes to the front if the
    /// sent prefix is in the way).
    pub fn make_room(&mut self, bytes: usize) -> bool {
        if self.len + bytes > self.bytes.len() && self.sent > 0 {
            self.bytes.copy_within(self.sent..self.len, 0);
            self.len -= self.sent;
            self.sent = 0;
        }
        self.len + bytes <= self.bytes.len()
    }

    fn clear(&mut self) {
        self.sent = 0;
        self.len = 0;
    }
}

impl RespSink for OutBuf {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge> {
        if !self.make_room(bytes.len()) {
            return Err(ResponseTooLarge {
                needed_bytes: self.len - self.sent + bytes.len(),
                capacity_bytes: self.bytes.len(),
            });
        }
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }

    fn written_len(&self) -> usize {
        self.len
    }

    fn truncate_to(&mut self, len: usize) {
        self.len = self.len.min(len).max(self.sent);
    }
}

/// What a socket read or write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Bytes moved.
    Progress,
    /// Bytes read, fewer than there was room for: the socket is most
    /// likely empty now (level-triggered epoll says so if not), so the
    /// read that would only return EAGAIN is skipped.
    Drained,
    /// The socket would block.
    WouldBlock,
    /// The peer closed or the socket failed: close the connection.
    Closed,
}

/// One connection slot (reused by later connections).
#[derive(Debug)]
pub struct Connection {
    /// None when the slot is free or the client is gone (then the slot
    /// drains its in-flight commands before it is freed).
    pub stream: Option<TcpStream>,
    /// The RESP parser.
    pub parser: Parser,
    /// Received bytes.
    pub input: Box<[u8]>,
    /// Handled up to here.
    pub at: usize,
    /// Received up to here.
    pub filled: usize,
    /// Replies.
    pub out: OutBuf,
    /// The last write would have blocked: wait for EPOLLOUT.
    pub write_blocked: bool,
    /// Pending ring: entry of seq `s` is `pending[s % len]`.
    pub pending: Box<[Pending]>,
    /// Oldest command waiting (wrapping sequence numbers).
    pub head: u32,
    /// Next command's sequence number.
    pub tail: u32,
    /// Entries of kind `Mailbox` in the ring.
    pub mailbox_pending: usize,
    /// Writes (local or mailbox) in the ring: a read waits for them, so a
    /// client reads its own pipelined writes.
    pub writes_pending: usize,
    /// Reads in the ring: a write waits for them, so a read does not see
    /// a write the client sent after it.
    pub reads_pending: usize,
    /// Why the next command is not taken.
    pub block: Block,
    /// Close once the replies so far are written (QUIT, protocol error).
    pub close_after_flush: bool,
    /// epoll events registered now.
    pub interest: u32,
    /// In the service's `touched` list.
    pub touched: bool,
    /// In the service's `dirty` (to flush) list.
    pub dirty: bool,
    /// A reply or the next command waits for output room: serve the
    /// connection again once a write makes some.
    pub wants_out_room: bool,
    /// The slot belongs to a client (connected, or gone and draining).
    pub in_use: bool,
    /// In the service's admission FIFO.
    pub admission_queued: bool,
    /// Its write waited past `admission_timeout`: answer it -BUSY.
    pub admission_expired: bool,
}

impl Connection {
    /// A slot with its buffers.
    pub fn new(
        parser: Parser,
        input_bytes: usize,
        out_bytes: usize,
        pipeline_max: usize,
    ) -> Connection {
        assert!(pipeline_max > 0 && pipeline_max <= u32::MAX as usize / 2);
        Connection {
            stream: None,
            parser,
            input: vec![0; input_bytes].into_boxed_slice(),
            at: 0,
            filled: 0,
            out: OutBuf::new(out_bytes),
            write_blocked: false,
            pending: vec![Pending::Refused(CallError::Full); pipeline_max].into_boxed_slice(),
            head: 0,
            tail: 0,
            mailbox_pending: 0,
            writes_pending: 0,
            reads_pending: 0,
            block: Block::None,
            close_after_flush: false,
            interest: 0,
            touched: false,
            dirty: false,
            wants_out_room: false,
            in_use: false,
            admission_queued: false,
            admission_expired: false,
        }
    }

    /// Resets the slot for a new client.
    pub fn reset(&mut self, stream: TcpStream) {
        debug_assert!(self.pending_len() == 0, "a slot is freed only when drained");
        self.stream = Some(stream);
        self.at = 0;
        self.filled = 0;
        self.out.clear();
        self.write_blocked = false;
        self.mailbox_pending = 0;
        self.writes_pending = 0;
        self.reads_pending = 0;
        self.block = Block::None;
        self.close_after_flush = false;
        self.interest = 0;
        self.wants_out_room = false;
        self.in_use = true;
        self.admission_queued = false;
        self.admission_expired = false;
    }

    /// Commands waiting for their reply.
    pub fn pending_len(&self) -> usize {
        self.tail.wrapping_sub(self.head) as usize
    }

    /// Whether the ring has room for another command.
    pub fn pending_has_room(&self) -> bool {
        self.pending_len() < self.pending.len()
    }

    /// The entry of sequence number `seq`.
    pub fn entry_mut(&mut self, seq: u32) -> &mut Pending {
        let len = self.pending.len();
        &mut self.pending[seq as usize % len]
    }

    /// Appends an entry; returns its sequence number.
    pub fn push(&mut self, entry: Pending) -> u32 {
        assert!(self.pending_has_room(), "checked before parsing");
        let seq = self.tail;
        self.count(&entry, 1);
        *self.entry_mut(seq) = entry;
        self.tail = self.tail.wrapping_add(1);
        seq
    }

    /// Drops the head entry (its reply was written or discarded).
    pub fn pop(&mut self) {
        assert!(self.pending_len() > 0);
        let entry = *self.entry_mut(self.head);
        self.count(&entry, usize::wrapping_neg(1));
        self.head = self.head.wrapping_add(1);
    }

    fn count(&mut self, entry: &Pending, delta: usize) {
        match entry {
            Pending::Mailbox { write, .. } => {
                self.mailbox_pending = self.mailbox_pending.wrapping_add(delta);
                if *write {
                    self.writes_pending = self.writes_pending.wrapping_add(delta);
                } else {
                    self.reads_pending = self.reads_pending.wrapping_add(delta);
                }
            }
            Pending::Local { .. } => self.writes_pending = self.writes_pending.wrapping_add(delta),
            Pending::Refused(_) => {}
        }
    }

    /// Whether `seq` is in the ring.
    pub fn holds(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.head) < self.tail.wrapping_sub(self.head)
    }

    /// Whether the next command may be parsed now (`out_pause_bytes`:
    /// unsent output past which the client must read first).
    pub fn may_parse(&self, out_pause_bytes: usize) -> bool {
        self.stream.is_some()
            && !self.close_after_flush
            && self.block == Block::None
            && self.pending_has_room()
            && self.out.unsent_bytes() < out_pause_bytes
    }

    /// Reads what the socket has into the free input space.
    pub fn read(&mut self) -> Io {
        if self.at > 0 {
            self.input.copy_within(self.at..self.filled, 0);
            self.filled -= self.at;
            self.at = 0;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Io::Closed;
        };
        if self.filled == self.input.len() {
            // A whole command always fits: the parser reports an overlong one.
            return Io::WouldBlock;
        }
        let room = self.input.len() - self.filled;
        match stream.read(&mut self.input[self.filled..]) {
            Ok(0) => Io::Closed,
            Ok(n) => {
                self.filled += n;
                if n < room { Io::Drained } else { Io::Progress }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Io::Progress,
            Err(_) => Io::Closed,
        }
    }

    /// Writes unsent replies until done or the socket would block.
    pub fn write(&mut self) -> Io {
        let Some(stream) = self.stream.as_mut() else {
            self.out.clear();
            return Io::Closed;
        };
        let mut wrote = false;
        while self.out.sent < self.out.len {
            match stream.write(&self.out.bytes[self.out.sent..self.out.len]) {
                Ok(0) => return Io::Closed,
                Ok(n) => {
                    self.out.sent += n;
                    wrote = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return if wrote { Io::Progress } else { Io::WouldBlock };
                }
                Err(_) => return Io::Closed,
            }
        }
        self.out.clear();
        self.write_blocked = false;
        if wrote { Io::Progress } else { Io::WouldBlock }
    }
}
