//! The steady-state request path allocates nothing: parsing a pipelined
//! SET/GET stream, dispatching it, applying the SET of an existing key and
//! answering the GET all work in buffers sized at start-up.
//!
//! This file holds one test so that the counting allocator sees only it.

use ringraft_engine::raft::Role;
use ringraft_engine::shard::{Entry, ResponseSlots, StateMachine};
use ringraft_tools::service::command::{Action, ReplicationStatus, ServerView, dispatch};
use ringraft_tools::service::kv::{Kv, KvConfig, RESPONSE_BYTES_MAX};
use ringraft_tools::service::resp::{Limits, Parser, ReplyBuf, RespSink};
use ringraft_tools::service::slots::{NodeAddr, RoutingTable};
use ringraft_wal::IoId;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn set_and_get_of_existing_keys_allocate_nothing() {
    let node = NodeAddr {
        id: 1,
        client: "127.0.0.1:7001".parse().unwrap(),
        bus_port: 17001,
    };
    let mut routing = RoutingTable::new(1, &[node], 1).unwrap();
    routing.set_leader(0, Some(1)).unwrap();
    let shards = [ReplicationStatus {
        role: Role::Leader,
        term: 1,
        leader: Some(1),
        commit: 0,
        applied: 0,
        snapshot_index: 0,
        peers: Vec::new(),
    }];
    let view = ServerView {
        cluster_id: 1,
        routing: &routing,
        shards: &shards,
        fsync: true,
    };
    let mut kv = Kv::new(KvConfig::default());
    let mut slots = ResponseSlots::new(64, RESPONSE_BYTES_MAX);
    let mut parser = Parser::new(Limits::default());
    let mut payload = vec![0u8; 4096];
    let mut out = ReplyBuf::new(1 << 16);
    let value = "v".repeat(128);
    let mut input = Vec::new();
    for i in 0..16 {
        input.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$5\r\nkey:{}\r\n$128\r\n{value}\r\n",
                i % 4
            )
            .as_bytes(),
        );
        input.extend_from_slice(format!("GET key:{}\r\n", i % 4).as_bytes());
    }
    let mut index = 0;
    let mut round = |counted: bool| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        out.clear();
        let mut at = 0;
        while let Some((command, used)) = parser.parse(&input[at..]).unwrap().command() {
            at += used;
            match dispatch(&command, &view, 0, &mut payload, &mut out).unwrap() {
                Action::Propose { payload_bytes, .. } => {
                    index += 1;
                    let entry = Entry {
                        id: IoId::new(1, index),
                        payload: &payload[..payload_bytes],
                    };
                    kv.apply(std::iter::once(entry), &mut slots).unwrap();
                    out.put(slots.response(IoId::new(1, index)).unwrap())
                        .unwrap();
                }
                Action::Read { request_bytes, .. } => {
                    kv.query(&payload[..request_bytes], &mut out.writer())
                        .unwrap();
                }
                action => panic!("unexpected {action:?}"),
            }
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        if counted {
            assert_eq!(allocations, 0, "allocations in a steady-state round");
        }
    };
    // The first round creates the 4 keys; later rounds only overwrite.
    round(false);
    round(true);
    round(true);
    let expected = format!("+OK\r\n$128\r\n{value}\r\n").repeat(16);
    assert_eq!(out.as_bytes(), expected.as_bytes());
}
