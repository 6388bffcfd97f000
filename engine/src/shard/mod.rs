//! The shard runtime: what one core owns, and the [`Node`] that runs one
//! shard per Raft group.
//!
//! | file | concept |
//! |---|---|
//! | `state_machine.rs` | the contract with the replicated application |
//! | `mailbox.rs` | bounded requests into a shard from other threads |
//! | `wire.rs` | core control messages ↔ transport frames |
//! | `runtime.rs` | one shard's thread and loop (core + WAL + transport) |
//! | `node.rs` | the library API: start, propose, read_index, status, stop |
//! | `budget.rs` | the worst-case memory of a node, itemized from its configuration |
//! | `fault.rs` | TESTING ONLY: slow-disk and slow-link fault hooks |

pub mod budget;
pub mod fault;
pub mod mailbox;
pub mod node;
pub mod runtime;
pub mod state_machine;
pub mod wire;

pub use budget::{BudgetItem, MemoryBudget};
pub use fault::{FaultParseError, FaultSwitch, Faults};
pub use mailbox::{CallError, Outcome, RequestKind};
pub use node::{Node, NodeConfig, NodeError, RequestError};
pub use runtime::{PeerStatus, ShardBounds, ShardError, ShardStatus};
pub use state_machine::{
    ApplyError, Entry, ResponseSlots, ResponseTooLarge, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
