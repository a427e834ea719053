//! The image disk backend (ploop-style), for data dirs that are not btrfs when a `diskspace`
//! limit is asked for: the private area is an XFS filesystem in a sparse file
//! (`<data>/images/<CTID>.img`, [`crate::Host::disk_image`]) on a loop device, mounted at the
//! container root ([`crate::Host::root_dir`]) while the container runs, so the host admin sees
//! the files there. The limit is the filesystem's size: raised online (`truncate`, `losetup -c`,
//! `xfs_growfs`), never lowered (XFS cannot shrink).
//!
//! Loop devices are attached by `mount -o loop`, which sets autoclear: unmounting detaches the
//! device, and a failed mount detaches it too. Every function here still checks that nothing
//! stays attached to the image after a failure.

use super::probe::{mount_at, DiskUsage, XFS_SUPER_MAGIC};
use crate::error::{Error, Result};
use crate::util::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The smallest image ferry makes: XFS needs room for its log and metadata.
pub const MIN_IMAGE_SIZE: u64 = 32 << 20;
/// Below this xfsprogs (5.19+) refuses to make a filesystem unless it runs under the XFS test
/// suite; the kernel mounts and grows such filesystems fine.
const XFSPROGS_MIN_SIZE: u64 = 300 << 20;

fn err(path: &Path, op: &str, msg: impl std::fmt::Display) -> Error {
    Error::Storage { what: "disk image", op: op.to_string(), path: path.to_path_buf(), msg: msg.to_string() }
}

/// A mounted image: which loop device carries `image`, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopMount {
    pub image: PathBuf,
    pub device: PathBuf,
    pub mount_point: PathBuf,
}

/// Round a size up to a whole 4 KiB block.
fn round_up(size: u64) -> u64 {
    size.div_ceil(4096) * 4096
}

/// Make a sparse image of `size` bytes at `img` holding an empty XFS filesystem. Refuses to
/// overwrite an existing file. On failure nothing is left behind.
pub fn create(img: &Path, size: u64) -> Result<()> {
    if size < MIN_IMAGE_SIZE {
        return Err(err(img, "create", format!("diskspace {size} bytes is too small for an XFS image: use at least 32M")));
    }
    if let Some(p) = img.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::io("create directory", p, e))?;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(img)
        .map_err(|e| Error::io("create disk image (remove a stale one with `ferry destroy`)", img, e))?;
    let res = (|| {
        f.set_len(round_up(size)).map_err(|e| Error::io("size disk image", img, e))?;
        drop(f);
        let mut mkfs = Command::new("mkfs.xfs");
        mkfs.arg("-q").arg(img);
        if size < XFSPROGS_MIN_SIZE {
            // xfsprogs's own switch for the small filesystems its test suite makes.
            mkfs.env("TEST_DIR", "1").env("TEST_DEV", "1").env("QA_CHECK_FS", "1");
        }
        run(&mut mkfs).map_err(|e| err(img, "mkfs.xfs", e))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(img);
    }
    res
}

/// [`create`] the image, mount it at `mount_point`, let `fill` put the container's files in
/// (e.g. copy the template), and unmount. On any failure the image is unmounted, detached and
/// deleted.
pub fn create_filled(img: &Path, size: u64, mount_point: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    create(img, size)?;
    let res = (|| {
        let m = mount(img, mount_point)?;
        let filled = fill(mount_point);
        let unmounted = umount(&m);
        filled.and(unmounted)
    })();
    if res.is_err() {
        let _ = umount_path(img, mount_point);
        let _ = std::fs::remove_file(img);
    }
    res
}

/// Loop devices currently attached to `img` (`losetup -j`).
pub fn attached_devices(img: &Path) -> Result<Vec<PathBuf>> {
    let out = run(Command::new("losetup").arg("-j").arg(img)).map_err(|e| err(img, "losetup -j", e))?;
    Ok(out.lines().filter_map(|l| l.split(':').next()).filter(|s| !s.is_empty()).map(PathBuf::from).collect())
}

/// How long an unmounted image's loop device may take to go.
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn detach_all(img: &Path) {
    if let Ok(devs) = attached_devices(img) {
        for d in devs {
            let _ = Command::new("losetup").arg("-d").arg(&d).output();
        }
    }
}

/// Attach `img` to a free loop device and mount it at `mount_point` (created if missing).
pub fn mount(img: &Path, mount_point: &Path) -> Result<LoopMount> {
    if !img.is_file() {
        return Err(err(img, "mount", "no such image; was the container created with the image backend?"));
    }
    if let Some(m) = mount_at(mount_point)? {
        return Err(err(img, "mount", format!("{} is already a mount point ({})", mount_point.display(), m.source)));
    }
    std::fs::create_dir_all(mount_point).map_err(|e| Error::io("create mount point", mount_point, e))?;
    // nouuid: a copied image (clone, restore on another host) carries the same XFS UUID.
    let res = run(Command::new("mount").args(["-t", "xfs", "-o", "loop,nouuid"]).arg(img).arg(mount_point));
    if let Err(e) = res {
        detach_all(img);
        return Err(err(img, "mount", e));
    }
    match mount_at(mount_point) {
        Ok(Some(m)) if fs_is_xfs(mount_point) => {
            Ok(LoopMount { image: img.to_path_buf(), device: PathBuf::from(m.source), mount_point: mount_point.to_path_buf() })
        }
        other => {
            let _ = umount_path(img, mount_point);
            Err(err(img, "mount", format!("mount said yes but {} is not an XFS mount ({other:?})", mount_point.display())))
        }
    }
}

fn fs_is_xfs(p: &Path) -> bool {
    matches!(super::probe::fs_magic(p), Ok(m) if m == XFS_SUPER_MAGIC)
}

/// Unmount a [`LoopMount`] and make sure its loop device is gone.
pub fn umount(m: &LoopMount) -> Result<()> {
    umount_path(&m.image, &m.mount_point)
}

/// Unmount whatever image is mounted at `mount_point` (if any) and detach every loop device
/// still attached to `img`. Safe to call when nothing is mounted.
pub fn umount_path(img: &Path, mount_point: &Path) -> Result<()> {
    if mount_at(mount_point)?.is_some() {
        run(Command::new("umount").arg(mount_point))
            .map_err(|e| err(img, "umount", format!("{e}; a process may still use {}: stop it and retry", mount_point.display())))?;
    }
    // A loop device still referenced right after the umount (the kernel drops the mount's
    // last reference asynchronously) is only marked for autoclear by `losetup -d`: it goes
    // a moment later. Wait for that, asking again, rather than fail a busy host.
    let deadline = std::time::Instant::now() + DETACH_WAIT;
    let left = loop {
        detach_all(img);
        let left = attached_devices(img)?;
        if left.is_empty() || std::time::Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if !left.is_empty() {
        return Err(err(img, "detach", format!("still attached to {left:?} after {} s; run `losetup -d` on them", DETACH_WAIT.as_secs())));
    }
    Ok(())
}

/// Usage of a mounted image, from statvfs: used and total bytes of its filesystem.
pub fn usage(mount_point: &Path) -> Result<DiskUsage> {
    let st = nix::sys::statvfs::statvfs(mount_point).map_err(|e| Error::sys(format!("statvfs {}", mount_point.display()), e))?;
    let frsize = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frsize;
    let free = st.blocks_free() as u64 * frsize;
    Ok(DiskUsage { used: total.saturating_sub(free), limit: Some(total) })
}

/// Current size of the image file (the limit the admin asked for, rounded to 4 KiB).
pub fn image_size(img: &Path) -> Result<u64> {
    Ok(std::fs::metadata(img).map_err(|e| Error::io("stat disk image", img, e))?.len())
}

/// The decision of [`grow`] (pure): Ok(true) to grow, Ok(false) when the size is unchanged,
/// Err with the reason when asked to shrink.
pub fn check_resize(current: u64, used: Option<u64>, new_size: u64) -> std::result::Result<bool, String> {
    let new_size = round_up(new_size);
    if new_size == current {
        return Ok(false);
    }
    if new_size > current {
        return Ok(true);
    }
    Err(match used {
        Some(u) if new_size < u => format!(
            "XFS cannot shrink: the container uses {u} bytes, more than the requested {new_size}; \
             and an XFS image can never be made smaller than its {current} bytes. Keep the limit, or \
             move the container to a new, smaller image by hand"
        ),
        _ => format!(
            "XFS cannot shrink: the image is {current} bytes and cannot be made smaller ({new_size} asked), \
             even though the files would fit; keep the limit or raise it"
        ),
    })
}

/// Raise the image's size to `new_size`, online when it is mounted at `mount_point` (else
/// through a temporary mount next to the image). Lowering is refused (XFS cannot shrink).
pub fn grow(img: &Path, mount_point: &Path, new_size: u64) -> Result<()> {
    let current = image_size(img)?;
    let mounted = mount_at(mount_point)?.is_some();
    let used = if mounted { Some(usage(mount_point)?.used) } else { None };
    if !check_resize(current, used, new_size).map_err(|m| err(img, "resize", m))? {
        return Ok(());
    }
    if !mounted {
        let tmp = img.with_extension("grow");
        let m = mount(img, &tmp)?;
        let r = grow_mounted(img, &m, new_size);
        let u = umount(&m);
        let _ = std::fs::remove_dir(&tmp);
        return r.and(u);
    }
    let m = mount_at(mount_point)?.ok_or_else(|| err(img, "grow", "unmounted while growing"))?;
    let lm = LoopMount { image: img.to_path_buf(), device: PathBuf::from(m.source), mount_point: mount_point.to_path_buf() };
    grow_mounted(img, &lm, new_size)
}

fn grow_mounted(img: &Path, m: &LoopMount, new_size: u64) -> Result<()> {
    let old = image_size(img)?;
    let f = std::fs::OpenOptions::new().write(true).open(img).map_err(|e| Error::io("open disk image", img, e))?;
    f.set_len(round_up(new_size)).map_err(|e| Error::io("extend disk image", img, e))?;
    let res = run(Command::new("losetup").arg("-c").arg(&m.device)).and_then(|_| run(Command::new("xfs_growfs").arg(&m.mount_point)).map(|_| ()));
    if let Err(e) = res {
        // The filesystem did not grow: give the file back its old size (its tail is unused).
        let _ = f.set_len(old);
        let _ = Command::new("losetup").arg("-c").arg(&m.device).output();
        return Err(err(img, "grow", e));
    }
    Ok(())
}

/// Delete the image (after making sure it is neither mounted at `mount_point` nor attached).
pub fn destroy(img: &Path, mount_point: &Path) -> Result<()> {
    if !img.exists() {
        return Ok(());
    }
    umount_path(img, mount_point)?;
    std::fs::remove_file(img).map_err(|e| Error::io("remove disk image", img, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_decisions() {
        let m = 1u64 << 20;
        assert_eq!(check_resize(64 * m, Some(10 * m), 128 * m), Ok(true));
        assert_eq!(check_resize(64 * m, Some(10 * m), 64 * m), Ok(false));
        assert_eq!(check_resize(64 * m, None, 64 * m - 100), Ok(false)); // rounds up to the same size
        let e = check_resize(64 * m, Some(50 * m), 32 * m).unwrap_err();
        assert!(e.starts_with("XFS cannot shrink") && e.contains("uses"), "{e}");
        let e = check_resize(64 * m, Some(10 * m), 32 * m).unwrap_err();
        assert!(e.starts_with("XFS cannot shrink") && e.contains("would fit"), "{e}");
    }

    #[test]
    fn too_small_refused() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("x.img");
        assert!(create(&img, 1 << 20).unwrap_err().to_string().contains("too small"));
        assert!(!img.exists());
    }
}
