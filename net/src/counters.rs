//! Why connections were closed, counted: the observable side of hostile
//! input and of peers coming and going.

use std::fmt;

/// Why the transport closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A frame failed to decode (magic, version, kind, length, CRC, field).
    BadFrame,
    /// A frame was longer than `frame_bytes_max` (or than a control frame
    /// may be, on the control lane).
    FrameTooLong,
    /// AppendEntries records failed `verify_run` (CRC, gap, term).
    BadRecords,
    /// A frame of a kind that does not belong on this lane or at this point.
    UnexpectedKind,
    /// The Hello named another cluster.
    WrongCluster,
    /// The Hello named a node that is not a configured peer.
    UnknownNode,
    /// The Hello asked for an unsupported protocol version.
    UnsupportedVersion,
    /// The Hello named another shard.
    WrongShard,
    /// HMAC authentication failed or one side did not offer it.
    AuthFailed,
    /// The handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// Every pending-connection slot was taken.
    PendingFull,
    /// The peer answered our Hello with an Error frame.
    RefusedByPeer,
    /// The peer closed the connection or it failed (reset, refused).
    PeerClosed,
    /// A newer connection from the same peer and lane replaced this one.
    Replaced,
}

impl CloseReason {
    /// Number of reasons.
    pub const COUNT: usize = 14;
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Monotonic counters of one transport.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    closed: [u64; CloseReason::COUNT],
    /// Connections that completed their handshake (both directions).
    pub connections_up: u64,
    /// Outbound connection attempts.
    pub connect_attempts: u64,
    /// Control messages replaced, unsent, by a newer one of the same kind.
    pub control_replaced: u64,
    /// Control messages sent.
    pub control_sent: u64,
    /// Control messages received.
    pub control_received: u64,
    /// AppendEntries and snapshot frames received and verified.
    pub data_frames_received: u64,
    /// Data-lane sends that could not be written at once and whose tail was
    /// copied into the lane's send buffer.
    pub data_send_partial: u64,
}

impl Counters {
    /// Connections closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize]
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason as usize] += 1;
    }
}

const _: () = assert!(CloseReason::Replaced as usize + 1 == CloseReason::COUNT);
