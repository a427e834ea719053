//! Root integration tests of the container life cycle and isolation, through the `ferry` CLI.

mod support;
use support::{need_root, TestHost};

#[test]
fn lifecycle_create_start_stop_restart_destroy() {
    if !need_root("lifecycle") {
        return;
    }
    let h = TestHost::new();
    let tpl = h.template.to_str().unwrap();
    h.ok(&["create", "101", "--template", tpl, "--hostname", "web"]);
    assert!(h.data.join("conf/101.toml").is_file());
    assert!(h.data.join("private/101/bin/busybox").is_file());
    assert_eq!(h.ok(&["status", "101"]).trim(), "101 stopped");
    h.ok(&["start", "101"]);
    let pid = h.pid("101");
    assert!(h.ok(&["status", "101"]).starts_with(&format!("101 running pid {pid}")));
    // The root is visible to the host admin while it runs.
    assert!(h.data.join("root/101/bin/busybox").is_file());
    assert!(h.mounts().contains(&h.data.join("root/101")));
    // No launcher fd survives: PID 1 holds only stdio, all inside the container.
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert_eq!(fds.len(), 3, "{fds:?}");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap().to_str().unwrap(), "/dev/null");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap().to_str().unwrap(), "/var/log/ferry-console.log");
    // PID 1 is a session leader inside (CRIU needs this).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(after[3], pid.to_string(), "session id is PID 1 itself");

    let out = h.fails(&["start", "101"]);
    assert!(out.contains("already running"), "{out}");
    h.ok(&["exec", "101", "--", "sh", "-c", "echo hello from init >/proc/1/fd/1"]);
    assert!(h.ok(&["console", "101"]).contains("hello from init"));
    assert!(h.ok(&["logs", "101"]).contains("hello from init"));

    h.ok(&["restart", "101"]);
    let pid2 = h.pid("101");
    assert_ne!(pid, pid2);
    h.ok(&["stop", "101", "--timeout", "5"]);
    assert_eq!(h.ok(&["status", "101"]).trim(), "101 stopped");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid2}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid2}/stat")).map(|s| s.contains(") Z")).unwrap_or(true)
    );
    h.assert_clean();
    assert!(!h.run.join("101/state.json").exists());
    let e = h.fails(&["stop", "101"]);
    assert!(e.contains("not running"), "{e}");
    h.ok(&["destroy", "101"]);
    for p in ["conf/101.toml", "private/101", "root/101", "locks/101.lock"] {
        assert!(!h.data.join(p).exists(), "{p} left");
    }
}

#[test]
fn isolation_inside_the_container() {
    if !need_root("isolation") {
        return;
    }
    let h = TestHost::new();
    h.ok(&["create", "iso", "--template", h.template.to_str().unwrap(), "--hostname", "inside"]);
    h.ok(&["start", "iso"]);
    // PID 1 on the inside is the container's init as seen from the host.
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid("iso"))).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    // PID 1 inside is the init; the exec'd shell has a small pid in the same namespace.
    let cmdline = h.exec("iso", "tr '\\0' ' ' </proc/1/cmdline");
    assert!(cmdline.starts_with("/bin/sh -c trap"), "{cmdline}");
    assert_eq!(h.exec("iso", "hostname").trim(), "inside");
    assert_eq!(h.exec("iso", "cat /etc/hostname").trim(), "inside");
    // Only its own processes: PID 1, its sleep, and the exec'd shell (and what it runs).
    let pids: Vec<u32> = h.exec("iso", "ls /proc").split_whitespace().filter_map(|p| p.parse().ok()).collect();
    assert!(pids.contains(&1) && pids.len() <= 5, "{pids:?}");
    // Setting the clock fails (set it to the time it already is, so a broken test cannot
    // move the host's clock).
    // (busybox date exits 0 even when it fails, so look at what it says.)
    let o = h.ferry(&["exec", "iso", "--", "sh", "-c", "date -s @$(date +%s)"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not permitted"), "date -s succeeded: {o:?}");
    let o = h.ferry(&["exec", "iso", "--", "mknod", "/tmp/sda", "b", "8", "0"]);
    assert!(!o.status.success(), "mknod of a block device succeeded");
    let unprivileged = h.is_unprivileged("iso");
    let o = h.ferry(&["exec", "iso", "--", "sh", "-c", "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m && touch /tmp/m/inside"]);
    if unprivileged {
        // Its root mounts what it likes in its own mount namespace; nothing reaches the host.
        assert!(o.status.success(), "mount in its own user namespace failed: {o:?}");
        assert!(
            h.data.join("root/iso/tmp/m").is_dir() && !h.data.join("root/iso/tmp/m/inside").exists(),
            "the container's mount is seen on the host"
        );
        let map = h.exec("iso", "cat /proc/self/uid_map /proc/self/gid_map");
        let first = h.range_first("iso").expect("a range").to_string();
        assert!(map.lines().count() == 2 && map.lines().all(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", first.as_str(), "65536"]), "{map}");
    } else {
        assert!(!o.status.success(), "mount succeeded");
    }
    // Host-reaching /proc files are masked, /proc/sys and /sys are read-only.
    let masked = h.exec("iso", "for f in kcore keys timer_list interrupts; do [ -e /proc/$f ] && wc -c </proc/$f; done; true");
    assert!(!masked.trim().is_empty() && masked.split_whitespace().all(|n| n == "0"), "{masked}");
    assert!(!h.ferry(&["exec", "iso", "--", "sh", "-c", "echo 1 >/proc/sys/kernel/ns_last_pid"]).status.success());
    assert!(!h.ferry(&["exec", "iso", "--", "sh", "-c", "touch /sys/x"]).status.success());
    let bnd = h.exec("iso", "grep CapBnd /proc/self/status");
    let bits = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    if unprivileged {
        // Every capability, in its own user namespace (the clock and device nodes above show
        // what they do not reach).
        assert_eq!(bits, (1 << 41) - 1, "the full set: {bnd}");
    } else {
        // No module loading, no SYS_ADMIN, no NET_ADMIN: the bounding set is Docker's default set.
        for (name, bit) in [("NET_ADMIN", 12), ("SYS_MODULE", 16), ("SYS_RAWIO", 17), ("SYS_ADMIN", 21), ("SYS_BOOT", 22), ("SYS_TIME", 25)] {
            assert_eq!(bits & (1 << bit), 0, "{name} in bounding set {bnd}");
        }
        assert_eq!(bits, 0xa80425fb, "Docker's default set: {bnd}");
    }
    // The container's /dev holds only the allowed nodes and its own ptys.
    let dev = h.exec("iso", "ls /dev");
    for n in ["null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"] {
        assert!(dev.split_whitespace().any(|x| x == n), "/dev/{n} missing: {dev}");
    }
    assert!(h.exec("iso", "head -c 4 /dev/urandom | wc -c").trim() == "4");
    // Granting a capability takes effect on the next start.
    h.ok(&["set", "iso", "--capability", "sys_nice:on", "--devices", "c:10:200:rw", "--save"]);
    h.ok(&["restart", "iso"]);
    let bnd = h.exec("iso", "grep CapBnd /proc/self/status");
    let bits = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(bits & (1 << 23), 0, "SYS_NICE granted: {bnd}");
    let devs = std::fs::read_to_string(format!("/sys/fs/cgroup/devices/{}/iso/devices.list", h.cgroup_parent)).unwrap_or_default();
    // (In cgroup mode v2 an eBPF program holds the list: tests/cgroups.rs checks both.)
    if h.is_v1() {
        assert!(devs.contains("c 10:200 rw") && !devs.contains("b "), "{devs}");
    }
    h.ok(&["stop", "iso"]);
    h.assert_clean();
}

#[test]
fn exec_exit_codes_and_stdio() {
    if !need_root("exec") {
        return;
    }
    let h = TestHost::new();
    h.started("ex");
    assert_eq!(h.ferry(&["exec", "ex", "--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(h.ferry(&["exec", "ex", "--", "true"]).status.code(), Some(0));
    assert_eq!(h.ferry(&["exec", "ex", "--", "sh", "-c", "kill -9 $$"]).status.code(), Some(128 + 9));
    let o = h.ferry(&["exec", "ex", "--", "/no/such/cmd"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/cmd"));
    // stdin in, stdout and stderr out.
    use std::io::Write;
    let mut c = h.cmd();
    c.args(["exec", "ex", "--", "sh", "-c", "tr a-z A-Z; echo err >&2"]);
    let mut child = c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "SHOUT\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // The exec'd command is in the container's cgroup and is a session leader.
    // (v1: its line of the pids hierarchy; v2: the unified one, `0::`.)
    let line = if h.is_v1() { ":pids:" } else { "0::" };
    let inside = h.exec("ex", &format!("grep '{line}' /proc/self/cgroup"));
    assert!(inside.contains(&format!("/{}/ex", h.cgroup_parent)), "{inside}");
    let sid = h.exec("ex", "cut -d' ' -f6 /proc/self/stat; echo $$");
    let v: Vec<&str> = sid.split_whitespace().collect();
    assert_eq!(v[0], v[1], "exec'd shell is a session leader");
    // enter works without a terminal too: commands come through the container's pty.
    let mut child = h.cmd().args(["enter", "ex"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"tty; exit 4\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stdout).contains("/dev/pts/0"), "{}", String::from_utf8_lossy(&o.stdout));
    // Signals to ferry reach the command; the exit code says which one ended it.
    let child = h.cmd().args(["exec", "ex", "--", "sleep", "100"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15));
    h.ok(&["stop", "ex"]);
    let e = h.fails(&["exec", "ex", "--", "true"]);
    assert!(e.contains("not running"), "{e}");
}

#[test]
fn set_hostname_and_password() {
    if !need_root("set") {
        return;
    }
    let h = TestHost::new();
    h.started("s1");
    h.ok(&["set", "s1", "--hostname", "live1"]);
    assert_eq!(h.exec("s1", "hostname").trim(), "live1");
    // Without --save the config keeps the old name: a restart brings it back.
    h.ok(&["restart", "s1"]);
    assert_eq!(h.exec("s1", "hostname").trim(), "s1");
    h.ok(&["set", "s1", "--hostname", "saved1", "--save"]);
    h.ok(&["restart", "s1"]);
    assert_eq!(h.exec("s1", "hostname").trim(), "saved1");
    h.ok(&["set", "s1", "--userpasswd", "alice:s3cret", "--userpasswd", "root:toor"]);
    let shadow = h.exec("s1", "cat /etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with("alice:$6$")), "{shadow}");
    assert!(shadow.lines().any(|l| l.starts_with("root:$6$")), "{shadow}");
    assert!(h.exec("s1", "cat /etc/passwd").contains("alice:x:1000:1000:"));
    let e = h.fails(&["set", "s1", "--capability", "sys_time:on"]);
    assert!(e.contains("--save"), "{e}");
    let e = h.fails(&["set", "s1", "--userpasswd", "Bad User:x"]);
    assert!(e.contains("userpasswd"), "{e}");
    h.ok(&["stop", "s1"]);
    // Passwords also work on a stopped container.
    h.ok(&["set", "s1", "--userpasswd", "bob:pw"]);
    assert!(std::fs::read_to_string(h.data.join("private/s1/etc/shadow")).unwrap().contains("bob:$6$"));
}

#[test]
fn list_formats() {
    if !need_root("list") {
        return;
    }
    let h = TestHost::new();
    h.started("l1");
    h.ok(&["create", "l2", "--template", h.template.to_str().unwrap(), "--hostname", "two"]);
    // Default: running only, with a header.
    let out = h.ok(&["list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CTID"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("l1 ") && lines[1].contains("running"));
    assert_eq!(h.ok(&["list", "-a", "-H", "-o", "ctid"]), "l1\nl2\n");
    let out = h.ok(&["list", "-a", "-H", "-o", "ctid,status,hostname"]);
    assert_eq!(
        out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect::<Vec<_>>(),
        vec![vec!["l1", "running", "l1"], vec!["l2", "stopped", "two"]]
    );
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["list", "-a", "--json"])).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["ctid"], "l1");
    assert_eq!(arr[0]["pid"].as_i64().unwrap() as i32, h.pid("l1"));
    assert!(arr[0]["numproc"].as_u64().unwrap() >= 1);
    assert!(arr[0]["memory"].as_u64().unwrap() > 0);
    assert!(arr[0]["cputime"].as_f64().is_some());
    assert_eq!(arr[1]["status"], "stopped");
    assert!(arr[1]["pid"].is_null());
    let e = h.fails(&["list", "-o", "ctid,bogus"]);
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn stop_kills_an_init_that_ignores_sigterm() {
    if !need_root("stop_kill") {
        return;
    }
    let h = TestHost::new();
    // A PID 1 without a SIGTERM handler ignores SIGTERM: stop must fall back to SIGKILL.
    h.ok(&["create", "stubborn", "--template", h.template.to_str().unwrap(), "--init", "/bin/sleep 1000"]);
    h.ok(&["start", "stubborn"]);
    h.exec("stubborn", "sleep 1000 >/dev/null 2>&1 </dev/null &");
    let t = std::time::Instant::now();
    h.ok(&["stop", "stubborn", "--timeout", "1"]);
    let took = t.elapsed();
    assert!(took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(8), "{took:?}");
    assert_eq!(h.ok(&["status", "stubborn"]).trim(), "stubborn stopped");
    h.assert_clean();
}

#[test]
fn container_processes_start_with_default_signals() {
    if !need_root("container_processes_start_with_default_signals") {
        return;
    }
    let h = TestHost::new();
    h.started("sig");
    // ferry itself ignores SIGPIPE (Rust's default); an ignored signal survives execve, so
    // without the reset a pipeline in the container would never see SIGPIPE.
    for who in ["1", "self"] {
        let line = h.exec("sig", &format!("grep SigIgn /proc/{who}/status"));
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).expect("SigIgn value"), 16).unwrap();
        assert_eq!(mask & (1 << 12), 0, "SIGPIPE ignored in /proc/{who}: {line}");
    }
    assert_eq!(h.exec("sig", "yes | head -n 2 | wc -l").trim(), "2");
    h.ok(&["stop", "sig"]);
}
