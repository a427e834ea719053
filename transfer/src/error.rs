//! The transfer layer's error type. Each variant says what failed; the messages name the peer,
//! the file or the versions involved and, where one exists, what to do.

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

    /// The bytes from the peer do not follow the protocol (bad magic, oversized frame, bad
    /// message). The connection is unusable afterwards.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The handshake failed: different major versions or not a ferry peer at all.
    #[error("handshake: {0}")]
    Handshake(String),

    /// The peer went away (EOF, broken pipe, killed process).
    #[error("connection to the peer lost: {0}")]
    PeerClosed(String),

    /// Nothing arrived from the peer for too long.
    #[error("peer not responding: {0}")]
    Timeout(String),

    /// The peer answered a request with an error.
    #[error("peer reported an error: {0}")]
    Remote(String),

    /// A file-sync failure on one path.
    #[error("sync {path}: {msg}")]
    Sync { path: String, msg: String },

    #[error("transport: {0}")]
    Transport(String),
}

impl Error {
    pub fn io(what: impl Into<String>, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), path: path.as_ref().display().to_string(), source }
    }

    pub fn sync(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Sync { path: path.into(), msg: msg.into() }
    }
}
