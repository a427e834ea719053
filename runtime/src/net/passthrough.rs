//! passthrough: a host device is moved into the container's netns. When a netns dies the
//! kernel returns physical devices to the initial netns, but virtual ones (dummy, veth, ...)
//! are destroyed, and a simulated host is not the initial netns either: so the runtime must
//! call [`detach_netdevs`] with the container's netns before it kills the container (a failed
//! [`setup`](super::setup) does it itself). Checkpoints and migrations refuse passthrough ([`migratable`]).

use super::tools::{HostNetTools, NetTools};
use super::{net_ct, CtNetns, NetState};
use crate::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::host::Host;

/// Move passed-through devices back from the container's netns `ns` to the host. Call
/// before the container's netns dies (virtual devices would be destroyed with it); without
/// `ns` (the container's processes are gone, or none is left in its netns), the kernel has
/// returned them (physical) or destroyed them (virtual) and they are only forgotten.
pub fn detach_netdevs(st: &mut NetState, ns: Option<&CtNetns>) -> Result<()> {
    detach_netdevs_with(&HostNetTools, st, ns)
}

/// [`detach_netdevs`] with the tools `t`.
pub fn detach_netdevs_with(t: &dyn NetTools, st: &mut NetState, ns: Option<&CtNetns>) -> Result<()> {
    let host_ns = t.own_netns_path();
    let mut first_err = None;
    let mut left = Vec::new();
    for dev in std::mem::take(&mut st.moved_devs) {
        // Its name inside now (the container may have renamed it).
        let Some(ns) = ns else { continue };
        let inside = link_name_by_index(t, ns, dev.ifindex);
        let Some(cur) = inside else {
            // Not inside (any more): back already, returned by the kernel to the initial netns
            // (physical) or destroyed with the netns (virtual).
            continue;
        };
        let res = t.ip_in(ns, &["link", "set", "dev", &cur, "netns", &host_ns]).and_then(|_| {
            if cur != dev.name && !t.link_exists(&dev.name) {
                t.ip(&["link", "set", "dev", &cur, "down"])?;
                t.ip(&["link", "set", "dev", &cur, "name", &dev.name])?;
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
pub(super) fn link_index(t: &dyn NetTools, name: &str) -> Option<u32> {
    let out = t.ip(&["-j", "link", "show", "dev", name]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v[0]["ifindex"].as_u64().map(|i| i as u32)
}

pub(super) fn link_name_by_index(t: &dyn NetTools, ns: &CtNetns, ifindex: u32) -> Option<String> {
    let out = t.ip_in(ns, &["-j", "link", "show"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.as_array()?.iter().find(|l| l["ifindex"].as_u64() == Some(u64::from(ifindex))).and_then(|l| l["ifname"].as_str().map(str::to_string))
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

/// Before dumping for a checkpoint or migration: refuses passthrough. The venet/veth plumbing
/// stays until the dump is done (traffic keeps flowing); the source side then calls
/// [`teardown`](super::teardown) with the state it had.
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
