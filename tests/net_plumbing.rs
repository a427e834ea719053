//! Container networking on simulated hosts (root, real network namespaces): venet routing,
//! anti-spoofing, no broadcast, live address changes, bridged veth, passthrough, announce,
//! the restore plumbing, and that nothing is left on the host afterwards.

#[path = "support/topology.rs"]
mod topology;

use ferry_runtime::config::{ContainerConfig, VethIf};
use ferry_runtime::net::{self, names, NetState};
use ferry_runtime::{Ctid, Host};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::Child;
use std::time::{Duration, Instant};
use topology::{fmt_mac, sh, Bg, FakeContainer, Topology};

fn can_run() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return false;
    }
    for tool in ["ip", "nsenter", "unshare", "iptables", "ip6tables", "python3"] {
        if std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map_or(true, |o| !o.status.success()) {
            eprintln!("skipped: {tool} is not installed (scripts/install-deps.sh)");
            return false;
        }
    }
    true
}

fn cfg_for(ctid: &str) -> ContainerConfig {
    ContainerConfig::new(Ctid::new(ctid).unwrap())
}

/// Unique CTID per test so host interface names differ too.
fn ctid() -> String {
    format!("t{}", topology::unique_id())
}

const SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 8000)); s.listen(16)
print("READY", flush=True)
while True:
    c, a = s.accept(); c.sendall(b"hello from container\n"); c.close()
"#;

const FETCH: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 8000), timeout=float(sys.argv[2]))
    print(s.recv(100).decode().strip())
except Exception as e:
    print("ERR", e); sys.exit(1)
"#;

const UDP_LISTEN: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 9000)); s.settimeout(0.1)
print("READY", flush=True)
end = time.time() + float(sys.argv[1]); done = set()
while time.time() < end and len(done) < 2:
    try:
        d, a = s.recvfrom(100)
        if d.startswith(b"done"):
            done.add(d); continue
        print(d.decode(), a[0].replace("::ffff:", ""), flush=True)
    except socket.timeout:
        pass
"#;

const UDP_SEND: &str = r#"
import socket, sys
src, dst, msg = sys.argv[1], sys.argv[2], sys.argv[3]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if src != "-": s.bind((src, 0))
if dst.endswith(".255"): s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(3): s.sendto(msg.encode(), (dst, int(sys.argv[4]) if len(sys.argv) > 4 else 9000))
"#;

/// Counts incoming frames on an interface: broadcast/multicast ones and ones with a marker;
/// stops at the frame marked "last" or when the time is up.
const SNIFF: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0)); s.settimeout(0.1)
print("READY", flush=True)
end = time.time() + float(sys.argv[2]); bm = 0; mark = 0
while time.time() < end:
    try:
        f, a = s.recvfrom(4000)
    except socket.timeout:
        continue
    if a[2] == socket.PACKET_OUTGOING: continue
    if f[0] & 1: bm += 1
    if b"FERRYMARK" in f: mark += 1
    if b"FERRYMARK-last" in f: break
print(bm, mark, flush=True)
"#;

fn py(script: &str, args: &[&str]) -> String {
    let mut c = format!("python3 -c '{}'", script.replace('\'', r"'\''"));
    for a in args {
        c.push(' ');
        c.push_str(a);
    }
    c
}

fn wait_ready(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "helper did not start");
    r
}

fn rest_of(mut r: BufReader<std::process::ChildStdout>, child: &mut Child) -> String {
    let _ = child.wait();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut r, &mut s).unwrap();
    s
}

fn fetch(t: &Topology, client: usize, addr: &IpAddr, timeout: f32) -> Result<String, String> {
    let out = t.run_in(t.client(client), &py(FETCH, &[&addr.to_string(), &timeout.to_string()]));
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(s)
    } else {
        Err(s)
    }
}

fn assert_clean(t: &Topology) {
    for h in &t.hosts {
        let left = t.leftovers(h);
        assert!(left.is_empty(), "left behind on {}: {left:#?}", h.name);
    }
}

fn start_venet(t: &Topology, ct: &FakeContainer, addrs: &[IpAddr]) -> (ContainerConfig, NetState) {
    let mut cfg = cfg_for(&ctid());
    cfg.net.ipadd = addrs.to_vec();
    t.enter(t.host(0));
    let st = net::setup(&Host::default(), &cfg, ct.pid(), &ct.netns()).expect("venet setup");
    (cfg, st)
}

#[test]
fn venet_routes_both_families_and_cleans_up() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let (a4, a6) = (t.ct_ip4(10), t.ct_ip6(10));
    let (cfg, st) = start_venet(&t, &ct, &[a4, a6]);
    let host_if = names::venet_host_if(&cfg.ctid);
    assert_eq!(st.host_links, vec![host_if.clone()]);
    assert_eq!(st.proxies.len(), 2);
    assert!(st.proxies.iter().all(|p| p.dev == "eth0"), "uplink from the route to the subnet");

    let inner = ct.run_ok("ip -d link show dev venet0");
    assert!(inner.contains("NOARP") && inner.contains("UP"), "{inner}");
    assert!(ct.run_ok("ip -4 addr show dev venet0").contains(&format!("{a4}/32")));
    assert!(ct.run_ok("ip -6 addr show dev venet0").contains(&format!("{a6}/128")));
    assert!(ct.run_ok("ip -4 route").contains("default dev venet0"));
    assert!(ct.run_ok("ip -6 route").contains("default dev venet0"));

    let mut srv = Bg(ct.spawn(&py(SERVER, &[])));
    wait_ready(&mut srv.0);
    assert_eq!(fetch(&t, 0, &a4, 3.0).as_deref(), Ok("hello from container"));
    assert_eq!(fetch(&t, 0, &a6, 3.0).as_deref(), Ok("hello from container"));

    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
    // Idempotent.
    net::teardown(&Host::default(), &st).unwrap();
    assert!(fetch(&t, 0, &a4, 0.5).is_err(), "unreachable after teardown");
}

#[test]
fn cleanup_stale_without_state_removes_everything() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 0);
    let ct = FakeContainer::new();
    let (cfg, st) = start_venet(&t, &ct, &[t.ct_ip4(10), t.ct_ip6(10)]);
    assert!(!t.leftovers(t.host(0)).is_empty());
    drop(st); // the state file was lost
    net::cleanup_stale(&Host::default(), &cfg).unwrap();
    assert_clean(&t);
    net::cleanup_stale(&Host::default(), &cfg).unwrap();
}

#[test]
fn venet_drops_unassigned_source_addresses() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let (a4, a6) = (t.ct_ip4(10), t.ct_ip6(10));
    let (s4, s6) = (t.ct_ip4(99), t.ct_ip6(99));
    let (_cfg, st) = start_venet(&t, &ct, &[a4, a6]);
    // The container's admin adds addresses the host never assigned.
    ct.run_ok(&format!("ip addr add {s4}/32 dev venet0 && ip addr add {s6}/128 dev venet0 nodad"));

    let mut l = Bg(t.spawn_in(t.client(0), &py(UDP_LISTEN, &["20"])));
    let r = wait_ready(&mut l.0);
    let (c4, c6) = (t.client(0).ip4.to_string(), t.client(0).ip6.to_string());
    for (src, dst, msg) in [(a4, &c4, "good4"), (a6, &c6, "good6"), (s4, &c4, "spoof4"), (s6, &c6, "spoof6")] {
        ct.run_ok(&py(UDP_SEND, &[&src.to_string(), dst, msg]));
    }
    // Same path as the spoofed ones, so they had their chance to arrive before this one.
    ct.run_ok(&py(UDP_SEND, &[&a4.to_string(), &c4, "done4"]));
    ct.run_ok(&py(UDP_SEND, &[&a6.to_string(), &c6, "done6"]));
    let got = rest_of(r, &mut l.0);
    assert!(got.contains(&format!("good4 {a4}")), "assigned IPv4 source must pass: {got}");
    assert!(got.contains(&format!("good6 {a6}")), "assigned IPv6 source must pass: {got}");
    assert!(!got.contains("spoof"), "unassigned sources must be dropped on the host: {got}");

    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
}

#[test]
fn venet_container_sees_no_broadcast_or_multicast() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let a4 = t.ct_ip4(10);
    let (_cfg, st) = start_venet(&t, &ct, &[a4, t.ct_ip6(10)]);
    let mut sn = Bg(ct.spawn(&py(SNIFF, &["venet0", "15"])));
    let r = wait_ready(&mut sn.0);
    let c = t.client(0);
    // Broadcast and multicast on the host's segment, ARP broadcasts for the container's own
    // address, and one unicast datagram that must arrive (proves the sniffer sees traffic).
    t.run_in_ok(c, &py(UDP_SEND, &["-", "198.18.255.255", "FERRYMARK-bcast", "9999"]));
    t.run_in_ok(c, &py(UDP_SEND, &["-", "ff02::1%eth0", "FERRYMARK-mcast", "9999"]));
    let _ = t.run_in(c, &format!("busybox arping -c 2 -w 2 -I eth0 {a4}"));
    t.run_in_ok(c, &py(UDP_SEND, &["-", &a4.to_string(), "FERRYMARK-last", "9999"]));
    let got = rest_of(r, &mut sn.0);
    let nums: Vec<u32> = got.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(nums[0], 0, "broadcast/multicast frames reached venet0");
    assert!(nums[1] >= 1, "the unicast marker must arrive: {got}");

    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
}

#[test]
fn venet_add_and_del_ip_live() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let a = t.ct_ip4(10);
    let (b4, b6) = (t.ct_ip4(11), t.ct_ip6(11));
    let (cfg, mut st) = start_venet(&t, &ct, &[a]);
    let mut srv = Bg(ct.spawn(&py(SERVER, &[])));
    wait_ready(&mut srv.0);
    assert!(fetch(&t, 0, &b4, 0.5).is_err());

    let host = Host::default();
    net::add_ip(&host, &cfg, &mut st, &ct.netns(), b4).unwrap();
    net::add_ip(&host, &cfg, &mut st, &ct.netns(), b6).unwrap();
    assert_eq!(fetch(&t, 0, &b4, 3.0).as_deref(), Ok("hello from container"));
    assert_eq!(fetch(&t, 0, &b6, 3.0).as_deref(), Ok("hello from container"));
    assert_eq!(st.venet.as_ref().unwrap().addrs, vec![a, b4, b6]);

    net::del_ip(&host, &mut st, &ct.netns(), b4).unwrap();
    net::del_ip(&host, &mut st, &ct.netns(), b6).unwrap();
    assert!(fetch(&t, 0, &b4, 1.0).is_err(), "deleted IPv4 address still answers");
    assert!(fetch(&t, 0, &b6, 1.0).is_err(), "deleted IPv6 address still answers");
    assert_eq!(fetch(&t, 0, &a, 3.0).as_deref(), Ok("hello from container"));
    let routes = sh(&format!("ip -n {} -4 route; ip -n {} -6 route", t.host(0).name, t.host(0).name));
    assert!(!routes.contains(&b4.to_string()) && !routes.contains(&b6.to_string()), "{routes}");
    assert!(!ct.run_ok("ip addr").contains(&b4.to_string()));

    net::teardown(&host, &st).unwrap();
    assert_clean(&t);
}

/// Host 0 gets a bridge br0 with its uplink enslaved; returns the config of a container
/// with one bridged interface eth0 on it.
fn bridged_setup(t: &Topology) -> ContainerConfig {
    let h = t.host(0);
    t.run_in_ok(h, "ip link add br0 type bridge && ip link set br0 up && ip link set eth0 master br0");
    let mut cfg = cfg_for(&ctid());
    let mac = names::format_mac(&net::generate_veth_mac(&cfg.ctid, 0));
    cfg.net.netifs.push(VethIf { name: "eth0".into(), bridge: Some("br0".into()), mac });
    cfg
}

#[test]
fn veth_bridged_reaches_client() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let cfg = bridged_setup(&t);
    t.enter(t.host(0));
    let st = net::setup(&Host::default(), &cfg, ct.pid(), &ct.netns()).unwrap();
    let host_if = names::veth_host_if(&cfg.ctid, 0);
    assert_eq!(st.host_links, vec![host_if.clone()]);
    assert!(t.run_in_ok(t.host(0), &format!("ip link show dev {host_if}")).contains("master br0"));
    let inner = ct.run_ok("ip link show dev eth0");
    assert!(inner.contains(&cfg.net.netifs[0].mac), "fixed MAC inside: {inner}");

    // The container's admin configures the interface.
    ct.run_ok("ip addr add 198.18.2.10/16 dev eth0 && ip addr add 2001:db8::2:10/64 dev eth0 nodad");
    let mut srv = Bg(ct.spawn(&py(SERVER, &[])));
    wait_ready(&mut srv.0);
    assert_eq!(fetch(&t, 0, &"198.18.2.10".parse().unwrap(), 3.0).as_deref(), Ok("hello from container"));
    assert_eq!(fetch(&t, 0, &"2001:db8::2:10".parse().unwrap(), 3.0).as_deref(), Ok("hello from container"));

    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
}

fn neigh_mac(t: &Topology, addr: &IpAddr) -> Option<String> {
    let c = t.client(0);
    let s = sh(&format!("ip -n {} -j neigh show {addr} dev eth0", c.name));
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    v[0]["lladdr"].as_str().map(str::to_string)
}

/// Pre-seed the client's entries with a wrong MAC (STALE), announce, and require the entries
/// to point at `want` within 100 ms of the call.
fn check_announce(t: &Topology, addrs: &[IpAddr], want: &str, announce: impl FnOnce()) {
    let c = t.client(0);
    for a in addrs {
        sh(&format!("ip -n {} neigh replace {a} lladdr 02:de:ad:be:ef:01 nud stale dev eth0", c.name));
        assert_eq!(neigh_mac(t, a).as_deref(), Some("02:de:ad:be:ef:01"));
    }
    let t0 = Instant::now();
    announce();
    for a in addrs {
        loop {
            let m = neigh_mac(t, a);
            if m.as_deref() == Some(want) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_millis(100), "{a}: client still has {m:?}, want {want}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn announce_venet_repoints_client_to_host_mac() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let addrs = [t.ct_ip4(10), t.ct_ip6(10)];
    let (_cfg, st) = start_venet(&t, &ct, &addrs);
    check_announce(&t, &addrs, &t.host(0).mac_str(), || {
        net::announce_container(&st, None, 1, Duration::ZERO).unwrap();
    });
    // The bare function too, with an explicit MAC (request and reply forms, NA).
    let other = "02:00:5e:10:20:30";
    check_announce(&t, &addrs, other, || {
        net::announce("eth0", &addrs, names::parse_mac(other), 2, Duration::from_millis(5)).unwrap();
    });
    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
}

#[test]
fn announce_veth_from_inside_with_container_mac() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let cfg = bridged_setup(&t);
    t.enter(t.host(0));
    let st = net::setup(&Host::default(), &cfg, ct.pid(), &ct.netns()).unwrap();
    ct.run_ok("ip addr add 198.18.2.10/16 dev eth0 && ip addr add 2001:db8::2:10/64 dev eth0 nodad");
    let addrs: [IpAddr; 2] = ["198.18.2.10".parse().unwrap(), "2001:db8::2:10".parse().unwrap()];
    check_announce(&t, &addrs, &cfg.net.netifs[0].mac, || {
        net::announce_container(&st, Some(&ct.netns()), 1, Duration::ZERO).unwrap();
    });
    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
}

#[test]
fn passthrough_moves_a_dummy_in_and_back() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 0);
    let ct = FakeContainer::new();
    let h = t.host(0);
    let dev = format!("{}x", &t.id[..t.id.len().min(12)]);
    // A virtual device (destroyed, not returned, if its netns dies): dummy where the kernel
    // has it, else ifb.
    if !t.run_in(h, &format!("ip link add {dev} type dummy")).status.success() {
        t.run_in_ok(h, &format!("ip link add {dev} type ifb"));
    }
    let mut cfg = cfg_for(&ctid());
    cfg.net.netdevs.push(dev.clone());
    let err = net::migratable(&cfg).unwrap_err();
    assert!(err.contains(&dev) && err.contains("--netdev-del"), "{err}");
    t.enter(h);
    let st = net::setup(&Host::default(), &cfg, ct.pid(), &ct.netns()).unwrap();
    assert_eq!(st.moved_devs.iter().map(|d| d.name.clone()).collect::<Vec<_>>(), vec![dev.clone()]);
    assert!(ct.run(&format!("ip link show dev {dev}")).status.success(), "inside the container");
    assert!(!t.run_in(h, &format!("ip link show dev {dev}")).status.success(), "gone from the host");
    assert!(net::before_dump_detach(&Host::default(), &cfg, &st).is_err());
    // The container's admin renames it; it still comes back under its host name.
    ct.run_ok(&format!("ip link set dev {dev} name inner0"));

    let mut st = st;
    net::detach_netdevs(&mut st, Some(&ct.netns())).unwrap();
    net::teardown(&Host::default(), &st).unwrap();
    assert!(t.run_in(h, &format!("ip link show dev {dev}")).status.success(), "back on the host");
    assert!(!ct.run(&format!("ip link show dev {dev}")).status.success());
    assert_clean(&t);
}

#[test]
fn failed_setup_leaves_nothing() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 0);
    let ct = FakeContainer::new();
    let mut cfg = cfg_for(&ctid());
    cfg.net.ipadd = vec![t.ct_ip4(10), t.ct_ip6(10)];
    cfg.net.netifs.push(VethIf { name: "eth0".into(), bridge: Some("nosuchbr".into()), mac: "02:00:00:00:00:09".into() });
    t.enter(t.host(0));
    let err = net::setup(&Host::default(), &cfg, ct.pid(), &ct.netns()).unwrap_err().to_string();
    assert!(err.contains(cfg.ctid.as_str()) && err.contains("nosuchbr"), "{err}");
    assert_clean(&t);
    assert!(!ct.run("ip link show dev venet0").status.success(), "inner end went with the pair");

    // No uplink: a clear error, nothing left.
    let mut cfg2 = cfg_for(&ctid());
    cfg2.net.ipadd = vec!["198.51.100.7".parse().unwrap()];
    let err = net::setup(&Host::default(), &cfg2, ct.pid(), &ct.netns()).unwrap_err().to_string();
    assert!(err.contains("--uplink"), "{err}");
    assert_clean(&t);
}

#[test]
fn after_restore_plumbs_pairs_criu_recreated() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 1);
    let ct = FakeContainer::new();
    let a4 = t.ct_ip4(10);
    let mut cfg = cfg_for(&ctid());
    cfg.net.ipadd = vec![a4];
    let ext = net::criu_veth_externals(&cfg);
    assert_eq!(ext.len(), 1);
    let (inner, outer) = &ext[0];
    // What CRIU leaves behind: the pair, the inner end configured as dumped, outer end down.
    t.enter(t.host(0));
    sh(&format!("ip link add {outer} type veth peer name {inner} netns {}", ct.pid()));
    let mac = names::format_mac(&names::venet_mac(&cfg.ctid));
    ct.run_ok(&format!(
        "ip link set {inner} address {mac} arp off multicast off addrgenmode none up && ip addr add {a4}/32 dev {inner} && ip route add default dev {inner}"
    ));
    let st = net::after_restore(&Host::default(), &cfg, ct.pid(), &ct.netns()).unwrap();
    let mut srv = Bg(ct.spawn(&py(SERVER, &[])));
    wait_ready(&mut srv.0);
    assert_eq!(fetch(&t, 0, &a4, 3.0).as_deref(), Ok("hello from container"));
    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
    let _ = fmt_mac;
}

#[test]
fn teardown_after_the_container_died() {
    if !can_run() {
        return;
    }
    let t = Topology::new(1, 0);
    let ct = FakeContainer::new();
    let (_cfg, st) = start_venet(&t, &ct, &[t.ct_ip4(10), t.ct_ip6(10)]);
    drop(ct); // stop killed the init: the netns and the veth pair are gone, the rest is not
    for _ in 0..100 {
        if !sh(&format!("ip -n {} -o link", t.host(0).name)).contains(&st.host_links[0]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!t.leftovers(t.host(0)).is_empty(), "proxy entries and chains outlive the container");
    net::teardown(&Host::default(), &st).unwrap();
    assert_clean(&t);
}
