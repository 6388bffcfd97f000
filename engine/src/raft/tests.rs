//! Unit tests of the node's rules: election, replication, commit, reads,
//! snapshots, and the bounds on what the node emits. The simulator
//! (`engine/tests/sim.rs`) checks the same rules under faults; these tests
//! pin each rule down on its own.

use ringraft_wal::IoId;

use super::*;

fn config(id: NodeId, voters: u64, tweak: impl Fn(&mut Config)) -> Config {
    let voters: Vec<NodeId> = (1..=voters).collect();
    let mut c = Config::new(id, &voters);
    c.pre_vote = false;
    c.check_quorum = false;
    tweak(&mut c);
    c
}

fn node(c: Config) -> RaftNode<SplitMix64> {
    let seed = c.id;
    RaftNode::new(c, SplitMix64::new(seed), Recovered::default(), []).unwrap()
}

/// A node restarted with a log whose entries have `terms` (40 bytes each).
fn node_with_log(c: Config, terms: &[u64], hard: HardState) -> RaftNode<SplitMix64> {
    let seed = c.id;
    let recovered = Recovered {
        hard_state: hard,
        ..Recovered::default()
    };
    let entries = terms.iter().map(|&term| EntryMeta { term, bytes: 40 });
    RaftNode::new(c, SplitMix64::new(seed), recovered, entries).unwrap()
}

fn persist(n: &mut RaftNode<SplitMix64>) {
    if let Some((_, version)) = n.hard_state_to_persist() {
        n.hard_state_persisted(version);
    }
}

/// Everything the node releases now (without persisting anything).
fn released(n: &mut RaftNode<SplitMix64>) -> Vec<Outgoing> {
    std::iter::from_fn(|| n.pop_outgoing()).collect()
}

fn controls(n: &mut RaftNode<SplitMix64>) -> Vec<Message> {
    persist(n);
    released(n)
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::Control(m) => Some(m),
            Outgoing::Append(_) => None,
        })
        .collect()
}

fn msg(from: NodeId, to: NodeId, term: u64, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn tick_until_not_follower(n: &mut RaftNode<SplitMix64>) -> u64 {
    for t in 1..1000 {
        n.tick();
        if n.role() != Role::Follower {
            return t;
        }
    }
    panic!("never campaigned");
}

/// Campaigns `n` (a candidate in `term` once its timeout fires) and hands
/// it `voter`'s vote, which with its own makes a majority of three.
fn win_election(n: &mut RaftNode<SplitMix64>, voter: NodeId, term: u64) {
    tick_until_not_follower(n);
    persist(n);
    let body = Body::Vote {
        pre_vote: false,
        granted: true,
    };
    n.step(msg(voter, n.id(), term, body));
    assert_eq!(n.role(), Role::Leader);
}

/// A group whose messages are delivered at once and whose writes flush at
/// once, unless a node is listed in `isolated`.
struct Cluster {
    nodes: Vec<RaftNode<SplitMix64>>,
    isolated: Vec<NodeId>,
}

impl Cluster {
    fn new(voters: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let nodes = (1..=voters)
            .map(|id| node(config(id, voters, &tweak)))
            .collect();
        Cluster {
            nodes,
            isolated: Vec::new(),
        }
    }

    fn n(&mut self, id: NodeId) -> &mut RaftNode<SplitMix64> {
        &mut self.nodes[id as usize - 1]
    }

    /// Delivers until quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let n = &mut self.nodes[i];
                persist(n);
                n.take_noop();
                let accepted = n.log().accepted();
                n.flushed(accepted);
                while let Some(out) = self.nodes[i].pop_outgoing() {
                    moved = true;
                    self.deliver(i, out);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("cluster never settled");
    }

    fn deliver(&mut self, from: usize, out: Outgoing) {
        let from_id = from as NodeId + 1;
        let to = match out {
            Outgoing::Control(m) => m.to,
            Outgoing::Append(a) => a.to,
        };
        if self.isolated.contains(&from_id) || self.isolated.contains(&to) {
            return;
        }
        match out {
            Outgoing::Control(m) => {
                if let StepOutcome::StoreSnapshotChunk {
                    snapshot,
                    complete: true,
                    ..
                } = self.n(to).step(m)
                {
                    self.n(to).snapshot_installed(snapshot, 0);
                }
            }
            Outgoing::Append(a) => {
                let leader = self.nodes[from].log();
                let metas: Vec<EntryMeta> = (a.prev.index + 1..=a.last)
                    .map(|i| EntryMeta {
                        term: leader.term_at(i).unwrap(),
                        bytes: leader.bytes_between(i, i),
                    })
                    .collect();
                self.n(to).step_append(&a, metas);
            }
        }
    }

    /// Makes `id` campaign (others do not tick) and settles.
    fn elect(&mut self, id: NodeId) {
        tick_until_not_follower(self.n(id));
        self.settle();
        assert_eq!(self.n(id).role(), Role::Leader);
    }
}

// ----- election ----------------------------------------------------------

#[test]
fn election_timeout_is_randomized_between_one_and_two_timeouts() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let c = config(1, 3, |_| {});
        let mut n = RaftNode::new(c, SplitMix64::new(seed), Recovered::default(), []).unwrap();
        let t = tick_until_not_follower(&mut n);
        assert!((10..20).contains(&t), "campaigned after {t} ticks");
        assert_eq!(n.role(), Role::Candidate);
        seen.insert(t);
    }
    assert!(seen.len() > 3, "timeouts not randomized: {seen:?}");
}

#[test]
fn vote_requests_wait_until_the_vote_is_persisted() {
    let mut n = node(config(1, 3, |_| {}));
    tick_until_not_follower(&mut n);
    assert_eq!(n.term(), 1);
    let (hs, _) = n.hard_state_to_persist().expect("term and vote to persist");
    assert_eq!(
        hs,
        HardState {
            term: 1,
            vote: Some(1)
        }
    );
    assert!(
        released(&mut n).is_empty(),
        "nothing leaves before the vote is durable"
    );
    let sent = controls(&mut n);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|m| m.term == 1
        && matches!(m.body, Body::RequestVote { pre_vote: false, last, .. } if last == IoId::ZERO)));
}

#[test]
fn a_voter_grants_one_vote_per_term_and_only_to_an_up_to_date_log() {
    let mut n = node_with_log(config(1, 3, |_| {}), &[1, 1], HardState::default());
    persist(&mut n);
    let vote = |n: &mut RaftNode<SplitMix64>, from, last| {
        n.step(msg(
            from,
            1,
            2,
            Body::RequestVote {
                pre_vote: false,
                last,
                transfer: false,
            },
        ));
        let replies = controls(n);
        match replies.as_slice() {
            [
                Message {
                    body: Body::Vote { granted, .. },
                    ..
                },
            ] => *granted,
            other => panic!("expected one vote reply, got {other:?}"),
        }
    };
    assert!(
        !vote(&mut n, 2, IoId::new(1, 1)),
        "shorter log of the same term"
    );
    assert!(vote(&mut n, 3, IoId::new(1, 2)), "as up to date");
    assert!(
        !vote(&mut n, 2, IoId::new(2, 9)),
        "already voted for 3 in term 2"
    );
    assert!(
        vote(&mut n, 3, IoId::new(1, 2)),
        "a repeated request gets the same answer"
    );
    assert_eq!(
        n.hard_state(),
        HardState {
            term: 2,
            vote: Some(3)
        }
    );
}

#[test]
fn the_vote_reply_waits_for_the_persisted_vote() {
    let mut n = node(config(1, 3, |_| {}));
    persist(&mut n);
    n.step(msg(
        2,
        1,
        1,
        Body::RequestVote {
            pre_vote: false,
            last: IoId::ZERO,
            transfer: false,
        },
    ));
    assert!(n.hard_state_to_persist().is_some());
    assert!(
        released(&mut n).is_empty(),
        "granted vote must be durable first"
    );
    assert_eq!(controls(&mut n).len(), 1);
}

#[test]
fn pre_vote_changes_no_term_until_a_quorum_would_grant() {
    let mut a = node(config(1, 3, |c| c.pre_vote = true));
    let mut b = node(config(2, 3, |c| c.pre_vote = true));
    tick_until_not_follower(&mut a);
    assert_eq!(a.role(), Role::PreCandidate);
    assert_eq!(a.term(), 0, "a pre-candidate keeps its term");
    let requests = controls(&mut a);
    let to_b = requests.iter().find(|m| m.to == 2).copied().unwrap();
    assert_eq!(to_b.term, 1);
    assert!(matches!(
        to_b.body,
        Body::RequestVote { pre_vote: true, .. }
    ));
    b.step(to_b);
    assert_eq!(b.term(), 0, "a pre-vote does not move the voter's term");
    assert!(b.hard_state_to_persist().is_none());
    let reply = controls(&mut b).pop().unwrap();
    assert!(matches!(
        reply.body,
        Body::Vote {
            pre_vote: true,
            granted: true
        }
    ));
    a.step(reply);
    assert_eq!(a.role(), Role::Candidate);
    assert_eq!(a.term(), 1);
}

#[test]
fn a_leader_without_a_quorum_steps_down_after_an_election_timeout() {
    let mut c = Cluster::new(3, |c| c.check_quorum = true);
    c.elect(1);
    c.isolated = vec![1];
    for _ in 0..9 {
        c.n(1).tick();
        c.settle();
    }
    assert_eq!(
        c.n(1).role(),
        Role::Leader,
        "still within the first timeout"
    );
    for _ in 0..11 {
        c.n(1).tick();
        c.settle();
    }
    assert_eq!(c.n(1).role(), Role::Follower, "CheckQuorum stepped it down");
}

#[test]
fn a_leader_with_a_quorum_stays() {
    let mut c = Cluster::new(3, |c| c.check_quorum = true);
    c.elect(1);
    for _ in 0..50 {
        c.n(1).tick();
        c.settle();
    }
    assert_eq!(c.n(1).role(), Role::Leader);
}

#[test]
fn followers_in_lease_ignore_votes_but_not_a_transfer() {
    let mut n = node(config(2, 3, |c| c.check_quorum = true));
    n.step(msg(
        1,
        2,
        1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    controls(&mut n);
    let request = |transfer| Body::RequestVote {
        pre_vote: false,
        last: IoId::new(5, 5),
        transfer,
    };
    n.step(msg(3, 2, 2, request(false)));
    assert_eq!(n.term(), 1, "in lease: the vote request is ignored");
    assert!(controls(&mut n).is_empty());
    n.step(msg(3, 2, 2, request(true)));
    assert_eq!(n.term(), 2);
    assert_eq!(n.hard_state().vote, Some(3));
}

#[test]
fn a_restarted_node_refuses_votes_for_one_election_timeout() {
    // It may have acknowledged a leader's heartbeat just before crashing;
    // that leader's lease counts on it not voting for a while.
    let hard = HardState {
        term: 3,
        vote: Some(1),
    };
    let mut n = node_with_log(config(2, 3, |c| c.check_quorum = true), &[1], hard);
    let request = Body::RequestVote {
        pre_vote: false,
        last: IoId::new(3, 9),
        transfer: false,
    };
    n.step(msg(3, 2, 4, request));
    assert_eq!(n.term(), 3, "vote request ignored right after the restart");
    for _ in 0..10 {
        n.tick();
    }
    n.step(msg(3, 2, 5, request));
    assert_eq!(
        n.hard_state(),
        HardState {
            term: 5,
            vote: Some(3)
        }
    );
}

#[test]
fn a_stale_leader_learns_the_new_term_from_any_reply_and_steps_down() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let stale = c.n(1).term();
    // Node 2 moved on to a later term; node 1's heartbeat is answered with it.
    c.n(2).step(msg(
        3,
        2,
        stale + 1,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    controls(c.n(2));
    c.n(2).step(msg(
        1,
        2,
        stale,
        Body::Heartbeat {
            commit: 0,
            round: 2,
        },
    ));
    let replies = controls(c.n(2));
    assert!(replies.iter().any(|m| m.to == 1 && m.term == stale + 1));
    for reply in replies.into_iter().filter(|m| m.to == 1) {
        c.n(1).step(reply);
    }
    assert_eq!(c.n(1).role(), Role::Follower);
    assert_eq!(c.n(1).term(), stale + 1);
}

#[test]
fn leader_transfer_sends_timeout_now_once_the_target_caught_up() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    // Node 2 misses an entry, so the transfer must wait for it.
    c.isolated = vec![2];
    c.n(1).propose(10).unwrap();
    c.settle();
    c.n(1).transfer_leadership(2).unwrap();
    assert_eq!(c.n(1).propose(10), Err(ProposeError::Transferring));
    let before: Vec<_> = controls(c.n(1));
    assert!(
        !before.iter().any(|m| m.body == Body::TimeoutNow),
        "target is behind"
    );
    c.isolated.clear();
    c.n(1).tick();
    c.n(1).tick();
    c.settle();
    assert_eq!(
        c.n(2).role(),
        Role::Leader,
        "target campaigned on TimeoutNow"
    );
    assert_eq!(c.n(1).role(), Role::Follower);
    assert_eq!(c.n(2).term(), 2);
    assert_eq!(c.n(1).transfer_leadership(3), Err(TransferError::NotLeader));
}

// ----- replication and commit ---------------------------------------------

#[test]
fn commit_counts_only_entries_of_the_current_term() {
    // Node 1 restarts with entries of terms 1 and 2 and becomes leader of term 3.
    let hard = HardState {
        term: 2,
        vote: None,
    };
    let mut l = node_with_log(config(1, 3, |_| {}), &[1, 2], hard);
    win_election(&mut l, 2, 3);
    let noop = l.take_noop().unwrap();
    assert_eq!(noop, IoId::new(3, 3));
    l.flushed(noop);
    // A majority (leader + node 2) holds index 2, of term 2: not committed by counting.
    l.step(msg(
        2,
        1,
        3,
        Body::AppendResponse {
            reject: false,
            index: 2,
            hint: IoId::ZERO,
        },
    ));
    assert_eq!(l.committed_index(), 0);
    // Once the term-3 entry is on a majority, it and everything before commit.
    l.step(msg(
        2,
        1,
        3,
        Body::AppendResponse {
            reject: false,
            index: 3,
            hint: IoId::ZERO,
        },
    ));
    assert_eq!(l.committed_index(), 3);
    assert_eq!(l.committed().get(), IoId::new(3, 3));
}

#[test]
fn the_leader_counts_its_own_log_only_up_to_what_is_flushed() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let committed = c.n(1).committed_index();
    let id = c.n(1).propose(100).unwrap();
    // Node 2 acknowledges; node 3 says nothing; the leader has not flushed.
    c.n(1).step(msg(
        2,
        1,
        1,
        Body::AppendResponse {
            reject: false,
            index: id.index,
            hint: IoId::ZERO,
        },
    ));
    assert_eq!(
        c.n(1).committed_index(),
        committed,
        "leader + 1 of 3, but the leader's copy is not durable"
    );
    c.n(1).flushed(id);
    assert_eq!(c.n(1).committed_index(), id.index);
}

#[test]
fn a_follower_acknowledges_only_flushed_entries() {
    let mut f = node(config(2, 3, |_| {}));
    let append = Append {
        from: 1,
        to: 2,
        term: 1,
        prev: IoId::ZERO,
        last: 2,
        commit: 0,
        bytes: 80,
    };
    let metas = [EntryMeta { term: 1, bytes: 40 }; 2];
    let outcome = f.step_append(&append, metas);
    let io_id = IoId::new(1, 2);
    assert_eq!(
        outcome,
        AppendOutcome::Write {
            truncate_after: None,
            first: 1,
            last: 2,
            io_id
        }
    );
    let acks = controls(&mut f);
    assert!(matches!(
        acks.as_slice(),
        [Message {
            body: Body::AppendResponse {
                reject: false,
                index: 0,
                ..
            },
            ..
        }]
    ));
    f.flushed(IoId::new(1, 1));
    let acks = controls(&mut f);
    assert!(matches!(
        acks.as_slice(),
        [Message {
            body: Body::AppendResponse { index: 1, .. },
            ..
        }]
    ));
    f.flushed(io_id);
    let acks = controls(&mut f);
    assert!(matches!(
        acks.as_slice(),
        [Message {
            body: Body::AppendResponse { index: 2, .. },
            ..
        }]
    ));
}

#[test]
fn an_ack_under_a_new_term_waits_for_the_persisted_term() {
    let mut f = node(config(2, 3, |_| {}));
    persist(&mut f);
    let append = Append {
        from: 1,
        to: 2,
        term: 4,
        prev: IoId::ZERO,
        last: 0,
        commit: 0,
        bytes: 0,
    };
    f.step_append(&append, []);
    assert_eq!(f.hard_state_to_persist().map(|h| h.0.term), Some(4));
    assert!(released(&mut f).is_empty());
    assert_eq!(controls(&mut f).len(), 1);
}

#[test]
fn a_conflicting_suffix_is_truncated_under_the_new_term() {
    let mut f = node_with_log(config(2, 3, |_| {}), &[1, 1, 1], HardState::default());
    let append = Append {
        from: 1,
        to: 2,
        term: 2,
        prev: IoId::new(1, 1),
        last: 3,
        commit: 1,
        bytes: 80,
    };
    let outcome = f.step_append(&append, [EntryMeta { term: 2, bytes: 40 }; 2]);
    assert_eq!(
        outcome,
        AppendOutcome::Write {
            truncate_after: Some(1),
            first: 2,
            last: 3,
            io_id: IoId::new(2, 3)
        }
    );
    assert_eq!(f.log().last_id(), IoId::new(2, 3));
    assert_eq!(f.committed_index(), 1);
    // Entries already present are not written again.
    let again = f.step_append(&append, [EntryMeta { term: 2, bytes: 40 }; 2]);
    assert_eq!(again, AppendOutcome::Nothing);
}

#[test]
fn a_rejection_carries_the_last_entry_of_an_older_term_as_hint() {
    let mut f = node_with_log(
        config(2, 3, |_| {}),
        &[1, 1, 2, 2, 2],
        HardState {
            term: 2,
            vote: None,
        },
    );
    persist(&mut f);
    let append = Append {
        from: 1,
        to: 2,
        term: 4,
        prev: IoId::new(3, 5),
        last: 5,
        commit: 0,
        bytes: 0,
    };
    assert_eq!(f.step_append(&append, []), AppendOutcome::Nothing);
    let reply = controls(&mut f).pop().unwrap();
    assert_eq!(
        reply.body,
        Body::AppendResponse {
            reject: true,
            index: 5,
            hint: IoId::new(2, 5)
        }
    );
    let append = Append {
        prev: IoId::new(1, 7),
        last: 7,
        ..append
    };
    f.step_append(&append, []);
    let reply = controls(&mut f).pop().unwrap();
    assert_eq!(
        reply.body,
        Body::AppendResponse {
            reject: true,
            index: 7,
            hint: IoId::new(1, 2)
        },
        "entries 3..=5 are of term 2 > 1: skip them all"
    );
}

#[test]
fn a_follower_is_probed_then_streamed_in_a_bounded_window() {
    let mut c = Cluster::new(3, |c| {
        c.inflight_msgs_max = 2;
        c.msg_bytes_max = 40;
    });
    c.elect(1);
    c.isolated = vec![2, 3];
    for _ in 0..10 {
        c.n(1).propose(8).unwrap();
    }
    persist(c.n(1));
    let appends: Vec<Append> = released(c.n(1))
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::Append(a) => Some(a),
            Outgoing::Control(_) => None,
        })
        .collect();
    // Both followers acked the empty entry during the election, so they are
    // in replicate: two appends each (the window), one 40-byte entry each.
    assert_eq!(appends.len(), 4, "{appends:?}");
    assert!(
        appends
            .iter()
            .all(|a| a.bytes <= 40 && a.last == a.prev.index + 1)
    );
    assert_eq!(c.n(1).progress(2).unwrap().state, ProgressState::Replicate);
    assert!(c.n(1).progress(2).unwrap().is_paused());
}

#[test]
fn out_of_order_notifications_never_move_watermarks_back() {
    let mut c = Cluster::new(1, |_| {});
    tick_until_not_follower(c.n(1));
    c.settle();
    let a = c.n(1).propose(1).unwrap();
    let b = c.n(1).propose(1).unwrap();
    c.n(1).flushed(b);
    assert_eq!(c.n(1).committed().get(), b);
    c.n(1).flushed(a);
    assert_eq!(c.n(1).log().flushed_id(), b);
    assert_eq!(c.n(1).committed().get(), b);
    c.n(1).applied(b);
    c.n(1).applied(a);
    assert_eq!(c.n(1).applied_watermark().get(), b);
}

#[test]
fn proposals_are_refused_with_a_reason() {
    let mut c = Cluster::new(3, |c| {
        c.uncommitted_entries_max = 3;
        c.log_entries_max = 8;
    });
    assert_eq!(
        c.n(2).propose(1),
        Err(ProposeError::NotLeader { leader: None })
    );
    tick_until_not_follower(c.n(1));
    persist(c.n(1));
    for v in [2, 3] {
        c.n(1).step(msg(
            v,
            1,
            1,
            Body::Vote {
                pre_vote: false,
                granted: true,
            },
        ));
    }
    assert_eq!(c.n(1).propose(1), Err(ProposeError::NoopPending));
    c.n(1).take_noop();
    c.isolated = vec![2, 3];
    c.n(1).propose(1).unwrap();
    c.n(1).propose(1).unwrap();
    assert_eq!(
        c.n(1).propose(1),
        Err(ProposeError::TooManyUncommitted {
            uncommitted_entries_max: 3
        })
    );
}

// ----- reads ---------------------------------------------------------------

#[test]
fn read_index_waits_for_a_quorum_of_heartbeat_responses() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    assert_eq!(c.n(2).read_index(7), Err(ReadError::NotLeader));
    c.isolated = vec![2, 3];
    c.n(1).read_index(7).unwrap();
    c.settle();
    assert_eq!(c.n(1).take_read(), None, "no heartbeat answered yet");
    c.isolated.clear();
    c.n(1).read_index(8).unwrap();
    c.settle();
    let commit = c.n(1).committed_index();
    assert_eq!(
        c.n(1).take_read(),
        Some(ReadState::Ready {
            id: 7,
            index: commit
        })
    );
    assert_eq!(
        c.n(1).take_read(),
        Some(ReadState::Ready {
            id: 8,
            index: commit
        })
    );
}

#[test]
fn read_index_needs_a_commit_in_the_leaders_term() {
    let mut l = node(config(1, 3, |_| {}));
    win_election(&mut l, 2, 1);
    assert_eq!(l.read_index(1), Err(ReadError::NoCommitInTerm));
}

#[test]
fn lease_reads_answer_without_a_round_while_the_lease_holds() {
    let mut c = Cluster::new(3, |c| {
        c.check_quorum = true;
        c.lease_reads = true;
    });
    c.elect(1);
    c.n(1).tick();
    c.n(1).tick();
    c.settle();
    c.isolated = vec![2, 3];
    c.n(1).read_index(1).unwrap();
    assert!(
        matches!(c.n(1).take_read(), Some(ReadState::Ready { id: 1, .. })),
        "served under lease"
    );
    for _ in 0..12 {
        c.n(1).tick();
    }
    c.n(1).read_index(2).unwrap();
    assert_eq!(
        c.n(1).take_read(),
        None,
        "lease expired: a heartbeat round is needed"
    );
}

#[test]
fn a_leader_transfer_revokes_the_lease() {
    let mut c = Cluster::new(3, |c| {
        c.check_quorum = true;
        c.lease_reads = true;
    });
    c.elect(1);
    c.n(1).tick();
    c.n(1).tick();
    c.settle();
    // Node 2 is caught up: TimeoutNow goes out at once. The message is
    // lost here, but could arrive any time later, and its target campaigns
    // ignoring leases: the leader must not serve lease reads any more.
    c.n(1).transfer_leadership(2).unwrap();
    c.isolated = vec![2, 3];
    c.settle();
    c.isolated.clear();
    for _ in 0..12 {
        c.n(1).tick();
    }
    c.settle();
    assert_eq!(
        c.n(1).role(),
        Role::Leader,
        "transfer abandoned after a timeout"
    );
    c.isolated = vec![2, 3];
    c.n(1).read_index(1).unwrap();
    assert_eq!(c.n(1).take_read(), None, "no lease read after a TimeoutNow");
}

#[test]
fn reads_fail_when_leadership_is_lost() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated = vec![2, 3];
    c.n(1).read_index(5).unwrap();
    c.n(1).step(msg(
        2,
        1,
        9,
        Body::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    assert_eq!(c.n(1).take_read(), Some(ReadState::Failed { id: 5 }));
}

// ----- snapshots -------------------------------------------------------------

#[test]
fn a_follower_behind_the_purged_log_gets_the_snapshot_in_resumable_chunks() {
    let mut c = Cluster::new(3, |c| c.msg_bytes_max = 100);
    c.elect(1);
    c.isolated = vec![3];
    for _ in 0..5 {
        c.n(1).propose(8).unwrap();
    }
    c.settle();
    let commit = c.n(1).committed_index();
    let snap = IoId::new(1, commit);
    c.n(1).applied(snap);
    c.n(1).compacted(snap, 250).unwrap();
    c.isolated.clear();
    // Node 3's next entry is gone: the leader switches it to snapshot.
    c.n(1).tick();
    c.n(1).tick();
    persist(c.n(1));
    let mut chunks = Vec::new();
    for _ in 0..20 {
        persist(c.n(1));
        for out in released(c.n(1)) {
            let Outgoing::Control(
                m @ Message {
                    body: Body::SnapshotChunk { offset, len, .. },
                    ..
                },
            ) = out
            else {
                c.deliver(0, out);
                continue;
            };
            assert!(len <= 100, "chunk of {len} bytes");
            chunks.push(offset);
            // Lose the second chunk once: the leader resumes from the
            // follower's offset on the next heartbeat.
            if offset == 100 && chunks.iter().filter(|o| **o == 100).count() == 1 {
                continue;
            }
            if let StepOutcome::StoreSnapshotChunk {
                complete: true,
                snapshot,
                ..
            } = c.n(3).step(m)
            {
                c.n(3).snapshot_installed(snapshot, 250);
            }
        }
        for reply in controls(c.n(3)) {
            c.n(1).step(reply);
        }
        if c.n(3).log().snapshot() == snap {
            break;
        }
        c.n(1).tick();
        c.n(1).tick();
    }
    assert_eq!(chunks, vec![0, 100, 100, 200]);
    assert_eq!(c.n(3).log().snapshot(), snap);
    assert_eq!(c.n(3).committed_index(), commit);
    let pr = c.n(1).progress(3).unwrap();
    assert_eq!(
        (pr.state, pr.matched, pr.next),
        (ProgressState::Probe, commit, commit + 1)
    );
    // The next entry goes out as a probe; its ack moves node 3 to replicate.
    let id = c.n(1).propose(8).unwrap();
    c.settle();
    assert_eq!(c.n(1).progress(3).unwrap().state, ProgressState::Replicate);
    assert_eq!(c.n(3).log().last_id(), id);
}

#[test]
fn a_recovered_log_larger_than_the_bounds_is_refused() {
    let c = config(1, 3, |c| {
        c.log_entries_max = 2;
        c.uncommitted_entries_max = 1;
    });
    let entries = [EntryMeta { term: 1, bytes: 40 }; 3];
    let err = RaftNode::new(c, SplitMix64::new(1), Recovered::default(), entries).unwrap_err();
    assert_eq!(
        err,
        ConfigError::RecoveredLogTooLarge(LogFull::Entries { entries_max: 2 })
    );
}

#[test]
fn compaction_is_limited_to_applied_entries() {
    let mut c = Cluster::new(1, |_| {});
    tick_until_not_follower(c.n(1));
    c.settle();
    let id = c.n(1).propose(1).unwrap();
    c.settle();
    assert_eq!(
        c.n(1).compacted(id, 8),
        Err(CompactError::NotApplied {
            index: id.index,
            applied: 0
        })
    );
    c.n(1).applied(id);
    assert_eq!(
        c.n(1).compacted(IoId::new(9, id.index), 8),
        Err(CompactError::Unknown(IoId::new(9, id.index)))
    );
    c.n(1).compacted(id, 8).unwrap();
    assert_eq!(c.n(1).log().snapshot(), id);
}

// ----- bounds ---------------------------------------------------------------

#[test]
fn the_outbox_stays_bounded_however_much_is_proposed() {
    let mut c = Cluster::new(3, |c| {
        c.inflight_msgs_max = 4;
        c.msg_bytes_max = 1000;
    });
    c.elect(1);
    c.isolated = vec![2, 3];
    for round in 0..200 {
        for _ in 0..50 {
            if c.n(1).propose(16).is_err() {
                break;
            }
        }
        c.n(1).tick();
        // Followers never answer, the caller never drains: the outbox holds
        // at most one message per (peer, kind) plus the append rings.
        assert!(
            c.n(1).outbox_len() <= 3 * Body::KINDS + 3 * (4 + 2),
            "round {round}: {} queued",
            c.n(1).outbox_len()
        );
    }
}

#[test]
fn a_follower_out_of_metadata_room_accepts_the_prefix_that_fits() {
    let mut f = node(config(2, 3, |c| {
        c.log_entries_max = 3;
        c.uncommitted_entries_max = 2;
    }));
    let append = Append {
        from: 1,
        to: 2,
        term: 1,
        prev: IoId::ZERO,
        last: 5,
        commit: 5,
        bytes: 200,
    };
    let outcome = f.step_append(&append, [EntryMeta { term: 1, bytes: 40 }; 5]);
    let io_id = IoId::new(1, 3);
    assert_eq!(
        outcome,
        AppendOutcome::Write {
            truncate_after: None,
            first: 1,
            last: 3,
            io_id
        }
    );
    assert_eq!(f.committed_index(), 3, "commit capped at what matched");
    f.flushed(io_id);
    let acks = controls(&mut f);
    assert!(matches!(
        acks.last(),
        Some(Message {
            body: Body::AppendResponse {
                reject: false,
                index: 3,
                ..
            },
            ..
        })
    ));
}
