//! After open, appending, flushing and reading allocate nothing on the heap.
//! A counting global allocator, in its own test binary (no harness, so no
//! test-runner thread allocates while we count).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use ringraft_wal::{IoId, WalError};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let (_dir, _path, mut wal) = temp_wal();
    let payload = [0x5Au8; 500];
    let mut last = 0u64;
    COUNTING.store(true, Ordering::SeqCst);
    // Several laps of the file, with purges, flushes, and reads both from
    // ring memory and (for older entries) from the file.
    let mut file_reads = 0;
    let mut memory_reads = 0;
    for _round in 0..40u64 {
        for _ in 0..300 {
            let id = loop {
                match wal.append(1, &payload) {
                    Ok(id) => break id,
                    Err(WalError::RingFull { .. }) => {
                        wal.flush_submit().unwrap();
                        wal.flush_wait().unwrap();
                    }
                    Err(error) => panic!("{error}"),
                }
            };
            last = id.index;
            wal.flush_submit().unwrap();
            wal.flush_reap().unwrap();
        }
        assert_eq!(wal.sync().unwrap(), IoId::new(1, last));
        let first = wal.first_index();
        for from in [first, first + 37, last - 5] {
            let view = wal.read(from, 16 << 10).unwrap();
            assert!(!view.is_empty());
            if view.from_memory() {
                memory_reads += 1;
            } else {
                file_reads += 1;
            }
        }
        if last > 1500 {
            wal.purge_to(last - 1500).unwrap();
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(file_reads > 0 && memory_reads > 0, "both read paths ran");
    assert_eq!(allocations, 0, "heap allocations after open");
    println!(
        "no_alloc: 12000 appends, {file_reads} file reads, {memory_reads} memory reads, 0 allocations"
    );
}
