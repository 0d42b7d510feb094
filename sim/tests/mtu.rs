//! Path MTU under loss, in virtual time: quinn takes runs of lost full-size packets for an MTU
//! black hole and falls back to 1200-byte packets; rtq has it search again after 5 s (quinn's
//! default is 60 s), so a false alarm costs seconds of frames cut in two, not the session.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use rtq_sim::scenario::{Scenario, ScenarioFile};

/// The `peers` bench's traffic (1316-byte frames at 200 per second, one datagram each at the
/// full MTU, two at 1200 bytes) over 40 ms ± 10 ms with 2 % random loss; with this seed quinn
/// sees a black hole some seconds in.
fn scenario() -> Scenario {
    let text = r#"
        seed = 7
        duration = "20s"
        [source]
        source = "fixed"
        fps = 200
        frame_size = 1316
        compress = "off"
        [link]
        delay = "40ms"
        jitter = "10ms"
        jitter_dist = "normal"
        loss = "2%"
        "#;
    let f: ScenarioFile = toml::from_str(text).unwrap();
    f.resolve().unwrap()
}

#[test]
fn after_a_false_black_hole_the_path_mtu_is_found_again_within_seconds() {
    let r = rtq_sim::vtime::run(&scenario(), |_| {}, || false)
        .unwrap()
        .report;
    let quic = &r.sender.quic;
    assert!(quic.black_holes >= 1, "no black hole seen: {quic:?}");
    assert_eq!(quic.mtu, 1452, "the MTU stayed down: {quic:?}");
    // 4000 frames: one fragment each at 1452 bytes, two at 1200. Searching again after quinn's
    // 60 s left the rest of the run at 1200 (7533 fragments); after 5 s, 5150.
    let frames = r.receiver.frames.sent;
    let fragments = r.receiver.reassembly.unwrap().fragments;
    assert!(
        fragments < frames + frames * 2 / 5,
        "{fragments} fragments for {frames} frames: too long at 1200 bytes"
    );
}
