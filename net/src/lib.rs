//! `ringraft-net`: the peer transport of ringraft.
//!
//! - [`frame`]: the wire format (header, per-kind heads, payloads) with
//!   encoders into caller buffers and borrowing decoders.
//! - [`transport`]: one shard's connections to its peers, a control lane and
//!   a data lane each way, driven from the shard's thread through io_uring.
//! - [`config`], [`counters`], [`error`]: its bounds, what it observed, and
//!   its typed errors.

mod auth;
pub mod config;
pub mod counters;
pub mod error;
pub mod frame;
mod socket;
pub mod transport;

pub use config::{ConfigError, PeerConfig, TransportConfig};
pub use counters::{CloseReason, Counters};
pub use error::{FrameError, TransportError};
pub use transport::{DataEvent, DataPending, Transport};
