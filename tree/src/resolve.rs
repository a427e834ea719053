//! Opening a relative path beneath a directory fd without following anything the tree holds:
//! `openat2` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
//! or, where the kernel lacks openat2 (before 5.6), a walk one component at a time with
//! O_NOFOLLOW that checks each directory's device. Both refuse the same things the same way:
//! ELOOP for a symlink anywhere on the path (the last component included, unless O_PATH asks
//! for the symlink itself), EXDEV for a mount point crossed, ENOTDIR for a non-directory on the
//! way (a symlink at the end opened with O_DIRECTORY is ENOTDIR).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::stat::Kind;
use crate::sys;

/// How relative paths are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// One openat2 call with RESOLVE_BENEATH and friends.
    Openat2,
    /// One openat per component with O_NOFOLLOW, each directory's device checked.
    Walk,
}

const RESOLVE: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;

const UNKNOWN: u8 = 0;
const OPENAT2: u8 = 1;
const WALK: u8 = 2;
/// What this kernel offers, probed once.
static AVAILABLE: AtomicU8 = AtomicU8::new(UNKNOWN);
/// Tests may force a resolver for the whole process (see `hooks`).
pub(crate) static FORCED: AtomicU8 = AtomicU8::new(UNKNOWN);

pub(crate) fn encode(r: Resolver) -> u8 {
    match r {
        Resolver::Openat2 => OPENAT2,
        Resolver::Walk => WALK,
    }
}

/// The resolver new root directories use: openat2 where the kernel has it.
pub fn default_resolver() -> Resolver {
    match FORCED.load(Ordering::Relaxed) {
        OPENAT2 => return Resolver::Openat2,
        WALK => return Resolver::Walk,
        _ => {}
    }
    match AVAILABLE.load(Ordering::Relaxed) {
        OPENAT2 => Resolver::Openat2,
        WALK => Resolver::Walk,
        _ => {
            let r = probe();
            AVAILABLE.store(encode(r), Ordering::Relaxed);
            r
        }
    }
}

fn probe() -> Resolver {
    let Ok(root) = sys::open(c"/", libc::O_PATH | libc::O_DIRECTORY) else { return Resolver::Walk };
    match sys::openat2(root.as_fd(), c".", libc::O_PATH, RESOLVE) {
        Ok(_) => Resolver::Openat2,
        Err(_) => Resolver::Walk,
    }
}

/// Refuse what is not a plain relative path: absolute, empty components, `.` or `..`, NUL.
/// The empty path names the directory itself.
pub fn check_relative(rel: &[u8]) -> io::Result<()> {
    let bad = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a plain relative path: {why}")));
    if rel.is_empty() {
        return Ok(());
    }
    if rel.contains(&0) {
        return bad("NUL byte");
    }
    if rel[0] == b'/' {
        return bad("absolute");
    }
    for c in rel.split(|b| *b == b'/') {
        match c {
            b"" => return bad("empty component"),
            b"." | b".." => return bad("'.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Open `rel` beneath `dir` with `flags` (O_NOFOLLOW is always added).
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, rel: &[u8], flags: libc::c_int, resolver: Resolver) -> io::Result<OwnedFd> {
    check_relative(rel)?;
    let flags = flags | libc::O_NOFOLLOW;
    if resolver == Resolver::Openat2 {
        let path = sys::cstr(if rel.is_empty() { b"." } else { rel })?;
        match sys::openat2(dir, &path, flags, RESOLVE) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => AVAILABLE.store(WALK, Ordering::Relaxed),
            r => return r,
        }
    }
    walk(dir, rel, flags)
}

/// ENOTDIR for a component that turns out to be a symlink is ELOOP, as openat2 says it.
fn symlink_is_eloop(dir: BorrowedFd<'_>, name: &std::ffi::CStr, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOTDIR) && sys::fstatat_nofollow(dir, name).is_ok_and(|s| s.kind() == Kind::Symlink) {
        return io::Error::from_raw_os_error(libc::ELOOP);
    }
    e
}

fn walk(dir: BorrowedFd<'_>, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let root_dev = sys::fstat(dir)?.dev;
    let same_dev = |fd: &OwnedFd| -> io::Result<()> {
        if sys::fstat(fd.as_fd())?.dev != root_dev {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        Ok(())
    };
    if rel.is_empty() {
        let fd = sys::openat(dir, c".", flags, 0)?;
        return Ok(fd);
    }
    let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
    let (last, parents) = comps.split_last().expect("a non-empty path has a last component");
    let mut cur: Option<OwnedFd> = None;
    for comp in parents {
        let name = sys::cstr(comp)?;
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        let fd = sys::openat(at, &name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0).map_err(|e| symlink_is_eloop(at, &name, e))?;
        same_dev(&fd)?;
        cur = Some(fd);
    }
    let name = sys::cstr(last)?;
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    // (A symlink at the end is ELOOP by O_NOFOLLOW itself, or ENOTDIR with O_DIRECTORY, as
    // with openat2.)
    let fd = sys::openat(at, &name, flags, 0)?;
    same_dev(&fd)?;
    Ok(fd)
}
