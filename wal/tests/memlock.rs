//! Where the process may not lock the ring memory (an ordinary user has an
//! 8 MiB RLIMIT_MEMLOCK), the WAL writes the same memory with plain O_DIRECT
//! writes. Its own test binary: it lowers the process's memlock limit.

mod common;

use common::*;
use ringraft_wal::{IoId, Wal};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;

/// Drops CAP_IPC_LOCK from this thread's effective set, so io_uring accounts
/// registered buffers against RLIMIT_MEMLOCK as for an ordinary user.
fn drop_ipc_lock() -> std::io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills the header and two data structs we own.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset reads the header and two data structs we own.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn without_memlock_the_wal_falls_back_to_plain_writes() {
    drop_ipc_lock().unwrap();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: fills a struct we own.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    assert_eq!(got, 0);
    limit.rlim_cur = 64 << 10;
    // SAFETY: sets this process's memlock limit from a valid struct.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    assert_eq!(set, 0);
    // The 256 KiB ring exceeds the 64 KiB limit: registration fails.
    let (_dir, path, mut wal) = temp_wal();
    assert!(
        !wal.is_fixed_buffer(),
        "registration should have been refused"
    );
    append_range(&mut wal, 1, 1, 200);
    assert_eq!(wal.sync().unwrap(), IoId::new(1, 200));
    drop(wal);
    let mut wal = Wal::open(&path, &open_options()).unwrap();
    assert!(!wal.is_fixed_buffer());
    check_entries(&mut wal, 1, 200, |_| 1);
}
