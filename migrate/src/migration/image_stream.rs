//! Moving a checkpoint image over the connection: the source writes ferry's image format
//! straight into the data stream through a pipe (no temporary image file; compression on a
//! thread overlaps with the transfer), the destination stores what arrives and checks it.

use crate::error::{Error, Result};
use crate::proto::{self, Connection};
use ferry_runtime::container::CheckpointMeta;
use ferry_runtime::ContainerConfig;
use std::path::Path;

/// Send the CRIU images in `dir` as one ferry image; returns the image's size in bytes.
pub async fn send_image(conn: &Connection, dir: &Path, cfg: &ContainerConfig, level: i32) -> Result<u64> {
    let meta = CheckpointMeta::load(dir)?
        .ok_or_else(|| Error::Migration(format!("{} holds no ferry checkpoint of {}", dir.display(), cfg.ctid)))?;
    let (tx, rx) = tokio::net::unix::pipe::pipe().map_err(|e| Error::io("create a pipe for", dir, e))?;
    let tx = tx.into_blocking_fd().map_err(|e| Error::io("create a pipe for", dir, e))?;
    let (cfg2, dir2) = (cfg.clone(), dir.to_path_buf());
    let writer = std::thread::spawn(move || {
        let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::from(tx));
        crate::checkpoint::write_image_to(&cfg2, &meta, &dir2, out, Some(level), &mut |_| {})
            .and_then(|mut w| std::io::Write::flush(&mut w).map_err(|e| crate::checkpoint::Error::from(ferry_runtime::Error::io("write image", &dir2, e))))
            .map_err(|e| e.to_string())
    });
    let sent = proto::send_image(conn, cfg.ctid.as_str(), rx, 0, if level > 0 { "zstd" } else { "" }, |_| {}).await;
    let written = writer.join().map_err(|_| Error::Migration("the image writer panicked".into()))?;
    match (sent, written) {
        (Ok(n), Ok(_)) => Ok(n),
        (_, Err(e)) => Err(Error::Migration(format!("writing the image of {}: {e}", cfg.ctid))),
        (Err(e), Ok(_)) => Err(e),
    }
}
