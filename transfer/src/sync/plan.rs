//! Deciding what a pass sends: a pure function of the source manifest and the destination's
//! summary.

use std::collections::{HashMap, HashSet};

use super::scan::{is_special, SourceEntry};
use super::SyncOptions;
use crate::proto::{FileEntry, FileKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Delete(Vec<u8>),
    Mkdir(usize),
    SendFile {
        idx: usize,
        delta: bool,
    },
    LinkFrom(usize),
    Hardlink {
        idx: usize,
        target: usize,
    },
    Symlink(usize),
    Mknod(usize),
    SetMeta(usize),
    /// Directory metadata, applied by the destination after all contents.
    DirMeta(usize),
}

pub(crate) fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter().enumerate().filter(|(_, b)| **b == b'/').map(move |(i, _)| &path[..i])
}

fn meta_eq(s: &FileEntry, d: &FileEntry, xattrs: bool) -> bool {
    let mode_eq = s.kind() == FileKind::Symlink || s.mode == d.mode;
    mode_eq && s.uid == d.uid && s.gid == d.gid && s.mtime_ns == d.mtime_ns && (!xattrs || s.xattr_digest == d.xattr_digest)
}

pub(crate) fn plan(src: &[SourceEntry], dest: &[FileEntry], opts: &SyncOptions) -> Vec<Op> {
    let mut ops = Vec::new();
    let in_root: HashMap<&[u8], &FileEntry> = dest.iter().filter(|d| !d.in_link_dest).map(|d| (d.path.as_slice(), d)).collect();
    let in_link_dest: HashMap<&[u8], &FileEntry> = dest.iter().filter(|d| d.in_link_dest).map(|d| (d.path.as_slice(), d)).collect();
    let by_path: HashMap<&[u8], &SourceEntry> = src.iter().map(|s| (s.entry.path.as_slice(), s)).collect();

    // Deletions first: what the source lacks, or has with another type. Only the topmost of a
    // deleted subtree is named.
    let mut deleted: HashSet<&[u8]> = HashSet::new();
    let mut touched: HashSet<Vec<u8>> = HashSet::new();
    for d in dest.iter().filter(|d| !d.in_link_dest && !d.path.is_empty()) {
        let keep = by_path.get(d.path.as_slice()).is_some_and(|s| s.entry.kind == d.kind);
        if keep {
            continue;
        }
        if ancestors(&d.path).any(|a| deleted.contains(a)) {
            deleted.insert(&d.path);
            continue;
        }
        deleted.insert(&d.path);
        touched.insert(parent(&d.path).to_vec());
        ops.push(Op::Delete(d.path.clone()));
    }
    let present = |path: &[u8], kind: i32| -> Option<&FileEntry> { in_root.get(path).copied().filter(|d| d.kind == kind && !deleted.contains(path)) };

    // Hardlink groups: the first name seen (the leader) carries the data.
    let mut leaders: HashMap<(u64, u64), (usize, bool)> = HashMap::new();
    for (i, s) in src.iter().enumerate() {
        let e = &s.entry;
        let d = present(&e.path, e.kind);
        let op = match e.kind() {
            FileKind::Directory => d.is_none().then_some(Op::Mkdir(i)),
            FileKind::Regular => {
                if s.stat.nlink > 1 {
                    if let Some(&(leader, leader_changed)) = leaders.get(&(s.stat.dev, s.stat.ino)) {
                        let leader_ino = present(&src[leader].entry.path, e.kind).map(|l| l.ino);
                        let linked = !leader_changed && d.is_some_and(|d| Some(d.ino) == leader_ino);
                        if !linked {
                            ops.push(Op::Hardlink { idx: i, target: leader });
                            touched.insert(parent(&e.path).to_vec());
                        }
                        continue;
                    }
                }
                let op = match d {
                    Some(d) if d.size == e.size && d.mtime_ns == e.mtime_ns => (!meta_eq(e, d, opts.xattrs)).then_some(Op::SetMeta(i)),
                    Some(d) => {
                        // A sparse file goes whole, as its data extents: a delta would read,
                        // hash and write its holes as zeros.
                        let delta = d.size >= opts.delta_min && e.size >= opts.delta_min && e.size <= opts.delta_max && s.stat.is_dense();
                        Some(Op::SendFile { idx: i, delta })
                    }
                    None => match in_link_dest.get(e.path.as_slice()) {
                        Some(l) if l.size == e.size && meta_eq(e, l, opts.xattrs) => Some(Op::LinkFrom(i)),
                        _ => Some(Op::SendFile { idx: i, delta: false }),
                    },
                };
                if s.stat.nlink > 1 {
                    leaders.insert((s.stat.dev, s.stat.ino), (i, op.is_some()));
                }
                op
            }
            FileKind::Symlink => match d {
                Some(d) if d.symlink_target == e.symlink_target => (!meta_eq(e, d, opts.xattrs)).then_some(Op::SetMeta(i)),
                _ => Some(Op::Symlink(i)),
            },
            k if is_special(k) => match d {
                Some(d) if d.rdev == e.rdev => (!meta_eq(e, d, opts.xattrs)).then_some(Op::SetMeta(i)),
                _ => Some(Op::Mknod(i)),
            },
            _ => None,
        };
        if let Some(op) = op {
            if !matches!(op, Op::SetMeta(_)) && !e.path.is_empty() {
                touched.insert(parent(&e.path).to_vec());
            }
            ops.push(op);
        }
    }
    for (i, s) in src.iter().enumerate().filter(|(_, s)| s.entry.kind() == FileKind::Directory) {
        let e = &s.entry;
        let same = present(&e.path, e.kind).is_some_and(|d| meta_eq(e, d, opts.xattrs));
        if !same || touched.contains(&e.path) {
            ops.push(Op::DirMeta(i));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str, kind: FileKind, size: u64, mtime: i64) -> SourceEntry {
        let stat = ferry_tree::Stat {
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            blocks: size.div_ceil(512),
            mtime_ns: mtime,
            ctime_ns: 0,
            dev: 1,
            ino: 0,
            nlink: 1,
            rdev: 0,
        };
        SourceEntry {
            entry: FileEntry { path: path.as_bytes().to_vec(), kind: kind as i32, size, mtime_ns: mtime, mode: 0o644, ..Default::default() },
            stat,
            settled_ctime: 0,
        }
    }

    #[test]
    fn unchanged_tree_plans_nothing_and_changes_are_found() {
        let s = vec![
            src("", FileKind::Directory, 0, 1),
            src("a", FileKind::Regular, 10, 5),
            src("big", FileKind::Regular, 10 << 20, 5),
            src("d", FileKind::Directory, 0, 1),
        ];
        let mut d: Vec<FileEntry> = s.iter().map(|s| s.entry.clone()).collect();
        let opts = SyncOptions::default();
        assert!(plan(&s, &d, &opts).is_empty());
        d[1].mtime_ns = 6; // a changed
        d[2].size += 1; // big changed: delta
        d.push(FileEntry { path: b"d/gone".to_vec(), kind: FileKind::Regular as i32, mode: 0o644, ..Default::default() });
        d.push(FileEntry { path: b"d/gone/deeper".to_vec(), kind: FileKind::Regular as i32, ..Default::default() });
        let ops = plan(&s, &d, &opts);
        assert_eq!(
            ops,
            vec![
                Op::Delete(b"d/gone".to_vec()),
                Op::SendFile { idx: 1, delta: false },
                Op::SendFile { idx: 2, delta: true },
                Op::DirMeta(0),
                Op::DirMeta(3),
            ]
        );
    }
}
