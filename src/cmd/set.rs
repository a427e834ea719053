//! `set`: hostname, passwords, venet addresses and resource limits live (vzctl semantics: live
//! without --save, persisted with it); capabilities, devices, bridged interfaces, passed-through
//! devices, seccomp, features and the uplink persisted for the next start; name, description,
//! boot settings and the stop timeout saved only; name servers and search domains written into
//! the container's /etc/resolv.conf at once (and at every start once saved).

use super::exit::usage;
use anyhow::Result;
use ferry_runtime::cgroups::DeviceRule;
use ferry_runtime::container::set_plan::{self, Asked, HostLiveSet, LiveChange};
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
    let asked = Asked {
        hostname: a.hostname.is_some(),
        userpasswd: !a.userpasswd.is_empty(),
        security: !a.security.is_empty() || !a.devices.is_empty(),
        net_next_start: a.net.has_next_start_changes(),
        addresses: !a.net.ipadd.is_empty() || !a.net.ipdel.is_empty(),
        limits: !a.res.is_empty(),
        saved_only: a.settings.has_saved_only(),
        dns: a.settings.has_dns(),
        save: a.save,
    };
    if let Err(refused) = asked.check(&ct, running) {
        usage!("{refused}");
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
    let (ip_add, ip_del) = set_plan::address_changes(&live_ips, &a.net.ipadd, &a.net.ipdel_addrs(&live_ips)?);
    set_plan::check_kind_change(&ct, cfg.security.kind, a.security.userns()?.map(|u| u.kind()), status == Status::Stopped)?;
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
        let change = LiveChange { in_force: &live_res, new: &new_live, net: &new_net, ip_add: &ip_add, ip_del: &ip_del };
        set_plan::apply_live(&HostLiveSet(h), &cfg, st, &change)?;
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
    if set_plan::disk_limit_to_save(&cfg, &new_live, running, a.save) {
        let mut c = cfg.clone();
        c.resources.diskspace = new_live.diskspace;
        c.save(&h.config_path(&ct))?;
        println!("diskspace is kept by the disk backend across restarts, so it was saved in the config too");
    }
    if a.save {
        cfg.net = new_net;
        cfg.resources = set_plan::saved_resources(&new_saved, &new_live, running);
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
