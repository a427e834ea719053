//! The destination side of a migration: `ferry migrate-receive`, started by the source over
//! ssh, serving the source's requests on its stdin/stdout until the container is committed
//! here or the migration is given up. Until the commit point (the `Announce` request, which
//! arrives only after the container runs here) nothing of the container is visible to other
//! ferry commands: its config waits in `<data>/migrating/<CTID>.toml`. On any failure, abort or
//! lost connection before that point, everything made here is removed again (the synced files
//! are kept when the source asked for `--keep-dst`).

use super::hostops;
use super::preflight;
use crate::error::{Error, Result};
use crate::proto::messages::*;
use crate::proto::{Connection, Envelope};
use crate::sync::{receive_pass, ReceiveOptions};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Ctid, Host};
use std::path::PathBuf;
use std::time::Duration;

/// Spacing of the announcements after the commit (4 over the first second).
const ANNOUNCE_SPACING: Duration = Duration::from_millis(250);

/// `FERRY_TEST_FAULT` on the destination makes it fail on purpose, for the fault tests:
/// `die-after-image` (the process exits once the image arrived, as if killed), `die-mid-image`
/// (it exits 16 MiB into an image on the data channel), `refuse-data`
/// (the source is sent to a port where nothing listens for the image), `fail-restore`,
/// `hang-before-restore` (the restore never answers; the receiver waits for the connection to
/// end and then cleans up, as when the source dies mid-migration).
pub const FAULT_ENV: &str = "FERRY_TEST_FAULT";

/// Also read by the source: `die-after-commit` (its ferry exits right after the destination
/// took the container over, before cleaning up here), `cut-data` (it breaks the data channel's
/// connection halfway through the image, `--data-channel tcp`), `wrong-token` (it presents a
/// wrong token on the data channel), `damage-image` (it flips a byte in the middle of the
/// image it sends, either channel).
pub(crate) fn fault(name: &str) -> bool {
    std::env::var(FAULT_ENV).map(|v| v.split(',').any(|f| f == name)).unwrap_or(false)
}

/// `<data>/migrating/<CTID>.toml`: the config of a container being received.
pub fn staging_config(host: &Host, ct: &Ctid) -> PathBuf {
    host.data_dir.join("migrating").join(format!("{ct}.toml"))
}

#[derive(Default)]
struct Incoming {
    ctid: Option<Ctid>,
    lock: Option<ContainerLock>,
    cfg: Option<ContainerConfig>,
    area: Option<PathBuf>,
    work: Option<PathBuf>,
    image_dir: Option<PathBuf>,
    restored: bool,
    committed: bool,
    keep_files: bool,
    /// A staged config of an earlier receive of this container was here at Preflight (kept
    /// by --keep-dst): its private area is that receive's, and may be brought up to date.
    resuming: bool,
    /// This side failed a request; the source decides what happens to the files.
    failed: Option<Error>,
    /// The announcements that follow the commit.
    announcer: Option<std::thread::JoinHandle<()>>,
    /// An image on its way over the data channel (`--data-channel tcp`).
    incoming_image: Option<super::image_stream::IncomingImage>,
}

/// Serve one migration on `conn`. Returns when the container is committed here, or after an
/// abort; an error means the migration failed (everything made here was removed).
pub async fn serve(host: &Host, conn: &Connection) -> Result<()> {
    let mut st = Incoming::default();
    let res = serve_inner(host, conn, &mut st).await;
    // Its thread stops writing into the work dir before that goes.
    drop(st.incoming_image.take());
    if !st.committed {
        undo(host, &mut st);
    }
    if let Some(t) = st.announcer.take() {
        // The container is committed here: other commands may act on it at once (the
        // announcer stops when it no longer runs here).
        st.lock = None;
        // Let the source go now; this process stays for the remaining announcements.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    res
}

async fn serve_inner(host: &Host, conn: &Connection, st: &mut Incoming) -> Result<()> {
    loop {
        let env = conn.recv().await?;
        let Some(body) = env.body.clone() else { continue };
        match body {
            Body::Preflight(p) => {
                let result = match handle_preflight(host, st, &p) {
                    Ok(problems) => PreflightResult {
                        ok: problems.is_empty(),
                        problems,
                        private_dir: st.area.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                        free_memory_bytes: super::preflight::available_memory(),
                        free_disk_bytes: super::preflight::free_disk(&host.data_dir),
                    },
                    Err(e) => PreflightResult { ok: false, problems: vec![e.to_string()], ..Default::default() },
                };
                conn.reply(env.id, Body::PreflightResult(result)).await?;
            }
            Body::Config(c) => match handle_config(host, st, &c) {
                Ok(()) => conn.reply(env.id, Body::Ok(OkReply {})).await?,
                Err(e) => {
                    conn.reply_error(env.id, e.to_string()).await?;
                    return Err(e);
                }
            },
            Body::SyncBegin(_) => {
                let area = st.area.clone().ok_or_else(|| Error::Protocol("SyncBegin before Config".into()))?;
                receive_pass(conn, &env, &area, &ReceiveOptions { link_dest: None, fsync: true }).await?;
            }
            Body::ImageBegin(_) => {
                receive_image(conn, st, &env).await?;
            }
            Body::DataChannelOpen(o) => {
                let work = st.work.clone().ok_or_else(|| Error::Protocol("DataChannelOpen before Preflight".into()))?;
                st.incoming_image = Some(super::image_stream::open_data_channel(conn, &env, &o, &work).await?);
            }
            Body::ImageEnd(end) if st.incoming_image.is_some() => {
                let incoming = st.incoming_image.take().expect("checked");
                st.image_dir = Some(super::image_stream::finish_data_channel(conn, &env, &end, incoming).await?);
                if fault("die-after-image") {
                    std::process::exit(137);
                }
            }
            Body::Restore(r) => {
                if fault("hang-before-restore") {
                    loop {
                        conn.recv().await?;
                    }
                }
                let res = if fault("fail-restore") {
                    Err(Error::Migration("restore failed on purpose (FERRY_TEST_FAULT=fail-restore)".into()))
                } else {
                    restore_here(host, st, r.from_image)
                };
                match res {
                    Ok(pid) => conn.reply(env.id, Body::Restored(Restored { pid })).await?,
                    Err(e) => {
                        // Wait for the source's Abort or Cleanup: only it knows whether the
                        // synced files are to be kept (--keep-dst). A lost connection undoes all.
                        conn.reply_error(env.id, e.to_string()).await?;
                        st.failed = Some(e);
                    }
                }
            }
            Body::Announce(_) => {
                // The commit point: the container runs here; from now on it is ours.
                commit(host, st)?;
                if let (Some(cfg), true) = (&st.cfg, st.restored) {
                    if let Err(e) = hostops::announce(host, cfg, 1, Duration::ZERO) {
                        tracing::warn!("announcing the addresses of {}: {e}", cfg.ctid);
                    }
                    // Three more over the first second, while the source cleans up and goes:
                    // this process stays until they are out. Each first checks that the
                    // container still runs here (it may already be migrating on).
                    let (h, c) = (host.clone(), cfg.clone());
                    st.announcer = Some(std::thread::spawn(move || {
                        for n in 2..=4 {
                            std::thread::sleep(ANNOUNCE_SPACING);
                            if !hostops::is_running(&h, &c.ctid) || !h.config_path(&c.ctid).exists() {
                                return;
                            }
                            match hostops::announce(&h, &c, 1, Duration::ZERO) {
                                Ok(()) => tracing::debug!("announced the addresses of {} ({n} of 4)", c.ctid),
                                Err(e) => tracing::warn!("announcing the addresses of {}: {e}", c.ctid),
                            }
                        }
                    }));
                }
                conn.reply(env.id, Body::Ok(OkReply {})).await?;
            }
            Body::Done(_) => {
                // The source need not wait for the remaining announcements: [`serve`] waits
                // for them after the connection is closed.
                conn.reply(env.id, Body::Ok(OkReply {})).await?;
                return Ok(());
            }
            Body::Abort(a) => {
                tracing::info!("source aborted the migration: {}", a.reason);
                let _ = conn.reply(env.id, Body::Ok(OkReply {})).await;
                return st.failed.take().map_or(Ok(()), Err);
            }
            Body::Cleanup(c) => {
                st.keep_files = c.keep_files;
                let _ = conn.reply(env.id, Body::Ok(OkReply {})).await;
                return st.failed.take().map_or(Ok(()), Err);
            }
            other => {
                let msg = format!("unexpected {} message", other.name());
                conn.reply_error(env.id, msg.clone()).await?;
                return Err(Error::Protocol(msg));
            }
        }
    }
}

fn handle_preflight(host: &Host, st: &mut Incoming, p: &Preflight) -> Result<Vec<String>> {
    let ct = Ctid::new(&p.ctid)?;
    let cfg = ContainerConfig::from_toml(&p.config_toml).map_err(|e| Error::Migration(format!("config of {ct} from the source: {e}")))?;
    if cfg.ctid != ct {
        return Err(Error::Migration(format!("the source sent the config of {} for {ct}", cfg.ctid)));
    }
    let lock = ContainerLock::acquire(host, &ct, "migrate-receive")?;
    let work = host.run_ct_dir(&ct).join("incoming");
    ferry_runtime::util::private_dir(&work)?;
    let resuming = staging_config(host, &ct).exists();
    let facts = preflight::gather(host, &cfg, &p.cpuinfo, p.online, &work);
    let problems = preflight::problems(&cfg, &facts, p.needed_disk_bytes, p.online, resuming);
    st.ctid = Some(ct);
    st.lock = Some(lock);
    st.work = Some(work);
    st.keep_files = resuming;
    st.resuming = resuming;
    Ok(problems)
}

fn handle_config(host: &Host, st: &mut Incoming, c: &ConfigMsg) -> Result<()> {
    let ct = st.ctid.clone().ok_or_else(|| Error::Protocol("Config before Preflight".into()))?;
    if st.cfg.is_some() {
        return Err(Error::Protocol(format!("a second Config for {ct}")));
    }
    let mut cfg = ContainerConfig::from_toml(&c.config_toml).map_err(|e| Error::Migration(format!("config of {ct}: {e}")))?;
    if cfg.ctid != ct {
        return Err(Error::Migration(format!("the source sent the config of {} for {ct}", cfg.ctid)));
    }
    // What preflight checked, checked again (under the lock held since then): a source that
    // goes on after its problems were listed must not write into, nor later remove, a
    // container or files this host had before.
    if host.config_path(&ct).exists() {
        return Err(Error::Migration(format!(
            "container {ct} already exists on this host: migrate-receive refuses its config and leaves it untouched; destroy it here or migrate under another CTID"
        )));
    }
    if !st.resuming && (host.private_dir(&ct).exists() || host.disk_image(&ct).exists()) {
        return Err(Error::Migration(format!(
            "this host has a private area for {ct} but no container (left by something else than a kept migration): migrate-receive leaves it untouched; remove it here or retry with --keep-dst"
        )));
    }
    // This host decides its own storage backend; the limits stay the container's.
    let area = hostops::prepare_receive_area(host, &mut cfg)?;
    let staging = staging_config(host, &ct);
    cfg.save(&staging)?;
    st.keep_files = false;
    st.area = Some(area);
    st.cfg = Some(cfg);
    Ok(())
}

async fn receive_image(conn: &Connection, st: &mut Incoming, begin: &Envelope) -> Result<()> {
    let work = st.work.clone().ok_or_else(|| Error::Protocol("ImageBegin before Preflight".into()))?;
    // Extracted (and checked section by section) as it arrives: a damaged image is never restored.
    let dir = super::image_stream::receive_over_connection(conn, begin, &work).await?;
    if fault("die-after-image") {
        std::process::exit(137);
    }
    st.image_dir = Some(dir);
    Ok(())
}

fn restore_here(host: &Host, st: &mut Incoming, from_image: bool) -> Result<i32> {
    let (Some(cfg), Some(lock)) = (st.cfg.clone(), st.lock.as_ref()) else {
        return Err(Error::Protocol("Restore before Config".into()));
    };
    let pid = if from_image {
        let dir = st.image_dir.clone().ok_or_else(|| Error::Protocol("Restore without an image".into()))?;
        hostops::restore_unannounced(host, lock, &cfg, &dir)?
    } else {
        hostops::start(host, lock, &cfg)?
    };
    st.restored = true;
    Ok(pid)
}

fn commit(host: &Host, st: &mut Incoming) -> Result<()> {
    let ct = st.ctid.clone().ok_or_else(|| Error::Protocol("Announce before Preflight".into()))?;
    let staging = staging_config(host, &ct);
    let conf = host.config_path(&ct);
    if let Some(dir) = conf.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    std::fs::rename(&staging, &conf).map_err(|e| Error::io("install config", &conf, e))?;
    st.committed = true;
    if let Some(w) = st.work.take() {
        let _ = std::fs::remove_dir_all(w);
    }
    Ok(())
}

/// Remove what this migration made here (the restored container, its files unless kept, the
/// staged config, the work dir).
fn undo(host: &Host, st: &mut Incoming) {
    let Some(ct) = st.ctid.clone() else { return };
    if st.lock.is_none() {
        return; // never got the lock: nothing here is ours
    }
    if let Some(cfg) = &st.cfg {
        if st.restored {
            if let Err(e) = hostops::kill_and_teardown(host, st.lock.as_ref().expect("lock held"), cfg) {
                tracing::warn!("removing the restored {ct}: {e}");
            }
        }
        if !st.keep_files {
            if let Err(e) = hostops::remove_area(host, cfg) {
                tracing::warn!("removing the received files of {ct}: {e}");
            }
            let _ = std::fs::remove_file(staging_config(host, &ct));
        }
    }
    if let Some(w) = st.work.take() {
        let _ = std::fs::remove_dir_all(w);
    }
    let _ = std::fs::remove_dir(host.run_ct_dir(&ct));
    if !host.config_path(&ct).exists() && !staging_config(host, &ct).exists() {
        // No container of that name here: its lock file would only be clutter.
        let _ = std::fs::remove_file(host.lock_path(&ct));
    }
}

/// How long `migrate-cleanup` waits for a receiver still holding the container's lock.
const CLEANUP_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

/// `ferry migrate-cleanup CTID`: what the source runs on the destination after a failed
/// migration whose receiver may have died: removes a half-received container (never one that
/// was committed here).
pub fn cleanup_stale(host: &Host, ct: &Ctid, keep_files: bool) -> Result<bool> {
    let staging = staging_config(host, ct);
    if !staging.exists() || host.config_path(ct).exists() {
        return Ok(false);
    }
    // A receiver still at work (say, restoring) holds the lock and undoes its work itself once
    // its connection is gone: wait for it, so that the source restores its copy only after this
    // host's copy is gone (never two running at once).
    let t0 = std::time::Instant::now();
    let lock = loop {
        match ContainerLock::acquire(host, ct, "migrate-cleanup") {
            Ok(l) => break l,
            Err(ferry_runtime::error::Error::Locked { .. }) if t0.elapsed() < CLEANUP_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if !staging.exists() || host.config_path(ct).exists() {
        return Ok(false); // the receiver cleaned up (or committed) meanwhile
    }
    let cfg = ContainerConfig::load(&staging)?;
    let mut st = Incoming {
        ctid: Some(ct.clone()),
        lock: Some(lock),
        cfg: Some(cfg),
        restored: true,
        keep_files,
        work: Some(host.run_ct_dir(ct).join("incoming")),
        ..Default::default()
    };
    undo(host, &mut st);
    Ok(true)
}
