//! Round trips, damaged and hostile images: every case must end in a clear error, never a
//! panic, never a write outside the target directory.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use ferry_dump_format::{extract_to_dir, inspect, read_all, verify, Error, Reader, SectionKind, Writer, WriterOptions, FORMAT_MAJOR};

const LIMIT: u64 = 1 << 30;

#[test]
fn round_trip_keeps_manifest_and_every_section() {
    let manifest = sample_manifest();
    let sections = sample_sections();
    let bytes = write_image(&manifest, &sections, small_options());
    let image = read_all(bytes.as_slice(), LIMIT).unwrap();
    assert_eq!(image.manifest, manifest);
    assert_eq!(image.version.major, FORMAT_MAJOR);
    assert_eq!(image.sections.len(), sections.len());
    for ((info, data), (kind, name, optional, expected)) in image.sections.iter().zip(&sections) {
        assert_eq!(info.kind, *kind);
        assert_eq!(&info.name, name);
        assert_eq!(info.optional, *optional);
        assert_eq!(data, expected, "payload of {name}");
    }
    let report = verify(bytes.as_slice()).unwrap();
    assert_eq!(report.sections.len(), sections.len());
    assert_eq!(report.image_bytes, bytes.len() as u64);
}

#[test]
fn uncompressed_and_multithreaded_writers_round_trip() {
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i / 7 % 256) as u8).collect();
    for options in [
        WriterOptions { level: None, ..WriterOptions::default() },
        WriterOptions { level: Some(1), workers: 2, multithread_min: 0, chunk_len: 1 << 20, major: 1 },
    ] {
        let sections = vec![(SectionKind::CriuImage, "pages-1.img".to_string(), false, data.clone())];
        let bytes = write_image(&sample_manifest(), &sections, options.clone());
        let image = read_all(bytes.as_slice(), LIMIT).unwrap();
        assert_eq!(image.sections[0].1, data, "{options:?}");
    }
}

#[test]
fn streamed_section_of_unknown_length_through_a_socket() {
    // A Unix socket cannot seek: proves the writer and reader never do.
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
    let expected: Vec<u8> = (0..3_000_000u32).map(|i| (i % 13) as u8).collect();
    let to_send = expected.clone();
    let writer_thread = std::thread::spawn(move || {
        let mut writer = Writer::new(&mut tx, &sample_manifest(), WriterOptions::default()).unwrap();
        let mut section = writer.start_section(SectionKind::CriuImage, "pages-1.img", false, None).unwrap();
        for piece in to_send.chunks(100_003) {
            section.write_all(piece).unwrap();
        }
        section.finish().unwrap();
        writer.add_bytes(SectionKind::CriuImage, "pstree.img", false, b"tree").unwrap();
        writer.finish().unwrap();
    });
    let mut reader = Reader::open(rx).unwrap();
    let mut payload = reader.next_section().unwrap().unwrap();
    assert_eq!(payload.info().size_hint, None);
    let mut got = Vec::new();
    payload.read_to_end(&mut got).unwrap();
    assert_eq!(got, expected);
    let mut tree = reader.next_section().unwrap().unwrap();
    assert_eq!(tree.read_to_vec(100).unwrap(), b"tree");
    assert!(reader.next_section().unwrap().is_none());
    writer_thread.join().unwrap();
}

#[test]
fn manifest_sections_must_all_be_written() {
    let mut manifest = sample_manifest();
    manifest.sections.push(ferry_dump_format::SectionEntry { kind: 1, name: "inventory.img".into(), ..Default::default() });
    let bytes = write_image(&manifest, &sample_sections(), small_options());
    verify(bytes.as_slice()).unwrap();
    manifest.sections[0].name = "missing.img".into();
    let bytes = write_image(&manifest, &sample_sections(), small_options());
    let err = verify(bytes.as_slice()).unwrap_err().to_string();
    assert!(err.contains("missing.img") && err.contains("missing from the image"), "{err}");
}

#[test]
fn empty_input_is_a_clear_error() {
    let err = verify(&[][..]).unwrap_err();
    assert!(matches!(err, Error::Empty), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn wrong_magic_is_refused() {
    let mut bytes = write_image(&sample_manifest(), &sample_sections(), small_options());
    bytes[0] = b'X';
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(matches!(err, Error::BadMagic { .. }), "{err}");
    let err = verify(&b"#!/bin/sh\necho not an image\n"[..]).unwrap_err();
    assert!(err.to_string().starts_with("not a ferry image"), "{err}");
}

#[test]
fn newer_major_is_refused_with_the_upgrade_message() {
    let bytes = craft_image(3, 3, &sample_manifest(), &[]);
    let err = verify(bytes.as_slice()).unwrap_err().to_string();
    assert_eq!(err, "image format 3.3 is newer than this ferry supports (up to 2.0); upgrade ferry");
}

#[test]
fn newer_minor_of_same_major_is_read() {
    for major in [1, FORMAT_MAJOR] {
        let bytes = craft_image(major, 7, &sample_manifest(), &[RawSection::new(1, 0, b"a.img", b"abc")]);
        let image = read_all(bytes.as_slice(), LIMIT).unwrap();
        assert_eq!((image.version.major, image.version.minor), (major, 7));
        assert_eq!(image.sections[0].1, b"abc");
    }
}

#[test]
fn older_major_without_upgrade_path_is_refused() {
    let bytes = craft_image(0, 9, &sample_manifest(), &[]);
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(matches!(err, Error::NoUpgradePath { major: 0, minor: 9 }), "{err}");
}

#[test]
fn unknown_optional_sections_are_skipped_and_unknown_required_refused() {
    let sections =
        [RawSection::new(1, 0, b"a.img", b"first"), RawSection::new(900, 1, b"future-thing", b"skip me"), RawSection::new(1, 0, b"b.img", b"second")];
    let bytes = craft_image(FORMAT_MAJOR, 0, &sample_manifest(), &sections);
    let image = read_all(bytes.as_slice(), LIMIT).unwrap();
    let names: Vec<&str> = image.sections.iter().map(|(i, _)| i.name.as_str()).collect();
    assert_eq!(names, ["a.img", "b.img"]);
    assert_eq!(image.table.len(), 3, "the skipped section was verified and counted");

    let sections = [RawSection::new(1, 0, b"a.img", b"x"), RawSection::new(900, 0, b"future-thing", b"y")];
    let bytes = craft_image(FORMAT_MAJOR, 0, &sample_manifest(), &sections);
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(matches!(err, Error::UnknownRequiredSection { kind: 900, .. }), "{err}");
    assert!(err.to_string().contains("upgrade ferry"), "{err}");
}

/// Compressed and stored, in the current format and in format 1.
fn option_sets() -> [WriterOptions; 3] {
    [small_options(), WriterOptions { level: None, ..small_options() }, WriterOptions { level: None, major: 1, ..small_options() }]
}

#[test]
fn every_truncation_is_an_error() {
    for options in option_sets() {
        let bytes = write_image(&sample_manifest(), &sample_sections(), options.clone());
        for len in 0..bytes.len() {
            let result = verify(&bytes[..len]);
            assert!(result.is_err(), "prefix of {len} bytes of {} accepted ({options:?})", bytes.len());
        }
        let err = verify(&bytes[..bytes.len() - 1]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}

#[test]
fn every_flipped_byte_is_an_error() {
    for (i, options) in option_sets().into_iter().enumerate() {
        let bytes = write_image(&sample_manifest(), &sample_sections(), options.clone());
        // The stored images are larger: one mask each keeps the test quick.
        let masks: &[u8] = if i == 0 { &[0x01, 0x80, 0xff] } else { &[0x01] };
        for pos in 0..bytes.len() {
            for &mask in masks {
                let mut damaged = bytes.clone();
                damaged[pos] ^= mask;
                let result = verify(damaged.as_slice());
                assert!(result.is_err(), "flip {mask:#x} at {pos} of {} accepted ({options:?})", bytes.len());
            }
        }
    }
}

/// Byte offsets of the parts of a crafted image with one section named `a.img`.
struct Layout {
    manifest_len_at: usize,
    manifest_at: usize,
    section_at: usize,
    chunk_len_at: usize,
    payload_at: usize,
    trailer_at: usize,
    end_at: usize,
}

fn layout(manifest_len: usize, name_len: usize, payload_len: usize) -> Layout {
    let manifest_at = 20;
    let section_at = manifest_at + manifest_len + 32;
    let chunk_len_at = section_at + 1 + 7 + name_len + 8 + 32;
    let payload_at = chunk_len_at + 4;
    let trailer_at = payload_at + payload_len + 4;
    Layout { manifest_len_at: 16, manifest_at, section_at, chunk_len_at, payload_at, trailer_at, end_at: trailer_at + 48 }
}

fn error_of(bytes: &[u8]) -> String {
    verify(bytes).unwrap_err().to_string()
}

#[test]
fn flipped_byte_errors_name_the_damaged_part() {
    // Format 1 hashes chunk payloads into the whole-image digest too; format 2 leaves them to
    // the section digests. Either way every part is checked and named.
    for major in [1, FORMAT_MAJOR] {
        flipped_byte_errors_in(major);
    }
}

fn flipped_byte_errors_in(major: u16) {
    use prost::Message;
    let manifest = sample_manifest();
    let payload = b"payload bytes of the image".to_vec();
    let bytes = craft_image(major, 0, &manifest, &[RawSection::new(1, 0, b"a.img", &payload)]);
    let at = layout(manifest.encoded_len(), 5, payload.len());
    let flip = |pos: usize| {
        let mut damaged = bytes.clone();
        damaged[pos] ^= 0x20;
        error_of(&damaged)
    };
    assert!(flip(12).contains("header"), "{}", flip(12));
    assert!(flip(at.manifest_at + 3).contains("manifest"), "{}", flip(at.manifest_at + 3));
    assert!(flip(at.section_at + 2).contains("\"a.img\" header"), "{}", flip(at.section_at + 2));
    let e = flip(at.payload_at + 3);
    assert!(e.contains("\"a.img\"") && e.contains("digest"), "{e}");
    let e = flip(at.trailer_at + 1);
    assert!(e.contains("\"a.img\"") && e.contains("declares"), "{e}");
    let e = flip(at.trailer_at + 20);
    assert!(e.contains("\"a.img\"") && e.contains("digest"), "{e}");
    let e = flip(at.end_at + 8);
    assert!(e.contains("whole image") || e.contains("table"), "{e}");
    let e = flip(bytes.len() - 1);
    assert!(e.contains("whole image"), "{e}");
    // A damaged chunk length: the stream no longer lines up.
    assert!(verify(
        &{
            let mut d = bytes.clone();
            d[at.chunk_len_at] ^= 0x01;
            d
        }[..]
    )
    .is_err());
    // A payload changed together with its trailer's digest: the whole-image digest, which
    // covers the trailer, catches it.
    let mut forged = bytes.clone();
    forged[at.payload_at] ^= 0x20;
    let digest = blake3::hash(&forged[at.payload_at..at.payload_at + payload.len()]);
    forged[at.trailer_at + 16..at.trailer_at + 48].copy_from_slice(digest.as_bytes());
    let e = error_of(&forged);
    assert!(e.contains("whole image"), "format {major}: {e}");
}

#[test]
fn huge_declared_lengths_fail_fast_without_allocating() {
    use prost::Message;
    let manifest = sample_manifest();
    let bytes = craft_image(1, 0, &manifest, &[RawSection::new(1, 0, b"a.img", b"data")]);
    let at = layout(manifest.encoded_len(), 5, 4);
    let start = Instant::now();

    let mut damaged = bytes.clone();
    damaged[at.manifest_len_at..at.manifest_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = verify(damaged.as_slice()).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // Just under the limit but with nothing behind it: truncated, memory grows only with input.
    let mut damaged = bytes[..at.manifest_at].to_vec();
    damaged[at.manifest_len_at..at.manifest_len_at + 4].copy_from_slice(&(16u32 << 20).to_le_bytes());
    assert!(matches!(verify(damaged.as_slice()).unwrap_err(), Error::Truncated { .. }));

    let mut damaged = bytes.clone();
    damaged[at.section_at + 6..at.section_at + 8].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(verify(damaged.as_slice()).unwrap_err(), Error::TooLarge { .. }));

    // A chunk length above the limit, behind a valid header.
    let mut damaged = bytes.clone();
    damaged[at.chunk_len_at..at.chunk_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = verify(damaged.as_slice()).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // A huge size hint with a valid header digest: read_to_vec's limit holds.
    let mut big = vec![b'x'; 1000];
    big.truncate(1000);
    let bytes = craft_image(1, 0, &manifest, &[RawSection::new(1, 0, b"a.img", &big)]);
    let mut reader = Reader::open(bytes.as_slice()).unwrap();
    let mut payload = reader.next_section().unwrap().unwrap();
    assert!(matches!(payload.read_to_vec(10).unwrap_err(), Error::TooLarge { .. }));

    // A guard against reading what the sizes claim (gigabytes), not a speed target.
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}

#[test]
fn hostile_section_names_are_refused_and_nothing_escapes() {
    let base = tempfile::Builder::new().prefix("ferry-t-image").tempdir().unwrap();
    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let hostile: [&[u8]; 8] = [b"../x", b"/etc/x", b"a\0b", b"a/../../b", b"..", b".", b"sub/x", b"\xff\xfe"];
    for name in hostile {
        let bytes = craft_image(1, 0, &sample_manifest(), &[RawSection::new(1, 0, name, b"evil")]);
        let err = extract_to_dir(bytes.as_slice(), &target).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::UnsafeName { .. }) || text.contains("not UTF-8"), "{name:?}: {text}");
        assert!(verify(bytes.as_slice()).is_err(), "verify accepted {name:?}");
    }
    let everything: Vec<_> = walk(base.path());
    assert_eq!(everything, vec![target.clone()], "something was written");
    assert!(!std::path::Path::new("/etc/x").exists());
}

#[test]
fn extract_never_follows_or_overwrites() {
    let base = tempfile::Builder::new().prefix("ferry-t-image").tempdir().unwrap();
    let target = base.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let victim = base.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::os::unix::fs::symlink(&victim, target.join("inventory.img")).unwrap();
    let bytes = write_image(&sample_manifest(), &sample_sections(), small_options());
    let err = extract_to_dir(bytes.as_slice(), &target).unwrap_err();
    assert!(err.to_string().contains("inventory.img"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");

    // A clean directory gets exactly the CRIU images, byte for byte.
    let clean = base.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    let manifest = extract_to_dir(bytes.as_slice(), &clean).unwrap();
    assert_eq!(manifest.image_id, "img-0001");
    for (kind, name, _, data) in sample_sections() {
        let path = clean.join(&name);
        if kind == SectionKind::CriuImage {
            assert_eq!(std::fs::read(&path).unwrap(), data, "{name}");
        } else {
            assert!(!path.exists(), "{name} is not a CRIU image");
        }
    }
}

#[test]
fn extract_removes_a_file_whose_payload_is_damaged() {
    let base = tempfile::Builder::new().prefix("ferry-t-image").tempdir().unwrap();
    let sections = vec![(SectionKind::CriuImage, "pages-1.img".to_string(), false, vec![7u8; 50_000])];
    let options = WriterOptions { level: None, ..small_options() };
    let mut bytes = write_image(&sample_manifest(), &sections, options);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let err = extract_to_dir(bytes.as_slice(), base.path()).unwrap_err();
    assert!(err.to_string().contains("pages-1.img"), "{err}");
    assert!(!base.path().join("pages-1.img").exists());
}

#[test]
fn writer_refuses_bad_names_duplicates_and_unfinished_sections() {
    let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
    for name in ["", "../x", "/abs", "a\0b", "a/b", ".."] {
        assert!(writer.add_bytes(SectionKind::CriuImage, name, false, b"x").is_err(), "{name:?}");
    }
    writer.add_bytes(SectionKind::CriuImage, "a.img", false, b"x").unwrap();
    assert!(writer.add_bytes(SectionKind::CriuImage, "a.img", false, b"y").is_err());
    let section = writer.start_section(SectionKind::CriuImage, "b.img", false, Some(10)).unwrap();
    drop(section);
    let err = writer.finish().unwrap_err().to_string();
    assert!(err.contains("b.img") && err.contains("not finished"), "{err}");

    let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
    let mut section = writer.start_section(SectionKind::CriuImage, "c.img", false, Some(10)).unwrap();
    section.write_all(b"short").unwrap();
    assert!(section.finish().unwrap_err().to_string().contains("announced"));
}

#[test]
fn trailing_garbage_fails_verify() {
    let mut bytes = write_image(&sample_manifest(), &sample_sections(), small_options());
    bytes.push(0);
    let err = verify(bytes.as_slice()).unwrap_err().to_string();
    assert!(err.contains("after"), "{err}");
}

#[test]
fn inspect_shows_what_a_person_needs() {
    let bytes = write_image(&sample_manifest(), &sample_sections(), small_options());
    let inspection = inspect(bytes.as_slice()).unwrap();
    let text = inspection.to_string();
    for needle in [
        "format 2.0",
        "CRIU 4.2.1",
        "host-a",
        "2026-01-01T00:00:00Z",
        "web1",
        "198.18.0.10, 198.18.0.11",
        "ram=268435456",
        "/sbin/init",
        "nginx: worker",
        "198.18.1.2:51234",
        "ESTABLISHED",
        "02:00:c6:12:02:05",
        "12345678 bytes",
        "pages-1.img",
        "not decoded",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let json = serde_json::to_value(&inspection).unwrap();
    assert_eq!(json["config"]["hostname"], "web1");
    assert_eq!(json["summary"]["processes"][1]["command"], "nginx -g daemon off;");
    assert_eq!(json["sections"][1]["name"], "pages-1.img");
    assert!(json["sections"][1]["ratio"].as_f64().unwrap() > 2.0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
    }
    out
}

#[test]
fn write_dir_takes_regular_files_and_refuses_anything_else() {
    let base = tempfile::Builder::new().prefix("ferry-t-image").tempdir().unwrap();
    let dir = base.path().join("criu");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("b.img"), b"bbb").unwrap();
    std::fs::write(dir.join("a.img"), b"aa").unwrap();
    let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
    let entries = writer.write_dir(&dir).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.img", "b.img"], "sorted by name");
    let image = read_all(writer.finish().unwrap().as_slice(), LIMIT).unwrap();
    assert_eq!(image.sections[1].1, b"bbb");

    std::os::unix::fs::symlink("/etc/passwd", dir.join("c.img")).unwrap();
    let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
    let err = writer.write_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("c.img") && err.contains("not a regular file"), "{err}");
    std::fs::remove_file(dir.join("c.img")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
    assert!(writer.write_dir(&dir).is_err());
    let mut writer = Writer::new(Vec::new(), &sample_manifest(), small_options()).unwrap();
    assert!(writer.write_dir(&base.path().join("missing")).is_err());
}

#[test]
fn out_of_range_writer_options_are_refused() {
    for options in [
        WriterOptions { level: Some(22), ..small_options() },
        WriterOptions { chunk_len: 0, ..small_options() },
        WriterOptions { chunk_len: (64 << 20) + 1, ..small_options() },
        WriterOptions { major: 0, ..small_options() },
        WriterOptions { major: FORMAT_MAJOR + 1, ..small_options() },
    ] {
        assert!(Writer::new(Vec::new(), &sample_manifest(), options.clone()).is_err(), "{options:?}");
    }
}

#[test]
fn large_stored_images_cut_anywhere_are_refused() {
    // Larger than the reader's buffer, so that payload reads go straight to the input.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 239) as u8).collect();
    let sections = vec![(SectionKind::CriuImage, "pages-1.img".to_string(), false, data)];
    let options = WriterOptions { level: None, ..WriterOptions::default() };
    let bytes = write_image(&sample_manifest(), &sections, options);
    for cut in [1_500_000, 2_000_000, 2_500_000, bytes.len() - 100] {
        let err = verify(&bytes[..cut]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "cut at {cut}: {err}");
    }
    let mut damaged = bytes.clone();
    damaged[2_200_000] ^= 1;
    let err = verify(damaged.as_slice()).unwrap_err().to_string();
    assert!(err.contains("pages-1.img") && err.contains("digest"), "{err}");
    assert!(verify(bytes.as_slice()).is_ok());
}
