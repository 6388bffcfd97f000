//! `ringraft-tools`: the library behind the `ringraft` binary.
//!
//! - [`service`]: the RESP service — protocol codec, commands, hash slots and
//!   the replicated KV + stream state machine the shard runtime drives.

pub mod service;
