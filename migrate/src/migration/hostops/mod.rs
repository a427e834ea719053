//! What a migration does to this host beyond the files it syncs and the images it moves: the
//! calls into the container runtime (dump, restore, start, stop, mounts, teardown), the
//! config it installs, the network holds around the freeze, and what it asks about the host.
//! One trait, so that the pipeline (source.rs, receive.rs, recovery.rs) reads as the protocol
//! it is, and so that its rollback paths run in unit tests against a recording fake
//! ([`fake::Recording`], `cfg(test)`) instead of root, CRIU and simulated hosts.
//!
//! [`RuntimeOps`] is the real implementation. Its network half sits behind [`NetOps`] (the
//! runtime's `net` functions by default, [`RuntimeNet`]): a runtime whose network tools
//! become a trait of their own plugs in there.

#[cfg(test)]
pub mod fake;
mod runtime;

pub use runtime::{NetOps, RuntimeNet, RuntimeOps};

use super::fault::Faults;
use super::preflight::DestFacts;
use crate::error::Result;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Ctid, Host};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use ferry_runtime::net::handover::Outcome as HandoverOutcome;

/// How long the destination verifies a handover before it reports it unconfirmed.
pub const HANDOVER_DEADLINE: Duration = ferry_runtime::net::handover::DEADLINE;

/// The host operations of a migration's source, its destination and the recovery of an
/// interrupted one. Each is one step the pipeline's rollback has to know about.
pub trait HostOps: Send + Sync {
    // --- what this host has
    fn is_running(&self, host: &Host, ct: &Ctid) -> bool;
    /// The version of the CRIU here, when one runs.
    fn criu_version(&self) -> Option<String>;
    /// Whether CRIU can track memory changes here (soft-dirty): what iterative memory
    /// pre-copy (pre-dumps while the container runs) needs.
    fn memory_tracking(&self) -> bool;
    /// CRIU's cpuinfo image of this host (`criu cpuinfo dump`), empty when it cannot be made.
    fn dump_cpuinfo(&self, work: &Path) -> Vec<u8>;
    /// What the destination's preflight compares against.
    fn preflight_facts(&self, host: &Host, cfg: &ContainerConfig, cpuinfo: &[u8], online: bool, work: &Path) -> DestFacts;

    // --- the source
    /// Where the container's files are (what the sync reads): `ferry_runtime::storage::files_dir`,
    /// which mounts a stopped image-backed container's root (then true: unmount with
    /// [`HostOps::unmount_files`]).
    fn files_dir(&self, host: &Host, cfg: &ContainerConfig) -> Result<(PathBuf, bool)>;
    /// Unmount what [`HostOps::files_dir`] mounted.
    fn unmount_files(&self, host: &Host, cfg: &ContainerConfig);
    /// Right before the freeze: hold back new connections to the container here and give its
    /// services up to `limit` to accept what already waits in their backlogs (CRIU could only
    /// drop those). Returns how many still wait.
    fn drain_backlogs(&self, host: &Host, cfg: &ContainerConfig, limit: Duration) -> u64;
    /// Freeze and dump the container into `dir`: its processes end here, its host-side state
    /// (mounts, cgroups, network) stays until [`HostOps::release_source`]; its files stay. On
    /// failure it is thawed and runs on as before. Returns when it was frozen.
    fn dump(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<Option<Instant>>;
    /// Between the dump and the destination's `Restored`: drop the container's venet traffic
    /// here.
    fn blackhole(&self, cfg: &ContainerConfig);
    /// Undo [`HostOps::drain_backlogs`] and [`HostOps::blackhole`] (what is absent is fine).
    fn let_traffic_through(&self, cfg: &ContainerConfig);
    /// Restore the container here from the CRIU images in `dir` (its files in place) and
    /// announce its addresses from here: the source taking it back.
    fn restore(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32>;
    /// After the destination runs the container: remove what the dump left here.
    fn release_source(&self, host: &Host, cfg: &ContainerConfig) -> Result<()>;
    fn stop(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()>;
    /// Start the container from its files; returns its init's pid.
    fn start(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<i32>;
    /// After a successful migration: the container is gone from here. With `remove_area` its
    /// files and config go too; without, the config is renamed to `<CTID>.toml.migrated`.
    fn remove_source(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, remove_area: bool) -> Result<()>;
    /// Thaw the container if a dead operation left it frozen; whether it was.
    fn thaw_if_frozen(&self, host: &Host, lock: &ContainerLock) -> Result<bool>;

    // --- the destination
    /// An empty private area for a container arriving here, with this host's storage
    /// backend (set in `cfg`); returns the directory the files are synced into.
    fn prepare_receive_area(&self, host: &Host, cfg: &mut ContainerConfig) -> Result<PathBuf>;
    /// Restore from the images in `dir` without announcing; [`HostOps::announce`] follows at
    /// the commit.
    fn restore_unannounced(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32>;
    /// Kill a container restored here by a migration that did not complete, and remove its
    /// host state (its network silenced first: its copy of the TCP connections must not end
    /// them).
    fn kill_and_teardown(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()>;
    /// Remove the files of a container that never became this host's.
    fn remove_area(&self, host: &Host, cfg: &ContainerConfig) -> Result<()>;
    /// The commit: the staged config (`<data>/migrating/<CTID>.toml`) becomes the container's.
    fn install_config(&self, host: &Host, ct: &Ctid) -> Result<()>;
    /// Announce the container's addresses from here and verify that its neighbours reach it
    /// here, announcing again with back-off until they answer or [`HANDOVER_DEADLINE`] passes
    /// (while `still_here`). Confirmation times count from `since` (the restore).
    fn hand_over(&self, host: &Host, cfg: &ContainerConfig, since: Instant, still_here: &dyn Fn() -> bool) -> Result<HandoverOutcome>;

    /// Faults injected on purpose (see [`super::fault`]): none in a build without the
    /// feature `fault-injection`.
    fn faults(&self) -> Faults {
        Faults::from_env()
    }
}

/// How the container is networked, for the preflight ("venet+veth", "none").
pub fn network_mode(cfg: &ContainerConfig) -> String {
    let mut modes = Vec::new();
    if !cfg.net.ipadd.is_empty() {
        modes.push("venet");
    }
    if !cfg.net.netifs.is_empty() {
        modes.push("veth");
    }
    if !cfg.net.netdevs.is_empty() {
        modes.push("passthrough");
    }
    if modes.is_empty() {
        "none".into()
    } else {
        modes.join("+")
    }
}

/// `<data>/migrating/<CTID>.toml`: the config of a container being received.
pub fn staging_config(host: &Host, ct: &Ctid) -> PathBuf {
    host.incoming_dir().join(format!("{ct}.toml"))
}
