//! Simulated hosts that reach each other over ssh: each a network namespace with a ferry
//! environment ([`TestHost`]) and an sshd of its own, plus one client namespace. The tests of
//! migrations and of fleets add their own methods in an `impl` of their own.

use crate::ssh;
use crate::support::TestHost;
use crate::topology::Topology;
use std::time::Duration;

/// The port of the echo server in [`SshHosts::container`].
pub const ECHO_PORT: u16 = 8000;

/// Fields drop in order: containers and files first, then the daemons, then the namespaces.
pub struct SshHosts {
    pub hosts: Vec<TestHost>,
    pub sshd: Vec<ssh::Sshd>,
    pub t: Topology,
}

impl SshHosts {
    /// `n` hosts and one client.
    pub fn new(n: usize) -> SshHosts {
        let t = Topology::new(n, 1);
        let hosts: Vec<TestHost> = (0..n).map(|i| TestHost::in_netns(&t.host(i).netns_path())).collect();
        let sshd = (0..n).map(|i| ssh::Sshd::start(&t.host(i).netns_path(), &hosts[i].dir.path().join("sshd"))).collect();
        SshHosts { hosts, sshd, t }
    }

    /// A running container on host `i` (created with the extra arguments `net`) with an echo
    /// server on [`ECHO_PORT`] and a counter appending to /root/ctr.
    pub fn container(&self, i: usize, ct: &str, net: &[&str]) {
        let h = &self.hosts[i];
        let mut args = vec!["create", ct, "--template", h.template.to_str().unwrap()];
        args.extend(net);
        h.ok(&args);
        h.ok(&["start", ct]);
        h.exec(ct, &format!("ip link set lo up; nc -ll -p {ECHO_PORT} -e /bin/cat </dev/null >/dev/null 2>&1 &"));
        h.exec(ct, "(i=0; while :; do i=$((i+1)); echo $i >> /root/ctr; usleep 10000; done) </dev/null >/dev/null 2>&1 &");
        std::thread::sleep(Duration::from_millis(200));
    }

    /// The status of `ct` on host `i` as `ferry status` says it, "absent" when it has none.
    pub fn status(&self, i: usize, ct: &str) -> String {
        let o = self.hosts[i].ferry(&["status", ct, "--json"]);
        if !o.status.success() {
            return "absent".into();
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["status"].as_str().unwrap_or("?").to_string()
    }
}
