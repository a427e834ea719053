//! Where networking plugs into a container's start and stop (see `net`'s module docs for
//! the order). All of these run in the host's netns, from the process that runs start/stop.

use crate::config::{ContainerConfig, NetConfig};
use crate::error::Result;
use crate::host::Host;
use crate::net::{self, CtNetns, NetState};
use crate::state::State;
use std::time::Duration;

/// How often and how far apart `start` announces a container's addresses.
pub const ANNOUNCE_COUNT: u32 = 3;
pub const ANNOUNCE_SPACING: Duration = Duration::from_millis(100);

/// Whether `net` asks for anything on the host.
pub fn has_net(net: &NetConfig) -> bool {
    !net.ipadd.is_empty() || !net.netifs.is_empty() || !net.netdevs.is_empty()
}

/// Runs after PID 1 is cloned into its namespaces (its netns `ns`) and put in its cgroup,
/// before it is released: venet/veth pairs, routes, proxy entries, filters, passed-through
/// devices. None when the container has no networking. On error nothing is left on the host.
pub fn net_hook_after_clone(host: &Host, cfg: &ContainerConfig, pid: i32, ns: &CtNetns) -> Result<Option<NetState>> {
    if !has_net(&cfg.net) {
        return Ok(None);
    }
    net::setup(host, cfg, pid, ns).map(Some)
}

/// Runs while the container's processes still live, before anything is killed: passed-through
/// devices go back to the host from its netns `ns` (a dying netns would destroy virtual ones).
pub fn net_hook_before_kill(st: &mut Option<NetState>, ns: Option<&CtNetns>) -> Result<()> {
    match st {
        Some(s) if !s.moved_devs.is_empty() => net::detach_netdevs(s, ns),
        _ => Ok(()),
    }
}

/// Runs after every process of the container is gone: removes what the state records, or,
/// when the state is lost, what the config's names say would have been made.
pub fn net_hook_after_stop(host: &Host, cfg: &ContainerConfig, st: Option<&NetState>) -> Result<()> {
    match st {
        Some(s) => net::teardown(host, s),
        None if has_net(&cfg.net) => net::cleanup_stale(host, cfg),
        None => Ok(()),
    }
}

/// Announce the addresses of the running container `state` (gratuitous ARP / unsolicited
/// NA) after start. A failure is logged, not fatal: the container runs, neighbours learn it
/// on their own.
pub fn announce_after_start(state: &State) {
    let Some(st) = &state.net_objects else { return };
    let ns = if st.bridged.is_empty() { None } else { state.netns("announce").map_err(|e| tracing::warn!("{e}")).ok() };
    if let Err(e) = net::announce_container(st, ns.as_ref(), ANNOUNCE_COUNT, ANNOUNCE_SPACING) {
        tracing::warn!("container {}: announce addresses: {e}", st.ctid);
    }
}
