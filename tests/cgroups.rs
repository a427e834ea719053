//! The cgroup handle against the real cgroupfs of this machine (v1 here; v2 is unit-tested
//! against a fake tree in the runtime crate).

mod support;
use ferry_runtime::cgroups::{detect, devices, Cgroup, CgroupMode, CgroupWrite, DEFAULT_CGROUP_ROOT};
use std::path::Path;
use std::time::Duration;
use support::{need_root, TestHost};

#[test]
fn real_cgroup_create_freeze_stats_devices_destroy() {
    if !need_root("cgroups") {
        return;
    }
    let mode = detect(Path::new(DEFAULT_CGROUP_ROOT)).unwrap();
    if mode != CgroupMode::V1 {
        eprintln!("cgroups: skipped: this host uses cgroup v2; the v1 backend needs v1 hierarchies");
        return;
    }
    let h = TestHost::new();
    let cg = Cgroup::new(DEFAULT_CGROUP_ROOT, format!("{}/a/b", h.cgroup_parent), mode);
    cg.create().unwrap();
    assert!(Path::new(&format!("/sys/fs/cgroup/memory/{}/a/b", h.cgroup_parent)).is_dir());
    // cpuset got CPUs and memory nodes from its parents, so tasks can join it.
    let cpus = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuset/{}/a/b/cpuset.cpus", h.cgroup_parent)).unwrap();
    assert!(!cpus.trim().is_empty());

    let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_pid(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let s = cg.stats().unwrap();
    assert_eq!(s.numproc, 1);
    // (Memory and CPU stay with the cgroup a task used them in, so a task moved in shows
    // little; the list test reads both from a real container.)

    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());

    // All or nothing: the pids limit set first is restored when a later write fails.
    let w = |c: &'static str, f: &str, v: &str| CgroupWrite { controller: c, file: f.into(), value: v.into() };
    let bad = [w("pids", "pids.max", "7"), w("memory", "memory.no_such_file", "1")];
    assert!(cg.apply_writes(&bad).is_err());
    let pmax = format!("/sys/fs/cgroup/pids/{}/a/b/pids.max", h.cgroup_parent);
    assert_eq!(std::fs::read_to_string(&pmax).unwrap().trim(), "max");
    cg.apply_writes(&bad[..1]).unwrap();
    assert_eq!(std::fs::read_to_string(&pmax).unwrap().trim(), "7");

    cg.set_device_policy(&devices::rules_for(&["c:10:200:rw".into()]).unwrap()).unwrap();
    let list = std::fs::read_to_string(format!("/sys/fs/cgroup/devices/{}/a/b/devices.list", h.cgroup_parent)).unwrap();
    assert!(list.contains("c 1:3 rwm") && list.contains("c 10:200 rw") && !list.contains("a *:*"), "{list}");

    cg.kill_all(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    let _ = child.wait();
    cg.destroy().unwrap();
    assert!(!cg.exists());
    Cgroup::new(DEFAULT_CGROUP_ROOT, h.cgroup_parent.clone(), mode).remove_tree().unwrap();
}
