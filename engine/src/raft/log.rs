//! What the core knows about its log without holding it: each entry's term
//! (via [`TermIndex`]) and record size, and which writes are durable.
//!
//! ```text
//!   ends[k] = record bytes of entries first_index ..= first_index + k,
//!             counted from `base_bytes` (bytes up to the snapshot point)
//!   bytes(a..=b) = end(b) - end(a - 1)
//!   Invariant: ends.len() == last_index - snapshot.index <= entries_max
//! ```
//!
//! Durability. Every write the caller performs has an [`IoId`]: the term of
//! the leader on whose behalf it was written and the index of its last entry.
//! The caller reports `flushed(io_id)` in that order. A write never truncates
//! below entries written in its own term, and every truncation happens under
//! a higher term than the one before it, so:
//! ```text
//!   durable_index = min(flushed.index, last_index,
//!                       lowest truncation made under a term > flushed.term)
//! ```

use std::collections::VecDeque;

use ringraft_wal::IoId;
use ringraft_wal::record::record_bytes;

use super::term_index::{TermIndex, TermRunsFull};

/// Appending would overflow a configured bound of the log metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogFull {
    /// `log_entries_max` entries are live: purge applied entries first.
    #[error("log metadata holds {entries_max} entries; purge applied entries")]
    Entries {
        /// Configured capacity.
        entries_max: usize,
    },
    /// The term index is full.
    #[error(transparent)]
    TermRuns(#[from] TermRunsFull),
}

/// Metadata of one node's log.
#[derive(Debug, Clone)]
pub struct LogMeta {
    terms: TermIndex,
    ends: VecDeque<u64>,
    base_bytes: u64,
    entries_max: usize,
    accepted: IoId,
    flushed: IoId,
    /// (term of the latest truncation, lowest index kept by any truncation
    /// made under a term above `flushed.term`).
    truncation_floor: Option<(u64, u64)>,
}

impl LogMeta {
    /// An empty log after `snapshot`, everything in it durable.
    pub fn new(entries_max: usize, term_runs_max: usize, snapshot: IoId) -> LogMeta {
        LogMeta {
            terms: TermIndex::new(term_runs_max, snapshot),
            ends: VecDeque::with_capacity(entries_max),
            base_bytes: 0,
            entries_max,
            accepted: snapshot,
            flushed: snapshot,
            truncation_floor: None,
        }
    }

    /// The term index.
    pub fn terms(&self) -> &TermIndex {
        &self.terms
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> u64 {
        self.terms.last_index()
    }

    /// (term, index) of the last entry.
    pub fn last_id(&self) -> IoId {
        self.terms.last_id()
    }

    /// Term of entry `index`, if known.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.terms.term_at(index)
    }

    /// First unpurged index.
    pub fn first_index(&self) -> u64 {
        self.terms.first_index()
    }

    /// The last purged (term, index).
    pub fn snapshot(&self) -> IoId {
        self.terms.snapshot()
    }

    /// True if `count` more entries of `term` fit.
    pub fn can_append(&self, term: u64, count: usize) -> bool {
        self.ends.len() + count <= self.entries_max && (count == 0 || self.terms.can_append(term))
    }

    /// Appends one entry of `term` whose record is `bytes` long; returns its index.
    pub fn append(&mut self, term: u64, bytes: u64) -> Result<u64, LogFull> {
        if self.ends.len() == self.entries_max {
            return Err(LogFull::Entries {
                entries_max: self.entries_max,
            });
        }
        let index = self.terms.append(term)?;
        let end = self.ends.back().copied().unwrap_or(self.base_bytes) + bytes;
        self.ends.push_back(end);
        Ok(index)
    }

    /// Records bytes of an entry with a payload of `payload_len` bytes.
    pub fn entry_bytes(payload_len: usize) -> u64 {
        record_bytes(payload_len) as u64
    }

    /// Drops entries after `index`, on behalf of a leader of `write_term`.
    pub fn truncate_after(&mut self, index: u64, write_term: u64) {
        assert!(
            write_term > self.accepted.term
                || self.truncation_floor.is_none_or(|(_, f)| f <= index),
            "truncation below entries written in term {write_term}"
        );
        self.terms.truncate_after(index);
        let keep = (index - self.snapshot().index) as usize;
        self.ends.truncate(keep);
        let floor = self.truncation_floor.map_or(index, |(_, f)| f.min(index));
        self.truncation_floor = Some((write_term, floor));
    }

    /// Notes that the caller was handed a write with this id.
    pub fn accept(&mut self, io_id: IoId) {
        assert!(
            io_id >= self.accepted,
            "write {io_id} after {}",
            self.accepted
        );
        self.accepted = io_id;
    }

    /// The id of the latest write handed out.
    pub fn accepted(&self) -> IoId {
        self.accepted
    }

    /// The caller's writes up to `io_id` are durable. Older ids are ignored.
    /// Returns true if the durable index may have moved.
    pub fn flushed(&mut self, io_id: IoId) -> bool {
        if io_id <= self.flushed {
            return false;
        }
        self.flushed = io_id;
        if self
            .truncation_floor
            .is_some_and(|(term, _)| term <= io_id.term)
        {
            self.truncation_floor = None;
        }
        true
    }

    /// The highest flushed write id.
    pub fn flushed_id(&self) -> IoId {
        self.flushed
    }

    /// Every entry up to this index is durable and belongs to the current log.
    pub fn durable_index(&self) -> u64 {
        let mut d = self.flushed.index.min(self.last_index());
        if let Some((_, floor)) = self.truncation_floor {
            d = d.min(floor);
        }
        d
    }

    /// Record bytes of entries `first..=last` (0 if the range is empty).
    pub fn bytes_between(&self, first: u64, last: u64) -> u64 {
        if last < first {
            return 0;
        }
        self.end_of(last) - self.end_of(first - 1)
    }

    fn end_of(&self, index: u64) -> u64 {
        let snap = self.snapshot().index;
        assert!(
            index >= snap && index <= self.last_index(),
            "bytes of {index}"
        );
        if index == snap {
            self.base_bytes
        } else {
            self.ends[(index - snap - 1) as usize]
        }
    }

    /// The largest `last` in `first..=last_index` such that entries
    /// `first..=last` take at most `bytes_max` bytes, but at least `first`
    /// (an entry larger than the budget still goes alone). `first` must exist.
    pub fn last_within(&self, first: u64, bytes_max: u64) -> u64 {
        let start = self.end_of(first - 1);
        let snap = self.snapshot().index;
        let from = (first - snap - 1) as usize;
        let (a, b) = self.ends.as_slices();
        // Count of entries from `first` whose end stays within the budget.
        let fits = |end: &u64| *end - start <= bytes_max;
        let within = if from < a.len() {
            let in_a = a[from..].partition_point(fits);
            if in_a == a.len() - from {
                in_a + b.partition_point(fits)
            } else {
                in_a
            }
        } else {
            b[from - a.len()..].partition_point(fits)
        };
        first + (within.max(1) as u64) - 1
    }

    /// Forgets entries up to and including `index` (a snapshot covers them).
    pub fn purge_to(&mut self, index: u64) {
        let snap = self.snapshot().index;
        if index <= snap {
            return;
        }
        assert!(index <= self.last_index(), "purge past the end");
        let dropped = (index - snap) as usize;
        self.base_bytes = self.ends[dropped - 1];
        self.ends.drain(..dropped);
        self.terms.purge_to(index);
    }

    /// Replaces the log by an installed snapshot, durable as of `io_id`.
    pub fn reset_to_snapshot(&mut self, snapshot: IoId, io_id: IoId) {
        self.terms.reset(snapshot);
        self.ends.clear();
        self.base_bytes = 0;
        self.accept(io_id);
        self.truncation_floor = None;
        self.flushed = self.flushed.max(io_id);
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if no live entry.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(sizes: &[(u64, u64)]) -> LogMeta {
        let mut l = LogMeta::new(16, 8, IoId::ZERO);
        for &(term, bytes) in sizes {
            l.append(term, bytes).unwrap();
        }
        l
    }

    #[test]
    fn byte_ranges_and_budgets() {
        let l = log(&[(1, 40), (1, 40), (1, 100), (2, 40)]);
        assert_eq!(l.bytes_between(1, 4), 220);
        assert_eq!(l.bytes_between(2, 3), 140);
        assert_eq!(l.last_within(1, 80), 2);
        assert_eq!(l.last_within(1, 79), 1, "at least one entry");
        assert_eq!(l.last_within(3, 50), 3, "an oversized entry goes alone");
        assert_eq!(l.last_within(2, 1000), 4);
    }

    #[test]
    fn purge_keeps_byte_maths() {
        let mut l = log(&[(1, 40), (1, 40), (1, 100), (2, 40)]);
        l.purge_to(2);
        assert_eq!(l.bytes_between(3, 4), 140);
        assert_eq!(l.last_within(3, 100), 3);
        l.append(2, 8).unwrap();
        assert_eq!(l.bytes_between(4, 5), 48);
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn entries_bound_is_enforced() {
        let mut l = LogMeta::new(2, 8, IoId::ZERO);
        l.append(1, 8).unwrap();
        l.append(1, 8).unwrap();
        assert_eq!(l.append(1, 8), Err(LogFull::Entries { entries_max: 2 }));
        assert!(!l.can_append(1, 1));
    }

    #[test]
    fn durable_index_follows_flushes_and_truncations() {
        let mut l = LogMeta::new(64, 8, IoId::ZERO);
        for _ in 0..10 {
            l.append(1, 40).unwrap();
        }
        l.accept(IoId::new(1, 10));
        assert_eq!(l.durable_index(), 0);
        l.flushed(IoId::new(1, 10));
        assert_eq!(l.durable_index(), 10);
        // A leader of term 3 truncates after 6 and appends 7..=8.
        l.truncate_after(6, 3);
        l.append(3, 40).unwrap();
        l.append(3, 40).unwrap();
        l.accept(IoId::new(3, 8));
        assert_eq!(l.durable_index(), 6, "7..=10 of term 1 are gone");
        assert!(!l.flushed(IoId::new(1, 9)), "older flush ignored");
        l.flushed(IoId::new(3, 7));
        assert_eq!(l.durable_index(), 7);
        l.flushed(IoId::new(3, 8));
        assert_eq!(l.durable_index(), 8);
    }
}
