//! snapshot create|list|delete|restore|export|schedule|run-due.

use super::list::human;
use anyhow::{Context, Result};
use ferry_migrate::snapshot::{self as snap, schedule, store, DueOutcome};
use ferry_runtime::config::SnapshotSchedule;
use ferry_runtime::container;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::Host;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a container: its processes and files at one frozen moment when it runs
    /// (it keeps running), its files only when stopped or with --stateless.
    Create {
        ctid: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        stateless: bool,
    },
    /// List snapshots: id, name, time, stateful, size (blocks of its own) and shared size.
    List {
        ctid: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete one snapshot (others keep the files they share with it).
    Delete { ctid: String, id: String },
    /// Stop the container, switch its files to the snapshot's and restore its processes (or
    /// start it, for a stateless snapshot).
    Restore { ctid: String, id: String },
    /// Write one self-contained image (config, processes, files) for `ferry restore
    /// --from-image` on any host.
    Export { ctid: String, id: String, file: PathBuf },
    /// Snapshot on a schedule, kept by retention (stored in the config).
    Schedule {
        ctid: String,
        /// Time between snapshots: 30m, 1h, 1d, 1h30m.
        #[arg(long, required_unless_present = "off")]
        every: Option<String>,
        /// Newest scheduled snapshots to keep.
        #[arg(long, required_unless_present = "off")]
        keep: Option<u32>,
        /// Also keep the newest snapshot of each of this many recent days.
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Remove the schedule.
        #[arg(long, conflicts_with_all = ["every", "keep"])]
        off: bool,
    },
    /// Take every due scheduled snapshot of this host's containers and prune old ones
    /// (run every minute by ferry-snapshots.timer). Exit code 1 if any failed.
    RunDue {
        /// The clock, in unix seconds (for tests).
        #[arg(long)]
        now: Option<i64>,
    },
}

/// UTC, as the table shows it.
fn time_str(t: i64) -> String {
    ferry_dump_format::UtcTime::from_unix(t).to_string()
}

pub fn run(h: &Host, cmd: SnapshotCmd) -> Result<u8> {
    match cmd {
        SnapshotCmd::Create { ctid, name, stateless } => {
            let ct = super::ctid(h, &ctid)?;
            let cfg = container::load_config(h, &ct)?;
            let lock = ContainerLock::acquire(h, &ct, "snapshot")?;
            super::notices::warn(ferry_migrate::stale::thaw_stale(h, &lock));
            let m = snap::create(h, &lock, &cfg, &snap::CreateOpts { name, stateless, ..Default::default() })?;
            println!(
                "container {ct}: snapshot {} taken ({}{}, files {}, total {} ms)",
                m.id,
                if m.stateful { "stateful" } else { "files only" },
                if m.stateful { format!(", frozen {} ms", m.frozen_ms) } else { String::new() },
                human(m.files_bytes),
                m.total_ms
            );
            Ok(0)
        }
        SnapshotCmd::List { ctid, json } => {
            let ct = super::ctid(h, &ctid)?;
            let listing = store::listing(h, &ct);
            if json {
                // Its keys sorted, as ferry has always printed them.
                println!("{}", serde_json::to_string_pretty(&serde_json::to_value(&listing)?)?);
                return Ok(0);
            }
            println!("{:<20} {:<16} {:<20} {:<9} {:<5} {:>9} {:>9}", "ID", "NAME", "TIME (UTC)", "STATEFUL", "AUTO", "SIZE", "SHARED");
            for m in &listing.snapshots {
                println!(
                    "{:<20} {:<16} {:<20} {:<9} {:<5} {:>9} {:>9}",
                    m.id,
                    m.name.as_deref().unwrap_or("-"),
                    time_str(m.created),
                    if m.stateful { "yes" } else { "no" },
                    if m.auto { "yes" } else { "no" },
                    human(m.size),
                    human(m.shared)
                );
            }
            if let Some(e) = &listing.last_error {
                println!("last scheduled snapshot failed at {}: {}", time_str(e.time), e.error);
            }
            Ok(0)
        }
        SnapshotCmd::Delete { ctid, id } => {
            let ct = super::ctid(h, &ctid)?;
            let lock = ContainerLock::acquire(h, &ct, "snapshot delete")?;
            snap::delete(h, &lock, &id)?;
            println!("container {ct}: snapshot {id} deleted");
            Ok(0)
        }
        SnapshotCmd::Restore { ctid, id } => {
            let ct = super::ctid(h, &ctid)?;
            let cfg = container::load_config(h, &ct)?;
            let lock = ContainerLock::acquire(h, &ct, "snapshot restore")?;
            super::notices::warn(ferry_migrate::stale::thaw_stale(h, &lock));
            let r = snap::restore(h, &lock, &cfg, &id)?;
            println!(
                "container {ct}: {} snapshot {} (pid {}) in {} ms",
                if r.meta.stateful { "restored to" } else { "started from" },
                r.meta.id,
                r.pid,
                r.total_ms
            );
            Ok(0)
        }
        SnapshotCmd::Export { ctid, id, file } => {
            let ct = super::ctid(h, &ctid)?;
            let cfg = container::load_config(h, &ct)?;
            // Shared: an export only reads the snapshot; the lock keeps a delete away.
            let _lock = ContainerLock::acquire(h, &ct, "snapshot export")?;
            let n = snap::export(h, &ct, &cfg, &id, &file)?;
            println!("container {ct}: snapshot {id} exported to {} ({})", file.display(), human(n));
            Ok(0)
        }
        SnapshotCmd::Schedule { ctid, every, keep, keep_daily, off } => {
            let ct = super::ctid(h, &ctid)?;
            let _lock = ContainerLock::acquire(h, &ct, "snapshot schedule")?;
            let mut cfg = container::load_config(h, &ct)?;
            if off {
                cfg.snapshot_schedule = None;
            } else {
                let every = every.context("--every is required")?;
                let every_secs = schedule::parse_duration(&every).map_err(|e| anyhow::anyhow!("container {ct}: snapshot schedule: {e}"))?;
                let keep = keep.context("--keep is required")?;
                if keep == 0 && keep_daily == 0 {
                    anyhow::bail!("container {ct}: snapshot schedule: --keep 0 with no --keep-daily would delete every snapshot it takes");
                }
                cfg.snapshot_schedule = Some(SnapshotSchedule { every_secs, keep, keep_daily });
            }
            cfg.save(&h.config_path(&ct))?;
            match &cfg.snapshot_schedule {
                Some(s) => println!("container {ct}: snapshot every {} s, keep {} (+{} daily)", s.every_secs, s.keep, s.keep_daily),
                None => println!("container {ct}: no snapshot schedule"),
            }
            Ok(0)
        }
        SnapshotCmd::RunDue { now } => {
            let now = now.unwrap_or_else(snap::now_secs);
            let mut failed = 0;
            for ct in h.list_ctids().with_context(|| format!("list containers in {}", h.conf_dir().display()))? {
                let Ok(cfg) = container::load_config(h, &ct) else { continue };
                match snap::run_due_one(h, &cfg, now) {
                    DueOutcome::NotDue => {}
                    DueOutcome::Taken { id, pruned, ms } => {
                        println!(
                            "container {ct}: snapshot {id} taken in {ms} ms{}",
                            if pruned.is_empty() { String::new() } else { format!(", pruned {}", pruned.join(" ")) }
                        );
                    }
                    DueOutcome::Failed(e) => {
                        failed += 1;
                        eprintln!("ferry: container {ct}: scheduled snapshot failed: {e}");
                        tracing::error!("container {ct}: scheduled snapshot failed: {e}");
                    }
                }
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}
