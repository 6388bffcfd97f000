//! The testing-only flush-delay fault hook: a write is reported durable no
//! sooner than the delay after the disk finished it, and submitting or
//! reaping never blocks meanwhile (the shard loop keeps running).

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringraft_wal::{IoId, Wal};

const DELAY: Duration = Duration::from_millis(150);

fn wait_flushed(wal: &mut Wal, id: IoId) {
    while wal.flush_reap().unwrap() < id {
        wal.flush_wait().unwrap();
        wal.flush_submit().unwrap();
    }
}

#[test]
fn a_flush_delay_holds_durability_back_without_blocking_the_caller() {
    let (_dir, path, mut wal) = temp_wal();
    wal.set_fault_flush_delay(DELAY);
    let id = wal.append(1, b"slow").unwrap();
    let start = Instant::now();
    assert_eq!(wal.flush_submit().unwrap(), 1);
    // The write itself takes well under the delay; the caller is not held.
    assert!(
        wal.flush_reap().unwrap() < id,
        "reported durable before the delay"
    );
    assert!(start.elapsed() < DELAY / 2, "submit + reap blocked");
    wait_flushed(&mut wal, id);
    assert!(
        start.elapsed() >= DELAY,
        "durable after {:?}",
        start.elapsed()
    );
    assert_eq!(wal.flushed().get(), id);

    // Off again: a write is durable as fast as the disk allows.
    wal.set_fault_flush_delay(Duration::ZERO);
    let id = wal.append(1, b"fast").unwrap();
    let start = Instant::now();
    wal.flush_submit().unwrap();
    wait_flushed(&mut wal, id);
    assert!(
        start.elapsed() < DELAY,
        "still delayed: {:?}",
        start.elapsed()
    );

    // What was written under the delay is on disk like anything else.
    drop(wal);
    let mut wal = reopen(&path);
    assert_eq!(wal.last_id(), IoId::new(1, 2));
    let view = wal.read(1, 4096).unwrap();
    let payloads: Vec<&[u8]> = view.records().map(|r| r.unwrap().payload).collect();
    assert_eq!(payloads, [&b"slow"[..], &b"fast"[..]]);
}

#[test]
fn a_flush_delay_from_the_tuning_slows_a_stream_of_writes() {
    let dir =
        tempfile::tempdir_in(std::env::var_os("RINGRAFT_TEST_DIR").unwrap_or("/var/tmp".into()))
            .unwrap();
    let mut options = create_options();
    options.tuning.fault_flush_delay = Duration::from_millis(40);
    options.tuning.flush_ios_max = 1;
    let mut wal = Wal::create(dir.path().join("shard.wal"), &options).unwrap();
    let start = Instant::now();
    // One write in flight at a time: five separate writes take five delays.
    for i in 0..5u8 {
        let id = wal.append(1, &[i; 100]).unwrap();
        wal.flush_submit().unwrap();
        wait_flushed(&mut wal, id);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
}
