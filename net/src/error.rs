//! Typed errors of the transport.

use crate::frame::Kind;

/// Why bytes are not a valid frame. Every variant closes the connection it
/// arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not the frame magic.
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    /// The header speaks a protocol version this build does not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The kind byte names no kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The frame is longer than this receiver accepts.
    #[error("frame of {frame_bytes} bytes exceeds frame_bytes_max {frame_bytes_max}")]
    TooLong {
        /// Bytes the header claims (header included).
        frame_bytes: usize,
        /// The receiver's limit.
        frame_bytes_max: usize,
    },
    /// The length does not fit the kind (shorter than its head, a payload
    /// where none is allowed, records not a multiple of 8 bytes).
    #[error("body of {body_len} bytes does not fit a {kind:?} frame")]
    BadLength {
        /// Kind of the frame.
        kind: Kind,
        /// Body length claimed.
        body_len: usize,
    },
    /// The header CRC (or a snapshot chunk's data CRC) does not match.
    #[error("frame crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC in the frame.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A field holds a value outside its domain (flag not 0/1, unknown lane,
    /// reserved bits set).
    #[error("a field of a {kind:?} frame holds an invalid value")]
    BadField {
        /// Kind of the frame.
        kind: Kind,
    },
}

/// Why the transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration breaks one of its rules.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Binding, io_uring set-up or waiting failed.
    #[error("transport io: {0}")]
    Io(#[from] std::io::Error),
    /// The lane to this peer is not connected now (it reconnects by itself).
    #[error("the {lane:?} lane to node {node_id} is not connected")]
    NotConnected {
        /// The peer.
        node_id: u32,
        /// The lane.
        lane: crate::frame::Lane,
    },
    /// The previous data frame to this peer is still being written: wait
    /// for `data_send_ready`.
    #[error("the data lane to node {node_id} is still sending the previous frame")]
    Busy {
        /// The peer.
        node_id: u32,
    },
    /// More records than one frame may carry.
    #[error("{bytes} bytes of records exceed msg_bytes_max {msg_bytes_max}")]
    TooLarge {
        /// Bytes offered.
        bytes: usize,
        /// The bound.
        msg_bytes_max: usize,
    },
}
