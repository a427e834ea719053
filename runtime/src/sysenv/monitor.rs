//! The monitor of a system container: a process of ferry's that stays beside the container
//! for as long as it runs (as LXC's monitor or Podman's conmon do).
//!
//! It is PID 1's parent: `start` and `restore` run inside it ([`run`]), so the container's
//! init is its child (a restored one through `PR_SET_CHILD_SUBREAPER`, once `criu swrk` has
//! exited). That is the only way to read PID 1's wait status, which says how it ended: killed
//! by SIGHUP after `reboot` inside, by SIGINT after `poweroff`/`halt` (CAP_SYS_BOOT lets a
//! pid namespace's init ask for both). On a reboot the monitor takes the container's lock,
//! removes the old host state and starts the container again on the same console; on a halt
//! it removes the host state, as `stop` would. When someone else ended the container (`stop`,
//! a checkpoint, a migration) the state it finds is no longer the one it watched, and it
//! leaves.
//!
//! It also holds the console pty's master: it appends the console to the console log and
//! serves `ferry console --attach` on the attach socket ([`super::console`]).
//!
//! The monitor is forked (twice, so it is nobody's child but the host init's) from a
//! single-threaded process; what it reports back over a pipe is the operation's result, or its
//! error with its class (so the exit code is the one the operation would have given). After
//! that its stdio goes to `<data>/logs/<CTID>/monitor.log`.

use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::ContainerLock;
use crate::state::State;
use crate::sysenv::console::{self, ConsoleLog, Pty};
use crate::sysenv::InitExit;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// The console as a start or restore inside the monitor uses it.
#[derive(Debug)]
pub struct Console {
    pub pty: Pty,
    /// The attach socket.
    pub socket: PathBuf,
    /// Its (device, inode) when bound: only this socket is removed at the end.
    socket_id: (u64, u64),
}

/// What the container's life cycle code gives the monitor (kept as functions so that this
/// module needs nothing of `container/`).
#[derive(Clone, Copy)]
pub struct Lifecycle {
    /// PID 1 is gone: remove what is left of the container on the host (its state says what),
    /// with its umount scripts, as a stop does.
    pub end: fn(&Host, &ContainerLock, &ContainerConfig, &State) -> Result<()>,
    /// Start the container again under this monitor, on `console`.
    pub start_again: fn(&Host, &ContainerLock, &ContainerConfig, &Console) -> Result<State>,
}

#[derive(Serialize, Deserialize)]
enum Report<R> {
    Ok(R),
    Err { class: crate::exit::ErrorClass, msg: String },
}

/// Run `op` (a start or a restore of `cfg`'s container that leaves its init a child of the
/// calling process, or of a process it waits for) inside a new monitor, and return its
/// result here. The caller must be single-threaded and hold the container's lock (the
/// monitor's copy of it goes when the operation ends).
pub fn run<R, F>(host: &Host, cfg: &ContainerConfig, life: Lifecycle, op_name: &'static str, op: F) -> Result<R>
where
    R: Serialize + DeserializeOwned,
    F: FnOnce(&Console) -> Result<(R, State)>,
{
    let ct = &cfg.ctid;
    crate::container::ensure_single_threaded(ct, op_name)?;
    let pty = console::open_pty(crate::storage::root_idmap(cfg)?.as_ref())?;
    let dir = host.run_ct_dir(ct);
    crate::util::private_dir(&dir)?;
    let socket = dir.join("console.sock");
    let (listener, socket_id) = listen(&socket)?;
    let console = Console { pty, socket, socket_id };
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: the caller is single-threaded; the child forks once more and exits at once.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork the monitor", e))? {
        nix::unistd::ForkResult::Child => {
            drop(report_r);
            // SAFETY: still single-threaded; the parent (this child) _exits right after.
            if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
                monitor_main(host, cfg, life, console, listener, report_w, op);
            }
            // SAFETY: _exit ends the intermediate child without running destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(report_w);
            drop(listener);
            drop(console);
            let _ = waitpid(child, None);
            let mut text = String::new();
            let _ = std::fs::File::from(report_r).read_to_string(&mut text);
            match serde_json::from_str::<Report<R>>(&text) {
                Ok(Report::Ok(r)) => Ok(r),
                Ok(Report::Err { class, msg }) => Err(Error::Relayed { class, msg }),
                Err(_) => Err(Error::ct(
                    ct.as_str(),
                    op_name,
                    "its monitor ended without saying how the operation went; see its monitor.log in ferry's log directory",
                )),
            }
        }
    }
}

/// Bind the attach socket, replacing a stale one (only a socket is replaced); the listener
/// and the bound file's identity.
fn listen(path: &std::path::Path) -> Result<(UnixListener, (u64, u64))> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
    let l = UnixListener::bind(path).map_err(|e| Error::io("bind the console socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io("chmod", path, e))?;
    l.set_nonblocking(true).map_err(|e| Error::io("console socket", path, e))?;
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    Ok((l, (m.dev(), m.ino())))
}

fn monitor_main<R, F>(host: &Host, cfg: &ContainerConfig, life: Lifecycle, console: Console, listener: UnixListener, report: OwnedFd, op: F) -> !
where
    R: Serialize,
    F: FnOnce(&Console) -> Result<(R, State)>,
{
    let _ = nix::unistd::setsid();
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"ferry-monitor".as_ptr(), 0, 0, 0);
    }
    let outcome = op(&console);
    let (report_text, state) = match outcome {
        Ok((r, st)) => (serde_json::to_string(&Report::Ok(r)), Some(st)),
        Err(e) => (serde_json::to_string(&Report::<R>::Err { class: e.class(), msg: e.to_string() }), None),
    };
    let _ = std::fs::File::from(report).write_all(report_text.unwrap_or_default().as_bytes());
    let Some(state) = state else {
        remove_socket(&console);
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(0) }
    };
    let log_dir = host.log_dir(&cfg.ctid);
    detach_stdio(&log_dir.join("monitor.log"));
    let keep = [console.pty.master.as_raw_fd(), console.pty.peer.as_raw_fd(), listener.as_raw_fd()];
    close_all_but(&keep);
    for sig in [nix::sys::signal::Signal::SIGHUP, nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        // SAFETY: ignoring a signal runs no code of ours; start resets these for PID 1.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    let m = Monitor {
        host: host.clone(),
        ctid: cfg.ctid.clone(),
        life,
        console,
        listener,
        clients: Vec::new(),
        log: ConsoleLog::new(host.root_dir(&cfg.ctid), cfg.security.id_map.filter(|_| cfg.security.kind.has_userns())),
    };
    m.serve(state)
}

/// Beside the attach socket: the PID 1 whose last console output the monitor has put into
/// the console log (written once it reaped that PID 1 and drained the pty).
fn drained_marker(socket: &std::path::Path) -> std::path::PathBuf {
    socket.with_file_name("console.drained")
}

/// After PID 1 (`pid`) of a system container ended by a halt: wait (at most `limit`) until its
/// monitor has put the last console output into the console log, so that the caller may
/// unmount the root under it ("Halting system." is written right before init ends).
pub fn wait_console_drained(sys: &super::SystemState, pid: i32, limit: Duration) {
    let marker = drained_marker(&sys.console_socket);
    let t0 = std::time::Instant::now();
    let monitor_alive = || std::path::Path::new(&format!("/proc/{}", sys.monitor_pid)).exists();
    while t0.elapsed() < limit && monitor_alive() {
        if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == pid.to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&marker);
}

/// Remove the attach socket if it is still the one this monitor bound (a later monitor of
/// the same container may have bound its own there).
fn remove_socket(console: &Console) {
    use std::os::unix::fs::MetadataExt;
    let path = &console.socket;
    let _ = std::fs::remove_file(drained_marker(path));
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == console.socket_id {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(d) = path.parent() {
        let _ = std::fs::remove_dir(d);
    }
}

/// stdin from /dev/null, stdout and stderr appended to the monitor's log.
fn detach_stdio(log: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = log.parent() {
        let _ = crate::util::private_dir(d);
    }
    let null = std::fs::File::open("/dev/null");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .or_else(|_| std::fs::OpenOptions::new().write(true).open("/dev/null"));
    if let (Ok(null), Ok(out)) = (null, out) {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(out.as_raw_fd(), 1);
        let _ = nix::unistd::dup2(out.as_raw_fd(), 2);
    }
}

fn close_all_but(keep: &[i32]) {
    let mut keep: Vec<i32> = keep.to_vec();
    keep.sort_unstable();
    let mut lo = 3u32;
    for k in keep {
        if k as u32 > lo {
            // SAFETY: close_range only closes descriptors; none below is used afterwards.
            unsafe { libc::syscall(libc::SYS_close_range, lo, k as u32 - 1, 0u32) };
        }
        lo = lo.max(k as u32 + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32) };
}

fn log(msg: &str) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    eprintln!("{t} {msg}");
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
}

struct Monitor {
    host: Host,
    ctid: Ctid,
    life: Lifecycle,
    console: Console,
    listener: UnixListener,
    clients: Vec<Client>,
    log: ConsoleLog,
}

/// What happened to PID 1 while the monitor watched it.
enum Watch {
    /// It ended; the signal that killed it, if one did.
    Ended(Option<i32>),
}

impl Monitor {
    fn serve(mut self, first: State) -> ! {
        let mut st = first;
        log(&format!("container {}: watching PID 1 ({}), console {}", self.ctid, st.pid, self.console.pty.path.display()));
        loop {
            let Watch::Ended(sig) = self.watch(st.pid);
            self.pump_console();
            let _ = std::fs::write(drained_marker(&self.console.socket), st.pid.to_string());
            let exit = InitExit::from_signal(sig);
            log(&format!("container {}: PID 1 ({}) ended: {exit:?}", self.ctid, st.pid));
            match self.after(exit, &st) {
                Some(next) => {
                    log(&format!("container {}: started again after its reboot, PID 1 is {}", self.ctid, next.pid));
                    st = next;
                }
                None => break,
            }
        }
        self.pump_console();
        remove_socket(&self.console);
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(0) }
    }

    /// Serve the console until PID 1 (`pid`, our child) ends.
    fn watch(&mut self, pid: i32) -> Watch {
        // SAFETY: pidfd_open with a pid and no flags returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        // SAFETY: a new descriptor that we now own, when the call succeeded.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        loop {
            if let Some(w) = self.reap(pid) {
                return w;
            }
            let master = self.console.pty.master.as_raw_fd();
            let mut raw_fds = vec![master, self.listener.as_raw_fd()];
            raw_fds.extend(self.clients.iter().map(|c| c.stream.as_raw_fd()));
            if let Some(p) = &pidfd {
                raw_fds.push(p.as_raw_fd());
            }
            // SAFETY: every descriptor stays open for the duration of the poll.
            let mut fds: Vec<PollFd> = raw_fds.iter().map(|fd| PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, PollFlags::POLLIN)).collect();
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
            let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
            drop(fds);
            if ready[0] {
                self.pump_console();
            }
            if ready[1] {
                self.accept();
            }
            let mut gone = Vec::new();
            for (i, c) in self.clients.iter_mut().enumerate() {
                if !ready[2 + i] {
                    continue;
                }
                let mut buf = [0u8; 8192];
                match c.stream.read(&mut buf) {
                    Ok(0) | Err(_) => gone.push(i),
                    Ok(n) => {
                        c.inbuf.extend_from_slice(&buf[..n]);
                        for (kind, data) in console::parse_frames(&mut c.inbuf) {
                            match kind {
                                console::FRAME_INPUT => write_all_fd(master, &data),
                                console::FRAME_WINSIZE => console::apply_winsize(master, &data),
                                _ => {}
                            }
                        }
                    }
                }
            }
            for i in gone.into_iter().rev() {
                self.clients.remove(i);
            }
        }
    }

    /// Collect exited children (a restore's leftovers are ours too); Some once `pid` ended.
    fn reap(&self, pid: i32) -> Option<Watch> {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, _)) if p.as_raw() == pid => return Some(Watch::Ended(None)),
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return Some(Watch::Ended(Some(sig as i32))),
                Ok(WaitStatus::StillAlive) => return None,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                // No child at all: PID 1 was not ours to wait for (it cannot be, but never
                // spin): treat it as ended once it is gone.
                Err(_) => {
                    return match crate::proc_stat::proc_stat(pid) {
                        Some(s) if s.state != 'Z' && s.state != 'X' => {
                            std::thread::sleep(Duration::from_millis(200));
                            None
                        }
                        _ => Some(Watch::Ended(None)),
                    }
                }
            }
        }
    }

    /// Move what the container wrote to its console into the log and to every client.
    fn pump_console(&mut self) {
        let mut buf = [0u8; 16384];
        loop {
            match nix::unistd::read(self.console.pty.master.as_raw_fd(), &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.log.append(&buf[..n]);
                    self.clients.retain_mut(|c| match c.stream.write(&buf[..n]) {
                        Ok(_) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    });
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(true);
            self.clients.push(Client { stream, inbuf: Vec::new() });
        }
    }

    /// PID 1 ended with `exit`: when the container is still the one watched (its state names
    /// this PID 1), remove its host state, and start it again after a reboot.
    fn after(&mut self, exit: InitExit, watched: &State) -> Option<State> {
        let (host, ctid) = (self.host.clone(), self.ctid.clone());
        let still_ours = || matches!(State::load(&host, &ctid), Ok(Some(s)) if s.pid == watched.pid && s.start_time == watched.start_time);
        // Looked at before the lock is taken, so that the monitor never holds the lock when
        // another operation (a stop, a checkpoint) ended the container: the admin's next
        // command would find it busy.
        let lock = loop {
            if !still_ours() {
                return None;
            }
            match ContainerLock::acquire(&self.host, &self.ctid, "monitor") {
                Ok(l) => break l,
                Err(Error::Locked { .. }) => {
                    // Someone else works on it: keep the console flowing meanwhile, then look
                    // at what they left.
                    self.pump_console();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    log(&format!("container {}: take its lock: {e}", self.ctid));
                    return None;
                }
            }
        };
        if !still_ours() {
            return None;
        }
        let cfg = match crate::container::load_config(&self.host, &self.ctid) {
            Ok(c) => c,
            Err(e) => {
                log(&format!("container {}: {e}", self.ctid));
                return None;
            }
        };
        if exit == InitExit::Reboot {
            // Into the old root's console log, before it is unmounted.
            self.log.append(b"\r\n[ferry: the container rebooted; starting it again]\r\n");
        }
        if let Err(e) = (self.life.end)(&self.host, &lock, &cfg, watched) {
            log(&format!("container {}: clean up after PID 1: {e}", self.ctid));
            return None;
        }
        if exit != InitExit::Reboot {
            return None;
        }
        let _ = std::fs::remove_file(drained_marker(&self.console.socket));
        match (self.life.start_again)(&self.host, &lock, &cfg, &self.console) {
            Ok(st) => Some(st),
            Err(e) => {
                log(&format!("container {}: start after its reboot: {e}", self.ctid));
                self.log.append(format!("[ferry: starting it again failed: {e}]\r\n").as_bytes());
                None
            }
        }
    }
}

fn write_all_fd(fd: i32, mut data: &[u8]) {
    // SAFETY: `fd` is the pty master, open for the monitor's whole life.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut tries = 0;
    while !data.is_empty() && tries < 100 {
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return,
        }
    }
}
