//! The cgroup handle against the real cgroupfs of this machine: the v1 backend on the v1
//! hierarchies, and the v2 backend on the cgroup2 hierarchy (a hybrid host's
//! /sys/fs/cgroup/unified, found in /proc/self/mountinfo), whatever mode the suite runs in.

mod support;
use ferry_runtime::cgroups::{bpf_devices, devices, host_layout, Cgroup, CgroupMode, CgroupModeSetting, CgroupWrite, V2_CONTROLLERS};
use std::path::Path;
use std::time::Duration;
use support::{need_root, TestHost};

#[test]
fn real_cgroup_create_freeze_stats_devices_destroy() {
    if !need_root("cgroups") {
        return;
    }
    let h = TestHost::new();
    if !h.is_v1() {
        eprintln!("cgroups: skipped: this run uses cgroup mode {} ({}); the v1 backend needs v1 hierarchies", h.cgroup_mode, h.layout());
        return;
    }
    let cg = h.cgroup("a/b");
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

    let f = cg.freezer();
    f.freeze().unwrap();
    assert!(f.is_frozen().unwrap());
    f.thaw().unwrap();
    assert!(!f.is_frozen().unwrap());

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

    // A frozen v1 task dies only once thawed: kill_all thaws.
    f.freeze().unwrap();
    cg.kill_all(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    let _ = child.wait();
    cg.destroy().unwrap();
    assert!(!cg.exists());
    h.cgroup("").remove_tree().unwrap();
}

/// Removes a test's cgroup subtree (killing what is left) even when an assertion fails.
struct Tree(Cgroup);
impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.0.kill_all(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(3));
        let _ = self.0.remove_tree();
    }
}

fn events(cg: &Cgroup) -> String {
    std::fs::read_to_string(cg.dir("").join("cgroup.events")).unwrap()
}

/// What the v2 backend does on the real kernel: create under a parent, join, cgroup.events
/// (populated, frozen), the freezer and its inheritance, usage without controllers, the eBPF
/// device program, cgroup.kill of a frozen cgroup, removal; and that a controller file the
/// hierarchy lacks is an error, not a plain file made by the write.
#[test]
fn real_v2_cgroup_on_the_unified_hierarchy() {
    if !need_root("real_v2_cgroup_on_the_unified_hierarchy") {
        return;
    }
    let layout = match host_layout(CgroupModeSetting::V2) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("real_v2_cgroup_on_the_unified_hierarchy: skipped: {e}");
            return;
        }
    };
    let h = TestHost::new();
    let parent = Tree(Cgroup::in_layout(&layout, h.cgroup_parent.clone()));
    let cg = parent.0.sibling(format!("{}/101", h.cgroup_parent));
    cg.create().unwrap();
    assert_eq!(cg.mode(), CgroupMode::V2);
    let dir = cg.dir("");
    assert!(dir.starts_with(&layout.root) && dir.is_dir(), "{}", dir.display());
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap();
    let mut have = cg.controllers();
    have.sort();
    let mut want: Vec<String> = offered.split_whitespace().map(str::to_string).collect();
    want.sort();
    assert_eq!(have, want, "controllers() reads the kernel's cgroup.controllers");
    if !have.iter().any(|c| c == "memory") {
        let e = cg.apply_writes(&[CgroupWrite { controller: "memory", file: "memory.max".into(), value: "1000000".into() }]).unwrap_err();
        assert!(e.to_string().contains("memory.max"), "{e}");
        assert!(!dir.join("memory.max").exists(), "the write made a file");
    }
    assert!(events(&cg).contains("populated 0"));

    let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_pid(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    assert!(events(&cg).contains("populated 1") && events(&parent.0).contains("populated 1"));
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.lines().any(|l| l == format!("0::/{}", cg.rel())), "{own}");
    let s = cg.stats().unwrap();
    assert_eq!(s.numproc, 1, "counted from cgroup.threads without the pids controller");

    let f = cg.freezer();
    assert_eq!(f.dir(), dir);
    f.freeze().unwrap();
    assert!(events(&cg).contains("frozen 1"));
    // A cgroup made under a frozen one starts frozen, its own cgroup.freeze still 0.
    let sub = cg.sibling(format!("{}/sub", cg.rel()));
    sub.create().unwrap();
    assert!(sub.freezer().is_frozen().unwrap() && !sub.freezer().is_requested().unwrap());
    sub.destroy().unwrap();
    f.thaw().unwrap();
    assert!(!f.is_frozen().unwrap());

    match cg.set_device_policy(&devices::default_rules()) {
        Ok(()) => assert_eq!(bpf_devices::attached(&dir).unwrap().len(), 1),
        Err(e) => eprintln!("device program not attached here ({e}); runtime/tests/bpf_devices.rs says why"),
    }

    // cgroup.kill takes a frozen cgroup's processes too (fatal signals pass a v2 freezer).
    f.freeze().unwrap();
    cg.kill_all(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5)).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    assert!(events(&cg).contains("populated 0"));
    cg.destroy().unwrap();
    assert!(!cg.exists());

    // The no-internal-processes rule needs a controller to enable; a hybrid host's v2 offers
    // none of ferry's (the fake kernel's unit tests cover it).
    let root_offers = Cgroup::in_layout(&layout, "").controllers();
    if root_offers.iter().any(|c| V2_CONTROLLERS.contains(&c.as_str())) {
        let busy = parent.0.sibling(format!("{}/busy", h.cgroup_parent));
        busy.create().unwrap();
        let mut c2 = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        busy.add_pid(c2.id() as i32).unwrap();
        let e = busy.sibling(format!("{}/busy/102", h.cgroup_parent)).create().unwrap_err().to_string();
        assert!(e.contains("holds processes"), "{e}");
        busy.kill_all(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5)).unwrap();
        let _ = c2.wait();
    } else {
        eprintln!("real_v2_cgroup_on_the_unified_hierarchy: the no-internal-processes part skipped: the v2 root offers {root_offers:?}");
    }
    drop(parent);
    assert!(!layout.root.join(&h.cgroup_parent).exists(), "parent left behind");
}

/// The device allowlist holds in whichever cgroup mode the suite runs: v1's devices cgroup, or
/// in v2 the eBPF program on the container's cgroup. Nodes made by the host in the container's
/// root: the granted one opens, the others are refused, and a node cannot be made.
#[test]
fn device_allowlist_refuses_what_it_does_not_list() {
    let test = "device_allowlist_refuses_what_it_does_not_list";
    if !need_root(test) {
        return;
    }
    let h = TestHost::new();
    h.ok(&["create", "dv", "--template", h.template.to_str().unwrap()]);
    h.ok(&["set", "dv", "--devices", "c:10:200:rw", "--save"]);
    h.ok(&["start", "dv"]);
    // Made by host root in the private area (the same files as the root, with their owners as
    // on disk: host root creates nothing through an unprivileged container's idmapped root).
    let root = h.data.join("private/dv");
    let node = |name: &str, kind: nix::sys::stat::SFlag, major: u64, minor: u64| {
        nix::sys::stat::mknod(&root.join(name), kind, nix::sys::stat::Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(major, minor))
            .unwrap_or_else(|e| panic!("mknod {name}: {e}"));
    };
    node("tun-node", nix::sys::stat::SFlag::S_IFCHR, 10, 200);
    node("kmsg-node", nix::sys::stat::SFlag::S_IFCHR, 1, 11);
    node("loop-node", nix::sys::stat::SFlag::S_IFBLK, 7, 0);
    let try_open = |path: &str, how: &str| h.exec("dv", &format!("(exec 3{how}{path}) 2>&1 && echo opened || true"));
    let tun = try_open("/tun-node", "<>");
    assert!(tun.contains("opened"), "the granted c 10:200 rw was refused: {tun}");
    for (path, how) in [("/kmsg-node", "<"), ("/loop-node", "<")] {
        let out = try_open(path, how);
        assert!(!out.contains("opened") && out.contains("not permitted"), "{path} (not listed) opened: {out}");
    }
    let mk = h.ferry(&["exec", "dv", "--", "mknod", "/tmp/tun2", "c", "10", "200"]);
    assert!(!mk.status.success(), "mknod of c 10:200 (granted rw, not m) succeeded");
    if !h.is_v1() {
        let ids = bpf_devices::attached(&h.cgroup("dv").dir("")).unwrap();
        assert_eq!(ids.len(), 1, "one device program on the container's v2 cgroup: {ids:?}");
    }
    h.ok(&["stop", "dv"]);
    h.assert_clean();
}
