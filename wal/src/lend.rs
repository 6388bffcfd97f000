//! Lending ring memory to a receiver: a follower's transport reads a run of
//! records from its socket straight into the ring at the tail, then the WAL
//! checks the run and appends it where it lies (no copy).
//!
//! ```text
//!  ... accepted ▶ [padding to the segment end, only if the run would straddle it]
//!                 ▶ lend.position [ lent: len_bytes, contiguous, one segment ] ▶ room
//!
//!  commit_lent(lend, a..b): bytes [a, b) of the lent memory are a run of records
//!      continuing the log: a == 0 → appended in place (the common case, no copy);
//!      a > 0 → moved down to lend.position first (one memmove inside the ring)
//!  abandon_lent(lend, n):    nothing appended; the n bytes the receiver wrote are
//!                            zeroed and the memory is reused by the next append
//! ```
//!
//! Invariants while memory is lent:
//! - appends and `truncate_after` are refused (`WalError::RingLent`): the
//!   receiver may still be writing the lent bytes, and the next append would
//!   land on them. Flushes, hard-state saves, reads and purges go on.
//! - the lent range passed `room_for` (it overwrites only ring memory whose
//!   positions are durable) and `mem_valid_from` was raised over the
//!   positions it overwrites, so reads of them go to the file.
//!
//! Crash semantics: the flusher's write of the last partial block carries
//! whatever lies past `accepted` in that block, lent bytes included (as it
//! always carried stale bytes of earlier laps). Recovery takes a record past
//! the end only if it continues the log (next index, term not lower); so a
//! caller lends only for a run it means to append, one that follows the last
//! entry. Abandoning, or committing part of a run, zeroes the received bytes
//! that were not appended, so no later write can carry them to the file
//! (where a later append of the same length would have made them look like
//! the log's continuation).

use std::ops::Range;

use crate::error::{Result, WalError};
use crate::record::{self, HEADER_BYTES, RecordKind, Records, RunSummary};
use crate::ring::block_ceil;
use crate::wal::Wal;

/// Ring memory lent by [`Wal::lend`]; give it back with [`Wal::commit_lent`]
/// or [`Wal::abandon_lent`] (one lend at a time).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a lend blocks appends until it is committed or abandoned"]
pub struct Lend {
    position: u64,
    len_bytes: usize,
}

impl Lend {
    /// Log position of the first lent byte.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes lent.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }
}

impl Wal {
    /// Lends `len_bytes` of contiguous ring memory at the tail for a
    /// receiver to fill with records (see [`Wal::lent_memory`]). If the
    /// free space before the end of the ring segment is shorter, the tail is
    /// padded to the segment end and the memory lent from the next segment's
    /// start. Errors: `RingLent` (one lend at a time), `LendTooLarge`,
    /// `RingFull` (wait for the flusher), `LogFull` (purge).
    pub fn lend(&mut self, len_bytes: usize) -> Result<Lend> {
        self.check_appendable()?;
        if len_bytes as u64 > self.ring_bytes {
            return Err(WalError::LendTooLarge {
                len_bytes,
                ring_bytes: self.ring_bytes,
            });
        }
        let tail = self.accepted_position;
        let position = self.placement(tail, len_bytes);
        let end = position + len_bytes as u64;
        self.room_for(end, (end - tail) as usize)?;
        let pad_bytes = (position - tail) as usize;
        if pad_bytes >= HEADER_BYTES {
            let at = self.ring_offset(tail);
            record::encode_padding(self.memory.slice_mut(at, pad_bytes));
        }
        // The lent bytes overwrite ring memory of positions [.., end - M):
        // from now on those are read from the file (room_for: they are durable).
        let overwritten_to = end.saturating_sub(self.ring_bytes);
        if overwritten_to > self.mem_low() {
            self.mem_valid_from = self.mem_valid_from.max(block_ceil(overwritten_to));
            self.assert_memory_invariant();
        }
        self.lent = Some((position, len_bytes));
        Ok(Lend {
            position,
            len_bytes,
        })
    }

    /// The lent memory, for the receiver to write (it may be written over
    /// several calls; the address stays the same for the life of the lend).
    pub fn lent_memory(&mut self, lend: &Lend) -> &mut [u8] {
        self.assert_lent(lend);
        let at = self.ring_offset(lend.position);
        self.memory.slice_mut(at, lend.len_bytes)
    }

    /// Appends the records in bytes `range` of the lent memory, checked as
    /// [`Wal::append_raw`] checks a run (CRCs, index continuity from the last
    /// entry, non-decreasing terms, record size); padding records stay where
    /// they are. Either the whole range is appended or nothing is; the lend
    /// ends either way. A range not starting at 0 is moved down first.
    pub fn commit_lent(&mut self, lend: Lend, range: Range<usize>) -> Result<RunSummary> {
        self.assert_lent(&lend);
        assert!(
            range.start <= range.end && range.end <= lend.len_bytes,
            "range {range:?} outside the {} lent bytes",
            lend.len_bytes
        );
        self.lent = None;
        let at = self.ring_offset(lend.position);
        if let Err(error) = self.check_writable() {
            self.forget_lent(lend.position, 0, lend.len_bytes);
            return Err(error);
        }
        let run_bytes = range.len();
        if range.start > 0 {
            self.memory
                .slice_mut(at, lend.len_bytes)
                .copy_within(range, 0);
        }
        let run = self.memory.slice(at, run_bytes);
        let checked = self.check_run(run);
        let summary = match checked {
            Ok(summary) => summary,
            Err(error) => {
                self.forget_lent(lend.position, 0, lend.len_bytes);
                return Err(error);
            }
        };
        if summary.entries == 0 {
            self.forget_lent(lend.position, 0, lend.len_bytes);
            return Ok(summary);
        }
        // Verified above; this walk only hops headers. Index stamps in log order.
        let mut offset = 0u64;
        for record in Records::verified(self.memory.slice(at, run_bytes)).flatten() {
            if record.header.kind == RecordKind::Entry {
                self.index.note(record.header.index, lend.position + offset);
            }
            offset += record.bytes.len() as u64;
        }
        self.forget_lent(lend.position, run_bytes, lend.len_bytes);
        self.accepted_position = lend.position + run_bytes as u64;
        self.last_id = summary.last;
        self.maybe_pad_block();
        self.assert_memory_invariant();
        self.accepted.advance(summary.last);
        Ok(summary)
    }

    /// Ends the lend with nothing appended; `written_bytes`: how much of the
    /// lent memory the receiver wrote (zeroed now).
    pub fn abandon_lent(&mut self, lend: Lend, written_bytes: usize) {
        self.assert_lent(&lend);
        self.lent = None;
        self.forget_lent(lend.position, 0, written_bytes.min(lend.len_bytes));
    }

    /// Whether memory is lent now.
    pub fn is_lent(&self) -> bool {
        self.lent.is_some()
    }

    /// `append_raw`'s checks of a run about to be appended.
    fn check_run(&self, run: &[u8]) -> Result<RunSummary> {
        let summary = record::verify_run(run, self.last_id)
            .map_err(|(offset, source)| WalError::InvalidRecords { offset, source })?;
        let largest = Records::verified(run)
            .flatten()
            .map(|record| record.bytes.len())
            .max()
            .unwrap_or(0);
        if largest > self.record_bytes_max {
            return Err(WalError::RecordTooLarge {
                record_bytes: largest,
                record_bytes_max: self.record_bytes_max,
            });
        }
        Ok(summary)
    }

    fn assert_lent(&self, lend: &Lend) {
        assert_eq!(
            self.lent,
            Some((lend.position, lend.len_bytes)),
            "a lend of this WAL, still outstanding"
        );
    }

    /// Zeroes lent bytes [kept_bytes, written_bytes) that were not appended,
    /// so they cannot pass for the log's continuation once a write carries
    /// their block to the file.
    fn forget_lent(&mut self, position: u64, kept_bytes: usize, written_bytes: usize) {
        if written_bytes > kept_bytes {
            let at = self.ring_offset(position) + kept_bytes;
            self.memory
                .slice_mut(at, written_bytes - kept_bytes)
                .fill(0);
        }
    }
}
