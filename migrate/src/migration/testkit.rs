//! Two simulated hosts in one test process, for the unit tests of the migration's rollback
//! paths: each a temporary data and run directory with a recording fake of the host
//! operations; the source's pipeline and the destination's receiver talk over an in-process
//! pipe that a test can cut, and a test can kill either side at a stage of the migration (the
//! receiver's task ends without undoing anything, as a killed process would; the source's
//! task panics at the stage, leaving its journal and dump as they were). Both happen in the
//! source's stage hook, before the source sends anything of that stage, so a cut is never
//! late: the pipe forwards nothing once it is cut.

use super::dest;
use super::hostops::fake::Recording;
use super::hostops::HostOps;
use super::image_stream::receiver_features;
use super::link::Link;
use super::report::MigrationReport;
use super::source::{migrate_with, MigrateOptions};
use crate::error::Result;
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::{ContainerConfig, Ctid, Host};
use ferry_transfer::proto::{Connection, ConnectionOptions};
use ferry_transfer::transport::SshTarget;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const CT: &str = "101";

/// One simulated host.
pub struct TestHost {
    _dir: tempfile::TempDir,
    pub host: Host,
    pub ops: Arc<Recording>,
}

impl TestHost {
    pub fn new(name: &str) -> TestHost {
        let dir = tempfile::Builder::new().prefix(&format!("ferry-t-mig-{name}")).tempdir().expect("tempdir");
        let host = Host::new(dir.path().join("data"), dir.path().join("run"), format!("ferry-t-mig-{name}"));
        TestHost { _dir: dir, host, ops: Recording::new() }
    }

    /// The same host with fresh host operations (nothing recorded, nothing running).
    pub fn with_fresh_ops(self) -> TestHost {
        TestHost { ops: Recording::new(), ..self }
    }

    pub fn ops(&self) -> Arc<dyn HostOps> {
        self.ops.clone()
    }

    pub fn ct(&self) -> Ctid {
        Ctid::new(CT).unwrap()
    }

    /// Container 101 here, with a few files, running or stopped.
    pub fn container(&self, running: bool) -> ContainerConfig {
        let ct = self.ct();
        let mut cfg = ContainerConfig::new(ct.clone());
        cfg.net.ipadd = vec!["198.18.0.101".parse().unwrap()];
        cfg.save(&self.host.config_path(&ct)).unwrap();
        let private = self.host.private_dir(&ct);
        std::fs::create_dir_all(private.join("root/etc")).unwrap();
        std::fs::write(private.join("root/etc/hostname"), b"ct101\n").unwrap();
        std::fs::write(private.join("root/data"), vec![7u8; 100 << 10]).unwrap();
        self.ops.set_running(&ct, running);
        cfg
    }

    pub fn lock(&self) -> ContainerLock {
        ContainerLock::acquire(&self.host, &self.ct(), "migrate").expect("lock")
    }

    pub fn has_config(&self) -> bool {
        self.host.config_path(&self.ct()).exists()
    }

    pub fn has_private(&self) -> bool {
        self.host.private_dir(&self.ct()).exists()
    }

    pub fn has_staged(&self) -> bool {
        dest::staging_config(&self.host, &self.ct()).exists()
    }

    /// Nothing of a receive left here: no config, files, staged config or work dir.
    pub fn assert_clean(&self) {
        let ct = self.ct();
        assert!(!self.has_config(), "a config is left");
        assert!(!self.has_private(), "a private area is left");
        assert!(!self.has_staged(), "a staged config is left");
        assert!(!self.host.run_ct_dir(&ct).join("incoming").exists(), "the work dir is left");
        assert!(!self.ops.running(&ct), "a copy runs");
    }
}

/// Where a test interferes with a migration: each names the source's stage at which it
/// happens (`sync pass 1`, `freeze and dump`, `final sync`, `image transfer`, `restore on the
/// destination`, `announce`, `source cleanup`, `stop`, `sync`, `start on the destination`).
#[derive(Default)]
pub struct Interfere {
    /// The connection is cut: both sides see it end.
    pub cut_at: Option<&'static str>,
    /// The destination's receiver dies (nothing of it is undone).
    pub kill_dest_at: Option<&'static str>,
    /// The source's ferry dies (its journal and dump stay as they are).
    pub kill_source_at: Option<&'static str>,
}

struct Hooks {
    interfere: Interfere,
    cut: watch::Sender<bool>,
    dest_task: Mutex<Option<tokio::task::AbortHandle>>,
    stages: Mutex<Vec<String>>,
}

impl Hooks {
    fn on(&self, stage: &str) {
        self.stages.lock().unwrap().push(stage.to_string());
        let i = &self.interfere;
        if i.cut_at == Some(stage) {
            self.cut.send_replace(true);
        }
        if i.kill_dest_at == Some(stage) {
            if let Some(t) = self.dest_task.lock().unwrap().as_ref() {
                t.abort();
            }
        }
        if i.kill_source_at == Some(stage) {
            panic!("the source killed at {stage:?}, as a killed process would be");
        }
    }
}

/// The destination's receiver in a task of this process, over a pipe that can be cut.
struct InProcess {
    host: Host,
    ops: Arc<Recording>,
    hooks: Arc<Hooks>,
    task: Arc<Mutex<Option<JoinHandle<Result<()>>>>>,
    /// The receiver's result, once [`Link::finish`] waited for it.
    done: Arc<Mutex<Option<Result<()>>>>,
}

/// Copy `r` to `w` until either ends or the pipe is cut; a cut drops what was read but not
/// yet written, and both halves (the ends see EOF).
async fn forward(mut r: impl AsyncRead + Unpin, mut w: impl AsyncWrite + Unpin, mut cut: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => n,
            _ = cut.wait_for(|c| *c) => return,
        };
        match n {
            Ok(n) if n > 0 && !*cut.borrow() => {
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

fn quick() -> ConnectionOptions {
    ConnectionOptions { idle_timeout: Duration::from_secs(10), ping_interval: Duration::from_millis(500), ..Default::default() }
}

impl Link for InProcess {
    async fn connect(&mut self) -> Result<Connection> {
        let (a, a_far) = tokio::io::duplex(1 << 20);
        let (b_far, b) = tokio::io::duplex(1 << 20);
        let (ar, aw) = tokio::io::split(a_far);
        let (br, bw) = tokio::io::split(b_far);
        tokio::spawn(forward(ar, bw, self.hooks.cut.subscribe()));
        tokio::spawn(forward(br, aw, self.hooks.cut.subscribe()));
        let server_opts = ConnectionOptions { features: receiver_features(), ..quick() };
        let (c, s) = tokio::join!(Connection::client(a, quick()), Connection::server(b, server_opts));
        let (c, s) = (c?, s?);
        let (host, ops) = (self.host.clone(), self.ops.clone() as Arc<dyn HostOps>);
        let task = tokio::spawn(async move {
            let r = dest::serve_with(&host, &s, ops).await;
            // As `ferry migrate-receive` does: the last answer reaches the source.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.close()).await;
            r
        });
        *self.hooks.dest_task.lock().unwrap() = Some(task.abort_handle());
        *self.task.lock().unwrap() = Some(task);
        Ok(c)
    }

    async fn finish(&mut self, failed: bool) -> Option<String> {
        let task = self.task.lock().unwrap().take()?;
        let r = match tokio::time::timeout(Duration::from_secs(20), task).await {
            Ok(Ok(r)) => r,
            _ => return None, // killed, or hung
        };
        let said = match &r {
            Err(e) if failed => Some(format!("ferry: {e}")),
            _ => None,
        };
        *self.done.lock().unwrap() = Some(r);
        said
    }

    async fn cleanup(&self, ctid: &str, keep_files: bool) {
        let (host, ops, ct) = (self.host.clone(), self.ops.clone(), Ctid::new(ctid).unwrap());
        let _ = tokio::task::spawn_blocking(move || dest::cleanup_stale_with(&host, &ct, keep_files, ops.as_ref())).await;
    }
}

/// What a migration run in a test came to.
pub struct Outcome {
    /// None: the source was killed.
    pub result: Option<Result<MigrationReport>>,
    /// The source's stages, in order.
    pub stages: Vec<String>,
    /// The receiver's own result (None: it was killed, or is the source's to wait for).
    pub dest: Option<Result<()>>,
}

impl Outcome {
    /// The source's error, without what the destination said on its way out.
    pub fn cause(&self) -> &crate::Error {
        match &self.result {
            Some(Err(crate::Error::DestinationSaid { cause, .. })) => cause,
            Some(Err(e)) => e,
            Some(Ok(_)) => panic!("the migration succeeded"),
            None => panic!("the source was killed"),
        }
    }

    pub fn err(&self) -> String {
        match &self.result {
            Some(Err(e)) => e.to_string(),
            Some(Ok(_)) => panic!("the migration succeeded"),
            None => panic!("the source was killed"),
        }
    }
}

/// Migrate container 101 from `src` to `dst` with `opts` (its target is a placeholder: the
/// receiver runs here), interfering as `interfere` says.
pub async fn migrate(src: &TestHost, dst: &TestHost, mut opts: MigrateOptions, interfere: Interfere) -> Outcome {
    std::env::remove_var("SSH_CONNECTION"); // the data channel listens on 127.0.0.1
    let hooks = Arc::new(Hooks { interfere, cut: watch::channel(false).0, dest_task: Mutex::new(None), stages: Mutex::new(Vec::new()) });
    let h = hooks.clone();
    opts.on_stage = Some(Arc::new(move |s: &str| h.on(s)));
    let (task, done) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
    let link = InProcess { host: dst.host.clone(), ops: dst.ops.clone(), hooks: hooks.clone(), task: task.clone(), done: done.clone() };
    // The source in a task of its own, holding the container's lock as `ferry migrate` does:
    // killed (a panic), it leaves its journal and dump as they are.
    let (host, ops, ct) = (src.host.clone(), src.ops(), src.ct());
    let source = tokio::spawn(async move {
        let lock = ContainerLock::acquire(&host, &ct, "migrate")?;
        migrate_with(&host, &lock, &opts, ops, link).await
    });
    let result = source.await.ok();
    // What the receiver came to, once it ended (it ends when its connection does).
    let pending = task.lock().unwrap().take();
    let dest = match pending {
        Some(t) => match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(_)) => None, // killed
            Err(_) => panic!("the receiver did not end"),
        },
        None => done.lock().unwrap().take(),
    };
    let stages = hooks.stages.lock().unwrap().clone();
    Outcome { result, stages, dest }
}

pub fn options() -> MigrateOptions {
    let mut o = MigrateOptions::new(SshTarget::new("root@198.18.0.2"));
    o.max_iterations = 2;
    o
}
