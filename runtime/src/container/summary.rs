//! What a checkpoint records of the container it dumped, for `inspect`: its processes (from
//! its cgroup), TCP sockets (/proc/PID/net/tcp and tcp6), addresses (`ip -j addr` in its
//! netns) and resident memory, read while it is frozen.

use crate::cgroups::Cgroup;
use crate::net;
use serde::{Deserialize, Serialize};

/// One process of the container (pids as seen inside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub command: String,
}

/// One TCP socket of the container's netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfo {
    pub local: String,
    pub remote: String,
    pub state: String,
}

/// The addresses of one interface inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrInfo {
    pub interface: String,
    pub ips: Vec<String>,
    pub mac: String,
}

/// What the checkpoint saw while the container was frozen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    pub processes: Vec<ProcInfo>,
    pub tcp: Vec<TcpInfo>,
    pub addresses: Vec<AddrInfo>,
    /// Bytes of memory pages in the images (sum of RSS when not known).
    pub memory_bytes: u64,
}

/// Read what `inspect` shows while the container is frozen: processes of its cgroup, TCP
/// sockets of its netns, its addresses, resident memory.
pub fn collect_summary(init_pid: i32, cg: &Cgroup) -> CheckpointSummary {
    let mut s = CheckpointSummary::default();
    let pids = cg.pids().unwrap_or_default();
    let mut host_to_ns = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for p in &pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else { continue };
        let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let nspid: u32 = field("NSpid:").and_then(|v| v.split_whitespace().last().and_then(|x| x.parse().ok())).unwrap_or(0);
        let ppid: i32 = field("PPid:").and_then(|v| v.parse().ok()).unwrap_or(0);
        let rss_kb: u64 = field("VmRSS:").and_then(|v| v.split_whitespace().next().and_then(|x| x.parse().ok())).unwrap_or(0);
        s.memory_bytes += rss_kb * 1024;
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let command = String::from_utf8_lossy(&cmd).split('\0').filter(|a| !a.is_empty()).collect::<Vec<_>>().join(" ");
        host_to_ns.insert(*p, nspid);
        rows.push((nspid, ppid, command));
    }
    for (pid, ppid, command) in rows {
        s.processes.push(ProcInfo { pid, ppid: host_to_ns.get(&ppid).copied().unwrap_or(0), command });
    }
    s.processes.sort_by_key(|p| p.pid);
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{init_pid}/net/{file}")) {
            s.tcp.extend(parse_proc_net_tcp(&t, v6));
        }
    }
    s
}

/// The addresses inside the container's netns `ns` (for the checkpoint summary).
pub fn container_addresses(ns: &net::CtNetns) -> Vec<AddrInfo> {
    net::tools::ip_in(ns, &["-j", "addr", "show"]).map(|out| parse_ip_addr_json(&out)).unwrap_or_default()
}

const TCP_STATES: [&str; 12] =
    ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"];

fn hex_addr(s: &str, v6: bool) -> Option<String> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let bytes: Vec<u8> = (0..a.len() / 2).map(|i| u8::from_str_radix(&a[2 * i..2 * i + 2], 16)).collect::<std::result::Result<_, _>>().ok()?;
    // /proc prints each 32-bit word in host (little-endian) order.
    let mut fixed = Vec::with_capacity(bytes.len());
    for w in bytes.chunks(4) {
        fixed.extend(w.iter().rev());
    }
    if v6 {
        let arr: [u8; 16] = fixed.try_into().ok()?;
        let a = std::net::Ipv6Addr::from(arr);
        // A dual-stack socket's IPv4 peers read better as IPv4.
        Some(match a.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{port}"),
            None => format!("[{a}]:{port}"),
        })
    } else {
        let arr: [u8; 4] = fixed.try_into().ok()?;
        Some(format!("{}:{port}", std::net::Ipv4Addr::from(arr)))
    }
}

/// Rows of /proc/net/tcp or tcp6.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<TcpInfo> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let st = usize::from_str_radix(f.get(3)?, 16).ok()?;
            Some(TcpInfo { local: hex_addr(f.get(1)?, v6)?, remote: hex_addr(f.get(2)?, v6)?, state: TCP_STATES.get(st).unwrap_or(&"?").to_string() })
        })
        .collect()
}

/// Interfaces with addresses from `ip -j addr show` (loopback left out).
pub fn parse_ip_addr_json(out: &str) -> Vec<AddrInfo> {
    let v: serde_json::Value = serde_json::from_str(out).unwrap_or_default();
    let mut res = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let name = link["ifname"].as_str().unwrap_or_default();
        if name == "lo" {
            continue;
        }
        let ips: Vec<String> = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] != "link")
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
            .collect();
        res.push(AddrInfo { interface: name.to_string(), ips, mac: link["address"].as_str().unwrap_or_default().to_string() });
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 020012C6:1F90 010012C6:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        let r = parse_proc_net_tcp(t, false);
        assert_eq!(r[0], TcpInfo { local: "127.0.0.1:8080".into(), remote: "0.0.0.0:0".into(), state: "LISTEN".into() });
        assert_eq!(r[1].local, "198.18.0.2:8080");
        assert_eq!(r[1].remote, "198.18.0.1:50000");
        assert_eq!(r[1].state, "ESTABLISHED");
        let t6 = "hdr\n 0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n";
        assert_eq!(parse_proc_net_tcp(t6, true)[0].local, "[::1]:80");
    }

    #[test]
    fn parses_ip_json() {
        let j = r#"[{"ifname":"lo","address":"00:00:00:00:00:00","addr_info":[{"local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
                   {"ifname":"venet0","address":"02:00:00:00:00:01","addr_info":[{"local":"198.18.0.5","prefixlen":32,"scope":"global"},{"local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let a = parse_ip_addr_json(j);
        assert_eq!(a, vec![AddrInfo { interface: "venet0".into(), ips: vec!["198.18.0.5/32".into()], mac: "02:00:00:00:00:01".into() }]);
    }
}
