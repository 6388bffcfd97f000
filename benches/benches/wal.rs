//! WAL ring costs that do not depend on the disk: encoding an append into
//! ring memory, and reading records in place. (Durable appends, which the
//! disk dominates, are measured by `ringraft bench wal` against fio.)

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringraft_wal::{CreateOptions, Wal, WalError};
use std::hint::black_box;

fn wal(c: &mut Criterion) {
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir with O_DIRECT");
    let options = CreateOptions {
        capacity_bytes: 256 << 20,
        ring_bytes: 64 << 20,
        ..CreateOptions::default()
    };
    let mut wal = Wal::create(dir.path().join("bench.wal"), &options).expect("create");
    let mut group = c.benchmark_group("wal");
    for payload_bytes in [128usize, 4000] {
        let payload = vec![7u8; payload_bytes];
        group.throughput(Throughput::Bytes(payload_bytes as u64));
        // Appends only; the ring is drained (synced, purged) when it fills,
        // which amortises to a small share of the iterations.
        group.bench_function(format!("append/{payload_bytes}"), |b| {
            b.iter(|| {
                loop {
                    match wal.append(1, black_box(&payload)) {
                        Ok(id) => break id,
                        Err(WalError::RingFull { .. }) => {
                            wal.sync().expect("sync");
                        }
                        Err(WalError::LogFull { .. }) => {
                            let durable = wal.sync().expect("sync").index;
                            wal.purge_to(durable).expect("purge");
                        }
                        Err(error) => panic!("{error}"),
                    }
                }
            })
        });
    }
    wal.sync().expect("sync");
    let from = wal
        .last_id()
        .index
        .saturating_sub(1000)
        .max(wal.first_index());
    group.throughput(Throughput::Bytes(64 << 10));
    group.bench_function("read_in_memory/64KiB", |b| {
        b.iter(|| wal.read(black_box(from), 64 << 10).expect("read").entries())
    });
    group.finish();
}

criterion_group!(benches, wal);
criterion_main!(benches);
