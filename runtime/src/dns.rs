//! A container's /etc/resolv.conf from its [`Dns`] settings (vzctl's --nameserver and
//! --searchdomain): what is set replaces the file's `nameserver` or `search`/`domain` lines,
//! every other line stays. `inherit` takes the host's values. The file is written from inside
//! the container (`container::set_dns`, and at start), replacing a symlink rather than
//! following it.

use crate::config::Dns;
use crate::error::{Error, Result};
use std::net::IpAddr;

/// The word that takes the host's values.
pub const INHERIT: &str = "inherit";
/// The resolver's own limits: 3 name servers, 6 search domains (resolv.conf(5)).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH: usize = 6;

/// Check the settings before anything is written.
pub fn check(dns: &Dns) -> Result<()> {
    for n in &dns.nameservers {
        if n != INHERIT && n.parse::<IpAddr>().is_err() {
            return Err(Error::Invalid(format!("--nameserver {n:?}: not an IP address (or `{INHERIT}` for the host's)")));
        }
    }
    for d in &dns.searchdomains {
        let ok = d == INHERIT
            || (!d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')));
        if !ok {
            return Err(Error::Invalid(format!("--searchdomain {d:?}: not a domain name (or `{INHERIT}` for the host's)")));
        }
    }
    if dns.nameservers.iter().filter(|n| *n != INHERIT).count() > MAX_NAMESERVERS {
        return Err(Error::Invalid(format!("at most {MAX_NAMESERVERS} --nameserver: the resolver ignores the rest")));
    }
    if dns.searchdomains.iter().filter(|d| *d != INHERIT).count() > MAX_SEARCH {
        return Err(Error::Invalid(format!("at most {MAX_SEARCH} --searchdomain: the resolver ignores the rest")));
    }
    Ok(())
}

/// `values` with `inherit` replaced by what `host_resolv` (the host's resolv.conf) says for
/// the keys `keys`, duplicates dropped.
fn expand(values: &[String], host_resolv: &str, keys: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let add: Vec<String> = if v == INHERIT {
            host_resolv
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    keys.contains(&w.next()?).then(|| w.map(str::to_string).collect::<Vec<_>>())
                })
                .flatten()
                .collect()
        } else {
            vec![v.clone()]
        };
        for a in add {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The new resolv.conf: `old` with its name server lines replaced when `dns` sets name
/// servers, its `search`/`domain` lines when it sets search domains.
pub fn render(old: &str, dns: &Dns, host_resolv: &str) -> String {
    let servers = expand(&dns.nameservers, host_resolv, &["nameserver"]);
    let search = expand(&dns.searchdomains, host_resolv, &["search", "domain"]);
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    for l in old.lines() {
        let key = l.split_whitespace().next().unwrap_or("");
        let replaced =
            (!dns.nameservers.is_empty() && key == "nameserver") || (!dns.searchdomains.is_empty() && (key == "search" || key == "domain"));
        if !replaced {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(ns: &[&str], sd: &[&str]) -> Dns {
        Dns { nameservers: ns.iter().map(|s| s.to_string()).collect(), searchdomains: sd.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn replaces_only_what_is_set() {
        let old = "# kept\nnameserver 10.0.0.1\nsearch old.example\noptions ndots:2\n";
        let r = render(old, &dns(&["198.18.0.53", "2001:db8::53"], &[]), "");
        assert_eq!(r, "nameserver 198.18.0.53\nnameserver 2001:db8::53\n# kept\nsearch old.example\noptions ndots:2\n");
        let r = render(old, &dns(&[], &["a.example", "b.example"]), "");
        assert_eq!(r, "search a.example b.example\n# kept\nnameserver 10.0.0.1\noptions ndots:2\n");
        assert_eq!(render("", &dns(&["198.18.0.53"], &["x.example"]), ""), "search x.example\nnameserver 198.18.0.53\n");
    }

    #[test]
    fn inherit_takes_the_hosts_values() {
        let host = "nameserver 198.18.0.1\nnameserver 198.18.0.2\ndomain lab.example\n";
        let r = render("", &dns(&["inherit", "198.18.0.2"], &["inherit"]), host);
        assert_eq!(r, "search lab.example\nnameserver 198.18.0.1\nnameserver 198.18.0.2\n");
    }

    #[test]
    fn checks_values() {
        check(&dns(&["198.18.0.53", "inherit"], &["example.org", "inherit"])).unwrap();
        for bad in [dns(&["not-an-ip"], &[]), dns(&[], &["bad domain"]), dns(&[], &["a..b"]), dns(&["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"], &[])]
        {
            assert!(matches!(check(&bad), Err(Error::Invalid(_))), "{bad:?}");
        }
    }
}
