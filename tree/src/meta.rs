//! Giving an inode its owner, mode, xattrs and modification time, always through an fd of
//! that inode (never by a path that could lead elsewhere meanwhile).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::dir::Dir;
use crate::node::Node;
use crate::stat::Kind;
use crate::sys::{self, XattrOf};
use crate::xattr;

/// What to give an inode.
#[derive(Clone, Copy, Debug)]
pub struct Meta<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with setuid, setgid and sticky (ignored for symlinks).
    pub perm: u32,
    pub mtime_ns: i64,
    /// The xattrs to leave it with; `None` leaves them alone.
    pub xattrs: Option<&'a [(&'a [u8], &'a [u8])]>,
}

/// The inode to change.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// A regular file open for real (one just written).
    File(&'a File),
    /// A directory open for real.
    Dir(&'a Dir),
    /// Anything held by an O_PATH fd: symlinks, device nodes, FIFOs, sockets, or a file or
    /// directory that need not be opened.
    Node(&'a Node),
}

impl Target<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Target::File(f) => f.as_fd(),
            Target::Dir(d) => d.as_fd(),
            Target::Node(n) => n.as_fd(),
        }
    }

    fn is_path_fd(&self) -> bool {
        matches!(self, Target::Node(_))
    }

    fn xattr_of(&self) -> XattrOf<'_> {
        if self.is_path_fd() {
            XattrOf::PathFd(self.fd())
        } else {
            XattrOf::Fd(self.fd())
        }
    }
}

/// Owner, mode, xattrs and time, in that order: chown clears setuid, so the mode comes after
/// it; the time comes last because setting xattrs may change it.
pub fn apply(target: Target<'_>, m: &Meta<'_>) -> io::Result<()> {
    let fd = target.fd();
    if let Target::Node(node) = target {
        sys::fchown_empty(fd, m.uid, m.gid)?;
        if node.kind() != Kind::Symlink {
            sys::chmod_path_fd(fd, m.perm & 0o7777)?;
        }
    } else {
        sys::fchown(fd, m.uid, m.gid)?;
        sys::fchmod(fd, m.perm & 0o7777)?;
    }
    if let Some(want) = m.xattrs {
        xattr::write(target.xattr_of(), want)?;
    }
    if target.is_path_fd() {
        sys::utimens_empty(fd, m.mtime_ns)
    } else {
        sys::futimens(fd, m.mtime_ns)
    }
}

/// Only the owner (a directory created early, so that what lands in it lands in a directory
/// owned right).
pub fn set_owner(target: Target<'_>, uid: u32, gid: u32) -> io::Result<()> {
    if target.is_path_fd() {
        sys::fchown_empty(target.fd(), uid, gid)
    } else {
        sys::fchown(target.fd(), uid, gid)
    }
}

/// The xattrs of an open file or directory.
pub fn xattrs_of(target: Target<'_>) -> io::Result<Vec<xattr::Xattr>> {
    xattr::read(target.xattr_of())
}
