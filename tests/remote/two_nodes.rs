//! Two nodes, one bucket on a real RADOS Gateway: both stores hold the
//! same 32 MiB model and their own 8 MiB rank shard. node-a pushes first;
//! node-b then finds the model's chunks on the remote and uploads little
//! more than its shard. The remote lists both nodes' snapshots; a name
//! both pushed needs `--node`, and each node's snapshot restores
//! byte-exact from the s3:// URL.

use std::fs;

use super::ceph::Ceph;
use crate::common::{noise, Mount};
use crate::{args, assert_bytes, names, num, ok, push_report, pushed, refused, remote_snapshots};

/// The model both nodes write.
const SHARED: usize = 32 << 20;
/// Each node's own shard.
const SHARD: usize = 8 << 20;

#[test]
fn two_nodes_pushing_the_same_model_to_ceph_share_its_chunks_and_each_restores_exactly() {
    let ceph = Ceph::start("remote-two-nodes");
    ceph.mb("ckpt");
    let env = ceph.env();
    let url = "s3://ckpt/run";
    let model = noise(SHARED, 0x5a4e_0001);
    let shard_a = noise(SHARD, 0x5a4e_00a0);
    let shard_b = noise(SHARD, 0x5a4e_00b0);

    // node-a: a snapshot of the model alone first (its push counts the
    // model's chunks), then step-100 with its shard.
    let mut a = Mount::new("remote-node-a");
    let mut b = Mount::new("remote-node-b");
    fs::write(a.path("model.bin"), &model).unwrap();
    ok(args!["snapshot", a.mnt, "base"], &[]);
    fs::write(a.path("rank-0.bin"), &shard_a).unwrap();
    ok(args!["snapshot", a.mnt, "step-100"], &[]);
    fs::write(b.path("model.bin"), &model).unwrap();
    fs::write(b.path("rank-1.bin"), &shard_b).unwrap();
    ok(args!["snapshot", b.mnt, "step-100"], &[]);
    for m in [&mut a, &mut b] {
        let status = m.stop();
        assert!(
            status.success(),
            "daemon exited with {status}:\n{}",
            m.log()
        );
    }

    for (m, node) in [(&a, "node-a"), (&b, "node-b")] {
        let said = ceph.add_remote(&m.store, url, node);
        assert!(said.contains(&format!("pushes as node {node}")), "{said}");
    }

    let base = push_report(
        args!["push", a.store, "ceph", "--snapshot", "base", "--json"],
        &env,
        "ceph",
    );
    println!("node-a push base: {base}");
    assert_eq!(pushed(&base), ["base"], "{base:#}");
    let model_chunks = num(&base, "chunks_uploaded");
    assert!(
        model_chunks > 0 && num(&base, "chunks_present") == 0,
        "{base:#}"
    );
    let up = num(&base, "bytes_uploaded");
    assert!(
        up >= SHARED as u64 && up <= SHARED as u64 * 103 / 100,
        "{base:#}"
    );

    let a2 = push_report(args!["push", a.store, "--json"], &env, "ceph");
    println!("node-a push step-100: {a2}");
    assert_eq!(pushed(&a2), ["step-100"], "{a2:#}");
    assert_eq!(num(&a2, "already"), 1, "{a2:#}");
    assert_eq!(num(&a2, "chunks_present"), model_chunks, "{a2:#}");
    let up = num(&a2, "bytes_uploaded");
    assert!(
        up >= SHARD as u64 && up <= SHARD as u64 * 103 / 100,
        "node-a's second push uploaded {up} bytes for an {SHARD}-byte shard\n{a2:#}"
    );

    // node-b: the model is on the remote already, from node-a.
    let b1 = push_report(args!["push", b.store, "ceph", "--json"], &env, "ceph");
    println!("node-b push step-100: {b1}");
    assert_eq!(pushed(&b1), ["step-100"], "{b1:#}");
    assert_eq!(num(&b1, "already"), 0, "{b1:#}");
    assert_eq!(num(&b1, "logical_bytes"), (SHARED + SHARD) as u64, "{b1:#}");
    let shared = num(&b1, "chunks_present");
    assert!(
        shared * 10 >= model_chunks * 9,
        "node-b found {shared} of the model's {model_chunks} chunks on the remote\n{b1:#}"
    );
    let up_b = num(&b1, "bytes_uploaded");
    assert!(
        up_b >= SHARD as u64 && up_b <= SHARD as u64 + SHARED as u64 / 10,
        "node-b uploaded {up_b} bytes for {SHARED} shared + {SHARD} own\n{b1:#}"
    );
    println!(
        "two nodes: node-b found {shared} of {model_chunks} model chunks on the remote, \
         uploaded {up_b} bytes ({} chunks) for {} logical",
        num(&b1, "chunks_uploaded"),
        SHARED + SHARD
    );

    // Both nodes' snapshots, from either store.
    let want = [
        ("node-a".to_string(), "base".to_string()),
        ("node-a".to_string(), "step-100".to_string()),
        ("node-b".to_string(), "step-100".to_string()),
    ];
    assert_eq!(remote_snapshots(&b.store, "ceph", &env), want);
    assert_eq!(remote_snapshots(&a.store, "ceph", &env), want);

    // step-100 exists on both nodes: the URL alone does not say which.
    let out = b.root.join("out");
    fs::create_dir(&out).unwrap();
    let ep = ["--endpoint", ceph.endpoint.as_str()];
    refused(
        args!["restore", url, "step-100", out.join("x"), ep[0], ep[1]],
        &env,
        &["exists on nodes node-a, node-b", "--node"],
    );
    assert!(names(&out).is_empty(), "{:?}", names(&out));
    for (node, rank, shard) in [
        ("node-a", "rank-0.bin", &shard_a),
        ("node-b", "rank-1.bin", &shard_b),
    ] {
        let dest = out.join(node);
        ok(
            args!["restore", url, "step-100", dest, ep[0], ep[1], "--node", node],
            &env,
        );
        assert_eq!(names(&dest), ["model.bin", rank], "{node}");
        assert_bytes(&dest.join("model.bin"), &model);
        assert_bytes(&dest.join(rank), shard);
    }
    // The endpoint may come from AWS_ENDPOINT_URL too.
    let dest = out.join("base");
    let with_ep = [env[0], env[1], ("AWS_ENDPOINT_URL", ceph.endpoint.as_str())];
    ok(args!["restore", url, "base/model.bin", dest], &with_ep);
    assert_bytes(&dest, &model);
}
