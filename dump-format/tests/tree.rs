//! The file-tree encoding: any tree round trips through an image section; hostile paths and
//! damaged trees are refused.

mod common;

use common::*;
use ferry_dump_format::{read_all, EntryType, SectionKind, TreeEntry, TreeReader, TreeWriter, Writer, Xattr};
use proptest::prelude::*;

fn entry(path: &str, kind: EntryType) -> TreeEntry {
    TreeEntry { path: path.as_bytes().to_vec(), entry_type: kind as i32, mode: 0o755, ..Default::default() }
}

fn encode(entries: &[(TreeEntry, Vec<u8>)]) -> Vec<u8> {
    let mut tree = TreeWriter::new(Vec::new());
    for (entry, content) in entries {
        tree.add(entry, Some(&mut content.as_slice())).unwrap();
    }
    tree.finish().unwrap()
}

fn decode(bytes: &[u8]) -> ferry_dump_format::Result<Vec<(TreeEntry, Vec<u8>)>> {
    let mut reader = TreeReader::new(bytes);
    let mut out = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        let mut content = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            let n = reader.read_content(&mut buf)?;
            if n == 0 {
                break;
            }
            content.extend_from_slice(&buf[..n]);
        }
        out.push((entry, content));
    }
    Ok(out)
}

fn arb_entry() -> impl Strategy<Value = (TreeEntry, Vec<u8>)> {
    let path = proptest::collection::vec("[a-zA-Z0-9_.-]{1,12}", 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("no . or ..", |p| p.split('/').all(|c| c != "." && c != ".."));
    (
        path,
        0u8..8,
        any::<(u32, u32, u32, i64, u32)>(),
        proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..20), proptest::collection::vec(any::<u8>(), 0..40)), 0..3),
        proptest::collection::vec(any::<u8>(), 0..5000),
        any::<(u32, u32)>(),
    )
        .prop_map(|(path, kind, (mode, uid, gid, mtime, nanos), xattrs, content, (major, minor))| {
            let entry_type = match kind {
                0 => EntryType::File,
                1 => EntryType::Directory,
                2 => EntryType::Symlink,
                3 => EntryType::Hardlink,
                4 => EntryType::CharDevice,
                5 => EntryType::BlockDevice,
                6 => EntryType::Fifo,
                _ => EntryType::Socket,
            };
            let is_file = entry_type == EntryType::File;
            let entry = TreeEntry {
                path: path.clone().into_bytes(),
                entry_type: entry_type as i32,
                mode: mode & 0o7777,
                uid,
                gid,
                mtime_secs: mtime,
                mtime_nanos: nanos % 1_000_000_000,
                xattrs: xattrs.into_iter().map(|(name, value)| Xattr { name, value }).collect(),
                symlink_target: if entry_type == EntryType::Symlink { b"../../anywhere/at/all".to_vec() } else { vec![] },
                hardlink_target: if entry_type == EntryType::Hardlink { b"some/file".to_vec() } else { vec![] },
                rdev_major: major,
                rdev_minor: minor,
                size: if is_file { content.len() as u64 } else { 0 },
            };
            (entry, if is_file { content } else { Vec::new() })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_tree_round_trips_through_an_image(entries in proptest::collection::vec(arb_entry(), 0..12)) {
        let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
        let section = writer.start_section(SectionKind::FileTree, "rootfs", false, None).unwrap();
        let mut tree = TreeWriter::new(section);
        for (entry, content) in &entries {
            tree.add(entry, Some(&mut content.as_slice())).unwrap();
        }
        tree.finish().unwrap().finish().unwrap();
        let image = read_all(writer.finish().unwrap().as_slice(), 1 << 30).unwrap();
        let decoded = decode(&image.sections[0].1).unwrap();
        prop_assert_eq!(decoded, entries);
    }

    #[test]
    fn damaged_trees_error_without_panicking(cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let mut file = entry("etc/hostname", EntryType::File);
        file.size = 5;
        let bytes = encode(&[(entry("etc", EntryType::Directory), vec![]), (file, b"web1\n".to_vec())]);
        let mut truncated = bytes.clone();
        truncated.truncate(cut.index(bytes.len()));
        prop_assert!(decode(&truncated).is_err());
        let mut flipped = bytes.clone();
        let at = flip.index(bytes.len());
        flipped[at] ^= 0xff;
        let _ = decode(&flipped);
    }
}

#[test]
fn hostile_tree_paths_are_refused_by_writer_and_reader() {
    for path in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a/.", "a\0b"] {
        let mut tree = TreeWriter::new(Vec::new());
        let bad = entry(path, EntryType::Directory);
        assert!(tree.add(&bad, None).is_err(), "writer accepted {path:?}");
        // Craft it by hand for the reader.
        use prost::Message;
        let encoded = bad.encode_to_vec();
        let mut bytes = vec![b'F'];
        bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&encoded);
        bytes.push(b'Z');
        assert!(decode(&bytes).is_err(), "reader accepted {path:?}");
    }
    let mut link = entry("hl", EntryType::Hardlink);
    link.hardlink_target = b"../../etc/shadow".to_vec();
    assert!(TreeWriter::new(Vec::new()).add(&link, None).is_err());
}

#[test]
fn huge_tree_entry_length_is_refused_fast() {
    let mut bytes = vec![b'F'];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, ferry_dump_format::Error::TooLarge { .. }), "{err}");
}

#[test]
fn file_content_must_match_its_size() {
    let mut file = entry("f", EntryType::File);
    file.size = 10;
    let mut tree = TreeWriter::new(Vec::new());
    assert!(tree.add(&file, Some(&mut &b"short"[..])).is_err());
}
