//! The WAL's typed errors: each variant lets the caller decide what to do
//! (wait for the flusher, purge, repair, or stop the shard).

use crate::IoId;
use crate::record::RecordError;

/// Why a WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The environment refused an operation (open, read, superblock write).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The options are inconsistent (sizes not aligned, ring larger than the file, ...).
    #[error("invalid WAL options: {0}")]
    InvalidOptions(&'static str),
    /// Neither superblock copy carries the WAL magic: not a ringraft WAL file.
    #[error("not a ringraft WAL file (no superblock magic)")]
    NotAWal,
    /// Both superblock copies fail their checksum.
    #[error("both superblock copies are corrupt")]
    SuperblockCorrupt,
    /// The file was written by another format version.
    #[error("WAL format version {found}, this build reads version {expected}")]
    FormatVersion {
        /// Version in the file.
        found: u32,
        /// Version this code writes.
        expected: u32,
    },
    /// The file belongs to another cluster.
    #[error("WAL belongs to cluster {found:#x}, expected cluster {expected:#x}")]
    ClusterMismatch {
        /// Cluster id in the file.
        found: u128,
        /// Cluster id the caller asked for.
        expected: u128,
    },
    /// A record before the tail is damaged. `file_offset` is the byte offset
    /// in the file of the first bad record.
    #[error("WAL damaged at file offset {file_offset} (log position {position}): {source}")]
    Corrupt {
        /// Offset within the file.
        file_offset: u64,
        /// Log position (monotonic byte position of the data area).
        position: u64,
        /// What is wrong with the record there.
        #[source]
        source: RecordError,
    },
    /// Ring memory holds no room until the flusher makes more of it durable.
    #[error("ring memory full: {needed_bytes} bytes needed, wait for the flusher")]
    RingFull {
        /// Bytes the append needed.
        needed_bytes: usize,
    },
    /// The file holds no room until the log is purged.
    #[error("WAL file full: {needed_bytes} bytes needed, purge the log")]
    LogFull {
        /// Bytes the append needed.
        needed_bytes: usize,
    },
    /// A record larger than the WAL accepts (bounded by its read buffer).
    #[error("record of {record_bytes} bytes exceeds the maximum {record_bytes_max}")]
    RecordTooLarge {
        /// Size of the record.
        record_bytes: usize,
        /// Largest record this WAL accepts.
        record_bytes_max: usize,
    },
    /// An append's term is lower than the last entry's.
    #[error("append under term {term} after an entry of term {last_term}")]
    TermRegressed {
        /// Term of the append.
        term: u64,
        /// Term of the last entry.
        last_term: u64,
    },
    /// `truncate_after` needs a term higher than every entry it keeps or drops.
    #[error("truncate under term {new_term} not higher than the last term {last_term}")]
    TruncateTermNotHigher {
        /// Term given.
        new_term: u64,
        /// Term of the last entry.
        last_term: u64,
    },
    /// Records given to `append_raw` do not continue the log.
    #[error("invalid records at byte {offset} of the run: {source}")]
    InvalidRecords {
        /// Offset within the run.
        offset: usize,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// The index was purged from the log.
    #[error("index {index} is purged (log starts at {first_index})")]
    Purged {
        /// Index asked for.
        index: u64,
        /// First index still in the log.
        first_index: u64,
    },
    /// The index is beyond the last entry.
    #[error("index {index} is beyond the last entry {last}")]
    Beyond {
        /// Index asked for.
        index: u64,
        /// Last entry.
        last: IoId,
    },
    /// Purging entries that are not yet durable is refused.
    #[error("cannot purge to {index}: only {flushed} is durable")]
    PurgeNotFlushed {
        /// Index asked for.
        index: u64,
        /// Durable position.
        flushed: IoId,
    },
    /// A write or sync of the log failed: the WAL stopped and never retries,
    /// because the page cache can no longer be trusted (fail-stop).
    #[error("WAL failed at log position {position} and stopped: {}", failure_text(*errno))]
    Failed {
        /// Log position of the failed write.
        position: u64,
        /// `errno` of the failure (positive), or 0 for a short write.
        errno: i32,
    },
    /// Ring memory is lent to a receiver (`Wal::lend`): the tail cannot
    /// change until the lend is committed or abandoned.
    #[error("ring memory at log position {position} ({len_bytes} bytes) is lent to a receiver")]
    RingLent {
        /// Log position of the lent memory.
        position: u64,
        /// Bytes lent.
        len_bytes: usize,
    },
    /// A lend larger than one ring segment can never be contiguous.
    #[error("cannot lend {len_bytes} contiguous bytes: ring segments hold {ring_bytes}")]
    LendTooLarge {
        /// Bytes asked for.
        len_bytes: usize,
        /// Size of ring memory.
        ring_bytes: u64,
    },
    /// The WAL was opened read-only.
    #[error("WAL opened read-only")]
    ReadOnly,
}

fn failure_text(errno: i32) -> String {
    if errno == 0 {
        "short write".to_string()
    } else {
        std::io::Error::from_raw_os_error(errno).to_string()
    }
}

impl WalError {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> WalError {
        WalError::Io { context, source }
    }
}

/// Result of WAL operations.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
