//! Live and offline migration through the `ferry` command between simulated hosts (network
//! namespaces, each with its own data dir, run dir and cgroup parent), over a real Debian sshd
//! started in each destination's namespace. A client in its own namespace keeps one TCP
//! connection to the container doing round trips; every test checks that exactly one host
//! runs the container afterwards and that the other keeps nothing of it.

#[path = "support/probe.rs"]
mod probe;
#[path = "support/ssh.rs"]
mod ssh;
#[path = "support/sshhosts.rs"]
mod sshhosts;
mod support;
#[path = "support/topology.rs"]
mod topology;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{TestHost, FERRY};
use topology::Topology;

/// The simulated hosts of these tests (their methods are below).
type Sim = sshhosts::SshHosts;

const PORT: u16 = sshhosts::ECHO_PORT;

fn can_run(test: &str) -> bool {
    if !support::need_root(test) {
        return false;
    }
    for tool in ["criu", "ip", "nsenter", "iptables", "gcc", "pgrep"] {
        if !Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success()) {
            eprintln!("{test}: skipped: {tool} is not installed (scripts/install-deps.sh)");
            return false;
        }
    }
    if !ssh::available() {
        eprintln!("{test}: skipped: openssh (sshd, ssh, ssh-keygen) is not installed (scripts/install-deps.sh)");
        return false;
    }
    true
}

/// Tests that inject faults into the real binary (`FERRY_TEST_FAULT`) need it built with the
/// feature `fault-injection` (scripts/test.sh builds so; a release build has no such switch).
fn can_inject_faults(test: &str) -> bool {
    if !cfg!(feature = "fault-injection") {
        eprintln!("{test}: skipped: ferry was built without the feature fault-injection (cargo nextest run --features fault-injection, as scripts/test.sh does)");
        return false;
    }
    can_run(test)
}

impl Sim {
    fn h(&self, i: usize) -> &TestHost {
        &self.hosts[i]
    }

    /// `ferry migrate CT root@HOST_to ...` run on host `from`; `remote_env` goes to the
    /// destination's ferry (e.g. `FERRY_TEST_FAULT=...`).
    fn migrate_cmd(&self, from: usize, to: usize, ct: &str, extra: &[&str], remote_env: &str) -> Command {
        let remote = format!("{} {remote_env} {FERRY}", self.h(to).env_prefix());
        let mut c = self.h(from).cmd();
        c.args(["migrate", ct, &format!("root@{}", self.t.host(to).ip4), "--ssh-opts", &self.sshd[to].ssh_opts(), "--remote-ferry", &remote]);
        c.args(extra);
        c
    }

    fn migrate(&self, from: usize, to: usize, ct: &str, extra: &[&str], remote_env: &str) -> std::process::Output {
        self.migrate_cmd(from, to, ct, extra, remote_env).output().expect("run ferry migrate")
    }

    fn migrate_ok(&self, from: usize, to: usize, ct: &str, extra: &[&str]) -> String {
        let o = self.migrate(from, to, ct, extra, "");
        assert!(o.status.success(), "migrate {from}->{to} failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Everything host `i` still holds of `ct`; empty when clean.
    fn leftovers(&self, i: usize, ct: &str) -> Vec<String> {
        let h = self.h(i);
        let mut left = Vec::new();
        for p in [h.data.join("conf").join(format!("{ct}.toml")), h.data.join("migrating").join(format!("{ct}.toml"))] {
            if p.exists() {
                left.push(format!("config {}", p.display()));
            }
        }
        for sub in ["private", "root", "images", "disks", "dump"] {
            if let Ok(rd) = std::fs::read_dir(h.data.join(sub)) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().contains(ct) {
                        left.push(format!("file {}", e.path().display()));
                    }
                }
            }
        }
        // The data dir itself may be a test's own small filesystem.
        left.extend(h.mounts().into_iter().filter(|m| m != &h.data).map(|m| format!("mount {}", m.display())));
        for d in h.cgroup_dirs() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                    left.push(format!("cgroup {}", e.path().display()));
                }
            }
        }
        left.extend(self.t.leftovers(self.t.host(i)));
        left
    }

    /// Wait (a receiver cleans up when its connection ends) until host `i` is clean.
    fn assert_clean(&self, i: usize, ct: &str) {
        let t0 = Instant::now();
        loop {
            let left = self.leftovers(i, ct);
            if left.is_empty() {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "host {i} keeps {ct}: {left:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like `container` (on `ip`), plus `files_mb` MB of random data in /root/big and a
    /// process holding `mem_mb` MB of memory that does not compress.
    fn big_container(&self, i: usize, ct: &str, ip: &str, files_mb: u32, mem_mb: u32) {
        let h = self.h(i);
        h.ok(&["create", ct, "--template", h.template.to_str().unwrap(), "--ipadd", ip]);
        let private = h.data.join("private").join(ct);
        std::fs::create_dir_all(private.join("usr/local/bin")).unwrap();
        std::fs::copy(static_helper(h, "mem_toucher"), private.join("usr/local/bin/mem_toucher")).unwrap();
        if files_mb > 0 {
            let of = format!("of={}", private.join("root/big").display());
            let st = Command::new("dd").args(["if=/dev/urandom", "bs=1M", &format!("count={files_mb}"), "status=none", &of]).status().unwrap();
            assert!(st.success());
        }
        h.ok(&["start", ct]);
        h.exec(ct, &format!("ip link set lo up; nc -ll -p {PORT} -e /bin/cat </dev/null >/dev/null 2>&1 &"));
        h.exec(ct, "(i=0; while :; do i=$((i+1)); echo $i >> /root/ctr; usleep 10000; done) </dev/null >/dev/null 2>&1 &");
        h.exec(ct, &format!("/usr/local/bin/mem_toucher {mem_mb} </dev/null >/dev/null 2>&1 &"));
        std::thread::sleep(Duration::from_millis(1500));
    }
}

fn ctid() -> String {
    // Host interface names derive from the CTID: unique per test run.
    format!("m{}", topology::unique_id())
}

/// The counter file must read 1, 2, ..., n (nothing lost at the freeze, nothing twice).
fn assert_counter_continuous(h: &TestHost, ct: &str) -> u64 {
    let s = h.exec(ct, "cat /root/ctr");
    let mut want = 1u64;
    for l in s.lines() {
        let n: u64 = l.trim().parse().unwrap_or_else(|_| panic!("bad counter line {l:?}"));
        assert_eq!(n, want, "counter file has a gap or a repeat at line {want}");
        want += 1;
    }
    assert!(want > 10, "counter barely ran: {s}");
    want - 1
}

/// The counter loop runs on (it was restored, not just copied).
fn assert_counter_runs(h: &TestHost, ct: &str) {
    let n = assert_counter_continuous(h, ct);
    std::thread::sleep(Duration::from_millis(300));
    let m = assert_counter_continuous(h, ct);
    assert!(m > n, "the counter loop does not run on: {n} then {m}");
}

/// PID namespace of the container's init (to find its processes by, on any host).
fn pidns(h: &TestHost, ct: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{}/ns/pid", h.pid(ct))).unwrap()
}

fn processes_in(ns: &Path) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            if std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns) {
                v.push(pid);
            }
        }
    }
    v
}

/// No process of the old pid namespace is left. Killed tasks and their zombies can take a
/// moment to go on a loaded machine (they are reaped by whoever inherited them); a process
/// that stays longer is a leak.
fn assert_no_processes(ns: &Path, what: &str) {
    let t0 = Instant::now();
    loop {
        let left = processes_in(ns);
        if left.is_empty() {
            return;
        }
        let desc: Vec<String> = left.iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default()).collect();
        if t0.elapsed() > Duration::from_secs(5) {
            panic!("processes of the container left on {what}: {desc:#?}");
        }
        eprintln!("still going on {what} after {:?}: {desc:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn neigh_mac(t: &Topology, ip: &str) -> String {
    let c = &t.client(0).name;
    topology::sh(&format!("ip -n {c} neigh show {ip} dev eth0"))
}

/// One TCP connection from the client netns doing echo round trips (every 20 ms) until stopped.
struct Client {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<ClientStats, String>>>,
}

#[derive(Debug)]
struct ClientStats {
    round_trips: u64,
    longest_pause: Duration,
}

impl Client {
    fn start(t: &Topology, ip: &str) -> Client {
        let ns = t.client(0).netns_path();
        let addr = format!("{ip}:{PORT}");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let s = topology::connect_from(&ns, &addr);
            let _ = tx.send(s.as_ref().map(|_| ()).map_err(|e| e.clone()));
            let mut s = s?;
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let (mut n, mut last, mut longest) = (0u64, Instant::now(), Duration::ZERO);
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                let msg = format!("{n}\n");
                s.write_all(msg.as_bytes()).map_err(|e| format!("round trip {n}: send: {e}"))?;
                let mut got = String::new();
                r.read_line(&mut got).map_err(|e| format!("round trip {n}: receive: {e}"))?;
                if got != msg {
                    return Err(format!("round trip {n}: sent {msg:?}, got {got:?}"));
                }
                longest = longest.max(last.elapsed());
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(ClientStats { round_trips: n, longest_pause: longest })
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("client thread").expect("client connects");
        std::thread::sleep(Duration::from_millis(200));
        Client { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> ClientStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap().unwrap_or_else(|e| panic!("the client's connection broke: {e}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn live_migration_there_and_back_keeps_the_connection() {
    if !can_run("live_migration_there_and_back_keeps_the_connection") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(21).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let client = Client::start(&sim.t, &ip);
    assert!(neigh_mac(&sim.t, &ip).contains(&sim.t.host(0).mac_str()));
    let ns_a = pidns(sim.h(0), &ct);
    // An application log that only grows: after its first copy it goes as its new tail.
    sim.h(0).exec(
        &ct,
        "head -c 100000 /dev/urandom > /root/app.log; (while :; do echo tick >> /root/app.log; usleep 5000; done) </dev/null >/dev/null 2>&1 &",
    );
    let log_head = |h: &TestHost| h.exec(&ct, "head -c 100000 /root/app.log | md5sum");
    let head_before = log_head(sim.h(0));
    // A process that probes the seccomp filter and the masks it got back after the restore.
    probe::install(sim.h(0), &ct);
    probe::start_probe_loop(sim.h(0), &ct);

    // A -> B, with the JSON report.
    let out = sim.migrate_ok(0, 1, &ct, &["--json"]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json: {e}: {out}"));
    let passes = rep["passes"].as_array().unwrap().iter().chain(std::iter::once(&rep["final_sync"]));
    let appended: u64 = passes.map(|p| p["appended"].as_u64().unwrap_or(0)).sum();
    assert!(appended >= 1, "the growing log never went as its tail: {rep}");
    assert_eq!(log_head(sim.h(1)), head_before, "the log's first bytes differ on B");
    assert_eq!(rep["mode"], "online", "{rep}");
    for k in ["preflight_ms", "dump_ms", "image_transfer_ms", "restore_ms", "announce_ms", "frozen_ms", "total_ms", "image_bytes"] {
        assert!(rep[k].as_u64().is_some(), "{k} missing: {rep}");
    }
    assert!(rep["passes"].as_array().is_some_and(|p| !p.is_empty()), "{rep}");
    assert!(rep["final_sync"].is_object(), "{rep}");
    assert!(rep["image_bytes"].as_u64().unwrap() > 0);
    eprintln!("A->B frozen {} ms, total {} ms", rep["frozen_ms"], rep["total_ms"]);
    assert_eq!(sim.status(1, &ct), "running");
    assert_eq!(sim.status(0, &ct), "absent");
    assert_counter_runs(sim.h(1), &ct);
    probe::assert_confined(&probe::probe_loop(sim.h(1), &ct), "after a live migration");
    assert_no_processes(&ns_a, "A");
    // B restored it into its own cgroup, in the run's cgroup mode (the remote ferry got it).
    let cg_b = sim.h(1).cgroup(&ct);
    assert!(cg_b.pids().unwrap().len() >= 3, "the container's processes are not in B's cgroup {}", cg_b.dir("pids").display());
    sim.assert_clean(0, &ct);
    let n = neigh_mac(&sim.t, &ip);
    assert!(n.contains(&sim.t.host(1).mac_str()), "client's neighbour entry for {ip} not moved to B: {n}");

    // B -> A, with the timing table.
    let ns_b = pidns(sim.h(1), &ct);
    let out = sim.migrate_ok(1, 0, &ct, &["--times"]);
    eprintln!("{out}");
    for stage in ["preflight", "sync pass 1", "dump", "final sync", "image transfer", "restore", "announce", "frozen", "total"] {
        assert!(out.contains(stage), "--times lacks {stage}: {out}");
    }
    assert_eq!(sim.status(0, &ct), "running");
    assert_counter_runs(sim.h(0), &ct);
    assert_no_processes(&ns_b, "B");
    sim.assert_clean(1, &ct);
    let n = neigh_mac(&sim.t, &ip);
    assert!(n.contains(&sim.t.host(0).mac_str()), "client's neighbour entry for {ip} not moved back to A: {n}");

    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
    assert!(st.round_trips > 20);
}

/// A migration running in the background with its stage lines (FERRY_LOG=info) on a channel.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    said: Arc<std::sync::Mutex<String>>,
}

impl Running {
    fn start(sim: &Sim, from: usize, to: usize, ct: &str, remote_env: &str) -> Running {
        let mut c = sim.migrate_cmd(from, to, ct, &[], remote_env);
        c.env("FERRY_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn ferry migrate");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let said = Arc::new(std::sync::Mutex::new(String::new()));
        let said2 = said.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                said2.lock().unwrap().push_str(&format!("[{:>5} ms] {l}\n", t0.elapsed().as_millis()));
                let _ = tx.send(l);
            }
        });
        Running { child, lines, said }
    }

    /// Block until a stage line containing `what` appears.
    fn wait_stage(&self, what: &str) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains(what) => return,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        panic!("no stage {what:?}; ferry said:\n{}", self.said.lock().unwrap());
    }

    /// Exit status and everything ferry printed on stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let st = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let s = self.said.lock().unwrap().clone();
        (st, s)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL the ssh client(s) a migration from host `from` to `to` runs (found by the key).
fn kill_ssh(sim: &Sim, to: usize) -> usize {
    let key = sim.sshd[to].client_key.display().to_string();
    let out = Command::new("pgrep").args(["-f", &key]).output().unwrap();
    let mut n = 0;
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ssh") {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            n += 1;
        }
    }
    n
}

fn static_helper(h: &TestHost, name: &str) -> PathBuf {
    h.static_helper(name)
}

#[test]
fn faults_after_the_freeze_roll_back_to_the_source() {
    if !can_inject_faults("faults_after_the_freeze_roll_back_to_the_source") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(22).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let client = Client::start(&sim.t, &ip);

    for (fault, says) in [("die-after-image", ""), ("fail-restore", "reported an error: restore failed on purpose")] {
        let (st, err) = Running::start(&sim, 0, 1, &ct, &format!("FERRY_TEST_FAULT={fault}")).finish();
        assert!(!st.success(), "{fault}: migrate succeeded");
        assert!(err.contains("rolled back") || err.contains("runs here") || err.contains(&ct), "{fault}: {err}");
        assert!(err.contains(says), "{fault}: {err}");
        eprintln!("{fault}: {err}");
        assert_eq!(sim.status(0, &ct), "running", "{fault}: {err}");
        assert_counter_runs(sim.h(0), &ct);
        sim.assert_clean(1, &ct);
        let n = neigh_mac(&sim.t, &ip);
        assert!(n.contains(&sim.t.host(0).mac_str()), "{fault}: neighbour entry moved: {n}");
    }
    // An image damaged on its way (a byte flipped in the middle of its files, stored
    // uncompressed: inside its pages): the destination's reader refuses it, says so, and the
    // container runs here again.
    let mut c = sim.migrate_cmd(0, 1, &ct, &["--compress", "0"], "");
    c.env("FERRY_TEST_FAULT", "damage-image");
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("damage-image: {err}");
    assert!(!o.status.success(), "damage-image: migrate succeeded");
    assert!(err.contains("runs here again") && err.contains("digest mismatch"), "damage-image: {err}");
    assert_eq!(sim.status(0, &ct), "running", "damage-image: {err}");
    assert_counter_runs(sim.h(0), &ct);
    sim.assert_clean(1, &ct);

    // With --keep-dst a failure leaves the synced files (and nothing else) on B, and the retry
    // sends only what changed since.
    let o = sim.migrate(0, 1, &ct, &["--keep-dst"], "FERRY_TEST_FAULT=fail-restore");
    assert!(!o.status.success());
    assert_eq!(sim.status(0, &ct), "running");
    let b = sim.h(1);
    assert!(
        b.data.join("private").join(&ct).join("root/ctr").exists() || b.data.join("images").read_dir().is_ok_and(|mut d| d.next().is_some()),
        "--keep-dst kept no files"
    );
    assert!(!b.data.join("conf").join(format!("{ct}.toml")).exists());
    assert_eq!(sim.status(1, &ct), "absent");
    assert!(b.mounts().is_empty() || b.mounts().iter().all(|m| !m.to_string_lossy().contains("/root/")), "{:?}", b.mounts());
    let out = sim.migrate_ok(0, 1, &ct, &["--keep-dst", "--json"]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
    let files = rep["passes"][0]["files"].as_u64().unwrap();
    assert!(files < 10, "the retry sent {files} files again: {rep}");
    assert_eq!(sim.status(1, &ct), "running");
    sim.assert_clean(0, &ct);
    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
}

#[test]
fn connection_cut_during_sync_image_or_restore_rolls_back() {
    if !can_run("connection_cut_during_sync_image_or_restore_rolls_back") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(23).to_string();
    // 50 MB of files and a process with 200 MB of memory that does not compress.
    sim.big_container(0, &ct, &ip, 50, 200);
    let client = Client::start(&sim.t, &ip);

    for stage in ["sync pass 1", "image transfer", "restore on the destination"] {
        let run = Running::start(&sim, 0, 1, &ct, "");
        run.wait_stage(stage);
        assert!(kill_ssh(&sim, 1) > 0, "no ssh client found to cut at {stage}");
        let (st, said) = run.finish();
        assert!(!st.success(), "cut at {stage}: migrate succeeded: {said}");
        eprintln!("cut at {stage}: {said}");
        assert_eq!(sim.status(0, &ct), "running", "cut at {stage}: {said}");
        assert_counter_runs(sim.h(0), &ct);
        sim.assert_clean(1, &ct);
    }
    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
}

#[test]
fn a_killed_source_is_recovered_by_the_next_command_and_a_second_migrate_is_refused() {
    if !can_inject_faults("a_killed_source_is_recovered_by_the_next_command_and_a_second_migrate_is_refused") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(24).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let client = Client::start(&sim.t, &ip);

    // Killed during the live sync: the container never stopped; status says so.
    let ns = pidns(sim.h(0), &ct);
    let run = Running::start(&sim, 0, 1, &ct, "");
    run.wait_stage("sync pass 1");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = run.finish();
    sim.assert_clean(1, &ct);
    let o = sim.h(0).ferry(&["status", &ct]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("interrupted before the freeze"), "status after a crash in the sync: {err}");
    assert_eq!(pidns(sim.h(0), &ct), ns, "the container was restarted");

    // Killed while CRIU dumps: whichever way the dump went, the next command brings the
    // container back running (thawed, or restored from the finished dump).
    let run = Running::start(&sim, 0, 1, &ct, "");
    run.wait_stage("freeze and dump");
    std::thread::sleep(Duration::from_millis(150));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = run.finish();
    sim.assert_clean(1, &ct);
    std::thread::sleep(Duration::from_millis(500));
    let o = sim.h(0).ferry(&["exec", &ct, "--", "true"]);
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("exec after a crash during the dump: {err}");
    assert!(o.status.success(), "exec after a crash during the dump: {err}");
    assert!(err.contains("interrupted"), "does not say what happened: {err}");
    assert_eq!(sim.status(0, &ct), "running");
    assert_counter_runs(sim.h(0), &ct);

    // Each of these commands, run next on A, finds the journal and restores the container
    // from its dump, and says so.
    for (round, next) in [["list", "-a", ""], ["start", &ct, ""], ["exec", &ct, "true"]].iter().enumerate() {
        let run = Running::start(&sim, 0, 1, &ct, "FERRY_TEST_FAULT=hang-before-restore");
        run.wait_stage("restore on the destination");
        if round == 0 {
            // While it runs, a second migration of the same container is refused, naming the holder.
            let o = sim.migrate(0, 1, &ct, &[], "");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "a second migrate ran: {err}");
            assert!(err.contains("migrate") && err.contains(&run.child.id().to_string()), "holder not named: {err}");
        }
        // The source's ferry dies after the dump: the container is nowhere running.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        let _ = run.finish();
        // The receiver on B sees its connection end and removes what it made.
        sim.assert_clean(1, &ct);
        let args: Vec<&str> = match next[0] {
            "exec" => vec!["exec", &ct, "--", next[2]],
            _ => next.iter().copied().filter(|a| !a.is_empty()).collect(),
        };
        let o = sim.h(0).ferry(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?} after the crash: {err}");
        assert!(err.contains("interrupted") && err.contains("restored here"), "{args:?} does not say what happened: {err}");
        assert_eq!(sim.status(0, &ct), "running", "after {args:?}");
        assert_counter_runs(sim.h(0), &ct);
    }

    // Killed right after the destination committed: the container runs on B, and the next
    // command on A finishes the cleanup instead of ever starting it here again.
    let o = sim.migrate_cmd(0, 1, &ct, &[], "").env("FERRY_TEST_FAULT", "die-after-commit").output().unwrap();
    assert!(!o.status.success());
    assert_eq!(sim.status(1, &ct), "running");
    let o = sim.h(0).ferry(&["list", "-a"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("completed") && err.contains("removed here"), "list after a crash past the commit: {err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&ct));
    sim.assert_clean(0, &ct);
    assert!(!sim.h(0).ferry(&["start", &ct]).status.success(), "the container started on A too");
    assert_counter_runs(sim.h(1), &ct);

    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
}

#[test]
fn offline_migration_of_a_stopped_and_of_a_running_container() {
    if !can_run("offline_migration_of_a_stopped_and_of_a_running_container") {
        return;
    }
    let sim = Sim::new(2);
    let (a, b) = (sim.h(0), sim.h(1));
    let stopped = ctid();
    a.ok(&["create", &stopped, "--template", a.template.to_str().unwrap(), "--ipadd", &sim.t.ct_ip4(25).to_string()]);
    std::fs::write(a.data.join("private").join(&stopped).join("root/note"), "kept\n").unwrap();
    let out = sim.migrate_ok(0, 1, &stopped, &[]);
    assert!(out.contains("offline"), "{out}");
    assert_eq!(sim.status(1, &stopped), "stopped");
    sim.assert_clean(0, &stopped);
    b.ok(&["start", &stopped]);
    assert_eq!(b.exec(&stopped, "cat /root/note"), "kept\n");

    let running = ctid();
    sim.container(0, &running, &["--ipadd", &sim.t.ct_ip4(26).to_string()]);
    let out = sim.migrate_ok(0, 1, &running, &["--offline"]);
    // The destination's ferry may still be announcing; the container is already free for
    // other commands there (`set` takes its lock).
    b.ok(&["set", &running, "--hostname", "moved"]);
    assert!(out.contains("offline"), "{out}");
    assert_eq!(sim.status(1, &running), "running");
    assert_eq!(b.exec(&running, "hostname"), "moved\n");
    // Restarted, not restored: the counter file came along, the loop did not.
    assert!(b.exec(&running, "cat /root/ctr").lines().count() > 5);
    sim.assert_clean(0, &running);
}

#[test]
fn bridged_veth_keeps_its_mac() {
    if !can_run("bridged_veth_keeps_its_mac") {
        return;
    }
    let sim = Sim::new(2);
    for i in 0..2 {
        sim.t.run_in_ok(sim.t.host(i), "ip link add br0 type bridge && ip link set br0 up");
    }
    let ct = ctid();
    // Its admin configures eth0 inside: NET_ADMIN, which is not a default.
    sim.container(0, &ct, &["--netif", "eth0:br0", "--capability", "net_admin:on"]);
    let mac = sim.h(0).exec(&ct, "cat /sys/class/net/eth0/address");
    sim.h(0).exec(&ct, "ip addr add 198.19.7.7/24 dev eth0; ip link set eth0 up");
    sim.migrate_ok(0, 1, &ct, &[]);
    assert_eq!(sim.status(1, &ct), "running");
    assert_eq!(sim.h(1).exec(&ct, "cat /sys/class/net/eth0/address"), mac);
    assert!(sim.h(1).exec(&ct, "ip -4 addr show dev eth0").contains("198.19.7.7"));
    let ports = sim.t.run_in_ok(sim.t.host(1), "ip -o link show master br0");
    assert!(!ports.trim().is_empty(), "the container's veth is not in B's br0");
    assert_counter_runs(sim.h(1), &ct);
    sim.assert_clean(0, &ct);
    let ports = sim.t.run_in_ok(sim.t.host(0), "ip -o link show master br0");
    assert!(ports.trim().is_empty(), "A's br0 keeps a port: {ports}");
}

#[test]
fn preflight_refusals_dry_run_and_a_full_disk_change_nothing() {
    if !can_run("preflight_refusals_dry_run_and_a_full_disk_change_nothing") {
        return;
    }
    let sim = Sim::new(3);
    // B's data dir is a 20 MB filesystem.
    let b = sim.h(1);
    std::fs::create_dir_all(&b.data).unwrap();
    topology::sh(&format!("mount -t tmpfs -o size=20m ferry-t-small {}", b.data.display()));
    let ct = ctid();
    let ip = sim.t.ct_ip4(27).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let dd = format!("of={}", sim.h(0).data.join("private").join(&ct).join("root/big").display());
    assert!(Command::new("dd").args(["if=/dev/urandom", "bs=1M", "count=30", "status=none", &dd]).status().unwrap().success());
    let ns = pidns(sim.h(0), &ct);
    let untouched = |what: &str| {
        assert_eq!(pidns(sim.h(0), &ct), ns, "{what}: the container was restarted");
        assert_counter_runs(sim.h(0), &ct);
        sim.assert_clean(1, &ct);
        sim.assert_clean(2, &ct);
    };

    let o = sim.migrate(0, 1, &ct, &[], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not enough disk"), "{err}");
    untouched("disk full");

    let out = sim.migrate_ok(0, 2, &ct, &["--dry-run"]);
    assert!(out.contains("ok"), "{out}");
    untouched("dry run");

    let c = sim.h(2);
    c.ok(&["create", &ct, "--template", c.template.to_str().unwrap()]);
    let o = sim.migrate(0, 2, &ct, &[], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("already exists"), "{err}");
    c.ok(&["destroy", "--force", &ct]);
    untouched("CTID taken");

    let other = ctid();
    c.ok(&["create", &other, "--template", c.template.to_str().unwrap(), "--ipadd", &ip]);
    let o = sim.migrate(0, 2, &ct, &[], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&ip) && err.contains(&other), "{err}");
    untouched("address taken");
}

#[test]
fn a_destination_disk_filling_up_during_the_sync_fails_cleanly() {
    if !can_run("a_destination_disk_filling_up_during_the_sync_fails_cleanly") {
        return;
    }
    let sim = Sim::new(2);
    // Room enough for the preflight, then something else fills B's disk during the sync.
    let b = sim.h(1);
    std::fs::create_dir_all(&b.data).unwrap();
    topology::sh(&format!("mount -t tmpfs -o size=130m ferry-t-small {}", b.data.display()));
    let ct = ctid();
    let ip = sim.t.ct_ip4(28).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let dd = format!("of={}", sim.h(0).data.join("private").join(&ct).join("root/big").display());
    assert!(Command::new("dd").args(["if=/dev/urandom", "bs=1M", "count=40", "status=none", &dd]).status().unwrap().success());
    let client = Client::start(&sim.t, &ip);
    let run = Running::start(&sim, 0, 1, &ct, "");
    run.wait_stage("sync pass 1");
    let filler = b.data.join("filler");
    let _ = Command::new("dd").args(["if=/dev/zero", "bs=1M", "status=none"]).arg(format!("of={}", filler.display())).status();
    let (st, said) = run.finish();
    eprintln!("{said}");
    assert!(!st.success(), "migrated onto a full disk: {said}");
    assert!(said.contains("No space left") || said.contains("space"), "the error does not say the disk is full: {said}");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(sim.status(0, &ct), "running");
    assert_counter_runs(sim.h(0), &ct);
    sim.assert_clean(1, &ct);
    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
}

/// TCP listeners left in host `i`'s namespace other than its sshd's.
fn stray_listeners(sim: &Sim, i: usize) -> String {
    let out = sim.t.run_in_ok(sim.t.host(i), "ss -Hltn");
    out.lines().filter(|l| !l.contains(":22 ")).collect::<Vec<_>>().join("\n")
}

fn assert_no_listener(sim: &Sim, i: usize) {
    let t0 = Instant::now();
    loop {
        let left = stray_listeners(sim, i);
        if left.is_empty() {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "host {i} still listens: {left}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn live_migration_over_the_tcp_data_channel_keeps_the_connection() {
    if !can_run("live_migration_over_the_tcp_data_channel_keeps_the_connection") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(31).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let client = Client::start(&sim.t, &ip);
    let ns_a = pidns(sim.h(0), &ct);

    let out = sim.migrate_ok(0, 1, &ct, &["--data-channel", "tcp", "--json"]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json: {e}: {out}"));
    let (image, wire) = (rep["image_bytes"].as_u64().unwrap(), rep["image_wire_bytes"].as_u64().unwrap());
    assert!(image > 0, "{rep}");
    // The image went raw over its own connection (magic and token first), not in ssh frames.
    assert_eq!(wire, image + 40, "{rep}");
    eprintln!("A->B over tcp: image {image} bytes in {} ms, frozen {} ms", rep["image_transfer_ms"], rep["frozen_ms"]);
    assert_eq!(sim.status(1, &ct), "running");
    assert_eq!(sim.status(0, &ct), "absent");
    assert_counter_runs(sim.h(1), &ct);
    assert_no_processes(&ns_a, "A");
    sim.assert_clean(0, &ct);
    assert_no_listener(&sim, 1);
    let n = neigh_mac(&sim.t, &ip);
    assert!(n.contains(&sim.t.host(1).mac_str()), "client's neighbour entry for {ip} not moved to B: {n}");

    // And back, with the destination's listener on a fixed port.
    let out = sim.migrate_ok(1, 0, &ct, &["--data-channel", "tcp", "--data-ports", "47400-47410", "--json"]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["image_wire_bytes"].as_u64().unwrap(), rep["image_bytes"].as_u64().unwrap() + 40, "{rep}");
    assert_eq!(sim.status(0, &ct), "running");
    assert_counter_runs(sim.h(0), &ct);
    sim.assert_clean(1, &ct);
    assert_no_listener(&sim, 0);

    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
    assert!(st.round_trips > 20);
}

#[test]
fn data_channel_failures_roll_back_to_the_source() {
    if !can_inject_faults("data_channel_failures_roll_back_to_the_source") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(32).to_string();
    let a = sim.h(0);
    // A process with 64 MB of memory, so that the image is cut well inside its pages.
    sim.big_container(0, &ct, &ip, 0, 64);
    let client = Client::start(&sim.t, &ip);
    let mut init = a.pid(&ct);

    // (source fault, destination fault, what the error must say)
    let cases = [
        ("cut-data", "", "cut on purpose"),
        ("wrong-token", "", "token not accepted"),
        ("damage-image", "", "digest mismatch"),
        ("", "refuse-data", "refused"),
        ("", "die-mid-image", ""),
        ("", "die-after-image", ""),
        ("", "fail-restore", "restore failed on purpose"),
    ];
    for (src_fault, dst_fault, says) in cases {
        let what = format!("{src_fault}{dst_fault}");
        let mut c = sim.migrate_cmd(0, 1, &ct, &["--data-channel", "tcp"], &format!("FERRY_TEST_FAULT={dst_fault}"));
        c.env("FERRY_TEST_FAULT", src_fault);
        let t0 = Instant::now();
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        eprintln!("{what} ({:?}): {err}", t0.elapsed());
        // Neither end waits out the listener's 30 s deadline while the container is frozen.
        assert!(t0.elapsed() < Duration::from_secs(25), "{what}: took {:?}", t0.elapsed());
        assert!(!o.status.success(), "{what}: migrate succeeded");
        assert!(err.contains("runs here again"), "{what}: not rolled back: {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(sim.status(0, &ct), "running", "{what}: {err}");
        // Restored from the dump: its init has a new host pid (a namespace inode may be reused).
        assert_ne!(a.pid(&ct), init, "{what}: the container was not dumped at all");
        init = a.pid(&ct);
        assert_counter_runs(a, &ct);
        sim.assert_clean(1, &ct);
        assert_no_listener(&sim, 1);
        let n = neigh_mac(&sim.t, &ip);
        assert!(n.contains(&sim.t.host(0).mac_str()), "{what}: neighbour entry moved: {n}");
    }
    // The same container still migrates over the data channel afterwards.
    sim.migrate_ok(0, 1, &ct, &["--data-channel", "tcp"]);
    assert_eq!(sim.status(1, &ct), "running");
    assert_counter_runs(sim.h(1), &ct);
    sim.assert_clean(0, &ct);
    let st = client.finish();
    eprintln!("client: {} round trips, longest pause {:?}", st.round_trips, st.longest_pause);
}

/// `ferry migrate --to root@HOST CT...` from host `from` to host `to`.
fn migrate_many(sim: &Sim, from: usize, to: usize, cts: &[&str], extra: &[&str]) -> std::process::Output {
    let remote = format!("{} {FERRY}", sim.h(to).env_prefix());
    let mut c = sim.h(from).cmd();
    c.args(["migrate", "--to", &format!("root@{}", sim.t.host(to).ip4), "--ssh-opts", &sim.sshd[to].ssh_opts(), "--remote-ferry", &remote]);
    c.args(cts).args(extra);
    c.output().expect("run ferry migrate")
}

#[test]
fn several_containers_move_one_after_the_other_with_one_summary() {
    let test = "several_containers_move_one_after_the_other_with_one_summary";
    if !can_inject_faults(test) {
        return;
    }
    let sim = Sim::new(2);
    let (a, b, c) = (ctid(), ctid(), ctid());
    sim.container(0, &a, &["--ipadd", &sim.t.ct_ip4(61).to_string()]);
    sim.h(0).ok(&["create", &b, "--template", sim.h(0).template.to_str().unwrap(), "--name", &format!("{b}-n")]);
    sim.container(0, &c, &[]);
    // The destination has a container c already: its preflight refuses that one only.
    sim.h(1).ok(&["create", &c, "--template", sim.h(1).template.to_str().unwrap()]);
    let names = [a.as_str(), &format!("{b}-n"), c.as_str()];
    let o = migrate_many(&sim, 0, 1, &names, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(112), "the refused one's class decides the exit code");
    assert!(out.starts_with("migrate to root@") && out.contains("2 of 3 moved"), "{out}");
    assert!(out.lines().any(|l| l.contains(&a) && l.contains("ok") && l.contains("online")), "{out}");
    assert!(out.lines().any(|l| l.contains(&format!("{b}-n")) && l.contains("offline")), "{out}");
    assert!(out.lines().any(|l| l.contains(&c) && l.contains("migration-refused")), "{out}");
    assert_eq!(sim.status(1, &a), "running");
    assert_counter_runs(sim.h(1), &a);
    assert_eq!(sim.status(1, &b), "stopped");
    assert_eq!(sim.status(0, &c), "running", "the refused one stays");
    sim.h(0).ok(&["stop", &c]);
    sim.h(0).ok(&["destroy", &c]);
    sim.assert_clean(0, &a);
    sim.assert_clean(0, &b);
    // --json: one result per container.
    let o = migrate_many(&sim, 1, 0, &[&a], &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(o.status.success(), "{v}");
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    assert_eq!(sim.status(0, &a), "running");
    // `migrate CT DEST` stays; one failure's class is the exit code, also in --json.
    let o = sim.migrate(0, 1, &a, &["--json"], "FERRY_TEST_FAULT=fail-restore");
    assert_eq!(o.status.code(), Some(113), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["error"]["class"].as_str(), v["error"]["code"].as_i64()), (Some("migration-failed"), Some(113)), "{v}");
    assert_eq!(sim.status(0, &a), "running");
    sim.assert_clean(1, &a);
}

#[test]
fn migrate_new_id_arrives_as_another_container_with_new_addresses() {
    let test = "migrate_new_id_arrives_as_another_container_with_new_addresses";
    if !can_run(test) {
        return;
    }
    let sim = Sim::new(2);
    let (ct, new) = (ctid(), ctid());
    let (ip_a, ip_b) = (sim.t.ct_ip4(71).to_string(), sim.t.ct_ip4(72).to_string());
    sim.container(0, &ct, &["--ipadd", &ip_a, "--name", &format!("{ct}-n")]);
    let ns = pidns(sim.h(0), &ct);
    let o = sim.migrate(0, 1, &ct, &["--new-id", &new, "--name", "moved", "--ipdel", "all", "--ipadd", &ip_b], "");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(&format!("as {new}")), "{out}");
    // Here: nothing of it. There: the new CTID, its name, the new address, processes and
    // memory carried over (the counter file goes on without a gap).
    sim.assert_clean(0, &ct);
    assert_no_processes(&ns, "the source");
    assert_eq!(sim.status(1, &new), "running");
    assert_eq!(sim.status(1, &ct), "absent");
    let b = sim.h(1);
    assert!(b.ok(&["status", "moved"]).starts_with(&format!("{new} running")));
    assert_counter_runs(b, &new);
    let inside = b.exec(&new, "ip -o addr show dev venet0");
    assert!(inside.contains(&ip_b) && !inside.contains(&ip_a), "{inside}");
    let routes = sim.t.run_in_ok(sim.t.host(1), "ip -4 route");
    assert!(routes.lines().any(|l| l.starts_with(&ip_b)), "{routes}");
    let client = Client::start(&sim.t, &ip_b);
    let st = client.finish();
    assert!(st.round_trips > 0, "no echo from the new address");
    b.ok(&["stop", &new]);
}

/// The host uid of the process named `comm` in container `ct` of host `h` (from its cgroup).
fn host_uid_of(h: &TestHost, ct: &str, comm: &str) -> Option<u32> {
    h.cgroup(ct).pids().ok()?.into_iter().find_map(|p| {
        let c = std::fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
        if c.trim() != comm {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
    })
}

/// The user (inside) that runs redis-server in `ct` (the template has no ps).
fn redis_user(h: &TestHost, ct: &str) -> String {
    h.exec(ct, "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = redis-server ] && stat -c %U $p; done; true").trim().to_string()
}

/// redis-server as the template's redis user (uid 100 inside), on all addresses, without
/// background saves (a fork while CRIU dumps would only slow the test); returns once it answers.
fn start_redis(h: &TestHost, ct: &str) {
    h.exec(
        ct,
        "setpriv --reuid=redis --regid=redis --init-groups redis-server --port 6379 --bind 0.0.0.0 --protected-mode no --save '' --appendonly no \
         </dev/null >/dev/null 2>&1 &",
    );
    support::wait_for("redis to answer", || h.ferry(&["exec", ct, "--", "redis-cli", "ping"]).stdout.starts_with(b"PONG"));
    assert_eq!(redis_user(h, ct), "redis", "redis runs as its own user");
}

/// redis running as its own user in an unprivileged container, under a client that appends
/// on one connection and checks at the end that every write redis acknowledged is there: the
/// container is checkpointed and restored here, then live-migrated to a host whose ID pool
/// gives it another range (so its user namespace comes back with another mapping). Nothing
/// acknowledged is lost, the connection holds, and redis runs as its user in the new range.
/// The same service in a privileged container cannot be checkpointed where host root lacks
/// CAP_SYS_RESOURCE (this machine kind): the error names the capability and --userns on.
#[test]
fn redis_as_its_own_user_checkpoints_and_migrates_unprivileged_with_no_acknowledged_write_lost() {
    let test = "redis_as_its_own_user_checkpoints_and_migrates_unprivileged_with_no_acknowledged_write_lost";
    if !can_run(test) {
        return;
    }
    let Some(tpl) = support::debian_redis_template(test) else { return };
    let sim = Sim::new(2);
    let (a, b) = (sim.h(0), sim.h(1));
    b.add_host_config("userns_pool = \"3000000:655360\"\n");
    let ct = ctid();
    let ip = sim.t.ct_ip4(60).to_string();
    a.ok(&["create", &ct, "--template", tpl.to_str().unwrap(), "--userns", "on", "--ipadd", &ip]);
    a.ok(&["start", &ct]);
    start_redis(a, &ct);
    let first_a = a.range_first(&ct).expect("an unprivileged container has a range");
    assert_eq!(host_uid_of(a, &ct, "redis-server"), Some(first_a + 100), "redis runs as the range's uid 100 on the host");

    let stop = a.dir.path().join("stop-writer");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/redis_writer.py");
    let writer = sim.t.spawn_in(sim.t.client(0), &format!("python3 {} {ip} 6379 300 --until {} --json", script.display(), stop.display()));
    let mut writer = topology::Bg(writer);
    std::thread::sleep(Duration::from_millis(1500));

    a.ok(&["checkpoint", &ct]);
    a.ok(&["restore", &ct]);
    std::thread::sleep(Duration::from_millis(1000));
    sim.migrate_ok(0, 1, &ct, &[]);
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&stop, "").unwrap();
    let _ = writer.0.wait();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut writer.0.stdout.take().unwrap(), &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("writer said {out:?}: {e}"));
    assert_eq!(v["ok"], true, "the writer: {v}");
    assert!(v["acknowledged"].as_u64().unwrap() > 100, "{v}");
    eprintln!("{test}: the writer: {v}");

    let first_b = b.range_first(&ct).expect("a range on the destination");
    assert_ne!(first_a, first_b, "the destination's pool gave another range");
    assert!((3_000_000..3_655_360).contains(&first_b), "{first_b} from the destination's pool");
    assert_eq!(host_uid_of(b, &ct, "redis-server"), Some(first_b + 100), "redis runs as uid 100 of the new range");
    assert_eq!(redis_user(b, &ct), "redis");
    assert_eq!(b.exec(&ct, "cat /proc/self/uid_map").split_whitespace().collect::<Vec<_>>(), ["0", &first_b.to_string(), "65536"]);
    sim.assert_clean(0, &ct);

    // The privileged counterpart, where host root lacks CAP_SYS_RESOURCE.
    if !ferry_runtime::criu::check::has_cap_in_bounding_set(24) {
        let p = format!("{ct}p");
        // (An address, so that its loopback is up for redis-cli.)
        let ip_p = sim.t.ct_ip4(61).to_string();
        a.ok(&["create", &p, "--template", tpl.to_str().unwrap(), "--userns", "off", "--ipadd", &ip_p]);
        a.ok(&["start", &p]);
        start_redis(a, &p);
        let e = a.fails(&["checkpoint", &p]);
        assert!(e.contains("CAP_SYS_RESOURCE") && e.contains("--userns on"), "{e}");
        assert_eq!(redis_user(a, &p), "redis", "redis keeps running after the refused dump");
        a.ok(&["destroy", "--force", &p]);
    }
    b.ok(&["destroy", "--force", &ct]);
}

/// The user ID range of an unprivileged container on its way between hosts: a destination
/// whose pool has no free range refuses at preflight (nothing changes anywhere); one with a
/// range gives it its own, and the container runs on with its memory under that range; an
/// exported snapshot restored on a third host gets that host's range.
#[test]
fn an_unprivileged_container_gets_each_hosts_range_and_a_full_pool_refuses_at_preflight() {
    let test = "an_unprivileged_container_gets_each_hosts_range_and_a_full_pool_refuses_at_preflight";
    if !can_run(test) {
        return;
    }
    let sim = Sim::new(3);
    let (a, b, c) = (sim.h(0), sim.h(1), sim.h(2));
    b.add_host_config("userns_pool = \"5000000:65536\"\n");
    c.add_host_config("userns_pool = \"6000000:131072\"\n");
    let ct = ctid();
    let ip = sim.t.ct_ip4(62).to_string();
    sim.container(0, &ct, &["--userns", "on", "--ipadd", &ip]);
    let uid_map = |h: &TestHost| h.exec(&ct, "cat /proc/self/uid_map").split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let ns = pidns(a, &ct);

    // B's one range is taken: refused at preflight, the container runs on here untouched.
    b.ok(&["create", "filler", "--template", b.template.to_str().unwrap(), "--userns", "on"]);
    let o = sim.migrate(0, 1, &ct, &[], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(112), "{err}");
    assert!(err.contains(&format!("cannot give {ct} a user ID range")) && err.contains("5000000:65536") && err.contains("userns_pool"), "{err}");
    assert_eq!(pidns(a, &ct), ns, "the container was restarted");
    assert_counter_runs(a, &ct);
    sim.assert_clean(1, &ct);

    // With the range free, it moves and runs on under B's range, its memory kept.
    b.ok(&["destroy", "filler"]);
    let client = Client::start(&sim.t, &ip);
    sim.migrate_ok(0, 1, &ct, &[]);
    let stats = client.finish();
    assert!(stats.round_trips > 10, "{stats:?}");
    assert_eq!(b.range_first(&ct), Some(5_000_000));
    assert_eq!(uid_map(b), ["0", "5000000", "65536"]);
    assert_counter_runs(b, &ct);
    sim.assert_clean(0, &ct);

    // An exported snapshot (files, processes, memory) restored on C, under C's range.
    b.ok(&["snapshot", "create", &ct]);
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["snapshot", "list", &ct, "--json"])).unwrap();
    let id = v["snapshots"][0]["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    let img = b.dir.path().join("export.img");
    b.ok(&["snapshot", "export", &ct, &id, img.to_str().unwrap()]);
    b.ok(&["stop", &ct]);
    c.ok(&["restore", &ct, "--from-image", img.to_str().unwrap()]);
    assert_eq!(c.range_first(&ct), Some(6_000_000));
    assert_eq!(uid_map(c), ["0", "6000000", "65536"]);
    assert_counter_runs(c, &ct);
    c.ok(&["destroy", "--force", &ct]);
    b.ok(&["destroy", &ct]);
}

#[test]
fn the_handover_is_verified_for_ipv4_and_ipv6_venet() {
    if !can_run("the_handover_is_verified_for_ipv4_and_ipv6_venet") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let (ip4, ip6) = (sim.t.ct_ip4(31).to_string(), sim.t.ct_ip6(31).to_string());
    sim.container(0, &ct, &["--ipadd", &ip4, "--ipadd", &ip6]);
    // IPv4: the container's connection to the client is the neighbour to probe. IPv6: no
    // connection, so B's default gateway is (the client stands in for a router).
    let client = Client::start(&sim.t, &ip4);
    let c6 = sim.t.client(0).ip6;
    sim.t.run_in_ok(sim.t.host(1), &format!("ip -6 route add default via {c6} dev eth0"));
    let out = sim.migrate_ok(0, 1, &ct, &["--json"]);
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json: {e}: {out}"));
    let h = &rep["handover"];
    assert_eq!(h["confirmed"], true, "{rep}");
    assert_eq!(h["neighbours"], 2, "the client over IPv4 and the gateway over IPv6: {rep}");
    let at = h["confirmed_ms"].as_u64().unwrap_or_else(|| panic!("no confirmation time: {rep}"));
    assert!(at < 3000, "{rep}");
    assert!(h["announces"].as_u64().unwrap() >= 1, "{rep}");
    let b = sim.t.host(1).mac_str();
    let n4 = neigh_mac(&sim.t, &ip4);
    assert!(n4.contains(&b), "client's neighbour entry for {ip4} not moved to B: {n4}");
    let n6 = neigh_mac(&sim.t, &ip6);
    assert!(n6.contains(&b), "client's neighbour entry for {ip6} not at B: {n6}");
    assert_eq!(sim.status(1, &ct), "running");
    sim.assert_clean(0, &ct);
    let st = client.finish();
    assert!(st.round_trips > 5);
}

#[test]
fn a_handover_no_neighbour_answers_is_reported_unconfirmed_and_the_migration_succeeds() {
    if !can_run("a_handover_no_neighbour_answers_is_reported_unconfirmed_and_the_migration_succeeds") {
        return;
    }
    let sim = Sim::new(2);
    let ct = ctid();
    let ip = sim.t.ct_ip4(32).to_string();
    sim.container(0, &ct, &["--ipadd", &ip]);
    let client = Client::start(&sim.t, &ip);
    // The client answers no ARP request any more (it still learns from the announcements).
    sim.t.run_in_ok(sim.t.client(0), "sysctl -qw net.ipv4.conf.eth0.arp_ignore=8");
    let t0 = Instant::now();
    let out = sim.migrate_ok(0, 1, &ct, &["--times"]);
    let took = t0.elapsed();
    sim.t.run_in_ok(sim.t.client(0), "sysctl -qw net.ipv4.conf.eth0.arp_ignore=0");
    eprintln!("{out}");
    let line = out.lines().find(|l| l.trim_start().starts_with("handover")).unwrap_or_else(|| panic!("no handover line: {out}"));
    assert!(line.contains("not confirmed") && line.contains(&sim.t.client(0).ip4.to_string()), "{line}");
    let announces: u32 = line.split("after ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(announces >= 5, "the announce was not repeated with back-off: {line}");
    assert!(took >= Duration::from_secs(3), "the report came before the deadline: {took:?}");
    assert_eq!(sim.status(1, &ct), "running");
    assert_eq!(sim.status(0, &ct), "absent");
    sim.assert_clean(0, &ct);
    let st = client.finish();
    assert!(st.round_trips > 5);
}
