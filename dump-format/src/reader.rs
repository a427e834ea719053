//! Reading an image from any `Read`, front to back, verifying as it goes.

use std::collections::HashSet;
use std::io::{self, BufReader, Read};

use prost::Message;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, SectionEntry, SectionTable};
use crate::upgrade::{current_format_stream, parse_header, HEADER_LEN};
use crate::wire::{ChunkSource, HashingReader};
use crate::{whole_digest_covers_chunks, Codec, SectionKind, Version, FORMAT_MAJOR, MAX_MANIFEST_LEN, MAX_NAME_LEN, OLDEST_NATIVE_MAJOR};

pub(crate) const TAG_SECTION: u8 = b'S';
pub(crate) const TAG_END: u8 = b'E';
/// Flag bit of a section header: readers that do not know the section's kind may skip it.
pub(crate) const FLAG_OPTIONAL: u16 = 1;
/// Largest zstd window a reader accepts: 2^25 = 32 MiB, which bounds the decoder's memory.
/// Levels up to 19 (the writer's maximum) use at most 2^23.
const MAX_WINDOW_LOG: u32 = 25;

/// What a section header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    pub kind: SectionKind,
    pub name: String,
    pub optional: bool,
    pub codec: Codec,
    /// Uncompressed length announced in the header, when the writer knew it.
    pub size_hint: Option<u64>,
}

enum Source<R: Read> {
    Idle(HashingReader<R>),
    Raw(ChunkSource<R>),
    Zstd(Box<zstd::stream::read::Decoder<'static, ChunkSource<R>>>),
    /// A previous error left the stream in an unknown place, or the image ended.
    Gone,
}

struct Current {
    info: SectionInfo,
    hasher: blake3::Hasher,
    len: u64,
}

/// Reads an image. Sections come out in order through [`Reader::next_section`]; unknown
/// optional sections are verified and skipped; the end-of-image table and whole-image digest
/// are checked when `next_section` returns `None`.
///
/// A payload is verified when its reader returns end of file: consumers must read each payload
/// to the end (or drop it, which makes the next call read and verify the rest) before trusting
/// what they read.
pub struct Reader<R: Read> {
    source: Source<R>,
    version: Version,
    manifest: Manifest,
    read: Vec<SectionEntry>,
    seen: HashSet<(u16, String)>,
    current: Option<Current>,
    ended: bool,
    failed: bool,
}

impl<'a> Reader<Box<dyn Read + 'a>> {
    /// Opens an image of any supported version, upgrading older majors on the fly. This is
    /// the entry point for images from disk or the network.
    pub fn open(r: impl Read + 'a) -> Result<Self> {
        Reader::new(current_format_stream(r)?)
    }
}

impl<R: Read> Reader<R> {
    /// Reads the header and the manifest of a current-major image. See [`Reader::open`] for
    /// images of any version.
    pub fn new(r: R) -> Result<Self> {
        let mut input = HashingReader::new(r);
        let mut header = [0u8; HEADER_LEN];
        let filled = read_up_to(&mut input, &mut header)?;
        let parsed = parse_header(&header[..filled])?;
        if !(OLDEST_NATIVE_MAJOR..=FORMAT_MAJOR).contains(&parsed.version.major) {
            return Err(match crate::upgrade_path_for(parsed.version.major) {
                Some(_) => Error::Usage(format!("image format {} must be opened with Reader::open, which upgrades it", parsed.version)),
                None => Error::NoUpgradePath { major: parsed.version.major, minor: parsed.version.minor },
            });
        }
        if parsed.flags != 0 {
            return Err(Error::corrupt("header", format!("unknown flags {:#010x} (format {} defines none)", parsed.flags, parsed.version)));
        }
        let len = input.read_u32("manifest length")?;
        if len > MAX_MANIFEST_LEN {
            return Err(Error::TooLarge { what: "manifest".into(), len: len.into(), limit: MAX_MANIFEST_LEN.into() });
        }
        let bytes = input.read_vec(len, "manifest")?;
        let digest = input.read_digest("manifest digest")?;
        if !digest_ok(blake3::hash(&bytes), &digest) {
            return Err(Error::corrupt("manifest", "blake3 digest mismatch"));
        }
        let manifest = Manifest::decode(bytes.as_slice()).map_err(|e| Error::corrupt("manifest", format!("not a valid manifest message: {e}")))?;
        Ok(Reader {
            source: Source::Idle(input),
            version: parsed.version,
            manifest,
            read: Vec::new(),
            seen: HashSet::new(),
            current: None,
            ended: false,
            failed: false,
        })
    }

    /// The image's format version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The image's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Sections fully read and verified so far (skipped unknown ones included). After
    /// `next_section` returned `None`, this is the verified end-of-image table.
    pub fn sections_read(&self) -> &[SectionEntry] {
        &self.read
    }

    /// The next section, or `None` at the verified end of the image.
    pub fn next_section(&mut self) -> Result<Option<SectionPayload<'_, R>>> {
        let result = self.advance();
        if result.is_err() {
            self.fail();
        }
        if !result? {
            return Ok(None);
        }
        let info = match &self.current {
            Some(current) => current.info.clone(),
            None => return Err(Error::Usage("image reader in an unexpected state".into())),
        };
        Ok(Some(SectionPayload { reader: self, info }))
    }

    /// Bytes of the image consumed so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.source {
            Source::Idle(input) => input.offset(),
            Source::Raw(chunks) => chunks.inner.offset(),
            Source::Zstd(decoder) => decoder.get_ref().inner.offset(),
            Source::Gone => 0,
        }
    }

    /// Gives back the underlying reader with whatever it buffered past the image.
    pub fn into_inner(self) -> Option<BufReader<R>> {
        match self.source {
            Source::Idle(input) => Some(input.into_inner()),
            Source::Raw(chunks) => Some(chunks.inner.into_inner()),
            Source::Zstd(decoder) => Some(decoder.finish().inner.into_inner()),
            Source::Gone => None,
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.source = Source::Gone;
        self.current = None;
    }

    /// Moves to the start of the next section payload the caller should see. Returns false at
    /// the end of the image.
    fn advance(&mut self) -> Result<bool> {
        if self.failed {
            return Err(Error::Usage("the image reader already failed; reopen the image".into()));
        }
        if self.current.is_some() {
            self.drain_current()?;
        }
        loop {
            if self.ended {
                return Ok(false);
            }
            let mut input = match std::mem::replace(&mut self.source, Source::Gone) {
                Source::Idle(input) => input,
                _ => return Err(Error::Usage("image reader in an unexpected state".into())),
            };
            let offset = input.offset();
            let tag = input.read_u8("section header or end marker")?;
            match tag {
                TAG_SECTION => {}
                TAG_END => {
                    self.read_end(&mut input)?;
                    self.source = Source::Idle(input);
                    self.ended = true;
                    return Ok(false);
                }
                other => {
                    return Err(Error::corrupt(
                        format!("after section {}", self.last_name()),
                        format!("expected a section header or the end marker at byte offset {offset}, found byte {other:#04x}"),
                    ))
                }
            }
            let info = self.read_section_header(&mut input)?;
            if !self.seen.insert((info.kind.code(), info.name.clone())) {
                return Err(Error::corrupt(format!("section {:?}", info.name), format!("appears twice with kind {}", info.kind.label())));
            }
            let hash_data = whole_digest_covers_chunks(self.version.major, info.codec);
            let chunks = ChunkSource::new(input, &info.name, hash_data);
            self.source = match info.codec {
                Codec::None => Source::Raw(chunks),
                Codec::Zstd => {
                    let mut decoder = zstd::stream::read::Decoder::with_buffer(chunks).map_err(|e| Error::io("starting a zstd decoder", e))?;
                    decoder.window_log_max(MAX_WINDOW_LOG).map_err(|e| Error::io("configuring the zstd decoder", e))?;
                    Source::Zstd(Box::new(decoder))
                }
            };
            let skip = matches!(info.kind, SectionKind::Unknown(_));
            self.current = Some(Current { info, hasher: blake3::Hasher::new(), len: 0 });
            if skip {
                // Unknown but optional (required ones were refused): verify it and move on.
                self.drain_current()?;
                continue;
            }
            return Ok(true);
        }
    }

    fn last_name(&self) -> String {
        self.read.last().map_or_else(|| "(none: right after the manifest)".into(), |e| format!("{:?}", e.name))
    }

    fn read_section_header(&self, input: &mut HashingReader<R>) -> Result<SectionInfo> {
        let where_ = format!("section header after {}", self.last_name());
        let mut fixed = [0u8; 7];
        input.read_exact_or(&mut fixed, &where_)?;
        let kind = u16::from_le_bytes([fixed[0], fixed[1]]);
        let flags = u16::from_le_bytes([fixed[2], fixed[3]]);
        let codec = fixed[4];
        let name_len = u16::from_le_bytes([fixed[5], fixed[6]]);
        if name_len > MAX_NAME_LEN {
            return Err(Error::TooLarge { what: where_, len: name_len.into(), limit: MAX_NAME_LEN.into() });
        }
        let name_bytes = input.read_vec(name_len.into(), &where_)?;
        let size_hint = input.read_u64(&where_)?;
        let digest = input.read_digest(&where_)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[TAG_SECTION]).update(&fixed).update(&name_bytes).update(&size_hint.to_le_bytes());
        let shown_name = String::from_utf8_lossy(&name_bytes).into_owned();
        if !digest_ok(hasher.finalize(), &digest) {
            return Err(Error::corrupt(format!("section {shown_name:?} header"), "blake3 digest mismatch"));
        }
        let name = String::from_utf8(name_bytes).map_err(|_| Error::corrupt(format!("section {shown_name:?} header"), "name is not UTF-8"))?;
        crate::name::validate_section_name(&name)?;
        if flags & !FLAG_OPTIONAL != 0 {
            return Err(Error::corrupt(format!("section {name:?} header"), format!("unknown flags {flags:#06x}")));
        }
        let optional = flags & FLAG_OPTIONAL != 0;
        let kind = SectionKind::from_code(kind);
        if let SectionKind::Unknown(code) = kind {
            if !optional {
                return Err(Error::UnknownRequiredSection { name, kind: code });
            }
        }
        let codec = Codec::from_code(codec).ok_or_else(|| Error::corrupt(format!("section {name:?} header"), format!("unknown codec {codec}")))?;
        Ok(SectionInfo { kind, name, optional, codec, size_hint: (size_hint != u64::MAX).then_some(size_hint) })
    }

    fn read_end(&mut self, input: &mut HashingReader<R>) -> Result<()> {
        let len = input.read_u32("end-of-image table length")?;
        if len > MAX_MANIFEST_LEN {
            return Err(Error::TooLarge { what: "end-of-image table".into(), len: len.into(), limit: MAX_MANIFEST_LEN.into() });
        }
        let bytes = input.read_vec(len, "end-of-image table")?;
        let computed = input.digest();
        let stored = input.read_unhashed_digest("whole-image digest")?;
        if !digest_ok(computed, &stored) {
            return Err(Error::corrupt("whole image", "blake3 digest mismatch (header, manifest, section framing or table damaged)"));
        }
        let table =
            SectionTable::decode(bytes.as_slice()).map_err(|e| Error::corrupt("end-of-image table", format!("not a valid table message: {e}")))?;
        if table.sections != self.read {
            let first_bad = table
                .sections
                .iter()
                .zip(&self.read)
                .find(|(listed, read)| listed != read)
                .map(|(listed, _)| format!("section {:?}", listed.name))
                .unwrap_or_else(|| format!("lists {} sections, {} were read", table.sections.len(), self.read.len()));
            return Err(Error::corrupt("end-of-image table", format!("does not match the sections read: {first_bad}")));
        }
        for planned in &self.manifest.sections {
            let found = self.read.iter().find(|e| e.kind == planned.kind && e.name == planned.name);
            match found {
                None => return Err(Error::corrupt(format!("section {:?}", planned.name), "listed in the manifest but missing from the image")),
                Some(entry) => {
                    let mismatch = (planned.uncompressed_len != 0 && planned.uncompressed_len != entry.uncompressed_len)
                        || (!planned.digest.is_empty() && planned.digest != entry.digest);
                    if mismatch {
                        return Err(Error::corrupt(format!("section {:?}", planned.name), "differs from its manifest entry (length or digest)"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the rest of the current payload, which verifies it.
    fn drain_current(&mut self) -> Result<()> {
        let mut sink = vec![0u8; 256 << 10];
        loop {
            match self.read_payload(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_payload(&mut self, buf: &mut [u8]) -> Result<usize> {
        let Some(current) = self.current.as_mut() else {
            return Ok(0);
        };
        let result = match &mut self.source {
            Source::Raw(chunks) => chunks.read(buf),
            Source::Zstd(decoder) => decoder.read(buf),
            _ => return Err(Error::Usage("image reader in an unexpected state".into())),
        };
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.read_payload(buf),
            Err(e) => {
                let ours = Error::io(format!("section {:?} payload", current.info.name), e);
                return Err(match ours {
                    Error::Io { source, .. } => {
                        Error::corrupt(format!("section {:?} payload", current.info.name), format!("cannot decompress: {source}"))
                    }
                    other => other,
                });
            }
        };
        if n > 0 {
            current.hasher.update(&buf[..n]);
            current.len += n as u64;
            if let Some(hint) = current.info.size_hint {
                if current.len > hint {
                    return Err(Error::corrupt(
                        format!("section {:?} payload", current.info.name),
                        format!("longer than the {hint} bytes its header declares"),
                    ));
                }
            }
            return Ok(n);
        }
        self.finish_current()?;
        Ok(0)
    }

    fn finish_current(&mut self) -> Result<()> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let name = &current.info.name;
        let chunks = match std::mem::replace(&mut self.source, Source::Gone) {
            Source::Raw(chunks) => chunks,
            Source::Zstd(decoder) => decoder.finish(),
            _ => return Err(Error::Usage("image reader in an unexpected state".into())),
        };
        if !chunks.done {
            return Err(Error::corrupt(format!("section {name:?} payload"), "compressed data ends before its last chunk"));
        }
        let stored_len = chunks.stored;
        let mut input = chunks.inner;
        let what = format!("section {name:?} trailer");
        let uncompressed_len = input.read_u64(&what)?;
        let declared_stored = input.read_u64(&what)?;
        let digest = input.read_digest(&what)?;
        if uncompressed_len != current.len {
            return Err(Error::corrupt(
                format!("section {name:?}"),
                format!("trailer declares {uncompressed_len} bytes, payload has {}", current.len),
            ));
        }
        if let Some(hint) = current.info.size_hint {
            if hint != current.len {
                return Err(Error::corrupt(format!("section {name:?}"), format!("header declares {hint} bytes, payload has {}", current.len)));
            }
        }
        if declared_stored != stored_len {
            return Err(Error::corrupt(
                format!("section {name:?}"),
                format!("trailer declares {declared_stored} stored bytes, chunks hold {stored_len}"),
            ));
        }
        if !digest_ok(current.hasher.finalize(), &digest) {
            return Err(Error::corrupt(format!("section {name:?}"), "blake3 digest mismatch"));
        }
        self.read.push(SectionEntry {
            kind: current.info.kind.code().into(),
            name: current.info.name,
            optional: current.info.optional,
            codec: current.info.codec.code().into(),
            uncompressed_len,
            stored_len,
            digest: digest.to_vec(),
        });
        self.source = Source::Idle(input);
        Ok(())
    }
}

/// The payload of one section. Reading it to the end verifies it: the last `read` returns an
/// error instead of end of file if a length or the digest is wrong.
pub struct SectionPayload<'a, R: Read> {
    reader: &'a mut Reader<R>,
    info: SectionInfo,
}

impl<R: Read> SectionPayload<'_, R> {
    /// What the section header says.
    pub fn info(&self) -> &SectionInfo {
        &self.info
    }

    /// Reads the whole payload into memory, refusing more than `limit` bytes.
    pub fn read_to_vec(&mut self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = self.read_verified(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() as u64 + n as u64 > limit {
                return Err(Error::TooLarge { what: format!("section {:?}", self.info().name), len: out.len() as u64 + n as u64, limit });
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Like `Read::read`, with this crate's error.
    pub fn read_verified(&mut self, buf: &mut [u8]) -> Result<usize> {
        let result = self.reader.read_payload(buf);
        if result.is_err() {
            self.reader.fail();
        }
        result
    }
}

impl<R: Read> Read for SectionPayload<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_verified(buf).map_err(Error::into_io)
    }
}

/// Compares a computed digest with a stored one. Fuzzing builds accept any digest so the
/// fuzzer reaches the parsing behind them (random bytes never carry valid blake3 digests).
fn digest_ok(computed: blake3::Hash, stored: &[u8; 32]) -> bool {
    cfg!(fuzzing) || computed.as_bytes() == stored
}

fn read_up_to<R: Read>(input: &mut HashingReader<R>, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the image header", e)),
        }
    }
    Ok(filled)
}

/// A whole image in memory (for tests and small images).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub version: Version,
    pub manifest: Manifest,
    /// Every known section with its payload, in order.
    pub sections: Vec<(SectionInfo, Vec<u8>)>,
    /// The verified end-of-image table (unknown optional sections included).
    pub table: Vec<SectionEntry>,
}

/// Reads and verifies a whole image into memory, refusing more than `limit` payload bytes.
pub fn read_all(r: impl Read, limit: u64) -> Result<Image> {
    let mut reader = Reader::open(r)?;
    let mut sections = Vec::new();
    let mut total = 0u64;
    while let Some(mut payload) = reader.next_section()? {
        let info = payload.info().clone();
        let data = payload.read_to_vec(limit.saturating_sub(total))?;
        total += data.len() as u64;
        sections.push((info, data));
    }
    Ok(Image { version: reader.version(), manifest: reader.manifest().clone(), sections, table: reader.sections_read().to_vec() })
}

/// What [`verify`] checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub version: Version,
    pub image_id: String,
    pub sections: Vec<SectionEntry>,
    pub uncompressed_bytes: u64,
    pub stored_bytes: u64,
    /// Bytes of the whole image.
    pub image_bytes: u64,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "image {} (format {}) is intact: {} sections, {} bytes of payload in {} bytes",
            self.image_id,
            self.version,
            self.sections.len(),
            self.uncompressed_bytes,
            self.image_bytes
        )
    }
}

/// Reads a whole image and checks every length and digest, and that nothing follows it.
/// The error names the first bad part (section) and what is wrong with it.
pub fn verify(r: impl Read) -> Result<VerifyReport> {
    let mut reader = Reader::open(r)?;
    while let Some(payload) = reader.next_section()? {
        drop(payload);
    }
    let version = reader.version();
    let image_id = reader.manifest().image_id.clone();
    let sections = reader.sections_read().to_vec();
    let bytes_read = reader.bytes_read();
    let Some(mut rest) = reader.into_inner() else {
        return Err(Error::Usage("image reader lost its input".into()));
    };
    let mut extra = [0u8; 1];
    let trailing = loop {
        match rest.read(&mut extra) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading after the end of the image", e)),
        }
    };
    if trailing != 0 {
        return Err(Error::corrupt("end of image", "unexpected bytes after the whole-image digest"));
    }
    let uncompressed_bytes = sections.iter().map(|s| s.uncompressed_len).sum();
    let stored_bytes = sections.iter().map(|s| s.stored_len).sum();
    let image_bytes = bytes_read;
    Ok(VerifyReport { version, image_id, sections, uncompressed_bytes, stored_bytes, image_bytes })
}
