//! The Raft core alone: a 3-node group in memory, no IO (writes flush at
//! once, messages are delivered at once). Reports committed entries per
//! second with 1 and 64 concurrent proposers, each proposing its next entry
//! only when its previous one committed. Compare with openraft's in-memory
//! cluster benchmark.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringraft_engine::raft::{
    Config, EntryMeta, IoId, Outgoing, RaftNode, Recovered, Role, SplitMix64, StepOutcome,
};

const VOTERS: u64 = 3;
const PAYLOAD_BYTES: usize = 64;
/// Applied entries kept before the log metadata is purged.
const COMPACT_EVERY_ENTRIES: u64 = 4096;

struct Cluster {
    nodes: Vec<RaftNode<SplitMix64>>,
    /// Reused between rounds: the messages one node released.
    outgoing: Vec<Outgoing>,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<u64> = (1..=VOTERS).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut cfg = Config::new(id, &voters);
                cfg.inflight_msgs_max = 64;
                cfg.log_entries_max = 1 << 16;
                cfg.uncommitted_entries_max = 1 << 12;
                RaftNode::new(cfg, SplitMix64::new(id), Recovered::default(), [])
                    .expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            outgoing: Vec::with_capacity(1024),
        };
        while cluster.nodes[0].role() != Role::Leader {
            cluster.nodes[0].tick();
            cluster.round();
        }
        // Write the leader's empty entry and let it commit.
        while cluster.round() {}
        cluster
    }

    /// Persists, flushes and delivers everything once; returns whether any
    /// message moved.
    fn round(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if let Some((_, version)) = n.hard_state_to_persist() {
                n.hard_state_persisted(version);
            }
            n.take_noop();
            let accepted = n.log().accepted();
            n.flushed(accepted);
            self.outgoing.clear();
            while let Some(out) = self.nodes[i].pop_outgoing() {
                self.outgoing.push(out);
            }
            moved |= !self.outgoing.is_empty();
            for k in 0..self.outgoing.len() {
                self.deliver(i, self.outgoing[k]);
            }
            self.maybe_compact(i);
        }
        moved
    }

    fn deliver(&mut self, from: usize, out: Outgoing) {
        match out {
            Outgoing::Control(m) => {
                let to = m.to as usize - 1;
                if let StepOutcome::StoreSnapshotChunk { .. } = self.nodes[to].step(m) {
                    unreachable!("no follower falls behind the purged log here");
                }
            }
            Outgoing::Append(a) => {
                let to = a.to as usize - 1;
                let (leader, follower) = if from < to {
                    let (l, r) = self.nodes.split_at_mut(to);
                    (&l[from], &mut r[0])
                } else {
                    let (l, r) = self.nodes.split_at_mut(from);
                    (&r[0], &mut l[to])
                };
                let log = leader.log();
                let metas = (a.prev.index + 1..=a.last).map(|i| EntryMeta {
                    term: log.term_at(i).expect("entry sent"),
                    bytes: log.bytes_between(i, i),
                });
                follower.step_append(&a, metas);
            }
        }
    }

    fn maybe_compact(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let commit = n.committed_index();
        let durable = n.log().durable_index();
        let apply_to = commit.min(durable);
        if apply_to == 0 {
            return;
        }
        let term = n.log().term_at(apply_to).expect("applied entry");
        n.applied(IoId::new(term, apply_to));
        if apply_to >= n.log().snapshot().index + COMPACT_EVERY_ENTRIES {
            n.compacted(IoId::new(term, apply_to), 0)
                .expect("compact applied entries");
        }
    }

    /// Runs until `entries` proposals committed, keeping `proposers`
    /// proposals in flight.
    fn run(&mut self, entries: u64, proposers: u64) -> Duration {
        let start = Instant::now();
        let base = self.nodes[0].committed_index();
        let mut proposed = 0u64;
        let mut committed = 0u64;
        while committed < entries {
            while proposed - committed < proposers && proposed < entries {
                self.nodes[0]
                    .propose(PAYLOAD_BYTES)
                    .expect("leader accepts");
                proposed += 1;
            }
            self.round();
            // Every committed entry past the base is one of ours (the leader's
            // empty entry was committed during election).
            committed = self.nodes[0].committed_index() - base;
        }
        start.elapsed()
    }
}

fn raft_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_core_3_nodes");
    group.throughput(Throughput::Elements(1));
    for proposers in [1u64, 64] {
        group.bench_function(format!("commit/{proposers}_proposers"), |b| {
            b.iter_custom(|iters| {
                let mut cluster = Cluster::new();
                cluster.run(iters, proposers)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, raft_core);
criterion_main!(benches);
