//! Snapshots of the KV + stream state: the byte format, the build cursor
//! that writes it in chunks, and the install that checks and stages it.
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
//!
//! A build walks the ordered map with a cursor (the current key, stream
//! entry and byte within the item), so each chunk costs O(log n) to
//! resume and copies straight from the state. An install stages the new
//! state beside the old one, through a buffer of at most one item.

use super::kv::{KvConfig, Map, Value};
use super::payload::Fields;
use super::stream::{Stream, StreamId};
use ringraft_engine::shard::{SnapshotChunk, SnapshotError};
use ringraft_wal::IoId;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

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
pub(super) struct BuildCursor {
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
}

impl BuildCursor {
    /// A build of the state as of `snapshot`, reusing `old`'s key buffer.
    pub(super) fn start(snapshot: IoId, old: Option<BuildCursor>) -> BuildCursor {
        let mut key = old.map(|cursor| cursor.key).unwrap_or_default();
        key.clear();
        BuildCursor {
            snapshot,
            next_offset: 0,
            item: BuildItem::Header,
            item_offset: 0,
            key,
            entry: StreamId::ZERO,
        }
    }

    /// The last entry the snapshot covers.
    pub(super) fn snapshot(&self) -> IoId {
        self.snapshot
    }

    /// Writes the snapshot's bytes from `offset` into `out` (not empty).
    /// The caller checked that the state is still the snapshot's.
    pub(super) fn fill(
        &mut self,
        map: &Map,
        stream_entries: usize,
        offset: u64,
        out: &mut [u8],
    ) -> Result<SnapshotChunk, SnapshotError> {
        if self.next_offset != offset {
            seek(map, stream_entries, self, offset)?;
        }
        let mut walk = Walk::new(map, self);
        let mut written = 0;
        while written < out.len() && self.item != BuildItem::End {
            let mut fixed = [0u8; FIXED_BYTES_MAX];
            let (fixed_len, a, b) = item_parts(&walk, map, stream_entries, self, &mut fixed);
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
    walk: &Walk<'m>,
    map: &'m Map,
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
            let (key, value) = walk.current.expect("cursor key exists");
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
            let Some((_, Value::Stream(stream))) = walk.current else {
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
    map: &Map,
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
    let mut walk = Walk::new(map, cursor);
    while cursor.next_offset < offset {
        if cursor.item == BuildItem::End {
            walk.store(cursor);
            return Err(SnapshotError::UnexpectedOffset {
                expected: cursor.next_offset,
                got: offset,
            });
        }
        let mut fixed = [0u8; FIXED_BYTES_MAX];
        let (fixed_len, a, b) = item_parts(&walk, map, stream_entries, cursor, &mut fixed);
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

/// One `fill` (or `seek`) call's walk over the map from the cursor's key:
/// one tree descent per call, then the keys in order, instead of a lookup
/// and a range search per item (the cursor's key is stored back at the end,
/// for the next call).
struct Walk<'m> {
    /// The cursor's key and value (None before the first key and at the end).
    current: Option<(&'m [u8], &'m Value)>,
    /// The keys after it.
    rest: std::collections::btree_map::Range<'m, Box<[u8]>, Value>,
}

impl<'m> Walk<'m> {
    fn new(map: &'m Map, cursor: &BuildCursor) -> Walk<'m> {
        match cursor.item {
            BuildItem::Header => Walk {
                current: None,
                rest: map.range::<[u8], _>((Unbounded, Unbounded)),
            },
            BuildItem::Key | BuildItem::Entry => Walk {
                current: map
                    .get_key_value(&cursor.key[..])
                    .map(|(key, value)| (&key[..], value)),
                rest: map.range::<[u8], _>((Excluded(&cursor.key[..]), Unbounded)),
            },
            // Nothing follows the end (no item is read there).
            BuildItem::End => Walk {
                current: None,
                rest: map.range::<[u8], _>((Unbounded, Unbounded)),
            },
        }
    }

    /// Leaves the current key in the cursor, where the next call resumes.
    fn store(&self, cursor: &mut BuildCursor) {
        if let Some((key, _)) = self.current
            && cursor.key[..] != *key
        {
            cursor.key.clear();
            cursor.key.extend_from_slice(key);
        }
    }
}

/// Moves the cursor to the item after the current one.
fn advance(walk: &mut Walk<'_>, cursor: &mut BuildCursor) {
    cursor.item_offset = 0;
    let next_entry = match cursor.item {
        BuildItem::Header => None,
        BuildItem::Key => match walk.current {
            Some((_, Value::Stream(stream))) => stream.entries.keys().next().copied(),
            _ => None,
        },
        BuildItem::Entry => match walk.current {
            Some((_, Value::Stream(stream))) => stream
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
    walk.current = walk.rest.next().map(|(key, value)| (&key[..], value));
    cursor.item = match walk.current {
        Some(_) => BuildItem::Key,
        None => BuildItem::End,
    };
}
