//! A leader whose own disk is slow does not slow its writes down: an entry
//! is committed once a quorum has it durable (here the two followers), and
//! it is applied and answered then, without waiting for the leader's own
//! write. The leader's log still becomes durable, and a restart of the
//! leader finds every acknowledged entry (on the followers, if not its own).

mod common;
use common::{Journal, leader, small_config, start_all, three_peers};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringraft_engine::shard::{Faults, Node};

/// How late the leader's WAL writes complete.
const LEADER_FLUSH_DELAY: Duration = Duration::from_millis(400);
/// Writes answered in less than this did not wait for the leader's disk.
const ANSWERED_WITHIN: Duration = Duration::from_millis(200);
const WRITES: usize = 8;

fn start(id: u64, peers: &[(u64, SocketAddr)], dir: &Path) -> Node {
    let mut config = small_config(id, peers, dir);
    // The leader stays where it was elected (no hand-over to a preferred
    // node in the middle of the test).
    config.spread_leaders = false;
    Node::start(config, vec![Journal::default()]).unwrap()
}

#[test]
fn writes_are_answered_by_the_followers_quorum_while_the_leaders_disk_lags() {
    let dir = tempfile::tempdir().unwrap();
    let peers = three_peers();
    let nodes = start_all(&peers, dir.path(), start);
    let at = leader(&nodes);
    let node = nodes[at].as_ref().unwrap();
    let mut reply = Vec::new();
    node.propose(0, b"warm", &mut reply).unwrap();

    node.set_faults(Faults {
        flush_delay: LEADER_FLUSH_DELAY,
        ..Faults::default()
    });
    // The fault is taken up at the shard's next tick.
    std::thread::sleep(Duration::from_millis(100));

    let mut ahead_of_own_disk = false;
    for i in 0..WRITES {
        let asked = Instant::now();
        reply.clear();
        node.propose(0, format!("w{i}").as_bytes(), &mut reply)
            .unwrap();
        let took = asked.elapsed();
        assert!(
            took < ANSWERED_WITHIN,
            "write {i} took {took:?}: it waited for the leader's own write \
             (delayed {LEADER_FLUSH_DELAY:?}) although the followers are a quorum"
        );
        let status = &node.status()[0];
        ahead_of_own_disk |= status.applied > status.durable_index;
    }
    assert!(
        ahead_of_own_disk,
        "the leader never applied past its own durable index: the fault did not slow its disk"
    );

    // Lifted, the leader's own writes land and its log is durable again.
    node.set_faults(Faults::default());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = &node.status()[0];
        if status.durable_index == status.last_index {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's log did not become durable: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Every acknowledged write is in the journal, in order.
    let mut read = Vec::new();
    node.read_index(0, b"", &mut read).unwrap();
    let expected: Vec<u8> = std::iter::once("warm".to_string())
        .chain((0..WRITES).map(|i| format!("w{i}")))
        .collect::<String>()
        .into_bytes();
    assert!(
        read.ends_with(&expected),
        "journal {:?} does not end with the acknowledged writes",
        String::from_utf8_lossy(&read)
    );
    for node in nodes.into_iter().flatten() {
        node.stop().unwrap();
    }
}
