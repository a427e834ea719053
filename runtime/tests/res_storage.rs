//! The disk backends for real (root): a btrfs pool made on a loop device in a `ferry-t` temp
//! dir, and an XFS image on the root filesystem. Guards unmount and detach even on failure.

use ferry_runtime::config::StorageKind;
use ferry_runtime::storage::{backends, btrfs, image, probe};
use ferry_runtime::{Ctid, Host};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn root_with(tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    for t in tools {
        if Command::new(t).arg("--version").output().is_err() {
            eprintln!("skipped: {t} is not installed (scripts/install-deps.sh installs it)");
            return false;
        }
    }
    true
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-t").tempdir_in("/var/tmp").unwrap()
}

/// Append 1 MiB blocks to `f` until `total` bytes are there or a write fails; returns the
/// bytes written so far and the error, if any.
fn fill(path: &Path, total: u64) -> (u64, Option<std::io::Error>) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let mut have = f.metadata().unwrap().len();
    let block = vec![0x5au8; MIB as usize];
    while have < total {
        let n = (total - have).min(MIB) as usize;
        if let Err(e) = f.write_all(&block[..n]) {
            return (have, Some(e));
        }
        have += n as u64;
    }
    if let Err(e) = f.sync_all() {
        return (have, Some(e));
    }
    (have, None)
}

fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A btrfs filesystem on a loop device mounted in a temp dir; unmounted and detached on drop.
struct BtrfsPool {
    dir: tempfile::TempDir,
    img: PathBuf,
    mnt: PathBuf,
}

impl BtrfsPool {
    fn new() -> BtrfsPool {
        let dir = tempdir();
        let img = dir.path().join("pool.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(512 * MIB).unwrap();
        let pool = BtrfsPool { dir, img, mnt };
        let ok = Command::new("mkfs.btrfs").arg("-q").arg(&pool.img).status().unwrap();
        assert!(ok.success(), "mkfs.btrfs failed");
        let ok = Command::new("mount").args(["-o", "loop"]).arg(&pool.img).arg(&pool.mnt).status().unwrap();
        assert!(ok.success(), "mount of the btrfs pool failed");
        pool
    }
}

impl Drop for BtrfsPool {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        if let Ok(devs) = image::attached_devices(&self.img) {
            for d in devs {
                let _ = Command::new("losetup").arg("-d").arg(d).status();
            }
        }
        let _ = &self.dir;
    }
}

#[test]
fn btrfs_qgroup_limit_raised_and_lowered_live() {
    if !root_with(&["btrfs", "mkfs.btrfs", "losetup"]) {
        return;
    }
    let pool = BtrfsPool::new();
    let data = pool.mnt.join("data");
    assert!(btrfs::is_btrfs(&pool.mnt).unwrap());
    assert_eq!(backends::choose_kind(&pool.mnt, None).unwrap(), StorageKind::Btrfs);
    let host = Host::new(&data, pool.dir.path().join("run"), "ferry-tx");
    let ct = Ctid::new("101").unwrap();
    let private = host.private_dir(&ct);
    btrfs::create_subvolume(&private).unwrap();
    assert!(btrfs::is_subvolume(&private));
    btrfs::set_limit(&private, Some(64 * MIB)).unwrap();
    assert_eq!(btrfs::usage(&private).unwrap().limit, Some(64 * MIB));

    let file = private.join("big");
    let (written, e) = fill(&file, 100 * MIB);
    let e = e.expect("writing 100 MiB under a 64 MiB qgroup limit succeeded");
    assert!(is_out_of_space(&e), "expected ENOSPC or EDQUOT, got {e}");
    assert!(written <= 64 * MIB, "wrote {written} bytes under a 64 MiB limit");
    eprintln!("stopped after {} MiB: {e}", written / MIB);

    // Raised live through the backend-neutral entry point the core calls.
    backends::set_diskspace(StorageKind::Btrfs, &host, &ct, Some(128 * MIB)).unwrap();
    let (written, e) = fill(&file, 100 * MIB);
    assert!(e.is_none(), "after raising to 128M: {e:?}");
    assert_eq!(written, 100 * MIB);

    let u = btrfs::usage(&private).unwrap();
    assert!(u.used >= 100 * MIB && u.limit == Some(128 * MIB), "{u:?}");
    let e = btrfs::set_limit(&private, Some(32 * MIB)).unwrap_err().to_string();
    assert!(e.contains("cannot lower") && e.contains("already uses"), "{e}");
    let e = backends::set_diskspace(StorageKind::Btrfs, &host, &ct, Some(32 * MIB)).unwrap_err().to_string();
    assert!(e.contains("101") && e.contains("cannot lower"), "{e}");
    let du = backends::disk_usage(StorageKind::Btrfs, &host, &ct).unwrap().unwrap();
    assert_eq!(du.limit, Some(128 * MIB));
    assert_eq!(btrfs::usage(&private).unwrap().limit, Some(128 * MIB), "a refused lowering changed the limit");
    btrfs::set_limit(&private, None).unwrap();
    assert_eq!(btrfs::usage(&private).unwrap().limit, None);

    // Snapshots are instant subvolumes with the same files.
    let snap = data.join("snapshots/101/s1");
    btrfs::snapshot(&private, &snap, true).unwrap();
    assert!(btrfs::is_subvolume(&snap));
    assert_eq!(std::fs::metadata(snap.join("big")).unwrap().len(), 100 * MIB);
    assert!(std::fs::write(snap.join("x"), b"x").is_err(), "a read-only snapshot took a write");
    assert!(btrfs::snapshot(&private, &snap, false).is_err());
    btrfs::delete(&snap).unwrap();
    btrfs::delete(&private).unwrap();
    assert!(!private.exists() && !snap.exists());
}

/// Unmounts and detaches the image on drop, whatever happened.
struct ImageGuard {
    img: PathBuf,
    root: PathBuf,
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = image::umount_path(&self.img, &self.root);
    }
}

#[test]
fn xfs_image_grows_online_and_refuses_shrinking() {
    if !root_with(&["mkfs.xfs", "xfs_growfs", "losetup"]) {
        return;
    }
    let dir = tempdir();
    let host = Host::new(dir.path(), dir.path().join("run"), "ferry-tx");
    let ct = Ctid::new("101").unwrap();
    let img = host.disk_image(&ct);
    let root = host.root_dir(&ct);
    let guard = ImageGuard { img: img.clone(), root: root.clone() };

    image::create_filled(&img, 64 * MIB, &root, |mnt| {
        std::fs::write(mnt.join("from-template"), b"hello").map_err(|e| ferry_runtime::Error::io("write", mnt, e))
    })
    .unwrap();
    assert!(image::attached_devices(&img).unwrap().is_empty(), "create left a loop device attached");
    assert!(probe::mount_at(&root).unwrap().is_none());

    let m = image::mount(&img, &root).unwrap();
    assert_eq!(std::fs::read(root.join("from-template")).unwrap(), b"hello");
    assert_eq!(image::attached_devices(&img).unwrap(), vec![m.device.clone()]);
    assert!(image::mount(&img, &root).is_err(), "mounted twice");

    let file = root.join("big");
    let (written, e) = fill(&file, 100 * MIB);
    let e = e.expect("writing 100 MiB into a 64 MiB image succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(written <= 64 * MIB);
    eprintln!("stopped after {} MiB: {e}", written / MIB);

    backends::set_diskspace(StorageKind::Image, &host, &ct, Some(128 * MIB)).unwrap();
    let (written, e) = fill(&file, 100 * MIB);
    assert!(e.is_none(), "after growing to 128M: {e:?}");
    assert_eq!(written, 100 * MIB);
    let u = image::usage(&root).unwrap();
    assert!(u.used >= 100 * MIB && u.limit.unwrap() > 100 * MIB && u.limit.unwrap() <= 128 * MIB, "{u:?}");

    for smaller in [32 * MIB, 110 * MIB] {
        let e = image::grow(&img, &root, smaller).unwrap_err().to_string();
        assert!(e.contains("XFS cannot shrink"), "{e}");
    }
    let e = backends::set_diskspace(StorageKind::Image, &host, &ct, Some(32 * MIB)).unwrap_err().to_string();
    assert!(e.contains("101") && e.contains("XFS cannot shrink"), "{e}");
    assert_eq!(image::image_size(&img).unwrap(), 128 * MIB);
    let du = backends::disk_usage(StorageKind::Image, &host, &ct).unwrap().unwrap();
    assert!(du.used >= 100 * MIB, "{du:?}");

    image::umount(&m).unwrap();
    assert!(image::attached_devices(&img).unwrap().is_empty(), "umount left the loop device attached");
    assert!(probe::mount_at(&root).unwrap().is_none());

    // Growing a stopped container's image goes through a temporary mount, and leaves nothing.
    image::grow(&img, &root, 160 * MIB).unwrap();
    assert!(image::attached_devices(&img).unwrap().is_empty());
    let m = image::mount(&img, &root).unwrap();
    assert!(image::usage(&root).unwrap().limit.unwrap() > 128 * MIB);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 100 * MIB);
    image::umount(&m).unwrap();

    image::destroy(&img, &root).unwrap();
    assert!(!img.exists());
    drop(guard);
}

#[test]
fn xfs_image_failures_leave_nothing_attached() {
    if !root_with(&["mkfs.xfs", "losetup"]) {
        return;
    }
    let dir = tempdir();
    let img = dir.path().join("images/102.img");
    let root = dir.path().join("root/102");
    let _guard = ImageGuard { img: img.clone(), root: root.clone() };
    // A fill step that fails: the image is unmounted, detached and deleted.
    let e = image::create_filled(&img, 64 * MIB, &root, |_| Err(ferry_runtime::Error::Template("template copy failed".into()))).unwrap_err();
    assert!(e.to_string().contains("template copy failed"));
    assert!(!img.exists());
    assert!(probe::mount_at(&root).unwrap().is_none());
    // Not an XFS image: the mount fails and no loop device stays behind.
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    std::fs::File::create(&img).unwrap().set_len(64 * MIB).unwrap();
    assert!(image::mount(&img, &root).is_err());
    assert!(image::attached_devices(&img).unwrap().is_empty(), "a failed mount left a loop device");
    assert!(image::create(&img, 64 * MIB).is_err(), "create overwrote an existing file");
}
