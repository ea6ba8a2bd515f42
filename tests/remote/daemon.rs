//! Replication by a running daemon, against `file://` remotes: a snapshot
//! is pushed in the background and the status says so; a remote that
//! fails shows its error while local work goes on; what remotes hold is
//! browsable under `.ckpt/remotes/NAME/NODE/SNAPSHOT/` (a damaged object
//! is EIO, never wrong bytes); a clone reads a checkpoint it never
//! downloaded; global snapshots appear once every listed node pushed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{noise, Mount};
use crate::{args, assert_bytes, cli, names, ok, push_report, refused, NO_ENV};

/// Reads a JSON control file.
fn read_json(path: &Path) -> Value {
    let text = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Polls `f` every 100 ms until it gives `Some`, for at most `secs`.
#[track_caller]
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh mount whose store has the `file://` remote `remote` (a
/// directory beside it, returned) and pushes as `node`.
fn mount_with_file_remote(name: &str, remote: &str, node: &str) -> (Mount, PathBuf) {
    let m = Mount::new(name);
    let dir = remote_dir(&m, "remote");
    ok(
        args!["remote", "add", m.mnt, remote, url(&dir), "--node", node],
        NO_ENV,
    );
    (m, dir)
}

/// A `file://` URL of a directory.
fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A store (in a directory of its own, removed by the caller) mounted
/// with `--config` holding `config`.
fn mount_with_config(name: &str, config: &str) -> (PathBuf, Mount) {
    let root = crate::common::test_dir(&format!("{name}-store"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let file = root.join("ckptfs.toml");
    fs::write(&file, config).unwrap();
    let m = Mount::with_store(
        name,
        &root.join("store"),
        &["--config", file.to_str().unwrap()],
    );
    (root, m)
}

/// The store of a fixture's mount, a remote directory beside it.
fn remote_dir(m: &Mount, name: &str) -> PathBuf {
    m.root.join(name)
}

#[test]
fn a_snapshot_is_pushed_in_the_background_and_browsable_under_ckpt_remotes() {
    let (mut m, dir) = mount_with_file_remote("remote-daemon-bg", "backup", "n1");
    let model = noise(12 << 20, 0xda_0001);
    fs::create_dir_all(m.path("run")).unwrap();
    fs::write(m.path("run/model.pt"), &model).unwrap();
    std::os::unix::fs::symlink("model.pt", m.path("run/current")).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);

    // No `push`: the daemon does it on its own.
    let status_file = m.path(".ckpt/remotes/status");
    let status = wait_for(30, "the background push of s1", || {
        let s = read_json(&status_file);
        let b = &s["backup"];
        (b["snapshots_pending"] == 0 && b["last_push"].is_string() && b["snapshots_pushed"] == 1)
            .then(|| s.clone())
    });
    assert!(status["backup"]["last_error"].is_null(), "{status:#}");
    assert!(
        dir.join("snapshots/n1/s1.json").is_file(),
        "the remote holds no s1 record: {:?}",
        names(&dir)
    );
    let stats = read_json(&m.path(".ckpt/stats"));
    assert_eq!(
        stats["remotes"]["backup"]["snapshots_pending"], 0,
        "{stats:#}"
    );

    // Browsable, byte-exact, read-only.
    let snap = m.path(".ckpt/remotes/backup/n1/s1");
    assert_eq!(
        names(&m.path(".ckpt/remotes")),
        ["backup", "push", "status"]
    );
    assert_eq!(names(&m.path(".ckpt/remotes/backup")), ["n1"]);
    assert_eq!(names(&snap.join("run")), ["current", "model.pt"]);
    assert_bytes(&snap.join("run/model.pt"), &model);
    assert_eq!(
        fs::read_link(snap.join("run/current")).unwrap(),
        PathBuf::from("model.pt")
    );
    let err = fs::write(snap.join("run/new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // A push through the mount finds nothing left to do.
    let report = push_report(args!["push", m.mnt, "backup", "--json"], NO_ENV, "backup");
    assert_eq!(report["already"], 1, "{report:#}");
    assert_eq!(report["bytes_uploaded"], 0, "{report:#}");
    assert!(m.stop().success(), "{}", m.log());
}

#[test]
fn a_failing_remote_shows_its_error_and_local_work_goes_on() {
    let (mut m, dir) = mount_with_file_remote("remote-daemon-fail", "usb", "n1");
    // The disk "goes away": its directory is now a plain file.
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"not a directory").unwrap();

    let data = noise(3 << 20, 0xda_0002);
    fs::write(m.path("a.bin"), &data).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    let status = wait_for(30, "the failed push to show", || {
        let s = read_json(&m.path(".ckpt/remotes/status"));
        s["usb"]["last_error"].is_string().then(|| s.clone())
    });
    assert_eq!(status["usb"]["snapshots_pending"], 1, "{status:#}");
    assert!(
        status["usb"]["bytes_pending"].as_u64() >= Some(3 << 20),
        "{status:#}"
    );
    // Local work goes on: writes, snapshots, reads.
    fs::write(m.path("b.bin"), b"still writable").unwrap();
    ok(args!["snapshot", m.mnt, "s2"], NO_ENV);
    assert_bytes(&m.path(".ckpt/snapshots/s1/a.bin"), &data);
    // An explicit push fails with the reason, in one line.
    refused(args!["push", m.mnt, "usb"], NO_ENV, &["push failed", "usb"]);
    assert!(
        m.log().contains("replication to usb"),
        "the log does not name the failing remote:\n{}",
        m.log()
    );

    // The disk comes back: the next push completes both snapshots.
    fs::remove_file(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    let report = push_report(args!["push", m.mnt, "usb", "--json"], NO_ENV, "usb");
    assert_eq!(
        report["snapshots"],
        serde_json::json!(["s1", "s2"]),
        "{report:#}"
    );
    let s = read_json(&m.path(".ckpt/remotes/status"));
    assert!(s["usb"]["last_error"].is_null(), "{s:#}");
    assert_eq!(s["usb"]["snapshots_pending"], 0, "{s:#}");
    assert!(m.stop().success(), "{}", m.log());
}

#[test]
fn a_damaged_remote_object_reads_as_eio_never_wrong_bytes() {
    let (mut m, dir) = mount_with_file_remote("remote-daemon-eio", "backup", "n1");
    let data = noise(8 << 20, 0xda_0003);
    fs::write(m.path("w.bin"), &data).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    ok(args!["push", m.mnt, "backup"], NO_ENV);
    // Damage the middle of the one pack.
    let packs: Vec<PathBuf> = fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut bytes = fs::read(&packs[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&packs[0], &bytes).unwrap();

    let file = m.path(".ckpt/remotes/backup/n1/s1/w.bin");
    let err = fs::read(&file).expect_err("a damaged remote file read without error");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        m.log().contains("damaged"),
        "the log does not say what was damaged:\n{}",
        m.log()
    );
    // The local copy is untouched.
    assert_bytes(&m.path("w.bin"), &data);
    assert!(m.stop().success(), "{}", m.log());
}

#[test]
fn a_clone_reads_a_checkpoint_it_never_downloaded_and_pushes_back_as_its_own_node() {
    // Node A cuts with the window search (not the default): the clone
    // takes that over, so its saves deduplicate against A's.
    let mut a = Mount::with_args("remote-daemon-clone-a", &["--chunker", "window"]);
    let dir = remote_dir(&a, "remote");
    ok(
        args![
            "remote",
            "add",
            a.mnt,
            "shared",
            url(&dir),
            "--node",
            "node-a"
        ],
        NO_ENV,
    );
    let model = noise(24 << 20, 0xda_0004);
    fs::write(a.path("model.pt"), &model).unwrap();
    ok(args!["snapshot", a.mnt, "step-100"], NO_ENV);
    ok(args!["push", a.mnt], NO_ENV);

    let clone_root = a.root.join("clone");
    let store = clone_root.join("store");
    let out = ok(args!["clone", url(&dir), store, "--node", "node-c"], NO_ENV);
    assert!(out.contains("1 snapshots"), "{out}");
    let packs_before = fs::read_dir(store.join("packs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(packs_before, 0, "clone downloaded chunks");

    let pushed = fs::read(dir.join("snapshots/node-a/step-100.json")).unwrap();
    let needle = b"\"chunker\":\"window\"";
    assert!(
        pushed.windows(needle.len()).any(|w| w == needle),
        "the pushed snapshot does not name its chunker"
    );

    let mut c = Mount::with_store("remote-daemon-clone-c", &store, &[]);
    let stats: Value = serde_json::from_slice(&fs::read(c.path(".ckpt/stats")).unwrap()).unwrap();
    assert_eq!(
        stats["chunker"], "window",
        "the clone did not take the remote's chunker"
    );
    let remote_file = c.path(".ckpt/remotes/origin/node-a/step-100/model.pt");
    // The first MiB, then all of it, byte-exact.
    let mut f = fs::File::open(&remote_file).unwrap();
    let mut head = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut f, &mut head).unwrap();
    assert!(head == model[..1 << 20], "the first MiB differs");
    drop(f);
    assert_bytes(&remote_file, &model);

    // What the new node saves goes back to the remote under its own id.
    fs::write(c.path("eval.json"), b"{\"loss\": 0.5}\n").unwrap();
    ok(args!["snapshot", c.mnt, "eval-1"], NO_ENV);
    ok(args!["push", c.mnt], NO_ENV);
    assert!(dir.join("snapshots/node-c/eval-1.json").is_file());
    // Node A sees it (its listing is refreshed within seconds).
    let seen = wait_for(15, "node A to list node-c", || {
        let p = a.path(".ckpt/remotes/shared/node-c/eval-1/eval.json");
        fs::read(&p).ok()
    });
    assert_eq!(seen, b"{\"loss\": 0.5}\n");
    assert!(c.stop().success(), "{}", c.log());
    assert!(a.stop().success(), "{}", a.log());
}

#[test]
fn a_global_snapshot_appears_once_every_listed_node_pushed_its_part() {
    let mut n1 = Mount::new("remote-daemon-global-1");
    let mut n2 = Mount::new("remote-daemon-global-2");
    let dir = remote_dir(&n1, "remote");
    for (m, node) in [(&n1, "n1"), (&n2, "n2")] {
        ok(
            args![
                "remote",
                "add",
                m.mnt,
                "shared",
                url(&dir),
                "--node",
                node,
                "--nodes",
                "n1,n2"
            ],
            NO_ENV,
        );
    }
    let shard1 = noise(5 << 20, 0xda_0011);
    let shard2 = noise(5 << 20, 0xda_0012);
    fs::write(n1.path("rank0.distcp"), &shard1).unwrap();
    fs::write(n2.path("rank1.distcp"), &shard2).unwrap();
    fs::write(n1.path(".metadata"), b"plan").unwrap();

    ok(args!["snapshot", n1.mnt, "step-10", "--global"], NO_ENV);
    ok(args!["push", n1.mnt], NO_ENV);
    // Half of it is there: no global snapshot yet.
    std::thread::sleep(Duration::from_secs(6));
    let global = n1.path(".ckpt/remotes/shared/global/step-10");
    assert!(
        !global.exists(),
        "a global snapshot showed with one of two parts"
    );
    let listed = cli(
        &args!["remote", "snapshots", n1.mnt, "shared", "--json"][..],
        NO_ENV,
    );
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list[0]["global"], true, "{list:#}");

    ok(args!["snapshot", n2.mnt, "step-10", "--global"], NO_ENV);
    ok(args!["push", n2.mnt], NO_ENV);
    wait_for(15, "the global snapshot", || global.is_dir().then_some(()));
    assert_eq!(
        names(&global),
        [".metadata", "rank0.distcp", "rank1.distcp"]
    );
    assert_bytes(&global.join("rank0.distcp"), &shard1);
    assert_bytes(&global.join("rank1.distcp"), &shard2);
    // Node 2 sees the same directory.
    let other = n2.path(".ckpt/remotes/shared/global/step-10");
    wait_for(15, "node 2's view", || other.is_dir().then_some(()));
    assert_bytes(&other.join("rank0.distcp"), &shard1);
    assert!(n2.stop().success(), "{}", n2.log());
    assert!(n1.stop().success(), "{}", n1.log());
}

#[test]
fn the_daemon_takes_s3_keys_from_its_config_file() {
    let ceph = crate::remote::ceph::Ceph::start("remote-daemon-s3-config");
    ceph.mb("conf");
    // The daemon gets no AWS_* variables: only the config file.
    let (root, mut m) = mount_with_config(
        "remote-daemon-s3-config",
        &format!(
            "[s3]\naccess-key-id = \"{}\"\nsecret-access-key = \"{}\"\nendpoint = \"{}\"\n",
            ceph.access_key, ceph.secret_key, ceph.endpoint
        ),
    );
    // `remote add` runs outside the daemon: it takes the keys from the
    // environment, and the endpoint is left to the config file.
    ok(
        args![
            "remote",
            "add",
            m.mnt,
            "ceph",
            "s3://conf/run",
            "--node",
            "n1"
        ],
        &[
            ("AWS_ACCESS_KEY_ID", ceph.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", ceph.secret_key.as_str()),
            ("AWS_ENDPOINT_URL", ceph.endpoint.as_str()),
        ],
    );
    let data = noise(2 << 20, 0xda_0021);
    fs::write(m.path("w.bin"), &data).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    let report = push_report(args!["push", m.mnt, "ceph", "--json"], NO_ENV, "ceph");
    assert!(
        report["snapshots"] == serde_json::json!(["s1"]) || report["already"] == 1,
        "{report:#}"
    );
    assert_bytes(&m.path(".ckpt/remotes/ceph/n1/s1/w.bin"), &data);
    assert!(m.stop().success(), "{}", m.log());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn wrong_s3_keys_show_in_the_status_and_the_log_and_local_work_goes_on() {
    let ceph = crate::remote::ceph::Ceph::start("remote-daemon-bad-keys");
    ceph.mb("keys");
    // The daemon's keys are wrong; the operator's (remote add) are right.
    let (root, mut m) = mount_with_config(
        "remote-daemon-bad-keys",
        &format!(
            "[s3]\naccess-key-id = \"{}\"\nsecret-access-key = \"not-the-secret\"\n",
            ceph.access_key
        ),
    );
    ceph.add_remote(&m.mnt, "s3://keys/run", "n1");
    let data = noise(1 << 20, 0xda_0031);
    fs::write(m.path("w.bin"), &data).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    let status = wait_for(30, "the failed push to show", || {
        let s = read_json(&m.path(".ckpt/stats"));
        s["remotes"]["ceph"]["last_error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(
        status.contains("wrong credentials") && status.contains("SignatureDoesNotMatch"),
        "{status}"
    );
    assert!(m.log().contains("wrong credentials"), "{}", m.log());
    // Local work goes on.
    fs::write(m.path("x.bin"), b"more").unwrap();
    ok(args!["snapshot", m.mnt, "s2"], NO_ENV);
    assert_bytes(&m.path(".ckpt/snapshots/s1/w.bin"), &data);
    let s = read_json(&m.path(".ckpt/remotes/status"));
    assert_eq!(s["ceph"]["snapshots_pending"], 2, "{s:#}");
    assert!(ceph.keys("keys", "run/snapshots").is_empty());
    assert!(m.stop().success(), "{}", m.log());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn remote_remove_forgets_a_remote_and_leaves_its_objects() {
    let (mut m, dir) = mount_with_file_remote("remote-daemon-remove", "usb", "n1");
    fs::write(m.path("a.bin"), noise(1 << 20, 0xda_0041)).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    ok(args!["push", m.mnt], NO_ENV);
    let listed = ok(args!["remote", "list", m.mnt], NO_ENV);
    assert!(listed.contains("usb") && listed.contains("n1"), "{listed}");
    let out = ok(args!["remote", "remove", m.mnt, "usb"], NO_ENV);
    assert!(out.contains("removed remote usb"), "{out}");
    let list: Value =
        serde_json::from_str(&ok(args!["remote", "list", m.mnt, "--json"], NO_ENV)).unwrap();
    assert_eq!(list["remotes"], serde_json::json!([]), "{list:#}");
    assert_eq!(names(&m.path(".ckpt/remotes")), ["push", "status"]);
    assert!(dir.join("snapshots/n1/s1.json").is_file());
    refused(
        args!["remote", "remove", m.mnt, "usb"],
        NO_ENV,
        &["no remote named usb"],
    );
    assert!(m.stop().success(), "{}", m.log());
}

#[test]
fn a_remote_added_to_a_running_mount_gets_the_snapshots_taken_before() {
    let mut m = Mount::new("remote-daemon-late");
    let data = noise(2 << 20, 0xda_0051);
    fs::write(m.path("early.bin"), &data).unwrap();
    ok(args!["snapshot", m.mnt, "before"], NO_ENV);
    // Added afterwards, with no snapshot and no push to follow: the daemon
    // sees remotes.json change and pushes what the remote lacks.
    let dir = remote_dir(&m, "remote");
    ok(
        args!["remote", "add", m.mnt, "late", url(&dir), "--node", "n1"],
        NO_ENV,
    );
    wait_for(15, "the push of a snapshot taken before the remote", || {
        dir.join("snapshots/n1/before.json").is_file().then_some(())
    });
    assert_bytes(&m.path(".ckpt/remotes/late/n1/before/early.bin"), &data);
    let s = read_json(&m.path(".ckpt/remotes/status"));
    assert_eq!(s["late"]["snapshots_pending"], 0, "{s:#}");
    assert!(m.stop().success(), "{}", m.log());
}

#[test]
fn clone_refuses_a_non_empty_directory_and_a_bad_remote_leaves_nothing() {
    let root = crate::common::test_dir("remote-clone-refused");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("full")).unwrap();
    fs::write(root.join("full/keep.txt"), b"mine").unwrap();
    refused(
        args!["clone", url(&root.join("remote")), root.join("full")],
        NO_ENV,
        &["not empty"],
    );
    assert_eq!(names(&root.join("full")), ["keep.txt"]);
    // A remote that cannot be opened: no store is made.
    let store = root.join("new-store");
    refused(
        args!["clone", "file:///nonexistent-ckptfs-dir/remote", store],
        NO_ENV,
        &["nonexistent-ckptfs-dir"],
    );
    assert!(!store.exists(), "a failed clone left {}", store.display());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_global_snapshot_without_a_remote_is_refused_and_takes_nothing() {
    let mut m = Mount::new("remote-daemon-global-refused");
    refused(
        args!["snapshot", m.mnt, "g1", "--global"],
        NO_ENV,
        &["remote add"],
    );
    assert!(!m.path(".ckpt/snapshots/g1").exists());
    assert!(m.stop().success(), "{}", m.log());
}
