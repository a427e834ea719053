//! Networking through the `ferry` command: a ferry host in a simulated host netns, a client in
//! another; venet and bridged veth reach the client, addresses change live, stop removes every
//! host object.

mod support;
#[path = "support/topology.rs"]
mod topology;

use support::TestHost;
use topology::Topology;

fn can_run(test: &str) -> bool {
    if !support::need_root(test) {
        return false;
    }
    for tool in ["ip", "nsenter", "iptables", "python3"] {
        if !std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool}")).status().is_ok_and(|s| s.success()) {
            eprintln!("{test}: skipped: {tool} is not installed (scripts/install-deps.sh)");
            return false;
        }
    }
    true
}

/// A client connects to ADDR:8000, sends a line, prints what comes back.
const ECHO_CLIENT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 8000), timeout=float(sys.argv[2]))
    s.sendall(b"ping ferry\n"); s.shutdown(socket.SHUT_WR)
    print(s.recv(100).decode().strip())
except Exception as e:
    print("ERR", e); sys.exit(1)
"#;

fn echo(t: &Topology, addr: &str, timeout: f32) -> Result<String, String> {
    let cmd = format!("python3 -c '{}' {addr} {timeout}", ECHO_CLIENT.replace('\'', r"'\''"));
    let out = t.run_in(t.client(0), &cmd);
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(s)
    } else {
        Err(s)
    }
}

/// A persistent echo server on port 8000 inside the container (busybox nc).
fn serve(h: &TestHost, ct: &str) {
    h.exec(ct, "nc -ll -p 8000 -e /bin/cat </dev/null >/dev/null 2>&1 &");
    std::thread::sleep(std::time::Duration::from_millis(200));
}

fn assert_clean(t: &Topology) {
    let left = t.leftovers(t.host(0));
    assert!(left.is_empty(), "left behind on {}: {left:#?}", t.host(0).name);
}

fn ctid() -> String {
    // Host interface names derive from the CTID: unique per test run.
    format!("n{}", topology::unique_id())
}

#[test]
fn venet_through_the_cli_live_addresses_and_cleanup() {
    if !can_run("venet_through_the_cli_live_addresses_and_cleanup") {
        return;
    }
    let t = Topology::new(1, 1);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let ct = ctid();
    let a1 = t.ct_ip4(11).to_string();
    let a2 = t.ct_ip4(12).to_string();
    let a6 = t.ct_ip6(11).to_string();
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap(), "--ipadd", &a1, "--ipadd", &a6]);
    h.ok(&["start", &ct]);
    serve(&h, &ct);
    assert_eq!(echo(&t, &a1, 3.0).as_deref(), Ok("ping ferry"));
    assert_eq!(echo(&t, &a6, 3.0).as_deref(), Ok("ping ferry"), "IPv6 venet (proxy NDP)");
    let ips = h.ok(&["list", "-H", "-o", "ip"]);
    assert!(ips.contains(&a1) && ips.contains(&a6), "{ips}");

    // Live: a2 works at once, a1 stops at once; the config is unchanged without --save.
    h.ok(&["set", &ct, "--ipadd", &a2, "--ipdel", &a1]);
    assert_eq!(echo(&t, &a2, 3.0).as_deref(), Ok("ping ferry"));
    assert!(echo(&t, &a1, 1.0).is_err(), "a deleted address still answers");
    let ips = h.ok(&["list", "-H", "-o", "ip"]);
    assert!(ips.contains(&a2) && !ips.contains(&a1), "{ips}");
    let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
    assert!(conf.contains(&a1) && !conf.contains(&a2), "{conf}");
    // Routed inside: the container has exactly its addresses.
    let inside = h.exec(&ct, "ip -4 addr show dev venet0");
    assert!(inside.contains(&a2) && !inside.contains(&a1), "{inside}");

    // Bad input: changes nothing.
    let e = h.fails(&["set", &ct, "--ipdel", "not-an-ip"]);
    assert!(e.contains("not an IP address"), "{e}");
    let e = h.fails(&["set", &ct, "--netif", "eth0:br0,mac=zz"]);
    assert!(e.contains("invalid MAC") || e.contains("--save"), "{e}");

    // --save persists; a stop removes every veth, route, proxy entry and rule.
    h.ok(&["set", &ct, "--ipadd", &a1, "--save"]);
    let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
    assert!(conf.contains(&a1), "{conf}");
    h.ok(&["stop", &ct]);
    assert_clean(&t);
    assert!(echo(&t, &a1, 1.0).is_err());

    // Saved addresses come back at the next start (a1 and a6; a2 was never saved), and start
    // announces them: a client's stale entry for a1 is repointed at the host's uplink MAC.
    let c = &t.client(0).name;
    topology::sh(&format!("ip -n {c} neigh replace {a1} lladdr 02:de:ad:be:ef:01 nud stale dev eth0"));
    h.ok(&["start", &ct]);
    let neigh = topology::sh(&format!("ip -n {c} neigh show {a1} dev eth0"));
    assert!(neigh.contains(&t.host(0).mac_str()), "start did not announce {a1}: {neigh}");
    serve(&h, &ct);
    assert_eq!(echo(&t, &a1, 3.0).as_deref(), Ok("ping ferry"));
    h.ok(&["destroy", "--force", &ct]);
    assert_clean(&t);
}

#[test]
fn veth_bridged_through_the_cli() {
    if !can_run("veth_bridged_through_the_cli") {
        return;
    }
    let t = Topology::new(1, 1);
    t.run_in_ok(t.host(0), "ip link add br0 type bridge && ip link set br0 up && ip link set eth0 master br0");
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let ct = ctid();
    // Its admin configures the interface inside: that needs NET_ADMIN, which is not a default.
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap(), "--netif", "eth0:br0", "--capability", "net_admin:on"]);
    let conf = std::fs::read_to_string(h.data.join(format!("conf/{ct}.toml"))).unwrap();
    let mac = conf.lines().find_map(|l| l.trim().strip_prefix("mac = ")).expect("a generated MAC in the config").trim_matches('"').to_string();
    h.ok(&["start", &ct]);
    let link = h.exec(&ct, "ip link show dev eth0");
    assert!(link.contains(&mac), "the configured MAC {mac} inside: {link}");
    // The container's admin configures its interface.
    h.exec(&ct, "ip addr add 198.18.2.10/16 dev eth0");
    serve(&h, &ct);
    assert_eq!(echo(&t, "198.18.2.10", 3.0).as_deref(), Ok("ping ferry"));
    // Same MAC after a restart.
    h.ok(&["restart", &ct]);
    assert!(h.exec(&ct, "ip link show dev eth0").contains(&mac));
    h.ok(&["stop", &ct]);
    assert_clean(&t);
    // Interface changes need --save and act at the next start.
    let e = h.fails(&["set", &ct, "--netif-del", "eth0"]);
    assert!(e.contains("--save"), "{e}");
    h.ok(&["set", &ct, "--netif-del", "eth0", "--save"]);
    h.ok(&["start", &ct]);
    assert!(!h.exec(&ct, "ip -o link").contains("eth0"), "eth0 should be gone");
    h.ok(&["destroy", "--force", &ct]);
    assert_clean(&t);
}

#[test]
fn passthrough_through_the_cli_comes_back_on_stop() {
    if !can_run("passthrough_through_the_cli_comes_back_on_stop") {
        return;
    }
    let t = Topology::new(1, 0);
    let host = t.host(0);
    let dev = format!("{}x", &t.id[..t.id.len().min(12)]);
    // A virtual device: it would be destroyed, not returned, if the netns died with it inside.
    if !t.run_in(host, &format!("ip link add {dev} type dummy")).status.success() {
        t.run_in_ok(host, &format!("ip link add {dev} type ifb"));
    }
    let h = TestHost::in_netns(&host.netns_path());
    let ct = ctid();
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap(), "--netdev-add", &dev]);
    h.ok(&["start", &ct]);
    assert!(h.exec(&ct, "ip -o link").contains(&dev), "{dev} inside the container");
    assert!(!t.run_in(host, &format!("ip link show dev {dev}")).status.success(), "{dev} still on the host");
    h.ok(&["stop", &ct]);
    assert!(t.run_in(host, &format!("ip link show dev {dev}")).status.success(), "{dev} did not come back");
    // A device that is not there: start fails, says which, and leaves nothing.
    t.run_in_ok(host, &format!("ip link del {dev}"));
    let e = h.fails(&["start", &ct]);
    assert!(e.contains(&dev) && e.contains("--netdev-add"), "{e}");
    assert_eq!(h.ok(&["status", &ct]).trim(), format!("{ct} stopped"));
    assert_clean(&t);
    h.ok(&["destroy", &ct]);
    h.assert_clean();
}

#[test]
fn failed_start_after_network_setup_leaves_nothing() {
    if !can_run("failed_start_after_network_setup_leaves_nothing") {
        return;
    }
    let t = Topology::new(1, 0);
    let h = TestHost::in_netns(&t.host(0).netns_path());
    let ct = ctid();
    let a1 = t.ct_ip4(21).to_string();
    // The init cannot be executed: start fails after the network was set up.
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap(), "--ipadd", &a1, "--init", "/no/such/init"]);
    let e = h.fails(&["start", &ct]);
    assert!(e.contains("/no/such/init"), "{e}");
    assert_clean(&t);
    h.assert_clean();
    assert_eq!(h.ok(&["status", &ct]).trim(), format!("{ct} stopped"));
}

/// The attack on the host's network work: with nesting, the init moves to a network namespace
/// of its own (leaving a process behind in the one ferry made) and lays traps there: a device
/// named venet0 for the addresses `set --ipadd` gives, and a device with the ifindex of the
/// host device passed through, for `stop` to take back to the host in its place. ferry works
/// on the namespace it made: the new address lands there, and the host gets its own device
/// back (its MAC tells it from the decoy).
#[test]
fn live_addresses_and_returned_devices_go_to_the_netns_ferry_made_not_the_inits() {
    let test = "live_addresses_and_returned_devices_go_to_the_netns_ferry_made_not_the_inits";
    if !can_run(test) {
        return;
    }
    let t = Topology::new(1, 0);
    let host = t.host(0);
    let dev = format!("{}x", &t.id[..t.id.len().min(12)]);
    t.run_in_ok(host, &format!("ip link add {dev} type ifb"));
    let mac_of = |out: &str| out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).map(str::to_string);
    let host_mac = mac_of(&t.run_in_ok(host, &format!("ip -o link show dev {dev}"))).expect("the device's MAC");
    let h = TestHost::in_netns(&host.netns_path());
    let ct = ctid();
    let (a1, a2) = (t.ct_ip4(31).to_string(), t.ct_ip4(32).to_string());
    h.ok(&["create", &ct, "--template", h.template.to_str().unwrap(), "--ipadd", &a1, "--netdev-add", &dev, "--features", "nesting:on"]);
    let private = h.data.join("private").join(&ct);
    let script = |name: &str, text: &str| {
        std::fs::write(private.join(name), text).unwrap();
        std::fs::set_permissions(private.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    script("init.sh", &format!("#!/bin/sh\nsleep 100000 &\nexec unshare -U -r -n /trap.sh \"$(cat /sys/class/net/{dev}/ifindex)\"\n"));
    script(
        "trap.sh",
        "#!/bin/sh\nip link add venet0 type ifb && ip link set venet0 up\ni=0\n\
         while ! ip -o link | grep -q \"^$1: \"; do i=$((i+1)); [ $i -gt 300 ] && break; ip link add e$i type ifb || break; done\n\
         echo ready > /trap-ready\ntrap 'exit 0' TERM\nwhile :; do sleep 1; done\n",
    );
    let conf = h.data.join("conf").join(format!("{ct}.toml"));
    let mut cfg = ferry_runtime::ContainerConfig::load(&conf).unwrap();
    cfg.init = vec!["/init.sh".into()];
    cfg.save(&conf).unwrap();
    h.ok(&["start", &ct]);
    support::wait_for("the init's traps", || private.join("trap-ready").exists());
    let init = h.pid(&ct);
    let netns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let stayed = h.cgroup(&ct).pids().unwrap().into_iter().find(|p| netns(*p) != netns(init)).expect("a process left in ferry's netns");
    let in_ns = |pid: i32, cmd: &str| t.run_in_ok(host, &format!("nsenter --net=/proc/{pid}/ns/net {cmd}"));
    assert!(in_ns(init, "ip -o link").contains("venet0"), "the trap is set");

    h.ok(&["set", &ct, "--ipadd", &a2]);
    assert!(in_ns(stayed, "ip -o addr show dev venet0").contains(&a2), "the address belongs in the container's netns");
    assert!(!in_ns(init, "ip -o addr").contains(&a2), "the address went to the init's own netns");

    h.ok(&["stop", &ct]);
    let back = t.run_in_ok(host, &format!("ip -o link show dev {dev}"));
    assert_eq!(mac_of(&back).as_deref(), Some(host_mac.as_str()), "the host got a device of the container's instead of its own: {back}");
    assert_clean(&t);
    h.ok(&["destroy", &ct]);
    h.assert_clean();
}
