//! `ringraft wal inspect|verify|dump PATH`: look into a WAL file without
//! changing it (the file is opened read-only; recovery runs but writes nothing).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ringraft_wal::record::RecordKind;
use ringraft_wal::superblock::SUPERBLOCK_AREA_BYTES;
use ringraft_wal::{BLOCK_BYTES, OpenOptions, Tuning, Wal, WalError};

#[derive(Debug, Args)]
pub struct WalArgs {
    #[command(subcommand)]
    command: WalCommand,
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Capacity, live range, last IoId, hard state, bytes used.
    Inspect {
        /// The WAL file.
        path: PathBuf,
    },
    /// Exit 0 when the log is clean; otherwise print the file offset of the
    /// first damage and exit 1 (damage before the tail) or 2 (a torn tail,
    /// which the next writable open cuts).
    Verify {
        /// The WAL file.
        path: PathBuf,
    },
    /// Print entries: index, term, payload bytes, first payload bytes in hex.
    Dump {
        /// The WAL file.
        path: PathBuf,
        /// First index to print (default: the first live entry).
        #[arg(long)]
        from: Option<u64>,
        /// Last index to print (default: the last entry).
        #[arg(long)]
        to: Option<u64>,
    },
}

pub fn run(args: WalArgs) -> ExitCode {
    let outcome = match args.command {
        WalCommand::Inspect { path } => inspect(&path),
        WalCommand::Verify { path } => return verify(&path),
        WalCommand::Dump { path, from, to } => dump(&path, from, to),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringraft wal: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Opens read-only, with buffers sized from the file's own superblock.
fn open_read_only(path: &Path) -> Result<Wal, WalError> {
    let superblock = Wal::read_superblock(path)?;
    let block = BLOCK_BYTES as u64;
    let buffer_bytes = (superblock.inflight_bytes_max.saturating_sub(2 * block))
        .min(4 << 20)
        .max(2 * block)
        & !(block - 1);
    let options = OpenOptions {
        cluster_id: None,
        truncate_damaged: false,
        read_only: true,
        tuning: Tuning {
            read_buffer_bytes: buffer_bytes as usize,
            flush_io_bytes_max: buffer_bytes as usize,
            flush_ios_max: 1,
            register_buffer: false,
            ..Tuning::default()
        },
    };
    Wal::open(path, &options)
}

fn inspect(path: &Path) -> Result<(), WalError> {
    let wal = open_read_only(path)?;
    let superblock = wal.superblock();
    let report = wal.recovery_report();
    let (start, end) = wal.live_positions();
    let hard_state = wal.hard_state();
    println!("file                {}", path.display());
    println!("format_version      {}", ringraft_wal::FORMAT_VERSION);
    println!("cluster_id          {:#x}", superblock.cluster_id);
    println!("shard_id            {}", superblock.shard_id);
    println!("capacity_bytes      {}", superblock.capacity_bytes);
    println!("ring_bytes          {}", superblock.ring_bytes);
    println!("inflight_bytes_max  {}", superblock.inflight_bytes_max);
    println!("superblock_gen      {}", superblock.generation);
    println!(
        "live_indexes        {}..={} ({} entries)",
        wal.first_index(),
        wal.last_id().index,
        report.entries
    );
    println!(
        "live_positions      {start}..{end} (file offsets {}..{})",
        SUPERBLOCK_AREA_BYTES + start % superblock.capacity_bytes,
        SUPERBLOCK_AREA_BYTES + end % superblock.capacity_bytes
    );
    println!("last_io_id          {}", wal.last_id());
    println!("purged_io_id        {}", superblock.start_prev);
    println!(
        "hard_state          term {} vote {} commit {}",
        hard_state.term, hard_state.vote, hard_state.commit
    );
    println!(
        "bytes_used          {} ({:.1}% of capacity)",
        wal.used_bytes(),
        100.0 * wal.used_bytes() as f64 / superblock.capacity_bytes as f64
    );
    if report.discarded_records > 0 {
        println!(
            "tail                torn: {} records, {} bytes past the end (cut at the next writable open)",
            report.discarded_records, report.discarded_bytes
        );
    } else {
        println!("tail                clean");
    }
    Ok(())
}

fn verify(path: &Path) -> ExitCode {
    match open_read_only(path) {
        Ok(wal) => {
            let report = wal.recovery_report();
            let (_, end) = wal.live_positions();
            if report.discarded_records > 0 {
                let file_offset = SUPERBLOCK_AREA_BYTES + end % wal.capacity_bytes();
                println!(
                    "torn tail at file offset {file_offset}: {} records, {} bytes past the last valid entry {}",
                    report.discarded_records,
                    report.discarded_bytes,
                    wal.last_id()
                );
                return ExitCode::from(2);
            }
            println!(
                "clean: {} entries, {}..={}",
                report.entries,
                wal.first_index(),
                wal.last_id().index
            );
            ExitCode::SUCCESS
        }
        Err(WalError::Corrupt {
            file_offset,
            position,
            source,
        }) => {
            println!("damaged at file offset {file_offset} (log position {position}): {source}");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("unreadable: {error}");
            ExitCode::FAILURE
        }
    }
}

fn dump(path: &Path, from: Option<u64>, to: Option<u64>) -> Result<(), WalError> {
    let mut wal = open_read_only(path)?;
    let to = to.unwrap_or(wal.last_id().index).min(wal.last_id().index);
    let mut next = from.unwrap_or(wal.first_index());
    println!("index\tterm\tpayload_bytes\tpayload_head");
    while next <= to {
        let view = wal.read(next, 1 << 20)?;
        if view.is_empty() {
            break;
        }
        for record in view.records() {
            let record = record.map_err(|source| WalError::InvalidRecords { offset: 0, source })?;
            if record.header.kind == RecordKind::Padding || record.header.index > to {
                continue;
            }
            let head: String = record
                .payload
                .iter()
                .take(16)
                .map(|byte| format!("{byte:02x}"))
                .collect();
            println!(
                "{}\t{}\t{}\t{}",
                record.header.index, record.header.term, record.header.payload_len, head
            );
        }
        next = view.last().index + 1;
    }
    Ok(())
}
