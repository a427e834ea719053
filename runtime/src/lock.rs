//! One operation per container at a time: an exclusive `flock` on `<data>/locks/<CTID>.lock`.
//! The holder writes its operation name and pid into the file so that a refused second
//! operation can say who holds it. The kernel drops the lock when the holder dies, so a crashed
//! ferry never leaves a container locked.

use crate::ctid::Ctid;
use crate::error::{Error, IoContext, Result};
use crate::host::Host;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};

/// Proof that the caller holds a container's lock; functions that change a container take it.
#[derive(Debug)]
pub struct ContainerLock {
    ctid: Ctid,
    op: String,
    _file: Flock<File>,
}

impl ContainerLock {
    /// Take the lock for `op` (a verb such as "start" or "migrate"), failing at once if another
    /// operation holds it.
    pub fn acquire(host: &Host, ct: &Ctid, op: &str) -> Result<Self> {
        let path = host.lock_path(ct);
        host.secure_layout()?;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).ctx("open lock file", &path)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                let mut it = s.split_whitespace();
                let holder = it.next().unwrap_or("another operation").to_string();
                let pid = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                return Err(Error::Locked { ctid: ct.to_string(), holder, pid });
            }
            Err((_, e)) => return Err(Error::sys(format!("lock {}", path.display()), e)),
        };
        file.set_len(0).ctx("truncate lock file", &path)?;
        file.rewind().ctx("rewind lock file", &path)?;
        writeln!(file, "{} {}", op, std::process::id()).ctx("write lock file", &path)?;
        Ok(ContainerLock { ctid: ct.clone(), op: op.to_string(), _file: file })
    }

    pub fn ctid(&self) -> &Ctid {
        &self.ctid
    }
    pub fn op(&self) -> &str {
        &self.op
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_holder() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path().join("data"), d.path().join("run"), "t");
        let c = Ctid::new("101").unwrap();
        let l = ContainerLock::acquire(&h, &c, "migrate").unwrap();
        assert_eq!(l.op(), "migrate");
        match ContainerLock::acquire(&h, &c, "start") {
            Err(Error::Locked { holder, pid, .. }) => {
                assert_eq!(holder, "migrate");
                assert_eq!(pid, std::process::id() as i32);
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(l);
        ContainerLock::acquire(&h, &c, "start").unwrap();
    }
}
