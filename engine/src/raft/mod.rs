//! The sans-IO Raft core: no runtime, no clock, no file system, no socket.
//!
//! Time is [`RaftNode::tick`], input is messages and IO notifications, output
//! is bounded state the caller acts on. The core holds metadata only (terms,
//! indexes, record sizes, per-peer [`Progress`]); entry bytes live in the WAL
//! ring and travel without passing through here. One file per concept:
//!
//! | file | concept |
//! |---|---|
//! | `config.rs` | every bound, named |
//! | `rng.rs` | injected randomness |
//! | `term_index.rs` | runs of (term, first index) |
//! | `log.rs` | log metadata: terms, record sizes, durability |
//! | `inflights.rs` | a follower's send window |
//! | `progress.rs` | a follower's replication state (probe/replicate/snapshot) |
//! | `quorum.rs` | majority maths |
//! | `message.rs` | what nodes say to each other |
//! | `outbox.rs` | bounded outgoing messages |
//! | `read_index.rs` | linearizable reads |
//! | `node.rs` | the node itself |

pub mod config;
pub mod inflights;
pub mod log;
pub mod message;
pub mod node;
pub mod outbox;
pub mod progress;
pub mod quorum;
pub mod read_index;
pub mod rng;
pub mod term_index;

#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, VOTERS_MAX};
pub use log::{LogFull, LogMeta};
pub use message::{Append, Body, EntryMeta, Message, NodeId, Outgoing};
pub use node::{
    AppendOutcome, CompactError, HardState, ProposeError, RaftNode, Recovered, Role, StepOutcome,
    TransferError,
};
pub use progress::{Progress, ProgressState};
pub use read_index::{ReadError, ReadState};
pub use ringraft_wal::{IoId, Watermark};
pub use rng::{RaftRng, SplitMix64};
