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
//! Garbage collection itself (deleting what a [`Plan`] expires, on the
//! policy's `gc-interval`) is to be added in this folder as `gc.rs` by the
//! engineer doing the store side; it will call [`plan`] and
//! [`plan_file_versions`].

mod duration;
pub mod metric;
pub mod plan;
pub mod policy;
mod text;
mod values;

pub use duration::{format_duration, parse_duration, BadDuration};
pub use metric::{
    metric_from_json, metric_from_names, metric_from_text, metric_from_xattr, MetricMode,
    MetricSource, MetricSpec,
};
pub use plan::{plan, plan_file_versions, Plan, Reason, SnapshotInfo, VersionInfo};
pub use policy::{Policy, PolicyError};
