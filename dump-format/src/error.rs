//! Errors of the image format. Each names the part of the image that is wrong and, where one
//! exists, a way out.

use std::io;
use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing, verifying or extracting an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended before a byte was read.
    #[error("the image is empty (0 bytes): not a ferry image")]
    Empty,
    /// The first eight bytes are not ferry's magic.
    #[error("not a ferry image: bad magic bytes {found:02x?} (expected \"FERRYIMG\")")]
    BadMagic { found: Vec<u8> },
    /// Written by a newer ferry with an incompatible layout.
    #[error("image format {major}.{minor} is newer than this ferry supports (up to {max_major}.{max_minor}); upgrade ferry")]
    NewerFormat { major: u16, minor: u16, max_major: u16, max_minor: u16 },
    /// An older major version that this ferry has no upgrade path for.
    #[error("image format {major}.{minor} is too old: this ferry has no upgrade path for it; read it with an older ferry and re-export")]
    NoUpgradePath { major: u16, minor: u16 },
    /// The input ended in the middle of `what`.
    #[error("image truncated: input ended in {what} at byte offset {offset}")]
    Truncated { what: String, offset: u64 },
    /// A declared length is above its limit; nothing was allocated for it.
    #[error("{what} declares {len} bytes, more than the limit of {limit}: image corrupt or hostile")]
    TooLarge { what: String, len: u64, limit: u64 },
    /// A part of the image does not match its digest or its declared lengths.
    #[error("{what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// A section this ferry does not understand and may not skip.
    #[error("section {name:?} has kind {kind}, unknown to this ferry and marked required; upgrade ferry")]
    UnknownRequiredSection { name: String, kind: u16 },
    /// A section name that would escape or misuse the target directory.
    #[error("refusing section name {name:?}: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    /// Misuse of the API (for example an unfinished section).
    #[error("{0}")]
    Usage(String),
    /// An I/O error of the underlying reader or writer, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An I/O error on a file or directory.
    #[error("{context} {path}: {source}")]
    Path {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into(), detail: detail.into() }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        // An error of ours that travelled through an io::Read (section payloads) comes back whole.
        if source.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let kind = source.kind();
            return match source.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(ours)) => *ours,
                Some(Err(other)) => Error::Io { context: context.into(), source: io::Error::new(kind, other) },
                None => Error::Io { context: context.into(), source: io::Error::from(kind) },
            };
        }
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn path(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Path { context, path: path.into(), source }
    }

    /// Wraps this error in an io::Error so it can cross an `io::Read` boundary unchanged.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}
