//! `fw_veth/*`: the stateful firewall against nftables, side by side on one veth pair,
//! with the same traffic and the same rules, in one run.
//!
//! Four configurations of the host end of a veth pair, measured in interleaved
//! rounds (each round measures all four, so drift in the machine hits them alike):
//!
//! - `bare`: no firewall.
//! - `ironclad`: the stateful firewall attached to the host end (tcx links),
//!   `default_inbound: drop`, 10,000 rules: `accept tcp dport 7400` and 9,999 `accept
//!   tcp dport P from S/24` (S spread over 10.0.0.0/8, P over 1000-5999; none admits
//!   the traffic below).
//! - `ironclad_tc`: the same firewall as classic tc filters, the mechanism of kernels
//!   without tcx (before 6.6).
//! - `nftables`: what a user would otherwise deploy, an `inet` table with an input
//!   chain of policy drop: `ct state established,related accept`, `ct state invalid
//!   drop`, `ip saddr . tcp dport @admitted accept` (the same 9,999 pairs in one
//!   interval set) and `tcp dport 7400 accept`.
//!
//! Two kinds of traffic, both from the namespace's end to the host:
//!
//! - `fw_veth/established/*`: packets of an established UDP flow (the host sent a
//!   datagram first, so the flow is tracked by both firewalls): `blast.c` sends
//!   prebuilt 60-byte frames of that flow with `sendmmsg` on an `AF_PACKET` socket, and
//!   on a veth pair the host end's receive path (tcx, netfilter, UDP delivery into a
//!   socket whose buffer is full) runs in the sender's softirq, so the sender's time
//!   per packet is the whole path's. Figure: ns per packet.
//! - `fw_veth/connect/*`: new TCP connections, one after another (`connloop.c`: connect
//!   to port 7400, close with a RST), each a SYN, SYN-ACK, ACK and RST through the
//!   firewall, the SYN classified against the rules. Figure: ns per connection.
//!
//! Each configuration's figure holds one sample per round; the filter's cost is its
//! minimum minus `bare`'s minimum (the rounds are interleaved, so the minimums come
//! from the same stretch of time).

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironclad_benches::figures::{record, Unit};
use ironclad_bpf::{Firewall, FirewallSettings, Loader, TcMechanism};
use ironclad_core::abi::FwTotal;
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{Direction, FwAction, FwProto, FwRule};
use ironclad_testing::{BpffsDir, NetNs, VethPair};

use crate::veth::{build_c, mac_of, sh, timed, Blast};

/// What the host end of the pair runs in one measurement.
#[derive(Clone, Copy)]
enum Setup {
    Bare,
    Ironclad(TcMechanism),
    Nftables,
}

impl Setup {
    const ALL: [Self; 4] = [
        Self::Bare,
        Self::Ironclad(TcMechanism::Tcx),
        Self::Ironclad(TcMechanism::Clsact),
        Self::Nftables,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Ironclad(TcMechanism::Clsact) => "ironclad_tc",
            Self::Ironclad(_) => "ironclad",
            Self::Nftables => "nftables",
        }
    }
}

const ROUNDS: usize = 7;
const PACKETS: u64 = 200_000;
const CONNECTIONS: u64 = 2_000;
const RULES: usize = 10_000;
const HOST: &str = "10.233.0.1";
const PEER: &str = "10.233.0.2";
/// The established UDP flow: the host's port and the namespace's.
const UDP_HOST: u16 = 9;
const UDP_PEER: u16 = 40000;
const TCP_PORT: u16 = 7400;
const TABLE: &str = "ironclad_fw_bench";

/// `accept tcp dport 7400`, then `RULES - 1` rules `accept tcp dport P from S/24` that
/// admit none of the benchmark's traffic.
fn rules() -> Vec<FwRule> {
    let mut admitted = FwRule::new(
        Origin::field("firewall.rules[0]"),
        Direction::In,
        FwProto::Tcp,
    );
    admitted.dport = vec![(TCP_PORT, TCP_PORT)];
    admitted.action = FwAction::Accept;
    let mut out = vec![admitted];
    for (i, (net, port)) in fillers().into_iter().enumerate() {
        let mut r = FwRule::new(
            Origin::field(format!("firewall.rules[{}]", i + 1)),
            Direction::In,
            FwProto::Tcp,
        );
        r.src = vec![net.parse().unwrap_or_else(|e| panic!("{net}: {e}"))];
        r.dport = vec![(port, port)];
        r.action = FwAction::Accept;
        out.push(r);
    }
    out
}

/// The 9,999 (source /24, port) pairs of the filler rules.
fn fillers() -> Vec<(String, u16)> {
    (0..RULES as u32 - 1)
        .map(|n| {
            (
                format!("10.{}.{}.0/24", (n >> 8) & 0xff, n & 0xff),
                1000 + (n % 5000) as u16,
            )
        })
        .collect()
}

/// The nftables table with the same rules (its set holds the filler pairs).
fn ruleset(path: &std::path::Path) {
    let mut text = format!(
        "table inet {TABLE} {{\n  set admitted {{ type ipv4_addr . inet_service; flags interval; elements = {{\n"
    );
    let pairs: Vec<String> = fillers()
        .into_iter()
        .map(|(net, port)| format!("    {net} . {port}"))
        .collect();
    text.push_str(&pairs.join(",\n"));
    text.push_str("\n  } }\n}\n");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// The input chain (added for a round, deleted after it, so `bare` and `ironclad`
/// rounds run without netfilter's connection tracking). Its first rule passes what
/// does not arrive on the bench's interface `device`: the input hook is the whole
/// host's, and CI runs the benchmarks beside the host's tests, whose pings and
/// connections to the host this chain's `policy drop` dropped (an allowed source's
/// pings in the daemon's feed test, three times in a row). The Shield and the
/// firewall attach to the bench's interface only; nftables scoped to one interface is
/// what a user writes too, at the cost of one interface-name test per packet.
fn chain_on(device: &str) {
    let script = format!(
        "add chain inet {TABLE} input {{ type filter hook input priority 0; policy drop; }}\n\
         add rule inet {TABLE} input iifname != \"{device}\" accept\n\
         add rule inet {TABLE} input ct state established,related counter accept\n\
         add rule inet {TABLE} input ct state invalid drop\n\
         add rule inet {TABLE} input ip saddr . tcp dport @admitted accept\n\
         add rule inet {TABLE} input tcp dport {TCP_PORT} counter accept\n"
    );
    let file = std::env::temp_dir().join(format!("ironclad-fw-bench-{}.nft", std::process::id()));
    std::fs::write(&file, script).unwrap_or_else(|e| panic!("{e}"));
    sh("nft", &["-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(file);
}

fn chain_off() {
    sh("nft", &["delete", "chain", "inet", TABLE, "input"]);
}

/// The two counters of the input chain: (established, port 7400).
fn nft_counters() -> (u64, u64) {
    let text = sh("nft", &["list", "chain", "inet", TABLE, "input"]);
    let mut counts = text
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok());
    (counts.next().unwrap_or(0), counts.next().unwrap_or(0))
}

/// A host listener on port 7400 that accepts and closes until stopped.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start() -> Self {
        let listener =
            TcpListener::bind((HOST, TCP_PORT)).unwrap_or_else(|e| panic!("listen: {e}"));
        // std listens with a backlog of 128; the client opens connections faster than
        // one thread accepts them, and an overflowing accept queue drops SYNs (a 1 s
        // retransmission each). Room for a whole round's connections.
        rustix::net::listen(&listener, 4096).unwrap_or_else(|e| panic!("listen: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                drop(conn);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // One more connection wakes the accept loop up to see the flag.
        let _ = std::net::TcpStream::connect_timeout(
            &format!("{HOST}:{TCP_PORT}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            Duration::from_secs(1),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The side-by-side (registered in `firewall.rs`'s criterion group; it runs its own
/// paired rounds rather than criterion's sampling, and records them as figures).
pub(crate) fn veth(_: &mut criterion::Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blast_bin = build_c(dir.path(), "blast");
    let connloop = build_c(dir.path(), "connloop");
    let ns = NetNs::new("fwnft").unwrap_or_else(|e| panic!("netns: {e}"));
    let veth = VethPair::new(&ns, &[&format!("{HOST}/24")], &[&format!("{PEER}/24")])
        .unwrap_or_else(|e| panic!("veth: {e}"));
    let sources = dir.path().join("sources");
    std::fs::write(&sources, format!("{PEER}\n")).unwrap_or_else(|e| panic!("{e}"));
    let blast = Blast {
        ns: &ns,
        bin: &blast_bin,
        iface: veth.peer(),
        mac: mac_of(veth.host()),
        sources: &sources,
        to: vec![HOST.into(), UDP_PEER.to_string(), UDP_HOST.to_string()],
    };
    // The host's end of the UDP flow; nobody reads it, so once its buffer is full every
    // datagram is dropped at the socket, at the same cost in every configuration.
    let udp = UdpSocket::bind((HOST, UDP_HOST)).unwrap_or_else(|e| panic!("udp: {e}"));
    let _acceptor = Acceptor::start();
    // The namespace's host answers the first datagram of each round: the flow is then
    // established for both firewalls.
    let open_flow = || {
        udp.send_to(b"open", (PEER, UDP_PEER))
            .unwrap_or_else(|e| panic!("send: {e}"));
        blast.send(1);
    };
    let connect = |count: u64| {
        timed(
            &ns,
            &[
                &connloop.display().to_string(),
                HOST,
                &TCP_PORT.to_string(),
                &count.to_string(),
            ],
        )
    };

    let pins = BpffsDir::new("fwnft").unwrap_or_else(|e| panic!("{e}"));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let firewall =
        Firewall::load_with_table(&loader, 1 << 20).unwrap_or_else(|e| panic!("load: {e}"));
    firewall
        .apply(&FirewallSettings::default().drop_inbound(true), &rules())
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let nft_file = dir.path().join("table.nft");
    ruleset(&nft_file);
    sh("nft", &["-f", &nft_file.display().to_string()]);

    let mut per_packet: Vec<Vec<f64>> = vec![Vec::new(); Setup::ALL.len()];
    let mut per_connection: Vec<Vec<f64>> = vec![Vec::new(); Setup::ALL.len()];
    let mut ironclad_established = 0u64;
    let mut ironclad_sent = 0u64;
    let (mut nft_established, mut nft_sent, mut nft_admitted) = (0u64, 0u64, 0u64);
    let drops = || {
        veth.drops_towards_host(&ns)
            .unwrap_or_else(|e| panic!("veth drop counters: {e}"))
    };
    for _ in 0..round_count {
        for (i, config) in Setup::ALL.into_iter().enumerate() {
            let attachment = match config {
                Setup::Ironclad(mechanism) => Some(
                    firewall
                        .attach_with(veth.host(), mechanism)
                        .unwrap_or_else(|e| panic!("attach: {e}")),
                ),
                Setup::Nftables => {
                    chain_on(veth.host());
                    None
                }
                Setup::Bare => None,
            };
            open_flow();
            let before = firewall
                .total(FwTotal::Established)
                .unwrap_or_else(|e| panic!("{e}"))
                .packets;
            let dropped_before = drops();
            let took = blast.send(PACKETS);
            per_packet[i].push(took.as_nanos() as f64 / PACKETS as f64);
            let conn = connect(CONNECTIONS);
            per_connection[i].push(conn.as_nanos() as f64 / CONNECTIONS as f64);
            match config {
                Setup::Ironclad(_) => {
                    let after = firewall
                        .total(FwTotal::Established)
                        .unwrap_or_else(|e| panic!("{e}"))
                        .packets;
                    ironclad_established += after - before;
                    // What the pair dropped before the host end's hooks (its receive
                    // backlog full while CI runs tests beside the benchmark) never
                    // reached the firewall.
                    ironclad_sent += PACKETS - (drops() - dropped_before).min(PACKETS);
                    // What the agent's sweep does every 5 s: closed connections go.
                    firewall.expire().unwrap_or_else(|e| panic!("expire: {e}"));
                }
                Setup::Nftables => {
                    let (established, admitted) = nft_counters();
                    nft_established += established;
                    nft_admitted += admitted;
                    nft_sent += PACKETS - (drops() - dropped_before).min(PACKETS);
                    chain_off();
                }
                Setup::Bare => {}
            }
            drop(attachment);
        }
    }
    sh("nft", &["delete", "table", "inet", TABLE]);
    // Where the firewall's packets went, for the message below.
    let totals: Vec<String> = firewall
        .totals()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|(_, c)| c.packets > 0)
        .map(|(t, c)| format!("{t:?} {}", c.packets))
        .collect();
    // Every blasted packet the pair delivered went through each firewall's established
    // path (the counts include the connections' packets after their SYNs).
    assert!(
        ironclad_established >= ironclad_sent,
        "ironclad passed {ironclad_established} established packets of {ironclad_sent} the pair \
         delivered (its totals: {})",
        totals.join(", ")
    );
    assert!(
        nft_established >= nft_sent,
        "nftables passed {nft_established} established packets of {nft_sent} the pair delivered"
    );
    assert!(
        nft_admitted >= CONNECTIONS * round_count as u64,
        "nftables admitted {nft_admitted} connections"
    );

    println!(
        "\nstateful firewall side by side on a veth pair ({RULES} rules; minimums of {round_count} paired rounds):"
    );
    println!(
        "{:<10} {:>14} {:>12} {:>16} {:>12}",
        "config", "ns/packet", "over bare", "ns/connection", "over bare"
    );
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (i, config) in Setup::ALL.into_iter().enumerate() {
        let name = config.name();
        record(
            &format!("fw_veth/established/{name}"),
            Unit::Ns,
            &per_packet[i],
        );
        record(
            &format!("fw_veth/connect/{name}"),
            Unit::Ns,
            &per_connection[i],
        );
        println!(
            "{name:<10} {:>14.0} {:>12.0} {:>16.0} {:>12.0}",
            min(&per_packet[i]),
            min(&per_packet[i]) - min(&per_packet[0]),
            min(&per_connection[i]),
            min(&per_connection[i]) - min(&per_connection[0])
        );
        let rounds = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  rounds: ns/packet {}; ns/connection {}",
            rounds(&per_packet[i]),
            rounds(&per_connection[i])
        );
    }
}
