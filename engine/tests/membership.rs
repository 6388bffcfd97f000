//! `Node::start` over an existing data directory: the stored membership
//! refuses another node id, voter set or shard count, and accepts a voter
//! that moved to another address.

mod common;
use common::{Nothing, ports};

use std::net::SocketAddr;
use std::path::Path;

use ringraft_engine::shard::membership::MembershipError;
use ringraft_engine::shard::{Node, NodeConfig, NodeError};

/// The first of two consecutive reserved ports (a node of two shards
/// listens on both).
fn free_pair() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::block(2)))
}

fn start(id: u64, peers: &[(u64, SocketAddr)], shards: u32, dir: &Path) -> Result<Node, NodeError> {
    let mut config = NodeConfig::new(id, peers.to_vec(), shards, dir.to_path_buf());
    config.wal.capacity_bytes = 8 << 20;
    config.wal.ring_bytes = 4 << 20;
    config.wal.inflight_bytes_max = 1 << 20;
    config.wal.tuning.read_buffer_bytes = 256 << 10;
    config.wal.tuning.flush_io_bytes_max = 256 << 10;
    config.pin_cores = false;
    let machines = (0..shards).map(|_| Nothing::default()).collect();
    Node::start(config, machines)
}

#[test]
fn a_restart_with_another_membership_is_refused_and_a_moved_address_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let (a, b, c) = (free_pair(), ports::addr(), ports::addr());
    let peers = [(1, a), (2, b), (3, c)];
    start(1, &peers, 1, &data).unwrap().stop().unwrap();
    assert!(data.join("shard-0.wal").exists());
    assert!(data.join("membership").exists());

    let refused = |result: Result<Node, NodeError>| match result {
        Err(NodeError::Membership(error)) => error,
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("started over another node's data"),
    };
    let error = refused(start(2, &peers, 1, &data));
    assert!(matches!(
        error,
        MembershipError::NodeId {
            stored: 1,
            configured: 2,
            ..
        }
    ));
    let error = refused(start(1, &[(1, a), (2, b), (4, c)], 1, &data));
    let text = error.to_string();
    assert!(text.contains("1,2,3") && text.contains("1,2,4"), "{text}");
    let error = refused(start(1, &peers, 2, &data));
    assert!(matches!(
        error,
        MembershipError::Shards {
            stored: 1,
            configured: 2,
            ..
        }
    ));
    // Node 3 moved: same voters, so the node starts (and records the move).
    let moved = ports::addr();
    let node = start(1, &[(1, a), (2, b), (3, moved)], 1, &data).unwrap();
    node.stop().unwrap();
    start(1, &[(1, a), (2, b), (3, moved)], 1, &data)
        .unwrap()
        .stop()
        .unwrap();
}

#[test]
fn a_data_directory_of_the_previous_version_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let peers = [(1, ports::addr()), (2, ports::addr())];
    start(1, &peers, 1, &data).unwrap().stop().unwrap();
    // The previous version wrote no membership file.
    std::fs::remove_file(data.join("membership")).unwrap();
    start(1, &peers, 1, &data).unwrap().stop().unwrap();
    assert!(data.join("membership").exists());
    assert!(matches!(
        start(2, &peers, 1, &data),
        Err(NodeError::Membership(MembershipError::NodeId { .. }))
    ));
}
