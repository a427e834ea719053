//! A container built by hand for CRIU tests (the runtime core is not used here): fresh pid,
//! uts, ipc, net and mount namespaces, a busybox root that is a mount point and the new root
//! after pivot_root, stdio on the container's own /dev/null, the init a session leader inside.
//! Everything is removed on drop: processes, the temp dir, network namespaces.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `None` (with the reason printed) when this machine cannot run CRIU tests.
pub fn criu_ready() -> Option<ferry_runtime::criu::Criu> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    match ferry_runtime::criu::Criu::new() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A short unique tag for names (netns, veths, cgroups): this test process's pid.
pub fn tag() -> String {
    format!("{}", std::process::id() % 100_000)
}

/// Fill `rootfs` from $FERRY_TEST_TEMPLATE, else build a busybox tree there.
fn fill_rootfs(rootfs: &Path) {
    let st = if let Some(t) = std::env::var_os("FERRY_TEST_TEMPLATE") {
        Command::new("cp").arg("-a").arg(format!("{}/.", Path::new(&t).display())).arg(rootfs).status().unwrap()
    } else {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-template.sh");
        Command::new("bash").arg(script).arg("busybox").arg(rootfs).stdout(Stdio::null()).status().unwrap()
    };
    assert!(st.success(), "cannot fill the test rootfs");
}

/// Options of a hand-made container.
#[derive(Default, Clone)]
pub struct CtSpec {
    /// The shell code the container's init runs (pid 1, after setup).
    pub payload: String,
    /// Open fd 7 on a host file before pivot_root and keep it: CRIU cannot dump that.
    pub leak_host_fd: bool,
    /// Start inside this named network namespace (/run/netns/NAME) instead of ours.
    pub netns: Option<String>,
}

pub struct Container {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    /// Host pid of the container's init (updated after a restore).
    pub pid: i32,
    unshare_pid: Option<i32>,
}

impl Container {
    pub fn start(spec: &CtSpec) -> Container {
        let dir = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        fill_rootfs(&rootfs);
        std::fs::create_dir_all(rootfs.join("oldroot")).unwrap();
        let r = rootfs.display();
        let leak = if spec.leak_host_fd { "exec 7</etc/hostname" } else { "" };
        let script = format!(
            r#"set -e
{leak}
mount --make-rprivate /
mount --bind {r} {r}
mount -t proc proc {r}/proc
mount -t tmpfs tmpfs {r}/dev
mknod -m 666 {r}/dev/null c 1 3
cd {r}; pivot_root . oldroot; /bin/busybox umount -l /oldroot
exec /bin/busybox setsid /bin/sh -c 'exec </dev/null >/dev/null 2>&1 10<&- 251>&-; hostname ct; touch /tmp/ready; {payload}'
"#,
            payload = spec.payload.replace('\'', r"'\''")
        );
        let script_path = dir.path().join("init.sh");
        std::fs::write(&script_path, script).unwrap();
        let netns_file = spec.netns.as_ref().map(|n| std::fs::File::open(format!("/run/netns/{n}")).unwrap());
        let netns_fd = netns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let mut cmd = Command::new("unshare");
        cmd.args(["-p", "-f", "-u", "-i", "-n", "-m", "/bin/sh"]).arg(&script_path);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (setns, close_range) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = netns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                libc::syscall(libc::SYS_close_range, 3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let unshare_pid = child.id() as i32;
        // Reap unshare in the background so it never lingers as a zombie.
        std::thread::spawn(move || {
            let mut c = child;
            let _ = c.wait();
        });
        let mut ct = Container { dir, rootfs, pid: 0, unshare_pid: Some(unshare_pid) };
        let t0 = Instant::now();
        loop {
            let kids = std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).unwrap_or_default();
            if let Some(p) = kids.split_whitespace().next() {
                ct.pid = p.parse().unwrap();
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "container init did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_for(|| ct.rootfs.join("tmp/ready").exists(), "container ready");
        ct
    }

    pub fn images(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The pid-namespace pids (last NSpid field) of the init and its long-lived children
    /// (`sleep 1000`), sorted.
    pub fn ns_pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = descendants(self.pid)
            .into_iter()
            .filter(|p| *p == self.pid || std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default().ends_with(b"1000\0"))
            .filter_map(ns_pid)
            .collect();
        v.sort();
        v
    }

    pub fn alive(&self) -> bool {
        alive(self.pid)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.rootfs.join(rel)).unwrap_or_default()
    }

    /// The counter file written by [`COUNTER`], or 0.
    pub fn count(&self) -> u64 {
        self.read("tmp/count").trim().parse().unwrap_or(0)
    }

    /// The dumped tree is gone: forget the old init (and its unshare parent).
    pub fn dumped(&mut self) {
        wait_for(|| !alive(self.pid), "dumped tree exits");
        self.unshare_pid = None;
    }

    pub fn kill(&mut self) {
        if self.pid > 0 && alive(self.pid) {
            // SIGKILL to a pid-namespace init takes the whole namespace down.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::SIGKILL);
            wait_for(|| !alive(self.pid), "container killed");
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
        if let Some(u) = self.unshare_pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(u), nix::sys::signal::SIGKILL);
        }
    }
}

/// A counter in the init's memory, written to /tmp/count every 20 ms (replaced by rename, so a
/// dump never catches it empty), with two children (so the tree has several pids) that sleep.
pub const COUNTER: &str =
    "sleep 1000 & sleep 1000 & i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.02; done";

pub fn alive(pid: i32) -> bool {
    // A zombie counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

pub fn ns_pid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("NSpid:"))?;
    l.split_whitespace().last()?.parse().ok()
}

pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()));
            }
        }
        i += 1;
    }
    out
}

pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(15), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!("fyt{}-{role}", tag());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success());
        // CRIU probes TCP repair over the loopback of the netns it runs in.
        let st = Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap();
        assert!(st.success());
        Netns(name)
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The cgroup mode the tests run in: `FERRY_CGROUP_MODE` (scripts/test.sh runs a second pass
/// with v2), else auto.
pub fn cgroup_mode() -> ferry_runtime::cgroups::CgroupModeSetting {
    std::env::var("FERRY_CGROUP_MODE").map(|m| m.parse().expect("FERRY_CGROUP_MODE is auto, v1 or v2")).unwrap_or_default()
}

/// A freezer cgroup `ferry-t<tag>-<role>` in the tests' cgroup mode (v1: in the freezer
/// hierarchy; v2: on the cgroup2 mount, also a hybrid host's unified one), removed on drop
/// (after thawing).
pub struct FreezerCg(pub PathBuf, pub ferry_runtime::cgroups::Freezer);

impl FreezerCg {
    pub fn new(role: &str) -> Option<FreezerCg> {
        let layout = ferry_runtime::cgroups::host_layout(cgroup_mode()).ok()?;
        let rel = format!("ferry-t{}-{role}", tag());
        let cg = ferry_runtime::cgroups::Cgroup::in_layout(&layout, rel);
        if layout.mode == ferry_runtime::cgroups::CgroupMode::V1 && !layout.root.join("freezer").is_dir() {
            return None;
        }
        let dir = cg.dir("freezer");
        std::fs::create_dir_all(&dir).ok()?;
        Some(FreezerCg(dir, cg.freezer()))
    }
    pub fn add_tree(&self, pid: i32) {
        move_tree(&self.0.join("cgroup.procs"), pid);
    }
}

impl Drop for FreezerCg {
    fn drop(&mut self) {
        let _ = self.1.thaw();
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Move a process tree into a cgroup (its `cgroup.procs`), again until no member is left out:
/// short-lived children come and go while it runs.
pub fn move_tree(procs: &Path, pid: i32) {
    for _ in 0..50 {
        for p in descendants(pid) {
            // A child may exit meanwhile (ESRCH): it no longer matters.
            let _ = std::fs::write(procs, p.to_string());
        }
        let inside = std::fs::read_to_string(procs).unwrap();
        if descendants(pid).iter().all(|p| !alive(*p) || inside.lines().any(|l| l == p.to_string())) {
            return;
        }
    }
    panic!("cannot move the tree of {pid} into {}", procs.display());
}
