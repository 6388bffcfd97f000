//! A real follower node (WAL file, loopback TCP) fed by a scripted leader
//! speaking the wire protocol: runs that follow its log (received straight
//! into the ring), runs that overlap it (duplicates), and a new term's run
//! that conflicts with its suffix (truncation). After a restart, the
//! follower's WAL holds exactly the leader's log.

// Reserved loopback ports (below the ephemeral range, one owner at a
// time), shared with the other crates' tests.
#[path = "../../tools/tests/common/ports.rs"]
mod ports;

use std::time::{Duration, Instant};

use ringraft_engine::shard::{
    ApplyError, Entry, Node, NodeConfig, ResponseSlots, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
use ringraft_net::frame::{AppendEntries, AppendResponse, Lane, Message};
use ringraft_net::{PeerConfig, Transport, TransportConfig};
use ringraft_wal::record::{self, RecordKind};
use ringraft_wal::{IoId, OpenOptions, Wal};

/// Only a broken follower takes this long.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Nothing {
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
        Err(SnapshotError::UnexpectedOffset {
            expected: 0,
            got: 0,
        })
    }
    fn install_chunk(&mut self, _: IoId, _: u64, _: &[u8], _: bool) -> Result<(), SnapshotError> {
        Err(SnapshotError::UnexpectedOffset {
            expected: 0,
            got: 0,
        })
    }
}

/// A payload that names its entry; sizes vary from empty to 40 KB.
fn payload(id: IoId) -> Vec<u8> {
    let len = match id.index % 7 {
        0 => 40_000,
        1 => 0,
        _ => (id.index as usize * 131) % 3000,
    };
    (0..len)
        .map(|i| (id.term as usize * 7 + id.index as usize * 31 + i) as u8)
        .collect()
}

/// The records of `log[from..=to]` (log[i - 1] is entry i).
fn run(log: &[IoId], from: u64, to: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for &id in &log[from as usize - 1..to as usize] {
        let payload = payload(id);
        let mut record = vec![0u8; record::record_bytes(payload.len())];
        record::encode_entry(&mut record, id, &payload);
        bytes.extend_from_slice(&record);
    }
    bytes
}

/// Node 2 played by the test: one transport, the leader's side of the protocol.
struct ScriptedLeader {
    transport: Transport,
}

impl ScriptedLeader {
    fn poll_until(&mut self, what: &str, mut done: impl FnMut(&mut Transport) -> bool) {
        let start = Instant::now();
        while !done(&mut self.transport) {
            assert!(start.elapsed() < DEADLINE, "{what}: not reached");
            self.transport.poll(Duration::from_millis(2)).unwrap();
        }
    }

    /// Sends an append of `log[prev.index + 1..=last]` under `term` and
    /// returns the follower's answer: a refusal, or the ack of `last` once
    /// durable (acks of earlier writes may come first).
    fn append(&mut self, term: u64, log: &[IoId], prev: IoId, last: u64) -> AppendResponse {
        let bytes = run(log, prev.index + 1, last);
        let head = AppendEntries {
            term,
            prev_term: prev.term,
            prev_index: prev.index,
            leader_commit: 0,
        };
        self.poll_until("data lane ready", |t| t.data_send_ready(0));
        self.transport.send_append(0, head, &[&bytes]).unwrap();
        self.transport.flush();
        let mut answer = None;
        self.poll_until("append answered", |t| {
            while let Some((_, message)) = t.next_control() {
                if let Message::AppendResponse(response) = message
                    && (!response.success || response.index >= last)
                {
                    answer = Some(response);
                }
            }
            answer.is_some()
        });
        answer.unwrap()
    }
}

#[test]
fn a_follower_log_matches_the_leader_after_overlaps_and_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let (follower_addr, leader_addr) = (ports::addr(), ports::addr());
    let peers = vec![(1, follower_addr), (2, leader_addr)];
    let mut config = NodeConfig::new(1, peers, 1, dir.path().join("n1"));
    config.wal.capacity_bytes = 16 << 20;
    config.wal.ring_bytes = 4 << 20;
    config.wal.inflight_bytes_max = 1 << 20;
    config.wal.tuning.read_buffer_bytes = 256 << 10;
    config.wal.tuning.flush_io_bytes_max = 256 << 10;
    config.pin_cores = false;
    config.spread_leaders = false;
    // The scripted leader sends no heartbeats: no election meanwhile.
    config.raft.election_timeout_ticks = 100_000;
    let wal_path = config.data_dir.join("shard-0.wal");
    let node = Node::start(config, vec![Nothing::default()]).unwrap();

    let mut transport_config = TransportConfig::new(1, 2, 0, leader_addr);
    transport_config.peers = vec![PeerConfig {
        node_id: 1,
        address: follower_addr,
    }];
    transport_config.reconnect_delay_min = Duration::from_millis(5);
    transport_config.reconnect_delay_max = Duration::from_millis(50);
    let mut leader = ScriptedLeader {
        transport: Transport::new(transport_config).unwrap(),
    };
    leader.poll_until("lanes up", |t| {
        t.outbound_up(0, Lane::Data) && t.inbound_up(0, Lane::Control)
    });

    // Term 1: entries 1..=50, sent in runs that follow the follower's log.
    let mut log: Vec<IoId> = (1..=50).map(|i| IoId::new(1, i)).collect();
    let mut prev = IoId::ZERO;
    for last in [1, 20, 33, 40] {
        let answer = leader.append(1, &log, prev, last);
        assert!(answer.success && answer.index == last, "{answer:?}");
        prev = log[last as usize - 1];
    }
    // Overlaps: 31..=50 after (1, 30) (ten duplicates), then all of it again.
    let answer = leader.append(1, &log, log[29], 50);
    assert!(answer.success && answer.index == 50, "{answer:?}");
    let answer = leader.append(1, &log, IoId::ZERO, 50);
    assert!(answer.success && answer.index == 50, "{answer:?}");

    // Term 2: the new leader kept 1..=45 and wrote its own 46..; the
    // follower's 46..=50 of term 1 conflict and are truncated.
    log.truncate(45);
    log.extend((46..=120).map(|i| IoId::new(2, i)));
    let answer = leader.append(2, &log, log[44], 60);
    assert!(answer.success && answer.index == 60, "{answer:?}");
    // A gap is refused and changes nothing.
    let answer = leader.append(2, &log, log[69], 75);
    assert!(!answer.success, "{answer:?}");
    // Then runs that follow again, some of them large (40 KB entries).
    let mut prev = log[59];
    for last in [61, 75, 98, 99, 120] {
        let answer = leader.append(2, &log, prev, last);
        assert!(answer.success && answer.index == last, "{answer:?}");
        prev = log[last as usize - 1];
    }
    let status = node.status();
    assert_eq!(status[0].last_index, 120);
    assert_eq!(status[0].term, 2);
    node.stop().unwrap();

    // The follower's WAL, reopened: exactly the leader's log.
    let options = OpenOptions {
        read_only: true,
        tuning: ringraft_wal::Tuning {
            read_buffer_bytes: 256 << 10,
            flush_io_bytes_max: 256 << 10,
            ..ringraft_wal::Tuning::default()
        },
        ..OpenOptions::default()
    };
    let mut wal = Wal::open(&wal_path, &options).unwrap();
    assert_eq!(wal.last_id(), IoId::new(2, 120));
    let mut next = 1;
    while next <= 120 {
        let view = wal.read(next, 128 << 10).unwrap();
        assert!(!view.is_empty(), "entry {next} missing");
        for record in view.records() {
            let record = record.unwrap();
            if record.header.kind == RecordKind::Padding {
                continue;
            }
            let expected = log[next as usize - 1];
            assert_eq!(record.header.io_id(), expected);
            assert_eq!(record.payload, &payload(expected)[..], "payload of {next}");
            next += 1;
        }
    }
}
