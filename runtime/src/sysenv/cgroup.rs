//! The cgroups a system container's systemd owns, and how it sees them.
//!
//! systemd puts every unit into a cgroup of its own below its root cgroup, so it needs a
//! cgroup namespace whose root is the container's cgroup and a writable cgroup file system at
//! `/sys/fs/cgroup` showing that subtree:
//! - cgroup v1 (this host's hybrid layout in ferry's v1 mode): a tmpfs at `/sys/fs/cgroup`
//!   with each controller hierarchy the container is in mounted read-only (it may read its
//!   limits, not change them), and the `name=systemd` hierarchy mounted writable at
//!   `/sys/fs/cgroup/systemd` (systemd runs in its "legacy" mode). The container gets a
//!   cgroup of its own in that hierarchy beside its controller cgroups. This is LXC's
//!   `cgroup:mixed`.
//! - cgroup v2: the cgroup2 file system at `/sys/fs/cgroup`; the container's own cgroup is
//!   delegated to it (systemd's "unified" mode).
//!
//! In both, processes move into child cgroups of the container's cgroup: ferry's cgroup code
//! reads, freezes, kills and removes the whole subtree.

use crate::cgroups::{Cgroup, CgroupMode, V1_CONTROLLERS};
use crate::error::{Error, Result};
use crate::storage::backends::{parse_mountinfo, MountEntry};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `name=` of the v1 hierarchy systemd uses.
pub const SYSTEMD_HIERARCHY: &str = "name=systemd";

/// One cgroup file system mounted inside the container under `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The directory below `/sys/fs/cgroup` ("" for `/sys/fs/cgroup` itself).
    pub dir: String,
    /// "cgroup" or "cgroup2".
    pub fstype: &'static str,
    /// Mount data: the hierarchy's controllers, or `none,name=systemd`.
    pub data: String,
    pub writable: bool,
    /// Other names of a hierarchy holding several controllers (`cpu` for `cpu,cpuacct`),
    /// linked to `dir` as systemd and others expect.
    pub aliases: Vec<String>,
}

/// The v1 controllers a cgroup mount holds, from its superblock options.
fn v1_controllers(m: &MountEntry) -> Vec<String> {
    m.super_opts
        .split(',')
        .filter(|o| !o.contains('=') && !matches!(*o, "rw" | "ro" | "none" | "xattr" | "noprefix" | "clone_children" | "cpuset_v2_mode"))
        .map(str::to_string)
        .collect()
}

/// The `name=systemd` hierarchy's mount point (whole hierarchy shown) in `mountinfo`.
pub fn systemd_hierarchy(mountinfo: &str) -> Option<PathBuf> {
    parse_mountinfo(mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.root == "/" && m.super_opts.split(',').any(|o| o == SYSTEMD_HIERARCHY))
        .map(|m| m.mount_point)
}

/// The directory systemd owns for the container of cgroup `cg`: v1 the container's cgroup
/// in the `name=systemd` hierarchy (None on v2, where it owns the container's cgroup itself).
pub fn systemd_dir(cg: &Cgroup, mountinfo: &str) -> Result<Option<PathBuf>> {
    if cg.mode() == CgroupMode::V2 {
        return Ok(None);
    }
    let base = systemd_hierarchy(mountinfo).ok_or_else(|| {
        Error::Cgroup(
            "a systemd container needs a name=systemd cgroup hierarchy on a cgroup v1 host, and none is mounted: mount one \
             (`mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd`) or use \
             cgroup mode v2 (FERRY_CGROUP_MODE)"
                .into(),
        )
    })?;
    Ok(Some(base.join(cg.rel())))
}

fn host_mountinfo() -> Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))
}

/// Make the directory systemd owns (v1), parents included. Returns it.
pub fn create(cg: &Cgroup) -> Result<Option<PathBuf>> {
    let Some(dir) = systemd_dir(cg, &host_mountinfo()?)? else { return Ok(None) };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create cgroup", &dir, e))?;
    Ok(Some(dir))
}

/// Put `pid` into the systemd directory.
pub fn add_pid(dir: &Path, pid: i32) -> Result<()> {
    let p = dir.join("cgroup.procs");
    std::fs::write(&p, pid.to_string()).map_err(|e| Error::io("join cgroup", &p, e))
}

/// Remove the cgroup a system container's systemd owned (v1), as its state recorded it or, with
/// no state, where it would be on this host. Nothing for other containers.
pub fn remove_for(host: &crate::Host, cfg: &crate::ContainerConfig, state: Option<&crate::state::State>) -> Result<()> {
    let recorded = state.and_then(|s| s.system.as_ref()).map(|s| s.systemd_cgroup.clone());
    let dir = match recorded {
        Some(d) => d,
        None if super::is_system(cfg) => systemd_dir(&host.cgroup(&cfg.ctid)?, &host_mountinfo()?).unwrap_or(None),
        None => None,
    };
    match dir {
        Some(d) => remove_tree(&d),
        None => Ok(()),
    }
}

/// Remove `dir` and every cgroup systemd made below it, deepest first, waiting a little for
/// exiting tasks to leave (the kernel says EBUSY until they have). A missing one is fine.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut all = Vec::new();
    collect_dirs(dir, &mut all);
    // Deepest first: children before their parents.
    all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in all {
        let t = Instant::now();
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && t.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(Error::Cgroup(format!("remove {}: {e}; processes may still be in it (see its cgroup.procs)", d.display()))),
            }
        }
    }
    Ok(())
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// What the container mounts under `/sys/fs/cgroup` for the cgroup `cg` (`mountinfo`: the
/// host's, read before the container's mount namespace exists).
pub fn child_mounts(cg: &Cgroup, mountinfo: &str) -> Vec<CgroupMount> {
    if cg.mode() == CgroupMode::V2 {
        return vec![CgroupMount { dir: String::new(), fstype: "cgroup2", data: String::new(), writable: true, aliases: Vec::new() }];
    }
    let mut out = Vec::new();
    for m in parse_mountinfo(mountinfo) {
        if m.fstype != "cgroup" || m.root != "/" || m.mount_point.parent() != Some(cg.root()) {
            continue;
        }
        let Some(dir) = m.mount_point.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if m.super_opts.split(',').any(|o| o == SYSTEMD_HIERARCHY) {
            out.push(CgroupMount { dir, fstype: "cgroup", data: format!("none,{SYSTEMD_HIERARCHY}"), writable: true, aliases: Vec::new() });
            continue;
        }
        let ctls = v1_controllers(&m);
        // Only hierarchies the container has a cgroup of its own in: any other would show the
        // host's whole tree.
        if ctls.is_empty() || !ctls.iter().any(|c| V1_CONTROLLERS.contains(&c.as_str())) {
            continue;
        }
        let aliases = ctls.iter().filter(|c| **c != dir).cloned().collect::<Vec<_>>();
        let aliases = if ctls.len() > 1 { aliases } else { Vec::new() };
        out.push(CgroupMount { dir, fstype: "cgroup", data: ctls.join(","), writable: false, aliases });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

/// What CRIU is told about cgroups for a system container: only the hierarchy systemd owns is
/// dumped and restored (`name=systemd` on v1, the unified one on v2: the processes' other
/// cgroups are the container's own, which ferry makes and CRIU's caller joins), with the
/// container's cgroup as its root so the whole subtree (empty cgroups of stopped units too)
/// is recorded, and remapped to the container's cgroup on the restoring host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuCgroups {
    /// CRIU's `cgroup_dump_controller`: the one hierarchy dumped.
    pub dump_controller: String,
    /// The container's cgroup in that hierarchy, from its root ("/ferry/101").
    pub root: String,
}

/// [`CriuCgroups`] for a container whose cgroup is `cg`.
pub fn criu_cgroups(cg: &Cgroup) -> CriuCgroups {
    let dump_controller = match cg.mode() {
        CgroupMode::V1 => SYSTEMD_HIERARCHY.to_string(),
        CgroupMode::V2 => String::new(),
    };
    CriuCgroups { dump_controller, root: format!("/{}", cg.rel()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio\n\
        37 31 0:34 / /sys/fs/cgroup/cpuset,cpuacct rw,relatime - cgroup cgroup rw,cpuset,cpuacct\n\
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn v1_mounts_controllers_read_only_and_systemd_writable() {
        let cg = Cgroup::new("/sys/fs/cgroup", "ferry/101", CgroupMode::V1);
        let m = child_mounts(&cg, HYBRID);
        let dirs: Vec<&str> = m.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(dirs, vec!["cpu", "cpuset,cpuacct", "memory", "systemd"], "net_cls is not the container's: not shown");
        assert!(m.iter().all(|m| m.writable == (m.dir == "systemd")));
        let sd = m.iter().find(|m| m.dir == "systemd").unwrap();
        assert_eq!(sd.data, "none,name=systemd");
        let co = m.iter().find(|m| m.dir == "cpuset,cpuacct").unwrap();
        assert_eq!((co.data.as_str(), co.aliases.clone()), ("cpuset,cpuacct", vec!["cpuset".to_string(), "cpuacct".to_string()]));
        assert_eq!(systemd_dir(&cg, HYBRID).unwrap(), Some(PathBuf::from("/sys/fs/cgroup/systemd/ferry/101")));
        assert_eq!(criu_cgroups(&cg), CriuCgroups { dump_controller: "name=systemd".into(), root: "/ferry/101".into() });
    }

    #[test]
    fn v2_delegates_the_containers_own_cgroup() {
        let cg = Cgroup::new("/sys/fs/cgroup/unified", "ferry/101", CgroupMode::V2);
        let m = child_mounts(&cg, HYBRID);
        assert_eq!(m.len(), 1);
        assert!(m[0].fstype == "cgroup2" && m[0].writable && m[0].dir.is_empty());
        assert_eq!(systemd_dir(&cg, HYBRID).unwrap(), None);
        assert_eq!(criu_cgroups(&cg).dump_controller, "");
    }

    #[test]
    fn v1_without_a_systemd_hierarchy_says_how_to_mount_one() {
        let cg = Cgroup::new("/sys/fs/cgroup", "ferry/101", CgroupMode::V1);
        let e = systemd_dir(&cg, "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n").unwrap_err().to_string();
        assert!(e.contains("name=systemd") && e.contains("mount -t cgroup"), "{e}");
    }
}
