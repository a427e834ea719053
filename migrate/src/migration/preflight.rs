//! The destination's checks before a migration changes anything. Each problem is one line that
//! says what is wrong and what to do; the source prints them all and leaves the container as it
//! was.

use ferry_runtime::{ContainerConfig, Ctid, Host};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// Facts about the destination host that the checks compare against (gathered by
/// [`gather`], or made up in unit tests).
#[derive(Debug, Clone)]
pub struct DestFacts {
    pub ctid_has_config: bool,
    pub ctid_has_private: bool,
    /// Addresses configured on this host's interfaces.
    pub host_addrs: Vec<IpAddr>,
    /// (CTID, address) of every other container on this host.
    pub container_addrs: Vec<(String, IpAddr)>,
    pub free_disk: u64,
    /// `Err(reason)` when CRIU is missing, too old or `criu check` fails.
    pub criu: Result<String, String>,
    /// `Err(reason)` when the source's cpuinfo does not fit this CPU.
    pub cpu: Result<(), String>,
    pub bridges_missing: Vec<String>,
    /// `Err(reason)` when this host's cgroups cannot enforce the container's limits (e.g. a
    /// cgroup v2 hierarchy without the memory controller and a `ram` limit).
    pub limits: Result<(), String>,
    /// `Err(reason)` when an unprivileged container cannot get a user ID range from this host's
    /// pool (it gets one, its own if free here, when its config is staged).
    pub userns: Result<(), String>,
}

impl Default for DestFacts {
    fn default() -> Self {
        DestFacts {
            ctid_has_config: false,
            ctid_has_private: false,
            host_addrs: Vec::new(),
            container_addrs: Vec::new(),
            free_disk: 0,
            criu: Ok(String::new()),
            cpu: Ok(()),
            bridges_missing: Vec::new(),
            limits: Ok(()),
            userns: Ok(()),
        }
    }
}

/// Every problem with migrating `cfg` here, given the facts; empty means go.
pub fn problems(cfg: &ContainerConfig, facts: &DestFacts, needed_disk: u64, online: bool, resuming: bool) -> Vec<String> {
    let ct = &cfg.ctid;
    let mut out = Vec::new();
    if facts.ctid_has_config {
        out.push(format!("container {ct} already exists on the destination; destroy it there or migrate under another CTID"));
    } else if facts.ctid_has_private && !resuming {
        out.push(format!(
            "the destination has a private area for {ct} but no config (left by an earlier attempt?); remove it there or retry with --keep-dst"
        ));
    }
    for ip in &cfg.net.ipadd {
        if facts.host_addrs.contains(ip) {
            out.push(format!("address {ip} of {ct} is already configured on a destination interface"));
        }
        for (other, a) in &facts.container_addrs {
            if a == ip && other != ct.as_str() {
                out.push(format!("address {ip} of {ct} is already used by container {other} on the destination"));
            }
        }
    }
    // Room for the files plus a margin for the image and metadata.
    let want = needed_disk + needed_disk / 10 + (64 << 20);
    if facts.free_disk < want {
        out.push(format!("not enough disk on the destination: {} MiB free, about {} MiB needed for {ct}", facts.free_disk >> 20, want >> 20));
    }
    if online {
        if let Err(e) = &facts.criu {
            out.push(format!("CRIU on the destination: {e}"));
        }
        if let Err(e) = &facts.cpu {
            out.push(format!("CPU of the destination cannot run the dumped tasks of {ct}: {e}; use --offline"));
        }
    }
    if let Err(e) = &facts.limits {
        out.push(format!("the destination cannot enforce the limits of {ct}: {e}"));
    }
    if let Err(e) = &facts.userns {
        out.push(format!("the destination cannot give {ct} a user ID range: {e}"));
    }
    for b in &facts.bridges_missing {
        out.push(format!("bridge {b} used by {ct} does not exist on the destination; create it there first"));
    }
    out
}

/// Read the facts from this host.
pub fn gather(host: &Host, cfg: &ContainerConfig, cpuinfo: &[u8], online: bool, work: &Path) -> DestFacts {
    let ct: &Ctid = &cfg.ctid;
    let mut f = DestFacts {
        ctid_has_config: host.config_path(ct).exists(),
        ctid_has_private: host.private_dir(ct).exists(),
        host_addrs: host_addresses(),
        free_disk: free_disk(&host.data_dir),
        criu: Ok(String::new()),
        cpu: Ok(()),
        limits: ferry_runtime::container::check_resources(host, &cfg.resources).map_err(|e| e.to_string()),
        userns: ferry_runtime::userns::pool::check_available(host, cfg).map_err(|e| e.to_string()),
        ..Default::default()
    };
    for other in host.list_ctids().unwrap_or_default() {
        if let Ok(c) = ContainerConfig::load(&host.config_path(&other)) {
            for a in c.net.ipadd {
                f.container_addrs.push((other.to_string(), a));
            }
        }
    }
    for nif in &cfg.net.netifs {
        if let Some(b) = &nif.bridge {
            if !ferry_runtime::net::tools::link_exists(b) {
                f.bridges_missing.push(b.clone());
            }
        }
    }
    if online {
        // Two CRIU runs of tens of milliseconds each: side by side. The CPU verdict only
        // counts when CRIU itself is usable.
        let (criu, cpu) = std::thread::scope(|sc| {
            let cpu = sc.spawn(|| if cpuinfo.is_empty() { Ok(()) } else { check_cpuinfo(cpuinfo, work).map_err(|e| e.to_string()) });
            (check_criu(work), cpu.join().unwrap_or(Ok(())))
        });
        f.criu = criu;
        if f.criu.is_ok() {
            f.cpu = cpu;
        }
    }
    f
}

fn host_addresses() -> Vec<IpAddr> {
    let Ok(out) = Command::new("ip").args(["-o", "addr", "show"]).output() else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|w| *w == "inet" || *w == "inet6")?;
            it.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// MemAvailable of this host, bytes (0 when /proc/meminfo does not say).
pub fn available_memory() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0) * 1024
}

pub fn free_disk(path: &Path) -> u64 {
    let mut p = path.to_path_buf();
    // The data dir may not exist yet on a fresh host: ask its nearest existing parent.
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    match nix::sys::statvfs::statvfs(&p) {
        Ok(s) => s.blocks_available() * s.fragment_size(),
        Err(_) => 0,
    }
}

fn check_criu(work: &Path) -> Result<String, String> {
    let criu = ferry_runtime::criu::Criu::new().map_err(|e| e.to_string())?;
    let v = criu.require_version().map_err(|e| e.to_string())?;
    criu.check(work).map_err(|e| format!("`criu check` fails: {e}"))?;
    Ok(v.to_string())
}

/// `criu cpuinfo check` against the source's cpuinfo image.
fn check_cpuinfo(cpuinfo: &[u8], work: &Path) -> crate::Result<()> {
    let dir = work.join("cpuinfo");
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io("create", &dir, e))?;
    let img = dir.join("cpuinfo.img");
    std::fs::write(&img, cpuinfo).map_err(|e| crate::Error::io("write", &img, e))?;
    let out = Command::new("criu")
        .args(["cpuinfo", "check", "-D"])
        .arg(&dir)
        .args(["-o", "cpuinfo-check.log", "-v4"])
        .output()
        .map_err(|e| crate::Error::io("run", "criu", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(crate::Error::Tool {
            cmd: "criu cpuinfo check".into(),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The source's cpuinfo image (`criu cpuinfo dump`), for the destination to check.
pub fn dump_cpuinfo(work: &Path) -> Vec<u8> {
    let dir = work.join("cpuinfo-src");
    if std::fs::create_dir_all(&dir).is_err() {
        return Vec::new();
    }
    let ok = Command::new("criu")
        .args(["cpuinfo", "dump", "-D"])
        .arg(&dir)
        .args(["-o", "cpuinfo-dump.log"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let data = if ok { std::fs::read(dir.join("cpuinfo.img")).unwrap_or_default() } else { Vec::new() };
    let _ = std::fs::remove_dir_all(&dir);
    data
}

/// Bytes the private area takes (allocated blocks, not apparent sizes). The container runs
/// meanwhile: its tree is walked through directory fds (`ferry_tree`), never following a
/// symlink it swaps in, and without recursion (a deep tree cannot exhaust the stack).
pub fn tree_size(root: &Path) -> u64 {
    let Ok(dir) = ferry_tree::Dir::open(root) else { return 0 };
    let mut sum = 0;
    let _ = ferry_tree::walk::walk(&dir, &mut |_, _| false, &mut |e| {
        if !e.rel.is_empty() {
            sum += e.stat.blocks * 512;
        }
        Ok(())
    });
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ContainerConfig {
        let mut c = ContainerConfig::new(Ctid::new("101").unwrap());
        c.net.ipadd = vec!["198.18.0.101".parse().unwrap()];
        c
    }

    fn roomy() -> DestFacts {
        DestFacts { free_disk: 10 << 30, ..Default::default() }
    }

    #[test]
    fn clean_destination_passes() {
        assert!(problems(&cfg(), &roomy(), 1 << 20, true, false).is_empty());
    }

    #[test]
    fn each_problem_is_named() {
        let mut f = roomy();
        f.ctid_has_config = true;
        f.host_addrs = vec!["198.18.0.101".parse().unwrap()];
        f.container_addrs = vec![("102".into(), "198.18.0.101".parse().unwrap())];
        f.free_disk = 10 << 20;
        f.criu = Err("criu 3.17 is too old".into());
        f.cpu = Err("no avx512".into());
        f.bridges_missing = vec!["br9".into()];
        f.limits = Err("ram needs the memory controller".into());
        f.userns = Err("the ID pool 1000000:65536 of this host has no free range".into());
        let p = problems(&cfg(), &f, 1 << 30, true, false).join("\n");
        for want in [
            "already exists",
            "configured on a destination interface",
            "used by container 102",
            "not enough disk",
            "too old",
            "no avx512",
            "br9",
            "cannot enforce the limits of 101: ram needs the memory controller",
            "cannot give 101 a user ID range: the ID pool",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
        // Offline migration does not need CRIU or a compatible CPU.
        let p = problems(&cfg(), &f, 0, false, false).join("\n");
        assert!(!p.contains("too old") && !p.contains("avx512"));
    }

    #[test]
    fn leftover_area_needs_keep_dst() {
        let mut f = roomy();
        f.ctid_has_private = true;
        assert_eq!(problems(&cfg(), &f, 0, true, false).len(), 1);
        assert!(problems(&cfg(), &f, 0, true, true).is_empty());
    }

    /// What the tree holds, not what its symlinks lead to (a running container may point one at
    /// the host's root).
    #[test]
    fn tree_size_counts_the_tree_not_where_its_symlinks_lead() {
        let d = tempfile::tempdir().unwrap();
        let (root, outside) = (d.path().join("root"), d.path().join("outside"));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![1u8; 64 << 10]).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 8 << 20]).unwrap();
        let before = tree_size(&root);
        assert!((64 << 10..1 << 20).contains(&before), "{before}");
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        let after = tree_size(&root);
        assert!(after < 1 << 20, "the walk followed a symlink: {after}");
    }
}
