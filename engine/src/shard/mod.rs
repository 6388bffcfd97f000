//! The shard: what one core owns. For now, the contract between the engine
//! and the application it replicates ([`StateMachine`]); the runtime that
//! glues the Raft core, the WAL ring and the transport comes on top of it.

pub mod state_machine;

pub use state_machine::{
    ApplyError, Entry, ResponseSlots, ResponseTooLarge, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
