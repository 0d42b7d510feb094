//! `rtq-sim` as a user runs it: a scenario file, flags, the outputs, and bad input.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtq-sim"))
}

#[test]
fn run_writes_a_report_with_the_stable_keys_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim()
        .args([
            "run",
            "--quiet",
            "--duration",
            "2s",
            "--seed",
            "42",
            "--delay",
            "10ms",
            "--reverse-delay",
            "5ms",
        ])
        .args(["--loss", "1%", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("seed 42"), "the seed is printed: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(v["seed"], 42);
    assert_eq!(v["clock"], "virtual", "virtual time is the default");
    assert_eq!(v["scenario"]["forward"]["delay"], "10ms");
    assert_eq!(v["scenario"]["reverse"]["delay"], "5ms");
    assert_eq!(v["scenario"]["reverse"]["loss"]["mean"], "1%");
    assert_eq!(v["sender"]["role"], "sender");
    assert_eq!(v["receiver"]["role"], "receiver");
    for dir_name in ["forward", "reverse"] {
        let l = &v["link"][dir_name];
        for key in [
            "packets",
            "delivered",
            "dropped",
            "duplicated",
            "reordered",
            "corrupted",
        ] {
            assert!(l[key].is_u64(), "link.{dir_name}.{key}");
        }
        for key in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(
                l["delay_us"][key].is_number(),
                "link.{dir_name}.delay_us.{key}"
            );
        }
    }
    assert!(v["link"]["forward"]["delay_us"]["p50"].as_u64().unwrap() >= 10_000);
    assert!(v["receiver"]["frames"]["played"].as_u64().unwrap() > 30);
    for f in [
        "delay.svg",
        "delay-network.hgrm",
        "delay-jitter_buffer.hgrm",
        "delay-end_to_end.hgrm",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let svg = std::fs::read_to_string(dir.path().join("delay.svg")).unwrap();
    assert_eq!(svg.matches("<path").count(), 3, "one line per delay");
}

#[test]
fn realtime_runs_the_same_session_on_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim()
        .args([
            "run",
            "--realtime",
            "--quiet",
            "--duration",
            "1s",
            "--delay",
            "5ms",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("(real time)"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(v["clock"], "realtime");
    assert_eq!(v["sender"]["frames"]["sent"], 30);
    assert!(v["receiver"]["frames"]["played"].as_u64().unwrap() > 20);
    assert!(v["link"]["forward"]["delay_us"]["p50"].as_u64().unwrap() >= 5_000);
}

/// The real shells (tokio and quinn) carry retransmission requests by datagram and answer
/// them: on a lossy link without FEC, copies are asked for and sent.
#[test]
fn realtime_shells_ask_for_and_send_copies() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim()
        .args([
            "run",
            "--realtime",
            "--quiet",
            "--duration",
            "2s",
            "--delay",
            "5ms",
            "--loss",
            "5%",
            "--fec",
            "off",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let asked = v["receiver"]["recovery"]["retransmit_requests"]
        .as_u64()
        .unwrap();
    let sent = v["sender"]["recovery"]["retransmitted"].as_u64().unwrap();
    assert!(asked > 0 && sent > 0, "{:#}", v["sender"]["recovery"]);
    assert_eq!(v["sender"]["datagrams"]["dropped"]["total"], 0);
}

#[test]
fn bad_scenarios_and_traces_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.toml");
    std::fs::write(
        &scenario,
        "name = \"x\"\n\n[link]\ndelay = \"15ms\"\nlos = \"2%\"\n",
    )
    .unwrap();
    let out = sim()
        .args(["run", "--quiet"])
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 5") && err.contains("los"),
        "{err}"
    );

    let trace = dir.path().join("t.up");
    std::fs::write(&trace, "1\n2\nthree\n4\n").unwrap();
    let out = sim()
        .args(["run", "--quiet", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("t.up") && err.contains(":3"), "{err}");

    let out = sim()
        .args(["run", "--quiet", "--trace", "/nonexistent/trace.up"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace.up"));

    let out = sim().args(["run", "--loss", "150%"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("between 0% and 100%"));
    let out = sim()
        .args(["run", "--loss-model", "ge", "--loss", "60%", "--burst", "1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("lengthen the bursts"));
}

#[test]
fn every_shipped_scenario_loads_and_resolves() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let list = rtq_sim::scenario::shipped(&dir);
    assert!(list.len() >= 11, "{list:?}");
    for (name, path) in list {
        let f =
            rtq_sim::scenario::ScenarioFile::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(f.description.is_some(), "{name} says what it models");
        let s = f.resolve().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.name, name, "file name and scenario name agree");
    }
}
