//! The decisions of a verified handover, kept free of sockets so that they are unit-tested:
//! which neighbours to probe after a container's addresses were announced from a new host,
//! when to announce again (back-off), and when to stop. The packets are in
//! [`super::probe`].
//!
//! A neighbour that answers an ARP probe or a neighbour solicitation sent from the
//! container's address with the new MAC has that MAC in its cache (Linux records the sender of
//! a request addressed to it) and reaches the new host: the handover is confirmed for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// The first wait after an announce; each next one doubles, up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_millis(800);
/// How long the destination keeps announcing and probing before it reports the handover
/// unconfirmed.
pub const DEADLINE: Duration = Duration::from_secs(3);
/// At most this many neighbours are probed (a container's connections are its own choice).
pub const MAX_NEIGHBOURS: usize = 16;

/// When to announce and probe again: at 0, then 50, 150, 350, 750 ms ... after the start
/// (waits of 50, 100, 200, 400, 800, 800 ... ms), never at or after `deadline`.
pub fn schedule(first: Duration, max: Duration, deadline: Duration) -> Vec<Duration> {
    let mut at = vec![Duration::ZERO];
    let (mut t, mut wait) = (Duration::ZERO, first);
    while !wait.is_zero() {
        t += wait;
        if t >= deadline {
            break;
        }
        at.push(t);
        wait = (wait * 2).min(max);
    }
    at
}

/// One established TCP connection of the container, as its netns lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub local: IpAddr,
    pub remote: IpAddr,
}

/// The established connections in a `/proc/net/tcp` or `/proc/net/tcp6` listing (the kernel's
/// text for the caller's netns). Lines that do not parse are skipped.
pub fn established(listing: &str) -> Vec<Connection> {
    listing.lines().skip(1).filter_map(parse_tcp_line).collect()
}

fn parse_tcp_line(line: &str) -> Option<Connection> {
    let mut f = line.split_whitespace();
    let (_slot, local, remote, state) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if state != "01" {
        return None; // TCP_ESTABLISHED
    }
    Some(Connection { local: parse_proc_addr(local)?, remote: parse_proc_addr(remote)? })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6): the address in host byte order per 32-bit
/// word, as the kernel prints it.
fn parse_proc_addr(s: &str) -> Option<IpAddr> {
    let hex = s.split(':').next()?;
    let words: Option<Vec<u32>> = (0..hex.len() / 8).map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()).collect();
    let words = words?;
    match (hex.len(), words.as_slice()) {
        (8, [w]) => Some(IpAddr::V4(Ipv4Addr::from(w.swap_bytes()))),
        (32, [a, b, c, d]) => {
            let mut o = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(o);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// Where a route lookup of a peer leads: out of `dev`, through `gateway` when not on-link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dev: String,
    pub gateway: Option<IpAddr>,
}

/// A neighbour to probe from the container's `local` address on `dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dev: String,
    pub local: IpAddr,
    pub neighbour: IpAddr,
}

/// The neighbours to probe: for each connection whose local address is one of `addrs` (the
/// container's addresses announced on `dev`), the next hop towards its peer when that leaves
/// through `dev` (the peer itself on-link, else its gateway); without such connections, each
/// family's default gateway on `dev` (`gateways`). Duplicates once, at most [`MAX_NEIGHBOURS`].
pub fn choose_neighbours(
    dev: &str,
    addrs: &[IpAddr],
    conns: &[Connection],
    route: impl Fn(IpAddr) -> Option<Route>,
    gateways: &[IpAddr],
) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let push = |out: &mut Vec<Target>, local: IpAddr, neighbour: IpAddr| {
        let t = Target { dev: dev.to_string(), local, neighbour };
        if out.len() < MAX_NEIGHBOURS && neighbour != local && !neighbour.is_loopback() && !neighbour.is_unspecified() && !out.contains(&t) {
            out.push(t);
        }
    };
    for c in conns.iter().filter(|c| addrs.contains(&c.local) && c.local.is_ipv4() == c.remote.is_ipv4()) {
        if let Some(r) = route(c.remote).filter(|r| r.dev == dev) {
            push(&mut out, c.local, r.gateway.unwrap_or(c.remote));
        }
    }
    for a in addrs {
        if !out.iter().any(|t| t.local.is_ipv4() == a.is_ipv4()) {
            for g in gateways.iter().filter(|g| g.is_ipv4() == a.is_ipv4()) {
                push(&mut out, *a, *g);
            }
        }
    }
    out
}

/// How far a handover got: which targets answered, how many announce rounds went out.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pending: Vec<Target>,
    answered: Vec<Target>,
    pub announces: u32,
    /// When the last pending target answered, after the start.
    pub confirmed_at: Option<Duration>,
}

impl Progress {
    pub fn new(targets: Vec<Target>) -> Progress {
        Progress { pending: targets, ..Default::default() }
    }

    pub fn pending(&self) -> &[Target] {
        &self.pending
    }

    pub fn neighbours(&self) -> usize {
        self.pending.len() + self.answered.len()
    }

    /// `neighbour` answered for `local` on `dev` at `at` after the start.
    pub fn answered(&mut self, dev: &str, local: IpAddr, neighbour: IpAddr, at: Duration) {
        if let Some(i) = self.pending.iter().position(|t| t.dev == dev && t.local == local && t.neighbour == neighbour) {
            self.answered.push(self.pending.remove(i));
            if self.pending.is_empty() {
                self.confirmed_at = Some(at);
            }
        }
    }

    /// Whether to stop: every neighbour answered (or there was none to ask).
    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What a verified handover reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// When every probed neighbour had answered, after the start; None: not confirmed.
    pub confirmed_after: Option<Duration>,
    pub announces: u32,
    /// How many neighbours were probed (0: none known, so nothing could be confirmed).
    pub neighbours: u32,
    /// The neighbours that never answered.
    pub unanswered: Vec<IpAddr>,
}

impl From<&Progress> for Outcome {
    fn from(p: &Progress) -> Outcome {
        Outcome {
            confirmed_after: p.confirmed_at.filter(|_| p.neighbours() > 0),
            announces: p.announces,
            neighbours: p.neighbours() as u32,
            unanswered: p.pending.iter().map(|t| t.neighbour).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn schedule_doubles_up_to_the_cap_and_stops_before_the_deadline() {
        let s = schedule(Duration::from_millis(50), Duration::from_millis(400), Duration::from_millis(1600));
        let ms: Vec<u128> = s.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 50, 150, 350, 750, 1150, 1550]);
        assert_eq!(schedule(BACKOFF_FIRST, BACKOFF_MAX, Duration::from_millis(10)), vec![Duration::ZERO]);
        assert!(schedule(BACKOFF_FIRST, BACKOFF_MAX, DEADLINE).iter().all(|t| *t < DEADLINE));
    }

    #[test]
    fn proc_net_tcp_lists_the_established_connections() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 150112C6:1F40 650012C6:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
   garbage line\n";
        assert_eq!(established(v4), vec![Connection { local: ip("198.18.1.21"), remote: ip("198.18.0.101") }]);
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: B80D0120000000000000000021000100:1F40 B80D0120000000000000000065000000:D431 01 0\n\
   1: 0000000000000000FFFF0000150112C6:1F40 0000000000000000FFFF0000650012C6:D432 01 0\n";
        assert_eq!(
            established(v6),
            vec![
                Connection { local: ip("2001:db8::1:21"), remote: ip("2001:db8::65") },
                Connection { local: ip("198.18.1.21"), remote: ip("198.18.0.101") },
            ],
            "IPv4-mapped peers of a dual-stack socket count as IPv4"
        );
    }

    #[test]
    fn neighbours_are_the_next_hops_of_the_connections_else_the_gateway() {
        let ct4 = ip("198.18.1.21");
        let ct6 = ip("2001:db8::1:21");
        let conns = [
            Connection { local: ct4, remote: ip("198.18.0.101") },
            Connection { local: ct4, remote: ip("198.18.0.102") },
            Connection { local: ct4, remote: ip("198.18.0.101") }, // a second connection, same peer
            Connection { local: ct4, remote: ip("198.19.5.5") },   // off-link: its gateway
            Connection { local: ct4, remote: ip("198.19.6.6") },   // off-link, same gateway
            Connection { local: ip("10.0.0.1"), remote: ip("198.18.0.103") }, // not an announced address
            Connection { local: ct4, remote: ip("127.0.0.1") },
        ];
        let route = |a: IpAddr| match a {
            IpAddr::V4(v) if v.octets()[..3] == [198, 18, 0] => Some(Route { dev: "eth0".into(), gateway: None }),
            IpAddr::V4(v) if v.octets()[1] == 19 => Some(Route { dev: "eth0".into(), gateway: Some(ip("198.18.0.254")) }),
            IpAddr::V4(_) => Some(Route { dev: "lo".into(), gateway: None }),
            IpAddr::V6(_) => None,
        };
        let gws = [ip("198.18.0.1"), ip("2001:db8::fe")];
        let t = choose_neighbours("eth0", &[ct4, ct6], &conns, route, &gws);
        let n: Vec<(IpAddr, IpAddr)> = t.iter().map(|t| (t.local, t.neighbour)).collect();
        assert_eq!(
            n,
            vec![(ct4, ip("198.18.0.101")), (ct4, ip("198.18.0.102")), (ct4, ip("198.18.0.254")), (ct6, ip("2001:db8::fe"))],
            "IPv4 from its connections, IPv6 (none) from its default gateway"
        );
        assert!(t.iter().all(|t| t.dev == "eth0"));
        // Nothing known: nothing to probe.
        assert!(choose_neighbours("eth0", &[ct4], &[], route, &[]).is_empty());
        // A container with many peers gets a bounded probe list.
        let many: Vec<Connection> = (1..200).map(|i| Connection { local: ct4, remote: IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)) }).collect();
        assert_eq!(choose_neighbours("eth0", &[ct4], &many, route, &[]).len(), MAX_NEIGHBOURS);
    }

    #[test]
    fn progress_confirms_when_the_last_neighbour_answers() {
        let a = ip("198.18.1.21");
        let t = |n: &str| Target { dev: "eth0".into(), local: a, neighbour: ip(n) };
        let mut p = Progress::new(vec![t("198.18.0.101"), t("198.18.0.102")]);
        assert!(!p.done());
        p.answered("eth0", a, ip("198.18.0.101"), Duration::from_millis(3));
        p.answered("eth0", a, ip("198.18.0.101"), Duration::from_millis(4)); // a second reply
        p.answered("eth1", a, ip("198.18.0.102"), Duration::from_millis(5)); // another device
        assert!(!p.done());
        assert_eq!(Outcome::from(&p).confirmed_after, None);
        assert_eq!(Outcome::from(&p).unanswered, vec![ip("198.18.0.102")]);
        p.answered("eth0", a, ip("198.18.0.102"), Duration::from_millis(60));
        assert!(p.done());
        let o = Outcome::from(&p);
        assert_eq!(o.confirmed_after, Some(Duration::from_millis(60)));
        assert_eq!(o.neighbours, 2);
        // No neighbour at all: done at once, but never reported confirmed.
        let p = Progress::new(Vec::new());
        assert!(p.done());
        assert_eq!(Outcome::from(&p).confirmed_after, None);
    }
}
