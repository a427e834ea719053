//! The blake3 digest that checks each file end to end. Both sides compute it over what the
//! file holds: the source over what it read, the destination over what it wrote.
//!
//! With `extent_records` (both sides protocol 1.1) a file's digest covers its data and where
//! that data lies: blake3(blake3(the data extents' bytes, back to back) ‖ blake3(each extent's
//! offset and length, then the size, as u64 LE)). Holes are never hashed, yet a file whose
//! data or layout differs has another digest. A dense file's data digest is plain blake3 of its
//! bytes, so the tail of a file that only grew can be checked against what was sent before.
//! Peers of protocol 1.0 hash the whole file, holes as zeros ([`hash_zeros`]).

/// The layout part of a file's digest, built extent by extent.
#[derive(Clone, Default)]
pub(crate) struct Layout(blake3::Hasher);

impl Layout {
    pub fn extent(&mut self, offset: u64, len: u64) {
        self.0.update(&offset.to_le_bytes());
        self.0.update(&len.to_le_bytes());
    }

    /// The file's digest, given its data digest and size.
    pub fn file_digest(&self, data: &blake3::Hash, size: u64) -> [u8; 32] {
        let mut layout = self.0.clone();
        layout.update(&size.to_le_bytes());
        let mut h = blake3::Hasher::new();
        h.update(data.as_bytes());
        h.update(layout.finalize().as_bytes());
        *h.finalize().as_bytes()
    }

    /// The layout of a dense file of `len` bytes: one extent, or none when it is empty.
    pub fn dense(len: u64) -> Layout {
        let mut l = Layout::default();
        if len > 0 {
            l.extent(0, len);
        }
        l
    }
}

/// The digest a file with all of its `len` bytes as data is checked with: with layouts, that
/// of [`Layout::dense`]; else plain blake3 of its bytes (`data`).
pub(crate) fn dense_digest(data: &blake3::Hash, len: u64, layouts: bool) -> [u8; 32] {
    if layouts {
        Layout::dense(len).file_digest(data, len)
    } else {
        *data.as_bytes()
    }
}

static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

/// Hash `n` zero bytes (holes, for peers of protocol 1.0).
pub(crate) fn hash_zeros(h: &mut blake3::Hasher, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_layout_both_count() {
        let data = blake3::hash(b"abcd");
        let mut a = Layout::default();
        a.extent(0, 4);
        let mut b = Layout::default();
        b.extent(4096, 4);
        assert_ne!(a.file_digest(&data, 8192), b.file_digest(&data, 8192), "same data elsewhere");
        assert_ne!(a.file_digest(&data, 4), a.file_digest(&data, 8192), "same data, another size");
        assert_ne!(a.file_digest(&data, 4), a.file_digest(&blake3::hash(b"abce"), 4), "other data");
        assert_eq!(dense_digest(&data, 4, true), a.file_digest(&data, 4));
        assert_eq!(dense_digest(&data, 4, false), *data.as_bytes());
    }
}
