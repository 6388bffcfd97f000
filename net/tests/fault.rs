//! The testing-only data-lane receive throttle: a throttled node takes data
//! frames no faster than its budget (TCP pushes back on the sender), while
//! its control lane keeps delivering heartbeats at once.

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

fn pair(rate: u64) -> (Transport, Transport) {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = Transport::with_listener(config(1, (2, ab)), la).unwrap();
    let mut cb = config(2, (1, aa));
    cb.fault_data_recv_bytes_per_sec = rate;
    let b = Transport::with_listener(cb, lb).unwrap();
    (a, b)
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
    let (mut a, mut b) = pair(RATE_BYTES_PER_SEC);
    let (took, heartbeats) = transfer(&mut a, &mut b);
    // The first frame is free; each later one waits for the previous one's cost.
    let floor = Duration::from_secs_f64(
        ((FRAMES - 1) * record_bytes(PAYLOAD_BYTES) as u64) as f64 / RATE_BYTES_PER_SEC as f64,
    );
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
