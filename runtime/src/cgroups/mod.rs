//! Control groups: one handle ([`Cgroup`]) over a v1 and a v2 backend chosen at run time by
//! what the host mounts, and a freezer. Everything takes a cgroupfs root so unit tests can
//! point it at a fake directory tree.
//!
//! Resource limits are translated to cgroup file writes by the pure functions in [`limits`],
//! which both backends apply; reading usage back is [`Cgroup::stats`].

pub mod bpf_devices;
pub mod devices;
pub mod limits;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use devices::DeviceRule;

/// Where cgroupfs lives on a normal host.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 hierarchies ferry uses, each mounted at `<root>/<name>`.
pub const V1_CONTROLLERS: [&str; 8] = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"];

/// The v2 controllers ferry enables for its containers (when the host offers them).
pub const V2_CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "io", "memory", "pids"];

/// Which cgroup layout a host uses for the controllers ferry needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Separate v1 hierarchies (cpu, cpuacct, cpuset, memory, devices, freezer, blkio, pids).
    V1,
    /// The unified v2 hierarchy with those controllers enabled.
    V2,
}

/// Usage read back from a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupStats {
    /// Processes and threads.
    pub numproc: u64,
    pub cputime_ns: u64,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// One write into a cgroup file: which controller (v1 hierarchy name; ignored on v2), which
/// file, what value. Produced by [`limits`], applied by a backend in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

/// Facts about the host that limit translation needs (kept out of the pure functions' inputs
/// from the filesystem so they can be unit tested).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitContext {
    /// Number of online CPUs.
    pub ncpus: u32,
    /// `major:minor` of the block device holding the private area, for I/O limits.
    pub block_device: Option<(u32, u32)>,
    /// v1 `cpuset.mems` to write (the parent's); empty means "0".
    pub mems: String,
    /// v1 `cpuset.cpus` written when no cpumask is set (the parent's); empty means all CPUs.
    pub parent_cpus: String,
    /// Swap is accounted per cgroup (v1 `memory.memsw.*`, v2 `memory.swap.max` exist).
    pub memsw: bool,
    /// The I/O weight file this host has: v1 `blkio.bfq.weight`/`blkio.weight`, v2
    /// `io.bfq.weight`/`io.weight`; None when there is none.
    pub io_weight_file: Option<String>,
    /// The container's current unreclaimable memory (anon), when it runs; a `ram` below it is
    /// refused.
    pub memory_usage: Option<u64>,
}

/// v2 when `<root>/cgroup.controllers` exists (a pure v2 mount), v1 when the per-controller
/// hierarchies ferry needs are directories under `<root>`.
pub fn detect(root: &Path) -> Result<CgroupMode> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(CgroupMode::V2);
    }
    if ["memory", "pids", "freezer"].iter().all(|c| root.join(c).is_dir()) {
        return Ok(CgroupMode::V1);
    }
    Err(Error::Cgroup(format!(
        "no usable cgroup hierarchy under {}: expected cgroup v2 (cgroup.controllers) or v1 hierarchies memory, pids and freezer; mount cgroupfs there",
        root.display()
    )))
}

/// One container's cgroup: the cgroupfs root, the path relative to it, and the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    root: PathBuf,
    rel: String,
    mode: CgroupMode,
}

fn read_trim(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).map_err(|e| Error::Cgroup(format!("read {}: {e}", p.display())))
}

fn write_file(p: &Path, v: &str) -> Result<()> {
    std::fs::write(p, v).map_err(|e| Error::Cgroup(format!("write {v:?} to {}: {e}", p.display())))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Cgroup {
    pub fn new(root: impl Into<PathBuf>, rel: impl Into<String>, mode: CgroupMode) -> Self {
        Cgroup { root: root.into(), rel: rel.into().trim_matches('/').to_string(), mode }
    }

    /// The cgroup at `rel` under the host's cgroupfs, layout detected now.
    pub fn open(rel: impl Into<String>) -> Result<Self> {
        let root = PathBuf::from(DEFAULT_CGROUP_ROOT);
        let mode = detect(&root)?;
        Ok(Cgroup::new(root, rel, mode))
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }
    pub fn rel(&self) -> &str {
        &self.rel
    }
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The v1 hierarchies this host mounts (a missing one is skipped, not an error).
    fn v1_hierarchies(&self) -> Vec<&'static str> {
        V1_CONTROLLERS.iter().copied().filter(|c| self.root.join(c).is_dir()).collect()
    }

    /// The directory holding `controller`'s files (v2: the one unified directory).
    pub fn dir(&self, controller: &str) -> PathBuf {
        match self.mode {
            CgroupMode::V1 => self.root.join(controller).join(&self.rel),
            CgroupMode::V2 => self.root.join(&self.rel),
        }
    }

    /// Every directory that makes up this cgroup (one per v1 hierarchy, one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self.mode {
            CgroupMode::V1 => self.v1_hierarchies().iter().map(|c| self.dir(c)).collect(),
            CgroupMode::V2 => vec![self.dir("")],
        }
    }

    /// The `cgroup.procs` files a process writes itself into to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    /// Create the cgroup and any missing parents. On failure what was made is removed again.
    pub fn create(&self) -> Result<()> {
        let mut made: Vec<PathBuf> = Vec::new();
        let res = match self.mode {
            CgroupMode::V1 => self.create_v1(&mut made),
            CgroupMode::V2 => self.create_v2(&mut made),
        };
        if res.is_err() {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
        res
    }

    fn create_v1(&self, made: &mut Vec<PathBuf>) -> Result<()> {
        for ctl in self.v1_hierarchies() {
            let mut cur = self.root.join(ctl);
            for comp in self.rel.split('/').filter(|c| !c.is_empty()) {
                let parent = cur.clone();
                cur = cur.join(comp);
                if cur.is_dir() {
                    continue;
                }
                std::fs::create_dir(&cur).map_err(|e| Error::Cgroup(format!("create {}: {e}", cur.display())))?;
                made.push(cur.clone());
                if ctl == "cpuset" {
                    // A new cpuset starts empty and refuses tasks until it has CPUs and nodes.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = read_trim(&parent.join(f))?;
                        write_file(&cur.join(f), &v)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn create_v2(&self, made: &mut Vec<PathBuf>) -> Result<()> {
        let mut cur = self.root.clone();
        for comp in self.rel.split('/').filter(|c| !c.is_empty()) {
            self.enable_v2_controllers(&cur)?;
            cur = cur.join(comp);
            if !cur.is_dir() {
                std::fs::create_dir(&cur).map_err(|e| Error::Cgroup(format!("create {}: {e}", cur.display())))?;
                made.push(cur.clone());
            }
        }
        Ok(())
    }

    /// Enable in `dir`'s children every controller ferry uses that `dir` offers.
    fn enable_v2_controllers(&self, dir: &Path) -> Result<()> {
        let offered = read_trim(&dir.join("cgroup.controllers")).unwrap_or_default();
        let enabled = read_trim(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let want: Vec<String> = V2_CONTROLLERS.iter().filter(|c| offered.contains(c) && !enabled.contains(c)).map(|c| format!("+{c}")).collect();
        if want.is_empty() {
            return Ok(());
        }
        let mut all = enabled.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        all.extend(want.iter().map(|w| w[1..].to_string()));
        let p = dir.join("cgroup.subtree_control");
        // The kernel takes "+a +b" and keeps the rest; a fake cgroupfs just stores the text.
        if is_real_cgroupfs(dir) {
            write_file(&p, &want.join(" "))
        } else {
            write_file(&p, &all.join(" "))
        }
    }

    /// Move `pid` (and with it all its threads) into this cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for f in self.procs_files() {
            write_file(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Apply `res` as computed by [`limits`]: all or nothing (old values come back on failure).
    pub fn apply(&self, res: &crate::config::Resources, ctx: &LimitContext) -> Result<()> {
        let writes = match self.mode {
            CgroupMode::V1 => limits::v1_writes(res, ctx)?,
            CgroupMode::V2 => limits::v2_writes(res, ctx)?,
        };
        self.apply_writes(&writes)
    }

    /// Write each value in order; if one fails, write back the old values of those already
    /// changed (latest first) and return the failure.
    pub fn apply_writes(&self, writes: &[CgroupWrite]) -> Result<()> {
        let mut done: Vec<(PathBuf, String)> = Vec::new();
        for w in writes {
            let p = self.dir(w.controller).join(&w.file);
            let old = read_trim(&p);
            match write_file(&p, &w.value) {
                Ok(()) => {
                    if let Ok(old) = old {
                        done.push((p, old));
                    }
                }
                Err(e) => {
                    for (p, old) in done.iter().rev() {
                        if let Err(re) = write_file(p, &restore_value(p, old)) {
                            tracing::warn!("could not restore {}: {re}", p.display());
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Allow only `rules`: v1 writes the devices cgroup; v2 attaches an eBPF device program
    /// built from the same rules ([`bpf_devices`]), replacing one attached by an earlier call.
    /// A directory that is not a real cgroup2 filesystem (a test's fake tree) is skipped.
    pub fn set_device_policy(&self, rules: &[DeviceRule]) -> Result<()> {
        match self.mode {
            CgroupMode::V1 => {
                if !self.root.join("devices").is_dir() {
                    tracing::warn!("no devices cgroup hierarchy: device policy not enforced");
                    return Ok(());
                }
                for w in devices::v1_writes(rules) {
                    write_file(&self.dir("devices").join(&w.file), &w.value)?;
                }
                Ok(())
            }
            CgroupMode::V2 => {
                let dir = self.dir("");
                if !is_cgroup2(&dir) {
                    tracing::debug!("{} is not on cgroup2: device program not attached", dir.display());
                    return Ok(());
                }
                bpf_devices::apply(&dir, rules).map_err(|e| match e {
                    Error::Cgroup(m) => Error::Cgroup(format!("{}: device allowlist: {m}", self.rel)),
                    e => e,
                })
            }
        }
    }

    /// Freeze every process and wait until the kernel says they are frozen.
    pub fn freeze(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        match self.mode {
            CgroupMode::V1 => {
                let p = self.dir("freezer").join("freezer.state");
                loop {
                    write_file(&p, "FROZEN")?;
                    if read_trim(&p)? == "FROZEN" {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = write_file(&p, "THAWED");
                        return Err(Error::Cgroup(format!("{}: processes did not freeze within 10 s; thawed again", self.rel)));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            CgroupMode::V2 => {
                write_file(&self.dir("").join("cgroup.freeze"), "1")?;
                loop {
                    if self.is_frozen()? {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = write_file(&self.dir("").join("cgroup.freeze"), "0");
                        return Err(Error::Cgroup(format!("{}: processes did not freeze within 10 s; thawed again", self.rel)));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    pub fn thaw(&self) -> Result<()> {
        match self.mode {
            CgroupMode::V1 => write_file(&self.dir("freezer").join("freezer.state"), "THAWED"),
            CgroupMode::V2 => write_file(&self.dir("").join("cgroup.freeze"), "0"),
        }
    }

    pub fn is_frozen(&self) -> Result<bool> {
        match self.mode {
            CgroupMode::V1 => Ok(read_trim(&self.dir("freezer").join("freezer.state"))? == "FROZEN"),
            CgroupMode::V2 => {
                let ev = read_trim(&self.dir("").join("cgroup.events"))?;
                Ok(parse_keyed(&ev, "frozen") == Some(1))
            }
        }
    }

    /// Pids of every process in the cgroup (empty when it does not exist).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = match self.mode {
            CgroupMode::V1 => {
                let h = self.v1_hierarchies();
                let ctl = ["pids", "freezer", "memory"].into_iter().find(|c| h.contains(c)).unwrap_or("cpu");
                self.dir(ctl)
            }
            CgroupMode::V2 => self.dir(""),
        };
        let p = dir.join("cgroup.procs");
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::Cgroup(format!("read {}: {e}", p.display()))),
        }
    }

    /// Usage counters; a counter the host does not offer reads as 0.
    pub fn stats(&self) -> Result<CgroupStats> {
        let mut s = CgroupStats::default();
        match self.mode {
            CgroupMode::V1 => {
                s.numproc = read_u64(&self.dir("pids").join("pids.current"))
                    .unwrap_or_else(|| std::fs::read_to_string(self.dir("cpu").join("tasks")).map(|t| t.lines().count() as u64).unwrap_or(0));
                s.cputime_ns = read_u64(&self.dir("cpuacct").join("cpuacct.usage")).unwrap_or(0);
                s.memory_bytes = read_u64(&self.dir("memory").join("memory.usage_in_bytes")).unwrap_or(0);
                if let Some(memsw) = read_u64(&self.dir("memory").join("memory.memsw.usage_in_bytes")) {
                    s.swap_bytes = memsw.saturating_sub(s.memory_bytes);
                }
                if let Ok(t) = std::fs::read_to_string(self.dir("blkio").join("blkio.throttle.io_service_bytes")) {
                    (s.io_read_bytes, s.io_write_bytes) = parse_v1_io_service_bytes(&t);
                }
            }
            CgroupMode::V2 => {
                let d = self.dir("");
                s.numproc = read_u64(&d.join("pids.current"))
                    .unwrap_or_else(|| std::fs::read_to_string(d.join("cgroup.threads")).map(|t| t.lines().count() as u64).unwrap_or(0));
                if let Ok(t) = std::fs::read_to_string(d.join("cpu.stat")) {
                    s.cputime_ns = parse_keyed(&t, "usage_usec").unwrap_or(0).saturating_mul(1000);
                }
                s.memory_bytes = read_u64(&d.join("memory.current")).unwrap_or(0);
                s.swap_bytes = read_u64(&d.join("memory.swap.current")).unwrap_or(0);
                if let Ok(t) = std::fs::read_to_string(d.join("io.stat")) {
                    (s.io_read_bytes, s.io_write_bytes) = parse_v2_io_stat(&t);
                }
            }
        }
        Ok(s)
    }

    /// Send `sig` to every process in the cgroup (a frozen cgroup is thawed so SIGKILL lands),
    /// then for SIGKILL wait up to `wait` until it is empty.
    pub fn kill_all(&self, sig: nix::sys::signal::Signal, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        if sig == nix::sys::signal::Signal::SIGKILL && self.mode == CgroupMode::V2 {
            // v2 (5.14+) kills the whole cgroup at once, racing no fork.
            let k = self.dir("").join("cgroup.kill");
            if k.exists() && is_real_cgroupfs(&self.dir("")) {
                let _ = write_file(&k, "1");
            }
        }
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            for p in &pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), sig);
            }
            if sig == nix::sys::signal::Signal::SIGKILL && matches!(self.is_frozen(), Ok(true)) {
                let _ = self.thaw();
            }
            if sig != nix::sys::signal::Signal::SIGKILL {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Cgroup(format!(
                    "{}: processes {pids:?} still present after SIGKILL; check `ps` for processes stuck in D state",
                    self.rel
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove the cgroup's directories (not its parents), retrying while exiting tasks leave.
    pub fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(3);
        for d in self.dirs() {
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(Error::Cgroup(format!("remove {}: {e}; processes may still be in it (see its cgroup.procs)", d.display()))),
                }
            }
        }
        Ok(())
    }

    /// Remove an (empty) ancestor such as the host's cgroup parent; used by cleanup in tests
    /// and by hosts being torn down.
    pub fn remove_tree(&self) -> Result<()> {
        for d in self.dirs() {
            remove_cgroup_tree(&d)?;
        }
        Ok(())
    }
}

fn remove_cgroup_tree(d: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(d) else { return Ok(()) };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    match std::fs::remove_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Cgroup(format!("remove {}: {e}", d.display()))),
    }
}

/// Whether `dir` sits on a real cgroup filesystem (as opposed to a test's fake tree).
fn is_real_cgroupfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| {
            let t = s.filesystem_type();
            t == nix::sys::statfs::CGROUP2_SUPER_MAGIC || t == nix::sys::statfs::CGROUP_SUPER_MAGIC
        })
        .unwrap_or(false)
}

/// Whether `dir` sits on a cgroup2 filesystem (eBPF device programs attach only there).
fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC).unwrap_or(false)
}

/// Values some cgroup files print differ from what they accept back.
fn restore_value(p: &Path, old: &str) -> String {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name {
        // v1 prints the "unlimited" sentinel as a huge number; -1 means unlimited on write.
        "memory.limit_in_bytes" | "memory.memsw.limit_in_bytes" if old.parse::<u64>().map(|v| v > (1 << 62)).unwrap_or(false) => "-1".into(),
        _ => old.lines().next().unwrap_or("").to_string(),
    }
}

/// `key value` lines (cgroup.events, cpu.stat, memory.stat): the value of `key`.
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// Sum of Read and Write bytes over devices in v1 `blkio.throttle.io_service_bytes`.
pub fn parse_v1_io_service_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let v: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += v,
                "Write" => w += v,
                _ => {}
            }
        }
    }
    (r, w)
}

/// Sum of rbytes and wbytes over devices in v2 `io.stat`.
pub fn parse_v2_io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        for kv in l.split_whitespace().skip(1) {
            if let Some((k, v)) = kv.split_once('=') {
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => r += v,
                    "wbytes" => w += v,
                    _ => {}
                }
            }
        }
    }
    (r, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v2() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma\n").unwrap();
        std::fs::write(d.path().join("cgroup.subtree_control"), "").unwrap();
        d
    }

    #[test]
    fn detects_modes() {
        let v2 = fake_v2();
        assert_eq!(detect(v2.path()).unwrap(), CgroupMode::V2);
        let v1 = tempfile::tempdir().unwrap();
        for c in V1_CONTROLLERS {
            std::fs::create_dir(v1.path().join(c)).unwrap();
        }
        assert_eq!(detect(v1.path()).unwrap(), CgroupMode::V1);
        let none = tempfile::tempdir().unwrap();
        assert!(detect(none.path()).unwrap_err().to_string().contains("no usable cgroup"));
    }

    #[test]
    fn v2_create_enables_controllers_on_every_level() {
        let d = fake_v2();
        let cg = Cgroup::new(d.path(), "hostA/ferry/101", CgroupMode::V2);
        // The fake kernel offers the same controllers on the intermediate levels.
        cg.create().unwrap();
        assert!(d.path().join("hostA/ferry/101").is_dir());
        let top = std::fs::read_to_string(d.path().join("cgroup.subtree_control")).unwrap();
        for c in ["cpu", "cpuset", "io", "memory", "pids"] {
            assert!(top.split_whitespace().any(|x| x == c), "{c} in {top}");
        }
        assert!(!top.contains("rdma"));
        assert_eq!(cg.procs_files(), vec![d.path().join("hostA/ferry/101/cgroup.procs")]);
    }

    #[test]
    fn v2_add_pid_stats_freeze_and_destroy() {
        let d = fake_v2();
        let cg = Cgroup::new(d.path(), "ferry/7", CgroupMode::V2);
        cg.create().unwrap();
        let dir = d.path().join("ferry/7");
        cg.add_pid(4242).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "4242");
        assert_eq!(cg.pids().unwrap(), vec![4242]);
        std::fs::write(dir.join("pids.current"), "3\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n").unwrap();
        std::fs::write(dir.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(dir.join("io.stat"), "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n").unwrap();
        let s = cg.stats().unwrap();
        assert_eq!((s.numproc, s.cputime_ns, s.memory_bytes, s.io_read_bytes, s.io_write_bytes), (3, 1_500_000, 1 << 20, 101, 22));

        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        cg.freeze().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
        assert!(cg.is_frozen().unwrap());
        cg.thaw().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");

        // A fake directory holds plain files, so rmdir fails until they are gone: the error
        // names the path.
        assert!(cg.destroy().unwrap_err().to_string().contains("ferry/7"));
        std::fs::remove_dir_all(&dir).unwrap();
        cg.destroy().unwrap();
        assert!(!cg.exists());
    }

    #[test]
    fn v2_device_policy_on_a_fake_tree_is_skipped() {
        let d = fake_v2();
        let cg = Cgroup::new(d.path(), "ferry/9", CgroupMode::V2);
        cg.create().unwrap();
        cg.set_device_policy(&devices::default_rules()).unwrap();
        assert!(!is_cgroup2(&d.path().join("ferry/9")));
    }

    #[test]
    fn apply_writes_rolls_back_on_failure() {
        let d = fake_v2();
        let cg = Cgroup::new(d.path(), "ferry/8", CgroupMode::V2);
        cg.create().unwrap();
        let dir = d.path().join("ferry/8");
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("pids.max"), "max\n").unwrap();
        let w = |f: &str, v: &str| CgroupWrite { controller: "memory", file: f.into(), value: v.into() };
        let writes = vec![w("memory.max", "1000"), w("pids.max", "10"), w("no/such/file", "1")];
        assert!(cg.apply_writes(&writes).is_err());
        assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap(), "max");
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "max");
        cg.apply_writes(&writes[..2]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "10");
    }

    #[test]
    fn v1_paths_per_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "freezer", "cpuset"] {
            std::fs::create_dir(d.path().join(c)).unwrap();
        }
        std::fs::write(d.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(d.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let cg = Cgroup::new(d.path(), "/p/1/", CgroupMode::V1);
        cg.create().unwrap();
        assert_eq!(cg.dirs().len(), 4);
        assert_eq!(std::fs::read_to_string(d.path().join("cpuset/p/1/cpuset.cpus")).unwrap(), "0-1");
        assert_eq!(std::fs::read_to_string(d.path().join("cpuset/p/cpuset.mems")).unwrap(), "0");
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_keyed("populated 1\nfrozen 0\n", "frozen"), Some(0));
        assert_eq!(parse_v1_io_service_bytes("254:0 Read 10\n254:0 Write 5\n254:0 Total 15\nTotal 15\n"), (10, 5));
    }
}
