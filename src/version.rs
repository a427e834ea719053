//! What `ferry --version` prints: ferry's version, the commit it was built from, and the
//! versions of the image format and the migration protocol it writes and reads.

use ferry_dump_format::{upgrade_path_for, FORMAT_MAJOR, FORMAT_MINOR, OLDEST_NATIVE_MAJOR};
use ferry_transfer::proto::{PROTO_MAJOR, PROTO_MINOR};
use std::sync::LazyLock;

/// The git commit (12 hex digits), or "unknown" for a build outside git (see build.rs).
pub const COMMIT: &str = env!("FERRY_GIT_COMMIT");

/// `ferry -V`: the version and the commit.
pub fn short() -> &'static str {
    static SHORT: LazyLock<String> = LazyLock::new(|| format!("{} (commit {COMMIT})", env!("CARGO_PKG_VERSION")));
    &SHORT
}

/// `ferry --version`: [`short`], then one line per format and protocol.
pub fn long() -> &'static str {
    static LONG: LazyLock<String> = LazyLock::new(|| {
        let read: Vec<String> =
            (0..=FORMAT_MAJOR).filter(|m| *m >= OLDEST_NATIVE_MAJOR || upgrade_path_for(*m).is_some()).map(|m| format!("{m}.x")).collect();
        format!(
            "{}\nimage format: writes {FORMAT_MAJOR}.{FORMAT_MINOR}, reads {}\nmigration protocol: speaks {PROTO_MAJOR}.{PROTO_MINOR}, \
             accepts peers speaking {PROTO_MAJOR}.x",
            short(),
            read.join(", ")
        )
    });
    &LONG
}

/// [`long`] on one line (a man page's VERSION section fills its lines into one paragraph).
pub fn long_one_line() -> &'static str {
    static ONE: LazyLock<String> = LazyLock::new(|| long().replace('\n', "; "));
    &ONE
}
