//! The KV's map: a hash table that apply and reads look keys up in, and an
//! ordered index of the same keys that snapshot builds walk.
//!
//! Why two: a snapshot build resumes "after the last key written" and must
//! tell whether apply is about to change a key it has not written yet
//! (copy-on-write, `snapshot.rs`), so it needs a total order of keys that
//! table growth does not reshuffle. An ordered tree alone (the map this
//! replaced) gives that, but a lookup among 100 000 keys then walks about
//! four tree nodes and compares with a dozen keys, each a cache miss, and
//! that was most of the KV's cost under load (see `kv_map` in `benches/`).
//! So lookups and overwrites, the hot path, touch only the hash table; a
//! key's creation and removal also update the index.
//!
//! The index orders keys by a fixed 64-bit hash of their bytes (XXH3-64
//! with its default seed, fixed by its specification), then by the bytes:
//! every replica agrees on it and produces the same snapshot bytes, the
//! walk compares integers held in the tree nodes, and crafted collisions
//! cost a byte comparison, never the tree's O(log n) depth. Key bytes are
//! shared by the table and the index (one allocation per key).
//!
//! The index's lookups borrow its keys as `dyn KeyOrder`, so a probe made
//! of a borrowed slice ([`KeyRef`]) finds a stored [`MapKey`] without
//! allocating.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::btree_set;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

/// The hash the index orders keys by first.
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A key stored in the index (shares its bytes with the table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MapKey {
    // Field order is the order: hash first.
    hash: u64,
    bytes: Arc<[u8]>,
}

/// A key to look up (borrows its bytes; the hash is computed once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRef<'a> {
    // Field order is the order, as in `MapKey`.
    hash: u64,
    bytes: &'a [u8],
}

/// The (hash, bytes) view that [`MapKey`] and [`KeyRef`] share, and that
/// the map's lookups borrow keys as.
pub trait KeyOrder {
    /// [`key_hash`] of the bytes.
    fn hash(&self) -> u64;
    /// The key itself.
    fn bytes(&self) -> &[u8];
}

impl MapKey {
    /// Copies `bytes` into a stored key.
    pub fn new(bytes: &[u8]) -> MapKey {
        KeyRef::new(bytes).to_stored()
    }

    /// The key itself.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// This key as a probe.
    pub fn probe(&self) -> KeyRef<'_> {
        KeyRef {
            hash: self.hash,
            bytes: &self.bytes,
        }
    }
}

impl<'a> KeyRef<'a> {
    /// A probe for `bytes` (hashes them).
    pub fn new(bytes: &'a [u8]) -> KeyRef<'a> {
        KeyRef {
            hash: key_hash(bytes),
            bytes,
        }
    }

    /// A probe whose hash is known (`hash` must be [`key_hash`] of `bytes`).
    pub(super) fn from_parts(hash: u64, bytes: &'a [u8]) -> KeyRef<'a> {
        debug_assert_eq!(hash, key_hash(bytes));
        KeyRef { hash, bytes }
    }

    /// The key itself.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// A stored copy.
    pub fn to_stored(self) -> MapKey {
        MapKey {
            hash: self.hash,
            bytes: self.bytes.into(),
        }
    }

    /// The form index lookups take (`index.get(key.as_lookup())`).
    pub fn as_lookup(&self) -> &(dyn KeyOrder + 'a) {
        self
    }
}

impl KeyOrder for MapKey {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl KeyOrder for KeyRef<'_> {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl Ord for dyn KeyOrder + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.hash(), self.bytes()).cmp(&(other.hash(), other.bytes()))
    }
}

impl PartialOrd for dyn KeyOrder + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn KeyOrder + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.hash() == other.hash() && self.bytes() == other.bytes()
    }
}

impl Eq for dyn KeyOrder + '_ {}

impl<'a> Borrow<dyn KeyOrder + 'a> for MapKey {
    fn borrow(&self) -> &(dyn KeyOrder + 'a) {
        self
    }
}

/// Keys and their values: a hash table for lookups, an ordered index for
/// walks (see the module docs).
#[derive(Debug)]
pub struct Map<V> {
    values: HashMap<Arc<[u8]>, V>,
    index: BTreeSet<MapKey>,
}

impl<V> Default for Map<V> {
    fn default() -> Map<V> {
        Map {
            values: HashMap::new(),
            index: BTreeSet::new(),
        }
    }
}

impl<V> Map<V> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.values.get(key)
    }

    /// The value of `key`, to change in place.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.values.get_mut(key)
    }

    /// Sets `key` to `value`; returns the value it replaces, if any.
    pub fn insert(&mut self, key: KeyRef<'_>, value: V) -> Option<V> {
        if let Some(slot) = self.values.get_mut(key.bytes()) {
            return Some(std::mem::replace(slot, value));
        }
        self.insert_new(key, value);
        None
    }

    /// Adds `key`, which the caller knows is not there (apply just looked
    /// it up), without looking it up again.
    pub fn insert_new(&mut self, key: KeyRef<'_>, value: V) {
        let stored = key.to_stored();
        let replaced = self.values.insert(Arc::clone(&stored.bytes), value);
        debug_assert!(replaced.is_none(), "insert_new of a key already there");
        self.index.insert(stored);
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: KeyRef<'_>) -> Option<V> {
        let value = self.values.remove(key.bytes())?;
        self.index.remove(key.as_lookup());
        Some(value)
    }

    /// The stored key equal to `key`, and its value.
    pub fn get_key_value(&self, key: KeyRef<'_>) -> Option<(&MapKey, &V)> {
        let value = self.values.get(key.bytes())?;
        let stored = self
            .index
            .get(key.as_lookup())
            .expect("indexed keys are the table's");
        Some((stored, value))
    }

    /// The keys after `after` (all keys if None), in index order, with
    /// their values.
    pub fn range_after(&self, after: Option<KeyRef<'_>>) -> Range<'_, V> {
        let keys = match after {
            None => self.index.range::<dyn KeyOrder, _>(..),
            Some(after) => self
                .index
                .range::<dyn KeyOrder, _>((Excluded(after.as_lookup()), Unbounded)),
        };
        Range {
            keys,
            values: &self.values,
        }
    }

    /// Every key in index order, with its value.
    pub fn iter(&self) -> Range<'_, V> {
        self.range_after(None)
    }
}

/// Keys in index order with their values (see [`Map::range_after`]).
#[derive(Debug)]
pub struct Range<'m, V> {
    keys: btree_set::Range<'m, MapKey>,
    values: &'m HashMap<Arc<[u8]>, V>,
}

impl<'m, V> Iterator for Range<'m, V> {
    type Item = (&'m MapKey, &'m V);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.keys.next()?;
        let value = self
            .values
            .get(key.bytes())
            .expect("indexed keys are the table's");
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hash_is_the_specified_xxh3() {
        // XXH3-64 of the empty input with seed 0 (the specification's
        // test vector): replicas of any build agree on the order.
        assert_eq!(key_hash(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn map_key_and_probe_order_alike() {
        let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("key:{i}").into_bytes()).collect();
        let mut stored: Vec<MapKey> = keys.iter().map(|k| MapKey::new(k)).collect();
        stored.sort();
        let mut probes: Vec<KeyRef<'_>> = keys.iter().map(|k| KeyRef::new(k)).collect();
        probes.sort();
        let stored_bytes: Vec<&[u8]> = stored.iter().map(MapKey::bytes).collect();
        let probe_bytes: Vec<&[u8]> = probes.iter().map(KeyRef::bytes).collect();
        assert_eq!(stored_bytes, probe_bytes);
        // Hash order, not byte order.
        assert_ne!(
            stored_bytes,
            keys.iter().map(|k| &k[..]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_borrowed_probe_finds_and_ranges_over_stored_keys() {
        let map: BTreeMap<MapKey, usize> = (0..100)
            .map(|i| (MapKey::new(format!("k{i}").as_bytes()), i))
            .collect();
        assert_eq!(map.get(KeyRef::new(b"k42").as_lookup()), Some(&42));
        assert_eq!(map.get(KeyRef::new(b"k100").as_lookup()), None);
        let middle = map.keys().nth(50).expect("100 keys").clone();
        let from = middle.probe();
        let after: Vec<usize> = map
            .range::<dyn KeyOrder, _>((
                std::ops::Bound::Excluded(from.as_lookup()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, v)| *v)
            .collect();
        let expected: Vec<usize> = map
            .iter()
            .filter(|(k, _)| k.probe() > from)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(after, expected);
        assert_eq!(after.len(), 49);
        assert!(!after.contains(&map[&middle]));
    }

    #[test]
    fn colliding_hashes_order_by_bytes() {
        let a = KeyRef {
            hash: 5,
            bytes: b"b",
        };
        let b = KeyRef {
            hash: 5,
            bytes: b"a",
        };
        let c = KeyRef {
            hash: 4,
            bytes: b"z",
        };
        assert!(b < a && c < b);
        assert_eq!(a.to_stored().cmp(&b.to_stored()), Ordering::Greater);
    }
    #[test]
    fn map_keeps_table_and_index_alike() {
        let mut map: Map<u32> = Map::default();
        for i in 0..300u32 {
            assert_eq!(map.insert(KeyRef::new(format!("k{i}").as_bytes()), i), None);
        }
        assert_eq!(map.insert(KeyRef::new(b"k5"), 1005), Some(5));
        for i in (0..300u32).step_by(3) {
            assert_eq!(
                map.remove(KeyRef::new(format!("k{i}").as_bytes())),
                Some(if i == 5 { 1005 } else { i })
            );
        }
        assert_eq!(map.remove(KeyRef::new(b"k0")), None);
        assert_eq!(map.len(), 200);
        assert_eq!(map.get(b"k5"), Some(&1005));
        assert_eq!(map.get(b"k3"), None);
        *map.get_mut(b"k7").expect("present") += 1000;
        // The walk sees exactly the table's keys, in index order.
        let walked: Vec<(Vec<u8>, u32)> =
            map.iter().map(|(k, v)| (k.bytes().to_vec(), *v)).collect();
        assert_eq!(walked.len(), 200);
        assert!(
            walked
                .windows(2)
                .all(|w| KeyRef::new(&w[0].0) < KeyRef::new(&w[1].0))
        );
        assert!(walked.iter().all(|(k, v)| map.get(k) == Some(v)));
        // Resuming after a key continues the same walk.
        let after = KeyRef::new(&walked[99].0);
        let rest: Vec<&[u8]> = map
            .range_after(Some(after))
            .map(|(k, _)| k.bytes())
            .collect();
        let expected: Vec<&[u8]> = walked[100..].iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(rest, expected);
        let (stored, value) = map.get_key_value(after).expect("present");
        assert_eq!((stored.bytes(), *value), (&walked[99].0[..], walked[99].1));
    }
}
