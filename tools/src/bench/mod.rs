//! `ringraft bench ...`: measurements. With no subcommand, `ringraft bench`
//! is the cluster benchmark (`cluster.rs`): a local 3-node cluster, or an
//! existing one with `--target`, driven by the load generator
//! (`loadgen.rs`). Subcommands measure single parts (`ringraft bench wal`).

mod cluster;
mod embedded;
mod loadgen;
pub mod local_cluster;
mod report;
mod resources;
pub mod topology;
mod wal;

pub use cluster::ClusterBenchArgs;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: Option<BenchTarget>,
    #[command(flatten)]
    cluster: ClusterBenchArgs,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Durable appends to one WAL: each append waits for its `flushed`.
    Wal(wal::WalBenchArgs),
}

pub fn run(args: BenchArgs) -> ExitCode {
    match args.target {
        Some(BenchTarget::Wal(args)) => wal::run(args),
        None => cluster::run(args.cluster),
    }
}

/// What can stop the cluster benchmark or the cluster launcher.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag value that cannot work.
    #[error("{0}")]
    Config(String),
    /// An address that does not resolve.
    #[error("cannot resolve address {0:?}")]
    BadAddress(String),
    /// A socket to a node failed.
    #[error("{addr}: {message}")]
    Io {
        /// The node.
        addr: std::net::SocketAddr,
        /// What failed.
        message: String,
    },
    /// A reply that is not RESP as expected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The cluster names more nodes than the slot table holds.
    #[error("the cluster has more than {max} nodes")]
    TooManyNodes {
        /// The bound.
        max: usize,
    },
    /// epoll, signals, files.
    #[error("system: {0}")]
    System(#[from] std::io::Error),
    /// A node process could not start, exited early, or the cluster did
    /// not become ready.
    #[error("{0}")]
    Cluster(String),
}

/// Parses "10s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        _ => return Err(format!("unknown duration unit {unit:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
