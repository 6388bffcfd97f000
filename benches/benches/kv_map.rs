//! Why the KV's map lookups cost what they do at 100 000 keys: a point
//! lookup of a random existing key in the KV's own map type (an ordered
//! `BTreeMap` of boxed keys), the same map with each key's first 8 bytes
//! held inline in the tree node (so most comparisons do not read the key's
//! heap allocation), and a `HashMap`. Under load the KV applies every SET
//! on three replicas; `perf` puts most of that time in cache misses of the
//! tree walk (see the README's 64-client figures).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

const KEYS: u64 = 100_000;
/// Lookups per measured iteration, in a fixed pseudo-random order.
const LOOKUPS: usize = 4096;

/// A key's first 8 bytes, big-endian, zero-padded: (head, bytes) orders
/// exactly as the bytes do.
fn head(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

fn kv_map(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key:{i}").into_bytes()).collect();
    let value = vec![1u8; 128];
    let boxed: BTreeMap<Box<[u8]>, Vec<u8>> = keys
        .iter()
        .map(|k| (k.clone().into_boxed_slice(), value.clone()))
        .collect();
    let headed: BTreeMap<(u64, Vec<u8>), Vec<u8>> = keys
        .iter()
        .map(|k| ((head(k), k.clone()), value.clone()))
        .collect();
    let hashed: HashMap<Box<[u8]>, Vec<u8>> = keys
        .iter()
        .map(|k| (k.clone().into_boxed_slice(), value.clone()))
        .collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let order: Vec<usize> = (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % KEYS) as usize
        })
        .collect();

    let mut group = c.benchmark_group("kv_map_lookup_100k");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    group.bench_function("btreemap_boxed_keys", |b| {
        b.iter(|| {
            for &i in &order {
                black_box(boxed.get(&keys[i][..]));
            }
        })
    });
    group.bench_function("btreemap_inline_head", |b| {
        let mut probe = (0u64, Vec::with_capacity(64));
        b.iter(|| {
            for &i in &order {
                probe.0 = head(&keys[i]);
                probe.1.clear();
                probe.1.extend_from_slice(&keys[i]);
                black_box(headed.get(&probe));
            }
        })
    });
    group.bench_function("hashmap", |b| {
        b.iter(|| {
            for &i in &order {
                black_box(hashed.get(&keys[i][..]));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, kv_map);
criterion_main!(benches);
