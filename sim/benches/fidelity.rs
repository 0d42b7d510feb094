//! Fidelity of virtual time: does rtq-sim's discrete-event mode (`Clock::Virtual`) report the
//! delays that the same scenario shows when it runs on the wall clock (`Clock::Realtime`)?
//!
//! `cargo bench -p rtq-sim --bench fidelity [-- --quick] [-- --rounds N] [-- --only NAME[,NAME]]
//! [-- --json PATH] [-- --out DIR]` (`cargo test --benches` runs it as a short smoke test: one
//! scenario for 3 s, one real-time round).
//!
//! Each scenario (by default interop-standard, interop-loss2, netem-40ms-1pct,
//! netem-ge2-burst3, lte-verizon-short, pantheon-mexico-cellular, interop-long-rtt, from
//! `sim/scenarios`) runs once in virtual time and `--rounds` times (default 3) in real time,
//! with the same seed and the scenario's own duration (30 s; `--quick`: 10 s and one round).
//! A virtual-time run is exact and repeatable; a real-time run is not (timer precision,
//! scheduling, two cores shared by sender, receiver and both link threads), so virtual time is
//! compared with the **median** of the real-time runs, and the real-time min–max spread is
//! printed beside it to show how much of a difference is noise.
//!
//! How to read the table (delays in ms, end-to-end: capture → played):
//! - `on time`: frames played on time / frames sent, virtual and real-time median;
//! - `p50`, `p99`: virtual, real-time median, their ratio (virtual / real time) and the range
//!   of the real-time rounds;
//! - `verdict`: `agree` when both p50 and p99 satisfy |v − r| ≤ 10 % · r + 2 ms (the fidelity
//!   criterion: 10 %, plus 2 ms of slack for scheduler noise), otherwise `DIFFER (…)` naming
//!   the percentile(s) that do not.
//!
//! The wall-clock time spent in each mode is printed at the end (virtual time should be many
//! times faster than the scenarios' duration). Figures are measured, not asserted: the bench
//! exits 0 whatever they are, 1 if a run fails, 2 on a bad flag, 130 when interrupted.
//! `--out DIR` writes every run's `report.json`, `.hgrm` files and plot into
//! `DIR/SCENARIO/{virtual,realtime-N}` for a closer look (link drops, QUIC losses, …).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rtq_sim::commands::{Clock, result_line, run_scenario};
use rtq_sim::config::Dur;
use rtq_sim::run::{RunOutcome, write_outputs};
use rtq_sim::scenario::{Scenario, ScenarioFile, shipped};

/// The scenarios compared by default.
const DEFAULT_SCENARIOS: &[&str] = &[
    "interop-standard",
    "interop-loss2",
    "netem-40ms-1pct",
    "netem-ge2-burst3",
    "lte-verizon-short",
    "pantheon-mexico-cellular",
    "interop-long-rtt",
];

/// The scenario of the smoke run.
const SMOKE_SCENARIO: &str = "interop-standard";

/// Relative tolerance of the fidelity criterion.
const TOLERANCE: f64 = 0.10;

/// Absolute slack of the fidelity criterion, µs (scheduler noise).
const SLACK_US: f64 = 2_000.0;

const USAGE: &str = "usage: fidelity [--bench] [--quick] [--rounds N] [--only NAME[,NAME]] [--json PATH] [--out DIR]";

/// The command line.
#[derive(Debug)]
struct Args {
    /// Run without `--bench` (as `cargo test --benches` does): one short scenario.
    smoke: bool,
    /// 10 s scenarios, one real-time round (unless `--rounds`).
    quick: bool,
    /// Real-time runs per scenario; `None`: the mode's default.
    rounds: Option<usize>,
    /// Scenario names; `None`: the mode's default.
    only: Option<Vec<String>>,
    /// Where to write the table as JSON.
    json: Option<PathBuf>,
    /// Where to write every run's outputs.
    out: Option<PathBuf>,
    /// Print the usage and exit.
    help: bool,
}

impl Args {
    /// Parses `args` (without the program name).
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut a = Args {
            smoke: true,
            quick: false,
            rounds: None,
            only: None,
            json: None,
            out: None,
            help: false,
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .filter(|v| !v.starts_with("--"))
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag.as_str() {
                // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run.
                "--bench" => a.smoke = false,
                "--quick" => a.quick = true,
                "--rounds" => {
                    let v = value("--rounds")?;
                    match v.parse::<usize>() {
                        Ok(n) if n > 0 => a.rounds = Some(n),
                        _ => return Err(format!("--rounds `{v}`: a whole number, at least 1")),
                    }
                }
                "--only" => {
                    let v = value("--only")?;
                    let names: Vec<String> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    if names.is_empty() {
                        return Err("--only needs at least one scenario name".into());
                    }
                    a.only = Some(names);
                }
                "--json" => a.json = Some(value("--json")?.into()),
                "--out" => a.out = Some(value("--out")?.into()),
                "--help" | "-h" => a.help = true,
                // What libtest accepts, so that `cargo test --benches -- --nocapture` and the like
                // still run the smoke test.
                "--nocapture" | "--show-output" | "--quiet" | "-q" | "--exact" | "--ignored"
                | "--include-ignored" => {}
                "--test-threads" | "--color" | "--format" | "--skip" => {
                    value(&flag)?;
                }
                f if f.starts_with('-') => return Err(format!("unknown flag `{f}`")),
                // A test-name filter from `cargo test`/`cargo bench NAME`: this bench has no
                // named tests to filter, so it is ignored.
                _ => {}
            }
        }
        Ok(a)
    }

    /// Real-time runs per scenario.
    fn rounds(&self) -> usize {
        self.rounds
            .unwrap_or(if self.smoke || self.quick { 1 } else { 3 })
    }

    /// The duration to impose, if not each scenario's own.
    fn duration(&self) -> Option<Duration> {
        if self.smoke {
            Some(Duration::from_secs(3))
        } else if self.quick {
            Some(Duration::from_secs(10))
        } else {
            None
        }
    }

    /// The scenarios to run.
    fn scenarios(&self) -> Vec<String> {
        match (&self.only, self.smoke) {
            (Some(names), _) => names.clone(),
            (None, true) => vec![SMOKE_SCENARIO.into()],
            (None, false) => DEFAULT_SCENARIOS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What one run showed.
#[derive(Debug, Clone, Copy)]
struct Figures {
    on_time: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Figures {
    fn of(outcome: &RunOutcome) -> Self {
        let r = &outcome.report;
        Self {
            on_time: r.on_time_ratio(),
            p50_us: r.receiver.latency_us.end_to_end.p50,
            p99_us: r.receiver.latency_us.end_to_end.p99,
        }
    }
}

/// One scenario: its virtual run against its real-time runs.
#[derive(Debug)]
struct Row {
    name: String,
    duration: Duration,
    virt: Figures,
    real: Vec<Figures>,
}

/// Median, min and max of a non-empty sample (the mean of the middle two for an even count).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// Whether a virtual figure agrees with a real-time one: |v − r| ≤ 10 % · r + 2 ms.
fn agrees(virt_us: f64, real_us: f64) -> bool {
    (virt_us - real_us).abs() <= TOLERANCE * real_us + SLACK_US
}

/// `virt / real`, NaN when real time measured nothing.
fn ratio(virt_us: f64, real_us: f64) -> f64 {
    if real_us > 0.0 {
        virt_us / real_us
    } else {
        f64::NAN
    }
}

impl Row {
    fn on_time(&self) -> (f64, f64, f64) {
        spread(self.real.iter().map(|f| f.on_time).collect())
    }
    fn p50(&self) -> (f64, f64, f64) {
        spread(self.real.iter().map(|f| f.p50_us as f64).collect())
    }
    fn p99(&self) -> (f64, f64, f64) {
        spread(self.real.iter().map(|f| f.p99_us as f64).collect())
    }
    /// Whether p50 and p99 agree.
    fn agreement(&self) -> (bool, bool) {
        (
            agrees(self.virt.p50_us as f64, self.p50().0),
            agrees(self.virt.p99_us as f64, self.p99().0),
        )
    }
    fn verdict(&self) -> String {
        match self.agreement() {
            (true, true) => "agree".into(),
            (false, true) => "DIFFER (p50)".into(),
            (true, false) => "DIFFER (p99)".into(),
            (false, false) => "DIFFER (p50, p99)".into(),
        }
    }
    fn json(&self) -> serde_json::Value {
        let (ot, _, _) = self.on_time();
        let (p50, p50_min, p50_max) = self.p50();
        let (p99, p99_min, p99_max) = self.p99();
        let (a50, a99) = self.agreement();
        serde_json::json!({
            "name": self.name,
            "duration_s": self.duration.as_secs_f64(),
            "virtual": {
                "on_time": self.virt.on_time,
                "p50_us": self.virt.p50_us,
                "p99_us": self.virt.p99_us,
            },
            "realtime": {
                "on_time_median": ot,
                "p50_us_median": p50,
                "p99_us_median": p99,
                "p50_us_min": p50_min,
                "p50_us_max": p50_max,
                "p99_us_min": p99_min,
                "p99_us_max": p99_max,
                "rounds": self.real.len(),
            },
            // NaN (nothing measured in real time) becomes null.
            "p50_ratio": ratio(self.virt.p50_us as f64, p50),
            "p99_ratio": ratio(self.virt.p99_us as f64, p99),
            "agree": a50 && a99,
        })
    }
}

/// Milliseconds from microseconds, for the table.
fn ms(us: f64) -> f64 {
    us / 1000.0
}

fn print_table(rows: &[Row], rounds: usize) {
    println!(
        "\nvirtual time against real time, end-to-end delay (ms); real time: median of {rounds} round(s) [min–max]; ratio: virtual / real-time median"
    );
    println!(
        "agree: |v − r| ≤ {:.0} % · r + {:.0} ms for both p50 and p99",
        TOLERANCE * 100.0,
        SLACK_US / 1000.0
    );
    println!(
        "{:<25} {:>15} | {:>7} {:>7} {:>5} {:>15} | {:>7} {:>7} {:>5} {:>15} | verdict",
        "scenario",
        "on time v / rt",
        "p50 v",
        "p50 rt",
        "ratio",
        "rt range",
        "p99 v",
        "p99 rt",
        "ratio",
        "rt range",
    );
    for row in rows {
        let (ot, _, _) = row.on_time();
        let (p50, p50_min, p50_max) = row.p50();
        let (p99, p99_min, p99_max) = row.p99();
        println!(
            "{:<25} {:>15} | {:>7.1} {:>7.1} {:>5.2} {:>15} | {:>7.1} {:>7.1} {:>5.2} {:>15} | {}",
            row.name,
            format!("{:.2}% / {:.2}%", row.virt.on_time * 100.0, ot * 100.0),
            ms(row.virt.p50_us as f64),
            ms(p50),
            ratio(row.virt.p50_us as f64, p50),
            format!("{:.1}–{:.1}", ms(p50_min), ms(p50_max)),
            ms(row.virt.p99_us as f64),
            ms(p99),
            ratio(row.virt.p99_us as f64, p99),
            format!("{:.1}–{:.1}", ms(p99_min), ms(p99_max)),
            row.verdict(),
        );
    }
}

/// The scenario `name` from `sim/scenarios`, its duration replaced by `duration` if given.
fn load(dir: &Path, name: &str, duration: Option<Duration>) -> anyhow::Result<Scenario> {
    let path = dir.join(format!("{name}.toml"));
    let file = ScenarioFile::load(&path).map_err(anyhow::Error::msg)?;
    let over = ScenarioFile {
        duration: duration.map(Dur),
        ..Default::default()
    };
    file.merged(&over).resolve().map_err(anyhow::Error::msg)
}

/// Why the bench stopped early.
enum Stop {
    /// A run failed.
    Failed(anyhow::Error),
    /// Ctrl-C ended a run early; its figures are partial.
    Interrupted,
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Failed(e)
    }
}

/// Runs `scenario` once with `clock`; `label` names the run in the log and in `--out`.
/// Returns its figures and the wall-clock time it took.
fn run_once(
    scenario: &Scenario,
    clock: Clock,
    label: &str,
    out: Option<&Path>,
) -> Result<(Figures, Duration), Stop> {
    let started = rtq_sim::realtime::now();
    let outcome = run_scenario(scenario, false, clock)
        .with_context(|| format!("{} ({label})", scenario.name))?;
    let wall = started.elapsed();
    let r = &outcome.report;
    eprintln!(
        "{:<25} {:<11} wall {:>6.1} s  {}  (sender end: {}; quic lost {}, rtt {:.1} ms; link dropped fwd {} rev {})",
        scenario.name,
        label,
        wall.as_secs_f64(),
        result_line(r),
        r.sender.end,
        r.sender.quic.lost_packets,
        r.sender.quic.rtt_us as f64 / 1000.0,
        r.link.forward.dropped,
        r.link.reverse.dropped,
    );
    if let Some(dir) = out {
        let dir = dir.join(&scenario.name).join(label);
        write_outputs(&dir, &outcome)
            .with_context(|| format!("writing the outputs of {} ({label})", scenario.name))?;
    }
    if r.sender.end == "shutdown" {
        return Err(Stop::Interrupted);
    }
    Ok((Figures::of(&outcome), wall))
}

/// Runs every scenario: once in virtual time, `rounds` times in real time. Completed rows are
/// kept in `rows` even when a later run stops the bench.
fn run_all(
    args: &Args,
    scenarios: &[Scenario],
    rows: &mut Vec<Row>,
    wall: &mut (Duration, Duration),
) -> Result<(), Stop> {
    let rounds = args.rounds();
    for scenario in scenarios {
        let (virt, w) = run_once(scenario, Clock::Virtual, "virtual", args.out.as_deref())?;
        wall.0 += w;
        let mut real = Vec::with_capacity(rounds);
        for round in 1..=rounds {
            let label = format!("realtime-{round}");
            let (f, w) = run_once(scenario, Clock::Realtime, &label, args.out.as_deref())?;
            wall.1 += w;
            real.push(f);
        }
        rows.push(Row {
            name: scenario.name.clone(),
            duration: scenario.duration,
            virt,
            real,
        });
    }
    Ok(())
}

fn write_json(path: &Path, rows: &[Row], wall: (Duration, Duration)) -> anyhow::Result<()> {
    let json = serde_json::json!({
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "wall_s": { "virtual": wall.0.as_secs_f64(), "realtime": wall.1.as_secs_f64() },
    });
    std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fidelity: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let available: Vec<String> = shipped(&dir).into_iter().map(|(n, _)| n).collect();
    let names = args.scenarios();
    if let Some(bad) = names.iter().find(|n| !available.contains(n)) {
        eprintln!(
            "fidelity: --only: no scenario `{bad}` in {} (there are: {})\n{USAGE}",
            dir.display(),
            available.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut scenarios = Vec::with_capacity(names.len());
    for name in &names {
        match load(&dir, name, args.duration()) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("fidelity: scenario {name}: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut rows = Vec::new();
    let mut wall = (Duration::ZERO, Duration::ZERO);
    let outcome = run_all(&args, &scenarios, &mut rows, &mut wall);

    print_table(&rows, args.rounds());
    if args.smoke && cfg!(debug_assertions) {
        println!(
            "(smoke run of an unoptimised build: real-time figures carry its slowness; run `cargo bench` for figures)"
        );
    }
    let simulated: Duration = rows.iter().map(|r| r.duration).sum();
    println!(
        "wall-clock time: virtual {:.1} s for {:.0} s simulated ({:.0}× real time); real time {:.1} s",
        wall.0.as_secs_f64(),
        simulated.as_secs_f64(),
        simulated.as_secs_f64() / wall.0.as_secs_f64().max(1e-9),
        wall.1.as_secs_f64(),
    );
    if let Some(path) = &args.json {
        if let Err(e) = write_json(path, &rows, wall) {
            eprintln!("fidelity: {e:#}");
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Interrupted) => {
            eprintln!("fidelity: interrupted; the table holds the scenarios completed before");
            ExitCode::from(130)
        }
        Err(Stop::Failed(e)) => {
            eprintln!("fidelity: a run failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
