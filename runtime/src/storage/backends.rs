//! What the data directory sits on, and which disk backend a container gets.
//!
//! - btrfs: every private area is a subvolume, `diskspace` a qgroup limit ([`super::btrfs`]).
//! - anything else with a `diskspace` limit: an XFS image on a loop device ([`super::image`]).
//! - anything else without a limit: a plain directory.
//!
//! Project quotas (ext4/XFS `prjquota`) would be the lighter choice on a plain filesystem;
//! [`super::probe::project_quota_support`] detects them at run time so `ferry` can say why it
//! does not use them, but no backend uses them yet.

use super::probe::{fs_magic, mount_at, DiskUsage, BTRFS_SUPER_MAGIC};
use crate::config::StorageKind;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use std::path::Path;

/// The backend a new container gets, from what `data_dir` sits on and whether a disk limit
/// is asked for.
pub fn choose_kind(data_dir: &Path, diskspace: Option<u64>) -> Result<StorageKind> {
    if fs_magic(data_dir)? == BTRFS_SUPER_MAGIC {
        return Ok(StorageKind::Btrfs);
    }
    Ok(if diskspace.is_some() { StorageKind::Image } else { StorageKind::Dir })
}

/// Check that `limit` can be set on the container's disk, without changing anything (so a
/// `set` can check every limit before applying any).
pub fn check_diskspace(kind: StorageKind, host: &Host, ct: &Ctid, limit: Option<u64>) -> Result<()> {
    let fail = |m: String| Err(Error::ct(ct.as_str(), "set diskspace", m));
    match (kind, limit) {
        (_, Some(0)) => fail("diskspace 0 leaves no room for files: use a size such as 1G".into()),
        (StorageKind::Dir, None) => Ok(()),
        (StorageKind::Dir, Some(_)) => fail(
            "its private area is a plain directory, which cannot be limited (the data dir is not on btrfs and \
             the container was created without --diskspace): recreate it with --diskspace to get an XFS image, or put the data dir on btrfs and recreate it"
                .into(),
        ),
        (StorageKind::Btrfs, None) => Ok(()),
        (StorageKind::Btrfs, Some(l)) => {
            let used = super::btrfs::usage(&host.private_dir(ct))?.used;
            if l < used {
                return fail(format!(
                    "cannot lower diskspace to {l} bytes: the container already uses {used} bytes; delete files \
                     inside it first or choose at least {used}"
                ));
            }
            Ok(())
        }
        (StorageKind::Image, None) => fail(
            "an image-backed container always has a disk limit (the size of its XFS image): raise it instead".into(),
        ),
        (StorageKind::Image, Some(l)) => {
            let img = host.disk_image(ct);
            let root = host.root_dir(ct);
            let used = if mount_at(&root)?.is_some() { Some(super::image::usage(&root)?.used) } else { None };
            super::image::check_resize(super::image::image_size(&img)?, used, l)
                .map(|_| ())
                .or_else(|m| fail(format!("{m} ({})", img.display())))
        }
    }
}

/// Set the container's disk limit, live when it runs: a qgroup limit on btrfs, a grown image
/// on the image backend. Checks first ([`check_diskspace`]).
pub fn set_diskspace(kind: StorageKind, host: &Host, ct: &Ctid, limit: Option<u64>) -> Result<()> {
    check_diskspace(kind, host, ct, limit)?;
    match (kind, limit) {
        (StorageKind::Btrfs, l) => super::btrfs::set_limit(&host.private_dir(ct), l),
        (StorageKind::Image, Some(l)) => super::image::grow(&host.disk_image(ct), &host.root_dir(ct), l),
        _ => Ok(()),
    }
}

/// Disk usage next to the limit, for `list -o` and `status`. Plain directories: None (no
/// cheap number). A stopped image: the blocks its file holds on the host (an upper bound).
pub fn disk_usage(kind: StorageKind, host: &Host, ct: &Ctid) -> Result<Option<DiskUsage>> {
    match kind {
        StorageKind::Dir => Ok(None),
        StorageKind::Btrfs => super::btrfs::usage(&host.private_dir(ct)).map(Some),
        StorageKind::Image => {
            let root = host.root_dir(ct);
            if mount_at(&root)?.is_some() {
                return super::image::usage(&root).map(Some);
            }
            use std::os::unix::fs::MetadataExt;
            let img = host.disk_image(ct);
            let md = std::fs::metadata(&img).map_err(|e| Error::io("stat disk image", &img, e))?;
            Ok(Some(DiskUsage { used: md.blocks() * 512, limit: Some(md.len()) }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_detected() {
        let magic = fs_magic(Path::new("/")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let k = choose_kind(d.path(), None).unwrap();
        if magic != BTRFS_SUPER_MAGIC {
            assert_eq!(k, StorageKind::Dir);
            assert_eq!(choose_kind(d.path(), Some(1 << 30)).unwrap(), StorageKind::Image);
        }
        let host = Host::new(d.path(), d.path().join("run"), "ferry-tx");
        let ct = Ctid::new("101").unwrap();
        check_diskspace(StorageKind::Dir, &host, &ct, None).unwrap();
        let e = check_diskspace(StorageKind::Dir, &host, &ct, Some(1 << 30)).unwrap_err().to_string();
        assert!(e.contains("101") && e.contains("plain directory"), "{e}");
        let e = check_diskspace(StorageKind::Image, &host, &ct, None).unwrap_err().to_string();
        assert!(e.contains("always has a disk limit"), "{e}");
        assert_eq!(disk_usage(StorageKind::Dir, &host, &ct).unwrap(), None);
    }
}
