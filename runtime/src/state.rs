//! The run state of a started container: `<run>/<CTID>/state.json`, written atomically.
//! A state file alone does not mean "running": PID 1 must still be alive, not a zombie, and
//! have the start time recorded (else its pid was reused).

use crate::cgroups::CgroupMode;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::proc_stat::proc_stat;
use crate::util::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub ctid: Ctid,
    /// PID 1 of the container, as seen from the host.
    pub pid: i32,
    /// Field 22 of /proc/PID/stat (clock ticks after boot) when PID 1 started.
    pub start_time: u64,
    pub cgroup_mode: CgroupMode,
    /// The cgroupfs directory `cgroup` is relative to (the v1 hierarchies' parent, or the
    /// cgroup2 mount). Absent in states written before cgroup modes could be chosen:
    /// /sys/fs/cgroup then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<PathBuf>,
    /// Relative cgroup path under each hierarchy's root.
    pub cgroup: String,
    /// The root mount made in the host mount namespace.
    pub root_mount: PathBuf,
    /// Host-side network objects made for it (veths, routes, proxy entries, filter chains,
    /// moved devices): exactly what stop removes. None when it has no networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_objects: Option<crate::net::NetState>,
    /// The limits in force: the config's at start or restore, then each live `set` (saved or
    /// not). None in states written before ferry kept them (the config's limits hold then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::config::Resources>,
    /// The namespaces ferry made for it, by identity (what exec may join).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<crate::isolation::namespaces::NsId>,
    /// The isolation it runs with (what exec gives a new process). None in states written
    /// before ferry kept it (the config's holds then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::isolation::Applied>,
    /// A system container's monitor, console and systemd cgroup (None for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::sysenv::SystemState>,
}

impl State {
    /// The state of a container whose PID 1 is `pid` (start time read now; 0 if it is gone).
    pub fn new(ctid: Ctid, pid: i32, cg: &crate::cgroups::Cgroup, root_mount: PathBuf) -> State {
        State {
            ctid,
            pid,
            start_time: proc_stat(pid).map(|s| s.start_time).unwrap_or(0),
            cgroup_mode: cg.mode(),
            cgroup_root: Some(cg.root().to_path_buf()),
            cgroup: cg.rel().to_string(),
            root_mount,
            net_objects: None,
            resources: None,
            namespaces: Vec::new(),
            isolation: None,
            system: None,
        }
    }

    pub fn load(host: &Host, ct: &Ctid) -> Result<Option<State>> {
        let p = host.state_path(ct);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                Error::ct(ct.as_str(), "read state", format!("{}: {e}; stop the container with `ferry stop {ct}` to reset it", p.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read state", p, e)),
        }
    }

    pub fn save(&self, host: &Host) -> Result<()> {
        let data = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomic(&host.state_path(&self.ctid), &data)
    }

    pub fn remove(host: &Host, ct: &Ctid) -> Result<()> {
        let dir = host.run_ct_dir(ct);
        match std::fs::remove_file(host.state_path(ct)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove state", host.state_path(ct), e)),
        }
        let _ = std::fs::remove_dir(dir);
        Ok(())
    }

    /// The cgroup the container runs in (whatever cgroup mode the host is set to now).
    pub fn cgroup(&self) -> crate::cgroups::Cgroup {
        let root = self.cgroup_root.clone().unwrap_or_else(|| PathBuf::from(crate::cgroups::DEFAULT_CGROUP_ROOT));
        crate::cgroups::Cgroup::new(root, self.cgroup.clone(), self.cgroup_mode)
    }

    /// The network namespace ferry made for the container (checked against its record; through
    /// PID 1, else another of its processes), for the host's work on the container's network.
    pub fn netns(&self, op: &'static str) -> Result<crate::net::CtNetns> {
        let others = self.cgroup().pids().unwrap_or_default();
        crate::isolation::namespaces::open_recorded_kind(
            self.ctid.as_str(),
            op,
            self.pid,
            self.start_time,
            &self.namespaces,
            crate::isolation::namespaces::NsKind::Net,
            &others,
        )
        .map(crate::net::CtNetns::new)
    }

    /// PID 1 is alive (not a zombie) and is the same process that was started.
    pub fn is_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some(s) => s.state != 'Z' && s.state != 'X' && s.start_time == self.start_time,
            None => false,
        }
    }
}
