//! Golden images of every format version (1.0, 2.0). These files are the format's memory:
//! every later ferry must decode them to exactly what is checked here. Never regenerate them
//! to make a test pass; a new format version gets new fixtures next to these.
//!
//! The current version's were made once with `FERRY_REGENERATE_FIXTURES=1 cargo nextest run
//! -p ferry-dump-format -E 'binary(golden)' --run-ignored only`, which writes only those.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::*;
use ferry_dump_format::{
    inspect, read_all, verify, Codec, EntryType, SectionKind, TreeEntry, TreeReader, TreeWriter, Writer, WriterOptions, Xattr, FORMAT_MAJOR,
};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn pages() -> Vec<u8> {
    (0..4096u32).map(|i| if i < 2048 { 0 } else { (i % 61) as u8 }).collect()
}

fn tree_entries() -> Vec<(TreeEntry, Vec<u8>)> {
    let base = |path: &str, kind: EntryType| TreeEntry {
        path: path.as_bytes().to_vec(),
        entry_type: kind as i32,
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        mtime_secs: 1_767_225_600,
        mtime_nanos: 5,
        ..Default::default()
    };
    let mut file = base("etc/hostname", EntryType::File);
    file.mode = 0o644;
    file.size = 5;
    file.xattrs = vec![Xattr { name: b"user.origin".to_vec(), value: b"ferry".to_vec() }];
    let mut link = base("etc/localtime", EntryType::Symlink);
    link.symlink_target = b"/usr/share/zoneinfo/UTC".to_vec();
    let mut hard = base("etc/hostname.bak", EntryType::Hardlink);
    hard.hardlink_target = b"etc/hostname".to_vec();
    let mut null = base("dev/null", EntryType::CharDevice);
    null.rdev_major = 1;
    null.rdev_minor = 3;
    vec![
        (base("etc", EntryType::Directory), vec![]),
        (file, b"web1\n".to_vec()),
        (link, vec![]),
        (hard, vec![]),
        (base("dev", EntryType::Directory), vec![]),
        (null, vec![]),
    ]
}

fn tree() -> Vec<u8> {
    let mut writer = TreeWriter::new(Vec::new());
    for (entry, content) in tree_entries() {
        writer.add(&entry, Some(&mut content.as_slice())).unwrap();
    }
    writer.finish().unwrap()
}

/// The image in the fixtures, made by the writer of format 1.0.
fn fixture_image(level: Option<i32>, major: u16) -> Vec<u8> {
    let options = WriterOptions { level, workers: 0, multithread_min: u64::MAX, chunk_len: 1000, major };
    let mut writer = Writer::new(Vec::new(), &sample_manifest(), options).unwrap();
    writer.add_bytes(SectionKind::CriuImage, "inventory.img", false, b"\x01\x02inventory").unwrap();
    // A streamed section: length unknown when it started.
    let mut section = writer.start_section(SectionKind::CriuImage, "pages-1.img", false, None).unwrap();
    for piece in pages().chunks(3000) {
        section.write_all(piece).unwrap();
    }
    section.finish().unwrap();
    writer.add_bytes(SectionKind::Config, "ve.conf", false, SAMPLE_CONFIG.as_bytes()).unwrap();
    writer.add_bytes(SectionKind::FileTree, "rootfs-delta", true, &tree()).unwrap();
    writer.add_bytes(SectionKind::Unknown(0x7f00), "from-the-future", true, b"skip me").unwrap();
    writer.add_bytes(SectionKind::CriuImage, "empty.img", false, b"").unwrap();
    writer.finish().unwrap()
}

/// (file, zstd level, major)
const FIXTURES: [(&str, Option<i32>, u16); 4] =
    [("v1.0-stored.fimg", None, 1), ("v1.0-zstd.fimg", Some(3), 1), ("v2.0-stored.fimg", None, 2), ("v2.0-zstd.fimg", Some(3), 2)];

#[test]
#[ignore = "writes the golden fixtures; run once per format version"]
fn regenerate_fixtures() {
    if std::env::var_os("FERRY_REGENERATE_FIXTURES").is_none() {
        println!("set FERRY_REGENERATE_FIXTURES=1 to rewrite the fixtures");
        return;
    }
    for (name, level, major) in FIXTURES {
        if major == FORMAT_MAJOR {
            std::fs::write(fixture_path(name), fixture_image(level, major)).unwrap();
        }
    }
}

fn check_fixture(name: &str, codec: Codec, version: &str) {
    let bytes = std::fs::read(fixture_path(name)).unwrap();
    assert!(bytes.len() < 8192, "{name} should stay small");
    let image = read_all(bytes.as_slice(), 1 << 20).unwrap();
    assert_eq!(image.version.to_string(), version);
    assert_eq!(image.manifest, sample_manifest(), "{name}: manifest");
    let m = &image.manifest;
    assert_eq!(m.image_id, "img-0001");
    assert_eq!(m.parent_image_id, "img-0000");
    assert_eq!(m.created_unix_secs, 1_767_225_600);
    assert_eq!(m.summary.as_ref().unwrap().processes.len(), 3);

    let expected: Vec<(SectionKind, &str, bool, Vec<u8>)> = vec![
        (SectionKind::CriuImage, "inventory.img", false, b"\x01\x02inventory".to_vec()),
        (SectionKind::CriuImage, "pages-1.img", false, pages()),
        (SectionKind::Config, "ve.conf", false, SAMPLE_CONFIG.as_bytes().to_vec()),
        (SectionKind::FileTree, "rootfs-delta", true, tree()),
        (SectionKind::CriuImage, "empty.img", false, Vec::new()),
    ];
    assert_eq!(image.sections.len(), expected.len(), "{name}: the unknown section is skipped");
    for ((info, data), (kind, section, optional, payload)) in image.sections.iter().zip(&expected) {
        assert_eq!(info.kind, *kind, "{name}/{section}");
        assert_eq!(info.name, *section);
        assert_eq!(info.optional, *optional);
        assert_eq!(info.codec, codec);
        assert_eq!(data, payload, "{name}/{section}");
        let hint = if *section == "pages-1.img" { None } else { Some(payload.len() as u64) };
        assert_eq!(info.size_hint, hint, "{name}/{section}");
    }
    // The table lists all six, the skipped one included, with their digests.
    let names: Vec<&str> = image.table.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["inventory.img", "pages-1.img", "ve.conf", "rootfs-delta", "from-the-future", "empty.img"]);
    assert_eq!(image.table[4].kind, 0x7f00);
    assert_eq!(image.table[4].digest, blake3::hash(b"skip me").as_bytes().to_vec());
    assert_eq!(image.table[1].digest, blake3::hash(&pages()).as_bytes().to_vec());
    assert_eq!(image.table[1].uncompressed_len, 4096);
    for entry in &image.table {
        assert_eq!(entry.codec, u32::from(codec.code()));
    }

    // The file tree decodes to every field written.
    let mut reader = TreeReader::new(image.sections[3].1.as_slice());
    let mut decoded = Vec::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        let mut content = vec![0u8; entry.size as usize];
        let mut filled = 0;
        while filled < content.len() {
            filled += reader.read_content(&mut content[filled..]).unwrap();
        }
        decoded.push((entry, content));
    }
    assert_eq!(decoded, tree_entries(), "{name}: file tree");
    assert_eq!(decoded[1].0.xattrs[0].value, b"ferry");
    assert_eq!((decoded[5].0.rdev_major, decoded[5].0.rdev_minor), (1, 3));

    let report = verify(bytes.as_slice()).unwrap();
    assert_eq!(report.image_bytes, bytes.len() as u64);
    let text = inspect(bytes.as_slice()).unwrap().to_string();
    assert!(text.contains(&format!("ferry image format {version}")), "{text}");
}

#[test]
fn stored_fixtures_decode_and_the_writer_still_writes_them_byte_for_byte() {
    // Without compression the output depends only on this crate: any change of layout shows.
    for (name, major, version) in [("v1.0-stored.fimg", 1, "1.0"), ("v2.0-stored.fimg", 2, "2.0")] {
        check_fixture(name, Codec::None, version);
        let on_disk = std::fs::read(fixture_path(name)).unwrap();
        assert!(on_disk == fixture_image(None, major), "the writer no longer writes format {version} as specified");
    }
}

#[test]
fn zstd_fixtures_decode() {
    check_fixture("v1.0-zstd.fimg", Codec::Zstd, "1.0");
    check_fixture("v2.0-zstd.fimg", Codec::Zstd, "2.0");
}

#[test]
fn the_two_majors_differ_only_in_the_whole_image_digest() {
    let v1 = std::fs::read(fixture_path("v1.0-stored.fimg")).unwrap();
    let v2 = std::fs::read(fixture_path("v2.0-stored.fimg")).unwrap();
    assert_eq!(v1.len(), v2.len());
    let differing: Vec<usize> = (0..v1.len()).filter(|&i| v1[i] != v2[i]).collect();
    assert!(differing.contains(&8), "the major byte");
    assert!(
        differing.iter().all(|&i| i == 8 || i >= v1.len() - 32),
        "only the major and the last 32 bytes (the whole-image digest) may differ: {differing:?}"
    );
}

#[test]
fn fixtures_start_with_the_documented_header() {
    for (name, _, major) in FIXTURES {
        let bytes = std::fs::read(fixture_path(name)).unwrap();
        assert_eq!(&bytes[..8], b"FERRYIMG");
        assert_eq!(&bytes[8..16], &[major as u8, 0, 0, 0, 0, 0, 0, 0], "major {major}, minor 0, flags 0");
    }
}
