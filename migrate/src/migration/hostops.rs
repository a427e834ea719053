//! What a migration does to the containers of this host, as calls into the runtime. Kept in
//! one place so that the pipeline (source.rs, dest.rs) reads as the protocol it is.

use crate::error::{Error, Result};
use ferry_runtime::config::StorageKind;
use ferry_runtime::container::{self, CheckpointOpts, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{storage, ContainerConfig, Ctid, Host};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn is_running(host: &Host, ct: &Ctid) -> bool {
    matches!(container::status(host, ct), Ok((Status::Running, _)))
}

/// The directory that holds the container's files on this host (what the sync reads or
/// fills), with their owners as on disk (never an unprivileged container's idmapped root).
pub fn files_dir(host: &Host, cfg: &ContainerConfig, running: bool) -> PathBuf {
    match cfg.storage.kind {
        // The image's files are visible only where it is mounted.
        StorageKind::Image if running => storage::files_dir(host, cfg),
        _ => host.private_dir(&cfg.ctid),
    }
}

pub fn criu_version() -> Option<String> {
    let criu = ferry_runtime::checkpoint::Criu::new().ok()?;
    criu.version().ok().map(|v| v.to_string())
}

/// Whether CRIU can track memory changes here (soft-dirty): what iterative memory pre-copy
/// (pre-dumps while the container runs) needs.
pub fn memory_tracking() -> bool {
    ferry_runtime::checkpoint::Criu::new().ok().and_then(|c| c.features().ok()).is_some_and(|f| f.mem_track)
}

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

/// Freeze and dump the container into `dir` for a migration: its processes end here, its
/// host-side state (mounts, cgroups, network) goes; its files stay. On failure it is thawed
/// and runs on as before.
/// Returns when the container was frozen (the dump's start-up ran while it still ran).
pub fn dump_for_migration(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<Option<std::time::Instant>> {
    // The host side goes after the destination runs it (release_source), not while frozen.
    let opts = CheckpointOpts { keep_running: false, defer_release: true, ..Default::default() };
    Ok(container::checkpoint_to_dir(host, lock, cfg, dir, &opts)?.frozen_at)
}

/// Restore the container from the CRIU images in `dir` (its files already in place), and
/// announce its addresses from here (the source taking it back).
pub fn restore_from_dir(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
    restore_here(host, lock, cfg, dir, true)
}

/// On the destination: restore without announcing; [`announce`] follows at the commit.
pub fn restore_unannounced(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
    restore_here(host, lock, cfg, dir, false)
}

fn restore_here(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, dir: &Path, announce: bool) -> Result<i32> {
    if cfg.storage.kind == StorageKind::Image && storage::is_mounted(&storage::files_dir(host, cfg)) {
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

/// Start the container from its files. The runtime's start must run single-threaded (it
/// clones the container's init), and this process runs tokio: fork first, start in the child.
pub fn start(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<i32> {
    if cfg.storage.kind == StorageKind::Image && storage::is_mounted(&storage::files_dir(host, cfg)) {
        storage::unmount_root(host, cfg)?;
    }
    in_child(cfg, || container::start(host, lock, cfg).map(|st| st.pid))
}

/// Run `op` (a start or restore returning PID 1) in a forked, single-threaded child of this
/// process, and return its result.
fn in_child(cfg: &ContainerConfig, op: impl FnOnce() -> ferry_runtime::Result<i32>) -> Result<i32> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| Error::Migration(format!("pipe: {e}")))?;
    // SAFETY: the child only calls the runtime's start or restore (which need no lock another
    // thread could hold beyond malloc's, which glibc resets across fork) and then _exit()s.
    match unsafe { nix::unistd::fork() }.map_err(|e| Error::Migration(format!("fork: {e}")))? {
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

pub fn stop(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
    Ok(container::stop(host, lock, cfg, Duration::from_secs(30))?)
}

/// Kill a container restored here by a migration that did not complete, and remove its host
/// state. The lock is the caller's proof that no other operation touches it meanwhile.
pub fn kill_and_teardown(host: &Host, _lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
    let (_, state) = container::status(host, &cfg.ctid)?;
    if let Some(ns) = state.as_ref().and_then(|st| st.netns("migrate").ok()) {
        // This copy holds the same TCP connections as the one the source runs (or is about to
        // run again): killed with its links up, it would send FINs and RSTs that end them.
        // Take its links down first so its death stays silent.
        silence_network(&ns);
    }
    container::teardown(host, cfg, state.as_ref())?;
    Ok(())
}

/// Set every interface but lo in the container's netns `ns` down (best effort).
fn silence_network(ns: &ferry_runtime::net::CtNetns) {
    use ferry_runtime::net::tools::ip_in;
    let Ok(out) = ip_in(ns, &["-o", "link", "show"]) else { return };
    for line in out.lines() {
        let Some(name) = line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()) else { continue };
        if name.is_empty() || name == "lo" {
            continue;
        }
        let _ = ip_in(ns, &["link", "set", "dev", &name, "down"]);
    }
}

/// Announce the container's addresses from here, several times over the first second.
pub fn announce(host: &Host, cfg: &ContainerConfig, count: u32, spacing: Duration) -> Result<()> {
    if let Some(st) = ferry_runtime::state::State::load(host, &cfg.ctid)? {
        if let Some(net) = &st.net_objects {
            let ns = st.netns("announce").ok();
            ferry_runtime::net::announce_container(net, ns.as_ref(), count, spacing)?;
        }
    }
    Ok(())
}

/// After the destination runs the container: remove what the dump left on the source.
pub fn release_source(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    Ok(container::restore::release_after_dump(host, cfg)?)
}

/// An empty private area for a container arriving here, with this host's storage backend;
/// returns the directory the files are synced into.
pub fn prepare_receive_area(host: &Host, cfg: &mut ContainerConfig) -> Result<PathBuf> {
    cfg.storage.kind = storage::backends::choose_kind(&host.data_dir, cfg.resources.diskspace)?;
    let private = host.private_dir(&cfg.ctid);
    if private.exists() || host.disk_image(&cfg.ctid).exists() {
        // Kept by an earlier attempt (--keep-dst): the sync brings it up to date.
    } else {
        let empty = tempfile_dir(host, &cfg.ctid)?;
        let res = storage::prepare(host, cfg, &empty);
        let _ = std::fs::remove_dir(&empty);
        res?;
    }
    if cfg.storage.kind == StorageKind::Image {
        return Ok(storage::mount_root_unmapped(host, cfg)?);
    }
    Ok(private)
}

fn tempfile_dir(host: &Host, ct: &Ctid) -> Result<PathBuf> {
    let d = host.run_ct_dir(ct).join("empty-template");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
    Ok(d)
}

/// Remove the files of a container that never became this host's.
pub fn remove_area(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let _ = storage::unmount_root(host, cfg);
    storage::remove(host, cfg)?;
    Ok(())
}

/// After a successful migration: the container is gone from here. With `remove_area` its
/// files and config go too (vzmigrate's default); without, the config is renamed to
/// `<CTID>.toml.migrated` so nothing here mistakes the files for a container of this host.
pub fn remove_source(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, remove_area: bool) -> Result<()> {
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

/// Right before the freeze: hold back new connections to the container here and give its
/// services up to `limit` to accept what already waits in their backlogs (CRIU could only
/// drop those). Returns how many still wait.
pub fn drain_backlogs(host: &Host, cfg: &ContainerConfig, limit: Duration) -> u64 {
    if cfg.net.ipadd.is_empty() {
        return 0;
    }
    if let Err(e) = ferry_runtime::net::hold_new_connections(cfg, true) {
        tracing::warn!("{e}");
        return 0;
    }
    match ferry_runtime::state::State::load(host, &cfg.ctid) {
        Ok(Some(st)) => ferry_runtime::net::wait_backlogs_empty(st.pid, limit),
        _ => 0,
    }
}

/// Between the dump and the destination's `Restored`, drop all of the container's venet
/// traffic on this host (see [`ferry_runtime::net::hold_traffic`]).
pub fn blackhole(cfg: &ContainerConfig) {
    if let Err(e) = ferry_runtime::net::hold_traffic(cfg, true) {
        tracing::warn!("{e}");
    }
}

/// Undo [`drain_backlogs`] and [`blackhole`]: the container's addresses are reachable here
/// as usual again (what is absent is fine).
pub fn let_traffic_through(cfg: &ContainerConfig) {
    for r in [ferry_runtime::net::hold_traffic(cfg, false), ferry_runtime::net::hold_new_connections(cfg, false)] {
        if let Err(e) = r {
            tracing::warn!("{e}");
        }
    }
}
