//! `IoId`: the position of a log write, (term, index).
//!
//! An index alone is not enough to name a write: after a leader change a
//! follower may truncate a conflicting suffix and re-append the same index
//! under a higher term. Ordering by (term, index) keeps every watermark
//! monotonic across such a rewrite, so a completion that belongs to the old
//! write can never be mistaken for the new one (openraft's IO ids).

use std::fmt;

/// (term of the leader that wrote the entry, log index). Ordered by term
/// first, then index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IoId {
    /// Term of the leader that wrote the entry.
    pub term: u64,
    /// Log index of the entry; 0 means "before the first entry".
    pub index: u64,
}

impl IoId {
    /// The position before any entry: term 0, index 0.
    pub const ZERO: IoId = IoId { term: 0, index: 0 };

    /// Builds an id from its parts.
    pub const fn new(term: u64, index: u64) -> IoId {
        IoId { term, index }
    }

    /// Packs the id into one `u128` whose numeric order is the id's order:
    /// term in the high 64 bits, index in the low 64 bits.
    pub const fn to_u128(self) -> u128 {
        ((self.term as u128) << 64) | self.index as u128
    }

    /// Inverse of [`IoId::to_u128`].
    pub const fn from_u128(packed: u128) -> IoId {
        IoId {
            term: (packed >> 64) as u64,
            index: packed as u64,
        }
    }
}

impl fmt::Debug for IoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

impl fmt::Display for IoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn term_orders_before_index() {
        assert!(IoId::new(2, 1) > IoId::new(1, 100));
        assert!(IoId::new(1, 5) < IoId::new(1, 6));
        assert_eq!(IoId::ZERO, IoId::default());
    }

    proptest! {
        #[test]
        fn packing_preserves_order(a: (u64, u64), b: (u64, u64)) {
            let (x, y) = (IoId::new(a.0, a.1), IoId::new(b.0, b.1));
            prop_assert_eq!(IoId::from_u128(x.to_u128()), x);
            prop_assert_eq!(x.cmp(&y), x.to_u128().cmp(&y.to_u128()));
        }
    }
}
