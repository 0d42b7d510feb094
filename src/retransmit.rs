//! The sender's side of retransmission: recently sent frames, kept until they can no longer
//! play, and the answer to the receiver's requests (NACKs).
//!
//! A frame is kept as it was cut (its body, shared with the sender's queue, and its fragment
//! count), not as datagrams: what is asked for again is built anew
//! ([`fragment`]). The datagrams themselves leave memory as soon
//! as QUIC has them, so at high rates the sender reuses a few warm buffers instead of
//! dragging megabytes of sent datagrams through the cache (one-process goodput on loopback,
//! `benches/loopback.rs`: 0.74× → 0.78× bare quinn, two 6-round runs each). The store's bound
//! counts the bytes of the sent datagrams it can rebuild; the bodies they are cut from stay
//! in memory with them (shared with the send queue while a frame waits there).
//!
//! Every request costs bounded work and memory: a NACK has at most 64 entries, each is clipped
//! to the fragments its frame has, a frame is sent again at most [`MAX_RESENDS`] times, and
//! retransmissions draw on a budget that grows by half the bytes of every original datagram —
//! a receiver cannot make the sender send more than 1.5× its stream, nor flood it with work.
//! Refusals are counted by reason.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::packetize::{WireFrame, fragment};
use crate::seqmap::SeqMap;
use crate::stats::report::RefusedRequests;
use crate::wire::control::NackEntry;

/// Times one frame is sent again at most.
pub const MAX_RESENDS: u8 = 3;
/// Datagrams waiting to be sent again at most.
pub const MAX_QUEUED: usize = 1024;
/// Retransmission budget at the start and its ceiling, bytes.
const BUDGET_START: f64 = 64.0 * 1024.0;
const BUDGET_MAX: f64 = 1024.0 * 1024.0;
/// Share of each original datagram's bytes added to the budget.
const BUDGET_SHARE: f64 = 0.5;
/// How long after the first copy of a datagram its second copy goes at most (with two copies):
/// losses come in bursts, and two copies back to back share one. It goes earlier (back to back
/// at the earliest) when it would otherwise arrive after its frame plays.
pub const COPY_SPACING: std::time::Duration = std::time::Duration::from_millis(15);
/// Margin by which a second copy is meant to arrive before its frame plays.
pub const COPY_MARGIN: std::time::Duration = std::time::Duration::from_millis(2);

/// What the store counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetransmitStats {
    /// Request entries received.
    pub requests: u64,
    /// Datagrams sent again.
    pub retransmitted: u64,
    /// Their bytes.
    pub retransmitted_bytes: u64,
    /// Entries (or fragments) refused, by reason.
    pub refused: RefusedRequests,
}

#[derive(Debug)]
struct Kept {
    frame: WireFrame,
    /// Fragments the frame was cut into.
    count: u16,
    /// Fragments that can be sent again: `from..sent` (they go out in order; `from` is 0
    /// unless the store had to forget the frame part-way and took it up again).
    from: u16,
    sent: u16,
    /// When the frame plays at the receiver (as last reported).
    plays: Instant,
    expires: Instant,
    resends: u8,
    /// Bytes of the datagrams sent.
    bytes: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RetransmitStore {
    frames: SeqMap<u64, Kept>,
    bytes: usize,
    max_bytes: usize,
    budget: f64,
    queue: VecDeque<(Bytes, Instant)>,
    /// Second copies, each with when it may go: (datagram, not before, expires).
    later: VecDeque<(Bytes, Instant, Instant)>,
    /// Bytes of `queue` and `later`.
    pending_bytes: usize,
    copies: u8,
    /// One-way delay to the receiver (half its reported round trip).
    one_way: std::time::Duration,
    stats: RetransmitStats,
}

impl RetransmitStore {
    /// A store that can rebuild at most `max_bytes` of sent datagrams.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            frames: SeqMap::new(),
            bytes: 0,
            max_bytes,
            budget: BUDGET_START,
            queue: VecDeque::new(),
            later: VecDeque::new(),
            pending_bytes: 0,
            copies: 1,
            one_way: std::time::Duration::ZERO,
            stats: RetransmitStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RetransmitStats {
        self.stats
    }

    /// Bytes of the sent datagrams it can rebuild.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames kept.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Datagrams waiting to be sent again.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.later.len()
    }

    /// Their bytes (each a copy of its own).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Second copies that are due join the queue's end (so that [`poll_timeout`] only names
    /// the future).
    ///
    /// [`poll_timeout`]: Self::poll_timeout
    pub fn release_due(&mut self, now: Instant) {
        while let Some((_, at, _)) = self.later.front()
            && *at <= now
        {
            if let Some((d, _, expires)) = self.later.pop_front() {
                self.queue.push_back((d, expires));
            }
        }
    }

    /// When the next second copy may go, if one waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.later.front().map(|(_, at, _)| *at)
    }

    /// Fragment `index` of `count` of a frame went out (for the first time), `len` bytes; its
    /// frame (`frame()`, asked for when the store takes the frame up) plays at `plays` (as far as the
    /// sender knows), and it is worth sending again until `expires` (at or after `plays`: the
    /// receiver's playout delay may have grown since it last said).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, each a plain fact of the send"
    )]
    pub fn on_sent(
        &mut self,
        seq: u64,
        index: u16,
        count: u16,
        len: usize,
        frame: impl FnOnce() -> WireFrame,
        plays: Instant,
        expires: Instant,
    ) {
        self.budget = (self.budget + BUDGET_SHARE * len as f64).min(BUDGET_MAX);
        let fresh = |frame: WireFrame| Kept {
            frame,
            count,
            from: index,
            sent: index,
            plays,
            expires,
            resends: 0,
            bytes: 0,
        };
        let kept = self.frames.get_or_insert_with(seq, || fresh(frame()));
        if kept.count != count {
            // Re-cut part-way: the earlier cut's datagrams are not what is on the wire now.
            self.bytes -= kept.bytes;
            let frame = kept.frame.clone();
            *kept = fresh(frame);
        }
        if index >= kept.sent && index < count {
            kept.sent = index + 1;
            kept.bytes += len;
            self.bytes += len;
        }
        while self.bytes > self.max_bytes {
            let Some((_, k)) = self.frames.pop_first() else {
                break;
            };
            self.bytes -= k.bytes;
        }
    }

    /// Forgets frames that can no longer play.
    pub fn prune(&mut self, now: Instant) {
        while let Some((_, k)) = self.frames.first_key_value() {
            if k.expires > now {
                break;
            }
            if let Some((_, k)) = self.frames.pop_first() {
                self.bytes -= k.bytes;
            }
        }
    }

    /// The receiver asks for `entries`; `next_seq` is the next frame number the sender would
    /// give (anything at or above it was never sent).
    ///
    /// A `repeat` (a request the receiver sends again in case the first was lost) is answered
    /// only for frames not sent again yet: the rest were answered when an earlier request came
    /// (counted as `refused.repeated`).
    pub fn on_nack(&mut self, now: Instant, next_seq: u64, entries: &[NackEntry], repeat: bool) {
        self.prune(now);
        // With redundancy, the second copies follow all the first ones, apart in time.
        let mut second = Vec::new();
        // A request counts once per frame, however many runs of it it names.
        let mut counted: Vec<u64> = Vec::new();
        for e in entries {
            self.stats.requests += 1;
            if e.seq >= next_seq {
                self.stats.refused.invalid += 1;
                continue;
            }
            let Some(kept) = self.frames.get_mut(&e.seq) else {
                self.stats.refused.expired += 1;
                continue;
            };
            if kept.expires <= now {
                self.stats.refused.expired += 1;
                continue;
            }
            let count = usize::from(kept.count);
            let (first, n) = if e.count == 0 {
                (0, count)
            } else {
                (usize::from(e.first), usize::from(e.count))
            };
            if first >= count {
                self.stats.refused.invalid += 1;
                continue;
            }
            if !counted.contains(&e.seq) {
                if repeat && kept.resends > 0 {
                    self.stats.refused.repeated += 1;
                    continue;
                }
                if kept.resends >= MAX_RESENDS {
                    self.stats.refused.throttled += 1;
                    continue;
                }
                kept.resends += 1;
                counted.push(e.seq);
            }
            // Only what went out (the rest of the frame is still on its way) and is kept.
            let end = first.saturating_add(n).min(usize::from(kept.sent));
            for index in first.max(usize::from(kept.from))..end {
                // Marked, so that the receiver tells it from the original held up on the path.
                let Some(d) = u16::try_from(index)
                    .ok()
                    .and_then(|i| fragment(&kept.frame, kept.count, i, true))
                else {
                    // A kept cut always has its fragments: not reached.
                    self.stats.refused.invalid += 1;
                    break;
                };
                if self.queue.len() + self.later.len() >= MAX_QUEUED || self.budget < d.len() as f64
                {
                    self.stats.refused.throttled += 1;
                    break;
                }
                self.budget -= d.len() as f64;
                self.pending_bytes += d.len();
                self.queue.push_back((d.clone(), kept.expires));
                if self.copies > 1 {
                    // The second copy goes as far after the first as lets it arrive before
                    // its frame plays, at most the spacing.
                    let latest = kept
                        .plays
                        .checked_sub(self.one_way + COPY_MARGIN)
                        .unwrap_or(now);
                    let at = (now + COPY_SPACING).min(latest).max(now);
                    second.push((d.clone(), at, kept.expires));
                }
            }
        }
        for (d, at, expires) in second {
            if self.pending() >= MAX_QUEUED || self.budget < d.len() as f64 {
                break;
            }
            if at >= expires {
                // Too late to be of use.
                continue;
            }
            self.budget -= d.len() as f64;
            self.pending_bytes += d.len();
            self.later.push_back((d, at, expires));
        }
    }

    /// Sends every requested datagram `copies` times (1 or 2): on a lossy path a lost copy
    /// would cost the frame, since a second request rarely comes in time.
    pub fn set_copies(&mut self, copies: u8) {
        self.copies = copies.clamp(1, 2);
    }

    /// The one-way delay to the receiver, by which a second copy must leave before its frame
    /// plays.
    pub fn set_one_way(&mut self, d: std::time::Duration) {
        self.one_way = d;
    }

    /// The next datagram to send again (of at most `max_size` bytes), with the instant after
    /// which it is useless; those already useless, or larger than the path now carries, are
    /// dropped (counted expired). What it returns counts as retransmitted.
    pub fn poll(&mut self, now: Instant, max_size: usize) -> Option<(Bytes, Instant)> {
        self.release_due(now);
        while let Some((d, expires)) = self.queue.pop_front() {
            self.pending_bytes -= d.len();
            if expires <= now || d.len() > max_size {
                self.stats.refused.expired += 1;
                continue;
            }
            self.stats.retransmitted += 1;
            self.stats.retransmitted_bytes += d.len() as u64;
            return Some((d, expires));
        }
        None
    }

    /// Forgets everything (the session is ending).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.queue.clear();
        self.later.clear();
        self.pending_bytes = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Frame `seq`, cut into `count` fragments of 1000 bytes.
    fn frame(seq: u64, count: u16) -> WireFrame {
        WireFrame {
            seq,
            capture_us: 7 * seq,
            flags: crate::wire::datagram::FrameFlags::default(),
            body: (0..usize::from(count) * 1000)
                .map(|i| (i as u64 ^ seq) as u8)
                .collect::<Vec<_>>()
                .into(),
            payload_len: u32::from(count) * 1000,
        }
    }

    /// The datagrams of frames cut into `count` fragments, as the sender's cut hands them
    /// out: `d(seq, index)` (its marks byte clear, as sent first).
    fn d_of(count: u16) -> impl Fn(u64, u16) -> Bytes {
        move |seq, index| {
            let mut cut = crate::packetize::Fragments::new(
                &frame(seq, count),
                1000 + crate::wire::datagram::HEADER_LEN,
            )
            .unwrap();
            assert_eq!(crate::packetize::Fragments::count(&cut), count);
            cut.nth(usize::from(index)).unwrap()
        }
    }

    fn store_with(frames: u64, count: u16, t0: Instant) -> RetransmitStore {
        let mut s = RetransmitStore::new(1 << 20);
        let d = d_of(count);
        for seq in 0..frames {
            for i in 0..count {
                let at = t0 + Duration::from_millis(200);
                s.on_sent(seq, i, count, d(seq, i).len(), || frame(seq, count), at, at);
            }
        }
        s
    }

    /// What the store sends now: each a marked copy, returned as the datagram it copies.
    fn drain(s: &mut RetransmitStore, now: Instant) -> Vec<Bytes> {
        std::iter::from_fn(|| s.poll(now, 1500).map(|(d, _)| d))
            .map(|copy| {
                assert!(crate::wire::datagram::is_copy(&copy), "sent unmarked");
                let mut v = copy.to_vec();
                v[3] = 0;
                Bytes::from(v)
            })
            .collect()
    }

    #[test]
    fn sends_again_what_is_asked_for_while_it_can_still_play() {
        let d = d_of(4);
        let t0 = crate::test_instant();
        let mut s = store_with(5, 4, t0);
        let now = t0 + Duration::from_millis(50);
        s.on_nack(
            now,
            5,
            &[
                NackEntry {
                    seq: 2,
                    first: 1,
                    count: 2,
                },
                NackEntry {
                    seq: 4,
                    first: 0,
                    count: 0,
                },
            ],
            false,
        );
        assert_eq!(
            drain(&mut s, now),
            vec![d(2, 1), d(2, 2), d(4, 0), d(4, 1), d(4, 2), d(4, 3)]
        );
        // Too late: the frames can no longer play.
        let late = t0 + Duration::from_millis(300);
        s.on_nack(
            late,
            5,
            &[NackEntry {
                seq: 3,
                first: 0,
                count: 1,
            }],
            false,
        );
        assert!(drain(&mut s, late).is_empty());
        assert_eq!(s.stats().refused.expired, 1);
        assert_eq!(s.bytes(), 0, "expired frames are forgotten");
    }

    #[test]
    fn second_copies_go_a_burst_later() {
        let d = d_of(2);
        let t0 = crate::test_instant();
        let mut s = store_with(3, 2, t0);
        s.set_copies(2);
        let now = t0 + Duration::from_millis(10);
        let ask = |seq| NackEntry {
            seq,
            first: 0,
            count: 0,
        };
        s.on_nack(now, 3, &[ask(0), ask(1)], false);
        assert_eq!(
            s.pending_bytes(),
            8 * d(0, 0).len(),
            "first and second copies wait"
        );
        // The first copies at once, the second ones not before COPY_SPACING.
        assert_eq!(drain(&mut s, now), vec![d(0, 0), d(0, 1), d(1, 0), d(1, 1)]);
        assert_eq!(s.pending(), 4);
        assert_eq!(s.poll_timeout(), Some(now + COPY_SPACING));
        assert!(drain(&mut s, now + COPY_SPACING - Duration::from_micros(1)).is_empty());
        s.release_due(now + COPY_SPACING);
        assert_eq!(s.poll_timeout(), None, "released: nothing left to wait for");
        assert_eq!(
            drain(&mut s, now + COPY_SPACING),
            vec![d(0, 0), d(0, 1), d(1, 0), d(1, 1)]
        );
        // A second copy that would arrive after its frame plays goes earlier: as late as
        // still lets it arrive in time (the one-way delay and a margin before), and no
        // earlier than right after the first.
        s.set_one_way(Duration::from_millis(40));
        let plays = t0 + Duration::from_millis(200);
        let late = plays - Duration::from_millis(50);
        s.on_nack(late, 3, &[ask(2)], false);
        assert_eq!(drain(&mut s, late), vec![d(2, 0), d(2, 1)]);
        assert_eq!(s.pending(), 2);
        let second = plays - Duration::from_millis(40) - COPY_MARGIN;
        assert!(second < late + COPY_SPACING);
        assert_eq!(s.poll_timeout(), Some(second));
        assert_eq!(drain(&mut s, second), vec![d(2, 0), d(2, 1)]);
        // Past that, back to back.
        let mut s = store_with(3, 2, t0);
        s.set_copies(2);
        s.set_one_way(Duration::from_millis(40));
        let later = plays - Duration::from_millis(41);
        s.on_nack(later, 3, &[ask(0)], false);
        assert_eq!(drain(&mut s, later).len(), 4);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_repeat_is_answered_only_for_frames_not_sent_again_yet() {
        let d = d_of(2);
        let t0 = crate::test_instant();
        let mut s = store_with(3, 2, t0);
        let ask = |seq: u64, first: u16| NackEntry {
            seq,
            first,
            count: 1,
        };
        // Frame 0's request came; its repeat, with frame 1's (whose first request was lost),
        // brings copies of frame 1 only.
        s.on_nack(t0, 3, &[ask(0, 0)], false);
        assert_eq!(drain(&mut s, t0), vec![d(0, 0)]);
        s.on_nack(t0, 3, &[ask(0, 0), ask(1, 0), ask(1, 1)], true);
        assert_eq!(drain(&mut s, t0), vec![d(1, 0), d(1, 1)]);
        assert_eq!(s.stats().refused.repeated, 1);
        // A request that is not a repeat is answered again (the receiver's retry).
        s.on_nack(t0, 3, &[ask(0, 0)], false);
        assert_eq!(drain(&mut s, t0), vec![d(0, 0)]);
        assert_eq!(s.stats().refused.repeated, 1);
    }

    #[test]
    fn absurd_requests_are_refused_and_counted() {
        let d = d_of(2);
        let t0 = crate::test_instant();
        let mut s = store_with(3, 2, t0);
        s.on_nack(
            t0,
            3,
            &[
                NackEntry {
                    seq: 7,
                    first: 0,
                    count: 1,
                }, // never sent
                NackEntry {
                    seq: u64::MAX,
                    first: 0,
                    count: 0,
                }, // never sent
                NackEntry {
                    seq: 1,
                    first: 9,
                    count: 1,
                }, // no such fragment
                NackEntry {
                    seq: 1,
                    first: 1,
                    count: u16::MAX,
                }, // clipped to the frame
            ],
            false,
        );
        assert_eq!(drain(&mut s, t0), vec![d(1, 1)]);
        let st = s.stats();
        assert_eq!(
            (st.requests, st.refused.invalid, st.retransmitted),
            (4, 3, 1)
        );
    }

    #[test]
    fn only_fragments_already_sent_go_again_and_a_recut_starts_afresh() {
        let t0 = crate::test_instant();
        let at = t0 + Duration::from_millis(200);
        let mut s = RetransmitStore::new(1 << 20);
        let d4 = d_of(4);
        // Two of four fragments out when the whole frame is asked for: those two go again,
        // and nothing is refused (the rest is on its way).
        for i in 0..2 {
            s.on_sent(0, i, 4, d4(0, i).len(), || frame(0, 4), at, at);
        }
        let all = NackEntry {
            seq: 0,
            first: 0,
            count: 0,
        };
        s.on_nack(t0, 1, &[all], false);
        assert_eq!(drain(&mut s, t0), vec![d4(0, 0), d4(0, 1)]);
        assert_eq!(s.stats().refused, RefusedRequests::default());
        assert_eq!(s.bytes(), 2 * d4(0, 0).len());
        assert_eq!(s.pending_bytes(), 0, "all sent");
        // Re-cut into five: only the new cut's datagrams are on the wire.
        let recut = |i| fragment(&frame(0, 4), 5, i, false).unwrap();
        assert_ne!(recut(0).len(), d4(0, 0).len(), "a different geometry");
        s.on_sent(0, 0, 5, recut(0).len(), || unreachable!(), at, at);
        assert_eq!(s.bytes(), recut(0).len());
        s.on_nack(t0, 1, &[all], false);
        assert_eq!(drain(&mut s, t0), vec![recut(0)]);
    }

    #[test]
    fn past_its_bound_the_store_forgets_the_oldest_and_what_went_before_a_take_up() {
        let t0 = crate::test_instant();
        let at = t0 + Duration::from_millis(200);
        let d4 = d_of(4);
        let len = d4(0, 0).len();
        // Room for five datagrams: frame 0's four, then frame 1's first two evict frame 0.
        let mut s = RetransmitStore::new(5 * len);
        for i in 0..4 {
            s.on_sent(0, i, 4, len, || frame(0, 4), at, at);
        }
        for i in 0..2 {
            s.on_sent(1, i, 4, len, || frame(1, 4), at, at);
        }
        assert_eq!((s.frames(), s.bytes()), (1, 2 * len));
        let all = |seq| NackEntry {
            seq,
            first: 0,
            count: 0,
        };
        s.on_nack(t0, 2, &[all(0)], false);
        assert!(drain(&mut s, t0).is_empty());
        assert_eq!(s.stats().refused.expired, 1);
        // A frame larger than the bound is forgotten part-way and taken up again: only its
        // fragments from the take-up on can be sent again.
        let mut s = RetransmitStore::new(2 * len);
        for i in 0..4 {
            s.on_sent(0, i, 4, len, || frame(0, 4), at, at);
        }
        // (Fragment 2 took it past the bound; fragment 3 took it up again.)
        s.on_nack(t0, 1, &[all(0)], false);
        assert_eq!(drain(&mut s, t0), vec![d4(0, 3)]);
    }

    #[test]
    fn floods_are_throttled() {
        let t0 = crate::test_instant();
        let mut s = store_with(50, 10, t0);
        let all: Vec<NackEntry> = (0..50)
            .map(|seq| NackEntry {
                seq,
                first: 0,
                count: 0,
            })
            .collect();
        let mut resent = 0;
        for _ in 0..20 {
            s.on_nack(t0, 50, &all, false);
            resent += drain(&mut s, t0).len();
        }
        let st = s.stats();
        assert_eq!(st.retransmitted, resent as u64);
        assert!(resent > 0);
        // 500 datagrams sent: a budget of 64 kB + half their bytes, and at most 3 resends of
        // a frame.
        let sent = 500.0 * d_of(10)(0, 0).len() as f64;
        let sent_again = st.retransmitted_bytes as f64;
        assert!(sent_again <= 64.0 * 1024.0 + sent / 2.0, "{st:?}");
        assert!(st.refused.throttled > 0);
        assert!(s.pending() <= MAX_QUEUED);
    }

    proptest! {
        #[test]
        fn any_request_costs_bounded_work(entries in proptest::collection::vec((any::<u64>(), any::<u16>(), any::<u16>()), 0..64), repeat in any::<bool>()) {
            let t0 = crate::test_instant();
            let mut s = store_with(20, 8, t0);
            let entries: Vec<NackEntry> = entries.into_iter().map(|(seq, first, count)| NackEntry { seq: seq % 40, first, count }).collect();
            s.on_nack(t0, 20, &entries, repeat);
            prop_assert!(s.pending() <= MAX_QUEUED);
            let resent = drain(&mut s, t0).len() as u64;
            prop_assert_eq!((s.pending(), s.pending_bytes()), (0, 0));
            let st = s.stats();
            prop_assert_eq!(st.retransmitted, resent);
            prop_assert_eq!(st.requests, entries.len() as u64);
            prop_assert!(st.retransmitted <= 20 * 8 * u64::from(MAX_RESENDS));
        }
    }
}
