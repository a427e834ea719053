//! start and stop, one container or all of them (`--all`: what ferry-boot.service runs at the
//! host's boot and shutdown; the plan is `ferry_runtime::boot`'s).

use anyhow::{Context, Result};
use ferry_runtime::boot::{self, BootFacts, BootStep};
use ferry_runtime::container::{self, Status};
use ferry_runtime::exit::ErrorClass;
use ferry_runtime::host_config::{Loaded, StopMode};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{Ctid, Host};

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    #[arg(required_unless_present = "all")]
    pub ctid: Option<String>,
    /// The containers that start at boot (onboot yes, or unset and running before the last
    /// `stop --all`), higher bootorder first; suspended ones are resumed.
    #[arg(long, conflicts_with = "ctid")]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[arg(required_unless_present = "all")]
    pub ctid: Option<String>,
    /// Every running container, lower bootorder first; with the host setting
    /// stop_mode = "suspend" each is checkpointed to disk instead (restored by `start --all`).
    #[arg(long, conflicts_with = "ctid")]
    pub all: bool,
    /// Seconds to wait for init to halt before killing (default: its --stop-timeout, else 10).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Kill at once, without asking init to halt.
    #[arg(long, conflicts_with = "timeout")]
    pub fast: bool,
}

pub fn start(h: &Host, a: StartArgs) -> Result<u8> {
    match a.ctid {
        Some(ct) => start_one(h, &super::ctid(h, &ct)?).map(|_| 0),
        None => start_all(h),
    }
}

pub fn stop(h: &Host, loaded: &Loaded, a: StopArgs) -> Result<u8> {
    let how = super::lifecycle::shutdown(a.timeout, a.fast);
    match a.ctid {
        Some(ct) => stop_one(h, &super::ctid(h, &ct)?, how).map(|_| 0),
        None => stop_all(h, loaded.settings.stop_mode, how),
    }
}

/// Start one container, or resume it when it has a suspend image (as vzctl's start does).
fn start_one(h: &Host, ct: &Ctid) -> Result<()> {
    let cfg = container::load_config(h, ct)?;
    let lock = ContainerLock::acquire(h, ct, "start")?;
    // An interrupted migration may have left it dumped: bring it back from its dump rather
    // than boot it afresh (the dump would otherwise be restored over it later).
    let was_running = container::status(h, ct)?.0 == Status::Running;
    super::checkpoint::thaw_stale(h, &lock);
    if let ((Status::Running, Some(st)), false) = (container::status(h, ct)?, was_running) {
        println!("container {ct} is running (pid {})", st.pid);
        return Ok(());
    }
    if !was_running && h.suspend_image(ct).exists() {
        let done = ferry_migrate::checkpoint::resume(h, &lock, &mut |_| {})?;
        println!("container {ct} resumed from {} (pid {})", h.suspend_image(ct).display(), done.restore.state.pid);
        return Ok(());
    }
    let st = container::start(h, &lock, &cfg)?;
    println!("container {ct} started (pid {})", st.pid);
    Ok(())
}

fn stop_one(h: &Host, ct: &Ctid, how: container::Shutdown) -> Result<()> {
    let cfg = container::load_config(h, ct)?;
    let lock = ContainerLock::acquire(h, ct, "stop")?;
    super::checkpoint::thaw_stale(h, &lock);
    container::stop_with(h, &lock, &cfg, how)?;
    println!("container {ct} stopped");
    Ok(())
}

/// What the boot plan needs to know of every container of this host.
fn facts(h: &Host) -> Result<Vec<BootFacts>> {
    let ran = boot::ran_before(h)?;
    let mut v = Vec::new();
    for ct in h.list_ctids().with_context(|| format!("list containers in {}", h.conf_dir().display()))? {
        super::migrate::recover_if_interrupted(h, &ct);
        let Ok(cfg) = container::load_config(h, &ct) else { continue };
        let running = container::status(h, &ct).map(|(s, _)| s == Status::Running).unwrap_or(false);
        v.push(BootFacts::of(h, &cfg, running, &ran));
    }
    Ok(v)
}

/// The exit code of a batch: 0, or the most urgent class of its failures.
fn batch_code(failures: &[ErrorClass]) -> u8 {
    ErrorClass::most_urgent(failures.iter().copied()).map_or(0, |c| c.code())
}

fn start_all(h: &Host) -> Result<u8> {
    let plan = boot::boot_plan(&facts(h)?);
    let mut failed = Vec::new();
    let mut not_back = Vec::new();
    for step in &plan {
        let ct = step.ctid();
        if let Err(e) = start_one(h, ct) {
            let class = super::exit::classify(&e);
            let what = if matches!(step, BootStep::Resume(_)) { "resume" } else { "start" };
            eprintln!("ferry: start --all: {what} of {ct} failed: {e:#}");
            failed.push(class);
            not_back.push(ct.clone());
        }
    }
    // Those that came back are no longer "running before the shutdown".
    let ran = boot::ran_before(h)?;
    let still: Vec<Ctid> = ran.into_iter().filter(|c| not_back.contains(c) || !plan.iter().any(|s| s.ctid() == c)).collect();
    boot::keep_recorded(h, &still)?;
    println!("start --all: {} of {} started or resumed{}", plan.len() - failed.len(), plan.len(), failed_note(&failed));
    Ok(batch_code(&failed))
}

fn failed_note(failed: &[ErrorClass]) -> String {
    if failed.is_empty() {
        String::new()
    } else {
        format!(", {} failed (see above)", failed.len())
    }
}

fn stop_all(h: &Host, mode: StopMode, how: container::Shutdown) -> Result<u8> {
    let order = boot::shutdown_plan(&facts(h)?);
    // Recorded first: a shutdown that is cut short still knows what ran.
    boot::record_running(h, &order)?;
    let mut failed = Vec::new();
    for ct in &order {
        let res = match mode {
            StopMode::Suspend => suspend_or_stop(h, ct, how),
            StopMode::Stop => stop_one(h, ct, how),
        };
        if let Err(e) = res {
            eprintln!("ferry: stop --all: {ct} failed: {e:#}");
            failed.push(super::exit::classify(&e));
        }
    }
    let verb = if mode == StopMode::Suspend { "suspended or stopped" } else { "stopped" };
    println!("stop --all: {} of {} {verb}{}", order.len() - failed.len(), order.len(), failed_note(&failed));
    Ok(batch_code(&failed))
}

/// Suspend for the next boot; a container CRIU cannot dump is stopped instead (it starts
/// afresh at boot), since the host goes down either way.
fn suspend_or_stop(h: &Host, ct: &Ctid, how: container::Shutdown) -> Result<()> {
    let cfg = container::load_config(h, ct)?;
    let lock = ContainerLock::acquire(h, ct, "suspend")?;
    super::checkpoint::thaw_stale(h, &lock);
    match ferry_migrate::checkpoint::suspend(h, &lock, &cfg, &mut |_| {}) {
        Ok(done) => {
            println!("container {ct} suspended to {}", done.path.display());
            Ok(())
        }
        Err(e) if container::status(h, ct)?.0 != Status::Stopped => {
            eprintln!("ferry: container {ct}: cannot suspend it ({e}); stopping it instead");
            container::stop_with(h, &lock, &cfg, how)?;
            println!("container {ct} stopped");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
