//! Index → log position map, bounded by the file size.
//!
//! One stamp per `chunk_bytes` of the data area: the (index, position) of the
//! first entry that starts in that chunk. A lookup binary-searches the chunks
//! of the live range, then hops record headers from the stamp (at most one
//! chunk plus one record of hops). Memory: `capacity_bytes / chunk_bytes`
//! stamps of 24 bytes (1 GiB / 64 KiB = 16 Ki stamps = 384 KiB), fixed at open.
//!
//! ```text
//!  slots[c % slots_len] = Stamp { chunk: c + 1, index, position }  (chunk 0 = empty)
//!  Invariant: along the live range, stamps' indexes grow with their chunks.
//!  recent[k] = (index, position): entry `index` ends at `position`
//! ```
//!
//! Reads go on where an earlier read ended (the applier, each follower's
//! replication stream): the last `RECENT_MAX` read ends are kept, so such a
//! lookup starts right there instead of hopping up to a chunk of headers.

#[derive(Debug, Clone, Copy, Default)]
struct Stamp {
    /// Absolute chunk number + 1; 0 when the slot is empty.
    chunk_plus_one: u64,
    index: u64,
    position: u64,
}

/// Read ends kept (a few sequential readers: the applier and one
/// replication stream per peer).
const RECENT_MAX: usize = 8;

/// Chunk stamps of the live log.
#[derive(Debug)]
pub(crate) struct ChunkIndex {
    chunk_shift: u32,
    slots: Box<[Stamp]>,
    /// Where recent reads ended: (last entry's index, position after its
    /// record); `position` 0 is an empty slot (no read ends at 0).
    recent: [(u64, u64); RECENT_MAX],
    recent_next: usize,
}

impl ChunkIndex {
    /// `chunk_bytes` is a power of two; `capacity_bytes` a multiple of it.
    pub(crate) fn new(capacity_bytes: u64, chunk_bytes: u64) -> ChunkIndex {
        assert!(chunk_bytes.is_power_of_two() && capacity_bytes.is_multiple_of(chunk_bytes));
        let slots_len = (capacity_bytes / chunk_bytes) as usize;
        ChunkIndex {
            chunk_shift: chunk_bytes.trailing_zeros(),
            slots: vec![Stamp::default(); slots_len].into_boxed_slice(),
            recent: [(0, 0); RECENT_MAX],
            recent_next: 0,
        }
    }

    /// Notes that a read ended after entry `index`, whose record ends at
    /// `position` (the next entry starts there or after padding).
    pub(crate) fn note_read_end(&mut self, index: u64, position: u64) {
        if self.recent.contains(&(index, position)) {
            return;
        }
        self.recent[self.recent_next] = (index, position);
        self.recent_next = (self.recent_next + 1) % RECENT_MAX;
    }

    fn slot(&self, chunk: u64) -> &Stamp {
        &self.slots[(chunk % self.slots.len() as u64) as usize]
    }

    /// Notes that entry `index` starts at `position` (called in log order).
    pub(crate) fn note(&mut self, index: u64, position: u64) {
        let chunk = position >> self.chunk_shift;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(chunk % len) as usize];
        if slot.chunk_plus_one != chunk + 1 {
            *slot = Stamp {
                chunk_plus_one: chunk + 1,
                index,
                position,
            };
        }
    }

    /// Forgets entries at or after `cut` (a truncation), up to `old_end`.
    pub(crate) fn forget_from(&mut self, cut: u64, old_end: u64) {
        let first = cut >> self.chunk_shift;
        let last = old_end >> self.chunk_shift;
        let len = self.slots.len() as u64;
        for chunk in first..=last.min(first + len - 1) {
            let slot = &mut self.slots[(chunk % len) as usize];
            if slot.chunk_plus_one == chunk + 1 && slot.position >= cut {
                *slot = Stamp::default();
            }
        }
        for end in &mut self.recent {
            if end.1 > cut {
                *end = (0, 0);
            }
        }
    }

    /// The stamp at or before chunk `chunk`, not before `live_start`.
    fn stamp_at_or_before(&self, chunk: u64, live_start: u64) -> Option<Stamp> {
        let first = live_start >> self.chunk_shift;
        let mut c = chunk;
        loop {
            let stamp = *self.slot(c);
            if stamp.chunk_plus_one == c + 1 && stamp.position >= live_start {
                return Some(stamp);
            }
            if c == first {
                return None;
            }
            c -= 1;
        }
    }

    /// Where to start hopping headers to find entry `index` within the live
    /// range [live_start, live_end): (a known entry's index, a position
    /// holding that entry or, after a recent read's end, whatever comes
    /// next), the latest one known with index <= `index`; None if none.
    pub(crate) fn floor(&self, index: u64, live_start: u64, live_end: u64) -> Option<(u64, u64)> {
        let stamped = self.stamp_floor(index, live_start, live_end);
        // A read that ended right before `index` (or closer than the stamp).
        let recent = self
            .recent
            .iter()
            .filter(|&&(at, end)| end >= live_start && end < live_end && at < index && end != 0)
            .max_by_key(|&&(at, end)| (at, end))
            .copied();
        match (stamped, recent) {
            (Some(stamp), Some(end)) if end.0 >= stamp.0 && end.1 > stamp.1 => Some(end),
            (None, Some(end)) => Some(end),
            (stamped, _) => stamped,
        }
    }

    /// The latest stamped (index, position) with index <= `index` within the
    /// live range [live_start, live_end), if any.
    fn stamp_floor(&self, index: u64, live_start: u64, live_end: u64) -> Option<(u64, u64)> {
        if live_end <= live_start {
            return None;
        }
        let mut low = live_start >> self.chunk_shift;
        let mut high = (live_end - 1) >> self.chunk_shift;
        let mut best = None;
        // Invariant: chunks below `low` hold stamps <= index (best is the
        // latest seen); chunks above `high` hold stamps > index.
        while low <= high {
            let middle = low + (high - low) / 2;
            match self.stamp_at_or_before(middle, live_start) {
                Some(stamp) if stamp.index <= index => {
                    best = Some((stamp.index, stamp.position));
                    low = middle + 1;
                }
                Some(_) => {
                    if middle == 0 {
                        break;
                    }
                    high = middle - 1;
                }
                None => low = middle + 1,
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_latest_stamp_not_after_the_index() {
        let mut index = ChunkIndex::new(1 << 16, 1 << 12);
        // Entries of 1000 bytes from position 0, indexes 1..=60.
        for i in 0..60u64 {
            index.note(i + 1, i * 1000);
        }
        for target in 1..=60u64 {
            let (found, position) = index.floor(target, 0, 60_000).unwrap();
            assert!(found <= target);
            assert_eq!(position, (found - 1) * 1000);
            assert!(target - found <= 5, "at most one chunk of hops");
        }
        index.forget_from(30_000, 60_000);
        let (found, _) = index.floor(60, 0, 30_000).unwrap();
        assert!(found <= 30);
    }

    #[test]
    fn a_lookup_goes_on_where_a_read_ended() {
        let mut index = ChunkIndex::new(1 << 16, 1 << 12);
        for i in 0..60u64 {
            index.note(i + 1, i * 1000);
        }
        // A read returned entries up to 22 (ending at 22 000).
        index.note_read_end(22, 22_000);
        assert_eq!(index.floor(23, 0, 60_000), Some((22, 22_000)));
        assert_eq!(index.floor(25, 0, 60_000), Some((22, 22_000)));
        // An entry before the read's end is found from the stamps.
        let (found, position) = index.floor(21, 0, 60_000).unwrap();
        assert!(found <= 21 && position == (found - 1) * 1000);
        // Past the live range's start (purged) or end, or cut by a
        // truncation, the read's end is not used.
        assert_ne!(index.floor(23, 22_001, 60_000), Some((22, 22_000)));
        assert_ne!(index.floor(23, 0, 22_000), Some((22, 22_000)));
        index.forget_from(21_500, 60_000);
        assert_ne!(index.floor(23, 0, 60_000), Some((22, 22_000)));
    }
}
