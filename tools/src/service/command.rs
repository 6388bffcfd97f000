//! Commands: the table (name, arity, key positions), dispatch, and the
//! replies a node answers by itself (PING, INFO, CLUSTER, COMMAND, CONFIG).
//!
//! [`dispatch`] turns one parsed [`Command`] into an [`Action`]:
//!
//! | command | action |
//! |---|---|
//! | SET, DEL, XADD | [`Action::Propose`]: a payload (see `payload.rs`) written into the caller's buffer, for the group that owns the key's slot; the reply comes from `Kv::apply` once committed |
//! | GET, XLEN, XRANGE | [`Action::Read`]: a request for `StateMachine::query`, after a ReadIndex on the group |
//! | a key whose group this node does not lead | `-MOVED <slot> <ip>:<port>` (or `-CLUSTERDOWN` while no leader is known) |
//! | PING, ECHO, INFO, CLUSTER ..., COMMAND ..., CONFIG GET, SELECT 0, READONLY, READWRITE | answered here: [`Action::Replied`] |
//! | QUIT | `+OK`, then [`Action::Close`] |
//! | anything else | `-ERR unknown command '<name>', with args beginning with: '<arg>' ...` |
//!
//! Refused on purpose (clear errors, connection stays usable): SET options
//! (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL), XADD options (NOMKSTREAM,
//! MAXLEN, MINID, LIMIT), multi-key DEL across slots (`-CROSSSLOT`),
//! SELECT of a database other than 0, CONFIG subcommands other than GET.
//!
//! What cluster-aware clients send, and why it is answered:
//! - `redis-benchmark --cluster`: `CLUSTER NODES` on start (keeps nodes whose
//!   flags say `master` with at least one slot, needs at least two of
//!   them), then `CONFIG GET save` and `CONFIG GET appendonly` to every
//!   master (only a warning if refused), and `CLUSTER SLOTS` after a
//!   `-MOVED` (every master named there must have been in CLUSTER NODES,
//!   and a master that no longer appears keeps its old slots in the
//!   benchmark's view: it then loops on MOVED, so every node that led a
//!   group at the start must keep leading one).
//!   Keys carry a `{tag}` chosen to land in each master's slots.
//! - `redis-cli -c`: follows `-MOVED` by connecting to the named address;
//!   interactive mode sends `COMMAND DOCS` once for its hints and falls
//!   back to its built-in help when that is an error.

use super::payload::{self, PayloadTooLarge};
use super::resp::{Command, RespSink, format_u64};
use super::slots::{Route, RoutingTable, SLOTS, key_slot};
use super::stream::{RangeEnd, parse_range_bound, parse_xadd_id};
use ringraft_engine::raft::{ProgressState, Role};
use ringraft_engine::shard::ResponseTooLarge;
use std::fmt::Write as _;

/// One peer as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's node id.
    pub node: u64,
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Its replication state.
    pub state: ProgressState,
}

/// One local shard's replication state, filled by the runtime (for INFO
/// replication and CLUSTER INFO). `peers` is sized once (one per other
/// voter) and only meaningful on the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// This node's role in the group.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader's node id, if known.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Each peer's match and state (leader only).
    pub peers: Vec<PeerStatus>,
}

/// What a node knows about itself and the cluster, lent to [`dispatch`].
#[derive(Debug, Clone, Copy)]
pub struct ServerView<'a> {
    /// The cluster id (`--cluster-id`), part of every node's 40-hex name.
    pub cluster_id: u64,
    /// Who leads each group; where every node is.
    pub routing: &'a RoutingTable,
    /// Local shard i's status is `shards[i]`; shard i is in group i.
    pub shards: &'a [ReplicationStatus],
    /// Acknowledged writes are flushed to disk (shown as `appendonly`).
    pub fsync: bool,
}

/// What the caller does after [`dispatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The reply is complete in the output.
    Replied,
    /// The reply (`+OK`) is in the output; close after sending it.
    Close,
    /// Propose `payload[..payload_bytes]` on local shard `group`; the reply
    /// is what `apply` leaves in the entry's response slot. If the shard is
    /// no longer leader when proposing, answer with [`write_route_error`].
    Propose {
        /// The group (local shard index).
        group: u16,
        /// The key's slot (for `write_route_error` if leadership moved).
        slot: u16,
        /// Length of the payload written at the front of the buffer.
        payload_bytes: usize,
    },
    /// After a ReadIndex on local shard `group` and `applied` reaching it,
    /// answer with `StateMachine::query(&payload[..request_bytes])`.
    Read {
        /// The group (local shard index).
        group: u16,
        /// The key's slot (for `write_route_error` if leadership moved).
        slot: u16,
        /// Length of the request written at the front of the buffer.
        request_bytes: usize,
    },
}

/// How a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ping,
    Echo,
    Set,
    Get,
    Del,
    Xadd,
    Xrange,
    Xlen,
    Info,
    Cluster,
    Command,
    Config,
    Select,
    ReadMode,
    Quit,
}

/// A command table row, also what `COMMAND` reports (Redis 6 shape).
#[derive(Debug)]
struct Spec {
    name: &'static str,
    /// Exact argument count if positive, minimum if negative (name included).
    arity: i64,
    flags: &'static [&'static str],
    first_key: i64,
    last_key: i64,
    step: i64,
    kind: Kind,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    kind: Kind,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        kind,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);

const COMMANDS: &[Spec] = &[
    spec("ping", -1, &["fast", "stale"], NO_KEYS, Kind::Ping),
    spec("echo", 2, &["fast"], NO_KEYS, Kind::Echo),
    spec("set", -3, &["write", "denyoom"], ONE_KEY, Kind::Set),
    spec("get", 2, &["readonly", "fast"], ONE_KEY, Kind::Get),
    spec("del", -2, &["write"], (1, -1, 1), Kind::Del),
    spec(
        "xadd",
        -5,
        &["write", "denyoom", "fast"],
        ONE_KEY,
        Kind::Xadd,
    ),
    spec("xrange", -4, &["readonly"], ONE_KEY, Kind::Xrange),
    spec("xlen", 2, &["readonly", "fast"], ONE_KEY, Kind::Xlen),
    spec("info", -1, &["loading", "stale"], NO_KEYS, Kind::Info),
    spec("cluster", -2, &[], NO_KEYS, Kind::Cluster),
    spec("command", -1, &["loading", "stale"], NO_KEYS, Kind::Command),
    spec(
        "config",
        -2,
        &["admin", "loading", "stale"],
        NO_KEYS,
        Kind::Config,
    ),
    spec(
        "select",
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
        Kind::Select,
    ),
    spec("readonly", 1, &["fast"], NO_KEYS, Kind::ReadMode),
    spec("readwrite", 1, &["fast"], NO_KEYS, Kind::ReadMode),
    spec("quit", -1, &["fast"], NO_KEYS, Kind::Quit),
];

const INVALID_ID: &[u8] = b"ERR Invalid stream ID specified as stream command argument";

/// Runs or routes one command. On `Err` (the output buffer is full) the
/// output is as it was before the call: send what is buffered and call
/// again with the same command (dispatch changes no state).
pub fn dispatch<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    now_ms: u64,
    payload: &mut [u8],
    out: &mut S,
) -> Result<Action, ResponseTooLarge> {
    let mark = out.written_len();
    let result = dispatch_unchecked(command, view, now_ms, payload, out);
    if result.is_err() {
        out.truncate_to(mark);
    }
    result
}

/// The hash slot a command's keys live in (its first key's), or None for a
/// command without keys or with too few arguments. Lets a runtime whose
/// connections and groups live on different cores pick the owning shard
/// before calling [`dispatch`] there.
pub fn command_slot(command: &Command<'_>) -> Option<u16> {
    let spec = COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(command.name()))?;
    let first = usize::try_from(spec.first_key).ok().filter(|&i| i > 0)?;
    (first < command.len()).then(|| key_slot(command.arg(first)))
}

fn dispatch_unchecked<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    now_ms: u64,
    payload: &mut [u8],
    out: &mut S,
) -> Result<Action, ResponseTooLarge> {
    let name = command.name();
    let Some(spec) = COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
    else {
        unknown_command(command, out)?;
        return Ok(Action::Replied);
    };
    let argc = command.len() as i64;
    if (spec.arity > 0 && argc != spec.arity) || argc < spec.arity.abs() {
        wrong_arity(spec.name, out)?;
        return Ok(Action::Replied);
    }
    let routed = |slot: u16, out: &mut S| -> Result<Option<Target>, ResponseTooLarge> {
        match view.routing.route(slot) {
            Route::Local { group } => Ok(Some(Target { group, slot })),
            route => write_route_error(route, out).map(|()| None),
        }
    };
    match spec.kind {
        Kind::Ping => match command.len() {
            1 => out.simple(b"PONG")?,
            2 => out.bulk(command.arg(1))?,
            _ => wrong_arity("ping", out)?,
        },
        Kind::Echo => out.bulk(command.arg(1))?,
        Kind::Set => {
            if command.len() > 3 {
                out.error(
                    b"ERR SET options (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL) are not supported",
                )?;
                return Ok(Action::Replied);
            }
            let key = command.arg(1);
            let Some(target) = routed(key_slot(key), out)? else {
                return Ok(Action::Replied);
            };
            let encoded = payload::encode_set(payload, key, command.arg(2));
            return propose(target, encoded, out);
        }
        Kind::Del => {
            let slot = key_slot(command.arg(1));
            if (2..command.len()).any(|i| key_slot(command.arg(i)) != slot) {
                out.error(b"CROSSSLOT Keys in request don't hash to the same slot")?;
                return Ok(Action::Replied);
            }
            let Some(target) = routed(slot, out)? else {
                return Ok(Action::Replied);
            };
            let encoded = payload::encode_del(payload, command.args().skip(1));
            return propose(target, encoded, out);
        }
        Kind::Xadd => return xadd(command, now_ms, payload, out, routed),
        Kind::Get | Kind::Xlen => {
            let key = command.arg(1);
            let Some(target) = routed(key_slot(key), out)? else {
                return Ok(Action::Replied);
            };
            let encoded = if spec.kind == Kind::Get {
                payload::encode_get(payload, key)
            } else {
                payload::encode_xlen(payload, key)
            };
            return read(target, encoded, out);
        }
        Kind::Xrange => return xrange(command, payload, out, routed),
        Kind::Info => info(command, view, out)?,
        Kind::Cluster => cluster(command, view, out)?,
        Kind::Command => command_command(command, out)?,
        Kind::Config => config(command, view, out)?,
        Kind::Select => {
            if command.arg(1) == b"0" {
                out.simple(b"OK")?;
            } else {
                out.error(b"ERR SELECT is not allowed in cluster mode")?;
            }
        }
        Kind::ReadMode => out.simple(b"OK")?,
        Kind::Quit => {
            out.simple(b"OK")?;
            return Ok(Action::Close);
        }
    }
    Ok(Action::Replied)
}

/// A local group and the slot that led there.
#[derive(Debug, Clone, Copy)]
struct Target {
    group: u16,
    slot: u16,
}

fn propose<S: RespSink>(
    target: Target,
    encoded: Result<usize, PayloadTooLarge>,
    out: &mut S,
) -> Result<Action, ResponseTooLarge> {
    match encoded {
        Ok(payload_bytes) => Ok(Action::Propose {
            group: target.group,
            slot: target.slot,
            payload_bytes,
        }),
        Err(_) => {
            out.error(b"ERR command too large for one log entry")?;
            Ok(Action::Replied)
        }
    }
}

fn read<S: RespSink>(
    target: Target,
    encoded: Result<usize, PayloadTooLarge>,
    out: &mut S,
) -> Result<Action, ResponseTooLarge> {
    match encoded {
        Ok(request_bytes) => Ok(Action::Read {
            group: target.group,
            slot: target.slot,
            request_bytes,
        }),
        Err(_) => {
            out.error(b"ERR request too large")?;
            Ok(Action::Replied)
        }
    }
}

fn xadd<S: RespSink>(
    command: &Command<'_>,
    now_ms: u64,
    payload: &mut [u8],
    out: &mut S,
    routed: impl Fn(u16, &mut S) -> Result<Option<Target>, ResponseTooLarge>,
) -> Result<Action, ResponseTooLarge> {
    let key = command.arg(1);
    let id_arg = command.arg(2);
    const OPTIONS: [&[u8]; 4] = [b"NOMKSTREAM", b"MAXLEN", b"MINID", b"LIMIT"];
    if OPTIONS
        .iter()
        .any(|option| option.eq_ignore_ascii_case(id_arg))
    {
        out.error(b"ERR XADD options (NOMKSTREAM, MAXLEN, MINID, LIMIT) are not supported")?;
        return Ok(Action::Replied);
    }
    if !(command.len() - 3).is_multiple_of(2) {
        wrong_arity("xadd", out)?;
        return Ok(Action::Replied);
    }
    let Some(id) = parse_xadd_id(id_arg, now_ms) else {
        out.error(INVALID_ID)?;
        return Ok(Action::Replied);
    };
    let Some(target) = routed(key_slot(key), out)? else {
        return Ok(Action::Replied);
    };
    let encoded = payload::encode_xadd(payload, key, id, command.args().skip(3));
    propose(target, encoded, out)
}

fn xrange<S: RespSink>(
    command: &Command<'_>,
    payload: &mut [u8],
    out: &mut S,
    routed: impl Fn(u16, &mut S) -> Result<Option<Target>, ResponseTooLarge>,
) -> Result<Action, ResponseTooLarge> {
    let count = match command.len() {
        4 => None,
        6 if command.arg(4).eq_ignore_ascii_case(b"COUNT") => {
            match parse_i64(command.arg(5)) {
                // A negative COUNT returns nothing, as in Redis.
                Some(n) => Some(n.max(0) as u64),
                None => {
                    out.error(b"ERR value is not an integer or out of range")?;
                    return Ok(Action::Replied);
                }
            }
        }
        _ => {
            out.error(b"ERR syntax error")?;
            return Ok(Action::Replied);
        }
    };
    let start = parse_range_bound(command.arg(2), RangeEnd::Start);
    let end = parse_range_bound(command.arg(3), RangeEnd::End);
    let (start, end) = match (start, end) {
        (Some(Some(start)), Some(Some(end))) => (start, end),
        (Some(None), _) => {
            out.error(b"ERR invalid start ID for the interval")?;
            return Ok(Action::Replied);
        }
        (_, Some(None)) => {
            out.error(b"ERR invalid end ID for the interval")?;
            return Ok(Action::Replied);
        }
        _ => {
            out.error(INVALID_ID)?;
            return Ok(Action::Replied);
        }
    };
    let key = command.arg(1);
    let Some(group) = routed(key_slot(key), out)? else {
        return Ok(Action::Replied);
    };
    read(
        group,
        payload::encode_xrange(payload, key, start, end, count),
        out,
    )
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Writes the error for a route that is not local: `-MOVED <slot>
/// <ip>:<port>` or `-CLUSTERDOWN ...`. Also what the runtime answers when a
/// proposal finds the shard no longer leader (with the refreshed route).
pub fn write_route_error<S: RespSink + ?Sized>(
    route: Route,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let mut digits = [0u8; 20];
    match route {
        Route::Local { .. } => panic!("a local route is not an error"),
        Route::Moved { slot, addr } => {
            out.put(b"-MOVED ")?;
            out.put(format_u64(u64::from(slot), &mut digits))?;
            out.put(b" ")?;
            write_addr(addr, out)?;
            out.put(b"\r\n")
        }
        Route::NoLeader { slot, .. } => {
            out.put(b"-CLUSTERDOWN No leader elected yet for hash slot ")?;
            out.put(format_u64(u64::from(slot), &mut digits))?;
            out.put(b"\r\n")
        }
    }
}

/// `ip:port` (IPv6 addresses without brackets, as Redis prints them).
fn write_addr<S: RespSink + ?Sized>(
    addr: std::net::SocketAddr,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let mut text = Text::new(out);
    let _ = write!(text, "{}:{}", addr.ip(), addr.port());
    text.finish()
}

fn wrong_arity<S: RespSink>(name: &str, out: &mut S) -> Result<(), ResponseTooLarge> {
    out.put(b"-ERR wrong number of arguments for '")?;
    out.put(name.as_bytes())?;
    out.put(b"' command\r\n")
}

/// Bytes of user input quoted in an error reply, at most (as Redis).
const ERROR_QUOTE_BYTES_MAX: usize = 128;

/// Puts user bytes into an error line; CR and LF become spaces so the reply
/// stays one line.
fn put_sanitized<S: RespSink>(bytes: &[u8], out: &mut S) -> Result<(), ResponseTooLarge> {
    for piece in bytes.split_inclusive(|&b| b == b'\r' || b == b'\n') {
        match piece.split_last() {
            Some((b'\r' | b'\n', head)) => {
                out.put(head)?;
                out.put(b" ")?;
            }
            _ => out.put(piece)?,
        }
    }
    Ok(())
}

/// `-ERR unknown command 'name', with args beginning with: 'a' 'b' `
/// (Redis 7's wording, argument text bounded to 128 bytes).
fn unknown_command<S: RespSink>(
    command: &Command<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let name = command.name();
    out.put(b"-ERR unknown command '")?;
    put_sanitized(&name[..name.len().min(ERROR_QUOTE_BYTES_MAX)], out)?;
    out.put(b"', with args beginning with: ")?;
    let mut quoted = 0;
    for arg in command.args().skip(1) {
        if quoted >= ERROR_QUOTE_BYTES_MAX {
            break;
        }
        let take = arg.len().min(ERROR_QUOTE_BYTES_MAX - quoted);
        out.put(b"'")?;
        put_sanitized(&arg[..take], out)?;
        out.put(b"' ")?;
        quoted += take + 3;
    }
    out.put(b"\r\n")
}

fn unknown_subcommand<S: RespSink>(
    command: &Command<'_>,
    parent: &str,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let sub = command.arg(1);
    out.put(b"-ERR unknown subcommand '")?;
    put_sanitized(&sub[..sub.len().min(ERROR_QUOTE_BYTES_MAX)], out)?;
    out.put(b"'. Try ")?;
    out.put(parent.as_bytes())?;
    out.put(b" HELP.\r\n")
}

/// `fmt::Write` over a sink, so text replies can use `write!` without
/// allocating.
struct Text<'s, S: RespSink + ?Sized> {
    sink: &'s mut S,
    full: Option<ResponseTooLarge>,
}

impl<'s, S: RespSink + ?Sized> Text<'s, S> {
    fn new(sink: &'s mut S) -> Self {
        Text { sink, full: None }
    }

    fn finish(self) -> Result<(), ResponseTooLarge> {
        self.full.map_or(Ok(()), Err)
    }
}

impl<S: RespSink + ?Sized> std::fmt::Write for Text<'_, S> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        match self.sink.put(text.as_bytes()) {
            Ok(()) => Ok(()),
            Err(full) => {
                self.full = Some(full);
                Err(std::fmt::Error)
            }
        }
    }
}

/// Counts bytes instead of writing them: sizes a bulk string before
/// writing it (its length comes first).
#[derive(Debug, Default)]
struct Counter {
    bytes: usize,
}

impl RespSink for Counter {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge> {
        self.bytes += bytes.len();
        Ok(())
    }

    fn written_len(&self) -> usize {
        self.bytes
    }

    fn truncate_to(&mut self, len: usize) {
        self.bytes = self.bytes.min(len);
    }
}

/// Writes `body` as one bulk string: counted first, then written.
fn bulk_text<S: RespSink>(
    out: &mut S,
    body: impl Fn(&mut Text<'_, dyn RespSink + '_>) -> std::fmt::Result,
) -> Result<(), ResponseTooLarge> {
    let mut counter = Counter::default();
    let mut text = Text::new(&mut counter as &mut dyn RespSink);
    body(&mut text).expect("counting never fails");
    out.header(b'$', counter.bytes)?;
    let mut text = Text::new(out as &mut dyn RespSink);
    let _ = body(&mut text);
    text.finish()?;
    out.put(b"\r\n")
}

/// A node's 40-hex-digit name (CLUSTER MYID/NODES/SLOTS): 8 zeros, the
/// cluster id (16 digits), then the node id (16 digits).
pub fn node_name(cluster_id: u64, node_id: u64) -> [u8; 40] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = [b'0'; 40];
    let (cluster_part, node_part) = name[8..].split_at_mut(16);
    for (part, id) in [(cluster_part, cluster_id), (node_part, node_id)] {
        for (i, digit) in part.iter_mut().enumerate() {
            *digit = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    name
}

/// Writes `addr`'s IP as text into `buf`.
fn ip_text(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{}", addr.ip()).expect("an IP fits 64 bytes");
    let len = cursor.position() as usize;
    &buf[..len]
}

fn name_str(name: &[u8; 40]) -> &str {
    std::str::from_utf8(name).expect("hex digits")
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
    }
}

fn state_name(state: ProgressState) -> &'static str {
    match state {
        ProgressState::Probe => "probe",
        ProgressState::Replicate => "replicate",
        ProgressState::Snapshot => "snapshot",
    }
}

/// Groups this node leads.
fn leads_any(view: &ServerView<'_>, node: u64) -> bool {
    let groups = view.routing.slot_map().groups();
    (0..groups).any(|group| {
        view.routing
            .leader(group)
            .is_some_and(|leader| leader.id == node)
    })
}

const INFO_SECTIONS: [&str; 3] = ["server", "replication", "cluster"];

fn info<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let wanted = |section: &str| {
        command.len() == 1
            || command.args().skip(1).any(|arg| {
                [section.as_bytes(), b"all", b"default", b"everything"]
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(arg))
            })
    };
    let selected: [bool; 3] = INFO_SECTIONS.map(wanted);
    bulk_text(out, |text| {
        let mut first = true;
        for (section, _) in INFO_SECTIONS.iter().zip(selected).filter(|(_, on)| *on) {
            if !first {
                text.write_str("\r\n")?;
            }
            first = false;
            info_section(section, view, text)?;
        }
        Ok(())
    })
}

fn info_section(
    section: &str,
    view: &ServerView<'_>,
    text: &mut impl std::fmt::Write,
) -> std::fmt::Result {
    let me = view.routing.me();
    match section {
        "server" => {
            write!(
                text,
                "# Server\r\nredis_version:7.0.0\r\nringraft_version:{}\r\n",
                env!("CARGO_PKG_VERSION")
            )?;
            write!(
                text,
                "redis_mode:cluster\r\nnode_id:{me}\r\ncluster_id:{}\r\n",
                view.cluster_id
            )?;
            write!(text, "shards:{}\r\n", view.shards.len())
        }
        "replication" => {
            let role = if leads_any(view, me) {
                "master"
            } else {
                "slave"
            };
            write!(
                text,
                "# Replication\r\nrole:{role}\r\nshards:{}\r\n",
                view.shards.len()
            )?;
            for (shard, status) in view.shards.iter().enumerate() {
                write!(
                    text,
                    "shard{shard}:role={},term={},leader=",
                    role_name(status.role),
                    status.term
                )?;
                match status.leader {
                    Some(leader) => write!(text, "{leader}")?,
                    None => text.write_str("none")?,
                }
                write!(
                    text,
                    ",commit={},applied={}\r\n",
                    status.commit, status.applied
                )?;
                if status.role == Role::Leader {
                    for (i, peer) in status.peers.iter().enumerate() {
                        write!(
                            text,
                            "shard{shard}_peer{i}:id={},match={},state={}\r\n",
                            peer.node,
                            peer.matched,
                            state_name(peer.state)
                        )?;
                    }
                }
            }
            Ok(())
        }
        _ => text.write_str("# Cluster\r\ncluster_enabled:1\r\n"),
    }
}

fn cluster<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let sub = command.arg(1);
    let is = |name: &[u8]| name.eq_ignore_ascii_case(sub);
    let arity_ok = |n: usize| command.len() == n;
    if is(b"KEYSLOT") {
        if !arity_ok(3) {
            return wrong_arity("cluster|keyslot", out);
        }
        return out.integer(i64::from(key_slot(command.arg(2))));
    }
    let fixed: [(&[u8], &str); 6] = [
        (b"SLOTS", "cluster|slots"),
        (b"SHARDS", "cluster|shards"),
        (b"NODES", "cluster|nodes"),
        (b"INFO", "cluster|info"),
        (b"MYID", "cluster|myid"),
        (b"HELP", "cluster|help"),
    ];
    let Some((name, full)) = fixed.iter().find(|(name, _)| is(name)) else {
        return unknown_subcommand(command, "CLUSTER", out);
    };
    if !arity_ok(2) {
        return wrong_arity(full, out);
    }
    match *name {
        b"SLOTS" => cluster_slots(view, out),
        b"SHARDS" => cluster_shards(view, out),
        b"NODES" => bulk_text(out, |text| cluster_nodes(view, text)),
        b"INFO" => bulk_text(out, |text| cluster_info(view, text)),
        b"MYID" => out.bulk(&node_name(view.cluster_id, view.routing.me())),
        _ => {
            const HELP: [&[u8]; 7] = [
                b"CLUSTER <subcommand> [<arg> ...]. Subcommands are:",
                b"INFO, MYID, NODES, SHARDS, SLOTS",
                b"KEYSLOT <key>",
                b"Slots map to Raft groups in contiguous ranges;",
                b"a group's leader serves its slots,",
                b"other nodes answer -MOVED.",
                b"HELP",
            ];
            out.array(HELP.len())?;
            HELP.iter().try_for_each(|line| out.simple(line))
        }
    }
}

/// Writes one node as CLUSTER SLOTS lists it: `[ip, port, name]`.
fn slots_node<S: RespSink>(
    view: &ServerView<'_>,
    id: u64,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    let node = view.routing.node(id).expect("routing nodes are known");
    let mut ip = [0u8; 64];
    out.array(3)?;
    out.bulk(ip_text(node.client, &mut ip))?;
    out.integer(i64::from(node.client.port()))?;
    out.bulk(&node_name(view.cluster_id, id))
}

fn cluster_slots<S: RespSink>(view: &ServerView<'_>, out: &mut S) -> Result<(), ResponseTooLarge> {
    let map = view.routing.slot_map();
    let led = |group: u16| view.routing.leader(group);
    let groups = (0..map.groups()).filter(|&g| led(g).is_some());
    out.array(groups.clone().count())?;
    for group in groups {
        let leader = led(group).expect("filtered").id;
        let (start, end) = map.range(group);
        out.array(2 + view.routing.nodes().len())?;
        out.integer(i64::from(start))?;
        out.integer(i64::from(end))?;
        slots_node(view, leader, out)?;
        for node in view.routing.nodes().iter().filter(|node| node.id != leader) {
            slots_node(view, node.id, out)?;
        }
    }
    Ok(())
}

fn cluster_shards<S: RespSink>(view: &ServerView<'_>, out: &mut S) -> Result<(), ResponseTooLarge> {
    let map = view.routing.slot_map();
    out.array(usize::from(map.groups()))?;
    for group in 0..map.groups() {
        let leader = view.routing.leader(group).map(|node| node.id);
        let (start, end) = map.range(group);
        out.array(4)?;
        out.bulk(b"slots")?;
        out.array(2)?;
        out.integer(i64::from(start))?;
        out.integer(i64::from(end))?;
        out.bulk(b"nodes")?;
        out.array(view.routing.nodes().len())?;
        for node in view.routing.nodes() {
            let mut ip = [0u8; 64];
            let ip = ip_text(node.client, &mut ip);
            out.array(14)?;
            out.bulk(b"id")?;
            out.bulk(&node_name(view.cluster_id, node.id))?;
            out.bulk(b"port")?;
            out.integer(i64::from(node.client.port()))?;
            out.bulk(b"ip")?;
            out.bulk(ip)?;
            out.bulk(b"endpoint")?;
            out.bulk(ip)?;
            out.bulk(b"role")?;
            out.bulk(if leader == Some(node.id) {
                b"master"
            } else {
                b"replica"
            })?;
            out.bulk(b"replication-offset")?;
            out.integer(0)?;
            out.bulk(b"health")?;
            out.bulk(b"online")?;
        }
    }
    Ok(())
}

/// CLUSTER NODES: one line per node, `\n`-terminated:
/// `<name> <ip>:<port>@<bus> <flags> <master|-> 0 0 0 connected <slots>`.
/// A node that leads at least one group is a `master` owning those
/// groups' ranges; one that leads none is a `slave` of the first known
/// leader (clients then route only to leaders).
fn cluster_nodes(view: &ServerView<'_>, text: &mut impl std::fmt::Write) -> std::fmt::Result {
    let map = view.routing.slot_map();
    let first_leader = (0..map.groups())
        .find_map(|g| view.routing.leader(g))
        .map(|n| n.id);
    for node in view.routing.nodes() {
        let name = node_name(view.cluster_id, node.id);
        write!(
            text,
            "{} {}:{}@{} ",
            name_str(&name),
            node.client.ip(),
            node.client.port(),
            node.bus_port
        )?;
        if node.id == view.routing.me() {
            text.write_str("myself,")?;
        }
        let master = leads_any(view, node.id) || first_leader.is_none();
        if master {
            text.write_str("master - 0 0 0 connected")?;
        } else {
            let leader = node_name(view.cluster_id, first_leader.expect("checked"));
            write!(text, "slave {} 0 0 0 connected", name_str(&leader))?;
        }
        for group in 0..map.groups() {
            if view
                .routing
                .leader(group)
                .is_some_and(|leader| leader.id == node.id)
            {
                let (start, end) = map.range(group);
                if start == end {
                    write!(text, " {start}")?;
                } else {
                    write!(text, " {start}-{end}")?;
                }
            }
        }
        text.write_str("\n")?;
    }
    Ok(())
}

fn cluster_info(view: &ServerView<'_>, text: &mut impl std::fmt::Write) -> std::fmt::Result {
    let map = view.routing.slot_map();
    let mut slots_ok = 0u32;
    let mut leaders = 0;
    for group in 0..map.groups() {
        if let Some(leader) = view.routing.leader(group) {
            let (start, end) = map.range(group);
            slots_ok += u32::from(end - start) + 1;
            let counted_before =
                (0..group).any(|g| view.routing.leader(g).is_some_and(|l| l.id == leader.id));
            if !counted_before {
                leaders += 1;
            }
        }
    }
    let epoch = view
        .shards
        .iter()
        .map(|status| status.term)
        .max()
        .unwrap_or(0);
    let state = if slots_ok == u32::from(SLOTS) {
        "ok"
    } else {
        "fail"
    };
    write!(
        text,
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{SLOTS}\r\n"
    )?;
    write!(
        text,
        "cluster_slots_ok:{slots_ok}\r\ncluster_slots_pfail:0\r\n"
    )?;
    write!(
        text,
        "cluster_slots_fail:{}\r\n",
        u32::from(SLOTS) - slots_ok
    )?;
    write!(
        text,
        "cluster_known_nodes:{}\r\ncluster_size:{leaders}\r\n",
        view.routing.nodes().len()
    )?;
    write!(
        text,
        "cluster_current_epoch:{epoch}\r\ncluster_my_epoch:{epoch}\r\n"
    )
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`; `COMMAND DOCS` is an
/// error on purpose (redis-cli then uses its built-in help).
fn command_command<S: RespSink>(
    command: &Command<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    if command.len() == 1 {
        out.array(COMMANDS.len())?;
        return COMMANDS.iter().try_for_each(|spec| command_info(spec, out));
    }
    let sub = command.arg(1);
    if sub.eq_ignore_ascii_case(b"COUNT") && command.len() == 2 {
        return out.integer(COMMANDS.len() as i64);
    }
    if sub.eq_ignore_ascii_case(b"INFO") {
        out.array(command.len() - 2)?;
        for name in command.args().skip(2) {
            match COMMANDS
                .iter()
                .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
            {
                Some(spec) => command_info(spec, out)?,
                None => out.put(b"*-1\r\n")?,
            }
        }
        return Ok(());
    }
    unknown_subcommand(command, "COMMAND", out)
}

fn command_info<S: RespSink>(spec: &Spec, out: &mut S) -> Result<(), ResponseTooLarge> {
    out.array(6)?;
    out.bulk(spec.name.as_bytes())?;
    out.integer(spec.arity)?;
    out.array(spec.flags.len())?;
    spec.flags
        .iter()
        .try_for_each(|flag| out.simple(flag.as_bytes()))?;
    out.integer(spec.first_key)?;
    out.integer(spec.last_key)?;
    out.integer(spec.step)
}

/// `CONFIG GET name...`: `save` (always empty: no RDB) and `appendonly`
/// (`yes` when acknowledged writes are flushed); other names match nothing.
fn config<S: RespSink>(
    command: &Command<'_>,
    view: &ServerView<'_>,
    out: &mut S,
) -> Result<(), ResponseTooLarge> {
    if !command.arg(1).eq_ignore_ascii_case(b"GET") {
        out.put(b"-ERR CONFIG subcommand '")?;
        put_sanitized(
            &command.arg(1)[..command.arg(1).len().min(ERROR_QUOTE_BYTES_MAX)],
            out,
        )?;
        return out.put(b"' is not supported, only CONFIG GET\r\n");
    }
    if command.len() < 3 {
        return wrong_arity("config|get", out);
    }
    let appendonly: &[u8] = if view.fsync { b"yes" } else { b"no" };
    let known: [(&[u8], &[u8]); 2] = [(b"save", b""), (b"appendonly", appendonly)];
    let matches = || {
        known.iter().filter(|(name, _)| {
            command
                .args()
                .skip(2)
                .any(|arg| arg.eq_ignore_ascii_case(name))
        })
    };
    out.array(matches().count() * 2)?;
    for (name, value) in matches() {
        out.bulk(name)?;
        out.bulk(value)?;
    }
    Ok(())
}
