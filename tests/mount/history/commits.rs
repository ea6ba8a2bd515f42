//! When versions are committed: at each close, also while a forked child
//! (a DataLoader worker, a subprocess) still holds a copy of an earlier
//! descriptor of the file; not when such a child closes its copy while the
//! writer goes on; and a file created and closed without a write keeps the
//! mtime `stat` showed.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{mtime_of, vdir, versions, wait_for};
use crate::common::{python, run_python, Mount};

/// A training process that forks (a DataLoader worker, a subprocess)
/// while a checkpoint file is open; the child keeps its copy of the
/// descriptor. The parent's later saves are closed normally.
const FORKING_TRAINER: &str = r#"
import os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"epoch 1")
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
os.close(fd)
print(pid, flush=True)
sys.stdin.readline()
for epoch in (2, 3):
    with open(path, "wb") as f:
        f.write(b"epoch %d" % epoch)
    print("closed", epoch, flush=True)
    sys.stdin.readline()
"#;

#[test]
fn each_close_commits_a_version_while_a_forked_child_holds_an_old_descriptor() {
    let m = Mount::new("hist-ver-forked-fd");
    let f = m.path("ckpt.pt");
    let mut trainer = Command::new(python())
        .arg("-c")
        .arg(FORKING_TRAINER)
        .arg(&f)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = trainer.stdin.take().unwrap();
    let mut out = BufReader::new(trainer.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // Kills the forked worker (and so releases its descriptor) on any exit.
    struct Reap(i32, std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(self.0.to_string())
                .status();
            let _ = self.1.kill();
            let _ = self.1.wait();
        }
    }
    let _reap = Reap(line.trim().parse().expect("worker pid"), trainer);
    let dir = vdir(&m, "ckpt.pt");
    let check = |epoch: usize| {
        let vs = versions(&dir);
        let got: Vec<String> = vs
            .iter()
            .map(|v| String::from_utf8_lossy(&fs::read(dir.join(v)).unwrap()).into_owned())
            .collect();
        let want: Vec<String> = (1..=epoch).map(|e| format!("epoch {e}")).collect();
        assert_eq!(got, want, "versions after close #{epoch} returned");
    };
    check(1);
    for epoch in 2..=3 {
        writeln!(stdin, "go").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("closed {epoch}"));
        check(epoch);
    }
    writeln!(stdin, "go").unwrap();
}

#[test]
fn a_subprocess_closing_its_inherited_descriptor_mid_save_makes_no_half_version() {
    let m = Mount::new("hist-ver-exec-close");
    let f = m.path("ckpt.bin");
    let mut file = File::create(&f).unwrap();
    file.write_all(&vec![1u8; 1 << 20]).unwrap();
    // The child inherits the descriptor and closes it at exec: the kernel
    // sends a close for it, from the child's task.
    assert!(Command::new("true").status().unwrap().success());
    file.write_all(&vec![2u8; 1 << 20]).unwrap();
    drop(file);
    let dir = vdir(&m, "ckpt.bin");
    let vs = wait_for("the version of ckpt.bin", Duration::from_secs(10), || {
        fs::metadata(&dir)
            .ok()
            .map(|_| versions(&dir))
            .filter(|vs| !vs.is_empty())
    });
    assert_eq!(vs.len(), 1, "versions: {vs:?}");
    let data = fs::read(dir.join(&vs[0])).unwrap();
    assert_eq!(data.len(), 2 << 20);
    assert!(data[..1 << 20].iter().all(|&b| b == 1) && data[1 << 20..].iter().all(|&b| b == 2));
}

/// Writes through a shared mapping reach the daemon as the kernel's own
/// writeback (no process id); the close after them still commits.
const MMAP_WRITER: &str = r#"
import mmap, os, sys
path, vdir = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"\0" * (1 << 20))
os.close(fd)
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 1 << 20)
m[:] = b"\7" * (1 << 20)
m.close()
held = os.dup(fd)  # keeps the file from being released: only the close commits
os.close(fd)
print(len([v for v in os.listdir(vdir) if v != "latest"]))
os.close(held)
"#;

#[test]
fn a_close_after_writes_through_a_shared_mapping_commits_them() {
    let m = Mount::new("hist-ver-mmap-close");
    let f = m.path("weights.bin");
    let out = run_python(MMAP_WRITER, &[f, vdir(&m, "weights.bin")]);
    let seen = out.trim();
    assert_eq!(seen, "2", "versions right after the second close");
    let dir = vdir(&m, "weights.bin");
    let last = versions(&dir).pop().unwrap();
    let data = fs::read(dir.join(last)).unwrap();
    assert!(data.len() == 1 << 20 && data.iter().all(|&b| b == 7));
}

#[test]
fn a_file_closed_without_writes_keeps_the_mtime_stat_showed() {
    let m = Mount::new("hist-ver-empty-mtime");
    let f = m.path("empty");
    drop(File::create(&f).unwrap());
    let shown = mtime_of(&f);
    // Its version is committed when the handle is released, just after
    // the close returned.
    let dir = vdir(&m, "empty");
    let v = wait_for(
        "the version of an empty file",
        Duration::from_secs(10),
        || fs::metadata(&dir).ok().and_then(|_| versions(&dir).pop()),
    );
    assert_eq!(fs::metadata(dir.join(&v)).unwrap().len(), 0);
    assert_eq!(
        mtime_of(&dir.join(&v)),
        shown,
        "the version's mtime vs what stat showed after close"
    );
    // After the kernel's attribute cache (1 s) expired: nothing modified
    // the file, so its mtime is still the one stat showed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        mtime_of(&f),
        shown,
        "the mtime of a file nobody touched changed"
    );
}
