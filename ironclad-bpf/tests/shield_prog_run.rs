//! The Shield's verdicts through `BPF_PROG_TEST_RUN`: the real program in the real
//! kernel, fed hand-built frames, no interface needed.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::net::{Ipv4Addr, Ipv6Addr};

use ironclad_bpf::{Loader, Shield};
use ironclad_core::abi::{Action, ShieldTotal};
use ironclad_core::require_privileges;
use ironclad_core::testing::{frames, BpffsDir};
use ironclad_policy::shield::Mode;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn shield(tag: &str) -> (BpffsDir, Shield) {
    let pins = BpffsDir::new(tag).expect("bpffs dir");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load");
    shield
        .insert_rule("198.51.100.0/24".parse().expect("cidr"), 1, Action::Deny)
        .expect("rule");
    shield
        .insert_rule("198.51.100.7/32".parse().expect("cidr"), 2, Action::Allow)
        .expect("rule");
    shield
        .insert_rule("2001:db8:bad::/48".parse().expect("cidr"), 3, Action::Deny)
        .expect("rule");
    shield
        .add_valve("198.51.100.9/32".parse().expect("cidr"))
        .expect("valve");
    (pins, shield)
}

fn v4(last: u8) -> Vec<u8> {
    frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, last),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    )
}

fn total(shield: &Shield, which: ShieldTotal) -> u64 {
    shield
        .totals()
        .expect("totals")
        .into_iter()
        .find(|(t, _)| *t == which)
        .map_or(0, |(_, c)| c.packets)
}

#[test]
fn verdicts_follow_longest_prefix_and_the_valve() {
    require_privileges!();
    let (_pins, shield) = shield("verdicts");
    let run = |frame: &[u8]| shield.test_run(frame, 1).expect("test run").return_value;

    assert_eq!(run(&v4(1)), XDP_DROP, "inside the denied /24");
    assert_eq!(run(&v4(7)), XDP_PASS, "allow /32 inside the denied /24");
    assert_eq!(run(&v4(9)), XDP_PASS, "management valve beats the deny");
    let outside = frames::ipv4_udp(Ipv4Addr::new(192, 0, 2, 5), Ipv4Addr::new(192, 0, 2, 1), 18);
    assert_eq!(run(&outside), XDP_PASS, "no rule");
    let bad6: Ipv6Addr = "2001:db8:bad::1".parse().expect("addr");
    let good6: Ipv6Addr = "2001:db8:900d::1".parse().expect("addr");
    let dst6: Ipv6Addr = "2001:db8::1".parse().expect("addr");
    assert_eq!(run(&frames::ipv6_udp(bad6, dst6, 18)), XDP_DROP);
    assert_eq!(run(&frames::ipv6_udp(good6, dst6, 18)), XDP_PASS);
    assert_eq!(
        run(&frames::with_vlan(&v4(1), 42)),
        XDP_DROP,
        "one VLAN tag"
    );
    assert_eq!(
        run(&frames::with_vlan(&frames::with_vlan(&v4(1), 42), 7)),
        XDP_DROP,
        "two VLAN tags"
    );
    assert_eq!(run(&frames::arp()), XDP_PASS, "not IP");

    assert_eq!(shield.rule_counter(1).expect("counter").packets, 3);
    assert_eq!(shield.rule_counter(2).expect("counter").packets, 1);
    assert_eq!(shield.rule_counter(3).expect("counter").packets, 1);
    assert_eq!(total(&shield, ShieldTotal::Valve), 1);
    assert_eq!(total(&shield, ShieldTotal::NonIp), 1);
    assert_eq!(total(&shield, ShieldTotal::Dropped), 4);
}

#[test]
fn dry_run_passes_everything_but_counts_would_drop() {
    require_privileges!();
    let (_pins, shield) = shield("dryrun");
    shield.set_mode(Mode::DryRun).expect("dry-run on");
    assert_eq!(shield.mode().expect("read mode"), Mode::DryRun);
    let out = shield.test_run(&v4(1), 5).expect("test run");
    assert_eq!(out.return_value, XDP_PASS);
    assert_eq!(shield.rule_counter(1).expect("counter").packets, 5);
    assert_eq!(total(&shield, ShieldTotal::WouldDrop), 5);
    assert_eq!(total(&shield, ShieldTotal::Dropped), 0);
}

#[test]
fn truncated_and_malformed_frames_pass_and_are_counted() {
    require_privileges!();
    let (_pins, shield) = shield("malformed");
    let full = v4(1);
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44; // IHL 4 (< 5)
    let mut huge_ihl = full.clone();
    huge_ihl[14] = 0x4f; // IHL 15: 60-byte header past the end of this frame
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ethernet header only", full[..14].to_vec()),
        ("truncated IPv4 header", full[..14 + 12].to_vec()),
        ("IHL below 5", bad_ihl),
        ("IHL past the end", huge_ihl[..14 + 24].to_vec()),
        (
            "truncated VLAN tag",
            frames::with_vlan(&full, 1)[..16].to_vec(),
        ),
        (
            "truncated IPv6 header",
            frames::ipv6_udp(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 0)[..14 + 30].to_vec(),
        ),
    ];
    for (what, frame) in &cases {
        let out = shield.test_run(frame, 1).expect(what);
        assert_eq!(out.return_value, XDP_PASS, "{what}");
    }
    assert_eq!(total(&shield, ShieldTotal::Malformed), cases.len() as u64);
    assert_eq!(shield.rule_counter(1).expect("counter").packets, 0);
}
