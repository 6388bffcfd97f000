//! `ringraft cluster`: a local cluster of `ringraft serve` processes in the
//! foreground. Prints each node's client address, says when every group
//! has a leader, forwards Ctrl-C / SIGTERM to the nodes and waits for them,
//! and stops everything (exit status 1) if a node exits on its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::bench::local_cluster::{ClusterSpec, LocalCluster, Logs, describe, machine_cores};
use crate::bench::topology::Readiness;

/// How often the launcher looks at signals and children.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often readiness is asked until every group has a leader.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the leader layout must hold to count as ready.
const SETTLE: Duration = Duration::from_secs(1);
/// How long nodes get to stop after the forwarded signal before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Number of nodes (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Shards (Raft groups) per node; default: the node's own (one per core).
    #[arg(long)]
    shards: Option<u16>,
    /// Where node directories go (`node-<id>/`); kept, so a restart
    /// recovers from the WAL.
    #[arg(long, default_value = "ringraft-cluster")]
    data_dir: PathBuf,
    /// Client port of node 1 (node i: base + i − 1; peers: base + 1000 + 256·(i − 1) + shard).
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// `--cluster-id` of every node.
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
}

pub fn run(args: ClusterArgs) -> ExitCode {
    let spec = ClusterSpec {
        nodes: args.nodes,
        shards: args.shards,
        data_dir: args.data_dir,
        base_port: args.base_port,
        cluster_id: args.cluster_id,
        extra_args: Vec::new(),
        logs: Logs::Inherit,
        cores: machine_cores(),
    };
    if let Err(error) = crate::signals::install() {
        eprintln!("ringraft cluster: cannot install signal handlers: {error}");
        return ExitCode::FAILURE;
    }
    let started = spec
        .check_ports_free()
        .and_then(|()| LocalCluster::start(&spec));
    let mut cluster = match started {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("ringraft cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    for node in cluster.nodes() {
        println!(
            "node {}: client {}   pid {}   (redis-cli -c -p {})",
            node.id,
            node.client_addr,
            node.pid(),
            node.client_addr.port()
        );
    }
    println!(
        "data in {}; Ctrl-C stops every node",
        spec.data_dir.display()
    );
    let mut ready = false;
    let mut readiness = Readiness::new(SETTLE);
    let addrs = cluster.client_addrs();
    let mut next_ready_check = Instant::now();
    loop {
        if let Some(signal) = crate::signals::received() {
            eprintln!("ringraft cluster: signal {signal}, stopping the nodes");
            for (id, status) in cluster.stop(signal, STOP_GRACE) {
                eprintln!("node {id}: {}", describe(status));
            }
            return ExitCode::SUCCESS;
        }
        if let Some((id, status)) = cluster.exited() {
            eprintln!(
                "ringraft cluster: node {id} exited early: {}",
                describe(status)
            );
            cluster.stop(libc::SIGTERM, STOP_GRACE);
            return ExitCode::FAILURE;
        }
        if !ready && Instant::now() >= next_ready_check {
            ready = readiness.poll(&addrs);
            if ready {
                println!("cluster ready: every group has a leader (16384 slots served)");
            }
            next_ready_check = Instant::now() + READY_POLL_INTERVAL;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
