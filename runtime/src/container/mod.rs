//! A container's life cycle on one host: create, start, stop, destroy, status, exec, enter,
//! and the live settings (hostname, passwords).
//!
//! Functions that change a container take its [`ContainerLock`] as proof the caller holds it.
//! Everything here is synchronous and must run in a single-threaded process (start clones,
//! exec/enter call setns).

mod child;
mod create;
pub(crate) mod exec;
pub mod restore;
mod set;
pub mod set_plan;
pub(crate) mod start;
mod stop;
pub mod summary;
pub(crate) mod terminal;

pub use create::{check_hostname, check_resources, create, destroy, CreateOptions, SYSTEM_STOP_TIMEOUT};
pub use exec::{enter, enter_with, exec, exec_detached, exec_failure_code, run_in_container};
pub use restore::{
    checkpoint_to_dir, checkpoint_to_dir_frozen, restore_from_dir, thaw_if_frozen, CheckpointInfo, CheckpointMeta, CheckpointOpts, RestoreInfo,
};
pub use set::{set_diskspace_stopped, set_dns, set_hostname_live, set_ips_live, set_resources_live, set_userpasswd, update_passwd_files};
pub use start::{configure_cgroup, limit_context, prepare_cgroup, start, CONSOLE_LOG};
pub use stop::{halt_signal, mount, stop, stop_timeout, stop_with, teardown, umount, Shutdown, DEFAULT_STOP_TIMEOUT};
pub use summary::CheckpointSummary;

use crate::cgroups::CgroupStats;
use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::ContainerLock;
use crate::state::State;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// PID 1 alive.
    Running,
    /// Not running but its root is still mounted (a failed stop, or mounted by hand).
    Mounted,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Mounted => "mounted",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// clone/fork and setns need a single-threaded caller: a fork of a threaded process may
/// deadlock on locks other threads held, and setns into a mount namespace refuses threads.
pub fn ensure_single_threaded(ct: &Ctid, op: &'static str) -> Result<()> {
    let count = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|t| t.trim().parse::<u32>().ok()).unwrap_or(1)
    };
    // A helper thread that was just joined may still be counted for a moment.
    let t0 = std::time::Instant::now();
    let mut threads = count();
    while threads > 1 && t0.elapsed() < std::time::Duration::from_millis(200) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        threads = count();
    }
    if threads > 1 {
        return Err(Error::ct(
            ct.as_str(),
            op,
            format!("must run in a single-threaded process (this one has {threads} threads); run the `ferry` binary for it or call it before starting threads"),
        ));
    }
    Ok(())
}

/// Load a container's config, saying how to find valid CTIDs when it does not exist.
pub fn load_config(host: &Host, ct: &Ctid) -> Result<ContainerConfig> {
    let p = host.config_path(ct);
    if !p.exists() {
        return Err(Error::not_found(
            ct.as_str(),
            "load",
            format!("no such container (no {}); `ferry list -a` shows the containers of this host", p.display()),
        ));
    }
    ContainerConfig::load(&p)
}

/// The container's status and, when running, its state.
pub fn status(host: &Host, ct: &Ctid) -> Result<(Status, Option<State>)> {
    if let Some(st) = State::load(host, ct)? {
        if st.is_alive() {
            return Ok((Status::Running, Some(st)));
        }
    }
    if crate::storage::is_mounted(&host.root_dir(ct)) {
        return Ok((Status::Mounted, None));
    }
    Ok((Status::Stopped, None))
}

/// The running state, or an error that says the container is not running.
pub fn running_state(host: &Host, ct: &Ctid, op: &'static str) -> Result<State> {
    match status(host, ct)? {
        (Status::Running, Some(st)) => Ok(st),
        _ => Err(Error::not_running(ct.as_str(), op)),
    }
}

/// The limits a container has now: while it runs, what it was started or restored with plus
/// every live `set` since (kept in its state); else its config's.
pub fn effective_resources(cfg: &ContainerConfig, state: Option<&State>) -> crate::config::Resources {
    state.and_then(|s| s.resources.clone()).unwrap_or_else(|| cfg.resources.clone())
}

/// Usage of a running container (None when stopped).
pub fn stats(st: &State) -> Result<CgroupStats> {
    st.cgroup().stats()
}

/// Stop (when running, the way `how` says) and start again, under one lock.
pub fn restart(host: &Host, lock: &ContainerLock, how: Shutdown) -> Result<State> {
    let cfg = load_config(host, lock.ctid())?;
    if status(host, lock.ctid())?.0 != Status::Stopped {
        stop_with(host, lock, &cfg, how)?;
    }
    start(host, lock, &cfg)
}

/// Usage of a running container next to its limits, for `ferry status` and `ferry list -o`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// CPU time of all its processes, seconds.
    pub cputime: f64,
    /// Average CPU use since PID 1 started, percent of one CPU (cputime / time running).
    pub cpu_percent: f64,
    pub memory: u64,
    pub swap: u64,
    pub numproc: u64,
    /// Open file descriptors of all its processes together.
    pub numfiles: u64,
    /// Bytes used on its disk backend (None for a plain directory: no cheap number).
    pub disk_used: Option<u64>,
    /// The disk limit in force (image size, qgroup limit).
    pub disk_limit: Option<u64>,
    pub io_read: u64,
    pub io_write: u64,
}

/// Seconds since boot, from /proc/uptime.
fn uptime_secs() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()
}

/// VmRSS of a process in bytes (0 when it is gone).
fn resident_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// Seconds since the running container's PID 1 started (its uptime, as vzlist's).
pub fn uptime(st: &State) -> Option<f64> {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    uptime_secs().map(|u| (u - st.start_time as f64 / hz).max(0.0))
}

/// Read the usage of a running container.
pub fn usage(host: &Host, cfg: &ContainerConfig, st: &State) -> Result<Usage> {
    let cg = st.cgroup();
    let mut s = cg.stats()?;
    let pids = cg.pids().unwrap_or_default();
    if !cg.controllers().iter().any(|c| c == "memory") {
        // No memory controller (cgroup mode v2 on a hybrid host): the resident memory of its
        // processes instead, for display only (shared pages count once per process).
        s.memory_bytes = pids.iter().map(|p| resident_bytes(*p)).sum();
    }
    let cputime = s.cputime_ns as f64 / 1e9;
    let running = uptime(st).unwrap_or(0.0);
    let cpu_percent = if running > 0.0 { cputime / running * 100.0 } else { 0.0 };
    let disk = crate::storage::backends::disk_usage(cfg.storage.kind, host, &cfg.ctid).ok().flatten();
    Ok(Usage {
        cputime,
        cpu_percent,
        memory: s.memory_bytes,
        swap: s.swap_bytes,
        numproc: s.numproc,
        numfiles: crate::cgroups::nofile::open_files(&pids),
        disk_used: disk.map(|d| d.used),
        disk_limit: disk.and_then(|d| d.limit),
        io_read: s.io_read_bytes,
        io_write: s.io_write_bytes,
    })
}
