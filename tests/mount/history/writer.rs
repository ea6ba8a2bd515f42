//! A file held open for writing by a separate, single-threaded process,
//! for tests that depend on *when* versions are committed.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::Mount;

/// The writer process's program: opens argv[1] for writing (argv[2] is
/// `trunc` or `keep`; argv[3] the octal mode of a new file), answers `open`, then runs one command per stdin
/// line and answers `ok`: `w OFF FILE` (pwrite FILE's bytes at OFF), `t N`
/// (ftruncate), `s` (fsync), `r FROM TO` (rename), `sleep SECS`, `close`.
const WRITER: &str = r#"
import os, sys, time
flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if sys.argv[2] == "trunc" else 0)
fd = os.open(sys.argv[1], flags, int(sys.argv[3], 8))
print("open", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "w":
        data = memoryview(open(cmd[2], "rb").read())
        off = int(cmd[1])
        while data:
            n = os.pwrite(fd, data, off)
            data, off = data[n:], off + n
    elif cmd[0] == "t":
        os.ftruncate(fd, int(cmd[1]))
    elif cmd[0] == "s":
        os.fsync(fd)
    elif cmd[0] == "r":
        os.rename(cmd[1], cmd[2])
    elif cmd[0] == "sleep":
        time.sleep(float(cmd[1]))
    elif cmd[0] == "close":
        os.close(fd)
        print("ok close", flush=True)
        break
    print("ok", cmd[0], flush=True)
"#;

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// A file held open for writing by a separate, single-threaded process.
///
/// A file the test process itself holds open is flushed (and so
/// committed) whenever another test thread forks: the child inherits the
/// descriptor and closes it at exec. Where a test depends on *when* a
/// version is committed, the writing happens here instead.
pub(super) struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    scratch: PathBuf,
}

impl Writer {
    /// Opens `path` for writing (`trunc`: O_CREAT|O_TRUNC).
    pub(super) fn open(m: &Mount, path: &Path, trunc: bool) -> Writer {
        Writer::open_mode(m, path, trunc, 0o644)
    }

    /// Opens `path` for writing, creating it with `mode` (before umask).
    pub(super) fn open_mode(m: &Mount, path: &Path, trunc: bool, mode: u32) -> Writer {
        let mut child = Command::new(crate::common::python())
            .arg("-c")
            .arg(WRITER)
            .arg(path)
            .arg(if trunc { "trunc" } else { "keep" })
            .arg(format!("{mode:o}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer process");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("writer stdout"));
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let mut w = Writer {
            child,
            stdin,
            out,
            scratch: m.root.join(format!("scratch-{n}")),
        };
        w.expect("open");
        w
    }

    fn expect(&mut self, what: &str) {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read from the writer");
        assert_eq!(
            line.trim(),
            what,
            "writer process: {:?}",
            self.child.try_wait()
        );
    }

    /// Sends a command line without waiting for it to run.
    pub(super) fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("writer stdin");
        writeln!(stdin, "{line}").expect("write to the writer");
        stdin.flush().expect("flush to the writer");
    }

    /// Runs a command and waits for it.
    pub(super) fn cmd(&mut self, line: &str) {
        self.send(line);
        let first = line.split_whitespace().next().unwrap_or("");
        self.expect(&format!("ok {first}"));
    }

    /// The command that writes `data` at `offset` (the data is staged in a
    /// file outside the mount).
    pub(super) fn write_cmd(&mut self, offset: u64, data: &[u8]) -> String {
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let file = self.scratch.with_extension(n.to_string());
        fs::write(&file, data).expect("stage data for the writer");
        format!("w {offset} {}", file.display())
    }

    /// Writes `data` at `offset` and waits for it.
    pub(super) fn write_at(&mut self, offset: u64, data: &[u8]) {
        let line = self.write_cmd(offset, data);
        self.cmd(&line);
    }

    /// Waits for the answer to a command sent with `send`.
    pub(super) fn wait_ok(&mut self, what: &str) {
        self.expect(&format!("ok {what}"));
    }

    /// Waits for the process to end (after a `close` sent with `send`).
    pub(super) fn wait_exit(mut self) {
        self.stdin.take();
        let status = self.child.wait().expect("wait for the writer");
        assert!(status.success(), "writer process: {status}");
    }

    /// Closes the file and waits for the process to end.
    pub(super) fn close(mut self) {
        self.cmd("close");
        self.stdin.take();
        let status = self.child.wait().expect("wait for the writer");
        assert!(status.success(), "writer process: {status}");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Writes a whole file (created or truncated) from a separate process, so
/// that no concurrent fork splits it into several versions.
pub(super) fn put(m: &Mount, path: &Path, data: &[u8]) {
    let mut w = Writer::open(m, path, true);
    w.write_at(0, data);
    w.close();
}
