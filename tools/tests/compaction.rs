//! Log compaction with real `ringraft serve` processes and small WAL files
//! (8 MiB): writes of twice the WAL's capacity all succeed (each shard
//! snapshots and purges); a follower stopped while the leader purged past
//! it comes back through a snapshot and then serves every write as leader;
//! a whole-cluster restart starts from the snapshots; a damaged snapshot
//! file stops a node at start with an error naming the file.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringraft_tools::service::resp::{parse_moved, reply_len};

const NODES: u64 = 3;
const WAL_MIB: u64 = 8;
/// Keys overwritten in turn: the log grows with every write, the state
/// (and so each snapshot) stays at KEYS * VALUE_BYTES.
const KEYS: usize = 256;
const VALUE_BYTES: usize = 4000;
/// Commands in flight on the writer's connection.
const PIPELINE: usize = 32;
const WAIT: Duration = Duration::from_secs(20);

/// Ports: node k's client port is `base + k`, its peer port `base + 100 k`,
/// reserved below the ephemeral range for this process (tests/common).
fn free_base() -> u16 {
    common::ClusterPorts::reserve(NODES as u16, 1).base
}

/// Child processes, all killed when dropped (logs printed on a panic).
struct Cluster {
    base: u16,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    /// Starts of each node so far (each start logs to its own file).
    starts: Vec<u32>,
    /// `serve` flags after the common ones.
    extra_args: Vec<String>,
}

impl Cluster {
    fn new(dir: &Path) -> Cluster {
        Cluster {
            base: free_base(),
            dir: dir.to_path_buf(),
            children: (0..NODES).map(|_| None).collect(),
            starts: vec![0; NODES as usize],
            extra_args: vec!["--wal-mib".into(), WAL_MIB.to_string()],
        }
    }

    fn client(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + id as u16))
    }

    fn snapshot_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}")).join("shard-0.snap")
    }

    fn log_path(&self, id: u64) -> PathBuf {
        let start = self.starts[id as usize - 1];
        self.dir.join(format!("node-{id}.{start}.log"))
    }

    fn command(&mut self, id: u64) -> Command {
        // A killed node's ports can stay taken for a moment (its sockets
        // closing): wait until they bind, as the node itself will.
        let deadline = Instant::now() + WAIT;
        let peer = SocketAddr::from(([127, 0, 0, 1], self.base + 100 * id as u16));
        while TcpListener::bind(peer).is_err() || TcpListener::bind(self.client(id)).is_err() {
            assert!(Instant::now() < deadline, "node {id}'s ports stay taken");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.starts[id as usize - 1] += 1;
        let peers: Vec<String> = (1..=NODES)
            .map(|k| format!("{k}=127.0.0.1:{}", self.base + 100 * k as u16))
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringraft"));
        command
            .args(["serve", "--id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args(["--peers", &peers.join(",")])
            .args(["--client-addr", &self.client(id).to_string()])
            .args(["--shards", "1", "--no-pin"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log_path(id)).unwrap());
        command
    }

    /// Starts node `id` and expects it to exit (a refused start) within WAIT.
    fn start_refused(&mut self, id: u64) {
        let mut child = self.command(id).spawn().expect("spawn ringraft serve");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "node {id} exited cleanly");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} started: {}", self.log(id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self, id: u64) {
        let child = self.command(id).spawn().expect("spawn ringraft serve");
        self.children[id as usize - 1] = Some(child);
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// The current start's log of node `id`.
    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for id in 1..=NODES {
            for start in 1..=self.starts[id as usize - 1] {
                let path = self.dir.join(format!("node-{id}.{start}.log"));
                let log = std::fs::read_to_string(path).unwrap_or_default();
                text += &format!("--- node {id}, start {start} ---\n{log}");
            }
        }
        text
    }

    /// The node `id`'s view of group 0: (role, commit, applied).
    fn info(&self, id: u64) -> Option<(String, u64, u64)> {
        let fields = self.shard0(id)?;
        Some((
            fields.get("role")?.to_string(),
            fields.get("commit")?.parse().ok()?,
            fields.get("applied")?.parse().ok()?,
        ))
    }

    /// The `key=value` fields of node `id`'s `shard0:` INFO line.
    fn shard0(&self, id: u64) -> Option<BTreeMap<String, String>> {
        let reply = call_once(self.client(id), &[b"INFO", b"replication"]).ok()?;
        let text = String::from_utf8_lossy(&reply).to_string();
        let line = text.lines().find(|l| l.starts_with("shard0:"))?;
        Some(
            line["shard0:".len()..]
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The `snapshot_index` node `id`'s INFO shows for group 0.
    fn snapshot_index(&self, id: u64) -> u64 {
        self.shard0(id)
            .and_then(|f| f.get("snapshot_index")?.parse().ok())
            .unwrap_or_else(|| panic!("no snapshot_index in node {id}'s INFO"))
    }

    fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            for id in 1..=NODES {
                if self.children[id as usize - 1].is_some()
                    && self.info(id).is_some_and(|(role, ..)| role == "leader")
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_log(&self, id: u64, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log(id).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "node {id} never logged {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads `count` replies from `stream`.
fn read_replies(stream: &mut TcpStream, count: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let mut replies = Vec::with_capacity(count);
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 << 10];
    while replies.len() < count {
        if let Ok(Some(len)) = reply_len(&pending) {
            replies.push(pending.drain(..len).collect());
            continue;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        pending.extend_from_slice(&buf[..n]);
    }
    Ok(replies)
}

fn call_once(addr: SocketAddr, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(6)))?;
    let mut request = Vec::new();
    encode(args, &mut request);
    stream.write_all(&request)?;
    Ok(read_replies(&mut stream, 1)?.remove(0))
}

/// A command as a cluster client runs it: follows -MOVED, retries while the
/// group has no leader.
fn call(cluster: &Cluster, via: u64, args: &[&[u8]]) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut addr = cluster.client(via);
    loop {
        if let Ok(reply) = call_once(addr, args) {
            match parse_moved(&reply) {
                Some((_, to)) => addr = to.parse().unwrap(),
                None if reply.starts_with(b"-CLUSTERDOWN") || reply.starts_with(b"-TRYAGAIN") => {}
                None => return reply,
            }
        }
        assert!(Instant::now() < deadline, "no answer through node {via}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn value(key: usize, version: u32) -> Vec<u8> {
    let mut value = format!("{key}:{version}:").into_bytes();
    value.resize(VALUE_BYTES, b'a' + (version % 26) as u8);
    value
}

/// Overwrites every key `rounds` times, pipelined to the leader (following
/// -MOVED when leadership moves); every write must end acknowledged (+OK),
/// never refused as busy. Records the last value of each key.
fn write_rounds(cluster: &Cluster, versions: &mut [u32], rounds: u32) {
    let connect = |addr| {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    };
    let mut stream = connect(cluster.client(cluster.leader()));
    let mut request = Vec::new();
    let deadline = Instant::now() + 6 * WAIT;
    for _ in 0..rounds {
        for first in (0..KEYS).step_by(PIPELINE) {
            // Keys of this batch not yet acknowledged.
            let mut left: Vec<usize> = (first..(first + PIPELINE).min(KEYS)).collect();
            while !left.is_empty() {
                assert!(Instant::now() < deadline, "writes did not finish");
                request.clear();
                for &key in &left {
                    let name = format!("key-{key}");
                    encode(
                        &[b"SET", name.as_bytes(), &value(key, versions[key] + 1)],
                        &mut request,
                    );
                }
                stream.write_all(&request).unwrap();
                let replies = read_replies(&mut stream, left.len()).unwrap();
                let mut moved = None;
                let mut retry = Vec::new();
                for (key, reply) in left.iter().zip(replies) {
                    if reply == b"+OK\r\n" {
                        versions[*key] += 1;
                    } else if let Some((_, to)) = parse_moved(&reply) {
                        moved = Some(to.parse::<SocketAddr>().unwrap());
                        retry.push(*key);
                    } else if reply.starts_with(b"-TRYAGAIN") || reply.starts_with(b"-CLUSTERDOWN")
                    {
                        retry.push(*key);
                    } else {
                        panic!("SET key-{key}: {:?}", String::from_utf8_lossy(&reply));
                    }
                }
                if let Some(addr) = moved {
                    stream = connect(addr);
                } else if !retry.is_empty() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                left = retry;
            }
        }
    }
}

/// Every key reads back its last acknowledged value, asked through `via`.
fn check_all(cluster: &Cluster, via: u64, versions: &[u32]) {
    for (key, &version) in versions.iter().enumerate() {
        let name = format!("key-{key}");
        let reply = call(cluster, via, &[b"GET", name.as_bytes()]);
        let expected = value(key, version);
        let mut bulk = format!("${}\r\n", expected.len()).into_bytes();
        bulk.extend_from_slice(&expected);
        bulk.extend_from_slice(b"\r\n");
        assert!(
            reply == bulk,
            "GET key-{key} via node {via}: expected version {version}, got {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(40)])
        );
    }
}

/// Rounds of writes that fill `mib` MiB of log.
fn rounds_for(mib: u64) -> u32 {
    ((mib << 20) / (KEYS * VALUE_BYTES) as u64) as u32 + 1
}

#[test]
fn writes_past_the_wal_capacity_compact_and_a_lagging_follower_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path());
    for id in 1..=NODES {
        cluster.spawn(id);
    }
    let mut versions = vec![0u32; KEYS];

    // (a) Twice the WAL's capacity: every write is acknowledged, so
    // every node snapshots and purges its WAL.
    write_rounds(&cluster, &mut versions, rounds_for(2 * WAL_MIB));
    for id in 1..=NODES {
        cluster.wait_for_log(id, "WAL purged up to index");
        assert!(
            cluster.snapshot_path(id).exists(),
            "node {id} has no snapshot"
        );
    }
    check_all(&cluster, 1, &versions);

    // (c) Node 1 (the group's preferred leader) stops; the others write past
    // their purge point; node 1 comes back behind it and gets a snapshot.
    cluster.kill(1);
    let purges = |cluster: &Cluster, id| cluster.log(id).matches("WAL purged").count();
    let before: Vec<usize> = (2..=NODES).map(|id| purges(&cluster, id)).collect();
    write_rounds(&cluster, &mut versions, rounds_for(WAL_MIB));
    let after: Vec<usize> = (2..=NODES).map(|id| purges(&cluster, id)).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "nodes 2 and 3 purged again while node 1 was down ({before:?} -> {after:?})"
    );
    cluster.spawn(1);
    cluster.wait_for_log(1, "installed snapshot");
    // Node 1 catches up and, caught up, is handed the leadership back: its
    // reads come from the state the snapshot installed plus what followed.
    let deadline = Instant::now() + WAIT;
    while cluster.info(1).is_none_or(|(role, ..)| role != "leader") {
        assert!(Instant::now() < deadline, "node 1 never led again");
        std::thread::sleep(Duration::from_millis(50));
    }
    check_all(&cluster, 1, &versions);
    write_rounds(&cluster, &mut versions, 1);

    // (b) The whole cluster restarts: each node loads its snapshot and
    // replays only the log after it; nothing acknowledged is missing.
    for id in 1..=NODES {
        cluster.kill(id);
    }
    for id in 1..=NODES {
        cluster.spawn(id);
    }
    let writes: u64 = versions.iter().map(|v| u64::from(*v)).sum();
    for id in 1..=NODES {
        cluster.wait_for_log(id, "loaded snapshot");
        // Only the log after the snapshot is replayed, not every write.
        let log = cluster.log(id);
        let replayed: u64 = log
            .split("recovered ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a 'recovered N entries' line");
        assert!(
            replayed < writes / 4,
            "node {id} replayed {replayed} of {writes} writes"
        );
    }
    check_all(&cluster, 2, &versions);

    // (d) A damaged snapshot file: the node refuses to start and names it.
    for id in 1..=NODES {
        cluster.kill(id);
    }
    let path = cluster.snapshot_path(3);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    cluster.start_refused(3);
    let log = cluster.log(3);
    assert!(
        log.contains("damaged snapshot") && log.contains(&path.display().to_string()),
        "the error names the damaged file: {log}"
    );
    // Removing it while the WAL was purged is refused too (never start empty).
    std::fs::remove_file(&path).unwrap();
    cluster.start_refused(3);
    assert!(
        cluster.log(3).contains("snapshot file is missing"),
        "{}",
        cluster.log(3)
    );
}

/// `--snapshot-entries` compacts a WAL far from full: every node snapshots
/// after that many entries, and INFO's `snapshot_index` shows where each
/// log now starts. Out-of-range compaction flags are refused.
#[test]
fn snapshot_flags_set_when_the_log_is_compacted() {
    const ENTRIES: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path());
    // 64 MiB: 25 % of it (the size trigger) is far more than the writes below.
    cluster.extra_args = [
        "--wal-mib",
        "64",
        "--snapshot-entries",
        &ENTRIES.to_string(),
    ]
    .map(String::from)
    .to_vec();
    for id in 1..=NODES {
        cluster.spawn(id);
    }
    let mut versions = vec![0u32; KEYS];
    write_rounds(&cluster, &mut versions, 2);
    let deadline = Instant::now() + WAIT;
    for id in 1..=NODES {
        while cluster.snapshot_index(id) < ENTRIES {
            assert!(
                Instant::now() < deadline,
                "node {id} did not snapshot after {ENTRIES} entries: snapshot_index {}",
                cluster.snapshot_index(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(cluster.snapshot_path(id).exists(), "node {id} has no file");
    }
    check_all(&cluster, 1, &versions);

    for (flag, value) in [
        ("--snapshot-log-percent", "0"),
        ("--snapshot-log-percent", "101"),
        ("--snapshot-entries", "0"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ringraft"))
            .args(["serve", "--id", "1", "--data-dir"])
            .arg(dir.path().join("unused"))
            .args(["--peers", "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3"])
            .args([
                "--client-addr",
                "127.0.0.1:1",
                flag,
                value,
                "--print-budget",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(flag),
            "{flag} {value} was accepted: {stderr}"
        );
    }
}

/// How long the KV's snapshot build takes (the time apply waits, on top of
/// the file writes): 100,000 keys of 128 B, built in 64 KiB chunks as the
/// shard does. A measurement, not a test of speed:
/// `cargo test --release -p ringraft-tools --test compaction -- --ignored --nocapture build_time`
#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn build_time_of_a_100k_key_state() {
    use ringraft_engine::shard::{Entry, ResponseSlots, StateMachine};
    use ringraft_tools::service::kv::{Kv, KvConfig, RESPONSE_BYTES_MAX};
    use ringraft_tools::service::payload;
    const STATE_KEYS: u64 = 100_000;
    let mut kv = Kv::new(KvConfig::default());
    let mut slots = ResponseSlots::new(256, RESPONSE_BYTES_MAX);
    let mut buf = vec![0u8; 4096];
    let value = [b'v'; 128];
    for i in 0..STATE_KEYS {
        let key = format!("key:{i:012}");
        let n = payload::encode_set(&mut buf, key.as_bytes(), &value).unwrap();
        let entry = Entry {
            id: ringraft_wal::IoId::new(1, i + 1),
            payload: &buf[..n],
        };
        kv.apply(std::iter::once(entry), &mut slots).unwrap();
    }
    let mut chunk = vec![0u8; 64 << 10];
    let mut times = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let (mut offset, mut chunks) = (0u64, 0);
        loop {
            let c = kv.snapshot_chunk(offset, &mut chunk).unwrap();
            offset += c.bytes as u64;
            chunks += 1;
            if c.done {
                break;
            }
        }
        times.push((start.elapsed(), offset, chunks));
    }
    times.sort();
    let (median, bytes, chunks) = times[times.len() / 2];
    eprintln!(
        "snapshot build of {STATE_KEYS} keys x 128 B: {bytes} bytes in {chunks} chunks, \
         median of 7 {median:.2?} (min {:.2?}, max {:.2?})",
        times[0].0, times[6].0
    );
}
