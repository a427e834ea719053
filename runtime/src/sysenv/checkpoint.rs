//! What CRIU is told when it dumps or restores a system container, besides what every
//! container gets (docs/checkpoint.md, "System containers"):
//!
//! - the console: the dumped processes hold the peer of a pty whose master is the monitor's,
//!   outside the dump. It is an external terminal (`tty[rdev:dev]`) at dump, and the peer of
//!   the restoring monitor's new pty is passed in its place (`--inherit-fd`); the bind mount
//!   at `/dev/console` is an external mount, mapped to the new peer.
//! - cgroups: every service of systemd lives in a cgroup of its own below the container's.
//!   CRIU dumps that one hierarchy (`name=systemd` on v1 hosts, the unified one on v2) from the
//!   container's cgroup down, empty cgroups included, and at restore recreates the subtree
//!   under the container's cgroup on the restoring host (`cg_root`), puts each process back
//!   into its cgroup and makes the cgroup namespace again at the container's cgroup. The other
//!   hierarchies stay ferry's: `criu swrk` joins the container's cgroups there, as for any
//!   container.

use crate::cgroups::Cgroup;
use crate::criu::{CgroupHandling, CriuCgMode, DumpOpts, RestoreOpts};
use crate::error::Result;
use crate::state::State;
use crate::sysenv::cgroup::SystemdCgroup;
use crate::sysenv::monitor::Console;
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;

/// The name the console's bind mount has in CRIU's images.
pub const CONSOLE_MOUNT_KEY: &str = "ferry-console";

/// What a system container's checkpoint records for its restore (in ferry's meta file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemMeta {
    /// CRIU's name of the console pty the dumped processes hold (`tty[rdev:dev]`).
    pub console_tty: String,
    /// The hierarchy whose subtree CRIU dumped (`name=systemd`; "" for the unified one).
    pub cgroup_hierarchy: String,
}

/// Add a system container's console and cgroups to the dump of `st` (cgroup `cg`); None for
/// other containers.
pub fn dump_options(st: &State, cg: &Cgroup, d: &mut DumpOpts) -> Result<Option<SystemMeta>> {
    let Some(sys) = &st.system else { return Ok(None) };
    let console_tty = crate::sysenv::console::criu_tty_key(&sys.console)?;
    d.external.push(console_tty.clone());
    d.external_mounts.push(("/dev/console".into(), CONSOLE_MOUNT_KEY.into()));
    let cgs = SystemdCgroup::recorded(cg, &sys.systemd_cgroup).criu();
    d.cgroups = CgroupHandling::Criu { mode: CriuCgMode::Soft, roots: vec![(String::new(), cgs.root)] };
    d.cgroup_dump_controllers = vec![cgs.dump_controller.clone()];
    Ok(Some(SystemMeta { console_tty, cgroup_hierarchy: cgs.dump_controller }))
}

/// Whether a dump that recorded `meta` can come back in the cgroup `cg`: its systemd runs in
/// the hierarchy it booted with (its mounts say which), so the restoring host must put the
/// container in the same kind (ferry's cgroup mode v1 or v2).
pub fn check_cgroup_mode(ct: &str, meta: &SystemMeta, cg: &Cgroup) -> Result<()> {
    let here = if cg.mode() == crate::cgroups::CgroupMode::V1 { crate::sysenv::cgroup::SYSTEMD_HIERARCHY } else { "" };
    if here == meta.cgroup_hierarchy {
        return Ok(());
    }
    let mode = |h: &str| if h.is_empty() { "v2 (the unified hierarchy)" } else { "v1 (the name=systemd hierarchy)" };
    Err(crate::error::Error::ct(
        ct,
        "restore",
        format!(
            "its systemd runs in cgroup mode {}, and this host puts containers in cgroup mode {}: restore it where the cgroup mode is \
             the same (FERRY_CGROUP_MODE, --cgroup-mode), or stop it there and start it here",
            mode(&meta.cgroup_hierarchy),
            mode(here)
        ),
    ))
}

/// Restore a system container's console and cgroups (its systemd's cgroup here is `sd`) from
/// a dump that recorded `meta`, onto the restoring monitor's `console`.
pub fn restore_options(meta: &SystemMeta, sd: &SystemdCgroup, console: &Console, r: &mut RestoreOpts) {
    r.inherit_fds.push((meta.console_tty.clone(), console.pty.peer.as_raw_fd()));
    r.external_mounts.push((CONSOLE_MOUNT_KEY.into(), console.pty.path.display().to_string()));
    r.cgroups = CgroupHandling::Criu { mode: CriuCgMode::Soft, roots: vec![(String::new(), sd.criu().root)] };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupMode;

    #[test]
    fn a_dump_comes_back_only_in_the_cgroup_mode_it_ran_in() {
        let v1 = Cgroup::new("/sys/fs/cgroup", "ferry/101", CgroupMode::V1);
        let v2 = Cgroup::new("/sys/fs/cgroup/unified", "ferry/101", CgroupMode::V2);
        let from_v1 = SystemMeta { console_tty: "tty[8800:1a]".into(), cgroup_hierarchy: "name=systemd".into() };
        check_cgroup_mode("101", &from_v1, &v1).unwrap();
        let e = check_cgroup_mode("101", &from_v1, &v2).unwrap_err().to_string();
        assert!(e.contains("container 101: restore") && e.contains("FERRY_CGROUP_MODE"), "{e}");
        let from_v2 = SystemMeta { cgroup_hierarchy: String::new(), ..from_v1 };
        check_cgroup_mode("101", &from_v2, &v2).unwrap();
        assert!(check_cgroup_mode("101", &from_v2, &v1).is_err());
    }
}
