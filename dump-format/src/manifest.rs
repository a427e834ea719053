//! The manifest and the end-of-image section table: prost messages written by hand (the field
//! numbers are part of the format; never reuse or renumber one, only add new ones).

use serde::Serialize;

/// Everything known about an image before its sections are written.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Manifest {
    /// Unique id of this image (ferry uses a UUID-like string; opaque here).
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// Id of the image this one is incremental to; empty for a full image.
    #[prost(string, tag = "2")]
    pub parent_image_id: String,
    /// Version of the ferry that wrote the image.
    #[prost(string, tag = "3")]
    pub ferry_version: String,
    /// Version of CRIU that dumped the process images.
    #[prost(string, tag = "4")]
    pub criu_version: String,
    /// `uname -r` of the source host.
    #[prost(string, tag = "5")]
    pub kernel_release: String,
    /// `uname -m` of the source host.
    #[prost(string, tag = "6")]
    pub architecture: String,
    /// "v2", "v1" or "hybrid".
    #[prost(string, tag = "7")]
    pub cgroup_mode: String,
    /// Host name of the source host.
    #[prost(string, tag = "8")]
    pub source_host: String,
    /// Creation time, seconds since the Unix epoch (UTC).
    #[prost(int64, tag = "9")]
    pub created_unix_secs: i64,
    /// Nanoseconds part of the creation time.
    #[prost(uint32, tag = "10")]
    pub created_nanos: u32,
    /// The container's config as written by ferry (TOML text; opaque to this crate).
    #[prost(bytes = "vec", tag = "11")]
    #[serde(skip)]
    pub config_toml: Vec<u8>,
    /// Sections known when the manifest was written. Sections streamed later appear only in
    /// the end-of-image table; every entry here must appear there.
    #[prost(message, repeated, tag = "12")]
    pub sections: Vec<SectionEntry>,
    /// What the checkpoint saw at dump time, for `inspect`.
    #[prost(message, optional, tag = "13")]
    pub summary: Option<Summary>,
    /// The container's id.
    #[prost(string, tag = "14")]
    pub ctid: String,
}

/// One section, as listed in the manifest (planned) or in the end-of-image table (written).
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct SectionEntry {
    /// [`crate::SectionKind`] code.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bool, tag = "3")]
    pub optional: bool,
    /// [`crate::Codec`] code.
    #[prost(uint32, tag = "4")]
    pub codec: u32,
    /// Payload length before compression (0 in the manifest when not known yet).
    #[prost(uint64, tag = "5")]
    pub uncompressed_len: u64,
    /// Payload length as stored (sum of chunk lengths).
    #[prost(uint64, tag = "6")]
    pub stored_len: u64,
    /// blake3 of the uncompressed payload (empty in the manifest when not known yet).
    #[prost(bytes = "vec", tag = "7")]
    #[serde(serialize_with = "hex")]
    pub digest: Vec<u8>,
}

/// The end-of-image table: every section written, in order.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct SectionTable {
    #[prost(message, repeated, tag = "1")]
    pub sections: Vec<SectionEntry>,
}

/// What the checkpoint code saw at dump time.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub processes: Vec<Process>,
    #[prost(message, repeated, tag = "2")]
    pub tcp_connections: Vec<TcpConnection>,
    #[prost(message, repeated, tag = "3")]
    pub addresses: Vec<IfAddress>,
    /// Resident memory of the container's processes, bytes.
    #[prost(uint64, tag = "4")]
    pub memory_bytes: u64,
}

/// One process of the container, pids as seen inside the container.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Process {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub ppid: u32,
    /// The command line, arguments joined by spaces.
    #[prost(string, tag = "3")]
    pub command: String,
}

/// One TCP socket.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct TcpConnection {
    /// `addr:port` (`[v6]:port` for IPv6).
    #[prost(string, tag = "1")]
    pub local: String,
    #[prost(string, tag = "2")]
    pub remote: String,
    /// "ESTABLISHED", "LISTEN", ...
    #[prost(string, tag = "3")]
    pub state: String,
}

/// The addresses of one network interface of the container.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct IfAddress {
    #[prost(string, tag = "1")]
    pub interface: String,
    /// "addr/prefix".
    #[prost(string, repeated, tag = "2")]
    pub ips: Vec<String>,
    /// "aa:bb:cc:dd:ee:ff", empty when the interface has none (venet).
    #[prost(string, tag = "3")]
    pub mac: String,
}

fn hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(bytes))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
