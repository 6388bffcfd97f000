//! `ringraft bench ...`: measurements. Each target is a subcommand; with
//! none, `ringraft bench` is reserved for the cluster benchmark.

mod wal;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: Option<BenchTarget>,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Durable appends to one WAL: each append waits for its `flushed`.
    Wal(wal::WalBenchArgs),
}

pub fn run(args: BenchArgs) -> ExitCode {
    match args.target {
        Some(BenchTarget::Wal(args)) => wal::run(args),
        None => {
            eprintln!(
                "ringraft bench: the cluster benchmark is not built yet; try `ringraft bench wal`"
            );
            ExitCode::from(2)
        }
    }
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
