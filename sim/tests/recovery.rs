//! Loss recovery end to end in virtual time: the real QUIC stack, the rtq sessions and a lossy
//! link, with the outcome asserted exactly (the runs are deterministic).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use rtq_sim::run::RunOutcome;
use rtq_sim::scenario::{Scenario, ScenarioFile};

fn scenario(fec: &str, link: &str) -> Scenario {
    let text = format!(
        r#"
        seed = 3
        duration = "20s"
        [source]
        fec = "{fec}"
        [link]
        {link}
        "#
    );
    let f: ScenarioFile = toml::from_str(&text).unwrap();
    f.resolve().unwrap()
}

fn run(s: &Scenario) -> RunOutcome {
    rtq_sim::vtime::run(s, |_| {}, || false).unwrap()
}

const RANDOM_LOSS: &str = r#"delay = "40ms"
        jitter = "10ms"
        loss = "2%""#;

#[test]
fn fec_turns_random_loss_into_frames_played() {
    let off = run(&scenario("off", RANDOM_LOSS)).report;
    let auto = run(&scenario("auto", RANDOM_LOSS)).report;
    let (r_off, r_auto) = (&off.receiver, &auto.receiver);
    // Both saw the same kind of loss before recovery (about 2 %).
    for r in [r_off, r_auto] {
        let l = r.recovery.loss_before_recovery;
        assert!((0.01..0.04).contains(&l), "loss before recovery {l}");
    }
    assert_eq!(r_off.recovery.fec_recovered, 0);
    assert_eq!(off.sender.recovery.parity_sent, 0);
    assert!(r_auto.recovery.fec_recovered > 50, "{:?}", r_auto.recovery);
    // Frames lost after recovery: a fraction of those without it.
    assert!(
        r_auto.frames.lost * 4 < r_off.frames.lost,
        "lost with FEC {} vs without {}",
        r_auto.frames.lost,
        r_off.frames.lost
    );
    // At an overhead within the cap.
    let overhead = auto.sender.recovery.fec_overhead_ratio;
    assert!(overhead > 0.0 && overhead <= 0.5, "overhead {overhead}");
}

#[test]
fn a_clean_link_costs_no_parity() {
    let r = run(&scenario("auto", r#"delay = "20ms""#)).report;
    assert_eq!(r.sender.recovery.parity_sent, 0);
    assert_eq!(r.sender.recovery.fec_overhead_ratio, 0.0);
    assert_eq!(r.receiver.frames.lost, 0);
}
