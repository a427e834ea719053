//! ferry in a fleet: `ferry metrics` (checked by promtool, its figures against `ferry list
//! --json` and `ferry status --json` of real containers, its journal counting real
//! checkpoints and migrations), and `ferry evacuate` between simulated hosts over real sshd.

#[path = "support/ssh.rs"]
mod ssh;
#[path = "support/sshhosts.rs"]
mod sshhosts;
mod support;
#[path = "support/topology.rs"]
mod topology;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{TestHost, FERRY};
use topology::Topology;

/// The simulated hosts of these tests (their methods are below).
type Fleet = sshhosts::SshHosts;

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
    // One that fails: a stopped container cannot be checkpointed (refused before CRIU runs,
    // so it is not an attempt the journal counts).
    h.fails(&["checkpoint", &b, "--dumpfile", h.dir.path().join("b.img").to_str().unwrap()]);
    // As the shipped timer's service runs it (installed by install-host.sh), into a
    // textfile directory of the test's.
    let root = h.dir.path().join("sysroot");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-host.sh");
    let o = Command::new(script).args(["--root", root.to_str().unwrap(), "--ferry", FERRY]).output().unwrap();
    assert!(o.status.success(), "install-host.sh: {}", String::from_utf8_lossy(&o.stderr));
    let units = root.join("etc/systemd/system");
    let timer = std::fs::read_to_string(units.join("ferry-metrics.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* *:*:00/15"), "every 15 s: {timer}");
    let service = std::fs::read_to_string(units.join("ferry-metrics.service")).unwrap();
    let argv: Vec<String> = service.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap().split_whitespace().map(String::from).collect();
    assert_eq!(argv[..3], [FERRY.to_string(), "metrics".into(), "--output".into()], "{service}");
    assert_eq!(argv[3], "/var/lib/prometheus/node-exporter/ferry.prom", "where node_exporter's textfile collector reads");
    let out = h.dir.path().join("node-exporter/ferry.prom");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    h.ok(&[&argv[1], &argv[2], out.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644, "node_exporter reads it");
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
    // Killed and reaped however the test ends.
    let mut server = topology::Bg(h.cmd().args(["metrics", "--listen", &addr]).stderr(Stdio::piped()).spawn().unwrap());
    let mut said = String::new();
    BufReader::new(server.0.stderr.as_mut().unwrap()).read_line(&mut said).unwrap();
    assert!(said.contains("serving metrics"), "{said}");
    let get = |path: &str| {
        let mut s = topology::connect_from(&t.host(0).netns_path(), &addr).unwrap();
        // A refused connection reads as empty (the caller retries).
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    };
    // Silent peers take every slot (8): a request meanwhile is turned away at once, not
    // queued; their read timeout (5 s) frees the slots, and the request is answered then.
    let ns = t.host(0).netns_path();
    let silent: Vec<_> = (0..8).map(|_| topology::connect_from(&ns, &addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    assert!(get("/metrics").is_empty(), "answered while silent peers held every slot");
    let mut r = get("/metrics");
    while r.is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        r = get("/metrics");
    }
    let waited = t0.elapsed();
    assert!(waited > Duration::from_secs(3) && waited < Duration::from_secs(8), "answered after {waited:?}: the slots were not freed by the timeout");
    drop(silent);
    // A peer that sends an endless head is cut off at 16 KiB, not read for ever.
    let mut endless = topology::connect_from(&ns, &addr).unwrap();
    let _ = endless.write_all(&vec![b'A'; 100 << 10]);
    let mut answer = String::new();
    let _ = endless.read_to_string(&mut answer);
    assert!(!answer.starts_with("HTTP/1.0 200"), "{answer}");
    let missing = get("/other");
    drop(server);
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
    promtool_accepts(test, body);
    assert_eq!(metric(&samples(body), &format!("ferry_container_state{{ctid=\"{ct}\",state=\"stopped\"}}")), 1.0, "{body}");
    drop(h);
}

const PORT: u16 = sshhosts::ECHO_PORT;

impl Fleet {
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
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (opts, path.display().to_string())
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

/// The ansible-core the collection is tested with (from PyPI).
const ANSIBLE_CORE: &str = "2.19";

fn python_version() -> String {
    let o = Command::new("/usr/bin/python3").args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// ansible-core from PyPI in a venv of its own under /var/cache/ferry-test (made once and
/// kept), with what `ansible-test sanity --test validate-modules` needs, and a HOME for
/// ansible-test whose pip bootstrap uses the system's pip (ansible-test's own download site
/// may be out of reach). None after saying why `test` is skipped.
fn ansible_venv(test: &str) -> Option<PathBuf> {
    let cache = Path::new("/var/cache/ferry-test");
    let venv = cache.join(format!("ansible-core-{ANSIBLE_CORE}"));
    std::fs::create_dir_all(cache).unwrap();
    let lock = std::fs::File::create(cache.join("ansible.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if venv.join(".complete").exists() {
        return Some(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let run = |args: &[&str]| Command::new("/usr/bin/python3").args(args).output().unwrap();
    if !Path::new("/usr/bin/python3").exists() || !run(&["-m", "pip", "--version"]).status.success() {
        eprintln!("{test}: skipped: needs /usr/bin/python3 with pip and venv (scripts/install-deps.sh --test)");
        return None;
    }
    let o = run(&["-m", "venv", "--without-pip", venv.to_str().unwrap()]);
    if !o.status.success() {
        eprintln!(
            "{test}: skipped: python3 -m venv failed (scripts/install-deps.sh --test installs python3-venv): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    let py = venv.join("bin/python");
    let pip = |args: &[&str]| run(&[&["-m", "pip", "--python", py.to_str().unwrap(), "install", "--quiet"], args].concat());
    let o = pip(&[&format!("ansible-core=={ANSIBLE_CORE}.*")]);
    if !o.status.success() {
        eprintln!("{test}: skipped: cannot install ansible-core from PyPI: {}", String::from_utf8_lossy(&o.stderr));
        let _ = std::fs::remove_dir_all(&venv);
        return None;
    }
    let site = std::fs::read_dir(venv.join("lib")).unwrap().flatten().next().unwrap().path().join("site-packages/ansible_test/_data/requirements");
    let o = pip(&["-r", site.join("sanity.validate-modules.txt").to_str().unwrap()]);
    assert!(o.status.success(), "install the validate-modules requirements: {}", String::from_utf8_lossy(&o.stderr));
    // ansible-test bootstraps pip in its venvs with get-pip.py of the version it names.
    let reqs = std::fs::read_to_string(site.join("../../_internal/python_requirements.py")).unwrap();
    let pip_version = reqs.split("pip='").nth(1).and_then(|r| r.split('\'').next()).expect("ansible-test names its pip").replace('.', "_");
    let cache_dir = venv.join("home/.ansible/test/cache");
    std::fs::create_dir_all(&cache_dir).unwrap();
    std::fs::write(
        cache_dir.join(format!("get_pip_{pip_version}.py")),
        "# pip for ansible-test's venvs, installed by the system's pip from PyPI\nimport subprocess, sys\n\
         args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]\n\
         sys.exit(subprocess.call(['/usr/bin/python3', '-m', 'pip', '--python', sys.executable, 'install'] + args))\n",
    )
    .unwrap();
    std::fs::write(venv.join(".complete"), "").unwrap();
    Some(venv)
}

fn collection_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ansible")
}

#[test]
fn ansible_collection_passes_sanity_validate_modules_and_compile() {
    let test = "ansible_collection_passes_sanity_validate_modules_and_compile";
    let Some(venv) = ansible_venv(test) else { return };
    // ansible-test writes into the collection (tests/output): a copy of it.
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp").arg("-r").arg(collection_src().join("ansible_collections")).arg(dir.path()).status().unwrap();
    assert!(st.success());
    let coll = dir.path().join("ansible_collections/ferry/ferry");
    for t in ["validate-modules", "compile"] {
        let o = Command::new(venv.join("bin/ansible-test"))
            .args(["sanity", "--test", t, "--python", &python_version(), "--color", "no"])
            .current_dir(&coll)
            .env("HOME", venv.join("home"))
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && out.contains(&format!("Running sanity test \"{t}\"")), "ansible-test sanity --test {t}:\n{out}");
        assert!(!out.contains("ERROR"), "{out}");
    }
}

/// ansible-playbook run from the client's netns against the simulated hosts over ssh.
struct Ansible<'a> {
    f: &'a Fleet,
    venv: PathBuf,
    dir: tempfile::TempDir,
}

impl Ansible<'_> {
    fn new(f: &Fleet, venv: PathBuf) -> Ansible<'_> {
        let dir = tempfile::tempdir().unwrap();
        let (opts, _) = f.ssh_args();
        let mut hosts = serde_json::Map::new();
        for (i, h) in f.hosts.iter().enumerate() {
            let env = serde_json::json!({
                "FERRY_DATA_DIR": h.data, "FERRY_RUN_DIR": h.run, "FERRY_CGROUP_PARENT": h.cgroup_parent,
                "FERRY_CGROUP_MODE": h.cgroup_mode.as_str(), "FERRY_HOST_CONFIG": h.host_config,
            });
            hosts.insert(
                format!("h{i}"),
                serde_json::json!({
                    "ansible_host": f.t.host(i).ip4.to_string(),
                    "ansible_ssh_private_key_file": f.sshd[i].client_key,
                    "ferry_env": env, "ferry_path": FERRY, "ferry_remote_ferry": format!("{} {FERRY}", h.env_prefix()),
                    "template": h.template,
                }),
            );
        }
        let inv = serde_json::json!({ "all": { "hosts": hosts, "vars": {
            "ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            "ansible_remote_tmp": dir.path().join("remote-tmp"), "ferry_ssh_opts": opts,
        }}});
        std::fs::write(dir.path().join("inventory.json"), inv.to_string()).unwrap();
        Ansible { f, venv, dir }
    }

    /// Run `playbook` (its text) with `args`; its output, after asserting it ran without failures.
    fn play(&self, playbook: &str, args: &[&str]) -> String {
        let p = self.dir.path().join("play.yml");
        std::fs::write(&p, playbook).unwrap();
        let o = Command::new("nsenter")
            .arg(format!("--net={}", self.f.t.client(0).netns_path()))
            .arg(self.venv.join("bin/ansible-playbook"))
            .args(["-i", self.dir.path().join("inventory.json").to_str().unwrap(), p.to_str().unwrap()])
            .args(args)
            .env("ANSIBLE_COLLECTIONS_PATH", collection_src())
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_SSH_TRANSFER_METHOD", "piped")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("local-tmp"))
            .env("HOME", self.dir.path())
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        eprintln!("{out}");
        assert!(o.status.success(), "ansible-playbook {args:?} failed:\n{out}");
        out
    }
}

/// The `changed=N` of `host` in a play recap.
fn changed(out: &str, host: &str) -> u32 {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{host} ")) && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap of {host}:\n{out}"));
    line.split_whitespace().find_map(|w| w.strip_prefix("changed=")).unwrap().parse().unwrap()
}

#[test]
fn ansible_playbooks_create_idempotently_check_mode_and_migrate_live() {
    let test = "ansible_playbooks_create_idempotently_check_mode_and_migrate_live";
    if !can_run(test, &["criu", "ip", "nsenter", "iptables"]) {
        return;
    }
    if !ssh::available() {
        eprintln!("{test}: skipped: openssh (sshd, ssh, ssh-keygen) is not installed (scripts/install-deps.sh)");
        return;
    }
    let Some(venv) = ansible_venv(test) else { return };
    let f = Fleet::new(2);
    let ans = Ansible::new(&f, venv);
    let (a, b) = (ctid(), ctid());
    let ip = f.t.ct_ip4(72).to_string();
    // ram and numproc where this host's cgroups take them (a v2 hierarchy without controllers
    // does not), numfiles (a process limit) always.
    let cgroup_limits = !f.hosts[0].missing_controllers().iter().any(|(l, _)| l == "ram" || l == "numproc");
    let limits = if cgroup_limits { "{ram: 256M, numproc: 200, numfiles: 4096}" } else { "{numfiles: 4096}" };
    let site = format!(
        r#"
- hosts: h0
  gather_facts: false
  environment: "{{{{ ferry_env }}}}"
  tasks:
    - ferry.ferry.ferry_container:
        name: {a}
        state: "{{{{ want | default('started') }}}}"
        template: "{{{{ template }}}}"
        addresses: ["{ip}"]
        limits: {limits}
        onboot: true
        ferry_path: "{{{{ ferry_path }}}}"
    - ferry.ferry.ferry_container:
        name: {b}
        state: present
        template: "{{{{ template }}}}"
        ferry_path: "{{{{ ferry_path }}}}"
    - ferry.ferry.ferry_snapshot:
        name: {b}
        schedule: {{every: 1h, keep: 3}}
        ferry_path: "{{{{ ferry_path }}}}"
    - ferry.ferry.ferry_facts:
        ferry_path: "{{{{ ferry_path }}}}"
    - ansible.builtin.assert:
        that:
          - (ferry_containers | selectattr('ctid', 'equalto', '{a}') | first).status == 'running'
          - (ferry_containers | selectattr('ctid', 'equalto', '{b}') | first).status == 'stopped'
          - ferry_check.rows | length > 0
"#
    );
    let out = ans.play(&site, &[]);
    assert_eq!(changed(&out, "h0"), 3, "created and started a, created b, scheduled b");
    let row: serde_json::Value = serde_json::from_str(&f.hosts[0].ok(&["list", &a, "--json"])).unwrap();
    assert_eq!((row[0]["numfileslimit"].as_u64(), row[0]["onboot"].as_bool()), (Some(4096), Some(true)), "{row}");
    if cgroup_limits {
        assert_eq!((row[0]["ram"].as_u64(), row[0]["numproclimit"].as_u64()), (Some(256 << 20), Some(200)), "{row}");
    }
    assert_eq!(row[0]["ip"][0], ip.as_str(), "{row}");
    // Again: nothing to change.
    let out = ans.play(&site, &[]);
    assert_eq!(changed(&out, "h0"), 0, "a second run changes nothing");
    // Check mode: it says what would change and changes nothing.
    let out = ans.play(&site, &["--check", "--diff", "-e", "want=stopped"]);
    assert_eq!(changed(&out, "h0"), 1, "{out}");
    assert!(out.contains("-    \"state\": \"running\"") && out.contains("+    \"state\": \"stopped\""), "the diff shows it: {out}");
    assert_eq!(f.status(0, &a), "running", "check mode stopped nothing");

    // ferry_migrate moves a with a client talking to it, and is ok the second time.
    f.hosts[0].exec(&a, &format!("ip link set lo up; nc -ll -p {PORT} -e /bin/cat </dev/null >/dev/null 2>&1 &"));
    std::thread::sleep(Duration::from_millis(200));
    let (stop, talk) = client(&f.t, format!("{ip}:{PORT}"));
    let migrate = format!(
        r#"
- hosts: h0
  gather_facts: false
  environment: "{{{{ ferry_env }}}}"
  tasks:
    - ferry.ferry.ferry_migrate:
        name: {a}
        dest: "root@{{{{ hostvars['h1'].ansible_host }}}}"
        ssh_opts: "{{{{ ferry_ssh_opts }}}}"
        remote_ferry: "{{{{ hostvars['h1'].ferry_remote_ferry }}}}"
        ferry_path: "{{{{ ferry_path }}}}"
"#
    );
    let out = ans.play(&migrate, &[]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let n = talk.join().unwrap().unwrap_or_else(|e| panic!("the client's connection broke: {e}"));
    assert!(n > 5, "{n} round trips");
    assert_eq!(changed(&out, "h0"), 1, "{out}");
    assert_eq!(f.status(1, &a), "running");
    assert_eq!(f.status(0, &a), "absent");
    let out = ans.play(&migrate, &[]);
    assert_eq!(changed(&out, "h0"), 0, "it is on the destination already: ok");
    assert!(!out.contains("failed=1"), "{out}");

    // contrib's maintenance playbook: h1 is emptied, its maintenance finds nothing running,
    // and a comes back.
    let tasks = ans.dir.path().join("maintenance-tasks.yml");
    std::fs::write(
        &tasks,
        "- ferry.ferry.ferry_facts:\n    ferry_path: \"{{ ferry_path }}\"\n  environment: \"{{ ferry_env }}\"\n\
         - ansible.builtin.assert:\n    that: ferry_containers | selectattr('status', 'equalto', 'running') | list | length == 0\n",
    )
    .unwrap();
    let book = std::fs::read_to_string(collection_src().join("playbooks/maintenance.yml")).unwrap();
    let maint = format!("ferry_maintenance_tasks={}", tasks.display());
    let out = ans.play(&book, &["-e", "ferry_source=h1", "-e", "ferry_target=h0", "-e", &maint]);
    assert_eq!((changed(&out, "h1"), changed(&out, "h0")), (1, 1), "moved away and back: {out}");
    assert!(out.contains("All assertions passed"), "{out}");
    assert_eq!(f.status(1, &a), "running");
    assert_eq!(f.status(0, &a), "absent");
}
