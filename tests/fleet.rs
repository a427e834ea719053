//! ferry in a fleet: `ferry metrics` (checked by promtool, its figures against `ferry list
//! --json` and `ferry status --json` of real containers, its journal counting real
//! checkpoints and migrations), and `ferry evacuate` between simulated hosts over real sshd.

#[path = "support/ssh.rs"]
mod ssh;
mod support;
#[path = "support/topology.rs"]
mod topology;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{TestHost, FERRY};
use topology::Topology;

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn can_run(test: &str, tools: &[&str]) -> bool {
    if !support::need_root(test) {
        return false;
    }
    for tool in tools {
        if !have(tool) {
            eprintln!("{test}: skipped: {tool} is not installed (scripts/install-deps.sh)");
            return false;
        }
    }
    true
}

fn ctid() -> String {
    format!("f{}", topology::unique_id())
}

/// `name{labels}` → value, of every sample in a Prometheus text exposition.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {l:?}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no sample {key} in {m:#?}"))
}

/// The output must pass `promtool check metrics` (Debian's prometheus package, installed by
/// scripts/install-deps.sh --test); says so when promtool is missing.
fn promtool_accepts(test: &str, text: &str) {
    if !have("promtool") {
        eprintln!("{test}: promtool check skipped: promtool is not installed (scripts/install-deps.sh --test installs prometheus)");
        return;
    }
    let mut c =
        Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_match_list_and_status() {
    let test = "metrics_pass_promtool_and_match_list_and_status";
    if !can_run(test, &["criu", "ip", "nsenter"]) {
        return;
    }
    let h = TestHost::new();
    if !h.has_controllers_for(test, &["ram", "numproc"]) {
        return;
    }
    let (a, b) = (ctid(), ctid());
    h.ok(&["create", &a, "--template", h.template.to_str().unwrap(), "--ram", "256M", "--numproc", "100", "--name", &format!("{a}-web")]);
    h.ok(&["start", &a]);
    // Something that takes memory and holds still, so the figures stay put between commands.
    h.exec(&a, "(dd if=/dev/zero bs=1M count=8 2>/dev/null | tail -c 1 >/dev/null; sleep 1000) </dev/null >/dev/null 2>&1 &");
    h.ok(&["create", &b, "--template", h.template.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));

    let text = h.ok(&["metrics"]);
    promtool_accepts(test, &text);
    let m = samples(&text);
    let list: serde_json::Value = serde_json::from_str(&h.ok(&["list", "-a", "--json"])).unwrap();
    let row = |ct: &str| list.as_array().unwrap().iter().find(|r| r["ctid"] == ct).unwrap_or_else(|| panic!("{ct} not in {list}")).clone();
    let status: serde_json::Value = serde_json::from_str(&h.ok(&["status", &a, "--json"])).unwrap();
    let (ra, rb) = (row(&a), row(&b));
    let l = |ct: &str| format!("{{ctid=\"{ct}\"}}");

    assert_eq!(metric(&m, &format!("ferry_container_state{{ctid=\"{a}\",state=\"running\"}}")), 1.0);
    assert_eq!(metric(&m, &format!("ferry_container_state{{ctid=\"{b}\",state=\"stopped\"}}")), 1.0);
    assert_eq!(metric(&m, &format!("ferry_container_state{{ctid=\"{b}\",state=\"running\"}}")), 0.0);
    assert_eq!(metric(&m, &format!("ferry_container_info{{ctid=\"{a}\",name=\"{a}-web\"}}")), 1.0);
    // Limits: exact, and the same in list and status.
    assert_eq!(metric(&m, &format!("ferry_container_memory_limit_bytes{}", l(&a))), 256.0 * 1024.0 * 1024.0);
    assert_eq!(ra["ram"].as_f64(), Some(256.0 * 1024.0 * 1024.0), "{ra}");
    assert_eq!(status["limits"]["ram"].as_f64(), Some(256.0 * 1024.0 * 1024.0), "{status}");
    assert_eq!(metric(&m, &format!("ferry_container_processes_limit{}", l(&a))), 100.0);
    assert_eq!(status["limits"]["numproc"].as_f64(), Some(100.0), "{status}");
    // Usage of an idle container: processes exact, memory and CPU close.
    assert_eq!(metric(&m, &format!("ferry_container_processes{}", l(&a))), ra["numproc"].as_f64().unwrap(), "{ra}");
    assert_eq!(status["usage"]["numproc"], ra["numproc"], "{status}");
    let mem = metric(&m, &format!("ferry_container_memory_bytes{}", l(&a)));
    let mem_list = ra["memory"].as_f64().unwrap();
    assert!(mem > 0.0 && (mem - mem_list).abs() <= mem_list * 0.2 + (1 << 20) as f64, "metrics say {mem}, list says {mem_list}");
    let cpu = metric(&m, &format!("ferry_container_cpu_seconds_total{}", l(&a)));
    let cpu_list = ra["cputime"].as_f64().unwrap();
    assert!(cpu <= cpu_list && cpu_list - cpu < 0.5, "metrics say {cpu} CPU seconds, list says {cpu_list}");
    let io = metric(&m, &format!("ferry_container_io_read_bytes_total{}", l(&a)));
    assert!(io <= ra["ioread"].as_f64().unwrap(), "{io} {ra}");
    // A stopped container has a state and no usage.
    assert!(!m.contains_key(&format!("ferry_container_memory_bytes{}", l(&b))), "{rb}\n{text}");
    // Versions.
    let criu = String::from_utf8_lossy(&Command::new("criu").arg("--version").output().unwrap().stdout).into_owned();
    let criu = criu.lines().find_map(|l| l.strip_prefix("Version: ")).unwrap().trim().to_string();
    assert!(m.keys().any(|k| k.starts_with("ferry_build_info{version=\"") && k.contains(&format!("criu=\"{criu}\""))), "{text}");
    assert_eq!(metric(&m, "ferry_checkpoints_total{result=\"done\"}"), 0.0);

    // A real checkpoint is counted, with its frozen time.
    let img = h.dir.path().join("a.img");
    h.ok(&["checkpoint", &a, "--keep-running", "--dumpfile", img.to_str().unwrap()]);
    // One that fails: a stopped container cannot be checkpointed.
    let _ = h.ferry(&["checkpoint", &b, "--dumpfile", h.dir.path().join("b.img").to_str().unwrap()]);
    let out = h.dir.path().join("node-exporter/ferry.prom");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    h.ok(&["metrics", "--output", out.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
    promtool_accepts(test, &text);
    let m = samples(&text);
    assert_eq!(metric(&m, "ferry_checkpoints_total{result=\"done\"}"), 1.0, "{text}");
    assert_eq!(metric(&m, "ferry_checkpoint_frozen_seconds_count"), 1.0, "{text}");
    assert_eq!(metric(&m, "ferry_checkpoint_frozen_seconds_bucket{le=\"+Inf\"}"), 1.0, "{text}");
    assert!(metric(&m, "ferry_checkpoint_frozen_seconds_sum") > 0.0, "{text}");
    assert_eq!(metric(&m, "ferry_migrations_total{result=\"done\"}"), 0.0, "{text}");
    // The file was replaced whole: no temporary file is left beside it.
    let names: Vec<String> =
        std::fs::read_dir(out.parent().unwrap()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["ferry.prom".to_string()]);
    h.ok(&["stop", &a]);
}

#[test]
fn metrics_listen_serves_them_over_http() {
    let test = "metrics_listen_serves_them_over_http";
    if !can_run(test, &["ip", "nsenter"]) {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let ct = ctid();
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap()]);
    let addr = format!("{}:9469", t.host(0).ip4);
    let mut server = h.cmd().args(["metrics", "--listen", &addr]).stderr(Stdio::piped()).spawn().unwrap();
    let mut said = String::new();
    BufReader::new(server.stderr.as_mut().unwrap()).read_line(&mut said).unwrap();
    assert!(said.contains("serving metrics"), "{said}");
    let get = |path: &str| {
        let mut s = topology::connect_from(&t.host(0).netns_path(), &addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let r = get("/metrics");
    let missing = get("/other");
    let _ = server.kill();
    let _ = server.wait();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
    promtool_accepts(test, body);
    assert_eq!(metric(&samples(body), &format!("ferry_container_state{{ctid=\"{ct}\",state=\"stopped\"}}")), 1.0, "{body}");
    drop(h);
}

const PORT: u16 = 8000;

/// Simulated hosts, each with a ferry environment and an sshd, and one client. Fields drop in
/// order: containers and files first, then the daemons, then the namespaces.
struct Fleet {
    hosts: Vec<TestHost>,
    sshd: Vec<ssh::Sshd>,
    t: Topology,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        let t = Topology::new(n, 1);
        let hosts: Vec<TestHost> = (0..n).map(|i| TestHost::in_netns(&t.host(i).netns_path())).collect();
        let sshd = (0..n).map(|i| ssh::Sshd::start(&t.host(i).netns_path(), &hosts[i].dir.path().join("sshd"))).collect();
        Fleet { hosts, sshd, t }
    }

    /// `--ssh-opts` that reach every host (each sshd has its own key), and a `--remote-ferry`
    /// that runs ferry with the settings of the host whose address it finds itself on.
    fn ssh_args(&self) -> (String, String) {
        let opts = self.sshd.iter().map(|s| s.ssh_opts()).collect::<Vec<_>>().join(" ");
        let mut script = String::from("#!/bin/sh\nfor a in $(ip -o -4 addr show | awk '{print $4}' | cut -d/ -f1); do\n  case $a in\n");
        for (i, h) in self.hosts.iter().enumerate() {
            script.push_str(&format!("    {}) exec {} {FERRY} \"$@\" ;;\n", self.t.host(i).ip4, h.env_prefix()));
        }
        script.push_str("  esac\ndone\necho 'not a simulated host' >&2\nexit 1\n");
        let path = self.hosts[0].dir.path().join("remote-ferry");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        (opts, path.display().to_string())
    }

    fn status(&self, i: usize, ct: &str) -> String {
        let o = self.hosts[i].ferry(&["status", ct, "--json"]);
        if !o.status.success() {
            return "absent".into();
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["status"].as_str().unwrap_or("?").to_string()
    }

    /// A running container with an echo server on PORT and a counter appending to /root/ctr.
    fn container(&self, i: usize, ct: &str, net: &[&str]) {
        let h = &self.hosts[i];
        let mut args = vec!["create", ct, "--template", h.template.to_str().unwrap()];
        args.extend(net);
        h.ok(&args);
        h.ok(&["start", ct]);
        h.exec(ct, &format!("ip link set lo up; nc -ll -p {PORT} -e /bin/cat </dev/null >/dev/null 2>&1 &"));
        h.exec(ct, "(i=0; while :; do i=$((i+1)); echo $i >> /root/ctr; usleep 10000; done) </dev/null >/dev/null 2>&1 &");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One TCP connection from the client's netns doing echo round trips until stopped; its
/// result says whether the connection held.
fn client(t: &Topology, addr: String) -> (Arc<AtomicBool>, std::thread::JoinHandle<Result<u64, String>>) {
    let ns = t.client(0).netns_path();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let s = topology::connect_from(&ns, &addr);
        let _ = tx.send(s.as_ref().map(|_| ()).map_err(|e| e.clone()));
        let mut s = s?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            n += 1;
            let msg = format!("{n}\n");
            s.write_all(msg.as_bytes()).map_err(|e| format!("round trip {n}: send: {e}"))?;
            let mut got = String::new();
            r.read_line(&mut got).map_err(|e| format!("round trip {n}: receive: {e}"))?;
            if got != msg {
                return Err(format!("round trip {n}: sent {msg:?}, got {got:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("client thread").expect("client connects");
    (stop, thread)
}

#[test]
fn evacuate_moves_what_it_can_and_names_what_stays() {
    let test = "evacuate_moves_what_it_can_and_names_what_stays";
    if !can_run(test, &["criu", "ip", "nsenter", "iptables", "pgrep"]) {
        return;
    }
    if !ssh::available() {
        eprintln!("{test}: skipped: openssh (sshd, ssh, ssh-keygen) is not installed (scripts/install-deps.sh)");
        return;
    }
    let f = Fleet::new(3);
    let (a, b, c) = (ctid(), ctid(), ctid());
    let ip = f.t.ct_ip4(71).to_string();
    f.container(0, &a, &["--ipadd", &ip]);
    f.container(0, &b, &[]);
    f.container(0, &c, &[]);
    // c's CTID is taken on both destinations: every preflight refuses it.
    for i in [1, 2] {
        f.hosts[i].ok(&["create", &c, "--template", f.hosts[i].template.to_str().unwrap()]);
    }
    let (opts, remote) = f.ssh_args();
    let dests: Vec<String> = (1..3).map(|i| format!("root@{}", f.t.host(i).ip4)).collect();
    let evacuate = |extra: &[&str]| {
        let mut cmd = f.hosts[0].cmd();
        cmd.arg("evacuate").args(&dests).args(["--ssh-opts", &opts, "--remote-ferry", &remote]).args(extra);
        let o = cmd.output().unwrap();
        eprintln!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        o
    };

    // --dry-run: the preflights say what would go where; nothing moves.
    let o = evacuate(&["--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(112), "not all would move");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["moved"].as_u64(), v["all_moved"].as_bool()), (Some(2), Some(false)), "{v}");
    let entry = |ct: &str| v["entries"].as_array().unwrap().iter().find(|e| e["ctid"] == ct).unwrap_or_else(|| panic!("{ct} in {v}")).clone();
    assert_eq!(entry(&a)["result"], "would-move", "{v}");
    assert!(dests.iter().any(|d| entry(&b)["destination"] == d.as_str()), "{v}");
    assert_eq!(entry(&c)["result"], "skipped", "{v}");
    assert_eq!(entry(&c)["refused"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(entry(&c)["refused"][1]["reason"].as_str().unwrap().contains("already exists on the destination"), "{v}");
    assert_eq!(f.status(0, &a), "running");
    assert_eq!(f.status(0, &b), "running");

    // The real thing, with a client talking to a throughout.
    let (stop, talk) = client(&f.t, format!("{ip}:{PORT}"));
    std::thread::sleep(Duration::from_millis(300));
    let o = evacuate(&["--parallel", "2"]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let round_trips = talk.join().unwrap().unwrap_or_else(|e| panic!("the client's connection broke: {e}"));
    assert!(round_trips > 10, "{round_trips} round trips");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(112), "the exit code says not all moved: {out}");
    assert!(out.starts_with("evacuate to ") && out.contains("2 of 3 moved"), "{out}");
    assert!(out.lines().any(|l| l.contains(&c) && l.contains("skipped") && l.contains("already exists")), "c is named: {out}");
    for ct in [&a, &b] {
        assert!(out.lines().any(|l| l.contains(ct.as_str()) && l.contains("moved") && l.contains("online")), "{out}");
        let on: Vec<usize> = (0..3).filter(|i| f.status(*i, ct) == "running").collect();
        assert!(on.len() == 1 && on[0] != 0, "{ct} runs on hosts {on:?}");
        assert_eq!(f.status(0, ct), "absent", "{ct} is gone from the source");
    }
    assert_eq!(f.status(0, &c), "running", "the refused one stays");

    // The source's journal counts both migrations (the preflights of the dry run are not
    // migrations), with their frozen times.
    let text = f.hosts[0].ok(&["metrics"]);
    promtool_accepts(test, &text);
    let m = samples(&text);
    assert_eq!(metric(&m, "ferry_migrations_total{result=\"done\"}"), 2.0, "{text}");
    assert_eq!(metric(&m, "ferry_migrations_total{result=\"failed\"}"), 0.0, "{text}");
    assert_eq!(metric(&m, "ferry_migration_frozen_seconds_count"), 2.0, "{text}");
    f.hosts[0].ok(&["stop", &c]);
}
