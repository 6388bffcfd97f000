//! Streams: ids and one stream's entries.
//!
//! An id is `<ms>-<seq>`, ordered by ms then seq. An entry's fields are
//! kept as the encoded field list of its XADD payload (see `payload.rs`),
//! so XRANGE writes them without decoding into separate allocations.
//!
//! `XADD key * ...` is resolved when the entry is applied, not when it is
//! proposed, so every replica picks the same id: the leader puts its clock
//! (`now_ms`) in the payload and apply takes
//! `max(last id + 1, now_ms-0)` — the id is never older than the stream's
//! top, whatever the clocks of later leaders say.

use std::collections::BTreeMap;

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`, below every valid entry id.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The next id, if any.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }

    /// The previous id, if any.
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self
                .ms
                .checked_sub(1)
                .map(|ms| StreamId { ms, seq: u64::MAX }),
        }
    }

    /// Writes `<ms>-<seq>` into `buf`, returning the text.
    pub fn format(self, buf: &mut [u8; 41]) -> &[u8] {
        let mut digits = [0u8; 20];
        let ms = super::resp::format_u64(self.ms, &mut digits);
        let ms_len = ms.len();
        buf[..ms_len].copy_from_slice(ms);
        buf[ms_len] = b'-';
        let seq = super::resp::format_u64(self.seq, &mut digits);
        buf[ms_len + 1..ms_len + 1 + seq.len()].copy_from_slice(seq);
        &buf[..ms_len + 1 + seq.len()]
    }
}

/// How XADD names the new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaddId {
    /// `*`: resolved at apply from the leader's clock.
    Auto {
        /// The leader's wall clock when it proposed, in ms.
        now_ms: u64,
    },
    /// `<ms>-*`: the sequence is resolved at apply.
    AutoSeq {
        /// The given milliseconds.
        ms: u64,
    },
    /// `<ms>-<seq>` or `<ms>` (seq 0).
    Explicit(StreamId),
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Parses an XADD id argument (`*`, `<ms>`, `<ms>-<seq>`, `<ms>-*`).
pub fn parse_xadd_id(text: &[u8], now_ms: u64) -> Option<XaddId> {
    if text == b"*" {
        return Some(XaddId::Auto { now_ms });
    }
    match text.iter().position(|&b| b == b'-') {
        None => parse_u64(text).map(|ms| XaddId::Explicit(StreamId { ms, seq: 0 })),
        Some(dash) => {
            let ms = parse_u64(&text[..dash])?;
            match &text[dash + 1..] {
                b"*" => Some(XaddId::AutoSeq { ms }),
                seq => Some(XaddId::Explicit(StreamId {
                    ms,
                    seq: parse_u64(seq)?,
                })),
            }
        }
    }
}

/// Which end of an XRANGE an id bounds: a bare `<ms>` means the first id of
/// that millisecond at the start and the last at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeEnd {
    /// The start bound.
    Start,
    /// The end bound.
    End,
}

/// Parses an XRANGE bound: `-`, `+`, `<ms>`, `<ms>-<seq>`, or one of the
/// last two after `(` (exclusive). None when malformed or when an exclusive
/// bound leaves nothing (e.g. `(0-0` as an end).
pub fn parse_range_bound(text: &[u8], end: RangeEnd) -> Option<Option<StreamId>> {
    match (text, end) {
        (b"-", _) => return Some(Some(StreamId::ZERO)),
        (b"+", _) => return Some(Some(StreamId::MAX)),
        _ => {}
    }
    let (exclusive, text) = match text.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, text),
    };
    let id = match text.iter().position(|&b| b == b'-') {
        None => {
            let ms = parse_u64(text)?;
            let seq = if end == RangeEnd::Start { 0 } else { u64::MAX };
            StreamId { ms, seq }
        }
        Some(dash) => StreamId {
            ms: parse_u64(&text[..dash])?,
            seq: parse_u64(&text[dash + 1..])?,
        },
    };
    if !exclusive {
        return Some(Some(id));
    }
    Some(match end {
        RangeEnd::Start => id.next(),
        RangeEnd::End => id.prev(),
    })
}

/// Why an XADD id is refused at apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaddRefused {
    /// The id is not above the stream's top.
    NotAboveTop,
    /// The id is 0-0.
    Zero,
}

/// One stream: entries by id, and the largest id ever added (which stays
/// the floor for new ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// entries[id] is the entry's encoded field list.
    pub(crate) entries: BTreeMap<StreamId, Box<[u8]>>,
    pub(crate) last: StreamId,
}

impl Stream {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The largest id ever added.
    pub fn last_id(&self) -> StreamId {
        self.last
    }

    /// The id an XADD would get, deterministically.
    pub fn resolve(&self, id: XaddId) -> Result<StreamId, XaddRefused> {
        let floor = self.last.next().ok_or(XaddRefused::NotAboveTop)?;
        let id = match id {
            XaddId::Auto { now_ms } => floor.max(StreamId { ms: now_ms, seq: 0 }),
            XaddId::AutoSeq { ms } if ms == self.last.ms => floor,
            XaddId::AutoSeq { ms } => StreamId { ms, seq: 0 },
            XaddId::Explicit(id) => id,
        };
        if id == StreamId::ZERO {
            return Err(XaddRefused::Zero);
        }
        if id < floor {
            return Err(XaddRefused::NotAboveTop);
        }
        Ok(id)
    }

    /// Adds an entry whose id came from [`Stream::resolve`].
    pub fn insert(&mut self, id: StreamId, fields: &[u8]) {
        assert!(id > self.last, "stream ids only grow");
        self.entries.insert(id, fields.into());
        self.last = id;
    }

    /// Entries with start ≤ id ≤ end, in order.
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
    ) -> impl Iterator<Item = (&StreamId, &Box<[u8]>)> + Clone {
        let empty = start > end;
        self.entries
            .range(start..=end.max(start))
            .take(if empty { 0 } else { usize::MAX })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_ids_never_go_back_whatever_the_clock() {
        let mut stream = Stream::default();
        let a = stream.resolve(XaddId::Auto { now_ms: 100 }).unwrap();
        assert_eq!(a, StreamId { ms: 100, seq: 0 });
        stream.insert(a, b"");
        // Same millisecond: next sequence.
        let b = stream.resolve(XaddId::Auto { now_ms: 100 }).unwrap();
        assert_eq!(b, StreamId { ms: 100, seq: 1 });
        stream.insert(b, b"");
        // A later leader with a clock behind: still above the top.
        assert_eq!(
            stream.resolve(XaddId::Auto { now_ms: 50 }).unwrap(),
            StreamId { ms: 100, seq: 2 }
        );
        assert_eq!(
            stream.resolve(XaddId::AutoSeq { ms: 100 }).unwrap(),
            StreamId { ms: 100, seq: 2 }
        );
        assert_eq!(
            stream.resolve(XaddId::AutoSeq { ms: 99 }),
            Err(XaddRefused::NotAboveTop)
        );
        assert_eq!(
            stream.resolve(XaddId::Explicit(StreamId { ms: 100, seq: 1 })),
            Err(XaddRefused::NotAboveTop)
        );
        assert_eq!(
            Stream::default().resolve(XaddId::Explicit(StreamId::ZERO)),
            Err(XaddRefused::Zero)
        );
    }

    #[test]
    fn id_text_forms() {
        assert_eq!(parse_xadd_id(b"*", 7), Some(XaddId::Auto { now_ms: 7 }));
        assert_eq!(
            parse_xadd_id(b"5", 7),
            Some(XaddId::Explicit(StreamId { ms: 5, seq: 0 }))
        );
        assert_eq!(parse_xadd_id(b"5-*", 7), Some(XaddId::AutoSeq { ms: 5 }));
        assert_eq!(parse_xadd_id(b"5-x", 7), None);
        assert_eq!(parse_xadd_id(b"-1", 7), None);
        assert_eq!(parse_xadd_id(b"99999999999999999999", 7), None);
        assert_eq!(
            parse_range_bound(b"5", RangeEnd::End),
            Some(Some(StreamId {
                ms: 5,
                seq: u64::MAX
            }))
        );
        assert_eq!(
            parse_range_bound(b"(5-1", RangeEnd::Start),
            Some(Some(StreamId { ms: 5, seq: 2 }))
        );
        assert_eq!(parse_range_bound(b"(0-0", RangeEnd::End), Some(None));
        let mut buf = [0u8; 41];
        assert_eq!(StreamId::MAX.format(&mut buf).len(), 41);
        assert_eq!(StreamId { ms: 12, seq: 3 }.format(&mut buf), b"12-3");
    }
}
