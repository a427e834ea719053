//! A system container's console: a pty from the host's devpts whose peer is bound at the
//! container's `/dev/console`, its other end held by the monitor. What the container writes
//! there is appended to its console log (`/var/log/ferry-console.log` in its own root, what
//! `ferry console` prints) and sent to every attached client; what a client types goes to
//! the console (a getty on it shows a login prompt).
//!
//! The attach socket (`<run>/<CTID>/console.sock`, root's alone) speaks a small framed protocol
//! from client to monitor: one type byte, a big-endian u16 length, the payload. Type 0 is
//! input, type 1 a window size (rows, columns as u16). The monitor sends the raw console
//! output back. The client detaches on Esc followed by `.` (vzctl's console key).

use crate::error::{Error, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A frame carrying input for the console.
pub const FRAME_INPUT: u8 = 0;
/// A frame carrying the client terminal's size (rows, columns).
pub const FRAME_WINSIZE: u8 = 1;

/// The key sequence that detaches an attached client: Esc, then `.`.
pub const DETACH_KEYS: [u8; 2] = [0x1b, b'.'];

/// The console pty: the master the monitor keeps and its peer (kept open by the monitor too,
/// so the master never reads end-of-file while the container has not opened the console).
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub peer: OwnedFd,
    /// The peer's path on the host (`/dev/pts/N`).
    pub path: PathBuf,
}

/// A new pty from the host's devpts, peer mode 0600, owned by host root or, for an
/// unprivileged container (`owner`: its range), by the container's root, who must open it as
/// `/dev/console` (changed through the descriptor, never a path).
pub fn open_pty(owner: Option<&crate::userns::IdMap>) -> Result<Pty> {
    let err = |what: &str, e: std::io::Error| Error::Io { what: format!("console pty: {what}"), path: PathBuf::from("/dev/ptmx"), source: e };
    let master = nix::fcntl::open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK, nix::sys::stat::Mode::empty())
        .map_err(|e| err("open", e.into()))?;
    // SAFETY: open returned a new descriptor that we now own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    let mut index: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int, TIOCGPTN a pointer to an unsigned int.
    let ok = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) == 0 && libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut index) == 0
    };
    if !ok {
        return Err(err("unlock", std::io::Error::last_os_error()));
    }
    // SAFETY: TIOCGPTPEER returns a new descriptor for the peer, or -1.
    let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if peer < 0 {
        return Err(err("open the peer", std::io::Error::last_os_error()));
    }
    // SAFETY: the ioctl returned a new descriptor that we now own.
    let peer = unsafe { OwnedFd::from_raw_fd(peer) };
    let path = PathBuf::from(format!("/dev/pts/{index}"));
    // The path must name this very peer (the host's /dev/pts is the devpts of /dev/ptmx).
    let by_fd = nix::sys::stat::fstat(peer.as_raw_fd()).map_err(|e| err("stat the peer", e.into()))?;
    let by_path = std::fs::metadata(&path).map_err(|e| err("stat /dev/pts", e))?;
    if by_path.rdev() != by_fd.st_rdev || by_path.dev() != by_fd.st_dev {
        return Err(Error::PtyPeer(path));
    }
    nix::sys::stat::fchmod(peer.as_raw_fd(), nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| err("chmod the peer", e.into()))?;
    if let Some(map) = owner {
        let (uid, gid) = (nix::unistd::Uid::from_raw(map.host_first), nix::unistd::Gid::from_raw(map.host_first));
        nix::unistd::fchown(peer.as_raw_fd(), Some(uid), Some(gid)).map_err(|e| err("chown the peer to the container's root", e.into()))?;
    }
    Ok(Pty { master, peer, path })
}

/// The identity of a pty peer as CRIU names an external terminal: `tty[rdev:dev]` (hex).
pub fn criu_tty_key(peer: &Path) -> Result<String> {
    let m = std::fs::metadata(peer).map_err(|e| Error::io("stat console", peer, e))?;
    Ok(format!("tty[{:x}:{:x}]", m.rdev(), m.dev()))
}

/// The console log of a container whose root is mounted at `root`, appended to from the host.
#[derive(Debug, Clone)]
pub struct ConsoleLog {
    root: PathBuf,
    /// An unprivileged container's range: the file is opened as its root (see `try_append`).
    owner: Option<crate::userns::IdMap>,
}

impl ConsoleLog {
    pub fn new(root: impl Into<PathBuf>, owner: Option<crate::userns::IdMap>) -> Self {
        ConsoleLog { root: root.into(), owner }
    }

    /// Append `data`. The file is opened for each write, inside the root as if it were `/`,
    /// never through a symlink or onto another mount, and only if it is a regular file with
    /// one link: the container owns that tree and may have replaced anything in it. Nothing
    /// stays open, so the root can be unmounted at any time. Failures are silent (the
    /// container may have removed its /var/log).
    pub fn append(&self, data: &[u8]) {
        let _ = self.try_append(data);
    }

    fn try_append(&self, data: &[u8]) -> std::io::Result<()> {
        let dir = std::fs::File::open(&self.root)?;
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
            .mode(nix::sys::stat::Mode::from_bits_truncate(0o640))
            .resolve(
                ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let rel = crate::container::CONSOLE_LOG.trim_start_matches('/');
        let fd = match self.owner {
            None => nix::fcntl::openat2(dir.as_raw_fd(), rel, how)?,
            // An unprivileged container's root is an idmapped mount where host root can create
            // nothing (its uid has no place in the range: EOVERFLOW); this thread opens it as the
            // range's root instead, which also takes its file capabilities away for the open.
            Some(map) => {
                let _as = AsIds::new(map.host_first);
                nix::fcntl::openat2(dir.as_raw_fd(), rel, how)?
            }
        };
        // SAFETY: openat2 returned a new descriptor that we now own.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let m = f.metadata()?;
        if !m.is_file() || m.nlink() != 1 {
            return Err(std::io::Error::other("not a regular file of its own"));
        }
        f.write_all(data)
    }
}

/// The calling thread's file-system IDs set to `id` (uid and gid) until dropped. setfsuid(2)
/// changes only this thread, and a non-zero fsuid clears its file capabilities
/// (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER...) until it is set back to 0.
struct AsIds;

impl AsIds {
    fn new(id: u32) -> AsIds {
        // SAFETY: setfsgid/setfsuid only change this thread's credentials; Drop sets them back.
        unsafe {
            libc::setfsgid(id);
            libc::setfsuid(id);
        }
        AsIds
    }
}

impl Drop for AsIds {
    fn drop(&mut self) {
        // SAFETY: as in `new`: back to root's file-system IDs.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
    }
}

/// One frame of the attach protocol.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    let chunks: Vec<&[u8]> = if payload.is_empty() { vec![payload] } else { payload.chunks(u16::MAX as usize).collect() };
    for chunk in chunks {
        out.push(kind);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Take every complete frame off the front of `buf`.
pub fn parse_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 3 {
        let len = u16::from_be_bytes([buf[at + 1], buf[at + 2]]) as usize;
        if buf.len() < at + 3 + len {
            break;
        }
        out.push((buf[at], buf[at + 3..at + 3 + len].to_vec()));
        at += 3 + len;
    }
    buf.drain(..at);
    out
}

/// Finds the detach keys in typed input: what to forward, and whether to detach. An Esc at
/// the end of `input` is held back until the next key says what it was.
#[derive(Debug, Default)]
pub struct DetachScanner {
    held_esc: bool,
}

impl DetachScanner {
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.held_esc {
                self.held_esc = false;
                if b == DETACH_KEYS[1] {
                    return (out, true);
                }
                out.push(DETACH_KEYS[0]);
            }
            if b == DETACH_KEYS[0] {
                self.held_esc = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// The window size of terminal `fd`, as a [`FRAME_WINSIZE`] payload.
pub fn winsize_payload(fd: i32) -> Option<Vec<u8>> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills a winsize structure we own.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return None;
    }
    let mut p = ws.ws_row.to_be_bytes().to_vec();
    p.extend_from_slice(&ws.ws_col.to_be_bytes());
    Some(p)
}

/// Apply a [`FRAME_WINSIZE`] payload to the pty master `fd`.
pub fn apply_winsize(fd: i32, payload: &[u8]) {
    if payload.len() != 4 {
        return;
    }
    let ws = libc::winsize {
        ws_row: u16::from_be_bytes([payload[0], payload[1]]),
        ws_col: u16::from_be_bytes([payload[2], payload[3]]),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize structure we own.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

static WINCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `ferry console CTID --attach`: connect this terminal (or stdin/stdout) to the console at
/// `socket` until the detach keys, the end of input, or the container's end.
pub fn attach(ctid: &str, socket: &Path) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::unix::net::UnixStream;
    let mut sock = UnixStream::connect(socket)
        .map_err(|e| Error::ct(ctid, "console", format!("connect to its console at {}: {e}; is the container running?", socket.display())))?;
    let tty = nix::unistd::isatty(0).unwrap_or(false);
    let saved = if tty { crate::container::terminal::make_raw() } else { None };
    if tty {
        let act = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_winch),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores into an atomic.
        let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &act) };
        if let Some(p) = winsize_payload(0) {
            let _ = sock.write_all(&frame(FRAME_WINSIZE, &p));
        }
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "ferry: attached to the console of {ctid}; press Esc then . to detach\r\n");
    let mut scanner = DetachScanner::default();
    let mut buf = vec![0u8; 16384];
    let res = loop {
        if WINCH.swap(false, std::sync::atomic::Ordering::SeqCst) {
            if let Some(p) = winsize_payload(0) {
                let _ = sock.write_all(&frame(FRAME_WINSIZE, &p));
            }
        }
        // SAFETY: both descriptors stay open for the whole loop.
        let (s_fd, i_fd) = unsafe { (std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()), std::os::fd::BorrowedFd::borrow_raw(0)) };
        let mut fds = vec![PollFd::new(s_fd, PollFlags::POLLIN), PollFd::new(i_fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(Error::sys("poll", e)),
            Ok(_) => {}
        }
        let s_ev = fds[0].revents().unwrap_or(PollFlags::empty());
        let i_ev = fds.get(1).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
        if s_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = write!(err, "\r\nferry: the console of {ctid} closed\r\n");
                    break Ok(());
                }
                Ok(n) => crate::container::terminal::to_stdout(&buf[..n]),
            }
        }
        if i_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(0, &mut buf) {
                Ok(0) | Err(_) => {
                    // End of input: stay to show what the console answers, then leave when it
                    // goes quiet (a script's here-document).
                    drain_quietly(&mut sock, &mut buf);
                    break Ok(());
                }
                Ok(n) => {
                    let (fwd, detach) = scanner.scan(&buf[..n]);
                    if !fwd.is_empty() && sock.write_all(&frame(FRAME_INPUT, &fwd)).is_err() {
                        break Ok(());
                    }
                    if detach {
                        let _ = write!(err, "\r\nferry: detached from the console of {ctid}\r\n");
                        break Ok(());
                    }
                }
            }
        }
    };
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
    }
    res
}

/// After the end of input: print what the console still sends until it is quiet for 2 s.
fn drain_quietly(sock: &mut std::os::unix::net::UnixStream, buf: &mut [u8]) {
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    while let Ok(n) = sock.read(buf) {
        if n == 0 {
            break;
        }
        crate::container::terminal::to_stdout(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_the_rest() {
        let mut buf = frame(FRAME_INPUT, b"root\r");
        buf.extend(frame(FRAME_WINSIZE, &[0, 24, 0, 80]));
        let tail = frame(FRAME_INPUT, b"xyz");
        buf.extend_from_slice(&tail[..4]);
        let got = parse_frames(&mut buf);
        assert_eq!(got, vec![(FRAME_INPUT, b"root\r".to_vec()), (FRAME_WINSIZE, vec![0, 24, 0, 80])]);
        assert_eq!(buf, tail[..4].to_vec(), "a partial frame stays");
        buf.extend_from_slice(&tail[4..]);
        assert_eq!(parse_frames(&mut buf), vec![(FRAME_INPUT, b"xyz".to_vec())]);
        assert!(buf.is_empty());
        assert_eq!(parse_frames(&mut frame(FRAME_INPUT, &vec![7u8; 70000])).iter().map(|f| f.1.len()).sum::<usize>(), 70000);
    }

    #[test]
    fn esc_dot_detaches_and_a_lone_esc_passes() {
        let mut s = DetachScanner::default();
        assert_eq!(s.scan(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(s.scan(b"a\x1b[A"), (b"a\x1b[A".to_vec(), false), "arrow keys pass");
        assert_eq!(s.scan(b"x\x1b"), (b"x".to_vec(), false), "an Esc at the end waits");
        assert_eq!(s.scan(b"."), (Vec::new(), true));
        let mut s = DetachScanner::default();
        assert_eq!(s.scan(b"\x1b"), (Vec::new(), false));
        assert_eq!(s.scan(b"q"), (b"\x1bq".to_vec(), false));
        assert_eq!(s.scan(b"ab\x1b.cd"), (b"ab".to_vec(), true));
    }

    #[test]
    fn an_unprivileged_containers_console_log_is_opened_as_its_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (setfsuid)");
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let map = crate::userns::IdMap { host_first: 1_300_000, count: 65_536 };
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        let log = ConsoleLog::new(&root, Some(map));
        // /var/log host root's (0755): the range's root may not create there, nor may the
        // monitor on its behalf.
        log.append(b"one\n");
        assert!(!root.join("var/log/ferry-console.log").exists(), "created with host root's powers");
        // The container's own /var/log: created, owned by its root.
        let own = |p: &Path| {
            nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(map.host_first)), Some(nix::unistd::Gid::from_raw(map.host_first))).unwrap()
        };
        own(&root.join("var/log"));
        log.append(b"two\n");
        let p = root.join("var/log/ferry-console.log");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), map.host_first);
        // A file of host root's there (0644) is not appended to; the thread is root again after.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "host\n").unwrap();
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(0))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        log.append(b"evil\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "host\n");
        // SAFETY: setfsuid with -1 only reads the current value.
        assert_eq!(unsafe { libc::setfsuid(u32::MAX) }, 0, "the thread's fsuid is root's again");
    }

    #[test]
    fn console_log_refuses_links_and_other_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        let log = ConsoleLog::new(root, None);
        log.append(b"one\n");
        log.append(b"two\n");
        let p = root.join("var/log/ferry-console.log");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        // A link to a file outside (or inside) is never followed.
        let outside = d.path().join("outside");
        std::fs::write(&outside, "host\n").unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        log.append(b"evil\n");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host\n");
        // A hard link to another file of the tree is refused too.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(root.join("etc-shadow"), "secret\n").unwrap();
        std::fs::hard_link(root.join("etc-shadow"), &p).unwrap();
        log.append(b"evil\n");
        assert_eq!(std::fs::read_to_string(root.join("etc-shadow")).unwrap(), "secret\n");
        // /var/log a symlink: nothing is written through it.
        std::fs::remove_file(&p).unwrap();
        std::fs::remove_dir_all(root.join("var/log")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.join("var/log")).unwrap();
        log.append(b"evil\n");
        assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none());
    }
}
