//! venet: a veth pair `fv<tag>` (host) / `venet0` (container). Both ends are NOARP, without
//! multicast and without IPv6 link-local addresses, and carry the same MAC (a NOARP device
//! sends to its own MAC, so equal MACs make each end accept the other's frames). Nothing is
//! bridged to it, so the container sees no broadcast or multicast of the host's segment. The
//! host routes each address (/32, /128) to `fv<tag>` and answers ARP/NDP for it on the uplink
//! with a proxy neighbour entry (`ip neigh add proxy ADDR dev UPLINK`, both families).
//! Anti-spoofing: iptables/ip6tables chains `FERRY-fv<tag>` in the raw table, jumped to from
//! PREROUTING for packets entering from `fv<tag>`: RETURN for each assigned address, DROP for
//! anything else (so spoofed packets neither reach the host nor get forwarded).
//! Host-wide sysctls (ip_forward, IPv6 forwarding, proxy_ndp on the uplink) are switched on
//! when needed and left on at teardown: other containers share them.

use super::names::{filter_chain, format_mac, venet_host_if, venet_mac, VENET_INNER};
use super::routes::{choose_uplink, host_routes, no_uplink, pick_uplink, RouteEntry};
use super::tools::{ignore_absent, HostNetTools, NetTools};
use super::{net_ct, CtNetns, FilterChain, HostRoute, NetState, ProxyEntry, VenetState};
use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use std::net::IpAddr;

pub(super) fn create_venet(t: &dyn NetTools, ct: &Ctid, st: &mut NetState, ns: &CtNetns, addrs: &[IpAddr]) -> Result<()> {
    let host_if = venet_host_if(ct);
    let mac = format_mac(&venet_mac(ct));
    if t.link_exists(&host_if) {
        return Err(Error::Net(format!(
            "host interface {host_if} already exists (another container with this CTID, or a leftover: `ip link del {host_if}`)"
        )));
    }
    t.ip(&["link", "add", &host_if, "type", "veth", "peer", "name", VENET_INNER, "netns", &ns.path()])?;
    st.host_links.push(host_if.clone());
    st.venet = Some(VenetState { host_if: host_if.clone(), addrs: Vec::new() });
    t.ip_in(ns, &["link", "set", "dev", VENET_INNER, "address", &mac, "arp", "off", "multicast", "off", "addrgenmode", "none", "up"])?;
    t.ip_in(ns, &["link", "set", "dev", "lo", "up"])?;
    venet_host_side(t, st, &host_if, addrs)
}

/// Host side of the venet pair once both ends exist: flags, MAC, forwarding, filter chains.
/// The host end of the venet pair: MAC and flags, and the raw-table chain that drops what
/// the container sends unless its source is one of `addrs` (more are added one by one with
/// [`add_addr`]). One `iptables-restore` per family, not a process per rule: on a restore
/// this runs while the container is frozen.
pub(super) fn venet_host_side(t: &dyn NetTools, st: &mut NetState, host_if: &str, addrs: &[IpAddr]) -> Result<()> {
    let ct = Ctid::new(&st.ctid)?;
    let mac = format_mac(&venet_mac(&ct));
    t.ip(&["link", "set", "dev", host_if, "address", &mac, "arp", "off", "multicast", "off", "addrgenmode", "none", "up"])?;
    t.sysctl_set(&["net", "ipv4", "ip_forward"], "1")?;
    let chain = filter_chain(host_if);
    for v6 in [false, true] {
        // A jump left by an earlier failure would stay as a duplicate: drop it in the same go.
        let rules = t.iptables(v6, &["-t", "raw", "-S", "PREROUTING"])?;
        let stale = stale_jumps(&rules, host_if, &chain);
        let fam: Vec<IpAddr> = addrs.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        st.filters.push(FilterChain { v6, table: "raw".into(), chain: chain.clone(), in_if: host_if.to_string() });
        t.iptables_restore(v6, &filter_chain_script(host_if, &chain, &fam, stale))?;
    }
    Ok(())
}

/// How many `-i IF -j CHAIN` jumps `iptables -S PREROUTING` lists.
fn stale_jumps(rules: &str, host_if: &str, chain: &str) -> usize {
    let jump = format!("-A PREROUTING -i {host_if} -j {chain}");
    rules.lines().filter(|l| l.trim() == jump).count()
}

/// The `iptables-restore --noflush` input that (re)creates `chain` (declaring it empties it
/// when it exists), lets `addrs` through, drops the rest, and hooks it into PREROUTING for
/// `host_if` once.
fn filter_chain_script(host_if: &str, chain: &str, addrs: &[IpAddr], stale_jumps: usize) -> String {
    let mut s = format!("*raw\n:{chain} - [0:0]\n");
    for _ in 0..stale_jumps {
        s += &format!("-D PREROUTING -i {host_if} -j {chain}\n");
    }
    for a in addrs {
        s += &format!("-A {chain} -s {a} -j RETURN\n");
    }
    s += &format!("-A {chain} -j DROP\n-I PREROUTING -i {host_if} -j {chain}\nCOMMIT\n");
    s
}

pub(super) fn prefix(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// Give venet address `a`: inside (in `inside`, when given), route, proxy entry, filter rule.
pub(super) fn add_addr(t: &dyn NetTools, cfg: &ContainerConfig, st: &mut NetState, a: IpAddr, inside: Option<&CtNetns>) -> Result<()> {
    add_addrs(t, cfg, st, &[a], inside, false)
}

/// Route `addrs` to the venet pair (host route, proxy ARP/NDP entry on the uplink; inside the
/// netns `inside` too when given), with one `ip -batch` per side; `filtered` says their filter rules are
/// in the chain already ([`venet_host_side`]). What is recorded in `st` before the commands
/// run is removed by [`teardown`](super::teardown) if they fail halfway (removal ignores what is absent).
pub(super) fn add_addrs(
    t: &dyn NetTools,
    cfg: &ContainerConfig,
    st: &mut NetState,
    addrs: &[IpAddr],
    inside: Option<&CtNetns>,
    filtered: bool,
) -> Result<()> {
    let host_if = st.venet.as_ref().map(|v| v.host_if.clone()).ok_or_else(|| Error::Net("no venet device".into()))?;
    let new: Vec<IpAddr> = addrs.iter().copied().filter(|a| !st.venet.as_ref().is_some_and(|v| v.addrs.contains(a))).collect();
    let mut host_cmds = Vec::new();
    let mut inner_cmds = Vec::new();
    let mut routes: [Option<Vec<RouteEntry>>; 2] = [None, None];
    for a in &new {
        let v6 = a.is_ipv6();
        let uplink = match &cfg.net.uplink {
            Some(_) => choose_uplink(t, cfg, a)?,
            None => {
                let table = &mut routes[usize::from(v6)];
                if table.is_none() {
                    *table = Some(host_routes(t, v6)?);
                }
                pick_uplink(a, table.as_deref().unwrap_or_default()).ok_or_else(|| no_uplink(a))?
            }
        };
        if v6 {
            t.sysctl_set(&["net", "ipv6", "conf", "all", "forwarding"], "1")?;
            t.sysctl_set(&["net", "ipv6", "conf", &uplink, "proxy_ndp"], "1")?;
        }
        // The host owns these addresses: answer at once instead of after the random proxy
        // delay (up to 0.8 s) meant to let a real owner answer first.
        t.sysctl_set(&["net", if v6 { "ipv6" } else { "ipv4" }, "neigh", &uplink, "proxy_delay"], "0")?;
        let p = prefix(a);
        if inside.is_some() {
            inner_cmds.push(format!("addr add {p} dev {VENET_INNER}{}", if v6 { " nodad" } else { "" }));
            let default = if v6 { "::/0" } else { "default" };
            let line = format!("route replace {default} dev {VENET_INNER}");
            if !inner_cmds.contains(&line) {
                inner_cmds.push(line);
            }
        }
        host_cmds.push(format!("route replace {p} dev {host_if}"));
        host_cmds.push(format!("neigh replace proxy {a} dev {uplink}"));
        st.routes.push(HostRoute { dst: *a, dev: host_if.clone() });
        st.proxies.push(ProxyEntry { addr: *a, dev: uplink });
    }
    if let Some(ns) = inside {
        t.ip_batch_in(ns, &inner_cmds)?;
    }
    t.ip_batch(&host_cmds)?;
    if !filtered {
        let chain = filter_chain(&host_if);
        for a in &new {
            t.iptables(a.is_ipv6(), &["-t", "raw", "-I", &chain, "1", "-s", &a.to_string(), "-j", "RETURN"])?;
        }
    }
    if let Some(v) = st.venet.as_mut() {
        v.addrs.extend(new);
    }
    Ok(())
}

/// Add a venet address to a running container whose netns is `ns` (creates the venet pair
/// on first use).
pub fn add_ip(_host: &Host, cfg: &ContainerConfig, st: &mut NetState, ns: &CtNetns, addr: IpAddr) -> Result<()> {
    add_ip_with(&HostNetTools, cfg, st, ns, addr)
}

/// [`add_ip`] with the tools `t`.
pub fn add_ip_with(t: &dyn NetTools, cfg: &ContainerConfig, st: &mut NetState, ns: &CtNetns, addr: IpAddr) -> Result<()> {
    let res = (|| {
        if st.venet.is_none() {
            create_venet(t, &cfg.ctid, st, ns, &[])?;
        }
        add_addr(t, cfg, st, addr, Some(ns))
    })();
    res.map_err(|e| net_ct(cfg.ctid.as_str(), "add address", e, "check the address and the host's routes, then retry"))
}

/// Remove a venet address from a running container whose netns is `ns`: inside, route,
/// proxy entry, rule.
pub fn del_ip(_host: &Host, st: &mut NetState, ns: &CtNetns, addr: IpAddr) -> Result<()> {
    del_ip_with(&HostNetTools, st, ns, addr)
}

/// [`del_ip`] with the tools `t`.
pub fn del_ip_with(t: &dyn NetTools, st: &mut NetState, ns: &CtNetns, addr: IpAddr) -> Result<()> {
    let ctid = st.ctid.clone();
    let res = (|| -> Result<()> {
        let Some(v) = st.venet.as_ref() else { return Ok(()) };
        let host_if = v.host_if.clone();
        let v6 = addr.is_ipv6();
        let fam = if v6 { "-6" } else { "-4" };
        let p = prefix(&addr);
        if t.link_exists_in(ns, VENET_INNER) {
            ignore_absent(t.ip_in(ns, &[fam, "addr", "del", &p, "dev", VENET_INNER]))?;
        }
        remove_routes_and_proxies(t, st, Some(addr))?;
        ignore_absent(t.iptables(v6, &["-t", "raw", "-D", &filter_chain(&host_if), "-s", &addr.to_string(), "-j", "RETURN"]))?;
        if let Some(v) = st.venet.as_mut() {
            v.addrs.retain(|a| *a != addr);
        }
        Ok(())
    })();
    res.map_err(|e| net_ct(&ctid, "delete address", e, "retry; `ip route`/`ip neigh show proxy` show what is left"))
}

pub(super) fn remove_routes_and_proxies(t: &dyn NetTools, st: &mut NetState, only: Option<IpAddr>) -> Result<()> {
    let keep = |a: &IpAddr| only.is_some_and(|o| o != *a);
    let mut first_err = None;
    for r in st.routes.iter().filter(|r| !keep(&r.dst)) {
        let fam = if r.dst.is_ipv6() { "-6" } else { "-4" };
        if let Err(e) = ignore_absent(t.ip(&[fam, "route", "del", &prefix(&r.dst), "dev", &r.dev])) {
            first_err.get_or_insert(e);
        }
    }
    for p in st.proxies.iter().filter(|p| !keep(&p.addr)) {
        let fam = if p.addr.is_ipv6() { "-6" } else { "-4" };
        if let Err(e) = ignore_absent(t.ip(&[fam, "neigh", "del", "proxy", &p.addr.to_string(), "dev", &p.dev])) {
            first_err.get_or_insert(e);
        }
    }
    st.routes.retain(|r| keep(&r.dst));
    st.proxies.retain(|p| keep(&p.addr));
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_chain_in_one_transaction() {
        let a: Vec<IpAddr> = vec!["198.18.5.7".parse().unwrap(), "198.18.5.8".parse().unwrap()];
        let s = filter_chain_script("fv101", "FERRY-fv101", &a, 0);
        assert_eq!(
            s,
            "*raw\n:FERRY-fv101 - [0:0]\n-A FERRY-fv101 -s 198.18.5.7 -j RETURN\n-A FERRY-fv101 -s 198.18.5.8 -j RETURN\n\
             -A FERRY-fv101 -j DROP\n-I PREROUTING -i fv101 -j FERRY-fv101\nCOMMIT\n"
        );
        // Leftover jumps are removed before the new one goes in; no addresses: drop all.
        let s = filter_chain_script("fv101", "FERRY-fv101", &[], 2);
        assert_eq!(s.matches("-D PREROUTING -i fv101 -j FERRY-fv101\n").count(), 2);
        assert!(s.find("-D PREROUTING").unwrap() < s.find("-I PREROUTING").unwrap());
        assert!(!s.contains("RETURN"));
        let listed = "-P PREROUTING ACCEPT\n-A PREROUTING -i fv101 -j FERRY-fv101\n-A PREROUTING -i fv1010 -j FERRY-fv1010\n\
                      -A PREROUTING -i fv101 -j FERRY-fv101\n";
        assert_eq!(stale_jumps(listed, "fv101", "FERRY-fv101"), 2);
        assert_eq!(stale_jumps(listed, "fv102", "FERRY-fv102"), 0);
    }
}
