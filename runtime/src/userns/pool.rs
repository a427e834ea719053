//! The host's pool of IDs for unprivileged containers and the ranges taken from it.
//!
//! The pool is the host setting `userns_pool` (docs/host-config.md): `auto` takes root's entry
//! in /etc/subuid and /etc/subgid (the IDs both files give root), else [`DEFAULT_POOL`]; or an
//! explicit `FIRST:COUNT`. A container's range is [`CONTAINER_IDS`] IDs at a multiple of that
//! size from the pool's start (a range from another host is kept when it lies in this pool and
//! is free). The ranges in use are those the host's configs record, the installed ones and
//! those of containers being received by a migration: a range is taken when the config that
//! records it is saved, under one host-wide lock, and freed when that config goes (destroy,
//! `set --userns off`).

pub use super::id_pool::{root_subid, IdPool, IdPoolSetting, DEFAULT_POOL, LOWEST_POOL_ID};
use super::{IdMap, CONTAINER_IDS};
use crate::config::{ContainerConfig, ContainerKind};
use crate::ctid::Ctid;
use crate::error::{Error, IoContext, Result};
use crate::host::Host;
use nix::fcntl::{Flock, FlockArg};
use std::path::Path;

/// A free range of `pool` given the ranges in `used`: `prefer` when it lies in the pool and is
/// free (a container keeps its range where it can), else the lowest free slot.
pub fn pick(pool: IdPool, used: &[IdMap], prefer: Option<IdMap>) -> Option<IdMap> {
    let free = |m: &IdMap| pool.holds(m) && !used.iter().any(|u| u.overlaps(m));
    if let Some(p) = prefer.filter(|p| p.count == CONTAINER_IDS && free(p)) {
        return Some(p);
    }
    (0..pool.slots()).map(|i| IdMap { host_first: pool.first + i * CONTAINER_IDS, count: CONTAINER_IDS }).find(free)
}

/// The ranges the configs of this host record (installed, and being received), but those
/// of `except`.
pub fn used_ranges(host: &Host, except: &Ctid) -> Result<Vec<IdMap>> {
    let mut out = Vec::new();
    for dir in [host.conf_dir(), host.incoming_dir()] {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", dir, e)),
        };
        for e in rd {
            let e = e.ctx("read", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(ct) = name.strip_suffix(".toml") else { continue };
            if ct == except.as_str() || name.starts_with('.') {
                continue;
            }
            // A config that does not parse may still hold a range: refuse rather than give it
            // out twice.
            let cfg = ContainerConfig::load(&e.path()).map_err(|err| Error::IdRangesUnknown(Box::new(err)))?;
            out.extend(cfg.security.id_map);
        }
    }
    Ok(out)
}

/// The host-wide lock around choosing a range and saving the config that records it. Its
/// name holds a character no CTID has, so it is no container's lock.
fn lock(host: &Host) -> Result<Flock<std::fs::File>> {
    host.secure_layout()?;
    let path = host.data_dir.join("locks").join("+userns-pool.lock");
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).ctx("open", &path)?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::sys(format!("lock {}", path.display()), e))
}

fn exhausted(host: &Host, ct: &Ctid, pool: IdPool) -> Error {
    Error::ct(
        ct.as_str(),
        "allocate user IDs",
        format!(
            "the ID pool {pool} of this host has no free range of {CONTAINER_IDS} IDs left ({} containers' worth, all taken in {}): \
             enlarge userns_pool in the host config, destroy an unprivileged container, or use --userns off",
            pool.slots(),
            host.data_dir.display()
        ),
    )
}

/// Save `cfg` at `path` (its config, or its staged config during a migration) with the range
/// its kind needs: an unprivileged container keeps its recorded range when that is free in
/// this host's pool, else gets a new one; a privileged one records none. Under the pool lock,
/// so two containers never get one range.
pub fn save_with_range(host: &Host, cfg: &mut ContainerConfig, path: &Path) -> Result<()> {
    let _guard = lock(host)?;
    assign(host, cfg)?;
    cfg.save(path)
}

/// Give `cfg` its range (see [`save_with_range`]) without saving; the caller holds the lock.
fn assign(host: &Host, cfg: &mut ContainerConfig) -> Result<()> {
    if cfg.security.kind != ContainerKind::Unprivileged {
        cfg.security.id_map = None;
        return Ok(());
    }
    let pool = host.userns_pool.resolve()?;
    let used = used_ranges(host, &cfg.ctid)?;
    cfg.security.id_map = Some(pick(pool, &used, cfg.security.id_map).ok_or_else(|| exhausted(host, &cfg.ctid, pool))?);
    Ok(())
}

/// Whether this host could give `cfg` a range now (a migration's preflight); the error says
/// why not and what to do.
pub fn check_available(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    let mut c = cfg.clone();
    assign(host, &mut c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32) -> IdMap {
        IdMap { host_first: first, count: CONTAINER_IDS }
    }

    #[test]
    fn picks_the_lowest_free_slot_or_keeps_a_free_preferred_range() {
        let pool = IdPool { first: 1_000_000, count: 3 * CONTAINER_IDS };
        assert_eq!(pick(pool, &[], None), Some(range(1_000_000)));
        assert_eq!(pick(pool, &[range(1_000_000)], None), Some(range(1_065_536)));
        // A range that straddles two slots takes both.
        let odd = range(1_000_000 + 100);
        assert_eq!(pick(pool, &[odd], None), Some(range(1_131_072)));
        // Preferred: kept when inside and free, even off the slot grid.
        assert_eq!(pick(pool, &[], Some(odd)), Some(odd));
        assert_eq!(pick(pool, &[range(1_000_000)], Some(range(1_000_000))), Some(range(1_065_536)));
        assert_eq!(pick(pool, &[], Some(range(5_000_000))), Some(range(1_000_000)), "outside the pool");
        // Full.
        let all = [range(1_000_000), range(1_065_536), range(1_131_072)];
        assert_eq!(pick(pool, &all, None), None);
    }

    #[test]
    fn ranges_are_taken_by_saved_configs_and_freed_with_them() {
        let d = tempfile::tempdir().unwrap();
        let pool = IdPool { first: 2_000_000, count: 2 * CONTAINER_IDS };
        let h = Host::new(d.path().join("data"), d.path().join("run"), "t").with_userns_pool(IdPoolSetting::Range(pool));
        let mk = |name: &str| {
            let mut c = ContainerConfig::new(Ctid::new(name).unwrap());
            c.security.kind = ContainerKind::Unprivileged;
            c
        };
        let mut a = mk("a");
        let a_conf = h.config_path(&a.ctid);
        save_with_range(&h, &mut a, &a_conf).unwrap();
        assert_eq!(a.security.id_map, Some(range(2_000_000)));
        // Saving again keeps it (its own range is not "used" by another).
        save_with_range(&h, &mut a, &a_conf).unwrap();
        assert_eq!(a.security.id_map, Some(range(2_000_000)));
        // A container being received holds its range too.
        let mut b = mk("b");
        save_with_range(&h, &mut b, &h.incoming_dir().join("b.toml")).unwrap();
        assert_eq!(b.security.id_map, Some(range(2_065_536)));
        let c = mk("c");
        let e = check_available(&h, &c).unwrap_err().to_string();
        assert!(e.contains("container c") && e.contains("no free range") && e.contains("--userns off"), "{e}");
        // Privileged: no range; removing a config frees its range.
        let mut p = ContainerConfig::new(Ctid::new("p").unwrap());
        p.security.id_map = Some(range(2_000_000));
        let p_conf = h.config_path(&p.ctid);
        save_with_range(&h, &mut p, &p_conf).unwrap();
        assert_eq!(p.security.id_map, None);
        std::fs::remove_file(&a_conf).unwrap();
        check_available(&h, &c).unwrap();
        // A config that does not parse blocks allocation rather than risking a shared range.
        std::fs::write(h.config_path(&Ctid::new("x").unwrap()), "nonsense").unwrap();
        assert!(check_available(&h, &c).unwrap_err().to_string().contains("which user ID ranges"));
    }
}
