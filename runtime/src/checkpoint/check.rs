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

/// The whole table. `work_dir` receives CRIU's check log.
pub fn host_check(work_dir: &Path) -> HostCheck {
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
        "CRIU cannot read the limits of processes running as another user than root: containers whose services drop privileges (postgres, nginx workers, ...) cannot be checkpointed or live-migrated",
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
    let advice = if matches!(&version, Ok(v) if v.at_least(MIN_VERSION)) { Vec::new() } else { vec![GET_CRIU.to_owned()] };
    HostCheck { rows, advice }
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

/// The table of `ferry check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostCheck {
    pub rows: Vec<CheckRow>,
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
    fn table_shows_fallback_only_when_missing() {
        let t = HostCheck { rows: vec![row("a", true, "fine", "plan A"), row("soft-dirty", false, "off", "one full dump")], advice: vec![] };
        let s = t.to_string();
        let advised = HostCheck { rows: t.rows.clone(), advice: vec![GET_CRIU.into()] }.to_string();
        assert!(advised.starts_with(&s) && advised.contains("\n\nCRIU 4.2+ on Debian 12 or 13: run ferry-install-criu"), "{advised}");
        assert!(s.contains("MISSING"));
        assert!(s.contains("one full dump"));
        assert!(!s.contains("plan A"));
    }
}
