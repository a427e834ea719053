//! veth: `fe<tag>_<index>` (host) / `VethIf.name` with `VethIf.mac` (container), host end on
//! `VethIf.bridge` when given. The container configures its addresses itself.

use super::names::{format_mac, parse_mac, veth_host_if};
use super::tools::NetTools;
use super::{BridgedState, CtNetns, NetState};
use crate::config::VethIf;
use crate::ctid::Ctid;
use crate::error::{Error, Result};

pub(super) fn create_bridged(t: &dyn NetTools, ct: &Ctid, st: &mut NetState, ns: &CtNetns, index: usize, vif: &VethIf) -> Result<()> {
    let host_if = veth_host_if(ct, index);
    let mac = parse_mac(&vif.mac).ok_or_else(|| Error::Net(format!("interface {}: invalid MAC {:?} (want 02:xx:xx:xx:xx:xx)", vif.name, vif.mac)))?;
    if t.link_exists(&host_if) {
        return Err(Error::Net(format!("host interface {host_if} already exists (leftover? `ip link del {host_if}`)")));
    }
    t.ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &vif.name, "netns", &ns.path()])?;
    st.host_links.push(host_if.clone());
    st.bridged.push(BridgedState { host_if: host_if.clone(), inner: vif.name.clone(), bridge: vif.bridge.clone() });
    t.ip_in(ns, &["link", "set", "dev", &vif.name, "address", &format_mac(&mac), "up"])?;
    t.ip_in(ns, &["link", "set", "dev", "lo", "up"])?;
    bridged_host_side(t, &host_if, vif)
}

pub(super) fn bridged_host_side(t: &dyn NetTools, host_if: &str, vif: &VethIf) -> Result<()> {
    if let Some(br) = &vif.bridge {
        t.ip(&["link", "set", "dev", host_if, "master", br]).map_err(|e| {
            Error::Net(format!("cannot attach {host_if} to bridge {br}: {e} (does the bridge exist? `ip link add {br} type bridge`)"))
        })?;
    }
    t.ip(&["link", "set", "dev", host_if, "up"])?;
    Ok(())
}
