//! Record encode/verify speed: the cost every entry pays on append and on receive.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringraft_wal::IoId;
use ringraft_wal::record::{decode, encode_entry, record_bytes};
use std::hint::black_box;

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for payload_bytes in [128usize, 4000] {
        let payload = vec![7u8; payload_bytes];
        let mut buf = vec![0u8; record_bytes(payload_bytes)];
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(format!("encode/{payload_bytes}"), |b| {
            b.iter(|| encode_entry(black_box(&mut buf), IoId::new(1, 1), black_box(&payload)))
        });
        group.bench_function(format!("decode/{payload_bytes}"), |b| {
            b.iter(|| decode(black_box(&buf)).unwrap().header.index)
        });
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
