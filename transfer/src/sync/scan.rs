//! Walking a tree: the source's full manifest and the destination's summary. The walk goes
//! through directory fds (`ferry_tree::walk`): symlinks are never followed and the walk stays
//! on the root's filesystem (a mount point is listed, not entered).

use std::collections::HashMap;
use std::io;

use ferry_tree::walk::walk;
use ferry_tree::{Dir, Stat};

use super::fsops::{self, TEMP_PREFIX};
use crate::error::{Error, Result};
use crate::proto::{FileEntry, FileKind};

/// One source entry with what the destination never sees.
#[derive(Clone, Debug)]
pub struct SourceEntry {
    pub entry: FileEntry,
    /// What the scan saw: an open for the data must find this inode again (type, device,
    /// inode number), or the entry changed since the scan.
    pub stat: Stat,
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
    fn unchanged(&self, rel: &[u8], st: &Stat) -> Option<&'a FileEntry> {
        let (e, ctime) = self.by_path.get(rel)?;
        (e.ino == st.ino && *ctime == st.ctime_ns && e.kind == fsops::kind_of(st.kind()) as i32).then_some(*e)
    }
}

/// Entries that vanish between the listing and the reads are passed over (EINVAL: a symlink
/// replaced by something else before its target was read).
fn vanished(e: &io::Error) -> bool {
    ferry_tree::gone(e) || e.raw_os_error() == Some(libc::EINVAL)
}

/// The source's manifest, with full xattrs when `xattrs`; `previous` as in [`Previous`].
pub fn scan_source(root: &Dir, xattrs: bool, previous: Option<&Previous<'_>>) -> Result<Vec<SourceEntry>> {
    let mut out = Vec::new();
    let settled_before = std::time::SystemTime::now()
        .checked_sub(SETTLED)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut failed = None;
    let walked = walk(root, &mut |_, _| false, &mut |w| {
        let unchanged = previous.and_then(|p| p.unchanged(w.rel, w.stat));
        let entry = match unchanged {
            Some(prev) => Ok(FileEntry {
                symlink_target: prev.symlink_target.clone(),
                xattrs: prev.xattrs.clone(),
                xattr_digest: prev.xattr_digest.clone(),
                ..fsops::entry_from_stat(w.rel, w.stat)
            }),
            None => fsops::entry_at(w.dir, w.name, w.rel, w.stat, xattrs, true),
        };
        let ctime = w.stat.ctime_ns;
        match entry {
            Ok(entry) => out.push(SourceEntry { entry, stat: *w.stat, settled_ctime: if ctime < settled_before { ctime } else { 0 } }),
            Err(e) if vanished(&e) => {}
            Err(e) => {
                let kind = e.kind();
                failed = Some(Error::sync_io(fsops::display(w.rel), "reading", e));
                return Err(io::Error::from(kind));
            }
        }
        Ok(())
    });
    if let Err(e) = walked {
        return Err(failed.unwrap_or_else(|| Error::sync_io(".", "walking the tree", e)));
    }
    Ok(out)
}

/// The destination's summary of `root`, plus the regular files of `link_dest` that `root`
/// lacks (flagged `in_link_dest`). Leftover temporary files of an interrupted pass are removed
/// on the way.
pub fn scan_dest(root: &Dir, link_dest: Option<&Dir>, xattrs: bool) -> Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut skip_temp = |dir: &Dir, name: &[u8]| {
        if name.starts_with(TEMP_PREFIX.as_bytes()) {
            if let Err(e) = dir.remove_all_at(name) {
                tracing::warn!("removing leftover {}: {e}", String::from_utf8_lossy(name));
            }
            true
        } else {
            false
        }
    };
    let mut failed = None;
    let walked = walk(root, &mut skip_temp, &mut |w| {
        match fsops::entry_at(w.dir, w.name, w.rel, w.stat, xattrs, false) {
            Ok(e) => out.push(e),
            Err(e) if vanished(&e) => {}
            Err(e) => {
                let kind = e.kind();
                failed = Some(Error::sync_io(fsops::display(w.rel), "reading", e));
                return Err(io::Error::from(kind));
            }
        }
        Ok(())
    });
    if let Err(e) = walked {
        return Err(failed.unwrap_or_else(|| Error::sync_io(".", "walking the tree", e)));
    }
    if let Some(ld) = link_dest {
        let have: std::collections::HashSet<Vec<u8>> = out.iter().map(|e| e.path.clone()).collect();
        let mut extra = Vec::new();
        walk(ld, &mut |_, name| name.starts_with(TEMP_PREFIX.as_bytes()), &mut |w| {
            if w.stat.kind() == ferry_tree::Kind::Regular && !have.contains(w.rel) {
                if let Ok(mut e) = fsops::entry_at(w.dir, w.name, w.rel, w.stat, xattrs, false) {
                    e.in_link_dest = true;
                    extra.push(e);
                }
            }
            Ok(())
        })
        .map_err(|e| Error::sync_io(".", "walking the link-dest tree", e))?;
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

    fn set_xattr(path: &std::path::Path, value: &[u8]) -> bool {
        let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid strings and a value buffer of value.len() bytes.
        unsafe { libc::lsetxattr(p.as_ptr(), c"user.ferry.scan".as_ptr(), value.as_ptr().cast(), value.len(), 0) == 0 }
    }

    fn xattr(v: &[u8]) -> Vec<Xattr> {
        vec![Xattr { name: b"user.ferry.scan".to_vec(), value: v.to_vec() }]
    }

    #[test]
    fn an_unchanged_settled_inode_is_not_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path();
        std::fs::write(root_path.join("f"), b"data").unwrap();
        if !set_xattr(&root_path.join("f"), b"on disk") {
            eprintln!("skipped: this file system takes no user xattrs");
            return;
        }
        let root = Dir::open(root_path).unwrap();
        let scan = || scan_source(&root, true, None).unwrap();
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
        let again = scan_source(&root, true, Some(&Previous::new(&entries, &ctimes))).unwrap();
        assert_eq!(f(&again).entry.xattrs, xattr(b"planted"));
        assert_eq!(f(&again).entry.size, 4, "lstat fields are always fresh");

        // Any change of the inode (here its xattr) changes its ctime: read again.
        assert!(set_xattr(&root_path.join("f"), b"changed"));
        let changed = scan_source(&root, true, Some(&Previous::new(&entries, &ctimes))).unwrap();
        assert_eq!(f(&changed).entry.xattrs, xattr(b"changed"));
        // And an entry whose ctime was not settled is always read.
        let unsettled = vec![0; ctimes.len()];
        let fresh = scan_source(&root, true, Some(&Previous::new(&entries, &unsettled))).unwrap();
        assert_eq!(f(&fresh).entry.xattrs, xattr(b"changed"));
    }
}
