//! The host's boot and shutdown (`ferry start --all`, `ferry stop --all`, run by the
//! `ferry-boot.service` unit): which containers, in what order, and what happens to each.
//!
//! At shutdown every running container is stopped, or with the host setting
//! `stop_mode = "suspend"` checkpointed to its suspend image (processes and memory), in
//! reverse boot order; the CTIDs that ran are recorded. At boot, as vzctl: a container with
//! `onboot = true` starts, one with `onboot = false` never does, one without `onboot` starts
//! when it ran before the shutdown. Higher `bootorder` first, unset last. A container with a
//! suspend image is resumed from it rather than started afresh.

use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, IoContext, Result};
use crate::host::Host;
use std::cmp::Ordering;

/// What the boot plan knows of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFacts {
    pub ctid: Ctid,
    pub onboot: Option<bool>,
    pub bootorder: Option<u32>,
    pub running: bool,
    /// It ran when the last `stop --all` began.
    pub ran_before: bool,
    /// It has a suspend image (from `stop --all` in suspend mode, or `ferry suspend`).
    pub suspended: bool,
}

impl BootFacts {
    pub fn of(host: &Host, cfg: &ContainerConfig, running: bool, ran_before: &[Ctid]) -> BootFacts {
        BootFacts {
            ctid: cfg.ctid.clone(),
            onboot: cfg.boot.onboot,
            bootorder: cfg.boot.bootorder,
            running,
            ran_before: ran_before.contains(&cfg.ctid),
            suspended: host.suspend_image(&cfg.ctid).exists(),
        }
    }
}

/// One step of `start --all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootStep {
    Start(Ctid),
    Resume(Ctid),
}

impl BootStep {
    pub fn ctid(&self) -> &Ctid {
        match self {
            BootStep::Start(c) | BootStep::Resume(c) => c,
        }
    }
}

/// CTIDs as numbers when both are (vzctl's were), else as text.
pub fn ctid_order(a: &Ctid, b: &Ctid) -> Ordering {
    match (a.as_str().parse::<u64>(), b.as_str().parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.as_str().cmp(b.as_str()),
    }
}

/// Boot order: higher `bootorder` first, unset last, then by CTID.
fn boot_cmp(a: &BootFacts, b: &BootFacts) -> Ordering {
    match (a.bootorder, b.bootorder) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| ctid_order(&a.ctid, &b.ctid))
}

/// What `start --all` does, in order.
pub fn boot_plan(facts: &[BootFacts]) -> Vec<BootStep> {
    let mut v: Vec<&BootFacts> = facts.iter().filter(|f| !f.running).filter(|f| f.onboot.unwrap_or(f.ran_before)).collect();
    v.sort_by(|a, b| boot_cmp(a, b));
    v.into_iter().map(|f| if f.suspended { BootStep::Resume(f.ctid.clone()) } else { BootStep::Start(f.ctid.clone()) }).collect()
}

/// The running containers in the order `stop --all` ends them: the boot order reversed.
pub fn shutdown_plan(facts: &[BootFacts]) -> Vec<Ctid> {
    let mut v: Vec<&BootFacts> = facts.iter().filter(|f| f.running).collect();
    v.sort_by(|a, b| boot_cmp(b, a));
    v.into_iter().map(|f| f.ctid.clone()).collect()
}

/// The containers that ran when the last `stop --all` began.
pub fn ran_before(host: &Host) -> Result<Vec<Ctid>> {
    let p = host.ran_at_shutdown_path();
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(t.lines().filter_map(|l| Ctid::new(l.trim()).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// Record the containers that run as `stop --all` begins.
pub fn record_running(host: &Host, cts: &[Ctid]) -> Result<()> {
    let text: String = cts.iter().map(|c| format!("{c}\n")).collect();
    crate::util::write_atomic(&host.ran_at_shutdown_path(), text.as_bytes())
}

/// After `start --all`: only the containers that did not come back stay recorded.
pub fn keep_recorded(host: &Host, still: &[Ctid]) -> Result<()> {
    if still.is_empty() {
        let p = host.ran_at_shutdown_path();
        return match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx("remove", p),
            _ => Ok(()),
        };
    }
    record_running(host, still)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(ct: &str, onboot: Option<bool>, order: Option<u32>, running: bool, ran_before: bool, suspended: bool) -> BootFacts {
        BootFacts { ctid: Ctid::new(ct).unwrap(), onboot, bootorder: order, running, ran_before, suspended }
    }

    #[test]
    fn boot_starts_onboot_and_what_ran_in_bootorder_higher_first() {
        let facts = [
            f("101", Some(true), None, false, false, false),
            f("102", Some(true), Some(5), false, false, false),
            f("103", None, Some(50), false, true, true),
            f("104", None, Some(90), false, false, false),      // did not run, no onboot: stays
            f("105", Some(false), Some(99), false, true, true), // never at boot
            f("106", Some(true), Some(70), true, true, false),  // runs already
            f("20", Some(true), None, false, false, false),
        ];
        let plan = boot_plan(&facts);
        let c = |s: &str| Ctid::new(s).unwrap();
        assert_eq!(plan, vec![BootStep::Resume(c("103")), BootStep::Start(c("102")), BootStep::Start(c("20")), BootStep::Start(c("101"))]);
    }

    #[test]
    fn shutdown_is_the_boot_order_reversed() {
        let facts = [
            f("101", None, Some(10), true, false, false),
            f("102", None, None, true, false, false),
            f("103", None, Some(90), true, false, false),
            f("104", None, Some(50), false, false, false),
        ];
        let c = |s: &str| Ctid::new(s).unwrap();
        assert_eq!(shutdown_plan(&facts), vec![c("102"), c("101"), c("103")]);
    }

    #[test]
    fn the_record_of_what_ran() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path().join("data"), d.path().join("run"), "t");
        assert!(ran_before(&h).unwrap().is_empty());
        let cts = vec![Ctid::new("101").unwrap(), Ctid::new("web").unwrap()];
        record_running(&h, &cts).unwrap();
        assert_eq!(ran_before(&h).unwrap(), cts);
        keep_recorded(&h, &cts[1..]).unwrap();
        assert_eq!(ran_before(&h).unwrap(), &cts[1..]);
        keep_recorded(&h, &[]).unwrap();
        assert!(!h.ran_at_shutdown_path().exists());
    }
}
