//! Randomized operations against a plain model of the log, with reopens.
//! Deterministic: each seed is a fixed sequence; a failure names its seed
//! and step (rerun with `MODEL_SEED=<seed> cargo test --release --test model`).

mod common;

use common::*;
use ringraft_wal::record::RecordKind;
use ringraft_wal::{CreateOptions, HardState, IoId, OpenOptions, Tuning, Wal, WalError};

/// The log as a user sees it: entries from `first` on, their ids and payloads.
struct Model {
    first: u64,
    entries: Vec<(IoId, Vec<u8>)>,
    /// Highest index known durable (flushed or synced).
    durable: u64,
    term: u64,
    purged: IoId,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> IoId {
        self.entries.last().map(|e| e.0).unwrap_or(self.purged)
    }
    fn entry(&self, index: u64) -> &(IoId, Vec<u8>) {
        &self.entries[(index - self.first) as usize]
    }
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1..=6 => rng.below(300) as usize,
        _ => rng.below(4000) as usize,
    };
    let seed = rng.next() as u8;
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn append_or_make_room(wal: &mut Wal, model: &mut Model, bytes: &[u8]) -> IoId {
    loop {
        match wal.append(model.term, bytes) {
            Ok(id) => return id,
            Err(WalError::RingFull { .. }) => {
                model.durable = wal.sync().unwrap().index;
            }
            Err(WalError::LogFull { .. }) => {
                model.durable = wal.sync().unwrap().index;
                let durable = model.durable;
                purge(wal, model, durable);
            }
            Err(error) => panic!("append: {error}"),
        }
    }
}

fn purge(wal: &mut Wal, model: &mut Model, index: u64) {
    if index < model.first {
        return;
    }
    wal.purge_to(index).unwrap();
    model.purged = model.entry(index).0;
    model.entries.drain(..(index + 1 - model.first) as usize);
    model.first = index + 1;
}

fn check_read(wal: &mut Wal, model: &Model, from: u64, max_bytes: usize) {
    let view = wal.read(from, max_bytes).unwrap();
    let mut next = from;
    for record in view.records() {
        let record = record.unwrap();
        if record.header.kind == RecordKind::Padding {
            continue;
        }
        let (id, payload) = model.entry(next);
        assert_eq!(record.header.io_id(), *id, "entry {next}");
        assert_eq!(record.payload, &payload[..], "payload of {next}");
        next += 1;
    }
    assert_eq!(next - from, view.entries());
    assert!(view.entries() >= 1);
}

/// Runs one seed; returns how many blocks its crashes tore.
/// The same run received into lent ring memory: committed whole, as a
/// prefix of its records, or abandoned after part of it arrived (and, with
/// `inflight`, moved down behind a repeated entry, with writes still in
/// flight while the run lands). Returns how many entries were appended.
/// Writes are drained first where part of the run is not appended: lent bytes
/// must reach the file only after a commit or an abandon zeroed what was
/// not appended (a write in flight over the last block could otherwise
/// carry records the model never appended; see `lend.rs`).
fn receive_in_place(
    wal: &mut Wal,
    model: &mut Model,
    rng: &mut Rng,
    bytes: &[u8],
    inflight: bool,
) -> usize {
    if inflight {
        // As a follower does: lend while earlier writes are still in flight.
        wal.flush_submit().unwrap();
        model.durable = model.durable.max(wal.flush_reap().unwrap().index);
    } else {
        model.durable = wal.sync().unwrap().index;
    }
    let lend = loop {
        match wal.lend(bytes.len()) {
            Ok(lend) => break lend,
            Err(WalError::RingFull { .. }) => {
                model.durable = wal.sync().unwrap().index;
            }
            Err(WalError::LogFull { .. }) => {
                model.durable = wal.sync().unwrap().index;
                let durable = model.durable;
                purge(wal, model, durable);
            }
            Err(error) => panic!("lend: {error}"),
        }
    };
    // Record boundaries of the run: ends[k] = end of record k.
    let mut ends = Vec::new();
    for record in ringraft_wal::record::Records::new(bytes) {
        let end = ends.last().copied().unwrap_or(0) + record.unwrap().bytes.len();
        ends.push(end);
    }
    match rng.below(if inflight { 5 } else { 4 }) {
        4 => {
            // A frame that repeats the last entry: the run is moved down.
            let view_bytes: Vec<u8> = if model.entries.is_empty() {
                Vec::new()
            } else {
                let last = model.last().index;
                wal.read(last, 1).unwrap().bytes().to_vec()
            };
            if view_bytes.is_empty() || view_bytes.len() + bytes.len() > lend.len_bytes() {
                wal.abandon_lent(lend, 0);
                return 0;
            }
            let skip = view_bytes.len();
            wal.abandon_lent(lend, 0);
            let lend = loop {
                match wal.lend(skip + bytes.len()) {
                    Ok(lend) => break lend,
                    Err(WalError::RingFull { .. }) => {
                        model.durable = wal.sync().unwrap().index;
                    }
                    Err(WalError::LogFull { .. }) => {
                        model.durable = wal.sync().unwrap().index;
                        let durable = model.durable;
                        purge(wal, model, durable);
                    }
                    Err(error) => panic!("lend: {error}"),
                }
            };
            let memory = wal.lent_memory(&lend);
            memory[..skip].copy_from_slice(&view_bytes);
            memory[skip..skip + bytes.len()].copy_from_slice(bytes);
            let summary = wal.commit_lent(lend, skip..skip + bytes.len()).unwrap();
            assert_eq!(summary.entries, ends.len() as u64);
            ends.len()
        }
        0 => {
            if inflight {
                // Not appended: no write may carry these bytes (see above).
                model.durable = wal.sync().unwrap().index;
            }
            let arrived = rng.below(bytes.len() as u64 + 1) as usize;
            wal.lent_memory(&lend)[..arrived].copy_from_slice(&bytes[..arrived]);
            wal.abandon_lent(lend, arrived);
            0
        }
        1 => {
            if inflight {
                model.durable = wal.sync().unwrap().index;
            }
            wal.lent_memory(&lend).copy_from_slice(bytes);
            let keep = 1 + rng.below(ends.len() as u64) as usize;
            let summary = wal.commit_lent(lend, 0..ends[keep - 1]).unwrap();
            assert_eq!(summary.entries, keep as u64);
            keep
        }
        _ => {
            wal.lent_memory(&lend).copy_from_slice(bytes);
            let summary = wal.commit_lent(lend, 0..bytes.len()).unwrap();
            assert_eq!(summary.entries, ends.len() as u64);
            ends.len()
        }
    }
}

fn run(seed: u64, steps: usize, inflight: bool) -> u64 {
    // Odd seeds: the common small geometry. Even seeds: many tiny writes in
    // flight (splitting at record boundaries, out-of-order completions), no
    // block padding, coarse index chunks (longer header hops).
    let tuning = if seed % 2 == 1 {
        tuning()
    } else {
        Tuning {
            flush_ios_max: 4,
            flush_io_bytes_max: 4 << 10,
            block_pad_bytes_max: 0,
            index_chunk_bytes: 64 << 10,
            ..tuning()
        }
    };
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("model.wal");
    let create = CreateOptions {
        tuning,
        ..create_options()
    };
    let mut wal = Wal::create(&path, &create).unwrap();
    let open = OpenOptions {
        tuning,
        ..open_options()
    };
    let reopen = |path: &std::path::Path| Wal::open(path, &open).expect("reopen");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut torn_blocks = 0;
    let mut model = Model {
        first: 1,
        entries: Vec::new(),
        durable: 0,
        term: 1,
        purged: IoId::ZERO,
        hard_state: HardState::default(),
    };
    for step in 0..steps {
        let context = format!("seed {seed} step {step}");
        let op = rng.below(100);
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!(
                "{context}: op {op} first {} last {} durable {} live {:?}",
                model.first,
                model.last(),
                model.durable,
                wal.live_positions()
            );
        }
        match op {
            0..=44 => {
                let bytes = payload(&mut rng);
                let id = append_or_make_room(&mut wal, &mut model, &bytes);
                assert_eq!(
                    id,
                    IoId::new(model.term, model.last().index + 1),
                    "{context}"
                );
                model.entries.push((id, bytes));
                if rng.below(3) == 0 {
                    wal.flush_submit().unwrap();
                }
                model.durable = model.durable.max(wal.flush_reap().unwrap().index);
            }
            45..=49 => {
                // A follower's path: the same entries, encoded elsewhere.
                let next = model.last().index + 1;
                let count = 1 + rng.below(5);
                let mut payloads = Vec::new();
                for _ in 0..count {
                    payloads.push(payload(&mut rng));
                }
                // A run continuing our log, encoded as a leader would.
                let mut bytes = Vec::new();
                for (k, p) in payloads.iter().enumerate() {
                    let mut record = vec![0u8; ringraft_wal::record::record_bytes(p.len())];
                    let id = IoId::new(model.term, next + k as u64);
                    ringraft_wal::record::encode_entry(&mut record, id, p);
                    bytes.extend_from_slice(&record);
                }
                if rng.below(2) == 0 {
                    let appended =
                        receive_in_place(&mut wal, &mut model, &mut rng, &bytes, inflight);
                    for (k, p) in payloads.into_iter().take(appended).enumerate() {
                        model
                            .entries
                            .push((IoId::new(model.term, next + k as u64), p));
                    }
                    continue;
                }
                loop {
                    match wal.append_raw(&bytes) {
                        Ok(summary) => {
                            assert_eq!(summary.entries, count, "{context}");
                            break;
                        }
                        Err(WalError::RingFull { .. }) => {
                            model.durable = wal.sync().unwrap().index;
                        }
                        Err(WalError::LogFull { .. }) => {
                            model.durable = wal.sync().unwrap().index;
                            let durable = model.durable;
                            purge(&mut wal, &mut model, durable);
                        }
                        Err(error) => panic!("{context}: append_raw: {error}"),
                    }
                }
                for (k, p) in payloads.into_iter().enumerate() {
                    model
                        .entries
                        .push((IoId::new(model.term, next + k as u64), p));
                }
            }
            50..=59 => {
                model.durable = wal.sync().unwrap().index;
                assert_eq!(model.durable, model.last().index, "{context}");
            }
            60..=74 if !model.entries.is_empty() => {
                let span = model.last().index - model.first + 1;
                let from = model.first + rng.below(span);
                // Sometimes more than the read buffer holds: a file read
                // then ends where the buffer does, often inside a record.
                let max_bytes = if rng.below(4) == 0 {
                    2 * tuning.read_buffer_bytes
                } else {
                    1 + rng.below(20_000) as usize
                };
                check_read(&mut wal, &model, from, max_bytes);
            }
            75..=79 => {
                let keep = model.first - 1 + rng.below(model.entries.len() as u64 + 1);
                model.term += 1;
                wal.truncate_after(keep, model.term).unwrap();
                model.entries.truncate((keep + 1 - model.first) as usize);
                model.durable = model.durable.min(keep);
                assert_eq!(wal.last_id(), model.last(), "{context}");
            }
            80..=84 if model.durable >= model.first => {
                let index = model.first + rng.below(model.durable - model.first + 1);
                purge(&mut wal, &mut model, index);
            }
            85..=87 => {
                model.hard_state = HardState {
                    term: model.term,
                    vote: rng.below(5),
                    commit: model.durable,
                };
                wal.save_hard_state(model.hard_state).unwrap();
            }
            88..=91 if inflight => {
                // A follower installs its leader's snapshot: the log restarts
                // after it, with writes possibly still in flight.
                let snapshot = IoId::new(model.term, model.last().index + rng.below(3));
                wal.reset_to(snapshot).unwrap();
                if snapshot.index > model.purged.index {
                    model.entries.clear();
                    model.first = snapshot.index + 1;
                    model.purged = snapshot;
                    model.durable = snapshot.index;
                }
                assert_eq!(wal.last_id(), model.last(), "{context}");
            }
            88..=99 => {
                if inflight {
                    // Lent bytes a write carried may pass for entries after
                    // a crash (see `receive_in_place`): crash when synced.
                    model.durable = wal.sync().unwrap().index;
                }
                // Drop without syncing: a crash. Writes in flight may have
                // landed, or not, or landed garbled: tear whole blocks past
                // the durable point's block (a 4 KiB block write is taken
                // as atomic, as the partial last block is rewritten). What
                // was durable must survive; later entries may or may not.
                let positions = wal.positions();
                drop(wal);
                if !inflight && rng.below(2) == 0 {
                    torn_blocks += tear(&path, &mut rng, positions.durable, positions.submitted);
                }
                wal = reopen(&path);
                let last = wal.last_id().index;
                assert!(last >= model.durable, "{context}: lost durable entries");
                assert!(last <= model.last().index, "{context}: invented entries");
                model.entries.truncate((last + 1 - model.first) as usize);
                model.durable = last;
                assert_eq!(wal.last_id(), model.last(), "{context}");
                assert_eq!(wal.first_index(), model.first, "{context}");
                assert_eq!(wal.hard_state(), model.hard_state, "{context}");
                model.term = model.term.max(model.last().term);
            }
            _ => {}
        }
    }
    // Everything the model holds reads back, after a final reopen.
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), model.last(), "seed {seed}: final");
    let mut next = model.first;
    while next <= model.last().index {
        check_read(&mut wal, &model, next, 64 << 10);
        next = wal.read(next, 64 << 10).unwrap().last().index + 1;
    }
    torn_blocks
}

/// Overwrites random whole blocks of the file in log positions
/// [block_ceil(durable), block_ceil(submitted)) with zeros or noise.
fn tear(path: &std::path::Path, rng: &mut Rng, durable: u64, submitted: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let block = 4096u64;
    let first = durable.div_ceil(block) * block;
    let end = submitted.div_ceil(block) * block;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut position = first;
    let mut torn = 0;
    while position < end {
        if rng.below(3) == 0 {
            torn += 1;
            let noise = rng.below(2) == 0;
            let bytes: Vec<u8> = (0..block)
                .map(|_| if noise { rng.next() as u8 } else { 0 })
                .collect();
            let offset = 8192 + position % CAPACITY_BYTES;
            file.write_all_at(&bytes, offset).unwrap();
        }
        position += block;
    }
    file.sync_all().unwrap();
    torn
}

#[test]
fn random_operations_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        // MODEL_SEEDS=N runs seeds 1..=N (for a longer hunt than CI's).
        Err(_) => {
            let count = std::env::var("MODEL_SEEDS").map_or(12, |n| n.parse().unwrap());
            (1..=count).collect()
        }
    };
    let mut torn_blocks = 0;
    for seed in seeds {
        // Printed, so a failure names its seed (the harness shows it then).
        eprintln!("model: seed {seed}");
        torn_blocks += run(seed, 1500, false);
    }
    eprintln!("model: {torn_blocks} blocks torn by crashes");
    assert!(
        torn_blocks > 0,
        "crashes with writes in flight were exercised"
    );
}

/// The follower's mix: lends while writes are in flight, snapshot resets.
#[test]
fn lends_and_resets_with_writes_in_flight_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => {
            let count = std::env::var("MODEL_SEEDS").map_or(12, |n| n.parse().unwrap());
            (1..=count).collect()
        }
    };
    for seed in seeds {
        eprintln!("model (in flight): seed {seed}");
        run(seed, 1500, true);
    }
}
