//! Admission control as a client sees it: a 3-node cluster (real
//! processes, one group) whose followers are frozen (SIGSTOP) cannot
//! commit, so once the leader's uncommitted bytes reach
//! `--uncommitted-bytes-max` a write waits for admission and is answered
//! `-BUSY` after `--admission-timeout-ms`: no hang, no memory growth. Once
//! the followers resume, writes are acknowledged again.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ClusterPorts, command, read_replies, serve};
use ringraft_tools::service::resp::parse_moved;

const NODES: u16 = 3;

struct Cluster {
    ports: ClusterPorts,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let ports = ClusterPorts::reserve(NODES, 1);
        let peers = ports.peers_arg(NODES.into());
        let children = (1..=NODES)
            .map(|id| {
                let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).unwrap();
                let (id, data_dir) = (u64::from(id), dir.join(format!("node-{id}")));
                serve(id, &data_dir, &peers, ports.client(id))
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
            ports,
            children,
            dir: dir.to_path_buf(),
        }
    }

    fn client(&self, id: u16) -> SocketAddr {
        self.ports.client(id.into())
    }

    fn signal(&self, id: u16, signal: i32) {
        let pid = self.children[usize::from(id) - 1].id() as i32;
        // SAFETY: kill takes no pointers; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn rss_bytes(&self, id: u16) -> u64 {
        common::rss_bytes(self.children[usize::from(id) - 1].id())
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
                        id = self.ports.node_of(addr) as u16;
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
