//! `set`'s decisions, after vzctl: which changes a running or a stopped container takes live
//! and which only with `--save`, refused before anything changes; the live limits and
//! addresses applied all or nothing; and what the saved config keeps. The command line parses
//! the values and prints; the live changes themselves are behind [`LiveSet`] so that the
//! all-or-nothing logic has unit tests.

use crate::config::{ContainerConfig, ContainerKind, NetConfig, Resources};
use crate::ctid::Ctid;
use crate::error::Result;
use crate::host::Host;
use crate::state::State;
use std::net::IpAddr;

/// What a `set` asks to change, by kind (the values are the caller's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub hostname: bool,
    pub userpasswd: bool,
    /// Capabilities, seccomp, features or devices (next start).
    pub security: bool,
    /// Interfaces, passed-through devices or the uplink (next start).
    pub net_next_start: bool,
    /// venet addresses added or removed.
    pub addresses: bool,
    pub limits: bool,
    /// Name, description, boot settings or the stop timeout (the config only).
    pub saved_only: bool,
    /// Name servers or search domains.
    pub dns: bool,
    /// `--save`: persist in the config.
    pub save: bool,
}

/// A `set` that cannot be done as asked; nothing was changed. The command line's usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {ctid}: set: {msg}")]
pub struct Refused {
    pub ctid: String,
    pub msg: &'static str,
}

impl Asked {
    fn nothing(&self) -> bool {
        let Asked { hostname, userpasswd, security, net_next_start, addresses, limits, saved_only, dns, save: _ } = *self;
        !(hostname || userpasswd || security || net_next_start || addresses || limits || saved_only || dns)
    }

    /// vzctl's rules: whether this `set` can be done on a container that runs or not.
    pub fn check(&self, ct: &Ctid, running: bool) -> std::result::Result<(), Refused> {
        let refuse = |msg| Err(Refused { ctid: ct.to_string(), msg });
        if self.nothing() {
            return refuse("nothing to change; see `ferry set --help`");
        }
        if self.net_next_start && !self.save {
            return refuse("--netif, --netif_add, --netif-del, --netdev-add, --netdev-del and --uplink take effect at the next start; add --save");
        }
        if self.saved_only && !self.save {
            return refuse("--name, --description, --onboot, --bootorder and --stop-timeout are kept in the config only; add --save");
        }
        if (self.addresses || self.limits) && !running && !self.save {
            return refuse("container is not running, so addresses and limits without --save change nothing; add --save");
        }
        if self.security && !self.save {
            return refuse(
                "capabilities, seccomp, features and devices cannot change in a running container; add --save (they take effect on the next start)",
            );
        }
        if self.hostname && !running && !self.save {
            return refuse("container is not running, so --hostname without --save changes nothing; add --save");
        }
        Ok(())
    }
}

/// The kind (privileged or unprivileged) changes only while the container is stopped: its ID
/// range, root mount and namespaces are those it started with.
pub fn check_kind_change(ct: &Ctid, from: ContainerKind, to: Option<ContainerKind>, stopped: bool) -> Result<()> {
    if to.is_some_and(|k| k != from) && !stopped {
        return Err(crate::error::Error::already_running(
            ct.as_str(),
            "set",
            format!("--userns changes what container root is on the host, so only while it is stopped: `ferry stop {ct}` first; nothing was changed"),
        ));
    }
    Ok(())
}

/// The addresses a running container gains and loses: those asked for that it has not, and
/// those asked away that it has.
pub fn address_changes(live: &[IpAddr], add: &[IpAddr], del: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    (add.iter().filter(|a| !live.contains(a)).copied().collect(), del.iter().filter(|d| live.contains(d)).copied().collect())
}

/// The live changes of a running container that `set` makes.
pub trait LiveSet {
    /// Change the limits of the container `cfg` (holding those in force) to `new`.
    fn set_resources(&self, cfg: &ContainerConfig, st: &State, new: &Resources) -> Result<()>;
    /// Add and remove venet addresses (`cfg` holds the new network config).
    fn set_ips(&self, cfg: &ContainerConfig, st: &mut State, add: &[IpAddr], del: &[IpAddr]) -> Result<()>;
    fn save_state(&self, st: &State) -> Result<()>;
}

/// The real live changes, on this host.
pub struct HostLiveSet<'a>(pub &'a Host);

impl LiveSet for HostLiveSet<'_> {
    fn set_resources(&self, cfg: &ContainerConfig, st: &State, new: &Resources) -> Result<()> {
        super::set_resources_live(self.0, cfg, st, new)
    }

    fn set_ips(&self, cfg: &ContainerConfig, st: &mut State, add: &[IpAddr], del: &[IpAddr]) -> Result<()> {
        super::set_ips_live(self.0, cfg, st, add, del)
    }

    fn save_state(&self, st: &State) -> Result<()> {
        st.save(self.0)
    }
}

/// What a running container's live `set` changes: its limits (from those in force to `new`)
/// and its addresses (with the network config `net`).
pub struct LiveChange<'a> {
    pub in_force: &'a Resources,
    pub new: &'a Resources,
    pub net: &'a NetConfig,
    pub ip_add: &'a [IpAddr],
    pub ip_del: &'a [IpAddr],
}

/// Apply `change` to the running container `cfg` (its state `st`), all or nothing: the limits
/// first, then the addresses; when the addresses fail, the limits go back to those in force.
/// The state records the limits in force, for the next `set`, `list` and a checkpoint.
pub fn apply_live(ops: &dyn LiveSet, cfg: &ContainerConfig, st: &mut State, change: &LiveChange<'_>) -> Result<()> {
    let live_cfg = ContainerConfig { resources: change.in_force.clone(), ..cfg.clone() };
    let res_changed = change.new != change.in_force;
    if res_changed {
        ops.set_resources(&live_cfg, st, change.new)?;
        st.resources = Some(change.new.clone());
    }
    if !change.ip_add.is_empty() || !change.ip_del.is_empty() {
        let ip_cfg = ContainerConfig { net: change.net.clone(), ..live_cfg };
        if let Err(e) = ops.set_ips(&ip_cfg, st, change.ip_add, change.ip_del) {
            if res_changed {
                let applied = ContainerConfig { resources: change.new.clone(), ..cfg.clone() };
                if let Err(back) = ops.set_resources(&applied, st, change.in_force) {
                    tracing::warn!("container {}: putting the old limits back: {back}", cfg.ctid);
                }
                st.resources = Some(change.in_force.clone());
            }
            let _ = ops.save_state(st);
            return Err(e);
        }
    }
    if res_changed {
        ops.save_state(st)?;
    }
    Ok(())
}

/// Whether a live `set` without `--save` must still save the disk limit: the disk backend
/// keeps the new size (an image cannot shrink back at the next start), so the config must say
/// so too.
pub fn disk_limit_to_save(cfg: &ContainerConfig, new_live: &Resources, running: bool, save: bool) -> bool {
    running && !save && new_live.diskspace != cfg.resources.diskspace
}

/// The limits `--save` writes: those asked of the config's, with the disk limit of a running
/// container the backend's (one, whatever was saved before).
pub fn saved_resources(new_saved: &Resources, new_live: &Resources, running: bool) -> Resources {
    let mut r = new_saved.clone();
    if running {
        r.diskspace = new_live.diskspace;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::Mutex;

    fn ct() -> Ctid {
        Ctid::new("101").unwrap()
    }

    #[test]
    fn the_kind_changes_only_while_stopped() {
        let (p, u) = (ContainerKind::Privileged, ContainerKind::Unprivileged);
        let e = check_kind_change(&ct(), p, Some(u), false).unwrap_err();
        assert!(matches!(e, Error::AlreadyRunning { .. }), "{e}");
        assert!(e.to_string().contains("ferry stop 101"), "{e}");
        check_kind_change(&ct(), p, Some(u), true).unwrap();
        check_kind_change(&ct(), p, Some(p), false).unwrap();
        check_kind_change(&ct(), u, None, false).unwrap();
    }

    #[test]
    fn vzctl_rules_refuse_what_would_change_nothing_or_wait_for_a_restart() {
        let refused = |a: Asked, running| a.check(&ct(), running).unwrap_err().to_string();
        assert!(refused(Asked::default(), true).contains("nothing to change"));
        assert!(refused(Asked { save: true, ..Default::default() }, true).contains("nothing to change"));
        assert!(refused(Asked { net_next_start: true, ..Default::default() }, true).contains("--uplink take effect at the next start"));
        assert!(refused(Asked { saved_only: true, ..Default::default() }, true).contains("kept in the config only"));
        for asked in [Asked { addresses: true, ..Default::default() }, Asked { limits: true, ..Default::default() }] {
            assert!(refused(asked, false).contains("addresses and limits without --save change nothing"));
            asked.check(&ct(), true).expect("live on a running container");
            Asked { save: true, ..asked }.check(&ct(), false).expect("saved for a stopped one");
        }
        assert!(refused(Asked { security: true, ..Default::default() }, true).contains("add --save (they take effect on the next start)"));
        Asked { security: true, save: true, ..Default::default() }.check(&ct(), true).unwrap();
        assert!(refused(Asked { hostname: true, ..Default::default() }, false).contains("--hostname without --save"));
        Asked { hostname: true, ..Default::default() }.check(&ct(), true).unwrap();
        // Passwords and name servers are written into the container's files at once.
        Asked { userpasswd: true, dns: true, ..Default::default() }.check(&ct(), false).unwrap();
        let e = refused(Asked { limits: true, ..Default::default() }, false);
        assert!(e.starts_with("container 101: set: "), "{e}");
    }

    #[test]
    fn address_changes_skip_what_is_already_so() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let live = [ip("198.18.0.1"), ip("198.18.0.2")];
        let (add, del) = address_changes(&live, &[ip("198.18.0.1"), ip("198.18.0.3")], &[ip("198.18.0.2"), ip("198.18.0.9")]);
        assert_eq!(add, [ip("198.18.0.3")]);
        assert_eq!(del, [ip("198.18.0.2")]);
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        /// Limits from (the config's) to (asked).
        Resources(Option<u64>, Option<u64>),
        Ips(usize, usize),
        SaveState(Option<u64>),
    }

    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<Call>>,
        fail_ips: bool,
        fail_resources: bool,
    }

    impl LiveSet for Recording {
        fn set_resources(&self, cfg: &ContainerConfig, _: &State, new: &Resources) -> Result<()> {
            self.calls.lock().unwrap().push(Call::Resources(cfg.resources.numproc, new.numproc));
            if self.fail_resources {
                return Err(Error::Cgroup("pids.max: no".into()));
            }
            Ok(())
        }
        fn set_ips(&self, _: &ContainerConfig, _: &mut State, add: &[IpAddr], del: &[IpAddr]) -> Result<()> {
            self.calls.lock().unwrap().push(Call::Ips(add.len(), del.len()));
            if self.fail_ips {
                return Err(Error::Net("198.18.0.3 is in use".into()));
            }
            Ok(())
        }
        fn save_state(&self, st: &State) -> Result<()> {
            self.calls.lock().unwrap().push(Call::SaveState(st.resources.as_ref().and_then(|r| r.numproc)));
            Ok(())
        }
    }

    fn state() -> State {
        serde_json::from_value(serde_json::json!({
            "ctid": "101", "pid": 1, "start_time": 1, "cgroup_mode": "v1", "cgroup": "ferry/101", "root_mount": "/r"
        }))
        .unwrap()
    }

    fn limits(numproc: u64) -> Resources {
        Resources { numproc: Some(numproc), ..Default::default() }
    }

    fn run(ops: &Recording, in_force: u64, new: u64, add: usize) -> (Result<()>, State) {
        let cfg = ContainerConfig::new(ct());
        let mut st = state();
        st.resources = Some(limits(in_force));
        let adds: Vec<IpAddr> = (0..add).map(|i| IpAddr::from([198, 18, 0, 10 + i as u8])).collect();
        let (in_force, new) = (limits(in_force), limits(new));
        let change = LiveChange { in_force: &in_force, new: &new, net: &cfg.net, ip_add: &adds, ip_del: &[] };
        (apply_live(ops, &cfg, &mut st, &change), st)
    }

    #[test]
    fn live_limits_and_addresses_are_applied_and_recorded() {
        let ops = Recording::default();
        let (r, st) = run(&ops, 100, 200, 1);
        r.unwrap();
        assert_eq!(*ops.calls.lock().unwrap(), [Call::Resources(Some(100), Some(200)), Call::Ips(1, 0), Call::SaveState(Some(200))]);
        assert_eq!(st.resources, Some(limits(200)));

        // Nothing asked of the limits: no cgroup write and no state to save.
        let ops = Recording::default();
        run(&ops, 100, 100, 1).0.unwrap();
        assert_eq!(*ops.calls.lock().unwrap(), [Call::Ips(1, 0)]);
    }

    #[test]
    fn addresses_that_fail_take_the_new_limits_back() {
        let ops = Recording { fail_ips: true, ..Default::default() };
        let (r, st) = run(&ops, 100, 200, 1);
        assert!(r.unwrap_err().to_string().contains("198.18.0.3 is in use"));
        assert_eq!(
            *ops.calls.lock().unwrap(),
            [Call::Resources(Some(100), Some(200)), Call::Ips(1, 0), Call::Resources(Some(200), Some(100)), Call::SaveState(Some(100))]
        );
        assert_eq!(st.resources, Some(limits(100)), "the state records limits no longer in force");
    }

    #[test]
    fn limits_refused_change_nothing_else() {
        let ops = Recording { fail_resources: true, ..Default::default() };
        let (r, st) = run(&ops, 100, 200, 1);
        assert!(r.unwrap_err().to_string().contains("pids.max"));
        assert_eq!(*ops.calls.lock().unwrap(), [Call::Resources(Some(100), Some(200))]);
        assert_eq!(st.resources, Some(limits(100)));
    }

    #[test]
    fn the_disk_limit_is_the_backends() {
        let mut cfg = ContainerConfig::new(ct());
        cfg.resources.diskspace = Some(1 << 30);
        let bigger = Resources { diskspace: Some(2 << 30), ..Default::default() };
        assert!(disk_limit_to_save(&cfg, &bigger, true, false));
        assert!(!disk_limit_to_save(&cfg, &bigger, true, true), "--save saves it anyway");
        assert!(!disk_limit_to_save(&cfg, &bigger, false, false));
        assert!(!disk_limit_to_save(&cfg, &cfg.resources, true, false));
        let saved = Resources { diskspace: Some(3 << 30), numproc: Some(5), ..Default::default() };
        assert_eq!(saved_resources(&saved, &bigger, true), Resources { diskspace: Some(2 << 30), numproc: Some(5), ..Default::default() });
        assert_eq!(saved_resources(&saved, &bigger, false), saved);
    }
}
