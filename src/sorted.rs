//! A sorted multiset with cheap insertion, removal and lookup by rank: the order statistics
//! behind the jitter buffer's sliding-window percentiles.
//!
//! Values are kept sorted in short blocks (at most `2 × BLOCK` each; the concatenation of the
//! blocks is sorted). Inserting or removing a value is a binary search over the blocks' last
//! values, a binary search inside one block and a memory move of at most one block;
//! finding the value of a rank walks the blocks' lengths. For the jitter buffer's 4096 samples
//! that is about 64 blocks of 64 values, where one sorted `Vec` moved 16 KiB on average per
//! insertion and as much per removal (the larger part of a receiver's work per frame at
//! high frame rates).
//!
//! Bounded by its user: it holds what it is given.

/// Values per block after a split; blocks split at twice this and merge with a neighbour below
/// a quarter of it.
const BLOCK: usize = 64;

/// A sorted multiset of `T` kept in blocks. See the module documentation.
#[derive(Debug, Clone)]
pub struct SortedBlocks<T> {
    /// Never holds an empty block.
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for SortedBlocks<T> {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Ord + Copy> SortedBlocks<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Values held (counting repeats).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block that holds `v` if any does, else where `v` belongs: the first block whose last
    /// value is not below `v`, or the last block. `None` when there is no block.
    fn block_for(&self, v: &T) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| b.last().is_some_and(|last| last < v));
        if self.blocks.is_empty() {
            None
        } else {
            Some(i.min(self.blocks.len() - 1))
        }
    }

    /// Adds `v` (a repeat is kept beside its equals).
    pub fn insert(&mut self, v: T) {
        let Some(i) = self.block_for(&v) else {
            let mut b = Vec::with_capacity(2 * BLOCK);
            b.push(v);
            self.blocks.push(b);
            self.len = 1;
            return;
        };
        let b = &mut self.blocks[i];
        let pos = b.partition_point(|x| x < &v);
        b.insert(pos, v);
        self.len += 1;
        if b.len() >= 2 * BLOCK {
            let mut tail = Vec::with_capacity(2 * BLOCK);
            tail.extend_from_slice(&b[BLOCK..]);
            b.truncate(BLOCK);
            self.blocks.insert(i + 1, tail);
        }
    }

    /// Removes one value equal to `v`; whether there was one.
    pub fn remove(&mut self, v: &T) -> bool {
        let Some(i) = self.block_for(v) else {
            return false;
        };
        let b = &mut self.blocks[i];
        let pos = b.partition_point(|x| x < v);
        if b.get(pos) != Some(v) {
            return false;
        }
        b.remove(pos);
        self.len -= 1;
        if b.len() < BLOCK / 4 {
            self.merge_small(i);
        }
        true
    }

    /// Block `i` ran low: drop it if empty, else join it to a neighbour it fits with.
    fn merge_small(&mut self, i: usize) {
        if self.blocks[i].is_empty() {
            self.blocks.remove(i);
            return;
        }
        let fits = |a: &Vec<T>, b: &Vec<T>| a.len() + b.len() < 2 * BLOCK;
        if i + 1 < self.blocks.len() && fits(&self.blocks[i], &self.blocks[i + 1]) {
            let next = self.blocks.remove(i + 1);
            self.blocks[i].extend_from_slice(&next);
        } else if i > 0 && fits(&self.blocks[i - 1], &self.blocks[i]) {
            let this = self.blocks.remove(i);
            self.blocks[i - 1].extend_from_slice(&this);
        }
    }

    /// The value of rank `rank` (0: the least), if there are that many. Walks from the nearer
    /// end: high percentiles cost a block or two.
    pub fn get(&self, rank: usize) -> Option<T> {
        if rank >= self.len {
            return None;
        }
        if rank < self.len / 2 {
            let mut rank = rank;
            for b in &self.blocks {
                if let Some(&v) = b.get(rank) {
                    return Some(v);
                }
                rank -= b.len();
            }
        } else {
            // Counted from the greatest.
            let mut back = self.len - 1 - rank;
            for b in self.blocks.iter().rev() {
                if back < b.len() {
                    return b.get(b.len() - 1 - back).copied();
                }
                back -= b.len();
            }
        }
        None
    }

    /// Every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranks_follow_the_sorted_order_with_repeats() {
        let mut s = SortedBlocks::new();
        assert_eq!((s.len(), s.get(0)), (0, None));
        assert!(!s.remove(&3));
        for v in [5, 3, 9, 3, 1] {
            s.insert(v);
        }
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 3, 3, 5, 9]);
        assert_eq!((s.get(0), s.get(4), s.get(5)), (Some(1), Some(9), None));
        assert!(s.remove(&3));
        assert!(!s.remove(&4));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 3, 5, 9]);
    }

    #[test]
    fn blocks_split_and_merge_as_values_come_and_go() {
        let mut s = SortedBlocks::new();
        for v in 0..10 * BLOCK as i64 {
            s.insert(v);
        }
        assert!(s.blocks.len() >= 5);
        assert!(
            s.blocks
                .iter()
                .all(|b| !b.is_empty() && b.len() < 2 * BLOCK)
        );
        for v in 0..10 * BLOCK as i64 - 1 {
            assert!(s.remove(&v));
        }
        assert_eq!(s.blocks.len(), 1);
        assert_eq!((s.len(), s.get(0)), (1, Some(10 * BLOCK as i64 - 1)));
        assert!(s.remove(&(10 * BLOCK as i64 - 1)));
        assert!(s.is_empty() && s.blocks.is_empty());
    }

    proptest! {
        /// Any mix of insertions and removals leaves the same values, in the same order, as a
        /// sorted `Vec` given the same operations; every rank reads the same.
        #[test]
        fn matches_a_sorted_vec(
            // Two insertions to one removal, so that blocks fill and split too.
            ops in proptest::collection::vec((0u8..3, -300i64..300), 0..2000),
        ) {
            let mut s = SortedBlocks::new();
            let mut v: Vec<i64> = Vec::new();
            for (op, x) in ops {
                if op < 2 {
                    s.insert(x);
                    let p = v.partition_point(|&y| y < x);
                    v.insert(p, x);
                } else {
                    let had = v.binary_search(&x).is_ok();
                    if let Ok(p) = v.binary_search(&x) {
                        v.remove(p);
                    }
                    prop_assert_eq!(s.remove(&x), had);
                }
                prop_assert_eq!(s.len(), v.len());
                prop_assert!(s.blocks.iter().all(|b| !b.is_empty() && b.len() < 2 * BLOCK));
            }
            prop_assert_eq!(s.iter().copied().collect::<Vec<_>>(), v.clone());
            for (r, x) in v.iter().enumerate() {
                prop_assert_eq!(s.get(r), Some(*x));
            }
            prop_assert_eq!(s.get(v.len()), None);
        }
    }
}
