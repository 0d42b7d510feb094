//! Parsing and printing of humane units on the command line: durations (`40ms`, `1.5s`),
//! bit rates (`2M`, `2Mbit`, `500kbit/s`) and byte sizes (`1316`, `64KiB`, `16MB`).
//!
//! Every parser names the problem and the expected form in its error.

use std::time::Duration;

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, unit) = s.split_at(end);
    let value: f64 = num.parse().ok()?;
    value.is_finite().then_some((value, unit.trim()))
}

/// Parses a duration: a number with `ns`, `us`/`µs`, `ms`, `s`, `m` or `h` (`40ms`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("duration `{s}`: use a number with a unit, e.g. 40ms, 1.5s, 2m");
    let (value, unit) = split_number(s).ok_or_else(bad)?;
    let secs = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let d = Duration::try_from_secs_f64(value * secs).map_err(|_| bad())?;
    if d > Duration::from_secs(10 * 365 * 86_400) {
        return Err(format!("duration `{s}`: at most 10 years"));
    }
    Ok(d)
}

/// Prints a duration in the largest unit that keeps it whole where possible (`50ms`, `1.5s`).
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0s".into()
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us >= 1_000_000 {
        format!("{}s", d.as_secs_f64())
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else if us >= 1000 {
        format!("{}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}

/// Parses a bit rate in bits per second: `2M`, `2Mbit`, `2Mbps`, `500k`, `500kbit/s`, `1G`, or
/// a plain number of bit/s. Prefixes are decimal (k = 1000).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("rate `{s}`: use bits per second with an optional prefix, e.g. 2M, 500kbit, 10Mbit")
    };
    let (value, unit) = split_number(s).ok_or_else(bad)?;
    let unit = unit.strip_suffix("/s").unwrap_or(unit);
    let unit = unit
        .strip_suffix("bps")
        .or_else(|| unit.strip_suffix("bit"))
        .unwrap_or(unit);
    let mult = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" | "m" => 1e6,
        "G" | "g" => 1e9,
        _ => return Err(bad()),
    };
    let bits = value * mult;
    if !(1.0..=1e13).contains(&bits) {
        return Err(format!("rate `{s}`: must be between 1 bit/s and 10 Tbit/s"));
    }
    Ok(bits.round() as u64)
}

/// Prints a rate in bit/s with a decimal prefix (`2Mbit/s`).
pub fn format_rate(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2}Gbit/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.2}Mbit/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.1}kbit/s", bps / 1e3)
    } else {
        format!("{bps:.0}bit/s")
    }
}

/// Parses a size in bytes: a plain number, or with `B`, `k`/`KB` (1000), `KiB` (1024), `M`/`MB`,
/// `MiB`, `G`/`GB`, `GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("size `{s}`: use bytes with an optional unit, e.g. 1316, 64KiB, 16MB");
    let (value, unit) = split_number(s).ok_or_else(bad)?;
    let mult = match unit {
        "" | "B" => 1.0,
        "k" | "K" | "kB" | "KB" => 1e3,
        "KiB" | "Ki" => 1024.0,
        "M" | "MB" => 1e6,
        "MiB" | "Mi" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = value * mult;
    if bytes > 1e15 {
        return Err(format!("size `{s}`: too large"));
    }
    Ok(bytes.round() as u64)
}

/// Prints a byte count with a binary prefix (`1.5MiB`).
pub fn format_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1}KiB", b / 1024.0)
    } else {
        format!("{b}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40ms"), Ok(Duration::from_millis(40)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        for bad in ["", "10", "ms", "-5ms", "1e3s", "10 parsecs", "NaNs"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. 40ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn duration_printing_round_trips() {
        for d in [0, 250, 50_000, 1_500_000, 10_000_000, 1_234] {
            let d = Duration::from_micros(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2M"), Ok(2_000_000));
        assert_eq!(parse_rate("2Mbit"), Ok(2_000_000));
        assert_eq!(parse_rate("2Mbps"), Ok(2_000_000));
        assert_eq!(parse_rate("500kbit/s"), Ok(500_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert!(parse_rate("2MB").is_err());
        assert!(parse_rate("0").unwrap_err().contains("between"));
        assert_eq!(format_rate(2e6), "2.00Mbit/s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1316"), Ok(1316));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("16MB"), Ok(16_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert!(parse_size("12 bananas").unwrap_err().contains("64KiB"));
        assert_eq!(format_bytes(1536), "1.5KiB");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,20}") {
            let _ = parse_duration(&s);
            let _ = parse_rate(&s);
            let _ = parse_size(&s);
        }
    }
}
