//! The network side of a restore: the veth pairs CRIU recreates, the host side set up again
//! afterwards, and the addresses a restored copy changes.

use super::names::{self, format_mac, venet_host_if, venet_mac, veth_host_if, VENET_INNER};
use super::passthrough::migratable;
use super::tools::{ignore_absent, HostNetTools, NetTools};
use super::venet::{add_addrs, prefix, venet_host_side};
use super::veth::bridged_host_side;
use super::{net_ct, teardown_with, BridgedState, CtNetns, NetState, VenetState};
use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use std::net::IpAddr;

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
    precreate_restore_pairs_with(&HostNetTools, pairs)
}

/// [`precreate_restore_pairs`] with the tools `t`.
pub fn precreate_restore_pairs_with(t: &dyn NetTools, pairs: &[(String, String)]) -> Result<Vec<String>> {
    let mut made: Vec<&str> = Vec::new();
    let mut args = Vec::new();
    for (inner, outer) in pairs {
        let temp = names::restore_temp_if(outer);
        if let Err(e) = t.ip(&["link", "add", outer, "type", "veth", "peer", "name", &temp]) {
            remove_precreated_with(t, &made);
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
    remove_precreated_with(&HostNetTools, host_ifs)
}

/// [`remove_precreated`] with the tools `t`.
pub fn remove_precreated_with<S: AsRef<str>>(t: &dyn NetTools, host_ifs: &[S]) {
    for h in host_ifs {
        let _ = ignore_absent(t.ip(&["link", "del", "dev", h.as_ref()]));
    }
}

/// After `criu restore` recreated the veth pairs (host ends named by
/// [`criu_veth_externals`], in this netns; inner ends configured by CRIU): do the host side —
/// MAC/flags, up, routes, proxy ARP/NDP, bridge ports, filter rules. `pid` is the restored
/// init, `ns` its netns.
pub fn after_restore(_host: &Host, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<NetState> {
    after_restore_with(&HostNetTools, cfg, pid, ns)
}

/// [`after_restore`] with the tools `t`.
pub fn after_restore_with(t: &dyn NetTools, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<NetState> {
    let mut st = NetState { ctid: cfg.ctid.to_string(), pid, ..Default::default() };
    let res = (|| -> Result<()> {
        migratable(cfg).map_err(Error::Net)?;
        if !cfg.net.ipadd.is_empty() {
            let host_if = venet_host_if(&cfg.ctid);
            if !t.link_exists(&host_if) {
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
            t.ip_in(ns, &["link", "set", "dev", VENET_INNER, "address", &mac, "arp", "off", "multicast", "off", "up"])?;
            venet_host_side(t, &mut st, &host_if, &cfg.net.ipadd)?;
            add_addrs(t, cfg, &mut st, &cfg.net.ipadd, None, true)?;
        }
        for (i, vif) in cfg.net.netifs.iter().enumerate() {
            let host_if = veth_host_if(&cfg.ctid, i);
            if !t.link_exists(&host_if) {
                return Err(Error::Net(format!(
                    "{host_if} is missing: was `--external {}` given to criu restore?",
                    criu_external_arg(&vif.name, &host_if)
                )));
            }
            st.host_links.push(host_if.clone());
            st.bridged.push(BridgedState { host_if: host_if.clone(), inner: vif.name.clone(), bridge: vif.bridge.clone() });
            bridged_host_side(t, &host_if, vif)?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(st),
        Err(e) => {
            let _ = teardown_with(t, &st);
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
    readdress_with(&HostNetTools, st, ns, r)
}

/// [`readdress`] with the tools `t`.
pub fn readdress_with(t: &dyn NetTools, st: &NetState, ns: &CtNetns, r: &Readdress) -> Result<()> {
    if r.venet_drop {
        let host_if = venet_host_if(&Ctid::new(&st.ctid)?);
        return ignore_absent(t.ip(&["link", "del", &host_if]));
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
    t.ip_batch_in(ns, &cmds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VethIf;

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
}
