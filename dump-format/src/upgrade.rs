//! The upgrade path for images of an older major version.
//!
//! An upgrader turns the byte stream of an old image (everything after its 16-byte header)
//! into the byte stream of a current-format image, header included, so the one current
//! [`crate::Reader`] reads every image. Upgraders are registered in [`UPGRADERS`] by the old
//! major they read. None exists yet: the reader reads majors 1 and 2 as they are (they differ
//! only in what the whole-image digest covers), so only a major older than
//! [`OLDEST_NATIVE_MAJOR`] would need one.

use std::io::{Cursor, Read};

use crate::error::{Error, Result};
use crate::{Version, FORMAT_MAJOR, FORMAT_MINOR, MAGIC, OLDEST_NATIVE_MAJOR};

/// Converts the rest of an old-format image (after its header) into a current-format stream.
pub type UpgradeFn = for<'a> fn(Version, Box<dyn Read + 'a>) -> Result<Box<dyn Read + 'a>>;

/// (old major, upgrader). Add an entry here when the major version is bumped.
const UPGRADERS: &[(u16, UpgradeFn)] = &[];

/// The upgrader for images of major version `major`, if one exists.
pub fn upgrade_path_for(major: u16) -> Option<UpgradeFn> {
    UPGRADERS.iter().find(|(old, _)| *old == major).map(|(_, upgrade)| *upgrade)
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
        return Err(Error::BadMagic { found: bytes[..magic_len].to_vec() });
    }
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated { what: "header".into(), offset: 0 });
    }
    let major = u16::from_le_bytes([bytes[8], bytes[9]]);
    let minor = u16::from_le_bytes([bytes[10], bytes[11]]);
    let flags = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if major > FORMAT_MAJOR {
        return Err(Error::NewerFormat { major, minor, max_major: FORMAT_MAJOR, max_minor: FORMAT_MINOR });
    }
    Ok(Header { version: Version { major, minor }, flags })
}

/// Reads the header of `r` and returns a stream in the current format: the same bytes for a
/// current-major image, or the output of the upgrader for an older one.
pub(crate) fn current_format_stream<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    current_format_stream_with(r, UPGRADERS)
}

fn current_format_stream_with<'a>(mut r: impl Read + 'a, upgraders: &[(u16, UpgradeFn)]) -> Result<Box<dyn Read + 'a>> {
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
    if (OLDEST_NATIVE_MAJOR..=FORMAT_MAJOR).contains(&parsed.version.major) {
        return Ok(Box::new(Cursor::new(header).chain(r)));
    }
    let upgrader = upgraders.iter().find(|(old, _)| *old == parsed.version.major);
    match upgrader {
        Some((_, upgrade)) => upgrade(parsed.version, Box::new(r)),
        None => Err(Error::NoUpgradePath { major: parsed.version.major, minor: parsed.version.minor }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_all, Reader, SectionKind, Writer, WriterOptions};

    /// A made-up format 0.9: the header, then `u32 len` and one CRIU image `len` bytes long,
    /// named "pages-1.img". Its upgrader re-encodes it as a current image.
    fn upgrade_toy(version: Version, mut old: Box<dyn Read + '_>) -> Result<Box<dyn Read + '_>> {
        assert_eq!(version, Version { major: 0, minor: 9 });
        let mut len = [0u8; 4];
        old.read_exact(&mut len).map_err(|e| Error::io("reading a 0.9 image", e))?;
        let mut data = vec![0u8; u32::from_le_bytes(len).min(1 << 20) as usize];
        old.read_exact(&mut data).map_err(|e| Error::io("reading a 0.9 image", e))?;
        let manifest = crate::Manifest { image_id: "upgraded".into(), ..Default::default() };
        let mut writer = Writer::new(Vec::new(), &manifest, WriterOptions::default())?;
        writer.add_bytes(SectionKind::CriuImage, "pages-1.img", false, &data)?;
        Ok(Box::new(Cursor::new(writer.finish()?)))
    }

    #[test]
    fn an_older_major_is_read_through_its_upgrader() {
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&0u16.to_le_bytes());
        old.extend_from_slice(&9u16.to_le_bytes());
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&5u32.to_le_bytes());
        old.extend_from_slice(b"hello");

        let upgraders: &[(u16, UpgradeFn)] = &[(0, upgrade_toy)];
        let stream = current_format_stream_with(old.as_slice(), upgraders).unwrap();
        let mut reader = Reader::new(stream).unwrap();
        assert_eq!(reader.manifest().image_id, "upgraded");
        let mut payload = reader.next_section().unwrap().unwrap();
        assert_eq!(payload.read_to_vec(100).unwrap(), b"hello");

        // Without the upgrader, the same bytes are refused with the documented error.
        let err = current_format_stream_with(old.as_slice(), &[]).err().unwrap();
        assert!(matches!(err, Error::NoUpgradePath { major: 0, minor: 9 }), "{err}");
        // And a current image passes through unchanged.
        let manifest = crate::Manifest::default();
        let current = Writer::new(Vec::new(), &manifest, WriterOptions::default()).unwrap().finish().unwrap();
        let image = read_all(current_format_stream_with(current.as_slice(), upgraders).unwrap(), 10).unwrap();
        assert!(image.sections.is_empty());
    }
}
