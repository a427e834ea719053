//! Simulated hosts that reach each other over ssh: each a network namespace with a ferry
//! environment ([`TestHost`]) and an sshd of its own, plus one client namespace. The tests of
//! migrations and of fleets add their own methods in an `impl` of their own.

use crate::ssh;
use crate::support::TestHost;
use crate::topology::Topology;

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
}
