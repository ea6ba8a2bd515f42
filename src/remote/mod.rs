//! The remote tier: replication of snapshots to S3-compatible object
//! storage (AWS S3, MinIO, Ceph's RADOS Gateway) or to a directory on
//! another disk, through one code path (the `object_store` crate).
//!
//! This layer reads the tree (snapshots, manifests, stored chunks) and
//! knows nothing of FUSE, the daemon or the command line. What a remote
//! holds and in which order it is written is in [`layout`]; which remotes
//! a store has is in [`spec`]; uploading is [`push`]; reading a remote
//! back (browsing, lazy reads, restore on any machine) is [`view`]; remote
//! retention and GC is [`gc`]; the daemon's thread is [`replicate`].
//!
//! Invariants:
//! - every object is written once, with a create-only put (`If-None-Match:
//!   *`), so concurrent writers never overwrite each other;
//! - a remote never names a chunk it does not hold: packs, then their
//!   indexes, then manifests, then the snapshot record;
//! - every fetched byte is checked (chunk ids, object checksums) before it
//!   is used: a damaged object is an error naming it, never wrong bytes.

pub mod catalog;
pub mod gc;
pub mod layout;
pub mod push;
pub mod replicate;
pub mod spec;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use thiserror::Error;

pub use catalog::ChunkCatalog;
pub use push::{push, PushOptions, PushReport};
pub use replicate::Replicator;
pub use spec::{Location, RemoteSpec, Remotes, S3Settings};
pub use view::RemoteView;

use crate::tree::TreeError;

/// Everything that can go wrong with a remote.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A URL that names no remote ckptfs can use.
    #[error("remote URL {0}: {1}")]
    BadUrl(String, String),
    /// A bad remote or node definition.
    #[error("{0}")]
    Config(String),
    /// No remote of that name.
    #[error("no remote named {0} (see `ckptfs remote list`)")]
    NoSuchRemote(String),
    /// A local file (remote list, index cache) could not be used.
    #[error("{0}: {1}")]
    Local(PathBuf, #[source] std::io::Error),
    /// The object store refused or failed a request.
    #[error("{url}: {op} {key}: {}", describe(error))]
    Request {
        /// The remote.
        url: String,
        /// What was asked.
        op: &'static str,
        /// The object.
        key: String,
        /// What the store said (shown in short: its chain repeats itself).
        error: Box<object_store::Error>,
    },
    /// A fetched object failed its check.
    #[error("remote object {key} is damaged: {why}")]
    Corrupt {
        /// The object.
        key: String,
        /// What was wrong.
        why: String,
    },
    /// Something the remote should hold is not there.
    #[error("remote {url} has no {what}")]
    Missing {
        /// The remote.
        url: String,
        /// What was looked for.
        what: String,
    },
    /// The push was stopped (the daemon is stopping).
    #[error("stopped before it finished")]
    Cancelled,
    /// Reading the local tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

type Result<T> = std::result::Result<T, RemoteError>;

/// An object on a remote, as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key below the remote's prefix.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// When it was written (seconds since the epoch).
    pub modified: i64,
}

/// An open remote: an object store, the prefix of this remote's keys, and
/// the runtime its requests run on.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

/// S3 requests are retried this often before an error is reported.
const S3_RETRIES: usize = 3;
/// And for at most this long.
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(20);

impl Remote {
    /// Opens the remote a spec names. S3 credentials come from the
    /// `AWS_*` environment variables; endpoint and region from the spec,
    /// else from `AWS_ENDPOINT_URL` and `AWS_REGION`.
    pub fn open(spec: &RemoteSpec) -> Result<Remote> {
        Self::open_with(spec, &S3Settings::default())
    }

    /// Like [`Remote::open`], with settings (the daemon's config file) that
    /// come after the spec's and before the environment's.
    pub fn open_with(spec: &RemoteSpec, s3: &S3Settings) -> Result<Remote> {
        let settings = S3Settings {
            endpoint: spec.endpoint.clone().or_else(|| s3.endpoint.clone()),
            region: spec.region.clone().or_else(|| s3.region.clone()),
            ..s3.clone()
        };
        Self::open_url_with(&spec.url, &settings)
    }

    /// Opens a remote by URL.
    pub fn open_url(url: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Remote> {
        let settings = S3Settings {
            endpoint: endpoint.map(str::to_string),
            region: region.map(str::to_string),
            ..S3Settings::default()
        };
        Self::open_url_with(url, &settings)
    }

    fn open_url_with(url: &str, s3: &S3Settings) -> Result<Remote> {
        let (endpoint, region) = (s3.endpoint.as_deref(), s3.region.as_deref());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ckptfs-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Local(PathBuf::from("tokio runtime"), e))?;
        let bad = |e: object_store::Error| RemoteError::BadUrl(url.to_string(), e.to_string());
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match Location::parse(url)? {
            Location::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env();
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                // Bodies are not hashed for the signature (as `aws s3 cp`
                // and curl's UNSIGNED-PAYLOAD do): a SHA-256 of every byte
                // took a third of a push's CPU, and every object ckptfs
                // reads back is checked by its own hashes anyway.
                let mut b = b
                    .with_unsigned_payload(true)
                    .with_bucket_name(bucket)
                    .with_retry(object_store::RetryConfig {
                        max_retries: S3_RETRIES,
                        retry_timeout: S3_RETRY_TIMEOUT,
                        ..Default::default()
                    })
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(120)),
                    );
                let endpoint = endpoint
                    .map(str::to_string)
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                if let Some(ep) = endpoint {
                    b = b
                        .with_allow_http(ep.starts_with("http://"))
                        .with_endpoint(ep);
                }
                let region = region
                    .map(str::to_string)
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .unwrap_or_else(|| "us-east-1".to_string());
                (
                    Arc::new(b.with_region(region).build().map_err(bad)?),
                    prefix,
                )
            }
            Location::Dir(dir) => {
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(RemoteError::Local(dir, e)),
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(bad)?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), String::new())
            }
        };
        Ok(Remote {
            url: url.to_string(),
            store,
            prefix,
            rt,
        })
    }

    /// The remote's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn failed(&self, op: &'static str, key: &str, source: object_store::Error) -> RemoteError {
        RemoteError::Request {
            url: self.url.clone(),
            op,
            key: key.to_string(),
            error: Box::new(source),
        }
    }

    /// Writes an object unless one exists under `key`: true when this call
    /// created it. Never overwrites.
    pub fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        self.rt
            .block_on(put_new(self.store.clone(), self.path(key), bytes))
            .map_err(|e| self.failed("put", key, e))
    }

    /// Starts [`Remote::put_new`] of several objects in order on the
    /// runtime, without waiting: the returned handle finishes once all of
    /// them are written (each only after the one before it).
    pub(crate) fn spawn_puts(
        &self,
        objects: Vec<(String, Vec<u8>)>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let store = self.store.clone();
        let url = self.url.clone();
        let objects: Vec<(String, ObjectPath, Vec<u8>)> = objects
            .into_iter()
            .map(|(key, bytes)| {
                let path = self.path(&key);
                (key, path, bytes)
            })
            .collect();
        self.rt.spawn(async move {
            for (key, path, bytes) in objects {
                put_new(store.clone(), path, bytes)
                    .await
                    .map_err(|source| RemoteError::Request {
                        url: url.clone(),
                        op: "put",
                        key,
                        error: Box::new(source),
                    })?;
            }
            Ok(())
        })
    }

    /// Waits for a spawned task.
    pub(crate) fn wait<T>(&self, task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
        self.rt.block_on(task).map_err(|e| {
            RemoteError::Local(PathBuf::from("upload task"), std::io::Error::other(e))
        })?
    }

    /// Reads a whole object; `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        let got = self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.failed("get", key, e))
    }

    /// Reads several byte ranges of objects, up to `parallel` at a time,
    /// and hands each to `f` in the order asked.
    pub fn get_ranges(
        &self,
        ranges: Vec<(String, std::ops::Range<u64>)>,
        parallel: usize,
        mut f: impl FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.rt.block_on(async {
            let mut fetched = futures::stream::iter(ranges.into_iter().map(|(key, range)| {
                let store = self.store.clone();
                let path = self.path(&key);
                async move {
                    let got = store.get_range(&path, range).await;
                    (key, got)
                }
            }))
            .buffered(parallel.max(1));
            while let Some((key, got)) = fetched.next().await {
                let bytes = got.map_err(|e| self.failed("get", &key, e))?;
                f(&key, &bytes)?;
            }
            Ok(())
        })
    }

    /// Every object whose key starts with `dir/`.
    pub fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let path = self.path(dir);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut listing = self.store.list(Some(&path));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| self.failed("list", dir, e))?;
                let full = meta.location.to_string();
                let key = full.strip_prefix(&strip).unwrap_or(&full).to_string();
                out.push(Listed {
                    key,
                    size: meta.size,
                    modified: meta.last_modified.timestamp(),
                });
            }
            Ok(out)
        })
    }

    /// Deletes an object (a missing one is not an error).
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key, e)),
        }
    }
}

/// An object store error in one line: the S3 error code and what it
/// usually means, or the first part of its text.
pub fn describe(e: &object_store::Error) -> String {
    if let object_store::Error::NotFound { .. } = e {
        return "not found".to_string();
    }
    let text = e.to_string();
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string());
    let status = text
        .split_once("status code: ")
        .map(|(_, rest)| rest.chars().take(3).collect::<String>());
    let hint = match code.as_deref() {
        Some("NoSuchBucket") => "the bucket does not exist",
        Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied") => {
            "wrong credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        }
        _ if text.contains("onnection refused") => "cannot connect: connection refused",
        _ if text.contains("error sending request") || text.contains("timed out") => {
            "cannot reach the server"
        }
        _ => "",
    };
    match (code, status) {
        (Some(code), Some(status)) if !hint.is_empty() => format!("{hint} ({code}, HTTP {status})"),
        (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
        _ if !hint.is_empty() => hint.to_string(),
        _ => text.chars().take(300).collect(),
    }
}

async fn put_new(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    bytes: Vec<u8>,
) -> std::result::Result<bool, object_store::Error> {
    let payload = PutPayload::from(bytes);
    match store.put_opts(&path, payload, PutMode::Create.into()).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
