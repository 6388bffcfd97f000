//! Why the KV's map lookups cost what they do at 100 000 keys: a point
//! lookup of a random existing key in
//! - `btreemap_boxed_keys`: an ordered `BTreeMap` of boxed keys (the KV's
//!   map until session 4), where each comparison on the way down reads a
//!   key's heap allocation;
//! - `btreemap_inline_head`: the same with each key's first 8 bytes inline
//!   in the tree node;
//! - `btreemap_hash_ordered`: ordered by (hash, bytes) with the hash inline
//!   (`MapKey`), looked up through a borrowed `KeyRef`;
//! - `kv_map`: the KV's map now (`service::map::Map`: a hash table, with the
//!   ordered index beside it that lookups do not touch);
//! - `hashmap`: a bare `HashMap` of boxed keys.
//!
//! Under load the KV applies every SET on three replicas; `perf` put most
//! of that time in cache misses of the tree walk (see the README's
//! 64-client figures).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringraft_tools::service::map::{KeyRef, Map, MapKey};
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
    let hash_ordered: BTreeMap<MapKey, Vec<u8>> = keys
        .iter()
        .map(|k| (MapKey::new(k), value.clone()))
        .collect();
    let mut kv_map: Map<Vec<u8>> = Map::default();
    for k in &keys {
        kv_map.insert_new(KeyRef::new(k), value.clone());
    }
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
    group.bench_function("btreemap_hash_ordered", |b| {
        b.iter(|| {
            for &i in &order {
                black_box(hash_ordered.get(KeyRef::new(&keys[i]).as_lookup()));
            }
        })
    });
    group.bench_function("kv_map", |b| {
        b.iter(|| {
            for &i in &order {
                black_box(kv_map.get(&keys[i]));
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
