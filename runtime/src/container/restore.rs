//! Checkpoint and restore of a container through CRIU's RPC, on a plain CRIU image directory.
//! (The migrate crate wraps both into one ferry image file.)
//!
//! checkpoint: refuse passed-through devices → freeze the container's freezer cgroup → record a
//! summary for `inspect` (process tree, TCP sockets, addresses, memory) → CRIU dump (TCP
//! connections, file locks, network locked with iptables) → without `keep_running` the
//! processes are gone, so the host side is removed like `stop` does (network, root mount,
//! cgroup, state) while the private area stays. Any failure thaws the container and leaves it
//! running as before.
//!
//! restore: refuse a running container → mount the private area at the root → make the cgroups
//! with the config's current limits → wait for stale outer veth names to vanish → CRIU restore
//! (root = the root mount, tree joins the cgroups, veth outer ends recreated in this netns,
//! tree not our child) → host-side network plumbing at CRIU's post-restore notification →
//! state written → addresses announced. Any failure kills the restored tree and undoes all of
//! it; the images stay untouched.
//!
//! The image directory carries one file of ferry's own, [`META_FILE`], next to CRIU's.

use super::summary::{collect_summary, container_addresses, CheckpointSummary};
use crate::cgroups::{Cgroup, FrozenGuard};
use crate::config::{ContainerConfig, Resources};
use crate::container::{prepare_cgroup, running_state, status, teardown, Status};
use crate::criu::{Criu, DumpOpts, NetworkLock, RestoreOpts};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::ContainerLock;
use crate::net::{self, NetState};
use crate::state::State;
use crate::userns::{criu_image, IdMap};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many times a checkpoint tries a dump that failed on a passing moment
/// (`checkpoint::log::is_transient_dump_failure`).
const DUMP_TRIES: u32 = 5;

/// ferry's own file in a checkpoint's image directory (CTID, veths, summary).
pub const META_FILE: &str = "ferry-checkpoint.json";
/// How to checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOpts {
    /// Keep the container running after the dump (vzctl chkpnt without stop).
    pub keep_running: bool,
    pub tcp_established: bool,
    /// Drop connections a listening socket holds but the service has not accepted yet
    /// (CRIU cannot dump them); their clients retry the handshake or see a reset. Without,
    /// a busy server fails every dump.
    pub tcp_skip_in_flight: bool,
    pub file_locks: bool,
    /// Allow unix sockets connected to peers outside the container.
    pub ext_unix_sk: bool,
    /// Without keep_running: leave the dead container's host side (mount, cgroup, network
    /// objects, state) for the caller to remove with [`release_after_dump`], so that work
    /// stays out of a migration's frozen window.
    pub defer_release: bool,
}

impl Default for CheckpointOpts {
    fn default() -> Self {
        CheckpointOpts {
            keep_running: false,
            tcp_established: true,
            tcp_skip_in_flight: true,
            file_locks: true,
            ext_unix_sk: false,
            defer_release: false,
        }
    }
}

/// [`META_FILE`]: what a restore needs besides CRIU's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub ctid: String,
    /// (inner, outer) veth pairs present at dump: passed as CRIU externals at restore.
    pub veths: Vec<(String, String)>,
    pub ext_unix_sk: bool,
    pub criu_version: String,
    pub summary: CheckpointSummary,
    /// The config's limits at the dump, and the limits in force then (live `set` changes
    /// included): a restore gives the container the latter unless its config changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_resources: Option<Resources>,
    /// The isolation the dumped processes ran with (their filters and capabilities are in
    /// CRIU's images): what exec gives a process after the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::isolation::Applied>,
    /// A system container's console and cgroup subtree as dumped (None for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::sysenv::checkpoint::SystemMeta>,
}

impl CheckpointMeta {
    /// The limits a container restored from this checkpoint gets: those it ran with at the
    /// dump, unless its saved limits were changed since (`set --save` of the stopped
    /// container), in which case the saved ones are the admin's newer word.
    pub fn restored_resources(meta: Option<&CheckpointMeta>, saved_now: &Resources) -> Resources {
        match meta {
            Some(CheckpointMeta { saved_resources: Some(saved), live_resources: Some(live), .. }) if saved == saved_now => live.clone(),
            _ => saved_now.clone(),
        }
    }

    /// This checkpoint as one of the container `cfg` describes, which may be another CTID (a
    /// clone, or a migration under a new CTID): the host ends of its veth pairs get that
    /// container's names. Every interface of the dump must be in `cfg`.
    pub fn retarget(&self, cfg: &ContainerConfig) -> Result<CheckpointMeta> {
        let mut m = self.clone();
        m.ctid = cfg.ctid.to_string();
        for (inner, outer) in m.veths.iter_mut() {
            *outer = if inner == net::names::VENET_INNER {
                net::names::venet_host_if(&cfg.ctid)
            } else {
                let i = cfg.net.netifs.iter().position(|v| &v.name == inner).ok_or_else(|| {
                    Error::ct(cfg.ctid.as_str(), "restore", format!("the checkpoint has interface {inner}, which the config no longer has"))
                })?;
                net::names::veth_host_if(&cfg.ctid, i)
            };
        }
        Ok(m)
    }

    /// Write it into `images_dir` (atomically).
    pub fn save(&self, images_dir: &Path) -> Result<()> {
        crate::util::write_atomic(&images_dir.join(META_FILE), &serde_json::to_vec_pretty(self).expect("meta serializes"))
    }

    /// The addresses its dump had: (interface, addresses, MAC).
    pub fn dumped_addresses(&self) -> Vec<(String, Vec<String>, String)> {
        self.summary.addresses.iter().map(|a| (a.interface.clone(), a.ips.clone(), a.mac.clone())).collect()
    }

    pub fn load(images_dir: &Path) -> Result<Option<CheckpointMeta>> {
        let p = images_dir.join(META_FILE);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| Error::Criu(format!("{}: {e}; the checkpoint is damaged", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", p, e)),
        }
    }
}

/// A finished checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub freeze_ms: u64,
    /// When the container stopped running (CRIU's start-up before it is not downtime).
    pub frozen_at: Option<Instant>,
    pub dump_ms: u64,
    pub total_ms: u64,
    pub images_dir: PathBuf,
    /// CRIU's dump log, kept under [`Host::log_dir`].
    pub log: PathBuf,
    pub meta: CheckpointMeta,
    /// What could not be removed from the host after a successful dump (the dump is still
    /// good; `ferry stop CTID` retries the cleanup).
    pub cleanup_error: Option<String>,
}

/// A finished restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreInfo {
    pub state: State,
    pub restore_ms: u64,
    pub total_ms: u64,
    pub log: PathBuf,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Keep a CRIU log under the container's log dir (the images may be temporary); returns the
/// new path, or the old one when it cannot be moved.
fn keep_log(host: &Host, ct: &str, log: &Path, name: &str) -> PathBuf {
    let dir = host.log_dir(&crate::Ctid::new(ct).expect("valid ctid"));
    if std::fs::create_dir_all(&dir).is_err() {
        return log.to_path_buf();
    }
    let dst = dir.join(name);
    if std::fs::rename(log, &dst).is_ok() || std::fs::copy(log, &dst).map(|_| std::fs::remove_file(log)).is_ok() {
        dst
    } else {
        log.to_path_buf()
    }
}

fn criu_err(ct: &str, op: &'static str, e: Error, old_log: &Path, new_log: &Path) -> Error {
    let msg = match e {
        Error::Criu(m) => m,
        other => other.to_string(),
    };
    let msg = msg.replace(&old_log.display().to_string(), &new_log.display().to_string());
    Error::CriuFailed { ctid: ct.to_string(), op, msg }
}

/// Thaw a container left frozen by a checkpoint that crashed. Call with the container's lock
/// held (so no running checkpoint owns the freeze). Returns whether it was frozen.
pub fn thaw_if_frozen(host: &Host, lock: &ContainerLock) -> Result<bool> {
    // A running container's cgroup is the one its state names (the host's cgroup mode may
    // have changed since it started).
    let cg = match State::load(host, lock.ctid())? {
        Some(st) => st.cgroup(),
        None => host.cgroup(lock.ctid())?,
    };
    let freezer = cg.freezer();
    if !cg.fs().is_dir(freezer.dir()) || !freezer.is_requested().unwrap_or(false) {
        return Ok(false);
    }
    freezer.thaw()?;
    Ok(true)
}

/// Checkpoint a running container into `images_dir` (created; must be empty or absent).
/// The host is the calling thread's network namespace; a multi-threaded caller is fine.
pub fn checkpoint_to_dir(
    host: &Host,
    lock: &ContainerLock,
    cfg: &ContainerConfig,
    images_dir: &Path,
    opts: &CheckpointOpts,
) -> Result<CheckpointInfo> {
    checkpoint_to_dir_frozen(host, lock, cfg, images_dir, opts, &mut || Ok(()))
}

/// [`checkpoint_to_dir`], running `while_frozen` after a good dump and before the thaw: with
/// `keep_running`, what it reads of the container (its files) matches the dumped memory.
/// When it fails, the container is thawed (it keeps running with `keep_running`), the images
/// are removed and its message is returned.
pub fn checkpoint_to_dir_frozen(
    host: &Host,
    lock: &ContainerLock,
    cfg: &ContainerConfig,
    images_dir: &Path,
    opts: &CheckpointOpts,
    while_frozen: &mut dyn FnMut() -> std::result::Result<(), String>,
) -> Result<CheckpointInfo> {
    let t0 = Instant::now();
    let ct = lock.ctid().as_str();
    let st = running_state(host, lock.ctid(), "checkpoint")?;
    net::migratable(cfg).map_err(|m| Error::ct(ct, "checkpoint", m))?;
    if let Some(ns) = load_net_state(host, lock.ctid())? {
        net::before_dump_detach(host, cfg, &ns)?;
    }
    let criu = Criu::new().map_err(|e| Error::ct(ct, "checkpoint", e.to_string()))?;
    let criu_version = criu.version().map(|v| v.to_string()).unwrap_or_default();
    if images_dir.exists() && std::fs::read_dir(images_dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Error::ct(ct, "checkpoint", format!("{} is not empty; remove it or choose another place", images_dir.display())));
    }
    // CRIU writes the container's memory there (its files 0600): root's alone.
    crate::util::private_dir(images_dir)?;
    let cg = st.cgroup();
    let freezer = cg.freezer();
    let veths: Vec<(String, String)> = net::criu_veth_externals(cfg).into_iter().filter(|(_, outer)| net::tools::link_exists(outer)).collect();

    // What needs a process (`ip`) is read while the container still runs; the rest of the
    // summary once it is frozen.
    let netns = st.netns("checkpoint").ok().map(std::sync::Arc::new);
    let addresses = netns.as_deref().map(container_addresses).unwrap_or_default();
    let mut d = DumpOpts::new(st.pid, images_dir);
    d.silence_netns = netns;
    d.leave_running = opts.keep_running;
    d.tcp_established = opts.tcp_established;
    d.tcp_skip_in_flight = opts.tcp_skip_in_flight;
    d.file_locks = opts.file_locks;
    d.ext_unix_sk = opts.ext_unix_sk;
    d.network_lock = NetworkLock::Iptables;
    d.freeze_cgroup = Some(freezer.dir().to_path_buf());
    if cfg.security.kind.has_userns() || st.isolation.as_ref().is_some_and(|i| i.kind.has_userns()) {
        d.external_mounts =
            dev_externals(cfg).map_err(|e| Error::ct(ct, "checkpoint", e.to_string()))?.into_iter().map(|(inside, key, _)| (inside, key)).collect();
    }
    let system = crate::sysenv::checkpoint::dump_options(&st, &cg, &mut d)?;
    // The container is frozen when CRIU is ready to collect it ("pre-dump" comes after its
    // start-up, which takes tens of milliseconds), not before CRIU starts: that start-up is
    // not downtime. CRIU finds the cgroup frozen and leaves it so after the dump.
    let mut attempt = 1;
    let (dumped, frozen, frozen_at, freeze_ms, freeze_err, mut summary, log_in_images, log) = loop {
        let mut frozen: Option<FrozenGuard> = None;
        let mut frozen_at: Option<Instant> = None;
        let mut freeze_ms = 0;
        let mut freeze_err: Option<Error> = None;
        let mut summary = CheckpointSummary::default();
        let dumped = criu.dump_notify(&d, &mut |n| {
            if frozen.is_none() {
                let tf = Instant::now();
                match FrozenGuard::freeze(freezer.clone()) {
                    Ok(g) => {
                        frozen = Some(g);
                        frozen_at = Some(tf);
                        freeze_ms = ms(tf.elapsed());
                        summary = collect_summary(st.pid, &cg);
                        summary.addresses = addresses.clone();
                    }
                    Err(e) => {
                        let m = format!("freeze before the {} notification: {e}", n.script);
                        freeze_err = Some(Error::ct(ct, "checkpoint", format!("freeze: {e}; the container keeps running")));
                        return Err(m);
                    }
                }
            }
            Ok(())
        });
        let log_in_images = images_dir.join(&d.log_file);
        // A passing moment (a socket message in flight with credentials, which a booted
        // system's journald and systemd receive all the time): thaw, let the readers take it,
        // try again.
        let transient = || crate::criu::log::is_transient_dump_failure(&std::fs::read_to_string(&log_in_images).unwrap_or_default());
        if dumped.is_err() && freeze_err.is_none() && attempt < DUMP_TRIES && st.is_alive() && transient() {
            drop(frozen);
            let _ = clear_dir(images_dir);
            tracing::info!("container {ct}: dump attempt {attempt} met a socket message in flight; trying again");
            std::thread::sleep(Duration::from_millis(50 * attempt as u64));
            attempt += 1;
            continue;
        }
        let log = keep_log(host, ct, &log_in_images, "checkpoint.log");
        break (dumped, frozen, frozen_at, freeze_ms, freeze_err, summary, log_in_images, log);
    };
    let done = match dumped {
        // CRIU froze the cgroup itself if it sent no notification first (not CRIU 4.2): the
        // dump is good; only the summary lacks the processes. Its processes are gone, so
        // the dump is kept whatever.
        Ok(r) if frozen.is_some() || !opts.keep_running => {
            if frozen.is_none() {
                summary.addresses = addresses.clone();
            }
            r
        }
        Ok(_) => {
            // The processes run on, but without our freeze what `while_frozen` reads would not
            // match the dumped memory: nothing is lost by dropping this dump.
            let _ = clear_dir(images_dir);
            return Err(Error::CriuFailed {
                ctid: ct.to_string(),
                op: "checkpoint",
                msg: "CRIU sent no notification before it froze the container; the checkpoint was discarded and the container keeps running".into(),
            });
        }
        Err(e) => {
            // The tree is intact (CRIU resumes it on failure); the freezer goes back to thawed.
            drop(frozen);
            let _ = clear_dir(images_dir);
            if let Some(fe) = freeze_err {
                return Err(fe);
            }
            let alive = st.is_alive();
            let e = criu_err(ct, "checkpoint", e, &log_in_images, &log);
            return Err(if alive {
                e
            } else {
                Error::CriuFailed {
                    ctid: ct.to_string(),
                    op: "checkpoint",
                    msg: format!("{e}\n(the container's init is gone after the failed dump; `ferry stop {ct}` cleans up)"),
                }
            });
        }
    };
    // CRIU left the cgroup frozen (we froze it): the container is still stopped here.
    if let Err(m) = while_frozen() {
        drop(frozen);
        let _ = clear_dir(images_dir);
        return Err(Error::ct(
            ct,
            "checkpoint",
            format!("{m}; the container was thawed{}", if opts.keep_running { " and keeps running" } else { "" }),
        ));
    }
    drop(frozen);
    summary.memory_bytes = pages_size(images_dir).unwrap_or(summary.memory_bytes);
    let meta = CheckpointMeta {
        ctid: ct.to_string(),
        veths,
        ext_unix_sk: opts.ext_unix_sk,
        criu_version,
        summary,
        saved_resources: Some(cfg.resources.clone()),
        live_resources: Some(crate::container::effective_resources(cfg, Some(&st))),
        isolation: st.isolation.clone(),
        system,
    };
    meta.save(images_dir)?;

    // The dump is good from here on: a cleanup failure must not make the caller drop it.
    let mut cleanup_error = None;
    if !opts.keep_running && !opts.defer_release {
        if let Err(e) = release_host_side(host, cfg) {
            tracing::warn!("container {ct}: cleanup after checkpoint: {e}");
            cleanup_error = Some(e.to_string());
        }
    }
    Ok(CheckpointInfo {
        freeze_ms,
        frozen_at,
        dump_ms: ms(done.elapsed),
        total_ms: ms(t0.elapsed()),
        images_dir: images_dir.to_path_buf(),
        log,
        meta,
        cleanup_error,
    })
}

/// After the processes are gone: the host side a running container holds, removed the way
/// `stop` does (the private area stays).
fn release_host_side(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let state = State::load(host, &cfg.ctid).ok().flatten();
    teardown(host, cfg, state.as_ref())?;
    let _ = std::fs::remove_dir(host.run_ct_dir(&cfg.ctid));
    Ok(())
}

/// Remove what a dump with `defer_release` left of a container on this host (nothing to do
/// when it left nothing). Its processes must be gone.
pub fn release_after_dump(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    match State::load(host, &cfg.ctid)? {
        Some(st) if st.is_alive() => Err(Error::ct(cfg.ctid.as_str(), "restore", format!("its init (pid {}) still runs here", st.pid))),
        Some(_) => release_host_side(host, cfg),
        None => Ok(()),
    }
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Sum of CRIU's `pages-*.img` sizes: the memory the image carries.
fn pages_size(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.file_name().to_string_lossy().starts_with("pages-") {
            total += e.metadata().ok()?.len();
        }
    }
    Some(total)
}

/// The host-side network objects of a running container, as its state file records them.
pub fn load_net_state(host: &Host, ct: &crate::Ctid) -> Result<Option<NetState>> {
    Ok(State::load(host, ct)?.and_then(|s| s.net_objects))
}

/// For an unprivileged container: the images directory to hand CRIU so that its user
/// namespace gets the range of `cfg` (a rewritten copy when the images carry another: see
/// `userns::criu_image`), opened to the container's root. Refuses a checkpoint of the other
/// kind (made before `set --userns` changed it).
fn userns_images(cfg: &ContainerConfig, images_dir: &Path, dumped: Option<IdMap>, map: Option<IdMap>) -> Result<Option<tempfile::TempDir>> {
    let ct = cfg.ctid.as_str();
    match (dumped, map) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::ct(
            ct,
            "restore",
            format!("the checkpoint is of an unprivileged container (with a user namespace) and {ct} is privileged now: `ferry set {ct} --userns on --save` to restore it, or start it afresh"),
        )),
        (None, Some(_)) => Err(Error::ct(
            ct,
            "restore",
            format!("the checkpoint is of a privileged container (no user namespace) and {ct} is unprivileged now: `ferry set {ct} --userns off --save` to restore it, or start it afresh"),
        )),
        (Some(dumped), Some(map)) => {
            let shadow = criu_image::images_for(images_dir, dumped, &map)?;
            // Only the directory CRIU reads (the shadow's files are the same inodes).
            criu_image::open_to(shadow.as_ref().map_or(images_dir, |d| d.path()), &map)?;
            Ok(shadow)
        }
    }
}

/// The host's device nodes an unprivileged container's /dev binds (`start::DEV_NODES`, and
/// those its device rules give: `userns::devices`), as CRIU external mounts: (mount point
/// inside, key in the images, host path bound at restore, this host's node for that key). The
/// masked files of /proc are binds of /dev/null too; CRIU restores them from the same external.
pub fn dev_externals(cfg: &ContainerConfig) -> Result<Vec<(String, String, String)>> {
    let mut v: Vec<(String, String, String)> =
        crate::container::start::DEV_NODES.iter().map(|(n, _, _)| (format!("/dev/{n}"), format!("dev-{n}"), format!("/dev/{n}"))).collect();
    for b in crate::userns::devices::node_binds(&cfg.security.devices, Path::new("/dev"))? {
        let p = Path::new("/dev").join(&b.path).display().to_string();
        v.push((p.clone(), b.key, p));
    }
    Ok(v)
}

/// Host state made so far by a restore, undone in reverse on failure.
struct RestoreUndo<'a> {
    host: &'a Host,
    cfg: &'a ContainerConfig,
    mounted: bool,
    cgroup: Option<Cgroup>,
    net: Option<NetState>,
    /// A system container's systemd cgroup (v1), which CRIU makes.
    systemd_cgroup: Option<PathBuf>,
    /// Host ends of veth pairs made before CRIU ran.
    precreated: Vec<String>,
}

impl RestoreUndo<'_> {
    fn run(&mut self) {
        net::remove_precreated(&self.precreated);
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
            if let Err(e) = cg.destroy() {
                tracing::warn!("undo restore of {}: {e}", self.cfg.ctid);
            }
        }
        if let Some(d) = self.systemd_cgroup.take() {
            if let Err(e) = crate::sysenv::cgroup::remove_tree(&d) {
                tracing::warn!("undo restore of {}: {e}", self.cfg.ctid);
            }
        }
        if let Some(ns) = self.net.take() {
            if let Err(e) = net::teardown(self.host, &ns) {
                tracing::warn!("undo restore of {}: {e}", self.cfg.ctid);
            }
        }
        if self.mounted {
            if let Err(e) = crate::storage::unmount_root(self.host, self.cfg) {
                tracing::warn!("undo restore of {}: {e}", self.cfg.ctid);
            }
        }
        let _ = State::remove(self.host, &self.cfg.ctid);
    }
}

/// How long a stale outer veth (from a dump on this host) may take to disappear.
const STALE_VETH_WAIT: Duration = Duration::from_secs(10);

/// Restore a stopped container from a CRIU image directory made by [`checkpoint_to_dir`].
/// The images are only read (CRIU's log goes to [`Host::log_dir`]). Needs no single-threaded
/// caller (CRIU runs in its own process); the host is the calling thread's network namespace.
pub fn restore_from_dir(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, images_dir: &Path) -> Result<RestoreInfo> {
    restore_from_dir_with(host, lock, cfg, images_dir, true)
}

/// [`restore_from_dir`], announcing the container's addresses afterwards or not. A migration's
/// destination restores without: until the source commits, the network's neighbours must keep
/// sending to the source (which may yet run the container again); it announces at the commit.
pub fn restore_from_dir_with(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, images_dir: &Path, announce: bool) -> Result<RestoreInfo> {
    let t0 = Instant::now();
    let ct = lock.ctid().as_str();
    match status(host, lock.ctid())?.0 {
        Status::Running => {
            return Err(Error::already_running(
                ct,
                "restore",
                format!("container is already running; stop it first with `ferry stop {ct}` or checkpoint it"),
            ))
        }
        Status::Mounted => teardown(host, cfg, None)?,
        Status::Stopped => {}
    }
    if !images_dir.join("inventory.img").exists() {
        return Err(Error::ct(ct, "restore", format!("{} holds no CRIU checkpoint (no inventory.img)", images_dir.display())));
    }
    let meta = CheckpointMeta::load(images_dir)?;
    if let Some(m) = &meta {
        if m.ctid != ct {
            return Err(Error::ct(ct, "restore", format!("{} holds container {}, not {ct}", images_dir.display(), m.ctid)));
        }
    }
    net::migratable(cfg).map_err(|m| Error::ct(ct, "restore", m))?;
    let criu = Criu::new().map_err(|e| Error::ct(ct, "restore", e.to_string()))?;
    let veths = match &meta {
        Some(m) => m.veths.clone(),
        None => net::criu_veth_externals(cfg),
    };
    let cg = host.cgroup(lock.ctid())?;
    if cg.exists() && !cg.pids()?.is_empty() {
        return Err(Error::ct(ct, "restore", format!("cgroup {} still has processes {:?}; run `ferry stop {ct}` first", cg.rel(), cg.pids()?)));
    }

    // A system container comes back inside a new monitor, on a new console.
    let system = meta.as_ref().and_then(|m| m.system.clone());
    if let Some(sm) = &system {
        crate::sysenv::checkpoint::check_cgroup_mode(ct, sm, &cg)?;
    }
    let job = RestoreJob { host, cfg, images_dir, criu: &criu, veths: &veths, meta: meta.as_ref(), system: None };
    let res = match &system {
        Some(sm) => crate::sysenv::monitor::run(host, cfg, crate::container::start::MONITORED, "restore", |console| {
            restore_attempt(RestoreJob { system: Some((sm, console)), ..job }).map(|r| (r.clone(), r.0))
        }),
        None => restore_attempt(job),
    };
    match res {
        Ok((state, restore_ms, log)) => {
            if let (Some(n), true) = (&state.net_objects, announce) {
                let ns = state.netns("announce").ok();
                if let Err(e) = net::announce_container(n, ns.as_ref(), 1, Duration::from_millis(0)) {
                    tracing::warn!("container {ct}: announce after restore: {e}");
                }
            }
            Ok(RestoreInfo { state, restore_ms, total_ms: ms(t0.elapsed()), log })
        }
        Err(e) => Err(e),
    }
}

type SystemRestore<'a> = Option<(&'a crate::sysenv::checkpoint::SystemMeta, &'a crate::sysenv::monitor::Console)>;

/// What one restore works with.
#[derive(Clone, Copy)]
struct RestoreJob<'a> {
    host: &'a Host,
    cfg: &'a ContainerConfig,
    images_dir: &'a Path,
    criu: &'a Criu,
    veths: &'a [(String, String)],
    meta: Option<&'a CheckpointMeta>,
    system: SystemRestore<'a>,
}

/// One try at restoring: everything it made is removed again when it fails.
fn restore_attempt(job: RestoreJob<'_>) -> Result<(State, u64, PathBuf)> {
    let mut undo =
        RestoreUndo { host: job.host, cfg: job.cfg, mounted: false, cgroup: None, net: None, systemd_cgroup: None, precreated: Vec::new() };
    let res = restore_inner(job, &mut undo);
    if res.is_err() {
        undo.run();
    }
    res
}

fn restore_inner(job: RestoreJob<'_>, undo: &mut RestoreUndo<'_>) -> Result<(State, u64, PathBuf)> {
    let RestoreJob { host, cfg, images_dir, criu, veths, meta, system } = job;
    let ct = cfg.ctid.as_str();
    let t0 = Instant::now();
    let root = crate::storage::mount_root(host, cfg)?;
    undo.mounted = true;
    let t_mount = t0.elapsed();
    let resources = CheckpointMeta::restored_resources(meta, &cfg.resources);
    // The dumped processes come back with their own filters and capabilities; exec gives
    // what they had (the config's isolation for images that do not say).
    let isolation = match meta.and_then(|m| m.isolation.clone()) {
        Some(a) => a,
        None => crate::isolation::Applied::from_security(&cfg.security).map_err(|e| Error::ct(ct, "restore", e.to_string()))?,
    };
    let cg = prepare_cgroup(host, &ContainerConfig { resources: resources.clone(), ..cfg.clone() })?;
    undo.cgroup = Some(cg.clone());
    let t_cgroup = t0.elapsed();

    // A dump on this host leaves the old pair to die with its netns, asynchronously.
    for (_, outer) in veths {
        let t = Instant::now();
        while net::tools::link_exists(outer) {
            if t.elapsed() > STALE_VETH_WAIT {
                return Err(Error::ct(
                    ct,
                    "restore",
                    format!("host interface {outer} still exists; remove it (`ip link del {outer}`) if nothing uses it"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // An unprivileged container's user namespace comes back with the range its config has
    // now (the images may carry another host's); CRIU's restored tasks read the images.
    // The mapping the checkpoint was dumped with and the one this host gives the container.
    let (dumped_map, range) = (criu_image::dumped_map(images_dir)?, crate::storage::root_idmap(cfg)?);
    let userns_images = userns_images(cfg, images_dir, dumped_map, range)?;
    let criu_dir = userns_images.as_ref().map_or(images_dir, |d| d.path());
    // CRIU writes its log into the images directory; it is moved out right after.
    let mut r = RestoreOpts::new(criu_dir);
    r.log_file = format!("restore-{}.log", std::process::id());
    r.root = Some(root.clone());
    r.external = if isolation.kind.has_userns() {
        // In a user namespace CRIU moves pairs made here rather than creating them.
        let args = net::precreate_restore_pairs(veths)?;
        undo.precreated = veths.iter().map(|(_, o)| o.clone()).collect();
        args
    } else {
        veths.iter().map(|(i, o)| net::criu_external_arg(i, o)).collect()
    };
    r.join_cgroups = cg.procs_files();
    if isolation.kind.has_userns() {
        r.external_mounts = dev_externals(cfg)?.into_iter().map(|(_, key, host)| (key, host)).collect();
    }
    r.ext_unix_sk = meta.map(|m| m.ext_unix_sk).unwrap_or(false);
    r.rst_sibling = false;
    let mut systemd = None;
    // An unprivileged system container dumped under another range: its cgroups come back with
    // the dumping host's owners (`SystemdCgroup::shift_owners`).
    let mut reown = match (system.is_some(), dumped_map, range) {
        (true, Some(from), Some(to)) if from != to => Some((from, to)),
        _ => None,
    };
    if let Some((sm, console)) = system {
        let sd = crate::sysenv::cgroup::SystemdCgroup::on_host(&cg)?;
        undo.systemd_cgroup = Some(sd.dir.clone());
        sd.create(&cg)?;
        if let Some(map) = &range {
            sd.delegate(map)?;
        }
        r.join_cgroups = sd.criu_join(&cg);
        crate::sysenv::checkpoint::restore_options(sm, &sd, console, &mut r);
        systemd = Some(sd);
    }
    let mut net_state: Option<NetState> = None;
    let mut net_err: Option<Error> = None;
    let mut net_time = Duration::ZERO;
    let mut namespaces = None;
    let kind = isolation.kind;
    // Addresses or MACs the config changed since the dump (a clone's, or `set --save`).
    let readdress = meta.map(|m| net::Readdress::plan(cfg, &m.dumped_addresses())).unwrap_or_default();
    let t_criu = t0.elapsed();
    let restored = criu.restore_notify(&r, &mut |n| {
        tracing::debug!("container {ct}: criu notify {} at {} ms", n.script, ms(t0.elapsed()));
        // The restored tree is still CRIU's (not resumed) at post-restore: its namespaces are
        // the container's, recorded for exec before any of its code runs again.
        if n.script == "post-restore" && n.pid > 0 && namespaces.is_none() {
            namespaces = Some(crate::isolation::namespaces::record(n.pid, kind).map_err(|e| e.to_string())?);
        }
        // Before the tree runs again.
        if let (true, Some((from, to)), Some(sd)) = (n.script == "post-restore", reown.as_ref(), systemd.as_ref()) {
            sd.shift_owners(from, to).map_err(|e| e.to_string())?;
            reown = None;
        }
        if n.script == "post-restore" && n.pid > 0 && !veths.is_empty() && net_state.is_none() {
            let t = Instant::now();
            // The tree has not resumed: its netns is the one CRIU made.
            let res = net::CtNetns::of_new_process(n.pid)
                .and_then(|netns| net::after_restore(host, cfg, n.pid, &netns).map(|ns| (ns, netns)))
                .and_then(|(ns, netns)| {
                    if !readdress.is_empty() {
                        if let Err(e) = net::readdress(&ns, &netns, &readdress) {
                            let _ = net::teardown(host, &ns);
                            return Err(e);
                        }
                    }
                    Ok(ns)
                });
            net_time = t.elapsed();
            match res {
                Ok(ns) => net_state = Some(ns),
                Err(e) => {
                    let m = e.to_string();
                    net_err = Some(e);
                    return Err(m);
                }
            }
        }
        Ok(())
    });
    let log_in_images = criu_dir.join(&r.log_file);
    let log = keep_log(host, ct, &log_in_images, "restore.log");
    undo.net = net_state.clone();
    let done = match restored {
        Ok(d) => d,
        Err(e) => return Err(net_err.unwrap_or_else(|| criu_err(ct, "restore", e, &log_in_images, &log))),
    };
    if net_state.is_none() && !veths.is_empty() {
        // CRIU sent no post-restore (not CRIU 4.2): the tree runs already.
        let netns = net::CtNetns::of_new_process(done.pid)?;
        let ns = net::after_restore(host, cfg, done.pid, &netns)?;
        undo.net = Some(ns.clone());
        if !readdress.is_empty() {
            net::readdress(&ns, &netns, &readdress)?;
        }
        net_state = Some(ns);
    }
    if let (Some((from, to)), Some(sd)) = (reown.as_ref(), systemd.as_ref()) {
        // CRIU sent no post-restore: the tree runs already (the walk never follows a link).
        sd.shift_owners(from, to)?;
    }
    let namespaces = match namespaces {
        Some(n) => n,
        None => crate::isolation::namespaces::record(done.pid, kind)?,
    };
    let state = State {
        net_objects: net_state.clone(),
        resources: Some(resources),
        namespaces,
        isolation: Some(isolation),
        system: system.map(|(_, c)| crate::sysenv::SystemState {
            monitor_pid: std::process::id() as i32,
            console: c.pty.path.clone(),
            console_socket: c.socket.clone(),
            systemd_cgroup: systemd.as_ref().map(|s| s.dir.clone()).unwrap_or_default(),
        }),
        ..State::new(cfg.ctid.clone(), done.pid, &cg, root)
    };
    if !state.is_alive() {
        return Err(Error::ct(ct, "restore", format!("the restored init (pid {}) exited at once; see {}", done.pid, log.display())));
    }
    state.save(host)?;
    tracing::debug!(
        "container {ct}: restore took {} ms: mount {} ms, cgroup {} ms, criu from {} ms ({} ms of it network), done at {} ms",
        ms(t0.elapsed()),
        ms(t_mount),
        ms(t_cgroup - t_mount),
        ms(t_criu),
        ms(net_time),
        ms(done.elapsed)
    );
    undo.cgroup = None;
    undo.mounted = false;
    undo.net = None;
    undo.systemd_cgroup = None;
    undo.precreated.clear();
    Ok((state, ms(done.elapsed), log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_keeps_live_limits_unless_the_config_changed_since() {
        let saved = Resources { ram: Some(64 << 20), ..Default::default() };
        let live = Resources { ram: Some(96 << 20), cpumask: Some("0".into()), ..Default::default() };
        let meta = CheckpointMeta {
            ctid: "101".into(),
            veths: vec![],
            ext_unix_sk: false,
            criu_version: String::new(),
            summary: CheckpointSummary::default(),
            saved_resources: Some(saved.clone()),
            live_resources: Some(live.clone()),
            isolation: None,
            system: None,
        };
        assert_eq!(CheckpointMeta::restored_resources(Some(&meta), &saved), live);
        let changed = Resources { ram: Some(128 << 20), ..Default::default() };
        assert_eq!(CheckpointMeta::restored_resources(Some(&meta), &changed), changed);
        // Images written before ferry recorded limits: the config's.
        let old = CheckpointMeta { saved_resources: None, live_resources: None, ..meta };
        assert_eq!(CheckpointMeta::restored_resources(Some(&old), &saved), saved);
        assert_eq!(CheckpointMeta::restored_resources(None, &saved), saved);
        let json =
            r#"{"ctid":"1","veths":[],"ext_unix_sk":false,"criu_version":"","summary":{"processes":[],"tcp":[],"addresses":[],"memory_bytes":0}}"#;
        assert_eq!(serde_json::from_str::<CheckpointMeta>(json).unwrap().live_resources, None);
    }
}
