//! System containers: a container whose PID 1 is a whole init system (systemd), and what it
//! gets beyond an application container. docs/runtime.md ("System containers") has the table;
//! in short:
//!
//! - a monitor process ([`monitor`]) as PID 1's parent, holding the other end of the
//!   container's `/dev/console` pty ([`console`]): it appends the console to the console log,
//!   serves `ferry console --attach`, and learns from PID 1's wait status whether the
//!   container asked to reboot (SIGHUP) or to halt (SIGINT), starting it again on a reboot;
//! - the API file systems systemd expects mounted before it runs ([`child`]): tmpfs on `/run`,
//!   `/run/lock` and `/tmp`, `/run/systemd/container`, a per-container `/etc/machine-id`;
//! - a cgroup namespace with the container's own cgroup subtree at `/sys/fs/cgroup`, writable
//!   by it ([`cgroup`]): on v1 hosts the `name=systemd` hierarchy writable and the controller
//!   hierarchies read-only, as LXC does; on v2 the container's cgroup delegated;
//! - one capability beyond its kind's defaults, [`SYSTEM_CAPS`]: CAP_SYS_BOOT, whose only use
//!   inside a pid namespace is to end that namespace's init with the reboot reason.
//!
//! What systemd does *not* get is CAP_SYS_ADMIN: without it systemd runs its services without
//! the mount, UTS, user and network namespaces their units ask for (it says "assuming
//! containerized execution" and goes on), which is also what lets CRIU dump the booted system
//! ([`checkpoint`]).
//!
//! Kept apart from `container/` so that start, stop and restore only call in here.

pub mod cgroup;
pub mod checkpoint;
pub mod child;
pub mod console;
pub mod detect;
pub mod monitor;

use crate::config::{ContainerConfig, InitSystem, Security};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Capabilities a system container gets beyond its kind's defaults, each with the reason.
pub const SYSTEM_CAPS: &[(&str, &str)] = &[(
    "SYS_BOOT",
    "reboot(2) in a pid namespace other than the host's only ends that namespace's init, with SIGHUP for a reboot and SIGINT for a \
     halt: the monitor reads which one from PID 1's wait status",
)];

/// Capabilities of its kind's defaults a system container does not get, each with the reason
/// (only the unprivileged kind's defaults hold them; the config may still add them).
pub const SYSTEM_WITHHELD: &[(&str, &str)] = &[(
    "SYS_ADMIN",
    "with it systemd runs services in mount, UTS, IPC and network namespaces of their own (PrivateTmp=, ProtectSystem=, \
     ProtectHostname=, ...), which CRIU cannot checkpoint nested in a container; without it systemd says \"assuming \
     containerized execution\" and runs them in the container's own, as in a privileged container",
)];

/// Whether `cfg` describes a system container (its PID 1 is systemd).
pub fn is_system(cfg: &ContainerConfig) -> bool {
    cfg.init_system == InitSystem::Systemd
}

/// The isolation settings a container starts with: its config's, plus [`SYSTEM_CAPS`] for a
/// system container unless the config drops them, and without [`SYSTEM_WITHHELD`] and (in a
/// user namespace) the host-only capabilities unless the config adds them. Those grant nothing
/// in a user namespace, but systemd's `ConditionCapability=` reads the bounding set: with
/// SYS_RAWIO there, it would try to mount debugfs and tracefs and fail (LXC drops them too).
pub fn security(cfg: &ContainerConfig) -> Security {
    let mut sec = cfg.security.clone();
    if is_system(cfg) {
        let named = |l: &Vec<String>, cap: &str| l.iter().any(|c| c.trim_start_matches("CAP_").eq_ignore_ascii_case(cap));
        for (cap, _) in SYSTEM_CAPS {
            if !named(&sec.cap_add, cap) && !named(&sec.cap_drop, cap) {
                sec.cap_add.push(cap.to_string());
            }
        }
        let host_only = crate::capabilities::HOST_ONLY.iter().filter(|_| sec.kind.has_userns());
        let defaults = crate::capabilities::kind_defaults(sec.kind);
        for (cap, _) in SYSTEM_WITHHELD.iter().chain(host_only) {
            if defaults.contains(cap) && !named(&sec.cap_add, cap) && !named(&sec.cap_drop, cap) {
                sec.cap_drop.push(cap.to_string());
            }
        }
    }
    sec
}

/// The signal (its number: systemd's is a real-time one) that asks `init` to halt.
pub fn halt_signal(init: InitSystem) -> i32 {
    match init {
        // systemd: SIGRTMIN+3 starts halt.target; SIGTERM only makes it re-execute itself.
        InitSystem::Systemd => libc::SIGRTMIN() + 3,
        // sysvinit: SIGPWR runs the powerfail/powerwait entries of /etc/inittab; SIGINT would
        // run ctrlaltdel, a reboot on Debian.
        InitSystem::Sysvinit => libc::SIGPWR,
        // BusyBox init: SIGUSR2 powers off (SIGUSR1 halts, SIGTERM reboots).
        InitSystem::Busybox => libc::SIGUSR2,
        InitSystem::None => libc::SIGTERM,
    }
}

/// How PID 1 ended, from its wait status: what the monitor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitExit {
    /// reboot(2) with RESTART inside (the kernel killed init with SIGHUP): start it again.
    Reboot,
    /// reboot(2) with HALT or POWER_OFF inside (SIGINT), or init exited by itself.
    Halt,
    /// Killed by anything else (a stop's SIGKILL, CRIU after a dump): someone else's doing.
    Killed(i32),
}

impl InitExit {
    /// Classify a wait status (signal number when killed, else None).
    pub fn from_signal(sig: Option<i32>) -> InitExit {
        match sig {
            Some(libc::SIGHUP) => InitExit::Reboot,
            Some(libc::SIGINT) | None => InitExit::Halt,
            Some(s) => InitExit::Killed(s),
        }
    }
}

/// What the state of a running system container records besides the common fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemState {
    /// The monitor process (PID 1's parent).
    pub monitor_pid: i32,
    /// The host path of the console pty's peer bound at the container's /dev/console.
    pub console: PathBuf,
    /// Its attach socket.
    pub console_socket: PathBuf,
    /// The cgroup directory systemd owns (`sysenv::cgroup::SystemdCgroup`): v1 the container's
    /// cgroup in the `name=systemd` hierarchy, v2 the `payload` child of the container's.
    pub systemd_cgroup: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_signals_per_init() {
        assert_eq!(halt_signal(InitSystem::Systemd), libc::SIGRTMIN() + 3);
        assert_eq!(halt_signal(InitSystem::Sysvinit), libc::SIGPWR);
        assert_eq!(halt_signal(InitSystem::Busybox), libc::SIGUSR2);
        assert_eq!(halt_signal(InitSystem::None), libc::SIGTERM);
    }

    #[test]
    fn system_containers_get_sys_boot_unless_dropped() {
        let mut cfg = ContainerConfig::new(crate::Ctid::new("1").unwrap());
        assert!(security(&cfg).cap_add.is_empty(), "an application container gets nothing more");
        cfg.init_system = InitSystem::Systemd;
        assert_eq!(security(&cfg).cap_add, vec!["SYS_BOOT"]);
        cfg.security.cap_drop.push("sys_boot".into());
        assert!(security(&cfg).cap_add.is_empty(), "the admin's drop wins");
        let a = crate::isolation::Applied::from_security(&security(&cfg)).unwrap();
        assert!(!a.capabilities.contains(&"SYS_ADMIN".to_string()));
    }

    #[test]
    fn unprivileged_system_containers_go_without_sys_admin_and_the_host_only_ones() {
        let mut cfg = ContainerConfig::new(crate::Ctid::new("1").unwrap());
        cfg.security.kind = crate::config::ContainerKind::Unprivileged;
        let app = crate::isolation::Applied::from_security(&security(&cfg)).unwrap();
        assert!(app.capabilities.contains(&"SYS_ADMIN".to_string()), "an application container keeps its kind's set");
        cfg.init_system = InitSystem::Systemd;
        let sec = security(&cfg);
        let a = crate::isolation::Applied::from_security(&sec).unwrap();
        for gone in ["SYS_ADMIN", "SYS_RAWIO", "SYS_MODULE", "SYS_TIME", "MKNOD"] {
            assert!(!a.capabilities.contains(&gone.to_string()), "{gone} kept: {:?}", a.capabilities);
        }
        for kept in ["SYS_BOOT", "NET_ADMIN", "SYS_RESOURCE", "CHOWN", "SETUID"] {
            assert!(a.capabilities.contains(&kept.to_string()), "{kept} lost: {:?}", a.capabilities);
        }
        // The admin's add wins.
        cfg.security.cap_add.push("SYS_ADMIN".into());
        assert!(crate::isolation::Applied::from_security(&security(&cfg)).unwrap().capabilities.contains(&"SYS_ADMIN".to_string()));
    }

    #[test]
    fn exits() {
        assert_eq!(InitExit::from_signal(Some(libc::SIGHUP)), InitExit::Reboot);
        assert_eq!(InitExit::from_signal(Some(libc::SIGINT)), InitExit::Halt);
        assert_eq!(InitExit::from_signal(None), InitExit::Halt);
        assert_eq!(InitExit::from_signal(Some(libc::SIGKILL)), InitExit::Killed(libc::SIGKILL));
    }
}
