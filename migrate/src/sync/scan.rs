//! Walking a tree: the source's full manifest and the destination's summary. Symlinks are never
//! followed and the walk stays on the root's filesystem (a mount point is listed, not entered).

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fsops::{self, TEMP_PREFIX};
use crate::error::{Error, Result};
use crate::proto::{FileEntry, FileKind};

/// One source entry with what the destination never sees.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    pub entry: FileEntry,
    pub full: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// 512-byte blocks allocated: fewer than the size needs means the file has holes.
    pub blocks: u64,
    /// The inode's change time (ns) when it was at least [`SETTLED`] older than the scan,
    /// else 0.
    pub settled_ctime: i64,
}

/// How long before a scan an inode must have last changed for the next scan to trust its
/// change time: file times come from a clock that ticks in milliseconds, so a change right
/// after an earlier one in the same tick can keep the same ctime; a second is far beyond that.
pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

/// The previous scan (a pass's baseline), by path: an entry whose inode has the same number
/// and the same settled change time has not changed since, so its xattrs and link target are
/// taken from there instead of read again (one or two system calls less per entry, which the
/// final pass of a migration makes while the container is frozen). Size, times, owner and
/// mode always come from the fresh lstat.
pub struct Previous<'a> {
    by_path: HashMap<&'a [u8], (&'a FileEntry, i64)>,
}

impl<'a> Previous<'a> {
    pub fn new(entries: &'a [FileEntry], settled_ctimes: &[i64]) -> Self {
        let by_path = entries.iter().zip(settled_ctimes).filter(|(_, ct)| **ct != 0).map(|(e, ct)| (e.path.as_slice(), (e, *ct))).collect();
        Previous { by_path }
    }

    /// The previous entry at `rel` when its inode has not changed since.
    fn unchanged(&self, rel: &[u8], md: &std::fs::Metadata) -> Option<&'a FileEntry> {
        let (e, ctime) = self.by_path.get(rel)?;
        (e.ino == md.ino() && *ctime == ctime_ns(md) && e.kind == fsops::kind_of(md) as i32).then_some(*e)
    }
}

fn ctime_ns(md: &std::fs::Metadata) -> i64 {
    md.ctime().saturating_mul(1_000_000_000).saturating_add(md.ctime_nsec())
}

/// Called for each entry: (relative path, full path, lstat data).
type Visit<'a> = &'a mut dyn FnMut(&[u8], &Path, &std::fs::Metadata) -> Result<()>;

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
        v.extend_from_slice(parent);
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// Visit `root` and everything below it in pre-order, names sorted, calling `f(rel, full, md)`.
/// Entries that vanish during the walk are skipped (the tree may be in use). `skip` may prune
/// names (e.g. our temporary files).
fn walk(root: &Path, skip: &mut dyn FnMut(&Path, &[u8]) -> bool, f: Visit<'_>) -> Result<()> {
    let md = std::fs::symlink_metadata(root).map_err(|e| Error::io("reading", root, e))?;
    if !md.is_dir() {
        return Err(Error::sync(root.display().to_string(), "the tree's root is not a directory"));
    }
    let root_dev = md.dev();
    f(b"", root, &md)?;
    let mut stack: Vec<(Vec<u8>, PathBuf)> = vec![(Vec::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("listing", &dir, e)),
        };
        let mut names = Vec::new();
        for de in rd {
            let de = de.map_err(|e| Error::io("listing", &dir, e))?;
            names.push((de.file_name(), de));
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, de) in names {
            let full = dir.join(&name);
            if skip(&full, name.as_bytes()) {
                continue;
            }
            // lstat relative to the open directory: no walk of the whole path per entry.
            let md = match de.metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("reading", &full, e)),
            };
            let r = join_rel(&rel, name.as_bytes());
            f(&r, &full, &md)?;
            if md.is_dir() && md.dev() == root_dev {
                subdirs.push((r, full));
            }
        }
        // Reverse so that popping keeps the sorted pre-order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// The source's manifest, with full xattrs when `xattrs`; `previous` as in [`Previous`].
pub fn scan_source(root: &Path, xattrs: bool, previous: Option<&Previous<'_>>) -> Result<Vec<SourceEntry>> {
    let mut out = Vec::new();
    let settled_before = std::time::SystemTime::now()
        .checked_sub(SETTLED)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    walk(root, &mut |_, _| false, &mut |rel, full, md| {
        let unchanged = previous.and_then(|p| p.unchanged(rel, md));
        let entry = match unchanged {
            Some(prev) => Ok(FileEntry {
                symlink_target: prev.symlink_target.clone(),
                xattrs: prev.xattrs.clone(),
                xattr_digest: prev.xattr_digest.clone(),
                ..fsops::entry_from_stat(rel, md)
            }),
            None => fsops::entry_from(rel, full, md, xattrs, true),
        };
        let ctime = ctime_ns(md);
        match entry {
            Ok(entry) => out.push(SourceEntry {
                entry,
                full: full.to_path_buf(),
                dev: md.dev(),
                ino: md.ino(),
                nlink: md.nlink(),
                blocks: md.blocks(),
                settled_ctime: if ctime < settled_before { ctime } else { 0 },
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("reading", full, e)),
        }
        Ok(())
    })?;
    Ok(out)
}

/// The destination's summary of `root` (creating it if missing), plus the regular files of
/// `link_dest` that `root` lacks (flagged `in_link_dest`). Leftover temporary files of an
/// interrupted pass are removed on the way.
pub fn scan_dest(root: &Path, link_dest: Option<&Path>, xattrs: bool) -> Result<Vec<FileEntry>> {
    if !root.exists() {
        std::fs::create_dir_all(root).map_err(|e| Error::io("creating", root, e))?;
    }
    let mut out = Vec::new();
    let mut skip_temp = |full: &Path, name: &[u8]| {
        if name.starts_with(TEMP_PREFIX.as_bytes()) {
            if let Err(e) = fsops::remove_any(full) {
                tracing::warn!("removing leftover {}: {e}", full.display());
            }
            true
        } else {
            false
        }
    };
    walk(root, &mut skip_temp, &mut |rel, full, md| {
        match fsops::entry_from(rel, full, md, xattrs, false) {
            Ok(e) => out.push(e),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("reading", full, e)),
        }
        Ok(())
    })?;
    if let Some(ld) = link_dest.filter(|p| p.is_dir()) {
        let have: HashMap<Vec<u8>, ()> = out.iter().map(|e| (e.path.clone(), ())).collect();
        let mut extra = Vec::new();
        walk(ld, &mut |_, name| name.starts_with(TEMP_PREFIX.as_bytes()), &mut |rel, full, md| {
            if md.is_file() && !have.contains_key(rel) {
                if let Ok(mut e) = fsops::entry_from(rel, full, md, xattrs, false) {
                    e.in_link_dest = true;
                    extra.push(e);
                }
            }
            Ok(())
        })?;
        out.extend(extra);
    }
    Ok(out)
}

/// Whether `kind` is one of the special files recreated with mknod.
pub fn is_special(kind: FileKind) -> bool {
    matches!(kind, FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo | FileKind::Socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Xattr;

    fn xattr(v: &[u8]) -> Vec<Xattr> {
        vec![Xattr { name: b"user.ferry.scan".to_vec(), value: v.to_vec() }]
    }

    #[test]
    fn an_unchanged_settled_inode_is_not_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("f"), b"data").unwrap();
        if fsops::write_xattrs(&root.join("f"), &xattr(b"on disk")).is_err() {
            eprintln!("skipped: this file system takes no user xattrs");
            return;
        }
        let scan = || scan_source(root, true, None).unwrap();
        let first = scan();
        let f = |v: &[SourceEntry]| v.iter().find(|e| e.entry.path == b"f").unwrap().clone();
        assert_eq!(f(&first).settled_ctime, 0, "just made: not settled yet");
        std::thread::sleep(SETTLED + std::time::Duration::from_millis(100));
        let settled = scan();
        assert_ne!(f(&settled).settled_ctime, 0);

        // Plant a value the file does not have: taken over means the xattrs were not read.
        let mut entries: Vec<FileEntry> = settled.iter().map(|s| s.entry.clone()).collect();
        let ctimes: Vec<i64> = settled.iter().map(|s| s.settled_ctime).collect();
        let planted = entries.iter_mut().find(|e| e.path == b"f").unwrap();
        planted.xattrs = xattr(b"planted");
        let again = scan_source(root, true, Some(&Previous::new(&entries, &ctimes))).unwrap();
        assert_eq!(f(&again).entry.xattrs, xattr(b"planted"));
        assert_eq!(f(&again).entry.size, 4, "lstat fields are always fresh");

        // Any change of the inode (here its xattr) changes its ctime: read again.
        fsops::write_xattrs(&root.join("f"), &xattr(b"changed")).unwrap();
        let changed = scan_source(root, true, Some(&Previous::new(&entries, &ctimes))).unwrap();
        assert_eq!(f(&changed).entry.xattrs, xattr(b"changed"));
        // And an entry whose ctime was not settled is always read.
        let unsettled = vec![0; ctimes.len()];
        let fresh = scan_source(root, true, Some(&Previous::new(&entries, &unsettled))).unwrap();
        assert_eq!(f(&fresh).entry.xattrs, xattr(b"changed"));
    }
}
