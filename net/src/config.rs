//! Start-up configuration of one shard's transport. Every bound the
//! transport keeps is here, chosen once.

use std::net::SocketAddr;
use std::time::Duration;

use crate::frame::{CONTROL_FRAME_BYTES_MAX, FRAME_HEADER_BYTES, Kind};

/// A peer node this shard talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's node id (what its Hello must say).
    pub node_id: u32,
    /// Where the peer's same shard listens.
    pub address: SocketAddr,
}

/// Configuration of one shard's transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Cluster this node belongs to; a Hello naming another is refused.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: u32,
    /// The shard (Raft group) of this transport.
    pub shard_id: u32,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Every peer; a Hello from a node not listed is refused.
    pub peers: Vec<PeerConfig>,
    /// Largest frame sent or accepted; a longer one closes the connection.
    pub frame_bytes_max: usize,
    /// Largest run of records one AppendEntries frame carries (the batching
    /// bound, etcd's `max_msg_bytes`).
    pub msg_bytes_max: usize,
    /// Bytes of the receive buffer of each inbound control lane.
    pub control_buffer_bytes: usize,
    /// Inbound connections that may wait for their Hello at once.
    pub pending_connections_max: usize,
    /// An inbound connection must finish its handshake within this time.
    pub handshake_timeout: Duration,
    /// First reconnect delay; doubles per failure up to the maximum, with
    /// jitter.
    pub reconnect_delay_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_delay_max: Duration,
    /// How long `poll` keeps checking for completions before it sleeps in
    /// the kernel. Zero (the default) sleeps at once: an idle node burns no
    /// CPU. A few tens of microseconds cut round trips where waking a sleeping
    /// core is slow (virtual machines), at the price of that much CPU after
    /// each burst of activity.
    pub spin_before_park: Duration,
    /// Shared cluster secret: when set, both sides of every connection prove
    /// they know it (HMAC-SHA256 challenge in the handshake). Off by default.
    pub secret: Option<[u8; 32]>,
    /// TESTING ONLY (fault injection): read at most this many bytes per
    /// second from each peer's inbound data lane (0: no limit, the default).
    /// Frames already read are not held back; the lane simply is not read
    /// until the budget allows, so TCP backpressure slows the sender as a
    /// slow link would. Control lanes (heartbeats, votes, acks) are never
    /// throttled: this is how an overloaded node keeps its heartbeats.
    pub fault_data_recv_bytes_per_sec: u64,
    /// TESTING ONLY (fault injection): send at most this many bytes per
    /// second on the data lane to the peer `fault_data_send_node` (every
    /// peer if None); 0: no limit, the default. While the budget is spent
    /// [`Transport::data_send_ready`](crate::Transport::data_send_ready) is
    /// false, as when a slow link's socket buffer is full. Control lanes are
    /// never throttled.
    pub fault_data_send_bytes_per_sec: u64,
    /// The peer node the send throttle applies to (None: all).
    pub fault_data_send_node: Option<u32>,
}

impl TransportConfig {
    /// A configuration with defaults for every bound.
    pub fn new(cluster_id: u64, node_id: u32, shard_id: u32, listen: SocketAddr) -> Self {
        TransportConfig {
            cluster_id,
            node_id,
            shard_id,
            listen,
            peers: Vec::new(),
            frame_bytes_max: (1 << 20) + DATA_HEAD_FRAME_BYTES_MAX,
            msg_bytes_max: 1 << 20,
            control_buffer_bytes: 64 << 10,
            pending_connections_max: 16,
            handshake_timeout: Duration::from_secs(2),
            reconnect_delay_min: Duration::from_millis(10),
            reconnect_delay_max: Duration::from_secs(1),
            spin_before_park: Duration::ZERO,
            secret: None,
            fault_data_recv_bytes_per_sec: 0,
            fault_data_send_bytes_per_sec: 0,
            fault_data_send_node: None,
        }
    }

    /// Why this configuration cannot work, if it cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let rules: [(bool, &'static str); 6] = [
            (
                self.msg_bytes_max + DATA_HEAD_FRAME_BYTES_MAX <= self.frame_bytes_max,
                "an AppendEntries of msg_bytes_max must fit in frame_bytes_max",
            ),
            (
                self.control_buffer_bytes >= CONTROL_FRAME_BYTES_MAX,
                "control_buffer_bytes must hold the largest control frame",
            ),
            (
                self.frame_bytes_max <= u32::MAX as usize,
                "frame_bytes_max must fit the 32-bit length field",
            ),
            (
                self.pending_connections_max > 0,
                "pending_connections_max must be at least 1",
            ),
            (
                Duration::ZERO < self.reconnect_delay_min
                    && self.reconnect_delay_min <= self.reconnect_delay_max,
                "0 < reconnect_delay_min <= reconnect_delay_max",
            ),
            (
                self.peers.iter().enumerate().all(|(i, peer)| {
                    peer.node_id != self.node_id
                        && self.peers[..i].iter().all(|p| p.node_id != peer.node_id)
                }),
                "peer node ids must be unique and differ from node_id",
            ),
        ];
        match rules.iter().find(|(holds, _)| !holds) {
            Some((_, rule)) => Err(ConfigError(rule)),
            None => Ok(()),
        }
    }
}

/// A transport configuration that cannot work: the rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport configuration: {0}")]
pub struct ConfigError(pub &'static str);

/// Header plus the largest head of a data-lane kind.
pub const DATA_HEAD_FRAME_BYTES_MAX: usize =
    FRAME_HEADER_BYTES + Kind::InstallSnapshot.head_bytes();
