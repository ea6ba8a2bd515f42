//! Glue between the control tree's [`Replication`] and the remote layer's
//! [`Replicator`]: status as JSON, pushes with their reports.

use std::sync::Arc;

use crate::fs::{PushFailure, Replication};
use crate::remote::{RemoteError, RemoteView, Replicator};

impl Replication for Replicator {
    fn status(&self) -> serde_json::Value {
        Replicator::status(self)
    }

    fn push(&self, remote: Option<&str>) -> Result<serde_json::Value, PushFailure> {
        match self.push_now(remote) {
            Ok(reports) => Ok(serde_json::Value::Array(
                reports.iter().map(|(name, r)| r.to_json(name)).collect(),
            )),
            Err(RemoteError::NoSuchRemote(_)) => Err(PushFailure::NoSuchRemote),
            Err(e) => Err(PushFailure::Failed(e.to_string())),
        }
    }

    fn remote_names(&self) -> Vec<String> {
        Replicator::remote_names(self)
    }

    fn view(&self, name: &str) -> Result<Arc<RemoteView>, String> {
        Replicator::view(self, name).map_err(|e| e.to_string())
    }
}
