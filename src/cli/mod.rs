//! The command-line front ends of `rtq-send` and `rtq-recv`: flag parsing (clap), start-up
//! messages, and writing reports. The binaries in `src/bin` only call [`send::main`] and
//! [`recv::main`].
//!
//! Human-readable output (status lines, summaries, warnings) goes to stderr, so that
//! `--output -` can own stdout.

pub mod recv;
pub mod send;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::transport::{Congestion, TransportOptions};
use crate::stats::LatencyHistogram;

/// Parses `on` or `off`.
pub fn on_off_arg(s: &str) -> Result<bool, String> {
    match s {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        other => Err(format!("`{other}`: use on or off")),
    }
}

/// Parses a duration flag (`40ms`, `1.5s`).
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

/// Parses a bit-rate flag (`2M`, `500kbit`).
pub fn rate_arg(s: &str) -> Result<u64, String> {
    crate::units::parse_rate(s)
}

/// Parses a byte-size flag (`1316`, `64KiB`).
pub fn size_arg(s: &str) -> Result<u64, String> {
    crate::units::parse_size(s)
}

/// Reads a `--token-file`: the shared secret senders show the receiver. Trailing line
/// breaks and spaces are not part of it.
pub fn token_file_arg(path: &str) -> Result<crate::wire::control::Token, String> {
    use crate::wire::control::Token;
    use std::io::Read;
    // Read no more than a token and some trailing space could take: a wrong path (a device,
    // a large file) is refused, not read to its end.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(Token::MAX_LEN as u64 + 1024).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let secret = &bytes[..end];
    if secret.len() < Token::MIN_LEN || secret.len() > Token::MAX_LEN {
        return Err(format!(
            "{path} holds {} bytes: a token is {} to {} bytes; make one with `head -c 32 /dev/urandom | base64 > {path}`",
            secret.len(),
            Token::MIN_LEN,
            Token::MAX_LEN
        ));
    }
    Token::new(secret.to_vec()).ok_or_else(|| format!("{path}: not a usable token"))
}

/// Transport flags shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// Congestion controller.
    #[arg(long, value_enum, default_value_t = Congestion::Bbr)]
    pub congestion: Congestion,
    /// Close the connection after this long without hearing from the peer.
    #[arg(long, value_parser = duration_arg, default_value = "10s", value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// UDP socket receive and send buffer to ask the kernel for (64KiB to 256MiB). A warning
    /// says when the system grants less (Linux: raise net.core.rmem_max).
    #[arg(long, value_parser = size_arg, default_value = "4MiB", value_name = "SIZE")]
    pub socket_buffer: u64,
}

impl TransportArgs {
    /// The transport options these flags select.
    pub fn options(&self) -> Result<TransportOptions, String> {
        if self.idle_timeout < Duration::from_millis(100) {
            return Err(
                "--idle-timeout below 100ms would close healthy connections: use e.g. 10s".into(),
            );
        }
        if !(64 << 10..=256 << 20).contains(&self.socket_buffer) {
            return Err(format!(
                "--socket-buffer {} is outside 64KiB to 256MiB: use e.g. 4MiB",
                self.socket_buffer
            ));
        }
        Ok(TransportOptions {
            congestion: self.congestion,
            idle_timeout: self.idle_timeout,
            socket_buffer: self.socket_buffer as usize,
            ..Default::default()
        })
    }
}

/// Report flags shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Write the JSON report here when the run ends (also on Ctrl-C).
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// Write HdrHistogram percentile distributions (.hgrm, in ms) as PREFIX-NAME.hgrm
    /// (rtq-recv: NAME = network, jitter_buffer, end_to_end; rtq-send: NAME = send).
    #[arg(long, value_name = "PREFIX")]
    pub hist_out: Option<String>,
    /// No status line every second (the summary at the end is still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Sets up logging to stderr; `RUST_LOG` (e.g. `RUST_LOG=rtq=debug`) selects what is shown,
/// warnings by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Writes `value` as pretty JSON to `path`, atomically (a temporary file renamed over it), so a
/// reader never sees half a report.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(value).context("serialising the report")?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `hist` to `PREFIX-name.hgrm`.
pub fn write_hgrm(prefix: &str, name: &str, hist: &LatencyHistogram) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let path = PathBuf::from(format!("{prefix}-{name}.hgrm"));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    crate::stats::hgrm::write(hist, &mut f)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::flush(&mut f).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A runtime for the binaries: two worker threads (one drives QUIC, one the sessions and I/O).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
