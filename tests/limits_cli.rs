//! Resource limits through the `ferry` command, with measured effects: numproc stops a fork
//! loop, ram OOM-kills inside the container only, diskspace on the XFS image backend and on a
//! btrfs pool grows live, limits survive a stop/start, bad input changes nothing.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::TestHost;

fn cg_file(h: &TestHost, ctl: &str, ct: &str, file: &str) -> String {
    h.cg_file(ct, ctl, file)
}

/// Whether `test` can measure `limits` here: their controllers exist in this run's cgroup
/// mode (else the skip names the limit and the missing controller), and the checks' v1 files
/// are there.
fn limits_here(test: &str, h: &TestHost, limits: &[&str]) -> bool {
    if !h.has_controllers_for(test, limits) {
        return false;
    }
    if !h.is_v1() {
        eprintln!("{test}: skipped: these checks read cgroup v1 files, and this run uses {}", h.layout());
        return false;
    }
    true
}

fn status_json(h: &TestHost, ct: &str) -> serde_json::Value {
    serde_json::from_str(&h.ok(&["status", ct, "--json"])).unwrap()
}

#[test]
fn numproc_ram_and_cpu_limits_act_and_survive_restart() {
    let test = "numproc_ram_and_cpu_limits_act_and_survive_restart";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    if !limits_here(test, &h, &["numproc", "ram", "cpulimit", "cpuunits", "cpumask", "iolimit"]) {
        return;
    }
    let ct = "301";
    let tpl = h.template.to_str().unwrap().to_string();
    h.ok(&[
        "create",
        ct,
        "--template",
        &tpl,
        "--numproc",
        "20",
        "--ram",
        "64M",
        "--cpulimit",
        "50",
        "--cpuunits",
        "2000",
        "--numfiles",
        "64",
        "--cpumask",
        "0",
        "--iolimit",
        "10M",
    ]);
    h.ok(&["start", ct]);

    // numproc 20: a fork loop inside stops at 20 processes.
    let o = h.ferry(&["exec", ct, "--", "sh", "-c", "for i in $(seq 40); do sleep 2 & done 2>&1; wait"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("fork") || out.contains("Resource temporarily unavailable"), "the fork loop was not stopped: {out}");
    let events = cg_file(&h, "pids", ct, "pids.events");
    assert!(!events.ends_with(" 0"), "pids.events shows no refused fork: {events}");

    // ram 64M: allocating ~256 MB is OOM-killed inside; the container keeps running.
    let o = h.ferry(&["exec", ct, "--", "awk", "BEGIN{s=\"x\"; while (length(s) < 150000000) s = s s; print length(s)}"]);
    assert_eq!(o.status.code(), Some(137), "the allocation should be killed (SIGKILL): {o:?}");
    let oom = cg_file(&h, "memory", ct, "memory.oom_control");
    assert!(oom.lines().any(|l| l.starts_with("oom_kill ") && !l.ends_with(" 0")), "{oom}");
    let v = status_json(&h, ct);
    assert_eq!(v["status"], "running", "{v}");
    assert!(v["usage"]["memory"].as_u64().unwrap() <= 64 << 20, "{v}");

    // numfiles applies to exec'd processes (RLIMIT_NOFILE).
    assert_eq!(h.exec(ct, "ulimit -n").trim(), "64");
    // Usage next to the limits in list -o.
    let l = h.ok(&["list", "-H", "-o", "ctid,numproc,numproclimit,ram,numfileslimit,cpu"]);
    let f: Vec<&str> = l.split_whitespace().collect();
    assert_eq!((f[0], f[2], f[3], f[4]), (ct, "20", "67108864", "64"), "{l}");

    // Every limit survives a stop/start.
    h.ok(&["restart", ct]);
    assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "20");
    assert_eq!(cg_file(&h, "memory", ct, "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(cg_file(&h, "cpu", ct, "cpu.cfs_quota_us"), "50000");
    assert_eq!(cg_file(&h, "cpu", ct, "cpu.shares"), "2048");
    assert_eq!(cg_file(&h, "cpuset", ct, "cpuset.cpus"), "0");
    assert!(cg_file(&h, "blkio", ct, "blkio.throttle.write_bps_device").ends_with(&(10u64 << 20).to_string()));
    let pid = h.pid(ct);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(limits.lines().any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("64")), "{limits}");

    // Live change, all or nothing: one bad value and nothing of the set applies.
    let e = h.fails(&["set", ct, "--numproc", "30", "--cpumask", "0-4095"]);
    assert!(e.contains("cpumask") && e.contains("nothing was changed"), "{e}");
    assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "20");
    // --ram below what the container uses now is refused.
    h.exec(ct, "awk 'BEGIN{s=\"x\"; while (length(s) < 10000000) s = s s; system(\"sleep 30\")}' >/dev/null 2>&1 &");
    // Wait until it holds its memory (about 16 MB of anonymous memory).
    for _ in 0..50 {
        let stat = cg_file(&h, "memory", ct, "memory.stat");
        if stat.lines().any(|l| l.starts_with("total_rss ") && l[10..].trim().parse::<u64>().unwrap_or(0) > 12 << 20) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let e = h.fails(&["set", ct, "--ram", "4M", "--numproc", "30"]);
    assert!(e.contains("below what the container uses"), "{e}");
    assert_eq!(cg_file(&h, "memory", ct, "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "20");
    // A good live change applies at once; without --save the config keeps the old value.
    h.ok(&["set", ct, "--numproc", "30", "--ram", "96M"]);
    assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "30");
    assert_eq!(cg_file(&h, "memory", ct, "memory.limit_in_bytes"), (96u64 << 20).to_string());
    let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
    assert!(conf.contains("numproc = 20"), "{conf}");
    h.ok(&["set", ct, "--numproc", "25", "--save"]);
    h.ok(&["restart", ct]);
    assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "25");
    h.ok(&["destroy", "--force", ct]);
    h.assert_clean();
}

#[test]
fn bad_limits_are_refused_with_clear_errors() {
    if !support::need_root("bad_limits_are_refused_with_clear_errors") {
        return;
    }
    let h = TestHost::new();
    let tpl = h.template.to_str().unwrap().to_string();
    for (args, want) in [
        (vec!["--ram", "64Q"], "invalid size"),
        (vec!["--ram", "0"], "greater than zero"),
        (vec!["--numproc", "0"], "greater than zero"),
        (vec!["--numproc", "-5"], "greater than zero"),
        (vec!["--cpumask", "0-4095"], "names CPU"),
        (vec!["--cpulimit", "abc"], "not a whole number"),
        (vec!["--ioprio", "9"], "out of range"),
        (vec!["--diskspace", "-1G"], "invalid size"),
        (vec!["--iolimit", "fast"], "invalid size"),
        (vec!["--swap", "1G"], "swap needs a ram limit"),
    ] {
        let mut a = vec!["create", "401", "--template", &tpl];
        a.extend(args.iter().copied());
        let e = h.fails(&a);
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!h.data.join("conf/401.toml").exists(), "{args:?} left a config");
    }
    // A plain-dir container cannot take a disk limit later: the error says how to get one.
    h.ok(&["create", "402", "--template", &tpl]);
    let e = h.fails(&["set", "402", "--diskspace", "1G", "--save"]);
    assert!(e.contains("plain directory") && e.contains("--diskspace") && e.contains("btrfs"), "{e}");
    let e = h.fails(&["set", "402", "--ram", "64M"]);
    assert!(e.contains("--save"), "{e}");
}

/// Write 100 MB inside with a 64M disk limit: fails; raise to 128M live: succeeds.
fn diskspace_grows_live(h: &TestHost, ct: &str, want_kind: &str) {
    let tpl = h.template.to_str().unwrap().to_string();
    h.ok(&["create", ct, "--template", &tpl, "--diskspace", "64M"]);
    let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
    assert!(conf.contains(&format!("kind = \"{want_kind}\"")), "{conf}");
    h.ok(&["start", ct]);
    let write = "dd if=/dev/zero of=/big bs=1M count=100 2>&1 && sync";
    let o = h.ferry(&["exec", ct, "--", "sh", "-c", write]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "100 MB fit under a 64M limit: {out}");
    assert!(out.contains("No space left") || out.contains("quota exceeded") || out.contains("Disk quota"), "{out}");
    let l = h.ok(&["list", "-H", "-o", "storage,diskspace,disklimit"]);
    assert!(l.starts_with(want_kind), "{l}");
    h.ok(&["set", ct, "--diskspace", "128M"]);
    h.exec(ct, "rm -f /big");
    let o = h.ferry(&["exec", ct, "--", "sh", "-c", write]);
    assert!(o.status.success(), "after raising to 128M: {}", String::from_utf8_lossy(&o.stdout));
    // The new limit is kept across a stop/start.
    h.ok(&["restart", ct]);
    let v = status_json(h, ct);
    let limit = v["usage"]["disk_limit"].as_u64().unwrap();
    assert!(limit > 100 << 20 && limit <= 128 << 20, "{v}");
    h.ok(&["destroy", "--force", ct]);
}

#[test]
fn diskspace_on_the_image_backend() {
    let test = "diskspace_on_the_image_backend";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    std::fs::create_dir_all(&h.data).unwrap();
    let magic = nix::sys::statfs::statfs(&h.data).unwrap().filesystem_type().0 as i64;
    if magic == 0x9123_683E {
        eprintln!("{test}: skipped: the temp dir is on btrfs, which picks the btrfs backend");
        return;
    }
    diskspace_grows_live(&h, "501", "image");
    let imgs: Vec<_> = std::fs::read_dir(h.data.join("images")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(imgs.is_empty(), "destroy left images: {imgs:?}");
    h.assert_clean();
}

/// A btrfs filesystem in a file, loop-mounted at the test host's data dir; unmounted on drop.
struct BtrfsPool {
    mount_point: PathBuf,
}

impl Drop for BtrfsPool {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

#[test]
fn diskspace_on_a_btrfs_pool() {
    let test = "diskspace_on_a_btrfs_pool";
    if !support::need_root(test) {
        return;
    }
    if !Command::new("sh").args(["-c", "command -v mkfs.btrfs && grep -qw btrfs /proc/filesystems"]).status().is_ok_and(|s| s.success()) {
        eprintln!("{test}: skipped: no mkfs.btrfs or no btrfs in this kernel");
        return;
    }
    let h = TestHost::new();
    let img = h.dir.path().join("pool.img");
    std::fs::File::create(&img).unwrap().set_len(512 << 20).unwrap();
    let mk = Command::new("mkfs.btrfs").arg("-q").arg(&img).output().unwrap();
    assert!(mk.status.success(), "mkfs.btrfs: {}", String::from_utf8_lossy(&mk.stderr));
    std::fs::create_dir_all(&h.data).unwrap();
    let m = Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&h.data).output().unwrap();
    assert!(m.status.success(), "mount: {}", String::from_utf8_lossy(&m.stderr));
    let _pool = BtrfsPool { mount_point: h.data.clone() };
    diskspace_grows_live(&h, "601", "btrfs");
}

#[test]
fn cpulimit_and_iolimit_measured() {
    let test = "cpulimit_and_iolimit_measured";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    if !limits_here(test, &h, &["cpulimit", "iolimit"]) {
        return;
    }
    let ct = "701";
    let tpl = h.template.to_str().unwrap().to_string();
    h.ok(&["create", ct, "--template", &tpl, "--cpulimit", "25", "--iolimit", "1M"]);
    h.ok(&["start", ct]);
    let cputime = || status_json(&h, ct)["usage"]["cputime"].as_f64().unwrap();

    // cpulimit 25: a busy loop gets at most ~25% of a CPU (30% allowed for accounting slack).
    let before = cputime();
    let t0 = std::time::Instant::now();
    h.exec(ct, "timeout 2 sh -c 'while :; do :; done' || true");
    let wall = t0.elapsed().as_secs_f64();
    let used = cputime() - before;
    assert!(used < 0.30 * wall, "cpulimit 25 but the container used {used:.2}s of CPU in {wall:.2}s");
    assert!(used > 0.10 * wall, "the busy loop barely ran ({used:.2}s in {wall:.2}s): is the measurement right?");

    // iolimit 1M: a 4 MB direct write takes at least 3 s.
    let t0 = std::time::Instant::now();
    let o = h.ferry(&["exec", ct, "--", "dd", "if=/dev/zero", "of=/io-test", "bs=1M", "count=4", "oflag=direct"]);
    let took = t0.elapsed().as_secs_f64();
    assert!(o.status.success(), "dd: {}", String::from_utf8_lossy(&o.stderr));
    assert!(took >= 3.0, "a 4 MB direct write took only {took:.2}s under iolimit 1M");
    let v = status_json(&h, ct);
    assert!(v["usage"]["io_write"].as_u64().unwrap() >= 4 << 20, "io bytes not reported: {v}");
    h.ok(&["destroy", "--force", ct]);
    h.assert_clean();
}

#[test]
fn cpuunits_share_one_cpu_in_proportion() {
    let test = "cpuunits_share_one_cpu_in_proportion";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    if !limits_here(test, &h, &["cpuunits", "cpumask"]) {
        return;
    }
    let tpl = h.template.to_str().unwrap().to_string();
    for (ct, units) in [("801", "1000"), ("802", "2000")] {
        h.ok(&["create", ct, "--template", &tpl, "--cpuunits", units, "--cpumask", "0"]);
        h.ok(&["start", ct]);
    }
    let cputime = |ct: &str| status_json(&h, ct)["usage"]["cputime"].as_f64().unwrap();
    // Both busy on CPU 0 at once, started in the background from inside.
    for ct in ["801", "802"] {
        h.exec(ct, "timeout 4 sh -c 'while :; do :; done' >/dev/null 2>&1 &");
    }
    // Measure a window in the middle of the contention.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (a0, b0) = (cputime("801"), cputime("802"));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (a, b) = (cputime("801") - a0, cputime("802") - b0);
    let ratio = b / a;
    assert!((1.5..=2.5).contains(&ratio), "cpuunits 2000 vs 1000 got {b:.2}s vs {a:.2}s (ratio {ratio:.2})");
    for ct in ["801", "802"] {
        h.ok(&["destroy", "--force", ct]);
    }
    h.assert_clean();
}

/// One limit as `set` takes it, and how to see on the host that it is in force.
struct LiveLimit {
    opt: &'static str,
    value: &'static str,
    /// The cgroup (or process) fact that holds while the limit is in force.
    holds: fn(&TestHost, &str) -> bool,
}

fn io_weight_file(h: &TestHost, ct: &str) -> String {
    for f in ["blkio.bfq.weight", "blkio.weight"] {
        let p = h.cgroup(ct).dir("blkio").join(f);
        if let Ok(t) = std::fs::read_to_string(p) {
            return t;
        }
    }
    String::new()
}

fn live_limits() -> Vec<LiveLimit> {
    vec![
        LiveLimit { opt: "--cpuunits", value: "500", holds: |h, ct| cg_file(h, "cpu", ct, "cpu.shares") == "512" },
        LiveLimit { opt: "--cpumask", value: "0", holds: |h, ct| cg_file(h, "cpuset", ct, "cpuset.cpus") == "0" },
        LiveLimit { opt: "--ram", value: "100M", holds: |h, ct| cg_file(h, "memory", ct, "memory.limit_in_bytes") == (100u64 << 20).to_string() },
        LiveLimit { opt: "--numproc", value: "40", holds: |h, ct| cg_file(h, "pids", ct, "pids.max") == "40" },
        LiveLimit { opt: "--numfiles", value: "200", holds: |h, ct| h.exec(ct, "ulimit -n").trim() == "200" },
        LiveLimit { opt: "--cpulimit", value: "50", holds: |h, ct| cg_file(h, "cpu", ct, "cpu.cfs_quota_us") == "50000" },
        // io_weight(2) = 100 + 2 * 900 / 7
        LiveLimit { opt: "--ioprio", value: "2", holds: |h, ct| io_weight_file(h, ct).split_whitespace().any(|w| w == "357") },
        LiveLimit {
            opt: "--iolimit",
            value: "10M",
            holds: |h, ct| cg_file(h, "blkio", ct, "blkio.throttle.write_bps_device").ends_with(&format!(" {}", 10u64 << 20)),
        },
        LiveLimit { opt: "--iopslimit", value: "300", holds: |h, ct| cg_file(h, "blkio", ct, "blkio.throttle.read_iops_device").ends_with(" 300") },
    ]
}

/// Each live `set` changes only what it names: the limits set live before it stay in force
/// (in the cgroups and in `status`), in either order; a restart goes back to the config; a
/// checkpoint and restore keep the live limits; `unlimited` lifts one and leaves the rest.
#[test]
fn live_set_changes_only_what_it_names() {
    let test = "live_set_changes_only_what_it_names";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    let names: Vec<&str> = live_limits().iter().map(|l| l.opt.trim_start_matches("--")).collect();
    if !limits_here(test, &h, &names) {
        return;
    }
    let ct = "305";
    let tpl = h.template.to_str().unwrap().to_string();
    h.ok(&["create", ct, "--template", &tpl]);
    h.ok(&["start", ct]);
    let limits = live_limits();
    let check_all = |set: &[&LiveLimit], when: &str| {
        for l in set {
            assert!((l.holds)(&h, ct), "{} {} is no longer in force {when}", l.opt, l.value);
        }
    };
    let status_limits = |h: &TestHost| status_json(h, ct)["limits"].clone();

    // Forward, then (after a restart, which goes back to the config) backward: every limit is
    // both set before others and set after others.
    for pass in ["forward", "backward"] {
        let order: Vec<&LiveLimit> = if pass == "forward" { limits.iter().collect() } else { limits.iter().rev().collect() };
        for (i, l) in order.iter().enumerate() {
            h.ok(&["set", ct, l.opt, l.value]);
            check_all(&order[..=i], &format!("after `set {} {}` ({pass})", l.opt, l.value));
        }
        let s = status_limits(&h);
        assert_eq!((s["ram"].as_u64(), s["cpumask"].as_str(), s["numproc"].as_u64()), (Some(100 << 20), Some("0"), Some(40)), "{s}");
        let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
        assert!(!conf.contains("ram") && !conf.contains("cpumask"), "live changes reached the config: {conf}");
        if pass == "forward" {
            h.ok(&["restart", ct]);
            assert_ne!(cg_file(&h, "memory", ct, "memory.limit_in_bytes"), (100u64 << 20).to_string(), "a restart kept an unsaved limit");
            assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "max");
            assert_eq!(status_limits(&h)["ram"], serde_json::Value::Null);
        }
    }

    // --save of one limit saves that one only; the live ones stay live.
    h.ok(&["set", ct, "--cpuunits", "700", "--save"]);
    let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
    assert!(conf.contains("cpuunits = 700") && !conf.contains("ram"), "{conf}");
    assert_eq!(cg_file(&h, "cpu", ct, "cpu.shares"), "716");
    check_all(&limits[1..].iter().collect::<Vec<_>>(), "after `set --cpuunits 700 --save`");

    // A checkpoint carries the limits in force to the restore.
    h.ok(&["checkpoint", ct]);
    h.ok(&["restore", ct]);
    check_all(&limits[1..].iter().collect::<Vec<_>>(), "after checkpoint and restore");
    assert_eq!(cg_file(&h, "cpu", ct, "cpu.shares"), "716");

    // `unlimited` lifts one limit at a time; the others stay.
    for (i, l) in limits.iter().enumerate().skip(1) {
        h.ok(&["set", ct, l.opt, "unlimited"]);
        assert!(!(l.holds)(&h, ct), "{} unlimited did not lift it", l.opt);
        check_all(&limits[i + 1..].iter().collect::<Vec<_>>(), &format!("after `set {} unlimited`", l.opt));
    }
    assert_eq!(cg_file(&h, "pids", ct, "pids.max"), "max");
    assert_eq!(cg_file(&h, "cpuset", ct, "cpuset.cpus"), cg_file(&h, "cpuset", "", "cpuset.cpus"));
    let s = status_limits(&h);
    assert_eq!(s, serde_json::json!({ "cpuunits": 700 }), "{s}");
    h.ok(&["destroy", "--force", ct]);
    h.assert_clean();
}

/// In cgroup mode v2 on a host whose v2 hierarchy lacks the controllers (a hybrid host's
/// unified hierarchy), a limit that needs one is refused by `create` and by `set` (live and
/// saved) with the limit and the controller named, nothing is changed, `ferry check` lists
/// it; limits that need no controller (numfiles, diskspace) work.
#[test]
fn limits_without_a_controller_are_refused_in_v2_mode() {
    let test = "limits_without_a_controller_are_refused_in_v2_mode";
    if !support::need_root(test) {
        return;
    }
    let mut h = TestHost::new();
    h.cgroup_mode = ferry_runtime::cgroups::CgroupModeSetting::V2;
    let Ok(layout) = h.runtime_host().cgroup_layout() else {
        eprintln!("{test}: skipped: no cgroup2 hierarchy mounted");
        return;
    };
    let have = ferry_runtime::cgroups::Cgroup::in_layout(&layout, "").controllers();
    if have.iter().any(|c| c == "memory") || have.iter().any(|c| c == "pids") {
        eprintln!("{test}: skipped: the cgroup v2 hierarchy at {} offers memory or pids ({have:?})", layout.root.display());
        return;
    }
    let tpl = h.template.to_str().unwrap().to_string();
    let e = h.fails(&["create", "901", "--template", &tpl, "--ram", "64M", "--numproc", "20"]);
    assert!(e.contains("container 901: create") && e.contains("ram needs the memory controller"), "{e}");
    assert!(e.contains("numproc needs the pids controller") && e.contains("cgroup v2"), "{e}");
    assert!(!h.data.join("conf/901.toml").exists(), "a refused create left a config");

    h.ok(&["create", "901", "--template", &tpl, "--numfiles", "200"]);
    h.ok(&["start", "901"]);
    let e = h.fails(&["set", "901", "--numproc", "30", "--numfiles", "100"]);
    assert!(e.contains("numproc needs the pids controller") && e.contains("nothing was changed"), "{e}");
    assert_eq!(h.exec("901", "ulimit -n").trim(), "200", "the refused set changed numfiles");
    let e = h.fails(&["set", "901", "--cpuunits", "500", "--save"]);
    assert!(e.contains("cpuunits needs the cpu controller"), "{e}");
    let conf = std::fs::read_to_string(h.data.join("conf/901.toml")).unwrap();
    assert!(!conf.contains("cpuunits"), "{conf}");
    // What needs no controller still works live.
    h.ok(&["set", "901", "--numfiles", "100"]);
    assert_eq!(h.exec("901", "ulimit -n").trim(), "100");

    let v: serde_json::Value = serde_json::from_str(&h.ok(&["check", "--json"])).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["feature"] == name).unwrap_or_else(|| panic!("no {name} row: {rows:?}")).clone();
    let mode = row("cgroup mode");
    assert!(mode["detail"].as_str().unwrap().contains(&layout.root.display().to_string()), "{mode}");
    let limits = row("resource limits");
    assert_eq!(limits["status"], "missing", "{limits}");
    assert!(limits["detail"].as_str().unwrap().contains("ram, swap (memory)"), "{limits}");
    h.ok(&["destroy", "--force", "901"]);
    h.assert_clean();
}
