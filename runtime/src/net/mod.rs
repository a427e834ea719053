//! Container networking: venet (routed veth), veth (bridged), device passthrough, announce.
//!
//! Entry points take the container's network namespace as ferry reached it ([`CtNetns`]: from
//! the namespaces it recorded, never through a process of the container on trust) and act on
//! "the host" = the network namespace of the calling thread. Everything created on the host
//! is recorded in [`NetState`] (stored by the runtime in the container's state file) so that
//! [`teardown`] removes exactly that, also after a half-done setup.
//!
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
//!
//! veth: `fe<tag>_<index>` (host) / `VethIf.name` with `VethIf.mac` (container), host end on
//! `VethIf.bridge` when given. The container configures its addresses itself.
//!
//! passthrough: a host device is moved into the container's netns. When a netns dies the
//! kernel returns physical devices to the initial netns, but virtual ones (dummy, veth, ...)
//! are destroyed, and a simulated host is not the initial netns either: so the runtime must
//! call [`detach_netdevs`] with the container's netns before it kills the container (a failed
//! [`setup`] does it itself). Checkpoints and migrations refuse passthrough ([`migratable`]).
//!
//! Lifecycle, as the runtime calls it (always from a thread in the host's netns):
//! - start: [`setup`] → store the [`NetState`] → [`announce_container`].
//! - `set --ipadd/--ipdel` while running: [`add_ip`] / [`del_ip`] → store the state again.
//! - stop: [`detach_netdevs`] while init still lives → kill → [`teardown`].
//! - lost state file: [`cleanup_stale`] from the config.
//! - checkpoint/migration: [`migratable`] / [`before_dump_detach`] before dumping; restore
//!   passes `--external` for each of [`criu_veth_externals`] ([`criu_external_arg`]), then
//!   [`after_restore`] → [`announce_container`]; the source side calls [`teardown`] with the
//!   state it had once the dump is done. A dump that ends the container takes its netns off
//!   the wire first ([`silence`], from [`crate::checkpoint`]), so that it dies silently.

pub mod announce;
pub mod handover;
pub mod hold;
pub mod names;
pub mod probe;
pub mod routes;
pub mod silence;
pub mod tools;

use crate::config::{ContainerConfig, VethIf};
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use names::{filter_chain, format_mac, parse_mac, venet_host_if, venet_mac, veth_host_if, VENET_INNER};
use routes::{choose_uplink, host_routes, no_uplink, pick_uplink, RouteEntry};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;
pub use tools::CtNetns;
use tools::{ignore_absent, ip, ip_batch, ip_batch_in, ip_in, iptables, iptables_restore, link_exists, link_exists_in, sysctl_set};

pub use announce::{announce, announce_in_netns};
pub use hold::{hold_new_connections, hold_traffic, wait_backlogs_empty};
pub use names::generate_veth_mac;
pub use probe::verify_handover;

/// What networking put on the host for one container: exactly what teardown removes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetState {
    pub ctid: String,
    /// Init pid the state was made for (its netns holds the inner ends and moved devices).
    pub pid: i32,
    /// Host ends of veth pairs (venet and bridged); deleting one removes its pair.
    #[serde(default)]
    pub host_links: Vec<String>,
    #[serde(default)]
    pub venet: Option<VenetState>,
    #[serde(default)]
    pub bridged: Vec<BridgedState>,
    /// Host routes to the venet device.
    #[serde(default)]
    pub routes: Vec<HostRoute>,
    /// Proxy ARP / proxy NDP entries on uplinks.
    #[serde(default)]
    pub proxies: Vec<ProxyEntry>,
    /// Anti-spoofing chains (raw table) and their PREROUTING jumps.
    #[serde(default)]
    pub filters: Vec<FilterChain>,
    /// Host devices moved into the container (to move back).
    #[serde(default)]
    pub moved_devs: Vec<MovedDev>,
}

/// A host device passed through: its name on the host and its ifindex (kept across the move
/// when free, so the device is found again even if the container renamed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedDev {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VenetState {
    pub host_if: String,
    /// Addresses currently assigned (each has a route, a proxy entry and a RETURN rule).
    pub addrs: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgedState {
    pub host_if: String,
    pub inner: String,
    #[serde(default)]
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub dst: IpAddr,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyEntry {
    pub addr: IpAddr,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterChain {
    pub v6: bool,
    pub table: String,
    pub chain: String,
    pub in_if: String,
}

fn net_ct(ct: &str, op: &'static str, e: Error, way_out: &str) -> Error {
    Error::ct(ct, op, format!("{e}; {way_out}"))
}

/// Set up all networking of a container whose init is `pid` in the netns `ns`, on the host =
/// the calling thread's netns. On failure everything made so far is removed again before the
/// error is returned. Store the returned state; pass it to [`teardown`] on stop/destroy.
pub fn setup(host: &Host, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<NetState> {
    let mut st = NetState { ctid: cfg.ctid.to_string(), pid, ..Default::default() };
    let res = (|| -> Result<()> {
        if !cfg.net.ipadd.is_empty() {
            create_venet(&cfg.ctid, &mut st, ns, &cfg.net.ipadd)?;
            add_addrs(cfg, &mut st, &cfg.net.ipadd, Some(ns), true)?;
        }
        for (i, vif) in cfg.net.netifs.iter().enumerate() {
            create_bridged(&cfg.ctid, &mut st, ns, i, vif)?;
        }
        for dev in &cfg.net.netdevs {
            let ifindex = link_index(dev)
                .ok_or_else(|| Error::Net(format!("no device {dev} on this host to pass through; check `ip link` or drop --netdev-add {dev}")))?;
            ip(&["link", "set", "dev", dev, "netns", &ns.path()])?;
            st.moved_devs.push(MovedDev { name: dev.clone(), ifindex });
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(st),
        Err(e) => {
            // Devices moved in already go back while the netns lives.
            let _ = detach_netdevs(&mut st, Some(ns));
            let _ = teardown(host, &st);
            Err(net_ct(cfg.ctid.as_str(), "network setup", e, "nothing was left on the host; fix the cause and start again"))
        }
    }
}

fn create_venet(ct: &Ctid, st: &mut NetState, ns: &CtNetns, addrs: &[IpAddr]) -> Result<()> {
    let host_if = venet_host_if(ct);
    let mac = format_mac(&venet_mac(ct));
    if link_exists(&host_if) {
        return Err(Error::Net(format!(
            "host interface {host_if} already exists (another container with this CTID, or a leftover: `ip link del {host_if}`)"
        )));
    }
    ip(&["link", "add", &host_if, "type", "veth", "peer", "name", VENET_INNER, "netns", &ns.path()])?;
    st.host_links.push(host_if.clone());
    st.venet = Some(VenetState { host_if: host_if.clone(), addrs: Vec::new() });
    ip_in(ns, &["link", "set", "dev", VENET_INNER, "address", &mac, "arp", "off", "multicast", "off", "addrgenmode", "none", "up"])?;
    ip_in(ns, &["link", "set", "dev", "lo", "up"])?;
    venet_host_side(st, &host_if, addrs)
}

/// Host side of the venet pair once both ends exist: flags, MAC, forwarding, filter chains.
/// The host end of the venet pair: MAC and flags, and the raw-table chain that drops what
/// the container sends unless its source is one of `addrs` (more are added one by one with
/// [`add_addr`]). One `iptables-restore` per family, not a process per rule: on a restore
/// this runs while the container is frozen.
fn venet_host_side(st: &mut NetState, host_if: &str, addrs: &[IpAddr]) -> Result<()> {
    let ct = Ctid::new(&st.ctid)?;
    let mac = format_mac(&venet_mac(&ct));
    ip(&["link", "set", "dev", host_if, "address", &mac, "arp", "off", "multicast", "off", "addrgenmode", "none", "up"])?;
    sysctl_set(&["net", "ipv4", "ip_forward"], "1")?;
    let chain = filter_chain(host_if);
    for v6 in [false, true] {
        // A jump left by an earlier failure would stay as a duplicate: drop it in the same go.
        let rules = iptables(v6, &["-t", "raw", "-S", "PREROUTING"])?;
        let stale = stale_jumps(&rules, host_if, &chain);
        let fam: Vec<IpAddr> = addrs.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        st.filters.push(FilterChain { v6, table: "raw".into(), chain: chain.clone(), in_if: host_if.to_string() });
        iptables_restore(v6, &filter_chain_script(host_if, &chain, &fam, stale))?;
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

fn prefix(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// Give venet address `a`: inside (in `inside`, when given), route, proxy entry, filter rule.
fn add_addr(cfg: &ContainerConfig, st: &mut NetState, a: IpAddr, inside: Option<&CtNetns>) -> Result<()> {
    add_addrs(cfg, st, &[a], inside, false)
}

/// Route `addrs` to the venet pair (host route, proxy ARP/NDP entry on the uplink; inside the
/// netns `inside` too when given), with one `ip -batch` per side; `filtered` says their filter rules are
/// in the chain already ([`venet_host_side`]). What is recorded in `st` before the commands
/// run is removed by [`teardown`] if they fail halfway (removal ignores what is absent).
fn add_addrs(cfg: &ContainerConfig, st: &mut NetState, addrs: &[IpAddr], inside: Option<&CtNetns>, filtered: bool) -> Result<()> {
    let host_if = st.venet.as_ref().map(|v| v.host_if.clone()).ok_or_else(|| Error::Net("no venet device".into()))?;
    let new: Vec<IpAddr> = addrs.iter().copied().filter(|a| !st.venet.as_ref().is_some_and(|v| v.addrs.contains(a))).collect();
    let mut host_cmds = Vec::new();
    let mut inner_cmds = Vec::new();
    let mut routes: [Option<Vec<RouteEntry>>; 2] = [None, None];
    for a in &new {
        let v6 = a.is_ipv6();
        let uplink = match &cfg.net.uplink {
            Some(_) => choose_uplink(cfg, a)?,
            None => {
                let table = &mut routes[usize::from(v6)];
                if table.is_none() {
                    *table = Some(host_routes(v6)?);
                }
                pick_uplink(a, table.as_deref().unwrap_or_default()).ok_or_else(|| no_uplink(a))?
            }
        };
        if v6 {
            sysctl_set(&["net", "ipv6", "conf", "all", "forwarding"], "1")?;
            sysctl_set(&["net", "ipv6", "conf", &uplink, "proxy_ndp"], "1")?;
        }
        // The host owns these addresses: answer at once instead of after the random proxy
        // delay (up to 0.8 s) meant to let a real owner answer first.
        sysctl_set(&["net", if v6 { "ipv6" } else { "ipv4" }, "neigh", &uplink, "proxy_delay"], "0")?;
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
        ip_batch_in(ns, &inner_cmds)?;
    }
    ip_batch(&host_cmds)?;
    if !filtered {
        let chain = filter_chain(&host_if);
        for a in &new {
            iptables(a.is_ipv6(), &["-t", "raw", "-I", &chain, "1", "-s", &a.to_string(), "-j", "RETURN"])?;
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
    let res = (|| {
        if st.venet.is_none() {
            create_venet(&cfg.ctid, st, ns, &[])?;
        }
        add_addr(cfg, st, addr, Some(ns))
    })();
    res.map_err(|e| net_ct(cfg.ctid.as_str(), "add address", e, "check the address and the host's routes, then retry"))
}

/// Remove a venet address from a running container whose netns is `ns`: inside, route,
/// proxy entry, rule.
pub fn del_ip(_host: &Host, st: &mut NetState, ns: &CtNetns, addr: IpAddr) -> Result<()> {
    let ctid = st.ctid.clone();
    let res = (|| -> Result<()> {
        let Some(v) = st.venet.as_ref() else { return Ok(()) };
        let host_if = v.host_if.clone();
        let v6 = addr.is_ipv6();
        let fam = if v6 { "-6" } else { "-4" };
        let p = prefix(&addr);
        if link_exists_in(ns, VENET_INNER) {
            ignore_absent(ip_in(ns, &[fam, "addr", "del", &p, "dev", VENET_INNER]))?;
        }
        remove_routes_and_proxies(st, Some(addr))?;
        ignore_absent(iptables(v6, &["-t", "raw", "-D", &filter_chain(&host_if), "-s", &addr.to_string(), "-j", "RETURN"]))?;
        if let Some(v) = st.venet.as_mut() {
            v.addrs.retain(|a| *a != addr);
        }
        Ok(())
    })();
    res.map_err(|e| net_ct(&ctid, "delete address", e, "retry; `ip route`/`ip neigh show proxy` show what is left"))
}

fn remove_routes_and_proxies(st: &mut NetState, only: Option<IpAddr>) -> Result<()> {
    let keep = |a: &IpAddr| only.is_some_and(|o| o != *a);
    let mut first_err = None;
    for r in st.routes.iter().filter(|r| !keep(&r.dst)) {
        let fam = if r.dst.is_ipv6() { "-6" } else { "-4" };
        if let Err(e) = ignore_absent(ip(&[fam, "route", "del", &prefix(&r.dst), "dev", &r.dev])) {
            first_err.get_or_insert(e);
        }
    }
    for p in st.proxies.iter().filter(|p| !keep(&p.addr)) {
        let fam = if p.addr.is_ipv6() { "-6" } else { "-4" };
        if let Err(e) = ignore_absent(ip(&[fam, "neigh", "del", "proxy", &p.addr.to_string(), "dev", &p.dev])) {
            first_err.get_or_insert(e);
        }
    }
    st.routes.retain(|r| keep(&r.dst));
    st.proxies.retain(|p| keep(&p.addr));
    first_err.map_or(Ok(()), Err)
}

fn create_bridged(ct: &Ctid, st: &mut NetState, ns: &CtNetns, index: usize, vif: &VethIf) -> Result<()> {
    let host_if = veth_host_if(ct, index);
    let mac = parse_mac(&vif.mac).ok_or_else(|| Error::Net(format!("interface {}: invalid MAC {:?} (want 02:xx:xx:xx:xx:xx)", vif.name, vif.mac)))?;
    if link_exists(&host_if) {
        return Err(Error::Net(format!("host interface {host_if} already exists (leftover? `ip link del {host_if}`)")));
    }
    ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &vif.name, "netns", &ns.path()])?;
    st.host_links.push(host_if.clone());
    st.bridged.push(BridgedState { host_if: host_if.clone(), inner: vif.name.clone(), bridge: vif.bridge.clone() });
    ip_in(ns, &["link", "set", "dev", &vif.name, "address", &format_mac(&mac), "up"])?;
    ip_in(ns, &["link", "set", "dev", "lo", "up"])?;
    bridged_host_side(&host_if, vif)
}

fn bridged_host_side(host_if: &str, vif: &VethIf) -> Result<()> {
    if let Some(br) = &vif.bridge {
        ip(&["link", "set", "dev", host_if, "master", br]).map_err(|e| {
            Error::Net(format!("cannot attach {host_if} to bridge {br}: {e} (does the bridge exist? `ip link add {br} type bridge`)"))
        })?;
    }
    ip(&["link", "set", "dev", host_if, "up"])?;
    Ok(())
}

/// Move passed-through devices back from the container's netns `ns` to the host. Call
/// before the container's netns dies (virtual devices would be destroyed with it); without
/// `ns` (the container's processes are gone, or none is left in its netns), the kernel has
/// returned them (physical) or destroyed them (virtual) and they are only forgotten.
pub fn detach_netdevs(st: &mut NetState, ns: Option<&CtNetns>) -> Result<()> {
    let host_ns = tools::own_netns_path();
    let mut first_err = None;
    let mut left = Vec::new();
    for dev in std::mem::take(&mut st.moved_devs) {
        // Its name inside now (the container may have renamed it).
        let Some(ns) = ns else { continue };
        let inside = link_name_by_index(ns, dev.ifindex);
        let Some(cur) = inside else {
            // Not inside (any more): back already, returned by the kernel to the initial netns
            // (physical) or destroyed with the netns (virtual).
            continue;
        };
        let res = ip_in(ns, &["link", "set", "dev", &cur, "netns", &host_ns]).and_then(|_| {
            if cur != dev.name && !link_exists(&dev.name) {
                ip(&["link", "set", "dev", &cur, "down"])?;
                ip(&["link", "set", "dev", &cur, "name", &dev.name])?;
            }
            Ok(String::new())
        });
        if let Err(e) = res {
            first_err.get_or_insert(e);
            left.push(dev);
        }
    }
    st.moved_devs = left;
    first_err.map_or(Ok(()), |e| Err(net_ct(&st.ctid.clone(), "move devices back", e, "retry before stopping the container")))
}

/// Ifindex of a link on the host.
fn link_index(name: &str) -> Option<u32> {
    let out = ip(&["-j", "link", "show", "dev", name]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v[0]["ifindex"].as_u64().map(|i| i as u32)
}

fn link_name_by_index(ns: &CtNetns, ifindex: u32) -> Option<String> {
    let out = ip_in(ns, &["-j", "link", "show"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.as_array()?.iter().find(|l| l["ifindex"].as_u64() == Some(u64::from(ifindex))).and_then(|l| l["ifname"].as_str().map(str::to_string))
}

/// Remove everything `st` records from the host. Idempotent; works on a half-done setup.
/// Passed-through devices must have been moved back already ([`detach_netdevs`]).
pub fn teardown(_host: &Host, st: &NetState) -> Result<()> {
    let mut st = st.clone();
    let mut errs: Vec<String> = Vec::new();
    for f in &st.filters {
        let r = ignore_absent(iptables(f.v6, &["-t", &f.table, "-D", "PREROUTING", "-i", &f.in_if, "-j", &f.chain]))
            .and_then(|_| ignore_absent(iptables(f.v6, &["-t", &f.table, "-F", &f.chain])))
            .and_then(|_| ignore_absent(iptables(f.v6, &["-t", &f.table, "-X", &f.chain])));
        if let Err(e) = r {
            errs.push(e.to_string());
        }
    }
    if let Err(e) = remove_routes_and_proxies(&mut st, None) {
        errs.push(e.to_string());
    }
    for l in &st.host_links {
        if let Err(e) = ignore_absent(ip(&["link", "del", "dev", l])) {
            errs.push(e.to_string());
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::ct(&st.ctid, "network teardown", format!("{}; run stop/destroy again to retry", errs.join("; "))))
    }
}

/// Best-effort removal of what networking would have made for `cfg` when the state file is
/// lost (crash, reboot of the run dir): host ends named from the CTID, their filter chains,
/// and proxy entries for the configured venet addresses on any interface. Routes to a
/// deleted device go with it. Passed-through devices cannot be found this way.
pub fn cleanup_stale(_host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let mut st = NetState { ctid: cfg.ctid.to_string(), ..Default::default() };
    let venet = venet_host_if(&cfg.ctid);
    for v6 in [false, true] {
        st.filters.push(FilterChain { v6, table: "raw".into(), chain: filter_chain(&venet), in_if: venet.clone() });
    }
    st.host_links.push(venet);
    for i in 0..cfg.net.netifs.len() {
        st.host_links.push(veth_host_if(&cfg.ctid, i));
    }
    for v6 in [false, true] {
        let out = ip(&[if v6 { "-6" } else { "-4" }, "-j", "neigh", "show", "proxy"])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        for e in v.as_array().into_iter().flatten() {
            let (Some(dst), Some(dev)) = (e["dst"].as_str(), e["dev"].as_str()) else { continue };
            if let Ok(addr) = dst.parse::<IpAddr>() {
                if cfg.net.ipadd.contains(&addr) {
                    st.proxies.push(ProxyEntry { addr, dev: dev.to_string() });
                }
            }
        }
    }
    teardown(_host, &st)
}

/// Refuse checkpoint/migration of a container with passed-through host devices.
pub fn migratable(cfg: &ContainerConfig) -> std::result::Result<(), String> {
    if cfg.net.netdevs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "container {} uses host devices passed through ({}): a checkpoint cannot carry a host device to another host or restore; remove them with `ferry set {} --netdev-del DEV` first",
        cfg.ctid,
        cfg.net.netdevs.join(", "),
        cfg.ctid
    ))
}

/// The `(inner, host)` veth names CRIU must recreate at restore: pass each as
/// `--external veth[INNER]:HOST` (see [`criu_external_arg`]); the host end appears in the
/// netns that runs `criu restore`.
pub fn criu_veth_externals(cfg: &ContainerConfig) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if !cfg.net.ipadd.is_empty() {
        v.push((VENET_INNER.to_string(), venet_host_if(&cfg.ctid)));
    }
    for (i, vif) in cfg.net.netifs.iter().enumerate() {
        v.push((vif.name.clone(), veth_host_if(&cfg.ctid, i)));
    }
    v
}

/// `veth[INNER]:HOST`, the value of CRIU's `--external` for one pair.
pub fn criu_external_arg(inner: &str, host_if: &str) -> String {
    format!("veth[{inner}]:{host_if}")
}

/// The pairs of a restore into a user namespace, made on the host before CRIU runs: the host
/// end under its name, the other end under a temporary one that CRIU moves into the restored
/// netns and renames (`netdev[INNER]:TEMP`, returned for `--external`). CRIU 4.2.1 creates a
/// veth pair for a user-namespaced tree through its helper in the host's user namespace, with
/// the dumped ifindex of the inner end taken as a device of the host's netns: where the host
/// has a device with that index (eth0 is usually 2, as venet0 is), the kernel answers
/// EOPNOTSUPP. Moving a device made beforehand has no such lookup. On failure, what was made is
/// removed.
pub fn precreate_restore_pairs(pairs: &[(String, String)]) -> Result<Vec<String>> {
    let mut made: Vec<&str> = Vec::new();
    let mut args = Vec::new();
    for (inner, outer) in pairs {
        let temp = names::restore_temp_if(outer);
        if let Err(e) = ip(&["link", "add", outer, "type", "veth", "peer", "name", &temp]) {
            remove_precreated(&made);
            return Err(e);
        }
        made.push(outer);
        args.push(format!("netdev[{inner}]:{temp}"));
    }
    Ok(args)
}

/// Remove pairs [`precreate_restore_pairs`] made (by their host ends; a pair whose other end
/// went into a netns that died is gone already).
pub fn remove_precreated<S: AsRef<str>>(host_ifs: &[S]) {
    for h in host_ifs {
        let _ = ignore_absent(ip(&["link", "del", "dev", h.as_ref()]));
    }
}

/// Before dumping for a checkpoint or migration: refuses passthrough. The venet/veth plumbing
/// stays until the dump is done (traffic keeps flowing); the source side then calls
/// [`teardown`] with the state it had.
pub fn before_dump_detach(_host: &Host, cfg: &ContainerConfig, st: &NetState) -> Result<()> {
    migratable(cfg).map_err(|m| Error::ct(cfg.ctid.as_str(), "checkpoint", m))?;
    if !st.moved_devs.is_empty() {
        return Err(Error::ct(
            cfg.ctid.as_str(),
            "checkpoint",
            format!(
                "devices {} are still inside; stop the container or move them back first",
                st.moved_devs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

/// After `criu restore` recreated the veth pairs (host ends named by
/// [`criu_veth_externals`], in this netns; inner ends configured by CRIU): do the host side —
/// MAC/flags, up, routes, proxy ARP/NDP, bridge ports, filter rules. `pid` is the restored
/// init, `ns` its netns.
pub fn after_restore(host: &Host, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<NetState> {
    let mut st = NetState { ctid: cfg.ctid.to_string(), pid, ..Default::default() };
    let res = (|| -> Result<()> {
        migratable(cfg).map_err(Error::Net)?;
        if !cfg.net.ipadd.is_empty() {
            let host_if = venet_host_if(&cfg.ctid);
            if !link_exists(&host_if) {
                return Err(Error::Net(format!(
                    "{host_if} is missing: was `--external {}` given to criu restore?",
                    criu_external_arg(VENET_INNER, &host_if)
                )));
            }
            st.host_links.push(host_if.clone());
            st.venet = Some(VenetState { host_if: host_if.clone(), addrs: Vec::new() });
            // CRIU restores the inner end's flags and MAC; set them again in case a dump made
            // by another version lost one (the pair only works with both ends NOARP, same MAC).
            let mac = format_mac(&venet_mac(&cfg.ctid));
            ip_in(ns, &["link", "set", "dev", VENET_INNER, "address", &mac, "arp", "off", "multicast", "off", "up"])?;
            venet_host_side(&mut st, &host_if, &cfg.net.ipadd)?;
            add_addrs(cfg, &mut st, &cfg.net.ipadd, None, true)?;
        }
        for (i, vif) in cfg.net.netifs.iter().enumerate() {
            let host_if = veth_host_if(&cfg.ctid, i);
            if !link_exists(&host_if) {
                return Err(Error::Net(format!(
                    "{host_if} is missing: was `--external {}` given to criu restore?",
                    criu_external_arg(&vif.name, &host_if)
                )));
            }
            st.host_links.push(host_if.clone());
            st.bridged.push(BridgedState { host_if: host_if.clone(), inner: vif.name.clone(), bridge: vif.bridge.clone() });
            bridged_host_side(&host_if, vif)?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(st),
        Err(e) => {
            let _ = teardown(host, &st);
            Err(net_ct(cfg.ctid.as_str(), "network after restore", e, "the host side was removed again"))
        }
    }
}

/// What a restored container's netns must change to match `cfg`, given the addresses and MACs
/// its dump had (`dumped`: interface, addresses as `IP/PREFIX`, MAC): venet addresses the config
/// dropped or added, bridged interfaces whose MAC the config changed (a clone gets its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readdress {
    pub venet_del: Vec<IpAddr>,
    pub venet_add: Vec<IpAddr>,
    /// The dump had a venet pair and the config has no address left: the pair goes.
    pub venet_drop: bool,
    /// (inner interface, new MAC).
    pub macs: Vec<(String, String)>,
}

impl Readdress {
    pub fn plan(cfg: &ContainerConfig, dumped: &[(String, Vec<String>, String)]) -> Readdress {
        let mut r = Readdress::default();
        let venet: Option<Vec<IpAddr>> = dumped
            .iter()
            .find(|(i, _, _)| i == VENET_INNER)
            .map(|(_, ips, _)| ips.iter().filter_map(|a| a.split('/').next()?.parse().ok()).collect());
        if let Some(had) = &venet {
            if cfg.net.ipadd.is_empty() {
                r.venet_drop = true;
            } else {
                r.venet_del = had.iter().copied().filter(|a| !cfg.net.ipadd.contains(a)).collect();
                r.venet_add = cfg.net.ipadd.iter().copied().filter(|a| !had.contains(a)).collect();
            }
        }
        for vif in &cfg.net.netifs {
            if let Some((_, _, mac)) = dumped.iter().find(|(i, _, _)| *i == vif.name) {
                if !mac.eq_ignore_ascii_case(&vif.mac) {
                    r.macs.push((vif.name.clone(), vif.mac.clone()));
                }
            }
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        *self == Readdress::default()
    }
}

/// Apply `r` to the restored container's netns `ns` (still frozen by CRIU): addresses inside
/// its venet end, its default route, MACs of bridged ends; the venet pair removed when dropped.
pub fn readdress(st: &NetState, ns: &CtNetns, r: &Readdress) -> Result<()> {
    if r.venet_drop {
        let host_if = venet_host_if(&Ctid::new(&st.ctid)?);
        return ignore_absent(ip(&["link", "del", &host_if]));
    }
    let mut cmds = Vec::new();
    for a in &r.venet_del {
        cmds.push(format!("addr del {} dev {VENET_INNER}", prefix(a)));
    }
    for a in &r.venet_add {
        cmds.push(format!("addr add {} dev {VENET_INNER}{}", prefix(a), if a.is_ipv6() { " nodad" } else { "" }));
    }
    for v6 in [false, true] {
        if r.venet_add.iter().any(|a| a.is_ipv6() == v6) {
            cmds.push(format!("{}route replace {} dev {VENET_INNER}", if v6 { "-6 " } else { "" }, if v6 { "::/0" } else { "default" }));
        }
    }
    for (name, mac) in &r.macs {
        cmds.push(format!("link set dev {name} address {mac}"));
    }
    if cmds.is_empty() {
        return Ok(());
    }
    ip_batch_in(ns, &cmds)
}

/// Announce every address of a running container: venet addresses from their uplinks with
/// the host's MAC, bridged interfaces' addresses from inside the container's netns `ns` with
/// its MAC (left out without `ns`).
pub fn announce_container(st: &NetState, ns: Option<&CtNetns>, count: u32, spacing: Duration) -> Result<()> {
    let mut by_uplink: Vec<(String, Vec<IpAddr>)> = Vec::new();
    for p in &st.proxies {
        match by_uplink.iter_mut().find(|(d, _)| *d == p.dev) {
            Some((_, v)) => v.push(p.addr),
            None => by_uplink.push((p.dev.clone(), vec![p.addr])),
        }
    }
    for (dev, addrs) in &by_uplink {
        announce(dev, addrs, None, count, spacing)?;
    }
    for (b, ns) in st.bridged.iter().filter_map(|b| Some((b, ns?))) {
        let addrs = container_addrs(ns, &b.inner)?;
        announce_in_netns(ns, &b.inner, &addrs, None, count, spacing)?;
    }
    Ok(())
}

/// Global addresses on `ifname` inside the container.
pub(crate) fn container_addrs(ns: &CtNetns, ifname: &str) -> Result<Vec<IpAddr>> {
    let out = ip_in(ns, &["-j", "addr", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Net(format!("ip -j addr: {e}")))?;
    let mut addrs = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for ai in link["addr_info"].as_array().into_iter().flatten() {
            if ai["scope"] == "global" {
                if let Some(a) = ai["local"].as_str().and_then(|s| s.parse().ok()) {
                    addrs.push(a);
                }
            }
        }
    }
    Ok(addrs)
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

    #[test]
    fn externals_and_migratable() {
        let mut cfg = ContainerConfig::new(Ctid::new("101").unwrap());
        assert!(criu_veth_externals(&cfg).is_empty());
        cfg.net.ipadd.push("198.18.1.1".parse().unwrap());
        cfg.net.netifs.push(VethIf { name: "eth0".into(), bridge: None, mac: "02:00:00:00:00:01".into() });
        assert_eq!(criu_veth_externals(&cfg), vec![("venet0".to_string(), "fv101".to_string()), ("eth0".to_string(), "fe101_0".to_string())]);
        assert_eq!(criu_external_arg("venet0", "fv101"), "veth[venet0]:fv101");
        assert!(migratable(&cfg).is_ok());
        cfg.net.netdevs.push("dummy7".into());
        let m = migratable(&cfg).unwrap_err();
        assert!(m.contains("dummy7") && m.contains("101") && m.contains("--netdev-del"), "{m}");
    }

    #[test]
    fn state_round_trips() {
        let st = NetState {
            ctid: "101".into(),
            pid: 42,
            host_links: vec!["fv101".into()],
            venet: Some(VenetState { host_if: "fv101".into(), addrs: vec!["198.18.1.1".parse().unwrap()] }),
            routes: vec![HostRoute { dst: "198.18.1.1".parse().unwrap(), dev: "fv101".into() }],
            proxies: vec![ProxyEntry { addr: "198.18.1.1".parse().unwrap(), dev: "eth0".into() }],
            filters: vec![FilterChain { v6: false, table: "raw".into(), chain: "FERRY-fv101".into(), in_if: "fv101".into() }],
            ..Default::default()
        };
        let j = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<NetState>(&j).unwrap(), st);
    }
}
