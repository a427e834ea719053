//! Which init a container's command line starts, read from its files at create: the command
//! is resolved inside the container's tree as if that tree were `/` (its symlinks cannot lead
//! the host out of it), then named by what it resolves to.

use crate::config::InitSystem;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The init system `argv` runs in the tree at `root`; [`InitSystem::None`] when it is not one
/// ferry knows (or cannot be found).
pub fn detect(root: &Path, argv: &[String]) -> InitSystem {
    let Some(cmd) = argv.first() else { return InitSystem::None };
    let Some(resolved) = resolve_in_root(root, cmd) else { return InitSystem::None };
    let name = resolved.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let called = Path::new(cmd).file_name().and_then(|n| n.to_str()).unwrap_or("");
    classify(name, called, argv.get(1).map(String::as_str), || read_head(root, &resolved))
}

/// The rules, apart from the file system: `name` is the file the command resolves to,
/// `called` the name it was called by, `arg1` its first argument; `head` reads the start of
/// the file when the names do not tell.
fn classify(name: &str, called: &str, arg1: Option<&str>, head: impl FnOnce() -> Vec<u8>) -> InitSystem {
    if name == "systemd" {
        return InitSystem::Systemd;
    }
    if name == "busybox" {
        return if called == "init" || arg1 == Some("init") { InitSystem::Busybox } else { InitSystem::None };
    }
    if called == "init" || name == "init" {
        // sysvinit's init exports INIT_VERSION=sysvinit-N to what it runs.
        let h = head();
        if h.windows(b"INIT_VERSION".len()).any(|w| w == b"INIT_VERSION") {
            return InitSystem::Sysvinit;
        }
    }
    InitSystem::None
}

/// Open `path` below `root` resolving every link inside it, returning where it leads (as a
/// path inside the tree).
fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let dir = std::fs::File::open(root).ok()?;
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), path.trim_start_matches('/'), how).ok()?;
    // SAFETY: openat2 returned a new descriptor that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    full.strip_prefix(&root).ok().map(|p| Path::new("/").join(p))
}

/// The first 4 MiB of the regular file `inner` of the tree at `root` (empty when unreadable).
fn read_head(root: &Path, inner: &Path) -> Vec<u8> {
    let Ok(dir) = std::fs::File::open(root) else { return Vec::new() };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let Some(rel) = inner.to_str().map(|s| s.trim_start_matches('/').to_string()) else { return Vec::new() };
    let Ok(fd) = nix::fcntl::openat2(dir.as_raw_fd(), rel.as_str(), how) else { return Vec::new() };
    // SAFETY: openat2 returned a new descriptor that we now own.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(4 << 20).read_to_end(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_decide() {
        let none = Vec::new;
        assert_eq!(classify("systemd", "init", None, none), InitSystem::Systemd);
        assert_eq!(classify("busybox", "init", None, none), InitSystem::Busybox);
        assert_eq!(classify("busybox", "busybox", Some("init"), none), InitSystem::Busybox);
        assert_eq!(classify("busybox", "sh", None, none), InitSystem::None);
        assert_eq!(classify("init", "init", None, || b"..INIT_VERSION=sysvinit-3.06..".to_vec()), InitSystem::Sysvinit);
        assert_eq!(classify("init", "init", None, || b"something else".to_vec()), InitSystem::None);
        assert_eq!(classify("sh", "sh", Some("-c"), none), InitSystem::None);
    }

    #[test]
    fn resolves_links_inside_the_tree_only() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("lib/systemd")).unwrap();
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        std::fs::write(r.join("lib/systemd/systemd"), b"\x7fELF").unwrap();
        symlink("/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        assert_eq!(detect(r, &["/sbin/init".into()]), InitSystem::Systemd);
        // A link that climbs out stays inside: /../../lib/systemd/systemd is the tree's.
        symlink("../../../../../../lib/systemd/systemd", r.join("sbin/up")).unwrap();
        assert_eq!(detect(r, &["/sbin/up".into()]), InitSystem::Systemd);
        // An absolute link to a host file that exists only on the host resolves to nothing.
        symlink("/proc/self/exe", r.join("sbin/magic")).unwrap();
        assert_eq!(detect(r, &["/sbin/magic".into()]), InitSystem::None);
        assert_eq!(detect(r, &["/no/such".into()]), InitSystem::None);
        assert_eq!(detect(r, &[]), InitSystem::None);
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"").unwrap();
        symlink("/bin/busybox", r.join("sbin/init2")).unwrap();
        assert_eq!(detect(r, &["/bin/busybox".into(), "init".into()]), InitSystem::Busybox);
    }
}
