//! A container's isolation in one place: its kind's defaults and the grants of its config
//! (`Security`) turned into what start, exec and restore apply — the capability set, the
//! seccomp filter, the masked and read-only paths, the namespaces exec may join.
//!
//! What a container runs with is recorded as [`Applied`] in its state at start and restore
//! (and carried in its checkpoints), so that `exec` gives a new process exactly what the
//! container got, whatever the config says since and whatever its processes report.
//! docs/runtime.md has the table of defaults per kind.

pub mod namespaces;
pub mod paths;
pub mod seccomp;

use crate::capabilities::{cap_name, container_caps, parse_cap};
use crate::config::{ContainerKind, SeccompPolicy, Security};
use crate::error::{Error, Result};
use caps::CapsHashSet;
use serde::{Deserialize, Serialize};

/// The isolation a container runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub kind: ContainerKind,
    /// Capability names without CAP_, sorted: the bounding, permitted and effective sets.
    pub capabilities: Vec<String>,
    pub seccomp: SeccompPolicy,
    /// User namespaces allowed inside.
    pub nesting: bool,
}

/// What a process entering a container gets: its capabilities and its compiled filter.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub caps: CapsHashSet,
    pub filters: Option<seccomp::Filters>,
}

impl Prepared {
    /// In the forked child, right before exec: the filter (while CAP_SYS_ADMIN is still
    /// held), then the capabilities.
    pub fn apply_in_child(&self) -> std::result::Result<(), String> {
        if let Some(f) = &self.filters {
            seccomp::install(f)?;
        }
        crate::capabilities::restrict_to(&self.caps).map_err(|e| e.to_string())
    }
}

impl Applied {
    /// The isolation `sec` asks for, checked: capability names, the profile compiles, no
    /// capability whose only use the filter refuses.
    pub fn from_security(sec: &Security) -> Result<Applied> {
        let set = container_caps(sec)?;
        check_grants(sec, &set)?;
        let mut capabilities: Vec<String> = set.iter().map(|c| cap_name(*c)).collect();
        capabilities.sort();
        let a = Applied { kind: sec.kind, capabilities, seccomp: sec.seccomp.clone(), nesting: sec.nesting };
        a.prepare()?;
        Ok(a)
    }

    pub fn caps(&self) -> Result<CapsHashSet> {
        self.capabilities.iter().map(|c| parse_cap(c)).collect()
    }

    /// Capabilities and the compiled filter.
    pub fn prepare(&self) -> Result<Prepared> {
        let caps = self.caps()?;
        let filters = match &self.seccomp {
            SeccompPolicy::Default => Some(seccomp::default_filters(&self.filter_caps(&caps), self.nesting)?),
            SeccompPolicy::Unconfined => None,
            SeccompPolicy::Profile { source, json } => Some(seccomp::profile_filters(source, json)?),
        };
        Ok(Prepared { caps, filters })
    }

    /// The capabilities the default filter is compiled for: in a user namespace of its own
    /// the host-only ones grant nothing, so the calls they would guard are treated as for a
    /// container without them (reading the clock's adjustments stays allowed, iopl refused).
    fn filter_caps(&self, caps: &CapsHashSet) -> CapsHashSet {
        if !self.kind.has_userns() {
            return caps.clone();
        }
        caps.iter().copied().filter(|c| crate::capabilities::host_only_use(*c).is_none()).collect()
    }

    /// For `status`, `check` and humans.
    pub fn summary(&self) -> Summary {
        Summary {
            kind: self.kind.as_str(),
            capabilities: self.capabilities.clone(),
            seccomp: self.seccomp.describe(),
            refused_calls: if self.seccomp.is_default() { seccomp::REFUSED_ALWAYS.to_vec() } else { Vec::new() },
            user_namespaces: self.nesting || !self.seccomp.is_default(),
            masked_paths: paths::MASKED.to_vec(),
            readonly_paths: paths::READONLY.to_vec(),
            runs_in_user_namespace: self.kind.has_userns(),
        }
    }
}

/// The isolation, as `status --json` and `check` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub kind: &'static str,
    pub capabilities: Vec<String>,
    /// "default", "unconfined" or "profile FILE".
    pub seccomp: String,
    /// What the default filter refuses whatever the capabilities (empty for other filters).
    pub refused_calls: Vec<&'static str>,
    /// Whether processes inside may create user namespaces (not refused by ferry's default filter).
    pub user_namespaces: bool,
    pub masked_paths: Vec<&'static str>,
    pub readonly_paths: Vec<&'static str>,
    /// Whether the container itself runs in a user namespace of its own.
    pub runs_in_user_namespace: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  kind            {}", self.kind)?;
        writeln!(f, "  capabilities    {}", self.capabilities.join(" "))?;
        writeln!(f, "  seccomp         {}", self.seccomp)?;
        if !self.refused_calls.is_empty() {
            writeln!(f, "  refused always  {}", self.refused_calls.join(" "))?;
        }
        writeln!(f, "  user namespaces {}", if self.user_namespaces { "allowed inside" } else { "refused inside" })?;
        writeln!(f, "  masked          {}", self.masked_paths.join(" "))?;
        write!(f, "  read-only       {}", self.readonly_paths.join(" "))
    }
}

/// What PID 1 of a running container shows of its isolation (for `status` only: nothing
/// read here decides what ferry grants).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// "filter", "strict" or "disabled" (the Seccomp field of /proc/PID/status).
    pub seccomp_mode: String,
    pub seccomp_filters: u32,
    /// CapBnd, hex.
    pub bounding_set: String,
    /// Which masked and read-only paths its mount table shows.
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

/// Read [`Observed`] from /proc of `pid`.
pub fn observe(pid: i32) -> Observed {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
    let seccomp_mode = match field("Seccomp:").as_str() {
        "0" => "disabled",
        "1" => "strict",
        "2" => "filter",
        _ => "unknown",
    }
    .to_string();
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let (masked, readonly) = paths::in_force(&mountinfo);
    Observed { seccomp_mode, seccomp_filters: field("Seccomp_filters:").parse().unwrap_or(0), bounding_set: field("CapBnd:"), masked, readonly }
}

/// Refuse a capability the default filter makes useless, naming the option that helps.
fn check_grants(sec: &Security, caps: &CapsHashSet) -> Result<()> {
    // In a user namespace those capabilities are host-only: refused when asked for
    // (`capabilities::container_caps`), ignored by the filter when they come with the kind.
    if !sec.seccomp.is_default() || sec.kind.has_userns() {
        return Ok(());
    }
    for (cap, what) in seccomp::CAPS_ONLY_FOR_REFUSED {
        if caps.contains(cap) {
            return Err(Error::Refused(format!(
                "capability {} only serves {what}, which the default seccomp filter refuses whatever the capabilities: \
                 also give --seccomp unconfined or --seccomp FILE with a profile that allows it",
                cap_name(*cap)
            )));
        }
    }
    Ok(())
}

/// Apply `--features NAME:on|off[,...]` (vzctl's spelling) to a Security.
pub fn set_features(sec: &mut Security, list: &str) -> Result<()> {
    for spec in list.split(',').map(str::trim) {
        let bad = || Error::Invalid(format!("invalid feature {spec:?}: use nesting:on or nesting:off"));
        let (name, onoff) = spec.rsplit_once(':').ok_or_else(bad)?;
        let on = match onoff {
            "on" => true,
            "off" => false,
            _ => return Err(bad()),
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "nesting" => sec.nesting = on,
            _ => return Err(Error::Invalid(format!("unknown feature {name:?}: ferry knows nesting (user namespaces inside the container)"))),
        }
    }
    Ok(())
}

/// The policy `--seccomp default|unconfined|FILE` names; a file is read and checked now and
/// kept in the config.
pub fn parse_seccomp_option(arg: &str) -> Result<SeccompPolicy> {
    match arg {
        "default" => Ok(SeccompPolicy::Default),
        "unconfined" => Ok(SeccompPolicy::Unconfined),
        path => {
            let json = std::fs::read_to_string(path).map_err(|source| Error::SeccompFile { path: path.to_string(), source })?;
            let source = std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string());
            seccomp::profile_filters(&source, &json)?;
            Ok(SeccompPolicy::Profile { source, json })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_grants() {
        let a = Applied::from_security(&Security::default()).unwrap();
        assert_eq!(a.capabilities.len(), crate::capabilities::DEFAULT_CAPS.len());
        assert!(!a.capabilities.contains(&"SYS_ADMIN".to_string()) && !a.capabilities.contains(&"NET_ADMIN".to_string()));
        assert!(a.prepare().unwrap().filters.is_some());
        let s = a.summary();
        assert!(s.refused_calls.contains(&"keyctl") && !s.user_namespaces && s.masked_paths.contains(&"/proc/kcore"));

        // SYS_TIME needs a filter that allows setting the clock: the error names the option.
        let mut sec = Security::default();
        crate::capabilities::set_capabilities(&mut sec, "sys_time:on").unwrap();
        let e = Applied::from_security(&sec).unwrap_err().to_string();
        assert!(e.contains("--seccomp") && e.contains("SYS_TIME"), "{e}");
        sec.seccomp = SeccompPolicy::Unconfined;
        let a = Applied::from_security(&sec).unwrap();
        assert!(a.capabilities.contains(&"SYS_TIME".to_string()));
        assert!(a.prepare().unwrap().filters.is_none());
        assert!(a.summary().user_namespaces);
    }

    #[test]
    fn features() {
        let mut sec = Security::default();
        set_features(&mut sec, "nesting:on").unwrap();
        assert!(sec.nesting);
        set_features(&mut sec, "NESTING:off").unwrap();
        assert!(!sec.nesting);
        assert!(set_features(&mut sec, "nesting").is_err());
        assert!(set_features(&mut sec, "fuse:on").unwrap_err().to_string().contains("nesting"));
        assert!(set_features(&mut sec, "nesting:maybe").is_err());
    }

    #[test]
    fn seccomp_option() {
        assert_eq!(parse_seccomp_option("default").unwrap(), SeccompPolicy::Default);
        assert_eq!(parse_seccomp_option("unconfined").unwrap(), SeccompPolicy::Unconfined);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.json");
        std::fs::write(&p, r#"{"main": {"mismatch_action": "allow", "match_action": {"errno": 1}, "filter": [{"syscall": "keyctl"}]}}"#).unwrap();
        match parse_seccomp_option(p.to_str().unwrap()).unwrap() {
            SeccompPolicy::Profile { source, json } => {
                assert!(source.ends_with("p.json") && json.contains("keyctl"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, "not json").unwrap();
        assert!(parse_seccomp_option(p.to_str().unwrap()).is_err());
        assert!(parse_seccomp_option("/no/such/profile").unwrap_err().to_string().contains("unconfined"));
    }

    #[test]
    fn a_feature_typed_wrong_is_an_invalid_value() {
        let mut sec = Security::default();
        for bad in ["fuse:on", "nesting", "nesting:maybe"] {
            assert_eq!(set_features(&mut sec, bad).unwrap_err().class(), crate::exit::ErrorClass::InvalidValue, "{bad}");
        }
    }
}
