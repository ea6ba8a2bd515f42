//! `remote add` checks the remote answers before it keeps it: a missing
//! bucket, a wrong secret key, an unknown access key and an endpoint
//! nobody listens on are each refused with exit code 1 and one line that
//! names the remote and says what is wrong; `remote list --json` is
//! unchanged after each (not even the node id is set). The right bucket
//! and keys are then added, and push to it.

use std::fs;

use super::ceph::Ceph;
use crate::common::{noise, Mount};
use crate::{args, json, num, ok, push_report, refused, remote_snapshots, Env};

#[test]
fn remote_add_refuses_a_missing_bucket_wrong_keys_and_a_dead_endpoint_and_adds_nothing() {
    let ceph = Ceph::start("remote-add");
    ceph.mb("ckpt");
    let mut m = Mount::new("remote-add");
    fs::write(m.path("w.bin"), noise(1 << 20, 0xadd0_0001)).unwrap();
    ok(args!["snapshot", m.mnt, "s1"], &[]);
    let status = m.stop();
    assert!(
        status.success(),
        "daemon exited with {status}:\n{}",
        m.log()
    );
    let store = &m.store;
    let ep = ceph.endpoint.as_str();
    let good = ceph.env();

    let before = json(args!["remote", "list", store, "--json"], &[]);
    assert_eq!(
        before,
        serde_json::json!({"node": "", "remotes": []}),
        "{before:#}"
    );

    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let wrong_secret = [good[0], ("AWS_SECRET_ACCESS_KEY", "not-the-secret-key")];
    let unknown_key = [("AWS_ACCESS_KEY_ID", "NOSUCHACCESSKEY00000"), good[1]];
    // URL, endpoint, keys, what the error says.
    let cases: [(&str, &str, Env, &[&str]); 4] = [
        (
            "s3://no-such-bucket/run",
            ep,
            &good,
            &["the bucket does not exist (NoSuchBucket, HTTP 404)"],
        ),
        (
            "s3://ckpt/run",
            ep,
            &wrong_secret,
            &[
                "wrong credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) \
                 (SignatureDoesNotMatch, HTTP 403)",
            ],
        ),
        (
            "s3://ckpt/run",
            ep,
            &unknown_key,
            &[
                "wrong credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                "HTTP 403",
            ],
        ),
        ("s3://ckpt/run", &dead, &good, &["cannot reach the server"]),
    ];
    for (url, endpoint, env, needles) in cases {
        let mut want = vec!["remote ceph at ", url];
        want.extend_from_slice(needles);
        let line = refused(
            args![
                "remote",
                "add",
                store,
                "ceph",
                url,
                "--endpoint",
                endpoint,
                "--node",
                "node-x"
            ],
            env,
            &want,
        );
        println!("{url} via {endpoint}: {line}");
        assert_eq!(
            json(args!["remote", "list", store, "--json"], &[]),
            before,
            "a refused `remote add` ({url}, {endpoint}) changed the remotes"
        );
    }

    // The right ones.
    ok(
        args![
            "remote",
            "add",
            store,
            "ceph",
            "s3://ckpt/run",
            "--endpoint",
            ep,
            "--node",
            "node-x"
        ],
        &good,
    );
    let list = json(args!["remote", "list", store, "--json"], &[]);
    assert_eq!(list["node"], "node-x", "{list:#}");
    let remotes = list["remotes"].as_array().unwrap();
    assert_eq!(remotes.len(), 1, "{list:#}");
    assert_eq!(remotes[0]["name"], "ceph");
    assert_eq!(remotes[0]["url"], "s3://ckpt/run");
    assert_eq!(remotes[0]["endpoint"], ep);
    let r = push_report(args!["push", store, "--json"], &good, "ceph");
    assert_eq!(num(&r, "logical_bytes"), 1 << 20, "{r:#}");
    assert_eq!(
        remote_snapshots(store, "ceph", &good),
        [("node-x".to_string(), "s1".to_string())]
    );
}
