//! Measured effects of ferry's v1 limit writes on real processes (root, cgroup v1 hosts).
//!
//! Each test makes `ferry-t<unique>/<name>` in every v1 hierarchy it needs, applies the writes
//! from `limits::v1_writes` directly (as a backend would: in order), starts plain processes in
//! it, and measures. A guard kills the processes and removes the cgroups even on failure.

use ferry_runtime::cgroups::limits::{self, v1_writes};
use ferry_runtime::cgroups::{nofile, probe};
use ferry_runtime::cgroups::{Cgroup, CgroupMode, LimitContext};
use ferry_runtime::config::Resources;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const HIER: [&str; 6] = ["cpuset", "cpu", "cpuacct", "memory", "pids", "blkio"];

fn v1_usable() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && HIER.iter().all(|h| Path::new(ROOT).join(h).join("cgroup.procs").exists())
        && Path::new(ROOT).join("cpu/cpu.shares").exists();
    if !ok {
        eprintln!("skipped: needs root and cgroup v1 hierarchies {HIER:?} under {ROOT}");
    }
    ok
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ferry-t{}-{n:x}", std::process::id())
}

/// A `ferry-t<unique>` parent in every hierarchy, with child cgroups made on demand.
struct Cgroups {
    parent: String,
    children: Vec<String>,
    procs: Vec<Child>,
}

impl Cgroups {
    fn new() -> Cgroups {
        let parent = unique();
        let cg = Cgroups { parent, children: Vec::new(), procs: Vec::new() };
        for h in HIER {
            std::fs::create_dir(cg.dir(h, "")).unwrap();
        }
        // A v1 cpuset starts empty: give the parent everything its own parent has.
        for f in ["cpuset.mems", "cpuset.cpus"] {
            let v = std::fs::read_to_string(Path::new(ROOT).join("cpuset").join(f)).unwrap();
            std::fs::write(cg.dir("cpuset", "").join(f), v.trim()).unwrap();
        }
        cg
    }

    fn dir(&self, h: &str, child: &str) -> PathBuf {
        Path::new(ROOT).join(h).join(&self.parent).join(child)
    }

    /// Make child `name`, apply the v1 writes for `res`, return the context used.
    fn child(&mut self, name: &str, res: &Resources, private_area: &Path) -> LimitContext {
        for h in HIER {
            std::fs::create_dir(self.dir(h, name)).unwrap();
        }
        self.children.push(name.to_string());
        let ctx = LimitContext::probe(&Cgroup::new(ROOT, format!("{}/{name}", self.parent), CgroupMode::V1), private_area);
        for w in v1_writes(res, &ctx).unwrap() {
            let p = self.dir(w.controller, name).join(&w.file);
            std::fs::write(&p, &w.value).unwrap_or_else(|e| panic!("write {} = {:?}: {e}", p.display(), w.value));
        }
        ctx
    }

    fn read(&self, h: &str, child: &str, file: &str) -> String {
        std::fs::read_to_string(self.dir(h, child).join(file)).unwrap()
    }

    /// Run `script` with /bin/sh inside child `name` (it moves itself in before exec).
    fn spawn(&mut self, name: &str, script: &str) -> usize {
        let files: Vec<PathBuf> = HIER.iter().map(|h| self.dir(h, name).join("cgroup.procs")).collect();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"for f in "$@"; do echo $$ > "$f" || exit 97; done; exec /bin/sh -c "$SCRIPT""#)
            .arg("sh")
            .args(&files)
            .env("SCRIPT", script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push(child);
        // Wait until it is in. A script can also be quick to end (a fork loop's shell exits
        // when the limit refuses a fork): having exited other than with the join's 97 also
        // means it joined, even if this thread never saw it in cgroup.procs.
        let pid = self.procs.last().unwrap().id().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.read("pids", name, "cgroup.procs").lines().any(|l| l == pid) {
            if let Some(st) = self.procs.last_mut().unwrap().try_wait().unwrap() {
                assert_ne!(st.code(), Some(97), "process could not join {name}");
                break;
            }
            assert!(Instant::now() < deadline, "process did not join {name}");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.procs.len() - 1
    }

    fn kill_all(&mut self, name: &str) {
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.dir("pids", name).join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                return;
            }
            for p in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in self.children.clone() {
            self.kill_all(&c);
        }
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for h in HIER {
            for c in &self.children {
                let _ = std::fs::remove_dir(self.dir(h, c));
            }
            let _ = std::fs::remove_dir(self.dir(h, ""));
        }
    }
}

fn cpu_ns(cg: &Cgroups, name: &str) -> u64 {
    cg.read("cpuacct", name, "cpuacct.usage").trim().parse().unwrap()
}

const BUSY: &str = "while :; do :; done";

#[test]
fn cpuunits_share_one_cpu_about_one_to_two() {
    if !v1_usable() {
        return;
    }
    let tmp = std::env::temp_dir();
    let mut cg = Cgroups::new();
    let cpu = (probe::online_cpus() - 1).to_string();
    let a = Resources { cpuunits: Some(1000), cpumask: Some(cpu.clone()), ..Default::default() };
    let b = Resources { cpuunits: Some(2000), cpumask: Some(cpu.clone()), ..Default::default() };
    cg.child("a", &a, &tmp);
    cg.child("b", &b, &tmp);
    assert_eq!(cg.read("cpu", "b", "cpu.shares").trim(), "2048");
    assert_eq!(cg.read("cpuset", "a", "cpuset.cpus").trim(), cpu);
    cg.spawn("a", BUSY);
    cg.spawn("b", BUSY);
    std::thread::sleep(Duration::from_millis(300));
    let (a0, b0) = (cpu_ns(&cg, "a"), cpu_ns(&cg, "b"));
    std::thread::sleep(Duration::from_secs(3));
    let (a1, b1) = (cpu_ns(&cg, "a"), cpu_ns(&cg, "b"));
    let ratio = (b1 - b0) as f64 / (a1 - a0).max(1) as f64;
    eprintln!("cpu time a={}ms b={}ms ratio b/a={ratio:.2}", (a1 - a0) / 1_000_000, (b1 - b0) / 1_000_000);
    assert!((1.5..=2.5).contains(&ratio), "ratio {ratio:.2} not in 1.5..2.5");
}

#[test]
fn cpulimit_25_caps_a_busy_loop() {
    if !v1_usable() {
        return;
    }
    let tmp = std::env::temp_dir();
    let mut cg = Cgroups::new();
    cg.child("c", &Resources { cpulimit: Some(25), ..Default::default() }, &tmp);
    assert_eq!(cg.read("cpu", "c", "cpu.cfs_quota_us").trim(), "25000");
    cg.spawn("c", BUSY);
    let t0 = Instant::now();
    let c0 = cpu_ns(&cg, "c");
    std::thread::sleep(Duration::from_secs(3));
    let used = (cpu_ns(&cg, "c") - c0) as f64 / t0.elapsed().as_nanos() as f64;
    eprintln!("busy loop used {:.1}% of a CPU", used * 100.0);
    assert!(used < 0.30, "used {:.1}% of a CPU", used * 100.0);
    assert!(used > 0.05, "the loop barely ran ({:.1}%): the measurement is broken", used * 100.0);
}

#[test]
fn ram_64m_oom_kills_inside_only() {
    if !v1_usable() {
        return;
    }
    let tmp = std::env::temp_dir();
    let mut cg = Cgroups::new();
    cg.child("m", &Resources { ram: Some(64 << 20), ..Default::default() }, &tmp);
    assert_eq!(cg.read("memory", "m", "memory.limit_in_bytes").trim(), (64u64 << 20).to_string());
    // dd's 150 MiB buffer is filled from /dev/zero: every page gets touched.
    let i = cg.spawn("m", "exec dd if=/dev/zero of=/dev/null bs=150M count=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = cg.procs[i].try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the 150 MB allocation was not stopped");
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "expected an OOM kill, got {status:?}");
    let oom = cg.read("memory", "m", "memory.oom_control");
    eprintln!("{oom}");
    let kills: u64 = oom.lines().find_map(|l| l.strip_prefix("oom_kill ")).map_or(0, |v| v.trim().parse().unwrap());
    assert!(kills >= 1, "no OOM kill counted in the cgroup: {oom}");
    // This process (outside the cgroup) is fine and can still allocate.
    let v = vec![1u8; 150 << 20];
    assert_eq!(v[v.len() - 1], 1);
}

#[test]
fn numproc_20_stops_a_fork_loop() {
    if !v1_usable() {
        return;
    }
    let tmp = std::env::temp_dir();
    let mut cg = Cgroups::new();
    cg.child("p", &Resources { numproc: Some(20), ..Default::default() }, &tmp);
    cg.spawn("p", "i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done; sleep 30");
    // Under load the loop may take a while to reach the limit: wait until a fork was refused
    // and the count stays put (not a fixed time), checking on the way it never passes 20.
    let read =
        |cg: &Cgroups| -> (u64, String) { (cg.read("pids", "p", "pids.current").trim().parse().unwrap(), cg.read("pids", "p", "pids.events")) };
    let t0 = Instant::now();
    let (mut current, mut events) = read(&cg);
    let mut stable_since = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
        let (c, e) = read(&cg);
        assert!(c <= 20, "pids.current {c} passed the limit of 20");
        if c != current {
            stable_since = Instant::now();
        }
        (current, events) = (c, e);
        let refused_yet = events.lines().any(|l| l.strip_prefix("max ").is_some_and(|v| v.trim() != "0"));
        if refused_yet && stable_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    eprintln!("pids.current={current} events={events}");
    let refused: u64 = events.lines().find_map(|l| l.strip_prefix("max ")).map_or(0, |v| v.trim().parse().unwrap());
    assert!((15..=20).contains(&current), "pids.current {current}");
    assert!(refused >= 1, "no fork was refused: {events}");
}

#[test]
fn iolimit_1m_slows_direct_writes() {
    if !v1_usable() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("ferry-t").tempdir_in("/var/tmp").unwrap();
    let mut cg = Cgroups::new();
    let ctx = cg.child("io", &Resources { iolimit: Some(1 << 20), ..Default::default() }, dir.path());
    let Some((maj, min)) = ctx.block_device else {
        eprintln!("skipped: no block device under {}", dir.path().display());
        return;
    };
    let rule = cg.read("blkio", "io", "blkio.throttle.write_bps_device");
    assert!(rule.contains(&format!("{maj}:{min} 1048576")), "{rule}");
    let out = dir.path().join("f");
    let t0 = Instant::now();
    let i = cg.spawn("io", &format!("exec dd if=/dev/zero of={} bs=64k count=64 oflag=direct", out.display()));
    let status = cg.procs[i].wait().unwrap();
    let took = t0.elapsed();
    eprintln!("4 MiB direct write on {maj}:{min} took {took:?}");
    assert!(status.success(), "dd failed: {status:?}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 4 << 20);
    assert!(took >= Duration::from_secs(3), "took only {took:?}");
}

#[test]
fn numfiles_lowers_rlimit_nofile() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let res = Resources { numfiles: Some(64), ..Default::default() };
    nofile::set_nofile(pid, limits::numfiles_rlimit(&res).unwrap()).unwrap();
    assert_eq!(nofile::get_nofile(pid).unwrap(), (64, 64));
    // Raising the hard limit again needs CAP_SYS_RESOURCE: either it works or the error says why.
    match nofile::set_nofile(pid, 1 << 20) {
        Ok(()) => assert_eq!(nofile::get_nofile(pid).unwrap().1, 1 << 20),
        Err(e) => assert!(e.to_string().contains("CAP_SYS_RESOURCE"), "{e}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn numfiles_applies_to_every_process_and_counts_fds() {
    let mut a = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let mut b = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pids = [a.id() as i32, b.id() as i32, i32::MAX - 7];
    nofile::set_nofile_all(&pids, 100).unwrap();
    assert_eq!(nofile::get_nofile(pids[0]).unwrap(), (100, 100));
    assert_eq!(nofile::get_nofile(pids[1]).unwrap(), (100, 100));
    let n = nofile::open_files(&pids[..2]);
    assert!(n >= 6, "two sleeps hold at least stdin/out/err each, counted {n}");
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
}
