//! Bounded outgoing messages.
//!
//! ```text
//!   control[peer][kind]: Option<Message>   one slot per (peer, kind); a newer
//!                                          message of a kind replaces the older
//!   appends[peer]: ring of Append, capacity inflight_msgs_max + 1
//! ```
//! Control messages are state, not commands: two heartbeats or two acks to
//! the same peer say nothing the newer one does not. Appends are commands,
//! but at most `inflight_msgs_max` are outstanding per peer (Progress) plus
//! one probe, and the ring of a peer is cleared when its Progress falls back
//! to `probe` (queued appends were sent from a stale `next`).

use std::collections::VecDeque;

use super::message::{Append, Body, Message, Outgoing};

/// Fixed-capacity outbox for all peers of one node.
#[derive(Debug)]
pub struct Outbox {
    control: Box<[[Option<Message>; Body::KINDS]]>,
    appends: Box<[VecDeque<Append>]>,
    appends_max: usize,
    /// Peer to drain next (round robin so no peer starves).
    cursor: usize,
    queued: usize,
}

impl Outbox {
    /// An outbox for `peers` slots (indexed like the voter list).
    pub fn new(peers: usize, appends_max: usize) -> Outbox {
        Outbox {
            control: vec![[None; Body::KINDS]; peers].into_boxed_slice(),
            appends: (0..peers)
                .map(|_| VecDeque::with_capacity(appends_max))
                .collect(),
            appends_max,
            cursor: 0,
            queued: 0,
        }
    }

    /// Queues a control message for peer slot `peer`, replacing an unsent one
    /// of the same kind.
    pub fn put(&mut self, peer: usize, msg: Message) {
        let slot = &mut self.control[peer][msg.body.kind()];
        if slot.is_none() {
            self.queued += 1;
        }
        *slot = Some(msg);
    }

    /// The unsent control message of `kind` for `peer`, if any.
    pub fn peek(&self, peer: usize, kind: usize) -> Option<&Message> {
        self.control[peer][kind].as_ref()
    }

    /// Queues an append. Progress keeps at most `inflight_msgs_max` appends
    /// with entries outstanding, but a caller that does not drain for several
    /// heartbeat intervals could let probes pile up: then the oldest unsent
    /// append is dropped, which Raft handles like any lost message (the
    /// follower rejects the gap and the leader probes).
    pub fn push_append(&mut self, peer: usize, append: Append) {
        let ring = &mut self.appends[peer];
        if ring.len() == self.appends_max {
            ring.pop_front();
            self.queued -= 1;
        }
        ring.push_back(append);
        self.queued += 1;
    }

    /// Drops unsent appends to `peer`.
    pub fn clear_appends(&mut self, peer: usize) {
        self.queued -= self.appends[peer].len();
        self.appends[peer].clear();
    }

    /// Drops everything unsent (on a role change).
    pub fn clear(&mut self) {
        for slots in self.control.iter_mut() {
            *slots = [None; Body::KINDS];
        }
        for ring in self.appends.iter_mut() {
            ring.clear();
        }
        self.queued = 0;
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Takes the next message: per peer, control messages (in kind order)
    /// before appends, so a heartbeat or an ack is never stuck behind data.
    pub fn pop(&mut self) -> Option<Outgoing> {
        if self.queued == 0 {
            return None;
        }
        let peers = self.control.len();
        for step in 0..peers {
            let peer = (self.cursor + step) % peers;
            let taken = self.control[peer]
                .iter_mut()
                .find_map(|slot| slot.take())
                .map(Outgoing::Control)
                .or_else(|| self.appends[peer].pop_front().map(Outgoing::Append));
            if let Some(out) = taken {
                self.queued -= 1;
                self.cursor = (peer + 1) % peers;
                return Some(out);
            }
        }
        unreachable!("queued count {} with nothing queued", self.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringraft_wal::IoId;

    fn hb(to: u64, round: u64) -> Message {
        Message {
            from: 1,
            to,
            term: 1,
            body: Body::Heartbeat { commit: 0, round },
        }
    }

    fn append(to: u64, last: u64) -> Append {
        Append {
            from: 1,
            to,
            term: 1,
            prev: IoId::new(1, last - 1),
            last,
            commit: 0,
            bytes: 40,
        }
    }

    #[test]
    fn newer_message_of_a_kind_replaces_older() {
        let mut o = Outbox::new(2, 4);
        o.put(1, hb(2, 1));
        o.put(1, hb(2, 2));
        assert_eq!(o.len(), 1);
        assert_eq!(o.pop(), Some(Outgoing::Control(hb(2, 2))));
        assert_eq!(o.pop(), None);
    }

    #[test]
    fn control_goes_before_data_and_clear_appends_drops_data() {
        let mut o = Outbox::new(2, 4);
        o.push_append(1, append(2, 5));
        o.put(1, hb(2, 1));
        o.push_append(1, append(2, 6));
        assert_eq!(o.pop(), Some(Outgoing::Control(hb(2, 1))));
        assert_eq!(o.pop(), Some(Outgoing::Append(append(2, 5))));
        o.clear_appends(1);
        assert!(o.is_empty());
        assert_eq!(o.pop(), None);
    }

    #[test]
    fn append_ring_is_bounded_and_keeps_the_newest() {
        let mut o = Outbox::new(1, 2);
        o.push_append(0, append(2, 5));
        o.push_append(0, append(2, 6));
        o.push_append(0, append(2, 7));
        assert_eq!(o.len(), 2);
        assert_eq!(o.pop(), Some(Outgoing::Append(append(2, 6))));
        assert_eq!(o.pop(), Some(Outgoing::Append(append(2, 7))));
    }
}
