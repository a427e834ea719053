//! Feeds arbitrary bytes to the image reader: it must return (Ok or Err) without panicking,
//! hanging or allocating beyond its limits, through every entry point a CLI uses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry_dump_format::verify(data);
    let _ = ferry_dump_format::inspect(data).map(|i| i.to_string());
    if let Ok(mut reader) = ferry_dump_format::Reader::open(data) {
        while let Ok(Some(mut payload)) = reader.next_section() {
            let _ = payload.read_to_vec(16 << 20);
        }
    }
});
