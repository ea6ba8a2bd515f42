//! Reading one value of the policy file: counts, durations, booleans and
//! the metric sources, each with the message a user sees when it is wrong.

use std::time::Duration;

use regex::Regex;

use super::duration::parse_duration;
use super::metric::MetricSource;

/// A whole number, 0 included.
pub(crate) fn whole(key: &str, value: &str) -> Result<u64, String> {
    value.parse::<u64>().map_err(|_| {
        format!(
            "bad number `{value}` for {key}: expected a whole number such as 5{}",
            comment_hint(value)
        )
    })
}

/// A count; 0 turns the rule off.
pub(crate) fn count(key: &str, value: &str) -> Result<Option<u64>, String> {
    whole(key, value).map(|n| (n > 0).then_some(n))
}

/// A duration; `0s` turns the rule off.
pub(crate) fn duration(key: &str, value: &str) -> Result<Option<Duration>, String> {
    match parse_duration(value) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "bad duration `{value}` for {key}: {e}; use e.g. 90s, 30m, 12h, 7d, 2w or 1d12h{}",
            comment_hint(value)
        )),
    }
}

/// `true`/`false` (also `yes`/`no`, `on`/`off`), any case.
pub(crate) fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "bad value `{value}` for {key}: expected true or false{}",
            comment_hint(value)
        )),
    }
}

fn comment_hint(value: &str) -> &'static str {
    if value.contains('#') {
        " (comments must be on a line of their own)"
    } else {
        ""
    }
}

/// A JSON file inside the snapshot (relative, no `..`); the key path is
/// filled in after all lines are read.
pub(crate) fn metric_file(value: &str) -> Result<MetricSource, String> {
    let bad =
        value.starts_with('/') || value.contains('\0') || value.split('/').any(|part| part == "..");
    if bad {
        return Err(format!(
            "metric-file `{value}` must be a path relative to the snapshot root, without `..`"
        ));
    }
    Ok(MetricSource::File {
        path: value.to_string(),
        key: String::new(),
    })
}

/// A regex with exactly one capture group.
pub(crate) fn metric_regex(value: &str) -> Result<MetricSource, String> {
    let re = Regex::new(value).map_err(|e| {
        // The regex crate's message ends in one line saying what is wrong.
        let full = e.to_string();
        let what = full.lines().last().unwrap_or_default();
        format!(
            "bad regex in metric-regex: {}",
            what.trim_start_matches("error: ")
        )
    })?;
    let groups = re.captures_len() - 1;
    if groups != 1 {
        return Err(format!(
            "metric-regex must have exactly one capture group `(...)` around the number, \
             it has {groups} (use `(?:...)` for other groups)"
        ));
    }
    Ok(MetricSource::Regex(re))
}

/// A `user.` xattr name.
pub(crate) fn metric_xattr(value: &str) -> Result<MetricSource, String> {
    match value.strip_prefix("user.") {
        Some(rest) if !rest.is_empty() && !value.contains('\0') => {
            Ok(MetricSource::Xattr(value.to_string()))
        }
        _ => Err(format!(
            "metric-xattr `{value}` must be a user xattr name such as user.val_loss"
        )),
    }
}
