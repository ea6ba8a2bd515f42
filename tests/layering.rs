//! The layers import only downward (DESIGN.md, "Shape of the code"):
//! chunk <- store <- tree <- fs/retention/remote <- daemon/cli. A source scan, so that a
//! cycle cannot creep in unnoticed.

use std::fs;
use std::path::Path;

/// For each layer folder, the modules it must not name and whether it may
/// mention RocksDB.
const RULES: &[(&str, &[&str], bool)] = &[
    ("chunk", &["store", "tree", "fs", "daemon", "cli"], false),
    ("store", &["tree", "fs", "daemon", "cli"], true),
    ("tree", &["fs", "daemon", "cli"], false),
    ("fs", &["store", "daemon", "cli"], false),
    ("retention", &["store", "fs", "daemon", "cli"], false),
    ("remote", &["store", "fs", "daemon", "cli"], false),
];

/// Files that must stay pure: the retention engine decides on plain data
/// and never reaches into the tree (only `retention/service.rs` does).
const PURE_FILES: &[&str] = &[
    "retention/policy.rs",
    "retention/plan.rs",
    "retention/metric.rs",
    "retention/duration.rs",
    "retention/text.rs",
    "retention/values.rs",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, forbidden, may_use_rocksdb) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "layer {layer} has no files");
        for file in files {
            let text = fs::read_to_string(&file).expect("read source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for module in *forbidden {
                    if code.contains(&format!("crate::{module}::"))
                        || code.contains(&format!("crate::{module};"))
                    {
                        violations.push(format!(
                            "{}:{}: {layer} names {module}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
                if !may_use_rocksdb && code.contains("rocksdb") {
                    violations.push(format!(
                        "{}:{}: {layer} names rocksdb",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    for rel in PURE_FILES {
        let text = fs::read_to_string(src.join(rel)).expect("read pure file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("crate::tree")
                || code.contains("SystemTime::now")
                || code.contains("std::fs")
            {
                violations.push(format!("{rel}:{}: pure retention code reaches out", n + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}
