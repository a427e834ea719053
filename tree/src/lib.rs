//! Reading and writing directory trees that someone else controls: a container's files (which
//! its processes change while the host reads them), a tree a migration peer sends, a tree in
//! an image. The host acts as root on them, so nothing it does may be led elsewhere:
//!
//! - every walk and open is relative to a directory fd; paths below it are resolved with
//!   `openat2` and RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//!   RESOLVE_NO_XDEV, or one O_NOFOLLOW component at a time where the kernel lacks openat2
//!   ([`Resolver`]);
//! - what is opened is looked at first through an O_PATH fd (a FIFO does not block, a device
//!   is not opened) and compared with what a scan saw (type, device, inode): anything else is
//!   "changed since the scan" ([`Opened::Changed`]), never followed;
//! - metadata is applied through an fd of the inode itself ([`meta::apply`]), never by path;
//! - regular files are read by their data extents (SEEK_DATA / SEEK_HOLE): holes are never
//!   read;
//! - temporary names are unpredictable and created exclusively.
//!
//! This crate knows nothing of ferry's protocol or containers; it depends on libc only.

mod dir;
pub mod extents;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod meta;
mod node;
mod resolve;
mod stat;
mod sys;
pub mod temp;
pub mod walk;
mod xattr;

pub use dir::{gone, Dir, Opened};
pub use node::Node;
pub use resolve::{check_relative, default_resolver, Resolver};
pub use stat::{Kind, Stat};
pub use xattr::{unsupported as xattrs_unsupported, Xattr};
