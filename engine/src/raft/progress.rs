//! A follower's progress as the leader sees it (etcd raft's Progress).
//!
//! ```text
//!                +-------------------------------------------------+
//!                |  next <= purged: send snapshot                  |
//!                |                                                 v
//!   +------------+-------+                          +------------------+
//! +->     probe           |<-------------------------+    snapshot      |
//! |  | one append per      | 1. snapshot done:        | no appends       |
//! |  | heartbeat interval  |    next = snapshot + 1   +------------------+
//! |  +---------+----------+ 2. snapshot failed: next = match + 1
//! |            |            3. ack with index >= pending snapshot:
//! |            |               match = index, next = match + 1
//! | reject:    | ack with index > match: match = index, next = match + 1
//! | next =     v
//! | match + 1 +---------------------------------------------+
//! +-----------+ replicate: next advances optimistically;     |
//!             | window bounded by inflight msgs AND bytes    |
//!             +---------------------------------------------+
//! ```
//! Invariant: `matched < next`.

use super::inflights::Inflights;

/// Replication state of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Leader does not know where the follower's log ends; sends one append
    /// at a time, at most one per heartbeat interval.
    Probe,
    /// Follower's log matches up to `matched`; appends stream in a window.
    Replicate,
    /// Follower needs a snapshot (its next entry was purged); no appends.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Current state.
    pub state: ProgressState,
    /// Highest index known to be durable and matching on the follower.
    pub matched: u64,
    /// Index of the next entry to send.
    pub next: u64,
    /// In `probe`: an append was sent this heartbeat interval.
    pub probe_sent: bool,
    /// In `snapshot`: the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// Heard from the follower since the last CheckQuorum round.
    pub recent_active: bool,
    /// Appends in flight (meaningful in `replicate`).
    pub inflights: Inflights,
}

impl Progress {
    /// A fresh progress: `probe`, nothing matched, `next` after `last_index`.
    pub fn new(last_index: u64, inflight_msgs_max: usize, inflight_bytes_max: u64) -> Progress {
        Progress {
            state: ProgressState::Probe,
            matched: 0,
            next: last_index + 1,
            probe_sent: false,
            pending_snapshot: 0,
            recent_active: false,
            inflights: Inflights::new(inflight_msgs_max, inflight_bytes_max),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    /// Enters `probe`. From `snapshot`, resumes after the snapshot (it may
    /// have landed); otherwise restarts after `matched`.
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    /// Enters `replicate`, streaming from `matched + 1`.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    /// Enters `snapshot` for a snapshot ending at `snapshot_index`.
    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// The follower acknowledged `index`. Returns true if `matched` moved.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// The follower rejected an append whose previous entry was `rejected`;
    /// `hint` is the highest index the leader thinks may still match.
    /// Returns false if the rejection is stale (answers an older append).
    pub fn maybe_decrease_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// The follower acknowledged `index` (accepted an append up to it).
    /// Returns false if the acknowledgement says nothing new.
    ///
    /// probe → replicate; snapshot → probe once the follower is past the
    /// snapshot; replicate frees the window up to `index`.
    pub fn on_ack(&mut self, index: u64) -> bool {
        if !self.maybe_update(index) {
            return false;
        }
        match self.state {
            ProgressState::Probe => self.become_replicate(),
            ProgressState::Snapshot => {
                if self.matched >= self.pending_snapshot {
                    self.become_probe();
                }
            }
            ProgressState::Replicate => self.inflights.free_le(index),
        }
        true
    }

    /// The follower rejected an append after `rejected`; `hint` is the
    /// highest index that may still match. replicate → probe with
    /// `next = match + 1`; in probe, `next` jumps back to the hint. Returns
    /// false for a stale rejection (and always in `snapshot`).
    pub fn on_reject(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Snapshot || !self.maybe_decrease_to(rejected, hint) {
            return false;
        }
        if self.state == ProgressState::Replicate {
            self.become_probe();
        }
        true
    }

    /// The snapshot ending at `snapshot_index` is installed on the follower:
    /// snapshot → probe with `next = snapshot + 1`.
    pub fn on_snapshot_done(&mut self, snapshot_index: u64) -> bool {
        if self.state != ProgressState::Snapshot || snapshot_index != self.pending_snapshot {
            return false;
        }
        self.matched = self.matched.max(snapshot_index);
        self.become_probe();
        true
    }

    /// Sending the snapshot failed: snapshot → probe, `match` unchanged,
    /// `next = match + 1`.
    pub fn on_snapshot_failed(&mut self) -> bool {
        if self.state != ProgressState::Snapshot {
            return false;
        }
        self.pending_snapshot = 0;
        self.become_probe();
        true
    }

    /// A heartbeat interval passed: a follower in probe may get one more append.
    pub fn on_heartbeat_interval(&mut self) {
        if self.state == ProgressState::Probe {
            self.probe_sent = false;
        }
    }

    /// The follower answered a heartbeat: it is alive. Unpauses a probe, and
    /// frees one slot of a full window (an append was probably lost; the
    /// next one will be rejected and trigger probing).
    pub fn on_heartbeat_response(&mut self) {
        self.recent_active = true;
        self.probe_sent = false;
        if self.state == ProgressState::Replicate && self.inflights.full() {
            self.inflights.free_first_one();
        }
    }

    /// True when no append may be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// An append of entries up to `last` (`bytes` record bytes) was sent.
    pub fn sent_entries(&mut self, last: u64, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last >= self.next {
                    self.inflights.add(last, bytes);
                    self.next = last + 1;
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => panic!("append sent in snapshot state"),
        }
    }
}
