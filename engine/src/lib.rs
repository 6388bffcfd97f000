//! `ringraft-engine`: the Raft core (`raft`, sans-IO), its deterministic
//! simulator (`sim`) and, later, the shard runtime that glues the core to
//! the WAL ring and the peer transport.

pub mod raft;
pub mod shard;
pub mod sim;
