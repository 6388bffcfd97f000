//! Log compaction and snapshots of one shard: build a state-machine
//! snapshot into `<data-dir>/shard-<i>.snap`, tell the core, purge the WAL;
//! load it at start; stream it to a follower whose next entry was purged;
//! stage, check and install one received from the leader.
//!
//! A child module of `runtime` (it extends `Shard` with an `impl` block), so
//! the shard's fields stay private to the runtime.
//!
//! ```text
//!  build (any role)    applied - snapshot covers >= snapshot_log_percent of the WAL file
//!                      (or >= snapshot_entries entries)
//!    turn k:  sm.snapshot_chunk(off, buf) ─▶ shard-<i>.snap.tmp   (≤ build_chunks_per_turn_max
//!             chunks a turn; apply waits meanwhile, Raft, flushes and replication go on)
//!    done:    header ─▶ fsync ─▶ rename to shard-<i>.snap ─▶ fsync dir
//!             ─▶ raft.compacted(id, file bytes) ─▶ wal.purge_to(id.index)
//!
//!  leader ─ core asks SnapshotChunk{off, len} ─▶ pread the .snap file (one buffer
//!           of msg_bytes_max) ─▶ InstallSnapshot frame on the data lane when it is
//!           ready; the follower's SnapshotResponse (control lane) asks for the next
//!  follower ─ chunk ─▶ raft.step ─▶ StoreSnapshotChunk ─▶ pwrite shard-<i>.snap.recv
//!           complete ─▶ fsync, check header and checksum, sm.install_chunk* ─▶
//!           rename to shard-<i>.snap ─▶ fsync dir ─▶ WAL purge_to / reset_to ─▶
//!           raft.snapshot_installed
//!  start  ─ .snap present: check, install, WAL starts right after it (purge or
//!           reset); absent while the WAL was purged: refused
//! ```
//!
//! The file is what travels: a follower receives the leader's file byte for
//! byte (same cluster, same shard index), so it checks the same header and
//! checksum as a restart does and keeps the file as its own snapshot.
//!
//! File layout (integers little-endian):
//!
//! ```text
//!  offset  bytes  field
//!  0       8      magic "RRSNAP01"
//!  8       4      format version (1)
//!  12      4      CRC32C of bytes 16..64 (the rest of the header)
//!  16      8      cluster id
//!  24      8      shard index
//!  32      8      snapshot term   } the last entry the snapshot covers
//!  40      8      snapshot index  }
//!  48      8      body bytes
//!  56      4      CRC32C of the body
//!  60      4      reserved (0)
//!  64      ...    body: the state machine's snapshot bytes (StateMachine::snapshot_chunk)
//! ```
//!
//! Building in chunks across loop turns bounds how long one turn is held
//! up; each chunk's writeback starts at once (`sync_file_range`), so the
//! final fsync finds little left to write. A state machine that keeps the
//! build's view aside as it changes (`StateMachine::applies_during_build`,
//! the KV service's copy-on-write per key) goes on applying meanwhile, and
//! the build takes `build_chunks_per_turn_applying` chunks per turn.
//! Otherwise apply waits for the whole build (its cursor is valid only
//! while the state does not change) and the build takes up to
//! `build_chunks_per_turn_max` per turn to end sooner: commit, flushes and
//! replication go on, only acknowledgements wait. A received snapshot is
//! installed in the turn its last chunk arrives (reading the staged file
//! through the same bounded buffer).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringraft_net::frame::InstallSnapshot;
use ringraft_wal::record::RecordKind;
use ringraft_wal::{IoId, Wal};

use super::super::state_machine::{SnapshotError, StateMachine};
use super::{Shard, ShardConfig, ShardError};
use crate::raft::{Body, Message, StepOutcome};

/// Bytes of the file header.
pub const HEADER_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"RRSNAP01";
const FORMAT_VERSION: u32 = 1;

/// When a shard compacts its log, and how hard one loop turn works at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Snapshot once the applied entries not yet covered by a snapshot take
    /// at least this percent of the WAL file (1..=100; 0 is taken as 1).
    pub snapshot_log_percent: u8,
    /// ... or once this many entries were applied since the last snapshot.
    pub snapshot_entries: u64,
    /// State-machine chunks (of `msg_bytes_max` bytes each) written per loop
    /// turn while a snapshot is built and apply waits for it: a build that
    /// holds every acknowledgement up should end soon.
    pub build_chunks_per_turn_max: usize,
    /// ... and while apply goes on (`StateMachine::applies_during_build`):
    /// small, so a turn's own work stays short.
    pub build_chunks_per_turn_applying: usize,
}

impl Default for SnapshotConfig {
    fn default() -> SnapshotConfig {
        SnapshotConfig {
            snapshot_log_percent: 25,
            snapshot_entries: 1 << 20,
            build_chunks_per_turn_max: 16,
            build_chunks_per_turn_applying: 1,
        }
    }
}

/// Why a snapshot file is refused (or could not be written).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading, writing, syncing or renaming failed.
    #[error("{path}: {context}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The header is not a snapshot header of this format.
    #[error("{path}: damaged snapshot: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: Damage,
    },
    /// The state machine refused the snapshot's bytes.
    #[error("{path}: the state machine refused the snapshot: {source}")]
    Install {
        /// The file.
        path: PathBuf,
        /// What the state machine said.
        source: SnapshotError,
    },
    /// The WAL was purged past what the snapshot file covers (or the file is
    /// missing): starting would lose entries.
    #[error(
        "{path}: snapshot covers entries up to {snapshot} but the WAL starts after {wal_start}; \
         the snapshot file is missing or older than the log"
    )]
    NotCovered {
        /// The file.
        path: PathBuf,
        /// What the file covers (ZERO if missing).
        snapshot: IoId,
        /// The WAL's start (`start_prev`).
        wal_start: IoId,
    },
}

/// What is wrong with a damaged snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Shorter than its header says (or than a header).
    #[error("file is {found} bytes, expected {expected}")]
    Length {
        /// Expected length.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// No magic.
    #[error("not a ringraft snapshot (bad magic)")]
    Magic,
    /// Unknown format version.
    #[error("format version {0} is not supported")]
    Version(u32),
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    HeaderCrc,
    /// The body checksum does not match.
    #[error("body checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BodyCrc {
        /// In the header.
        stored: u32,
        /// Of the bytes read.
        computed: u32,
    },
    /// Written by another cluster or shard.
    #[error("belongs to cluster {cluster_id} shard {shard}")]
    Foreign {
        /// Cluster id in the file.
        cluster_id: u64,
        /// Shard in the file.
        shard: u64,
    },
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Cluster id.
    pub cluster_id: u64,
    /// Shard index.
    pub shard: u64,
    /// Last entry covered.
    pub snapshot: IoId,
    /// Body length.
    pub body_bytes: u64,
    /// CRC32C of the body.
    pub body_crc: u32,
}

impl SnapshotHeader {
    /// Encodes the 64-byte header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.shard.to_le_bytes());
        b[32..40].copy_from_slice(&self.snapshot.term.to_le_bytes());
        b[40..48].copy_from_slice(&self.snapshot.index.to_le_bytes());
        b[48..56].copy_from_slice(&self.body_bytes.to_le_bytes());
        b[56..60].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[16..]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header (not the body).
    pub fn decode(b: &[u8; HEADER_BYTES]) -> Result<SnapshotHeader, Damage> {
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if &b[0..8] != MAGIC {
            return Err(Damage::Magic);
        }
        if u32_at(8) != FORMAT_VERSION {
            return Err(Damage::Version(u32_at(8)));
        }
        if u32_at(12) != crc32c::crc32c(&b[16..]) {
            return Err(Damage::HeaderCrc);
        }
        Ok(SnapshotHeader {
            cluster_id: u64_at(16),
            shard: u64_at(24),
            snapshot: IoId::new(u64_at(32), u64_at(40)),
            body_bytes: u64_at(48),
            body_crc: u32_at(56),
        })
    }

    fn file_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + self.body_bytes
    }
}

/// `<dir>/shard-<i>.snap` beside `<dir>/shard-<i>.wal`.
pub fn snapshot_path(wal_path: &Path) -> PathBuf {
    wal_path.with_extension("snap")
}

fn io_error(
    path: &Path,
    context: &'static str,
) -> impl FnOnce(std::io::Error) -> SnapshotFileError {
    let path = path.to_path_buf();
    move |source| SnapshotFileError::Io {
        path,
        context,
        source,
    }
}

/// Reads and checks the header of `file` (its length too), for `cluster_id`
/// and `shard`.
pub fn read_header(
    file: &File,
    path: &Path,
    cluster_id: u64,
    shard: u64,
) -> Result<SnapshotHeader, SnapshotFileError> {
    let damaged = |reason| SnapshotFileError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let found = file.metadata().map_err(io_error(path, "stat"))?.len();
    if found < HEADER_BYTES as u64 {
        return Err(damaged(Damage::Length {
            expected: HEADER_BYTES as u64,
            found,
        }));
    }
    let mut bytes = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(io_error(path, "read header"))?;
    let header = SnapshotHeader::decode(&bytes).map_err(damaged)?;
    if header.cluster_id != cluster_id || header.shard != shard {
        return Err(damaged(Damage::Foreign {
            cluster_id: header.cluster_id,
            shard: header.shard,
        }));
    }
    if found != header.file_bytes() {
        return Err(damaged(Damage::Length {
            expected: header.file_bytes(),
            found,
        }));
    }
    Ok(header)
}

/// Feeds the body of a checked file to `sm.install_chunk` through `buf`,
/// checking the body checksum before the last chunk (the one that makes
/// the state machine switch to the new state).
pub fn install_file<S: StateMachine>(
    file: &File,
    path: &Path,
    header: &SnapshotHeader,
    sm: &mut S,
    buf: &mut [u8],
) -> Result<(), SnapshotFileError> {
    let mut offset = 0u64;
    let mut crc = 0u32;
    loop {
        let len = (header.body_bytes - offset).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..len];
        file.read_exact_at(chunk, HEADER_BYTES as u64 + offset)
            .map_err(io_error(path, "read body"))?;
        crc = crc32c::crc32c_append(crc, chunk);
        let done = offset + len as u64 == header.body_bytes;
        if done && crc != header.body_crc {
            return Err(SnapshotFileError::Damaged {
                path: path.to_path_buf(),
                reason: Damage::BodyCrc {
                    stored: header.body_crc,
                    computed: crc,
                },
            });
        }
        sm.install_chunk(header.snapshot, offset, chunk, done)
            .map_err(|source| SnapshotFileError::Install {
                path: path.to_path_buf(),
                source,
            })?;
        offset += len as u64;
        if done {
            return Ok(());
        }
    }
}

/// A new (or emptied) file open for writing and reading back: a built or
/// received file is kept open to send and install from.
fn create_read_write(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

fn snapshot_err(shard: u32) -> impl FnOnce(SnapshotFileError) -> ShardError {
    move |source| ShardError::Snapshot { shard, source }
}

/// Starts writing `len` bytes at `offset` of `file` back to disk without
/// waiting, so the build's final fsync has little left to wait for (the
/// loop turn that completes a build stays short). Advisory: an error only
/// leaves the work to the fsync.
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open fd we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// fsync of the directory holding `path`, so a rename into it is durable.
fn sync_dir(path: &Path) -> Result<(), SnapshotFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync directory"))
}

/// The term of entry `index` in the WAL, if the WAL holds it.
fn wal_term_at(wal: &mut Wal, index: u64) -> Option<u64> {
    if index < wal.first_index() || index > wal.last_id().index {
        return None;
    }
    let view = wal.read(index, 64 << 10).ok()?;
    view.records()
        .filter_map(Result::ok)
        .find(|r| r.header.kind == RecordKind::Entry && r.header.index == index)
        .map(|r| r.header.term)
}

/// The persisted snapshot file, open for sending.
#[derive(Debug)]
pub(super) struct Persisted {
    file: File,
    pub(super) id: IoId,
    pub(super) bytes: u64,
}

/// A build in progress: `body_bytes` of the state machine's snapshot `id`
/// are in the temp file after its header.
#[derive(Debug)]
struct Build {
    file: File,
    id: IoId,
    body_bytes: u64,
    crc: u32,
    /// When it started (apply has waited since) and the loop turns it took:
    /// logged, so the stall a build causes is visible.
    started: std::time::Instant,
    turns: u32,
    /// Time in `snapshot_chunk`, in writes, in `sync_file_range`.
    times: [std::time::Duration; 3],
}

/// A snapshot being received from the leader into the staging file.
#[derive(Debug)]
struct Incoming {
    file: File,
    snapshot: IoId,
}

/// One shard's compaction state. Every buffer is allocated at start.
#[derive(Debug)]
pub(super) struct Compaction {
    config: SnapshotConfig,
    cluster_id: u64,
    shard: u64,
    path: PathBuf,
    build_path: PathBuf,
    receive_path: PathBuf,
    /// Build, send and install buffer: `msg_bytes_max` bytes (a chunk).
    buf: Box<[u8]>,
    pub(super) current: Option<Persisted>,
    build: Option<Build>,
    /// After a failed build, wait until applied passes this index.
    retry_after_index: u64,
    incoming: Option<Incoming>,
    /// Per peer: the newest chunk the core asked to send (latest wins,
    /// like the core's outbox), held while the data lane is busy.
    chunks_to_send: Vec<Option<Message>>,
}

impl Compaction {
    /// A shard's compaction state; `current` is the snapshot loaded at start.
    pub(super) fn new(
        config: &ShardConfig,
        peers: usize,
        current: Option<Persisted>,
    ) -> Compaction {
        let path = snapshot_path(&config.wal_path);
        Compaction {
            config: config.snapshot,
            cluster_id: config.cluster_id,
            shard: u64::from(config.shard_id),
            build_path: path.with_extension("snap.tmp"),
            receive_path: path.with_extension("snap.recv"),
            path,
            buf: vec![0u8; chunk_bytes(config)].into_boxed_slice(),
            current,
            build: None,
            retry_after_index: 0,
            incoming: None,
            chunks_to_send: vec![None; peers],
        }
    }

    /// A snapshot is being built: apply waits until it is written.
    pub(super) fn building(&self) -> bool {
        self.build.is_some()
    }

    fn abandon_build(&mut self) {
        if self.build.take().is_some() {
            let _ = std::fs::remove_file(&self.build_path);
        }
    }
}

fn chunk_bytes(config: &ShardConfig) -> usize {
    // The core cuts chunks of at most msg_bytes_max; 4 KiB at least so a
    // state machine's smallest item fits.
    (config.raft.msg_bytes_max as usize).max(4 << 10)
}

/// At start: loads `shard-<i>.snap` into `sm` (checked first) and makes the
/// WAL start right after it. Returns the loaded snapshot.
pub(super) fn load_at_start<S: StateMachine>(
    config: &ShardConfig,
    wal: &mut Wal,
    sm: &mut S,
) -> Result<Option<Persisted>, ShardError> {
    let shard = config.shard_id;
    let snap_err = |source| ShardError::Snapshot { shard, source };
    let path = snapshot_path(&config.wal_path);
    // Leftovers of a build or a receive cut short by a crash.
    for extension in ["snap.tmp", "snap.recv"] {
        let _ = std::fs::remove_file(path.with_extension(extension));
    }
    let wal_start = wal.superblock().start_prev;
    if !path.exists() {
        if wal_start.index > 0 {
            return Err(snap_err(SnapshotFileError::NotCovered {
                path,
                snapshot: IoId::ZERO,
                wal_start,
            }));
        }
        return Ok(None);
    }
    let file = File::open(&path)
        .map_err(io_error(&path, "open"))
        .map_err(snap_err)?;
    let header =
        read_header(&file, &path, config.cluster_id, u64::from(shard)).map_err(snap_err)?;
    let mut buf = vec![0u8; chunk_bytes(config)];
    install_file(&file, &path, &header, sm, &mut buf).map_err(snap_err)?;
    let id = header.snapshot;
    if wal_start.index > id.index {
        return Err(snap_err(SnapshotFileError::NotCovered {
            path,
            snapshot: id,
            wal_start,
        }));
    }
    let wal_err = |source| ShardError::Wal {
        shard,
        path: config.wal_path.clone(),
        source,
    };
    if wal_start.index < id.index {
        // A crash between writing the snapshot and purging (or, on a
        // follower, resetting) the WAL: finish that now.
        if wal_term_at(wal, id.index) == Some(id.term) {
            wal.purge_to(id.index).map_err(wal_err)?;
        } else {
            wal.reset_to(id).map_err(wal_err)?;
        }
    }
    log::info!(
        "shard {shard}: loaded snapshot {id} ({} bytes) from {}; replaying the WAL after index {}",
        header.file_bytes(),
        path.display(),
        id.index
    );
    Ok(Some(Persisted {
        file,
        id,
        bytes: header.file_bytes(),
    }))
}

impl<S: StateMachine> Shard<S> {
    fn compaction_due(&self) -> bool {
        let applied = self.sm.applied().index;
        let log = self.raft.log();
        let covered = log.snapshot().index;
        // Applied may run ahead of this node's own flush (apply follows
        // the quorum's); the purge after a build needs its entries durable
        // here, so a snapshot waits until they are.
        if applied <= covered
            || applied < self.compaction.retry_after_index
            || applied > log.durable_index()
        {
            return false;
        }
        let config = &self.compaction.config;
        let reclaimable_bytes = log.bytes_between(covered + 1, applied);
        // A percent of 0 would snapshot after every entry: taken as 1.
        let percent = u64::from(config.snapshot_log_percent.clamp(1, 100));
        let threshold_bytes = self.wal.capacity_bytes() / 100 * percent;
        reclaimable_bytes >= threshold_bytes || applied - covered >= config.snapshot_entries
    }

    /// One loop turn's share of compaction: start a build when due, write
    /// up to `build_chunks_per_turn_max` chunks, finish it when complete.
    pub(super) fn maybe_compact(&mut self) -> Result<(), ShardError> {
        if self.compaction.build.is_none() {
            if !self.compaction_due() {
                return Ok(());
            }
            self.start_build()?;
        }
        self.worked = true;
        if let Some(build) = self.compaction.build.as_mut() {
            build.turns += 1;
        }
        let config = &self.compaction.config;
        let chunks_max = if self.sm.applies_during_build() {
            config.build_chunks_per_turn_applying
        } else {
            config.build_chunks_per_turn_max
        };
        for _ in 0..chunks_max.max(1) {
            let build = self.compaction.build.as_mut().expect("a build in progress");
            let t0 = std::time::Instant::now();
            let chunk = match self
                .sm
                .snapshot_chunk(build.body_bytes, &mut self.compaction.buf)
            {
                Ok(chunk) => chunk,
                Err(error) => {
                    log::warn!(
                        "shard {}: snapshot build at offset {} failed: {error}; retrying later",
                        self.shard,
                        build.body_bytes
                    );
                    let applied = self.sm.applied().index;
                    let wait = self.compaction.config.snapshot_entries.min(1 << 16);
                    self.compaction.retry_after_index = applied + wait;
                    self.compaction.abandon_build();
                    return Ok(());
                }
            };
            assert_eq!(chunk.snapshot, build.id, "a build covers one state");
            let bytes = &self.compaction.buf[..chunk.bytes];
            let t1 = std::time::Instant::now();
            build.times[0] += t1 - t0;
            build
                .file
                .write_all_at(bytes, HEADER_BYTES as u64 + build.body_bytes)
                .map_err(io_error(&self.compaction.build_path, "write"))
                .map_err(snapshot_err(self.shard))?;
            let t2 = std::time::Instant::now();
            build.times[1] += t2 - t1;
            start_writeback(
                &build.file,
                HEADER_BYTES as u64 + build.body_bytes,
                bytes.len(),
            );
            build.times[2] += t2.elapsed();
            build.crc = crc32c::crc32c_append(build.crc, bytes);
            build.body_bytes += chunk.bytes as u64;
            if chunk.done {
                return self.finish_build();
            }
        }
        Ok(())
    }

    fn start_build(&mut self) -> Result<(), ShardError> {
        let path = &self.compaction.build_path;
        let file = create_read_write(path)
            .map_err(io_error(path, "create"))
            .map_err(snapshot_err(self.shard))?;
        self.compaction.build = Some(Build {
            file,
            id: self.sm.applied(),
            body_bytes: 0,
            crc: 0,
            started: std::time::Instant::now(),
            turns: 0,
            times: [std::time::Duration::ZERO; 3],
        });
        Ok(())
    }

    fn finish_build(&mut self) -> Result<(), ShardError> {
        let build = self.compaction.build.take().expect("a build in progress");
        let header = SnapshotHeader {
            cluster_id: self.compaction.cluster_id,
            shard: self.compaction.shard,
            snapshot: build.id,
            body_bytes: build.body_bytes,
            body_crc: build.crc,
        };
        let (tmp, path) = (&self.compaction.build_path, &self.compaction.path);
        let chunks_time = build.started.elapsed();
        let times = build.times;
        let written = build
            .file
            .write_all_at(&header.encode(), 0)
            .map_err(io_error(tmp, "write header"))
            .and_then(|()| build.file.sync_all().map_err(io_error(tmp, "fsync")))
            .and_then(|()| std::fs::rename(tmp, path).map_err(io_error(path, "rename")))
            .and_then(|()| sync_dir(path));
        written.map_err(snapshot_err(self.shard))?;
        let bytes = header.file_bytes();
        let (build_time, turns) = (build.started.elapsed(), build.turns);
        self.compaction.current = Some(Persisted {
            file: build.file,
            id: build.id,
            bytes,
        });
        if let Err(error) = self.raft.compacted(build.id, bytes) {
            panic!("the core refused a snapshot of applied entries: {error}");
        }
        self.wal
            .purge_to(build.id.index)
            .map_err(|e| self.wal_error(e))?;
        log::info!(
            "shard {}: snapshot {} ({bytes} bytes) written to {} in {build_time:.1?} \
             ({turns} loop turns, {chunks_time:.1?} of them writing chunks: state {:.1?}, write {:.1?}, \
             writeback {:.1?}); WAL purged up to index {}",
            self.shard,
            build.id,
            path.display(),
            times[0],
            times[1],
            times[2],
            build.id.index
        );
        Ok(())
    }

    // ----- leader: sending ---------------------------------------------

    /// Holds the core's request to send a snapshot chunk to `peer` until its
    /// data lane can take it (a newer request replaces an unsent one).
    pub(super) fn queue_snapshot_chunk(&mut self, peer: usize, msg: Message) {
        self.compaction.chunks_to_send[peer] = Some(msg);
    }

    /// Sends the held chunks whose data lane is ready, read from the
    /// persisted file through the one chunk buffer.
    pub(super) fn send_snapshot_chunks(&mut self) {
        for peer in 0..self.compaction.chunks_to_send.len() {
            if self.compaction.chunks_to_send[peer].is_none()
                || !self.transport.data_send_ready(peer)
            {
                continue;
            }
            let msg = self.compaction.chunks_to_send[peer]
                .take()
                .expect("checked");
            let Body::SnapshotChunk {
                snapshot,
                offset,
                len,
                total_bytes,
            } = msg.body
            else {
                unreachable!("only snapshot chunks are queued");
            };
            let compaction = &mut self.compaction;
            let read = match &compaction.current {
                Some(current) if current.id == snapshot && current.bytes == total_bytes => {
                    let chunk = &mut compaction.buf[..len as usize];
                    current
                        .file
                        .read_exact_at(chunk, offset)
                        .map_err(io_error(&compaction.path, "read to send"))
                }
                _ => Err(SnapshotFileError::NotCovered {
                    path: compaction.path.clone(),
                    snapshot,
                    wal_start: self.wal.superblock().start_prev,
                }),
            };
            if let Err(error) = read {
                log::warn!(
                    "shard {}: cannot send snapshot {snapshot} to node {}: {error}",
                    self.shard,
                    msg.to
                );
                self.raft.snapshot_failed(msg.to);
                continue;
            }
            let head = InstallSnapshot {
                term: msg.term,
                snapshot_term: snapshot.term,
                snapshot_index: snapshot.index,
                offset,
                total_bytes,
                data_crc: 0,
                last: offset + len >= total_bytes,
            };
            let chunk = &self.compaction.buf[..len as usize];
            if let Err(error) = self.transport.send_snapshot_chunk(peer, head, chunk) {
                // The core resends the chunk on its next heartbeat.
                log::debug!("shard {}: snapshot chunk not sent: {error}", self.shard);
            }
            self.worked = true;
        }
    }

    // ----- follower: receiving -------------------------------------------

    /// A snapshot chunk from `peer`'s data lane, now in `scratch[..bytes]`.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        peer: usize,
        head: InstallSnapshot,
        bytes: usize,
    ) -> Result<(), ShardError> {
        let msg = Message {
            from: self.peer_ids[peer],
            to: self.me,
            term: head.term,
            body: Body::SnapshotChunk {
                snapshot: IoId::new(head.snapshot_term, head.snapshot_index),
                offset: head.offset,
                len: bytes as u64,
                total_bytes: head.total_bytes,
            },
        };
        let StepOutcome::StoreSnapshotChunk {
            snapshot,
            offset,
            len,
            complete,
        } = self.raft.step(msg)
        else {
            return Ok(());
        };
        let path = self.compaction.receive_path.clone();
        if offset == 0 {
            let file = create_read_write(&path)
                .map_err(io_error(&path, "create"))
                .map_err(snapshot_err(self.shard))?;
            self.compaction.incoming = Some(Incoming { file, snapshot });
        }
        let Some(incoming) = self
            .compaction
            .incoming
            .as_ref()
            .filter(|i| i.snapshot == snapshot)
        else {
            log::warn!(
                "shard {}: snapshot {snapshot} chunk at {offset} without its start; dropped",
                self.shard
            );
            return Ok(());
        };
        incoming
            .file
            .write_all_at(&self.scratch[..len as usize], offset)
            .map_err(io_error(&path, "write"))
            .map_err(snapshot_err(self.shard))?;
        if complete {
            self.install_received(snapshot, offset + len)?;
        }
        Ok(())
    }

    /// The last chunk of `snapshot` arrived: check the staged file, install
    /// it, keep it as our snapshot, make the WAL continue after it.
    fn install_received(&mut self, snapshot: IoId, total_bytes: u64) -> Result<(), ShardError> {
        let Some(incoming) = self.compaction.incoming.take() else {
            log::warn!(
                "shard {}: snapshot {snapshot} complete but not staged",
                self.shard
            );
            return Ok(());
        };
        let path = self.compaction.receive_path.clone();
        if snapshot.index <= self.raft.committed_index() {
            // Our log caught up meanwhile: apply gets there from the WAL.
            let _ = std::fs::remove_file(&path);
            self.raft.snapshot_installed(snapshot, total_bytes);
            return Ok(());
        }
        incoming
            .file
            .sync_all()
            .map_err(io_error(&path, "fsync"))
            .map_err(snapshot_err(self.shard))?;
        let compaction = &mut self.compaction;
        let checked = read_header(
            &incoming.file,
            &path,
            compaction.cluster_id,
            compaction.shard,
        )
        .and_then(|header| {
            if header.snapshot != snapshot || header.file_bytes() != total_bytes {
                return Err(SnapshotFileError::Damaged {
                    path: path.clone(),
                    reason: Damage::Length {
                        expected: total_bytes,
                        found: header.file_bytes(),
                    },
                });
            }
            // A build of our older state must not replace this one.
            compaction.abandon_build();
            install_file(
                &incoming.file,
                &path,
                &header,
                &mut self.sm,
                &mut compaction.buf,
            )
        });
        if let Err(error) = checked {
            // Chunks are CRC-checked on the wire, so a bad file here means
            // our disk returned other bytes than we wrote, or the state
            // machine cannot read its leader's snapshot: stop (fail-stop,
            // as for a failed WAL write). The core keeps no way to forget a
            // completed snapshot; a restart receives it again.
            let _ = std::fs::remove_file(&path);
            return Err(snapshot_err(self.shard)(error));
        }
        let final_path = self.compaction.path.clone();
        std::fs::rename(&path, &final_path)
            .map_err(io_error(&final_path, "rename"))
            .and_then(|()| sync_dir(&final_path))
            .map_err(snapshot_err(self.shard))?;
        if self.raft.log().term_at(snapshot.index) == Some(snapshot.term) {
            // Our log holds the snapshot's last entry: keep what follows.
            self.wal.sync().map_err(|e| self.wal_error(e))?;
            self.wal
                .purge_to(snapshot.index)
                .map_err(|e| self.wal_error(e))?;
        } else {
            // A partial frame in lent ring memory continues the old log: its
            // lend would land in the old log's coordinates (reset_to refuses).
            self.release_ring(&"the log restarts after an installed snapshot");
            self.wal.reset_to(snapshot).map_err(|e| self.wal_error(e))?;
        }
        self.raft.snapshot_installed(snapshot, total_bytes);
        self.compaction.current = Some(Persisted {
            file: incoming.file,
            id: snapshot,
            bytes: total_bytes,
        });
        log::info!(
            "shard {}: installed snapshot {snapshot} ({total_bytes} bytes) from the leader; \
             the log continues after index {}",
            self.shard,
            snapshot.index
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_any_flipped_bit_is_refused() {
        let header = SnapshotHeader {
            cluster_id: 7,
            shard: 3,
            snapshot: IoId::new(5, 1234),
            body_bytes: 999,
            body_crc: 0xDEAD_BEEF,
        };
        let bytes = header.encode();
        assert_eq!(SnapshotHeader::decode(&bytes), Ok(header));
        for bit in 0..HEADER_BYTES * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SnapshotHeader::decode(&damaged).is_err(),
                "bit {bit} flipped passed"
            );
        }
    }
}
