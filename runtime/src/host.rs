//! Where a host keeps things: the data directory (configs, private areas, roots, dumps,
//! snapshots), the run directory (state, locks, logs of running containers) and the cgroup
//! parent. All three are configurable so that several simulated hosts can share one machine.

use crate::ctid::Ctid;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferry";
pub const DEFAULT_RUN_DIR: &str = "/run/ferry";
pub const DEFAULT_CGROUP_PARENT: &str = "ferry";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    /// A relative cgroup path (e.g. `ferry` or `hostA/ferry`) under each hierarchy's root.
    pub cgroup_parent: String,
}

impl Default for Host {
    fn default() -> Self {
        Host { data_dir: DEFAULT_DATA_DIR.into(), run_dir: DEFAULT_RUN_DIR.into(), cgroup_parent: DEFAULT_CGROUP_PARENT.into() }
    }
}

impl Host {
    pub fn new(data_dir: impl Into<PathBuf>, run_dir: impl Into<PathBuf>, cgroup_parent: impl Into<String>) -> Self {
        Host { data_dir: data_dir.into(), run_dir: run_dir.into(), cgroup_parent: cgroup_parent.into() }
    }

    /// `FERRY_DATA_DIR`, `FERRY_RUN_DIR`, `FERRY_CGROUP_PARENT`, else the defaults.
    pub fn from_env() -> Self {
        let d = Host::default();
        Host {
            data_dir: std::env::var_os("FERRY_DATA_DIR").map(PathBuf::from).unwrap_or(d.data_dir),
            run_dir: std::env::var_os("FERRY_RUN_DIR").map(PathBuf::from).unwrap_or(d.run_dir),
            cgroup_parent: std::env::var("FERRY_CGROUP_PARENT").unwrap_or(d.cgroup_parent),
        }
    }

    /// `<data>/conf/<CTID>.toml`: the container's configuration.
    pub fn config_path(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("conf").join(format!("{ct}.toml"))
    }
    pub fn conf_dir(&self) -> PathBuf {
        self.data_dir.join("conf")
    }
    /// `<data>/private/<CTID>`: the container's files.
    pub fn private_dir(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("private").join(ct.as_str())
    }
    /// `<data>/root/<CTID>`: where the private area is mounted while the container runs.
    pub fn root_dir(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("root").join(ct.as_str())
    }
    /// `<data>/images/<CTID>.img`: the disk image of the loop-device storage backend.
    pub fn disk_image(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("images").join(format!("{ct}.img"))
    }
    /// `<data>/dump/<CTID>`: default location of `suspend`/`checkpoint` images.
    pub fn dump_dir(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("dump").join(ct.as_str())
    }
    /// `<data>/dump/<CTID>/dump.img`: the image of `suspend` (and of `stop --all` in suspend
    /// mode), restored by `resume` (and `start --all`).
    pub fn suspend_image(&self, ct: &Ctid) -> PathBuf {
        self.dump_dir(ct).join("dump.img")
    }
    /// `<data>/boot/ran-at-shutdown`: the CTIDs that ran when the last `stop --all` began.
    pub fn ran_at_shutdown_path(&self) -> PathBuf {
        self.data_dir.join("boot").join("ran-at-shutdown")
    }
    /// `<data>/snapshots/<CTID>`: the snapshot store of one container.
    pub fn snapshot_dir(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("snapshots").join(ct.as_str())
    }
    /// `<run>/<CTID>`: state, lock and logs of a container on this host.
    pub fn run_ct_dir(&self, ct: &Ctid) -> PathBuf {
        self.run_dir.join(ct.as_str())
    }
    pub fn state_path(&self, ct: &Ctid) -> PathBuf {
        self.run_ct_dir(ct).join("state.json")
    }
    /// Lock files live in the data dir so they survive a reboot's empty /run between steps
    /// of a long operation, and are shared by every process touching the container's files.
    pub fn lock_path(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("locks").join(format!("{ct}.lock"))
    }
    /// `<data>/logs/<CTID>`: kept CRIU logs and the like, outside the run dir so they survive.
    pub fn log_dir(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("logs").join(ct.as_str())
    }

    /// The cgroup path (relative to a hierarchy root) of one container.
    pub fn cgroup_path(&self, ct: &Ctid) -> String {
        format!("{}/{}", self.cgroup_parent.trim_matches('/'), ct)
    }

    /// Every CTID that has a config on this host, sorted.
    pub fn list_ctids(&self) -> std::io::Result<Vec<Ctid>> {
        let mut out = Vec::new();
        let dir = self.conf_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for ent in rd {
            let ent = ent?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".toml") {
                if let Ok(c) = Ctid::new(stem) {
                    out.push(c);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn is_under_data_dir(&self, p: &Path) -> bool {
        p.starts_with(&self.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let h = Host::new("/d", "/r", "hA/ferry");
        let c = Ctid::new("101").unwrap();
        assert_eq!(h.config_path(&c), PathBuf::from("/d/conf/101.toml"));
        assert_eq!(h.private_dir(&c), PathBuf::from("/d/private/101"));
        assert_eq!(h.root_dir(&c), PathBuf::from("/d/root/101"));
        assert_eq!(h.state_path(&c), PathBuf::from("/r/101/state.json"));
        assert_eq!(h.cgroup_path(&c), "hA/ferry/101");
    }
}
