//! The Shield with real packets: a veth pair into a network namespace, the XDP program
//! attached on the host end, pings from allowed and denied sources.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::process::Output;

use ironclad_bpf::{Loader, Shield};
use ironclad_core::abi::{Action, ShieldTotal};
use ironclad_core::require_privileges;
use ironclad_core::testing::{BpffsDir, NetNs, VethPair};

/// One namespace per test, each on its own subnet (the host ends share the root
/// namespace, so tests running in parallel must not reuse addresses).
struct Lab {
    net: u8,
    ns: NetNs,
    veth: VethPair,
    _pins: BpffsDir,
    loader: Loader,
}

fn lab(tag: &str, net: u8) -> Lab {
    let pins = BpffsDir::new(tag).expect("bpffs dir");
    let ns = NetNs::new(tag).expect("netns");
    let veth = VethPair::new(
        &ns,
        &[&format!("10.201.{net}.1/24"), &format!("fd20:{net}::1/64")],
        &[
            &format!("10.201.{net}.2/24"),
            &format!("10.201.{net}.3/24"),
            &format!("fd20:{net}::2/64"),
            &format!("fd20:{net}::3/64"),
        ],
    )
    .expect("veth");
    // Static neighbours, so the only IPv6 packets from the test sources are the pings.
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.host()))
        .expect("host mac");
    ns.exec(&[
        "ip",
        "-6",
        "neigh",
        "replace",
        &format!("fd20:{net}::1"),
        "lladdr",
        host_mac.trim(),
        "dev",
        veth.peer(),
        "nud",
        "permanent",
    ])
    .expect("static neighbour");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    Lab {
        net,
        ns,
        veth,
        _pins: pins,
        loader,
    }
}

impl Lab {
    /// Address `host` of this lab's IPv4 (`v6 == false`) or IPv6 subnet.
    fn addr(&self, host: u8, v6: bool) -> String {
        if v6 {
            format!("fd20:{}::{host}", self.net)
        } else {
            format!("10.201.{}.{host}", self.net)
        }
    }

    /// Pings host .1 from source `.from` in the namespace.
    fn ping(&self, from: u8, v6: bool, count: u32) -> bool {
        ping(&self.ns, &self.addr(from, v6), &self.addr(1, v6), count)
            .status
            .success()
    }
}

fn ping(ns: &NetNs, from: &str, to: &str, count: u32) -> Output {
    let mut cmd = ns.command("ping");
    if to.contains(':') {
        cmd.arg("-6");
    }
    cmd.args([
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        from,
        to,
    ])
    .output()
    .expect("ping (iputils-ping) must be installed")
}

#[test]
fn denied_sources_are_dropped_and_counted_exactly() {
    require_privileges!();
    let lab = lab("shield", 1);
    let shield = Shield::load(&lab.loader).expect("load");
    let deny_v4 = format!("{}/32", lab.addr(3, false));
    let deny_v6 = format!("{}/128", lab.addr(3, true));
    shield
        .insert_rule(deny_v4.parse().expect("cidr"), 1, Action::Deny)
        .expect("rule");
    shield
        .insert_rule(deny_v6.parse().expect("cidr"), 2, Action::Deny)
        .expect("rule");
    let _attached = shield.attach(lab.veth.host()).expect("attach");

    assert!(lab.ping(2, false, 3), "allowed v4 passes");
    assert!(lab.ping(2, true, 3), "allowed v6 passes");
    assert!(!lab.ping(3, false, 3), "denied v4 dropped");
    assert!(!lab.ping(3, true, 3), "denied v6 dropped");

    let v4 = shield.rule_counter(1).expect("counter");
    let v6 = shield.rule_counter(2).expect("counter");
    assert_eq!(v4.packets, 3, "one count per denied IPv4 echo request");
    assert_eq!(v6.packets, 3, "one count per denied IPv6 echo request");
    assert_eq!(
        v4.bytes,
        3 * 98,
        "3 x (14 Ethernet + 20 IPv4 + 8 ICMP + 56 data)"
    );
    let totals = shield.totals().expect("totals");
    let dropped = totals
        .iter()
        .find(|(t, _)| *t == ShieldTotal::Dropped)
        .map(|(_, c)| c.packets);
    assert_eq!(dropped, Some(6));
}

#[test]
fn dropping_the_handle_detaches_and_traffic_flows_again() {
    require_privileges!();
    let lab = lab("detach", 2);
    let shield = Shield::load(&lab.loader).expect("load");
    shield
        .insert_rule(
            format!("{}/24", lab.addr(0, false)).parse().expect("cidr"),
            1,
            Action::Deny,
        )
        .expect("rule");
    let attached = shield.attach(lab.veth.host()).expect("attach");
    assert!(!lab.ping(2, false, 1));
    drop(attached);
    assert!(lab.ping(2, false, 1));
}

#[test]
fn attaching_to_a_missing_interface_is_a_typed_error() {
    require_privileges!();
    let lab = lab("noif", 3);
    let shield = Shield::load(&lab.loader).expect("load");
    let err = shield
        .attach("ic-no-such-if")
        .expect_err("no such interface");
    assert!(
        matches!(err, ironclad_bpf::BpfError::NoSuchInterface { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ic-no-such-if"));
}
