//! What `ringraft bench` tells the user: a text summary, `--json PATH` and
//! `--plot PATH.svg` (latency percentile curve and throughput over time).

use std::path::Path;

use plotters::prelude::*;
use serde_json::json;

use super::BenchError;
use super::loadgen::Outcome;

/// Percentiles reported, with their JSON key.
const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)];
/// Points of the percentile curve.
const CURVE_POINTS: usize = 200;
/// Deepest percentile plotted: 1 − 10^−5 (99.999%).
const CURVE_NINES_MAX: f64 = 5.0;

/// The run's figures as printed and written.
#[derive(Debug)]
pub struct Summary<'a> {
    /// What was measured (e.g. "local 3-node cluster" or an address).
    pub target: String,
    /// Workload name.
    pub workload: &'static str,
    /// `--durability` of a local cluster; None for `--target` (unknown).
    pub durability: Option<&'static str>,
    /// Clients.
    pub clients: usize,
    /// Open-loop rate, if any.
    pub rate_per_sec: Option<f64>,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Term increases across groups during the run; None when the target
    /// does not report Raft terms.
    pub elections: Option<u64>,
    /// Largest resident set of one node during the run; None when the
    /// nodes are not local processes.
    pub rss_bytes_max: Option<u64>,
    /// Whose memory `rss_bytes_max` measured.
    pub rss_scope: &'static str,
    /// Heap allocations per acknowledged request after warm-up; None
    /// unless the cluster runs in this process.
    pub heap_allocs_per_op: Option<f64>,
    /// The generator's observations.
    pub outcome: &'a Outcome,
}

impl Summary<'_> {
    /// Successful requests per second over the run.
    pub fn ops_per_sec(&self) -> f64 {
        self.outcome.ops as f64 / self.outcome.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, q: f64) -> u64 {
        self.outcome.latency_us.value_at_percentile(q)
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let o = self.outcome;
        let mode = match self.rate_per_sec {
            Some(rate) => format!("open loop at {rate} ops/s, {} clients", self.clients),
            None => format!("closed loop, {} clients", self.clients),
        };
        let mut text = format!(
            "target      {}\nworkload    {} ({} B payload), {mode}, {:.1} s\n",
            self.target,
            self.workload,
            self.payload_bytes,
            o.elapsed.as_secs_f64()
        );
        text += &format!(
            "throughput  {:.0} ops/s ({} ops)\n",
            self.ops_per_sec(),
            o.ops
        );
        text += "latency     ";
        for (name, q) in PERCENTILES {
            text += &format!("{name} {} µs  ", self.percentile_us(q));
        }
        text += &format!("max {} µs\n", o.latency_us.max());
        text += &format!("errors      {}", o.error_count());
        if !o.errors.is_empty() {
            let kinds: Vec<String> = o.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            text += &format!(" ({})", kinds.join(", "));
        }
        text += &format!("\nredirects   {} (-MOVED followed)\n", o.redirects);
        if self.workload == "get" {
            text += &format!(
                "misses      {} (null replies: the key was not there)\n",
                o.nulls
            );
        }
        match self.elections {
            Some(n) => text += &format!("elections   {n} (Raft term increases, all groups)\n"),
            None => {
                text +=
                    "elections   unknown (the target's INFO replication reports no Raft terms)\n"
            }
        }
        if let Some(rss) = self.rss_bytes_max {
            text += &format!(
                "memory      {:.1} MiB resident at most ({})\n",
                rss as f64 / (1u64 << 20) as f64,
                self.rss_scope
            );
        }
        if let Some(per_op) = self.heap_allocs_per_op {
            text += &format!("heap allocs {per_op:.3} per request after warm-up (every node)\n");
        }
        if o.unsent > 0 {
            text += &format!(
                "unsent      {} requests were due but every client was still busy at the end\n",
                o.unsent
            );
        }
        text
    }

    /// The JSON document of `--json`.
    pub fn json(&self) -> serde_json::Value {
        let o = self.outcome;
        let mut latency = serde_json::Map::new();
        for (name, q) in PERCENTILES {
            latency.insert(name.into(), json!(self.percentile_us(q)));
        }
        latency.insert("max".into(), json!(o.latency_us.max()));
        let by_kind: serde_json::Map<String, serde_json::Value> = o
            .errors
            .iter()
            .map(|(kind, n)| (kind.clone(), json!(n)))
            .collect();
        json!({
            "ops_per_sec": self.ops_per_sec(),
            "latency_us": latency,
            "elections": self.elections,
            "rss_bytes_max": self.rss_bytes_max,
            "rss_scope": self.rss_bytes_max.map(|_| self.rss_scope),
            "heap_allocs_per_op": self.heap_allocs_per_op,
            "errors": o.error_count(),
            "errors_by_kind": by_kind,
            "ops": o.ops,
            "duration_s": o.elapsed.as_secs_f64(),
            "redirects": o.redirects,
            "nulls": o.nulls,
            "unsent": o.unsent,
            "clients": self.clients,
            "rate_per_sec": self.rate_per_sec,
            "payload_bytes": self.payload_bytes,
            "workload": self.workload,
            "durability": self.durability,
            "target": self.target,
        })
    }

    /// Writes `--json PATH`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(&self.json()).expect("plain JSON values");
        std::fs::write(path, text + "\n")?;
        Ok(())
    }

    /// Writes `--plot PATH.svg`: on the left the latency by percentile
    /// (x = number of nines, so the tail is visible), on the right
    /// throughput per timeline bucket.
    pub fn write_plot(&self, path: &Path) -> Result<(), BenchError> {
        let plot_error =
            |error: String| BenchError::Config(format!("plot {}: {error}", path.display()));
        let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
        let (left, right) = root.split_horizontally(600);
        self.draw_percentiles(&left)
            .map_err(|e| plot_error(e.to_string()))?;
        self.draw_timeline(&right)
            .map_err(|e| plot_error(e.to_string()))?;
        root.present().map_err(|e| plot_error(e.to_string()))?;
        Ok(())
    }

    fn draw_percentiles<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let histogram = &self.outcome.latency_us;
        // x = nines: percentile q = 100·(1 − 10^−x).
        let points: Vec<(f64, f64)> = (0..=CURVE_POINTS)
            .map(|i| {
                let nines = CURVE_NINES_MAX * i as f64 / CURVE_POINTS as f64;
                let q = 100.0 * (1.0 - 10f64.powf(-nines));
                (nines, histogram.value_at_percentile(q) as f64 / 1000.0)
            })
            .collect();
        let y_max = (histogram.max() as f64 / 1000.0).max(0.001) * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption("latency by percentile", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..CURVE_NINES_MAX, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("percentile (%)")
            .y_desc("latency (ms)")
            .x_labels(CURVE_NINES_MAX as usize + 1)
            .x_label_formatter(&|nines| {
                // 0 → "0", 1 → "90", 2 → "99", 3 → "99.9", ...
                let decimals = (nines.round() as usize).saturating_sub(2);
                format!("{:.*}", decimals, 100.0 * (1.0 - 10f64.powf(-nines)))
            })
            .draw()?;
        chart.draw_series(LineSeries::new(points, &BLUE))?;
        Ok(())
    }

    fn draw_timeline<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let o = self.outcome;
        let bucket_s = o.timeline_bucket.as_secs_f64();
        let points: Vec<(f64, f64)> = o
            .timeline
            .iter()
            .enumerate()
            .map(|(i, &count)| (i as f64 * bucket_s, count as f64 / bucket_s))
            .collect();
        let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let x_max = (o.timeline.len() as f64 * bucket_s).max(bucket_s);
        let mut chart = ChartBuilder::on(area)
            .caption("throughput over time", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("ops/s")
            .draw()?;
        chart.draw_series(LineSeries::new(points, &RED))?;
        Ok(())
    }
}
