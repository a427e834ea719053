//! The thin layer over host tools (`ip`, `nsenter`, `iptables`/`ip6tables`) and /proc/sys.
//! Everything here acts on the network namespace of the calling thread (the "host"), or on a
//! container's namespace ([`CtNetns`]) through `nsenter --net=` one of ferry's descriptors.

use crate::error::{Error, Result};
use crate::util::{run, run_with_input};
use std::os::fd::AsRawFd;
use std::process::Command;

/// A container's network namespace as ferry reaches it: an open namespace file, named to the
/// host tools by this process's descriptor (`/proc/<ferry>/fd/N`), so that no tool looks the
/// namespace up again through a process of the container. A running container's comes from
/// the namespaces ferry recorded when it made them (`State::netns`): its init may have moved
/// to a network namespace of its own (with nesting), and what ferry does to the container's
/// network (addresses, passed-through devices) must not follow it there.
#[derive(Debug)]
pub struct CtNetns {
    file: std::fs::File,
}

impl CtNetns {
    /// An opened namespace file, checked by the caller to be the container's.
    pub fn new(file: std::fs::File) -> CtNetns {
        CtNetns { file }
    }

    /// The network namespace of `pid` now: only for a process that has run no code of the
    /// container yet (PID 1 before its release, a tree CRIU restored before it resumes) or
    /// that is not a container's.
    pub fn of_new_process(pid: i32) -> Result<CtNetns> {
        let path = format!("/proc/{pid}/ns/net");
        std::fs::File::open(&path).map(CtNetns::new).map_err(|e| Error::io("open the network namespace", path, e))
    }

    /// The path the host tools open it by.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }

    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Run `f` on a thread that joined this netns (fine for CLONE_NEWNET in a multi-threaded
    /// process); the caller's own namespace is untouched and no process is started.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&self.file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::sys("setns into the container's network namespace", e))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Net("a thread in the container's network namespace panicked".into())))
        })
    }
}

/// The host tools networking runs, as one seam: [`HostNetTools`] runs them; the recording
/// fake of the unit tests (`net::fake_tools`) answers from a script and keeps every call, so
/// that what a half-done setup, a teardown or a migration's hold undoes is checked without
/// root.
pub trait NetTools {
    /// `ip ARGS` on the host.
    fn ip(&self, args: &[&str]) -> Result<String>;
    /// `ip ARGS` inside the container's netns `ns`.
    fn ip_in(&self, ns: &CtNetns, args: &[&str]) -> Result<String>;
    /// `ip -batch -` on the host (stops at the first line that fails).
    fn ip_batch(&self, lines: &[String]) -> Result<()>;
    /// `ip -force -batch -` on the host (runs every line).
    fn ip_batch_all(&self, lines: &[String]) -> Result<()>;
    /// `ip -batch -` inside the container's netns `ns`.
    fn ip_batch_in(&self, ns: &CtNetns, lines: &[String]) -> Result<()>;
    /// `iptables -w ARGS` (or ip6tables) on the host.
    fn iptables(&self, v6: bool, args: &[&str]) -> Result<String>;
    /// `iptables-restore --noflush` (or ip6tables-restore) of `script` on the host.
    fn iptables_restore(&self, v6: bool, script: &str) -> Result<()>;
    /// Write a sysctl of the host's netns.
    fn sysctl_set(&self, parts: &[&str], value: &str) -> Result<()>;
    /// Whether a link exists on the host.
    fn link_exists(&self, name: &str) -> bool;
    /// Whether a link exists inside the container's netns `ns`.
    fn link_exists_in(&self, ns: &CtNetns, name: &str) -> bool {
        self.ip_in(ns, &["link", "show", "dev", name]).is_ok()
    }
    /// The path that names the host's netns to a tool running in another one.
    fn own_netns_path(&self) -> String;
}

/// The real tools, on the calling thread's netns.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNetTools;

impl NetTools for HostNetTools {
    fn ip(&self, args: &[&str]) -> Result<String> {
        ip(args)
    }
    fn ip_in(&self, ns: &CtNetns, args: &[&str]) -> Result<String> {
        ip_in(ns, args)
    }
    fn ip_batch(&self, lines: &[String]) -> Result<()> {
        ip_batch(lines)
    }
    fn ip_batch_all(&self, lines: &[String]) -> Result<()> {
        ip_batch_all(lines)
    }
    fn ip_batch_in(&self, ns: &CtNetns, lines: &[String]) -> Result<()> {
        ip_batch_in(ns, lines)
    }
    fn iptables(&self, v6: bool, args: &[&str]) -> Result<String> {
        iptables(v6, args)
    }
    fn iptables_restore(&self, v6: bool, script: &str) -> Result<()> {
        iptables_restore(v6, script)
    }
    fn sysctl_set(&self, parts: &[&str], value: &str) -> Result<()> {
        sysctl_set(parts, value)
    }
    fn link_exists(&self, name: &str) -> bool {
        link_exists(name)
    }
    fn own_netns_path(&self) -> String {
        own_netns_path()
    }
}

/// A network tool's failure says so (`network: ...`).
fn net_err(e: Error) -> Error {
    match e {
        Error::Tool(t) => Error::NetTool(t),
        other => other,
    }
}

/// `ip ARGS` in the caller's netns.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args)).map_err(net_err)
}

/// `ip ARGS` inside the container's netns `ns`.
pub fn ip_in(ns: &CtNetns, args: &[&str]) -> Result<String> {
    run(Command::new("nsenter").arg(format!("--net={}", ns.path())).arg("ip").args(args)).map_err(net_err)
}

/// Several `ip` commands in one process (`ip -batch -`, one command per line; it stops at the
/// first that fails).
pub fn ip_batch(lines: &[String]) -> Result<()> {
    batch(Command::new("ip").args(["-batch", "-"]), lines)
}

/// [`ip_batch`] that runs every line even when some fail (for removals); the error, if
/// any, names the failures.
pub fn ip_batch_all(lines: &[String]) -> Result<()> {
    batch(Command::new("ip").args(["-force", "-batch", "-"]), lines)
}

/// [`ip_batch`] inside the container's netns `ns`.
pub fn ip_batch_in(ns: &CtNetns, lines: &[String]) -> Result<()> {
    batch(Command::new("nsenter").arg(format!("--net={}", ns.path())).args(["ip", "-batch", "-"]), lines)
}

fn batch(cmd: &mut Command, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    run_with_input(cmd, &(lines.join("\n") + "\n")).map(drop).map_err(net_err)
}

/// `iptables-restore --noflush` (or ip6tables-restore) of `script`: one process, applied as
/// one transaction.
pub fn iptables_restore(v6: bool, script: &str) -> Result<()> {
    let tool = if v6 { "ip6tables-restore" } else { "iptables-restore" };
    run_with_input(Command::new(tool).args(["-w", "--noflush"]), script).map(drop).map_err(net_err)
}

/// `iptables -w ARGS` (or ip6tables) in the caller's netns.
pub fn iptables(v6: bool, args: &[&str]) -> Result<String> {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    run(Command::new(tool).arg("-w").args(args)).map_err(net_err)
}

/// Whether an error from a removal means "it was not there" (so removal is idempotent).
pub fn is_absent(e: &Error) -> bool {
    let m = e.to_string();
    [
        "Cannot find device",
        "No such process",
        "No such file or directory",
        "does not exist",
        "No chain/target/match by that name",
        "Bad rule",
        "not found",
        "No such device",
        "Chain '",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Run a removal and treat "already gone" as success.
pub fn ignore_absent(r: Result<String>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Path under /proc/sys for a sysctl given as components (interface names may hold dots).
pub fn sysctl_path(parts: &[&str]) -> String {
    let mut p = String::from("/proc/sys");
    for c in parts {
        p.push('/');
        p.push_str(c);
    }
    p
}

/// Write a sysctl of the caller's netns (/proc/sys/net follows the opening thread's netns).
pub fn sysctl_set(parts: &[&str], value: &str) -> Result<()> {
    let path = sysctl_path(parts);
    std::fs::write(&path, value).map_err(|e| Error::Net(format!("cannot set {path} to {value}: {e}")))
}

pub fn sysctl_get(parts: &[&str]) -> Result<String> {
    let path = sysctl_path(parts);
    std::fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|e| Error::Net(format!("cannot read {path}: {e}")))
}

/// Whether a link exists in the caller's netns (the calling thread's: the lookup goes
/// through a socket it opens, no process).
pub fn link_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Whether a link exists inside the container's netns `ns`.
pub fn link_exists_in(ns: &CtNetns, name: &str) -> bool {
    ip_in(ns, &["link", "show", "dev", name]).is_ok()
}

/// `/proc/<pid>/task/<tid>/ns/net` of the calling thread: names the caller's netns for a
/// process running inside another one (the thread may have setns'd away from its process).
pub fn own_netns_path() -> String {
    format!("/proc/{}/task/{}/ns/net", std::process::id(), nix::unistd::gettid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_network_tool_says_network_and_stays_typed() {
        let e = ip(&["link", "show", "fy-no-such-dev"]).unwrap_err();
        assert!(matches!(&e, Error::NetTool(crate::error::ToolError::Failed { .. })), "{e:?}");
        let m = e.to_string();
        assert!(m.starts_with("network: ip link show fy-no-such-dev failed ("), "{m}");
        assert!(is_absent(&e), "{m}");
    }
}
