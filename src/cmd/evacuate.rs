//! `ferry evacuate DEST...`: move this host's containers away (the decisions are
//! `ferry_migrate::evacuate`'s; here the arguments, the migrations over ssh, and the summary).

use anyhow::Result;
use clap::Args;
use ferry_migrate::evacuate::{evacuate, Candidate, Failure, Mover, Outcome, Policy, Room, Summary};
use ferry_migrate::migration::report::MigrationReport;
use ferry_migrate::migration::source::migrate;
use ferry_runtime::container::{self, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{Ctid, Host};

#[derive(Debug, Args)]
pub struct EvacuateArgs {
    /// Where the containers go, `[USER@]HOST` each (reached with the system's ssh client);
    /// each container goes to the one with the most free memory (then disk) its preflight
    /// reports.
    #[arg(required = true, value_name = "DEST")]
    pub dests: Vec<String>,
    /// Moves at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// Only these containers (CTIDs or names, comma-separated), moved in the order given;
    /// without it every running one, largest memory last.
    #[arg(long, value_delimiter = ',', value_name = "CT,...")]
    pub only: Vec<String>,
    /// Leave these containers here (CTIDs or names, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CT,...")]
    pub exclude: Vec<String>,
    /// Also move the stopped containers (offline).
    #[arg(long)]
    pub all: bool,
    /// After a move fails (and is rolled back), go on with the others.
    #[arg(long)]
    pub keep_going: bool,
    /// Run the preflights only and say what would move where.
    #[arg(long)]
    pub dry_run: bool,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transfer: super::migrate::TransferArgs,
}

/// Migrations over ssh, each under the container's lock.
struct SshMover<'a> {
    host: &'a Host,
    a: &'a EvacuateArgs,
}

impl SshMover<'_> {
    fn run(&self, ct: &Candidate, dest: &str, dry_run: bool) -> std::result::Result<MigrationReport, Failure> {
        let fail = |e: ferry_migrate::Error| {
            let message = match &e {
                ferry_migrate::Error::Preflight { problems, .. } => problems.join("; "),
                e => e.to_string(),
            };
            Failure { class: e.migration_class(), message }
        };
        let ctid = Ctid::new(&ct.ctid).map_err(|e| fail(e.into()))?;
        let lock = ContainerLock::acquire(self.host, &ctid, "evacuate").map_err(|e| fail(e.into()))?;
        super::notices::warn(ferry_migrate::stale::thaw_stale(self.host, &lock));
        let a = self.a;
        let mut opts = a.transfer.options(dest).map_err(|message| Failure { class: ferry_runtime::exit::ErrorClass::Usage, message })?;
        opts.dry_run = dry_run;
        let rt = super::migrate::runtime().map_err(|e| Failure { class: ferry_runtime::exit::ErrorClass::Failed, message: format!("{e:#}") })?;
        rt.block_on(migrate(self.host, &lock, &opts)).map_err(fail)
    }
}

impl Mover for SshMover<'_> {
    fn preflight(&self, ct: &Candidate, dest: &str) -> std::result::Result<Room, Failure> {
        let r = self.run(ct, dest, true)?;
        Ok(Room { free_memory: r.dest_free_memory, free_disk: r.dest_free_disk })
    }
    fn migrate(&self, ct: &Candidate, dest: &str) -> std::result::Result<MigrationReport, Failure> {
        self.run(ct, dest, false)
    }
}

/// The containers the arguments choose, with what the order needs to know.
fn candidates(h: &Host, a: &EvacuateArgs) -> Result<Vec<Candidate>> {
    let exclude: Vec<Ctid> = a.exclude.iter().map(|w| super::ctid(h, w)).collect::<Result<_>>()?;
    let named = !a.only.is_empty();
    let cts: Vec<Ctid> = if named {
        a.only.iter().map(|w| super::ctid(h, w)).collect::<Result<_>>()?
    } else {
        h.list_ctids().map_err(|e| anyhow::anyhow!("evacuate: read {}: {e}", h.conf_dir().display()))?
    };
    let mut out = Vec::new();
    for ct in cts.into_iter().filter(|c| !exclude.contains(c)) {
        super::notices::warn(ferry_migrate::stale::recover_if_interrupted(h, &ct));
        let cfg = container::load_config(h, &ct)?;
        let (st, state) = container::status(h, &ct)?;
        let running = st == Status::Running;
        if !running && !a.all {
            if named {
                super::exit::usage!("evacuate: container {ct} is not running: add --all to move stopped containers (offline)");
            }
            continue;
        }
        let memory = state.filter(|_| running).and_then(|s| container::usage(h, &cfg, &s).ok()).map_or(0, |u| u.memory);
        out.push(Candidate { ctid: ct.to_string(), running, memory });
    }
    Ok(out)
}

pub fn evacuate_cmd(h: &Host, a: EvacuateArgs) -> Result<u8> {
    let cts = candidates(h, &a)?;
    let policy = Policy { parallel: a.parallel as usize, keep_going: a.keep_going, dry_run: a.dry_run, keep_order: !a.only.is_empty() };
    let mover = SshMover { host: h, a: &a };
    let quiet = a.json;
    let summary = evacuate(&mover, cts, &a.dests, &policy, &|msg: &str| {
        if !quiet {
            eprintln!("ferry: evacuate: {msg}");
        }
    });
    if a.json {
        let v = serde_json::json!({
            "destinations": a.dests, "dry_run": a.dry_run, "moved": summary.moved(), "containers": summary.entries.len(),
            "all_moved": summary.failure_class().is_none(), "entries": summary.entries,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", table(&summary, &a.dests, a.dry_run));
    }
    Ok(summary.failure_class().map_or(0, |c| c.code()))
}

/// The summary table: one line per container.
fn table(s: &Summary, dests: &[String], dry_run: bool) -> String {
    let verb = if dry_run { "would move" } else { "moved" };
    let mut out = format!("evacuate to {}: {} of {} {verb}\n", dests.join(", "), s.moved(), s.entries.len());
    out.push_str(&format!("  {:<16} {:<10} {:<24} {:>10} {:>10}  {}\n", "CTID", "RESULT", "DESTINATION", "FROZEN ms", "TOTAL ms", "NOTE"));
    for e in &s.entries {
        let (result, dest, frozen, total, note) = match &e.outcome {
            Outcome::Moved { destination, mode, frozen_ms, total_ms } => {
                let frozen = if mode == "online" { frozen_ms.to_string() } else { "-".into() };
                ("moved", destination.clone(), frozen, total_ms.to_string(), mode.clone())
            }
            Outcome::WouldMove { destination } => ("would-move", destination.clone(), "-".into(), "-".into(), String::new()),
            Outcome::Skipped { refused } => {
                let why: Vec<String> = refused.iter().map(|r| format!("{}: {}", r.destination, r.reason.replace('\n', " "))).collect();
                ("skipped", "-".into(), "-".into(), "-".into(), format!("refused by every destination ({})", why.join("; ")))
            }
            Outcome::Failed { destination, class, message } => {
                ("FAILED", destination.clone(), "-".into(), "-".into(), format!("{class}, rolled back: {}", message.replace('\n', " ")))
            }
            Outcome::NotTried => ("not-tried", "-".into(), "-".into(), "-".into(), "stopped after a failure (--keep-going goes on)".into()),
        };
        out.push_str(&format!("  {:<16} {:<10} {:<24} {:>10} {:>10}  {note}\n", e.ctid, result, dest, frozen, total));
    }
    out
}
