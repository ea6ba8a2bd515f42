//! Another user (uid/gid 65534, no groups, through `setpriv`) on a mount
//! with `--allow-other`: files whose modes forbid it can be neither read
//! nor changed, in the live tree or in history (`.ckpt/versions/...`,
//! `.ckpt/snapshots/...`): history shows no more than the live tree does,
//! also for a file made private after an earlier version and one in a
//! 0700 directory. A 0644 file is readable everywhere, but nothing is
//! writable, and the controls (snapshots, policy, GC, pins) refuse the
//! other user.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use super::support::{close, ctl, set, snapshot_names, version_files};
use crate::common::Mount;

/// Runs a shell command as uid/gid 65534 with no supplementary groups.
fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir("/")
        .output()
        .expect("run setpriv")
}

fn q(p: &Path) -> String {
    let s = p.to_str().unwrap();
    assert!(!s.contains('\''));
    format!("'{s}'")
}

/// Creates `path` with `mode` (umask 022 applies) and writes `data`.
fn create(path: &Path, mode: u32, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).unwrap();
    close(f).unwrap();
}

#[track_caller]
fn denied(script: &str, what: &str) {
    let out = as_nobody(script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "uid 65534 could {what}: `{script}` printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        [
            "Permission denied",
            "Read-only file system",
            "Operation not permitted"
        ]
        .iter()
        .any(|m| err.contains(m)),
        "{what}: `{script}` failed otherwise: {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: `{script}` printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[track_caller]
fn reads(path: &Path, want: &[u8], what: &str) {
    let out = as_nobody(&format!("cat {}", q(path)));
    assert!(
        out.status.success(),
        "uid 65534 cannot read {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, want, "{what} as uid 65534");
}

#[test]
fn another_user_cannot_read_or_change_protected_files_live_or_in_history() {
    let mut m = Mount::with_args("fw-perms", &["--allow-other"]);
    create(&m.path("secret.pt"), 0o600, b"secret v1\n");
    create(&m.path("secret.pt"), 0o600, b"secret v2\n");
    create(&m.path("group.pt"), 0o640, b"group only\n");
    create(&m.path("public.pt"), 0o644, b"public\n");
    // Public first, private later: the old version is private now too.
    create(&m.path("later.pt"), 0o644, b"was public\n");
    fs::set_permissions(m.path("later.pt"), fs::Permissions::from_mode(0o600)).unwrap();
    create(&m.path("later.pt"), 0o600, b"now private\n");
    // Private first, published later: the old version stays private.
    create(&m.path("published.pt"), 0o600, b"draft, private\n");
    fs::set_permissions(m.path("published.pt"), fs::Permissions::from_mode(0o644)).unwrap();
    create(&m.path("published.pt"), 0o644, b"release\n");
    DirBuilder::new()
        .mode(0o700)
        .create(m.path("private"))
        .unwrap();
    create(&m.path("private/inside.pt"), 0o644, b"inside a 0700 dir\n");
    fs::create_dir(ctl(&m, "snapshots/s1")).unwrap();
    let policy = fs::read(ctl(&m, "retention/policy")).unwrap();

    for round in 0..2 {
        let r = format!(" (round {round})");
        // The live tree.
        denied(
            &format!("cat {}", q(&m.path("secret.pt"))),
            &format!("read a 0600 file{r}"),
        );
        denied(
            &format!("cat {}", q(&m.path("group.pt"))),
            &format!("read a 0640 root file{r}"),
        );
        denied(
            &format!("cat {}", q(&m.path("private/inside.pt"))),
            &format!("read through a 0700 dir{r}"),
        );
        reads(&m.path("public.pt"), b"public\n", "the live 0644 file");
        // Versions: every one of a protected file, and the latest link.
        for rel in ["secret.pt", "group.pt", "later.pt", "private/inside.pt"] {
            let mut paths = version_files(&m, rel);
            assert!(!paths.is_empty(), "{rel} has no versions");
            paths.push(ctl(&m, &format!("versions/{rel}/latest")));
            for p in paths {
                denied(
                    &format!("cat {}", q(&p)),
                    &format!("read {}{r}", p.display()),
                );
            }
        }
        denied(
            &format!("ls {}", q(&ctl(&m, "versions/private"))),
            &format!("list a 0700 dir's history{r}"),
        );
        let published = version_files(&m, "published.pt");
        denied(
            &format!("cat {}", q(&published[0])),
            &format!("read the private draft of published.pt{r}"),
        );
        reads(
            published.last().unwrap(),
            b"release\n",
            "the published version",
        );
        reads(
            &ctl(&m, "versions/public.pt/latest"),
            b"public\n",
            "the 0644 file's latest version",
        );
        // Snapshots.
        let s1 = ctl(&m, "snapshots/s1");
        for rel in ["secret.pt", "group.pt", "later.pt", "private/inside.pt"] {
            denied(
                &format!("cat {}", q(&s1.join(rel))),
                &format!("read s1/{rel}{r}"),
            );
        }
        denied(
            &format!("ls {}", q(&s1.join("private"))),
            &format!("list s1/private{r}"),
        );
        reads(&s1.join("public.pt"), b"public\n", "the 0644 file in s1");
        reads(&s1.join("published.pt"), b"release\n", "published.pt in s1");

        // Changes, live and in history.
        let public = m.path("public.pt");
        denied(
            &format!("echo x >> {}", q(&public)),
            &format!("append to a 0644 root file{r}"),
        );
        denied(
            &format!("truncate -s 0 {}", q(&public)),
            &format!("truncate a 0644 root file{r}"),
        );
        denied(
            &format!("chmod 666 {}", q(&m.path("secret.pt"))),
            &format!("chmod a root file{r}"),
        );
        denied(
            &format!("rm -f {}", q(&public)),
            &format!("delete from a 0755 root dir{r}"),
        );
        for p in [ctl(&m, "versions/public.pt/latest"), s1.join("public.pt")] {
            denied(
                &format!("echo x >> {}", q(&p)),
                &format!("append to {}{r}", p.display()),
            );
            denied(
                &format!("rm -f {}", q(&p)),
                &format!("delete {}{r}", p.display()),
            );
        }
        denied(
            &format!("mkdir {}", q(&ctl(&m, "snapshots/evil"))),
            &format!("take a snapshot{r}"),
        );
        denied(
            &format!("rmdir {}", q(&s1)),
            &format!("delete a snapshot{r}"),
        );
        denied(
            &format!("setfattr -n user.ckpt.pinned -v 1 {}", q(&s1)),
            &format!("pin a snapshot{r}"),
        );
        denied(
            &format!("echo keep-last = 1 >> {}", q(&ctl(&m, "retention/policy"))),
            &format!("change the policy{r}"),
        );
        denied(
            &format!("echo run > {}", q(&ctl(&m, "retention/gc"))),
            &format!("run GC{r}"),
        );

        // Nothing changed; root still reads everything.
        assert_eq!(fs::read(&public).unwrap(), b"public\n");
        assert_eq!(fs::read(m.path("secret.pt")).unwrap(), b"secret v2\n");
        assert_eq!(
            fs::read(m.path("private/inside.pt")).unwrap(),
            b"inside a 0700 dir\n"
        );
        assert_eq!(
            fs::read(ctl(&m, "versions/later.pt/latest")).unwrap(),
            b"now private\n"
        );
        assert_eq!(snapshot_names(&m), set(&["s1"]));
        assert_eq!(fs::read(ctl(&m, "retention/policy")).unwrap(), policy);
        assert!(
            !fs::read_to_string(ctl(&m, "retention/gc"))
                .unwrap()
                .contains("\"at\""),
            "GC ran"
        );
        assert_eq!(
            fs::read(ctl(&m, "versions/public.pt/latest")).unwrap(),
            b"public\n"
        );
        assert_eq!(fs::read(s1.join("public.pt")).unwrap(), b"public\n");
        m.remount();
    }
}
