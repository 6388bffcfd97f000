//! `ringraft bench` without `--target` and `ringraft cluster`: both start
//! `ringraft serve` processes. While the binary has no `serve` subcommand
//! they must fail clearly, naming the node and its exit status; once it
//! has, they must run a real cluster. Each test checks whichever holds.
//!
//! Base ports are below Linux's ephemeral range (32768-60999): an outgoing
//! connection of a concurrent test could otherwise hold one.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn ringraft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringraft"))
}

fn serve_exists() -> bool {
    ringraft()
        .args(["serve", "--help"])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn bench_without_target_runs_a_local_cluster_or_names_the_missing_serve() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("out.json");
    let output = ringraft()
        .args(["bench", "--duration", "2s", "--clients", "8"])
        // `serve --durability none` nodes must start and serve like the
        // default ones (process tests cover fsync).
        .args(["--durability", "none"])
        .args([
            "--base-port",
            "23001",
            "--json",
            json_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The temporary cluster directory is announced, then removed.
    let data_dir: PathBuf = stderr
        .lines()
        .find_map(|line| line.strip_prefix("starting 3 nodes in "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no data directory announced: {stderr}"))
        .into();
    assert!(data_dir.starts_with("/var/tmp"), "{stderr}");
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    if serve_exists() {
        assert!(output.status.success(), "{stdout}\n{stderr}");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap())
            .expect("JSON written");
        assert!(json["ops"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(json["durability"], "none", "{json}");
        // The run starts once leadership has settled, but an election
        // during it (a starved node on a loaded machine) may refuse a few
        // writes with a retryable error; nothing else may fail.
        let ops = json["ops"].as_u64().unwrap();
        let errors = json["errors"].as_u64().unwrap();
        let retryable: u64 = ["TRYAGAIN", "CLUSTERDOWN"]
            .iter()
            .filter_map(|kind| json["errors_by_kind"][kind].as_u64())
            .sum();
        assert!(errors == retryable && errors * 100 <= ops, "{json}");
        assert!(
            json["elections"].as_u64().is_some(),
            "ringraft reports Raft terms: {json}"
        );
        assert!(stdout.contains("throughput"), "{stdout}");
        assert!(stdout.contains("none durability"), "{stdout}");
    } else {
        assert!(!output.status.success(), "{stdout}");
        assert!(
            stderr.contains("exited early: exit status 2")
                && stderr.contains("unrecognized subcommand 'serve'"),
            "the failure names the node and why: {stderr}"
        );
        assert!(!json_path.exists(), "no figures without a cluster");
    }
}

/// A running launcher and its stdout lines (read on a thread so the test
/// can time out).
fn launch(base_port: u16, dir: &std::path::Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut launcher = ringraft()
        .args([
            "cluster",
            "--nodes",
            "3",
            "--base-port",
            &base_port.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = launcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (launcher, lines)
}

/// Waits for the `cluster ready` line.
fn wait_ready(lines: &mpsc::Receiver<String>) -> bool {
    (0..600).any(|_| {
        lines
            .recv_timeout(Duration::from_millis(100))
            .is_ok_and(|line| line.starts_with("cluster ready"))
    })
}

#[test]
fn cluster_launcher_prints_addresses_and_stops_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let base_port: u16 = 25001;
    let (mut launcher, lines) = launch(base_port, dir.path());
    let mut seen = Vec::new();
    for id in 1..=3u16 {
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        let expected = format!("node {id}: client 127.0.0.1:{}", base_port + id - 1);
        assert!(line.starts_with(&expected), "{line:?} vs {expected:?}");
        seen.push(line);
    }
    if serve_exists() {
        assert!(wait_ready(&lines), "every group elects a leader: {seen:?}");
        // SAFETY: kill takes no pointers; the pid is our live child.
        unsafe { libc::kill(launcher.id() as libc::pid_t, libc::SIGTERM) };
        let status = launcher.wait().unwrap();
        assert!(status.success(), "stopped on request: {status}");
        for id in 0..3 {
            TcpListener::bind(("127.0.0.1", base_port + id))
                .expect("every node stopped and freed its port");
        }
        for id in 1..=3 {
            assert!(dir.path().join(format!("node-{id}")).is_dir());
        }
    } else {
        let output = launcher.wait_with_output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("ringraft cluster: node ")
                && stderr.contains("exited early: exit status 2"),
            "{stderr}"
        );
    }
}

#[test]
fn cluster_launcher_reports_a_node_that_dies_and_stops_the_others() {
    if !serve_exists() {
        eprintln!(
            "SKIPPED: no `ringraft serve` yet (the launcher's early-exit report is checked by the test above)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base_port: u16 = 27001;
    let (launcher, lines) = launch(base_port, dir.path());
    let node_lines: Vec<String> = (0..3)
        .map(|_| lines.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    let pid: libc::pid_t = node_lines[1]
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("node 2's pid is printed: {node_lines:?}"));
    assert!(wait_ready(&lines), "ready: {node_lines:?}");
    // SAFETY: kill takes no pointers; pid is the launcher's live child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let output = launcher.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("node 2 exited early: killed by signal 9"),
        "{stderr}"
    );
    for id in 0..3 {
        TcpListener::bind(("127.0.0.1", base_port + id)).expect("the other nodes stopped");
    }
}
