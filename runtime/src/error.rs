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

    /// A resource limit this host cannot apply, or a value out of the range it can (exit 1,
    /// as vzctl's "failed to set a UBC parameter"; see docs/exit-codes.md).
    #[error("{0}")]
    Limit(String),

    /// Something the container's settings ask that this host or the container's kind refuses
    /// (a capability its seccomp filter or user namespace makes useless, a device an
    /// unprivileged container cannot have).
    #[error("{0}")]
    Refused(String),

    #[error("unknown capability {0:?}: use a name such as SYS_TIME or NET_ADMIN (see capabilities(7))")]
    UnknownCapability(String),

    #[error("invalid device rule {rule:?}: {why}; use TYPE:MAJOR:MINOR[:ACCESS], e.g. c:10:200:rw")]
    DeviceRule { rule: String, why: String },

    /// A seccomp profile file that ferry cannot compile.
    #[error("seccomp profile {source_name}: {msg}; see \"Seccomp profiles\" in docs/runtime.md")]
    SeccompProfile { source_name: String, msg: String },

    /// `--seccomp FILE` that cannot be read.
    #[error("--seccomp {path}: {source}; give default, unconfined or a profile file (docs/runtime.md)")]
    SeccompFile {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// ferry's own seccomp filter did not compile.
    #[error("seccomp: {0}")]
    Seccomp(#[source] seccompiler::BackendError),

    /// A container's config file that does not parse.
    #[error("{}: {source}", path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: ConfigParseError,
    },

    /// A path ferry keeps container files in is not a directory.
    #[error("{} is not a directory (a symlink?); ferry keeps container files there: remove it", .0.display())]
    NotADirectory(PathBuf),

    #[error("{}: no mount holds it", .0.display())]
    NoMount(PathBuf),

    #[error("{}: no block device found for its filesystem (device {device})", path.display())]
    NoBlockDevice { path: PathBuf, device: String },

    /// A disk image or btrfs operation that failed.
    #[error("{what} {op} {}: {msg}", path.display())]
    Storage { what: &'static str, op: String, path: PathBuf, msg: String },

    /// A template that cannot be used.
    #[error("{0}")]
    Template(String),

    /// A template path that cannot be read.
    #[error("template {}: {source}; give a directory or a .tar/.tar.zst file (scripts/make-template.sh makes one)", path.display())]
    TemplateMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A template archive that cannot be read.
    #[error("{what}: {source}")]
    TemplateArchive {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The data directory cannot be created.
    #[error("data directory {} cannot be created: {source}; set --data-dir or FERRY_DATA_DIR to a writable directory", path.display())]
    DataDirCreate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The data directory is not writable.
    #[error("data directory {} is not writable: {source}; set --data-dir or FERRY_DATA_DIR to a writable directory", path.display())]
    DataDirNotWritable {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// A string passed to the kernel or libc holds a NUL byte.
    #[error("{0} contains a NUL byte")]
    NulByte(String),

    /// Hashing a password failed.
    #[error("{0}")]
    Crypt(&'static str),

    /// The capabilities of this process could not be changed.
    #[error("capabilities: {what}: {source}")]
    Caps {
        what: String,
        #[source]
        source: caps::errors::CapsError,
    },

    /// The console's pty peer is not the one /dev/pts names.
    #[error("{} is not the peer of /dev/ptmx's new pty: /dev/pts is not the devpts of /dev/ptmx", .0.display())]
    PtyPeer(PathBuf),

    /// An idmapped mount that the kernel refused.
    #[error("idmap the mount of {}: mount_setattr: {source} (its filesystem may not support idmapped mounts on this kernel: ext4, xfs, btrfs since 5.12-5.15, tmpfs since 6.3; `ferry check` says whether they work here)", src.display())]
    Idmap {
        src: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },

    /// The saved configs cannot say which user ID ranges are taken.
    #[error("cannot tell which user ID ranges are taken: {0}; fix or remove that config")]
    IdRangesUnknown(#[source] Box<Error>),

    /// A failure of a change that was not made at all.
    #[error("{0}; nothing was changed")]
    Unchanged(#[source] Box<Error>),

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

/// Why a container's config does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigParseError {
    #[error(transparent)]
    Toml(Box<toml::de::Error>),
    #[error("config version {version} is newer than this ferry understands ({supported}); upgrade ferry")]
    TooNew { version: u32, supported: u32 },
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
            | Error::Limit(_)
            | Error::Refused(_)
            | Error::UnknownCapability(_)
            | Error::DeviceRule { .. }
            | Error::SeccompProfile { .. }
            | Error::SeccompFile { .. }
            | Error::Seccomp(_)
            | Error::ConfigFile { .. }
            | Error::NotADirectory(_)
            | Error::NoMount(_)
            | Error::NoBlockDevice { .. }
            | Error::Storage { .. }
            | Error::Template(_)
            | Error::TemplateMissing { .. }
            | Error::TemplateArchive { .. }
            | Error::DataDirCreate { .. }
            | Error::DataDirNotWritable { .. }
            | Error::NulByte(_)
            | Error::Crypt(_)
            | Error::Caps { .. }
            | Error::PtyPeer(_)
            | Error::Idmap { .. }
            | Error::IdRangesUnknown(_)
            | Error::Unchanged(_)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn typed_failures_keep_exit_1_and_their_cause() {
        for e in [
            Error::Limit("cpuunits 0 is out of range".into()),
            Error::NoMount("/x".into()),
            Error::Unchanged(Box::new(Error::Invalid("diskspace 1K".into()))),
        ] {
            assert_eq!(e.class(), ErrorClass::Failed, "{e}");
        }
        let e = Error::Unchanged(Box::new(Error::NoMount("/x".into())));
        assert_eq!(e.to_string(), "/x: no mount holds it; nothing was changed");
        assert!(matches!(e.source().and_then(|s| s.downcast_ref::<Box<Error>>()).map(|b| &**b), Some(Error::NoMount(_))));
    }
}
