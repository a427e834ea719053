//! The receiving side of a pass. Nothing is written outside the root: every path from the peer
//! is checked (relative, no `..`), and no directory on the way may be a symlink.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost::Message;

use super::fsops::{self, display, resolve};
use super::scan::{is_special, scan_dest};
use super::source::hash_zeros;
use super::ReceiveOptions;
use crate::error::{Error, IoContext, Result};
use crate::proto::{
    Body, Connection, Envelope, FileCommit, FileEntry, FileKind, Hardlink, PutFile, PutFiles, SignatureReply, SyncBeginAck, SyncEndAck,
};

/// What the destination did in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    pub pass: u32,
    pub files_written: u64,
    pub bytes_written: u64,
    pub deleted: u64,
}

/// At most this many per-file errors are reported back (the rest are counted).
const MAX_REPORTED_ERRORS: usize = 20;

/// Walk `root` and send its summary (the answer to a SyncBegin).
async fn send_summary(conn: &Connection, begin: &Envelope, root: &Path, opts: &ReceiveOptions, xattrs: bool) -> Result<()> {
    let root_buf = root.to_path_buf();
    let link_dest = opts.link_dest.clone();
    let summary = tokio::task::spawn_blocking(move || scan_dest(&root_buf, link_dest.as_deref(), xattrs))
        .await
        .map_err(|e| Error::sync(root.display().to_string(), format!("scan task failed: {e}")));
    let summary = match summary.and_then(|r| r) {
        Ok(s) => s,
        Err(e) => {
            conn.reply_error(begin.id, format!("destination cannot read {}: {e}", root.display())).await?;
            return Err(e);
        }
    };
    // Summaries of big trees repeat most of each entry: compressed they cost a fraction.
    let mut plain = Vec::with_capacity(summary.len() * 48);
    for e in &summary {
        e.encode_length_delimited(&mut plain).map_err(|e| Error::Protocol(format!("encoding summary: {e}")))?;
    }
    let packed = zstd::bulk::compress(&plain, 3).map_err(|e| Error::io("compressing the summary of", root, e))?;
    drop(plain);
    let mut stream = conn.open_stream();
    conn.reply(
        begin.id,
        Body::SyncBeginAck(SyncBeginAck {
            manifest_stream: stream.id(),
            entries: summary.len() as u64,
            compression: "zstd".into(),
            put_files: true,
            summary_skipped: false,
        }),
    )
    .await?;
    stream.send(&packed).await?;
    stream.finish().await?;
    drop(summary);
    Ok(())
}

/// Serve one pass into `root`, starting from the peer's `SyncBegin` (which the caller's
/// dispatcher received), until `SyncEnd`. Per-file failures are collected and returned to the
/// source in the SyncEnd answer (and as this function's error); a broken connection ends the
/// pass at once.
pub async fn receive_pass(conn: &Connection, begin: &Envelope, root: &Path, opts: &ReceiveOptions) -> Result<ReceiveStats> {
    let Some(Body::SyncBegin(b)) = &begin.body else {
        return Err(Error::Protocol("receive_pass needs a SyncBegin message".into()));
    };
    let xattrs = b.xattrs;
    if b.no_summary {
        // The source knows what this tree holds: it sends the changes without our summary.
        if !root.is_dir() {
            let e = Error::sync(root.display().to_string(), "the tree to update is missing");
            conn.reply_error(begin.id, format!("destination cannot read {}: {e}", root.display())).await?;
            return Err(e);
        }
        conn.reply(begin.id, Body::SyncBeginAck(SyncBeginAck { put_files: true, summary_skipped: true, ..Default::default() })).await?;
    } else {
        send_summary(conn, begin, root, opts, xattrs).await?;
    }

    let mut rx = Receiver {
        conn,
        root: root.to_path_buf(),
        opts,
        xattrs,
        verified: HashSet::new(),
        dir_meta: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
        stats: ReceiveStats { pass: b.pass, ..Default::default() },
        counter: 0,
        pid: std::process::id(),
    };
    loop {
        let env = conn.recv().await?;
        let Some(body) = env.body else {
            return Err(Error::Protocol("empty control message during sync".into()));
        };
        if let Body::SyncEnd(end) = body {
            tracing::debug!(pass = end.pass, scanned = end.entries_scanned, files = end.files_sent, bytes = end.bytes_data, "sync pass received");
            rx.finish();
            if rx.error_count > 0 {
                let mut msg = format!("{} entries failed on the destination: {}", rx.error_count, rx.errors.join("; "));
                if rx.error_count > rx.errors.len() {
                    msg.push_str("; ...");
                }
                conn.reply_error(env.id, msg.clone()).await?;
                return Err(Error::sync(root.display().to_string(), msg));
            }
            let s = &rx.stats;
            conn.reply(env.id, Body::SyncEndAck(SyncEndAck { files_written: s.files_written, bytes_written: s.bytes_written, deleted: s.deleted }))
                .await?;
            return Ok(rx.stats);
        }
        if let Body::Abort(a) = &body {
            return Err(Error::Remote(format!("the source aborted the sync: {}", a.reason)));
        }
        let res = rx.handle(env.id, body).await;
        if let Err(e) = res {
            if matches!(e, Error::PeerClosed(_) | Error::Timeout(_) | Error::Protocol(_)) {
                return Err(e);
            }
            rx.record(e);
        }
    }
}

struct Receiver<'a> {
    conn: &'a Connection,
    root: PathBuf,
    opts: &'a ReceiveOptions,
    xattrs: bool,
    /// Directories already checked to be real directories inside the root.
    verified: HashSet<PathBuf>,
    dir_meta: Vec<FileEntry>,
    errors: Vec<String>,
    error_count: usize,
    stats: ReceiveStats,
    counter: u64,
    pid: u32,
}

impl Receiver<'_> {
    fn record(&mut self, e: Error) {
        tracing::warn!("sync: {e}");
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(e.to_string());
        }
    }

    fn path(&mut self, rel: &[u8], allow_root: bool) -> Result<PathBuf> {
        resolve(&self.root, rel, allow_root, &mut self.verified)
    }

    fn temp(&mut self, target: &Path) -> PathBuf {
        self.counter += 1;
        fsops::temp_name(target, self.pid, self.counter)
    }

    /// Put `tmp` in place of `target`. A directory in the way is removed (rename cannot
    /// replace one with a non-directory). `fresh`: `tmp` is a new inode, so it cannot be
    /// another name of `target`.
    fn install(&mut self, tmp: &Path, target: &Path, fresh: bool) -> Result<()> {
        if let Err(e) = std::fs::rename(tmp, target) {
            let is_dir = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir());
            if !is_dir {
                let _ = std::fs::remove_file(tmp);
                return Err(Error::io("renaming into place", target, e));
            }
            std::fs::remove_dir_all(target).ctx("removing directory", target)?;
            self.verified.clear();
            std::fs::rename(tmp, target).ctx("renaming into place", target)?;
        }
        if !fresh {
            // Renaming over a name of the same inode does nothing: drop the temporary name then.
            let _ = std::fs::remove_file(tmp);
        }
        Ok(())
    }

    async fn handle(&mut self, id: u64, body: Body) -> Result<()> {
        match body {
            Body::Delete(d) => {
                let p = self.path(&d.path, false)?;
                if fsops::remove_any(&p).ctx("deleting", &p)? {
                    self.stats.deleted += 1;
                }
                self.verified.clear();
            }
            Body::Mkdir(e) => {
                let p = self.path(&e.path, true)?;
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fsops::remove_any(&p).ctx("replacing", &p)?;
                        std::fs::create_dir(&p).ctx("creating directory", &p)?;
                    }
                    Err(_) => std::fs::create_dir(&p).ctx("creating directory", &p)?,
                }
                // Owner and mode now (so contents land in a directory owned right); times last.
                fsops::lchown(&p, e.uid, e.gid).ctx("chown", &p)?;
            }
            Body::SetMeta(e) => {
                let p = self.path(&e.path, true)?;
                let md = std::fs::symlink_metadata(&p).ctx("reading", &p)?;
                if fsops::kind_of(&md) != e.kind() {
                    return Err(Error::sync(display(&e.path), "metadata for an entry of another type"));
                }
                if e.kind() == FileKind::Directory {
                    self.dir_meta.push(e);
                } else if e.kind() == FileKind::Regular && self.opts.link_dest.is_some() && {
                    use std::os::unix::fs::MetadataExt;
                    md.nlink() > 1
                } {
                    // Possibly shared with the link-dest tree: change a private copy.
                    let tmp = self.temp(&p);
                    std::fs::copy(&p, &tmp).ctx("copying", &p)?;
                    fsops::apply_meta(&tmp, &e, self.xattrs).ctx("setting metadata", &tmp)?;
                    self.install(&tmp, &p, true)?;
                } else {
                    fsops::apply_meta(&p, &e, self.xattrs).ctx("setting metadata", &p)?;
                }
            }
            Body::Symlink(e) => {
                let p = self.path(&e.path, false)?;
                let tmp = self.temp(&p);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes_ext(&e.symlink_target), &tmp).ctx("creating symlink", &tmp)?;
                self.finish_new(&tmp, &p, &e)?;
            }
            Body::Mknod(e) => {
                if !is_special(e.kind()) {
                    return Err(Error::sync(display(&e.path), "Mknod for a file that is not special"));
                }
                let p = self.path(&e.path, false)?;
                let tmp = self.temp(&p);
                fsops::mknod(&tmp, e.kind(), e.mode, e.rdev).ctx("mknod", &tmp)?;
                self.finish_new(&tmp, &p, &e)?;
            }
            Body::Hardlink(Hardlink { path, target }) => {
                let p = self.path(&path, false)?;
                let t = self.path(&target, false)?;
                let tmp = self.temp(&p);
                std::fs::hard_link(&t, &tmp).ctx("linking", &p)?;
                self.install(&tmp, &p, false)?;
            }
            Body::LinkFrom(e) => {
                let p = self.path(&e.path, false)?;
                let Some(ld) = self.opts.link_dest.clone() else {
                    return Err(Error::sync(display(&e.path), "LinkFrom without a link-dest tree"));
                };
                let mut seen = HashSet::new();
                let from = resolve(&ld, &e.path, false, &mut seen)?;
                let tmp = self.temp(&p);
                std::fs::hard_link(&from, &tmp).ctx("linking from the previous tree", &from)?;
                self.install(&tmp, &p, false)?;
            }
            Body::PutFile(pf) => self.put_file(pf).await?,
            Body::PutFiles(batch) => self.put_files(batch)?,
            Body::GetSignature(g) => {
                let signature = self.signature(&g.path, g.block_size).unwrap_or_default();
                self.conn.reply(id, Body::SignatureReply(SignatureReply { signature })).await?;
            }
            other => {
                return Err(Error::Protocol(format!("unexpected {} during a sync pass", other.name())));
            }
        }
        Ok(())
    }

    /// Metadata on a freshly made temporary entry (a new inode has no xattrs to remove, so
    /// the xattr step runs only when there are some to set), then into place.
    fn finish_new(&mut self, tmp: &Path, target: &Path, e: &FileEntry) -> Result<()> {
        if let Err(err) = fsops::apply_meta(tmp, e, self.xattrs && !e.xattrs.is_empty()) {
            let _ = std::fs::remove_file(tmp);
            return Err(Error::io("setting metadata", tmp, err));
        }
        self.install(tmp, target, true)
    }

    fn signature(&mut self, rel: &[u8], block_size: u32) -> Option<Vec<u8>> {
        let p = self.path(rel, false).ok()?;
        let md = std::fs::symlink_metadata(&p).ok()?;
        // Deltas work in memory: refuse to load more than a source may delta.
        if !md.is_file() || md.len() > super::DEFAULT_DELTA_MAX || !(64..=1 << 20).contains(&block_size) {
            return None;
        }
        let data = std::fs::read(&p).ok()?;
        let sig = fast_rsync::Signature::calculate(&data, fast_rsync::SignatureOptions { block_size, crypto_hash_size: 8 });
        Some(sig.into_serialized())
    }

    async fn put_file(&mut self, mut pf: PutFile) -> Result<()> {
        let entry = pf.entry.take().ok_or_else(|| Error::Protocol("PutFile without an entry".into()))?;
        // A delta may come inside the message, with the file's digest (no stream, no commit).
        let inline = pf.delta && pf.stream == 0;
        let mut rx = if inline { None } else { Some(self.conn.accept_stream(pf.stream)?) };
        let name = display(&entry.path);
        // Local failures are remembered, not returned at once: the stream and the FileCommit
        // that follow must still be consumed to stay in step with the source.
        let mut failure: Option<Error> = None;
        let mut hasher = blake3::Hasher::new();
        let mut target = None;
        let mut tmp = None;
        let mut file = None;
        match self.path(&entry.path, false) {
            Ok(p) => {
                let t = self.temp(&p);
                match std::fs::OpenOptions::new().write(true).create_new(true).open(&t) {
                    Ok(f) => {
                        file = Some(f);
                        tmp = Some(t);
                    }
                    Err(e) => failure = Some(Error::io("creating", &t, e)),
                }
                target = Some(p);
            }
            Err(e) => failure = Some(e),
        }
        let mut written = 0u64;
        // The destination's copy and its old length, when an append delta grew it in place
        // (no temporary file then).
        let mut in_place: Option<(PathBuf, u64)> = None;
        if pf.delta && entry.size > super::DEFAULT_DELTA_MAX {
            return Err(Error::Protocol(format!("{name}: a delta for {} bytes is more than the destination accepts", entry.size)));
        }
        let delta_limit = (entry.size as usize).saturating_mul(2).saturating_add(1 << 20);
        if pf.delta {
            let delta = match rx.as_mut() {
                None if pf.data.len() > delta_limit => {
                    return Err(Error::Protocol(format!("{name}: an inline delta of {} bytes for a file of {}", pf.data.len(), entry.size)))
                }
                None => std::mem::take(&mut pf.data),
                Some(rx) => match rx.read_to_end(delta_limit).await {
                    Ok(d) => d,
                    Err(e @ Error::Remote(_)) => {
                        failure.get_or_insert(Error::sync(name.clone(), e.to_string()));
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                },
            };
            let appended = match (&failure, &target, parse_append_delta(&delta)) {
                (None, Some(t), Some((old_len, tail))) => append_in_place(t, old_len, tail, &mut hasher),
                _ => None,
            };
            if let Some(res) = appended {
                match res {
                    Ok(old_len) => {
                        written = entry.size;
                        in_place = target.clone().map(|t| (t, old_len));
                    }
                    Err(e) => failure = Some(e),
                }
            } else if let (None, Some(t), Some(f)) = (&failure, &target, &file) {
                match std::fs::read(t) {
                    Ok(base) => {
                        let mut out = Vec::with_capacity(entry.size as usize);
                        match fast_rsync::apply_limited(&base, &delta, &mut out, entry.size as usize) {
                            Ok(()) => {
                                hasher.update(&out);
                                written = out.len() as u64;
                                if let Err(e) = f.write_all_at(&out, 0) {
                                    failure = Some(Error::io("writing", t, e));
                                }
                            }
                            Err(e) => failure = Some(Error::sync(name.clone(), format!("applying the delta: {e}"))),
                        }
                    }
                    Err(e) => failure = Some(Error::io("reading the old copy of", t, e)),
                }
            }
        } else {
            let extents = check_extents(&pf.extents, entry.size).map_err(|m| Error::sync(name.clone(), m));
            let extents = match extents {
                Ok(x) => x,
                Err(e) => {
                    failure.get_or_insert(e);
                    Vec::new()
                }
            };
            if let (None, Some(f)) = (&failure, &file) {
                if let Err(e) = f.set_len(entry.size) {
                    failure = Some(Error::io("sizing", tmp.as_deref().unwrap_or(Path::new("?")), e));
                }
            }
            let Some(rx) = rx.as_mut() else {
                return Err(Error::Protocol(format!("{name}: PutFile without a stream")));
            };
            let mut ext = extents.into_iter();
            let mut cur: Option<(u64, u64)> = None; // (offset of next byte, bytes left in extent)
            let mut hashed_to = 0u64;
            loop {
                let chunk = match rx.recv().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    // The source gave up on this file (it says why); its FileCommit still follows.
                    Err(e @ Error::Remote(_)) => {
                        failure.get_or_insert(Error::sync(name.clone(), e.to_string()));
                        break;
                    }
                    Err(e) => return Err(e),
                };
                if failure.is_some() {
                    continue;
                }
                let mut data = &chunk[..];
                while !data.is_empty() {
                    if cur.is_none_or(|c| c.1 == 0) {
                        match ext.next() {
                            Some((off, len)) => {
                                hash_zeros(&mut hasher, off - hashed_to);
                                hashed_to = off;
                                cur = Some((off, len));
                            }
                            None => {
                                failure = Some(Error::sync(name.clone(), "more data than the announced extents"));
                                break;
                            }
                        }
                    }
                    let (off, left) = cur.unwrap_or((0, 0));
                    let n = (left as usize).min(data.len());
                    if let Some(f) = &file {
                        if let Err(e) = f.write_all_at(&data[..n], off) {
                            failure = Some(Error::io("writing", tmp.as_deref().unwrap_or(Path::new("?")), e));
                            break;
                        }
                    }
                    hasher.update(&data[..n]);
                    hashed_to = off + n as u64;
                    written += n as u64;
                    cur = Some((off + n as u64, left - n as u64));
                    data = &data[n..];
                }
            }
            if failure.is_none() && (ext.next().is_some() || cur.is_some_and(|c| c.1 != 0)) {
                failure = Some(Error::sync(name.clone(), "the stream ended before all announced data arrived"));
            }
            hash_zeros(&mut hasher, entry.size.saturating_sub(hashed_to));
        }
        let commit = if inline {
            FileCommit { path: entry.path.clone(), blake3: pf.blake3 }
        } else {
            // The source always follows a PutFile's stream with its FileCommit.
            let commit = self.conn.recv().await?;
            let Some(Body::FileCommit(commit)) = commit.body else {
                return Err(Error::Protocol(format!(
                    "expected FileCommit for {name}, got {}",
                    commit.body.as_ref().map(Body::name).unwrap_or("nothing")
                )));
            };
            if commit.path != entry.path {
                return Err(Error::Protocol(format!("FileCommit for {} while receiving {name}", display(&commit.path))));
            }
            commit
        };
        let cleanup = |tmp: &Option<PathBuf>| {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
        };
        if let Some((grown, old_len)) = in_place {
            cleanup(&tmp);
            return self.finish_in_place(&grown, old_len, &entry, &commit, hasher.finalize(), written);
        }
        if let Some(f) = failure {
            cleanup(&tmp);
            return Err(f);
        }
        if commit.blake3.is_empty() {
            cleanup(&tmp);
            return Err(Error::sync(name, "the source could not read the file (see its error)"));
        }
        if commit.blake3 != hasher.finalize().as_bytes() {
            cleanup(&tmp);
            return Err(Error::sync(
                name,
                "blake3 digest mismatch: the data received differs from the source's file (corrupted in transit); the old copy is kept",
            ));
        }
        let (Some(tmp), Some(target), Some(file)) = (tmp, target, file) else {
            return Err(Error::sync(name, "no temporary file"));
        };
        self.finish_file(file, &tmp, &target, &entry)?;
        self.stats.files_written += 1;
        self.stats.bytes_written += written;
        Ok(())
    }

    /// A file grown in place by an append delta: kept when its digest is the source's (then
    /// its metadata is set), else cut back to what it held before.
    fn finish_in_place(
        &mut self,
        path: &Path,
        old_len: u64,
        entry: &FileEntry,
        commit: &FileCommit,
        digest: blake3::Hash,
        written: u64,
    ) -> Result<()> {
        let name = display(&entry.path);
        if commit.blake3.is_empty() || commit.blake3 != digest.as_bytes() {
            if let Err(e) = std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(old_len)) {
                // The copy is neither old nor new: remove it, the next pass sends it whole.
                let _ = std::fs::remove_file(path);
                tracing::warn!("{name}: cutting back a failed append: {e}");
            }
            let why = if commit.blake3.is_empty() {
                "the source could not read the file (see its error)"
            } else {
                "blake3 digest mismatch after appending: the old copy is kept"
            };
            return Err(Error::sync(name, why));
        }
        fsops::apply_meta(path, entry, self.xattrs).map_err(|e| Error::io("setting metadata", path, e))?;
        self.stats.files_written += 1;
        self.stats.bytes_written += written;
        Ok(())
    }

    /// Metadata on a freshly written temporary file (a new inode has no xattrs to remove, so
    /// the xattr step runs only when there are some to set), then into place.
    fn finish_file(&mut self, file: std::fs::File, tmp: &Path, target: &Path, entry: &FileEntry) -> Result<()> {
        let xattrs = self.xattrs && !entry.xattrs.is_empty();
        if let Err(e) = fsops::apply_meta_fd(&file, tmp, entry, xattrs) {
            let _ = std::fs::remove_file(tmp);
            return Err(Error::io("setting metadata", tmp, e));
        }
        drop(file);
        self.install(tmp, target, true)
    }

    /// A PutFiles batch. A file that fails is recorded and the others go on.
    fn put_files(&mut self, batch: PutFiles) -> Result<()> {
        let sizes = batch.entries.iter().map(|e| e.size).try_fold(0u64, u64::checked_add);
        if sizes != Some(batch.data.len() as u64) || batch.blake3.len() != 32 * batch.entries.len() {
            return Err(Error::Protocol(format!(
                "PutFiles of {} files carries {} bytes and {} bytes of digests",
                batch.entries.len(),
                batch.data.len(),
                batch.blake3.len()
            )));
        }
        let mut offset = 0usize;
        for (entry, digest) in batch.entries.iter().zip(batch.blake3.chunks_exact(32)) {
            let data = &batch.data[offset..offset + entry.size as usize];
            offset += data.len();
            if let Err(e) = self.put_inline(entry, data, digest) {
                self.record(e);
            }
        }
        Ok(())
    }

    /// One file of a PutFiles batch: check its digest, write it whole, put it in place.
    fn put_inline(&mut self, entry: &FileEntry, data: &[u8], digest: &[u8]) -> Result<()> {
        if digest != blake3::hash(data).as_bytes() {
            return Err(Error::sync(
                display(&entry.path),
                "blake3 digest mismatch: the data received differs from the source's file (corrupted in transit); the old copy is kept",
            ));
        }
        let target = self.path(&entry.path, false)?;
        let tmp = self.temp(&target);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).ctx("creating", &tmp)?;
        if let Err(e) = std::io::Write::write_all(&mut file, data) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("writing", &tmp, e));
        }
        self.finish_file(file, &tmp, &target, entry)?;
        self.stats.files_written += 1;
        self.stats.bytes_written += entry.size;
        Ok(())
    }

    /// Directory metadata, deepest first (setting a child's times would not change its parent's
    /// mtime, but creating it did, so parents come after), then flush if asked.
    fn finish(&mut self) {
        let mut metas = std::mem::take(&mut self.dir_meta);
        metas.sort_by_key(|e| std::cmp::Reverse(e.path.iter().filter(|b| **b == b'/').count() + usize::from(!e.path.is_empty())));
        for e in metas {
            let res =
                self.path(&e.path, true).and_then(|p| fsops::apply_meta(&p, &e, self.xattrs).map_err(|err| Error::io("setting metadata", &p, err)));
            if let Err(err) = res {
                self.record(err);
            }
        }
        if self.opts.fsync {
            if let Err(e) = fsops::syncfs(&self.root) {
                let root = self.root.clone();
                self.record(Error::io("flushing", root, e));
            }
        }
    }
}

/// Extents must be in order, not overlap, and stay within the file.
fn check_extents(extents: &[crate::proto::Extent], size: u64) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut end = 0u64;
    let mut out = Vec::with_capacity(extents.len());
    for x in extents {
        let stop = x.offset.checked_add(x.len).ok_or("extent overflows")?;
        if x.offset < end || stop > size {
            return Err(format!("bad extent {}+{} in a file of {size} bytes", x.offset, x.len));
        }
        end = stop;
        if x.len > 0 {
            out.push((x.offset, x.len));
        }
    }
    Ok(out)
}

trait FromBytesExt {
    fn from_bytes_ext(b: &[u8]) -> &Self;
}

impl FromBytesExt for std::ffi::OsStr {
    fn from_bytes_ext(b: &[u8]) -> &Self {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// The shape of the delta a source sends for a file that only grew (`source::append_delta`):
/// keep the first `len` bytes, add a literal tail. Anything else is `None`.
fn parse_append_delta(delta: &[u8]) -> Option<(u64, &[u8])> {
    let rest = delta.strip_prefix(&0x7273_0236u32.to_be_bytes()[..])?;
    let (op, rest) = rest.split_first()?;
    if *op != 0x54 {
        return None;
    }
    let (offset, rest) = rest.split_at_checked(8)?;
    let (len, rest) = rest.split_at_checked(8)?;
    if u64::from_be_bytes(offset.try_into().ok()?) != 0 {
        return None;
    }
    let keep = u64::from_be_bytes(len.try_into().ok()?);
    let (op, rest) = rest.split_first()?;
    if *op != 0x44 {
        return None;
    }
    let (n, rest) = rest.split_at_checked(8)?;
    let n = usize::try_from(u64::from_be_bytes(n.try_into().ok()?)).ok()?;
    let (tail, end) = rest.split_at_checked(n)?;
    (end == [0]).then_some((keep, tail))
}

/// Appends `tail` to `path` when it holds exactly `old_len` bytes in a file of its own (one
/// link), and makes `hasher` (fresh) the digest of the whole result. `None` when the copy is
/// not like that (the caller applies the delta the usual way); an error leaves the file as it
/// was. Returns `old_len`.
fn append_in_place(path: &Path, old_len: u64, tail: &[u8], hasher: &mut blake3::Hasher) -> Option<Result<u64>> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).ok()?;
    if !md.is_file() || md.len() != old_len || md.nlink() != 1 {
        return None;
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).ok()?;
    // What the copy holds now goes into the digest first: the result must match the
    // source's whole file, not only the tail.
    let mut whole = blake3::Hasher::new();
    let mut buf = vec![0u8; (1 << 20).min(old_len as usize).max(1)];
    let mut pos = 0u64;
    while pos < old_len {
        let want = ((old_len - pos) as usize).min(buf.len());
        match f.read_at(&mut buf[..want], pos) {
            Ok(0) => return None,
            Ok(n) => {
                whole.update(&buf[..n]);
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if let Err(e) = f.write_all_at(tail, old_len) {
        let _ = f.set_len(old_len);
        return Some(Err(Error::io("appending to", path, e)));
    }
    whole.update(tail);
    *hasher = whole;
    Some(Ok(old_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_append_shape_is_taken_for_an_append() {
        let tail = b"new lines\n";
        let d = super::super::source::append_delta(1234, tail);
        assert_eq!(parse_append_delta(&d), Some((1234, &tail[..])));
        // Truncated, trailing bytes, or any other delta: not an append.
        assert_eq!(parse_append_delta(&d[..d.len() - 1]), None);
        assert_eq!(parse_append_delta(&[&d[..], &[0]].concat()), None);
        let base: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut changed = base.clone();
        changed[100] ^= 1;
        let sig = fast_rsync::Signature::calculate(&base, fast_rsync::SignatureOptions { block_size: 1024, crypto_hash_size: 8 });
        let mut delta = Vec::new();
        fast_rsync::diff(&sig.index(), &changed, &mut delta).unwrap();
        assert_eq!(parse_append_delta(&delta), None);
    }
}
