//! Interface names and MAC addresses derived from the CTID, so they are stable across
//! restarts, checkpoints and migrations and never collide between containers.

use crate::ctid::Ctid;

/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Name of the venet device inside the container.
pub const VENET_INNER: &str = "venet0";

/// Host end of the venet pair: `fv<tag>`.
pub fn venet_host_if(ct: &Ctid) -> String {
    format!("fv{}", ct.short_tag(IFNAME_MAX - 2))
}

/// Host end of bridged interface `index`: `fe<tag>_<index>`. The `_` keeps "ctid 1, index 11"
/// apart from "ctid 11, index 1" (a tag never ends in `_<digits>` the same way twice because
/// the index is the part after the last `_` and is all digits).
pub fn veth_host_if(ct: &Ctid, index: usize) -> String {
    let idx = index.to_string();
    let room = IFNAME_MAX - 3 - idx.len();
    format!("fe{}_{idx}", ct.short_tag(room))
}

/// The temporary name, on the host, of the container end of the pair whose host end is
/// `host_if`, while a restore makes the pair beforehand (`precreate_restore_pairs`): `fw<tag>`
/// for the venet pair, `fd<tag>_<index>` for a bridged one.
pub fn restore_temp_if(host_if: &str) -> String {
    match host_if.strip_prefix("fv") {
        Some(rest) => format!("fw{rest}"),
        None => format!("fd{}", host_if.get(2..).unwrap_or(host_if)),
    }
}

fn mac_from(domain: &str, ct: &Ctid, index: usize) -> [u8; 6] {
    let mut h = blake3::Hasher::new();
    h.update(b"ferry-mac\0");
    h.update(domain.as_bytes());
    h.update(b"\0");
    h.update(ct.as_str().as_bytes());
    h.update(b"\0");
    h.update(&(index as u64).to_le_bytes());
    let d = h.finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d.as_bytes()[..6]);
    // Locally administered (bit 1 set), unicast (bit 0 clear).
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// A stable locally administered unicast MAC for bridged interface `index` of a container
/// (what `create --netif veth` stores in the config).
pub fn generate_veth_mac(ct: &Ctid, index: usize) -> [u8; 6] {
    mac_from("veth", ct, index)
}

/// The MAC both ends of the venet pair carry. Both ends are NOARP, and a NOARP device sends
/// to its own MAC, so equal MACs make each end accept what the other sends.
pub fn venet_mac(ct: &Ctid) -> [u8; 6] {
    mac_from("venet", ct, 0)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Chain holding a container's anti-spoofing rules (iptables chain names: ≤ 28 bytes).
pub fn filter_chain(host_if: &str) -> String {
    format!("FERRY-{host_if}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(s: &str) -> Ctid {
        Ctid::new(s).unwrap()
    }

    #[test]
    fn names_fit_and_differ() {
        let long = ct(&"x".repeat(64));
        for c in [ct("101"), long.clone(), ct("a.b"), ct("1234567890123")] {
            assert!(venet_host_if(&c).len() <= IFNAME_MAX, "{}", venet_host_if(&c));
            for i in [0, 9, 10, 99, 1000] {
                assert!(veth_host_if(&c, i).len() <= IFNAME_MAX, "{}", veth_host_if(&c, i));
            }
        }
        assert_eq!(venet_host_if(&ct("101")), "fv101");
        assert_eq!(veth_host_if(&ct("101"), 0), "fe101_0");
        assert_ne!(veth_host_if(&ct("1"), 11), veth_host_if(&ct("11"), 1));
        assert_ne!(venet_host_if(&long), venet_host_if(&ct(&"x".repeat(63))));
        assert!(filter_chain(&venet_host_if(&long)).len() <= 28);
    }

    #[test]
    fn macs_are_stable_local_unicast() {
        let a = generate_veth_mac(&ct("101"), 0);
        assert_eq!(a, generate_veth_mac(&ct("101"), 0));
        assert_ne!(a, generate_veth_mac(&ct("101"), 1));
        assert_ne!(a, generate_veth_mac(&ct("102"), 0));
        assert_ne!(a, venet_mac(&ct("101")));
        for m in [a, venet_mac(&ct("x"))] {
            assert_eq!(m[0] & 0x03, 0x02);
        }
        assert_eq!(parse_mac(&format_mac(&a)), Some(a));
        assert_eq!(parse_mac("02:00:00:00:00:0g"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
    }
}
