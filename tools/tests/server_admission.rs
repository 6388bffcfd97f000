//! Admission control as a client sees it: a 3-node cluster (real
//! processes, one group) whose followers are frozen (SIGSTOP) cannot
//! commit, so once the leader's uncommitted bytes reach
//! `--uncommitted-bytes-max` a write waits for admission and is answered
//! `-BUSY` after `--admission-timeout-ms`: no hang, no memory growth. Once
//! the followers resume, writes are acknowledged again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringraft_tools::service::resp::{parse_moved, reply_len};

const NODES: u16 = 3;

struct Cluster {
    base: u16,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

fn free_base() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(6151) + attempt * 1409) % 40_000) as u16;
        let ports = (1..=NODES).flat_map(|k| [base + k, base + 100 * k]);
        let listeners: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if listeners.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free port range found");
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let base = free_base();
        let peers: Vec<String> = (1..=NODES)
            .map(|k| format!("{k}=127.0.0.1:{}", base + 100 * k))
            .collect();
        let children = (1..=NODES)
            .map(|id| {
                let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).unwrap();
                Command::new(env!("CARGO_BIN_EXE_ringraft"))
                    .args(["serve", "--id", &id.to_string()])
                    .arg("--data-dir")
                    .arg(dir.join(format!("node-{id}")))
                    .args(["--peers", &peers.join(",")])
                    .args(["--client-addr", &format!("127.0.0.1:{}", base + id)])
                    .args(["--shards", "1", "--wal-mib", "16", "--no-pin"])
                    // Four 1 KiB writes fill the budget; a write waits 20 ms
                    // at most, well before the leader, cut off from its
                    // quorum, steps down (CheckQuorum, after ≥ 100 ms).
                    .args(["--uncommitted-bytes-max", "4096"])
                    .args(["--admission-timeout-ms", "20"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn ringraft serve")
            })
            .collect();
        Cluster {
            base,
            children,
            dir: dir.to_path_buf(),
        }
    }

    fn client(&self, id: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + id))
    }

    fn signal(&self, id: u16, signal: i32) {
        let pid = self.children[usize::from(id) - 1].id() as i32;
        // SAFETY: kill takes no pointers; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn rss_bytes(&self, id: u16) -> u64 {
        let pid = self.children[usize::from(id) - 1].id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            << 10
    }

    /// The node that acknowledges a write (following -MOVED), retried
    /// while the group has no leader.
    fn set(&self, key: &[u8], value: &[u8], within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        let mut id = 1;
        loop {
            let reply = TcpStream::connect(self.client(id)).ok().and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
                s.write_all(&command(&[b"SET", key, value])).ok()?;
                read_replies(&mut s, 1).ok().map(|mut r| r.remove(0))
            });
            match reply {
                Some(r) if r == b"+OK\r\n" => return id,
                Some(r) => {
                    if let Some((_, to)) = parse_moved(&r) {
                        let addr: SocketAddr = to.parse().unwrap();
                        id = addr.port() - self.base;
                        continue;
                    }
                }
                None => id = id % NODES + 1,
            }
            assert!(Instant::now() < deadline, "no write acknowledged in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=NODES {
            // A stopped process must be resumed to die promptly.
            self.signal(id, libc::SIGCONT);
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 1..=NODES {
                let log = std::fs::read_to_string(self.dir.join(format!("node-{id}.log")));
                eprintln!("--- node {id} ---\n{}", log.unwrap_or_default());
            }
        }
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    request
}

fn read_replies(stream: &mut TcpStream, count: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let mut replies = Vec::with_capacity(count);
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while replies.len() < count {
        if let Ok(Some(len)) = reply_len(&buffer) {
            replies.push(buffer.drain(..len).collect());
            continue;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(replies)
}

#[test]
fn a_leader_whose_quorum_cannot_keep_up_answers_busy_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let leader = cluster.set(b"warm-up", b"1", Duration::from_secs(15));
    let followers: Vec<u16> = (1..=NODES).filter(|&id| id != leader).collect();
    let value = vec![b'x'; 1024];
    // Connections opened before the freeze, so nothing else is timed.
    let mut filler = TcpStream::connect(cluster.client(leader)).unwrap();
    let mut waiter = TcpStream::connect(cluster.client(leader)).unwrap();
    filler
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    waiter
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let rss_before = cluster.rss_bytes(leader);

    for &id in &followers {
        cluster.signal(id, libc::SIGSTOP);
    }
    // The filler's writes take the whole budget (they cannot commit) ...
    let mut burst = Vec::new();
    for i in 0..16 {
        burst.extend(command(&[b"SET", format!("fill-{i}").as_bytes(), &value]));
    }
    filler.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    // ... so the waiter's write is not admitted: -BUSY, not a hang.
    let asked = Instant::now();
    waiter
        .write_all(&command(&[b"SET", b"waiter", &value]))
        .unwrap();
    let reply = read_replies(&mut waiter, 1).unwrap().remove(0);
    let waited = asked.elapsed();
    assert!(
        reply.starts_with(b"-BUSY "),
        "reply {:?} after {waited:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    let rss_busy = cluster.rss_bytes(leader);
    assert!(
        rss_busy < rss_before + (64 << 20),
        "leader memory grew from {rss_before} to {rss_busy} bytes"
    );

    // The followers resume: every write of the filler gets an answer (no
    // hang), and the cluster acknowledges writes again.
    for &id in &followers {
        cluster.signal(id, libc::SIGCONT);
    }
    let answers = read_replies(&mut filler, 16).unwrap();
    for answer in &answers {
        let known = [
            &b"+OK"[..],
            b"-BUSY",
            b"-TRYAGAIN",
            b"-MOVED",
            b"-CLUSTERDOWN",
        ];
        assert!(
            known.iter().any(|k| answer.starts_with(k)),
            "{:?}",
            String::from_utf8_lossy(answer)
        );
    }
    cluster.set(b"after", b"2", Duration::from_secs(15));
}
