//! The syntax of mount option values, shared by the `ckptfs mount` flags
//! and the TOML config file so that both accept exactly the same text:
//! sizes (`16K`), intervals (`10m`), control directory names, log levels
//! and thread counts. Each parser returns the user-facing reason on error.

use std::time::Duration;

/// Parses "16384", "16K", "16KiB", "1M", "2G".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 16K or 1M)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A control directory name: one path component, not `.` or `..`.
pub fn parse_control_dir(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 255 || text.contains('/') || text == "." || text == ".." {
        return Err(format!("'{text}' is not a usable directory name"));
    }
    Ok(text.to_string())
}

/// A GC interval: `0` (timer off) or a duration such as `10m`, `1h30m`.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::retention::parse_duration(text).map_err(|e| e.to_string())
}

/// A log level: error, warn, info, debug, trace (or off).
pub fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a log level (use error, warn, info, debug or trace)"))
}

/// The thread counts (`fuse-threads`, `workers`) allow 1 to this.
pub const MAX_THREADS: u16 = 64;

/// A thread count, 1 to [`MAX_THREADS`].
pub fn check_threads(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(v) if (1..=MAX_THREADS).contains(&v) => Ok(v),
        _ => Err(format!("{n} is not in 1..={MAX_THREADS}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_bad_ones_say_why() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert!(parse_size("16Q").unwrap_err().contains("unit"));
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_interval("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_interval("10").is_err());
        assert_eq!(parse_control_dir(".snap"), Ok(".snap".to_string()));
        assert!(parse_control_dir("a/b").is_err());
        assert_eq!(parse_log_level("debug"), Ok(log::LevelFilter::Debug));
        assert!(parse_log_level("loud").unwrap_err().contains("loud"));
        assert_eq!(check_threads(4), Ok(4));
        assert!(check_threads(0).is_err());
        assert!(check_threads(65).is_err());
    }
}
