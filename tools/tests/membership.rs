//! `ringraft serve` over an existing data directory refuses a restart with
//! other `--peers` (or another `--id`): non-zero exit, both values named on
//! stderr, the data directory left as it was.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use common::ports;
use std::time::{Duration, Instant};

/// Only a hung process takes this long.
const DEADLINE: Duration = Duration::from_secs(20);

fn serve(id: u64, peers: &[(u64, SocketAddr)], client: SocketAddr, dir: &Path) -> Command {
    let peers: Vec<String> = peers.iter().map(|(id, a)| format!("{id}={a}")).collect();
    let mut command = common::serve(id, dir, &peers.join(","), client);
    command
        .args(["--shards", "1", "--wal-mib", "16", "--no-pin"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits for the process to end (it must, by itself); its status and stderr.
fn finish(mut child: Child) -> (ExitStatus, String) {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            return (
                output.status,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_refuses_a_restart_with_other_peers_or_another_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node-1");
    let peers = [(1, ports::addr()), (2, ports::addr()), (3, ports::addr())];
    let client = ports::addr();

    // First start: the node creates its WAL and records its membership.
    let mut first = serve(1, &peers, client, &data)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !(data.join("membership").exists() && data.join("shard-0.wal").exists()) {
        assert!(
            start.elapsed() < DEADLINE,
            "the node never created its files"
        );
        assert!(first.try_wait().unwrap().is_none(), "the first start ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let membership = std::fs::read(data.join("membership")).unwrap();

    // Other peers: node 4 instead of node 3.
    let other_peers = [peers[0], peers[1], (4, ports::addr())];
    let child = serve(1, &other_peers, client, &data).spawn().unwrap();
    let (status, stderr) = finish(child);
    assert!(
        !status.success(),
        "a restart with other peers ran: {status}"
    );
    assert!(
        stderr.contains("voters 1,2,3") && stderr.contains("voters 1,2,4"),
        "stderr names both voter sets:\n{stderr}"
    );

    // Another id over node 1's directory.
    let child = serve(2, &peers, client, &data).spawn().unwrap();
    let (status, stderr) = finish(child);
    assert!(!status.success(), "a restart as node 2 ran: {status}");
    assert!(
        stderr.contains("node 1") && stderr.contains("node 2"),
        "stderr names both ids:\n{stderr}"
    );

    // Refusals change nothing on disk.
    assert_eq!(std::fs::read(data.join("membership")).unwrap(), membership);
}
