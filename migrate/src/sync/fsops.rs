//! Thin wrappers over the filesystem calls the sync needs (lstat into entries, xattrs, sparse
//! extents, mknod, owners and times without following symlinks) and the destination's path
//! checks. Everything here is synchronous.

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::{FileEntry, FileKind, Xattr};

/// Prefix of the destination's temporary names; leftovers are removed by the next scan.
pub const TEMP_PREFIX: &str = ".ferry-part.";

pub fn display(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(rel).into_owned()
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

pub fn kind_of(md: &Metadata) -> FileKind {
    let ft = md.file_type();
    if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_file() {
        FileKind::Regular
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Unknown
    }
}

/// An entry from lstat data. Xattrs are read when `xattrs` is set (full values when
/// `values`, else only their digest).
pub fn entry_from(rel: &[u8], full: &Path, md: &Metadata, xattrs: bool, values: bool) -> io::Result<FileEntry> {
    let mut e = entry_from_stat(rel, md);
    if e.kind() == FileKind::Symlink {
        e.symlink_target = std::fs::read_link(full)?.as_os_str().as_bytes().to_vec();
    }
    if xattrs {
        let list = read_xattrs(full)?;
        e.xattr_digest = xattr_digest(&list);
        if values {
            e.xattrs = list;
        }
    }
    Ok(e)
}

/// What lstat data alone says of an entry (no link target, no xattrs).
pub fn entry_from_stat(rel: &[u8], md: &Metadata) -> FileEntry {
    let kind = kind_of(md);
    FileEntry {
        path: rel.to_vec(),
        kind: kind as i32,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime().saturating_mul(1_000_000_000).saturating_add(md.mtime_nsec()),
        size: if kind == FileKind::Regular { md.len() } else { 0 },
        rdev: if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) { md.rdev() } else { 0 },
        ino: md.ino(),
        ..Default::default()
    }
}

/// blake3 over the sorted (name, value) pairs; empty when there are none.
pub fn xattr_digest(list: &[Xattr]) -> Vec<u8> {
    if list.is_empty() {
        return Vec::new();
    }
    let mut h = blake3::Hasher::new();
    for x in list {
        h.update(&(x.name.len() as u64).to_le_bytes());
        h.update(&x.name);
        h.update(&(x.value.len() as u64).to_le_bytes());
        h.update(&x.value);
    }
    h.finalize().as_bytes().to_vec()
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// The xattrs of `path` itself (not following a symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let c = cpath(path)?;
    let names = loop {
        // SAFETY: a NULL buffer with size 0 asks only for the needed size.
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if unsupported(&e) { Ok(Vec::new()) } else { Err(e) };
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let m = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew meanwhile
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        break buf;
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
        let value = loop {
            // SAFETY: size query with a NULL buffer.
            let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break None; // removed meanwhile
                }
                return Err(e);
            }
            let mut buf = vec![0u8; n as usize];
            // SAFETY: buf is valid for buf.len() bytes.
            let m = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if m < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ERANGE) {
                    continue;
                }
                return Err(e);
            }
            buf.truncate(m as usize);
            break Some(buf);
        };
        if let Some(value) = value {
            out.push(Xattr { name: name.to_vec(), value });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Make the xattrs of `path` (not following symlinks) exactly `want`.
pub fn write_xattrs(path: &Path, want: &[Xattr]) -> io::Result<()> {
    let have = read_xattrs(path)?;
    let c = cpath(path)?;
    for old in &have {
        if !want.iter().any(|w| w.name == old.name) {
            let n = CString::new(old.name.clone()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
            // SAFETY: both pointers are valid NUL-terminated strings.
            if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    for x in want {
        if have.iter().any(|h| h.name == x.name && h.value == x.value) {
            continue;
        }
        let n = CString::new(x.name.clone()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
        // SAFETY: valid strings and a value buffer of value.len() bytes.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), x.value.as_ptr().cast(), x.value.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The data extents of a file (offset, length), skipping holes. Dense files give one extent;
/// a file with very many extents is treated as dense (holes are then sent as zeros).
pub fn data_extents(f: &File, md: &Metadata) -> Vec<(u64, u64)> {
    let size = md.len();
    if size == 0 {
        return Vec::new();
    }
    if md.blocks() * 512 >= size {
        return vec![(0, size)];
    }
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid fd; it only moves this descriptor's offset.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return vec![(0, size)];
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return vec![(0, size)];
        }
        let end = (hole as u64).min(size);
        if end > data as u64 {
            out.push((data as u64, end - data as u64));
        }
        pos = hole;
        if out.len() > 4096 {
            return vec![(0, size)];
        }
    }
    out
}

/// chown without following a symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// utimensat/futimens times that set the modification time and leave atime alone.
fn mtime_only(mtime_ns: i64) -> [libc::timespec; 2] {
    [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: mtime_ns.div_euclid(1_000_000_000), tv_nsec: mtime_ns.rem_euclid(1_000_000_000) },
    ]
}

/// Set the modification time (atime left alone) without following a symlink.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let times = mtime_only(mtime_ns);
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn mknod(path: &Path, kind: FileKind, mode: u32, rdev: u64) -> io::Result<()> {
    let fmt = match kind {
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a special file")),
    };
    let c = cpath(path)?;
    // SAFETY: valid path; mknod creates a node and touches no memory of ours.
    if unsafe { libc::mknod(c.as_ptr(), fmt | (mode & 0o7777), rdev as libc::dev_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Owner, mode, xattrs and time on `path`, in that order (chown clears setuid, so mode comes
/// after it; the time comes last because setting xattrs does not change mtime but writing does).
pub fn apply_meta(path: &Path, e: &FileEntry, xattrs: bool) -> io::Result<()> {
    let kind = e.kind();
    lchown(path, e.uid, e.gid)?;
    if kind != FileKind::Symlink {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode & 0o7777))?;
    }
    if xattrs {
        match write_xattrs(path, &e.xattrs) {
            Err(err) if unsupported(&err) && e.xattrs.is_empty() => {}
            r => r?,
        }
    }
    set_mtime(path, e.mtime_ns)
}

/// [`apply_meta`] for a regular file we just wrote, through its open descriptor (no path
/// lookups); xattrs, when asked for, still go by `path`.
pub fn apply_meta_fd(file: &File, path: &Path, e: &FileEntry, xattrs: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::fchown(file, Some(e.uid), Some(e.gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(e.mode & 0o7777))?;
    if xattrs {
        match write_xattrs(path, &e.xattrs) {
            Err(err) if unsupported(&err) && e.xattrs.is_empty() => {}
            r => r?,
        }
    }
    let times = mtime_only(e.mtime_ns);
    // SAFETY: a valid descriptor and a two-element timespec array, as futimens requires.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Flush the filesystem that holds `path`.
pub fn syncfs(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: syncfs on a valid fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Check a relative path from the peer: no absolute paths, no `..` or `.`, no NUL, no empty
/// components. The empty path (the root itself) is allowed only when `allow_root`.
pub fn check_rel(rel: &[u8], allow_root: bool) -> Result<&Path> {
    let p = Path::new(OsStr::from_bytes(rel));
    let bad = |why: &str| Err(Error::sync(display(rel), format!("refused path from the peer: {why}")));
    if rel.is_empty() {
        return if allow_root { Ok(p) } else { bad("empty path") };
    }
    if rel.contains(&0) {
        return bad("NUL byte");
    }
    if rel.starts_with(b"/") {
        return bad("absolute path");
    }
    if rel.ends_with(b"/") || rel.windows(2).any(|w| w == b"//") {
        return bad("empty component");
    }
    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return bad("'..' component"),
            _ => return bad("'.' or root component"),
        }
    }
    if rel.split(|b| *b == b'/').any(|c| c == b"." || c == b"..") {
        return bad("'.' or '..' component");
    }
    Ok(p)
}

/// `root/rel` after checking `rel` and that every directory between root and the last component
/// is a real directory (not a symlink a hostile tree could use to point outside the root).
pub fn resolve(root: &Path, rel: &[u8], allow_root: bool, verified: &mut std::collections::HashSet<PathBuf>) -> Result<PathBuf> {
    let p = check_rel(rel, allow_root)?;
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = p.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        if verified.contains(&cur) {
            continue;
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_dir() => {
                verified.insert(cur.clone());
            }
            Ok(_) => {
                return Err(Error::sync(
                    display(rel),
                    format!("{} is not a directory on the destination (a symlink is never followed)", cur.display()),
                ))
            }
            Err(e) => return Err(Error::io("checking parent directory", &cur, e)),
        }
    }
    Ok(root.join(p))
}

/// A temporary name next to `path` for building a replacement; `pid` is the caller's process
/// id (asked once per pass, not per file).
pub fn temp_name(path: &Path, pid: u32, counter: u64) -> PathBuf {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or(b"root");
    let short = &name[..name.len().min(180)];
    let mut t = Vec::from(TEMP_PREFIX.as_bytes());
    t.extend_from_slice(short);
    t.extend_from_slice(format!(".{pid}.{counter}").as_bytes());
    path.with_file_name(OsStr::from_bytes(&t))
}

/// Remove whatever is at `path` (a directory with its contents); missing is fine.
pub fn remove_any(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_dir() => std::fs::remove_dir_all(path).map(|_| true),
        Ok(_) => std::fs::remove_file(path).map(|_| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [&b"../x"[..], b"/etc/passwd", b"a/../../x", b"a/./b", b"a//b", b"a/", b"", b"a\0b", b".."] {
            assert!(check_rel(bad, false).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        for good in [&b"a"[..], b"a/b/c", b"..a", b"a..", b".hidden"] {
            assert!(check_rel(good, false).is_ok(), "{:?} refused", String::from_utf8_lossy(good));
        }
        assert!(check_rel(b"", true).is_ok());
    }

    #[test]
    fn xattr_digest_depends_on_values() {
        let a = vec![Xattr { name: b"user.a".to_vec(), value: b"1".to_vec() }];
        let b = vec![Xattr { name: b"user.a".to_vec(), value: b"2".to_vec() }];
        assert_ne!(xattr_digest(&a), xattr_digest(&b));
        assert!(xattr_digest(&[]).is_empty());
    }
}
