//! The source side of a migration (`ferry migrate`): drives the destination's ferry over one
//! connection through preflight, live sync passes, freeze and dump, final sync, image
//! transfer, restore there, the commit (`Announce`), and the source's cleanup. Until the
//! destination confirms the commit, every failure puts the container back to running here:
//! before the freeze it was never touched; after the dump it is restored here from the dump.

use super::converge::{next_step, ConvergePolicy, Next, PassChange};
use super::fault::{self, Fault, Faults};
use super::hostops::{self, HostOps, RuntimeOps, HANDOVER_DEADLINE};
use super::journal::{Journal, Stage};
use super::link::{Link, SshLink};
use super::preflight;
use super::report::{ms, HandoverReport, MigrationReport, SyncPassReport};
use crate::error::{Error, Result};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Host};
use ferry_transfer::proto::messages::*;
use ferry_transfer::proto::Connection;
use ferry_transfer::sync::{sync_pass, sync_pass_from, Baseline, PassStats, ProgressFn, SentCopies, SyncOptions};
use ferry_transfer::transport::SshTarget;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Called with each stage's name as it starts.
pub type StageFn = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct MigrateOptions {
    pub target: SshTarget,
    /// None: online when the container runs, offline otherwise.
    pub online: Option<bool>,
    pub keep_dst: bool,
    pub remove_area: bool,
    pub shared_storage: bool,
    pub max_iterations: u32,
    /// zstd level of the image on the wire (0: none).
    pub compress: i32,
    /// How the image travels: inside the ssh connection, or on a direct TCP connection.
    pub data_channel: super::image_stream::DataChannel,
    pub dry_run: bool,
    /// The container as the destination gets it, when that is not as it is here: another
    /// CTID, name or addresses (`migrate --new-id`; see `ferry_runtime::newid`).
    pub dest_config: Option<ContainerConfig>,
    pub progress: Option<ProgressFn>,
    /// Told about each stage as it starts (the CLI prints or draws it).
    pub on_stage: Option<StageFn>,
}

impl MigrateOptions {
    pub fn new(target: SshTarget) -> Self {
        MigrateOptions {
            target,
            online: None,
            keep_dst: false,
            remove_area: true,
            shared_storage: false,
            max_iterations: ConvergePolicy::default().max_passes,
            compress: 1,
            data_channel: Default::default(),
            dry_run: false,
            dest_config: None,
            progress: None,
            on_stage: None,
        }
    }
}

const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the services get to accept what waits in their backlogs before the freeze.
const BACKLOG_DRAIN: Duration = Duration::from_millis(200);
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

struct Run<'a, L> {
    host: &'a Host,
    ops: Arc<dyn HostOps>,
    link: L,
    lock: &'a ContainerLock,
    cfg: ContainerConfig,
    /// The container as the destination gets it (`cfg` unless `--new-id`).
    dest_cfg: ContainerConfig,
    opts: &'a MigrateOptions,
    report: MigrationReport,
    work: PathBuf,
    /// What the destination holds after the last live pass: the final pass, while frozen,
    /// sends what changed since without the destination walking its tree again.
    baseline: Option<Baseline>,
    /// What each file sent holds, across the passes: a file that only grew goes as its tail.
    copies: SentCopies,
    /// Faults injected on purpose (tests only; see `fault`).
    faults: Faults,
}

impl<L> Run<'_, L> {
    fn stage(&self, s: &str) {
        tracing::info!("{}: {s}", self.cfg.ctid);
        if let Some(f) = &self.opts.on_stage {
            f(s);
        }
    }
}

/// Migrate the container the caller holds the lock of. On error the container runs (or is
/// stopped) on this host as it was, and the destination keeps nothing of it unless
/// `keep_dst`.
pub async fn migrate(host: &Host, lock: &ContainerLock, opts: &MigrateOptions) -> Result<MigrationReport> {
    migrate_with(host, lock, opts, RuntimeOps::shared(), SshLink::new(opts.target.clone())).await
}

/// [`migrate`] with the host operations and the way to the destination given.
pub async fn migrate_with<L: Link>(
    host: &Host,
    lock: &ContainerLock,
    opts: &MigrateOptions,
    ops: Arc<dyn HostOps>,
    link: L,
) -> Result<MigrationReport> {
    let t0 = Instant::now();
    let ct = lock.ctid().clone();
    let cfg = ContainerConfig::load(&host.config_path(&ct))?;
    let running = ops.is_running(host, &ct);
    let online = opts.online.unwrap_or(running);
    if online && !running {
        return Err(Error::Migration(format!("container {ct} is not running: an online migration needs it running; use --offline")));
    }
    ferry_runtime::net::migratable(&cfg).map_err(|e| Error::Migration(format!("cannot migrate {ct}: {e}")))?;
    let work = host.run_ct_dir(&ct).join("outgoing");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
    let dest_cfg = opts.dest_config.clone().unwrap_or_else(|| cfg.clone());
    let faults = ops.faults();
    let mut run = Run {
        host,
        ops,
        link,
        lock,
        cfg,
        dest_cfg,
        opts,
        report: MigrationReport {
            ctid: ct.to_string(),
            destination: opts.target.destination.clone(),
            mode: if online { "online" } else { "offline" }.into(),
            ..Default::default()
        },
        work: work.clone(),
        baseline: None,
        copies: SentCopies::default(),
        faults,
    };
    // A stopped image-backed container's root is mounted for the sync, and unmounted when the
    // migration is over.
    let res = match run.ops.files_dir(host, &run.cfg) {
        Ok((area, mounted)) => {
            let res = drive(&mut run, online, running, area, t0).await;
            if mounted {
                run.ops.unmount_files(host, &run.cfg);
            }
            res
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&work);
    if !opts.dry_run {
        let frozen = (res.is_ok() && online).then_some(run.report.frozen_ms);
        ferry_runtime::events::record(
            host,
            &ferry_runtime::events::Event::now(ferry_runtime::events::Kind::Migration, ct.as_str(), res.is_ok(), frozen),
        );
    }
    res.map(|()| {
        run.report.total_ms = ms(t0.elapsed());
        run.report
    })
}

async fn drive<L: Link>(run: &mut Run<'_, L>, online: bool, running: bool, area: PathBuf, t0: Instant) -> Result<()> {
    let ct = run.cfg.ctid.clone();
    run.stage("connecting");
    // What the preflight tells about this side (CRIU runs, the tree is walked) is gathered
    // while ssh connects.
    let local = {
        let (area, work, shared, ops) = (area.clone(), run.work.clone(), run.opts.shared_storage, run.ops.clone());
        tokio::task::spawn_blocking(move || {
            let needed = if shared { 0 } else { preflight::tree_size(&area) };
            let cpuinfo = if online { ops.dump_cpuinfo(&work) } else { Vec::new() };
            let criu_version = if online { ops.criu_version().unwrap_or_default() } else { String::new() };
            let mem_track = online && ops.memory_tracking();
            (needed, cpuinfo, criu_version, mem_track)
        })
    };
    let connected = run.link.connect().await;
    // Also on failure: the work dir it writes into goes when this returns.
    let local = local.await.map_err(|source| Error::Task { what: format!("preflight of {ct} here"), source });
    let conn = connected?;
    let (needed, cpuinfo, criu_version, mem_track) = local?;
    if online {
        // Iterative memory pre-copy (CRIU pre-dumps while it runs) needs soft-dirty tracking;
        // ferry does not do it yet, so the memory goes in one dump, while frozen.
        run.report.memory_copy = if mem_track {
            "one full dump (memory pre-copy not implemented)".into()
        } else {
            "one full dump (no soft-dirty tracking here for memory pre-copy)".into()
        };
    }
    super::image_stream::check_peer(&conn, &run.opts.data_channel)?;

    // --- preflight: nothing has changed yet.
    run.stage("preflight");
    let dest = &run.dest_cfg;
    let pre = Preflight {
        ctid: dest.ctid.to_string(),
        config_toml: dest.to_toml(),
        ips: dest.net.ipadd.iter().map(|a| a.to_string()).collect(),
        needed_disk_bytes: needed,
        criu_version,
        cpuinfo,
        online,
        network_mode: hostops::network_mode(&run.cfg),
    };
    let reply = conn.request_timeout(Body::Preflight(pre), REPLY_TIMEOUT).await?;
    run.report.preflight_ms = ms(t0.elapsed());
    match reply {
        Body::PreflightResult(r) if r.ok => {
            run.report.dest_free_memory = r.free_memory_bytes;
            run.report.dest_free_disk = r.free_disk_bytes;
        }
        Body::PreflightResult(r) => {
            abort(&conn, "preflight failed", run.opts.keep_dst).await;
            return Err(Error::Preflight { ctid: run.dest_cfg.ctid.to_string(), problems: r.problems });
        }
        other => return Err(Error::unexpected("PreflightResult", other.name())),
    }
    if run.opts.dry_run {
        abort(&conn, "dry run", true).await;
        return Ok(());
    }
    let dest = &run.dest_cfg;
    expect_ok(conn.request_timeout(Body::Config(ConfigMsg { ctid: dest.ctid.to_string(), config_toml: dest.to_toml() }), REPLY_TIMEOUT).await)?;

    let res = if online { online_switch(run, &conn, &area).await } else { offline_switch(run, &conn, &area, running).await };
    let said = run.link.finish(res.is_err()).await;
    match (res, said) {
        (Ok(()), _) => Ok(()),
        (Err(e), None) => Err(e),
        (Err(e), Some(said)) => Err(Error::DestinationSaid { cause: Box::new(e), said }),
    }
}

async fn online_switch<L: Link>(run: &mut Run<'_, L>, conn: &Connection, area: &Path) -> Result<()> {
    let ct = run.cfg.ctid.clone();
    let journal = |stage, image_dir: Option<PathBuf>| Journal {
        stage,
        destination: run.opts.target.destination.clone(),
        pid: std::process::id(),
        image_dir,
        remove_area: run.opts.remove_area,
    };
    journal(Stage::Syncing, None).write(run.host, &ct)?;

    // --- live passes while the container runs.
    if !run.opts.shared_storage {
        let policy = ConvergePolicy { max_passes: run.opts.max_iterations.max(1), ..Default::default() };
        let mut history = Vec::new();
        loop {
            let pass = history.len() as u32 + 1;
            run.stage(&format!("sync pass {pass}"));
            // Each live pass compares with what the destination really holds.
            let stats = match sync_pass_from(conn, area, &sync_opts(run, pass), None, Some(&mut run.copies)).await {
                Ok((s, after)) => {
                    run.baseline = after;
                    s
                }
                Err(e) => {
                    Journal::remove(run.host, &ct);
                    abort(conn, &e.to_string(), run.opts.keep_dst).await;
                    return Err(e.into());
                }
            };
            history.push(PassChange { files: stats.changes(), bytes: stats.bytes_data });
            run.report.passes.push(pass_report(&stats));
            match next_step(&policy, &history) {
                Next::AnotherPass => continue,
                Next::Freeze(why) => {
                    run.report.converged = why.to_string();
                    break;
                }
            }
        }
    }

    // --- freeze and dump. On failure the dump thaws the container: it runs on as before.
    run.stage("freeze and dump");
    // The dump goes where it outlives a failed attempt (it is how the container comes back),
    // and the journal names it before CRIU starts: if this process dies while CRIU finishes
    // the dump (which ends the container's processes), the next command restores from it.
    let image_dir = run.host.dump_dir(&ct).join("migration");
    let _ = std::fs::remove_dir_all(&image_dir);
    if let Some(p) = image_dir.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::io("create", p, e))?;
    }
    journal(Stage::Frozen, Some(image_dir.clone())).write(run.host, &ct)?;
    // New connections wait (their clients retry a second later, at the destination) while
    // the services take in what their backlogs hold: CRIU can only drop those.
    let waiting = run.ops.drain_backlogs(run.host, &run.cfg, BACKLOG_DRAIN);
    if waiting > 0 {
        tracing::info!("{ct}: {waiting} connections still wait to be accepted; the dump drops them");
    }
    let t_dump = Instant::now();
    let t_freeze = match run.ops.dump(run.host, run.lock, &run.cfg, &image_dir) {
        Ok(frozen_at) => frozen_at.unwrap_or(t_dump),
        Err(e) => {
            run.ops.let_traffic_through(&run.cfg);
            Journal::remove(run.host, &ct);
            let _ = std::fs::remove_dir_all(&image_dir);
            abort(conn, &e.to_string(), run.opts.keep_dst).await;
            return Err(e);
        }
    };
    // The dump's frozen part: CRIU's start-up before the freeze is not downtime.
    run.report.dump_ms = ms(t_freeze.elapsed());
    journal(Stage::Dumped, Some(image_dir.clone())).write(run.host, &ct)?;
    run.ops.blackhole(&run.cfg);

    // From here on a failure restores the container here from the dump. Under a new CTID the
    // checkpoint goes out as the destination's container; a rollback here needs it back.
    let here_meta = ferry_runtime::container::CheckpointMeta::load(&image_dir)?;
    let res = match (&here_meta, run.dest_cfg.ctid != ct) {
        (Some(m), true) => match m.retarget(&run.dest_cfg).and_then(|d| d.save(&image_dir)) {
            Ok(()) => after_dump(run, conn, area, &image_dir, t_freeze).await,
            Err(e) => Err(e.into()),
        },
        _ => after_dump(run, conn, area, &image_dir, t_freeze).await,
    };
    if let (Err(_), Some(m)) = (&res, &here_meta) {
        if let Err(e) = m.save(&image_dir) {
            tracing::warn!("container {ct}: putting its checkpoint back: {e}");
        }
    }
    match res {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&image_dir);
            Ok(())
        }
        Err(e) => {
            run.stage("rolling back");
            abort(conn, &e.to_string(), run.opts.keep_dst).await;
            cleanup_remote(run).await;
            run.ops.let_traffic_through(&run.cfg);
            match run.ops.restore(run.host, run.lock, &run.cfg, &image_dir) {
                Ok(_) => {
                    Journal::remove(run.host, &ct);
                    let _ = std::fs::remove_dir_all(&image_dir);
                    Err(Error::RolledBack { ctid: ct.to_string(), cause: Box::new(e) })
                }
                Err(re) => Err(Error::NeedsAction {
                    ctid: ct.to_string(),
                    msg: format!(
                        "migration of {ct} failed ({e}) and restoring it here failed too ({re}); its dump is kept in {}: \
                     fix the cause and run `ferry restore {ct}` (it finds the dump through the migration journal)",
                        image_dir.display()
                    ),
                }),
            }
        }
    }
}

async fn after_dump<L: Link>(run: &mut Run<'_, L>, conn: &Connection, area: &Path, image_dir: &Path, t_freeze: Instant) -> Result<()> {
    let ct = run.cfg.ctid.clone();
    if !run.opts.shared_storage {
        run.stage("final sync");
        let pass = run.report.passes.len() as u32 + 1;
        let baseline = run.baseline.take();
        let mut copies = std::mem::take(&mut run.copies);
        let (stats, _) = sync_pass_from(conn, area, &sync_opts(run, pass), baseline, Some(&mut copies)).await?;
        run.report.final_sync = Some(pass_report(&stats));
    }
    run.stage("image transfer");
    let t = Instant::now();
    let sent = super::image_stream::send_image(conn, image_dir, &run.dest_cfg, run.opts.compress, &run.opts.data_channel, run.faults).await?;
    run.report.image_bytes = sent.image_bytes;
    run.report.image_wire_bytes = sent.wire_bytes;
    run.report.image_transfer_ms = ms(t.elapsed());

    run.stage("restore on the destination");
    let t = Instant::now();
    match conn.request_timeout(Body::Restore(Restore { ctid: run.dest_cfg.ctid.to_string(), from_image: true }), RESTORE_TIMEOUT).await? {
        Body::Restored(_) => {}
        other => return Err(Error::unexpected("Restored", other.name())),
    }
    run.report.restore_ms = ms(t.elapsed());
    run.report.frozen_ms = ms(t_freeze.elapsed());
    // The destination's copy is the one to reach from now on (it announces at the commit);
    // what the dump left here goes now, outside the frozen window.
    if let Err(e) = run.ops.release_source(run.host, &run.cfg) {
        tracing::warn!("container {ct}: removing its mount, cgroup and network here: {e}");
    }
    run.ops.let_traffic_through(&run.cfg);

    commit_and_finish(run, conn).await
}

/// Send the commit (`Announce`) and clean up the source. After the destination acknowledged
/// the commit, the container is the destination's whatever happens next.
async fn commit_and_finish<L: Link>(run: &mut Run<'_, L>, conn: &Connection) -> Result<()> {
    let ct = run.cfg.ctid.clone();
    run.stage("announce");
    let t = Instant::now();
    let ips = run.dest_cfg.net.ipadd.iter().map(|a| a.to_string()).collect();
    let dest_ct = run.dest_cfg.ctid.to_string();
    expect_ok(conn.request_timeout(Body::Announce(Announce { ctid: dest_ct.clone(), ips }), REPLY_TIMEOUT).await)?;
    run.report.announce_ms = ms(t.elapsed());
    Journal {
        stage: Stage::Committed,
        destination: run.opts.target.destination.clone(),
        pid: std::process::id(),
        image_dir: None,
        remove_area: run.opts.remove_area,
    }
    .write(run.host, &ct)?;
    fault::die_if(run.faults, Fault::DieAfterCommit);

    // The destination verifies the handover meanwhile; its answer comes with Done's.
    run.stage("source cleanup");
    let t = Instant::now();
    if let Err(e) = run.ops.remove_source(run.host, run.lock, &run.cfg, run.opts.remove_area) {
        tracing::warn!("container {ct} now runs on {}, but cleaning up here failed: {e}", run.opts.target.destination);
    }
    Journal::remove(run.host, &ct);
    run.report.cleanup_ms = ms(t.elapsed());

    let done = Done { ctid: dest_ct, report_handover: true };
    if let Ok(Body::Handover(h)) = conn.request_timeout(Body::Done(done), HANDOVER_DEADLINE + REPLY_TIMEOUT).await {
        run.report.handover = Some(HandoverReport::from(h));
    }
    let _ = conn.close().await;
    Ok(())
}

async fn offline_switch<L: Link>(run: &mut Run<'_, L>, conn: &Connection, area: &Path, running: bool) -> Result<()> {
    let ct = run.cfg.ctid.clone();
    if running {
        run.stage("stop");
        if let Err(e) = run.ops.stop(run.host, run.lock, &run.cfg) {
            abort(conn, &e.to_string(), run.opts.keep_dst).await;
            return Err(e);
        }
    }
    let res = async {
        if !run.opts.shared_storage {
            run.stage("sync");
            let stats = sync_pass(conn, area, &sync_opts(run, 1)).await?;
            run.report.passes.push(pass_report(&stats));
        }
        if running {
            run.stage("start on the destination");
            let t = Instant::now();
            match conn.request_timeout(Body::Restore(Restore { ctid: run.dest_cfg.ctid.to_string(), from_image: false }), RESTORE_TIMEOUT).await? {
                Body::Restored(_) => {}
                other => return Err(Error::unexpected("Restored", other.name())),
            }
            run.report.restore_ms = ms(t.elapsed());
        }
        commit_and_finish(run, conn).await
    }
    .await;
    if let Err(e) = res {
        abort(conn, &e.to_string(), run.opts.keep_dst).await;
        cleanup_remote(run).await;
        if running {
            if let Err(se) = run.ops.start(run.host, run.lock, &run.cfg) {
                return Err(Error::NeedsAction {
                    ctid: ct.to_string(),
                    msg: format!("offline migration of {ct} failed ({e}) and starting it here again failed ({se}); start it with `ferry start {ct}`"),
                });
            }
        }
        return Err(Error::RolledBack { ctid: ct.to_string(), cause: Box::new(e) });
    }
    Ok(())
}

fn sync_opts<L>(run: &Run<'_, L>, pass: u32) -> SyncOptions {
    SyncOptions { pass, ctid: run.dest_cfg.ctid.to_string(), progress: run.opts.progress.clone(), ..Default::default() }
}

fn pass_report(s: &PassStats) -> SyncPassReport {
    SyncPassReport { pass: s.pass, files: s.files_sent, appended: s.append_files, bytes_on_wire: s.bytes_on_wire, ms: ms(s.duration) }
}

fn expect_ok(r: ferry_transfer::Result<Body>) -> Result<()> {
    match r? {
        Body::Ok(_) => Ok(()),
        other => Err(Error::unexpected("Ok", other.name())),
    }
}

/// Tell the destination to give up (best effort: the connection may be what failed).
async fn abort(conn: &Connection, reason: &str, keep_files: bool) {
    let body =
        if keep_files { Body::Cleanup(Cleanup { ctid: String::new(), keep_files: true }) } else { Body::Abort(Abort { reason: reason.to_string() }) };
    let _ = conn.request_timeout(body, Duration::from_secs(30)).await;
    let _ = conn.close().await;
}

/// After a failure, make sure the destination holds nothing half-made even if its receiver
/// died (best effort).
async fn cleanup_remote<L: Link>(run: &Run<'_, L>) {
    run.link.cleanup(run.dest_cfg.ctid.as_str(), run.opts.keep_dst).await;
}
