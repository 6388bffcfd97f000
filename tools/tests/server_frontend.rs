//! The client service run by the shard loops, as a client sees it: a real
//! one-node `ringraft serve` process with two shards (two groups, both led
//! by this node), so a connection accepted by one shard also writes to the
//! other shard's group through that shard's mailbox.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ClusterPorts, bulk, command, read_replies, serve};
use ringraft_tools::service::slots::{SlotMap, key_slot};

const SHARDS: u16 = 2;

/// A one-node server process, killed when dropped (its log printed on panic).
struct Server {
    child: Child,
    client: SocketAddr,
    log: std::path::PathBuf,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let ports = ClusterPorts::reserve(1, SHARDS);
        let client = ports.client(1);
        let log = dir.join("node.log");
        let child = serve(1, &dir.join("node"), &ports.peers_arg(1), client)
            .args([
                "--shards",
                &SHARDS.to_string(),
                "--wal-mib",
                "16",
                "--no-pin",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ringraft serve");
        let server = Server { child, client, log };
        server.wait_for_leaders();
        server
    }

    fn connect(&self) -> TcpStream {
        connect(self.client)
    }

    /// Both groups elected this node: a write on each is acknowledged.
    fn wait_for_leaders(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for group in 0..SHARDS {
            let key = key_in_group(group, 0);
            loop {
                let reply = TcpStream::connect(self.client).ok().and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    s.write_all(&command(&[b"SET", &key, b"x"])).ok()?;
                    read_replies(&mut s, 1).ok()
                });
                if reply.as_deref() == Some(&[b"+OK\r\n".to_vec()][..]) {
                    break;
                }
                assert!(Instant::now() < deadline, "no leader for group {group}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn rss_bytes(&self) -> u64 {
        common::rss_bytes(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// The `n`-th key (of some deterministic list) whose slot is in `group`.
/// A client connection that gives up reading after 10 s.
fn connect(client: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(client).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn key_in_group(group: u16, n: usize) -> Vec<u8> {
    let map = SlotMap::new(SHARDS).unwrap();
    (0..)
        .map(|i| format!("key-{i}").into_bytes())
        .filter(|k| map.group_of(key_slot(k)) == group)
        .nth(n)
        .unwrap()
}

#[test]
fn a_thousand_pipelined_commands_in_one_buffer_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut stream = server.connect();
    // SETs on both groups (so some go to the other shard's mailbox), each
    // tenth followed by a GET of the key just set, and a PING in between:
    // every reply must come back in command order.
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let key = format!("pipelined-{i}");
        let value = format!("value-{i}");
        request.extend(command(&[b"SET", key.as_bytes(), value.as_bytes()]));
        expected.push(b"+OK\r\n".to_vec());
        if i % 10 == 0 {
            request.extend(command(&[b"GET", key.as_bytes()]));
            expected.push(bulk(value.as_bytes()));
        }
        if i % 250 == 0 {
            request.extend(command(&[b"PING"]));
            expected.push(b"+PONG\r\n".to_vec());
        }
    }
    stream.write_all(&request).unwrap();
    let replies = read_replies(&mut stream, expected.len()).unwrap();
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want),
            "reply {i}"
        );
    }
}

#[test]
fn a_write_too_large_for_the_log_is_an_error_not_a_retry_and_the_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut stream = server.connect();
    // Within a command's limit (1 MiB) but above a log entry's (64 KiB):
    // retrying cannot help, so the answer is -ERR, on either local group.
    let big = vec![b'x'; 100_000];
    let mut request = Vec::new();
    for group in 0..SHARDS {
        request.extend(command(&[b"SET", &key_in_group(group, 1), &big]));
    }
    request.extend(command(&[b"SET", &key_in_group(0, 2), b"small"]));
    request.extend(command(&[b"PING"]));
    stream.write_all(&request).unwrap();
    let replies = read_replies(&mut stream, usize::from(SHARDS) + 2).unwrap();
    for reply in &replies[..usize::from(SHARDS)] {
        let text = String::from_utf8_lossy(reply);
        assert!(
            text.starts_with("-ERR ") && text.contains("exceeds request_bytes_max"),
            "{text}"
        );
    }
    assert_eq!(replies[usize::from(SHARDS)], b"+OK\r\n");
    assert_eq!(replies[usize::from(SHARDS) + 1], b"+PONG\r\n");
}

#[test]
fn many_clients_on_one_node_each_read_their_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = server.client;
    let threads: Vec<_> = (0..64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = connect(client);
                for i in 0..40 {
                    let key = format!("client-{c}-{i}");
                    let value = format!("{c}:{i}");
                    stream
                        .write_all(&command(&[b"SET", key.as_bytes(), value.as_bytes()]))
                        .unwrap();
                    assert_eq!(read_replies(&mut stream, 1).unwrap()[0], b"+OK\r\n");
                    stream
                        .write_all(&command(&[b"GET", key.as_bytes()]))
                        .unwrap();
                    assert_eq!(
                        read_replies(&mut stream, 1).unwrap()[0],
                        bulk(value.as_bytes())
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn every_connection_writes_and_reads_both_local_groups() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Connections are spread over both shards: whichever accepted one, its
    // writes on the other group go through the other shard's mailbox.
    for c in 0..8 {
        let mut stream = server.connect();
        for group in 0..SHARDS {
            let key = key_in_group(group, 1 + c);
            let value = format!("c{c}g{group}");
            stream
                .write_all(&command(&[b"SET", &key, value.as_bytes()]))
                .unwrap();
            stream.write_all(&command(&[b"GET", &key])).unwrap();
            stream.write_all(&command(&[b"DEL", &key])).unwrap();
            stream.write_all(&command(&[b"GET", &key])).unwrap();
            let replies = read_replies(&mut stream, 4).unwrap();
            assert_eq!(
                replies,
                vec![
                    b"+OK\r\n".to_vec(),
                    bulk(value.as_bytes()),
                    b":1\r\n".to_vec(),
                    b"$-1\r\n".to_vec(),
                ],
                "connection {c}, group {group}"
            );
        }
    }
}

/// A pipelined read is answered with the state of its place in the
/// command order: neither an earlier write of the connection is missing
/// (the read waits for it) nor a later one already visible (a write waits
/// for the reads before it: a ReadIndex read is served at *some* applied
/// index at or past its read index, and a write applied meanwhile would
/// show). SET, GET, DEL, GET, SET, GET in one buffer, so the read and the
/// write behind it reach the shard in the same loop turn.
#[test]
fn pipelined_reads_see_exactly_the_writes_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = server.client;
    let threads: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = connect(client);
                for i in 0..40 {
                    for group in 0..SHARDS {
                        let key = key_in_group(group, 100 + c * 40 + i);
                        let first = format!("c{c}i{i}g{group}a");
                        let second = format!("c{c}i{i}g{group}b");
                        let mut request = Vec::new();
                        request.extend(command(&[b"SET", &key, first.as_bytes()]));
                        request.extend(command(&[b"GET", &key]));
                        request.extend(command(&[b"DEL", &key]));
                        request.extend(command(&[b"GET", &key]));
                        request.extend(command(&[b"SET", &key, second.as_bytes()]));
                        request.extend(command(&[b"GET", &key]));
                        stream.write_all(&request).unwrap();
                        let replies = read_replies(&mut stream, 6).unwrap();
                        let replies: Vec<_> = replies
                            .iter()
                            .map(|r| String::from_utf8_lossy(r).into_owned())
                            .collect();
                        let expected: Vec<_> = [
                            b"+OK\r\n".to_vec(),
                            bulk(first.as_bytes()),
                            b":1\r\n".to_vec(),
                            b"$-1\r\n".to_vec(),
                            b"+OK\r\n".to_vec(),
                            bulk(second.as_bytes()),
                        ]
                        .iter()
                        .map(|r| String::from_utf8_lossy(r).into_owned())
                        .collect();
                        assert_eq!(
                            replies, expected,
                            "connection {c}, round {i}, group {group}"
                        );
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_client_that_stops_reading_is_paused_and_does_not_stall_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let big = vec![b'v'; 32 << 10];
    let key = key_in_group(0, 3);
    let mut setup = server.connect();
    setup.write_all(&command(&[b"SET", &key, &big])).unwrap();
    assert_eq!(read_replies(&mut setup, 1).unwrap()[0], b"+OK\r\n");

    // The greedy client asks for 64 KiB replies and never reads them.
    let mut greedy = server.connect();
    greedy.set_nonblocking(true).unwrap();
    let get = command(&[b"GET", &key]);
    let mut request = Vec::new();
    while request.len() < 1 << 20 {
        request.extend_from_slice(&get);
    }
    let intended_bytes = 256u64 << 20;
    let mut sent_bytes = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut blocked_since: Option<Instant> = None;
    // Write until the server has stopped taking the greedy client's
    // commands for a while (its socket buffers full both ways).
    while sent_bytes < intended_bytes && Instant::now() < deadline {
        match greedy.write(&request[(sent_bytes as usize) % get.len()..]) {
            Ok(n) => {
                sent_bytes += n as u64;
                blocked_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("greedy write: {e}"),
        }
    }
    assert!(
        sent_bytes < intended_bytes,
        "the server kept reading a client that does not read its replies"
    );
    let rss_paused = server.rss_bytes();

    // Others are served meanwhile, on both groups.
    let mut other = server.connect();
    for i in 0..50 {
        let key = key_in_group((i % 2) as u16, 10 + i);
        other.write_all(&command(&[b"SET", &key, b"1"])).unwrap();
        other.write_all(&command(&[b"GET", &key])).unwrap();
        assert_eq!(
            read_replies(&mut other, 2).unwrap(),
            vec![b"+OK\r\n".to_vec(), bulk(b"1")]
        );
    }
    // The paused client holds its bounded buffers, nothing more.
    std::thread::sleep(Duration::from_millis(500));
    let rss_later = server.rss_bytes();
    assert!(
        rss_later < rss_paused + (16 << 20),
        "server memory grew from {rss_paused} to {rss_later} bytes while a client was paused"
    );

    // Once the greedy client reads, it gets whole, ordered replies.
    greedy.set_nonblocking(false).unwrap();
    greedy
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let first = read_replies(&mut greedy, 4).unwrap();
    assert!(first.iter().all(|r| *r == bulk(&big)));
}

#[test]
fn connections_past_connections_max_are_refused_and_the_others_served() {
    let dir = tempfile::tempdir().unwrap();
    // The readiness probe's connection is closed before the clients come.
    let server = Server::start(dir.path(), &["--connections-max", "2"]);
    std::thread::sleep(Duration::from_millis(100));
    let mut first = server.connect();
    let mut second = server.connect();
    for stream in [&mut first, &mut second] {
        stream.write_all(&command(&[b"PING"])).unwrap();
        assert_eq!(read_replies(stream, 1).unwrap()[0], b"+PONG\r\n");
    }
    let mut third = server.connect();
    let refused = third
        .write_all(&command(&[b"PING"]))
        .and_then(|()| read_replies(&mut third, 1));
    assert!(
        refused.is_err(),
        "a third connection was served: {refused:?}"
    );
    // Once one closes, a new client is served.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = server.connect();
        let reply = again
            .write_all(&command(&[b"PING"]))
            .and_then(|()| read_replies(&mut again, 1));
        if let Ok(reply) = reply {
            assert_eq!(reply[0], b"+PONG\r\n");
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(20));
    }
    second.write_all(&command(&[b"PING"])).unwrap();
    assert_eq!(read_replies(&mut second, 1).unwrap()[0], b"+PONG\r\n");
}
