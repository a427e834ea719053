//! Section names: one plain file-name component, checked the same way by the writer, the
//! reader and the extraction.

use crate::error::{Error, Result};
use crate::MAX_NAME_LEN;

/// Checks that `name` is usable as a section name: one plain file-name component, so that
/// joining it to a directory can only name a file directly inside that directory.
pub fn validate_section_name(name: &str) -> Result<()> {
    let refuse = |reason| Err(Error::UnsafeName { name: name.to_string(), reason });
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME_LEN as usize {
        return refuse("longer than 4096 bytes");
    }
    if name.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if name.starts_with('/') {
        return refuse("absolute path");
    }
    if name.contains('/') {
        return refuse("contains '/' (sections are single file names)");
    }
    if name == "." || name == ".." {
        return refuse("'.' or '..'");
    }
    Ok(())
}
