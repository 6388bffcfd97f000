//! The WAL ring: one preallocated file, one ring of memory, one io_uring.
//!
//! ```text
//!  log positions (bytes, only grow):
//!
//!    start ........ durable ....... submitted ....... accepted ▶ room
//!    |  on disk     |  being written  |  dirty, in memory only  |
//!    purged         flushed           submitted                accepted   (watermarks, IoIds)
//!
//!  memory holds positions [mem_low, accepted), mem_low = max(mem_valid_from, accepted - M)
//!  Invariant: mem_valid_from is block-aligned and <= block_floor(durable)
//!  Invariant (room_for): accepted - M <= block_floor(durable)   (never overwrite what is not durable)
//!  Invariant (room_for): block_ceil(accepted) <= block_floor(start) + C   (never overwrite the live file)
//!  Invariant: durable and submitted are record boundaries; IOs start at block_floor(submitted).
//! ```
//!
//! The writer (`append*`) and the flusher (`flush_submit` / `flush_reap` /
//! `flush_wait`) run on the owner's thread and share only positions; other
//! tasks observe the four [`Watermark`]s. Nothing here allocates after open.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, WalError};
use crate::flusher::{Flusher, IoSlot};
use crate::index::ChunkIndex;
use crate::record::{
    self, HEADER_BYTES, RecordError, RecordHeader, RecordKind, Records, RunSummary,
};
use crate::ring::{AlignedMemory, BLOCK_BYTES, block_ceil, block_floor};
use crate::superblock::{HardState, SUPERBLOCK_AREA_BYTES, SUPERBLOCK_BYTES, Superblock};
use crate::{IoId, Watermark};

/// Knobs that size the WAL's buffers and queues; chosen at open.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Writes in flight at once.
    pub flush_ios_max: usize,
    /// Largest single write (one record larger than this still goes in one write).
    pub flush_io_bytes_max: usize,
    /// The preallocated buffer file reads go through; bounds the largest record.
    pub read_buffer_bytes: usize,
    /// Granularity of the index → position map (power of two).
    pub index_chunk_bytes: u64,
    /// After an append, a remainder of the 4 KiB block this small is padded,
    /// so the next record starts on a fresh block and a write of it does not
    /// rewrite the previous block (0 disables).
    pub block_pad_bytes_max: usize,
    /// Register ring memory as an io_uring fixed buffer (falls back to plain
    /// writes, logged once, if the kernel refuses).
    pub register_buffer: bool,
    /// Tasks that may await each watermark.
    pub watermark_waiters_max: usize,
    /// Issue the log writes (the flusher's ring writes) with `RWF_DSYNC`.
    ///
    /// true (default): `flushed` / the durable point means the bytes are on
    /// stable storage; an acknowledged write survives power loss.
    ///
    /// false (`--durability none`): the same O_DIRECT writes through the same
    /// flusher and watermarks, without `RWF_DSYNC`, so `flushed` only means
    /// "handed to the device": the bytes survive a crash of the process (they
    /// bypassed the page cache) but may still sit in the device's volatile
    /// write cache and be lost on power failure or a kernel crash. Superblock
    /// writes (hard state, purge) and truncation stay synchronous either way,
    /// and dropping a writable WAL issues one `fdatasync`, so a clean close
    /// is durable in both modes.
    pub sync_writes: bool,
    /// TESTING ONLY (fault injection): every log write completes this much
    /// later than the disk says, as if the disk were slow (zero: off, the
    /// default). The delay is an io_uring timer linked after the write, so
    /// the caller's loop never blocks on it. Also settable while running
    /// with [`Wal::set_fault_flush_delay`].
    pub fault_flush_delay: std::time::Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            flush_ios_max: 4,
            flush_io_bytes_max: 1 << 20,
            read_buffer_bytes: 1 << 20,
            index_chunk_bytes: 64 << 10,
            block_pad_bytes_max: 256,
            register_buffer: true,
            watermark_waiters_max: 16,
            sync_writes: true,
            fault_flush_delay: std::time::Duration::ZERO,
        }
    }
}

/// How to make a new WAL file.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    /// Cluster the file belongs to.
    pub cluster_id: u128,
    /// Shard the file belongs to.
    pub shard_id: u64,
    /// Size of the data area (a multiple of `ring_bytes`).
    pub capacity_bytes: u64,
    /// Size of ring memory (a multiple of 4 KiB).
    pub ring_bytes: u64,
    /// Bound on the bytes past the durable point that writes in flight may
    /// touch; also how far past the end recovery treats bad records as a
    /// torn tail rather than damage. At most (ring_bytes - 4096) / 2, at
    /// least the largest write plus two blocks.
    pub inflight_bytes_max: u64,
    /// Write the whole data area once so later overwrites change no file
    /// metadata (false: only fallocate, for measuring the difference).
    pub write_through: bool,
    /// Buffers and queues.
    pub tuning: Tuning,
}

impl Default for CreateOptions {
    fn default() -> CreateOptions {
        CreateOptions {
            cluster_id: 0,
            shard_id: 0,
            capacity_bytes: 1 << 30,
            ring_bytes: 64 << 20,
            inflight_bytes_max: 8 << 20,
            write_through: true,
            tuning: Tuning::default(),
        }
    }
}

/// How to open an existing WAL file.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Refuse a file of another cluster (None: accept any, for tools).
    pub cluster_id: Option<u128>,
    /// Damage before the tail cuts the log there instead of failing open.
    pub truncate_damaged: bool,
    /// Open without writing anything (tools); appends fail.
    pub read_only: bool,
    /// Buffers and queues.
    pub tuning: Tuning,
}

/// What recovery found when the WAL was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Log position where the valid log ends (and appends continue).
    pub end_position: u64,
    /// Last valid entry (or the entry before the live start if none).
    pub last: IoId,
    /// Entries recovered.
    pub entries: u64,
    /// Torn or damaged records found past the end and discarded.
    pub discarded_records: u64,
    /// Bytes those records spanned.
    pub discarded_bytes: u64,
    /// Why the scan stopped, if at something that looked like a record.
    pub stop: Option<RecordError>,
    /// The scan stopped at damage with valid entries after it, and the caller
    /// asked to truncate there.
    pub damage_truncated: bool,
}

/// Log positions (bytes of the data area, only growing) of the WAL's
/// boundaries: `start <= durable <= submitted <= accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// First live record.
    pub start: u64,
    /// End of what is durable.
    pub durable: u64,
    /// End of what was handed to the kernel.
    pub submitted: u64,
    /// End of what was appended.
    pub accepted: u64,
}

/// The write-ahead log of one shard.
///
/// `Send` (it may be built on one thread and moved to its shard's thread),
/// not `Sync`: one owner drives it.
///
/// ```no_run
/// use ringraft_wal::{CreateOptions, Wal};
///
/// # fn main() -> Result<(), ringraft_wal::WalError> {
/// let mut wal = Wal::create("/var/tmp/shard-0.wal", &CreateOptions::default())?;
/// let mut flushed = wal.flushed().waiter().expect("a waiter slot"); // at start-up
/// let id = wal.append_with(1, 5, |payload| payload.copy_from_slice(b"hello"))?;
/// // An executor's flusher task: submit what is dirty (never blocks), then
/// // await readiness of `wal.completion_eventfd()`, clear it and reap.
/// wal.flush_submit()?;
/// wal.clear_completion_eventfd();
/// wal.flush_reap()?;
/// // A thread with nothing else to do blocks instead, in one system call:
/// while wal.flushed().get() < id {
///     wal.flush_submit_and_wait()?;
/// }
/// // Other tasks await the watermark: `flushed.wait_for(id).await`.
/// # let _ = &mut flushed;
/// let view = wal.read(id.index, 64 << 10)?; // in place, no copy
/// assert_eq!(view.last(), id);
/// # Ok(())
/// # }
/// ```
pub struct Wal {
    // Dropped first: in-flight IOs reference `memory` (Drop drains them too).
    pub(crate) flusher: Flusher,
    pub(crate) file: File,
    pub(crate) memory: AlignedMemory,
    pub(crate) read_buffer: AlignedMemory,
    /// Part of the log held in `read_buffer`: [read_window_start, + read_window_len).
    pub(crate) read_window_start: u64,
    pub(crate) read_window_len: usize,
    /// Reads of the file into `read_buffer` so far (see `Wal::file_reads`).
    pub(crate) file_reads: u64,
    pub(crate) superblock_buffer: AlignedMemory,
    pub(crate) superblock: Superblock,
    pub(crate) index: ChunkIndex,
    pub(crate) tuning: Tuning,
    pub(crate) read_only: bool,
    pub(crate) ring_bytes: u64,
    pub(crate) capacity_bytes: u64,
    pub(crate) record_bytes_max: usize,
    pub(crate) start_position: u64,
    pub(crate) accepted_position: u64,
    pub(crate) submitted_position: u64,
    pub(crate) durable_position: u64,
    pub(crate) mem_valid_from: u64,
    pub(crate) last_id: IoId,
    pub(crate) submitted_id: IoId,
    pub(crate) durable_id: IoId,
    /// Set by the first failed write: (log position, errno). Never cleared.
    pub(crate) failure: Option<(u64, i32)>,
    pub(crate) accepted: Arc<Watermark>,
    pub(crate) submitted: Arc<Watermark>,
    pub(crate) flushed: Arc<Watermark>,
    pub(crate) purged: Arc<Watermark>,
    pub(crate) report: RecoveryReport,
    /// Ring memory lent to a receiver (see `lend.rs`): (log position, bytes).
    /// While set, appends and truncation are refused.
    pub(crate) lent: Option<(u64, usize)>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("start_position", &self.start_position)
            .field("durable_position", &self.durable_position)
            .field("accepted_position", &self.accepted_position)
            .field("last", &self.last_id)
            .field("flusher", &self.flusher)
            .finish()
    }
}

fn open_direct(path: &Path, read_only: bool, create: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .create_new(create)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| WalError::io("open WAL file", e))
}

/// Writes `buf` at `offset` and waits until it is durable (RWF_DSYNC).
fn pwrite_dsync(fd: RawFd, buf: &[u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let iovec = libc::iovec {
            iov_base: buf[done..].as_ptr() as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        // SAFETY: one iovec over a live slice; the call does not retain it.
        let written = unsafe {
            libc::pwritev2(
                fd,
                &iovec,
                1,
                (offset + done as u64) as libc::off_t,
                libc::RWF_DSYNC,
            )
        };
        if written < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += written as usize;
    }
    Ok(())
}

fn errno_of(error: &std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(0)
}

impl Wal {
    /// Creates a WAL file at `path` (which must not exist) and opens it.
    pub fn create(path: impl AsRef<Path>, options: &CreateOptions) -> Result<Wal> {
        let path = path.as_ref();
        check_geometry(
            options.capacity_bytes,
            options.ring_bytes,
            options.inflight_bytes_max,
            &options.tuning,
        )?;
        let file = open_direct(path, false, true)?;
        let file_bytes = SUPERBLOCK_AREA_BYTES + options.capacity_bytes;
        // SAFETY: plain syscall on our descriptor.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, file_bytes as libc::off_t) };
        if rc != 0 {
            return Err(WalError::io("fallocate", std::io::Error::last_os_error()));
        }
        if options.write_through {
            // Write every block once: later O_DIRECT overwrites then find
            // initialised extents and need no metadata update.
            let chunk_bytes = (8u64 << 20).min(options.capacity_bytes) as usize;
            let zeros = AlignedMemory::new(chunk_bytes, "write-through buffer")?;
            let mut offset = 0;
            while offset < options.capacity_bytes {
                let len = chunk_bytes.min((options.capacity_bytes - offset) as usize);
                file.write_all_at(zeros.slice(0, len), SUPERBLOCK_AREA_BYTES + offset)
                    .map_err(|e| WalError::io("write through WAL file", e))?;
                offset += len as u64;
            }
        }
        let mut block = AlignedMemory::new(SUPERBLOCK_BYTES, "superblock buffer")?;
        for generation in 1..=2 {
            let superblock = Superblock {
                generation,
                cluster_id: options.cluster_id,
                shard_id: options.shard_id,
                capacity_bytes: options.capacity_bytes,
                ring_bytes: options.ring_bytes,
                start_position: 0,
                start_prev: IoId::ZERO,
                hard_state: HardState::default(),
                truncate_term: 0,
                inflight_bytes_max: options.inflight_bytes_max,
            };
            superblock.encode(block.slice_mut(0, SUPERBLOCK_BYTES));
            file.write_all_at(
                block.slice(0, SUPERBLOCK_BYTES),
                Superblock::copy_offset(generation),
            )
            .map_err(|e| WalError::io("write superblock", e))?;
        }
        file.sync_all()
            .map_err(|e| WalError::io("sync new WAL file", e))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| WalError::io("sync WAL directory", e))?;
        }
        drop(file);
        let open = OpenOptions {
            cluster_id: Some(options.cluster_id),
            truncate_damaged: false,
            read_only: false,
            tuning: options.tuning,
        };
        Wal::open(path, &open)
    }

    /// Reads the superblock of a WAL file without opening the log (tools
    /// size their buffers from it).
    pub fn read_superblock(path: impl AsRef<Path>) -> Result<Superblock> {
        let file = open_direct(path.as_ref(), true, false)?;
        let mut buffer = AlignedMemory::new(2 * SUPERBLOCK_BYTES, "superblock buffer")?;
        file.read_exact_at(buffer.slice_mut(0, 2 * SUPERBLOCK_BYTES), 0)
            .map_err(|e| WalError::io("read superblock", e))?;
        Superblock::pick(
            buffer.slice(0, SUPERBLOCK_BYTES),
            buffer.slice(SUPERBLOCK_BYTES, SUPERBLOCK_BYTES),
        )
    }

    /// Opens an existing WAL file and recovers its log (see [`RecoveryReport`]).
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Wal> {
        let file = open_direct(path.as_ref(), options.read_only, false)?;
        let mut superblock_buffer = AlignedMemory::new(2 * SUPERBLOCK_BYTES, "superblock buffer")?;
        file.read_exact_at(superblock_buffer.slice_mut(0, 2 * SUPERBLOCK_BYTES), 0)
            .map_err(|e| WalError::io("read superblock", e))?;
        let superblock = Superblock::pick(
            superblock_buffer.slice(0, SUPERBLOCK_BYTES),
            superblock_buffer.slice(SUPERBLOCK_BYTES, SUPERBLOCK_BYTES),
        )?;
        if let Some(expected) = options.cluster_id
            && expected != superblock.cluster_id
        {
            return Err(WalError::ClusterMismatch {
                found: superblock.cluster_id,
                expected,
            });
        }
        let tuning = options.tuning;
        check_geometry(
            superblock.capacity_bytes,
            superblock.ring_bytes,
            superblock.inflight_bytes_max,
            &tuning,
        )?;
        let file_bytes = file
            .metadata()
            .map_err(|e| WalError::io("stat WAL file", e))?
            .len();
        if file_bytes < SUPERBLOCK_AREA_BYTES + superblock.capacity_bytes {
            return Err(WalError::Corrupt {
                file_offset: file_bytes,
                position: 0,
                source: RecordError::Truncated {
                    needed: (SUPERBLOCK_AREA_BYTES + superblock.capacity_bytes) as usize,
                    available: file_bytes as usize,
                },
            });
        }
        let memory = AlignedMemory::new(superblock.ring_bytes as usize, "ring memory")?;
        let (mut flusher, refusal) = Flusher::new(
            tuning.flush_ios_max,
            memory.as_ptr(),
            memory.len(),
            tuning.register_buffer && !options.read_only,
            tuning.sync_writes,
        )?;
        flusher.set_fault_delay(tuning.fault_flush_delay);
        if let Some(reason) = refusal {
            // Logged once per WAL: writes still go straight from ring memory.
            eprintln!(
                "ringraft-wal: ring memory not registered as an io_uring fixed buffer ({reason}); \
                 using plain O_DIRECT writes from the same memory"
            );
        }
        let watermark = |name| {
            Arc::new(Watermark::new(
                name,
                superblock.start_prev,
                tuning.watermark_waiters_max,
            ))
        };
        let mut wal = Wal {
            flusher,
            file,
            memory,
            read_buffer: AlignedMemory::new(tuning.read_buffer_bytes, "read buffer")?,
            read_window_start: 0,
            read_window_len: 0,
            file_reads: 0,
            superblock_buffer: AlignedMemory::new(SUPERBLOCK_BYTES, "superblock buffer")?,
            superblock,
            index: ChunkIndex::new(superblock.capacity_bytes, tuning.index_chunk_bytes),
            tuning,
            read_only: options.read_only,
            ring_bytes: superblock.ring_bytes,
            capacity_bytes: superblock.capacity_bytes,
            record_bytes_max: tuning.read_buffer_bytes - BLOCK_BYTES,
            start_position: superblock.start_position,
            accepted_position: superblock.start_position,
            submitted_position: superblock.start_position,
            durable_position: superblock.start_position,
            mem_valid_from: superblock.start_position,
            last_id: superblock.start_prev,
            submitted_id: superblock.start_prev,
            durable_id: superblock.start_prev,
            failure: None,
            accepted: watermark("accepted"),
            submitted: watermark("submitted"),
            flushed: watermark("flushed"),
            purged: watermark("purged"),
            report: RecoveryReport {
                end_position: superblock.start_position,
                last: superblock.start_prev,
                entries: 0,
                discarded_records: 0,
                discarded_bytes: 0,
                stop: None,
                damage_truncated: false,
            },
            lent: None,
        };
        drop(superblock_buffer);
        wal.recover(options.truncate_damaged)?;
        Ok(wal)
    }

    // ---- positions -------------------------------------------------------

    pub(crate) fn file_offset(&self, position: u64) -> u64 {
        SUPERBLOCK_AREA_BYTES + position % self.capacity_bytes
    }

    pub(crate) fn ring_offset(&self, position: u64) -> usize {
        (position % self.ring_bytes) as usize
    }

    /// First position of the next ring segment after `position`.
    pub(crate) fn segment_end(&self, position: u64) -> u64 {
        (position / self.ring_bytes + 1) * self.ring_bytes
    }

    /// Lowest position whose bytes ring memory still holds.
    pub(crate) fn mem_low(&self) -> u64 {
        self.mem_valid_from
            .max(self.accepted_position.saturating_sub(self.ring_bytes))
    }

    /// Ring memory holding positions [from, to) (within one segment).
    pub(crate) fn memory_range(&self, from: u64, to: u64) -> &[u8] {
        self.memory
            .slice(self.ring_offset(from), (to - from) as usize)
    }

    /// Checks the ring memory invariant (cheap; called where it changes).
    pub(crate) fn assert_memory_invariant(&self) {
        assert!(
            self.mem_valid_from.is_multiple_of(BLOCK_BYTES as u64)
                && self.mem_valid_from <= block_floor(self.durable_position),
            "mem_valid_from {} must be block-aligned and <= block_floor(durable {})",
            self.mem_valid_from,
            self.durable_position
        );
        // room_for's: what left ring memory is durable, so a read below
        // mem_low may go to the file.
        assert!(
            self.accepted_position.saturating_sub(self.ring_bytes)
                <= block_floor(self.durable_position),
            "accepted {} - ring {} must be <= block_floor(durable {})",
            self.accepted_position,
            self.ring_bytes,
            self.durable_position
        );
    }

    /// Skips the implicit filler (shorter than a header) before a segment end.
    pub(crate) fn skip_filler(&self, position: u64) -> u64 {
        let segment_end = self.segment_end(position);
        if segment_end - position < HEADER_BYTES as u64 {
            segment_end
        } else {
            position
        }
    }

    // ---- accessors -------------------------------------------------------

    /// Entries encoded into the ring (not necessarily durable).
    pub fn accepted(&self) -> &Arc<Watermark> {
        &self.accepted
    }
    /// Entries handed to the kernel.
    pub fn submitted(&self) -> &Arc<Watermark> {
        &self.submitted
    }
    /// Entries durable on disk.
    pub fn flushed(&self) -> &Arc<Watermark> {
        &self.flushed
    }
    /// The last entry removed from the start of the log.
    pub fn purged(&self) -> &Arc<Watermark> {
        &self.purged
    }
    /// The last entry appended.
    pub fn last_id(&self) -> IoId {
        self.last_id
    }
    /// The first index still in the log (may be `last_id().index + 1` when empty).
    pub fn first_index(&self) -> u64 {
        self.superblock.start_prev.index + 1
    }
    /// What recovery found at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }
    /// The current superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }
    /// The persisted Raft hard state.
    pub fn hard_state(&self) -> HardState {
        self.superblock.hard_state
    }
    /// Size of the data area.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    /// Bytes of the data area the live log occupies.
    pub fn used_bytes(&self) -> u64 {
        self.accepted_position - self.start_position
    }
    /// Log positions of the live range [start, accepted).
    pub fn live_positions(&self) -> (u64, u64) {
        (self.start_position, self.accepted_position)
    }
    /// All four positions (file offset of position p: 8 KiB + p mod capacity).
    pub fn positions(&self) -> Positions {
        Positions {
            start: self.start_position,
            durable: self.durable_position,
            submitted: self.submitted_position,
            accepted: self.accepted_position,
        }
    }
    /// Whether ring memory is a registered io_uring fixed buffer.
    pub fn is_fixed_buffer(&self) -> bool {
        self.flusher.is_fixed()
    }
    /// Largest record this WAL accepts (bounded by the read buffer).
    pub fn record_bytes_max(&self) -> usize {
        self.record_bytes_max
    }
    /// An eventfd that becomes readable when a flush completes (for an
    /// executor to await instead of blocking in [`Wal::flush_wait`]); reset
    /// it with [`Wal::clear_completion_eventfd`].
    pub fn completion_eventfd(&self) -> RawFd {
        self.flusher.eventfd()
    }
    /// Writes in flight.
    pub fn flush_in_flight(&self) -> usize {
        self.flusher.in_flight()
    }

    /// TESTING ONLY: see [`Tuning::fault_flush_delay`]. Applies to writes
    /// submitted from now on.
    pub fn set_fault_flush_delay(&mut self, delay: std::time::Duration) {
        self.tuning.fault_flush_delay = delay;
        self.flusher.set_fault_delay(delay);
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some((position, errno)) = self.failure {
            return Err(WalError::Failed { position, errno });
        }
        if self.read_only {
            return Err(WalError::ReadOnly);
        }
        Ok(())
    }

    /// Writable, and no ring memory is lent: the tail may change.
    pub(crate) fn check_appendable(&self) -> Result<()> {
        self.check_writable()?;
        if let Some((position, len_bytes)) = self.lent {
            return Err(WalError::RingLent {
                position,
                len_bytes,
            });
        }
        Ok(())
    }

    pub(crate) fn fail(&mut self, position: u64, errno: i32) -> WalError {
        if self.failure.is_none() {
            self.failure = Some((position, errno));
        }
        let (position, errno) = self.failure.expect("just set");
        WalError::Failed { position, errno }
    }

    // ---- appending -------------------------------------------------------

    /// Checks that the log may grow to `end`.
    pub(crate) fn room_for(&self, end: u64, needed_bytes: usize) -> Result<()> {
        if end.saturating_sub(self.ring_bytes) > block_floor(self.durable_position) {
            return Err(WalError::RingFull { needed_bytes });
        }
        if block_ceil(end) > block_floor(self.start_position) + self.capacity_bytes {
            return Err(WalError::LogFull { needed_bytes });
        }
        Ok(())
    }

    /// Where a record of `size` bytes goes if appended at `position`: there,
    /// or at the next segment when it would straddle one.
    pub(crate) fn placement(&self, position: u64, size: usize) -> u64 {
        let segment_end = self.segment_end(position);
        if position + size as u64 > segment_end {
            segment_end
        } else {
            position
        }
    }

    /// Reserves `size` bytes at the tail, padding to the next segment if needed.
    fn reserve(&mut self, size: usize) -> Result<u64> {
        let position = self.accepted_position;
        let start = self.placement(position, size);
        self.room_for(start + size as u64, size)?;
        let pad = (start - position) as usize;
        if pad >= HEADER_BYTES {
            let at = self.ring_offset(position);
            record::encode_padding(self.memory.slice_mut(at, pad));
        }
        // A shorter remainder is implicit filler that readers skip.
        Ok(start)
    }

    fn after_append(&mut self, start: u64, size: usize, id: IoId) {
        self.accepted_position = start + size as u64;
        self.last_id = id;
        self.index.note(id.index, start);
        self.maybe_pad_block();
        self.accepted.advance(id);
    }

    /// Pads a small remainder of the current block, so the next record starts
    /// on a fresh block and its write need not rewrite this one.
    pub(crate) fn maybe_pad_block(&mut self) {
        let within = (self.accepted_position % BLOCK_BYTES as u64) as usize;
        if within == 0 {
            return;
        }
        let remainder = BLOCK_BYTES - within;
        if remainder > self.tuning.block_pad_bytes_max || remainder < HEADER_BYTES {
            return;
        }
        let end = self.accepted_position + remainder as u64;
        if self.room_for(end, remainder).is_err() {
            return;
        }
        // A block boundary never crosses a segment end: M is a multiple of the block.
        let at = self.ring_offset(self.accepted_position);
        record::encode_padding(self.memory.slice_mut(at, remainder));
        self.accepted_position = end;
    }

    /// Appends an entry under `term` with `payload`, encoded straight into ring memory.
    pub fn append(&mut self, term: u64, payload: &[u8]) -> Result<IoId> {
        self.append_with(term, payload.len(), |dst| dst.copy_from_slice(payload))
    }

    /// Appends an entry whose `payload_len` bytes of payload `fill` writes in
    /// place, in ring memory (no copy at all).
    pub fn append_with(
        &mut self,
        term: u64,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<IoId> {
        self.check_appendable()?;
        if term < self.last_id.term {
            return Err(WalError::TermRegressed {
                term,
                last_term: self.last_id.term,
            });
        }
        let size = record::record_bytes(payload_len);
        if size > self.record_bytes_max {
            return Err(WalError::RecordTooLarge {
                record_bytes: size,
                record_bytes_max: self.record_bytes_max,
            });
        }
        let start = self.reserve(size)?;
        let id = IoId::new(term, self.last_id.index + 1);
        let at = self.ring_offset(start);
        let dst = self.memory.slice_mut(at, size);
        fill(&mut dst[HEADER_BYTES..HEADER_BYTES + payload_len]);
        record::seal(dst, RecordKind::Entry, id, payload_len);
        self.after_append(start, size, id);
        Ok(id)
    }

    /// Appends records already encoded (a follower appending what it
    /// received). They are verified first (CRC, index continuity from the
    /// last entry, non-decreasing terms); either all are appended or none.
    /// Padding records in `bytes` are dropped (placement is local).
    pub fn append_raw(&mut self, bytes: &[u8]) -> Result<RunSummary> {
        self.check_appendable()?;
        let summary = record::verify_run(bytes, self.last_id)
            .map_err(|(offset, source)| WalError::InvalidRecords { offset, source })?;
        // Verified once above; the two walks below only hop headers.
        // Dry run: where the run would end (an upper bound, as if every
        // optional block padding were written).
        let mut end = self.accepted_position;
        let mut largest = 0;
        for record in Records::verified(bytes).flatten() {
            if record.header.kind == RecordKind::Padding {
                continue;
            }
            let size = record.bytes.len();
            largest = largest.max(size);
            end = self.placement(end, size) + size as u64;
            let within = (end % BLOCK_BYTES as u64) as usize;
            if within != 0 && BLOCK_BYTES - within <= self.tuning.block_pad_bytes_max {
                end += (BLOCK_BYTES - within) as u64;
            }
        }
        if largest > self.record_bytes_max {
            return Err(WalError::RecordTooLarge {
                record_bytes: largest,
                record_bytes_max: self.record_bytes_max,
            });
        }
        self.room_for(end, (end - self.accepted_position) as usize)?;
        for record in Records::verified(bytes).flatten() {
            if record.header.kind == RecordKind::Padding {
                continue;
            }
            let size = record.bytes.len();
            let start = self.reserve(size)?;
            let at = self.ring_offset(start);
            self.memory
                .slice_mut(at, size)
                .copy_from_slice(record.bytes);
            self.after_append(start, size, record.header.io_id());
        }
        Ok(summary)
    }

    // ---- flushing --------------------------------------------------------

    /// Submits writes for what is dirty, up to `flush_ios_max` in flight.
    /// Does not block. Returns the number of writes submitted.
    pub fn flush_submit(&mut self) -> Result<usize> {
        let issued = self.queue_writes()?;
        if issued > 0
            && let Err(error) = self.flusher.submit(false)
        {
            return Err(self.fail(self.submitted_position, errno_of(&error)));
        }
        Ok(issued)
    }

    /// Submits what is dirty and blocks until at least one write completes,
    /// in one system call; then reaps. For a thread that has nothing else
    /// to do meanwhile (an executor rather awaits `completion_eventfd`).
    pub fn flush_submit_and_wait(&mut self) -> Result<IoId> {
        self.queue_writes()?;
        if self.flusher.in_flight() > 0
            && let Err(error) = self.flusher.submit(true)
        {
            return Err(self.fail(self.submitted_position, errno_of(&error)));
        }
        self.flush_reap()
    }

    /// Queues writes for what is dirty (see [`Wal::flush_submit`]) without
    /// entering the kernel.
    fn queue_writes(&mut self) -> Result<usize> {
        self.check_writable()?;
        let mut issued = 0;
        while self.flusher.has_free_slot() && self.submitted_position < self.accepted_position {
            // The partial last block of an in-flight write is rewritten by
            // the next one: wait until it lands, or the two could reorder.
            if self.flusher.in_flight() > 0
                && !self.submitted_position.is_multiple_of(BLOCK_BYTES as u64)
            {
                break;
            }
            if !self.push_next_write() {
                break;
            }
            issued += 1;
        }
        Ok(issued)
    }

    /// Queues one write of the dirty range from `submitted_position`, unless
    /// it would reach more than `inflight_bytes_max` past the durable point
    /// while other writes are in flight (recovery relies on that bound).
    fn push_next_write(&mut self) -> bool {
        let start = block_floor(self.submitted_position);
        let segment_end = self.segment_end(start);
        let mut end = self.accepted_position.min(segment_end);
        let mut last_id = self.last_id;
        if end != self.accepted_position || end - start > self.tuning.flush_io_bytes_max as u64 {
            (end, last_id) = self.write_end(start, end);
        }
        let reach = block_ceil(end) - block_floor(self.durable_position);
        if self.flusher.in_flight() > 0 && reach > self.superblock.inflight_bytes_max {
            return false;
        }
        let len = (block_ceil(end) - start) as u32;
        let at = self.ring_offset(start);
        // SAFETY: `at + len <= ring_bytes` since the write ends at or before
        // the segment end; pointer arithmetic stays inside the mapping.
        let buf = unsafe { self.memory.as_ptr().add(at) };
        let slot = IoSlot {
            start_position: start,
            end_position: end,
            last_id,
            ..IoSlot::default()
        };
        let file_offset = self.file_offset(start);
        self.flusher
            .push_write(self.file.as_raw_fd(), buf, len, file_offset, slot);
        self.submitted_position = end;
        self.submitted_id = last_id;
        self.submitted.advance(last_id);
        true
    }

    /// Where a write starting at block `start` ends when it cannot take all
    /// of [submitted, limit): the last record boundary within
    /// `flush_io_bytes_max` (at least one record), and the last entry before it.
    fn write_end(&self, start: u64, limit: u64) -> (u64, IoId) {
        let cap = start + self.tuning.flush_io_bytes_max as u64;
        let mut position = self.submitted_position;
        let mut last_id = self.submitted_id;
        loop {
            let next_start = self.skip_filler(position);
            if next_start >= limit {
                return (limit, last_id);
            }
            let header = self.memory_header(next_start);
            let next_end = next_start + header.record_bytes() as u64;
            if next_end > cap && position > self.submitted_position {
                return (position, last_id);
            }
            if header.kind == RecordKind::Entry {
                last_id = header.io_id();
            }
            position = next_end;
            if position >= limit {
                return (position, last_id);
            }
        }
    }

    pub(crate) fn memory_header(&self, position: u64) -> RecordHeader {
        let at = self.ring_offset(position);
        record::peek_header(self.memory.slice(at, HEADER_BYTES))
            .expect("records in ring memory are valid")
    }

    /// Takes completed writes and advances `flushed` over the completed
    /// prefix. Does not block. A failed write stops the WAL (fail-stop).
    pub fn flush_reap(&mut self) -> Result<IoId> {
        if let Some((position, errno)) = self.failure {
            return Err(WalError::Failed { position, errno });
        }
        self.flusher.reap();
        while let Some(slot) = self.flusher.pop_completed() {
            if slot.result < 0 {
                return Err(self.fail(slot.start_position, -slot.result));
            }
            if slot.result as u32 != slot.len_bytes {
                return Err(self.fail(slot.start_position, 0));
            }
            // Writes complete in log order (`pop_completed`): a write ending
            // below the durable point belongs to another log (a reset or a
            // truncation that did not wait for it) and would make reads go
            // to the file for bytes that are not there.
            assert!(
                slot.end_position >= self.durable_position,
                "a write ending at {} completed after durable {}",
                slot.end_position,
                self.durable_position
            );
            self.durable_position = slot.end_position;
            self.durable_id = slot.last_id;
            self.assert_memory_invariant();
            self.flushed.advance(slot.last_id);
        }
        Ok(self.durable_id)
    }

    /// Blocks until at least one in-flight write completes (if any), then
    /// reaps.
    pub fn flush_wait(&mut self) -> Result<IoId> {
        self.check_writable()?;
        if self.flusher.in_flight() > 0
            && let Err(error) = self.flusher.submit(true)
        {
            return Err(self.fail(self.submitted_position, errno_of(&error)));
        }
        self.flush_reap()
    }

    /// Resets the completion eventfd's counter (an executor calls this when
    /// it wakes on it, before reaping).
    pub fn clear_completion_eventfd(&self) {
        self.flusher.clear_eventfd();
    }

    /// Flushes everything accepted and blocks until it is durable.
    pub fn sync(&mut self) -> Result<IoId> {
        loop {
            self.flush_submit()?;
            self.flush_reap()?;
            if self.durable_position == self.accepted_position {
                return Ok(self.durable_id);
            }
            self.flush_wait()?;
        }
    }

    /// Waits for every in-flight write (none are submitted meanwhile).
    fn drain(&mut self) -> Result<()> {
        while self.flusher.in_flight() > 0 {
            self.flush_wait()?;
        }
        Ok(())
    }

    /// Writes blocks [from, to) of ring memory through to the file, now.
    pub(crate) fn write_through_now(&mut self, from: u64, to: u64) -> Result<()> {
        let mut position = from;
        while position < to {
            let end = to.min(self.segment_end(position));
            let at = self.ring_offset(position);
            let bytes = self.memory.slice(at, (end - position) as usize);
            if let Err(error) =
                pwrite_dsync(self.file.as_raw_fd(), bytes, self.file_offset(position))
            {
                return Err(self.fail(position, errno_of(&error)));
            }
            position = end;
        }
        Ok(())
    }

    /// Zeroes ring memory for positions [from, to).
    pub(crate) fn zero_memory(&mut self, from: u64, to: u64) {
        let mut position = from;
        while position < to {
            let end = to.min(self.segment_end(position));
            let at = self.ring_offset(position);
            self.memory.slice_mut(at, (end - position) as usize).fill(0);
            position = end;
        }
    }

    fn write_superblock(&mut self) -> Result<()> {
        self.check_writable()?;
        self.superblock.generation += 1;
        let generation = self.superblock.generation;
        self.superblock
            .encode(self.superblock_buffer.slice_mut(0, SUPERBLOCK_BYTES));
        let bytes = self.superblock_buffer.slice(0, SUPERBLOCK_BYTES);
        if let Err(error) = pwrite_dsync(
            self.file.as_raw_fd(),
            bytes,
            Superblock::copy_offset(generation),
        ) {
            return Err(self.fail(0, errno_of(&error)));
        }
        Ok(())
    }

    // ---- hard state, truncate, purge ------------------------------------

    /// Persists the Raft hard state (durable when this returns).
    pub fn save_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.superblock.hard_state = hard_state;
        self.write_superblock()
    }

    /// Drops every entry after `index` (a follower's conflicting suffix).
    /// `new_term` must exceed every term in the log, so IoIds stay monotonic;
    /// the watermarks move to (new_term, ...). Durable when this returns.
    pub fn truncate_after(&mut self, index: u64, new_term: u64) -> Result<()> {
        self.check_appendable()?;
        if new_term <= self.last_id.term {
            return Err(WalError::TruncateTermNotHigher {
                new_term,
                last_term: self.last_id.term,
            });
        }
        let start_prev = self.superblock.start_prev;
        if index < start_prev.index {
            return Err(WalError::Purged {
                index,
                first_index: start_prev.index + 1,
            });
        }
        if index >= self.last_id.index {
            return Ok(());
        }
        self.drain()?;
        let (cut, kept) = if index == start_prev.index {
            (self.start_position, start_prev)
        } else {
            let position = self.locate(index)?;
            let header = self.header_at(position)?;
            (position + header.record_bytes() as u64, header.io_id())
        };
        let old_low = self.mem_low();
        let old_end = self.accepted_position;
        if block_floor(cut) < old_low {
            // The block holding the cut left memory: bring it back, as the
            // next write rewrites it.
            let from = block_floor(cut);
            let at = self.ring_offset(from);
            let file_offset = self.file_offset(from);
            self.file
                .read_exact_at(self.memory.slice_mut(at, BLOCK_BYTES), file_offset)
                .map_err(|e| WalError::io("read block to truncate", e))?;
            self.mem_valid_from = from;
        } else {
            // Memory still holds [old_low, cut). old_low is accepted - M once
            // the ring has wrapped, mid-block in general: round up, as
            // mem_valid_from is block-aligned; the few bytes below go to the
            // file, where they are durable (old_low <= block_floor(durable),
            // so block_ceil(old_low) <= block_floor(durable) and, here,
            // <= block_floor(cut)).
            self.mem_valid_from = block_ceil(old_low);
        }
        self.index.forget_from(cut, old_end);
        self.read_window_len = 0;
        // Superblock first: once truncate_term is durable, dropped records
        // (all of lower terms) can never pass for evidence of damage. A crash
        // before the zeroing below just leaves the truncation undone.
        self.superblock.truncate_term = new_term;
        self.write_superblock()?;
        // Zero the rest of the cut's block (and of a filler it ends in) and
        // write it now, so recovery stops at the cut even before new entries.
        let zero_end = block_floor(self.skip_filler(cut)) + BLOCK_BYTES as u64;
        self.zero_memory(cut, zero_end);
        self.write_through_now(block_floor(cut), zero_end)?;
        self.accepted_position = cut;
        self.durable_position = self.durable_position.min(cut);
        self.submitted_position = self.durable_position;
        self.last_id = kept;
        if self.durable_id.index > index {
            self.durable_id = kept;
        }
        self.submitted_id = self.durable_id;
        self.accepted.advance(IoId::new(new_term, index));
        self.submitted
            .advance(IoId::new(new_term, self.submitted_id.index));
        self.flushed
            .advance(IoId::new(new_term, self.durable_id.index));
        self.assert_memory_invariant();
        Ok(())
    }

    /// Removes entries up to and including `index` from the start of the log
    /// (durable when this returns); their file space becomes reusable.
    pub fn purge_to(&mut self, index: u64) -> Result<()> {
        self.check_writable()?;
        let start_prev = self.superblock.start_prev;
        if index <= start_prev.index {
            return Ok(());
        }
        if index > self.durable_id.index {
            return Err(WalError::PurgeNotFlushed {
                index,
                flushed: self.durable_id,
            });
        }
        let position = self.locate(index)?;
        let header = self.header_at(position)?;
        let new_start = if index == self.last_id.index {
            self.accepted_position
        } else {
            position + header.record_bytes() as u64
        };
        self.superblock.start_position = new_start;
        self.superblock.start_prev = header.io_id();
        self.write_superblock()?;
        // mem_valid_from stays: positions below the start are never read,
        // and it must stay block-aligned and <= block_floor(durable) for
        // truncate_after's "has the cut block left memory" test.
        self.start_position = new_start;
        self.purged.advance(header.io_id());
        Ok(())
    }
}

impl Wal {
    /// Drops the whole live log and restarts it right after `snapshot`, an
    /// entry this log may not hold (a follower that installed a snapshot
    /// from its leader): the next append must be `snapshot.index + 1`.
    /// Durable when this returns. A `snapshot` at or before the log's start
    /// changes nothing.
    ///
    /// The new start is the block after the current end; that block is
    /// zeroed on disk first, so recovery finds an empty log there and never
    /// mistakes an older lap's record for the entry after `snapshot`.
    ///
    /// Refused with `RingLent` while ring memory is lent: the lend's
    /// position is in the old log's coordinates (often below the new
    /// start), so a later `commit_lent` would place records where the new
    /// log never writes nor looks; abandon the lend first.
    pub fn reset_to(&mut self, snapshot: IoId) -> Result<()> {
        self.check_appendable()?;
        if snapshot.index <= self.superblock.start_prev.index {
            return Ok(());
        }
        self.sync()?;
        self.drain()?;
        let start = block_ceil(self.accepted_position);
        let end = start + BLOCK_BYTES as u64;
        if block_ceil(end) > block_floor(self.start_position) + self.capacity_bytes {
            // The file is full to the last block: the new start would
            // overwrite live records before the superblock points past them.
            return Err(WalError::LogFull {
                needed_bytes: BLOCK_BYTES,
            });
        }
        self.zero_memory(self.accepted_position, end);
        self.write_through_now(block_floor(self.accepted_position), end)?;
        self.superblock.start_position = start;
        self.superblock.start_prev = snapshot;
        self.write_superblock()?;
        self.start_position = start;
        self.accepted_position = start;
        self.submitted_position = start;
        self.durable_position = start;
        self.mem_valid_from = start;
        self.read_window_len = 0;
        self.last_id = snapshot;
        self.submitted_id = snapshot;
        self.durable_id = snapshot;
        self.accepted.advance(snapshot);
        self.submitted.advance(snapshot);
        self.flushed.advance(snapshot);
        self.purged.advance(snapshot);
        self.assert_memory_invariant();
        Ok(())
    }
}

fn check_geometry(
    capacity_bytes: u64,
    ring_bytes: u64,
    inflight_bytes_max: u64,
    tuning: &Tuning,
) -> Result<()> {
    let block = BLOCK_BYTES as u64;
    let invalid = |why| Err(WalError::InvalidOptions(why));
    if ring_bytes == 0 || !ring_bytes.is_multiple_of(block) {
        return invalid("ring_bytes must be a positive multiple of 4096");
    }
    if capacity_bytes < ring_bytes || !capacity_bytes.is_multiple_of(ring_bytes) {
        return invalid("capacity_bytes must be a multiple of ring_bytes");
    }
    if !tuning.index_chunk_bytes.is_power_of_two()
        || !capacity_bytes.is_multiple_of(tuning.index_chunk_bytes)
    {
        return invalid("index_chunk_bytes must be a power of two dividing capacity_bytes");
    }
    if tuning.flush_ios_max == 0 || tuning.flush_ios_max > 1024 {
        return invalid("flush_ios_max must be in 1..=1024");
    }
    if tuning.read_buffer_bytes < 2 * BLOCK_BYTES
        || !tuning.read_buffer_bytes.is_multiple_of(BLOCK_BYTES)
        || tuning.flush_io_bytes_max < BLOCK_BYTES
    {
        return invalid("read_buffer_bytes and flush_io_bytes_max must be block multiples");
    }
    if 2 * inflight_bytes_max + block > ring_bytes {
        return invalid("inflight_bytes_max must be at most (ring_bytes - 4096) / 2");
    }
    let write_bytes_max = tuning.flush_io_bytes_max.max(tuning.read_buffer_bytes) as u64;
    if write_bytes_max + 2 * block > inflight_bytes_max {
        return invalid(
            "inflight_bytes_max must exceed the largest write (flush_io_bytes_max, read_buffer_bytes) by two blocks",
        );
    }
    if tuning.watermark_waiters_max == 0 {
        return invalid("watermark_waiters_max must be at least 1");
    }
    Ok(())
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Wal>();
};

impl Drop for Wal {
    fn drop(&mut self) {
        // In-flight writes read ring memory: it must outlive them.
        while self.flusher.in_flight() > 0 {
            if self.flusher.submit(true).is_err() {
                break;
            }
            self.flusher.reap();
            while self.flusher.pop_completed().is_some() {}
        }
        if !self.tuning.sync_writes && !self.read_only {
            // Writes without RWF_DSYNC may sit in the device cache: a clean
            // close makes them durable. Nothing to report an error to here;
            // the next open's recovery handles whatever reached the media.
            // SAFETY: plain syscall on a descriptor we own.
            unsafe { libc::fdatasync(self.file.as_raw_fd()) };
        }
    }
}
