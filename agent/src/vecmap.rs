//! [`VecMap`]: the core's ordered map, a sorted `VecDeque` of `(key, value)` pairs.
//!
//! The core's maps are small (open coalescer groups, tracked targets, drop reasons, transmits in
//! flight: at most a few hundred entries) or are worked at their ends (envelopes by sequence
//! number: appended at the back, delivered and evicted from the front). A sorted deque serves
//! both: lookups are binary searches, inserts and removals at either end are O(1), in the middle
//! O(n) moves of small entries. It replaces `std::collections::BTreeMap`, whose node code is
//! monomorphised once per key/value type and made up more than a fifth of the WebAssembly
//! module; this type's code is a few small generic functions. Iteration is in key order, as
//! with `BTreeMap`, so every output order the core documents is unchanged.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::collections::vec_deque;
use std::fmt;

/// An ordered map on a sorted deque (see the [module docs](self)). Keys are unique.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct VecMap<K, V> {
    /// Sorted by key, strictly ascending.
    entries: VecDeque<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { entries: VecDeque::new() }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    /// As `BTreeMap` prints: `{k: v, ...}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> VecMap<K, V> {
    /// An empty map.
    pub(crate) const fn new() -> Self {
        VecMap { entries: VecDeque::new() }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The values in key order.
    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The entry with the smallest key.
    pub(crate) fn first(&self) -> Option<(&K, &V)> {
        self.entries.front().map(|(k, v)| (k, v))
    }

    /// Removes and returns the entry with the smallest key.
    pub(crate) fn pop_first(&mut self) -> Option<(K, V)> {
        self.entries.pop_front()
    }

    /// Keeps only the entries for which `keep` is true (in key order).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// Where the key that `cmp` looks for is (`Ok`), or where it would go (`Err`). `cmp` orders
    /// a stored key against the one looked for, like `Ord::cmp(stored, wanted)`.
    pub(crate) fn search_by(&self, mut cmp: impl FnMut(&K) -> Ordering) -> Result<usize, usize> {
        // Keys mostly arrive in ascending order (sequence numbers, transmit ids): try the back
        // before searching.
        let last = match self.entries.back() {
            None => return Err(0),
            Some((k, _)) => cmp(k),
        };
        let len = self.entries.len();
        match last {
            Ordering::Less => Err(len),
            Ordering::Equal => Ok(len - 1),
            Ordering::Greater => self.entries.binary_search_by(|(k, _)| cmp(k)),
        }
    }

    /// The value at `index` (from [`search_by`](Self::search_by)).
    pub(crate) fn value_at_mut(&mut self, index: usize) -> Option<&mut V> {
        self.entries.get_mut(index).map(|(_, v)| v)
    }

    /// Inserts at `index`, which must be where [`search_by`](Self::search_by) said the key
    /// goes (`Err(index)`), so the order holds.
    pub(crate) fn insert_at(&mut self, index: usize, key: K, value: V) -> &mut V {
        self.entries.insert(index, (key, value));
        &mut self.entries[index].1
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn search(&self, key: &K) -> Result<usize, usize> {
        self.search_by(|k| k.cmp(key))
    }

    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.search(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value for `key`, mutably.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.search(key).ok().and_then(|i| self.value_at_mut(i))
    }

    /// Sets the value for `key`, returning the one it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes the entry for `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.search(key).ok()?;
        self.entries.remove(i).map(|(_, v)| v)
    }

    /// The value for `key`, inserting `make()` first when there is none.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        match self.search(&key) {
            Ok(i) => &mut self.entries[i].1,
            Err(i) => self.insert_at(i, key, make()),
        }
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = vec_deque::IntoIter<(K, V)>;

    /// The entries in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        GetOrInsert(u8, u32),
        PopFirst,
        Retain(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            any::<u8>().prop_map(Op::Remove),
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::GetOrInsert(k, v)),
            Just(Op::PopFirst),
            any::<u8>().prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Every operation gives what `BTreeMap` gives, and the contents stay equal.
        #[test]
        fn behaves_like_btreemap(ops in proptest::collection::vec(op(), 0..200)) {
            let mut ours = VecMap::new();
            let mut theirs = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(ours.insert(k, v), theirs.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(&k), theirs.remove(&k)),
                    Op::GetOrInsert(k, v) => {
                        let a = *ours.get_or_insert_with(k, || v);
                        prop_assert_eq!(a, *theirs.entry(k).or_insert(v));
                    }
                    Op::PopFirst => prop_assert_eq!(ours.pop_first(), theirs.pop_first()),
                    Op::Retain(m) => {
                        let m = m.max(1);
                        ours.retain(|k, _| k % m != 0);
                        theirs.retain(|k, _| k % m != 0);
                    }
                }
                prop_assert_eq!(ours.len(), theirs.len());
                prop_assert!(ours.iter().eq(theirs.iter()));
                prop_assert_eq!(ours.first(), theirs.first_key_value());
                for k in [0u8, 7, 100, 255] {
                    prop_assert_eq!(ours.get(&k), theirs.get(&k));
                }
            }
            prop_assert!(ours.clone().into_iter().eq(theirs.clone()));
            prop_assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        }
    }

    #[test]
    fn search_by_finds_a_composite_key_without_building_one() {
        let mut m = VecMap::new();
        for (a, b) in [("b", 2), ("a", 9), ("b", 1), ("a", 1)] {
            m.insert((a.to_owned(), b), ());
        }
        let keys: Vec<_> = m.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, [("a".into(), 1), ("a".into(), 9), ("b".into(), 1), ("b".into(), 2)]);
        let at = |a: &str, b: u32| m.search_by(|k| k.0.as_str().cmp(a).then(k.1.cmp(&b)));
        assert_eq!(at("a", 9), Ok(1));
        assert_eq!(at("b", 0), Err(2));
        assert_eq!(at("c", 0), Err(4));
        let i = at("a", 5).unwrap_err();
        m.insert_at(i, ("a".into(), 5), ());
        assert_eq!(m.iter().nth(1).map(|(k, _)| k.1), Some(5));
        m.clear();
        assert!(m.is_empty());
    }
}
