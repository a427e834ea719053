//! Repeating passes while the tree is in use, as a live migration does before it freezes.

use std::path::Path;

use super::{sync_pass, PassStats, SyncOptions};
use crate::error::Result;
use crate::proto::Connection;

/// When to stop the pre-freeze passes.
#[derive(Clone, Debug)]
pub struct IterationPolicy {
    /// At most this many passes (the first included); `--max-iterations`.
    pub max_passes: u32,
    /// Stop once a pass changed at most this many entries ...
    pub max_changes: u64,
    /// ... and sent at most this many file bytes.
    pub max_bytes: u64,
}

impl Default for IterationPolicy {
    fn default() -> Self {
        IterationPolicy { max_passes: 8, max_changes: 64, max_bytes: 8 << 20 }
    }
}

/// Run passes starting at `opts.pass` until the change set is small enough, stops shrinking,
/// or `max_passes` is reached. Returns the stats of every pass; the caller then freezes and
/// runs one final pass (with the next pass number).
pub async fn sync_iterative(conn: &Connection, src_dir: &Path, opts: &SyncOptions, policy: &IterationPolicy) -> Result<Vec<PassStats>> {
    let mut all: Vec<PassStats> = Vec::new();
    let mut o = opts.clone();
    for n in 0..policy.max_passes.max(1) {
        o.pass = opts.pass + n;
        let s = sync_pass(conn, src_dir, &o).await?;
        let small = s.changes() <= policy.max_changes && s.bytes_data <= policy.max_bytes;
        // "Stops shrinking": this pass changed as much as the one before it, or more.
        let stalled = all.last().is_some_and(|prev| s.changes() >= prev.changes());
        all.push(s);
        if small || stalled {
            break;
        }
    }
    Ok(all)
}
