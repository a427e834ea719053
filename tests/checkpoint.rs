//! Checkpoint and restore through the CLI with real CRIU: a multi-process container keeps its
//! state (socketpair ping-pong, a pipe between two shells, an appended file, a file lock, a
//! listening socket, an established TCP connection to a client in another netns) across
//! checkpoint/restore, suspend/resume and a restore on a second simulated host; failures change
//! nothing.

mod support;
#[path = "support/topology.rs"]
mod topology;

use ferry_runtime::{ContainerConfig, Ctid, Host};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{need_root, TestHost};
use topology::{Bg, Topology};

const PORT: u16 = 7000;

fn can_run(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    for tool in ["criu", "gcc", "ip", "python3", "iptables"] {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            eprintln!("{test}: skipped: {tool} is missing; run scripts/install-deps.sh");
            return false;
        }
    }
    true
}

/// The static workload helper, built once per test host.
fn worker_binary(h: &TestHost) -> PathBuf {
    h.static_helper("ckpt_worker")
}

fn edit_config(h: &TestHost, ct: &str, f: impl FnOnce(&mut ContainerConfig)) {
    let p = h.data.join("conf").join(format!("{ct}.toml"));
    let mut cfg = ContainerConfig::load(&p).unwrap();
    f(&mut cfg);
    cfg.save(&p).unwrap();
}

/// Create a container with the worker in its private area (limits set), start it, start the
/// workload through `ferry exec`.
fn start_workload(h: &TestHost, ct: &str, cfg_edit: impl FnOnce(&mut ContainerConfig)) {
    h.ok(&["create", ct, "--template", h.template.to_str().unwrap()]);
    edit_config(h, ct, cfg_edit);
    let bin = h.data.join("private").join(ct).join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(worker_binary(h), bin.join("ckpt_worker")).unwrap();
    h.ok(&["start", ct]);
}

fn run_worker(h: &TestHost, ct: &str) {
    // Loopback up (network setup at start may not do it yet): the restore must keep it up.
    let st = Command::new("nsenter").arg(format!("--net=/proc/{}/ns/net", h.pid(ct))).args(["ip", "link", "set", "lo", "up"]).status().unwrap();
    assert!(st.success());
    h.exec(ct, &format!("mkdir -p /root/w && /usr/local/bin/ckpt_worker /root/w {PORT} </dev/null >/dev/null 2>&1 &"));
    // Two shells joined by a pipe: a ticker and a counter.
    h.exec(
        ct,
        "(while :; do echo t; sleep 0.05; done | (n=0; while read l; do n=$((n+1)); echo $n > /root/w/pipe.tmp; mv /root/w/pipe.tmp /root/w/pipe; done)) </dev/null >/dev/null 2>&1 &",
    );
    let c = counter(h, ct);
    wait_for(Duration::from_secs(10), "worker ticking", || counter(h, ct) > c + 5 && read_num(&wfile(h, ct, "pipe")) > 3);
}

fn wfile(h: &TestHost, ct: &str, name: &str) -> PathBuf {
    h.data.join("private").join(ct).join("root/w").join(name)
}

fn read_num(p: &Path) -> u64 {
    std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn counter(h: &TestHost, ct: &str) -> u64 {
    read_num(&wfile(h, ct, "counter"))
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The worker's state is consistent: no error, the appended log holds 1..=N without a gap.
fn assert_worker_intact(h: &TestHost, ct: &str) -> u64 {
    let err = wfile(h, ct, "error");
    assert!(!err.exists(), "worker failed: {}", std::fs::read_to_string(&err).unwrap_or_default());
    let log = std::fs::read_to_string(wfile(h, ct, "append.log")).unwrap();
    let mut n = 0u64;
    for l in log.lines() {
        let v: u64 = l.parse().unwrap_or_else(|_| panic!("bad line {l:?}"));
        assert_eq!(v, n + 1, "append.log has a gap or repeat after {n}");
        n = v;
    }
    n
}

/// The counter advances after the restore, continuing from where the dump left it.
fn assert_continues(h: &TestHost, ct: &str, at_dump: u64) {
    wait_for(Duration::from_secs(10), "counter to continue", || counter(h, ct) > at_dump + 10);
    let p = read_num(&wfile(h, ct, "pipe"));
    wait_for(Duration::from_secs(10), "pipe counter to continue", || read_num(&wfile(h, ct, "pipe")) > p + 3);
    assert_worker_intact(h, ct);
}

fn ps(h: &TestHost, ct: &str) -> String {
    h.exec(ct, "ps -o pid,args")
}

/// Echo round trip to the container's listener from inside its netns (a new connection).
fn echo_via_loopback(pid: i32) -> String {
    let py =
        format!("import socket;s=socket.create_connection(('127.0.0.1',{PORT}),timeout=5);s.sendall(b'ping\\n');print(s.recv(100).decode().strip())");
    let o = Command::new("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(["python3", "-c", &py]).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&o.stdout).trim(), String::from_utf8_lossy(&o.stderr).trim())
}

#[test]
fn checkpoint_restore_suspend_resume_keep_state() {
    if !can_run("checkpoint_restore_suspend_resume_keep_state") {
        return;
    }
    let h = TestHost::new();
    // The limits go along where this host's cgroups have their controllers (not in cgroup
    // mode v2 on a hybrid host, whose v2 hierarchy has neither pids nor memory).
    let limited = h.has_controllers_for("checkpoint_restore_suspend_resume_keep_state (limits part)", &["numproc", "ram"]);
    start_workload(&h, "ck", |c| {
        if limited {
            c.resources.numproc = Some(300);
            c.resources.ram = Some(256 << 20);
        }
    });
    run_worker(&h, "ck");
    let before = ps(&h, "ck");
    assert!(before.contains("ckpt_worker"), "{before}");

    let out = h.ok(&["checkpoint", "ck"]);
    assert!(out.contains("freeze") && out.contains("dump") && out.contains("write"), "{out}");
    // Its image is in the default place: vzctl's status word "suspended" says so.
    assert_eq!(h.ok(&["status", "ck"]).trim(), "ck stopped suspended");
    assert!(h.mounts().is_empty(), "root still mounted: {:?}", h.mounts());
    let at_dump = counter(&h, "ck");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(&h, "ck"), at_dump, "processes still run after the checkpoint");
    let img = h.data.join("dump/ck/dump.img");
    assert!(img.is_file());

    // inspect shows the summary recorded at dump time.
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["image", "inspect", img.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v["ctid"], "ck");
    let procs: Vec<String> = v["summary"]["processes"].as_array().unwrap().iter().map(|p| p["command"].as_str().unwrap().to_string()).collect();
    assert_eq!(procs.iter().filter(|c| c.contains("ckpt_worker")).count(), 2, "{procs:?}");
    assert!(v["summary"]["memory_bytes"].as_u64().unwrap() > 0);
    let tcp = v["summary"]["tcp_connections"].as_array().unwrap();
    assert!(tcp.iter().any(|t| t["state"] == "LISTEN" && t["local"].as_str().unwrap().ends_with(&format!(":{PORT}"))), "{tcp:?}");
    assert!(h.ok(&["image", "verify", img.to_str().unwrap()]).contains("intact"));

    let out = h.ok(&["restore", "ck"]);
    assert!(out.contains("restore") && out.contains("ms"), "{out}");
    assert!(!img.exists(), "a restore from the default place keeps the image (a later start would resume it)");
    assert_continues(&h, "ck", at_dump);
    let after = ps(&h, "ck");
    let pids = |s: &str| s.lines().filter(|l| !l.contains(" ps ")).map(|l| l.to_string()).collect::<Vec<_>>();
    for l in pids(&before).iter().filter(|l| l.contains("ckpt_worker") || l.contains("trap")) {
        assert!(after.contains(l.as_str()), "process {l:?} missing after restore:\n{after}");
    }
    assert_eq!(echo_via_loopback(h.pid("ck")), "ping", "listening socket lost");
    assert!(h.exec("ck", "cat /proc/locks").contains("FLOCK"), "the worker's file lock was not restored");
    // The restored tree is in the container's cgroup (v1: every hierarchy; v2: its one
    // directory), with the limits of the config.
    let cg = h.cgroup("ck");
    for f in cg.procs_files() {
        let procs = std::fs::read_to_string(&f).unwrap();
        assert!(procs.lines().count() >= 5, "restored tree not in {}: {procs}", f.display());
    }
    if limited && h.is_v1() {
        assert_eq!(h.cg_file("ck", "pids", "pids.max"), "300");
        assert_eq!(h.cg_file("ck", "memory", "memory.limit_in_bytes"), (256u64 << 20).to_string());
    }
    // The kept CRIU logs.
    assert!(h.data.join("logs/ck/checkpoint.log").is_file() && h.data.join("logs/ck/restore.log").is_file());

    // checkpoint --keep-running leaves it running and consistent.
    let keep = h.dir.path().join("keep.img");
    let out = h.ok(&["checkpoint", "ck", "--keep-running", "--dumpfile", keep.to_str().unwrap(), "--compress", "3"]);
    assert!(out.contains("still running"), "{out}");
    let c = counter(&h, "ck");
    assert_continues(&h, "ck", c);

    // suspend/resume: the default location, removed after resume.
    h.ok(&["suspend", "ck"]);
    assert_eq!(h.ok(&["status", "ck"]).trim(), "ck stopped suspended");
    let at_suspend = counter(&h, "ck");
    assert!(h.data.join("dump/ck/dump.img").is_file());
    h.ok(&["resume", "ck"]);
    assert!(!h.data.join("dump/ck/dump.img").exists(), "resume keeps the dump");
    assert_continues(&h, "ck", at_suspend);

    h.ok(&["stop", "ck"]);
    h.assert_clean();

    // The host table names CRIU and what is missing.
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["check", "--json"])).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["feature"] == "CRIU version" && r["status"] == "ok"), "{rows:?}");
    assert_eq!(v["advice"], serde_json::json!([]), "no advice on getting CRIU when it is new enough");
}

#[test]
fn failed_dump_leaves_the_container_running_and_thawed() {
    if !can_run("failed_dump_leaves_the_container_running_and_thawed") {
        return;
    }
    let h = TestHost::new();
    start_workload(&h, "cf", |_| {});
    run_worker(&h, "cf");
    let pid = h.pid("cf");
    h.hold_host_file("cf");

    let err = h.fails(&["checkpoint", "cf"]);
    assert!(err.contains("container cf: checkpoint"), "{err}");
    assert!(err.contains("Error") || err.contains("error"), "CRIU's error lines missing: {err}");
    let log = h.data.join("logs/cf/checkpoint.log");
    assert!(log.is_file() && err.contains(log.to_str().unwrap()), "log path missing from: {err}");
    assert_eq!(h.pid("cf"), pid, "container was restarted or stopped");
    let freezer = h.cgroup("cf").freezer();
    assert!(!freezer.is_frozen().unwrap() && !freezer.is_requested().unwrap(), "left frozen");
    assert!(!h.data.join("dump/cf/dump.img").exists(), "a failed checkpoint left an image");
    let c = counter(&h, "cf");
    assert_continues(&h, "cf", c);
    h.ok(&["stop", "cf"]);
    h.assert_clean();
}

#[test]
fn restore_refusals_change_nothing() {
    if !can_run("restore_refusals_change_nothing") {
        return;
    }
    let h = TestHost::new();
    h.started("ra");
    h.ok(&["create", "rb", "--template", h.template.to_str().unwrap()]);
    let img = h.dir.path().join("ra.img");
    h.ok(&["checkpoint", "ra", "--keep-running", "--dumpfile", img.to_str().unwrap()]);
    let pid = h.pid("ra");

    let e = h.fails(&["restore", "ra", "--dumpfile", img.to_str().unwrap()]);
    assert!(e.contains("already running"), "{e}");
    assert_eq!(h.pid("ra"), pid);

    let e = h.fails(&["restore", "rb", "--dumpfile", img.to_str().unwrap()]);
    assert!(e.contains("holds container ra, not rb"), "{e}");

    let e = h.fails(&["restore", "rb"]);
    assert!(e.contains("no image at") && e.contains("ferry checkpoint rb"), "{e}");

    // A corrupted copy: one byte flipped in the middle.
    let mut bytes = std::fs::read(&img).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = h.dir.path().join("bad.img");
    std::fs::write(&bad, &bytes).unwrap();
    h.ok(&["stop", "ra"]);
    let e = h.fails(&["restore", "ra", "--dumpfile", bad.to_str().unwrap()]);
    assert!(e.contains("bad.img"), "{e}");
    assert!(h.fails(&["image", "verify", bad.to_str().unwrap()]).contains("damaged"));
    for ct in ["ra", "rb"] {
        assert_eq!(h.ok(&["status", ct]).trim(), format!("{ct} stopped"));
    }
    h.assert_clean();
    // Nothing left in the work area.
    let work = h.data.join("dump/.work");
    assert!(std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0) == 0, "work dirs left in {}", work.display());
    // A CRIU failure during the restore (a process image missing from a plain image
    // directory): the mount, cgroups and state made for it are undone, the images stay.
    let dir = h.dir.path().join("ra-dir");
    h.ok(&["start", "ra"]);
    h.ok(&["checkpoint", "ra", "--images-dir", dir.to_str().unwrap()]);
    let core =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("core-")).unwrap();
    let saved = std::fs::read(&core).unwrap();
    std::fs::remove_file(&core).unwrap();
    let files_before = std::fs::read_dir(&dir).unwrap().count();
    let e = h.fails(&["restore", "ra", "--images-dir", dir.to_str().unwrap()]);
    assert!(e.contains("container ra: restore") && e.contains("restore.log"), "{e}");
    assert_eq!(h.ok(&["status", "ra"]).trim(), "ra stopped");
    h.assert_clean();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), files_before, "the restore changed the image directory");
    std::fs::write(&core, saved).unwrap();
    h.ok(&["restore", "ra", "--images-dir", dir.to_str().unwrap()]);
    h.ok(&["stop", "ra"]);

    // The intact image still restores.
    h.ok(&["restore", "ra", "--dumpfile", img.to_str().unwrap()]);
    h.ok(&["stop", "ra"]);
    h.assert_clean();
}

#[test]
fn a_container_left_frozen_is_thawed_by_the_next_command() {
    if !can_run("a_container_left_frozen_is_thawed_by_the_next_command") {
        return;
    }
    let h = TestHost::new();
    h.started("fz");
    // Frozen behind ferry's back (v1 freezer.state or v2 cgroup.freeze, whichever this
    // host's cgroup mode uses), as a checkpoint that died would leave it.
    let freezer = h.cgroup("fz").freezer();
    freezer.freeze().unwrap();
    let o = h.ferry(&["exec", "fz", "--", "true"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("left frozen"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!freezer.is_frozen().unwrap() && !freezer.is_requested().unwrap());
    h.ok(&["stop", "fz"]);
    h.assert_clean();
}

// ---------------------------------------------------------------------------------------
// With the network: a TCP connection from a client netns survives checkpoint/restore on the
// same host and a restore on a second simulated host.

fn host_of(h: &TestHost) -> Host {
    h.runtime_host()
}

/// `ferry start` made the venet plumbing of the container (its outer veth exists here).
fn ensure_net(h: &TestHost, ct: &str) {
    let host = host_of(h);
    let c = Ctid::new(ct).unwrap();
    let cfg = ferry_runtime::container::load_config(&host, &c).unwrap();
    let outer = ferry_runtime::net::criu_veth_externals(&cfg)[0].1.clone();
    assert!(ferry_runtime::net::tools::link_exists(&outer), "ferry start made no outer veth {outer} for {ct}");
}

/// Remove the plumbing of a container a failed test left running (stop does it otherwise).
fn drop_net(h: &TestHost, ct: &str) {
    let host = host_of(h);
    if let Ok(Some(ns)) = ferry_runtime::container::restore::load_net_state(&host, &Ctid::new(ct).unwrap()) {
        let _ = ferry_runtime::net::teardown(&host, &ns);
    }
}

struct NetGuard<'a>(&'a TestHost, &'a str);
impl Drop for NetGuard<'_> {
    fn drop(&mut self) {
        drop_net(self.0, self.1);
    }
}

#[test]
fn tcp_connection_survives_restore_here_and_on_a_second_host() {
    if !can_run("tcp_connection_survives_restore_here_and_on_a_second_host") {
        return;
    }
    let t = Topology::new(2, 1);
    let a = TestHost::new();
    let b = TestHost::new();
    let addr = t.ct_ip4(10);
    // This thread (and every ferry it runs) lives in host A's netns.
    t.enter(t.host(0));
    let limited = a.has_controllers_for("tcp_connection_survives_restore_here_and_on_a_second_host (limits part)", &["numproc"]);
    start_workload(&a, "cn", |c| {
        c.net.ipadd = vec![addr];
        if limited {
            c.resources.numproc = Some(321);
        }
    });
    let _ga = NetGuard(&a, "cn");
    let _gb = NetGuard(&b, "cn");
    ensure_net(&a, "cn");
    run_worker(&a, "cn");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/tcp_client.py");
    let mut client = Bg(t.spawn_in(t.client(0), &format!("python3 {} {addr} {PORT} 14 --json", script.display())));
    let _ = &mut client;
    std::thread::sleep(Duration::from_millis(1500));

    // Same host: checkpoint and restore.
    a.ok(&["checkpoint", "cn"]);
    assert!(t.leftovers(t.host(0)).is_empty() || wait_clean(&t, 0), "host A keeps network objects: {:?}", t.leftovers(t.host(0)));
    let at_dump = counter(&a, "cn");
    a.ok(&["restore", "cn"]);
    assert_continues(&a, "cn", at_dump);
    assert!(a.exec("cn", "ip -4 addr show dev venet0").contains(&format!("{addr}/32")));
    std::thread::sleep(Duration::from_millis(1500));

    // To host B: image + a copy of the private area; B has its own data, run dir, cgroups, netns.
    let img = a.dir.path().join("move.img");
    a.ok(&["checkpoint", "cn", "--dumpfile", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&a.ok(&["image", "inspect", img.to_str().unwrap(), "--json"])).unwrap();
    let tcp = v["summary"]["tcp_connections"].as_array().unwrap();
    assert!(tcp.iter().any(|c| c["state"] == "ESTABLISHED" && c["local"] == format!("{addr}:{PORT}")), "{tcp:?}");
    let addrs = v["summary"]["addresses"].to_string();
    assert!(addrs.contains(&format!("{addr}/32")), "{addrs}");
    drop_net(&a, "cn");
    assert!(wait_clean(&t, 0), "host A keeps network objects: {:?}", t.leftovers(t.host(0)));
    let at_move = counter(&a, "cn");
    std::fs::create_dir_all(b.data.join("private")).unwrap();
    let cp = Command::new("cp").arg("-a").arg(a.data.join("private/cn")).arg(b.data.join("private/cn")).status().unwrap();
    assert!(cp.success());
    t.enter(t.host(1));
    b.ok(&["restore", "cn", "--dumpfile", img.to_str().unwrap()]);
    assert_continues(&b, "cn", at_move);
    assert!(b.data.join("conf/cn.toml").is_file(), "config not installed from the image");
    assert!(b.exec("cn", "ip -4 addr show dev venet0").contains(&format!("{addr}/32")));
    if limited {
        assert_eq!(b.cg_file("cn", "pids", "pids.max"), "321");
    }
    assert!(b.cgroup("cn").pids().unwrap().len() >= 3, "restored tree not in B's cgroup {}", b.cgroup("cn").rel());

    let out = client.0.wait_with_output_ref();
    assert!(out.contains("\"ok\": true"), "client: {out}");
    b.ok(&["stop", "cn"]);
    drop_net(&b, "cn");
    assert!(wait_clean(&t, 1), "host B keeps network objects: {:?}", t.leftovers(t.host(1)));
    b.assert_clean();
    t.enter(t.host(0));
    a.ok(&["destroy", "cn"]);
    a.assert_clean();
}

/// A dead netns's veth goes away asynchronously.
fn wait_clean(t: &Topology, host: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if t.leftovers(t.host(host)).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

trait WaitOut {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitOut for std::process::Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(o) = self.stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

/// A service that dropped to another user, as postgres or nginx workers do: CRIU reads its
/// resource limits, which takes CAP_SYS_RESOURCE over it. Host root may lack that capability
/// (this machine kind does): then a privileged container with such a service cannot be
/// checkpointed and the error names the capability and `--userns on`; an unprivileged one can,
/// since host root owns its user namespace and so holds every capability inside it. Both kinds
/// are made here, whatever kind the suite's pass makes.
#[test]
fn a_process_of_another_user_is_checkpointed_or_the_missing_capability_is_named() {
    if !can_run("a_process_of_another_user_is_checkpointed_or_the_missing_capability_is_named") {
        return;
    }
    let h = TestHost::new();
    let other_user = |ct: &str| h.exec(ct, "ps -o user,comm").lines().any(|l| l.contains("sleep") && !l.contains("root"));
    for (ct, userns) in [("cp", "off"), ("cu", "on")] {
        h.ok(&["create", ct, "--template", h.template.to_str().unwrap(), "--userns", userns]);
        h.ok(&["start", ct]);
        h.exec(ct, "su -s /bin/sh nobody -c 'exec sleep 1000' </dev/null >/dev/null 2>&1 &");
        wait_for(Duration::from_secs(10), "a process running as nobody", || other_user(ct));
    }
    // CAP_SYS_RESOURCE is capability 24.
    if ferry_runtime::criu::check::has_cap_in_bounding_set(24) {
        h.ok(&["checkpoint", "cp"]);
        h.ok(&["restore", "cp"]);
    } else {
        // Without it the dump cannot work; the error says why and the way out, and the
        // container runs on.
        let err = h.fails(&["checkpoint", "cp"]);
        assert!(err.contains("CAP_SYS_RESOURCE") && err.contains("container cp: checkpoint") && err.contains("--userns on"), "{err}");
    }
    assert!(other_user("cp"), "the service of the privileged container is gone");
    // Unprivileged: checkpointed and restored with the service, on any host.
    h.ok(&["checkpoint", "cu"]);
    h.ok(&["restore", "cu"]);
    assert!(other_user("cu"), "the service of the unprivileged container did not come back");
    for ct in ["cp", "cu"] {
        h.ok(&["stop", ct]);
    }
    h.assert_clean();
}

#[test]
fn connections_not_yet_accepted_do_not_stop_a_checkpoint() {
    if !can_run("connections_not_yet_accepted_do_not_stop_a_checkpoint") {
        return;
    }
    let h = TestHost::new();
    start_workload(&h, "cb", |_| {});
    let helper = h.dir.path().join("backlog_listener");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/backlog_listener.c");
    let o = Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&helper).arg(&src).output().unwrap();
    assert!(o.status.success(), "gcc: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::copy(&helper, h.data.join("private/cb/usr/local/bin/backlog_listener")).unwrap();
    let st = Command::new("nsenter").arg(format!("--net=/proc/{}/ns/net", h.pid("cb"))).args(["ip", "link", "set", "lo", "up"]).status().unwrap();
    assert!(st.success());
    h.exec("cb", "/usr/local/bin/backlog_listener 9000 </dev/null >/dev/null 2>&1 &");
    // Port 9000 is 2328 in /proc/net/tcp; 0A = LISTEN, 01 = ESTABLISHED.
    let tcp = || h.exec("cb", "cat /proc/net/tcp");
    wait_for(Duration::from_secs(10), "the listener", || tcp().lines().any(|l| l.contains(":2328 00000000:0000 0A")));
    // A client inside whose connection waits in the backlog: the server side is "in flight".
    h.exec("cb", "(sleep 1000 | nc 127.0.0.1 9000) </dev/null >/dev/null 2>&1 &");
    wait_for(Duration::from_secs(10), "a connection in the backlog", || tcp().lines().any(|l| l.contains(":2328 01")));
    h.ok(&["checkpoint", "cb"]);
    h.ok(&["restore", "cb"]);
    assert!(tcp().lines().any(|l| l.contains(":2328 00000000:0000 0A")), "the listener is not back: {}", tcp());
    h.ok(&["stop", "cb"]);
    h.assert_clean();
}
