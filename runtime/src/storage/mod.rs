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
use crate::userns::{idmapped, IdMap};
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
/// migration's sync) with their owners as on disk: the private area, or the mount of its image
/// ([`files_path`]), mounted here by [`mount_root_unmapped`] when it was not (then the second
/// value is true: unmount with [`unmount_root`] when done). Never an unprivileged container's
/// idmapped root.
pub fn files_dir(host: &Host, cfg: &ContainerConfig) -> Result<(PathBuf, bool)> {
    match cfg.storage.kind {
        StorageKind::Dir | StorageKind::Btrfs => Ok((host.private_dir(&cfg.ctid), false)),
        StorageKind::Image => {
            let files = files_path(host, cfg);
            if is_mounted(&files) {
                Ok((files, false))
            } else {
                Ok((mount_root_unmapped(host, cfg)?, true))
            }
        }
    }
}

/// Whether something is mounted exactly at `p` (per /proc/self/mountinfo).
pub fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    probe::parse_mountinfo(&info).iter().any(|m| m.mount_point == p)
}

/// The mapping a container's root is mounted with: its range for the unprivileged kind.
pub fn root_idmap(cfg: &ContainerConfig) -> Result<Option<IdMap>> {
    if !cfg.security.kind.has_userns() {
        return Ok(None);
    }
    let ct = &cfg.ctid;
    cfg.security.id_map.map(Some).ok_or_else(|| {
        Error::ct(
            ct.as_str(),
            "mount",
            format!("it is unprivileged but its config records no user ID range; give it one with `ferry set {ct} --userns on`"),
        )
    })
}

/// Mount the private area at the root (host mount namespace), idmapped with the container's
/// range when it is unprivileged. Returns the mount point.
pub fn mount_root(host: &Host, cfg: &ContainerConfig) -> Result<PathBuf> {
    let ct = &cfg.ctid;
    let root = host.root_dir(ct);
    let Some(map) = root_idmap(cfg)? else { return mount_unmapped_at(host, cfg, &root) };
    if is_mounted(&root) {
        return Ok(root);
    }
    match cfg.storage.kind {
        StorageKind::Image => {
            // The image is mounted once with its owners as on disk (where host root syncs and
            // snapshots its files), and the root is an idmapped copy of that mount.
            let files = mount_root_unmapped(host, cfg)?;
            std::fs::create_dir_all(&root).ctx("create root directory", &root)?;
            if let Err(e) = idmapped::mount(&files, &root, &map).and_then(|()| make_private(&root)) {
                let _ = unmount_root(host, cfg);
                return Err(e);
            }
            Ok(root)
        }
        StorageKind::Dir | StorageKind::Btrfs => {
            let private = private_area(host, ct)?;
            std::fs::create_dir_all(&root).ctx("create root directory", &root)?;
            idmapped::mount(&private, &root, &map)?;
            if let Err(e) = make_private(&root) {
                let _ = nix::mount::umount2(&root, MntFlags::MNT_DETACH);
                return Err(e);
            }
            Ok(root)
        }
    }
}

/// Mount the container's files where host root reads and writes them with their owners as on
/// disk, whatever its kind, and return that directory ([`files_path`]): nothing to mount for a
/// directory or a subvolume (the private area); the image at the root (privileged) or at
/// [`Host::image_files_dir`] (unprivileged: an idmapped root holds nothing of host root's, and
/// what host root would create there fails with EOVERFLOW).
pub fn mount_root_unmapped(host: &Host, cfg: &ContainerConfig) -> Result<PathBuf> {
    let ct = &cfg.ctid;
    match cfg.storage.kind {
        StorageKind::Image if cfg.security.kind.has_userns() => mount_unmapped_at(host, cfg, &host.image_files_dir(ct)),
        StorageKind::Image => mount_unmapped_at(host, cfg, &host.root_dir(ct)),
        StorageKind::Dir | StorageKind::Btrfs => private_area(host, ct),
    }
}

/// Where host root reads and writes the container's files with their owners as on disk, when
/// they are there (nothing is mounted here): its private area, or the mount of its image
/// ([`mount_root_unmapped`]).
pub fn files_path(host: &Host, cfg: &ContainerConfig) -> PathBuf {
    let ct = &cfg.ctid;
    match cfg.storage.kind {
        StorageKind::Image if is_mounted(&host.image_files_dir(ct)) => host.image_files_dir(ct),
        StorageKind::Image => host.root_dir(ct),
        StorageKind::Dir | StorageKind::Btrfs => host.private_dir(ct),
    }
}

fn private_area(host: &Host, ct: &Ctid) -> Result<PathBuf> {
    let private = host.private_dir(ct);
    if !private.is_dir() {
        return Err(Error::ct(ct.as_str(), "mount", format!("private area {} is missing; recreate the container", private.display())));
    }
    Ok(private)
}

/// Private: the container's own mounts below must not spread back into the host.
fn make_private(p: &Path) -> Result<()> {
    nix::mount::mount(None::<&str>, p, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| Error::sys(format!("make {} private", p.display()), e))
}

/// The private area (bound) or the image (mounted) at `at`, owners as on disk.
fn mount_unmapped_at(host: &Host, cfg: &ContainerConfig, at: &Path) -> Result<PathBuf> {
    let ct = &cfg.ctid;
    if is_mounted(at) {
        return Ok(at.to_path_buf());
    }
    match cfg.storage.kind {
        StorageKind::Image => {
            image::mount(&host.disk_image(ct), at)?;
            if let Err(e) = make_private(at) {
                let _ = image::umount_path(&host.disk_image(ct), at);
                return Err(e);
            }
        }
        StorageKind::Dir | StorageKind::Btrfs => {
            let private = private_area(host, ct)?;
            std::fs::create_dir_all(at).ctx("create root directory", at)?;
            nix::mount::mount(Some(&private), at, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| Error::sys(format!("bind-mount {} at {}", private.display(), at.display()), e))?;
            if let Err(e) = make_private(at) {
                let _ = nix::mount::umount2(at, MntFlags::MNT_DETACH);
                return Err(e);
            }
        }
    }
    Ok(at.to_path_buf())
}

/// Unmount the root (whatever is stacked there); a root that is not mounted is fine.
pub fn unmount_root(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let root = host.root_dir(&cfg.ctid);
    match cfg.storage.kind {
        StorageKind::Image => {
            // An unprivileged container's image is mounted twice: the root (an idmapped copy)
            // goes first, then the mount that holds the loop device.
            let files = host.image_files_dir(&cfg.ctid);
            let last = if is_mounted(&files) {
                unmount_retrying(&root)?;
                files
            } else {
                root
            };
            let mut tries = 0;
            loop {
                match image::umount_path(&host.disk_image(&cfg.ctid), &last) {
                    Ok(()) => return Ok(()),
                    Err(_) if tries < 20 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                    Err(e) => return Err(Error::ct(cfg.ctid.as_str(), "unmount", e.to_string())),
                }
            }
        }
        StorageKind::Dir | StorageKind::Btrfs => unmount_retrying(&root),
    }
}

/// Unmount whatever is stacked at `root` (a bind or an idmapped copy), waiting a little for
/// users to leave, else detaching it.
fn unmount_retrying(root: &Path) -> Result<()> {
    let mut tries = 0;
    while is_mounted(root) {
        match nix::mount::umount2(root, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(nix::errno::Errno::EBUSY) => {
                // Something on the host still uses it (a shell cd'd there): detach so the
                // container can be started again; the tree goes when the user leaves.
                tracing::warn!("{} busy; detaching it lazily", root.display());
                nix::mount::umount2(root, MntFlags::MNT_DETACH).map_err(|e| Error::sys(format!("unmount {}", root.display()), e))?;
            }
            Err(nix::errno::Errno::EINVAL) => break,
            Err(e) => return Err(Error::sys(format!("unmount {}", root.display()), e)),
        }
    }
    Ok(())
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
            let files = host.image_files_dir(ct);
            if is_mounted(&files) {
                return Err(Error::ct(ct.as_str(), "destroy", format!("{} is still mounted; stop the container first", files.display())));
            }
            image::destroy(&host.disk_image(ct), &root)?;
            let _ = std::fs::remove_dir(&root);
            let _ = std::fs::remove_dir(&files);
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
