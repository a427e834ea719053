//! The source's migration journal: `<run>/<CTID>/migration.json`, written at each stage, so that
//! if the ferry process doing a migration dies, the next command touching the container knows
//! what state it was left in and can put it back (thaw it, or restore it from the dump).

use ferry_runtime::error::{IoContext, Result};
use ferry_runtime::{util::write_atomic, Ctid, Host};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Files are being copied; the container runs untouched.
    Syncing,
    /// The container is frozen (freezer cgroup) and may be being dumped.
    Frozen,
    /// CRIU dumped it: its processes are gone from the source; the image is in `image_dir`.
    Dumped,
    /// The destination said it runs the container: the source must never restore it again.
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub stage: Stage,
    pub destination: String,
    pub pid: u32,
    pub image_dir: Option<PathBuf>,
    /// `--remove-area`: what the source's cleanup does once the destination committed.
    #[serde(default)]
    pub remove_area: bool,
}

fn path(host: &Host, ct: &Ctid) -> PathBuf {
    host.run_ct_dir(ct).join("migration.json")
}

impl Journal {
    pub fn write(&self, host: &Host, ct: &Ctid) -> Result<()> {
        write_atomic(&path(host, ct), &serde_json::to_vec_pretty(self).expect("journal serializes"))
    }

    pub fn read(host: &Host, ct: &Ctid) -> Result<Option<Journal>> {
        let p = path(host, ct);
        match std::fs::read(&p) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("read migration journal", p),
        }
    }

    pub fn remove(host: &Host, ct: &Ctid) {
        let _ = std::fs::remove_file(path(host, ct));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path().join("d"), d.path().join("r"), "t");
        let c = Ctid::new("101").unwrap();
        assert_eq!(Journal::read(&h, &c).unwrap(), None);
        let j = Journal { stage: Stage::Dumped, destination: "h2".into(), pid: 7, image_dir: Some("/x".into()), remove_area: true };
        j.write(&h, &c).unwrap();
        assert_eq!(Journal::read(&h, &c).unwrap(), Some(j));
        Journal::remove(&h, &c);
        assert_eq!(Journal::read(&h, &c).unwrap(), None);
    }
}
