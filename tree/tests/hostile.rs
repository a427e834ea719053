//! The tree layer against a tree that plays the attacker: symlinks on the way and at the end,
//! FIFOs and other inodes swapped in, mount points, `..`. Every test runs with both resolvers
//! (openat2 and the per-component fallback).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use ferry_tree::meta::{self, Meta, Target};
use ferry_tree::walk::walk;
use ferry_tree::{Dir, Kind, Opened, Resolver};

const BOTH: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-t-tree").tempdir().unwrap()
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// `root/` (the tree) and `outside/secret` (a host file) in a fresh directory.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"host secret").unwrap();
    std::fs::set_permissions(outside.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("d/to-outside")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("leak")).unwrap();
    std::fs::write(root.join("d/file"), b"tree data").unwrap();
    (tmp, root, outside)
}

/// The fallback is tested explicitly everywhere below; production uses openat2 on any kernel
/// that has it (5.6 and later).
#[test]
fn openat2_is_used_where_the_kernel_has_it() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    let want = if (major, minor) >= (5, 6) { Resolver::Openat2 } else { Resolver::Walk };
    assert_eq!(ferry_tree::default_resolver(), want, "kernel {}", release.trim());
}

#[test]
fn a_symlink_on_the_way_is_never_followed() {
    let (_tmp, root, _outside) = setup();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        let e = d.node_beneath(b"d/to-outside/secret").unwrap_err();
        assert_eq!(errno(&e), libc::ELOOP, "{r:?}: {e}");
        let e = d.dir_beneath(b"d/to-outside").unwrap_err();
        assert_eq!(errno(&e), libc::ENOTDIR, "{r:?}: {e}");
        let e = d.dir_beneath(b"d/to-outside/x").unwrap_err();
        assert_eq!(errno(&e), libc::ELOOP, "{r:?}: {e}");
        assert!(matches!(d.open_file_beneath(b"d/to-outside/secret", false, None).unwrap(), Opened::Gone), "{r:?}");
        // The file the tree does hold is reachable.
        let Opened::File(mut f, st) = d.open_file_beneath(b"d/file", false, None).unwrap() else { panic!("{r:?}: d/file not opened") };
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), st.kind()), ("tree data", Kind::Regular));
    }
}

#[test]
fn a_symlink_at_the_end_is_the_symlink_itself() {
    let (_tmp, root, _outside) = setup();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        let n = d.node_beneath(b"leak").unwrap();
        assert_eq!(n.kind(), Kind::Symlink, "{r:?}");
        match d.open_file_beneath(b"leak", false, None).unwrap() {
            Opened::Changed(st) => assert_eq!(st.kind(), Kind::Symlink, "{r:?}"),
            other => panic!("{r:?}: the symlink was opened: {other:?}"),
        }
        assert!(n.reopen(false).is_err(), "{r:?}: a symlink node reopened for its data");
    }
}

#[test]
fn dot_dot_and_absolute_paths_are_refused() {
    let (_tmp, root, outside) = setup();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        for bad in [&b"../outside/secret"[..], b"d/../../outside/secret", b"/etc/passwd", b"d//file", b"./d", b"d/"] {
            let e = d.node_beneath(bad).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{r:?} {:?}: {e}", String::from_utf8_lossy(bad));
        }
        assert!(d.child_dir(b"..").is_err() && d.stat_at(b"../outside").is_err());
    }
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"host secret");
}

#[test]
fn another_inode_in_place_of_the_scanned_one_is_changed_not_opened() {
    let (_tmp, root, _outside) = setup();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        std::fs::write(root.join("f"), b"first").unwrap();
        let scanned = d.stat_at(b"f").unwrap();
        // Replaced by another regular file: not the one scanned.
        std::fs::write(root.join("f.new"), b"second").unwrap();
        std::fs::rename(root.join("f.new"), root.join("f")).unwrap();
        assert!(matches!(d.open_file_beneath(b"f", false, Some(&scanned)).unwrap(), Opened::Changed(s) if s.kind() == Kind::Regular), "{r:?}");
        let now = d.stat_at(b"f").unwrap();
        assert!(matches!(d.open_file_beneath(b"f", false, Some(&now)).unwrap(), Opened::File(..)), "{r:?}");
        std::fs::remove_file(root.join("f")).unwrap();
        assert!(matches!(d.open_file_beneath(b"f", false, Some(&now)).unwrap(), Opened::Gone), "{r:?}");
    }
}

/// A FIFO in place of a file: the open neither blocks nor happens at all (a writer waiting
/// for a reader is never released).
#[test]
fn a_fifo_is_never_opened() {
    let (_tmp, root, _outside) = setup();
    let fifo = root.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let f2 = fifo.clone();
    let writer = std::thread::spawn(move || {
        // Blocks until someone opens the FIFO to read.
        let w = std::fs::OpenOptions::new().write(true).open(&f2);
        let _ = tx.send(());
        w
    });
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        match d.open_file_beneath(b"fifo", false, None).unwrap() {
            Opened::Changed(st) => assert_eq!(st.kind(), Kind::Fifo),
            other => panic!("{r:?}: {other:?}"),
        }
        let n = d.node_beneath(b"fifo").unwrap();
        assert_eq!(n.kind(), Kind::Fifo);
    }
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the FIFO was opened for reading");
    // Let the writer go.
    let _reader = std::fs::File::open(&fifo).unwrap();
    let _ = rx.recv_timeout(Duration::from_secs(5));
    writer.join().unwrap().unwrap();
}

#[test]
fn metadata_goes_to_the_inode_held_not_to_where_a_name_leads() {
    let (_tmp, root, outside) = setup();
    if !nix_root() {
        eprintln!("skipped: needs root (chown)");
        return;
    }
    let before = std::fs::metadata(outside.join("secret")).unwrap();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        let n = d.node_beneath(b"leak").unwrap();
        meta::apply(Target::Node(&n), &Meta { uid: 4321, gid: 4321, perm: 0o4777, mtime_ns: 1_000_000_000, xattrs: None }).unwrap();
        let l = std::fs::symlink_metadata(root.join("leak")).unwrap();
        assert_eq!((l.uid(), l.mtime()), (4321, 1), "{r:?}");
    }
    let after = std::fs::metadata(outside.join("secret")).unwrap();
    assert_eq!((after.mode(), after.uid(), after.mtime()), (before.mode(), before.uid(), before.mtime()));
    // A directory's metadata through its own fd.
    let d = Dir::open(&root).unwrap();
    let sub = d.dir_beneath(b"d").unwrap();
    meta::apply(Target::Dir(&sub), &Meta { uid: 7, gid: 8, perm: 0o2750, mtime_ns: 5_000_000_123, xattrs: None }).unwrap();
    let m = std::fs::metadata(root.join("d")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777, m.mtime(), m.mtime_nsec()), (7, 8, 0o2750, 5, 123));
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn removing_a_tree_never_leaves_it() {
    let (_tmp, root, outside) = setup();
    std::fs::create_dir_all(root.join("d/deep/er")).unwrap();
    std::fs::write(root.join("d/deep/er/x"), b"x").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("d/deep/escape")).unwrap();
    let d = Dir::open(&root).unwrap();
    assert!(d.remove_all_at(b"d").unwrap());
    assert!(!root.join("d").exists());
    assert!(!d.remove_all_at(b"d").unwrap());
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"host secret");
    assert!(d.remove_all_at(b"leak").unwrap());
    assert!(outside.join("secret").exists());
}

#[test]
fn a_walk_lists_symlinks_and_does_not_enter_them() {
    let (_tmp, root, _outside) = setup();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        let mut seen = Vec::new();
        walk(&d, &mut |_, _| false, &mut |e| {
            seen.push((String::from_utf8_lossy(e.rel).into_owned(), e.stat.kind()));
            Ok(())
        })
        .unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["", "d", "leak", "d/file", "d/to-outside"], "{r:?}");
        assert_eq!(seen[4].1, Kind::Symlink);
    }
}

#[test]
fn a_mount_point_is_listed_not_entered_nor_crossed() {
    if !nix_root() {
        eprintln!("skipped: needs root (mount)");
        return;
    }
    let (_tmp, root, _outside) = setup();
    let mnt = root.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid strings; a private tmpfs on a directory of this test's own.
    let r = unsafe { libc::mount(c"ferry-t-tree".as_ptr(), c.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        eprintln!("skipped: cannot mount a tmpfs here: {}", std::io::Error::last_os_error());
        return;
    }
    struct Unmount(std::ffi::CString);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // SAFETY: a valid path.
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let _u = Unmount(c);
    std::fs::write(mnt.join("inside"), b"other fs").unwrap();
    for r in BOTH {
        let d = Dir::open_with(&root, r).unwrap();
        let e = d.node_beneath(b"mnt/inside").unwrap_err();
        assert_eq!(errno(&e), libc::EXDEV, "{r:?}: {e}");
        let mut seen = Vec::new();
        walk(&d, &mut |_, _| false, &mut |e| {
            seen.push(String::from_utf8_lossy(e.rel).into_owned());
            Ok(())
        })
        .unwrap();
        assert!(seen.contains(&"mnt".to_string()) && !seen.iter().any(|s| s.starts_with("mnt/")), "{r:?}: {seen:?}");
    }
}

#[test]
fn holes_are_skipped_whatever_their_number() {
    let tmp = tempdir();
    let p = tmp.path().join("sparse");
    let f = std::fs::File::create(&p).unwrap();
    // 5000 islands of 4 KiB, 1 MiB apart: about 5 GiB apparent, 20 MiB of data.
    use std::os::unix::fs::FileExt;
    let islands = 5000u64;
    for i in 0..islands {
        f.write_all_at(&[0xa5; 4096], i << 20).unwrap();
    }
    f.set_len(islands << 20).unwrap();
    drop(f);
    let f = std::fs::File::open(&p).unwrap();
    let size = f.metadata().unwrap().len();
    let extents: Vec<(u64, u64)> = ferry_tree::extents::data_extents(&f, size).collect::<Result<_, _>>().unwrap();
    let data: u64 = extents.iter().map(|e| e.1).sum();
    assert!(extents.len() >= islands as usize / 2, "{} extents", extents.len());
    assert!(data < 64 << 20, "{data} bytes of data found in {size}");
    assert!(extents.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    assert_eq!(extents[0], (0, 4096));
}

#[test]
fn temporary_names_are_unpredictable() {
    let a = ferry_tree::temp::temp_name(b".ferry-part.").unwrap();
    let b = ferry_tree::temp::temp_name(b".ferry-part.").unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with(b".ferry-part.") && a.len() == 12 + 16);
    let pid = std::process::id().to_string();
    assert!(!String::from_utf8_lossy(&a).contains(&pid) || pid.len() > 6);
}

#[test]
fn creating_never_goes_through_an_existing_name() {
    let (_tmp, root, outside) = setup();
    let d = Dir::open(&root).unwrap();
    // O_EXCL: the symlink `leak` is not written through.
    let e = d.create_file_at(b"leak", 0o600).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    let mut f = d.create_file_at(b"new", 0o600).unwrap();
    f.write_all(b"fresh").unwrap();
    assert_eq!(std::fs::read(root.join("new")).unwrap(), b"fresh");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"host secret");
    assert!(d.create_file_at(b"a/b", 0o600).is_err() && d.create_file_at(b"..", 0o600).is_err());
    // Names are listed as the filesystem has them.
    let mut names = d.names().unwrap();
    names.sort();
    assert_eq!(names, [&b"d"[..], b"leak", b"new"]);
    let _ = f.as_raw_fd();
}

/// Xattrs of a name in a directory (how a scan reads them) and of an O_PATH node (how a
/// symlink or device gets them): through the *xattrat calls where the kernel has them, else
/// /proc paths. Both ways reach the entry itself, never what a symlink points to.
#[test]
fn xattrs_reach_the_entry_itself_with_and_without_the_xattrat_calls() {
    if !nix_root() {
        eprintln!("skipped: needs root (trusted.* xattrs on symlinks)");
        return;
    }
    let (_tmp, root, outside) = setup();
    for proc_paths in [false, true] {
        if proc_paths {
            ferry_tree::hooks::force_proc_xattrs();
        }
        let d = Dir::open(&root).unwrap();
        let n = d.node_beneath(b"leak").unwrap();
        let value = if proc_paths { &b"by /proc"[..] } else { b"by xattrat" };
        let want: [(&[u8], &[u8]); 1] = [(b"trusted.ferry", value)];
        meta::apply(Target::Node(&n), &Meta { uid: 0, gid: 0, perm: 0, mtime_ns: 0, xattrs: Some(&want) }).unwrap();
        assert_eq!(d.xattrs_at(b"leak").unwrap(), vec![(b"trusted.ferry".to_vec(), value.to_vec())], "proc paths: {proc_paths}");
        assert_eq!(n.xattrs().unwrap(), vec![(b"trusted.ferry".to_vec(), value.to_vec())]);
        let secret = Dir::open(&outside).unwrap().xattrs_at(b"secret").unwrap();
        assert!(secret.is_empty(), "the symlink's target got xattrs: {secret:?}");
        // Removing goes the same way.
        meta::apply(Target::Node(&n), &Meta { uid: 0, gid: 0, perm: 0, mtime_ns: 0, xattrs: Some(&[]) }).unwrap();
        assert!(d.xattrs_at(b"leak").unwrap().is_empty());
    }
}
