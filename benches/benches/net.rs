//! The transport on loopback, next to this machine's references measured in
//! the same run:
//! - round trip of a control message (Heartbeat, 40-byte frame; reply 32
//!   bytes) between two shards pinned to different cores, vs a 64-byte
//!   blocking-socket ping-pong between two threads pinned the same way, and
//!   vs `../shared/tools/reference.sh net` (unpinned C ping-pong, iperf3);
//! - streaming of 64 KiB AppendEntries frames (records verified by the
//!   receiver, received into its "ring" buffer), next to iperf3 single
//!   stream run just before it, both pinned to cores 0 and 1 (iperf3 `-A`),
//!   then both placed by the scheduler, and a pinned blocking 64 KiB stream.
//!
//! Each run also prints ratios of measurements made back to back
//! (`ratio_*`), whose medians are steadier than ratios of medians on a noisy
//! machine.
//!
//! ```text
//! cargo bench -p ringraft-benches --bench net -- [RUNS] [reference|rtt|stream]
//! ```
//! Not a criterion bench: the figures only mean something beside the
//! references, so it prints both, run by run, and the medians.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ringraft_net::frame::{AppendEntries, Heartbeat, HeartbeatReply, Message};
use ringraft_net::{DataEvent, PeerConfig, Transport, TransportConfig};
use ringraft_wal::IoId;
use ringraft_wal::record::{encode_entry, record_bytes};

const ROUNDS: usize = 20_000;
const WARMUP_ROUNDS: usize = 1_000;
const FRAME_RECORDS_BYTES: usize = 64 << 10;
const RECORD_PAYLOAD_BYTES: usize = 4096 - 32;
/// Distinct frames the sender cycles through (its stand-in for a ring).
const RING_FRAMES: usize = 16;
const STREAM_DURATION: Duration = Duration::from_secs(3);
const SENDER_CPU: usize = 0;
const RECEIVER_CPU: usize = 1;

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET writes
    // inside it, and sched_setaffinity reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity({cpu})");
    }
}

fn p50_p99_us(mut samples_ns: Vec<u64>) -> (f64, f64) {
    samples_ns.sort_unstable();
    let at = |per_mille: usize| samples_ns[samples_ns.len() * per_mille / 1000] as f64 / 1e3;
    (at(500), at(990))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// 64-byte ping-pong with blocking sockets, threads pinned like the shards.
fn blocking_rtt() -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let echo = std::thread::spawn(move || {
        pin_to(RECEIVER_CPU);
        let mut buf = [0u8; 64];
        for _ in 0..ROUNDS + WARMUP_ROUNDS {
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
        }
    });
    let timed = std::thread::spawn(move || {
        pin_to(SENDER_CPU);
        let mut buf = [7u8; 64];
        let mut samples_ns = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS + WARMUP_ROUNDS {
            let start = Instant::now();
            client.write_all(&buf).unwrap();
            client.read_exact(&mut buf).unwrap();
            if round >= WARMUP_ROUNDS {
                samples_ns.push(start.elapsed().as_nanos() as u64);
            }
        }
        samples_ns
    });
    echo.join().unwrap();
    p50_p99_us(timed.join().unwrap())
}

/// MB/s of 64 KiB writes with blocking sockets, threads pinned like the
/// shards: what the kernel gives this placement, without any framing.
fn blocking_stream_mb_per_sec() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    let sink = std::thread::spawn(move || {
        pin_to(RECEIVER_CPU);
        let mut buf = vec![0u8; FRAME_RECORDS_BYTES];
        let mut received_bytes = 0u64;
        let start = Instant::now();
        loop {
            match server.read(&mut buf).unwrap() {
                0 => return received_bytes as f64 / start.elapsed().as_secs_f64() / 1e6,
                n => received_bytes += n as u64,
            }
        }
    });
    let source = std::thread::spawn(move || {
        pin_to(SENDER_CPU);
        let frame = vec![0xA5u8; FRAME_RECORDS_BYTES];
        let start = Instant::now();
        while start.elapsed() < STREAM_DURATION {
            client.write_all(&frame).unwrap();
        }
    });
    source.join().unwrap();
    sink.join().unwrap()
}

/// Two connected shards' configurations with their listeners.
fn pair(spin_before_park: Duration) -> [(TransportConfig, TcpListener); 2] {
    let listeners = [(); 2].map(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    let addresses = [0, 1].map(|i| listeners[i].local_addr().unwrap());
    let mut listeners = listeners.map(Some);
    [0usize, 1].map(|i| {
        let mut config = TransportConfig::new(1, i as u32 + 1, 0, addresses[i]);
        config.peers = vec![PeerConfig {
            node_id: 2 - i as u32,
            address: addresses[1 - i],
        }];
        config.msg_bytes_max = FRAME_RECORDS_BYTES;
        config.frame_bytes_max = FRAME_RECORDS_BYTES + 64;
        config.spin_before_park = spin_before_park;
        (config, listeners[i].take().unwrap())
    })
}

fn wait_up(transport: &mut Transport) {
    let start = Instant::now();
    while !(transport.outbound_up(0, ringraft_net::frame::Lane::Control)
        && transport.inbound_up(0, ringraft_net::frame::Lane::Control)
        && transport.outbound_up(0, ringraft_net::frame::Lane::Data)
        && transport.inbound_up(0, ringraft_net::frame::Lane::Data))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "lanes not up");
        transport.poll(Duration::from_millis(1)).unwrap();
    }
}

/// The spin of the `spin50us` variant (as glommio's `spin_before_park` in
/// `examples/socket_rtt.rs`).
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Heartbeat round trips between two shards on different cores.
fn transport_rtt(spin_before_park: Duration) -> (f64, f64) {
    let [config_a, config_b] = pair(spin_before_park);
    let echo = std::thread::spawn(move || {
        pin_to(RECEIVER_CPU);
        let mut b = Transport::with_listener(config_b.0, config_b.1).unwrap();
        wait_up(&mut b);
        let mut answered = 0;
        while answered < ROUNDS + WARMUP_ROUNDS {
            b.poll(POLL_WAIT).unwrap();
            while let Some((peer, message)) = b.next_control() {
                if let Message::Heartbeat(h) = message {
                    let reply = HeartbeatReply {
                        term: h.term,
                        read_context: h.read_context,
                    };
                    b.send_control(peer, Message::HeartbeatReply(reply));
                    answered += 1;
                }
            }
            b.flush();
        }
        // Let the last reply leave before the sockets close.
        b.poll(Duration::from_millis(10)).unwrap();
    });
    let timed = std::thread::spawn(move || {
        pin_to(SENDER_CPU);
        let mut a = Transport::with_listener(config_a.0, config_a.1).unwrap();
        wait_up(&mut a);
        let mut samples_ns = Vec::with_capacity(ROUNDS);
        for round in 0..(ROUNDS + WARMUP_ROUNDS) as u64 {
            let start = Instant::now();
            let heartbeat = Heartbeat {
                term: 1,
                commit: round,
                read_context: round,
            };
            a.send_control(0, Message::Heartbeat(heartbeat));
            a.flush();
            'reply: loop {
                while let Some((_, message)) = a.next_control() {
                    if matches!(message, Message::HeartbeatReply(r) if r.read_context == round) {
                        break 'reply;
                    }
                }
                a.poll(POLL_WAIT).unwrap();
            }
            if round as usize >= WARMUP_ROUNDS {
                samples_ns.push(start.elapsed().as_nanos() as u64);
            }
        }
        samples_ns
    });
    let samples_ns = timed.join().unwrap();
    echo.join().unwrap();
    p50_p99_us(samples_ns)
}

/// Frames of records, each continuing the previous one's indexes.
fn build_ring() -> Vec<(AppendEntries, Vec<u8>)> {
    let record = record_bytes(RECORD_PAYLOAD_BYTES);
    let per_frame = FRAME_RECORDS_BYTES / record;
    let payload = vec![0xA5u8; RECORD_PAYLOAD_BYTES];
    let mut index = 0u64;
    (0..RING_FRAMES)
        .map(|_| {
            let head = AppendEntries {
                term: 1,
                prev_term: 1,
                prev_index: index,
                leader_commit: 0,
            };
            let mut bytes = vec![0u8; per_frame * record];
            for chunk in bytes.chunks_mut(record) {
                index += 1;
                encode_entry(chunk, IoId::new(1, index), &payload);
            }
            (head, bytes)
        })
        .collect()
}

/// MB/s of records streamed in 64 KiB AppendEntries frames.
/// `pinned`: sender and receiver on different cores like shards; otherwise
/// wherever the scheduler puts them, like iperf3.
fn transport_stream_mb_per_sec(pinned: bool, spin_before_park: Duration) -> f64 {
    let [config_a, config_b] = pair(spin_before_park);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sink = std::thread::spawn(move || {
        if pinned {
            pin_to(RECEIVER_CPU);
        }
        let mut b = Transport::with_listener(config_b.0, config_b.1).unwrap();
        wait_up(&mut b);
        let mut ring = vec![0u8; FRAME_RECORDS_BYTES];
        // Rate between the first and the last frame received, so set-up and
        // the final wait do not count.
        let mut received_bytes = 0u64;
        let mut first_at = None;
        let mut last_at = Instant::now();
        while done_rx.try_recv().is_err() {
            match b.recv_data(0, &mut ring) {
                DataEvent::Append { records_bytes, .. } => {
                    last_at = Instant::now();
                    if first_at.is_none() {
                        first_at = Some(last_at);
                    } else {
                        received_bytes += records_bytes as u64;
                    }
                }
                DataEvent::Idle => b.poll(POLL_WAIT).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        let first_at = first_at.expect("frames arrived");
        received_bytes as f64 / (last_at - first_at).as_secs_f64() / 1e6
    });
    let source = std::thread::spawn(move || {
        if pinned {
            pin_to(SENDER_CPU);
        }
        let ring = build_ring();
        let mut a = Transport::with_listener(config_a.0, config_a.1).unwrap();
        wait_up(&mut a);
        let start = Instant::now();
        let mut next = 0;
        while start.elapsed() < STREAM_DURATION {
            if a.data_send_ready(0) {
                let (head, bytes) = &ring[next % RING_FRAMES];
                a.send_append(0, *head, &[bytes]).unwrap();
                next += 1;
            } else {
                a.poll(POLL_WAIT).unwrap();
            }
        }
        done_tx.send(()).unwrap();
    });
    source.join().unwrap();
    sink.join().unwrap()
}

/// iperf3 single stream, client and server pinned like the shards (`-A 0,1`)
/// or placed by the scheduler; NaN if iperf3 is not installed.
fn iperf3_mb_per_sec(pinned: bool) -> f64 {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let Ok(mut server) = std::process::Command::new("iperf3")
        .args(["-s", "-1", "-p", &port])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return f64::NAN;
    };
    std::thread::sleep(Duration::from_millis(500));
    let affinity = format!("{SENDER_CPU},{RECEIVER_CPU}");
    let seconds = STREAM_DURATION.as_secs().to_string();
    let mut client = std::process::Command::new("iperf3");
    client.args(["-c", "127.0.0.1", "-p", &port, "-t", &seconds, "-J"]);
    if pinned {
        client.args(["-A", &affinity]);
    }
    let output = client.output();
    let _ = server.wait();
    let Ok(output) = output else {
        return f64::NAN;
    };
    // The receiver's total: `"sum_received": { ... "bits_per_second": N`.
    let json = String::from_utf8_lossy(&output.stdout);
    let bits_per_second = json
        .find("\"sum_received\"")
        .and_then(|at| {
            let rest = &json[at..];
            let key = "\"bits_per_second\":";
            let start = rest.find(key)? + key.len();
            let number: String = rest[start..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
                .collect();
            number.parse::<f64>().ok()
        })
        .unwrap_or(f64::NAN);
    bits_per_second / 8e6
}

/// `name value` lines of the shared reference script, if it is there.
fn reference() -> Vec<(String, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/reference.sh");
    let Ok(output) = std::process::Command::new(&script).arg("net").output() else {
        println!("reference: {} not runnable", script.display());
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn print_figure(name: &str, value: f64) {
    let decimals = if name.starts_with("ratio") { 2 } else { 1 };
    println!("{name} {value:.decimals$}");
}

fn main() {
    // `cargo bench` passes `--bench`; the first number is the run count.
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    // Optional word: run only the part named `reference`, `rtt` or `stream`.
    let only = std::env::args()
        .skip(1)
        .find(|a| ["reference", "rtt", "stream"].contains(&a.as_str()));
    let wanted = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let mut table: Vec<(String, Vec<f64>)> = Vec::new();
    let mut record = |name: &str, value: f64| {
        print_figure(name, value);
        match table.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value),
            None => table.push((name.to_string(), vec![value])),
        }
    };
    // Ratios are taken within a run, between measurements made back to
    // back, so the machine's drift between runs cancels out.
    for run in 0..runs {
        println!("-- run {run}");
        let mut reference_iperf3 = f64::NAN;
        if wanted("reference") {
            for (name, value) in reference() {
                if name == "iperf3_1stream_mb_per_sec" {
                    reference_iperf3 = value;
                }
                record(&format!("reference_{name}"), value);
            }
        }
        if wanted("rtt") {
            let (blocking_p50, p99) = blocking_rtt();
            record("blocking_pinned_rtt_64b_p50_us", blocking_p50);
            record("blocking_pinned_rtt_64b_p99_us", p99);
            let (p50, p99) = transport_rtt(Duration::ZERO);
            record("transport_control_rtt_p50_us", p50);
            record("transport_control_rtt_p99_us", p99);
            record("ratio_transport_rtt_p50_to_blocking", p50 / blocking_p50);
            let (p50, p99) = transport_rtt(SPIN_BEFORE_PARK);
            record("transport_spin50us_control_rtt_p50_us", p50);
            record("transport_spin50us_control_rtt_p99_us", p99);
            record(
                "ratio_transport_spin50us_rtt_p50_to_blocking",
                p50 / blocking_p50,
            );
        }
        if wanted("stream") {
            let blocking = blocking_stream_mb_per_sec();
            record("blocking_pinned_stream_64k_mb_per_sec", blocking);
            let iperf3_pinned = iperf3_mb_per_sec(true);
            record("iperf3_pinned_1stream_mb_per_sec", iperf3_pinned);
            let pinned = transport_stream_mb_per_sec(true, Duration::ZERO);
            record("transport_stream_64k_mb_per_sec", pinned);
            record(
                "ratio_transport_stream_to_iperf3_pinned",
                pinned / iperf3_pinned,
            );
            let spinning = transport_stream_mb_per_sec(true, SPIN_BEFORE_PARK);
            record("transport_spin50us_stream_64k_mb_per_sec", spinning);
            let iperf3 = iperf3_mb_per_sec(false);
            record("iperf3_1stream_mb_per_sec", iperf3);
            let unpinned = transport_stream_mb_per_sec(false, Duration::ZERO);
            record("transport_unpinned_stream_64k_mb_per_sec", unpinned);
            record(
                "ratio_transport_unpinned_stream_to_iperf3",
                unpinned / iperf3,
            );
            if !reference_iperf3.is_nan() {
                record(
                    "ratio_transport_stream_to_reference_iperf3",
                    pinned / reference_iperf3,
                );
            }
        }
    }
    println!("-- medians over {runs} runs");
    for (name, values) in &table {
        print_figure(name, median(values.clone()));
    }
}
