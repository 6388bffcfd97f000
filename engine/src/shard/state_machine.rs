//! `StateMachine`: the contract between the engine and the application it
//! replicates.
//!
//! The engine hands the application committed entries, in log order, with
//! their payloads borrowed straight from the WAL ring (no copy), and the
//! application writes each entry's reply into a fixed slot table that the
//! runtime allocated once at start-up. Nothing on this path allocates.
//!
//! ```text
//!   WAL ring ──(IoId, &payload)──▶ StateMachine::apply ──▶ ResponseSlots
//!                                                           slot = index % slots_max
//!   client waiting on index i ◀── ResponseSlots::response(IoId { term, index: i })
//!
//!   snapshot build:   snapshot_chunk(0, buf), snapshot_chunk(n0, buf), ... until done
//!   snapshot install: install_chunk(snap, 0, c0, false), ..., install_chunk(snap, off, cN, true)
//! ```
//!
//! Rules every implementation keeps:
//! - `apply` is deterministic: the same entries on the same state give the
//!   same state and the same replies on every replica. Anything that varies
//!   between replicas (clocks, randomness) must travel inside the payload.
//! - An entry with an empty payload is the leader's empty entry of its term:
//!   it changes nothing but still advances [`StateMachine::applied`] (its
//!   reply is empty).
//! - Entries come in log order, each after [`StateMachine::applied`]
//!   (anything else is a runtime bug, and may panic).
//! - A reply that does not fit its slot is a [`ResponseTooLarge`]; the
//!   application then writes a short error reply instead (the slot size is
//!   at least [`StateMachine::response_bytes_max`], which the runtime reads
//!   before sizing its slots).
//!
//! # Example
//!
//! A counter that adds each payload's first byte:
//!
//! ```
//! use ringraft_engine::shard::{
//!     ApplyError, Entry, ResponseSlots, ResponseWriter, SnapshotChunk, SnapshotError,
//!     StateMachine,
//! };
//! use ringraft_wal::IoId;
//!
//! #[derive(Default)]
//! struct Counter { total: u64, applied: IoId, incoming: [u8; 8] }
//!
//! impl StateMachine for Counter {
//!     fn response_bytes_max(&self) -> usize { 8 }
//!     fn apply<'a, I>(&mut self, entries: I, responses: &mut ResponseSlots) -> Result<(), ApplyError>
//!     where I: Iterator<Item = Entry<'a>> {
//!         for entry in entries {
//!             if let Some(&add) = entry.payload.first() {
//!                 self.total += u64::from(add);
//!                 responses.writer(entry.id).write(&self.total.to_le_bytes()).expect("8 bytes fit");
//!             } else {
//!                 responses.writer(entry.id); // the leader's empty entry: empty reply
//!             }
//!             self.applied = entry.id;
//!         }
//!         Ok(())
//!     }
//!     fn applied(&self) -> IoId { self.applied }
//!     fn query(&self, _request: &[u8], reply: &mut ResponseWriter<'_>) -> Result<(), ApplyError> {
//!         reply.write(&self.total.to_le_bytes()).map_err(|_| ApplyError::ReplyTooLarge)
//!     }
//!     fn snapshot_chunk(&mut self, offset: u64, out: &mut [u8]) -> Result<SnapshotChunk, SnapshotError> {
//!         // A one-chunk snapshot: the total, little-endian.
//!         if offset != 0 { return Err(SnapshotError::UnexpectedOffset { expected: 0, got: offset }); }
//!         out[..8].copy_from_slice(&self.total.to_le_bytes());
//!         Ok(SnapshotChunk { snapshot: self.applied, bytes: 8, done: true })
//!     }
//!     fn install_chunk(&mut self, snapshot: IoId, offset: u64, chunk: &[u8], done: bool)
//!         -> Result<(), SnapshotError> {
//!         let start = usize::try_from(offset).map_err(|_| SnapshotError::Malformed { offset })?;
//!         let end = start + chunk.len();
//!         if end > 8 { return Err(SnapshotError::Malformed { offset }); }
//!         self.incoming[start..end].copy_from_slice(chunk);
//!         if done {
//!             self.total = u64::from_le_bytes(self.incoming);
//!             self.applied = snapshot;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut counter = Counter::default();
//! let mut slots = ResponseSlots::new(16, counter.response_bytes_max());
//! let entries = [
//!     Entry { id: IoId::new(1, 1), payload: &[] },
//!     Entry { id: IoId::new(1, 2), payload: &[5] },
//!     Entry { id: IoId::new(1, 3), payload: &[7] },
//! ];
//! counter.apply(entries.into_iter(), &mut slots).unwrap();
//! assert_eq!(counter.applied(), IoId::new(1, 3));
//! assert_eq!(slots.response(IoId::new(1, 3)), Some(&12u64.to_le_bytes()[..]));
//! assert_eq!(slots.response(IoId::new(1, 1)), Some(&[][..]));
//!
//! // Ship the state to another replica.
//! let mut buf = [0u8; 64];
//! let chunk = counter.snapshot_chunk(0, &mut buf).unwrap();
//! let mut other = Counter::default();
//! other.install_chunk(chunk.snapshot, 0, &buf[..chunk.bytes], chunk.done).unwrap();
//! assert_eq!((other.total, other.applied()), (12, IoId::new(1, 3)));
//! ```

use ringraft_wal::IoId;

/// One committed log entry, its payload borrowed from the WAL ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// (term, index) of the entry.
    pub id: IoId,
    /// The application's bytes (empty for the leader's empty entry).
    pub payload: &'a [u8],
}

/// What the application replicates. See the module documentation for the
/// rules and a compiled example.
pub trait StateMachine {
    /// The longest reply `apply` writes for one entry. The runtime sizes
    /// its [`ResponseSlots`] with at least this many bytes per slot.
    fn response_bytes_max(&self) -> usize;

    /// Applies committed entries in log order and writes each entry's reply
    /// into `responses.writer(entry.id)`.
    ///
    /// An `Err` means an entry could not be decoded (a bug or a different
    /// application version): the runtime stops the shard; [`Self::applied`]
    /// names the last entry that was applied.
    fn apply<'a, I>(&mut self, entries: I, responses: &mut ResponseSlots) -> Result<(), ApplyError>
    where
        I: Iterator<Item = Entry<'a>>;

    /// The last applied entry (ZERO before the first).
    fn applied(&self) -> IoId;

    /// Answers a read-only request against the current state (the runtime
    /// calls it once `applied` has reached the read index). `reply` is the
    /// caller's bounded buffer; a reply that does not fit is
    /// [`ApplyError::ReplyTooLarge`] and leaves `reply` partly written.
    fn query(&self, request: &[u8], reply: &mut ResponseWriter<'_>) -> Result<(), ApplyError>;

    /// Writes the snapshot's bytes from `offset` into `out` and says how many
    /// it wrote. A build starts at offset 0 (which captures `applied()` as
    /// the snapshot's id) and usually goes on at `offset + bytes` until
    /// `done`; an implementation may also accept other offsets of the same
    /// build (to resend a lost chunk) or answer
    /// [`SnapshotError::UnexpectedOffset`]. Unless
    /// [`Self::applies_during_build`] says otherwise, a build is not
    /// interleaved with `apply` (a changed state is
    /// [`SnapshotError::StateChanged`]; restart at 0). A chunk is never empty
    /// unless `done`.
    fn snapshot_chunk(
        &mut self,
        offset: u64,
        out: &mut [u8],
    ) -> Result<SnapshotChunk, SnapshotError>;

    /// Whether `apply` may run now, between two chunks of a build. `false`
    /// (the default): the runtime holds apply back from offset 0 until
    /// `done`, so the build reads one unchanging state, and writes wait for
    /// the whole build. An implementation that keeps aside what the build
    /// still has to write as the state changes (copy-on-write) answers
    /// `true` while its bounded room for that lasts; its chunks must still
    /// describe the state as of the build's snapshot id.
    fn applies_during_build(&self) -> bool {
        false
    }

    /// Receives the snapshot `snapshot` in order: offset 0 starts a fresh
    /// install (discarding a partial one), each later chunk must start where
    /// the previous one ended. The current state keeps serving until the
    /// chunk with `done`, which replaces it whole and sets `applied()` to
    /// `snapshot`.
    fn install_chunk(
        &mut self,
        snapshot: IoId,
        offset: u64,
        chunk: &[u8],
        done: bool,
    ) -> Result<(), SnapshotError>;
}

/// One step of a snapshot build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The last entry the snapshot covers.
    pub snapshot: IoId,
    /// Bytes written at the front of the caller's buffer.
    pub bytes: usize,
    /// The snapshot ends with these bytes.
    pub done: bool,
}

/// An entry the state machine cannot apply, or a query it cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The payload does not decode: the log holds bytes this application
    /// did not write.
    #[error("entry {id} has a malformed payload")]
    Malformed {
        /// The entry.
        id: IoId,
    },
    /// A query's request does not decode.
    #[error("malformed query")]
    MalformedQuery,
    /// A query's reply does not fit the caller's buffer.
    #[error("query reply larger than the caller's buffer")]
    ReplyTooLarge,
}

/// A snapshot that cannot be built or installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A chunk does not start where the previous one ended.
    #[error("snapshot chunk at offset {got}, expected {expected}")]
    UnexpectedOffset {
        /// Where the next chunk must start.
        expected: u64,
        /// Where it started.
        got: u64,
    },
    /// The state was applied to between two chunks of a build.
    #[error("state changed during the snapshot build (was {snapshot}, now {applied})")]
    StateChanged {
        /// The id the build started from.
        snapshot: IoId,
        /// The state's id now.
        applied: IoId,
    },
    /// The caller's buffer cannot hold the smallest unit the build writes.
    #[error("snapshot buffer of {bytes} bytes is too small")]
    BufferTooSmall {
        /// The buffer's size.
        bytes: usize,
    },
    /// The received bytes are not a snapshot of this application.
    #[error("malformed snapshot at offset {offset}")]
    Malformed {
        /// Offset of the first bad byte (or of the chunk holding it).
        offset: u64,
    },
    /// A received item breaks a configured bound (`*_max`) of this state
    /// machine.
    #[error("snapshot exceeds a configured bound at offset {offset}")]
    OverBound {
        /// Offset of the item.
        offset: u64,
    },
}

/// A reply larger than the slot (or buffer) it is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reply of at least {needed_bytes} bytes does not fit {capacity_bytes} bytes")]
pub struct ResponseTooLarge {
    /// Bytes the reply needed so far.
    pub needed_bytes: usize,
    /// Capacity of the slot.
    pub capacity_bytes: usize,
}

/// Appends a reply into a bounded buffer; never allocates.
#[derive(Debug)]
pub struct ResponseWriter<'a> {
    buf: &'a mut [u8],
    len: &'a mut usize,
}

impl<'a> ResponseWriter<'a> {
    /// A writer that appends to `buf` after its first `*len` bytes and keeps
    /// `*len` current.
    pub fn new(buf: &'a mut [u8], len: &'a mut usize) -> ResponseWriter<'a> {
        assert!(*len <= buf.len(), "length past the buffer");
        ResponseWriter { buf, len }
    }

    /// Appends `bytes` whole, or nothing and an error.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ResponseTooLarge> {
        let end = *self.len + bytes.len();
        if end > self.buf.len() {
            return Err(ResponseTooLarge {
                needed_bytes: end,
                capacity_bytes: self.buf.len(),
            });
        }
        self.buf[*self.len..end].copy_from_slice(bytes);
        *self.len = end;
        Ok(())
    }

    /// What has been written.
    pub fn written(&self) -> &[u8] {
        &self.buf[..*self.len]
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        *self.len
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        *self.len == 0
    }

    /// Forgets everything after the first `len` bytes (to replace a reply
    /// that did not fit by a short error).
    pub fn truncate(&mut self, len: usize) {
        *self.len = (*self.len).min(len);
    }

    /// Capacity of the underlying buffer.
    pub fn capacity_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// The fixed table where applied entries leave their replies, indexed by
/// log index: entry `index` uses slot `index % slots_max`. A slot remembers
/// which entry wrote it, so a reply is never handed to the wrong waiter
/// after the table has wrapped. Allocated once; `slots_max * slot_bytes`
/// bytes.
#[derive(Debug)]
pub struct ResponseSlots {
    /// Slot i is `bytes[i * slot_bytes..][..lens[i]]`, written by `ids[i]`.
    bytes: Box<[u8]>,
    lens: Box<[usize]>,
    ids: Box<[IoId]>,
    slot_bytes: usize,
}

impl ResponseSlots {
    /// A table of `slots_max` slots of `slot_bytes` each.
    pub fn new(slots_max: usize, slot_bytes: usize) -> ResponseSlots {
        assert!(slots_max > 0, "slots_max must be at least 1");
        ResponseSlots {
            bytes: vec![0; slots_max * slot_bytes].into_boxed_slice(),
            lens: vec![0; slots_max].into_boxed_slice(),
            ids: vec![IoId::ZERO; slots_max].into_boxed_slice(),
            slot_bytes,
        }
    }

    /// Number of slots.
    pub fn slots_max(&self) -> usize {
        self.lens.len()
    }

    /// Capacity of each slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    fn slot_of(&self, id: IoId) -> usize {
        // The modulo is below slots_max, a usize, so the cast is lossless.
        (id.index % self.lens.len() as u64) as usize
    }

    /// Claims entry `id`'s slot (emptying it) and returns a writer over it.
    pub fn writer(&mut self, id: IoId) -> ResponseWriter<'_> {
        let slot = self.slot_of(id);
        self.ids[slot] = id;
        self.lens[slot] = 0;
        let start = slot * self.slot_bytes;
        ResponseWriter::new(
            &mut self.bytes[start..start + self.slot_bytes],
            &mut self.lens[slot],
        )
    }

    /// The reply entry `id` left, if its slot has not been reused since.
    pub fn response(&self, id: IoId) -> Option<&[u8]> {
        let slot = self.slot_of(id);
        (self.ids[slot] == id).then(|| &self.bytes[slot * self.slot_bytes..][..self.lens[slot]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_reuse_hides_the_older_reply() {
        let mut slots = ResponseSlots::new(4, 8);
        slots.writer(IoId::new(1, 2)).write(b"old").unwrap();
        assert_eq!(slots.response(IoId::new(1, 2)), Some(&b"old"[..]));
        slots.writer(IoId::new(1, 6)).write(b"new").unwrap();
        assert_eq!(slots.response(IoId::new(1, 2)), None);
        assert_eq!(slots.response(IoId::new(1, 6)), Some(&b"new"[..]));
        // Same index rewritten under a higher term is another entry.
        assert_eq!(slots.response(IoId::new(2, 6)), None);
    }

    #[test]
    fn a_reply_too_large_leaves_the_slot_as_it_was() {
        let mut slots = ResponseSlots::new(2, 4);
        let mut writer = slots.writer(IoId::new(1, 1));
        writer.write(b"ab").unwrap();
        assert_eq!(
            writer.write(b"cde"),
            Err(ResponseTooLarge {
                needed_bytes: 5,
                capacity_bytes: 4
            })
        );
        assert_eq!(writer.written(), b"ab");
        assert_eq!(slots.response(IoId::new(1, 1)), Some(&b"ab"[..]));
    }
}
