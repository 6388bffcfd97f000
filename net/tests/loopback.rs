//! The transport over real loopback sockets, each node's shard on its own
//! thread. Ports are reserved (`ports`), so tests never collide and a
//! transport restarted on its port finds it free. Every wait is for an
//! observable condition, bounded by a deadline that only a broken transport
//! reaches.

// Reserved loopback ports (below the ephemeral range, one owner at a
// time), shared with the other crates' tests.
#[path = "../../tools/tests/common/ports.rs"]
mod ports;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringraft_net::frame::{
    self, AppendEntries, AppendResponse, CONTROL_FRAME_BYTES_MAX, ErrorCode, FRAME_HEADER_BYTES,
    Heartbeat, HeartbeatReply, Hello, InstallSnapshot, InstallSnapshotReply, Lane, Message,
    ReadIndex, ReadIndexReply, Vote, VoteReply,
};
use ringraft_net::{CloseReason, Counters, DataEvent, PeerConfig, Transport, TransportConfig};
use ringraft_wal::IoId;
use ringraft_wal::record::{self, record_bytes};

const CLUSTER: u64 = 0xC1;
const SHARD: u32 = 3;
/// Only a broken transport takes this long.
const DEADLINE: Duration = Duration::from_secs(20);
const TICK: Duration = Duration::from_millis(5);

/// A listener on a reserved port: some tests stop a transport and listen
/// on its port again while the other side keeps reconnecting to it. An
/// ephemeral port could meanwhile become the source port of one of those
/// reconnects (a connection to itself), and the new listen would fail.
fn listener() -> (TcpListener, SocketAddr) {
    let address = ports::addr();
    let listener = TcpListener::bind(address).unwrap();
    (listener, address)
}

fn config(node_id: u32, peers: &[(u32, SocketAddr)]) -> TransportConfig {
    let mut config = TransportConfig::new(CLUSTER, node_id, SHARD, "127.0.0.1:0".parse().unwrap());
    config.peers = peers
        .iter()
        .map(|&(node_id, address)| PeerConfig { node_id, address })
        .collect();
    config.msg_bytes_max = 64 << 10;
    config.frame_bytes_max = (64 << 10) + 64;
    config.handshake_timeout = Duration::from_millis(300);
    config.reconnect_delay_min = Duration::from_millis(5);
    config.reconnect_delay_max = Duration::from_millis(50);
    config
}

/// Polls until `done` says so; panics past the deadline.
fn drive(transport: &mut Transport, what: &str, mut done: impl FnMut(&mut Transport) -> bool) {
    let start = Instant::now();
    while !done(transport) {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not reached; {transport:?}"
        );
        transport.poll(TICK).unwrap();
    }
}

fn both_lanes_up(t: &Transport, peer: usize) -> bool {
    [Lane::Control, Lane::Data]
        .iter()
        .all(|&lane| t.outbound_up(peer, lane) && t.inbound_up(peer, lane))
}

/// A run of `count` entry records after `prev`, each with `payload_bytes`.
fn records(prev: IoId, count: u64, payload_bytes: usize) -> Vec<u8> {
    let size = record_bytes(payload_bytes);
    let mut buf = vec![0u8; size * count as usize];
    for i in 0..count {
        let payload = vec![(prev.index + i) as u8; payload_bytes];
        let id = IoId::new(prev.term.max(1), prev.index + 1 + i);
        let at = size * i as usize;
        record::encode_entry(&mut buf[at..at + size], id, &payload);
    }
    buf
}

/// Every control message kind, one each.
fn control_messages() -> Vec<Message> {
    let vote = Vote {
        term: 5,
        last_term: 4,
        last_index: 40,
        transfer: true,
    };
    let reply = VoteReply {
        term: 5,
        granted: true,
    };
    vec![
        Message::AppendResponse(AppendResponse {
            term: 5,
            index: 41,
            hint_term: 0,
            hint_index: 0,
            success: true,
        }),
        Message::Vote(vote),
        Message::PreVote(vote),
        Message::VoteReply(reply),
        Message::PreVoteReply(reply),
        Message::Heartbeat(Heartbeat {
            term: 5,
            commit: 39,
            read_context: 7,
        }),
        Message::HeartbeatReply(HeartbeatReply {
            term: 5,
            read_context: 7,
        }),
        Message::InstallSnapshotReply(InstallSnapshotReply {
            term: 5,
            snapshot_index: 30,
            next_offset: 4096,
            rejected: false,
        }),
        Message::TimeoutNow { term: 5 },
        Message::ReadIndex(ReadIndex {
            term: 5,
            read_context: 8,
        }),
        Message::ReadIndexReply(ReadIndexReply {
            term: 5,
            read_context: 8,
            index: 39,
        }),
    ]
}

/// What one side of the exchange test received.
#[derive(Debug, Default)]
struct Received {
    control: Vec<Message>,
    appends: Vec<(AppendEntries, Vec<u8>, u64)>,
    snapshot_chunks: Vec<(InstallSnapshot, Vec<u8>)>,
}

/// Sends every kind to `peer` and collects what comes back, until it has
/// every control kind, one append and one snapshot chunk.
fn exchange_everything(transport: &mut Transport, peer: usize, prev: IoId) -> Received {
    drive(transport, "lanes up", |t| both_lanes_up(t, peer));
    for message in control_messages() {
        transport.send_control(peer, message);
    }
    let run = records(prev, 3, 100);
    let (first, second) = run.split_at(record_bytes(100));
    let head = AppendEntries {
        term: 5,
        prev_term: prev.term,
        prev_index: prev.index,
        leader_commit: 2,
    };
    transport.send_append(peer, head, &[first, second]).unwrap();
    drive(transport, "data lane drained", |t| t.data_send_ready(peer));
    let snapshot = InstallSnapshot {
        term: 5,
        snapshot_term: 4,
        snapshot_index: 30,
        offset: 0,
        total_bytes: 11,
        data_crc: 0,
        last: true,
    };
    transport
        .send_snapshot_chunk(peer, snapshot, b"state bytes")
        .unwrap();
    let mut received = Received::default();
    let mut ring = vec![0u8; 64 << 10];
    let expected_control = control_messages().len();
    drive(transport, "everything received", |t| {
        while let Some((from, message)) = t.next_control() {
            assert_eq!(from, peer);
            received.control.push(message);
        }
        if t.data_ready(peer) {
            match t.recv_data(peer, &mut ring) {
                DataEvent::Append {
                    head,
                    records_bytes,
                    summary,
                } => received
                    .appends
                    .push((head, ring[..records_bytes].to_vec(), summary.entries)),
                DataEvent::SnapshotChunk { head, bytes } => received
                    .snapshot_chunks
                    .push((head, ring[..bytes].to_vec())),
                DataEvent::Idle => {}
                DataEvent::NoRoom { needed } => panic!("64 KiB is room enough, not {needed}"),
            }
        }
        received.control.len() == expected_control
            && received.appends.len() == 1
            && received.snapshot_chunks.len() == 1
    });
    received
}

#[test]
fn two_shards_exchange_every_message_kind() {
    let (listener_a, address_a) = listener();
    let (listener_b, address_b) = listener();
    let a = (config(1, &[(2, address_b)]), listener_a);
    let b = (config(2, &[(1, address_a)]), listener_b);
    // A transport is !Send: each is built on its own shard thread.
    let run = |(config, listener): (TransportConfig, TcpListener), prev: IoId| {
        move || {
            let mut transport = Transport::with_listener(config, listener).unwrap();
            let received = exchange_everything(&mut transport, 0, prev);
            // Stay up until the other side has everything too: our sends
            // are queued in the kernel, but our end must not close early.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(200) {
                transport.poll(TICK).unwrap();
            }
            (received, transport.counters().clone())
        }
    };
    let thread_a = std::thread::spawn(run(a, IoId::new(4, 10)));
    let thread_b = std::thread::spawn(run(b, IoId::new(4, 20)));
    let (from_b, counters_a) = thread_a.join().unwrap();
    let (from_a, counters_b) = thread_b.join().unwrap();
    for (received, prev) in [(from_b, IoId::new(4, 20)), (from_a, IoId::new(4, 10))] {
        assert_eq!(received.control, control_messages());
        let (head, bytes, entries) = &received.appends[0];
        assert_eq!((head.prev_term, head.prev_index), (prev.term, prev.index));
        assert_eq!(*bytes, records(prev, 3, 100), "records arrive verbatim");
        assert_eq!(*entries, 3);
        let (chunk, data) = &received.snapshot_chunks[0];
        assert_eq!((chunk.snapshot_index, chunk.last), (30, true));
        assert_eq!(data, b"state bytes");
    }
    for counters in [counters_a, counters_b] {
        assert_eq!(counters.connections_up, 4, "{counters:?}");
        assert_eq!(counters.control_sent, 11);
        assert_eq!(counters.data_frames_received, 2);
    }
}

#[test]
fn a_newer_control_message_replaces_an_unsent_older_one() {
    let (listener_a, address_a) = listener();
    let (listener_b, address_b) = listener();
    let mut a = Transport::with_listener(config(1, &[(2, address_b)]), listener_a).unwrap();
    let mut b = Transport::with_listener(config(2, &[(1, address_a)]), listener_b).unwrap();
    // One thread drives both: nothing is flushed between the two sends.
    let start = Instant::now();
    while !(both_lanes_up(&a, 0) && both_lanes_up(&b, 0)) {
        assert!(start.elapsed() < DEADLINE);
        a.poll(Duration::ZERO).unwrap();
        b.poll(TICK).unwrap();
    }
    for commit in [10, 11, 12] {
        a.send_control(
            0,
            Message::Heartbeat(Heartbeat {
                term: 2,
                commit,
                read_context: 0,
            }),
        );
    }
    a.send_control(0, Message::TimeoutNow { term: 2 });
    a.flush();
    let mut got = Vec::new();
    drive(&mut b, "control received", |t| {
        while let Some((_, message)) = t.next_control() {
            got.push(message);
        }
        got.len() >= 2
    });
    assert_eq!(
        got,
        [
            Message::Heartbeat(Heartbeat {
                term: 2,
                commit: 12,
                read_context: 0
            }),
            Message::TimeoutNow { term: 2 }
        ]
    );
    assert_eq!(a.counters().control_replaced, 2);
}

#[test]
fn a_restarted_peer_is_reconnected_by_itself() {
    let (listener_a, address_a) = listener();
    let (listener_b, address_b) = listener();
    let mut a = Transport::with_listener(config(1, &[(2, address_b)]), listener_a).unwrap();
    let b = (config(2, &[(1, address_a)]), listener_b);
    let stop = Arc::new(AtomicBool::new(false));
    // b runs on its own thread until told to stop, then is dropped (the
    // "crash"); a new b binds the same address and runs again.
    let serve = |(config, listener): (TransportConfig, TcpListener), stop: Arc<AtomicBool>| {
        move || {
            let mut b = Transport::with_listener(config, listener).unwrap();
            while !stop.load(Ordering::Relaxed) {
                b.poll(TICK).unwrap();
                while let Some((peer, message)) = b.next_control() {
                    if let Message::Heartbeat(h) = message {
                        let reply = HeartbeatReply {
                            term: h.term,
                            read_context: h.read_context,
                        };
                        b.send_control(peer, Message::HeartbeatReply(reply));
                    }
                }
            }
        }
    };
    let round_trip = |a: &mut Transport, read_context: u64| {
        drive(a, "lanes up", |t| both_lanes_up(t, 0));
        a.send_control(
            0,
            Message::Heartbeat(Heartbeat {
                term: 1,
                commit: 0,
                read_context,
            }),
        );
        drive(
            a,
            "heartbeat answered",
            |t| matches!(t.next_control(), Some((0, Message::HeartbeatReply(r))) if r.read_context == read_context),
        );
    };
    let first = std::thread::spawn(serve(b, stop.clone()));
    round_trip(&mut a, 1);
    stop.store(true, Ordering::Relaxed);
    first.join().unwrap();
    // b is gone: a notices its lanes closing.
    drive(&mut a, "lanes down", |t| !t.outbound_up(0, Lane::Control));
    let restarted = (
        config(2, &[(1, address_a)]),
        TcpListener::bind(address_b).unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let second = std::thread::spawn(serve(restarted, stop.clone()));
    round_trip(&mut a, 2);
    drive(&mut a, "every lane reconnected", |t| {
        t.counters().connections_up >= 8
    });
    stop.store(true, Ordering::Relaxed);
    second.join().unwrap();
    let counters = a.counters();
    assert_eq!(counters.connections_up, 8, "{counters:?}");
    assert!(
        counters.closed(CloseReason::PeerClosed) >= 2,
        "{counters:?}"
    );
}

/// The frame a hostile client sends, and what it expects back.
fn hello(node_id: u32, cluster_id: u64, lane: Lane) -> Vec<u8> {
    hello_with(|_| {}, node_id, cluster_id, lane)
}

fn hello_with(edit: impl Fn(&mut Hello), node_id: u32, cluster_id: u64, lane: Lane) -> Vec<u8> {
    let mut fields = Hello {
        cluster_id,
        node_id,
        shard_id: SHARD,
        version: frame::PROTOCOL_VERSION as u16,
        lane,
        auth: false,
        nonce: [0; 16],
        mac: [0; 32],
    };
    edit(&mut fields);
    let hello = Message::Hello(fields);
    let mut buf = [0u8; CONTROL_FRAME_BYTES_MAX];
    let size = frame::encode(&mut buf, &hello, 0);
    buf[..size].to_vec()
}

/// Reads frames until the server closes; returns the Error frame's code if
/// one came.
fn error_code_until_closed(stream: &mut TcpStream) -> Option<ErrorCode> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 256];
    // The server may close with our unread bytes still queued, which resets
    // the connection: a reset ends the reading like an orderly close. A
    // timeout means the server never closed.
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    let mut at = 0;
    while let Ok(Some((frame, used))) = frame::decode(&bytes[at..], 1 << 20) {
        at += used;
        if let Message::Error(e) = frame.message {
            return Some(e.code);
        }
    }
    None
}

#[test]
fn hostile_input_closes_only_its_connection() {
    // a's port is known but closed until a starts at the end, so b's dials
    // to it are refused (not left hanging in a backlog, which would time out
    // b's own handshakes and blur the counts below).
    let (listener_a, address_a) = listener();
    drop(listener_a);
    let (listener_b, address_b) = listener();
    let counters = Arc::new(Mutex::new(Counters::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let config_b = config(2, &[(1, address_a)]);
    let server = {
        let (counters, stop) = (counters.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut b = Transport::with_listener(config_b, listener_b).unwrap();
            let mut ring = vec![0u8; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                b.poll(TICK).unwrap();
                while let Some((peer, message)) = b.next_control() {
                    if let Message::Heartbeat(h) = message {
                        let reply = HeartbeatReply {
                            term: h.term,
                            read_context: h.read_context,
                        };
                        b.send_control(peer, Message::HeartbeatReply(reply));
                    }
                }
                if b.data_ready(0) {
                    b.recv_data(0, &mut ring);
                }
                *counters.lock().unwrap() = b.counters().clone();
            }
        })
    };
    let connect = || TcpStream::connect(address_b).unwrap();
    let valid = hello(1, CLUSTER, Lane::Control);

    // Refused handshakes get an Error frame that says why.
    let mut s = connect();
    s.write_all(&hello(1, 0xBAD, Lane::Control)).unwrap();
    assert_eq!(
        error_code_until_closed(&mut s),
        Some(ErrorCode::WrongCluster)
    );
    let mut s = connect();
    s.write_all(&hello(99, CLUSTER, Lane::Control)).unwrap();
    assert_eq!(
        error_code_until_closed(&mut s),
        Some(ErrorCode::UnknownNode)
    );
    let mut s = connect();
    let mut bad_version = valid.clone();
    bad_version[4] = 2;
    s.write_all(&bad_version).unwrap();
    assert_eq!(
        error_code_until_closed(&mut s),
        Some(ErrorCode::UnsupportedVersion)
    );
    let refusals = [
        (
            hello_with(|h| h.version = 2, 1, CLUSTER, Lane::Control),
            ErrorCode::UnsupportedVersion,
        ),
        (
            hello_with(|h| h.shard_id = SHARD + 1, 1, CLUSTER, Lane::Control),
            ErrorCode::WrongShard,
        ),
        (
            hello_with(|h| h.auth = true, 1, CLUSTER, Lane::Control),
            ErrorCode::AuthFailed,
        ),
    ];
    for (hello, code) in refusals {
        let mut s = connect();
        s.write_all(&hello).unwrap();
        assert_eq!(error_code_until_closed(&mut s), Some(code));
    }

    // Broken frames.
    let mut wrong_magic = valid.clone();
    wrong_magic[0] ^= 0xFF;
    let mut bad_crc = valid.clone();
    bad_crc[FRAME_HEADER_BYTES + 3] ^= 1;
    let mut unknown_kind = valid.clone();
    unknown_kind[5] = 200;
    let mut absurd_length = valid.clone();
    absurd_length[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for input in [
        &wrong_magic,
        &bad_crc,
        &unknown_kind,
        &absurd_length,
        &garbage,
    ] {
        let mut s = connect();
        s.write_all(input).unwrap();
        let code = error_code_until_closed(&mut s);
        assert!(
            matches!(code, Some(ErrorCode::Protocol | ErrorCode::FrameTooLong)),
            "{code:?}"
        );
    }

    // A truncated frame left hanging, and a connection never written to:
    // both closed by the handshake timeout.
    let mut truncated = connect();
    truncated.write_all(&valid[..valid.len() - 5]).unwrap();
    let mut silent = connect();
    assert_eq!(error_code_until_closed(&mut truncated), None);
    assert_eq!(error_code_until_closed(&mut silent), None);

    // Hostile input after a good handshake: an overlong control frame, and
    // an append whose record CRC is wrong.
    let mut s = connect();
    s.write_all(&valid).unwrap();
    let mut reply = [0u8; FRAME_HEADER_BYTES + 72];
    s.read_exact(&mut reply).unwrap();
    let mut overlong = [0u8; CONTROL_FRAME_BYTES_MAX + 8];
    let head = AppendEntries {
        term: 1,
        prev_term: 0,
        prev_index: 0,
        leader_commit: 0,
    };
    let size = frame::encode(&mut overlong, &Message::AppendEntries(head), 4096);
    s.write_all(&overlong[..size]).unwrap();
    assert_eq!(error_code_until_closed(&mut s), None);

    let mut s = connect();
    s.write_all(&hello(1, CLUSTER, Lane::Data)).unwrap();
    s.read_exact(&mut reply).unwrap();
    let mut run = records(IoId::new(1, 0), 2, 50);
    let last = run.len() - 1;
    run[last - 10] ^= 0x20;
    let mut append = vec![0u8; 64 + run.len()];
    let size = frame::encode_with_payload(&mut append, &Message::AppendEntries(head), &run);
    s.write_all(&append[..size]).unwrap();
    assert_eq!(error_code_until_closed(&mut s), None);

    // The node still answers a well-formed peer.
    let listener_a = TcpListener::bind(address_a).unwrap();
    let mut a = Transport::with_listener(config(1, &[(2, address_b)]), listener_a).unwrap();
    drive(&mut a, "lanes up", |t| both_lanes_up(t, 0));
    a.send_control(
        0,
        Message::Heartbeat(Heartbeat {
            term: 1,
            commit: 0,
            read_context: 42,
        }),
    );
    drive(
        &mut a,
        "heartbeat answered",
        |t| matches!(t.next_control(), Some((0, Message::HeartbeatReply(r))) if r.read_context == 42),
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let counters = counters.lock().unwrap().clone();
    let expect = [
        (CloseReason::WrongCluster, 1),
        (CloseReason::UnknownNode, 1),
        (CloseReason::UnsupportedVersion, 2),
        (CloseReason::WrongShard, 1),
        (CloseReason::AuthFailed, 1),
        (CloseReason::BadFrame, 4),
        (CloseReason::FrameTooLong, 2),
        (CloseReason::HandshakeTimeout, 2),
        (CloseReason::BadRecords, 1),
    ];
    for (reason, count) in expect {
        assert_eq!(counters.closed(reason), count, "{reason}: {counters:?}");
    }
}

#[test]
fn a_full_receiver_stops_the_data_lane_but_keeps_reading_control() {
    let (listener_a, address_a) = listener();
    let (listener_b, address_b) = listener();
    let mut a = Transport::with_listener(config(1, &[(2, address_b)]), listener_a).unwrap();
    let mut b = Transport::with_listener(config(2, &[(1, address_a)]), listener_b).unwrap();
    let start = Instant::now();
    while !(both_lanes_up(&a, 0) && both_lanes_up(&b, 0)) {
        assert!(start.elapsed() < DEADLINE);
        a.poll(Duration::ZERO).unwrap();
        b.poll(TICK).unwrap();
    }
    // 60 KiB of records per frame.
    let payload_bytes = 60 * 1024 - 32;
    let mut prev = IoId::new(1, 0);
    let mut frames = 0u64;
    let mut tiny = [0u8; 1024];
    // The sender fills the socket buffers while the receiver has no room.
    while a.data_send_ready(0) {
        assert!(frames < 10_000, "the data lane never pushed back");
        let run = records(prev, 1, payload_bytes);
        let head = AppendEntries {
            term: 1,
            prev_term: prev.term,
            prev_index: prev.index,
            leader_commit: 0,
        };
        a.send_append(0, head, &[&run]).unwrap();
        prev = IoId::new(1, prev.index + 1);
        frames += 1;
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
        if b.data_ready(0) {
            let needed = record_bytes(payload_bytes);
            assert_eq!(b.recv_data(0, &mut tiny), DataEvent::NoRoom { needed });
        }
    }
    // Control still flows both ways while the data lane is stuck.
    a.send_control(
        0,
        Message::Heartbeat(Heartbeat {
            term: 1,
            commit: 0,
            read_context: 5,
        }),
    );
    a.flush();
    drive(
        &mut b,
        "heartbeat through a stuck data lane",
        |t| matches!(t.next_control(), Some((0, Message::Heartbeat(h))) if h.read_context == 5),
    );
    // Room again: every frame arrives, in order, verified.
    let mut ring = vec![0u8; 64 << 10];
    let mut received = 0u64;
    let start = Instant::now();
    while received < frames {
        assert!(start.elapsed() < DEADLINE);
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::ZERO).unwrap();
        if let DataEvent::Append { summary, .. } = b.recv_data(0, &mut ring) {
            received += 1;
            assert_eq!(summary.last.index, received);
        }
    }
    assert!(a.counters().data_send_partial >= 1);
}

#[test]
fn hmac_authentication_admits_the_secret_and_refuses_a_wrong_one() {
    let pair = |secret_a: [u8; 32], secret_b: [u8; 32]| {
        let (listener_a, address_a) = listener();
        let (listener_b, address_b) = listener();
        let mut config_a = config(1, &[(2, address_b)]);
        config_a.secret = Some(secret_a);
        let mut config_b = config(2, &[(1, address_a)]);
        config_b.secret = Some(secret_b);
        let a = Transport::with_listener(config_a, listener_a).unwrap();
        let b = Transport::with_listener(config_b, listener_b).unwrap();
        (a, b)
    };
    let (mut a, mut b) = pair([7; 32], [7; 32]);
    let start = Instant::now();
    while !(both_lanes_up(&a, 0) && both_lanes_up(&b, 0)) {
        assert!(start.elapsed() < DEADLINE);
        a.poll(Duration::ZERO).unwrap();
        b.poll(TICK).unwrap();
    }
    a.send_control(0, Message::TimeoutNow { term: 9 });
    a.flush();
    drive(&mut b, "message after auth", |t| {
        matches!(t.next_control(), Some((0, Message::TimeoutNow { term: 9 })))
    });

    let (mut a, mut b) = pair([7; 32], [8; 32]);
    let start = Instant::now();
    while a.counters().closed(CloseReason::AuthFailed)
        + b.counters().closed(CloseReason::AuthFailed)
        < 4
    {
        assert!(start.elapsed() < DEADLINE, "{a:?} {b:?}");
        a.poll(Duration::ZERO).unwrap();
        b.poll(TICK).unwrap();
    }
    assert!(!a.outbound_up(0, Lane::Control) && !b.inbound_up(0, Lane::Control));
    assert_eq!(b.counters().connections_up + a.counters().connections_up, 0);
}

#[test]
fn a_refused_dialer_says_why_and_keeps_retrying() {
    let (listener_a, address_a) = listener();
    let (listener_b, address_b) = listener();
    let mut a = Transport::with_listener(config(1, &[(2, address_b)]), listener_a).unwrap();
    let mut config_b = config(2, &[(1, address_a)]);
    config_b.cluster_id = CLUSTER + 1;
    let mut b = Transport::with_listener(config_b, listener_b).unwrap();
    // Each side refuses the other's Hellos; each dialer hears why, twice
    // per lane at least (so it retried after the first refusal).
    let start = Instant::now();
    while a.counters().closed(CloseReason::RefusedByPeer) < 4
        || b.counters().closed(CloseReason::RefusedByPeer) < 4
    {
        assert!(start.elapsed() < DEADLINE, "{a:?} {b:?}");
        a.poll(Duration::ZERO).unwrap();
        b.poll(TICK).unwrap();
    }
    assert!(a.counters().closed(CloseReason::WrongCluster) >= 2);
    assert!(b.counters().closed(CloseReason::WrongCluster) >= 2);
    assert_eq!(a.counters().connections_up + b.counters().connections_up, 0);
}

#[test]
fn handshake_slots_are_bounded() {
    let (listener_b, address_b) = listener();
    let mut config_b = config(2, &[]);
    config_b.pending_connections_max = 2;
    let mut b = Transport::with_listener(config_b, listener_b).unwrap();
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(address_b).unwrap())
        .collect();
    drive(&mut b, "third connection refused", |t| {
        t.counters().closed(CloseReason::PendingFull) == 1
    });
    drive(&mut b, "the two others timed out", |t| {
        t.counters().closed(CloseReason::HandshakeTimeout) == 2
    });
    drop(silent);
}

#[test]
fn the_ring_fd_wakes_another_event_loop() {
    let (listener_a, address_a) = listener();
    let (listener_b, address_b) = listener();
    let mut a = Transport::with_listener(config(1, &[(2, address_b)]), listener_a).unwrap();
    let mut b = Transport::with_listener(config(2, &[(1, address_a)]), listener_b).unwrap();
    let start = Instant::now();
    while !(both_lanes_up(&a, 0) && both_lanes_up(&b, 0)) {
        assert!(start.elapsed() < DEADLINE);
        a.poll(Duration::ZERO).unwrap();
        b.poll(TICK).unwrap();
    }
    let ring_readable = |b: &Transport, timeout_ms: i32| {
        let mut fd = libc::pollfd {
            fd: b.ring_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut fd, 1, timeout_ms) == 1 }
    };
    // Nothing to read: armed, the ring stays quiet.
    b.poll(Duration::ZERO).unwrap();
    while b.next_control().is_some() {}
    b.poll(Duration::ZERO).unwrap();
    assert!(!ring_readable(&b, 50));
    a.send_control(0, Message::TimeoutNow { term: 4 });
    a.flush();
    assert!(ring_readable(&b, DEADLINE.as_millis() as i32));
    b.poll(Duration::ZERO).unwrap();
    assert_eq!(b.next_control(), Some((0, Message::TimeoutNow { term: 4 })));
}

#[test]
fn a_configuration_that_cannot_work_is_refused_with_its_rule() {
    let (listener_a, address_a) = listener();
    let mut bad = config(1, &[(1, address_a)]);
    let error = Transport::with_listener(bad.clone(), listener_a).unwrap_err();
    assert!(error.to_string().contains("peer node ids"), "{error}");
    bad.peers.clear();
    bad.msg_bytes_max = bad.frame_bytes_max;
    assert!(
        matches!(bad.check(), Err(ringraft_net::ConfigError(rule)) if rule.contains("msg_bytes_max"))
    );
}
