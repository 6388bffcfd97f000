//! The RESP service: what a Redis client talks to.
//!
//! ```text
//!  socket bytes ─▶ resp::Parser ─▶ Command (args borrowed from the input buffer)
//!                                     │ command::dispatch(command, cluster view, clock)
//!       ┌─────────────────────────────┼──────────────────────────────┐
//!       ▼                             ▼                              ▼
//!  Action::Replied            Action::Propose {group}        Action::Read {group}
//!  (PING, INFO, CLUSTER,      payload written in place       ReadIndex on the group, then
//!   errors, -MOVED)           (e.g. into the WAL ring) ─▶     StateMachine::query(request)
//!                             committed ─▶ Kv::apply ─▶ reply slot
//! ```
//!
//! | file | concept |
//! |---|---|
//! | `resp.rs` | RESP2 parser (pipelined, partial input, bounded) and reply writer |
//! | `slots.rs` | key → hash slot → group; the routing table and `-MOVED` |
//! | `payload.rs` | the binary log payload of a write and of a read request |
//! | `command.rs` | command table, arity, dispatch, errors; COMMAND and CONFIG |
//! | `cluster.rs` | CLUSTER SLOTS/SHARDS/NODES/INFO/MYID/KEYSLOT |
//! | `info.rs` | INFO sections |
//! | `kv.rs` | the KV + stream state machine (`StateMachine`) |
//! | `snapshot.rs` | its snapshot format, chunked build and checked install |
//! | `stream.rs` | stream ids and one stream's entries |

mod cluster;
pub mod command;
mod info;
pub mod kv;
pub mod payload;
pub mod resp;
pub mod slots;
mod snapshot;
pub mod stream;
