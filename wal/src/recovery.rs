//! Recovery: find where the valid log ends, tell a torn tail from damage.
//!
//! ```text
//!  start                       E (first record that fails)
//!  |== valid, continuous ======|~~ remnant zone: w ~~|~~ evidence zone: w ~~|
//!                               writes that may have   a valid entry continuing
//!                               been in flight at the  the log here cannot be a
//!                               crash: torn tail, cut  torn write: damage at E
//!  w = superblock.inflight_bytes_max: the flusher never has writes in flight
//!      reaching further than w past the durable point (and E >= durable)
//! ```
//! The scan reads the file segment by segment into ring memory at the same
//! offsets the writer uses, checking CRC, index continuity and non-decreasing
//! terms. "Continuing" means: entry, valid CRC, index past the last valid one,
//! term not below the last valid one nor below the superblock's
//! `truncate_term` (records a `truncate_after` dropped are older).
//!
//! A writable open then zeroes the remnant zone on disk, so the cut is
//! durable and a later crash cannot mistake today's remnants for damage.

use std::os::unix::fs::FileExt;

use crate::IoId;
use crate::error::{Result, WalError};
use crate::record::{self, HEADER_BYTES, RECORD_ALIGN_BYTES, RecordError, RecordKind};
use crate::ring::{block_ceil, block_floor};
use crate::wal::{RecoveryReport, Wal};

/// What the look-ahead past the end found.
#[derive(Debug, Default)]
struct LookAhead {
    records: u64,
    /// End position of the furthest remnant (or E).
    furthest: u64,
    damage: bool,
}

impl Wal {
    /// Reads log positions [from, to) (block aligned) from the file into
    /// ring memory at their ring offsets.
    fn load(&mut self, from: u64, to: u64) -> Result<()> {
        let mut position = from;
        while position < to {
            let end = to.min(self.segment_end(position));
            let at = self.ring_offset(position);
            let file_offset = self.file_offset(position);
            let bytes = self.memory.slice_mut(at, (end - position) as usize);
            self.file
                .read_exact_at(bytes, file_offset)
                .map_err(|e| WalError::io("read WAL file", e))?;
            position = end;
        }
        Ok(())
    }

    /// Scans the log at open; sets the positions and the report.
    pub(crate) fn recover(&mut self, truncate_damaged: bool) -> Result<()> {
        let superblock = self.superblock;
        let ring_bytes = superblock.ring_bytes;
        let start = superblock.start_position;
        let limit = start + superblock.capacity_bytes;
        let mut position = start;
        let mut last = superblock.start_prev;
        let mut entries = 0;
        let mut loaded_segment = None;
        let stop = loop {
            if position >= limit {
                break None;
            }
            let segment = position / ring_bytes;
            if loaded_segment != Some(segment) {
                let from = block_floor(position);
                self.load(from, self.segment_end(position).min(block_ceil(limit)))?;
                self.mem_valid_from = from;
                loaded_segment = Some(segment);
            }
            let segment_end = self.segment_end(position);
            if segment_end - position < HEADER_BYTES as u64 {
                position = segment_end;
                continue;
            }
            let bytes = self.memory_range(position, segment_end.min(limit));
            let record = match record::decode(bytes) {
                Ok(record) => record,
                Err(error) => break Some(error),
            };
            let header = record.header;
            let size = header.record_bytes() as u64;
            if header.kind == RecordKind::Entry {
                let id = header.io_id();
                if id.index != last.index + 1 {
                    break Some(RecordError::IndexGap {
                        expected: last.index + 1,
                        found: id.index,
                    });
                }
                if id.term < last.term {
                    break Some(RecordError::TermRegressed {
                        previous: last.term,
                        found: id.term,
                    });
                }
                self.index.note(id.index, position);
                last = id;
                entries += 1;
            }
            position += size;
        };
        let end = position;
        let window = superblock.inflight_bytes_max;
        let term_floor = last.term.max(superblock.truncate_term);
        let look_end = (end + 2 * window).min(limit);
        let loaded_end = block_ceil(look_end);
        if end < limit {
            // The segment holding E is loaded up to its end; load the rest.
            let loaded_so_far = self.segment_end(end).min(block_ceil(limit));
            if loaded_end > loaded_so_far {
                self.load(loaded_so_far, loaded_end)?;
            }
        }
        self.mem_valid_from = self
            .mem_valid_from
            .max(loaded_end.saturating_sub(ring_bytes));
        let look = self.look_ahead(end, window, look_end, last, term_floor);
        if look.damage && !truncate_damaged {
            return Err(WalError::Corrupt {
                file_offset: self.file_offset(end),
                position: end,
                source: stop.unwrap_or(RecordError::Truncated {
                    needed: HEADER_BYTES,
                    available: 0,
                }),
            });
        }
        // Zeroes (never-written or erased space) are a clean end, not a stop reason.
        let stop = stop.filter(|error| {
            *error
                != RecordError::NotARecord {
                    magic: 0,
                    reserved: 0,
                }
        });
        self.report = RecoveryReport {
            end_position: end,
            last,
            entries,
            discarded_records: look.records,
            discarded_bytes: look.furthest - end,
            stop,
            damage_truncated: look.damage,
        };
        self.accepted_position = end;
        self.submitted_position = end;
        self.durable_position = end;
        (self.last_id, self.submitted_id, self.durable_id) = (last, last, last);
        for watermark in [&self.accepted, &self.submitted, &self.flushed] {
            watermark.advance(last);
        }
        self.assert_memory_invariant();
        if !self.read_only {
            // Erase the remnant zone so the cut is durable; after a cut at
            // damage, the evidence zone too, or the next open would see the
            // same evidence again.
            let zones = if look.damage { 2 } else { 1 };
            let zero_end = (end + zones * window).min(block_floor(limit));
            if zero_end > end {
                self.zero_memory(end, zero_end);
                self.write_through_now(block_floor(end), block_ceil(zero_end))?;
            }
        }
        Ok(())
    }

    /// Looks at [end, look_end) (already in memory) for records continuing
    /// the log after `last`: in the first `window` bytes they are remnants of
    /// in-flight writes, after it they prove damage at `end`.
    fn look_ahead(
        &self,
        end: u64,
        window: u64,
        look_end: u64,
        last: IoId,
        term_floor: u64,
    ) -> LookAhead {
        let mut look = LookAhead {
            furthest: end,
            ..LookAhead::default()
        };
        if end >= look_end {
            return look;
        }
        // A torn record at E: its header is sane, its body is not.
        let segment_end = self.segment_end(end);
        if segment_end - end >= HEADER_BYTES as u64 {
            let bytes = self.memory_range(end, segment_end.min(look_end));
            if let Ok(header) = record::peek_header(bytes)
                && record::decode(bytes).is_err()
                && header.kind == RecordKind::Entry
                && header.index > last.index
            {
                look.records += 1;
                look.furthest = (end + header.record_bytes() as u64).min(look_end);
            }
        }
        let mut position = end;
        while position < look_end {
            let segment_end = self.segment_end(position);
            if segment_end - position < HEADER_BYTES as u64 {
                position = segment_end;
                continue;
            }
            let bytes = self.memory_range(position, segment_end.min(look_end));
            let continuing = match record::decode(bytes) {
                Ok(record) => {
                    let id = record.header.io_id();
                    (record.header.kind == RecordKind::Entry
                        && id.index > last.index
                        && id.term >= term_floor)
                        .then_some(record.bytes.len() as u64)
                }
                Err(_) => None,
            };
            match continuing {
                Some(size) if position < end + window => {
                    look.records += 1;
                    look.furthest = look.furthest.max(position + size);
                    position += size;
                }
                Some(_) => {
                    look.damage = true;
                    return look;
                }
                None => position += RECORD_ALIGN_BYTES as u64,
            }
        }
        look
    }
}
