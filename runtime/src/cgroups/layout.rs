//! Which cgroup layout a host's containers use and where it is mounted: the admin's choice
//! (`FERRY_CGROUP_MODE` = `auto`, `v1` or `v2`) resolved against what the kernel mounts. On a
//! hybrid host (v1 hierarchies under /sys/fs/cgroup, a cgroup2 hierarchy beside them) `v2`
//! picks that cgroup2 mount, found in /proc/self/mountinfo rather than assumed.

use super::{CgroupMode, DEFAULT_CGROUP_ROOT};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The admin's choice of cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupModeSetting {
    /// v2 when /sys/fs/cgroup is a cgroup2 mount, else the v1 hierarchies there.
    #[default]
    Auto,
    V1,
    /// The cgroup2 hierarchy wherever it is mounted (also beside v1 ones on a hybrid host).
    V2,
}

impl CgroupModeSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupModeSetting::Auto => "auto",
            CgroupModeSetting::V1 => "v1",
            CgroupModeSetting::V2 => "v2",
        }
    }
}

impl std::fmt::Display for CgroupModeSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CgroupModeSetting {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(CgroupModeSetting::Auto),
            "v1" => Ok(CgroupModeSetting::V1),
            "v2" => Ok(CgroupModeSetting::V2),
            _ => Err(Error::Invalid(format!("invalid cgroup mode {s:?}: use auto, v1 or v2 (FERRY_CGROUP_MODE, --cgroup-mode)"))),
        }
    }
}

/// A resolved layout: the mode and the directory a [`super::Cgroup`] takes as its root (the
/// directory holding the v1 hierarchies, or the cgroup2 mount point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub root: PathBuf,
    /// What it was resolved from.
    pub setting: CgroupModeSetting,
}

impl std::fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
        };
        write!(f, "cgroup {mode} at {} (mode {})", self.root.display(), self.setting)
    }
}

/// v2 when `<root>/cgroup.controllers` exists (a pure v2 mount), v1 when the per-controller
/// hierarchies ferry needs are directories under `<root>`.
pub fn detect(root: &Path) -> Result<CgroupMode> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(CgroupMode::V2);
    }
    if has_v1_hierarchies(root) {
        return Ok(CgroupMode::V1);
    }
    Err(Error::Cgroup(format!(
        "no usable cgroup hierarchy under {}: expected cgroup v2 (cgroup.controllers) or v1 hierarchies memory, pids and freezer; mount cgroupfs there",
        root.display()
    )))
}

fn has_v1_hierarchies(root: &Path) -> bool {
    ["memory", "pids", "freezer"].iter().all(|c| root.join(c).join("cgroup.procs").is_file())
}

/// Mount points of cgroup2 filesystems that show the whole hierarchy (mount root `/`), in the
/// order /proc/self/mountinfo lists them.
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    crate::storage::probe::parse_mountinfo(mountinfo).into_iter().filter(|m| m.fstype == "cgroup2" && m.root == "/").map(|m| m.mount_point).collect()
}

/// Resolve `setting` on a host whose cgroupfs base is `base` (/sys/fs/cgroup) and whose mount
/// table is `mountinfo`.
pub fn resolve(setting: CgroupModeSetting, base: &Path, mountinfo: &str) -> Result<CgroupLayout> {
    match setting {
        CgroupModeSetting::Auto => Ok(CgroupLayout { mode: detect(base)?, root: base.to_path_buf(), setting }),
        CgroupModeSetting::V1 => {
            if has_v1_hierarchies(base) {
                Ok(CgroupLayout { mode: CgroupMode::V1, root: base.to_path_buf(), setting })
            } else {
                Err(Error::Cgroup(format!(
                    "cgroup mode v1 was asked for, but {} holds no cgroup v1 hierarchies (memory, pids, freezer): use cgroup mode v2 or auto \
                     (FERRY_CGROUP_MODE, --cgroup-mode)",
                    base.display()
                )))
            }
        }
        CgroupModeSetting::V2 => {
            let mounts = cgroup2_mounts(mountinfo);
            // A pure v2 host mounts it at the base itself; a hybrid one somewhere beside it.
            let root = mounts.iter().find(|m| m.as_path() == base).or_else(|| mounts.first()).cloned().ok_or_else(|| {
                Error::Cgroup(
                    "cgroup mode v2 was asked for, but no cgroup2 filesystem is mounted (none in /proc/self/mountinfo): mount one \
                     (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or use cgroup mode v1 or auto (FERRY_CGROUP_MODE, --cgroup-mode)"
                        .to_string(),
                )
            })?;
            Ok(CgroupLayout { mode: CgroupMode::V2, root, setting })
        }
    }
}

/// Resolve `setting` on this machine.
pub fn host_layout(setting: CgroupModeSetting) -> Result<CgroupLayout> {
    let mountinfo = match setting {
        CgroupModeSetting::V2 => std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?,
        _ => String::new(),
    };
    resolve(setting, Path::new(DEFAULT_CGROUP_ROOT), &mountinfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn settings_parse_and_print() {
        for (s, want) in [("auto", CgroupModeSetting::Auto), ("V2", CgroupModeSetting::V2), (" v1 ", CgroupModeSetting::V1)] {
            let got: CgroupModeSetting = s.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string().parse::<CgroupModeSetting>().unwrap(), want);
        }
        let e = "v3".parse::<CgroupModeSetting>().unwrap_err().to_string();
        assert!(e.contains("\"v3\"") && e.contains("auto, v1 or v2") && e.contains("FERRY_CGROUP_MODE"), "{e}");
    }

    #[test]
    fn cgroup2_mount_points_from_mountinfo() {
        assert_eq!(cgroup2_mounts(HYBRID), vec![PathBuf::from("/sys/fs/cgroup/unified")]);
        // Escaped spaces; a bind of a sub-cgroup (root not /) is not the hierarchy's top.
        let mi = "50 1 0:40 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n51 1 0:40 / /mnt/my\\040cg rw shared:5 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mounts(mi), vec![PathBuf::from("/mnt/my cg")]);
        assert!(cgroup2_mounts("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n").is_empty());
    }

    #[test]
    fn v2_on_a_hybrid_host_finds_the_unified_mount() {
        let l = resolve(CgroupModeSetting::V2, Path::new("/sys/fs/cgroup"), HYBRID).unwrap();
        assert_eq!((l.mode, l.root.as_path()), (CgroupMode::V2, Path::new("/sys/fs/cgroup/unified")));
        // On a pure v2 host the mount at the base wins over any other.
        let pure = "25 1 0:22 / /other rw - cgroup2 cgroup2 rw\n26 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(resolve(CgroupModeSetting::V2, Path::new("/sys/fs/cgroup"), pure).unwrap().root, PathBuf::from("/sys/fs/cgroup"));
        let e = resolve(CgroupModeSetting::V2, Path::new("/sys/fs/cgroup"), "").unwrap_err().to_string();
        assert!(e.contains("no cgroup2 filesystem is mounted") && e.contains("mount -t cgroup2"), "{e}");
    }

    #[test]
    fn v1_and_auto_look_at_the_base() {
        let d = tempfile::tempdir().unwrap();
        let e = resolve(CgroupModeSetting::V1, d.path(), HYBRID).unwrap_err().to_string();
        assert!(e.contains("no cgroup v1 hierarchies") && e.contains("v2 or auto"), "{e}");
        assert!(resolve(CgroupModeSetting::Auto, d.path(), HYBRID).unwrap_err().to_string().contains("no usable cgroup"));
        for c in ["memory", "pids", "freezer"] {
            std::fs::create_dir(d.path().join(c)).unwrap();
            std::fs::write(d.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        assert_eq!(resolve(CgroupModeSetting::V1, d.path(), "").unwrap().mode, CgroupMode::V1);
        assert_eq!(resolve(CgroupModeSetting::Auto, d.path(), "").unwrap().mode, CgroupMode::V1);
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let l = resolve(CgroupModeSetting::Auto, d.path(), "").unwrap();
        assert_eq!((l.mode, l.root.as_path()), (CgroupMode::V2, d.path()));
        assert!(l.to_string().contains("cgroup v2 at") && l.to_string().contains("mode auto"), "{l}");
    }

    #[test]
    fn a_cgroup_mode_typed_wrong_is_an_invalid_value() {
        assert_eq!("v3".parse::<CgroupModeSetting>().unwrap_err().class(), crate::exit::ErrorClass::InvalidValue);
    }
}
