//! What the engine's integration tests share (`mod common;`): reserved
//! ports, two trivial state machines and a leader wait.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

// Reserved loopback ports (below the ephemeral range, one owner at a
// time), shared with the other crates' tests.
#[path = "../../../tools/tests/common/ports.rs"]
pub mod ports;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringraft_engine::shard::{
    ApplyError, Entry, Node, NodeConfig, ResponseSlots, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
use ringraft_wal::IoId;

/// A one-shard node `id` of the cluster `peers` with its data in
/// `dir/n<id>`: a small WAL (16 MiB file, 8 MiB ring), threads not pinned
/// (tests share the cores).
pub fn small_config(
    id: u64,
    peers: &[(u64, std::net::SocketAddr)],
    dir: &std::path::Path,
) -> NodeConfig {
    let mut config = NodeConfig::new(id, peers.to_vec(), 1, dir.join(format!("n{id}")));
    config.wal.capacity_bytes = 16 << 20;
    config.wal.ring_bytes = 8 << 20;
    config.wal.inflight_bytes_max = 2 << 20;
    config.pin_cores = false;
    config
}

/// Three voters on reserved loopback ports.
pub fn three_peers() -> Vec<(u64, SocketAddr)> {
    (1..=3).map(|id| (id, ports::addr())).collect()
}

/// Starts every one of `peers` with `start(id, peers, dir)`.
pub fn start_all(
    peers: &[(u64, SocketAddr)],
    dir: &Path,
    start: impl Fn(u64, &[(u64, SocketAddr)], &Path) -> Node,
) -> Vec<Option<Node>> {
    peers
        .iter()
        .map(|&(id, _)| Some(start(id, peers, dir)))
        .collect()
}

/// What the tests' state machines answer to snapshot calls: they never
/// compact (their logs stay small).
const NO_SNAPSHOTS: SnapshotError = SnapshotError::UnexpectedOffset {
    expected: 0,
    got: 0,
};

/// Appends every payload to a list; replies with the list's length; a query
/// returns the whole list.
#[derive(Default)]
pub struct Journal {
    items: Vec<u8>,
    applied: IoId,
}

impl StateMachine for Journal {
    fn response_bytes_max(&self) -> usize {
        8
    }
    fn apply<'a, I: Iterator<Item = Entry<'a>>>(
        &mut self,
        entries: I,
        out: &mut ResponseSlots,
    ) -> Result<(), ApplyError> {
        for e in entries {
            self.items.extend_from_slice(e.payload);
            self.applied = e.id;
            let len = self.items.len() as u64;
            out.writer(e.id).write(&len.to_le_bytes()).unwrap();
        }
        Ok(())
    }
    fn applied(&self) -> IoId {
        self.applied
    }
    fn query(&self, _: &[u8], reply: &mut ResponseWriter<'_>) -> Result<(), ApplyError> {
        reply.write(&self.items).unwrap();
        Ok(())
    }
    fn snapshot_chunk(&mut self, _: u64, _: &mut [u8]) -> Result<SnapshotChunk, SnapshotError> {
        Err(NO_SNAPSHOTS)
    }
    fn install_chunk(&mut self, _: IoId, _: u64, _: &[u8], _: bool) -> Result<(), SnapshotError> {
        Err(NO_SNAPSHOTS)
    }
}

#[derive(Default)]
pub struct Nothing {
    applied: IoId,
}

impl StateMachine for Nothing {
    fn response_bytes_max(&self) -> usize {
        8
    }
    fn apply<'a, I: Iterator<Item = Entry<'a>>>(
        &mut self,
        entries: I,
        _: &mut ResponseSlots,
    ) -> Result<(), ApplyError> {
        for e in entries {
            self.applied = e.id;
        }
        Ok(())
    }
    fn applied(&self) -> IoId {
        self.applied
    }
    fn query(&self, _: &[u8], _: &mut ResponseWriter<'_>) -> Result<(), ApplyError> {
        Ok(())
    }
    fn snapshot_chunk(&mut self, _: u64, _: &mut [u8]) -> Result<SnapshotChunk, SnapshotError> {
        Err(NO_SNAPSHOTS)
    }
    fn install_chunk(&mut self, _: IoId, _: u64, _: &[u8], _: bool) -> Result<(), SnapshotError> {
        Err(NO_SNAPSHOTS)
    }
}

/// The index of the node that leads group 0 (waits up to 10 s).
pub fn leader(nodes: &[Option<Node>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if let Some(node) = node
                && node.leader(0) == Some(node.id())
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(10));
    }
}
