//! A sorted multiset with cheap insertion, removal and lookup by rank: the order statistics
//! behind the jitter buffer's sliding-window percentiles.
//!
//! Distinct values are kept sorted, each with its count, in short blocks (at most
//! `2 × BLOCK` values each; the concatenation of the blocks is sorted, and a value is in one
//! block only); each block knows how many values it holds counting repeats. Inserting or
//! removing a value is a binary search over the blocks' last values and one inside a block;
//! a value already held (or still held after a removal) only changes its count, else a memory
//! move of at most one block follows. Finding the value of a rank walks the blocks' totals,
//! then the counts inside one block. For the jitter buffer's 4096 samples that is at most
//! about 128 blocks of 32 values, where one sorted `Vec` moved 16 KiB on average per insertion
//! and as much per removal (the larger part of a receiver's work per frame at high frame
//! rates). At high frame rates, where the cost matters, transit times in µs repeat a lot
//! (thousands of samples over a few hundred distinct µs), and most insertions and removals
//! are a count's change.
//!
//! Bounded by its user: it holds what it is given.

/// Distinct values per block after a split; blocks split at twice this and merge with a
/// neighbour below a quarter of it.
const BLOCK: usize = 32;

/// One block: distinct values in order with their counts (each at least 1), and the sum of
/// the counts.
#[derive(Debug, Clone)]
struct Block<T> {
    items: Vec<(T, u32)>,
    total: usize,
}

impl<T: Copy> Block<T> {
    fn of(items: &[(T, u32)]) -> Self {
        let mut v = Vec::with_capacity(2 * BLOCK);
        v.extend_from_slice(items);
        Self {
            total: items.iter().map(|&(_, c)| c as usize).sum(),
            items: v,
        }
    }

    fn last(&self) -> Option<&T> {
        self.items.last().map(|(v, _)| v)
    }
}

/// A sorted multiset of `T` kept in blocks. See the module documentation.
#[derive(Debug, Clone)]
pub struct SortedBlocks<T> {
    /// Never holds an empty block.
    blocks: Vec<Block<T>>,
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

    /// Adds `v` (a repeat counts beside its equals).
    pub fn insert(&mut self, v: T) {
        self.len += 1;
        let Some(i) = self.block_for(&v) else {
            self.blocks.push(Block::of(&[(v, 1)]));
            return;
        };
        let b = &mut self.blocks[i];
        b.total += 1;
        let pos = b.items.partition_point(|(x, _)| x < &v);
        if let Some((x, c)) = b.items.get_mut(pos)
            && *x == v
            && *c < u32::MAX
        {
            *c += 1;
            return;
        }
        // New, or a count at its limit: a repeat may then sit beside its equals as a second
        // entry (never in practice; kept correct all the same).
        b.items.insert(pos, (v, 1));
        if b.items.len() >= 2 * BLOCK {
            let tail = Block::of(&b.items[BLOCK..]);
            b.items.truncate(BLOCK);
            b.total -= tail.total;
            self.blocks.insert(i + 1, tail);
        }
    }

    /// Removes one value equal to `v`; whether there was one.
    pub fn remove(&mut self, v: &T) -> bool {
        let Some(i) = self.block_for(v) else {
            return false;
        };
        let b = &mut self.blocks[i];
        let pos = b.items.partition_point(|(x, _)| x < v);
        let Some((x, c)) = b.items.get_mut(pos) else {
            return false;
        };
        if x != v {
            return false;
        }
        self.len -= 1;
        b.total -= 1;
        *c -= 1;
        if *c == 0 {
            b.items.remove(pos);
            if b.items.len() < BLOCK / 4 {
                self.merge_small(i);
            }
        }
        true
    }

    /// Block `i` ran low: drop it if empty, else join it to a neighbour it fits with.
    fn merge_small(&mut self, i: usize) {
        if self.blocks[i].items.is_empty() {
            self.blocks.remove(i);
            return;
        }
        let fits = |a: &Block<T>, b: &Block<T>| a.items.len() + b.items.len() < 2 * BLOCK;
        let (into, from) =
            if i + 1 < self.blocks.len() && fits(&self.blocks[i], &self.blocks[i + 1]) {
                (i, i + 1)
            } else if i > 0 && fits(&self.blocks[i - 1], &self.blocks[i]) {
                (i - 1, i)
            } else {
                return;
            };
        let taken = self.blocks.remove(from);
        let b = &mut self.blocks[into];
        b.items.extend_from_slice(&taken.items);
        b.total += taken.total;
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
                if rank < b.total {
                    for &(v, c) in &b.items {
                        if rank < c as usize {
                            return Some(v);
                        }
                        rank -= c as usize;
                    }
                    return None;
                }
                rank -= b.total;
            }
        } else {
            // Counted from the greatest.
            let mut back = self.len - 1 - rank;
            for b in self.blocks.iter().rev() {
                if back < b.total {
                    for &(v, c) in b.items.iter().rev() {
                        if back < c as usize {
                            return Some(v);
                        }
                        back -= c as usize;
                    }
                    return None;
                }
                back -= b.total;
            }
        }
        None
    }

    /// Every value, in order (repeats included).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.blocks
            .iter()
            .flat_map(|b| &b.items)
            .flat_map(|&(v, c)| std::iter::repeat_n(v, c as usize))
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
        assert_eq!(s.iter().collect::<Vec<_>>(), [1, 3, 3, 5, 9]);
        assert_eq!((s.get(0), s.get(4), s.get(5)), (Some(1), Some(9), None));
        assert!(s.remove(&3));
        assert!(!s.remove(&4));
        assert_eq!(s.iter().collect::<Vec<_>>(), [1, 3, 5, 9]);
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
                .all(|b| !b.items.is_empty() && b.items.len() < 2 * BLOCK)
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
            // Few distinct values (many repeats, counts rising and falling) or many.
            narrow in any::<bool>(),
        ) {
            let mut s = SortedBlocks::new();
            let mut v: Vec<i64> = Vec::new();
            for (op, x) in ops {
                let x = if narrow { x % 8 } else { x };
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
                prop_assert!(s.blocks.iter().all(|b| !b.items.is_empty()
                    && b.items.len() < 2 * BLOCK
                    && b.total == b.items.iter().map(|&(_, c)| c as usize).sum::<usize>()));
            }
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), v.clone());
            for (r, x) in v.iter().enumerate() {
                prop_assert_eq!(s.get(r), Some(*x));
            }
            prop_assert_eq!(s.get(v.len()), None);
        }
    }
}
