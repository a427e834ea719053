//! The destination side of a migration: `ferry migrate-receive`, started by the source over
//! ssh, serving the source's requests on its stdin/stdout until the container is committed
//! here or the migration is given up. Until the commit point (the `Announce` request, which
//! arrives only after the container runs here) nothing of the container is visible to other
//! ferry commands: its config waits in `<data>/migrating/<CTID>.toml`. On any failure, abort or
//! lost connection before that point, everything made here is removed again (the synced files
//! are kept when the source asked for `--keep-dst`).
//!
//! The receiver is a state machine ([`State`]; docs/migration-protocol.md draws it): each state
//! holds exactly what this side has made so far, which is what [`undo`] removes; a message
//! the state does not expect is refused and ends the migration.

use super::fault::{self, Fault, Faults};
use super::hostops::{HandoverOutcome, HostOps, RuntimeOps};
use super::image_stream::{self, IncomingImage};
use super::preflight;
use crate::error::{Error, Result};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Ctid, Host};
use ferry_transfer::proto::messages::*;
use ferry_transfer::proto::{Connection, Envelope};
use ferry_transfer::sync::{receive_pass, ReceiveOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::hostops::staging_config;

/// Where the receiver is in the protocol, and what it has made here so far.
#[derive(Default)]
pub enum State {
    /// Connected; nothing asked yet, nothing made.
    #[default]
    Connected,
    /// Preflight answered: the container's lock is held, the work dir exists.
    Checked(Checked),
    /// Config accepted: the private area exists and the config is staged; sync passes write
    /// into the area.
    Configured(Configured),
    /// The image is arriving on the data channel (`--data-channel tcp`).
    ImageArriving(Configured, IncomingImage),
    /// The image arrived whole and checked, extracted into the directory.
    ImageReceived(Configured, PathBuf),
    /// The container runs here (restored, or started for an offline migration), not yet ours.
    Restored(Configured),
    /// The restore failed; the source decides what happens to the files (Abort or Cleanup).
    RestoreFailed(Configured, Error),
    /// Announce arrived: the config is installed, the container is this host's.
    Committed(Committed),
}

pub struct Checked {
    ct: Ctid,
    lock: ContainerLock,
    work: PathBuf,
    /// A staged config of an earlier receive of this container was here at Preflight (kept by
    /// --keep-dst): its private area is that receive's, and may be brought up to date.
    resuming: bool,
}

pub struct Configured {
    checked: Checked,
    cfg: ContainerConfig,
    /// Where the files are synced into.
    area: PathBuf,
}

pub struct Committed {
    /// Held until the receiver ends; released before it waits for the last announcements.
    lock: ContainerLock,
    /// The announcements and probes that verify the handover after the commit.
    handover: Option<std::thread::JoinHandle<HandoverOutcome>>,
}

impl State {
    /// The state's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Connected => "connected",
            State::Checked(_) => "checked",
            State::Configured(_) => "configured",
            State::ImageArriving(..) => "image arriving",
            State::ImageReceived(..) => "image received",
            State::Restored(_) => "restored",
            State::RestoreFailed(..) => "restore failed",
            State::Committed(_) => "committed",
        }
    }
}

/// What the conversation does after a message.
enum Flow {
    Continue,
    /// The source ended the migration: the result to return.
    End(Result<()>),
}

struct Receiver<'a> {
    host: &'a Host,
    conn: &'a Connection,
    ops: Arc<dyn HostOps>,
    faults: Faults,
    state: State,
    /// The source's Cleanup asked to keep the synced files (`--keep-dst`).
    keep_files: bool,
    /// When the container ran here (what the handover's confirmation time counts from).
    restored_at: Option<Instant>,
}

/// Serve one migration on `conn`. Returns when the container is committed here, or after an
/// abort; an error means the migration failed (everything made here was removed).
pub async fn serve(host: &Host, conn: &Connection) -> Result<()> {
    serve_with(host, conn, RuntimeOps::shared()).await
}

/// [`serve`] with the host operations given.
pub async fn serve_with(host: &Host, conn: &Connection, ops: Arc<dyn HostOps>) -> Result<()> {
    let faults = ops.faults();
    let mut r = Receiver { host, conn, ops, faults, state: State::Connected, keep_files: false, restored_at: None };
    let res = r.run().await;
    match std::mem::take(&mut r.state) {
        State::Committed(Committed { lock, handover }) => {
            // The container is committed here: other commands may act on it at once (the
            // verification stops when it no longer runs here).
            drop(lock);
            if let Some(t) = handover {
                // Let the source go now; this process stays for the remaining announcements.
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        state => undo(host, r.ops.as_ref(), state, r.keep_files),
    }
    res
}

impl Receiver<'_> {
    async fn run(&mut self) -> Result<()> {
        loop {
            let env = self.conn.recv().await?;
            let Some(body) = env.body.clone() else { continue };
            if let Flow::End(res) = self.on(&env, body).await? {
                return res;
            }
        }
    }

    /// One message from the source, in the current state.
    async fn on(&mut self, env: &Envelope, body: Body) -> Result<Flow> {
        let (host, conn) = (self.host, self.conn);
        match (&self.state, body) {
            (State::Connected, Body::Preflight(p)) => {
                let result = match self.preflight(&p) {
                    Ok((checked, problems)) => {
                        self.state = State::Checked(checked);
                        // What `evacuate` chooses destinations by.
                        PreflightResult {
                            ok: problems.is_empty(),
                            problems,
                            free_memory_bytes: super::preflight::available_memory(),
                            free_disk_bytes: super::preflight::free_disk(&host.data_dir),
                            ..Default::default()
                        }
                    }
                    Err(e) => PreflightResult { ok: false, problems: vec![e.to_string()], ..Default::default() },
                };
                conn.reply(env.id, Body::PreflightResult(result)).await?;
            }
            (State::Checked(checked), Body::Config(c)) => match self.configure(checked, &c) {
                Ok((cfg, area)) => {
                    let State::Checked(checked) = std::mem::take(&mut self.state) else { unreachable!("matched above") };
                    self.state = State::Configured(Configured { checked, cfg, area });
                    conn.reply(env.id, Body::Ok(OkReply {})).await?;
                }
                Err(e) => return self.refuse(env, e).await,
            },
            (State::Configured(c), Body::SyncBegin(_)) => {
                receive_pass(conn, env, &c.area, &ReceiveOptions { link_dest: None, fsync: true }).await?;
            }
            (State::Configured(c), Body::ImageBegin(_)) => {
                // Extracted (and checked section by section) as it arrives: a damaged image is
                // never restored.
                let dir = image_stream::receive_over_connection(conn, env, &c.checked.work).await?;
                fault::die_if(self.faults, Fault::DieAfterImage);
                let State::Configured(c) = std::mem::take(&mut self.state) else { unreachable!("matched above") };
                self.state = State::ImageReceived(c, dir);
            }
            (State::Configured(c), Body::DataChannelOpen(o)) => {
                let incoming = image_stream::open_data_channel(conn, env, &o, &c.checked.work, self.faults).await?;
                let State::Configured(c) = std::mem::take(&mut self.state) else { unreachable!("matched above") };
                self.state = State::ImageArriving(c, incoming);
            }
            (State::ImageArriving(..), Body::ImageEnd(end)) => {
                let State::ImageArriving(c, incoming) = std::mem::take(&mut self.state) else { unreachable!("matched above") };
                match image_stream::finish_data_channel(conn, env, &end, incoming).await {
                    Ok(dir) => self.state = State::ImageReceived(c, dir),
                    Err(e) => {
                        self.state = State::Configured(c);
                        return Err(e);
                    }
                }
                fault::die_if(self.faults, Fault::DieAfterImage);
            }
            (State::ImageReceived(..) | State::Configured(_), Body::Restore(r)) => {
                fault::hang_if(self.faults, conn).await?;
                let res = match fault::restore_fault(self.faults) {
                    Some(e) => Err(e),
                    None => self.restore(r.from_image),
                };
                let c = match std::mem::take(&mut self.state) {
                    State::ImageReceived(c, _) | State::Configured(c) => c,
                    _ => unreachable!("matched above"),
                };
                match res {
                    Ok(pid) => {
                        self.restored_at = Some(Instant::now());
                        self.state = State::Restored(c);
                        conn.reply(env.id, Body::Restored(Restored { pid })).await?;
                    }
                    Err(e) => {
                        // Wait for the source's Abort or Cleanup: only it knows whether the
                        // synced files are to be kept (--keep-dst). A lost connection undoes all.
                        conn.reply_error(env.id, e.to_string()).await?;
                        self.state = State::RestoreFailed(c, e);
                    }
                }
            }
            // An offline migration of a stopped container commits without a restore.
            (State::Restored(_) | State::Configured(_), Body::Announce(_)) => {
                if let Err(e) = self.ops.install_config(host, &self.configured().checked.ct) {
                    return self.refuse(env, e).await;
                }
                let restored = matches!(self.state, State::Restored(_));
                let Some(Configured { checked, cfg, .. }) = self.state_configured() else { unreachable!("matched above") };
                let _ = std::fs::remove_dir_all(&checked.work);
                let handover = restored.then(|| self.hand_over(cfg));
                self.state = State::Committed(Committed { lock: checked.lock, handover });
                conn.reply(env.id, Body::Ok(OkReply {})).await?;
            }
            (State::Committed(c), Body::Done(d)) if d.report_handover && c.handover.is_some() => {
                // The source asked how the handover went: answer once the verification ended
                // (at most its deadline after the commit).
                let State::Committed(Committed { lock, handover: Some(t) }) = std::mem::take(&mut self.state) else { unreachable!("matched above") };
                // The container is this host's: the lock goes now, not after the wait (a
                // command on it meanwhile would find it busy).
                drop(lock);
                let outcome = tokio::task::spawn_blocking(move || t.join().unwrap_or_default()).await.unwrap_or_default();
                conn.reply(env.id, Body::Handover(handover_message(&outcome))).await?;
                return Ok(Flow::End(Ok(())));
            }
            (_, Body::Done(_)) => {
                // After the commit, the source need not wait for the verification of the
                // handover: [`serve`] waits for it after the connection is closed. Before it,
                // the source gave up: [`serve`] undoes what was made.
                conn.reply(env.id, Body::Ok(OkReply {})).await?;
                return Ok(Flow::End(Ok(())));
            }
            (_, Body::Abort(a)) => {
                tracing::info!("source aborted the migration: {}", a.reason);
                let _ = conn.reply(env.id, Body::Ok(OkReply {})).await;
                return Ok(Flow::End(self.failure()));
            }
            (_, Body::Cleanup(c)) => {
                self.keep_files = c.keep_files;
                let _ = conn.reply(env.id, Body::Ok(OkReply {})).await;
                return Ok(Flow::End(self.failure()));
            }
            (state, other) => {
                let e = Error::protocol(format!("unexpected {} message ({})", other.name(), state.name()));
                return self.refuse(env, e).await;
            }
        }
        Ok(Flow::Continue)
    }

    /// Answer the request with `e` and end the migration with it.
    async fn refuse(&self, env: &Envelope, e: Error) -> Result<Flow> {
        self.conn.reply_error(env.id, e.to_string()).await?;
        Err(e)
    }

    /// The error of a failed restore, which the source's Abort or Cleanup ends with.
    fn failure(&mut self) -> Result<()> {
        match std::mem::take(&mut self.state) {
            State::RestoreFailed(c, e) => {
                // Undone as a restored container: the failed restore may have left processes
                // or network behind (a forked restore that died midway cannot undo its own).
                self.state = State::Restored(c);
                Err(e)
            }
            state => {
                self.state = state;
                Ok(())
            }
        }
    }

    fn configured(&self) -> &Configured {
        match &self.state {
            State::Configured(c) | State::ImageArriving(c, _) | State::ImageReceived(c, _) | State::Restored(c) | State::RestoreFailed(c, _) => c,
            _ => unreachable!("only called in a configured state"),
        }
    }

    /// Leave a configured state; what it held.
    fn state_configured(&mut self) -> Option<Configured> {
        match std::mem::take(&mut self.state) {
            State::Configured(c) | State::ImageArriving(c, _) | State::ImageReceived(c, _) | State::Restored(c) | State::RestoreFailed(c, _) => {
                Some(c)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    fn preflight(&self, p: &Preflight) -> Result<(Checked, Vec<String>)> {
        let host = self.host;
        let ct = Ctid::new(&p.ctid)?;
        let cfg = ContainerConfig::from_toml(&p.config_toml).map_err(|e| Error::Migration(format!("config of {ct} from the source: {e}")))?;
        if cfg.ctid != ct {
            return Err(Error::Migration(format!("the source sent the config of {} for {ct}", cfg.ctid)));
        }
        let lock = ContainerLock::acquire(host, &ct, "migrate-receive")?;
        let work = host.run_ct_dir(&ct).join("incoming");
        ferry_runtime::util::private_dir(&work)?;
        let resuming = staging_config(host, &ct).exists();
        let facts = self.ops.preflight_facts(host, &cfg, &p.cpuinfo, p.online, &work);
        let problems = preflight::problems(&cfg, &facts, p.needed_disk_bytes, p.online, resuming);
        Ok((Checked { ct, lock, work, resuming }, problems))
    }

    /// The config to receive the container with, and the directory its files go into.
    fn configure(&self, checked: &Checked, c: &ConfigMsg) -> Result<(ContainerConfig, PathBuf)> {
        let (host, ct) = (self.host, &checked.ct);
        let mut cfg = ContainerConfig::from_toml(&c.config_toml).map_err(|e| Error::Migration(format!("config of {ct}: {e}")))?;
        if &cfg.ctid != ct {
            return Err(Error::Migration(format!("the source sent the config of {} for {ct}", cfg.ctid)));
        }
        // What preflight checked, checked again (under the lock held since then): a source that
        // goes on after its problems were listed must not write into, nor later remove, a
        // container or files this host had before.
        if host.config_path(ct).exists() {
            return Err(Error::Migration(format!(
                "container {ct} already exists on this host: migrate-receive refuses its config and leaves it untouched; destroy it here or migrate under another CTID"
            )));
        }
        if !checked.resuming && (host.private_dir(ct).exists() || host.disk_image(ct).exists()) {
            return Err(Error::Migration(format!(
                "this host has a private area for {ct} but no container (left by something else than a kept migration): migrate-receive leaves it untouched; remove it here or retry with --keep-dst"
            )));
        }
        // This host decides its own storage backend and an unprivileged container's ID range (its
        // own when free here: the restore maps its user namespace to whichever it gets); the
        // limits stay the container's.
        let area = self.ops.prepare_receive_area(host, &mut cfg)?;
        if let Err(e) = ferry_runtime::userns::pool::save_with_range(host, &mut cfg, &staging_config(host, ct)) {
            // An area this receive made goes with it (a kept one stays, as it was).
            if !checked.resuming {
                let _ = self.ops.remove_area(host, &cfg);
            }
            return Err(e.into());
        }
        Ok((cfg, area))
    }

    fn restore(&self, from_image: bool) -> Result<i32> {
        let (host, c) = (self.host, self.configured());
        match &self.state {
            State::ImageReceived(_, dir) if from_image => self.ops.restore_unannounced(host, &c.checked.lock, &c.cfg, dir),
            _ if from_image => Err(Error::protocol("Restore without an image")),
            _ => self.ops.start(host, &c.checked.lock, &c.cfg),
        }
    }

    /// Announce the container's addresses and verify that its neighbours reach it here
    /// (again with back-off until they answer or the deadline passes), off the frozen window:
    /// the container runs already. Stops early when the container no longer runs here (it
    /// may already be migrating on). An error or an unconfirmed handover is logged and
    /// reported, never a failed migration.
    fn hand_over(&self, cfg: ContainerConfig) -> std::thread::JoinHandle<HandoverOutcome> {
        let (h, ops) = (self.host.clone(), self.ops.clone());
        let since = self.restored_at.unwrap_or_else(Instant::now);
        std::thread::spawn(move || {
            let still_here = || ops.is_running(&h, &cfg.ctid) && h.config_path(&cfg.ctid).exists();
            match ops.hand_over(&h, &cfg, since, &still_here) {
                Ok(o) => {
                    match o.confirmed_after {
                        Some(t) => {
                            tracing::info!("{}: handover confirmed by {} neighbours {} ms after the restore", cfg.ctid, o.neighbours, t.as_millis())
                        }
                        None => {
                            tracing::warn!("{}: handover not confirmed after {} announces (no answer from {:?})", cfg.ctid, o.announces, o.unanswered)
                        }
                    }
                    o
                }
                Err(e) => {
                    tracing::warn!("announcing the addresses of {}: {e}", cfg.ctid);
                    HandoverOutcome::default()
                }
            }
        })
    }
}

/// The [`Handover`] answer of an outcome.
fn handover_message(o: &HandoverOutcome) -> Handover {
    Handover {
        confirmed: o.confirmed_after.is_some(),
        confirmed_after_ms: o.confirmed_after.map_or(0, |d| d.as_millis() as u64),
        announces: o.announces,
        neighbours: o.neighbours,
        unanswered: o.unanswered.iter().map(|a| a.to_string()).collect(),
    }
}

/// Remove what a receive made here, as far as `state` got (the restored container, its files
/// unless `keep_files`, the staged config, the work dir).
fn undo(host: &Host, ops: &dyn HostOps, state: State, keep_files: bool) {
    let (checked, configured) = match state {
        State::Connected | State::Committed(_) => return,
        State::Checked(checked) => (checked, None),
        State::ImageArriving(c, incoming) => {
            // Its thread stops writing into the work dir before that goes.
            drop(incoming);
            (c.checked, Some((c.cfg, false)))
        }
        State::Configured(c) | State::ImageReceived(c, _) => (c.checked, Some((c.cfg, false))),
        // A restore that failed may have left processes or network behind (a forked restore
        // that died midway cannot undo its own work): torn down as a restored one is.
        State::Restored(c) | State::RestoreFailed(c, _) => (c.checked, Some((c.cfg, true))),
    };
    let ct = &checked.ct;
    if let Some((cfg, restored)) = configured {
        if restored {
            if let Err(e) = ops.kill_and_teardown(host, &checked.lock, &cfg) {
                tracing::warn!("removing the restored {ct}: {e}");
            }
        }
        if !keep_files {
            if let Err(e) = ops.remove_area(host, &cfg) {
                tracing::warn!("removing the received files of {ct}: {e}");
            }
            let _ = std::fs::remove_file(staging_config(host, ct));
        }
    }
    let _ = std::fs::remove_dir_all(&checked.work);
    let _ = std::fs::remove_dir(host.run_ct_dir(ct));
    if !host.config_path(ct).exists() && !staging_config(host, ct).exists() {
        // No container of that name here: its lock file would only be clutter.
        let _ = std::fs::remove_file(host.lock_path(ct));
    }
}

/// How long `migrate-cleanup` waits for a receiver still holding the container's lock.
const CLEANUP_WAIT: Duration = Duration::from_secs(45);

/// `ferry migrate-cleanup CTID`: what the source runs on the destination after a failed
/// migration whose receiver may have died: removes a half-received container (never one that
/// was committed here).
pub fn cleanup_stale(host: &Host, ct: &Ctid, keep_files: bool) -> Result<bool> {
    cleanup_stale_with(host, ct, keep_files, RuntimeOps::shared().as_ref())
}

/// [`cleanup_stale`] with the host operations given.
pub fn cleanup_stale_with(host: &Host, ct: &Ctid, keep_files: bool, ops: &dyn HostOps) -> Result<bool> {
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
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if !staging.exists() || host.config_path(ct).exists() {
        return Ok(false); // the receiver cleaned up (or committed) meanwhile
    }
    let cfg = ContainerConfig::load(&staging)?;
    // Whether the receiver got as far as a restore is not known: a teardown of what is not
    // there does no harm.
    let checked = Checked { ct: ct.clone(), lock, work: host.run_ct_dir(ct).join("incoming"), resuming: false };
    let area = host.private_dir(ct);
    undo(host, ops, State::Restored(Configured { checked, cfg, area }), keep_files);
    Ok(true)
}
