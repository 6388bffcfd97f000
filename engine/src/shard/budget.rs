//! A node's worst-case memory, computed from its configuration before
//! anything starts: every buffer, slot table and bounded queue a shard
//! allocates (or may fill) is an item `count × unit_bytes`, so the total is
//! what the node may use at most, whatever the load.
//!
//! ```text
//!  shard i  (one section per shard; the same items for each)
//!   wal ring memory ............ ring_bytes                  (mmap, registered)
//!   wal file read buffer ....... read_buffer_bytes           (slow followers are served through it)
//!   transport buffers .......... per peer: inboxes, outboxes, one frame_bytes_max send tail
//!   mailbox slots .............. mailbox_slots_max × (request_bytes_max + reply_bytes_max)
//!   raft log metadata .......... log_entries_max × 8 (entry ends) + term runs + outbox
//!   ...
//!  clients  (added by the server: connections × per-connection buffers)
//!  total
//! ```
//!
//! Not counted (and said so in the report): the state machine's own data
//! (bounded by the application, e.g. the KV store's `keys_max`), kernel
//! socket buffers and page cache, and the code and libraries mapped in.
//! Pages that are reserved but never touched (zeroed mailbox replies, an
//! idle ring) do not become resident, so a healthy RSS sits well below the
//! total; the total is the bound it may never pass.

use std::fmt;
use std::mem::size_of;

use ringraft_net::{Transport, TransportConfig};

use super::node::NodeConfig;
use super::runtime::ShardBounds;
use crate::raft::{Append, IoId, Progress};

/// Stack reserved by `std::thread::spawn` for a shard thread.
const SHARD_STACK_BYTES: u64 = 2 << 20;
/// Bytes of one io_uring submission queue entry and completion queue entry.
const SQE_BYTES: u64 = 64;
const CQE_BYTES: u64 = 16;

/// One line of the budget: `count` things of `unit_bytes` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetItem {
    /// What it is (and the bound that sizes it).
    pub name: &'static str,
    /// How many.
    pub count: u64,
    /// Bytes each.
    pub unit_bytes: u64,
}

impl BudgetItem {
    /// `count × unit_bytes`.
    pub fn bytes(&self) -> u64 {
        self.count.saturating_mul(self.unit_bytes)
    }
}

/// A titled group of items (a shard, the client side, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSection {
    /// "shard 0", "clients", ...
    pub title: String,
    /// Its items.
    pub items: Vec<BudgetItem>,
}

impl BudgetSection {
    /// Sum of the items.
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(BudgetItem::bytes).sum()
    }
}

/// The itemized worst case of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryBudget {
    /// One section per shard, then whatever the embedding program adds.
    pub sections: Vec<BudgetSection>,
}

impl MemoryBudget {
    /// The budget of a node started with `config` whose state machines
    /// write replies of at most `response_bytes_max` (what
    /// `Node::start` sizes its slot tables with).
    pub fn for_node(config: &NodeConfig, response_bytes_max: usize) -> MemoryBudget {
        let sections = (0..config.shards)
            .map(|shard| BudgetSection {
                title: format!("shard {shard}"),
                items: shard_items(config, response_bytes_max),
            })
            .collect();
        MemoryBudget { sections }
    }

    /// Adds a section (e.g. the server's client connections).
    pub fn push(&mut self, title: impl Into<String>, items: Vec<BudgetItem>) {
        self.sections.push(BudgetSection {
            title: title.into(),
            items,
        });
    }

    /// The bound: every item of every section.
    pub fn total_bytes(&self) -> u64 {
        self.sections.iter().map(BudgetSection::bytes).sum()
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory budget (worst case, from the configuration)")?;
        for section in &self.sections {
            writeln!(f, "{}:", section.title)?;
            for item in &section.items {
                writeln!(
                    f,
                    "  {:<52} {:>9} x {:>10} = {:>12}",
                    item.name,
                    item.count,
                    item.unit_bytes,
                    item.bytes()
                )?;
            }
            writeln!(f, "  {:<52} {:>38}", "subtotal", section.bytes())?;
        }
        let total = self.total_bytes();
        writeln!(
            f,
            "total_bytes: {total} ({:.1} MiB)",
            total as f64 / (1 << 20) as f64
        )?;
        write!(
            f,
            "not counted: state machine data (bounded by the application), kernel socket \
             buffers and page cache, code and libraries"
        )
    }
}

/// The transport configuration a shard of `config` builds (see
/// `Shard::open`): defaults, one peer per other node.
fn transport_config(config: &NodeConfig) -> TransportConfig {
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut tcfg = TransportConfig::new(config.cluster_id, config.id as u32, 0, any);
    tcfg.peers = config
        .peers
        .iter()
        .filter(|p| p.0 != config.id)
        .map(|&(id, address)| ringraft_net::PeerConfig {
            node_id: id as u32,
            address,
        })
        .collect();
    tcfg
}

fn item(name: &'static str, count: u64, unit_bytes: u64) -> BudgetItem {
    BudgetItem {
        name,
        count,
        unit_bytes,
    }
}

/// io_uring queue memory for `entries` submissions (completions: `cq_factor` ×).
fn uring_bytes(entries: u64, cq_factor: u64) -> u64 {
    entries * SQE_BYTES + cq_factor * entries * CQE_BYTES
}

fn shard_items(config: &NodeConfig, response_bytes_max: usize) -> Vec<BudgetItem> {
    let wal = &config.wal;
    let tuning = &wal.tuning;
    let raft = &config.raft;
    let bounds: &ShardBounds = &config.bounds;
    let tcfg = transport_config(config);
    let peers = tcfg.peers.len() as u64;
    let voters = config.peers.len() as u64;
    let reply_bytes_max = response_bytes_max.max(config.read_reply_bytes_max) as u64;
    let flush_sqes = (2 * tuning.flush_ios_max as u64).next_power_of_two().max(4);
    let transport_conns = 1 + 4 * peers + tcfg.pending_connections_max as u64;
    let transport_sqes = (2 * transport_conns).next_power_of_two();
    // The shard raises log_entries_max to what the file can hold (no compaction).
    let log_entries = (raft.log_entries_max as u64).max(wal.capacity_bytes / 32);
    let id = size_of::<IoId>() as u64;
    let ticket = 16;
    vec![
        item("wal ring memory (ring_bytes)", 1, wal.ring_bytes),
        item(
            "wal file read buffer (read_buffer_bytes)",
            1,
            tuning.read_buffer_bytes as u64,
        ),
        item("wal superblock buffer", 1, 4096),
        item(
            "wal index map (capacity / index_chunk_bytes)",
            wal.capacity_bytes / tuning.index_chunk_bytes.max(1),
            2 * size_of::<u64>() as u64,
        ),
        item(
            "wal io_uring queues (2 x flush_ios_max)",
            1,
            uring_bytes(flush_sqes, 2),
        ),
        item(
            "transport connection buffers (per peer: 4 lanes)",
            1,
            Transport::buffer_bytes(&tcfg) as u64,
        ),
        item(
            "transport io_uring queues",
            1,
            uring_bytes(transport_sqes, 4),
        ),
        item(
            "peer receive scratch (frame_bytes_max)",
            1,
            tcfg.frame_bytes_max as u64,
        ),
        item(
            "mailbox slots (request_bytes_max + reply_bytes_max)",
            bounds.mailbox_slots_max as u64,
            bounds.request_bytes_max as u64 + reply_bytes_max,
        ),
        item(
            "response slot table (response_bytes_max + len + id)",
            bounds.mailbox_slots_max.max(64) as u64,
            response_bytes_max as u64 + 8 + id,
        ),
        item(
            "raft log metadata (max(log_entries_max, capacity/32))",
            log_entries,
            size_of::<u64>() as u64,
        ),
        item(
            "raft term runs (term_runs_max)",
            raft.term_runs_max as u64,
            2 * size_of::<u64>() as u64,
        ),
        item(
            "raft outbox appends (peers x (inflight_msgs_max + 2))",
            voters * (raft.inflight_msgs_max as u64 + 2),
            size_of::<Append>() as u64,
        ),
        item(
            "raft progress + inflight windows (voters)",
            voters,
            size_of::<Progress>() as u64 + raft.inflight_msgs_max as u64 * 16,
        ),
        item("raft read queue (reads_max)", raft.reads_max as u64, 32),
        item(
            "deferred appends (peers x deferred_appends_max)",
            peers * bounds.deferred_appends_max as u64,
            size_of::<Append>() as u64,
        ),
        item(
            "follower writes awaiting flush (follower_writes_max)",
            bounds.follower_writes_max as u64,
            id,
        ),
        item(
            "proposals + reads waiting (3 x mailbox_slots_max)",
            3 * bounds.mailbox_slots_max as u64,
            id + ticket,
        ),
        item("shard thread stack", 1, SHARD_STACK_BYTES),
    ]
}

/// This process's resident set size (`/proc/self/statm`), if readable.
pub fn rss_bytes() -> Option<u64> {
    rss_bytes_of("self")
}

/// The resident set size of process `pid` (a pid, or `self`), from
/// `/proc/<pid>/statm`, if readable.
pub fn rss_bytes_of(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shards: u32) -> NodeConfig {
        let peers = (1..=3)
            .map(|id| (id, ([127, 0, 0, 1], 7000 + id as u16).into()))
            .collect();
        NodeConfig::new(1, peers, shards, "/nonexistent".into())
    }

    #[test]
    fn the_budget_follows_the_configuration() {
        let one = MemoryBudget::for_node(&config(1), 128);
        let two = MemoryBudget::for_node(&config(2), 128);
        assert_eq!(two.sections.len(), 2);
        assert_eq!(two.total_bytes(), 2 * one.total_bytes());
        // The ring is in it, whole.
        let mut bigger = config(1);
        bigger.wal.ring_bytes *= 2;
        let grown = MemoryBudget::for_node(&bigger, 128).total_bytes() - one.total_bytes();
        assert_eq!(grown, config(1).wal.ring_bytes);
        // So are the mailbox slots.
        let mut more = config(1);
        more.bounds.mailbox_slots_max += 1;
        let grown = MemoryBudget::for_node(&more, 128).total_bytes() - one.total_bytes();
        let c = config(1);
        assert!(grown >= (c.bounds.request_bytes_max + c.read_reply_bytes_max) as u64);
        let mut with_clients = one.clone();
        with_clients.push("clients", vec![item("connection", 10, 100)]);
        assert_eq!(with_clients.total_bytes(), one.total_bytes() + 1000);
        let text = with_clients.to_string();
        assert!(text.contains("wal ring memory"), "{text}");
        assert!(
            text.contains(&format!("total_bytes: {}", with_clients.total_bytes())),
            "{text}"
        );
    }

    #[test]
    fn rss_is_readable_and_positive() {
        let rss = rss_bytes().expect("/proc/self/statm");
        assert!(rss > 1 << 20, "{rss}");
    }
}
