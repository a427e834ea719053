//! The sending side of a pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ferry_tree::{Dir, Opened, Stat};
use prost::Message;

use super::digest::{dense_digest, hash_zeros, Layout};
use super::plan::{plan, Op};
use super::scan::{scan_source, Previous, SourceEntry};
use super::{fsops, PassStats, Progress, SyncOptions};
use crate::error::{Error, Result};
use crate::proto::{
    Body, Connection, Delete, Extent, FileCommit, FileEntry, GetSignature, Hardlink, PendingReply, PutFile, PutFiles, SyncBegin, SyncBeginAck,
    SyncEnd,
};

/// The largest manifest summary (uncompressed) we accept from the destination, whatever it
/// announces.
const MAX_SUMMARY: usize = 1 << 30;
/// The most entries a summary may hold: the destination's tree is about the source's, so at
/// most this many times the source's entries (and this many more: a stale kept copy)...
const SUMMARY_ENTRIES_PER_SOURCE_ENTRY: usize = 4;
const SUMMARY_ENTRIES_SLACK: usize = 1 << 20;
/// ... and never more than this (each decoded entry costs a few hundred bytes of memory).
const MAX_SUMMARY_ENTRIES: usize = 16 << 20;
const CHUNK: usize = 1 << 20;
/// Size of an extent record's header on a data stream (offset and length, u64 BE each).
pub(crate) const RECORD_HEADER: usize = 16;
/// With peers of protocol 1.0 a file's extents go in its PutFile: a file with more than this
/// many goes dense to them (its holes as zeros).
const LEGACY_MAX_EXTENTS: usize = 4096;
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
    /// blake3 of its data (all of its bytes when `dense`).
    pub blake3: [u8; 32],
    /// It went with all of its bytes as data (no holes): only then can its tail be checked
    /// against `blake3` by reading the file from the start.
    pub dense: bool,
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
    fn record(&mut self, path: &[u8], len: u64, data: &blake3::Hash, dense: bool) {
        self.0.insert(path.to_vec(), SentCopy { len, blake3: *data.as_bytes(), dense });
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
    let root_path = src_dir.to_path_buf();
    let xattrs = opts.xattrs;
    // Both sides walk their trees at the same time: ours here, theirs once SyncBegin arrives.
    let from_baseline = baseline.is_some();
    // With a baseline, what it holds of an entry whose inode did not change is not read again.
    let scan = tokio::task::spawn_blocking(move || {
        let previous = baseline.as_ref().map(|b| Previous::new(&b.entries, &b.settled_ctimes));
        let scanned = open_tree(&root_path).and_then(|root| scan_source(&root, xattrs, previous.as_ref()).map(|entries| (Arc::new(root), entries)));
        (scanned, baseline)
    });
    let summary = fetch_summary(conn, opts, from_baseline).await;
    let (scanned, baseline) = match scan.await {
        Ok((scanned, baseline)) => (scanned, baseline),
        Err(source) => (Err(Error::Task { what: format!("sync {}: scan task failed", src_dir.display()), source }), None),
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "sync pass: both trees scanned");
    let (ack, summary) = summary?;
    let (root, entries) = match scanned {
        Ok(s) => s,
        Err(e) => {
            // The destination is inside the pass already: end it (nothing was sent, so nothing
            // changes there) to leave the connection usable, then report the scan's failure.
            let _ = conn.request(Body::SyncEnd(SyncEnd { pass: opts.pass, ..Default::default() })).await;
            return Err(e);
        }
    };
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::after_scan(src_dir);

    let destination_walked = summary.is_some();
    let summary = match summary {
        Some(raw) => {
            let limit = (entries.len().saturating_mul(SUMMARY_ENTRIES_PER_SOURCE_ENTRY) + SUMMARY_ENTRIES_SLACK).min(MAX_SUMMARY_ENTRIES);
            // A destination that breaks its own announcement is not waited for any longer.
            Some(decode_summary(&raw, ack.entries, limit)?)
        }
        None => None,
    };
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
                if copies_in.get(&e.path).is_some_and(|c| c.len < e.size && c.dense) {
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
        root: &root,
        layouts: ack.extent_records,
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
        other => return Err(Error::UnexpectedReply { expected: "SyncEndAck", got: other.name() }),
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
    // while it was read differs from the scan here and goes again next time). A file that
    // vanished or changed into something else since the scan was not sent: the next pass
    // compares with the destination's own summary and sends what it now is.
    let after = (!vanished).then(|| Baseline {
        settled_ctimes: entries.iter().map(|s| s.settled_ctime).collect(),
        entries: entries.into_iter().map(|s| s.entry).collect(),
    });
    Ok((stats, after))
}

/// The tree to send, open.
fn open_tree(root: &Path) -> Result<Dir> {
    Dir::open(root).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => Error::sync(root.display().to_string(), "the tree's root is not a directory"),
        Some(libc::ELOOP) => Error::sync(root.display().to_string(), "the tree's root is a symlink (not followed)"),
        _ => Error::io("opening the tree", root, e),
    })
}

/// Start the pass on the destination and read its summary, uncompressed but not decoded yet
/// (None when it skipped it because `no_summary` asked it to). The summary may not be larger
/// than the destination announced (when it did), nor than [`MAX_SUMMARY`].
async fn fetch_summary(conn: &Connection, opts: &SyncOptions, no_summary: bool) -> Result<(SyncBeginAck, Option<Vec<u8>>)> {
    let begin = SyncBegin { pass: opts.pass, ctid: opts.ctid.clone(), xattrs: opts.xattrs, no_summary, extent_records: true };
    let ack = match conn.request(Body::SyncBegin(begin)).await? {
        Body::SyncBeginAck(a) => a,
        other => return Err(Error::UnexpectedReply { expected: "SyncBeginAck", got: other.name() }),
    };
    if ack.summary_skipped {
        return Ok((ack, None));
    }
    let announced = usize::try_from(ack.summary_bytes).unwrap_or(usize::MAX);
    let limit = if ack.summary_bytes > 0 { announced.min(MAX_SUMMARY) } else { MAX_SUMMARY };
    if ack.summary_bytes > 0 && announced > MAX_SUMMARY {
        return Err(Error::Protocol(format!("the destination announces a summary of {announced} bytes, more than the {MAX_SUMMARY} accepted")));
    }
    let mut rx = conn.accept_stream(ack.manifest_stream)?;
    // Compressed, it is smaller than what it decompresses to (zstd adds a few bytes per block
    // to what it cannot shrink).
    let raw = rx.read_to_end(limit + limit / 64 + (64 << 10)).await?;
    let raw = match ack.compression.as_str() {
        "" => raw,
        "zstd" => decompress_bounded(&raw, limit)?,
        other => return Err(Error::Protocol(format!("manifest summary in unknown compression {other:?}"))),
    };
    if raw.len() > limit || (ack.summary_bytes > 0 && raw.len() != announced) {
        return Err(Error::Protocol(format!(
            "the destination's summary holds {} bytes, not the {} it announced (at most {limit} accepted)",
            raw.len(),
            ack.summary_bytes
        )));
    }
    Ok((ack, Some(raw)))
}

/// zstd-decompress at most `limit` bytes; more is an error (never allocated).
fn decompress_bounded(raw: &[u8], limit: usize) -> Result<Vec<u8>> {
    let bad = |e: std::io::Error| Error::Corrupt { what: "bad compressed manifest summary".into(), source: Box::new(e) };
    let decoder = zstd::stream::read::Decoder::new(raw).map_err(bad)?;
    let mut out = Vec::with_capacity(limit.min(64 << 20));
    decoder.take(limit as u64 + 1).read_to_end(&mut out).map_err(bad)?;
    if out.len() > limit {
        return Err(Error::Protocol(format!("the destination's summary decompresses to more than the {limit} bytes announced or accepted")));
    }
    Ok(out)
}

/// Decode the summary's entries: no more than it announced (when it did) nor than `limit`.
fn decode_summary(mut raw: &[u8], announced: u64, limit: usize) -> Result<Vec<FileEntry>> {
    if announced > limit as u64 {
        return Err(Error::Protocol(format!(
            "the destination announces a summary of {announced} entries, more than the {limit} taken for this tree; if it holds a stale copy, remove it there"
        )));
    }
    let limit = if announced > 0 { announced as usize } else { limit };
    let mut out = Vec::with_capacity(limit.min(1 << 16));
    while !raw.is_empty() {
        if out.len() == limit {
            return Err(Error::Protocol(format!(
                "the destination's summary holds more entries than the {announced} it announced (at most {limit} are taken); refused to decode the rest"
            )));
        }
        let e = FileEntry::decode_length_delimited(&mut raw).map_err(|e| Error::decode("bad manifest summary entry", e))?;
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
    /// The tree being sent, open: every file is opened beneath it.
    root: &'a Dir,
    /// The destination takes whole files as extent records and checks layout-aware digests
    /// (protocol 1.1, see `digest`).
    layouts: bool,
    stats: &'a mut PassStats,
    progress: &'a mut Progress,
    /// Source-side failures that do not break the protocol (a file unreadable mid-way).
    errors: Vec<String>,
    /// Files that disappeared since the scan (a running container deletes files), or are
    /// another inode by now: their other hardlink names are skipped too. The next pass deletes
    /// them on the destination, or sends what is there now.
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
    /// The file is gone since the scan, or is not the inode scanned any more.
    Vanished,
}

/// The scanned regular file, opened to read. `None` when it vanished, or when what is there now
/// is not the inode scanned (another file, a symlink, a FIFO, a directory on the way replaced
/// by a symlink, ...): never followed, never opened; the next pass sends it as what it is then.
fn open_scanned(root: &Dir, s: &SourceEntry) -> std::io::Result<Option<(File, Stat)>> {
    match root.open_file_beneath(&s.entry.path, false, Some(&s.stat))? {
        Opened::File(f, st) => Ok(Some((f, st))),
        Opened::Changed(now) => {
            tracing::debug!("{}: changed since the scan (now {}); left for the next pass", fsops::display(&s.entry.path), now.kind().describe());
            Ok(None)
        }
        Opened::Gone => Ok(None),
    }
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
        if self.batching && s.stat.is_dense() && s.entry.size <= INLINE_MAX {
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
        let read = open_scanned(self.root, s).and_then(|f| match f {
            Some((f, _)) => read_small(&f, s.entry.size, INLINE_MAX, &mut self.batch_data).map(Some),
            None => Ok(None),
        });
        match read {
            Ok(Some(true)) => {}
            Ok(Some(false)) => return Ok(None),
            Ok(None) => return Ok(Some(false)),
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
        self.copies.record(&entry.path, entry.size, &digest, true);
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

    /// Send the whole file: its data extents (found with SEEK_DATA / SEEK_HOLE however many
    /// there are; holes are never read or sent). A file that vanished or changed since the
    /// scan is skipped (`Ok(false)`; the next pass deals with it).
    async fn send_whole(&mut self, s: &SourceEntry) -> Result<bool> {
        let name = fsops::display(&s.entry.path);
        let (file, st) = match open_scanned(self.root, s) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => {
                self.errors.push(format!("{name}: opening: {e}"));
                return Ok(true);
            }
        };
        let mut entry = wire_entry(s);
        // What we send is what the file holds now; mtime from the scan keeps the next pass honest.
        entry.size = st.size;
        // Peers of protocol 1.0 need the extents up front, in the PutFile.
        let legacy = if self.layouts { None } else { Some(legacy_extents(&file, &st)) };
        let stream = self.conn.open_stream();
        let extents = legacy.as_deref().unwrap_or_default().iter().map(|&(offset, len)| Extent { offset, len }).collect();
        self.conn.send(Body::PutFile(PutFile { entry: Some(entry.clone()), stream: stream.id(), extents, ..Default::default() })).await?;
        let mut buf = std::mem::take(&mut self.buf);
        let need = (entry.size as usize).saturating_add(RECORD_HEADER).min(CHUNK);
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let result = self.send_extents(&file, &st, legacy, &mut buf, stream, entry).await;
        self.buf = buf;
        result
    }

    /// The data part of [`Sender::send_whole`], reading through `buf`: each extent as a record
    /// (its offset and length, then its bytes) or, to a peer of protocol 1.0, the `legacy`
    /// extents' bytes back to back with the holes hashed as zeros.
    async fn send_extents(
        &mut self,
        file: &File,
        st: &Stat,
        legacy: Option<Vec<(u64, u64)>>,
        buf: &mut [u8],
        mut stream: crate::proto::StreamSender,
        entry: FileEntry,
    ) -> Result<bool> {
        let name = fsops::display(&entry.path);
        let size = st.size;
        let mut data = blake3::Hasher::new();
        let mut layout = Layout::default();
        let mut pos = 0u64;
        let mut sent_data = 0u64;
        let mut read_error = None;
        let records = legacy.is_none();
        let mut extents = ExtentSource::new(file, st, legacy);
        'extents: loop {
            let (off, len) = match extents.next() {
                None => break,
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    read_error = Some(format!("{name}: finding its data: {e}"));
                    break;
                }
            };
            let mut head = 0;
            if records {
                layout.extent(off, len);
                buf[..8].copy_from_slice(&off.to_be_bytes());
                buf[8..RECORD_HEADER].copy_from_slice(&len.to_be_bytes());
                head = RECORD_HEADER;
            } else {
                hash_zeros(&mut data, off - pos);
            }
            let mut done = 0u64;
            while done < len || head > 0 {
                let want = ((len - done) as usize).min(buf.len() - head);
                let chunk = &mut buf[head..head + want];
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
                data.update(chunk);
                stream.send(&buf[..head + want]).await?;
                head = 0;
                done += want as u64;
                self.stats.bytes_data += want as u64;
                self.progress.bytes_done += want as u64;
                report(self.opts, self.progress);
            }
            sent_data += len;
            pos = off + len;
        }
        if let Some(err) = read_error {
            stream.abort(&err).await?;
            self.conn.send(Body::FileCommit(FileCommit { path: entry.path, blake3: Vec::new() })).await?;
            self.errors.push(err);
            return Ok(true);
        }
        // Holes count as done for progress.
        self.progress.bytes_done += size - sent_data;
        stream.finish().await?;
        let (digest, data_digest, dense) = if records {
            let data_digest = data.finalize();
            (layout.file_digest(&data_digest, size), data_digest, sent_data == size)
        } else {
            hash_zeros(&mut data, size - pos);
            let d = data.finalize();
            (*d.as_bytes(), d, true)
        };
        self.copies.record(&entry.path, size, &data_digest, dense);
        self.conn.send(Body::FileCommit(FileCommit { path: entry.path, blake3: digest.to_vec() })).await?;
        self.stats.files_sent += 1;
        Ok(true)
    }

    /// Send an rsync delta against the destination's copy.
    async fn send_delta(&mut self, idx: usize, s: &SourceEntry) -> Result<DeltaOutcome> {
        let reply = self.signature_reply(idx, s).await?;
        let Body::SignatureReply(sig) = reply else {
            return Err(Error::UnexpectedReply { expected: "SignatureReply", got: reply.name() });
        };
        if sig.signature.is_empty() {
            return Ok(DeltaOutcome::Whole);
        }
        let name = fsops::display(&s.entry.path);
        // The file may have changed since the plan: what we read now is what we send, and the
        // destination refuses deltas of files over its limit.
        let limit = self.opts.delta_max.min(super::DEFAULT_DELTA_MAX);
        let mut data = Vec::new();
        let read = open_scanned(self.root, s).and_then(|f| match f {
            // Sparse by now: whole, as its extents.
            Some((_, st)) if !st.is_dense() => Ok(Some(false)),
            Some((f, _)) => read_small(&f, s.entry.size, limit, &mut data).map(Some),
            None => Ok(None),
        });
        match read {
            Ok(Some(true)) => {}
            Ok(Some(false)) => return Ok(DeltaOutcome::Whole),
            Ok(None) => return Ok(DeltaOutcome::Vanished),
            Err(e) => {
                self.errors.push(format!("{name}: reading: {e}"));
                return Ok(DeltaOutcome::Sent);
            }
        }
        let signature = fast_rsync::Signature::deserialize(sig.signature)
            .map_err(|e| Error::Corrupt { what: format!("{name}: bad rsync signature from the peer"), source: Box::new(e) })?;
        let mut delta = Vec::new();
        fast_rsync::diff(&signature.index(), &data, &mut delta).map_err(|e| Error::Delta {
            path: name.clone(),
            what: "computing the delta",
            source: Box::new(e),
        })?;
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
        let grown = open_scanned(self.root, s).and_then(|f| match f {
            Some((f, st)) if st.is_dense() => read_grown(&f, copy, limit, &mut buf).map(Some),
            Some(_) => Ok(Some(None)),
            None => Ok(None),
        });
        self.buf = buf;
        let (hasher, tail) = match grown {
            Ok(Some(Some(grown))) => grown,
            Ok(Some(None)) => return Ok(None),
            Ok(None) => return Ok(Some(DeltaOutcome::Vanished)),
            Err(_) => return Ok(None),
        };
        let delta = append_delta(copy.len, &tail);
        self.stats.append_files += 1;
        self.put_delta(s, copy.len + tail.len() as u64, delta, hasher.finalize()).await.map(Some)
    }

    /// Send `delta`, which turns the destination's copy into the `len` bytes whose blake3 is
    /// `data`.
    async fn put_delta(&mut self, s: &SourceEntry, len: u64, delta: Vec<u8>, data: blake3::Hash) -> Result<DeltaOutcome> {
        let mut entry = wire_entry(s);
        entry.size = len;
        self.copies.record(&entry.path, len, &data, true);
        let digest = dense_digest(&data, len, self.layouts).to_vec();
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
fn read_grown(f: &File, copy: SentCopy, limit: u64, buf: &mut [u8]) -> std::io::Result<Option<(blake3::Hasher, Vec<u8>)>> {
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
fn read_small(mut f: &File, expect: u64, limit: u64, out: &mut Vec<u8>) -> std::io::Result<bool> {
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

/// Where a whole file's data lies, as [`Sender::send_extents`] reads it.
enum ExtentSource<'a> {
    /// One extent known without a seek (a dense file), or none left.
    Known(std::vec::IntoIter<(u64, u64)>),
    /// Found as the file is read (SEEK_DATA / SEEK_HOLE).
    Sought(ferry_tree::extents::DataExtents<'a>),
}

impl<'a> ExtentSource<'a> {
    fn new(file: &'a File, st: &Stat, legacy: Option<Vec<(u64, u64)>>) -> Self {
        match legacy {
            Some(list) => ExtentSource::Known(list.into_iter()),
            None if st.size == 0 => ExtentSource::Known(Vec::new().into_iter()),
            None if st.is_dense() => ExtentSource::Known(vec![(0, st.size)].into_iter()),
            None => ExtentSource::Sought(ferry_tree::extents::data_extents(file, st.size)),
        }
    }
}

impl Iterator for ExtentSource<'_> {
    type Item = std::io::Result<(u64, u64)>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ExtentSource::Known(it) => it.next().map(Ok),
            ExtentSource::Sought(it) => it.next(),
        }
    }
}

/// A file's extents for a peer of protocol 1.0 (in its PutFile): dense when it has very many.
fn legacy_extents(file: &File, st: &Stat) -> Vec<(u64, u64)> {
    if st.size == 0 {
        return Vec::new();
    }
    if st.is_dense() {
        return vec![(0, st.size)];
    }
    let mut out = Vec::new();
    for x in ferry_tree::extents::data_extents(file, st.size) {
        match x {
            Ok(x) if out.len() < LEGACY_MAX_EXTENTS => out.push(x),
            _ => return vec![(0, st.size)],
        }
    }
    out
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
            c.record(p, 1, &blake3::hash(p), true);
        }
        c.forget_tree(b"a");
        assert!(c.get(b"a").is_none() && c.get(b"a/b").is_none() && c.get(b"a/b/c").is_none());
        assert!(c.get(b"ab").is_some() && c.get(b"b").is_some());
    }
}
