//! `nat_veth/*`: a port forward through a router, by the firewall's NAT and by
//! nftables' on the same path, in one run.
//!
//! Three namespaces: a client A, a router R, a server B; veth pairs A-R and R-B,
//! forwarding on in R only. Three configurations of R, measured in interleaved rounds:
//!
//! - `bare`: no translation; the client sends to B's own address (routed by R).
//! - `ironclad`: the stateful firewall on R's end towards A (default accept both ways,
//!   no rules: only the translation and the connection tracking it needs), forwarding
//!   R's port 8080 (TCP) and 5353 (UDP) to B's 80 and 53.
//! - `nftables`: the same forwards as a user writes them: an `ip` table with a
//!   `prerouting` nat chain, `tcp dport 8080 dnat to B:80` and `udp dport 5353 dnat to
//!   B:53` (netfilter's connection tracking and NAT engine).
//!
//! Two kinds of traffic from A:
//!
//! - `nat_veth/established/*`: datagrams of one UDP flow (`blast.c`, prebuilt 60-byte
//!   frames with `sendmmsg` on an `AF_PACKET` socket) to the forwarded port; B's socket
//!   is never read, so each datagram ends at B's full socket buffer, at the same cost
//!   in every configuration. On veth pairs the whole path (A's transmit, R's receive,
//!   translation, forwarding, B's receive) runs in the sender's softirq, so the
//!   sender's time per packet is the path's. Figure: ns per packet.
//! - `nat_veth/connect/*`: new TCP connections one after another (`connloop.c`, each a
//!   SYN, SYN-ACK, ACK and RST through R) to the forwarded port, accepted in B.
//!   Figure: ns per connection.
//!
//! The benchmark checks that B received every datagram (its `Udp: InDatagrams` and
//! `RcvbufErrors`) and that each translator translated what it was sent.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironclad_benches::figures::{record, Unit};
use ironclad_bpf::{Firewall, FirewallSettings, Forward, Loader, NatSettings};
use ironclad_core::abi::FwTotal;
use ironclad_policy::nat::NatProto;
use ironclad_testing::{flood, BpffsDir, NetNs, VethPair};

use crate::veth::{build_c, sh, timed, Blast, Config};

const ROUNDS: usize = 7;
const PACKETS: u64 = 200_000;
const CONNECTIONS: u64 = 2_000;
const R_A: &str = "10.236.1.1";
const A: &str = "10.236.1.2";
const R_B: &str = "10.236.2.1";
const B: &str = "10.236.2.2";
const TCP_FORWARD: u16 = 8080;
const UDP_FORWARD: u16 = 5353;
const TABLE: &str = "ironclad_nat_bench";

/// Where the client sends: B itself, or R's forwarded ports.
fn target(config: Config) -> (&'static str, u16, u16) {
    match config {
        Config::Bare => (B, 80, 53),
        _ => (R_A, TCP_FORWARD, UDP_FORWARD),
    }
}

/// A listener in B on port 80 that accepts and closes until stopped.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    ns: String,
}

impl Acceptor {
    fn start(ns: &NetNs) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = ns.name().to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            flood::enter(&name).unwrap_or_else(|e| panic!("enter B: {e}"));
            let listener =
                TcpListener::bind(("0.0.0.0", 80)).unwrap_or_else(|e| panic!("listen: {e}"));
            // Room for a round's connections (std's backlog of 128 would overflow).
            rustix::net::listen(&listener, 4096).unwrap_or_else(|e| panic!("listen: {e}"));
            let _ = ready_tx.send(());
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                drop(conn);
            }
        });
        let _ = ready_rx.recv();
        Self {
            stop,
            thread: Some(thread),
            ns: ns.name().to_string(),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // One more connection (from inside B) wakes the accept loop to see the flag.
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c"])
            .arg("import socket; socket.create_connection(('127.0.0.1', 80), timeout=1)")
            .status();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// B's UDP socket on port 53, never read; made in B by a thread that entered it.
fn udp_sink(ns: &NetNs) -> UdpSocket {
    let name = ns.name().to_string();
    std::thread::spawn(move || {
        flood::enter(&name).unwrap_or_else(|e| panic!("enter B: {e}"));
        UdpSocket::bind(("0.0.0.0", 53)).unwrap_or_else(|e| panic!("udp: {e}"))
    })
    .join()
    .unwrap_or_else(|_| panic!("udp sink thread"))
}

/// The datagrams B's UDP received, delivered or dropped at a full socket buffer.
fn b_datagrams(ns: &NetNs) -> u64 {
    let out = ns
        .exec(&["cat", "/proc/net/snmp"])
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values] = lines.as_slice() else {
        panic!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| *n == "InDatagrams" || *n == "RcvbufErrors")
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// nftables' forwards in R (added for a round and deleted after it, so the other
/// configurations run without netfilter's connection tracking).
fn nft_on(dir: &std::path::Path) {
    let script = format!(
        "table ip {TABLE} {{\n  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n    tcp dport {TCP_FORWARD} counter dnat to {B}:80\n    udp dport {UDP_FORWARD} counter dnat to {B}:53\n  }}\n}}\n"
    );
    let file = dir.join("nat.nft");
    std::fs::write(&file, script).unwrap_or_else(|e| panic!("{e}"));
    sh("nft", &["-f", &file.display().to_string()]);
}

/// nftables' two counters (connections translated: TCP, UDP flows), and the table
/// deleted.
fn nft_off() -> (u64, u64) {
    let text = sh("nft", &["list", "table", "ip", TABLE]);
    let mut counts = text
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok());
    let counted = (counts.next().unwrap_or(0), counts.next().unwrap_or(0));
    sh("nft", &["delete", "table", "ip", TABLE]);
    counted
}

/// The side by side (registered in `firewall.rs`'s criterion group; its own paired
/// rounds, recorded as figures).
pub(crate) fn nat(_: &mut criterion::Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blast_bin = build_c(dir.path(), "blast");
    let connloop = build_c(dir.path(), "connloop");
    let (a, b, r) = (
        NetNs::new("natba").unwrap_or_else(|e| panic!("{e}")),
        NetNs::new("natbb").unwrap_or_else(|e| panic!("{e}")),
        NetNs::new("natbr").unwrap_or_else(|e| panic!("{e}")),
    );
    let pins = BpffsDir::new("natbench").unwrap_or_else(|e| panic!("{e}"));
    let _acceptor = Acceptor::start(&b);
    let _sink = udp_sink(&b);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // This thread (and what it runs: nft, sysctl) works in R.
                flood::enter(r.name()).unwrap_or_else(|e| panic!("enter R: {e}"));
                let to_a = VethPair::new(&a, &[&format!("{R_A}/24")], &[&format!("{A}/24")])
                    .unwrap_or_else(|e| panic!("{e}"));
                let to_b = VethPair::new(&b, &[&format!("{R_B}/24")], &[&format!("{B}/24")])
                    .unwrap_or_else(|e| panic!("{e}"));
                a.exec(&["ip", "route", "add", "10.236.2.0/24", "via", R_A])
                    .unwrap_or_else(|e| panic!("{e}"));
                b.exec(&["ip", "route", "add", "default", "via", R_B])
                    .unwrap_or_else(|e| panic!("{e}"));
                sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
                let mac = String::from_utf8_lossy(
                    &r.exec(&["cat", &format!("/sys/class/net/{}/address", to_a.host())])
                        .unwrap_or_else(|e| panic!("{e}"))
                        .stdout,
                )
                .trim()
                .to_string();
                let sources = dir.path().join("sources");
                std::fs::write(&sources, format!("{A}\n")).unwrap_or_else(|e| panic!("{e}"));

                let loader = Loader::builder()
                    .pin_root(pins.path())
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"));
                let firewall = Firewall::load(&loader).unwrap_or_else(|e| panic!("load: {e}"));
                firewall
                    .apply(&FirewallSettings::default(), &[])
                    .unwrap_or_else(|e| panic!("{e}"));
                let b_addr = B.parse().unwrap_or_else(|e| panic!("{e}"));
                firewall
                    .set_nat(
                        &NatSettings::default()
                            .forward(Forward::new(to_a.host(), NatProto::Tcp, Some(TCP_FORWARD), b_addr, Some(80)))
                            .forward(Forward::new(to_a.host(), NatProto::Udp, Some(UDP_FORWARD), b_addr, Some(53))),
                    )
                    .unwrap_or_else(|e| panic!("nat: {e}"));

                let mut per_packet: Vec<Vec<f64>> = vec![Vec::new(); 3];
                let mut per_connection: Vec<Vec<f64>> = vec![Vec::new(); 3];
                for round in 0..round_count {
                    for (i, config) in Config::ALL.into_iter().enumerate() {
                        let (host, tcp, udp) = target(config);
                        let blast = Blast {
                            ns: &a,
                            bin: &blast_bin,
                            iface: to_a.peer(),
                            mac: mac.clone(),
                            sources: &sources,
                            // A fresh UDP flow each round (its own source port).
                            to: vec![host.into(), (40000 + round as u16).to_string(), udp.to_string()],
                        };
                        let attachment = match config {
                            Config::Ironclad => Some(
                                firewall
                                    .attach(to_a.host())
                                    .unwrap_or_else(|e| panic!("attach: {e}")),
                            ),
                            Config::Nftables => {
                                nft_on(dir.path());
                                None
                            }
                            Config::Bare => None,
                        };
                        let translated = firewall
                            .total(FwTotal::NatTranslated)
                            .unwrap_or_else(|e| panic!("{e}"))
                            .packets;
                        // The flow's first datagram opens it (and its translation).
                        blast.send(1);
                        let received = b_datagrams(&b);
                        let took = blast.send(PACKETS);
                        per_packet[i].push(took.as_nanos() as f64 / PACKETS as f64);
                        // Delivery in B is asynchronous to the sender only by a backlog
                        // queue; give it a moment before counting.
                        std::thread::sleep(Duration::from_millis(100));
                        let arrived = b_datagrams(&b) - received;
                        assert!(
                            arrived >= PACKETS * 99 / 100,
                            "{}: B received {arrived} of {PACKETS} datagrams",
                            config.name()
                        );
                        let conn = timed(
                            &a,
                            &[
                                &connloop.display().to_string(),
                                host,
                                &tcp.to_string(),
                                &CONNECTIONS.to_string(),
                            ],
                        );
                        per_connection[i].push(conn.as_nanos() as f64 / CONNECTIONS as f64);
                        match config {
                            Config::Ironclad => {
                                let done = firewall
                                    .total(FwTotal::NatTranslated)
                                    .unwrap_or_else(|e| panic!("{e}"))
                                    .packets
                                    - translated;
                                // Every datagram, and each connection's four packets.
                                assert!(
                                    done >= PACKETS + CONNECTIONS * 4,
                                    "ironclad translated {done} packets"
                                );
                                firewall.expire().unwrap_or_else(|e| panic!("expire: {e}"));
                            }
                            Config::Nftables => {
                                let (tcp_conns, udp_flows) = nft_off();
                                assert!(
                                    tcp_conns >= CONNECTIONS && udp_flows >= 1,
                                    "nftables translated {tcp_conns} connections, {udp_flows} flows"
                                );
                            }
                            Config::Bare => {}
                        }
                        drop(attachment);
                    }
                }

                println!(
                    "\nport forward through a router namespace (minimums of {round_count} paired rounds):"
                );
                println!(
                    "{:<10} {:>14} {:>12} {:>16} {:>12}",
                    "config", "ns/packet", "over bare", "ns/connection", "over bare"
                );
                let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
                for (i, config) in Config::ALL.into_iter().enumerate() {
                    let name = config.name();
                    record(&format!("nat_veth/established/{name}"), Unit::Ns, &per_packet[i]);
                    record(&format!("nat_veth/connect/{name}"), Unit::Ns, &per_connection[i]);
                    println!(
                        "{name:<10} {:>14.0} {:>12.0} {:>16.0} {:>12.0}",
                        min(&per_packet[i]),
                        min(&per_packet[i]) - min(&per_packet[0]),
                        min(&per_connection[i]),
                        min(&per_connection[i]) - min(&per_connection[0])
                    );
                }
                drop(to_a);
                drop(to_b);
            })
            .join()
            .unwrap_or_else(|_| panic!("the benchmark thread"));
    });
}
