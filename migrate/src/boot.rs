//! What `start --all` and `stop --all` do at the host's boot and shutdown (ferry-boot.service),
//! carried out: the plans are `ferry_runtime::boot`'s; each container is first put right if a
//! dead operation left it half done (`crate::stale`), started or resumed from its suspend
//! image, stopped or suspended. One container's failure does not stop the others. What
//! happens is told as it happens through [`Event`]s, for the caller to show.

use crate::error::{Error, Result};
use crate::stale::{self, Notice};
use ferry_runtime::boot::{self, BootFacts, BootStep};
use ferry_runtime::container::{self, Shutdown, Status};
use ferry_runtime::exit::ErrorClass;
use ferry_runtime::host_config::StopMode;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{Ctid, Host};
use std::path::PathBuf;

/// How a container came to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// It ran already (or came back running when a dead migration was put right).
    AlreadyRunning { pid: i32 },
    /// Restored from its suspend image, which is gone now.
    Resumed { image: PathBuf, pid: i32 },
    /// Started afresh.
    Started { pid: i32 },
}

/// What happened to one container of a batch, as it happened.
#[derive(Debug)]
pub enum Event<'a> {
    /// What putting a container right did first.
    Notice(Notice),
    Started {
        ctid: &'a Ctid,
        how: Started,
    },
    /// `what`: "start" or "resume".
    StartFailed {
        ctid: &'a Ctid,
        what: &'static str,
        error: Error,
    },
    Stopped {
        ctid: &'a Ctid,
    },
    Suspended {
        ctid: &'a Ctid,
        image: PathBuf,
    },
    /// CRIU could not dump it; it is stopped instead (it starts afresh at the next boot).
    CannotSuspend {
        ctid: &'a Ctid,
        error: Error,
    },
    StopFailed {
        ctid: &'a Ctid,
        error: Error,
    },
}

/// What a batch did: how many containers it took on, and the class of each failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub total: usize,
    pub failed: Vec<ErrorClass>,
}

impl Batch {
    /// The batch's exit code: 0, or that of the most urgent class among its failures.
    pub fn code(&self) -> u8 {
        ErrorClass::most_urgent(self.failed.iter().copied()).map_or(0, |c| c.code())
    }
}

/// Start one container, or resume it when it has a suspend image (as vzctl's start does).
pub fn start_one(h: &Host, ct: &Ctid, notices: &mut dyn FnMut(Notice)) -> Result<Started> {
    let cfg = container::load_config(h, ct)?;
    let lock = ContainerLock::acquire(h, ct, "start")?;
    // An interrupted migration may have left it dumped: bring it back from its dump rather
    // than boot it afresh (the dump would otherwise be restored over it later).
    let was_running = container::status(h, ct)?.0 == Status::Running;
    stale::thaw_stale(h, &lock).into_iter().for_each(&mut *notices);
    if let ((Status::Running, Some(st)), false) = (container::status(h, ct)?, was_running) {
        return Ok(Started::AlreadyRunning { pid: st.pid });
    }
    if !was_running && h.suspend_image(ct).exists() {
        let done = crate::checkpoint::resume(h, &lock, &mut |_| {})?;
        return Ok(Started::Resumed { image: h.suspend_image(ct), pid: done.restore.state.pid });
    }
    let st = container::start(h, &lock, &cfg)?;
    Ok(Started::Started { pid: st.pid })
}

/// Stop one container.
pub fn stop_one(h: &Host, ct: &Ctid, how: Shutdown, notices: &mut dyn FnMut(Notice)) -> Result<()> {
    let cfg = container::load_config(h, ct)?;
    let lock = ContainerLock::acquire(h, ct, "stop")?;
    stale::thaw_stale(h, &lock).into_iter().for_each(notices);
    container::stop_with(h, &lock, &cfg, how)?;
    Ok(())
}

/// What the boot plan needs to know of every container of this host.
fn facts(h: &Host, on: &mut dyn FnMut(Event)) -> Result<Vec<BootFacts>> {
    let ran = boot::ran_before(h)?;
    let mut v = Vec::new();
    let cts = h.list_ctids().map_err(|source| Error::ListContainers { dir: h.conf_dir(), source })?;
    for ct in cts {
        stale::recover_if_interrupted(h, &ct).into_iter().for_each(|n| on(Event::Notice(n)));
        let Ok(cfg) = container::load_config(h, &ct) else { continue };
        let running = container::status(h, &ct).map(|(s, _)| s == Status::Running).unwrap_or(false);
        v.push(BootFacts::of(h, &cfg, running, &ran));
    }
    Ok(v)
}

/// `start --all`: the containers that start at boot, higher bootorder first; suspended ones
/// are resumed. Those that came back are no longer recorded as running before the shutdown.
pub fn start_all(h: &Host, on: &mut dyn FnMut(Event)) -> Result<Batch> {
    let plan = boot::boot_plan(&facts(h, on)?);
    let mut batch = Batch { total: plan.len(), failed: Vec::new() };
    let mut not_back = Vec::new();
    for step in &plan {
        let ct = step.ctid();
        match start_one(h, ct, &mut |n| on(Event::Notice(n))) {
            Ok(how) => on(Event::Started { ctid: ct, how }),
            Err(error) => {
                let what = if matches!(step, BootStep::Resume(_)) { "resume" } else { "start" };
                batch.failed.push(error.class());
                not_back.push(ct.clone());
                on(Event::StartFailed { ctid: ct, what, error });
            }
        }
    }
    let ran = boot::ran_before(h)?;
    let still: Vec<Ctid> = ran.into_iter().filter(|c| not_back.contains(c) || !plan.iter().any(|s| s.ctid() == c)).collect();
    boot::keep_recorded(h, &still)?;
    Ok(batch)
}

/// `stop --all`: every running container, lower bootorder first, stopped or (with
/// `StopMode::Suspend`) suspended to disk; those that ran are recorded first, so that a
/// shutdown cut short still knows what ran.
pub fn stop_all(h: &Host, mode: StopMode, how: Shutdown, on: &mut dyn FnMut(Event)) -> Result<Batch> {
    let order = boot::shutdown_plan(&facts(h, on)?);
    boot::record_running(h, &order)?;
    let mut batch = Batch { total: order.len(), failed: Vec::new() };
    for ct in &order {
        let res = match mode {
            StopMode::Suspend => suspend_or_stop(h, ct, how, on),
            StopMode::Stop => stop_one(h, ct, how, &mut |n| on(Event::Notice(n))).map(|()| on(Event::Stopped { ctid: ct })),
        };
        if let Err(error) = res {
            batch.failed.push(error.class());
            on(Event::StopFailed { ctid: ct, error });
        }
    }
    Ok(batch)
}

/// Suspend for the next boot; a container CRIU cannot dump is stopped instead (it starts
/// afresh at boot), since the host goes down either way.
fn suspend_or_stop<'a>(h: &Host, ct: &'a Ctid, how: Shutdown, on: &mut dyn FnMut(Event<'a>)) -> Result<()> {
    let cfg = container::load_config(h, ct)?;
    let lock = ContainerLock::acquire(h, ct, "suspend")?;
    stale::thaw_stale(h, &lock).into_iter().for_each(|n| on(Event::Notice(n)));
    match crate::checkpoint::suspend(h, &lock, &cfg, &mut |_| {}) {
        Ok(done) => {
            on(Event::Suspended { ctid: ct, image: done.path });
            Ok(())
        }
        Err(e) if container::status(h, ct)?.0 != Status::Stopped => {
            on(Event::CannotSuspend { ctid: ct, error: e.into() });
            container::stop_with(h, &lock, &cfg, how)?;
            on(Event::Stopped { ctid: ct });
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
