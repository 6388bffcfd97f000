//! Linearizable reads (ReadIndex) waiting for a heartbeat round.
//!
//! A read asks the leader for its commit index `c`; the leader answers once a
//! quorum has acknowledged a heartbeat round started after the read arrived
//! (so no newer leader existed when `c` was taken); the caller then serves
//! the read once it has applied `c`.
//!
//! ```text
//!   queue: ring of reads_max Read { id, index, round, state }
//!   Invariant: rounds are non-decreasing from front to back, so confirming
//!              round r confirms a prefix of the waiting reads.
//! ```

use std::collections::VecDeque;

/// Why a read could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Only a leader serves reads.
    #[error("not the leader")]
    NotLeader,
    /// A new leader must commit an entry of its term before its commit index
    /// is known to be current.
    #[error("leader has not committed in its term yet")]
    NoCommitInTerm,
    /// `reads_max` reads are waiting.
    #[error("{reads_max} reads already waiting")]
    Busy {
        /// Configured bound.
        reads_max: usize,
    },
}

/// The outcome of a read, taken by the caller in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Serve read `id` once `index` is applied.
    Ready {
        /// Caller's request id.
        id: u64,
        /// Commit index to wait for.
        index: u64,
    },
    /// Leadership was lost before the read was confirmed: retry elsewhere.
    Failed {
        /// Caller's request id.
        id: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Read {
    id: u64,
    index: u64,
    round: u64,
    confirmed: bool,
    failed: bool,
}

/// A bounded queue of reads.
#[derive(Debug)]
pub struct ReadQueue {
    queue: VecDeque<Read>,
    reads_max: usize,
}

impl ReadQueue {
    /// An empty queue of at most `reads_max` reads.
    pub fn new(reads_max: usize) -> ReadQueue {
        ReadQueue {
            queue: VecDeque::with_capacity(reads_max),
            reads_max,
        }
    }

    /// Queues read `id` at commit `index`, confirmed by heartbeat `round`
    /// (or already confirmed, under a lease).
    pub fn push(
        &mut self,
        id: u64,
        index: u64,
        round: u64,
        confirmed: bool,
    ) -> Result<(), ReadError> {
        if self.queue.len() == self.reads_max {
            return Err(ReadError::Busy {
                reads_max: self.reads_max,
            });
        }
        self.queue.push_back(Read {
            id,
            index,
            round,
            confirmed,
            failed: false,
        });
        Ok(())
    }

    /// A quorum acknowledged every round up to `round`.
    pub fn confirm_up_to(&mut self, round: u64) {
        for read in self.queue.iter_mut() {
            if read.round <= round {
                read.confirmed = true;
            }
        }
    }

    /// Leadership lost: every waiting read fails.
    pub fn fail_unconfirmed(&mut self) {
        for read in self.queue.iter_mut() {
            if !read.confirmed {
                read.failed = true;
            }
        }
    }

    /// The oldest read whose outcome is known.
    pub fn pop(&mut self) -> Option<ReadState> {
        let front = self.queue.front()?;
        let state = if front.failed {
            ReadState::Failed { id: front.id }
        } else if front.confirmed {
            ReadState::Ready {
                id: front.id,
                index: front.index,
            }
        } else {
            return None;
        };
        self.queue.pop_front();
        Some(state)
    }

    /// Reads waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmed_in_order_and_bounded() {
        let mut q = ReadQueue::new(2);
        q.push(1, 10, 5, false).unwrap();
        q.push(2, 11, 6, false).unwrap();
        assert_eq!(
            q.push(3, 11, 6, false),
            Err(ReadError::Busy { reads_max: 2 })
        );
        assert_eq!(q.pop(), None);
        q.confirm_up_to(5);
        assert_eq!(q.pop(), Some(ReadState::Ready { id: 1, index: 10 }));
        assert_eq!(q.pop(), None);
        q.fail_unconfirmed();
        assert_eq!(q.pop(), Some(ReadState::Failed { id: 2 }));
        assert!(q.is_empty());
    }
}
