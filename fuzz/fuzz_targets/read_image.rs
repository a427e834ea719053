//! Feeds arbitrary bytes to the image reader: it must return (Ok or Err) without panicking,
//! hanging or allocating beyond its limits, through every entry point a CLI uses. Fuzzing
//! builds (`cfg(fuzzing)`) accept any digest so that mutations reach the parsers behind them.
#![no_main]

use ferry_dump_format::{SectionKind, TreeReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry_dump_format::verify(data);
    let _ = ferry_dump_format::inspect(data).map(|i| i.to_string());
    if let Ok(mut reader) = ferry_dump_format::Reader::open(data) {
        while let Ok(Some(mut payload)) = reader.next_section() {
            let is_tree = payload.info().kind == SectionKind::FileTree;
            if let Ok(bytes) = payload.read_to_vec(16 << 20) {
                if is_tree {
                    let mut tree = TreeReader::new(bytes.as_slice());
                    let mut buf = [0u8; 4096];
                    while let Ok(Some(_)) = tree.next_entry() {
                        while let Ok(n) = tree.read_content(&mut buf) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    // The tree decoder on its own, too.
    let mut tree = TreeReader::new(data);
    while let Ok(Some(_)) = tree.next_entry() {}
});
