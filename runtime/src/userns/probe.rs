//! What `ferry check` tries on this host for unprivileged containers: whether host root may
//! read the resource limits of a process running as another user (what CRIU does for every
//! task it dumps), once in the host's user namespace and once in a user namespace host root
//! made, as an unprivileged container's.

use super::IdMap;

/// The user a probe process runs as (inside its user namespace, or on the host).
const PROBE_UID: u32 = 1000;

/// prlimit(RLIMIT_NOFILE) read by this process on a child running as uid 1000: in a user
/// namespace of its own mapped to `map` (`Some`), or in the host's (`None`). `Ok` when the
/// read works, else the error the kernel gave.
pub fn prlimit_of_other_user(map: Option<&IdMap>) -> std::result::Result<(), String> {
    let (go_r, go_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let flags = if map.is_some() { libc::CLONE_NEWUSER } else { 0 } | libc::SIGCHLD;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork(); the child
    // uses raw syscalls only (read, setresgid, setresuid, write, pause, _exit).
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    if ret < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    if ret == 0 {
        use std::os::fd::AsRawFd;
        let mut b = [0u8; 1];
        // SAFETY: raw syscalls on descriptors and a local buffer that stay valid; _exit ends
        // the child without running the parent's exit handlers.
        unsafe {
            if libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) != 1
                || libc::setresgid(PROBE_UID, PROBE_UID, PROBE_UID) != 0
                || libc::setresuid(PROBE_UID, PROBE_UID, PROBE_UID) != 0
            {
                libc::_exit(1);
            }
            libc::write(ready_w.as_raw_fd(), b.as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(go_r);
    drop(ready_w);
    let pid = ret as i32;
    let res = (|| {
        if let Some(m) = map {
            super::write_maps(pid, m).map_err(|e| format!("write the mapping: {e}"))?;
        }
        nix::unistd::write(&go_w, b"1").map_err(|e| format!("release the probe: {e}"))?;
        let mut b = [0u8; 1];
        if nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&ready_r), &mut b).ok() != Some(1) {
            return Err("the probe could not become uid 1000".to_string());
        }
        let mut lim = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: prlimit64 with no new limit only writes the current one into `lim`.
        let rc = unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) };
        if rc != 0 {
            return Err(format!("prlimit: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_reads_the_limits_of_another_user_in_a_user_namespace_it_made() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (user namespaces with a mapping of host IDs)");
            return;
        }
        // Host root owns the namespace, so it holds CAP_SYS_RESOURCE there whatever its own
        // bounding set: this works on every host.
        let map = IdMap { host_first: 3_100_000, count: 65_536 };
        prlimit_of_other_user(Some(&map)).unwrap();
        // In the host's own namespace it takes CAP_SYS_RESOURCE, which some hosts lack.
        let outside = prlimit_of_other_user(None);
        if caps::has_cap(None, caps::CapSet::Bounding, caps::Capability::CAP_SYS_RESOURCE).unwrap_or(false) {
            outside.unwrap();
        } else {
            assert!(outside.unwrap_err().contains("Operation not permitted"));
        }
    }
}
