//! `rtq-sim run`: an rtq sender and receiver in this process, joined by the scenario's paths,
//! and the report of what the frames went through.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use rtq::jitter::JitterConfig;
use rtq::net::Shutdown;
use rtq::net::receiver::{ClockChoice, Receiver, RecvOptions};
use rtq::net::sender::{SendOptions, SourceSpec};
use rtq::net::tls::Trust;
use rtq::net::transport::TransportOptions;
use rtq::session::{ReceiverConfig, SenderConfig};
use rtq::stats::report::SessionReport;
use rtq::stats::{Delays, LatencyHistogram};
use serde::Serialize;

use crate::config::Direction;
use crate::link::PathReport;
use crate::realtime::now;
use crate::scenario::Scenario;
use crate::socket::{RECEIVER_ADDR, SimNet};

/// What `report.json` holds. Keys are stable.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Every resolved parameter.
    pub scenario: Scenario,
    /// The seed (also in `scenario`; here for scripts).
    pub seed: u64,
    /// `realtime` (wall clock) or `virtual`.
    pub clock: &'static str,
    /// The sender's session report.
    pub sender: SessionReport,
    /// The receiver's session report.
    pub receiver: SessionReport,
    /// What the link did.
    pub link: LinkReport,
    /// What happened in each second of the run, in order (virtual-time runs; empty for
    /// `--realtime`, whose shells keep no per-second counts).
    pub timeline: Vec<TimelineEntry>,
    /// Receiver sessions the run took: 1, or more when the sender reconnected after its
    /// connection was lost (`receiver` then adds up their frame and byte counts and delays).
    pub receiver_sessions: u64,
}

/// One second of a run: frames the source gave in it, and frames that played, played late or
/// were lost in it (when the receiver decided), with the end-to-end delay of those that played.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Start of the second, seconds since the run began.
    pub t_s: u64,
    /// Frames the source gave the sender.
    pub sent: u64,
    /// Frames played on time.
    pub played: u64,
    /// Frames that arrived after their playout time.
    pub late: u64,
    /// Frames given up as lost.
    pub lost: u64,
    /// Median end-to-end delay of the frames played (null when none played).
    pub e2e_p50_us: Option<u64>,
    /// 99th percentile of the same.
    pub e2e_p99_us: Option<u64>,
    /// The most memory both sessions held at once in the second: bytes of frames, datagrams
    /// and messages buffered ([`rtq::session::Footprint`]).
    pub held_bytes: u64,
    /// The most entries of their maps and queues at once in the second.
    pub held_entries: u64,
}

/// Both directions of the link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// Sender → receiver.
    pub forward: PathReport,
    /// Receiver → sender.
    pub reverse: PathReport,
}

/// A finished run: its report and the receiver's delay histograms.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report.
    pub report: RunReport,
    /// The receiver's three delays.
    pub delays: Delays,
    /// The sender's capture → on-the-wire delays.
    pub send_delay: LatencyHistogram,
}

impl RunReport {
    /// Frames played on time over frames sent.
    pub fn on_time_ratio(&self) -> f64 {
        let sent = self.sender.frames.sent.max(1);
        self.receiver.frames.played as f64 / sent as f64
    }
}

/// The transport options of both ends of a simulated run.
pub(crate) fn transport_options(scenario: &Scenario) -> TransportOptions {
    TransportOptions {
        congestion: scenario.congestion,
        // Seeded in both clocks: in real time the host's timing still varies, but not this.
        seed: Some(crate::vtime::determinism::congestion_seed(scenario.seed)),
        ..Default::default()
    }
}

/// The receiver of a simulated run: one session, frames discarded, and one process so one
/// clock (the offset is still estimated and reported).
pub(crate) fn receiver_options(scenario: &Scenario) -> RecvOptions {
    RecvOptions {
        listen: RECEIVER_ADDR,
        transport: transport_options(scenario),
        session: ReceiverConfig {
            jitter: JitterConfig {
                mode: scenario.jitter,
                max_delay: scenario.max_delay,
                ..Default::default()
            },
            clock: rtq::clock::ClockMode::System,
            nack: scenario.nack,
            ..Default::default()
        },
        clock: ClockChoice::System,
        output: None,
        once: true,
        max_sessions: 1,
        status: false,
        summaries: false,
    }
}

/// The sender's session settings of a simulated run.
pub(crate) fn sender_config(scenario: &Scenario) -> SenderConfig {
    SenderConfig {
        transport: scenario.transport,
        compress: scenario.compress,
        fec: scenario.fec,
        nack: scenario.nack,
        pacing: scenario.pacing,
        adapt: match scenario.source {
            rtq::source::SourceKind::Video { bitrate, .. } if scenario.adapt => Some(bitrate),
            _ => None,
        },
        deadline: scenario.deadline,
        ..Default::default()
    }
}

/// Runs `scenario` in real time; `progress(elapsed)` is called about every 100 ms. Setting
/// `shutdown` ends the run early, cleanly (both sessions report).
pub async fn realtime(
    scenario: &Scenario,
    shutdown: Shutdown,
    mut progress: impl FnMut(Duration),
) -> anyhow::Result<RunOutcome> {
    let start = now();
    let (fs, rs) = scenario.path_seeds();
    let net = SimNet::new(
        (
            scenario.forward.build(fs),
            scenario.steps(Direction::Forward, start),
        ),
        (
            scenario.reverse.build(rs),
            scenario.steps(Direction::Reverse, start),
        ),
    )?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let identity = crate::vtime::determinism::fixed_identity()?;
    let fingerprint = identity.fingerprint();
    let transport = transport_options(scenario);
    let ropts = receiver_options(scenario);
    let server_cfg = Receiver::server_config(&ropts, identity)?;
    let rx_ep = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server_cfg),
        net.receiver.clone(),
        runtime.clone(),
    )?;
    let tx_ep = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        net.sender.clone(),
        runtime,
    )?;
    let receiver = Receiver::with_endpoint(rx_ep, ropts, fingerprint);
    let server = tokio::spawn(receiver.run(shutdown.clone()));
    let sopts = SendOptions {
        connect: RECEIVER_ADDR.to_string(),
        server_name: Some("localhost".into()),
        trust: fingerprint.map_or(Trust::Insecure, Trust::Pin),
        transport,
        session: sender_config(scenario),
        source: SourceSpec::Synthetic(scenario.source, scenario.seed),
        duration: Some(scenario.duration),
        connect_timeout: Duration::from_secs(10),
        reconnect: Default::default(),
        status: false,
    };
    let sender = tokio::spawn(rtq::net::sender::run_on(
        tx_ep,
        RECEIVER_ADDR,
        sopts,
        shutdown,
    ));
    tokio::pin!(sender);
    let sent = loop {
        tokio::select! {
            r = &mut sender => break r??,
            () = tokio::time::sleep(Duration::from_millis(100)) => progress(now().saturating_duration_since(start)),
        }
    };
    let mut outcomes = server.await??;
    let rx = outcomes.pop().ok_or_else(|| {
        anyhow::anyhow!(
            "the receiver saw no session (the handshake never completed through this link)"
        )
    })?;
    let (forward, reverse, _) = net.reports();
    Ok(RunOutcome {
        report: RunReport {
            scenario: scenario.clone(),
            seed: scenario.seed,
            clock: "realtime",
            sender: sent.report,
            receiver: rx.report,
            link: LinkReport { forward, reverse },
            timeline: Vec::new(),
            receiver_sessions: 1,
        },
        delays: rx.delays,
        send_delay: sent.send_delay,
    })
}

/// Writes `report.json`, the `.hgrm` files, `delay.svg` and (with a timeline) `timeline.svg`
/// into `dir`.
pub fn write_outputs(
    dir: &FsPath,
    outcome: &RunOutcome,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let report = dir.join("report.json");
    let text = serde_json::to_string_pretty(&outcome.report)? + "\n";
    std::fs::write(&report, text).with_context(|| format!("writing {}", report.display()))?;
    written.push(report);
    let d = &outcome.delays;
    for (name, h) in [
        ("network", &d.network),
        ("jitter_buffer", &d.jitter_buffer),
        ("end_to_end", &d.end_to_end),
    ] {
        let prefix = dir.join("delay").to_string_lossy().into_owned();
        written.push(rtq::cli::write_hgrm(&prefix, name, h)?);
    }
    let svg = crate::plot::percentiles(
        &format!(
            "{} — delay percentiles (seed {})",
            outcome.report.scenario.name, outcome.report.seed
        ),
        &[
            ("end-to-end", &d.end_to_end),
            ("network", &d.network),
            ("jitter buffer", &d.jitter_buffer),
        ],
    );
    let path = dir.join("delay.svg");
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    if !outcome.report.timeline.is_empty() {
        let svg = crate::plot::timeline(
            &format!(
                "{} — each second (seed {})",
                outcome.report.scenario.name, outcome.report.seed
            ),
            &outcome.report.timeline,
        );
        let path = dir.join("timeline.svg");
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
