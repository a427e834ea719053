//! The control messages, as hand-written prost structs (no protoc on the build hosts). Field
//! tags are the wire contract: never reuse or renumber one; add new fields with new tags.
//! `proto::golden` pins the encoded bytes of every message (a changed tag fails its test).
//! docs/migration-protocol.md describes when each message is sent.

/// Every control frame carries one envelope. `id` numbers the sender's messages (from 1);
/// a reply names the request it answers in `reply_to` (0: not a reply).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub reply_to: u64,
    #[prost(
        oneof = "Body",
        tags = "10, 11, 12, 13, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 40, 41, 42, 50, 51, 60, 61, 62, 63, 70, 71, 72, 80, 81, 100"
    )]
    pub body: Option<Body>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    // --- generic
    #[prost(message, tag = "10")]
    Ok(OkReply),
    #[prost(message, tag = "11")]
    Error(ErrorReply),
    #[prost(message, tag = "12")]
    Abort(Abort),
    #[prost(message, tag = "13")]
    Cleanup(Cleanup),
    // --- file sync
    #[prost(message, tag = "20")]
    SyncBegin(SyncBegin),
    #[prost(message, tag = "21")]
    SyncBeginAck(SyncBeginAck),
    #[prost(message, tag = "22")]
    Mkdir(FileEntry),
    #[prost(message, tag = "23")]
    PutFile(PutFile),
    #[prost(message, tag = "24")]
    FileCommit(FileCommit),
    #[prost(message, tag = "25")]
    Symlink(FileEntry),
    #[prost(message, tag = "26")]
    Mknod(FileEntry),
    #[prost(message, tag = "27")]
    Hardlink(Hardlink),
    #[prost(message, tag = "28")]
    SetMeta(FileEntry),
    #[prost(message, tag = "29")]
    Delete(Delete),
    #[prost(message, tag = "30")]
    GetSignature(GetSignature),
    #[prost(message, tag = "31")]
    SignatureReply(SignatureReply),
    #[prost(message, tag = "32")]
    LinkFrom(FileEntry),
    #[prost(message, tag = "33")]
    SyncEnd(SyncEnd),
    // --- preflight
    #[prost(message, tag = "40")]
    Preflight(Preflight),
    #[prost(message, tag = "41")]
    PreflightResult(PreflightResult),
    #[prost(message, tag = "42")]
    Config(ConfigMsg),
    // --- checkpoint image
    #[prost(message, tag = "50")]
    ImageBegin(ImageBegin),
    #[prost(message, tag = "51")]
    ImageEnd(ImageEnd),
    // --- restore and switch-over
    #[prost(message, tag = "60")]
    Restore(Restore),
    #[prost(message, tag = "61")]
    Restored(Restored),
    #[prost(message, tag = "62")]
    Announce(Announce),
    #[prost(message, tag = "63")]
    Handover(Handover),
    #[prost(message, tag = "70")]
    Done(Done),
    #[prost(message, tag = "71")]
    SyncEndAck(SyncEndAck),
    #[prost(message, tag = "72")]
    ImageSection(ImageSection),
    // --- direct data channel for the image (--data-channel tcp)
    #[prost(message, tag = "80")]
    DataChannelOpen(DataChannelOpen),
    #[prost(message, tag = "81")]
    DataChannelReady(DataChannelReady),
    // --- file sync (continued)
    #[prost(message, tag = "100")]
    PutFiles(PutFiles),
}

impl Body {
    /// A short name for logs and "unexpected message" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Ok(_) => "Ok",
            Body::Error(_) => "Error",
            Body::Abort(_) => "Abort",
            Body::Cleanup(_) => "Cleanup",
            Body::SyncBegin(_) => "SyncBegin",
            Body::SyncBeginAck(_) => "SyncBeginAck",
            Body::Mkdir(_) => "Mkdir",
            Body::PutFile(_) => "PutFile",
            Body::FileCommit(_) => "FileCommit",
            Body::Symlink(_) => "Symlink",
            Body::Mknod(_) => "Mknod",
            Body::Hardlink(_) => "Hardlink",
            Body::SetMeta(_) => "SetMeta",
            Body::Delete(_) => "Delete",
            Body::GetSignature(_) => "GetSignature",
            Body::SignatureReply(_) => "SignatureReply",
            Body::LinkFrom(_) => "LinkFrom",
            Body::SyncEnd(_) => "SyncEnd",
            Body::SyncEndAck(_) => "SyncEndAck",
            Body::Preflight(_) => "Preflight",
            Body::PreflightResult(_) => "PreflightResult",
            Body::Config(_) => "Config",
            Body::ImageBegin(_) => "ImageBegin",
            Body::ImageSection(_) => "ImageSection",
            Body::ImageEnd(_) => "ImageEnd",
            Body::Restore(_) => "Restore",
            Body::Restored(_) => "Restored",
            Body::Announce(_) => "Announce",
            Body::Handover(_) => "Handover",
            Body::Done(_) => "Done",
            Body::DataChannelOpen(_) => "DataChannelOpen",
            Body::DataChannelReady(_) => "DataChannelReady",
            Body::PutFiles(_) => "PutFiles",
        }
    }
}

/// The first message each side sends, before any frame (see `handshake`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(uint32, tag = "1")]
    pub proto_major: u32,
    #[prost(uint32, tag = "2")]
    pub proto_minor: u32,
    #[prost(string, tag = "3")]
    pub ferry_version: String,
    /// Optional features the sender understands (e.g. "zstd"); unknown ones are ignored.
    #[prost(string, repeated, tag = "4")]
    pub features: Vec<String>,
}

/// The destination's answer to Hello. `error` is set when it refuses the connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloAck {
    #[prost(uint32, tag = "1")]
    pub proto_major: u32,
    #[prost(uint32, tag = "2")]
    pub proto_minor: u32,
    #[prost(string, tag = "3")]
    pub ferry_version: String,
    #[prost(string, repeated, tag = "4")]
    pub features: Vec<String>,
    #[prost(string, tag = "5")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OkReply {}

/// A failed request: human-readable text that says what failed and what to do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The source gives up; the destination undoes what it made for this migration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Abort {
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// Remove the destination's copy (synced files, image, config), e.g. after a failed attempt
/// without --keep-dst.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cleanup {
    #[prost(string, tag = "1")]
    pub ctid: String,
    #[prost(bool, tag = "2")]
    pub keep_files: bool,
}

/// What the source wants checked on the destination before anything changes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Preflight {
    #[prost(string, tag = "1")]
    pub ctid: String,
    /// The container's config file (TOML), as on the source.
    #[prost(string, tag = "2")]
    pub config_toml: String,
    #[prost(string, repeated, tag = "3")]
    pub ips: Vec<String>,
    #[prost(uint64, tag = "4")]
    pub needed_disk_bytes: u64,
    /// "4.2.1": the source's CRIU, so the destination can refuse an older one.
    #[prost(string, tag = "5")]
    pub criu_version: String,
    /// CRIU's cpuinfo image of the source (criu cpuinfo dump), checked with `criu cpuinfo check`.
    #[prost(bytes = "vec", tag = "6")]
    pub cpuinfo: Vec<u8>,
    #[prost(bool, tag = "7")]
    pub online: bool,
    #[prost(string, tag = "8")]
    pub network_mode: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PreflightResult {
    #[prost(bool, tag = "1")]
    pub ok: bool,
    /// One line per problem found; empty when ok.
    #[prost(string, repeated, tag = "2")]
    pub problems: Vec<String>,
    /// Where the destination will put the private area (so logs can name it).
    #[prost(string, tag = "3")]
    pub private_dir: String,
    /// Memory the destination has available (MemAvailable), and free disk under its data dir:
    /// what `evacuate` chooses destinations by (0 from a peer that does not say).
    #[prost(uint64, tag = "4")]
    pub free_memory_bytes: u64,
    #[prost(uint64, tag = "5")]
    pub free_disk_bytes: u64,
}

/// Install the container's config on the destination (not yet started).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigMsg {
    #[prost(string, tag = "1")]
    pub ctid: String,
    #[prost(string, tag = "2")]
    pub config_toml: String,
}

/// One sync pass begins. The destination answers with SyncBeginAck and then streams its
/// manifest summary on `manifest_stream`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SyncBegin {
    #[prost(uint32, tag = "1")]
    pub pass: u32,
    /// What to sync into: the private area of this container (migration) or, for local use,
    /// empty (the receiver knows its root).
    #[prost(string, tag = "2")]
    pub ctid: String,
    /// Whether the source sends xattrs (and so whether the summary should carry their digest).
    #[prost(bool, tag = "3")]
    pub xattrs: bool,
    /// The source knows what the destination holds (its own scan of the previous pass, which
    /// the destination applied in full): skip the walk and the summary.
    #[prost(bool, tag = "4")]
    pub no_summary: bool,
    /// The source can send whole files as extent records on their data stream and check files
    /// with layout-aware digests (protocol 1.1; see PutFile). The destination says in its
    /// SyncBeginAck whether the pass uses them.
    #[prost(bool, tag = "5")]
    pub extent_records: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SyncBeginAck {
    /// The data stream that carries the destination's manifest summary: a sequence of
    /// length-delimited FileEntry messages.
    #[prost(uint32, tag = "1")]
    pub manifest_stream: u32,
    #[prost(uint64, tag = "2")]
    pub entries: u64,
    /// "" (plain) or "zstd": how the whole summary stream is compressed.
    #[prost(string, tag = "3")]
    pub compression: String,
    /// The destination accepts PutFiles (small files batched into one message) and deltas
    /// inline in their PutFile; older ones leave it false and get PutFile + data stream +
    /// FileCommit for every file.
    #[prost(bool, tag = "4")]
    pub put_files: bool,
    /// The destination did as `no_summary` asked: no manifest stream follows.
    #[prost(bool, tag = "5")]
    pub summary_skipped: bool,
    /// The pass uses extent records and layout-aware digests (the source offered them and the
    /// destination takes them).
    #[prost(bool, tag = "6")]
    pub extent_records: bool,
    /// The summary's size once decompressed (0: not announced, from a destination of protocol
    /// 1.0). The source refuses a summary that decompresses to more.
    #[prost(uint64, tag = "7")]
    pub summary_bytes: u64,
}

/// File types on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum FileKind {
    Unknown = 0,
    Regular = 1,
    Directory = 2,
    Symlink = 3,
    CharDevice = 4,
    BlockDevice = 5,
    Fifo = 6,
    Socket = 7,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Xattr {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// One entry of a tree: used for the source's operations and for the destination's summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileEntry {
    /// Relative to the tree's root, raw bytes ("" is the root itself).
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    #[prost(enumeration = "FileKind", tag = "2")]
    pub kind: i32,
    /// Permission bits including setuid/setgid/sticky (st_mode & 07777).
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(uint32, tag = "4")]
    pub uid: u32,
    #[prost(uint32, tag = "5")]
    pub gid: u32,
    #[prost(int64, tag = "6")]
    pub mtime_ns: i64,
    #[prost(uint64, tag = "7")]
    pub size: u64,
    #[prost(uint64, tag = "8")]
    pub rdev: u64,
    #[prost(bytes = "vec", tag = "9")]
    pub symlink_target: Vec<u8>,
    /// Full xattrs (operations only).
    #[prost(message, repeated, tag = "10")]
    pub xattrs: Vec<Xattr>,
    /// blake3 of the sorted xattrs, empty when there are none (summaries and operations).
    #[prost(bytes = "vec", tag = "11")]
    pub xattr_digest: Vec<u8>,
    /// The destination's inode number (summaries only: tells whether hardlinks still hold).
    #[prost(uint64, tag = "12")]
    pub ino: u64,
    /// Set in a summary when the entry exists only in the link-dest tree.
    #[prost(bool, tag = "13")]
    pub in_link_dest: bool,
}

/// Extents of a (sparse) file carried on the data stream in order; anything else is a hole.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extent {
    #[prost(uint64, tag = "1")]
    pub offset: u64,
    #[prost(uint64, tag = "2")]
    pub len: u64,
}

/// A file's contents follow on `stream`: in a pass with extent records, one record per data
/// extent (u64 BE offset, u64 BE length, then that many bytes; holes are not sent) and
/// `extents` empty; else the bytes of `extents` back to back; or (when `delta` is set) an
/// rsync delta against the destination's current copy.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutFile {
    #[prost(message, optional, tag = "1")]
    pub entry: Option<FileEntry>,
    #[prost(uint32, tag = "2")]
    pub stream: u32,
    #[prost(message, repeated, tag = "3")]
    pub extents: Vec<Extent>,
    #[prost(bool, tag = "4")]
    pub delta: bool,
    /// With `stream` 0 and `delta` set: the delta itself, and in `blake3` the whole file's
    /// digest (no stream and no FileCommit follow). Only to destinations that set
    /// SyncBeginAck.put_files.
    #[prost(bytes = "vec", tag = "5")]
    pub data: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub blake3: Vec<u8>,
}

/// Several small, dense files whole, in one message (no data stream, no FileCommit): each is
/// written, checked and put in place exactly as a PutFile would be. Laid out by column so
/// that a file costs its entry and its digest and no framing of its own.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutFiles {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<FileEntry>,
    /// The files' bytes back to back, `entries[i].size` of them each, in order.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: prost::bytes::Bytes,
    /// The 32-byte blake3 digest of each file, back to back, in order.
    #[prost(bytes = "vec", tag = "3")]
    pub blake3: Vec<u8>,
}

/// Sent after a PutFile's stream ends: the blake3 digest of the whole file as the source read it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileCommit {
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub blake3: Vec<u8>,
}

/// Make `path` another name of `target` (both relative, `target` already synced).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hardlink {
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub target: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Delete {
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
}

/// Ask for the rsync signature of the destination's copy of `path`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSignature {
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub block_size: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignatureReply {
    /// fast_rsync's serialized signature; empty when the file is gone or unreadable.
    #[prost(bytes = "vec", tag = "1")]
    pub signature: Vec<u8>,
}

/// The pass's operations are all sent; the destination applies directory metadata and replies
/// SyncEndAck (or Error naming every file that failed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SyncEnd {
    #[prost(uint32, tag = "1")]
    pub pass: u32,
    /// The source's view of the pass, for the destination's log.
    #[prost(uint64, tag = "2")]
    pub entries_scanned: u64,
    #[prost(uint64, tag = "3")]
    pub files_sent: u64,
    #[prost(uint64, tag = "4")]
    pub bytes_data: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SyncEndAck {
    #[prost(uint64, tag = "1")]
    pub files_written: u64,
    #[prost(uint64, tag = "2")]
    pub bytes_written: u64,
    #[prost(uint64, tag = "3")]
    pub deleted: u64,
}

/// A checkpoint image follows on `stream` (ferry's dump format, possibly zstd-compressed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageBegin {
    #[prost(string, tag = "1")]
    pub ctid: String,
    #[prost(uint32, tag = "2")]
    pub stream: u32,
    /// Size if known in advance (0: streamed as written).
    #[prost(uint64, tag = "3")]
    pub size_hint: u64,
    #[prost(string, tag = "4")]
    pub compression: String,
    /// `ImageEnd.blake3` is the stream's last 32 bytes (the image's own whole-image digest,
    /// checked by the destination's reader) instead of blake3 of the stream. Sent only to a
    /// destination announcing the `image-format-2` feature.
    #[prost(bool, tag = "5")]
    pub tail_digest: bool,
}

/// Optional marker naming the image section that starts next on the image stream (progress).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSection {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageEnd {
    #[prost(uint64, tag = "1")]
    pub size: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub blake3: Vec<u8>,
}

/// Ask the destination to listen for the image on a direct TCP connection (`--data-channel
/// tcp`, unencrypted: trusted networks only). Answered with DataChannelReady, or Error. The
/// image then goes raw over that connection (see `crate::datachan`), and the source confirms
/// it with an ImageEnd request whose `size` is the image's length and whose `blake3` is the
/// image's own whole-image digest (its last 32 bytes); the destination answers Ok once it
/// extracted and verified the same image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataChannelOpen {
    #[prost(string, tag = "1")]
    pub ctid: String,
    /// Listen on a port of first..=last (0: any port the kernel picks).
    #[prost(uint32, tag = "2")]
    pub port_first: u32,
    #[prost(uint32, tag = "3")]
    pub port_last: u32,
}

/// Where to connect (`ip:port`, `[v6]:port`) and the one-time token to present there.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataChannelReady {
    #[prost(string, tag = "1")]
    pub address: String,
    #[prost(bytes = "vec", tag = "2")]
    pub token: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Restore {
    #[prost(string, tag = "1")]
    pub ctid: String,
    /// Restore from the image (online) or just start from the files (offline).
    #[prost(bool, tag = "2")]
    pub from_image: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Restored {
    #[prost(int32, tag = "1")]
    pub pid: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Announce {
    #[prost(string, tag = "1")]
    pub ctid: String,
    #[prost(string, repeated, tag = "2")]
    pub ips: Vec<String>,
}

/// The migration is complete; the destination owns the container. Answered with Ok (or with
/// Handover when `report_handover` asks for it), then both sides close the connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {
    #[prost(string, tag = "1")]
    pub ctid: String,
    /// Answer with [`Handover`] once the destination's verification of the handover ended.
    #[prost(bool, tag = "2")]
    pub report_handover: bool,
}

/// How the destination's verification of the handover went: whether every neighbour it probed
/// answered, when (ms after the restore), after how many announces.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Handover {
    #[prost(bool, tag = "1")]
    pub confirmed: bool,
    #[prost(uint64, tag = "2")]
    pub confirmed_after_ms: u64,
    #[prost(uint32, tag = "3")]
    pub announces: u32,
    #[prost(uint32, tag = "4")]
    pub neighbours: u32,
    /// The neighbours that never answered.
    #[prost(string, repeated, tag = "5")]
    pub unanswered: Vec<String>,
}
