//! The sending side of a pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use prost::Message;

use super::plan::{plan, Op};
use super::scan::{scan_source, Previous, SourceEntry};
use super::{fsops, PassStats, Progress, SyncOptions};
use crate::error::{Error, Result};
use crate::proto::{
    Body, Connection, Delete, Extent, FileCommit, FileEntry, GetSignature, Hardlink, PendingReply, PutFile, PutFiles, SyncBegin, SyncBeginAck,
    SyncEnd,
};

/// The largest manifest summary we accept from the destination.
const MAX_SUMMARY: usize = 1 << 30;
const CHUNK: usize = 1 << 20;
/// Signature requests kept in flight during a pass: the destination reads and sums the next
/// files while we compute and send the delta of the current one.
const SIGNATURE_WINDOW: usize = 16;
/// Dense files up to this size go whole in PutFiles batches (when the destination accepts them).
pub(crate) const INLINE_MAX: u64 = 64 << 10;
/// A batch is sent once it holds this many bytes of file data or this many files.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_FILES: usize = 512;

/// Run one sync pass of `src_dir` to the peer (which runs [`super::receive_pass`]). Returns when
/// the destination has applied everything and answered, or with the first error (the
/// destination's errors name each file that failed).
pub async fn sync_pass(conn: &Connection, src_dir: &Path, opts: &SyncOptions) -> Result<PassStats> {
    sync_pass_from(conn, src_dir, opts, None, None).await.map(|(stats, _)| stats)
}

/// What the destination holds after a successful pass: the source's scan of it, as the
/// summary the destination would send (see [`sync_pass_from`]).
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    pub entries: Vec<FileEntry>,
    /// Per entry, its inode's change time when that was already settled at the scan (see
    /// `scan::SETTLED`), else 0: the next scan re-reads an entry's xattrs and link target
    /// only when this is 0 or differs.
    settled_ctimes: Vec<i64>,
}

/// The content of a file as this source sent it, which the destination verified and holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentCopy {
    pub len: u64,
    pub blake3: [u8; 32],
}

/// What each regular file on the destination holds, by path, as far as the passes that
/// sent it know; kept across the passes of one migration. A file that has only grown since
/// (logs, append-only database files) then goes as its new tail, once the source checked
/// that its first `len` bytes still hash to `blake3`: no signature from the destination and
/// no rolling search through the whole file, which matters most in the final pass, while
/// the container is frozen.
#[derive(Clone, Debug, Default)]
pub struct SentCopies(HashMap<Vec<u8>, SentCopy>);

impl SentCopies {
    pub fn get(&self, path: &[u8]) -> Option<SentCopy> {
        self.0.get(path).copied()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn record(&mut self, path: &[u8], len: u64, digest: &blake3::Hash) {
        self.0.insert(path.to_vec(), SentCopy { len, blake3: *digest.as_bytes() });
    }
    fn forget(&mut self, path: &[u8]) {
        self.0.remove(path);
    }
    /// `path` and everything below it.
    fn forget_tree(&mut self, path: &[u8]) {
        self.0.remove(path);
        if path.is_empty() {
            self.0.clear();
            return;
        }
        self.0.retain(|p, _| !(p.len() > path.len() && p.starts_with(path) && p[path.len()] == b'/'));
    }
}

/// An rsync delta (librsync's format, which fast_rsync applies) that keeps the first
/// `old_len` bytes of the destination's copy and appends `tail`.
pub(crate) fn append_delta(old_len: u64, tail: &[u8]) -> Vec<u8> {
    const MAGIC: u32 = 0x7273_0236;
    const COPY_N8_N8: u8 = 0x54;
    const LITERAL_N8: u8 = 0x44;
    const END: u8 = 0;
    let mut d = Vec::with_capacity(tail.len() + 32);
    d.extend_from_slice(&MAGIC.to_be_bytes());
    if old_len > 0 {
        d.push(COPY_N8_N8);
        d.extend_from_slice(&0u64.to_be_bytes());
        d.extend_from_slice(&old_len.to_be_bytes());
    }
    if !tail.is_empty() {
        d.push(LITERAL_N8);
        d.extend_from_slice(&(tail.len() as u64).to_be_bytes());
        d.extend_from_slice(tail);
    }
    d.push(END);
    d
}

/// [`sync_pass`] that also returns the [`Baseline`] the pass left on the destination (None
/// when a file vanished while it ran), and that, given the previous pass's baseline, skips
/// the destination's walk and summary: the pass then sends what changed here since that
/// pass. For the final pass of a migration, while the container is frozen: its cost then
/// follows the changes, not the size of the tree on the far side. A destination that does
/// not know the option sends its summary anyway, and that is used.
///
/// `copies`, kept by the caller across passes, records what each file sent holds and lets a
/// file that only grew go as its tail (see [`SentCopies`]).
pub async fn sync_pass_from(
    conn: &Connection,
    src_dir: &Path,
    opts: &SyncOptions,
    baseline: Option<Baseline>,
    copies: Option<&mut SentCopies>,
) -> Result<(PassStats, Option<Baseline>)> {
    let started = Instant::now();
    let wire_before = conn.bytes_sent() + conn.bytes_received();
    let root = src_dir.to_path_buf();
    let xattrs = opts.xattrs;
    // Both sides walk their trees at the same time: ours here, theirs once SyncBegin arrives.
    let from_baseline = baseline.is_some();
    // With a baseline, what it holds of an entry whose inode did not change is not read again.
    let scan = tokio::task::spawn_blocking(move || {
        let previous = baseline.as_ref().map(|b| Previous::new(&b.entries, &b.settled_ctimes));
        (scan_source(&root, xattrs, previous.as_ref()), baseline)
    });
    let summary = fetch_summary(conn, opts, from_baseline).await;
    let (entries, baseline) = match scan.await {
        Ok((entries, baseline)) => (entries, baseline),
        Err(e) => (Err(Error::sync(src_dir.display().to_string(), format!("scan task failed: {e}"))), None),
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "sync pass: both trees scanned");
    let (ack, summary) = summary?;
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            // The destination is inside the pass already: end it (nothing was sent, so nothing
            // changes there) to leave the connection usable, then report the scan's failure.
            let _ = conn.request(Body::SyncEnd(SyncEnd { pass: opts.pass, ..Default::default() })).await;
            return Err(e);
        }
    };

    let destination_walked = summary.is_some();
    let summary: &[FileEntry] = match (&summary, &baseline) {
        (Some(s), _) => s,
        (None, Some(b)) => &b.entries,
        (None, None) => &[],
    };
    let ops = plan(&entries, summary, opts);
    tracing::debug!(
        pass = opts.pass,
        entries = entries.len(),
        destination_entries = summary.len(),
        ops = ops.len(),
        ms = started.elapsed().as_millis() as u64,
        "sync pass planned"
    );
    let mut stats = PassStats { pass: opts.pass, destination_walked, entries_scanned: entries.len() as u64, ..Default::default() };
    let mut progress = Progress { pass: opts.pass, ..Default::default() };
    let mut signatures_wanted = VecDeque::new();
    let mut append_candidates = HashSet::new();
    // Taken for the pass and given back when it succeeded: after a failure what the
    // destination holds is not known file by file (the caller is left with none).
    let mut copies = copies;
    let copies_in = copies.as_deref_mut().map(std::mem::take).unwrap_or_default();
    for op in &ops {
        if let Op::SendFile { idx, delta } = op {
            let e = &entries[*idx].entry;
            progress.bytes_total += e.size;
            progress.files_total += 1;
            if *delta {
                // Grown since it was sent: try its tail first (no signature asked for).
                if copies_in.get(&e.path).is_some_and(|c| c.len < e.size) {
                    append_candidates.insert(*idx);
                } else {
                    signatures_wanted.push_back(*idx);
                }
            }
        }
    }
    report(opts, &progress);

    let mut sender = Sender {
        conn,
        opts,
        stats: &mut stats,
        progress: &mut progress,
        errors: Vec::new(),
        vanished: HashSet::new(),
        buf: Vec::new(),
        signatures_wanted,
        signatures: VecDeque::new(),
        batching: ack.put_files,
        batch: PutFiles::default(),
        batch_data: Vec::new(),
        copies: copies_in,
        append_candidates,
    };
    for op in ops {
        // Deletions come first and must reach the destination before it reads any old copy.
        if !matches!(op, Op::Delete(_)) {
            sender.request_signatures(&entries).await?;
        }
        sender.run(&entries, op).await?;
    }
    sender.flush_batch().await?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "sync pass: all sent");
    let errors = std::mem::take(&mut sender.errors);
    let vanished = !sender.vanished.is_empty();
    let copies_out = std::mem::take(&mut sender.copies);
    match conn
        .request(Body::SyncEnd(SyncEnd {
            pass: opts.pass,
            entries_scanned: stats.entries_scanned,
            files_sent: stats.files_sent,
            bytes_data: stats.bytes_data,
        }))
        .await?
    {
        Body::SyncEndAck(_) => {}
        other => return Err(Error::Protocol(format!("expected SyncEndAck, got {}", other.name()))),
    }
    if let (Some(c), true) = (copies, errors.is_empty()) {
        *c = copies_out;
    }
    if !errors.is_empty() {
        return Err(Error::sync(src_dir.display().to_string(), errors.join("; ")));
    }
    stats.bytes_on_wire = conn.bytes_sent() + conn.bytes_received() - wire_before;
    stats.duration = started.elapsed();
    // The destination now holds what was scanned (metadata as scanned; a file that changed
    // while it was read differs from the scan here and goes again next time).
    let after = (!vanished).then(|| Baseline {
        settled_ctimes: entries.iter().map(|s| s.settled_ctime).collect(),
        entries: entries.into_iter().map(|s| s.entry).collect(),
    });
    Ok((stats, after))
}

/// Start the pass on the destination and read its summary (None when it skipped it because
/// `no_summary` asked it to).
async fn fetch_summary(conn: &Connection, opts: &SyncOptions, no_summary: bool) -> Result<(SyncBeginAck, Option<Vec<FileEntry>>)> {
    let ack = match conn.request(Body::SyncBegin(SyncBegin { pass: opts.pass, ctid: opts.ctid.clone(), xattrs: opts.xattrs, no_summary })).await? {
        Body::SyncBeginAck(a) => a,
        other => return Err(Error::Protocol(format!("expected SyncBeginAck, got {}", other.name()))),
    };
    if ack.summary_skipped {
        return Ok((ack, None));
    }
    let mut rx = conn.accept_stream(ack.manifest_stream)?;
    let raw = rx.read_to_end(MAX_SUMMARY).await?;
    let raw = match ack.compression.as_str() {
        "" => raw,
        "zstd" => zstd::bulk::decompress(&raw, MAX_SUMMARY).map_err(|e| Error::Protocol(format!("bad compressed manifest summary: {e}")))?,
        other => return Err(Error::Protocol(format!("manifest summary in unknown compression {other:?}"))),
    };
    let summary = decode_summary(&raw)?;
    Ok((ack, Some(summary)))
}

fn decode_summary(mut raw: &[u8]) -> Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let e = FileEntry::decode_length_delimited(&mut raw).map_err(|e| Error::Protocol(format!("bad manifest summary entry: {e}")))?;
        out.push(e);
    }
    Ok(out)
}

fn report(opts: &SyncOptions, p: &Progress) {
    if let Some(f) = &opts.progress {
        f(p);
    }
}

struct Sender<'a> {
    conn: &'a Connection,
    opts: &'a SyncOptions,
    stats: &'a mut PassStats,
    progress: &'a mut Progress,
    /// Source-side failures that do not break the protocol (a file unreadable mid-way).
    errors: Vec<String>,
    /// Files that disappeared since the scan (a running container deletes files): their other
    /// hardlink names are skipped too. The next pass deletes them on the destination.
    vanished: HashSet<usize>,
    /// The read buffer, kept for the whole pass: a fresh zeroed megabyte per file cost more
    /// than reading a small file.
    buf: Vec<u8>,
    /// Files to be sent as deltas whose signature has not been asked for yet, in send order.
    signatures_wanted: VecDeque<usize>,
    /// Signature requests in flight, in send order.
    signatures: VecDeque<(usize, PendingReply)>,
    /// The destination accepts PutFiles.
    batching: bool,
    /// Small files read but not sent yet (one PutFiles message), and their bytes.
    batch: PutFiles,
    batch_data: Vec<u8>,
    /// What the destination's files hold, updated as files go (see [`SentCopies`]).
    copies: SentCopies,
    /// Delta files that may have only grown: their tail is tried before a signature.
    append_candidates: HashSet<usize>,
}

/// What became of a file meant to go as a delta.
enum DeltaOutcome {
    Sent,
    /// No usable copy on the destination, or the file grew too large: send it whole.
    Whole,
    /// The file is gone since the scan.
    Vanished,
}

/// The entry as sent (the source's inode number means nothing to the destination).
fn wire_entry(s: &SourceEntry) -> FileEntry {
    FileEntry { ino: 0, ..s.entry.clone() }
}

impl Sender<'_> {
    async fn run(&mut self, entries: &[SourceEntry], op: Op) -> Result<()> {
        let conn = self.conn;
        match op {
            Op::Delete(path) => {
                self.copies.forget_tree(&path);
                conn.send(Body::Delete(Delete { path })).await?;
                self.stats.deleted += 1;
            }
            Op::Mkdir(i) => {
                let mut e = wire_entry(&entries[i]);
                e.xattrs.clear(); // applied with the directory's metadata at the end
                conn.send(Body::Mkdir(e)).await?;
                self.stats.created += 1;
            }
            Op::SendFile { idx, delta } => {
                let s = &entries[idx];
                // (A file not sent keeps its record: the destination keeps its old copy.)
                let appended = if self.append_candidates.contains(&idx) { self.send_append(s).await? } else { None };
                let outcome = match appended {
                    Some(outcome) => outcome,
                    None if delta => self.send_delta(idx, s).await?,
                    None => DeltaOutcome::Whole,
                };
                let gone = match outcome {
                    DeltaOutcome::Sent => false,
                    DeltaOutcome::Vanished => true,
                    DeltaOutcome::Whole => !self.send_file(s).await?,
                };
                if gone {
                    self.vanished.insert(idx);
                }
                self.progress.files_done += 1;
                report(self.opts, self.progress);
            }
            Op::LinkFrom(i) => {
                conn.send(Body::LinkFrom(wire_entry(&entries[i]))).await?;
                self.stats.links += 1;
            }
            Op::Hardlink { target, .. } if self.vanished.contains(&target) => {}
            Op::Hardlink { idx, target } => {
                // The target may still wait in the batch.
                self.flush_batch().await?;
                self.copies.forget(&entries[idx].entry.path);
                conn.send(Body::Hardlink(Hardlink { path: entries[idx].entry.path.clone(), target: entries[target].entry.path.clone() })).await?;
                self.stats.links += 1;
            }
            Op::Symlink(i) => {
                conn.send(Body::Symlink(wire_entry(&entries[i]))).await?;
                self.stats.created += 1;
            }
            Op::Mknod(i) => {
                conn.send(Body::Mknod(wire_entry(&entries[i]))).await?;
                self.stats.created += 1;
            }
            Op::SetMeta(i) | Op::DirMeta(i) => {
                conn.send(Body::SetMeta(wire_entry(&entries[i]))).await?;
                self.stats.meta_updates += 1;
            }
        }
        Ok(())
    }

    /// Ask for the signatures of the next delta files, up to the window.
    async fn request_signatures(&mut self, entries: &[SourceEntry]) -> Result<()> {
        while self.signatures.len() < SIGNATURE_WINDOW {
            let Some(idx) = self.signatures_wanted.pop_front() else {
                break;
            };
            let pending = self.conn.start_request(signature_request(&entries[idx])).await?;
            self.signatures.push_back((idx, pending));
        }
        Ok(())
    }

    /// The reply to the signature request of `entries[idx]` (asked for now if it was not).
    async fn signature_reply(&mut self, idx: usize, s: &SourceEntry) -> Result<Body> {
        if self.signatures.front().is_some_and(|(i, _)| *i == idx) {
            if let Some((_, pending)) = self.signatures.pop_front() {
                return pending.reply().await;
            }
        }
        self.conn.request(signature_request(s)).await
    }

    /// Send a whole file: batched when small and dense, else as a PutFile with a data stream.
    /// `Ok(false)` when the file vanished since the scan.
    async fn send_file(&mut self, s: &SourceEntry) -> Result<bool> {
        let dense = s.blocks.saturating_mul(512) >= s.entry.size;
        if self.batching && dense && s.entry.size <= INLINE_MAX {
            if let Some(sent) = self.add_to_batch(s).await? {
                return Ok(sent);
            }
        }
        self.send_whole(s).await
    }

    /// Read a small file into the batch. `Ok(None)` when it outgrew [`INLINE_MAX`] since the
    /// scan (send it the other way), `Ok(Some(false))` when it vanished.
    async fn add_to_batch(&mut self, s: &SourceEntry) -> Result<Option<bool>> {
        if self.batch_data.capacity() == 0 {
            // Room for a full batch at once: growing it would copy it over and over.
            self.batch_data = Vec::with_capacity(BATCH_BYTES + INLINE_MAX as usize + 1);
        }
        let start = self.batch_data.len();
        match read_small(&s.full, s.entry.size, INLINE_MAX, &mut self.batch_data) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(false)),
            Err(e) => {
                let name = fsops::display(&s.entry.path);
                self.errors.push(format!("{name}: reading: {e}"));
                return Ok(Some(true));
            }
        }
        let data = &self.batch_data[start..];
        let mut entry = wire_entry(s);
        entry.size = data.len() as u64;
        let digest = blake3::hash(data);
        self.batch.blake3.extend_from_slice(digest.as_bytes());
        self.copies.record(&entry.path, entry.size, &digest);
        self.stats.files_sent += 1;
        self.stats.bytes_data += entry.size;
        self.progress.bytes_done += entry.size;
        self.batch.entries.push(entry);
        if self.batch_data.len() >= BATCH_BYTES || self.batch.entries.len() >= BATCH_FILES {
            self.flush_batch().await?;
        }
        Ok(Some(true))
    }

    async fn flush_batch(&mut self) -> Result<()> {
        if self.batch.entries.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.data = std::mem::take(&mut self.batch_data).into();
        self.conn.send(Body::PutFiles(batch)).await?;
        Ok(())
    }

    /// Send the whole file (its data extents; holes stay holes). A file that vanished since the
    /// scan is skipped (`Ok(false)`; the next pass deletes it).
    async fn send_whole(&mut self, s: &SourceEntry) -> Result<bool> {
        let name = fsops::display(&s.entry.path);
        let file = match std::fs::File::open(&s.full) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                self.errors.push(format!("{name}: opening: {e}"));
                return Ok(true);
            }
        };
        let md = file.metadata().map_err(|e| Error::io("reading", &s.full, e))?;
        let mut entry = wire_entry(s);
        // What we send is what the file holds now; mtime from the scan keeps the next pass honest.
        entry.size = md.len();
        let extents = fsops::data_extents(&file, &md);
        let stream = self.conn.open_stream();
        self.conn
            .send(Body::PutFile(PutFile {
                entry: Some(entry.clone()),
                stream: stream.id(),
                extents: extents.iter().map(|&(offset, len)| Extent { offset, len }).collect(),
                ..Default::default()
            }))
            .await?;
        let mut buf = std::mem::take(&mut self.buf);
        let need = (entry.size as usize).min(CHUNK);
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let result = self.send_extents(s, &file, &extents, &mut buf, stream, entry).await;
        self.buf = buf;
        result
    }

    /// The data part of [`Sender::send_whole`], reading through `buf`.
    async fn send_extents(
        &mut self,
        s: &SourceEntry,
        file: &std::fs::File,
        extents: &[(u64, u64)],
        buf: &mut [u8],
        mut stream: crate::proto::StreamSender,
        entry: FileEntry,
    ) -> Result<bool> {
        let name = fsops::display(&s.entry.path);
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        let mut read_error = None;
        'extents: for &(off, len) in extents {
            hash_zeros(&mut hasher, off - pos);
            let mut done = 0u64;
            while done < len {
                let want = ((len - done) as usize).min(CHUNK);
                let chunk = &mut buf[..want];
                let mut filled = 0;
                while filled < want {
                    match file.read_at(&mut chunk[filled..], off + done + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            read_error = Some(format!("{name}: reading: {e}"));
                            break 'extents;
                        }
                    }
                }
                // A file that shrank while we read it is padded with zeros; its new mtime makes
                // the next pass send it again.
                chunk[filled..].fill(0);
                hasher.update(chunk);
                stream.send(chunk).await?;
                done += want as u64;
                self.stats.bytes_data += want as u64;
                self.progress.bytes_done += want as u64;
                report(self.opts, self.progress);
            }
            pos = off + len;
        }
        if let Some(err) = read_error {
            stream.abort(&err).await?;
            self.conn.send(Body::FileCommit(FileCommit { path: entry.path, blake3: Vec::new() })).await?;
            self.errors.push(err);
            return Ok(true);
        }
        hash_zeros(&mut hasher, entry.size - pos);
        // Holes count as done for progress.
        self.progress.bytes_done += entry.size - extents.iter().map(|e| e.1).sum::<u64>();
        stream.finish().await?;
        let digest = hasher.finalize();
        self.copies.record(&entry.path, entry.size, &digest);
        self.conn.send(Body::FileCommit(FileCommit { path: entry.path, blake3: digest.as_bytes().to_vec() })).await?;
        self.stats.files_sent += 1;
        Ok(true)
    }

    /// Send an rsync delta against the destination's copy.
    async fn send_delta(&mut self, idx: usize, s: &SourceEntry) -> Result<DeltaOutcome> {
        let reply = self.signature_reply(idx, s).await?;
        let Body::SignatureReply(sig) = reply else {
            return Err(Error::Protocol(format!("expected SignatureReply, got {}", reply.name())));
        };
        if sig.signature.is_empty() {
            return Ok(DeltaOutcome::Whole);
        }
        let name = fsops::display(&s.entry.path);
        // The file may have changed since the plan: what we read now is what we send, and the
        // destination refuses deltas of files over its limit.
        let limit = self.opts.delta_max.min(super::DEFAULT_DELTA_MAX);
        let mut data = Vec::new();
        match read_small(&s.full, s.entry.size, limit, &mut data) {
            Ok(true) => {}
            Ok(false) => return Ok(DeltaOutcome::Whole),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DeltaOutcome::Vanished),
            Err(e) => {
                self.errors.push(format!("{name}: reading: {e}"));
                return Ok(DeltaOutcome::Sent);
            }
        }
        let signature = fast_rsync::Signature::deserialize(sig.signature)
            .map_err(|e| Error::Protocol(format!("{name}: bad rsync signature from the peer: {e}")))?;
        let mut delta = Vec::new();
        fast_rsync::diff(&signature.index(), &data, &mut delta).map_err(|e| Error::sync(name.clone(), format!("computing the delta: {e}")))?;
        let digest = blake3::hash(&data);
        self.put_delta(s, data.len() as u64, delta, digest).await
    }

    /// A file that may only have grown since it was sent: when its first bytes still hash
    /// to what the destination holds, send the rest as a delta that keeps them. `None` when
    /// it did not only grow (the caller sends a signature delta or the whole file).
    async fn send_append(&mut self, s: &SourceEntry) -> Result<Option<DeltaOutcome>> {
        let Some(copy) = self.copies.get(&s.entry.path) else {
            return Ok(None);
        };
        let limit = self.opts.delta_max.min(super::DEFAULT_DELTA_MAX);
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < CHUNK {
            buf.resize(CHUNK, 0);
        }
        let grown = read_grown(&s.full, copy, limit, &mut buf);
        self.buf = buf;
        let (hasher, tail) = match grown {
            Ok(Some(grown)) => grown,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(DeltaOutcome::Vanished)),
            Err(_) => return Ok(None),
        };
        let delta = append_delta(copy.len, &tail);
        self.stats.append_files += 1;
        self.put_delta(s, copy.len + tail.len() as u64, delta, hasher.finalize()).await.map(Some)
    }

    /// Send `delta`, which turns the destination's copy into the `len` bytes whose digest is
    /// `digest`.
    async fn put_delta(&mut self, s: &SourceEntry, len: u64, delta: Vec<u8>, digest: blake3::Hash) -> Result<DeltaOutcome> {
        let mut entry = wire_entry(s);
        entry.size = len;
        self.copies.record(&entry.path, len, &digest);
        let digest = digest.as_bytes().to_vec();
        self.stats.bytes_data += delta.len() as u64;
        if self.batching && delta.len() <= CHUNK {
            // One message: no stream to open and no FileCommit to wait for on the other side.
            self.conn.send(Body::PutFile(PutFile { entry: Some(entry), delta: true, data: delta, blake3: digest, ..Default::default() })).await?;
        } else {
            let mut stream = self.conn.open_stream();
            self.conn.send(Body::PutFile(PutFile { entry: Some(entry.clone()), stream: stream.id(), delta: true, ..Default::default() })).await?;
            for chunk in delta.chunks(CHUNK) {
                stream.send(chunk).await?;
            }
            stream.finish().await?;
            self.conn.send(Body::FileCommit(FileCommit { path: entry.path, blake3: digest })).await?;
        }
        self.progress.bytes_done += s.entry.size;
        self.stats.files_sent += 1;
        self.stats.delta_files += 1;
        Ok(DeltaOutcome::Sent)
    }
}

fn signature_request(s: &SourceEntry) -> Body {
    let block_size = ((s.entry.size as f64).sqrt() as u32).clamp(512, 128 << 10) & !63;
    Body::GetSignature(GetSignature { path: s.entry.path.clone(), block_size })
}

/// A file that may only have grown since `copy` of it was sent: when its first `copy.len`
/// bytes (hashed through `buf`, never held whole) still have `copy`'s digest, the rest of
/// it, and the digest of the whole file so far. `None` when it did not only grow, or would
/// be larger than `limit`.
fn read_grown(path: &Path, copy: SentCopy, limit: u64, buf: &mut [u8]) -> std::io::Result<Option<(blake3::Hasher, Vec<u8>)>> {
    let f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0u64;
    while pos < copy.len {
        let want = ((copy.len - pos) as usize).min(buf.len());
        match f.read_at(&mut buf[..want], pos) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                hasher.update(&buf[..n]);
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if hasher.finalize().as_bytes() != &copy.blake3 {
        return Ok(None);
    }
    let mut tail = Vec::new();
    let room = limit.saturating_sub(copy.len);
    let mut f = f;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(copy.len))?;
    f.take(room.saturating_add(1)).read_to_end(&mut tail)?;
    if tail.is_empty() || tail.len() as u64 > room {
        return Ok(None);
    }
    hasher.update(&tail);
    Ok(Some((hasher, tail)))
}

/// Append all of a file expected to hold `expect` bytes to `out`; `Ok(false)` (and `out` as it
/// was) if it holds more than `limit`. A read that returns exactly the expected size is taken
/// as the whole file (a file growing meanwhile has a new mtime: the next pass sends it again).
fn read_small(path: &Path, expect: u64, limit: u64, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let start = out.len();
    let mut room = expect.min(limit) as usize + 1;
    out.resize(start + room, 0);
    let mut filled = 0;
    let result = loop {
        match f.read(&mut out[start + filled..]) {
            Ok(0) => break Ok(true),
            Ok(n) => {
                filled += n;
                if filled as u64 == expect {
                    break Ok(true);
                }
                if filled == room {
                    if filled as u64 > limit {
                        break Ok(false);
                    }
                    room = (room * 2).min(limit as usize + 1);
                    out.resize(start + room, 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let keep = if matches!(result, Ok(true)) { filled } else { 0 };
    out.truncate(start + keep);
    result
}

static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

pub(crate) fn hash_zeros(h: &mut blake3::Hasher, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_delta_keeps_the_old_bytes_and_adds_the_tail() {
        let old: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        for (keep, tail) in [(old.len(), &b"appended bytes"[..]), (old.len(), &[][..]), (0, &b"all new"[..]), (1000, &[7u8; 300][..])] {
            let delta = append_delta(keep as u64, tail);
            let mut out = Vec::new();
            fast_rsync::apply(&old, &delta, &mut out).unwrap();
            let mut want = old[..keep].to_vec();
            want.extend_from_slice(tail);
            assert!(out == want, "keep {keep}, tail {}", tail.len());
        }
    }

    #[test]
    fn forgetting_a_tree_forgets_what_is_below_it_only() {
        let mut c = SentCopies::default();
        for p in [&b"a"[..], b"a/b", b"a/b/c", b"ab", b"b"] {
            c.record(p, 1, &blake3::hash(p));
        }
        c.forget_tree(b"a");
        assert!(c.get(b"a").is_none() && c.get(b"a/b").is_none() && c.get(b"a/b/c").is_none());
        assert!(c.get(b"ab").is_some() && c.get(b"b").is_some());
    }
}
