//! TESTING ONLY: fault hooks that make a slow disk or a slow link
//! reproducible, so flow control can be tested (issue: slow and overloaded
//! followers). Nothing here is meant for production use.
//!
//! | setting | effect |
//! |---|---|
//! | `flush-delay-us=N` | every WAL write of the shard completes N µs late (an io_uring timer linked after it: the shard loop never blocks) |
//! | `peer-bytes-per-sec=N` | the shard reads at most N bytes/s from each peer's data lane (TCP pushes back on the leader, once the kernel's socket buffers are full); control lanes are never throttled |
//! | `peer-send-bytes-per-sec=N` | the shard sends at most N bytes/s on its data lane to the peer `peer-send-to` (all peers when 0 or absent): set on a leader, a slow link to one follower as the leader sees it, with no kernel buffering in between |
//! | `peer-send-to=ID` | the node `peer-send-bytes-per-sec` applies to (0: every peer) |
//!
//! A node starts with [`NodeConfig::faults`](super::NodeConfig::faults);
//! [`Node::set_faults`](super::Node::set_faults) changes them while running
//! (each shard applies the change at its next tick).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The fault settings of a node (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Extra delay of every WAL write (zero: off).
    pub flush_delay: Duration,
    /// Bytes per second read from each peer's data lane (0: unlimited).
    pub data_recv_bytes_per_sec: u64,
    /// Bytes per second sent on the data lane to `data_send_node` (0: unlimited).
    pub data_send_bytes_per_sec: u64,
    /// The node the send throttle applies to (0: every peer).
    pub data_send_node: u64,
}

/// A `--fault` / `DEBUG FAULT` setting that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fault `{0}`: expected flush-delay-us=N, peer-bytes-per-sec=N, \
     peer-send-bytes-per-sec=N, peer-send-to=ID or off (comma-separated; 0 turns one off)"
)]
pub struct FaultParseError(pub String);

impl Faults {
    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }

    /// Sets these faults on a shard's WAL and transport.
    pub fn apply(&self, wal: &mut ringraft_wal::Wal, transport: &mut ringraft_net::Transport) {
        wal.set_fault_flush_delay(self.flush_delay);
        transport.set_fault_data_recv_bytes_per_sec(self.data_recv_bytes_per_sec);
        let node = (self.data_send_node != 0).then_some(self.data_send_node as u32);
        transport.set_fault_data_send_bytes_per_sec(self.data_send_bytes_per_sec, node);
    }

    /// Applies `key=value[,key=value...]` (or `off`) on top of `self`.
    pub fn apply_settings(&mut self, text: &str) -> Result<(), FaultParseError> {
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("off") {
                *self = Faults::default();
                continue;
            }
            let bad = || FaultParseError(item.to_string());
            let (key, value) = item.split_once('=').ok_or_else(bad)?;
            let value: u64 = value.trim().parse().map_err(|_| bad())?;
            match key.trim() {
                "flush-delay-us" => self.flush_delay = Duration::from_micros(value),
                "peer-bytes-per-sec" => self.data_recv_bytes_per_sec = value,
                "peer-send-bytes-per-sec" => self.data_send_bytes_per_sec = value,
                "peer-send-to" => self.data_send_node = value,
                _ => return Err(bad()),
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flush-delay-us={},peer-bytes-per-sec={},peer-send-bytes-per-sec={},peer-send-to={}",
            self.flush_delay.as_micros(),
            self.data_recv_bytes_per_sec,
            self.data_send_bytes_per_sec,
            self.data_send_node
        )
    }
}

/// Faults handed from any thread to one shard: plain atomics and a version
/// the shard compares with what it applied last (no queue, latest wins).
#[derive(Debug, Default)]
pub struct FaultSwitch {
    flush_delay_us: AtomicU64,
    data_recv_bytes_per_sec: AtomicU64,
    data_send_bytes_per_sec: AtomicU64,
    data_send_node: AtomicU64,
    version: AtomicU64,
    applied: AtomicU64,
}

impl FaultSwitch {
    /// A switch holding `faults`, to be applied at the shard's first tick.
    pub fn new(faults: Faults) -> FaultSwitch {
        let switch = FaultSwitch::default();
        if faults.any() {
            switch.set(faults);
        }
        switch
    }

    /// Asks the shard to run with `faults` from its next tick on.
    pub fn set(&self, faults: Faults) {
        self.flush_delay_us
            .store(faults.flush_delay.as_micros() as u64, Ordering::Relaxed);
        self.data_recv_bytes_per_sec
            .store(faults.data_recv_bytes_per_sec, Ordering::Relaxed);
        self.data_send_bytes_per_sec
            .store(faults.data_send_bytes_per_sec, Ordering::Relaxed);
        self.data_send_node
            .store(faults.data_send_node, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The faults now asked for.
    pub fn get(&self) -> Faults {
        Faults {
            flush_delay: Duration::from_micros(self.flush_delay_us.load(Ordering::Relaxed)),
            data_recv_bytes_per_sec: self.data_recv_bytes_per_sec.load(Ordering::Relaxed),
            data_send_bytes_per_sec: self.data_send_bytes_per_sec.load(Ordering::Relaxed),
            data_send_node: self.data_send_node.load(Ordering::Relaxed),
        }
    }

    /// The shard's side: the faults to apply if they changed since the last call.
    pub fn take_change(&self) -> Option<Faults> {
        let version = self.version.load(Ordering::Acquire);
        if self.applied.swap(version, Ordering::AcqRel) == version {
            return None;
        }
        Some(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_a_change_is_taken_once() {
        let mut faults = Faults::default();
        faults
            .apply_settings("flush-delay-us=2000, peer-bytes-per-sec=65536")
            .unwrap();
        faults
            .apply_settings("peer-send-bytes-per-sec=1000,peer-send-to=3")
            .unwrap();
        assert_eq!(
            (faults.data_send_bytes_per_sec, faults.data_send_node),
            (1000, 3)
        );
        assert_eq!(faults.flush_delay, Duration::from_millis(2));
        assert_eq!(faults.data_recv_bytes_per_sec, 65536);
        assert!(faults.apply_settings("flush-delay=1").is_err());
        assert!(faults.apply_settings("peer-bytes-per-sec=x").is_err());
        let switch = FaultSwitch::new(faults);
        assert_eq!(switch.take_change(), Some(faults));
        assert_eq!(switch.take_change(), None);
        faults.apply_settings("off").unwrap();
        assert!(!faults.any());
        switch.set(faults);
        assert_eq!(switch.take_change(), Some(Faults::default()));
        assert_eq!(switch.take_change(), None);
        assert!(FaultSwitch::new(Faults::default()).take_change().is_none());
    }
}
