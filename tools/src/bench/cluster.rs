//! `ringraft bench` (no subcommand): the cluster benchmark.
//!
//! Without `--target` it starts a local durable cluster of `--nodes`
//! `ringraft serve` processes in a temporary directory under /var/tmp
//! (O_DIRECT needs a real file system), waits until every group has a
//! leader, runs the load, stops the nodes and removes the directory. With
//! `--target HOST:PORT` it drives an existing ringraft cluster or any Redis
//! server (cluster mode or not).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::BenchError;
use super::embedded::EmbeddedCluster;
use super::loadgen::{self, LoadConfig, Outcome, Workload};
use super::local_cluster::{ClusterSpec, LocalCluster, Logs, machine_cores};
use super::report::Summary;
use super::resources::{Sampler, Watched};
use super::topology::{SlotTable, elections_between, group_terms, resolve};
use crate::alloc_count;
use crate::serve::Durability;

/// How long a fresh local cluster may take to elect every group's leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the leader layout must hold before the run starts.
const SETTLE: Duration = Duration::from_secs(1);
/// How long nodes get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// An existing cluster or Redis server; without it a local cluster is
    /// started.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Nodes of the local cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Shards (Raft groups) per node of the local cluster; default: the
    /// machine's cores divided among the nodes (at least 1), as the nodes
    /// share this machine.
    #[arg(long)]
    shards: Option<u16>,
    /// Concurrent clients, one request in flight each.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Value bytes per request.
    #[arg(long, default_value_t = 128)]
    payload_bytes: usize,
    /// How long to issue requests ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    duration: Duration,
    /// The command each request is.
    #[arg(long, value_enum, default_value = "set")]
    workload: Workload,
    /// Durability of the local cluster (`serve --durability`).
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
    /// Open loop at this many requests per second, latency measured from
    /// each request's intended send time; default: closed loop.
    #[arg(long, value_name = "OPS_PER_SEC")]
    rate: Option<f64>,
    /// Distinct keys (`key:0`..), spread over every hash slot.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// First client port of the local cluster (peers use base + 1000..);
    /// below Linux's ephemeral range (32768-60999), so that no outgoing
    /// connection holds one of them.
    #[arg(long, default_value_t = 21001)]
    base_port: u16,
    /// With --target: do not read CLUSTER SLOTS; start with every slot on
    /// the target and learn the cluster from -MOVED replies alone (checks a
    /// server's redirects).
    #[arg(long, requires = "target")]
    no_slot_map: bool,
    /// Run the local cluster's nodes inside this process instead of as
    /// `ringraft serve` processes; heap allocations of the nodes are then
    /// counted (`heap_allocs_per_op`).
    #[arg(long, conflicts_with = "target")]
    in_process: bool,
    /// One more `ringraft serve` argument for every node of the local
    /// cluster (repeat it for several: `--serve-arg=--no-pin`).
    #[arg(
        long,
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "target"
    )]
    serve_arg: Vec<String>,
    /// Write the figures as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Draw the latency percentile curve and throughput over time (SVG).
    #[arg(long, value_name = "PATH.svg")]
    plot: Option<PathBuf>,
}

pub fn run(args: ClusterBenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ringraft bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &ClusterBenchArgs) -> Result<ExitCode, BenchError> {
    let config = LoadConfig {
        clients: args.clients,
        rate_per_sec: args.rate,
        duration: args.duration,
        workload: args.workload,
        payload_bytes: args.payload_bytes,
        keys: args.keys,
        each_key_once: false,
    };
    match &args.target {
        Some(target) => {
            let addr = resolve(target)?;
            let table = if args.no_slot_map {
                SlotTable::single(addr).without_refresh()
            } else {
                SlotTable::discover(addr)?
            };
            measure(args, &config, target.clone(), table, Nodes::Remote)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("ringraft-bench-")
                .tempdir_in("/var/tmp")?;
            let spec = ClusterSpec {
                nodes: args.nodes,
                shards: Some(args.shards.unwrap_or_else(|| local_shards(args.nodes))),
                data_dir: dir.path().to_path_buf(),
                base_port: args.base_port,
                cluster_id: u64::from(std::process::id()),
                extra_args: match args.durability {
                    Durability::Fsync => Vec::new(),
                    Durability::None => vec!["--durability".into(), "none".into()],
                }
                .into_iter()
                .chain(args.serve_arg.iter().cloned())
                .collect(),
                logs: Logs::Files,
                cores: machine_cores(),
            };
            spec.check_ports_free()?;
            let mode = if args.in_process {
                "in this process"
            } else {
                "as processes"
            };
            eprintln!(
                "starting {} nodes {mode} in {} (client ports {}..)",
                spec.nodes,
                dir.path().display(),
                spec.base_port
            );
            let describe = |addrs: &[std::net::SocketAddr]| {
                format!(
                    "local {}-node cluster {mode} ({}, {} durability)",
                    spec.nodes,
                    addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    args.durability.name()
                )
            };
            let measure_local = |nodes: Nodes<'_>, addrs: Vec<std::net::SocketAddr>| {
                let table = SlotTable::discover(addrs[0])?;
                measure(args, &config, describe(&addrs), table, nodes)
            };
            let code = if args.in_process {
                let cluster = EmbeddedCluster::start(&spec)?;
                cluster.wait_ready(READY_TIMEOUT, SETTLE)?;
                let code = measure_local(Nodes::Embedded(&cluster), cluster.client_addrs())?;
                cluster.stop()?;
                code
            } else {
                let mut cluster = LocalCluster::start(&spec)?;
                cluster.wait_ready(READY_TIMEOUT, SETTLE)?;
                let addrs = cluster.client_addrs();
                let code = measure_local(Nodes::Processes(&mut cluster), addrs)?;
                cluster.stop(libc::SIGTERM, STOP_GRACE);
                code
            };
            dir.close()?;
            Ok(code)
        }
    }
}

/// How long the GET workload's prefill may take.
const PREFILL_TIMEOUT: Duration = Duration::from_secs(600);

/// Before a GET run: sets every key once (the run's payload), so the
/// reads find values. Not measured; errors are reported and fail the bench,
/// as a read of a key the prefill missed would measure a miss.
fn prefill(config: &LoadConfig, table: SlotTable) -> Result<(), BenchError> {
    let started = Instant::now();
    eprintln!("prefill     SET of each of the {} keys ...", config.keys);
    let prefill = LoadConfig {
        rate_per_sec: None,
        duration: PREFILL_TIMEOUT,
        workload: Workload::Set,
        each_key_once: true,
        ..config.clone()
    };
    let outcome = loadgen::run(&prefill, table, &mut |_, _| {})?;
    if outcome.ops != config.keys {
        return Err(BenchError::Cluster(format!(
            "prefill set {} of {} keys ({} errors: {:?})",
            outcome.ops,
            config.keys,
            outcome.error_count(),
            outcome.errors
        )));
    }
    eprintln!(
        "prefill     done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The cluster being measured.
enum Nodes<'a> {
    /// `--target`: somewhere else.
    Remote,
    /// Local `ringraft serve` processes.
    Processes(&'a mut LocalCluster),
    /// Nodes in this process (`--in-process`).
    Embedded(&'a EmbeddedCluster),
}

fn measure(
    args: &ClusterBenchArgs,
    config: &LoadConfig,
    target: String,
    table: SlotTable,
    mut cluster: Nodes<'_>,
) -> Result<ExitCode, BenchError> {
    let nodes = table.nodes().to_vec();
    let local = !matches!(cluster, Nodes::Remote);
    let target = if args.no_slot_map {
        format!("{target} [no slot map: routed by -MOVED replies]")
    } else if table.is_clustered() {
        format!("{target} [cluster mode, {} nodes known]", nodes.len())
    } else {
        format!("{target} [single node: no CLUSTER SLOTS]")
    };
    // Every node's INFO: a local cluster's are all known; a target's are
    // those CLUSTER SLOTS named (leaders and replicas).
    let (info_nodes, watched) = match &cluster {
        Nodes::Remote => (nodes.clone(), Watched::Nothing),
        Nodes::Processes(cluster) => (
            cluster.client_addrs(),
            Watched::Processes(cluster.nodes().iter().map(|n| n.pid()).collect()),
        ),
        Nodes::Embedded(cluster) => {
            // The load generator runs on this thread: leave its
            // allocations out of the nodes' count.
            alloc_count::exclude_this_thread();
            (cluster.client_addrs(), Watched::ThisProcess)
        }
    };
    if config.workload == Workload::Get {
        prefill(config, table.clone())?;
    }
    let mut sampler = Sampler::new(watched, config.duration);
    let terms_before = group_terms(&info_nodes);
    let bar = progress_bar(config.duration);
    let outcome: Outcome = loadgen::run(config, table, &mut |elapsed, ops| {
        sampler.sample(elapsed, ops);
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:.0} ops/s",
            ops as f64 / elapsed.as_secs_f64().max(1e-3)
        ));
    })?;
    bar.finish_and_clear();
    // A node that died during the run makes the figures meaningless.
    match &mut cluster {
        Nodes::Remote => {}
        Nodes::Processes(cluster) => {
            if let Some((id, status)) = cluster.exited() {
                return Err(cluster.early_exit_error(id, status));
            }
        }
        Nodes::Embedded(cluster) => {
            if let Some((id, failure)) = cluster.failure() {
                return Err(BenchError::Cluster(format!("node {id} stopped: {failure}")));
            }
        }
    }
    let terms_after = group_terms(&info_nodes);
    let elections = match (&terms_before, &terms_after) {
        (Some(before), Some(after)) => Some(elections_between(before, after)),
        _ => None,
    };
    let summary = Summary {
        target,
        workload: match config.workload {
            Workload::Set => "set",
            Workload::Xadd => "xadd",
            Workload::Get => "get",
        },
        durability: local.then(|| args.durability.name()),
        clients: config.clients,
        rate_per_sec: config.rate_per_sec,
        payload_bytes: config.payload_bytes,
        elections,
        rss_bytes_max: sampler.rss_bytes_max(),
        rss_scope: sampler.rss_scope(),
        heap_allocs_per_op: sampler.heap_allocs_per_op(),
        outcome: &outcome,
    };
    print!("{}", summary.text());
    if let Some(path) = &args.json {
        summary.write_json(path)?;
    }
    if let Some(path) = &args.plot {
        summary.write_plot(path)?;
    }
    if outcome.ops == 0 {
        eprintln!("ringraft bench: no request succeeded");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A bar over the run's duration on a terminal; hidden otherwise.
fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(duration.as_millis() as u64),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
            .expect("a valid template"),
    );
    bar
}

/// Shards per node of a local cluster: the nodes share this machine's
/// cores, so one shard thread per core in all (at least one per node).
/// Measured on 2 cores with 3 nodes: 1 shard per node gave more ops/s and
/// lower latency than 2 (README, "Benchmark").
fn local_shards(nodes: u16) -> u16 {
    (machine_cores() / usize::from(nodes.max(1))).clamp(1, usize::from(u16::MAX)) as u16
}
