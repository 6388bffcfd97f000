//! What the cluster costs while the load runs: the nodes' resident memory
//! (`rss_bytes_max`) and, for an in-process cluster, heap allocations per
//! acknowledged request after warm-up (`heap_allocs_per_op`).

use std::time::Duration;

use ringraft_engine::shard::budget::rss_bytes_of;

use crate::alloc_count;

/// Fraction of the run treated as warm-up: allocations before it (buffers
/// sized at start-up, connections being accepted) are not counted.
const WARMUP_FRACTION: f64 = 0.2;

/// Whose memory is sampled.
#[derive(Debug, Clone)]
pub enum Watched {
    /// Nothing (a `--target` cluster on other machines).
    Nothing,
    /// Node processes by pid.
    Processes(Vec<u32>),
    /// This process (the cluster runs in it); allocations are counted.
    ThisProcess,
}

/// Samples taken from the load generator's progress callback.
#[derive(Debug)]
pub struct Sampler {
    watched: Watched,
    rss_bytes_max: Option<u64>,
    /// (allocations, ops) when the warm-up ended.
    warm: Option<(u64, u64)>,
    warmup: Duration,
    /// (allocations, ops) at the last sample after warm-up.
    last: Option<(u64, u64)>,
}

impl Sampler {
    /// A sampler for a run of `duration`.
    pub fn new(watched: Watched, duration: Duration) -> Sampler {
        if matches!(watched, Watched::ThisProcess) {
            alloc_count::enable();
        }
        Sampler {
            watched,
            rss_bytes_max: None,
            warm: None,
            warmup: duration.mul_f64(WARMUP_FRACTION),
            last: None,
        }
    }

    /// One sample, `elapsed` into the run with `ops` acknowledged so far.
    pub fn sample(&mut self, elapsed: Duration, ops: u64) {
        let rss = match &self.watched {
            Watched::Nothing => None,
            Watched::Processes(pids) => pids
                .iter()
                .filter_map(|pid| rss_bytes_of(&pid.to_string()))
                .max(),
            Watched::ThisProcess => rss_bytes_of("self"),
        };
        if let Some(bytes) = rss {
            self.rss_bytes_max = Some(self.rss_bytes_max.map_or(bytes, |m| m.max(bytes)));
        }
        if matches!(self.watched, Watched::ThisProcess) && elapsed >= self.warmup {
            let now = (alloc_count::allocations(), ops);
            self.warm.get_or_insert(now);
            self.last = Some(now);
        }
    }

    /// Largest resident set seen of one node (one process: every node).
    pub fn rss_bytes_max(&self) -> Option<u64> {
        self.rss_bytes_max
    }

    /// Whose resident set `rss_bytes_max` is.
    pub fn rss_scope(&self) -> &'static str {
        match self.watched {
            Watched::ThisProcess => "this process: every node and the load generator",
            _ => "the largest node process",
        }
    }

    /// Heap allocations per acknowledged request between the end of the
    /// warm-up and the last sample; None unless the cluster is in-process
    /// and requests completed in that window.
    pub fn heap_allocs_per_op(&self) -> Option<f64> {
        let ((a0, o0), (a1, o1)) = (self.warm?, self.last?);
        (o1 > o0).then(|| (a1 - a0) as f64 / (o1 - o0) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_set_and_counts_allocations_after_warm_up() {
        let mut sampler = Sampler::new(Watched::ThisProcess, Duration::from_secs(10));
        sampler.sample(Duration::from_secs(1), 10);
        assert_eq!(sampler.heap_allocs_per_op(), None, "still warming up");
        sampler.sample(Duration::from_secs(3), 100);
        let kept: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; 16 + i]).collect();
        sampler.sample(Duration::from_secs(9), 200);
        drop(kept);
        let per_op = sampler
            .heap_allocs_per_op()
            .expect("a window with requests");
        // 1000 vectors over 100 requests, plus whatever else ran meanwhile.
        assert!(per_op >= 10.0, "{per_op}");
        let rss = sampler.rss_bytes_max().expect("/proc/self/statm");
        assert!(rss > 1 << 20, "{rss}");
    }

    #[test]
    fn a_process_that_does_not_exist_has_no_figure() {
        let mut sampler = Sampler::new(Watched::Processes(vec![u32::MAX]), Duration::ZERO);
        sampler.sample(Duration::from_secs(1), 1);
        assert_eq!(sampler.rss_bytes_max(), None);
        assert_eq!(sampler.heap_allocs_per_op(), None);
    }
}
