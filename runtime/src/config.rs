//! A container's configuration: `<data>/conf/<CTID>.toml`, written atomically.
//!
//! The config is the whole truth about a container that is not its files: what runs as PID 1,
//! its hostname, network, limits, capabilities and devices. It travels with checkpoints and
//! migrations so that a container comes back with the same limits and addresses.

use crate::ctid::Ctid;
use crate::error::{ConfigParseError, Error, Result};
use crate::util::write_atomic;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;

/// Bumped when a field changes meaning; older configs are upgraded on load.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    #[serde(default = "config_version")]
    pub version: u32,
    pub ctid: Ctid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A second name, usable wherever a CTID is (vzctl's --name); never another container's
    /// CTID or name on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for the admin (vzctl's --description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// argv of PID 1. Empty means the built-in keep-alive (see `runtime::init`).
    #[serde(default)]
    pub init: Vec<String>,
    /// What PID 1 is (detected from the template at create, or `--init-system`): how `stop`
    /// asks it to halt, and whether the container is a system container (systemd: the
    /// environment of docs/runtime.md, "System containers").
    #[serde(default, skip_serializing_if = "InitSystem::is_default")]
    pub init_system: InitSystem,
    /// Where the template came from (for `list` and humans; never read back as a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default)]
    pub net: NetConfig,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<SnapshotSchedule>,
    #[serde(default, skip_serializing_if = "Boot::is_default")]
    pub boot: Boot,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// The init a container runs as PID 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    /// Anything else: an application, a shell, ferry's keep-alive. Stopped with SIGTERM.
    #[default]
    None,
    /// systemd: a system container (halts on SIGRTMIN+3).
    Systemd,
    /// SysV init (halts on SIGPWR, through the powerfail entry of its inittab).
    Sysvinit,
    /// BusyBox init (powers off on SIGUSR2).
    Busybox,
}

impl InitSystem {
    pub fn is_default(&self) -> bool {
        *self == InitSystem::None
    }
    pub fn as_str(self) -> &'static str {
        match self {
            InitSystem::None => "none",
            InitSystem::Systemd => "systemd",
            InitSystem::Sysvinit => "sysvinit",
            InitSystem::Busybox => "busybox",
        }
    }
}

impl std::str::FromStr for InitSystem {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(InitSystem::None),
            "systemd" => Ok(InitSystem::Systemd),
            "sysvinit" => Ok(InitSystem::Sysvinit),
            "busybox" => Ok(InitSystem::Busybox),
            _ => Err(format!("unknown init system {s:?}: use systemd, sysvinit, busybox or none")),
        }
    }
}

/// What happens at the host's boot and shutdown, and how long a stop waits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// vzctl's ONBOOT: `true` starts it at boot, `false` never; unset starts it when it ran
    /// before the shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboot: Option<bool>,
    /// Higher starts earlier at boot (and stops later); unset comes last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootorder: Option<u32>,
    /// Seconds `stop` waits after asking init to halt before it kills; unset: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
}

impl Boot {
    pub fn is_default(&self) -> bool {
        *self == Boot::default()
    }
}

/// The container's resolver settings, written into its /etc/resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name server addresses, or `inherit` (the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Search domains, or `inherit` (the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searchdomains: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.searchdomains.is_empty()
    }
}

fn config_version() -> u32 {
    CONFIG_VERSION
}

/// Network of a container: venet addresses, bridged veth interfaces, passed-through devices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// venet (routed) addresses, IPv4 and IPv6, each a /32 or /128 on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipadd: Vec<IpAddr>,
    /// The host's uplink to answer ARP/NDP and announce on; chosen from routes when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Bridged veth interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netifs: Vec<VethIf>,
    /// Host devices moved into the container while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netdevs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VethIf {
    /// Name inside the container (eth0, eth1, ...).
    pub name: String,
    /// Host bridge to attach the outer end to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Fixed MAC of the container end ("02:..."), so it survives restarts and migrations.
    pub mac: String,
}

/// Resource limits, each optional (unset = unlimited). Sizes in bytes, rates in bytes/s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuunits: Option<u64>,
    /// Percent of one CPU (100 = one CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpulimit: Option<u64>,
    /// A cpuset list such as "0-1,3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpumask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numproc: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numfiles: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diskspace: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioprio: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iolimit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iopslimit: Option<u64>,
}

/// The isolation of a container: its kind, and the grants beyond that kind's defaults
/// (capabilities, devices, seccomp, features). `isolation::Isolation` turns it into what
/// start and exec apply; docs/runtime.md has the defaults table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default, skip_serializing_if = "ContainerKind::is_default")]
    pub kind: ContainerKind,
    /// Capabilities added to the default bounding set, e.g. "SYS_TIME" (no CAP_ prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities removed from the default bounding set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Extra device rules: "c:10:200:rw" (type:major:minor:access); minor may be "*".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "SeccompPolicy::is_default")]
    pub seccomp: SeccompPolicy,
    /// `--features nesting:on`: user namespaces (and what they allow) inside the container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nesting: bool,
    /// The unprivileged kind's host ID range (taken from the host's pool when the config is
    /// saved: `userns::pool`); none for the privileged kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_map: Option<crate::userns::IdMap>,
}

/// What container root is on the host. Each kind has its own defaults (docs/runtime.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerKind {
    /// Container root is host root, held in by capabilities, the seccomp filter, masked paths
    /// and its namespaces (no user namespace).
    #[default]
    Privileged,
    /// Container root is an unprivileged user on the host: the container runs in a user
    /// namespace of its own mapping its IDs 0..65535 to a host range (`Security::id_map`),
    /// with its root an idmapped mount of the private area (`--userns on`).
    Unprivileged,
}

impl ContainerKind {
    pub fn is_default(&self) -> bool {
        *self == ContainerKind::default()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Privileged => "privileged",
            ContainerKind::Unprivileged => "unprivileged",
        }
    }
    /// Whether it runs in a user namespace of its own.
    pub fn has_userns(self) -> bool {
        self == ContainerKind::Unprivileged
    }
}

/// The seccomp filter of a container's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompPolicy {
    /// ferry's default profile for the container's kind, capabilities and features.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// The admin's profile (seccompiler's JSON format, docs/runtime.md), kept in the config
    /// so that it travels with the container; `source` is the file it was read from.
    Profile { source: String, json: String },
}

impl SeccompPolicy {
    pub fn is_default(&self) -> bool {
        *self == SeccompPolicy::Default
    }
    /// "default", "unconfined" or "profile FILE".
    pub fn describe(&self) -> String {
        match self {
            SeccompPolicy::Default => "default".into(),
            SeccompPolicy::Unconfined => "unconfined".into(),
            SeccompPolicy::Profile { source, .. } => format!("profile {source}"),
        }
    }
}

/// Which storage backend holds the private area (chosen at create time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A plain directory; bind-mounted at the root.
    #[default]
    Dir,
    /// A btrfs subvolume; disk limit by qgroup.
    Btrfs,
    /// An XFS image on a loop device mounted at the root; grown online.
    Image,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub kind: StorageKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSchedule {
    /// Seconds between snapshots.
    pub every_secs: u64,
    pub keep: u32,
    #[serde(default)]
    pub keep_daily: u32,
}

impl ContainerConfig {
    pub fn new(ctid: Ctid) -> Self {
        ContainerConfig {
            version: CONFIG_VERSION,
            ctid,
            hostname: None,
            name: None,
            description: None,
            init: Vec::new(),
            init_system: InitSystem::None,
            template: None,
            net: NetConfig::default(),
            resources: Resources::default(),
            security: Security::default(),
            storage: StorageConfig::default(),
            snapshot_schedule: None,
            boot: Boot::default(),
            dns: Dns::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read config", path, e))?;
        Self::from_toml(&text).map_err(|source| Error::ConfigFile { path: path.to_path_buf(), source })
    }

    pub fn from_toml(text: &str) -> std::result::Result<Self, ConfigParseError> {
        let cfg: ContainerConfig = toml::from_str(text).map_err(|e| ConfigParseError::Toml(Box::new(e)))?;
        if cfg.version > CONFIG_VERSION {
            return Err(ConfigParseError::TooNew { version: cfg.version, supported: CONFIG_VERSION });
        }
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_toml().as_bytes())
    }

    /// The hostname the container gets: the configured one, else its CTID.
    pub fn effective_hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(self.ctid.as_str())
    }
}

/// Parse sizes such as "64M", "1.5G", "4096", "512K" (binary units; "B" optional).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let err = || format!("invalid size {s:?}: use a number with an optional K, M, G or T suffix (binary units), e.g. 64M");
    if t.is_empty() || t.starts_with('-') {
        return Err(err());
    }
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| err())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("invalid size {s:?}: must be greater than zero"));
    }
    let bytes = v * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Bytes with a binary unit, the way `parse_size` reads them: "64M", "1.5K", "10B".
pub fn format_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v}{}", U[i])
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// Parse rates such as "1M" or "10M/s" into bytes per second.
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    parse_size(s.trim().trim_end_matches("/s"))
}

/// Parse a cpuset list such as "0-1,3" into sorted, distinct CPU numbers.
pub fn parse_cpumask(s: &str) -> std::result::Result<Vec<u32>, String> {
    let err = || format!("invalid cpumask {s:?}: use CPU numbers and ranges such as 0-1,3");
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Err(err());
    }
    for part in s.trim().split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a.parse().map_err(|_| err())?;
        let b: u32 = b.parse().map_err(|_| err())?;
        if a > b || b - a > 65_535 {
            return Err(err());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut c = ContainerConfig::new(Ctid::new("101").unwrap());
        c.hostname = Some("web".into());
        c.init = vec!["/sbin/init".into()];
        c.init_system = InitSystem::Systemd;
        c.net.ipadd.push("198.18.0.100".parse().unwrap());
        c.net.netifs.push(VethIf { name: "eth0".into(), bridge: Some("br0".into()), mac: "02:00:00:00:00:01".into() });
        c.resources.ram = Some(64 << 20);
        c.security.cap_add.push("SYS_TIME".into());
        c.name = Some("web".into());
        c.description = Some("the \"front\" end".into());
        c.boot = Boot { onboot: Some(true), bootorder: Some(10), stop_timeout: Some(30) };
        c.dns.nameservers.push("198.18.0.53".into());
        let t = c.to_toml();
        assert_eq!(ContainerConfig::from_toml(&t).unwrap(), c);
        // Defaults are not written; a profile and nesting are.
        assert!(!t.contains("seccomp") && !t.contains("nesting") && !t.contains("privileged"), "{t}");
        c.security.seccomp = SeccompPolicy::Profile { source: "/etc/p.json".into(), json: "{\"a\": 1}".into() };
        c.security.nesting = true;
        let t = c.to_toml();
        assert_eq!(ContainerConfig::from_toml(&t).unwrap(), c);
        c.security.seccomp = SeccompPolicy::Unconfined;
        assert!(c.to_toml().contains("seccomp = \"unconfined\""));
        assert_eq!(ContainerConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn refuses_newer_and_unknown() {
        assert!(ContainerConfig::from_toml("version = 99\nctid = \"1\"").unwrap_err().to_string().contains("newer"));
        assert!(ContainerConfig::from_toml("ctid = \"1\"\nbogus = 1").is_err());
        assert!(ContainerConfig::from_toml("ctid = \"a/b\"").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_rate("1M/s").unwrap(), 1 << 20);
        for bad in ["", "-1M", "0", "12Q", "M", "abc"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpumasks() {
        assert_eq!(parse_cpumask("0-1,3").unwrap(), vec![0, 1, 3]);
        assert_eq!(parse_cpumask("2").unwrap(), vec![2]);
        assert_eq!(parse_cpumask(" 1,0,1 ").unwrap(), vec![0, 1]);
        for bad in ["", "a", "1-0", "-1", "0-", "1,,2"] {
            assert!(parse_cpumask(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_that_does_not_parse_keeps_its_toml_error() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.toml");
        std::fs::write(&path, "ctid = \"101\"\nbogus = 1\n").unwrap();
        let e = ContainerConfig::load(&path).unwrap_err();
        let Error::ConfigFile { path: p, source: ConfigParseError::Toml(toml) } = &e else { panic!("{e:?}") };
        assert_eq!(p, &path);
        assert!(toml.message().contains("bogus"), "{toml}");
        assert!(e.to_string().starts_with(&format!("{}: ", path.display())), "{e}");
        assert!(e.source().is_some());
        assert_eq!(e.class(), crate::exit::ErrorClass::Failed);

        std::fs::write(&path, "version = 99\nctid = \"101\"\n").unwrap();
        let e = ContainerConfig::load(&path).unwrap_err();
        assert!(matches!(e, Error::ConfigFile { source: ConfigParseError::TooNew { version: 99, .. }, .. }), "{e:?}");
        assert!(e.to_string().contains("config version 99 is newer than this ferry understands (1); upgrade ferry"), "{e}");
    }
}
