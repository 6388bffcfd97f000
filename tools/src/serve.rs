//! `ringraft serve`: flags, then the server (`server/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use ringraft_engine::shard::{
    BudgetItem, Faults, MemoryBudget, NodeConfig, ShardShared, SnapshotConfig,
};
use ringraft_tools::service::kv::{KvConfig, RESPONSE_BYTES_MAX};
use ringraft_tools::service::process;
use ringraft_tools::service::resp::Limits;

use crate::server::{self, ServerConfig};

/// What an acknowledged write has reached on a quorum of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Stable storage: the log is written O_DIRECT with RWF_DSYNC.
    Fsync,
    /// The device: the same O_DIRECT writes without RWF_DSYNC, so a write
    /// survives a process crash but may be lost on power failure.
    None,
}

impl Durability {
    /// The flag's value, for logs, INFO and bench reports.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::None => "none",
        }
    }
}

/// Flags of `ringraft serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (one of the ids in --peers).
    #[arg(long)]
    pub id: u64,
    /// Directory of this node's WAL files (`shard-<i>.wal`), created if absent.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Every node's peer address: `1=HOST:PORT,2=HOST:PORT,...`; shard i
    /// listens on PORT + i.
    #[arg(long)]
    pub peers: String,
    /// Where clients (RESP) connect. Node k's client port is taken to be
    /// this port - --id + k (on node k's peer host).
    #[arg(long)]
    pub client_addr: SocketAddr,
    /// Shards (Raft groups); default: available cores.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Cluster id: WAL files and peers of another cluster are refused.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Size of each shard's WAL file when created, MiB.
    #[arg(long, default_value_t = 256)]
    pub wal_mib: u64,
    /// Client connections open at most (per node).
    #[arg(long, default_value_t = 1024)]
    pub connections_max: usize,
    /// Commands one connection may have in flight (pipelined); past it the
    /// server stops reading that connection until replies go out.
    #[arg(long, default_value_t = 128)]
    pub pipeline_max: usize,
    /// Admission control: record bytes a group may have proposed and not
    /// yet committed; a write past it waits (FIFO between clients).
    #[arg(long, default_value_t = 4 << 20)]
    pub uncommitted_bytes_max: u64,
    /// How long a write waits for admission before it is answered -BUSY.
    #[arg(long, default_value_t = 1000)]
    pub admission_timeout_ms: u64,
    /// Do not pin shard threads to cores (several nodes sharing few cores).
    #[arg(long)]
    pub no_pin: bool,
    /// Pin shard i to core (first-core + i) mod cores: nodes sharing a
    /// machine give each a different first core.
    #[arg(long, default_value_t = 0)]
    pub first_core: usize,
    /// fsync: a write is acknowledged once on stable storage on a quorum;
    /// none: once handed to the disk (no RWF_DSYNC) on a quorum, so it may
    /// be lost on power failure.
    #[arg(long, value_enum, default_value = "fsync")]
    pub durability: Durability,
    /// WAL ring memory per shard, MiB (a power of two, at most half of
    /// --wal-mib); default: half the file, at most 64 MiB.
    #[arg(long)]
    pub ring_mib: Option<u64>,
    /// Log compaction: a shard snapshots its state and purges its WAL once
    /// the applied entries not yet in a snapshot take this percent of the
    /// WAL file (1..=100).
    #[arg(long, default_value_t = SnapshotConfig::default().snapshot_log_percent,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub snapshot_log_percent: u8,
    /// Log compaction: ... or once this many entries were applied since the
    /// last snapshot, whichever comes first.
    #[arg(long, default_value_t = SnapshotConfig::default().snapshot_entries,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_entries: u64,
    /// Print the itemized worst-case memory budget of this configuration
    /// and exit without starting.
    #[arg(long)]
    pub print_budget: bool,
    /// TESTING ONLY (fault injection, never in production): slow every WAL
    /// write by N microseconds (`flush-delay-us=N`) and/or read at most N
    /// bytes/s from each peer's data lane (`peer-bytes-per-sec=N`; control
    /// lanes are not throttled). Repeatable or comma-separated; 0 turns one off.
    #[arg(long, value_name = "SETTING=N")]
    pub fault: Vec<String>,
    /// TESTING ONLY: accept `DEBUG FAULT <settings>` from clients, to change
    /// the fault hooks while running.
    #[arg(long)]
    pub enable_debug_fault: bool,
}

/// The node configuration `serve` runs with (also what `--print-budget` reports).
pub fn node_config(config: &ServerConfig) -> NodeConfig {
    let mut node_config = NodeConfig::new(
        config.id,
        config.peers.clone(),
        config.shards,
        config.data_dir.clone(),
    );
    node_config.cluster_id = config.cluster_id;
    node_config.pin_cores = config.pin_cores;
    node_config.first_core = config.first_core;
    node_config.wal.capacity_bytes = config.wal_capacity_bytes;
    // Ring memory: half the file up to 64 MiB; writes in flight: at most
    // half the ring (the WAL's rule), at most 8 MiB.
    node_config.wal.ring_bytes = config
        .ring_bytes
        .unwrap_or((config.wal_capacity_bytes / 2).min(64 << 20));
    node_config.wal.inflight_bytes_max = (node_config.wal.ring_bytes / 2 - 4096).min(8 << 20);
    node_config.wal.tuning.sync_writes = config.durability == Durability::Fsync;
    node_config.bounds.uncommitted_bytes_max = config.uncommitted_bytes_max;
    node_config.bounds.admission_timeout = config.admission_timeout;
    node_config.faults = config.faults;
    node_config.snapshot = config.snapshot;
    node_config
}

/// The node's budget (every shard) plus the client connections' buffers.
pub fn memory_budget(config: &ServerConfig, node: &NodeConfig) -> MemoryBudget {
    let mut budget = MemoryBudget::for_node(node, RESPONSE_BYTES_MAX);
    budget.push(
        format!("clients (connections_max {})", config.connections_max),
        server::frontend::budget_items(
            config.connections_max,
            config.shards,
            config.pipeline_max,
            server::frontend::out_bytes(node),
            Limits::default(),
        ),
    );
    budget.push(
        "state machines (KV, per shard)",
        vec![BudgetItem {
            name: "values kept aside for a snapshot build (build_preimage_bytes_max)",
            count: u64::from(config.shards),
            unit_bytes: config.kv.build_preimage_bytes_max as u64,
        }],
    );
    budget
}

/// What INFO and DEBUG FAULT read without a shard (see `service::process`).
pub fn register_process_hooks(
    shards: Vec<Arc<ShardShared>>,
    config: &ServerConfig,
    budget: &MemoryBudget,
) {
    process::set_memory_budget_bytes(budget.total_bytes());
    log::info!(
        "memory budget {} MiB (worst case; `ringraft serve --print-budget` itemizes it)",
        budget.total_bytes() >> 20
    );
    if config.faults.any() {
        log::warn!("TESTING fault hooks on: {}", config.faults);
    }
    if config.enable_debug_fault {
        log::warn!("TESTING: DEBUG FAULT is enabled");
        process::enable_debug_fault(move |settings| {
            let mut faults = shards
                .first()
                .map_or_else(Faults::default, |s| s.faults.get());
            faults.apply_settings(settings)?;
            for shard in &shards {
                shard.faults.set(faults);
            }
            Ok(faults)
        });
    }
}

/// Runs the server until it fails.
pub fn run(args: ServeArgs) -> ExitCode {
    server::logger::init();
    if let Err(error) = crate::signals::install() {
        log::warn!("cannot handle SIGINT/SIGTERM, they will end the process abruptly: {error}");
    }
    let print_budget = args.print_budget;
    let config = match server_config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ringraft serve: {error}");
            return ExitCode::from(2);
        }
    };
    if print_budget {
        let budget = memory_budget(&config, &node_config(&config));
        println!("{budget}");
        return ExitCode::SUCCESS;
    }
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringraft serve: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The server configuration the flags describe (shared with
/// `ringraft bench --in-process`, whose nodes get the same flags).
pub fn server_config(args: ServeArgs) -> Result<ServerConfig, server::ServeError> {
    let shards = args
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let peers = server::parse_peers(&args.peers)?;
    let mut faults = Faults::default();
    for setting in &args.fault {
        faults
            .apply_settings(setting)
            .map_err(|error| server::ServeError::Flag(format!("--fault: {error}")))?;
    }
    let ring_bytes = args.ring_mib.map(|mib| mib << 20);
    let wal_capacity_bytes = args.wal_mib << 20;
    if let Some(ring) = ring_bytes
        && (ring < 4 << 20 || !ring.is_power_of_two() || ring > wal_capacity_bytes / 2)
    {
        return Err(server::ServeError::Flag(
            "--ring-mib must be a power of two, at least 4, at most half --wal-mib".into(),
        ));
    }
    Ok(ServerConfig {
        id: args.id,
        data_dir: args.data_dir,
        peers,
        client_addr: args.client_addr,
        shards,
        cluster_id: args.cluster_id,
        wal_capacity_bytes,
        connections_max: args.connections_max,
        pipeline_max: args.pipeline_max,
        uncommitted_bytes_max: args.uncommitted_bytes_max,
        admission_timeout: std::time::Duration::from_millis(args.admission_timeout_ms),
        pin_cores: !args.no_pin,
        first_core: args.first_core,
        durability: args.durability,
        faults,
        enable_debug_fault: args.enable_debug_fault,
        ring_bytes,
        snapshot: SnapshotConfig {
            snapshot_log_percent: args.snapshot_log_percent,
            snapshot_entries: args.snapshot_entries,
            ..SnapshotConfig::default()
        },
        kv: KvConfig::default(),
    })
}
