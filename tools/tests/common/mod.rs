//! What the process-level tests of tools/tests share (`mod common;`):
//! reserved loopback ports, the command line of a `ringraft serve` node and
//! a blocking RESP client.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

pub mod ports;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringraft_tools::service::resp::reply_len;

/// The ports of a local cluster: node `k` (from 1) serves clients on
/// `base + k` and listens for peers on `base + 100 k + shard`.
#[derive(Debug, Clone, Copy)]
pub struct ClusterPorts {
    pub base: u16,
}

impl ClusterPorts {
    /// Reserves the ports of `nodes` nodes (fewer than 100) of `shards`
    /// shards (at most 100) each.
    pub fn reserve(nodes: u16, shards: u16) -> ClusterPorts {
        assert!(nodes < 100 && shards <= 100);
        ClusterPorts {
            base: ports::block(100 * nodes + shards),
        }
    }

    pub fn client(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + id as u16))
    }

    /// Node `id`'s peer address (its shard 0; shard `s` listens on `+ s`).
    pub fn peer(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + 100 * id as u16))
    }

    /// `--peers` of a cluster of nodes 1..=`nodes`.
    pub fn peers_arg(&self, nodes: u64) -> String {
        (1..=nodes)
            .map(|k| format!("{k}={}", self.peer(k)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose client address is `addr` (e.g. from a -MOVED).
    pub fn node_of(&self, addr: SocketAddr) -> u64 {
        u64::from(addr.port() - self.base)
    }
}

/// `ringraft serve` as node `id` with its data in `data_dir`; the caller
/// adds the rest (`--shards`, `--wal-mib`, output).
pub fn serve(id: u64, data_dir: &Path, peers: &str, client: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringraft"));
    command
        .args(["serve", "--id", &id.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--peers", peers])
        .args(["--client-addr", &client.to_string()]);
    command
}

/// A RESP request: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// `value` as a RESP bulk string reply.
pub fn bulk(value: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", value.len()).into_bytes();
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads `count` whole replies.
pub fn read_replies(stream: &mut TcpStream, count: usize) -> std::io::Result<Vec<Vec<u8>>> {
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

/// Sends one command to `addr` on a new connection and returns the raw
/// reply (an error if the node does not answer within `timeout`).
pub fn call_once(addr: SocketAddr, args: &[&[u8]], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(&command(args))?;
    Ok(read_replies(&mut stream, 1)?.remove(0))
}

/// Resident memory of process `pid`.
pub fn rss_bytes(pid: u32) -> u64 {
    ringraft_engine::shard::budget::rss_bytes_of(&pid.to_string()).expect("a live process")
}
