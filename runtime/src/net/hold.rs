//! A migration's holds on a container's traffic here: its venet traffic dropped between the
//! dump and the restore, new connections held back before the freeze while the services
//! accept what waits in their backlogs.

use super::tools::{self, CtNetns, HostNetTools, NetTools};
use super::venet::prefix;
use crate::config::ContainerConfig;
use crate::error::{Error, Result};
use std::time::Duration;

/// While a container is away from this host between a dump and its restore elsewhere (a
/// migration), drop what arrives here for its venet addresses (`hold`), or stop dropping it.
/// Without, this host, whose route to the container went with the dump, would forward those
/// packets to the network, where the destination's copy answers for the address while it
/// restores: if the migration then fails, what that copy received is lost and the connections
/// of the copy restored here stall. A restore here replaces the blackhole route with the
/// container's own route.
pub fn hold_traffic(cfg: &ContainerConfig, hold: bool) -> Result<()> {
    hold_traffic_with(&HostNetTools, cfg, hold)
}

/// [`hold_traffic`] with the tools `t`.
pub fn hold_traffic_with(t: &dyn NetTools, cfg: &ContainerConfig, hold: bool) -> Result<()> {
    let lines: Vec<String> = cfg
        .net
        .ipadd
        .iter()
        .map(|a| if hold { format!("route replace blackhole {}", prefix(a)) } else { format!("route del blackhole {}", prefix(a)) })
        .collect();
    match if hold { t.ip_batch(&lines) } else { t.ip_batch_all(&lines) } {
        Err(e) if !hold && tools::is_absent(&e) => Ok(()),
        r => r.map_err(|e| Error::ct(cfg.ctid.as_str(), "migrate", format!("{} its traffic here: {e}", if hold { "hold back" } else { "release" }))),
    }
}

/// Before a migration freezes a container: drop new TCP connections to its venet addresses
/// on this host (`hold`), or stop dropping them. Their clients send the handshake again a
/// second later, by then to the destination; meanwhile the services accept what already
/// waits in their backlogs, which CRIU could only drop ([`wait_backlogs_empty`]). Bridged
/// interfaces pass the host's IP layer by, so only venet addresses are covered.
pub fn hold_new_connections(cfg: &ContainerConfig, hold: bool) -> Result<()> {
    hold_new_connections_with(&HostNetTools, cfg, hold)
}

/// [`hold_new_connections`] with the tools `t`.
pub fn hold_new_connections_with(t: &dyn NetTools, cfg: &ContainerConfig, hold: bool) -> Result<()> {
    let comment = format!("ferry-drain-{}", cfg.ctid);
    for a in &cfg.net.ipadd {
        let dst = a.to_string();
        let rule = ["PREROUTING", "-d", dst.as_str(), "-p", "tcp", "--syn", "-m", "comment", "--comment", comment.as_str(), "-j", "DROP"];
        let v6 = a.is_ipv6();
        let present = |r: &[&str]| t.iptables(v6, &[&["-t", "raw", "-C"][..], r].concat()).is_ok();
        let res = if hold {
            if present(&rule) {
                Ok(())
            } else {
                t.iptables(v6, &[&["-t", "raw", "-I"][..], &rule[..]].concat()).map(drop)
            }
        } else {
            // Every copy (a crashed migration may have left one).
            let mut r = Ok(());
            while present(&rule) {
                if let Err(e) = t.iptables(v6, &[&["-t", "raw", "-D"][..], &rule[..]].concat()) {
                    r = Err(e);
                    break;
                }
            }
            r
        };
        res.map_err(|e| {
            Error::ct(cfg.ctid.as_str(), "migrate", format!("{} new connections to {a}: {e}", if hold { "hold back" } else { "let through" }))
        })?;
    }
    Ok(())
}

/// Wait (at most `limit`) until no listening TCP socket in the container's netns `ns` (as
/// ferry recorded it) has connections waiting to be accepted; returns how many still wait.
/// The kernel's tables are read from a thread in that netns, never through a container
/// process's /proc.
pub fn wait_backlogs_empty(ns: &CtNetns, limit: Duration) -> u64 {
    let t0 = std::time::Instant::now();
    let polled = ns.run(|| loop {
        let waiting: u64 = ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|t| listen_backlog(&t))
            .sum();
        if waiting == 0 || t0.elapsed() >= limit {
            return Ok(waiting);
        }
        std::thread::sleep(Duration::from_millis(5));
    });
    polled.unwrap_or_else(|e| {
        tracing::warn!("waiting for the container's backlogs: {e}");
        0
    })
}

/// Connections waiting in the accept queues of the listeners in a /proc/net/tcp{,6} table
/// (for a listener, the rx_queue column is its backlog).
fn listen_backlog(table: &str) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A")).then(|| f.get(4)?.split(':').nth(1).and_then(|q| u64::from_str_radix(q, 16).ok())).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlogs_of_listeners_only() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                 0: 00000000:2328 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
                 1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
                 2: 0100007F:2328 0100007F:B3A2 01 00000000:00000040 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";
        assert_eq!(listen_backlog(t), 2, "the established socket's rx_queue is not a backlog");
        assert_eq!(listen_backlog("header only\n"), 0);
    }
}
