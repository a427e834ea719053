//! The wire side of CRIU's RPC: start `criu swrk <fd>` on one end of a SOCK_SEQPACKET
//! socketpair, send one request, read responses until the final one, answering NOTIFY
//! messages through a caller's callback.
//!
//! rust-criu's `Criu` wrapper hides the restored pid, CRIU's error text and the feature check,
//! so ferry speaks the protocol itself with the crate's public protobuf messages.

use crate::error::{Error, Result};
use protobuf::Message;
use rust_criu::rust_criu_protobuf::rpc::{Criu_opts, Criu_req, Criu_req_type, Criu_resp};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The fd number `criu swrk` finds its socket on: everything else above stdio is closed.
const SWRK_FD: RawFd = 3;

/// A notification CRIU sends while it works (only when `notify_scripts` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// "pre-dump", "post-dump", "network-lock", "network-unlock", "setup-namespaces",
    /// "post-setup-namespaces", "pre-restore", "post-restore", "pre-resume", "post-resume", ...
    pub script: String,
    /// The (host) pid of the restored init where CRIU gives one (setup-namespaces,
    /// post-restore), else 0.
    pub pid: i32,
}

/// What the callback says: go on, or abort the operation with this message.
pub type NotifyResult = std::result::Result<(), String>;

/// How to start `criu swrk`: which binary, and which host context it runs in.
#[derive(Debug, Clone, Default)]
pub struct SwrkSpawn {
    /// The `criu` binary; `None` looks it up on PATH.
    pub criu: Option<PathBuf>,
    /// Run CRIU inside this network namespace (e.g. `/run/netns/fyt1-hB`): the outer veth ends
    /// of a restore and the network lock are made there.
    pub netns: Option<PathBuf>,
    /// `cgroup.procs` files CRIU joins before it starts (writing "0" moves the writer): with
    /// cgroup management off, restored processes inherit these cgroups.
    pub join_cgroups: Vec<PathBuf>,
    /// Files CRIU creates are root's alone (umask 077): a dump's images hold the memory of
    /// the container.
    pub private_files: bool,
    /// Descriptors passed on to `criu swrk`, at [`inherited_fd`]`(0)`, `(1)`, ... in order.
    pub inherit_fds: Vec<RawFd>,
}

/// The descriptor number the `n`th of [`SwrkSpawn::inherit_fds`] has in `criu swrk`.
pub fn inherited_fd(n: usize) -> RawFd {
    SWRK_FD + 1 + n as RawFd
}

/// Find `criu` on PATH.
pub fn find_criu() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("criu");
        if is_executable(&cand) {
            return Ok(cand);
        }
    }
    Err(Error::Criu(format!("criu is not installed (not found on PATH): {}", super::INSTALL_HINT)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Send `req` to a fresh `criu swrk` and return its final response (whatever its `success`).
/// NOTIFY messages in between go to `on_notify`; its error aborts the operation (CRIU gets a
/// negative ack and rolls back).
pub fn call(spawn: &SwrkSpawn, req: &Criu_req, on_notify: &mut dyn FnMut(&Notify) -> NotifyResult) -> Result<Exchange> {
    let criu = match &spawn.criu {
        Some(p) => p.clone(),
        None => find_criu()?,
    };
    if !is_executable(&criu) {
        return Err(Error::Criu(format!("{} is missing or not executable: {}", criu.display(), super::INSTALL_HINT)));
    }
    if spawn.inherit_fds.len() > 8 {
        return Err(Error::Criu(format!("{} descriptors to pass to criu swrk; at most 8 are supported", spawn.inherit_fds.len())));
    }
    for p in &spawn.join_cgroups {
        if !p.exists() {
            return Err(Error::Criu(format!(
                "cannot restore into cgroup {}: it does not exist (create the container's cgroups before the restore)",
                p.display()
            )));
        }
    }
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair for criu swrk", e))?;

    // Everything the child needs is prepared here: after fork only async-signal-safe calls.
    let netns_fd: Option<OwnedFd> = match &spawn.netns {
        Some(p) => Some(std::fs::File::open(p).map_err(|e| Error::io("open network namespace for criu", p, e))?.into()),
        None => None,
    };
    let cgroup_paths: Vec<CString> = spawn
        .join_cgroups
        .iter()
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error::Criu(format!("bad cgroup path {p:?}"))))
        .collect::<Result<_>>()?;
    let child_sock = theirs.as_raw_fd();
    let child_netns = netns_fd.as_ref().map(|f| f.as_raw_fd());
    let private_files = spawn.private_files;
    // Moved out of the way of the fixed numbers first, so no dup2 below overwrites one still
    // to be placed.
    let inherit: Vec<RawFd> = spawn.inherit_fds.clone();
    let last_fixed = inherited_fd(inherit.len());

    let mut cmd = Command::new(&criu);
    cmd.arg("swrk").arg(SWRK_FD.to_string()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (umask, setns, open, write, close, dup2, close_range) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if private_files {
                libc::umask(0o077);
            }
            if let Some(fd) = child_netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for p in &cgroup_paths {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if !ok {
                    return Err(err);
                }
            }
            // Every descriptor to keep is first copied above the fixed numbers, so placing one
            // cannot overwrite another still to be placed. dup2 clears CLOEXEC on the copy;
            // then nothing but stdio, the socket and the inherited ones survives, so no fd of
            // ours (or one leaked to us) ends up in CRIU or a restored process.
            let mut moved = [0 as RawFd; 8];
            let n = inherit.len().min(moved.len());
            for (i, fd) in inherit.iter().take(n).enumerate() {
                moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, last_fixed + 1);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let sock = libc::fcntl(child_sock, libc::F_DUPFD_CLOEXEC, last_fixed + 1);
            if sock < 0 || libc::dup2(sock, SWRK_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (i, fd) in moved.iter().take(n).enumerate() {
                if libc::dup2(*fd, inherited_fd(i)) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Marked close-on-exec rather than closed: std's exec-error pipe must live until exec.
            if libc::syscall(libc::SYS_close_range, last_fixed, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::Criu(format!("cannot start {} swrk (in netns {:?}, joining cgroups {:?}): {e}", criu.display(), spawn.netns, spawn.join_cgroups))
    })?;
    drop(theirs);
    drop(netns_fd);
    // Drain stderr on a thread so CRIU never blocks on a full pipe.
    let mut stderr = child.stderr.take();
    let (stderr_tx, stderr_rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        let _ = stderr_tx.send(s);
    });

    let res = exchange(&ours, req, on_notify);
    // Closing our end makes swrk exit once it is done with the request.
    drop(ours);
    let status = child.wait();
    // Should a restored process ever keep CRIU's stderr open, do not wait for it forever.
    let stderr = match stderr_rx.recv_timeout(std::time::Duration::from_secs(2)) {
        Ok(s) => {
            // Gone for good before we return: a caller may need to be single-threaded next
            // (starting a container after a failed restore).
            let _ = drain.join();
            s
        }
        Err(_) => String::new(),
    };
    match res {
        Ok((resp, notifications)) => Ok(Exchange { resp, notifications, stderr }),
        Err(e) => {
            let st = status.map(|s| s.to_string()).unwrap_or_default();
            let tail = stderr.trim();
            Err(Error::Criu(format!("{e} (criu swrk {st}{}{tail})", if tail.is_empty() { "" } else { ": " })))
        }
    }
}

/// The outcome of one request: the final response, the notifications seen, CRIU's stderr.
#[derive(Debug)]
pub struct Exchange {
    pub resp: Criu_resp,
    pub notifications: Vec<String>,
    pub stderr: String,
}

fn exchange(sock: &OwnedFd, req: &Criu_req, on_notify: &mut dyn FnMut(&Notify) -> NotifyResult) -> Result<(Criu_resp, Vec<String>)> {
    let want = req.type_();
    send(sock, &req.write_to_bytes().map_err(|e| Error::Criu(format!("encode request: {e}")))?)?;
    let mut seen = Vec::new();
    loop {
        let data = recv(sock)?;
        let resp = Criu_resp::parse_from_bytes(&data).map_err(|e| Error::Criu(format!("decode response: {e}")))?;
        let ty = resp.type_();
        if ty == Criu_req_type::NOTIFY {
            let n = Notify { script: resp.notify.script().to_owned(), pid: resp.notify.pid() };
            seen.push(n.script.clone());
            let verdict = on_notify(&n);
            let mut ack = Criu_req::new();
            ack.set_type(Criu_req_type::NOTIFY);
            ack.set_notify_success(verdict.is_ok());
            send(sock, &ack.write_to_bytes().map_err(|e| Error::Criu(format!("encode ack: {e}")))?)?;
            if let Err(msg) = verdict {
                // CRIU rolls back after a negative ack and then answers the request with a
                // failure; read that answer so the caller sees CRIU's log too.
                let fin = recv_final(sock, want);
                return Err(Error::Criu(format!("the {} step failed: {msg}{}", n.script, if fin.is_ok() { "" } else { " (criu stopped)" })));
            }
            continue;
        }
        if ty != want && ty != Criu_req_type::EMPTY {
            return Err(Error::Criu(format!("unexpected {ty:?} response to {want:?}")));
        }
        return Ok((resp, seen));
    }
}

fn recv_final(sock: &OwnedFd, want: Criu_req_type) -> Result<Criu_resp> {
    loop {
        let resp = Criu_resp::parse_from_bytes(&recv(sock)?).map_err(|e| Error::Criu(format!("decode response: {e}")))?;
        if resp.type_() == want {
            return Ok(resp);
        }
    }
}

fn send(sock: &OwnedFd, data: &[u8]) -> Result<()> {
    let n = nix::sys::socket::send(sock.as_raw_fd(), data, nix::sys::socket::MsgFlags::empty()).map_err(|e| Error::sys("send to criu swrk", e))?;
    if n != data.len() {
        return Err(Error::Criu("short write to criu swrk".into()));
    }
    Ok(())
}

/// One whole SEQPACKET message: peek its size first so nothing is truncated. A file
/// descriptor CRIU may attach (orphan pts master) is closed; ferry does not ask for it.
fn recv(sock: &OwnedFd) -> Result<Vec<u8>> {
    let fd = sock.as_raw_fd();
    // SAFETY: a zero-length peek with MSG_TRUNC only reports the size of the next message.
    let len = unsafe { libc::recv(fd, std::ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
    if len < 0 {
        return Err(Error::Criu(format!("read from criu swrk: {}", std::io::Error::last_os_error())));
    }
    if len == 0 {
        return Err(Error::Criu("criu swrk closed the connection without an answer".into()));
    }
    let mut buf = vec![0u8; len as usize];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| Error::sys("read from criu swrk", e))?;
    let n = msg.bytes;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: the kernel just installed this fd for us; nobody else owns it.
                    drop(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// A request of type `ty` with `opts`.
pub fn request(ty: Criu_req_type, opts: Option<Criu_opts>) -> Criu_req {
    let mut req = Criu_req::new();
    req.set_type(ty);
    if let Some(o) = opts {
        req.opts = protobuf::MessageField::some(o);
    }
    req
}
