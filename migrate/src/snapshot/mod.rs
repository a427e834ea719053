//! Snapshots: a checkpoint plus the files at that moment, kept in a local store
//! (see [`store`] for the layout and docs/snapshots.md for the design).
//!
//! A stateful snapshot of a running container copies its files while it runs (hardlinking
//! what the previous snapshot already holds), freezes it, dumps its processes leaving it
//! running, syncs what changed meanwhile *while still frozen* (so files and memory agree),
//! thaws, and writes the dump as `state.img`. On btrfs the copy is one read-only subvolume
//! snapshot taken inside the freeze.

mod error;
pub mod schedule;
pub mod store;
pub mod tree;

use crate::checkpoint as ckpt;
use ferry_dump_format as fmt;
use ferry_runtime::config::StorageKind;
use ferry_runtime::container::{self, CheckpointOpts, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::storage::{self, btrfs};
use ferry_runtime::{ContainerConfig, Ctid, Host};
use ferry_transfer::sync::{sync_local_blocking, LocalSyncOptions};
use ferry_transfer::sync::{ReceiveOptions, SyncOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;
pub use store::{SnapshotMeta, Usage};

/// Section name of the file tree in an exported image.
pub const TREE_SECTION: &str = "rootfs";

use error::err;
pub use error::{Cause, Error, Result};

/// `prefix` and 16 random hex digits: a name nothing could have prepared, for a directory made
/// with create_dir (which refuses an existing name).
fn unpredictable(prefix: &str) -> std::result::Result<String, Cause> {
    let name =
        ferry_tree::temp::temp_name(prefix.as_bytes()).map_err(|e| Cause::Entry { entry: prefix.to_string(), what: "random name", source: e })?;
    Ok(String::from_utf8_lossy(&name).into_owned())
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Options of [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub name: Option<String>,
    /// Files only, even for a running container.
    pub stateless: bool,
    /// Taken by the schedule.
    pub auto: bool,
    /// Creation time (unix secs); None = now. `run-due` passes its clock.
    pub created: Option<i64>,
}

fn sync_into(src: &Path, dst: &Path, link_dest: Option<&Path>, pass: u32, ct: &Ctid) -> std::result::Result<(), Cause> {
    let opts = LocalSyncOptions {
        // Local copies: reading both sides for a delta costs more than writing the file anew.
        sync: SyncOptions { pass, ctid: ct.to_string(), delta_min: u64::MAX, ..SyncOptions::default() },
        receive: ReceiveOptions { link_dest: link_dest.map(Path::to_path_buf), fsync: false },
    };
    sync_local_blocking(src, dst, &opts).map(|_| ()).map_err(|e| Cause::from(e).context(format!("copy {} to {}", src.display(), dst.display())))
}

/// Take a snapshot; the caller holds the container's lock. A failure leaves the container as
/// it was (running and thawed, or stopped) and no snapshot in the list.
pub fn create(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, opts: &CreateOpts) -> Result<SnapshotMeta> {
    let ct = lock.ctid();
    let t0 = Instant::now();
    if let Some(n) = &opts.name {
        if n.is_empty() || n.len() > 200 || n.contains('\n') {
            return Err(err(ct, "create", Cause::msg("a name is one line of at most 200 characters")));
        }
    }
    store::remove_stale_tmp(host, ct);
    let created = opts.created.unwrap_or_else(now_secs);
    let id = store::new_id(created);
    let previous = store::list(host, ct).into_iter().last();
    let tmp = store::tmp_dir(host, ct, &id);
    let store_dir = store::store_dir(host, ct);
    std::fs::create_dir_all(&store_dir).map_err(|e| err(ct, "create", Cause::io("create", &store_dir, e)))?;
    // A name of its own (the id has a random part): never one that was there before.
    std::fs::create_dir(&tmp).map_err(|e| err(ct, "create", Cause::io("create", &tmp, e)))?;
    let res = build(host, lock, cfg, opts, &id, created, previous.as_ref(), &tmp, t0);
    let meta = match res {
        Ok(m) => m,
        Err(e) => {
            let _ = store::remove_dir(&tmp);
            return Err(e);
        }
    };
    let dst = store::snap_dir(host, ct, &id);
    if let Err(e) = std::fs::rename(&tmp, &dst) {
        let _ = store::remove_dir(&tmp);
        return Err(err(ct, "create", Cause::Os(e).context(format!("rename {} to {}", tmp.display(), dst.display()))));
    }
    Ok(meta)
}

#[allow(clippy::too_many_arguments)]
fn build(
    host: &Host,
    lock: &ContainerLock,
    cfg: &ContainerConfig,
    opts: &CreateOpts,
    id: &str,
    created: i64,
    previous: Option<&SnapshotMeta>,
    tmp: &Path,
    t0: Instant,
) -> Result<SnapshotMeta> {
    let ct = lock.ctid();
    let running = container::status(host, ct).map_err(|e| err(ct, "create", e))?.0 == Status::Running;
    let stateful = running && !opts.stateless;
    let files = tmp.join(store::FILES_DIR);
    let use_btrfs = cfg.storage.kind == StorageKind::Btrfs;
    let prev_files = previous.map(|p| store::snap_dir(host, ct, &p.id).join(store::FILES_DIR)).filter(|p| p.is_dir() && !btrfs::is_subvolume(p));

    let (src, mounted) = storage::files_dir(host, cfg).map_err(|e| err(ct, "create", Cause::from(e)))?;
    let unmount = |m: bool| {
        if m {
            let _ = storage::unmount_root(host, cfg);
        }
    };
    let copy_all = |pass: u32| -> std::result::Result<(), Cause> {
        if use_btrfs {
            Ok(btrfs::snapshot(&src, &files, true)?)
        } else {
            sync_into(&src, &files, prev_files.as_deref(), pass, ct)
        }
    };
    let mut frozen_ms = 0;
    let mut state_bytes = 0;
    if stateful {
        // Copy while running: the freeze then only waits for what changed meanwhile.
        if !use_btrfs {
            copy_all(1).map_err(|e| err(ct, "create", e))?;
        }
        let images = tmp.join("criu");
        let copts = CheckpointOpts { keep_running: true, ..CheckpointOpts::default() };
        // The runtime's hook takes the copy's failure as words.
        let info = container::checkpoint_to_dir_frozen(host, lock, cfg, &images, &copts, &mut || copy_all(2).map_err(|e| e.to_string()))
            .map_err(|e| err(ct, "create", e))?;
        // From the freeze to the thaw (and the few writes after it).
        frozen_ms = info.frozen_at.map(|t| t.elapsed().as_millis() as u64).unwrap_or(info.freeze_ms + info.dump_ms);
        let img = tmp.join(store::STATE_IMAGE);
        // It holds the container's memory: 0600 from its creation, never an existing file.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&img)
            .map_err(|e| err(ct, "create", Cause::io("create", &img, e)))?;
        let w = ckpt::write_image_to(cfg, &info.meta, &images, std::io::BufWriter::new(f), None, fmt::FORMAT_MAJOR, &mut |_| {})
            .map_err(|e| err(ct, "create", e))?;
        let f = w.into_inner().map_err(|e| err(ct, "create", Cause::io("write", &img, e.into_error())))?;
        f.sync_all().map_err(|e| err(ct, "create", Cause::io("fsync", &img, e)))?;
        state_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_dir_all(&images);
    } else {
        let r = copy_all(1);
        unmount(mounted);
        r.map_err(|e| err(ct, "create", e))?;
    }
    let meta = SnapshotMeta {
        id: id.to_string(),
        name: opts.name.clone(),
        created,
        stateful,
        auto: opts.auto,
        files_bytes: store::tree_bytes(&files),
        state_bytes,
        btrfs: use_btrfs,
        frozen_ms,
        total_ms: t0.elapsed().as_millis() as u64,
        taken_ns: store::wall_ns(),
    };
    store::save_meta(tmp, &meta).map_err(|e| err(ct, "create", e))?;
    Ok(meta)
}

/// Find a snapshot by id or name.
pub fn find(host: &Host, ct: &Ctid, id: &str) -> Result<SnapshotMeta> {
    let all = store::list(host, ct);
    all.iter()
        .find(|m| m.id == id)
        .or_else(|| all.iter().rev().find(|m| m.name.as_deref() == Some(id)))
        .cloned()
        .ok_or_else(|| err(ct, "find", Cause::msg(format!("no snapshot {id:?}; `ferry snapshot list {ct}` shows them"))))
}

/// Delete one snapshot. Others sharing files with it keep theirs (hardlinks keep the data
/// while any link is left; btrfs extents likewise).
pub fn delete(host: &Host, _lock: &ContainerLock, id: &str) -> Result<()> {
    let ct = _lock.ctid();
    let m = find(host, ct, id)?;
    store::remove_dir(&store::snap_dir(host, ct, &m.id)).map_err(|e| err(ct, "delete", e))
}

/// Check a snapshot's process image before anything is changed.
pub fn verify_state(host: &Host, ct: &Ctid, m: &SnapshotMeta) -> Result<()> {
    let img = store::snap_dir(host, ct, &m.id).join(store::STATE_IMAGE);
    let f = std::fs::File::open(&img).map_err(|e| err(ct, "restore", Cause::io("open", &img, e).context(format!("snapshot {}", m.id))))?;
    fmt::verify(std::io::BufReader::new(f)).map_err(|e| {
        let context = format!(
            "snapshot {}: its process image {} is damaged; the container was not touched; other snapshots are not affected",
            m.id,
            img.display()
        );
        err(ct, "restore", Cause::from(e).context(context))
    })?;
    Ok(())
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub meta: SnapshotMeta,
    pub pid: i32,
    pub total_ms: u64,
}

/// Put the container back to a snapshot: stop it, switch its files, restore its processes (or
/// start it, for a stateless snapshot). The caller holds the lock.
pub fn restore(host: &Host, lock: &ContainerLock, cfg: &ContainerConfig, id: &str) -> Result<Restored> {
    let ct = lock.ctid();
    let t0 = Instant::now();
    let m = find(host, ct, id)?;
    let dir = store::snap_dir(host, ct, &m.id);
    let files = dir.join(store::FILES_DIR);
    if !files.is_dir() {
        return Err(err(ct, "restore", Cause::msg(format!("snapshot {} has no files/ directory; it is damaged", m.id))));
    }
    if m.stateful {
        verify_state(host, ct, &m)?;
    }
    match container::status(host, ct).map_err(|e| err(ct, "restore", e))?.0 {
        // Its current processes are being replaced: no long grace period.
        Status::Running => container::stop(host, lock, cfg, std::time::Duration::from_secs(1)).map_err(|e| err(ct, "restore", e))?,
        Status::Mounted => container::teardown(host, cfg, None).map_err(|e| err(ct, "restore", e))?,
        Status::Stopped => {}
    }
    switch_files(host, cfg, &files).map_err(|e| err(ct, "restore", e.context(format!("switch files to snapshot {}", m.id))))?;
    // The files are the snapshot's from here: say so if the processes do not come back.
    let stopped_note = |e: Cause| {
        err(
            ct,
            "restore",
            e.context(format!(
                "the container's files are now those of snapshot {}; it is stopped: `ferry start {ct}` starts it on them; its processes did not come back",
                m.id
            )),
        )
    };
    let pid = if m.stateful {
        let r = ckpt::restore_from_image(host, lock, &dir.join(store::STATE_IMAGE), &mut |_| {}).map_err(|e| stopped_note(e.into()))?;
        r.restore.state.pid
    } else {
        container::start(host, lock, cfg).map_err(|e| stopped_note(e.into()))?.pid
    };
    Ok(Restored { meta: m, pid, total_ms: t0.elapsed().as_millis() as u64 })
}

/// Make the (stopped) container's files equal to `files`.
fn switch_files(host: &Host, cfg: &ContainerConfig, files: &Path) -> std::result::Result<(), Cause> {
    let ct = &cfg.ctid;
    if cfg.storage.kind == StorageKind::Btrfs && btrfs::is_subvolume(files) {
        // Swap: a writable snapshot of the snapshot replaces the private subvolume.
        let private = host.private_dir(ct);
        let fresh = private.with_file_name(unpredictable(&format!(".{ct}.restore-"))?);
        btrfs::snapshot(files, &fresh, false)?;
        if let Some(l) = cfg.resources.diskspace {
            let _ = btrfs::set_limit(&fresh, Some(l));
        }
        if let Err(e) = btrfs::delete(&private) {
            let _ = btrfs::delete(&fresh);
            return Err(e.into());
        }
        return std::fs::rename(&fresh, &private).map_err(|e| Cause::Os(e).context(format!("rename {} to {}", fresh.display(), private.display())));
    }
    let (dst, mounted) = storage::files_dir(host, cfg)?;
    let r = sync_into(files, &dst, None, 1, ct);
    if mounted || cfg.storage.kind == StorageKind::Image {
        storage::unmount_root(host, cfg)?;
    }
    r
}

/// Write one self-contained image of a snapshot: config, the CRIU images (stateful), and the
/// file tree. Written to a temporary name next to `out` and renamed.
pub fn export(host: &Host, ct: &Ctid, cfg: &ContainerConfig, id: &str, out: &Path) -> Result<u64> {
    let m = find(host, ct, id)?;
    let dir = store::snap_dir(host, ct, &m.id);
    if m.stateful {
        verify_state(host, ct, &m)?;
    }
    // Mode 0600 from its creation (a stateful snapshot holds the container's memory, and
    // every image its files), an unpredictable name created exclusively, renamed into place.
    let out_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp_file = ferry_runtime::util::private_temp_file(out_dir, &out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .map_err(|e| err(ct, "export", e))?;
    let tmp = tmp_file.path().to_path_buf();
    let (file, tmp_path) = tmp_file.into_parts();
    let res = (|| -> std::result::Result<u64, Cause> {
        let out_w = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut w = if m.stateful {
            let img = dir.join(store::STATE_IMAGE);
            let in_image = |e: fmt::Error| Cause::from(e).context(img.display().to_string());
            let f = std::fs::File::open(&img).map_err(|e| Cause::io("open", &img, e))?;
            let mut r = fmt::Reader::open(std::io::BufReader::new(f)).map_err(in_image)?;
            let mut manifest = r.manifest().clone();
            manifest.sections.clear();
            manifest.config_toml = cfg.to_toml().into_bytes();
            let mut w = fmt::Writer::new(out_w, &manifest, fmt::WriterOptions::default())?;
            while let Some(mut s) = r.next_section().map_err(in_image)? {
                let info = s.info().clone();
                if info.kind == fmt::SectionKind::Config {
                    w.add_bytes(info.kind, &info.name, false, cfg.to_toml().as_bytes())?;
                    let _ = s.read_to_vec(16 << 20);
                    continue;
                }
                w.add_reader(info.kind, &info.name, false, &mut s, None).map_err(in_image)?;
            }
            w
        } else {
            let manifest = ckpt::new_manifest(cfg, "", None);
            let mut w = fmt::Writer::new(out_w, &manifest, fmt::WriterOptions::default())?;
            w.add_bytes(fmt::SectionKind::Config, ckpt::CONFIG_SECTION, false, cfg.to_toml().as_bytes())?;
            w
        };
        tree::add_tree_section(&mut w, TREE_SECTION, &dir.join(store::FILES_DIR))?;
        let buf = w.finish()?;
        let f = buf.into_inner().map_err(|e| Cause::io("flush", &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Cause::io("fsync", &tmp, e))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(len)
    })();
    // Dropping the temporary path on an error removes the file.
    let len = res.map_err(|e| err(ct, "export", e))?;
    tmp_path.persist(out).map_err(|e| err(ct, "export", Cause::io("rename to", out, e.error)))?;
    Ok(len)
}

/// What an image holds, for `restore --from-image`.
#[derive(Debug, Clone)]
pub struct ImageContents {
    pub manifest: fmt::Manifest,
    pub has_tree: bool,
    pub has_processes: bool,
}

pub fn image_contents(path: &Path) -> std::result::Result<ImageContents, Cause> {
    let in_image = |e: fmt::Error| Cause::from(e).context(format!("image {}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| Cause::io("open image", path, e))?;
    let mut r = fmt::Reader::open(std::io::BufReader::new(f)).map_err(in_image)?;
    let manifest = r.manifest().clone();
    let (mut has_tree, mut has_processes) = (false, false);
    while let Some(s) = r.next_section().map_err(in_image)? {
        match s.info().kind {
            fmt::SectionKind::FileTree => has_tree = true,
            fmt::SectionKind::CriuImage => has_processes = true,
            _ => {}
        }
    }
    Ok(ImageContents { manifest, has_tree, has_processes })
}

/// Create a container this host does not have from an image's config and file tree: a new
/// private area with this host's storage backend. Returns the installed config. On failure
/// nothing is left.
pub fn create_from_image(host: &Host, lock: &ContainerLock, path: &Path, contents: &ImageContents) -> Result<ContainerConfig> {
    let ct = lock.ctid();
    let text = String::from_utf8_lossy(&contents.manifest.config_toml).into_owned();
    let mut cfg = ContainerConfig::from_toml(&text).map_err(|e| err(ct, "restore", Cause::msg(format!("the image's config does not parse: {e}"))))?;
    if cfg.ctid != *ct {
        return Err(err(ct, "restore", Cause::msg(format!("image {} holds container {}, not {ct}", path.display(), cfg.ctid))));
    }
    if !contents.has_tree {
        return Err(err(
            ct,
            "restore",
            Cause::msg(format!(
                "container {ct} does not exist here and image {} has no file tree; export a snapshot with `ferry snapshot export`",
                path.display()
            )),
        ));
    }
    // This host's backend, not the source's (it may have no btrfs).
    cfg.storage.kind = ferry_runtime::storage::backends::choose_kind(&host.data_dir, cfg.resources.diskspace).map_err(|e| err(ct, "restore", e))?;
    let private_dir = host.data_dir.join("private");
    std::fs::create_dir_all(&private_dir).map_err(|e| err(ct, "restore", Cause::io("create", &private_dir, e)))?;
    let staging = private_dir.join(unpredictable(&format!(".import-{ct}-")).map_err(|e| err(ct, "restore", e))?);
    std::fs::create_dir(&staging).map_err(|e| err(ct, "restore", Cause::io("create", &staging, e)))?;
    let res = (|| -> std::result::Result<(), Cause> {
        let in_image = |e: fmt::Error| Cause::from(e).context(format!("image {}", path.display()));
        let f = std::fs::File::open(path).map_err(|e| Cause::io("open image", path, e))?;
        let mut r = fmt::Reader::open(std::io::BufReader::with_capacity(1 << 20, f)).map_err(in_image)?;
        while let Some(mut s) = r.next_section().map_err(in_image)? {
            if s.info().kind == fmt::SectionKind::FileTree {
                let mut t = fmt::TreeReader::new(&mut s);
                tree::extract_tree(&mut t, &staging)?;
                // Read to the end so the digest is checked.
                let mut sink = [0u8; 4096];
                while std::io::Read::read(&mut s, &mut sink).map_err(|e| Cause::Os(e).context(format!("image {}", path.display())))? > 0 {}
                break;
            }
        }
        storage::prepare(host, &cfg, &staging)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    res.map_err(|e| err(ct, "restore", e))?;
    // An unprivileged container gets a range of this host's pool: its own when free here (a
    // clone of a container of this host never is).
    let conf = host.config_path(ct);
    if let Err(e) = ferry_runtime::userns::pool::save_with_range(host, &mut cfg, &conf) {
        let _ = storage::remove(host, &cfg);
        return Err(err(ct, "restore", e));
    }
    Ok(cfg)
}

/// Undo [`create_from_image`]: the private area and the config.
pub fn remove_created(host: &Host, cfg: &ContainerConfig) {
    let _ = storage::remove(host, cfg);
    let _ = std::fs::remove_file(host.config_path(&cfg.ctid));
}

/// The result of one container in `run-due`.
#[derive(Debug)]
pub enum DueOutcome {
    NotDue,
    Taken { id: String, pruned: Vec<String>, ms: u64 },
    Failed(Error),
}

/// Take the scheduled snapshot of one container if due at `now`, then prune. Errors are
/// recorded in the store (`last-error.json`), cleared by the next success.
pub fn run_due_one(host: &Host, cfg: &ContainerConfig, now: i64) -> DueOutcome {
    let ct = &cfg.ctid;
    let Some(sched) = &cfg.snapshot_schedule else { return DueOutcome::NotDue };
    let last_auto = store::list(host, ct).into_iter().filter(|m| m.auto).map(|m| m.created).max();
    if !schedule::is_due(sched.every_secs, last_auto, now) {
        return DueOutcome::NotDue;
    }
    let res = (|| -> Result<(String, Vec<String>, u64)> {
        let lock = ContainerLock::acquire(host, ct, "snapshot").map_err(|e| err(ct, "create", e))?;
        let m = create(host, &lock, cfg, &CreateOpts { auto: true, created: Some(now), ..CreateOpts::default() })?;
        let cands: Vec<schedule::Candidate> =
            store::list(host, ct).into_iter().map(|m| schedule::Candidate { id: m.id, created: m.created, auto: m.auto }).collect();
        let mut pruned = Vec::new();
        for id in schedule::to_prune(&cands, sched.keep, sched.keep_daily) {
            store::remove_dir(&store::snap_dir(host, ct, &id))
                .map_err(|e| err(ct, "prune", e.context(format!("snapshot {} taken, but pruning {id} failed", m.id))))?;
            pruned.push(id);
        }
        Ok((m.id, pruned, m.total_ms))
    })();
    match res {
        Ok((id, pruned, ms)) => {
            store::clear_error(host, ct);
            DueOutcome::Taken { id, pruned, ms }
        }
        Err(e) => {
            // The store keeps the failure in words (last-error.json).
            store::record_error(host, ct, now, &crate::error::chain(&e));
            DueOutcome::Failed(e)
        }
    }
}
