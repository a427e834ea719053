//! Writing an image to any `Write`, front to back, without seeking.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, SectionEntry, SectionTable};
use crate::name::validate_section_name;
use crate::reader::{FLAG_OPTIONAL, TAG_END, TAG_SECTION};
use crate::wire::HashingWriter;
use crate::{
    whole_digest_covers_chunks, Codec, SectionKind, FORMAT_MAJOR, FORMAT_MINOR, MAGIC, MAX_CHUNK_LEN, MAX_MANIFEST_LEN, OLDEST_NATIVE_MAJOR,
};

/// Highest zstd level: higher ones need windows larger than readers accept.
pub const MAX_LEVEL: i32 = 19;

/// How sections are compressed and framed.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// zstd level (1 = fast, the default; -7 to [`MAX_LEVEL`]); `None` stores payloads uncompressed.
    pub level: Option<i32>,
    /// zstd worker threads for large sections (0 = compress on the calling thread).
    pub workers: u32,
    /// Sections at least this large (or of unknown size) use the workers.
    pub multithread_min: u64,
    /// Largest stored chunk written, bytes (at most [`MAX_CHUNK_LEN`]).
    pub chunk_len: usize,
    /// Format major to write: [`FORMAT_MAJOR`], or down to [`OLDEST_NATIVE_MAJOR`] for a reader
    /// that knows no newer one (a destination running an older ferry).
    pub major: u16,
}

impl Default for WriterOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        WriterOptions {
            level: Some(1),
            workers: u32::try_from(cores).unwrap_or(1),
            multithread_min: 4 << 20,
            chunk_len: 4 << 20,
            major: FORMAT_MAJOR,
        }
    }
}

/// Writes an image: header and manifest at once, then sections one after the other, then the
/// end-of-image table and whole-image digest on [`Writer::finish`].
pub struct Writer<W: Write> {
    out: HashingWriter<W>,
    options: WriterOptions,
    written: Vec<SectionEntry>,
    names: HashSet<(u16, String)>,
    broken: Option<String>,
}

impl<W: Write> Writer<W> {
    /// Writes the header and `manifest`. Sections listed in `manifest.sections` must all be
    /// written before [`Writer::finish`].
    pub fn new(out: W, manifest: &Manifest, options: WriterOptions) -> Result<Self> {
        if options.chunk_len == 0 || options.chunk_len > MAX_CHUNK_LEN as usize {
            return Err(Error::Usage(format!("chunk length {} out of range 1..={MAX_CHUNK_LEN}", options.chunk_len)));
        }
        if let Some(level) = options.level {
            if !(-7..=MAX_LEVEL).contains(&level) {
                return Err(Error::Usage(format!("zstd level {level} out of range -7..={MAX_LEVEL}")));
            }
        }
        if !(OLDEST_NATIVE_MAJOR..=FORMAT_MAJOR).contains(&options.major) {
            return Err(Error::Usage(format!("format major {} out of range {OLDEST_NATIVE_MAJOR}..={FORMAT_MAJOR}", options.major)));
        }
        let bytes = manifest.encode_to_vec();
        let len = u32::try_from(bytes.len()).ok().filter(|len| *len <= MAX_MANIFEST_LEN).ok_or_else(|| {
            Error::Usage(format!("manifest is {} bytes, more than the {MAX_MANIFEST_LEN} allowed; keep large data in sections", bytes.len()))
        })?;
        let mut out = HashingWriter::new(out);
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&options.major.to_le_bytes());
        header.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let write = |out: &mut HashingWriter<W>| -> io::Result<()> {
            out.write_all(&header)?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&bytes)?;
            out.write_all(blake3::hash(&bytes).as_bytes())
        };
        write(&mut out).map_err(|e| Error::io("writing the image header and manifest", e))?;
        Ok(Writer { out, options, written: Vec::new(), names: HashSet::new(), broken: None })
    }

    /// Starts a section whose payload is then written through the returned [`SectionWriter`]
    /// (in pieces, as it is produced) and closed with [`SectionWriter::finish`].
    /// `size_hint` is the exact payload length when known (it is checked).
    pub fn start_section(&mut self, kind: SectionKind, name: &str, optional: bool, size_hint: Option<u64>) -> Result<SectionWriter<'_, W>> {
        if let Some(why) = &self.broken {
            return Err(Error::Usage(format!("image writer unusable: {why}")));
        }
        validate_section_name(name)?;
        if !self.names.insert((kind.code(), name.to_string())) {
            return Err(Error::Usage(format!("section {name:?} of kind {} written twice", kind.label())));
        }
        let codec = if self.options.level.is_some() { Codec::Zstd } else { Codec::None };
        let flags: u16 = if optional { FLAG_OPTIONAL } else { 0 };
        let mut header = Vec::with_capacity(64 + name.len());
        header.push(TAG_SECTION);
        header.extend_from_slice(&kind.code().to_le_bytes());
        header.extend_from_slice(&flags.to_le_bytes());
        header.push(codec.code());
        // validate_section_name bounds the name to MAX_NAME_LEN, so it fits a u16.
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        header.extend_from_slice(&size_hint.unwrap_or(u64::MAX).to_le_bytes());
        let digest = blake3::hash(&header);
        header.extend_from_slice(digest.as_bytes());
        self.broken = Some(format!("section {name:?} was started but not finished"));
        self.out.write_all(&header).map_err(|e| Error::io(format!("writing section {name:?} header"), e))?;

        let chunks = ChunkWriter {
            hash_data: whole_digest_covers_chunks(self.options.major, codec),
            out: &mut self.out,
            buf: Vec::with_capacity(self.options.chunk_len.min(size_hint.map_or(usize::MAX, |n| n as usize + 64).max(4096))),
            chunk_len: self.options.chunk_len,
            stored: 0,
        };
        let sink = match self.options.level {
            None => Sink::Raw(chunks),
            Some(level) => {
                let mut encoder = zstd::stream::write::Encoder::new(chunks, level).map_err(|e| Error::io("starting a zstd encoder", e))?;
                let big = size_hint.is_none_or(|n| n >= self.options.multithread_min);
                if big && self.options.workers > 0 {
                    encoder.multithread(self.options.workers).map_err(|e| Error::io("starting zstd worker threads", e))?;
                }
                Sink::Zstd(Box::new(encoder))
            }
        };
        Ok(SectionWriter {
            sink: Some(sink),
            written: &mut self.written,
            broken: &mut self.broken,
            hasher: blake3::Hasher::new(),
            len: 0,
            kind,
            name: name.to_string(),
            optional,
            codec,
            size_hint,
        })
    }

    /// Adds a section from bytes in memory.
    pub fn add_bytes(&mut self, kind: SectionKind, name: &str, optional: bool, data: &[u8]) -> Result<SectionEntry> {
        let mut section = self.start_section(kind, name, optional, Some(data.len() as u64))?;
        section.write_bytes(data)?;
        section.finish()
    }

    /// Adds a section read from `r` to its end. `size_hint` as in [`Writer::start_section`].
    pub fn add_reader(&mut self, kind: SectionKind, name: &str, optional: bool, mut r: impl Read, size_hint: Option<u64>) -> Result<SectionEntry> {
        // Uncompressed, whole chunks read at once go out without another copy.
        let chunk = if self.options.level.is_none() { self.options.chunk_len } else { 1 << 20 };
        let buf_len = size_hint.map_or(chunk, |n| chunk.min(usize::try_from(n).unwrap_or(chunk).max(4096)));
        let mut section = self.start_section(kind, name, optional, size_hint)?;
        let mut buf = vec![0u8; buf_len];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading the data of section {name:?}"), e)),
            };
            section.write_all(&buf[..n]).map_err(|e| Error::io(format!("writing section {name:?}"), e))?;
        }
        section.finish()
    }

    /// Adds every regular file of a CRIU image directory as a CRIU-image section named after
    /// the file, in name order. Anything else in the directory (subdirectories, symlinks,
    /// devices) is refused: CRIU writes only regular files there.
    pub fn write_dir(&mut self, dir: &Path) -> Result<Vec<SectionEntry>> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::path("cannot list CRIU image directory", dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::path("cannot list CRIU image directory", dir, e))?;
            let name = entry.file_name().into_string().map_err(|raw| Error::Usage(format!("{}: file name {raw:?} is not UTF-8", dir.display())))?;
            let file_type = entry.file_type().map_err(|e| Error::path("cannot stat", entry.path(), e))?;
            if !file_type.is_file() {
                return Err(Error::Usage(format!("{} is not a regular file; a CRIU image directory holds only files", entry.path().display())));
            }
            names.push(name);
        }
        names.sort();
        let mut added = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|e| Error::path("cannot open", &path, e))?;
            let len = file.metadata().map_err(|e| Error::path("cannot stat", &path, e))?.len();
            added.push(self.add_reader(SectionKind::CriuImage, &name, false, file, Some(len))?);
        }
        Ok(added)
    }

    /// Sections written so far.
    pub fn sections_written(&self) -> &[SectionEntry] {
        &self.written
    }

    /// Writes the end-of-image table and the whole-image digest, flushes, and returns the
    /// output.
    pub fn finish(mut self) -> Result<W> {
        if let Some(why) = self.broken.take() {
            return Err(Error::Usage(format!("cannot finish the image: {why}")));
        }
        let table = SectionTable { sections: self.written.clone() }.encode_to_vec();
        let len = u32::try_from(table.len())
            .ok()
            .filter(|len| *len <= MAX_MANIFEST_LEN)
            .ok_or_else(|| Error::Usage(format!("section table is {} bytes, more than {MAX_MANIFEST_LEN}", table.len())))?;
        let out = &mut self.out;
        let write = |out: &mut HashingWriter<W>| -> io::Result<()> {
            out.write_all(&[TAG_END])?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&table)?;
            let digest = out.digest();
            out.write_unhashed(digest.as_bytes())?;
            out.flush()
        };
        write(out).map_err(|e| Error::io("writing the end of the image", e))?;
        self.out.into_inner().map_err(|e| Error::io("flushing the image", e))
    }
}

/// Collects stored bytes into chunks of at most `chunk_len` and writes each with its length.
struct ChunkWriter<'a, W: Write> {
    /// Chunk data goes into the whole-image digest.
    hash_data: bool,
    out: &'a mut HashingWriter<W>,
    buf: Vec<u8>,
    chunk_len: usize,
    stored: u64,
}

impl<W: Write> ChunkWriter<'_, W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let written = self.emit_from(&buf);
        self.buf = buf;
        self.buf.clear();
        written
    }

    /// One chunk: its length, then its data.
    fn emit_from(&mut self, data: &[u8]) -> io::Result<()> {
        // data is at most chunk_len ≤ MAX_CHUNK_LEN (checked in Writer::new): fits a u32.
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        if self.hash_data {
            self.out.write_all(data)?;
        } else {
            self.out.write_unhashed(data)?;
        }
        self.stored += data.len() as u64;
        Ok(())
    }
}

impl<W: Write> Write for ChunkWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= self.chunk_len {
            self.emit_from(&data[..self.chunk_len])?;
            return Ok(self.chunk_len);
        }
        let room = self.chunk_len - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk_len {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Sink<'a, W: Write> {
    Raw(ChunkWriter<'a, W>),
    Zstd(Box<zstd::stream::write::Encoder<'static, ChunkWriter<'a, W>>>),
}

/// One section being written. Write its payload, then call [`SectionWriter::finish`]; a
/// section dropped unfinished makes the image unfinishable (the writer refuses to go on).
pub struct SectionWriter<'a, W: Write> {
    sink: Option<Sink<'a, W>>,
    written: &'a mut Vec<SectionEntry>,
    broken: &'a mut Option<String>,
    hasher: blake3::Hasher,
    len: u64,
    kind: SectionKind,
    name: String,
    optional: bool,
    codec: Codec,
    size_hint: Option<u64>,
}

impl<W: Write> SectionWriter<'_, W> {
    /// Writes `data` as the next part of the payload (`write_all` with this crate's error).
    pub fn write_bytes(&mut self, data: &[u8]) -> Result<()> {
        self.write_all(data).map_err(|e| Error::io(format!("writing section {:?}", self.name), e))
    }

    /// Ends the payload: flushes the compressor, writes the trailer (lengths and digest).
    pub fn finish(mut self) -> Result<SectionEntry> {
        let name = self.name.clone();
        let context = || format!("finishing section {name:?}");
        let mut chunks = match self.sink.take() {
            Some(Sink::Raw(chunks)) => chunks,
            Some(Sink::Zstd(encoder)) => encoder.finish().map_err(|e| Error::io(context(), e))?,
            None => return Err(Error::Usage(format!("section {name:?} already finished"))),
        };
        if let Some(hint) = self.size_hint {
            if hint != self.len {
                return Err(Error::Usage(format!("section {name:?}: {} bytes written but {hint} announced", self.len)));
            }
        }
        chunks.emit().map_err(|e| Error::io(context(), e))?;
        let digest = self.hasher.finalize();
        let stored = chunks.stored;
        let out = &mut *chunks.out;
        let trailer = |out: &mut HashingWriter<W>| -> io::Result<()> {
            out.write_all(&0u32.to_le_bytes())?;
            out.write_all(&self.len.to_le_bytes())?;
            out.write_all(&stored.to_le_bytes())?;
            out.write_all(digest.as_bytes())
        };
        trailer(out).map_err(|e| Error::io(context(), e))?;
        let entry = SectionEntry {
            kind: self.kind.code().into(),
            name: self.name.clone(),
            optional: self.optional,
            codec: self.codec.code().into(),
            uncompressed_len: self.len,
            stored_len: stored,
            digest: digest.as_bytes().to_vec(),
        };
        self.written.push(entry.clone());
        *self.broken = None;
        Ok(entry)
    }
}

impl<W: Write> Write for SectionWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = match self.sink.as_mut() {
            Some(Sink::Raw(chunks)) => chunks.write(data)?,
            Some(Sink::Zstd(encoder)) => encoder.write(data)?,
            None => return Err(io::Error::other("section already finished")),
        };
        self.hasher.update(&data[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
