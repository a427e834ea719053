//! The data extents of a regular file, found with SEEK_DATA / SEEK_HOLE whatever their number:
//! holes are skipped, never read.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;

/// (offset, length) of each run of data of a file, in order, within the `size` it had when
/// this started (data past it is left for the next look at the file).
pub struct DataExtents<'a> {
    fd: BorrowedFd<'a>,
    pos: u64,
    size: u64,
}

/// The data extents of `file`, `size` bytes long.
pub fn data_extents(file: &File, size: u64) -> DataExtents<'_> {
    DataExtents { fd: file.as_fd(), pos: 0, size }
}

impl Iterator for DataExtents<'_> {
    type Item = io::Result<(u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.size {
            return None;
        }
        let start = match sys::seek(self.fd, self.pos, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => {
                // Only a hole up to the end.
                self.pos = self.size;
                return None;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // No SEEK_DATA here: the rest is data.
                let run = (self.pos, self.size - self.pos);
                self.pos = self.size;
                return Some(Ok(run));
            }
            Err(e) => {
                self.pos = self.size;
                return Some(Err(e));
            }
        };
        if start >= self.size {
            self.pos = self.size;
            return None;
        }
        let end = match sys::seek(self.fd, start, libc::SEEK_HOLE) {
            Ok(Some(h)) => h.min(self.size),
            // Shrunk meanwhile: what is left up to the size it had reads as zeros.
            Ok(None) => self.size,
            Err(e) => {
                self.pos = self.size;
                return Some(Err(e));
            }
        };
        // SEEK_HOLE from data finds a hole after it (at the latest the end of the file).
        let end = end.max(start + 1);
        self.pos = end;
        Some(Ok((start, end - start)))
    }
}

/// Copy `size` bytes of `src` into `dst` by their data extents: its length set, only the
/// data written, holes left holes (a sparse disk image or database file takes its data on
/// disk in the copy too, not its length). Data the source lost meanwhile reads as zeros.
pub fn copy_sparse(src: &File, dst: &File, size: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    dst.set_len(size)?;
    let mut buf = vec![0u8; (1 << 20).min(size as usize).max(1)];
    for x in data_extents(src, size) {
        let (off, len) = x?;
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = src.read_at(&mut buf[..want], off + done)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], off + done)?;
            done += n as u64;
        }
    }
    Ok(())
}
