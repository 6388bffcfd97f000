//! A real follower node (WAL file, loopback TCP) fed by scripted leaders
//! speaking the wire protocol: runs that follow its log (received straight
//! into the ring), runs that overlap it (duplicates), a new term's run that
//! conflicts with its suffix (truncation), and a stale leader whose
//! half-received frame sits in the ring when a new term begins. After a
//! restart, the follower's WAL holds exactly the leaders' log.

mod common;
use common::{Nothing, ports};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringraft_engine::shard::{Node, NodeConfig};
use ringraft_net::frame::{
    self, AppendEntries, AppendResponse, CONTROL_FRAME_BYTES_MAX, Heartbeat, Hello, Lane, Message,
};
use ringraft_net::{PeerConfig, Transport, TransportConfig};
use ringraft_wal::record::{self, RecordKind};
use ringraft_wal::{IoId, OpenOptions, Wal};

/// Only a broken follower takes this long.
const DEADLINE: Duration = Duration::from_secs(20);

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

fn start_follower(
    peers: Vec<(u64, SocketAddr)>,
    data_dir: std::path::PathBuf,
) -> (Node, std::path::PathBuf) {
    let mut config = NodeConfig::new(1, peers, 1, data_dir);
    config.wal.capacity_bytes = 16 << 20;
    config.wal.ring_bytes = 4 << 20;
    config.wal.inflight_bytes_max = 1 << 20;
    config.wal.tuning.read_buffer_bytes = 256 << 10;
    config.wal.tuning.flush_io_bytes_max = 256 << 10;
    config.pin_cores = false;
    config.spread_leaders = false;
    // The scripted leaders send no regular heartbeats: no election meanwhile.
    config.raft.election_timeout_ticks = 100_000;
    let wal_path = config.data_dir.join("shard-0.wal");
    (
        Node::start(config, vec![Nothing::default()]).unwrap(),
        wal_path,
    )
}

fn scripted_leader(id: u32, address: SocketAddr, follower: SocketAddr) -> ScriptedLeader {
    let mut transport_config = TransportConfig::new(1, id, 0, address);
    transport_config.peers = vec![PeerConfig {
        node_id: 1,
        address: follower,
    }];
    transport_config.reconnect_delay_min = Duration::from_millis(5);
    transport_config.reconnect_delay_max = Duration::from_millis(50);
    let mut leader = ScriptedLeader {
        transport: Transport::new(transport_config).unwrap(),
    };
    leader.poll_until("lanes up", |t| {
        t.outbound_up(0, Lane::Data) && t.inbound_up(0, Lane::Control)
    });
    leader
}

/// Reopens the follower's WAL and checks it holds exactly `log`.
fn assert_wal_holds(wal_path: &std::path::Path, log: &[IoId]) {
    let options = OpenOptions {
        read_only: true,
        tuning: ringraft_wal::Tuning {
            read_buffer_bytes: 256 << 10,
            flush_io_bytes_max: 256 << 10,
            ..ringraft_wal::Tuning::default()
        },
        ..OpenOptions::default()
    };
    let mut wal = Wal::open(wal_path, &options).unwrap();
    let last = log.len() as u64;
    assert_eq!(wal.last_id(), log[log.len() - 1]);
    let mut next = 1;
    while next <= last {
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

/// A data frame of `log[prev.index + 1..=last]` under `term`, as bytes.
fn append_frame(term: u64, log: &[IoId], prev: IoId, last: u64) -> Vec<u8> {
    let run = run(log, prev.index + 1, last);
    let head = AppendEntries {
        term,
        prev_term: prev.term,
        prev_index: prev.index,
        leader_commit: 0,
    };
    let mut bytes = vec![0u8; run.len() + 256];
    let size = frame::encode_with_payload(&mut bytes, &Message::AppendEntries(head), &run);
    bytes.truncate(size);
    bytes
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "{what}: not reached");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stale_leaders_partial_frame_in_the_ring_is_dropped_for_the_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (follower_addr, old_addr, new_addr) = (ports::addr(), ports::addr(), ports::addr());
    let peers = vec![(1, follower_addr), (2, old_addr), (3, new_addr)];
    let (node, wal_path) = start_follower(peers, dir.path().join("n1"));

    // Node 2, leader of term 1, speaks raw bytes on its data lane.
    let mut old = TcpStream::connect(follower_addr).unwrap();
    let hello = Message::Hello(Hello {
        cluster_id: 1,
        node_id: 2,
        shard_id: 0,
        version: frame::PROTOCOL_VERSION as u16,
        lane: Lane::Data,
        auth: false,
        nonce: [0; 16],
        mac: [0; 32],
    });
    let mut buf = [0u8; CONTROL_FRAME_BYTES_MAX];
    let size = frame::encode(&mut buf, &hello, 0);
    old.write_all(&buf[..size]).unwrap();
    let mut reply = vec![0u8; size];
    old.read_exact(&mut reply).unwrap();
    let term_1: Vec<IoId> = (1..=20).map(|i| IoId::new(1, i)).collect();
    old.write_all(&append_frame(1, &term_1, IoId::ZERO, 5))
        .unwrap();
    wait_for("entries 1..=5 appended", || {
        node.status()[0].last_index == 5
    });
    // Then half of a frame that follows the log: it lands in lent ring memory.
    let frame = append_frame(1, &term_1, term_1[4], 20);
    old.write_all(&frame[..frame.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    // Node 3 wins term 2: its heartbeat makes node 2's partial frame stale;
    // the follower drops it (closing node 2's lane) before anything else.
    let mut new = scripted_leader(3, new_addr, follower_addr);
    new.transport.send_control(
        0,
        Message::Heartbeat(Heartbeat {
            term: 2,
            commit: 0,
            read_context: 0,
        }),
    );
    new.poll_until("term 2 seen", |_| node.status()[0].term == 2);
    old.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(old.read(&mut byte), Ok(0) | Err(_)),
        "the stale partial frame's lane is closed"
    );
    // The rest of the stale frame, sent anyway, goes nowhere.
    let _ = old.write_all(&frame[frame.len() / 2..]);

    // Term 2's log after (1, 5) lands in place in the same ring memory.
    let mut log = term_1[..5].to_vec();
    log.extend((6..=40).map(|i| IoId::new(2, i)));
    let mut prev = log[4];
    for last in [12, 30, 40] {
        let answer = new.append(2, &log, prev, last);
        assert!(answer.success && answer.index == last, "{answer:?}");
        prev = log[last as usize - 1];
    }
    assert_eq!(node.status()[0].last_index, 40);
    node.stop().unwrap();
    assert_wal_holds(&wal_path, &log);
}

#[test]
fn a_follower_log_matches_the_leader_after_overlaps_and_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let (follower_addr, leader_addr) = (ports::addr(), ports::addr());
    let peers = vec![(1, follower_addr), (2, leader_addr)];
    let (node, wal_path) = start_follower(peers, dir.path().join("n1"));
    let mut leader = scripted_leader(2, leader_addr, follower_addr);

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
    assert_wal_holds(&wal_path, &log);
}
