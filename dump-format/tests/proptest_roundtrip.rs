//! Generated images: any sections, sizes, levels and chunk sizes round trip; any mutation of a
//! valid image is either refused or read without panicking.

mod common;

use common::*;
use ferry_dump_format::{read_all, verify, SectionKind, WriterOptions};
use proptest::prelude::*;

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        (any::<u8>(), 0usize..200_000).prop_map(|(b, n)| vec![b; n]),
        (0usize..100_000).prop_map(|n| (0..n).map(|i| (i % 97) as u8).collect()),
    ]
}

fn kind() -> impl Strategy<Value = SectionKind> {
    prop_oneof![Just(SectionKind::CriuImage), Just(SectionKind::Config), Just(SectionKind::FileTree),]
}

fn options() -> impl Strategy<Value = WriterOptions> {
    (prop_oneof![Just(None), Just(Some(1)), Just(Some(3)), Just(Some(9)), Just(Some(-5)), Just(Some(19))], 0u32..3, 1usize..70_000, 1u16..=2)
        .prop_map(|(level, workers, chunk_len, major)| WriterOptions { level, workers, multithread_min: 50_000, chunk_len, major })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_sections_round_trip(
        sections in proptest::collection::vec((kind(), any::<bool>(), payload()), 0..5),
        options in options(),
    ) {
        let sections: Vec<Section> = sections
            .into_iter()
            .enumerate()
            .map(|(i, (kind, optional, data))| (kind, format!("s{i}.img"), optional, data))
            .collect();
        let bytes = write_image(&sample_manifest(), &sections, options);
        let image = read_all(bytes.as_slice(), 1 << 30).unwrap();
        prop_assert_eq!(image.sections.len(), sections.len());
        for ((info, data), (kind, name, optional, expected)) in image.sections.iter().zip(&sections) {
            prop_assert_eq!(info.kind, *kind);
            prop_assert_eq!(&info.name, name);
            prop_assert_eq!(info.optional, *optional);
            prop_assert_eq!(data, expected);
        }
        prop_assert!(verify(bytes.as_slice()).is_ok());
    }

    #[test]
    fn mutations_never_panic_and_never_pass(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let bytes = write_image(&sample_manifest(), &sample_sections(), small_options());
        let mut damaged = bytes.clone();
        for (at, mask) in &flips {
            let i = at.index(damaged.len());
            damaged[i] ^= mask;
        }
        if let Some(cut) = cut {
            damaged.truncate(cut.index(damaged.len()));
        }
        if damaged != bytes {
            prop_assert!(verify(damaged.as_slice()).is_err());
        }
    }
}
