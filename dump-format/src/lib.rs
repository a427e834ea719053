//! ferry's image format: one file or stream holding a container's CRIU images, its config and
//! optionally its file tree; versioned, compressed per section, checksummed. No I/O policy:
//! callers give readers and writers.
//!
//! The byte layout and the versioning rules are specified in `docs/image-format.md`.
//!
//! - [`Writer`] writes an image to any `Write` (no seeking), [`Reader`] reads one from any `Read`.
//! - [`verify`] checks every digest and length, [`inspect`] describes an image.
//! - [`extract_to_dir`] writes the CRIU image sections of an image into a directory safely.
//! - [`TreeWriter`] / [`TreeReader`] encode file trees for file-tree sections.
//!
//! Reading never trusts a length before bounding it, and a payload is trusted only once the
//! read that reaches its end succeeded (that read checks the lengths and the digest).

mod error;
mod extract;
mod inspect;
mod manifest;
mod name;
mod reader;
mod tree;
mod upgrade;
mod utc;
mod wire;
mod writer;

pub use error::{Error, Result};
pub use extract::{extract_criu_images, extract_to_dir};
pub use inspect::{inspect, ConfigSummary, Inspection, SectionReport};
pub use manifest::{IfAddress, Manifest, Process, SectionEntry, SectionTable, Summary, TcpConnection};
pub use name::validate_section_name;
pub use reader::{read_all, verify, Image, Reader, SectionInfo, SectionPayload, VerifyReport};
pub use tree::{validate_tree_path, EntryType, TreeEntry, TreeReader, TreeWriter, Xattr, MAX_TREE_ENTRY_LEN};
pub use upgrade::{upgrade_path_for, UpgradeFn};
pub use utc::UtcTime;
pub use writer::{SectionWriter, Writer, WriterOptions, MAX_LEVEL};

/// The eight bytes every ferry image starts with.
pub const MAGIC: [u8; 8] = *b"FERRYIMG";
/// Format version this library writes, and the newest it reads.
pub const FORMAT_MAJOR: u16 = 2;
/// See [`FORMAT_MAJOR`].
pub const FORMAT_MINOR: u16 = 0;

/// Oldest major the reader reads as it is, without an upgrader (and the writer can still
/// write, for readers that know no newer one): major 1 differs from 2 only in what the
/// whole-image digest covers.
pub const OLDEST_NATIVE_MAJOR: u16 = 1;

/// Whether the whole-image digest of `major` covers the chunk data of a section stored with
/// `codec`. Major 1 hashes every byte; from major 2 on the chunk data of an uncompressed
/// section is left to that section's digest, which covers the same bytes (one blake3 pass
/// per byte instead of two), while compressed chunk data stays in: a change in it need not
/// change what it decompresses to.
pub(crate) fn whole_digest_covers_chunks(major: u16, codec: Codec) -> bool {
    major < 2 || codec != Codec::None
}

/// Largest manifest (and end-of-image section table) accepted, in bytes.
pub const MAX_MANIFEST_LEN: u32 = 16 << 20;
/// Largest section name accepted, in bytes.
pub const MAX_NAME_LEN: u16 = 4096;
/// Largest compressed chunk accepted, in bytes.
pub const MAX_CHUNK_LEN: u32 = 64 << 20;

/// What a section holds. The numeric values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SectionKind {
    /// One file of a CRIU image directory, named as CRIU named it.
    CriuImage,
    /// A configuration document (ferry's container config TOML, opaque here).
    Config,
    /// A file tree (snapshots, exports); its encoding belongs to the code that fills it.
    FileTree,
    /// A kind this ferry does not know (written by a newer ferry).
    Unknown(u16),
}

impl SectionKind {
    /// The on-disk number of this kind.
    pub fn code(self) -> u16 {
        match self {
            SectionKind::CriuImage => 1,
            SectionKind::Config => 2,
            SectionKind::FileTree => 3,
            SectionKind::Unknown(code) => code,
        }
    }

    /// The kind for an on-disk number.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => SectionKind::CriuImage,
            2 => SectionKind::Config,
            3 => SectionKind::FileTree,
            other => SectionKind::Unknown(other),
        }
    }

    /// Short human name ("criu-image", "config", "file-tree", "unknown-N").
    pub fn label(self) -> String {
        match self {
            SectionKind::CriuImage => "criu-image".into(),
            SectionKind::Config => "config".into(),
            SectionKind::FileTree => "file-tree".into(),
            SectionKind::Unknown(code) => format!("unknown-{code}"),
        }
    }
}

/// How a section's payload is stored. The numeric values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Codec {
    /// Stored as is.
    None,
    /// One zstd stream split into chunks.
    Zstd,
}

impl Codec {
    /// The on-disk number of this codec.
    pub fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
        }
    }

    /// The codec for an on-disk number, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A format version, major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
