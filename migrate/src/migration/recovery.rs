//! Putting right what a migration whose source process died left behind, from its journal
//! (`journal`): per stage, the container is thawed, restored here from its dump, left as it
//! was, or (past the commit) removed here. The next command that takes the container's lock
//! does this first (`crate::stale`).

use super::hostops::{HostOps, RuntimeOps};
use super::journal::{Journal, Stage};
use crate::error::{Error, Result};
use ferry_runtime::container::CheckpointMeta;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Ctid, Host};

/// What recovering an interrupted migration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// It was frozen: thawed, it runs here.
    Thawed { ctid: Ctid, destination: String },
    /// It was dumped: restored here from the dump.
    RestoredFromDump { ctid: Ctid, destination: String },
    /// Its dump did not complete and it does not run: its files are intact, it needs a start.
    DumpIncomplete { ctid: Ctid, destination: String },
    /// The migration died before the freeze: the container was never touched.
    Untouched { ctid: Ctid, destination: String },
    /// The destination had committed: the container was removed here, as the migration owed.
    RemovedHere { ctid: Ctid, destination: String },
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovered::Thawed { ctid, destination } => {
                write!(f, "a migration of {ctid} to {destination} was interrupted while the container was frozen; it has been thawed and runs here")
            }
            Recovered::RestoredFromDump { ctid, destination } => {
                write!(f, "a migration of {ctid} to {destination} was interrupted after the dump; the container was restored here")
            }
            Recovered::DumpIncomplete { ctid, destination } => write!(
                f,
                "a migration of {ctid} to {destination} was interrupted during its dump, which did not complete; the container is not \
                 running here: start it with `ferry start {ctid}` (its files are intact)"
            ),
            Recovered::Untouched { ctid, destination } => {
                write!(f, "a migration of {ctid} to {destination} was interrupted before the freeze; the container was not touched")
            }
            Recovered::RemovedHere { ctid, destination } => write!(
                f,
                "a migration of {ctid} to {destination} completed but was interrupted before cleaning up here; it has now been removed here"
            ),
        }
    }
}

/// Whether a migration journal names the container (a migration runs or was interrupted).
pub fn interrupted(host: &Host, ct: &Ctid) -> bool {
    matches!(Journal::read(host, ct), Ok(Some(_)))
}

/// What a crashed migration of the container the caller holds the lock of left in the journal,
/// put right. None: no journal, or its migration still runs.
pub fn recover_journal(host: &Host, lock: &ContainerLock) -> Result<Option<Recovered>> {
    recover_journal_with(host, lock, RuntimeOps::shared().as_ref())
}

/// [`recover_journal`] with the host operations given.
pub fn recover_journal_with(host: &Host, lock: &ContainerLock, ops: &dyn HostOps) -> Result<Option<Recovered>> {
    let ct = lock.ctid();
    let Some(j) = Journal::read(host, ct)? else { return Ok(None) };
    // The caller holds the container's lock, which the migration held until it ended: it no
    // longer runs, whatever process now has its pid.
    // Whatever the stage: its addresses are reachable here again (a restore below sets the
    // container's own route).
    if let Ok(cfg) = ferry_runtime::container::load_config(host, ct) {
        ops.let_traffic_through(&cfg);
    }
    let destination = j.destination.clone();
    let done = match j.stage {
        Stage::Syncing | Stage::Frozen => {
            let thawed = ops.thaw_if_frozen(host, lock)?;
            let running = ops.is_running(host, ct);
            let dumped = j.image_dir.as_ref().is_some_and(|d| d.join("inventory.img").exists());
            if thawed {
                Journal::remove(host, ct);
                Recovered::Thawed { ctid: ct.clone(), destination }
            } else if j.stage == Stage::Frozen && !running && dumped {
                // Died while CRIU finished the dump: the processes are gone, the dump is whole.
                restore_from_dump(host, lock, ops, &j)?
            } else if j.stage == Stage::Frozen && !running {
                Journal::remove(host, ct);
                Recovered::DumpIncomplete { ctid: ct.clone(), destination }
            } else {
                Journal::remove(host, ct);
                if let Some(d) = &j.image_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                Recovered::Untouched { ctid: ct.clone(), destination }
            }
        }
        Stage::Dumped => restore_from_dump(host, lock, ops, &j)?,
        Stage::Committed => {
            // The container is the destination's now: it must never start here again. Finish
            // the cleanup the interrupted migration owed.
            let cfg = ferry_runtime::container::load_config(host, ct)?;
            ops.remove_source(host, lock, &cfg, j.remove_area).map_err(|e| Error::Recovery {
                ctid: ct.to_string(),
                what: format!("a migration of {ct} to {destination} completed, but removing it here failed; remove it with `ferry destroy {ct}`"),
                source: Box::new(e),
            })?;
            Journal::remove(host, ct);
            Recovered::RemovedHere { ctid: ct.clone(), destination }
        }
    };
    Ok(Some(done))
}

fn restore_from_dump(host: &Host, lock: &ContainerLock, ops: &dyn HostOps, j: &Journal) -> Result<Recovered> {
    let ct = lock.ctid();
    let dir = j.image_dir.clone().unwrap_or_default();
    let cfg: ContainerConfig = ferry_runtime::container::load_config(host, ct)?;
    // A migration under a new CTID had made the dump the destination's: make it ours again.
    if let Some(m) = CheckpointMeta::load(&dir)?.filter(|m| m.ctid != ct.as_str()) {
        m.retarget(&cfg)?.save(&dir)?;
    }
    ops.restore(host, lock, &cfg, &dir).map_err(|e| Error::Recovery {
        ctid: ct.to_string(),
        what: format!("a migration of {ct} was interrupted after its dump; restoring it here from {} failed", dir.display()),
        source: Box::new(e),
    })?;
    Journal::remove(host, ct);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Recovered::RestoredFromDump { ctid: ct.clone(), destination: j.destination.clone() })
}
