//! Majority maths over at most [`VOTERS_MAX`] voters, on stack arrays.

use super::config::VOTERS_MAX;

/// Votes needed for a majority of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of voters has reached, given each
/// voter's acknowledged index (`acked[i]` for voter `i`).
///
/// Sort descending; the majority-th value is held by a majority.
/// ```text
///   acked = [5, 9, 7]  sorted desc = [9, 7, 5]  majority = 2  -> 7
/// ```
pub fn committed_index(acked: &[u64]) -> u64 {
    assert!(!acked.is_empty() && acked.len() <= VOTERS_MAX);
    let mut sorted = [0u64; VOTERS_MAX];
    let sorted = &mut sorted[..acked.len()];
    sorted.copy_from_slice(acked);
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted[majority(acked.len()) - 1]
}

/// Outcome of a vote count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority can no longer grant.
    Lost,
    /// Neither yet.
    Pending,
}

/// Counts votes: `votes[i]` is `Some(granted)` once voter `i` answered.
pub fn vote_result(votes: &[Option<bool>]) -> VoteResult {
    let need = majority(votes.len());
    let granted = votes.iter().filter(|v| **v == Some(true)).count();
    let rejected = votes.iter().filter(|v| **v == Some(false)).count();
    if granted >= need {
        VoteResult::Won
    } else if votes.len() - rejected < need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn commit_is_the_majority_th_highest() {
        assert_eq!(committed_index(&[5, 9, 7]), 7);
        assert_eq!(committed_index(&[5, 9, 7, 1, 2]), 5);
        assert_eq!(committed_index(&[3, 3, 1, 1]), 1);
        assert_eq!(committed_index(&[4]), 4);
    }

    #[test]
    fn votes() {
        assert_eq!(vote_result(&[Some(true), None, None]), VoteResult::Pending);
        assert_eq!(
            vote_result(&[Some(true), Some(true), None]),
            VoteResult::Won
        );
        assert_eq!(
            vote_result(&[Some(true), Some(false), Some(false)]),
            VoteResult::Lost
        );
        assert_eq!(
            vote_result(&[Some(true), Some(false), None, None]),
            VoteResult::Pending
        );
    }
}
