//! HdrHistogram's percentile-distribution text (`.hgrm`), as Java's
//! `outputPercentileDistribution` writes it, readable by HdrHistogram's plotter and by
//! wrk2-style tooling. Values are printed in milliseconds (µs / 1000).

use std::io::{self, Write};

use super::LatencyHistogram;

/// Value unit scaling: the histogram counts microseconds, the file shows milliseconds.
const SCALE: f64 = 1000.0;
/// Percentile ticks per half distance, as HdrHistogram's tools use by default.
const TICKS: u32 = 5;

/// Writes `h` as a percentile distribution.
pub fn write(h: &LatencyHistogram, out: &mut impl Write) -> io::Result<()> {
    let hist = h.histogram();
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(TICKS) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if hist.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            hist.mean() / SCALE,
            hist.stdev() / SCALE,
            hist.max() as f64 / SCALE,
        )
    };
    let sub_buckets = (2 * 10u64.pow(u32::from(hist.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        hist.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        hist.buckets()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_distribution_ending_at_the_max() {
        let mut h = LatencyHistogram::default();
        for v in 1..=10_000 {
            h.record(v);
        }
        let mut out = Vec::new();
        write(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        let rows: Vec<_> = lines
            .iter()
            .filter(|l| !l.starts_with('#') && l.contains('.'))
            .collect();
        let last: Vec<_> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[1].parse::<f64>().unwrap(), 1.0);
        assert_eq!(last[2], "10000");
        assert!(
            (last[0].parse::<f64>().unwrap() - 10.0).abs() < 0.02,
            "max 10 ms"
        );
        assert!(text.contains("Total count    =        10000"));
        // Cumulative counts never decrease.
        let counts: Vec<u64> = rows
            .iter()
            .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn empty_histogram_writes_only_header_and_footer() {
        let mut out = Vec::new();
        write(&LatencyHistogram::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Total count    =            0"));
    }
}
