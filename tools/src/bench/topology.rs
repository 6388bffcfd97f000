//! What the load generator knows of the target: which node serves which
//! hash slot (from `CLUSTER SLOTS`, corrected by `-MOVED`), and each
//! group's Raft term (from `INFO replication`) to count elections.
//!
//! These queries run on short-lived blocking connections, off the hot
//! path: once at start, after a `-MOVED` (at most once per
//! `REFRESH_INTERVAL`), and once at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use ringraft_tools::service::resp::{ReplyBuf, RespSink, reply_len};
use ringraft_tools::service::slots::SLOTS;

use super::BenchError;

/// Nodes a slot table can name (a larger cluster is refused).
pub const NODES_MAX: usize = 64;
/// Bytes of one control reply (CLUSTER SLOTS of a large cluster fits).
const CONTROL_REPLY_BYTES_MAX: usize = 1 << 20;
/// Nesting of a control reply (CLUSTER SLOTS has 3 levels).
const CONTROL_DEPTH_MAX: usize = 8;
/// A control query that takes longer is an error.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// `-MOVED` replies re-read CLUSTER SLOTS at most this often.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// A decoded RESP2 reply (control path only: allocates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

/// Decodes one whole reply (as measured by `reply_len`).
fn decode(input: &[u8], depth: usize) -> Result<(Value, usize), BenchError> {
    let malformed = || BenchError::Protocol("malformed control reply".into());
    if depth > CONTROL_DEPTH_MAX {
        return Err(malformed());
    }
    let line_end = input
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(malformed)?;
    let text = std::str::from_utf8(&input[1..line_end]).map_err(|_| malformed())?;
    let after = line_end + 2;
    let number = || text.parse::<i64>().map_err(|_| malformed());
    match input.first() {
        Some(b'+') => Ok((Value::Simple(text.into()), after)),
        Some(b'-') => Ok((Value::Error(text.into()), after)),
        Some(b':') => Ok((Value::Integer(number()?), after)),
        Some(b'$') => match usize::try_from(number()?) {
            Err(_) => Ok((Value::Bulk(None), after)),
            Ok(len) => {
                let body = input.get(after..after + len).ok_or_else(malformed)?;
                Ok((Value::Bulk(Some(body.to_vec())), after + len + 2))
            }
        },
        Some(b'*') => match usize::try_from(number()?) {
            Err(_) => Ok((Value::Array(None), after)),
            Ok(count) => {
                let mut items = Vec::with_capacity(count.min(1024));
                let mut pos = after;
                for _ in 0..count {
                    let (item, used) = decode(&input[pos..], depth + 1)?;
                    items.push(item);
                    pos += used;
                }
                Ok((Value::Array(Some(items)), pos))
            }
        },
        _ => Err(malformed()),
    }
}

/// Sends one command on a fresh blocking connection and decodes the reply.
pub fn query(addr: SocketAddr, args: &[&[u8]]) -> Result<Value, BenchError> {
    let io = |error: std::io::Error| BenchError::Io {
        addr,
        message: error.to_string(),
    };
    let mut stream = TcpStream::connect_timeout(&addr, CONTROL_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(CONTROL_TIMEOUT)).map_err(io)?;
    stream
        .set_write_timeout(Some(CONTROL_TIMEOUT))
        .map_err(io)?;
    let request_bytes: usize = args.iter().map(|arg| arg.len() + 32).sum::<usize>() + 16;
    let mut request = ReplyBuf::new(request_bytes);
    request
        .command(args)
        .expect("request buffer sized from the arguments");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut reply = vec![0u8; CONTROL_REPLY_BYTES_MAX];
    let mut len = 0;
    loop {
        let protocol = |e: ringraft_tools::service::resp::ProtocolError| {
            BenchError::Protocol(format!("{addr}: {e}"))
        };
        if let Some(whole) = reply_len(&reply[..len]).map_err(protocol)? {
            return Ok(decode(&reply[..whole], 0)?.0);
        }
        if len == reply.len() {
            return Err(BenchError::Protocol(format!(
                "{addr}: control reply larger than {CONTROL_REPLY_BYTES_MAX} bytes"
            )));
        }
        match stream.read(&mut reply[len..]).map_err(io)? {
            0 => {
                return Err(BenchError::Io {
                    addr,
                    message: "connection closed before the reply".into(),
                });
            }
            n => len += n,
        }
    }
}

/// Which node serves each slot. Node 0 is the address the user gave; a
/// slot with no known owner goes there.
#[derive(Debug, Clone)]
pub struct SlotTable {
    nodes: Vec<SocketAddr>,
    /// owner[slot] indexes `nodes`.
    owner: Box<[u8]>,
    /// Whether the target answered CLUSTER SLOTS (cluster mode).
    clustered: bool,
    /// Whether `refresh` reads CLUSTER SLOTS (off: -MOVED alone steers).
    refresh: bool,
}

const _: () = assert!(NODES_MAX <= u8::MAX as usize);

impl SlotTable {
    /// Every slot on `target`.
    pub fn single(target: SocketAddr) -> SlotTable {
        let mut nodes = Vec::with_capacity(NODES_MAX);
        nodes.push(target);
        SlotTable {
            nodes,
            owner: vec![0; usize::from(SLOTS)].into_boxed_slice(),
            clustered: false,
            refresh: true,
        }
    }

    /// A table that never reads CLUSTER SLOTS: only `-MOVED` changes it.
    pub fn without_refresh(self) -> SlotTable {
        SlotTable {
            refresh: false,
            ..self
        }
    }

    /// Reads CLUSTER SLOTS from `target`. A target without cluster support
    /// (an error reply) serves every slot itself.
    pub fn discover(target: SocketAddr) -> Result<SlotTable, BenchError> {
        let mut table = SlotTable::single(target);
        table.refresh()?;
        Ok(table)
    }

    /// Re-reads CLUSTER SLOTS from the first node that answers.
    pub fn refresh(&mut self) -> Result<(), BenchError> {
        if !self.refresh {
            return Ok(());
        }
        let mut last_error = None;
        for at in self.nodes.clone() {
            match query(at, &[b"CLUSTER", b"SLOTS"]) {
                Ok(Value::Error(_)) if !self.clustered => return Ok(()),
                Ok(Value::Array(Some(ranges))) => return self.apply_slots(at, &ranges),
                Ok(other) => {
                    last_error = Some(BenchError::Protocol(format!(
                        "{at}: unexpected CLUSTER SLOTS reply {other:?}"
                    )))
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("the table holds at least the target"))
    }

    fn apply_slots(&mut self, from: SocketAddr, ranges: &[Value]) -> Result<(), BenchError> {
        let bad = || BenchError::Protocol(format!("{from}: malformed CLUSTER SLOTS entry"));
        for range in ranges {
            let Value::Array(Some(fields)) = range else {
                return Err(bad());
            };
            let (Some(Value::Integer(start)), Some(Value::Integer(end)), Some(master)) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad());
            };
            let Value::Array(Some(master)) = master else {
                return Err(bad());
            };
            let node = self.node_index(node_addr(from, master).ok_or_else(bad)?)?;
            // Replicas (fields 3..) serve no writes, but are nodes whose
            // INFO counts elections.
            for replica in &fields[3..] {
                if let Value::Array(Some(replica)) = replica {
                    self.node_index(node_addr(from, replica).ok_or_else(bad)?)?;
                }
            }
            let (start, end) = (
                usize::try_from(*start).map_err(|_| bad())?,
                usize::try_from(*end).map_err(|_| bad())?,
            );
            if start > end || end >= usize::from(SLOTS) {
                return Err(bad());
            }
            self.owner[start..=end].fill(node);
        }
        self.clustered = true;
        Ok(())
    }

    /// The index of `addr`, added if new.
    pub fn node_index(&mut self, addr: SocketAddr) -> Result<u8, BenchError> {
        if let Some(i) = self.nodes.iter().position(|&node| node == addr) {
            return Ok(i as u8);
        }
        if self.nodes.len() == NODES_MAX {
            return Err(BenchError::TooManyNodes { max: NODES_MAX });
        }
        self.nodes.push(addr);
        Ok((self.nodes.len() - 1) as u8)
    }

    /// Records a `-MOVED slot addr`.
    pub fn moved(&mut self, slot: u16, addr: SocketAddr) -> Result<u8, BenchError> {
        let node = self.node_index(addr)?;
        self.owner[usize::from(slot)] = node;
        self.clustered = true;
        Ok(node)
    }

    /// The node serving `slot`.
    pub fn owner(&self, slot: u16) -> u8 {
        self.owner[usize::from(slot)]
    }

    /// Node `i`'s address.
    pub fn addr(&self, node: u8) -> SocketAddr {
        self.nodes[usize::from(node)]
    }

    /// Every node known.
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    /// Whether the target answered CLUSTER SLOTS or sent `-MOVED`.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }
}

/// A node as CLUSTER SLOTS lists it: `[ip, port, name, ...]`. Redis may
/// leave the IP empty for "the node you asked".
fn node_addr(from: SocketAddr, fields: &[Value]) -> Option<SocketAddr> {
    let (Some(Value::Bulk(Some(ip))), Some(Value::Integer(port))) = (fields.first(), fields.get(1))
    else {
        return None;
    };
    let ip = std::str::from_utf8(ip).ok()?;
    let host = if ip.is_empty() {
        from.ip().to_string()
    } else {
        ip.to_string()
    };
    resolve(&format!("{host}:{}", u16::try_from(*port).ok()?)).ok()
}

/// Resolves `host:port` to its first address.
pub fn resolve(text: &str) -> Result<SocketAddr, BenchError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| BenchError::BadAddress(text.to_string()))
}

/// One node's view of who leads which slots: `(start, end, leader)` per
/// range of CLUSTER SLOTS, sorted. None on any error.
pub type Layout = Vec<(i64, i64, String)>;

/// `addr`'s CLUSTER SLOTS as a [`Layout`].
pub fn slot_layout(addr: SocketAddr) -> Option<Layout> {
    let Ok(Value::Array(Some(ranges))) = query(addr, &[b"CLUSTER", b"SLOTS"]) else {
        return None;
    };
    let mut layout = Vec::with_capacity(ranges.len());
    for range in &ranges {
        let Value::Array(Some(fields)) = range else {
            return None;
        };
        let (
            Some(Value::Integer(start)),
            Some(Value::Integer(end)),
            Some(Value::Array(Some(leader))),
        ) = (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        layout.push((*start, *end, node_addr(addr, leader)?.to_string()));
    }
    layout.sort();
    Some(layout)
}

/// Slots a layout assigns.
pub fn slots_in(layout: &Layout) -> i64 {
    layout.iter().map(|(start, end, _)| end - start + 1).sum()
}

/// How often [`wait_ready`] asks the nodes.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits until `nodes` are [`Readiness`]-ready (every node agrees on a
/// leader for all 16384 slots, unchanged for `settle`). `failed` is asked
/// first on every turn (a node that exited or stopped ends the wait with
/// its error); past `timeout` the wait fails, describing what each node says.
pub fn wait_ready(
    nodes: &[SocketAddr],
    timeout: Duration,
    settle: Duration,
    mut failed: impl FnMut() -> Option<BenchError>,
) -> Result<(), BenchError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut readiness = Readiness::new(settle);
    loop {
        if let Some(error) = failed() {
            return Err(error);
        }
        if readiness.poll(nodes) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(BenchError::Cluster(format!(
                "no steady leader for every group after {timeout:?} ({})",
                Readiness::describe(nodes)
            )));
        }
        std::thread::sleep(READY_POLL_INTERVAL);
    }
}

/// When a fresh cluster is ready to measure: every node reports the same
/// layout covering all 16384 slots (every group has a leader that all
/// nodes know), unchanged for `settle`. The settle window lets start-up
/// leadership moves finish (e.g. a runtime handing each group to its
/// preferred node half a second after the first election), so the run
/// measures the steady state; elections after that are counted.
#[derive(Debug)]
pub struct Readiness {
    settle: Duration,
    /// The agreed layout and since when it has held.
    stable: Option<(std::time::Instant, Layout)>,
}

impl Readiness {
    /// A tracker with the given settle window.
    pub fn new(settle: Duration) -> Readiness {
        Readiness {
            settle,
            stable: None,
        }
    }

    /// Asks every node once; true once ready.
    pub fn poll(&mut self, nodes: &[SocketAddr]) -> bool {
        let now = std::time::Instant::now();
        let layouts: Vec<Option<Layout>> = nodes.iter().map(|&node| slot_layout(node)).collect();
        let agreed = match layouts.first() {
            Some(Some(first))
                if slots_in(first) == i64::from(SLOTS)
                    && layouts.iter().all(|l| l.as_ref() == Some(first)) =>
            {
                Some(first.clone())
            }
            _ => None,
        };
        match (agreed, &self.stable) {
            (Some(layout), Some((since, held))) if *held == layout => {
                now.duration_since(*since) >= self.settle
            }
            (Some(layout), _) => {
                self.stable = Some((now, layout));
                self.settle.is_zero()
            }
            (None, _) => {
                self.stable = None;
                false
            }
        }
    }

    /// What each node reports, for an error message.
    pub fn describe(nodes: &[SocketAddr]) -> String {
        nodes
            .iter()
            .map(|&node| match slot_layout(node) {
                Some(layout) => format!("{node}: {} slots led", slots_in(&layout)),
                None => format!("{node}: no answer"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Per group (shard index), the highest Raft term any node reports in its
/// `INFO replication` lines `shard<i>:role=...,term=<t>,...`. None when no
/// node answers with such lines (e.g. Redis): elections are then unknown.
pub fn group_terms(nodes: &[SocketAddr]) -> Option<Vec<u64>> {
    let mut terms: Vec<u64> = Vec::new();
    let mut seen = false;
    for &node in nodes {
        let Ok(Value::Bulk(Some(text))) = query(node, &[b"INFO", b"replication"]) else {
            continue;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            let Some((group, term)) = parse_shard_term(line) else {
                continue;
            };
            if group >= terms.len() {
                terms.resize(group + 1, 0);
            }
            terms[group] = terms[group].max(term);
            seen = true;
        }
    }
    seen.then_some(terms)
}

/// `shard3:role=leader,term=7,...` → (3, 7). Peer lines
/// (`shard3_peer0:...`) are not shard lines.
fn parse_shard_term(line: &str) -> Option<(usize, u64)> {
    let rest = line.strip_prefix("shard")?;
    let (group, fields) = rest.split_once(':')?;
    let group: usize = group.parse().ok()?;
    let term = fields
        .split(',')
        .find_map(|field| field.strip_prefix("term="))?;
    Some((group, term.trim().parse().ok()?))
}

/// Elections between two readings: the sum over groups of the term
/// increase. A term rises once per election round (with PreVote, a
/// partitioned node does not inflate it), so this counts elections that
/// started, won or not.
pub fn elections_between(before: &[u64], after: &[u64]) -> u64 {
    after
        .iter()
        .enumerate()
        .map(|(group, &term)| term.saturating_sub(before.get(group).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_replies_decode_nested_arrays() {
        let input = b"*1\r\n*4\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nab\r\n\
                      *3\r\n$0\r\n\r\n:7002\r\n$2\r\ncd\r\n";
        let (value, used) = decode(input, 0).unwrap();
        assert_eq!(used, input.len());
        let Value::Array(Some(ranges)) = value else {
            panic!("not an array")
        };
        let mut table = SlotTable::single("127.0.0.1:9".parse().unwrap());
        table
            .apply_slots("127.0.0.1:9".parse().unwrap(), &ranges)
            .unwrap();
        assert_eq!(
            table.addr(table.owner(0)),
            "127.0.0.1:7001".parse().unwrap()
        );
        assert_eq!(
            table.addr(table.owner(16383)),
            "127.0.0.1:7001".parse().unwrap()
        );
        assert!(table.is_clustered());
        // The replica (empty IP: the node asked) is known, owning nothing.
        let replica: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        assert!(table.nodes().contains(&replica));
    }

    #[test]
    fn info_terms_are_read_per_shard_and_elections_are_term_increases() {
        assert_eq!(
            parse_shard_term("shard2:role=leader,term=7,leader=1,commit=3,applied=3"),
            Some((2, 7))
        );
        assert_eq!(
            parse_shard_term("shard2_peer0:id=2,match=3,state=probe"),
            None
        );
        assert_eq!(parse_shard_term("role:master"), None);
        assert_eq!(elections_between(&[3, 5], &[4, 5, 2]), 3);
    }
}
