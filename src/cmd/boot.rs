//! start and stop, one container or all of them (`--all`: what ferry-boot.service runs at the
//! host's boot and shutdown; `ferry_migrate::boot` carries it out).

use anyhow::Result;
use ferry_migrate::boot::{self, Event, Started};
use ferry_runtime::container;
use ferry_runtime::exit::ErrorClass;
use ferry_runtime::host_config::{Loaded, StopMode};
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
    let how = boot::start_one(h, ct, &mut |n| super::notices::warn([n]))?;
    print_started(ct, &how);
    Ok(())
}

fn print_started(ct: &Ctid, how: &Started) {
    match how {
        Started::AlreadyRunning { pid } => println!("container {ct} is running (pid {pid})"),
        Started::Resumed { image, pid } => println!("container {ct} resumed from {} (pid {pid})", image.display()),
        Started::Started { pid } => println!("container {ct} started (pid {pid})"),
    }
}

fn stop_one(h: &Host, ct: &Ctid, how: container::Shutdown) -> Result<()> {
    boot::stop_one(h, ct, how, &mut |n| super::notices::warn([n]))?;
    println!("container {ct} stopped");
    Ok(())
}

/// Each container's fate as the batch goes.
fn show(e: Event) {
    match e {
        Event::Notice(n) => super::notices::warn([n]),
        Event::Started { ctid, how } => print_started(ctid, &how),
        Event::StartFailed { ctid, what, error } => eprintln!("ferry: start --all: {what} of {ctid} failed: {}", ferry_migrate::error::chain(&error)),
        Event::Stopped { ctid } => println!("container {ctid} stopped"),
        Event::Suspended { ctid, image } => println!("container {ctid} suspended to {}", image.display()),
        Event::CannotSuspend { ctid, error } => eprintln!("ferry: container {ctid}: cannot suspend it ({error}); stopping it instead"),
        Event::StopFailed { ctid, error } => eprintln!("ferry: stop --all: {ctid} failed: {}", ferry_migrate::error::chain(&error)),
    }
}

fn failed_note(failed: &[ErrorClass]) -> String {
    if failed.is_empty() {
        String::new()
    } else {
        format!(", {} failed (see above)", failed.len())
    }
}

fn start_all(h: &Host) -> Result<u8> {
    let b = boot::start_all(h, &mut show)?;
    println!("start --all: {} of {} started or resumed{}", b.total - b.failed.len(), b.total, failed_note(&b.failed));
    Ok(b.code())
}

fn stop_all(h: &Host, mode: StopMode, how: container::Shutdown) -> Result<u8> {
    let b = boot::stop_all(h, mode, how, &mut show)?;
    let verb = if mode == StopMode::Suspend { "suspended or stopped" } else { "stopped" };
    println!("stop --all: {} of {} {verb}{}", b.total - b.failed.len(), b.total, failed_note(&b.failed));
    Ok(b.code())
}
