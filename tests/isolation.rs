//! A container is an untrusted tenant: each test plays its root trying to reach the host
//! (the five attacks of the isolation issue), and checks that the seccomp filter and the
//! masked paths still hold after checkpoint/restore, snapshot restore and a restore from an
//! image on another simulated host. (A live migration is checked in tests/migrate.rs.)

#[path = "support/probe.rs"]
mod probe;
mod support;

use probe::{assert_confined, assert_masked, create_with_probe, probe_exec, probe_loop, start_probe_loop};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{need_root, TestHost};

/// Docker's default capability set as a CapEff mask (what the privileged kind gets).
const DEFAULT_CAPS: u64 = 0xa80425fb;
/// Every capability (what the unprivileged kind gets, in its own user namespace).
const ALL_CAPS: u64 = (1 << 41) - 1;

/// The capabilities the kind of `ct` gives by default.
fn kind_caps(h: &TestHost, ct: &str) -> u64 {
    if h.is_unprivileged(ct) {
        ALL_CAPS
    } else {
        DEFAULT_CAPS
    }
}

fn have(test: &str, tools: &[&str]) -> bool {
    if !need_root(test) {
        return false;
    }
    for tool in tools {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            eprintln!("{test}: skipped: {tool} is missing; run scripts/install-deps.sh");
            return false;
        }
    }
    true
}

fn cap_eff(h: &TestHost, ct: &str) -> u64 {
    let line = h.exec(ct, "grep CapEff /proc/self/status");
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

/// Attack 1: an init that moved into a user namespace of its own (where it reports a full
/// capability set) must not give `exec` host capabilities; an init that moved into another
/// mount namespace is not followed. The containers run unconfined with nesting, so neither
/// the filter nor a refused user namespace can hide an unfixed exec.
#[test]
fn exec_takes_nothing_from_an_init_in_a_user_namespace_of_its_own() {
    if !have("exec_takes_nothing_from_an_init_in_a_user_namespace_of_its_own", &["gcc"]) {
        return;
    }
    let h = TestHost::new();
    let loop_ = "trap 'exit 0' TERM; while :; do sleep 1; done";
    for (ct, unshare) in [("usr", "unshare -U -r"), ("mnt", "unshare -U -r -m")] {
        h.ok(&["create", ct, "--template", h.template.to_str().unwrap(), "--seccomp", "unconfined", "--features", "nesting:on"]);
        let init = h.data.join("private").join(ct).join("init.sh");
        std::fs::write(&init, format!("#!/bin/sh\nexec {unshare} /bin/sh -c \"{loop_}\"\n")).unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = h.data.join("conf").join(format!("{ct}.toml"));
        let mut cfg = ferry_runtime::ContainerConfig::load(&conf).unwrap();
        cfg.init = vec!["/init.sh".into()];
        cfg.save(&conf).unwrap();
        h.ok(&["start", ct]);
    }
    // The attack is in place: PID 1 reports a full bounding set from its own user namespace.
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid_status = |ct: &str| std::fs::read_to_string(format!("/proc/{}/status", h.pid(ct))).unwrap();
    while !pid_status("usr").contains("CapBnd:\t000001ff") {
        assert!(Instant::now() < deadline, "init of usr never entered its user namespace: {}", pid_status("usr"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let host_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let init_userns = std::fs::read_link(format!("/proc/{}/ns/user", h.pid("usr"))).unwrap();
    assert_ne!(host_userns, init_userns);
    if h.is_unprivileged("usr") {
        // The user namespace ferry made is the container's own: an init that left it for one
        // of its own is not followed there, as with any other namespace.
        for ct in ["usr", "mnt"] {
            let e = h.fails(&["exec", ct, "--", "true"]);
            assert!(e.contains("user namespace") && e.contains(&format!("ferry restart {ct}")), "{e}");
            let o = h.cmd().args(["enter", ct]).stdout(Stdio::null()).output().unwrap();
            assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("user namespace"), "{o:?}");
        }
        h.ok(&["stop", "usr"]);
        h.ok(&["stop", "mnt"]);
        return;
    }

    // exec: exactly the configured capabilities, in the host's user namespace.
    assert_eq!(cap_eff(&h, "usr"), DEFAULT_CAPS, "exec gave other capabilities than the configured set");
    let bnd = h.exec("usr", "grep CapBnd /proc/self/status");
    assert_eq!(u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap(), DEFAULT_CAPS, "{bnd}");
    assert_eq!(h.exec("usr", "readlink /proc/self/ns/user").trim(), host_userns.to_str().unwrap());
    // enter too.
    let mut child = h.cmd().args(["enter", "usr"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"grep CapEff /proc/self/status; exit\n").unwrap();
    let out = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    assert!(out.contains(&format!("CapEff:\t{DEFAULT_CAPS:016x}")), "enter: {out}");
    // A capability granted later (saved, not in force) is not given before a restart.
    h.ok(&["set", "usr", "--capability", "net_admin:on", "--save"]);
    assert_eq!(cap_eff(&h, "usr"), DEFAULT_CAPS);

    // An init in another mount namespace is not followed there.
    let e = h.fails(&["exec", "mnt", "--", "true"]);
    assert!(e.contains("mnt namespace") && e.contains("ferry restart mnt"), "{e}");
    let o = h.cmd().args(["enter", "mnt"]).stdout(Stdio::null()).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("mnt namespace"), "{o:?}");
    h.ok(&["stop", "usr"]);
    h.ok(&["stop", "mnt"]);
}

/// Attack 2 and 3: host kernel knobs and host-level calls, with the matching capabilities
/// granted (so only the filter can refuse them); the same probe in an unconfined container
/// shows that the calls work there, so the refusals are the filter's.
#[test]
fn host_level_calls_and_kernel_knobs_are_refused_even_with_the_capability() {
    if !have("host_level_calls_and_kernel_knobs_are_refused_even_with_the_capability", &["gcc"]) {
        return;
    }
    let h = TestHost::new();
    let caps = "sys_admin:on,dac_read_search:on,sys_ptrace:on";
    create_with_probe(&h, "conf", &["--capability", caps]);
    create_with_probe(&h, "open", &["--capability", caps, "--seccomp", "unconfined"]);
    h.ok(&["start", "conf"]);
    h.ok(&["start", "open"]);

    let r = probe_exec(&h, "conf");
    assert_confined(&r, "exec");
    // PID 1's own children too (the filter of init, not only exec's).
    start_probe_loop(&h, "conf");
    assert_confined(&probe_loop(&h, "conf"), "child of init");

    // Unconfined, with the same capabilities: the calls go through (the test can see a
    // missing rule), while the masks still hold. In a user namespace of its own the kernel
    // refuses some of them itself (bpf, userfaultfd and open_by_handle_at want the host's
    // capabilities), so only those it allows there show the filter's part.
    let unprivileged = h.is_unprivileged("open");
    let r = probe_exec(&h, "open");
    let works: &[&str] =
        if unprivileged { &["keyctl", "unshare_user"] } else { &["keyctl", "bpf", "perf_event_open", "userfaultfd", "unshare_user"] };
    for call in works {
        assert_eq!(r.get(*call).map(String::as_str), Some("0"), "unconfined: {call} should work: {r:?}");
    }
    if !unprivileged {
        assert_ne!(r.get("open_by_handle_at").map(String::as_str), Some("1"), "{r:?}");
    }
    assert_masked(&r, "unconfined");

    // status and check show the isolation in force.
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["status", "conf", "--json"])).unwrap();
    assert_eq!(v["isolation"]["seccomp"], "default", "{v}");
    assert!(v["isolation"]["capabilities"].as_array().unwrap().iter().any(|c| c == "SYS_ADMIN"), "{v}");
    assert!(v["isolation"]["masked_paths"].as_array().unwrap().iter().any(|p| p == "/sys/firmware"), "{v}");
    assert_eq!(v["isolation_observed"]["seccomp_mode"], "filter", "{v}");
    assert!(v["isolation_observed"]["readonly"].as_array().unwrap().iter().any(|p| p == "/proc/irq"), "{v}");
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["status", "open", "--json"])).unwrap();
    assert_eq!(v["isolation"]["seccomp"], "unconfined", "{v}");
    assert_eq!(v["isolation_observed"]["seccomp_mode"], "disabled", "{v}");
    let check = h.ok(&["check"]);
    assert!(check.contains("seccomp filters") && check.contains("refused always") && check.contains("/proc/kcore"), "{check}");

    // A capability the filter makes useless is refused, naming the option that helps (for an
    // unprivileged container, which its user namespace never gives that power: --userns off).
    let e = h.fails(&["set", "conf", "--capability", "sys_time:on", "--save"]);
    assert!(e.contains(if unprivileged { "--userns off" } else { "--seccomp" }), "{e}");
    h.ok(&["stop", "conf"]);
    h.ok(&["stop", "open"]);
}

/// Attack 4: host users reach nothing of a container's files, not even a setuid-root program
/// its root left there.
#[test]
fn host_users_cannot_reach_container_files() {
    if !need_root("host_users_cannot_reach_container_files") {
        return;
    }
    let h = TestHost::new();
    // Directories an older ferry left open are closed too.
    for d in ["private", "root", "dump", "snapshots"] {
        std::fs::create_dir_all(h.data.join(d)).unwrap();
        std::fs::set_permissions(h.data.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&h.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.started("own");
    h.exec("own", "cp /bin/busybox /suidsh && chmod 4755 /suidsh");
    let nobody = |cmd: &str, args: &[&Path]| Command::new(cmd).args(args).uid(65534).gid(65534).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let private = h.data.join("private/own");
    let root = h.data.join("root/own");
    assert!(root.join("suidsh").is_file(), "the container's file is visible to root");
    for p in [&private, &root] {
        assert!(!nobody("/bin/ls", &[p.as_path()]).unwrap().success(), "nobody lists {}", p.display());
        assert!(!nobody("/bin/cat", &[&p.join("etc/passwd")]).unwrap().success(), "nobody reads {}", p.display());
        // Running the setuid program fails before it starts.
        let e = Command::new(p.join("suidsh")).args(["id", "-u"]).uid(65534).gid(65534).output();
        assert!(e.is_err() || !e.as_ref().unwrap().status.success(), "nobody ran {}/suidsh: {e:?}", p.display());
    }
    for d in ["conf", "private", "root", "images", "dump", "snapshots", "logs", "locks"] {
        let mode = std::fs::metadata(h.data.join(d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{d} is {mode:o}");
    }
    assert_eq!(std::fs::metadata(&h.run).unwrap().permissions().mode() & 0o077, 0, "run dir open to others");
    h.ok(&["stop", "own"]);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Attack 5: every image holding a container's memory is 0600 (a umask cannot open it), and
/// a CRIU image directory is root's alone.
#[test]
fn memory_images_are_private() {
    if !have("memory_images_are_private", &["criu"]) {
        return;
    }
    let h = TestHost::new();
    h.started("img");
    let out = h.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dump = out.join("dump.img");
    h.ok(&["checkpoint", "img", "--dumpfile", dump.to_str().unwrap(), "--keep-running"]);
    assert_eq!(mode(&dump), 0o600);
    let dir = out.join("criu");
    h.ok(&["checkpoint", "img", "--images-dir", dir.to_str().unwrap(), "--keep-running"]);
    assert_eq!(mode(&dir), 0o700);
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".img") {
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        }
    }
    h.ok(&["snapshot", "create", "img"]);
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["snapshot", "list", "img", "--json"])).unwrap();
    let id = v["snapshots"][0]["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    let state = h.data.join("snapshots/img").join(&id).join("state.img");
    assert_eq!(mode(&state), 0o600);
    let export = out.join("export.img");
    h.ok(&["snapshot", "export", "img", &id, export.to_str().unwrap()]);
    assert_eq!(mode(&export), 0o600);
    // Only the images asked for are there: no temporary file is left beside them.
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["criu", "dump.img", "export.img"]);
    h.ok(&["stop", "img"]);
}

/// The filter and the masks hold for the restored processes after checkpoint + restore,
/// snapshot restore, and restore --from-image on another simulated host.
#[test]
fn filter_and_masks_survive_restore_snapshot_and_another_host() {
    if !have("filter_and_masks_survive_restore_snapshot_and_another_host", &["criu", "gcc"]) {
        return;
    }
    let a = TestHost::new();
    let b = TestHost::new();
    create_with_probe(&a, "keep", &[]);
    a.ok(&["start", "keep"]);
    start_probe_loop(&a, "keep");
    assert_confined(&probe_loop(&a, "keep"), "before any checkpoint");

    a.ok(&["checkpoint", "keep"]);
    a.ok(&["restore", "keep"]);
    assert_confined(&probe_loop(&a, "keep"), "after checkpoint + restore");
    assert_eq!(cap_eff(&a, "keep"), kind_caps(&a, "keep"), "exec after restore");

    a.ok(&["snapshot", "create", "keep"]);
    let v: serde_json::Value = serde_json::from_str(&a.ok(&["snapshot", "list", "keep", "--json"])).unwrap();
    let id = v["snapshots"][0]["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    a.ok(&["snapshot", "restore", "keep", &id]);
    assert_confined(&probe_loop(&a, "keep"), "after snapshot restore");

    let img = a.dir.path().join("keep.img");
    a.ok(&["snapshot", "export", "keep", &id, img.to_str().unwrap()]);
    a.ok(&["stop", "keep"]);
    b.ok(&["restore", "keep", "--from-image", img.to_str().unwrap()]);
    assert_confined(&probe_loop(&b, "keep"), "after restore --from-image on another host");
    assert_confined(&probe_exec(&b, "keep"), "exec on another host");
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["status", "keep", "--json"])).unwrap();
    assert_eq!(v["isolation_observed"]["seccomp_mode"], "filter", "{v}");
    b.ok(&["stop", "keep"]);
}
