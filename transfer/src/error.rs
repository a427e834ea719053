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

    /// The peer answered a request with another message than the protocol has there.
    #[error("protocol error: expected {expected}, got {got}")]
    UnexpectedReply { expected: &'static str, got: &'static str },

    /// A message from the peer does not decode.
    #[error("protocol error: {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: prost::DecodeError,
    },

    /// Bytes from the peer that do not decompress or deserialize.
    #[error("protocol error: {what}: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A message of ours does not encode.
    #[error("protocol error: {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: prost::EncodeError,
    },

    /// A task of ours ended without its result (it panicked or was cancelled).
    #[error("{what}: {source}")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },

    /// The handshake failed: different major versions or not a ferry peer at all.
    #[error("handshake: {0}")]
    Handshake(String),

    /// The peer's Hello or HelloAck does not decode.
    #[error("handshake: bad {what}: {source}")]
    BadHello {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },

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

    /// A file-sync failure on one path, from the system.
    #[error("sync {path}: {what}: {source}")]
    SyncIo {
        path: String,
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A delta could not be computed or applied.
    #[error("sync {path}: {what}: {source}")]
    Delta {
        path: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("transport: {0}")]
    Transport(String),

    /// A system call on the way to the connection failed.
    #[error("transport: {what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },

    /// The child process that carries the connection (ssh, or a local ferry) did not start.
    #[error("transport: cannot start {program} ({description}): {source}")]
    Spawn {
        program: String,
        description: String,
        #[source]
        source: std::io::Error,
    },

    /// The handshake over the child's stdio failed; with what the child said on stderr.
    #[error("transport: {description}: {source}{}", if said.is_empty() { String::new() } else { format!("; the other side said: {said}") })]
    Connect {
        description: String,
        #[source]
        source: Box<Error>,
        said: String,
    },

    /// Waiting for or ending that child failed.
    #[error("transport: {description}: {what}: {source}")]
    Child {
        description: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the connection is unusable after this error: the peer went, went silent, or
    /// broke the protocol.
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            Error::PeerClosed(_)
                | Error::Timeout(_)
                | Error::Protocol(_)
                | Error::UnexpectedReply { .. }
                | Error::Decode { .. }
                | Error::Corrupt { .. }
                | Error::Encode { .. }
        )
    }

    pub fn io(what: impl Into<String>, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), path: path.as_ref().display().to_string(), source }
    }

    pub fn sync(path: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Sync { path: path.into(), msg: msg.into() }
    }

    pub fn sync_io(path: impl Into<String>, what: impl Into<String>, source: std::io::Error) -> Self {
        Error::SyncIo { path: path.into(), what: what.into(), source }
    }

    pub fn decode(what: impl Into<String>, source: prost::DecodeError) -> Self {
        Error::Decode { what: what.into(), source }
    }
}
