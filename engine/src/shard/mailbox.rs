//! The bounded mailbox through which other threads ask a shard for work
//! (a proposal or a linearizable read) and wait for its answer.
//!
//! ```text
//!  caller thread                         shard thread
//!  take a free slot (wait ≤ timeout) ─┐
//!  copy request into the slot         │  slots: slots_max fixed slots, each
//!  push slot index, write eventfd ────┼─▶ with request_bytes_max and
//!  wait on the slot's condvar         │   reply_bytes_max buffers (allocated
//!                                     │   once); the shard pops indexes,
//!  ◀── outcome + reply in the slot ───┘   works, completes the slot
//!  copy the reply out, free the slot
//! ```
//!
//! Nothing grows: the queue of submitted indexes can hold every slot, and a
//! slot is in at most one place (free list, queue, shard, caller). A caller
//! that gives up (timeout) bumps the slot's generation, so a late completion
//! by the shard is recognised and dropped.
//!
//! A shard thread must never block, so it forwards work to another shard
//! with the non-blocking half: [`Mailbox::try_submit`] takes a free slot or
//! answers `Full` at once, the completion writes the submitter's
//! [`Notifier`] (an eventfd in its epoll set) instead of a condvar, and
//! [`Mailbox::try_take`] copies the reply out and frees the slot once the
//! submitter is ready for it. A submitted request is always completed
//! (answered, or failed when the shard stops), so its slot always returns.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a request asks of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Append the request bytes to the log; reply once committed and applied.
    Propose,
    /// Confirm leadership (ReadIndex), wait until applied, then query.
    Read,
}

/// How the shard answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply bytes are in the slot.
    Replied,
    /// This shard does not lead its group (the leader it knows, if any).
    NotLeader {
        /// Node id of the leader.
        leader: Option<u64>,
    },
    /// Not admitted in time (admission control: ring or uncommitted bytes
    /// full for `admission_timeout`), or too many reads wait: retry later.
    Busy,
    /// The payload is over `request_bytes_max`: retrying cannot help.
    TooLarge {
        /// Bytes offered.
        bytes: usize,
        /// Configured bound.
        request_bytes_max: usize,
    },
    /// The entry was proposed but replaced by another leader's: it may not
    /// have been applied; the caller decides whether to retry.
    Dropped,
    /// The shard stopped (an IO failure or a stop request).
    Stopped,
}

/// Why a call did not get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Every slot is taken and none came free in time.
    #[error("the shard's mailbox is full")]
    Full,
    /// The request is larger than a slot.
    #[error("request of {bytes} bytes exceeds request_bytes_max {request_bytes_max}")]
    TooLarge {
        /// Bytes offered.
        bytes: usize,
        /// Configured bound.
        request_bytes_max: usize,
    },
    /// No answer within the timeout (the outcome is unknown).
    #[error("no answer from the shard in time")]
    Timeout,
}

#[derive(Debug)]
struct SlotState {
    kind: RequestKind,
    generation: u64,
    request: Box<[u8]>,
    request_len: usize,
    reply: Box<[u8]>,
    reply_len: usize,
    outcome: Option<Outcome>,
    /// Set by `try_submit`: written on completion instead of the condvar.
    notify: Option<Arc<Notifier>>,
}

#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

/// A request the shard took out of the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Slot index.
    pub slot: u32,
    /// Generation of the slot when taken (a completion for an older one is dropped).
    pub generation: u64,
}

/// A request as the shard sees it while handling it.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// What is asked.
    pub kind: RequestKind,
    /// The request bytes.
    pub request: &'a [u8],
    /// The slot's reply buffer (`reply_bytes_max`).
    pub reply: &'a mut [u8],
}

/// A bounded, multi-producer, single-consumer request mailbox with an
/// eventfd the consumer can wait on.
#[derive(Debug)]
pub struct Mailbox {
    slots: Box<[Slot]>,
    free: Mutex<Vec<u32>>,
    free_cv: Condvar,
    queue: Mutex<VecDeque<Ticket>>,
    eventfd: OwnedFd,
    request_bytes_max: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking caller thread cannot leave a slot half-written in a way the
    // shard would misread (the outcome is set last), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mailbox {
    /// A mailbox of `slots_max` slots.
    pub fn new(
        slots_max: usize,
        request_bytes_max: usize,
        reply_bytes_max: usize,
    ) -> std::io::Result<Mailbox> {
        assert!(slots_max > 0 && slots_max <= u32::MAX as usize);
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by no one else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let slots = (0..slots_max)
            .map(|_| Slot {
                state: Mutex::new(SlotState {
                    kind: RequestKind::Propose,
                    generation: 0,
                    request: vec![0; request_bytes_max].into_boxed_slice(),
                    request_len: 0,
                    reply: vec![0; reply_bytes_max].into_boxed_slice(),
                    reply_len: 0,
                    outcome: None,
                    notify: None,
                }),
                done: Condvar::new(),
            })
            .collect();
        Ok(Mailbox {
            slots,
            free: Mutex::new((0..slots_max as u32).rev().collect()),
            free_cv: Condvar::new(),
            queue: Mutex::new(VecDeque::with_capacity(slots_max)),
            eventfd,
            request_bytes_max,
        })
    }

    /// The fd that becomes readable when requests are queued.
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Resets the eventfd's counter (the consumer, before draining).
    pub fn clear_eventfd(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a local u64; EAGAIN (nothing to clear) is fine.
        unsafe { libc::read(self.eventfd(), (&raw mut value).cast(), 8) };
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to our eventfd.
        unsafe { libc::write(self.eventfd(), (&raw const one).cast(), 8) };
    }

    /// Sends a request and waits for its outcome; on `Replied` the reply is
    /// copied into `reply` (cleared first; grown only if smaller than the reply).
    pub fn call(
        &self,
        kind: RequestKind,
        request: &[u8],
        reply: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Outcome, CallError> {
        self.check_size(request)?;
        let deadline = Instant::now() + timeout;
        let index = self.take_free(deadline)?;
        let slot = &self.slots[index as usize];
        // The slot is unlocked while the shard is woken, so it never blocks
        // on this slot's lock in `with_request`; re-taken below to wait.
        self.enqueue(self.fill(index, kind, request, None));
        let mut state = lock(&slot.state);
        let result = loop {
            if let Some(outcome) = state.outcome {
                reply.clear();
                reply.extend_from_slice(&state.reply[..state.reply_len]);
                break Ok(outcome);
            }
            let now = Instant::now();
            if now >= deadline {
                // Abandon: a late completion sees another generation.
                state.generation += 1;
                break Err(CallError::Timeout);
            }
            state = slot
                .done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(state);
        lock(&self.free).push(index);
        self.free_cv.notify_one();
        result
    }

    fn enqueue(&self, ticket: Ticket) {
        let was_empty = {
            let mut queue = lock(&self.queue);
            let was_empty = queue.is_empty();
            queue.push_back(ticket);
            was_empty
        };
        // The shard pops until it finds the queue empty (under the lock),
        // after clearing the eventfd: a request pushed behind others is
        // taken in the same turn, so only the first needs a wake-up (one
        // syscall, and one loop wake-up, per batch instead of per request).
        if was_empty {
            self.wake();
        }
    }

    /// Sends a request without waiting: a free slot or `Full` at once.
    /// The completion writes `notify`; then [`Mailbox::try_take`] gets the
    /// outcome (every submitted request is completed, even on stop, so the
    /// slot always comes back).
    pub fn try_submit(
        &self,
        kind: RequestKind,
        request: &[u8],
        notify: &Arc<Notifier>,
    ) -> Result<Ticket, CallError> {
        self.check_size(request)?;
        let index = lock(&self.free).pop().ok_or(CallError::Full)?;
        let ticket = self.fill(index, kind, request, Some(notify.clone()));
        self.enqueue(ticket);
        Ok(ticket)
    }

    fn check_size(&self, request: &[u8]) -> Result<(), CallError> {
        if request.len() > self.request_bytes_max {
            return Err(CallError::TooLarge {
                bytes: request.len(),
                request_bytes_max: self.request_bytes_max,
            });
        }
        Ok(())
    }

    /// Writes a request into free slot `index` under a new generation
    /// (unlocked again on return) and names it.
    fn fill(
        &self,
        index: u32,
        kind: RequestKind,
        request: &[u8],
        notify: Option<Arc<Notifier>>,
    ) -> Ticket {
        let mut state = lock(&self.slots[index as usize].state);
        state.generation += 1;
        state.kind = kind;
        state.request[..request.len()].copy_from_slice(request);
        state.request_len = request.len();
        state.reply_len = 0;
        state.outcome = None;
        state.notify = notify;
        Ticket {
            slot: index,
            generation: state.generation,
        }
    }

    /// For a ticket of [`Mailbox::try_submit`]: once the shard completed
    /// it, calls `take(outcome, reply)`; if that returns true the slot is
    /// freed (the ticket is spent), else it stays for a later call. Returns
    /// whether the slot was freed; false while the request is in progress.
    pub fn try_take(&self, ticket: Ticket, take: impl FnOnce(Outcome, &[u8]) -> bool) -> bool {
        let slot = &self.slots[ticket.slot as usize];
        let mut state = lock(&slot.state);
        assert_eq!(
            state.generation, ticket.generation,
            "a submitted ticket is spent only by try_take"
        );
        let Some(outcome) = state.outcome else {
            return false;
        };
        if !take(outcome, &state.reply[..state.reply_len]) {
            return false;
        }
        state.generation += 1;
        state.notify = None;
        drop(state);
        lock(&self.free).push(ticket.slot);
        self.free_cv.notify_one();
        true
    }

    fn take_free(&self, deadline: Instant) -> Result<u32, CallError> {
        let mut free = lock(&self.free);
        loop {
            if let Some(index) = free.pop() {
                return Ok(index);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Full);
            }
            free = self
                .free_cv
                .wait_timeout(free, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The next queued request (consumer side).
    pub fn pop(&self) -> Option<Ticket> {
        lock(&self.queue).pop_front()
    }

    /// Runs `work` on a request's bytes if the ticket is still current.
    pub fn with_request<T>(
        &self,
        ticket: Ticket,
        work: impl FnOnce(RequestView<'_>) -> T,
    ) -> Option<T> {
        let mut state = lock(&self.slots[ticket.slot as usize].state);
        if state.generation != ticket.generation {
            return None;
        }
        let state = &mut *state;
        Some(work(RequestView {
            kind: state.kind,
            request: &state.request[..state.request_len],
            reply: &mut state.reply,
        }))
    }

    /// Completes a request: `fill` writes the reply into the slot's buffer
    /// and returns its length and the outcome. Dropped if the caller gave up.
    pub fn complete(&self, ticket: Ticket, fill: impl FnOnce(RequestView<'_>) -> (usize, Outcome)) {
        let slot = &self.slots[ticket.slot as usize];
        let mut state = lock(&slot.state);
        if state.generation != ticket.generation || state.outcome.is_some() {
            return;
        }
        let st = &mut *state;
        let (len, outcome) = fill(RequestView {
            kind: st.kind,
            request: &st.request[..st.request_len],
            reply: &mut st.reply,
        });
        st.reply_len = len;
        st.outcome = Some(outcome);
        let notify = st.notify.clone();
        // Unlock before waking: a caller woken while the lock is still held
        // would at once block on it and need a second wake-up (two more
        // futex calls and a context switch per request). The caller checks
        // `outcome` under the lock before it waits, so no wake-up is lost.
        drop(state);
        match notify {
            // A non-blocking submitter waits on its eventfd, never on the condvar.
            Some(notifier) => notifier.notify(),
            None => slot.done.notify_one(),
        }
    }

    /// Completes a request with an outcome and no reply bytes.
    pub fn fail(&self, ticket: Ticket, outcome: Outcome) {
        self.complete(ticket, |_| (0, outcome));
    }
}

/// An eventfd a shard thread waits on (in its epoll set) for the
/// completions of requests it submitted to other shards' mailboxes.
#[derive(Debug)]
pub struct Notifier {
    eventfd: OwnedFd,
}

impl Notifier {
    /// A fresh non-blocking eventfd.
    pub fn new() -> std::io::Result<Notifier> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by no one else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Notifier { eventfd })
    }

    /// The fd to watch (readable after a completion).
    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Marks a completion.
    pub fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to our eventfd.
        unsafe { libc::write(self.fd(), (&raw const one).cast(), 8) };
    }

    /// Resets the counter (before looking at the completions).
    pub fn clear(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a local u64; EAGAIN (nothing to clear) is fine.
        unsafe { libc::read(self.fd(), (&raw mut value).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_call_gets_the_reply_the_consumer_writes() {
        let mailbox = Arc::new(Mailbox::new(2, 16, 16).unwrap());
        let consumer = {
            let mailbox = mailbox.clone();
            std::thread::spawn(move || {
                loop {
                    if let Some(ticket) = mailbox.pop() {
                        mailbox.complete(ticket, |view| {
                            let n = view.request.len();
                            let (req, reply) = (view.request, view.reply);
                            for (r, q) in reply.iter_mut().zip(req.iter().rev()) {
                                *r = *q;
                            }
                            (n, Outcome::Replied)
                        });
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let mut reply = Vec::new();
        let outcome = mailbox
            .call(
                RequestKind::Propose,
                b"abc",
                &mut reply,
                Duration::from_secs(5),
            )
            .unwrap();
        consumer.join().unwrap();
        assert_eq!((outcome, reply.as_slice()), (Outcome::Replied, &b"cba"[..]));
    }

    #[test]
    fn an_abandoned_call_ignores_a_late_completion_and_frees_its_slot() {
        let mailbox = Mailbox::new(1, 8, 8).unwrap();
        let mut reply = Vec::new();
        let err = mailbox.call(
            RequestKind::Read,
            b"x",
            &mut reply,
            Duration::from_millis(10),
        );
        assert_eq!(err, Err(CallError::Timeout));
        let stale = mailbox.pop().unwrap();
        assert!(mailbox.with_request(stale, |_| ()).is_none());
        mailbox.fail(stale, Outcome::Busy);
        let too_big = mailbox.call(RequestKind::Read, &[0; 9], &mut reply, Duration::ZERO);
        assert!(matches!(too_big, Err(CallError::TooLarge { .. })));
    }

    fn readable(fd: RawFd) -> bool {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn a_submitted_request_signals_its_notifier_and_keeps_its_slot_until_taken() {
        let mailbox = Mailbox::new(1, 8, 8).unwrap();
        let notifier = Arc::new(Notifier::new().unwrap());
        let ticket = mailbox
            .try_submit(RequestKind::Propose, b"ab", &notifier)
            .unwrap();
        // One slot: a second submit is refused at once, not waited for.
        let second = mailbox.try_submit(RequestKind::Propose, b"c", &notifier);
        assert_eq!(second, Err(CallError::Full));
        assert!(!mailbox.try_take(ticket, |_, _| true), "not completed yet");
        assert!(!readable(notifier.fd()));
        let popped = mailbox.pop().unwrap();
        mailbox.complete(popped, |view| {
            view.reply[..2].copy_from_slice(b"ok");
            (2, Outcome::Replied)
        });
        assert!(readable(notifier.fd()));
        notifier.clear();
        assert!(!readable(notifier.fd()));
        // Not ready to take it: the slot stays.
        assert!(!mailbox.try_take(ticket, |_, _| false));
        let mut got = Vec::new();
        assert!(mailbox.try_take(ticket, |outcome, reply| {
            got.push((outcome, reply.to_vec()));
            true
        }));
        assert_eq!(got, vec![(Outcome::Replied, b"ok".to_vec())]);
        assert!(
            mailbox
                .try_submit(RequestKind::Read, b"d", &notifier)
                .is_ok()
        );
    }
}
