//! ferry's transfer layer: the framed protocol over one byte stream, the file sync, the ssh
//! transport and the direct data channel. It knows nothing of containers: the pipelines in
//! ferry-migrate drive it (as Cloud Hypervisor's migration protocol knows no VMM).

pub mod datachan;
pub mod error;
pub mod mapped;
pub mod proto;
pub mod sync;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod transport;

pub use error::{Error, Result};
