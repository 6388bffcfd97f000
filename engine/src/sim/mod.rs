//! A deterministic simulator of a whole Raft group in one thread.
//!
//! Virtual time is a tick counter; every random choice (message delay, loss,
//! duplication, partitions, crashes, proposal sizes, and each node's election
//! timeouts) comes from generators seeded by the run's seed, so a seed
//! replays exactly.
//!
//! ```text
//!   one step (= one tick):
//!     faults  ─ maybe partition / heal links, crash / restart nodes
//!     tick    ─ every live node's tick()
//!     network ─ deliver messages due now (delay, loss, duplication, reorder)
//!     disk    ─ complete writes due now, in order (hard state, log, snapshot)
//!     clients ─ proposals and reads at the leader
//!     apply   ─ each node applies up to committed (durable on a quorum,
//!               not necessarily on itself); it compacts only durable entries
//!     check   ─ every invariant below
//! ```
//!
//! A node's disk is a FIFO of writes that complete after a random delay; a
//! crash drops the writes not yet completed, so a restarted node has only
//! what was durable. The invariants checked after every step:
//! 1. at most one leader per term;
//! 2. log matching: an entry (term, index) always has the same payload and
//!    the same predecessor term, on every node (by induction, equal entries
//!    mean equal prefixes);
//! 3. leader completeness: a new leader holds every entry committed before;
//! 4. committed entries are never changed or lost, across crashes;
//! 5. every node's applied sequence is a prefix of every other's;
//! 6. a ReadIndex answer is at least every index committed before the read;
//!
//! and, once faults heal, a leader is elected and a new proposal commits
//! within `liveness_ticks_max` (liveness).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use ringraft_wal::IoId;

use crate::raft::{
    Append, AppendOutcome, Config, EntryMeta, HardState, LogMeta, Message, Outgoing, RaftNode,
    RaftRng, ReadState, Recovered, Role, SplitMix64, StepOutcome,
};

/// Payload id of a leader's empty entry.
const NOOP_PAYLOAD: u64 = 0;

/// Knobs of one simulated run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the group (3 or 5).
    pub nodes: usize,
    /// Ticks during which faults are injected.
    pub fault_ticks: u64,
    /// After faults heal: ticks within which a new proposal must commit.
    pub liveness_ticks_max: u64,
    /// Probability (per mille) that a message is dropped while faults run.
    pub drop_per_mille: u64,
    /// Probability (per mille) that a message is delivered twice.
    pub duplicate_per_mille: u64,
    /// Longest network delay, ticks (delays are uniform in 0..=max: reorders).
    pub delay_ticks_max: u64,
    /// Longest disk write delay, ticks.
    pub disk_ticks_max: u64,
    /// Probability (per mille per tick) of a crash of some node.
    pub crash_per_mille: u64,
    /// Probability (per mille per tick) of a partition change.
    pub partition_per_mille: u64,
    /// Probability (per mille per tick) that the leader is asked to transfer
    /// leadership, and (separately) that a snapshot send is reported failed.
    pub transfer_per_mille: u64,
    /// Proposals per tick at most (each a coin flip).
    pub proposals_per_tick_max: u64,
    /// Compact a node's log when this many applied entries are live.
    pub compact_entries: u64,
    /// The core's configuration template (id and voters are set per node).
    pub raft: Config,
}

impl SimConfig {
    /// A configuration drawn from `seed`: the group size and the Raft
    /// options (PreVote, CheckQuorum, lease reads, window sizes) vary.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = SplitMix64::new(seed ^ 0x005E_ED0F_C0F1);
        let nodes = if rng.range(0, 2) == 0 { 3 } else { 5 };
        let mut raft = Config::new(1, &[1]);
        raft.election_timeout_ticks = rng.range(10, 31);
        raft.heartbeat_interval_ticks = rng.range(1, 4);
        raft.pre_vote = rng.range(0, 4) != 0;
        raft.check_quorum = rng.range(0, 4) != 0;
        raft.lease_reads = raft.check_quorum && rng.range(0, 2) == 0;
        raft.inflight_msgs_max = rng.range(1, 5) as usize;
        raft.inflight_bytes_max = rng.range(100, 2000);
        raft.msg_bytes_max = rng.range(40, 400);
        raft.log_entries_max = rng.range(24, 96) as usize;
        raft.uncommitted_entries_max = raft.log_entries_max / 2;
        raft.term_runs_max = 48;
        raft.reads_max = 4;
        SimConfig {
            nodes,
            fault_ticks: 500,
            // Without PreVote a node with a stale log still disrupts leaders
            // for a while after healing, and a follower catching up with a
            // window of one small append needs many round trips: the bound
            // covers both (seed 69543 took ~30 timeouts).
            liveness_ticks_max: 60 * raft.election_timeout_ticks,
            drop_per_mille: rng.range(0, 150),
            duplicate_per_mille: rng.range(0, 50),
            delay_ticks_max: rng.range(1, 4),
            // A disk as slow as an election timeout would stall elections.
            disk_ticks_max: rng.range(0, raft.election_timeout_ticks / 2),
            crash_per_mille: rng.range(0, 40),
            partition_per_mille: rng.range(0, 20),
            transfer_per_mille: rng.range(0, 10),
            proposals_per_tick_max: rng.range(1, 3),
            compact_entries: rng.range(1, raft.log_entries_max as u64 / 4),
            raft,
        }
    }
}

/// A broken invariant, with the tick it was seen at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time.
    pub tick: u64,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tick {}: {}", self.tick, self.what)
    }
}

/// What a run did, for reports and sanity checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Ticks simulated.
    pub ticks: u64,
    /// Highest committed index reached.
    pub committed: u64,
    /// Elections won.
    pub leaders: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Reads answered.
    pub reads: u64,
    /// Leader transfers started.
    pub transfers: u64,
    /// Ticks from healing to the first commit of a post-heal proposal.
    pub recovery_ticks: u64,
}

#[derive(Debug, Clone)]
enum NetMsg {
    Control(Message),
    Append(Append, Vec<(u64, u64, u64)>),
}

#[derive(Debug)]
struct InFlight {
    deliver_at: u64,
    seq: u64,
    to: usize,
    msg: NetMsg,
}

#[derive(Debug, Clone)]
enum DiskWrite {
    Hard(HardState, u64),
    /// Truncate after an index (if any), append (term, payload, bytes) from
    /// index `first`, then report `io_id` flushed.
    Log {
        truncate_after: Option<u64>,
        first: u64,
        entries: Vec<(u64, u64, u64)>,
        io_id: IoId,
    },
    Snapshot(IoId),
}

/// The log image of a node: entries after `base`.
#[derive(Debug, Clone, Default)]
struct LogImage {
    base: IoId,
    /// entries[k] is index base.index + 1 + k: (term, payload id, record bytes).
    entries: Vec<(u64, u64, u64)>,
}

impl LogImage {
    fn last_index(&self) -> u64 {
        self.base.index + self.entries.len() as u64
    }

    fn get(&self, index: u64) -> Option<(u64, u64, u64)> {
        if index <= self.base.index {
            return None;
        }
        self.entries
            .get((index - self.base.index - 1) as usize)
            .copied()
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.get(index).map(|e| e.0)
    }

    fn truncate_after(&mut self, index: u64) {
        assert!(index >= self.base.index, "truncate below the snapshot");
        self.entries.truncate((index - self.base.index) as usize);
    }

    fn write_at(&mut self, first: u64, entries: &[(u64, u64, u64)]) {
        self.truncate_after(first - 1);
        self.entries.extend_from_slice(entries);
    }

    fn purge_to(&mut self, snapshot: IoId) {
        if snapshot.index <= self.base.index {
            return;
        }
        if snapshot.index > self.last_index() || self.term_at(snapshot.index) != Some(snapshot.term)
        {
            self.entries.clear();
        } else {
            self.entries
                .drain(..(snapshot.index - self.base.index) as usize);
        }
        self.base = snapshot;
    }
}

#[derive(Debug)]
struct SimNode {
    raft: Option<RaftNode<SplitMix64>>,
    /// Volatile log: what the node has accepted (lost on crash).
    log: LogImage,
    durable_log: LogImage,
    durable_hard: HardState,
    durable_snapshot_bytes: u64,
    disk: VecDeque<(u64, DiskWrite)>,
    /// Applied payload ids, by index (1-based: applied[i - 1]).
    applied: Vec<u64>,
    restart_at: Option<u64>,
    incarnation: u64,
}

/// A simulated group.
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    rng: SplitMix64,
    seed: u64,
    now: u64,
    nodes: Vec<SimNode>,
    network: Vec<InFlight>,
    net_seq: u64,
    /// link_up[a][b]: messages from a reach b.
    link_up: Vec<Vec<bool>>,
    next_payload: u64,
    next_read: u64,
    // ----- invariant bookkeeping -----
    leader_of_term: BTreeMap<u64, usize>,
    /// (term, index) -> (payload, predecessor term)
    entries_seen: HashMap<(u64, u64), (u64, u64)>,
    /// committed[i - 1] = (term, payload) of committed index i.
    committed: Vec<(u64, u64)>,
    /// Applied payloads by index, the same for every node.
    applied: Vec<u64>,
    /// Snapshot contents by id.
    snapshots: HashMap<IoId, usize>,
    /// read id -> highest committed index when the read was asked.
    reads_pending: BTreeMap<u64, u64>,
    was_leader: Vec<(Role, u64)>,
    stats: SimStats,
    /// Print every node's state after each step (debugging a seed).
    pub trace: bool,
}

impl Sim {
    /// A group of `cfg.nodes` fresh nodes.
    pub fn new(seed: u64, cfg: SimConfig) -> Sim {
        let voters: Vec<u64> = (1..=cfg.nodes as u64).collect();
        let mut sim = Sim {
            rng: SplitMix64::new(seed),
            seed,
            now: 0,
            nodes: Vec::with_capacity(cfg.nodes),
            network: Vec::new(),
            net_seq: 0,
            link_up: vec![vec![true; cfg.nodes]; cfg.nodes],
            next_payload: 1,
            next_read: 1,
            leader_of_term: BTreeMap::new(),
            entries_seen: HashMap::new(),
            committed: Vec::new(),
            applied: Vec::new(),
            snapshots: HashMap::new(),
            reads_pending: BTreeMap::new(),
            was_leader: vec![(Role::Follower, 0); cfg.nodes],
            stats: SimStats::default(),
            trace: false,
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            let mut node = SimNode {
                raft: None,
                log: LogImage::default(),
                durable_log: LogImage::default(),
                durable_hard: HardState::default(),
                durable_snapshot_bytes: 0,
                disk: VecDeque::new(),
                applied: Vec::new(),
                restart_at: None,
                incarnation: 0,
            };
            node.raft = Some(sim.boot(i, &node, &voters));
            sim.nodes.push(node);
        }
        sim
    }

    fn boot(&self, i: usize, node: &SimNode, voters: &[u64]) -> RaftNode<SplitMix64> {
        let mut cfg = self.cfg.raft.clone();
        cfg.id = voters[i];
        cfg.voters = voters.to_vec();
        let rng = SplitMix64::new(
            self.seed
                .wrapping_mul(31)
                .wrapping_add(i as u64 * 1009 + node.incarnation),
        );
        let recovered = Recovered {
            hard_state: node.durable_hard,
            snapshot: node.durable_log.base,
            snapshot_bytes: node.durable_snapshot_bytes,
        };
        let entries = node
            .durable_log
            .entries
            .iter()
            .map(|&(term, _, bytes)| EntryMeta { term, bytes });
        RaftNode::new(cfg, rng, recovered, entries).expect("valid sim config")
    }

    fn voters(&self) -> Vec<u64> {
        (1..=self.cfg.nodes as u64).collect()
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            tick: self.now,
            what,
        }
    }

    /// Runs the faulty phase, heals, and checks liveness.
    pub fn run(&mut self) -> Result<SimStats, Violation> {
        while self.now < self.cfg.fault_ticks {
            self.step(true)?;
        }
        self.heal();
        let healed_at = self.now;
        let deadline = healed_at + self.cfg.liveness_ticks_max;
        let mut marker: Option<IoId> = None;
        loop {
            self.step(false)?;
            if self.now > deadline {
                return Err(self.violation(format!(
                    "liveness: no post-heal proposal committed within {} ticks (marker {marker:?})",
                    self.cfg.liveness_ticks_max
                )));
            }
            match marker {
                Some(id)
                    if self.committed.len() as u64 >= id.index
                        && self.committed[id.index as usize - 1].0 == id.term =>
                {
                    self.stats.recovery_ticks = self.now - healed_at;
                    break;
                }
                Some(id)
                    if self.leader_of_term.keys().next_back().copied().unwrap_or(0) > id.term =>
                {
                    // The marker's leader was replaced before committing it; try again.
                    marker = None;
                }
                _ => {}
            }
            if marker.is_none() {
                marker = self.propose_once()?;
            }
        }
        self.stats.ticks = self.now;
        self.stats.committed = self.committed.len() as u64;
        Ok(self.stats)
    }

    fn heal(&mut self) {
        for row in self.link_up.iter_mut() {
            row.iter_mut().for_each(|up| *up = true);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                self.restart(i);
            }
        }
    }

    /// One tick of the whole group.
    pub fn step(&mut self, faults: bool) -> Result<(), Violation> {
        self.now += 1;
        if faults {
            self.inject_faults();
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.restart(i);
            }
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.tick();
                self.drain(i, faults)?;
            }
        }
        self.deliver(faults)?;
        self.complete_disk(faults)?;
        if faults {
            let proposals = self.rng.range(0, self.cfg.proposals_per_tick_max + 1);
            for _ in 0..proposals {
                self.propose_once()?;
            }
            if self.rng.range(0, 4) == 0 {
                self.read_once(faults)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.apply(i)?;
            self.drain(i, faults)?;
        }
        if self.trace {
            self.print_state();
        }
        self.check()
    }

    fn print_state(&self) {
        let mut line = format!("t{:4}", self.now);
        for (i, n) in self.nodes.iter().enumerate() {
            match n.raft.as_ref() {
                None => line.push_str(&format!(" | n{} down", i + 1)),
                Some(r) => line.push_str(&format!(
                    " | n{} {:?} t{} c{} d{} last{:?} ld{:?} hs{:?}",
                    i + 1,
                    r.role(),
                    r.term(),
                    r.committed_index(),
                    r.log().durable_index(),
                    r.log().last_id(),
                    r.leader(),
                    r.hard_state_to_persist().map(|h| h.1),
                )),
            }
        }
        line.push_str(&format!(" | links {:?}", self.link_up));
        println!("{line}");
    }

    fn inject_faults(&mut self) {
        let n = self.nodes.len();
        if self.rng.range(0, 1000) < self.cfg.partition_per_mille {
            // Either heal everything or cut a random set of links.
            if self.rng.range(0, 3) == 0 {
                for row in self.link_up.iter_mut() {
                    row.iter_mut().for_each(|up| *up = true);
                }
            } else {
                let isolated = self.rng.range(0, n as u64) as usize;
                let one_way = self.rng.range(0, 4) == 0;
                for other in 0..n {
                    if other != isolated {
                        self.link_up[isolated][other] = one_way;
                        self.link_up[other][isolated] = false;
                    }
                }
            }
        }
        if self.rng.range(0, 1000) < self.cfg.crash_per_mille {
            // Leaders are the interesting victims: half the crashes hit one.
            let victim = match self.leader() {
                Some(leader) if self.rng.range(0, 2) == 0 => leader,
                _ => self.rng.range(0, n as u64) as usize,
            };
            if self.nodes[victim].raft.is_some() {
                self.crash(victim);
            }
        }
        if self.rng.range(0, 1000) < self.cfg.transfer_per_mille
            && let Some(leader) = self.leader()
        {
            let target = self.rng.range(1, n as u64 + 1);
            let raft = self.nodes[leader].raft.as_mut().expect("live");
            if raft.transfer_leadership(target).is_ok() {
                self.stats.transfers += 1;
            }
        }
        if self.rng.range(0, 1000) < self.cfg.transfer_per_mille
            && let Some(leader) = self.leader()
        {
            // The caller could not read or send the snapshot to a peer.
            let peer = self.rng.range(1, n as u64 + 1);
            self.nodes[leader]
                .raft
                .as_mut()
                .expect("live")
                .snapshot_failed(peer);
        }
    }

    fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let down_ticks = self.rng.range(1, 60);
        let node = &mut self.nodes[i];
        node.raft = None;
        node.disk.clear();
        node.log = node.durable_log.clone();
        node.restart_at = Some(self.now + down_ticks);
        self.network.retain(|m| m.to != i);
    }

    fn restart(&mut self, i: usize) {
        let voters = self.voters();
        self.nodes[i].incarnation += 1;
        self.nodes[i].restart_at = None;
        let raft = self.boot(i, &self.nodes[i], &voters);
        let node = &mut self.nodes[i];
        node.log = node.durable_log.clone();
        // The state machine is rebuilt from the snapshot, then re-applied.
        node.applied.truncate(node.durable_log.base.index as usize);
        node.raft = Some(raft);
        self.was_leader[i] = (Role::Follower, 0);
    }

    // ----- outputs of a node ---------------------------------------------

    fn disk_due(&mut self, i: usize) -> u64 {
        let delay = self.rng.range(0, self.cfg.disk_ticks_max + 1);
        let last = self.nodes[i].disk.back().map_or(0, |w| w.0);
        (self.now + delay).max(last)
    }

    fn drain(&mut self, i: usize, faults: bool) -> Result<(), Violation> {
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Ok(());
        };
        if let Some((hs, version)) = raft.hard_state_to_persist() {
            let already = self.nodes[i]
                .disk
                .iter()
                .any(|(_, w)| matches!(w, DiskWrite::Hard(_, v) if *v == version));
            if !already {
                let due = self.disk_due(i);
                self.nodes[i]
                    .disk
                    .push_back((due, DiskWrite::Hard(hs, version)));
            }
        }
        let raft = self.nodes[i].raft.as_mut().expect("live");
        if let Some(id) = raft.take_noop() {
            self.leader_write(i, id, NOOP_PAYLOAD, 0)?;
        }
        loop {
            let raft = self.nodes[i].raft.as_mut().expect("live");
            let Some(out) = raft.pop_outgoing() else {
                break;
            };
            let (to, msg) = match out {
                Outgoing::Control(m) => (m.to, NetMsg::Control(m)),
                Outgoing::Append(a) => {
                    let log = &self.nodes[i].log;
                    let entries = (a.prev.index + 1..=a.last)
                        .map(|idx| log.get(idx).expect("append of entries the leader holds"))
                        .collect();
                    (a.to, NetMsg::Append(a, entries))
                }
            };
            self.send(i, to as usize - 1, msg, faults);
        }
        while let Some(read) = self.nodes[i].raft.as_mut().expect("live").take_read() {
            if let ReadState::Ready { id, index } = read {
                let floor = self.reads_pending.remove(&id).unwrap_or(0);
                if index < floor {
                    return Err(self.violation(format!(
                        "read {id} answered at index {index} but {floor} was committed before it"
                    )));
                }
                self.stats.reads += 1;
            } else if let ReadState::Failed { id } = read {
                self.reads_pending.remove(&id);
            }
        }
        // Checked after every event, so a leader that wins and loses within
        // one tick is still seen.
        self.check_node(i)
    }

    fn send(&mut self, from: usize, to: usize, msg: NetMsg, faults: bool) {
        if !self.link_up[from][to] {
            return;
        }
        if faults && self.rng.range(0, 1000) < self.cfg.drop_per_mille {
            return;
        }
        let copies = if faults && self.rng.range(0, 1000) < self.cfg.duplicate_per_mille {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.range(1, self.cfg.delay_ticks_max + 2);
            self.net_seq += 1;
            self.network.push(InFlight {
                deliver_at: self.now + delay,
                seq: self.net_seq,
                to,
                msg: msg.clone(),
            });
        }
    }

    fn leader_write(
        &mut self,
        i: usize,
        id: IoId,
        payload: u64,
        payload_len: usize,
    ) -> Result<(), Violation> {
        let bytes = LogMeta::entry_bytes(payload_len);
        let node = &mut self.nodes[i];
        assert_eq!(
            id.index,
            node.log.last_index() + 1,
            "leader writes at the end"
        );
        let entry = (id.term, payload, bytes);
        node.log.write_at(id.index, &[entry]);
        let prev_term = node.log.term_at(id.index - 1).expect("predecessor");
        self.record_entry(id.term, id.index, payload, prev_term)?;
        let due = self.disk_due(i);
        self.nodes[i].disk.push_back((
            due,
            DiskWrite::Log {
                truncate_after: None,
                first: id.index,
                entries: vec![entry],
                io_id: id,
            },
        ));
        Ok(())
    }

    fn record_entry(
        &mut self,
        term: u64,
        index: u64,
        payload: u64,
        prev_term: u64,
    ) -> Result<(), Violation> {
        match self.entries_seen.get(&(term, index)) {
            Some(&seen) if seen != (payload, prev_term) => Err(self.violation(format!(
                "log matching: entry {term}-{index} is (payload {payload}, prev term {prev_term}) \
                 here but {seen:?} elsewhere"
            ))),
            Some(_) => Ok(()),
            None => {
                self.entries_seen
                    .insert((term, index), (payload, prev_term));
                Ok(())
            }
        }
    }

    // ----- network -------------------------------------------------------

    fn deliver(&mut self, faults: bool) -> Result<(), Violation> {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut k = 0;
        while k < self.network.len() {
            if self.network[k].deliver_at <= now {
                due.push(self.network.swap_remove(k));
            } else {
                k += 1;
            }
        }
        due.sort_by_key(|m| (m.deliver_at, m.seq));
        for m in due {
            if self.nodes[m.to].raft.is_none() {
                continue;
            }
            match m.msg {
                NetMsg::Control(msg) => self.deliver_control(m.to, msg)?,
                NetMsg::Append(a, entries) => self.deliver_append(m.to, a, entries)?,
            }
            self.drain(m.to, faults)?;
        }
        Ok(())
    }

    fn deliver_control(&mut self, i: usize, msg: Message) -> Result<(), Violation> {
        let raft = self.nodes[i].raft.as_mut().expect("live");
        if let StepOutcome::StoreSnapshotChunk {
            snapshot,
            complete: true,
            ..
        } = raft.step(msg)
        {
            if !self.snapshots.contains_key(&snapshot) {
                return Err(self.violation(format!("snapshot {snapshot} received but never built")));
            }
            let due = self.disk_due(i);
            self.nodes[i]
                .disk
                .push_back((due, DiskWrite::Snapshot(snapshot)));
        }
        Ok(())
    }

    fn deliver_append(
        &mut self,
        i: usize,
        a: Append,
        entries: Vec<(u64, u64, u64)>,
    ) -> Result<(), Violation> {
        let raft = self.nodes[i].raft.as_mut().expect("live");
        let metas = entries
            .iter()
            .map(|&(term, _, bytes)| EntryMeta { term, bytes });
        let outcome = raft.step_append(&a, metas);
        if let AppendOutcome::Write {
            truncate_after,
            first,
            last,
            io_id,
        } = outcome
        {
            let from = (first - a.prev.index - 1) as usize;
            let to = (last - a.prev.index) as usize;
            let written: Vec<_> = entries[from..to].to_vec();
            let node = &mut self.nodes[i];
            if let Some(t) = truncate_after {
                node.log.truncate_after(t);
            }
            assert_eq!(
                node.log.last_index() + 1,
                first,
                "follower writes at its end"
            );
            node.log.write_at(first, &written);
            for (k, &(term, payload, _)) in written.iter().enumerate() {
                let index = first + k as u64;
                let prev_term = self.nodes[i].log.term_at(index - 1).expect("predecessor");
                self.record_entry(term, index, payload, prev_term)?;
            }
            let due = self.disk_due(i);
            self.nodes[i].disk.push_back((
                due,
                DiskWrite::Log {
                    truncate_after,
                    first,
                    entries: written,
                    io_id,
                },
            ));
        }
        Ok(())
    }

    // ----- disk ----------------------------------------------------------

    fn complete_disk(&mut self, faults: bool) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            while self.nodes[i].disk.front().is_some_and(|w| w.0 <= self.now) {
                let (_, write) = self.nodes[i].disk.pop_front().expect("front");
                if self.nodes[i].raft.is_none() {
                    break;
                }
                self.complete_write(i, write);
                self.drain(i, faults)?;
            }
        }
        Ok(())
    }

    fn complete_write(&mut self, i: usize, write: DiskWrite) {
        let node = &mut self.nodes[i];
        let raft = node.raft.as_mut().expect("live");
        match write {
            DiskWrite::Hard(hs, version) => {
                node.durable_hard = hs;
                raft.hard_state_persisted(version);
            }
            DiskWrite::Log {
                truncate_after,
                first,
                entries,
                io_id,
            } => {
                let d = &mut node.durable_log;
                if first > d.base.index {
                    if let Some(t) = truncate_after {
                        d.truncate_after(t.max(d.base.index));
                    }
                    d.write_at(first, &entries);
                } else {
                    // The write was overtaken by a snapshot that covers it.
                    let skip = (d.base.index + 1 - first) as usize;
                    if skip < entries.len() {
                        d.write_at(d.base.index + 1, &entries[skip..]);
                    }
                }
                raft.flushed(io_id);
            }
            DiskWrite::Snapshot(snapshot) => {
                let length = self.snapshots[&snapshot];
                raft.snapshot_installed(snapshot, length as u64 * 8);
                if raft.log().snapshot() == snapshot {
                    node.durable_log.purge_to(snapshot);
                    node.log.purge_to(snapshot);
                    node.durable_snapshot_bytes = length as u64 * 8;
                    node.applied = self.applied[..length].to_vec();
                    self.stats.snapshots_installed += 1;
                }
            }
        }
    }

    // ----- clients -------------------------------------------------------

    fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = n.raft.as_ref()
                && r.role() == Role::Leader
                && best.is_none_or(|b| r.term() > b.0)
            {
                best = Some((r.term(), i));
            }
        }
        best.map(|b| b.1)
    }

    /// Proposes at the newest leader, or (one time in four) at any node
    /// that believes it leads: stale leaders write entries that must be
    /// truncated later, the paths where Raft is easiest to get wrong.
    fn propose_once(&mut self) -> Result<Option<IoId>, Violation> {
        let target = if self.rng.range(0, 4) == 0 {
            Some(self.rng.range(0, self.nodes.len() as u64) as usize)
        } else {
            self.leader()
        };
        let Some(i) = target else {
            return Ok(None);
        };
        let len = self.rng.range(0, 120) as usize;
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Ok(None);
        };
        let Ok(id) = raft.propose(len) else {
            return Ok(None);
        };
        let payload = self.next_payload;
        self.next_payload += 1;
        self.leader_write(i, id, payload, len)?;
        Ok(Some(id))
    }

    /// Asks a random node for a linearizable read: only a leader that is
    /// still the leader may answer it, at an index no older than any commit.
    fn read_once(&mut self, faults: bool) -> Result<(), Violation> {
        let i = self.rng.range(0, self.nodes.len() as u64) as usize;
        let id = self.next_read;
        self.next_read += 1;
        let floor = self.committed.len() as u64;
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Ok(());
        };
        if raft.read_index(id).is_ok() {
            self.reads_pending.insert(id, floor);
        }
        self.drain(i, faults)
    }

    // ----- state machine -------------------------------------------------

    fn apply(&mut self, i: usize) -> Result<(), Violation> {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return Ok(());
        };
        let commit = raft.committed_index();
        // Record what this node says is committed: it must never change.
        let node = &self.nodes[i];
        for index in (node.log.base.index + 1)..=commit {
            let (term, payload, _) = node.log.get(index).expect("committed entry in the log");
            match self.committed.get(index as usize - 1) {
                Some(&known) if known != (term, payload) => {
                    return Err(self.violation(format!(
                        "committed entry {index} is {known:?} but node {} holds {:?}",
                        i + 1,
                        (term, payload)
                    )));
                }
                Some(_) => {}
                None if index == self.committed.len() as u64 + 1 => {
                    self.committed.push((term, payload));
                }
                None => {
                    return Err(self.violation(format!(
                        "node {} committed {index} past the known commit {} without the entries between",
                        i + 1,
                        self.committed.len()
                    )));
                }
            }
        }
        // As the shard runtime does: committed entries apply even before
        // this node's own write of them is durable.
        let to = commit;
        let node = &mut self.nodes[i];
        let mut applied_now = None;
        while (node.applied.len() as u64) < to {
            let index = node.applied.len() as u64 + 1;
            let (term, payload, _) = node.log.get(index).expect("entry to apply in the log");
            node.applied.push(payload);
            applied_now = Some(IoId::new(term, index));
            if index as usize > self.applied.len() {
                self.applied.push(payload);
            } else if self.applied[index as usize - 1] != payload {
                return Err(Violation {
                    tick: self.now,
                    what: format!(
                        "applied sequences diverge at {index}: node {} applied {payload}, another {}",
                        i + 1,
                        self.applied[index as usize - 1]
                    ),
                });
            }
        }
        if let Some(id) = applied_now {
            self.nodes[i].raft.as_mut().expect("live").applied(id);
        }
        self.maybe_compact(i);
        Ok(())
    }

    fn maybe_compact(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let applied = node.applied.len() as u64;
        let durable = node.raft.as_ref().expect("live").log().durable_index();
        // A snapshot covers only entries durable here: the purge after it
        // must not drop the only copy of a write still in flight.
        if applied < node.log.base.index + self.cfg.compact_entries || applied > durable {
            return;
        }
        let term = node.log.term_at(applied).expect("applied entry in the log");
        let snapshot = IoId::new(term, applied);
        // The snapshot is the applied sequence; its bytes are 8 per entry.
        self.snapshots.insert(snapshot, applied as usize);
        let raft = node.raft.as_mut().expect("live");
        raft.compacted(snapshot, applied * 8)
            .expect("compacting applied entries");
        node.durable_log.purge_to(snapshot);
        node.log.purge_to(snapshot);
        node.durable_snapshot_bytes = applied * 8;
    }

    // ----- invariants ----------------------------------------------------

    fn check(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            self.check_node(i)?;
        }
        Ok(())
    }

    /// Checks one node after anything happened to it: leadership, leader
    /// completeness, and that the core's log metadata matches the log image.
    fn check_node(&mut self, i: usize) -> Result<(), Violation> {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return Ok(());
        };
        let (role, term) = (raft.role(), raft.term());
        if role == Role::Leader {
            match self.leader_of_term.get(&term) {
                Some(&other) if other != i => {
                    return Err(self.violation(format!(
                        "two leaders in term {term}: nodes {} and {}",
                        other + 1,
                        i + 1
                    )));
                }
                Some(_) => {}
                None => {
                    self.leader_of_term.insert(term, i);
                    self.stats.leaders += 1;
                }
            }
            if self.was_leader[i] != (Role::Leader, term) {
                self.check_leader_completeness(i, term)?;
            }
        }
        self.was_leader[i] = (role, term);
        let raft = self.nodes[i].raft.as_ref().expect("live");
        // The core's metadata and the node's log image agree.
        let log = &self.nodes[i].log;
        if raft.log().last_index() != log.last_index()
            || raft.log().term_at(log.last_index()) != log.term_at(log.last_index())
        {
            return Err(self.violation(format!(
                "node {} core log ends at {:?}, image at {}",
                i + 1,
                raft.log().last_id(),
                log.last_index()
            )));
        }
        Ok(())
    }

    fn check_leader_completeness(&self, i: usize, term: u64) -> Result<(), Violation> {
        let log = &self.nodes[i].log;
        for (k, &(t, payload)) in self.committed.iter().enumerate() {
            let index = k as u64 + 1;
            if index <= log.base.index {
                continue;
            }
            match log.get(index) {
                Some((lt, lp, _)) if (lt, lp) == (t, payload) => {}
                other => {
                    return Err(self.violation(format!(
                        "leader completeness: node {} leads term {term} without committed \
                         entry {index} ({t}, {payload}); it holds {other:?}",
                        i + 1
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Runs one seed with the configuration drawn from it.
pub fn run_seed(seed: u64) -> Result<SimStats, Violation> {
    Sim::new(seed, SimConfig::from_seed(seed)).run()
}

/// Runs one seed printing every node's state after each tick.
pub fn trace_seed(seed: u64) -> Result<SimStats, Violation> {
    let cfg = SimConfig::from_seed(seed);
    println!("{cfg:?}");
    let mut sim = Sim::new(seed, cfg);
    sim.trace = true;
    sim.run()
}
