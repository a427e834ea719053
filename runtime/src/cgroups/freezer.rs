//! The freezer: one implementation for both layouts, used by checkpoint, migration, snapshots
//! and `kill_all`. v1 writes `freezer.state` (THAWED → FREEZING → FROZEN) and polls it; v2 writes
//! `cgroup.freeze` and waits for `frozen 1` in `cgroup.events`, woken by the kernel's change
//! notification on that file.
//!
//! What the kernel does (checked on the unified hierarchy of a hybrid 6.18 host):
//! - v2: an empty cgroup reports `frozen 1` as soon as `cgroup.freeze` is 1; a child cgroup of
//!   a frozen one reports `frozen 1` while its own `cgroup.freeze` still reads 0, and a cgroup
//!   made under a frozen parent starts frozen. A frozen task shows as sleeping (S), and
//!   SIGKILL still kills it (fatal signals pass a v2 freezer).
//! - v1: SIGKILL to a frozen task stays pending until the cgroup is thawed.

use super::fs::{CgroupFs, RealFs};
use super::{parse_keyed, CgroupMode};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a freeze may take before it is undone and reported.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// The freezer of one cgroup directory (v1: in the freezer hierarchy; v2: the cgroup itself).
#[derive(Debug, Clone)]
pub struct Freezer {
    fs: Arc<dyn CgroupFs>,
    dir: PathBuf,
    mode: CgroupMode,
}

impl Freezer {
    pub fn new(fs: Arc<dyn CgroupFs>, dir: impl Into<PathBuf>, mode: CgroupMode) -> Freezer {
        Freezer { fs, dir: dir.into(), mode }
    }

    /// The freezer of a cgroup directory on this host's cgroupfs, whichever layout it has:
    /// v1 when it holds `freezer.state`, v2 when it holds `cgroup.freeze`.
    pub fn at(dir: impl Into<PathBuf>) -> Result<Freezer> {
        let dir = dir.into();
        let mode = if dir.join("freezer.state").exists() {
            CgroupMode::V1
        } else if dir.join("cgroup.freeze").exists() {
            CgroupMode::V2
        } else {
            return Err(Error::Cgroup(format!(
                "{} is no freezer: it has neither freezer.state (v1) nor cgroup.freeze (v2; not on the root cgroup)",
                dir.display()
            )));
        };
        Ok(Freezer::new(Arc::new(RealFs), dir, mode))
    }

    /// The directory, as CRIU's `freeze_cgroup` option takes it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    fn read(&self, file: &str) -> Result<String> {
        let p = self.dir.join(file);
        self.fs.read(&p).map(|s| s.trim().to_string()).map_err(|e| Error::Cgroup(format!("read {}: {e}", p.display())))
    }

    fn write(&self, file: &str, v: &str) -> Result<()> {
        let p = self.dir.join(file);
        self.fs.write(&p, v).map_err(|e| Error::Cgroup(format!("write {v:?} to {}: {e}", p.display())))
    }

    fn request(&self, frozen: bool) -> Result<()> {
        match self.mode {
            CgroupMode::V1 => self.write("freezer.state", if frozen { "FROZEN" } else { "THAWED" }),
            CgroupMode::V2 => self.write("cgroup.freeze", if frozen { "1" } else { "0" }),
        }
    }

    /// Every task of the cgroup (and its descendants) is frozen now.
    pub fn is_frozen(&self) -> Result<bool> {
        match self.mode {
            CgroupMode::V1 => Ok(self.read("freezer.state")? == "FROZEN"),
            CgroupMode::V2 => Ok(parse_keyed(&self.read("cgroup.events")?, "frozen") == Some(1)),
        }
    }

    /// A freeze was asked of this cgroup and not undone (frozen, or still freezing).
    pub fn is_requested(&self) -> Result<bool> {
        match self.mode {
            CgroupMode::V1 => Ok(self.read("freezer.state")? != "THAWED"),
            CgroupMode::V2 => Ok(self.read("cgroup.freeze")? == "1"),
        }
    }

    /// Freeze and wait until the kernel says every task is frozen; thaws again and fails when
    /// that takes longer than [`FREEZE_TIMEOUT`].
    pub fn freeze(&self) -> Result<()> {
        self.freeze_within(FREEZE_TIMEOUT)
    }

    pub fn freeze_within(&self, timeout: Duration) -> Result<()> {
        self.request(true)?;
        let events = self.dir.join(match self.mode {
            CgroupMode::V1 => "freezer.state",
            CgroupMode::V2 => "cgroup.events",
        });
        let mut failure = None;
        let done = self.fs.wait_until(&events, timeout, &mut || {
            if self.mode == CgroupMode::V1 {
                // v1 freezes the tasks present at the write; tasks forked since need another.
                let _ = self.request(true);
            }
            match self.is_frozen() {
                Ok(f) => f,
                Err(e) => {
                    failure = Some(e);
                    true
                }
            }
        });
        if let Some(e) = failure {
            let _ = self.request(false);
            return Err(e);
        }
        if !done {
            let _ = self.request(false);
            return Err(Error::Cgroup(format!(
                "{}: processes did not freeze within {:?}; thawed again (a task in uninterruptible sleep?)",
                self.dir.display(),
                timeout
            )));
        }
        Ok(())
    }

    pub fn thaw(&self) -> Result<()> {
        self.request(false)
    }
}

/// Freezes on creation, thaws on drop unless [`FrozenGuard::keep_frozen`] was called (the dump
/// succeeded and the processes are gone).
#[derive(Debug)]
pub struct FrozenGuard {
    freezer: Freezer,
    armed: bool,
}

impl FrozenGuard {
    pub fn freeze(freezer: Freezer) -> Result<Self> {
        freezer.freeze()?;
        Ok(FrozenGuard { freezer, armed: true })
    }

    pub fn freezer(&self) -> &Freezer {
        &self.freezer
    }

    /// Do not thaw on drop.
    pub fn keep_frozen(mut self) {
        self.armed = false;
    }
}

impl Drop for FrozenGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.freezer.thaw() {
                tracing::warn!("cannot thaw {}: {e}", self.freezer.dir.display());
            }
        }
    }
}
