//! Shared pieces of the root integration tests: a unique simulated host (data dir, run dir
//! and cgroup parent) whose guard stops and destroys every container and removes the cgroup
//! parent and any leftover mount when dropped, even after a failed assertion.
//!
//! The cgroup mode comes from `FERRY_CGROUP_MODE` (scripts/test.sh runs a second pass with
//! v2) and is passed explicitly to every ferry command ([`TestHost::cmd`], and the remote
//! ferry of a migration) and every runtime call ([`TestHost::runtime_host`]).
#![allow(dead_code)]

use ferry_runtime::cgroups::{Cgroup, CgroupLayout, CgroupMode, CgroupModeSetting};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub run: PathBuf,
    pub cgroup_parent: String,
    /// This host's config file (FERRY_HOST_CONFIG): never the machine's /etc/ferry.
    pub host_config: PathBuf,
    pub template: PathBuf,
    /// The simulated host's netns (/run/netns/NAME) every ferry command runs in, if any.
    pub netns: Option<String>,
    /// The cgroup mode of every ferry command and runtime call of this host.
    pub cgroup_mode: CgroupModeSetting,
}

/// The cgroup mode the tests run in: `FERRY_CGROUP_MODE`, else auto.
pub fn cgroup_mode() -> CgroupModeSetting {
    std::env::var("FERRY_CGROUP_MODE").map(|m| m.parse().expect("FERRY_CGROUP_MODE is auto, v1 or v2")).unwrap_or_default()
}

/// The kind of container the tests create: `FERRY_TEST_USERNS=1` makes every container
/// unprivileged (`userns = "on"` in each test host's config), `0` privileged; unset, the
/// host's default. scripts/test.sh runs a pass with the kind the default is not.
pub fn userns_setting() -> Option<&'static str> {
    match std::env::var("FERRY_TEST_USERNS").as_deref() {
        Ok("1") => Some("on"),
        Ok("0") => Some("off"),
        _ => None,
    }
}

/// A cached Debian template with redis-server (scripts/test.sh makes it through
/// scripts/lib/template-cache.sh and names it in `FERRY_TEST_TEMPLATE_DEBIAN_REDIS`); None after
/// saying why `test` is skipped.
pub fn debian_redis_template(test: &str) -> Option<PathBuf> {
    match std::env::var_os("FERRY_TEST_TEMPLATE_DEBIAN_REDIS").map(PathBuf::from) {
        Some(t) if t.join("usr/bin/redis-server").exists() => Some(t),
        _ => {
            eprintln!("{test}: skipped: needs the Debian template with redis-server (FERRY_TEST_TEMPLATE_DEBIAN_REDIS; scripts/test.sh makes it)");
            None
        }
    }
}

/// The cached `debian-systemd` template (a system container: systemd with cron, ssh, dbus and
/// redis-server; scripts/test.sh makes it and names it in `FERRY_TEST_TEMPLATE_DEBIAN_SYSTEMD`);
/// None after saying why `test` is skipped.
pub fn debian_systemd_template(test: &str) -> Option<PathBuf> {
    match std::env::var_os("FERRY_TEST_TEMPLATE_DEBIAN_SYSTEMD").map(PathBuf::from) {
        Some(t) if t.join("lib/systemd/systemd").exists() && t.join("usr/bin/redis-server").exists() => Some(t),
        _ => {
            eprintln!(
                "{test}: skipped: needs the debian-systemd template (FERRY_TEST_TEMPLATE_DEBIAN_SYSTEMD; scripts/test.sh makes it with \
                 scripts/make-template.sh debian-systemd)"
            );
            None
        }
    }
}

/// Root is needed for namespaces, cgroups and mounts; without it the test says why and stops.
pub fn need_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("{test}: skipped: needs root (namespaces, cgroups, mounts)");
        false
    }
}

fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}{n}{:x}", std::process::id(), t & 0xffff)
}

impl TestHost {
    pub fn new() -> TestHost {
        let u = unique();
        let dir = tempfile::Builder::new().prefix(&format!("ferry-t{u}-")).tempdir_in("/tmp").expect("tempdir");
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        let template = match std::env::var_os("FERRY_TEST_TEMPLATE") {
            Some(t) if Path::new(&t).join("bin/busybox").exists() => PathBuf::from(t),
            _ => {
                let t = dir.path().join("template");
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-template.sh");
                let out = Command::new(script).arg("busybox").arg(&t).output().expect("run make-template.sh");
                assert!(out.status.success(), "make-template.sh: {}", String::from_utf8_lossy(&out.stderr));
                t
            }
        };
        let host_config = dir.path().join("ferry.toml");
        let mut text = String::from("# host config of a test host: its paths come from FERRY_* variables\n");
        if let Some(u) = userns_setting() {
            text.push_str(&format!("userns = \"{u}\"\n"));
        }
        std::fs::write(&host_config, text).expect("write host config");
        TestHost { dir, data, run, cgroup_parent: format!("ferry-t{u}"), host_config, template, netns: None, cgroup_mode: cgroup_mode() }
    }

    /// Lines added to this host's config file (the kind of container the tests make stays).
    pub fn add_host_config(&self, lines: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.host_config).expect("open host config");
        std::io::Write::write_all(&mut f, lines.as_bytes()).expect("write host config");
    }

    /// A host whose ferry commands run in the network namespace at `netns_path` (entered
    /// with `nsenter --net` only, so mounts stay shared). Drop it before that netns goes.
    pub fn in_netns(netns_path: &str) -> TestHost {
        let mut h = TestHost::new();
        h.netns = Some(netns_path.to_string());
        h
    }

    pub fn cmd(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg(FERRY);
                c
            }
            None => Command::new(FERRY),
        };
        c.env("FERRY_DATA_DIR", &self.data)
            .env("FERRY_RUN_DIR", &self.run)
            .env("FERRY_CGROUP_PARENT", &self.cgroup_parent)
            .env("FERRY_CGROUP_MODE", self.cgroup_mode.as_str())
            .env("FERRY_HOST_CONFIG", &self.host_config)
            .env_remove("FERRY_STOP_MODE")
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `env FERRY_...=... ` naming this host, for a ferry started elsewhere (over ssh).
    pub fn env_prefix(&self) -> String {
        format!(
            "env FERRY_DATA_DIR={} FERRY_RUN_DIR={} FERRY_CGROUP_PARENT={} FERRY_CGROUP_MODE={} FERRY_HOST_CONFIG={}",
            self.data.display(),
            self.run.display(),
            self.cgroup_parent,
            self.cgroup_mode,
            self.host_config.display()
        )
    }

    pub fn ferry(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run ferry")
    }

    /// Run ferry, require success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ferry(args);
        assert!(
            o.status.success(),
            "ferry {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run ferry, require a failure (any code but 0) with a `ferry: ` message, return stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.ferry(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && o.status.code().is_some(),
            "ferry {args:?} should fail: {} stdout {} stderr {err}",
            o.status,
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(err.starts_with("ferry: "), "{err}");
        err
    }

    /// Run ferry, require exit `code` (see docs/exit-codes.md), return stderr.
    pub fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let o = self.ferry(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "ferry {args:?}: stdout {} stderr {err}", String::from_utf8_lossy(&o.stdout));
        err
    }

    /// Create and start a container from the test template.
    pub fn started(&self, ct: &str) {
        self.ok(&["create", ct, "--template", self.template.to_str().unwrap()]);
        self.ok(&["start", ct]);
    }

    /// tests/helpers/NAME.c built static (to copy into a container), once per test host.
    pub fn static_helper(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        if !out.exists() {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/helpers/{name}.c"));
            let o = Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&out).arg(&src).output().expect("run gcc");
            assert!(o.status.success(), "gcc {name}.c: {}", String::from_utf8_lossy(&o.stderr));
        }
        out
    }

    /// Whether container `ct` is of the unprivileged kind (a user namespace of its own).
    pub fn is_unprivileged(&self, ct: &str) -> bool {
        self.config(ct).security.kind.has_userns()
    }

    /// The config of container `ct`.
    pub fn config(&self, ct: &str) -> ferry_runtime::ContainerConfig {
        ferry_runtime::ContainerConfig::load(&self.data.join("conf").join(format!("{ct}.toml"))).expect("the container's config")
    }

    /// The first host ID of the range of unprivileged container `ct` (None: privileged).
    pub fn range_first(&self, ct: &str) -> Option<u32> {
        let cfg = self.config(ct);
        cfg.security.id_map.filter(|_| cfg.security.kind.has_userns()).map(|m| m.host_first)
    }

    /// PID 1 of a running container as seen from the host.
    pub fn pid(&self, ct: &str) -> i32 {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["status", ct, "--json"])).unwrap();
        v["pid"].as_i64().expect("running") as i32
    }

    /// Stdout of a command run inside.
    pub fn exec(&self, ct: &str, sh: &str) -> String {
        self.ok(&["exec", ct, "--", "sh", "-c", sh])
    }

    /// A counter in the container's memory: a shell loop writing its value to /root/ctr every
    /// 50 ms. Returns once it counts.
    pub fn start_counter(&self, ct: &str) {
        self.exec(ct, "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/ctr; sleep 0.05; done' >/dev/null 2>&1 &");
        wait_for("the counter to count", || self.counter(ct) > 3);
    }

    /// The counter's value (0 before it wrote one).
    pub fn counter(&self, ct: &str) -> u64 {
        std::fs::read_to_string(self.data.join(format!("private/{ct}/root/ctr"))).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// A process inside that holds a host file (the stdin `ferry exec` gave it): CRIU cannot
    /// dump the container while it lives.
    pub fn hold_host_file(&self, ct: &str) {
        let host_file = self.dir.path().join("host-file");
        std::fs::write(&host_file, "outside").unwrap();
        let st = self
            .cmd()
            .args(["exec", ct, "--", "sh", "-c", "exec 3<&0; sleep 1000 >/dev/null 2>&1 &"])
            .stdin(std::fs::File::open(&host_file).unwrap())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// This host as the runtime library sees it (for tests that call it directly).
    pub fn runtime_host(&self) -> ferry_runtime::Host {
        ferry_runtime::Host::new(&self.data, &self.run, self.cgroup_parent.clone()).with_cgroup_mode(self.cgroup_mode)
    }

    /// The cgroup layout this host's containers get.
    pub fn layout(&self) -> CgroupLayout {
        self.runtime_host().cgroup_layout().expect("the tests' cgroup mode resolves on this machine")
    }

    pub fn is_v1(&self) -> bool {
        self.layout().mode == CgroupMode::V1
    }

    /// The cgroup of container `ct` (or, with "", the host's cgroup parent).
    pub fn cgroup(&self, ct: &str) -> Cgroup {
        let rel = if ct.is_empty() { self.cgroup_parent.clone() } else { format!("{}/{ct}", self.cgroup_parent) };
        Cgroup::in_layout(&self.layout(), rel)
    }

    /// One file of a container's cgroup (v1: in `controller`'s hierarchy), trimmed.
    pub fn cg_file(&self, ct: &str, controller: &str, file: &str) -> String {
        let p = self.cgroup(ct).dir(controller).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())).trim().to_string()
    }

    /// Whether this host's cgroups have the controller of each limit in `limits` (names as
    /// `ferry set` takes them); if not, prints why `test` is skipped: the limit and the
    /// missing controller.
    pub fn has_controllers_for(&self, test: &str, limits: &[&str]) -> bool {
        let l = self.layout();
        let missing = self.missing_controllers();
        for limit in limits {
            if let Some((_, ctl)) = missing.iter().find(|(name, _)| name == limit) {
                eprintln!(
                    "{test}: skipped: {limit} needs the {ctl} controller, which the cgroup {} hierarchy at {} does not offer (FERRY_CGROUP_MODE={})",
                    l.mode.as_str(),
                    l.root.display(),
                    self.cgroup_mode
                );
                return false;
            }
        }
        true
    }

    /// The limits this host's cgroups have no controller for, with the controller each needs.
    pub fn missing_controllers(&self) -> Vec<(String, String)> {
        let l = self.layout();
        let have = Cgroup::in_layout(&l, self.cgroup_parent.clone()).controllers();
        ferry_runtime::cgroups::limits::unavailable_limits(l.mode, &have).into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// Every directory that may hold this host's cgroup parent, whatever the layout: each v1
    /// hierarchy, a pure v2 mount, a hybrid host's unified mount.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = Path::new("/sys/fs/cgroup");
        let mut v: Vec<PathBuf> = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "unified", "systemd"]
            .iter()
            .map(|c| root.join(c).join(&self.cgroup_parent))
            .collect();
        v.push(root.join(&self.cgroup_parent));
        v
    }

    /// Mount points below this host's directory.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(PathBuf::from).filter(|p| p.starts_with(self.dir.path())).collect()
    }

    /// Nothing of this host remains in the kernel: no mounts, no container cgroups.
    pub fn assert_clean(&self) {
        assert!(self.mounts().is_empty(), "mounts left: {:?}", self.mounts());
        for d in self.cgroup_dirs() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                let subs: Vec<_> = rd.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()).collect();
                assert!(subs.is_empty(), "cgroups left: {subs:?}");
            }
        }
    }
}

/// Poll `f` every 50 ms until it holds; panics after 10 s naming `what`.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn kill_cgroup_tree(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..200 {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            break;
        }
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
        let _ = std::fs::write(d.join("cgroup.freeze"), "0");
        for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for _ in 0..100 {
        match std::fs::remove_dir(d) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(10)),
            _ => break,
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Stop and destroy through ferry first (the normal path), then sweep by hand.
        if let Ok(rd) = std::fs::read_dir(self.data.join("conf")) {
            for e in rd.flatten() {
                if let Some(ct) = e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")) {
                    let _ = self.cmd().args(["destroy", "--force", ct]).stdout(Stdio::null()).stderr(Stdio::null()).status();
                }
            }
        }
        for d in self.cgroup_dirs() {
            kill_cgroup_tree(&d);
        }
        let mut m = self.mounts();
        m.sort();
        for p in m.iter().rev() {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
