//! The byte layout of a log record: the same bytes in ring memory, in the WAL
//! file and on the wire, so a follower appends what it receives verbatim and
//! checks it with the same code as recovery does.
//!
//! ```text
//!  offset  size  field
//!  0       4     crc32c      CRC32C (Castagnoli) of bytes [4, 32) and the payload;
//!                            for a padding record, of bytes [4, 32) only
//!  4       4     payload_len payload bytes, excluding header and alignment
//!  8       1     kind        1 = entry, 2 = padding (skip to the next boundary)
//!  9       1     flags       0 (reserved)
//!  10      2     magic       0x5252 ("RR"): cheap rejection of non-records
//!  12      4     reserved    0
//!  16      8     term        term of the leader that wrote the entry (0 for padding)
//!  24      8     index       log index of the entry (0 for padding)
//!  32      len   payload
//!  32+len  0..7  zero bytes up to the next multiple of 8
//! ```
//! All integers are little-endian. A record occupies
//! `record_bytes(payload_len) = align_up(32 + payload_len, 8)` bytes.

use crate::IoId;

/// Size of the fixed record header.
pub const HEADER_BYTES: usize = 32;
/// Every record starts and ends on a multiple of this.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Magic at offset 10 of every header.
pub const RECORD_MAGIC: u16 = 0x5252;
/// Largest payload a record may carry (the length field is a `u32`, and a
/// record must fit well inside any ring).
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(HEADER_BYTES.is_multiple_of(RECORD_ALIGN_BYTES));
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize);

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A log entry (an empty payload is a leader's no-op entry).
    Entry = 1,
    /// Filler up to a wrap point; carries no entry and is skipped.
    Padding = 2,
}

impl RecordKind {
    fn from_u8(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::Padding),
            _ => None,
        }
    }
}

/// The decoded fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored checksum.
    pub crc: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Entry or padding.
    pub kind: RecordKind,
    /// Term of the writing leader.
    pub term: u64,
    /// Log index.
    pub index: u64,
}

impl RecordHeader {
    /// The record's (term, index).
    pub fn io_id(&self) -> IoId {
        IoId::new(self.term, self.index)
    }

    /// Bytes the whole record occupies, alignment included.
    pub fn record_bytes(&self) -> usize {
        record_bytes(self.payload_len as usize)
    }
}

/// A record borrowed from the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The header.
    pub header: RecordHeader,
    /// The payload (empty for padding).
    pub payload: &'a [u8],
    /// The record's full bytes, header, payload and alignment.
    pub bytes: &'a [u8],
}

/// Why bytes are not a valid record (or run of records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The buffer ends inside the record.
    #[error("record truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the record claims.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The magic or a reserved field is wrong: these bytes are not a record.
    #[error("not a record header (magic {magic:#06x}, reserved fields {reserved:#x})")]
    NotARecord {
        /// Magic found.
        magic: u16,
        /// Reserved bits found (must be zero).
        reserved: u64,
    },
    /// Unknown kind byte.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The length field is larger than any record may be.
    #[error("record payload length {0} exceeds the maximum {PAYLOAD_BYTES_MAX}")]
    TooLong(u32),
    /// The checksum does not match the bytes.
    #[error("record crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A record's index does not follow its predecessor's.
    #[error("index gap: expected {expected}, found {found}")]
    IndexGap {
        /// Index that should come next.
        expected: u64,
        /// Index found.
        found: u64,
    },
    /// A record's term is lower than its predecessor's.
    #[error("term went backwards: {found} after {previous}")]
    TermRegressed {
        /// Term of the previous record.
        previous: u64,
        /// Term found.
        found: u64,
    },
}

/// Bytes a record with `payload_len` bytes of payload occupies.
pub const fn record_bytes(payload_len: usize) -> usize {
    (HEADER_BYTES + payload_len + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

/// Writes the header of a record whose payload is already in
/// `dst[HEADER_BYTES..HEADER_BYTES + payload_len]`, zeroes the alignment tail
/// and computes the CRC. Lets a caller build the payload in place (no copy).
/// Returns the record's size.
///
/// Panics if `dst` is shorter than `record_bytes(payload_len)` or the payload
/// is longer than [`PAYLOAD_BYTES_MAX`]: both are caller bugs.
pub fn seal(dst: &mut [u8], kind: RecordKind, id: IoId, payload_len: usize) -> usize {
    assert!(payload_len <= PAYLOAD_BYTES_MAX, "payload too long");
    let size = record_bytes(payload_len);
    assert!(dst.len() >= size, "destination shorter than the record");
    dst[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    dst[8] = kind as u8;
    dst[9] = 0;
    dst[10..12].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    dst[12..16].fill(0);
    dst[16..24].copy_from_slice(&id.term.to_le_bytes());
    dst[24..32].copy_from_slice(&id.index.to_le_bytes());
    dst[HEADER_BYTES + payload_len..size].fill(0);
    let crc = compute_crc(kind, &dst[..size], payload_len);
    dst[0..4].copy_from_slice(&crc.to_le_bytes());
    size
}

/// Encodes an entry record with `payload` into `dst`; returns its size.
pub fn encode_entry(dst: &mut [u8], id: IoId, payload: &[u8]) -> usize {
    dst[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
    seal(dst, RecordKind::Entry, id, payload.len())
}

/// Encodes a padding record that fills exactly `dst` (`dst.len()` must be a
/// multiple of 8 and at least [`HEADER_BYTES`]); the filler bytes are left
/// as they are, since the CRC of padding covers only its header.
pub fn encode_padding(dst: &mut [u8]) -> usize {
    assert!(dst.len() >= HEADER_BYTES && dst.len().is_multiple_of(RECORD_ALIGN_BYTES));
    // The alignment tail is empty because dst.len() is aligned; seal would
    // zero nothing past the payload.
    seal(
        dst,
        RecordKind::Padding,
        IoId::ZERO,
        dst.len() - HEADER_BYTES,
    )
}

fn compute_crc(kind: RecordKind, record: &[u8], payload_len: usize) -> u32 {
    let crc = crc32c::crc32c(&record[4..HEADER_BYTES]);
    match kind {
        RecordKind::Entry => {
            crc32c::crc32c_append(crc, &record[HEADER_BYTES..HEADER_BYTES + payload_len])
        }
        RecordKind::Padding => crc,
    }
}

/// Parses the header at the start of `src` without checking the CRC: for
/// hopping over records already verified (ring memory, located reads). Checks
/// magic, kind and length, so hopping never runs off a non-record.
pub fn peek_header(src: &[u8]) -> Result<RecordHeader, RecordError> {
    if src.len() < HEADER_BYTES {
        return Err(RecordError::Truncated {
            needed: HEADER_BYTES,
            available: src.len(),
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes(src[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(src[at..at + 8].try_into().unwrap());
    let magic = u16::from_le_bytes([src[10], src[11]]);
    let reserved = u64::from(src[9]) | u64::from(u32_at(12)) << 8;
    if magic != RECORD_MAGIC || reserved != 0 {
        return Err(RecordError::NotARecord { magic, reserved });
    }
    let kind = RecordKind::from_u8(src[8]).ok_or(RecordError::UnknownKind(src[8]))?;
    let payload_len = u32_at(4);
    if payload_len as usize > PAYLOAD_BYTES_MAX {
        return Err(RecordError::TooLong(payload_len));
    }
    Ok(RecordHeader {
        crc: u32_at(0),
        payload_len,
        kind,
        term: u64_at(16),
        index: u64_at(24),
    })
}

/// Decodes and verifies the record at the start of `src`.
pub fn decode(src: &[u8]) -> Result<Record<'_>, RecordError> {
    let record = decode_unchecked(src)?;
    let computed = compute_crc(
        record.header.kind,
        record.bytes,
        record.header.payload_len as usize,
    );
    if record.header.crc != computed {
        return Err(RecordError::BadCrc {
            stored: record.header.crc,
            computed,
        });
    }
    Ok(record)
}

/// [`decode`] without the CRC: header, kind and length are checked.
fn decode_unchecked(src: &[u8]) -> Result<Record<'_>, RecordError> {
    let header = peek_header(src)?;
    let payload_len = header.payload_len as usize;
    let size = record_bytes(payload_len);
    if src.len() < size {
        return Err(RecordError::Truncated {
            needed: size,
            available: src.len(),
        });
    }
    let payload = match header.kind {
        RecordKind::Entry => &src[HEADER_BYTES..HEADER_BYTES + payload_len],
        RecordKind::Padding => &src[..0],
    };
    Ok(Record {
        header,
        payload,
        bytes: &src[..size],
    })
}

/// Iterates over the records packed back to back in a buffer. Stops at the
/// end of the buffer; yields an error (and then stops) at the first invalid
/// record.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    src: &'a [u8],
    offset: usize,
    failed: bool,
    /// Recompute each record's CRC (false: the bytes were verified already).
    check_crc: bool,
}

impl<'a> Records<'a> {
    /// Records in `src`, which must start on a record boundary.
    pub fn new(src: &'a [u8]) -> Records<'a> {
        Records {
            src,
            offset: 0,
            failed: false,
            check_crc: true,
        }
    }

    /// Records in `src` that [`verify_run`] (or [`decode`]) already accepted:
    /// headers and lengths are still checked, so a hop never runs off a
    /// non-record, but the CRCs are not computed again. For a run verified
    /// once at its trust boundary (the transport, `Wal::append_raw`) and then
    /// walked again on the same thread.
    pub fn verified(src: &'a [u8]) -> Records<'a> {
        Records {
            check_crc: false,
            ..Records::new(src)
        }
    }

    /// Byte offset of the next record within the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset == self.src.len() {
            return None;
        }
        let src = &self.src[self.offset..];
        let decoded = if self.check_crc {
            decode(src)
        } else {
            decode_unchecked(src)
        };
        match decoded {
            Ok(record) => {
                self.offset += record.bytes.len();
                Some(Ok(record))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// What [`verify_run`] found in a valid run of entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Entry records in the run (padding not counted).
    pub entries: u64,
    /// Id of the last entry, or `prev` if the run holds none.
    pub last: IoId,
}

/// Checks that `src` is a run of valid records whose entries continue the
/// log after `prev`: indexes consecutive from `prev.index + 1`, terms never
/// lower than `prev.term` nor than their predecessor's. Used by a follower on
/// what it receives and by recovery on what it reads.
pub fn verify_run(src: &[u8], prev: IoId) -> Result<RunSummary, (usize, RecordError)> {
    let mut records = Records::new(src);
    let mut last = prev;
    let mut entries = 0;
    loop {
        let offset = records.offset();
        let Some(item) = records.next() else {
            return Ok(RunSummary { entries, last });
        };
        let record = item.map_err(|error| (offset, error))?;
        if record.header.kind == RecordKind::Padding {
            continue;
        }
        let id = record.header.io_id();
        if id.index != last.index + 1 {
            let error = RecordError::IndexGap {
                expected: last.index + 1,
                found: id.index,
            };
            return Err((offset, error));
        }
        if id.term < last.term {
            let error = RecordError::TermRegressed {
                previous: last.term,
                found: id.term,
            };
            return Err((offset, error));
        }
        last = id;
        entries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_to_vec(id: IoId, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xAA; record_bytes(payload.len())];
        let size = encode_entry(&mut buf, id, payload);
        assert_eq!(size, buf.len());
        buf
    }

    #[test]
    fn sizes_are_aligned() {
        assert_eq!(record_bytes(0), 32);
        assert_eq!(record_bytes(1), 40);
        assert_eq!(record_bytes(8), 40);
        assert_eq!(record_bytes(9), 48);
        assert_eq!(record_bytes(4000 - 32), 4000);
    }

    #[test]
    fn padding_fills_and_decodes_without_payload() {
        let mut buf = vec![0x55; 96];
        assert_eq!(encode_padding(&mut buf), 96);
        let record = decode(&buf).unwrap();
        assert_eq!(record.header.kind, RecordKind::Padding);
        assert_eq!(record.bytes.len(), 96);
        assert!(record.payload.is_empty());
    }

    #[test]
    fn a_run_with_a_gap_or_a_lower_term_is_refused_at_its_offset() {
        let mut run = encode_to_vec(IoId::new(2, 5), b"a");
        let second_at = run.len();
        run.extend(encode_to_vec(IoId::new(2, 7), b"b"));
        assert_eq!(
            verify_run(&run, IoId::new(1, 4)),
            Err((
                second_at,
                RecordError::IndexGap {
                    expected: 6,
                    found: 7
                }
            ))
        );
        let run = encode_to_vec(IoId::new(1, 5), b"a");
        assert!(matches!(
            verify_run(&run, IoId::new(2, 4)),
            Err((0, RecordError::TermRegressed { .. }))
        ));
    }

    #[test]
    fn verified_iteration_skips_only_the_crc() {
        let mut run = encode_to_vec(IoId::new(1, 1), b"abc");
        run[HEADER_BYTES] ^= 1; // payload damage: only the CRC can see it
        assert!(matches!(
            Records::new(&run).next(),
            Some(Err(RecordError::BadCrc { .. }))
        ));
        let record = Records::verified(&run).next().unwrap().unwrap();
        assert_eq!(record.header.index, 1);
        run[10] ^= 1; // magic damage: still refused without the CRC
        assert!(matches!(
            Records::verified(&run).next(),
            Some(Err(RecordError::NotARecord { .. }))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(term: u64, index: u64, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let buf = encode_to_vec(IoId::new(term, index), &payload);
            let record = decode(&buf).unwrap();
            prop_assert_eq!(record.header.io_id(), IoId::new(term, index));
            prop_assert_eq!(record.payload, &payload[..]);
            prop_assert_eq!(record.bytes.len(), buf.len());
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..100), bit in 0usize..10_000) {
            let mut buf = encode_to_vec(IoId::new(3, 9), &payload);
            let payload_end = HEADER_BYTES + payload.len();
            let bit = bit % (payload_end * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&buf).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = verify_run(&bytes, IoId::ZERO);
        }

        #[test]
        fn a_valid_run_is_summarised(count in 1u64..20, first in 1u64..1000) {
            let mut run = Vec::new();
            for i in 0..count {
                run.extend(encode_to_vec(IoId::new(4, first + i), &i.to_le_bytes()[..(i as usize % 8)]));
            }
            let summary = verify_run(&run, IoId::new(4, first - 1)).unwrap();
            prop_assert_eq!(summary.entries, count);
            prop_assert_eq!(summary.last, IoId::new(4, first + count - 1));
        }
    }
}
