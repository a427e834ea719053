//! CRIU over its RPC on real processes (root, CRIU 4.2+): a hand-made container is dumped and
//! restored, failures come back with CRIU's own error lines.

mod support;

use ferry_runtime::cgroups::FrozenGuard;
use ferry_runtime::criu::{CriuVersion, DumpOpts, RestoreOpts};
use ferry_runtime::Error;
use support::*;

fn restore_opts(ct: &Container, images: &std::path::Path) -> RestoreOpts {
    let mut r = RestoreOpts::new(images);
    r.root = Some(ct.rootfs.clone());
    r
}

#[test]
fn version_check_and_features() {
    let Some(criu) = criu_ready() else { return };
    let v: CriuVersion = criu.version().unwrap();
    assert!(v.at_least((4, 2)), "{v}");
    let d = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
    criu.check(d.path()).unwrap();
    assert!(d.path().join("check.log").exists());
    let f = criu.features().unwrap();
    // This kernel has userfaultfd; whether soft-dirty is there is host-specific.
    let soft_dirty = std::fs::read_to_string("/proc/config.gz").is_ok();
    eprintln!("criu {v}: {f:?} (config.gz readable: {soft_dirty})");
    assert!(f.lazy_pages || !std::path::Path::new("/proc/sys/vm/unprivileged_userfaultfd").exists());
}

#[test]
fn dump_and_restore_continue_counter_with_same_ns_pids() {
    let Some(criu) = criu_ready() else { return };
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    wait_for(|| ct.count() >= 10, "counter runs");
    let pids_before = ct.ns_pids();
    assert_eq!(pids_before.len(), 3, "init and two children: {pids_before:?}");
    let img = ct.images("img");
    let d = criu.dump(&DumpOpts::new(ct.pid, &img)).unwrap();
    ct.dumped();
    let at_dump = ct.count();
    assert!(at_dump >= 10);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(ct.count(), at_dump, "nothing runs between dump and restore");

    let r = criu.restore(&restore_opts(&ct, &img)).unwrap();
    ct.pid = r.pid;
    eprintln!("rpc dump {:?}, restore {:?}", d.elapsed, r.elapsed);
    assert!(ct.alive());
    assert_eq!(ns_pid(r.pid), Some(1), "restored init is pid 1 of its namespace");
    wait_for(|| ct.count() > at_dump + 5, "counter continues");
    // Continued from memory, not restarted from 1: the first values after restore follow on.
    assert!(ct.count() > at_dump);
    assert_eq!(ct.ns_pids(), pids_before, "same pid-namespace pids after restore");
    // Detached: the restored init is not our child.
    let ppid: i32 = std::fs::read_to_string(format!("/proc/{}/stat", r.pid))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id() as i32);
}

#[test]
fn dump_leave_running_keeps_original() {
    let Some(criu) = criu_ready() else { return };
    let ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    wait_for(|| ct.count() >= 3, "counter runs");
    let mut o = DumpOpts::new(ct.pid, ct.images("img"));
    o.leave_running = true;
    criu.dump(&o).unwrap();
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "original keeps counting");
    assert!(ct.alive());
    assert!(ct.images("img").join("inventory.img").exists());
}

#[test]
fn failed_dump_reports_criu_error_and_leaves_container_running() {
    let Some(criu) = criu_ready() else { return };
    let ct = Container::start(&CtSpec { payload: COUNTER.into(), leak_host_fd: true, ..Default::default() });
    wait_for(|| ct.count() >= 3, "counter runs");
    let err = criu.dump(&DumpOpts::new(ct.pid, ct.images("img"))).unwrap_err();
    let Error::Criu(msg) = &err else { panic!("not a CRIU error: {err}") };
    eprintln!("{msg}");
    assert!(msg.contains("Error ("), "CRIU's error lines are quoted: {msg}");
    assert!(msg.contains("Can't lookup mount="), "{msg}");
    assert!(msg.contains("hint: a process holds a file from outside the container"), "{msg}");
    let log = ct.images("img").join("dump.log");
    assert!(msg.contains(&log.display().to_string()), "{msg}");
    assert!(log.exists());
    assert!(ct.alive());
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "still counting after the failed dump");
}

#[test]
fn failed_dump_of_caller_frozen_cgroup_is_thawed_by_guard() {
    let Some(criu) = criu_ready() else { return };
    let Some(cg) = FreezerCg::new("frz") else {
        eprintln!("skipped: no freezer cgroup");
        return;
    };
    let ct = Container::start(&CtSpec { payload: COUNTER.into(), leak_host_fd: true, ..Default::default() });
    cg.add_tree(ct.pid);
    wait_for(|| ct.count() >= 3, "counter runs");
    let guard = FrozenGuard::freeze(cg.1.clone()).unwrap();
    let n = ct.count();
    let mut o = DumpOpts::new(ct.pid, ct.images("img"));
    o.freeze_cgroup = Some(cg.0.clone());
    let err = criu.dump(&o).unwrap_err();
    assert!(err.to_string().contains("Can't lookup mount="), "{err}");
    // CRIU puts the freezer back as it found it: frozen, so the caller must thaw.
    let still_frozen = cg.1.is_frozen().unwrap();
    eprintln!("after the failed dump the caller-frozen cgroup is frozen: {still_frozen}");
    assert!(still_frozen, "CRIU restores the freezer state it found");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(ct.count(), n, "frozen: no progress");
    drop(guard);
    assert!(!cg.1.is_frozen().unwrap());
    wait_for(|| ct.count() > n + 3, "runs again after the thaw");
}

#[test]
fn dump_of_caller_frozen_cgroup_then_restore() {
    let Some(criu) = criu_ready() else { return };
    let Some(cg) = FreezerCg::new("fdr") else {
        eprintln!("skipped: no freezer cgroup");
        return;
    };
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    cg.add_tree(ct.pid);
    wait_for(|| ct.count() >= 3, "counter runs");
    let guard = FrozenGuard::freeze(cg.1.clone()).unwrap();
    let mut o = DumpOpts::new(ct.pid, ct.images("img"));
    o.freeze_cgroup = Some(cg.0.clone());
    criu.dump(&o).unwrap();
    guard.keep_frozen();
    ct.dumped();
    let n = ct.count();
    // Restore into the same freezer cgroup through join_cgroups (CRIU ignores cgroups);
    // it must be thawed for the tree to run.
    cg.1.thaw().unwrap();
    let mut r = restore_opts(&ct, &ct.images("img"));
    r.join_cgroups = vec![cg.0.join("cgroup.procs")];
    let res = criu.restore(&r).unwrap();
    ct.pid = res.pid;
    wait_for(|| ct.count() > n + 3, "restored counter continues");
    // The counter forks short-lived children: list the tree first, then read the cgroup,
    // and judge only the processes still running after that read (an exited child leaves
    // its cgroup at once but stays in /proc as a zombie until it is reaped).
    let tree = descendants(res.pid);
    let procs = std::fs::read_to_string(cg.0.join("cgroup.procs")).unwrap();
    let running = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with(['Z', 'X'])))
            .unwrap_or(false)
    };
    for p in tree {
        let in_cg = procs.lines().any(|l| l == p.to_string());
        assert!(in_cg || !running(p), "pid {p} restored into {}", cg.0.display());
    }
}

#[test]
fn restore_into_other_cgroups_via_join() {
    let Some(criu) = criu_ready() else { return };
    let pids_root = std::path::Path::new("/sys/fs/cgroup/pids");
    if !pids_root.join("tasks").exists() {
        eprintln!("skipped: no v1 pids hierarchy (the join logic is the same on v2)");
        return;
    }
    let src = pids_root.join(format!("ferry-t{}-a/ct", tag()));
    let dst = pids_root.join(format!("ferry-t{}-b/ct", tag()));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    struct Rm(Vec<std::path::PathBuf>);
    impl Drop for Rm {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_dir(p);
                let _ = std::fs::remove_dir(p.parent().unwrap());
            }
        }
    }
    let _rm = Rm(vec![src.clone(), dst.clone()]);
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    move_tree(&src.join("cgroup.procs"), ct.pid);
    std::fs::write(dst.join("pids.max"), "50").unwrap();
    criu.dump(&DumpOpts::new(ct.pid, ct.images("img"))).unwrap();
    ct.dumped();
    let mut r = restore_opts(&ct, &ct.images("img"));
    r.join_cgroups = vec![dst.join("cgroup.procs")];
    ct.pid = criu.restore(&r).unwrap().pid;
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", ct.pid)).unwrap();
    let want = format!("pids:/ferry-t{}-b/ct", tag());
    assert!(cg.lines().any(|l| l.ends_with(&want)), "{cg}");
    assert_eq!(std::fs::read_to_string(src.join("cgroup.procs")).unwrap().trim(), "");
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "runs in the new cgroup");
    ct.kill();
}

#[test]
fn notifications_reach_the_callback_with_the_restored_pid() {
    let Some(criu) = criu_ready() else { return };
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    wait_for(|| ct.count() >= 3, "counter runs");
    let mut seen = Vec::new();
    let d = criu
        .dump_notify(&DumpOpts::new(ct.pid, ct.images("img")), &mut |n| {
            seen.push(n.script.clone());
            Ok(())
        })
        .unwrap();
    ct.dumped();
    assert!(seen.iter().any(|s| s == "post-dump"), "{seen:?}");
    assert_eq!(d.notifications, seen);
    let mut pids = Vec::new();
    let r = criu
        .restore_notify(&restore_opts(&ct, &ct.images("img")), &mut |n| {
            pids.push((n.script.clone(), n.pid));
            Ok(())
        })
        .unwrap();
    ct.pid = r.pid;
    eprintln!("restore notifications: {pids:?}");
    let setup = pids.iter().find(|(s, _)| s == "setup-namespaces").expect("setup-namespaces");
    assert_eq!(setup.1, r.pid);
    assert!(pids.iter().any(|(s, _)| s == "post-restore"));
}

#[test]
fn failing_callback_aborts_the_restore() {
    let Some(criu) = criu_ready() else { return };
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    wait_for(|| ct.count() >= 3, "counter runs");
    criu.dump(&DumpOpts::new(ct.pid, ct.images("img"))).unwrap();
    ct.dumped();
    let mut restored = 0;
    let err = criu
        .restore_notify(&restore_opts(&ct, &ct.images("img")), &mut |n| {
            if n.script == "setup-namespaces" {
                restored = n.pid;
                return Err("no network for you".into());
            }
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("no network for you"), "{err}");
    assert!(restored > 0);
    wait_for(|| !alive(restored), "aborted restore leaves no process");
}

#[test]
fn restore_with_external_veth_creates_outer_end_in_callers_netns() {
    let Some(criu) = criu_ready() else { return };
    let host_a = Netns::new("a");
    let host_b = Netns::new("b");
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), netns: Some(host_a.0.clone()), ..Default::default() });
    let outer_a = format!("fv{}a", tag());
    let outer_b = format!("fv{}b", tag());
    let st = std::process::Command::new("ip")
        .args(["-n", &host_a.0, "link", "add", &outer_a, "type", "veth", "peer", "name", "eth0", "netns", &format!("/proc/{}/ns/net", ct.pid)])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for(|| ct.count() >= 3, "counter runs");
    let mut d = DumpOpts::new(ct.pid, ct.images("img"));
    d.netns = Some(host_a.path());
    criu.dump(&d).unwrap();
    ct.dumped();
    let mut r = restore_opts(&ct, &ct.images("img"));
    r.netns = Some(host_b.path());
    r.external = vec![format!("veth[eth0]:{outer_b}")];
    ct.pid = criu.restore(&r).unwrap().pid;
    let out = std::process::Command::new("ip").args(["-n", &host_b.0, "-o", "link", "show", &outer_b]).output().unwrap();
    assert!(out.status.success(), "outer end {outer_b} exists on host B");
    let inner = std::process::Command::new("nsenter").args(["-t", &ct.pid.to_string(), "-n", "ip", "-o", "link", "show", "eth0"]).output().unwrap();
    assert!(inner.status.success(), "eth0 inside the restored container");
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "runs on host B");
}

#[test]
fn pre_dump_is_refused_clearly_without_soft_dirty() {
    let Some(criu) = criu_ready() else { return };
    let f = criu.features().unwrap();
    let ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    let res = criu.pre_dump(&DumpOpts::new(ct.pid, ct.images("pre1")));
    if f.mem_track {
        res.unwrap();
        assert!(ct.alive());
    } else {
        let e = res.unwrap_err().to_string();
        assert!(e.contains("soft-dirty"), "{e}");
        assert!(ct.alive());
    }
}

#[test]
fn host_check_table() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
    let host = ferry_runtime::Host::new(d.path(), d.path(), "ferry-tcheck").with_cgroup_mode(cgroup_mode());
    let t = ferry_runtime::criu::check::host_check(&host, d.path(), ferry_runtime::config::ContainerKind::Unprivileged);
    println!("{t}");
    let s = t.to_string();
    assert!(s.contains("CRIU version"));
    // Unprivileged containers: what the host gives them, and the default isolation shown for
    // the kind asked.
    let row = |name: &str| t.rows.iter().find(|r| r.feature == name).unwrap_or_else(|| panic!("no {name} row:\n{s}")).clone();
    assert_eq!(row("user namespaces").status, ferry_runtime::criu::check::Status::Ok, "{s}");
    assert_eq!(row("idmapped mounts").status, ferry_runtime::criu::check::Status::Ok, "{s}");
    assert!(row("user ID pool").detail.starts_with("1000000:1000000000") || std::path::Path::new("/etc/subuid").exists(), "{s}");
    let other = row("limits of other users, unprivileged");
    assert_eq!(other.status, ferry_runtime::criu::check::Status::Ok, "{s}");
    assert!(other.detail.contains("in a user namespace it made: works"), "{s}");
    if !ferry_runtime::criu::check::has_cap_in_bounding_set(24) {
        assert!(other.detail.contains("on the host: prlimit: Operation not permitted"), "{s}");
    }
    assert_eq!(t.default_isolation.as_ref().unwrap().kind, "unprivileged");
    assert!(t.default_isolation.as_ref().unwrap().runs_in_user_namespace);
    assert!(s.contains("cgroups") && s.contains("cgroup mode") && s.contains("resource limits"));
    assert!(s.contains("soft-dirty"));
    assert!(s.contains("network lock"));
    assert!(s.contains("loop devices"));
}

#[test]
fn swrk_does_not_inherit_our_fds() {
    let Some(criu) = criu_ready() else { return };
    let d = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
    let leaked_path = d.path().join("leaked-fd-marker");
    std::fs::write(&leaked_path, "x").unwrap();
    let c = std::ffi::CString::new(leaked_path.to_str().unwrap()).unwrap();
    // SAFETY: plain open(2) without O_CLOEXEC, as a careless library would leak it.
    let leaked = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(leaked >= 0);
    let ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    let mut checked = 0;
    let mut o = DumpOpts::new(ct.pid, ct.images("img"));
    o.leave_running = true;
    criu.dump_notify(&o, &mut |_| {
        // Our children named criu: the swrk process serving this request.
        for child in descendants(std::process::id() as i32).into_iter().skip(1) {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() != "criu" {
                continue;
            }
            for fd in std::fs::read_dir(format!("/proc/{child}/fd")).unwrap().flatten() {
                let target = std::fs::read_link(fd.path()).unwrap_or_default();
                assert_ne!(target, leaked_path, "criu swrk inherited our fd {}", fd.file_name().to_string_lossy());
            }
            checked += 1;
        }
        Ok(())
    })
    .unwrap();
    // SAFETY: closing the fd opened above, owned by this test.
    unsafe { libc::close(leaked) };
    assert!(checked > 0, "found the criu swrk process");
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// Not asserted: RPC versus CLI times for the same one-process container, printed.
#[test]
fn measure_rpc_versus_cli() {
    let Some(criu) = criu_ready() else { return };
    let mut ct = Container::start(&CtSpec { payload: "while true; do sleep 1; done".into(), ..Default::default() });
    let rounds = 7;
    let (mut rd, mut rr, mut cd, mut cr) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        let img = ct.images(&format!("rpc{i}"));
        let mut o = DumpOpts::new(ct.pid, &img);
        o.cgroups = ferry_runtime::criu::CgroupHandling::Ignore;
        let t0 = std::time::Instant::now();
        criu.dump(&o).unwrap();
        rd.push(t0.elapsed());
        ct.dumped();
        let t0 = std::time::Instant::now();
        ct.pid = criu.restore(&restore_opts(&ct, &img)).unwrap().pid;
        rr.push(t0.elapsed());

        let img = ct.images(&format!("cli{i}"));
        std::fs::create_dir_all(&img).unwrap();
        let common = ["--tcp-established", "--file-locks", "--manage-cgroups=ignore", "-v4"];
        let t0 = std::time::Instant::now();
        let st = std::process::Command::new(criu.binary())
            .args(["dump", "-t", &ct.pid.to_string(), "-D", img.to_str().unwrap(), "-o", "dump.log"])
            .args(common)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        cd.push(t0.elapsed());
        assert!(st.success(), "criu dump CLI");
        ct.dumped();
        let pidfile = img.join("restored.pid");
        let t0 = std::time::Instant::now();
        let st = std::process::Command::new(criu.binary())
            .args(["restore", "-d", "-D", img.to_str().unwrap(), "-o", "restore.log", "--root", ct.rootfs.to_str().unwrap()])
            .args(["--pidfile", pidfile.to_str().unwrap()])
            .args(common)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        cr.push(t0.elapsed());
        assert!(st.success(), "criu restore CLI");
        ct.pid = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    }
    assert!(ct.alive());
    println!("rounds: RPC dump {rd:?}\n RPC restore {rr:?}\n CLI dump {cd:?}\n CLI restore {cr:?}");
    println!(
        "one-process busybox container, medians of {rounds}: RPC dump {:?} restore {:?}; CLI dump {:?} restore {:?}",
        median(rd),
        median(rr),
        median(cd),
        median(cr)
    );
}

/// CRIU's own cgroup handling with a `cg_root` remap: the restored tree lands under another
/// parent (the alternative to joining, see the module docs of checkpoint).
#[test]
fn restore_under_other_parent_with_criu_cg_root() {
    use ferry_runtime::criu::{CgroupHandling, CriuCgMode};
    let Some(criu) = criu_ready() else { return };
    let pids_root = std::path::Path::new("/sys/fs/cgroup/pids");
    if !pids_root.join("tasks").exists() {
        eprintln!("skipped: no v1 pids hierarchy");
        return;
    }
    let a = format!("ferry-t{}-ca", tag());
    let b = format!("ferry-t{}-cb", tag());
    struct Rm(Vec<String>);
    impl Drop for Rm {
        fn drop(&mut self) {
            for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
                for n in &self.0 {
                    let _ = std::fs::remove_dir(h.path().join(n).join("ct"));
                    let _ = std::fs::remove_dir(h.path().join(n));
                }
            }
        }
    }
    let _rm = Rm(vec![a.clone(), b.clone()]);
    // CRIU records the cgroup subtree below the tree's cgroups, so the container lives in its
    // own cgroup in every hierarchy (else it would record every sibling under the root).
    let make_everywhere = |name: &str| {
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if !h.path().join("cgroup.procs").exists() {
                continue;
            }
            let dir = h.path().join(name).join("ct");
            std::fs::create_dir_all(&dir).unwrap();
            if h.file_name() == "cpuset" {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = std::fs::read_to_string(h.path().join(f)).unwrap();
                    std::fs::write(h.path().join(name).join(f), &v).unwrap();
                    std::fs::write(dir.join(f), &v).unwrap();
                }
            }
        }
    };
    make_everywhere(&a);
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let procs = h.path().join(&a).join("ct/cgroup.procs");
        if procs.exists() {
            move_tree(&procs, ct.pid);
        }
    }
    let mut d = DumpOpts::new(ct.pid, ct.images("img"));
    d.cgroups = CgroupHandling::Criu { mode: CriuCgMode::Soft, roots: vec![] };
    criu.dump(&d).unwrap();
    ct.dumped();
    // Mode NONE: CRIU moves tasks but creates nothing, so the new parent is made first in every
    // hierarchy (as ferry's cgroup code would), cpuset with its cpus and mems.
    make_everywhere(&b);
    let mut r = restore_opts(&ct, &ct.images("img"));
    r.cgroups = CgroupHandling::Criu { mode: CriuCgMode::None, roots: vec![(String::new(), format!("/{b}/ct"))] };
    let res = criu.restore(&r);
    let res = match res {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    ct.pid = res.pid;
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", ct.pid)).unwrap();
    eprintln!("{cg}");
    assert!(cg.lines().any(|l| l.ends_with(&format!("pids:/{b}/ct"))), "{cg}");
    ct.kill();
}

/// cgroup mode v2 on a hybrid host: the container's only cgroup is on the unified hierarchy
/// (its v1 memberships stay in the hierarchy roots). ferry freezes it through `cgroup.freeze`,
/// CRIU takes that directory as its freeze cgroup (it detects v2 by `cgroup.freeze` and seizes
/// from `cgroup.threads`), dumps with cgroups ignored, and the restore joins another v2
/// cgroup; `cgroup.kill` ends it.
#[test]
fn v2_freeze_dump_and_restore_on_the_unified_hierarchy() {
    use ferry_runtime::cgroups::{host_layout, Cgroup, CgroupModeSetting};
    let Some(criu) = criu_ready() else { return };
    let layout = match host_layout(CgroupModeSetting::V2) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    struct Rm(Vec<Cgroup>);
    impl Drop for Rm {
        fn drop(&mut self) {
            for cg in &self.0 {
                let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL, std::time::Duration::from_secs(3));
                let _ = cg.sibling(cg.rel().split('/').next().unwrap()).remove_tree();
            }
        }
    }
    let a = Cgroup::in_layout(&layout, format!("ferry-t{}-va/ct", tag()));
    let b = Cgroup::in_layout(&layout, format!("ferry-t{}-vb/ct", tag()));
    let _rm = Rm(vec![a.clone(), b.clone()]);
    a.create().unwrap();
    b.create().unwrap();
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    move_tree(&a.procs_files()[0], ct.pid);
    wait_for(|| ct.count() >= 3, "counter runs");

    let guard = FrozenGuard::freeze(a.freezer()).unwrap();
    let events = std::fs::read_to_string(a.dir("").join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    let n = ct.count();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(ct.count(), n, "frozen through cgroup.freeze: no progress");
    let mut o = DumpOpts::new(ct.pid, ct.images("img"));
    o.freeze_cgroup = Some(a.freezer().dir().to_path_buf());
    o.log_level = 4;
    let dumped = criu.dump(&o);
    let log = std::fs::read_to_string(ct.images("img").join("dump.log")).unwrap_or_default();
    dumped.unwrap_or_else(|e| panic!("{e}"));
    assert!(log.contains("Detected cgroup V2 freezer"), "CRIU did not take {} as a v2 freezer", a.rel());
    guard.keep_frozen();
    ct.dumped();
    assert!(a.pids().unwrap().is_empty());

    let mut r = restore_opts(&ct, &ct.images("img"));
    r.join_cgroups = b.procs_files();
    ct.pid = criu.restore(&r).unwrap().pid;
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", ct.pid)).unwrap();
    assert!(cg.lines().any(|l| l == format!("0::/{}", b.rel())), "restored into {}: {cg}", b.rel());
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "runs in the new v2 cgroup");
    assert!(b.pids().unwrap().contains(&ct.pid));

    // cgroup.kill takes the whole restored tree; the cgroup empties and goes.
    b.kill_all(nix::sys::signal::Signal::SIGKILL, std::time::Duration::from_secs(5)).unwrap();
    wait_for(|| !ct.alive(), "killed through cgroup.kill");
    b.destroy().unwrap();
    a.destroy().unwrap();
}

#[test]
fn missing_criu_binary_is_a_clear_error() {
    let c = ferry_runtime::criu::Criu::with_binary("/nonexistent/criu");
    let e = c.version().unwrap_err().to_string();
    assert!(e.contains("/nonexistent/criu") && e.contains("ferry-install-criu"), "{e}");
}

#[test]
fn restore_into_missing_cgroup_names_it() {
    let Some(criu) = criu_ready() else { return };
    let d = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
    let mut r = RestoreOpts::new(d.path());
    let missing = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/ferry-t{}-none/cgroup.procs", tag()));
    r.join_cgroups = vec![missing.clone()];
    let e = criu.restore(&r).unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
}

const ECHO_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8000), timeout=30)
n, t0, last, gap = 0, time.time(), time.time(), 0.0
while time.time() - t0 < float(sys.argv[2]):
    n += 1
    msg = f"{n}\n".encode(); s.sendall(msg)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(100)
        assert chunk, "connection closed"
        got += chunk
    assert got == msg, (got, msg)
    now = time.time(); gap = max(gap, now - last); last = now
    open(sys.argv[3], "w").write(str(n))
    time.sleep(0.02)
print(f"{n} round trips, longest gap {gap*1000:.0f} ms")
"#;

/// A container with a pipe between two processes, a file appended through a held fd, a
/// listening socket and an established TCP connection to a client outside survives a dump and
/// restore over RPC; the outer veth end is replumbed from the post-restore notification.
#[test]
fn tcp_connection_pipe_and_appended_file_survive() {
    let Some(criu) = criu_ready() else { return };
    let host = Netns::new("t");
    let payload = "while [ ! -e /tmp/go ]; do sleep 0.05; done; \
        (i=0; while true; do i=$((i+1)); echo $i; sleep 0.01; done) | \
        (exec 4>>/tmp/appended; while read l; do echo $l >&4; done) & \
        ip link set lo up; exec nc -ll -p 8000 -e /bin/cat";
    let mut ct = Container::start(&CtSpec { payload: payload.into(), netns: Some(host.0.clone()), ..Default::default() });
    let outer = format!("fv{}t", tag());
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    let ct_ns = format!("/proc/{}/ns/net", ct.pid);
    ip(&["-n", &host.0, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ct_ns]);
    let plumb_outer = |outer: &str| {
        let st = std::process::Command::new("ip").args(["-n", &host.0, "addr", "add", "198.18.201.1/24", "dev", outer]).status().unwrap();
        let st2 = std::process::Command::new("ip").args(["-n", &host.0, "link", "set", outer, "up"]).status().unwrap();
        st.success() && st2.success()
    };
    assert!(plumb_outer(&outer));
    let st = std::process::Command::new("nsenter")
        .args(["-t", &ct.pid.to_string(), "-n", "sh", "-c", "ip addr add 198.18.201.2/24 dev eth0 && ip link set eth0 up"])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(ct.rootfs.join("tmp/go"), "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let progress = ct.dir.path().join("client.progress");
    let client_py = ct.dir.path().join("client.py");
    std::fs::write(&client_py, ECHO_CLIENT).unwrap();
    let client = std::process::Command::new("nsenter")
        .arg(format!("--net={}", host.path().display()))
        .args(["python3", client_py.to_str().unwrap(), "198.18.201.2", "6", progress.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut client = KillOnDrop(client);
    let rounds = || std::fs::read_to_string(&progress).unwrap_or_default().trim().parse::<u64>().unwrap_or(0);
    wait_for(|| rounds() >= 20, "client talks to the container");

    let mut d = DumpOpts::new(ct.pid, ct.images("img"));
    d.netns = Some(host.path());
    let dres = criu.dump(&d).unwrap();
    ct.dumped();
    let lines_at_dump = ct.read("tmp/appended").lines().count();
    let rounds_at_dump = rounds();
    // The old pair goes away with the dead netns, asynchronously: the name must be free again.
    wait_for(
        || {
            !std::process::Command::new("ip")
                .args(["-n", &host.0, "link", "show", &outer])
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        },
        "old veth gone",
    );

    let mut r = restore_opts(&ct, &ct.images("img"));
    r.netns = Some(host.path());
    r.external = vec![format!("veth[eth0]:{outer}")];
    let mut plumbed_at = None;
    let res = criu
        .restore_notify(&r, &mut |n| {
            if n.script == "post-restore" {
                if !plumb_outer(&outer) {
                    return Err(format!("cannot plumb {outer}"));
                }
                plumbed_at = Some(n.script.clone());
            }
            Ok(())
        })
        .unwrap();
    ct.pid = res.pid;
    assert_eq!(plumbed_at.as_deref(), Some("post-restore"));
    eprintln!("dump {:?}, restore {:?}", dres.elapsed, res.elapsed);

    let out = client.0.wait_with_output_ref();
    assert!(out.0.success(), "client failed: {}", out.1);
    eprintln!("client: {}", out.1);
    assert!(rounds() > rounds_at_dump + 10, "the connection carried on after the restore");
    // The pipe and the appended file: consecutive numbers, no gap, no repeat.
    wait_for(|| ct.read("tmp/appended").lines().count() > lines_at_dump + 20, "appending continues");
    let text = ct.read("tmp/appended");
    for (i, l) in text.lines().enumerate() {
        if i + 1 == text.lines().count() {
            break; // the last line may be mid-write
        }
        assert_eq!(l, (i + 1).to_string(), "line {} of the appended file", i + 1);
    }
}

/// A dump that ends its tree leaves CRIU's lock (filter rules) in the tree's netns, but the
/// kernel drops a dying netns's netfilter hooks before its interfaces: a segment arriving in
/// between meets no socket and no lock and is answered with a RST, which ends a connection the
/// images hold (seen as "connection reset" by clients of live-migrated containers on a busy
/// host). The dump takes the netns off the wire before CRIU kills the tree. Here the dead
/// tree's netns is kept (a held fd) and its rules are flushed by hand: that moment, made as
/// long as the test needs. Nothing may answer there any more, neither the port the dumped
/// listener had nor a closed one.
#[test]
fn a_dumped_netns_sends_no_reset_while_it_dies() {
    let Some(criu) = criu_ready() else { return };
    let host = Netns::new("r");
    let payload = "ip link set lo up; exec nc -ll -p 8000 -e /bin/cat";
    let mut ct = Container::start(&CtSpec { payload: payload.into(), netns: Some(host.0.clone()), ..Default::default() });
    let outer = format!("fv{}r", tag());
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(out.status.success(), "`{cmd}`: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ct_ns = format!("/proc/{}/ns/net", ct.pid);
    sh(&format!(
        "ip -n {h} link add {outer} type veth peer name eth0 netns {ct_ns} && ip -n {h} addr add 198.18.203.1/24 dev {outer} && \
         ip -n {h} link set {outer} up && nsenter --net={ct_ns} sh -c 'ip addr add 198.18.203.2/24 dev eth0 && ip link set eth0 up'",
        h = host.0
    ));
    // A TCP connection attempt from the host's netns to the container's address.
    let connect = |port: u16| {
        let ns = std::fs::File::open(host.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let to = std::net::SocketAddr::from(([198, 18, 203, 2], port));
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(1)).map(drop)
        })
        .join()
        .unwrap()
    };
    // While it runs the listener answers, and a closed port is refused with a RST: the probe
    // sees resets when there are any.
    wait_for(|| connect(8000).is_ok(), "the listener answers");
    let refused = connect(8001).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");

    // Keeps the netns once its tree is gone.
    let held = std::fs::File::open(&ct_ns).unwrap();
    let held_path = format!("/proc/{}/fd/{}", std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&held));
    let mut d = DumpOpts::new(ct.pid, ct.images("img"));
    d.netns = Some(host.path());
    d.silence_netns = Some(std::sync::Arc::new(ferry_runtime::net::CtNetns::new(held.try_clone().unwrap())));
    criu.dump(&d).unwrap();
    ct.dumped();
    // CRIU's lock is still there; the kernel removes it first when the netns dies.
    let rules = sh(&format!("nsenter --net={held_path} iptables -w -S"));
    assert!(rules.contains("-j CRIU"), "no network lock left by CRIU: {rules}");
    sh(&format!("nsenter --net={held_path} sh -c 'iptables -w -F && iptables -w -X && ip6tables -w -F && ip6tables -w -X'"));
    for port in [8000, 8001] {
        match connect(port) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                panic!("the dead tree's netns answered a SYN to port {port} with a RST: {e}")
            }
            Err(e) => assert!(matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::HostUnreachable), "port {port}: {e}"),
            Ok(()) => panic!("port {port} of the dead tree's netns accepted a connection"),
        }
    }
    drop(held);
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut s = String::new();
        if let Some(o) = self.stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        (self.wait().unwrap(), s)
    }
}

#[test]
fn rst_sibling_makes_the_restored_init_our_child() {
    let Some(criu) = criu_ready() else { return };
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    wait_for(|| ct.count() >= 3, "counter runs");
    criu.dump(&DumpOpts::new(ct.pid, ct.images("img"))).unwrap();
    ct.dumped();
    let mut r = restore_opts(&ct, &ct.images("img"));
    r.rst_sibling = true;
    ct.pid = criu.restore(&r).unwrap().pid;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", ct.pid)).unwrap();
    let ppid: i32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, std::process::id() as i32);
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "runs");
    ct.kill();
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(ct.pid), None).unwrap();
    assert!(matches!(st, nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::SIGKILL, _)), "{st:?}");
}

#[test]
fn restore_from_missing_or_broken_images_is_a_clear_error() {
    let Some(criu) = criu_ready() else { return };
    let d = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
    let e = criu.restore(&RestoreOpts::new(d.path().join("nope"))).unwrap_err().to_string();
    assert!(e.contains("open image directory") && e.contains("nope"), "{e}");

    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    wait_for(|| ct.count() >= 3, "counter runs");
    criu.dump(&DumpOpts::new(ct.pid, ct.images("img"))).unwrap();
    ct.dumped();
    std::fs::write(ct.images("img").join("pstree.img"), b"garbage").unwrap();
    let err = criu.restore(&restore_opts(&ct, &ct.images("img"))).unwrap_err();
    let Error::Criu(msg) = &err else { panic!("{err}") };
    eprintln!("{msg}");
    assert!(msg.contains("Error ("), "{msg}");
    assert!(msg.contains(&ct.images("img").join("restore.log").display().to_string()), "{msg}");
    assert!(msg.contains("hint: the image directory is incomplete or damaged"), "{msg}");
}

#[test]
fn bad_veth_mapping_fails_the_restore_with_a_veth_hint() {
    let Some(criu) = criu_ready() else { return };
    let host = Netns::new("v");
    let mut ct = Container::start(&CtSpec { payload: COUNTER.into(), netns: Some(host.0.clone()), ..Default::default() });
    let outer = format!("fv{}v", tag());
    let st = std::process::Command::new("ip")
        .args(["-n", &host.0, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &format!("/proc/{}/ns/net", ct.pid)])
        .status()
        .unwrap();
    assert!(st.success());
    let mut d = DumpOpts::new(ct.pid, ct.images("img"));
    d.netns = Some(host.path());
    criu.dump(&d).unwrap();
    ct.dumped();
    // The dead netns takes its veth pair along, asynchronously.
    wait_for(
        || {
            !std::process::Command::new("ip")
                .args(["-n", &host.0, "link", "show", &outer])
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        },
        "old veth gone",
    );
    // The outer name is taken in the restoring netns: CRIU cannot create the pair.
    let st = std::process::Command::new("ip")
        .args(["-n", &host.0, "link", "add", &outer, "type", "veth", "peer", "name", &format!("fv{}w", tag())])
        .status()
        .unwrap();
    assert!(st.success());
    let mut r = restore_opts(&ct, &ct.images("img"));
    r.netns = Some(host.path());
    r.external = vec![format!("veth[eth0]:{outer}")];
    let err = criu.restore(&r).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("Error ("), "{err}");
    assert!(err.contains("Can't restore link"), "{err}");
    assert!(err.contains("hint: CRIU could not recreate a network device (veth)"), "{err}");
}

/// The freezer contract in the checkpoint module docs: CRIU leaves the freezer as it found it.
#[test]
fn criu_puts_the_freezer_back_as_it_found_it() {
    let Some(criu) = criu_ready() else { return };
    let Some(cg) = FreezerCg::new("fst") else {
        eprintln!("skipped: no freezer cgroup");
        return;
    };
    let ct = Container::start(&CtSpec { payload: COUNTER.into(), ..Default::default() });
    cg.add_tree(ct.pid);
    wait_for(|| ct.count() >= 3, "counter runs");

    // Passed thawed: CRIU freezes for the dump and thaws after a leave_running dump.
    let mut o = DumpOpts::new(ct.pid, ct.images("a"));
    o.leave_running = true;
    o.freeze_cgroup = Some(cg.0.clone());
    criu.dump(&o).unwrap();
    assert!(!cg.1.is_frozen().unwrap());
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "runs after CRIU's own freeze");

    // Frozen by the caller: still frozen after a leave_running dump; the caller thaws.
    let guard = FrozenGuard::freeze(cg.1.clone()).unwrap();
    o.images_dir = ct.images("b");
    criu.dump(&o).unwrap();
    assert!(cg.1.is_frozen().unwrap(), "caller-frozen cgroup stays frozen");
    drop(guard);
    let n = ct.count();
    wait_for(|| ct.count() > n + 3, "runs after the caller's thaw");
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).unwrap().flatten().map(|e| e.metadata().map(|m| m.len()).unwrap_or(0)).sum()
}

/// Not asserted beyond the image holding the memory: dump throughput of 256 MiB touched memory.
#[test]
fn measure_dump_of_256_mib() {
    let Some(criu) = criu_ready() else { return };
    // The shell keeps 256 MiB of 'a' in a variable, then signals readiness.
    let payload = "x=$(yes aaaaaaa | head -c 268435456); touch /tmp/filled; while true; do sleep 1; done";
    let mut ct = Container::start(&CtSpec { payload: payload.into(), ..Default::default() });
    wait_for(|| ct.rootfs.join("tmp/filled").exists(), "memory filled");
    let img = ct.images("img");
    let d = criu.dump(&DumpOpts::new(ct.pid, &img)).unwrap();
    ct.dumped();
    let size = dir_size(&img);
    assert!(size >= 256 << 20, "image holds the memory: {size} bytes");
    let r = criu.restore(&restore_opts(&ct, &img)).unwrap();
    ct.pid = r.pid;
    let mib = size as f64 / (1 << 20) as f64;
    println!(
        "256 MiB container: image {mib:.0} MiB, dump {:?} ({:.0} MiB/s), restore {:?} ({:.0} MiB/s)",
        d.elapsed,
        mib / d.elapsed.as_secs_f64(),
        r.elapsed,
        mib / r.elapsed.as_secs_f64()
    );
}
