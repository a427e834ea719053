//! A directory tree to and from a file-tree section ([`ferry_dump_format::TreeWriter`] encoding):
//! what `snapshot export` writes and `restore --from-image` unpacks into a new private area.
//! Both go through `ferry_tree`: the tree is walked through directory fds, and an image's
//! entries are made relative to their directory's fd, opened beneath the new root without
//! following anything, so no entry of a hostile image reaches outside it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use ferry_dump_format::{self as fmt, EntryType, TreeEntry, TreeReader, TreeWriter};
use ferry_tree::meta::{self, Meta, Target};
use ferry_tree::walk::walk;
use ferry_tree::{Dir, Kind, Opened, Stat};

use super::error::Cause;

fn shown(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

/// Add every entry under `root` (not `root` itself), parents before children, hardlinks within
/// the tree as links to their first path. Returns (entries, content bytes).
pub fn write_tree<W: Write>(root: &Path, tree: &mut TreeWriter<W>) -> Result<(u64, u64), Cause> {
    let top = Dir::open(root).map_err(|e| Cause::io("open", root, e))?;
    let mut seen: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut counts = (0u64, 0u64);
    let mut failure = None;
    let walked = walk(&top, &mut |_, _| false, &mut |w| {
        if w.rel.is_empty() {
            return Ok(());
        }
        let r = add_entry(tree, w.dir, w.name, w.rel, w.stat, &mut seen, &mut counts);
        r.map_err(|m| {
            failure = Some(m);
            std::io::Error::other("stopped")
        })
    });
    if let Some(m) = failure {
        return Err(m);
    }
    walked.map_err(|e| Cause::io("walk", root, e))?;
    Ok(counts)
}

fn add_entry<W: Write>(
    tree: &mut TreeWriter<W>,
    dir: &Dir,
    name: &[u8],
    rel: &[u8],
    st: &Stat,
    seen: &mut HashMap<(u64, u64), Vec<u8>>,
    counts: &mut (u64, u64),
) -> Result<(), Cause> {
    let mut e = TreeEntry {
        path: rel.to_vec(),
        mode: st.perm(),
        uid: st.uid,
        gid: st.gid,
        mtime_secs: st.mtime_ns.div_euclid(1_000_000_000),
        mtime_nanos: st.mtime_ns.rem_euclid(1_000_000_000) as u32,
        ..Default::default()
    };
    let kind = match st.kind() {
        Kind::Directory => EntryType::Directory,
        Kind::Symlink => {
            e.symlink_target = dir.read_link_at(name).map_err(|x| entry(rel, "readlink", x))?;
            EntryType::Symlink
        }
        Kind::Regular => {
            if st.nlink > 1 {
                if let Some(first) = seen.get(&(st.dev, st.ino)) {
                    e.hardlink_target = first.clone();
                    e.entry_type = EntryType::Hardlink as i32;
                    tree.add(&e, None).map_err(|x| Cause::from(x).context(shown(rel)))?;
                    counts.0 += 1;
                    return Ok(());
                }
                seen.insert((st.dev, st.ino), rel.to_vec());
            }
            e.size = st.size;
            EntryType::File
        }
        Kind::CharDevice => EntryType::CharDevice,
        Kind::BlockDevice => EntryType::BlockDevice,
        Kind::Fifo => EntryType::Fifo,
        Kind::Socket | Kind::Unknown => EntryType::Socket,
    };
    if matches!(kind, EntryType::CharDevice | EntryType::BlockDevice | EntryType::Fifo | EntryType::Socket) {
        e.rdev_major = libc::major(st.rdev);
        e.rdev_minor = libc::minor(st.rdev);
    }
    e.entry_type = kind as i32;
    if kind == EntryType::File {
        let f = match dir.open_file_beneath(name, false, Some(st)).map_err(|x| entry(rel, "open", x))? {
            Opened::File(f, _) => f,
            _ => return Err(Cause::msg(format!("{}: changed while being exported", shown(rel)))),
        };
        // Holes read as zeros without reading the disk; a file that changes length while read
        // would break the framing: refuse clearly.
        let mut content = Holes::new(&f, e.size);
        tree.add(&e, Some(&mut content)).map_err(|x| Cause::from(x).context(format!("{} (did it change while being exported?)", shown(rel))))?;
        counts.1 += e.size;
    } else {
        tree.add(&e, None).map_err(|x| Cause::from(x).context(shown(rel)))?;
    }
    counts.0 += 1;
    Ok(())
}

/// A regular file's content as a reader: its data extents read, its holes given as zeros.
struct Holes<'a> {
    f: &'a File,
    size: u64,
    pos: u64,
    extents: ferry_tree::extents::DataExtents<'a>,
    /// The current data extent (start, end), if `pos` has reached one.
    next: Option<(u64, u64)>,
}

impl<'a> Holes<'a> {
    fn new(f: &'a File, size: u64) -> Self {
        Holes { f, size, pos: 0, extents: ferry_tree::extents::data_extents(f, size), next: None }
    }
}

impl Read for Holes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.next.is_none_or(|(_, end)| end <= self.pos) {
            self.next = match self.extents.next() {
                Some(x) => x.map(|(off, len)| Some((off, off + len)))?,
                None => Some((self.size, self.size)),
            };
        }
        let (start, end) = self.next.unwrap_or((self.size, self.size));
        let n = if self.pos < start {
            let n = ((start - self.pos) as usize).min(buf.len());
            buf[..n].fill(0);
            n
        } else {
            let want = ((end - self.pos) as usize).min(buf.len());
            self.f.read_at(&mut buf[..want], self.pos)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Write `data` at `off` of `f`, leaving whole blocks of zeros as holes (the file is sized
/// first, so they read as zeros).
fn write_sparse(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        // Runs of non-zero blocks go in one write.
        let start = i;
        while i < data.len() && !data[i..(i + BLOCK).min(data.len())].iter().all(|b| *b == 0) {
            i = (i + BLOCK).min(data.len());
        }
        if i > start {
            f.write_all_at(&data[start..i], off + start as u64)?;
        }
        while i < data.len() && data[i..(i + BLOCK).min(data.len())].iter().all(|b| *b == 0) {
            i = (i + BLOCK).min(data.len());
        }
    }
    Ok(())
}

/// An entry's `what` failed with `e`.
fn entry(rel: &[u8], what: &'static str, e: std::io::Error) -> Cause {
    Cause::Entry { entry: shown(rel), what, source: e }
}

/// Why an entry's place in the new tree cannot be reached, in words.
fn refused(rel: &[u8], e: std::io::Error) -> Cause {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "a symlink is on its path (never followed)",
        Some(libc::ENOTDIR) => "a directory on its path is not a directory (a symlink is never followed)",
        Some(libc::ENOENT) => "its directory is not in the tree before it",
        _ => {
            let what = "refused; nothing is written outside the new container's directory";
            return Cause::Entry { entry: format!("file tree entry {:?}", shown(rel)), what, source: e };
        }
    };
    Cause::msg(format!("file tree entry {:?} refused: {why}; nothing is written outside the new container's directory", shown(rel)))
}

/// The owner, mode and time an entry records.
fn meta_of(e: &TreeEntry) -> Meta<'static> {
    Meta {
        uid: e.uid,
        gid: e.gid,
        perm: e.mode,
        mtime_ns: e.mtime_secs.saturating_mul(1_000_000_000).saturating_add(e.mtime_nanos.into()),
        xattrs: None,
    }
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// Create the tree's entries under `root` (an existing, empty directory): owners, modes and
/// mtimes as recorded. Paths are checked by the reader; each entry is made relative to its
/// directory, opened beneath `root` without following any symlink (one the image made earlier
/// included), and a hard link may only name a regular file this extraction made: no entry
/// reaches outside `root`. Blocks of zeros are left as holes.
pub fn extract_tree<R: Read>(tree: &mut TreeReader<R>, root: &Path) -> Result<u64, Cause> {
    let top = Dir::open(root).map_err(|e| Cause::io("open", root, e))?;
    let mut dirs: Vec<TreeEntry> = Vec::new();
    let mut files: HashSet<Vec<u8>> = HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    while let Some(e) = tree.next_entry().map_err(|x| Cause::from(x).context("file tree"))? {
        let kind = EntryType::try_from(e.entry_type).unwrap_or(EntryType::Unspecified);
        let (parent_rel, name) = split(&e.path);
        let parent = top.dir_beneath(parent_rel).map_err(|x| refused(&e.path, x))?;
        let at = |what: &'static str, x: std::io::Error| Cause::Entry { entry: format!("file tree entry {:?}", shown(&e.path)), what, source: x };
        let meta = meta_of(&e);
        match kind {
            EntryType::Directory => {
                parent.mkdir_at(name, 0o700).map_err(|x| at("create", x))?;
                dirs.push(e);
                n += 1;
                continue;
            }
            EntryType::File => {
                let f = parent.create_file_at(name, 0o600).map_err(|x| at("create", x))?;
                f.set_len(e.size).map_err(|x| at("size", x))?;
                let mut off = 0u64;
                loop {
                    let k = tree.read_content(&mut buf).map_err(|x| Cause::from(x).context("file tree"))?;
                    if k == 0 {
                        break;
                    }
                    write_sparse(&f, &buf[..k], off).map_err(|x| at("write", x))?;
                    off += k as u64;
                }
                meta::apply(Target::File(&f), &meta).map_err(|x| at("set owner, mode and time", x))?;
                files.insert(e.path.clone());
            }
            EntryType::Symlink => {
                parent.symlink_at(&e.symlink_target, name).map_err(|x| at("symlink", x))?;
                let node = parent.node_at(name).map_err(|x| at("open", x))?;
                meta::apply(Target::Node(&node), &meta).map_err(|x| at("set owner and time", x))?;
            }
            EntryType::Hardlink => {
                // Only to a regular file this extraction made (the format says: an earlier file).
                if !files.contains(&e.hardlink_target) {
                    return Err(Cause::msg(format!(
                        "file tree entry {:?} refused: its hard link target {:?} is not a regular file earlier in this tree",
                        shown(&e.path),
                        shown(&e.hardlink_target)
                    )));
                }
                let target = top.node_beneath(&e.hardlink_target).map_err(|x| refused(&e.hardlink_target, x))?;
                if target.kind() != Kind::Regular {
                    return Err(Cause::msg(format!(
                        "file tree entry {:?} refused: its hard link target is {}",
                        shown(&e.path),
                        target.kind().describe()
                    )));
                }
                parent.link_at(&target, name).map_err(|x| at("link", x))?;
            }
            EntryType::CharDevice | EntryType::BlockDevice | EntryType::Fifo | EntryType::Socket => {
                let k = match kind {
                    EntryType::CharDevice => Kind::CharDevice,
                    EntryType::BlockDevice => Kind::BlockDevice,
                    EntryType::Fifo => Kind::Fifo,
                    _ => Kind::Socket,
                };
                parent.mknod_at(name, k, 0o600, libc::makedev(e.rdev_major, e.rdev_minor)).map_err(|x| at("mknod", x))?;
                let node = parent.node_at(name).map_err(|x| at("open", x))?;
                meta::apply(Target::Node(&node), &meta).map_err(|x| at("set owner, mode and time", x))?;
            }
            EntryType::Unspecified => return Err(Cause::msg(format!("file tree: entry {:?} has no type", shown(&e.path)))),
        }
        n += 1;
    }
    // Directories last, deepest first: creating children changes their mtimes.
    for e in dirs.iter().rev() {
        let d = top.dir_beneath(&e.path).map_err(|x| refused(&e.path, x))?;
        meta::apply(Target::Dir(&d), &meta_of(e)).map_err(|x| Cause::Entry {
            entry: format!("file tree entry {:?}", shown(&e.path)),
            what: "set owner, mode and time",
            source: x,
        })?;
    }
    Ok(n)
}

/// Write `root` as a file-tree section named `name` of `w`.
pub fn add_tree_section<W: Write>(w: &mut fmt::Writer<W>, name: &str, root: &Path) -> Result<(u64, u64), Cause> {
    let section = w.start_section(fmt::SectionKind::FileTree, name, false, None)?;
    let mut tree = TreeWriter::new(section);
    let counts = write_tree(root, &mut tree)?;
    let section = tree.finish()?;
    section.finish()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn round_trip_keeps_files_links_modes_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/a"), b"hello").unwrap();
        std::fs::hard_link(src.join("etc/a"), src.join("etc/sub/a2")).unwrap();
        std::os::unix::fs::symlink("../a", src.join("etc/sub/l")).unwrap();
        std::fs::set_permissions(src.join("etc/a"), std::fs::Permissions::from_mode(0o640)).unwrap();
        // 8 MiB apparent, two islands of data.
        let f = File::create(src.join("sparse")).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 4 << 20).unwrap();
        drop(f);
        let mut tw = TreeWriter::new(Vec::new());
        let (n, bytes) = write_tree(&src, &mut tw).unwrap();
        assert_eq!((n, bytes), (6, 5 + (8 << 20)));
        let buf = tw.finish().unwrap();
        let dst = d.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        extract_tree(&mut TreeReader::new(buf.as_slice()), &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("etc/a")).unwrap(), b"hello");
        let a = std::fs::metadata(dst.join("etc/a")).unwrap();
        assert_eq!(a.ino(), std::fs::metadata(dst.join("etc/sub/a2")).unwrap().ino());
        assert_eq!(a.mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_link(dst.join("etc/sub/l")).unwrap(), Path::new("../a"));
        assert_eq!(a.mtime(), std::fs::metadata(src.join("etc/a")).unwrap().mtime());
        let s = std::fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(s.len(), 8 << 20);
        assert!(s.blocks() * 512 < 1 << 20, "the holes were filled: {} blocks", s.blocks());
        let back = std::fs::read(dst.join("sparse")).unwrap();
        assert_eq!((&back[..5], &back[4 << 20..(4 << 20) + 6]), (&b"start"[..], &b"middle"[..]));
        assert_eq!(back.iter().filter(|b| **b != 0).count(), std::fs::read(src.join("sparse")).unwrap().iter().filter(|b| **b != 0).count());
    }

    fn entry(path: &str, kind: EntryType) -> TreeEntry {
        TreeEntry { path: path.into(), entry_type: kind as i32, mode: 0o755, ..Default::default() }
    }

    /// An image whose entries try to leave the new container's directory: through a symlink it
    /// made earlier on an entry's path, or a hard link to a file reached through one. Each is
    /// refused with a message naming the entry, and nothing is made outside.
    #[test]
    fn entries_that_would_leave_the_tree_are_refused_naming_them() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret"), b"host file").unwrap();
        let out = outside.as_os_str().as_encoded_bytes().to_vec();
        let link = TreeEntry { symlink_target: out, ..entry("d/link", EntryType::Symlink) };
        let evil_file = TreeEntry { size: 4, ..entry("d/link/sub/evil", EntryType::File) };
        let cases: Vec<(Vec<TreeEntry>, &str)> = vec![
            // A symlink earlier on the path (not the immediate parent).
            (vec![entry("d", EntryType::Directory), link.clone(), evil_file.clone()], "d/link/sub/evil"),
            (vec![entry("d", EntryType::Directory), link.clone(), entry("d/link/sub/x", EntryType::Directory)], "d/link/sub/x"),
            // A hard link to a host file through the symlink, and to one the tree never had.
            (
                vec![
                    entry("d", EntryType::Directory),
                    link.clone(),
                    TreeEntry { hardlink_target: b"d/link/secret".to_vec(), ..entry("stolen", EntryType::Hardlink) },
                ],
                "stolen",
            ),
            (vec![TreeEntry { hardlink_target: b"d/link".to_vec(), ..entry("stolen", EntryType::Hardlink) }], "stolen"),
        ];
        for (i, (entries, bad)) in cases.into_iter().enumerate() {
            let mut tw = TreeWriter::new(Vec::new());
            for e in &entries {
                let content: Option<&mut dyn Read> = if e.entry_type == EntryType::File as i32 { Some(&mut &b"evil"[..]) } else { None };
                tw.add(e, content).unwrap();
            }
            let buf = tw.finish().unwrap();
            let dst = d.path().join(format!("dst{i}"));
            std::fs::create_dir(&dst).unwrap();
            let err = extract_tree(&mut TreeReader::new(buf.as_slice()), &dst).expect_err("an escaping image was extracted").to_string();
            assert!(err.contains(&format!("{bad:?}")) && err.contains("refused"), "case {i}: {err}");
            let mut names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            assert_eq!(names, ["secret", "sub"], "case {i}");
            assert_eq!(std::fs::read_dir(outside.join("sub")).unwrap().count(), 0, "case {i}");
            assert_eq!(std::fs::metadata(outside.join("secret")).unwrap().nlink(), 1, "case {i}");
        }
    }
}
