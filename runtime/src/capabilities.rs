//! The capability set a container keeps: its kind's defaults (for the privileged kind,
//! Docker's default set), changed by the container's `cap_add` / `cap_drop`. Everything else
//! (SYS_ADMIN, NET_ADMIN, SYS_TIME, SYS_MODULE, SYS_RAWIO, SYS_BOOT, ...) is dropped from the
//! bounding, effective, permitted and inheritable sets before PID 1 or an exec'd command runs.

use crate::config::{ContainerKind, Security};
use crate::error::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use std::str::FromStr;

/// The privileged kind's defaults (Docker's default set), names without the CAP_ prefix.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The unprivileged kind's defaults: every capability, as Incus gives container root. They
/// hold in the container's own user namespace only: what they guard there (its mounts, its
/// network, its files through the idmapped root) is the container's.
pub const ALL_CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capabilities the kernel checks against the host's (initial) user namespace only: in a
/// container's own user namespace they grant nothing (device nodes, the clock, modules, raw
/// I/O, ...). Asking for one on an unprivileged container is refused with the way out
/// (`--userns off`); the seccomp filter is compiled as if they were absent.
pub const HOST_ONLY: [(&str, &str); 14] = [
    ("SYS_MODULE", "loading kernel modules"),
    ("SYS_RAWIO", "raw I/O ports and devices"),
    ("SYS_TIME", "setting the clock"),
    ("SYS_PACCT", "process accounting"),
    ("MKNOD", "creating device nodes"),
    ("LINUX_IMMUTABLE", "immutable and append-only files"),
    ("MAC_ADMIN", "configuring the LSM"),
    ("MAC_OVERRIDE", "overriding the LSM"),
    ("AUDIT_CONTROL", "configuring the audit system"),
    ("SYSLOG", "the kernel log"),
    ("WAKE_ALARM", "alarms that wake the host"),
    ("BLOCK_SUSPEND", "blocking the host's suspend"),
    ("BPF", "bpf"),
    ("PERFMON", "performance monitoring"),
];

/// Parse a capability name, with or without `CAP_`, any case.
pub fn parse_cap(name: &str) -> Result<Capability> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    Capability::from_str(&full).map_err(|_| Error::UnknownCapability(name.to_string()))
}

/// The short name (no CAP_ prefix) of a capability.
pub fn cap_name(c: Capability) -> String {
    c.to_string().trim_start_matches("CAP_").to_string()
}

/// The capabilities a container of `kind` has when nothing is added or dropped.
pub fn kind_defaults(kind: ContainerKind) -> &'static [&'static str] {
    match kind {
        ContainerKind::Privileged => &DEFAULT_CAPS,
        ContainerKind::Unprivileged => &ALL_CAPS,
    }
}

/// What a capability would be used for when it means nothing in a user namespace.
pub fn host_only_use(c: Capability) -> Option<&'static str> {
    HOST_ONLY.iter().find(|(n, _)| parse_cap(n).ok() == Some(c)).map(|(_, what)| *what)
}

/// Refuse granting a host-only capability to a container of `kind` with a user namespace.
fn check_grant(kind: ContainerKind, cap: Capability) -> Result<()> {
    match host_only_use(cap) {
        Some(what) if kind.has_userns() => Err(Error::Refused(format!(
            "capability {} is for {what}, which the kernel allows only to the host's root: an unprivileged container's user namespace never grants it; use --userns off for a container that needs it",
            cap_name(cap)
        ))),
        _ => Ok(()),
    }
}

/// The set a container keeps: its kind's defaults + cap_add − cap_drop (a drop wins over an
/// add).
pub fn container_caps(sec: &Security) -> Result<CapsHashSet> {
    let mut set = CapsHashSet::new();
    for n in kind_defaults(sec.kind) {
        set.insert(parse_cap(n)?);
    }
    for n in &sec.cap_add {
        let c = parse_cap(n)?;
        check_grant(sec.kind, c)?;
        set.insert(c);
    }
    for n in &sec.cap_drop {
        set.remove(&parse_cap(n)?);
    }
    Ok(set)
}

/// Apply a vzctl-style list `NAME:on|off[,NAME:on|off...]` to a Security.
pub fn set_capabilities(sec: &mut Security, list: &str) -> Result<()> {
    for spec in list.split(',').map(str::trim) {
        if spec.is_empty() {
            return Err(Error::Invalid(format!("invalid capability list {list:?}: use NAME:on|off[,NAME:on|off...]")));
        }
        set_capability(sec, spec)?;
    }
    Ok(())
}

/// Apply `NAME:on|off` to a Security: on adds it (and undoes a drop), off drops it.
pub fn set_capability(sec: &mut Security, spec: &str) -> Result<()> {
    let (name, onoff) =
        spec.rsplit_once(':').ok_or_else(|| Error::Invalid(format!("invalid capability setting {spec:?}: use NAME:on or NAME:off")))?;
    let parsed = parse_cap(name)?;
    if onoff == "on" {
        check_grant(sec.kind, parsed)?;
    }
    let cap = cap_name(parsed);
    let same = |c: &String| parse_cap(c).map(cap_name).ok().as_deref() == Some(cap.as_str());
    sec.cap_add.retain(|c| !same(c));
    sec.cap_drop.retain(|c| !same(c));
    let default = kind_defaults(sec.kind).contains(&cap.as_str());
    match onoff {
        "on" if !default => sec.cap_add.push(cap),
        "off" if default => sec.cap_drop.push(cap),
        "on" | "off" => {}
        _ => return Err(Error::Invalid(format!("invalid capability setting {spec:?}: use NAME:on or NAME:off"))),
    }
    Ok(())
}

/// Reduce the calling process to `keep`: bounding set first (needs CAP_SETPCAP, still held),
/// then inheritable, effective and permitted; ambient cleared.
pub fn restrict_to(keep: &CapsHashSet) -> Result<()> {
    let e = |what: &str, source: caps::errors::CapsError| Error::Caps { what: what.to_string(), source };
    for c in caps::all() {
        if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, c).map_err(|er| e("drop from bounding set", er))?;
        }
    }
    let _ = caps::clear(None, CapSet::Ambient);
    let permitted = caps::read(None, CapSet::Permitted).map_err(|er| e("read permitted", er))?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Inheritable, &keep).map_err(|er| e("set inheritable", er))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|er| e("set effective", er))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|er| e("set permitted", er))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_name_parses_and_the_unprivileged_kind_has_all() {
        let all: CapsHashSet = ALL_CAPS.iter().map(|n| parse_cap(n).unwrap()).collect();
        assert_eq!(all.len(), ALL_CAPS.len());
        for c in caps::all() {
            assert!(all.contains(&c), "{c} missing from ALL_CAPS");
        }
        let sec = Security { kind: ContainerKind::Unprivileged, ..Default::default() };
        assert_eq!(container_caps(&sec).unwrap(), all);
        for (n, _) in HOST_ONLY {
            assert!(host_only_use(parse_cap(n).unwrap()).is_some(), "{n}");
        }
    }

    #[test]
    fn host_only_capabilities_are_refused_with_a_user_namespace() {
        let mut sec = Security { kind: ContainerKind::Unprivileged, ..Default::default() };
        let e = set_capability(&mut sec, "sys_time:on").unwrap_err().to_string();
        assert!(e.contains("SYS_TIME") && e.contains("--userns off"), "{e}");
        // Dropping one is fine; so is asking for a capability that works in a user namespace.
        set_capability(&mut sec, "sys_time:off").unwrap();
        set_capability(&mut sec, "net_admin:on").unwrap();
        assert_eq!(sec.cap_drop, vec!["SYS_TIME"]);
        assert!(sec.cap_add.is_empty(), "NET_ADMIN is in the unprivileged defaults");
        sec.cap_add.push("MKNOD".into());
        assert!(container_caps(&sec).unwrap_err().to_string().contains("device nodes"));
        // The privileged kind may have it (with a filter that allows it).
        let mut p = Security::default();
        set_capability(&mut p, "sys_time:on").unwrap();
    }

    #[test]
    fn defaults_exclude_host_level_caps() {
        let s = container_caps(&Security::default()).unwrap();
        assert_eq!(s.len(), DEFAULT_CAPS.len());
        for bad in ["SYS_ADMIN", "SYS_TIME", "SYS_MODULE", "SYS_RAWIO", "SYS_BOOT", "SYS_PTRACE", "SYS_RESOURCE"] {
            assert!(!s.contains(&parse_cap(bad).unwrap()), "{bad}");
        }
        assert!(!s.contains(&Capability::CAP_NET_ADMIN));
        assert!(s.contains(&Capability::CAP_NET_BIND_SERVICE) && s.contains(&Capability::CAP_CHOWN));
    }

    #[test]
    fn comma_lists() {
        let mut sec = Security::default();
        set_capabilities(&mut sec, "net_admin:on, chown:off").unwrap();
        assert_eq!(sec.cap_add, vec!["NET_ADMIN"]);
        assert_eq!(sec.cap_drop, vec!["CHOWN"]);
        assert!(set_capabilities(&mut sec, "net_admin:on,,").is_err());
        assert!(set_capabilities(&mut sec, "").is_err());
    }

    #[test]
    fn add_and_drop() {
        let mut sec = Security::default();
        set_capability(&mut sec, "sys_time:on").unwrap();
        set_capability(&mut sec, "CAP_NET_RAW:off").unwrap();
        assert_eq!(sec.cap_add, vec!["SYS_TIME"]);
        assert_eq!(sec.cap_drop, vec!["NET_RAW"]);
        let s = container_caps(&sec).unwrap();
        assert!(s.contains(&Capability::CAP_SYS_TIME));
        assert!(!s.contains(&Capability::CAP_NET_RAW));
        set_capability(&mut sec, "NET_RAW:on").unwrap();
        set_capability(&mut sec, "SYS_TIME:off").unwrap();
        assert!(sec.cap_add.is_empty() && sec.cap_drop.is_empty());
        assert!(set_capability(&mut sec, "NOPE:on").is_err());
        assert!(set_capability(&mut sec, "SYS_TIME").is_err());
        assert!(set_capability(&mut sec, "SYS_TIME:maybe").is_err());
    }

    #[test]
    fn a_list_typed_wrong_is_an_invalid_value_and_an_unknown_name_a_failure() {
        use crate::exit::ErrorClass;
        let mut sec = crate::config::Security::default();
        // `--capability` wraps these as invalid values; the class stays that when it does not.
        assert_eq!(set_capabilities(&mut sec, "sys_time").unwrap_err().class(), ErrorClass::InvalidValue);
        assert_eq!(set_capabilities(&mut sec, "sys_time:maybe").unwrap_err().class(), ErrorClass::InvalidValue);
        // A saved config may name it: exit 1, as before.
        let e = parse_cap("no_such_cap").unwrap_err();
        assert!(matches!(&e, Error::UnknownCapability(n) if n == "no_such_cap"), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Failed);
    }
}
