//! Where a container's files live and how they appear at its root while it runs.
//!
//! Each backend fills the private area on create, mounts it at `Host::root_dir` in the host's
//! mount namespace on start (the admin sees the running container's files there, like vzctl),
//! unmounts it on stop and removes it on destroy. Backends (chosen at create by
//! [`backends::choose_kind`], recorded in the config): a plain directory and a btrfs subvolume
//! (both bind-mounted at the root; btrfs's `diskspace` is a qgroup limit), and an XFS image
//! on a loop device mounted at the root (its `diskspace` is the image size).

use crate::config::{ContainerConfig, StorageKind};
use crate::ctid::Ctid;
use crate::error::{Error, IoContext, Result};
use crate::host::Host;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

pub mod backends;
pub mod btrfs;
pub mod image;
pub mod probe;

fn exists_error(ct: &Ctid, p: &Path) -> Error {
    Error::Exists { ctid: ct.to_string(), op: "create", msg: format!("private area {} already exists; remove it or pick another CTID", p.display()) }
}

/// Create the private area of `cfg` and fill it from `template`, with the disk limit
/// `cfg.resources.diskspace` where the backend has one. On failure nothing remains.
pub fn prepare(host: &Host, cfg: &ContainerConfig, template: &Path) -> Result<()> {
    let ct = &cfg.ctid;
    let diskspace = cfg.resources.diskspace;
    match cfg.storage.kind {
        StorageKind::Btrfs => {
            let private = host.private_dir(ct);
            if private.exists() {
                return Err(exists_error(ct, &private));
            }
            btrfs::create_subvolume(&private)?;
            let res = crate::template::install(template, &private).and_then(|()| match diskspace {
                Some(l) => btrfs::set_limit(&private, Some(l)),
                None => Ok(()),
            });
            if res.is_err() {
                let _ = btrfs::delete(&private);
            }
            res
        }
        StorageKind::Image => {
            let img = host.disk_image(ct);
            let size = diskspace.ok_or_else(|| Error::ct(ct.as_str(), "create", "the image backend needs a disk limit: give --diskspace"))?;
            if img.exists() {
                return Err(exists_error(ct, &img));
            }
            let root = host.root_dir(ct);
            let res = image::create_filled(&img, size, &root, |mp| crate::template::install(template, mp));
            let _ = std::fs::remove_dir(&root);
            res
        }
        StorageKind::Dir => {
            let private = host.private_dir(ct);
            let parent = private.parent().expect("private dir has a parent");
            std::fs::create_dir_all(parent).ctx("create directory", parent)?;
            std::fs::create_dir(&private).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    exists_error(ct, &private)
                } else {
                    Error::io("create private area", &private, e)
                }
            })?;
            let res = crate::template::install(template, &private);
            if res.is_err() {
                let _ = std::fs::remove_dir_all(&private);
            }
            res
        }
    }
}

/// Where the container's files are for the host to read or write them (a snapshot, a
/// migration's sync): the private area, or for the image backend its root, mounted here when
/// it was not (then the second value is true: unmount with [`unmount_root`] when done).
pub fn files_dir(host: &Host, cfg: &ContainerConfig) -> Result<(PathBuf, bool)> {
    match cfg.storage.kind {
        StorageKind::Dir | StorageKind::Btrfs => Ok((host.private_dir(&cfg.ctid), false)),
        StorageKind::Image => {
            let root = host.root_dir(&cfg.ctid);
            if is_mounted(&root) {
                Ok((root, false))
            } else {
                mount_root(host, cfg)?;
                Ok((root, true))
            }
        }
    }
}

/// Whether something is mounted exactly at `p` (per /proc/self/mountinfo).
pub fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&*want))
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Mount the private area at the root (host mount namespace). Returns the mount point.
pub fn mount_root(host: &Host, cfg: &ContainerConfig) -> Result<PathBuf> {
    let ct = &cfg.ctid;
    match cfg.storage.kind {
        StorageKind::Image => {
            let root = host.root_dir(ct);
            if is_mounted(&root) {
                return Ok(root);
            }
            image::mount(&host.disk_image(ct), &root)?;
            if let Err(e) = nix::mount::mount(None::<&str>, &root, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>) {
                let _ = image::umount_path(&host.disk_image(ct), &root);
                return Err(Error::sys(format!("make {} private", root.display()), e));
            }
            Ok(root)
        }
        StorageKind::Dir | StorageKind::Btrfs => {
            let private = host.private_dir(ct);
            let root = host.root_dir(ct);
            if !private.is_dir() {
                return Err(Error::ct(ct.as_str(), "mount", format!("private area {} is missing; recreate the container", private.display())));
            }
            std::fs::create_dir_all(&root).ctx("create root directory", &root)?;
            if is_mounted(&root) {
                return Ok(root);
            }
            nix::mount::mount(Some(&private), &root, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| Error::sys(format!("bind-mount {} at {}", private.display(), root.display()), e))?;
            // Private: the container's own mounts below must not spread back into the host.
            if let Err(e) = nix::mount::mount(None::<&str>, &root, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>) {
                let _ = nix::mount::umount2(&root, MntFlags::MNT_DETACH);
                return Err(Error::sys(format!("make {} private", root.display()), e));
            }
            Ok(root)
        }
    }
}

/// Unmount the root (whatever is stacked there); a root that is not mounted is fine.
pub fn unmount_root(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let root = host.root_dir(&cfg.ctid);
    match cfg.storage.kind {
        StorageKind::Image => {
            let mut tries = 0;
            loop {
                match image::umount_path(&host.disk_image(&cfg.ctid), &root) {
                    Ok(()) => return Ok(()),
                    Err(_) if tries < 20 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                    Err(e) => return Err(Error::ct(cfg.ctid.as_str(), "unmount", e.to_string())),
                }
            }
        }
        StorageKind::Dir | StorageKind::Btrfs => {
            let mut tries = 0;
            while is_mounted(&root) {
                match nix::mount::umount2(&root, MntFlags::empty()) {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EBUSY) if tries < 20 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                    Err(nix::errno::Errno::EBUSY) => {
                        // Something on the host still uses it (a shell cd'd there): detach so the
                        // container can be started again; the tree goes when the user leaves.
                        tracing::warn!("{} busy; detaching it lazily", root.display());
                        nix::mount::umount2(&root, MntFlags::MNT_DETACH).map_err(|e| Error::sys(format!("unmount {}", root.display()), e))?;
                    }
                    Err(nix::errno::Errno::EINVAL) => break,
                    Err(e) => return Err(Error::sys(format!("unmount {}", root.display()), e)),
                }
            }
            Ok(())
        }
    }
}

/// Remove the private area and the (unmounted) root directory.
pub fn remove(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let ct = &cfg.ctid;
    let root = host.root_dir(ct);
    if is_mounted(&root) {
        return Err(Error::ct(ct.as_str(), "destroy", format!("{} is still mounted; stop the container first", root.display())));
    }
    match cfg.storage.kind {
        StorageKind::Btrfs => {
            btrfs::delete(&host.private_dir(ct))?;
            let _ = std::fs::remove_dir(&root);
            Ok(())
        }
        StorageKind::Image => {
            image::destroy(&host.disk_image(ct), &root)?;
            let _ = std::fs::remove_dir(&root);
            Ok(())
        }
        StorageKind::Dir => {
            for p in [host.private_dir(ct), root] {
                match std::fs::remove_dir_all(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", p, e)),
                }
            }
            Ok(())
        }
    }
}
