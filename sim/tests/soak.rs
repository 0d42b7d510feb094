//! Ten simulated minutes of a bad, changing path (the shipped `soak-ge10` scenario: 10 %
//! Gilbert–Elliott loss throughout, the link flipping every minute, two outages, one that
//! outlasts the idle timeout so the sender reconnects): memory stays flat and every frame is
//! accounted for.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use rtq_sim::run::TimelineEntry;
use rtq_sim::scenario::ScenarioFile;

#[test]
fn ten_minutes_of_flipping_bursty_loss_keep_memory_flat_and_every_frame_counted() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/soak-ge10.toml");
    let s = ScenarioFile::load(&path).unwrap().resolve().unwrap();
    assert_eq!(s.duration.as_secs(), 600);
    let o = rtq_sim::vtime::run(&s, |_| {}, || false).unwrap();
    let r = &o.report;
    let t = &r.timeline;
    assert!(t.len() >= 600, "{}", t.len());

    // Memory follows the conditions (a longer delay or an outage holds more for a while) but
    // does not grow: every minute stays under fixed bounds, the last minute (the same link as
    // the first) holds within half again of the first, and the second five minutes no more
    // than half again of the first five.
    let peak = |minutes: std::ops::Range<usize>, f: fn(&TimelineEntry) -> u64| {
        t[minutes.start * 60..minutes.end * 60]
            .iter()
            .map(f)
            .max()
            .unwrap()
    };
    let bytes = |e: &TimelineEntry| e.held_bytes;
    let entries = |e: &TimelineEntry| e.held_entries;
    for m in 0..10 {
        let (b, n) = (peak(m..m + 1, bytes), peak(m..m + 1, entries));
        assert!(b > 0 && n > 0, "minute {m}: memory is sampled");
        assert!(
            b < 1 << 20 && n < 1000,
            "minute {m}: {b} bytes, {n} entries"
        );
    }
    for f in [bytes, entries] {
        let (first, last) = (peak(0..1, f), peak(9..10, f));
        assert!(last * 2 <= first * 3, "last minute {last}, first {first}");
        let (early, late) = (peak(0..5, f), peak(5..10, f));
        assert!(late * 2 <= early * 3, "minutes 5-9: {late}, 0-4: {early}");
    }

    // Accounting. The sender: every frame its source gave was played, late, lost or dropped
    // before sending, across both connections.
    let f = &r.sender.frames;
    assert!(
        r.sender.reconnects >= 1 && r.receiver_sessions >= 2,
        "{}",
        r.sender.reconnects
    );
    assert_eq!(f.sent, 600 * 30);
    assert_eq!(
        f.played + f.late + f.lost + f.dropped_by_sender.total,
        f.sent,
        "{f:?}"
    );
    // The receivers: every frame numbered on their streams was played, late or lost, and the
    // timeline's seconds add up to those totals.
    let g = &r.receiver.frames;
    assert_eq!(g.played + g.late + g.lost, g.transmitted, "{g:?}");
    assert!(g.transmitted <= f.transmitted);
    let sum = |f: fn(&TimelineEntry) -> u64| t.iter().map(f).sum::<u64>();
    assert_eq!(sum(|e| e.sent), f.sent);
    assert_eq!(sum(|e| e.played), g.played);
    assert_eq!(sum(|e| e.late), g.late);
    assert_eq!(sum(|e| e.lost), g.lost);
    // And the stream was worth watching: most frames played, in every minute.
    assert!(g.played * 10 >= f.sent * 9, "{g:?}");
    for m in 0..10 {
        let played: u64 = t[m * 60..(m + 1) * 60].iter().map(|e| e.played).sum();
        assert!(played >= 1000, "minute {m}: {played} played");
    }
}
