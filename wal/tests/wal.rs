//! Reopen-based tests of the WAL ring on real files: write, drop, damage the
//! file, reopen, check what a user of the log would see.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use ringraft_wal::record::{self, HEADER_BYTES, RecordKind};
use ringraft_wal::{HardState, IoId, OpenOptions, ReadView, Tuning, Wal, WalError};

const DATA_OFFSET: u64 = 8192;
/// Recovery's torn-tail window.
const WINDOW_BYTES: u64 = INFLIGHT_BYTES_MAX;

/// (index, file offset, record bytes, payload bytes) of every entry of the
/// first lap, parsed straight from the file.
fn entry_layout(path: &Path) -> Vec<(u64, u64, u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let data = &bytes[DATA_OFFSET as usize..];
    let mut entries = Vec::new();
    let mut position = 0u64;
    let mut expected = 1;
    while position < CAPACITY_BYTES {
        let segment_end = (position / RING_BYTES + 1) * RING_BYTES;
        if segment_end - position < HEADER_BYTES as u64 {
            position = segment_end;
            continue;
        }
        let Ok(record) = record::decode(&data[position as usize..segment_end as usize]) else {
            break;
        };
        if record.header.kind == RecordKind::Entry {
            if record.header.index != expected {
                break;
            }
            expected += 1;
            entries.push((
                record.header.index,
                DATA_OFFSET + position,
                record.bytes.len() as u64,
                record.header.payload_len as u64,
            ));
        }
        position += record.bytes.len() as u64;
    }
    entries
}

fn write_file_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn appends_survive_reopen_and_read_back() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 300);
    let flushed = wal.sync().unwrap();
    assert_eq!(flushed, IoId::new(1, 300));
    assert_eq!(wal.flushed().get(), IoId::new(1, 300));
    assert_eq!(wal.accepted().get(), IoId::new(1, 300));
    check_entries(&mut wal, 1, 300, |_| 1);
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, 300));
    let report = *wal.recovery_report();
    assert_eq!((report.entries, report.discarded_records), (300, 0));
    check_entries(&mut wal, 1, 300, |_| 1);
    assert!(wal.read(301, 1 << 10).unwrap().is_empty());
    // Appending continues the log after a reopen.
    append_range(&mut wal, 2, 301, 310);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    check_entries(&mut wal, 295, 310, |i| if i > 300 { 2 } else { 1 });
}

#[test]
fn wraps_around_the_file_many_times_with_purge() {
    let (_dir, path, mut wal) = temp_wal();
    let mut last = 0;
    let mut purged = 0;
    // ~370 bytes per entry: 12 000 entries are more than 4 laps of 1 MiB.
    while last < 12_000 {
        append_range(&mut wal, 1 + last / 5000, last + 1, last + 500);
        last += 500;
        wal.sync().unwrap();
        // Keep ~2000 entries live: more than ring memory holds.
        if last > 2000 {
            purged = last - 2000;
            wal.purge_to(purged).unwrap();
        }
    }
    assert_eq!(wal.purged().get().index, purged);
    let term_of = |i: u64| 1 + (i - 1) / 500 * 500 / 5000;
    let view = wal.read(purged + 1, 1).unwrap();
    assert!(
        !view.from_memory(),
        "the oldest live entries come from the file"
    );
    check_entries(&mut wal, purged + 1, last, term_of);
    assert!(matches!(
        wal.read(purged, 1),
        Err(WalError::Purged { first_index, .. }) if first_index == purged + 1
    ));
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.first_index(), purged + 1);
    assert_eq!(wal.last_id(), IoId::new(term_of(last), last));
    check_entries(&mut wal, purged + 1, last, term_of);
}

#[test]
fn a_full_file_refuses_appends_until_purged() {
    let (_dir, _path, mut wal) = temp_wal();
    let payload = vec![7u8; 4000];
    let mut appended = 0u64;
    loop {
        match wal.append(1, &payload) {
            Ok(_) => appended += 1,
            Err(WalError::RingFull { .. }) => {
                wal.sync().unwrap();
            }
            Err(WalError::LogFull { .. }) => break,
            Err(error) => panic!("{error}"),
        }
    }
    assert!(appended > 200, "about 1 MiB of 4 KiB records");
    wal.sync().unwrap();
    wal.purge_to(10).unwrap();
    wal.append(1, &payload).unwrap();
}

#[test]
fn truncate_after_drops_the_suffix_durably() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 40);
    wal.sync().unwrap();
    assert!(matches!(
        wal.truncate_after(20, 1),
        Err(WalError::TruncateTermNotHigher { .. })
    ));
    wal.truncate_after(20, 2).unwrap();
    assert_eq!(wal.last_id(), IoId::new(1, 20));
    assert!(wal.accepted().get() >= IoId::new(2, 20));
    assert!(wal.read(21, 1 << 10).unwrap().is_empty());
    drop(wal);
    // Durable without any new append: the old suffix does not come back.
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, 20));
    check_entries(&mut wal, 1, 20, |_| 1);
    append_range(&mut wal, 2, 21, 25);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(2, 25));
    check_entries(&mut wal, 1, 25, |i| if i > 20 { 2 } else { 1 });
    // Unflushed entries can be truncated too.
    append_range(&mut wal, 2, 26, 30);
    wal.truncate_after(27, 3).unwrap();
    append_range(&mut wal, 3, 28, 29);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    check_entries(&mut wal, 1, 29, |i| match i {
        0..=20 => 1,
        21..=27 => 2,
        _ => 3,
    });
}

#[test]
fn truncate_near_the_tail_after_the_ring_wrapped_keeps_every_entry_readable() {
    let (_dir, path, mut wal) = temp_wal();
    // Past one ring of memory: memory holds [accepted - M, accepted), and
    // accepted - M is mid-block. A truncation near the tail keeps that low
    // end (it used to become an unaligned `mem_valid_from` and panic).
    let mut last = 0;
    while wal.positions().accepted < RING_BYTES + 3 * 4096 + 1000
        || wal.positions().accepted % 4096 == 0
    {
        last += 1;
        append_range(&mut wal, 1, last, last);
    }
    wal.sync().unwrap();
    wal.truncate_after(last - 1, 2).unwrap();
    assert_eq!(wal.last_id(), IoId::new(1, last - 1));
    check_entries(&mut wal, 1, last - 1, |_| 1);
    append_range(&mut wal, 2, last, last + 20);
    check_entries(&mut wal, 1, last + 20, |i| if i >= last { 2 } else { 1 });
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(2, last + 20));
    check_entries(&mut wal, 1, last + 20, |i| if i >= last { 2 } else { 1 });
}

#[test]
fn truncate_far_back_reloads_the_cut_block_from_the_file() {
    let (_dir, path, mut wal) = temp_wal();
    // ~370 KiB: the first entries have left the 256 KiB ring memory.
    append_range(&mut wal, 1, 1, 1000);
    wal.sync().unwrap();
    assert!(!wal.read(5, 1).unwrap().from_memory());
    wal.truncate_after(5, 2).unwrap();
    append_range(&mut wal, 2, 6, 8);
    check_entries(&mut wal, 1, 8, |i| if i > 5 { 2 } else { 1 });
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(2, 8));
    check_entries(&mut wal, 1, 8, |i| if i > 5 { 2 } else { 1 });
}

#[test]
fn a_follower_appends_raw_runs_across_segments_and_laps() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    let mut next = 1;
    for round in 1..=8u64 {
        append_range(&mut leader, 1, (round - 1) * 500 + 1, round * 500);
        leader.sync().unwrap();
        while next <= round * 500 {
            let view = leader.read(next, 6 << 10).unwrap();
            let bytes = view.bytes().to_vec();
            next = view.last().index + 1;
            loop {
                match follower.append_raw(&bytes) {
                    Ok(_) => break,
                    Err(WalError::RingFull { .. }) => {
                        follower.sync().unwrap();
                    }
                    Err(error) => panic!("{error}"),
                }
            }
        }
        follower.sync().unwrap();
        if round > 3 {
            leader.purge_to(round * 500 - 1500).unwrap();
            follower.purge_to(round * 500 - 1500).unwrap();
        }
    }
    drop(follower);
    let mut follower = reopen(&path_b);
    assert_eq!(follower.last_id(), IoId::new(1, 4000));
    check_entries(&mut follower, 2501, 4000, |_| 1);
}

#[test]
fn purge_and_hard_state_are_durable() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 4, 1, 50);
    assert!(matches!(
        wal.purge_to(50),
        Err(WalError::PurgeNotFlushed { .. })
    ));
    wal.sync().unwrap();
    wal.purge_to(30).unwrap();
    let hard_state = HardState {
        term: 5,
        vote: 2,
        commit: 45,
    };
    wal.save_hard_state(hard_state).unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.first_index(), 31);
    assert_eq!(wal.purged().get(), IoId::new(4, 30));
    assert_eq!(wal.hard_state(), hard_state);
    check_entries(&mut wal, 31, 50, |_| 4);
    // Purging everything leaves an empty log that continues at 51.
    wal.purge_to(50).unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!((wal.first_index(), wal.last_id()), (51, IoId::new(4, 50)));
    append_range(&mut wal, 4, 51, 52);
    check_entries(&mut wal, 51, 52, |_| 4);
}

#[test]
fn a_torn_superblock_write_falls_back_to_the_previous_copy() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 100);
    wal.sync().unwrap();
    wal.save_hard_state(HardState {
        term: 1,
        vote: 1,
        commit: 10,
    })
    .unwrap();
    // The crash: the purge's superblock write is torn (its copy garbled).
    wal.purge_to(60).unwrap();
    let generation = wal.superblock().generation;
    drop(wal);
    write_file_at(&path, (generation % 2) * 4096 + 100, &[0xFF; 64]);
    let mut wal = reopen(&path);
    assert_eq!(wal.first_index(), 1, "the purge never happened");
    assert_eq!(wal.hard_state().commit, 10);
    check_entries(&mut wal, 1, 100, |_| 1);
}

#[test]
fn a_crash_inside_truncate_after_leaves_either_log_never_damage() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 40);
    wal.sync().unwrap();
    drop(wal);
    let before = std::fs::read(&path).unwrap();
    let mut wal = reopen(&path);
    wal.truncate_after(20, 2).unwrap();
    drop(wal);
    let after = std::fs::read(&path).unwrap();
    let superblocks = 0..DATA_OFFSET as usize;
    // Superblock (truncate_term 2) written, data block not yet zeroed: the
    // truncation did not happen, and the old suffix is no damage.
    let mut crashed = before.clone();
    crashed[superblocks.clone()].copy_from_slice(&after[superblocks.clone()]);
    std::fs::write(&path, &crashed).unwrap();
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, 40));
    check_entries(&mut wal, 1, 40, |_| 1);
    drop(wal);
    // Block zeroed, superblock not: the log ends at 20, the rest is a tail.
    let mut crashed = after.clone();
    crashed[superblocks.clone()].copy_from_slice(&before[superblocks]);
    std::fs::write(&path, &crashed).unwrap();
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, 20));
    check_entries(&mut wal, 1, 20, |_| 1);
}

#[test]
fn recovery_cuts_the_file_at_every_record_boundary_and_inside_records() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 40);
    wal.sync().unwrap();
    drop(wal);
    let original = std::fs::read(&path).unwrap();
    let layout = entry_layout(&path);
    assert_eq!(layout.len(), 40);
    let written_end = layout.last().map(|e| e.1 + e.2).unwrap();
    for &(index, offset, _, payload_len) in &layout {
        let inside_payload = offset + HEADER_BYTES as u64 + payload_len / 2;
        let cuts = [offset, offset + 8, inside_payload];
        // A cut in the alignment tail leaves the record whole: not a cut of it.
        for cut in cuts
            .into_iter()
            .filter(|&cut| payload_len > 1 || cut != inside_payload)
        {
            std::fs::write(&path, &original).unwrap();
            let tail = (written_end - cut) as usize;
            write_file_at(&path, cut, &vec![0; tail]);
            let mut wal = reopen(&path);
            let kept = index - 1;
            assert_eq!(wal.last_id().index, kept, "cut at {cut}");
            let report = *wal.recovery_report();
            let header_intact = cut >= offset + HEADER_BYTES as u64;
            assert_eq!(
                report.discarded_records,
                u64::from(header_intact),
                "cut at {cut}"
            );
            check_entries(&mut wal, 1, kept, |_| 1);
            // The cut is durable: a new entry follows it, and survives.
            append_range(&mut wal, 2, kept + 1, kept + 1);
            wal.sync().unwrap();
            drop(wal);
            let mut wal = reopen(&path);
            assert_eq!(wal.last_id(), IoId::new(2, kept + 1));
            assert_eq!(wal.recovery_report().discarded_records, 0);
            check_entries(&mut wal, 1, kept + 1, |i| if i > kept { 2 } else { 1 });
        }
    }
}

#[test]
fn random_bit_flips_never_return_a_wrong_record() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 700);
    wal.sync().unwrap();
    drop(wal);
    let original = std::fs::read(&path).unwrap();
    let layout = entry_layout(&path);
    let written_end = layout.last().map(|e| e.1 + e.2).unwrap();
    let mut rng = Rng(0x5EED_1234);
    let (mut cut, mut refused) = (0, 0);
    for round in 0..150 {
        std::fs::write(&path, &original).unwrap();
        let flip_at = DATA_OFFSET + rng.below(written_end - DATA_OFFSET);
        let mut byte = [original[flip_at as usize]];
        byte[0] ^= 1 << rng.below(8);
        write_file_at(&path, flip_at, &byte);
        // The entry whose checksummed bytes the flip hit, if any.
        let hit = layout
            .iter()
            .find(|e| flip_at >= e.1 && flip_at < e.1 + HEADER_BYTES as u64 + e.3);
        let context = format!("round {round}: flip at {flip_at}, hit {hit:?}");
        match Wal::open(&path, &open_options()) {
            Ok(mut wal) => {
                let last = wal.last_id().index;
                if let Some(&(index, ..)) = hit {
                    assert_eq!(last, index - 1, "{context}");
                    assert!(written_end - flip_at < WINDOW_BYTES + 2048, "{context}");
                    cut += 1;
                } else {
                    assert_eq!(last, 700, "{context}");
                }
                check_entries(&mut wal, 1, last, |_| 1);
            }
            Err(WalError::Corrupt { file_offset, .. }) => {
                let &(_, offset, ..) = hit.unwrap_or_else(|| panic!("{context}"));
                assert_eq!(file_offset, offset, "{context}");
                assert!(written_end - offset > WINDOW_BYTES, "{context}");
                refused += 1;
                // The caller may choose to cut there.
                let options = OpenOptions {
                    truncate_damaged: true,
                    ..open_options()
                };
                let mut wal = Wal::open(&path, &options).unwrap();
                assert!(wal.recovery_report().damage_truncated);
                let last = wal.last_id().index;
                check_entries(&mut wal, 1, last, |_| 1);
                drop(wal);
                // The cut is durable: a plain open now finds a clean log.
                let wal = reopen(&path);
                assert_eq!(wal.last_id().index, last, "{context}");
            }
            Err(error) => panic!("{context}: {error}"),
        }
    }
    assert!(
        cut > 5 && refused > 5,
        "both outcomes exercised: {cut} cut, {refused} refused"
    );
}

#[test]
fn damage_before_the_tail_is_an_error_naming_its_offset() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 700);
    wal.sync().unwrap();
    drop(wal);
    let layout = entry_layout(&path);
    let (_, offset, ..) = layout[99];
    write_file_at(&path, offset + 40, &[0xAB]);
    match Wal::open(&path, &open_options()) {
        Err(WalError::Corrupt { file_offset, .. }) => assert_eq!(file_offset, offset),
        other => panic!("expected corruption at {offset}, got {other:?}"),
    }
}

#[test]
fn append_raw_takes_a_verified_run_and_refuses_a_broken_one() {
    let (_dir_a, _path_a, mut leader) = temp_wal();
    let (_dir_b, path_b, mut follower) = temp_wal();
    append_range(&mut leader, 3, 1, 60);
    let mut next = 1;
    while next <= 60 {
        let view = leader.read(next, 2 << 10).unwrap();
        let summary = follower.append_raw(view.bytes()).unwrap();
        assert_eq!(summary.last, view.last());
        next = view.last().index + 1;
    }
    follower.sync().unwrap();
    // A run that skips an index, or is damaged, is refused whole.
    let gap = leader.read(60, 1 << 10).unwrap().bytes().to_vec();
    assert!(matches!(
        follower.append_raw(&gap),
        Err(WalError::InvalidRecords { .. })
    ));
    append_range(&mut leader, 3, 61, 62);
    let mut damaged = leader.read(61, 4 << 10).unwrap().bytes().to_vec();
    let last_byte = damaged.len() - 9;
    damaged[last_byte] ^= 0x10;
    assert!(follower.append_raw(&damaged).is_err());
    assert_eq!(follower.last_id(), IoId::new(3, 60), "nothing appended");
    drop(follower);
    let mut follower = reopen(&path_b);
    check_entries(&mut follower, 1, 60, |_| 3);
}

#[test]
fn another_cluster_or_a_foreign_file_is_refused() {
    let (dir, path, wal) = temp_wal();
    drop(wal);
    let options = OpenOptions {
        cluster_id: Some(CLUSTER + 1),
        ..open_options()
    };
    assert!(matches!(
        Wal::open(&path, &options),
        Err(WalError::ClusterMismatch { found: CLUSTER, .. })
    ));
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, vec![0u8; 64 << 10]).unwrap();
    assert!(matches!(
        Wal::open(&foreign, &open_options()),
        Err(WalError::NotAWal)
    ));
    // Another format version (valid checksum) is refused with its number.
    let mut block = std::fs::read(&path).unwrap()[..8192].to_vec();
    for copy in [0usize, 4096] {
        block[copy + 8] = 9;
        let crc = crc32c_bitwise(&block[copy + 4..copy + 4096]);
        block[copy..copy + 4].copy_from_slice(&crc.to_le_bytes());
    }
    write_file_at(&path, 0, &block);
    assert!(matches!(
        Wal::open(&path, &open_options()),
        Err(WalError::FormatVersion { found: 9, .. })
    ));
}

fn crc32c_bitwise(bytes: &[u8]) -> u32 {
    // CRC32C (Castagnoli), bitwise: independent of the implementation under test.
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn plain_writes_when_the_buffer_is_not_registered() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("plain.wal");
    let tuning = Tuning {
        register_buffer: false,
        ..tuning()
    };
    let options = ringraft_wal::CreateOptions {
        tuning,
        ..create_options()
    };
    let mut wal = Wal::create(&path, &options).unwrap();
    assert!(!wal.is_fixed_buffer());
    append_range(&mut wal, 1, 1, 50);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert!(wal.is_fixed_buffer(), "root may register here");
    check_entries(&mut wal, 1, 50, |_| 1);
}

#[test]
fn writes_without_dsync_still_reach_the_file_and_recover() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("nosync.wal");
    let tuning = Tuning {
        sync_writes: false,
        ..tuning()
    };
    let options = ringraft_wal::CreateOptions {
        tuning,
        ..create_options()
    };
    let mut wal = Wal::create(&path, &options).unwrap();
    // ~75 KiB: many writes, several of them full flush_io_bytes_max ones.
    append_range(&mut wal, 1, 1, 200);
    assert_eq!(wal.sync().unwrap(), IoId::new(1, 200));
    // Flushed means written (O_DIRECT, past the page cache): a second
    // descriptor sees the records before any close.
    let layout = entry_layout(&path);
    assert_eq!(layout.len(), 200);
    assert_eq!(layout.last().unwrap().0, 200);
    drop(wal);
    let reopen_options = OpenOptions {
        tuning,
        ..open_options()
    };
    let mut wal = Wal::open(&path, &reopen_options).unwrap();
    assert_eq!(wal.recovery_report().last, IoId::new(1, 200));
    check_entries(&mut wal, 1, 200, |_| 1);
    append_range(&mut wal, 2, 201, 220);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    check_entries(&mut wal, 1, 220, |i| if i <= 200 { 1 } else { 2 });
}

#[test]
fn a_read_only_open_writes_nothing() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 10);
    wal.sync().unwrap();
    drop(wal);
    let before = std::fs::read(&path).unwrap();
    let options = OpenOptions {
        read_only: true,
        ..open_options()
    };
    let mut wal = Wal::open(&path, &options).unwrap();
    assert!(matches!(wal.append(1, b"x"), Err(WalError::ReadOnly)));
    check_entries(&mut wal, 1, 10, |_| 1);
    drop(wal);
    assert!(std::fs::read(&path).unwrap() == before);
}

/// Sets or clears the immutable attribute; writes to an open descriptor then
/// fail with EPERM on ext4/xfs. Needs CAP_LINUX_IMMUTABLE.
fn set_immutable(path: &Path, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let file = std::fs::File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: the ioctl writes one long into `flags`.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    flags = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    // SAFETY: the ioctl reads one long from `flags`.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_SETFLAGS, &flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn a_failed_write_stops_the_wal_and_is_never_reported_flushed() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 1, 1, 20);
    wal.sync().unwrap();
    if let Err(error) = set_immutable(&path, true) {
        // Without CAP_LINUX_IMMUTABLE there is no way to make a write fail here.
        eprintln!("skipped: cannot set the immutable attribute ({error})");
        return;
    }
    wal.append(1, b"never durable").unwrap();
    let outcome = wal.sync();
    set_immutable(&path, false).unwrap();
    match outcome {
        Err(WalError::Failed { errno, .. }) => assert_eq!(errno, libc::EPERM),
        other => panic!("expected a fail-stop, got {other:?}"),
    }
    assert_eq!(
        wal.flushed().get(),
        IoId::new(1, 20),
        "never reported flushed"
    );
    // Fail-stop: nothing is retried, everything refuses from now on.
    assert!(matches!(wal.append(1, b"x"), Err(WalError::Failed { .. })));
    assert!(matches!(wal.flush_submit(), Err(WalError::Failed { .. })));
    assert!(matches!(wal.sync(), Err(WalError::Failed { .. })));
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, 20));
    check_entries(&mut wal, 1, 20, |_| 1);
}

#[test]
fn the_completion_eventfd_wakes_an_executor_and_flush_reap_never_blocks() {
    let (_dir, _path, mut wal) = temp_wal();
    let id = wal.append(1, b"awaited").unwrap();
    assert_eq!(wal.flush_submit().unwrap(), 1);
    let mut poll = libc::pollfd {
        fd: wal.completion_eventfd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
    assert_eq!(ready, 1, "the eventfd became readable");
    wal.clear_completion_eventfd();
    assert_eq!(wal.flush_reap().unwrap(), id);
    assert_eq!(wal.flushed().get(), id);
    // Nothing in flight: the eventfd stays quiet, reaping returns at once.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::poll(&mut poll, 1, 0) }, 0);
    assert_eq!(wal.flush_reap().unwrap(), id);
    // One call submits and waits.
    let next = wal.append(1, b"next").unwrap();
    while wal.flushed().get() < next {
        wal.flush_submit_and_wait().unwrap();
    }
}

/// Entry `index`'s payload in the tests of reads through the file.
fn payload(index: u64) -> Vec<u8> {
    vec![index as u8; 448]
}

/// An unpadded WAL (`create_unpadded`) in a fresh directory, holding two
/// rings' worth of 480-byte entries (`payload(1)`, ...), all durable: the
/// first ring's worth is then read from the file.
fn unpadded_two_rings(name: &str) -> (tempfile::TempDir, Wal) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut wal = create_unpadded(&dir.path().join(name));
    for index in 1..=2 * RING_BYTES / 480 {
        loop {
            match wal.append(1, &payload(index)) {
                Ok(id) => {
                    assert_eq!(id, IoId::new(1, index));
                    break;
                }
                Err(WalError::RingFull { .. }) => {
                    wal.sync().unwrap();
                }
                Err(error) => panic!("append {index}: {error}"),
            }
        }
    }
    wal.sync().unwrap();
    (dir, wal)
}

/// Checks that `view` holds entries `from`, `from + 1`, ... of
/// `unpadded_two_rings`; returns the index after its last.
fn check_view(view: &ReadView<'_>, from: u64) -> u64 {
    let mut next = from;
    for record in view.records() {
        let record = record.unwrap();
        assert_eq!(record.header.io_id(), IoId::new(1, next));
        assert_eq!(record.payload, &payload(next)[..]);
        next += 1;
    }
    next
}

/// A WAL that never pads the rest of a block after a record.
fn create_unpadded(path: &std::path::Path) -> Wal {
    let tuning = Tuning {
        block_pad_bytes_max: 0,
        ..tuning()
    };
    let options = ringraft_wal::CreateOptions {
        tuning,
        ..create_options()
    };
    Wal::create(path, &options).unwrap()
}

#[test]
fn a_view_ending_at_a_segment_filler_stops_before_it() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("filler.wal");
    let mut wal = create_unpadded(&path);
    // Fill the first ring segment up to 16 bytes before its end.
    let mut index = 0;
    loop {
        let remaining = RING_BYTES - wal.positions().accepted;
        if remaining == 16 {
            break;
        }
        let record_bytes = if remaining >= 4032 + 16 + 32 {
            4032
        } else {
            remaining - 16
        };
        wal.append(1, &vec![9u8; record_bytes as usize - 32])
            .unwrap();
        index += 1;
        wal.sync().unwrap();
    }
    // The next record starts the next segment; 16 bytes of filler remain.
    wal.append(1, b"next segment").unwrap();
    assert!(wal.positions().accepted > RING_BYTES);
    let view = wal.read(index, 1 << 20).unwrap();
    assert_eq!((view.entries(), view.last()), (1, IoId::new(1, index)));
    let view = wal.read(index + 1, 1 << 20).unwrap();
    assert_eq!(
        view.records().next().unwrap().unwrap().payload,
        b"next segment"
    );
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, index + 1));
    let view = wal.read(index, 1 << 20).unwrap();
    assert_eq!(view.entries(), 1);
}

#[test]
fn reset_to_a_snapshot_restarts_the_log_after_it_durably() {
    let (_dir, path, mut wal) = temp_wal();
    append_range(&mut wal, 2, 1, 120);
    // A snapshot past the end (a lagging follower): the log continues after it.
    wal.reset_to(IoId::new(3, 500)).unwrap();
    assert_eq!((wal.first_index(), wal.last_id()), (501, IoId::new(3, 500)));
    assert_eq!(wal.purged().get(), IoId::new(3, 500));
    assert!(matches!(wal.read(100, 4096), Err(WalError::Purged { .. })));
    append_range(&mut wal, 3, 501, 540);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!((wal.first_index(), wal.last_id()), (501, IoId::new(3, 540)));
    check_entries(&mut wal, 501, 540, |_| 3);
    // A snapshot inside the log (a follower whose suffix conflicts): the
    // suffix is gone too, and a crash right after the reset finds it empty.
    wal.reset_to(IoId::new(4, 520)).unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!((wal.first_index(), wal.last_id()), (521, IoId::new(4, 520)));
    append_range(&mut wal, 4, 521, 530);
    check_entries(&mut wal, 521, 530, |_| 4);
    // An older snapshot changes nothing.
    wal.reset_to(IoId::new(1, 10)).unwrap();
    assert_eq!(wal.last_id(), IoId::new(4, 530));
}

#[test]
fn reset_to_keeps_working_across_laps_of_the_file() {
    let (_dir, path, mut wal) = temp_wal();
    let mut next = 1;
    for round in 0..12u64 {
        let last = next + 299;
        append_range(&mut wal, 1 + round, next, last);
        wal.sync().unwrap();
        let snapshot = IoId::new(1 + round, last + 7);
        wal.reset_to(snapshot).unwrap();
        next = snapshot.index + 1;
    }
    append_range(&mut wal, 13, next, next + 9);
    wal.sync().unwrap();
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.first_index(), next);
    check_entries(&mut wal, next, next + 9, |_| 13);
}

/// A read of entries that left ring memory, asking for more bytes than the
/// read buffer holds (the shard's applier asks for 1 MiB through a 1 MiB
/// buffer), ends where the buffer ends, usually inside a record: the view
/// stops before that record, and the next read starts at it. (The long
/// overload run's follower stopped with "WAL damaged ... record truncated"
/// here: its received runs are not block padded, so the buffer's end fell
/// inside a record.)
#[test]
fn a_file_read_cut_by_the_read_buffer_stops_before_the_record_it_cuts() {
    // No block padding, so records straddle blocks as a follower's runs do.
    // 480-byte records (448 of payload): a 28 KiB window (read buffer less
    // one block) ends inside one for most starting entries.
    let (_dir, mut wal) = unpadded_two_rings("cut.wal");
    let read_buffer_bytes = tuning().read_buffer_bytes;
    // Each read goes on after the last entry of the one before, as the
    // applier does: the record the previous window cut is not in the
    // window whole, so every read loads a fresh window, cut again.
    let mut cut_reads = 0;
    let mut from = 1;
    loop {
        let view = wal
            .read(from, 4 * read_buffer_bytes)
            .unwrap_or_else(|error| panic!("read from entry {from}: {error}"));
        if view.from_memory() {
            break;
        }
        assert!(view.entries() >= 1, "read from {from}: no entry");
        assert!(view.bytes().len() < read_buffer_bytes);
        let next = check_view(&view, from);
        assert_eq!(view.last(), IoId::new(1, next - 1));
        if view.bytes().len() + 480 > read_buffer_bytes - 4096 {
            cut_reads += 1;
        }
        from = next;
    }
    assert!(
        from > RING_BYTES / 480,
        "only {from} entries came from the file"
    );
    assert!(cut_reads >= 5, "only {cut_reads} reads ended at the buffer");
}

/// A reader taking a little at a time from the file (the applier's batch,
/// a sender's frame) is served from the window already read as long as it
/// holds the next record whole: one file read per window, not per call.
#[test]
fn small_reads_through_the_file_reuse_the_read_window() {
    let (_dir, mut wal) = unpadded_two_rings("window.wal");
    let reads_before = wal.file_reads();
    let (mut from, mut file_bytes, mut views) = (1, 0, 0);
    loop {
        let view = wal.read(from, 2048).unwrap();
        if view.from_memory() {
            break;
        }
        from = check_view(&view, from);
        file_bytes += view.bytes().len();
        views += 1;
    }
    let reads = wal.file_reads() - reads_before;
    let windows = file_bytes / (tuning().read_buffer_bytes - 4096) + 1;
    assert!(views > 100, "only {views} small reads");
    assert!(
        reads <= 2 * windows as u64,
        "{reads} file reads for {views} small reads of {file_bytes} bytes ({windows} windows)"
    );
}
