//! The device allowlist: rules in ferry's config syntax (`c:10:200:rw`), the default set that
//! matches the nodes ferry makes in a container's /dev, and their v1 `devices.*` writes.

use super::CgroupWrite;
use crate::error::{Error, Result};
use std::fmt;

/// One allowed device (or class): type `c`/`b`/`a`, major and minor (None = any), access
/// letters from `rwm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: String,
}

impl DeviceRule {
    pub const fn char_dev(major: u32, minor: u32) -> DeviceRule {
        DeviceRule { kind: 'c', major: Some(major), minor: Some(minor), access: String::new() }
    }

    /// Parse `TYPE:MAJOR:MINOR:ACCESS` (e.g. `c:10:200:rw`, `b:8:*:r`); access defaults to rwm.
    pub fn parse(s: &str) -> Result<DeviceRule> {
        let bad = |why: &str| Error::DeviceRule { rule: s.to_string(), why: why.to_string() };
        let parts: Vec<&str> = s.split(':').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(bad("expected 3 or 4 fields"));
        }
        let kind = match parts[0] {
            "c" => 'c',
            "b" => 'b',
            "a" => 'a',
            _ => return Err(bad("type must be c, b or a")),
        };
        let num = |p: &str| -> Result<Option<u32>> {
            if p == "*" {
                Ok(None)
            } else {
                p.parse().map(Some).map_err(|_| bad("major and minor are numbers or *"))
            }
        };
        let access = parts.get(3).copied().unwrap_or("rwm").to_string();
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            return Err(bad("access is made of r, w and m"));
        }
        Ok(DeviceRule { kind, major: num(parts[1])?, minor: num(parts[2])?, access })
    }

    /// The rule as a v1 `devices.allow` line: `c 1:3 rwm`.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
        if self.kind == 'a' {
            return "a".into();
        }
        let access = if self.access.is_empty() { "rwm" } else { &self.access };
        format!("{} {}:{} {}", self.kind, n(self.major), n(self.minor), access)
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.v1_line())
    }
}

/// The devices every container gets: null, zero, full, random, urandom, tty, ptmx and its
/// own ptys.
pub fn default_rules() -> Vec<DeviceRule> {
    let rwm = |major, minor: Option<u32>| DeviceRule { kind: 'c', major: Some(major), minor, access: "rwm".into() };
    vec![
        rwm(1, Some(3)), // null
        rwm(1, Some(5)), // zero
        rwm(1, Some(7)), // full
        rwm(1, Some(8)), // random
        rwm(1, Some(9)), // urandom
        rwm(5, Some(0)), // tty
        rwm(5, Some(2)), // ptmx
        rwm(136, None),  // pts/*
    ]
}

/// The defaults plus the container's own grants (`cfg.security.devices`).
pub fn rules_for(extra: &[String]) -> Result<Vec<DeviceRule>> {
    let mut rules = default_rules();
    for e in extra {
        rules.push(DeviceRule::parse(e)?);
    }
    Ok(rules)
}

/// v1: deny everything, then allow each rule.
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<CgroupWrite> {
    let mut w = vec![CgroupWrite { controller: "devices", file: "devices.deny".into(), value: "a".into() }];
    for r in rules {
        w.push(CgroupWrite { controller: "devices", file: "devices.allow".into(), value: r.v1_line() });
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(DeviceRule::parse("c:10:200:rw").unwrap().v1_line(), "c 10:200 rw");
        assert_eq!(DeviceRule::parse("b:8:*").unwrap().v1_line(), "b 8:* rwm");
        for bad in ["x:1:2", "c:1", "c:a:2", "c:1:2:rx", "c:1:2:"] {
            assert!(DeviceRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn v1_rules_deny_all_first() {
        let rules = rules_for(&["c:10:200:rw".into()]).unwrap();
        let w = v1_writes(&rules);
        assert_eq!((w[0].file.as_str(), w[0].value.as_str()), ("devices.deny", "a"));
        let allowed: Vec<&str> = w[1..].iter().map(|w| w.value.as_str()).collect();
        assert!(allowed.contains(&"c 1:3 rwm"));
        assert!(allowed.contains(&"c 136:* rwm"));
        assert!(allowed.contains(&"c 10:200 rw"));
        assert!(!allowed.iter().any(|a| a.starts_with('b')), "no block device by default");
        assert!(w[1..].iter().all(|w| w.file == "devices.allow"));
    }
}
