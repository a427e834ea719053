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
}

impl Undo<'_> {
    fn run(&mut self) {
        // Passed-through devices go back while the netns still lives.
        if let Err(e) = hooks::net_hook_before_kill(&mut self.net) {
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
    let isolation = Applied::from_security(&cfg.security).map_err(|e| Error::ct(ct.as_str(), "start", e.to_string()))?;
    let prepared = isolation.prepare()?;
    let rules = devices::rules_for(&cfg.security.devices)?;

    let mut undo = Undo { host, cfg, cgroup: None, mounted: false, scripted: false, child: None, hooked: false, net: None };
    let mut res = start_inner(host, cfg, (&isolation, prepared), &rules, &mut undo);
    if res.is_err() {
        undo.run();
    }
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
        if let Some(n) = &st.net_objects {
            hooks::announce_after_start(n);
        }
    }
    res
}

fn start_inner(
    host: &Host,
    cfg: &ContainerConfig,
    (isolation, prepared): (&Applied, Prepared),
    rules: &[devices::DeviceRule],
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

    let plan = ChildPlan::new(&root, cfg, prepared)?;
    let (sync_r, sync_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;

    let flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET;
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

    let start_time =
        proc_stat(pid.as_raw()).map(|s| s.start_time).ok_or_else(|| Error::ct(ct.as_str(), "start", "PID 1 vanished right after clone"))?;
    // Before PID 1 runs any code of the container: what exec may join later.
    let namespaces = namespaces::record(pid.as_raw(), isolation.kind)?;
    cg.add_pid(pid.as_raw())?;
    undo.hooked = true;
    undo.net = hooks::net_hook_after_clone(host, cfg, pid.as_raw())?;

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
}

impl ChildPlan {
    fn new(root: &Path, cfg: &ContainerConfig, isolation: Prepared) -> Result<Self> {
        let cs = |s: &str| CString::new(s).map_err(|_| Error::Config(format!("{s:?} contains a NUL byte")));
        Ok(ChildPlan {
            root: root.to_path_buf(),
            hostname: cfg.effective_hostname().to_string(),
            argv: cfg.init.iter().map(|a| cs(a)).collect::<Result<_>>()?,
            env: INIT_ENV.iter().map(|e| cs(e)).collect::<Result<_>>()?,
            isolation,
            nofile: crate::cgroups::limits::numfiles_rlimit(&cfg.resources),
            dns: (!cfg.dns.is_empty()).then(|| (cfg.dns.clone(), std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())),
        })
    }
}

/// Ignored signals and the signal mask survive execve: the Rust runtime ignores SIGPIPE, and
/// a container's processes must start with the defaults (a shell pipeline inside relies on
/// SIGPIPE). Called right before exec in every child that runs container code.
pub fn default_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGPIPE, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
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
    nix::sys::stat::umask(Mode::empty());
    let root = &plan.root;
    mnt(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    // pivot_root wants the new root to be a mount point.
    mnt(Some(root), root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
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
    for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)] {
        let p = dev.join(name);
        nix::sys::stat::mknod(&p, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(major, minor))
            .map_err(|e| format!("mknod /dev/{name}: {e}"))?;
    }
    for d in ["pts", "shm"] {
        std::fs::create_dir(dev.join(d)).map_err(|e| format!("create /dev/{d}: {e}"))?;
    }
    nix::sys::stat::fchmodat(None, &dev.join("shm"), Mode::from_bits_truncate(0o1777), nix::sys::stat::FchmodatFlags::FollowSymlink)
        .map_err(|e| format!("chmod /dev/shm: {e}"))?;
    mnt(
        Some(Path::new("devpts")),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mnt(Some(Path::new("shm")), &dev.join("shm"), Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=65536k"))?;
    for (link, target) in
        [("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
    {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    crate::isolation::paths::apply()?;
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

    close_fds_except(keep_fd);
    redirect_stdio()?;
    if let Some(n) = plan.nofile {
        set_own_nofile(n)?;
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    default_signals();
    plan.isolation.apply_in_child()?;
    let e = nix::unistd::execve(&plan.argv[0], &plan.argv, &plan.env).unwrap_err();
    Err(format!("exec init {:?}: {e}; check the init command (`init` in the config or --init at create)", plan.argv[0]))
}

/// Set this process's RLIMIT_NOFILE (soft and hard) to `n` (`numfiles`).
pub(crate) fn set_own_nofile(n: u64) -> Result<(), String> {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "numfiles {n}: set RLIMIT_NOFILE: {e} (raising above ferry's own hard limit needs CAP_SYS_RESOURCE; choose a lower numfiles)"
        ));
    }
    Ok(())
}

/// Close every fd above 2 except `keep` (the close-on-exec error pipe).
pub(crate) fn close_fds_except(keep: i32) {
    let close_range = |lo: u32, hi: u32| {
        if lo <= hi {
            // SAFETY: close_range only closes descriptors; nothing here uses them afterwards.
            unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
        }
    };
    if keep > 2 {
        close_range(3, keep as u32 - 1);
        close_range(keep as u32 + 1, u32::MAX);
    } else {
        close_range(3, u32::MAX);
    }
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
