//! The file operations a cgroup backend does, behind one trait: [`RealFs`] does them on the
//! kernel's cgroupfs; the unit tests' fake kernel (`cgroups::fake`) answers them the way the
//! kernel does (errors included), so the backend's handling of the kernel's rules is tested
//! without root.

use super::devices::DeviceRule;
use nix::sys::signal::Signal;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a cgroup backend asks of a cgroup filesystem.
pub trait CgroupFs: std::fmt::Debug + Send + Sync {
    /// The whole content of an interface file.
    fn read(&self, p: &Path) -> io::Result<String>;
    /// One write of `value` to an existing interface file (a cgroupfs never creates files:
    /// writing a file that does not exist fails with EACCES, as the kernel does).
    fn write(&self, p: &Path, value: &str) -> io::Result<()>;
    fn mkdir(&self, p: &Path) -> io::Result<()>;
    fn rmdir(&self, p: &Path) -> io::Result<()>;
    fn exists(&self, p: &Path) -> bool;
    fn is_dir(&self, p: &Path) -> bool;
    /// The child directories (child cgroups) of `p`.
    fn subdirs(&self, p: &Path) -> Vec<PathBuf>;
    /// Send `sig` to a process listed in a cgroup.
    fn kill(&self, pid: i32, sig: Signal) -> io::Result<()>;
    /// Wait until `done` holds or `timeout` passes; true when it held. `events` is a file the
    /// kernel marks modified when the state changes (cgroup v2's `cgroup.events`): the wait
    /// wakes on that instead of polling. Files without notifications (v1) are polled.
    fn wait_until(&self, events: &Path, timeout: Duration, done: &mut dyn FnMut() -> bool) -> bool;
    /// v2: make `rules` the device allowlist of the cgroup at `dir` (an eBPF program).
    fn set_device_program(&self, dir: &Path, rules: &[DeviceRule]) -> crate::error::Result<()>;
}

/// The kernel's cgroupfs, through the ordinary file calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl CgroupFs for RealFs {
    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }

    fn write(&self, p: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        // No O_CREAT: a missing file is an error, never a new plain file.
        let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
        f.write_all(value.as_bytes())
    }

    fn mkdir(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir(p)
    }

    fn rmdir(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_dir(p)
    }

    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }

    fn is_dir(&self, p: &Path) -> bool {
        p.is_dir()
    }

    fn subdirs(&self, p: &Path) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(p) else { return Vec::new() };
        rd.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()).collect()
    }

    fn kill(&self, pid: i32, sig: Signal) -> io::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(io::Error::from)
    }

    fn wait_until(&self, events: &Path, timeout: Duration, done: &mut dyn FnMut() -> bool) -> bool {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let deadline = Instant::now() + timeout;
        // The watch is in place before the first look, so no change can slip between them.
        let watch =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok().filter(|i| i.add_watch(events, AddWatchFlags::IN_MODIFY).is_ok());
        let mut pause = Duration::from_millis(1);
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match &watch {
                Some(ino) => {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    use std::os::fd::AsFd;
                    // Woken by the kernel's notification; the cap guards against a missed one.
                    let wait = (deadline - now).min(Duration::from_millis(100));
                    let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX));
                    while ino.read_events().map(|e| !e.is_empty()).unwrap_or(false) {}
                }
                None => {
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    fn set_device_program(&self, dir: &Path, rules: &[DeviceRule]) -> crate::error::Result<()> {
        super::bpf_devices::apply(dir, rules)
    }
}
