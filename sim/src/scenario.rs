//! Scenarios: a link both ways, a source, a jitter buffer, a duration and a seed, as a TOML
//! file (`sim/scenarios/*.toml`) or flags; and their resolution into what a run needs.
//!
//! ```toml
//! # The QUIC interop runner's standard path.
//! name = "interop"
//! seed = 1
//! duration = "30s"
//!
//! [source]          # rtq-send's source flags
//! source = "video"  # video | audio | fixed
//! fps = 30
//! bitrate = "2M"
//!
//! [receiver]        # rtq-recv's jitter-buffer flags
//! jitter = "adaptive"
//!
//! [link]            # both directions (flags of rtq-sim, `_` for `-`)
//! delay = "15ms"
//! rate = "10Mbit"
//! queue = 25
//!
//! [reverse]         # the receiver → sender direction differs
//! rate = "2Mbit"
//!
//! [[schedule]]      # a change at a time
//! at = "20s"
//! loss = "10%"
//! ```
//!
//! Unknown or ill-typed fields are errors that name the field and the line. Trace paths in a
//! file are relative to the file.

use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use rtq::compress::CompressLevel;
use rtq::fec::FecMode;
use rtq::jitter::JitterMode;
use rtq::net::transport::Congestion;
use rtq::session::FrameTransport;
use rtq::source::SourceKind;
use serde::{Deserialize, Serialize};

use crate::config::{Direction, Dur, LinkConfig, LinkSpec, Rate, ScheduleEntry, TraceCache};

/// A scenario as written: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name, used in reports.
    pub name: Option<String>,
    /// What the scenario models.
    pub description: Option<String>,
    /// Seed of every random draw.
    pub seed: Option<u64>,
    /// How long the sender streams.
    pub duration: Option<Dur>,
    /// The source.
    #[serde(default)]
    pub source: SourceSpec,
    /// The receiver's jitter buffer.
    #[serde(default)]
    pub receiver: ReceiverSpec,
    /// QUIC settings of both ends.
    #[serde(default)]
    pub transport: TransportSpec,
    /// Both directions.
    #[serde(default)]
    pub link: LinkSpec,
    /// Sender → receiver only.
    #[serde(default)]
    pub forward: LinkSpec,
    /// Receiver → sender only.
    #[serde(default)]
    pub reverse: LinkSpec,
    /// Parameter changes at times.
    #[serde(default)]
    pub schedule: Vec<ScheduleEntry>,
}

/// The source, as `rtq-send`'s flags give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `video`, `audio` or `fixed`.
    pub source: Option<SourceName>,
    /// Frames per second.
    pub fps: Option<f64>,
    /// Video bit rate.
    pub bitrate: Option<Rate>,
    /// A keyframe every this many frames.
    pub keyframe_interval: Option<u32>,
    /// Frame size of the fixed source, bytes.
    pub frame_size: Option<usize>,
    /// Compression level (`0`-`9` or `off`).
    pub compress: Option<String>,
    /// Forward error correction (`auto`, `auto:MAX`, `off` or a fixed overhead like `25%`).
    pub fec: Option<String>,
    /// Retransmission of lost fragments (`on` or `off`), at both ends.
    pub nack: Option<String>,
    /// Pacing of the sender's datagrams at the burst rate the receiver measures (`on` or
    /// `off`).
    pub pacing: Option<String>,
    /// Rate adaptation of the video source.
    pub adapt: Option<bool>,
    /// Sender deadline.
    pub deadline: Option<Dur>,
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceName {
    /// Video-like frames.
    Video,
    /// Audio-like frames.
    Audio,
    /// Fixed-size frames.
    Fixed,
}

/// QUIC settings, as the binaries' flags give them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSpec {
    /// Congestion controller: `cubic`, `bbr` or `newreno`.
    pub congestion: Option<String>,
    /// How frames travel: `datagram` (rtq) or `stream` (one QUIC stream per frame, the
    /// reliable baseline).
    pub frames: Option<String>,
}

/// The receiver, as `rtq-recv`'s flags give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    /// `adaptive` or `fixed:DURATION`.
    pub jitter: Option<String>,
    /// Longest playout delay.
    pub max_delay: Option<Dur>,
}

impl SourceSpec {
    /// `other`'s fields where set, ours elsewhere.
    #[must_use]
    pub fn merged(&self, other: &SourceSpec) -> SourceSpec {
        SourceSpec {
            source: other.source.or(self.source),
            fps: other.fps.or(self.fps),
            bitrate: other.bitrate.or(self.bitrate),
            keyframe_interval: other.keyframe_interval.or(self.keyframe_interval),
            frame_size: other.frame_size.or(self.frame_size),
            compress: other.compress.clone().or_else(|| self.compress.clone()),
            fec: other.fec.clone().or_else(|| self.fec.clone()),
            nack: other.nack.clone().or_else(|| self.nack.clone()),
            pacing: other.pacing.clone().or_else(|| self.pacing.clone()),
            adapt: other.adapt.or(self.adapt),
            deadline: other.deadline.or(self.deadline),
        }
    }
}

impl ReceiverSpec {
    /// `other`'s fields where set, ours elsewhere.
    #[must_use]
    pub fn merged(&self, other: &ReceiverSpec) -> ReceiverSpec {
        ReceiverSpec {
            jitter: other.jitter.clone().or_else(|| self.jitter.clone()),
            max_delay: other.max_delay.or(self.max_delay),
        }
    }
}

impl ScenarioFile {
    /// Reads a scenario file; errors name the file, the line and the field.
    pub fn load(path: &FsPath) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
        let mut s: ScenarioFile =
            toml::from_str(&text).map_err(|e| format!("scenario {}: {e}", path.display()))?;
        // Trace paths are relative to the file.
        let dir = path.parent().unwrap_or(FsPath::new("."));
        for spec in [&mut s.link, &mut s.forward, &mut s.reverse] {
            if let Some(t) = spec.trace.as_mut()
                && t.written.is_relative()
            {
                t.resolved = dir.join(&t.written);
            }
        }
        Ok(s)
    }

    /// This scenario with `over`'s settings on top (flags over a file).
    #[must_use]
    pub fn merged(&self, over: &ScenarioFile) -> ScenarioFile {
        let mut schedule = self.schedule.clone();
        schedule.extend(over.schedule.iter().cloned());
        ScenarioFile {
            name: over.name.clone().or_else(|| self.name.clone()),
            description: over
                .description
                .clone()
                .or_else(|| self.description.clone()),
            seed: over.seed.or(self.seed),
            duration: over.duration.or(self.duration),
            source: self.source.merged(&over.source),
            receiver: self.receiver.merged(&over.receiver),
            transport: TransportSpec {
                congestion: over
                    .transport
                    .congestion
                    .clone()
                    .or_else(|| self.transport.congestion.clone()),
                frames: over
                    .transport
                    .frames
                    .clone()
                    .or_else(|| self.transport.frames.clone()),
            },
            link: self.link.merged(&over.link),
            forward: self.forward.merged(&over.forward),
            reverse: self.reverse.merged(&over.reverse),
            schedule,
        }
    }

    /// Resolves and checks everything a run needs.
    pub fn resolve(&self) -> Result<Scenario, String> {
        let mut traces = TraceCache::default();
        let fwd_spec = self.link.merged(&self.forward);
        let rev_spec = self.link.merged(&self.reverse);
        let forward = fwd_spec
            .resolve(&mut traces)
            .map_err(|e| format!("forward link: {e}"))?;
        let reverse = rev_spec
            .resolve(&mut traces)
            .map_err(|e| format!("reverse link: {e}"))?;
        let mut schedule = self.schedule.clone();
        schedule.sort_by_key(|e| e.at);
        // Each change applies on top of the parameters in force at its time.
        let (mut f, mut r) = (fwd_spec, rev_spec);
        let mut steps = Vec::new();
        for e in &schedule {
            let (fwd, rev) = match e.direction {
                Direction::Both => (true, true),
                Direction::Forward => (true, false),
                Direction::Reverse => (false, true),
            };
            let at = rtq::units::format_duration(e.at.0);
            let check_kind = |before: &LinkConfig, after: &LinkConfig| {
                let kind = |c: &LinkConfig| c.bottleneck.as_ref().map(|b| b.kind.clone());
                if kind(before) != kind(after) {
                    Err(format!(
                        "schedule at {at}: the bottleneck's kind cannot change during a run"
                    ))
                } else {
                    Ok(())
                }
            };
            if fwd {
                f = f.merged(&e.change);
                let c = f
                    .resolve(&mut traces)
                    .map_err(|err| format!("schedule at {at}, forward: {err}"))?;
                check_kind(&forward, &c)?;
                steps.push(Step {
                    at: e.at.0,
                    direction: Direction::Forward,
                    config: c,
                });
            }
            if rev {
                r = r.merged(&e.change);
                let c = r
                    .resolve(&mut traces)
                    .map_err(|err| format!("schedule at {at}, reverse: {err}"))?;
                check_kind(&reverse, &c)?;
                steps.push(Step {
                    at: e.at.0,
                    direction: Direction::Reverse,
                    config: c,
                });
            }
        }
        let s = &self.source;
        let fps = s.fps.unwrap_or(30.0);
        let source = match s.source.unwrap_or(SourceName::Video) {
            SourceName::Video => SourceKind::Video {
                fps,
                bitrate: s.bitrate.map_or(2_000_000, |r| r.0),
                keyframe_interval: s.keyframe_interval.unwrap_or(60),
            },
            SourceName::Audio => SourceKind::Audio,
            SourceName::Fixed => SourceKind::Fixed {
                fps,
                frame_size: s.frame_size.unwrap_or(1000),
            },
        };
        source.validate().map_err(|e| format!("source: {e}"))?;
        let compress: CompressLevel = s
            .compress
            .as_deref()
            .unwrap_or("1")
            .parse()
            .map_err(|e| format!("source: {e}"))?;
        let fec: FecMode = s
            .fec
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .map_err(|e| format!("source: fec: {e}"))?;
        let nack = rtq::cli::on_off_arg(s.nack.as_deref().unwrap_or("on"))
            .map_err(|e| format!("source: nack {e}"))?;
        let pacing = rtq::cli::on_off_arg(s.pacing.as_deref().unwrap_or("on"))
            .map_err(|e| format!("source: pacing {e}"))?;
        let jitter: JitterMode = self
            .receiver
            .jitter
            .as_deref()
            .unwrap_or("adaptive")
            .parse()
            .map_err(|e| format!("receiver: {e}"))?;
        let congestion = match self.transport.congestion.as_deref().unwrap_or("bbr") {
            "cubic" => Congestion::Cubic,
            "bbr" => Congestion::Bbr,
            "newreno" => Congestion::Newreno,
            other => {
                return Err(format!(
                    "transport: congestion `{other}`: cubic, bbr or newreno"
                ));
            }
        };
        let transport = match self.transport.frames.as_deref().unwrap_or("datagram") {
            "datagram" => FrameTransport::Datagram,
            "stream" => FrameTransport::Stream,
            other => {
                return Err(format!("transport: frames `{other}`: datagram or stream"));
            }
        };
        let duration = self.duration.map_or(Duration::from_secs(30), |d| d.0);
        if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
            return Err("duration: between 1ms and 24h".into());
        }
        Ok(Scenario {
            name: self.name.clone().unwrap_or_else(|| "custom".into()),
            description: self.description.clone().unwrap_or_default(),
            seed: self.seed.unwrap_or(1),
            duration,
            source,
            compress,
            fec,
            nack,
            pacing,
            adapt: match (s.adapt.unwrap_or(false), &source) {
                (false, _) => false,
                (true, SourceKind::Video { .. }) => true,
                (true, _) => return Err("source: adapt needs the video source".into()),
            },
            deadline: s.deadline.map_or(Duration::from_millis(500), |d| d.0),
            jitter,
            max_delay: self
                .receiver
                .max_delay
                .map_or(Duration::from_secs(2), |d| d.0),
            congestion,
            transport,
            forward,
            reverse,
            schedule: steps,
        })
    }
}

/// A parameter change of one direction at a time into the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// When, from the start of the run.
    #[serde(serialize_with = "ser_dur")]
    pub at: Duration,
    /// Which direction.
    pub direction: Direction,
    /// The parameters from then on.
    pub config: LinkConfig,
}

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rtq::units::format_duration(*d))
}

/// A resolved scenario: every parameter of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Seed of every random draw.
    pub seed: u64,
    /// How long the sender streams.
    #[serde(serialize_with = "ser_dur")]
    pub duration: Duration,
    /// The source.
    #[serde(serialize_with = "ser_source")]
    pub source: SourceKind,
    /// Compression.
    #[serde(serialize_with = "ser_display")]
    pub compress: CompressLevel,
    /// Forward error correction.
    #[serde(serialize_with = "ser_display")]
    pub fec: FecMode,
    /// Retransmission of lost fragments.
    pub nack: bool,
    /// Pacing at the measured burst rate.
    pub pacing: bool,
    /// Rate adaptation of the video source.
    pub adapt: bool,
    /// Sender deadline.
    #[serde(serialize_with = "ser_dur")]
    pub deadline: Duration,
    /// Jitter-buffer mode.
    #[serde(serialize_with = "ser_display")]
    pub jitter: JitterMode,
    /// Longest playout delay.
    #[serde(serialize_with = "ser_dur")]
    pub max_delay: Duration,
    /// Congestion controller.
    #[serde(serialize_with = "ser_display")]
    pub congestion: Congestion,
    /// How frames travel.
    #[serde(serialize_with = "ser_display")]
    pub transport: FrameTransport,
    /// Sender → receiver.
    pub forward: LinkConfig,
    /// Receiver → sender.
    pub reverse: LinkConfig,
    /// Changes during the run.
    pub schedule: Vec<Step>,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

fn ser_source<S: serde::Serializer>(k: &SourceKind, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    match *k {
        SourceKind::Video {
            fps,
            bitrate,
            keyframe_interval,
        } => {
            m.serialize_entry("source", "video")?;
            m.serialize_entry("fps", &fps)?;
            m.serialize_entry("bitrate", &bitrate)?;
            m.serialize_entry("keyframe_interval", &keyframe_interval)?;
        }
        SourceKind::Audio => m.serialize_entry("source", "audio")?,
        SourceKind::Fixed { fps, frame_size } => {
            m.serialize_entry("source", "fixed")?;
            m.serialize_entry("fps", &fps)?;
            m.serialize_entry("frame_size", &frame_size)?;
        }
    }
    m.end()
}

impl Scenario {
    /// The schedule of one direction as instants from `start`.
    pub fn steps(&self, direction: Direction, start: Instant) -> Vec<(Instant, LinkConfig)> {
        self.schedule
            .iter()
            .filter(|s| s.direction == direction)
            .map(|s| (start + s.at, s.config.clone()))
            .collect()
    }

    /// Seeds of the two directions (distinct, both derived from the scenario's seed).
    pub fn path_seeds(&self) -> (u64, u64) {
        let mix = |x: u64| {
            // splitmix64: decorrelates the two directions' streams.
            let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (
            mix(self.seed.wrapping_mul(2)),
            mix(self.seed.wrapping_mul(2) + 1),
        )
    }
}

/// The scenario files shipped in `sim/scenarios` (name, path), sorted by name.
pub fn shipped(dir: &FsPath) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_file_resolves_with_overrides() {
        let text = r#"
            name = "t"
            seed = 7
            duration = "10s"
            [source]
            source = "fixed"
            frame_size = 500
            fps = 50
            [link]
            delay = "15ms"
            rate = "10Mbit"
            queue = 25
            [reverse]
            rate = "1Mbit"
            [[schedule]]
            at = "5s"
            loss = "10%"
            direction = "forward"
        "#;
        let f: ScenarioFile = toml::from_str(text).unwrap();
        let s = f.resolve().unwrap();
        assert_eq!(
            (s.name.as_str(), s.seed, s.duration),
            ("t", 7, Duration::from_secs(10))
        );
        assert_eq!(s.forward.delay.0, Duration::from_millis(15));
        assert_eq!(s.reverse.delay.0, Duration::from_millis(15));
        assert_eq!(s.forward.bottleneck.as_ref().unwrap().rate.0, 10_000_000);
        assert_eq!(s.reverse.bottleneck.as_ref().unwrap().rate.0, 1_000_000);
        assert_eq!(s.schedule.len(), 1);
        assert!((s.schedule[0].config.loss.mean.0 - 0.1).abs() < 1e-12);
        assert_eq!(
            s.schedule[0].config.delay.0,
            Duration::from_millis(15),
            "changes stack on the base"
        );
        assert!(matches!(
            s.source,
            SourceKind::Fixed {
                frame_size: 500,
                ..
            }
        ));
    }

    #[test]
    fn unknown_and_ill_typed_fields_name_the_field_and_line() {
        let e = toml::from_str::<ScenarioFile>("seed = 1\n[link]\ndelya = \"15ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("delya") && e.contains("line 3"), "{e}");
        let e = toml::from_str::<ScenarioFile>("[link]\n\nloss = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("percentage"), "{e}");
        let e = toml::from_str::<ScenarioFile>("seed = \"one\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn impossible_values_are_refused_with_the_range() {
        let e = toml::from_str::<ScenarioFile>("[link]\nloss = \"150%\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 0% and 100%"), "{e}");
        let f: ScenarioFile = toml::from_str("duration = \"0s\"\n").unwrap();
        assert!(f.resolve().unwrap_err().contains("duration"));
        let e = toml::from_str::<ScenarioFile>("[link]\ndelay = \"-5ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("e.g. 40ms"), "{e}");
    }

    #[test]
    fn the_two_directions_get_distinct_seeds() {
        let s = ScenarioFile::default().resolve().unwrap();
        let (a, b) = s.path_seeds();
        assert_ne!(a, b);
    }
}
