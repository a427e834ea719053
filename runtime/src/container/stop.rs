//! `stop`: the halt signal to PID 1, a grace period (the container's `stop_timeout`, else
//! [`DEFAULT_STOP_TIMEOUT`]; `--timeout` for one call; none with `--fast`), SIGKILL to whatever
//! is left in the cgroup, then every piece of host state removed (root mount, cgroup,
//! network, state file). The container's stop script runs inside first, its umount scripts
//! before the root goes, its postumount scripts after.

use crate::actions::{self, Action};
use crate::cgroups::Cgroup;
use crate::config::ContainerConfig;
use crate::container::{status, Status};
use crate::error::{Error, Result};
use crate::hooks;
use crate::host::Host;
use crate::lock::ContainerLock;
use crate::state::State;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long `stop` waits for init to halt when neither the call nor the config says.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How `stop` ends a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Ask init to halt ([`halt_signal`]), wait (this long; None: the container's
    /// `stop_timeout`, else [`DEFAULT_STOP_TIMEOUT`]), then kill what is left.
    Halt(Option<Duration>),
    /// Kill at once (vzctl's `stop --fast`).
    Fast,
}

/// The grace period of a halt: the call's, else the config's, else the default.
pub fn stop_timeout(cfg: &ContainerConfig, asked: Option<Duration>) -> Duration {
    asked.or(cfg.boot.stop_timeout.map(Duration::from_secs)).unwrap_or(DEFAULT_STOP_TIMEOUT)
}

/// The signal (its number) that asks the container's init to halt: SIGRTMIN+3 for systemd,
/// SIGPWR for sysvinit, SIGUSR2 for BusyBox init, SIGTERM otherwise (`init_system`).
pub fn halt_signal(cfg: &ContainerConfig) -> i32 {
    crate::sysenv::halt_signal(cfg.init_system)
}

/// Stop a running (or half-stopped, `mounted`) container, waiting `timeout` after the halt
/// signal.
pub fn stop(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, timeout: Duration) -> Result<()> {
    stop_with(host, lock, cfg, Shutdown::Halt(Some(timeout)))
}

/// Stop a running (or half-stopped, `mounted`) container the way `how` says.
pub fn stop_with(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, how: Shutdown) -> Result<()> {
    let ct = lock.ctid();
    let (st, state) = status(host, ct)?;
    if st == Status::Stopped {
        return Err(Error::not_running(ct.as_str(), "stop"));
    }
    if let Some(state) = &state {
        if let Err(e) = actions::run_inside(host, cfg, Action::Stop) {
            tracing::warn!("{e}");
            eprintln!("ferry: warning: {e}");
        }
        // Passed-through devices must leave before the netns dies (from the netns ferry made,
        // wherever PID 1 went); record what is left.
        let mut net = state.net_objects.clone();
        let ns = netns_for_devices(state);
        if let Err(e) = hooks::net_hook_before_kill(&mut net, ns.as_ref()) {
            tracing::warn!("{e}");
        }
        if net != state.net_objects {
            let _ = State { net_objects: net, ..state.clone() }.save(host);
        }
        if let Shutdown::Halt(asked) = how {
            // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
            unsafe { libc::kill(state.pid, halt_signal(cfg)) };
            let halted = wait_until(Instant::now() + stop_timeout(cfg, asked), || !state.is_alive());
            if let (true, Some(sys)) = (halted, &state.system) {
                crate::sysenv::monitor::wait_console_drained(sys, state.pid, Duration::from_secs(2));
            }
        }
    }
    let cg = kill_all(host, cfg, state.as_ref())?;
    actions::run_on_host_or_warn(host, cfg, Action::Umount);
    release(host, cfg, state.as_ref(), &cg)?;
    actions::run_on_host_or_warn(host, cfg, Action::Postumount);
    Ok(())
}

/// Kill whatever remains, then remove the root mount, the cgroup, the host-side network and
/// the state. Safe to call on a container that is partly or wholly gone.
pub fn teardown(host: &Host, cfg: &ContainerConfig, state: Option<&State>) -> Result<()> {
    let cg = kill_all(host, cfg, state)?;
    release(host, cfg, state, &cg)
}

/// SIGKILL to PID 1 and everything in the cgroup; returns once they are gone.
fn kill_all(host: &Host, cfg: &ContainerConfig, state: Option<&State>) -> Result<Cgroup> {
    let ct = &cfg.ctid;
    let cg = match state {
        Some(s) => s.cgroup(),
        None => host.cgroup(ct)?,
    };
    if let Some(s) = state {
        let mut net = s.net_objects.clone();
        let ns = netns_for_devices(s);
        if let Err(e) = hooks::net_hook_before_kill(&mut net, ns.as_ref()) {
            tracing::warn!("{e}");
        }
        let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
    }
    cg.kill_all(Signal::SIGKILL, Duration::from_secs(10))?;
    if let Some(s) = state {
        if !wait_until(Instant::now() + Duration::from_secs(10), || !s.is_alive()) {
            return Err(Error::ct(ct.as_str(), "stop", format!("PID 1 ({}) did not exit after SIGKILL; check it with `ps`", s.pid)));
        }
    }
    Ok(cg)
}

/// The container's netns, when it has passed-through devices to move back from it.
fn netns_for_devices(state: &State) -> Option<crate::net::CtNetns> {
    if state.net_objects.as_ref().is_none_or(|n| n.moved_devs.is_empty()) {
        return None;
    }
    state.netns("stop").map_err(|e| tracing::warn!("{e}")).ok()
}

/// With its processes gone: the root mount, the cgroup, the host-side network, the state.
fn release(host: &Host, cfg: &ContainerConfig, state: Option<&State>, cg: &Cgroup) -> Result<()> {
    let ct = &cfg.ctid;
    crate::storage::unmount_root(host, cfg)?;
    cg.destroy()?;
    crate::sysenv::cgroup::remove_for(host, cfg, state)?;
    hooks::net_hook_after_stop(host, cfg, state.and_then(|s| s.net_objects.as_ref()))?;
    State::remove(host, ct)
}

/// Mount a stopped container's root for the admin (vzctl's `mount`), with its premount and
/// mount scripts; a failing script leaves it unmounted.
pub fn mount(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<std::path::PathBuf> {
    let ct = lock.ctid();
    match status(host, ct)?.0 {
        Status::Running => {
            return Err(Error::already_running(
                ct.as_str(),
                "mount",
                format!("container runs, so its root is mounted at {}", host.root_dir(ct).display()),
            ))
        }
        Status::Mounted => {
            return Err(Error::Mount {
                ctid: ct.to_string(),
                op: "mount",
                mounted: true,
                msg: format!("its root is mounted already at {}", host.root_dir(ct).display()),
            })
        }
        Status::Stopped => {}
    }
    actions::run_on_host(host, cfg, Action::Premount)?;
    let root = crate::storage::mount_root(host, cfg)?;
    if let Err(e) = actions::run_on_host(host, cfg, Action::Mount) {
        actions::run_on_host_or_warn(host, cfg, Action::Umount);
        let _ = crate::storage::unmount_root(host, cfg);
        return Err(e);
    }
    Ok(root)
}

/// Unmount a stopped container's root (vzctl's `umount`): umount scripts (a failing one keeps
/// it mounted), unmount, postumount scripts.
pub fn umount(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
    let ct = lock.ctid();
    match status(host, ct)?.0 {
        Status::Running => return Err(Error::already_running(ct.as_str(), "umount", format!("container runs; stop it with `ferry stop {ct}`"))),
        Status::Stopped => return Err(Error::Mount { ctid: ct.to_string(), op: "umount", mounted: false, msg: "its root is not mounted".into() }),
        Status::Mounted => {}
    }
    actions::run_on_host(host, cfg, Action::Umount)?;
    teardown(host, cfg, None)?;
    actions::run_on_host(host, cfg, Action::Postumount)
}

/// Poll `done` until it holds or `deadline` passes; true when it held. A process that obeys
/// a signal is usually gone within a millisecond or two, so the pauses start at 1 ms and
/// double up to 20 ms: a fixed 20 ms pause made every stop at least that slow.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_once_done_and_gives_up_at_the_deadline() {
        let mut n = 0;
        assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        let t = Instant::now();
        assert!(!wait_until(t + Duration::from_millis(30), || false));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
