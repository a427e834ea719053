//! ferry's pipelines: live and offline migration, snapshots, restore-from-image, and the file
//! sync and wire protocol they share.

pub mod checkpoint;
pub mod migration;
pub mod snapshot;
