//! A container left in the middle of an operation by a ferry process that died: a migration
//! (its journal says how far it got: `migration::recovery`) or a checkpoint (a freeze nobody
//! will thaw). Every command that takes a container's lock puts it right first, through
//! [`thaw_stale`]; commands that only look do it through [`recover_if_interrupted`]. What was
//! done comes back as [`Notice`]s for the caller to show.

use crate::error::{self, Error};
use crate::migration::hostops::{HostOps, RuntimeOps};
use crate::migration::recovery::{self, Recovered};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{Ctid, Host};

/// What putting a container right did, or why it could not.
#[derive(Debug)]
pub enum Notice {
    /// An interrupted migration was put right.
    Recovered(Recovered),
    /// An interrupted migration could not be put right.
    RecoveryFailed { ctid: Ctid, error: Error },
    /// The container had been left frozen (an interrupted checkpoint) and was thawed.
    Thawed { ctid: Ctid },
    /// Its freezer could not be read.
    FreezerUnreadable { ctid: Ctid, error: Error },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Recovered(r) => write!(f, "{r}"),
            Notice::RecoveryFailed { ctid, error } => write!(f, "container {ctid}: {}", error::chain(error)),
            Notice::Thawed { ctid } => write!(f, "container {ctid} was left frozen (an interrupted checkpoint?); thawed it"),
            Notice::FreezerUnreadable { ctid, error } => write!(f, "container {ctid}: cannot check its freezer: {error}"),
        }
    }
}

/// Put right what a dead operation left of the container the caller holds the lock of.
pub fn thaw_stale(host: &Host, lock: &ContainerLock) -> Vec<Notice> {
    thaw_stale_with(host, lock, RuntimeOps::shared().as_ref())
}

/// [`thaw_stale`] with the host operations given.
pub fn thaw_stale_with(host: &Host, lock: &ContainerLock, ops: &dyn HostOps) -> Vec<Notice> {
    let ctid = lock.ctid().clone();
    let mut notices = Vec::new();
    // An interrupted migration knows more (it may have dumped the container): ask it first.
    match recovery::recover_journal_with(host, lock, ops) {
        Ok(Some(r)) => notices.push(Notice::Recovered(r)),
        Ok(None) => {}
        Err(error) => notices.push(Notice::RecoveryFailed { ctid: ctid.clone(), error }),
    }
    match ops.thaw_if_frozen(host, lock) {
        Ok(true) => notices.push(Notice::Thawed { ctid }),
        Ok(false) => {}
        Err(error) => notices.push(Notice::FreezerUnreadable { ctid, error }),
    }
    notices
}

/// For commands that do not hold the lock (exec): put the container right only when no
/// operation holds the lock (a running checkpoint owns its freeze).
pub fn thaw_stale_unlocked(host: &Host, ct: &Ctid) -> Vec<Notice> {
    match ContainerLock::acquire(host, ct, "thaw") {
        Ok(lock) => thaw_stale(host, &lock),
        Err(_) => Vec::new(),
    }
}

/// For commands that only look (status, list): when a migration journal says a migration of
/// `ct` was interrupted, put it right first (a migration still running holds the lock and is
/// left alone), so they report the container as it really is.
pub fn recover_if_interrupted(host: &Host, ct: &Ctid) -> Vec<Notice> {
    if recovery::interrupted(host, ct) {
        thaw_stale_unlocked(host, ct)
    } else {
        Vec::new()
    }
}
