//! The upgrade path for images of an older major version.
//!
//! An upgrader turns the byte stream of an old image (everything after its 16-byte header)
//! into the byte stream of a current-format image, header included, so the one current
//! [`crate::Reader`] reads every image. Upgraders are registered in [`UPGRADERS`] by the old
//! major they read; none exists yet because 1 is the first major.

use std::io::{Cursor, Read};

use crate::error::{Error, Result};
use crate::{Version, FORMAT_MAJOR, FORMAT_MINOR, MAGIC};

/// Converts the rest of an old-format image (after its header) into a current-format stream.
pub type UpgradeFn = for<'a> fn(Version, Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>>;

/// (old major, upgrader). Add an entry here when the major version is bumped.
const UPGRADERS: &[(u16, UpgradeFn)] = &[];

/// The upgrader for images of major version `major`, if one exists.
pub fn upgrade_path_for(major: u16) -> Option<UpgradeFn> {
    UPGRADERS
        .iter()
        .find(|(old, _)| *old == major)
        .map(|(_, upgrade)| *upgrade)
}

/// Header of an image: version and flags.
pub(crate) struct Header {
    pub(crate) version: Version,
    pub(crate) flags: u32,
}

pub(crate) const HEADER_LEN: usize = 16;

/// Parses the fixed header, refusing what is not a ferry image or is too new.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(Error::BadMagic {
            found: bytes[..magic_len].to_vec(),
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated {
            what: "header".into(),
            offset: 0,
        });
    }
    let major = u16::from_le_bytes([bytes[8], bytes[9]]);
    let minor = u16::from_le_bytes([bytes[10], bytes[11]]);
    let flags = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if major > FORMAT_MAJOR {
        return Err(Error::NewerFormat {
            major,
            minor,
            max_major: FORMAT_MAJOR,
            max_minor: FORMAT_MINOR,
        });
    }
    Ok(Header {
        version: Version { major, minor },
        flags,
    })
}

/// Reads the header of `r` and returns a stream in the current format: the same bytes for a
/// current-major image, or the output of the upgrader for an older one.
pub(crate) fn current_format_stream<'a>(mut r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the image header", e)),
        }
    }
    let parsed = parse_header(&header[..filled])?;
    if parsed.version.major == FORMAT_MAJOR {
        return Ok(Box::new(Cursor::new(header).chain(r)));
    }
    match upgrade_path_for(parsed.version.major) {
        Some(upgrade) => upgrade(parsed.version, Box::new(r)),
        None => Err(Error::NoUpgradePath {
            major: parsed.version.major,
            minor: parsed.version.minor,
        }),
    }
}
