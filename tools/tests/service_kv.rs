//! The KV + stream state machine through the engine's `StateMachine`
//! contract: deterministic apply, snapshots built in chunks on one replica
//! and installed on another, and the errors a runtime must act on.

use proptest::prelude::*;
use ringraft_engine::shard::{ApplyError, Entry, ResponseSlots, SnapshotError, StateMachine};
use ringraft_tools::service::kv::{Kv, KvConfig, RESPONSE_BYTES_MAX};
use ringraft_tools::service::map::KeyRef;
use ringraft_tools::service::payload;
use ringraft_tools::service::resp::ReplyBuf;
use ringraft_tools::service::stream::{StreamId, XaddId};
use ringraft_wal::IoId;

#[derive(Debug, Clone)]
enum Op {
    Set(u8, Vec<u8>),
    Del(Vec<u8>),
    Xadd(u8, Option<(u64, u64)>, u64, Vec<Vec<u8>>),
    Noop,
}

fn key(k: u8) -> Vec<u8> {
    format!("key:{k}").into_bytes()
}

fn encode(op: &Op, buf: &mut [u8]) -> usize {
    match op {
        Op::Set(k, value) => payload::encode_set(buf, &key(*k), value).unwrap(),
        Op::Del(keys) => {
            let keys: Vec<Vec<u8>> = keys.iter().map(|&k| key(k)).collect();
            payload::encode_del(buf, keys.iter().map(Vec::as_slice)).unwrap()
        }
        Op::Xadd(k, explicit, now_ms, fields) => {
            let id = match explicit {
                Some((ms, seq)) => XaddId::Explicit(StreamId { ms: *ms, seq: *seq }),
                None => XaddId::Auto { now_ms: *now_ms },
            };
            payload::encode_xadd(buf, &key(*k), id, fields.iter().map(Vec::as_slice)).unwrap()
        }
        Op::Noop => 0,
    }
}

fn op() -> impl Strategy<Value = Op> {
    let field = prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        (0u8..12, prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Op::Set(k, v)),
        prop::collection::vec(0u8..12, 1..3).prop_map(Op::Del),
        (
            0u8..12,
            prop::option::of((0u64..50, 0u64..3)),
            0u64..100,
            prop::collection::vec((field.clone(), field), 1..3)
        )
            .prop_map(|(k, id, now, pairs)| {
                let fields = pairs.into_iter().flat_map(|(f, v)| [f, v]).collect();
                Op::Xadd(k, id, now, fields)
            }),
        Just(Op::Noop),
    ]
}

/// Applies `ops` as entries 1.. of term 1, in batches of `batch`, and
/// returns every reply.
fn apply_all(kv: &mut Kv, ops: &[Op], batch: usize) -> Vec<Vec<u8>> {
    let mut slots = ResponseSlots::new(256, RESPONSE_BYTES_MAX);
    let mut buffers: Vec<Vec<u8>> = Vec::new();
    for op in ops {
        let mut buf = vec![0u8; 4096];
        let n = encode(op, &mut buf);
        buf.truncate(n);
        buffers.push(buf);
    }
    let first = kv.applied().index + 1;
    let mut replies = Vec::new();
    for (chunk_index, chunk) in buffers.chunks(batch.max(1)).enumerate() {
        let base = first + (chunk_index * batch.max(1)) as u64;
        let entries = chunk.iter().enumerate().map(|(i, payload)| Entry {
            id: IoId::new(1, base + i as u64),
            payload,
        });
        kv.apply(entries, &mut slots).unwrap();
        for i in 0..chunk.len() {
            let id = IoId::new(1, base + i as u64);
            replies.push(slots.response(id).unwrap().to_vec());
        }
    }
    replies
}

/// Builds a whole snapshot with chunks of `chunk_bytes`.
fn build(kv: &mut Kv, chunk_bytes: usize) -> (IoId, Vec<Vec<u8>>) {
    let mut chunks = Vec::new();
    let mut offset = 0;
    let mut buf = vec![0u8; chunk_bytes];
    loop {
        let chunk = kv.snapshot_chunk(offset, &mut buf).unwrap();
        assert!(chunk.bytes > 0 || chunk.done);
        chunks.push(buf[..chunk.bytes].to_vec());
        offset += chunk.bytes as u64;
        if chunk.done {
            return (chunk.snapshot, chunks);
        }
    }
}

fn install(kv: &mut Kv, snapshot: IoId, chunks: &[Vec<u8>]) -> Result<(), SnapshotError> {
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        kv.install_chunk(snapshot, offset, chunk, i + 1 == chunks.len())?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

/// What clients would read from `kv` for every key.
fn observe(kv: &Kv) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    for k in 0..12 {
        let mut request = [0u8; 256];
        let mut out = ReplyBuf::new(1 << 16);
        let n = payload::encode_get(&mut request, &key(k)).unwrap();
        kv.query(&request[..n], &mut out.writer()).unwrap();
        let n = payload::encode_xrange(&mut request, &key(k), StreamId::ZERO, StreamId::MAX, None)
            .unwrap();
        kv.query(&request[..n], &mut out.writer()).unwrap();
        let n = payload::encode_xlen(&mut request, &key(k)).unwrap();
        kv.query(&request[..n], &mut out.writer()).unwrap();
        seen.push(out.as_bytes().to_vec());
    }
    seen
}

fn whole(kv: &mut Kv) -> Vec<u8> {
    build(kv, 1 << 20).1.concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn apply_is_deterministic_whatever_the_batching(
        ops in prop::collection::vec(op(), 1..80),
        batch_a in 1usize..9,
        batch_b in 1usize..9,
    ) {
        let mut a = Kv::new(KvConfig::default());
        let mut b = Kv::new(KvConfig::default());
        prop_assert_eq!(apply_all(&mut a, &ops, batch_a), apply_all(&mut b, &ops, batch_b));
        prop_assert_eq!(a.applied(), IoId::new(1, ops.len() as u64));
        prop_assert_eq!(whole(&mut a), whole(&mut b));
    }

    #[test]
    fn a_snapshot_in_chunks_rebuilds_the_same_state(
        ops in prop::collection::vec(op(), 0..80),
        other_ops in prop::collection::vec(op(), 0..20),
        chunk_bytes in 1usize..700,
    ) {
        let mut leader = Kv::new(KvConfig::default());
        apply_all(&mut leader, &ops, 4);
        // The receiver has some other state, which the install replaces.
        let mut follower = Kv::new(KvConfig::default());
        apply_all(&mut follower, &other_ops, 3);
        let (snapshot, chunks) = build(&mut leader, chunk_bytes);
        prop_assert_eq!(snapshot, leader.applied());
        install(&mut follower, snapshot, &chunks).unwrap();
        prop_assert_eq!(follower.applied(), snapshot);
        prop_assert_eq!(observe(&follower), observe(&leader));
        prop_assert_eq!(whole(&mut follower), chunks.concat());
        // Both go on identically from there.
        let more = [Op::Xadd(1, None, 0, vec![b"f".to_vec(), b"v".to_vec()]), Op::Set(2, b"x".to_vec())];
        prop_assert_eq!(apply_all(&mut leader, &more, 2), apply_all(&mut follower, &more, 1));
        prop_assert_eq!(observe(&follower), observe(&leader));
    }
}

fn sample() -> Kv {
    let mut kv = Kv::new(KvConfig::default());
    let fields = vec![b"f".to_vec(), b"v".to_vec()];
    let ops: Vec<Op> = (0..10)
        .flat_map(|k| {
            [
                Op::Set(k, vec![k; 50]),
                Op::Xadd(k + 1, None, 5, fields.clone()),
            ]
        })
        .collect();
    apply_all(&mut kv, &ops, 5);
    kv
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Apply goes on between the chunks of a build (copy-on-write): the
    /// snapshot still installs as the state at the build's start, and the
    /// state that went on is the one apply made.
    #[test]
    fn a_build_interleaved_with_apply_writes_the_state_it_started_from(
        before in prop::collection::vec(op(), 0..60),
        during in prop::collection::vec(prop::collection::vec(op(), 0..4), 1..40),
        chunk_bytes in 1usize..300,
    ) {
        let mut kv = Kv::new(KvConfig::default());
        apply_all(&mut kv, &before, 4);
        // The same history without a build, to compare with at the end.
        let mut plain = Kv::new(KvConfig::default());
        apply_all(&mut plain, &before, 4);
        let at_start = observe(&kv);
        let whole_at_start = whole(&mut plain);

        let mut chunks = Vec::new();
        let mut buf = vec![0u8; chunk_bytes];
        let mut offset = 0;
        let mut batches = during.iter();
        let snapshot = loop {
            prop_assert!(kv.applies_during_build());
            let chunk = kv.snapshot_chunk(offset, &mut buf).unwrap();
            chunks.push(buf[..chunk.bytes].to_vec());
            offset += chunk.bytes as u64;
            if chunk.done {
                break chunk.snapshot;
            }
            if let Some(batch) = batches.next() {
                prop_assert_eq!(apply_all(&mut kv, batch, 2), apply_all(&mut plain, batch, 3));
            }
        };
        let mut installed = Kv::new(KvConfig::default());
        install(&mut installed, snapshot, &chunks).unwrap();
        prop_assert_eq!(observe(&installed), at_start);
        prop_assert_eq!(chunks.concat(), whole_at_start);
        // Whatever was applied during the build is in the live state.
        for batch in batches {
            apply_all(&mut kv, batch, 2);
            apply_all(&mut plain, batch, 1);
        }
        prop_assert_eq!(observe(&kv), observe(&plain));
        prop_assert_eq!(whole(&mut kv), whole(&mut plain));
    }
}

#[test]
fn a_chunk_resent_after_apply_changed_the_state_is_refused() {
    let mut kv = sample();
    let mut buf = [0u8; 64];
    let first = kv.snapshot_chunk(0, &mut buf).unwrap();
    assert!(!first.done);
    kv.snapshot_chunk(64, &mut buf).unwrap();
    apply_all(&mut kv, &[Op::Set(0, b"new".to_vec())], 1);
    // Going back would need the written keys as they were: not kept.
    assert_eq!(
        kv.snapshot_chunk(10, &mut buf),
        Err(SnapshotError::StateChanged {
            snapshot: first.snapshot,
            applied: kv.applied()
        })
    );
    // The build is over: going on where it was is refused too (never a
    // snapshot cut short and marked done).
    assert_eq!(
        kv.snapshot_chunk(128, &mut buf),
        Err(SnapshotError::UnexpectedOffset {
            expected: 0,
            got: 128
        })
    );
    // Starting over works, and captures the new state.
    assert_eq!(
        kv.snapshot_chunk(0, &mut buf).unwrap().snapshot,
        kv.applied()
    );
}

#[test]
fn past_its_bound_for_kept_values_the_build_asks_apply_to_wait() {
    let mut kv = Kv::new(KvConfig {
        build_preimage_bytes_max: 1000,
        ..KvConfig::default()
    });
    let ops: Vec<Op> = (0..12).map(|k| Op::Set(k, vec![k; 200])).collect();
    apply_all(&mut kv, &ops, 4);
    let mut buf = [0u8; 16];
    assert!(!kv.snapshot_chunk(0, &mut buf).unwrap().done);
    assert!(kv.applies_during_build());
    // Overwriting keys the build has not reached keeps their old values.
    apply_all(&mut kv, &ops[..8], 4);
    assert!(
        !kv.applies_during_build(),
        "8 values of 200 bytes kept aside, over a bound of 1000"
    );
    // Once the build is done nothing is kept.
    let mut offset = 16;
    while !kv.snapshot_chunk(offset, &mut buf).unwrap().done {
        offset += buf.len() as u64;
    }
    assert!(kv.applies_during_build());
}

#[test]
fn a_build_resumes_at_any_offset_of_the_same_snapshot() {
    let mut kv = sample();
    let whole = build(&mut kv, 1 << 20).1.concat();
    let mut buf = [0u8; 100];
    // Go on past the start, then back (a lost chunk resent), then ahead.
    for offset in [0u64, 100, 37, 500, 499, 0, whole.len() as u64 - 10] {
        let chunk = kv.snapshot_chunk(offset, &mut buf).unwrap();
        let at = offset as usize;
        assert_eq!(&buf[..chunk.bytes], &whole[at..(at + 100).min(whole.len())]);
        assert_eq!(chunk.done, at + chunk.bytes == whole.len());
    }
    let past = whole.len() as u64 + 1;
    assert_eq!(
        kv.snapshot_chunk(past, &mut buf),
        Err(SnapshotError::UnexpectedOffset {
            expected: whole.len() as u64,
            got: past
        })
    );
}

#[test]
fn a_damaged_snapshot_is_refused_and_the_old_state_stays() {
    let mut leader = sample();
    let (snapshot, chunks) = build(&mut leader, 100);
    let mut follower = Kv::new(KvConfig::default());
    apply_all(&mut follower, &[Op::Set(3, b"mine".to_vec())], 1);
    let before = observe(&follower);

    let mut bad_magic = chunks.clone();
    bad_magic[0][1] ^= 0xff;
    assert_eq!(
        install(&mut follower, snapshot, &bad_magic),
        Err(SnapshotError::Malformed { offset: 0 })
    );
    // Cut short: the last chunk claims `done` in the middle of an item.
    let mut cut = chunks.clone();
    let last = cut.len() - 1;
    let half = cut[last].len() / 2;
    cut[last].truncate(half);
    assert!(matches!(
        install(&mut follower, snapshot, &cut),
        Err(SnapshotError::Malformed { .. })
    ));
    // Chunks must arrive in order.
    follower
        .install_chunk(snapshot, 0, &chunks[0], false)
        .unwrap();
    assert_eq!(
        follower.install_chunk(snapshot, 5, &chunks[1], false),
        Err(SnapshotError::UnexpectedOffset {
            expected: 100,
            got: 5
        })
    );
    // The id in the header must be the one announced.
    assert_eq!(
        install(&mut follower, IoId::new(9, 9), &chunks),
        Err(SnapshotError::Malformed { offset: 0 })
    );
    assert_eq!(observe(&follower), before);
    assert_eq!(follower.applied(), IoId::new(1, 1));

    // A receiver with smaller bounds refuses what it could not hold.
    let mut small = Kv::new(KvConfig {
        keys_max: 5,
        ..KvConfig::default()
    });
    assert!(matches!(
        install(&mut small, snapshot, &chunks),
        Err(SnapshotError::OverBound { .. })
    ));
    install(&mut follower, snapshot, &chunks).unwrap();
    assert_eq!(observe(&follower), observe(&leader));
}

/// Snapshot bytes made by hand: a header of format `version`, then a
/// string item per (key, value), in the order given.
fn snapshot_bytes(version: u8, snapshot: IoId, strings: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(b"RRKV");
    out.push(version);
    for n in [snapshot.term, snapshot.index, strings.len() as u64, 0] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for (key, value) in strings {
        out.push(1);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out
}

#[test]
fn snapshots_in_either_key_order_version_install_and_others_are_refused() {
    let snapshot = IoId::new(2, 40);
    let mut strings: Vec<(Vec<u8>, Vec<u8>)> = (0..12)
        .map(|k| (key(k), format!("v{k}").into_bytes()))
        .collect();
    let mut expected = Kv::new(KvConfig::default());
    let sets: Vec<Op> = (0..12)
        .map(|k| Op::Set(k, format!("v{k}").into_bytes()))
        .collect();
    apply_all(&mut expected, &sets, 4);

    // Version 1 (written by earlier builds): keys in byte order.
    strings.sort();
    let by_bytes = strings.clone();
    strings.sort_by(|a, b| KeyRef::new(&a.0).cmp(&KeyRef::new(&b.0)));
    let by_hash = strings;
    assert_ne!(by_bytes, by_hash, "the two orders differ for these keys");
    let mut old = Kv::new(KvConfig::default());
    install(
        &mut old,
        snapshot,
        &[snapshot_bytes(1, snapshot, &by_bytes)],
    )
    .unwrap();
    assert_eq!(observe(&old), observe(&expected));
    assert_eq!(old.applied(), snapshot);

    // Version 2 (written now): keys in hash order; what this build writes.
    let mut new = Kv::new(KvConfig::default());
    let written = snapshot_bytes(2, snapshot, &by_hash);
    install(&mut new, snapshot, &[written]).unwrap();
    assert_eq!(observe(&new), observe(&expected));

    // Each version's check is its own order; a repeated key breaks both.
    for (version, strings) in [(2, &by_bytes), (1, &by_hash)] {
        let mut kv = Kv::new(KvConfig::default());
        assert!(matches!(
            install(
                &mut kv,
                snapshot,
                &[snapshot_bytes(version, snapshot, strings)]
            ),
            Err(SnapshotError::Malformed { .. })
        ));
        assert_eq!(kv.key_count(), 0);
    }
    let mut repeated = by_bytes.clone();
    repeated.insert(1, by_bytes[0].clone());
    let mut kv = Kv::new(KvConfig::default());
    assert!(matches!(
        install(&mut kv, snapshot, &[snapshot_bytes(1, snapshot, &repeated)]),
        Err(SnapshotError::Malformed { .. })
    ));
}

#[test]
fn set_over_an_existing_key_reuses_its_buffer() {
    let mut kv = Kv::new(KvConfig::default());
    apply_all(&mut kv, &[Op::Set(1, vec![1; 200])], 1);
    let capacity = kv.value_capacity(&key(1)).unwrap();
    apply_all(
        &mut kv,
        &[Op::Set(1, vec![2; 120]), Op::Set(1, vec![3; 200])],
        2,
    );
    assert_eq!(kv.value_capacity(&key(1)), Some(capacity));
}

#[test]
fn bounds_refuse_writes_with_a_reply() {
    let mut kv = Kv::new(KvConfig {
        keys_max: 2,
        stream_entries_max: 1,
        item_bytes_max: 64,
        ..KvConfig::default()
    });
    let fields = vec![b"f".to_vec(), b"v".to_vec()];
    let replies = apply_all(
        &mut kv,
        &[
            Op::Set(1, b"a".to_vec()),
            Op::Xadd(2, Some((1, 1)), 0, fields.clone()),
            Op::Set(3, b"b".to_vec()),
            Op::Xadd(2, Some((1, 2)), 0, fields),
            Op::Set(1, vec![0; 100]),
            Op::Set(1, b"c".to_vec()),
        ],
        3,
    );
    let replies: Vec<&[u8]> = replies.iter().map(Vec::as_slice).collect();
    assert_eq!(
        replies,
        [
            &b"+OK\r\n"[..],
            b"$3\r\n1-1\r\n",
            b"-OOM command not allowed: keys_max reached\r\n",
            b"-OOM command not allowed: stream_entries_max reached\r\n",
            b"-ERR key and value larger than item_bytes_max\r\n",
            b"+OK\r\n",
        ]
    );
}

#[test]
fn a_payload_from_elsewhere_stops_apply_at_the_entry_before() {
    let mut kv = Kv::new(KvConfig::default());
    let mut slots = ResponseSlots::new(8, RESPONSE_BYTES_MAX);
    let mut good = [0u8; 64];
    let n = payload::encode_set(&mut good, b"k", b"v").unwrap();
    let entries = [
        Entry {
            id: IoId::new(2, 1),
            payload: &good[..n],
        },
        Entry {
            id: IoId::new(2, 2),
            payload: b"\x7fnot a payload",
        },
    ];
    assert_eq!(
        kv.apply(entries.into_iter(), &mut slots),
        Err(ApplyError::Malformed {
            id: IoId::new(2, 2)
        })
    );
    assert_eq!(kv.applied(), IoId::new(2, 1));
    assert_eq!(
        kv.query(b"\x01", &mut ReplyBuf::new(8).writer()),
        Err(ApplyError::MalformedQuery)
    );
}

proptest! {
    /// Bytes that are not a payload of this service stop apply with a typed
    /// error (never a panic), and a valid prefix of the batch stays applied.
    #[test]
    fn foreign_payloads_are_typed_errors(
        ops in prop::collection::vec(op(), 0..10),
        garbage in prop::collection::vec(any::<u8>(), 1..64),
        query in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut kv = Kv::new(KvConfig::default());
        apply_all(&mut kv, &ops, 3);
        let before = kv.applied();
        let mut slots = ResponseSlots::new(8, RESPONSE_BYTES_MAX);
        let id = IoId::new(2, before.index + 1);
        match kv.apply(std::iter::once(Entry { id, payload: &garbage }), &mut slots) {
            Ok(()) => {
                // Garbage that happens to decode is a write with a reply.
                prop_assert_eq!(kv.applied(), id);
                prop_assert!(!slots.response(id).unwrap().is_empty());
            }
            Err(error) => {
                prop_assert_eq!(error, ApplyError::Malformed { id });
                prop_assert_eq!(kv.applied(), before);
            }
        }
        let mut out = ReplyBuf::new(1 << 16);
        let _ = kv.query(&query, &mut out.writer());
    }
}
