//! The runtime's error type. Every variant names what failed and, where one exists, a way out.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid CTID {0:?}: use 1 to 64 characters from [A-Za-z0-9_.-], not '.' or '..'")]
    InvalidCtid(String),

    #[error("container {ctid}: {op}: {msg}")]
    Container { ctid: String, op: &'static str, msg: String },

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

    #[error("cgroup: {0}")]
    Cgroup(String),

    #[error("network: {0}")]
    Net(String),

    #[error("criu: {0}")]
    Criu(String),

    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
}

impl Error {
    /// An error about one container and one operation, with a message that says what to do.
    pub fn ct(ctid: impl Into<String>, op: &'static str, msg: impl Into<String>) -> Self {
        Error::Container { ctid: ctid.into(), op, msg: msg.into() }
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
