//! Device nodes of an unprivileged container beyond the defaults (`--devices`).
//!
//! A user namespace cannot make device nodes (mknod wants the host's CAP_MKNOD), and nodes on
//! a filesystem it mounts would not open anyway. So for each device its config allows by type,
//! major and minor, ferry binds the host's node (found under /dev) into the container's /dev
//! at the same place at start, and CRIU takes the bind as an external mount keyed by the
//! device, mapped at restore to that host's node. The node keeps its host owner and mode: a
//! node only host root may open stays closed to the container's root. A rule for a class of
//! devices (a minor or major of `*`, or `a`) gives nothing to bind and is refused, naming
//! `--userns off`.

use crate::cgroups::devices::{default_rules, DeviceRule};
use crate::error::{Error, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One host device node bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBind {
    /// Its path below /dev, on the host and inside (`net/tun`).
    pub path: PathBuf,
    /// The key of its external mount in CRIU's images (`dev-c-10-200`).
    pub key: String,
}

/// The binds the device rules `devices` (config syntax) give an unprivileged container, with
/// each node looked up under `dev` (the host's /dev) now.
pub fn node_binds(devices: &[String], dev: &Path) -> Result<Vec<NodeBind>> {
    let defaults = default_rules();
    let mut out = Vec::new();
    for d in devices {
        let rule = DeviceRule::parse(d)?;
        let (Some(major), Some(minor), 'c' | 'b') = (rule.major, rule.minor, rule.kind) else {
            return Err(Error::Refused(format!(
                "device rule {d} allows a class of devices: an unprivileged container cannot make their nodes (a user namespace has no mknod for devices), and ferry binds nodes one by one: name each device (TYPE:MAJOR:MINOR), or use --userns off"
            )));
        };
        if defaults.iter().any(|r| r.kind == rule.kind && r.major == Some(major) && r.minor.is_none_or(|m| m == minor)) {
            continue;
        }
        let path = find_node(dev, rule.kind, major, minor).ok_or_else(|| {
            Error::Refused(format!(
                "no device node {} {major}:{minor} under {} on this host to give the unprivileged container: create it there (mknod), drop the rule, or use --userns off",
                rule.kind,
                dev.display()
            ))
        })?;
        out.push(NodeBind { path, key: format!("dev-{}-{major}-{minor}", rule.kind) });
    }
    Ok(out)
}

/// The first node (in name order, at most three levels down, no symlinks followed, not in
/// pts, shm or mqueue) of that type and number under `dev`, as a path below it.
fn find_node(dev: &Path, kind: char, major: u32, minor: u32) -> Option<PathBuf> {
    fn walk(base: &Path, rel: &Path, depth: u32, want: &dyn Fn(&std::fs::Metadata) -> bool) -> Option<PathBuf> {
        let mut entries: Vec<_> = std::fs::read_dir(base.join(rel)).ok()?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let r = rel.join(&name);
            let Ok(md) = std::fs::symlink_metadata(base.join(&r)) else { continue };
            if md.is_dir() && depth < 3 && !matches!(name.to_str(), Some("pts" | "shm" | "mqueue")) {
                if let Some(p) = walk(base, &r, depth + 1, want) {
                    return Some(p);
                }
            } else if want(&md) {
                return Some(r);
            }
        }
        None
    }
    let rdev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
    let want = |md: &std::fs::Metadata| {
        let ft = md.file_type();
        (if kind == 'c' { ft.is_char_device() } else { ft.is_block_device() }) && md.rdev() == rdev
    };
    walk(dev, Path::new(""), 1, &want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_found_by_number_and_classes_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (mknod)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("net")).unwrap();
        std::fs::create_dir_all(d.path().join("pts")).unwrap();
        let mk = |p: &str, kind: nix::sys::stat::SFlag, major, minor| {
            nix::sys::stat::mknod(&d.path().join(p), kind, nix::sys::stat::Mode::from_bits_truncate(0o600), nix::sys::stat::makedev(major, minor))
                .unwrap();
        };
        mk("net/tun", nix::sys::stat::SFlag::S_IFCHR, 10, 200);
        mk("pts/0", nix::sys::stat::SFlag::S_IFCHR, 10, 201);
        mk("loop0", nix::sys::stat::SFlag::S_IFBLK, 7, 0);
        let b = node_binds(&["c:10:200:rw".into(), "b:7:0:r".into(), "c:1:3:rw".into()], d.path()).unwrap();
        assert_eq!(
            b,
            [NodeBind { path: "net/tun".into(), key: "dev-c-10-200".into() }, NodeBind { path: "loop0".into(), key: "dev-b-7-0".into() }],
            "the defaults are there already"
        );
        // pts is the container's own; a char rule does not take a block node.
        assert!(node_binds(&["c:10:201".into()], d.path()).unwrap_err().to_string().contains("mknod"));
        assert!(node_binds(&["c:7:0".into()], d.path()).is_err());
        for class in ["c:10:*:rw", "a:*:*", "b:*:*:r"] {
            let e = node_binds(&[class.into()], d.path()).unwrap_err().to_string();
            assert!(e.contains("class of devices") && e.contains("--userns off"), "{e}");
        }
    }
}
