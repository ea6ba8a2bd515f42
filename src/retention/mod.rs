//! The retention layer: which snapshots (and per-file versions) are kept.
//!
//! It owns the retention policy's text (the user-editable file
//! `.ckpt/retention/policy`: parsing with line-numbered errors, the
//! canonical form, the default file) and the decision of what is kept and
//! what expires, with the reasons. Snapshots are a union of keep rules, as
//! in restic's `forget` and Orbax's preservation policies.
//!
//! Everything here is pure and works on plain data: the caller describes
//! snapshots ([`SnapshotInfo`]) and file versions ([`VersionInfo`]), reads
//! the metric bytes out of a snapshot and passes them to the [`metric`]
//! functions, and supplies `now`. Nothing here reads the clock, does I/O or
//! names the store, tree or fs layers.
//!
//! The pure part (`policy`, `plan`, `metric`, durations) works on plain
//! data. [`Retention`] (`service.rs`) applies it to a mounted tree: it
//! reads metrics out of snapshots, answers `.ckpt/retention/`, and runs
//! garbage collection through the tree's `collect_garbage`. Only
//! `service.rs` names the tree; nothing here names the store.

mod duration;
pub mod metric;
pub mod plan;
pub mod policy;
mod service;
mod text;
mod values;

pub use duration::{format_duration, parse_duration, BadDuration};
pub use metric::{
    metric_from_json, metric_from_names, metric_from_text, metric_from_xattr, MetricMode,
    MetricSource, MetricSpec,
};
pub use plan::{plan, plan_file_versions, Plan, Reason, SnapshotInfo, VersionInfo};
pub use policy::{Policy, PolicyError};
pub use service::{GcReport, Retention};
