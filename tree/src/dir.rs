//! `Dir`: an open directory of a tree, and everything done relative to it. Names given to the
//! `*_at` methods are single components (checked); paths given to the `*_beneath` methods are
//! resolved without following anything (see `resolve`).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::node::Node;
use crate::resolve::{self, Resolver};
use crate::stat::{Kind, Stat};
use crate::sys::{self, XattrOf};
use crate::xattr::{self, Xattr};

/// An open directory (a real fd, O_RDONLY | O_DIRECTORY), with the resolver its lookups use.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    resolver: Resolver,
}

/// Refuse a name that is not one plain component.
pub(crate) fn check_name(name: &[u8]) -> io::Result<std::ffi::CString> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{:?} is not a plain file name", String::from_utf8_lossy(name))));
    }
    sys::cstr(name)
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;

impl Dir {
    /// The root of a tree, by a path the host chose (its last component is not followed).
    pub fn open(path: &Path) -> io::Result<Dir> {
        Dir::open_with(path, resolve::default_resolver())
    }

    /// [`Dir::open`] with a chosen resolver (tests of the fallback use [`Resolver::Walk`]).
    pub fn open_with(path: &Path, resolver: Resolver) -> io::Result<Dir> {
        let p = sys::cstr(path.as_os_str().as_encoded_bytes())?;
        Ok(Dir { fd: sys::open(&p, DIR_FLAGS)?, resolver })
    }

    fn wrap(&self, fd: OwnedFd) -> Dir {
        Dir { fd, resolver: self.resolver }
    }

    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    pub fn stat(&self) -> io::Result<Stat> {
        sys::fstat(self.fd.as_fd())
    }

    /// lstat of `name` in this directory.
    pub fn stat_at(&self, name: &[u8]) -> io::Result<Stat> {
        sys::fstatat_nofollow(self.fd.as_fd(), &check_name(name)?)
    }

    /// The names in this directory (without `.` and `..`), in the order the filesystem gives.
    pub fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        sys::rewind(self.fd.as_fd())?;
        // One buffer per thread, kept: a walk lists every directory, and a fresh zeroed buffer
        // for each cost more than reading a small one.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            if buf.is_empty() {
                buf.resize(32 << 10, 0);
            }
            self.names_with(&mut buf)
        })
    }

    fn names_with(&self, buf: &mut [u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            let n = sys::getdents(self.fd.as_fd(), buf)?;
            if n == 0 {
                return Ok(out);
            }
            let mut off = 0;
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name (NUL-terminated).
            while off + 19 <= n {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                if reclen < 19 || off + reclen > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed directory entry from getdents64"));
                }
                let name = &buf[off + 19..off + reclen];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    out.push(name.to_vec());
                }
                off += reclen;
            }
        }
    }

    /// The subdirectory `name` (a symlink there is refused, not followed).
    pub fn child_dir(&self, name: &[u8]) -> io::Result<Dir> {
        Ok(self.wrap(sys::openat(self.fd.as_fd(), &check_name(name)?, DIR_FLAGS, 0)?))
    }

    /// The directory `rel` beneath this one (`""` is this one again).
    pub fn dir_beneath(&self, rel: &[u8]) -> io::Result<Dir> {
        Ok(self.wrap(resolve::open_beneath(self.fd.as_fd(), rel, DIR_FLAGS, self.resolver)?))
    }

    /// What `rel` beneath this directory is, without opening it for real: an O_PATH fd and its
    /// stat (a symlink there is the symlink itself; a symlink on the way is ELOOP).
    pub fn node_beneath(&self, rel: &[u8]) -> io::Result<Node> {
        Node::from_fd(resolve::open_beneath(self.fd.as_fd(), rel, libc::O_PATH, self.resolver)?)
    }

    /// The directory `node` (found beneath this one) opened for real, to list or to create in.
    pub fn open_node(&self, node: &Node) -> io::Result<Dir> {
        if node.kind() != Kind::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let p = sys::proc_fd_path(node.as_fd().as_raw_fd(), None)?;
        Ok(self.wrap(sys::open(&p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_NOCTTY)?))
    }

    /// [`Dir::node_beneath`] for a name in this directory.
    pub fn node_at(&self, name: &[u8]) -> io::Result<Node> {
        Node::from_fd(sys::openat(self.fd.as_fd(), &check_name(name)?, libc::O_PATH | libc::O_NOFOLLOW, 0)?)
    }

    /// The regular file `rel` beneath this directory, opened to read (or read and write): never
    /// a symlink, and never anything else either — what is there is looked at through an O_PATH
    /// fd first, so a device node or FIFO found there is not opened. `expect`, when given, is
    /// the inode a scan saw there: another one is [`Opened::Changed`].
    pub fn open_file_beneath(&self, rel: &[u8], write: bool, expect: Option<&Stat>) -> io::Result<Opened> {
        let node = match self.node_beneath(rel) {
            Ok(n) => n,
            Err(e) if gone(&e) => return Ok(Opened::Gone),
            Err(e) => return Err(e),
        };
        let now = *node.stat();
        let wanted = match expect {
            Some(s) => now.same_inode(s),
            None => now.kind() == Kind::Regular,
        };
        if !wanted || now.kind() != Kind::Regular {
            return Ok(Opened::Changed(now));
        }
        Ok(Opened::File(node.reopen(write)?, now))
    }

    /// The xattrs of `name` in this directory (`""`: of this directory), sorted by name.
    pub fn xattrs_at(&self, name: &[u8]) -> io::Result<Vec<Xattr>> {
        if name.is_empty() {
            return xattr::read(XattrOf::Fd(self.fd.as_fd()));
        }
        let c = check_name(name)?;
        xattr::read(XattrOf::At(self.fd.as_fd(), &c))
    }

    /// Read the symlink `name` in this directory.
    pub fn read_link_at(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        sys::readlinkat(self.fd.as_fd(), &check_name(name)?)
    }

    pub fn mkdir_at(&self, name: &[u8], mode: u32) -> io::Result<()> {
        sys::mkdirat(self.fd.as_fd(), &check_name(name)?, mode)
    }

    /// A new regular file `name` (never an existing one, never through a symlink), open to
    /// write.
    pub fn create_file_at(&self, name: &[u8], mode: u32) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY;
        Ok(File::from(sys::openat(self.fd.as_fd(), &check_name(name)?, flags, mode as libc::mode_t)?))
    }

    pub fn symlink_at(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        sys::symlinkat(&sys::cstr(target)?, self.fd.as_fd(), &check_name(name)?)
    }

    /// A device node, FIFO or socket `name`.
    pub fn mknod_at(&self, name: &[u8], kind: Kind, perm: u32, rdev: u64) -> io::Result<()> {
        let bits = kind.mknod_bits().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("mknod cannot make {}", kind.describe())))?;
        sys::mknodat(self.fd.as_fd(), &check_name(name)?, bits | (perm & 0o7777), rdev)
    }

    /// A new name `name` here for the inode `node` refers to.
    pub fn link_at(&self, node: &Node, name: &[u8]) -> io::Result<()> {
        sys::link_fd(node.as_fd(), self.fd.as_fd(), &check_name(name)?)
    }

    /// Rename `from` to `to`, both in this directory (replacing what `to` names, as rename does).
    pub fn rename_at(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        sys::renameat(self.fd.as_fd(), &check_name(from)?, self.fd.as_fd(), &check_name(to)?)
    }

    /// Remove the non-directory `name`.
    pub fn unlink_at(&self, name: &[u8]) -> io::Result<()> {
        sys::unlinkat(self.fd.as_fd(), &check_name(name)?, 0)
    }

    /// Remove `name`, a directory with everything in it included; `Ok(false)` when there was
    /// nothing. Nothing is followed: each directory is opened with O_NOFOLLOW relative to its
    /// parent's fd and emptied through that fd.
    pub fn remove_all_at(&self, name: &[u8]) -> io::Result<bool> {
        let c = check_name(name)?;
        let st = match sys::fstatat_nofollow(self.fd.as_fd(), &c) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if st.kind() == Kind::Directory {
            self.empty_dir(&c, st.dev)?;
            match sys::unlinkat(self.fd.as_fd(), &c, libc::AT_REMOVEDIR) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r?,
            }
        } else {
            match sys::unlinkat(self.fd.as_fd(), &c, 0) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
        Ok(true)
    }

    /// Empty the subdirectory `name` (on device `dev`: a mount point found below is an error,
    /// never entered).
    fn empty_dir(&self, name: &CStr, dev: u64) -> io::Result<()> {
        // Depth-first with a stack of open directories: no recursion on the tree's depth.
        let first = self.wrap(sys::openat(self.fd.as_fd(), name, DIR_FLAGS, 0)?);
        let mut stack = vec![first];
        while let Some(top) = stack.last() {
            if top.stat()?.dev != dev {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            let mut descend = None;
            for n in top.names()? {
                let c = sys::cstr(&n)?;
                match sys::unlinkat(top.fd.as_fd(), &c, 0) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) if e.raw_os_error() == Some(libc::EISDIR) => match sys::unlinkat(top.fd.as_fd(), &c, libc::AT_REMOVEDIR) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                            descend = Some(top.wrap(sys::openat(top.fd.as_fd(), &c, DIR_FLAGS, 0)?));
                            break;
                        }
                        Err(e) => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
            }
            match descend {
                Some(d) => stack.push(d),
                None => {
                    // Empty now: its parent removes it on its next round.
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Flush the filesystem this directory is on.
    pub fn syncfs(&self) -> io::Result<()> {
        sys::syncfs(self.fd.as_fd())
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// What [`Dir::open_file_beneath`] found.
#[derive(Debug)]
pub enum Opened {
    /// The regular file (the one expected, when a scan said which), and its stat now.
    File(File, Stat),
    /// Something else is there now (another inode, a symlink, a FIFO, ...): its stat.
    Changed(Stat),
    /// Nothing is there, or the path no longer leads there without a symlink or a mount point.
    Gone,
}

/// The errors that mean "not (or no longer) reachable as a plain path in the tree".
pub fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV))
}
