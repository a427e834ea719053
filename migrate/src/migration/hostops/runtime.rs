//! The real host operations: calls into ferry-runtime and CRIU.

use super::{staging_config, HandoverOutcome, HostOps, HANDOVER_DEADLINE};
use crate::error::{Error, Result};
use crate::migration::preflight::{self, DestFacts};
use ferry_runtime::config::StorageKind;
use ferry_runtime::container::{self, CheckpointOpts, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::net::{CtNetns, NetState};
use ferry_runtime::{storage, ContainerConfig, Ctid, Host};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The network operations a migration needs from this host, at the level of the runtime's
/// network tools: what a runtime with its own network-tools trait implements instead of
/// [`RuntimeNet`].
pub trait NetOps: Send + Sync {
    /// Hold back (or let through again) new connections to the container's venet addresses.
    fn hold_new_connections(&self, cfg: &ContainerConfig, hold: bool) -> ferry_runtime::Result<()>;
    /// Drop (or let through again) all of the container's venet traffic on this host.
    fn hold_traffic(&self, cfg: &ContainerConfig, hold: bool) -> ferry_runtime::Result<()>;
    /// Wait (at most `limit`) until no listening socket in the netns of `pid` has connections
    /// waiting to be accepted; how many still wait.
    fn wait_backlogs_empty(&self, ns: &CtNetns, limit: Duration) -> u64;
    /// Announce the addresses of a running container (from inside its netns `ns` where it
    /// has one) and repeat that until its neighbours answer or `deadline` passes
    /// (`ferry_runtime::net::verify_handover`).
    fn verify_handover(
        &self,
        net: &NetState,
        ns: Option<&CtNetns>,
        since: Instant,
        deadline: Duration,
        still_here: &dyn Fn() -> bool,
    ) -> ferry_runtime::Result<HandoverOutcome>;
    /// Set every interface but lo in the container's netns `ns` down (best effort).
    fn links_down(&self, ns: &CtNetns);
}

/// [`NetOps`] by the runtime's `net` functions.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeNet;

impl NetOps for RuntimeNet {
    fn hold_new_connections(&self, cfg: &ContainerConfig, hold: bool) -> ferry_runtime::Result<()> {
        ferry_runtime::net::hold_new_connections(cfg, hold)
    }

    fn hold_traffic(&self, cfg: &ContainerConfig, hold: bool) -> ferry_runtime::Result<()> {
        ferry_runtime::net::hold_traffic(cfg, hold)
    }

    fn wait_backlogs_empty(&self, ns: &CtNetns, limit: Duration) -> u64 {
        ferry_runtime::net::wait_backlogs_empty(ns, limit)
    }

    fn verify_handover(
        &self,
        net: &NetState,
        ns: Option<&CtNetns>,
        since: Instant,
        deadline: Duration,
        still_here: &dyn Fn() -> bool,
    ) -> ferry_runtime::Result<HandoverOutcome> {
        ferry_runtime::net::verify_handover(net, ns, since, deadline, still_here)
    }

    fn links_down(&self, ns: &CtNetns) {
        if let Err(e) = ferry_runtime::net::silence::links_down(ns) {
            tracing::warn!("taking a container's links down before it is killed: {e}");
        }
    }
}

/// The host operations of a real host: the container runtime, CRIU, and `N` for the network.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeOps<N = RuntimeNet> {
    pub net: N,
}

impl RuntimeOps {
    /// The host operations of this host, shared by the pipeline's tasks and threads.
    pub fn shared() -> std::sync::Arc<dyn HostOps> {
        std::sync::Arc::new(RuntimeOps { net: RuntimeNet })
    }
}

impl<N: NetOps> RuntimeOps<N> {
    fn restore_here(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path, announce: bool) -> Result<i32> {
        if cfg.storage.kind == StorageKind::Image && storage::is_mounted(&storage::files_path(host, cfg)) {
            // Received through its mount point; the restore mounts it itself.
            storage::unmount_root(host, cfg)?;
        }
        // A dump for a migration left the source's host side in place: clear it first.
        container::restore::release_after_dump(host, cfg)?;
        // A system container is restored inside a monitor the restore forks, which needs a
        // single-threaded process: this one runs tokio, so the restore runs in a forked child.
        let system = ferry_runtime::sysenv::is_system(cfg) || container::CheckpointMeta::load(dir)?.is_some_and(|m| m.system.is_some());
        if system {
            return in_child(cfg, || container::restore::restore_from_dir_with(host, lock, cfg, dir, announce).map(|i| i.state.pid));
        }
        let info = container::restore::restore_from_dir_with(host, lock, cfg, dir, announce)?;
        Ok(info.state.pid)
    }
}

/// Run `op` (a start or restore returning PID 1) in a forked, single-threaded child of this
/// process, and return its result.
fn in_child(cfg: &ContainerConfig, op: impl FnOnce() -> ferry_runtime::Result<i32>) -> Result<i32> {
    let (rd, wr) = nix::unistd::pipe().map_err(|source| Error::Sys { op: "pipe", source })?;
    // SAFETY: the child only calls the runtime's start or restore (which need no lock another
    // thread could hold beyond malloc's, which glibc resets across fork) and then _exit()s.
    match unsafe { nix::unistd::fork() }.map_err(|source| Error::Sys { op: "fork", source })? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let msg = match op() {
                Ok(pid) => format!("ok {pid}"),
                Err(e) => format!("err {e}"),
            };
            let _ = nix::unistd::write(&wr, msg.as_bytes());
            // SAFETY: _exit ends the forked child without running the parent's atexit
            // handlers or tokio's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut f = std::fs::File::from(rd);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut f, &mut msg);
            let _ = nix::sys::wait::waitpid(child, None);
            match msg.split_once(' ') {
                Some(("ok", pid)) => Ok(pid.trim().parse().unwrap_or(0)),
                Some(("err", e)) => Err(Error::Migration(e.to_string())),
                _ => Err(Error::Migration(format!("starting {} failed without a message", cfg.ctid))),
            }
        }
    }
}

impl<N: NetOps> HostOps for RuntimeOps<N> {
    fn is_running(&self, host: &Host, ct: &Ctid) -> bool {
        matches!(container::status(host, ct), Ok((Status::Running, _)))
    }

    fn files_dir(&self, host: &Host, cfg: &ContainerConfig) -> Result<(PathBuf, bool)> {
        Ok(storage::files_dir(host, cfg)?)
    }

    fn unmount_files(&self, host: &Host, cfg: &ContainerConfig) {
        if let Err(e) = storage::unmount_root(host, cfg) {
            tracing::warn!("container {}: unmounting its files: {e}", cfg.ctid);
        }
    }

    fn criu_version(&self) -> Option<String> {
        let criu = ferry_runtime::criu::Criu::new().ok()?;
        criu.version().ok().map(|v| v.to_string())
    }

    fn memory_tracking(&self) -> bool {
        ferry_runtime::criu::Criu::new().ok().and_then(|c| c.features().ok()).is_some_and(|f| f.mem_track)
    }

    fn dump_cpuinfo(&self, work: &Path) -> Vec<u8> {
        preflight::dump_cpuinfo(work)
    }

    fn preflight_facts(&self, host: &Host, cfg: &ContainerConfig, cpuinfo: &[u8], online: bool, work: &Path) -> DestFacts {
        preflight::gather(host, cfg, cpuinfo, online, work)
    }

    fn drain_backlogs(&self, host: &Host, cfg: &ContainerConfig, limit: Duration) -> u64 {
        if cfg.net.ipadd.is_empty() {
            return 0;
        }
        if let Err(e) = self.net.hold_new_connections(cfg, true) {
            tracing::warn!("{e}");
            return 0;
        }
        match ferry_runtime::state::State::load(host, &cfg.ctid) {
            Ok(Some(st)) => match st.netns("migrate") {
                Ok(ns) => self.net.wait_backlogs_empty(&ns, limit),
                Err(e) => {
                    tracing::warn!("{e}");
                    0
                }
            },
            _ => 0,
        }
    }

    fn dump(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<Option<Instant>> {
        // The host side goes after the destination runs it (release_source), not while frozen.
        let opts = CheckpointOpts { keep_running: false, defer_release: true, ..Default::default() };
        Ok(container::checkpoint_to_dir(host, lock, cfg, dir, &opts)?.frozen_at)
    }

    fn blackhole(&self, cfg: &ContainerConfig) {
        if let Err(e) = self.net.hold_traffic(cfg, true) {
            tracing::warn!("{e}");
        }
    }

    fn let_traffic_through(&self, cfg: &ContainerConfig) {
        for r in [self.net.hold_traffic(cfg, false), self.net.hold_new_connections(cfg, false)] {
            if let Err(e) = r {
                tracing::warn!("{e}");
            }
        }
    }

    fn restore(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
        self.restore_here(host, lock, cfg, dir, true)
    }

    fn release_source(&self, host: &Host, cfg: &ContainerConfig) -> Result<()> {
        Ok(container::restore::release_after_dump(host, cfg)?)
    }

    fn stop(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
        Ok(container::stop(host, lock, cfg, Duration::from_secs(30))?)
    }

    /// The runtime's start must run single-threaded (it clones the container's init), and
    /// this process runs tokio: fork first, start in the child.
    fn start(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<i32> {
        if cfg.storage.kind == StorageKind::Image && storage::is_mounted(&storage::files_path(host, cfg)) {
            storage::unmount_root(host, cfg)?;
        }
        in_child(cfg, || container::start(host, lock, cfg).map(|st| st.pid))
    }

    fn remove_source(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, remove_area: bool) -> Result<()> {
        let ct = &cfg.ctid;
        if matches!(container::status(host, ct)?.0, Status::Running | Status::Mounted) {
            container::stop(host, lock, cfg, Duration::from_secs(10))?;
        }
        if remove_area {
            container::destroy(host, lock, true)?;
        } else {
            let conf = host.config_path(ct);
            let moved = conf.with_extension("toml.migrated");
            std::fs::rename(&conf, &moved).map_err(|e| Error::io("rename config", &conf, e))?;
        }
        Ok(())
    }

    fn thaw_if_frozen(&self, host: &Host, lock: &ContainerLock) -> Result<bool> {
        Ok(container::thaw_if_frozen(host, lock)?)
    }

    fn prepare_receive_area(&self, host: &Host, cfg: &mut ContainerConfig) -> Result<PathBuf> {
        cfg.storage.kind = storage::backends::choose_kind(&host.data_dir, cfg.resources.diskspace)?;
        let private = host.private_dir(&cfg.ctid);
        if private.exists() || host.disk_image(&cfg.ctid).exists() {
            // Kept by an earlier attempt (--keep-dst): the sync brings it up to date.
        } else {
            let empty = empty_template_dir(host, &cfg.ctid)?;
            let res = storage::prepare(host, cfg, &empty);
            let _ = std::fs::remove_dir(&empty);
            res?;
        }
        if cfg.storage.kind == StorageKind::Image {
            return Ok(storage::mount_root_unmapped(host, cfg)?);
        }
        Ok(private)
    }

    fn restore_unannounced(&self, host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
        self.restore_here(host, lock, cfg, dir, false)
    }

    fn kill_and_teardown(&self, host: &Host, _lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
        let (_, state) = container::status(host, &cfg.ctid)?;
        if let Some(ns) = state.as_ref().and_then(|st| st.netns("migrate").ok()) {
            // This copy holds the same TCP connections as the one the source runs (or is about
            // to run again): killed with its links up, it would send FINs and RSTs that end
            // them. Take its links down first so its death stays silent.
            self.net.links_down(&ns);
        }
        container::teardown(host, cfg, state.as_ref())?;
        Ok(())
    }

    fn remove_area(&self, host: &Host, cfg: &ContainerConfig) -> Result<()> {
        let _ = storage::unmount_root(host, cfg);
        storage::remove(host, cfg)?;
        Ok(())
    }

    fn install_config(&self, host: &Host, ct: &Ctid) -> Result<()> {
        let staging = staging_config(host, ct);
        let conf = host.config_path(ct);
        if let Some(dir) = conf.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        std::fs::rename(&staging, &conf).map_err(|e| Error::io("install config", &conf, e))
    }

    fn hand_over(&self, host: &Host, cfg: &ContainerConfig, since: Instant, still_here: &dyn Fn() -> bool) -> Result<HandoverOutcome> {
        if let Some(st) = ferry_runtime::state::State::load(host, &cfg.ctid)? {
            if let Some(net) = &st.net_objects {
                let ns = st.netns("announce").ok();
                return Ok(self.net.verify_handover(net, ns.as_ref(), since, HANDOVER_DEADLINE, still_here)?);
            }
        }
        Ok(HandoverOutcome::default())
    }
}

/// An empty directory to make a private area from.
fn empty_template_dir(host: &Host, ct: &Ctid) -> Result<PathBuf> {
    let d = host.run_ct_dir(ct).join("empty-template");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
    Ok(d)
}
