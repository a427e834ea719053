//! Open files (`numfiles`): not a cgroup but RLIMIT_NOFILE of each of the container's
//! processes, set and read with prlimit, and the descriptors they hold.

use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::Limit(msg.into())
}

/// Raise or lower RLIMIT_NOFILE (soft and hard) of one process. Lowering always works; raising
/// the hard limit needs CAP_SYS_RESOURCE, which some hosts (this one) lack: the error says so.
pub fn set_nofile(pid: i32, limit: u64) -> Result<()> {
    let new = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: `new` is a valid rlimit for the duration of the call; old_limit may be null.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EPERM) {
        return Err(bad(format!(
            "numfiles {limit}: cannot raise the open-file limit of pid {pid} above its hard limit: this host \
             lacks CAP_SYS_RESOURCE; restart the container to apply a higher numfiles, or choose a lower one"
        )));
    }
    Err(Error::io(format!("set RLIMIT_NOFILE={limit} on pid {pid}"), format!("/proc/{pid}"), e))
}

/// Set RLIMIT_NOFILE on every process in `pids` (a running container's `cgroup.procs`, or
/// its PID 1 at start). Processes that exited meanwhile are skipped. New processes inherit the
/// limit from their parent, so the core also sets it on PID 1 before exec and on `exec`.
pub fn set_nofile_all(pids: &[i32], limit: u64) -> Result<()> {
    for &pid in pids {
        match set_nofile(pid, limit) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Open file descriptors held by `pids` together (what `ferry status` shows as numfiles
/// usage; the limit itself applies to each process alone). Unreadable processes count 0.
pub fn open_files(pids: &[i32]) -> u64 {
    pids.iter().filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok()).map(|rd| rd.count() as u64).sum()
}

/// Current RLIMIT_NOFILE (soft, hard) of one process.
pub fn get_nofile(pid: i32) -> Result<(u64, u64)> {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `old` is a valid, writable rlimit; new_limit null means "only read".
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    if rc != 0 {
        return Err(Error::io("read RLIMIT_NOFILE", format!("/proc/{pid}"), std::io::Error::last_os_error()));
    }
    Ok((old.rlim_cur, old.rlim_max))
}
