//! The direct data channel of a migration (`ferry migrate --data-channel tcp`): one plain TCP
//! connection beside the ssh control connection that carries only the checkpoint image, so the
//! image moves at the speed of the network instead of the speed of ssh's cipher.
//!
//! It is NOT encrypted: use it only on a trusted migration network (as Proxmox VE's
//! `migration: type=insecure` or CRIU's page server). What it does guarantee:
//! - only the source ferry can feed the destination: the destination hands a one-time random
//!   token to the source over the (authenticated, encrypted) ssh control connection, and
//!   accepts exactly one connection that presents it ([`accept_authenticated`]); any other
//!   connection is dropped and the listener waits on until its deadline. Connections are
//!   served side by side: one that sends nothing (or too little) is dropped after
//!   [`TOKEN_DEADLINE`] and never holds up the right one;
//! - nothing damaged is restored: the image carries blake3 digests per chunk and for the whole
//!   image, checked while it is extracted, and both sides compare size and digest over the
//!   control connection before the restore.
//!
//! Wire: the source sends [`MAGIC`] and the 32-byte token; the destination answers one byte
//! [`ACCEPTED`]; then the image follows, raw, until the source shuts its side down.
//! Blocking std sockets: both ends run on their own threads.

use crate::proto::Last32;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first bytes on a data connection (before the token).
pub const MAGIC: [u8; 8] = *b"FERRYDC1";
/// Length of the one-time token.
pub const TOKEN_LEN: usize = 32;
/// The destination's answer once the token checked out.
pub const ACCEPTED: u8 = b'+';
/// How long one connecting peer may take to present its token (the source sends it right after
/// connecting).
pub const TOKEN_DEADLINE: Duration = Duration::from_secs(2);
/// Connections waited on at once for their token; beyond, the oldest is dropped.
const MAX_PENDING: usize = 64;

/// A one-time secret that authenticates the data connection.
#[derive(Clone)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// 32 bytes from the kernel's random source.
    pub fn random() -> io::Result<Token> {
        let mut t = [0u8; TOKEN_LEN];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut t)?;
        Ok(Token(t))
    }

    /// A token received over the control connection; `None` unless it is 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Option<Token> {
        b.try_into().ok().map(Token)
    }

    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// Constant-time comparison: how many bytes match must not show in the timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != TOKEN_LEN {
            return false;
        }
        let diff = self.0.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)") // never in logs
    }
}

/// Ports the destination may listen on; `0..=0` lets the kernel pick one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    /// `PORT` or `FIRST-LAST`.
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("{p:?} is not a port number (1-65535)"));
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first == 0 || first > last {
            return Err(format!("bad port range {s:?}: give PORT or FIRST-LAST with 0 < FIRST <= LAST"));
        }
        Ok(PortRange { first, last })
    }
}

/// The address the ssh connection that started this process arrived on (third field of
/// `SSH_CONNECTION`): the source reaches this host there. 127.0.0.1 without ssh (local
/// transport).
pub fn listen_address() -> IpAddr {
    std::env::var("SSH_CONNECTION").ok().and_then(|v| server_address(&v)).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// `client_ip client_port server_ip server_port` → server_ip.
fn server_address(ssh_connection: &str) -> Option<IpAddr> {
    let ip = ssh_connection.split_whitespace().nth(2)?;
    // A link-local v6 address may carry a zone (%eth0) that IpAddr does not parse.
    ip.split('%').next()?.parse().ok()
}

/// Listen on `ip`, on a port of `ports` (the first free one) or one the kernel picks.
pub fn bind(ip: IpAddr, ports: PortRange) -> io::Result<TcpListener> {
    if ports.first == 0 {
        return TcpListener::bind(SocketAddr::new(ip, 0));
    }
    let mut last_err = None;
    for port in ports.first..=ports.last {
        match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse));
    Err(io::Error::new(e.kind(), format!("no free port in {}-{} on {ip}: {e}", ports.first, ports.last)))
}

/// Why no authenticated connection came.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("no connection presented the right token within {0:?} ({1} refused)")]
    Deadline(Duration, u32),
    #[error("stopped waiting (the source gave up the image, or the migration ended)")]
    Cancelled,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A connection that has not shown its token yet.
struct Pending {
    s: TcpStream,
    peer: SocketAddr,
    hello: [u8; MAGIC.len() + TOKEN_LEN],
    got: usize,
    until: Instant,
}

/// Accept connections on `listener` until one presents `token` (answered [`ACCEPTED`] and
/// returned, blocking, ready for the image) or `within` has passed or `cancel` is set.
/// Connections are read side by side, without blocking: one that shows anything else, or not
/// all of its token within [`TOKEN_DEADLINE`], is dropped unanswered, and none of them delays
/// the others. The listener is not closed here: the caller drops it right after.
pub fn accept_authenticated(listener: &TcpListener, token: &Token, within: Duration, cancel: &AtomicBool) -> Result<TcpStream, AcceptError> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + within;
    let mut refused = 0;
    let mut pending: Vec<Pending> = Vec::new();
    let refuse = |p: Pending, why: &str, refused: &mut u32| {
        *refused += 1;
        tracing::warn!("data channel: refused a connection from {} ({why})", p.peer);
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(AcceptError::Cancelled);
        }
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(AcceptError::Deadline(within, refused));
        }
        for p in std::mem::take(&mut pending) {
            if p.until <= now {
                refuse(p, "no token in time", &mut refused);
            } else {
                pending.push(p);
            }
        }
        // Wake up now and then to look at `cancel` and the deadlines.
        let next = pending.iter().map(|p| p.until.saturating_duration_since(now)).min().unwrap_or(left);
        let ready = readable(listener, &pending, next.min(left).min(Duration::from_millis(100)))?;
        // Those that were waiting first (their flags follow the listener's), then newcomers.
        let mut i = 0;
        let mut slot = 1;
        while i < pending.len() {
            let was_ready = ready.get(slot).copied().unwrap_or(false);
            slot += 1;
            if !was_ready {
                i += 1;
                continue;
            }
            let p = &mut pending[i];
            let n = match (&p.s).read(&mut p.hello[p.got..]) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    i += 1;
                    continue;
                }
                Err(_) => 0,
            };
            p.got += n;
            if n > 0 && p.got < p.hello.len() {
                i += 1;
                continue;
            }
            let p = pending.remove(i);
            let presented = p.got == p.hello.len() && p.hello[..MAGIC.len()] == MAGIC && token.matches(&p.hello[MAGIC.len()..]);
            if presented {
                let mut s = p.s;
                if s.set_nonblocking(false).is_ok() && s.write_all(&[ACCEPTED]).is_ok() {
                    return Ok(s);
                }
                refused += 1;
            } else {
                refuse(p, "no valid token", &mut refused);
            }
        }
        if ready.first() == Some(&true) {
            loop {
                match listener.accept() {
                    Ok((s, peer)) => {
                        s.set_nonblocking(true)?;
                        if pending.len() >= MAX_PENDING {
                            let oldest = pending.remove(0);
                            refuse(oldest, "too many connections waiting", &mut refused);
                        }
                        pending.push(Pending { s, peer, hello: [0; MAGIC.len() + TOKEN_LEN], got: 0, until: Instant::now() + TOKEN_DEADLINE });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Wait up to `wait` for the listener or a pending connection to be readable: one flag for
/// the listener, then one per pending connection.
fn readable(listener: &TcpListener, pending: &[Pending], wait: Duration) -> io::Result<Vec<bool>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = Vec::with_capacity(1 + pending.len());
    fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
    fds.extend(pending.iter().map(|p| PollFd::new(p.s.as_fd(), PollFlags::POLLIN)));
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) => Ok(fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

/// Connect to the destination's data listener and present `token`; returns the stream once
/// the destination accepted it, ready for the image.
pub fn connect(addr: SocketAddr, token: &Token, timeout: Duration) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    // The image is written in large blocks: Nagle only merges the small header writes.
    s.set_nodelay(false)?;
    let mut hello = [0u8; MAGIC.len() + TOKEN_LEN];
    hello[..MAGIC.len()].copy_from_slice(&MAGIC);
    hello[MAGIC.len()..].copy_from_slice(token.as_bytes());
    s.write_all(&hello)?;
    s.set_read_timeout(Some(timeout))?;
    let mut answer = [0u8; 1];
    match s.read(&mut answer) {
        Ok(1) if answer[0] == ACCEPTED => {}
        Ok(_) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the destination refused the data connection (token not accepted)")),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the destination did not accept the data connection in time"))
        }
        Err(e) => return Err(e),
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// CPU time the calling thread used so far: next to its wall-clock time it shows whether a
/// transfer was limited by this end's work or by waiting for a CPU on a shared machine.
pub fn thread_cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    getrusage(UsageWho::RUSAGE_THREAD).map(|u| tv(u.user_time()) + tv(u.system_time())).unwrap_or_default()
}

/// A reader or writer that counts what passes and keeps the last 32 bytes: the image's
/// whole-image blake3 digest, which is how both ends name the image they agree on. It also
/// adds up the time spent inside the inner reads or writes (waiting on the socket), which
/// says which end limits the transfer.
pub struct Tail<W> {
    inner: W,
    bytes: u64,
    last: Last32,
    io_time: Duration,
}

impl<W> Tail<W> {
    pub fn new(inner: W) -> Self {
        Tail { inner, bytes: 0, last: Last32::default(), io_time: Duration::ZERO }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Time spent in the inner reads or writes.
    pub fn io_time(&self) -> Duration {
        self.io_time
    }
    /// The last 32 bytes seen (zero-padded in front when fewer passed).
    pub fn last32(&self) -> [u8; 32] {
        self.last.get()
    }
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
    fn note(&mut self, b: &[u8]) {
        self.bytes += b.len() as u64;
        self.last.note(b);
    }
}

impl<W: Write> Write for Tail<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = Instant::now();
        let n = self.inner.write(buf);
        self.io_time += t.elapsed();
        let n = n?;
        self.note(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = Instant::now();
        let n = self.inner.read(buf);
        self.io_time += t.elapsed();
        let n = n?;
        self.note(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn tokens_compare_whole() {
        let t = Token::random().unwrap();
        assert!(t.matches(t.as_bytes()));
        let mut other = *t.as_bytes();
        other[31] ^= 1;
        assert!(!t.matches(&other));
        assert!(!t.matches(&t.as_bytes()[..31]));
        assert_ne!(Token::random().unwrap().as_bytes(), t.as_bytes());
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn ssh_connection_names_the_server_address() {
        assert_eq!(server_address("198.18.0.1 51234 198.18.0.2 22"), Some("198.18.0.2".parse().unwrap()));
        assert_eq!(server_address("fe80::1%eth0 5 fe80::2%eth0 22"), Some("fe80::2".parse().unwrap()));
        assert_eq!(server_address("garbage"), None);
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!("6000".parse::<PortRange>(), Ok(PortRange { first: 6000, last: 6000 }));
        assert_eq!("6000-6010".parse::<PortRange>(), Ok(PortRange { first: 6000, last: 6010 }));
        assert!("6010-6000".parse::<PortRange>().is_err());
        assert!("0".parse::<PortRange>().is_err());
        assert!("x".parse::<PortRange>().is_err());
    }

    #[test]
    fn tail_keeps_the_last_32_bytes() {
        let mut t = Tail::new(Vec::new());
        let data: Vec<u8> = (0..100u8).collect();
        for piece in data.chunks(7) {
            t.write_all(piece).unwrap();
        }
        assert_eq!(t.bytes(), 100);
        assert_eq!(t.last32()[..], data[68..]);
        let mut r = Tail::new(&data[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!(r.last32()[..], data[68..]);
    }

    /// Moves this test's thread (and the threads it starts) into a network namespace of its
    /// own with only a loopback, so no test touches the host's network. False (the caller
    /// skips, saying why) where that needs privileges this run lacks.
    fn private_loopback(test: &str) -> bool {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            eprintln!("{test}: skipped: cannot make a network namespace ({e}); run as root");
            return false;
        }
        let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
        assert!(up.is_ok_and(|s| s.success()), "cannot bring lo up in the test netns");
        true
    }

    /// A listener on the test's own loopback, a token, and a cancel flag (`None`: skipped).
    fn listening(test: &str) -> Option<(TcpListener, SocketAddr, Token, AtomicBool)> {
        if !private_loopback(test) {
            return None;
        }
        let listener = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), PortRange::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        Some((listener, addr, Token::random().unwrap(), AtomicBool::new(false)))
    }

    /// The source's end `good` sends an image and hangs up: the accepted end reads just that.
    fn image_arrives(mut good: TcpStream, accepted: Result<TcpStream, AcceptError>) {
        good.write_all(b"image").unwrap();
        drop(good);
        let mut got = accepted.unwrap();
        let mut data = Vec::new();
        got.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"image");
    }

    #[test]
    fn a_wrong_token_is_refused_and_the_right_one_still_gets_in() {
        let Some((listener, addr, token, cancel)) = listening("a_wrong_token_is_refused_and_the_right_one_still_gets_in") else { return };
        std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_authenticated(&listener, &token, Duration::from_secs(20), &cancel));
            // A wrong token, and then someone who sends nothing valid at all.
            let wrong = Token::random().unwrap();
            let e = connect(addr, &wrong, Duration::from_secs(10)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            let mut junk = TcpStream::connect(addr).unwrap();
            junk.write_all(b"GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").unwrap();
            let mut buf = [0u8; 1];
            assert_eq!(junk.read(&mut buf).unwrap_or(0), 0, "junk was answered");
            // The listener still waits: the right token gets in and its bytes arrive.
            let good = connect(addr, &token, Duration::from_secs(10)).unwrap();
            image_arrives(good, acceptor.join().unwrap());
        });
    }

    /// Connections that send nothing, or half a token and then nothing, do not hold up the
    /// source's: it is in within a second, and they are closed unanswered.
    #[test]
    fn idle_connections_do_not_delay_the_right_one() {
        let Some((listener, addr, token, cancel)) = listening("idle_connections_do_not_delay_the_right_one") else { return };
        std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_authenticated(&listener, &token, Duration::from_secs(30), &cancel));
            let mut idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let mut half = TcpStream::connect(addr).unwrap();
            half.write_all(&MAGIC).unwrap();
            idle.push(half);
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            let good = connect(addr, &token, Duration::from_secs(10)).expect("the source's connection was not accepted");
            let waited = t0.elapsed();
            assert!(waited < Duration::from_secs(1), "the right connection waited {waited:?} behind idle ones");
            image_arrives(good, acceptor.join().unwrap());
            for mut c in idle {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 1];
                assert_eq!(c.read(&mut b).unwrap_or(0), 0, "an idle connection was answered");
            }
        });
        // On its own, one that never shows its token is dropped after the short deadline.
        std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_authenticated(&listener, &token, Duration::from_secs(30), &cancel));
            let mut idle = TcpStream::connect(addr).unwrap();
            idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let t0 = Instant::now();
            let mut b = [0u8; 1];
            assert_eq!(idle.read(&mut b).unwrap_or(0), 0);
            assert!(t0.elapsed() < TOKEN_DEADLINE + Duration::from_secs(1), "{:?}", t0.elapsed());
            cancel.store(true, Ordering::Relaxed);
            assert!(matches!(acceptor.join().unwrap(), Err(AcceptError::Cancelled)));
        });
    }

    #[test]
    fn accepting_ends_at_the_deadline_or_when_cancelled() {
        if !private_loopback("accepting_ends_at_the_deadline_or_when_cancelled") {
            return;
        }
        let listener = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), PortRange::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        let token = Token::random().unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_authenticated(&listener, &token, Duration::from_millis(700), &cancel));
            let _ = connect(addr, &Token::random().unwrap(), Duration::from_secs(5));
            match acceptor.join().unwrap() {
                Err(AcceptError::Deadline(_, 1)) => {}
                other => panic!("expected the deadline with one refusal, got {other:?}"),
            }
        });
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_authenticated(&listener, &token, Duration::from_secs(30), &cancel));
            std::thread::sleep(Duration::from_millis(200));
            cancel.store(true, Ordering::Relaxed);
            assert!(matches!(acceptor.join().unwrap(), Err(AcceptError::Cancelled)));
        });
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_fixed_port_range_is_used() {
        if !private_loopback("a_fixed_port_range_is_used") {
            return;
        }
        let a = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), PortRange { first: 47311, last: 47312 }).unwrap();
        let b = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), PortRange { first: 47311, last: 47312 }).unwrap();
        assert_eq!(a.local_addr().unwrap().port(), 47311);
        assert_eq!(b.local_addr().unwrap().port(), 47312);
        let e = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), PortRange { first: 47311, last: 47312 }).unwrap_err();
        assert!(e.to_string().contains("47311-47312"), "{e}");
    }
}
