//! What the running server process registers once at start-up for the
//! commands answered without a shard: its memory budget (INFO `# Memory`)
//! and, when enabled, the testing-only fault switch (`DEBUG FAULT`).
//!
//! Process-wide on purpose: `ringraft serve` runs one node per process, and
//! these are read by every connection without being threaded through
//! [`ServerView`](super::command::ServerView). A program that embeds the
//! service without registering anything gets `memory_budget_bytes:0` and a
//! disabled `DEBUG FAULT`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ringraft_engine::shard::{FaultParseError, Faults};

static MEMORY_BUDGET_BYTES: AtomicU64 = AtomicU64::new(0);

type FaultHook = Box<dyn Fn(&str) -> Result<Faults, FaultParseError> + Send + Sync>;

static FAULT_HOOK: OnceLock<FaultHook> = OnceLock::new();

/// Records the process's memory budget total (shown by INFO).
pub fn set_memory_budget_bytes(bytes: u64) {
    MEMORY_BUDGET_BYTES.store(bytes, Ordering::Relaxed);
}

/// The recorded memory budget total (0: none recorded).
pub fn memory_budget_bytes() -> u64 {
    MEMORY_BUDGET_BYTES.load(Ordering::Relaxed)
}

/// TESTING ONLY: enables `DEBUG FAULT <settings>`, which calls `hook` with
/// the settings text and answers with the faults now in force. Only the
/// first registration counts.
pub fn enable_debug_fault(
    hook: impl Fn(&str) -> Result<Faults, FaultParseError> + Send + Sync + 'static,
) {
    let _ = FAULT_HOOK.set(Box::new(hook));
}

/// Applies `DEBUG FAULT` settings, if enabled (None: disabled).
pub fn debug_fault(settings: &str) -> Option<Result<Faults, FaultParseError>> {
    FAULT_HOOK.get().map(|hook| hook(settings))
}

/// This process's resident set size, bytes (0 if unreadable).
pub fn rss_bytes() -> u64 {
    ringraft_engine::shard::budget::rss_bytes().unwrap_or(0)
}
