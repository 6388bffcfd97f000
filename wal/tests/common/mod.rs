//! Shared helpers for the WAL's reopen-based tests: small geometry, real
//! files in a temp dir.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ringraft_wal::{CreateOptions, IoId, OpenOptions, Tuning, Wal, record};

pub const CLUSTER: u128 = 0xC0FFEE;
pub const CAPACITY_BYTES: u64 = 1 << 20;
pub const RING_BYTES: u64 = 256 << 10;
pub const INFLIGHT_BYTES_MAX: u64 = 64 << 10;

/// Small buffers so a few hundred KiB exercise wrap-around, file reads and
/// the recovery window (`INFLIGHT_BYTES_MAX`).
pub fn tuning() -> Tuning {
    Tuning {
        flush_ios_max: 2,
        flush_io_bytes_max: 16 << 10,
        read_buffer_bytes: 32 << 10,
        index_chunk_bytes: 4 << 10,
        ..Tuning::default()
    }
}

pub fn create_options() -> CreateOptions {
    CreateOptions {
        cluster_id: CLUSTER,
        shard_id: 1,
        capacity_bytes: CAPACITY_BYTES,
        ring_bytes: RING_BYTES,
        inflight_bytes_max: INFLIGHT_BYTES_MAX,
        write_through: true,
        tuning: tuning(),
    }
}

pub fn open_options() -> OpenOptions {
    OpenOptions {
        cluster_id: Some(CLUSTER),
        tuning: tuning(),
        ..OpenOptions::default()
    }
}

pub fn temp_wal() -> (tempfile::TempDir, PathBuf, Wal) {
    let dir =
        tempfile::tempdir_in(std::env::var_os("RINGRAFT_TEST_DIR").unwrap_or("/var/tmp".into()))
            .expect("temp dir on a file system with O_DIRECT");
    let path = dir.path().join("shard.wal");
    let wal = Wal::create(&path, &create_options()).expect("create");
    (dir, path, wal)
}

pub fn reopen(path: &Path) -> Wal {
    Wal::open(path, &open_options()).expect("reopen")
}

/// A payload that names its index, of a length that varies with it.
pub fn payload_for(index: u64) -> Vec<u8> {
    let len = (index as usize * 37) % 700;
    (0..len).map(|i| (index as usize * 31 + i) as u8).collect()
}

/// Reads every entry in [from, to] and checks it against `payload_for`.
pub fn check_entries(wal: &mut Wal, from: u64, to: u64, term_of: impl Fn(u64) -> u64) {
    let mut next = from;
    while next <= to {
        let view = wal.read(next, 8 << 10).expect("read");
        assert!(!view.is_empty(), "entry {next} missing");
        for record in view.records() {
            let record = record.expect("valid record");
            if record.header.kind == record::RecordKind::Padding {
                continue;
            }
            assert_eq!(record.header.io_id(), IoId::new(term_of(next), next));
            assert_eq!(record.payload, &payload_for(next)[..], "payload of {next}");
            next += 1;
        }
    }
}

/// Appends entries `from..=to` under `term`, flushing as the ring fills.
pub fn append_range(wal: &mut Wal, term: u64, from: u64, to: u64) {
    for index in from..=to {
        let payload = payload_for(index);
        let id = loop {
            match wal.append(term, &payload) {
                Ok(id) => break id,
                Err(ringraft_wal::WalError::RingFull { .. }) => {
                    wal.flush_submit().unwrap();
                    wal.flush_wait().unwrap();
                }
                Err(error) => panic!("append {index}: {error}"),
            }
        };
        assert_eq!(id, IoId::new(term, index));
        wal.flush_submit().unwrap();
        wal.flush_reap().unwrap();
    }
}

/// A deterministic xorshift generator (no extra dependency, reproducible).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
