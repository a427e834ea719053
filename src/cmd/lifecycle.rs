//! create, start, stop, restart, status, destroy.

use anyhow::Result;
use ferry_runtime::container::{self, CreateOptions, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::Host;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub ctid: String,
    /// A directory tree or a .tar / .tar.zst / .tar.gz archive.
    #[arg(long)]
    pub template: PathBuf,
    #[arg(long)]
    pub hostname: Option<String>,
    /// What runs as PID 1 (split on spaces; default /sbin/init or a built-in keep-alive).
    #[arg(long)]
    pub init: Option<String>,
    #[command(flatten)]
    pub net: super::opts::NetArgs,
    #[command(flatten)]
    pub res: super::opts::ResArgs,
    #[command(flatten)]
    pub security: super::opts::SecurityArgs,
}

pub fn create(h: &Host, a: CreateArgs) -> Result<u8> {
    let ct = super::ctid(&a.ctid)?;
    if !a.net.ipdel.is_empty() || !a.net.netif_del.is_empty() || !a.net.netdev_del.is_empty() {
        anyhow::bail!("container {ct}: create: --ipdel, --netif-del and --netdev-del only make sense with `ferry set`");
    }
    let net = a.net.apply(&ct, &Default::default())?;
    let resources = a.res.apply(&Default::default())?;
    let security = a.security.apply(&Default::default()).map_err(|e| anyhow::anyhow!("container {ct}: create: {e:#}"))?;
    let lock = ContainerLock::acquire(h, &ct, "create")?;
    let opts = CreateOptions {
        template: a.template,
        hostname: a.hostname,
        init: a.init.map(|s| s.split_whitespace().map(str::to_string).collect()),
        net,
        resources,
        security,
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

pub fn start(h: &Host, ct: &str) -> Result<u8> {
    let ct = super::ctid(ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "start")?;
    // An interrupted migration may have left it dumped: bring it back from its dump rather
    // than boot it afresh (the dump would otherwise be restored over it later).
    let was_running = container::status(h, &ct)?.0 == Status::Running;
    super::checkpoint::thaw_stale(h, &lock);
    if let ((Status::Running, Some(st)), false) = (container::status(h, &ct)?, was_running) {
        println!("container {ct} is running (pid {})", st.pid);
        return Ok(0);
    }
    let st = container::start(h, &lock, &cfg)?;
    println!("container {ct} started (pid {})", st.pid);
    Ok(0)
}

pub fn stop(h: &Host, ct: &str, timeout: u64) -> Result<u8> {
    let ct = super::ctid(ct)?;
    let cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "stop")?;
    super::checkpoint::thaw_stale(h, &lock);
    container::stop(h, &lock, &cfg, Duration::from_secs(timeout))?;
    println!("container {ct} stopped");
    Ok(0)
}

pub fn restart(h: &Host, ct: &str, timeout: u64) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "restart")?;
    let st = container::restart(h, &lock, Duration::from_secs(timeout))?;
    println!("container {ct} restarted (pid {})", st.pid);
    Ok(0)
}

pub fn status(h: &Host, ct: &str, json: bool) -> Result<u8> {
    let ct = super::ctid(ct)?;
    super::migrate::recover_if_interrupted(h, &ct);
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
        None => ferry_runtime::isolation::Applied::from_security(&cfg.security),
    };
    let isolation = match &applied {
        Ok(a) => serde_json::to_value(a.summary()).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let observed = running.map(|s| ferry_runtime::isolation::observe(s.pid));
    if json {
        println!(
            "{}",
            serde_json::json!({ "ctid": ct.as_str(), "status": st, "pid": pid, "ip": ips, "storage": cfg.storage.kind,
                "limits": limits, "usage": usage, "isolation": isolation, "isolation_observed": observed })
        );
        return Ok(0);
    }
    match pid {
        Some(p) if st == Status::Running => println!("{ct} {st} pid {p}"),
        _ => println!("{ct} {st}"),
    }
    if !ips.is_empty() && usage.is_some() {
        println!("  ip        {}", ips.join(" "));
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
    }
    // A container that does not run shows one line; its limits are in --json.
    Ok(0)
}

pub fn destroy(h: &Host, ct: &str, force: bool) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "destroy")?;
    container::destroy(h, &lock, force)?;
    println!("container {ct} destroyed");
    Ok(0)
}
