//! Whole rtq sessions through impaired links in virtual time: exact, repeatable and fast, so
//! their outcomes can be asserted.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use std::cell::Cell;
use std::process::Command;
use std::time::Duration;

use rtq_sim::run::RunOutcome;
use rtq_sim::scenario::{Scenario, ScenarioFile};

fn scenario(toml_text: &str) -> Scenario {
    let f: ScenarioFile = toml::from_str(toml_text).unwrap();
    f.resolve().unwrap()
}

fn run(s: &Scenario) -> RunOutcome {
    rtq_sim::vtime::run(s, |_| {}, || false).unwrap()
}

fn json(o: &RunOutcome) -> String {
    serde_json::to_string_pretty(&o.report).unwrap()
}

const IMPAIRED: &str = r#"
    seed = 7
    duration = "5s"
    [link]
    delay = "20ms"
    jitter = "5ms"
    loss = "2%"
    dup = "1%"
    reorder = "1%"
    corrupt = "0.5%"
    "#;

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let s = scenario(IMPAIRED);
    let a = json(&run(&s));
    let b = json(&run(&s));
    assert_eq!(a, b);
    // And the report is not trivially constant: another seed moves it.
    let mut other = s.clone();
    other.seed = 8;
    assert_ne!(a, json(&run(&other)));
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["clock"], "virtual");
}

#[test]
fn reports_do_not_depend_on_the_working_directory() {
    // The same scenario file, named from two directories: trace paths in the report are as
    // written in the file, so the reports are identical.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (cwd, scenario_path, out) in [
        (
            root,
            "scenarios/lte-tmobile-short.toml".to_string(),
            a.path(),
        ),
        (
            root.parent().unwrap(),
            "sim/scenarios/lte-tmobile-short.toml".to_string(),
            b.path(),
        ),
    ] {
        let st = Command::new(env!("CARGO_BIN_EXE_rtq-sim"))
            .current_dir(cwd)
            .args([
                "run",
                "--quiet",
                "--duration",
                "3s",
                &scenario_path,
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let stdout = String::from_utf8_lossy(&st.stdout);
        assert!(stdout.contains("× real time"), "speed on stdout: {stdout}");
    }
    let ra = std::fs::read(a.path().join("report.json")).unwrap();
    let rb = std::fs::read(b.path().join("report.json")).unwrap();
    assert_eq!(ra, rb);
    let v: serde_json::Value = serde_json::from_slice(&ra).unwrap();
    assert_eq!(
        v["scenario"]["forward"]["bottleneck"]["trace"],
        "../traces/TMobile-LTE-short.up"
    );
}

#[test]
fn a_clean_link_plays_every_frame_at_its_delay() {
    let o = run(&scenario(
        r#"
        duration = "4s"
        [link]
        delay = "10ms"
        "#,
    ));
    let r = &o.report;
    assert_eq!(r.sender.frames.sent, 120);
    assert_eq!(r.receiver.frames.played, 120, "{}", json(&o));
    assert_eq!(r.receiver.frames.lost, 0);
    assert_eq!(r.receiver.end, "complete");
    // Network delay: the link's 10 ms plus nothing (virtual time has no processing delay;
    // pacing spreads a keyframe's fragments by a few ms).
    let n = &r.receiver.latency_us.network;
    assert!(
        (10_000..=15_000).contains(&n.p50),
        "network p50 {} µs",
        n.p50
    );
    assert!(
        n.min >= 10_000,
        "nothing arrives before the link's delay: {}",
        n.min
    );
    // The link saw no drop and delivered everything the sender sent.
    assert_eq!(r.link.forward.dropped, 0);
    assert_eq!(r.link.forward.delivered, r.link.forward.packets);
}

#[test]
fn an_outage_loses_the_frames_inside_it_and_the_session_recovers() {
    let o = run(&scenario(
        r#"
        duration = "6s"
        [link]
        delay = "10ms"
        [[schedule]]
        at = "2s"
        loss = "100%"
        [[schedule]]
        at = "4s"
        loss = "0%"
        "#,
    ));
    let r = &o.report;
    // 2 s of 30 fps: about 60 frames cannot arrive; the ones before and after do.
    let lost = r.receiver.frames.lost + r.receiver.frames.late;
    assert!((50..=75).contains(&lost), "lost+late {lost}: {}", json(&o));
    assert!(r.receiver.frames.played >= 180 - 75);
    assert!(r.link.forward.dropped_by.loss > 50);
    assert_eq!(r.receiver.end, "complete");

    // The timeline shows it second by second: a row per second of the run, in order, adding
    // up to the totals; nothing plays in the outage's second half, and frames play again in
    // the second after it.
    let t = &r.timeline;
    assert!(t.len() >= 6, "{t:?}");
    assert!(t.iter().enumerate().all(|(i, e)| e.t_s == i as u64));
    let sum = |f: fn(&rtq_sim::run::TimelineEntry) -> u64| t.iter().map(f).sum::<u64>();
    assert_eq!(sum(|e| e.sent), r.sender.frames.sent);
    assert_eq!(sum(|e| e.played), r.receiver.frames.played);
    assert_eq!(sum(|e| e.late), r.receiver.frames.late);
    assert_eq!(sum(|e| e.lost), r.receiver.frames.lost);
    assert!(t[1].played >= 25 && t[1].e2e_p50_us.is_some(), "{:?}", t[1]);
    assert_eq!(t[3].played, 0, "{:?}", t[3]);
    assert_eq!(t[3].e2e_p50_us, None);
    assert!(t[2].lost + t[3].lost + t[4].lost >= 40, "{t:?}");
    assert!(
        t[4].played >= 20,
        "plays again within the second after: {:?}",
        t[4]
    );
    assert!(t.iter().all(|e| e.sent <= 31));
    assert!(
        o.report.timeline.len() as f64 <= 6.0 + 3.0,
        "the run's wind-down is short"
    );
}

#[test]
fn the_sender_reconnects_after_a_measured_78_second_outage_and_plays_within_two_seconds() {
    // The shipped scenario: ATT's LTE drive uplink delivers nothing from 7.6 s to 85.9 s of
    // the run. Both ends give the connection up after 10 s of silence; the sender keeps
    // dialling (with backoff) and a new receiver session plays again once capacity returns.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/outage-att-lte.toml");
    let s = ScenarioFile::load(&path).unwrap().resolve().unwrap();
    let o = run(&s);
    let r = &o.report;
    assert!(r.sender.reconnects >= 1, "{}", json(&o));
    assert!(r.receiver_sessions >= 2, "{}", json(&o));

    let t = &r.timeline;
    assert!(t.len() >= 100, "{t:?}");
    let sum = |f: fn(&rtq_sim::run::TimelineEntry) -> u64| t.iter().map(f).sum::<u64>();
    assert_eq!(sum(|e| e.played), r.receiver.frames.played);
    assert_eq!(sum(|e| e.late), r.receiver.frames.late);
    assert_eq!(sum(|e| e.lost), r.receiver.frames.lost);
    // Frames play before the outage, none inside it, and they play again within two seconds of
    // the link's return (in second 86 or 87), then every second to the end.
    assert!(t[3..7].iter().all(|e| e.played >= 20), "{:?}", &t[..7]);
    assert!(t[15..85].iter().all(|e| e.played == 0), "{:?}", &t[15..85]);
    let back = t[85..].iter().find(|e| e.played > 0).map(|e| e.t_s);
    assert!(
        matches!(back, Some(85..=87)),
        "plays again in second {back:?}"
    );
    assert!(
        t[89..105].iter().all(|e| e.played >= 20),
        "{:?}",
        &t[89..105]
    );
    // And the receiver's totals span both sessions' frames.
    let after: u64 = t[85..].iter().map(|e| e.played).sum();
    let before: u64 = t[..15].iter().map(|e| e.played).sum();
    assert!(
        after >= 18 * 25 && before >= 4 * 25,
        "{before} before, {after} after"
    );
    assert_eq!(before + after, r.receiver.frames.played);
}

#[test]
fn loss_costs_frames_in_proportion() {
    let o = run(&scenario(
        r#"
        duration = "10s"
        seed = 3
        [source]
        fec = "off"
        nack = "off"
        [link]
        delay = "15ms"
        loss = "5%"
        "#,
    ));
    let r = &o.report;
    let f = &r.link.forward;
    let rate = f.dropped as f64 / f.packets as f64;
    assert!((0.03..0.07).contains(&rate), "link loss {rate}");
    // A 2 Mbit/s video frame is several datagrams; without recovery most lost datagrams cost a
    // frame, so more frames are lost than 5 % but far from all.
    let frame_loss = r.receiver.frames.lost as f64 / r.sender.frames.sent as f64;
    assert!((0.05..0.5).contains(&frame_loss), "frame loss {frame_loss}");
}

#[test]
fn a_dead_link_fails_the_handshake_with_a_reason() {
    let e = rtq_sim::vtime::run(
        &scenario(
            r#"
            duration = "5s"
            [link]
            loss = "100%"
            "#,
        ),
        |_| {},
        || false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot connect"), "{e}");
}

#[test]
fn stopping_early_ends_both_sessions_with_their_reports() {
    let s = scenario(
        r#"
        duration = "60s"
        [link]
        delay = "10ms"
        "#,
    );
    // Asked to stop once a second of virtual time has passed, as Ctrl-C does in real time.
    let elapsed = Cell::new(Duration::ZERO);
    let o = rtq_sim::vtime::run(
        &s,
        |t| elapsed.set(t),
        || elapsed.get() >= Duration::from_secs(1),
    )
    .unwrap();
    let r = &o.report;
    assert!(r.sender.frames.sent < 120, "sent {}", r.sender.frames.sent);
    assert!(r.receiver.frames.played > 0);
    assert_eq!(r.sender.end, "shutdown", "{}", json(&o));
}
