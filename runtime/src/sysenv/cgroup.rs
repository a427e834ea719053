//! The cgroups a system container's systemd owns, and how it sees them.
//!
//! systemd puts every unit into a cgroup of its own below its root cgroup, so it needs a
//! cgroup namespace rooted at a cgroup of its own and a writable cgroup file system at
//! `/sys/fs/cgroup` showing that subtree:
//! - cgroup v1 (this host's hybrid layout in ferry's v1 mode): a tmpfs at `/sys/fs/cgroup`
//!   with each controller hierarchy the container is in mounted read-only (it may read its
//!   limits, not change them), and the `name=systemd` hierarchy mounted writable at
//!   `/sys/fs/cgroup/systemd` (systemd runs in its "legacy" mode). The container gets a
//!   cgroup of its own in that hierarchy beside its controller cgroups: LXC's `cgroup:mixed`.
//! - cgroup v2: the cgroup2 file system at `/sys/fs/cgroup` (systemd's "unified" mode), rooted
//!   at `payload`, a child of the container's cgroup delegated to it (LXC's name). ferry's
//!   limits stay on the container's cgroup one level up, out of its reach: without the
//!   `nsdelegate` mount option, the root of a cgroup namespace may write its own interface
//!   files (`memory.max`, `pids.max`, ...).
//!
//! In both, processes move into cgroups below the container's: ferry's cgroup code reads,
//! freezes, kills and removes the whole subtree.

use crate::cgroups::{Cgroup, CgroupMode, V1_CONTROLLERS};
use crate::error::{Error, Result};
use crate::storage::probe::{parse_mountinfo, MountEntry};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `name=` of the v1 hierarchy systemd uses.
pub const SYSTEMD_HIERARCHY: &str = "name=systemd";

/// v2: the child of the container's cgroup delegated to its systemd.
pub const PAYLOAD: &str = "payload";

/// v1: the files of a delegated cgroup its new owner writes (moving processes, and what
/// systemd sets on the cgroups it makes).
pub const DELEGATED_V1: &[&str] = &["cgroup.procs", "tasks", "cgroup.clone_children", "notify_on_release"];

/// v2: the same (the kernel adds more in `/sys/kernel/cgroup/delegate`).
pub const DELEGATED_V2: &[&str] = &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

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

fn host_mountinfo() -> Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))
}

/// The cgroup a system container's systemd owns (the root of its cgroup namespace), beside or
/// below the container's cgroup `cg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdCgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// Where its hierarchy is mounted on the host.
    hierarchy: PathBuf,
    mode: CgroupMode,
}

impl SystemdCgroup {
    /// Where it is for the container of cgroup `cg` on this host (`mountinfo`: the host's).
    pub fn of(cg: &Cgroup, mountinfo: &str) -> Result<SystemdCgroup> {
        match cg.mode() {
            CgroupMode::V2 => Ok(SystemdCgroup { dir: cg.dir("").join(PAYLOAD), hierarchy: cg.root().to_path_buf(), mode: CgroupMode::V2 }),
            CgroupMode::V1 => {
                let base = systemd_hierarchy(mountinfo).ok_or_else(|| {
                    Error::Cgroup(
                        "a systemd container needs a name=systemd cgroup hierarchy on a cgroup v1 host, and none is mounted: mount \
                         one (`mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd`) \
                         or use cgroup mode v2 (FERRY_CGROUP_MODE)"
                            .into(),
                    )
                })?;
                Ok(SystemdCgroup { dir: base.join(cg.rel()), hierarchy: base, mode: CgroupMode::V1 })
            }
        }
    }

    /// [`SystemdCgroup::of`] with the host's mount table.
    pub fn on_host(cg: &Cgroup) -> Result<SystemdCgroup> {
        SystemdCgroup::of(cg, &host_mountinfo()?)
    }

    /// The one a running container's state recorded (`dir`), for the container of `cg`.
    pub fn recorded(cg: &Cgroup, dir: &Path) -> SystemdCgroup {
        let hierarchy = match cg.mode() {
            CgroupMode::V2 => cg.root().to_path_buf(),
            CgroupMode::V1 => dir.ancestors().nth(cg.rel().split('/').filter(|c| !c.is_empty()).count()).unwrap_or(dir).to_path_buf(),
        };
        SystemdCgroup { dir: dir.to_path_buf(), hierarchy, mode: cg.mode() }
    }

    /// Make it, parents included. v2: the container's cgroup hands the controllers it has on
    /// to it (possible while no process is in the container's cgroup itself).
    pub fn create(&self, cg: &Cgroup) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create cgroup", &self.dir, e))?;
        if self.mode == CgroupMode::V2 {
            let offered = std::fs::read_to_string(cg.dir("").join("cgroup.controllers")).unwrap_or_default();
            let want: Vec<String> = offered.split_whitespace().map(|c| format!("+{c}")).collect();
            if !want.is_empty() {
                let p = cg.dir("").join("cgroup.subtree_control");
                std::fs::write(&p, want.join(" ")).map_err(|e| Error::io("enable controllers", &p, e))?;
            }
        }
        Ok(())
    }

    /// Hand it to an unprivileged container's root (`map`), as systemd's delegation and LXC
    /// do: the directory (so it may make cgroups below) and the files a delegatee writes
    /// ([`DELEGATED_V1`], or [`DELEGATED_V2`] and whatever the kernel lists in
    /// `/sys/kernel/cgroup/delegate`) become the range's root's. The limits' files stay host
    /// root's (v2: one level up). Done by descriptor: the directory is opened without following
    /// a link and every file changed relative to it, never through a link.
    pub fn delegate(&self, map: &crate::userns::IdMap) -> Result<()> {
        use nix::fcntl::{AtFlags, OFlag};
        let (uid, gid) = (Some(nix::unistd::Uid::from_raw(map.host_first)), Some(nix::unistd::Gid::from_raw(map.host_first)));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = nix::dir::Dir::open(&self.dir, flags, nix::sys::stat::Mode::empty()).map_err(|e| Error::io("open cgroup", &self.dir, e.into()))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        nix::unistd::fchown(fd, uid, gid).map_err(|e| Error::io("delegate cgroup", &self.dir, e.into()))?;
        let mut files: Vec<String> = match self.mode {
            CgroupMode::V1 => DELEGATED_V1.iter().map(|f| f.to_string()).collect(),
            CgroupMode::V2 => DELEGATED_V2.iter().map(|f| f.to_string()).collect(),
        };
        if self.mode == CgroupMode::V2 {
            let listed = std::fs::read_to_string("/sys/kernel/cgroup/delegate").unwrap_or_default();
            files.extend(listed.split_whitespace().filter(|f| !files.iter().any(|g| g == f)).map(str::to_string).collect::<Vec<_>>());
        }
        for f in files {
            match nix::unistd::fchownat(Some(fd), f.as_str(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(Error::io("delegate cgroup file", self.dir.join(&f), e.into())),
            }
        }
        Ok(())
    }

    /// After CRIU restored the subtree of an unprivileged container under another range than
    /// the one it was dumped with: CRIU gives each cgroup and file it recorded the host owner
    /// it had on the dumping host (`from`'s IDs), which this host's range (`to`) does not hold.
    /// Each owner in `from` becomes the same ID of `to`; others stay. Walked by descriptor,
    /// never through a link (cgroup file systems have none; a container cannot make one).
    pub fn shift_owners(&self, from: &crate::userns::IdMap, to: &crate::userns::IdMap) -> Result<()> {
        use nix::fcntl::{AtFlags, OFlag};
        if from == to {
            return Ok(());
        }
        let shift = |id: u32| (id >= from.host_first && id <= from.host_last()).then(|| id - from.host_first).and_then(|i| to.to_host(i));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let top = nix::dir::Dir::open(&self.dir, flags, nix::sys::stat::Mode::empty()).map_err(|e| Error::io("open cgroup", &self.dir, e.into()))?;
        let err = |what: &str, path: &Path, e: nix::errno::Errno| Error::io(what, path, e.into());
        let mut stack = vec![(top, self.dir.clone())];
        while let Some((mut dir, path)) = stack.pop() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
            let st = nix::sys::stat::fstat(fd).map_err(|e| err("stat cgroup", &path, e))?;
            let (u, g) = (shift(st.st_uid), shift(st.st_gid));
            if u.is_some() || g.is_some() {
                let (u, g) = (u.unwrap_or(st.st_uid), g.unwrap_or(st.st_gid));
                nix::unistd::fchown(fd, Some(nix::unistd::Uid::from_raw(u)), Some(nix::unistd::Gid::from_raw(g)))
                    .map_err(|e| err("re-own cgroup", &path, e))?;
            }
            let mut subdirs = Vec::new();
            for entry in dir.iter() {
                let entry = entry.map_err(|e| err("read cgroup", &path, e))?;
                let name = entry.file_name().to_owned();
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                let st = match nix::sys::stat::fstatat(Some(fd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(nix::errno::Errno::ENOENT) => continue,
                    Err(e) => return Err(err("stat cgroup file", &path.join(name.to_string_lossy().as_ref()), e)),
                };
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    subdirs.push(name);
                    continue;
                }
                let (u, g) = (shift(st.st_uid), shift(st.st_gid));
                if u.is_some() || g.is_some() {
                    let (u, g) = (u.unwrap_or(st.st_uid), g.unwrap_or(st.st_gid));
                    nix::unistd::fchownat(
                        Some(fd),
                        name.as_c_str(),
                        Some(nix::unistd::Uid::from_raw(u)),
                        Some(nix::unistd::Gid::from_raw(g)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| err("re-own cgroup file", &path.join(name.to_string_lossy().as_ref()), e))?;
                }
            }
            for name in subdirs {
                let sub_path = path.join(name.to_string_lossy().as_ref());
                match nix::dir::Dir::openat(Some(fd), name.as_c_str(), flags, nix::sys::stat::Mode::empty()) {
                    Ok(d) => stack.push((d, sub_path)),
                    Err(nix::errno::Errno::ENOENT) => {}
                    Err(e) => return Err(err("open cgroup", &sub_path, e)),
                }
            }
        }
        Ok(())
    }

    /// Put `pid` (the container's init) into the container's cgroups: v1 its controller
    /// cgroups and this one; v2 this one (a child of the container's, which keeps no process).
    pub fn join(&self, cg: &Cgroup, pid: i32) -> Result<()> {
        if self.mode == CgroupMode::V1 {
            cg.add_pid(pid)?;
        }
        let p = self.dir.join("cgroup.procs");
        std::fs::write(&p, pid.to_string()).map_err(|e| Error::io("join cgroup", &p, e))
    }

    /// The `cgroup.procs` files a process joins to enter the container (`exec`): every one of
    /// the first list, then the first of the second that takes it (v2: this cgroup, else
    /// systemd's own `init.scope` once systemd enabled controllers below this one, where no
    /// process may stay).
    pub fn exec_procs(&self, cg: &Cgroup) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let own = self.dir.join("cgroup.procs");
        match self.mode {
            CgroupMode::V1 => (cg.procs_files().into_iter().chain([own]).collect(), Vec::new()),
            CgroupMode::V2 => (Vec::new(), vec![own, self.dir.join("init.scope/cgroup.procs")]),
        }
    }

    /// The `cgroup.procs` files `criu swrk` joins for a restore: the controller cgroups (v1),
    /// or this one (v2), where CRIU then puts each process into its own.
    pub fn criu_join(&self, cg: &Cgroup) -> Vec<PathBuf> {
        match self.mode {
            CgroupMode::V1 => cg.procs_files(),
            CgroupMode::V2 => vec![self.dir.join("cgroup.procs")],
        }
    }

    /// What CRIU is told (see [`CriuCgroups`]).
    pub fn criu(&self) -> CriuCgroups {
        let dump_controller = match self.mode {
            CgroupMode::V1 => SYSTEMD_HIERARCHY.to_string(),
            CgroupMode::V2 => String::new(),
        };
        let rel = self.dir.strip_prefix(&self.hierarchy).unwrap_or(&self.dir);
        CriuCgroups { dump_controller, root: format!("/{}", rel.display()) }
    }
}

/// Remove the cgroup a system container's systemd owned, as its state recorded it or, with no
/// state, where it would be on this host. Nothing for other containers.
pub fn remove_for(host: &crate::Host, cfg: &crate::ContainerConfig, state: Option<&crate::state::State>) -> Result<()> {
    let dir = match state.and_then(|s| s.system.as_ref()) {
        Some(s) => Some(s.systemd_cgroup.clone()),
        None if super::is_system(cfg) => SystemdCgroup::on_host(&host.cgroup(&cfg.ctid)?).ok().map(|s| s.dir),
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
/// cgroups are the container's own, which ferry makes and CRIU's caller joins), with
/// systemd's cgroup as its root so the whole subtree (empty cgroups of stopped units too)
/// is recorded, and remapped to the same place on the restoring host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuCgroups {
    /// CRIU's `cgroup_dump_controller`: the one hierarchy dumped.
    pub dump_controller: String,
    /// systemd's cgroup in that hierarchy, from its root ("/ferry/101", v2 "/ferry/101/payload").
    pub root: String,
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
        let sd = SystemdCgroup::of(&cg, HYBRID).unwrap();
        assert_eq!(sd.dir, PathBuf::from("/sys/fs/cgroup/systemd/ferry/101"));
        assert_eq!(sd.criu(), CriuCgroups { dump_controller: "name=systemd".into(), root: "/ferry/101".into() });
        assert_eq!(SystemdCgroup::recorded(&cg, &sd.dir), sd);
        let (all, first_of) = sd.exec_procs(&cg);
        assert!(all.contains(&PathBuf::from("/sys/fs/cgroup/systemd/ferry/101/cgroup.procs")) && first_of.is_empty());
        assert_eq!(sd.criu_join(&cg), cg.procs_files());
    }

    #[test]
    fn v2_delegates_the_containers_own_cgroup() {
        let cg = Cgroup::new("/sys/fs/cgroup/unified", "ferry/101", CgroupMode::V2);
        let m = child_mounts(&cg, HYBRID);
        assert_eq!(m.len(), 1);
        assert!(m[0].fstype == "cgroup2" && m[0].writable && m[0].dir.is_empty());
        let sd = SystemdCgroup::of(&cg, HYBRID).unwrap();
        assert_eq!(sd.dir, PathBuf::from("/sys/fs/cgroup/unified/ferry/101/payload"), "one level below the limits");
        assert_eq!(sd.criu(), CriuCgroups { dump_controller: String::new(), root: "/ferry/101/payload".into() });
        assert_eq!(SystemdCgroup::recorded(&cg, &sd.dir), sd);
        let (all, first_of) = sd.exec_procs(&cg);
        assert!(all.is_empty(), "never the container's own cgroup, which holds no process");
        assert_eq!(first_of[0], PathBuf::from("/sys/fs/cgroup/unified/ferry/101/payload/cgroup.procs"));
        assert_eq!(sd.criu_join(&cg), vec![PathBuf::from("/sys/fs/cgroup/unified/ferry/101/payload/cgroup.procs")]);
    }

    /// A directory standing for a cgroup (ownership works the same on any file system).
    fn fake_cgroup(mode: CgroupMode) -> (tempfile::TempDir, SystemdCgroup) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ct");
        std::fs::create_dir(&dir).unwrap();
        (d, SystemdCgroup { dir: dir.clone(), hierarchy: dir, mode })
    }

    fn owner(p: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    #[test]
    fn delegation_hands_over_the_directory_and_its_files_never_through_a_link() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let map = crate::userns::IdMap { host_first: 1_300_000, count: 65_536 };
        let (d, sd) = fake_cgroup(CgroupMode::V2);
        for f in ["cgroup.procs", "cgroup.subtree_control", "memory.max", "pids.max"] {
            std::fs::write(sd.dir.join(f), "").unwrap();
        }
        // A link where a delegated file would be must not hand over what it points at.
        let host_file = d.path().join("host-file");
        std::fs::write(&host_file, "host\n").unwrap();
        std::os::unix::fs::symlink(&host_file, sd.dir.join("cgroup.threads")).unwrap();
        sd.delegate(&map).unwrap();
        let first = (map.host_first, map.host_first);
        assert_eq!(owner(&sd.dir), first);
        assert_eq!(owner(&sd.dir.join("cgroup.procs")), first);
        assert_eq!(owner(&sd.dir.join("cgroup.subtree_control")), first);
        assert_eq!(owner(&sd.dir.join("pids.max")), (0, 0), "a limit stays host root's");
        assert_eq!(owner(&host_file), (0, 0), "the link was followed");
        // The directory itself a link: refused, nothing changed.
        let (d2, mut sd2) = fake_cgroup(CgroupMode::V1);
        let target = d2.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::remove_dir(&sd2.dir).unwrap();
        std::os::unix::fs::symlink(&target, &sd2.dir).unwrap();
        sd2.hierarchy = sd2.dir.clone();
        assert!(sd2.delegate(&map).is_err());
        assert_eq!(owner(&target), (0, 0));
    }

    #[test]
    fn restored_owners_move_to_this_hosts_range_and_nothing_else_does() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let from = crate::userns::IdMap { host_first: 1_300_000, count: 65_536 };
        let to = crate::userns::IdMap { host_first: 2_600_000, count: 65_536 };
        let (d, sd) = fake_cgroup(CgroupMode::V1);
        let ch = |p: &Path, u: u32, g: u32| {
            nix::unistd::fchownat(
                None,
                p,
                Some(nix::unistd::Uid::from_raw(u)),
                Some(nix::unistd::Gid::from_raw(g)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap()
        };
        let slice = sd.dir.join("system.slice");
        let user = sd.dir.join("user.slice/user-1000.slice");
        std::fs::create_dir_all(&slice).unwrap();
        std::fs::create_dir_all(&user).unwrap();
        for f in [sd.dir.join("cgroup.procs"), slice.join("cgroup.procs"), user.join("cgroup.procs"), slice.join("notify_on_release")] {
            std::fs::write(&f, "").unwrap();
        }
        ch(&sd.dir, from.host_first, from.host_first);
        ch(&sd.dir.join("cgroup.procs"), from.host_first, from.host_first);
        ch(&slice, from.host_first, from.host_first);
        ch(&slice.join("cgroup.procs"), from.host_first, from.host_first);
        // systemd hands a user's cgroup to that user (Delegate=yes): uid 1000 inside.
        ch(&user, from.host_first + 1000, from.host_first + 1000);
        ch(&user.join("cgroup.procs"), from.host_first + 1000, from.host_first);
        // Owned by host root (a limit): stays. A link to a host file planted inside: its
        // target is never touched.
        let host_file = d.path().join("host-file");
        std::fs::write(&host_file, "host\n").unwrap();
        ch(&host_file, from.host_first, from.host_first);
        std::os::unix::fs::symlink(&host_file, slice.join("escape")).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("f"), "").unwrap();
        ch(&outside.join("f"), from.host_first, from.host_first);
        std::os::unix::fs::symlink(&outside, slice.join("escape-dir")).unwrap();
        sd.shift_owners(&from, &to).unwrap();
        let first = (to.host_first, to.host_first);
        assert_eq!(owner(&sd.dir), first);
        assert_eq!(owner(&sd.dir.join("cgroup.procs")), first);
        assert_eq!(owner(&slice), first);
        assert_eq!(owner(&slice.join("cgroup.procs")), first);
        assert_eq!(owner(&slice.join("notify_on_release")), (0, 0));
        assert_eq!(owner(&user), (to.host_first + 1000, to.host_first + 1000), "the same ID of the new range");
        assert_eq!(owner(&user.join("cgroup.procs")), (to.host_first + 1000, to.host_first));
        assert_eq!(owner(&host_file), (from.host_first, from.host_first), "a link was followed");
        assert_eq!(owner(&outside.join("f")), (from.host_first, from.host_first), "a linked directory was walked");
        // The same range: nothing to do.
        sd.shift_owners(&to, &to).unwrap();
        assert_eq!(owner(&sd.dir), first);
    }

    #[test]
    fn v1_without_a_systemd_hierarchy_says_how_to_mount_one() {
        let cg = Cgroup::new("/sys/fs/cgroup", "ferry/101", CgroupMode::V1);
        let e = SystemdCgroup::of(&cg, "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n").unwrap_err().to_string();
        assert!(e.contains("name=systemd") && e.contains("mount -t cgroup"), "{e}");
    }
}
