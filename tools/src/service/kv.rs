//! The replicated KV + stream state machine: what SET, GET, DEL, XADD,
//! XRANGE and XLEN act on.
//!
//! Keys live in a hash table with an ordered index beside it (`map.rs`):
//! lookups touch the table only, and a snapshot build walks the index, so
//! it can resume at "the key after the last one written" in O(log n), and
//! every replica produces the same snapshot bytes for the same state. A
//! key holds a string or a stream, as in Redis (a command of the other
//! kind answers `-WRONGTYPE`; SET replaces either).
//!
//! Bounds (a [`KvConfig`] field each, identical on every replica since they
//! decide replies): keys (`keys_max`), stream entries in total
//! (`stream_entries_max`), and bytes of one key plus its value or one
//! stream entry (`item_bytes_max`, which also sizes the snapshot install
//! buffer). A write past a bound is refused with `-OOM ...`.
//!
//! Snapshots (format, build, install) are in `snapshot.rs`.
use super::map::KeyRef;
use super::payload::{self, Fields, Read, Write};
use super::resp::RespSink;
use super::snapshot::{BuildCursor, Install, Preimages};
use super::stream::{Stream, XaddRefused};
use ringraft_engine::shard::{
    ApplyError, Entry, ResponseSlots, ResponseTooLarge, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
use ringraft_wal::IoId;

/// The longest reply `apply` writes (an XADD id bulk, or the longest error).
pub const RESPONSE_BYTES_MAX: usize = 128;

/// Reply texts shared with the command layer.
pub(crate) const WRONGTYPE: &[u8] =
    b"WRONGTYPE Operation against a key holding the wrong kind of value";

/// Bounds of the state; must be equal on every replica of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvConfig {
    /// Keys (strings and streams).
    pub keys_max: usize,
    /// Stream entries over all streams.
    pub stream_entries_max: usize,
    /// Bytes of a key plus its value, or of one stream entry's fields.
    pub item_bytes_max: usize,
    /// Bytes of values kept aside for a snapshot build while apply goes on
    /// (copy-on-write, see `snapshot.rs`); past it apply waits for the
    /// build to end. Local: replicas may differ, it decides no reply.
    pub build_preimage_bytes_max: usize,
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            keys_max: 10_000_000,
            stream_entries_max: 10_000_000,
            item_bytes_max: 1024 * 1024 + 1024,
            build_preimage_bytes_max: 64 << 20,
        }
    }
}

/// The state: every key and what it holds.
pub(super) type Map = super::map::Map<Value>;

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    String(Vec<u8>),
    Stream(Stream),
}

/// The KV + stream state machine.
#[derive(Debug)]
pub struct Kv {
    config: KvConfig,
    map: Map,
    stream_entries: usize,
    applied: IoId,
    build: Option<BuildCursor>,
    /// What the build in progress still needs of keys changed since it began.
    kept: Preimages,
    install: Option<Install>,
}

impl Kv {
    /// An empty state.
    pub fn new(config: KvConfig) -> Kv {
        Kv {
            config,
            map: Map::default(),
            stream_entries: 0,
            applied: IoId::ZERO,
            build: None,
            kept: Preimages::default(),
            install: None,
        }
    }

    /// Before apply changes `key` in place or creates it: a build in
    /// progress keeps what it still needs of it (with no build, nothing is
    /// looked up). A stream that a SET replaces is left to `retire`
    /// (`keep_streams` false), which keeps it whole as it leaves.
    fn preserve(&mut self, key: &[u8], keep_streams: bool) {
        if let Some(build) = self.build.as_ref().filter(|b| b.in_progress()) {
            let current = self.map.get(key);
            if keep_streams || !matches!(current, Some(Value::Stream(_))) {
                build.preserve(&mut self.kept, KeyRef::new(key), current);
            }
        }
    }

    /// A value apply removed from the map: kept if a build still needs it.
    fn retire(&mut self, key: KeyRef<'_>, old: Value) {
        if let Value::Stream(stream) = &old {
            self.stream_entries -= stream.len();
        }
        if let Some(build) = &self.build {
            build.retire(&mut self.kept, key, old);
        }
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.map.len()
    }

    /// Capacity of the buffer holding `key`'s string value (to observe that
    /// an overwrite reuses it).
    pub fn value_capacity(&self, key: &[u8]) -> Option<usize> {
        match self.map.get(key) {
            Some(Value::String(value)) => Some(value.capacity()),
            _ => None,
        }
    }

    /// Applies one decoded write, writing its reply.
    fn apply_write<S: RespSink>(
        &mut self,
        write: Write<'_>,
        reply: &mut S,
    ) -> Result<(), ResponseTooLarge> {
        match write {
            Write::Set { key, value } => self.set(key, value, reply),
            Write::Del { keys } => {
                let mut deleted = 0;
                for key in keys.iter().map(KeyRef::new) {
                    if let Some(old) = self.map.remove(key) {
                        deleted += 1;
                        self.retire(key, old);
                    }
                }
                reply.integer(deleted)
            }
            Write::Xadd { key, id, fields } => self.xadd(key, id, fields, reply),
        }
    }

    fn set<S: RespSink>(
        &mut self,
        key: &[u8],
        value: &[u8],
        reply: &mut S,
    ) -> Result<(), ResponseTooLarge> {
        if key.len() + value.len() > self.config.item_bytes_max {
            return reply.error(b"ERR key and value larger than item_bytes_max");
        }
        self.preserve(key, false);
        match self.map.get_mut(key) {
            Some(Value::String(old)) => {
                // Reuses the buffer: no allocation when the value fits.
                old.clear();
                old.extend_from_slice(value);
            }
            Some(slot @ Value::Stream(_)) => {
                let old = std::mem::replace(slot, Value::String(value.to_vec()));
                self.retire(KeyRef::new(key), old);
            }
            None => {
                if self.map.len() == self.config.keys_max {
                    return reply.error(b"OOM command not allowed: keys_max reached");
                }
                self.map
                    .insert_new(KeyRef::new(key), Value::String(value.to_vec()));
            }
        }
        reply.simple(b"OK")
    }

    fn xadd<S: RespSink>(
        &mut self,
        key: &[u8],
        id: super::stream::XaddId,
        fields: Fields<'_>,
        reply: &mut S,
    ) -> Result<(), ResponseTooLarge> {
        if fields.encoded().len() > self.config.item_bytes_max {
            return reply.error(b"ERR stream entry larger than item_bytes_max");
        }
        if self.stream_entries == self.config.stream_entries_max {
            return reply.error(b"OOM command not allowed: stream_entries_max reached");
        }
        let empty = Stream::default();
        let (stream, new) = match self.map.get(key) {
            Some(Value::Stream(stream)) => (stream, false),
            Some(Value::String(_)) => return reply.error(WRONGTYPE),
            None if self.map.len() == self.config.keys_max => {
                return reply.error(b"OOM command not allowed: keys_max reached");
            }
            None => (&empty, true),
        };
        let id = match stream.resolve(id) {
            Ok(id) => id,
            Err(XaddRefused::Zero) => {
                return reply.error(b"ERR The ID specified in XADD must be greater than 0-0");
            }
            Err(XaddRefused::NotAboveTop) => {
                return reply.error(
                    b"ERR The ID specified in XADD is equal or smaller than the target stream top item",
                );
            }
        };
        self.preserve(key, true);
        if new {
            self.map
                .insert_new(KeyRef::new(key), Value::Stream(Stream::default()));
        }
        let Some(Value::Stream(stream)) = self.map.get_mut(key) else {
            unreachable!("a stream, or made one above");
        };
        stream.insert(id, fields.encoded());
        self.stream_entries += 1;
        let mut text = [0u8; 41];
        reply.bulk(id.format(&mut text))
    }

    fn read<S: RespSink>(&self, read: Read<'_>, reply: &mut S) -> Result<(), ResponseTooLarge> {
        match read {
            Read::Get { key } => match self.map.get(key) {
                None => reply.null_bulk(),
                Some(Value::String(value)) => reply.bulk(value),
                Some(Value::Stream(_)) => reply.error(WRONGTYPE),
            },
            Read::Xlen { key } => match self.map.get(key) {
                None => reply.integer(0),
                Some(Value::Stream(stream)) => reply.integer(stream.len() as i64),
                Some(Value::String(_)) => reply.error(WRONGTYPE),
            },
            Read::Xrange {
                key,
                start,
                end,
                count,
            } => match self.map.get(key) {
                None => reply.array(0),
                Some(Value::String(_)) => reply.error(WRONGTYPE),
                Some(Value::Stream(stream)) => {
                    let limit =
                        count.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
                    let entries = stream.range(start, end).take(limit);
                    reply.array(entries.clone().count())?;
                    for (id, fields) in entries {
                        let fields = Fields::decode(fields).expect("stored fields are valid");
                        let mut text = [0u8; 41];
                        reply.array(2)?;
                        reply.bulk(id.format(&mut text))?;
                        reply.array(fields.pairs() * 2)?;
                        fields.iter().try_for_each(|f| reply.bulk(f))?;
                    }
                    Ok(())
                }
            },
        }
    }
}

impl StateMachine for Kv {
    fn response_bytes_max(&self) -> usize {
        RESPONSE_BYTES_MAX
    }

    fn apply<'a, I>(&mut self, entries: I, responses: &mut ResponseSlots) -> Result<(), ApplyError>
    where
        I: Iterator<Item = Entry<'a>>,
    {
        assert!(
            responses.slot_bytes() >= RESPONSE_BYTES_MAX,
            "response slots smaller than response_bytes_max"
        );
        for entry in entries {
            assert!(entry.id > self.applied, "entries apply in log order");
            let mut reply = responses.writer(entry.id);
            if !entry.payload.is_empty() {
                let write = payload::decode_write(entry.payload)
                    .map_err(|_| ApplyError::Malformed { id: entry.id })?;
                self.apply_write(write, &mut reply)
                    .expect("apply replies fit RESPONSE_BYTES_MAX");
            }
            self.applied = entry.id;
        }
        Ok(())
    }

    fn applied(&self) -> IoId {
        self.applied
    }

    fn query(&self, request: &[u8], reply: &mut ResponseWriter<'_>) -> Result<(), ApplyError> {
        let read = payload::decode_read(request).map_err(|_| ApplyError::MalformedQuery)?;
        self.read(read, reply)
            .map_err(|_| ApplyError::ReplyTooLarge)
    }

    fn snapshot_chunk(
        &mut self,
        offset: u64,
        out: &mut [u8],
    ) -> Result<SnapshotChunk, SnapshotError> {
        if out.is_empty() {
            return Err(SnapshotError::BufferTooSmall { bytes: 0 });
        }
        if offset == 0 {
            self.kept.clear();
            let old = self.build.take();
            self.build = Some(BuildCursor::start(
                self.applied,
                &self.map,
                self.stream_entries,
                old,
            ));
        }
        let Some(cursor) = self.build.as_mut() else {
            return Err(SnapshotError::UnexpectedOffset {
                expected: 0,
                got: offset,
            });
        };
        // Only what is not written yet was kept aside as it changed: going
        // back (a chunk resent) needs an unchanged state.
        let chunk = if offset < cursor.next_offset() && cursor.snapshot() != self.applied {
            Err(SnapshotError::StateChanged {
                snapshot: cursor.snapshot(),
                applied: self.applied,
            })
        } else {
            cursor.fill(&self.map, &self.kept, offset, out)
        };
        match &chunk {
            // Done: nothing more needs keeping aside; the cursor stays for
            // chunks resent while the state has not changed.
            Ok(done) if done.done => {
                cursor.end();
                self.kept.clear();
            }
            Ok(_) => {}
            // Failed: the build is over (a caller starts again at 0), so no
            // later offset can continue a cursor that stopped halfway.
            Err(_) => {
                self.build = None;
                self.kept.clear();
            }
        }
        chunk
    }

    fn applies_during_build(&self) -> bool {
        self.kept.bytes() < self.config.build_preimage_bytes_max
    }

    fn install_chunk(
        &mut self,
        snapshot: IoId,
        offset: u64,
        chunk: &[u8],
        done: bool,
    ) -> Result<(), SnapshotError> {
        if offset == 0 {
            self.install = Some(Install::start(snapshot, self.install.take()));
        }
        let Some(install) = self.install.as_mut() else {
            return Err(SnapshotError::UnexpectedOffset {
                expected: 0,
                got: offset,
            });
        };
        if let Err(error) = install.feed(snapshot, offset, chunk, &self.config) {
            // A failed install must restart from offset 0.
            self.install = None;
            return Err(error);
        }
        if done {
            let install = self.install.take().expect("install in progress");
            let (map, stream_entries, applied) = install.finish(offset + chunk.len() as u64)?;
            self.map = map;
            self.stream_entries = stream_entries;
            self.applied = applied;
            self.build = None;
            self.kept.clear();
        }
        Ok(())
    }
}
