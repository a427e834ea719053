//! create, restart, status, destroy, mount, umount (start and stop: `boot`).

use anyhow::Result;
use ferry_runtime::container::{self, CreateOptions, Shutdown, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::Host;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub ctid: String,
    /// A directory tree or a .tar / .tar.zst / .tar.gz archive. scripts/make-template.sh
    /// makes three kinds: `busybox` (a small tree; ferry's keep-alive runs as PID 1),
    /// `debian DIR [PACKAGE...]` (Debian minbase with packages and no init: the keep-alive
    /// runs as PID 1) and `debian-systemd DIR` (a system container: systemd boots it, with cron,
    /// ssh, dbus and redis-server as services; stop timeout 120 s).
    #[arg(long, verbatim_doc_comment)]
    pub template: PathBuf,
    #[arg(long)]
    pub hostname: Option<String>,
    /// What runs as PID 1 (split on spaces; default /sbin/init or a built-in keep-alive).
    #[arg(long)]
    pub init: Option<String>,
    /// What PID 1 is, when ferry should not tell from the template: systemd (a system
    /// container: console, cgroup namespace, API file systems, halts on SIGRTMIN+3),
    /// sysvinit (halts on SIGPWR), busybox (SIGUSR2) or none (SIGTERM).
    #[arg(long, value_name = "systemd|sysvinit|busybox|none")]
    pub init_system: Option<ferry_runtime::config::InitSystem>,
    /// A sample config's limits (vzctl's --config): NAME (samples/NAME.toml beside the host
    /// config file) or a FILE; options given here win.
    #[arg(long = "config", alias = "applyconfig", value_name = "NAME|FILE")]
    pub sample: Option<String>,
    #[command(flatten)]
    pub settings: super::settings::SettingsArgs,
    #[command(flatten)]
    pub net: super::opts::NetArgs,
    #[command(flatten)]
    pub res: super::opts::ResArgs,
    #[command(flatten)]
    pub security: super::opts::SecurityArgs,
}

/// `--timeout`/`--fast` as a way to stop.
pub fn shutdown(timeout: Option<u64>, fast: bool) -> Shutdown {
    if fast {
        Shutdown::Fast
    } else {
        Shutdown::Halt(timeout.map(Duration::from_secs))
    }
}

pub fn create(h: &Host, loaded: &ferry_runtime::host_config::Loaded, a: CreateArgs) -> Result<u8> {
    let ct = super::new_ctid(&a.ctid)?;
    if !a.net.ipdel.is_empty() || !a.net.netif_del.is_empty() || !a.net.netdev_del.is_empty() {
        super::exit::usage!("container {ct}: create: --ipdel, --netif-del and --netdev-del only make sense with `ferry set`");
    }
    let net = a.net.apply(&ct, &Default::default())?;
    let res_args = match &a.sample {
        Some(s) => super::applyconfig::merged(loaded, s, &a.res)?,
        None => a.res.clone(),
    };
    let resources = res_args.apply(&Default::default())?;
    // The host's default kind unless --userns says.
    let base = ferry_runtime::config::Security { kind: loaded.settings.userns.kind(), ..Default::default() };
    let security = a.security.apply(&base).map_err(|e| anyhow::anyhow!("container {ct}: create: {e:#}"))?;
    let settings = a.settings.apply(&ferry_runtime::ContainerConfig::new(ct.clone()))?;
    let lock = ContainerLock::acquire(h, &ct, "create")?;
    let opts = CreateOptions {
        template: a.template,
        hostname: a.hostname,
        init: a.init.map(|s| s.split_whitespace().map(str::to_string).collect()),
        init_system: a.init_system,
        net,
        resources,
        security,
        name: settings.name,
        description: settings.description,
        boot: settings.boot,
        dns: settings.dns,
    };
    match container::create(h, &lock, &opts) {
        Ok(_) => {
            println!("container {ct} created");
            Ok(0)
        }
        Err(e) => {
            // Nothing of a failed create may remain, not even its lock file.
            if !h.config_path(&ct).exists() {
                let _ = std::fs::remove_file(h.lock_path(&ct));
            }
            Err(e.into())
        }
    }
}

pub fn restart(h: &Host, ct: &str, how: Shutdown) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "restart")?;
    let st = container::restart(h, &lock, how)?;
    println!("container {ct} restarted (pid {})", st.pid);
    Ok(0)
}

pub fn status(h: &Host, ct: &str, json: bool) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    super::notices::warn(ferry_migrate::stale::recover_if_interrupted(h, &ct));
    let cfg = container::load_config(h, &ct)?;
    let (st, state) = container::status(h, &ct)?;
    let pid = state.as_ref().map(|s| s.pid);
    let usage = state.as_ref().filter(|_| st == Status::Running).and_then(|s| container::usage(h, &cfg, s).ok());
    // Running: the limits in force (live changes included); else the config's.
    let limits = container::effective_resources(&cfg, state.as_ref().filter(|_| st == Status::Running));
    // Running: the live addresses (set without --save changes them but not the config).
    let live = state
        .as_ref()
        .filter(|_| st == Status::Running)
        .map(|s| s.net_objects.as_ref().and_then(|n| n.venet.as_ref()).map(|v| v.addrs.clone()).unwrap_or_default());
    let ips: Vec<String> = live.unwrap_or_else(|| cfg.net.ipadd.clone()).iter().map(|a| a.to_string()).collect();
    // Running: the isolation it was started or restored with, and what its init shows; else
    // what the next start gives.
    let running = state.as_ref().filter(|_| st == Status::Running);
    let applied = match running.and_then(|s| s.isolation.clone()) {
        Some(a) => Ok(a),
        None => ferry_runtime::isolation::Applied::from_security(&ferry_runtime::sysenv::security(&cfg)),
    };
    let isolation = match &applied {
        Ok(a) => serde_json::to_value(a.summary()).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let observed = running.map(|s| ferry_runtime::isolation::observe(s.pid));
    let suspended = st != Status::Running && h.suspend_image(&ct).exists();
    let userns = cfg.security.id_map.filter(|_| cfg.security.kind.has_userns());
    if json {
        println!(
            "{}",
            serde_json::json!({ "ctid": ct.as_str(), "name": cfg.name, "init_system": cfg.init_system.as_str(), "system": running.and_then(|s| s.system.clone()), "status": st, "suspended": suspended, "pid": pid, "ip": ips,
                "storage": cfg.storage.kind, "limits": limits, "usage": usage, "isolation": isolation, "isolation_observed": observed,
                "userns": userns })
        );
        return Ok(0);
    }
    match pid {
        Some(p) if st == Status::Running => println!("{ct} {st} pid {p}"),
        _ if suspended => println!("{ct} {st} suspended"),
        _ => println!("{ct} {st}"),
    }
    if !ips.is_empty() && usage.is_some() {
        println!("  ip        {}", ips.join(" "));
    }
    if let (Some(m), Some(_)) = (userns, &usage) {
        println!("  userns    {m} (its root is host uid {} and gid {})", m.host_first, m.host_first);
    }
    let r = &limits;
    let lim = |v: Option<u64>| v.map_or("unlimited".to_string(), super::list::human);
    let num = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    if let Some(u) = usage {
        println!(
            "  cputime   {:.2}s  cpu {:.1}% (average since start)  cpulimit {}  cpuunits {}",
            u.cputime,
            u.cpu_percent,
            r.cpulimit.map_or("none".into(), |c| format!("{c}%")),
            r.cpuunits.unwrap_or(1000)
        );
        println!("  memory    {} / {}", super::list::human(u.memory), lim(r.ram));
        println!("  swap      {} / {}", super::list::human(u.swap), lim(r.swap));
        println!("  numproc   {} / {}", u.numproc, num(r.numproc));
        println!("  numfiles  {} open / {} per process", u.numfiles, num(r.numfiles));
        let dl = u.disk_limit.or(r.diskspace);
        println!("  disk      {} / {} ({:?})", u.disk_used.map_or("-".into(), super::list::human), lim(dl), cfg.storage.kind);
        println!("  io        read {}  write {}", super::list::human(u.io_read), super::list::human(u.io_write));
        if let (Ok(a), Some(o)) = (&applied, &observed) {
            let s = a.summary();
            println!(
                "  isolation {} kind, seccomp {} ({} filters in force), caps {}",
                s.kind,
                s.seccomp,
                o.seccomp_filters,
                s.capabilities.join(",")
            );
            println!(
                "            masked {} of {}, read-only {} of {}",
                o.masked.len(),
                s.masked_paths.len(),
                o.readonly.len(),
                s.readonly_paths.len()
            );
        }
        if let Some(sys) = running.and_then(|s| s.system.as_ref()) {
            println!(
                "  system    {}: console {} (`ferry console {ct} --attach`), monitor pid {}",
                cfg.init_system.as_str(),
                sys.console.display(),
                sys.monitor_pid
            );
        }
    }
    // A container that does not run shows one line; its limits are in --json.
    Ok(0)
}

pub fn destroy(h: &Host, ct: &str, force: bool) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "destroy")?;
    container::destroy(h, &lock, force)?;
    println!("container {ct} destroyed");
    Ok(0)
}

pub fn mount(h: &Host, ct: &str) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "mount")?;
    let root = container::mount(h, &lock, &cfg)?;
    println!("container {ct} mounted at {}", root.display());
    Ok(0)
}

pub fn umount(h: &Host, ct: &str) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "umount")?;
    container::umount(h, &lock, &cfg)?;
    println!("container {ct} unmounted");
    Ok(0)
}
