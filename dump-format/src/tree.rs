//! A streamable encoding of a file tree, for file-tree sections (snapshots, exports).
//!
//! The payload is a run of entries, each `u8 'F'`, `u32 len`, a [`TreeEntry`] message of
//! `len` bytes (at most 1 MiB), then for regular files exactly `size` bytes of content; the
//! run ends with `u8 'Z'`. Parents come before their children. The section's codec and digest
//! protect it like any payload; this layer only frames entries and checks paths and lengths.

use std::io::{self, Read, Write};

use prost::Message;

use crate::error::{Error, Result};

const TAG_ENTRY: u8 = b'F';
const TAG_END: u8 = b'Z';
/// Largest encoded entry (path, targets and xattrs included).
pub const MAX_TREE_ENTRY_LEN: u32 = 1 << 20;

/// The type of a tree entry. Values are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryType {
    Unspecified = 0,
    File = 1,
    Directory = 2,
    Symlink = 3,
    /// A hard link to an earlier regular file (`hardlink_target`), no content of its own.
    Hardlink = 4,
    CharDevice = 5,
    BlockDevice = 6,
    Fifo = 7,
    Socket = 8,
}

/// One extended attribute.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Xattr {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// One file, directory, link or device of a tree.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TreeEntry {
    /// Relative path, '/'-separated, no `.`/`..`/empty components, no NUL.
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    #[prost(enumeration = "EntryType", tag = "2")]
    pub entry_type: i32,
    /// Permission bits and setuid/setgid/sticky (`st_mode & 0o7777`).
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(uint32, tag = "4")]
    pub uid: u32,
    #[prost(uint32, tag = "5")]
    pub gid: u32,
    #[prost(int64, tag = "6")]
    pub mtime_secs: i64,
    #[prost(uint32, tag = "7")]
    pub mtime_nanos: u32,
    #[prost(message, repeated, tag = "8")]
    pub xattrs: Vec<Xattr>,
    /// Symlink target as stored in the link (may be anything; never followed by this crate).
    #[prost(bytes = "vec", tag = "9")]
    pub symlink_target: Vec<u8>,
    /// Path (same rules as `path`) of the earlier file a hard link points to.
    #[prost(bytes = "vec", tag = "10")]
    pub hardlink_target: Vec<u8>,
    #[prost(uint32, tag = "11")]
    pub rdev_major: u32,
    #[prost(uint32, tag = "12")]
    pub rdev_minor: u32,
    /// Content length, regular files only.
    #[prost(uint64, tag = "13")]
    pub size: u64,
}

/// Checks a tree path: relative, '/'-separated plain components.
pub fn validate_tree_path(path: &[u8]) -> Result<()> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let refuse = |reason| Err(Error::UnsafeName { name: shown(), reason });
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.len() > 4096 {
        return refuse("path longer than 4096 bytes");
    }
    if path.contains(&0) {
        return refuse("contains a NUL byte");
    }
    if path[0] == b'/' {
        return refuse("absolute path");
    }
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" => return refuse("empty path component"),
            b"." | b".." => return refuse("'.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

fn validate_entry(entry: &TreeEntry) -> Result<EntryType> {
    validate_tree_path(&entry.path)?;
    let kind = EntryType::try_from(entry.entry_type).map_err(|_| {
        Error::corrupt(format!("tree entry {:?}", String::from_utf8_lossy(&entry.path)), format!("unknown type {}", entry.entry_type))
    })?;
    let what = || format!("tree entry {:?}", String::from_utf8_lossy(&entry.path));
    match kind {
        EntryType::Unspecified => return Err(Error::corrupt(what(), "no type")),
        EntryType::Hardlink => validate_tree_path(&entry.hardlink_target)?,
        EntryType::Symlink if entry.symlink_target.is_empty() || entry.symlink_target.contains(&0) => {
            return Err(Error::corrupt(what(), "symlink target empty or contains NUL"))
        }
        _ => {}
    }
    if kind != EntryType::File && entry.size != 0 {
        return Err(Error::corrupt(what(), "only regular files carry content"));
    }
    Ok(kind)
}

/// Writes a tree payload entry by entry (into a [`crate::SectionWriter`] or any `Write`).
pub struct TreeWriter<W: Write> {
    out: W,
}

impl<W: Write> TreeWriter<W> {
    pub fn new(out: W) -> Self {
        TreeWriter { out }
    }

    /// Adds an entry; a regular file's content is read from `content`, which must yield
    /// exactly `entry.size` bytes.
    pub fn add(&mut self, entry: &TreeEntry, content: Option<&mut dyn Read>) -> Result<()> {
        let kind = validate_entry(entry)?;
        let encoded = entry.encode_to_vec();
        let name = || String::from_utf8_lossy(&entry.path).into_owned();
        let len = u32::try_from(encoded.len())
            .ok()
            .filter(|len| *len <= MAX_TREE_ENTRY_LEN)
            .ok_or_else(|| Error::Usage(format!("tree entry {:?} is over 1 MiB encoded", name())))?;
        let io_err = |e| Error::io(format!("writing tree entry {:?}", name()), e);
        self.out.write_all(&[TAG_ENTRY]).map_err(io_err)?;
        self.out.write_all(&len.to_le_bytes()).map_err(io_err)?;
        self.out.write_all(&encoded).map_err(io_err)?;
        if kind == EntryType::File {
            let copied = match content {
                Some(content) => io::copy(&mut content.take(entry.size), &mut self.out).map_err(io_err)?,
                None => 0,
            };
            if copied != entry.size {
                return Err(Error::Usage(format!("tree entry {:?}: content has {copied} bytes, entry says {}", name(), entry.size)));
            }
        }
        Ok(())
    }

    /// Writes the end marker and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.out.write_all(&[TAG_END]).map_err(|e| Error::io("ending a tree", e))?;
        Ok(self.out)
    }
}

/// Reads a tree payload entry by entry.
pub struct TreeReader<R: Read> {
    input: R,
    /// Content bytes of the last regular file not consumed yet.
    pending: u64,
    done: bool,
}

impl<R: Read> TreeReader<R> {
    pub fn new(input: R) -> Self {
        TreeReader { input, pending: 0, done: false }
    }

    /// The next entry, or `None` after the end marker. Unread content of the previous file is
    /// skipped.
    pub fn next_entry(&mut self) -> Result<Option<TreeEntry>> {
        if self.done {
            return Ok(None);
        }
        if self.pending > 0 {
            let skipped = io::copy(&mut (&mut self.input).take(self.pending), &mut io::sink()).map_err(|e| Error::io("skipping tree content", e))?;
            if skipped != self.pending {
                return Err(Error::corrupt("tree", format!("ends in the middle of {}", "tree file content")));
            }
            self.pending = 0;
        }
        let mut tag = [0u8; 1];
        read_exact(&mut self.input, &mut tag, "tree entry tag")?;
        match tag[0] {
            TAG_END => {
                self.done = true;
                return Ok(None);
            }
            TAG_ENTRY => {}
            other => return Err(Error::corrupt("tree", format!("unexpected tag {other:#04x}"))),
        }
        let mut len = [0u8; 4];
        read_exact(&mut self.input, &mut len, "tree entry length")?;
        let len = u32::from_le_bytes(len);
        if len > MAX_TREE_ENTRY_LEN {
            return Err(Error::TooLarge { what: "tree entry".into(), len: len.into(), limit: MAX_TREE_ENTRY_LEN.into() });
        }
        let mut encoded = Vec::new();
        let got = (&mut self.input).take(len.into()).read_to_end(&mut encoded).map_err(|e| Error::io("reading a tree entry", e))?;
        if got != len as usize {
            return Err(Error::corrupt("tree", format!("ends in the middle of {}", "tree entry")));
        }
        let entry = TreeEntry::decode(encoded.as_slice()).map_err(|e| Error::corrupt("tree entry", format!("not a valid entry message: {e}")))?;
        if validate_entry(&entry)? == EntryType::File {
            self.pending = entry.size;
        }
        Ok(Some(entry))
    }

    /// Reads content of the current regular file (0 at its end).
    pub fn read_content(&mut self, buf: &mut [u8]) -> Result<usize> {
        let want = buf.len().min(usize::try_from(self.pending).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.input.read(&mut buf[..want]).map_err(|e| Error::io("reading tree content", e))?;
        if n == 0 {
            return Err(Error::corrupt("tree", format!("ends in the middle of {}", "tree file content")));
        }
        self.pending -= n as u64;
        Ok(n)
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt("tree", format!("ends in the middle of {what}")),
        _ => Error::io(format!("reading {what}"), e),
    })
}
