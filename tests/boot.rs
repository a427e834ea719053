//! Host reboots on a simulated host: the commands of the shipped ferry-boot.service (as
//! scripts/install-host.sh installs it) run at "shutdown" and "boot"; onboot and bootorder
//! decide what comes back and in which order; with stop_mode = "suspend" a container comes
//! back with its processes and memory (a counter keeps counting from where it was). Also the
//! stop timeout, saved and per call, and `stop --fast`.

mod support;
#[path = "support/topology.rs"]
mod topology;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{TestHost, FERRY};
use topology::Topology;

fn can_run(test: &str) -> bool {
    if !support::need_root(test) {
        return false;
    }
    if !Command::new("sh").arg("-c").arg("command -v criu").status().is_ok_and(|s| s.success()) {
        eprintln!("{test}: skipped: criu is not installed (scripts/install-deps.sh)");
        return false;
    }
    true
}

/// The ExecStart and ExecStop command lines of ferry-boot.service as installed for `FERRY`.
fn unit_commands(h: &TestHost) -> (Vec<String>, Vec<String>) {
    let root = h.dir.path().join("sysroot");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-host.sh");
    let o = Command::new(script).args(["--root", root.to_str().unwrap(), "--ferry", FERRY]).output().unwrap();
    assert!(o.status.success(), "install-host.sh: {}", String::from_utf8_lossy(&o.stderr));
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/ferry-boot.service")).unwrap();
    assert!(root.join("etc/ferry/ferry.toml").is_file() && root.join("etc/ferry/samples/basic.toml").is_file());
    let line = |key: &str| -> Vec<String> {
        let l = unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in the unit:\n{unit}"));
        // systemd's prefixes: "-" ignores the exit code.
        l.trim_start_matches(['-', '@', '+', '!', ':']).split_whitespace().map(str::to_string).collect()
    };
    let (start, stop) = (line("ExecStart="), line("ExecStop="));
    assert_eq!(start[0], FERRY, "the unit runs the installed ferry");
    (start, stop)
}

/// Run a unit command line as systemd would, on the simulated host.
fn run_unit(h: &TestHost, argv: &[String]) -> String {
    let o = h.cmd().args(&argv[1..]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{argv:?} failed ({}): {out}{}", o.status, String::from_utf8_lossy(&o.stderr));
    out
}

/// What a host's reboot takes away: its run directory is a fresh tmpfs.
fn reboot(h: &TestHost) {
    let _ = std::fs::remove_dir_all(&h.run);
}

fn status(h: &TestHost, ct: &str) -> serde_json::Value {
    serde_json::from_str(&h.ok(&["status", ct, "--json"])).unwrap()
}

/// The processes inside, as (pid inside, command), from the container's own ps.
fn processes(h: &TestHost, ct: &str) -> Vec<String> {
    let mut v: Vec<String> = h
        .exec(ct, "for p in /proc/[0-9]*; do echo \"${p#/proc/} $(tr '\\0' ' ' < $p/cmdline)\"; done")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.split_once(' ').is_some_and(|(_, cmd)| !cmd.starts_with("sleep ") && !cmd.contains("for p in")))
        .collect();
    v.sort();
    v
}

#[test]
fn a_reboot_in_suspend_mode_brings_processes_and_memory_back_in_bootorder() {
    let test = "a_reboot_in_suspend_mode_brings_processes_and_memory_back_in_bootorder";
    if !can_run(test) {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let (exec_start, exec_stop) = unit_commands(&h);
    h.add_host_config("# a host that suspends its containers at shutdown\nstop_mode = \"suspend\"\n");
    let tpl = h.template.to_str().unwrap();
    let ip = t.ct_ip4(41).to_string();
    // web: onboot, late; db: onboot, first; job: no onboot, was running; off: onboot no, was
    // running; idle: no onboot, never ran.
    h.ok(&["create", "web", "--template", tpl, "--onboot", "yes", "--bootorder", "10", "--ipadd", &ip]);
    h.ok(&["create", "db", "--template", tpl, "--onboot", "yes", "--bootorder", "90"]);
    h.ok(&["create", "job", "--template", tpl]);
    h.ok(&["create", "off", "--template", tpl]);
    h.ok(&["set", "off", "--onboot", "no", "--save"]);
    h.ok(&["create", "idle", "--template", tpl]);
    for ct in ["web", "db", "job", "off"] {
        h.ok(&["start", ct]);
    }
    h.start_counter("web");
    h.start_counter("job");
    let before = processes(&h, "web");
    assert!(before.iter().any(|p| p.contains("while :")), "{before:?}");

    // Shutdown: everything is suspended, lower bootorder first.
    let out = run_unit(&h, &exec_stop);
    let order: Vec<&str> = out.lines().filter(|l| l.contains(" suspended to ")).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(order, ["off", "job", "web", "db"], "the boot order reversed: {out}");
    let at_shutdown = (h.counter("web"), h.counter("job"));
    for ct in ["web", "db", "job", "off"] {
        let s = status(&h, ct);
        assert_eq!((s["status"].as_str(), s["suspended"].as_bool()), (Some("stopped"), Some(true)), "{ct}: {s}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((h.counter("web"), h.counter("job")), at_shutdown, "processes ran on after the shutdown");
    h.assert_clean();
    reboot(&h);

    // Boot: onboot and what ran come back, higher bootorder first; onboot no stays down
    // (its image kept), idle was never running.
    let out = run_unit(&h, &exec_start);
    let order: Vec<&str> = out.lines().filter(|l| l.contains(" resumed from ")).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(order, ["db", "web", "job"], "{out}");
    for ct in ["web", "db", "job"] {
        assert_eq!(status(&h, ct)["status"], "running", "{ct}");
    }
    assert_eq!(status(&h, "off")["suspended"], true);
    assert_eq!(status(&h, "idle")["status"], "stopped");
    // Same processes inside (same pids), and the counters go on from their memory.
    assert_eq!(processes(&h, "web"), before);
    support::wait_for("the counters to go on", || h.counter("web") > at_shutdown.0 + 3 && h.counter("job") > at_shutdown.1 + 3);
    let s = status(&h, "web");
    assert_eq!(s["ip"], serde_json::json!([ip]), "{s}");
    assert!(t.run_in_ok(t.host(0), "ip -4 route").contains(&ip), "the venet route is back");
    // A second start --all has nothing left to do.
    let out = run_unit(&h, &exec_start);
    assert!(out.contains("0 of 0"), "{out}");
    for ct in ["web", "db", "job"] {
        h.ok(&["stop", ct]);
    }
}

#[test]
fn a_reboot_in_stop_mode_starts_onboot_and_what_ran() {
    let test = "a_reboot_in_stop_mode_starts_onboot_and_what_ran";
    if !can_run(test) {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let tpl = h.template.to_str().unwrap();
    for (ct, extra) in [("a", vec!["--onboot", "yes"]), ("b", vec!["--bootorder", "5"]), ("c", vec!["--onboot", "no"]), ("d", vec![])] {
        let mut args = vec!["create", ct, "--template", tpl];
        args.extend(extra);
        h.ok(&args);
    }
    h.ok(&["start", "b"]);
    h.ok(&["start", "c"]);
    let stop = h.ok(&["stop", "--all"]);
    assert!(stop.contains("2 of 2 stopped"), "{stop}");
    reboot(&h);
    let start = h.ok(&["start", "--all"]);
    let order: Vec<&str> =
        start.lines().filter(|l| l.starts_with("container ") && l.contains(" started ")).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(order, ["b", "a"], "bootorder first, then the rest: {start}");
    let l = h.ok(&["list", "-a", "-H", "-o", "ctid,status,onboot,bootorder"]);
    let lines: Vec<Vec<&str>> = l.lines().map(|x| x.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [vec!["a", "running", "yes", "-"], vec!["b", "running", "-", "5"], vec!["c", "stopped", "no", "-"], vec!["d", "stopped", "-", "-"]]
    );
    // One that cannot start keeps none of the others down; the exit code says it failed.
    h.ok(&["create", "e", "--template", tpl, "--onboot", "yes", "--bootorder", "99", "--init", "/bin/no-such-init"]);
    h.ok(&["stop", "--all"]);
    reboot(&h);
    let o = h.ferry(&["start", "--all"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("start of e failed") && out.contains("2 of 3 started"), "{out}");
    assert_eq!(h.ok(&["list", "-1"]), "a\nb\n");
    h.ok(&["stop", "--all"]);
}

#[test]
fn stop_waits_the_saved_timeout_or_the_given_one_and_fast_does_not_wait() {
    let test = "stop_waits_the_saved_timeout_or_the_given_one_and_fast_does_not_wait";
    if !support::need_root(test) {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    // An init that ignores the halt signal: only the kill after the timeout ends it.
    h.ok(&["create", "st", "--template", h.template.to_str().unwrap(), "--init", "/bin/stubborn"]);
    let init = h.data.join("private/st/bin/stubborn");
    std::fs::write(&init, "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n").unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let timed = |args: &[&str]| {
        h.ok(&["start", "st"]);
        let t0 = Instant::now();
        h.ok(args);
        t0.elapsed()
    };
    h.ok(&["set", "st", "--stop-timeout", "3", "--save"]);
    let waited = timed(&["stop", "st"]);
    assert!(waited >= Duration::from_secs(3), "the saved stop timeout was not waited: {waited:?}");
    let waited = timed(&["stop", "st", "--timeout", "1"]);
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3), "--timeout 1 waited {waited:?}");
    h.ok(&["set", "st", "--stop-timeout", "60", "--save"]);
    let waited = timed(&["stop", "st", "--fast"]);
    assert!(waited < Duration::from_secs(30), "--fast waited for the halt: {waited:?}");
    let l = h.ok(&["list", "-a", "-H", "-o", "stoptimeout", "st"]);
    assert_eq!(l.trim(), "60");
    h.assert_clean();
}
