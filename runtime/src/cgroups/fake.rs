//! A fake cgroup kernel for unit tests: an in-memory cgroupfs (v2 unified, or v1 hierarchies)
//! with fake processes, answering each call the way the kernel answered it on this project's
//! hosts, errors included. Every rule here was seen on a real kernel (the unified hierarchy of
//! a hybrid 6.18 host, and its v1 hierarchies):
//!
//! v2
//! - `cgroup.subtree_control` takes `+name`/`-name` tokens; a controller the cgroup does not
//!   offer (absent from its `cgroup.controllers`) fails with ENOENT; enabling one in a non-root
//!   cgroup that holds processes fails with EBUSY (the no-internal-processes rule), and so does
//!   moving a process into a non-root cgroup whose `subtree_control` is not empty.
//! - A child offers what its parent enabled; a controller's files exist only in cgroups where
//!   it is offered (never in the root); `cpu.stat` and `cgroup.*` exist everywhere.
//! - Writing a file that does not exist fails (ENOENT without O_CREAT; cgroupfs never creates
//!   files); `rmdir` fails with EBUSY while processes or child cgroups remain.
//! - `cgroup.events` holds `populated` (processes in the subtree) and `frozen`; an empty cgroup
//!   is frozen as soon as `cgroup.freeze` is 1, a cgroup under a frozen one is frozen, SIGKILL
//!   kills a frozen process; `cgroup.kill` kills the whole subtree. The root has neither
//!   `cgroup.freeze`, `cgroup.kill` nor `cgroup.events`.
//!
//! v1
//! - Each hierarchy is its own tree; a new cpuset child has empty `cpuset.cpus`/`cpuset.mems`
//!   and refuses tasks (ENOSPC) until both are set.
//! - `freezer.state` reads FREEZING while a task has not frozen yet; SIGKILL to a frozen task
//!   takes effect only when it is thawed.
//!
//! A process marked unfreezable (a task in uninterruptible sleep) never freezes.

use super::devices::DeviceRule;
use super::fs::CgroupFs;
use super::CgroupMode;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
struct Node {
    procs: BTreeSet<i32>,
    /// v2: controllers enabled for the children.
    subtree: Vec<String>,
    /// v2 `cgroup.freeze`, v1 `freezer.state` written FROZEN.
    freeze: bool,
    /// Controller files written (defaults come from [`default_value`]).
    files: BTreeMap<String, String>,
    devices: Option<Vec<DeviceRule>>,
}

#[derive(Debug, Default)]
struct State {
    /// Relative path ("" = the v2 root; v1: "memory", "memory/ferry/101", ...) → cgroup.
    nodes: BTreeMap<PathBuf, Node>,
    unfreezable: BTreeSet<i32>,
    /// v1: SIGKILLs waiting for a thaw.
    pending_kill: BTreeSet<i32>,
    signals: Vec<(i32, Signal)>,
}

/// The fake kernel's cgroupfs, mounted (in name only) at `root`.
#[derive(Debug)]
pub struct FakeKernel {
    root: PathBuf,
    mode: CgroupMode,
    /// v2: what the root offers. v1: the hierarchies.
    controllers: Vec<String>,
    swap: bool,
    st: Mutex<State>,
}

fn err(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, what.to_string())
}
fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Files of one controller and their initial values (v2 names, then v1 names).
fn controller_files(mode: CgroupMode, ctl: &str, swap: bool) -> Vec<(&'static str, &'static str)> {
    match (mode, ctl) {
        (CgroupMode::V2, "cpu") => vec![("cpu.weight", "100"), ("cpu.max", "max 100000")],
        (CgroupMode::V2, "cpuset") => vec![("cpuset.cpus", ""), ("cpuset.mems", "")],
        (CgroupMode::V2, "memory") => {
            let mut v = vec![("memory.max", "max"), ("memory.current", "0"), ("memory.stat", "anon 0\nfile 0\n"), ("memory.events", "oom_kill 0\n")];
            if swap {
                v.extend([("memory.swap.max", "max"), ("memory.swap.current", "0")]);
            }
            v
        }
        (CgroupMode::V2, "pids") => vec![("pids.max", "max"), ("pids.current", "")],
        (CgroupMode::V2, "io") => vec![("io.max", ""), ("io.stat", ""), ("io.weight", "default 100")],
        (CgroupMode::V2, "hugetlb") => vec![("hugetlb.2MB.max", "max")],
        (CgroupMode::V1, "cpu") => vec![("cpu.shares", "1024"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")],
        (CgroupMode::V1, "cpuacct") => vec![("cpuacct.usage", "0")],
        (CgroupMode::V1, "cpuset") => vec![("cpuset.cpus", ""), ("cpuset.mems", "")],
        (CgroupMode::V1, "memory") => {
            let mut v = vec![("memory.limit_in_bytes", "9223372036854771712"), ("memory.usage_in_bytes", "0"), ("memory.stat", "total_rss 0\n")];
            if swap {
                v.extend([("memory.memsw.limit_in_bytes", "9223372036854771712"), ("memory.memsw.usage_in_bytes", "0")]);
            }
            v
        }
        (CgroupMode::V1, "pids") => vec![("pids.max", "max"), ("pids.current", "")],
        (CgroupMode::V1, "blkio") => vec![
            ("blkio.weight", "500"),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_bps_device", ""),
            ("blkio.throttle.read_iops_device", ""),
            ("blkio.throttle.write_iops_device", ""),
            ("blkio.throttle.io_service_bytes", ""),
        ],
        (CgroupMode::V1, "devices") => vec![("devices.allow", ""), ("devices.deny", ""), ("devices.list", "a *:* rwm")],
        (CgroupMode::V1, "freezer") => vec![("freezer.state", "")],
        _ => Vec::new(),
    }
}

/// A file that takes one of two words (EINVAL otherwise): true for `on`.
fn switch(v: &str, on: &str, off: &str) -> io::Result<bool> {
    match v {
        _ if v == on => Ok(true),
        _ if v == off => Ok(false),
        _ => Err(errno(libc::EINVAL)),
    }
}

/// A number or "max" (memory.max, pids.max, ...).
fn max_or_number(v: &str) -> bool {
    v == "max" || v.parse::<u64>().is_ok()
}

impl FakeKernel {
    /// A v2 hierarchy whose root offers `offered` (e.g. `["hugetlb"]` like this project's hybrid
    /// hosts, or `["cpu", "cpuset", "io", "memory", "pids"]` like a pure v2 host). `swap`: the
    /// memory controller accounts swap (`memory.swap.max`).
    pub fn v2(root: impl Into<PathBuf>, offered: &[&str], swap: bool) -> FakeKernel {
        let k = FakeKernel {
            root: root.into(),
            mode: CgroupMode::V2,
            controllers: offered.iter().map(|s| s.to_string()).collect(),
            swap,
            st: Mutex::new(State::default()),
        };
        k.st.lock().unwrap().nodes.insert(PathBuf::new(), Node::default());
        k
    }

    /// v1 hierarchies named `hierarchies` under `root`; cpuset's root has CPUs 0-1 and node 0.
    pub fn v1(root: impl Into<PathBuf>, hierarchies: &[&str], swap: bool) -> FakeKernel {
        let k = FakeKernel {
            root: root.into(),
            mode: CgroupMode::V1,
            controllers: hierarchies.iter().map(|s| s.to_string()).collect(),
            swap,
            st: Mutex::new(State::default()),
        };
        {
            let mut st = k.st.lock().unwrap();
            for h in hierarchies {
                let mut n = Node::default();
                if *h == "cpuset" {
                    n.files.insert("cpuset.cpus".into(), "0-1".into());
                    n.files.insert("cpuset.mems".into(), "0".into());
                }
                st.nodes.insert(PathBuf::from(h), n);
            }
        }
        k
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new process, in the root cgroup(s).
    pub fn spawn(&self, pid: i32) {
        let mut st = self.st.lock().unwrap();
        let roots: Vec<PathBuf> = match self.mode {
            CgroupMode::V2 => vec![PathBuf::new()],
            CgroupMode::V1 => self.controllers.iter().map(PathBuf::from).collect(),
        };
        for r in roots {
            st.nodes.get_mut(&r).expect("root").procs.insert(pid);
        }
    }

    /// The process never freezes (a task in uninterruptible sleep).
    pub fn make_unfreezable(&self, pid: i32) {
        self.st.lock().unwrap().unfreezable.insert(pid);
    }

    pub fn is_alive(&self, pid: i32) -> bool {
        self.st.lock().unwrap().nodes.values().any(|n| n.procs.contains(&pid))
    }

    /// Every signal sent through [`CgroupFs::kill`], in order.
    pub fn signals(&self) -> Vec<(i32, Signal)> {
        self.st.lock().unwrap().signals.clone()
    }

    /// The device rules last attached to the cgroup at `dir` (v2 device program).
    pub fn device_rules(&self, dir: &Path) -> Option<Vec<DeviceRule>> {
        let key = self.rel(dir).ok()?;
        self.st.lock().unwrap().nodes.get(&key)?.devices.clone()
    }

    /// Set what a read-only counter file shows (memory.stat, pids.current, ...).
    pub fn set_counter(&self, file: &Path, value: &str) {
        let (node, name) = self.split(file).expect("file under the fake root");
        self.st.lock().unwrap().nodes.get_mut(&node).expect("cgroup exists").files.insert(name, value.to_string());
    }

    fn rel(&self, p: &Path) -> io::Result<PathBuf> {
        p.strip_prefix(&self.root).map(Path::to_path_buf).map_err(|_| err(io::ErrorKind::NotFound, "outside the fake cgroupfs"))
    }

    /// (cgroup key, file name) of a file path.
    fn split(&self, p: &Path) -> io::Result<(PathBuf, String)> {
        let rel = self.rel(p)?;
        let name = rel.file_name().and_then(|n| n.to_str()).ok_or_else(|| errno(libc::ENOENT))?.to_string();
        Ok((rel.parent().map(Path::to_path_buf).unwrap_or_default(), name))
    }

    fn is_root_key(&self, key: &Path) -> bool {
        match self.mode {
            CgroupMode::V2 => key.as_os_str().is_empty(),
            CgroupMode::V1 => key.components().count() == 1,
        }
    }

    /// v1: the hierarchy (controller) a key belongs to.
    fn hierarchy(key: &Path) -> String {
        key.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The controllers whose files a cgroup has.
    fn offered(&self, st: &State, key: &Path) -> Vec<String> {
        match self.mode {
            CgroupMode::V2 => match key.parent() {
                None => self.controllers.clone(),
                Some(parent) => st.nodes.get(parent).map(|n| n.subtree.clone()).unwrap_or_default(),
            },
            CgroupMode::V1 => vec![Self::hierarchy(key)],
        }
    }

    fn file_exists(&self, st: &State, key: &Path, name: &str) -> bool {
        if !st.nodes.contains_key(key) {
            return false;
        }
        let root = self.is_root_key(key);
        match (self.mode, name) {
            (CgroupMode::V2, "cgroup.procs" | "cgroup.threads" | "cgroup.controllers" | "cgroup.subtree_control" | "cpu.stat") => true,
            (CgroupMode::V2, "cgroup.events" | "cgroup.freeze" | "cgroup.kill") => !root,
            (CgroupMode::V1, "cgroup.procs" | "tasks") => true,
            (CgroupMode::V1, "freezer.state") => Self::hierarchy(key) == "freezer" && !root,
            _ => {
                if self.mode == CgroupMode::V2 && root {
                    return false;
                }
                self.offered(st, key).iter().any(|c| controller_files(self.mode, c, self.swap).iter().any(|(f, _)| *f == name))
            }
        }
    }

    /// Keys of `key` and every cgroup below it.
    fn subtree_keys(st: &State, key: &Path) -> Vec<PathBuf> {
        st.nodes.keys().filter(|k| k.starts_with(key)).cloned().collect()
    }

    fn populated(st: &State, key: &Path) -> bool {
        Self::subtree_keys(st, key).iter().any(|k| !st.nodes[k].procs.is_empty())
    }

    /// A freeze was asked of this cgroup or an ancestor.
    fn freezing(st: &State, key: &Path) -> bool {
        key.ancestors().any(|a| st.nodes.get(a).is_some_and(|n| n.freeze))
    }

    fn frozen(st: &State, key: &Path) -> bool {
        Self::freezing(st, key) && !Self::subtree_keys(st, key).iter().any(|k| st.nodes[k].procs.iter().any(|p| st.unfreezable.contains(p)))
    }

    /// v1: the process is in a frozen (or freezing) cgroup of the freezer hierarchy.
    fn held_by_v1_freezer(st: &State, pid: i32) -> bool {
        st.nodes.iter().any(|(k, n)| Self::hierarchy(k) == "freezer" && n.procs.contains(&pid) && Self::freezing(st, k))
    }

    /// Remove a process from every cgroup (it died).
    fn reap(st: &mut State, pid: i32) {
        for n in st.nodes.values_mut() {
            n.procs.remove(&pid);
        }
        st.pending_kill.remove(&pid);
    }

    fn read_file(&self, st: &State, key: &Path, name: &str) -> io::Result<String> {
        if !self.file_exists(st, key, name) {
            return Err(errno(libc::ENOENT));
        }
        let n = &st.nodes[key];
        let lines = |v: &BTreeSet<i32>| v.iter().map(|p| format!("{p}\n")).collect::<String>();
        let bit = |b: bool| u8::from(b);
        Ok(match name {
            "cgroup.procs" | "cgroup.threads" | "tasks" => lines(&n.procs),
            "cgroup.controllers" => format!("{}\n", self.offered(st, key).join(" ")),
            "cgroup.subtree_control" => format!("{}\n", n.subtree.join(" ")),
            "cgroup.events" => format!("populated {}\nfrozen {}\n", bit(Self::populated(st, key)), bit(Self::frozen(st, key))),
            "cgroup.freeze" => format!("{}\n", bit(n.freeze)),
            "cgroup.kill" => return Err(errno(libc::EINVAL)),
            "cpu.stat" => n.files.get(name).cloned().unwrap_or_else(|| "usage_usec 0\nuser_usec 0\nsystem_usec 0\n".into()),
            "freezer.state" => {
                let s = if !Self::freezing(st, key) {
                    "THAWED"
                } else if Self::frozen(st, key) {
                    "FROZEN"
                } else {
                    "FREEZING"
                };
                format!("{s}\n")
            }
            "pids.current" => n
                .files
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("{}\n", Self::subtree_keys(st, key).iter().map(|k| st.nodes[k].procs.len()).sum::<usize>())),
            _ => {
                let default =
                    self.offered(st, key).iter().flat_map(|c| controller_files(self.mode, c, self.swap)).find(|(f, _)| *f == name).map(|(_, v)| v);
                let v = n.files.get(name).map(String::as_str).or(default).unwrap_or("");
                format!("{}\n", v.trim_end())
            }
        })
    }

    fn write_file(&self, st: &mut State, key: &Path, name: &str, value: &str) -> io::Result<()> {
        if !self.file_exists(st, key, name) {
            return Err(errno(libc::ENOENT));
        }
        let v = value.trim();
        let root = self.is_root_key(key);
        match name {
            "cgroup.procs" | "tasks" => {
                let pid: i32 = v.parse().map_err(|_| errno(libc::EINVAL))?;
                if pid == 0 {
                    // "The writing process": the fake has no idea who that is.
                    return Err(errno(libc::EINVAL));
                }
                if !st.nodes.values().any(|n| n.procs.contains(&pid)) {
                    return Err(errno(libc::ESRCH));
                }
                if self.mode == CgroupMode::V2 && !root && !st.nodes[key].subtree.is_empty() {
                    return Err(errno(libc::EBUSY));
                }
                if self.mode == CgroupMode::V1 && Self::hierarchy(key) == "cpuset" {
                    let n = &st.nodes[key];
                    if ["cpuset.cpus", "cpuset.mems"].iter().any(|f| n.files.get(*f).is_none_or(|x| x.trim().is_empty())) {
                        return Err(errno(libc::ENOSPC));
                    }
                }
                let same_tree: Vec<PathBuf> = match self.mode {
                    CgroupMode::V2 => st.nodes.keys().cloned().collect(),
                    CgroupMode::V1 => st.nodes.keys().filter(|k| Self::hierarchy(k) == Self::hierarchy(key)).cloned().collect(),
                };
                for k in same_tree {
                    st.nodes.get_mut(&k).expect("listed").procs.remove(&pid);
                }
                st.nodes.get_mut(key).expect("exists").procs.insert(pid);
                Ok(())
            }
            "cgroup.subtree_control" => {
                let offered = self.offered(st, key);
                let mut new = st.nodes[key].subtree.clone();
                for tok in v.split_whitespace() {
                    let (on, ctl) = match (tok.strip_prefix('+'), tok.strip_prefix('-')) {
                        (Some(c), _) => (true, c),
                        (_, Some(c)) => (false, c),
                        _ => return Err(errno(libc::EINVAL)),
                    };
                    if on {
                        if !offered.iter().any(|c| c == ctl) {
                            return Err(errno(libc::ENOENT));
                        }
                        if !root && !st.nodes[key].procs.is_empty() {
                            return Err(errno(libc::EBUSY));
                        }
                        if !new.iter().any(|c| c == ctl) {
                            new.push(ctl.to_string());
                        }
                    } else {
                        let children = st.nodes.keys().filter(|k| k.parent() == Some(key));
                        if children.into_iter().any(|k| st.nodes[k].subtree.iter().any(|c| c == ctl)) {
                            return Err(errno(libc::EBUSY));
                        }
                        new.retain(|c| c != ctl);
                    }
                }
                st.nodes.get_mut(key).expect("exists").subtree = new;
                Ok(())
            }
            "cgroup.freeze" => {
                st.nodes.get_mut(key).expect("exists").freeze = switch(v, "1", "0")?;
                Ok(())
            }
            "cgroup.kill" => {
                if v != "1" {
                    return Err(errno(libc::EINVAL));
                }
                let pids: Vec<i32> = Self::subtree_keys(st, key).iter().flat_map(|k| st.nodes[k].procs.iter().copied().collect::<Vec<_>>()).collect();
                for p in pids {
                    Self::reap(st, p);
                }
                Ok(())
            }
            "freezer.state" => {
                let f = switch(v, "FROZEN", "THAWED")?;
                st.nodes.get_mut(key).expect("exists").freeze = f;
                if !f {
                    // Pending SIGKILLs land once their tasks run again.
                    let pending: Vec<i32> = st.pending_kill.iter().copied().collect();
                    for p in pending {
                        if !Self::held_by_v1_freezer(st, p) {
                            Self::reap(st, p);
                        }
                    }
                }
                Ok(())
            }
            "memory.max" | "memory.swap.max" | "pids.max" if !max_or_number(v) => Err(errno(libc::EINVAL)),
            "cpu.weight" if !v.parse::<u64>().is_ok_and(|w| (1..=10_000).contains(&w)) => Err(errno(libc::ERANGE)),
            "memory.current"
            | "memory.stat"
            | "memory.events"
            | "pids.current"
            | "io.stat"
            | "cpu.stat"
            | "memory.swap.current"
            | "memory.usage_in_bytes"
            | "memory.memsw.usage_in_bytes"
            | "cpuacct.usage"
            | "blkio.throttle.io_service_bytes"
            | "devices.list" => Err(errno(libc::EACCES)),
            "devices.deny" | "devices.allow" => {
                let n = st.nodes.get_mut(key).expect("exists");
                let list = n.files.entry("devices.list".into()).or_insert_with(|| "a *:* rwm".into());
                if name == "devices.deny" && v == "a" {
                    list.clear();
                } else if name == "devices.allow" {
                    list.push_str(&format!("\n{v}"));
                }
                Ok(())
            }
            _ => {
                st.nodes.get_mut(key).expect("exists").files.insert(name.to_string(), v.to_string());
                Ok(())
            }
        }
    }
}

impl CgroupFs for FakeKernel {
    fn read(&self, p: &Path) -> io::Result<String> {
        let st = self.st.lock().unwrap();
        let (key, name) = self.split(p)?;
        self.read_file(&st, &key, &name)
    }

    fn write(&self, p: &Path, value: &str) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let (key, name) = self.split(p)?;
        self.write_file(&mut st, &key, &name, value)
    }

    fn mkdir(&self, p: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let key = self.rel(p)?;
        if st.nodes.contains_key(&key) {
            return Err(errno(libc::EEXIST));
        }
        let parent = key.parent().map(Path::to_path_buf).ok_or_else(|| errno(libc::EEXIST))?;
        if !st.nodes.contains_key(&parent) {
            return Err(errno(libc::ENOENT));
        }
        st.nodes.insert(key, Node::default());
        Ok(())
    }

    fn rmdir(&self, p: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let key = self.rel(p)?;
        if !st.nodes.contains_key(&key) {
            return Err(errno(libc::ENOENT));
        }
        let has_children = st.nodes.keys().any(|k| k.parent() == Some(key.as_path()));
        if self.is_root_key(&key) || has_children || !st.nodes[&key].procs.is_empty() {
            return Err(errno(libc::EBUSY));
        }
        st.nodes.remove(&key);
        Ok(())
    }

    fn exists(&self, p: &Path) -> bool {
        let st = self.st.lock().unwrap();
        match self.rel(p) {
            Ok(key) if st.nodes.contains_key(&key) => true,
            Ok(_) => self.split(p).is_ok_and(|(key, name)| self.file_exists(&st, &key, &name)),
            Err(_) => false,
        }
    }

    fn is_dir(&self, p: &Path) -> bool {
        self.rel(p).is_ok_and(|k| self.st.lock().unwrap().nodes.contains_key(&k))
    }

    fn subdirs(&self, p: &Path) -> Vec<PathBuf> {
        let Ok(key) = self.rel(p) else { return Vec::new() };
        let st = self.st.lock().unwrap();
        st.nodes.keys().filter(|k| k.parent() == Some(key.as_path()) && !k.as_os_str().is_empty()).map(|k| self.root.join(k)).collect()
    }

    fn kill(&self, pid: i32, sig: Signal) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if !st.nodes.values().any(|n| n.procs.contains(&pid)) {
            return Err(errno(libc::ESRCH));
        }
        st.signals.push((pid, sig));
        if sig == Signal::SIGKILL {
            if self.mode == CgroupMode::V1 && Self::held_by_v1_freezer(&st, pid) {
                st.pending_kill.insert(pid);
            } else {
                Self::reap(&mut st, pid);
            }
        }
        Ok(())
    }

    fn wait_until(&self, _events: &Path, timeout: Duration, done: &mut dyn FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Records the rules (there is no kernel to load a program into).
    fn set_device_program(&self, dir: &Path, rules: &[DeviceRule]) -> crate::error::Result<()> {
        let key = self.rel(dir).map_err(|e| crate::error::Error::Cgroup(e.to_string()))?;
        let mut st = self.st.lock().unwrap();
        match st.nodes.get_mut(&key) {
            Some(n) if self.mode == CgroupMode::V2 => {
                n.devices = Some(rules.to_vec());
                Ok(())
            }
            _ => Err(crate::error::Error::Cgroup(format!("open {}: no such cgroup2 directory", dir.display()))),
        }
    }
}
