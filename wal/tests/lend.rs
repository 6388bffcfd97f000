//! Lent ring memory: a follower's run received in place, committed (whole,
//! moved, or a prefix), abandoned, refused; across segments and laps; and
//! what a reopen finds after each.

mod common;

use common::*;
use ringraft_wal::record::{RecordKind, Records};
use ringraft_wal::{IoId, Lend, Wal, WalError};

/// Lends room for `bytes`, flushing while the ring is full.
fn lend_for(wal: &mut Wal, len: usize) -> Lend {
    loop {
        match wal.lend(len) {
            Ok(lend) => return lend,
            Err(WalError::RingFull { .. }) => {
                wal.sync().unwrap();
            }
            Err(error) => panic!("lend {len}: {error}"),
        }
    }
}

/// Receives `bytes` into lent memory as a socket would, returning the lend
/// and the address the bytes landed at.
fn receive(wal: &mut Wal, bytes: &[u8]) -> (Lend, usize) {
    let lend = lend_for(wal, bytes.len());
    let memory = wal.lent_memory(&lend);
    memory.copy_from_slice(bytes);
    let address = memory.as_ptr() as usize;
    (lend, address)
}

/// Byte range of the entries `first..=last` in a run (padding between them included).
fn entry_range(run: &[u8], first: u64, last: u64) -> std::ops::Range<usize> {
    let mut start = None;
    let mut end = 0;
    for record in Records::new(run) {
        let record = record.unwrap();
        let offset = record.bytes.as_ptr() as usize - run.as_ptr() as usize;
        if record.header.kind == RecordKind::Entry {
            if record.header.index == first {
                start = Some(offset);
            }
            if record.header.index == last {
                end = offset + record.bytes.len();
            }
        }
    }
    start.expect("first entry in the run")..end
}

#[test]
fn a_received_run_is_appended_where_it_landed_and_survives_reopen() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 2, 1, 120);
    let mut next = 1;
    while next <= 120 {
        let view = leader.read(next, 4 << 10).unwrap();
        let (lend, address) = receive(&mut follower, view.bytes());
        let len = lend.len_bytes();
        let summary = follower.commit_lent(lend, 0..len).unwrap();
        assert_eq!(summary.last, view.last());
        assert_eq!(follower.last_id(), view.last());
        assert_eq!(follower.accepted().get(), view.last());
        // In place: the log's bytes are the very memory the run was received into.
        let read_back = follower.read(next, 4 << 10).unwrap();
        assert!(read_back.from_memory());
        assert_eq!(read_back.bytes().as_ptr() as usize, address, "no copy");
        next = view.last().index + 1;
        follower.flush_submit().unwrap();
        follower.flush_reap().unwrap();
    }
    follower.sync().unwrap();
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), IoId::new(2, 120));
    check_entries(&mut follower, 1, 120, |_| 2);
}

#[test]
fn lent_runs_wrap_across_segments_and_laps() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    let mut next = 1;
    let mut padded_to_segment_start = 0;
    for round in 1..=8u64 {
        append_range(&mut leader, 1, (round - 1) * 500 + 1, round * 500);
        leader.sync().unwrap();
        while next <= round * 500 {
            let view = leader.read(next, 6 << 10).unwrap();
            let bytes = view.bytes().to_vec();
            next = view.last().index + 1;
            let tail = follower.positions().accepted;
            let (lend, _) = receive(&mut follower, &bytes);
            if lend.position() != tail {
                // Too short a remainder before the segment end: padded, lent from the next.
                assert_eq!(lend.position() % RING_BYTES, 0);
                padded_to_segment_start += 1;
            }
            follower.commit_lent(lend, 0..bytes.len()).unwrap();
        }
        follower.sync().unwrap();
        if round > 3 {
            leader.purge_to(round * 500 - 1500).unwrap();
            follower.purge_to(round * 500 - 1500).unwrap();
        }
    }
    assert!(padded_to_segment_start > 0, "the test crossed segment ends");
    check_entries(&mut follower, 2501, 4000, |_| 1);
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), IoId::new(1, 4000));
    check_entries(&mut follower, 2501, 4000, |_| 1);
}

#[test]
fn an_abandoned_lend_appends_nothing_even_after_a_flush_and_reopen() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 4, 1, 30);
    append_range(&mut follower, 4, 1, 10);
    follower.sync().unwrap();
    let before = follower.positions();
    // Entries 11..=30 continue the follower's log: received, then abandoned.
    let run = leader.read(11, 16 << 10).unwrap().bytes().to_vec();
    let (lend, _) = receive(&mut follower, &run);
    assert_eq!(lend.position(), before.accepted);
    follower.abandon_lent(lend, run.len());
    assert_eq!(follower.last_id(), IoId::new(4, 10));
    assert_eq!(follower.positions(), before);
    assert!(follower.read(11, 1 << 10).unwrap().is_empty());
    // The memory is reused: the next append lands where the lend was.
    let id = follower.append(5, &payload_for(11)).unwrap();
    assert_eq!(id, IoId::new(5, 11));
    follower.sync().unwrap();
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), IoId::new(5, 11));
    check_entries(&mut follower, 1, 11, |i| if i == 11 { 5 } else { 4 });

    // Abandoned after a hard-state save, then one entry appended and
    // flushed over the lent block: reopen ends at that entry.
    let mut fresh = Vec::new();
    for index in 12..=14u64 {
        let payload = payload_for(index);
        let mut record = vec![0u8; ringraft_wal::record::record_bytes(payload.len())];
        ringraft_wal::record::encode_entry(&mut record, IoId::new(5, index), &payload);
        fresh.extend_from_slice(&record);
    }
    let (lend, _) = receive(&mut follower, &fresh);
    follower
        .save_hard_state(ringraft_wal::HardState {
            term: 5,
            vote: 1,
            commit: 11,
        })
        .unwrap();
    follower.abandon_lent(lend, fresh.len());
    follower.append(5, &payload_for(12)).unwrap();
    follower.sync().unwrap();
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), IoId::new(5, 12));
    assert_eq!(follower.hard_state().commit, 11);
    check_entries(&mut follower, 1, 12, |i| if i >= 11 { 5 } else { 4 });
}

#[test]
fn while_memory_is_lent_the_tail_cannot_change() {
    let (_dir, _path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 5);
    let lend = wal.lend(4096).unwrap();
    assert!(wal.is_lent());
    assert!(matches!(
        wal.append(1, b"x"),
        Err(WalError::RingLent { .. })
    ));
    assert!(matches!(
        wal.append_raw(&[]),
        Err(WalError::RingLent { .. })
    ));
    assert!(matches!(
        wal.truncate_after(3, 2),
        Err(WalError::RingLent { .. })
    ));
    assert!(matches!(wal.lend(64), Err(WalError::RingLent { .. })));
    // Flushing, reading and purging go on.
    wal.sync().unwrap();
    wal.purge_to(2).unwrap();
    check_entries(&mut wal, 3, 5, |_| 1);
    wal.abandon_lent(lend, 0);
    assert!(!wal.is_lent());
    assert_eq!(wal.append(1, b"x").unwrap(), IoId::new(1, 6));
    assert!(matches!(
        wal.lend(RING_BYTES as usize + 8),
        Err(WalError::LendTooLarge { .. })
    ));
}

#[test]
fn a_bad_run_is_refused_with_nothing_appended() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 3, 1, 40);
    append_range(&mut follower, 3, 1, 20);
    let tail = follower.positions();
    // Damaged: one payload bit flipped.
    let mut damaged = leader.read(21, 4 << 10).unwrap().bytes().to_vec();
    let byte = damaged.len() - 9;
    damaged[byte] ^= 0x10;
    let (lend, _) = receive(&mut follower, &damaged);
    assert!(matches!(
        follower.commit_lent(lend, 0..damaged.len()),
        Err(WalError::InvalidRecords { .. })
    ));
    // A gap: 23.. after 20.
    let gap = leader.read(23, 4 << 10).unwrap().bytes().to_vec();
    let (lend, _) = receive(&mut follower, &gap);
    assert!(matches!(
        follower.commit_lent(lend, 0..gap.len()),
        Err(WalError::InvalidRecords { .. })
    ));
    // A term going back: entries of term 2 after term 3.
    let (_dir_c, _path_c, mut older) = temp_wal();
    append_range(&mut older, 2, 1, 22);
    let regress = older.read(21, 4 << 10).unwrap().bytes().to_vec();
    let (lend, _) = receive(&mut follower, &regress);
    assert!(matches!(
        follower.commit_lent(lend, 0..regress.len()),
        Err(WalError::InvalidRecords { .. })
    ));
    assert_eq!(follower.last_id(), IoId::new(3, 20), "nothing appended");
    assert_eq!(follower.positions(), tail);
    assert!(!follower.is_lent(), "a refused commit ends the lend");
    follower.sync().unwrap();
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), IoId::new(3, 20));
    check_entries(&mut follower, 1, 20, |_| 3);
}

#[test]
fn part_of_a_run_is_committed_moved_down_or_as_a_prefix() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 6, 1, 40);
    append_range(&mut follower, 6, 1, 5);
    // Entries 1..=5 are duplicates: only 6..=12 are appended, moved down.
    let run = leader.read(1, 16 << 10).unwrap().bytes().to_vec();
    let (lend, address) = receive(&mut follower, &run);
    let range = entry_range(&run, 6, 12);
    let summary = follower.commit_lent(lend, range).unwrap();
    assert_eq!(summary.last, IoId::new(6, 12));
    assert_eq!(summary.entries, 7);
    // Entry 6 now starts where the lend started.
    let view = follower.read(6, 1 << 10).unwrap();
    assert_eq!(view.bytes().as_ptr() as usize, address);
    check_entries(&mut follower, 1, 12, |_| 6);
    // A prefix: 13..=20 received, only 13..=16 appended.
    let run = leader.read(13, 16 << 10).unwrap().bytes().to_vec();
    let (lend, _) = receive(&mut follower, &run);
    let range = entry_range(&run, 13, 16);
    follower.commit_lent(lend, range).unwrap();
    assert_eq!(follower.last_id(), IoId::new(6, 16));
    // The block holding the rest of the run is written with the next flush.
    follower.sync().unwrap();
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(
        follower.last_id(),
        IoId::new(6, 16),
        "the unappended rest of the run does not come back"
    );
    check_entries(&mut follower, 1, 16, |_| 6);
}

#[test]
fn a_crash_after_commit_keeps_what_was_flushed() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 1, 1, 50);
    let run = leader.read(1, 8 << 10).unwrap().bytes().to_vec();
    let first = leader.read(1, 8 << 10).unwrap().last();
    let (lend, _) = receive(&mut follower, &run);
    follower.commit_lent(lend, 0..run.len()).unwrap();
    follower.sync().unwrap();
    // Committed but never flushed: lost in the crash, the log stays valid.
    let more = leader
        .read(first.index + 1, 8 << 10)
        .unwrap()
        .bytes()
        .to_vec();
    let (lend, _) = receive(&mut follower, &more);
    follower.commit_lent(lend, 0..more.len()).unwrap();
    assert!(follower.last_id() > first);
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), first);
    check_entries(&mut follower, 1, first.index, |_| 1);
}

#[test]
fn reset_to_is_refused_while_memory_is_lent() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 2, 1, 60);
    append_range(&mut follower, 1, 1, 10);
    follower.sync().unwrap();
    // A run that continues the snapshot the follower is about to install.
    let run = leader.read(51, 3000).unwrap().bytes().to_vec();
    let (lend, _) = receive(&mut follower, &run);
    // Committed after a reset, the run would sit at the lend's position in
    // the old log, below the new start: refused instead.
    assert!(matches!(
        follower.reset_to(IoId::new(2, 50)),
        Err(WalError::RingLent { .. })
    ));
    assert_eq!(follower.last_id(), IoId::new(1, 10));
    follower.abandon_lent(lend, run.len());
    follower.reset_to(IoId::new(2, 50)).unwrap();
    let (lend, _) = receive(&mut follower, &run);
    assert!(lend.position() >= follower.positions().start);
    let len = lend.len_bytes();
    follower.commit_lent(lend, 0..len).unwrap();
    check_entries(&mut follower, 51, 55, |_| 2);
    follower.sync().unwrap();
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.first_index(), 51);
    check_entries(&mut follower, 51, 55, |_| 2);
}

/// A follower's applier that lags its log by more than ring memory reads
/// the received runs back through the file, 1 MiB at a time as the shard's
/// applier does (more than the read buffer holds). Received runs are not
/// block padded, so the buffer's end falls inside a record: each view stops
/// before it and the next read starts there (this used to fail with "WAL
/// damaged ... record truncated", issue #6's long overload run).
#[test]
fn an_applier_lagging_behind_ring_memory_reads_received_runs_from_the_file() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    // A smaller ring and read buffer than `temp_wal`'s, so most of the
    // applier's reads go to the file and end where the buffer does.
    let dir_b = tempfile::tempdir_in("/var/tmp").unwrap();
    let tuning = ringraft_wal::Tuning {
        read_buffer_bytes: 16 << 10,
        ..tuning()
    };
    let options = ringraft_wal::CreateOptions {
        ring_bytes: 128 << 10,
        inflight_bytes_max: 48 << 10,
        tuning,
        ..create_options()
    };
    let mut follower = Wal::create(dir_b.path().join("follower.wal"), &options).unwrap();
    let last = 1800;
    append_range(&mut leader, 2, 1, last);
    leader.sync().unwrap();
    let mut rng = Rng(0x5EED_0006);
    let mut next = 1;
    let mut applied = 0;
    let mut file_views = 0;
    let mut apply = |follower: &mut Wal, upto: u64, file_views: &mut u32| {
        while applied < upto {
            let view = follower.read(applied + 1, 1 << 20).unwrap_or_else(|error| {
                panic!("read from {}: {error}", applied + 1);
            });
            assert!(!view.is_empty());
            *file_views += u32::from(!view.from_memory());
            for record in view.records() {
                let record = record.unwrap();
                if record.header.kind == RecordKind::Entry {
                    applied += 1;
                    assert_eq!(record.header.io_id(), IoId::new(2, applied));
                    assert_eq!(record.payload, &payload_for(applied)[..]);
                }
            }
            assert_eq!(view.last().index, applied);
        }
    };
    while next <= last {
        // Runs of a few records to a few KiB, received with writes in flight.
        let view = leader.read(next, 1 + rng.below(12 << 10) as usize).unwrap();
        let (lend, _) = receive(&mut follower, view.bytes());
        let len = lend.len_bytes();
        follower.commit_lent(lend, 0..len).unwrap();
        next = view.last().index + 1;
        follower.flush_submit().unwrap();
        follower.flush_reap().unwrap();
        // The applier wakes now and then, far behind. (It reads up to the
        // last entry, durable or not, so what it reads does not depend on
        // when writes complete: what left ring memory is durable anyway.)
        if rng.below(60) == 0 {
            apply(&mut follower, next - 1, &mut file_views);
        }
    }
    let durable = follower.sync().unwrap().index;
    assert_eq!(durable, last);
    apply(&mut follower, last, &mut file_views);
    assert!(
        file_views >= 12,
        "only {file_views} views came from the file"
    );
}
