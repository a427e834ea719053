//! `ferry migrate` and its helpers: `migrate-receive` and `migrate-cleanup` (run by the
//! source on the destination over ssh), and `ferry sync` / `sync-receive` (the migration's
//! file sync on its own, rsync-style, for trees outside containers and for benchmarks).

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_migrate::migration::report::MigrationReport;
use ferry_migrate::migration::source::{migrate, MigrateOptions};
use ferry_migrate::migration::{dest, image_stream};
use ferry_runtime::exit::ErrorClass;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::Host;
use ferry_transfer::proto::ConnectionOptions;
use ferry_transfer::transport::{SshTarget, Transport};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// `CTID DEST` (DEST is `[USER@]HOST`, reached with the system's ssh client), or with
    /// --to the CTIDs (or names) to move, one after the other.
    #[arg(required = true, value_name = "CTID DEST | CTID...")]
    pub args: Vec<String>,
    /// The destination of every CTID given, `[USER@]HOST`.
    #[arg(long, value_name = "DEST")]
    pub to: Option<String>,
    /// With --new-id: arrive under another CTID (one container only).
    #[command(flatten)]
    pub new: super::newid::NewIdArgs,
    /// Live migration (the default when the container runs; vzmigrate's --live too).
    #[arg(long, visible_alias = "live", conflicts_with = "offline")]
    pub online: bool,
    /// Stop, copy, start on the destination (the default when the container is stopped).
    #[arg(long)]
    pub offline: bool,
    /// On failure keep the files synced to the destination, for a faster retry.
    #[arg(long)]
    pub keep_dst: bool,
    /// Remove the container's files here after a successful migration.
    #[arg(short = 'r', long, default_value = "yes", value_parser = ["yes", "no"])]
    pub remove_area: String,
    /// Both hosts see the same private area (shared storage): do not copy files.
    #[arg(long)]
    pub shared_storage: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Print the stage timing table (vzmigrate -t).
    #[arg(short = 't', long)]
    pub times: bool,
    /// Print the stage timings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only run the preflight checks (vzmigrate's --check-only too).
    #[arg(long, visible_alias = "check-only")]
    pub dry_run: bool,
}

/// How a migration reaches its destination and what it sends (migrate's and evacuate's).
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Options for ssh, split on spaces (like vzmigrate's --ssh=), e.g. "-p 2222 -i KEY".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub ssh_opts: String,
    /// The ferry command on the destination (like rsync's --rsync-path).
    #[arg(long, default_value = "ferry")]
    pub remote_ferry: String,
    /// Live sync passes at most before the freeze.
    #[arg(long, default_value_t = 5)]
    pub max_iterations: u32,
    /// zstd level of the image on the wire (0: no compression).
    #[arg(long, default_value_t = 1)]
    pub compress: i32,
    /// How the checkpoint image travels: `ssh` (inside the encrypted ssh connection) or `tcp`
    /// (a direct TCP connection to the destination, authenticated by a one-time token handed
    /// out over ssh and checked by the image's blake3 digests, but NOT encrypted: use it only
    /// on a trusted migration network).
    #[arg(long, default_value = "ssh", value_parser = ["ssh", "tcp"])]
    pub data_channel: String,
    /// Ports the destination may listen on for `--data-channel tcp`, PORT or FIRST-LAST
    /// (default: any free port), e.g. to match a firewall rule.
    #[arg(long, value_name = "PORTS")]
    pub data_ports: Option<ferry_transfer::datachan::PortRange>,
}

impl TransferArgs {
    /// Migration options to `dest` with these settings (the rest as MigrateOptions has them).
    pub fn options(&self, dest: &str) -> std::result::Result<MigrateOptions, String> {
        let mut opts = MigrateOptions::new(target(dest, &self.ssh_opts, &self.remote_ferry));
        opts.max_iterations = self.max_iterations;
        opts.compress = self.compress;
        opts.data_channel.kind = self.data_channel.parse()?;
        opts.data_channel.ports = self.data_ports.unwrap_or_default();
        Ok(opts)
    }
}

pub fn target(destination: &str, ssh_opts: &str, remote_ferry: &str) -> SshTarget {
    let mut t = SshTarget::new(destination);
    t.ssh_opts = ssh_opts.split_whitespace().map(String::from).collect();
    t.remote_ferry = remote_ferry.to_string();
    t
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// `ferry sync` and its receiver: two workers, so the connection's reader and writer keep the
/// pipe to ssh moving while the pass reads, hashes and writes files.
fn sync_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("cannot start the async runtime")
}

/// The containers and the destination the arguments name.
fn plan(a: &MigrateArgs) -> Result<(Vec<String>, String)> {
    match (&a.to, a.args.as_slice()) {
        (Some(dest), cts) => Ok((cts.to_vec(), dest.clone())),
        (None, [ct, dest]) => Ok((vec![ct.clone()], dest.clone())),
        (None, _) => super::exit::usage!("migrate: give `CTID DEST`, or `--to DEST CTID...` for several containers"),
    }
}

pub fn migrate_cmd(host: &Host, a: MigrateArgs) -> Result<u8> {
    let (cts, dest) = plan(&a)?;
    if (cts.len() > 1 || a.to.is_some()) && a.new.new_id.is_some() {
        super::exit::usage!("migrate: --new-id names one container: `ferry migrate CTID DEST --new-id NEWCTID`");
    }
    if let (None, [ct]) = (&a.to, cts.as_slice()) {
        return migrate_one(host, &a, ct, &dest).map_err(|e| {
            let class = e.downcast_ref::<ferry_migrate::Error>().map(|m| m.migration_class()).unwrap_or_else(|| super::exit::classify(&e));
            super::exit::Classified { class, inner: e }.into()
        });
    }
    // --to: one after the other, one summary; a failure that needs a hand stops the rest.
    let mut results: Vec<(String, Outcome)> = Vec::new();
    for ct in &cts {
        let res = migrate_report(host, &a, ct, &dest).map_err(|e| {
            let class = e.downcast_ref::<ferry_migrate::Error>().map(|m| m.migration_class()).unwrap_or_else(|| super::exit::classify(&e));
            (class, super::exit::message(&e))
        });
        let stop = matches!(res, Err((ErrorClass::MigrationNeedsAction, _)));
        if let Err((_, m)) = &res {
            eprintln!("ferry: {m}");
        }
        results.push((ct.clone(), res));
        if stop {
            eprintln!("ferry: stopping here: the failure above needs a hand first");
            break;
        }
    }
    let failures: Vec<ErrorClass> = results.iter().filter_map(|(_, r)| r.as_ref().err().map(|(c, _)| *c)).collect();
    let skipped: Vec<&String> = cts.iter().skip(results.len()).collect();
    if a.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(ct, r)| match r {
                Ok(rep) => serde_json::json!({ "ctid": ct, "ok": true, "report": rep }),
                Err((c, m)) => serde_json::json!({ "ctid": ct, "ok": false, "error": { "class": c, "code": c.code(), "message": m } }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "destination": dest, "results": v, "skipped": skipped }))?);
    } else {
        println!("migrate to {dest}: {} of {} moved", results.len() - failures.len(), cts.len());
        for (ct, r) in &results {
            match r {
                Ok(rep) => println!("  {ct}  ok      {}{}, total {} ms", rep.mode, frozen_note(rep), rep.total_ms),
                Err((c, _)) => println!("  {ct}  FAILED  {c} (exit code {})", c.code()),
            }
        }
        for ct in &skipped {
            println!("  {ct}  skipped");
        }
    }
    Ok(ErrorClass::most_urgent(failures).map_or(0, |c| c.code()))
}

/// One container of a batch: its report, or the class and message of its failure.
type Outcome = std::result::Result<MigrationReport, (ErrorClass, String)>;

fn frozen_note(r: &MigrationReport) -> String {
    if r.mode == "online" {
        format!(", frozen {} ms", r.frozen_ms)
    } else {
        String::new()
    }
}

/// One container, with the output of a single migration.
fn migrate_one(host: &Host, a: &MigrateArgs, ct: &str, dest: &str) -> Result<u8> {
    let report = migrate_report(host, a, ct, dest)?;
    let ct = super::ctid(host, ct).unwrap_or_else(|_| super::new_ctid(ct).expect("migrated, so valid"));
    if a.dry_run {
        println!("preflight of {ct} on {dest}: ok (nothing was changed)");
        return Ok(0);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.times {
        println!("{report}");
    } else {
        let arrived = if report.ctid != ct.as_str() { format!(" as {}", report.ctid) } else { String::new() };
        println!("migrated {ct} to {dest}{arrived} ({}{}, total {} ms)", report.mode, frozen_note(&report), report.total_ms);
    }
    Ok(0)
}

/// Migrate one container; its report.
fn migrate_report(host: &Host, a: &MigrateArgs, ct: &str, dest: &str) -> Result<MigrationReport> {
    let ct = super::ctid(host, ct)?;
    let lock = ContainerLock::acquire(host, &ct, "migrate")?;
    super::notices::warn(ferry_migrate::stale::thaw_stale(host, &lock));
    let mut opts = a.transfer.options(dest).map_err(anyhow::Error::msg)?;
    let cfg = ferry_runtime::container::load_config(host, &ct)?;
    opts.dest_config = a.new.config(&cfg)?;
    if let Some(d) = &opts.dest_config {
        let live = !a.offline && ferry_runtime::container::status(host, &ct).is_ok_and(|(s, _)| s == ferry_runtime::container::Status::Running);
        if live && cfg.net.ipadd.is_empty() && !d.net.ipadd.is_empty() {
            super::exit::usage!(
                "container {ct}: migrate: its processes have no venet interface to take --ipadd; migrate without it, then `ferry set {} --ipadd IP` there",
                d.ctid
            );
        }
    }
    opts.online = if a.online {
        Some(true)
    } else if a.offline {
        Some(false)
    } else {
        None
    };
    opts.keep_dst = a.keep_dst;
    opts.remove_area = a.remove_area == "yes";
    opts.shared_storage = a.shared_storage;
    opts.dry_run = a.dry_run;
    let tty = std::io::stderr().is_terminal() && !a.json;
    let bar = if tty {
        let pb = ProgressBar::new_spinner();
        pb.set_style(ProgressStyle::with_template("{spinner} {msg} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("valid template"));
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(pb)
    } else {
        None
    };
    if let Some(pb) = &bar {
        let pb1 = pb.clone();
        opts.on_stage = Some(Arc::new(move |s: &str| {
            pb1.set_message(s.to_string());
            pb1.set_position(0);
            pb1.set_length(0);
        }));
        let pb2 = pb.clone();
        opts.progress = Some(Arc::new(move |p: &ferry_transfer::sync::Progress| {
            pb2.set_length(p.bytes_total);
            pb2.set_position(p.bytes_done);
        }));
    }
    let res = runtime()?.block_on(migrate(host, &lock, &opts));
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let mut report: MigrationReport = res.with_context(|| format!("migration of {ct} to {dest}"))?;
    if let Some(d) = &opts.dest_config {
        report.ctid = d.ctid.to_string();
    }
    Ok(report)
}

/// The destination's end: speaks the protocol on stdin/stdout.
pub fn migrate_receive(host: &Host) -> Result<u8> {
    let rt = runtime()?;
    let res = rt.block_on(async {
        let opts = ConnectionOptions { features: image_stream::receiver_features(), ..Default::default() };
        let conn = ferry_transfer::transport::accept_stdio(opts).await?;
        let res = dest::serve(host, &conn).await;
        // Also after a failure: the last reply (the error that says why) must reach the
        // source before we go, or it only sees the connection end.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.close()).await;
        res.map_err(anyhow::Error::from)
    });
    // The reader of stdin blocks in a thread of the runtime until the source writes or hangs
    // up; waiting for it would keep the source waiting for our EOF (up to its ping interval).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    res?;
    Ok(0)
}

pub fn migrate_cleanup(host: &Host, ctid: &str, keep_files: bool) -> Result<u8> {
    let ct = super::new_ctid(ctid)?;
    if dest::cleanup_stale(host, &ct, keep_files)? {
        eprintln!("ferry: removed the half-received {ct}");
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The local tree to copy.
    pub source: PathBuf,
    /// `[USER@]HOST:DIR` (over ssh) or a local DIR.
    pub destination: String,
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub ssh_opts: String,
    #[arg(long, default_value = "ferry")]
    pub remote_ferry: String,
    /// Print the pass's statistics as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ferry sync SRC [USER@]HOST:DIR`: one sync pass of a tree, like `rsync -a --delete`.
pub fn sync_cmd(a: SyncArgs) -> Result<u8> {
    if !a.source.is_dir() {
        bail!("{} is not a directory", a.source.display());
    }
    let rt = sync_runtime()?;
    let stats = rt.block_on(async {
        let mut transport = match a.destination.split_once(':') {
            Some((host, dir)) if !host.contains('/') => {
                Transport::ssh(&target(host, &a.ssh_opts, &a.remote_ferry), &["sync-receive".to_string(), dir.to_string()])?
            }
            _ => {
                let me = std::env::current_exe()?.display().to_string();
                Transport::local(&[me, "sync-receive".into(), a.destination.clone()])?
            }
        };
        let conn = transport.connect(ConnectionOptions::default()).await?;
        let stats = ferry_transfer::sync::sync_pass(&conn, &a.source, &Default::default()).await?;
        let _ = conn.request(ferry_transfer::proto::messages::Body::Done(Default::default())).await;
        let _ = conn.close().await;
        let _ = transport.wait().await;
        Ok::<_, anyhow::Error>(stats)
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "files_sent": stats.files_sent, "delta_files": stats.delta_files, "bytes_on_wire": stats.bytes_on_wire,
                "bytes_data": stats.bytes_data, "entries": stats.entries_scanned, "deleted": stats.deleted,
                "ms": stats.duration.as_millis() as u64
            })
        );
    } else {
        println!(
            "synced {} entries: {} files sent ({} as deltas), {} bytes on the wire, {} deleted, {} ms",
            stats.entries_scanned,
            stats.files_sent,
            stats.delta_files,
            stats.bytes_on_wire,
            stats.deleted,
            stats.duration.as_millis()
        );
    }
    Ok(0)
}

/// The receiving end of `ferry sync`.
pub fn sync_receive(dir: PathBuf) -> Result<u8> {
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let rt = sync_runtime()?;
    rt.block_on(async {
        use ferry_transfer::proto::messages::{Body, OkReply};
        let opts = ConnectionOptions { features: image_stream::receiver_features(), ..Default::default() };
        let conn = ferry_transfer::transport::accept_stdio(opts).await?;
        loop {
            let env = conn.recv().await?;
            match &env.body {
                Some(Body::SyncBegin(_)) => {
                    ferry_transfer::sync::receive_pass(&conn, &env, &dir, &Default::default()).await?;
                }
                Some(Body::Done(_)) => {
                    conn.reply(env.id, Body::Ok(OkReply {})).await?;
                    break;
                }
                Some(other) => bail!("unexpected {} message", other.name()),
                None => {}
            }
        }
        let _ = conn.close().await;
        Ok(())
    })?;
    Ok(0)
}
