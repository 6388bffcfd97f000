//! The deterministic cluster simulator over many seeds.
//!
//! `SIM_SEEDS=N SIM_SEED_START=S cargo test --release -p ringraft-engine --test sim`
//! runs seeds S..S+N (default: 2,000 seeds from 0). A failing seed prints the
//! one command that replays it; add `SIM_TRACE=1` to print every node's
//! state after each tick.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ringraft_engine::sim::{SimStats, run_seed, trace_seed};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn repro(seed: u64) -> String {
    format!(
        "SIM_SEEDS=1 SIM_SEED_START={seed} cargo test --release -p ringraft-engine --test sim -- --nocapture"
    )
}

#[test]
fn simulated_clusters_keep_every_invariant() {
    let seeds = env_u64("SIM_SEEDS", 2_000);
    let start = env_u64("SIM_SEED_START", 0);
    let mut total = SimStats::default();
    let mut failures = Vec::new();
    for seed in start..start + seeds {
        let trace = std::env::var_os("SIM_TRACE").is_some();
        let run = |seed| {
            if trace {
                trace_seed(seed)
            } else {
                run_seed(seed)
            }
        };
        match catch_unwind(AssertUnwindSafe(|| run(seed))) {
            Ok(Ok(stats)) => {
                total.ticks += stats.ticks;
                total.committed += stats.committed;
                total.leaders += stats.leaders;
                total.crashes += stats.crashes;
                total.snapshots_installed += stats.snapshots_installed;
                total.reads += stats.reads;
                total.transfers += stats.transfers;
                total.recovery_ticks = total.recovery_ticks.max(stats.recovery_ticks);
            }
            Ok(Err(violation)) => {
                eprintln!(
                    "seed {seed} FAILED: {violation}\n  reproduce: {}",
                    repro(seed)
                );
                failures.push(seed);
            }
            Err(_) => {
                eprintln!(
                    "seed {seed} PANICKED (message above)\n  reproduce: {}",
                    repro(seed)
                );
                failures.push(seed);
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    eprintln!(
        "seeds {start}..{}: {} failed; totals: {total:?} (recovery_ticks = worst)",
        start + seeds,
        failures.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    // The runs must have exercised the protocol, not idled.
    assert!(total.committed > seeds * 10, "too few commits: {total:?}");
    assert!(total.leaders >= seeds, "too few elections: {total:?}");
}
