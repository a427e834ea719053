//! A file mapped read-only into memory: the image writer hashes and sends a large CRIU image
//! file straight from the page cache, without first copying it into a buffer.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A private read-only mapping of a whole file. The file must not be truncated while mapped
/// (reading past its new end would fault): ferry maps only the CRIU images of a dump it made
/// and holds, which nothing else writes.
pub struct MappedFile {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

impl MappedFile {
    /// Maps `file` (`len` bytes, non-zero), populating the page tables at once.
    pub fn map(file: &File, len: NonZeroUsize) -> std::io::Result<Self> {
        // SAFETY: a fresh private read-only mapping at an address the kernel picks aliases no
        // Rust object; the slice handed out borrows `self`, which unmaps only on drop.
        let ptr = unsafe { mmap(None, len, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE, file.as_fd(), 0) }?;
        Ok(MappedFile { ptr, len: len.get() })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until drop (see `map`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no borrow of it outlives `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

// SAFETY: the mapping is read-only and owned by this value alone; moving it to another thread
// moves nothing but the pointer.
unsafe impl Send for MappedFile {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_the_whole_file() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let m = MappedFile::map(&f, NonZeroUsize::new(data.len()).unwrap()).unwrap();
        assert_eq!(m.bytes(), &data[..]);
    }
}
