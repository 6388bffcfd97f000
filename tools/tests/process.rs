//! Real `ringraft serve` processes on loopback with real WAL files: a
//! 3-node cluster elects, serves through -MOVED, survives kill -9 of a
//! leader, and the killed node restarts from its WAL and catches up. A
//! client records every acknowledged write and finds each one at the end.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ClusterPorts, bulk, ports, serve};
use ringraft_tools::service::resp::parse_moved;

const NODES: u64 = 3;
const SHARDS: u16 = 2;

/// A cluster of child processes, all killed when dropped (even on panic).
struct Cluster {
    /// Reserved for the whole test: the killed node restarts on its ports.
    ports: ClusterPorts,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let mut cluster = Cluster {
            ports: ClusterPorts::reserve(NODES as u16, SHARDS),
            dir: dir.to_path_buf(),
            children: (0..NODES).map(|_| None).collect(),
        };
        for id in 1..=NODES {
            cluster.spawn(id);
        }
        cluster
    }

    fn client(&self, id: u64) -> SocketAddr {
        self.ports.client(id)
    }

    fn spawn(&mut self, id: u64) {
        let log = std::fs::File::create(self.dir.join(format!("node-{id}.log"))).unwrap();
        let data_dir = self.dir.join(format!("node-{id}"));
        let child = serve(id, &data_dir, &self.ports.peers_arg(NODES), self.client(id))
            .args(["--shards", &SHARDS.to_string(), "--wal-mib", "16"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ringraft serve");
        self.children[id as usize - 1] = Some(child);
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    fn logs(&self) -> String {
        (1..=NODES)
            .map(|id| {
                let text = std::fs::read_to_string(self.dir.join(format!("node-{id}.log")))
                    .unwrap_or_default();
                format!("--- node {id} ---\n{text}")
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=NODES {
            self.kill(id);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Sends one command to `addr` and returns the raw reply.
fn call_once(addr: SocketAddr, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    common::call_once(addr, args, Duration::from_secs(6))
}

/// A command as a cluster client runs it: follows -MOVED, retries while a
/// group has no leader or a node is down, until `deadline`.
fn call(cluster: &Cluster, start: u64, args: &[&[u8]], deadline: Duration) -> Vec<u8> {
    call_via(cluster.ports, start, args, deadline)
}

fn call_via(cluster: ClusterPorts, start: u64, args: &[&[u8]], deadline: Duration) -> Vec<u8> {
    let until = Instant::now() + deadline;
    let mut addr = cluster.client(start);
    let mut next = start;
    loop {
        match call_once(addr, args) {
            Ok(reply) => {
                if let Some((_, to)) = parse_moved(&reply) {
                    addr = to.parse().unwrap();
                } else if reply.starts_with(b"-CLUSTERDOWN") || reply.starts_with(b"-TRYAGAIN") {
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    return reply;
                }
            }
            Err(_) => {
                // That node is down: ask another.
                next = next % NODES + 1;
                addr = cluster.client(next);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            Instant::now() < until,
            "no answer to {:?} within {deadline:?}",
            String::from_utf8_lossy(args[0])
        );
    }
}

/// `shardN:role=...,term=T,leader=L,commit=C,applied=A` lines of INFO replication.
fn shard_info(addr: SocketAddr) -> Option<Vec<BTreeMap<String, String>>> {
    let reply = call_once(addr, &[b"INFO", b"replication"]).ok()?;
    let text = String::from_utf8_lossy(&reply).to_string();
    let mut shards = Vec::new();
    for line in text.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if name.starts_with("shard") && !name.contains("_peer") && fields.contains("role=") {
            shards.push(
                fields
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
    }
    Some(shards)
}

fn leader_of(cluster: &Cluster, shard: usize, skip: u64) -> Option<u64> {
    (1..=NODES).filter(|id| *id != skip).find_map(|id| {
        let info = shard_info(cluster.client(id))?;
        (info.get(shard)?.get("role")? == "leader").then_some(id)
    })
}

#[test]
fn a_three_node_cluster_keeps_every_acknowledged_write_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let wait = Duration::from_secs(20);

    // Every group elects a leader.
    let start = Instant::now();
    for shard in 0..SHARDS as usize {
        while leader_of(&cluster, shard, 0).is_none() {
            assert!(start.elapsed() < wait, "group {shard} elected no leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Writes and reads through any node (following -MOVED).
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut stream_ids = Vec::new();
    let write = |cluster: &Cluster, i: u32, via: u64, acked: &mut BTreeMap<_, _>| {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        let reply = call(
            cluster,
            via,
            &[b"SET", key.as_bytes(), value.as_bytes()],
            wait,
        );
        assert_eq!(reply, b"+OK\r\n", "SET {key}");
        acked.insert(key, value);
    };
    for i in 0..60 {
        write(&cluster, i, u64::from(i) % NODES + 1, &mut acked);
    }
    for i in 0..10u64 {
        let value = format!("v{i}");
        let reply = call(
            &cluster,
            i % NODES + 1,
            &[b"XADD", b"events", b"*", b"n", value.as_bytes()],
            wait,
        );
        assert!(
            reply.starts_with(b"$"),
            "XADD replied {:?}",
            String::from_utf8_lossy(&reply)
        );
        stream_ids.push(reply);
    }
    for (key, value) in &acked {
        let reply = call(&cluster, 2, &[b"GET", key.as_bytes()], wait);
        assert_eq!(reply, bulk(value.as_bytes()), "GET {key}");
    }
    let range = call(&cluster, 3, &[b"XRANGE", b"events", b"-", b"+"], wait);
    assert!(
        range.starts_with(b"*10\r\n"),
        "XRANGE: {:?}",
        String::from_utf8_lossy(&range)
    );
    for id in &stream_ids {
        let inner = &id[id.iter().position(|b| *b == b'\n').unwrap() + 1..];
        assert!(
            range.windows(inner.len()).any(|w| w == inner),
            "XRANGE lost an id"
        );
    }

    // A second client writes all along, through the kill and the restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let (clients, stop) = (cluster.ports, stop.clone());
        std::thread::spawn(move || {
            let mut acked = BTreeMap::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, value) = (format!("bg-{i}"), format!("bg-value-{i}"));
                let reply = call_via(
                    clients,
                    i % NODES + 1,
                    &[b"SET", key.as_bytes(), value.as_bytes()],
                    wait,
                );
                assert_eq!(reply, b"+OK\r\n", "SET {key}");
                acked.insert(key, value);
                i += 1;
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(100));

    // kill -9 the leader of group 0; a new leader serves writes within 3 s.
    let victim = leader_of(&cluster, 0, 0).expect("group 0 has a leader");
    cluster.kill(victim);
    let killed_at = Instant::now();
    // key-0's group is whichever; write keys until one lands in group 0 is
    // not needed: the write below goes to every group in turn.
    let survivor = victim % NODES + 1;
    for i in 1000..1010 {
        write(&cluster, i, survivor, &mut acked);
    }
    while leader_of(&cluster, 0, victim).is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = call(
        &cluster,
        survivor,
        &[b"XADD", b"events", b"*", b"n", b"after"],
        wait,
    );
    stream_ids.push(reply);
    let recovered = killed_at.elapsed();
    assert!(
        recovered < Duration::from_secs(3),
        "writes resumed only after {recovered:?}"
    );
    for i in 1010..1060 {
        write(&cluster, i, survivor, &mut acked);
    }

    // The killed node restarts from its WAL and catches up.
    cluster.spawn(victim);
    let caught_up_by = Instant::now() + wait;
    loop {
        let target: Vec<u64> = (0..SHARDS as usize)
            .map(|shard| {
                let leader = leader_of(&cluster, shard, victim).unwrap_or(survivor);
                shard_info(cluster.client(leader))
                    .and_then(|info| info.get(shard)?.get("commit")?.parse().ok())
                    .unwrap_or(u64::MAX)
            })
            .collect();
        let mine = shard_info(cluster.client(victim));
        let done = mine.is_some_and(|info| {
            info.iter().zip(&target).all(|(shard, target)| {
                shard
                    .get("applied")
                    .and_then(|a| a.parse::<u64>().ok())
                    .is_some_and(|a| a >= *target)
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < caught_up_by,
            "node {victim} did not catch up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let background_acked = background.join().expect("the background writer failed");
    assert!(
        background_acked.len() > 10,
        "the background writer barely wrote"
    );
    acked.extend(background_acked);

    // Not one acknowledged write is missing or changed, asked through every node.
    for (n, (key, value)) in acked.iter().enumerate() {
        let reply = call(
            &cluster,
            n as u64 % NODES + 1,
            &[b"GET", key.as_bytes()],
            wait,
        );
        assert_eq!(reply, bulk(value.as_bytes()), "GET {key} after the kill");
    }
    let range = call(&cluster, victim, &[b"XRANGE", b"events", b"-", b"+"], wait);
    assert!(
        range.starts_with(b"*11\r\n"),
        "XRANGE after: {:?}",
        String::from_utf8_lossy(&range)
    );
    let len = call(&cluster, victim, &[b"XLEN", b"events"], wait);
    assert_eq!(len, b":11\r\n");
}

#[test]
fn a_node_refuses_bad_flags_a_port_in_use_and_another_clusters_wal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let client: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let run = |id: u64, peers: &str, extra: &[&str]| {
        let out = serve(id, &data, peers, client)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(4, "1=127.0.0.1:1", &[]);
    assert!(!ok && err.contains("--id 4 is not in --peers"), "{err}");
    let (ok, err) = run(1, "1=nowhere", &[]);
    assert!(!ok && err.contains("cannot resolve"), "{err}");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let peers = format!("1={}", taken.local_addr().unwrap());
    let (ok, err) = run(1, &peers, &["--shards", "1", "--wal-mib", "16"]);
    assert!(
        !ok && err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );

    // A WAL made for cluster 7 is refused by a node of cluster 8.
    let peers = format!("1={}", ports::addr());
    let mut child = serve(1, &data, &peers, client)
        .args(["--shards", "1", "--wal-mib", "16", "--cluster-id", "7"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wal = data.join("shard-0.wal");
    let made_by = Instant::now() + Duration::from_secs(20);
    while !(wal.exists() && std::fs::metadata(&wal).unwrap().len() > 16 << 20) {
        assert!(Instant::now() < made_by, "no WAL created");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let peers = format!("1={}", ports::addr());
    let (ok, err) = run(1, &peers, &["--shards", "1", "--cluster-id", "8"]);
    assert!(!ok && err.contains("cluster"), "{err}");
}
