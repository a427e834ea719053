//! The snapshot pipeline's errors: which container and operation, and the cause, kept whole.

use std::path::PathBuf;

/// A snapshot operation on a container failed.
#[derive(Debug, thiserror::Error)]
#[error("container {ctid}: snapshot {op}: {cause}")]
pub struct Error {
    pub ctid: String,
    pub op: &'static str,
    #[source]
    pub cause: Box<Cause>,
}

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// What ferry refuses or finds wrong, in words (no error below it).
    #[error("{0}")]
    Message(String),
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One entry of a file tree being written or extracted.
    #[error("{entry}: {what}: {source}")]
    Entry {
        entry: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot's record does not parse.
    #[error("{}: {source}; the snapshot is damaged", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Os(#[from] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] ferry_runtime::Error),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
    #[error(transparent)]
    Transfer(#[from] ferry_transfer::Error),
    #[error(transparent)]
    Image(#[from] ferry_dump_format::Error),
    /// `context` failed because of `source`.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Cause>,
    },
}

impl Cause {
    pub fn msg(m: impl Into<String>) -> Cause {
        Cause::Message(m.into())
    }

    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Cause {
        Cause::Io { what, path: path.into(), source }
    }

    /// This cause, as the reason `context` failed.
    pub fn context(self, context: impl Into<String>) -> Cause {
        Cause::Context { context: context.into(), source: Box::new(self) }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An [`Error`] of `op` on `ct`.
pub(crate) fn err(ct: &ferry_runtime::Ctid, op: &'static str, cause: impl Into<Cause>) -> Error {
    Error { ctid: ct.to_string(), op, cause: Box::new(cause.into()) }
}
