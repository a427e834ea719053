//! Options shared by `create` and `set` that live in the config only: the name and the
//! description, the boot settings and the stop timeout, and the resolver settings (which
//! `set` also writes into the container's /etc/resolv.conf at once).

use super::exit::bail_invalid;
use anyhow::Result;
use ferry_runtime::config::ContainerConfig;

#[derive(Debug, Default, Clone, clap::Args)]
pub struct SettingsArgs {
    /// A name usable wherever the CTID is; never another container's CTID or name ("" removes it).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Free text shown by `list -o description` ("" removes it).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Start at the host's boot (yes), never (no); unset: when it ran before the shutdown.
    #[arg(long, value_parser = ["yes", "no"], value_name = "yes|no")]
    pub onboot: Option<String>,
    /// Boot priority: higher starts earlier at boot and stops later at shutdown (unset: last).
    #[arg(long, value_name = "N")]
    pub bootorder: Option<String>,
    /// Seconds `stop` waits for init to halt before killing (0: the default, 10).
    #[arg(long = "stop-timeout", value_name = "SECONDS")]
    pub stop_timeout: Option<String>,
    /// Name server for the container's /etc/resolv.conf, repeatable; `inherit`: the host's.
    #[arg(long, value_name = "IP|inherit")]
    pub nameserver: Vec<String>,
    /// Search domain for the container's /etc/resolv.conf, repeatable; `inherit`: the host's.
    #[arg(long, value_name = "DOMAIN|inherit")]
    pub searchdomain: Vec<String>,
}

impl SettingsArgs {
    /// Settings only the config holds (they need `--save` with `set`).
    pub fn has_saved_only(&self) -> bool {
        self.name.is_some() || self.description.is_some() || self.onboot.is_some() || self.bootorder.is_some() || self.stop_timeout.is_some()
    }

    pub fn has_dns(&self) -> bool {
        !self.nameserver.is_empty() || !self.searchdomain.is_empty()
    }

    /// The new name when one is given (None inside: removed).
    pub fn new_name(&self) -> Option<Option<&str>> {
        self.name.as_deref().map(|n| Some(n).filter(|n| !n.is_empty()))
    }

    /// The resolver settings `cfg` gets: each option replaces its list when given (vzctl:
    /// "all the values set in previous calls are overwritten").
    pub fn dns(&self, cfg: &ContainerConfig) -> Result<ferry_runtime::config::Dns> {
        let mut d = cfg.dns.clone();
        if !self.nameserver.is_empty() {
            d.nameservers = self.nameserver.clone();
        }
        if !self.searchdomain.is_empty() {
            d.searchdomains = self.searchdomain.clone();
        }
        ferry_runtime::dns::check(&d)?;
        Ok(d)
    }

    /// `cfg` with these settings; the name is checked for its form here, for being free by
    /// the caller (it needs the host).
    pub fn apply(&self, cfg: &ContainerConfig) -> Result<ContainerConfig> {
        let mut c = cfg.clone();
        if let Some(n) = self.new_name() {
            if let Some(n) = n {
                ferry_runtime::lookup::check_name(n)?;
            }
            c.name = n.map(str::to_string);
        }
        if let Some(d) = &self.description {
            if d.contains('\n') || d.len() > 1024 {
                bail_invalid!("--description: one line of at most 1024 bytes");
            }
            c.description = Some(d.clone()).filter(|d| !d.is_empty());
        }
        if let Some(o) = &self.onboot {
            c.boot.onboot = Some(o == "yes");
        }
        if let Some(b) = &self.bootorder {
            c.boot.bootorder = match b.trim() {
                "" | "unset" => None,
                n => Some(n.parse().map_err(|_| super::exit::invalid!("--bootorder {b:?}: a whole number 0-{} (higher boots first)", u32::MAX))?),
            };
        }
        if let Some(t) = &self.stop_timeout {
            let secs: u64 = t.trim().parse().map_err(|_| super::exit::invalid!("--stop-timeout {t:?}: whole seconds (0: the default)"))?;
            c.boot.stop_timeout = Some(secs).filter(|s| *s > 0);
        }
        if self.has_dns() {
            c.dns = self.dns(cfg)?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_runtime::Ctid;

    #[test]
    fn settings_apply_and_remove() {
        let cfg = ContainerConfig::new(Ctid::new("101").unwrap());
        let a = SettingsArgs {
            name: Some("web".into()),
            description: Some("front end".into()),
            onboot: Some("yes".into()),
            bootorder: Some("10".into()),
            stop_timeout: Some("30".into()),
            nameserver: vec!["198.18.0.53".into()],
            searchdomain: vec!["example.org".into()],
        };
        let c = a.apply(&cfg).unwrap();
        assert_eq!((c.name.as_deref(), c.description.as_deref()), (Some("web"), Some("front end")));
        assert_eq!((c.boot.onboot, c.boot.bootorder, c.boot.stop_timeout), (Some(true), Some(10), Some(30)));
        assert_eq!(c.dns.nameservers, ["198.18.0.53"]);
        let off = SettingsArgs { name: Some("".into()), description: Some("".into()), stop_timeout: Some("0".into()), ..Default::default() };
        let c2 = off.apply(&c).unwrap();
        assert_eq!((c2.name, c2.description, c2.boot.stop_timeout), (None, None, None));
        assert_eq!(c2.dns, c.dns, "DNS stays unless given");
        for bad in [
            SettingsArgs { bootorder: Some("-1".into()), ..Default::default() },
            SettingsArgs { stop_timeout: Some("soon".into()), ..Default::default() },
            SettingsArgs { name: Some("a b".into()), ..Default::default() },
            SettingsArgs { nameserver: vec!["dns.example".into()], ..Default::default() },
        ] {
            assert!(bad.apply(&cfg).is_err(), "{bad:?}");
        }
    }
}
