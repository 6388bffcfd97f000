//! The shard loop's side of a [`Frontend`]: where a proposal came from
//! ([`Origin`]), the [`ShardRequests`] a frontend submits through while it
//! polls, and the hooks the loop calls (attach, poll, flush, completions).
//!
//! A child module of `runtime` (declared there with `#[path]`), so it reaches
//! the shard's fields without widening their visibility.
//!
//! Bounds: frontend proposals awaiting apply ≤ `frontend_proposals_max`
//! (past it `Busy`); `frontend_failed` holds at most as many.
//!
//! Admission control: a proposal enters the log only while the ring has
//! room and the group's uncommitted record bytes stay within
//! `uncommitted_bytes_max`; tokens come back as entries commit. A mailbox
//! proposal that is not admitted waits in `admission_waiting` (FIFO, one
//! per mailbox slot) and is answered `Busy` past `admission_timeout`; a
//! frontend gets `Busy` at once and keeps its own waiting clients (FIFO).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringraft_wal::IoId;

use ringraft_wal::Wal;

use super::{Shard, ShardBounds, ShardError, epoll_add, wal_has_room};
use crate::raft::{LogMeta, NodeId, ProposeError, RaftNode, Role, SplitMix64};
use crate::shard::frontend::Frontend;
use crate::shard::mailbox::{Outcome, RequestKind, Ticket};
use crate::shard::state_machine::StateMachine;

/// Who waits for a proposal's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A mailbox caller (library thread or another shard).
    Mailbox(Ticket),
    /// The shard's own frontend, with its tag.
    Frontend(u64),
}

/// Builds a shard's frontend once the shard opened (on its thread).
pub type FrontendMaker<S> =
    Box<dyn FnOnce() -> std::io::Result<Box<dyn Frontend<S>>> + Send + 'static>;

/// What a frontend may ask of its shard while it polls.
pub struct ShardRequests<'a, S: StateMachine> {
    shard: &'a mut Shard<S>,
    /// A WAL failure while proposing: the shard stops after the poll.
    error: Option<ShardError>,
}

impl<S: StateMachine> std::fmt::Debug for ShardRequests<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRequests")
            .field("shard", &self.shard.shard)
            .field("frontend_proposals", &self.shard.frontend_proposals)
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> ShardRequests<'_, S> {
    /// The shard's index (= its group).
    pub fn shard(&self) -> u32 {
        self.shard.shard
    }

    /// Whether the frontend's fd ([`Frontend::fd`]) was found readable by
    /// the loop's wait this turn (true when unknown). When false, the
    /// frontend may skip asking its own epoll for events: the fd stays
    /// readable and the next wait reports it (level-triggered).
    pub fn input_ready(&self) -> bool {
        self.shard.ready.frontend
    }

    /// The group's leader as the core knows it now.
    pub fn leader(&self) -> Option<NodeId> {
        self.shard.raft.leader()
    }

    /// Largest payload [`ShardRequests::propose`] takes.
    pub fn request_bytes_max(&self) -> usize {
        self.shard.bounds.request_bytes_max
    }

    /// How long a proposal may wait for admission before `Busy` is final.
    pub fn admission_timeout(&self) -> Duration {
        self.shard.bounds.admission_timeout
    }

    /// Proposes an entry of `len` payload bytes that `encode` writes
    /// straight into the ring (no copy in between). `Ok`: `tag` comes back
    /// in exactly one `Frontend::proposal_done`. `Err`: the outcome now
    /// (`NotLeader`; `Busy` when not admitted now — ring or uncommitted
    /// bytes, the core's or the frontend's bound: retry within
    /// `admission_timeout`; `TooLarge` for a payload over
    /// `request_bytes_max`, which no retry can help; `Stopped`).
    pub fn propose(
        &mut self,
        tag: u64,
        len: usize,
        encode: impl FnOnce(&mut [u8]),
    ) -> Result<(), Outcome> {
        if self.error.is_some() {
            return Err(Outcome::Stopped);
        }
        let shard = &mut *self.shard;
        if len > shard.bounds.request_bytes_max {
            return Err(Outcome::TooLarge {
                bytes: len,
                request_bytes_max: shard.bounds.request_bytes_max,
            });
        }
        if shard.frontend_proposals >= shard.bounds.frontend_proposals_max {
            return Err(Outcome::Busy);
        }
        // The no-op of a new leader goes first, so proposals are accepted.
        if let Err(error) = shard.take_noop() {
            self.error = Some(error);
            return Err(Outcome::Stopped);
        }
        if !shard.admits(len) {
            return Err(Outcome::Busy);
        }
        let id = match shard.raft.propose(len) {
            Ok(id) => id,
            Err(ProposeError::NotLeader { leader }) => return Err(Outcome::NotLeader { leader }),
            Err(_) => return Err(Outcome::Busy),
        };
        match shard.wal.append_with(id.term, len, encode) {
            Ok(written) => assert_eq!(written, id, "the WAL and the core agree on the entry's id"),
            Err(error) => {
                self.error = Some(shard.wal_error(error));
                return Err(Outcome::Stopped);
            }
        }
        shard.drop_proposals_from(id.index);
        shard.proposals.push_back((id, Origin::Frontend(tag)));
        shard.frontend_proposals += 1;
        shard.worked = true;
        Ok(())
    }
}

fn admits(raft: &RaftNode<SplitMix64>, wal: &Wal, bounds: &ShardBounds, len: usize) -> bool {
    if raft.role() != Role::Leader {
        return true;
    }
    let log = raft.log();
    let first = raft.committed_index().max(log.snapshot().index) + 1;
    let uncommitted = log.bytes_between(first, log.last_index());
    let fits =
        uncommitted == 0 || uncommitted + LogMeta::entry_bytes(len) <= bounds.uncommitted_bytes_max;
    fits && wal_has_room(wal, len)
}

/// What became of a mailbox proposal offered for admission.
enum Admission {
    /// Proposed, or answered (not leader, refused, caller gone).
    Done,
    /// Not admitted now: it waits.
    Wait,
}

impl<S: StateMachine> Shard<S> {
    /// Whether a proposal of `len` payload bytes may enter the log now.
    /// Not leading: yes (the core answers NotLeader).
    pub(super) fn admits(&self, len: usize) -> bool {
        admits(&self.raft, &self.wal, &self.bounds, len)
    }

    /// A request popped from the mailbox: a read starts, a proposal is
    /// offered for admission (behind those already waiting).
    pub(super) fn take_ticket(&mut self, ticket: Ticket, now: Instant) -> Result<(), ShardError> {
        if !self.admission_waiting.is_empty() {
            let kind = self.shared.mailbox.with_request(ticket, |view| view.kind);
            match kind {
                Some(RequestKind::Read) => self.start_read(ticket),
                Some(RequestKind::Propose) => self
                    .admission_waiting
                    .push_back((ticket, now + self.bounds.admission_timeout)),
                None => {} // The caller gave up.
            }
            return Ok(());
        }
        if let Admission::Wait = self.offer(ticket)? {
            self.admission_waiting
                .push_back((ticket, now + self.bounds.admission_timeout));
        }
        Ok(())
    }

    /// Admits waiting mailbox proposals in order while there is room;
    /// answers `Busy` to those past their deadline.
    pub(super) fn retry_admission(&mut self, now: Instant) -> Result<(), ShardError> {
        let mailbox = &self.shared.mailbox;
        self.admission_waiting.retain(|&(ticket, deadline)| {
            let expired = now >= deadline;
            if expired {
                mailbox.fail(ticket, Outcome::Busy);
            }
            !expired
        });
        while let Some(&(ticket, _)) = self.admission_waiting.front() {
            self.take_noop()?;
            match self.offer(ticket)? {
                Admission::Done => {
                    self.admission_waiting.pop_front();
                    self.worked = true;
                }
                Admission::Wait => break,
            }
        }
        Ok(())
    }

    /// Proposes a mailbox request (or starts its read) if admitted.
    fn offer(&mut self, ticket: Ticket) -> Result<Admission, ShardError> {
        let mailbox = &self.shared.mailbox;
        let (raft, wal, bounds) = (&mut self.raft, &mut self.wal, &self.bounds);
        let result = mailbox.with_request(ticket, |view| match view.kind {
            RequestKind::Read => Ok(None),
            RequestKind::Propose => {
                let len = view.request.len();
                if !admits(raft, wal, bounds, len) {
                    return Ok(Some(Err(Admission::Wait)));
                }
                let id = match raft.propose(len) {
                    Ok(id) => id,
                    Err(ProposeError::NotLeader { leader }) => {
                        return Ok(Some(Ok(Outcome::NotLeader { leader })));
                    }
                    // Transient: commits, the no-op or a leadership
                    // transfer end them; the proposal waits like one not
                    // admitted (a transfer ends in NotLeader or leading).
                    Err(
                        ProposeError::TooManyUncommitted { .. }
                        | ProposeError::Transferring
                        | ProposeError::NoopPending,
                    ) => return Ok(Some(Err(Admission::Wait))),
                    Err(_) => return Ok(Some(Ok(Outcome::Busy))),
                };
                let written =
                    wal.append_with(id.term, len, |dst| dst.copy_from_slice(view.request))?;
                assert_eq!(written, id, "the WAL and the core agree on the entry's id");
                Ok(Some(Ok(Outcome::Replied)))
            }
        });
        match result {
            None => {} // The caller gave up.
            Some(Err(e)) => return Err(self.wal_error(e)),
            Some(Ok(None)) => self.start_read(ticket),
            Some(Ok(Some(Err(wait)))) => return Ok(wait),
            Some(Ok(Some(Ok(Outcome::Replied)))) => {
                let id = self.raft.log().accepted();
                self.drop_proposals_from(id.index);
                self.proposals.push_back((id, Origin::Mailbox(ticket)));
            }
            Some(Ok(Some(Ok(outcome)))) => self.shared.mailbox.fail(ticket, outcome),
        }
        Ok(Admission::Done)
    }

    /// Builds the frontend (if any) and adds its fd to the loop's epoll set.
    pub(super) fn attach_frontend(
        &mut self,
        maker: Option<FrontendMaker<S>>,
    ) -> Result<(), ShardError> {
        let Some(maker) = maker else {
            return Ok(());
        };
        let os = |source| ShardError::Os {
            shard: self.shard,
            context: "frontend",
            source,
        };
        let frontend = maker().map_err(os)?;
        epoll_add(self.epoll.as_raw_fd(), frontend.fd()).map_err(os)?;
        self.frontend = Some(frontend);
        Ok(())
    }

    /// Lets the frontend take input and propose; then hands it what failed
    /// while it was out of `self.frontend`.
    pub(super) fn poll_frontend(&mut self) -> Result<(), ShardError> {
        let Some(mut frontend) = self.frontend.take() else {
            return Ok(());
        };
        let mut requests = ShardRequests {
            shard: self,
            error: None,
        };
        frontend.poll(&mut requests);
        let error = requests.error.take();
        while let Some((tag, outcome)) = self.frontend_failed.pop_front() {
            frontend.proposal_done(tag, outcome, &[]);
        }
        self.frontend = Some(frontend);
        error.map_or(Ok(()), Err)
    }

    /// End of a turn: the frontend writes its replies.
    pub(super) fn flush_frontend(&mut self) {
        if let Some(frontend) = self.frontend.as_mut() {
            self.worked |= frontend.flush();
        }
    }

    /// A proposal that will not apply (dropped, refused, shard stopping).
    pub(super) fn fail_origin(&mut self, origin: Origin, outcome: Outcome) {
        match origin {
            Origin::Mailbox(ticket) => self.shared.mailbox.fail(ticket, outcome),
            Origin::Frontend(tag) => {
                self.frontend_proposals -= 1;
                match self.frontend.as_mut() {
                    Some(frontend) => frontend.proposal_done(tag, outcome, &[]),
                    // Polling: at most `frontend_proposals_max` can be here.
                    None => self.frontend_failed.push_back((tag, outcome)),
                }
            }
        }
    }

    /// A frontend proposal applied at `id`: its reply is in the response slot.
    pub(super) fn frontend_done(&mut self, tag: u64, id: IoId) {
        self.frontend_proposals -= 1;
        let Some(frontend) = self.frontend.as_mut() else {
            // Applies run outside the frontend's poll: cannot happen, but
            // the answer is still well defined.
            self.frontend_failed.push_back((tag, Outcome::Dropped));
            return;
        };
        match self.slots.response(id) {
            Some(reply) => frontend.proposal_done(tag, Outcome::Replied, reply),
            // Another leader's entry took this index: ours was dropped.
            None => frontend.proposal_done(tag, Outcome::Dropped, &[]),
        }
    }
}
