//! `ringraft`: the command-line face of the engine.
//!
//! Each subcommand lives in its own module; `main` only parses and dispatches.

mod alloc_count;
mod bench;
mod cluster_cmd;
mod serve;
mod server;
mod signals;
mod wal_cmd;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Counts heap allocations for `ringraft bench`'s in-process cluster; off
/// (one relaxed load per allocation) unless a benchmark enables it.
#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

#[derive(Debug, Parser)]
#[command(
    name = "ringraft",
    version,
    about = "A thread-per-core io_uring Raft replication engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, verify or dump a WAL file.
    Wal(wal_cmd::WalArgs),
    /// Measure ringraft's parts.
    Bench(bench::BenchArgs),
    /// Start a local cluster of `ringraft serve` processes.
    Cluster(cluster_cmd::ClusterArgs),
    /// Run a node of the replicated KV/stream service (RESP).
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            Cli::command().print_help().expect("stdout is writable");
            ExitCode::SUCCESS
        }
        Some(Command::Wal(args)) => wal_cmd::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Cluster(args)) => cluster_cmd::run(args),
        Some(Command::Serve(args)) => serve::run(args),
    }
}
