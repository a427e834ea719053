//! The cgroup v2 device program against the real kernel (root, a cgroup2 mount).
//!
//! A `ferry-t<unique>` cgroup is made on the host's cgroup2 mount and given a policy through
//! `Cgroup::set_device_policy`; a forked child joins it and opens / makes device nodes in a
//! temp dir. The child reports through its exit code. A guard removes the cgroup on failure.

use ferry_runtime::cgroups::{bpf_devices, devices::DeviceRule, Cgroup, CgroupMode};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The hybrid layout's cgroup2 mount, else a pure v2 host's.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| nix::sys::statfs::statfs(p.as_path()).map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC).unwrap_or(false))
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ferry-t{}-{n:x}", std::process::id())
}

/// Removes the test cgroup (which has no processes left once the child was reaped).
struct CgroupGuard(Cgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.0.kill_all(nix::sys::signal::Signal::SIGKILL, std::time::Duration::from_secs(3));
        if let Err(e) = self.0.destroy() {
            eprintln!("cleanup: {e}");
        }
    }
}

const OK: i32 = 0;
const JOIN_FAILED: i32 = 1;
const NULL_DENIED: i32 = 2;
const RANDOM_OPENED: i32 = 3;
const RANDOM_OTHER_ERROR: i32 = 4;
const MKNOD_ALLOWED: i32 = 5;
const MKNOD_OTHER_ERROR: i32 = 6;

fn explain(code: i32) -> &'static str {
    match code {
        OK => "as expected",
        JOIN_FAILED => "could not join the cgroup",
        NULL_DENIED => "open of c 1:3 (allowed) failed",
        RANDOM_OPENED => "open of c 1:8 (not allowed) succeeded",
        RANDOM_OTHER_ERROR => "open of c 1:8 failed with another error than EPERM",
        MKNOD_ALLOWED => "mknod of b 7:0 (not allowed) succeeded",
        MKNOD_OTHER_ERROR => "mknod of b 7:0 failed with another error than EPERM",
        _ => "unknown",
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Fork a child that joins the cgroup (via `procs`), opens `null` and `random`, and makes a
/// block node `blk`. Only async-signal-safe calls run in the child (the test is threaded).
fn probe(procs: &Path, null: &Path, random: &Path, blk: &Path, random_allowed: bool) -> i32 {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    let (procs, null, random, blk) = (c(procs), c(null), c(random), c(blk));
    // SAFETY: the child calls only async-signal-safe libc functions on buffers made before the
    // fork and leaves with _exit; the parent reaps it below.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: see above; the pointers come from CStrings alive in this (copied) frame.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(JOIN_FAILED);
            }
            libc::close(fd);
            let fd = libc::open(null.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                libc::_exit(NULL_DENIED);
            }
            libc::close(fd);
            let fd = libc::open(random.as_ptr(), libc::O_RDONLY);
            if !random_allowed {
                if fd >= 0 {
                    libc::_exit(RANDOM_OPENED);
                }
                if errno() != libc::EPERM {
                    libc::_exit(RANDOM_OTHER_ERROR);
                }
            } else if fd < 0 {
                libc::_exit(NULL_DENIED);
            }
            if libc::mknod(blk.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) == 0 {
                libc::_exit(MKNOD_ALLOWED);
            }
            if errno() != libc::EPERM {
                libc::_exit(MKNOD_OTHER_ERROR);
            }
            libc::_exit(OK);
        }
    }
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    match st {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("probe child ended with {other:?}"),
    }
}

fn mknod_char(path: &Path, major: u64, minor: u64) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

#[test]
fn device_program_allows_listed_nodes_only() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("skipped: no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup");
        return;
    };
    let cg = Cgroup::new(&root, unique(), CgroupMode::V2);
    cg.create().unwrap();
    let guard = CgroupGuard(cg.clone());
    let dir = cg.dir("");

    let tmp = tempfile::Builder::new().prefix("ferry-t").tempdir().unwrap();
    let (null, random, blk) = (tmp.path().join("null"), tmp.path().join("random"), tmp.path().join("loop0"));
    mknod_char(&null, 1, 3);
    mknod_char(&random, 1, 8);

    // Without a program the probe's "must fail" steps succeed: the test sees the difference.
    assert_eq!(probe(&cg.procs_files()[0], &null, &random, &blk, true), MKNOD_ALLOWED, "control run without a device program");
    std::fs::remove_file(&blk).unwrap();

    let rules = vec![DeviceRule::parse("c:1:3:rwm").unwrap(), DeviceRule::parse("c:1:5:rwm").unwrap()];
    match cg.set_device_policy(&rules) {
        Ok(()) => {}
        Err(e) if e.to_string().contains("load the device program") && e.to_string().contains("Operation not permitted") => {
            eprintln!("skipped: the kernel refuses BPF here: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    }
    // The program's fd was closed inside set_device_policy: the cgroup keeps it attached.
    let first = bpf_devices::attached(&dir).unwrap();
    assert_eq!(first.len(), 1, "one program attached: {first:?}");
    let code = probe(&cg.procs_files()[0], &null, &random, &blk, false);
    assert_eq!(code, OK, "{}", explain(code));
    assert!(!blk.exists());

    // A second call replaces the program instead of stacking another one.
    let mut wider = rules.clone();
    wider.push(DeviceRule::parse("c:1:8:r").unwrap());
    cg.set_device_policy(&wider).unwrap();
    let second = bpf_devices::attached(&dir).unwrap();
    assert_eq!(second.len(), 1, "still one program: {second:?}");
    assert_ne!(first, second);
    let code = probe(&cg.procs_files()[0], &null, &random, &blk, true);
    assert_eq!(code, OK, "after replacing: {}", explain(code));

    drop(guard);
    assert!(!dir.exists(), "cgroup removed");
}
