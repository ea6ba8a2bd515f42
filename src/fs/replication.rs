//! What the control tree asks of replication (`.ckpt/remotes/`, the
//! `remotes` part of `.ckpt/stats`). The daemon injects the implementation;
//! this layer sees remotes only as [`RemoteView`]s (listings and reads).

use crate::remote::RemoteView;

/// Why a push asked for through `.ckpt/remotes/push` failed.
#[derive(Debug)]
pub enum PushFailure {
    /// No remote of that name (ENOENT).
    NoSuchRemote,
    /// The push itself failed (EIO); the text is in the status and log.
    Failed(String),
}

/// Replication as the control tree sees it.
pub trait Replication: Send + Sync {
    /// Every remote's status: snapshots and bytes pending, last push, last
    /// error.
    fn status(&self) -> serde_json::Value;
    /// Pushes now, to one remote or to all, and returns the reports.
    fn push(&self, remote: Option<&str>) -> Result<serde_json::Value, PushFailure>;
    /// The store's remotes, in the order they were added.
    fn remote_names(&self) -> Vec<String>;
    /// A remote's browsable view; the error says why it cannot be opened.
    fn view(&self, name: &str) -> Result<std::sync::Arc<RemoteView>, String>;
}
