//! The raw system calls, each wrapped once with its SAFETY argument. Everything above this
//! file works with `OwnedFd`, `BorrowedFd` and byte names.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::stat::Stat;

/// A name or relative path as the kernel wants it.
pub(crate) fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a name"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn check_long(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Retry a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated path; open touches no memory of ours beyond it.
    retry(|| check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0) })).map(owned)
}

pub(crate) fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: a valid directory fd and NUL-terminated name; the mode is passed by value.
    retry(|| check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })).map(owned)
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, {flags, resolve})`; ENOSYS where the kernel lacks it.
pub(crate) fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    retry(|| {
        // SAFETY: `how` is a valid open_how of the size passed; path is NUL-terminated.
        let r = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
        check_long(r)
    })
    .map(|fd| owned(fd as libc::c_int))
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer it is given, which is large enough.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it initialised the buffer.
    Ok(Stat::from_raw(unsafe { &st.assume_init() }))
}

/// lstat of `name` in `dir` (never following a symlink).
pub(crate) fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid fd and name; fstatat fills the buffer, which is large enough.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: fstatat succeeded, so it initialised the buffer.
    Ok(Stat::from_raw(unsafe { &st.assume_init() }))
}

/// Fill `buf` with `linux_dirent64` records; 0 at the end of the directory.
pub(crate) fn getdents(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let r = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        check_long(r).map(|n| n as usize)
    })
}

pub(crate) fn rewind(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: lseek only moves this descriptor's offset.
    check_long(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } as libc::c_long).map(drop)
}

pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: readlinkat writes at most buf.len() bytes into buf.
        let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // Possibly cut short: try again with more room (PATH_MAX is the kernel's own limit).
        if buf.len() > libc::PATH_MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "symlink target longer than PATH_MAX"));
        }
        buf.resize(buf.len() * 4, 0);
    }
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: a valid fd and name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub(crate) fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: a valid fd and name; mknodat creates a node and touches no memory of ours.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated strings and a valid fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A new name `name` in `dir` for the inode `fd` refers to (an O_PATH fd is enough).
pub(crate) fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and strings; AT_EMPTY_PATH makes the empty path name `fd` itself.
    check(unsafe { libc::linkat(fd.as_raw_fd(), c"".as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_EMPTY_PATH) }).map(drop)
}

pub(crate) fn renameat(from_dir: BorrowedFd<'_>, from: &CStr, to_dir: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated names.
    check(unsafe { libc::renameat(from_dir.as_raw_fd(), from.as_ptr(), to_dir.as_raw_fd(), to.as_ptr()) }).map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on a valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// chown of what an O_PATH fd refers to (a symlink itself, a device node, ...).
pub(crate) fn fchown_empty(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a valid fd and the empty path, which AT_EMPTY_PATH makes name the fd itself.
    check(unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// `/proc/self/fd/N`: opening or changing it reaches the inode `fd` refers to, never anything
/// found by a name (an O_PATH fd to a symlink reaches the symlink itself).
pub(crate) fn proc_fd_path(fd: RawFd, name: Option<&[u8]>) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{fd}").into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n);
    }
    cstr(&p)
}

/// chmod of what an O_PATH fd refers to (not a symlink: their mode means nothing).
pub(crate) fn chmod_path_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let p = proc_fd_path(fd.as_raw_fd(), None)?;
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// Times that set the modification time and leave the access time alone.
fn mtime_only(mtime_ns: i64) -> [libc::timespec; 2] {
    [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: mtime_ns.div_euclid(1_000_000_000), tv_nsec: mtime_ns.rem_euclid(1_000_000_000) },
    ]
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, mtime_ns: i64) -> io::Result<()> {
    let t = mtime_only(mtime_ns);
    // SAFETY: a valid fd and a two-element timespec array, as futimens requires.
    check(unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) }).map(drop)
}

/// The modification time of what an O_PATH fd refers to.
pub(crate) fn utimens_empty(fd: BorrowedFd<'_>, mtime_ns: i64) -> io::Result<()> {
    let t = mtime_only(mtime_ns);
    // SAFETY: a valid fd, the empty path with AT_EMPTY_PATH, and a two-element timespec array.
    let r = unsafe { libc::utimensat(fd.as_raw_fd(), c"".as_ptr(), t.as_ptr(), libc::AT_EMPTY_PATH) };
    match check(r) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Kernels before AT_EMPTY_PATH in utimensat: through the fd's /proc link.
            let p = proc_fd_path(fd.as_raw_fd(), None)?;
            // SAFETY: a valid path and a two-element timespec array.
            check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t.as_ptr(), 0) }).map(drop)
        }
        r => r.map(drop),
    }
}

/// One 64-bit lseek with SEEK_DATA or SEEK_HOLE: `Ok(None)` for ENXIO (no data at or after
/// `pos`).
pub(crate) fn seek(fd: BorrowedFd<'_>, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek only moves this descriptor's offset.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: syncfs on a valid fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// Bytes from the kernel's random source.
pub(crate) fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

// --- extended attributes ----------------------------------------------------------------------

/// Which inode an xattr call is about.
#[derive(Clone, Copy)]
pub(crate) enum XattrOf<'a> {
    /// A file or directory opened for real: the f* calls.
    Fd(BorrowedFd<'a>),
    /// An O_PATH fd (a symlink, a device node): through its /proc link (the f* calls refuse
    /// O_PATH fds).
    PathFd(BorrowedFd<'a>),
    /// `name` inside the directory `dir`, never followed.
    At(BorrowedFd<'a>, &'a CStr),
}

/// The kernel lacks the *xattrat calls (before Linux 6.13): found out once.
pub(crate) static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64"))]
mod nr {
    pub const SETXATTRAT: libc::c_long = 463;
    pub const GETXATTRAT: libc::c_long = 464;
    pub const LISTXATTRAT: libc::c_long = 465;
    pub const REMOVEXATTRAT: libc::c_long = 466;
    pub const KNOWN: bool = true;
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
mod nr {
    pub const SETXATTRAT: libc::c_long = -1;
    pub const GETXATTRAT: libc::c_long = -1;
    pub const LISTXATTRAT: libc::c_long = -1;
    pub const REMOVEXATTRAT: libc::c_long = -1;
    pub const KNOWN: bool = false;
}

/// `struct xattr_args` of the *xattrat calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// getxattrat or setxattrat (`nr`) of `attr` on `name` in `dir`, never followed.
///
/// # Safety
/// `args.value` must point to `args.size` bytes the call may read (set) or write (get).
unsafe fn xattrat_with_args(nr: libc::c_long, dir: BorrowedFd<'_>, name: &CStr, attr: &CStr, args: &XattrArgs) -> libc::c_long {
    // SAFETY: valid fd and NUL-terminated names; `args` is valid for the size passed, and
    // what it points to is the caller's promise.
    unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            attr.as_ptr(),
            args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    }
}

/// Run `at` (an *xattrat call) when the kernel has it, else `path_call` on the /proc path
/// `fallback` makes.
fn with_xattrat(
    at: impl FnOnce() -> libc::c_long,
    fallback: impl FnOnce() -> io::Result<CString>,
    path_call: impl FnOnce(&CStr) -> isize,
) -> io::Result<usize> {
    if nr::KNOWN && !NO_XATTRAT.load(Ordering::Relaxed) {
        let r = at();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        NO_XATTRAT.store(true, Ordering::Relaxed);
    }
    let p = fallback()?;
    let r = path_call(&p);
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn isize_result(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// listxattr into `buf` (size query when empty).
pub(crate) fn listxattr(of: XattrOf<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let (ptr, len) = if buf.is_empty() { (std::ptr::null_mut(), 0) } else { (buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    match of {
        // SAFETY: the kernel writes at most `len` bytes at `ptr` (nothing for a NULL size query).
        XattrOf::Fd(fd) => isize_result(unsafe { libc::flistxattr(fd.as_raw_fd(), ptr, len) }),
        XattrOf::PathFd(fd) => {
            let p = proc_fd_path(fd.as_raw_fd(), None)?;
            // SAFETY: as above, with a valid path.
            isize_result(unsafe { libc::listxattr(p.as_ptr(), ptr, len) })
        }
        XattrOf::At(dir, name) => with_xattrat(
            // SAFETY: valid fd and name; the kernel writes at most `len` bytes at `ptr`.
            || unsafe { libc::syscall(nr::LISTXATTRAT, dir.as_raw_fd(), name.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, ptr, len) },
            || proc_fd_path(dir.as_raw_fd(), Some(name.to_bytes())),
            // SAFETY: as above, with a valid path.
            |p| unsafe { libc::llistxattr(p.as_ptr(), ptr, len) },
        ),
    }
}

/// getxattr of `attr` into `buf` (size query when empty).
pub(crate) fn getxattr(of: XattrOf<'_>, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let (ptr, len) = if buf.is_empty() { (std::ptr::null_mut(), 0) } else { (buf.as_mut_ptr().cast::<libc::c_void>(), buf.len()) };
    match of {
        // SAFETY: the kernel writes at most `len` bytes at `ptr`.
        XattrOf::Fd(fd) => isize_result(unsafe { libc::fgetxattr(fd.as_raw_fd(), attr.as_ptr(), ptr, len) }),
        XattrOf::PathFd(fd) => {
            let p = proc_fd_path(fd.as_raw_fd(), None)?;
            // SAFETY: as above, with a valid path.
            isize_result(unsafe { libc::getxattr(p.as_ptr(), attr.as_ptr(), ptr, len) })
        }
        XattrOf::At(dir, name) => {
            let args = XattrArgs { value: ptr as u64, size: len as u32, flags: 0 };
            with_xattrat(
                // SAFETY: `args` describes a buffer of `len` bytes the kernel may fill.
                || unsafe { xattrat_with_args(nr::GETXATTRAT, dir, name, attr, &args) },
                || proc_fd_path(dir.as_raw_fd(), Some(name.to_bytes())),
                // SAFETY: as above, with a valid path.
                |p| unsafe { libc::lgetxattr(p.as_ptr(), attr.as_ptr(), ptr, len) },
            )
        }
    }
}

pub(crate) fn setxattr(of: XattrOf<'_>, attr: &CStr, value: &[u8]) -> io::Result<()> {
    let (ptr, len) = (value.as_ptr().cast::<libc::c_void>(), value.len());
    match of {
        // SAFETY: the kernel reads `len` bytes at `ptr`.
        XattrOf::Fd(fd) => check(unsafe { libc::fsetxattr(fd.as_raw_fd(), attr.as_ptr(), ptr, len, 0) }).map(drop),
        XattrOf::PathFd(fd) => {
            let p = proc_fd_path(fd.as_raw_fd(), None)?;
            // SAFETY: as above, with a valid path.
            check(unsafe { libc::setxattr(p.as_ptr(), attr.as_ptr(), ptr, len, 0) }).map(drop)
        }
        XattrOf::At(dir, name) => {
            let args = XattrArgs { value: ptr as u64, size: len as u32, flags: 0 };
            with_xattrat(
                // SAFETY: `args` describes `len` readable bytes.
                || unsafe { xattrat_with_args(nr::SETXATTRAT, dir, name, attr, &args) },
                || proc_fd_path(dir.as_raw_fd(), Some(name.to_bytes())),
                // SAFETY: as above, with a valid path.
                |p| unsafe { libc::lsetxattr(p.as_ptr(), attr.as_ptr(), ptr, len, 0) } as isize,
            )
            .map(drop)
        }
    }
}

pub(crate) fn removexattr(of: XattrOf<'_>, attr: &CStr) -> io::Result<()> {
    match of {
        // SAFETY: a valid fd and name.
        XattrOf::Fd(fd) => check(unsafe { libc::fremovexattr(fd.as_raw_fd(), attr.as_ptr()) }).map(drop),
        XattrOf::PathFd(fd) => {
            let p = proc_fd_path(fd.as_raw_fd(), None)?;
            // SAFETY: a valid path and name.
            check(unsafe { libc::removexattr(p.as_ptr(), attr.as_ptr()) }).map(drop)
        }
        XattrOf::At(dir, name) => with_xattrat(
            // SAFETY: valid fd and names.
            || unsafe { libc::syscall(nr::REMOVEXATTRAT, dir.as_raw_fd(), name.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, attr.as_ptr()) },
            || proc_fd_path(dir.as_raw_fd(), Some(name.to_bytes())),
            // SAFETY: a valid path and name.
            |p| unsafe { libc::lremovexattr(p.as_ptr(), attr.as_ptr()) } as isize,
        )
        .map(drop),
    }
}
