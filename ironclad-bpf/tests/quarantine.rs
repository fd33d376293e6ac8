//! Quarantine against the kernel, through a veth pair into a namespace: datagrams the
//! host sends from an address in the IOC set's VLAN entry leave with an 802.1Q tag
//! (read by a raw socket on the far side, with the kernel's VLAN metadata); datagrams
//! from the namespace's source in the redirect entry come out in a sandbox namespace
//! instead of reaching the host; clean sources pass as before. (Tagging arriving
//! packets needs a VLAN sub-interface to receive them, which these machines' kernel,
//! built without 802.1Q, cannot create.)

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ironclad_bpf::{Loader, Quarantine, QuarantineAction};
use ironclad_core::abi::QuarantineTotal;
use ironclad_testing::{require_privileges, BpffsDir, NetNs, VethPair};

/// Prints `SOURCE 0` for every datagram a UDP socket on 10.221.1.1:7777 receives
/// within `secs` seconds: what reached the host's stack.
const RECEIVE: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.221.1.1", 7777))
s.settimeout(0.1)
print("listening", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        _, (src, _) = s.recvfrom(100)
    except socket.timeout:
        continue
    print(src, 0, flush=True)
"#;

struct Capture {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Capture {
    fn start(cmd: Command, iface: &str) -> Self {
        Self::run(cmd, ironclad_testing::wire::UDP_7777, iface)
    }

    fn run(mut cmd: Command, script: &str, iface: &str) -> Self {
        let mut child = cmd
            .args(["-c", script, iface, ironclad_testing::wire::LISTEN_SECONDS])
            .stdout(Stdio::piped())
            .spawn()
            .expect("capture");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("read");
        assert_eq!(first.trim(), "listening");
        Self { child, out }
    }

    /// `SOURCE VLAN` lines (the wire capture's TTL column left out).
    fn sources(mut self) -> Vec<String> {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).expect("read");
        self.child.wait().expect("capture");
        rest.lines()
            .map(
                |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                    [src, _ttl, vlan] => format!("{src} {vlan}"),
                    _ => line.to_string(),
                },
            )
            .collect()
    }
}

/// Three datagrams from `src` (any port) to `dst:7777`, sent by the test itself.
fn send(src: &str, dst: &str) {
    let socket = std::net::UdpSocket::bind((src, 0)).expect("bind");
    for _ in 0..3 {
        socket.send_to(b"x", (dst, 7777)).expect("send");
    }
}

/// Three datagrams from `src` (any port) to `dst:7777`, sent from inside `ns`.
fn send_in(ns: &NetNs, src: &str, dst: &str) {
    let addr = |a: &str, port| std::net::SocketAddr::new(a.parse().expect("address"), port);
    for _ in 0..3 {
        ns.udp_send(addr(src, 0), addr(dst, 7777), b"x")
            .expect("send from the namespace");
    }
}

#[test]
fn ioc_sources_are_tagged_into_the_vlan_or_redirected_to_the_sandbox_and_others_pass() {
    require_privileges!();
    let ns = NetNs::new("quar").expect("netns");
    let veth = VethPair::new(
        &ns,
        &["10.221.1.1/24", "10.221.1.5/24"],
        &["10.221.1.2/24", "10.221.1.4/24"],
    )
    .expect("veth");
    let sandbox = NetNs::new("quarsb").expect("netns");
    let sandbox_veth =
        VethPair::new(&sandbox, &["10.221.2.1/24"], &["10.221.2.2/24"]).expect("sandbox veth");
    let pins = BpffsDir::new("quar").expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let quarantine = Quarantine::load(&loader).expect("load");
    quarantine
        .set(
            &["10.221.1.5/32".parse().expect("net")],
            QuarantineAction::Vlan(666),
        )
        .expect("vlan entry");
    quarantine
        .set(
            &["10.221.1.4/32".parse().expect("net")],
            QuarantineAction::Redirect(sandbox_veth.host().to_string()),
        )
        .expect("redirect entry");
    let _attached = quarantine.attach(veth.host()).expect("attach");

    let on_host = Capture::run(Command::new("python3"), RECEIVE, "-");
    let on_peer = Capture::start(ns.command("python3"), veth.peer());
    let in_sandbox = Capture::start(sandbox.command("python3"), sandbox_veth.peer());
    // From the namespace: a clean source and the one to redirect.
    for src in ["10.221.1.2", "10.221.1.4"] {
        send_in(&ns, src, "10.221.1.1");
    }
    // From the host: its clean address and its quarantined one.
    for src in ["10.221.1.1", "10.221.1.5"] {
        send(src, "10.221.1.2");
    }
    std::thread::sleep(Duration::from_millis(200));
    let (host, peer, sandbox_seen) = (on_host.sources(), on_peer.sources(), in_sandbox.sources());
    let count = |v: &[String], s: &str| v.iter().filter(|x| *x == s).count();
    assert_eq!(
        count(&peer, "10.221.1.5 666"),
        3,
        "tagged on the wire: {peer:?}"
    );
    assert_eq!(
        count(&peer, "10.221.1.1 0"),
        3,
        "the clean address untagged: {peer:?}"
    );
    assert_eq!(
        count(&sandbox_seen, "10.221.1.4 0"),
        3,
        "redirected: {sandbox_seen:?}"
    );
    assert_eq!(
        sandbox_seen.len(),
        3,
        "only the redirected source: {sandbox_seen:?}"
    );
    assert_eq!(
        count(&host, "10.221.1.2 0"),
        3,
        "the clean source as before: {host:?}"
    );
    assert!(
        !host.iter().any(|l| l.starts_with("10.221.1.4 ")),
        "the redirected source never reached the host: {host:?}"
    );
    let total = |t| quarantine.total(t).expect("total").packets;
    assert_eq!(total(QuarantineTotal::Tagged), 3);
    assert_eq!(total(QuarantineTotal::Redirected), 3);
    assert_eq!(total(QuarantineTotal::Failed), 0);

    // Out of the set: the address leaves untagged again.
    assert_eq!(
        quarantine
            .remove(&["10.221.1.5/32".parse().expect("net")])
            .expect("remove"),
        1
    );
    let on_peer = Capture::start(ns.command("python3"), veth.peer());
    send("10.221.1.5", "10.221.1.2");
    let peer = on_peer.sources();
    assert_eq!(peer, vec!["10.221.1.5 0"; 3]);
}
