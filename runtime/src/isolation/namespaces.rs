//! The namespaces ferry made for a container, recorded by identity (the nsfs device and inode)
//! when it starts or is restored, and checked before a process joins them.
//!
//! A container's PID 1 is the container's: it may unshare or setns into other namespaces (a
//! user namespace of its own with nesting, where it reports a full capability set). `exec`,
//! `enter` and the runtime's own work inside open PID 1's namespace files through one
//! directory fd of that very process, check each against the record and join only what
//! matches; a namespace kind that was not recorded (a user namespace for the privileged kind)
//! is never joined.

use crate::config::ContainerKind;
use crate::error::{Error, Result};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// One namespace by identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsId {
    pub kind: NsKind,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsKind {
    User,
    Ipc,
    Uts,
    Net,
    Pid,
    Time,
    Mnt,
}

impl NsKind {
    pub fn name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Net => "net",
            NsKind::Pid => "pid",
            NsKind::Time => "time",
            NsKind::Mnt => "mnt",
        }
    }
    pub fn flag(self) -> CloneFlags {
        match self {
            NsKind::User => CloneFlags::CLONE_NEWUSER,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            NsKind::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
            NsKind::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }
}

/// The namespaces a container of `kind` runs in, in the order they are joined: the time
/// namespace, then a user namespace, the mount namespace last. The time namespace is the
/// host's after a start and one of the container's own after a CRIU restore (CRIU makes one
/// to carry the dumped clocks, owned by the host's user namespace, so it is joined before the
/// container's): a process exec'd there joins it too, else the next dump holds tasks of two
/// time namespaces, which CRIU cannot restore.
pub fn kinds(kind: ContainerKind) -> &'static [NsKind] {
    match kind {
        ContainerKind::Privileged => &[NsKind::Time, NsKind::Ipc, NsKind::Uts, NsKind::Net, NsKind::Pid, NsKind::Mnt],
        ContainerKind::Unprivileged => &[NsKind::Time, NsKind::User, NsKind::Ipc, NsKind::Uts, NsKind::Net, NsKind::Pid, NsKind::Mnt],
    }
}

/// A process's directory in /proc, opened once so that every file read through it belongs to
/// that process (a reused pid makes reads fail instead of reaching another process).
pub struct ProcDir {
    fd: OwnedFd,
    pid: i32,
}

impl ProcDir {
    pub fn open(pid: i32) -> std::io::Result<ProcDir> {
        let p = format!("/proc/{pid}");
        let fd = nix::fcntl::open(p.as_str(), nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        Ok(ProcDir { fd: unsafe { OwnedFd::from_raw_fd(fd) }, pid })
    }

    /// Open `rel` (e.g. "ns/net", "stat") under this process's directory.
    pub fn open_file(&self, rel: &str) -> std::io::Result<File> {
        let fd = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            rel,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The start time (field 22 of stat), to tell the process from a later one with its pid.
    pub fn start_time(&self) -> Option<u64> {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut self.open_file("stat").ok()?, &mut s).ok()?;
        crate::proc_stat::parse_proc_stat(&s).map(|st| st.start_time)
    }
}

fn id_of(kind: NsKind, f: &File) -> std::io::Result<NsId> {
    let m = f.metadata()?;
    Ok(NsId { kind, dev: m.dev(), ino: m.ino() })
}

/// Record the namespaces of a container's PID 1 `pid`, right after ferry made them (before
/// any code of the container ran in them).
pub fn record(pid: i32, kind: ContainerKind) -> Result<Vec<NsId>> {
    let dir = ProcDir::open(pid).map_err(|e| Error::io("open", format!("/proc/{pid}"), e))?;
    kinds(kind)
        .iter()
        .map(|k| {
            let rel = format!("ns/{}", k.name());
            dir.open_file(&rel).and_then(|f| id_of(*k, &f)).map_err(|e| Error::io("record namespace", format!("/proc/{pid}/{rel}"), e))
        })
        .collect()
}

/// Open the recorded namespaces through PID 1 (`pid`, started at `start_time`), each checked
/// against its record, in joining order.
pub fn open_recorded(ct: &str, op: &'static str, pid: i32, start_time: u64, recorded: &[NsId]) -> Result<Vec<(NsKind, File)>> {
    if recorded.is_empty() {
        return Err(Error::ct(
            ct,
            op,
            format!("its state records no namespaces (it was started by an older ferry); restart it with `ferry restart {ct}`"),
        ));
    }
    let gone = || Error::ct(ct, op, format!("its init (pid {pid}) is gone; `ferry status {ct}`"));
    let dir = ProcDir::open(pid).map_err(|_| gone())?;
    if dir.start_time() != Some(start_time) {
        return Err(gone());
    }
    let mut out = Vec::new();
    for want in recorded {
        let rel = format!("ns/{}", want.kind.name());
        let f = dir.open_file(&rel).map_err(|e| Error::io("open namespace", format!("/proc/{}/{rel}", dir.pid), e))?;
        let got = id_of(want.kind, &f).map_err(|e| Error::io("stat namespace", format!("/proc/{}/{rel}", dir.pid), e))?;
        if got != *want {
            return Err(Error::ct(
                ct,
                op,
                format!(
                    "its init has left the {} namespace ferry made for the container (the container moved it); ferry does not follow it there: restart the container with `ferry restart {ct}`",
                    want.kind.name()
                ),
            ));
        }
        out.push((want.kind, f));
    }
    Ok(out)
}

/// One recorded namespace of kind `kind`, opened through PID 1 (`pid`, started at
/// `start_time`) or, when PID 1 has left it, through another of `others` (the container's
/// processes, from its cgroup): whichever file opened is checked against the record, so what
/// is returned is the namespace ferry made, wherever the container's processes went since.
/// For the host's work on the container's network (live addresses, passed-through devices).
pub fn open_recorded_kind(ct: &str, op: &'static str, pid: i32, start_time: u64, recorded: &[NsId], kind: NsKind, others: &[i32]) -> Result<File> {
    let want = recorded.iter().find(|n| n.kind == kind).ok_or_else(|| {
        Error::ct(
            ct,
            op,
            format!("its state records no {} namespace (it was started by an older ferry); restart it with `ferry restart {ct}`", kind.name()),
        )
    })?;
    let rel = format!("ns/{}", kind.name());
    let try_pid = |p: i32, start: Option<u64>| -> Option<File> {
        let dir = ProcDir::open(p).ok()?;
        if start.is_some_and(|s| dir.start_time() != Some(s)) {
            return None;
        }
        let f = dir.open_file(&rel).ok()?;
        (id_of(kind, &f).ok()? == *want).then_some(f)
    };
    std::iter::once((pid, Some(start_time)))
        .chain(others.iter().filter(|p| **p != pid).map(|p| (*p, None)))
        .find_map(|(p, s)| try_pid(p, s))
        .ok_or_else(|| {
            Error::ct(
                ct,
                op,
                format!(
                    "no process of the container is left in the {} namespace ferry made for it; restart it with `ferry restart {ct}`",
                    kind.name()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_checks_own_namespaces() {
        let me = std::process::id() as i32;
        let rec = record(me, ContainerKind::Privileged).unwrap();
        assert_eq!(rec.iter().map(|n| n.kind).collect::<Vec<_>>(), kinds(ContainerKind::Privileged));
        let start = ProcDir::open(me).unwrap().start_time().unwrap();
        assert_eq!(open_recorded("t", "exec", me, start, &rec).unwrap().len(), rec.len());
        // Another identity is refused, naming the namespace.
        let mut other = rec.clone();
        other[3].ino += 1;
        let e = open_recorded("t", "exec", me, start, &other).unwrap_err().to_string();
        assert!(e.contains("net namespace") && e.contains("ferry restart t"), "{e}");
        // Another start time is another process.
        assert!(open_recorded("t", "exec", me, start + 1, &rec).unwrap_err().to_string().contains("gone"));
        assert!(open_recorded("t", "exec", me, start, &[]).unwrap_err().to_string().contains("older ferry"));
        // One kind: through PID 1, else through another process; never another namespace.
        assert!(open_recorded_kind("t", "set", me, start, &rec, NsKind::Net, &[]).is_ok());
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let other_pid = child.id() as i32;
        assert!(open_recorded_kind("t", "set", me, start + 1, &rec, NsKind::Net, &[other_pid]).is_ok(), "found through the others");
        assert!(open_recorded_kind("t", "set", me, start + 1, &rec, NsKind::Net, &[me]).is_err(), "PID 1 of another start time is not tried again");
        let e = open_recorded_kind("t", "set", me, start, &other, NsKind::Net, &[other_pid]).unwrap_err().to_string();
        assert!(e.contains("no process") && e.contains("net namespace"), "{e}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
