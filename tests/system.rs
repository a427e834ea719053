//! System containers: a Debian booted by systemd (the `debian-systemd` template) on simulated
//! hosts. It boots to `running`, runs its services, serves its console, halts cleanly on
//! `ferry stop` and comes back after `reboot` inside; redis-server, a systemd service, keeps
//! every write it acknowledged to a client through a checkpoint and restore, a snapshot and a
//! live migration to another host and back, with systemd, its journal and its timers working
//! after each move.
//!
//! Each test boots Debian (2-4 s here) and is the slowest of its kind: the first about 30 s,
//! the second about 50 s (two live migrations copy the ~190 MB tree), on an otherwise idle
//! machine of this kind; both run again in scripts/test.sh's cgroup v2 pass.

#[path = "support/ssh.rs"]
mod ssh;
mod support;
#[path = "support/topology.rs"]
mod topology;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{TestHost, FERRY};
use topology::Topology;

fn can_run(test: &str) -> Option<PathBuf> {
    if !support::need_root(test) {
        return None;
    }
    for tool in ["criu", "ip", "nsenter", "iptables", "journalctl"] {
        if !Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success()) {
            eprintln!("{test}: skipped: {tool} is not installed (scripts/install-deps.sh)");
            return None;
        }
    }
    support::debian_systemd_template(test)
}

fn ctid() -> String {
    // Host interface names derive from the CTID: unique per test run.
    format!("s{}", topology::unique_id())
}

/// `systemctl is-system-running --wait` inside until it answers (PID 1 may not listen yet
/// right after the start), bounded by `limit`: its answer and how long it took.
fn wait_booted(h: &TestHost, ct: &str, limit: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    loop {
        let left = limit.saturating_sub(t0.elapsed()).as_secs().max(1).to_string();
        let o = h.ferry(&["exec", ct, "--", "timeout", &left, "systemctl", "is-system-running", "--wait"]);
        let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !state.is_empty() || t0.elapsed() >= limit {
            return (state, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The services the template enables, each `active`, and nothing failed.
fn assert_services_up(h: &TestHost, ct: &str, what: &str) {
    let units = ["systemd-journald", "dbus", "cron", "ssh", "redis-server", "systemd-logind", "console-getty"];
    let o = h.ferry(&["exec", ct, "--", "systemctl", "is-active"].iter().copied().chain(units).collect::<Vec<_>>());
    let states = String::from_utf8_lossy(&o.stdout).to_string();
    let got: Vec<&str> = states.lines().collect();
    assert_eq!(got, vec!["active"; units.len()], "{what}: {units:?} are {got:?}");
    let failed = h.exec(ct, "systemctl list-units --failed --no-legend --plain");
    assert!(failed.trim().is_empty(), "{what}: failed units: {failed}");
}

/// PID 1 of `ct` and its monitor, from ferry's state.
fn state(h: &TestHost, ct: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(h.run.join(ct).join("state.json")).unwrap()).unwrap()
}

/// The container's kind holds: an unprivileged one's PID 1 and redis-server run as its range's
/// first ID on the host and `/proc/self/uid_map` inside shows that range, its console and the
/// cgroups systemd made are its root's (the limits are not); a privileged one's PID 1 is host
/// root with the identity mapping. Either way systemd holds no CAP_SYS_ADMIN.
fn assert_kind(h: &TestHost, ct: &str, what: &str) {
    use std::os::unix::fs::MetadataExt;
    let pid1 = h.pid(ct);
    let host_uid = |pid: &str| -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ids: Vec<u32> = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().map(|u| u.parse().unwrap()).collect();
        assert!(ids.iter().all(|u| *u == ids[0]), "{what}: process {pid} has mixed uids {ids:?}");
        ids[0]
    };
    let redis_inside = h.exec(ct, "systemctl show -P MainPID redis-server").trim().to_string();
    let systemd_dir = PathBuf::from(state(h, ct)["system"]["systemd_cgroup"].as_str().unwrap().to_string());
    let redis_host = std::fs::read_to_string(systemd_dir.join("system.slice/redis-server.service/cgroup.procs")).unwrap().trim().to_string();
    let uid_map: Vec<String> = h.exec(ct, "cat /proc/self/uid_map").split_whitespace().map(str::to_string).collect();
    let cap_eff = h.exec(ct, "grep CapEff /proc/1/status");
    let eff = u64::from_str_radix(cap_eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "{what}: systemd holds CAP_SYS_ADMIN: {cap_eff}");
    assert!(!redis_inside.is_empty() && redis_inside != "0", "{what}: redis-server has no main pid");
    let console_host = PathBuf::from(state(h, ct)["system"]["console"].as_str().unwrap().to_string());
    match h.range_first(ct) {
        Some(first) => {
            assert_eq!(uid_map, vec!["0".to_string(), first.to_string(), "65536".to_string()], "{what}: uid_map inside");
            assert_eq!(host_uid(&pid1.to_string()), first, "{what}: PID 1 ({pid1}) is not the range's root on the host");
            assert_eq!(host_uid(&redis_host), first, "{what}: redis-server ({redis_host}) is not the range's root on the host");
            for d in [systemd_dir.clone(), systemd_dir.join("system.slice"), systemd_dir.join("system.slice/redis-server.service")] {
                let m = std::fs::metadata(&d).unwrap();
                assert_eq!((m.uid(), m.gid()), (first, first), "{what}: {} is not delegated to the range's root", d.display());
            }
            let procs = std::fs::metadata(systemd_dir.join("cgroup.procs")).unwrap();
            assert_eq!(procs.uid(), first, "{what}: its cgroup.procs");
            for limit in h.cgroup(ct).procs_files() {
                let m = std::fs::metadata(&limit).unwrap();
                if !limit.starts_with(&systemd_dir) {
                    assert_eq!(m.uid(), 0, "{what}: {} of the limits' cgroup was handed over", limit.display());
                }
            }
            assert_eq!(std::fs::metadata(&console_host).unwrap().uid(), first, "{what}: the console pty is not the container root's");
            assert_eq!(h.exec(ct, "stat -c %u /dev/console").trim(), "0", "{what}: /dev/console inside");
        }
        None => {
            assert_eq!(uid_map, vec!["0", "0", "4294967295"], "{what}: uid_map inside");
            assert_eq!(host_uid(&pid1.to_string()), 0, "{what}: PID 1 of a privileged container");
        }
    }
}

/// Whether process `pid` is gone within 10 s.
fn gone(pid: i64) -> bool {
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        if t0.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn a_debian_with_systemd_boots_runs_its_services_stops_cleanly_and_reboots() {
    let test = "a_debian_with_systemd_boots_runs_its_services_stops_cleanly_and_reboots";
    let Some(tpl) = can_run(test) else { return };
    let h = TestHost::new();
    let ct = ctid();
    let t_test = Instant::now();
    let step = |what: &str| eprintln!("[{:>6} ms] {what}", t_test.elapsed().as_millis());
    h.ok(&["create", &ct, "--template", tpl.to_str().unwrap()]);
    step("created");
    let cfg = std::fs::read_to_string(h.data.join("conf").join(format!("{ct}.toml"))).unwrap();
    assert!(cfg.contains("init_system = \"systemd\"") && cfg.contains("stop_timeout = 120"), "{cfg}");

    // Boot: `running` (nothing failed) within 20 s, every enabled service active.
    h.ok(&["start", &ct]);
    let (st, took) = wait_booted(&h, &ct, Duration::from_secs(20));
    assert_eq!(st, "running", "systemctl is-system-running after {took:?}; console:\n{}", h.ok(&["console", &ct]));
    eprintln!("booted to running in {took:?}");
    assert_services_up(&h, &ct, "after boot");
    let log = h.ok(&["console", &ct]);
    assert!(log.contains("Welcome to") && log.contains("Debian GNU/Linux 12"), "console log: {log}");

    assert_kind(&h, &ct, "after boot");
    step("services up");
    // What systemd found: a container of type ferry, API file systems, its own cgroup tree.
    assert_eq!(h.exec(&ct, "systemd-detect-virt -c || true").trim(), "container-other");
    assert_eq!(h.exec(&ct, "cat /run/systemd/container").trim(), "ferry");
    for (dir, fs) in [("/run", "tmpfs"), ("/run/lock", "tmpfs"), ("/tmp", "tmpfs"), ("/dev/console", "devpts")] {
        assert_eq!(h.exec(&ct, &format!("findmnt -n -o FSTYPE {dir}")).trim(), fs, "{dir}");
    }
    // Its own devpts: a new pty is its root's, group tty, as a login on it expects.
    let pty = h.exec(&ct, "script -qec 'stat -c %u:%g $(tty)' /dev/null");
    assert_eq!(pty.trim(), "0:5", "a pty opened inside");
    assert_eq!(h.exec(&ct, "stat -c %u:%g /dev/pts/ptmx").trim(), "0:0", "its ptmx");
    let machine_id = h.exec(&ct, "cat /etc/machine-id").trim().to_string();
    assert!(machine_id.len() == 32 && machine_id.chars().all(|c| c.is_ascii_hexdigit()), "{machine_id:?}");
    let init_cg = h.exec(&ct, "cat /proc/1/cgroup");
    let systemd_line = if h.is_v1() { "name=systemd:/init.scope" } else { "0::/init.scope" };
    assert!(init_cg.lines().any(|l| l.ends_with(systemd_line)), "systemd is not in its own init.scope: {init_cg}");
    // On the host, the services are in cgroups below the container's.
    let redis_pid = h.exec(&ct, "systemctl show -P MainPID redis-server").trim().to_string();
    let systemd_dir = PathBuf::from(state(&h, &ct)["system"]["systemd_cgroup"].as_str().unwrap());
    let redis_cg = systemd_dir.join("system.slice/redis-server.service/cgroup.procs");
    let procs = std::fs::read_to_string(&redis_cg).unwrap_or_else(|e| panic!("{}: {e}", redis_cg.display()));
    assert_eq!(procs.lines().count(), 1, "redis-server ({redis_pid} inside) is not alone in {}: {procs}", redis_cg.display());

    // The container as an attacker: the controllers are read-only, nothing of the host's
    // cgroup tree is in sight, and it cannot mount, make namespaces or leave its cgroups.
    if h.is_v1() {
        let o = h.ferry(&["exec", &ct, "--", "sh", "-c", "echo 1 > /sys/fs/cgroup/pids/pids.max"]);
        assert!(!o.status.success(), "pids.max written from inside");
        assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only"), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!h.ferry(&["exec", &ct, "--", "mkdir", "/sys/fs/cgroup/memory/escape"]).status.success());
        // Its writable name=systemd hierarchy shows its own subtree only: no release_agent (a
        // program the host's kernel would run) to set.
        let o = h.ferry(&["exec", &ct, "--", "sh", "-c", "echo /tmp/x > /sys/fs/cgroup/systemd/release_agent"]);
        assert!(!o.status.success(), "release_agent written from inside");
    }
    if !h.is_v1() {
        // v2: its cgroup namespace's root is a child of the cgroup holding its limits: what it
        // writes into its root's interface files stays below them.
        // An unprivileged one is not even given its root's interface files (only what a
        // delegation hands over: cgroup.procs, cgroup.subtree_control, cgroup.threads...).
        let ours = h.cgroup(&ct).dir("").join("cgroup.max.descendants");
        let o = h.ferry(&["exec", &ct, "--", "sh", "-c", "echo 3 > /sys/fs/cgroup/cgroup.max.descendants"]);
        if h.is_unprivileged(&ct) {
            assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Permission denied"), "{o:?}");
        } else {
            assert!(o.status.success(), "{o:?}");
        }
        assert_eq!(std::fs::read_to_string(&ours).unwrap().trim(), "max", "the container changed its own cgroup's {}", ours.display());
        let _ = h.ferry(&["exec", &ct, "--", "sh", "-c", "echo max > /sys/fs/cgroup/cgroup.max.descendants"]);
    }
    let top = h.exec(&ct, "ls /sys/fs/cgroup/systemd 2>/dev/null || ls /sys/fs/cgroup");
    assert!(!top.contains(&h.cgroup_parent) && top.contains("system.slice"), "the container sees more than its subtree: {top}");
    for cmd in ["mount -t tmpfs none /mnt", "unshare --cgroup true", "unshare --mount true"] {
        assert!(!h.ferry(&["exec", &ct, "--", "sh", "-c", cmd]).status.success(), "`{cmd}` worked inside");
    }
    // Its console log is written by the monitor on the host: a link it plants there must not
    // lead the host's writes out of its tree.
    let host_file = h.dir.path().join("host-file");
    std::fs::write(&host_file, "host\n").unwrap();
    h.exec(&ct, &format!("rm /var/log/ferry-console.log; ln -s {} /var/log/ferry-console.log; echo planted > /dev/console", host_file.display()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host\n", "the console log followed the container's symlink");
    h.exec(&ct, "rm /var/log/ferry-console.log");

    step("environment and attacks checked");
    // The console: a login prompt on attach, Esc . detaches.
    let mut att = h.cmd().args(["console", &ct, "--attach"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = att.stdin.take().unwrap();
    let out = att.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = out;
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(seen.clone());
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    input.write_all(b"\r").unwrap();
    let t0 = Instant::now();
    let mut seen = String::new();
    while !seen.contains("login:") && t0.elapsed() < Duration::from_secs(10) {
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = s;
        }
    }
    assert!(seen.contains(&format!("{ct} login:")), "no login prompt on the console: {seen:?}");
    input.write_all(b"\x1b.").unwrap();
    let st = wait_child(&mut att, Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "console --attach did not detach on Esc .");

    step("console checked");
    // A snapshot while it runs, then back to it: systemd and its services come back.
    h.ok(&["snapshot", "create", &ct, "--name", "booted"]);
    h.exec(&ct, "touch /root/after-snapshot");
    let id = h.ok(&["snapshot", "list", &ct]).lines().find(|l| l.contains("booted")).and_then(|l| l.split_whitespace().next()).unwrap().to_string();
    h.ok(&["snapshot", "restore", &ct, &id]);
    assert!(!h.ferry(&["exec", &ct, "--", "test", "-e", "/root/after-snapshot"]).status.success(), "files are not the snapshot's");
    assert_eq!(wait_booted(&h, &ct, Duration::from_secs(10)).0, "running");
    assert_services_up(&h, &ct, "after the snapshot's restore");
    assert_kind(&h, &ct, "after the snapshot's restore");

    step("snapshot restored");
    // `reboot` inside: the monitor starts it again, a new PID 1 on the same console.
    let before = state(&h, &ct);
    let _ = h.ferry(&["exec", &ct, "--", "systemctl", "reboot"]);
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(30), "the container did not come back after reboot: {}", h.ok(&["console", &ct]));
        let o = h.ferry(&["status", &ct, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["status"] == "running" && v["pid"] != before["pid"] {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(wait_booted(&h, &ct, Duration::from_secs(20)).0, "running");
    let after = state(&h, &ct);
    assert_eq!(after["system"]["monitor_pid"], before["system"]["monitor_pid"], "the same monitor runs it");
    assert_eq!(after["system"]["console"], before["system"]["console"], "the same console");
    assert_eq!(h.exec(&ct, "cat /etc/machine-id").trim(), machine_id, "its machine id stays");
    assert!(h.ok(&["console", &ct]).contains("[ferry: the container rebooted; starting it again]"));
    assert_services_up(&h, &ct, "after reboot");
    assert_kind(&h, &ct, "after reboot");

    step("rebooted");
    // `ferry stop`: SIGRTMIN+3, systemd halts well within its 120 s, the journal says so.
    let monitor = after["system"]["monitor_pid"].as_i64().unwrap();
    let t0 = Instant::now();
    h.ok(&["stop", &ct]);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(30), "stop took {took:?}: systemd did not halt on its own");
    eprintln!("stopped in {took:?}");
    let journal = h.data.join("private").join(&ct).join("var/log/journal");
    let o = Command::new("journalctl").arg("-D").arg(&journal).args(["-b", "-0", "--no-pager", "-o", "cat"]).output().unwrap();
    let last_boot = String::from_utf8_lossy(&o.stdout);
    assert!(
        last_boot.contains("System Halt") && last_boot.contains("Reached target shutdown.target"),
        "the journal shows no clean halt: {last_boot}"
    );
    assert!(h.ok(&["console", &ct]).contains("Halting system."));
    assert!(gone(monitor), "the monitor ({monitor}) stays after the stop");
    step("stopped");
    h.ok(&["destroy", &ct]);
    h.assert_clean();
    step("destroyed");
}

fn wait_child(c: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    None
}

/// Two simulated hosts with ferry and sshd each, and a client.
struct Sim {
    hosts: Vec<TestHost>,
    sshd: Vec<ssh::Sshd>,
    t: Topology,
}

impl Sim {
    fn new() -> Sim {
        let t = Topology::new(2, 1);
        let hosts: Vec<TestHost> = (0..2).map(|i| TestHost::in_netns(&t.host(i).netns_path())).collect();
        let sshd = (0..2).map(|i| ssh::Sshd::start(&t.host(i).netns_path(), &hosts[i].dir.path().join("sshd"))).collect();
        Sim { hosts, sshd, t }
    }

    fn migrate(&self, from: usize, to: usize, ct: &str) {
        let remote = format!("{} {FERRY}", self.hosts[to].env_prefix());
        let dest = format!("root@{}", self.t.host(to).ip4);
        let o = self.hosts[from]
            .cmd()
            .env("FERRY_LOG", std::env::var("FERRY_TEST_SHOW_MIGRATE_LOG").unwrap_or_default())
            .args(["migrate", ct, &dest, "--ssh-opts", &self.sshd[to].ssh_opts(), "--remote-ferry", &remote, "--times"])
            .output()
            .unwrap();
        assert!(o.status.success(), "migrate {from}->{to}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        eprintln!("{}", String::from_utf8_lossy(&o.stdout));
        if std::env::var_os("FERRY_TEST_SHOW_MIGRATE_LOG").is_some() {
            eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

/// One connection from the client's netns to redis, appending 1, 2, 3, ... to the list
/// `acked` (RPUSH, every 10 ms). Each reply must be the list's new length, so every write
/// redis acknowledged is the one before it plus one: none lost, none twice.
struct RedisClient {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<Duration, String>>>,
}

impl RedisClient {
    fn start(t: &Topology, ip: &str) -> RedisClient {
        let ns = t.client(0).netns_path();
        let addr = format!("{ip}:6379");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let s = topology::connect_from(&ns, &addr);
            let _ = tx.send(s.as_ref().map(|_| ()).map_err(|e| e.clone()));
            let mut s = s?;
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                let v = n.to_string();
                let cmd = format!("*3\r\n$5\r\nRPUSH\r\n$5\r\nacked\r\n${}\r\n{v}\r\n", v.len());
                s.write_all(cmd.as_bytes()).map_err(|e| format!("write {n}: send: {e}"))?;
                let mut reply = String::new();
                r.read_line(&mut reply).map_err(|e| format!("write {n}: receive: {e}"))?;
                if reply.trim_end() != format!(":{n}") {
                    return Err(format!("write {n}: redis answered {reply:?}: an acknowledged write is missing"));
                }
                acked2.store(n, Ordering::Relaxed);
                longest = longest.max(last.elapsed());
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(longest)
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("client thread").expect("client connects");
        RedisClient { stop, acked, thread: Some(thread) }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Wait until `more` further writes were acknowledged (the connection works now).
    fn wait_progress(&self, more: u64, what: &str) {
        let start = self.acked();
        let t0 = Instant::now();
        while self.acked() < start + more {
            assert!(t0.elapsed() < Duration::from_secs(20), "{what}: redis acknowledged nothing new (at {start})");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let longest = self.thread.take().unwrap().join().unwrap().unwrap_or_else(|e| panic!("the client failed: {e}"));
        (self.acked(), longest)
    }
}

impl Drop for RedisClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// After a move: systemd answers, redis-server is active, a journal entry written now is in
/// the journal, and the timer fired since.
fn assert_system_alive(h: &TestHost, ct: &str, what: &str) {
    let state = wait_booted(h, ct, Duration::from_secs(10)).0;
    if state != "running" {
        let failed = h.exec(ct, "systemctl list-units --failed --no-legend --plain; journalctl -p warning -n 30 --no-pager");
        panic!("{what}: systemd is {state:?}: {failed}");
    }
    assert_eq!(h.exec(ct, "systemctl is-active redis-server").trim(), "active", "{what}");
    let status = h.exec(ct, "systemctl status redis-server --no-pager");
    assert!(status.contains("Active: active (running)") && status.contains("/system.slice/redis-server.service"), "{what}: {status}");
    // A service systemd starts now reports ready over its notify socket (ssh is Type=notify),
    // lands in a new cgroup and is watched through its SIGCHLD.
    assert_eq!(h.exec(ct, "systemctl restart ssh && systemctl is-active ssh").trim(), "active", "{what}");
    let since = h.exec(ct, "date +%s").trim().to_string();
    let marker = format!("ferry-test-{what}").replace(' ', "-");
    h.exec(ct, &format!("logger -t ferry-test {marker}"));
    let t0 = Instant::now();
    loop {
        let j = h.exec(ct, &format!("journalctl --no-pager -o cat --since @{since} -t ferry-test -t ferry-tick"));
        let ticks = j.lines().filter(|l| l.contains("tick")).count();
        if j.contains(&marker) && ticks >= 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: the journal since the move has no {marker} or fewer than 2 timer ticks: {j}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn redis_under_systemd_keeps_every_acknowledged_write_through_checkpoint_and_live_migration() {
    let test = "redis_under_systemd_keeps_every_acknowledged_write_through_checkpoint_and_live_migration";
    let Some(tpl) = can_run(test) else { return };
    if !ssh::available() {
        eprintln!("{test}: skipped: openssh (sshd, ssh, ssh-keygen) is not installed (scripts/install-deps.sh)");
        return;
    }
    let sim = Sim::new();
    let (a, b) = (&sim.hosts[0], &sim.hosts[1]);
    // B gives an unprivileged container another range: its IDs, its console and its
    // delegated cgroups change hands on the way.
    b.add_host_config("userns_pool = \"7000000:655360\"\n");
    let ct = ctid();
    let ip = sim.t.ct_ip4(31).to_string();
    a.ok(&["create", &ct, "--template", tpl.to_str().unwrap(), "--ipadd", &ip]);
    a.ok(&["start", &ct]);
    assert_eq!(wait_booted(a, &ct, Duration::from_secs(20)).0, "running");
    // redis for the client on the network, and a timer that logs every second.
    a.exec(
        &ct,
        "sed -i -e 's/^bind .*/bind 0.0.0.0/' -e 's/^protected-mode yes/protected-mode no/' /etc/redis/redis.conf && systemctl restart redis-server",
    );
    a.exec(
        &ct,
        "printf '[Unit]\\nStartLimitIntervalSec=0\\n[Service]\\nType=oneshot\\nExecStart=/usr/bin/logger -t ferry-tick tick\\n' > /etc/systemd/system/ferry-tick.service && \
         printf '[Timer]\\nOnActiveSec=1\\nOnUnitActiveSec=1\\nAccuracySec=100ms\\n' > /etc/systemd/system/ferry-tick.timer && \
         systemctl daemon-reload && systemctl start ferry-tick.timer",
    );
    let t0 = Instant::now();
    while a.exec(&ct, "ss -ltn sport = :6379 | tail -n +2").trim().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "redis does not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = RedisClient::start(&sim.t, &ip);
    client.wait_progress(20, "before the checkpoint");

    // Checkpoint and restore on the same host: the client's connection and writes go on.
    let img = a.dir.path().join("sys.img");
    a.ok(&["checkpoint", &ct, "--dumpfile", img.to_str().unwrap()]);
    assert_eq!(a.ok(&["status", &ct]).split_whitespace().nth(1), Some("stopped"));
    a.ok(&["restore", &ct, "--dumpfile", img.to_str().unwrap()]);
    client.wait_progress(20, "after the restore");
    assert_system_alive(a, &ct, "after checkpoint and restore");
    assert_kind(a, &ct, "after checkpoint and restore");

    // Live to B and back to A.
    let range_on_a = a.range_first(&ct);
    sim.migrate(0, 1, &ct);
    client.wait_progress(20, "after the move to B");
    assert_system_alive(b, &ct, "on B");
    assert!(b.cgroup(&ct).pids().unwrap().len() >= 8, "the services are not in B's cgroup");
    assert_kind(b, &ct, "on B");
    if let (Some(on_a), Some(on_b)) = (range_on_a, b.range_first(&ct)) {
        assert_ne!(on_a, on_b, "B's pool gives another range");
    }
    sim.migrate(1, 0, &ct);
    client.wait_progress(20, "after the move back to A");
    assert_system_alive(a, &ct, "back on A");
    assert_services_up(a, &ct, "back on A");
    assert_kind(a, &ct, "back on A");

    let (acked, longest) = client.finish();
    eprintln!("client: {acked} writes acknowledged, longest wait {longest:?}");
    let len: u64 = a.exec(&ct, "redis-cli LLEN acked").trim().parse().unwrap();
    assert!(len >= acked, "redis holds {len} of {acked} acknowledged writes");
    let all = a.exec(&ct, &format!("redis-cli LRANGE acked 0 {}", acked - 1));
    let want: String = (1..=acked).map(|i| format!("{i}\n")).collect();
    assert!(all == want, "the list is not 1..{acked} in order");
    a.ok(&["stop", &ct]);
    a.ok(&["destroy", &ct]);
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn busybox_init_gets_its_poweroff_signal_and_halts_on_its_own() {
    // The busybox template (no Debian boot): about 4 s, as busybox init pauses a second before
    // and after its poweroff request.
    let test = "busybox_init_gets_its_poweroff_signal_and_halts_on_its_own";
    if !support::need_root(test) {
        return;
    }
    let h = TestHost::new();
    let ct = ctid();
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap(), "--init", "/bin/busybox init", "--stop-timeout", "60"]);
    let cfg = std::fs::read_to_string(h.data.join("conf").join(format!("{ct}.toml"))).unwrap();
    assert!(cfg.contains("init_system = \"busybox\""), "{cfg}");
    std::fs::write(h.data.join("private").join(&ct).join("etc/inittab"), "::sysinit:/bin/echo sysinit-ran\n::shutdown:/bin/echo shutdown-ran\n")
        .unwrap();
    h.ok(&["start", &ct]);
    support::wait_for("busybox init to run its sysinit entry", || h.ok(&["console", &ct]).contains("sysinit-ran"));
    let t0 = Instant::now();
    h.ok(&["stop", &ct]);
    let took = t0.elapsed();
    let log = h.ok(&["console", &ct]);
    // SIGUSR2 is poweroff; SIGTERM would have been a reboot request.
    assert!(log.contains("shutdown-ran") && log.contains("Requesting system poweroff"), "{log}");
    assert!(took < Duration::from_secs(30), "stop took {took:?}: init did not end by itself within its 60 s");
    h.ok(&["destroy", &ct]);
    h.assert_clean();
}

#[test]
fn create_help_names_the_template_kinds() {
    let o = Command::new(FERRY).args(["create", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for kind in ["`busybox`", "`debian DIR [PACKAGE...]`", "`debian-systemd DIR`", "--init-system"] {
        assert!(help.contains(kind), "ferry create --help lacks {kind}: {help}");
    }
}
