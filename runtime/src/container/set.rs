//! Live settings of a container: its hostname (set in its UTS namespace) and user passwords
//! (written into its /etc/passwd and /etc/shadow from inside, so no symlink in the container
//! can redirect the write to the host).

use crate::cgroups::{limits, nofile};
use crate::config::{ContainerConfig, Dns, Resources};
use crate::container::run_in_container;
use crate::ctid::Ctid;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::net::NetState;
use crate::state::State;
use crate::storage::backends;
use crate::util::write_replace;
use std::ffi::{CStr, CString};
use std::io::Read;
use std::net::IpAddr;

/// Set the hostname of the running container (and its /etc/hostname when it has one).
pub fn set_hostname_live(host: &Host, ct: &Ctid, hostname: &str) -> Result<()> {
    crate::container::create::check_hostname(hostname)?;
    crate::container::running_state(host, ct, "set hostname")?;
    let h = hostname.to_string();
    run_in_container(host, ct, true, move || {
        nix::unistd::sethostname(&h).map_err(|e| format!("sethostname: {e}"))?;
        if std::path::Path::new("/etc/hostname").is_file() {
            write_replace("/etc/hostname", &format!("{h}\n"), 0o644)?;
        }
        Ok(())
    })
}

#[link(name = "crypt")]
extern "C" {
    fn crypt(key: *const libc::c_char, salt: *const libc::c_char) -> *mut libc::c_char;
}

/// A SHA-512 crypt(3) hash (`$6$salt$...`) of `pass` with a random salt.
pub fn sha512_crypt(pass: &str) -> Result<String> {
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rnd = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut rnd)).map_err(|e| Error::io("read", "/dev/urandom", e))?;
    let salt: String = rnd.iter().map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char).collect();
    let key = CString::new(pass).map_err(|_| Error::NulByte("the password".into()))?;
    let salt = CString::new(format!("$6${salt}$")).expect("salt has no NUL");
    // SAFETY: both arguments are valid C strings; crypt returns a pointer to a static buffer
    // (or NULL), copied out at once in this single-threaded process.
    let out = unsafe { crypt(key.as_ptr(), salt.as_ptr()) };
    if out.is_null() {
        return Err(Error::Crypt("crypt(3) failed to hash the password"));
    }
    // SAFETY: a non-null result is a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned();
    if !s.starts_with("$6$") {
        return Err(Error::Crypt("this system's crypt(3) does not support SHA-512"));
    }
    Ok(s)
}

/// Check `USER:PASS` and split it.
pub fn parse_userpasswd(s: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::Invalid(format!("invalid --userpasswd: {why}; use USER:PASSWORD"));
    let (u, p) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let user_ok = !u.is_empty()
        && u.len() <= 32
        && u.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && u.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !user_ok {
        return Err(bad("user names are lower-case letters, digits, '_' and '-'"));
    }
    if p.is_empty() || p.contains('\n') || p.contains('\0') {
        return Err(bad("the password must be non-empty and on one line"));
    }
    Ok((u.to_string(), p.to_string()))
}

/// The new /etc/passwd and /etc/shadow texts with `user` present (added with the next free
/// uid ≥ 1000 if missing) and its password hash set to `hash`.
pub fn update_passwd_files(passwd: &str, shadow: &str, user: &str, hash: &str, days: u64) -> (String, String) {
    let mut passwd = passwd.to_string();
    let has_user = passwd.lines().any(|l| l.split(':').next() == Some(user));
    if !has_user {
        let uid = passwd
            .lines()
            .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok())
            .filter(|u| (1000..60000).contains(u))
            .max()
            .map_or(1000, |m| m + 1);
        if !passwd.is_empty() && !passwd.ends_with('\n') {
            passwd.push('\n');
        }
        let home = if user == "root" { "/root".to_string() } else { format!("/home/{user}") };
        passwd.push_str(&format!("{user}:x:{uid}:{uid}::{home}:/bin/sh\n"));
    }
    let mut found = false;
    let mut out = String::new();
    for l in shadow.lines() {
        let mut f: Vec<&str> = l.split(':').collect();
        if f.first() == Some(&user) && f.len() >= 2 {
            found = true;
            f[1] = hash;
            let days_s = days.to_string();
            if f.len() >= 3 {
                f[2] = &days_s;
                out.push_str(&f.join(":"));
            } else {
                out.push_str(&f.join(":"));
            }
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    if !found {
        out.push_str(&format!("{user}:{hash}:{days}:0:99999:7:::\n"));
    }
    (passwd, out)
}

/// Create `user` if missing and set its password, inside the container (running or not).
pub fn set_userpasswd(host: &Host, ct: &Ctid, spec: &str) -> Result<()> {
    let (user, pass) = parse_userpasswd(spec)?;
    let hash = sha512_crypt(&pass)?;
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86400).unwrap_or(0);
    run_in_container(host, ct, false, move || {
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
        let shadow = match std::fs::read_to_string("/etc/shadow") {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("read /etc/shadow: {e}")),
        };
        let (np, ns) = update_passwd_files(&passwd, &shadow, &user, &hash, days);
        if np != passwd {
            write_replace("/etc/passwd", &np, 0o644)?;
        }
        write_replace("/etc/shadow", &ns, 0o640)
    })
}

/// Write the container's /etc/resolv.conf from `dns` (running or not), from inside it: the
/// old file is read without following a link, the new one replaces it (a link included).
pub fn set_dns(host: &Host, ct: &Ctid, dns: &Dns) -> Result<()> {
    crate::dns::check(dns)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let dns = dns.clone();
    run_in_container(host, ct, false, move || write_resolv_conf(&dns, &host_resolv))
}

/// Inside the container (its root is `/`): render and write /etc/resolv.conf.
pub(crate) fn write_resolv_conf(dns: &Dns, host_resolv: &str) -> std::result::Result<(), String> {
    let old = crate::util::read_nofollow("/etc/resolv.conf").map_err(|e| format!("read /etc/resolv.conf: {e}"))?.unwrap_or_default();
    if !std::path::Path::new("/etc").is_dir() {
        std::fs::create_dir("/etc").map_err(|e| format!("create /etc: {e}"))?;
    }
    write_replace("/etc/resolv.conf", &crate::dns::render(&old, dns, host_resolv), 0o644)
}

/// Change the limits of the running container `cfg` (whose config still holds the old ones)
/// to `new`, all or nothing: everything is checked first (values, the disk backend, whether
/// an open-file limit can be raised), then the cgroup files are written (all-or-nothing
/// themselves), then RLIMIT_NOFILE of every process, then the disk limit last (an XFS image
/// that grew cannot shrink back). A failure after the cgroup writes puts the old values back.
pub fn set_resources_live(host: &Host, cfg: &ContainerConfig, st: &State, new: &Resources) -> Result<()> {
    let ct = &cfg.ctid;
    let old = &cfg.resources;
    let fail = |e: Error| Error::ct(ct.as_str(), "set limits", format!("{e}; nothing was changed"));
    // For errors that already name the container.
    let unchanged = |e: Error| Error::Unchanged(Box::new(e));
    let cg = st.cgroup();
    let ctx = crate::container::limit_context(host, cfg, &cg);
    limits::validate(new, &ctx).map_err(fail)?;
    limits::check_controllers(new, cg.mode(), &ctx.controllers).map_err(fail)?;
    let disk_changed = new.diskspace != old.diskspace;
    if disk_changed {
        backends::check_diskspace(cfg.storage.kind, host, ct, new.diskspace).map_err(unchanged)?;
    }
    let pids = cg.pids()?;
    let nofile_changed = new.numfiles != old.numfiles;
    if let (true, Some(n)) = (nofile_changed, new.numfiles) {
        let can_raise = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap_or(false);
        for &p in &pids {
            if let Ok((_, hard)) = nofile::get_nofile(p) {
                if n > hard && !can_raise {
                    return Err(fail(Error::Limit(format!(
                        "numfiles {n} is above the hard open-file limit {hard} of pid {p}, and this host lacks \
                         CAP_SYS_RESOURCE to raise it: save it with --save and restart the container, or choose at most {hard}"
                    ))));
                }
            }
        }
    }
    cg.apply(new, &ctx).map_err(fail)?;
    let undo_cgroup = || {
        let back = crate::cgroups::LimitContext { memory_usage: None, ..ctx.clone() };
        if let Err(e) = cg.apply(old, &back) {
            tracing::warn!("container {ct}: putting the old limits back: {e}");
        }
    };
    if let (true, Some(n)) = (nofile_changed, new.numfiles) {
        if let Err(e) = nofile::set_nofile_all(&pids, n) {
            undo_cgroup();
            return Err(fail(e));
        }
    }
    if disk_changed {
        if let Err(e) = backends::set_diskspace(cfg.storage.kind, host, ct, new.diskspace) {
            undo_cgroup();
            if let (true, Some(n)) = (nofile_changed, old.numfiles) {
                let _ = nofile::set_nofile_all(&pids, n);
            }
            return Err(unchanged(e));
        }
    }
    Ok(())
}

/// Set the disk limit of a stopped container (btrfs qgroup or image size), checked first.
pub fn set_diskspace_stopped(host: &Host, cfg: &ContainerConfig, limit: Option<u64>) -> Result<()> {
    backends::set_diskspace(cfg.storage.kind, host, &cfg.ctid, limit)
}

/// Add and remove venet addresses of the running container, at once; the state file follows.
/// `cfg` gives the uplink. Additions already made are taken back when a later one fails.
pub fn set_ips_live(host: &Host, cfg: &ContainerConfig, st: &mut State, add: &[IpAddr], del: &[IpAddr]) -> Result<()> {
    let mut net = st.net_objects.clone().unwrap_or_else(|| NetState { ctid: cfg.ctid.to_string(), pid: st.pid, ..Default::default() });
    // The netns ferry made, wherever the container's init went since.
    let ns = st.netns("set")?;
    let mut added = Vec::new();
    let mut res = Ok(());
    for a in add {
        if net.venet.as_ref().is_some_and(|v| v.addrs.contains(a)) {
            continue;
        }
        match crate::net::add_ip(host, cfg, &mut net, &ns, *a) {
            Ok(()) => added.push(*a),
            Err(e) => {
                for a in &added {
                    let _ = crate::net::del_ip(host, &mut net, &ns, *a);
                }
                res = Err(e);
                break;
            }
        }
    }
    if res.is_ok() {
        for d in del {
            if let Err(e) = crate::net::del_ip(host, &mut net, &ns, *d) {
                res = Err(e);
                break;
            }
        }
    }
    // The state records whatever exists now, also after a failure (so stop removes it).
    st.net_objects = Some(net);
    st.save(host)?;
    res?;
    if !add.is_empty() {
        crate::hooks::announce_after_start(st);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_update() {
        let p = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        let s = "root:*:19000:0:99999:7:::\nbob:!:19000:0:99999:7:::\n";
        let (np, ns) = update_passwd_files(p, s, "root", "$6$a$b", 20000);
        assert_eq!(np, p);
        assert!(ns.starts_with("root:$6$a$b:20000:0:99999:7:::\nbob:!:"));
        let (np, ns) = update_passwd_files(p, s, "alice", "$6$x$y", 20000);
        assert!(np.ends_with("alice:x:1001:1001::/home/alice:/bin/sh\n"));
        assert!(ns.ends_with("alice:$6$x$y:20000:0:99999:7:::\n"));
    }

    #[test]
    fn userpasswd_parsing_and_hash() {
        assert_eq!(parse_userpasswd("root:s3:cret").unwrap(), ("root".into(), "s3:cret".into()));
        for bad in ["root", "Root:x", ":x", "root:", "a b:x", "root:a\nb"] {
            assert!(parse_userpasswd(bad).is_err(), "{bad:?}");
        }
        let h = sha512_crypt("secret").unwrap();
        assert!(h.starts_with("$6$") && h.len() > 90, "{h}");
        assert_ne!(h, sha512_crypt("secret").unwrap());
    }
}
