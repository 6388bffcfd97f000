//! `ringraft-engine`: the Raft core (`raft`, sans-IO) and, later, the shard
//! runtime that glues it to the WAL ring and the peer transport.

pub mod raft;
