//! What networking undoes when a step fails halfway, checked on the tool calls a recording
//! fake keeps ([`FakeNetTools`]); no root, nothing reaches the host. The real devices, rules
//! and routes are tested by the integration tests (runtime/tests, tests/net_cli.rs).

use super::fake_tools::FakeNetTools;
use super::{
    add_ip_with, after_restore_with, del_ip_with, hold_new_connections_with, hold_traffic_with, precreate_restore_pairs_with, setup_with,
    teardown_with, CtNetns, FilterChain, HostRoute, NetState, ProxyEntry, VenetState,
};
use crate::config::{ContainerConfig, VethIf};
use crate::ctid::Ctid;
use std::net::IpAddr;

const ROUTES_V4: &str = r#"[{"dst":"default","dev":"eth0"},{"dst":"198.18.5.0/24","dev":"eth0"}]"#;

fn ns() -> CtNetns {
    CtNetns::new(std::fs::File::open("/dev/null").unwrap())
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(ipadd: &[&str], netifs: &[(&str, Option<&str>)], netdevs: &[&str]) -> ContainerConfig {
    let mut c = ContainerConfig::new(Ctid::new("101").unwrap());
    c.net.ipadd = ipadd.iter().map(|a| addr(a)).collect();
    c.net.netifs = netifs
        .iter()
        .enumerate()
        .map(|(i, (n, b))| VethIf { name: n.to_string(), bridge: b.map(str::to_string), mac: format!("02:00:00:00:00:0{i}") })
        .collect();
    c.net.netdevs = netdevs.iter().map(|d| d.to_string()).collect();
    c
}

/// What teardown runs for the venet pair of container 101 with address `a` proxied on eth0.
fn venet_teardown(a: &str) -> Vec<String> {
    let mut v = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        v.push(format!("{tool} -t raw -D PREROUTING -i fv101 -j FERRY-fv101"));
        v.push(format!("{tool} -t raw -F FERRY-fv101"));
        v.push(format!("{tool} -t raw -X FERRY-fv101"));
    }
    v.push(format!("ip -4 route del {a}/32 dev fv101"));
    v.push(format!("ip -4 neigh del proxy {a} dev eth0"));
    v.push("ip link del dev fv101".into());
    v
}

#[test]
fn a_setup_that_fails_at_the_bridge_removes_the_venet_pair_and_the_veth_it_made() {
    let t = FakeNetTools::new();
    t.answer("ip -4 -j route show table main", ROUTES_V4).fail("ip link set dev fe101_0 master br9", "Cannot find device \"br9\"");
    let e = setup_with(&t, &cfg(&["198.18.5.7"], &[("eth0", Some("br9"))], &[]), 42, &ns()).unwrap_err().to_string();
    assert!(e.contains("container 101: network setup") && e.contains("br9") && e.contains("nothing was left on the host"), "{e}");
    let calls = t.calls();
    // It got as far as the venet pair, its address and the bridged pair...
    for made in [
        "ip link add fv101 type veth peer name venet0 netns NS",
        "ip -batch: route replace 198.18.5.7/32 dev fv101",
        "ip link add fe101_0 type veth peer name eth0 netns NS",
    ] {
        assert!(calls.iter().any(|c| c == made), "{made:?} not in {calls:#?}");
    }
    // ...and then removed exactly that, the bridged pair last.
    let mut undo = venet_teardown("198.18.5.7");
    undo.push("ip link del dev fe101_0".into());
    assert_eq!(t.calls_after("ip link set dev fe101_0 master br9"), undo);
}

#[test]
fn a_setup_that_cannot_pass_a_device_through_moves_back_the_one_it_moved() {
    let t = FakeNetTools::new();
    t.answer("ip -j link show dev dummy1", r#"[{"ifindex":7,"ifname":"dummy1"}]"#)
        .fail("ip -j link show dev dummy2", "Device \"dummy2\" does not exist.")
        .answer("[ns] ip -j link show", r#"[{"ifindex":1,"ifname":"lo"},{"ifindex":7,"ifname":"dummy1"}]"#);
    let e = setup_with(&t, &cfg(&[], &[], &["dummy1", "dummy2"]), 42, &ns()).unwrap_err().to_string();
    assert!(e.contains("no device dummy2 on this host") && e.contains("nothing was left on the host"), "{e}");
    assert_eq!(
        t.calls(),
        [
            "ip -j link show dev dummy1",
            "ip link set dev dummy1 netns NS",
            "ip -j link show dev dummy2",
            "[ns] ip -j link show",
            "[ns] ip link set dev dummy1 netns HOSTNS",
        ]
    );
}

#[test]
fn a_device_the_container_renamed_goes_back_under_its_own_name() {
    let t = FakeNetTools::new();
    t.answer("ip -j link show dev dummy1", r#"[{"ifindex":7,"ifname":"dummy1"}]"#)
        .fail("ip link add fe101_0", "RTNETLINK answers: File exists")
        .answer("[ns] ip -j link show", r#"[{"ifindex":7,"ifname":"inside0"}]"#);
    // The veth fails after nothing was made; the device was never moved: nothing to undo.
    let c = cfg(&[], &[("eth0", None)], &["dummy1"]);
    setup_with(&t, &c, 42, &ns()).unwrap_err();
    assert_eq!(t.calls(), ["ip link add fe101_0 type veth peer name eth0 netns NS"]);

    // Once moved and renamed inside, it comes back and gets its name again.
    let t = FakeNetTools::new();
    t.answer("ip -j link show dev dummy1", r#"[{"ifindex":7,"ifname":"dummy1"}]"#)
        .answer("[ns] ip -j link show", r#"[{"ifindex":7,"ifname":"inside0"}]"#);
    let mut st = setup_with(&t, &cfg(&[], &[], &["dummy1"]), 42, &ns()).unwrap();
    super::detach_netdevs_with(&t, &mut st, Some(&ns())).unwrap();
    assert!(st.moved_devs.is_empty());
    assert_eq!(
        t.calls_after("ip link set dev dummy1 netns NS"),
        ["[ns] ip -j link show", "[ns] ip link set dev inside0 netns HOSTNS", "ip link set dev inside0 down", "ip link set dev inside0 name dummy1"]
    );
}

fn venet_state(addrs: &[&str]) -> NetState {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| addr(a)).collect();
    NetState {
        ctid: "101".into(),
        pid: 42,
        host_links: vec!["fv101".into()],
        venet: Some(VenetState { host_if: "fv101".into(), addrs: addrs.clone() }),
        routes: addrs.iter().map(|a| HostRoute { dst: *a, dev: "fv101".into() }).collect(),
        proxies: addrs.iter().map(|a| ProxyEntry { addr: *a, dev: "eth0".into() }).collect(),
        filters: [false, true].map(|v6| FilterChain { v6, table: "raw".into(), chain: "FERRY-fv101".into(), in_if: "fv101".into() }).to_vec(),
        ..Default::default()
    }
}

#[test]
fn teardown_ignores_what_is_gone_and_goes_on_past_a_failure() {
    let t = FakeNetTools::new();
    t.fail("iptables -t raw -D PREROUTING", "iptables: Bad rule (does a matching rule exist in that chain?).")
        .fail("ip link del dev fv101", "RTNETLINK answers: Operation not permitted");
    let mut st = venet_state(&["198.18.5.7"]);
    st.host_links.push("fe101_0".into());
    let e = teardown_with(&t, &st).unwrap_err().to_string();
    assert!(e.contains("container 101: network teardown") && e.contains("Operation not permitted") && e.contains("run stop/destroy again"), "{e}");
    assert!(!e.contains("Bad rule"), "an absent rule is no failure: {e}");
    let mut all = venet_teardown("198.18.5.7");
    all.push("ip link del dev fe101_0".into());
    assert_eq!(t.calls(), all, "every removal is tried, the one after the failure too");

    // Run again with everything gone: no error.
    let t = FakeNetTools::new();
    t.fail("ip ", "Cannot find device \"fv101\"").fail("iptables", "iptables: No chain/target/match by that name.");
    t.fail("ip6tables", "ip6tables: No chain/target/match by that name.");
    teardown_with(&t, &st).unwrap();
}

#[test]
fn del_ip_removes_that_address_only() {
    let t = FakeNetTools::new();
    let mut st = venet_state(&["198.18.5.7", "198.18.5.8"]);
    del_ip_with(&t, &mut st, &ns(), addr("198.18.5.7")).unwrap();
    assert_eq!(
        t.calls(),
        [
            "[ns] ip link show dev venet0",
            "[ns] ip -4 addr del 198.18.5.7/32 dev venet0",
            "ip -4 route del 198.18.5.7/32 dev fv101",
            "ip -4 neigh del proxy 198.18.5.7 dev eth0",
            "iptables -t raw -D FERRY-fv101 -s 198.18.5.7 -j RETURN",
        ]
    );
    assert_eq!(st, venet_state(&["198.18.5.8"]));
}

#[test]
fn add_ip_that_fails_halfway_records_what_teardown_must_remove() {
    let t = FakeNetTools::new();
    t.answer("ip -4 -j route show table main", ROUTES_V4).fail("ip -batch: neigh replace proxy", "RTNETLINK answers: Invalid argument");
    let mut st = venet_state(&["198.18.5.7"]);
    let e = add_ip_with(&t, &cfg(&["198.18.5.7"], &[], &[]), &mut st, &ns(), addr("198.18.5.9")).unwrap_err().to_string();
    assert!(e.contains("container 101: add address") && e.contains("Invalid argument"), "{e}");
    // The route went in before the proxy entry failed: both are recorded, the address is not.
    assert_eq!(st.venet.as_ref().unwrap().addrs, [addr("198.18.5.7")]);
    assert!(st.routes.iter().any(|r| r.dst == addr("198.18.5.9")));
    assert!(st.proxies.iter().any(|p| p.addr == addr("198.18.5.9")));
    assert!(!t.calls().iter().any(|c| c.contains("-j RETURN")), "no filter rule after the failure: {:#?}", t.calls());

    let t = FakeNetTools::new();
    teardown_with(&t, &st).unwrap();
    let calls = t.calls();
    for gone in ["ip -4 route del 198.18.5.9/32 dev fv101", "ip -4 neigh del proxy 198.18.5.9 dev eth0"] {
        assert!(calls.iter().any(|c| c == gone), "{gone:?} not in {calls:#?}");
    }
}

#[test]
fn after_restore_without_a_bridged_end_removes_the_venet_side_again() {
    let t = FakeNetTools::new();
    t.answer("ip -4 -j route show table main", ROUTES_V4).link("fv101");
    let e = after_restore_with(&t, &cfg(&["198.18.5.7"], &[("eth0", None)], &[]), 42, &ns()).unwrap_err().to_string();
    assert!(e.contains("fe101_0 is missing") && e.contains("veth[eth0]:fe101_0") && e.contains("the host side was removed again"), "{e}");
    // The bridged pair was CRIU's to make: only the venet side ferry set up goes.
    assert_eq!(t.calls_after("ip -batch: neigh replace proxy 198.18.5.7 dev eth0"), venet_teardown("198.18.5.7"));
}

#[test]
fn pairs_made_before_a_restore_go_when_one_cannot_be_made() {
    let t = FakeNetTools::new();
    t.fail("ip link add fe101_0", "RTNETLINK answers: File exists");
    let pairs = [("venet0".to_string(), "fv101".to_string()), ("eth0".to_string(), "fe101_0".to_string())];
    let e = precreate_restore_pairs_with(&t, &pairs).unwrap_err().to_string();
    assert!(e.contains("File exists"), "{e}");
    assert_eq!(
        t.calls(),
        ["ip link add fv101 type veth peer name fw101", "ip link add fe101_0 type veth peer name fd101_0", "ip link del dev fv101"]
    );
}

#[test]
fn the_traffic_hold_of_a_migration() {
    let c = cfg(&["198.18.5.7", "2001:2::7"], &[], &[]);
    let t = FakeNetTools::new();
    hold_traffic_with(&t, &c, true).unwrap();
    assert_eq!(t.calls(), ["ip -batch: route replace blackhole 198.18.5.7/32", "ip -batch: route replace blackhole 2001:2::7/128"]);

    // Releasing a hold that is gone already is no failure; each line is tried.
    let t = FakeNetTools::new();
    t.fail("ip -force -batch: route del blackhole 198.18.5.7/32", "RTNETLINK answers: No such process");
    hold_traffic_with(&t, &c, false).unwrap();
    assert_eq!(t.calls(), ["ip -force -batch: route del blackhole 198.18.5.7/32", "ip -force -batch: route del blackhole 2001:2::7/128"]);

    let t = FakeNetTools::new();
    t.fail("ip -batch", "RTNETLINK answers: Operation not permitted");
    let e = hold_traffic_with(&t, &c, true).unwrap_err().to_string();
    assert!(e.contains("container 101: migrate: hold back its traffic here") && e.contains("Operation not permitted"), "{e}");
}

#[test]
fn releasing_new_connections_removes_every_copy_of_the_rule() {
    let c = cfg(&["198.18.5.7"], &[], &[]);
    let rule = "PREROUTING -d 198.18.5.7 -p tcp --syn -m comment --comment ferry-drain-101 -j DROP";
    let absent = "iptables: Bad rule (does a matching rule exist in that chain?).";

    // Two copies (a crashed migration left one): both go, then the check finds none.
    let t = FakeNetTools::new();
    t.answer_once("iptables -t raw -C", "").answer_once("iptables -t raw -C", "").fail("iptables -t raw -C", absent);
    hold_new_connections_with(&t, &c, false).unwrap();
    let (check, del) = (format!("iptables -t raw -C {rule}"), format!("iptables -t raw -D {rule}"));
    assert_eq!(t.calls(), [check.clone(), del.clone(), check.clone(), del.clone(), check.clone()]);

    // Holding adds the rule once: not again when it is there.
    let t = FakeNetTools::new();
    t.fail("iptables -t raw -C", absent);
    hold_new_connections_with(&t, &c, true).unwrap();
    assert_eq!(t.calls(), [check.clone(), format!("iptables -t raw -I {rule}")]);
    let t = FakeNetTools::new();
    hold_new_connections_with(&t, &c, true).unwrap();
    assert_eq!(t.calls(), std::slice::from_ref(&check));

    // A removal that fails stops the loop and says so.
    let t = FakeNetTools::new();
    t.fail("iptables -t raw -D", "iptables: Permission denied");
    let e = hold_new_connections_with(&t, &c, false).unwrap_err().to_string();
    assert!(e.contains("let through new connections to 198.18.5.7") && e.contains("Permission denied"), "{e}");
    assert_eq!(t.calls(), [check, del]);
}
