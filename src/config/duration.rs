//! Go duration syntax, because users copy `healthcheck.interval` values from the Go issuer.

use std::time::Duration;

/// Longest duration Go's `time.Duration` (int64 nanoseconds) holds, ~292 years; anything
/// longer is refused as Go's `time.ParseDuration` refuses it, never wrapped or saturated.
pub const MAX_GO_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Parses a Go duration (`30s`, `1.5h`, `1h30m`, `500ms`); negative values are refused, and so
/// is anything beyond [`MAX_GO_DURATION`] (`9999999999999h`), with `invalid duration`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let body = t.strip_prefix('+').unwrap_or(t);
    if body.starts_with('-') {
        return Err("negative duration".into());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += value * nanos_per;
        rest = &rest[unit_len..];
    }
    // Checked in f64 before any integer conversion: `i64::MAX as f64` is 2^63, and the
    // float → integer cast below saturates, so no input can wrap or panic here.
    let total = total.round();
    if !total.is_finite() || total >= MAX_GO_DURATION.as_nanos() as f64 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_nanos(total as u64).min(MAX_GO_DURATION))
}

/// Formats like Go's `time.Duration.String()` so messages match the Go issuer (`1m30s`).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        return if nanos < 1_000 {
            format!("{nanos}ns")
        } else if nanos < 1_000_000 {
            trim_float(nanos as f64 / 1e3, "µs")
        } else {
            trim_float(nanos as f64 / 1e6, "ms")
        };
    }
    let total_secs = d.as_secs();
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let frac = d.subsec_nanos();
    let s = total_secs % 60;
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        trim_float(s as f64 + frac as f64 / 1e9, "s")
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn trim_float(v: f64, unit: &str) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        for (s, secs) in [
            ("30s", 30.0),
            ("1m", 60.0),
            ("1.5h", 5400.0),
            ("5.5m", 330.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
        ] {
            assert_eq!(parse_go_duration(s).unwrap().as_secs_f64(), secs, "{s}");
        }
        for bad in ["", "10", "abc", "5x", "-1s", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(29)), "29s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for huge in [
            "9999999999999h",
            "1000000000h",
            // 2^63 ns and u64::MAX ns: beyond Go's int64 nanoseconds.
            "9223372036854775808ns",
            "18446744073709551615ns",
            "2562048h",
            "5124096h",
            // 400 digits: f64 infinity.
            &format!("{}s", "9".repeat(400)),
            &format!("1h{}m", "9".repeat(400)),
        ] {
            let e = parse_go_duration(huge);
            assert!(e.is_err(), "{huge}: {e:?}");
        }
        assert_eq!(
            parse_go_duration("9999999999999h").unwrap_err(),
            "invalid duration \"9999999999999h\""
        );
    }

    #[test]
    fn the_longest_go_duration_still_parses() {
        // Go: 2562047h47m16.854775807s is the largest time.Duration; a little below it parses.
        let d = parse_go_duration("2562047h").unwrap();
        assert_eq!(d, Duration::from_secs(2_562_047 * 3600));
        assert!(d <= MAX_GO_DURATION);
        assert!(parse_go_duration("2562047h47m16s").unwrap() <= MAX_GO_DURATION);
        assert!(format_go_duration(d).starts_with("2562047h0m0s"));
    }
}
