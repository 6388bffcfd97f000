//! Admission control through the library API: a leader cut off from
//! its quorum cannot commit, so once its uncommitted bytes reach
//! `uncommitted_bytes_max` a proposal waits in a mailbox slot and is
//! refused with `RequestError::Busy` after `admission_timeout` (not a
//! hang); once the followers are back, proposals commit again.

mod common;
use common::{Journal, leader, small_config, start_all, three_peers};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringraft_engine::shard::{Node, RequestError};

fn start(id: u64, peers: &[(u64, SocketAddr)], dir: &Path) -> Node {
    let mut config = small_config(id, peers, dir);
    // Three 1 KiB proposals fill the budget; a proposal waits 20 ms at
    // most, well before the isolated leader steps down (≥ 100 ms).
    config.bounds.uncommitted_bytes_max = 4096;
    config.bounds.admission_timeout = Duration::from_millis(20);
    Node::start(config, vec![Journal::default()]).unwrap()
}

#[test]
fn a_proposal_not_admitted_in_time_is_refused_busy_and_the_group_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let peers = three_peers();
    let mut nodes = start_all(&peers, dir.path(), start);
    let at = leader(&nodes);
    let mut reply = Vec::new();
    nodes[at]
        .as_ref()
        .unwrap()
        .propose(0, b"warm", &mut reply)
        .unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != at).collect();
    for &i in &followers {
        nodes[i].take().unwrap().stop().unwrap();
    }
    let node = nodes[at].take().unwrap();
    let payload = vec![7u8; 1024];
    let last_before = node.status()[0].last_index;
    let busy = std::thread::scope(|scope| {
        // These take the budget and wait for a commit that cannot come.
        let fillers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut reply = Vec::new();
                    let _ = node.propose(0, &payload, &mut reply);
                })
            })
            .collect();
        // Three fillers fit the budget: wait until they are in the log, so
        // the probe below cannot be admitted ahead of them (it would then
        // wait for a commit that cannot come, not be refused).
        let filled_by = Instant::now() + Duration::from_secs(5);
        while node.status()[0].last_index < last_before + 3 {
            assert!(Instant::now() < filled_by, "the fillers were not admitted");
            std::thread::sleep(Duration::from_millis(1));
        }
        let asked = Instant::now();
        let mut reply = Vec::new();
        let result = node.propose(0, &payload, &mut reply);
        let waited = asked.elapsed();
        // Bring the quorum back so the fillers get their answers.
        for &i in &followers {
            nodes[i] = Some(start(peers[i].0, &peers, dir.path()));
        }
        for filler in fillers {
            filler.join().unwrap();
        }
        (result, waited)
    });
    assert_eq!(busy.0, Err(RequestError::Busy), "after {:?}", busy.1);
    assert!(
        busy.1 < Duration::from_secs(2),
        "answered after {:?}",
        busy.1
    );
    nodes[at] = Some(node);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let at = leader(&nodes);
        match nodes[at].as_ref().unwrap().propose(0, b"after", &mut reply) {
            Ok(()) => break,
            Err(RequestError::NotLeader { .. } | RequestError::Busy | RequestError::Dropped) => {}
            Err(error) => panic!("propose after recovery: {error}"),
        }
        assert!(Instant::now() < deadline, "the group did not recover");
        std::thread::sleep(Duration::from_millis(20));
    }
}
