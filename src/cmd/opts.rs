//! Network and resource options shared by `create` and `set`.

use super::exit::{bail_invalid, invalid};
use anyhow::Result;
use ferry_runtime::config::{parse_rate, parse_size, NetConfig, Resources, VethIf};
use ferry_runtime::net::names::{format_mac, parse_mac};
use ferry_runtime::Ctid;
use std::net::IpAddr;

#[derive(Debug, Default, Clone, clap::Args)]
pub struct NetArgs {
    /// venet (routed) address, IPv4 or IPv6; repeatable. Live on a running container.
    #[arg(long, value_name = "IP")]
    pub ipadd: Vec<IpAddr>,
    /// Remove a venet address ("all" removes every one); repeatable. Live on a running container.
    #[arg(long, value_name = "IP|all")]
    pub ipdel: Vec<String>,
    /// Bridged interface NAME[:BRIDGE][,mac=MAC] (NAME inside the container, e.g. eth0); the
    /// MAC is generated from the CTID unless given. Takes effect at the next start.
    #[arg(long, value_name = "NAME[:BRIDGE][,mac=MAC]")]
    pub netif: Vec<String>,
    /// Bridged interface in vzctl's form IFNAME[,MAC,HOST_IFNAME,HOST_MAC,BRIDGE] (empty
    /// parts are generated; ferry names the host end itself, so HOST_IFNAME and HOST_MAC stay
    /// empty). Takes effect at the next start.
    #[arg(long = "netif_add", value_name = "IFNAME[,MAC,,,BRIDGE]")]
    pub netif_add: Vec<String>,
    /// Remove a bridged interface by its inner name ("all": every one); next start.
    #[arg(long, alias = "netif_del", value_name = "NAME|all")]
    pub netif_del: Vec<String>,
    /// Pass a host device into the container while it runs; next start.
    #[arg(long, alias = "netdev_add", value_name = "DEV")]
    pub netdev_add: Vec<String>,
    /// Stop passing a host device through; next start.
    #[arg(long, alias = "netdev_del", value_name = "DEV")]
    pub netdev_del: Vec<String>,
    /// Host interface that answers ARP/NDP for venet addresses and announces them (default:
    /// chosen from the host's routes); next start.
    #[arg(long, value_name = "DEV")]
    pub uplink: Option<String>,
}

impl NetArgs {
    /// Whether anything beyond --ipadd/--ipdel is asked (those only act at the next start).
    pub fn has_next_start_changes(&self) -> bool {
        !self.netif.is_empty()
            || !self.netif_add.is_empty()
            || !self.netif_del.is_empty()
            || !self.netdev_add.is_empty()
            || !self.netdev_del.is_empty()
            || self.uplink.is_some()
    }

    /// The addresses --ipdel names, given the current ones ("all" = every one).
    pub fn ipdel_addrs(&self, current: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for d in &self.ipdel {
            if d == "all" {
                out.extend_from_slice(current);
            } else {
                out.push(d.parse().map_err(|_| invalid!("--ipdel {d:?}: not an IP address (or \"all\")"))?);
            }
        }
        Ok(out)
    }

    /// `net` with these changes applied (validated: names, MACs, duplicates).
    pub fn apply(&self, ct: &Ctid, net: &NetConfig) -> Result<NetConfig> {
        let mut n = net.clone();
        let del = self.ipdel_addrs(&n.ipadd)?;
        n.ipadd.retain(|a| !del.contains(a));
        for a in &self.ipadd {
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                bail_invalid!("--ipadd {a}: not a usable unicast address");
            }
            if !n.ipadd.contains(a) {
                n.ipadd.push(*a);
            }
        }
        for name in &self.netif_del {
            if name == "all" {
                n.netifs.clear();
                continue;
            }
            let before = n.netifs.len();
            n.netifs.retain(|v| &v.name != name);
            if n.netifs.len() == before {
                bail_invalid!("--netif-del {name}: the container has no such interface");
            }
        }
        let vz: Vec<String> = self.netif_add.iter().map(|s| vzctl_netif(s)).collect::<Result<_>>()?;
        for spec in self.netif.iter().chain(&vz) {
            let mut v = parse_netif(spec)?;
            if n.netifs.iter().any(|x| x.name == v.name) {
                bail_invalid!("--netif {spec}: interface {} already exists; remove it first with --netif-del {}", v.name, v.name);
            }
            if v.mac.is_empty() {
                // Stable: derived from the CTID and the interface's slot, skipping MACs in use.
                let mut i = n.netifs.len();
                loop {
                    let m = format_mac(&ferry_runtime::net::generate_veth_mac(ct, i));
                    if !n.netifs.iter().any(|x| x.mac == m) {
                        v.mac = m;
                        break;
                    }
                    i += 1;
                }
            }
            n.netifs.push(v);
        }
        for d in &self.netdev_del {
            let before = n.netdevs.len();
            n.netdevs.retain(|x| x != d);
            if n.netdevs.len() == before {
                bail_invalid!("--netdev-del {d}: the container has no such device passed through");
            }
        }
        for d in &self.netdev_add {
            check_ifname(d, "--netdev-add")?;
            if !n.netdevs.contains(d) {
                n.netdevs.push(d.clone());
            }
        }
        if let Some(u) = &self.uplink {
            check_ifname(u, "--uplink")?;
            n.uplink = Some(u.clone());
        }
        Ok(n)
    }
}

fn check_ifname(s: &str, opt: &str) -> Result<()> {
    if s.is_empty() || s.len() > 15 || s.contains(['/', ' ', ':', ',']) || s == "." || s == ".." {
        bail_invalid!("{opt} {s:?}: not a valid interface name (1-15 characters, no '/', ':', ',' or spaces)");
    }
    Ok(())
}

/// vzctl's `--netif_add IFNAME[,MAC,HOST_IFNAME,HOST_MAC,BRIDGE]` as ferry's
/// `NAME[:BRIDGE][,mac=MAC]`.
pub fn vzctl_netif(spec: &str) -> Result<String> {
    let f: Vec<&str> = spec.split(',').collect();
    if f.len() > 5 {
        bail_invalid!("--netif_add {spec}: at most IFNAME,MAC,HOST_IFNAME,HOST_MAC,BRIDGE");
    }
    let part = |i: usize| f.get(i).map(|s| s.trim()).unwrap_or("");
    for (i, what) in [(2, "HOST_IFNAME"), (3, "HOST_MAC")] {
        if !part(i).is_empty() {
            bail_invalid!(
                "--netif_add {spec}: ferry names and addresses the host end itself (fe<ctid>_<n>, a fixed MAC), so {what} must stay empty, e.g. eth0,,,,br0"
            );
        }
    }
    let mut out = part(0).to_string();
    if !part(4).is_empty() {
        out.push_str(&format!(":{}", part(4)));
    }
    if !part(1).is_empty() {
        out.push_str(&format!(",mac={}", part(1)));
    }
    Ok(out)
}

/// NAME[:BRIDGE][,mac=MAC]; an empty `mac` means "generate".
pub fn parse_netif(spec: &str) -> Result<VethIf> {
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let (name, bridge) = match head.split_once(':') {
        Some((n, b)) => (n, Some(b.to_string())),
        None => (head, None),
    };
    check_ifname(name, "--netif")?;
    if let Some(b) = &bridge {
        check_ifname(b, "--netif bridge")?;
    }
    let mut mac = String::new();
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => {
                let parsed =
                    parse_mac(m).ok_or_else(|| invalid!("--netif {spec}: invalid MAC {m:?}; use six hex pairs such as 02:00:00:12:34:56"))?;
                if parsed[0] & 1 == 1 {
                    bail_invalid!("--netif {spec}: MAC {m} is a multicast address; the first byte must be even (e.g. 02:...)");
                }
                mac = format_mac(&parsed);
            }
            _ => bail_invalid!("--netif {spec}: unknown part {p:?}; the form is NAME[:BRIDGE][,mac=MAC]"),
        }
    }
    Ok(VethIf { name: name.to_string(), bridge, mac })
}

#[derive(Debug, Default, Clone, clap::Args)]
pub struct ResArgs {
    /// CPU weight, OpenVZ scale (default 1000).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub cpuunits: Option<String>,
    /// Hard CPU cap in percent of one CPU (100 = one CPU; 0 lifts it, as vzctl).
    #[arg(long, allow_hyphen_values = true, value_name = "PCT")]
    pub cpulimit: Option<String>,
    /// CPUs the container may run on, e.g. 0-1,3 (`all` lifts it).
    #[arg(long, allow_hyphen_values = true, value_name = "LIST")]
    pub cpumask: Option<String>,
    /// At most N CPUs' worth of time at once.
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub cpus: Option<String>,
    /// Memory limit, e.g. 512M.
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub ram: Option<String>,
    /// Swap on top of --ram.
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub swap: Option<String>,
    /// Processes and threads (vzctl's BARRIER:LIMIT takes the LIMIT).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub numproc: Option<String>,
    /// Open files per process (RLIMIT_NOFILE; see docs/resources.md).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub numfiles: Option<String>,
    /// Hard limit on the container's files, e.g. 10G (needs the btrfs or image backend).
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub diskspace: Option<String>,
    /// Relative disk I/O weight 0-7 (default 4).
    #[arg(long, allow_hyphen_values = true, value_name = "0-7")]
    pub ioprio: Option<String>,
    /// Disk bandwidth cap, read and write each, e.g. 10M (bytes per second; 0 lifts it).
    #[arg(long, allow_hyphen_values = true, value_name = "RATE")]
    pub iolimit: Option<String>,
    /// Disk I/O operations per second, read and write each (0 lifts it).
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub iopslimit: Option<String>,
}

/// vzctl's BARRIER:LIMIT for a limit ferry has one value of: the limit.
fn limit_part(v: &str) -> &str {
    v.rsplit_once(':').map_or(v, |(_, l)| l)
}

fn parse_count(opt: &str, v: &str) -> Result<u64> {
    let v = limit_part(v);
    let n: i128 = v.trim().parse().map_err(|_| invalid!("--{opt} {v:?}: not a whole number"))?;
    if n <= 0 {
        bail_invalid!("--{opt} {v}: must be greater than zero");
    }
    u64::try_from(n).map_err(|_| invalid!("--{opt} {v}: too large"))
}

impl ResArgs {
    /// Every option by its name (samples are written with them).
    pub fn slots(&mut self) -> [(&'static str, &mut Option<String>); 12] {
        [
            ("cpuunits", &mut self.cpuunits),
            ("cpulimit", &mut self.cpulimit),
            ("cpumask", &mut self.cpumask),
            ("cpus", &mut self.cpus),
            ("ram", &mut self.ram),
            ("swap", &mut self.swap),
            ("numproc", &mut self.numproc),
            ("numfiles", &mut self.numfiles),
            ("diskspace", &mut self.diskspace),
            ("ioprio", &mut self.ioprio),
            ("iolimit", &mut self.iolimit),
            ("iopslimit", &mut self.iopslimit),
        ]
    }

    /// These options, with those not given taken from `fallback`.
    pub fn or(mut self, mut fallback: ResArgs) -> ResArgs {
        for ((_, mine), (_, theirs)) in self.slots().into_iter().zip(fallback.slots()) {
            if mine.is_none() {
                *mine = theirs.take();
            }
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        [
            &self.cpuunits,
            &self.cpulimit,
            &self.cpumask,
            &self.cpus,
            &self.ram,
            &self.swap,
            &self.numproc,
            &self.numfiles,
            &self.diskspace,
            &self.ioprio,
            &self.iolimit,
            &self.iopslimit,
        ]
        .iter()
        .all(|o| o.is_none())
    }

    /// `res` with these options applied; units and signs checked here, ranges and host facts
    /// by `limits::validate` later. `unlimited` lifts any limit (vzctl's word); a bare number
    /// for --diskspace or --iolimit is refused, since vzctl read those in KiB and MB/s.
    pub fn apply(&self, res: &Resources) -> Result<Resources> {
        let mut r = res.clone();
        let size = |opt: &str, v: &str| parse_size(v).map_err(|e| invalid!("--{opt}: {e}"));
        fn lift<T>(slot: &mut Option<T>, v: &str, parse: impl FnOnce(&str) -> Result<T>) -> Result<()> {
            *slot = if is_unlimited(v) { None } else { Some(parse(v)?) };
            Ok(())
        }
        if let Some(v) = &self.cpuunits {
            lift(&mut r.cpuunits, v, |v| parse_count("cpuunits", v))?;
        }
        if let Some(v) = &self.cpulimit {
            let v = zero_is_unlimited(v);
            lift(&mut r.cpulimit, v, |v| parse_count("cpulimit", v.trim_end_matches('%')))?;
        }
        if let Some(v) = &self.cpumask {
            // vzctl's `all`: every CPU, i.e. no mask.
            let v = if v.trim() == "all" { "unlimited" } else { v.as_str() };
            lift(&mut r.cpumask, v, |v| {
                ferry_runtime::config::parse_cpumask(v).map_err(|e| invalid!("--cpumask: {e}"))?;
                Ok(v.trim().to_string())
            })?;
        }
        if let Some(v) = &self.cpus {
            lift(&mut r.cpus, v, |v| parse_count("cpus", v))?;
        }
        if let Some(v) = &self.ram {
            lift(&mut r.ram, v, |v| size("ram", v))?;
            if r.ram.is_none() {
                // Swap is limited on top of ram: with ram lifted, so is swap.
                r.swap = None;
            }
        }
        if let Some(v) = &self.swap {
            // 0 is meaningful for swap: no swap at all.
            lift(&mut r.swap, v, |v| if v.trim() == "0" { Ok(0) } else { size("swap", v) })?;
        }
        if let Some(v) = &self.numproc {
            lift(&mut r.numproc, v, |v| parse_count("numproc", v))?;
        }
        if let Some(v) = &self.numfiles {
            lift(&mut r.numfiles, v, |v| parse_count("numfiles", v))?;
        }
        if let Some(v) = &self.diskspace {
            lift(&mut r.diskspace, v, |v| {
                let v = limit_part(v);
                refuse_bare_number("diskspace", v, "10G or 10485760K", "KiB")?;
                size("diskspace", v)
            })?;
        }
        if let Some(v) = &self.ioprio {
            lift(&mut r.ioprio, v, |v| {
                let p: i64 = v.trim().parse().map_err(|_| invalid!("--ioprio {v:?}: use a number 0-7"))?;
                if !(0..=7).contains(&p) {
                    bail_invalid!("--ioprio {v}: out of range; use 0 (lowest) .. 7 (highest)");
                }
                Ok(p as u8)
            })?;
        }
        if let Some(v) = &self.iolimit {
            let v = zero_is_unlimited(v);
            lift(&mut r.iolimit, v, |v| {
                refuse_bare_number("iolimit", v, "10M (bytes per second)", "MB/s")?;
                parse_rate(v).map_err(|e| invalid!("--iolimit: {e}"))
            })?;
        }
        if let Some(v) = &self.iopslimit {
            lift(&mut r.iopslimit, zero_is_unlimited(v), |v| parse_count("iopslimit", v))?;
        }
        Ok(r)
    }
}

/// vzctl read 0 as "no limit" for --cpulimit, --iolimit and --iopslimit (a limit of nothing
/// is no use): so does ferry.
fn zero_is_unlimited(v: &str) -> &str {
    let t = v.trim().trim_end_matches('%');
    if !t.is_empty() && t.bytes().all(|b| b == b'0') {
        "unlimited"
    } else {
        v
    }
}

/// `unlimited` (any case) lifts a limit.
fn is_unlimited(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("unlimited")
}

/// vzctl read a bare number for this option in `vz_unit`, ferry in bytes: a bare number is
/// refused rather than guessed.
fn refuse_bare_number(opt: &str, v: &str, example: &str, vz_unit: &str) -> Result<()> {
    if !v.trim().is_empty() && v.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        bail_invalid!(
            "--{opt} {v}: give a unit suffix (K, M, G, T), e.g. {example}: a bare number meant {vz_unit} to vzctl and bytes to ferry; or `unlimited`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netif_specs() {
        let v = parse_netif("eth0:br0,mac=02:AA:00:00:00:01").unwrap();
        assert_eq!((v.name.as_str(), v.bridge.as_deref(), v.mac.as_str()), ("eth0", Some("br0"), "02:aa:00:00:00:01"));
        assert_eq!(parse_netif("eth1").unwrap().bridge, None);
        for bad in ["", "eth0,mac=zz", "eth0,foo=1", "eth0,mac=01:00:00:00:00:01", "a/b"] {
            assert!(parse_netif(bad).is_err(), "{bad}");
        }
        let ct = Ctid::new("101").unwrap();
        let a = NetArgs { netif: vec!["eth0".into(), "eth1:br0".into()], ..Default::default() };
        let n = a.apply(&ct, &NetConfig::default()).unwrap();
        assert_eq!(n.netifs.len(), 2);
        assert_ne!(n.netifs[0].mac, n.netifs[1].mac);
        // Stable across calls.
        assert_eq!(a.apply(&ct, &NetConfig::default()).unwrap(), n);
    }

    #[test]
    fn vzctl_netif_add_grammar() {
        assert_eq!(vzctl_netif("eth0").unwrap(), "eth0");
        assert_eq!(vzctl_netif("eth0,,,,br0").unwrap(), "eth0:br0");
        assert_eq!(vzctl_netif("eth1,02:00:00:00:00:09,,,vmbr0").unwrap(), "eth1:vmbr0,mac=02:00:00:00:00:09");
        for bad in ["eth0,,veth101.0,,br0", "eth0,,,FE:FF:FF:FF:FF:FF,br0", "a,b,c,d,e,f"] {
            assert!(vzctl_netif(bad).is_err(), "{bad}");
        }
        let ct = Ctid::new("101").unwrap();
        let a = NetArgs { netif_add: vec!["eth0,,,,br0".into()], ..Default::default() };
        let n = a.apply(&ct, &NetConfig::default()).unwrap();
        assert_eq!((n.netifs[0].name.as_str(), n.netifs[0].bridge.as_deref()), ("eth0", Some("br0")));
        assert!(a.has_next_start_changes());
        let gone = NetArgs { netif_del: vec!["all".into()], ..Default::default() }.apply(&ct, &n).unwrap();
        assert!(gone.netifs.is_empty());
    }

    #[test]
    fn vzctl_zeros_and_all_mean_no_limit() {
        let set = ResArgs {
            cpulimit: Some("50".into()),
            iolimit: Some("1M".into()),
            iopslimit: Some("9".into()),
            cpumask: Some("0".into()),
            ..Default::default()
        };
        let r = set.apply(&Resources::default()).unwrap();
        let zero = ResArgs {
            cpulimit: Some("0%".into()),
            iolimit: Some("0".into()),
            iopslimit: Some("0".into()),
            cpumask: Some("all".into()),
            ..Default::default()
        };
        assert_eq!(zero.apply(&r).unwrap(), Resources::default());
        assert!(ResArgs { numproc: Some("0".into()), ..Default::default() }.apply(&r).is_err(), "a zero elsewhere stays refused");
    }

    #[test]
    fn vzctl_barrier_limit_pairs_take_the_limit() {
        let a = ResArgs { numproc: Some("80:100".into()), diskspace: Some("9G:10G".into()), ..Default::default() };
        let r = a.apply(&Resources::default()).unwrap();
        assert_eq!((r.numproc, r.diskspace), (Some(100), Some(10 << 30)));
    }

    #[test]
    fn ip_changes() {
        let ct = Ctid::new("101").unwrap();
        let a = NetArgs { ipadd: vec!["198.18.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()], ..Default::default() };
        let n = a.apply(&ct, &NetConfig::default()).unwrap();
        assert_eq!(n.ipadd.len(), 2);
        let d = NetArgs { ipdel: vec!["all".into()], ..Default::default() };
        assert!(d.apply(&ct, &n).unwrap().ipadd.is_empty());
        assert!(NetArgs { ipdel: vec!["x".into()], ..Default::default() }.apply(&ct, &n).is_err());
    }

    #[test]
    fn resource_values() {
        let a = ResArgs { ram: Some("64M".into()), numproc: Some("20".into()), ioprio: Some("7".into()), ..Default::default() };
        let r = a.apply(&Resources::default()).unwrap();
        assert_eq!((r.ram, r.numproc, r.ioprio), (Some(64 << 20), Some(20), Some(7)));
        for bad in [
            ResArgs { ram: Some("64Q".into()), ..Default::default() },
            ResArgs { numproc: Some("0".into()), ..Default::default() },
            ResArgs { numproc: Some("-5".into()), ..Default::default() },
            ResArgs { ioprio: Some("8".into()), ..Default::default() },
            ResArgs { cpumask: Some("0-".into()), ..Default::default() },
            ResArgs { diskspace: Some("-1G".into()), ..Default::default() },
            ResArgs { ram: Some("0".into()), ..Default::default() },
        ] {
            assert!(bad.apply(&Resources::default()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_limit_can_be_lifted() {
        let set = ResArgs {
            cpuunits: Some("500".into()),
            cpulimit: Some("50%".into()),
            cpumask: Some("0".into()),
            cpus: Some("1".into()),
            ram: Some("64M".into()),
            swap: Some("0".into()),
            numproc: Some("20".into()),
            numfiles: Some("64".into()),
            diskspace: Some("1G".into()),
            ioprio: Some("2".into()),
            iolimit: Some("10M".into()),
            iopslimit: Some("100".into()),
        };
        let r = set.apply(&Resources::default()).unwrap();
        assert_eq!(r.swap, Some(0), "--swap 0 keeps meaning no swap");
        let all = |v: &str| ResArgs {
            cpuunits: Some(v.into()),
            cpulimit: Some(v.into()),
            cpumask: Some(v.into()),
            cpus: Some(v.into()),
            ram: Some(v.into()),
            swap: Some(v.into()),
            numproc: Some(v.into()),
            numfiles: Some(v.into()),
            diskspace: Some(v.into()),
            ioprio: Some(v.into()),
            iolimit: Some(v.into()),
            iopslimit: Some(v.into()),
        };
        assert_eq!(all("unlimited").apply(&r).unwrap(), Resources::default());
        // Lifting ram lifts the swap limit on top of it.
        let only_ram = ResArgs { ram: Some("Unlimited".into()), ..Default::default() };
        let lifted = only_ram.apply(&r).unwrap();
        assert_eq!((lifted.ram, lifted.swap, lifted.numproc), (None, None, Some(20)));
    }

    #[test]
    fn bare_numbers_are_refused_where_vzctl_meant_other_units() {
        for (a, opt) in [
            (ResArgs { diskspace: Some("1048576".into()), ..Default::default() }, "--diskspace"),
            (ResArgs { iolimit: Some("10".into()), ..Default::default() }, "--iolimit"),
        ] {
            let e = a.apply(&Resources::default()).unwrap_err().to_string();
            assert!(e.contains(opt) && e.contains("unit suffix"), "{e}");
        }
        let ok = ResArgs { diskspace: Some("1048576K".into()), iolimit: Some("10M/s".into()), ..Default::default() };
        let r = ok.apply(&Resources::default()).unwrap();
        assert_eq!((r.diskspace, r.iolimit), (Some(1 << 30), Some(10 << 20)));
    }
}

/// Isolation options shared by `create` and `set` (they take effect at the next start).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SecurityArgs {
    /// Capabilities added to (on) or taken from (off) the defaults, vzctl's spelling:
    /// NAME:on|off[,NAME:on|off...] (e.g. net_admin:on,chown:off); repeatable.
    #[arg(long, value_name = "NAME:on|off[,...]")]
    pub capability: Vec<String>,
    /// The seccomp filter: default, unconfined, or a profile FILE in seccompiler's JSON format
    /// (kept in the config; see docs/runtime.md).
    #[arg(long, value_name = "default|unconfined|FILE")]
    pub seccomp: Option<String>,
    /// Features: nesting:on lets processes inside create user namespaces; NAME:on|off[,...].
    #[arg(long, value_name = "NAME:on|off[,...]")]
    pub features: Vec<String>,
    /// on: a user namespace of its own, container root an unprivileged user on the host (its
    /// IDs a range of the host's pool); off: container root is host root. Without it, `create`
    /// follows the host setting `userns`; `set` changes it on a stopped container.
    #[arg(long, value_name = "on|off", num_args = 0..=1, default_missing_value = "on", require_equals = false)]
    pub userns: Option<String>,
}

impl SecurityArgs {
    pub fn is_empty(&self) -> bool {
        self.capability.is_empty() && self.seccomp.is_none() && self.features.is_empty() && self.userns.is_none()
    }

    /// `--userns` as given.
    pub fn userns(&self) -> Result<Option<ferry_runtime::userns::Userns>> {
        self.userns.as_deref().map(|u| u.parse().map_err(|e: String| invalid!("--userns: {e}"))).transpose()
    }

    /// `sec` with these options applied, checked as a whole (a capability the filter would
    /// make useless is refused with the option that helps).
    pub fn apply(&self, sec: &ferry_runtime::config::Security) -> Result<ferry_runtime::config::Security> {
        let mut s = sec.clone();
        if let Some(u) = self.userns()? {
            s.kind = u.kind();
        }
        for c in &self.capability {
            ferry_runtime::capabilities::set_capabilities(&mut s, c).map_err(|e| invalid!("--capability: {e}"))?;
        }
        for f in &self.features {
            ferry_runtime::isolation::set_features(&mut s, f).map_err(|e| invalid!("--features: {e}"))?;
        }
        if let Some(p) = &self.seccomp {
            s.seccomp = ferry_runtime::isolation::parse_seccomp_option(p)?;
        }
        ferry_runtime::isolation::Applied::from_security(&s)?;
        Ok(s)
    }
}
