//! Where a snapshot's metric comes from, and reading it out of plain
//! inputs: a JSON file's text, the snapshot's file names, an xattr value.
//!
//! Pure functions: the caller fetches the bytes from the snapshot. A value
//! that is missing, not a number, NaN or infinite is "no metric" (`None`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use regex::Regex;
use serde_json::Value;

/// Whether smaller or larger metric values are better.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MetricMode {
    /// Smaller is better (a loss).
    #[default]
    Min,
    /// Larger is better (an accuracy).
    Max,
}

impl MetricMode {
    /// The word used in the policy file: `min` or `max`.
    pub fn label(self) -> &'static str {
        match self {
            MetricMode::Min => "min",
            MetricMode::Max => "max",
        }
    }

    /// Orders two values best first: `Less` when `a` is better than `b`.
    /// Uses the IEEE total order, so it is total even on NaN.
    pub fn best_first(self, a: f64, b: f64) -> Ordering {
        match self {
            MetricMode::Min => a.total_cmp(&b),
            MetricMode::Max => b.total_cmp(&a),
        }
    }

    /// The better of two values.
    pub fn best(self, a: f64, b: f64) -> f64 {
        if self.best_first(b, a) == Ordering::Less {
            b
        } else {
            a
        }
    }
}

impl FromStr for MetricMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "min" => Ok(MetricMode::Min),
            "max" => Ok(MetricMode::Max),
            other => Err(format!("metric-mode must be `min` or `max`, not `{other}`")),
        }
    }
}

impl fmt::Display for MetricMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where a snapshot's metric is read from; one per policy, mirroring the
/// keys `metric-file` + `metric-key`, `metric-regex` and `metric-xattr`.
#[derive(Clone, Debug)]
pub enum MetricSource {
    /// A JSON file inside the snapshot and a dotted key path into it
    /// (see [`metric_from_json`]).
    File {
        /// The file, relative to the snapshot root.
        path: String,
        /// The key path, e.g. `best_metric` or `log_history.-1.eval_loss`.
        key: String,
    },
    /// A regex with one capture group, applied to the snapshot's file
    /// names (see [`metric_from_names`]).
    Regex(Regex),
    /// An extended attribute of the snapshot root (see
    /// [`metric_from_xattr`]).
    Xattr(String),
}

impl MetricSource {
    /// The policy key that names this source.
    pub fn key(&self) -> &'static str {
        match self {
            MetricSource::File { .. } => "metric-file",
            MetricSource::Regex(_) => "metric-regex",
            MetricSource::Xattr(_) => "metric-xattr",
        }
    }
}

impl PartialEq for MetricSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                MetricSource::File { path: p1, key: k1 },
                MetricSource::File { path: p2, key: k2 },
            ) => p1 == p2 && k1 == k2,
            (MetricSource::Regex(a), MetricSource::Regex(b)) => a.as_str() == b.as_str(),
            (MetricSource::Xattr(a), MetricSource::Xattr(b)) => a == b,
            _ => false,
        }
    }
}

/// The metric settings of a policy: its name, direction and source.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSpec {
    /// The name shown to users (`metric = NAME`), if given.
    pub name: Option<String>,
    /// Whether smaller or larger is better.
    pub mode: MetricMode,
    /// Where the value is read from.
    pub source: MetricSource,
}

impl MetricSpec {
    /// The name to show: `metric` if set, else one derived from the source
    /// (the JSON key, the xattr name, or `metric`).
    pub fn display_name(&self) -> &str {
        if let Some(name) = &self.name {
            return name;
        }
        match &self.source {
            MetricSource::File { key, .. } => key,
            MetricSource::Xattr(name) => name,
            MetricSource::Regex(_) => "metric",
        }
    }
}

/// A finite number read from text: surrounding whitespace and NULs are
/// ignored, and so are trailing dots, so that `val_loss=([0-9.]+)` over
/// `val_loss=0.52.ckpt` (capturing `0.52.`) yields 0.52.
pub fn metric_from_text(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let v = match t.parse::<f64>() {
        Ok(v) => v,
        Err(_) => t.trim_end_matches('.').parse::<f64>().ok()?,
    };
    v.is_finite().then_some(v)
}

/// The metric stored in an xattr value (UTF-8 text of a number).
pub fn metric_from_xattr(value: &[u8]) -> Option<f64> {
    metric_from_text(std::str::from_utf8(value).ok()?)
}

/// The number at `key_path` in a JSON document, or `None`.
///
/// The path is dot-separated. At an object a part is a key (a key that
/// itself contains dots is matched too: `a.b` finds `{"a.b": 1}`); at an
/// array it is an index, negative from the end (`-1` is the last element).
/// An empty path is the document itself. The value may be a number or a
/// string holding one (`"0.25"`). Python's bare `NaN`/`Infinity` literals,
/// which `json.dump` writes, do not make the whole file unreadable.
///
/// For HF's `trainer_state.json`: `best_metric`, or
/// `log_history.-1.eval_loss`.
pub fn metric_from_json(text: &str, key_path: &str) -> Option<f64> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(doc) => doc,
        Err(_) => serde_json::from_str(&python_literals_to_null(text)).ok()?,
    };
    let parts: Vec<&str> = if key_path.is_empty() {
        Vec::new()
    } else {
        key_path.split('.').collect()
    };
    lookup(&doc, &parts).into_iter().find_map(|v| match v {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite()),
        Value::String(s) => metric_from_text(s),
        _ => None,
    })
}

/// Every value the path can name (more than one only when keys with dots
/// make it ambiguous), longest keys first.
fn lookup<'v>(v: &'v Value, parts: &[&str]) -> Vec<&'v Value> {
    if parts.is_empty() {
        return vec![v];
    }
    match v {
        Value::Object(map) => {
            let mut found = Vec::new();
            for n in (1..=parts.len()).rev() {
                if let Some(child) = map.get(&parts[..n].join(".")) {
                    found.extend(lookup(child, &parts[n..]));
                }
            }
            found
        }
        Value::Array(items) => {
            let Ok(i) = parts[0].parse::<i64>() else {
                return Vec::new();
            };
            let idx = if i < 0 {
                items
                    .len()
                    .checked_sub(usize::try_from(i.unsigned_abs()).unwrap_or(usize::MAX))
            } else {
                usize::try_from(i).ok()
            };
            match idx.and_then(|idx| items.get(idx)) {
                Some(item) => lookup(item, &parts[1..]),
                None => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// Replaces `NaN`, `Infinity` and `-Infinity` outside strings with `null`.
fn python_literals_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(lit) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|lit| rest.starts_with(lit))
        {
            out.push_str("null");
            rest = &rest[lit.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The best value (by `mode`) that `regex`'s first capture group yields
/// over all matches in all `names`, or `None` when nothing matches a
/// finite number. A regex without groups uses the whole match.
pub fn metric_from_names<'a>(
    names: impl Iterator<Item = &'a str>,
    regex: &Regex,
    mode: MetricMode,
) -> Option<f64> {
    let mut best: Option<f64> = None;
    for name in names {
        for caps in regex.captures_iter(name) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            if let Some(v) = metric_from_text(m.as_str()) {
                best = Some(best.map_or(v, |b| mode.best(b, v)));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAINER_STATE: &str = r#"{
        "best_metric": 0.4123,
        "best_model_checkpoint": "out/checkpoint-500",
        "epoch": 2.0,
        "log_history": [
            {"loss": 1.9, "step": 100},
            {"eval_loss": 0.52, "step": 250},
            {"eval_loss": "0.4123", "step": 500, "eval": {"acc": [0.7, 0.81]}}
        ],
        "lr.schedule": {"final": 1e-5}
    }"#;

    #[test]
    fn json_top_level_and_hf_best_metric() {
        assert_eq!(metric_from_json(TRAINER_STATE, "best_metric"), Some(0.4123));
        assert_eq!(metric_from_json(TRAINER_STATE, "epoch"), Some(2.0));
        assert_eq!(metric_from_json("3.5", ""), Some(3.5));
    }

    #[test]
    fn json_array_indexes_positive_and_negative() {
        let t = TRAINER_STATE;
        assert_eq!(metric_from_json(t, "log_history.0.loss"), Some(1.9));
        assert_eq!(metric_from_json(t, "log_history.1.eval_loss"), Some(0.52));
        // A string that holds a number counts.
        assert_eq!(
            metric_from_json(t, "log_history.-1.eval_loss"),
            Some(0.4123)
        );
        assert_eq!(metric_from_json(t, "log_history.-2.eval_loss"), Some(0.52));
        assert_eq!(metric_from_json(t, "log_history.-3.loss"), Some(1.9));
        assert_eq!(metric_from_json(t, "log_history.-4.loss"), None);
        assert_eq!(metric_from_json(t, "log_history.3.loss"), None);
        assert_eq!(metric_from_json(t, "log_history.x.loss"), None);
        assert_eq!(metric_from_json(t, "log_history.0.eval_loss"), None);
    }

    #[test]
    fn json_nested_objects_and_dotted_keys() {
        let t = TRAINER_STATE;
        assert_eq!(metric_from_json(t, "log_history.-1.eval.acc.1"), Some(0.81));
        assert_eq!(metric_from_json(t, "log_history.-1.eval.acc.-2"), Some(0.7));
        assert_eq!(metric_from_json(t, "lr.schedule.final"), Some(1e-5));
        let both = r#"{"a": {"b": "x"}, "a.b": 7}"#;
        assert_eq!(metric_from_json(both, "a.b"), Some(7.0));
        let nested_wins = r#"{"a": {"b": 2}, "a.b": "x"}"#;
        assert_eq!(metric_from_json(nested_wins, "a.b"), Some(2.0));
    }

    #[test]
    fn json_non_numbers_and_bad_documents_are_missing() {
        let t = TRAINER_STATE;
        assert_eq!(metric_from_json(t, "best_model_checkpoint"), None);
        assert_eq!(metric_from_json(t, "log_history"), None);
        assert_eq!(metric_from_json(t, "nope"), None);
        assert_eq!(metric_from_json(t, "epoch.more"), None);
        assert_eq!(metric_from_json(r#"{"m": null}"#, "m"), None);
        assert_eq!(metric_from_json(r#"{"m": true}"#, "m"), None);
        assert_eq!(metric_from_json(r#"{"m": "NaN"}"#, "m"), None);
        assert_eq!(metric_from_json(r#"{"m": "inf"}"#, "m"), None);
        assert_eq!(metric_from_json("{not json", "m"), None);
        assert_eq!(metric_from_json("", "m"), None);
    }

    #[test]
    fn json_with_python_nan_literals_still_reads() {
        let t = r#"{"grad_norm": NaN, "x": -Infinity, "s": "NaN in a string", "loss": 0.3}"#;
        assert_eq!(metric_from_json(t, "loss"), Some(0.3));
        assert_eq!(metric_from_json(t, "grad_norm"), None);
        assert_eq!(metric_from_json(t, "x"), None);
        assert_eq!(
            python_literals_to_null(r#"["a\"NaN", NaN]"#),
            r#"["a\"NaN", null]"#
        );
    }

    #[test]
    fn text_and_xattr_values() {
        assert_eq!(metric_from_text(" 0.25\n"), Some(0.25));
        assert_eq!(metric_from_text("0.52."), Some(0.52));
        assert_eq!(metric_from_text("1e-3"), Some(0.001));
        assert_eq!(metric_from_text("-2"), Some(-2.0));
        assert_eq!(metric_from_text("inf"), None);
        assert_eq!(metric_from_text("NaN"), None);
        assert_eq!(metric_from_text("."), None);
        assert_eq!(metric_from_text("abc"), None);
        assert_eq!(metric_from_xattr(b"0.91\0"), Some(0.91));
        assert_eq!(metric_from_xattr(&[0xff, 0x30]), None);
    }

    #[test]
    fn names_pick_the_best_match_by_mode() {
        let re = Regex::new(r"val_loss=([0-9.]+)").unwrap();
        let names = [
            "epoch=1-val_loss=0.80.ckpt",
            "epoch=2-val_loss=0.52.ckpt",
            "README.md",
            "epoch=3-val_loss=0.61.ckpt",
        ];
        assert_eq!(
            metric_from_names(names.iter().copied(), &re, MetricMode::Min),
            Some(0.52)
        );
        assert_eq!(
            metric_from_names(names.iter().copied(), &re, MetricMode::Max),
            Some(0.80)
        );
        assert_eq!(
            metric_from_names(["a", "b"].into_iter(), &re, MetricMode::Min),
            None
        );
        assert_eq!(
            metric_from_names(std::iter::empty(), &re, MetricMode::Min),
            None
        );
        // Several matches in one name, and a match that is not a number.
        let names = ["val_loss=0.9_val_loss=0.4", "val_loss=..."];
        assert_eq!(
            metric_from_names(names.into_iter(), &re, MetricMode::Min),
            Some(0.4)
        );
    }

    #[test]
    fn names_without_a_group_use_the_whole_match() {
        let re = Regex::new(r"[0-9]+\.[0-9]+").unwrap();
        let names = ["acc-0.75", "acc-0.5"].into_iter();
        assert_eq!(metric_from_names(names, &re, MetricMode::Max), Some(0.75));
    }

    #[test]
    fn modes_order_best_first() {
        assert_eq!(MetricMode::Min.best_first(1.0, 2.0), Ordering::Less);
        assert_eq!(MetricMode::Max.best_first(1.0, 2.0), Ordering::Greater);
        assert_eq!(MetricMode::Min.best(1.0, 2.0), 1.0);
        assert_eq!(MetricMode::Max.best(1.0, 2.0), 2.0);
        assert_eq!("max".parse::<MetricMode>(), Ok(MetricMode::Max));
        assert!("MIN".parse::<MetricMode>().is_err());
        assert_eq!(MetricMode::default(), MetricMode::Min);
    }

    #[test]
    fn sources_compare_regexes_by_pattern() {
        let a = MetricSource::Regex(Regex::new("x=(.*)").unwrap());
        let b = MetricSource::Regex(Regex::new("x=(.*)").unwrap());
        let c = MetricSource::Regex(Regex::new("y=(.*)").unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, MetricSource::Xattr("x=(.*)".into()));
        assert_eq!(a.key(), "metric-regex");
    }
}
