use crate::config::{Boot, ContainerConfig, Dns, InitSystem, NetConfig, Resources, Security, StorageKind};
use crate::container::{status, Status};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::ContainerLock;
use std::path::PathBuf;

/// What `ferry create` was asked for.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub template: PathBuf,
    pub hostname: Option<String>,
    /// argv of PID 1; None picks `/sbin/init` or the keep-alive.
    pub init: Option<Vec<String>>,
    /// What PID 1 is; None detects it from the template (`sysenv::detect`).
    pub init_system: Option<InitSystem>,
    /// Network config (venet addresses, bridged interfaces with their MACs, devices).
    pub net: NetConfig,
    /// Resource limits; `diskspace` also picks the disk backend.
    pub resources: Resources,
    /// Isolation beyond the defaults (capabilities, seccomp, features).
    pub security: Security,
    /// Name (checked free by [`create`]), description, boot and resolver settings.
    pub name: Option<String>,
    pub description: Option<String>,
    pub boot: Boot,
    pub dns: Dns,
}

/// Check limits as far as a container that does not run yet allows: values and ranges (CPUs
/// that exist), then whether the host's cgroup layout has the controller each set limit
/// needs (a hybrid host's v2 hierarchy has hardly any: refused here, not ignored at start).
pub fn check_resources(host: &Host, res: &Resources) -> Result<()> {
    let ctx = crate::cgroups::LimitContext { ncpus: crate::cgroups::probe::online_cpus(), ..Default::default() };
    crate::cgroups::limits::validate(res, &ctx)?;
    if !crate::cgroups::limits::needs_a_controller(res) {
        return Ok(());
    }
    let layout = host.cgroup_layout()?;
    let probe = crate::cgroups::Cgroup::in_layout(&layout, host.cgroup_parent.clone());
    crate::cgroups::limits::check_controllers(res, layout.mode, &probe.controllers())
}

/// Check a hostname the kernel and resolvers accept.
pub fn check_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid hostname {h:?}: use letters, digits, '-' and '.' (at most 64 characters)")))
    }
}

fn check_writable(host: &Host) -> Result<()> {
    let d = &host.data_dir;
    std::fs::create_dir_all(d).map_err(|source| Error::DataDirCreate { path: d.clone(), source })?;
    nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).map_err(|source| Error::DataDirNotWritable { path: d.clone(), source })
}

/// Create a container: private area from the template, then its config (atomically). A
/// failure leaves nothing of the container behind.
pub fn create(host: &Host, lock: &ContainerLock, opts: &CreateOptions) -> Result<ContainerConfig> {
    let ct = lock.ctid();
    check_writable(host)?;
    if host.config_path(ct).exists() {
        return Err(Error::Exists {
            ctid: ct.to_string(),
            op: "create",
            msg: "container already exists; destroy it first or pick another CTID".into(),
        });
    }
    if let Some(h) = &opts.hostname {
        check_hostname(h)?;
    }
    crate::lookup::check_new_ctid(host, ct)?;
    if let Some(n) = &opts.name {
        crate::lookup::check_name_free(host, ct, n)?;
    }
    crate::dns::check(&opts.dns)?;
    // Refuse a bad template before anything is made.
    crate::template::template_kind(&opts.template)?;
    check_resources(host, &opts.resources).map_err(|e| Error::ct(ct.as_str(), "create", e.to_string()))?;
    let mut cfg = ContainerConfig::new(ct.clone());
    cfg.hostname = opts.hostname.clone();
    cfg.template = Some(opts.template.display().to_string());
    cfg.net = opts.net.clone();
    cfg.resources = opts.resources.clone();
    crate::isolation::Applied::from_security(&opts.security).map_err(|e| Error::ct(ct.as_str(), "create", e.to_string()))?;
    cfg.security = opts.security.clone();
    cfg.name = opts.name.clone();
    cfg.description = opts.description.clone();
    cfg.boot = opts.boot.clone();
    cfg.dns = opts.dns.clone();
    cfg.storage.kind = crate::storage::backends::choose_kind(&host.data_dir, cfg.resources.diskspace)?;
    check_idmap_support(host, &cfg)?;
    crate::storage::prepare(host, &cfg, &opts.template)?;
    let res = (|| {
        cfg.init = match &opts.init {
            Some(i) if !i.is_empty() => i.clone(),
            _ => default_init(host, &cfg).ok_or_else(|| {
                Error::ct(ct.as_str(), "create", "the template has neither /sbin/init nor /bin/sh: give the command PID 1 runs with --init")
            })?,
        };
        cfg.init_system = match opts.init_system {
            Some(i) => i,
            None => detect_init(host, &cfg),
        };
        // vzctl's stop timeout for a whole system: systemd stops every service in order.
        if cfg.init_system == InitSystem::Systemd && cfg.boot.stop_timeout.is_none() {
            cfg.boot.stop_timeout = Some(SYSTEM_STOP_TIMEOUT);
        }
        // An unprivileged container's ID range is taken as its config is saved.
        crate::userns::pool::save_with_range(host, &mut cfg, &host.config_path(ct))?;
        Ok(cfg.clone())
    })();
    if res.is_err() {
        let _ = crate::storage::remove(host, &cfg);
    }
    res
}

/// An unprivileged container's root is an idmapped mount of its private area: refuse one
/// whose private area would sit on a filesystem without them (an image backend's XFS has
/// them), before anything is made.
fn check_idmap_support(host: &Host, cfg: &ContainerConfig) -> Result<()> {
    if !cfg.security.kind.has_userns() || cfg.storage.kind == StorageKind::Image {
        return Ok(());
    }
    let dir = host.data_dir.join("private");
    crate::util::private_dir(&dir)?;
    crate::userns::idmapped::probe(&dir).map_err(|e| {
        Error::ct(
            cfg.ctid.as_str(),
            "create",
            format!(
                "an unprivileged container's root is an idmapped mount, which the filesystem of {} does not offer here ({e}): give --userns off, or keep the data dir on ext4, xfs or btrfs",
                dir.display()
            ),
        )
    })
}

/// The stop timeout (seconds) a system container gets when none is given: vzctl's.
pub const SYSTEM_STOP_TIMEOUT: u64 = 120;

/// What `cfg.init` starts, looked up in the container's files.
fn detect_init(host: &Host, cfg: &ContainerConfig) -> InitSystem {
    if cfg.storage.kind != StorageKind::Image {
        return crate::sysenv::detect::detect(&host.private_dir(&cfg.ctid), &cfg.init);
    }
    let Ok(root) = crate::storage::mount_root_unmapped(host, cfg) else { return InitSystem::None };
    let init = crate::sysenv::detect::detect(&root, &cfg.init);
    let _ = crate::storage::unmount_root(host, cfg);
    init
}

/// PID 1's default command, looked up in the container's files (an image is mounted for it).
fn default_init(host: &Host, cfg: &ContainerConfig) -> Option<Vec<String>> {
    if cfg.storage.kind != StorageKind::Image {
        return crate::template::default_init(&host.private_dir(&cfg.ctid));
    }
    let root = crate::storage::mount_root_unmapped(host, cfg).ok()?;
    let init = crate::template::default_init(&root);
    let _ = crate::storage::unmount_root(host, cfg);
    init
}

/// Remove a stopped container: private area, root, config, run dir, logs and dumps. With
/// `force` a running one is stopped first.
pub fn destroy(host: &Host, lock: &ContainerLock, force: bool) -> Result<()> {
    let ct = lock.ctid();
    let cfg = crate::container::load_config(host, ct)?;
    match status(host, ct)?.0 {
        Status::Stopped => {}
        _ if force => crate::container::stop(host, lock, &cfg, std::time::Duration::from_secs(10))?,
        Status::Running => {
            return Err(Error::already_running(
                ct.as_str(),
                "destroy",
                format!("container is running; stop it first (`ferry stop {ct}`) or pass --force"),
            ))
        }
        Status::Mounted => crate::container::teardown(host, &cfg, None)?,
    }
    crate::storage::remove(host, &cfg)?;
    for d in [host.run_ct_dir(ct), host.log_dir(ct), host.dump_dir(ct)] {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", d, e)),
        }
    }
    let conf = host.config_path(ct);
    std::fs::remove_file(&conf).map_err(|e| Error::io("remove config", conf, e))?;
    // The lock file goes last; we still hold its flock, which is harmless on an unlinked file.
    let _ = std::fs::remove_file(host.lock_path(ct));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["web", "web-1.example.org", "a"] {
            check_hostname(ok).unwrap();
        }
        for bad in ["", "-a", "a..b", "a b", "a_b", &"x".repeat(65)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
