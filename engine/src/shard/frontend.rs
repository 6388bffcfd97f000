//! Client service on the shard's own thread (thread-per-core): a
//! [`Frontend`] owns client sockets, and the shard loop drives it, so a
//! client's command reaches the Raft core and the ring without a thread
//! hop, a lock or a futex.
//!
//! ```text
//!  shard loop turn
//!   ├─ epoll_wait({..., frontend.fd()})     the frontend's own epoll fd:
//!   │                                       readable when a socket is
//!   ├─ mailbox requests                     (library callers, other shards)
//!   ├─ frontend.poll(requests) ──▶ requests.propose(tag, len, encode)
//!   │     read, parse, route              = raft.propose(len) + wal.append_with:
//!   │                                       the payload is written once, into the ring
//!   ├─ drive / apply ──▶ frontend.proposal_done(tag, outcome, reply)
//!   └─ frontend.flush()                     replies written to the sockets
//! ```
//!
//! A frontend is created on the shard's thread by a [`FrontendFactory`]
//! (its connection state is `!Send`); it gets every local shard's
//! [`ShardShared`] so it can forward a command to the shard that leads the
//! command's group through that shard's bounded mailbox, without blocking
//! ([`super::mailbox::Mailbox::try_submit`]).

use std::os::fd::RawFd;
use std::sync::Arc;

use super::mailbox::Outcome;
use super::runtime::ShardShared;
use super::state_machine::StateMachine;

pub use super::runtime::ShardRequests;

/// Client service driven by a shard loop. Every method runs on the shard's
/// thread and must not block.
pub trait Frontend<S: StateMachine> {
    /// An fd that becomes readable when the frontend has input (its epoll
    /// fd); the shard loop wakes on it. The loop calls [`Frontend::poll`]
    /// every turn anyway, so it may also hold work that is not fd-driven.
    fn fd(&self) -> RawFd;

    /// Takes input (accepts, reads, parses) and submits work through
    /// `requests`. Each proposal carries a tag that comes back in exactly
    /// one [`Frontend::proposal_done`].
    fn poll(&mut self, requests: &mut ShardRequests<'_, S>);

    /// A proposal submitted with `tag` finished: `Replied` with the state
    /// machine's reply once committed and applied, or why not.
    fn proposal_done(&mut self, tag: u64, outcome: Outcome, reply: &[u8]);

    /// End of a loop turn: write what is ready. Returns true when work is
    /// left that needs another turn soon (the loop then does not sleep).
    fn flush(&mut self) -> bool;
}

/// What a frontend factory gets on the shard's thread.
#[derive(Debug, Clone)]
pub struct FrontendContext {
    /// The shard this frontend runs on.
    pub shard: u32,
    /// Every shard of the node (index = shard = group), for forwarding,
    /// leaders and status.
    pub shards: Arc<[Arc<ShardShared>]>,
}

/// Builds a shard's frontend on that shard's thread.
pub type FrontendFactory<S> =
    Arc<dyn Fn(FrontendContext) -> std::io::Result<Box<dyn Frontend<S>>> + Send + Sync>;
