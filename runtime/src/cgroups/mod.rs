//! Control groups: one handle ([`Cgroup`]) over a v1 and a v2 backend, the layout chosen per
//! host ([`layout`]: `FERRY_CGROUP_MODE` against what the kernel mounts), and the freezer
//! ([`freezer`]). Every file operation goes through [`fs::CgroupFs`], so unit tests run the
//! backend against a fake kernel that keeps the kernel's rules.
//!
//! Resource limits are translated to cgroup file writes by the pure functions in [`limits`],
//! which both backends apply; reading usage back is [`Cgroup::stats`]. A limit whose controller
//! the container's cgroup cannot have (a hybrid host's v2 hierarchy offers almost none) is
//! refused, never skipped: see [`limits::check_controllers`].

pub mod bpf_devices;
pub mod devices;
#[cfg(test)]
pub mod fake;
pub mod freezer;
pub mod fs;
pub mod layout;
pub mod limits;
pub mod nofile;
pub mod probe;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use devices::DeviceRule;
pub use freezer::{Freezer, FrozenGuard};
pub use fs::{CgroupFs, RealFs};
pub use layout::{detect, host_layout, CgroupLayout, CgroupModeSetting};

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

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
        }
    }
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

/// One write into a cgroup file: which controller (v1 hierarchy name, or the v2 controller the
/// file belongs to), which file, what value. Produced by [`limits`], applied by a backend in
/// order.
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
    /// The controllers the container's cgroup has (v1 hierarchy names, v2 controller names):
    /// writes for the others are left out, and a limit that needs one of them is refused.
    pub controllers: Vec<String>,
}

/// One container's cgroup: the cgroupfs it lives on, the root (the directory holding the v1
/// hierarchies, or the cgroup2 mount point), the path relative to it, and the layout.
#[derive(Debug, Clone)]
pub struct Cgroup {
    fs: Arc<dyn CgroupFs>,
    root: PathBuf,
    rel: String,
    mode: CgroupMode,
}

impl PartialEq for Cgroup {
    fn eq(&self, o: &Self) -> bool {
        (&self.root, &self.rel, self.mode) == (&o.root, &o.rel, o.mode)
    }
}
impl Eq for Cgroup {}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::Cgroup(format!("{what} {}: {e}", p.display()))
}

impl Cgroup {
    /// The cgroup at `rel` under `root` on the kernel's cgroupfs.
    pub fn new(root: impl Into<PathBuf>, rel: impl Into<String>, mode: CgroupMode) -> Self {
        Cgroup::with_fs(Arc::new(RealFs), root, rel, mode)
    }

    /// The cgroup at `rel` under `root` on the cgroupfs `fs` (a fake one in unit tests).
    pub fn with_fs(fs: Arc<dyn CgroupFs>, root: impl Into<PathBuf>, rel: impl Into<String>, mode: CgroupMode) -> Self {
        Cgroup { fs, root: root.into(), rel: rel.into().trim_matches('/').to_string(), mode }
    }

    /// The cgroup at `rel` in a resolved host layout.
    pub fn in_layout(layout: &CgroupLayout, rel: impl Into<String>) -> Self {
        Cgroup::new(layout.root.clone(), rel, layout.mode)
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
    pub fn fs(&self) -> &Arc<dyn CgroupFs> {
        &self.fs
    }

    /// The same layout and filesystem, another relative path (e.g. the parent).
    pub fn sibling(&self, rel: impl Into<String>) -> Cgroup {
        Cgroup::with_fs(self.fs.clone(), self.root.clone(), rel, self.mode)
    }

    fn read(&self, p: &Path) -> Result<String> {
        self.fs.read(p).map(|s| s.trim().to_string()).map_err(|e| io_err("read", p, e))
    }

    fn write(&self, p: &Path, v: &str) -> Result<()> {
        self.fs.write(p, v).map_err(|e| Error::Cgroup(format!("write {v:?} to {}: {e}", p.display())))
    }

    fn read_u64(&self, p: &Path) -> Option<u64> {
        self.fs.read(p).ok()?.trim().parse().ok()
    }

    /// The v1 hierarchies this host mounts (a missing one is skipped, not an error).
    fn v1_hierarchies(&self) -> Vec<&'static str> {
        V1_CONTROLLERS.iter().copied().filter(|c| self.fs.is_dir(&self.root.join(c))).collect()
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
        self.dirs().iter().any(|d| self.fs.is_dir(d))
    }

    /// The controllers this cgroup has, or will have once [`Cgroup::create`] made it: v1 the
    /// hierarchies mounted; v2 what its nearest existing ancestor (or itself) offers, since
    /// create enables those on the way down.
    pub fn controllers(&self) -> Vec<String> {
        match self.mode {
            CgroupMode::V1 => self.v1_hierarchies().iter().map(|c| c.to_string()).collect(),
            CgroupMode::V2 => {
                let own = self.dir("");
                let mut dirs: Vec<&Path> = own.ancestors().take_while(|d| d.starts_with(&self.root)).collect();
                dirs.retain(|d| self.fs.is_dir(d));
                dirs.first()
                    .and_then(|d| self.fs.read(&d.join("cgroup.controllers")).ok())
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default()
            }
        }
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
                let _ = self.fs.rmdir(d);
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
                if self.fs.is_dir(&cur) {
                    continue;
                }
                self.fs.mkdir(&cur).map_err(|e| io_err("create", &cur, e))?;
                made.push(cur.clone());
                if ctl == "cpuset" {
                    // A new cpuset starts empty and refuses tasks until it has CPUs and nodes.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = self.read(&parent.join(f))?;
                        self.write(&cur.join(f), &v)?;
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
            if !self.fs.is_dir(&cur) {
                self.fs.mkdir(&cur).map_err(|e| io_err("create", &cur, e))?;
                made.push(cur.clone());
            }
        }
        Ok(())
    }

    /// Enable in `dir`'s children every controller ferry uses that `dir` offers. The kernel
    /// takes `+name` tokens and refuses (EBUSY) while `dir` itself holds processes, unless it
    /// is the root: v2 allows processes only in leaves once controllers are enabled.
    fn enable_v2_controllers(&self, dir: &Path) -> Result<()> {
        let offered = self.fs.read(&dir.join("cgroup.controllers")).unwrap_or_default();
        let enabled = self.fs.read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let want: Vec<String> =
            offered.split_whitespace().filter(|c| V2_CONTROLLERS.contains(c) && !enabled.contains(c)).map(|c| format!("+{c}")).collect();
        if want.is_empty() {
            return Ok(());
        }
        let p = dir.join("cgroup.subtree_control");
        match self.fs.write(&p, &want.join(" ")) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(Error::Cgroup(format!(
                "cannot enable controllers ({}) in {}: it holds processes itself, and cgroup v2 allows processes only in leaf \
                 cgroups once controllers are enabled: choose a cgroup parent that holds no processes (FERRY_CGROUP_PARENT, --cgroup-parent)",
                want.join(" "),
                dir.display()
            ))),
            Err(e) => Err(Error::Cgroup(format!("write {:?} to {}: {e}", want.join(" "), p.display()))),
        }
    }

    /// Move `pid` (and with it all its threads) into this cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for f in self.procs_files() {
            self.write(&f, &pid.to_string())?;
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
            let old = self.read(&p);
            match self.write(&p, &w.value) {
                Ok(()) => {
                    if let Ok(old) = old {
                        done.push((p, old));
                    }
                }
                Err(e) => {
                    for (p, old) in done.iter().rev() {
                        if let Err(re) = self.write(p, &restore_value(p, old)) {
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
    /// A v1 host without a devices hierarchy cannot enforce a policy: that is refused.
    pub fn set_device_policy(&self, rules: &[DeviceRule]) -> Result<()> {
        match self.mode {
            CgroupMode::V1 => {
                if !self.fs.is_dir(&self.root.join("devices")) {
                    return Err(Error::Cgroup(format!(
                        "{}: no devices cgroup hierarchy under {}: the device allowlist cannot be enforced; mount it, or use cgroup mode v2 \
                         (FERRY_CGROUP_MODE)",
                        self.rel,
                        self.root.display()
                    )));
                }
                for w in devices::v1_writes(rules) {
                    self.write(&self.dir("devices").join(&w.file), &w.value)?;
                }
                Ok(())
            }
            CgroupMode::V2 => self.fs.set_device_program(&self.dir(""), rules).map_err(|e| match e {
                Error::Cgroup(m) => Error::Cgroup(format!("{}: device allowlist: {m}", self.rel)),
                e => e,
            }),
        }
    }

    /// This cgroup's freezer (v1: in the freezer hierarchy; v2: the cgroup itself).
    pub fn freezer(&self) -> Freezer {
        Freezer::new(self.fs.clone(), self.dir("freezer"), self.mode)
    }

    /// Pids of every process in the cgroup and in the cgroups below it (a system container's
    /// systemd makes some), empty when it does not exist.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = match self.mode {
            CgroupMode::V1 => {
                let h = self.v1_hierarchies();
                let ctl = ["pids", "freezer", "memory"].into_iter().find(|c| h.contains(c)).unwrap_or("cpu");
                self.dir(ctl)
            }
            CgroupMode::V2 => self.dir(""),
        };
        let mut pids = Vec::new();
        for d in self.subtree(&dir) {
            let p = d.join("cgroup.procs");
            match self.fs.read(&p) {
                Ok(s) => pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &p, e)),
            }
        }
        Ok(pids)
    }

    /// `dir` and every cgroup directory below it, parents before their children.
    fn subtree(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![dir.to_path_buf()];
        let mut i = 0;
        while i < out.len() {
            let below = self.fs.subdirs(&out[i]);
            out.extend(below);
            i += 1;
        }
        out
    }

    /// Usage counters; a counter the host does not offer reads as 0.
    pub fn stats(&self) -> Result<CgroupStats> {
        let mut s = CgroupStats::default();
        let text = |p: PathBuf| self.fs.read(&p).ok();
        match self.mode {
            CgroupMode::V1 => {
                s.numproc = self
                    .read_u64(&self.dir("pids").join("pids.current"))
                    .unwrap_or_else(|| text(self.dir("cpu").join("tasks")).map(|t| t.lines().count() as u64).unwrap_or(0));
                s.cputime_ns = self.read_u64(&self.dir("cpuacct").join("cpuacct.usage")).unwrap_or(0);
                s.memory_bytes = self.read_u64(&self.dir("memory").join("memory.usage_in_bytes")).unwrap_or(0);
                if let Some(memsw) = self.read_u64(&self.dir("memory").join("memory.memsw.usage_in_bytes")) {
                    s.swap_bytes = memsw.saturating_sub(s.memory_bytes);
                }
                if let Some(t) = text(self.dir("blkio").join("blkio.throttle.io_service_bytes")) {
                    (s.io_read_bytes, s.io_write_bytes) = parse_v1_io_service_bytes(&t);
                }
            }
            CgroupMode::V2 => {
                let d = self.dir("");
                // Without the pids controller: threads listed in cgroup.threads.
                s.numproc = self.read_u64(&d.join("pids.current")).unwrap_or_else(|| {
                    self.subtree(&d).into_iter().filter_map(|sub| text(sub.join("cgroup.threads"))).map(|t| t.lines().count() as u64).sum()
                });
                if let Some(t) = text(d.join("cpu.stat")) {
                    s.cputime_ns = parse_keyed(&t, "usage_usec").unwrap_or(0).saturating_mul(1000);
                }
                s.memory_bytes = self.read_u64(&d.join("memory.current")).unwrap_or(0);
                s.swap_bytes = self.read_u64(&d.join("memory.swap.current")).unwrap_or(0);
                if let Some(t) = text(d.join("io.stat")) {
                    (s.io_read_bytes, s.io_write_bytes) = parse_v2_io_stat(&t);
                }
            }
        }
        Ok(s)
    }

    /// The file whose change notifications say the cgroup's processes changed (v2), polled
    /// otherwise.
    fn events_file(&self) -> PathBuf {
        self.dirs().into_iter().next().unwrap_or_else(|| self.dir("")).join("cgroup.events")
    }

    /// Send `sig` to every process in the cgroup; for SIGKILL wait up to `wait` until it is
    /// empty. v2 kills through `cgroup.kill` (5.14+: the whole subtree at once, racing no
    /// fork); v1 signals each listed process and thaws a frozen cgroup, since a v1-frozen task
    /// only dies once it runs again.
    pub fn kill_all(&self, sig: nix::sys::signal::Signal, wait: Duration) -> Result<()> {
        let killing = sig == nix::sys::signal::Signal::SIGKILL;
        let deadline = Instant::now() + wait;
        if killing && self.mode == CgroupMode::V2 {
            let k = self.dir("").join("cgroup.kill");
            if self.fs.exists(&k) {
                self.write(&k, "1")?;
            }
        }
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            for p in &pids {
                let _ = self.fs.kill(*p, sig);
            }
            if !killing {
                return Ok(());
            }
            if self.mode == CgroupMode::V1 && matches!(self.freezer().is_requested(), Ok(true)) {
                let _ = self.freezer().thaw();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Cgroup(format!(
                    "{}: processes {pids:?} still present after SIGKILL; check `ps` for processes stuck in D state",
                    self.rel
                )));
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            if self.fs.wait_until(&self.events_file(), step, &mut || self.pids().map(|p| p.is_empty()).unwrap_or(true)) {
                return Ok(());
            }
        }
    }

    /// Remove the cgroup's directories and the cgroups below them (not its parents), deepest
    /// first, waiting while exiting tasks leave (the kernel refuses with EBUSY until a cgroup
    /// is no longer populated).
    pub fn destroy(&self) -> Result<()> {
        let mut all: Vec<PathBuf> = self.dirs().iter().flat_map(|d| self.subtree(d)).collect();
        all.reverse();
        for d in all {
            let mut failure: Option<std::io::Error> = None;
            let done = self.fs.wait_until(&d.join("cgroup.events"), Duration::from_secs(3), &mut || match self.fs.rmdir(&d) {
                Ok(()) => {
                    failure = None;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    failure = None;
                    true
                }
                Err(e) => {
                    let busy = e.raw_os_error() == Some(libc::EBUSY);
                    failure = Some(e);
                    !busy
                }
            });
            if !done || failure.is_some() {
                let e = failure.map(|e| e.to_string()).unwrap_or_else(|| "timed out".into());
                return Err(Error::Cgroup(format!(
                    "remove {}: {e}; processes or child cgroups may still be in it (see its cgroup.procs)",
                    d.display()
                )));
            }
        }
        Ok(())
    }

    /// Remove this cgroup and every (empty) cgroup below it, e.g. the host's cgroup parent;
    /// used by cleanup in tests and by hosts being torn down.
    pub fn remove_tree(&self) -> Result<()> {
        for d in self.dirs() {
            self.remove_dir_tree(&d)?;
        }
        Ok(())
    }

    fn remove_dir_tree(&self, d: &Path) -> Result<()> {
        for sub in self.fs.subdirs(d) {
            self.remove_dir_tree(&sub)?;
        }
        match self.fs.rmdir(d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", d, e)),
        }
    }
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
    use super::fake::FakeKernel;
    use super::*;
    use nix::sys::signal::Signal;

    const ALL_V2: [&str; 7] = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"];

    fn v2(offered: &[&str]) -> (Arc<FakeKernel>, PathBuf) {
        let root = PathBuf::from("/fake/cgroup2");
        (Arc::new(FakeKernel::v2(&root, offered, true)), root)
    }

    fn cg(k: &Arc<FakeKernel>, root: &Path, rel: &str, mode: CgroupMode) -> Cgroup {
        Cgroup::with_fs(k.clone(), root, rel, mode)
    }

    fn read(k: &FakeKernel, p: &Path) -> String {
        k.read(p).unwrap().trim().to_string()
    }

    #[test]
    fn v2_create_enables_controllers_on_every_level() {
        let (k, root) = v2(&ALL_V2);
        let c = cg(&k, &root, "hostA/ferry/101", CgroupMode::V2);
        c.create().unwrap();
        assert!(k.is_dir(&root.join("hostA/ferry/101")));
        for level in ["", "hostA", "hostA/ferry"] {
            let enabled = read(&k, &root.join(level).join("cgroup.subtree_control"));
            for ctl in V2_CONTROLLERS {
                assert!(enabled.split_whitespace().any(|x| x == ctl), "{ctl} in {level:?}: {enabled}");
            }
            assert!(!enabled.contains("rdma") && !enabled.contains("hugetlb"), "{enabled}");
        }
        let mut have = c.controllers();
        have.sort();
        assert_eq!(have, ["cpu", "cpuset", "io", "memory", "pids"]);
        assert!(k.exists(&root.join("hostA/ferry/101/memory.max")));
        assert_eq!(c.procs_files(), vec![root.join("hostA/ferry/101/cgroup.procs")]);
        // Creating it again changes nothing and fails nothing.
        c.create().unwrap();
    }

    #[test]
    fn v2_on_a_hybrid_host_has_no_controllers_and_refuses_limits() {
        // This project's hosts: the unified hierarchy offers hugetlb only.
        let (k, root) = v2(&["hugetlb"]);
        let c = cg(&k, &root, "ferry/101", CgroupMode::V2);
        assert!(c.controllers().contains(&"hugetlb".to_string()), "offered by the root before create");
        c.create().unwrap();
        assert_eq!(read(&k, &root.join("cgroup.subtree_control")), "", "hugetlb is not ferry's to enable");
        assert!(c.controllers().is_empty());
        // No controller files: a write to one fails instead of creating a plain file.
        let e = c.apply_writes(&[CgroupWrite { controller: "memory", file: "memory.max".into(), value: "1000".into() }]).unwrap_err();
        assert!(e.to_string().contains("memory.max"), "{e}");
        // The unlimited defaults need no controller: nothing is written, nothing fails.
        let ctx = LimitContext { ncpus: 2, controllers: c.controllers(), ..Default::default() };
        c.apply(&crate::config::Resources::default(), &ctx).unwrap();
        let res = crate::config::Resources { ram: Some(64 << 20), numfiles: Some(100), ..Default::default() };
        let e = c.apply(&res, &ctx).unwrap_err().to_string();
        assert!(e.contains("ram") && e.contains("memory controller") && e.contains("cgroup v2"), "{e}");
    }

    #[test]
    fn v2_refuses_processes_in_a_parent_with_controllers_and_explains() {
        let (k, root) = v2(&ALL_V2);
        k.spawn(77);
        let parent = cg(&k, &root, "busy", CgroupMode::V2);
        parent.create().unwrap();
        parent.add_pid(77).unwrap();
        // Enabling controllers for its children is refused while 77 lives in it.
        let child = parent.sibling("busy/101");
        let e = child.create().unwrap_err().to_string();
        assert!(e.contains("holds processes") && e.contains("leaf") && e.contains("FERRY_CGROUP_PARENT"), "{e}");
        assert!(!k.is_dir(&root.join("busy/101")), "nothing made is left");
        // And the other way round: a process cannot join a cgroup that enabled controllers.
        let leafy = cg(&k, &root, "other/101", CgroupMode::V2);
        leafy.create().unwrap();
        let e = leafy.sibling("other").add_pid(77).unwrap_err().to_string();
        assert!(e.contains("busy") || e.contains("Device or resource busy"), "{e}");
        leafy.add_pid(77).unwrap();
        assert_eq!(leafy.pids().unwrap(), vec![77]);
        assert!(parent.pids().unwrap().is_empty(), "a process is in one cgroup at a time");
    }

    #[test]
    fn v2_add_pid_and_stats() {
        let (k, root) = v2(&ALL_V2);
        k.spawn(4242);
        let c = cg(&k, &root, "ferry/7", CgroupMode::V2);
        c.create().unwrap();
        let dir = root.join("ferry/7");
        c.add_pid(4242).unwrap();
        assert_eq!(c.pids().unwrap(), vec![4242]);
        assert!(c.add_pid(999).is_err(), "no such process");
        k.set_counter(&dir.join("pids.current"), "3");
        k.set_counter(&dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n");
        k.set_counter(&dir.join("memory.current"), "1048576");
        k.set_counter(&dir.join("io.stat"), "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n");
        let s = c.stats().unwrap();
        assert_eq!((s.numproc, s.cputime_ns, s.memory_bytes, s.io_read_bytes, s.io_write_bytes), (3, 1_500_000, 1 << 20, 101, 22));
        // Without the pids controller the count comes from cgroup.threads.
        let (k, root) = v2(&["hugetlb"]);
        k.spawn(5);
        let c = cg(&k, &root, "ferry/8", CgroupMode::V2);
        c.create().unwrap();
        c.add_pid(5).unwrap();
        assert_eq!(c.stats().unwrap().numproc, 1);
    }

    #[test]
    fn a_delegated_subtree_is_read_killed_and_removed_whole() {
        // A system container's systemd makes cgroups below the container's and moves its
        // processes there: ferry still sees, kills and removes them all.
        let (k, root) = v2(&["hugetlb"]);
        for p in [1, 2, 3] {
            k.spawn(p);
        }
        let c = cg(&k, &root, "ferry/sys", CgroupMode::V2);
        c.create().unwrap();
        c.add_pid(1).unwrap();
        let unit = c.sibling("ferry/sys/system.slice/redis.service");
        unit.create().unwrap();
        unit.add_pid(2).unwrap();
        let scope = c.sibling("ferry/sys/init.scope");
        scope.create().unwrap();
        scope.add_pid(3).unwrap();
        let mut pids = c.pids().unwrap();
        pids.sort();
        assert_eq!(pids, vec![1, 2, 3]);
        assert_eq!(c.stats().unwrap().numproc, 3, "threads of the whole subtree");
        c.kill_all(Signal::SIGKILL, Duration::from_secs(1)).unwrap();
        assert!(!k.is_alive(2) && !k.is_alive(3));
        c.destroy().unwrap();
        assert!(!k.is_dir(&root.join("ferry/sys")), "the subtree is gone");
        assert!(k.is_dir(&root.join("ferry")), "not its parent");
    }

    #[test]
    fn v2_freezer_follows_the_kernel() {
        let (k, root) = v2(&["hugetlb"]);
        let c = cg(&k, &root, "ferry/f", CgroupMode::V2);
        c.create().unwrap();
        let f = c.freezer();
        assert_eq!(f.dir(), root.join("ferry/f"));
        // An empty cgroup is frozen at once.
        f.freeze().unwrap();
        assert!(f.is_frozen().unwrap() && f.is_requested().unwrap());
        f.thaw().unwrap();
        assert!(!f.is_frozen().unwrap());
        k.spawn(10);
        c.add_pid(10).unwrap();
        f.freeze().unwrap();
        assert_eq!(read(&k, &root.join("ferry/f/cgroup.freeze")), "1");
        // A cgroup under a frozen one is frozen without its own cgroup.freeze.
        let sub = c.sibling("ferry/f/sub");
        sub.create().unwrap();
        assert!(sub.freezer().is_frozen().unwrap() && !sub.freezer().is_requested().unwrap());
        sub.destroy().unwrap();
        f.thaw().unwrap();
        // A task that never freezes: the freeze gives up, thaws again and says so.
        k.make_unfreezable(10);
        let e = f.freeze_within(Duration::from_millis(30)).unwrap_err().to_string();
        assert!(e.contains("did not freeze") && e.contains("thawed again"), "{e}");
        assert!(!f.is_requested().unwrap(), "left freezing");
        // The guard thaws on drop.
        let (k, root) = v2(&["hugetlb"]);
        let c = cg(&k, &root, "ferry/g", CgroupMode::V2);
        c.create().unwrap();
        {
            let g = FrozenGuard::freeze(c.freezer()).unwrap();
            assert!(g.freezer().is_frozen().unwrap());
        }
        assert!(!c.freezer().is_requested().unwrap());
    }

    #[test]
    fn v2_kill_all_uses_cgroup_kill_even_when_frozen() {
        let (k, root) = v2(&["hugetlb"]);
        let c = cg(&k, &root, "ferry/k", CgroupMode::V2);
        c.create().unwrap();
        for p in [20, 21, 22] {
            k.spawn(p);
            c.add_pid(p).unwrap();
        }
        c.freezer().freeze().unwrap();
        c.kill_all(Signal::SIGKILL, Duration::from_secs(1)).unwrap();
        assert!(c.pids().unwrap().is_empty() && !k.is_alive(20));
        assert!(k.signals().is_empty(), "cgroup.kill did it, no per-process signal: {:?}", k.signals());
        assert_eq!(parse_keyed(&read(&k, &root.join("ferry/k/cgroup.events")), "populated"), Some(0));
        c.destroy().unwrap();
        assert!(!c.exists());
        // SIGTERM goes to each process and does not wait.
        let c = cg(&k, &root, "ferry/t", CgroupMode::V2);
        c.create().unwrap();
        k.spawn(30);
        c.add_pid(30).unwrap();
        c.kill_all(Signal::SIGTERM, Duration::from_secs(1)).unwrap();
        assert_eq!(k.signals(), vec![(30, Signal::SIGTERM)]);
        // rmdir of a populated cgroup fails until it is empty.
        assert!(k.rmdir(&root.join("ferry/t")).is_err());
        c.kill_all(Signal::SIGKILL, Duration::from_secs(1)).unwrap();
        c.destroy().unwrap();
    }

    #[test]
    fn v1_kill_all_thaws_so_the_kill_lands() {
        let root = PathBuf::from("/fake/v1");
        let k = Arc::new(FakeKernel::v1(&root, &["memory", "pids", "freezer", "cpuset"], true));
        let c = cg(&k, &root, "ferry/1", CgroupMode::V1);
        c.create().unwrap();
        k.spawn(40);
        c.add_pid(40).unwrap();
        c.freezer().freeze().unwrap();
        assert_eq!(read(&k, &root.join("freezer/ferry/1/freezer.state")), "FROZEN");
        c.kill_all(Signal::SIGKILL, Duration::from_secs(1)).unwrap();
        assert!(!k.is_alive(40));
        assert_eq!(read(&k, &root.join("freezer/ferry/1/freezer.state")), "THAWED");
        c.destroy().unwrap();
        assert!(!c.exists());
    }

    #[test]
    fn v1_freezer_reports_freezing_until_every_task_froze() {
        let root = PathBuf::from("/fake/v1");
        let k = Arc::new(FakeKernel::v1(&root, &["memory", "pids", "freezer"], false));
        let c = cg(&k, &root, "ferry/2", CgroupMode::V1);
        c.create().unwrap();
        k.spawn(50);
        c.add_pid(50).unwrap();
        k.make_unfreezable(50);
        let e = c.freezer().freeze_within(Duration::from_millis(30)).unwrap_err().to_string();
        assert!(e.contains("freezer/ferry/2") && e.contains("thawed again"), "{e}");
        assert_eq!(read(&k, &root.join("freezer/ferry/2/freezer.state")), "THAWED");
    }

    #[test]
    fn apply_writes_rolls_back_on_failure() {
        let (k, root) = v2(&ALL_V2);
        let c = cg(&k, &root, "ferry/8", CgroupMode::V2);
        c.create().unwrap();
        let dir = root.join("ferry/8");
        let w = |f: &str, v: &str| CgroupWrite { controller: "memory", file: f.into(), value: v.into() };
        let writes = vec![w("memory.max", "1000"), w("pids.max", "10"), w("no_such_file", "1")];
        assert!(c.apply_writes(&writes).is_err());
        assert_eq!(read(&k, &dir.join("memory.max")), "max");
        assert_eq!(read(&k, &dir.join("pids.max")), "max");
        assert!(!k.exists(&dir.join("no_such_file")));
        c.apply_writes(&writes[..2]).unwrap();
        assert_eq!(read(&k, &dir.join("pids.max")), "10");
        // A value the kernel refuses is a failure too.
        assert!(c.apply_writes(&[w("pids.max", "lots")]).is_err());
        assert_eq!(read(&k, &dir.join("pids.max")), "10");
    }

    #[test]
    fn v1_paths_per_hierarchy_and_cpuset_copied() {
        let root = PathBuf::from("/fake/v1");
        let k = Arc::new(FakeKernel::v1(&root, &["memory", "pids", "freezer", "cpuset"], false));
        let c = cg(&k, &root, "/p/1/", CgroupMode::V1);
        c.create().unwrap();
        assert_eq!(c.dirs().len(), 4);
        assert_eq!(read(&k, &root.join("cpuset/p/1/cpuset.cpus")), "0-1");
        assert_eq!(read(&k, &root.join("cpuset/p/cpuset.mems")), "0");
        // The copy is what lets a task in: an empty cpuset refuses it.
        k.spawn(60);
        c.add_pid(60).unwrap();
        let bare = cg(&k, &root, "bare", CgroupMode::V1);
        k.mkdir(&root.join("cpuset/bare")).unwrap();
        assert!(bare.sibling("bare").add_pid(60).is_err());
        let mut have = c.controllers();
        have.sort();
        assert_eq!(have, ["cpuset", "freezer", "memory", "pids"]);
    }

    #[test]
    fn device_policy_per_layout() {
        let (k, root) = v2(&["hugetlb"]);
        let c = cg(&k, &root, "ferry/9", CgroupMode::V2);
        c.create().unwrap();
        let rules = devices::rules_for(&["c:10:200:rw".into()]).unwrap();
        c.set_device_policy(&rules).unwrap();
        assert_eq!(k.device_rules(&root.join("ferry/9")), Some(rules.clone()));
        let root1 = PathBuf::from("/fake/v1");
        let k1 = Arc::new(FakeKernel::v1(&root1, &["memory", "pids", "freezer", "devices"], false));
        let c1 = cg(&k1, &root1, "ferry/9", CgroupMode::V1);
        c1.create().unwrap();
        c1.set_device_policy(&rules).unwrap();
        let list = read(&k1, &root1.join("devices/ferry/9/devices.list"));
        assert!(list.contains("c 10:200 rw") && !list.contains("a *:*"), "{list}");
        // Without a devices hierarchy the allowlist cannot hold: refused, not skipped.
        let k2 = Arc::new(FakeKernel::v1(&root1, &["memory", "pids", "freezer"], false));
        let c2 = cg(&k2, &root1, "ferry/9", CgroupMode::V1);
        c2.create().unwrap();
        assert!(c2.set_device_policy(&rules).unwrap_err().to_string().contains("no devices cgroup hierarchy"));
    }

    #[test]
    fn remove_tree_removes_empty_descendants() {
        let (k, root) = v2(&ALL_V2);
        for rel in ["h/ferry/1", "h/ferry/2/x"] {
            cg(&k, &root, rel, CgroupMode::V2).create().unwrap();
        }
        cg(&k, &root, "h", CgroupMode::V2).remove_tree().unwrap();
        assert!(!k.is_dir(&root.join("h")));
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_keyed("populated 1\nfrozen 0\n", "frozen"), Some(0));
        assert_eq!(parse_v1_io_service_bytes("254:0 Read 10\n254:0 Write 5\n254:0 Total 15\nTotal 15\n"), (10, 5));
    }
}
