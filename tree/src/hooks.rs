//! Test hooks (feature `test-hooks`, never in a shipped build).

use std::sync::atomic::Ordering;

use crate::resolve::{self, Resolver};

/// Make every tree opened from now on in this process resolve paths with `resolver` (`None`:
/// what the kernel offers), so that tests can run the per-component fallback on a kernel
/// that has openat2.
pub fn force_resolver(resolver: Option<Resolver>) {
    resolve::FORCED.store(resolver.map_or(0, resolve::encode), Ordering::Relaxed);
}

/// Use the /proc paths for xattrs of names in a directory, as on kernels without the
/// *xattrat calls (before 6.13).
pub fn force_proc_xattrs() {
    crate::sys::NO_XATTRAT.store(true, Ordering::Relaxed);
}
