//! The shard runtime: what one core owns, and the [`Node`] that runs one
//! shard per Raft group.
//!
//! | file | concept |
//! |---|---|
//! | `state_machine.rs` | the contract with the replicated application |
//! | `mailbox.rs` | bounded requests into a shard from other threads |
//! | `wire.rs` | core control messages ↔ transport frames |
//! | `runtime.rs` | one shard's thread and loop (core + WAL + transport) |
//! | `snapshot.rs` | log compaction: snapshot files, build, send, install (a child of `runtime`) |
//! | `node.rs` | the library API: start, propose, read_index, status, stop |

pub mod mailbox;
pub mod node;
pub mod runtime;
pub mod state_machine;
pub mod wire;

pub use mailbox::{CallError, Outcome, RequestKind};
pub use node::{Node, NodeConfig, NodeError, RequestError};
pub use runtime::{
    Damage, PeerStatus, ShardBounds, ShardError, ShardStatus, SnapshotConfig, SnapshotFileError,
    SnapshotHeader,
};
pub use state_machine::{
    ApplyError, Entry, ResponseSlots, ResponseTooLarge, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
