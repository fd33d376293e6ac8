//! NAT against the kernel: a router namespace R between a namespace A (outside) and a
//! namespace B (inside), forwarding on in R only, checksum offload off on every veth.
//! The firewall runs on R's end towards A with port forwards to a server in B and a
//! masquerade of B's network; python clients and servers on both sides check the
//! addresses each sees, payloads byte for byte, and the kernels' checksum-error
//! counters. TCP and UDP, IPv4 and IPv6.
//!
//! The firewall is loaded, configured and attached from a thread that has entered R
//! (interface names and indexes are R's), so the host's own forwarding settings are
//! never touched.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use ironclad_bpf::{
    Firewall, FirewallSettings, Forward, Loader, NatSettings, SourceNat, TcMechanism,
};
use ironclad_core::abi::FwTotal;
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{Direction, FwAction, FwProto, FwRule};
use ironclad_policy::nat::NatProto;
use ironclad_testing::probe::{checksum_errors, offload_off, servers, tcp_client, udp_client};
use ironclad_testing::{flood, require_privileges, BpffsDir, NetNs, VethPair};

fn rule(i: usize, proto: FwProto, dport: u16) -> FwRule {
    let mut r = FwRule::new(
        Origin::field(format!("firewall.rules[{i}]")),
        Direction::In,
        proto,
    );
    r.dport = vec![(dport, dport)];
    r.action = FwAction::Accept;
    r
}

#[test]
fn port_forwards_and_masquerade_through_a_router_namespace_both_families() {
    require_privileges!();
    nat_through_a_router(TcMechanism::probe(), "nat");
}

/// The same, with the firewall as classic tc filters (the mechanism of kernels before
/// 6.6): port forwards and masquerade rewrite and redirect there too.
#[test]
fn port_forwards_and_masquerade_on_classic_tc_filters() {
    require_privileges!();
    nat_through_a_router(TcMechanism::Clsact, "natc");
}

/// A, B and R (namespaces named after `tag`), the firewall on R's end towards A by
/// `mechanism`, and every check of this suite.
fn nat_through_a_router(mechanism: TcMechanism, tag: &str) {
    let (a, b, r) = (
        NetNs::new(&format!("{tag}a")).expect("netns"),
        NetNs::new(&format!("{tag}b")).expect("netns"),
        NetNs::new(&format!("{tag}r")).expect("netns"),
    );
    let pins = BpffsDir::new(tag).expect("bpffs");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                flood::enter(r.name()).expect("enter R");
                // R's ends are created in R (this thread's namespace).
                let to_a = VethPair::new(
                    &a,
                    &["10.217.1.1/24", "fd00:218:1::1/64"],
                    &["10.217.1.2/24", "fd00:218:1::2/64"],
                )
                .expect("veth to A");
                let to_b = VethPair::new(
                    &b,
                    &["10.217.2.1/24", "fd00:218:2::1/64"],
                    &["10.217.2.2/24", "fd00:218:2::2/64"],
                )
                .expect("veth to B");
                for (ns, dev) in [(&a, to_a.peer()), (&b, to_b.peer())] {
                    offload_off(Some(ns), dev).expect("ethtool -K");
                }
                offload_off(None, to_a.host()).expect("ethtool -K");
                offload_off(None, to_b.host()).expect("ethtool -K");
                // B reaches everything through R; A knows only its own network (a
                // masquerade is what lets B's connections back to it).
                b.exec(&["ip", "route", "add", "default", "via", "10.217.2.1"])
                    .expect("route");
                b.exec(&[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    "fd00:218:2::1",
                ])
                .expect("route6");
                ironclad_testing::run(
                    "sysctl",
                    &[
                        "-qw",
                        "net.ipv4.ip_forward=1",
                        "net.ipv6.conf.all.forwarding=1",
                    ],
                )
                .expect("forwarding in R");

                let loader = Loader::builder()
                    .pin_root(pins.path())
                    .build()
                    .expect("loader");
                let firewall = Firewall::load(&loader).expect("load");
                // Inbound on R's end towards A: only the forwards' targets (the rules
                // see the translated destination) and nothing else.
                let rules = [rule(0, FwProto::Tcp, 80), rule(1, FwProto::Udp, 53)];
                firewall
                    .apply(&FirewallSettings::default().drop_inbound(true), &rules)
                    .expect("rules");
                let masq4 = ironclad_bpf::interface_address(to_a.host(), false).expect("v4");
                let masq6 = ironclad_bpf::interface_address(to_a.host(), true).expect("v6");
                assert_eq!(masq4.to_string(), "10.217.1.1");
                assert_eq!(masq6.to_string(), "fd00:218:1::1");
                let nat = NatSettings::default()
                    .forward(Forward::new(
                        to_a.host(),
                        NatProto::Tcp,
                        Some(8080),
                        "10.217.2.2".parse().expect("ip"),
                        Some(80),
                    ))
                    .forward(Forward::new(
                        to_a.host(),
                        NatProto::Udp,
                        Some(5353),
                        "10.217.2.2".parse().expect("ip"),
                        Some(53),
                    ))
                    .forward(Forward::new(
                        to_a.host(),
                        NatProto::Tcp,
                        Some(8080),
                        "fd00:218:2::2".parse().expect("ip"),
                        Some(80),
                    ))
                    .forward(Forward::new(
                        to_a.host(),
                        NatProto::Udp,
                        Some(5353),
                        "fd00:218:2::2".parse().expect("ip"),
                        Some(53),
                    ))
                    .source(SourceNat::new(
                        to_a.host(),
                        "10.217.2.0/24".parse().expect("net"),
                        masq4,
                    ))
                    .source(SourceNat::new(
                        to_a.host(),
                        "fd00:218:2::/64".parse().expect("net"),
                        masq6,
                    ));
                firewall.set_nat(&nat).expect("nat");
                let attached = firewall
                    .attach_with(to_a.host(), mechanism)
                    .expect("attach");
                assert_eq!(attached.mechanism(), mechanism);

                let _in_b = servers(&b, 80).expect("servers");
                let _udp_b = servers(&b, 53).expect("servers");
                let _in_a = servers(&a, 9000).expect("servers");
                let errors = (
                    checksum_errors(&a).expect("snmp"),
                    checksum_errors(&b).expect("snmp"),
                );

                for v6 in [false, true] {
                    let family = if v6 { "IPv6" } else { "IPv4" };
                    let (r_a, a_addr) = if v6 {
                        ("fd00:218:1::1", "fd00:218:1::2")
                    } else {
                        ("10.217.1.1", "10.217.1.2")
                    };
                    // DNAT: A connects to R's port 8080, the server in B answers and
                    // sees A's own address.
                    assert_eq!(
                        tcp_client(&a, r_a, 8080, 1 << 20).expect("python3"),
                        format!("{a_addr} intact"),
                        "{family} TCP port forward"
                    );
                    assert_eq!(
                        udp_client(&a, r_a, 5353, 1200).expect("python3"),
                        format!("{a_addr} intact"),
                        "{family} UDP port forward: the answer comes back from R's 5353"
                    );
                    // SNAT: B connects to A's server, which sees R's address.
                    let a_server = if v6 { "fd00:218:1::2" } else { "10.217.1.2" };
                    assert_eq!(
                        tcp_client(&b, a_server, 9000, 1 << 20).expect("python3"),
                        format!("{r_a} intact"),
                        "{family} TCP masquerade"
                    );
                    assert_eq!(
                        udp_client(&b, a_server, 9000, 1200).expect("python3"),
                        format!("{r_a} intact"),
                        "{family} UDP masquerade"
                    );
                }
                assert_eq!(
                    (
                        checksum_errors(&a).expect("snmp"),
                        checksum_errors(&b).expect("snmp")
                    ),
                    errors,
                    "no checksum errors on either side"
                );

                // The rules decide the translated connection: a port with no forward
                // is dropped, and so is a forward whose target port no rule admits.
                let both = nat.clone().forward(Forward::new(
                    to_a.host(),
                    NatProto::Tcp,
                    Some(8081),
                    "10.217.2.2".parse().expect("ip"),
                    Some(81),
                ));
                firewall.set_nat(&both).expect("nat");
                assert!(
                    !a.tcp_connects("", "10.217.1.1", 8081, 1.0)
                        .expect("python3"),
                    "no rule admits port 81 on B"
                );
                assert!(!a
                    .tcp_connects("", "10.217.1.1", 8082, 1.0)
                    .expect("python3"));

                // A rule admitting a forward's target admits connections made to the
                // target directly too (red team round 3, L4): A, given a route to B's
                // network through R (as any neighbour on R's outside link can add),
                // reaches B's port 80 without the forward. With `dnat: true` the rules
                // admit only what a forward translated.
                a.exec(&["ip", "route", "add", "10.217.2.0/24", "via", "10.217.1.1"])
                    .expect("route");
                a.exec(&[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "fd00:218:2::/64",
                    "via",
                    "fd00:218:1::1",
                ])
                .expect("route6");
                for target in ["10.217.2.2", "fd00:218:2::2"] {
                    assert!(
                        a.tcp_connects("", target, 80, 1.0).expect("python3"),
                        "a plain rule admits {target}:80 directly"
                    );
                }
                let forwarded_only: Vec<FwRule> = rules
                    .iter()
                    .map(|r| {
                        let mut built = r.clone();
                        built.dnat = true;
                        built
                    })
                    .collect();
                firewall
                    .apply(
                        &FirewallSettings::default().drop_inbound(true),
                        &forwarded_only,
                    )
                    .expect("rules");
                for (target, outside, family) in [
                    ("10.217.2.2", "10.217.1.1", "IPv4"),
                    ("fd00:218:2::2", "fd00:218:1::1", "IPv6"),
                ] {
                    assert!(
                        !a.tcp_connects("", target, 80, 1.0).expect("python3"),
                        "{family}: with dnat: true the target is not reached directly"
                    );
                    assert!(
                        a.tcp_connects("", outside, 8080, 1.0).expect("python3"),
                        "{family}: the forward still is"
                    );
                    assert_eq!(
                        udp_client(&a, outside, 5353, 1200).expect("python3"),
                        format!(
                            "{} intact",
                            if family == "IPv6" {
                                "fd00:218:1::2"
                            } else {
                                "10.217.1.2"
                            }
                        ),
                        "{family}: and the UDP forward"
                    );
                }
                firewall
                    .apply(&FirewallSettings::default().drop_inbound(true), &rules)
                    .expect("rules");

                // conntrack shows the translations; the counters count them.
                let conns = firewall.connections().expect("connections");
                let dnat = conns
                    .iter()
                    .filter_map(|c| c.nat.as_ref())
                    .find(|t| t.kind == "dnat" && t.outside.1 == 8080)
                    .expect("a translated connection");
                assert_eq!(dnat.inside.1, 80, "{dnat:?}");
                let snat = conns
                    .iter()
                    .filter_map(|c| c.nat.as_ref())
                    .find(|t| t.kind == "snat")
                    .expect("a masqueraded connection");
                assert!(
                    snat.outside.0 == masq4 || snat.outside.0 == masq6,
                    "{snat:?}"
                );
                let status = firewall.nat_status().expect("status");
                assert_eq!((status.forwards, status.sources), (5, 2));
                for (i, c) in status.forward_counters.iter().take(4).enumerate() {
                    assert!(c.packets > 0, "forward {i} counted: {status:?}");
                }
                assert!(
                    status.source_counters.iter().all(|c| c.packets > 0),
                    "{status:?}"
                );
                assert!(
                    firewall
                        .total(FwTotal::NatTranslated)
                        .expect("total")
                        .packets
                        > 100
                );
                assert_eq!(
                    firewall.total(FwTotal::NatFailed).expect("total").packets,
                    0
                );

                // Off: nothing is translated any more, and A reaches R's 8080 as a
                // closed port (no listener in R).
                firewall.set_nat(&NatSettings::default()).expect("off");
                assert_eq!(firewall.nat_status().expect("status").forwards, 0);
                assert!(!a
                    .tcp_connects("", "10.217.1.1", 8080, 1.0)
                    .expect("python3"));
                drop(to_a);
                drop(to_b);
            })
            .join()
            .expect("the test thread");
    });
}
