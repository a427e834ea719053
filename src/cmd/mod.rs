//! The command line: global flags, one subcommand per verb, dispatch.

mod applyconfig;
mod boot;
mod checkpoint;
mod evacuate;
mod exec;
pub mod exit;
mod generate;
mod hostcfg;
mod lifecycle;
mod list;
mod metrics;
mod migrate;
mod newid;
mod notices;
mod opts;
mod set;
mod settings;
mod snapshot;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ferry_runtime::cgroups::CgroupModeSetting;
use ferry_runtime::{Ctid, Host};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Containers are named by CTID or by name (`set --name`) wherever a CTID goes.
Host settings: flag > FERRY_* variable > host config file (/etc/ferry/ferry.toml) > default;
`ferry host-config` shows them. Exit codes: docs/exit-codes.md (vzctl's where vzctl had one).";

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version = crate::version::short(),
    long_version = crate::version::long(),
    about = "Run Linux containers and move them between hosts while they run",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The host config file [env: FERRY_HOST_CONFIG; default /etc/ferry/ferry.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub host_config: Option<PathBuf>,
    /// Where configs, private areas and roots live [env: FERRY_DATA_DIR; host config:
    /// data_dir; default /var/lib/ferry].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the state of running containers lives [env: FERRY_RUN_DIR; host config: run_dir;
    /// default /run/ferry].
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The cgroup (relative to each hierarchy's root) that holds this host's containers
    /// [env: FERRY_CGROUP_PARENT; host config: cgroup_parent; default ferry].
    #[arg(long, global = true, value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
    /// Which cgroups containers get: auto (v2 when /sys/fs/cgroup is cgroup2, else v1), v1, or
    /// v2 (the cgroup2 hierarchy wherever it is mounted, also beside v1 on a hybrid host)
    /// [env: FERRY_CGROUP_MODE; host config: cgroup_mode; default auto].
    #[arg(long, global = true, value_name = "auto|v1|v2")]
    pub cgroup_mode: Option<CgroupModeSetting>,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a template directory or tarball (.tar, .tar.zst, .tar.gz).
    Create(lifecycle::CreateArgs),
    /// Start a container, or with --all those that start at boot (as the boot unit does).
    Start(boot::StartArgs),
    /// Stop a container: the halt signal to its init, its stop timeout, then SIGKILL to what
    /// is left; --all stops (or, with stop_mode = "suspend", suspends) every running one.
    Stop(boot::StopArgs),
    /// Stop (if running) and start a container.
    Restart {
        ctid: String,
        /// Seconds to wait for init to halt before killing (default: its --stop-timeout, else 10).
        #[arg(long)]
        timeout: Option<u64>,
        /// Kill at once, without asking init to halt.
        #[arg(long, conflicts_with = "timeout")]
        fast: bool,
    },
    /// Show whether a container runs, and its usage next to its limits.
    Status {
        ctid: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a container's files and config.
    #[command(visible_alias = "delete")]
    Destroy {
        ctid: String,
        /// Stop it first if it runs.
        #[arg(long)]
        force: bool,
    },
    /// Mount a stopped container's root at <data>/root/<CTID> (with its mount scripts).
    Mount { ctid: String },
    /// Unmount a stopped container's root (with its umount scripts).
    Umount { ctid: String },
    /// List containers (running ones unless -a or CTIDs are given), vzlist style.
    List(list::ListArgs),
    /// Run a command inside a running container; exits with the command's status (125 when
    /// ferry itself fails, 126/127 when the command cannot run or is not there).
    #[command(visible_alias = "exec2")]
    Exec {
        ctid: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// An interactive shell inside a running container, or with --exec a command on a
    /// terminal; exits with its status (125 when ferry itself fails).
    Enter {
        ctid: String,
        /// Run CMD [ARG...] on the terminal instead of a login shell.
        #[arg(long = "exec", num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
        exec: Vec<String>,
    },
    /// Run a shell script from the host inside a running container (vzctl's runscript).
    Runscript { ctid: String, script: PathBuf },
    /// Print the console log (stdout/stderr of PID 1, a system container's /dev/console), or
    /// with --attach connect this terminal to a running system container's console.
    #[command(alias = "logs")]
    Console {
        ctid: String,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
        /// Attach to the console interactively (a system container's /dev/console, where its
        /// getty shows a login prompt); Esc then . detaches.
        #[arg(short, long, conflicts_with = "follow")]
        attach: bool,
    },
    /// Change settings: live where the container runs, persisted with --save.
    ///
    /// A live change changes only what it names: limits set live earlier stay until the
    /// container stops. Every limit takes `unlimited` to lift it. Name, description, boot
    /// settings and the stop timeout are saved only (they need --save); DNS settings write
    /// the container's /etc/resolv.conf at once and at every start when saved.
    Set(set::SetArgs),
    /// Freeze and dump a running container into an image (vzctl chkpnt); it stops unless
    /// --keep-running. Prints one timing line.
    #[command(visible_alias = "chkpnt")]
    Checkpoint(checkpoint::CheckpointArgs),
    /// Start a container from an image made by `checkpoint`. Prints one timing line.
    Restore(checkpoint::RestoreArgs),
    /// Checkpoint to the container's default dump location (<data>/dump/<CTID>/dump.img).
    Suspend {
        ctid: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Restore from the default dump location, then remove the dump.
    Resume {
        ctid: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// What this host supports for ferry (CRIU, cgroups, memory tracking, ...).
    Check {
        #[arg(long)]
        json: bool,
    },
    /// The host's settings and where each comes from (flag, environment, host config file,
    /// default).
    HostConfig {
        #[arg(long)]
        json: bool,
    },
    /// Look into image files.
    Image {
        #[command(subcommand)]
        cmd: checkpoint::ImageCmd,
    },
    /// Snapshots: create, list, delete, restore, export, schedule, run-due.
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
    },
    /// The host's and its containers' figures in Prometheus's text format (for
    /// node_exporter's textfile collector with --output, or served with --listen).
    Metrics(metrics::MetricsArgs),
    /// Move containers to another host over ssh, live (online) or stopped (offline):
    /// `migrate CTID DEST`, or `migrate --to DEST CTID...` for several, one after the other.
    Migrate(migrate::MigrateArgs),
    /// Move every running container (with --all also the stopped ones) to other hosts:
    /// all preflights first, each to the destination with the most room, N at a time, one
    /// summary. Exits 0 only when every one moved.
    Evacuate(evacuate::EvacuateArgs),
    /// Copy a directory tree to another host (or directory) with ferry's file sync.
    Sync(migrate::SyncArgs),
    /// The destination's end of a migration (started by `ferry migrate` over ssh).
    #[command(hide = true)]
    MigrateReceive,
    /// Remove a half-received container left by a failed migration.
    #[command(hide = true)]
    MigrateCleanup {
        ctid: String,
        #[arg(long)]
        keep_files: bool,
    },
    /// The receiving end of `ferry sync`.
    #[command(hide = true)]
    SyncReceive { dir: PathBuf },
    /// Write the man pages and shell completions into DIR (for packaging).
    #[command(name = "__generate", hide = true)]
    Generate {
        dir: PathBuf,
        /// The date the man pages carry (YYYY-MM-DD).
        #[arg(long, default_value = "")]
        date: String,
    },
}

impl Command {
    /// Commands that only read and print (no container, CRIU or peer to leave half-done;
    /// list and status may first repair what an interrupted migration left).
    pub fn only_prints(&self) -> bool {
        matches!(self, Command::Console { .. } | Command::Check { .. } | Command::Image { .. } | Command::HostConfig { .. })
    }

    /// Whether the command asked for JSON output (its error is printed as JSON too).
    pub fn json(&self) -> bool {
        match self {
            Command::Status { json, .. } | Command::Check { json } | Command::HostConfig { json } => *json,
            Command::List(a) => a.json,
            Command::Migrate(a) => a.json,
            Command::Evacuate(a) => a.json,
            Command::Sync(a) => a.json,
            Command::Image { cmd: checkpoint::ImageCmd::Inspect { json, .. } } => *json,
            Command::Snapshot { cmd: snapshot::SnapshotCmd::List { json, .. } } => *json,
            _ => false,
        }
    }

    /// `exec` and `enter` exit with the command's status; ferry's own failures with 125.
    pub fn own_failure_code(&self) -> Option<u8> {
        matches!(self, Command::Exec { .. } | Command::Enter { .. } | Command::Runscript { .. }).then_some(ferry_runtime::exit::EXEC_OWN_FAILURE)
    }

    /// Commands that work without this host's settings (images and trees only).
    fn needs_host(&self) -> bool {
        !matches!(self, Command::Image { .. } | Command::Sync(_) | Command::SyncReceive { .. } | Command::Generate { .. })
    }
}

/// The CTID of the container `word` (a CTID or a name) names on this host.
pub fn ctid(h: &Host, word: &str) -> Result<Ctid> {
    Ok(ferry_runtime::lookup::resolve(h, word)?)
}

/// A CTID for a container that does not exist yet.
pub fn new_ctid(word: &str) -> Result<Ctid> {
    Ok(Ctid::new(word)?)
}

/// Run a command; the result is the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let loaded = if cli.cmd.needs_host() {
        hostcfg::load(&cli)?
    } else if matches!(cli.cmd, Command::Check { .. }) {
        // check reports on the host's own settings (its data dir, ID pool) when they load.
        hostcfg::load(&cli).unwrap_or_else(|_| ferry_runtime::host_config::defaults())
    } else {
        ferry_runtime::host_config::defaults()
    };
    let h = loaded.settings.host();
    match cli.cmd {
        Command::Create(a) => lifecycle::create(&h, &loaded, a),
        Command::Start(a) => boot::start(&h, a),
        Command::Stop(a) => boot::stop(&h, &loaded, a),
        Command::Restart { ctid, timeout, fast } => lifecycle::restart(&h, &ctid, lifecycle::shutdown(timeout, fast)),
        Command::Status { ctid, json } => lifecycle::status(&h, &ctid, json),
        Command::Destroy { ctid, force } => lifecycle::destroy(&h, &ctid, force),
        Command::Mount { ctid } => lifecycle::mount(&h, &ctid),
        Command::Umount { ctid } => lifecycle::umount(&h, &ctid),
        Command::List(a) => list::list(&h, a),
        Command::Exec { ctid, cmd } => exec::exec(&h, &ctid, &cmd),
        Command::Enter { ctid, exec } => exec::enter(&h, &ctid, &exec),
        Command::Runscript { ctid, script } => exec::runscript(&h, &ctid, &script),
        Command::Console { ctid, follow, attach: false } => exec::console(&h, &ctid, follow),
        Command::Console { ctid, attach: true, .. } => exec::console_attach(&h, &ctid),
        Command::Set(a) => set::set(&h, &loaded, a),
        Command::Checkpoint(a) => checkpoint::checkpoint(&h, a),
        Command::Restore(a) => checkpoint::restore(&h, a),
        Command::Suspend { ctid, quiet } => checkpoint::suspend(&h, &ctid, quiet),
        Command::Resume { ctid, quiet } => checkpoint::resume(&h, &ctid, quiet),
        Command::Check { json } => checkpoint::check(&h, loaded.settings.userns.kind(), json),
        Command::HostConfig { json } => hostcfg::show(&loaded, json),
        Command::Image { cmd } => checkpoint::image(cmd),
        Command::Snapshot { cmd } => snapshot::run(&h, cmd),
        Command::Metrics(a) => metrics::metrics(&h, a),
        Command::Migrate(a) => migrate::migrate_cmd(&h, a),
        Command::Evacuate(a) => evacuate::evacuate_cmd(&h, a),
        Command::Sync(a) => migrate::sync_cmd(a),
        Command::MigrateReceive => migrate::migrate_receive(&h),
        Command::MigrateCleanup { ctid, keep_files } => migrate::migrate_cleanup(&h, &ctid, keep_files),
        Command::SyncReceive { dir } => migrate::sync_receive(dir),
        Command::Generate { dir, date } => generate::generate(&dir, &date),
    }
}
