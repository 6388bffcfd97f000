//! The RESP service's CPU cost per command, without IO or Raft: parse a
//! `SET key <128 bytes>` from the connection buffer, dispatch it into a log
//! payload, apply the committed entry to the KV state machine and copy the
//! reply out. What is left of a SET's latency is the log (WAL flush,
//! replication) and the network.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringraft_engine::raft::Role;
use ringraft_engine::shard::{Entry, ResponseSlots, StateMachine};
use ringraft_tools::service::command::{Action, ReplicationStatus, ServerView, dispatch};
use ringraft_tools::service::kv::{Kv, KvConfig, RESPONSE_BYTES_MAX};
use ringraft_tools::service::resp::{Limits, Parser, ReplyBuf, RespSink};
use ringraft_tools::service::slots::{NodeAddr, RoutingTable};
use ringraft_wal::IoId;
use std::hint::black_box;

/// Distinct keys the SETs cycle through (all exist after the warm-up, as
/// in `redis-benchmark -r`).
const KEYS: usize = 1024;

fn resp(c: &mut Criterion) {
    let node = NodeAddr {
        id: 1,
        client: "127.0.0.1:7001".parse().expect("address"),
        bus_port: 17001,
    };
    let mut routing = RoutingTable::new(1, &[node], 1).expect("one node");
    routing.set_leader(0, Some(1)).expect("known node");
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
    let value = vec![b'v'; 128];
    let requests: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| {
            let mut out = ReplyBuf::new(512);
            let key = format!("key:{i:012}");
            out.command(&[b"SET", key.as_bytes(), &value])
                .expect("fits");
            out.as_bytes().to_vec()
        })
        .collect();

    let mut kv = Kv::new(KvConfig::default());
    let mut slots = ResponseSlots::new(4096, RESPONSE_BYTES_MAX);
    let mut parser = Parser::new(Limits::default());
    let mut payload = vec![0u8; 4096];
    let mut out = ReplyBuf::new(4096);
    let mut index = 0u64;
    let mut next = 0usize;

    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("set_128/parse_dispatch_apply", |b| {
        b.iter(|| {
            let request = &requests[next % KEYS];
            next += 1;
            out.clear();
            let (command, _) = parser
                .parse(request)
                .expect("valid")
                .command()
                .expect("whole");
            let action = dispatch(&command, &view, 0, &mut payload, &mut out).expect("room");
            let Action::Propose { payload_bytes, .. } = action else {
                panic!("SET is proposed");
            };
            index += 1;
            let id = IoId::new(1, index);
            let entry = Entry {
                id,
                payload: &payload[..payload_bytes],
            };
            kv.apply(std::iter::once(entry), &mut slots)
                .expect("applies");
            out.put(slots.response(id).expect("just written"))
                .expect("room");
            black_box(out.as_bytes().len())
        })
    });
    group.bench_function("set_128/parse", |b| {
        b.iter(|| {
            let request = &requests[next % KEYS];
            next += 1;
            let (command, used) = parser
                .parse(black_box(request))
                .expect("valid")
                .command()
                .expect("whole");
            black_box((command.len(), used))
        })
    });
    group.finish();
}

criterion_group!(benches, resp);
criterion_main!(benches);
