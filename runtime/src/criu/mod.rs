//! CRIU driven over its RPC (`criu swrk`): version, check and feature checks, dump, pre-dump,
//! restore; CRIU's errors turned into actionable messages; the host feature table of
//! `ferry check`. (The freezer is [`crate::cgroups::freezer`].)
//!
//! # Cgroups
//! ferry makes a container's cgroups itself (with the config's current limits, under the
//! restoring host's cgroup parent). Two ways to get a restored tree into them were tried here
//! (tests `restore_into_other_cgroups_via_join` and
//! `restore_under_other_parent_with_criu_cg_root`); both work:
//! - [`CgroupHandling::Ignore`] (the default): every request sends `manage_cgroups = false`,
//!   mode IGNORE. CRIU neither dumps nor touches cgroups and the restored processes inherit the
//!   cgroups of the CRIU process that forks them. [`RestoreOpts::join_cgroups`] lists the
//!   `cgroup.procs` files of the container's cgroups; `criu swrk` joins them between fork and
//!   exec, so the tree starts inside them whatever parent the dumping host used, with any
//!   subset of controllers. Cost: CRIU's own processes and the page cache of the images it
//!   reads are charged to the container while it restores (a very tight `pids.max` or memory
//!   limit can make the restore fail; raise them for the restore and set them after).
//! - [`CgroupHandling::Criu`] with mode NONE and a `cg_root` of ("", "/NEW/PARENT/CT"): CRIU
//!   records the tree's cgroups at dump (the dump must use a mode other than IGNORE, e.g. SOFT)
//!   and moves the restored tasks to the same place under the new root. CRIU creates nothing in
//!   mode NONE, so the target must exist in *every* hierarchy the dumped tree was in
//!   (name=systemd and the v2 root included on a hybrid host), cpuset with cpus and mems set.
//!   SOFT/FULL create missing directories but then fail on v1 cpuset (`cpuset.cpus: Permission
//!   denied` for a child created before its parent has cpus). CRIU also records the whole
//!   cgroup subtree below the tree's cgroups: a container left in a hierarchy's root drags every
//!   other cgroup of the host into its image (and the restore fails when they are missing).
//!
//! Ignore + join is the default because it depends only on the cgroups ferry made. It is also
//! what a container whose only cgroup is on a hybrid host's cgroup2 hierarchy (cgroup mode v2)
//! needs: IGNORE dumps no cgroup at all, so the v1 hierarchies the tree also sits in (their
//! roots) never reach the image, and the restore joins the v2 cgroup alone (test
//! `v2_freeze_dump_and_restore_on_the_unified_hierarchy`).
//!
//! # Freezing
//! A caller that freezes the container through its freezer cgroup passes that cgroup as
//! [`DumpOpts::freeze_cgroup`]; CRIU then seizes the frozen tasks. CRIU puts the freezer back in
//! the state it found it: a cgroup the caller froze stays frozen after a failed dump (and after a
//! dump with `leave_running`), so **the caller thaws it on every path** (see
//! [`crate::cgroups::FrozenGuard`]). A cgroup passed thawed is frozen and thawed by CRIU itself.
//! CRIU tells the layouts apart by the file the directory holds (`freezer.state` for v1,
//! `cgroup.freeze` for v2) and seizes the tasks listed in `tasks` / `cgroup.threads`, so a v2
//! directory on a hybrid host's unified hierarchy works as well as a v1 freezer cgroup.
//!
//! # Network
//! CRIU locks the network of a tree with its own netns by filter rules inside that netns
//! ([`DumpOpts::network_lock`]), and a dump that ends the tree leaves them there. The kernel
//! removes a dying netns's netfilter hooks before its interfaces, so for a moment (longer on a
//! busy host) a peer's retransmission reaches a netns with neither the sockets nor the lock,
//! which answers it with a RST and ends a connection the images hold. A dump that ends the
//! tree therefore sets every interface of the tree's netns but `lo` down once CRIU reports the
//! dump complete ("post-dump", after the caller's callback, before CRIU kills the tree): the
//! netns dies off the wire ([`crate::net::silence`]; test
//! `a_dumped_netns_sends_no_reset_while_it_dies`).
//!
//! # Use
//! ```no_run
//! # fn f() -> ferry_runtime::Result<()> {
//! use ferry_runtime::cgroups::{Freezer, FrozenGuard};
//! use ferry_runtime::criu::{Criu, DumpOpts, RestoreOpts};
//! let criu = Criu::new()?; // finds criu, insists on 4.2+
//! let freezer = Freezer::at("/sys/fs/cgroup/freezer/ferry/101")?; // or a v2 cgroup directory
//! let frozen = FrozenGuard::freeze(freezer.clone())?; // thaws on drop, also on `?` below
//! let mut dump = DumpOpts::new(4242, "/var/lib/ferry/dump/101");
//! dump.freeze_cgroup = Some(freezer.dir().to_path_buf());
//! dump.netns = Some("/run/netns/hostA".into());
//! let done = criu.dump_notify(&dump, &mut |n| {
//!     if n.script == "post-dump" { /* stop forwarding (the tree's netns goes off the wire next) */ }
//!     Ok(())
//! })?;
//! drop(frozen); // the tree is gone; thawing the empty cgroup is harmless
//! let mut rst = RestoreOpts::new("/var/lib/ferry/dump/101");
//! rst.root = Some("/var/lib/ferry/root/101".into());
//! rst.external = vec!["veth[eth0]:fv101".into()];
//! rst.join_cgroups = vec!["/sys/fs/cgroup/memory/ferry/101/cgroup.procs".into()];
//! let restored = criu.restore_notify(&rst, &mut |n| {
//!     if n.script == "post-restore" { /* plumb fv101 for init pid n.pid */ }
//!     Ok(())
//! })?;
//! println!("dump {:?}, restore {:?}, pid {}", done.elapsed, restored.elapsed, restored.pid);
//! # Ok(()) }
//! ```

pub mod check;
pub mod log;
pub mod rpc;

use crate::error::{Error, Result};
pub use rpc::{Notify, NotifyResult};
use rust_criu::rust_criu_protobuf::rpc::{
    Cgroup_root, Criu_cg_mode, Criu_features, Criu_network_lock_method, Criu_opts, Criu_req_type, Criu_veth_pair, Ext_mount_map, Inherit_fd,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The oldest CRIU ferry accepts: older ones fail on kernels ≥ 6.13 or cannot dump TCP there.
pub const MIN_VERSION: (u32, u32) = (4, 2);
/// What to do when CRIU is missing or older than [`MIN_VERSION`]: ferry-install-criu comes with
/// the Debian package, install-deps.sh runs the same steps from a source tree.
pub const INSTALL_HINT: &str = "run ferry-install-criu (scripts/install-deps.sh in ferry's source tree)";
/// CRIU's log level: 3 (info) has every step, warning and error; 4 adds debug lines (each
/// mapping, each fd) that cost 20-30 ms of a ~150 ms restore, all of it while the container
/// is frozen. `FERRY_CRIU_LOG_LEVEL=4` asks for them when a failure needs the detail.
pub const LOG_LEVEL: i32 = 3;

/// [`LOG_LEVEL`], or `FERRY_CRIU_LOG_LEVEL` (0-4) when set.
pub fn log_level() -> i32 {
    std::env::var("FERRY_CRIU_LOG_LEVEL").ok().and_then(|v| v.trim().parse().ok()).filter(|l| (0..=4).contains(l)).unwrap_or(LOG_LEVEL)
}

/// CRIU's version as reported over RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuVersion {
    pub major: u32,
    pub minor: u32,
    pub sublevel: u32,
    pub gitid: Option<String>,
}

impl std::fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.sublevel != 0 {
            write!(f, ".{}", self.sublevel)?;
        }
        Ok(())
    }
}

impl CriuVersion {
    pub fn at_least(&self, (major, minor): (u32, u32)) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// What FEATURE_CHECK reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Soft-dirty memory tracking: iterative pre-dumps.
    pub mem_track: bool,
    /// userfaultfd: lazy (post-copy) restore.
    pub lazy_pages: bool,
    /// pidfd store: pid reuse detection across pre-dumps.
    pub pidfd_store: bool,
}

/// How CRIU locks the container's network while it is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkLock {
    #[default]
    Iptables,
    Nftables,
    /// No lock (the caller isolates the network itself).
    Skip,
}

/// Who handles cgroups (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CgroupHandling {
    /// CRIU ignores cgroups; restored tasks inherit the cgroups `criu swrk` joined.
    #[default]
    Ignore,
    /// CRIU's own handling: a `manage_cgroups_mode` (NONE, PROPS, SOFT, FULL, STRICT) and
    /// `cg_root` remaps (controller or "" for all, new root path).
    Criu { mode: CriuCgMode, roots: Vec<(String, String)> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriuCgMode {
    None,
    Props,
    Soft,
    Full,
    Strict,
}

/// What to dump and how.
#[derive(Debug, Clone)]
pub struct DumpOpts {
    /// Host pid of the tree's root (the container's init).
    pub pid: i32,
    /// Where the images go (created if missing).
    pub images_dir: PathBuf,
    /// The log's file name, inside `images_dir`.
    pub log_file: String,
    pub log_level: i32,
    /// Keep the tree running after the dump (checkpoint --keep-running, snapshots).
    pub leave_running: bool,
    pub tcp_established: bool,
    /// Drop connections still in a listening socket's accept queue (not yet accepted by the
    /// service) instead of failing the dump: a busy server always has some.
    pub tcp_skip_in_flight: bool,
    pub file_locks: bool,
    pub ext_unix_sk: bool,
    /// Never set for containers (their init is a session leader inside its pid namespace).
    pub shell_job: bool,
    pub cgroups: CgroupHandling,
    /// With CRIU's own cgroup handling: the hierarchies it dumps (`name=systemd`, "" for the
    /// unified one); empty: every hierarchy.
    pub cgroup_dump_controllers: Vec<String>,
    /// Mounts from outside the container: (mount point inside, key written to the image).
    pub external_mounts: Vec<(String, String)>,
    /// Other externals, CRIU's `--external` syntax.
    pub external: Vec<String>,
    pub network_lock: NetworkLock,
    /// The container's freezer cgroup (v1 `.../freezer/...` or a v2 directory); see the
    /// module docs for who thaws it.
    pub freeze_cgroup: Option<PathBuf>,
    /// Track memory changes for a later incremental dump (needs soft-dirty).
    pub track_mem: bool,
    /// The previous pre-dump's images, relative to `images_dir` (e.g. "../pre1").
    pub parent_img: Option<String>,
    /// Run CRIU inside this network namespace (the one holding the container's outer veths,
    /// where the network lock goes).
    pub netns: Option<PathBuf>,
    /// The tree's own network namespace as ferry recorded it: a dump that ends the tree takes
    /// it off the wire at "post-dump" (see the module's Network section). None: left as is.
    pub silence_netns: Option<std::sync::Arc<crate::net::CtNetns>>,
}

impl DumpOpts {
    /// The defaults ferry uses for a container: TCP kept, file locks kept, iptables lock.
    pub fn new(pid: i32, images_dir: impl Into<PathBuf>) -> Self {
        DumpOpts {
            pid,
            images_dir: images_dir.into(),
            log_file: "dump.log".into(),
            log_level: log_level(),
            leave_running: false,
            tcp_established: true,
            tcp_skip_in_flight: false,
            file_locks: true,
            ext_unix_sk: false,
            shell_job: false,
            cgroups: CgroupHandling::Ignore,
            cgroup_dump_controllers: Vec::new(),
            external_mounts: Vec::new(),
            external: Vec::new(),
            network_lock: NetworkLock::Iptables,
            freeze_cgroup: None,
            track_mem: false,
            parent_img: None,
            netns: None,
            silence_netns: None,
        }
    }
}

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestoreOpts {
    pub images_dir: PathBuf,
    pub log_file: String,
    pub log_level: i32,
    /// The container's root on this host (a mount point).
    pub root: Option<PathBuf>,
    pub tcp_established: bool,
    pub file_locks: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub cgroups: CgroupHandling,
    /// Map of external mounts: (key from the dump, host path to bind there).
    pub external_mounts: Vec<(String, String)>,
    /// CRIU `--external` strings, e.g. `veth[eth0]:fv101` (the outer end of a veth whose inner
    /// end is eth0 is created under that name in the netns CRIU runs in). After a dump on the
    /// same host the old pair disappears with the dead netns *asynchronously*: wait until the
    /// outer name is gone before restoring under it, else CRIU fails with `File exists`.
    pub external: Vec<String>,
    /// veth pairs (inner name, outer name), the older form of the veth mapping.
    pub veths: Vec<(String, String)>,
    pub network_lock: NetworkLock,
    /// Restore the tree as a child of the calling process (CLONE_PARENT); otherwise it is a
    /// child of `criu swrk`, which exits, so it is reparented to the host's init/subreaper.
    pub rst_sibling: bool,
    /// Run CRIU inside this network namespace: outer veth ends appear there.
    pub netns: Option<PathBuf>,
    /// `cgroup.procs` files the restored tree starts in (with [`CgroupHandling::Ignore`]).
    pub join_cgroups: Vec<PathBuf>,
    /// Descriptors of the caller the restored tree gets in place of a dumped external
    /// (CRIU's `--inherit-fd fd[N]:KEY`): (key, descriptor).
    pub inherit_fds: Vec<(String, std::os::fd::RawFd)>,
}

impl RestoreOpts {
    pub fn new(images_dir: impl Into<PathBuf>) -> Self {
        RestoreOpts {
            images_dir: images_dir.into(),
            log_file: "restore.log".into(),
            log_level: log_level(),
            root: None,
            tcp_established: true,
            file_locks: true,
            ext_unix_sk: false,
            shell_job: false,
            cgroups: CgroupHandling::Ignore,
            external_mounts: Vec::new(),
            external: Vec::new(),
            veths: Vec::new(),
            network_lock: NetworkLock::Iptables,
            rst_sibling: false,
            netns: None,
            join_cgroups: Vec::new(),
            inherit_fds: Vec::new(),
        }
    }
}

/// A finished dump.
#[derive(Debug, Clone)]
pub struct DumpResult {
    pub elapsed: Duration,
    /// The notifications CRIU sent, in order.
    pub notifications: Vec<String>,
    pub log: PathBuf,
}

/// A finished restore.
#[derive(Debug, Clone)]
pub struct RestoreResult {
    /// Host pid of the restored tree's root.
    pub pid: i32,
    pub elapsed: Duration,
    pub notifications: Vec<String>,
    pub log: PathBuf,
}

/// A handle on the host's CRIU binary.
#[derive(Debug, Clone)]
pub struct Criu {
    binary: PathBuf,
}

impl Criu {
    /// `criu` from PATH, checked to be at least [`MIN_VERSION`].
    pub fn new() -> Result<Self> {
        let c = Criu { binary: rpc::find_criu()? };
        c.require_version()?;
        Ok(c)
    }

    /// A given binary, not version checked (call [`Criu::require_version`]).
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        Criu { binary: binary.into() }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn spawn(&self, netns: Option<&Path>, join_cgroups: &[PathBuf]) -> rpc::SwrkSpawn {
        rpc::SwrkSpawn {
            criu: Some(self.binary.clone()),
            netns: netns.map(Path::to_path_buf),
            join_cgroups: join_cgroups.to_vec(),
            private_files: false,
            inherit_fds: Vec::new(),
        }
    }

    /// Fail with a clear message when CRIU is older than [`MIN_VERSION`].
    pub fn require_version(&self) -> Result<CriuVersion> {
        let v = self.version()?;
        version_ok(&v)?;
        Ok(v)
    }

    pub fn version(&self) -> Result<CriuVersion> {
        let ex = rpc::call(&self.spawn(None, &[]), &rpc::request(Criu_req_type::VERSION, None), &mut |_| Ok(()))?;
        if !ex.resp.success() || ex.resp.version.is_none() {
            return Err(Error::Criu(format!("{} does not answer the VERSION request (too old?): {INSTALL_HINT}", self.binary.display())));
        }
        let v = &ex.resp.version;
        Ok(CriuVersion { major: v.major_number() as u32, minor: v.minor_number() as u32, sublevel: v.sublevel() as u32, gitid: v.gitid.clone() })
    }

    /// CRIU's CHECK request (what `criu check` does). The error carries CRIU's log lines;
    /// `work_dir` receives `check.log`.
    pub fn check(&self, work_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(work_dir).map_err(|e| Error::io("create directory", work_dir, e))?;
        let dir = std::fs::File::open(work_dir).map_err(|e| Error::io("open", work_dir, e))?;
        let mut o = Criu_opts::new();
        o.set_images_dir_fd(std::os::fd::AsRawFd::as_raw_fd(&dir));
        o.set_log_file("check.log".into());
        o.set_log_level(log_level());
        let ex = rpc::call(&self.spawn(None, &[]), &rpc::request(Criu_req_type::CHECK, Some(o)), &mut |_| Ok(()))?;
        if !ex.resp.success() {
            return Err(Error::Criu(log::describe_failure("criu check", ex.resp.cr_errmsg(), Some(&work_dir.join("check.log")))));
        }
        Ok(())
    }

    /// FEATURE_CHECK for soft-dirty, userfaultfd and the pidfd store.
    pub fn features(&self) -> Result<Features> {
        let mut req = rpc::request(Criu_req_type::FEATURE_CHECK, None);
        let mut f = Criu_features::new();
        f.set_mem_track(true);
        f.set_lazy_pages(true);
        f.set_pidfd_store(true);
        req.features = protobuf::MessageField::some(f);
        let ex = rpc::call(&self.spawn(None, &[]), &req, &mut |_| Ok(()))?;
        // CRIU answers success=false when any asked feature is missing; the fields still say
        // which ones.
        let got = &ex.resp.features;
        Ok(Features { mem_track: got.mem_track(), lazy_pages: got.lazy_pages(), pidfd_store: got.pidfd_store() })
    }

    /// Dump a process tree.
    pub fn dump(&self, opts: &DumpOpts) -> Result<DumpResult> {
        self.dump_inner(Criu_req_type::DUMP, opts, None)
    }

    /// Dump, with a callback for CRIU's notifications (e.g. "post-dump": stop forwarding before
    /// the restore elsewhere). An error from the callback aborts the dump.
    pub fn dump_notify(&self, opts: &DumpOpts, on_notify: &mut dyn FnMut(&Notify) -> NotifyResult) -> Result<DumpResult> {
        self.dump_inner(Criu_req_type::DUMP, opts, Some(on_notify))
    }

    /// An iterative pre-dump (memory only, tree keeps running). Needs soft-dirty tracking;
    /// without it this fails with a clear error and ferry does one full dump instead.
    pub fn pre_dump(&self, opts: &DumpOpts) -> Result<DumpResult> {
        let f = self.features()?;
        if !f.mem_track {
            return Err(Error::Criu(format!(
                "pre-dump of pid {} needs soft-dirty memory tracking (CONFIG_MEM_SOFT_DIRTY), which this kernel lacks: do a single full dump instead",
                opts.pid
            )));
        }
        let mut o = opts.clone();
        o.track_mem = true;
        self.dump_inner(Criu_req_type::PRE_DUMP, &o, None)
    }

    fn dump_inner(&self, ty: Criu_req_type, opts: &DumpOpts, on_notify: Option<&mut dyn FnMut(&Notify) -> NotifyResult>) -> Result<DumpResult> {
        let t0 = Instant::now();
        let what = format!("{} of pid {}", if ty == Criu_req_type::PRE_DUMP { "pre-dump" } else { "dump" }, opts.pid);
        std::fs::create_dir_all(&opts.images_dir).map_err(|e| Error::io("create image directory", &opts.images_dir, e))?;
        let dir = std::fs::File::open(&opts.images_dir).map_err(|e| Error::io("open image directory", &opts.images_dir, e))?;
        let silence = ty == Criu_req_type::DUMP && silences_its_netns(opts);
        let o = dump_criu_opts(opts, std::os::fd::AsRawFd::as_raw_fd(&dir), on_notify.is_some() || silence);
        let log = opts.images_dir.join(&opts.log_file);
        let mut none = |_: &Notify| Ok(());
        let caller: &mut dyn FnMut(&Notify) -> NotifyResult = match on_notify {
            Some(cb) => cb,
            None => &mut none,
        };
        let mut cb = |n: &Notify| {
            caller(n)?;
            // The dump is complete and the caller let it stand: CRIU kills the tree next.
            if silence && n.script == "post-dump" {
                silence_before_kill(opts);
            }
            Ok(())
        };
        let spawn = rpc::SwrkSpawn { private_files: true, ..self.spawn(opts.netns.as_deref(), &[]) };
        let ex = rpc::call(&spawn, &rpc::request(ty, Some(o)), &mut cb).map_err(|e| with_log(e, &what, &log))?;
        drop(dir);
        if !ex.resp.success() {
            return Err(Error::Criu(log::describe_failure(&what, ex.resp.cr_errmsg(), Some(&log))));
        }
        Ok(DumpResult { elapsed: t0.elapsed(), notifications: ex.notifications, log })
    }

    /// Restore a tree from images; returns the restored root's host pid.
    pub fn restore(&self, opts: &RestoreOpts) -> Result<RestoreResult> {
        self.restore_inner(opts, None)
    }

    /// Restore, with a callback for CRIU's notifications ("setup-namespaces" and
    /// "post-restore" carry the restored init's pid: plumb its network there). An error from
    /// the callback aborts the restore (CRIU kills what it restored).
    pub fn restore_notify(&self, opts: &RestoreOpts, on_notify: &mut dyn FnMut(&Notify) -> NotifyResult) -> Result<RestoreResult> {
        self.restore_inner(opts, Some(on_notify))
    }

    fn restore_inner(&self, opts: &RestoreOpts, on_notify: Option<&mut dyn FnMut(&Notify) -> NotifyResult>) -> Result<RestoreResult> {
        let t0 = Instant::now();
        let what = format!("restore from {}", opts.images_dir.display());
        let dir = std::fs::File::open(&opts.images_dir).map_err(|e| Error::io("open image directory", &opts.images_dir, e))?;
        let o = restore_criu_opts(opts, std::os::fd::AsRawFd::as_raw_fd(&dir), on_notify.is_some());
        let log = opts.images_dir.join(&opts.log_file);
        let mut none = |_: &Notify| Ok(());
        let cb: &mut dyn FnMut(&Notify) -> NotifyResult = match on_notify {
            Some(cb) => cb,
            None => &mut none,
        };
        let spawn = rpc::SwrkSpawn {
            inherit_fds: opts.inherit_fds.iter().map(|(_, fd)| *fd).collect(),
            ..self.spawn(opts.netns.as_deref(), &opts.join_cgroups)
        };
        let ex = rpc::call(&spawn, &rpc::request(Criu_req_type::RESTORE, Some(o)), cb).map_err(|e| with_log(e, &what, &log))?;
        drop(dir);
        if !ex.resp.success() {
            return Err(Error::Criu(log::describe_failure(&what, ex.resp.cr_errmsg(), Some(&log))));
        }
        let pid = ex.resp.restore.pid();
        if pid <= 0 {
            return Err(Error::Criu(format!("{what}: CRIU reported success but no pid; see {}", log.display())));
        }
        Ok(RestoreResult { pid, elapsed: t0.elapsed(), notifications: ex.notifications, log })
    }
}

/// The error for a CRIU older than [`MIN_VERSION`].
pub fn version_ok(v: &CriuVersion) -> Result<()> {
    if v.at_least(MIN_VERSION) {
        return Ok(());
    }
    Err(Error::Criu(format!(
        "criu {v} is too old for ferry (needs {}.{}+: older CRIU fails on kernels 6.13+ and cannot dump TCP there): {INSTALL_HINT}",
        MIN_VERSION.0, MIN_VERSION.1
    )))
}

/// A protocol-level failure (callback refusal, CRIU crash) still points at the log.
fn with_log(e: Error, what: &str, log: &Path) -> Error {
    let detail = match e {
        Error::Criu(m) => m,
        other => other.to_string(),
    };
    if !log.exists() {
        return Error::Criu(format!("{what}: {detail}"));
    }
    let excerpt = log::describe_failure(what, "", Some(log));
    Error::Criu(format!("{detail}\n{excerpt}"))
}

fn set_cgroups(o: &mut Criu_opts, cg: &CgroupHandling) {
    match cg {
        CgroupHandling::Ignore => {
            o.set_manage_cgroups(false);
            o.set_manage_cgroups_mode(Criu_cg_mode::IGNORE);
        }
        CgroupHandling::Criu { mode, roots } => {
            o.set_manage_cgroups(true);
            o.set_manage_cgroups_mode(match mode {
                CriuCgMode::None => Criu_cg_mode::CG_NONE,
                CriuCgMode::Props => Criu_cg_mode::PROPS,
                CriuCgMode::Soft => Criu_cg_mode::SOFT,
                CriuCgMode::Full => Criu_cg_mode::FULL,
                CriuCgMode::Strict => Criu_cg_mode::STRICT,
            });
            for (ctrl, path) in roots {
                let mut r = Cgroup_root::new();
                if !ctrl.is_empty() {
                    r.set_ctrl(ctrl.clone());
                }
                r.set_path(path.clone());
                o.cg_root.push(r);
            }
        }
    }
}

/// Whether a dump with `opts` ends a tree whose network CRIU locks: then, once the dump is
/// complete, its netns is taken off the wire before CRIU kills the tree. CRIU leaves its
/// lock (filter rules in the tree's netns) in place, but the kernel drops a dying netns's
/// netfilter hooks before its interfaces, and for that moment a peer's segment of a dumped
/// connection would meet no socket and no lock: the netns would answer with a RST, ending the
/// very connection the dump carries (see [`crate::net::silence`]).
fn silences_its_netns(opts: &DumpOpts) -> bool {
    opts.silence_netns.is_some() && !opts.leave_running && opts.network_lock != NetworkLock::Skip
}

/// At "post-dump": every interface of the dumped tree's recorded netns
/// ([`DumpOpts::silence_netns`]; never one its processes name in /proc) down, unless that
/// netns is the one CRIU runs in (CRIU then locks each connection on the host instead). Best
/// effort: the dump is good whatever happens here.
fn silence_before_kill(opts: &DumpOpts) {
    let Some(tree_ns) = &opts.silence_netns else { return };
    let host = opts.netns.clone().unwrap_or_else(|| PathBuf::from(crate::net::tools::own_netns_path()));
    let host_ns = match std::fs::File::open(&host) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("dump of pid {}: cannot take its netns off the wire ({e}); a peer may see its connections reset", opts.pid);
            return;
        }
    };
    if crate::net::silence::same_namespace(tree_ns.file(), &host_ns) {
        return;
    }
    match crate::net::silence::links_down(tree_ns) {
        Ok(links) => tracing::debug!("dump of pid {}: its netns is off the wire ({} down)", opts.pid, links.join(", ")),
        Err(e) => tracing::warn!("dump of pid {}: taking its netns off the wire: {e}; a peer may see its connections reset", opts.pid),
    }
}

fn lock_method(l: NetworkLock) -> Criu_network_lock_method {
    match l {
        NetworkLock::Iptables => Criu_network_lock_method::IPTABLES,
        NetworkLock::Nftables => Criu_network_lock_method::NFTABLES,
        NetworkLock::Skip => Criu_network_lock_method::SKIP,
    }
}

fn ext_mounts(o: &mut Criu_opts, m: &[(String, String)]) {
    for (k, v) in m {
        let mut e = Ext_mount_map::new();
        e.set_key(k.clone());
        e.set_val(v.clone());
        o.ext_mnt.push(e);
    }
}

/// The RPC options of a dump (pure, unit tested).
pub fn dump_criu_opts(d: &DumpOpts, images_dir_fd: i32, notify: bool) -> Criu_opts {
    let mut o = Criu_opts::new();
    o.set_pid(d.pid);
    o.set_images_dir_fd(images_dir_fd);
    o.set_log_file(d.log_file.clone());
    o.set_log_level(d.log_level);
    o.set_leave_running(d.leave_running);
    o.set_tcp_established(d.tcp_established);
    o.set_tcp_skip_in_flight(d.tcp_skip_in_flight);
    o.set_file_locks(d.file_locks);
    o.set_ext_unix_sk(d.ext_unix_sk);
    o.set_shell_job(d.shell_job);
    o.set_notify_scripts(notify);
    o.set_network_lock(lock_method(d.network_lock));
    set_cgroups(&mut o, &d.cgroups);
    o.cgroup_dump_controller = d.cgroup_dump_controllers.clone();
    ext_mounts(&mut o, &d.external_mounts);
    o.external = d.external.clone();
    if let Some(fc) = &d.freeze_cgroup {
        o.set_freeze_cgroup(fc.to_string_lossy().into_owned());
    }
    if d.track_mem {
        o.set_track_mem(true);
    }
    if let Some(p) = &d.parent_img {
        o.set_parent_img(p.clone());
    }
    o
}

/// The RPC options of a restore (pure, unit tested).
pub fn restore_criu_opts(r: &RestoreOpts, images_dir_fd: i32, notify: bool) -> Criu_opts {
    let mut o = Criu_opts::new();
    o.set_images_dir_fd(images_dir_fd);
    o.set_log_file(r.log_file.clone());
    o.set_log_level(r.log_level);
    if let Some(root) = &r.root {
        o.set_root(root.to_string_lossy().into_owned());
    }
    o.set_tcp_established(r.tcp_established);
    o.set_file_locks(r.file_locks);
    o.set_ext_unix_sk(r.ext_unix_sk);
    o.set_shell_job(r.shell_job);
    o.set_notify_scripts(notify);
    o.set_network_lock(lock_method(r.network_lock));
    o.set_rst_sibling(r.rst_sibling);
    set_cgroups(&mut o, &r.cgroups);
    ext_mounts(&mut o, &r.external_mounts);
    o.external = r.external.clone();
    // `criu swrk` finds the inherited descriptors right after its socket, in order.
    for (n, (key, _)) in r.inherit_fds.iter().enumerate() {
        let mut f = Inherit_fd::new();
        f.set_key(key.clone());
        f.set_fd(rpc::inherited_fd(n));
        o.inherit_fd.push(f);
    }
    for (i, out) in &r.veths {
        let mut v = Criu_veth_pair::new();
        v.set_if_in(i.clone());
        v.set_if_out(out.clone());
        o.veths.push(v);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_opts_carry_container_defaults() {
        let mut d = DumpOpts::new(42, "/x");
        d.freeze_cgroup = Some("/sys/fs/cgroup/freezer/ferry/101".into());
        d.external_mounts.push(("/data".into(), "data".into()));
        let o = dump_criu_opts(&d, 9, true);
        assert_eq!(o.pid(), 42);
        assert_eq!(o.images_dir_fd(), 9);
        assert!(o.tcp_established() && o.file_locks() && !o.shell_job() && !o.leave_running());
        assert!(!o.manage_cgroups());
        assert_eq!(o.manage_cgroups_mode(), Criu_cg_mode::IGNORE);
        assert_eq!(o.network_lock(), Criu_network_lock_method::IPTABLES);
        assert_eq!(o.freeze_cgroup(), "/sys/fs/cgroup/freezer/ferry/101");
        assert_eq!(o.ext_mnt[0].key(), "/data");
        assert!(o.notify_scripts());
        assert_eq!(o.log_level(), LOG_LEVEL);
    }

    #[test]
    fn restore_opts_map_veths_and_cgroup_roots() {
        let mut r = RestoreOpts::new("/x");
        r.root = Some("/var/lib/ferry/root/101".into());
        r.external.push("veth[eth0]:fv101".into());
        r.cgroups = CgroupHandling::Criu { mode: CriuCgMode::None, roots: vec![(String::new(), "/hostB/ferry/101".into())] };
        let o = restore_criu_opts(&r, 5, false);
        assert_eq!(o.root(), "/var/lib/ferry/root/101");
        assert_eq!(o.external, vec!["veth[eth0]:fv101".to_owned()]);
        assert!(o.manage_cgroups());
        assert_eq!(o.manage_cgroups_mode(), Criu_cg_mode::CG_NONE);
        assert!(!o.cg_root[0].has_ctrl());
        assert_eq!(o.cg_root[0].path(), "/hostB/ferry/101");
        assert!(!o.rst_sibling());
        assert!(o.inherit_fd.is_empty());
    }

    #[test]
    fn a_system_containers_console_and_cgroup_subtree() {
        let mut d = DumpOpts::new(42, "/x");
        d.cgroups = CgroupHandling::Criu { mode: CriuCgMode::Soft, roots: vec![(String::new(), "/ferry/101".into())] };
        d.cgroup_dump_controllers = vec!["name=systemd".into()];
        d.external.push("tty[8800:1a]".into());
        let o = dump_criu_opts(&d, 5, false);
        assert_eq!(o.cgroup_dump_controller, vec!["name=systemd".to_owned()]);
        assert_eq!(o.manage_cgroups_mode(), Criu_cg_mode::SOFT);
        assert_eq!(o.cg_root[0].path(), "/ferry/101");
        let mut r = RestoreOpts::new("/x");
        r.inherit_fds = vec![("tty[8800:1a]".into(), 17), ("other".into(), 9)];
        let o = restore_criu_opts(&r, 5, false);
        // criu swrk finds them right after its socket (fd 3), in order.
        let got: Vec<(String, i32)> = o.inherit_fd.iter().map(|f| (f.key().to_owned(), f.fd())).collect();
        assert_eq!(got, vec![("tty[8800:1a]".to_owned(), 4), ("other".to_owned(), 5)]);
    }

    #[test]
    fn version_compare() {
        let v = CriuVersion { major: 4, minor: 1, sublevel: 1, gitid: None };
        assert!(!v.at_least(MIN_VERSION));
        assert_eq!(v.to_string(), "4.1.1");
        assert!(CriuVersion { major: 4, minor: 2, sublevel: 0, gitid: None }.at_least(MIN_VERSION));
        let e = version_ok(&CriuVersion { major: 3, minor: 17, sublevel: 0, gitid: None }).unwrap_err().to_string();
        assert!(e.contains("criu 3.17 is too old") && e.contains("4.2+") && e.contains("ferry-install-criu"), "{e}");
    }
}
