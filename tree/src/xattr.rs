//! Reading and writing extended attributes of one inode (see `sys::XattrOf` for how the inode
//! is named: an open fd, an O_PATH fd, or a name in a directory fd, never followed).

use std::io;

use crate::sys::{self, XattrOf};

/// One extended attribute: (name, value).
pub type Xattr = (Vec<u8>, Vec<u8>);

/// The filesystem keeps no xattrs (or not this one): nothing to read, nothing to remove.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// All xattrs, sorted by name.
pub(crate) fn read(of: XattrOf<'_>) -> io::Result<Vec<Xattr>> {
    let names = loop {
        let n = match sys::listxattr(of, &mut []) {
            Ok(n) => n,
            Err(e) if unsupported(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match sys::listxattr(of, &mut buf) {
            Ok(m) => {
                buf.truncate(m);
                break buf;
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue, // grew meanwhile
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c = sys::cstr(name)?;
        let value = loop {
            let n = match sys::getxattr(of, &c, &mut []) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => break None, // removed meanwhile
                Err(e) => return Err(e),
            };
            let mut buf = vec![0u8; n];
            if n == 0 {
                break Some(buf);
            }
            match sys::getxattr(of, &c, &mut buf) {
                Ok(m) => {
                    buf.truncate(m);
                    break Some(buf);
                }
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => break None,
                Err(e) => return Err(e),
            }
        };
        if let Some(value) = value {
            out.push((name.to_vec(), value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Make the xattrs exactly `want` (sorted or not): remove the others, set what differs.
pub(crate) fn write(of: XattrOf<'_>, want: &[(&[u8], &[u8])]) -> io::Result<()> {
    let have = match read(of) {
        Ok(h) => h,
        Err(e) if unsupported(&e) && want.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for (name, _) in &have {
        if !want.iter().any(|(w, _)| w == name) {
            sys::removexattr(of, &sys::cstr(name)?)?;
        }
    }
    for (name, value) in want {
        if have.iter().any(|(h, v)| h == name && v == value) {
            continue;
        }
        sys::setxattr(of, &sys::cstr(name)?, value)?;
    }
    Ok(())
}
