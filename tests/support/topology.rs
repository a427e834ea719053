//! A simulated network for integration tests: a "switch" netns holding a bridge, and N host
//! plus M client netns, each joined to the bridge by a veth (`eth0` inside). Addresses come
//! from 198.18.0.0/15 (IPv4) and 2001:db8::/64 (IPv6 documentation prefix, never routed
//! anywhere). Names are unique per topology (`fyt<id>-sw`, `-h0`, `-c0`, ...). Everything is
//! removed on Drop, also when the test panics.
//!
//! Use from a test file: `#[path = "support/topology.rs"] mod topology;`
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix length of the shared segment.
pub const PREFIX4: u8 = 16;
pub const PREFIX6: u8 = 64;

#[derive(Debug, Clone)]
pub struct Node {
    /// Network namespace name (under /run/netns).
    pub name: String,
    /// Interface on the segment inside the node.
    pub ifname: String,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub mac: [u8; 6],
}

impl Node {
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    pub fn mac_str(&self) -> String {
        fmt_mac(&self.mac)
    }
}

pub struct Topology {
    pub id: String,
    pub switch: String,
    pub bridge: String,
    pub hosts: Vec<Node>,
    pub clients: Vec<Node>,
    /// Every netns made, removed on Drop.
    made: Vec<String>,
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A short id unique across concurrently running tests (pid, time, counter), base36.
pub fn unique_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut v = (u64::from(std::process::id()) << 20) ^ u64::from(nanos) ^ (u64::from(N.fetch_add(1, Ordering::Relaxed)) << 40);
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    for _ in 0..6 {
        s.push(digits[(v % 36) as usize] as char);
        v /= 36;
    }
    s
}

/// From the calling thread, moved into the network namespace at `netns_path` for good, a TCP
/// connection to `addr` (a client thread's first step).
pub fn connect_from(netns_path: &str, addr: &str) -> Result<std::net::TcpStream, String> {
    let f = std::fs::File::open(netns_path).map_err(|e| e.to_string())?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
    std::net::TcpStream::connect_timeout(&addr.parse().map_err(|e| format!("{addr}: {e}"))?, std::time::Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Run a command; panic with its stderr if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("run sh");
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_mac(netns: &str, ifname: &str) -> [u8; 6] {
    let s = sh(&format!("ip -n {netns} -j link show dev {ifname}"));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let a = v[0]["address"].as_str().unwrap();
    let mut m = [0u8; 6];
    for (i, p) in a.split(':').enumerate() {
        m[i] = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

impl Topology {
    pub fn new(n_hosts: usize, n_clients: usize) -> Topology {
        assert!(n_hosts + n_clients < 100);
        let id = format!("fyt{}", unique_id());
        let mut t = Topology { switch: format!("{id}-sw"), bridge: "br0".into(), id, hosts: Vec::new(), clients: Vec::new(), made: Vec::new() };
        t.add_netns(&t.switch.clone());
        sh(&format!("ip -n {sw} link add br0 type bridge mcast_snooping 0 && ip -n {sw} link set br0 up", sw = t.switch));
        for i in 0..n_hosts {
            let n = t.add_node(&format!("h{i}"), 1 + i as u8);
            // A host routes for its containers.
            t.run_in_ok(&n, "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.eth0.proxy_arp=1");
            t.hosts.push(n);
        }
        for j in 0..n_clients {
            let n = t.add_node(&format!("c{j}"), 101 + j as u8);
            t.clients.push(n);
        }
        t
    }

    fn add_netns(&mut self, name: &str) {
        sh(&format!("ip netns add {name}"));
        self.made.push(name.to_string());
        sh(&format!("ip -n {name} link set lo up"));
    }

    fn add_node(&mut self, role: &str, last: u8) -> Node {
        let name = format!("{}-{role}", self.id);
        assert!(name.len() <= 15, "{name}");
        self.add_netns(&name);
        let port = format!("p{role}");
        let ip4 = Ipv4Addr::new(198, 18, 0, last);
        let ip6: Ipv6Addr = format!("2001:db8::{last}").parse().unwrap();
        sh(&format!(
            "ip -n {sw} link add {port} type veth peer name eth0 netns {name} && \
             ip -n {sw} link set {port} master br0 up && \
             ip -n {name} addr add {ip4}/{PREFIX4} dev eth0 && \
             ip -n {name} addr add {ip6}/{PREFIX6} dev eth0 nodad && \
             ip -n {name} link set eth0 up",
            sw = self.switch
        ));
        let mac = read_mac(&name, "eth0");
        Node { name, ifname: "eth0".into(), ip4, ip6, mac }
    }

    pub fn host(&self, i: usize) -> &Node {
        &self.hosts[i]
    }
    pub fn client(&self, i: usize) -> &Node {
        &self.clients[i]
    }

    /// A container address on the segment (198.18.1.x / 2001:db8::1:x), free in this topology.
    pub fn ct_ip4(&self, x: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, x))
    }
    pub fn ct_ip6(&self, x: u8) -> IpAddr {
        format!("2001:db8::1:{x}").parse().unwrap()
    }

    /// `sh -c CMD` inside the node's netns (nsenter --net only: mounts stay shared).
    pub fn run_in(&self, node: &Node, cmd: &str) -> Output {
        Command::new("nsenter").arg(format!("--net={}", node.netns_path())).args(["sh", "-c", cmd]).output().expect("run nsenter")
    }

    pub fn run_in_ok(&self, node: &Node, cmd: &str) -> String {
        let out = self.run_in(node, cmd);
        assert!(out.status.success(), "in {}: `{cmd}` failed: {}", node.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `sh -c CMD` in the node's netns in the background (stdout piped).
    pub fn spawn_in(&self, node: &Node, cmd: &str) -> Child {
        Command::new("nsenter")
            .arg(format!("--net={}", node.netns_path()))
            .args(["sh", "-c", cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter")
    }

    /// Move the calling thread into the node's netns: library calls that act on "the host"
    /// then act on this simulated host. (Only this thread; commands it spawns follow it.)
    pub fn enter(&self, node: &Node) {
        let f = std::fs::File::open(node.netns_path()).expect("open netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into simulated host");
    }

    /// What a node holds that ferry may have left behind: veths other than eth0, routes to
    /// ferry devices, proxy neighbour entries, FERRY iptables chains.
    pub fn leftovers(&self, node: &Node) -> Vec<String> {
        let mut left = Vec::new();
        let n = &node.name;
        for l in sh(&format!("ip -n {n} -o link show")).lines() {
            let name = l.split(':').nth(1).unwrap_or("").trim().split('@').next().unwrap_or("").to_string();
            if name.starts_with("fv") || name.starts_with("fe") {
                left.push(format!("link {name}"));
            }
        }
        for fam in ["-4", "-6"] {
            for l in sh(&format!("ip -n {n} {fam} route show table all")).lines() {
                // Also a blackhole a migration holds a container's traffic with.
                if l.contains(" dev fv") || l.contains(" dev fe") || l.starts_with("blackhole ") {
                    left.push(format!("route {l}"));
                }
            }
            for l in sh(&format!("ip -n {n} {fam} neigh show proxy")).lines() {
                left.push(format!("proxy {l}"));
            }
        }
        for tool in ["iptables-save", "ip6tables-save"] {
            let out = self.run_in_ok(node, tool);
            // Filter chains (FERRY-*) and the rules holding back new connections (ferry-drain-*).
            for l in out.lines().filter(|l| l.to_ascii_lowercase().contains("ferry")) {
                left.push(format!("{tool}: {l}"));
            }
        }
        left
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A stand-in for a container: `sleep` in a fresh network namespace (lo up). Killed on Drop.
pub struct FakeContainer {
    child: Child,
}

impl FakeContainer {
    pub fn new() -> FakeContainer {
        let child = Command::new("unshare").args(["-n", "--", "sleep", "600"]).stdin(Stdio::null()).spawn().expect("spawn unshare");
        let pid = child.id() as i32;
        // unshare execs sleep in place: wait until the pid's netns differs from ours.
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        for _ in 0..200 {
            if let Ok(l) = std::fs::read_link(format!("/proc/{pid}/ns/net")) {
                if l != ours && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sh(&format!("nsenter --net=/proc/{pid}/ns/net ip link set lo up"));
        FakeContainer { child }
    }

    /// Its network namespace, as the runtime's network code takes it.
    pub fn netns(&self) -> ferry_runtime::net::CtNetns {
        ferry_runtime::net::CtNetns::of_new_process(self.pid()).expect("the stand-in's netns")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn netns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    /// `sh -c CMD` inside the container's netns.
    pub fn run(&self, cmd: &str) -> Output {
        Command::new("nsenter").arg(format!("--net={}", self.netns_path())).args(["sh", "-c", cmd]).output().expect("run nsenter")
    }

    pub fn run_ok(&self, cmd: &str) -> String {
        let out = self.run(cmd);
        assert!(out.status.success(), "in container: `{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, cmd: &str) -> Child {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path()))
            .args(["sh", "-c", cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter")
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a background child on Drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
