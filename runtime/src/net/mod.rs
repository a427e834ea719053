//! Container networking: venet (routed veth), veth (bridged), device passthrough, announce.
//!
//! Entry points take the container's network namespace as ferry reached it ([`CtNetns`]: from
//! the namespaces it recorded, never through a process of the container on trust) and act on
//! "the host" = the network namespace of the calling thread. Everything created on the host
//! is recorded in [`NetState`] (stored by the runtime in the container's state file) so that
//! [`teardown`] removes exactly that, also after a half-done setup.
//!
//! The host tools (`ip`, `iptables`, `nsenter`, sysctls) are reached through [`NetTools`]: each
//! entry point that makes or removes something has a `_with` twin that takes them, and the
//! plain one runs the real ones ([`HostNetTools`]). The unit tests pass a recording fake.
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
//!   the wire first ([`silence`], from [`crate::criu`]), so that it dies silently.

pub mod announce;
#[cfg(test)]
pub mod fake_tools;
pub mod handover;
pub mod hold;
pub mod names;
pub mod passthrough;
pub mod probe;
pub mod restore;
#[cfg(test)]
mod rollback_tests;
pub mod routes;
pub mod silence;
pub mod tools;
pub mod venet;
pub mod veth;

use crate::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::host::Host;
use names::{filter_chain, venet_host_if, veth_host_if};
use passthrough::link_index;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;
use tools::{ignore_absent, ip_in};
pub use tools::{CtNetns, HostNetTools, NetTools};
use venet::{add_addrs, create_venet, remove_routes_and_proxies};
use veth::create_bridged;

pub use announce::{announce, announce_in_netns};
pub use hold::{hold_new_connections, hold_new_connections_with, hold_traffic, hold_traffic_with, wait_backlogs_empty};
pub use names::generate_veth_mac;
pub use passthrough::{before_dump_detach, detach_netdevs, detach_netdevs_with, migratable};
pub use probe::verify_handover;
pub use restore::{
    after_restore, after_restore_with, criu_external_arg, criu_veth_externals, precreate_restore_pairs, precreate_restore_pairs_with, readdress,
    readdress_with, remove_precreated, remove_precreated_with, Readdress,
};
pub use venet::{add_ip, add_ip_with, del_ip, del_ip_with};

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

pub(super) fn net_ct(ct: &str, op: &'static str, e: Error, way_out: &str) -> Error {
    Error::ct(ct, op, format!("{e}; {way_out}"))
}

/// Set up all networking of a container whose init is `pid` in the netns `ns`, on the host =
/// the calling thread's netns. On failure everything made so far is removed again before the
/// error is returned. Store the returned state; pass it to [`teardown`] on stop/destroy.
pub fn setup(_host: &Host, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<NetState> {
    setup_with(&HostNetTools, cfg, pid, ns)
}

/// [`setup`] with the tools `t`.
pub fn setup_with(t: &dyn NetTools, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<NetState> {
    let mut st = NetState { ctid: cfg.ctid.to_string(), pid, ..Default::default() };
    let res = (|| -> Result<()> {
        if !cfg.net.ipadd.is_empty() {
            create_venet(t, &cfg.ctid, &mut st, ns, &cfg.net.ipadd)?;
            add_addrs(t, cfg, &mut st, &cfg.net.ipadd, Some(ns), true)?;
        }
        for (i, vif) in cfg.net.netifs.iter().enumerate() {
            create_bridged(t, &cfg.ctid, &mut st, ns, i, vif)?;
        }
        for dev in &cfg.net.netdevs {
            let ifindex = link_index(t, dev)
                .ok_or_else(|| Error::Net(format!("no device {dev} on this host to pass through; check `ip link` or drop --netdev-add {dev}")))?;
            t.ip(&["link", "set", "dev", dev, "netns", &ns.path()])?;
            st.moved_devs.push(MovedDev { name: dev.clone(), ifindex });
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(st),
        Err(e) => {
            // Devices moved in already go back while the netns lives.
            let _ = detach_netdevs_with(t, &mut st, Some(ns));
            let _ = teardown_with(t, &st);
            Err(net_ct(cfg.ctid.as_str(), "network setup", e, "nothing was left on the host; fix the cause and start again"))
        }
    }
}

/// Remove everything `st` records from the host. Idempotent; works on a half-done setup.
/// Passed-through devices must have been moved back already ([`detach_netdevs`]).
pub fn teardown(_host: &Host, st: &NetState) -> Result<()> {
    teardown_with(&HostNetTools, st)
}

/// [`teardown`] with the tools `t`.
pub fn teardown_with(t: &dyn NetTools, st: &NetState) -> Result<()> {
    let mut st = st.clone();
    let mut errs: Vec<String> = Vec::new();
    for f in &st.filters {
        let r = ignore_absent(t.iptables(f.v6, &["-t", &f.table, "-D", "PREROUTING", "-i", &f.in_if, "-j", &f.chain]))
            .and_then(|_| ignore_absent(t.iptables(f.v6, &["-t", &f.table, "-F", &f.chain])))
            .and_then(|_| ignore_absent(t.iptables(f.v6, &["-t", &f.table, "-X", &f.chain])));
        if let Err(e) = r {
            errs.push(e.to_string());
        }
    }
    if let Err(e) = remove_routes_and_proxies(t, &mut st, None) {
        errs.push(e.to_string());
    }
    for l in &st.host_links {
        if let Err(e) = ignore_absent(t.ip(&["link", "del", "dev", l])) {
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
    cleanup_stale_with(&HostNetTools, cfg)
}

/// [`cleanup_stale`] with the tools `t`.
pub fn cleanup_stale_with(t: &dyn NetTools, cfg: &ContainerConfig) -> Result<()> {
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
        let out = t.ip(&[if v6 { "-6" } else { "-4" }, "-j", "neigh", "show", "proxy"])?;
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
    teardown_with(t, &st)
}

/// Announce every address of a running container: venet addresses from their uplinks with
/// the host's MAC, bridged interfaces' addresses from inside the container's netns `ns` with
/// its MAC (left out without `ns`).
pub fn announce_container(st: &NetState, ns: Option<&CtNetns>, count: u32, spacing: Duration) -> Result<()> {
    for (dev, addrs) in &venet_by_uplink(st) {
        announce(dev, addrs, None, count, spacing)?;
    }
    for (b, ns) in st.bridged.iter().filter_map(|b| Some((b, ns?))) {
        let addrs = container_addrs(ns, &b.inner)?;
        announce_in_netns(ns, &b.inner, &addrs, None, count, spacing)?;
    }
    Ok(())
}

/// A container's venet addresses grouped by the host uplink they are announced from.
pub(crate) fn venet_by_uplink(st: &NetState) -> Vec<(String, Vec<IpAddr>)> {
    let mut by_uplink: Vec<(String, Vec<IpAddr>)> = Vec::new();
    for p in &st.proxies {
        match by_uplink.iter_mut().find(|(d, _)| *d == p.dev) {
            Some((_, v)) => v.push(p.addr),
            None => by_uplink.push((p.dev.clone(), vec![p.addr])),
        }
    }
    by_uplink
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
