//! The replicated KV + stream state machine: what SET, GET, DEL, XADD,
//! XRANGE and XLEN act on.
//!
//! Keys are ordered (`BTreeMap`) so that a snapshot build can resume at
//! "the key after the last one written" in O(log n), and so every replica
//! produces the same snapshot bytes for the same state. A key holds a
//! string or a stream, as in Redis (a command of the other kind answers
//! `-WRONGTYPE`; SET replaces either).
//!
//! Bounds (a [`KvConfig`] field each, identical on every replica since they
//! decide replies): keys (`keys_max`), stream entries in total
//! (`stream_entries_max`), and bytes of one key plus its value or one
//! stream entry (`item_bytes_max`, which also sizes the snapshot install
//! buffer). A write past a bound is refused with `-OOM ...`.
//!
//! # Snapshot format
//!
//! A sequence of items, integers little-endian; an item may be split across
//! chunks anywhere:
//!
//! ```text
//! header  | 0 u8 | magic "RRKV" | version u8 = 1 | term u64 | index u64 | keys u64 | stream_entries u64 |
//! string  | 1 u8 | key_len u32 | value_len u32 | key | value |
//! stream  | 2 u8 | key_len u32 | last_ms u64 | last_seq u64 | entries u64 | key |
//! entry   | 3 u8 | ms u64 | seq u64 | fields_len u32 | fields |     (belongs to the stream before it)
//! ```
//!
//! The header comes first; keys follow in strictly increasing order; a
//! stream's entries follow it in strictly increasing id order, never above
//! its `last` id. Install checks all of it, and the counts, before the new
//! state replaces the old one.

use super::payload::{self, Fields, Read, Write};
use super::resp::RespSink;
use super::stream::{Stream, StreamId, XaddRefused};
use ringraft_engine::shard::{
    ApplyError, Entry, ResponseSlots, ResponseTooLarge, ResponseWriter, SnapshotChunk,
    SnapshotError, StateMachine,
};
use ringraft_wal::IoId;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// The longest reply `apply` writes (an XADD id bulk, or the longest error).
pub const RESPONSE_BYTES_MAX: usize = 128;

const MAGIC: &[u8; 4] = b"RRKV";
const VERSION: u8 = 1;
const KIND_HEADER: u8 = 0;
const KIND_STRING: u8 = 1;
const KIND_STREAM: u8 = 2;
const KIND_ENTRY: u8 = 3;
/// Fixed part of each item kind (before its key/value/fields bytes).
const HEADER_FIXED_BYTES: usize = 1 + 4 + 1 + 8 * 4;
const STRING_FIXED_BYTES: usize = 1 + 4 + 4;
const STREAM_FIXED_BYTES: usize = 1 + 4 + 8 * 3;
const ENTRY_FIXED_BYTES: usize = 1 + 8 * 2 + 4;
const FIXED_BYTES_MAX: usize = HEADER_FIXED_BYTES;
const _: () = assert!(
    STRING_FIXED_BYTES <= FIXED_BYTES_MAX
        && STREAM_FIXED_BYTES <= FIXED_BYTES_MAX
        && ENTRY_FIXED_BYTES <= FIXED_BYTES_MAX
);

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
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            keys_max: 10_000_000,
            stream_entries_max: 10_000_000,
            item_bytes_max: 1024 * 1024 + 1024,
        }
    }
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    String(Vec<u8>),
    Stream(Stream),
}

/// Which item a snapshot build is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuildItem {
    Header,
    /// The string or stream header of `BuildCursor::key`.
    Key,
    /// Entry `BuildCursor::entry` of the stream at `BuildCursor::key`.
    Entry,
    End,
}

/// Where a snapshot build is. Invariant: valid only while `applied ==
/// snapshot` (nothing applied since offset 0).
#[derive(Debug)]
struct BuildCursor {
    snapshot: IoId,
    next_offset: u64,
    item: BuildItem,
    /// Bytes of the current item already written.
    item_offset: usize,
    /// The current key (a reused buffer).
    key: Vec<u8>,
    entry: StreamId,
}

/// A snapshot being received.
#[derive(Debug, Default)]
struct Install {
    snapshot: IoId,
    next_offset: u64,
    /// The current item's bytes so far (capacity `item_bytes_max` + fixed).
    pending: Vec<u8>,
    map: BTreeMap<Box<[u8]>, Value>,
    header: Option<(u64, u64)>,
    /// The stream whose entries are arriving, and how many it announced.
    stream: Option<(Box<[u8]>, Stream, u64)>,
    stream_entries: usize,
}

/// The KV + stream state machine.
#[derive(Debug)]
pub struct Kv {
    config: KvConfig,
    map: BTreeMap<Box<[u8]>, Value>,
    stream_entries: usize,
    applied: IoId,
    build: Option<BuildCursor>,
    install: Option<Install>,
}

impl Kv {
    /// An empty state.
    pub fn new(config: KvConfig) -> Kv {
        Kv {
            config,
            map: BTreeMap::new(),
            stream_entries: 0,
            applied: IoId::ZERO,
            build: None,
            install: None,
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
                for key in keys.iter() {
                    if let Some(old) = self.map.remove(key) {
                        deleted += 1;
                        if let Value::Stream(stream) = old {
                            self.stream_entries -= stream.len();
                        }
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
        match self.map.get_mut(key) {
            Some(Value::String(old)) => {
                // Reuses the buffer: no allocation when the value fits.
                old.clear();
                old.extend_from_slice(value);
            }
            Some(slot @ Value::Stream(_)) => {
                let Value::Stream(stream) = std::mem::replace(slot, Value::String(value.to_vec()))
                else {
                    unreachable!("matched a stream");
                };
                self.stream_entries -= stream.len();
            }
            None => {
                if self.map.len() == self.config.keys_max {
                    return reply.error(b"OOM command not allowed: keys_max reached");
                }
                self.map.insert(key.into(), Value::String(value.to_vec()));
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
        let stream = match self.map.get(key) {
            Some(Value::Stream(stream)) => stream,
            Some(Value::String(_)) => return reply.error(WRONGTYPE),
            None if self.map.len() == self.config.keys_max => {
                return reply.error(b"OOM command not allowed: keys_max reached");
            }
            None => &empty,
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
        let value = self
            .map
            .entry(key.into())
            .or_insert_with(|| Value::Stream(Stream::default()));
        let Value::Stream(stream) = value else {
            unreachable!("checked above");
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
            let mut key = self
                .build
                .take()
                .map(|cursor| cursor.key)
                .unwrap_or_default();
            key.clear();
            self.build = Some(BuildCursor {
                snapshot: self.applied,
                next_offset: 0,
                item: BuildItem::Header,
                item_offset: 0,
                key,
                entry: StreamId::ZERO,
            });
        }
        let Some(cursor) = self.build.as_mut() else {
            return Err(SnapshotError::UnexpectedOffset {
                expected: 0,
                got: offset,
            });
        };
        if cursor.snapshot != self.applied {
            return Err(SnapshotError::StateChanged {
                snapshot: cursor.snapshot,
                applied: self.applied,
            });
        }
        if cursor.next_offset != offset {
            seek(&self.map, self.stream_entries, cursor, offset)?;
        }
        let mut written = 0;
        while written < out.len() && cursor.item != BuildItem::End {
            let mut fixed = [0u8; FIXED_BYTES_MAX];
            let (fixed_len, a, b) = item_parts(&self.map, self.stream_entries, cursor, &mut fixed);
            let total = fixed_len + a.len() + b.len();
            let mut at = cursor.item_offset;
            for part in [&fixed[..fixed_len], a, b] {
                // Copy the part's bytes from `at` (relative to the part).
                if at >= part.len() {
                    at -= part.len();
                    continue;
                }
                let n = (part.len() - at).min(out.len() - written);
                out[written..written + n].copy_from_slice(&part[at..at + n]);
                written += n;
                cursor.item_offset += n;
                at = 0;
                if written == out.len() {
                    break;
                }
            }
            if cursor.item_offset == total {
                advance(&self.map, cursor);
            }
        }
        cursor.next_offset += written as u64;
        Ok(SnapshotChunk {
            snapshot: cursor.snapshot,
            bytes: written,
            done: cursor.item == BuildItem::End,
        })
    }

    fn install_chunk(
        &mut self,
        snapshot: IoId,
        offset: u64,
        chunk: &[u8],
        done: bool,
    ) -> Result<(), SnapshotError> {
        if offset == 0 {
            let mut pending = self
                .install
                .take()
                .map(|install| install.pending)
                .unwrap_or_default();
            pending.clear();
            self.install = Some(Install {
                snapshot,
                pending,
                ..Install::default()
            });
        }
        let result = self.install_bytes(snapshot, offset, chunk);
        let result = result.and_then(|()| {
            if done {
                self.finish_install(offset + chunk.len() as u64)
            } else {
                Ok(())
            }
        });
        if result.is_err() {
            // A failed install must restart from offset 0.
            self.install = None;
        }
        result
    }
}

impl Kv {
    fn install_bytes(
        &mut self,
        snapshot: IoId,
        offset: u64,
        chunk: &[u8],
    ) -> Result<(), SnapshotError> {
        let item_bytes_max = self.config.item_bytes_max;
        let (keys_max, entries_max) = (self.config.keys_max, self.config.stream_entries_max);
        let Some(install) = self.install.as_mut() else {
            return Err(SnapshotError::UnexpectedOffset {
                expected: 0,
                got: offset,
            });
        };
        if install.next_offset != offset || install.snapshot != snapshot {
            return Err(SnapshotError::UnexpectedOffset {
                expected: install.next_offset,
                got: offset,
            });
        }
        let mut at = 0;
        while at < chunk.len() {
            // Offset of the current item's first byte, for error reports.
            let item_offset = offset + at as u64 - install.pending.len() as u64;
            let target = match item_len(&install.pending) {
                Needed::Malformed => {
                    return Err(SnapshotError::Malformed {
                        offset: item_offset,
                    });
                }
                Needed::AtLeast(n) => n,
                Needed::Exactly(n) if n > item_bytes_max + FIXED_BYTES_MAX => {
                    return Err(SnapshotError::OverBound {
                        offset: item_offset,
                    });
                }
                Needed::Exactly(n) => n,
            };
            let n = (target - install.pending.len()).min(chunk.len() - at);
            install.pending.extend_from_slice(&chunk[at..at + n]);
            at += n;
            if let Needed::Exactly(total) = item_len(&install.pending)
                && total == install.pending.len()
            {
                let bounds = (keys_max, entries_max);
                install
                    .item(bounds)
                    .map_err(|error| error.at(item_offset))?;
                install.pending.clear();
            }
        }
        install.next_offset += chunk.len() as u64;
        Ok(())
    }

    fn finish_install(&mut self, end: u64) -> Result<(), SnapshotError> {
        let mut install = self.install.take().expect("install in progress");
        let malformed = SnapshotError::Malformed { offset: end };
        if !install.pending.is_empty() {
            return Err(malformed);
        }
        install.close_stream().map_err(|_| malformed)?;
        let Some((keys, entries)) = install.header else {
            return Err(malformed);
        };
        if keys != install.map.len() as u64 || entries != install.stream_entries as u64 {
            return Err(malformed);
        }
        self.map = install.map;
        self.stream_entries = install.stream_entries;
        self.applied = install.snapshot;
        self.build = None;
        Ok(())
    }
}

/// An item that breaks the format (`Malformed`) or a bound (`OverBound`),
/// before its offset is known.
enum ItemError {
    Malformed,
    OverBound,
}

impl ItemError {
    fn at(self, offset: u64) -> SnapshotError {
        match self {
            ItemError::Malformed => SnapshotError::Malformed { offset },
            ItemError::OverBound => SnapshotError::OverBound { offset },
        }
    }
}

impl Install {
    /// Adds the whole item in `pending` to the staged state.
    fn item(&mut self, (keys_max, entries_max): (usize, usize)) -> Result<(), ItemError> {
        let item = std::mem::take(&mut self.pending);
        let result = self.item_of(&item, keys_max, entries_max);
        self.pending = item;
        result
    }

    fn item_of(
        &mut self,
        item: &[u8],
        keys_max: usize,
        entries_max: usize,
    ) -> Result<(), ItemError> {
        let u32_at =
            |at: usize| u32::from_le_bytes(item[at..at + 4].try_into().expect("4")) as usize;
        let u64_at = |at: usize| u64::from_le_bytes(item[at..at + 8].try_into().expect("8"));
        match (item[0], self.header) {
            (KIND_HEADER, None) => {
                let id = IoId::new(u64_at(6), u64_at(14));
                if &item[1..5] != MAGIC || item[5] != VERSION || id != self.snapshot {
                    return Err(ItemError::Malformed);
                }
                self.header = Some((u64_at(22), u64_at(30)));
            }
            (KIND_STRING, Some(_)) => {
                self.close_stream()?;
                let key_len = u32_at(1);
                let key = &item[STRING_FIXED_BYTES..STRING_FIXED_BYTES + key_len];
                let value = &item[STRING_FIXED_BYTES + key_len..];
                self.add_key(key, Value::String(value.to_vec()), keys_max)?;
            }
            (KIND_STREAM, Some(_)) => {
                self.close_stream()?;
                let key = &item[STREAM_FIXED_BYTES..];
                if self.map.len() == keys_max {
                    return Err(ItemError::OverBound);
                }
                if self
                    .map
                    .last_key_value()
                    .is_some_and(|(last, _)| **last >= *key)
                {
                    return Err(ItemError::Malformed);
                }
                let stream = Stream {
                    entries: BTreeMap::new(),
                    last: StreamId {
                        ms: u64_at(5),
                        seq: u64_at(13),
                    },
                };
                self.stream = Some((key.into(), stream, u64_at(21)));
            }
            (KIND_ENTRY, Some(_)) => {
                let Some((_, stream, _)) = self.stream.as_mut() else {
                    return Err(ItemError::Malformed);
                };
                let id = StreamId {
                    ms: u64_at(1),
                    seq: u64_at(9),
                };
                let fields = &item[ENTRY_FIXED_BYTES..];
                let above_previous = stream
                    .entries
                    .last_key_value()
                    .is_none_or(|(last, _)| *last < id);
                if !above_previous || id > stream.last || Fields::decode(fields).is_err() {
                    return Err(ItemError::Malformed);
                }
                if self.stream_entries == entries_max {
                    return Err(ItemError::OverBound);
                }
                stream.entries.insert(id, fields.into());
                self.stream_entries += 1;
            }
            _ => return Err(ItemError::Malformed),
        }
        Ok(())
    }

    fn add_key(&mut self, key: &[u8], value: Value, keys_max: usize) -> Result<(), ItemError> {
        if self.map.len() == keys_max {
            return Err(ItemError::OverBound);
        }
        if self
            .map
            .last_key_value()
            .is_some_and(|(last, _)| **last >= *key)
        {
            return Err(ItemError::Malformed);
        }
        self.map.insert(key.into(), value);
        Ok(())
    }

    /// Moves the stream being received into the staged map once all its
    /// announced entries arrived.
    fn close_stream(&mut self) -> Result<(), ItemError> {
        let Some((key, stream, announced)) = self.stream.take() else {
            return Ok(());
        };
        if stream.len() as u64 != announced {
            return Err(ItemError::Malformed);
        }
        self.add_key(&key, Value::Stream(stream), usize::MAX)
    }
}

/// How long the item starting `prefix` is.
enum Needed {
    /// Need this many bytes to know.
    AtLeast(usize),
    Exactly(usize),
    Malformed,
}

fn item_len(prefix: &[u8]) -> Needed {
    let Some(&kind) = prefix.first() else {
        return Needed::AtLeast(1);
    };
    let fixed = match kind {
        KIND_HEADER => HEADER_FIXED_BYTES,
        KIND_STRING => STRING_FIXED_BYTES,
        KIND_STREAM => STREAM_FIXED_BYTES,
        KIND_ENTRY => ENTRY_FIXED_BYTES,
        _ => return Needed::Malformed,
    };
    if prefix.len() < fixed {
        return Needed::AtLeast(fixed);
    }
    let u32_at = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().expect("4")) as usize;
    Needed::Exactly(match kind {
        KIND_HEADER => fixed,
        KIND_STRING => fixed + u32_at(1) + u32_at(5),
        KIND_STREAM => fixed + u32_at(1),
        _ => fixed + u32_at(17),
    })
}

/// The current item as (fixed bytes written into `fixed`, then two
/// borrowed parts).
fn item_parts<'m>(
    map: &'m BTreeMap<Box<[u8]>, Value>,
    stream_entries: usize,
    cursor: &BuildCursor,
    fixed: &mut [u8; FIXED_BYTES_MAX],
) -> (usize, &'m [u8], &'m [u8]) {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        fixed[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    let u32_le = |n: usize| {
        u32::try_from(n)
            .expect("bounded by item_bytes_max")
            .to_le_bytes()
    };
    match cursor.item {
        BuildItem::Header => {
            put(&[KIND_HEADER]);
            put(MAGIC);
            put(&[VERSION]);
            put(&cursor.snapshot.term.to_le_bytes());
            put(&cursor.snapshot.index.to_le_bytes());
            put(&(map.len() as u64).to_le_bytes());
            put(&(stream_entries as u64).to_le_bytes());
            (len, &[], &[])
        }
        BuildItem::Key => {
            let (key, value) = map
                .get_key_value(&cursor.key[..])
                .expect("cursor key exists");
            match value {
                Value::String(value) => {
                    put(&[KIND_STRING]);
                    put(&u32_le(key.len()));
                    put(&u32_le(value.len()));
                    (len, key, value)
                }
                Value::Stream(stream) => {
                    put(&[KIND_STREAM]);
                    put(&u32_le(key.len()));
                    put(&stream.last.ms.to_le_bytes());
                    put(&stream.last.seq.to_le_bytes());
                    put(&(stream.len() as u64).to_le_bytes());
                    (len, key, &[])
                }
            }
        }
        BuildItem::Entry => {
            let Some(Value::Stream(stream)) = map.get(&cursor.key[..]) else {
                unreachable!("cursor points into a stream");
            };
            let fields = stream
                .entries
                .get(&cursor.entry)
                .expect("cursor entry exists");
            put(&[KIND_ENTRY]);
            put(&cursor.entry.ms.to_le_bytes());
            put(&cursor.entry.seq.to_le_bytes());
            put(&u32_le(fields.len()));
            (len, fields, &[])
        }
        BuildItem::End => unreachable!("no item past the end"),
    }
}

/// Moves the cursor to byte `offset` of the snapshot (back to the start
/// first if `offset` is behind it), walking items without copying them.
fn seek(
    map: &BTreeMap<Box<[u8]>, Value>,
    stream_entries: usize,
    cursor: &mut BuildCursor,
    offset: u64,
) -> Result<(), SnapshotError> {
    if offset < cursor.next_offset {
        cursor.next_offset = 0;
        cursor.item = BuildItem::Header;
        cursor.item_offset = 0;
        cursor.key.clear();
    }
    while cursor.next_offset < offset {
        if cursor.item == BuildItem::End {
            return Err(SnapshotError::UnexpectedOffset {
                expected: cursor.next_offset,
                got: offset,
            });
        }
        let mut fixed = [0u8; FIXED_BYTES_MAX];
        let (fixed_len, a, b) = item_parts(map, stream_entries, cursor, &mut fixed);
        let left = fixed_len + a.len() + b.len() - cursor.item_offset;
        let step = left.min(usize::try_from(offset - cursor.next_offset).unwrap_or(usize::MAX));
        cursor.item_offset += step;
        cursor.next_offset += step as u64;
        if step == left {
            advance(map, cursor);
        }
    }
    Ok(())
}

/// Moves the cursor to the item after the current one.
fn advance(map: &BTreeMap<Box<[u8]>, Value>, cursor: &mut BuildCursor) {
    cursor.item_offset = 0;
    let next_entry = match cursor.item {
        BuildItem::Header => None,
        BuildItem::Key => match map.get(&cursor.key[..]) {
            Some(Value::Stream(stream)) => stream.entries.keys().next().copied(),
            _ => None,
        },
        BuildItem::Entry => match map.get(&cursor.key[..]) {
            Some(Value::Stream(stream)) => stream
                .entries
                .range((Excluded(cursor.entry), Unbounded))
                .next()
                .map(|(id, _)| *id),
            _ => unreachable!("cursor points into a stream"),
        },
        BuildItem::End => unreachable!("no item past the end"),
    };
    if let Some(id) = next_entry {
        cursor.item = BuildItem::Entry;
        cursor.entry = id;
        return;
    }
    let next_key = if cursor.item == BuildItem::Header {
        map.keys().next()
    } else {
        map.range::<[u8], _>((Excluded(&cursor.key[..]), Unbounded))
            .next()
            .map(|(key, _)| key)
    };
    match next_key {
        Some(key) => {
            cursor.key.clear();
            cursor.key.extend_from_slice(key);
            cursor.item = BuildItem::Key;
        }
        None => cursor.item = BuildItem::End,
    }
}
