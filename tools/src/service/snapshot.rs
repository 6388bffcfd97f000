//! Snapshots of the KV + stream state: the byte format, the build cursor
//! that writes it in chunks, and the install that checks and stages it.
//!
//! A sequence of items, integers little-endian; an item may be split across
//! chunks anywhere:
//!
//! ```text
//! header  | 0 u8 | magic "RRKV" | version u8 = 2 | term u64 | index u64 | keys u64 | stream_entries u64 |
//! string  | 1 u8 | key_len u32 | value_len u32 | key | value |
//! stream  | 2 u8 | key_len u32 | last_ms u64 | last_seq u64 | entries u64 | key |
//! entry   | 3 u8 | ms u64 | seq u64 | fields_len u32 | fields |     (belongs to the stream before it)
//! ```
//!
//! The header comes first; keys follow in strictly increasing map order
//! (XXH3-64 hash of the key, then its bytes: `map.rs`); a stream's entries
//! follow it in strictly increasing id order, never above its `last` id.
//! Install checks all of it, and the counts, before the new state replaces
//! the old one. Version 1 (written before keys were ordered by hash) is
//! the same with keys in byte order; it still installs.
//!
//! A build walks the map's ordered index with a cursor (the current key,
//! stream entry and byte within the item), so each chunk costs O(log n) to
//! resume and copies straight from the state. An install stages the new
//! state beside the old one, through a buffer of at most one item.
//!
//! Apply goes on during a build (copy-on-write per key): before apply
//! changes a key the build has not written yet, the key's value as of the
//! snapshot is kept aside ([`Preimages`]) and the build writes that
//! instead; keys already written change freely. The walk merges the map
//! with the kept values in key order:
//!
//! ```text
//!  kept aside         build writes
//!  (none)             the map's value
//!  Absent             nothing (the key was created after the snapshot)
//!  Value(v)           v (the key was replaced or deleted since)
//!  StreamAt{last,n}   the map's stream, entries up to `last` (appended since)
//! ```
//!
//! The kept bytes are bounded (`KvConfig::build_preimage_bytes_max`); past
//! the bound the runtime holds apply back until the build ends
//! (`StateMachine::applies_during_build`).

use super::kv::{KvConfig, Map, Value};
use super::map::{KeyOrder, KeyRef, MapKey, Range, key_hash};
use super::payload::Fields;
use super::stream::{Stream, StreamId};
use ringraft_engine::shard::{SnapshotChunk, SnapshotError};
use ringraft_wal::IoId;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound::{Excluded, Unbounded};

const MAGIC: &[u8; 4] = b"RRKV";
const VERSION: u8 = 2;
/// The version whose keys are in byte order.
const VERSION_BYTE_ORDER: u8 = 1;
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

/// What a key held at the build's snapshot, kept because apply changed it
/// before the build wrote it.
#[derive(Debug)]
pub(super) enum Preimage {
    /// The key did not exist.
    Absent,
    /// Its whole value (replaced or deleted since).
    Value(Value),
    /// A stream still in the map, appended to since: the snapshot holds
    /// its `len` entries up to id `last`.
    StreamAt { last: StreamId, len: usize },
}

/// The build's view of the keys apply changed before the build wrote them.
#[derive(Debug, Default)]
pub(super) struct Preimages {
    keys: BTreeMap<MapKey, Preimage>,
    /// Bytes kept: keys, and the values moved or copied here.
    bytes: usize,
}

/// Bookkeeping bytes counted per kept key besides its bytes.
const PREIMAGE_OVERHEAD_BYTES: usize = 64;

impl Preimages {
    /// Bytes kept aside.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything (a build ended or restarts).
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.bytes = 0;
    }
}

/// Where a snapshot build is. The bytes describe the state as of
/// `snapshot`: the map merged with the kept [`Preimages`] for keys not
/// written yet (keys before the cursor's key are written).
#[derive(Debug)]
pub(super) struct BuildCursor {
    snapshot: IoId,
    /// Keys and stream entries at the snapshot (the header's counts).
    keys: u64,
    stream_entries: u64,
    next_offset: u64,
    item: BuildItem,
    /// Bytes of the current item already written.
    item_offset: usize,
    /// The current key (a reused buffer) and its hash (always the pair).
    key: Vec<u8>,
    key_hash: u64,
    entry: StreamId,
}

/// A snapshot being received.
#[derive(Debug, Default)]
pub(super) struct Install {
    snapshot: IoId,
    next_offset: u64,
    /// The current item's bytes so far (capacity `item_bytes_max` + fixed).
    pending: Vec<u8>,
    map: Map,
    header: Option<(u64, u64)>,
    /// The stream whose entries are arriving, and how many it announced.
    stream: Option<(Box<[u8]>, Stream, u64)>,
    stream_entries: usize,
    /// The header's format version.
    version: u8,
    /// The last key added (its hash, its bytes), which the next must follow.
    last_key: Option<(u64, Vec<u8>)>,
}

impl BuildCursor {
    /// A build of the state as of `snapshot` (`map` and `stream_entries`
    /// now), reusing `old`'s key buffer.
    pub(super) fn start(
        snapshot: IoId,
        map: &Map,
        stream_entries: usize,
        old: Option<BuildCursor>,
    ) -> BuildCursor {
        let mut key = old.map(|cursor| cursor.key).unwrap_or_default();
        key.clear();
        BuildCursor {
            snapshot,
            keys: map.len() as u64,
            stream_entries: stream_entries as u64,
            next_offset: 0,
            item: BuildItem::Header,
            item_offset: 0,
            key,
            key_hash: key_hash(&[]),
            entry: StreamId::ZERO,
        }
    }

    /// The last entry the snapshot covers.
    pub(super) fn snapshot(&self) -> IoId {
        self.snapshot
    }

    /// The offset the next chunk continues from.
    pub(super) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Ends the build here (done, or given up): apply no longer keeps
    /// anything aside for it.
    pub(super) fn end(&mut self) {
        self.item = BuildItem::End;
    }

    /// Started and not ended.
    pub(super) fn in_progress(&self) -> bool {
        self.item != BuildItem::End
    }

    /// Whether the build has written `key` already (then apply may change
    /// it freely); a key it is in the middle of is not written.
    fn written(&self, key: KeyRef<'_>) -> bool {
        match self.item {
            BuildItem::Header => false,
            BuildItem::Key | BuildItem::Entry => key < self.key(),
            BuildItem::End => true,
        }
    }

    /// The current key.
    fn key(&self) -> KeyRef<'_> {
        KeyRef::from_parts(self.key_hash, &self.key)
    }

    /// Called before apply changes `key` in place or creates it (`current`:
    /// its value now): keeps what the build still needs of it.
    pub(super) fn preserve(&self, kept: &mut Preimages, key: KeyRef<'_>, current: Option<&Value>) {
        if self.written(key) || kept.keys.contains_key(key.as_lookup()) {
            return;
        }
        let (preimage, value_bytes) = match current {
            None => (Preimage::Absent, 0),
            Some(Value::String(value)) => {
                (Preimage::Value(Value::String(value.clone())), value.len())
            }
            Some(Value::Stream(stream)) => (
                Preimage::StreamAt {
                    last: stream.last,
                    len: stream.len(),
                },
                0,
            ),
        };
        kept.bytes += key.bytes().len() + value_bytes + PREIMAGE_OVERHEAD_BYTES;
        kept.keys.insert(key.to_stored(), preimage);
    }

    /// Called with a value apply removed from the map (deleted, or a
    /// stream replaced by a string): keeps it if the build still needs it.
    pub(super) fn retire(&self, kept: &mut Preimages, key: KeyRef<'_>, old: Value) {
        if self.written(key) {
            return;
        }
        match kept.keys.get_mut(key.as_lookup()) {
            None => {
                kept.bytes += key.bytes().len() + value_bytes(&old) + PREIMAGE_OVERHEAD_BYTES;
                kept.keys.insert(key.to_stored(), Preimage::Value(old));
            }
            Some(preimage @ Preimage::StreamAt { .. }) => {
                let Preimage::StreamAt { last, len } = *preimage else {
                    unreachable!("matched StreamAt");
                };
                let Value::Stream(mut stream) = old else {
                    unreachable!("a key kept at a stream length held a stream");
                };
                // Entries are only ever appended: the snapshot's are the
                // ones up to `last`.
                if let Some(after) = last.next() {
                    drop(stream.entries.split_off(&after));
                }
                stream.last = last;
                debug_assert_eq!(stream.len(), len);
                let old = Value::Stream(stream);
                kept.bytes += value_bytes(&old);
                *preimage = Preimage::Value(old);
            }
            // Already kept whole (or absent at the snapshot).
            Some(_) => {}
        }
    }

    /// Writes the snapshot's bytes from `offset` into `out` (not empty).
    pub(super) fn fill(
        &mut self,
        map: &Map,
        kept: &Preimages,
        offset: u64,
        out: &mut [u8],
    ) -> Result<SnapshotChunk, SnapshotError> {
        if self.next_offset != offset {
            seek(map, kept, self, offset)?;
        }
        let mut walk = Walk::new(map, kept, self);
        let mut written = 0;
        while written < out.len() && self.item != BuildItem::End {
            let mut fixed = [0u8; FIXED_BYTES_MAX];
            let (fixed_len, a, b) = item_parts(&walk, self, &mut fixed);
            let total = fixed_len + a.len() + b.len();
            let mut at = self.item_offset;
            for part in [&fixed[..fixed_len], a, b] {
                // Copy the part's bytes from `at` (relative to the part).
                if at >= part.len() {
                    at -= part.len();
                    continue;
                }
                let n = (part.len() - at).min(out.len() - written);
                out[written..written + n].copy_from_slice(&part[at..at + n]);
                written += n;
                self.item_offset += n;
                at = 0;
                if written == out.len() {
                    break;
                }
            }
            if self.item_offset == total {
                advance(&mut walk, self);
            }
        }
        walk.store(self);
        self.next_offset += written as u64;
        Ok(SnapshotChunk {
            snapshot: self.snapshot,
            bytes: written,
            done: self.item == BuildItem::End,
        })
    }
}

impl Install {
    /// A fresh install of `snapshot`, reusing `old`'s item buffer.
    pub(super) fn start(snapshot: IoId, old: Option<Install>) -> Install {
        let mut pending = old.map(|install| install.pending).unwrap_or_default();
        pending.clear();
        Install {
            snapshot,
            pending,
            ..Install::default()
        }
    }

    /// Takes the chunk at `offset`, staging every whole item in it.
    pub(super) fn feed(
        &mut self,
        snapshot: IoId,
        offset: u64,
        chunk: &[u8],
        config: &KvConfig,
    ) -> Result<(), SnapshotError> {
        if self.next_offset != offset || self.snapshot != snapshot {
            return Err(SnapshotError::UnexpectedOffset {
                expected: self.next_offset,
                got: offset,
            });
        }
        let mut at = 0;
        while at < chunk.len() {
            // Offset of the current item's first byte, for error reports.
            let item_offset = offset + at as u64 - self.pending.len() as u64;
            let target = match item_len(&self.pending) {
                Needed::Malformed => {
                    return Err(SnapshotError::Malformed {
                        offset: item_offset,
                    });
                }
                Needed::AtLeast(n) => n,
                Needed::Exactly(n) if n > config.item_bytes_max + FIXED_BYTES_MAX => {
                    return Err(SnapshotError::OverBound {
                        offset: item_offset,
                    });
                }
                Needed::Exactly(n) => n,
            };
            let n = (target - self.pending.len()).min(chunk.len() - at);
            self.pending.extend_from_slice(&chunk[at..at + n]);
            at += n;
            if let Needed::Exactly(total) = item_len(&self.pending)
                && total == self.pending.len()
            {
                self.item((config.keys_max, config.stream_entries_max))
                    .map_err(|error| error.at(item_offset))?;
                self.pending.clear();
            }
        }
        self.next_offset += chunk.len() as u64;
        Ok(())
    }

    /// Checks that the snapshot ended at `end` whole and consistent, and
    /// hands over the staged state: (map, stream entries, snapshot id).
    pub(super) fn finish(mut self, end: u64) -> Result<(Map, usize, IoId), SnapshotError> {
        let malformed = SnapshotError::Malformed { offset: end };
        if !self.pending.is_empty() {
            return Err(malformed);
        }
        self.close_stream().map_err(|_| malformed)?;
        let Some((keys, entries)) = self.header else {
            return Err(malformed);
        };
        if keys != self.map.len() as u64 || entries != self.stream_entries as u64 {
            return Err(malformed);
        }
        Ok((self.map, self.stream_entries, self.snapshot))
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
                let version = item[5];
                if &item[1..5] != MAGIC
                    || !(version == VERSION || version == VERSION_BYTE_ORDER)
                    || id != self.snapshot
                {
                    return Err(ItemError::Malformed);
                }
                self.version = version;
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
                if !self.follows_last_key(KeyRef::new(key)) {
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
        let probe = KeyRef::new(key);
        if !self.follows_last_key(probe) {
            return Err(ItemError::Malformed);
        }
        let (hash, last) = self.last_key.get_or_insert_default();
        *hash = probe.hash();
        last.clear();
        last.extend_from_slice(key);
        self.map.insert_new(probe, value);
        Ok(())
    }

    /// Whether `key` comes after the last key added, in the header
    /// version's order (so no key repeats).
    fn follows_last_key(&self, key: KeyRef<'_>) -> bool {
        let Some((hash, last)) = &self.last_key else {
            return true;
        };
        if self.version == VERSION_BYTE_ORDER {
            key.bytes() > &last[..]
        } else {
            key > KeyRef::from_parts(*hash, last)
        }
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

/// A key's value as the build writes it.
#[derive(Debug, Clone, Copy)]
enum View<'m> {
    String(&'m [u8]),
    /// `stream`'s entries up to `last`, `len` of them.
    Stream {
        stream: &'m Stream,
        last: StreamId,
        len: usize,
    },
}

impl<'m> View<'m> {
    /// The view of a key: the map's value unless a kept preimage says
    /// otherwise (None: the key is not in the snapshot).
    fn of(value: Option<&'m Value>, kept: Option<&'m Preimage>) -> Option<View<'m>> {
        let whole = |value: &'m Value| match value {
            Value::String(value) => View::String(value),
            Value::Stream(stream) => View::Stream {
                stream,
                last: stream.last,
                len: stream.len(),
            },
        };
        match (kept, value) {
            (None, value) => value.map(whole),
            (Some(Preimage::Absent), _) => None,
            (Some(Preimage::Value(value)), _) => Some(whole(value)),
            (Some(&Preimage::StreamAt { last, len }), Some(Value::Stream(stream))) => {
                Some(View::Stream { stream, last, len })
            }
            (Some(Preimage::StreamAt { .. }), _) => {
                unreachable!("a stream kept at a length is in the map until retired")
            }
        }
    }

    /// The first entry id after `after` (from the start if None), within
    /// the snapshot's entries.
    fn entry_after(self, after: Option<StreamId>) -> Option<StreamId> {
        let View::Stream { stream, last, .. } = self else {
            return None;
        };
        let next = match after {
            None => stream.entries.keys().next(),
            Some(after) => stream
                .entries
                .range((Excluded(after), Unbounded))
                .next()
                .map(|(id, _)| id),
        };
        next.copied().filter(|id| *id <= last)
    }
}

/// Bytes a value holds (for the preimage bound).
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(value) => value.len(),
        Value::Stream(stream) => stream
            .entries
            .values()
            .map(|fields| fields.len() + 16)
            .sum(),
    }
}

/// The current item as (fixed bytes written into `fixed`, then two
/// borrowed parts).
fn item_parts<'m>(
    walk: &Walk<'m>,
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
            put(&cursor.keys.to_le_bytes());
            put(&cursor.stream_entries.to_le_bytes());
            (len, &[], &[])
        }
        BuildItem::Key => {
            let (key, view) = walk.current.expect("cursor key exists");
            let key = key.bytes();
            match view {
                View::String(value) => {
                    put(&[KIND_STRING]);
                    put(&u32_le(key.len()));
                    put(&u32_le(value.len()));
                    (len, key, value)
                }
                View::Stream { last, len: n, .. } => {
                    put(&[KIND_STREAM]);
                    put(&u32_le(key.len()));
                    put(&last.ms.to_le_bytes());
                    put(&last.seq.to_le_bytes());
                    put(&(n as u64).to_le_bytes());
                    (len, key, &[])
                }
            }
        }
        BuildItem::Entry => {
            let Some((_, View::Stream { stream, .. })) = walk.current else {
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
/// first if `offset` is behind it: the caller checked that nothing was
/// applied since the snapshot), walking items without copying them.
fn seek(
    map: &Map,
    kept: &Preimages,
    cursor: &mut BuildCursor,
    offset: u64,
) -> Result<(), SnapshotError> {
    if offset < cursor.next_offset {
        cursor.next_offset = 0;
        cursor.item = BuildItem::Header;
        cursor.item_offset = 0;
        cursor.key.clear();
        cursor.key_hash = key_hash(&[]);
    }
    let mut walk = Walk::new(map, kept, cursor);
    while cursor.next_offset < offset {
        if cursor.item == BuildItem::End {
            walk.store(cursor);
            return Err(SnapshotError::UnexpectedOffset {
                expected: cursor.next_offset,
                got: offset,
            });
        }
        let mut fixed = [0u8; FIXED_BYTES_MAX];
        let (fixed_len, a, b) = item_parts(&walk, cursor, &mut fixed);
        let left = fixed_len + a.len() + b.len() - cursor.item_offset;
        let step = left.min(usize::try_from(offset - cursor.next_offset).unwrap_or(usize::MAX));
        cursor.item_offset += step;
        cursor.next_offset += step as u64;
        if step == left {
            advance(&mut walk, cursor);
        }
    }
    walk.store(cursor);
    Ok(())
}

type MapRange<'m> = Peekable<Range<'m, Value>>;
type KeptRange<'m> = Peekable<std::collections::btree_map::Range<'m, MapKey, Preimage>>;

/// One `fill` (or `seek`) call's walk over the map and the kept preimages
/// from the cursor's key: one tree descent each per call, then the keys in
/// order, merged, instead of lookups and range searches per item (the
/// cursor's key is stored back at the end, for the next call).
struct Walk<'m> {
    /// The cursor's key and view (None before the first key and at the end).
    current: Option<(KeyRef<'m>, View<'m>)>,
    /// The keys after it, in the map and among the kept ones.
    map: MapRange<'m>,
    kept: KeptRange<'m>,
}

impl<'m> Walk<'m> {
    fn new(map: &'m Map, kept: &'m Preimages, cursor: &BuildCursor) -> Walk<'m> {
        let all = || {
            (
                map.iter().peekable(),
                kept.keys.range::<dyn KeyOrder, _>(..).peekable(),
            )
        };
        match cursor.item {
            BuildItem::Header | BuildItem::End => {
                // Before the first key, or past the last (nothing is read there).
                let (map, kept) = all();
                Walk {
                    current: None,
                    map,
                    kept,
                }
            }
            BuildItem::Key | BuildItem::Entry => {
                let key = cursor.key();
                let in_map = map.get_key_value(key);
                let in_kept = kept.keys.get_key_value(key.as_lookup());
                let stored = in_map
                    .map(|(key, _)| key.probe())
                    .or(in_kept.map(|(key, _)| key.probe()))
                    .expect("the cursor's key is in the map or kept aside");
                let view = View::of(in_map.map(|(_, v)| v), in_kept.map(|(_, p)| p))
                    .expect("the cursor's key is in the snapshot");
                Walk {
                    current: Some((stored, view)),
                    map: map.range_after(Some(key)).peekable(),
                    kept: kept
                        .keys
                        .range::<dyn KeyOrder, _>((Excluded(key.as_lookup()), Unbounded))
                        .peekable(),
                }
            }
        }
    }

    /// The next key of the snapshot after the current one, and its view.
    fn next_key(&mut self) -> Option<(KeyRef<'m>, View<'m>)> {
        loop {
            let (key, value, kept) = match (self.map.peek(), self.kept.peek()) {
                (None, None) => return None,
                (Some(_), None) => {
                    let (key, value) = self.map.next().expect("peeked");
                    (key, Some(value), None)
                }
                (None, Some(_)) => {
                    let (key, kept) = self.kept.next().expect("peeked");
                    (key, None, Some(kept))
                }
                (Some((in_map, _)), Some((in_kept, _))) => match in_map.cmp(in_kept) {
                    std::cmp::Ordering::Less => {
                        let (key, value) = self.map.next().expect("peeked");
                        (key, Some(value), None)
                    }
                    std::cmp::Ordering::Greater => {
                        let (key, kept) = self.kept.next().expect("peeked");
                        (key, None, Some(kept))
                    }
                    std::cmp::Ordering::Equal => {
                        let (key, value) = self.map.next().expect("peeked");
                        let (_, kept) = self.kept.next().expect("peeked");
                        (key, Some(value), Some(kept))
                    }
                },
            };
            // A key created after the snapshot is skipped.
            if let Some(view) = View::of(value, kept) {
                return Some((key.probe(), view));
            }
        }
    }

    /// Leaves the current key in the cursor, where the next call resumes.
    fn store(&self, cursor: &mut BuildCursor) {
        if let Some((key, _)) = self.current
            && cursor.key() != key
        {
            cursor.key.clear();
            cursor.key.extend_from_slice(key.bytes());
            cursor.key_hash = key.hash();
        }
    }
}

/// Moves the cursor to the item after the current one.
fn advance(walk: &mut Walk<'_>, cursor: &mut BuildCursor) {
    cursor.item_offset = 0;
    let next_entry = match cursor.item {
        BuildItem::Header => None,
        BuildItem::Key => walk.current.and_then(|(_, view)| view.entry_after(None)),
        BuildItem::Entry => match walk.current {
            Some((_, view @ View::Stream { .. })) => view.entry_after(Some(cursor.entry)),
            _ => unreachable!("cursor points into a stream"),
        },
        BuildItem::End => unreachable!("no item past the end"),
    };
    if let Some(id) = next_entry {
        cursor.item = BuildItem::Entry;
        cursor.entry = id;
        return;
    }
    walk.current = walk.next_key();
    cursor.item = match walk.current {
        Some(_) => BuildItem::Key,
        None => BuildItem::End,
    };
}
