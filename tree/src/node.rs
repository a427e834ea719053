//! `Node`: an inode of the tree held by an O_PATH fd (nothing opened for real: a FIFO does not
//! block, a device is not opened), with its stat, and the metadata calls that act on it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::stat::{Kind, Stat};
use crate::sys::{self, XattrOf};
use crate::xattr::{self, Xattr};

#[derive(Debug)]
pub struct Node {
    fd: OwnedFd,
    stat: Stat,
}

impl Node {
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Node> {
        let stat = sys::fstat(fd.as_fd())?;
        Ok(Node { fd, stat })
    }

    /// The stat taken when it was opened.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    pub fn kind(&self) -> Kind {
        self.stat.kind()
    }

    /// The regular file itself, opened to read (or read and write) through its /proc link: the
    /// same inode, whatever its name leads to by now.
    pub fn reopen(&self, write: bool) -> io::Result<File> {
        if self.kind() != Kind::Regular {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to open {} for its data", self.kind().describe())));
        }
        let p = sys::proc_fd_path(self.fd.as_raw_fd(), None)?;
        let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
        Ok(File::from(sys::open(&p, access | libc::O_NONBLOCK | libc::O_NOCTTY)?))
    }

    pub fn xattrs(&self) -> io::Result<Vec<Xattr>> {
        xattr::read(XattrOf::PathFd(self.fd.as_fd()))
    }
}

impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
