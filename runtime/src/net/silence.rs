//! Taking a network namespace off the wire: every interface in it but `lo` set down, so that
//! nothing reaches it or leaves it any more.
//!
//! What a dump that ends a container needs (see [`crate::criu`]): CRIU locks the
//! container's netns with filter rules and leaves them there, but when the netns dies the
//! kernel drops its netfilter hooks before its interfaces. In between, a segment of a dumped
//! connection meets neither a socket nor the lock, and the dying netns answers it with a RST
//! that ends the connection the dump carries. With its interfaces down it cannot: a veth whose
//! inner end is down drops what the host sends into it, and the host side (routes, proxy
//! entries, bridge ports) stays as it is.

use super::tools::CtNetns;
use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Whether two namespace files name the same namespace.
pub fn same_namespace(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Set every interface of the network namespace `ns` but `lo` down, from a thread that joins
/// it (the caller's own namespace is untouched; no process is started). Returns the names of
/// the interfaces it took down; stops at the first that refuses.
pub fn links_down(ns: &CtNetns) -> Result<Vec<String>> {
    ns.run(|| {
        let names: Vec<String> = nix::net::if_::if_nameindex()
            .map_err(|e| Error::sys("list the interfaces of a container's netns", e))?
            .iter()
            .map(|i| i.name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        // Its sockets live in the joined netns: the ioctls act on its interfaces.
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::sys("socket for interface flags", e))?;
        for name in &names {
            set_down(&sock, name).map_err(|e| Error::Net(format!("set {name} down in a container's netns: {e}")))?;
        }
        Ok(names)
    })
}

/// Clear IFF_UP of interface `name` through `sock` (a socket of the netns it lives in).
fn set_down(sock: &impl AsRawFd, name: &str) -> std::io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in bytes.iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq we own, whose name is NUL-terminated
    // (zeroed, and shorter than IFNAMSIZ); the socket is open for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS just wrote.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own; the socket is open for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
