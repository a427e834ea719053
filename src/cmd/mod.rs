//! The command line: global flags, one subcommand per verb, dispatch.

mod checkpoint;
mod exec;
mod generate;
mod lifecycle;
mod list;
mod migrate;
mod opts;
mod set;
mod snapshot;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ferry_runtime::host::{DEFAULT_CGROUP_PARENT, DEFAULT_DATA_DIR, DEFAULT_RUN_DIR};
use ferry_runtime::{Ctid, Host};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version = crate::version::short(),
    long_version = crate::version::long(),
    about = "Run Linux containers and move them between hosts while they run"
)]
pub struct Cli {
    /// Where configs, private areas and roots live.
    #[arg(long, global = true, env = "FERRY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the state of running containers lives.
    #[arg(long, global = true, env = "FERRY_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// The cgroup (relative to each hierarchy's root) that holds this host's containers.
    #[arg(long, global = true, env = "FERRY_CGROUP_PARENT", default_value = DEFAULT_CGROUP_PARENT)]
    pub cgroup_parent: String,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a template directory or tarball (.tar, .tar.zst, .tar.gz).
    Create(lifecycle::CreateArgs),
    /// Start a container.
    Start { ctid: String },
    /// Stop a container: SIGTERM to its PID 1, then SIGKILL to what is left.
    Stop {
        ctid: String,
        /// Seconds to wait after SIGTERM before killing.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Stop (if running) and start a container.
    Restart {
        ctid: String,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Show whether a container runs, and its usage next to its limits.
    Status {
        ctid: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a container's files and config.
    Destroy {
        ctid: String,
        /// Stop it first if it runs.
        #[arg(long)]
        force: bool,
    },
    /// List containers (running ones unless -a).
    List(list::ListArgs),
    /// Run a command inside a running container.
    Exec {
        ctid: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// An interactive shell inside a running container.
    Enter { ctid: String },
    /// Print the console log (stdout/stderr of PID 1).
    #[command(alias = "logs")]
    Console {
        ctid: String,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
    },
    /// Change settings: live where the container runs, persisted with --save.
    ///
    /// A live change changes only what it names: limits set live earlier stay until the
    /// container stops. Every limit takes `unlimited` to lift it.
    Set(set::SetArgs),
    /// Freeze and dump a running container into an image (vzctl chkpnt); it stops unless
    /// --keep-running. Prints one timing line.
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
    /// Move a container to another host over ssh, live (online) or stopped (offline).
    Migrate(migrate::MigrateArgs),
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
        matches!(self, Command::Console { .. } | Command::Check { .. } | Command::Image { .. })
    }
}

pub fn host(cli: &Cli) -> Host {
    Host::new(&cli.data_dir, &cli.run_dir, cli.cgroup_parent.clone())
}

pub fn ctid(s: &str) -> Result<Ctid> {
    Ok(Ctid::new(s)?)
}

/// Run a command; the result is the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let h = host(&cli);
    match cli.cmd {
        Command::Create(a) => lifecycle::create(&h, a),
        Command::Start { ctid } => lifecycle::start(&h, &ctid),
        Command::Stop { ctid, timeout } => lifecycle::stop(&h, &ctid, timeout),
        Command::Restart { ctid, timeout } => lifecycle::restart(&h, &ctid, timeout),
        Command::Status { ctid, json } => lifecycle::status(&h, &ctid, json),
        Command::Destroy { ctid, force } => lifecycle::destroy(&h, &ctid, force),
        Command::List(a) => list::list(&h, a),
        Command::Exec { ctid, cmd } => exec::exec(&h, &ctid, &cmd),
        Command::Enter { ctid } => exec::enter(&h, &ctid),
        Command::Console { ctid, follow } => exec::console(&h, &ctid, follow),
        Command::Set(a) => set::set(&h, a),
        Command::Checkpoint(a) => checkpoint::checkpoint(&h, a),
        Command::Restore(a) => checkpoint::restore(&h, a),
        Command::Suspend { ctid, quiet } => checkpoint::suspend(&h, &ctid, quiet),
        Command::Resume { ctid, quiet } => checkpoint::resume(&h, &ctid, quiet),
        Command::Check { json } => checkpoint::check(&h, json),
        Command::Image { cmd } => checkpoint::image(cmd),
        Command::Snapshot { cmd } => snapshot::run(&h, cmd),
        Command::Migrate(a) => migrate::migrate_cmd(&h, a),
        Command::Sync(a) => migrate::sync_cmd(a),
        Command::MigrateReceive => migrate::migrate_receive(&h),
        Command::MigrateCleanup { ctid, keep_files } => migrate::migrate_cleanup(&h, &ctid, keep_files),
        Command::SyncReceive { dir } => migrate::sync_receive(dir),
        Command::Generate { dir, date } => generate::generate(&dir, &date),
    }
}
