//! A local cluster of `ringraft serve` processes on loopback, used by
//! `ringraft cluster` (in the foreground) and by `ringraft bench` without
//! `--target` (in a temporary directory).
//!
//! Ports and directories of node `id` (1-based) for base port `P`:
//!
//! ```text
//!  client (RESP)   P + (id − 1)                      e.g. 7001, 7002, 7003
//!  peer, shard i   P + 1000 + (id − 1)·256 + i       e.g. 8001+i, 8257+i, 8513+i
//!  data            <data-dir>/node-<id>/
//!  log (Files)     <data-dir>/node-<id>.log
//! ```
//!
//! Every node is started as
//! `<this executable> serve --id <id> --data-dir <dir> --peers 1=127.0.0.1:<peer1>,...
//!  --client-addr 127.0.0.1:<client> --cluster-id <X> [--shards S]
//!  (--first-core C | --no-pin) [extra...]`.
//!
//! Pinning: shard threads get a core of their own in node order, node k's
//! shards on cores (k−1)·S.. (`--first-core`), as long as cores last; the
//! nodes after that are not pinned (`--no-pin`) and run wherever there is
//! room. Two pinned threads never share a core: with 3 nodes on 2 cores,
//! pinning node 3 to core 0 beside the leader kept it from the core a
//! follower left idle (`ringraft bench`, 64 clients, one key, 5 alternating
//! runs: median 56.9k ops/s, against 63.3k with node 3 unpinned), while
//! pinning nobody lengthened the 1-client p50 (287 µs against 258 µs:
//! woken threads then often wait for the waker's core).
//! Children get their own process group (a terminal's Ctrl-C reaches only
//! the launcher, which forwards it) and SIGTERM if the launcher dies.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;
use super::topology;

/// Peer ports reserved per node: shards per node are at most this.
pub const PEER_PORTS_PER_NODE: u16 = 256;
/// Offset of the first peer port from the base port.
const PEER_PORT_OFFSET: u16 = 1000;
/// Nodes a local cluster may have.
pub const NODES_MAX: u16 = 16;
/// Lines of a node's log shown when it exits early.
const LOG_TAIL_LINES: usize = 20;

/// This machine's cores (what a local cluster's nodes share).
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where node output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// The launcher's stdout/stderr (interactive `ringraft cluster`).
    Inherit,
    /// `<data-dir>/node-<id>.log` (the benchmark keeps its output clean).
    Files,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Node count (ids 1..=nodes).
    pub nodes: u16,
    /// `--shards` for every node; None: the node's default.
    pub shards: Option<u16>,
    /// Parent of the node directories.
    pub data_dir: PathBuf,
    /// First client port; see the module table.
    pub base_port: u16,
    /// `--cluster-id`.
    pub cluster_id: u64,
    /// Further `serve` arguments (e.g. `--durability none`).
    pub extra_args: Vec<String>,
    /// Node output.
    pub logs: Logs,
    /// Cores the nodes share (this machine's).
    pub cores: usize,
}

impl ClusterSpec {
    /// Node `id`'s client address.
    pub fn client_addr(&self, id: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + (id - 1)))
    }

    /// Node `id`'s peer address (shard i listens on its port + i).
    pub fn peer_addr(&self, id: u16) -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            self.base_port + PEER_PORT_OFFSET + (id - 1) * PEER_PORTS_PER_NODE,
        ))
    }

    pub(super) fn check(&self) -> Result<(), BenchError> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(BenchError::Config(format!(
                "--nodes must be between 1 and {NODES_MAX}"
            )));
        }
        if let Some(shards) = self.shards
            && (shards == 0 || shards > PEER_PORTS_PER_NODE)
        {
            return Err(BenchError::Config(format!(
                "--shards must be between 1 and {PEER_PORTS_PER_NODE}"
            )));
        }
        let top = u32::from(self.base_port)
            + u32::from(PEER_PORT_OFFSET)
            + u32::from(self.nodes) * u32::from(PEER_PORTS_PER_NODE);
        if self.base_port < 1024 || top > u32::from(u16::MAX) {
            return Err(BenchError::Config(format!(
                "--base-port {} leaves no room for the peer ports (up to {top})",
                self.base_port
            )));
        }
        Ok(())
    }

    /// Fails if a client port is taken (another cluster is running).
    pub fn check_ports_free(&self) -> Result<(), BenchError> {
        for id in 1..=self.nodes {
            let addr = self.client_addr(id);
            TcpListener::bind(addr).map_err(|error| {
                BenchError::Cluster(format!(
                    "client port {addr} is in use ({error}); pick another --base-port"
                ))
            })?;
        }
        Ok(())
    }

    /// The `serve` arguments of node `id`.
    pub fn serve_args(&self, id: u16) -> Vec<String> {
        let peers: Vec<String> = (1..=self.nodes)
            .map(|peer| format!("{peer}={}", self.peer_addr(peer)))
            .collect();
        let mut args = vec![
            "serve".to_string(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.node_dir(id).display().to_string(),
            "--peers".into(),
            peers.join(","),
            "--client-addr".into(),
            self.client_addr(id).to_string(),
            "--cluster-id".into(),
            self.cluster_id.to_string(),
        ];
        if let Some(shards) = self.shards {
            args.extend(["--shards".into(), shards.to_string()]);
        }
        // A node's default is one shard per core. Placement given among the
        // extra arguments (`bench --serve-arg=--no-pin`) is the user's.
        let shards = self.shards.map_or(self.cores, usize::from);
        let first_core = usize::from(id - 1) * shards;
        let placed = self
            .extra_args
            .iter()
            .any(|arg| arg == "--no-pin" || arg.starts_with("--first-core"));
        if !placed && first_core + shards <= self.cores {
            args.extend(["--first-core".into(), first_core.to_string()]);
        } else if !placed {
            args.push("--no-pin".into());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    pub(super) fn node_dir(&self, id: u16) -> PathBuf {
        self.data_dir.join(format!("node-{id}"))
    }

    fn log_path(&self, id: u16) -> PathBuf {
        self.data_dir.join(format!("node-{id}.log"))
    }
}

/// One running node.
#[derive(Debug)]
pub struct NodeProcess {
    /// `--id`.
    pub id: u16,
    /// Where clients connect.
    pub client_addr: SocketAddr,
    /// Its log file, when logs go to files.
    pub log_path: Option<PathBuf>,
    child: Child,
    /// Set once the child has been reaped.
    status: Option<ExitStatus>,
}

impl NodeProcess {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The running nodes. Dropping it stops them.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<NodeProcess>,
}

impl LocalCluster {
    /// Starts every node of `spec` from the current executable.
    pub fn start(spec: &ClusterSpec) -> Result<LocalCluster, BenchError> {
        spec.check()?;
        let exe = std::env::current_exe()?;
        std::fs::create_dir_all(&spec.data_dir)?;
        let mut cluster = LocalCluster {
            nodes: Vec::with_capacity(usize::from(spec.nodes)),
        };
        for id in 1..=spec.nodes {
            std::fs::create_dir_all(spec.node_dir(id))?;
            let mut command = Command::new(&exe);
            command.args(spec.serve_args(id)).stdin(Stdio::null());
            let log_path = match spec.logs {
                Logs::Inherit => None,
                Logs::Files => {
                    let path = spec.log_path(id);
                    let log = File::create(&path)?;
                    command.stdout(log.try_clone()?).stderr(log);
                    Some(path)
                }
            };
            command.process_group(0);
            // SAFETY: the closure runs in the child between fork and exec
            // and calls only prctl and getppid, which are async-signal-safe;
            // it touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() == 1 {
                        return Err(std::io::Error::other("launcher exited"));
                    }
                    Ok(())
                });
            }
            let child = command.spawn().map_err(|error| {
                BenchError::Cluster(format!(
                    "cannot start node {id} ({}): {error}",
                    exe.display()
                ))
            })?;
            cluster.nodes.push(NodeProcess {
                id,
                client_addr: spec.client_addr(id),
                log_path,
                child,
                status: None,
            });
        }
        Ok(cluster)
    }

    /// The nodes, in id order.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// Every node's client address.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.client_addr).collect()
    }

    /// The first node found to have exited since the last call, with its
    /// status (reaped).
    pub fn exited(&mut self) -> Option<(u16, ExitStatus)> {
        for node in &mut self.nodes {
            if node.status.is_some() {
                continue;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                node.status = Some(status);
                return Some((node.id, status));
            }
        }
        None
    }

    /// Waits until the cluster is [`Readiness`]-ready (every node agrees on
    /// a leader for all 16384 slots, unchanged for `settle`), failing if a
    /// node exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration, settle: Duration) -> Result<(), BenchError> {
        let addrs = self.client_addrs();
        topology::wait_ready(&addrs, timeout, settle, || {
            self.exited()
                .map(|(id, status)| self.early_exit_error(id, status))
        })
    }

    /// The error for node `id` exiting on its own, with its log's tail.
    pub fn early_exit_error(&self, id: u16, status: ExitStatus) -> BenchError {
        let mut message = format!("node {id} exited early: {}", describe(status));
        if let Some(path) = self
            .nodes
            .iter()
            .find(|node| node.id == id)
            .and_then(|node| node.log_path.as_deref())
        {
            message.push_str(&format!("\n--- last lines of {} ---\n", path.display()));
            message.push_str(&log_tail(path));
        }
        BenchError::Cluster(message)
    }

    /// Sends `signal` to every live node, waits up to `grace`, then kills
    /// what is left. Returns each node's exit status.
    pub fn stop(&mut self, signal: i32, grace: Duration) -> Vec<(u16, ExitStatus)> {
        for node in &mut self.nodes {
            if node.status.is_none() {
                // SAFETY: kill takes no pointers; the pid is our unreaped
                // child, so it cannot have been reused.
                unsafe {
                    libc::kill(node.child.id() as libc::pid_t, signal);
                }
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.nodes.iter().any(|node| node.status.is_none()) {
            while self.exited().is_some() {}
            std::thread::sleep(Duration::from_millis(10));
        }
        for node in &mut self.nodes {
            if node.status.is_none() {
                let _ = node.child.kill();
                node.status = node.child.wait().ok();
            }
        }
        self.nodes
            .iter()
            .filter_map(|node| node.status.map(|status| (node.id, status)))
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(5));
    }
}

/// "exit status 3" or "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_arguments_follow_the_port_plan() {
        let spec = ClusterSpec {
            nodes: 3,
            shards: Some(2),
            data_dir: PathBuf::from("/d"),
            base_port: 7001,
            cluster_id: 9,
            extra_args: Vec::new(),
            logs: Logs::Files,
            cores: 6,
        };
        assert_eq!(
            spec.serve_args(2).join(" "),
            "serve --id 2 --data-dir /d/node-2 \
             --peers 1=127.0.0.1:8001,2=127.0.0.1:8257,3=127.0.0.1:8513 \
             --client-addr 127.0.0.1:7002 --cluster-id 9 --shards 2 --first-core 2"
        );
        // Cores run out at node 2: it and node 3 are not pinned.
        let shared = ClusterSpec {
            cores: 3,
            ..spec.clone()
        };
        let tail = |spec: &ClusterSpec, id| spec.serve_args(id)[11..].join(" ");
        assert_eq!(
            [tail(&shared, 1), tail(&shared, 2), tail(&shared, 3)],
            [
                "--shards 2 --first-core 0",
                "--shards 2 --no-pin",
                "--shards 2 --no-pin"
            ]
        );
        // 3 nodes of 1 shard on 2 cores: nodes 1 and 2 pinned, node 3 not.
        let one_shard = ClusterSpec {
            shards: Some(1),
            cores: 2,
            ..spec.clone()
        };
        assert_eq!(
            [
                tail(&one_shard, 1),
                tail(&one_shard, 2),
                tail(&one_shard, 3)
            ],
            [
                "--shards 1 --first-core 0",
                "--shards 1 --first-core 1",
                "--shards 1 --no-pin"
            ]
        );
        // The node's default shard count (one per core): only node 1 pinned.
        let node_default = ClusterSpec {
            shards: None,
            ..spec.clone()
        };
        assert_eq!(
            [tail(&node_default, 1), tail(&node_default, 2)],
            ["--first-core 0", "--no-pin"]
        );
        // Placement among the extra arguments replaces ours.
        for extra in ["--no-pin", "--first-core=1"] {
            let placed = ClusterSpec {
                extra_args: vec![extra.into()],
                ..one_shard.clone()
            };
            for id in 1..=3 {
                assert_eq!(tail(&placed, id), format!("--shards 1 {extra}"));
            }
        }
        assert!(spec.check().is_ok());
        let crowded = ClusterSpec {
            base_port: 65000,
            ..spec.clone()
        };
        assert!(crowded.check().is_err());
        let too_many_shards = ClusterSpec {
            shards: Some(300),
            ..spec
        };
        assert!(too_many_shards.check().is_err());
    }
}
