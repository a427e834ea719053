//! Points where the network code plugs into a container's start and stop. They are no-ops
//! until the network stage fills them in (venet/veth creation, routes, announce).

use crate::config::ContainerConfig;
use crate::error::Result;
use crate::host::Host;

/// Runs in the host after PID 1 is cloned into its new namespaces and put in its cgroup, and
/// before it is released to set up its root. `pid` is PID 1 as seen from the host; its network
/// namespace is `/proc/<pid>/ns/net`. An error aborts the start (everything is undone).
pub fn net_hook_after_clone(_host: &Host, _cfg: &ContainerConfig, _pid: i32) -> Result<()> {
    Ok(())
}

/// Runs in the host after every process of the container is gone, before its state is
/// removed: take down whatever `net_hook_after_clone` made on the host side. Must tolerate
/// objects that are already gone (it also runs when a start fails half way).
pub fn net_hook_after_stop(_host: &Host, _cfg: &ContainerConfig) -> Result<()> {
    Ok(())
}
