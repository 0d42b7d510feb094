//! An ordered map for keys that come mostly in increasing order and leave from the smallest:
//! frame sequence numbers, noted as frames arrive and forgotten as playout passes them.
//!
//! The entries are kept sorted in one `VecDeque`. Adding a key above every other is a push at
//! the back, forgetting the smallest a pop at the front, and a lookup a binary search: no node
//! allocation or rebalancing per frame, as a `BTreeMap` costs. A key out of order is inserted
//! by moving the entries on its shorter side (a few, for a reordered frame).
//!
//! Bounded by its user: it holds what it is given.

use std::collections::VecDeque;

/// A sorted map kept in a `VecDeque`. See the module documentation.
#[derive(Debug, Clone)]
pub struct SeqMap<K, V> {
    items: VecDeque<(K, V)>,
}

impl<K, V> Default for SeqMap<K, V> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
        }
    }
}

impl<K: Ord + Copy, V> SeqMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Where `k` is (`Ok`) or would go (`Err`); the greatest key or one above it (a new
    /// frame), and the smallest (the next to be forgotten), need no search.
    fn find(&self, k: &K) -> Result<usize, usize> {
        let n = self.items.len();
        let (Some((first, _)), Some((last, _))) = (self.items.front(), self.items.back()) else {
            return Err(0);
        };
        if last < k {
            Err(n)
        } else if last == k {
            Ok(n - 1)
        } else if first == k {
            Ok(0)
        } else if k < first {
            Err(0)
        } else {
            self.items.binary_search_by(|(x, _)| x.cmp(k))
        }
    }

    /// Puts `(k, v)` at `i`, where it belongs.
    fn put(&mut self, i: usize, k: K, v: V) {
        if i == self.items.len() {
            self.items.push_back((k, v));
        } else {
            self.items.insert(i, (k, v));
        }
    }

    /// The value of `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        let i = self.find(k).ok()?;
        self.items.get(i).map(|(_, v)| v)
    }

    /// The value of `k`, to change.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = self.find(k).ok()?;
        self.items.get_mut(i).map(|(_, v)| v)
    }

    /// Whether `k` is held.
    pub fn contains_key(&self, k: &K) -> bool {
        self.find(k).is_ok()
    }

    /// Sets the value of `k`; returns the value it replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => self
                .items
                .get_mut(i)
                .map(|slot| std::mem::replace(&mut slot.1, v)),
            Err(i) => {
                self.put(i, k, v);
                None
            }
        }
    }

    /// The value of `k`, inserted with `f` if it is not held.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&k) {
            Ok(i) => i,
            Err(i) if i == self.items.len() => {
                // Above every key (a new frame): a push at the back.
                self.items.push_back((k, f()));
                i
            }
            Err(i) => {
                self.put(i, k, f());
                i
            }
        };
        // `i` is in bounds: found there, or just inserted there.
        &mut self.items[i].1
    }

    /// Removes `k`; returns its value.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.find(k).ok()?;
        // The smallest (a frame forgotten in order) is a plain pop: `VecDeque::remove` would
        // first work out which side to move.
        let entry = if i == 0 {
            self.items.pop_front()
        } else {
            self.items.remove(i)
        };
        entry.map(|(_, v)| v)
    }

    /// The entry of the smallest key.
    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.items.front().map(|(k, v)| (k, v))
    }

    /// The entry of the greatest key.
    pub fn last_key_value(&self) -> Option<(&K, &V)> {
        self.items.back().map(|(k, v)| (k, v))
    }

    /// Removes and returns the entry of the smallest key.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        self.items.pop_front()
    }

    /// The entry of the smallest key not below `k` (as `BTreeMap::range(k..).next()`).
    pub fn first_from(&self, k: &K) -> Option<(&K, &V)> {
        let i = match self.find(k) {
            Ok(i) | Err(i) => i,
        };
        self.items.get(i).map(|(k, v)| (k, v))
    }

    /// The values, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.iter().map(|(_, v)| v)
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        GetOrInsert(u16, u32),
        Remove(u16),
        PopFirst,
        Get(u16),
        FirstFrom(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys mostly rising (as sequence numbers do), some anywhere.
        prop_oneof![
            4 => (0u16..1000, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0u16..1000, any::<u32>()).prop_map(|(k, v)| Op::GetOrInsert(k, v)),
            2 => (0u16..1000).prop_map(Op::Remove),
            2 => Just(Op::PopFirst),
            1 => (0u16..1000).prop_map(Op::Get),
            1 => (0u16..1000).prop_map(Op::FirstFrom),
        ]
    }

    #[test]
    fn keeps_keys_in_order_whatever_the_insertion_order() {
        let mut m = SeqMap::new();
        for k in [5u64, 7, 6, 1, 9] {
            assert_eq!(m.insert(k, k * 10), None);
        }
        assert_eq!(m.insert(6, 61), Some(60));
        assert_eq!(
            m.values().copied().collect::<Vec<_>>(),
            [10, 50, 61, 70, 90]
        );
        assert_eq!(m.first_from(&2), Some((&5, &50)));
        assert_eq!(m.first_from(&10), None);
        assert_eq!(m.last_key_value(), Some((&9, &90)));
        assert_eq!(m.pop_first(), Some((1, 10)));
        assert_eq!(m.remove(&7), Some(70));
        assert_eq!(m.remove(&7), None);
        *m.get_or_insert_with(8, || 0) += 3;
        *m.get_or_insert_with(8, || 100) += 3;
        assert_eq!(m.get(&8), Some(&6));
        assert!(m.contains_key(&9) && !m.contains_key(&1));
        assert_eq!(m.len(), 4);
    }

    proptest! {
        /// Every operation answers as a `BTreeMap`'s does, and the entries stay the same.
        #[test]
        fn answers_as_a_btree_map(
            start in 0u16..500,
            ops in proptest::collection::vec(op(), 0..400),
        ) {
            let mut m = SeqMap::new();
            let mut b = BTreeMap::new();
            // Rising keys first, as frames come.
            for k in start..start + 50 {
                m.insert(k, u32::from(k));
                b.insert(k, u32::from(k));
            }
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(m.insert(k, v), b.insert(k, v)),
                    Op::GetOrInsert(k, v) => {
                        let x = *m.get_or_insert_with(k, || v);
                        prop_assert_eq!(x, *b.entry(k).or_insert(v));
                    }
                    Op::Remove(k) => prop_assert_eq!(m.remove(&k), b.remove(&k)),
                    Op::PopFirst => prop_assert_eq!(m.pop_first(), b.pop_first()),
                    Op::Get(k) => {
                        prop_assert_eq!(m.get(&k), b.get(&k));
                        prop_assert_eq!(m.contains_key(&k), b.contains_key(&k));
                    }
                    Op::FirstFrom(k) => prop_assert_eq!(m.first_from(&k), b.range(k..).next()),
                }
                prop_assert_eq!(m.len(), b.len());
                prop_assert_eq!(m.first_key_value(), b.first_key_value());
                prop_assert_eq!(m.last_key_value(), b.last_key_value());
            }
            prop_assert!(m.values().eq(b.values()));
        }
    }
}
