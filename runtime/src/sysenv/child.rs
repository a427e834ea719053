//! What a system container's PID 1 sets up for systemd before it execs it (in the forked
//! child, inside the container's new namespaces): the cgroup namespace and the cgroup file
//! systems, `/dev/console`, the API file systems systemd expects mounted already (it has no
//! CAP_SYS_ADMIN to mount them itself), `/run/systemd/container`, a machine id, and the
//! loopback interface up (it has no CAP_NET_ADMIN to do that either).
//!
//! Paths are the container's own: everything after `pivot_root` resolves inside its root, so a
//! symlink there cannot lead a mount out of it; `/run` or `/tmp` that the image made symlinks
//! are left as they are.

use crate::sysenv::cgroup::CgroupMount;
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

/// What the child needs, prepared by the parent before clone.
#[derive(Debug, Clone)]
pub struct ChildEnv {
    /// The host path of the console pty's peer (bound at /dev/console before pivot_root).
    pub console: PathBuf,
    /// The cgroup file systems under /sys/fs/cgroup.
    pub cgroup_mounts: Vec<CgroupMount>,
}

/// The contents of `/run/systemd/container` (and `$container`).
pub const CONTAINER_TYPE: &str = "ferry";

fn mount(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    nix::mount::mount(src, target, fstype, flags, data).map_err(|e| format!("mount {} on {}: {e}", fstype.or(src).unwrap_or(""), target.display()))
}

/// A new cgroup namespace rooted at the cgroups the parent put this process in.
pub fn enter_cgroup_namespace() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("new cgroup namespace: {e}"))
}

/// Bind the console pty's peer at `<root>/dev/console` (before pivot_root, while the host's
/// devpts is still reachable; /dev is the container's fresh tmpfs).
pub fn bind_console(root: &Path, env: &ChildEnv) -> Result<(), String> {
    let target = root.join("dev/console");
    std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(|e| format!("create /dev/console: {e}"))?;
    let src = env.console.to_str().ok_or("console path is not UTF-8")?;
    mount(Some(src), &target, None, MsFlags::MS_BIND, None)
}

/// After pivot_root: the API file systems, the cgroup file systems, the container marker and
/// the machine id.
pub fn after_pivot(env: &ChildEnv) -> Result<(), String> {
    let nsd = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if tmpfs_at(Path::new("/run"), nsd, "mode=0755,size=20%,nr_inodes=800k")? {
        std::fs::create_dir_all("/run/lock").map_err(|e| format!("create /run/lock: {e}"))?;
        tmpfs_at(Path::new("/run/lock"), nsd | MsFlags::MS_NOEXEC, "mode=1777,size=5m")?;
        std::fs::create_dir_all("/run/systemd").map_err(|e| format!("create /run/systemd: {e}"))?;
        crate::util::write_replace("/run/systemd/container", &format!("{CONTAINER_TYPE}\n"), 0o444)?;
    }
    tmpfs_at(Path::new("/tmp"), nsd, "mode=1777,size=50%,nr_inodes=1m")?;
    cgroup_mounts(&env.cgroup_mounts)?;
    machine_id()?;
    loopback_up()
}

/// Bring `lo` of the container's network namespace up (services bind 127.0.0.1).
fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain socket for the interface ioctls; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!("loopback: socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own; `sock` is ours.
    let ok = unsafe {
        let got = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let set = got && libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) == 0;
        libc::close(sock);
        set
    };
    if !ok {
        return Err(format!("bring lo up: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Mount a tmpfs at `dir` unless the image made it something other than a directory (a
/// symlink is its choice). Returns whether it mounted.
fn tmpfs_at(dir: &Path, flags: MsFlags, data: &str) -> Result<bool, String> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => return Ok(false),
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?,
    }
    mount(Some("tmpfs"), dir, Some("tmpfs"), flags, Some(data))?;
    Ok(true)
}

/// The cgroup file systems at /sys/fs/cgroup: one cgroup2 mount, or a tmpfs holding the v1
/// hierarchies (read-only but the systemd one), made read-only itself afterwards. In the
/// container's cgroup namespace each shows the container's cgroup as its root.
fn cgroup_mounts(mounts: &[CgroupMount]) -> Result<(), String> {
    let base = Path::new("/sys/fs/cgroup");
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let [only] = mounts {
        if only.dir.is_empty() {
            return mount(Some("cgroup2"), base, Some(only.fstype), hidden, None);
        }
    }
    mount(Some("tmpfs"), base, Some("tmpfs"), hidden, Some("mode=0755,size=64k"))?;
    for m in mounts {
        let dir = base.join(&m.dir);
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let ro = if m.writable { MsFlags::empty() } else { MsFlags::MS_RDONLY };
        mount(Some("cgroup"), &dir, Some(m.fstype), hidden | ro, Some(&m.data))?;
        for a in &m.aliases {
            std::os::unix::fs::symlink(&m.dir, base.join(a)).map_err(|e| format!("link /sys/fs/cgroup/{a}: {e}"))?;
        }
    }
    mount(None, base, None, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hidden, Some("mode=0755,size=64k"))
}

/// A machine id of its own when the image has none (an empty file, `uninitialized`, or
/// none): written once into the container's /etc, so it stays across restarts and moves.
fn machine_id() -> Result<(), String> {
    let p = "/etc/machine-id";
    let have = crate::util::read_nofollow(p).map_err(|e| format!("read {p}: {e}"))?;
    let blank = have.as_deref().map(|s| s.trim().is_empty() || s.trim() == "uninitialized").unwrap_or(true);
    if !blank || std::fs::symlink_metadata("/etc").map(|m| !m.is_dir()).unwrap_or(true) {
        return Ok(());
    }
    let mut id = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id)).map_err(|e| format!("read /dev/urandom: {e}"))?;
    crate::util::write_replace(p, &format!("{}\n", format_machine_id(id)), 0o444)
}

/// A random id in the form systemd writes (a version 4 UUID, 32 hex digits).
pub fn format_machine_id(mut id: [u8; 16]) -> String {
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// stdin, stdout and stderr on /dev/console (not as controlling terminal: a getty on the
/// console takes it as its own).
pub fn console_stdio() -> Result<(), String> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open("/dev/console", OFlag::O_RDWR | OFlag::O_NOCTTY, nix::sys::stat::Mode::empty())
        .map_err(|e| format!("open /dev/console: {e}"))?;
    for to in 0..3 {
        nix::unistd::dup2(fd, to).map_err(|e| format!("dup2: {e}"))?;
    }
    if fd > 2 {
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_look_like_systemds() {
        let id = format_machine_id([0xff; 16]);
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(&id[12..13], "4", "version 4");
        assert_eq!(&id[16..17], "b", "variant bits");
    }
}
