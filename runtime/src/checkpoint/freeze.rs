//! A minimal freezer on a cgroup directory (v1 `freezer.state` or v2 `cgroup.freeze`), for
//! callers and tests that freeze a tree before handing it to CRIU. The runtime's cgroup code
//! has the full freezer; this one needs only a path.

use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a freeze may take before it is undone and reported.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

fn is_v2(dir: &Path) -> bool {
    dir.join("cgroup.freeze").exists()
}

/// Whether the cgroup is frozen now.
pub fn is_frozen(dir: &Path) -> Result<bool> {
    if is_v2(dir) {
        let ev = dir.join("cgroup.events");
        let s = std::fs::read_to_string(&ev).ctx("read", &ev)?;
        Ok(s.lines().any(|l| l.trim() == "frozen 1"))
    } else {
        let p = dir.join("freezer.state");
        Ok(std::fs::read_to_string(&p).ctx("read", &p)?.trim() == "FROZEN")
    }
}

/// Freeze and wait until every task is frozen; thaws again if that does not happen in time.
pub fn freeze(dir: &Path) -> Result<()> {
    write_state(dir, true)?;
    let t0 = Instant::now();
    while !is_frozen(dir)? {
        if t0.elapsed() > FREEZE_TIMEOUT {
            let _ = write_state(dir, false);
            return Err(Error::Cgroup(format!(
                "{} did not freeze within {:?}; thawed again (a task in uninterruptible sleep?)",
                dir.display(),
                FREEZE_TIMEOUT
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

pub fn thaw(dir: &Path) -> Result<()> {
    write_state(dir, false)
}

fn write_state(dir: &Path, frozen: bool) -> Result<()> {
    let (file, val) = if is_v2(dir) {
        (dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
    } else {
        (dir.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" })
    };
    std::fs::write(&file, val).ctx("write", &file)
}

/// Freezes on creation, thaws on drop unless [`FrozenGuard::keep_frozen`] was called (the dump
/// succeeded and the processes are gone).
#[derive(Debug)]
pub struct FrozenGuard {
    dir: PathBuf,
    armed: bool,
}

impl FrozenGuard {
    pub fn freeze(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        freeze(&dir)?;
        Ok(FrozenGuard { dir, armed: true })
    }
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// Do not thaw on drop.
    pub fn keep_frozen(mut self) {
        self.armed = false;
    }
}

impl Drop for FrozenGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = thaw(&self.dir) {
                tracing::warn!("cannot thaw {}: {e}", self.dir.display());
            }
        }
    }
}
