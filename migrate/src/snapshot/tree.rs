//! A directory tree to and from a file-tree section ([`ferry_dump_format::TreeWriter`] encoding):
//! what `snapshot export` writes and `restore --from-image` unpacks into a new private area.

use ferry_dump_format::{self as fmt, EntryType, TreeEntry, TreeReader, TreeWriter};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn io_err(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// Add every entry under `root` (not `root` itself), parents before children, hardlinks within
/// the tree as links to their first path. Returns (entries, content bytes).
pub fn write_tree<W: Write>(root: &Path, tree: &mut TreeWriter<W>) -> Result<(u64, u64), String> {
    let mut seen: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut counts = (0u64, 0u64);
    walk(root, Vec::new(), tree, &mut seen, &mut counts)?;
    Ok(counts)
}

fn walk<W: Write>(
    dir: &Path,
    rel: Vec<u8>,
    tree: &mut TreeWriter<W>,
    seen: &mut HashMap<(u64, u64), Vec<u8>>,
    counts: &mut (u64, u64),
) -> Result<(), String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err("list", dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| io_err("list", dir, e))?;
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let mut path = rel.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let md = std::fs::symlink_metadata(&p).map_err(|e| io_err("stat", &p, e))?;
        let ft = md.file_type();
        let mut e = TreeEntry {
            path: path.clone(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_secs: md.mtime(),
            mtime_nanos: md.mtime_nsec() as u32,
            ..Default::default()
        };
        let kind = if ft.is_dir() {
            EntryType::Directory
        } else if ft.is_symlink() {
            e.symlink_target = std::fs::read_link(&p).map_err(|e| io_err("readlink", &p, e))?.as_os_str().as_bytes().to_vec();
            EntryType::Symlink
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                    e.hardlink_target = first.clone();
                    e.entry_type = EntryType::Hardlink as i32;
                    tree.add(&e, None).map_err(|x| format!("{}: {x}", p.display()))?;
                    counts.0 += 1;
                    continue;
                }
                seen.insert((md.dev(), md.ino()), path.clone());
            }
            e.size = md.len();
            EntryType::File
        } else {
            e.rdev_major = libc::major(md.rdev());
            e.rdev_minor = libc::minor(md.rdev());
            if ft.is_char_device() {
                EntryType::CharDevice
            } else if ft.is_block_device() {
                EntryType::BlockDevice
            } else if ft.is_fifo() {
                EntryType::Fifo
            } else {
                EntryType::Socket
            }
        };
        e.entry_type = kind as i32;
        if kind == EntryType::File {
            let mut f = std::fs::File::open(&p).map_err(|e| io_err("open", &p, e))?;
            // A file that changes length while read would break the framing: refuse clearly.
            let mut limited = (&mut f).take(e.size);
            tree.add(&e, Some(&mut limited)).map_err(|x| format!("{}: {x} (did it change while being exported?)", p.display()))?;
            counts.1 += e.size;
        } else {
            tree.add(&e, None).map_err(|x| format!("{}: {x}", p.display()))?;
        }
        counts.0 += 1;
        if kind == EntryType::Directory {
            walk(&p, path, tree, seen, counts)?;
        }
    }
    Ok(())
}

/// Create the tree's entries under `root` (an existing, empty directory): owners, modes and
/// mtimes as recorded. Paths are checked by the reader; nothing is written outside `root`
/// because every parent is created by this function as a real directory before its children.
pub fn extract_tree<R: Read>(tree: &mut TreeReader<R>, root: &Path) -> Result<u64, String> {
    let mut dirs: Vec<(std::path::PathBuf, TreeEntry)> = Vec::new();
    let mut n = 0u64;
    while let Some(e) = tree.next_entry().map_err(|x| format!("file tree: {x}"))? {
        let p = root.join(OsStr::from_bytes(&e.path));
        let kind = EntryType::try_from(e.entry_type).unwrap_or(EntryType::Unspecified);
        // The parent must be a directory this extraction made (no symlink on the way).
        if let Some(parent) = p.parent() {
            let md = std::fs::symlink_metadata(parent).map_err(|x| io_err("stat", parent, x))?;
            if !md.is_dir() {
                return Err(format!("file tree: {} is not a directory", parent.display()));
            }
        }
        match kind {
            EntryType::Directory => {
                std::fs::create_dir(&p).map_err(|x| io_err("create", &p, x))?;
                dirs.push((p.clone(), e.clone()));
            }
            EntryType::File => {
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&p).map_err(|x| io_err("create", &p, x))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let k = tree.read_content(&mut buf).map_err(|x| format!("file tree: {x}"))?;
                    if k == 0 {
                        break;
                    }
                    f.write_all(&buf[..k]).map_err(|x| io_err("write", &p, x))?;
                }
            }
            EntryType::Symlink => std::os::unix::fs::symlink(OsStr::from_bytes(&e.symlink_target), &p).map_err(|x| io_err("symlink", &p, x))?,
            EntryType::Hardlink => {
                let t = root.join(OsStr::from_bytes(&e.hardlink_target));
                std::fs::hard_link(&t, &p).map_err(|x| io_err("link", &p, x))?;
                n += 1;
                continue;
            }
            EntryType::CharDevice | EntryType::BlockDevice | EntryType::Fifo | EntryType::Socket => {
                let t = match kind {
                    EntryType::CharDevice => nix::sys::stat::SFlag::S_IFCHR,
                    EntryType::BlockDevice => nix::sys::stat::SFlag::S_IFBLK,
                    EntryType::Fifo => nix::sys::stat::SFlag::S_IFIFO,
                    _ => nix::sys::stat::SFlag::S_IFSOCK,
                };
                let dev = libc::makedev(e.rdev_major, e.rdev_minor);
                nix::sys::stat::mknod(&p, t, nix::sys::stat::Mode::from_bits_truncate(0o600), dev)
                    .map_err(|x| format!("mknod {}: {x}", p.display()))?;
            }
            EntryType::Unspecified => return Err(format!("file tree: entry {} has no type", p.display())),
        }
        if kind != EntryType::Directory {
            apply_meta(&p, &e, kind == EntryType::Symlink)?;
        }
        n += 1;
    }
    // Directories last, deepest first: creating children changes their mtimes.
    for (p, e) in dirs.iter().rev() {
        apply_meta(p, e, false)?;
    }
    Ok(n)
}

fn apply_meta(p: &Path, e: &TreeEntry, symlink: bool) -> Result<(), String> {
    nix::unistd::fchownat(None, p, Some(e.uid.into()), Some(e.gid.into()), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|x| format!("chown {}: {x}", p.display()))?;
    if !symlink {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(e.mode)).map_err(|x| io_err("chmod", p, x))?;
    }
    let ts = nix::sys::time::TimeSpec::new(e.mtime_secs, e.mtime_nanos as i64);
    nix::sys::stat::utimensat(None, p, &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .map_err(|x| format!("set times of {}: {x}", p.display()))?;
    Ok(())
}

/// Write `root` as a file-tree section named `name` of `w`.
pub fn add_tree_section<W: Write>(w: &mut fmt::Writer<W>, name: &str, root: &Path) -> Result<(u64, u64), String> {
    let section = w.start_section(fmt::SectionKind::FileTree, name, false, None).map_err(|e| e.to_string())?;
    let mut tree = TreeWriter::new(section);
    let counts = write_tree(root, &mut tree)?;
    let section = tree.finish().map_err(|e| e.to_string())?;
    section.finish().map_err(|e| e.to_string())?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_files_links_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/a"), b"hello").unwrap();
        std::fs::hard_link(src.join("etc/a"), src.join("etc/sub/a2")).unwrap();
        std::os::unix::fs::symlink("../a", src.join("etc/sub/l")).unwrap();
        std::fs::set_permissions(src.join("etc/a"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut tw = TreeWriter::new(Vec::new());
        let (n, bytes) = write_tree(&src, &mut tw).unwrap();
        assert_eq!((n, bytes), (5, 5));
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
    }
}
