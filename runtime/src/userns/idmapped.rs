//! Idmapped mounts: a copy of a directory's mount whose file owners the kernel translates
//! through a user namespace's mapping. An unprivileged container's root is one: a file owned
//! by 0 on disk shows as the range's first host ID there (and, inside the container's user
//! namespace, as 0 again); what the container creates is stored with its own IDs, never the
//! host's.
//!
//! The mapping comes from a user namespace made for the purpose ([`userns_fd`]): any namespace
//! with the same mapping translates alike, so the root is made before the container's own
//! namespace exists (at start, before clone; at restore, before CRIU makes the namespace
//! from its images).
//!
//! open_tree(OPEN_TREE_CLONE) copies the source's mount, detached; mount_setattr
//! (MOUNT_ATTR_IDMAP) gives the copy the mapping (only a detached mount takes one);
//! move_mount attaches it at the target. ext4, xfs and btrfs support it since 5.12-5.15,
//! tmpfs since 6.3.

use super::IdMap;
use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn path_c(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error::NulByte(format!("path {p:?}")))
}

/// A user namespace with `map` as its uid and gid mapping, held by an fd: a child is cloned
/// into a new user namespace, its mapping written, its namespace opened, and the child killed.
/// Safe from a multi-threaded process (the child only waits for its signal).
pub fn userns_fd(map: &IdMap) -> Result<OwnedFd> {
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork(); the
    // child calls only pause() (async-signal-safe) until the parent kills it.
    let ret = unsafe { libc::syscall(libc::SYS_clone, (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    if ret < 0 {
        return Err(Error::sys("clone a user namespace", nix::errno::Errno::last()));
    }
    if ret == 0 {
        loop {
            // SAFETY: pause has no memory effects.
            unsafe { libc::pause() };
        }
    }
    let pid = ret as i32;
    let res = super::write_maps(pid, map).map_err(|e| Error::io("write the ID mapping of", format!("/proc/{pid}"), e)).and_then(|()| {
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from).map_err(|e| Error::io("open", format!("/proc/{pid}/ns/user"), e))
    });
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    res
}

/// A detached copy of the mount at `src` (not following a symlink there), idmapped with
/// `userns`.
fn idmapped_tree(src: &Path, userns: &OwnedFd) -> Result<OwnedFd> {
    let c = path_c(src)?;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::sys(format!("open_tree {}", src.display()), nix::errno::Errno::last()));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    let empty = c"";
    // SAFETY: `attr` is a valid mount_attr of the size passed, alive for the call; the path is
    // the empty string with AT_EMPTY_PATH (the descriptor itself).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let e = nix::errno::Errno::last();
        return Err(Error::Idmap { src: src.to_path_buf(), source: e });
    }
    Ok(tree)
}

fn attach(tree: &OwnedFd, target: &Path) -> Result<()> {
    let t = path_c(target)?;
    let empty = c"";
    // SAFETY: both paths are NUL-terminated strings alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), empty.as_ptr(), libc::AT_FDCWD, t.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) };
    if rc != 0 {
        return Err(Error::sys(format!("move_mount onto {}", target.display()), nix::errno::Errno::last()));
    }
    Ok(())
}

/// Mount `src` at `target` idmapped with `map` (in the caller's mount namespace).
pub fn mount(src: &Path, target: &Path, map: &IdMap) -> Result<()> {
    let ns = userns_fd(map)?;
    let tree = idmapped_tree(src, &ns)?;
    attach(&tree, target)
}

/// Whether the mount at `point` (a line of `mountinfo` with that mount point) is idmapped:
/// the kernel lists `idmapped` among its mount options.
pub fn is_idmapped(mountinfo: &str, point: &Path) -> bool {
    crate::storage::probe::parse_mountinfo(mountinfo).iter().any(|m| m.mount_point == point && m.mount_opts.split(',').any(|o| o == "idmapped"))
}

/// Whether idmapped mounts work on the filesystem holding `dir` (for `ferry check`): a file
/// owned by 0 there must show as a mapped owner through an idmapped copy. The probe's
/// directories are made in `dir` and removed again.
pub fn probe(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let map = IdMap { host_first: 3_000_000, count: 1 };
    let base =
        tempfile::Builder::new().prefix(".ferry-idmap-probe.").tempdir_in(dir).map_err(|e| format!("make a directory in {}: {e}", dir.display()))?;
    let (src, dst) = (base.path().join("src"), base.path().join("dst"));
    for d in [&src, &dst] {
        std::fs::create_dir(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    std::fs::write(src.join("f"), b"").map_err(|e| format!("write a file: {e}"))?;
    mount(&src, &dst, &map).map_err(|e| e.to_string())?;
    let owner = std::fs::metadata(dst.join("f")).map(|m| m.uid());
    let _ = nix::mount::umount2(&dst, nix::mount::MntFlags::MNT_DETACH);
    match owner {
        Ok(u) if u == map.host_first => Ok(()),
        Ok(u) => Err(format!("a file owned by 0 shows as {u} through the idmapped mount, not {}", map.host_first)),
        Err(e) => Err(format!("stat through the idmapped mount: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idmapped_flag_in_mountinfo() {
        let info = "36 25 0:32 /private/ct /data/root/ct rw,relatime,idmapped shared:1 - ext4 /dev/vda rw\n\
                    37 25 0:32 /private/c2 /data/root/c2 rw,relatime shared:1 - ext4 /dev/vda rw\n";
        assert!(is_idmapped(info, Path::new("/data/root/ct")));
        assert!(!is_idmapped(info, Path::new("/data/root/c2")));
        assert!(!is_idmapped(info, Path::new("/data/root/none")));
        // A data dir with a space: the kernel writes it escaped.
        let info = "38 25 0:32 /private/ct /srv/my\\040data/root/ct rw,idmapped - ext4 /dev/vda rw\n";
        assert!(is_idmapped(info, Path::new("/srv/my data/root/ct")));
    }
}
