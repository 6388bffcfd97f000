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
//! | `process.rs` | what the server registers once: memory budget, testing-only DEBUG FAULT |
//! | `kv.rs` | the KV + stream state machine (`StateMachine`) |
//! | `map.rs` | the KV's map: hash table for lookups, index ordered by key hash for snapshots |
//! | `snapshot.rs` | its snapshot format, chunked build and checked install |
//! | `stream.rs` | stream ids and one stream's entries |
//!
//! # Wiring it to a shard (one node, one group, committed at once)
//!
//! ```
//! use ringraft_engine::raft::Role;
//! use ringraft_engine::shard::{Entry, ResponseSlots, StateMachine};
//! use ringraft_tools::service::command::{dispatch, Action, ReplicationStatus, ServerView};
//! use ringraft_tools::service::kv::{Kv, KvConfig};
//! use ringraft_tools::service::resp::{Limits, Parsed, Parser, ReplyBuf, RespSink};
//! use ringraft_tools::service::slots::{NodeAddr, RoutingTable};
//! use ringraft_wal::IoId;
//!
//! // Start-up: everything sized once.
//! let me = NodeAddr { id: 1, client: "127.0.0.1:7001".parse().unwrap(), bus_port: 17001 };
//! let mut routing = RoutingTable::new(1, &[me], 1).unwrap();
//! routing.set_leader(0, Some(1)).unwrap(); // the runtime does this on every leader change
//! let shards = vec![ReplicationStatus {
//!     role: Role::Leader, term: 1, leader: Some(1), commit: 0, applied: 0, snapshot_index: 0,
//!     peers: Vec::new(),
//! }];
//! let mut kv = Kv::new(KvConfig::default());
//! let mut slots = ResponseSlots::new(1024, kv.response_bytes_max());
//! let mut parser = Parser::new(Limits::default()); // one per connection
//! let mut out = ReplyBuf::new(1 << 20);            // one per connection
//! let mut log_payload = [0u8; 4096];               // in the runtime: the WAL ring
//!
//! // A connection's input buffer after a read.
//! let input = b"SET greeting hello\r\nGET greeting\r\n";
//! let mut at = 0;
//! let mut index = 0;
//! loop {
//!     let (command, used) = match parser.parse(&input[at..]).unwrap() {
//!         Parsed::Command(command, used) => (command, used),
//!         Parsed::Incomplete { skipped } => { at += skipped; break } // read more
//!     };
//!     at += used;
//!     let view = ServerView { cluster_id: 1, routing: &routing, shards: &shards, fsync: true };
//!     match dispatch(&command, &view, /* now_ms */ 0, &mut log_payload, &mut out).unwrap() {
//!         Action::Replied => {}
//!         Action::Close => break,
//!         Action::Propose { group: _, slot: _, payload_bytes } => {
//!             // propose(payload) on the group's shard; once committed and applied:
//!             index += 1;
//!             let id = IoId::new(1, index);
//!             let entry = Entry { id, payload: &log_payload[..payload_bytes] };
//!             kv.apply(std::iter::once(entry), &mut slots).unwrap();
//!             out.put(slots.response(id).unwrap()).unwrap();
//!         }
//!         Action::Read { group: _, slot: _, request_bytes } => {
//!             // read_index on the group's shard, wait for applied >= it, then:
//!             kv.query(&log_payload[..request_bytes], &mut out.writer()).unwrap();
//!         }
//!     }
//! }
//! assert_eq!(out.as_bytes(), b"+OK\r\n$5\r\nhello\r\n");
//! ```

mod cluster;
pub mod command;
mod info;
pub mod kv;
pub mod map;
pub mod payload;
pub mod process;
pub mod resp;
pub mod slots;
mod snapshot;
pub mod stream;
