//! The sync's view of the tree layer (`ferry_tree`): entries of the protocol from stat data,
//! their metadata onto inodes held by fds, and the checks of paths that come from the peer.

use std::io;

use ferry_tree::meta::{self, Meta, Target};
use ferry_tree::{Dir, Kind, Stat};

use crate::error::{Error, Result};
use crate::proto::{FileEntry, FileKind, Xattr};

/// Prefix of the destination's temporary names (the rest is random); leftovers are removed by
/// the next scan.
pub const TEMP_PREFIX: &str = ".ferry-part.";

pub fn display(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(rel).into_owned()
    }
}

pub fn kind_of(k: Kind) -> FileKind {
    match k {
        Kind::Symlink => FileKind::Symlink,
        Kind::Directory => FileKind::Directory,
        Kind::Regular => FileKind::Regular,
        Kind::CharDevice => FileKind::CharDevice,
        Kind::BlockDevice => FileKind::BlockDevice,
        Kind::Fifo => FileKind::Fifo,
        Kind::Socket => FileKind::Socket,
        Kind::Unknown => FileKind::Unknown,
    }
}

pub fn tree_kind(k: FileKind) -> Kind {
    match k {
        FileKind::Symlink => Kind::Symlink,
        FileKind::Directory => Kind::Directory,
        FileKind::Regular => Kind::Regular,
        FileKind::CharDevice => Kind::CharDevice,
        FileKind::BlockDevice => Kind::BlockDevice,
        FileKind::Fifo => Kind::Fifo,
        FileKind::Socket => Kind::Socket,
        FileKind::Unknown => Kind::Unknown,
    }
}

/// An entry from stat data, plus its link target and xattrs, read through `dir` by `name`
/// (`""`: `dir` itself) without following anything. Xattrs are read when `xattrs` is set (full
/// values when `values`, else only their digest).
pub fn entry_at(dir: &Dir, name: &[u8], rel: &[u8], st: &Stat, xattrs: bool, values: bool) -> io::Result<FileEntry> {
    let mut e = entry_from_stat(rel, st);
    if e.kind() == FileKind::Symlink {
        e.symlink_target = dir.read_link_at(name)?;
    }
    if xattrs {
        let list: Vec<Xattr> = dir.xattrs_at(name)?.into_iter().map(|(name, value)| Xattr { name, value }).collect();
        e.xattr_digest = xattr_digest(&list);
        if values {
            e.xattrs = list;
        }
    }
    Ok(e)
}

/// What stat data alone says of an entry (no link target, no xattrs).
pub fn entry_from_stat(rel: &[u8], st: &Stat) -> FileEntry {
    let kind = kind_of(st.kind());
    FileEntry {
        path: rel.to_vec(),
        kind: kind as i32,
        mode: st.perm(),
        uid: st.uid,
        gid: st.gid,
        mtime_ns: st.mtime_ns,
        size: if kind == FileKind::Regular { st.size } else { 0 },
        rdev: if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) { st.rdev } else { 0 },
        ino: st.ino,
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

/// Give `target` the owner, mode, time and (when `xattrs`) the xattrs of `e`, through its fd.
pub fn apply_meta(target: Target<'_>, e: &FileEntry, xattrs: bool) -> io::Result<()> {
    let pairs: Vec<(&[u8], &[u8])> = if xattrs { e.xattrs.iter().map(|x| (x.name.as_slice(), x.value.as_slice())).collect() } else { Vec::new() };
    // (A filesystem without xattrs is fine when there are none to set.)
    meta::apply(target, &Meta { uid: e.uid, gid: e.gid, perm: e.mode, mtime_ns: e.mtime_ns, xattrs: xattrs.then_some(pairs.as_slice()) })
}

/// Check a relative path from the peer: no absolute paths, no `..` or `.`, no NUL, no empty
/// components. The empty path (the root itself) is allowed only when `allow_root`.
pub fn check_rel(rel: &[u8], allow_root: bool) -> Result<()> {
    let bad = |why: String| Err(Error::sync(display(rel), format!("refused path from the peer: {why}")));
    if rel.is_empty() {
        return if allow_root { Ok(()) } else { bad("empty path".into()) };
    }
    ferry_tree::check_relative(rel).or_else(|e| bad(e.to_string()))
}

/// `rel` split into its directory and its last component (`""` and the name at the top).
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// A fresh temporary name for building a replacement next to its target.
pub fn temp_name() -> io::Result<Vec<u8>> {
    ferry_tree::temp::temp_name(TEMP_PREFIX.as_bytes())
}

/// Why `rel` cannot be reached on this side, in words (for errors from the tree layer).
pub fn unreachable(rel: &[u8], what: &str, e: io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "a symlink is in the way (never followed)",
        Some(libc::ENOTDIR) => "a directory on the way is not a directory here (a symlink is never followed)",
        Some(libc::EXDEV) => "it lies beyond a mount point",
        _ => return Error::sync_io(display(rel), what, e),
    };
    Error::sync(display(rel), format!("{what}: {why}"))
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
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn xattr_digest_depends_on_values() {
        let a = vec![Xattr { name: b"user.a".to_vec(), value: b"1".to_vec() }];
        let b = vec![Xattr { name: b"user.a".to_vec(), value: b"2".to_vec() }];
        assert_ne!(xattr_digest(&a), xattr_digest(&b));
        assert!(xattr_digest(&[]).is_empty());
    }
}
