//! `ringraft-wal`: the log's vocabulary and its write-ahead ring.
//!
//! - [`IoId`]: (term of the leader that wrote it, log index), totally ordered.
//! - [`Watermark`]: a lock-free cell holding an `IoId` that only moves forward.
//! - [`record`]: the byte layout of a log record, the same in memory, on disk
//!   and on the wire.

pub mod io_id;
pub mod record;
pub mod watermark;

pub use io_id::IoId;
pub use watermark::{Waiter, WaitersExhausted, Watermark};
