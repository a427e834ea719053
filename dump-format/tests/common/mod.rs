//! Helpers shared by the integration tests: a fixed sample manifest, a writer shortcut, and an
//! independent encoder of the byte layout in docs/image-format.md (so hostile images with
//! valid digests can be made, and so the spec is checked by a second implementation).
#![allow(dead_code)]

use ferry_dump_format::{IfAddress, Manifest, Process, SectionEntry, SectionKind, SectionTable, Summary, TcpConnection, Writer, WriterOptions};
use prost::Message;

pub const SAMPLE_CONFIG: &str = r#"version = 1
ctid = "101"
hostname = "web1"
init = ["/sbin/init"]

[net]
ipadd = ["198.18.0.10", "198.18.0.11"]

[resources]
ram = 268435456
numproc = 200
"#;

/// The golden fixtures (tests/fixtures) hold exactly this manifest: never change it.
pub fn sample_manifest() -> Manifest {
    Manifest {
        image_id: "img-0001".into(),
        parent_image_id: "img-0000".into(),
        ferry_version: "0.1.0".into(),
        criu_version: "4.2.1".into(),
        kernel_release: "6.13.0-test".into(),
        architecture: "x86_64".into(),
        cgroup_mode: "v2".into(),
        source_host: "host-a".into(),
        created_unix_secs: 1_767_225_600,
        created_nanos: 0,
        config_toml: SAMPLE_CONFIG.as_bytes().to_vec(),
        sections: vec![],
        summary: Some(Summary {
            processes: vec![
                Process { pid: 1, ppid: 0, command: "/sbin/init".into() },
                Process { pid: 42, ppid: 1, command: "nginx -g daemon off;".into() },
                Process { pid: 43, ppid: 42, command: "nginx: worker".into() },
            ],
            tcp_connections: vec![
                TcpConnection { local: "198.18.0.10:80".into(), remote: "0.0.0.0:0".into(), state: "LISTEN".into() },
                TcpConnection { local: "198.18.0.10:80".into(), remote: "198.18.1.2:51234".into(), state: "ESTABLISHED".into() },
            ],
            addresses: vec![
                IfAddress { interface: "venet0".into(), ips: vec!["198.18.0.10/32".into()], mac: String::new() },
                IfAddress { interface: "eth0".into(), ips: vec!["198.18.2.5/24".into()], mac: "02:00:c6:12:02:05".into() },
            ],
            memory_bytes: 12_345_678,
        }),
        ctid: "101".into(),
    }
}

pub type Section = (SectionKind, String, bool, Vec<u8>);

pub fn write_image(manifest: &Manifest, sections: &[Section], options: WriterOptions) -> Vec<u8> {
    let mut writer = Writer::new(Vec::new(), manifest, options).expect("writer");
    for (kind, name, optional, data) in sections {
        writer.add_bytes(*kind, name, *optional, data).expect("add section");
    }
    writer.finish().expect("finish")
}

pub fn sample_sections() -> Vec<Section> {
    let pages: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        (SectionKind::CriuImage, "inventory.img".into(), false, b"inventory bytes".to_vec()),
        (SectionKind::CriuImage, "pages-1.img".into(), false, pages),
        (SectionKind::Config, "ve.conf".into(), false, SAMPLE_CONFIG.as_bytes().to_vec()),
        (SectionKind::CriuImage, "empty.img".into(), false, Vec::new()),
    ]
}

pub fn small_options() -> WriterOptions {
    WriterOptions { level: Some(3), workers: 0, multithread_min: u64::MAX, chunk_len: 4096, ..WriterOptions::default() }
}

/// One section for [`craft_image`]: stored uncompressed in the given chunks.
pub struct RawSection {
    pub kind: u16,
    pub flags: u16,
    pub name: Vec<u8>,
    pub chunks: Vec<Vec<u8>>,
}

impl RawSection {
    pub fn new(kind: u16, flags: u16, name: &[u8], payload: &[u8]) -> Self {
        RawSection { kind, flags, name: name.to_vec(), chunks: vec![payload.to_vec()] }
    }
}

/// Encodes an image byte by byte following docs/image-format.md, with valid digests
/// everywhere, whatever the content.
pub fn craft_image(major: u16, minor: u16, manifest: &Manifest, sections: &[RawSection]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"FERRYIMG");
    out.extend_from_slice(&major.to_le_bytes());
    out.extend_from_slice(&minor.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let manifest = manifest.encode_to_vec();
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(&manifest);
    out.extend_from_slice(blake3::hash(&manifest).as_bytes());
    let mut table = Vec::new();
    let mut payload_ranges = Vec::new();
    for section in sections {
        let payload: Vec<u8> = section.chunks.concat();
        let mut header = vec![b'S'];
        header.extend_from_slice(&section.kind.to_le_bytes());
        header.extend_from_slice(&section.flags.to_le_bytes());
        header.push(0); // codec: none
        header.extend_from_slice(&(section.name.len() as u16).to_le_bytes());
        header.extend_from_slice(&section.name);
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let digest = blake3::hash(&header);
        out.extend_from_slice(&header);
        out.extend_from_slice(digest.as_bytes());
        for chunk in section.chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            if major >= 2 {
                // From format 2 on the whole-image digest leaves out the chunk data of
                // uncompressed sections (all crafted ones are).
                payload_ranges.push(out.len()..out.len() + chunk.len());
            }
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let payload_digest = blake3::hash(&payload);
        out.extend_from_slice(payload_digest.as_bytes());
        table.push(SectionEntry {
            kind: section.kind.into(),
            name: String::from_utf8_lossy(&section.name).into_owned(),
            optional: section.flags & 1 != 0,
            codec: 0,
            uncompressed_len: payload.len() as u64,
            stored_len: payload.len() as u64,
            digest: payload_digest.as_bytes().to_vec(),
        });
    }
    let table = SectionTable { sections: table }.encode_to_vec();
    out.push(b'E');
    out.extend_from_slice(&(table.len() as u32).to_le_bytes());
    out.extend_from_slice(&table);
    let mut whole = blake3::Hasher::new();
    let mut at = 0;
    for range in &payload_ranges {
        whole.update(&out[at..range.start]);
        at = range.end;
    }
    whole.update(&out[at..]);
    let whole = whole.finalize();
    out.extend_from_slice(whole.as_bytes());
    out
}
