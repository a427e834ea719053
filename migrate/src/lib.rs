//! ferry's pipelines: live and offline migration, snapshots, restore-from-image; they drive
//! the container runtime and move what they make over the transfer layer (ferry-transfer).

pub mod boot;
pub mod checkpoint;
pub mod error;
pub mod evacuate;
pub mod migration;
pub mod snapshot;
pub mod stale;

pub use error::{Error, Result};
