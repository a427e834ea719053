//! Writing sections out as files without ever leaving the target directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::name::validate_section_name;
use crate::reader::Reader;
use crate::SectionKind;

/// Writes every CRIU-image section of `reader` into `dir` (which must exist), verifying each.
/// Files are created new (an existing file or symlink of the same name is an error, never
/// followed or overwritten) with mode 0600; a file whose payload fails verification is removed.
/// Other known sections are verified and passed over. Returns the paths written.
pub fn extract_criu_images<R: Read>(reader: &mut Reader<R>, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    while let Some(mut payload) = reader.next_section()? {
        if payload.info().kind != SectionKind::CriuImage {
            continue;
        }
        let name = payload.info().name.clone();
        validate_section_name(&name)?;
        let path = dir.join(&name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::path("cannot create", &path, e))?;
        let outcome = copy_payload(&mut payload, &mut file, &path);
        if let Err(e) = outcome {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}

/// Opens the image in `r` (any supported version), verifies it and writes its CRIU images into
/// `dir`. Returns the manifest. On error, files already written stay for inspection.
pub fn extract_to_dir(r: impl Read, dir: &Path) -> Result<Manifest> {
    let mut reader = Reader::open(r)?;
    extract_criu_images(&mut reader, dir)?;
    Ok(reader.manifest().clone())
}

fn copy_payload<R: Read>(payload: &mut crate::reader::SectionPayload<'_, R>, file: &mut File, path: &Path) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // Whole buffers: a socket hands out less at a time, and each write costs the file
        // system a round of its own.
        let mut filled = 0;
        while filled < buf.len() {
            match payload.read_verified(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        file.write_all(&buf[..filled]).map_err(|e| Error::path("cannot write", path, e))?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}
