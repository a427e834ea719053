//! Running commands inside a running container: `exec` (stdio passed through, exit code
//! passed back), `enter` (a shell on a pty from the container's own devpts), and
//! [`run_in_container`] for the runtime's own work inside (passwords, hostname).

use crate::container::running_state;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::isolation::namespaces::{self, NsKind};
use crate::isolation::{Applied, Prepared};
use crate::state::State;
use nix::sys::signal::{SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// What a process needs to become part of a running container: the namespaces ferry
/// recorded (checked against PID 1's), its cgroup (from ferry's state) and the isolation it
/// runs with (from ferry's state, else its config). Nothing here comes from what the
/// container's processes report about themselves.
struct Joiner {
    ns: Vec<(NsKind, File)>,
    cgroup_procs: Vec<File>,
    /// A system container's: the first of these that takes the process (v2: systemd's cgroup,
    /// else its init.scope).
    cgroup_procs_first_of: Vec<File>,
    isolation: Prepared,
    /// A system container: the process gets a cgroup namespace rooted at the cgroups it
    /// joined, as PID 1 has, so paths in /proc/self/cgroup are the ones systemd knows.
    cgroup_namespace: bool,
}

impl Joiner {
    fn open(host: &Host, ct: &Ctid, st: &State, op: &'static str) -> Result<Self> {
        let applied = match &st.isolation {
            Some(a) => a.clone(),
            None => Applied::from_security(&crate::container::load_config(host, ct)?.security)?,
        };
        let isolation = applied.prepare()?;
        let ns = namespaces::open_recorded(ct.as_str(), op, st.pid, st.start_time, &st.namespaces)?;
        let cg = st.cgroup();
        let (all, first_of) = match &st.system {
            Some(sys) => crate::sysenv::cgroup::SystemdCgroup::recorded(&cg, &sys.systemd_cgroup).exec_procs(&cg),
            None => (cg.procs_files(), Vec::new()),
        };
        let open = |p: &std::path::PathBuf| std::fs::OpenOptions::new().write(true).open(p).map_err(|e| Error::io("open cgroup", p, e));
        let cgroup_procs = all.iter().map(open).collect::<Result<Vec<_>>>()?;
        // Those that do not exist (yet) are no candidates.
        let cgroup_procs_first_of = first_of.iter().filter_map(|p| open(p).ok()).collect();
        Ok(Joiner { ns, cgroup_procs, cgroup_procs_first_of, isolation, cgroup_namespace: st.system.is_some() })
    }

    /// Join every namespace (the pid namespace applies to children forked after this).
    /// The caller becomes non-dumpable first: its children appear in the container's pid
    /// namespace while they still run ferry's code (and /proc/PID/exe is ferry's binary), so
    /// the container's root must not reach into them.
    fn setns_all(&self, ct: &Ctid) -> Result<()> {
        make_undumpable().map_err(|e| Error::ct(ct.as_str(), "exec", e))?;
        for (kind, f) in &self.ns {
            nix::sched::setns(f.as_fd(), kind.flag())
                .map_err(|e| Error::ct(ct.as_str(), "exec", format!("join the {} namespace: {e}", kind.name())))?;
        }
        Ok(())
    }

    /// Whether it joins a user namespace (an unprivileged container's).
    fn joins_userns(&self) -> bool {
        self.ns.iter().any(|(k, _)| *k == NsKind::User)
    }

    /// In the forked child, once joined: root of the container's user namespace (if it has
    /// one), so that what it creates belongs to the container.
    fn become_root(&self) -> std::result::Result<(), String> {
        if self.joins_userns() {
            crate::userns::become_root()?;
        }
        Ok(())
    }

    /// In the forked child: root of its user namespace, new session, own cgroup, `/`.
    fn finish_in_child(&self) -> std::result::Result<(), String> {
        self.become_root()?;
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        for mut f in &self.cgroup_procs {
            // "0" means the writing process.
            f.write_all(b"0").map_err(|e| format!("join cgroup: {e}"))?;
        }
        if !self.cgroup_procs_first_of.is_empty() && !self.cgroup_procs_first_of.iter().any(|mut f| f.write_all(b"0").is_ok()) {
            return Err("join cgroup: neither the container's systemd cgroup nor its init.scope takes a process".into());
        }
        if self.cgroup_namespace {
            crate::sysenv::child::enter_cgroup_namespace()?;
        }
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
    }
}

/// PR_SET_DUMPABLE 0: /proc/PID of this process (and of its children until they exec) is
/// closed to anyone without CAP_SYS_PTRACE over the host.
fn make_undumpable() -> std::result::Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!("prctl(PR_SET_DUMPABLE): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

static FORWARD_SIG: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    FORWARD_SIG.store(sig, Ordering::SeqCst);
}

/// Install handlers (without SA_RESTART, so waits are interrupted) for the signals forwarded
/// to a child.
fn install_forwarding(sigs: &[Signal]) {
    let act =
        nix::sys::signal::SigAction::new(SigHandler::Handler(remember_signal), nix::sys::signal::SaFlags::empty(), nix::sys::signal::SigSet::empty());
    for s in sigs {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(*s, &act) };
    }
}

fn take_forward() -> Option<Signal> {
    let s = FORWARD_SIG.swap(0, Ordering::SeqCst);
    Signal::try_from(s).ok().filter(|_| s != 0)
}

/// Wait for `child`, forwarding remembered signals; the exit code (128+N when killed by N).
fn wait_forwarding(child: Pid) -> Result<i32> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                if let Some(sig) = take_forward() {
                    let _ = nix::sys::signal::kill(child, sig);
                }
            }
            Err(e) => return Err(Error::sys("wait for the command", e)),
        }
    }
}

fn exec_env() -> Vec<CString> {
    let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".into());
    [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".into(),
        format!("TERM={term}"),
        "container=ferry".into(),
    ]
    .into_iter()
    .filter_map(|s| CString::new(s).ok())
    .collect()
}

/// The exit code when `execvpe` fails with `e`: as a shell (and podman exec) says, 127 for a
/// command that is not there, 126 for one that cannot run; 125 for anything else.
pub fn exec_failure_code(e: nix::errno::Errno) -> u8 {
    use nix::errno::Errno;
    match e {
        Errno::ENOENT | Errno::ENOTDIR => crate::exit::EXEC_NOT_FOUND,
        Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR | Errno::EPERM => crate::exit::EXEC_CANNOT_RUN,
        _ => crate::exit::EXEC_OWN_FAILURE,
    }
}

fn exec_in_child(j: &Joiner, argv: &[CString], env: &[CString], nofile: Option<u64>) -> ! {
    let r: std::result::Result<(), (String, u8)> = j
        .finish_in_child()
        .and_then(|()| {
            super::child::close_fds_except(-1);
            if let Some(n) = nofile {
                super::child::set_own_nofile(n)?;
            }
            super::child::default_signals();
            j.isolation.apply_in_child()
        })
        .map_err(|m| (m, crate::exit::EXEC_OWN_FAILURE))
        .and_then(|()| {
            let e = nix::unistd::execvpe(&argv[0], argv, env).unwrap_err();
            Err((format!("{:?}: {e}", argv[0]), exec_failure_code(e)))
        });
    let (msg, code) = r.unwrap_err();
    let _ = writeln!(std::io::stderr(), "ferry: exec {msg}");
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(i32::from(code)) }
}

/// Run `argv` inside the running container `ct`; returns its exit code (128+N if killed by
/// signal N). stdin/stdout/stderr are this process's. SIGINT, SIGTERM, SIGHUP and SIGQUIT
/// received meanwhile are passed on. The calling process joins the container's namespaces.
pub fn exec(host: &Host, ct: &Ctid, argv: &[String]) -> Result<i32> {
    if argv.is_empty() {
        return Err(Error::ct(ct.as_str(), "exec", "no command given: ferry exec CTID -- CMD [ARG...]"));
    }
    crate::container::ensure_single_threaded(ct, "exec")?;
    let st = running_state(host, ct, "exec")?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| Error::ct(ct.as_str(), "exec", "an argument contains a NUL byte")))
        .collect::<Result<_>>()?;
    let env = exec_env();
    // The container's numfiles (as in force now, live changes included) holds for what runs
    // in it too.
    let nofile = crate::container::load_config(host, ct)
        .ok()
        .and_then(|c| crate::cgroups::limits::numfiles_rlimit(&crate::container::effective_resources(&c, Some(&st))));
    let j = Joiner::open(host, ct, &st, "exec")?;
    j.setns_all(ct)?;
    install_forwarding(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT]);
    // SAFETY: single-threaded process; the child only execs or exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => exec_in_child(&j, &argv, &env, nofile),
        ForkResult::Parent { child } => {
            drop(j);
            wait_forwarding(child)
        }
    }
}

/// [`exec`] from a forked child, so the caller stays in its own namespaces (for the runtime's
/// own commands inside, such as action scripts). The command's exit code; a failure to get
/// it running comes back as the error.
pub fn exec_detached(host: &Host, ct: &Ctid, argv: &[String]) -> Result<i32> {
    crate::container::ensure_single_threaded(ct, "exec")?;
    running_state(host, ct, "exec")?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: single-threaded process; the child exits without returning.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(err_r);
            let code = match exec(host, ct, argv) {
                Ok(c) => c,
                Err(e) => {
                    let _ = File::from(err_w).write_all(e.to_string().as_bytes());
                    i32::from(crate::exit::EXEC_OWN_FAILURE)
                }
            };
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            let code = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => c,
                Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
                _ => i32::from(crate::exit::EXEC_OWN_FAILURE),
            };
            if msg.is_empty() {
                Ok(code)
            } else {
                Err(Error::ct(ct.as_str(), "exec", msg))
            }
        }
    }
}

/// Run `f` inside the container: in its namespaces when it runs, else chrooted into its
/// private area. Runs in a forked child, so the caller stays where it is. The child has the
/// container's capabilities, plus SYS_ADMIN with `privileged` (for sethostname in the
/// container's UTS namespace); no seccomp filter (it runs ferry's code, not the container's).
pub fn run_in_container<F>(host: &Host, ct: &Ctid, privileged: bool, f: F) -> Result<()>
where
    F: FnOnce() -> std::result::Result<(), String>,
{
    crate::container::ensure_single_threaded(ct, "set")?;
    let (status, st) = crate::container::status(host, ct)?;
    let joiner = st.as_ref().map(|st| Joiner::open(host, ct, st, "set")).transpose()?;
    // A stopped container's files are worked on as host root, in the host's user namespace:
    // with the privileged kind's capabilities at most, never an unprivileged kind's full set.
    let mut keep = match &joiner {
        Some(j) => j.isolation.caps.clone(),
        None => {
            let sec = crate::container::load_config(host, ct)?.security;
            let on_host = if sec.kind.has_userns() { crate::config::Security { cap_drop: sec.cap_drop, ..Default::default() } } else { sec };
            crate::capabilities::container_caps(&on_host)?
        }
    };
    if privileged {
        keep.insert(caps::Capability::CAP_SYS_ADMIN);
    }
    // A stopped container's files as they are on disk (host root writes them; an idmapped
    // root would refuse): its private area, or for the image backend the image, mounted for
    // it (and unmounted again afterwards) or where `ferry mount` mounted it.
    let cfg = crate::container::load_config(host, ct)?;
    let image = cfg.storage.kind == crate::config::StorageKind::Image;
    let temp_mount = joiner.is_none() && image && status == crate::container::Status::Stopped;
    let private = if joiner.is_none() && image {
        if temp_mount {
            crate::storage::mount_root_unmapped(host, &cfg)?
        } else {
            crate::storage::files_path(host, &cfg)
        }
    } else {
        host.private_dir(ct)
    };
    let res = fork_in_container(ct, joiner.as_ref(), &private, privileged, &keep, f);
    if temp_mount {
        if let Err(e) = crate::storage::unmount_root(host, &cfg) {
            tracing::warn!("container {ct}: unmount after the change: {e}");
        }
    }
    res
}

/// [`run_in_container`]'s fork: the child joins `joiner`'s namespaces, or chroots into `files`.
fn fork_in_container<F>(ct: &Ctid, joiner: Option<&Joiner>, files: &std::path::Path, privileged: bool, keep: &caps::CapsHashSet, f: F) -> Result<()>
where
    F: FnOnce() -> std::result::Result<(), String>,
{
    let private = files;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: single-threaded process; the child exits without returning.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(err_r);
            let r = (|| {
                make_undumpable()?;
                match joiner {
                    Some(j) => {
                        for (kind, f) in &j.ns {
                            nix::sched::setns(f.as_fd(), kind.flag()).map_err(|e| format!("join the {} namespace: {e}", kind.name()))?;
                        }
                        if privileged {
                            j.become_root()?;
                            nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
                        } else {
                            j.finish_in_child()?;
                        }
                    }
                    None => {
                        nix::unistd::chroot(private).map_err(|e| format!("chroot {}: {e}", private.display()))?;
                        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
                    }
                }
                crate::capabilities::restrict_to(keep).map_err(|e| e.to_string())?;
                f()
            })();
            let code = match r {
                Ok(()) => 0,
                Err(m) => {
                    let _ = File::from(err_w).write_all(m.as_bytes());
                    1
                }
            };
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            let _ = waitpid(child, None);
            if msg.is_empty() {
                Ok(())
            } else {
                Err(Error::ct(ct.as_str(), "set", msg))
            }
        }
    }
}

static WINCH: AtomicI32 = AtomicI32::new(0);
extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(1, Ordering::SeqCst);
}

fn copy_winsize(from: i32, to: i32) {
    let mut ws: libc::winsize = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: ioctls with a valid winsize buffer on descriptors we own.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// An interactive shell inside the running container on a pty from the container's own
/// devpts (so a checkpoint of the container sees only its own ptys). Returns the shell's exit
/// code.
pub fn enter(host: &Host, ct: &Ctid) -> Result<i32> {
    enter_with(host, ct, &[])
}

/// [`enter`] running `cmd` (looked up in the container's PATH) on the pty instead of a login
/// shell, when it is not empty (vzctl's `enter --exec`); returns its exit code.
pub fn enter_with(host: &Host, ct: &Ctid, cmd: &[String]) -> Result<i32> {
    crate::container::ensure_single_threaded(ct, "enter")?;
    let st = running_state(host, ct, "enter")?;
    // Joined first: the pty and the shell are looked up in the container's own mount
    // namespace and root, never through a path the container could bend.
    let j = Joiner::open(host, ct, &st, "enter")?;
    j.setns_all(ct)?;
    let master = open_container_ptmx().map_err(|m| Error::ct(ct.as_str(), "enter", m))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int; TIOCGPTPEER returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock);
        libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY)
    };
    if slave < 0 {
        return Err(Error::ct(ct.as_str(), "enter", format!("open the pty peer: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: the ioctl returned a fresh descriptor that we now own.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let shell = if std::fs::symlink_metadata("/bin/bash").is_ok() { "/bin/bash" } else { "/bin/sh" };
    let argv: Vec<CString> = if cmd.is_empty() {
        vec![CString::new(shell).expect("no NUL"), CString::new("-l").expect("no NUL")]
    } else {
        cmd.iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| Error::ct(ct.as_str(), "enter", "an argument contains a NUL byte")))
            .collect::<Result<_>>()?
    };
    let env = exec_env();
    let stdin_tty = nix::unistd::isatty(0).unwrap_or(false);
    if stdin_tty {
        copy_winsize(0, master.as_raw_fd());
    }
    // SAFETY: single-threaded process; the child only execs or exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(master);
            let r: std::result::Result<(), (String, u8)> = j
                .finish_in_child()
                .and_then(|()| {
                    let s = slave.as_raw_fd();
                    // SAFETY: make the pty our controlling terminal (we are a new session leader).
                    unsafe { libc::ioctl(s, libc::TIOCSCTTY, 0) };
                    for fd in 0..3 {
                        nix::unistd::dup2(s, fd).map_err(|e| format!("dup2: {e}"))?;
                    }
                    super::child::close_fds_except(-1);
                    super::child::default_signals();
                    j.isolation.apply_in_child()
                })
                .map_err(|m| (m, crate::exit::EXEC_OWN_FAILURE))
                .and_then(|()| {
                    let e = nix::unistd::execvpe(&argv[0], &argv, &env).unwrap_err();
                    Err((format!("{:?}: {e}", argv[0]), exec_failure_code(e)))
                });
            let (msg, code) = r.unwrap_err();
            let _ = writeln!(std::io::stderr(), "ferry: enter: {msg}");
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(i32::from(code)) }
        }
        ForkResult::Parent { child } => {
            drop(slave);
            drop(j);
            let saved = if stdin_tty { super::terminal::make_raw() } else { None };
            let act = nix::sys::signal::SigAction::new(
                SigHandler::Handler(on_winch),
                nix::sys::signal::SaFlags::empty(),
                nix::sys::signal::SigSet::empty(),
            );
            // SAFETY: the handler only stores into an atomic.
            let _ = unsafe { nix::sys::signal::sigaction(Signal::SIGWINCH, &act) };
            proxy(master.as_raw_fd(), stdin_tty);
            if let Some(t) = saved {
                let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
            }
            drop(master);
            wait_forwarding(child)
        }
    }
}

/// The ptmx of the container's devpts, opened in its mount namespace (the caller joined it)
/// without following any symlink, and checked to be the pty multiplexer.
fn open_container_ptmx() -> std::result::Result<OwnedFd, String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(libc::AT_FDCWD, "/dev/pts/ptmx", how).map_err(|e| format!("open /dev/pts/ptmx: {e}"))?;
    // SAFETY: openat2 returned a new descriptor that we now own.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| format!("stat /dev/pts/ptmx: {e}"))?;
    let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_chr || nix::sys::stat::major(st.st_rdev) != 5 || nix::sys::stat::minor(st.st_rdev) != 2 {
        return Err("/dev/pts/ptmx in the container is not the pty multiplexer (5:2)".into());
    }
    Ok(fd)
}

/// Copy stdin → master and master → stdout until the shell side closes.
fn proxy(master: i32, stdin_tty: bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        if WINCH.swap(0, Ordering::SeqCst) == 1 && stdin_tty {
            copy_winsize(0, master);
        }
        // SAFETY: both descriptors stay open for the whole loop.
        let (mfd, ifd) = unsafe { (std::os::fd::BorrowedFd::borrow_raw(master), std::os::fd::BorrowedFd::borrow_raw(0)) };
        let mut fds = vec![PollFd::new(mfd, PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(ifd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let m_ev = fds[0].revents().unwrap_or(PollFlags::empty());
        let i_ev = fds.get(1).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
        if m_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => super::terminal::to_stdout(&buf[..n]),
            }
        }
        if i_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(0, &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // End of input without a terminal: send EOF to the shell.
                    if !stdin_tty {
                        let _ = nix::unistd::write(unsafe_borrow(master), &[4u8]);
                    }
                }
                Ok(n) => {
                    let _ = nix::unistd::write(unsafe_borrow(master), &buf[..n]);
                }
            }
        }
    }
}

fn unsafe_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for descriptors that outlive the call (the pty master in `proxy`).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
