//! Output helpers shared by the operator commands: sizes, times, ratios,
//! aligned tables and JSON on stdout.

use anyhow::Result;

use crate::tree::{rfc3339, Time};

/// A size for people: `512 B`, `1.5 KiB`, `12.3 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `1 file`, `2 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An RFC 3339 time cut to whole seconds, for tables.
pub fn short_time(rfc: &str) -> String {
    match rfc.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => rfc.to_string(),
    }
}

/// A store time as RFC 3339 UTC.
pub fn time(t: Time) -> String {
    rfc3339(t)
}

/// A file mode as four octal digits.
pub fn mode(perm: u32) -> String {
    format!("{:04o}", perm & 0o7777)
}

/// Prints rows under headers, columns padded to their widest cell (the
/// last column is not padded).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints a JSON value, pretty, on stdout.
pub fn json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(
            short_time("2026-11-26T03:16:04.123456Z"),
            "2026-11-26T03:16:04Z"
        );
        assert_eq!(short_time("2026-11-26T03:16:04Z"), "2026-11-26T03:16:04Z");
        assert_eq!(mode(0o100644), "0644");
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(0, "file", "files"), "0 files");
    }
}
