//! ferry's pipelines: live and offline migration, snapshots, restore-from-image, and the file
//! sync and wire protocol they share.

pub mod checkpoint;
pub mod datachan;
pub mod error;
pub mod evacuate;
pub mod mapped;
pub mod migration;
pub mod proto;
pub mod snapshot;
pub mod sync;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod transport;

pub use error::{Error, Result};
