//! The shard loop's side of a [`Frontend`]: where a proposal came from
//! ([`Origin`]), the [`ShardRequests`] a frontend submits through while it
//! polls, and the hooks the loop calls (attach, poll, flush, completions).
//!
//! A child module of `runtime` (declared there with `#[path]`), so it reaches
//! the shard's fields without widening their visibility.
//!
//! Bounds: frontend proposals awaiting apply ≤ `frontend_proposals_max`
//! (past it `Busy`); `frontend_failed` holds at most as many.

use std::os::fd::AsRawFd;

use ringraft_wal::IoId;

use super::{Shard, ShardError, epoll_add, wal_has_room};
use crate::raft::{NodeId, ProposeError};
use crate::shard::frontend::Frontend;
use crate::shard::mailbox::{Outcome, Ticket};
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

    /// The group's leader as the core knows it now.
    pub fn leader(&self) -> Option<NodeId> {
        self.shard.raft.leader()
    }

    /// Largest payload [`ShardRequests::propose`] takes.
    pub fn request_bytes_max(&self) -> usize {
        self.shard.bounds.request_bytes_max
    }

    /// Proposes an entry of `len` payload bytes that `encode` writes
    /// straight into the ring (no copy in between). `Ok`: `tag` comes back
    /// in exactly one `Frontend::proposal_done`. `Err`: the outcome now
    /// (`NotLeader`, `Busy` when the ring, the core or the frontend's bound
    /// is full or the payload is over `request_bytes_max`, `Stopped`).
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
        if shard.frontend_proposals >= shard.bounds.frontend_proposals_max
            || len > shard.bounds.request_bytes_max
        {
            return Err(Outcome::Busy);
        }
        // The no-op of a new leader goes first, so proposals are accepted.
        if let Err(error) = shard.take_noop() {
            self.error = Some(error);
            return Err(Outcome::Stopped);
        }
        if !wal_has_room(&shard.wal, len) {
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

impl<S: StateMachine> Shard<S> {
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
