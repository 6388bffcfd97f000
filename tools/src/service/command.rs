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

pub use super::cluster::node_name;
use super::payload::{self, PayloadTooLarge};
use super::resp::{Command, RespSink, format_u64};
use super::slots::{Route, RoutingTable, key_slot};
use super::stream::{RangeEnd, parse_range_bound, parse_xadd_id};
use super::{cluster, info};
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
    /// Last entry covered by the shard's snapshot (0: none); its log
    /// holds only the entries after it.
    pub snapshot_index: u64,
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
    if name.eq_ignore_ascii_case(b"DEBUG") {
        // Testing only and not listed by COMMAND (see `process.rs`).
        debug(command, out)?;
        return Ok(Action::Replied);
    }
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
        Kind::Info => info::info(command, view, out)?,
        Kind::Cluster => cluster::cluster(command, view, out)?,
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
    let too_large = b"ERR command too large for one log entry";
    action_or_error(encoded, too_large, out, |payload_bytes| Action::Propose {
        group: target.group,
        slot: target.slot,
        payload_bytes,
    })
}

fn read<S: RespSink>(
    target: Target,
    encoded: Result<usize, PayloadTooLarge>,
    out: &mut S,
) -> Result<Action, ResponseTooLarge> {
    action_or_error(encoded, b"ERR request too large", out, |request_bytes| {
        Action::Read {
            group: target.group,
            slot: target.slot,
            request_bytes,
        }
    })
}

/// The action for an encoded payload, or `too_large` answered at once.
fn action_or_error<S: RespSink>(
    encoded: Result<usize, PayloadTooLarge>,
    too_large: &[u8],
    out: &mut S,
    action: impl FnOnce(usize) -> Action,
) -> Result<Action, ResponseTooLarge> {
    match encoded {
        Ok(bytes) => Ok(action(bytes)),
        Err(_) => {
            out.error(too_large)?;
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

pub(super) fn wrong_arity<S: RespSink>(name: &str, out: &mut S) -> Result<(), ResponseTooLarge> {
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

pub(super) fn unknown_subcommand<S: RespSink>(
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
pub(super) struct Text<'s, S: RespSink + ?Sized> {
    sink: &'s mut S,
    full: Option<ResponseTooLarge>,
}

impl<'s, S: RespSink + ?Sized> Text<'s, S> {
    pub(super) fn new(sink: &'s mut S) -> Self {
        Text { sink, full: None }
    }

    pub(super) fn finish(self) -> Result<(), ResponseTooLarge> {
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
pub(super) struct Counter {
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
pub(super) fn bulk_text<S: RespSink>(
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

/// TESTING ONLY: `DEBUG FAULT <setting>[,<setting>...]` (settings as for
/// `ringraft serve --fault`, or `off`) changes this node's fault hooks and
/// answers with those now in force; enabled only by `serve --enable-debug-fault`.
fn debug<S: RespSink>(command: &Command<'_>, out: &mut S) -> Result<(), ResponseTooLarge> {
    if command.len() != 3 || !command.arg(1).eq_ignore_ascii_case(b"FAULT") {
        return out.error(b"ERR only DEBUG FAULT <settings> is supported (testing only)");
    }
    let Ok(settings) = std::str::from_utf8(command.arg(2)) else {
        return out.error(b"ERR DEBUG FAULT settings must be text");
    };
    match super::process::debug_fault(settings) {
        None => out.error(b"ERR DEBUG FAULT is disabled (start with --enable-debug-fault)"),
        Some(Ok(faults)) => bulk_text(out, |text| write!(text, "{faults}")),
        // Allocates: a testing-only command, off the hot path.
        Some(Err(error)) => out.error(format!("ERR {error}").as_bytes()),
    }
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
