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

fn time_str(t: i64) -> String {
    // UTC, without a date crate: days since the epoch to a civil date.
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

pub fn run(h: &Host, cmd: SnapshotCmd) -> Result<u8> {
    match cmd {
        SnapshotCmd::Create { ctid, name, stateless } => {
            let ct = super::ctid(h, &ctid)?;
            let cfg = container::load_config(h, &ct)?;
            let lock = ContainerLock::acquire(h, &ct, "snapshot")?;
            super::checkpoint::thaw_stale(h, &lock);
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
            let list = store::list(h, &ct);
            let last_error = store::last_error(h, &ct);
            let rows: Vec<(store::SnapshotMeta, store::Usage)> = list
                .into_iter()
                .map(|m| {
                    let u = store::usage(&store::snap_dir(h, &ct, &m.id));
                    (m, u)
                })
                .collect();
            if json {
                let v = serde_json::json!({
                    "snapshots": rows.iter().map(|(m, u)| serde_json::json!({
                        "id": m.id, "name": m.name, "created": m.created, "stateful": m.stateful, "auto": m.auto,
                        "files_bytes": m.files_bytes, "state_bytes": m.state_bytes, "size": u.unique, "shared": u.shared,
                        "btrfs": m.btrfs, "frozen_ms": m.frozen_ms, "total_ms": m.total_ms,
                    })).collect::<Vec<_>>(),
                    "last_error": last_error,
                    "schedule": container::load_config(h, &ct).ok().and_then(|c| c.snapshot_schedule),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!("{:<20} {:<16} {:<20} {:<9} {:<5} {:>9} {:>9}", "ID", "NAME", "TIME (UTC)", "STATEFUL", "AUTO", "SIZE", "SHARED");
            for (m, u) in &rows {
                println!(
                    "{:<20} {:<16} {:<20} {:<9} {:<5} {:>9} {:>9}",
                    m.id,
                    m.name.as_deref().unwrap_or("-"),
                    time_str(m.created),
                    if m.stateful { "yes" } else { "no" },
                    if m.auto { "yes" } else { "no" },
                    human(u.unique),
                    human(u.shared)
                );
            }
            if let Some(e) = last_error {
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
            super::checkpoint::thaw_stale(h, &lock);
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

#[cfg(test)]
mod tests {
    #[test]
    fn utc_time() {
        assert_eq!(super::time_str(0), "1970-01-01 00:00:00");
        assert_eq!(super::time_str(1700000000), "2023-11-14 22:13:20");
    }
}
