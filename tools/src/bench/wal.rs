//! `ringraft bench wal`: durable appends through the WAL ring.
//!
//! `--appenders N` are N logical clients on the shard's one thread (as the
//! shard's tasks would be), each with one append outstanding: it appends,
//! then waits until `flushed` covers its IoId, then appends again. The loop
//! appends for every idle client, submits what is dirty, blocks for a
//! completion and releases the clients it made durable — group commit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::serve::Durability;
use clap::Args;
use hdrhistogram::Histogram;
use ringraft_wal::{CreateOptions, IoId, OpenOptions, Tuning, Wal, WalError};

#[derive(Debug, Args)]
pub struct WalBenchArgs {
    /// Payload bytes per append (the record adds a 32-byte header, 8-aligned).
    #[arg(long, default_value_t = 4096)]
    payload_bytes: usize,
    /// Concurrent appenders, each waiting for its own append to be durable.
    #[arg(long, default_value_t = 1)]
    appenders: usize,
    /// How long to append ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    duration: Duration,
    /// WAL file: opened if it exists, created otherwise; kept. Without it a
    /// temporary file in /var/tmp is created and removed.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Data area of a created file.
    #[arg(long, default_value_t = 1 << 30)]
    capacity_bytes: u64,
    /// Ring memory of a created file.
    #[arg(long, default_value_t = 64 << 20)]
    ring_bytes: u64,
    /// Only fallocate a created file instead of writing it through once
    /// (to measure what a fresh extent costs under dsync).
    #[arg(long)]
    no_write_through: bool,
    /// Pad a block remainder this small after each record (0: never), so a
    /// record that nearly fills a block does not make the next write rewrite it.
    #[arg(long, default_value_t = 256)]
    block_pad_bytes_max: usize,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 4)]
    flush_ios_max: usize,
    /// fsync: each write with RWF_DSYNC; none: without (`serve --durability`).
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Durability,
}

struct Outcome {
    appends: u64,
    elapsed: Duration,
    latency_ns: Histogram<u64>,
    fixed_buffer: bool,
}

pub fn run(args: WalBenchArgs) -> ExitCode {
    let temporary = args.file.is_none();
    let path = args.file.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "/var/tmp/ringraft-bench-{}.wal",
            std::process::id()
        ))
    });
    let outcome = measure(&args, &path);
    if temporary {
        let _ = std::fs::remove_file(&path);
    }
    match outcome {
        Ok(outcome) => {
            report(&args, &path, &outcome);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ringraft bench wal: {error}");
            ExitCode::FAILURE
        }
    }
}

fn tuning(args: &WalBenchArgs) -> Tuning {
    Tuning {
        flush_ios_max: args.flush_ios_max,
        block_pad_bytes_max: args.block_pad_bytes_max,
        sync_writes: args.durability == Durability::Fsync,
        ..Tuning::default()
    }
}

fn open_or_create(args: &WalBenchArgs, path: &PathBuf) -> Result<Wal, WalError> {
    if path.exists() {
        let options = OpenOptions {
            tuning: tuning(args),
            ..OpenOptions::default()
        };
        return Wal::open(path, &options);
    }
    let options = CreateOptions {
        capacity_bytes: args.capacity_bytes,
        ring_bytes: args.ring_bytes,
        inflight_bytes_max: (8 << 20).min(args.ring_bytes / 4),
        write_through: !args.no_write_through,
        tuning: tuning(args),
        ..CreateOptions::default()
    };
    Wal::create(path, &options)
}

fn measure(args: &WalBenchArgs, path: &PathBuf) -> Result<Outcome, WalError> {
    let mut wal = open_or_create(args, path)?;
    let appenders = args.appenders.max(1);
    // waiting[i] = the append client i waits for, and when it started.
    let mut waiting: Vec<Option<(IoId, Instant)>> = vec![None; appenders];
    let mut latency_ns =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let term = wal.last_id().term.max(1);
    let mut appends = 0u64;
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut fill_byte = 0u8;
    loop {
        let now = Instant::now();
        let open = now < deadline;
        if open {
            for slot in waiting.iter_mut().filter(|slot| slot.is_none()) {
                fill_byte = fill_byte.wrapping_add(1);
                let appended = wal.append_with(term, args.payload_bytes, |payload| {
                    payload.fill(fill_byte);
                });
                match appended {
                    Ok(id) => *slot = Some((id, now)),
                    Err(WalError::RingFull { .. }) => break,
                    Err(WalError::LogFull { .. }) => {
                        // Reuse the file: everything durable may go.
                        let durable = wal.flushed().get().index;
                        if durable >= wal.first_index() {
                            wal.purge_to(durable)?;
                        }
                        break;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        if waiting.iter().all(Option::is_none) {
            if open {
                continue;
            }
            break;
        }
        wal.flush_submit_and_wait()?;
        let flushed = wal.flushed().get();
        let done_at = Instant::now();
        for slot in waiting.iter_mut() {
            if let Some((id, since)) = *slot
                && id <= flushed
            {
                latency_ns.saturating_record(done_at.duration_since(since).as_nanos() as u64);
                appends += u64::from(since < deadline);
                *slot = None;
            }
        }
    }
    Ok(Outcome {
        appends,
        elapsed: args.duration.min(started.elapsed()),
        latency_ns,
        fixed_buffer: wal.is_fixed_buffer(),
    })
}

fn report(args: &WalBenchArgs, path: &std::path::Path, outcome: &Outcome) {
    let seconds = outcome.elapsed.as_secs_f64();
    let appends_per_sec = outcome.appends as f64 / seconds;
    let mb_per_sec = appends_per_sec * args.payload_bytes as f64 / 1e6;
    let us = |ns: u64| ns as f64 / 1e3;
    let histogram = &outcome.latency_ns;
    let (p50, p99, p999, max) = (
        us(histogram.value_at_quantile(0.50)),
        us(histogram.value_at_quantile(0.99)),
        us(histogram.value_at_quantile(0.999)),
        us(histogram.max()),
    );
    if args.json {
        println!(
            "{{\"appends_per_sec\":{appends_per_sec:.1},\"mb_per_sec\":{mb_per_sec:.2},\
             \"latency_us\":{{\"p50\":{p50:.1},\"p99\":{p99:.1},\"p999\":{p999:.1},\"max\":{max:.1}}},\
             \"durability\":\"{}\"}}",
            args.durability.name()
        );
        return;
    }
    println!(
        "wal bench: {} appenders, payload {} B, {:.1} s, durability {}, file {} (fixed buffer: {})",
        args.appenders,
        args.payload_bytes,
        seconds,
        args.durability.name(),
        path.display(),
        if outcome.fixed_buffer { "yes" } else { "no" }
    );
    println!("appends/s  {appends_per_sec:.0}");
    println!("MB/s       {mb_per_sec:.2}");
    println!("latency us p50 {p50:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}");
}
