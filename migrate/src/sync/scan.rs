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
        return Err(Error::sync(
            root.display().to_string(),
            "the tree's root is not a directory",
        ));
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

/// The source's manifest, with full xattrs when `xattrs`.
pub fn scan_source(root: &Path, xattrs: bool) -> Result<Vec<SourceEntry>> {
    let mut out = Vec::new();
    walk(root, &mut |_, _| false, &mut |rel, full, md| {
        match fsops::entry_from(rel, full, md, xattrs, true) {
            Ok(entry) => out.push(SourceEntry {
                entry,
                full: full.to_path_buf(),
                dev: md.dev(),
                ino: md.ino(),
                nlink: md.nlink(),
                blocks: md.blocks(),
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
        walk(
            ld,
            &mut |_, name| name.starts_with(TEMP_PREFIX.as_bytes()),
            &mut |rel, full, md| {
                if md.is_file() && !have.contains_key(rel) {
                    if let Ok(mut e) = fsops::entry_from(rel, full, md, xattrs, false) {
                        e.in_link_dest = true;
                        extra.push(e);
                    }
                }
                Ok(())
            },
        )?;
        out.extend(extra);
    }
    Ok(out)
}

/// Whether `kind` is one of the special files recreated with mknod.
pub fn is_special(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo | FileKind::Socket
    )
}
