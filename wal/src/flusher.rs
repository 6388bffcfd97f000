//! The io_uring side of group commit: a fixed table of IO slots, the ring
//! memory registered as one fixed buffer, completions mapped back to slots.
//!
//! ```text
//!  slots:  [IoSlot; flush_ios_max]   user_data of an SQE = its slot index
//!  order:  ring of slot indexes in submission order; `flushed` advances over
//!          the completed prefix only, so an out-of-order completion never
//!          reports a later range durable before an earlier one
//! ```
//! The Wal decides what to write (the dirty block range); this module only
//! issues `WriteFixed` (or `Write` when the buffer could not be registered)
//! with `RWF_DSYNC` (unless `Tuning::sync_writes` is off) and reports
//! completions.
//!
//! Testing-only fault hook (`Tuning::fault_flush_delay`): each write is
//! followed by a linked io_uring `Timeout` of that delay, and the slot only
//! counts as done when the timer's completion arrives. The kernel holds the
//! IO back, so the shard loop never blocks: it wakes on the completion
//! eventfd when the timer fires, exactly as for a slow disk.
//!
//! ```text
//!  SQE  WriteFixed  user_data = slot          flags = IO_LINK
//!  SQE  Timeout     user_data = slot | TIMER  starts when the write completes
//!  CQE  write  → slot.result          CQE  timer (-ETIME / -ECANCELED) → slot.done
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use crate::IoId;
use crate::error::{Result, WalError};

/// One in-flight write.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IoSlot {
    pub(crate) in_use: bool,
    pub(crate) done: bool,
    /// Log position where the write starts (block aligned).
    pub(crate) start_position: u64,
    /// Log position up to which it makes records durable (a record boundary).
    pub(crate) end_position: u64,
    /// Last entry wholly before `end_position`.
    pub(crate) last_id: IoId,
    /// Bytes submitted; a completion reporting fewer is a failure.
    pub(crate) len_bytes: u32,
    /// Completion result (bytes written or -errno).
    pub(crate) result: i32,
    /// A fault-delay timer is linked after the write: done only when it fires.
    pub(crate) delayed: bool,
    /// The write's own completion arrived (`result` is set).
    pub(crate) written: bool,
    /// The linked timer's completion arrived.
    pub(crate) timer_fired: bool,
}

/// `user_data` bit marking the completion of a fault-delay timer.
const TIMER_BIT: u64 = 1 << 63;

/// The submission side and slot bookkeeping.
pub(crate) struct Flusher {
    uring: IoUring,
    /// Whether the ring memory is a registered fixed buffer (index 0).
    fixed: bool,
    slots: Box<[IoSlot]>,
    /// `order[(order_head + k) % len]` is the k-th oldest in-flight slot.
    order: Box<[u16]>,
    order_head: usize,
    order_len: usize,
    eventfd: OwnedFd,
    /// `rw_flags` of every write: `RWF_DSYNC`, or 0 when `sync_writes` is off.
    rw_flags: i32,
    /// Testing-only delay added after each write (see the module docs).
    /// Boxed: the kernel reads the timespec when the SQE is submitted, so
    /// its address must not move with the Flusher in between.
    delay: Option<Box<types::Timespec>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("fixed", &self.fixed)
            .field("dsync", &(self.rw_flags != 0))
            .field("in_flight", &self.order_len)
            .field("ios_max", &self.slots.len())
            .field("fault_delay", &self.delay.is_some())
            .finish()
    }
}

impl Flusher {
    /// Builds the ring and tries to register `[memory, memory + len)`.
    /// Returns the reason registration failed, if it did, for the caller to log once.
    pub(crate) fn new(
        ios_max: usize,
        memory: *mut u8,
        len: usize,
        register: bool,
        sync_writes: bool,
    ) -> Result<(Flusher, Option<std::io::Error>)> {
        assert!(ios_max > 0 && ios_max <= u16::MAX as usize / 2);
        // Two SQEs per write when the fault delay links a timer after it.
        let entries = (2 * ios_max as u32).next_power_of_two().max(4);
        let uring = IoUring::new(entries).map_err(|e| WalError::io("io_uring setup", e))?;
        // SAFETY: plain syscall, no pointers.
        let raw_eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw_eventfd < 0 {
            return Err(WalError::io("eventfd", std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw_eventfd) };
        uring
            .submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| WalError::io("io_uring register eventfd", e))?;
        let mut refusal = None;
        let fixed = if register {
            let iovec = libc::iovec {
                iov_base: memory.cast(),
                iov_len: len,
            };
            // SAFETY: the memory outlives the ring: the Wal drops its Flusher
            // before its ring memory (field order), and never unmaps it earlier.
            match unsafe { uring.submitter().register_buffers(&[iovec]) } {
                Ok(()) => true,
                Err(error) => {
                    refusal = Some(error);
                    false
                }
            }
        } else {
            false
        };
        let flusher = Flusher {
            uring,
            fixed,
            slots: vec![IoSlot::default(); ios_max].into_boxed_slice(),
            order: vec![0; ios_max].into_boxed_slice(),
            order_head: 0,
            order_len: 0,
            eventfd,
            rw_flags: if sync_writes { libc::RWF_DSYNC } else { 0 },
            delay: None,
        };
        Ok((flusher, refusal))
    }

    /// Testing only: hold every later write's completion back by `delay`
    /// (zero: off). Writes already in flight keep what they were issued with.
    pub(crate) fn set_fault_delay(&mut self, delay: Duration) {
        self.delay = (!delay.is_zero()).then(|| Box::new(types::Timespec::from(delay)));
    }

    pub(crate) fn is_fixed(&self) -> bool {
        self.fixed
    }

    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.order_len
    }

    pub(crate) fn has_free_slot(&self) -> bool {
        self.order_len < self.slots.len()
    }

    /// Queues a write (DSYNC unless `sync_writes` is off) of `len` bytes at `buf` (inside the registered
    /// memory) to `file_offset`. The caller ensures a free slot exists and
    /// that the bytes stay untouched until completion.
    pub(crate) fn push_write(
        &mut self,
        fd: RawFd,
        buf: *const u8,
        len: u32,
        file_offset: u64,
        slot: IoSlot,
    ) {
        let slot_index = self
            .slots
            .iter()
            .position(|s| !s.in_use)
            .expect("caller checked has_free_slot");
        let entry = if self.fixed {
            opcode::WriteFixed::new(types::Fd(fd), buf, len, 0)
                .offset(file_offset)
                .rw_flags(self.rw_flags)
                .build()
        } else {
            opcode::Write::new(types::Fd(fd), buf, len)
                .offset(file_offset)
                .rw_flags(self.rw_flags)
                .build()
        }
        .user_data(slot_index as u64);
        let delayed = self.delay.is_some();
        let entry = if delayed {
            entry.flags(squeue::Flags::IO_LINK)
        } else {
            entry
        };
        // SAFETY: the buffer lies in ring memory that outlives the IO (the Wal
        // waits for every in-flight IO before dropping), and the Wal never
        // writes an in-flight range (see `Wal::room_for`).
        let pushed = unsafe { self.uring.submission().push(&entry) };
        pushed.expect("submission queue holds 2 * flush_ios_max entries");
        if let Some(delay) = &self.delay {
            let timer = opcode::Timeout::new(&raw const **delay)
                .build()
                .user_data(slot_index as u64 | TIMER_BIT);
            // SAFETY: the timespec is boxed in `self.delay` and read by the
            // kernel when this SQE is submitted (the caller submits before
            // the delay can change); the Timeout references no other memory.
            let pushed = unsafe { self.uring.submission().push(&timer) };
            pushed.expect("submission queue holds 2 * flush_ios_max entries");
        }
        self.slots[slot_index] = IoSlot {
            in_use: true,
            done: false,
            len_bytes: len,
            delayed,
            ..slot
        };
        let tail = (self.order_head + self.order_len) % self.order.len();
        self.order[tail] = slot_index as u16;
        self.order_len += 1;
    }

    /// Hands queued SQEs to the kernel; with `wait`, blocks until at least
    /// one completion is available.
    pub(crate) fn submit(&mut self, wait: bool) -> std::io::Result<()> {
        let want = usize::from(wait && self.order_len > 0);
        loop {
            match self.uring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    /// Marks completed slots done. Returns how many completions were seen.
    pub(crate) fn reap(&mut self) -> usize {
        let mut seen = 0;
        for entry in self.uring.completion() {
            let data = entry.user_data();
            let slot = &mut self.slots[(data & !TIMER_BIT) as usize];
            assert!(slot.in_use && !slot.done, "completion for an idle slot");
            if data & TIMER_BIT != 0 {
                // The fault delay ran out (-ETIME), or the write failed and
                // the kernel cancelled the linked timer (-ECANCELED): either
                // way only the write's own result counts.
                assert!(slot.delayed && !slot.timer_fired, "a timer nobody linked");
                slot.timer_fired = true;
            } else {
                assert!(!slot.written, "two completions for one write");
                slot.written = true;
                slot.result = entry.result();
                seen += 1;
            }
            slot.done = slot.written && (slot.timer_fired || !slot.delayed);
        }
        seen
    }

    /// Pops the oldest in-flight slot if it completed.
    pub(crate) fn pop_completed(&mut self) -> Option<IoSlot> {
        if self.order_len == 0 {
            return None;
        }
        let index = self.order[self.order_head] as usize;
        if !self.slots[index].done {
            return None;
        }
        let slot = self.slots[index];
        self.slots[index] = IoSlot::default();
        self.order_head = (self.order_head + 1) % self.order.len();
        self.order_len -= 1;
        Some(slot)
    }

    /// Drains the eventfd counter so a later readiness means new completions.
    pub(crate) fn clear_eventfd(&self) {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a local u64 from our non-blocking eventfd.
        let _ = unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                8,
            )
        };
    }
}
