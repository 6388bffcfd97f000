//! Which way of driving TCP sockets comes closest to plain blocking sockets?
//!
//! Measures, in the same run, the round trip of a 64-byte message between two
//! threads pinned to different cores over loopback:
//! - `blocking`: std blocking sockets (the reference);
//! - `glommio`, `glommio-spin`, `glommio-latency`: glommio 0.9 TCP streams,
//!   without and with `spin_before_park`, and inside a latency task queue;
//! - `uring-ops`: the `io-uring` crate, `Send` and `Recv` operations submitted
//!   from the thread's own loop and waited for with `submit_and_wait`;
//! - `uring-ready`: nonblocking `send`/`recv` syscalls from the thread's own
//!   loop, waiting on io_uring `PollAdd` only when a read would block.
//!
//! Then the streaming throughput of 64 KiB frames for the blocking and the
//! io_uring ways. Each run measures every way once; the medians over runs are
//! printed last.
//!
//! ```text
//! cargo run --release -p ringraft-net --example socket_rtt -- [ROUNDS] [RUNS]
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use io_uring::{IoUring, opcode, types};

const MESSAGE_BYTES: usize = 64;
const WARMUP_ROUNDS: usize = 1000;
const STREAM_FRAME_BYTES: usize = 64 << 10;
const STREAM_DURATION: Duration = Duration::from_secs(2);
const GLOMMIO_STALL_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;

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

fn connected_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// Percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted_ns: &[u64], per_mille: usize) -> f64 {
    sorted_ns[(sorted_ns.len() * per_mille / 1000).min(sorted_ns.len() - 1)] as f64 / 1e3
}

fn summarize(mut samples_ns: Vec<u64>) -> (f64, f64) {
    samples_ns.sort_unstable();
    (
        percentile_us(&samples_ns, 500),
        percentile_us(&samples_ns, 990),
    )
}

fn blocking(rounds: usize) -> (f64, f64) {
    let (mut client, mut server) = connected_pair();
    let echo = std::thread::spawn(move || {
        pin_to(SERVER_CPU);
        let mut buf = [0u8; MESSAGE_BYTES];
        for _ in 0..rounds + WARMUP_ROUNDS {
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
        }
    });
    let timed = std::thread::spawn(move || {
        pin_to(CLIENT_CPU);
        let mut buf = [7u8; MESSAGE_BYTES];
        let mut samples_ns = Vec::with_capacity(rounds);
        for round in 0..rounds + WARMUP_ROUNDS {
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
    summarize(timed.join().unwrap())
}

/// Submits one operation and waits for its completion; returns its result.
fn uring_run(ring: &mut IoUring, entry: io_uring::squeue::Entry) -> i32 {
    // SAFETY: every entry built in this file points at a buffer that outlives
    // this call, and we wait for its completion before returning.
    unsafe { ring.submission().push(&entry).unwrap() };
    ring.submit_and_wait(1).unwrap();
    ring.completion().next().unwrap().result()
}

fn uring_send_all(ring: &mut IoUring, fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32).build();
        let sent = uring_run(ring, entry);
        assert!(sent > 0, "send: {sent}");
        done += sent as usize;
    }
}

fn uring_recv_all(ring: &mut IoUring, fd: i32, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let entry = opcode::Recv::new(types::Fd(fd), rest.as_mut_ptr(), rest.len() as u32).build();
        let received = uring_run(ring, entry);
        assert!(received > 0, "recv: {received}");
        done += received as usize;
    }
}

/// Sends `buf` with `SendZc`; each piece waits for its result and, when the
/// kernel pinned the pages, for the notification that it let them go.
fn send_zc_all(ring: &mut IoUring, fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let entry = opcode::SendZc::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32).build();
        // SAFETY: `buf` outlives the loop below, which waits for the
        // notification that the kernel no longer reads it.
        unsafe { ring.submission().push(&entry).unwrap() };
        let mut sent = None;
        let mut notification_pending = false;
        while sent.is_none() || notification_pending {
            ring.submit_and_wait(1).unwrap();
            for cqe in ring.completion() {
                if io_uring::cqueue::notif(cqe.flags()) {
                    notification_pending = false;
                } else {
                    sent = Some(cqe.result());
                    notification_pending = io_uring::cqueue::more(cqe.flags());
                }
            }
        }
        let sent = sent.unwrap();
        assert!(sent > 0, "send_zc: {sent}");
        done += sent as usize;
    }
}

/// Nonblocking reads; only a read that would block waits on a `PollAdd`.
fn ready_recv_all(ring: &mut IoUring, stream: &mut TcpStream, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        match stream.read(&mut buf[done..]) {
            Ok(0) => panic!("peer closed"),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = types::Fd(stream.as_raw_fd());
                let entry = opcode::PollAdd::new(fd, libc::POLLIN as u32).build();
                let revents = uring_run(ring, entry);
                assert!(revents > 0, "poll: {revents}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn ready_send_all(ring: &mut IoUring, stream: &mut TcpStream, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = types::Fd(stream.as_raw_fd());
                let entry = opcode::PollAdd::new(fd, libc::POLLOUT as u32).build();
                let revents = uring_run(ring, entry);
                assert!(revents > 0, "poll: {revents}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum UringWay {
    Ops,
    Ready,
    /// Streams only: `SendZc` sends (waiting for the kernel's notification
    /// before reusing the buffer), nonblocking reads on the other side.
    SendZc,
}

fn uring_rtt(way: UringWay, rounds: usize) -> (f64, f64) {
    let (mut client, mut server) = connected_pair();
    if way == UringWay::Ready {
        client.set_nonblocking(true).unwrap();
        server.set_nonblocking(true).unwrap();
    }
    let echo = std::thread::spawn(move || {
        pin_to(SERVER_CPU);
        let mut ring = IoUring::new(8).unwrap();
        let mut buf = [0u8; MESSAGE_BYTES];
        let fd = server.as_raw_fd();
        for _ in 0..rounds + WARMUP_ROUNDS {
            if way == UringWay::Ops {
                uring_recv_all(&mut ring, fd, &mut buf);
                uring_send_all(&mut ring, fd, &buf);
            } else {
                ready_recv_all(&mut ring, &mut server, &mut buf);
                ready_send_all(&mut ring, &mut server, &buf);
            }
        }
    });
    let timed = std::thread::spawn(move || {
        pin_to(CLIENT_CPU);
        let mut ring = IoUring::new(8).unwrap();
        let mut buf = [7u8; MESSAGE_BYTES];
        let fd = client.as_raw_fd();
        let mut samples_ns = Vec::with_capacity(rounds);
        for round in 0..rounds + WARMUP_ROUNDS {
            let start = Instant::now();
            if way == UringWay::Ops {
                uring_send_all(&mut ring, fd, &buf);
                uring_recv_all(&mut ring, fd, &mut buf);
            } else {
                ready_send_all(&mut ring, &mut client, &buf);
                ready_recv_all(&mut ring, &mut client, &mut buf);
            }
            if round >= WARMUP_ROUNDS {
                samples_ns.push(start.elapsed().as_nanos() as u64);
            }
        }
        samples_ns
    });
    echo.join().unwrap();
    summarize(timed.join().unwrap())
}

#[derive(Clone, Copy)]
struct GlommioWay {
    spin: Option<Duration>,
    latency_queue: bool,
}

fn glommio_builder(cpu: usize, way: GlommioWay) -> LocalExecutorBuilder {
    let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu));
    match way.spin {
        Some(spin) => builder.spin_before_park(spin),
        None => builder,
    }
}

/// Runs `future` on the executor, in a latency task queue if asked.
async fn in_queue<T: 'static>(
    latency_queue: bool,
    future: impl std::future::Future<Output = T> + 'static,
) -> T {
    if latency_queue {
        let queue = glommio::executor().create_task_queue(
            Shares::default(),
            Latency::Matters(Duration::from_micros(100)),
            "net",
        );
        glommio::spawn_local_into(future, queue).unwrap().await
    } else {
        future.await
    }
}

fn glommio_rtt(way: GlommioWay, rounds: usize) -> (f64, f64) {
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let echo = glommio_builder(SERVER_CPU, way)
        .name("echo")
        .spawn(move || async move {
            // Connections are set up in the default queue: accept inside a
            // latency queue never completed here (see the README).
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            address_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut stream = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            in_queue(way.latency_queue, async move {
                let mut buf = [0u8; MESSAGE_BYTES];
                for _ in 0..rounds + WARMUP_ROUNDS {
                    stream.read_exact(&mut buf).await.unwrap();
                    stream.write_all(&buf).await.unwrap();
                }
            })
            .await
        })
        .unwrap();
    let address = address_rx.recv().unwrap();
    let timed = glommio_builder(CLIENT_CPU, way)
        .name("timed")
        .spawn(move || async move {
            let mut stream = glommio::net::TcpStream::connect(address).await.unwrap();
            stream.set_nodelay(true).unwrap();
            in_queue(way.latency_queue, async move {
                let mut buf = [7u8; MESSAGE_BYTES];
                let mut samples_ns = Vec::with_capacity(rounds);
                for round in 0..rounds + WARMUP_ROUNDS {
                    let start = Instant::now();
                    stream.write_all(&buf).await.unwrap();
                    stream.read_exact(&mut buf).await.unwrap();
                    if round >= WARMUP_ROUNDS {
                        samples_ns.push(start.elapsed().as_nanos() as u64);
                    }
                }
                samples_ns
            })
            .await
        })
        .unwrap();
    // A latency task queue sometimes never wakes up on this machine (the
    // round trips stall for good): report that instead of hanging the run.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(timed.join().unwrap());
        echo.join().unwrap();
    });
    match done_rx.recv_timeout(GLOMMIO_STALL_TIMEOUT) {
        Ok(samples_ns) => summarize(samples_ns),
        Err(_) => (f64::INFINITY, f64::INFINITY),
    }
}

/// MB/s of 64 KiB frames streamed one way for [`STREAM_DURATION`].
fn stream_mb_per_sec(way: Option<UringWay>) -> f64 {
    let (mut client, mut server) = connected_pair();
    if matches!(way, Some(UringWay::Ready | UringWay::SendZc)) {
        client.set_nonblocking(true).unwrap();
        server.set_nonblocking(true).unwrap();
    }
    let sink = std::thread::spawn(move || {
        pin_to(SERVER_CPU);
        let mut ring = IoUring::new(8).unwrap();
        let mut buf = vec![0u8; STREAM_FRAME_BYTES];
        let mut received = 0u64;
        loop {
            // A one-byte stop marker ends the stream: frames are whole, so a
            // short last read is the marker.
            let n = match way {
                None => server.read(&mut buf).unwrap(),
                Some(UringWay::Ops) => {
                    let fd = types::Fd(server.as_raw_fd());
                    let entry = opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build();
                    uring_run(&mut ring, entry) as usize
                }
                Some(UringWay::Ready | UringWay::SendZc) => match server.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let fd = types::Fd(server.as_raw_fd());
                        let entry = opcode::PollAdd::new(fd, libc::POLLIN as u32).build();
                        uring_run(&mut ring, entry);
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                },
            };
            if n == 0 {
                return received;
            }
            received += n as u64;
        }
    });
    let source = std::thread::spawn(move || {
        pin_to(CLIENT_CPU);
        let mut ring = IoUring::new(8).unwrap();
        let frame = vec![0x5Au8; STREAM_FRAME_BYTES];
        let start = Instant::now();
        while start.elapsed() < STREAM_DURATION {
            match way {
                None => client.write_all(&frame).unwrap(),
                Some(UringWay::Ops) => uring_send_all(&mut ring, client.as_raw_fd(), &frame),
                Some(UringWay::Ready) => ready_send_all(&mut ring, &mut client, &frame),
                Some(UringWay::SendZc) => send_zc_all(&mut ring, client.as_raw_fd(), &frame),
            }
        }
        client.shutdown(std::net::Shutdown::Write).unwrap();
        start
    });
    let start = source.join().unwrap();
    let received = sink.join().unwrap();
    received as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let runs: usize = args.next().map_or(5, |a| a.parse().unwrap());
    // Optional third argument: measure only the ways whose name contains it.
    let only = args.next().unwrap_or_default();
    let spin = Some(Duration::from_micros(50));
    type Way = (&'static str, Box<dyn Fn(usize) -> (f64, f64)>);
    let ways: Vec<Way> = vec![
        ("blocking", Box::new(blocking)),
        (
            "glommio",
            Box::new(|r| {
                glommio_rtt(
                    GlommioWay {
                        spin: None,
                        latency_queue: false,
                    },
                    r,
                )
            }),
        ),
        (
            "glommio-spin",
            Box::new(move |r| {
                glommio_rtt(
                    GlommioWay {
                        spin,
                        latency_queue: false,
                    },
                    r,
                )
            }),
        ),
        ("uring-ops", Box::new(|r| uring_rtt(UringWay::Ops, r))),
        ("uring-ready", Box::new(|r| uring_rtt(UringWay::Ready, r))),
        (
            "glommio-latency",
            Box::new(|r| {
                glommio_rtt(
                    GlommioWay {
                        spin: None,
                        latency_queue: true,
                    },
                    r,
                )
            }),
        ),
        (
            "glommio-spin-latency",
            Box::new(move |r| {
                glommio_rtt(
                    GlommioWay {
                        spin,
                        latency_queue: true,
                    },
                    r,
                )
            }),
        ),
    ];
    let streams: [(&str, Option<UringWay>); 4] = [
        ("blocking", None),
        ("uring-ops", Some(UringWay::Ops)),
        ("uring-ready", Some(UringWay::Ready)),
        ("uring-sendzc", Some(UringWay::SendZc)),
    ];
    let mut rtt_p50 = vec![Vec::new(); ways.len()];
    let mut rtt_p99 = vec![Vec::new(); ways.len()];
    let mut stream_mb = vec![Vec::new(); streams.len()];
    for run in 0..runs {
        for (i, (name, measure)) in ways.iter().enumerate() {
            if !name.contains(only.as_str()) {
                continue;
            }
            let (p50, p99) = measure(rounds);
            println!("run {run} rtt_64b {name:<22} p50_us {p50:7.1} p99_us {p99:8.1}");
            if p50.is_infinite() {
                println!(
                    "run {run} rtt_64b {name:<22} stalled: no progress in {GLOMMIO_STALL_TIMEOUT:?}"
                );
            }
            rtt_p50[i].push(p50);
            rtt_p99[i].push(p99);
        }
        for (i, (name, way)) in streams.iter().enumerate() {
            if !name.contains(only.as_str()) {
                continue;
            }
            let mb = stream_mb_per_sec(*way);
            println!("run {run} stream_64k {name:<19} mb_per_sec {mb:7.0}");
            stream_mb[i].push(mb);
        }
    }
    println!("medians over {runs} runs of {rounds} round trips:");
    for (i, (name, _)) in ways.iter().enumerate() {
        if rtt_p50[i].is_empty() {
            continue;
        }
        let p50 = median(rtt_p50[i].clone());
        let p99 = median(rtt_p99[i].clone());
        println!("rtt_64b {name:<22} p50_us {p50:7.1} p99_us {p99:8.1}");
    }
    for (i, (name, _)) in streams.iter().enumerate() {
        if stream_mb[i].is_empty() {
            continue;
        }
        let mb = median(stream_mb[i].clone());
        println!("stream_64k {name:<19} mb_per_sec {mb:7.0}");
    }
}
