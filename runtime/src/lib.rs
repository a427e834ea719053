//! ferry's container runtime core.
//!
//! Synchronous code (no tokio): everything needed to create, start, stop, enter and inspect a
//! container on one host, plus the pieces later stages build on (cgroups with their freezer, the
//! network plumbing and announcements, and CRIU driven over its RPC).
//!
//! A container is a directory tree (the private area) plus namespaces and cgroups around its
//! processes. Every host path and the cgroup parent come from [`Host`], so several simulated
//! hosts can share one machine.

pub mod actions;
pub mod boot;
pub mod capabilities;
pub mod cgroups;
pub mod config;
pub mod container;
pub mod criu;
pub mod ctid;
pub mod dns;
pub mod error;
pub mod events;
pub mod exit;
pub mod hooks;
pub mod host;
pub mod host_config;
pub mod isolation;
pub mod lock;
pub mod lookup;
pub mod metrics;
pub mod net;
pub mod newid;
pub mod proc_stat;
pub mod state;
pub mod storage;
pub mod sysenv;
pub mod template;
pub mod userns;
pub mod util;

pub use config::ContainerConfig;
pub use ctid::Ctid;
pub use error::{Error, Result};
pub use host::Host;
