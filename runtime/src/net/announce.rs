//! Address announcements from Rust over an AF_PACKET socket: gratuitous ARP (request and
//! reply forms) for IPv4 and unsolicited neighbour advertisements for IPv6, so neighbours
//! repoint their caches at once after a start, restore or migration.

use super::tools::CtNetns;
use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// Ethernet address of the IPv6 all-nodes group ff02::1.
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

pub(super) const ETH_P_ARP: u16 = 0x0806;
pub(super) const ETH_P_IPV6: u16 = 0x86dd;
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;
pub(super) const ICMPV6_NA: u8 = 136;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const OPT_TARGET_LLADDR: u8 = 2;

pub(super) fn ether_header(frame: &mut Vec<u8>, dst: &[u8; 6], src: &[u8; 6], ethertype: u16) {
    frame.extend_from_slice(dst);
    frame.extend_from_slice(src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
}

/// A gratuitous ARP frame: sender = target = `ip`, broadcast destination. The request form
/// leaves the target MAC zero; the reply form repeats the sender MAC there, which Linux
/// requires to treat a reply as gratuitous.
pub fn garp_frame(mac: &[u8; 6], ip: Ipv4Addr, reply: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    ether_header(&mut f, &BROADCAST_MAC, mac, ETH_P_ARP);
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.push(6);
    f.push(4);
    f.extend_from_slice(&(if reply { ARPOP_REPLY } else { ARPOP_REQUEST }).to_be_bytes());
    f.extend_from_slice(mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(if reply { mac } else { &[0u8; 6] });
    f.extend_from_slice(&ip.octets());
    f
}

/// Internet checksum (RFC 1071) of the concatenated parts.
fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in p.iter() {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMPv6 checksum over the IPv6 pseudo-header and the message (its checksum field zero).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let len = (msg.len() as u32).to_be_bytes();
    let nh = [0u8, 0, 0, 58];
    inet_checksum(&[&src.octets(), &dst.octets(), &len, &nh, msg])
}

/// An unsolicited neighbour advertisement for `target` (override flag, target link-layer
/// address option) to ff02::1 from `src`, hop limit 255.
pub fn unsolicited_na_frame(mac: &[u8; 6], target: Ipv6Addr, src: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.push(ICMPV6_NA);
    icmp.push(0); // code
    icmp.extend_from_slice(&[0, 0]); // checksum, filled below
    icmp.push(NA_FLAG_OVERRIDE);
    icmp.extend_from_slice(&[0, 0, 0]);
    icmp.extend_from_slice(&target.octets());
    icmp.push(OPT_TARGET_LLADDR);
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(mac);
    let ck = icmpv6_checksum(&src, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    ether_header(&mut f, &ALL_NODES_MAC, mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58); // ICMPv6
    f.push(255); // hop limit: receivers drop NAs that crossed a router
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The frames announcing `addrs` with `mac`: for IPv4 a request and a reply, for IPv6 one NA
/// (sourced from the address itself).
pub fn announce_frames(mac: &[u8; 6], addrs: &[IpAddr]) -> Vec<(Vec<u8>, [u8; 6])> {
    let mut out = Vec::new();
    for a in addrs {
        match a {
            IpAddr::V4(v4) => {
                out.push((garp_frame(mac, *v4, false), BROADCAST_MAC));
                out.push((garp_frame(mac, *v4, true), BROADCAST_MAC));
            }
            IpAddr::V6(v6) => out.push((unsolicited_na_frame(mac, *v6, *v6), ALL_NODES_MAC)),
        }
    }
    out
}

pub(super) struct PacketSocket {
    pub(super) fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    pub(super) fn open(ifname: &str) -> Result<Self> {
        let cname = std::ffi::CString::new(ifname).map_err(|_| Error::Net(format!("bad interface name {ifname:?}")))?;
        // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::Net(format!("announce: no interface {ifname} in this network namespace: {}", std::io::Error::last_os_error())));
        }
        // Protocol 0: this socket only sends, so it never queues received frames.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(Error::Net(format!("announce: cannot open an AF_PACKET socket (needs CAP_NET_RAW): {}", std::io::Error::last_os_error())));
        }
        // SAFETY: raw is a fresh descriptor we own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PacketSocket { fd, ifindex: ifindex as i32 })
    }

    /// A socket that receives every frame arriving on `ifname` (non-blocking), for the
    /// answers to the probes of [`super::probe`].
    pub(super) fn open_receiving(ifname: &str) -> Result<Self> {
        let sock = PacketSocket::open(ifname)?;
        let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid before we fill it.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = eth_p_all;
        sll.sll_ifindex = sock.ifindex;
        // SAFETY: sll is valid for the length passed; the fd is open.
        let r = unsafe {
            libc::bind(sock.fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
        };
        if r < 0 {
            return Err(Error::Net(format!("handover: cannot listen on {ifname}: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: fcntl on a descriptor we own.
        let r = unsafe { libc::fcntl(sock.fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if r < 0 {
            return Err(Error::Net(format!("handover: fcntl on {ifname}: {}", std::io::Error::last_os_error())));
        }
        Ok(sock)
    }

    /// The next frame received from the wire, if one waits (a non-blocking socket); what
    /// this host sent itself (PACKET_OUTGOING: a process behind this device included) is
    /// passed over, never taken as an answer.
    pub(super) fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid before recvfrom fills it.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf is valid for writes of its length, `from` for `len` bytes; the fd is open.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                return None;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Some(n as usize);
            }
        }
    }

    pub(super) fn hwaddr(&self, ifname: &str) -> Result<[u8; 6]> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes().take(libc::IFNAMSIZ - 1)) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr inside `req`, which lives
        // across the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
        if r < 0 {
            return Err(Error::Net(format!("announce: cannot read the MAC of {ifname}: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *m = *b as u8;
        }
        Ok(mac)
    }

    pub(super) fn send(&self, frame: &[u8], dst: &[u8; 6]) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid before we fill it.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(dst);
        // SAFETY: frame and sll are valid for the lengths passed; the fd is open.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Announce `addrs` on `ifname` (in the calling thread's netns) `count` times, `spacing`
/// apart: gratuitous ARP request + reply per IPv4 address, an unsolicited NA per IPv6
/// address. `mac` defaults to the interface's own. Returns once every sendto completed.
pub fn announce(ifname: &str, addrs: &[IpAddr], mac: Option<[u8; 6]>, count: u32, spacing: Duration) -> Result<()> {
    if addrs.is_empty() || count == 0 {
        return Ok(());
    }
    let sock = PacketSocket::open(ifname)?;
    let mac = match mac {
        Some(m) => m,
        None => sock.hwaddr(ifname)?,
    };
    let frames = announce_frames(&mac, addrs);
    for round in 0..count {
        if round > 0 && !spacing.is_zero() {
            std::thread::sleep(spacing);
        }
        for (frame, dst) in &frames {
            sock.send(frame, dst).map_err(|e| Error::Net(format!("announce on {ifname}: sendto failed: {e} (is {ifname} up?)")))?;
        }
    }
    Ok(())
}

/// [`announce`] from inside the container's netns `ns` (a container's device with its own
/// MAC). A scoped thread joins that netns (fine for CLONE_NEWNET in a multi-threaded
/// process) so the caller's own namespace is untouched.
pub fn announce_in_netns(ns: &CtNetns, ifname: &str, addrs: &[IpAddr], mac: Option<[u8; 6]>, count: u32, spacing: Duration) -> Result<()> {
    ns.run(|| announce(ifname, addrs, mac, count, spacing))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn garp_request_and_reply() {
        let ip = Ipv4Addr::new(198, 18, 1, 10);
        let rq = garp_frame(&MAC, ip, false);
        assert_eq!(rq.len(), 42);
        assert_eq!(&rq[0..6], &BROADCAST_MAC);
        assert_eq!(&rq[6..12], &MAC);
        assert_eq!(&rq[12..14], &[0x08, 0x06]);
        assert_eq!(&rq[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&rq[22..28], &MAC);
        assert_eq!(&rq[28..32], &ip.octets());
        assert_eq!(&rq[32..38], &[0; 6]);
        assert_eq!(&rq[38..42], &ip.octets());
        let rp = garp_frame(&MAC, ip, true);
        assert_eq!(&rp[20..22], &[0, 2]);
        assert_eq!(&rp[32..38], &MAC);
        assert_eq!(&rp[38..42], &ip.octets());
    }

    #[test]
    fn checksum_known_vector() {
        // RFC 1071's example words sum to ddf2 → checksum 220d.
        assert_eq!(inet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), 0x220d);
        // Odd lengths pad with a zero byte, also across part boundaries.
        assert_eq!(inet_checksum(&[&[0x01], &[0x02, 0x03]]), inet_checksum(&[&[0x01, 0x02, 0x03, 0x00]]));
    }

    #[test]
    fn na_frame_is_valid() {
        let t: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = unsolicited_na_frame(&MAC, t, t);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &ALL_NODES_MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip6 = &f[14..54];
        assert_eq!(ip6[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]), 32);
        assert_eq!(ip6[6], 58);
        assert_eq!(ip6[7], 255);
        assert_eq!(&ip6[8..24], &t.octets());
        assert_eq!(&ip6[24..40], &ALL_NODES.octets());
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override set, solicited and router clear");
        assert_eq!(&icmp[8..24], &t.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &MAC);
        // Verifying a correct checksum over pseudo-header + message yields zero.
        let len = (icmp.len() as u32).to_be_bytes();
        assert_eq!(inet_checksum(&[&t.octets(), &ALL_NODES.octets(), &len, &[0, 0, 0, 58], icmp]), 0);
        assert_ne!(&icmp[2..4], &[0, 0]);
    }

    #[test]
    fn frames_per_family() {
        let addrs: Vec<IpAddr> = vec!["198.18.1.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let fr = announce_frames(&MAC, &addrs);
        assert_eq!(fr.len(), 3);
        assert_eq!(fr[2].1, ALL_NODES_MAC);
    }
}
