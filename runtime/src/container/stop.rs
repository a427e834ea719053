//! `stop`: SIGTERM to PID 1, a grace period, SIGKILL to whatever is left in the cgroup, then
//! every piece of host state removed (root mount, cgroup, network, state file).

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

/// Stop a running (or half-stopped, `mounted`) container.
pub fn stop(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, timeout: Duration) -> Result<()> {
    let ct = lock.ctid();
    let (st, state) = status(host, ct)?;
    if st == Status::Stopped {
        return Err(Error::ct(ct.as_str(), "stop", "container is not running"));
    }
    if let Some(state) = &state {
        // Passed-through devices must leave before the netns dies; record what is left.
        let mut net = state.net_objects.clone();
        if let Err(e) = hooks::net_hook_before_kill(&mut net) {
            tracing::warn!("{e}");
        }
        if net != state.net_objects {
            let _ = State { net_objects: net, ..state.clone() }.save(host);
        }
        let _ = kill(Pid::from_raw(state.pid), Signal::SIGTERM);
        wait_until(Instant::now() + timeout, || !state.is_alive());
    }
    teardown(host, cfg, state.as_ref())
}

/// Kill whatever remains, then remove the root mount, the cgroup, the host-side network and
/// the state. Safe to call on a container that is partly or wholly gone.
pub fn teardown(host: &Host, cfg: &ContainerConfig, state: Option<&State>) -> Result<()> {
    let ct = &cfg.ctid;
    let cg = match state {
        Some(s) => s.cgroup(),
        None => host.cgroup(ct)?,
    };
    if let Some(s) = state {
        let mut net = s.net_objects.clone();
        if let Err(e) = hooks::net_hook_before_kill(&mut net) {
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
    crate::storage::unmount_root(host, cfg)?;
    cg.destroy()?;
    hooks::net_hook_after_stop(host, cfg, state.and_then(|s| s.net_objects.as_ref()))?;
    State::remove(host, ct)
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
