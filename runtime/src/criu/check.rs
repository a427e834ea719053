//! The data behind `ferry check`: what this host offers ferry, and what ferry does without it.

use super::{Criu, INSTALL_HINT, MIN_VERSION};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckRow {
    pub feature: String,
    pub status: Status,
    /// What was found (version, mode, controllers, the error).
    pub detail: String,
    /// What ferry does without it.
    pub without: String,
}

fn row(feature: &str, ok: bool, detail: impl Into<String>, without: &str) -> CheckRow {
    CheckRow { feature: feature.into(), status: if ok { Status::Ok } else { Status::Missing }, detail: detail.into(), without: without.into() }
}

/// The whole table for `host` (its cgroup mode decides the cgroup rows, its data dir and pool
/// the user namespace rows), with the isolation a new container of `default_kind` gets.
/// `work_dir` receives CRIU's check log.
pub fn host_check(host: &crate::Host, work_dir: &Path, default_kind: crate::config::ContainerKind) -> HostCheck {
    let mut rows = Vec::new();
    let criu = super::rpc::find_criu().map(Criu::with_binary);
    let version = criu.as_ref().map_err(|e| e.to_string()).and_then(|c| c.version().map_err(|e| e.to_string()));
    let no_cr = "no checkpoint, restore or live migration; offline migration (copy files, restart) still works";
    match &version {
        Ok(v) => rows.push(row(
            "CRIU version",
            v.at_least(MIN_VERSION),
            if v.at_least(MIN_VERSION) { v.to_string() } else { format!("{v}: needs {}.{}+, {INSTALL_HINT}", MIN_VERSION.0, MIN_VERSION.1) },
            no_cr,
        )),
        Err(e) => rows.push(row("CRIU version", false, e.clone(), no_cr)),
    }
    let features = match (&criu, &version) {
        (Ok(c), Ok(_)) => {
            let chk = c.check(work_dir);
            rows.push(row(
                "criu check",
                chk.is_ok(),
                match &chk {
                    Ok(()) => "passes".to_owned(),
                    Err(e) => first_line(&e.to_string()),
                },
                no_cr,
            ));
            c.features().ok()
        }
        _ => None,
    };
    rows.push(cgroup_row(Path::new("/sys/fs/cgroup")));
    rows.extend(cgroup_mode_rows(host.cgroup_layout().map(|l| {
        let controllers = crate::cgroups::Cgroup::in_layout(&l, host.cgroup_parent.clone()).controllers();
        (l, controllers)
    })));
    let f = features.unwrap_or_default();
    let known = features.is_some();
    rows.push(row(
        "soft-dirty (mem_track)",
        f.mem_track,
        if known {
            if f.mem_track {
                "supported"
            } else {
                "not in this kernel (CONFIG_MEM_SOFT_DIRTY)"
            }
        } else {
            "unknown (no CRIU)"
        },
        "live migration copies memory once while the container is frozen (no iterative pre-copy): a longer freeze for big containers",
    ));
    rows.push(row(
        "userfaultfd (lazy_pages)",
        f.lazy_pages,
        if known {
            if f.lazy_pages {
                "supported"
            } else {
                "not supported"
            }
        } else {
            "unknown (no CRIU)"
        },
        "no post-copy: all memory is copied before the container resumes",
    ));
    let sys_resource = has_cap_in_bounding_set(24);
    rows.push(row(
        "CAP_SYS_RESOURCE",
        sys_resource,
        if sys_resource { "in root's bounding set" } else { "missing from root's bounding set (CapBnd in /proc/self/status)" },
        "CRIU cannot read the limits of processes running as another user than root in a privileged container: those whose services drop privileges (postgres, nginx workers, ...) cannot be checkpointed or live-migrated; unprivileged containers (--userns on) can (see their row)",
    ));
    rows.extend(userns_rows(host));
    let (seccomp_ok, seccomp_detail) = seccomp_support();
    rows.push(row(
        "seccomp filters",
        seccomp_ok,
        seccomp_detail,
        "containers with a seccomp filter (the default) do not start: only --seccomp unconfined works",
    ));
    let criu_seccomp = criu.as_ref().ok().map(|c| criu_feature(c.binary(), "seccomp_filters"));
    rows.push(row(
        "CRIU seccomp (seccomp_filters)",
        criu_seccomp == Some(true),
        match criu_seccomp {
            Some(true) => "filters are dumped and restored",
            Some(false) => "criu check --feature seccomp_filters fails",
            None => "unknown (no CRIU)",
        },
        "containers with a seccomp filter cannot be checkpointed or migrated",
    ));
    let iptables = on_path("iptables-restore");
    let nft = on_path("nft");
    rows.push(row(
        "network lock",
        iptables || nft,
        match (iptables, nft) {
            (true, true) => "iptables (nft also present)",
            (true, false) => "iptables",
            (false, true) => "nft only: ferry asks CRIU for nftables",
            (false, false) => "neither iptables-restore nor nft found",
        },
        "CRIU cannot lock the network while frozen: established TCP connections cannot be kept",
    ));
    let loopdev = Path::new("/dev/loop-control").exists();
    rows.push(row(
        "loop devices",
        loopdev,
        if loopdev { "/dev/loop-control present" } else { "no /dev/loop-control" },
        "no per-container disk images: disk limits only on btrfs, else none",
    ));
    let btrfs = on_path("btrfs");
    let xfs = on_path("mkfs.xfs") && on_path("xfs_growfs");
    rows.push(row(
        "btrfs / xfs tools",
        btrfs || xfs,
        format!("btrfs-progs: {}, xfsprogs: {}", yes(btrfs), yes(xfs)),
        "private areas are plain directories without disk limits",
    ));
    let default_isolation = crate::isolation::Applied::from_security(&crate::config::Security { kind: default_kind, ..Default::default() })
        .map(|a| a.summary())
        .map_err(|e| e.to_string());
    let advice = if matches!(&version, Ok(v) if v.at_least(MIN_VERSION)) { Vec::new() } else { vec![GET_CRIU.to_owned()] };
    HostCheck { rows, default_isolation, advice }
}

/// Unprivileged containers: user namespaces, idmapped mounts where the private areas live,
/// and the limits of another user's process read in a user namespace host root made (what
/// CRIU does for every task of an unprivileged container), next to the same read on the host.
fn userns_rows(host: &crate::Host) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let map = crate::userns::IdMap { host_first: 3_100_000, count: crate::userns::CONTAINER_IDS };
    let userns = crate::userns::idmapped::userns_fd(&map).map(drop).map_err(|e| e.to_string());
    let no_userns = "no unprivileged containers: --userns on containers do not start";
    rows.push(row(
        "user namespaces",
        userns.is_ok(),
        match &userns {
            Ok(()) => "root makes them with any mapping".to_string(),
            Err(e) => format!("{e} (is /proc/sys/user/max_user_namespaces 0?)"),
        },
        no_userns,
    ));
    let pool = host.userns_pool.resolve();
    rows.push(row(
        "user ID pool",
        pool.is_ok(),
        match &pool {
            Ok(p) => format!("{p} ({} containers' ranges of {})", p.slots(), crate::userns::CONTAINER_IDS),
            Err(e) => e.to_string(),
        },
        "unprivileged containers cannot get an ID range: set userns_pool in the host config",
    ));
    let dir = if host.data_dir.exists() { host.data_dir.clone() } else { std::path::PathBuf::from("/") };
    let idmap = crate::userns::idmapped::probe(&dir);
    rows.push(row(
        "idmapped mounts",
        idmap.is_ok(),
        match &idmap {
            Ok(()) => format!("work on the filesystem of {}", dir.display()),
            Err(e) => format!("{}: {e}", dir.display()),
        },
        "unprivileged containers whose private area is there do not start (ferry does not shift IDs in their trees): use --userns off, or a data dir on ext4, xfs or btrfs",
    ));
    if userns.is_ok() {
        let inside = crate::userns::probe::prlimit_of_other_user(Some(&map));
        let outside = crate::userns::probe::prlimit_of_other_user(None);
        rows.push(row(
            "limits of other users, unprivileged",
            inside.is_ok(),
            format!(
                "root reads the limits of a uid-1000 process: in a user namespace it made: {}; on the host: {}",
                inside.as_ref().map_or_else(|e| e.clone(), |()| "works".into()),
                outside.as_ref().map_or_else(|e| e.clone(), |()| "works".into())
            ),
            "unprivileged containers whose services run as another user than root cannot be checkpointed either",
        ));
    }
    rows
}

/// Whether the kernel takes seccomp filters that return an errno.
fn seccomp_support() -> (bool, String) {
    // SAFETY: prctl and seccomp with integer and pointer-to-local arguments only.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if mode < 0 {
        return (false, format!("prctl(PR_GET_SECCOMP): {}", std::io::Error::last_os_error()));
    }
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from a pointer to a live local.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0u32, &action as *const u32) };
    if rc != 0 {
        return (false, format!("SECCOMP_RET_ERRNO not available: {}", std::io::Error::last_os_error()));
    }
    (true, "filter mode with errno actions".into())
}

/// `criu check --feature NAME` succeeds.
fn criu_feature(criu: &Path, name: &str) -> bool {
    std::process::Command::new(criu)
        .args(["check", "--feature", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// How to get a CRIU ferry can use, printed under the table when it lacks one.
const GET_CRIU: &str = "CRIU 4.2+ on Debian 12 or 13: run ferry-install-criu as root. It adds Debian's trixie and sid \
suites to apt's sources, pinned at priority 100 and 50 so that nothing else upgrades from them by itself, and installs \
criu and iptables from trixie, then criu from sid (see /usr/share/doc/ferry/README.Debian; from ferry's source tree: \
scripts/install-deps.sh). Elsewhere: CRIU 4.2 or newer from your distribution or https://criu.org.";

/// Whether capability number `cap` is in this process's bounding set.
pub fn has_cap_in_bounding_set(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    bounding_set_has(&status, cap)
}

fn bounding_set_has(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << cap) != 0)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(tool).exists())
}

/// Cgroup mode and controllers from a cgroupfs root: v2 if the root has `cgroup.controllers`,
/// else the v1 hierarchies mounted under it.
pub fn cgroup_row(root: &Path) -> CheckRow {
    let without = "no resource limits and no freezer: checkpoint relies on CRIU's own seize";
    if let Ok(c) = std::fs::read_to_string(root.join("cgroup.controllers")) {
        let ctrls = c.split_whitespace().collect::<Vec<_>>().join(" ");
        let ok = ["cpu", "memory", "pids"].iter().all(|n| ctrls.split(' ').any(|c| c == *n));
        return row("cgroups", ok, format!("v2: {ctrls}"), without);
    }
    let mut v1: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok()).filter(|e| e.path().join("tasks").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    v1.sort();
    let unified = root.join("unified/cgroup.controllers");
    let mut detail = format!("v1: {}", v1.join(" "));
    if let Ok(u) = std::fs::read_to_string(&unified) {
        detail.push_str(&format!("; v2 at unified: {}", u.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let ok = ["memory", "freezer", "pids"].iter().all(|n| v1.iter().any(|c| c == n || c.split(',').any(|p| p == *n)));
    row("cgroups", ok && !v1.is_empty(), detail, without)
}

/// The layout ferry uses on this host (`FERRY_CGROUP_MODE` resolved) and the limits its
/// cgroups cannot enforce there, which `create` and `set` refuse.
pub fn cgroup_mode_rows(layout: crate::Result<(crate::cgroups::CgroupLayout, Vec<String>)>) -> Vec<CheckRow> {
    let (l, controllers) = match layout {
        Ok(x) => x,
        Err(e) => return vec![row("cgroup mode", false, e.to_string(), "containers cannot start: no cgroup for them")],
    };
    let have = if controllers.is_empty() { "none".to_string() } else { controllers.join(" ") };
    let mut rows = vec![row("cgroup mode", true, format!("{l}; controllers: {have}"), "")];
    let missing = crate::cgroups::limits::unavailable_limits(l.mode, &controllers);
    let mut by_controller: Vec<(&str, Vec<&str>)> = Vec::new();
    for (limit, ctl) in &missing {
        match by_controller.iter_mut().find(|(c, _)| c == ctl) {
            Some((_, v)) => v.push(limit),
            None => by_controller.push((ctl, vec![limit])),
        }
    }
    let detail = if missing.is_empty() {
        "every limit has its controller".to_string()
    } else {
        format!("no controller for: {}", by_controller.iter().map(|(c, l)| format!("{} ({c})", l.join(", "))).collect::<Vec<_>>().join("; "))
    };
    rows.push(row(
        "resource limits",
        missing.is_empty(),
        detail,
        "create and set refuse these limits (numfiles and diskspace need no controller and work)",
    ));
    rows
}

/// The table of `ferry check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostCheck {
    pub rows: Vec<CheckRow>,
    /// The isolation a container gets when nothing is granted (docs/runtime.md).
    pub default_isolation: std::result::Result<crate::isolation::Summary, String>,
    /// What to do about what is missing (printed under the table).
    pub advice: Vec<String>,
}

impl std::fmt::Display for HostCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w0 = self.rows.iter().map(|r| r.feature.len()).max().unwrap_or(7).max(7);
        let w2 = self.rows.iter().map(|r| r.detail.len()).max().unwrap_or(6).clamp(6, 60);
        writeln!(f, "{:<w0$}  {:<7}  {:<w2$}  WITHOUT IT", "FEATURE", "STATUS", "DETAIL")?;
        for r in &self.rows {
            let st = match r.status {
                Status::Ok => "ok",
                Status::Missing => "MISSING",
            };
            let without = if r.status == Status::Ok { "-" } else { r.without.as_str() };
            writeln!(f, "{:<w0$}  {:<7}  {:<w2$}  {}", r.feature, st, r.detail, without)?;
        }
        match &self.default_isolation {
            Ok(s) => writeln!(f, "\nisolation of a container by default (grants: --capability, --seccomp, --features):\n{s}"),
            Err(e) => writeln!(f, "\nisolation: the default cannot be built: {e}"),
        }?;
        for a in &self.advice {
            writeln!(f, "\n{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounding_set_bits() {
        let status = "Name:\tx\nCapBnd:\t000001fffeffffff\n";
        assert!(!bounding_set_has(status, 24), "CAP_SYS_RESOURCE is the cleared bit");
        assert!(bounding_set_has(status, 21) && bounding_set_has(status, 0));
        assert!(!bounding_set_has("Name:\tx\n", 0));
    }

    #[test]
    fn cgroup_modes_from_fake_trees() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let r = cgroup_row(d.path());
        assert_eq!(r.status, Status::Ok);
        assert!(r.detail.starts_with("v2: cpuset cpu io memory pids"));

        let d = tempfile::tempdir().unwrap();
        for c in ["memory", "freezer", "pids", "cpu,cpuacct"] {
            std::fs::create_dir(d.path().join(c)).unwrap();
            std::fs::write(d.path().join(c).join("tasks"), "").unwrap();
        }
        let r = cgroup_row(d.path());
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.detail, "v1: cpu,cpuacct freezer memory pids");
    }

    #[test]
    fn cgroup_mode_rows_name_each_limit_and_its_missing_controller() {
        use crate::cgroups::{CgroupLayout, CgroupMode, CgroupModeSetting};
        let l = CgroupLayout { mode: CgroupMode::V2, root: "/sys/fs/cgroup/unified".into(), setting: CgroupModeSetting::V2 };
        let rows = cgroup_mode_rows(Ok((l.clone(), vec!["hugetlb".into()])));
        assert_eq!(rows[0].status, Status::Ok);
        assert!(rows[0].detail.contains("/sys/fs/cgroup/unified") && rows[0].detail.contains("controllers: hugetlb"), "{:?}", rows[0]);
        assert_eq!(rows[1].status, Status::Missing);
        for want in ["cpuunits, cpulimit, cpus (cpu)", "ram, swap (memory)", "numproc (pids)", "ioprio, iolimit, iopslimit (io)", "cpumask (cpuset)"]
        {
            assert!(rows[1].detail.contains(want), "{want}: {}", rows[1].detail);
        }
        let all: Vec<String> = crate::cgroups::V2_CONTROLLERS.iter().map(|c| c.to_string()).collect();
        let rows = cgroup_mode_rows(Ok((l, all)));
        assert_eq!(rows[1].status, Status::Ok);
        let rows = cgroup_mode_rows(Err(crate::Error::Cgroup("no cgroup2 filesystem is mounted".into())));
        assert_eq!((rows.len(), rows[0].status), (1, Status::Missing));
    }

    #[test]
    fn table_shows_fallback_only_when_missing() {
        let t = HostCheck {
            rows: vec![row("a", true, "fine", "plan A"), row("soft-dirty", false, "off", "one full dump")],
            default_isolation: Err("none".into()),
            advice: vec![],
        };
        let s = t.to_string();
        let advised = HostCheck { rows: t.rows.clone(), default_isolation: Err("none".into()), advice: vec![GET_CRIU.into()] }.to_string();
        assert!(advised.starts_with(&s) && advised.contains("\n\nCRIU 4.2+ on Debian 12 or 13: run ferry-install-criu"), "{advised}");
        assert!(s.contains("MISSING"));
        assert!(s.contains("one full dump"));
        assert!(!s.contains("plan A"));
    }
}
