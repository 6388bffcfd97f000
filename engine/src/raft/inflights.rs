//! The send window of one follower in `replicate` state: appends sent and not
//! yet acknowledged, as a fixed-capacity ring of (last index, record bytes).
//!
//! ```text
//!   slots: [(last_index, bytes); msgs_max]    allocated once
//!           ^start       ^start+count-1 (mod msgs_max)
//!   Invariant: last_index strictly increases from start to the end.
//!   Invariant: bytes_total == sum of bytes of the live slots.
//! ```
//! The window is full when either `msgs_max` appends or `bytes_max` bytes are
//! in flight: both bounds hold at once.

/// A bounded window of in-flight appends.
#[derive(Debug, Clone)]
pub struct Inflights {
    slots: Box<[(u64, u64)]>,
    start: usize,
    count: usize,
    bytes_total: u64,
    bytes_max: u64,
}

impl Inflights {
    /// An empty window of at most `msgs_max` appends and `bytes_max` bytes.
    pub fn new(msgs_max: usize, bytes_max: u64) -> Inflights {
        assert!(msgs_max > 0 && bytes_max > 0);
        Inflights {
            slots: vec![(0, 0); msgs_max].into_boxed_slice(),
            start: 0,
            count: 0,
            bytes_total: 0,
            bytes_max,
        }
    }

    /// Records an append whose last entry is `last_index`. Panics if full: the
    /// caller checks [`Inflights::full`] before sending.
    pub fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(!self.full(), "inflight window overflow");
        if self.count > 0 {
            let newest = self.slots[(self.start + self.count - 1) % self.slots.len()].0;
            assert!(last_index > newest, "inflight {last_index} after {newest}");
        }
        let slot = (self.start + self.count) % self.slots.len();
        self.slots[slot] = (last_index, bytes);
        self.count += 1;
        self.bytes_total += bytes;
    }

    /// Forgets every append whose last index is at or below `index`: the
    /// follower acknowledged it.
    pub fn free_le(&mut self, index: u64) {
        while self.count > 0 && self.slots[self.start].0 <= index {
            self.bytes_total -= self.slots[self.start].1;
            self.start = (self.start + 1) % self.slots.len();
            self.count -= 1;
        }
    }

    /// Forgets the oldest append (a heartbeat response showed the follower is
    /// alive while the window stayed full: one message was probably lost).
    pub fn free_first_one(&mut self) {
        if self.count > 0 {
            let first = self.slots[self.start].0;
            self.free_le(first);
        }
    }

    /// True when no further append may be sent.
    pub fn full(&self) -> bool {
        self.count == self.slots.len() || self.bytes_total >= self.bytes_max
    }

    /// Appends in flight.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes_total
    }

    /// Empties the window.
    pub fn reset(&mut self) {
        self.start = 0;
        self.count = 0;
        self.bytes_total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_count() {
        let mut w = Inflights::new(2, 1000);
        w.add(1, 10);
        assert!(!w.full());
        w.add(2, 10);
        assert!(w.full());
        w.free_le(1);
        assert!(!w.full());
        assert_eq!((w.count(), w.bytes()), (1, 10));
    }

    #[test]
    fn full_by_bytes() {
        let mut w = Inflights::new(8, 100);
        w.add(3, 60);
        assert!(!w.full());
        w.add(5, 40);
        assert!(w.full(), "100 of 100 bytes");
        w.free_le(4);
        assert_eq!((w.count(), w.bytes()), (1, 40));
        assert!(!w.full());
    }

    #[test]
    fn wraps_around_and_frees_in_order() {
        let mut w = Inflights::new(3, 1 << 20);
        for i in 1..=3 {
            w.add(i, 1);
        }
        w.free_le(2);
        w.add(4, 1);
        w.add(5, 1);
        assert!(w.full());
        w.free_first_one();
        assert_eq!(w.count(), 2);
        w.free_le(100);
        assert_eq!((w.count(), w.bytes()), (0, 0));
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn adding_to_a_full_window_is_a_bug() {
        let mut w = Inflights::new(1, 10);
        w.add(1, 1);
        w.add(2, 1);
    }
}
