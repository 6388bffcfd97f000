//! Where a follower's data frames land: straight in WAL ring memory when the
//! run follows the log, in the one-frame scratch buffer otherwise.
//!
//! ```text
//!  transport.peek_data(peer) ─▶ head + payload length, no payload byte placed yet
//!    AppendEntries, prev == WAL's last entry, term current, not leader, ring free
//!      ─▶ wal.lend(payload) ─▶ recv_data(peer, lent ring memory) ─▶ step_append
//!         ─▶ commit_lent(accepted range)     the common case: whole run, in place
//!         ─▶ abandon_lent                    rejected, or nothing new
//!         ─▶ copy the accepted range to scratch, abandon, truncate + append_raw
//!                                            (only if the core truncates: cannot
//!                                            happen when prev is our last entry)
//!    anything else (overlap, gap, stale term, snapshot chunk)
//!      ─▶ recv_data(peer, scratch) ─▶ step_append ─▶ truncate_after / append_raw
//! ```
//!
//! A partly received frame's buffer must not move (the transport keeps its
//! address), so each buffer has at most one owner: the ring lend belongs to
//! one peer, the scratch buffer to one peer; a fresh frame that finds its
//! buffer taken waits in the socket (TCP pushes back). While memory is lent
//! the WAL refuses appends, so the lend never outlives the loop turn's
//! receive step unless its frame is partly received from a current leader;
//! a partial frame gone stale (a higher term seen, or this node leads now) is
//! dropped (its lane closed: a stream cut mid-frame cannot resume; the
//! sender reconnects and its core resends) before anything else may append.

use ringraft_net::DataEvent;
use ringraft_net::frame::Message;
use ringraft_wal::{IoId, Lend};

use super::{Shard, ShardError};
use crate::raft::{Append, AppendOutcome, Role};
use crate::shard::state_machine::StateMachine;

/// A buffer's owner while a frame is partly received into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    peer: usize,
    /// Term of the frame's head.
    term: u64,
}

/// Ring memory lent for one peer's frame.
#[derive(Debug)]
struct RingReceive {
    lend: Lend,
    owner: Owner,
    /// Payload bytes of the frame (what the receiver may have written).
    payload_bytes: usize,
}

/// Which buffer each partly received frame sits in.
#[derive(Debug, Default)]
pub(super) struct Receiver {
    ring: Option<RingReceive>,
    scratch: Option<Owner>,
    /// The frame `recv_data` just completed in lent memory, for `on_append`.
    completed: Option<Lend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ring,
    Scratch,
}

fn head_term(message: &Message) -> u64 {
    match message {
        Message::AppendEntries(head) => head.term,
        Message::InstallSnapshot(head) => head.term,
        _ => 0,
    }
}

impl<S: StateMachine> Shard<S> {
    /// Receives (part of) the next data frame from `peer` into the buffer
    /// it belongs in. A completed AppendEntries in the ring is left for
    /// `on_append` in `receiver.completed`.
    pub(super) fn receive_frame(&mut self, peer: usize) -> DataEvent {
        let event = self.place_frame(peer);
        if matches!(event, DataEvent::Idle | DataEvent::NoRoom { .. })
            && !self.transport.data_ready(peer)
        {
            // The socket was drained (a frame partly received): its
            // readiness poll is re-armed by `Transport::poll`, so the loop
            // turns once more before sleeping, or the rest of the frame
            // would wait for the next tick.
            self.worked = true;
        }
        event
    }

    fn place_frame(&mut self, peer: usize) -> DataEvent {
        let Some(pending) = self.transport.peek_data(peer) else {
            return DataEvent::Idle;
        };
        let owner = Owner {
            peer,
            term: head_term(&pending.message),
        };
        let target = if pending.payload_filled > 0 {
            match self.partial_target(peer) {
                Some(target) => target,
                None => {
                    // Cannot happen: every partial frame has an owner.
                    self.transport
                        .drop_partial_data(peer, &"partial frame without a buffer");
                    return DataEvent::Idle;
                }
            }
        } else {
            self.forget_owner(peer);
            match self.fresh_target(owner, &pending.message, pending.payload_bytes) {
                Some(target) => target,
                None => return DataEvent::Idle, // buffers taken: wait in the socket
            }
        };
        let event = match target {
            Target::Ring => {
                let ring = self.receiver.ring.as_ref().expect("lent for this frame");
                let memory = self.wal.lent_memory(&ring.lend);
                self.transport.recv_data(peer, memory)
            }
            Target::Scratch => self.transport.recv_data(peer, &mut self.scratch),
        };
        match (event, target) {
            (DataEvent::Idle | DataEvent::NoRoom { .. }, _) => {
                // Still the same frame unless the lane closed (a failed frame).
                let after = self.transport.peek_data(peer);
                let partial = after.is_some_and(|p| p.payload_filled > 0);
                match target {
                    Target::Ring if partial => {} // continues next time, same memory
                    Target::Ring => {
                        // No payload byte yet (nothing to zero), or the frame
                        // failed and the lane closed (any of it may have landed).
                        let ring = self.receiver.ring.take().expect("lent");
                        let written = if after.is_some() {
                            0
                        } else {
                            ring.payload_bytes
                        };
                        self.wal.abandon_lent(ring.lend, written);
                    }
                    Target::Scratch => {
                        self.receiver.scratch = partial.then_some(owner);
                    }
                }
            }
            (DataEvent::Append { .. }, Target::Ring) => {
                let ring = self.receiver.ring.take().expect("lent");
                self.receiver.completed = Some(ring.lend);
            }
            (DataEvent::Append { .. } | DataEvent::SnapshotChunk { .. }, _) => {
                self.receiver.scratch = None;
                // A completed frame from another peer may make the core
                // write: another peer's partial frame in the ring is stale.
                self.release_ring(&"a frame from another peer came first");
            }
        }
        event
    }

    /// The buffer `peer`'s partly received frame sits in.
    fn partial_target(&self, peer: usize) -> Option<Target> {
        if self
            .receiver
            .ring
            .as_ref()
            .is_some_and(|r| r.owner.peer == peer)
        {
            Some(Target::Ring)
        } else if self.receiver.scratch.is_some_and(|o| o.peer == peer) {
            Some(Target::Scratch)
        } else {
            None
        }
    }

    /// `peer` starts a new frame: whatever buffer it held is free again.
    fn forget_owner(&mut self, peer: usize) {
        if self.receiver.scratch.is_some_and(|o| o.peer == peer) {
            self.receiver.scratch = None;
        }
        if self
            .receiver
            .ring
            .as_ref()
            .is_some_and(|r| r.owner.peer == peer)
        {
            // Its frame failed after bytes landed (the lane closed and came back).
            let ring = self.receiver.ring.take().expect("checked");
            self.wal.abandon_lent(ring.lend, ring.payload_bytes);
        }
    }

    /// Where a new frame goes, or None to leave it in the socket for now.
    fn fresh_target(
        &mut self,
        owner: Owner,
        message: &Message,
        payload_bytes: usize,
    ) -> Option<Target> {
        if self.receiver.ring.is_none()
            && let Message::AppendEntries(head) = message
            && payload_bytes > 0
            && IoId::new(head.prev_term, head.prev_index) == self.wal.last_id()
            && head.term >= self.raft.term()
            && self.raft.role() != Role::Leader
        {
            match self.wal.lend(payload_bytes) {
                Ok(lend) => {
                    self.receiver.ring = Some(RingReceive {
                        lend,
                        owner,
                        payload_bytes,
                    });
                    return Some(Target::Ring);
                }
                Err(error) => log::debug!(
                    "shard {}: {payload_bytes}-byte run received through scratch: {error}",
                    self.shard
                ),
            }
        }
        self.receiver.scratch.is_none().then_some(Target::Scratch)
    }

    /// Drops the partial frame in lent ring memory (if any) and ends the lend
    /// (also before the WAL restarts after a snapshot: `Wal::reset_to`
    /// refuses while memory is lent).
    pub(in crate::shard) fn release_ring(&mut self, why: &dyn std::fmt::Display) {
        if let Some(ring) = self.receiver.ring.take() {
            self.transport.drop_partial_data(ring.owner.peer, why);
            self.wal.abandon_lent(ring.lend, ring.payload_bytes);
        }
    }

    /// End of the receive step: partial frames of an older term (or any in
    /// the ring, if this node leads and is about to append) are dropped.
    pub(super) fn release_stale_receives(&mut self) {
        let term = self.raft.term();
        let leading = self.raft.role() == Role::Leader;
        if let Some(ring) = &self.receiver.ring
            && (leading || ring.owner.term < term)
        {
            self.release_ring(&"a partial frame of an older term");
        }
        if let Some(owner) = self.receiver.scratch
            && owner.term < term
        {
            self.transport
                .drop_partial_data(owner.peer, &"a partial frame of an older term");
            self.receiver.scratch = None;
        }
    }

    /// The frame of `append` completed in lent ring memory: the core
    /// decides, and the accepted run is committed where it landed.
    pub(super) fn maybe_append_in_place(
        &mut self,
        append: &Append,
        records_bytes: usize,
    ) -> Option<Result<(), ShardError>> {
        let lend = self.receiver.completed.take()?;
        let bytes = &self.wal.lent_memory(&lend)[..records_bytes];
        let outcome = self.raft.step_append(append, super::entry_metas(bytes));
        let AppendOutcome::Write {
            truncate_after,
            first,
            last,
            io_id,
        } = outcome
        else {
            self.wal.abandon_lent(lend, records_bytes);
            return Some(Ok(()));
        };
        if truncate_after.is_some() {
            // Not expected (the run follows our last entry), but correct:
            // copy the frame to scratch and take the copying path.
            self.scratch[..records_bytes].copy_from_slice(bytes);
            self.wal.abandon_lent(lend, records_bytes);
            if let Some(owner) = self.receiver.scratch.take() {
                self.transport
                    .drop_partial_data(owner.peer, &"scratch needed for a truncating run");
            }
            return Some(self.write_from_scratch(
                truncate_after,
                first,
                last,
                io_id,
                records_bytes,
            ));
        }
        if last >= first {
            let (start, end) = super::run_range(bytes, first, last);
            if let Err(error) = self.wal.commit_lent(lend, start..end) {
                return Some(Err(self.wal_error(error)));
            }
        } else {
            self.wal.abandon_lent(lend, records_bytes);
        }
        self.follower_writes.push_back(io_id);
        Some(Ok(()))
    }
}
