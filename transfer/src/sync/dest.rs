//! The receiving side of a pass. Nothing is written outside the root, and nothing the tree
//! holds is followed: every path from the peer is checked (relative, no `..`), its directory
//! is opened beneath the root's fd without following any symlink (`ferry_tree`), and entries
//! are made, replaced and given their metadata through fds, never by path. What an earlier
//! message of the pass left in place (a symlink where a directory was) is therefore never a
//! way out either.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use ferry_tree::meta::{self, Target};
use ferry_tree::{Dir, Kind, Node, Opened};
use prost::Message;

use super::digest::{dense_digest, hash_zeros, Layout};
use super::fsops::{self, apply_meta, display, split, tree_kind, unreachable};
use super::scan::{is_special, scan_dest};
use super::source::RECORD_HEADER;
use super::ReceiveOptions;
use crate::error::{Error, Result};
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
/// Directories kept open for the entries that follow (siblings arrive together).
const PARENT_CACHE: usize = 256;
/// A signature of more blocks than this is not computed (a legitimate source asks for about
/// the square root of the file's size; tiny blocks on a big file would make a reply larger
/// than a control message may be).
const MAX_SIGNATURE_BLOCKS: u64 = 1 << 18;

/// Walk `root` and send its summary (the answer to a SyncBegin).
async fn send_summary(
    conn: &Connection,
    begin: &Envelope,
    root: &Arc<Dir>,
    root_path: &Path,
    opts: &ReceiveOptions,
    xattrs: bool,
    layouts: bool,
) -> Result<()> {
    let root2 = root.clone();
    let link_dest = opts.link_dest.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let ld = match link_dest.filter(|p| p.is_dir()) {
            Some(p) => Some(Dir::open(&p).map_err(|e| Error::io("opening the link-dest tree", &p, e))?),
            None => None,
        };
        scan_dest(&root2, ld.as_ref(), xattrs)
    })
    .await
    .map_err(|source| Error::Task { what: format!("sync {}: scan task failed", root_path.display()), source });
    let summary = match summary.and_then(|r| r) {
        Ok(s) => s,
        Err(e) => {
            conn.reply_error(begin.id, format!("destination cannot read {}: {e}", root_path.display())).await?;
            return Err(e);
        }
    };
    // Summaries of big trees repeat most of each entry: compressed they cost a fraction.
    let mut plain = Vec::with_capacity(summary.len() * 48);
    for e in &summary {
        e.encode_length_delimited(&mut plain).map_err(|source| Error::Encode { what: "encoding summary", source })?;
    }
    let packed = zstd::bulk::compress(&plain, 3).map_err(|e| Error::io("compressing the summary of", root_path, e))?;
    let mut stream = conn.open_stream();
    conn.reply(
        begin.id,
        Body::SyncBeginAck(SyncBeginAck {
            manifest_stream: stream.id(),
            entries: summary.len() as u64,
            compression: "zstd".into(),
            put_files: true,
            summary_skipped: false,
            extent_records: layouts,
            summary_bytes: plain.len() as u64,
        }),
    )
    .await?;
    drop(plain);
    stream.send(&packed).await?;
    stream.finish().await?;
    drop(summary);
    Ok(())
}

/// The tree to receive into, open: created when missing, unless the source expects it to hold
/// what its previous pass left.
fn open_root(root: &Path, must_exist: bool) -> Result<Dir> {
    if !must_exist && !root.exists() {
        std::fs::create_dir_all(root).map_err(|e| Error::io("creating", root, e))?;
    }
    match Dir::open(root) {
        Ok(d) => Ok(d),
        Err(e) if must_exist && e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::sync(root.display().to_string(), "the tree to update is missing"))
        }
        Err(e) => Err(Error::io("opening", root, e)),
    }
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
    // Extent records and layout digests, when the source offers them (protocol 1.1).
    let layouts = b.extent_records;
    let dir = match open_root(root, b.no_summary) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            conn.reply_error(begin.id, format!("destination cannot read {}: {e}", root.display())).await?;
            return Err(e);
        }
    };
    if b.no_summary {
        // The source knows what this tree holds: it sends the changes without our summary.
        let ack = SyncBeginAck { put_files: true, summary_skipped: true, extent_records: layouts, ..Default::default() };
        conn.reply(begin.id, Body::SyncBeginAck(ack)).await?;
    } else {
        send_summary(conn, begin, &dir, root, opts, xattrs, layouts).await?;
    }
    let link_dest = match opts.link_dest.as_deref().filter(|p| p.is_dir()) {
        Some(p) => Some(Dir::open(p).map_err(|e| Error::io("opening the link-dest tree", p, e))?),
        None => None,
    };

    let mut rx = Receiver {
        conn,
        root: dir,
        root_path: root,
        link_dest,
        opts,
        xattrs,
        layouts,
        parents: HashMap::new(),
        dir_meta: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
        stats: ReceiveStats { pass: b.pass, ..Default::default() },
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
            if e.ends_connection() {
                return Err(e);
            }
            rx.record(e);
        }
    }
}

struct Receiver<'a> {
    conn: &'a Connection,
    root: Arc<Dir>,
    root_path: &'a Path,
    link_dest: Option<Dir>,
    opts: &'a ReceiveOptions,
    xattrs: bool,
    /// Whole files come as extent records, digests cover data and layout (see `digest`).
    layouts: bool,
    /// Directories opened beneath the root for the entries in them, by relative path. Cleared
    /// whenever a directory goes (its fd would lead nowhere).
    parents: HashMap<Vec<u8>, Arc<Dir>>,
    dir_meta: Vec<FileEntry>,
    errors: Vec<String>,
    error_count: usize,
    stats: ReceiveStats,
}

/// A sync error on `rel`: `what` failed with `e`.
fn failed(rel: &[u8], what: &str, e: std::io::Error) -> Error {
    Error::sync_io(display(rel), what, e)
}

impl Receiver<'_> {
    fn record(&mut self, e: Error) {
        tracing::warn!("sync: {e}");
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(e.to_string());
        }
    }

    /// The directory `rel` lies in, opened beneath the root (never through a symlink), and its
    /// name there.
    fn parent<'r>(&mut self, rel: &'r [u8]) -> Result<(Arc<Dir>, &'r [u8])> {
        fsops::check_rel(rel, false)?;
        let (dir, name) = split(rel);
        if let Some(d) = self.parents.get(dir) {
            return Ok((d.clone(), name));
        }
        let d = if dir.is_empty() { self.root.clone() } else { Arc::new(self.root.dir_beneath(dir).map_err(|e| unreachable(rel, "refused", e))?) };
        if self.parents.len() >= PARENT_CACHE {
            self.parents.clear();
        }
        self.parents.insert(dir.to_vec(), d.clone());
        Ok((d, name))
    }

    /// `rel` itself, held by an O_PATH fd (a symlink there is the symlink).
    fn node(&self, rel: &[u8]) -> Result<Node> {
        fsops::check_rel(rel, false)?;
        self.root.node_beneath(rel).map_err(|e| unreachable(rel, "refused", e))
    }

    fn temp(rel: &[u8]) -> Result<Vec<u8>> {
        fsops::temp_name().map_err(|e| failed(rel, "making a temporary name", e))
    }

    /// Put `tmp` in place of `name` in `dir`. A directory in the way is removed (rename cannot
    /// replace one with a non-directory). `fresh`: `tmp` is a new inode, so it cannot be
    /// another name of what `name` is.
    fn install(&mut self, dir: &Dir, tmp: &[u8], name: &[u8], fresh: bool, rel: &[u8]) -> Result<()> {
        if let Err(e) = dir.rename_at(tmp, name) {
            let is_dir = dir.stat_at(name).is_ok_and(|s| s.kind() == Kind::Directory);
            if !is_dir {
                let _ = dir.unlink_at(tmp);
                return Err(failed(rel, "renaming into place", e));
            }
            dir.remove_all_at(name).map_err(|e| failed(rel, "removing the directory in the way", e))?;
            self.parents.clear();
            dir.rename_at(tmp, name).map_err(|e| failed(rel, "renaming into place", e))?;
        }
        if !fresh {
            // Renaming over a name of the same inode does nothing: drop the temporary name then.
            let _ = dir.unlink_at(tmp);
        }
        Ok(())
    }

    async fn handle(&mut self, id: u64, body: Body) -> Result<()> {
        match body {
            Body::Delete(d) => {
                let (dir, name) = self.parent(&d.path)?;
                if dir.remove_all_at(name).map_err(|e| failed(&d.path, "deleting", e))? {
                    self.stats.deleted += 1;
                }
                self.parents.clear();
            }
            Body::Mkdir(e) => self.mkdir(&e)?,
            Body::SetMeta(e) => self.set_meta(e)?,
            Body::Symlink(e) => {
                let (dir, name) = self.parent(&e.path)?;
                let tmp = Self::temp(&e.path)?;
                dir.symlink_at(&e.symlink_target, &tmp).map_err(|err| failed(&e.path, "creating symlink", err))?;
                self.finish_new(&dir, &tmp, name, &e)?;
            }
            Body::Mknod(e) => {
                if !is_special(e.kind()) {
                    return Err(Error::sync(display(&e.path), "Mknod for a file that is not special"));
                }
                let (dir, name) = self.parent(&e.path)?;
                let tmp = Self::temp(&e.path)?;
                dir.mknod_at(&tmp, tree_kind(e.kind()), e.mode, e.rdev).map_err(|err| failed(&e.path, "mknod", err))?;
                self.finish_new(&dir, &tmp, name, &e)?;
            }
            Body::Hardlink(Hardlink { path, target }) => {
                let (dir, name) = self.parent(&path)?;
                let node = self.node(&target)?;
                if node.kind() != Kind::Regular {
                    return Err(Error::sync(
                        display(&path),
                        format!("refused: the hardlink target {} is {}", display(&target), node.kind().describe()),
                    ));
                }
                let tmp = Self::temp(&path)?;
                dir.link_at(&node, &tmp).map_err(|e| failed(&path, "linking", e))?;
                self.install(&dir, &tmp, name, false, &path)?;
            }
            Body::LinkFrom(e) => {
                let (dir, name) = self.parent(&e.path)?;
                let Some(ld) = &self.link_dest else {
                    return Err(Error::sync(display(&e.path), "LinkFrom without a link-dest tree"));
                };
                let node = ld.node_beneath(&e.path).map_err(|err| unreachable(&e.path, "in the previous tree", err))?;
                if node.kind() != Kind::Regular {
                    return Err(Error::sync(display(&e.path), format!("refused: in the previous tree it is {}", node.kind().describe())));
                }
                let tmp = Self::temp(&e.path)?;
                dir.link_at(&node, &tmp).map_err(|err| failed(&e.path, "linking from the previous tree", err))?;
                self.install(&dir, &tmp, name, false, &e.path)?;
            }
            Body::PutFile(pf) => self.put_file(pf).await?,
            Body::PutFiles(batch) => self.put_files(batch)?,
            Body::GetSignature(g) => {
                let signature = self.signature(&g.path, g.block_size).unwrap_or_default();
                self.conn.reply(id, Body::SignatureReply(SignatureReply { signature })).await?;
            }
            other => {
                return Err(Error::Protocol(format!("unexpected {} message during a sync pass", other.name())));
            }
        }
        Ok(())
    }

    /// A directory (the root: only its owner). Owner now, so that contents land in a directory
    /// owned right; mode and times at the end of the pass.
    fn mkdir(&mut self, e: &FileEntry) -> Result<()> {
        if e.path.is_empty() {
            return meta::set_owner(Target::Dir(&self.root), e.uid, e.gid).map_err(|err| failed(&e.path, "chown", err));
        }
        let (dir, name) = self.parent(&e.path)?;
        match dir.stat_at(name) {
            Ok(st) if st.kind() == Kind::Directory => {}
            Ok(_) => {
                dir.remove_all_at(name).map_err(|err| failed(&e.path, "replacing", err))?;
                self.parents.clear();
                dir.mkdir_at(name, 0o700).map_err(|err| failed(&e.path, "creating directory", err))?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                dir.mkdir_at(name, 0o700).map_err(|err| failed(&e.path, "creating directory", err))?;
            }
            Err(err) => return Err(failed(&e.path, "reading", err)),
        }
        let child = dir.child_dir(name).map_err(|err| unreachable(&e.path, "refused", err))?;
        meta::set_owner(Target::Dir(&child), e.uid, e.gid).map_err(|err| failed(&e.path, "chown", err))?;
        self.parents.insert(e.path.clone(), Arc::new(child));
        Ok(())
    }

    fn set_meta(&mut self, e: FileEntry) -> Result<()> {
        if e.kind() == FileKind::Directory {
            // Applied at the end (after what the pass puts inside it), on the directory's fd.
            fsops::check_rel(&e.path, true)?;
            self.dir_meta.push(e);
            return Ok(());
        }
        let node = self.node(&e.path)?;
        if node.kind() != tree_kind(e.kind()) {
            return Err(Error::sync(
                display(&e.path),
                format!("metadata for {} but here it is {}", tree_kind(e.kind()).describe(), node.kind().describe()),
            ));
        }
        if node.kind() == Kind::Regular && self.link_dest.is_some() && node.stat().nlink > 1 {
            // Possibly shared with the link-dest tree: change a private copy.
            let (dir, name) = self.parent(&e.path)?;
            let tmp = Self::temp(&e.path)?;
            let copied = node.reopen(false).and_then(|src| {
                let dst = dir.create_file_at(&tmp, 0o600)?;
                ferry_tree::extents::copy_sparse(&src, &dst, node.stat().size)?;
                Ok(dst)
            });
            let dst = match copied {
                Ok(d) => d,
                Err(err) => {
                    let _ = dir.unlink_at(&tmp);
                    return Err(failed(&e.path, "copying", err));
                }
            };
            return self.finish_file(dst, &dir, &tmp, name, &e);
        }
        apply_meta(Target::Node(&node), &e, self.xattrs).map_err(|err| failed(&e.path, "setting metadata", err))
    }

    /// Metadata on a freshly made temporary entry (a new inode has no xattrs to remove, so
    /// the xattr step runs only when there are some to set), then into place.
    fn finish_new(&mut self, dir: &Dir, tmp: &[u8], name: &[u8], e: &FileEntry) -> Result<()> {
        let res = dir.node_at(tmp).and_then(|node| apply_meta(Target::Node(&node), e, self.xattrs && !e.xattrs.is_empty()));
        if let Err(err) = res {
            let _ = dir.unlink_at(tmp);
            return Err(failed(&e.path, "setting metadata", err));
        }
        self.install(dir, tmp, name, true, &e.path)
    }

    fn signature(&mut self, rel: &[u8], block_size: u32) -> Option<Vec<u8>> {
        fsops::check_rel(rel, false).ok()?;
        if !(64..=1 << 20).contains(&block_size) {
            return None;
        }
        let Ok(Opened::File(f, st)) = self.root.open_file_beneath(rel, false, None) else { return None };
        // Deltas work in memory: refuse to load more than a source may delta.
        if st.size > super::DEFAULT_DELTA_MAX || st.size.div_ceil(block_size.into()) > MAX_SIGNATURE_BLOCKS {
            return None;
        }
        let data = read_bounded(&f, super::DEFAULT_DELTA_MAX).ok()??;
        let sig = fast_rsync::Signature::calculate(&data, fast_rsync::SignatureOptions { block_size, crypto_hash_size: 8 });
        Some(sig.into_serialized())
    }

    async fn put_file(&mut self, mut pf: PutFile) -> Result<()> {
        let entry = pf.entry.take().ok_or_else(|| Error::Protocol("PutFile without an entry".into()))?;
        // A delta may come inside the message, with the file's digest (no stream, no commit).
        let inline = pf.delta && pf.stream == 0;
        let mut rx = if inline { None } else { Some(self.conn.accept_stream(pf.stream)?) };
        let name = display(&entry.path);
        if pf.delta && entry.size > super::DEFAULT_DELTA_MAX {
            return Err(Error::Protocol(format!("{name}: a delta for {} bytes is more than the destination accepts", entry.size)));
        }
        if !pf.delta && self.layouts && !pf.extents.is_empty() {
            return Err(Error::Protocol(format!("{name}: extents in a PutFile of a pass with extent records")));
        }
        // Local failures are remembered, not returned at once: the stream and the FileCommit
        // that follow must still be consumed to stay in step with the source.
        let mut failure: Option<Error> = None;
        let mut data = blake3::Hasher::new();
        let mut target: Option<(Arc<Dir>, Vec<u8>)> = None;
        let mut tmp: Option<Vec<u8>> = None;
        let mut file: Option<File> = None;
        match self.parent(&entry.path) {
            Ok((dir, n)) => {
                match fsops::temp_name().and_then(|t| dir.create_file_at(&t, 0o600).map(|f| (t, f))) {
                    Ok((t, f)) => {
                        file = Some(f);
                        tmp = Some(t);
                    }
                    Err(e) => failure = Some(failed(&entry.path, "creating a temporary file", e)),
                }
                target = Some((dir, n.to_vec()));
            }
            Err(e) => failure = Some(e),
        }
        let mut written = 0u64;
        // The destination's copy and its old length, when an append delta grew it in place
        // (no temporary file then).
        let mut in_place: Option<(File, u64)> = None;
        // The digest this side computes, once all is written.
        let digest: [u8; 32];
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
            let appended = match (&failure, parse_append_delta(&delta)) {
                (None, Some((old_len, tail))) => append_in_place(&self.root, &entry.path, old_len, tail, &mut data),
                _ => None,
            };
            if let Some(res) = appended {
                match res {
                    Ok(f) => {
                        written = entry.size;
                        in_place = Some(f);
                    }
                    Err(e) => failure = Some(e),
                }
            } else if let (None, Some(f)) = (&failure, &file) {
                match self.root.open_file_beneath(&entry.path, false, None) {
                    Ok(Opened::File(base, _)) => match read_bounded(&base, super::DEFAULT_DELTA_MAX) {
                        Ok(Some(base)) => {
                            let mut out = Vec::with_capacity(entry.size as usize);
                            match fast_rsync::apply_limited(&base, &delta, &mut out, entry.size as usize) {
                                Ok(()) => {
                                    data.update(&out);
                                    written = out.len() as u64;
                                    if let Err(e) = f.write_all_at(&out, 0) {
                                        failure = Some(failed(&entry.path, "writing", e));
                                    }
                                }
                                Err(e) => failure = Some(Error::Delta { path: name.clone(), what: "applying the delta", source: Box::new(e) }),
                            }
                        }
                        Ok(None) => failure = Some(Error::sync(name.clone(), "the old copy is larger than a delta may be")),
                        Err(e) => failure = Some(failed(&entry.path, "reading the old copy", e)),
                    },
                    Ok(_) => failure = Some(Error::sync(name.clone(), "no old copy (a regular file) to apply the delta to")),
                    Err(e) => failure = Some(failed(&entry.path, "reading the old copy", e)),
                }
            }
            digest = dense_digest(&data.finalize(), written, self.layouts);
        } else {
            if let (None, Some(f)) = (&failure, &file) {
                if let Err(e) = f.set_len(entry.size) {
                    failure = Some(failed(&entry.path, "sizing", e));
                }
            }
            let Some(rx) = rx.as_mut() else {
                return Err(Error::Protocol(format!("{name}: PutFile without a stream")));
            };
            let mut sink = WholeFile::new(&entry, self.layouts, &pf);
            if let Err(m) = &sink.check {
                failure.get_or_insert(Error::sync(name.clone(), m.clone()));
            }
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
                let wrote = sink.take(&chunk, &mut data, |off, bytes| match &file {
                    Some(f) => f.write_all_at(bytes, off).map_err(|e| failed(&entry.path, "writing", e)),
                    None => Ok(()),
                });
                match wrote {
                    Ok(n) => written += n,
                    Err(e) => failure = Some(e),
                }
            }
            if failure.is_none() {
                if let Err(m) = sink.finished() {
                    failure = Some(Error::sync(name.clone(), m));
                }
            }
            // A failed file is not compared: no digest (for a 1.0 peer it hashes the holes).
            digest = if failure.is_none() { sink.digest(data, entry.size) } else { [0; 32] };
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
        let cleanup = |target: &Option<(Arc<Dir>, Vec<u8>)>, tmp: &Option<Vec<u8>>| {
            if let (Some((dir, _)), Some(t)) = (target, tmp) {
                let _ = dir.unlink_at(t);
            }
        };
        if let Some((grown, old_len)) = in_place {
            cleanup(&target, &tmp);
            return self.finish_in_place(grown, old_len, &entry, &commit, &digest, written);
        }
        if let Some(f) = failure {
            cleanup(&target, &tmp);
            return Err(f);
        }
        if commit.blake3.is_empty() {
            cleanup(&target, &tmp);
            return Err(Error::sync(name, "the source could not read the file (see its error)"));
        }
        if commit.blake3 != digest {
            cleanup(&target, &tmp);
            return Err(Error::sync(
                name,
                "blake3 digest mismatch: the data received differs from the source's file (corrupted in transit); the old copy is kept",
            ));
        }
        let (Some(tmp), Some((dir, n)), Some(file)) = (tmp, target, file) else {
            return Err(Error::sync(name, "no temporary file"));
        };
        self.finish_file(file, &dir, &tmp, &n, &entry)?;
        self.stats.files_written += 1;
        self.stats.bytes_written += written;
        Ok(())
    }

    /// A file grown in place by an append delta: kept when its digest is the source's (then
    /// its metadata is set), else cut back to what it held before.
    fn finish_in_place(&mut self, file: File, old_len: u64, entry: &FileEntry, commit: &FileCommit, digest: &[u8; 32], written: u64) -> Result<()> {
        let name = display(&entry.path);
        if commit.blake3.is_empty() || commit.blake3 != digest {
            if let Err(e) = file.set_len(old_len) {
                // The copy is neither old nor new: remove it, the next pass sends it whole.
                if let Ok((dir, n)) = self.parent(&entry.path) {
                    let _ = dir.unlink_at(n);
                }
                tracing::warn!("{name}: cutting back a failed append: {e}");
            }
            let why = if commit.blake3.is_empty() {
                "the source could not read the file (see its error)"
            } else {
                "blake3 digest mismatch after appending: the old copy is kept"
            };
            return Err(Error::sync(name, why));
        }
        apply_meta(Target::File(&file), entry, self.xattrs).map_err(|e| failed(&entry.path, "setting metadata", e))?;
        self.stats.files_written += 1;
        self.stats.bytes_written += written;
        Ok(())
    }

    /// Metadata on a freshly written temporary file (a new inode has no xattrs to remove, so
    /// the xattr step runs only when there are some to set), then into place.
    fn finish_file(&mut self, file: File, dir: &Dir, tmp: &[u8], name: &[u8], entry: &FileEntry) -> Result<()> {
        let xattrs = self.xattrs && !entry.xattrs.is_empty();
        if let Err(e) = apply_meta(Target::File(&file), entry, xattrs) {
            let _ = dir.unlink_at(tmp);
            return Err(failed(&entry.path, "setting metadata", e));
        }
        drop(file);
        self.install(dir, tmp, name, true, &entry.path)
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
        let (dir, name) = self.parent(&entry.path)?;
        let tmp = Self::temp(&entry.path)?;
        let mut file = dir.create_file_at(&tmp, 0o600).map_err(|e| failed(&entry.path, "creating a temporary file", e))?;
        if let Err(e) = file.write_all(data) {
            let _ = dir.unlink_at(&tmp);
            return Err(failed(&entry.path, "writing", e));
        }
        self.finish_file(file, &dir, &tmp, name, entry)?;
        self.stats.files_written += 1;
        self.stats.bytes_written += entry.size;
        Ok(())
    }

    /// Directory metadata, deepest first (setting a child's times would not change its parent's
    /// mtime, but creating it did, so parents come after), each through the directory's own fd
    /// (whatever took its name during the pass is never followed), then flush if asked.
    fn finish(&mut self) {
        let mut metas = std::mem::take(&mut self.dir_meta);
        metas.sort_by_key(|e| std::cmp::Reverse(e.path.iter().filter(|b| **b == b'/').count() + usize::from(!e.path.is_empty())));
        for e in metas {
            let res = self
                .root
                .dir_beneath(&e.path)
                .map_err(|err| unreachable(&e.path, "setting directory metadata", err))
                .and_then(|d| apply_meta(Target::Dir(&d), &e, self.xattrs).map_err(|err| failed(&e.path, "setting metadata", err)));
            if let Err(err) = res {
                self.record(err);
            }
        }
        if self.opts.fsync {
            if let Err(e) = self.root.syncfs() {
                let root = self.root_path.to_path_buf();
                self.record(Error::io("flushing", root, e));
            }
        }
    }
}

/// All of `f`, unless it holds more than `limit` bytes (`None`).
fn read_bounded(f: &File, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// A whole file arriving on its data stream: extent records (protocol 1.1), or the bytes of the
/// extents its PutFile listed, back to back (1.0). Tracks where the next bytes go, checks the
/// records, and hashes what is written (see `digest`).
struct WholeFile {
    name: String,
    size: u64,
    records: bool,
    /// 1.0: the announced extents, in order; `check` says whether they were sound.
    listed: std::vec::IntoIter<(u64, u64)>,
    check: std::result::Result<(), String>,
    /// Bytes of a record header received so far.
    head: [u8; RECORD_HEADER],
    head_len: usize,
    /// Where the next data byte goes and how many are left in the current extent.
    at: u64,
    left: u64,
    /// End of the last extent (records must come in order, without overlap).
    end: u64,
    layout: Layout,
    /// 1.0: how far the plain digest has come (holes hashed as zeros).
    hashed_to: u64,
}

impl WholeFile {
    fn new(entry: &FileEntry, records: bool, pf: &PutFile) -> Self {
        let check = if records { Ok(Vec::new()) } else { check_extents(&pf.extents, entry.size) };
        let (listed, check) = match check {
            Ok(l) => (l, Ok(())),
            Err(m) => (Vec::new(), Err(m)),
        };
        WholeFile {
            name: display(&entry.path),
            size: entry.size,
            records,
            listed: listed.into_iter(),
            check,
            head: [0; RECORD_HEADER],
            head_len: 0,
            at: 0,
            left: 0,
            end: 0,
            layout: Layout::default(),
            hashed_to: 0,
        }
    }

    /// Take `chunk` of the stream, calling `write(offset, bytes)` for its file bytes; returns
    /// how many file bytes it held.
    fn take(&mut self, mut chunk: &[u8], data: &mut blake3::Hasher, mut write: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<u64> {
        let mut n = 0u64;
        while !chunk.is_empty() {
            if self.left == 0 {
                self.next_extent(&mut chunk, data)?;
                continue;
            }
            let k = (self.left.min(chunk.len() as u64)) as usize;
            write(self.at, &chunk[..k])?;
            data.update(&chunk[..k]);
            self.at += k as u64;
            self.left -= k as u64;
            self.hashed_to = self.at;
            n += k as u64;
            chunk = &chunk[k..];
        }
        Ok(n)
    }

    /// Start the next extent: from a record header in the stream, or the next listed one.
    fn next_extent(&mut self, chunk: &mut &[u8], data: &mut blake3::Hasher) -> Result<()> {
        let bad = |m: String| Err(Error::sync(self.name.clone(), m));
        let (off, len) = if self.records {
            let k = (RECORD_HEADER - self.head_len).min(chunk.len());
            self.head[self.head_len..self.head_len + k].copy_from_slice(&chunk[..k]);
            self.head_len += k;
            *chunk = &chunk[k..];
            if self.head_len < RECORD_HEADER {
                return Ok(());
            }
            self.head_len = 0;
            let off = u64::from_be_bytes(self.head[..8].try_into().expect("8 bytes"));
            let len = u64::from_be_bytes(self.head[8..].try_into().expect("8 bytes"));
            let stop = off.checked_add(len);
            if len == 0 || off < self.end || stop.is_none_or(|s| s > self.size) {
                return bad(format!("bad extent record {off}+{len} in a file of {} bytes", self.size));
            }
            self.layout.extent(off, len);
            (off, len)
        } else {
            match self.listed.next() {
                Some(x) => x,
                None => return bad("more data than the announced extents".into()),
            }
        };
        if !self.records {
            hash_zeros(data, off - self.hashed_to);
        }
        self.end = off + len;
        self.at = off;
        self.left = len;
        Ok(())
    }

    /// Whether the stream ended where a file may end.
    fn finished(&mut self) -> std::result::Result<(), String> {
        if self.head_len != 0 || self.left != 0 || self.listed.next().is_some() {
            return Err("the stream ended before all announced data arrived".into());
        }
        Ok(())
    }

    fn digest(&self, mut data: blake3::Hasher, size: u64) -> [u8; 32] {
        if self.records {
            self.layout.file_digest(&data.finalize(), size)
        } else {
            hash_zeros(&mut data, size.saturating_sub(self.hashed_to));
            *data.finalize().as_bytes()
        }
    }
}

/// The most hole bytes a file from a peer of protocol 1.0 may have: its digest hashes them as
/// zeros, and a hostile peer would otherwise announce a file of 2^60 bytes with no data and
/// keep this side hashing for years. Real 1.0 sources never sent such files (their extents
/// covered the data of a sparse file of up to this size in seconds of hashing).
const LEGACY_MAX_HOLE_BYTES: u64 = 64 << 30;

/// Extents must be in order, not overlap, stay within the file, and leave no more than
/// [`LEGACY_MAX_HOLE_BYTES`] of holes.
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
    let holes = size - out.iter().map(|(_, l)| l).sum::<u64>();
    if holes > LEGACY_MAX_HOLE_BYTES {
        return Err(format!("{holes} bytes of holes in a file of {size} (a peer of protocol 1.0 may send at most {LEGACY_MAX_HOLE_BYTES})"));
    }
    Ok(out)
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

/// Appends `tail` to the file `rel` when it holds exactly `old_len` bytes in a file of its own
/// (a regular file with one link, opened beneath the root through its fd), and makes `hasher`
/// (fresh) the blake3 of the whole result. `None` when the copy is not like that (the caller
/// applies the delta the usual way); an error leaves the file as it was. Returns the file and
/// `old_len`.
fn append_in_place(root: &Dir, rel: &[u8], old_len: u64, tail: &[u8], hasher: &mut blake3::Hasher) -> Option<Result<(File, u64)>> {
    let Ok(Opened::File(f, st)) = root.open_file_beneath(rel, true, None) else { return None };
    if st.size != old_len || st.nlink != 1 {
        return None;
    }
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
        return Some(Err(failed(rel, "appending", e)));
    }
    whole.update(tail);
    *hasher = whole;
    Some(Ok((f, old_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_file_of_holes_beyond_the_limit_is_refused_before_any_hashing() {
        let x = |offset, len| crate::proto::Extent { offset, len };
        assert_eq!(check_extents(&[x(0, 10), x(100, 5)], 200).unwrap(), vec![(0, 10), (100, 5)]);
        // 2^50 bytes announced, nothing sent: hashing its zeros would take days.
        let e = check_extents(&[], 1 << 50).unwrap_err();
        assert!(e.contains("holes"), "{e}");
        assert!(check_extents(&[x(0, 1 << 20)], LEGACY_MAX_HOLE_BYTES + (1 << 20)).is_ok(), "the limit itself is fine");
        let pf = PutFile::default();
        let entry = FileEntry { size: 1 << 60, ..Default::default() };
        assert!(WholeFile::new(&entry, false, &pf).check.is_err(), "a 1.0 PutFile of 2^60 bytes of holes fails its check");
    }

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

    fn record(off: u64, len: u64) -> Vec<u8> {
        [off.to_be_bytes(), len.to_be_bytes()].concat()
    }

    #[test]
    fn extent_records_are_checked_and_split_anywhere() {
        let entry = FileEntry { size: 100, ..Default::default() };
        let pf = PutFile::default();
        let mut stream = record(10, 3);
        stream.extend_from_slice(b"abc");
        stream.extend(record(50, 2));
        stream.extend_from_slice(b"de");
        // Cut into one-byte chunks: headers and data split anywhere.
        let mut w = WholeFile::new(&entry, true, &pf);
        let mut got = Vec::new();
        let mut h = blake3::Hasher::new();
        for b in &stream {
            w.take(std::slice::from_ref(b), &mut h, |off, bytes| {
                got.push((off, bytes.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        w.finished().unwrap();
        let joined: Vec<(u64, u8)> = got.iter().flat_map(|(o, b)| b.iter().enumerate().map(move |(i, x)| (o + i as u64, *x))).collect();
        assert_eq!(joined, vec![(10, b'a'), (11, b'b'), (12, b'c'), (50, b'd'), (51, b'e')]);
        let mut layout = Layout::default();
        layout.extent(10, 3);
        layout.extent(50, 2);
        assert_eq!(w.digest(h, 100), layout.file_digest(&blake3::hash(b"abcde"), 100));

        // Out of order, overlapping, past the end, empty, cut short: refused.
        for bad in [[record(50, 2), b"de".to_vec(), record(10, 3)].concat(), record(99, 2), record(10, 0)] {
            let mut w = WholeFile::new(&entry, true, &pf);
            let mut data = bad.clone();
            data.resize(data.len() + 8, 0);
            let r = w.take(&data, &mut blake3::Hasher::new(), |_, _| Ok(()));
            assert!(r.is_err(), "{bad:?} accepted");
        }
        let mut w = WholeFile::new(&entry, true, &pf);
        w.take(&[record(0, 10), b"abc".to_vec()].concat(), &mut blake3::Hasher::new(), |_, _| Ok(())).unwrap();
        assert!(w.finished().is_err());
    }
}
