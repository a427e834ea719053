//! The packets of a verified handover ([`super::handover`] decides): after a container's
//! addresses were announced from a new host, ARP requests (IPv4) and neighbour solicitations
//! (IPv6) from the container's address to its neighbours, sent where the address lives (venet:
//! the host's uplink with the host's MAC; bridged veth: the container's interface inside its
//! netns), and the announce repeated with back-off until every neighbour answered or the
//! deadline passed. AF_PACKET, as [`super::announce`].

use super::announce::{announce_frames, ether_header, icmpv6_checksum, PacketSocket, BROADCAST_MAC, ETH_P_ARP, ETH_P_IPV6, ICMPV6_NA};
use super::handover::{self, choose_neighbours, Connection, Outcome, Progress, Route};
use super::tools::{ip, ip_in, CtNetns};
use super::{container_addrs, venet_by_uplink, NetState};
use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const ICMPV6_NS: u8 = 135;
const OPT_SOURCE_LLADDR: u8 = 1;

/// An ARP request for `target` from `local` with `mac`, broadcast.
pub fn arp_probe_frame(mac: &[u8; 6], local: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    ether_header(&mut f, &BROADCAST_MAC, mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(mac);
    f.extend_from_slice(&local.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// The solicited-node multicast group of `a` (ff02::1:ffXX:XXXX) and its Ethernet address.
fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = a.octets();
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
    (group, [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

/// A neighbour solicitation for `target` from `local` (source link-layer option `mac`) to
/// the target's solicited-node group; and the Ethernet destination.
pub fn solicitation_frame(mac: &[u8; 6], local: Ipv6Addr, target: Ipv6Addr) -> (Vec<u8>, [u8; 6]) {
    let (group, group_mac) = solicited_node(target);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[ICMPV6_NS, 0, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[OPT_SOURCE_LLADDR, 1]);
    icmp.extend_from_slice(mac);
    let ck = icmpv6_checksum(&local, &group, &icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    ether_header(&mut f, &group_mac, mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&local.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&icmp);
    (f, group_mac)
}

/// The probe of `neighbour` from `local`, if both are of one family.
fn probe_frame(mac: &[u8; 6], local: IpAddr, neighbour: IpAddr) -> Option<(Vec<u8>, [u8; 6])> {
    match (local, neighbour) {
        (IpAddr::V4(l), IpAddr::V4(n)) => Some((arp_probe_frame(mac, l, n), BROADCAST_MAC)),
        (IpAddr::V6(l), IpAddr::V6(n)) => Some(solicitation_frame(mac, l, n)),
        _ => None,
    }
}

/// An answer in a received frame: (the neighbour that answered, the address it answered).
/// An ARP reply from the neighbour to the container's address, or a neighbour advertisement
/// of the neighbour's address sent to the container's address, either addressed to `mac`
/// (where the probes went out): an answer meant for another host (the old one) proves
/// nothing. Anything else is None.
pub fn parse_answer(f: &[u8], mac: &[u8; 6]) -> Option<(IpAddr, IpAddr)> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if f.get(0..6)? != mac {
        return None;
    }
    match ethertype {
        ETH_P_ARP if f.len() >= 42 && f[14..22] == [0, 1, 8, 0, 6, 4, 0, 2] && f[32..38] == *mac => {
            let sender = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
            let target = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
            Some((IpAddr::V4(sender), IpAddr::V4(target)))
        }
        ETH_P_IPV6 if f.len() >= 14 + 40 + 24 && f[14] >> 4 == 6 && f[20] == 58 && f[54] == ICMPV6_NA => {
            let dst: [u8; 16] = f[38..54].try_into().ok()?;
            let target: [u8; 16] = f[62..78].try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(target)), IpAddr::V6(Ipv6Addr::from(dst))))
        }
        _ => None,
    }
}

/// One place a container's addresses live: a device (in the host's netns or the container's)
/// with the MAC they are announced with, its sockets, and its neighbours.
struct Site {
    dev: String,
    mac: [u8; 6],
    addrs: Vec<IpAddr>,
    tx: PacketSocket,
    rx: PacketSocket,
    targets: Vec<handover::Target>,
}

impl Site {
    /// Open the sockets on `dev` in the calling thread's netns (its neighbours are found
    /// afterwards).
    fn open(dev: &str, addrs: Vec<IpAddr>) -> Result<Site> {
        let tx = PacketSocket::open(dev)?;
        let rx = PacketSocket::open_receiving(dev)?;
        let mac = tx.hwaddr(dev)?;
        Ok(Site { dev: dev.to_string(), mac, addrs, tx, rx, targets: Vec::new() })
    }

    /// Announce the addresses once (`announce`), and probe the neighbours still `pending`.
    fn send_round(&self, announce: bool, pending: &[handover::Target]) -> Result<()> {
        let send =
            |frame: &[u8], dst: &[u8; 6]| self.tx.send(frame, dst).map_err(|e| Error::Net(format!("handover on {}: sendto failed: {e}", self.dev)));
        if announce {
            for (frame, dst) in announce_frames(&self.mac, &self.addrs) {
                send(&frame, &dst)?;
            }
        }
        for t in pending.iter().filter(|t| t.dev == self.dev) {
            if let Some((frame, dst)) = probe_frame(&self.mac, t.local, t.neighbour) {
                send(&frame, &dst)?;
            }
        }
        Ok(())
    }
}

/// `ip -j route get ADDR` / `ip -j route show default` output: each route's dev and gateway.
fn parse_routes(json: &str) -> Vec<Route> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r.is_object())
        // `ip route show ... dev X` leaves the dev out of each route.
        .map(|r| Route { dev: r["dev"].as_str().unwrap_or_default().to_string(), gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()) })
        .collect()
}

/// Route lookups and default gateways, in the host's netns (`ns` None) or the container's.
struct Lookup<'a> {
    ns: Option<&'a CtNetns>,
}

impl Lookup<'_> {
    fn ip(&self, args: &[&str]) -> Option<String> {
        match self.ns {
            Some(ns) => ip_in(ns, args).ok(),
            None => ip(args).ok(),
        }
    }

    fn route(&self, a: IpAddr) -> Option<Route> {
        let s = a.to_string();
        parse_routes(&self.ip(&["-j", "route", "get", &s])?).into_iter().next()
    }

    fn gateways(&self, dev: &str) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let routes = parse_routes(&self.ip(&[fam, "-j", "route", "show", "default", "dev", dev]).unwrap_or_default());
            out.extend(routes.into_iter().filter_map(|r| r.gateway));
        }
        out
    }

    /// The neighbours of `addrs` on `dev`, from the container's `conns`.
    fn targets(&self, dev: &str, addrs: &[IpAddr], conns: &[Connection]) -> Vec<handover::Target> {
        // One lookup per peer (a container may hold many connections to one).
        let mut peers: Vec<IpAddr> = conns.iter().filter(|c| addrs.contains(&c.local)).map(|c| c.remote).collect();
        peers.sort();
        peers.dedup();
        peers.truncate(4 * handover::MAX_NEIGHBOURS);
        let routes: Vec<(IpAddr, Option<Route>)> = peers.iter().map(|p| (*p, self.route(*p))).collect();
        let route = |a: IpAddr| routes.iter().find(|(p, _)| *p == a).and_then(|(_, r)| r.clone());
        choose_neighbours(dev, addrs, conns, route, &self.gateways(dev))
    }
}

/// The container's established TCP connections, as the kernel lists them in its netns.
fn connections(ns: &CtNetns) -> Vec<Connection> {
    ns.run(|| {
        let mut out = Vec::new();
        for f in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            out.extend(handover::established(&std::fs::read_to_string(f).unwrap_or_default()));
        }
        Ok(out)
    })
    .unwrap_or_default()
}

/// Verify the handover of a container that runs here now: announce its addresses, probe its
/// neighbours (the next hops of its TCP connections, else the default gateways) and announce
/// again after 50, 100, 200, 400, 800 ... ms until every neighbour answered, `deadline`
/// passed or `still_here` says the container left. Confirmation times are measured from
/// `since` (the restore). Only errors before the first announce are errors; an unconfirmed
/// handover is an [`Outcome`] without `confirmed_after`.
pub fn verify_handover(st: &NetState, ns: Option<&CtNetns>, since: Instant, deadline: Duration, still_here: &dyn Fn() -> bool) -> Result<Outcome> {
    // The sites first, and the first announce at once: it is what moves the neighbours'
    // caches; finding whom to probe (route lookups) comes after. A site that cannot be opened
    // is left out (said in the log), so the others are still announced.
    let mut sites: Vec<(Site, Option<&CtNetns>)> = Vec::new();
    let mut failed = None;
    for (dev, addrs) in venet_by_uplink(st) {
        match Site::open(&dev, addrs) {
            Ok(site) => sites.push((site, None)),
            Err(e) => failed = Some(e),
        }
    }
    for (b, ns) in st.bridged.iter().filter_map(|b| Some((b, ns?))) {
        // Sockets opened inside the container's netns stay bound to its device there.
        match container_addrs(ns, &b.inner).and_then(|addrs| ns.run(|| Site::open(&b.inner, addrs))) {
            Ok(site) => sites.push((site, Some(ns))),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        if sites.is_empty() {
            return Err(e);
        }
        tracing::warn!("handover: {e}; the other addresses are announced");
    }
    for (site, _) in &sites {
        site.send_round(true, &[])?;
    }
    let conns = ns.map(connections).unwrap_or_default();
    for (site, in_ns) in &mut sites {
        site.targets = Lookup { ns: *in_ns }.targets(&site.dev, &site.addrs, &conns);
    }
    let sites: Vec<Site> = sites.into_iter().map(|(s, _)| s).collect();
    let mut progress = Progress::new(sites.iter().flat_map(|s| s.targets.clone()).collect());
    progress.announces = 1;
    let start = Instant::now();
    let schedule = handover::schedule(handover::BACKOFF_FIRST, handover::BACKOFF_MAX, deadline);
    let mut buf = vec![0u8; 2048];
    for i in 0..schedule.len() {
        if i > 0 && !still_here() {
            break;
        }
        // Round 0 probes only: its announce went out as soon as the sites were open.
        for s in &sites {
            if let Err(e) = s.send_round(i > 0, progress.pending()) {
                tracing::warn!("{e}");
            }
        }
        if i > 0 {
            progress.announces += 1;
        }
        let until = start + schedule.get(i + 1).copied().unwrap_or(deadline);
        while !progress.done() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wait_readable(&sites, left);
            for s in &sites {
                while let Some(n) = s.rx.recv(&mut buf) {
                    if let Some((neighbour, local)) = parse_answer(&buf[..n], &s.mac) {
                        progress.answered(&s.dev, local, neighbour, since.elapsed());
                    }
                }
            }
        }
        if progress.done() {
            break;
        }
    }
    Ok(Outcome::from(&progress))
}

/// Wait until a frame arrives on one of the sites' sockets, at most `timeout`.
fn wait_readable(sites: &[Site], timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = sites.iter().map(|s| libc::pollfd { fd: s.rx.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: fds is a valid array of fds.len() pollfd structs for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn arp_probe_is_a_request_from_the_containers_address() {
        let f = arp_probe_frame(&MAC, Ipv4Addr::new(198, 18, 1, 21), Ipv4Addr::new(198, 18, 0, 101));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &BROADCAST_MAC);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[198, 18, 1, 21]);
        assert_eq!(&f[38..42], &[198, 18, 0, 101]);
        assert_eq!(parse_answer(&f, &MAC), None, "our own request is no answer");
        // The neighbour's reply: to our MAC, op 2, sender = neighbour, target = the
        // container's address and our MAC.
        let mut r = f.clone();
        r[0..6].copy_from_slice(&MAC);
        r[21] = 2;
        r[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        r[28..32].copy_from_slice(&[198, 18, 0, 101]);
        r[32..38].copy_from_slice(&MAC);
        r[38..42].copy_from_slice(&[198, 18, 1, 21]);
        assert_eq!(parse_answer(&r, &MAC), Some(("198.18.0.101".parse().unwrap(), "198.18.1.21".parse().unwrap())));
        // The same reply meant for another host (the one the container left) proves nothing.
        let other = [0x02, 0xaa, 0, 0, 0, 1];
        assert_eq!(parse_answer(&r, &other), None);
        let mut to_other = r.clone();
        to_other[32..38].copy_from_slice(&other);
        assert_eq!(parse_answer(&to_other, &MAC), None, "a reply whose target hardware address is another's");
    }

    #[test]
    fn solicitation_goes_to_the_solicited_node_group_with_a_valid_checksum() {
        let local: Ipv6Addr = "2001:db8::1:21".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::ab:cd65".parse().unwrap();
        let (f, dst) = solicitation_frame(&MAC, local, target);
        assert_eq!(dst, [0x33, 0x33, 0xff, 0xab, 0xcd, 0x65]);
        assert_eq!(&f[0..6], &dst);
        assert_eq!(f.len(), 14 + 40 + 32);
        let group: Ipv6Addr = "ff02::1:ffab:cd65".parse().unwrap();
        assert_eq!(&f[38..54], &group.octets());
        let icmp = &f[54..];
        assert_eq!(icmp[0], ICMPV6_NS);
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..26], &[1, 1]);
        assert_eq!(&icmp[26..32], &MAC);
        let mut zeroed = icmp.to_vec();
        zeroed[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(icmpv6_checksum(&local, &group, &zeroed).to_be_bytes(), [icmp[2], icmp[3]]);
        assert_eq!(parse_answer(&f, &MAC), None, "a solicitation is no answer");
    }

    #[test]
    fn an_advertisement_to_the_container_is_an_answer() {
        let local: Ipv6Addr = "2001:db8::1:21".parse().unwrap();
        let peer: Ipv6Addr = "2001:db8::65".parse().unwrap();
        let mut f = Vec::new();
        ether_header(&mut f, &MAC, &[2, 0, 0, 0, 0, 9], ETH_P_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend_from_slice(&peer.octets());
        f.extend_from_slice(&local.octets());
        f.extend_from_slice(&[ICMPV6_NA, 0, 0, 0, 0x60, 0, 0, 0]);
        f.extend_from_slice(&peer.octets());
        f.extend_from_slice(&[2, 1, 2, 0, 0, 0, 0, 9]);
        assert_eq!(parse_answer(&f, &MAC), Some((IpAddr::V6(peer), IpAddr::V6(local))));
        assert_eq!(parse_answer(&f[..60], &MAC), None, "a truncated frame is ignored");
        assert_eq!(parse_answer(&f, &[2, 0, 0, 0, 0, 9]), None, "an advertisement to another host");
    }

    #[test]
    fn routes_from_ip_json() {
        let r = parse_routes(r#"[{"dst":"198.19.5.5","gateway":"198.18.0.254","dev":"eth0","prefsrc":"198.18.0.1","flags":[],"uid":0,"cache":[]}]"#);
        assert_eq!(r, vec![Route { dev: "eth0".into(), gateway: Some("198.18.0.254".parse().unwrap()) }]);
        assert_eq!(parse_routes(r#"[{"dst":"198.18.0.101","dev":"eth0"}]"#)[0].gateway, None);
        assert!(parse_routes("not json").is_empty());
        let gw = parse_routes(r#"[{"dst":"default","gateway":"2001:db8::101","flags":[]}]"#);
        assert_eq!(gw[0].gateway, Some("2001:db8::101".parse().unwrap()), "`show default dev X` has no dev");
    }
}
