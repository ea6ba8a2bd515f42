//! Durations as users write them in the policy file: a sum of whole
//! numbers with units, `90s`, `30m`, `12h`, `7d`, `2w`, `1d12h`.

use std::time::Duration;

use thiserror::Error;

/// A duration that does not parse; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct BadDuration(String);

/// The units, largest first, with their length in seconds.
const UNITS: [(char, u64); 5] = [
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// Parses `1d12h`-style text: one or more `<digits><unit>` parts, units
/// `s`, `m`, `h`, `d`, `w`, each at most once. No sign, no spaces.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    if text.is_empty() {
        return Err(BadDuration("empty duration".into()));
    }
    let mut total: u64 = 0;
    let mut seen = String::new();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some(&(unit, secs)) = UNITS.iter().find(|(u, _)| *u == c) else {
            return Err(BadDuration(format!(
                "unknown unit `{c}` (use s, m, h, d or w)"
            )));
        };
        if digits.is_empty() {
            return Err(BadDuration(format!("a number must come before `{unit}`")));
        }
        if seen.contains(unit) {
            return Err(BadDuration(format!("unit `{unit}` given twice")));
        }
        seen.push(unit);
        let n: u64 = digits
            .parse()
            .map_err(|_| BadDuration(format!("number `{digits}` is too large")))?;
        total = n
            .checked_mul(secs)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| BadDuration("duration is too large".into()))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(BadDuration(format!(
            "`{digits}` has no unit (write e.g. {digits}s, {digits}m, {digits}h or {digits}d)"
        )));
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration in the form [`parse_duration`] reads, largest units
/// first (`36h` is `1d12h`, 14 days is `2w`). Sub-second parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, secs) in UNITS {
        let n = left / secs;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            left -= n * secs;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_duration(text).unwrap().as_secs()
    }

    #[test]
    fn parses_every_unit_and_sums() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("30m"), 1_800);
        assert_eq!(secs("12h"), 43_200);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(secs("2w"), 1_209_600);
        assert_eq!(secs("1d12h"), 129_600);
        assert_eq!(secs("1h30m15s"), 5_415);
        assert_eq!(secs("0s"), 0);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "5",
            "h",
            "5x",
            "1d1d",
            "-5m",
            "1.5h",
            "5 m",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_duration("5").unwrap_err().0.contains("no unit"));
        assert!(parse_duration("5y").unwrap_err().0.contains("unknown unit"));
        assert!(parse_duration("1d1d").unwrap_err().0.contains("twice"));
        assert!(parse_duration(&format!("{}w", u64::MAX / 1000))
            .unwrap_err()
            .0
            .contains("too large"));
    }

    #[test]
    fn formats_canonically_and_round_trips() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(129_600)), "1d12h");
        assert_eq!(format_duration(Duration::from_secs(14 * 86_400)), "2w");
        for s in [1, 59, 60, 3_599, 86_399, 86_401, 1_000_000, 123_456_789] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
