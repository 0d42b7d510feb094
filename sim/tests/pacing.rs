//! Pacing end to end in virtual time: the QUIC interop runner's standard path (15 ms one way,
//! 10 Mbit/s, a 25-packet drop-tail queue) carrying 2 Mbit/s video with a keyframe every 2 s.
//! Sent back to back, each keyframe overflows the queue and loses its tail; paced at the burst
//! rate the receiver measures, every keyframe after the first measure arrives whole. The runs
//! are deterministic: the outcome is asserted exactly where it is a count.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use rtq_sim::scenario::{Scenario, ScenarioFile};

fn scenario(pacing: &str) -> Scenario {
    let text = format!(
        r#"
        seed = 1
        duration = "30s"
        [source]
        pacing = "{pacing}"
        [link]
        delay = "15ms"
        rate = "10Mbit"
        queue = 25
        "#
    );
    let f: ScenarioFile = toml::from_str(&text).unwrap();
    f.resolve().unwrap()
}

#[test]
fn paced_keyframes_fit_a_shallow_queue_that_drops_them_unpaced() {
    let run = |pacing| {
        rtq_sim::vtime::run(&scenario(pacing), |_| {}, || false)
            .unwrap()
            .report
    };
    let (off, on) = (run("off"), run("on"));
    let sent = on.sender.frames.keyframes;
    assert_eq!(sent, 15, "a keyframe every 60 frames at 30 fps for 30 s");
    // Unpaced, the queue takes every keyframe's tail.
    assert_eq!(
        off.receiver.frames.keyframes, 0,
        "{:?}",
        off.receiver.frames
    );
    assert!(off.link.forward.dropped_by.queue > 200);
    // Paced, all but the first (sent before any measure) are played.
    assert!(
        on.receiver.frames.keyframes >= sent - 1,
        "{:?}",
        on.receiver.frames
    );
    assert!(on.receiver.frames.lost <= 1, "{:?}", on.receiver.frames);
    assert!(
        on.link.forward.dropped_by.queue < off.link.forward.dropped_by.queue / 4,
        "queue drops paced {} unpaced {}",
        on.link.forward.dropped_by.queue,
        off.link.forward.dropped_by.queue
    );
}
