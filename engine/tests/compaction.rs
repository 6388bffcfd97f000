//! Compaction with three in-process nodes (real WAL files of 8 MiB, loopback
//! TCP) and a state machine of 64 registers whose snapshot spans several
//! chunks (built one chunk per loop turn): twice the WAL's capacity of
//! proposals all commit; a node stopped while the others purged past
//! its log comes back through a snapshot, catches up and, leading again,
//! reads the same registers as the writers expect.

mod common;
use common::{leader, start_all, three_peers};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringraft_engine::shard::{
    ApplyError, Entry, Node, NodeConfig, NodeError, RequestError, ResponseSlots, ResponseWriter,
    ShardError, SnapshotChunk, SnapshotError, SnapshotHeader, StateMachine,
};
use ringraft_wal::IoId;

const REGISTERS: usize = 64;
const VALUE_BYTES: usize = 4000;
const WRITERS: usize = 4;
const WAL_BYTES: u64 = 8 << 20;

/// 64 registers; an entry `[r, value..]` sets register r. The state's
/// bytes (also the snapshot and the query reply) are each register as
/// `len u16 LE | value`.
#[derive(Default)]
struct Registers {
    values: Vec<Vec<u8>>,
    applied: IoId,
    /// The bytes of the snapshot being built and its id.
    building: Option<(IoId, Vec<u8>)>,
    incoming: Vec<u8>,
}

fn encode(values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

impl Registers {
    fn new() -> Registers {
        Registers {
            values: vec![Vec::new(); REGISTERS],
            ..Registers::default()
        }
    }
}

impl StateMachine for Registers {
    fn response_bytes_max(&self) -> usize {
        8
    }
    fn apply<'a, I: Iterator<Item = Entry<'a>>>(
        &mut self,
        entries: I,
        out: &mut ResponseSlots,
    ) -> Result<(), ApplyError> {
        for e in entries {
            if let Some((&r, value)) = e.payload.split_first() {
                self.values[usize::from(r) % REGISTERS] = value.to_vec();
            }
            self.applied = e.id;
            out.writer(e.id).write(&e.id.index.to_le_bytes()).unwrap();
        }
        Ok(())
    }
    fn applied(&self) -> IoId {
        self.applied
    }
    fn query(&self, _: &[u8], reply: &mut ResponseWriter<'_>) -> Result<(), ApplyError> {
        reply
            .write(&encode(&self.values))
            .map_err(|_| ApplyError::ReplyTooLarge)
    }
    fn snapshot_chunk(
        &mut self,
        offset: u64,
        out: &mut [u8],
    ) -> Result<SnapshotChunk, SnapshotError> {
        if offset == 0 {
            self.building = Some((self.applied, encode(&self.values)));
        }
        let Some((snapshot, bytes)) = &self.building else {
            return Err(SnapshotError::UnexpectedOffset {
                expected: 0,
                got: offset,
            });
        };
        if *snapshot != self.applied {
            return Err(SnapshotError::StateChanged {
                snapshot: *snapshot,
                applied: self.applied,
            });
        }
        let start = offset as usize;
        let len = (bytes.len() - start).min(out.len());
        out[..len].copy_from_slice(&bytes[start..start + len]);
        Ok(SnapshotChunk {
            snapshot: *snapshot,
            bytes: len,
            done: start + len == bytes.len(),
        })
    }
    fn install_chunk(
        &mut self,
        snapshot: IoId,
        offset: u64,
        chunk: &[u8],
        done: bool,
    ) -> Result<(), SnapshotError> {
        if offset == 0 {
            self.incoming.clear();
        }
        if offset != self.incoming.len() as u64 {
            return Err(SnapshotError::UnexpectedOffset {
                expected: self.incoming.len() as u64,
                got: offset,
            });
        }
        self.incoming.extend_from_slice(chunk);
        if done {
            let mut values = Vec::new();
            let mut rest = &self.incoming[..];
            while let Some((len, tail)) = rest.split_first_chunk::<2>() {
                let len = usize::from(u16::from_le_bytes(*len));
                let value = tail.get(..len).ok_or(SnapshotError::Malformed { offset })?;
                values.push(value.to_vec());
                rest = &tail[len..];
            }
            if values.len() != REGISTERS || !rest.is_empty() {
                return Err(SnapshotError::Malformed { offset });
            }
            self.values = values;
            self.applied = snapshot;
        }
        Ok(())
    }
}

struct StderrLogger;
impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "{:?} {} {}",
                std::thread::current().name(),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}
static LOGGER: StderrLogger = StderrLogger;

/// Starts node `id`, retrying while its peer port is still taken (a
/// stopped node's port, in the ephemeral range, can be held for a moment
/// by another node's reconnect attempts).
fn start(id: u64, peers: &[(u64, SocketAddr)], dir: &Path) -> Node {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_start(id, peers, dir) {
            Ok(node) => return node,
            Err(NodeError::Listen { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("node {id}: {error}"),
        }
    }
}

fn try_start(id: u64, peers: &[(u64, SocketAddr)], dir: &Path) -> Result<Node, NodeError> {
    Node::start(config(id, peers, dir), vec![Registers::new()])
}

fn config(id: u64, peers: &[(u64, SocketAddr)], dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(id, peers.to_vec(), 1, dir.join(format!("n{id}")));
    // The smallest WAL whose ring can take a whole received frame (1 MiB)
    // with the runtime's margin.
    config.wal.capacity_bytes = WAL_BYTES;
    config.wal.ring_bytes = WAL_BYTES / 2;
    config.wal.inflight_bytes_max = WAL_BYTES / 4 - 4096;
    // 16 KiB chunks: the ~256 KiB state is a snapshot of 16 chunks, built
    // one per loop turn and sent one per round trip.
    config.raft.msg_bytes_max = 16 << 10;
    config.snapshot.build_chunks_per_turn_max = 1;
    config.pin_cores = false;
    config
}

fn propose(nodes: &[Option<Node>], payload: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reply = Vec::new();
    loop {
        let at = leader(nodes);
        match nodes[at].as_ref().unwrap().propose(0, payload, &mut reply) {
            Ok(()) => return,
            // Busy: refused during a leadership transfer (or, were the log
            // never purged, for good: then the deadline fails the test).
            Err(RequestError::NotLeader { .. } | RequestError::Busy) => {}
            Err(error) => panic!("propose: {error}"),
        }
        assert!(Instant::now() < deadline, "a proposal never committed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `rounds` writes to every register, by WRITERS threads (each owns a
/// range of registers, so the final value of each is known).
fn write(nodes: &[Option<Node>], expected: &mut [Vec<u8>], rounds: usize, round0: usize) {
    let per_writer = REGISTERS / WRITERS;
    std::thread::scope(|scope| {
        for (w, values) in expected.chunks_mut(per_writer).enumerate() {
            scope.spawn(move || {
                for round in round0..round0 + rounds {
                    for (k, value) in values.iter_mut().enumerate() {
                        let r = w * per_writer + k;
                        let mut payload = vec![r as u8];
                        payload.extend(format!("{r}:{round}:").bytes());
                        payload.resize(VALUE_BYTES + 1, b'a' + (round % 26) as u8);
                        propose(nodes, &payload);
                        *value = payload[1..].to_vec();
                    }
                }
            });
        }
    });
}

fn snapshot_of(dir: &Path, id: u64) -> Option<SnapshotHeader> {
    let bytes = std::fs::read(dir.join(format!("n{id}/shard-0.snap"))).ok()?;
    SnapshotHeader::decode(bytes.get(..64)?.try_into().unwrap()).ok()
}

#[test]
fn a_node_behind_the_purge_point_catches_up_through_a_multi_chunk_snapshot() {
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info));
    let dir = tempfile::tempdir().unwrap();
    let peers = three_peers();
    let mut nodes = start_all(&peers, dir.path(), start);
    let mut expected = vec![Vec::new(); REGISTERS];

    // Twice the WAL file's worth of entries: every proposal commits.
    let rounds = (2 * WAL_BYTES) as usize / (REGISTERS * (VALUE_BYTES + 40)) + 1;
    write(&nodes, &mut expected, rounds, 0);
    for id in 1..=3 {
        assert!(
            snapshot_of(dir.path(), id).is_some(),
            "node {id} wrote no snapshot"
        );
    }

    // Node 1 (the group's preferred leader) stops; the others go on past
    // its log's end and purge it.
    let stopped = nodes[0].as_ref().unwrap().status()[0].last_index;
    nodes[0].take().unwrap().stop().unwrap();
    write(&nodes, &mut expected, rounds, rounds);
    let purged_to = (2..=3)
        .map(|id| snapshot_of(dir.path(), id).unwrap().snapshot.index)
        .min()
        .unwrap();
    assert!(
        purged_to > stopped,
        "the others purged to {purged_to}, node 1 stopped at {stopped}"
    );

    // Back, it can only catch up through a snapshot; caught up, it is
    // handed the leadership and reads what the writers wrote.
    nodes[0] = Some(start(1, &peers, dir.path()));
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes[0].as_ref().unwrap().leader(0) != Some(1) {
        assert!(Instant::now() < deadline, "node 1 never led again");
        std::thread::sleep(Duration::from_millis(10));
    }
    let installed = snapshot_of(dir.path(), 1).unwrap().snapshot.index;
    assert!(installed >= purged_to, "node 1 holds snapshot {installed}");
    let mut reply = Vec::new();
    nodes[0]
        .as_ref()
        .unwrap()
        .read_index(0, b"", &mut reply)
        .unwrap();
    assert!(reply == encode(&expected), "node 1's registers differ");
    for node in nodes.into_iter().flatten() {
        node.stop().unwrap();
    }

    // A snapshot file cut short is refused at start, naming the file.
    let path = dir.path().join("n2/shard-0.snap");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(file.metadata().unwrap().len() - 1).unwrap();
    // Fresh ports: only the snapshot is under test here.
    let peers = three_peers();
    let error = match try_start(2, &peers, dir.path()) {
        Ok(_) => panic!("a node started on a damaged snapshot"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(&path.display().to_string()) && error.contains("damaged snapshot"),
        "{error}"
    );
}

/// A ring that cannot hold a whole peer frame (1 MiB) twice over would
/// never let the node receive an entry as a follower: the node refuses to
/// start and names both sizes, instead of running and never committing.
#[test]
fn a_ring_too_small_to_receive_a_frame_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let peers = three_peers();
    let mut small = config(1, &peers, dir.path());
    // A WAL this small needs smaller writes and file reads to be valid;
    // the check is the node's own, about the peer frames it receives.
    small.wal.ring_bytes = 2 << 20;
    small.wal.inflight_bytes_max = (1 << 20) - 4096;
    small.wal.tuning.flush_io_bytes_max = 256 << 10;
    small.wal.tuning.read_buffer_bytes = 256 << 10;
    let error = match Node::start(small, vec![Registers::new()]) {
        Ok(_) => panic!("a node started with a 2 MiB ring"),
        Err(error) => error,
    };
    assert!(
        matches!(
            error,
            NodeError::Shard(ShardError::RingTooSmall {
                ring_bytes: 0x20_0000,
                ..
            })
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("ring memory of 2097152 bytes") && text.contains("frame_bytes_max 1048"),
        "{text}"
    );
    // The same node with the smallest ring that receives a frame starts.
    let mut enough = config(1, &peers, dir.path());
    enough.wal.capacity_bytes = 16 << 20;
    enough.wal.ring_bytes = 4 << 20;
    std::fs::remove_dir_all(dir.path().join("n1")).unwrap();
    let node = Node::start(enough, vec![Registers::new()]).expect("a 4 MiB ring starts");
    node.stop().unwrap();
}
