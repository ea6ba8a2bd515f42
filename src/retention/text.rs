//! The wording of the policy file: the known keys, value quoting, the
//! "unknown key" message and the default file shown to users.

/// Every key the policy file knows, in canonical order.
pub(crate) const KEYS: [&str; 15] = [
    "keep-last",
    "keep-within",
    "keep-hourly",
    "keep-daily",
    "keep-every",
    "keep-best",
    "metric",
    "metric-mode",
    "metric-file",
    "metric-key",
    "metric-regex",
    "metric-xattr",
    "keep-without-metric",
    "file-versions-keep",
    "gc-interval",
];

/// Drops one pair of surrounding double quotes, if any.
pub(crate) fn unquote(value: &str) -> &str {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

/// Quotes a value that [`unquote`] and trimming would otherwise change.
pub(crate) fn quote(value: &str) -> String {
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    if quoted || value.trim() != value {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

/// "unknown key", with the closest known key when one is near.
pub(crate) fn unknown_key(key: &str) -> String {
    let near = KEYS
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match near {
        Some((_, k)) => format!("unknown key `{key}` (did you mean `{k}`?)"),
        None => format!("unknown key `{key}` (known keys: {})", KEYS.join(", ")),
    }
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The default policy file: no active rule, every key as an example.
pub(crate) const DEFAULT_TEXT: &str = r##"# ckptfs retention policy: which snapshots are kept.
#
# Each rule keeps some snapshots; a snapshot is kept when any rule keeps
# it. The newest snapshot and pinned snapshots are always kept. With no
# rule at all, as in this file, every snapshot is kept.
#
# One `key = value` per line. Lines starting with # are comments (a
# comment cannot follow a value on the same line). When a key is given
# twice the later line wins, so appending works:
#     echo 'keep-last = 5' >> .ckpt/retention/policy
# A count of 0 turns its rule off. Durations are written 90s, 30m, 12h,
# 7d, 2w or 1d12h. To use an example below, remove its leading "# ".

# The 5 newest snapshots.
# keep-last = 5

# Every snapshot at most 2 days old.
# keep-within = 2d

# For each of the 24 latest hours (UTC) that have snapshots, the newest
# snapshot of that hour.
# keep-hourly = 24

# For each of the 7 latest days (UTC) that have snapshots, the newest
# snapshot of that day.
# keep-daily = 7

# Every snapshot whose sequence number is a multiple of 10.
# keep-every = 10

# The 3 snapshots with the best metric (ties go to the newer snapshot).
# metric names it; metric-mode is min (smaller is better, the default)
# or max.
# keep-best = 3
# metric = eval_loss
# metric-mode = min
#
# keep-best needs one metric source. Either a number in a JSON file of
# the snapshot: metric-key is a key path with dots between keys, array
# indexes as numbers, -1 for the last element (for HF trainer_state.json:
# best_metric, or log_history.-1.eval_loss)
# metric-file = trainer_state.json
# metric-key = best_metric
#
# or a regex with one capture group around the number, matched against
# the snapshot's file names (when several match, the best value counts)
# metric-regex = val_loss=([0-9.]+)
#
# or an extended attribute of the snapshot's root directory
# metric-xattr = user.eval_loss

# With keep-best: also keep the snapshots whose metric cannot be read
# (true, the default), or let them go unless another rule keeps them.
# keep-without-metric = true

# File versions that no kept snapshot holds: keep the 3 newest of each
# file (its newest version is always kept). Unset: keep them all.
# file-versions-keep = 3

# How often garbage collection runs. Unset: the daemon's default.
# gc-interval = 1h
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::policy::Policy;

    #[test]
    fn quoting_round_trips() {
        for v in ["plain", " padded ", "\"quoted\"", "a\"b", "\"", "x=(.*)"] {
            let text = quote(v);
            assert_eq!(unquote(text.trim()), v, "{v:?} via {text:?}");
        }
        assert_eq!(quote("plain"), "plain");
        assert_eq!(unquote("\"x\""), "x");
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        assert!(unknown_key("keep-lst").contains("did you mean `keep-last`"));
        assert!(unknown_key("metric-moed").contains("did you mean `metric-mode`"));
        assert!(unknown_key("retain").contains("known keys: keep-last"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn default_text_has_no_rules_and_shows_every_key() {
        let text = DEFAULT_TEXT;
        assert_eq!(Policy::parse(text).unwrap(), Policy::default());
        assert!(text.lines().all(|l| l.is_empty() || l.starts_with('#')));
        let examples: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| KEYS.contains(&k)))
            .collect();
        let mut keys: Vec<&str> = examples
            .iter()
            .filter_map(|l| l.split(" = ").next())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut all = KEYS.to_vec();
        all.sort_unstable();
        assert_eq!(keys, all);
        // Uncommenting the examples (one metric source at a time) works.
        let sources = ["metric-file", "metric-regex", "metric-xattr"];
        for source in sources {
            let chosen: Vec<&str> = examples
                .iter()
                .filter(|l| l.starts_with(source) || !sources.iter().any(|k| l.starts_with(k)))
                .filter(|l| source == "metric-file" || !l.starts_with("metric-key"))
                .copied()
                .collect();
            let p = Policy::parse(&chosen.join("\n")).unwrap_or_else(|e| panic!("{e}\n{chosen:?}"));
            assert!(p.has_rules());
            assert_eq!(p.keep_last, Some(5));
            assert!(p.metric.is_some());
        }
    }
}
