//! The testing-only data-lane throttles: a throttled node takes (or sends)
//! data frames no faster than its budget, while its control lane keeps
//! delivering heartbeats at once.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use ringraft_net::frame::{AppendEntries, Heartbeat, Lane, Message};
use ringraft_net::{DataEvent, PeerConfig, Transport, TransportConfig};
use ringraft_wal::IoId;
use ringraft_wal::record::{self, record_bytes};

const DEADLINE: Duration = Duration::from_secs(20);
const FRAMES: u64 = 8;
const PAYLOAD_BYTES: usize = 32 << 10;
const RATE_BYTES_PER_SEC: u64 = 256 << 10;

fn config(node_id: u32, peer: (u32, SocketAddr)) -> TransportConfig {
    let mut config = TransportConfig::new(7, node_id, 0, "127.0.0.1:0".parse().unwrap());
    config.peers = vec![PeerConfig {
        node_id: peer.0,
        address: peer.1,
    }];
    config.msg_bytes_max = 64 << 10;
    config.frame_bytes_max = (64 << 10) + 64;
    config.reconnect_delay_min = Duration::from_millis(5);
    config.reconnect_delay_max = Duration::from_millis(50);
    config
}

/// Node 1 (sender) and node 2 (receiver); `recv_rate` throttles node 2's
/// reads, `send_rate` node 1's sends to node 2.
fn pair(recv_rate: u64, send_rate: u64) -> (Transport, Transport) {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let mut ca = config(1, (2, ab));
    ca.fault_data_send_bytes_per_sec = send_rate;
    ca.fault_data_send_node = Some(2);
    let a = Transport::with_listener(ca, la).unwrap();
    let mut cb = config(2, (1, aa));
    cb.fault_data_recv_bytes_per_sec = recv_rate;
    let b = Transport::with_listener(cb, lb).unwrap();
    (a, b)
}

fn floor() -> Duration {
    // The first frame is free; each later one waits for the previous one's cost.
    Duration::from_secs_f64(
        ((FRAMES - 1) * record_bytes(PAYLOAD_BYTES) as u64) as f64 / RATE_BYTES_PER_SEC as f64,
    )
}

/// Sends FRAMES appends from `a` to `b` and a heartbeat every loop turn;
/// returns how long `b` took to receive them all and how many heartbeats
/// arrived meanwhile.
fn transfer(a: &mut Transport, b: &mut Transport) -> (Duration, usize) {
    let start = Instant::now();
    let up = |t: &Transport| {
        [Lane::Control, Lane::Data]
            .iter()
            .all(|&l| t.outbound_up(0, l) && t.inbound_up(0, l))
    };
    while !(up(a) && up(b)) {
        assert!(start.elapsed() < DEADLINE, "lanes not up");
        a.poll(Duration::from_millis(1)).unwrap();
        b.poll(Duration::from_millis(1)).unwrap();
    }
    let size = record_bytes(PAYLOAD_BYTES);
    let mut run = vec![0u8; size];
    let mut dst = vec![0u8; 64 << 10];
    let (mut sent, mut received, mut heartbeats) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while received < FRAMES {
        assert!(start.elapsed() < DEADLINE, "only {received} frames arrived");
        if sent < FRAMES && a.data_send_ready(0) {
            let prev = IoId::new(1, sent);
            record::encode_entry(
                &mut run,
                IoId::new(1, sent + 1),
                &[sent as u8; PAYLOAD_BYTES],
            );
            let head = AppendEntries {
                term: 1,
                prev_term: prev.term,
                prev_index: prev.index,
                leader_commit: 0,
            };
            a.send_append(0, head, &[&run]).unwrap();
            sent += 1;
        }
        a.send_control(
            0,
            Message::Heartbeat(Heartbeat {
                term: 1,
                commit: 0,
                read_context: 0,
            }),
        );
        a.flush();
        a.poll(Duration::ZERO).unwrap();
        b.poll(Duration::from_millis(2)).unwrap();
        while let Some((_, message)) = b.next_control() {
            heartbeats += usize::from(matches!(message, Message::Heartbeat(_)));
        }
        while b.data_ready(0) {
            match b.recv_data(0, &mut dst) {
                DataEvent::Append { summary, .. } => {
                    received += 1;
                    assert_eq!(summary.last, IoId::new(1, received));
                }
                DataEvent::Idle => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    (start.elapsed(), heartbeats)
}

#[test]
fn a_throttled_data_lane_is_read_at_its_rate_while_heartbeats_flow() {
    let (mut a, mut b) = pair(RATE_BYTES_PER_SEC, 0);
    let (took, heartbeats) = transfer(&mut a, &mut b);
    let floor = floor();
    assert!(
        took >= floor,
        "{FRAMES} frames in {took:?}, floor {floor:?}"
    );
    // Heartbeats were not held behind the throttled data: dozens arrived.
    assert!(
        heartbeats >= 50,
        "{heartbeats} heartbeats in {took:?} of throttling"
    );

    // Lifted at run time: the same transfer goes at loopback speed.
    b.set_fault_data_recv_bytes_per_sec(0);
    let (fast, _) = transfer(&mut a, &mut b);
    assert!(fast < floor / 2, "unthrottled took {fast:?}");
}

#[test]
fn a_throttled_sender_holds_data_frames_back_but_not_heartbeats() {
    let (mut a, mut b) = pair(0, RATE_BYTES_PER_SEC);
    let (took, heartbeats) = transfer(&mut a, &mut b);
    let floor = floor();
    assert!(
        took >= floor,
        "{FRAMES} frames in {took:?}, floor {floor:?}"
    );
    assert!(
        heartbeats >= 50,
        "{heartbeats} heartbeats in {took:?} of throttling"
    );
    // The throttle is for node 2 only; lifting it restores full speed.
    a.set_fault_data_send_bytes_per_sec(RATE_BYTES_PER_SEC, Some(3));
    let (fast, _) = transfer(&mut a, &mut b);
    assert!(
        fast < floor / 2,
        "a throttle for node 3 slowed node 2: {fast:?}"
    );
}
