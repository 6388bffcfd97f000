//! The shard runtime: what one core owns, and the [`Node`] that runs one
//! shard per Raft group.
//!
//! | file | concept |
//! |---|---|
//! | `state_machine.rs` | the contract with the replicated application |
//! | `mailbox.rs` | bounded requests into a shard from other threads |
//! | `frontend.rs` | client sockets served by the shard loop itself |
//! | `requests.rs` | (child of `runtime`) frontend hooks and proposal origins |
//! | `wire.rs` | core control messages ↔ transport frames |
//! | `runtime.rs` | one shard's thread and loop (core + WAL + transport) |
//! | `snapshot.rs` | log compaction: snapshot files, build, send, install (a child of `runtime`) |
//! | `node.rs` | the library API: start, propose, read_index, status, stop |
//! | `membership.rs` | the node id, voters and shard count a data directory belongs to |
//! | `budget.rs` | the worst-case memory of a node, itemized from its configuration |
//! | `fault.rs` | TESTING ONLY: slow-disk and slow-link fault hooks |

pub mod budget;
pub mod fault;
pub mod frontend;
pub mod mailbox;
pub mod membership;
pub mod node;
pub mod runtime;
pub mod state_machine;
pub mod wire;

pub use budget::{BudgetItem, MemoryBudget};
pub use fault::{FaultParseError, FaultSwitch, Faults};
pub use frontend::{Frontend, FrontendContext, FrontendFactory, ShardRequests};
pub use mailbox::{CallError, Notifier, Outcome, RequestKind, Ticket};
pub use node::{Node, NodeConfig, NodeError, RequestError};
pub use runtime::{
    Damage, PeerStatus, ShardBounds, ShardError, ShardShared, ShardStatus, SnapshotConfig,
    SnapshotFileError, SnapshotHeader,
};
pub use state_machine::{
    ApplyError, Entry, ResponseSlots, ResponseTooLarge, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
