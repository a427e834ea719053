//! Helpers for the sync tests: building trees with every kind of entry and comparing trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_transfer::proto::{Connection, ConnectionOptions, FileKind};

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A temporary directory whose path contains "ferry-t", removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-t-sync").tempdir().expect("tempdir")
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Set the modification time of `path` itself (a symlink is not followed).
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: secs, tv_nsec: nsec }];
    // SAFETY: a valid path and a two-element timespec array.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(path).as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

pub fn mknod(path: &Path, kind: FileKind, mode: u32, rdev: u64) {
    let fmt = match kind {
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
        FileKind::Fifo => libc::S_IFIFO,
        _ => libc::S_IFSOCK,
    };
    // SAFETY: a valid path.
    let r = unsafe { libc::mknod(cpath(path).as_ptr(), fmt | mode, rdev as libc::dev_t) };
    assert_eq!(r, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
}

/// The xattrs of `path` itself, sorted by name.
pub fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let parent = ferry_tree::Dir::open(path.parent().unwrap()).unwrap();
    parent.xattrs_at(path.file_name().unwrap().as_bytes()).unwrap()
}

pub fn kind_name(md: &std::fs::Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    }
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mknod_char(path: &Path, major: u32, minor: u32) {
    mknod(path, FileKind::CharDevice, 0o666, nix::sys::stat::makedev(major as u64, minor as u64));
}

pub fn mkfifo(path: &Path) {
    mknod(path, FileKind::Fifo, 0o640, 0);
}

/// Try to set a user xattr; false when the filesystem does not support them.
pub fn try_set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid strings and value buffer.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    r == 0
}

/// Everything about a tree that a sync must preserve, keyed by relative path.
#[derive(Debug, PartialEq, Eq)]
pub struct Snap {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub digest: String,
    pub target: String,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Other paths sharing this inode (hardlinks).
    pub links: Vec<String>,
}

pub fn snapshot(root: &Path, with_dir_times: bool) -> BTreeMap<String, Snap> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let key = rel.display().to_string();
        let kind = kind_name(&md).to_string();
        let digest = if ft.is_file() { blake3::hash(&std::fs::read(&full).unwrap()).to_hex().to_string() } else { String::new() };
        let target = if ft.is_symlink() { std::fs::read_link(&full).unwrap().display().to_string() } else { String::new() };
        let xattrs = read_xattrs(&full).into_iter().map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v)).collect();
        if ft.is_file() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(key.clone());
        }
        let is_dir = ft.is_dir();
        out.insert(
            key,
            Snap {
                kind,
                mode: if ft.is_symlink() { 0 } else { md.mode() & 0o7777 },
                uid: md.uid(),
                gid: md.gid(),
                mtime_ns: if is_dir && !with_dir_times { 0 } else { md.mtime() * 1_000_000_000 + md.mtime_nsec() },
                size: if ft.is_file() { md.len() } else { 0 },
                digest,
                target,
                rdev: if ft.is_char_device() || ft.is_block_device() { md.rdev() } else { 0 },
                xattrs,
                links: Vec::new(),
            },
        );
        if is_dir {
            let mut names: Vec<_> = std::fs::read_dir(&full).unwrap().map(|d| d.unwrap().file_name()).collect();
            names.sort();
            for n in names {
                stack.push(rel.join(n));
            }
        }
    }
    // Links to outside the tree (a link-dest copy) are not part of its shape.
    for group in inodes.values().filter(|g| g.len() > 1) {
        for p in group {
            out.get_mut(p).unwrap().links = group.clone();
        }
    }
    out
}

use std::os::unix::fs::FileTypeExt;

pub fn assert_same_tree(a: &Path, b: &Path) {
    let sa = snapshot(a, true);
    let sb = snapshot(b, true);
    let keys_a: Vec<_> = sa.keys().collect();
    let keys_b: Vec<_> = sb.keys().collect();
    assert_eq!(keys_a, keys_b, "different entries");
    for (k, va) in &sa {
        assert_eq!(va, &sb[k], "entry {k:?} differs");
    }
}

/// A connected pair over an in-process pipe: (source side, destination side).
pub async fn pair(client: ConnectionOptions, server: ConnectionOptions) -> (Connection, Connection) {
    Connection::pair(1 << 20, client, server).await.expect("handshake")
}

pub fn quick() -> ConnectionOptions {
    ConnectionOptions { idle_timeout: Duration::from_secs(10), ping_interval: Duration::from_millis(500), ..Default::default() }
}

pub fn st_blocks(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}
