//! `start`: clone PID 1 into new pid, mount, uts, ipc and net namespaces, record them, put it in
//! its cgroup, run the host-side hooks, then let it build its root (/proc, /sys, /dev,
//! pivot_root, masked and read-only paths), close every launcher fd, install its seccomp
//! filter, drop capabilities and exec the init. Setup or exec errors come back over a
//! close-on-exec pipe, so the admin sees the real reason.

use crate::actions::{self, Action};
use crate::cgroups::{devices, Cgroup, LimitContext};
use crate::config::ContainerConfig;
use crate::container::{status, Status};
use crate::error::{Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::isolation::{namespaces, Applied, Prepared};
use crate::lock::ContainerLock;
use crate::proc_stat::proc_stat;
use crate::state::State;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where PID 1's stdout and stderr go, inside the container's own root (so CRIU can dump it).
pub const CONSOLE_LOG: &str = "/var/log/ferry-console.log";

const INIT_ENV: [&str; 4] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=linux", "container=ferry"];

/// Host state made so far by a start, undone in reverse if the start fails.
struct Undo<'a> {
    host: &'a Host,
    cfg: &'a ContainerConfig,
    cgroup: Option<Cgroup>,
    mounted: bool,
    /// The mount scripts ran: the umount scripts run when the start is undone.
    scripted: bool,
    child: Option<Pid>,
    hooked: bool,
    net: Option<crate::net::NetState>,
    /// The netns PID 1 was cloned into, opened before it ran any code of the container.
    netns: Option<crate::net::CtNetns>,
    /// The cgroup a system container's systemd owns (v1 hosts).
    systemd_cgroup: Option<PathBuf>,
}

impl Undo<'_> {
    fn run(&mut self) {
        // Passed-through devices go back while the netns still lives.
        if let Err(e) = hooks::net_hook_before_kill(&mut self.net, self.netns.as_ref()) {
            tracing::warn!("undo start of {}: {e}", self.cfg.ctid);
        }
        if let Some(pid) = self.child.take() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL, std::time::Duration::from_secs(5));
            if let Err(e) = cg.destroy() {
                tracing::warn!("undo start of {}: {e}", self.cfg.ctid);
            }
        }
        if let Some(d) = self.systemd_cgroup.take() {
            if let Err(e) = crate::sysenv::cgroup::remove_tree(&d) {
                tracing::warn!("undo start of {}: {e}", self.cfg.ctid);
            }
        }
        // Only what setup reported: a setup that failed has removed its own objects, and the
        // by-name sweep (no state) could touch another container's proxy entry for a shared
        // address.
        if let (true, Some(net)) = (self.hooked, self.net.as_ref()) {
            if let Err(e) = hooks::net_hook_after_stop(self.host, self.cfg, Some(net)) {
                tracing::warn!("undo start of {}: {e}", self.cfg.ctid);
            }
        }
        if self.scripted {
            actions::run_on_host_or_warn(self.host, self.cfg, Action::Umount);
        }
        if self.mounted {
            if let Err(e) = crate::storage::unmount_root(self.host, self.cfg) {
                tracing::warn!("undo start of {}: {e}", self.cfg.ctid);
            }
        }
        if self.scripted {
            actions::run_on_host_or_warn(self.host, self.cfg, Action::Postumount);
        }
        let _ = State::remove(self.host, &self.cfg.ctid);
    }
}

/// Host facts for the limit translation. The I/O device is the disk under the private area
/// (for the image backend: under the image file).
pub fn limit_context(host: &Host, cfg: &ContainerConfig, cg: &Cgroup) -> LimitContext {
    let area = match cfg.storage.kind {
        crate::config::StorageKind::Image => host.disk_image(&cfg.ctid),
        _ => host.private_dir(&cfg.ctid),
    };
    LimitContext::probe(cg, &area)
}

/// Device policy and resource limits of `cfg` on an existing cgroup (shared by start and
/// by restore, which puts restored processes into the same kind of cgroup).
pub fn configure_cgroup(host: &Host, cfg: &ContainerConfig, cg: &Cgroup, rules: &[devices::DeviceRule]) -> Result<()> {
    cg.set_device_policy(rules)?;
    cg.apply(&cfg.resources, &limit_context(host, cfg, cg))
}

/// Create the container's cgroup with its device policy and limits, ready for processes
/// (for restore: CRIU is then told to put the tree there). Removed again on failure.
pub fn prepare_cgroup(host: &Host, cfg: &ContainerConfig) -> Result<Cgroup> {
    let cg = host.cgroup(&cfg.ctid)?;
    cg.create()?;
    let rules = devices::rules_for(&cfg.security.devices);
    let res = rules.and_then(|r| configure_cgroup(host, cfg, &cg, &r));
    if let Err(e) = res {
        let _ = cg.destroy();
        return Err(e);
    }
    Ok(cg)
}

/// Start a stopped container. Returns its recorded state.
pub fn start(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<State> {
    let ct = lock.ctid();
    crate::container::ensure_single_threaded(ct, "start")?;
    match status(host, ct)?.0 {
        Status::Running => {
            return Err(Error::already_running(
                ct.as_str(),
                "start",
                format!("container is already running; `ferry stop {ct}` or `ferry restart {ct}`"),
            ))
        }
        // Mounted by `ferry mount`, or leftovers of a container that died or a failed stop:
        // unmounted (with its scripts) and mounted again, as vzctl does.
        Status::Mounted => {
            actions::run_on_host_or_warn(host, cfg, Action::Umount);
            crate::container::teardown(host, cfg, None)?;
            actions::run_on_host_or_warn(host, cfg, Action::Postumount);
        }
        Status::Stopped => {
            let _ = State::remove(host, ct);
        }
    }
    if cfg.init.is_empty() {
        return Err(Error::ct(ct.as_str(), "start", "the config has no init command; set one with `init = [...]` in the config"));
    }
    let isolation = Applied::from_security(&crate::sysenv::security(cfg)).map_err(|e| Error::ct(ct.as_str(), "start", e.to_string()))?;
    let prepared = isolation.prepare()?;
    let rules = devices::rules_for(&cfg.security.devices)?;

    // A system container starts inside its monitor, which stays as PID 1's parent.
    let mut res = if crate::sysenv::is_system(cfg) {
        crate::sysenv::monitor::run(host, cfg, MONITORED, "start", |console| {
            attempt(host, cfg, (&isolation, prepared), &rules, Some(console)).map(|st| (st.clone(), st))
        })
    } else {
        attempt(host, cfg, (&isolation, prepared), &rules, None)
    };
    // The container's start script runs inside once it runs; a failing one stops it again.
    if res.is_ok() {
        if let Err(e) = actions::run_inside(host, cfg, Action::Start) {
            if let Err(se) = crate::container::stop_with(host, lock, cfg, crate::container::Shutdown::Fast) {
                tracing::warn!("container {ct}: stop after its failed start script: {se}");
            }
            res = Err(e);
        }
    }
    // Announce once the container runs (the CLI is done cloning, so the helper thread that
    // announces inside a netns is allowed now); 3 frames 100 ms apart.
    if let Ok(st) = &res {
        hooks::announce_after_start(st);
    }
    res
}

/// What a system container's monitor calls when PID 1 ends or reboots.
pub(crate) const MONITORED: crate::sysenv::monitor::Lifecycle = crate::sysenv::monitor::Lifecycle { end: end_after_init, start_again };

/// PID 1 of `state` is gone: the container's host state goes, with its umount scripts.
fn end_after_init(host: &Host, _lock: &ContainerLock, cfg: &ContainerConfig, state: &State) -> Result<()> {
    actions::run_on_host_or_warn(host, cfg, Action::Umount);
    crate::container::teardown(host, cfg, Some(state))?;
    actions::run_on_host_or_warn(host, cfg, Action::Postumount);
    Ok(())
}

/// Start again inside the monitor after a reboot (the monitor is the caller), with the
/// container's start script and address announcements as a start has.
fn start_again(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, console: &crate::sysenv::monitor::Console) -> Result<State> {
    let ct = lock.ctid();
    let isolation = Applied::from_security(&crate::sysenv::security(cfg)).map_err(|e| Error::ct(ct.as_str(), "start", e.to_string()))?;
    let prepared = isolation.prepare()?;
    let rules = devices::rules_for(&cfg.security.devices)?;
    let st = attempt(host, cfg, (&isolation, prepared), &rules, Some(console))?;
    if let Err(e) = actions::run_inside(host, cfg, Action::Start) {
        tracing::warn!("container {ct}: start script after a reboot: {e}");
    }
    hooks::announce_after_start(&st);
    Ok(st)
}

/// One try at starting: everything it made is removed again when it fails.
fn attempt(
    host: &Host,
    cfg: &ContainerConfig,
    isolation: (&Applied, Prepared),
    rules: &[devices::DeviceRule],
    console: Option<&crate::sysenv::monitor::Console>,
) -> Result<State> {
    let mut undo =
        Undo { host, cfg, cgroup: None, mounted: false, scripted: false, child: None, hooked: false, net: None, netns: None, systemd_cgroup: None };
    let res = start_inner(host, cfg, isolation, rules, console, &mut undo);
    if res.is_err() {
        undo.run();
    }
    res
}

fn start_inner(
    host: &Host,
    cfg: &ContainerConfig,
    (isolation, prepared): (&Applied, Prepared),
    rules: &[devices::DeviceRule],
    console: Option<&crate::sysenv::monitor::Console>,
    undo: &mut Undo<'_>,
) -> Result<State> {
    let ct = &cfg.ctid;
    let cg = host.cgroup(ct)?;
    if !cg.pids()?.is_empty() {
        return Err(Error::ct(
            ct.as_str(),
            "start",
            format!("cgroup {} still has processes {:?}; run `ferry stop {ct}` first", cg.rel(), cg.pids()?),
        ));
    }
    cg.create()?;
    undo.cgroup = Some(cg.clone());
    configure_cgroup(host, cfg, &cg, rules)?;

    actions::run_on_host(host, cfg, Action::Premount)?;
    let root = crate::storage::mount_root(host, cfg)?;
    undo.mounted = true;
    undo.scripted = true;
    actions::run_on_host(host, cfg, Action::Mount)?;

    // A system container: its systemd's own cgroup (v1), and what its PID 1 sets up.
    let mut systemd = None;
    let system = match console {
        Some(c) => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
            let sd = crate::sysenv::cgroup::SystemdCgroup::of(&cg, &mountinfo)?;
            undo.systemd_cgroup = Some(sd.dir.clone());
            sd.create(&cg)?;
            if let Some(map) = crate::storage::root_idmap(cfg)? {
                sd.delegate(&map)?;
            }
            systemd = Some(sd);
            Some(crate::sysenv::child::ChildEnv { console: c.pty.path.clone(), cgroup_mounts: crate::sysenv::cgroup::child_mounts(&cg, &mountinfo) })
        }
        None => None,
    };
    let plan = ChildPlan::new(&root, cfg, prepared, system)?;
    let (sync_r, sync_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;

    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET;
    // The user namespace comes with the others, so that it owns them all.
    let idmap = crate::storage::root_idmap(cfg)?;
    if idmap.is_some() {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork(); the
    // process is single-threaded (the CLI guarantees it), so the child may allocate freely.
    let ret = unsafe { libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    if ret < 0 {
        return Err(Error::ct(ct.as_str(), "start", format!("clone: {}", std::io::Error::last_os_error())));
    }
    if ret == 0 {
        drop(sync_w);
        drop(err_r);
        child_main(plan, sync_r, err_w);
    }
    drop(sync_r);
    drop(err_w);
    let pid = Pid::from_raw(ret as i32);
    undo.child = Some(pid);
    if let Some(map) = &idmap {
        crate::userns::write_maps(pid.as_raw(), map)
            .map_err(|e| Error::ct(ct.as_str(), "start", format!("write the user namespace's ID mapping {map}: {e}")))?;
    }

    let start_time =
        proc_stat(pid.as_raw()).map(|s| s.start_time).ok_or_else(|| Error::ct(ct.as_str(), "start", "PID 1 vanished right after clone"))?;
    // Before PID 1 runs any code of the container: what exec may join later.
    let namespaces = namespaces::record(pid.as_raw(), isolation.kind)?;
    match &systemd {
        Some(sd) => sd.join(&cg, pid.as_raw())?,
        None => cg.add_pid(pid.as_raw())?,
    }
    let netns = crate::net::CtNetns::of_new_process(pid.as_raw())?;
    undo.hooked = true;
    undo.net = hooks::net_hook_after_clone(host, cfg, pid.as_raw(), &netns)?;
    undo.netns = Some(netns);

    // Release the child, then wait for exec (EOF) or its error message.
    let mut w = std::fs::File::from(sync_w);
    w.write_all(b"1").map_err(|e| Error::ct(ct.as_str(), "start", format!("release PID 1: {e}")))?;
    drop(w);
    let mut msg = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(Error::ct(ct.as_str(), "start", msg));
    }

    let st = State {
        start_time,
        net_objects: undo.net.clone(),
        resources: Some(cfg.resources.clone()),
        namespaces,
        isolation: Some(isolation.clone()),
        system: console.map(|c| crate::sysenv::SystemState {
            monitor_pid: std::process::id() as i32,
            console: c.pty.path.clone(),
            console_socket: c.socket.clone(),
            systemd_cgroup: systemd.as_ref().map(|s| s.dir.clone()).unwrap_or_default(),
        }),
        ..State::new(ct.clone(), pid.as_raw(), &cg, root)
    };
    st.save(host)?;
    // PID 1 outlives this process; the host's init reaps it.
    undo.child = None;
    undo.cgroup = None;
    undo.mounted = false;
    undo.scripted = false;
    undo.hooked = false;
    undo.net = None;
    undo.systemd_cgroup = None;
    Ok(st)
}

/// Everything the child needs, prepared before clone.
struct ChildPlan {
    root: PathBuf,
    hostname: String,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// Capabilities and seccomp filter, compiled before clone.
    isolation: Prepared,
    /// RLIMIT_NOFILE for PID 1 (`numfiles`), inherited by everything it starts.
    nofile: Option<u64>,
    /// Resolver settings to write into /etc/resolv.conf, with the host's resolv.conf (for
    /// `inherit`), read before the child leaves the host's root.
    dns: Option<(crate::config::Dns, String)>,
    /// It runs in a user namespace of its own (mapped by the parent before release).
    userns: bool,
    /// Host device nodes (paths below /dev) bound into its /dev beyond the defaults (`userns`
    /// only: the privileged kind makes its own nodes).
    dev_binds: Vec<PathBuf>,
    /// A system container's environment (console, cgroup namespace, API file systems).
    system: Option<crate::sysenv::child::ChildEnv>,
}

impl ChildPlan {
    fn new(root: &Path, cfg: &ContainerConfig, isolation: Prepared, system: Option<crate::sysenv::child::ChildEnv>) -> Result<Self> {
        let cs = |s: &str| CString::new(s).map_err(|_| Error::NulByte(format!("{s:?}")));
        Ok(ChildPlan {
            root: root.to_path_buf(),
            hostname: cfg.effective_hostname().to_string(),
            argv: cfg.init.iter().map(|a| cs(a)).collect::<Result<_>>()?,
            env: INIT_ENV.iter().map(|e| cs(e)).collect::<Result<_>>()?,
            isolation,
            nofile: crate::cgroups::limits::numfiles_rlimit(&cfg.resources),
            dns: (!cfg.dns.is_empty()).then(|| (cfg.dns.clone(), std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())),
            userns: cfg.security.kind.has_userns(),
            dev_binds: if cfg.security.kind.has_userns() {
                crate::userns::devices::node_binds(&cfg.security.devices, Path::new("/dev"))?.into_iter().map(|b| b.path).collect()
            } else {
                Vec::new()
            },
            system,
        })
    }
}

fn child_main(plan: ChildPlan, sync_r: OwnedFd, err_w: OwnedFd) -> ! {
    let mut go = [0u8; 1];
    let released = matches!(std::fs::File::from(sync_r).read(&mut go), Ok(1));
    if !released {
        // The parent gave up; nothing to report to.
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(1) };
    }
    let err = match setup_and_exec(&plan, err_w.as_raw_fd()) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let mut f = std::fs::File::from(err_w);
    let _ = f.write_all(err.as_bytes());
    // SAFETY: _exit is always safe to call; it skips the parent's atexit handlers.
    unsafe { libc::_exit(1) }
}

fn mnt(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> Result<(), String> {
    nix::mount::mount(src, target, fstype, flags, data).map_err(|e| {
        let what = fstype.map(str::to_string).or_else(|| src.map(|s| s.display().to_string())).unwrap_or_default();
        format!("mount {what} on {}: {e}", target.display())
    })
}

fn setup_and_exec(plan: &ChildPlan, keep_fd: i32) -> Result<std::convert::Infallible, String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if plan.system.is_some() {
        // The parent has put this process into the container's cgroups by now.
        crate::sysenv::child::enter_cgroup_namespace()?;
    }
    nix::sys::stat::umask(Mode::empty());
    mnt(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    // pivot_root wants the new root to be a mount point.
    mnt(Some(&plan.root), &plan.root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    nix::unistd::chdir(&plan.root).map_err(|e| format!("chdir {}: {e}", plan.root.display()))?;
    // From here on, the root is reached relative to the working directory: as root of its
    // user namespace, PID 1 can no longer pass the host's directories above it.
    if plan.userns {
        crate::userns::become_root()?;
    }
    let root = Path::new(".");
    for d in ["proc", "sys", "dev"] {
        let p = root.join(d);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir(&p).map_err(|e| format!("create /{d} in the container: {e}"))?;
        }
    }
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some(Path::new("proc")), &root.join("proc"), Some("proc"), nse, None)?;
    mnt(Some(Path::new("sysfs")), &root.join("sys"), Some("sysfs"), nse | MsFlags::MS_RDONLY, None)?;
    let dev = root.join("dev");
    mnt(Some(Path::new("tmpfs")), &dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k"))?;
    make_dev_nodes(&dev, plan.userns, &plan.dev_binds)?;
    for d in ["pts", "shm"] {
        std::fs::create_dir(dev.join(d)).map_err(|e| format!("create /dev/{d}: {e}"))?;
    }
    nix::sys::stat::fchmodat(None, &dev.join("shm"), Mode::from_bits_truncate(0o1777), nix::sys::stat::FchmodatFlags::FollowSymlink)
        .map_err(|e| format!("chmod /dev/shm: {e}"))?;
    // Its own devpts instance; new ptys are group tty (gid 5: mapped in every range), as
    // runc and LXC mount it and as `mesg` and logins expect.
    mnt(
        Some(Path::new("devpts")),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mnt(Some(Path::new("shm")), &dev.join("shm"), Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=65536k"))?;
    for (link, target) in
        [("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
    {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    if let Some(env) = &plan.system {
        crate::sysenv::child::bind_console(root, env)?;
    }
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    crate::isolation::paths::apply()?;
    if let Some(env) = &plan.system {
        crate::sysenv::child::after_pivot(env)?;
    }
    nix::unistd::sethostname(&plan.hostname).map_err(|e| format!("sethostname {}: {e}", plan.hostname))?;
    // Like vzctl: the container's /etc/hostname follows the configured name (inside the new
    // root, so a symlink there cannot point the write at the host).
    if std::fs::symlink_metadata("/etc/hostname").map(|m| m.is_file()).unwrap_or(false)
        && std::fs::read_to_string("/etc/hostname").map(|h| h.trim() != plan.hostname).unwrap_or(false)
    {
        let _ = std::fs::write("/etc/hostname", format!("{}\n", plan.hostname));
    }
    // Like vzctl: the saved name servers and search domains at every start (best effort, as
    // the hostname: a container without a writable /etc still starts).
    if let Some((dns, host_resolv)) = &plan.dns {
        let _ = crate::container::set::write_resolv_conf(dns, host_resolv);
    }

    super::child::close_fds_except(keep_fd);
    match plan.system {
        Some(_) => crate::sysenv::child::console_stdio()?,
        None => redirect_stdio()?,
    }
    if let Some(n) = plan.nofile {
        super::child::set_own_nofile(n)?;
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    super::child::default_signals();
    plan.isolation.apply_in_child()?;
    let e = nix::unistd::execve(&plan.argv[0], &plan.argv, &plan.env).unwrap_err();
    Err(format!("exec init {:?}: {e}; check the init command (`init` in the config or --init at create)", plan.argv[0]))
}

/// The device nodes of every container's /dev: name, major, minor.
pub const DEV_NODES: [(&str, u64, u64); 6] = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// [`DEV_NODES`] in the container's new /dev (a tmpfs at `dev`): made with mknod, or, in a
/// user namespace (where device nodes cannot be made, and would not open on its own tmpfs),
/// the host's nodes bound onto empty files, with those of `extra` (paths below /dev). CRIU
/// takes those binds as external mounts (`restore::dev_externals`).
fn make_dev_nodes(dev: &Path, bind_from_host: bool, extra: &[PathBuf]) -> Result<(), String> {
    for (name, major, minor) in DEV_NODES {
        let p = dev.join(name);
        if bind_from_host {
            std::fs::File::create(&p).map_err(|e| format!("create /dev/{name}: {e}"))?;
            mnt(Some(&Path::new("/dev").join(name)), &p, None, MsFlags::MS_BIND, None)?;
        } else {
            nix::sys::stat::mknod(&p, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(major, minor))
                .map_err(|e| format!("mknod /dev/{name}: {e}"))?;
        }
    }
    for rel in extra {
        let p = dev.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::File::create(&p).map_err(|e| format!("create /dev/{}: {e}", rel.display()))?;
        mnt(Some(&Path::new("/dev").join(rel)), &p, None, MsFlags::MS_BIND, None)?;
    }
    Ok(())
}

/// stdin from the container's /dev/null, stdout and stderr appended to the console log.
fn redirect_stdio() -> Result<(), String> {
    use nix::fcntl::OFlag;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, Mode::empty()).map_err(|e| format!("open /dev/null: {e}"))?;
    if let Some(dir) = Path::new(CONSOLE_LOG).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let log = nix::fcntl::open(CONSOLE_LOG, OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT, Mode::from_bits_truncate(0o640))
        .map_err(|e| format!("open {CONSOLE_LOG}: {e}"))?;
    for (from, to) in [(null, 0), (log, 1), (log, 2)] {
        nix::unistd::dup2(from, to).map_err(|e| format!("dup2: {e}"))?;
    }
    for fd in [null, log] {
        if fd > 2 {
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}
