//! The `Ceph` fixture: a throwaway single-node Ceph cluster (monitor, OSD
//! on memstore, RADOS Gateway) on 127.0.0.1, started by
//! `scripts/s3-cluster` in a scratch directory and stopped on drop, also
//! when the test panics. No Ceph installed is a failure, never a skip.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{python, scratch};

/// The cluster script.
const S3_CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-cluster");

/// A running cluster.
pub struct Ceph {
    /// The scratch directory (removed on drop unless the test failed).
    dir: Option<tempfile::TempDir>,
    /// `s3-cluster`'s STATE_DIR, inside `dir`.
    state: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The S3 user's access key.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
    /// The region requests are signed for.
    pub region: String,
}

impl Ceph {
    /// Starts a fresh cluster; panics with `s3-cluster`'s message if it
    /// cannot (Ceph not installed, a daemon that does not come up).
    pub fn start(name: &str) -> Ceph {
        let dir = scratch(name);
        let state = dir.path().join("state");
        // The guard exists before the start, so that whatever a failed or
        // interrupted start leaves running is stopped.
        let mut ceph = Ceph {
            dir: Some(dir),
            state,
            endpoint: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            region: String::new(),
        };
        let out = ceph.script(&["start"]);
        assert!(
            out.status.success(),
            "the remote tests need a real single-node Ceph: apt-get install -y \
             --no-install-recommends ceph-mon ceph-osd radosgw curl (as .ci/run does); \
             `s3-cluster start` failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "s3-cluster start printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let field = |k: &str| info[k].as_str().unwrap().to_string();
        ceph.endpoint = field("endpoint");
        ceph.access_key = field("access_key");
        ceph.secret_key = field("secret_key");
        ceph.region = field("region");
        ceph
    }

    /// Runs `s3-cluster COMMAND STATE_DIR [ARGS]`.
    fn try_script(&self, cmd: &[&str]) -> std::io::Result<Output> {
        Command::new(python())
            .arg(S3_CLUSTER)
            .arg(cmd[0])
            .arg(&self.state)
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .output()
    }

    /// [`Ceph::try_script`], panicking if it cannot run at all.
    fn script(&self, cmd: &[&str]) -> Output {
        self.try_script(cmd)
            .unwrap_or_else(|e| panic!("run {S3_CLUSTER} with {}: {e}", python()))
    }

    /// Runs `s3-cluster COMMAND STATE_DIR [ARGS]`, asserting success.
    #[track_caller]
    fn script_ok(&self, cmd: &[&str]) {
        let out = self.script(cmd);
        assert!(
            out.status.success(),
            "s3-cluster {} failed with {}:\n{}",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The S3 keys, as `ckptfs` reads them.
    pub fn env(&self) -> [(&str, &str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
        ]
    }

    /// `ckptfs remote add TARGET ceph URL` against this cluster, as node
    /// `node`, with its keys; what the command printed.
    #[track_caller]
    pub fn add_remote(&self, target: impl AsRef<std::ffi::OsStr>, url: &str, node: &str) -> String {
        crate::ok(
            crate::args![
                "remote",
                "add",
                target,
                "ceph",
                url,
                "--endpoint",
                self.endpoint,
                "--node",
                node
            ],
            &self.env(),
        )
    }

    /// Creates a bucket.
    #[track_caller]
    pub fn mb(&self, bucket: &str) {
        self.script_ok(&["mb", bucket]);
    }

    /// SIGKILLs radosgw (the monitor and the OSD keep the data).
    #[track_caller]
    pub fn kill_rgw(&self) {
        self.script_ok(&["kill-rgw"]);
    }

    /// Starts radosgw again on its port.
    #[track_caller]
    pub fn start_rgw(&self) {
        self.script_ok(&["start-rgw"]);
    }

    /// The keys in `bucket` that start with `prefix`, as a ListObjectsV2
    /// through radosgw says (curl, SigV4), at most 1000.
    #[track_caller]
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let prefix_q: String = prefix
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix_q}", self.endpoint);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run curl: {e}"));
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.contains("<ListBucketResult"),
            "listing {url} failed ({}): {body}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        match self.try_script(&["stop"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "s3-cluster stop {} failed with {}:\n{}",
                self.state.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run s3-cluster stop {}: {e}", self.state.display()),
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "Ceph state and logs kept for inspection: {}",
                    dir.keep().display()
                );
            }
        }
    }
}
