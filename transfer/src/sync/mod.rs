//! ferry's file sync: the source walks its tree, the destination answers with a summary of
//! what it has, and the source sends only what differs — whole files, rsync deltas
//! (fast_rsync) for large changed files, metadata-only changes, deletions, links, special files,
//! holes skipped — each file checked by blake3 on arrival. Both trees are read and written
//! through `ferry_tree`: relative to directory fds, never following what the tree holds. A pass can be repeated as often as
//! wanted; each compares against the destination's actual state.
//!
//! The same code serves migrations (over an ssh [`Connection`](crate::proto::Connection)) and
//! local copies such as snapshots ([`sync_local`], over an in-process pipe, with `link_dest`).

mod dest;
mod digest;
pub mod fsops;
mod iterate;
mod local;
mod plan;
pub mod scan;
mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dest::{receive_pass, ReceiveStats};
pub use iterate::{sync_iterative, IterationPolicy};
pub use local::{sync_local, sync_local_blocking, LocalSyncOptions};
pub use source::{sync_pass, sync_pass_from, Baseline, SentCopies, SentCopy};

/// Files at least this large that changed on a destination already holding a copy are sent as
/// rsync deltas; smaller ones whole.
pub const DEFAULT_DELTA_MIN: u64 = 16 << 10;
/// Files larger than this are always sent whole (the delta works in memory).
pub const DEFAULT_DELTA_MAX: u64 = 512 << 20;

/// Progress of one pass, reported as data moves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub pass: u32,
    /// File bytes processed so far / to process in this pass (sizes of the files being sent).
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// A progress hook (the CLI draws bars from it; the library never prints).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Source-side options for one pass.
#[derive(Clone)]
pub struct SyncOptions {
    /// 1 for the first pass, then 2, 3, ...
    pub pass: u32,
    /// The container whose private area the destination should receive into (empty: the
    /// receiver's configured root).
    pub ctid: String,
    /// Copy extended attributes.
    pub xattrs: bool,
    pub delta_min: u64,
    pub delta_max: u64,
    pub progress: Option<ProgressFn>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { pass: 1, ctid: String::new(), xattrs: true, delta_min: DEFAULT_DELTA_MIN, delta_max: DEFAULT_DELTA_MAX, progress: None }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("pass", &self.pass)
            .field("ctid", &self.ctid)
            .field("xattrs", &self.xattrs)
            .field("delta_min", &self.delta_min)
            .field("delta_max", &self.delta_max)
            .finish()
    }
}

/// Destination-side options.
#[derive(Clone, Debug, Default)]
pub struct ReceiveOptions {
    /// Like rsync --link-dest: a regular file missing from the root but identical (size, mtime,
    /// owner, mode, xattrs) in this tree is hardlinked from it instead of transferred.
    pub link_dest: Option<PathBuf>,
    /// Flush the destination filesystem (syncfs) at the end of each pass.
    pub fsync: bool,
}

/// What one pass did, as the source saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    pub pass: u32,
    /// Files whose contents were transferred (whole or delta).
    pub files_sent: u64,
    /// Of those, sent as rsync deltas.
    pub delta_files: u64,
    /// Of the deltas, files that had only grown since they were sent, sent as their tail.
    pub append_files: u64,
    /// Bytes on the connection in both directions during the pass (headers included).
    pub bytes_on_wire: u64,
    /// File payload bytes sent (data extents or deltas).
    pub bytes_data: u64,
    pub entries_scanned: u64,
    /// Entries whose metadata only was updated (including directories).
    pub meta_updates: u64,
    /// Entries created as links (hardlinks within the tree, or from link_dest).
    pub links: u64,
    /// Other entries created (directories, symlinks, device nodes, fifos).
    pub created: u64,
    pub deleted: u64,
    /// The destination walked its tree and sent its summary (false: the pass worked from the
    /// previous pass's baseline, see [`sync_pass_from`]).
    pub destination_walked: bool,
    pub duration: Duration,
}

impl PassStats {
    /// Number of changes the pass sent: iterative migration stops when this stops shrinking.
    pub fn changes(&self) -> u64 {
        self.files_sent + self.meta_updates + self.links + self.created + self.deleted
    }
}
