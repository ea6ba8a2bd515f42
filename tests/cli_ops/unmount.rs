//! `unmount`: the daemon commits and exits 0 and the mount is gone; a busy
//! mount is refused with a hint at `--lazy`, which detaches it at once.

use std::fs::{self, File};
use std::io::Write;

use crate::common::{noise, Mount};
use crate::{args, cli, is_mounted, ok, refused, text};

/// `ckptfs unmount`, retried while another test's fork briefly holds a
/// copy of some fd on the mount (see `Mount::stop`).
fn unmount_retrying(m: &Mount) -> String {
    for _ in 0..50 {
        let out = cli(args!["unmount", m.mnt]);
        if out.status.success() {
            return text(&out.stdout);
        }
        assert!(text(&out.stderr).contains("busy"), "{}", text(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the mount stayed busy");
}

#[test]
fn unmount_ends_the_daemon_with_exit_0_and_a_busy_mount_needs_lazy() {
    let mut m = Mount::new("ops-unmount");
    let data = noise(1_000_000, 0x0e_0001);
    fs::write(m.path("a.bin"), &data).unwrap();

    // Busy: a file is open on it.
    let mut open = File::create(m.path("open.bin")).unwrap();
    open.write_all(b"still writing").unwrap();
    refused(args!["unmount", m.mnt], &["busy", "--lazy"]);
    assert!(is_mounted(&m.mnt));
    drop(open);

    let pid = m.pid();
    let out = unmount_retrying(&m);
    assert!(out.contains(&format!("ckptfs pid {pid} exited")), "{out}");
    assert!(!is_mounted(&m.mnt), "the mount is still there");
    let status = m.wait_exit();
    assert_eq!(status.code(), Some(0), "daemon: {status}\n{}", m.log());
    refused(args!["unmount", m.mnt], &["not mounted"]);

    // --lazy detaches at once; the daemon exits once the file is closed,
    // and what was written through it is committed.
    m.start();
    assert!(fs::read(m.path("open.bin")).unwrap() == b"still writing");
    let mut open = File::create(m.path("late.bin")).unwrap();
    open.write_all(b"written before the detach").unwrap();
    let out = ok(args!["unmount", m.mnt, "--lazy"]);
    assert!(out.contains("detached"), "{out}");
    assert!(!is_mounted(&m.mnt), "the mount is still listed");
    open.write_all(b", and after").unwrap();
    drop(open);
    let status = m.wait_exit();
    assert_eq!(status.code(), Some(0), "daemon: {status}\n{}", m.log());
    m.start();
    assert_eq!(
        fs::read(m.path("late.bin")).unwrap(),
        b"written before the detach, and after"
    );
    assert!(fs::read(m.path("a.bin")).unwrap() == data);

    // Not ckptfs.
    refused(args!["unmount", "/proc"], &["not a ckptfs mount"]);
}
