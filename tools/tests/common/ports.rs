//! Loopback ports for tests that start listeners on ports they chose (a
//! node process, a restarted transport): reserved below Linux's ephemeral
//! range and never handed out twice, in this process or in another test
//! process on the machine.
//!
//! Why below the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`,
//! 32768-60999 by default): while a node is down, its port is free, and any
//! outgoing connection may get it as its source port (a peer reconnecting
//! to that very port even connects to itself: TCP simultaneous open), so the
//! node's restart fails with "Address already in use". Source ports are
//! only taken from the ephemeral range, so a port below it stays free.
//!
//! Why lock files: cargo runs the tests of a binary in parallel and other
//! test processes (other binaries, other checkouts) may run at the same
//! time. Ports go out in units of `UNIT_PORTS`; a unit is owned by the
//! process holding the `flock` of its file in
//! `$TMPDIR/ringraft-test-ports/`, until that process exits (the kernel
//! drops the lock of a killed process too). A unit is also probed (every
//! port bound once) so a port some other program listens on is skipped.
//!
//! This file is shared by the test binaries of every crate (`mod ports;`
//! through `#[path]` outside tools/tests); each uses part of it.
#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lowest port handed out (below: well-known and registered services, and
/// `ringraft cluster`'s default ports from 7001).
const LOW_PORT: u16 = 10_240;
/// Ports never handed out: those of `ringraft bench`'s default 3-node
/// cluster (clients from 21001, peers from 22001, 256 a node), so a bench
/// run next to the tests finds its ports free.
const AVOID_PORTS: std::ops::Range<u16> = 21_001..22_769;
/// Ports a lock file stands for.
const UNIT_PORTS: u16 = 64;
/// How long `block` waits for free units (every unit locked by other test
/// processes) before giving up.
const WAIT_MAX: Duration = Duration::from_secs(120);

/// The units this process owns: their lock files (held open) and the part
/// of the last one not handed out yet (`next..end`).
struct Owned {
    locks: Vec<File>,
    next: u16,
    end: u16,
}

static OWNED: Mutex<Owned> = Mutex::new(Owned {
    locks: Vec::new(),
    next: 0,
    end: 0,
});

/// The first of `len` consecutive loopback ports, all below the ephemeral
/// range, reserved for this process until it exits.
pub fn block(len: u16) -> u16 {
    assert!(len > 0);
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    if owned.end - owned.next < len {
        let units = len.div_ceil(UNIT_PORTS);
        let (base, locks) = reserve_units(units);
        owned.locks.extend(locks);
        owned.next = base;
        owned.end = base + units * UNIT_PORTS;
    }
    let base = owned.next;
    owned.next += len;
    base
}

/// One reserved loopback port as an address.
pub fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], block(1)))
}

/// The first port of Linux's ephemeral range (32768 if it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Locks `units` consecutive free units; returns their first port.
fn reserve_units(units: u16) -> (u16, Vec<File>) {
    let high = ephemeral_low();
    let total = high.saturating_sub(LOW_PORT) / UNIT_PORTS;
    assert!(
        total >= units,
        "ephemeral ports start at {high}: no room below for {units} units of {UNIT_PORTS} ports"
    );
    let dir = std::env::temp_dir().join("ringraft-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock directory");
    // Processes start their search at different units, so they rarely
    // contend for the same lock files.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    let starts = total - units + 1;
    let first = (seed.wrapping_mul(2_654_435_761) % u32::from(starts)) as u16;
    let start = Instant::now();
    loop {
        for step in 0..starts {
            let unit = (first + step) % starts;
            if let Some(taken) = try_units(&dir, unit, units) {
                return taken;
            }
        }
        assert!(
            start.elapsed() < WAIT_MAX,
            "no {units} free units of {UNIT_PORTS} ports in {LOW_PORT}..{high} \
             for {WAIT_MAX:?} (see {})",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Units `unit..unit + units` if none is locked and every port is free.
fn try_units(dir: &std::path::Path, unit: u16, units: u16) -> Option<(u16, Vec<File>)> {
    let base = LOW_PORT + unit * UNIT_PORTS;
    let end = base + units * UNIT_PORTS;
    if base < AVOID_PORTS.end && AVOID_PORTS.start < end {
        return None;
    }
    let mut locks = Vec::with_capacity(usize::from(units));
    for u in 0..units {
        let path = dir.join(format!("{}", base + u * UNIT_PORTS));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ok()?;
        // Non-blocking: a locked unit is skipped, so two processes wanting
        // overlapping runs never wait on each other.
        file.try_lock().ok()?;
        locks.push(file);
    }
    let all_free = (base..end).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
    all_free.then_some((base, locks))
}
