//! `rtq-sim check`, the regression gate: it passes on the committed baseline, fails on a
//! baseline the code cannot meet, and `--update` records what the code does.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.json")
}

fn check(baseline: &Path, extra: &[&str]) -> (i32, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_rtq-sim"))
        .arg("check")
        .arg("--baseline")
        .arg(baseline)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The committed baseline with its scenario paths made absolute, edited by `edit`, written to
/// a temporary directory.
fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, PathBuf) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed()).unwrap()).unwrap();
    let sim = Path::new(env!("CARGO_MANIFEST_DIR"));
    for s in v["scenarios"].as_array_mut().unwrap() {
        let file = sim.join(s["file"].as_str().unwrap());
        s["file"] = file.to_string_lossy().into_owned().into();
    }
    edit(&mut v);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    (dir, path)
}

fn scenario<'a>(v: &'a mut serde_json::Value, name: &str) -> &'a mut serde_json::Value {
    v["scenarios"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[test]
fn the_committed_baseline_passes() {
    let (code, out) = check(&committed(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("passed"), "{out}");
    assert!(!out.contains("REGRESSED"), "{out}");
}

#[test]
fn a_baseline_the_code_cannot_meet_fails_with_a_table_of_what_got_worse() {
    let (_dir, path) = edited(|v| {
        let s = scenario(v, "clean");
        let p99 = s["expect"]["e2e_p99_us"].as_f64().unwrap();
        s["expect"]["e2e_p99_us"] = (p99 / 2.0).into();
        let p50 = s["expect"]["e2e_p50_us"].as_f64().unwrap();
        s["expect"]["e2e_p50_us"] = (p50 / 2.0).into();
    });
    let (code, out) = check(&path, &["--only", "clean"]);
    assert_eq!(code, 1, "{out}");
    let regressed: Vec<&str> = out.lines().filter(|l| l.contains("REGRESSED")).collect();
    assert!(
        regressed
            .iter()
            .any(|l| l.contains("clean") && l.contains("e2e_p99_us")),
        "{out}"
    );
    assert!(regressed.iter().any(|l| l.contains("e2e_p50_us")), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    // Figures that did not move are not in the table.
    assert!(!out.lines().any(|l| l.contains("wire_bytes")), "{out}");
}

#[test]
fn improvements_are_reported_and_pass() {
    let (_dir, path) = edited(|v| {
        let s = scenario(v, "clean");
        let p50 = s["expect"]["e2e_p50_us"].as_f64().unwrap();
        s["expect"]["e2e_p50_us"] = (p50 * 2.0).into();
    });
    let (code, out) = check(&path, &["--only", "clean"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("e2e_p50_us") && l.contains("improved")),
        "{out}"
    );
    assert!(
        out.contains("--update"),
        "it says how to lock the gain in: {out}"
    );
}

#[test]
fn update_records_the_figures_the_committed_baseline_has() {
    let (_dir, path) = edited(|v| {
        let s = scenario(v, "clean");
        s.as_object_mut().unwrap().remove("expect");
    });
    let (code, out) = check(&path, &["--only", "clean"]);
    assert_eq!(code, 1, "missing figures fail the gate: {out}");
    assert!(out.contains("no baseline"), "{out}");
    let (code, out) = check(&path, &["--only", "clean", "--update"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&path, &["--only", "clean"]);
    assert_eq!(code, 0, "{out}");
    // The run is deterministic: the recorded figures are the committed ones.
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut now = read(&path);
    let mut then = read(&committed());
    assert_eq!(
        scenario(&mut now, "clean")["expect"],
        scenario(&mut then, "clean")["expect"]
    );
}

#[test]
fn a_broken_baseline_is_an_error_not_a_verdict() {
    let (_dir, path) = edited(|v| {
        v["tolerances"]["e2e_p5_us"] = serde_json::json!({ "rel": 0.1 });
    });
    let (code, out) = check(&path, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown metric `e2e_p5_us`"), "{out}");
    let (code, out) = check(Path::new("/nonexistent/baseline.json"), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot read the baseline"), "{out}");
    let (code, out) = check(&committed(), &["--only", "nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no such scenario"), "{out}");
}
