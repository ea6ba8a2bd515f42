//! The policy file `.ckpt/retention/policy`: the default text, writing,
//! appending and overwriting it with ordinary tools, refusals (EINVAL at
//! write for a malformed line, at close for rules that do not fit
//! together) that leave the old policy in force and show in
//! `retention/status`, and a policy that survives a remount.

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;

use nix::errno::Errno;

use super::{
    append_policy, close, ctl, expect_errno, listing, policy_text, q, run_gc, set, set_policy,
    snapshot, snapshot_names, status, status_plan, write_file,
};
use crate::common::{sh, Mount};

const KEYS: [&str; 15] = [
    "keep-last",
    "keep-within",
    "keep-hourly",
    "keep-daily",
    "keep-every",
    "keep-best",
    "metric",
    "metric-mode",
    "metric-file",
    "metric-key",
    "metric-regex",
    "metric-xattr",
    "keep-without-metric",
    "file-versions-keep",
    "gc-interval",
];

/// Takes snapshots `s1..=sN`, each after a change to `data.bin`.
fn snapshots(m: &Mount, n: usize) {
    for i in 1..=n {
        write_file(&m.path("data.bin"), format!("state {i}\n").as_bytes());
        snapshot(m, &format!("s{i}"));
    }
}

/// Asserts that status shows a valid policy in force.
#[track_caller]
fn assert_status_ok(m: &Mount) {
    let st = status(m);
    assert_eq!(st["policy"], "ok", "status: {st}");
    assert!(st["error"].is_null(), "status: {st}");
}

/// Asserts that status shows a refused text, and returns its error.
#[track_caller]
fn assert_status_error(m: &Mount) -> String {
    let st = status(m);
    assert_eq!(
        st["policy"], "invalid: the previous policy is in force",
        "status: {st}"
    );
    st["error"]
        .as_str()
        .unwrap_or_else(|| panic!("status shows no error: {st}"))
        .to_string()
}

#[test]
fn the_default_policy_is_readable_documents_every_key_and_keeps_everything() {
    let m = Mount::new("ret-policy-default");
    let text = policy_text(&m);
    assert!(
        text.starts_with("# ckptfs retention policy"),
        "default text:\n{text}"
    );
    assert!(
        text.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "the default policy has an active line:\n{text}"
    );
    for key in KEYS {
        assert!(
            text.contains(&format!("# {key} = ")),
            "the default text does not show {key}:\n{text}"
        );
    }
    let md = std::fs::metadata(ctl(&m, "retention/policy")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), text.len() as u64, "stat size of the policy file");

    snapshots(&m, 3);
    assert_status_ok(&m);
    assert_eq!(status(&m)["rules"], false);
    let (kept, expiring) = status_plan(&m);
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept.values().all(|r| r.contains(&"no-policy".to_string())),
        "{kept:?}"
    );
    assert!(expiring.is_empty());
    assert_eq!(listing(&m, "kept"), set(&["s1", "s2", "s3"]));
    assert!(listing(&m, "expiring").is_empty());
    let report = run_gc(&m);
    assert_eq!(
        report["snapshots_expired"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(snapshot_names(&m), set(&["s1", "s2", "s3"]));
}

#[test]
fn written_appended_and_overwritten_policies_apply_at_once_and_survive_a_remount() {
    let mut m = Mount::new("ret-policy-write");
    snapshots(&m, 6);
    let policy = ctl(&m, "retention/policy");

    // printf > policy: the text reads back exactly as written.
    sh(&format!(
        "printf '# mine\\nkeep-last = 2\\n' > {}",
        q(&policy)
    ));
    assert_eq!(policy_text(&m), "# mine\nkeep-last = 2\n");
    assert_eq!(std::fs::metadata(&policy).unwrap().len(), 21);
    assert_status_ok(&m);
    assert_eq!(listing(&m, "kept"), set(&["s5", "s6"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s2", "s3", "s4"]));

    // echo >> policy: appended, and the later line wins.
    append_policy(&m, "keep-last = 4");
    assert_eq!(policy_text(&m), "# mine\nkeep-last = 2\nkeep-last = 4\n");
    assert_eq!(listing(&m, "kept"), set(&["s3", "s4", "s5", "s6"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s2"]));
    // Keys are case-insensitive, `_` reads as `-`, values may be quoted.
    append_policy(&m, "Keep_Last = \"3\"");
    assert_eq!(listing(&m, "kept"), set(&["s4", "s5", "s6"]));

    // An overwrite through the shell replaces everything.
    sh(&format!("echo 'keep-every = 5' > {}", q(&policy)));
    assert_eq!(policy_text(&m), "keep-every = 5\n");
    assert_eq!(listing(&m, "kept"), set(&["s5", "s6"]));
    let (kept, _) = status_plan(&m);
    assert_eq!(kept["s5"], ["keep-every"]);
    assert_eq!(kept["s6"], ["newest"]);

    // Written in several write(2) calls on one descriptor: applied at close.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&policy)
        .unwrap();
    f.write_all(b"# two writes\n").unwrap();
    f.write_all(b"keep-last = 1\nfile-versions-keep = 2\n")
        .unwrap();
    close(f).expect("close after a valid policy");
    let text = "# two writes\nkeep-last = 1\nfile-versions-keep = 2\n";
    assert_eq!(policy_text(&m), text);
    assert_eq!(listing(&m, "kept"), set(&["s6"]));

    m.remount();
    assert_eq!(policy_text(&m), text, "the policy after a remount");
    assert_status_ok(&m);
    assert_eq!(listing(&m, "kept"), set(&["s6"]));
    assert_eq!(
        listing(&m, "expiring"),
        set(&["s1", "s2", "s3", "s4", "s5"])
    );
    // And it is the policy GC applies after the remount.
    let report = run_gc(&m);
    assert_eq!(
        super::expired_of(&report),
        set(&["s1", "s2", "s3", "s4", "s5"])
    );
    assert_eq!(snapshot_names(&m), set(&["s6"]));
}

#[test]
fn a_malformed_line_fails_at_write_with_einval_and_the_old_policy_stays() {
    let mut m = Mount::new("ret-policy-malformed");
    snapshots(&m, 4);
    let policy = ctl(&m, "retention/policy");
    let good = "keep-last = 2\n";
    set_policy(&m, good);
    assert_eq!(listing(&m, "kept"), set(&["s3", "s4"]));

    // Appending a typo: write(2) itself fails, and so does close.
    let mut f = OpenOptions::new().append(true).open(&policy).unwrap();
    expect_errno(
        f.write_all(b"keep-lst = 1\n"),
        Errno::EINVAL,
        "write of a typo",
    );
    assert_eq!(close(f), Err(Errno::EINVAL), "close after a refused write");
    assert_eq!(policy_text(&m), good, "the old policy must stay");
    let err = assert_status_error(&m);
    assert!(
        err.contains("line 2") && err.contains("keep-lst") && err.contains("keep-last"),
        "{err}"
    );
    assert_eq!(
        listing(&m, "kept"),
        set(&["s3", "s4"]),
        "the old policy must stay in force"
    );

    // A bad value, overwriting: refused at write, nothing replaced.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&policy)
        .unwrap();
    expect_errno(
        f.write_all(b"keep-last = many\n"),
        Errno::EINVAL,
        "write of a bad value",
    );
    assert_eq!(close(f), Err(Errno::EINVAL));
    assert_eq!(policy_text(&m), good);
    let err = assert_status_error(&m);
    assert!(err.contains("line 1") && err.contains("many"), "{err}");

    // A good line, then a bad one on the same descriptor: nothing of this
    // handle is applied, not even the good line.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&policy)
        .unwrap();
    f.write_all(b"keep-last = 1\n").unwrap();
    expect_errno(
        f.write_all(b"gc-interval = soon\n"),
        Errno::EINVAL,
        "second write",
    );
    assert_eq!(close(f), Err(Errno::EINVAL));
    assert_eq!(policy_text(&m), good);
    assert_eq!(listing(&m, "kept"), set(&["s3", "s4"]));

    // `echo >>` from a shell fails visibly.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("echo 'keep-daly = 3' >> {}", q(&policy)))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "echo of a typo into the policy succeeded"
    );
    assert_eq!(policy_text(&m), good);
    assert!(assert_status_error(&m).contains("keep-daly"));

    // A good write clears the error; the refused texts left no trace.
    append_policy(&m, "keep-last = 3");
    assert_status_ok(&m);
    assert_eq!(policy_text(&m), "keep-last = 2\nkeep-last = 3\n");
    assert_eq!(listing(&m, "kept"), set(&["s2", "s3", "s4"]));
    m.remount();
    assert_eq!(policy_text(&m), "keep-last = 2\nkeep-last = 3\n");
    assert_status_ok(&m);
}

#[test]
fn rules_that_do_not_fit_together_fail_at_close_with_einval_and_the_old_policy_stays() {
    let mut m = Mount::new("ret-policy-inconsistent");
    snapshots(&m, 4);
    let policy = ctl(&m, "retention/policy");
    let good = "keep-last = 1\n";
    set_policy(&m, good);

    // keep-best without a metric source: every line is fine on its own,
    // so write(2) succeeds; close(2) refuses the text.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&policy)
        .unwrap();
    f.write_all(b"keep-last = 3\nkeep-best = 2\n")
        .expect("a write of well-formed lines succeeds");
    assert_eq!(
        close(f),
        Err(Errno::EINVAL),
        "close of keep-best without a metric source"
    );
    assert_eq!(policy_text(&m), good, "the old policy must stay");
    let err = assert_status_error(&m);
    assert!(
        err.contains("line 2") && err.contains("keep-best needs a metric source"),
        "{err}"
    );
    assert_eq!(listing(&m, "kept"), set(&["s4"]));
    assert_eq!(listing(&m, "expiring"), set(&["s1", "s2", "s3"]));

    // The same through coreutils' echo, which checks close(2) of its
    // output (a shell builtin's redirection ignores it).
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "/bin/echo 'metric-key = best_metric' >> {}",
            q(&policy)
        ))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "appending metric-key without metric-file succeeded"
    );
    assert_eq!(policy_text(&m), good);
    assert!(assert_status_error(&m).contains("metric-key needs metric-file"));

    // An unfinished last line (no newline) is only checked at close.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&policy)
        .unwrap();
    f.write_all(b"keep-last = 2\nkeep-evry = 2")
        .expect("an unfinished line is not checked at write");
    assert_eq!(close(f), Err(Errno::EINVAL));
    assert_eq!(policy_text(&m), good);
    assert!(assert_status_error(&m).contains("keep-evry"));

    // GC still applies the old policy.
    let report = run_gc(&m);
    assert_eq!(super::expired_of(&report), set(&["s1", "s2", "s3"]));
    assert_eq!(snapshot_names(&m), set(&["s4"]));

    // Completing the rules makes the text acceptable; the status recovers.
    let fixed = "keep-last = 3\nkeep-best = 2\nmetric-regex = loss=([0-9.]+)\n";
    set_policy(&m, fixed);
    assert_status_ok(&m);
    assert_eq!(policy_text(&m), fixed);
    m.remount();
    assert_eq!(policy_text(&m), fixed);
    assert_status_ok(&m);
    assert_eq!(status(&m)["rules"], true);
}
