//! `ringraft-wal`: the log's vocabulary and its write-ahead ring.
//!
//! - [`IoId`]: (term of the leader that wrote it, log index), totally ordered.
//! - [`Watermark`]: a lock-free cell holding an `IoId` that only moves forward.
//! - [`record`]: the byte layout of a log record, the same in memory, on disk
//!   and on the wire.
//! - [`Wal`]: the preallocated file, the ring memory mirroring its tail, the
//!   io_uring O_DIRECT group-commit flusher and recovery; [`Lend`]: ring
//!   memory lent to a receiver so a follower's run lands in place.

mod error;
mod flusher;
mod index;
pub mod io_id;
mod lend;
mod read;
pub mod record;
mod recovery;
mod ring;
pub mod superblock;
mod wal;
pub mod watermark;

pub use error::{Result, WalError};
pub use io_id::IoId;
pub use lend::Lend;
pub use read::ReadView;
pub use ring::BLOCK_BYTES;
pub use superblock::{FORMAT_VERSION, HardState, Superblock};
pub use wal::{CreateOptions, OpenOptions, Positions, RecoveryReport, Tuning, Wal};
pub use watermark::{Waiter, WaitersExhausted, Watermark};
