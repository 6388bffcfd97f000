//! A counting global allocator for `ringraft bench`'s in-process cluster:
//! `heap_allocs_per_op` is how many heap allocations the nodes made per
//! acknowledged request once warmed up (the goal is 0).
//!
//! Counting is off until [`enable`] is called, so `ringraft serve` pays one
//! relaxed load per allocation. Threads that are not part of the cluster
//! (the load generator, the progress bar) call [`exclude_this_thread`], so
//! only the nodes' allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The system allocator, counting allocations while enabled.
pub struct CountingAlloc;

static ENABLED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // A const-initialised Cell without destructor: reading it never
    // allocates, so it is usable inside the allocator.
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
}

#[inline]
fn count() {
    if ENABLED.load(Ordering::Relaxed) && !EXCLUDED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only atomics and a thread-local Cell.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees on `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` with `layout` (every
        // allocation of this process goes through this allocator).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for realloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Starts counting (idempotent).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Allocations (and reallocations) counted so far on counted threads.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Leaves the calling thread's allocations out of the count.
pub fn exclude_this_thread() {
    EXCLUDED.with(|e| e.set(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocations_of_counted_threads_only() {
        enable();
        let counted = std::thread::spawn(|| {
            let before = allocations();
            let boxes: Vec<Box<u64>> = (0..100).map(Box::new).collect();
            drop(std::hint::black_box(boxes));
            allocations() - before
        })
        .join()
        .unwrap();
        // 100 boxes + the Vec; other test threads may add more.
        assert!(counted >= 101, "counted {counted}");
        let excluded = std::thread::spawn(|| {
            exclude_this_thread();
            let mut mine = 0;
            for _ in 0..50 {
                let before = allocations();
                drop(std::hint::black_box(Box::new(7u64)));
                // Only a concurrently running counted thread could move it.
                mine += u64::from(allocations() != before);
            }
            mine
        })
        .join()
        .unwrap();
        assert!(excluded < 50, "every excluded allocation was counted");
    }
}
