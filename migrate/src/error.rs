//! The migrate crate's error type. Each variant says what failed; the messages name the peer,
//! the file or the versions involved and, where one exists, what to do.

use ferry_runtime::exit::ErrorClass;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Transfer(#[from] ferry_transfer::Error),

    #[error(transparent)]
    Runtime(#[from] ferry_runtime::Error),

    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),

    #[error("image: {0}")]
    Image(#[from] ferry_dump_format::Error),

    /// A migration step failed; the message says which and what to do.
    #[error("{0}")]
    Migration(String),

    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },

    /// A task of the pipeline ended without its result.
    #[error("{what}: {source}")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },

    /// Writing the image into its channel failed.
    #[error("writing the image of {ctid}: {source}")]
    ImageWrite {
        ctid: String,
        #[source]
        source: Box<Error>,
    },

    /// The data channel's socket failed at `what`.
    #[error("{what}: {source}")]
    Socket {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The image did not get across the data channel; with what the destination saw.
    #[error("sending the image of {ctid} over the data channel to {addr} failed: {source}{}", said.as_ref().map(|s| format!("; the destination said: {s}")).unwrap_or_default())]
    DataChannelSend {
        ctid: String,
        addr: std::net::SocketAddr,
        #[source]
        source: Box<Error>,
        said: Option<String>,
    },

    /// The destination could not listen for the image.
    #[error("cannot listen for the image of {ctid} on {ip}: {source}")]
    Listen {
        ctid: String,
        ip: std::net::IpAddr,
        #[source]
        source: std::io::Error,
    },

    /// A host tool failed.
    #[error("{cmd} failed ({}){}", status.map_or("killed".to_string(), |c| format!("exit status {c}")), if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Tool { cmd: String, status: Option<i32>, stderr: String },

    /// The destination refused the migration before anything changed.
    #[error("the destination refused {ctid}:\n  {}", problems.join("\n  "))]
    Preflight { ctid: String, problems: Vec<String> },

    /// The migration failed after the freeze and the container was put back here.
    #[error("{cause}; container {ctid} was restored and runs here again")]
    RolledBack { ctid: String, cause: Box<Error> },

    /// The migration failed and putting the container back failed too: the message says
    /// what the admin must do.
    #[error("{msg}")]
    NeedsAction { ctid: String, msg: String },

    /// The host's container configs could not be listed.
    #[error("list containers in {}", dir.display())]
    ListContainers {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Putting an interrupted migration right failed: what was tried, and why.
    #[error("{what}")]
    Recovery {
        ctid: String,
        what: String,
        #[source]
        source: Box<Error>,
    },

    /// A failure with what the destination printed on its way out.
    #[error("{cause}\nthe destination said: {said}")]
    DestinationSaid { cause: Box<Error>, said: String },
}

impl Error {
    /// Which class of failure this is, for any operation (see `ferry_runtime::exit`).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Runtime(e) => e.class(),
            Error::Checkpoint(e) => e.class(),
            Error::Preflight { .. } => ErrorClass::MigrationRefused,
            Error::RolledBack { .. } => ErrorClass::MigrationFailed,
            Error::NeedsAction { .. } => ErrorClass::MigrationNeedsAction,
            Error::DestinationSaid { cause, .. } => cause.class(),
            Error::Recovery { source, .. } => source.class(),
            _ => ErrorClass::Failed,
        }
    }

    /// The class of an error returned by `migration::source::migrate`, which leaves the
    /// container on this host as it was unless it says otherwise: a lock held or a missing
    /// container keep their class, a refusal and a failure needing a hand theirs, anything
    /// else is a migration that failed without harm.
    pub fn migration_class(&self) -> ErrorClass {
        match self.class() {
            c @ (ErrorClass::Locked
            | ErrorClass::NotFound
            | ErrorClass::NotRunning
            | ErrorClass::MigrationRefused
            | ErrorClass::MigrationNeedsAction) => c,
            _ => ErrorClass::MigrationFailed,
        }
    }
}

impl Error {
    pub fn io(what: impl Into<String>, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), path: path.as_ref().display().to_string(), source }
    }

    /// A message of the peer out of place in the protocol.
    pub fn protocol(msg: impl Into<String>) -> Self {
        Error::Transfer(ferry_transfer::Error::Protocol(msg.into()))
    }

    /// The peer answered with `got` where the protocol has `expected`.
    pub fn unexpected(expected: &'static str, got: &'static str) -> Self {
        Error::Transfer(ferry_transfer::Error::UnexpectedReply { expected, got })
    }
}

/// An error and its causes on one line, each after a colon (as the command line prints
/// them). ferry's errors name their cause in their own message too (so that one line says
/// all, wherever it is shown): a cause already said is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_says_each_cause_once() {
        let io = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::io("create", "/x", io());
        assert_eq!(chain(&e), format!("create /x: {}", io()));
        let r = Error::Recovery { ctid: "101".into(), what: "restoring 101 failed".into(), source: Box::new(e) };
        assert_eq!(chain(&r), format!("restoring 101 failed: create /x: {}", io()));
    }
}
