//! `ringraft serve`: flags, then the server (`server/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

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
}

/// Runs the server until it fails.
pub fn run(args: ServeArgs) -> ExitCode {
    server::logger::init();
    if let Err(error) = crate::signals::install() {
        log::warn!("cannot handle SIGINT/SIGTERM, they will end the process abruptly: {error}");
    }
    let config = match server_config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ringraft serve: {error}");
            return ExitCode::from(2);
        }
    };
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
    Ok(ServerConfig {
        id: args.id,
        data_dir: args.data_dir,
        peers,
        client_addr: args.client_addr,
        shards,
        cluster_id: args.cluster_id,
        wal_capacity_bytes: args.wal_mib << 20,
        connections_max: args.connections_max,
        pipeline_max: args.pipeline_max,
        pin_cores: !args.no_pin,
        first_core: args.first_core,
        durability: args.durability,
    })
}
