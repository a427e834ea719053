//! What stat says of an inode, and its type.

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Unknown,
}

impl Kind {
    /// From the file-type bits of `st_mode`.
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::Regular,
            libc::S_IFDIR => Kind::Directory,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::Unknown,
        }
    }

    /// The file-type bits for mknod; `None` for what mknod does not make.
    pub fn mknod_bits(self) -> Option<u32> {
        Some(match self {
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            _ => return None,
        })
    }

    /// A word for messages: "a symlink", "a FIFO", ...
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symlink",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::Unknown => "a file of unknown type",
        }
    }
}

/// The fields of `struct stat` the tree code uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

fn ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

impl Stat {
    pub(crate) fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
            rdev: st.st_rdev,
        }
    }

    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }

    /// Permission bits with setuid, setgid and sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// Whether the allocated blocks cover the size: such a file has no holes worth skipping
    /// (at most as many bytes of holes as its metadata blocks take).
    pub fn is_dense(&self) -> bool {
        self.blocks.saturating_mul(512) >= self.size
    }

    /// Same type, device and inode number: the same inode as `other` described.
    pub fn same_inode(&self, other: &Stat) -> bool {
        self.kind() == other.kind() && self.dev == other.dev && self.ino == other.ino
    }
}
