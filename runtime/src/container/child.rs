//! What every child that runs container code does before its execve: signals back to their
//! defaults, its own RLIMIT_NOFILE, no descriptor of ferry's left open. Used by PID 1's child
//! (start), by exec and enter, and by the runtime's work inside a container.

/// Ignored signals and the signal mask survive execve: the Rust runtime ignores SIGPIPE, and
/// a container's processes must start with the defaults (a shell pipeline inside relies on
/// SIGPIPE). Called right before exec in every child that runs container code.
pub fn default_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGPIPE, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Set this process's RLIMIT_NOFILE (soft and hard) to `n` (`numfiles`).
pub(crate) fn set_own_nofile(n: u64) -> Result<(), String> {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "numfiles {n}: set RLIMIT_NOFILE: {e} (raising above ferry's own hard limit needs CAP_SYS_RESOURCE; choose a lower numfiles)"
        ));
    }
    Ok(())
}

/// Close every fd above 2 except `keep` (the close-on-exec error pipe).
pub(crate) fn close_fds_except(keep: i32) {
    let close_range = |lo: u32, hi: u32| {
        if lo <= hi {
            // SAFETY: close_range only closes descriptors; nothing here uses them afterwards.
            unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
        }
    };
    if keep > 2 {
        close_range(3, keep as u32 - 1);
        close_range(keep as u32 + 1, u32::MAX);
    } else {
        close_range(3, u32::MAX);
    }
}
