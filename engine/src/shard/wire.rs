//! Translation between the Raft core's control messages and the transport's
//! frames. Both are plain `Copy` data; nothing is allocated.
//!
//! | core `Body`            | frame                         | notes |
//! |---|---|---|
//! | RequestVote{pre_vote}  | Vote / PreVote                | last = (last_term, last_index) |
//! | Vote{pre_vote}         | VoteReply / PreVoteReply      | |
//! | Heartbeat              | Heartbeat                     | read_context = round |
//! | HeartbeatResponse      | HeartbeatReply                | read_context = round << 1 \| lagging |
//! | AppendResponse         | AppendResponse                | success = !reject |
//! | TimeoutNow             | TimeoutNow                    | |
//! | SnapshotChunk          | (none: the runtime sends the file's bytes as an InstallSnapshot data frame) | |
//! | SnapshotResponse       | InstallSnapshotReply          | next_offset = next_offset << 1 \| done; the reply carries the snapshot's index only (the core matches on it), so its term reads back as 0; rejected: resume at 0 |

use ringraft_net::frame::{self, Message as Frame};
use ringraft_wal::IoId;

use crate::raft::{Body, Message, NodeId};

/// The frame for a core control message, or None for snapshot chunks (they
/// travel on the data lane with their bytes).
pub fn to_frame(msg: &Message) -> Option<Frame> {
    let term = msg.term;
    Some(match msg.body {
        Body::RequestVote {
            pre_vote,
            last,
            transfer,
        } => {
            let vote = frame::Vote {
                term,
                last_term: last.term,
                last_index: last.index,
                transfer,
            };
            if pre_vote {
                Frame::PreVote(vote)
            } else {
                Frame::Vote(vote)
            }
        }
        Body::Vote { pre_vote, granted } => {
            let reply = frame::VoteReply { term, granted };
            if pre_vote {
                Frame::PreVoteReply(reply)
            } else {
                Frame::VoteReply(reply)
            }
        }
        Body::Heartbeat { commit, round } => Frame::Heartbeat(frame::Heartbeat {
            term,
            commit,
            read_context: round,
        }),
        Body::HeartbeatResponse { round, lagging } => {
            Frame::HeartbeatReply(frame::HeartbeatReply {
                term,
                // Rounds count heartbeats (far below 2^63), so the shift loses nothing.
                read_context: (round << 1) | u64::from(lagging),
            })
        }
        Body::AppendResponse {
            reject,
            index,
            hint,
        } => Frame::AppendResponse(frame::AppendResponse {
            term,
            index,
            hint_term: hint.term,
            hint_index: hint.index,
            success: !reject,
        }),
        Body::TimeoutNow => Frame::TimeoutNow { term },
        Body::SnapshotResponse {
            snapshot,
            next_offset,
            done,
        } => Frame::InstallSnapshotReply(frame::InstallSnapshotReply {
            term,
            snapshot_index: snapshot.index,
            // Snapshots are far below 2^63 bytes, so the shift loses nothing.
            next_offset: (next_offset << 1) | u64::from(done),
            rejected: false,
        }),
        Body::SnapshotChunk { .. } => return None,
    })
}

/// The core message for a received control frame from `from`, or None for
/// frames the core does not take on the control lane.
pub fn from_frame(frame: &Frame, from: NodeId, to: NodeId) -> Option<Message> {
    let (term, body) = match *frame {
        Frame::Vote(v) | Frame::PreVote(v) => (
            v.term,
            Body::RequestVote {
                pre_vote: matches!(frame, Frame::PreVote(_)),
                last: IoId::new(v.last_term, v.last_index),
                transfer: v.transfer,
            },
        ),
        Frame::VoteReply(r) | Frame::PreVoteReply(r) => (
            r.term,
            Body::Vote {
                pre_vote: matches!(frame, Frame::PreVoteReply(_)),
                granted: r.granted,
            },
        ),
        Frame::Heartbeat(h) => (
            h.term,
            Body::Heartbeat {
                commit: h.commit,
                round: h.read_context,
            },
        ),
        Frame::HeartbeatReply(r) => (
            r.term,
            Body::HeartbeatResponse {
                round: r.read_context >> 1,
                lagging: r.read_context & 1 == 1,
            },
        ),
        Frame::AppendResponse(a) => (
            a.term,
            Body::AppendResponse {
                reject: !a.success,
                index: a.index,
                hint: IoId::new(a.hint_term, a.hint_index),
            },
        ),
        Frame::TimeoutNow { term } => (term, Body::TimeoutNow),
        Frame::InstallSnapshotReply(r) => (
            r.term,
            Body::SnapshotResponse {
                snapshot: IoId::new(0, r.snapshot_index),
                next_offset: if r.rejected { 0 } else { r.next_offset >> 1 },
                done: !r.rejected && r.next_offset & 1 == 1,
            },
        ),
        _ => return None,
    };
    Some(Message {
        from,
        to,
        term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sent_kind_round_trips() {
        let bodies = [
            Body::RequestVote {
                pre_vote: true,
                last: IoId::new(3, 9),
                transfer: false,
            },
            Body::RequestVote {
                pre_vote: false,
                last: IoId::new(3, 9),
                transfer: true,
            },
            Body::Vote {
                pre_vote: true,
                granted: true,
            },
            Body::Vote {
                pre_vote: false,
                granted: false,
            },
            Body::Heartbeat {
                commit: 7,
                round: 12,
            },
            Body::HeartbeatResponse {
                round: 12,
                lagging: true,
            },
            Body::AppendResponse {
                reject: true,
                index: 5,
                hint: IoId::new(2, 4),
            },
            Body::TimeoutNow,
            Body::SnapshotResponse {
                snapshot: IoId::new(0, 77),
                next_offset: 1 << 20,
                done: true,
            },
            Body::SnapshotResponse {
                snapshot: IoId::new(0, 77),
                next_offset: 4096,
                done: false,
            },
        ];
        for body in bodies {
            let msg = Message {
                from: 2,
                to: 1,
                term: 4,
                body,
            };
            let frame = to_frame(&msg).unwrap();
            assert_eq!(from_frame(&frame, 2, 1), Some(msg));
        }
    }
}
