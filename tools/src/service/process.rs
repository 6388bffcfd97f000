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

use ringraft_engine::shard::budget::BudgetItem;
use ringraft_engine::shard::{FaultParseError, Faults};

use super::resp::Limits;

/// Reply bytes a connection buffers before writing them out (mirrors
/// `server/connection.rs`, which sizes its reply buffer as
/// `2 × REPLY_FLUSH_BYTES + command_bytes_max`).
pub const CONNECTION_REPLY_FLUSH_BYTES: usize = 256 << 10;
/// Stack of a connection thread (mirrors `server/mod.rs`).
pub const CONNECTION_STACK_BYTES: usize = 256 << 10;
/// Stack of the acceptor thread (std's default).
const ACCEPTOR_STACK_BYTES: u64 = 2 << 20;

/// The client side of the budget: `connections_max` connections, each
/// with its input buffer, reply buffer, payload buffer, the reply of one
/// request (at most `reply_bytes_max`) and its thread stack.
pub fn client_budget_items(connections_max: usize, reply_bytes_max: usize) -> Vec<BudgetItem> {
    let limits = Limits::default();
    let command = limits.command_bytes_max as u64;
    let n = connections_max as u64;
    vec![
        BudgetItem {
            name: "client input buffers (command_bytes_max)",
            count: n,
            unit_bytes: command,
        },
        BudgetItem {
            name: "client reply buffers (2 x flush + command_bytes_max)",
            count: n,
            unit_bytes: 2 * CONNECTION_REPLY_FLUSH_BYTES as u64 + command,
        },
        BudgetItem {
            name: "client payload buffers (command_bytes_max + 4096)",
            count: n,
            unit_bytes: command + 4096,
        },
        BudgetItem {
            name: "client request replies (reply_bytes_max)",
            count: n,
            unit_bytes: reply_bytes_max as u64,
        },
        BudgetItem {
            name: "client thread stacks",
            count: n,
            unit_bytes: CONNECTION_STACK_BYTES as u64,
        },
        BudgetItem {
            name: "acceptor thread stack",
            count: 1,
            unit_bytes: ACCEPTOR_STACK_BYTES,
        },
    ]
}

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
