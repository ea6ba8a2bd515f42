//! The round trip every other test builds on.

use std::fs;

use crate::common::{hash_file, noise, Mount};

#[test]
fn a_file_written_through_the_mount_reads_back_after_remount() {
    let mut m = Mount::new("basics-roundtrip");
    let data = noise(5_000_000, 1);
    fs::write(m.path("a.bin"), &data).unwrap();
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/small.txt"), b"hello").unwrap();
    assert_eq!(fs::read(m.path("a.bin")).unwrap(), data);
    let before = hash_file(&m.path("a.bin"));
    m.remount();
    assert_eq!(hash_file(&m.path("a.bin")), before);
    assert_eq!(fs::read(m.path("dir/small.txt")).unwrap(), b"hello");
    let names: Vec<String> = fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
