//! Running the real `ckptfs` binary as an operator would, and the state of
//! a restored tree, shared by the CLI suites (`cli_ops`, `remote`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{hash_file, BIN};

/// `ckptfs ARGS` with `env` set and no other `AWS_*` variable (nor
/// `RUST_LOG`) inherited: what a remote is, is said by the test alone.
pub fn command(args: &[OsString], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `ckptfs ARGS` with `env` (killed after 120 s).
pub fn run_cli(args: &[OsString], env: &[(&str, &str)]) -> Output {
    let mut child = command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ckptfs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut b).expect("read stdout");
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut b).expect("read stderr");
        b
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`ckptfs {}` ran for 120 s", show(args));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs a command that must succeed (exit 0); returns its stdout.
#[track_caller]
pub fn run_ok(args: &[OsString], env: &[(&str, &str)]) -> String {
    let out = run_cli(args, env);
    assert!(
        out.status.success(),
        "`ckptfs {}` failed with {}:\nstdout:\n{}\nstderr:\n{}",
        show(args),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must succeed and print JSON.
#[track_caller]
pub fn run_json(args: &[OsString], env: &[(&str, &str)]) -> serde_json::Value {
    let out = run_ok(args, env);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`ckptfs {}` printed no JSON ({e}):\n{out}", show(args)))
}

/// The arguments as one line, for messages.
pub fn show(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text of bytes.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a restored tree must reproduce of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// file, dir or symlink.
    pub kind: &'static str,
    /// Permission bits (0 for a symlink).
    pub mode: u32,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// xxh3-128 of a file's bytes, the target of a symlink.
    pub content: String,
}

/// One path's [`Node`].
pub fn node(p: &Path) -> Node {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ft = m.file_type();
    let (kind, content) = if ft.is_symlink() {
        (
            "symlink",
            fs::read_link(p).expect("readlink").display().to_string(),
        )
    } else if ft.is_dir() {
        ("dir", String::new())
    } else {
        ("file", format!("{:032x}", hash_file(p)))
    };
    Node {
        kind,
        mode: if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        },
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        content,
    }
}

/// Every path under `root` (itself as "") and its [`Node`].
pub fn state(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let n = node(&p);
        if n.kind == "dir" {
            for e in fs::read_dir(&p).expect("read_dir") {
                todo.push(e.expect("entry").path());
            }
        }
        out.insert(rel, n);
    }
    out
}
