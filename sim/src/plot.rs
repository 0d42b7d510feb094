//! SVG plots, written by hand (no plotting dependency, byte-stable output):
//! - [`percentiles`]: delay percentile distributions with a log-scaled tail (HdrHistogram's
//!   plot: the x axis is `1/(1 − percentile)` on a log scale, so 90 %, 99 %, 99.9 % … are
//!   evenly spaced), one line per delay;
//! - [`lines`]: y against x, one line per series (sweeps);
//! - [`timeline`]: a run second by second: frames per second above, end-to-end delay below.

use std::fmt::Write;

use rtq::stats::LatencyHistogram;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" step for an axis spanning `span`.
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

struct Frame {
    svg: String,
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn new(title: &str, x_max: f64, y_max: f64, y_label: &str) -> Self {
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            W / 2.0,
            esc(title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
            TOP + (H - TOP - BOTTOM) / 2.0,
            TOP + (H - TOP - BOTTOM) / 2.0,
            esc(y_label)
        );
        let mut f = Self {
            svg,
            x_max: x_max.max(f64::MIN_POSITIVE),
            y_max: y_max.max(f64::MIN_POSITIVE),
        };
        f.y_grid();
        f
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + x / self.x_max * (W - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - y / self.y_max * (H - TOP - BOTTOM)
    }

    fn y_grid(&mut self) {
        let step = nice_step(self.y_max, 6.0);
        let mut y = 0.0;
        while y <= self.y_max * 1.0001 {
            let p = self.py(y);
            let _ = writeln!(
                self.svg,
                r##"<line x1="{LEFT}" y1="{p:.1}" x2="{:.1}" y2="{p:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                p + 4.0,
                trim(y)
            );
            y += step;
        }
    }

    fn x_tick(&mut self, x: f64, label: &str) {
        let p = self.px(x);
        let _ = writeln!(
            self.svg,
            r##"<line x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{:.1}" stroke="#ddd"/><text x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0,
            esc(label)
        );
    }

    fn x_label(&mut self, label: &str) {
        let _ = writeln!(
            self.svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 16.0,
            esc(label)
        );
    }

    fn series(&mut self, i: usize, name: &str, points: &[(f64, f64)]) {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for (k, (x, y)) in points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if k == 0 { "M" } else { " L" },
                self.px(*x),
                self.py(y.min(self.y_max))
            );
        }
        let _ = writeln!(
            self.svg,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"/>"#
        );
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = W - RIGHT + 14.0;
        let _ = writeln!(
            self.svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            esc(name)
        );
    }

    fn finish(mut self) -> String {
        let _ = writeln!(
            self.svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        self.svg.push_str("</svg>\n");
        self.svg
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Percentile distributions of delays (µs histograms, plotted in ms), HdrHistogram style.
pub fn percentiles(title: &str, series: &[(&str, &LatencyHistogram)]) -> String {
    // x = log10(1 / (1 − q)), up to 99.999 % (x = 5) or the data's last quantile.
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut x_max: f64 = 2.0;
    let mut y_max: f64 = 0.0;
    for (name, h) in series {
        if h.is_empty() {
            continue;
        }
        let mut pts = Vec::new();
        for v in h.histogram().iter_quantiles(4) {
            let q = v.quantile_iterated_to();
            if q >= 1.0 {
                break;
            }
            let x = (1.0 / (1.0 - q)).log10().min(5.0);
            let y = v.value_iterated_to() as f64 / 1000.0;
            pts.push((x, y));
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
        lines.push(((*name).to_string(), pts));
    }
    let x_max = x_max.ceil().min(5.0);
    let mut f = Frame::new(title, x_max, (y_max * 1.08).max(0.001), "delay (ms)");
    for (k, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        if k as f64 <= x_max {
            f.x_tick(k as f64, label);
        }
    }
    f.x_label("percentile (log scale of 1/(1-p))");
    for (i, (name, pts)) in lines.iter().enumerate() {
        f.series(i, name, pts);
    }
    f.finish()
}

/// Lines of `y` against `x`; `series` are (name, points).
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let x_min = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(f64::INFINITY, f64::min);
    let x_hi = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(f64::NEG_INFINITY, f64::max);
    let y_hi = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let x_min = if x_min.is_finite() {
        x_min.min(0.0)
    } else {
        0.0
    };
    let span = if x_hi.is_finite() && x_hi > x_min {
        x_hi - x_min
    } else {
        1.0
    };
    let mut f = Frame::new(title, span, (y_hi * 1.08).max(0.001), y_label);
    let step = nice_step(span, 6.0);
    let mut x = 0.0;
    while x <= span * 1.0001 {
        f.x_tick(x, &trim(x + x_min));
        x += step;
    }
    f.x_label(x_label);
    for (i, (name, pts)) in series.iter().enumerate() {
        let shifted: Vec<_> = pts.iter().map(|(x, y)| (x - x_min, *y)).collect();
        f.series(i, name, &shifted);
    }
    f.finish()
}

/// A run second by second (`report.json`'s `timeline`): frames sent, played, late and lost
/// per second above; the end-to-end delay (p50, p99) of the frames played in each second below
/// (no point for a second in which nothing played).
pub fn timeline(title: &str, entries: &[crate::run::TimelineEntry]) -> String {
    let t = |e: &crate::run::TimelineEntry| e.t_s as f64;
    let count = |f: fn(&crate::run::TimelineEntry) -> u64| -> Vec<(f64, f64)> {
        entries.iter().map(|e| (t(e), f(e) as f64)).collect()
    };
    let delay = |f: fn(&crate::run::TimelineEntry) -> Option<u64>| -> Vec<(f64, f64)> {
        entries
            .iter()
            .filter_map(|e| f(e).map(|us| (t(e), us as f64 / 1000.0)))
            .collect()
    };
    let top = lines(
        &format!("{title}: frames"),
        "time (s)",
        "frames per second",
        &[
            ("sent".into(), count(|e| e.sent)),
            ("played".into(), count(|e| e.played)),
            ("late".into(), count(|e| e.late)),
            ("lost".into(), count(|e| e.lost)),
        ],
    );
    let bottom = lines(
        &format!("{title}: end-to-end delay of the frames played"),
        "time (s)",
        "delay (ms)",
        &[
            ("p50".into(), delay(|e| e.e2e_p50_us)),
            ("p99".into(), delay(|e| e.e2e_p99_us)),
        ],
    );
    // Two charts stacked: each is a whole <svg>, placed by its y inside an outer one.
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" viewBox="0 0 {W} {}">"#,
        2.0 * H,
        2.0 * H
    );
    svg.push('\n');
    svg += &top;
    svg += &bottom.replacen("<svg ", &format!(r#"<svg y="{H}" "#), 1);
    svg += "</svg>\n";
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_plot_has_one_line_per_delay_and_a_log_axis() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        for v in 1..=10_000 {
            a.record(v);
            b.record(v * 2);
        }
        let svg = percentiles(
            "t & <t>",
            &[
                ("network", &a),
                ("end-to-end", &b),
                ("empty", &LatencyHistogram::default()),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2, "empty series are left out");
        assert!(svg.contains("99.9%") && svg.contains("t &amp; &lt;t&gt;"));
    }

    #[test]
    fn line_plots_scale_to_their_data() {
        let s = vec![(
            "p99".to_string(),
            vec![(0.0, 1.0), (5.0, 20.0), (10.0, 40.0)],
        )];
        let svg = lines("sweep", "loss %", "ms", &s);
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(svg.contains(">10<"), "x ticks reach the data: {svg}");
    }

    #[test]
    fn a_timeline_stacks_counts_over_delays_and_leaves_silent_seconds_out() {
        let e = |t_s, played, p50: Option<u64>| crate::run::TimelineEntry {
            t_s,
            sent: 30,
            played,
            late: 0,
            lost: 30 - played,
            e2e_p50_us: p50,
            e2e_p99_us: p50.map(|v| v * 2),
            held_bytes: 0,
            held_entries: 0,
        };
        let entries = [
            e(0, 30, Some(40_000)),
            e(1, 0, None),
            e(2, 30, Some(60_000)),
        ];
        let svg = timeline("outage", &entries);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<svg").count(),
            3,
            "an outer svg and two charts"
        );
        assert!(
            svg.contains(r#"<svg y="520""#),
            "the delay chart sits below"
        );
        // sent, played, late, lost; then p50 and p99.
        assert_eq!(svg.matches("<path").count(), 6);
        // The delay lines have a point per second that played: 2, not 3.
        let delays = &svg[svg.find(r#"<svg y="520""#).unwrap()..];
        let path = &delays[delays.find("<path").unwrap()..];
        let d = &path[..path.find("/>").unwrap()];
        assert_eq!(d.matches('L').count() + 1, 2, "{d}");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.7, 6.0), 0.1);
        assert_eq!(nice_step(45.0, 6.0), 10.0);
    }
}
