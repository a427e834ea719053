//! The host's routes and the uplink a venet address is proxied on.

use super::tools::NetTools;
use crate::config::ContainerConfig;
use crate::error::{Error, Result};
use std::net::IpAddr;

/// A route of the host's main table: destination ("default" or a prefix) and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: String,
    pub dev: String,
}

pub(super) fn host_routes(t: &dyn NetTools, v6: bool) -> Result<Vec<RouteEntry>> {
    let out = t.ip(&[if v6 { "-6" } else { "-4" }, "-j", "route", "show", "table", "main"])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Net(format!("ip -j route: {e}")))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some(RouteEntry { dst: r["dst"].as_str()?.to_string(), dev: r["dev"].as_str()?.to_string() }))
        .collect())
}

fn in_prefix(a: &IpAddr, dst: &str) -> Option<u8> {
    let (net, len) = dst.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    let net: IpAddr = net.parse().ok()?;
    let ok = match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(*a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(*a) & mask == u128::from(n) & mask
        }
        _ => false,
    };
    ok.then_some(len)
}

/// The uplink for `addr`: the device of the longest on-link route covering it (host routes
/// and ferry's own devices excluded), else the default route's device.
pub fn pick_uplink(addr: &IpAddr, routes: &[RouteEntry]) -> Option<String> {
    let full = if addr.is_ipv6() { 128 } else { 32 };
    let ours = |d: &str| d.starts_with("fv") || d.starts_with("fe") || d == "lo";
    routes
        .iter()
        .filter(|r| !ours(&r.dev))
        .filter_map(|r| in_prefix(addr, &r.dst).filter(|l| *l < full).map(|l| (l, &r.dev)))
        .max_by_key(|(l, _)| *l)
        .map(|(_, d)| d.clone())
        .or_else(|| routes.iter().find(|r| r.dst == "default" && !ours(&r.dev)).map(|r| r.dev.clone()))
}

pub(super) fn choose_uplink(t: &dyn NetTools, cfg: &ContainerConfig, a: &IpAddr) -> Result<String> {
    if let Some(u) = &cfg.net.uplink {
        if !t.link_exists(u) {
            return Err(Error::Net(format!("uplink {u} does not exist on this host; fix --uplink")));
        }
        return Ok(u.clone());
    }
    pick_uplink(a, &host_routes(t, a.is_ipv6())?).ok_or_else(|| no_uplink(a))
}

pub(super) fn no_uplink(a: &IpAddr) -> Error {
    Error::Net(format!("no uplink for {a}: the host has no route to its subnet and no default route; give one with --uplink DEV"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dst: &str, dev: &str) -> RouteEntry {
        RouteEntry { dst: dst.into(), dev: dev.into() }
    }

    #[test]
    fn uplink_choice() {
        let routes =
            vec![r("default", "eth0"), r("198.18.0.0/16", "eth1"), r("198.18.5.0/24", "eth2"), r("198.18.5.7/32", "fv101"), r("10.0.0.0/8", "fe1_0")];
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(pick_uplink(&a("198.18.5.9"), &routes).as_deref(), Some("eth2"));
        assert_eq!(pick_uplink(&a("198.18.6.9"), &routes).as_deref(), Some("eth1"));
        assert_eq!(pick_uplink(&a("198.18.5.7"), &routes).as_deref(), Some("eth2"));
        assert_eq!(pick_uplink(&a("10.1.1.1"), &routes).as_deref(), Some("eth0"));
        assert_eq!(pick_uplink(&a("10.1.1.1"), &routes[1..]), None);
        let r6 = vec![r("2001:db8::/64", "eth3"), r("fe80::/64", "eth0")];
        assert_eq!(pick_uplink(&a("2001:db8::100"), &r6).as_deref(), Some("eth3"));
        assert_eq!(pick_uplink(&a("2001:db9::1"), &r6), None);
    }
}
