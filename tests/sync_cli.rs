//! `ferry sync SRC DIR`: the migration's file sync on its own, through the same child-process
//! pipes as over ssh (`sync-receive` on the other end).

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn ferry_sync(src: &Path, dst: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry")).args(["sync", "--json"]).arg(src).arg(dst).output().expect("run ferry sync");
    assert!(out.status.success(), "ferry sync failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ferry sync --json prints JSON")
}

#[test]
fn sync_copies_a_tree_then_only_what_changed() {
    let t = tempfile::Builder::new().prefix("ferry-tsync").tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("a/b/f{i}")), format!("file {i}\n").repeat(100)).unwrap();
    }
    std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    symlink("a/b/f1", src.join("link")).unwrap();
    std::fs::hard_link(src.join("a/b/f2"), src.join("hard")).unwrap();

    let first = ferry_sync(&src, &dst);
    assert_eq!(first["files_sent"], 51, "{first}");
    let same = |p: &str| std::fs::read(src.join(p)).unwrap() == std::fs::read(dst.join(p)).unwrap();
    assert!((0..50).all(|i| same(&format!("a/b/f{i}"))) && same("run.sh"));
    assert_eq!(std::fs::metadata(dst.join("run.sh")).unwrap().permissions().mode() & 0o7777, 0o750);
    assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), Path::new("a/b/f1"));
    assert_eq!(std::fs::metadata(dst.join("hard")).unwrap().ino(), std::fs::metadata(dst.join("a/b/f2")).unwrap().ino());

    std::fs::write(src.join("a/b/f7"), "changed\n").unwrap();
    std::fs::remove_file(src.join("a/b/f9")).unwrap();
    let second = ferry_sync(&src, &dst);
    assert_eq!(second["files_sent"], 1, "{second}");
    assert_eq!(second["deleted"], 1, "{second}");
    assert!(same("a/b/f7"));
    assert!(!dst.join("a/b/f9").exists());
    assert!(second["bytes_on_wire"].as_u64().unwrap() < first["bytes_on_wire"].as_u64().unwrap() / 4);
}

#[test]
fn sync_refuses_a_missing_source() {
    let t = tempfile::Builder::new().prefix("ferry-tsync").tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry")).arg("sync").arg(t.path().join("nope")).arg(t.path().join("dst")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
    assert!(!t.path().join("dst").exists());
}
