//! A recording fake of the host operations for unit tests: it keeps what runs in memory,
//! makes the few files the pipeline reads back (a dump with its checkpoint record, a private
//! area, the installed config) under the test's own temporary host, records every call in
//! order, and fails the operations a test names.

use super::{staging_config, HandoverOutcome, HostOps};
use crate::error::{Error, Result};
use crate::migration::fault::Faults;
use crate::migration::preflight::DestFacts;
use ferry_runtime::container::CheckpointMeta;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Ctid, Host};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One host operation, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    DrainBacklogs,
    Dump,
    Blackhole,
    LetTrafficThrough,
    Restore,
    ReleaseSource,
    Stop,
    Start,
    RemoveSource,
    ThawIfFrozen,
    PrepareReceiveArea,
    RestoreUnannounced,
    KillAndTeardown,
    RemoveArea,
    InstallConfig,
    Announce,
}

/// The size of the fake dump's page image: large enough that a byte flipped in its middle
/// lands in its data whatever the framing.
const PAGES: usize = 256 << 10;

#[derive(Default)]
pub struct Recording {
    calls: Mutex<Vec<Op>>,
    failing: Mutex<BTreeSet<Op>>,
    running: Mutex<BTreeSet<String>>,
    frozen: Mutex<BTreeSet<String>>,
    faults: Mutex<Faults>,
}

impl Recording {
    pub fn new() -> std::sync::Arc<Recording> {
        std::sync::Arc::new(Recording::default())
    }

    /// Every operation so far, in order.
    pub fn calls(&self) -> Vec<Op> {
        self.calls.lock().unwrap().clone()
    }

    pub fn called(&self, op: Op) -> bool {
        self.calls().contains(&op)
    }

    /// From now on `op` fails (and changes nothing).
    pub fn fail(&self, op: Op) {
        self.failing.lock().unwrap().insert(op);
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    pub fn set_running(&self, ct: &Ctid, running: bool) {
        let mut r = self.running.lock().unwrap();
        if running {
            r.insert(ct.to_string());
        } else {
            r.remove(ct.as_str());
        }
    }

    /// A container left frozen by a dead operation.
    pub fn set_frozen(&self, ct: &Ctid) {
        self.frozen.lock().unwrap().insert(ct.to_string());
    }

    pub fn running(&self, ct: &Ctid) -> bool {
        self.running.lock().unwrap().contains(ct.as_str())
    }

    fn step(&self, op: Op) -> Result<()> {
        self.calls.lock().unwrap().push(op);
        if self.failing.lock().unwrap().contains(&op) {
            return Err(Error::Migration(format!("{op:?} failed (fake)")));
        }
        Ok(())
    }
}

/// What a CRIU dump leaves: the checkpoint record ferry writes beside CRIU's images, and
/// images with bytes in them.
pub fn write_dump(dir: &Path, cfg: &ContainerConfig) {
    std::fs::create_dir_all(dir).unwrap();
    // Through serde, so that fields a newer runtime adds (with defaults) need nothing here.
    let summary = serde_json::to_value(ferry_runtime::container::CheckpointSummary::default()).expect("a summary");
    let meta: CheckpointMeta = serde_json::from_value(serde_json::json!({
        "ctid": cfg.ctid.to_string(), "veths": [], "ext_unix_sk": false, "criu_version": "4.2.1", "summary": summary
    }))
    .expect("a checkpoint record");
    meta.save(dir).unwrap();
    std::fs::write(dir.join("inventory.img"), b"\x01\x02inventory").unwrap();
    let pages: Vec<u8> = (0..PAGES).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("pages-1.img"), pages).unwrap();
}

impl HostOps for Recording {
    fn is_running(&self, _: &Host, ct: &Ctid) -> bool {
        self.running(ct)
    }

    /// The private area (the fake's containers are plain directories).
    fn files_dir(&self, host: &Host, cfg: &ContainerConfig) -> Result<(PathBuf, bool)> {
        Ok((host.private_dir(&cfg.ctid), false))
    }

    fn unmount_files(&self, _: &Host, _: &ContainerConfig) {}

    fn criu_version(&self) -> Option<String> {
        Some("4.2.1".into())
    }

    fn memory_tracking(&self) -> bool {
        false
    }

    fn dump_cpuinfo(&self, _: &Path) -> Vec<u8> {
        b"cpuinfo".to_vec()
    }

    fn preflight_facts(&self, host: &Host, cfg: &ContainerConfig, _: &[u8], _: bool, _: &Path) -> DestFacts {
        DestFacts {
            ctid_has_config: host.config_path(&cfg.ctid).exists(),
            ctid_has_private: host.private_dir(&cfg.ctid).exists(),
            free_disk: 1 << 40,
            ..Default::default()
        }
    }

    fn drain_backlogs(&self, _: &Host, _: &ContainerConfig, _: Duration) -> u64 {
        self.calls.lock().unwrap().push(Op::DrainBacklogs);
        0
    }

    fn dump(&self, _: &Host, _: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<Option<Instant>> {
        self.step(Op::Dump)?;
        write_dump(dir, cfg);
        self.set_running(&cfg.ctid, false);
        Ok(Some(Instant::now()))
    }

    fn blackhole(&self, _: &ContainerConfig) {
        self.calls.lock().unwrap().push(Op::Blackhole);
    }

    fn let_traffic_through(&self, _: &ContainerConfig) {
        self.calls.lock().unwrap().push(Op::LetTrafficThrough);
    }

    fn restore(&self, _: &Host, _: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
        self.step(Op::Restore)?;
        match CheckpointMeta::load(dir)? {
            Some(m) if m.ctid == cfg.ctid.as_str() => {}
            other => return Err(Error::Migration(format!("no checkpoint of {} in {} ({other:?})", cfg.ctid, dir.display()))),
        }
        self.set_running(&cfg.ctid, true);
        Ok(4242)
    }

    fn release_source(&self, _: &Host, _: &ContainerConfig) -> Result<()> {
        self.step(Op::ReleaseSource)
    }

    fn stop(&self, _: &Host, _: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
        self.step(Op::Stop)?;
        self.set_running(&cfg.ctid, false);
        Ok(())
    }

    fn start(&self, _: &Host, _: &ContainerLock, cfg: &ContainerConfig) -> Result<i32> {
        self.step(Op::Start)?;
        self.set_running(&cfg.ctid, true);
        Ok(4243)
    }

    fn remove_source(&self, host: &Host, _: &ContainerLock, cfg: &ContainerConfig, remove_area: bool) -> Result<()> {
        self.step(Op::RemoveSource)?;
        self.set_running(&cfg.ctid, false);
        let conf = host.config_path(&cfg.ctid);
        if remove_area {
            std::fs::remove_file(&conf).map_err(|e| Error::io("remove", &conf, e))?;
            let _ = std::fs::remove_dir_all(host.private_dir(&cfg.ctid));
        } else {
            std::fs::rename(&conf, conf.with_extension("toml.migrated")).map_err(|e| Error::io("rename", &conf, e))?;
        }
        Ok(())
    }

    fn thaw_if_frozen(&self, _: &Host, lock: &ContainerLock) -> Result<bool> {
        self.step(Op::ThawIfFrozen)?;
        Ok(self.frozen.lock().unwrap().remove(lock.ctid().as_str()))
    }

    fn prepare_receive_area(&self, host: &Host, cfg: &mut ContainerConfig) -> Result<PathBuf> {
        self.step(Op::PrepareReceiveArea)?;
        let private = host.private_dir(&cfg.ctid);
        std::fs::create_dir_all(&private).map_err(|e| Error::io("create", &private, e))?;
        Ok(private)
    }

    fn restore_unannounced(&self, _: &Host, _: &ContainerLock, cfg: &ContainerConfig, dir: &Path) -> Result<i32> {
        self.step(Op::RestoreUnannounced)?;
        if CheckpointMeta::load(dir)?.is_none() {
            return Err(Error::Migration(format!("no checkpoint in {}", dir.display())));
        }
        self.set_running(&cfg.ctid, true);
        Ok(4244)
    }

    fn kill_and_teardown(&self, _: &Host, _: &ContainerLock, cfg: &ContainerConfig) -> Result<()> {
        self.step(Op::KillAndTeardown)?;
        self.set_running(&cfg.ctid, false);
        Ok(())
    }

    fn remove_area(&self, host: &Host, cfg: &ContainerConfig) -> Result<()> {
        self.step(Op::RemoveArea)?;
        let _ = std::fs::remove_dir_all(host.private_dir(&cfg.ctid));
        Ok(())
    }

    fn install_config(&self, host: &Host, ct: &Ctid) -> Result<()> {
        self.step(Op::InstallConfig)?;
        let conf = host.config_path(ct);
        std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
        std::fs::rename(staging_config(host, ct), &conf).map_err(|e| Error::io("install config", &conf, e))
    }

    fn hand_over(&self, _: &Host, _: &ContainerConfig, _: Instant, _: &dyn Fn() -> bool) -> Result<HandoverOutcome> {
        self.step(Op::Announce).map(|()| HandoverOutcome::default())
    }

    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap()
    }
}
