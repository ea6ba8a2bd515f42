//! A damaged remote: one flipped byte in the middle of a pack object. A
//! restore from the URL fails with exit code 1 and a message that says
//! "damaged" and names the pack's key, and leaves neither DEST nor its
//! staging copy behind.

use std::fs;

use crate::common::{noise, Mount};
use crate::{args, names, num, ok, push_report, refused, NO_ENV};

#[test]
fn a_flipped_byte_in_a_remote_pack_fails_the_restore_naming_the_pack_and_leaves_no_dest() {
    let mut m = Mount::new("remote-damaged");
    fs::write(m.path("weights.bin"), noise(6 << 20, 0xdead_0001)).unwrap();
    fs::write(m.path("config.json"), b"{\"lr\": 0.001}\n").unwrap();
    ok(args!["snapshot", m.mnt, "s1"], NO_ENV);
    let status = m.stop();
    assert!(
        status.success(),
        "daemon exited with {status}:\n{}",
        m.log()
    );

    let dir = m.root.join("remote");
    let url = format!("file://{}", dir.display());
    ok(
        args!["remote", "add", m.store, "disk", url, "--node", "n1"],
        NO_ENV,
    );
    let r = push_report(args!["push", m.store, "--json"], NO_ENV, "disk");
    assert_eq!(num(&r, "packs"), 1, "{r:#}");

    // The intact remote restores.
    let good = m.root.join("good");
    ok(args!["restore", url, "s1", good], NO_ENV);
    assert_eq!(names(&good), ["config.json", "weights.bin"]);

    let packs = names(&dir.join("packs"));
    assert_eq!(packs.len(), 1, "{packs:?}");
    let key = format!("packs/{}", packs[0]);
    let path = dir.join(&key);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    fs::write(&path, &bytes).unwrap();

    // The whole snapshot and the one file: both refused, nothing left.
    let out_dir = m.root.join("out");
    fs::create_dir(&out_dir).unwrap();
    for source in ["s1", "s1/weights.bin"] {
        let dest = out_dir.join("dest");
        refused(
            args!["restore", url, source, dest],
            NO_ENV,
            &["damaged", &key],
        );
        assert!(
            fs::symlink_metadata(&dest).is_err(),
            "a failed restore left {}",
            dest.display()
        );
        let left = names(&out_dir);
        assert!(left.is_empty(), "a failed restore left {left:?}");
    }
    // The small file is in the same pack but its record is intact.
    let small = out_dir.join("config.json");
    ok(args!["restore", url, "s1/config.json", small], NO_ENV);
    assert_eq!(fs::read(&small).unwrap(), b"{\"lr\": 0.001}\n");
}
