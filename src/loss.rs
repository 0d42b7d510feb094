//! Loss before recovery, as the receiver measures it for its reports: of the fragments the
//! sender put on the wire, how many arrived by themselves (not restored by FEC nor
//! retransmitted), and how the missing ones cluster into runs (mean burst length).
//!
//! Fragments are noted as they arrive; a frame is **resolved** once playout has passed it. A
//! frame of which nothing arrived counts as one missing fragment (its size is unknown). The
//! order of fragments on the wire is (frame, index), so a run of missing fragments can span
//! frames.

use crate::seqmap::SeqMap;

/// Frames noted at most before the oldest are resolved by force.
pub const MAX_FRAMES: usize = 4096;

/// Bitmap words (64 fragments each) held at most, so that frames declaring huge fragment
/// counts cannot make the meter large: 64 KiB words, 512 KiB.
pub const MAX_WORDS: usize = 64 * 1024;

/// Loss before recovery above this, over a report interval, is an outage or a collapsed path:
/// neither parity nor a lower rate repairs it.
pub const OUTAGE_LOSS: f64 = 0.3;

/// Frame numbers resolved at most in one call; a larger jump skips the rest uncounted (a
/// sender does not skip thousands of frames, and a forged number must not cost a long loop).
const MAX_RESOLVE: u64 = 4096;

/// Cumulative counts, as carried in receiver reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossCounts {
    /// Fragments of resolved frames.
    pub expected: u64,
    /// Of those, fragments that did not arrive by themselves.
    pub missing: u64,
    /// Runs of consecutive missing fragments.
    pub runs: u64,
}

/// Which fragments of one frame arrived: a bitmap whose first word is held inline, so that a
/// frame of up to 64 fragments (nearly all of them) costs no allocation.
#[derive(Debug)]
struct Arrived {
    count: u16,
    first: u64,
    /// Words for fragments 64 and up.
    rest: Vec<u64>,
}

impl Arrived {
    fn new(count: u16) -> Self {
        Self {
            count,
            first: 0,
            rest: vec![0; Self::words_for(count) - 1],
        }
    }

    /// Bitmap words for `count` fragments (at least one).
    fn words_for(count: u16) -> usize {
        usize::from(count).div_ceil(64).max(1)
    }

    fn words(&self) -> usize {
        1 + self.rest.len()
    }

    fn set(&mut self, index: u16) {
        let bit = 1 << (index % 64);
        match usize::from(index) / 64 {
            0 => self.first |= bit,
            w => {
                if let Some(w) = self.rest.get_mut(w - 1) {
                    *w |= bit;
                }
            }
        }
    }

    fn has(&self, index: u16) -> bool {
        let word = match usize::from(index) / 64 {
            0 => Some(self.first),
            w => self.rest.get(w - 1).copied(),
        };
        word.is_some_and(|w| w & (1 << (index % 64)) != 0)
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LossMeter {
    /// Frame number → which of its fragments arrived.
    frames: SeqMap<u64, Arrived>,
    /// Bitmap words held in `frames`.
    words: usize,
    /// Every frame below this is resolved.
    resolved: u64,
    /// Whether the last resolved fragment was missing (a run continues).
    in_run: bool,
    counts: LossCounts,
}

impl LossMeter {
    /// Counts so far.
    pub fn counts(&self) -> LossCounts {
        self.counts
    }

    /// Fragment `index` of `count` of frame `seq` arrived by itself.
    pub fn on_fragment(&mut self, seq: u64, index: u16, count: u16) {
        if seq < self.resolved || index >= count {
            return;
        }
        let entry = self.frames.get_or_insert_with(seq, || {
            self.words += Arrived::words_for(count);
            Arrived::new(count)
        });
        if entry.count != count {
            // A re-cut: only the newer (finer) cut counts.
            if count < entry.count {
                return;
            }
            self.words = self.words - entry.words() + Arrived::words_for(count);
            *entry = Arrived::new(count);
        }
        entry.set(index);
        while self.frames.len() > MAX_FRAMES || self.words > MAX_WORDS {
            let Some((&oldest, _)) = self.frames.first_key_value() else {
                break;
            };
            self.resolve_through(oldest);
        }
    }

    /// Playout has passed frame `seq`: it and every frame before it are resolved.
    pub fn resolve_through(&mut self, seq: u64) {
        if seq < self.resolved {
            return;
        }
        let end = seq.saturating_add(1);
        let start = self.resolved.max(end.saturating_sub(MAX_RESOLVE));
        for s in start..end {
            match self.frames.remove(&s) {
                Some(arrived) => {
                    self.words -= arrived.words();
                    for i in 0..arrived.count {
                        self.note(arrived.has(i));
                    }
                }
                None => self.note(false),
            }
        }
        // Anything noted below a skipped range goes uncounted.
        while self.frames.first_key_value().is_some_and(|(&s, _)| s < end) {
            if let Some((_, arrived)) = self.frames.pop_first() {
                self.words -= arrived.words();
            }
        }
        self.resolved = end;
    }

    fn note(&mut self, arrived: bool) {
        self.counts.expected += 1;
        if arrived {
            self.in_run = false;
        } else {
            self.counts.missing += 1;
            if !self.in_run {
                self.counts.runs += 1;
            }
            self.in_run = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_missing_fragments_and_their_runs() {
        let mut m = LossMeter::default();
        // Frame 0: 4 fragments, 1 and 2 missing (one run). Frame 1: nothing arrived (one
        // missing, a new run). Frame 2: 2 fragments, first missing: continues frame 1's run.
        for i in [0, 3] {
            m.on_fragment(0, i, 4);
        }
        m.on_fragment(2, 1, 2);
        m.resolve_through(2);
        assert_eq!(
            m.counts(),
            LossCounts {
                expected: 4 + 1 + 2,
                missing: 2 + 1 + 1,
                runs: 2
            }
        );
        // Late arrivals for resolved frames change nothing.
        m.on_fragment(1, 0, 1);
        m.resolve_through(1);
        assert_eq!(m.counts().expected, 7);
    }

    #[test]
    fn frames_of_more_than_64_fragments_are_counted_in_every_word() {
        let mut m = LossMeter::default();
        // 130 fragments (three bitmap words): all but 5, 64, 100 and 129 arrive.
        for i in (0..130).filter(|i| ![5, 64, 100, 129].contains(i)) {
            m.on_fragment(0, i, 130);
        }
        m.resolve_through(0);
        assert_eq!(
            m.counts(),
            LossCounts {
                expected: 130,
                missing: 4,
                runs: 4
            }
        );
    }

    #[test]
    fn frames_declaring_huge_fragment_counts_stay_within_the_word_bound() {
        let mut m = LossMeter::default();
        for seq in 0..1000 {
            m.on_fragment(seq, 0, u16::MAX);
            assert!(m.words <= MAX_WORDS);
        }
        assert!(m.frames.len() < 100, "{} frames held", m.frames.len());
        assert!(
            m.counts().expected > 0,
            "the oldest were resolved, not dropped"
        );
    }

    #[test]
    fn a_huge_jump_costs_a_bounded_loop() {
        let mut m = LossMeter::default();
        m.on_fragment(0, 0, 1);
        m.resolve_through(u64::MAX - 1);
        assert!(m.counts().expected <= MAX_RESOLVE + 1);
        assert!(m.frames.is_empty());
    }

    proptest! {
        #[test]
        fn counts_add_up_and_memory_is_bounded(events in proptest::collection::vec((0u64..300, 0u16..70, 1u16..70, any::<bool>()), 0..2000)) {
            let mut m = LossMeter::default();
            for (seq, index, count, resolve) in events {
                if resolve {
                    m.resolve_through(seq);
                } else {
                    m.on_fragment(seq, index, count);
                }
                let c = m.counts();
                prop_assert!(c.missing <= c.expected);
                prop_assert!(c.runs <= c.missing);
                prop_assert!(m.frames.len() <= MAX_FRAMES + 1);
                prop_assert!(m.words <= MAX_WORDS);
                prop_assert_eq!(m.words, m.frames.values().map(Arrived::words).sum::<usize>());
            }
        }
    }
}
