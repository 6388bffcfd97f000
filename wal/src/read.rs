//! Reads: records in place in ring memory while they are there, otherwise
//! through one preallocated O_DIRECT read buffer.
//!
//! ```text
//!  index ──ChunkIndex::floor──▶ (stamped index, position) ──hop headers──▶ position
//!  position >= mem_low  → view of ring memory [position, min(accepted, segment end))
//!  position <  mem_low  → durable (room_for's invariant): read_buffer window of the
//!                         file at block_floor(position), records CRC-checked
//! ```
//! A view borrows the WAL, so the ring space it shows cannot be reused while
//! it is held; nothing is copied for in-memory reads.

use std::os::unix::fs::FileExt;

use crate::IoId;
use crate::error::{Result, WalError};
use crate::record::{self, HEADER_BYTES, RecordError, RecordHeader, RecordKind, Records};
use crate::ring::{BLOCK_BYTES, block_ceil, block_floor};
use crate::wal::Wal;

/// Records read from the log: in ring memory (no copy) or in the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct ReadView<'a> {
    bytes: &'a [u8],
    entries: u64,
    last: IoId,
    from_memory: bool,
}

impl<'a> ReadView<'a> {
    /// The records' bytes (entries, possibly with padding records between
    /// them): the wire format, ready to send or to `append_raw`.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The records, padding included.
    pub fn records(&self) -> Records<'a> {
        Records::new(self.bytes)
    }
    /// Entry records in the view.
    pub fn entries(&self) -> u64 {
        self.entries
    }
    /// Last entry in the view.
    pub fn last(&self) -> IoId {
        self.last
    }
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
    /// Whether the bytes are ring memory (true) or the file read buffer.
    pub fn from_memory(&self) -> bool {
        self.from_memory
    }
}

impl Wal {
    /// How many times the file was read into the read buffer (each read is
    /// up to `read_buffer_bytes`): what serving entries that left ring
    /// memory cost.
    pub fn file_reads(&self) -> u64 {
        self.file_reads
    }

    /// Header of the record at `position` (in memory, or through the read buffer).
    pub(crate) fn header_at(&mut self, position: u64) -> Result<RecordHeader> {
        if position >= self.mem_low() {
            return Ok(self.memory_header(position));
        }
        let bytes = self.file_bytes(position, HEADER_BYTES)?;
        record::peek_header(bytes).map_err(|source| WalError::Corrupt {
            file_offset: self.file_offset(position),
            position,
            source,
        })
    }

    /// `len` bytes of the log at `position` (not in memory) through the read
    /// buffer, re-reading it only when they are not already there.
    fn file_bytes(&mut self, position: u64, len: usize) -> Result<&[u8]> {
        let window_end = self.read_window_start + self.read_window_len as u64;
        if position < self.read_window_start || position + len as u64 > window_end {
            let from = block_floor(position);
            // Only durable bytes of one segment: file offsets are contiguous there.
            let limit = self
                .segment_end(from)
                .min(block_ceil(self.durable_position));
            let window_len = (limit - from).min(self.read_buffer.len() as u64) as usize;
            self.read_window_len = 0;
            let file_offset = self.file_offset(from);
            self.file
                .read_exact_at(self.read_buffer.slice_mut(0, window_len), file_offset)
                .map_err(|e| WalError::io("read WAL file", e))?;
            self.file_reads += 1;
            self.read_window_start = from;
            // Only bytes below `durable` stay as they are (until a
            // truncation, which forgets the window): the rest of the last
            // block may still change, so it is not kept as cached.
            let durable_len = self.durable_position.saturating_sub(from) as usize;
            self.read_window_len = window_len.min(durable_len);
        }
        let at = (position - self.read_window_start) as usize;
        let available = self.read_window_len.saturating_sub(at).min(len);
        Ok(self.read_buffer.slice(at, available))
    }

    /// Log position of the entry `index` (which must be live).
    pub(crate) fn locate(&mut self, index: u64) -> Result<u64> {
        let first = self.first_index();
        let (mut at_index, mut position) = self
            .index
            .floor(index, self.start_position, self.accepted_position)
            .unwrap_or((first, self.start_position));
        // Hops from a known entry (or the live start, which may begin with
        // padding): bounded by one index chunk plus one record.
        loop {
            position = self.skip_filler(position);
            let header = self.header_at(position)?;
            if header.kind == RecordKind::Entry {
                if header.index == index {
                    return Ok(position);
                }
                if header.index > index || header.index < at_index {
                    panic!(
                        "index map out of step: looking for {index}, found {}",
                        header.index
                    );
                }
                at_index = header.index;
            }
            position += header.record_bytes() as u64;
            assert!(position < self.accepted_position, "entry {index} not found");
        }
    }

    /// Records from entry `from_index` on, up to `max_bytes` (at least one
    /// entry), contiguous in one ring segment. In place in ring memory while
    /// they are there; otherwise read from the file into the read buffer and
    /// verified. An index past the last entry gives an empty view.
    pub fn read(&mut self, from_index: u64, max_bytes: usize) -> Result<ReadView<'_>> {
        let first = self.first_index();
        if from_index < first {
            return Err(WalError::Purged {
                index: from_index,
                first_index: first,
            });
        }
        if from_index > self.last_id.index {
            return Ok(ReadView {
                bytes: &[],
                entries: 0,
                last: self.last_id,
                from_memory: true,
            });
        }
        let position = self.locate(from_index)?;
        let segment_end = self.segment_end(position);
        if position >= self.mem_low() {
            let limit = self.accepted_position.min(segment_end);
            let at = self.ring_offset(position);
            let bytes = self.memory.slice(at, (limit - position) as usize);
            let (len, entries, last) =
                take_records(bytes, max_bytes, false).expect("records in ring memory are valid");
            if entries > 0 {
                self.index.note_read_end(last.index, position + len as u64);
            }
            return Ok(ReadView {
                bytes: &bytes[..len],
                entries,
                last,
                from_memory: true,
            });
        }
        // Older than ring memory: durable, on file (see room_for's invariant).
        let limit = segment_end.min(self.durable_position);
        let mut want = ((limit - position) as usize).min(self.read_buffer.len() - BLOCK_BYTES);
        // A reader going on through the file (an applier taking part of a
        // view, a sender's smaller frames) takes what the window already
        // holds, if that is a whole record at least, rather than reading a
        // whole new window for the rest.
        let window_end = self.read_window_start + self.read_window_len as u64;
        if position >= self.read_window_start && position < window_end {
            let cached = (window_end - position) as usize;
            let first = self.header_at(position)?;
            if first.record_bytes() <= cached {
                want = want.min(cached);
            }
        }
        let file_offset = self.file_offset(position);
        let bytes = self.file_bytes(position, want)?;
        match take_records(bytes, max_bytes, true) {
            Ok((len, entries, last)) => {
                if entries > 0 {
                    self.index.note_read_end(last.index, position + len as u64);
                }
                // The bytes file_bytes returned: the window from `position`.
                let at = (position - self.read_window_start) as usize;
                Ok(ReadView {
                    bytes: self.read_buffer.slice(at, len),
                    entries,
                    last,
                    from_memory: false,
                })
            }
            Err((offset, source)) => Err(WalError::Corrupt {
                file_offset: file_offset + offset as u64,
                position: position + offset as u64,
                source,
            }),
        }
    }
}

/// How many leading bytes of `src` to return: whole records up to
/// `max_bytes` (at least one entry), not ending on padding. With `verify`,
/// each record's CRC is checked. Returns (bytes, entries, last entry).
fn take_records(
    src: &[u8],
    max_bytes: usize,
    verify: bool,
) -> Result<(usize, u64, IoId), (usize, RecordError)> {
    let mut len = 0;
    let mut scanned = 0;
    let mut entries = 0;
    let mut last = IoId::ZERO;
    while scanned < src.len() {
        let rest = &src[scanned..];
        if rest.len() < HEADER_BYTES && entries > 0 {
            // Implicit filler before a segment end (or the buffer's end).
            break;
        }
        let header = record::peek_header(rest).map_err(|error| (scanned, error))?;
        let size = header.record_bytes();
        if size > rest.len() && entries > 0 {
            // The buffer ends inside a later record (a file read asking for
            // more than the read buffer holds ends inside one, unless records
            // happen to end there): the view stops before it. Checked before
            // the CRC, which needs the whole record.
            break;
        }
        if size > rest.len() {
            return Err((
                scanned,
                RecordError::Truncated {
                    needed: size,
                    available: rest.len(),
                },
            ));
        }
        let is_entry = header.kind == RecordKind::Entry;
        if is_entry && entries > 0 && scanned + size > max_bytes {
            break;
        }
        // Only records the view may return are verified: one past its end
        // (cut, or beyond max_bytes) is the next read's first.
        if verify {
            record::decode(&rest[..size]).map_err(|error| (scanned, error))?;
        }
        if is_entry {
            entries += 1;
            last = header.io_id();
            len = scanned + size;
        }
        scanned += size;
    }
    Ok((len, entries, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four 480-byte entries, indexes 1..=4, back to back.
    fn four_entries() -> Vec<u8> {
        let size = record::record_bytes(448);
        let mut bytes = vec![0u8; 4 * size];
        for k in 0..4 {
            let id = IoId::new(1, k as u64 + 1);
            record::encode_entry(&mut bytes[k * size..(k + 1) * size], id, &[k as u8; 448]);
        }
        bytes
    }

    #[test]
    fn a_buffer_ending_inside_a_record_stops_before_it_verified_or_not() {
        let bytes = four_entries();
        for verify in [false, true] {
            // Cut inside the third record's payload, and inside its header.
            for cut in [2 * 480 + 100, 2 * 480 + 8] {
                let taken = take_records(&bytes[..cut], 1 << 20, verify);
                assert_eq!(taken, Ok((2 * 480, 2, IoId::new(1, 2))), "cut {cut}");
            }
            // The first record cut: nothing to return, an error.
            assert_eq!(
                take_records(&bytes[..300], 1 << 20, verify),
                Err((
                    0,
                    RecordError::Truncated {
                        needed: 480,
                        available: 300
                    }
                ))
            );
        }
    }

    #[test]
    fn only_records_the_view_returns_are_verified() {
        let mut bytes = four_entries();
        bytes[3 * 480 + 100] ^= 1; // the fourth entry's payload
        // Past max_bytes: not returned, not checked.
        assert_eq!(
            take_records(&bytes, 3 * 480, true),
            Ok((3 * 480, 3, IoId::new(1, 3)))
        );
        // Within max_bytes: the damage is reported where it is.
        let taken = take_records(&bytes, 1 << 20, true);
        assert!(
            matches!(taken, Err((1440, RecordError::BadCrc { .. }))),
            "{taken:?}"
        );
    }
}
