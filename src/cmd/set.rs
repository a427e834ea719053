//! `set`: hostname, passwords, venet addresses and resource limits live (vzctl semantics: live
//! without --save, persisted with it); capabilities, devices, bridged interfaces, passed-through
//! devices, seccomp, features and the uplink persisted for the next start; name, description,
//! boot settings and the stop timeout saved only; name servers and search domains written into
//! the container's /etc/resolv.conf at once (and at every start once saved).

use super::exit::usage;
use anyhow::Result;
use ferry_runtime::cgroups::DeviceRule;
use ferry_runtime::config::ContainerConfig;
use ferry_runtime::container::{self, Status};
use ferry_runtime::lock::ContainerLock;
use ferry_runtime::Host;

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    pub ctid: String,
    #[arg(long)]
    pub hostname: Option<String>,
    /// USER:PASSWORD; the user is created if missing.
    #[arg(long)]
    pub userpasswd: Vec<String>,
    /// Extra device allowed, TYPE:MAJOR:MINOR[:ACCESS] (e.g. c:10:200:rw); next start.
    #[arg(long)]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub settings: super::settings::SettingsArgs,
    #[command(flatten)]
    pub net: super::opts::NetArgs,
    #[command(flatten)]
    pub res: super::opts::ResArgs,
    /// Capabilities, seccomp and features take effect on the next start (with --save).
    #[command(flatten)]
    pub security: super::opts::SecurityArgs,
    /// Apply a sample config's limits: NAME (samples/NAME.toml beside the host config file) or
    /// a FILE; limit options given here win.
    #[arg(long, value_name = "NAME|FILE")]
    pub applyconfig: Option<String>,
    /// Persist the settings in the container's config.
    #[arg(long)]
    pub save: bool,
}

pub fn set(h: &Host, loaded: &ferry_runtime::host_config::Loaded, mut a: SetArgs) -> Result<u8> {
    let ct = super::ctid(h, &a.ctid)?;
    if let Some(s) = &a.applyconfig {
        a.res = super::applyconfig::merged(loaded, s, &a.res)?;
    }
    let mut cfg = container::load_config(h, &ct)?;
    let lock = ContainerLock::acquire(h, &ct, "set")?;
    let (status, state) = container::status(h, &ct)?;
    let running = status == Status::Running;
    let mut state = state.filter(|_| running);
    if a.hostname.is_none()
        && a.userpasswd.is_empty()
        && a.security.is_empty()
        && a.devices.is_empty()
        && a.net.is_empty()
        && a.res.is_empty()
        && a.settings.is_empty()
    {
        usage!("container {ct}: set: nothing to change; see `ferry set --help`");
    }
    if a.net.has_next_start_changes() && !a.save {
        usage!(
            "container {ct}: set: --netif, --netif_add, --netif-del, --netdev-add, --netdev-del and --uplink take effect at the next start; add --save"
        );
    }
    if a.settings.has_saved_only() && !a.save {
        usage!("container {ct}: set: --name, --description, --onboot, --bootorder and --stop-timeout are kept in the config only; add --save");
    }
    if (!a.net.ipadd.is_empty() || !a.net.ipdel.is_empty() || !a.res.is_empty()) && !running && !a.save {
        usage!("container {ct}: set: container is not running, so addresses and limits without --save change nothing; add --save");
    }
    // Name, description, boot and DNS settings, checked before anything changes.
    let with_settings = a.settings.apply(&cfg)?;
    if let Some(Some(n)) = a.settings.new_name() {
        ferry_runtime::lookup::check_name_free(h, &ct, n)?;
    }
    // The new network and limits, checked before anything changes. A running container's
    // limits change from those in force (earlier live changes stay); --save changes the
    // config's from the config's, so only what is named here reaches it.
    let new_net = a.net.apply(&ct, &cfg.net)?;
    let live_res = container::effective_resources(&cfg, state.as_ref());
    let new_live = a.res.apply(&live_res)?;
    let new_saved = a.res.apply(&cfg.resources)?;
    // What is saved must hold on this host's cgroups at the next start; a running container's
    // live limits are checked against the cgroup it runs in (by set_resources_live).
    // (Limits of a stopped container change only with --save, refused above otherwise.)
    if a.save {
        container::check_resources(h, &new_saved).map_err(|e| super::exit::invalid!("container {ct}: set: {e}; nothing was changed"))?;
    }
    let live_ips: Vec<std::net::IpAddr> =
        state.as_ref().and_then(|s| s.net_objects.as_ref()).and_then(|n| n.venet.as_ref()).map(|v| v.addrs.clone()).unwrap_or_default();
    let ip_add: Vec<std::net::IpAddr> = a.net.ipadd.iter().filter(|x| !live_ips.contains(x)).copied().collect();
    let ip_del: Vec<std::net::IpAddr> = a.net.ipdel_addrs(&live_ips)?.into_iter().filter(|x| live_ips.contains(x)).collect();
    if (!a.security.is_empty() || !a.devices.is_empty()) && !a.save {
        usage!(
            "container {ct}: set: capabilities, seccomp, features and devices cannot change in a running container; add --save (they take effect on the next start)"
        );
    }
    if a.hostname.is_some() && !running && !a.save {
        usage!("container {ct}: set: container is not running, so --hostname without --save changes nothing; add --save");
    }
    // The kind changes only while the container is stopped: its range, root mount and
    // namespaces are those it started with.
    if a.security.userns()?.is_some_and(|u| u.kind() != cfg.security.kind) && status != Status::Stopped {
        return Err(ferry_runtime::Error::already_running(
            ct.as_str(),
            "set",
            format!("--userns changes what container root is on the host, so only while it is stopped: `ferry stop {ct}` first; nothing was changed"),
        )
        .into());
    }
    // Validate everything before changing anything.
    let mut sec = a.security.apply(&cfg.security).map_err(|e| anyhow::anyhow!("container {ct}: set: {e:#}; nothing was changed"))?;
    for d in &a.devices {
        DeviceRule::parse(d)?;
        if !sec.devices.contains(d) {
            sec.devices.push(d.clone());
        }
    }
    if let Some(hn) = &a.hostname {
        ferry_runtime::container::check_hostname(hn)?;
    }
    // An unprivileged container gets the host's nodes of its devices: each must be named and
    // exist here.
    if sec.kind.has_userns() && (!a.devices.is_empty() || sec.kind != cfg.security.kind) {
        ferry_runtime::userns::devices::node_binds(&sec.devices, std::path::Path::new("/dev"))
            .map_err(|e| anyhow::anyhow!("container {ct}: set: {e}; nothing was changed"))?;
    }
    // Limits and addresses first: they are the changes that may still be refused.
    if let Some(st) = state.as_mut() {
        let live_cfg = ContainerConfig { resources: live_res.clone(), ..cfg.clone() };
        let res_changed = new_live != live_res;
        if res_changed {
            container::set_resources_live(h, &live_cfg, st, &new_live)?;
            st.resources = Some(new_live.clone());
        }
        let ips = if !ip_add.is_empty() || !ip_del.is_empty() {
            let ip_cfg = ContainerConfig { net: new_net.clone(), ..live_cfg.clone() };
            container::set_ips_live(h, &ip_cfg, st, &ip_add, &ip_del)
        } else {
            Ok(())
        };
        if let Err(e) = ips {
            // All or nothing: the limits go back too.
            if res_changed {
                let applied = ContainerConfig { resources: new_live.clone(), ..cfg.clone() };
                let _ = container::set_resources_live(h, &applied, st, &live_res);
                st.resources = Some(live_res.clone());
            }
            let _ = st.save(h);
            return Err(e.into());
        }
        // The state records the limits in force, for the next `set`, `list` and a checkpoint.
        if res_changed {
            st.save(h)?;
        }
    } else if a.save && new_saved.diskspace != cfg.resources.diskspace {
        // Stopped: the disk limit lives in the backend (qgroup, image size), not in a cgroup.
        container::set_diskspace_stopped(h, &cfg, new_saved.diskspace)?;
    }
    if let (Some(hn), true) = (&a.hostname, running) {
        container::set_hostname_live(h, &ct, hn)?;
    }
    for up in &a.userpasswd {
        container::set_userpasswd(h, &ct, up)?;
    }
    if a.settings.has_dns() {
        container::set_dns(h, &ct, &with_settings.dns)?;
    }
    if running && !a.save && new_live.diskspace != cfg.resources.diskspace {
        // The disk backend keeps the new size (an image cannot shrink back at the next start),
        // so the config must say so too.
        let mut c = cfg.clone();
        c.resources.diskspace = new_live.diskspace;
        c.save(&h.config_path(&ct))?;
        println!("diskspace is kept by the disk backend across restarts, so it was saved in the config too");
    }
    if a.save {
        cfg.net = new_net;
        cfg.resources = new_saved;
        if running {
            // The disk limit is one (the backend's), whatever was saved before.
            cfg.resources.diskspace = new_live.diskspace;
        }
        if let Some(hn) = &a.hostname {
            cfg.hostname = Some(hn.clone());
        }
        cfg.name = with_settings.name;
        cfg.description = with_settings.description;
        cfg.boot = with_settings.boot;
        cfg.dns = with_settings.dns;
        let sec_changed = sec != cfg.security;
        cfg.security = sec;
        // Takes (or keeps) an unprivileged container's ID range, frees a privileged one's.
        ferry_runtime::userns::pool::save_with_range(h, &mut cfg, &h.config_path(&ct))?;
        if sec_changed && running {
            println!("capabilities/seccomp/features/devices saved; they take effect on the next start (`ferry restart {ct}`)");
        }
        if a.net.has_next_start_changes() && running {
            println!("interfaces, passed-through devices and the uplink saved; they take effect on the next start (`ferry restart {ct}`)");
        }
    }
    drop(lock);
    println!("container {ct}: settings applied{}", if a.save { " and saved" } else { "" });
    Ok(0)
}
