//! The term of every live log index, as runs of equal term.
//!
//! The core never holds payloads; to check log matching and to find
//! conflicts it only needs each entry's term, and terms change rarely, so
//! runs of (term, first index) describe a whole log in a few slots.
//!
//! ```text
//!   snapshot = (term 2, index 4)      entries 1..=4 purged
//!   runs     = [(2, 5), (3, 9), (5, 12)]   last_index = 14
//!   index:      5 6 7 8 | 9 10 11 | 12 13 14
//!   term:       2 2 2 2 | 3  3  3 |  5  5  5
//!   Invariant: run terms strictly increase; run firsts strictly increase;
//!              runs[0].first == snapshot.index + 1 when runs is non-empty.
//! ```

use std::collections::VecDeque;

use ringraft_wal::IoId;

/// The term index is full: the log has more term changes than `term_runs_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("term index holds {runs_max} runs; purge the log before appending a new term")]
pub struct TermRunsFull {
    /// Configured capacity.
    pub runs_max: usize,
}

/// Runs of (term, first index) over the live log.
#[derive(Debug, Clone)]
pub struct TermIndex {
    runs: VecDeque<(u64, u64)>,
    runs_max: usize,
    snapshot: IoId,
    last_index: u64,
}

impl TermIndex {
    /// An index over an empty log that starts after `snapshot`.
    pub fn new(runs_max: usize, snapshot: IoId) -> TermIndex {
        TermIndex {
            runs: VecDeque::with_capacity(runs_max),
            runs_max,
            snapshot,
            last_index: snapshot.index,
        }
    }

    /// The last purged entry (term, index), or `IoId::ZERO`.
    pub fn snapshot(&self) -> IoId {
        self.snapshot
    }

    /// Index of the first live (unpurged) entry.
    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// (term, index) of the last entry, or the snapshot's if the log is empty.
    pub fn last_id(&self) -> IoId {
        match self.runs.back() {
            Some(&(term, _)) => IoId::new(term, self.last_index),
            None => self.snapshot,
        }
    }

    /// Term of entry `index`; `None` if purged (other than the snapshot's last
    /// entry) or beyond the end.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index || index > self.last_index {
            return None;
        }
        let run = self.runs.partition_point(|&(_, first)| first <= index);
        Some(self.runs[run - 1].0)
    }

    /// True if a further entry of `term` can be appended without a new run
    /// overflowing the index.
    pub fn can_append(&self, term: u64) -> bool {
        match self.runs.back() {
            Some(&(last, _)) if last == term => true,
            _ => self.runs.len() < self.runs_max,
        }
    }

    /// Appends entry `last_index + 1` of `term`.
    pub fn append(&mut self, term: u64) -> Result<u64, TermRunsFull> {
        let index = self.last_index + 1;
        match self.runs.back() {
            Some(&(last, _)) if last == term => {}
            back => {
                let floor = back.map_or(self.snapshot.term, |r| r.0);
                assert!(term >= floor, "term {term} appended after term {floor}");
                if self.runs.len() == self.runs_max {
                    return Err(TermRunsFull {
                        runs_max: self.runs_max,
                    });
                }
                self.runs.push_back((term, index));
            }
        }
        self.last_index = index;
        Ok(index)
    }

    /// Drops every entry after `index`.
    pub fn truncate_after(&mut self, index: u64) {
        assert!(
            index >= self.snapshot.index && index <= self.last_index,
            "truncate after {index} outside {:?}..={}",
            self.snapshot,
            self.last_index
        );
        while self.runs.back().is_some_and(|&(_, first)| first > index) {
            self.runs.pop_back();
        }
        self.last_index = index;
    }

    /// Forgets entries up to and including `index`, which becomes the snapshot point.
    pub fn purge_to(&mut self, index: u64) {
        if index <= self.snapshot.index {
            return;
        }
        let term = self.term_at(index).expect("purge within the log");
        while self.runs.len() >= 2 && self.runs[1].1 <= index + 1 {
            self.runs.pop_front();
        }
        if index == self.last_index {
            self.runs.clear();
        } else if let Some(first) = self.runs.front_mut() {
            first.1 = index + 1;
        }
        self.snapshot = IoId::new(term, index);
    }

    /// Replaces the whole log by a snapshot ending at `snapshot`.
    pub fn reset(&mut self, snapshot: IoId) {
        self.runs.clear();
        self.snapshot = snapshot;
        self.last_index = snapshot.index;
    }

    /// The largest index `j <= min(index, last)` whose term is at most `term`
    /// (etcd's findConflictByTerm): every entry in `j+1..=index` has a term
    /// above `term`, so none of them can match an entry of term `term`, and a
    /// leader may skip them all at once.
    pub fn last_index_with_term_at_most(&self, index: u64, term: u64) -> u64 {
        let mut j = index.min(self.last_index);
        for &(run_term, first) in self.runs.iter().rev() {
            if first > j {
                continue;
            }
            if run_term <= term {
                return j;
            }
            j = first - 1;
        }
        j.min(self.snapshot.index)
    }

    /// Runs in use.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(terms: &[u64]) -> TermIndex {
        let mut t = TermIndex::new(8, IoId::ZERO);
        for &term in terms {
            t.append(term).unwrap();
        }
        t
    }

    #[test]
    fn terms_by_run() {
        let t = index(&[1, 1, 2, 2, 2, 5]);
        assert_eq!(t.runs(), 3);
        assert_eq!(t.term_at(0), Some(0));
        assert_eq!(t.term_at(1), Some(1));
        assert_eq!(t.term_at(3), Some(2));
        assert_eq!(t.term_at(6), Some(5));
        assert_eq!(t.term_at(7), None);
        assert_eq!(t.last_id(), IoId::new(5, 6));
    }

    #[test]
    fn truncate_and_purge_keep_the_invariants() {
        let mut t = index(&[1, 1, 2, 2, 2, 5]);
        t.truncate_after(4);
        assert_eq!(t.last_id(), IoId::new(2, 4));
        assert_eq!(t.runs(), 2);
        t.append(6).unwrap();
        assert_eq!(t.term_at(5), Some(6));
        t.purge_to(3);
        assert_eq!(t.snapshot(), IoId::new(2, 3));
        assert_eq!(t.term_at(2), None);
        assert_eq!(t.term_at(3), Some(2));
        assert_eq!(t.term_at(4), Some(2));
        assert_eq!(t.term_at(5), Some(6));
        t.purge_to(5);
        assert_eq!(t.runs(), 0);
        assert_eq!(t.last_id(), IoId::new(6, 5));
        t.append(6).unwrap();
        assert_eq!(t.term_at(6), Some(6));
    }

    #[test]
    fn full_index_refuses_a_new_term_but_extends_the_last() {
        let mut t = TermIndex::new(2, IoId::ZERO);
        t.append(1).unwrap();
        t.append(2).unwrap();
        assert_eq!(t.append(2), Ok(3));
        assert!(!t.can_append(3));
        assert_eq!(t.append(3), Err(TermRunsFull { runs_max: 2 }));
    }

    #[test]
    fn conflict_search_skips_whole_runs() {
        let t = index(&[1, 1, 2, 2, 2, 5, 5]);
        assert_eq!(t.last_index_with_term_at_most(7, 4), 5);
        assert_eq!(t.last_index_with_term_at_most(7, 1), 2);
        assert_eq!(t.last_index_with_term_at_most(4, 3), 4);
        assert_eq!(t.last_index_with_term_at_most(100, 5), 7);
        assert_eq!(t.last_index_with_term_at_most(7, 0), 0);
    }
}
