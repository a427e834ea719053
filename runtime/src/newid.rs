//! A container under a new CTID (`restore --from-image --new-id`, `migrate --new-id`): the
//! config it gets. The name goes unless a new one is given (names are unique on a host), the
//! hostname stays what the processes know, bridged interfaces get MACs of their own (the
//! original may still run on the same segment); addresses are the caller's to change.

use crate::config::ContainerConfig;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::net::names::{format_mac, generate_veth_mac};
use std::net::IpAddr;

/// `cfg` as the container `ctid` named `name`.
pub fn renamed(cfg: &ContainerConfig, ctid: &Ctid, name: Option<&str>) -> Result<ContainerConfig> {
    if let Some(n) = name {
        crate::lookup::check_name(n)?;
    }
    let mut c = cfg.clone();
    c.hostname = Some(cfg.effective_hostname().to_string());
    c.ctid = ctid.clone();
    c.name = name.map(str::to_string);
    for (i, vif) in c.net.netifs.iter_mut().enumerate() {
        vif.mac = format_mac(&generate_veth_mac(ctid, i));
    }
    Ok(c)
}

/// The venet addresses of `cfg` that another container of this host has (in its config, or
/// live while it runs): a clone here must drop or change them first.
pub fn addresses_taken_here(host: &Host, cfg: &ContainerConfig) -> Result<Vec<(IpAddr, Ctid)>> {
    let mut taken = Vec::new();
    for ct in host.list_ctids().map_err(|e| Error::io("read", host.conf_dir(), e))? {
        if ct == cfg.ctid {
            continue;
        }
        let Ok(other) = ContainerConfig::load(&host.config_path(&ct)) else { continue };
        let live: Vec<IpAddr> = crate::state::State::load(host, &ct)
            .ok()
            .flatten()
            .and_then(|s| s.net_objects)
            .and_then(|n| n.venet)
            .map(|v| v.addrs)
            .unwrap_or_default();
        for a in &cfg.net.ipadd {
            if other.net.ipadd.contains(a) || live.contains(a) {
                taken.push((*a, ct.clone()));
            }
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VethIf;

    #[test]
    fn a_new_ctid_keeps_the_hostname_and_gets_its_own_macs() {
        let mut c = ContainerConfig::new(Ctid::new("101").unwrap());
        c.name = Some("web".into());
        c.net.netifs.push(VethIf { name: "eth0".into(), bridge: Some("br0".into()), mac: "02:aa:00:00:00:01".into() });
        c.net.ipadd.push("198.18.1.5".parse().unwrap());
        let n = renamed(&c, &Ctid::new("201").unwrap(), Some("web2")).unwrap();
        assert_eq!((n.ctid.as_str(), n.name.as_deref(), n.hostname.as_deref()), ("201", Some("web2"), Some("101")));
        assert_ne!(n.net.netifs[0].mac, c.net.netifs[0].mac);
        assert_eq!(n.net.ipadd, c.net.ipadd, "addresses are the caller's to change");
        assert_eq!(renamed(&c, &Ctid::new("202").unwrap(), None).unwrap().name, None);
        assert!(renamed(&c, &Ctid::new("202").unwrap(), Some("bad name")).is_err());

        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path().join("data"), d.path().join("run"), "t");
        c.save(&h.config_path(&c.ctid)).unwrap();
        let taken = addresses_taken_here(&h, &n).unwrap();
        assert_eq!(taken, vec![("198.18.1.5".parse().unwrap(), Ctid::new("101").unwrap())]);
        let mut other = n.clone();
        other.net.ipadd = vec!["198.18.1.6".parse().unwrap()];
        assert!(addresses_taken_here(&h, &other).unwrap().is_empty());
    }
}
