//! `Watermark`: a monotonic, awaitable position in the log.
//!
//! Tasks of a shard (log writer, flusher, replication senders, applier) pass
//! each other positions, never entries. A watermark only moves forward: an
//! `advance` with an older `IoId` than the one held is ignored, so an
//! out-of-order completion can never move it back (openraft issue #1960
//! stalled a leader exactly that way).
//!
//! ```text
//!   value: AtomicU128 = IoId packed as (term << 64 | index), advanced by fetch_max
//!   slots: [Slot; waiters_max]   fixed at construction
//!          Slot { in_use, target, waker }  one per registered Waiter
//! ```
//!
//! Waiting is bounded: each task that wants to await a watermark registers a
//! [`Waiter`] once, at start-up; the number of waiters is fixed when the
//! watermark is built. Waiting never allocates.
//!
//! Lost-wakeup freedom: a waiter publishes its target and waker, then
//! re-reads the value; an advancer publishes the value, then reads targets.
//! Both use `SeqCst`, so at least one side sees the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use portable_atomic::AtomicU128;

use crate::IoId;

/// No free waiter slot: the watermark was built for fewer waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("watermark `{name}` has all {waiters_max} waiter slots taken")]
pub struct WaitersExhausted {
    /// Name of the watermark.
    pub name: &'static str,
    /// Number of slots it was built with.
    pub waiters_max: usize,
}

struct Slot {
    in_use: AtomicBool,
    /// Packed `IoId` the waiter waits for; `u128::MAX` when not waiting.
    target: AtomicU128,
    waker: AtomicWaker,
}

/// A lock-free cell holding an [`IoId`] that only moves forward.
pub struct Watermark {
    name: &'static str,
    value: AtomicU128,
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermark")
            .field("name", &self.name)
            .field("value", &self.get())
            .field("waiters_max", &self.slots.len())
            .finish()
    }
}

impl Watermark {
    /// A watermark starting at `initial` that up to `waiters_max` tasks may await.
    pub fn new(name: &'static str, initial: IoId, waiters_max: usize) -> Watermark {
        let slots = (0..waiters_max)
            .map(|_| Slot {
                in_use: AtomicBool::new(false),
                target: AtomicU128::new(u128::MAX),
                waker: AtomicWaker::new(),
            })
            .collect();
        Watermark {
            name,
            value: AtomicU128::new(initial.to_u128()),
            slots,
        }
    }

    /// The watermark's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current position.
    pub fn get(&self) -> IoId {
        IoId::from_u128(self.value.load(Ordering::SeqCst))
    }

    /// Moves the watermark to `to` if `to` is newer than the current value.
    /// Returns true if it moved. Wakes the waiters whose target is reached.
    pub fn advance(&self, to: IoId) -> bool {
        let to = to.to_u128();
        let previous = self.value.fetch_max(to, Ordering::SeqCst);
        if previous >= to {
            return false;
        }
        for slot in self.slots.iter() {
            if slot.target.load(Ordering::SeqCst) <= to {
                slot.waker.wake();
            }
        }
        true
    }

    /// Registers a waiter. Call at start-up, once per task that awaits this
    /// watermark; the slot is freed when the `Waiter` is dropped.
    pub fn waiter(self: &Arc<Self>) -> Result<Waiter, WaitersExhausted> {
        for (slot_index, slot) in self.slots.iter().enumerate() {
            if slot
                .in_use
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Waiter {
                    watermark: Arc::clone(self),
                    slot_index,
                });
            }
        }
        Err(WaitersExhausted {
            name: self.name,
            waiters_max: self.slots.len(),
        })
    }
}

/// A registered waiter of one [`Watermark`]: owns one slot.
pub struct Waiter {
    watermark: Arc<Watermark>,
    slot_index: usize,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("watermark", &self.watermark.name)
            .field("slot_index", &self.slot_index)
            .finish()
    }
}

impl Waiter {
    /// The watermark this waiter awaits.
    pub fn watermark(&self) -> &Arc<Watermark> {
        &self.watermark
    }

    /// Resolves with the watermark's value once it is at least `target`.
    pub fn wait_for(&mut self, target: IoId) -> WaitFor<'_> {
        WaitFor {
            waiter: self,
            target: target.to_u128(),
        }
    }

    /// Resolves once the watermark is newer than `seen`: "something changed".
    pub fn wait_past(&mut self, seen: IoId) -> WaitFor<'_> {
        let target = seen.to_u128().saturating_add(1);
        WaitFor {
            waiter: self,
            target,
        }
    }

    fn slot(&self) -> &Slot {
        &self.watermark.slots[self.slot_index]
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let slot = self.slot();
        slot.target.store(u128::MAX, Ordering::SeqCst);
        slot.waker.take();
        slot.in_use.store(false, Ordering::Release);
    }
}

/// Future returned by [`Waiter::wait_for`] and [`Waiter::wait_past`].
#[derive(Debug)]
pub struct WaitFor<'a> {
    waiter: &'a mut Waiter,
    target: u128,
}

impl Future for WaitFor<'_> {
    type Output = IoId;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoId> {
        let this = self.get_mut();
        let watermark = &this.waiter.watermark;
        let current = watermark.value.load(Ordering::SeqCst);
        if current >= this.target {
            return Poll::Ready(IoId::from_u128(current));
        }
        let slot = this.waiter.slot();
        slot.waker.register(cx.waker());
        slot.target.store(this.target, Ordering::SeqCst);
        // Re-read after publishing: an advance that ran before our store is seen here.
        let current = watermark.value.load(Ordering::SeqCst);
        if current >= this.target {
            slot.target.store(u128::MAX, Ordering::SeqCst);
            return Poll::Ready(IoId::from_u128(current));
        }
        Poll::Pending
    }
}

impl Drop for WaitFor<'_> {
    fn drop(&mut self) {
        // No longer waiting: advances need not wake this slot.
        self.waiter.slot().target.store(u128::MAX, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct CountingWake(AtomicUsize);
    impl Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_u128_cell_is_lock_free_here() {
        // On x86_64 this needs cmpxchg16b, which every CPU this runs on has.
        assert!(AtomicU128::is_lock_free());
    }

    #[test]
    fn an_older_value_never_overwrites_a_newer_one() {
        let w = Watermark::new("flushed", IoId::ZERO, 1);
        assert!(w.advance(IoId::new(2, 10)));
        assert!(!w.advance(IoId::new(1, 50)), "older term, higher index");
        assert!(!w.advance(IoId::new(2, 9)));
        assert!(!w.advance(IoId::new(2, 10)), "equal is not a move");
        assert_eq!(w.get(), IoId::new(2, 10));
        assert!(w.advance(IoId::new(3, 4)), "higher term, lower index");
        assert_eq!(w.get(), IoId::new(3, 4));
    }

    #[test]
    fn waiter_wakes_only_when_target_reached() {
        let w = Arc::new(Watermark::new("accepted", IoId::ZERO, 2));
        let mut waiter = w.waiter().unwrap();
        let wake = Arc::new(CountingWake(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wake));
        let mut cx = Context::from_waker(&waker);
        let mut fut = waiter.wait_for(IoId::new(1, 5));
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Pending);
        w.advance(IoId::new(1, 4));
        assert_eq!(wake.0.load(Ordering::SeqCst), 0, "target not reached");
        w.advance(IoId::new(1, 7));
        assert_eq!(wake.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(IoId::new(1, 7))
        );
    }

    #[test]
    fn waiter_slots_are_bounded_and_reused() {
        let w = Arc::new(Watermark::new("applied", IoId::ZERO, 1));
        let first = w.waiter().unwrap();
        let err = w.waiter().unwrap_err();
        assert_eq!(err.waiters_max, 1);
        assert!(err.to_string().contains("applied"));
        drop(first);
        assert!(w.waiter().is_ok());
    }

    #[test]
    fn concurrent_advances_end_at_the_maximum() {
        let w = Arc::new(Watermark::new("flushed", IoId::ZERO, 1));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let before = w.get();
                        w.advance(IoId::new(1 + i % 3, i * 4 + t));
                        assert!(w.get() >= before, "went backwards");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.get(), IoId::new(3, 9_998 * 4 + 3));
    }

    #[test]
    fn a_waiter_on_another_thread_is_woken() {
        let w = Arc::new(Watermark::new("committed", IoId::ZERO, 1));
        let mut waiter = w.waiter().unwrap();
        let advancer = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                for i in 1..=1000 {
                    w.advance(IoId::new(1, i));
                }
            })
        };
        let got = block_on(waiter.wait_for(IoId::new(1, 1000)));
        assert_eq!(got, IoId::new(1, 1000));
        advancer.join().unwrap();
    }

    /// A minimal single-future executor that parks the thread.
    fn block_on<F: Future>(fut: F) -> F::Output {
        struct ThreadWake(std::thread::Thread);
        impl Wake for ThreadWake {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(ThreadWake(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
