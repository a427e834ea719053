//! The runtime's error type. Every variant names what failed and, where one exists, a way out.

use crate::exit::ErrorClass;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid CTID {0:?}: use 1 to 64 characters from [A-Za-z0-9_.-], not '.' or '..'")]
    InvalidCtid(String),

    #[error("container {ctid}: {op}: {msg}")]
    Container { ctid: String, op: &'static str, msg: String },

    /// No container with this CTID (or name) on this host.
    #[error("container {ctid}: {op}: {msg}")]
    NotFound { ctid: String, op: &'static str, msg: String },

    /// The CTID or name is taken already.
    #[error("container {ctid}: {op}: {msg}")]
    Exists { ctid: String, op: &'static str, msg: String },

    /// The operation needs a running container.
    #[error("container {ctid}: {op}: {msg}")]
    NotRunning { ctid: String, op: &'static str, msg: String },

    /// The operation needs a stopped container.
    #[error("container {ctid}: {op}: {msg}")]
    AlreadyRunning { ctid: String, op: &'static str, msg: String },

    /// The operation needs the container's root mounted (or not mounted).
    #[error("container {ctid}: {op}: {msg}")]
    Mount { ctid: String, op: &'static str, mounted: bool, msg: String },

    /// CRIU failed to dump (`op` "checkpoint") or restore (`op` "restore") the container.
    #[error("container {ctid}: {op}: {msg}")]
    CriuFailed { ctid: String, op: &'static str, msg: String },

    /// An action script (`<data>/conf/CTID.start`, `vps.mount`, ...) failed.
    #[error("container {ctid}: {action} script {script}: {msg}")]
    ActionScript { ctid: String, action: &'static str, script: PathBuf, msg: String },

    /// A value the admin gave that ferry cannot use.
    #[error("{0}")]
    Invalid(String),

    /// The host config file (`/etc/ferry/ferry.toml`) is unreadable or wrong.
    #[error("host config {path}: {msg}")]
    HostConfig { path: PathBuf, msg: String },

    #[error("container {ctid} is busy: {holder} holds its lock (pid {pid}); wait for it or, if that process is gone, run the command again")]
    Locked { ctid: String, holder: String, pid: i32 },

    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Config(String),

    /// A host tool (losetup, mount, btrfs, tar...) that could not run or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),

    /// A network tool (ip, nsenter, iptables) that could not run or failed.
    #[error("network: {0}")]
    NetTool(#[source] ToolError),

    #[error("cgroup: {0}")]
    Cgroup(String),

    #[error("network: {0}")]
    Net(String),

    #[error("criu: {0}")]
    Criu(String),

    /// An error of an operation another ferry process ran (a system container's monitor),
    /// with its class.
    #[error("{msg}")]
    Relayed { class: ErrorClass, msg: String },

    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
}

/// A host tool that could not run, or failed: its command line, how it ended and what it said.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {program}: {source} (is it installed? run scripts/install-deps.sh)")]
    NotRun {
        /// The program, quoted.
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd}: {source}")]
    Wait {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}{}", .input.as_deref().map(|i| format!("\ninput was:\n{i}")).unwrap_or_default())]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        /// What it wrote on stderr, trimmed.
        stderr: String,
        /// The batch input it was given (`ip -batch -`, `iptables-restore`), trimmed.
        input: Option<String>,
    },
    #[error("{cmd}: writing its input: {source}")]
    Input {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An error about one container and one operation, with a message that says what to do.
    pub fn ct(ctid: impl Into<String>, op: &'static str, msg: impl Into<String>) -> Self {
        Error::Container { ctid: ctid.into(), op, msg: msg.into() }
    }

    pub fn not_found(ctid: impl Into<String>, op: &'static str, msg: impl Into<String>) -> Self {
        Error::NotFound { ctid: ctid.into(), op, msg: msg.into() }
    }

    /// "container is not running; start it with `ferry start CTID`".
    pub fn not_running(ctid: impl Into<String>, op: &'static str) -> Self {
        let ctid = ctid.into();
        let msg = format!("container is not running; start it with `ferry start {ctid}`");
        Error::NotRunning { ctid, op, msg }
    }

    pub fn already_running(ctid: impl Into<String>, op: &'static str, msg: impl Into<String>) -> Self {
        Error::AlreadyRunning { ctid: ctid.into(), op, msg: msg.into() }
    }

    /// Which class of failure this is (for the exit code; see `exit`).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidCtid(_) | Error::Invalid(_) => ErrorClass::InvalidValue,
            Error::Locked { .. } => ErrorClass::Locked,
            Error::NotFound { .. } => ErrorClass::NotFound,
            Error::Exists { .. } => ErrorClass::Exists,
            Error::NotRunning { .. } => ErrorClass::NotRunning,
            Error::AlreadyRunning { .. } => ErrorClass::AlreadyRunning,
            Error::Mount { mounted: true, .. } => ErrorClass::AlreadyMounted,
            Error::Mount { mounted: false, .. } => ErrorClass::NotMounted,
            Error::CriuFailed { op: "restore", .. } => ErrorClass::RestoreFailed,
            Error::CriuFailed { .. } | Error::Criu(_) => ErrorClass::CheckpointFailed,
            Error::ActionScript { .. } => ErrorClass::ActionScript,
            Error::HostConfig { .. } => ErrorClass::HostConfig,
            Error::Relayed { class, .. } => *class,
            Error::Container { .. }
            | Error::Io { .. }
            | Error::Config(_)
            | Error::Tool(_)
            | Error::NetTool(_)
            | Error::Cgroup(_)
            | Error::Net(_)
            | Error::Sys { .. } => ErrorClass::Failed,
        }
    }

    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), path: path.into(), source }
    }

    pub fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys { op: op.into(), source }
    }
}

/// Attach a path and a verb to an `std::io::Error`.
pub trait IoContext<T> {
    fn ctx(self, what: &str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}
