//! `ringraft bench` without `--target` (node processes, or nodes in its own
//! process with `--in-process`) and `ringraft cluster` (node processes):
//! each runs a real local cluster and cleans up after itself.
//!
//! Base ports come from `common::ports`: below Linux's ephemeral range (an
//! outgoing connection of a concurrent test could otherwise hold one) and
//! never the same for two tests running at once.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Ports a 3-node launcher cluster takes from its base port: clients at
/// `base + 0..3`, peers from `base + 1000`, 256 a node (see
/// tools/src/bench/local_cluster.rs).
const CLUSTER_PORTS: u16 = 1000 + 3 * 256;

fn ringraft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringraft"))
}

/// Runs `ringraft bench` with `args` plus `--json` and reserved
/// `--base-port`; returns the JSON, the stdout and the announced (then
/// removed) data directory.
fn bench(args: &[&str]) -> (Value, String, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("out.json");
    let base_port = common::ports::block(CLUSTER_PORTS);
    let output = ringraft()
        .arg("bench")
        .args(args)
        .args(["--base-port", &base_port.to_string()])
        .args(["--json", json_path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let data_dir: PathBuf = stderr
        .lines()
        .find_map(|line| line.strip_prefix("starting 3 nodes "))
        .and_then(|rest| rest.split(" in ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no data directory announced: {stderr}"))
        .into();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("JSON written");
    (json, stdout, data_dir)
}

/// The run starts once leadership has settled, but an election during it
/// (a starved node on a loaded machine) may refuse a few writes with a
/// retryable error; nothing else may fail.
fn assert_only_retryable_errors(json: &Value) {
    let ops = json["ops"].as_u64().unwrap();
    let errors = json["errors"].as_u64().unwrap();
    let retryable: u64 = ["TRYAGAIN", "CLUSTERDOWN"]
        .iter()
        .filter_map(|kind| json["errors_by_kind"][kind].as_u64())
        .sum();
    assert!(
        ops > 0 && errors == retryable && errors * 100 <= ops,
        "{json}"
    );
}

#[test]
fn bench_without_target_runs_a_local_cluster_of_processes_and_removes_it() {
    let (json, stdout, data_dir) = bench(&[
        "--duration",
        "2s",
        "--clients",
        "8",
        // `serve --durability none` nodes must start and serve like the
        // default ones (process tests cover fsync).
        "--durability",
        "none",
    ]);
    assert!(data_dir.starts_with("/var/tmp"), "{}", data_dir.display());
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    assert_eq!(json["durability"], "none", "{json}");
    assert_only_retryable_errors(&json);
    assert!(
        json["elections"].as_u64().is_some(),
        "ringraft reports Raft terms: {json}"
    );
    // Node processes: their memory is sampled, their allocations are not
    // counted (another process).
    let rss = json["rss_bytes_max"].as_u64().expect("rss_bytes_max");
    assert!(rss > 1 << 20, "{json}");
    assert!(json["heap_allocs_per_op"].is_null(), "{json}");
    assert!(stdout.contains("throughput"), "{stdout}");
    assert!(stdout.contains("none durability"), "{stdout}");
}

#[test]
fn an_in_process_cluster_allocates_nothing_per_request_once_every_key_exists() {
    // 64 keys exist after a few hundred requests, well inside the warm-up
    // (the first fifth of the run): from then on every SET overwrites a
    // value in place, so any allocation counted is the engine's or the
    // service's own per-request cost.
    let (json, stdout, data_dir) = bench(&[
        "--in-process",
        "--duration",
        "3s",
        "--clients",
        "8",
        "--keys",
        "64",
    ]);
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    assert_only_retryable_errors(&json);
    assert!(stdout.contains("cluster in this process"), "{stdout}");
    let per_op = json["heap_allocs_per_op"]
        .as_f64()
        .expect("in-process runs count allocations");
    // One allocation per request would give ≥ 1; a handful over the whole
    // window (a log line, a slot-map refresh) stays far below 0.01.
    assert!(
        per_op < 0.01,
        "{per_op} heap allocations per request: {json}"
    );
    assert!(json["rss_bytes_max"].as_u64().unwrap() > 1 << 20, "{json}");
}

#[test]
fn the_get_workload_reads_values_its_prefill_wrote() {
    // Values larger than the generator's usual 4 KiB reply buffer: a GET
    // reply carries the whole value back.
    let (json, stdout, data_dir) = bench(&[
        "--workload",
        "get",
        "--keys",
        "300",
        "--payload-bytes",
        "5000",
        "--duration",
        "1s",
        "--clients",
        "8",
    ]);
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    assert_eq!(json["workload"], "get", "{json}");
    assert_only_retryable_errors(&json);
    // Every key was set before the timed run: no read comes back empty.
    assert_eq!(json["nulls"], 0, "{json}");
    assert!(stdout.contains("misses      0"), "{stdout}");
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
    let base_port = common::ports::block(CLUSTER_PORTS);
    let (mut launcher, lines) = launch(base_port, dir.path());
    let mut seen = Vec::new();
    for id in 1..=3u16 {
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        let expected = format!("node {id}: client 127.0.0.1:{}", base_port + id - 1);
        assert!(line.starts_with(&expected), "{line:?} vs {expected:?}");
        seen.push(line);
    }
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
}

#[test]
fn cluster_launcher_reports_a_node_that_dies_and_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let base_port = common::ports::block(CLUSTER_PORTS);
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
