//! Three in-process nodes (one group each, real WAL files, loopback TCP):
//! proposals commit and apply, a stopped leader is replaced, and the node
//! restarted from its WAL replays and catches up.

mod common;
use common::{Journal, leader, small_config, start_all, three_peers};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringraft_engine::shard::{Node, RequestError};

fn start(id: u64, peers: &[(u64, SocketAddr)], dir: &Path) -> Node {
    let config = small_config(id, peers, dir);
    Node::start(config, vec![Journal::default()]).unwrap()
}

fn propose(nodes: &[Option<Node>], byte: u8) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reply = Vec::new();
    loop {
        let at = leader(nodes);
        match nodes[at].as_ref().unwrap().propose(0, &[byte], &mut reply) {
            Ok(()) => return u64::from_le_bytes(reply[..8].try_into().unwrap()),
            Err(RequestError::NotLeader { .. } | RequestError::Busy) => {}
            Err(error) => panic!("propose {byte}: {error}"),
        }
        assert!(Instant::now() < deadline, "proposal {byte} never committed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_group_of_three_nodes_commits_fails_over_and_replays_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let peers = three_peers();
    let mut nodes = start_all(&peers, dir.path(), start);
    let mut expected = Vec::new();
    for byte in 0..40u8 {
        let len = propose(&nodes, byte);
        expected.push(byte);
        assert_eq!(len, expected.len() as u64, "reply of the {byte}th proposal");
    }
    let old = leader(&nodes);
    nodes[old].take().unwrap().stop().unwrap();
    for byte in 40..80u8 {
        propose(&nodes, byte);
        expected.push(byte);
    }
    // Restart from the WAL: the fresh state machine replays the log.
    nodes[old] = Some(start(old as u64 + 1, &peers, dir.path()));
    let at = leader(&nodes);
    let commit = nodes[at].as_ref().unwrap().status()[0].commit;
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[old].as_ref().unwrap().status()[0].applied < commit {
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut reply = Vec::new();
    let at = leader(&nodes);
    nodes[at]
        .as_ref()
        .unwrap()
        .read_index(0, b"", &mut reply)
        .unwrap();
    assert_eq!(
        reply, expected,
        "every acknowledged proposal, once, in order"
    );
    // The leader's status shows both followers matching its commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = nodes[at].as_ref().unwrap().status();
        assert_eq!(status[0].peers.len(), 2);
        if status[0].peers.iter().all(|p| p.matched >= commit) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "followers' match: {:?}",
            status[0].peers
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
