//! Ring memory: a page-aligned anonymous mapping that mirrors the tail of the
//! log, and the aligned scratch buffers O_DIRECT needs.
//!
//! ```text
//!  log positions:  0 ........ M ........ 2M ....... C ........ (grow forever)
//!  file data area: pos % C                 (C = capacity_bytes, a multiple of M)
//!  ring memory:    pos % M                 (M = ring_bytes)
//!
//!  ring memory     [ segment k: positions kM .. (k+1)M mapped at 0 .. M          ]
//!                    ^ records never straddle a multiple of M: a padding record
//!                      (or, below HEADER_BYTES, implicit filler) ends each segment
//! ```
//! Because M divides C, a record that does not straddle a multiple of M does
//! not straddle the end of the file either, so file and ring layouts are the
//! same bytes at the same offsets modulo their sizes.

use memmap2::MmapMut;

use crate::error::{Result, WalError};

/// Disk block: O_DIRECT offsets, lengths and buffers are multiples of it.
pub const BLOCK_BYTES: usize = 4096;

/// Rounds down to a block boundary.
pub(crate) const fn block_floor(position: u64) -> u64 {
    position & !(BLOCK_BYTES as u64 - 1)
}

/// Rounds up to a block boundary.
pub(crate) const fn block_ceil(position: u64) -> u64 {
    block_floor(position + BLOCK_BYTES as u64 - 1)
}

/// A page-aligned, zero-initialised anonymous mapping of fixed size.
///
/// The kernel reads parts of it (in-flight writes) while the writer fills
/// other parts; it is therefore accessed through a raw pointer, and the WAL's
/// watermark arithmetic guarantees the regions never overlap.
pub(crate) struct AlignedMemory {
    // Kept alive for `ptr`; never accessed through the `MmapMut` after construction.
    _map: MmapMut,
    ptr: *mut u8,
    len: usize,
}

impl std::fmt::Debug for AlignedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedMemory")
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the mapping is owned exclusively by this value (the raw pointer
// is only a cached address of it) and is not tied to the creating thread;
// moving it to another thread moves that ownership.
unsafe impl Send for AlignedMemory {}

impl AlignedMemory {
    pub(crate) fn new(len: usize, context: &'static str) -> Result<AlignedMemory> {
        assert!(len > 0 && len.is_multiple_of(BLOCK_BYTES));
        let mut map = MmapMut::map_anon(len).map_err(|e| WalError::io(context, e))?;
        let ptr = map.as_mut_ptr();
        Ok(AlignedMemory {
            _map: map,
            ptr,
            len,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes `[at, at + len)`.
    pub(crate) fn slice(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.len, "slice out of the mapping");
        // SAFETY: in bounds (checked above) of a live mapping; the WAL never
        // hands out a shared view of bytes it is writing (views borrow it).
        unsafe { std::slice::from_raw_parts(self.ptr.add(at), len) }
    }

    /// Bytes `[at, at + len)`, writable.
    pub(crate) fn slice_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.len, "slice out of the mapping");
        // SAFETY: in bounds of a live mapping; `&mut self` excludes Rust
        // aliases, and the flusher's in-flight ranges are never written
        // (see `Wal::room_for`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_rounding() {
        assert_eq!(block_floor(4095), 0);
        assert_eq!(block_floor(4096), 4096);
        assert_eq!(block_ceil(0), 0);
        assert_eq!(block_ceil(1), 4096);
        assert_eq!(block_ceil(4096), 4096);
    }

    #[test]
    fn memory_is_page_aligned_and_zeroed() {
        let memory = AlignedMemory::new(2 * BLOCK_BYTES, "test").unwrap();
        assert_eq!(memory.as_ptr() as usize % BLOCK_BYTES, 0);
        assert!(memory.slice(0, memory.len()).iter().all(|&b| b == 0));
    }
}
