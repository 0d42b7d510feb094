//! The command line of `rtq-sim`: `run`, `proxy`, `sweep`, `check` and `scenarios`.
//!
//! Link flags use netem's vocabulary and apply to both directions; `--reverse-NAME VALUE` sets
//! NAME for the receiver → sender direction only (every link flag has a reverse form).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{BlackholeSpec, Dur, LinkSpec, LossKind, Pct, QueueSpec, Rate, ScheduleEntry};
use crate::link::dist::JitterDist;
use crate::link::rate::Aqm;
use crate::scenario::{ReceiverSpec, ScenarioFile, SourceName, SourceSpec};

/// Network simulator for rtq: impairs a link with seeded models (delay and jitter
/// distributions, loss models, duplication, reordering, corruption, rate limits with queues and
/// CoDel, measured cellular traces, outages, MTU) and reports what the frames went through.
#[derive(Debug, Parser)]
#[command(name = "rtq-sim", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Link flags apply to both directions; --reverse-NAME VALUE (e.g. --reverse-loss 0%,
--reverse-trace FILE) sets NAME for the receiver → sender direction only.

Examples:
  rtq-sim run                                             # the built-in default scenario
  rtq-sim run sim/scenarios/netem-40ms-1pct.toml --out out/
  rtq-sim run --delay 40ms --jitter 10ms --loss-model ge --loss 2% --burst 3 --seed 7
  rtq-sim proxy --listen 127.0.0.1:5000 --to 127.0.0.1:4433 --delay 30ms --loss 1%
  rtq-sim sweep --param loss=0%..10%:6 --param jitter=0ms..40ms:5 --duration 10s
  rtq-sim check                                           # the regression gate (sim/baseline.json)";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an rtq sender and receiver in this process through the simulated link.
    Run(RunArgs),
    /// Relay UDP between any two programs or hosts through the simulated link.
    Proxy(ProxyArgs),
    /// Run a grid of scenarios over one or two parameters and tabulate the outcome.
    Sweep(SweepArgs),
    /// Compare loss recovery on scenarios: each one in virtual time with no recovery, FEC
    /// only, retransmission only, both, both with --adapt, and the reliable-stream baseline
    /// (--transport stream); then both and the stream baseline at the smallest fixed playout
    /// delay that plays 99.9 % of frames; in one table.
    Compare(CompareArgs),
    /// Run the regression gate: fixed scenarios in virtual time against a committed baseline.
    /// Exits 0 when nothing regressed, 1 when something did, 2 on an error.
    Check(CheckArgs),
    /// List the scenarios shipped in sim/scenarios.
    Scenarios {
        /// Where the scenario files are.
        #[arg(long, default_value = "sim/scenarios")]
        dir: PathBuf,
    },
}

/// Link impairment flags (both directions).
#[derive(Debug, Clone, Default, Args)]
pub struct LinkArgs {
    /// Constant one-way delay.
    #[arg(long, value_name = "DURATION", help_heading = "Link")]
    pub delay: Option<Dur>,
    /// Delay variation J (netem's jitter): ±J uniform; standard deviation J normal; netem's
    /// pareto tables scaled by J.
    #[arg(long, value_name = "DURATION", help_heading = "Link")]
    pub jitter: Option<Dur>,
    /// Distribution of the delay variation: uniform, normal (default), pareto, paretonormal.
    #[arg(long, value_name = "DIST", help_heading = "Link")]
    pub jitter_dist: Option<JitterDist>,
    /// Correlation of successive delays (the distribution stays as configured).
    #[arg(long, value_name = "PERCENT", help_heading = "Link")]
    pub correlation: Option<Pct>,
    /// Never let jitter reorder packets (the default when the link has a bottleneck, as netem
    /// does when a rate is set; `--keep-order false` lets a rate-limited link reorder).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", help_heading = "Link")]
    pub keep_order: Option<bool>,
    /// Loss probability (the mean loss rate with --loss-model ge).
    #[arg(long, value_name = "PERCENT", help_heading = "Link")]
    pub loss: Option<Pct>,
    /// Loss model.
    #[arg(long, value_enum, help_heading = "Link")]
    pub loss_model: Option<LossKind>,
    /// Mean burst length of Gilbert–Elliott losses, packets.
    #[arg(long, value_name = "PACKETS", help_heading = "Link")]
    pub burst: Option<f64>,
    /// Gilbert–Elliott with netem's raw parameters p,r,1-h,1-k.
    #[arg(
        long,
        value_name = "P,R,1-H,1-K",
        value_delimiter = ',',
        help_heading = "Link"
    )]
    pub gemodel: Option<Vec<Pct>>,
    /// netem's 4-state model p13,p31,p32,p23,p14.
    #[arg(
        long,
        value_name = "P13,P31,P32,P23,P14",
        value_delimiter = ',',
        help_heading = "Link"
    )]
    pub state: Option<Vec<Pct>>,
    /// Duplication probability.
    #[arg(long, value_name = "PERCENT", help_heading = "Link")]
    pub dup: Option<Pct>,
    /// Probability that a packet skips the delay and overtakes others (netem reorder).
    #[arg(long, value_name = "PERCENT", help_heading = "Link")]
    pub reorder: Option<Pct>,
    /// Correlation of reordering decisions.
    #[arg(long, value_name = "PERCENT", help_heading = "Link")]
    pub reorder_correlation: Option<Pct>,
    /// netem gap: reordering applies to every N-th packet.
    #[arg(long, value_name = "N", help_heading = "Link")]
    pub reorder_gap: Option<u32>,
    /// Probability of flipping one bit of a packet.
    #[arg(long, value_name = "PERCENT", help_heading = "Link")]
    pub corrupt: Option<Pct>,
    /// Bottleneck rate, with serialization delay and a queue.
    #[arg(long, value_name = "RATE", help_heading = "Link")]
    pub rate: Option<Rate>,
    /// Bottleneck queue: packets (25), or bytes with a unit (64KiB) [default: 1000 packets].
    #[arg(long, value_name = "LIMIT", help_heading = "Link")]
    pub queue: Option<QueueSpec>,
    /// Queue management at the bottleneck: droptail (default) or codel.
    #[arg(long, value_name = "AQM", help_heading = "Link")]
    pub aqm: Option<Aqm>,
    /// Bottleneck capacity from a Mahimahi trace file.
    #[arg(long, value_name = "FILE", help_heading = "Link")]
    pub trace: Option<PathBuf>,
    /// Start this far into the trace.
    #[arg(long, value_name = "DURATION", help_heading = "Link")]
    pub trace_start: Option<Dur>,
    /// Bottleneck capacity of Poisson delivery opportunities at this mean rate.
    #[arg(long, value_name = "RATE", help_heading = "Link")]
    pub poisson: Option<Rate>,
    /// Drop datagrams larger than this (UDP payload bytes).
    #[arg(long, value_name = "BYTES", help_heading = "Link")]
    pub mtu: Option<usize>,
    /// Outage cycle UP/DOWN: works for UP, then drops everything for DOWN (e.g. 5s/2s).
    #[arg(long, value_name = "UP/DOWN", help_heading = "Link")]
    pub blackhole: Option<BlackholeSpec>,
    /// Change parameters at a time: TIME:[forward:|reverse:]PARAM=VALUE[,PARAM=VALUE]
    /// (e.g. 20s:loss=10%); repeatable.
    #[arg(long = "at", value_name = "TIME:CHANGES", help_heading = "Link")]
    pub at: Vec<ScheduleEntry>,
}

impl LinkArgs {
    /// The flags as a partial link specification.
    pub fn spec(&self) -> LinkSpec {
        LinkSpec {
            delay: self.delay,
            jitter: self.jitter,
            jitter_dist: self.jitter_dist,
            correlation: self.correlation,
            keep_order: self.keep_order,
            loss: self.loss,
            loss_model: self.loss_model,
            burst: self.burst,
            gemodel: self.gemodel.clone(),
            state: self.state.clone(),
            dup: self.dup,
            reorder: self.reorder,
            reorder_correlation: self.reorder_correlation,
            reorder_gap: self.reorder_gap,
            corrupt: self.corrupt,
            rate: self.rate,
            queue: self.queue,
            aqm: self.aqm,
            trace: self.trace.clone().map(Into::into),
            trace_start: self.trace_start,
            poisson: self.poisson,
            mtu: self.mtu,
            blackhole: self.blackhole,
        }
    }
}

/// Source and receiver flags (as `rtq-send` and `rtq-recv` have them).
#[derive(Debug, Clone, Default, Args)]
pub struct SessionArgs {
    /// Synthetic source.
    #[arg(long, value_enum, help_heading = "Session")]
    pub source: Option<SourceName>,
    /// Frames per second (video, fixed) [default: 30].
    #[arg(long, help_heading = "Session")]
    pub fps: Option<f64>,
    /// Video bit rate [default: 2M].
    #[arg(long, help_heading = "Session")]
    pub bitrate: Option<Rate>,
    /// A keyframe every N frames [default: 60].
    #[arg(long, value_name = "N", help_heading = "Session")]
    pub keyframe_interval: Option<u32>,
    /// Frame size of --source fixed, bytes [default: 1000].
    #[arg(long, value_name = "BYTES", help_heading = "Session")]
    pub frame_size: Option<usize>,
    /// Compression: 0-9 or off [default: 1].
    #[arg(long, value_name = "0-9|off", help_heading = "Session")]
    pub compress: Option<String>,
    /// Forward error correction: auto, auto:MAX-OVERHEAD, off, or a fixed overhead such as
    /// 25% [default: auto].
    #[arg(long, value_name = "auto|off|PERCENT", help_heading = "Session")]
    pub fec: Option<String>,
    /// Retransmission of lost fragments within their deadline, at both ends: on or off
    /// [default: on].
    #[arg(long, value_name = "on|off", help_heading = "Session")]
    pub nack: Option<String>,
    /// Pacing of the sender's datagrams at 1.25 × the rate the receiver measures the path
    /// delivering bursts at: on or off [default: on].
    #[arg(long, value_name = "on|off", help_heading = "Session")]
    pub pacing: Option<String>,
    /// Rate adaptation: the video source shrinks its frames when the path does not carry
    /// its bit rate.
    #[arg(long, help_heading = "Session")]
    pub adapt: bool,
    /// Sender deadline [default: 500ms].
    #[arg(long, value_name = "DURATION", help_heading = "Session")]
    pub deadline: Option<Dur>,
    /// Jitter buffer: adaptive or fixed:DURATION [default: adaptive].
    #[arg(long, value_name = "MODE", help_heading = "Session")]
    pub jitter_buffer: Option<String>,
    /// Longest playout delay [default: 2s].
    #[arg(long, value_name = "DURATION", help_heading = "Session")]
    pub max_delay: Option<Dur>,
    /// How long the sender streams [default: the scenario's, or 60s].
    #[arg(long, value_name = "DURATION", help_heading = "Session")]
    pub duration: Option<Dur>,
    /// Seed of every random draw (printed always) [default: the scenario's, or 1].
    #[arg(long, help_heading = "Session")]
    pub seed: Option<u64>,
    /// Congestion controller of both ends: bbr, cubic, newreno [default: bbr].
    #[arg(long, value_name = "CC", help_heading = "Session")]
    pub congestion: Option<String>,
    /// How frames travel: datagram (rtq: QUIC datagrams, FEC, retransmission within the
    /// deadline) or stream (each frame on its own QUIC stream, reset at the deadline: the
    /// reliable baseline; --fec and --nack do not apply) [default: datagram].
    #[arg(long, value_name = "datagram|stream", help_heading = "Session")]
    pub transport: Option<String>,
}

/// `rtq-sim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A scenario file (TOML); flags override it. Without one: the built-in default scenario.
    pub scenario: Option<PathBuf>,
    /// Where report.json, the .hgrm files, delay.svg and timeline.svg go.
    #[arg(long, default_value = "sim-out", value_name = "DIR")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run in real time (quinn over simulated sockets, on the wall clock) instead of virtual
    /// time. Virtual time is exact, repeatable and hundreds of times faster; real time
    /// also shows scheduling and CPU effects.
    #[arg(long)]
    pub realtime: bool,
    /// Link flags.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Session flags.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `rtq-sim check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The baseline: the scenarios, their figures and the tolerances.
    #[arg(long, default_value = "sim/baseline.json", value_name = "PATH")]
    pub baseline: PathBuf,
    /// Rewrite the baseline's figures with this run's (keeps scenarios and tolerances). Say
    /// why in the pull request that commits the change.
    #[arg(long)]
    pub update: bool,
    /// Only these scenarios (by name; repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Also write each scenario's report, histograms and plot to DIR/NAME/.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print every figure, not only those that moved beyond their tolerance.
    #[arg(long)]
    pub all: bool,
}

/// `rtq-sim compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Scenario files to compare on.
    #[arg(required = true, value_name = "SCENARIO")]
    pub scenarios: Vec<PathBuf>,
    /// Write the table as JSON (`{"rows": [...]}`) to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// `rtq-sim proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address clients send to.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Address datagrams are relayed to.
    #[arg(long, value_name = "ADDR:PORT")]
    pub to: SocketAddr,
    /// Take the link from a scenario file (flags override it).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Stop after this long [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur>,
    /// Seed [default: the scenario's, or 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report here on exit.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// No status line every second.
    #[arg(long, short)]
    pub quiet: bool,
    /// Link flags.
    #[command(flatten)]
    pub link: LinkArgs,
}

/// `rtq-sim sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// A scenario file the grid varies (flags override it).
    pub scenario: Option<PathBuf>,
    /// A swept parameter NAME=FROM..TO:STEPS (e.g. loss=0%..10%:6); once or twice.
    #[arg(long, value_name = "NAME=FROM..TO:STEPS", required = true)]
    pub param: Vec<String>,
    /// Where sweep.csv, sweep.json and sweep.svg go.
    #[arg(long, default_value = "sweep-out", value_name = "DIR")]
    pub out: PathBuf,
    /// Run each cell in real time instead of virtual time.
    #[arg(long)]
    pub realtime: bool,
    /// Link flags.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Session flags.
    #[command(flatten)]
    pub session: SessionArgs,
}

impl SessionArgs {
    /// The flags as a partial scenario.
    pub fn scenario(&self, link: &LinkArgs, reverse: &LinkSpec) -> ScenarioFile {
        ScenarioFile {
            name: None,
            description: None,
            seed: self.seed,
            duration: self.duration,
            source: SourceSpec {
                source: self.source,
                fps: self.fps,
                bitrate: self.bitrate,
                keyframe_interval: self.keyframe_interval,
                frame_size: self.frame_size,
                compress: self.compress.clone(),
                fec: self.fec.clone(),
                nack: self.nack.clone(),
                pacing: self.pacing.clone(),
                adapt: self.adapt.then_some(true),
                deadline: self.deadline,
            },
            receiver: ReceiverSpec {
                jitter: self.jitter_buffer.clone(),
                max_delay: self.max_delay,
            },
            transport: crate::scenario::TransportSpec {
                congestion: self.congestion.clone(),
                frames: self.transport.clone(),
            },
            link: link.spec(),
            forward: LinkSpec::default(),
            reverse: reverse.clone(),
            schedule: link.at.clone(),
        }
    }
}

/// The built-in default scenario: 30 fps, 2 Mbit/s video for 60 s over a 20 Mbit/s path with
/// 25 ms one-way delay, 5 ms of normal jitter, 1 % loss and a 100-packet queue, both ways.
pub fn default_scenario() -> ScenarioFile {
    let ms = |v| Some(Dur(Duration::from_millis(v)));
    ScenarioFile {
        name: Some("default".into()),
        description: Some(
            "30 fps 2 Mbit/s video over a 20 Mbit/s path, 25 ms ± 5 ms one way, 1 % loss".into(),
        ),
        seed: Some(1),
        duration: Some(Dur(Duration::from_secs(60))),
        link: LinkSpec {
            delay: ms(25),
            jitter: ms(5),
            loss: Some(Pct(0.01)),
            rate: Some(Rate(20_000_000)),
            queue: Some(QueueSpec(crate::link::rate::QueueLimit::Packets(100))),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Takes `--reverse-NAME VALUE` (and `--reverse-NAME=VALUE`) out of the arguments.
pub fn split_reverse(args: Vec<OsString>) -> Result<(Vec<OsString>, LinkSpec), String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut reverse = LinkSpec::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.to_str().and_then(|s| s.strip_prefix("--reverse-")) else {
            rest.push(a);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None if flag == "keep-order" => (flag.to_string(), "true".to_string()),
            None => {
                let v = it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("--reverse-{flag} needs a value"))?;
                (flag.to_string(), v)
            }
        };
        reverse.set_any(&name, &value)?;
    }
    Ok((rest, reverse))
}

/// Entry point of `rtq-sim`.
pub fn main() -> ExitCode {
    let (args, reverse) = match split_reverse(std::env::args_os().collect()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rtq-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    rtq::cli::init_logging();
    match dispatch(cli, &reverse) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtq-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli, reverse: &LinkSpec) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => crate::commands::run(a, reverse),
        Command::Proxy(a) => crate::commands::proxy(a, reverse),
        Command::Sweep(a) => crate::commands::sweep(a, reverse),
        Command::Compare(a) => crate::commands::compare(&a),
        Command::Check(a) => Ok(crate::commands::check(&a).unwrap_or_else(|e| {
            eprintln!("rtq-sim check: {e:#}");
            ExitCode::from(2)
        })),
        Command::Scenarios { dir } => {
            let list = crate::scenario::shipped(&dir);
            if list.is_empty() {
                anyhow::bail!(
                    "no scenario files in {} (run from the repository root, or pass --dir)",
                    dir.display()
                );
            }
            for (name, path) in list {
                let f = ScenarioFile::load(&path).map_err(anyhow::Error::msg)?;
                println!("{name:<28} {}", f.description.unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads an optional scenario file (the default scenario without one) and puts the flags on top.
pub fn scenario_from(file: Option<&PathBuf>, flags: &ScenarioFile) -> anyhow::Result<ScenarioFile> {
    let base = match file {
        Some(p) => ScenarioFile::load(p)
            .map_err(anyhow::Error::msg)
            .with_context(|| "loading the scenario")?,
        None => default_scenario(),
    };
    Ok(base.merged(flags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reverse_flags_are_split_out() {
        let args: Vec<OsString> = [
            "rtq-sim",
            "run",
            "--loss",
            "2%",
            "--reverse-loss",
            "0%",
            "--reverse-trace=x.up",
            "--reverse-keep-order",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (rest, rev) = split_reverse(args).unwrap();
        assert_eq!(rest.len(), 4);
        assert_eq!(rev.loss, Some(Pct(0.0)));
        assert_eq!(rev.trace, Some(PathBuf::from("x.up").into()));
        assert_eq!(rev.keep_order, Some(true));
        let bad: Vec<OsString> = ["rtq-sim", "--reverse-loss"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(split_reverse(bad).unwrap_err().contains("needs a value"));
        let bad: Vec<OsString> = ["rtq-sim", "--reverse-bogus", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(split_reverse(bad).unwrap_err().contains("bogus"));
    }

    #[test]
    fn bad_values_name_the_range() {
        let e = Cli::try_parse_from(["rtq-sim", "run", "--loss", "150%"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 0% and 100%"), "{e}");
        let e = Cli::try_parse_from(["rtq-sim", "run", "--delay=-5ms"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("e.g. 40ms"), "{e}");
    }

    #[test]
    fn the_default_scenario_resolves() {
        let s = default_scenario().resolve().unwrap();
        assert_eq!(s.name, "default");
        assert!(s.forward.bottleneck.is_some());
    }
}
