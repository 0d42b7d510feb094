//! What each `rtq-sim` subcommand does, on top of the library.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rtq::net::{Shutdown, trigger_on_signals};
use serde::Serialize;

use crate::check::{Baseline, Verdict};
use crate::cli::{CheckArgs, CompareArgs, ProxyArgs, RunArgs, SweepArgs, scenario_from};
use crate::config::{Direction, LinkSpec};
use crate::link::PathReport;
use crate::proxy::Proxy;
use crate::run::{RunOutcome, RunReport, write_outputs};
use crate::scenario::{Scenario, ScenarioFile};

fn msg(e: String) -> anyhow::Error {
    anyhow::Error::msg(e)
}

/// One line per direction of what a link did.
pub fn link_lines(forward: &PathReport, reverse: &PathReport) -> String {
    let mut s = String::new();
    for (name, r) in [("forward", forward), ("reverse", reverse)] {
        let _ = writeln!(
            s,
            "  link {name:<8} in {}  delivered {}  dropped {} (loss {}, queue {}, aqm {}, outage {}, mtu {})  dup {}  reordered {}  corrupted {}  added delay p50 {:.2} ms p99 {:.2} ms",
            r.packets,
            r.delivered,
            r.dropped,
            r.dropped_by.loss,
            r.dropped_by.queue,
            r.dropped_by.aqm,
            r.dropped_by.blackhole,
            r.dropped_by.mtu,
            r.duplicated,
            r.reordered,
            r.corrupted,
            r.delay_us.p50 as f64 / 1000.0,
            r.delay_us.p99 as f64 / 1000.0,
        );
    }
    s
}

/// A one-line result of a run, for tables.
pub fn result_line(r: &RunReport) -> String {
    let e = &r.receiver.latency_us.end_to_end;
    format!(
        "on time {:.2}% ({} of {} frames)  end-to-end p50 {:.1} ms  p99 {:.1} ms  late {}  lost {}",
        r.on_time_ratio() * 100.0,
        r.receiver.frames.played,
        r.sender.frames.sent,
        e.p50 as f64 / 1000.0,
        e.p99 as f64 / 1000.0,
        r.receiver.frames.late,
        r.receiver.frames.lost,
    )
}

/// How a run keeps time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// A discrete-event loop over quinn-proto ([`crate::vtime`]): exact, repeatable, fast.
    Virtual,
    /// The wall clock: quinn over simulated sockets ([`crate::run::realtime`]).
    Realtime,
}

impl Clock {
    /// From `--realtime`.
    pub fn from_flag(realtime: bool) -> Self {
        if realtime {
            Self::Realtime
        } else {
            Self::Virtual
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Virtual => "virtual time",
            Self::Realtime => "real time",
        }
    }
}

/// Runs one scenario with an optional progress bar; Ctrl-C ends it early, with everything
/// written.
pub fn run_scenario(
    scenario: &Scenario,
    progress: bool,
    clock: Clock,
) -> anyhow::Result<RunOutcome> {
    let rt = rtq::cli::runtime()?;
    let total = scenario.duration.as_millis() as u64;
    let bar = if progress {
        let b = indicatif::ProgressBar::new(total);
        let template = match clock {
            Clock::Realtime => "{spinner} {msg} [{bar:30}] {elapsed}/{duration}",
            Clock::Virtual => "{spinner} {msg} [{bar:30}] {pos}/{len} ms simulated",
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(scenario.name.clone());
        Some(b)
    } else {
        None
    };
    let show = |elapsed: Duration| {
        if let Some(b) = &bar {
            b.set_position((elapsed.as_millis() as u64).min(total));
        }
    };
    let (trigger, shutdown) = Shutdown::new();
    rt.spawn(trigger_on_signals(trigger));
    let outcome = match clock {
        Clock::Realtime => rt.block_on(crate::run::realtime(scenario, shutdown, show)),
        Clock::Virtual => crate::vtime::run(scenario, show, || shutdown.is_set()),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    rt.shutdown_timeout(Duration::from_millis(200));
    outcome
}

/// The modes `rtq-sim compare` runs each scenario in: label, FEC, retransmission, rate
/// adaptation, frame transport. Then rtq's default (FEC + retransmission) and the stream
/// baseline run once more each, at the smallest fixed playout delay that plays 99.9 % of
/// their frames (found by [`fixed_playout_for`]), so that the two transports are also
/// compared at the same delivery, whatever the adaptive playout policy makes of them.
pub const RECOVERY_MODES: [(&str, &str, &str, bool, &str); 6] = [
    ("none", "off", "off", false, "datagram"),
    ("FEC only", "auto", "off", false, "datagram"),
    ("retransmission only", "off", "on", false, "datagram"),
    ("FEC + retransmission", "auto", "on", false, "datagram"),
    (
        "FEC + retransmission, --adapt",
        "auto",
        "on",
        true,
        "datagram",
    ),
    (
        "stream (one QUIC stream per frame)",
        "off",
        "off",
        false,
        "stream",
    ),
];

/// The delivery the fixed playout delays of the last rows are searched for.
pub const TARGET_ON_TIME: f64 = 0.999;

/// One row of `rtq-sim compare`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareRow {
    /// Scenario name.
    pub scenario: String,
    /// Recovery label (see [`RECOVERY_MODES`]).
    pub recovery: String,
    /// `datagram` or `stream`.
    pub transport: String,
    /// The fixed playout delay of the row, ms (`null`: adaptive).
    pub playout_ms: Option<u64>,
    /// Frames played on time / frames sent.
    pub on_time: f64,
    /// End-to-end p50, µs.
    pub e2e_p50_us: u64,
    /// End-to-end p99, µs.
    pub e2e_p99_us: u64,
    /// Bytes the sender put on the wire.
    pub wire_bytes: u64,
    /// `wire_bytes` over the same scenario's without recovery.
    pub wire_ratio: f64,
    /// The sender's QUIC round-trip time at the end, µs.
    pub rtt_us: u64,
}

fn compare_run(
    file: &crate::scenario::ScenarioFile,
    path: &std::path::Path,
    mode: (&str, &str, &str, bool, &str),
    playout_ms: Option<u64>,
) -> anyhow::Result<crate::run::RunOutcome> {
    let (_, fec, nack, adapt, frames) = mode;
    let over = crate::scenario::ScenarioFile {
        source: crate::scenario::SourceSpec {
            fec: Some(fec.into()),
            nack: Some(nack.into()),
            adapt: Some(adapt),
            ..Default::default()
        },
        receiver: crate::scenario::ReceiverSpec {
            jitter: playout_ms.map(|ms| format!("fixed:{ms}ms")),
            ..Default::default()
        },
        transport: crate::scenario::TransportSpec {
            frames: Some(frames.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let scenario = file
        .merged(&over)
        .resolve()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    crate::vtime::run(&scenario, |_| {}, || false)
}

/// The smallest fixed playout delay (whole ms, up to the scenario's longest playout delay)
/// at which `mode` plays [`TARGET_ON_TIME`] of its frames, with that run; `None` if even the
/// longest does not. With streams a fixed delay does not change what the network does, so
/// more delay never plays fewer frames and the bisection finds the smallest; with rtq's
/// datagrams the sender keeps copies as long as the receiver's playout delay, which as a
/// rule also plays more with more delay (the answer always meets the target).
pub fn fixed_playout_for(
    file: &crate::scenario::ScenarioFile,
    path: &std::path::Path,
    mode: (&str, &str, &str, bool, &str),
) -> anyhow::Result<Option<(u64, crate::run::RunOutcome)>> {
    let max_ms = file
        .clone()
        .resolve()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .max_delay
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX);
    let top = compare_run(file, path, mode, Some(max_ms))?;
    if top.report.on_time_ratio() < TARGET_ON_TIME {
        return Ok(None);
    }
    let (mut lo, mut hi, mut best) = (0u64, max_ms, top);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let run = compare_run(file, path, mode, Some(mid))?;
        if run.report.on_time_ratio() >= TARGET_ON_TIME {
            hi = mid;
            best = run;
        } else {
            lo = mid;
        }
    }
    Ok(Some((hi, best)))
}

/// Runs every scenario with every recovery mode, in virtual time.
pub fn compare_rows(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<CompareRow>> {
    let mut rows = Vec::new();
    for path in files {
        let file = crate::scenario::ScenarioFile::load(path).map_err(anyhow::Error::msg)?;
        let mut base_wire = None;
        let mut row = |label: String, outcome: &crate::run::RunOutcome, playout_ms| {
            let r = &outcome.report;
            let wire = r.sender.bytes.wire;
            let base = *base_wire.get_or_insert(wire);
            CompareRow {
                scenario: r.scenario.name.clone(),
                recovery: label,
                transport: r.scenario.transport.to_string(),
                playout_ms,
                on_time: r.on_time_ratio(),
                e2e_p50_us: r.receiver.latency_us.end_to_end.p50,
                e2e_p99_us: r.receiver.latency_us.end_to_end.p99,
                wire_bytes: wire,
                wire_ratio: if base > 0 {
                    wire as f64 / base as f64
                } else {
                    0.0
                },
                rtt_us: r.sender.quic.rtt_us,
            }
        };
        let video = matches!(
            file.clone().resolve().map(|s| s.source),
            Ok(rtq::source::SourceKind::Video { .. })
        );
        for mode in RECOVERY_MODES {
            if mode.3 && !video {
                // Only the video source adapts its rate.
                continue;
            }
            let outcome = compare_run(&file, path, mode, None)?;
            rows.push(row(mode.0.into(), &outcome, None));
        }
        for mode in [RECOVERY_MODES[3], RECOVERY_MODES[5]] {
            let name = mode.0.split(" (").next().unwrap_or(mode.0);
            match fixed_playout_for(&file, path, mode)? {
                Some((ms, outcome)) => rows.push(row(
                    format!(
                        "{name}, fixed playout for ≥ {:.1} %",
                        TARGET_ON_TIME * 100.0
                    ),
                    &outcome,
                    Some(ms),
                )),
                None => eprintln!(
                    "rtq-sim compare: {}: {name} plays < {:.1} % of frames even at the longest playout delay",
                    path.display(),
                    TARGET_ON_TIME * 100.0
                ),
            }
        }
    }
    Ok(rows)
}

/// `rtq-sim compare`: prints a Markdown table (and writes JSON if asked).
pub fn compare(a: &CompareArgs) -> anyhow::Result<ExitCode> {
    let rows = compare_rows(&a.scenarios)?;
    println!(
        "| scenario | recovery | playout | on time | end-to-end p50 / p99 | bytes on the wire | QUIC RTT |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} % | {:.0} / {:.0} ms | {:.2}× | {:.0} ms |",
            r.scenario,
            r.recovery,
            r.playout_ms
                .map_or_else(|| "adaptive".into(), |ms| format!("fixed {ms} ms")),
            r.on_time * 100.0,
            r.e2e_p50_us as f64 / 1000.0,
            r.e2e_p99_us as f64 / 1000.0,
            r.wire_ratio,
            r.rtt_us as f64 / 1000.0,
        );
    }
    if let Some(path) = &a.json {
        let json = serde_json::json!({ "rows": rows });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json)?
                + "
",
        )
        .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// How fast a virtual-time run went: simulated seconds per wall-clock second.
pub fn speed_line(simulated: Duration, wall: Duration) -> String {
    let ratio = simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    format!(
        "rtq-sim: simulated {:.1} s in {:.3} s of wall-clock time ({ratio:.0}× real time)",
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
    )
}

/// `rtq-sim run`.
pub fn run(a: RunArgs, reverse: &LinkSpec) -> anyhow::Result<ExitCode> {
    let flags = a.session.scenario(&a.link, reverse);
    let scenario = scenario_from(a.scenario.as_ref(), &flags)?
        .resolve()
        .map_err(msg)?;
    let clock = Clock::from_flag(a.realtime);
    eprintln!(
        "rtq-sim: scenario {} — seed {} — {} of {} ({})",
        scenario.name,
        scenario.seed,
        rtq::units::format_duration(scenario.duration),
        if scenario.description.is_empty() {
            "custom link".into()
        } else {
            scenario.description.clone()
        },
        clock.describe(),
    );
    let started = crate::realtime::now();
    let outcome = run_scenario(&scenario, !a.quiet, clock)?;
    let wall = started.elapsed();
    let written = write_outputs(&a.out, &outcome)?;
    let r = &outcome.report;
    if clock == Clock::Virtual {
        // Wall-clock figures go to stdout, never into report.json (it must not vary).
        println!("{}", speed_line(scenario.duration, wall));
    }
    eprint!("{}", rtq::stats::text::summary("receiver", &r.receiver));
    eprint!("{}", link_lines(&r.link.forward, &r.link.reverse));
    eprintln!("  result   {}", result_line(r));
    eprintln!(
        "  seed     {} (rerun with --seed {} for the same link draws)",
        r.seed, r.seed
    );
    for p in written {
        eprintln!("  wrote    {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `rtq-sim proxy`.
pub fn proxy(a: ProxyArgs, reverse: &LinkSpec) -> anyhow::Result<ExitCode> {
    let base = match &a.scenario {
        Some(p) => ScenarioFile::load(p).map_err(msg)?,
        None => ScenarioFile::default(),
    };
    let flags = ScenarioFile {
        seed: a.seed,
        link: a.link.spec(),
        reverse: reverse.clone(),
        schedule: a.link.at.clone(),
        ..Default::default()
    };
    let scenario = base.merged(&flags).resolve().map_err(msg)?;
    let steps = |d: Direction| -> Vec<_> {
        scenario
            .schedule
            .iter()
            .filter(|s| s.direction == d)
            .map(|s| (s.at, s.config.clone()))
            .collect()
    };
    let proxy = Proxy::start(
        a.listen,
        a.to,
        (scenario.forward.clone(), steps(Direction::Forward)),
        (scenario.reverse.clone(), steps(Direction::Reverse)),
        scenario.path_seeds(),
    )?;
    eprintln!(
        "rtq-sim: relaying {} → {} (seed {})",
        proxy.listen_addr(),
        a.to,
        scenario.seed
    );
    let rt = rtq::cli::runtime()?;
    rt.block_on(async {
        let (trigger, mut shutdown) = Shutdown::new();
        tokio::spawn(trigger_on_signals(trigger));
        let start = crate::realtime::now();
        let end = a.duration.map(|d| start + d.0);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                () = async { match end { Some(e) => tokio::time::sleep_until(e.into()).await, None => std::future::pending().await } } => break,
                _ = tick.tick() => {
                    if !a.quiet {
                        let r = proxy.report();
                        eprintln!(
                            "[{:6.1}s] forward in {} out {} dropped {} | reverse in {} out {} dropped {}",
                            start.elapsed().as_secs_f64(),
                            r.forward.packets, r.forward.delivered, r.forward.dropped,
                            r.reverse.packets, r.reverse.delivered, r.reverse.dropped,
                        );
                    }
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    for e in proxy.errors() {
        eprintln!("rtq-sim: receive error: {e}");
    }
    let report = proxy.stop();
    eprint!("{}", link_lines(&report.forward, &report.reverse));
    if let Some(path) = &a.stats_json {
        rtq::cli::write_json(
            path,
            &serde_json::json!({ "scenario": scenario, "seed": scenario.seed, "link": report }),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One swept parameter: a name and its values (as text the link flags accept).
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The link parameter.
    pub name: String,
    /// Its values, in order.
    pub values: Vec<String>,
    /// The same values as numbers, for plotting.
    pub numbers: Vec<f64>,
    /// The unit after the numbers (`%`, `ms`, `Mbit`, …).
    pub unit: String,
}

impl std::str::FromStr for Axis {
    type Err = String;

    /// `NAME=FROM..TO:STEPS`, e.g. `loss=0%..10%:6` (0, 2, 4, 6, 8, 10 %).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--param `{s}`: write NAME=FROM..TO:STEPS, e.g. loss=0%..10%:6");
        let (name, range) = s.split_once('=').ok_or_else(bad)?;
        let (span, steps) = range.rsplit_once(':').ok_or_else(bad)?;
        let (from, to) = span.split_once("..").ok_or_else(bad)?;
        let steps: usize = steps.parse().map_err(|_| bad())?;
        if !(2..=50).contains(&steps) {
            return Err(format!("--param `{s}`: between 2 and 50 steps"));
        }
        let split = |v: &str| -> Result<(f64, String), String> {
            let v = v.trim();
            let end = v
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(v.len());
            let n: f64 = v[..end].parse().map_err(|_| bad())?;
            Ok((n, v[end..].to_string()))
        };
        let (a, ua) = split(from)?;
        let (b, ub) = split(to)?;
        if ua != ub {
            return Err(format!("--param `{s}`: both ends need the same unit"));
        }
        let numbers: Vec<f64> = (0..steps)
            .map(|i| a + (b - a) * i as f64 / (steps - 1) as f64)
            .collect();
        let values: Vec<String> = numbers
            .iter()
            .map(|n| format!("{}{ua}", (n * 1e6).round() / 1e6))
            .collect();
        // Check that the link accepts these values.
        let mut probe = LinkSpec::default();
        for v in &values {
            probe.set(name, v)?;
        }
        Ok(Self {
            name: name.to_string(),
            values,
            numbers,
            unit: ua,
        })
    }
}

/// A cell of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Values of the swept parameters, in order.
    pub params: Vec<String>,
    /// Frames played on time / frames sent.
    pub on_time_ratio: f64,
    /// End-to-end delay, µs.
    pub e2e_p50_us: u64,
    /// End-to-end delay, µs.
    pub e2e_p99_us: u64,
    /// Frames sent.
    pub sent: u64,
    /// Frames played.
    pub played: u64,
    /// Frames late.
    pub late: u64,
    /// Frames lost.
    pub lost: u64,
}

/// `rtq-sim sweep`.
pub fn sweep(a: SweepArgs, reverse: &LinkSpec) -> anyhow::Result<ExitCode> {
    if a.param.len() > 2 {
        anyhow::bail!("--param: at most two swept parameters");
    }
    let axes: Vec<Axis> = a
        .param
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, String>>()
        .map_err(msg)?;
    let mut flags = a.session.scenario(&a.link, reverse);
    if flags.duration.is_none() {
        flags.duration = Some(crate::config::Dur(Duration::from_secs(10)));
    }
    let base = scenario_from(a.scenario.as_ref(), &flags)?;
    let second = axes
        .get(1)
        .map_or(vec![None], |ax| ax.values.iter().map(Some).collect());
    let mut cells = Vec::new();
    for v1 in &axes[0].values {
        for v2 in &second {
            let mut cell = base.clone();
            cell.link.set(&axes[0].name, v1).map_err(msg)?;
            let mut params = vec![v1.clone()];
            if let (Some(ax), Some(v2)) = (axes.get(1), v2) {
                cell.link.set(&ax.name, v2).map_err(msg)?;
                params.push((*v2).clone());
            }
            let scenario = cell.resolve().map_err(msg)?;
            eprintln!(
                "rtq-sim: sweep cell {} (seed {})",
                params.join(", "),
                scenario.seed
            );
            let out = run_scenario(&scenario, false, Clock::from_flag(a.realtime))?;
            let r = &out.report;
            eprintln!("  {}", result_line(r));
            cells.push(Cell {
                params,
                on_time_ratio: r.on_time_ratio(),
                e2e_p50_us: r.receiver.latency_us.end_to_end.p50,
                e2e_p99_us: r.receiver.latency_us.end_to_end.p99,
                sent: r.sender.frames.sent,
                played: r.receiver.frames.played,
                late: r.receiver.frames.late,
                lost: r.receiver.frames.lost,
            });
        }
    }
    write_sweep(&a.out, &axes, &cells)?;
    eprintln!(
        "rtq-sim: wrote {}/sweep.csv, sweep.json, sweep.svg",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the sweep table (CSV and JSON) and its plot.
pub fn write_sweep(dir: &std::path::Path, axes: &[Axis], cells: &[Cell]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::new();
    let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    let _ = writeln!(
        csv,
        "{},on_time_ratio,e2e_p50_ms,e2e_p99_ms,sent,played,late,lost",
        names.join(",")
    );
    for c in cells {
        let _ = writeln!(
            csv,
            "{},{:.6},{:.3},{:.3},{},{},{},{}",
            c.params.join(","),
            c.on_time_ratio,
            c.e2e_p50_us as f64 / 1000.0,
            c.e2e_p99_us as f64 / 1000.0,
            c.sent,
            c.played,
            c.late,
            c.lost
        );
    }
    std::fs::write(dir.join("sweep.csv"), csv)?;
    let json = serde_json::json!({ "params": names, "cells": cells });
    std::fs::write(
        dir.join("sweep.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    // p99 against the first parameter, one line per value of the second.
    let Some(first) = axes.first() else {
        return Ok(());
    };
    let groups: Vec<Option<&String>> = axes
        .get(1)
        .map_or(vec![None], |ax| ax.values.iter().map(Some).collect());
    let series: Vec<(String, Vec<(f64, f64)>)> = groups
        .iter()
        .map(|g| {
            let name = match (axes.get(1), g) {
                (Some(ax), Some(v)) => format!("{}={v}", ax.name),
                _ => "end-to-end p99".into(),
            };
            let pts = cells
                .iter()
                .filter(|c| g.is_none_or(|v| c.params.get(1) == Some(v)))
                .filter_map(|c| {
                    let i = first
                        .values
                        .iter()
                        .position(|v| Some(v) == c.params.first())?;
                    Some((first.numbers[i], c.e2e_p99_us as f64 / 1000.0))
                })
                .collect();
            (name, pts)
        })
        .collect();
    let svg = crate::plot::lines(
        "end-to-end delay p99 across the sweep",
        &format!("{} ({})", first.name, first.unit),
        "p99 end-to-end delay (ms)",
        &series,
    );
    std::fs::write(dir.join("sweep.svg"), svg)?;
    Ok(())
}

/// `rtq-sim check`: 0 when nothing regressed, 1 when something did (errors are the caller's 2).
pub fn check(a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let baseline = Baseline::load(&a.baseline)?;
    for name in &a.only {
        if !baseline.scenarios.iter().any(|s| &s.name == name) {
            anyhow::bail!(
                "--only {name}: no such scenario in {} (it has: {})",
                a.baseline.display(),
                baseline
                    .scenarios
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let chosen: Vec<usize> = (0..baseline.scenarios.len())
        .filter(|&i| a.only.is_empty() || a.only.contains(&baseline.scenarios[i].name))
        .collect();
    println!(
        "rtq-sim check: {} scenario(s) of {} in virtual time",
        chosen.len(),
        a.baseline.display()
    );
    let started = crate::realtime::now();
    let mut updated = baseline.clone();
    let mut rows = Vec::new();
    for &i in &chosen {
        let gs = &baseline.scenarios[i];
        let scenario = crate::check::scenario_file(&a.baseline, gs)?
            .resolve()
            .map_err(|e| anyhow::anyhow!("scenario {}: {e}", gs.name))?;
        let t0 = crate::realtime::now();
        let out = crate::vtime::run(&scenario, |_| {}, || false)
            .with_context(|| format!("scenario {}", gs.name))?;
        let wall = t0.elapsed();
        if let Some(dir) = &a.out {
            write_outputs(&dir.join(&gs.name), &out)?;
        }
        let r = crate::check::compare(&baseline, gs, &out.report);
        let count = |v: Verdict| r.iter().filter(|x| x.verdict == v).count();
        let verdict = match (count(Verdict::Regressed), count(Verdict::New)) {
            (0, 0) if count(Verdict::Improved) > 0 => {
                format!("ok, {} improved", count(Verdict::Improved))
            }
            (0, 0) => "ok".to_string(),
            (0, n) => format!("{n} without baseline figures"),
            (n, _) => format!("{n} REGRESSED"),
        };
        println!(
            "  {:<16} {}  [{verdict}; {:.2} s]",
            gs.name,
            result_line(&out.report),
            wall.as_secs_f64()
        );
        updated.scenarios[i].expect = crate::check::figures(&out.report);
        rows.extend(r);
    }
    let wall = started.elapsed();
    let regressed = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regressed)
        .count();
    let improved = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Improved)
        .count();
    let missing = rows.iter().filter(|r| r.verdict == Verdict::New).count();
    if a.all || regressed + improved + missing > 0 {
        println!();
        print!("{}", crate::check::table(&rows, a.all));
        println!();
    }
    if a.update {
        updated.save(&a.baseline)?;
        let moved = rows.iter().filter(|r| r.baseline != Some(r.now)).count();
        println!(
            "rtq-sim check: updated {} ({moved} figure(s) changed) in {:.1} s; say why in the pull request",
            a.baseline.display(),
            wall.as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if improved > 0 {
        println!(
            "rtq-sim check: {improved} figure(s) better than the baseline by more than their tolerance: lock them in with `rtq-sim check --update`"
        );
    }
    if regressed + missing > 0 {
        if regressed > 0 {
            println!(
                "rtq-sim check: FAILED: {regressed} figure(s) worse than {} allows. If the change is intended, run `rtq-sim check --update` and say why in the pull request",
                a.baseline.display()
            );
        }
        if missing > 0 {
            println!(
                "rtq-sim check: FAILED: {missing} figure(s) have no baseline; run `rtq-sim check --update` to record them"
            );
        }
        return Ok(ExitCode::from(1));
    }
    println!(
        "rtq-sim check: passed ({} figures within tolerance) in {:.1} s",
        rows.len(),
        wall.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_interpolate_in_their_unit() {
        let a: Axis = "loss=0%..10%:6".parse().unwrap();
        assert_eq!(a.values, vec!["0%", "2%", "4%", "6%", "8%", "10%"]);
        let a: Axis = "jitter=0ms..40ms:5".parse().unwrap();
        assert_eq!(a.values, vec!["0ms", "10ms", "20ms", "30ms", "40ms"]);
        assert!(
            "loss=0%..10ms:3"
                .parse::<Axis>()
                .unwrap_err()
                .contains("same unit")
        );
        assert!(
            "loss=0%..200%:3"
                .parse::<Axis>()
                .unwrap_err()
                .contains("100%")
        );
        assert!(
            "loss"
                .parse::<Axis>()
                .unwrap_err()
                .contains("NAME=FROM..TO:STEPS")
        );
        assert!(
            "trace=1..2:2"
                .parse::<Axis>()
                .unwrap_err()
                .contains("cannot change")
        );
    }

    #[test]
    fn a_sweep_writes_its_table_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let axes: Vec<Axis> = vec!["loss=0%..10%:2".parse().unwrap()];
        let cell = |p: &str, p99| Cell {
            params: vec![p.into()],
            on_time_ratio: 0.99,
            e2e_p50_us: 1000,
            e2e_p99_us: p99,
            sent: 100,
            played: 99,
            late: 0,
            lost: 1,
        };
        write_sweep(dir.path(), &axes, &[cell("0%", 2000), cell("10%", 9000)]).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        assert!(csv.starts_with("loss,on_time_ratio"));
        assert!(csv.contains("10%,0.990000,1.000,9.000,100,99,0,1"));
        let svg = std::fs::read_to_string(dir.path().join("sweep.svg")).unwrap();
        assert_eq!(svg.matches("<path").count(), 1);
    }
}
