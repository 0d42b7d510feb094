//! Link parameters as people write them — command-line flags and scenario files, in netem's
//! vocabulary and humane units (`40ms`, `2%`, `10Mbit`, `64KiB`) — and their resolution into
//! the nodes of a [`Path`].
//!
//! [`LinkSpec`] is a partial set of parameters (every field optional) so that layers can be
//! merged: defaults, a scenario's `[link]` (both directions), its `[forward]` / `[reverse]`,
//! then the command line (`--loss 2%` for both directions, `--reverse-loss 0%` for the reverse
//! one only). [`LinkConfig`] is the resolved, validated result; it is what reports print.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::link::delay::{DelayConfig, DelayNode};
use crate::link::dist::JitterDist;
use crate::link::loss::{LossModel, LossNode};
use crate::link::rate::{Aqm, QueueLimit, RateConfig, RateNode};
use crate::link::simple::{Blackhole, BlackholeNode, CorruptNode, DupNode, MtuNode};
use crate::link::trace::{Capacity, CapacityConfig, CapacityNode, Trace};
use crate::link::{Node, Path};

/// A duration written as `40ms`, `1.5s`, `250us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

/// A probability written as a percentage: `2%`, `0.5%` (or `0`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Pct(pub f64);

/// A bit rate written as `10Mbit`, `2M`, `500kbit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate(pub u64);

/// A queue limit: a number of packets (`25`), or bytes with a unit (`64KiB`, `150kB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec(pub QueueLimit);

/// An outage cycle written as `UP/DOWN`: `5s/2s` passes packets for 5 s, then drops everything
/// for 2 s, repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlackholeSpec(pub Blackhole);

/// Parses a percentage; `what` names the parameter in the error.
pub fn parse_pct(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(num) => num.trim().parse::<f64>().map(|v| v / 100.0),
        None if t == "0" => Ok(0.0),
        None => return Err(format!("`{s}`: write a percentage, e.g. 2% or 0.5%")),
    }
    .map_err(|_| format!("`{s}`: write a percentage, e.g. 2% or 0.5%"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}`: a percentage between 0% and 100%"));
    }
    Ok(v)
}

fn parse_queue(s: &str) -> Result<QueueLimit, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<usize>() {
        if n == 0 {
            return Err(format!("queue `{s}`: at least 1 packet"));
        }
        return Ok(QueueLimit::Packets(n));
    }
    let bytes = rtq::units::parse_size(t).map_err(|_| {
        format!("queue `{s}`: a number of packets (25), or bytes with a unit (64KiB)")
    })?;
    if bytes < 1500 {
        return Err(format!(
            "queue `{s}`: at least 1500 bytes, one full-size packet"
        ));
    }
    Ok(QueueLimit::Bytes(
        usize::try_from(bytes).unwrap_or(usize::MAX),
    ))
}

fn parse_blackhole(s: &str) -> Result<Blackhole, String> {
    let bad =
        || format!("blackhole `{s}`: write UP/DOWN, e.g. 5s/2s (5 s working, then 2 s dropping)");
    let (up, down) = s.split_once('/').ok_or_else(bad)?;
    let up = rtq::units::parse_duration(up).map_err(|_| bad())?;
    let down = rtq::units::parse_duration(down).map_err(|_| bad())?;
    if up.is_zero() {
        return Err(format!(
            "blackhole `{s}`: the link must work for some time in each cycle"
        ));
    }
    Ok(Blackhole { up, down })
}

macro_rules! string_unit {
    ($ty:ident, $parse:expr, $show:expr) => {
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                ($parse)(s).map($ty)
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&($show)(&self.0))
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = toml::Value::deserialize(d)?;
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(x) => x.to_string(),
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            "expected a string, got {}",
                            other.type_str()
                        )));
                    }
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fn show_pct(v: &f64) -> String {
    let pct = (v * 100.0 * 1e6).round() / 1e6;
    format!("{pct}%")
}

fn show_queue(q: &QueueLimit) -> String {
    match q {
        QueueLimit::Packets(n) => n.to_string(),
        QueueLimit::Bytes(n) => format!("{n}B"),
    }
}

string_unit!(Dur, rtq::units::parse_duration, |d: &Duration| {
    rtq::units::format_duration(*d)
});
string_unit!(Pct, parse_pct, show_pct);
string_unit!(Rate, rtq::units::parse_rate, |r: &u64| format!("{r}bit"));
string_unit!(QueueSpec, parse_queue, show_queue);
string_unit!(BlackholeSpec, parse_blackhole, |b: &Blackhole| format!(
    "{}/{}",
    rtq::units::format_duration(b.up),
    rtq::units::format_duration(b.down)
));

/// Serde for types that have `FromStr` and `Display` (distributions, AQMs): written as strings.
mod as_str {
    use serde::Serializer;

    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// The same for `Option<T>`.
    pub mod opt {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<T: std::fmt::Display, S: Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&v.to_string()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: std::str::FromStr,
            T::Err: std::fmt::Display,
            D: Deserializer<'de>,
        {
            match Option::<String>::deserialize(d)? {
                Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

/// Loss model names of `--loss-model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Independent losses (`--loss`).
    #[default]
    Bernoulli,
    /// Gilbert–Elliott: `--loss` is the mean rate, `--burst` the mean burst length; or netem's
    /// raw `--gemodel p,r,1-h,1-k`.
    Ge,
    /// netem's 4-state model: `--state p13,p31,p32,p23,p14`.
    #[serde(rename = "4state")]
    #[value(name = "4state")]
    FourState,
}

/// A partial set of link parameters for one direction (every field optional, so layers merge).
/// Field names are those of the command-line flags, with `_` for `-`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Constant one-way delay.
    pub delay: Option<Dur>,
    /// Delay variation, netem's scale J: uniform gives ±J, normal a standard deviation of J;
    /// pareto and paretonormal are netem's tables scaled by J (sd 0.82·J and 0.83·J).
    pub jitter: Option<Dur>,
    /// Distribution of the delay variation.
    #[serde(default, with = "as_str::opt")]
    pub jitter_dist: Option<JitterDist>,
    /// Correlation of successive delay draws (AR(1) on a Gaussian copula: the marginal stays).
    pub correlation: Option<Pct>,
    /// Never let jitter reorder packets (default: on when the link has a bottleneck, as netem
    /// does when a rate is set; off otherwise).
    pub keep_order: Option<bool>,
    /// Loss probability (the mean rate for `ge`).
    pub loss: Option<Pct>,
    /// Loss model.
    pub loss_model: Option<LossKind>,
    /// Mean burst length of `ge` losses, packets.
    pub burst: Option<f64>,
    /// netem's raw Gilbert–Elliott parameters `p, r, 1-h, 1-k`.
    pub gemodel: Option<Vec<Pct>>,
    /// netem's 4-state parameters `p13, p31, p32, p23, p14`.
    pub state: Option<Vec<Pct>>,
    /// Duplication probability.
    pub dup: Option<Pct>,
    /// Probability that a packet skips the delay (netem `reorder`).
    pub reorder: Option<Pct>,
    /// Correlation of reorder decisions.
    pub reorder_correlation: Option<Pct>,
    /// netem `gap`: reordering applies to every gap-th packet.
    pub reorder_gap: Option<u32>,
    /// Probability of flipping one bit.
    pub corrupt: Option<Pct>,
    /// Bottleneck rate.
    pub rate: Option<Rate>,
    /// Bottleneck queue: packets, or bytes with a unit.
    pub queue: Option<QueueSpec>,
    /// Queue management at the bottleneck.
    #[serde(default, with = "as_str::opt")]
    pub aqm: Option<Aqm>,
    /// Mahimahi trace giving the bottleneck's capacity.
    pub trace: Option<TracePath>,
    /// Where in the trace to start.
    pub trace_start: Option<Dur>,
    /// Poisson capacity of this mean rate (Pantheon's emulators).
    pub poisson: Option<Rate>,
    /// Largest datagram passed (UDP payload bytes).
    pub mtu: Option<usize>,
    /// Outage cycle `UP/DOWN`.
    pub blackhole: Option<BlackholeSpec>,
}

impl LinkSpec {
    /// `other`'s fields where set, ours elsewhere.
    #[must_use]
    pub fn merged(&self, other: &LinkSpec) -> LinkSpec {
        macro_rules! pick {
            ($($f:ident),*) => { LinkSpec { $($f: other.$f.clone().or_else(|| self.$f.clone()),)* } };
        }
        let mut m = pick!(
            delay,
            jitter,
            jitter_dist,
            correlation,
            keep_order,
            loss,
            loss_model,
            burst,
            gemodel,
            state,
            dup,
            reorder,
            reorder_correlation,
            reorder_gap,
            corrupt,
            rate,
            queue,
            aqm,
            trace,
            trace_start,
            poisson,
            mtu,
            blackhole
        );
        // A bottleneck given on top replaces one of another kind underneath.
        if other.rate.is_some() || other.trace.is_some() || other.poisson.is_some() {
            m.rate = other.rate;
            m.trace = other.trace.clone();
            m.poisson = other.poisson;
            m.trace_start = other.trace_start;
        }
        m
    }
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == LinkSpec::default()
    }

    /// Sets any field from its flag name and value (`--reverse-NAME VALUE` on the command
    /// line).
    pub fn set_any(&mut self, name: &str, value: &str) -> Result<(), String> {
        let err = |e: String| format!("--reverse-{name}: {e}");
        let key = name.trim().replace('-', "_");
        let value = value.trim();
        let pcts = |v: &str| -> Result<Vec<Pct>, String> { v.split(',').map(str::parse).collect() };
        match key.as_str() {
            "jitter_dist" => self.jitter_dist = Some(value.parse().map_err(err)?),
            "loss_model" => {
                self.loss_model = Some(match value {
                    "bernoulli" => LossKind::Bernoulli,
                    "ge" => LossKind::Ge,
                    "4state" => LossKind::FourState,
                    _ => return Err(err("bernoulli, ge or 4state".into())),
                });
            }
            "gemodel" => self.gemodel = Some(pcts(value).map_err(err)?),
            "state" => self.state = Some(pcts(value).map_err(err)?),
            "reorder_correlation" => self.reorder_correlation = Some(value.parse().map_err(err)?),
            "reorder_gap" => {
                self.reorder_gap = Some(
                    value
                        .parse()
                        .map_err(|_| err("a number of packets".into()))?,
                )
            }
            "aqm" => {
                self.aqm = Some(
                    value
                        .parse()
                        .map_err(|e: crate::link::rate::ParseAqmError| err(e.to_string()))?,
                )
            }
            "trace" => self.trace = Some(TracePath::from(PathBuf::from(value))),
            "trace_start" => self.trace_start = Some(value.parse().map_err(err)?),
            "poisson" => self.poisson = Some(value.parse().map_err(err)?),
            _ => return self.set(name, value).map_err(|e| format!("--reverse-{e}")),
        }
        Ok(())
    }

    /// Sets one field from `name=value` (the schedule syntax of `--at`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let err = |e: String| format!("{name}: {e}");
        let name = name.trim().replace('-', "_");
        let value = value.trim();
        match name.as_str() {
            "delay" => self.delay = Some(value.parse().map_err(err)?),
            "jitter" => self.jitter = Some(value.parse().map_err(err)?),
            "jitter_dist" => self.jitter_dist = Some(value.parse().map_err(err)?),
            "correlation" => self.correlation = Some(value.parse().map_err(err)?),
            "keep_order" => {
                self.keep_order = Some(value.parse().map_err(|_| err("true or false".into()))?)
            }
            "loss" => self.loss = Some(value.parse().map_err(err)?),
            "burst" => {
                self.burst = Some(
                    value
                        .parse()
                        .map_err(|_| err("a number of packets".into()))?,
                )
            }
            "dup" => self.dup = Some(value.parse().map_err(err)?),
            "reorder" => self.reorder = Some(value.parse().map_err(err)?),
            "corrupt" => self.corrupt = Some(value.parse().map_err(err)?),
            "rate" => self.rate = Some(value.parse().map_err(err)?),
            "queue" => self.queue = Some(value.parse().map_err(err)?),
            "mtu" => self.mtu = Some(value.parse().map_err(|_| err("bytes".into()))?),
            "blackhole" => self.blackhole = Some(value.parse().map_err(err)?),
            other => {
                return Err(format!(
                    "`{other}` cannot change during a run (changeable: delay, jitter, jitter-dist, correlation, keep-order, loss, burst, dup, reorder, corrupt, rate, queue, mtu, blackhole)"
                ));
            }
        }
        Ok(())
    }
}

/// The resolved parameters of one direction: what the path is built from and reports print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkConfig {
    /// Constant one-way delay.
    pub delay: Dur,
    /// Delay variation.
    pub jitter: Dur,
    /// Its distribution.
    #[serde(serialize_with = "as_str::serialize")]
    pub jitter_dist: JitterDist,
    /// Correlation of successive delays.
    pub correlation: Pct,
    /// No reordering by jitter.
    pub keep_order: bool,
    /// Loss model, with its parameters.
    pub loss: LossReport,
    /// Duplication probability.
    pub dup: Pct,
    /// Reordering probability.
    pub reorder: Pct,
    /// Correlation of reordering.
    pub reorder_correlation: Pct,
    /// Reordering gap.
    pub reorder_gap: u32,
    /// Corruption probability.
    pub corrupt: Pct,
    /// The bottleneck, if any.
    pub bottleneck: Option<BottleneckReport>,
    /// MTU (UDP payload bytes), if limited.
    pub mtu: Option<usize>,
    /// Outage cycle, if any.
    pub blackhole: Option<BlackholeSpec>,
}

/// A loss model as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossReport {
    /// `bernoulli`, `ge` or `4state`.
    pub model: LossKind,
    /// Its long-run loss rate.
    pub mean: Pct,
    /// The parameters: `p` (bernoulli); `p, r, 1-h, 1-k` (ge); `p13, p31, p32, p23, p14`.
    pub params: Vec<Pct>,
    #[serde(skip)]
    model_value: LossModel,
}

/// A trace file as written (in a scenario file or a flag), and the path it is read from
/// (relative paths in a scenario file are relative to the file). Reports show it as written, so
/// that a report does not depend on the directory the run started in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePath {
    /// As written.
    pub written: PathBuf,
    /// Where it is read from.
    pub resolved: PathBuf,
}

impl From<PathBuf> for TracePath {
    fn from(p: PathBuf) -> Self {
        Self {
            written: p.clone(),
            resolved: p,
        }
    }
}

impl Serialize for TracePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TracePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PathBuf::deserialize(d).map(Self::from)
    }
}

/// A bottleneck as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BottleneckReport {
    /// `rate`, `trace` or `poisson`.
    pub kind: String,
    /// Rate (constant or Poisson mean), or the trace's mean rate.
    pub rate: Rate,
    /// The trace file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// Start offset into the trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_start: Option<Dur>,
    /// Queue limit.
    pub queue: QueueSpec,
    /// Queue management.
    #[serde(serialize_with = "as_str::serialize")]
    pub aqm: Aqm,
    #[serde(skip)]
    trace_data: Option<Arc<Trace>>,
}

/// Default bottleneck queue when none is given: 1000 packets (a deep, bufferbloated buffer, as
/// many access links have; scenarios set their own).
pub const DEFAULT_QUEUE: QueueLimit = QueueLimit::Packets(1000);

impl LinkSpec {
    /// Resolves and validates the parameters, loading a trace if one is named. `traces` caches
    /// loaded traces by path.
    pub fn resolve(&self, traces: &mut TraceCache) -> Result<LinkConfig, String> {
        let delay = self.delay.unwrap_or_default();
        let jitter = self.jitter.unwrap_or_default();
        let loss_p = self.loss.unwrap_or_default().0;
        let kind = self.loss_model.unwrap_or(if self.gemodel.is_some() {
            LossKind::Ge
        } else if self.state.is_some() {
            LossKind::FourState
        } else {
            LossKind::Bernoulli
        });
        let pcts =
            |v: &Option<Vec<Pct>>, n: usize, what: &str| -> Result<Option<Vec<f64>>, String> {
                match v {
                    None => Ok(None),
                    Some(v) if v.len() == n => Ok(Some(v.iter().map(|p| p.0).collect())),
                    Some(v) => Err(format!(
                        "{what}: {n} percentages expected, {} given",
                        v.len()
                    )),
                }
            };
        let (model, params) = match kind {
            LossKind::Bernoulli => (LossModel::bernoulli(loss_p)?, vec![loss_p]),
            LossKind::Ge => match pcts(&self.gemodel, 4, "gemodel (p, r, 1-h, 1-k)")? {
                Some(g) => (LossModel::gilbert_raw(g[0], g[1], g[2], g[3])?, g),
                None => {
                    let m = LossModel::gilbert(loss_p, self.burst.unwrap_or(1.0))?;
                    (m, m.params())
                }
            },
            LossKind::FourState => {
                let s = pcts(&self.state, 5, "state (p13, p31, p32, p23, p14)")?
                    .ok_or("loss model 4state needs --state p13,p31,p32,p23,p14")?;
                (LossModel::four_state(s[0], s[1], s[2], s[3], s[4])?, s)
            }
        };
        let queue = self.queue.map_or(DEFAULT_QUEUE, |q| q.0);
        let aqm = self.aqm.unwrap_or_default();
        let kinds = [
            self.rate.is_some(),
            self.trace.is_some(),
            self.poisson.is_some(),
        ];
        if kinds.iter().filter(|&&k| k).count() > 1 {
            return Err("give one bottleneck: --rate, --trace or --poisson".into());
        }
        let bottleneck = if let Some(r) = self.rate {
            Some(BottleneckReport {
                kind: "rate".into(),
                rate: r,
                trace: None,
                trace_start: None,
                queue: QueueSpec(queue),
                aqm,
                trace_data: None,
            })
        } else if let Some(p) = self.poisson {
            Some(BottleneckReport {
                kind: "poisson".into(),
                rate: p,
                trace: None,
                trace_start: None,
                queue: QueueSpec(queue),
                aqm,
                trace_data: None,
            })
        } else if let Some(tp) = &self.trace {
            let path = &tp.resolved;
            let t = traces.load(path)?;
            let start = self.trace_start.unwrap_or_default();
            if start.0 >= t.period() {
                return Err(format!(
                    "trace-start {}: the trace {} lasts {}",
                    start,
                    path.display(),
                    rtq::units::format_duration(t.period())
                ));
            }
            Some(BottleneckReport {
                kind: "trace".into(),
                rate: Rate(t.mean_bps().round() as u64),
                trace: Some(tp.written.clone()),
                trace_start: Some(start),
                queue: QueueSpec(queue),
                aqm,
                trace_data: Some(t),
            })
        } else {
            None
        };
        if self.trace_start.is_some() && self.trace.is_none() {
            return Err("--trace-start needs --trace".into());
        }
        if let Some(m) = self.mtu
            && m < 1200
        {
            return Err(format!(
                "mtu {m}: QUIC needs datagrams of at least 1200 bytes"
            ));
        }
        let hour = Duration::from_secs(3600);
        if delay.0 > hour || jitter.0 > hour {
            return Err("delay and jitter: at most 1 hour".into());
        }
        if let Some(b) = self.burst
            && !(b.is_finite() && b >= 1.0)
        {
            return Err(format!(
                "burst {b}: the mean burst length is at least 1 packet"
            ));
        }
        Ok(LinkConfig {
            delay,
            jitter,
            jitter_dist: self.jitter_dist.unwrap_or_default(),
            correlation: self.correlation.unwrap_or_default(),
            // As netem: with a rate limit (any bottleneck here), jitter does not reorder.
            keep_order: self.keep_order.unwrap_or(bottleneck.is_some()),
            loss: LossReport {
                model: kind,
                mean: Pct(model.stationary_loss()),
                params: params.into_iter().map(Pct).collect(),
                model_value: model,
            },
            dup: self.dup.unwrap_or_default(),
            reorder: self.reorder.unwrap_or_default(),
            reorder_correlation: self.reorder_correlation.unwrap_or_default(),
            reorder_gap: self.reorder_gap.unwrap_or(0),
            corrupt: self.corrupt.unwrap_or_default(),
            bottleneck,
            mtu: self.mtu,
            blackhole: self.blackhole,
        })
    }
}

/// Traces loaded once per run, shared by paths that use the same file.
#[derive(Debug, Default)]
pub struct TraceCache {
    loaded: Vec<(PathBuf, Arc<Trace>)>,
}

impl TraceCache {
    /// The trace at `path`, loaded on first use.
    pub fn load(&mut self, path: &std::path::Path) -> Result<Arc<Trace>, String> {
        if let Some((_, t)) = self.loaded.iter().find(|(p, _)| p == path) {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(Trace::load(path).map_err(|e| e.to_string())?);
        self.loaded.push((path.to_path_buf(), Arc::clone(&t)));
        Ok(t)
    }
}

impl LinkConfig {
    fn delay_config(&self) -> DelayConfig {
        DelayConfig {
            delay: self.delay.0,
            jitter: self.jitter.0,
            dist: self.jitter_dist,
            correlation: self.correlation.0,
            keep_order: self.keep_order,
            reorder: self.reorder.0,
            reorder_correlation: self.reorder_correlation.0,
            reorder_gap: self.reorder_gap,
        }
    }

    fn bottleneck_node(&self) -> Option<Box<dyn Node>> {
        let b = self.bottleneck.as_ref()?;
        let (queue, aqm) = (b.queue.0, b.aqm);
        Some(match b.kind.as_str() {
            "rate" => Box::new(RateNode::new(RateConfig {
                rate_bps: b.rate.0,
                queue,
                aqm,
            })),
            "poisson" => Box::new(CapacityNode::new(CapacityConfig {
                capacity: Capacity::Poisson { rate_bps: b.rate.0 },
                queue,
                aqm,
            })),
            _ => Box::new(CapacityNode::new(CapacityConfig {
                capacity: Capacity::Trace {
                    trace: Arc::clone(b.trace_data.as_ref()?),
                    start: b.trace_start.unwrap_or_default().0,
                },
                queue,
                aqm,
            })),
        })
    }

    /// The path this configuration describes, seeded with `seed`. Every node a schedule may
    /// change exists from the start (with neutral parameters where unused).
    pub fn build(&self, seed: u64) -> Path {
        let mut nodes: Vec<Box<dyn Node>> = Vec::new();
        let neutral_blackhole = Blackhole {
            up: Duration::from_secs(1),
            down: Duration::ZERO,
        };
        nodes.push(Box::new(BlackholeNode::new(
            self.blackhole.map_or(neutral_blackhole, |b| b.0),
        )));
        nodes.push(Box::new(MtuNode::new(self.mtu.unwrap_or(usize::MAX))));
        nodes.push(Box::new(LossNode::new(self.loss.model_value)));
        nodes.push(Box::new(DupNode::new(self.dup.0)));
        nodes.push(Box::new(CorruptNode::new(self.corrupt.0)));
        if let Some(b) = self.bottleneck_node() {
            nodes.push(b);
        }
        nodes.push(Box::new(DelayNode::new(self.delay_config())));
        Path::from_nodes(nodes, seed)
    }

    /// Applies this (new) configuration to a path built from an earlier one, keeping every
    /// node's state. The bottleneck's kind cannot change.
    pub fn apply(&self, path: &mut Path) {
        let neutral_blackhole = Blackhole {
            up: Duration::from_secs(1),
            down: Duration::ZERO,
        };
        for node in path.nodes_mut() {
            let any = node.as_any_mut();
            if let Some(n) = any.downcast_mut::<BlackholeNode>() {
                n.set_config(self.blackhole.map_or(neutral_blackhole, |b| b.0));
            } else if let Some(n) = any.downcast_mut::<MtuNode>() {
                n.set_config(self.mtu.unwrap_or(usize::MAX));
            } else if let Some(n) = any.downcast_mut::<LossNode>() {
                n.set_config(self.loss.model_value);
            } else if let Some(n) = any.downcast_mut::<DupNode>() {
                n.set_config(self.dup.0);
            } else if let Some(n) = any.downcast_mut::<CorruptNode>() {
                n.set_config(self.corrupt.0);
            } else if let Some(n) = any.downcast_mut::<DelayNode>() {
                n.set_config(self.delay_config());
            } else if let Some(n) = any.downcast_mut::<RateNode>()
                && let Some(b) = &self.bottleneck
            {
                n.set_config(RateConfig {
                    rate_bps: b.rate.0,
                    queue: b.queue.0,
                    aqm: b.aqm,
                });
            }
        }
    }
}

/// A change of parameters at a time into the run. (Unknown keys are refused by the flattened
/// [`LinkSpec`].)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    /// When, from the start of the run.
    pub at: Dur,
    /// `both` (default), `forward` or `reverse`.
    #[serde(default)]
    pub direction: Direction,
    /// The parameters that change.
    #[serde(flatten)]
    pub change: LinkSpec,
}

/// Which way a change applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Both directions.
    #[default]
    Both,
    /// Sender → receiver.
    Forward,
    /// Receiver → sender.
    Reverse,
}

impl std::str::FromStr for ScheduleEntry {
    type Err = String;

    /// `TIME:name=value[,name=value…]`, optionally `TIME:forward:…` or `TIME:reverse:…`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: write TIME:param=value[,param=value], e.g. 20s:loss=10%");
        let (at, rest) = s.split_once(':').ok_or_else(bad)?;
        let at: Dur = at.parse()?;
        let (direction, changes) = match rest.split_once(':') {
            Some(("forward", c)) => (Direction::Forward, c),
            Some(("reverse", c)) => (Direction::Reverse, c),
            Some(("both", c)) => (Direction::Both, c),
            _ => (Direction::Both, rest),
        };
        let mut change = LinkSpec::default();
        for kv in changes.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            change.set(k, v)?;
        }
        Ok(Self {
            at,
            direction,
            change,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_units_parse_and_print() {
        assert_eq!("2%".parse::<Pct>(), Ok(Pct(0.02)));
        assert_eq!("0".parse::<Pct>(), Ok(Pct(0.0)));
        assert!(
            "150%"
                .parse::<Pct>()
                .unwrap_err()
                .contains("between 0% and 100%")
        );
        assert!("2".parse::<Pct>().unwrap_err().contains("e.g. 2%"));
        assert_eq!(Pct(0.025).to_string(), "2.5%");
        assert_eq!(
            "25".parse::<QueueSpec>(),
            Ok(QueueSpec(QueueLimit::Packets(25)))
        );
        assert_eq!(
            "64KiB".parse::<QueueSpec>(),
            Ok(QueueSpec(QueueLimit::Bytes(65_536)))
        );
        assert!("0".parse::<QueueSpec>().is_err());
        let b: BlackholeSpec = "5s/2s".parse().unwrap();
        assert_eq!(b.to_string(), "5s/2s");
        assert!(
            "5s".parse::<BlackholeSpec>()
                .unwrap_err()
                .contains("UP/DOWN")
        );
    }

    #[test]
    fn layers_merge_field_by_field() {
        let both = LinkSpec {
            delay: Some(Dur(Duration::from_millis(40))),
            loss: Some(Pct(0.02)),
            ..Default::default()
        };
        let reverse = LinkSpec {
            loss: Some(Pct(0.0)),
            ..Default::default()
        };
        let r = both.merged(&reverse);
        assert_eq!(r.delay, both.delay);
        assert_eq!(r.loss, Some(Pct(0.0)));
    }

    #[test]
    fn a_bottleneck_on_top_replaces_another_kind() {
        let base = LinkSpec {
            rate: Some(Rate(1)),
            ..Default::default()
        };
        let over = LinkSpec {
            poisson: Some(Rate(2)),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!((m.rate, m.poisson), (None, Some(Rate(2))));
        let same = base.merged(&LinkSpec {
            rate: Some(Rate(3)),
            ..Default::default()
        });
        assert_eq!(same.rate, Some(Rate(3)));
    }

    #[test]
    fn schedule_entries_parse() {
        let e: ScheduleEntry = "20s:loss=10%,delay=100ms".parse().unwrap();
        assert_eq!(e.at, Dur(Duration::from_secs(20)));
        assert_eq!(e.direction, Direction::Both);
        assert_eq!(e.change.loss, Some(Pct(0.1)));
        assert_eq!(e.change.delay, Some(Dur(Duration::from_millis(100))));
        let e: ScheduleEntry = "1.5s:reverse:rate=1Mbit".parse().unwrap();
        assert_eq!(e.direction, Direction::Reverse);
        assert!(
            "20s:trace=x"
                .parse::<ScheduleEntry>()
                .unwrap_err()
                .contains("cannot change")
        );
        assert!("soon:loss=1%".parse::<ScheduleEntry>().is_err());
    }

    #[test]
    fn impossible_parameters_name_the_range() {
        let mut c = TraceCache::default();
        let e = LinkSpec {
            loss_model: Some(LossKind::FourState),
            ..Default::default()
        }
        .resolve(&mut c)
        .unwrap_err();
        assert!(e.contains("--state"), "{e}");
        let e = LinkSpec {
            rate: Some(Rate(1)),
            poisson: Some(Rate(1)),
            ..Default::default()
        }
        .resolve(&mut c)
        .unwrap_err();
        assert!(e.contains("one bottleneck"), "{e}");
        let e = LinkSpec {
            mtu: Some(500),
            ..Default::default()
        }
        .resolve(&mut c)
        .unwrap_err();
        assert!(e.contains("1200"), "{e}");
        let e = LinkSpec {
            trace: Some(PathBuf::from("/nonexistent/trace").into()),
            ..Default::default()
        }
        .resolve(&mut c)
        .unwrap_err();
        assert!(e.contains("/nonexistent/trace"), "{e}");
    }

    #[test]
    fn gilbert_resolves_to_its_mean_rate() {
        let spec = LinkSpec {
            loss: Some(Pct(0.02)),
            loss_model: Some(LossKind::Ge),
            burst: Some(3.0),
            ..Default::default()
        };
        let cfg = spec.resolve(&mut TraceCache::default()).unwrap();
        assert!((cfg.loss.mean.0 - 0.02).abs() < 1e-12);
        assert_eq!(cfg.loss.params.len(), 4);
    }
}
