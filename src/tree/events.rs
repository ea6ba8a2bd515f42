//! The event log: one JSON line per commit, snapshot change, retention
//! decision and GC run, appended to `STORE/events.jsonl` and served as
//! `.ckpt/events`, which `tail -f` can follow (the hook for MLflow, W&B or
//! TensorBoard). It is rotated to `events.jsonl.1` past 64 MiB.
//!
//! Events are best effort: a failed append is logged and never fails the
//! operation it describes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::snapshot::rfc3339;
use crate::store::records::Time;

/// Size at which the log is rotated.
const ROTATE_AT: u64 = 64 << 20;

/// The append-only event log of a store.
pub struct EventLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
}

impl EventLog {
    /// The log in the store directory `root` (created on first event).
    pub fn new(root: &Path) -> Self {
        let path = root.join("events.jsonl");
        let file = match open_append(&path) {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!("event log {} unavailable: {e}", path.display());
                None
            }
        };
        EventLog {
            path,
            file: Mutex::new(file),
        }
    }

    /// Appends one event: `{"at": ..., "event": kind, ...fields}`.
    pub fn emit(&self, kind: &str, fields: serde_json::Value) {
        let mut line = serde_json::json!({ "at": rfc3339(Time::now()), "event": kind });
        if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut guard = self.file.lock();
        let Some(file) = guard.as_mut() else { return };
        if file.metadata().map(|m| m.len()).unwrap_or(0) + text.len() as u64 > ROTATE_AT {
            let rotated = self.path.with_extension("jsonl.1");
            match std::fs::rename(&self.path, &rotated).and_then(|_| open_append(&self.path)) {
                Ok(f) => *file = f,
                Err(e) => log::warn!("event log rotation failed: {e}"),
            }
        }
        if let Err(e) = file.write_all(text.as_bytes()) {
            log::warn!("event not logged ({kind}): {e}");
        }
    }

    /// Current length of the log in bytes.
    pub fn size(&self) -> u64 {
        self.file
            .lock()
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Reads up to `len` bytes of the log from `offset`.
    pub fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        let guard = self.file.lock();
        let Some(file) = guard.as_ref() else {
            return Vec::new();
        };
        let mut buf = vec![0u8; len as usize];
        match file.read_at(&mut buf, offset) {
            Ok(n) => {
                buf.truncate(n);
                buf
            }
            Err(_) => Vec::new(),
        }
    }
}
