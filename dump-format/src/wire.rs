//! Byte-level plumbing shared by the reader and the writer: a reader and a writer that hash
//! the bytes they pass for the whole-image digest (chunk payloads only where the format's
//! major says so), little-endian integers, and the chunked payload source.

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::error::{Error, Result};
use crate::MAX_CHUNK_LEN;

/// Buffer size of the reader; large so that big chunks pass in few system calls.
const READ_BUFFER: usize = 1 << 20;
/// Reads of unhashed chunk data at least this large bypass the reader's buffer (smaller ones
/// would cost a system call each).
const DIRECT_READ_MIN: usize = 64 << 10;
/// Buffer size of the writer; chunks larger than this go straight through.
const WRITE_BUFFER: usize = 256 << 10;

/// A buffered reader that hashes the bytes consumed and counts them all.
pub(crate) struct HashingReader<R: Read> {
    inner: BufReader<R>,
    hasher: blake3::Hasher,
    offset: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner: BufReader::with_capacity(READ_BUFFER, inner), hasher: blake3::Hasher::new(), offset: 0 }
    }

    /// Consumes bytes that stay out of the whole-image digest: the chunk data of an
    /// uncompressed section from format 2 on (its section digest covers them byte for byte).
    fn consume_unhashed(&mut self, amt: usize) {
        let amt = amt.min(self.inner.buffer().len());
        self.offset += amt as u64;
        self.inner.consume(amt);
    }

    /// Whether nothing is buffered.
    fn drained(&self) -> bool {
        self.inner.buffer().is_empty()
    }

    /// Reads unhashed bytes into `buf` from the inner reader itself, bypassing the (empty)
    /// buffer: one copy less for large reads.
    fn read_direct_unhashed(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.get_mut().read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Digest of every byte consumed so far.
    pub(crate) fn digest(&self) -> blake3::Hash {
        self.hasher.finalize()
    }

    pub(crate) fn into_inner(self) -> BufReader<R> {
        self.inner
    }

    /// Reads exactly `buf.len()` bytes; `what` names the part of the image for errors.
    pub(crate) fn read_exact_or(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let start = self.offset;
        let mut filled = 0;
        while filled < buf.len() {
            let available = match self.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {what}"), e)),
            };
            if available.is_empty() {
                return Err(Error::Truncated { what: what.to_string(), offset: start });
            }
            let n = available.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&available[..n]);
            self.consume(n);
            filled += n;
        }
        Ok(())
    }

    /// Reads a digest that is not itself part of the hashed stream.
    pub(crate) fn read_unhashed_digest(&mut self, what: &str) -> Result<[u8; 32]> {
        let mut digest = [0u8; 32];
        let start = self.offset;
        match self.inner.read_exact(&mut digest) {
            Ok(()) => {
                self.offset += 32;
                Ok(digest)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::Truncated { what: what.to_string(), offset: start }),
            Err(e) => Err(Error::io(format!("reading {what}"), e)),
        }
    }

    pub(crate) fn read_u8(&mut self, what: &str) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact_or(&mut b, what)?;
        Ok(b[0])
    }

    pub(crate) fn read_u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact_or(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn read_u64(&mut self, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact_or(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn read_digest(&mut self, what: &str) -> Result<[u8; 32]> {
        let mut b = [0u8; 32];
        self.read_exact_or(&mut b, what)?;
        Ok(b)
    }

    /// Reads `len` bytes, `len` already checked against its limit by the caller. Memory grows
    /// with the bytes actually present, so a truncated input never costs the declared length.
    pub(crate) fn read_vec(&mut self, len: u32, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut left = len as usize;
        let start = self.offset;
        while left > 0 {
            let available = match self.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {what}"), e)),
            };
            if available.is_empty() {
                return Err(Error::Truncated { what: what.to_string(), offset: start });
            }
            let n = available.len().min(left);
            out.extend_from_slice(&available[..n]);
            self.consume(n);
            left -= n;
        }
        Ok(out)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        let buffered = self.inner.buffer();
        let amt = amt.min(buffered.len());
        self.hasher.update(&buffered[..amt]);
        self.offset += amt as u64;
        self.inner.consume(amt);
    }
}

/// The stored payload of one section: a run of length-prefixed chunks ended by a zero length.
/// Reads as one contiguous byte stream and ends exactly at the terminator.
pub(crate) struct ChunkSource<R: Read> {
    pub(crate) inner: HashingReader<R>,
    section: String,
    /// Chunk data goes into the whole-image digest.
    hash_data: bool,
    left_in_chunk: u32,
    pub(crate) stored: u64,
    pub(crate) done: bool,
}

impl<R: Read> ChunkSource<R> {
    pub(crate) fn new(inner: HashingReader<R>, section: &str, hash_data: bool) -> Self {
        ChunkSource { inner, section: section.to_string(), hash_data, left_in_chunk: 0, stored: 0, done: false }
    }

    fn next_chunk(&mut self) -> Result<()> {
        let what = format!("section {:?} chunk length", self.section);
        let len = self.inner.read_u32(&what)?;
        if len == 0 {
            self.done = true;
        } else if len > MAX_CHUNK_LEN {
            return Err(Error::TooLarge { what: format!("section {:?} chunk", self.section), len: len.into(), limit: MAX_CHUNK_LEN.into() });
        }
        self.left_in_chunk = len;
        Ok(())
    }
}

impl<R: Read> Read for ChunkSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.hash_data && self.left_in_chunk > 0 && buf.len() >= DIRECT_READ_MIN && self.inner.drained() {
            // Large reads of unhashed chunk data: no need to pass them through the buffer.
            let want = buf.len().min(self.left_in_chunk as usize);
            let offset = self.inner.offset();
            let n = self.inner.read_direct_unhashed(&mut buf[..want])?;
            if n == 0 && want > 0 {
                return Err(Error::Truncated { what: format!("section {:?} payload", self.section), offset }.into_io());
            }
            self.left_in_chunk -= n as u32;
            self.stored += n as u64;
            return Ok(n);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for ChunkSource<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.done {
            return Ok(&[]);
        }
        if self.left_in_chunk == 0 {
            self.next_chunk().map_err(Error::into_io)?;
            if self.done {
                return Ok(&[]);
            }
        }
        let offset = self.inner.offset();
        let left = self.left_in_chunk as usize;
        let section = &self.section;
        let available = self.inner.fill_buf()?;
        if available.is_empty() {
            return Err(Error::Truncated { what: format!("section {section:?} payload"), offset }.into_io());
        }
        Ok(&available[..available.len().min(left)])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.left_in_chunk as usize);
        if self.hash_data {
            self.inner.consume(amt);
        } else {
            self.inner.consume_unhashed(amt);
        }
        self.left_in_chunk -= amt as u32;
        self.stored += amt as u64;
    }
}

/// A buffered writer that hashes the bytes written through it, but for those written with
/// [`HashingWriter::write_unhashed`].
pub(crate) struct HashingWriter<W: Write> {
    inner: io::BufWriter<W>,
    hasher: blake3::Hasher,
    pub(crate) offset: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner: io::BufWriter::with_capacity(WRITE_BUFFER, inner), hasher: blake3::Hasher::new(), offset: 0 }
    }

    pub(crate) fn digest(&self) -> blake3::Hash {
        self.hasher.finalize()
    }

    /// Writes bytes that are not part of the hashed stream (the final digest, and from
    /// format 2 on the chunk data of uncompressed sections).
    pub(crate) fn write_unhashed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    pub(crate) fn into_inner(self) -> io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
