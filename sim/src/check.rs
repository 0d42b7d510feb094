//! `rtq-sim check`: the performance-regression gate.
//!
//! A baseline file (`sim/baseline.json`) lists a handful of scenarios, the figures each gave
//! when the baseline was last updated, and how far each figure may move before it counts as a
//! regression. `check` runs every scenario in virtual time — exact and repeatable, so the
//! figures do not depend on the machine or its load — and compares:
//!
//! | metric | better when | from the run |
//! |---|---|---|
//! | `on_time_ratio` | higher | frames played on time / frames sent |
//! | `e2e_p50_us`, `e2e_p99_us`, `e2e_p999_us` | lower | receiver's end-to-end delay percentiles |
//! | `late`, `lost` | lower | receiver's late and lost frames |
//! | `wire_bytes` | lower | UDP bytes the sender put on the wire |
//!
//! A figure regresses when it is worse than its baseline by more than `rel × baseline + abs`
//! (its tolerance: the file's default for the metric, or the scenario's own); it improves when
//! it is better by more than the same margin. `--update` rewrites the figures, keeping the
//! scenario list and the tolerances.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::run::RunReport;
use crate::scenario::ScenarioFile;

/// The metrics the gate compares, in report order.
pub const METRICS: [Metric; 7] = [
    Metric::OnTimeRatio,
    Metric::E2eP50,
    Metric::E2eP99,
    Metric::E2eP999,
    Metric::Late,
    Metric::Lost,
    Metric::WireBytes,
];

/// One compared figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Frames played on time over frames sent.
    OnTimeRatio,
    /// End-to-end delay, median, µs.
    E2eP50,
    /// End-to-end delay, 99th percentile, µs.
    E2eP99,
    /// End-to-end delay, 99.9th percentile, µs.
    E2eP999,
    /// Frames complete too late to play.
    Late,
    /// Frames never complete.
    Lost,
    /// UDP bytes the sender sent.
    WireBytes,
}

impl Metric {
    /// The key in the baseline file.
    pub fn key(self) -> &'static str {
        match self {
            Self::OnTimeRatio => "on_time_ratio",
            Self::E2eP50 => "e2e_p50_us",
            Self::E2eP99 => "e2e_p99_us",
            Self::E2eP999 => "e2e_p999_us",
            Self::Late => "late",
            Self::Lost => "lost",
            Self::WireBytes => "wire_bytes",
        }
    }

    fn higher_is_better(self) -> bool {
        self == Self::OnTimeRatio
    }

    /// The figure from a run's report (the ratio rounded to 6 decimals, as the baseline
    /// stores it; the rest are integers).
    pub fn of(self, r: &RunReport) -> f64 {
        let e = &r.receiver.latency_us.end_to_end;
        match self {
            Self::OnTimeRatio => (r.on_time_ratio() * 1e6).round() / 1e6,
            Self::E2eP50 => e.p50 as f64,
            Self::E2eP99 => e.p99 as f64,
            Self::E2eP999 => e.p999 as f64,
            Self::Late => r.receiver.frames.late as f64,
            Self::Lost => r.receiver.frames.lost as f64,
            Self::WireBytes => r.sender.bytes.wire as f64,
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Self::OnTimeRatio => format!("{:.2}%", v * 100.0),
            Self::E2eP50 | Self::E2eP99 | Self::E2eP999 => format!("{:.2} ms", v / 1000.0),
            Self::Late | Self::Lost => format!("{v:.0}"),
            Self::WireBytes => format!("{:.1} KiB", v / 1024.0),
        }
    }

    fn show_delta(self, d: f64) -> String {
        match self {
            Self::OnTimeRatio => format!("{:+.2} pp", d * 100.0),
            Self::E2eP50 | Self::E2eP99 | Self::E2eP999 => format!("{:+.2} ms", d / 1000.0),
            Self::Late | Self::Lost => format!("{d:+.0}"),
            Self::WireBytes => format!("{:+.1} KiB", d / 1024.0),
        }
    }

    fn from_key(k: &str) -> Option<Self> {
        METRICS.into_iter().find(|m| m.key() == k)
    }
}

/// How far a figure may move: `rel × baseline + abs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Fraction of the baseline figure.
    #[serde(default)]
    pub rel: f64,
    /// Absolute, in the metric's unit (a ratio for `on_time_ratio`, µs for delays, frames,
    /// bytes).
    #[serde(default)]
    pub abs: f64,
}

impl Tolerance {
    fn margin(self, base: f64) -> f64 {
        self.rel * base.abs() + self.abs
    }

    fn validate(self, what: &str) -> Result<(), String> {
        if !(self.rel.is_finite() && self.abs.is_finite() && self.rel >= 0.0 && self.abs >= 0.0) {
            return Err(format!(
                "{what}: rel and abs must be finite and not negative"
            ));
        }
        Ok(())
    }
}

/// One scenario of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateScenario {
    /// Name in the table.
    pub name: String,
    /// The scenario file, relative to the baseline file.
    pub file: PathBuf,
    /// What it covers (for readers of the file).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub covers: String,
    /// Tolerances that differ from the file's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tolerances: BTreeMap<String, Tolerance>,
    /// The figures at the last update (absent: never measured).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expect: BTreeMap<String, f64>,
}

/// The baseline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// What this file is and how to update it.
    #[serde(default)]
    pub about: String,
    /// Default tolerance of each metric.
    pub tolerances: BTreeMap<String, Tolerance>,
    /// The scenarios, run in this order.
    pub scenarios: Vec<GateScenario>,
}

impl Baseline {
    /// Reads and validates a baseline file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the baseline {} (run from the repository root, or pass --baseline PATH)",
                path.display()
            )
        })?;
        let b: Baseline =
            serde_json::from_str(&text).with_context(|| format!("baseline {}", path.display()))?;
        b.validate()
            .map_err(|e| anyhow::anyhow!("baseline {}: {e}", path.display()))?;
        Ok(b)
    }

    fn validate(&self) -> Result<(), String> {
        let known = || {
            METRICS
                .iter()
                .map(|m| m.key())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (k, t) in &self.tolerances {
            if Metric::from_key(k).is_none() {
                return Err(format!(
                    "unknown metric `{k}` in tolerances (known: {})",
                    known()
                ));
            }
            t.validate(&format!("tolerance of {k}"))?;
        }
        for m in METRICS {
            if !self.tolerances.contains_key(m.key()) {
                return Err(format!("no default tolerance for `{}`", m.key()));
            }
        }
        if self.scenarios.is_empty() {
            return Err("no scenarios".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.scenarios {
            if !names.insert(&s.name) {
                return Err(format!("scenario name `{}` appears twice", s.name));
            }
            for (k, t) in s.tolerances.iter() {
                if Metric::from_key(k).is_none() {
                    return Err(format!(
                        "scenario {}: unknown metric `{k}` in tolerances (known: {})",
                        s.name,
                        known()
                    ));
                }
                t.validate(&format!("scenario {}: tolerance of {k}", s.name))?;
            }
            for (k, v) in &s.expect {
                if Metric::from_key(k).is_none() {
                    return Err(format!(
                        "scenario {}: unknown metric `{k}` in expect (known: {})",
                        s.name,
                        known()
                    ));
                }
                if !v.is_finite() {
                    return Err(format!("scenario {}: `{k}` is not a number", s.name));
                }
            }
        }
        Ok(())
    }

    fn tolerance(&self, s: &GateScenario, m: Metric) -> Tolerance {
        s.tolerances
            .get(m.key())
            .or_else(|| self.tolerances.get(m.key()))
            .copied()
            .unwrap_or_default()
    }

    /// Writes the file (pretty JSON, keys in a stable order).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// How one figure compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within tolerance.
    Same,
    /// Worse by more than the tolerance.
    Regressed,
    /// Better by more than the tolerance.
    Improved,
    /// No baseline figure.
    New,
}

/// One compared figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// The metric.
    pub metric: Metric,
    /// Baseline figure.
    pub baseline: Option<f64>,
    /// This run's figure.
    pub now: f64,
    /// The tolerance applied.
    pub tolerance: Tolerance,
    /// The verdict.
    pub verdict: Verdict,
}

/// How `now` compares with `baseline` under `tolerance`.
pub fn judge(m: Metric, baseline: Option<f64>, now: f64, tolerance: Tolerance) -> Verdict {
    let Some(base) = baseline else {
        return Verdict::New;
    };
    let margin = tolerance.margin(base);
    // Positive: worse.
    let worse = if m.higher_is_better() {
        base - now
    } else {
        now - base
    };
    // A hair of slack for floating-point sums.
    if worse > margin + 1e-9 {
        Verdict::Regressed
    } else if -worse > margin + 1e-9 {
        Verdict::Improved
    } else {
        Verdict::Same
    }
}

/// Compares a run's figures with a scenario's baseline.
pub fn compare(b: &Baseline, s: &GateScenario, r: &RunReport) -> Vec<Row> {
    METRICS
        .into_iter()
        .map(|m| {
            let now = m.of(r);
            let tolerance = b.tolerance(s, m);
            let baseline = s.expect.get(m.key()).copied();
            let verdict = judge(m, baseline, now, tolerance);
            Row {
                scenario: s.name.clone(),
                metric: m,
                baseline,
                now,
                tolerance,
                verdict,
            }
        })
        .collect()
}

/// The figures of a run, as the baseline stores them.
pub fn figures(r: &RunReport) -> BTreeMap<String, f64> {
    METRICS
        .into_iter()
        .map(|m| (m.key().to_string(), m.of(r)))
        .collect()
}

/// A table of rows (all of them, or only those not [`Verdict::Same`]).
pub fn table(rows: &[Row], all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<16} {:<14} {:>12} {:>12} {:>12} {:>16}  verdict",
        "scenario", "metric", "baseline", "now", "change", "tolerance"
    );
    for r in rows {
        if !all && r.verdict == Verdict::Same {
            continue;
        }
        let m = r.metric;
        let (base, change) = match r.baseline {
            Some(b) => (m.show(b), m.show_delta(r.now - b)),
            None => ("—".into(), "—".into()),
        };
        let tol = match r.baseline {
            Some(b) => format!("±{}", m.show(r.tolerance.margin(b)).trim_start_matches('+')),
            None => "—".into(),
        };
        let verdict = match r.verdict {
            Verdict::Same => "ok",
            Verdict::Regressed => "REGRESSED",
            Verdict::Improved => "improved",
            Verdict::New => "new (no baseline figure)",
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<14} {:>12} {:>12} {:>12} {:>16}  {verdict}",
            r.scenario,
            m.key(),
            base,
            m.show(r.now),
            change,
            tol
        );
    }
    out
}

/// Loads a gate scenario's file (relative to the baseline's directory).
pub fn scenario_file(baseline: &Path, s: &GateScenario) -> anyhow::Result<ScenarioFile> {
    let dir = baseline.parent().unwrap_or(Path::new("."));
    let path = dir.join(&s.file);
    ScenarioFile::load(&path).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(expect: &[(&str, f64)], tol: &[(&str, f64, f64)]) -> Baseline {
        Baseline {
            about: String::new(),
            tolerances: METRICS
                .iter()
                .map(|m| (m.key().to_string(), Tolerance { rel: 0.0, abs: 0.0 }))
                .chain(tol.iter().map(|(k, rel, abs)| {
                    (
                        k.to_string(),
                        Tolerance {
                            rel: *rel,
                            abs: *abs,
                        },
                    )
                }))
                .collect(),
            scenarios: vec![GateScenario {
                name: "s".into(),
                file: "x.toml".into(),
                covers: String::new(),
                tolerances: BTreeMap::new(),
                expect: expect.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            }],
        }
    }

    fn verdict(b: &Baseline, m: Metric, now: f64) -> Verdict {
        let s = &b.scenarios[0];
        judge(m, s.expect.get(m.key()).copied(), now, b.tolerance(s, m))
    }

    #[test]
    fn delays_regress_past_rel_plus_abs_and_ratios_when_they_fall() {
        let b = baseline(
            &[("e2e_p99_us", 10_000.0), ("on_time_ratio", 0.99)],
            &[("e2e_p99_us", 0.05, 1000.0), ("on_time_ratio", 0.0, 0.002)],
        );
        // 10 ms + 5 % + 1 ms = 11.5 ms allowed.
        assert_eq!(verdict(&b, Metric::E2eP99, 11_500.0), Verdict::Same);
        assert_eq!(verdict(&b, Metric::E2eP99, 11_501.0), Verdict::Regressed);
        assert_eq!(verdict(&b, Metric::E2eP99, 8_499.0), Verdict::Improved);
        // The ratio is better when higher.
        assert_eq!(verdict(&b, Metric::OnTimeRatio, 0.988), Verdict::Same);
        assert_eq!(verdict(&b, Metric::OnTimeRatio, 0.987), Verdict::Regressed);
        assert_eq!(verdict(&b, Metric::OnTimeRatio, 0.993), Verdict::Improved);
        // No figure yet.
        assert_eq!(verdict(&b, Metric::Lost, 5.0), Verdict::New);
    }

    #[test]
    fn bad_baselines_are_refused_with_the_reason() {
        let mut b = baseline(&[], &[]);
        assert!(b.validate().is_ok());
        b.tolerances
            .insert("p50".into(), Tolerance { rel: 0.1, abs: 0.0 });
        assert!(b.validate().unwrap_err().contains("unknown metric `p50`"));
        let mut b = baseline(&[], &[]);
        b.tolerances.remove("lost");
        assert!(
            b.validate()
                .unwrap_err()
                .contains("no default tolerance for `lost`")
        );
        let b = baseline(&[], &[("late", -1.0, 0.0)]);
        assert!(b.validate().unwrap_err().contains("not negative"));
        let mut b = baseline(&[], &[]);
        b.scenarios.push(b.scenarios[0].clone());
        assert!(b.validate().unwrap_err().contains("appears twice"));
        let mut b = baseline(&[], &[]);
        b.scenarios[0].expect.insert("nope".into(), 1.0);
        assert!(
            b.validate()
                .unwrap_err()
                .contains("unknown metric `nope` in expect")
        );
    }

    #[test]
    fn the_baseline_file_round_trips() {
        let b = baseline(&[("lost", 3.0)], &[("lost", 0.1, 2.0)]);
        let text = serde_json::to_string_pretty(&b).unwrap();
        let back: Baseline = serde_json::from_str(&text).unwrap();
        assert_eq!(b, back);
        // Unknown fields are errors, not silently ignored.
        let bad = text.replace("\"scenarios\"", "\"scenarioz\"");
        assert!(serde_json::from_str::<Baseline>(&bad).is_err());
    }
}
