//! Filling a private area from a template: a directory tree copied with owners, modes, times,
//! symlinks (never followed), hardlinks and device nodes; or a tarball (.tar, .tar.zst,
//! .tar.gz) unpacked with every entry checked so that none escapes the destination.

use crate::error::{Error, IoContext, Result};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What a template path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    Dir,
    Tar,
    TarZstd,
    TarGzip,
}

/// Decide how to read `path`: a directory, or a tarball recognised by its first bytes.
pub fn template_kind(path: &Path) -> Result<TemplateKind> {
    let md = std::fs::metadata(path).map_err(|e| Error::TemplateMissing { path: path.to_path_buf(), source: e })?;
    if md.is_dir() {
        return Ok(TemplateKind::Dir);
    }
    let mut magic = [0u8; 262];
    let mut f = std::fs::File::open(path).ctx("open template", path)?;
    let n = read_up_to(&mut f, &mut magic).ctx("read template", path)?;
    let m = &magic[..n];
    if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(TemplateKind::TarZstd)
    } else if m.starts_with(&[0x1f, 0x8b]) {
        Ok(TemplateKind::TarGzip)
    } else if n >= 262 && &m[257..262] == b"ustar" {
        Ok(TemplateKind::Tar)
    } else {
        Err(Error::Template(format!("template {} is neither a directory nor a tar, tar.zst or tar.gz archive", path.display())))
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copy or unpack `template` into `dest` (which must exist and be empty).
pub fn install(template: &Path, dest: &Path) -> Result<()> {
    match template_kind(template)? {
        TemplateKind::Dir => copy_tree(template, dest),
        TemplateKind::Tar => {
            let f = std::fs::File::open(template).ctx("open template", template)?;
            unpack_tar(f, dest)
        }
        TemplateKind::TarZstd => {
            let f = std::fs::File::open(template).ctx("open template", template)?;
            let z = zstd::stream::read::Decoder::new(f).ctx("read zstd template", template)?;
            unpack_tar(z, dest)
        }
        TemplateKind::TarGzip => {
            // No gzip decoder among our crates: the host's gzip does it, streaming.
            let f = std::fs::File::open(template).ctx("open template", template)?;
            let mut child = std::process::Command::new("gzip")
                .arg("-dc")
                .stdin(f)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|source| Error::TemplateArchive { what: format!("cannot run gzip to read {}", template.display()), source })?;
            let out = child.stdout.take().expect("piped");
            let res = unpack_tar(out, dest);
            let st = child.wait().ctx("wait for gzip", template)?;
            res?;
            if !st.success() {
                return Err(Error::Template(format!("gzip -dc {} failed ({st}): the archive is damaged", template.display())));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Directory templates

/// Copy the tree at `src` into the existing directory `dst`, preserving what a root file tree
/// needs. Symlinks are copied as links, never followed.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let md = std::fs::symlink_metadata(src).ctx("stat template", src)?;
    copy_dir_contents(src, dst, &mut links)?;
    set_owner_mode_times(dst, &md, false)
}

fn copy_dir_contents(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<()> {
    let mut entries: Vec<_> =
        std::fs::read_dir(src).ctx("read template directory", src)?.collect::<std::io::Result<_>>().ctx("read template directory", src)?;
    entries.sort_by_key(|e| e.file_name());
    for ent in entries {
        let s = ent.path();
        let d = dst.join(ent.file_name());
        let md = std::fs::symlink_metadata(&s).ctx("stat", &s)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d).ctx("create directory", &d)?;
            copy_dir_contents(&s, &d, links)?;
            set_owner_mode_times(&d, &md, false)?;
            continue;
        }
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                std::fs::hard_link(first, &d).ctx("create hardlink", &d)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), d.clone());
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&s).ctx("read symlink", &s)?;
            std::os::unix::fs::symlink(&target, &d).ctx("create symlink", &d)?;
            set_owner_mode_times(&d, &md, true)?;
        } else if ft.is_file() {
            let from = open_nofollow(&s)?;
            let to = std::fs::OpenOptions::new().write(true).create_new(true).open(&d).ctx("create", &d)?;
            ferry_tree::extents::copy_sparse(&from, &to, md.len()).ctx("copy", &d)?;
            drop(to);
            set_owner_mode_times(&d, &md, false)?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else if ft.is_socket() {
                // Sockets are runtime state, not template content.
                continue;
            } else {
                continue;
            };
            nix::sys::stat::mknod(&d, kind, Mode::from_bits_truncate(md.mode() & 0o7777), md.rdev())
                .map_err(|e| Error::sys(format!("mknod {}", d.display()), e))?;
            set_owner_mode_times(&d, &md, false)?;
        }
        copy_xattrs(&s, &d);
    }
    Ok(())
}

fn open_nofollow(p: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(p).ctx("open", p)
}

/// Extended attributes (security.capability on ping and the like), best effort: a filesystem
/// without xattr support simply does not get them.
fn copy_xattrs(src: &Path, dst: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(s), Ok(d)) = (CString::new(src.as_os_str().as_bytes()), CString::new(dst.as_os_str().as_bytes())) else {
        return;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: s is a valid C string; names is a writable buffer of the length given.
    let n = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    for name in names[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else { continue };
        let mut val = vec![0u8; 65536];
        // SAFETY: valid C strings; val is writable for its length.
        let len = unsafe { libc::lgetxattr(s.as_ptr(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if len < 0 {
            continue;
        }
        // SAFETY: valid C strings; val holds len initialised bytes.
        let _ = unsafe { libc::lsetxattr(d.as_ptr(), cname.as_ptr(), val.as_ptr().cast(), len as usize, 0) };
    }
}

fn set_owner_mode_times(p: &Path, md: &std::fs::Metadata, is_link: bool) -> Result<()> {
    let flag = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    nix::unistd::fchownat(None, p, Some(Uid::from_raw(md.uid())), Some(Gid::from_raw(md.gid())), flag)
        .map_err(|e| Error::sys(format!("chown {}", p.display()), e))?;
    if !is_link {
        // After chown: chown clears setuid bits.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(md.mode() & 0o7777)).ctx("chmod", p)?;
    }
    let at = TimeSpec::new(md.atime(), md.atime_nsec());
    let mt = TimeSpec::new(md.mtime(), md.mtime_nsec());
    nix::sys::stat::utimensat(None, p, &at, &mt, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::sys(format!("set times of {}", p.display()), e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tarballs

/// An archive member name must be relative and stay below the destination: no absolute path,
/// no `..` component. (`.` components and a leading `./` are fine.)
pub fn check_member_path(p: &Path) -> std::result::Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{}: contains '..'", p.display())),
            Component::RootDir | Component::Prefix(_) => return Err(format!("{}: absolute path", p.display())),
        }
    }
    Ok(clean)
}

/// Refuse to write `rel` below `dest` if any existing component on the way (including the
/// final one) is a symlink: writing would go wherever it points.
pub fn check_no_symlink_on_path(dest: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(format!("{}: would write through the symlink {}", rel.display(), cur.strip_prefix(dest).unwrap_or(&cur).display()))
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Unpack a tar stream into `dest`, refusing (before writing it) any member that escapes.
pub fn unpack_tar(r: impl Read, dest: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let bad = |msg: String| Error::Template(format!("refusing template archive member {msg}"));
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    for ent in ar.entries().map_err(|source| Error::TemplateArchive { what: "read template archive".into(), source })? {
        let mut ent = ent.map_err(|source| Error::TemplateArchive { what: "read template archive".into(), source })?;
        let raw = ent.path().map_err(|source| Error::TemplateArchive { what: "read template archive".into(), source })?.into_owned();
        let rel = check_member_path(&raw).map_err(bad)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        check_no_symlink_on_path(dest, &rel).map_err(bad)?;
        let et = ent.header().entry_type();
        if et.is_hard_link() {
            let target = ent
                .link_name()
                .map_err(|source| Error::TemplateArchive { what: "read template archive".into(), source })?
                .ok_or_else(|| bad(format!("{}: hardlink without a target", rel.display())))?;
            let t = check_member_path(&target).map_err(|m| bad(format!("{} (hardlink target {m})", rel.display())))?;
            check_no_symlink_on_path(dest, &t).map_err(bad)?;
            let _ = std::fs::remove_file(dest.join(&rel));
            std::fs::hard_link(dest.join(&t), dest.join(&rel)).ctx("create hardlink", dest.join(&rel))?;
            continue;
        }
        if let Some(parent) = rel.parent() {
            std::fs::create_dir_all(dest.join(parent)).ctx("create directory", dest.join(parent))?;
        }
        if et.is_dir() {
            dirs.push((rel.clone(), ent.header().clone()));
        }
        ent.unpack(dest.join(&rel)).map_err(|source| Error::TemplateArchive { what: format!("unpack {}", rel.display()), source })?;
    }
    // Directory times last: unpacking their contents changed them.
    for (rel, h) in dirs.iter().rev() {
        if let Ok(mt) = h.mtime() {
            let ts = TimeSpec::new(mt as i64, 0);
            let _ = nix::sys::stat::utimensat(None, &dest.join(rel), &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink);
        }
    }
    Ok(())
}

/// What PID 1 runs when `--init` is not given: `/sbin/init` if the tree has one, else the
/// keep-alive shell loop (needs /bin/sh).
pub fn default_init(root: &Path) -> Option<Vec<String>> {
    if std::fs::symlink_metadata(root.join("sbin/init")).is_ok() {
        return Some(vec!["/sbin/init".into()]);
    }
    if std::fs::symlink_metadata(root.join("bin/sh")).is_ok() {
        return Some(keepalive_init());
    }
    None
}

/// A PID 1 that exits on SIGTERM and otherwise waits forever, reaping every orphan it inherits
/// (`wait` collects any child, not only the sleep).
pub fn keepalive_init() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), "trap \"exit 0\" TERM; while :; do sleep 1 & wait $!; done".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_holes() {
        use std::os::unix::fs::FileExt;
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        // 64 MiB long, two 4 KiB runs of data: one at the start, one in the middle.
        let f = std::fs::File::create(src.path().join("sparse")).unwrap();
        f.write_all_at(&[7u8; 4096], 0).unwrap();
        f.write_all_at(&[9u8; 4096], 32 << 20).unwrap();
        f.set_len(64 << 20).unwrap();
        if f.metadata().unwrap().blocks() * 512 > 1 << 20 {
            eprintln!("skipped: this filesystem does not keep holes");
            return;
        }
        copy_tree(src.path(), dst.path()).unwrap();
        let copy = std::fs::File::open(dst.path().join("sparse")).unwrap();
        let md = copy.metadata().unwrap();
        assert_eq!(md.len(), 64 << 20);
        assert!(md.blocks() * 512 <= 1 << 20, "the copy takes {} bytes on disk: its holes were filled", md.blocks() * 512);
        let mut b = [0u8; 4096];
        copy.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, [7u8; 4096]);
        copy.read_exact_at(&mut b, 32 << 20).unwrap();
        assert_eq!(b, [9u8; 4096]);
        copy.read_exact_at(&mut b, 16 << 20).unwrap();
        assert_eq!(b, [0u8; 4096]);
    }

    fn tar_with(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_size(if *kind == tar::EntryType::Regular { 3 } else { 0 });
            // set_path refuses '..', so write the raw name.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            let data: &[u8] = if *kind == tar::EntryType::Regular { b"abc" } else { b"" };
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn member_paths() {
        assert_eq!(check_member_path(Path::new("./etc/passwd")).unwrap(), PathBuf::from("etc/passwd"));
        assert!(check_member_path(Path::new("/etc/passwd")).unwrap_err().contains("absolute"));
        assert!(check_member_path(Path::new("a/../../x")).unwrap_err().contains(".."));
        assert!(check_member_path(Path::new("..")).is_err());
    }

    #[test]
    fn unpacks_good_archive() {
        use tar::EntryType as E;
        let d = tempfile::tempdir().unwrap();
        let t = tar_with(&[
            ("bin/", E::Directory, None),
            ("bin/busybox", E::Regular, None),
            ("bin/sh", E::Symlink, Some("/bin/busybox")),
            ("bin/ash", E::Link, Some("bin/busybox")),
        ]);
        unpack_tar(&t[..], d.path()).unwrap();
        assert_eq!(std::fs::read(d.path().join("bin/busybox")).unwrap(), b"abc");
        assert_eq!(std::fs::read_link(d.path().join("bin/sh")).unwrap(), PathBuf::from("/bin/busybox"));
        assert_eq!(std::fs::metadata(d.path().join("bin/ash")).unwrap().nlink(), 2);
        assert_eq!(default_init(d.path()).unwrap(), keepalive_init());
    }

    #[test]
    fn refuses_escapes() {
        use tar::EntryType as E;
        let cases: Vec<Vec<(&str, E, Option<&str>)>> = vec![
            vec![("../evil", E::Regular, None)],
            vec![("/abs", E::Regular, None)],
            vec![("etc", E::Symlink, Some("/tmp")), ("etc/evil", E::Regular, None)],
            vec![("link", E::Symlink, Some("/tmp/x")), ("link", E::Regular, None)],
            vec![("h", E::Link, Some("../outside"))],
        ];
        for c in cases {
            let d = tempfile::tempdir().unwrap();
            let out = tempfile::tempdir().unwrap();
            let dest = d.path().join("root");
            std::fs::create_dir(&dest).unwrap();
            let t = tar_with(&c);
            let err = unpack_tar(&t[..], &dest).unwrap_err().to_string();
            assert!(err.contains("refusing"), "{c:?}: {err}");
            assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
            assert!(!d.path().join("evil").exists());
        }
    }

    #[test]
    fn copies_tree_with_links() {
        let s = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(s.path().join("bin")).unwrap();
        std::fs::write(s.path().join("bin/a"), b"x").unwrap();
        std::fs::set_permissions(s.path().join("bin/a"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::hard_link(s.path().join("bin/a"), s.path().join("bin/b")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", s.path().join("bin/l")).unwrap();
        nix::unistd::mkfifo(&s.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        copy_tree(s.path(), d.path()).unwrap();
        let a = std::fs::metadata(d.path().join("bin/a")).unwrap();
        assert_eq!(a.mode() & 0o7777, 0o4755);
        assert_eq!(a.nlink(), 2);
        assert_eq!(a.mtime(), std::fs::metadata(s.path().join("bin/a")).unwrap().mtime());
        assert_eq!(std::fs::read_link(d.path().join("bin/l")).unwrap(), PathBuf::from("/etc/shadow"));
        assert!(std::fs::symlink_metadata(d.path().join("fifo")).unwrap().file_type().is_fifo());
    }
}
