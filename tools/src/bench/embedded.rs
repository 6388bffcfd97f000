//! `ringraft bench --in-process`: the local cluster's nodes run as servers
//! in the benchmark's own process (each node's shard threads, as
//! `ringraft serve` would start them), so the counting allocator sees their
//! heap allocations. Same ports, directories and flags as the process
//! cluster of `local_cluster.rs`: each node's configuration is parsed from
//! the very `serve` arguments a node process would get.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use super::BenchError;
use super::local_cluster::ClusterSpec;
use super::topology;
use crate::serve::ServeArgs;
use crate::server::{self, RunningServer};

/// `ringraft serve`'s flags, parsed the way the binary parses them.
#[derive(Debug, Parser)]
struct ServeCommand {
    #[command(flatten)]
    args: ServeArgs,
}

/// Nodes running in this process. Dropping it stops them.
#[derive(Debug)]
pub struct EmbeddedCluster {
    servers: Vec<(u16, RunningServer)>,
}

impl EmbeddedCluster {
    /// Starts every node of `spec` in this process.
    pub fn start(spec: &ClusterSpec) -> Result<EmbeddedCluster, BenchError> {
        spec.check()?;
        let mut cluster = EmbeddedCluster {
            servers: Vec::with_capacity(usize::from(spec.nodes)),
        };
        for id in 1..=spec.nodes {
            std::fs::create_dir_all(spec.node_dir(id))?;
            // serve_args starts with "serve", which clap takes as argv[0].
            let command = ServeCommand::try_parse_from(spec.serve_args(id))
                .map_err(|e| BenchError::Config(format!("node {id}: {e}")))?;
            let config = crate::serve::server_config(command.args)
                .map_err(|e| BenchError::Config(format!("node {id}: {e}")))?;
            let running = server::start(config)
                .map_err(|e| BenchError::Cluster(format!("node {id} did not start: {e}")))?;
            cluster.servers.push((id, running));
        }
        Ok(cluster)
    }

    /// Every node's client address, in id order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|(_, s)| s.client_addr()).collect()
    }

    /// The first node whose shard stopped on an error, with the error.
    pub fn failure(&self) -> Option<(u16, String)> {
        self.servers
            .iter()
            .find_map(|(id, s)| s.failure().map(|f| (*id, f)))
    }

    /// Waits until every node agrees on a leader for every slot (unchanged
    /// for `settle`), failing if a shard stops or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration, settle: Duration) -> Result<(), BenchError> {
        topology::wait_ready(&self.client_addrs(), timeout, settle, || {
            self.failure()
                .map(|(id, failure)| BenchError::Cluster(format!("node {id} stopped: {failure}")))
        })
    }

    /// Stops every node; the first error (a shard that failed) is returned.
    pub fn stop(self) -> Result<(), BenchError> {
        let mut first = Ok(());
        for (id, server) in self.servers {
            if let Err(error) = server.stop()
                && first.is_ok()
            {
                first = Err(BenchError::Cluster(format!("node {id}: {error}")));
            }
        }
        first
    }
}
