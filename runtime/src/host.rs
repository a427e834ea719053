//! Where a host keeps things: the data directory (configs, private areas, roots, dumps,
//! snapshots), the run directory (state, locks, logs of running containers), the cgroup
//! parent, and which cgroup layout its containers use. All are configurable so that several
//! simulated hosts can share one machine.

use crate::cgroups::{Cgroup, CgroupLayout, CgroupModeSetting};
use crate::ctid::Ctid;
use crate::error::Result;
use crate::userns::id_pool::IdPoolSetting;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferry";
pub const DEFAULT_RUN_DIR: &str = "/run/ferry";
pub const DEFAULT_CGROUP_PARENT: &str = "ferry";

/// The data dir's subdirectories, each closed to other host users.
pub const PRIVATE_SUBDIRS: [&str; 8] = ["conf", "private", "root", "images", "dump", "snapshots", "logs", "locks"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    /// A relative cgroup path (e.g. `ferry` or `hostA/ferry`) under each hierarchy's root.
    pub cgroup_parent: String,
    /// Which cgroup layout new containers get (`FERRY_CGROUP_MODE`): every cgroup of this
    /// host is found through [`Host::cgroup_layout`], so this field is the one place the
    /// choice is read. A running container keeps the layout it started with (its state).
    pub cgroup_mode: CgroupModeSetting,
    /// Where unprivileged containers' ID ranges come from (`userns_pool`).
    pub userns_pool: IdPoolSetting,
}

impl Default for Host {
    fn default() -> Self {
        Host::new(DEFAULT_DATA_DIR, DEFAULT_RUN_DIR, DEFAULT_CGROUP_PARENT)
    }
}

impl Host {
    /// A host with the automatic cgroup layout ([`Host::with_cgroup_mode`] to choose one).
    pub fn new(data_dir: impl Into<PathBuf>, run_dir: impl Into<PathBuf>, cgroup_parent: impl Into<String>) -> Self {
        Host {
            data_dir: data_dir.into(),
            run_dir: run_dir.into(),
            cgroup_parent: cgroup_parent.into(),
            cgroup_mode: CgroupModeSetting::Auto,
            userns_pool: IdPoolSetting::Auto,
        }
    }

    pub fn with_cgroup_mode(self, cgroup_mode: CgroupModeSetting) -> Self {
        Host { cgroup_mode, ..self }
    }

    pub fn with_userns_pool(self, userns_pool: IdPoolSetting) -> Self {
        Host { userns_pool, ..self }
    }

    /// The cgroup layout this host's containers get: [`Host::cgroup_mode`] resolved against
    /// what the kernel mounts.
    pub fn cgroup_layout(&self) -> Result<CgroupLayout> {
        crate::cgroups::host_layout(self.cgroup_mode)
    }

    /// The cgroup of container `ct` in this host's layout (for a running container, its state's
    /// cgroup is the one it runs in: [`crate::state::State::cgroup`]).
    pub fn cgroup(&self, ct: &Ctid) -> Result<Cgroup> {
        Ok(Cgroup::in_layout(&self.cgroup_layout()?, self.cgroup_path(ct)))
    }

    /// `<data>/conf/<CTID>.toml`: the container's configuration.
    pub fn config_path(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("conf").join(format!("{ct}.toml"))
    }
    pub fn conf_dir(&self) -> PathBuf {
        self.data_dir.join("conf")
    }
    /// `<data>/migrating`: configs of containers a migration is bringing here (not yet
    /// installed).
    pub fn incoming_dir(&self) -> PathBuf {
        self.data_dir.join("migrating")
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
    /// `<data>/images/<CTID>.mnt`: where an unprivileged container's disk image is mounted with
    /// its owners as on disk (its root is an idmapped copy of that mount).
    pub fn image_files_dir(&self, ct: &Ctid) -> PathBuf {
        self.data_dir.join("images").join(format!("{ct}.mnt"))
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

    /// Close the host's directories to other host users: the data dir and everything under it
    /// that holds container files, images or memory, and the run dir, are 0700 (created so,
    /// or tightened when an older ferry left them open). Called whenever a container's lock
    /// is taken.
    pub fn secure_layout(&self) -> crate::Result<()> {
        if !self.data_dir.exists() {
            crate::util::private_dir(&self.data_dir)?;
        }
        for sub in PRIVATE_SUBDIRS {
            crate::util::private_dir(&self.data_dir.join(sub))?;
        }
        crate::util::private_dir(&self.run_dir)
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
        assert_eq!(h.cgroup_mode, CgroupModeSetting::Auto);
        assert_eq!(h.with_cgroup_mode(CgroupModeSetting::V2).cgroup_mode, CgroupModeSetting::V2);
    }
}
