//! User namespaces of unprivileged containers.
//!
//! An unprivileged container's uids and gids 0..[`CONTAINER_IDS`] are host IDs of a range of
//! its own ([`IdMap`]), taken from the host's pool ([`pool`]) and recorded in its config. Its
//! files keep ordinary IDs on disk: its root is an idmapped mount of the private area
//! ([`idmapped`]), so a file root creates inside is owned by 0 in the private area and by the
//! range's first ID through the root mount, and no tree is ever chowned. CRIU dumps the
//! namespace's mapping into `userns.img`; a restore under another range rewrites it
//! ([`criu_image`]).

pub mod criu_image;
pub mod devices;
pub mod id_pool;
pub mod idmapped;
pub mod pool;
pub mod probe;
mod setting;

use serde::{Deserialize, Serialize};
pub use setting::Userns;

/// How many uids (and gids) a container gets: 0..65535 inside, as a Debian system expects
/// (nobody is 65534).
pub const CONTAINER_IDS: u32 = 65_536;

/// A container's mapping: its IDs 0..`count` are the host's `host_first`..`host_first+count`,
/// for uids and gids alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    pub host_first: u32,
    pub count: u32,
}

impl IdMap {
    /// The one line of `/proc/PID/uid_map` (and gid_map) it makes: `0 FIRST COUNT`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.host_first, self.count)
    }

    /// The host ID of container ID `id`, if mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        if id < self.count {
            self.host_first.checked_add(id)
        } else {
            None
        }
    }

    /// The last host ID of the range.
    pub fn host_last(&self) -> u32 {
        self.host_first.saturating_add(self.count.saturating_sub(1))
    }

    pub fn overlaps(&self, other: &IdMap) -> bool {
        self.host_first <= other.host_last() && other.host_first <= self.host_last()
    }
}

/// `0:FIRST:COUNT` (inside:host:count, as `ferry list -o userns` shows it).
impl std::fmt::Display for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0:{}:{}", self.host_first, self.count)
    }
}

/// Make the calling process root of the user namespace it is in (after clone or setns):
/// no supplementary groups, gid and uid 0 inside. Its host uid was 0, which the container's
/// mapping does not hold: until this, the process owns nothing inside (files it created would
/// fail with EOVERFLOW).
pub fn become_root() -> std::result::Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups in the user namespace: {e}"))?;
    let root_g = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g).map_err(|e| format!("setresgid 0 in the user namespace: {e}"))?;
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresuid(root_u, root_u, root_u).map_err(|e| format!("setresuid 0 in the user namespace: {e}"))
}

/// Write the mapping of the user namespace of process `pid` (a child still waiting for it):
/// gid_map first, then uid_map; host root may map any IDs.
pub fn write_maps(pid: i32, map: &IdMap) -> std::io::Result<()> {
    let line = map.map_line();
    for f in ["gid_map", "uid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), &line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_overlaps() {
        let m = IdMap { host_first: 1_000_000, count: CONTAINER_IDS };
        assert_eq!(m.map_line(), "0 1000000 65536\n");
        assert_eq!(m.to_string(), "0:1000000:65536");
        assert_eq!(m.to_host(0), Some(1_000_000));
        assert_eq!(m.to_host(65_535), Some(1_065_535));
        assert_eq!(m.to_host(65_536), None);
        assert_eq!(m.host_last(), 1_065_535);
        let next = IdMap { host_first: 1_065_536, count: CONTAINER_IDS };
        assert!(!m.overlaps(&next) && !next.overlaps(&m));
        let straddle = IdMap { host_first: 1_065_535, count: 2 };
        assert!(m.overlaps(&straddle) && next.overlaps(&straddle));
    }
}
