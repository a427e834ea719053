//! The filesystem under a path, as the disk backends need to know it: its type (statfs), the
//! mount that holds it (mountinfo), whether it could hold project quotas, and how full a
//! private area is.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `f_type` of a btrfs filesystem (statfs).
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// `f_type` of an XFS filesystem (statfs).
pub const XFS_SUPER_MAGIC: i64 = 0x5846_5342;

/// Disk usage of a private area next to its limit, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DiskUsage {
    pub used: u64,
    pub limit: Option<u64>,
}

/// statfs `f_type` of the filesystem holding `path`.
pub fn fs_magic(path: &Path) -> Result<i64> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| Error::sys(format!("statfs {}", path.display()), e))?;
    Ok(st.filesystem_type().0 as i64)
}

/// One line of /proc/self/mountinfo, the fields ferry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The directory of its filesystem the mount shows (`/` for the whole filesystem).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (e.g. `rw,relatime,idmapped`).
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    /// Superblock options (e.g. `rw,prjquota`).
    pub super_opts: String,
}

/// Octal escapes (`\040` for space) as the kernel writes them in mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
        if f.len() < sep + 4 || sep < 6 {
            continue;
        }
        out.push(MountEntry {
            root: unescape(f[3]),
            mount_point: PathBuf::from(unescape(f[4])),
            mount_opts: f[5].to_string(),
            fstype: f[sep + 1].to_string(),
            source: unescape(f[sep + 2]),
            super_opts: f[sep + 3].to_string(),
        });
    }
    out
}

fn mountinfo() -> Result<Vec<MountEntry>> {
    let t = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&t))
}

/// The last (topmost) mount whose mount point is exactly `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(mountinfo()?.into_iter().rev().find(|m| m.mount_point == p))
}

/// The mount holding `path` (longest mount point prefix, topmost when stacked).
pub fn mount_of(path: &Path) -> Result<MountEntry> {
    let p = std::fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))?;
    let all = mountinfo()?;
    let mut best: Option<&MountEntry> = None;
    for m in all.iter() {
        if p.starts_with(&m.mount_point) && best.is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len()) {
            best = Some(m);
        }
    }
    best.cloned().ok_or_else(|| Error::NoMount(path.to_path_buf()))
}

/// Whether project quotas could hold a `diskspace` limit under `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectQuota {
    Supported,
    /// Why not, in words for the admin.
    Unsupported(String),
}

/// Detect project quota support for the filesystem under `path`: ext4 or XFS mounted with
/// `prjquota` (XFS also `pquota`/`pqnoenforce` show as `prjquota`). A kernel without
/// CONFIG_QFMT_V2 or XFS quota cannot mount such filesystems, so the mount option is enough.
pub fn project_quota_support(path: &Path) -> Result<ProjectQuota> {
    Ok(project_quota_for(&mount_of(path)?))
}

/// The decision of [`project_quota_support`] for one mount (pure).
pub fn project_quota_for(m: &MountEntry) -> ProjectQuota {
    let opts: Vec<&str> = m.super_opts.split(',').collect();
    let on = opts.iter().any(|o| matches!(*o, "prjquota" | "pquota" | "prjjquota"));
    match m.fstype.as_str() {
        "ext4" | "xfs" if on => ProjectQuota::Supported,
        "ext4" | "xfs" => ProjectQuota::Unsupported(format!(
            "{} ({}) is mounted without prjquota; project quotas need the filesystem made with project \
             quota support, mounted with -o prjquota, and a kernel with CONFIG_QFMT_V2 (ext4) or XFS quota",
            m.mount_point.display(),
            m.fstype
        )),
        other => ProjectQuota::Unsupported(format!("{} is {other}, which has no project quotas ferry can use", m.mount_point.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 22 0:40 / /mnt/pool rw shared:5 - btrfs /dev/loop3 rw,space_cache=v2,subvolid=5,subvol=/
31 22 7:4 / /data/with\\040space rw - xfs /dev/loop4 rw,attr2,inode64,prjquota
";

    #[test]
    fn mountinfo_parse() {
        let m = parse_mountinfo(MI);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].fstype, "btrfs");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[2].mount_point, PathBuf::from("/data/with space"));
        assert_eq!(project_quota_for(&m[2]), ProjectQuota::Supported);
        assert!(matches!(project_quota_for(&m[0]), ProjectQuota::Unsupported(s) if s.contains("prjquota")));
        assert!(matches!(project_quota_for(&m[1]), ProjectQuota::Unsupported(s) if s.contains("btrfs")));
    }

    #[test]
    fn the_root_filesystem_is_detected() {
        assert_ne!(fs_magic(Path::new("/")).unwrap(), 0);
        let m = mount_of(Path::new("/proc/self")).unwrap();
        assert_eq!(m.fstype, "proc");
        // This machine's / is ext4 without prjquota (PLATFORM.md): detection must say no.
        if mount_of(Path::new("/")).unwrap().fstype == "ext4" {
            assert!(matches!(project_quota_support(Path::new("/")).unwrap(), ProjectQuota::Unsupported(_)));
        }
    }
}
