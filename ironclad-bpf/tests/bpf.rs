//! The kernel-facing suites of `ironclad-bpf`, one test binary: each module is one suite
//! (a file beside this one). Privileged tests of different suites never overlap
//! (`ironclad_testing::SuiteGuard`).

mod audit_tracing;
mod egress_connect;
mod egress_domains;
mod events_flood;
mod firewall;
mod firewall_guest;
mod ids;
mod loader_audit;
mod loader_pinning;
mod nat;
mod process_cache;
mod quarantine;
mod scrub;
mod shield_memory;
mod shield_prog_run;
mod shield_scale;
mod shield_xdp;
mod syn_flood;
mod telemetry_sockets;
mod tls_uprobe;
mod verifier_budget;

/// The running kernel's (major, minor) release, from `/proc/sys/kernel/osrelease`.
#[allow(
    clippy::expect_used,
    reason = "a test helper fails the test with a message"
)]
fn kernel_release() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut n = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (n.next().expect("major"), n.next().expect("minor"))
}

/// Starts, once for the whole binary, a DNS responder on 127.0.0.1:53 that answers every
/// A query with 192.0.2.7. The suites that need one share it: the port belongs to the
/// process, and a responder's thread outlives the test that started it, so a second
/// suite binding the port itself found it taken.
#[allow(
    clippy::expect_used,
    reason = "a test helper fails the test with a message"
)]
fn loopback_dns_responder() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let answer = ironclad_events::dns::build_response(
                    &buf[..n],
                    &[std::net::Ipv4Addr::new(192, 0, 2, 7)],
                );
                let _ = socket.send_to(&answer, from);
            }
        });
    });
}
