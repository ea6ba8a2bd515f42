//! Tests of open files: the order of releases, opens and commits.

use std::time::{Duration, Instant};

use crate::ids::{Ino, PathId};
use crate::tree::{OpenMode, Tree};

const WRITE: OpenMode = OpenMode {
    write: true,
    append: false,
    truncate: false,
};
const TRUNCATE: OpenMode = OpenMode {
    write: true,
    append: false,
    truncate: true,
};

/// The sizes of every version of the file `name` in the root, oldest first.
fn version_sizes(tree: &Tree, name: &[u8]) -> Vec<u64> {
    let path = tree.history_child(PathId::ROOT, name).unwrap();
    let mut sizes = Vec::new();
    tree.versions_of(path, 0, |_, v| {
        sizes.push(v.size);
        true
    })
    .unwrap();
    sizes
}

/// Waits up to `limit` for `done`; tells whether it came true.
fn within(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn a_release_racing_the_next_truncating_open_commits_no_empty_version() {
    // A process that saves in a loop (`open(O_TRUNC)`, write, close): the
    // kernel sends each handle's RELEASE after its close returned, so it
    // races the next OPEN on another FUSE thread. Each round holds the
    // file's state (a commit in flight, say) while the release starts and
    // the open counts itself, then lets both go.
    let (_dir, tree) = crate::tree::test_tree();
    let (ino, _, mut fh) = tree
        .create(Ino::ROOT, b"step.txt", 0o644, 0, 0, WRITE)
        .unwrap();
    tree.write(fh, 0, b"version 0\n", 7, |_| {}).unwrap();
    tree.flush(fh, 7, |_, _| false).unwrap();
    let rounds = 20;
    for i in 1..=rounds {
        let file = tree.open.lock().get(&ino).cloned().unwrap();
        let held = file.state.lock();
        let releaser = {
            let tree = tree.clone();
            std::thread::spawn(move || tree.release(fh))
        };
        // Were the release to count down before it took the state, the
        // open below would count itself after it, and truncate (the
        // state is fair game for either) before the release committed:
        // the empty file would be that commit's version.
        assert!(
            !within(Duration::from_millis(50), || file.counts.lock().writers
                == 0),
            "round {i}: the release counted down without the file's state"
        );
        let before = file.counts.lock().handles;
        let opener = {
            let tree = tree.clone();
            std::thread::spawn(move || tree.open(ino, TRUNCATE))
        };
        assert!(
            within(Duration::from_secs(5), || file.counts.lock().handles
                > before),
            "the open counted itself"
        );
        drop(held);
        releaser.join().unwrap().unwrap();
        fh = opener.join().unwrap().unwrap();
        let data = format!("version {i}\n");
        tree.write(fh, 0, data.as_bytes(), 7, |_| {}).unwrap();
        tree.flush(fh, 7, |_, _| false).unwrap();
    }
    tree.release(fh).unwrap();
    let sizes = version_sizes(&tree, b"step.txt");
    assert!(
        !sizes.contains(&0),
        "an empty version was committed: sizes {sizes:?}"
    );
    assert_eq!(sizes.len(), rounds + 1, "one version per close");
}
