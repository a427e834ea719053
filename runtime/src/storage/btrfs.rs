//! The btrfs disk backend: each private area is a subvolume, its `diskspace` a qgroup limit on
//! the referenced size, changed live in both directions. Snapshots are instant.
//!
//! Everything goes through `btrfs` (btrfs-progs); each call is a thin function.

use super::probe::{fs_magic, DiskUsage, BTRFS_SUPER_MAGIC};
use crate::error::{Error, Result};
use crate::util::run;
use std::path::Path;
use std::process::Command;

/// The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOL_ROOT_INO: u64 = 256;

fn btrfs() -> Command {
    Command::new("btrfs")
}

fn err(path: &Path, op: &str, msg: impl std::fmt::Display) -> Error {
    Error::Storage { what: "btrfs", op: op.to_string(), path: path.to_path_buf(), msg: msg.to_string() }
}

/// Whether `path` lives on btrfs.
pub fn is_btrfs(path: &Path) -> Result<bool> {
    Ok(fs_magic(path)? == BTRFS_SUPER_MAGIC)
}

/// Whether `path` is the root of a btrfs subvolume.
pub fn is_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    matches!(is_btrfs(path), Ok(true)) && std::fs::metadata(path).is_ok_and(|m| m.ino() == SUBVOL_ROOT_INO)
}

/// Turn on quota accounting on the filesystem holding `path` (idempotent; quick on a
/// filesystem that already has it). Subvolumes made after this are accounted from birth.
pub fn enable_quota(path: &Path) -> Result<()> {
    if quota_enabled(path) {
        return Ok(());
    }
    run(btrfs().arg("quota").arg("enable").arg(path)).map_err(|e| err(path, "quota enable", e))?;
    // Wait for the initial rescan so usage numbers are right from the start.
    run(btrfs().args(["quota", "rescan", "-w"]).arg(path)).map_err(|e| err(path, "quota rescan", e))?;
    Ok(())
}

fn quota_enabled(path: &Path) -> bool {
    btrfs().args(["qgroup", "show"]).arg(path).output().is_ok_and(|o| o.status.success())
}

/// Create the subvolume `path` (its parent must exist and be on btrfs), with quotas enabled
/// on the filesystem first so it gets a qgroup.
pub fn create_subvolume(path: &Path) -> Result<()> {
    let parent = path.parent().ok_or_else(|| err(path, "subvolume create", "no parent directory"))?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    if !is_btrfs(parent)? {
        return Err(err(path, "subvolume create", "the directory is not on btrfs; use the image or dir backend"));
    }
    enable_quota(parent)?;
    run(btrfs().args(["subvolume", "create"]).arg(path)).map_err(|e| err(path, "subvolume create", e))?;
    Ok(())
}

/// The qgroup numbers of one subvolume: (referenced bytes, referenced limit).
fn qgroup_show(path: &Path) -> Result<(u64, Option<u64>)> {
    let out = run(btrfs().args(["qgroup", "show", "-rf", "--raw", "--sync"]).arg(path)).map_err(|e| err(path, "qgroup show", e))?;
    parse_qgroup_show(&out)
        .ok_or_else(|| err(path, "qgroup show", format!("no qgroup for this subvolume in {out:?}; run `btrfs quota rescan -w {}`", path.display())))
}

/// Parse `btrfs qgroup show -rf --raw` output: the first level-0 qgroup line,
/// `0/ID REFERENCED EXCLUSIVE MAX_REFERENCED ...`.
pub fn parse_qgroup_show(out: &str) -> Option<(u64, Option<u64>)> {
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || !f[0].starts_with("0/") {
            continue;
        }
        let rfer = f[1].parse().ok()?;
        let max = match f[3] {
            "none" => None,
            v => Some(v.parse().ok()?),
        };
        return Some((rfer, max));
    }
    None
}

/// Disk usage (referenced bytes) and limit of the subvolume `path`.
pub fn usage(path: &Path) -> Result<DiskUsage> {
    let (used, limit) = qgroup_show(path)?;
    Ok(DiskUsage { used, limit })
}

/// Set (Some) or remove (None) the disk limit of the subvolume `path`, live. A limit below what
/// the subvolume already holds is refused (btrfs would accept it and then fail every write).
pub fn set_limit(path: &Path, limit: Option<u64>) -> Result<()> {
    if !is_subvolume(path) {
        return Err(err(path, "qgroup limit", "not a btrfs subvolume (was the container made on another backend?)"));
    }
    enable_quota(path)?;
    let arg = match limit {
        None => "none".to_string(),
        Some(l) => {
            let (used, _) = qgroup_show(path)?;
            if l < used {
                return Err(err(
                    path,
                    "qgroup limit",
                    format!(
                        "cannot lower diskspace to {l} bytes: the container already uses {used} bytes; \
                         delete files inside it first or choose at least {used}"
                    ),
                ));
            }
            l.to_string()
        }
    };
    run(btrfs().args(["qgroup", "limit"]).arg(&arg).arg(path)).map_err(|e| err(path, "qgroup limit", e))?;
    Ok(())
}

/// Delete the subvolume `path` (and its qgroup's limit with it). Nested subvolumes the
/// container made are deleted first.
pub fn delete(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    // Nested subvolumes (made inside the container) block deletion: remove them deepest first.
    if let Ok(out) = run(btrfs().args(["subvolume", "list", "-o"]).arg(path)) {
        let mut nested: Vec<String> = out.lines().filter_map(|l| l.split(" path ").nth(1).map(str::to_string)).collect();
        nested.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mount = super::probe::mount_of(path)?;
        for rel in nested {
            // `list -o` paths are relative to the filesystem's top level; only those under our
            // mount are reachable, and only those inside `path` are ours.
            let full = mount.mount_point.join(rel.trim_start_matches("<FS_TREE>/"));
            if full.starts_with(path) && full != path {
                let _ = run(btrfs().args(["subvolume", "delete"]).arg(&full));
            }
        }
    }
    let id = subvolume_id(path).ok();
    run(btrfs().args(["subvolume", "delete", "-c"]).arg(path)).map_err(|e| err(path, "subvolume delete", e))?;
    // Drop the now-stale qgroup so `qgroup show` stays tidy (best effort: it may be in use).
    if let (Some(id), Some(parent)) = (id, path.parent()) {
        let _ = btrfs().args(["qgroup", "destroy"]).arg(format!("0/{id}")).arg(parent).output();
    }
    Ok(())
}

fn subvolume_id(path: &Path) -> Result<u64> {
    let out = run(btrfs().args(["inspect-internal", "rootid"]).arg(path)).map_err(|e| err(path, "rootid", e))?;
    out.trim().parse().map_err(|_| err(path, "rootid", format!("unexpected output {out:?}")))
}

/// Snapshot the subvolume `src` to `dst` (instant, copy-on-write); `readonly` makes a
/// read-only snapshot (what a backup or a send stream wants). `dst` must not exist.
pub fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    if dst.exists() {
        return Err(err(dst, "subvolume snapshot", "already exists; choose another name or delete it first"));
    }
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::io("create directory", p, e))?;
    }
    let mut c = btrfs();
    c.args(["subvolume", "snapshot"]);
    if readonly {
        c.arg("-r");
    }
    run(c.arg(src).arg(dst)).map_err(|e| err(src, "subvolume snapshot", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qgroup_show_parse() {
        let out = "\
Qgroupid    Referenced    Exclusive   Max referenced   Path
--------    ----------    ---------   --------------   ----
0/257         67125248     67125248         67108864   private/101
";
        assert_eq!(parse_qgroup_show(out), Some((67_125_248, Some(67_108_864))));
        let out = "qgroupid rfer excl max_rfer\n-------- ---- ---- --------\n0/258 16384 16384 none\n";
        assert_eq!(parse_qgroup_show(out), Some((16384, None)));
        assert_eq!(parse_qgroup_show("nothing here"), None);
    }

    #[test]
    fn not_btrfs_here() {
        let d = tempfile::tempdir().unwrap();
        if is_btrfs(d.path()).unwrap() {
            eprintln!("skipped: the temp dir is on btrfs");
            return;
        }
        assert!(!is_subvolume(d.path()));
        let e = set_limit(d.path(), Some(1 << 20)).unwrap_err().to_string();
        assert!(e.contains("not a btrfs subvolume"), "{e}");
        let e = create_subvolume(&d.path().join("x")).unwrap_err().to_string();
        assert!(e.contains("not on btrfs"), "{e}");
    }
}
