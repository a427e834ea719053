//! Every bad input gets a clear `ferry: ...` error, exit 1, and leaves nothing behind.

mod support;
use std::path::Path;
use support::{need_root, TestHost};

fn assert_nothing_of(h: &TestHost, ct: &str) {
    for p in [format!("conf/{ct}.toml"), format!("private/{ct}"), format!("root/{ct}"), format!("locks/{ct}.lock")] {
        assert!(!h.data.join(&p).exists(), "{p} left behind");
    }
    assert!(!h.run.join(ct).exists());
    h.assert_clean();
}

/// A tar archive with one member whose raw name is `name` (the tar crate refuses to write
/// unsafe names, so the header is filled by hand).
type Member<'a> = (&'a str, tar::EntryType, Option<&'a str>);

fn tar_bytes(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in members {
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(*kind);
        hd.set_mode(0o755);
        hd.set_uid(0);
        hd.set_gid(0);
        hd.set_mtime(1_700_000_000);
        let data: &[u8] = if *kind == tar::EntryType::Regular { b"#!/bin/sh\n" } else { b"" };
        hd.set_size(data.len() as u64);
        hd.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            hd.set_link_name(l).unwrap();
        }
        hd.set_cksum();
        b.append(&hd, data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn bad_ctid_and_missing_template() {
    if !need_root("bad_ctid") {
        return;
    }
    let h = TestHost::new();
    let tpl = h.template.to_str().unwrap();
    for bad in ["a/b", "..", "x y", &"x".repeat(65)] {
        let e = h.fails(&["create", bad, "--template", tpl]);
        assert!(e.contains("invalid CTID"), "{e}");
    }
    let e = h.fails(&["create", "m1", "--template", "/nonexistent/template"]);
    assert!(e.contains("/nonexistent/template"), "{e}");
    assert_nothing_of(&h, "m1");
    let junk = h.dir.path().join("junk.bin");
    std::fs::write(&junk, b"not an archive").unwrap();
    let e = h.fails(&["create", "m2", "--template", junk.to_str().unwrap()]);
    assert!(e.contains("neither a directory nor a tar"), "{e}");
    assert_nothing_of(&h, "m2");
    let e = h.fails(&["start", "nosuch"]);
    assert!(e.contains("no such container"), "{e}");
    // A template with no init and no shell needs --init.
    let empty = h.dir.path().join("empty-tpl");
    std::fs::create_dir(&empty).unwrap();
    let e = h.fails(&["create", "m3", "--template", empty.to_str().unwrap()]);
    assert!(e.contains("--init"), "{e}");
    assert_nothing_of(&h, "m3");
}

#[test]
fn escaping_tarballs_are_refused() {
    if !need_root("tarballs") {
        return;
    }
    use tar::EntryType as E;
    let h = TestHost::new();
    let victim = h.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let cases: Vec<(&str, Vec<Member<'_>>)> = vec![
        ("dotdot", vec![("bin/", E::Directory, None), ("../../victim/x", E::Regular, None)]),
        ("absolute", vec![("/tmp/ferry-evil", E::Regular, None)]),
        ("symlink", vec![("etc", E::Symlink, Some(victim.to_str().unwrap())), ("etc/passwd", E::Regular, None)]),
    ];
    for (name, members) in cases {
        let tb = h.dir.path().join(format!("{name}.tar"));
        std::fs::write(&tb, tar_bytes(&members)).unwrap();
        let ct = format!("tar-{name}");
        let e = h.fails(&["create", &ct, "--template", tb.to_str().unwrap()]);
        assert!(e.contains("refusing template archive member"), "{name}: {e}");
        assert_nothing_of(&h, &ct);
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "{name} wrote outside");
    }
    assert!(!Path::new("/tmp/ferry-evil").exists());
    // A good archive, compressed with zstd, works.
    let good = tar_bytes(&[("bin/", E::Directory, None), ("bin/sh", E::Regular, None)]);
    let zst = h.dir.path().join("good.tar.zst");
    std::fs::write(&zst, zstd::encode_all(&good[..], 3).unwrap()).unwrap();
    h.ok(&["create", "tz", "--template", zst.to_str().unwrap()]);
    assert!(h.data.join("private/tz/bin/sh").is_file());
}

#[test]
fn wrong_state_operations() {
    if !need_root("wrong_state") {
        return;
    }
    let h = TestHost::new();
    h.started("w1");
    let e = h.fails(&["start", "w1"]);
    assert!(e.contains("already running"), "{e}");
    let e = h.fails(&["destroy", "w1"]);
    assert!(e.contains("running") && e.contains("--force"), "{e}");
    assert!(h.data.join("private/w1").exists());
    h.ok(&["stop", "w1"]);
    let e = h.fails(&["exec", "w1", "--", "true"]);
    assert!(e.contains("not running") && e.contains("ferry start w1"), "{e}");
    let e = h.fails(&["create", "w1", "--template", h.template.to_str().unwrap()]);
    assert!(e.contains("already exists"), "{e}");
    // destroy --force stops a running container first.
    h.ok(&["start", "w1"]);
    h.ok(&["destroy", "--force", "w1"]);
    assert_nothing_of(&h, "w1");
}

#[test]
fn failed_start_leaves_nothing() {
    if !need_root("failed_start") {
        return;
    }
    let h = TestHost::new();
    h.ok(&["create", "fs1", "--template", h.template.to_str().unwrap(), "--init", "/bin/does-not-exist"]);
    let e = h.fails(&["start", "fs1"]);
    assert!(e.contains("exec init") && e.contains("/bin/does-not-exist"), "{e}");
    assert_eq!(h.ok(&["status", "fs1"]).trim(), "fs1 stopped");
    assert!(!h.run.join("fs1/state.json").exists());
    h.assert_clean();
}

#[test]
fn unwritable_data_dir() {
    if !need_root("unwritable") {
        return;
    }
    let h = TestHost::new();
    std::fs::create_dir_all(&h.data).unwrap();
    nix::mount::mount(Some("tmpfs"), &h.data, Some("tmpfs"), nix::mount::MsFlags::MS_RDONLY, Some("size=1m")).unwrap();
    let e = h.fails(&["create", "ro1", "--template", h.template.to_str().unwrap()]);
    assert!(e.contains(h.data.to_str().unwrap()) && e.contains("Read-only"), "{e}");
    assert!(std::fs::read_dir(&h.data).unwrap().next().is_none());
    nix::mount::umount(&h.data).unwrap();
}

#[test]
fn second_operation_names_lock_holder() {
    if !need_root("lock") {
        return;
    }
    let h = TestHost::new();
    h.ok(&["create", "lk", "--template", h.template.to_str().unwrap()]);
    let host = h.runtime_host();
    let ct = ferry_runtime::Ctid::new("lk").unwrap();
    let lock = ferry_runtime::lock::ContainerLock::acquire(&host, &ct, "migrate").unwrap();
    let e = h.fails(&["start", "lk"]);
    assert!(e.contains("busy") && e.contains("migrate") && e.contains(&std::process::id().to_string()), "{e}");
    assert_eq!(h.ok(&["status", "lk"]).trim(), "lk stopped");
    drop(lock);
    h.ok(&["start", "lk"]);
}
