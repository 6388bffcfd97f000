//! The RESP client service of one shard, run by the shard loop itself
//! (an engine [`Frontend`]): no thread per connection, no lock or futex on
//! a local write.
//!
//! ```text
//!  frontend epoll (in the shard's epoll set)
//!   ├─ client listener (shared by every shard, EPOLLEXCLUSIVE: one shard
//!   │  is woken per connection; all accept, ≤ connections_max per node)
//!   ├─ notifier eventfd (completions of requests sent to mailboxes)
//!   └─ client sockets (EPOLLIN while a connection may take commands,
//!      EPOLLOUT while a write would block)
//!  per command: parse ─▶ dispatch ─┬─ immediate reply (PING, -MOVED, INFO)
//!                                  ├─ write on this shard's group: proposed
//!                                  │  straight into the ring (tag = slot, seq)
//!                                  └─ read, or write on another local
//!                                     shard's group: that shard's mailbox,
//!                                     try_submit (never blocks; Full pauses
//!                                     the connection until a later turn)
//! ```
//!
//! Admission control: a write this shard does not admit now (ring or
//! uncommitted bytes full) is not taken; its connection waits in a FIFO
//! (≤ connections_max) that is retried in order every turn, as commits
//! return tokens; past `admission_timeout` the write is answered `-BUSY`.
//! A write forwarded to another shard waits in that shard's mailbox FIFO.
//!
//! Per-connection order (read-your-writes, and no read seeing a later
//! write): a read is not started while a write of its connection is in
//! flight, and a write is not started while a read of its connection is;
//! either waits (`Block::Barrier`) until the connection's ring is empty.
//!
//! Bounds: connections ≤ `connections_max` per node (a shared counter),
//! commands in flight per connection ≤ `pipeline_max` (then the socket is
//! not read: TCP pushes back), unsent output per connection ≤
//! `out_pause_bytes` before commands stop being taken, epoll events per
//! turn ≤ `EVENTS_MAX`.

use ringraft_engine::shard::BudgetItem;
use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringraft_engine::shard::{
    CallError, Frontend, FrontendContext, Notifier, Outcome, RequestKind, ShardRequests,
    ShardShared, ShardStatus,
};
use ringraft_tools::service::command::{
    Action, PeerStatus, ReplicationStatus, ServerView, dispatch, write_route_error,
};
use ringraft_tools::service::kv::{Kv, RESPONSE_BYTES_MAX};
use ringraft_tools::service::resp::{Limits, Parsed, Parser, RespSink};
use ringraft_tools::service::slots::{Route, RoutingTable};

use super::connection::{Block, Connection, Io, Pending};

/// epoll key of the client listener.
const LISTENER_KEY: u64 = u64::MAX;
/// epoll key of the notifier eventfd.
const NOTIFIER_KEY: u64 = u64::MAX - 1;
/// Events taken per poll (more wait for the next turn: level-triggered).
const EVENTS_MAX: usize = 256;
/// Output room kept beyond a reply's bytes for an error text.
const ERROR_ROOM_BYTES: usize = 512;

/// What every shard's service shares (built once by the server).
#[derive(Debug)]
pub struct ServiceConfig {
    /// Routing template (leaders refreshed per command).
    pub routing: RoutingTable,
    /// Cluster id (INFO, CLUSTER).
    pub cluster_id: u64,
    /// Log writes wait for stable storage (INFO, CONFIG GET appendonly).
    pub fsync: bool,
    /// Protocol bounds of a connection.
    pub limits: Limits,
    /// Commands in flight per connection.
    pub pipeline_max: usize,
    /// Output buffer of a connection (≥ the largest read reply + room).
    pub out_bytes: usize,
    /// Unsent output past which a connection takes no more commands.
    pub out_pause_bytes: usize,
    /// Open client connections per node.
    pub connections_max: usize,
    /// Connection slots in use on the node.
    pub open: AtomicUsize,
    /// The bound client listener (non-blocking), shared by every shard.
    pub listener: TcpListener,
}

/// One shard's client service.
pub struct ClientService {
    shard: u32,
    shards: Arc<[Arc<ShardShared>]>,
    config: Arc<ServiceConfig>,
    epoll: OwnedFd,
    /// This shard's handle on the shared listener (keeps it registered).
    listener: TcpListener,
    notifier: Arc<Notifier>,
    /// Connection slots (≤ connections_max), reused.
    conns: Vec<Connection>,
    free: Vec<u32>,
    /// Slots in use (connected or draining).
    active: Vec<u32>,
    /// Slots to serve at the next poll.
    touched: Vec<u32>,
    /// Slots with output to write at the end of the turn.
    dirty: Vec<u32>,
    /// Scratch for `dispatch`'s payload (one command at a time).
    payload: Box<[u8]>,
    routing: RoutingTable,
    statuses: Vec<ReplicationStatus>,
    events: Box<[libc::epoll_event]>,
    /// Connections whose next write waits for admission, oldest first,
    /// with the write's deadline (≤ connections_max).
    admission: VecDeque<(u32, Instant)>,
    /// The connection at the front of `admission`, while it is served.
    admission_turn: Option<u32>,
}

impl std::fmt::Debug for ClientService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientService")
            .field("shard", &self.shard)
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn epoll_ctl(epoll: RawFd, op: i32, fd: RawFd, events: u32, key: u64) -> std::io::Result<()> {
    let mut event = libc::epoll_event { events, u64: key };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A shard's status as INFO and CLUSTER want it.
pub fn to_replication(s: &ShardStatus) -> ReplicationStatus {
    ReplicationStatus {
        role: s.role,
        term: s.term,
        leader: s.leader,
        commit: s.commit,
        applied: s.applied,
        snapshot_index: s.snapshot_index,
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

fn refresh_routing(shards: &[Arc<ShardShared>], routing: &mut RoutingTable) {
    for (group, shard) in shards.iter().enumerate() {
        let leader = shard.leader.load(Ordering::Acquire);
        // A leader id outside the table cannot come from a validated config.
        let _ = routing.set_leader(group as u16, (leader != 0).then_some(leader));
    }
}

/// Writes the reply of a command that went to a shard (`write`: a
/// proposal, else a read).
fn write_answer(
    out: &mut impl RespSink,
    outcome: Outcome,
    reply: &[u8],
    slot: u16,
    write: bool,
    routing: &RoutingTable,
) {
    let written = match outcome {
        Outcome::Replied => out.put(reply),
        Outcome::NotLeader { .. } => match routing.route(slot) {
            // Our view still says local: leadership is moving right now.
            Route::Local { .. } => out.error(b"TRYAGAIN leadership is changing"),
            route => write_route_error(route, out),
        },
        // A write not admitted within admission_timeout.
        Outcome::Busy if write => out
            .error(b"BUSY the group cannot take more writes now (admission timeout), retry later"),
        Outcome::Busy => out.error(b"TRYAGAIN the group is busy, retry"),
        Outcome::Dropped => out.error(b"TRYAGAIN the write was dropped by a leader change, retry"),
        Outcome::Stopped => out.error(b"ERR shard stopped"),
        // Never admitted, however long it waits: an error, not a retry.
        Outcome::TooLarge {
            bytes,
            request_bytes_max,
        } => {
            let error = CallError::TooLarge {
                bytes,
                request_bytes_max,
            };
            out.error(format!("ERR {error}").as_bytes())
        }
    };
    if written.is_err() {
        let _ = out.error(b"ERR reply too large");
    }
}

impl ClientService {
    /// The service of the shard in `context`.
    pub fn new(context: FrontendContext, config: Arc<ServiceConfig>) -> std::io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh epoll fd owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = config.listener.try_clone()?;
        // EPOLLEXCLUSIVE: a new connection wakes one shard, not all.
        epoll_ctl(
            fd,
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            LISTENER_KEY,
        )?;
        let notifier = Arc::new(Notifier::new()?);
        epoll_ctl(
            fd,
            libc::EPOLL_CTL_ADD,
            notifier.fd(),
            libc::EPOLLIN as u32,
            NOTIFIER_KEY,
        )?;
        let slots_max = config.connections_max;
        let routing = config.routing.clone();
        Ok(ClientService {
            shard: context.shard,
            shards: context.shards,
            epoll,
            listener,
            notifier,
            conns: Vec::with_capacity(slots_max),
            free: Vec::with_capacity(slots_max),
            active: Vec::with_capacity(slots_max),
            touched: Vec::with_capacity(slots_max),
            dirty: Vec::with_capacity(slots_max),
            // Sized as `budget_items` counts it.
            payload: vec![0; config.limits.command_bytes_max + 4096].into_boxed_slice(),
            routing,
            statuses: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX].into_boxed_slice(),
            admission: VecDeque::with_capacity(slots_max),
            admission_turn: None,
            config,
        })
    }

    fn touch(&mut self, i: u32) {
        let c = &mut self.conns[i as usize];
        if !c.touched {
            c.touched = true;
            self.touched.push(i);
        }
    }

    fn mark_dirty(&mut self, i: u32) {
        let c = &mut self.conns[i as usize];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("accept: {error}");
                    return;
                }
            };
            let max = self.config.connections_max;
            if self.config.open.fetch_add(1, Ordering::AcqRel) >= max {
                self.config.open.fetch_sub(1, Ordering::AcqRel);
                log::warn!("refusing a client: {max} connections are open");
                continue;
            }
            if let Err(error) = self.open_connection(stream) {
                self.config.open.fetch_sub(1, Ordering::AcqRel);
                log::warn!("cannot serve a client: {error}");
            }
        }
    }

    fn open_connection(&mut self, stream: std::net::TcpStream) -> std::io::Result<()> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let fd = stream.as_raw_fd();
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                // `open` ≤ connections_max node-wide, so this shard's slots are too.
                assert!(self.conns.len() < self.config.connections_max);
                let limits = self.config.limits;
                self.conns.push(Connection::new(
                    Parser::new(limits),
                    limits.command_bytes_max,
                    self.config.out_bytes,
                    self.config.pipeline_max,
                ));
                (self.conns.len() - 1) as u32
            }
        };
        let registered = epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
            u64::from(i),
        );
        if let Err(error) = registered {
            self.free.push(i);
            return Err(error);
        }
        let c = &mut self.conns[i as usize];
        c.reset(stream);
        c.interest = libc::EPOLLIN as u32;
        self.active.push(i);
        Ok(())
    }

    /// The client is gone (or must go): stop reading; the slot drains.
    fn close(&mut self, i: u32) {
        let c = &mut self.conns[i as usize];
        if c.admission_queued {
            c.admission_queued = false;
            self.admission.retain(|&(waiting, _)| waiting != i);
        }
        let c = &mut self.conns[i as usize];
        // Closing the fd removes it from the epoll set.
        c.stream = None;
        c.interest = 0;
        c.block = Block::None;
        self.maybe_free(i);
    }

    fn maybe_free(&mut self, i: u32) {
        let c = &mut self.conns[i as usize];
        if !c.in_use || c.stream.is_some() || c.pending_len() > 0 {
            return;
        }
        c.in_use = false;
        if let Some(at) = self.active.iter().position(|&a| a == i) {
            self.active.swap_remove(at);
        }
        self.free.push(i);
        self.config.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Writes the replies of the done commands at the head of the ring.
    fn pump(&mut self, i: u32) {
        refresh_routing(&self.shards, &mut self.routing);
        let c = &mut self.conns[i as usize];
        let mut emitted = false;
        while c.pending_len() > 0 {
            if c.stream.is_none() {
                // Nobody will read the replies: only the ring must drain.
                c.out.truncate_to(0);
            }
            let head = c.head;
            match *c.entry_mut(head) {
                Pending::Local { outcome: None, .. } => break,
                Pending::Local {
                    slot,
                    outcome: Some(outcome),
                    reply_len,
                    reply,
                } => {
                    let len = usize::from(reply_len);
                    if !c.out.make_room(len + ERROR_ROOM_BYTES) {
                        c.wants_out_room = true;
                        break;
                    }
                    write_answer(
                        &mut c.out,
                        outcome,
                        &reply[..len],
                        slot,
                        true,
                        &self.routing,
                    );
                }
                Pending::Mailbox {
                    shard,
                    slot,
                    ticket,
                    write,
                } => {
                    let out = &mut c.out;
                    let routing = &self.routing;
                    let mut no_room = false;
                    let taken =
                        self.shards[shard as usize]
                            .mailbox
                            .try_take(ticket, |outcome, reply| {
                                if !out.make_room(reply.len() + ERROR_ROOM_BYTES) {
                                    no_room = true;
                                    return false;
                                }
                                write_answer(out, outcome, reply, slot, write, routing);
                                true
                            });
                    if !taken {
                        c.wants_out_room |= no_room;
                        break;
                    }
                }
                Pending::Refused(error) => {
                    if !c.out.make_room(ERROR_ROOM_BYTES) {
                        c.wants_out_room = true;
                        break;
                    }
                    // Too large never succeeds: an error, not a retry.
                    let text = match error {
                        CallError::TooLarge { .. } => format!("ERR {error}"),
                        _ => format!("TRYAGAIN {error}"),
                    };
                    let _ = c.out.error(text.as_bytes());
                }
            }
            c.pop();
            emitted = true;
        }
        if c.stream.is_none() {
            c.out.truncate_to(0);
        }
        if c.pending_len() == 0 && c.block == Block::Barrier {
            c.block = Block::None;
        }
        if emitted {
            self.mark_dirty(i);
            self.maybe_free(i);
        }
    }

    /// Serves one connection: replies that are ready, commands that are
    /// buffered, then the socket while commands may be taken.
    fn service(&mut self, i: u32, requests: &mut ShardRequests<'_, Kv>) {
        self.pump(i);
        let mut drained = false;
        loop {
            self.parse(i, requests);
            let pause = self.config.out_pause_bytes;
            let c = &mut self.conns[i as usize];
            if !c.may_parse(pause) || drained {
                break;
            }
            match c.read() {
                Io::Progress => {}
                Io::Drained => drained = true,
                Io::WouldBlock => break,
                Io::Closed => {
                    self.close(i);
                    break;
                }
            }
        }
        if self.conns[i as usize].out.unsent_bytes() > 0 {
            self.mark_dirty(i);
        }
        self.update_interest(i);
    }

    /// Takes the buffered commands while the connection may.
    fn parse(&mut self, i: u32, requests: &mut ShardRequests<'_, Kv>) {
        let pause = self.config.out_pause_bytes;
        loop {
            let c = &mut self.conns[i as usize];
            if !c.may_parse(pause) {
                if c.out.unsent_bytes() >= pause {
                    c.wants_out_room = true;
                }
                return;
            }
            if c.at == c.filled {
                return;
            }
            let busy = c.pending_len() > 0;
            let (command, used) = match c.parser.parse(&c.input[c.at..c.filled]) {
                Ok(Parsed::Command(command, used)) => (command, used),
                Ok(Parsed::Incomplete { skipped }) => {
                    c.at += skipped;
                    return;
                }
                Err(error) => {
                    if busy {
                        // The error reply goes after the replies owed.
                        c.block = Block::Barrier;
                    } else {
                        let _ = error.write_reply(&mut c.out);
                        c.close_after_flush = true;
                    }
                    return;
                }
            };
            refresh_routing(&self.shards, &mut self.routing);
            let name = command.name();
            if name.eq_ignore_ascii_case(b"INFO") || name.eq_ignore_ascii_case(b"CLUSTER") {
                self.statuses.clear();
                self.statuses.extend(
                    self.shards.iter().map(|s| {
                        to_replication(&s.status.lock().unwrap_or_else(|e| e.into_inner()))
                    }),
                );
            }
            let view = ServerView {
                cluster_id: self.config.cluster_id,
                routing: &self.routing,
                shards: &self.statuses,
                fsync: self.config.fsync,
            };
            let mark = c.out.written_len();
            let action = dispatch(&command, &view, now_ms(), &mut self.payload, &mut c.out);
            // The write that waited past its deadline is this command only
            // if it is still a local write (leadership may have moved).
            let admission_expired = std::mem::take(&mut c.admission_expired);
            let (kind, group, slot, bytes) = match action {
                Err(_) if busy => {
                    c.block = Block::Barrier;
                    return;
                }
                Err(_) if c.out.unsent_bytes() > 0 => {
                    // Retried once the output is written.
                    c.wants_out_room = true;
                    return;
                }
                Err(_) => {
                    let _ = c.out.error(b"ERR reply too large");
                    c.at += used;
                    continue;
                }
                Ok(Action::Replied | Action::Close) if busy => {
                    // Answered at once, but replies are owed before it.
                    c.out.truncate_to(mark);
                    c.block = Block::Barrier;
                    return;
                }
                Ok(Action::Replied) => {
                    c.at += used;
                    continue;
                }
                Ok(Action::Close) => {
                    c.at += used;
                    c.close_after_flush = true;
                    return;
                }
                Ok(Action::Propose {
                    group,
                    slot,
                    payload_bytes,
                }) => (RequestKind::Propose, group, slot, payload_bytes),
                Ok(Action::Read {
                    group,
                    slot,
                    request_bytes,
                }) => (RequestKind::Read, group, slot, request_bytes),
            };
            if kind == RequestKind::Read && c.writes_pending > 0 {
                // A ReadIndex taken now could be older than this client's
                // writes still in flight: it waits for them (per-connection
                // order, as Redis gives a pipelining client).
                c.block = Block::Barrier;
                return;
            }
            if kind == RequestKind::Propose && c.reads_pending > 0 {
                // The other direction: a read is served at some applied
                // index at or past its read index, not at exactly that
                // index, so a write proposed before the read's query ran
                // (same loop turn, or same apply batch) would already show
                // in it (SET, GET, DEL answered with the key gone). The
                // write waits until this client's reads are answered.
                c.admission_expired = admission_expired;
                c.block = Block::Barrier;
                return;
            }
            let payload = &self.payload[..bytes];
            if kind == RequestKind::Propose && u32::from(group) == self.shard {
                let tag = (u64::from(i) << 32) | u64::from(c.tail);
                let my_turn = self.admission_turn == Some(i);
                let entry = if admission_expired {
                    Pending::Local {
                        slot,
                        outcome: Some(Outcome::Busy),
                        reply_len: 0,
                        reply: [0; RESPONSE_BYTES_MAX],
                    }
                } else if !my_turn && (c.admission_queued || !self.admission.is_empty()) {
                    // Others wait for admission already: behind them (FIFO).
                    wait_for_admission(&mut self.admission, c, i, requests.admission_timeout());
                    return;
                } else {
                    let proposed = requests.propose(tag, bytes, |dst| dst.copy_from_slice(payload));
                    if proposed == Err(Outcome::Busy) {
                        // Not admitted now: wait (the command stays unread).
                        wait_for_admission(&mut self.admission, c, i, requests.admission_timeout());
                        return;
                    }
                    Pending::Local {
                        slot,
                        outcome: proposed.err(),
                        reply_len: 0,
                        reply: [0; RESPONSE_BYTES_MAX],
                    }
                };
                c.push(entry);
            } else {
                let mailbox = &self.shards[usize::from(group)].mailbox;
                match mailbox.try_submit(kind, payload, &self.notifier) {
                    Ok(ticket) => {
                        c.push(Pending::Mailbox {
                            shard: u32::from(group),
                            slot,
                            ticket,
                            write: kind == RequestKind::Propose,
                        });
                    }
                    Err(CallError::Full) => {
                        // Not taken: parsed again on a later turn.
                        c.block = Block::MailboxFull;
                        return;
                    }
                    Err(error) => {
                        c.push(Pending::Refused(error));
                    }
                }
            }
            c.at += used;
            // A refused local proposal is answered now if it is the head.
            if c.pending_len() == 1 && !matches!(c.entry_mut(c.head), Pending::Mailbox { .. }) {
                self.pump(i);
            }
        }
    }

    /// Answers -BUSY to writes waiting past their deadline, then lets the
    /// waiting connections propose in FIFO order while they are admitted.
    fn run_admission(&mut self, requests: &mut ShardRequests<'_, Kv>) {
        if self.admission.is_empty() {
            return;
        }
        let now = Instant::now();
        let conns = &mut self.conns;
        let touched = &mut self.touched;
        self.admission.retain(|&(i, deadline)| {
            if now < deadline {
                return true;
            }
            let c = &mut conns[i as usize];
            c.admission_queued = false;
            c.admission_expired = true;
            c.block = Block::None;
            if !c.touched {
                c.touched = true;
                touched.push(i);
            }
            false
        });
        for _ in 0..self.admission.len() {
            let Some(&(i, _)) = self.admission.front() else {
                break;
            };
            let tail_before = self.conns[i as usize].tail;
            self.conns[i as usize].block = Block::None;
            self.admission_turn = Some(i);
            self.service(i, requests);
            self.admission_turn = None;
            let c = &mut self.conns[i as usize];
            if c.block != Block::Admission {
                c.admission_queued = false;
                self.admission.pop_front();
            } else if c.tail != tail_before {
                // Admitted some, waits again: to the back, so others get a turn.
                self.admission.pop_front();
                let deadline = now + requests.admission_timeout();
                self.admission.push_back((i, deadline));
            } else {
                // Not admitted: nobody behind it goes first.
                break;
            }
        }
    }

    fn update_interest(&mut self, i: u32) {
        let pause = self.config.out_pause_bytes;
        let epoll = self.epoll.as_raw_fd();
        let c = &mut self.conns[i as usize];
        let Some(stream) = c.stream.as_ref() else {
            return;
        };
        let mut want = 0;
        if c.may_parse(pause) && c.filled - c.at < c.input.len() {
            want |= libc::EPOLLIN as u32;
        }
        if c.write_blocked && c.out.unsent_bytes() > 0 {
            want |= libc::EPOLLOUT as u32;
        }
        if want != c.interest {
            match epoll_ctl(
                epoll,
                libc::EPOLL_CTL_MOD,
                stream.as_raw_fd(),
                want,
                u64::from(i),
            ) {
                Ok(()) => c.interest = want,
                Err(error) => {
                    log::warn!("client socket epoll: {error}");
                    self.close(i);
                }
            }
        }
    }
}

impl Frontend<Kv> for ClientService {
    fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn poll(&mut self, requests: &mut ShardRequests<'_, Kv>) {
        // A system call saved on most loop turns: the shard's own wait says
        // whether our epoll fd has anything.
        let n = if requests.input_ready() {
            // SAFETY: `events` is a valid array of EVENTS_MAX epoll_event.
            unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    EVENTS_MAX as i32,
                    0,
                )
            }
        } else {
            0
        };
        for k in 0..n.max(0) as usize {
            match self.events[k].u64 {
                LISTENER_KEY => self.accept(),
                NOTIFIER_KEY => {
                    self.notifier.clear();
                    for a in 0..self.active.len() {
                        let i = self.active[a];
                        if self.conns[i as usize].mailbox_pending > 0 {
                            self.touch(i);
                        }
                    }
                }
                key => self.touch(key as u32),
            }
        }
        self.run_admission(requests);
        // A connection paused on a full mailbox tries again every turn.
        for a in 0..self.active.len() {
            let i = self.active[a];
            let c = &mut self.conns[i as usize];
            if c.block == Block::MailboxFull {
                c.block = Block::None;
                self.touch(i);
            }
        }
        let mut k = 0;
        while k < self.touched.len() {
            let i = self.touched[k];
            self.conns[i as usize].touched = false;
            if self.conns[i as usize].in_use {
                self.service(i, requests);
            }
            k += 1;
        }
        self.touched.clear();
    }

    fn proposal_done(&mut self, tag: u64, outcome: Outcome, reply: &[u8]) {
        let i = (tag >> 32) as u32;
        let seq = tag as u32;
        let c = &mut self.conns[i as usize];
        // A slot is freed only once its ring is empty, so a tag stays valid.
        assert!(
            c.in_use && c.holds(seq),
            "a frontend tag names a waiting entry"
        );
        let Pending::Local {
            outcome: waiting,
            reply_len,
            reply: stored,
            ..
        } = c.entry_mut(seq)
        else {
            panic!("a frontend tag names a local proposal");
        };
        assert!(waiting.is_none(), "a proposal completes once");
        assert!(
            reply.len() <= RESPONSE_BYTES_MAX,
            "the Kv's replies fit its response slots"
        );
        stored[..reply.len()].copy_from_slice(reply);
        *reply_len = reply.len() as u8;
        *waiting = Some(outcome);
        if seq == c.head {
            self.pump(i);
            let c = &self.conns[i as usize];
            if c.in_use && (c.at < c.filled || c.block != Block::None) {
                self.touch(i);
            }
        }
    }

    fn flush(&mut self) -> bool {
        let mut k = 0;
        while k < self.dirty.len() {
            let i = self.dirty[k];
            k += 1;
            let c = &mut self.conns[i as usize];
            c.dirty = false;
            if !c.in_use {
                continue;
            }
            if c.out.unsent_bytes() > 0 {
                match c.write() {
                    Io::Closed => {
                        self.close(i);
                        continue;
                    }
                    Io::Progress if c.wants_out_room => {
                        c.wants_out_room = false;
                        self.touch(i);
                    }
                    Io::Progress | Io::Drained | Io::WouldBlock => {}
                }
            }
            let c = &self.conns[i as usize];
            if c.close_after_flush && c.out.unsent_bytes() == 0 {
                self.close(i);
                continue;
            }
            self.update_interest(i);
        }
        self.dirty.clear();
        !self.touched.is_empty()
    }
}

/// Blocks connection `i` (`c`) until its write is admitted, queued once
/// in the shard's admission FIFO with its deadline.
fn wait_for_admission(
    admission: &mut VecDeque<(u32, Instant)>,
    c: &mut Connection,
    i: u32,
    timeout: Duration,
) {
    if !c.admission_queued {
        c.admission_queued = true;
        admission.push_back((i, Instant::now() + timeout));
    }
    c.block = Block::Admission;
}

/// A connection's reply buffer: the largest read reply (it comes whole out
/// of a mailbox slot) and room for the small replies pipelined around it.
pub fn out_bytes(node: &ringraft_engine::shard::NodeConfig) -> usize {
    node.read_reply_bytes_max + (64 << 10)
}

/// The client side of the memory budget: every connection slot with its
/// buffers (at most `connections_max` open on the node, wherever accepted),
/// and each shard's service tables.
pub fn budget_items(
    connections_max: usize,
    shards: u32,
    pipeline_max: usize,
    out_bytes: usize,
    limits: Limits,
) -> Vec<BudgetItem> {
    let n = connections_max as u64;
    let slot_bytes = std::mem::size_of::<Connection>() + 4 * std::mem::size_of::<u32>();
    vec![
        BudgetItem {
            name: "client input buffers (command_bytes_max)",
            count: n,
            unit_bytes: limits.command_bytes_max as u64,
        },
        BudgetItem {
            name: "client reply buffers (read_reply_bytes_max + 64 KiB)",
            count: n,
            unit_bytes: out_bytes as u64,
        },
        BudgetItem {
            name: "client pipelines (pipeline_max pending replies)",
            count: n,
            unit_bytes: (pipeline_max * std::mem::size_of::<Pending>()) as u64,
        },
        BudgetItem {
            name: "client slot tables (connections_max slots per shard)",
            count: u64::from(shards) * n,
            unit_bytes: slot_bytes as u64,
        },
        BudgetItem {
            name: "client service buffers per shard (payload, epoll events)",
            count: u64::from(shards),
            unit_bytes: (limits.command_bytes_max
                + 4096
                + EVENTS_MAX * std::mem::size_of::<libc::epoll_event>())
                as u64,
        },
    ]
}
