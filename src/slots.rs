//! A fixed number of optional slots, one per fragment of a frame, with the common case of a
//! frame in one fragment held inline.
//!
//! The sender's retransmission store and the receiver's FEC decoder keep each frame's datagrams
//! by fragment index. A `Vec<Option<Bytes>>` costs an allocation and a free per frame; small
//! frames (one datagram each, the case that runs at hundreds of thousands of frames a second)
//! need none here. The slots read and write as a slice (`Deref<Target = [Option<T>]>`), so
//! callers index, iterate and take lengths as before.
//!
//! Bounded by its user: it holds the number of slots it is made with.

use std::ops::{Deref, DerefMut};

/// `count` optional slots: one inline, more on the heap. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slots<T> {
    /// Exactly one slot, inline.
    One(Option<T>),
    /// Any other number of slots (zero or two and more).
    Many(Box<[Option<T>]>),
}

impl<T> Slots<T> {
    /// `count` empty slots.
    pub fn new(count: usize) -> Self {
        if count == 1 {
            Self::One(None)
        } else {
            Self::Many(std::iter::repeat_with(|| None).take(count).collect())
        }
    }
}

impl<T> Deref for Slots<T> {
    type Target = [Option<T>];

    fn deref(&self) -> &[Option<T>] {
        match self {
            Self::One(slot) => std::slice::from_ref(slot),
            Self::Many(slots) => slots,
        }
    }
}

impl<T> DerefMut for Slots<T> {
    fn deref_mut(&mut self) -> &mut [Option<T>] {
        match self {
            Self::One(slot) => std::slice::from_mut(slot),
            Self::Many(slots) => slots,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_slot_is_inline_and_reads_as_a_slice() {
        let mut s = Slots::new(1);
        assert!(matches!(s, Slots::One(None)));
        assert_eq!(s.len(), 1);
        s[0] = Some(7);
        assert_eq!(s.first(), Some(&Some(7)));
        assert!(s.get_mut(1).is_none());
        assert_eq!(Slots::<u8>::new(0).len(), 0);
    }

    proptest! {
        /// Whatever the count, the slots answer as a `Vec<Option<T>>` given the same writes.
        #[test]
        fn answers_as_a_vec(
            count in 0usize..6,
            writes in proptest::collection::vec((0usize..8, any::<u32>()), 0..20),
        ) {
            let mut s = Slots::new(count);
            let mut v: Vec<Option<u32>> = vec![None; count];
            for (i, x) in writes {
                match (s.get_mut(i), v.get_mut(i)) {
                    (Some(a), Some(b)) => {
                        *a = Some(x);
                        *b = Some(x);
                    }
                    (None, None) => {}
                    _ => prop_assert!(false, "slot {} exists in one only", i),
                }
                prop_assert_eq!(&s[..], &v[..]);
            }
            prop_assert_eq!(s.len(), count);
            prop_assert!(s.iter().flatten().eq(v.iter().flatten()));
        }
    }
}
