//! The retention policy: its text form (the user-editable file
//! `.ckpt/retention/policy`), parsing with line-numbered errors, and the
//! canonical text written back.
//!
//! One `key = value` per line; `#` starts a comment line; blank lines are
//! ignored. Every key may be given more than once and the last one wins,
//! so `echo 'keep-last = 5' >> policy` changes the policy. A count of 0 (or
//! a duration of `0s`) turns its rule off, as in restic. Keys are read
//! case-insensitively with `_` taken as `-`; a value may be wrapped in one
//! pair of double quotes.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::duration::format_duration;
use super::metric::{MetricMode, MetricSource, MetricSpec};
use super::text;
use super::values::{boolean, count, duration, metric_file, metric_regex, metric_xattr, whole};

/// What is wrong with a policy's text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A line does not parse, or the lines together do not make a policy.
    #[error("policy line {line}: {reason}")]
    Parse {
        /// The line at fault, counted from 1.
        line: usize,
        /// What is wrong, for the user.
        reason: String,
    },
}

/// Which snapshots (and per-file versions) to keep. A snapshot is kept
/// when any rule keeps it; with no rule at all every snapshot is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// `keep-last`: the N newest snapshots.
    pub keep_last: Option<u64>,
    /// `keep-within`: snapshots at most this old.
    pub keep_within: Option<Duration>,
    /// `keep-hourly`: the newest snapshot of each of the N latest UTC hours
    /// that have snapshots.
    pub keep_hourly: Option<u64>,
    /// `keep-daily`: the same per UTC day.
    pub keep_daily: Option<u64>,
    /// `keep-every`: snapshots whose sequence number is a multiple of N.
    pub keep_every: Option<u64>,
    /// `keep-best`: the K snapshots with the best metric.
    pub keep_best: Option<u64>,
    /// `metric`, `metric-mode` and the metric source.
    pub metric: Option<MetricSpec>,
    /// `keep-without-metric`: with keep-best, also keep snapshots whose
    /// metric is unknown (default true).
    pub keep_without_metric: bool,
    /// `file-versions-keep`: of the per-file versions no kept snapshot
    /// holds, keep the N newest of each path (None: keep all).
    pub file_versions_keep: Option<u64>,
    /// `gc-interval`: how often the daemon collects (None: its default).
    pub gc_interval: Option<Duration>,
}

impl Default for Policy {
    /// The empty policy: no rules, so everything is kept.
    fn default() -> Self {
        Policy {
            keep_last: None,
            keep_within: None,
            keep_hourly: None,
            keep_daily: None,
            keep_every: None,
            keep_best: None,
            metric: None,
            keep_without_metric: true,
            file_versions_keep: None,
            gc_interval: None,
        }
    }
}

/// A value as last set, with the line that set it.
type Seen<T> = Option<(usize, T)>;

/// What the lines said, before the cross-line checks.
#[derive(Default)]
struct Lines {
    keep_best: Seen<Option<u64>>,
    name: Seen<String>,
    mode: Seen<MetricMode>,
    source: Seen<MetricSource>,
    key: Seen<String>,
}

fn err(line: usize, reason: impl Into<String>) -> PolicyError {
    PolicyError::Parse {
        line,
        reason: reason.into(),
    }
}

impl Policy {
    /// Parses a policy file. An empty (or all-comment) text is the empty
    /// policy, which keeps everything.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let (mut p, l) = Self::parse_lines(text)?;
        p.keep_best = l.keep_best.and_then(|(_, k)| k);
        p.metric = metric_spec(&p, l)?;
        Ok(p)
    }

    /// Checks each line on its own (known key, well-formed value), not the
    /// rules between lines: a text still being written (`keep-best`
    /// before its metric source) passes, a typo does not.
    pub fn check_lines(text: &str) -> Result<(), PolicyError> {
        Self::parse_lines(text).map(|_| ())
    }

    fn parse_lines(text: &str) -> Result<(Policy, Lines), PolicyError> {
        let mut p = Policy::default();
        let mut l = Lines::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((k, v)) = trimmed.split_once('=') else {
                return Err(err(
                    line,
                    format!("expected `key = value`, found `{trimmed}`"),
                ));
            };
            let key = k.trim().to_ascii_lowercase().replace('_', "-");
            let value = text::unquote(v.trim());
            if key.is_empty() {
                return Err(err(line, "missing key before `=`"));
            }
            if value.is_empty() {
                return Err(err(line, format!("missing value for {key}")));
            }
            let set = |res: Result<(), String>| res.map_err(|r| err(line, r));
            match key.as_str() {
                "keep-last" => set(count(&key, value).map(|v| p.keep_last = v))?,
                "keep-within" => set(duration(&key, value).map(|v| p.keep_within = v))?,
                "keep-hourly" => set(count(&key, value).map(|v| p.keep_hourly = v))?,
                "keep-daily" => set(count(&key, value).map(|v| p.keep_daily = v))?,
                "keep-every" => set(count(&key, value).map(|v| p.keep_every = v))?,
                "keep-best" => set(count(&key, value).map(|v| l.keep_best = Some((line, v))))?,
                "keep-without-metric" => {
                    set(boolean(&key, value).map(|v| p.keep_without_metric = v))?
                }
                "file-versions-keep" => {
                    set(whole(&key, value).map(|v| p.file_versions_keep = Some(v)))?
                }
                "gc-interval" => set(duration(&key, value).map(|v| p.gc_interval = v))?,
                "metric" => l.name = Some((line, value.to_string())),
                "metric-mode" => set(value.parse().map(|m| l.mode = Some((line, m))))?,
                "metric-key" => l.key = Some((line, value.to_string())),
                "metric-file" => set(metric_file(value).map(|s| l.source = Some((line, s))))?,
                "metric-regex" => set(metric_regex(value).map(|s| l.source = Some((line, s))))?,
                "metric-xattr" => set(metric_xattr(value).map(|s| l.source = Some((line, s))))?,
                other => return Err(err(line, text::unknown_key(other))),
            }
        }
        Ok((p, l))
    }

    /// True when at least one snapshot rule is set; without one, every
    /// snapshot is kept.
    pub fn has_rules(&self) -> bool {
        let on = |n: Option<u64>| n.is_some_and(|n| n > 0);
        on(self.keep_last)
            || self.keep_within.is_some_and(|d| !d.is_zero())
            || on(self.keep_hourly)
            || on(self.keep_daily)
            || on(self.keep_every)
            || on(self.keep_best)
    }

    /// The canonical text: one line per set key, in a fixed order, no
    /// comments. `Policy::parse(&p.to_text())` gives `p` back.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| out.push_str(&format!("{key} = {value}\n"));
        let on = |n: Option<u64>| n.filter(|n| *n > 0).map(|n| n.to_string());
        let dur = |d: Option<Duration>| d.filter(|d| !d.is_zero()).map(format_duration);
        let rules = [
            ("keep-last", on(self.keep_last)),
            ("keep-within", dur(self.keep_within)),
            ("keep-hourly", on(self.keep_hourly)),
            ("keep-daily", on(self.keep_daily)),
            ("keep-every", on(self.keep_every)),
            ("keep-best", on(self.keep_best)),
        ];
        for (key, value) in rules {
            if let Some(value) = value {
                line(key, value);
            }
        }
        if let Some(m) = &self.metric {
            if let Some(name) = &m.name {
                line("metric", text::quote(name));
            }
            line("metric-mode", m.mode.label().to_string());
            match &m.source {
                MetricSource::File { path, key } => {
                    line("metric-file", text::quote(path));
                    line("metric-key", text::quote(key));
                }
                MetricSource::Regex(re) => line("metric-regex", text::quote(re.as_str())),
                MetricSource::Xattr(name) => line("metric-xattr", text::quote(name)),
            }
        }
        if !self.keep_without_metric {
            line("keep-without-metric", "false".into());
        }
        if let Some(n) = self.file_versions_keep {
            line("file-versions-keep", n.to_string());
        }
        if let Some(d) = dur(self.gc_interval) {
            line("gc-interval", d);
        }
        out
    }

    /// The policy file users first see: every key, commented out, with
    /// what it does. It has no active rule, so it keeps everything.
    pub fn default_text() -> &'static str {
        text::DEFAULT_TEXT
    }
}

/// The cross-line checks of the metric keys.
fn metric_spec(p: &Policy, l: Lines) -> Result<Option<MetricSpec>, PolicyError> {
    const SOURCES: &str = "metric-file (with metric-key), metric-regex or metric-xattr";
    let Some((src_line, mut source)) = l.source else {
        if let Some((line, _)) = l.keep_best.filter(|_| p.keep_best.is_some()) {
            return Err(err(
                line,
                format!("keep-best needs a metric source: set {SOURCES}"),
            ));
        }
        if let Some((line, _)) = l.key {
            return Err(err(
                line,
                "metric-key needs metric-file (the JSON file to read it from)",
            ));
        }
        let first = [
            l.name.map(|(n, _)| (n, "metric")),
            l.mode.map(|(n, _)| (n, "metric-mode")),
        ];
        if let Some((line, key)) = first.into_iter().flatten().min() {
            return Err(err(
                line,
                format!("{key} needs a metric source: set {SOURCES}"),
            ));
        }
        return Ok(None);
    };
    match (&mut source, l.key) {
        (MetricSource::File { key, .. }, Some((_, k))) => *key = k,
        (MetricSource::File { .. }, None) => {
            return Err(err(
                src_line,
                "metric-file needs metric-key, the key path of the number in the JSON file \
                 (e.g. best_metric or log_history.-1.eval_loss)",
            ))
        }
        (other, Some((line, _))) => {
            return Err(err(
                line,
                format!(
                    "metric-key is only used with metric-file, but the metric source is {}",
                    other.key()
                ),
            ))
        }
        (_, None) => {}
    }
    Ok(Some(MetricSpec {
        name: l.name.map(|(_, n)| n),
        mode: l.mode.map(|(_, m)| m).unwrap_or_default(),
        source,
    }))
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Policy {
        Policy::parse(text).unwrap()
    }

    /// The line and reason of a parse error.
    fn fail(text: &str) -> (usize, String) {
        match Policy::parse(text) {
            Err(PolicyError::Parse { line, reason }) => (line, reason),
            Ok(p) => panic!("{text:?} parsed as {p:?}"),
        }
    }

    const FULL: &str = "\
# a comment
keep-last = 5
keep-within = 1d12h

keep-hourly = 24
  keep-daily = 7
keep-every = 10
keep-best = 3
metric = eval loss
metric-mode = max
metric-file = out/trainer_state.json
metric-key = log_history.-1.eval_loss
keep-without-metric = false
file-versions-keep = 2
gc-interval = 30m
";

    #[test]
    fn parses_every_key() {
        let p = parse(FULL);
        assert_eq!(p.keep_last, Some(5));
        assert_eq!(p.keep_within, Some(Duration::from_secs(36 * 3_600)));
        assert_eq!(p.keep_hourly, Some(24));
        assert_eq!(p.keep_daily, Some(7));
        assert_eq!(p.keep_every, Some(10));
        assert_eq!(p.keep_best, Some(3));
        let m = p.metric.as_ref().unwrap();
        assert_eq!(m.name.as_deref(), Some("eval loss"));
        assert_eq!(m.mode, MetricMode::Max);
        let file = MetricSource::File {
            path: "out/trainer_state.json".into(),
            key: "log_history.-1.eval_loss".into(),
        };
        assert_eq!(m.source, file);
        assert!(!p.keep_without_metric);
        assert_eq!(p.file_versions_keep, Some(2));
        assert_eq!(p.gc_interval, Some(Duration::from_secs(1_800)));
        assert!(p.has_rules());
    }

    #[test]
    fn other_metric_sources() {
        let p = parse("keep-best = 1\nmetric-regex = val_loss=([0-9.]+)\n");
        let m = p.metric.unwrap();
        assert_eq!(m.mode, MetricMode::Min);
        assert_eq!(m.name, None);
        assert_eq!(m.display_name(), "metric");
        match &m.source {
            MetricSource::Regex(re) => assert_eq!(re.as_str(), "val_loss=([0-9.]+)"),
            other => panic!("{other:?}"),
        }
        let p = parse("keep-best = 1\nmetric-xattr = user.acc\nmetric-mode = max");
        let m = p.metric.unwrap();
        assert_eq!(m.source, MetricSource::Xattr("user.acc".into()));
        assert_eq!(m.display_name(), "user.acc");
        // A metric source without keep-best is allowed (for display).
        let p = parse("metric-file = trainer_state.json\nmetric-key = best_metric");
        assert!(!p.has_rules());
        assert_eq!(p.metric.unwrap().display_name(), "best_metric");
    }

    #[test]
    fn empty_and_comment_only_policies_keep_all() {
        for text in ["", "\n\n", "# only a comment\n   # indented\n\t\n"] {
            let p = parse(text);
            assert_eq!(p, Policy::default());
            assert!(!p.has_rules());
            assert!(p.keep_without_metric);
            assert_eq!(p.to_text(), "");
        }
    }

    #[test]
    fn later_keys_override_earlier_ones() {
        let p = parse("keep-last = 3\nkeep-daily = 7\nkeep-last = 5\n");
        assert_eq!((p.keep_last, p.keep_daily), (Some(5), Some(7)));
        // Appending 0 turns a rule off again.
        let p = parse("keep-last = 3\nkeep-within = 2d\nkeep-last = 0\nkeep-within = 0s");
        assert_eq!(p, Policy::default());
        // The last metric source wins.
        let p = parse("keep-best = 2\nmetric-regex = l=(.*)\nmetric-xattr = user.m\n");
        assert_eq!(
            p.metric.unwrap().source,
            MetricSource::Xattr("user.m".into())
        );
        // keep-best turned off no longer needs a source.
        assert_eq!(parse("keep-best = 2\nkeep-best = 0"), Policy::default());
    }

    #[test]
    fn keys_and_values_are_read_leniently() {
        let p = parse("Keep_Last=4\nmetric-file = \"my file.json\"\nmetric-key=\" a \"\nkeep-without-metric = no");
        assert_eq!(p.keep_last, Some(4));
        let m = p.metric.unwrap();
        let file = MetricSource::File {
            path: "my file.json".into(),
            key: " a ".into(),
        };
        assert_eq!(m.source, file);
        assert!(!p.keep_without_metric);
        assert!(parse("keep-without-metric = TRUE").keep_without_metric);
        assert_eq!(
            parse("\u{feff}keep-last = 2\r\nkeep-daily = 1\r\n").keep_daily,
            Some(1)
        );
        // A regex may contain `=` and `#`.
        let p = parse("metric-regex = a=#(\\d+)");
        assert!(
            matches!(p.metric.unwrap().source, MetricSource::Regex(r) if r.as_str() == "a=#(\\d+)")
        );
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "keep-lst = 5",
                1,
                "unknown key `keep-lst` (did you mean `keep-last`?)",
            ),
            ("# c\n\nretain = 5", 3, "unknown key `retain`"),
            ("keep-last = 5\nkeep-last", 2, "expected `key = value`"),
            ("= 5", 1, "missing key"),
            ("keep-last =", 1, "missing value for keep-last"),
            ("keep-last = \"\"", 1, "missing value for keep-last"),
            ("keep-last = five", 1, "bad number `five` for keep-last"),
            ("keep-last = -1", 1, "bad number `-1`"),
            ("keep-daily = 1.5", 1, "bad number `1.5` for keep-daily"),
            (
                "keep-last = 5 # five",
                1,
                "comments must be on a line of their own",
            ),
            (
                "file-versions-keep = x",
                1,
                "bad number `x` for file-versions-keep",
            ),
            (
                "keep-within = 7",
                1,
                "bad duration `7` for keep-within: `7` has no unit",
            ),
            ("\nkeep-within = 1y", 2, "unknown unit `y`"),
            (
                "gc-interval = soon",
                1,
                "bad duration `soon` for gc-interval",
            ),
            ("keep-without-metric = maybe", 1, "expected true or false"),
            (
                "metric-mode = lowest",
                1,
                "metric-mode must be `min` or `max`, not `lowest`",
            ),
            (
                "metric-regex = val=([0-9",
                1,
                "bad regex in metric-regex: unclosed",
            ),
            ("metric-regex = val=[0-9]+", 1, "exactly one capture group"),
            ("metric-regex = (a)=(b)", 1, "it has 2"),
            (
                "metric-file = /etc/x.json",
                1,
                "must be a path relative to the snapshot root",
            ),
            ("metric-file = ../x.json", 1, "without `..`"),
            ("metric-xattr = trusted.x", 1, "must be a user xattr name"),
            ("metric-xattr = user.", 1, "must be a user xattr name"),
            (
                "keep-last = 1\nkeep-best = 3",
                2,
                "keep-best needs a metric source",
            ),
            (
                "metric-file = a.json\nkeep-best = 1",
                1,
                "metric-file needs metric-key",
            ),
            (
                "metric-key = best_metric",
                1,
                "metric-key needs metric-file",
            ),
            (
                "metric-key = a\nmetric-regex = (.*)",
                1,
                "metric-key is only used with metric-file",
            ),
            ("metric-mode = max", 1, "metric-mode needs a metric source"),
            (
                "keep-last = 1\nmetric = loss\nmetric-mode = min",
                2,
                "metric needs a metric source",
            ),
        ];
        for (text, line, reason) in cases {
            let (l, r) = fail(text);
            assert_eq!(
                (l, r.contains(reason)),
                (*line, true),
                "{text:?}: line {l}: {r}"
            );
        }
        let e = Policy::parse("x = 1").unwrap_err();
        assert!(
            e.to_string().starts_with("policy line 1: unknown key `x`"),
            "{e}"
        );
    }

    #[test]
    fn to_text_is_canonical_and_round_trips() {
        let p = parse(FULL);
        let text = p.to_text();
        assert_eq!(
            text,
            "keep-last = 5\nkeep-within = 1d12h\nkeep-hourly = 24\nkeep-daily = 7\n\
             keep-every = 10\nkeep-best = 3\nmetric = eval loss\nmetric-mode = max\n\
             metric-file = out/trainer_state.json\nmetric-key = log_history.-1.eval_loss\n\
             keep-without-metric = false\nfile-versions-keep = 2\ngc-interval = 30m\n"
        );
        assert_eq!(parse(&text), p);
        assert_eq!(parse(&text).to_text(), text);
        let others = [
            "keep-best = 2\nmetric-regex = \"  x=(\\d+) \"\nkeep-within = 90s",
            "metric = \"quoted\"\nmetric-xattr = user.m\nfile-versions-keep = 0",
            "keep-every = 1\nkeep-within = 14d",
        ];
        for text in others {
            let p = parse(text);
            assert_eq!(parse(&p.to_text()), p, "{text:?} -> {:?}", p.to_text());
        }
        assert_eq!(parse("keep-within = 14d").to_text(), "keep-within = 2w\n");
        assert_eq!(
            parse("metric = \"quoted\"\nmetric-xattr = user.m")
                .metric
                .unwrap()
                .name
                .as_deref(),
            Some("quoted")
        );
        let q = Policy {
            metric: Some(MetricSpec {
                name: Some("\"q\"".into()),
                mode: MetricMode::Min,
                source: MetricSource::Xattr("user.a".into()),
            }),
            ..Policy::default()
        };
        assert_eq!(parse(&q.to_text()), q);
    }

    #[test]
    fn line_checks_pass_unfinished_texts_but_not_typos() {
        assert!(Policy::check_lines("keep-last = 2\nkeep-best = 1\n").is_ok());
        assert!(Policy::parse("keep-last = 2\nkeep-best = 1\n").is_err());
        assert!(Policy::check_lines("keep-last = x\n").is_err());
        assert!(Policy::check_lines("kep-last = 2\n").is_err());
    }

    #[test]
    fn from_str_parses() {
        let p: Policy = "keep-daily = 3".parse().unwrap();
        assert_eq!(p.keep_daily, Some(3));
    }
}
