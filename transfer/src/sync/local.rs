//! Syncing one local tree into another through the same protocol code, over an in-process
//! pipe: snapshots (with `link_dest`), same-host copies, the benchmark.

use std::path::{Path, PathBuf};

use super::{receive_pass, sync_pass, PassStats, ReceiveOptions, SyncOptions};
use crate::error::{Error, Result};
use crate::proto::{Body, Connection, ConnectionOptions};

#[derive(Clone, Debug, Default)]
pub struct LocalSyncOptions {
    pub sync: SyncOptions,
    pub receive: ReceiveOptions,
}

/// Sync `src` into `dst` (created if missing) in one pass. With `receive.link_dest` set to a
/// previous copy, unchanged files are hardlinked from it instead of copied.
pub async fn sync_local(src: &Path, dst: &Path, opts: &LocalSyncOptions) -> Result<PassStats> {
    let (a, b) = tokio::io::duplex(4 << 20);
    let dst: PathBuf = dst.to_path_buf();
    let receive = opts.receive.clone();
    let server = tokio::spawn(async move {
        let conn = Connection::server(b, ConnectionOptions::default()).await?;
        let begin = conn.recv().await?;
        if !matches!(begin.body, Some(Body::SyncBegin(_))) {
            return Err(Error::Protocol("expected SyncBegin".into()));
        }
        let stats = receive_pass(&conn, &begin, &dst, &receive).await;
        // Let the source read our last answer before the pipe closes.
        let _ = conn.recv().await;
        stats
    });
    let conn = Connection::client(a, ConnectionOptions::default()).await?;
    let result = sync_pass(&conn, src, &opts.sync).await;
    let _ = conn.close().await;
    let served = server.await.map_err(|source| Error::Task { what: "protocol error: receiver task failed".into(), source })?;
    match (result, served) {
        (Ok(stats), Ok(_)) => Ok(stats),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// [`sync_local`] for synchronous callers (it runs its own small tokio runtime).
pub fn sync_local_blocking(src: &Path, dst: &Path, opts: &LocalSyncOptions) -> Result<PassStats> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the sync runtime", "tokio", e))?;
    rt.block_on(sync_local(src, dst, opts))
}
