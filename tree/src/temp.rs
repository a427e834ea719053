//! Names for temporary entries: exclusive and unpredictable.

use std::io;

use crate::sys;

/// `prefix` followed by 16 random hex digits. Whatever is created under such a name is created
/// exclusively (O_EXCL, mkdir, symlink, mknod fail on an existing name), and nothing else can
/// guess it beforehand to put something in its way.
pub fn temp_name(prefix: &[u8]) -> io::Result<Vec<u8>> {
    let mut r = [0u8; 8];
    sys::random(&mut r)?;
    let mut name = Vec::with_capacity(prefix.len() + 16);
    name.extend_from_slice(prefix);
    for b in r {
        name.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    Ok(name)
}
