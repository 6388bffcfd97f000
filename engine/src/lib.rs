//! `ringraft-engine`: the Raft core (`raft`, sans-IO), its deterministic
//! simulator (`sim`) and the shard runtime (`shard`) that glues the core to
//! the WAL ring and the peer transport, one thread per Raft group.
//!
//! Applications link it through [`shard::Node`]: `Node::start` runs the
//! shards, and other threads call `propose` / `read_index` through each
//! shard's bounded mailbox. A server that wants its client sockets served
//! by the shard threads themselves (thread-per-core: no thread per
//! connection, a write goes from the socket into the ring on the shard's
//! own thread) implements [`shard::Frontend`] and starts the node with
//! `Node::start_with_frontends`.

pub mod raft;
pub mod shard;
pub mod sim;
