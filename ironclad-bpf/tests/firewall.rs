//! The stateful firewall's connection tracking against the kernel: real traffic through
//! a veth pair into a network namespace (TCP, UDP, ICMP, IPv4 and IPv6), a raw-socket
//! bare ACK, a flood that fills a small table, and a restart that adopts the pins.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use ironclad_bpf::{Firewall, FirewallSettings, Loader};
use ironclad_core::abi::{CtEntry, CtKey, CtState, FwTotal};
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{
    first_match, Direction, FwAction, FwProto, FwRule, Packet, PacketProto,
};
use ironclad_testing::rules::Rng;
use ironclad_testing::{frames, ping, require_privileges, BpffsDir, NetNs, VethPair};
use libbpf_rs::MapCore as _;

/// A namespace behind a veth pair, IPv4 10.214.`net`.0/24 and IPv6 fd00:214:`net`::/64;
/// the host is .1/::1, the namespace .2/::2.
pub(crate) struct Net {
    ns: NetNs,
    pub(crate) veth: VethPair,
    net: u8,
}

impl Net {
    pub(crate) fn new(tag: &str, net: u8) -> Self {
        let ns = NetNs::new(tag).expect("netns");
        let veth = VethPair::new(
            &ns,
            &[
                &format!("10.214.{net}.1/24"),
                &format!("fd00:214:{net}::1/64"),
            ],
            &[
                &format!("10.214.{net}.2/24"),
                &format!("fd00:214:{net}::2/64"),
            ],
        )
        .expect("veth");
        Self { ns, veth, net }
    }

    pub(crate) fn host(&self, v6: bool) -> String {
        if v6 {
            format!("fd00:214:{}::1", self.net)
        } else {
            format!("10.214.{}.1", self.net)
        }
    }

    pub(crate) fn peer(&self, v6: bool) -> String {
        if v6 {
            format!("fd00:214:{}::2", self.net)
        } else {
            format!("10.214.{}.2", self.net)
        }
    }

    /// Whether a TCP connection from inside the namespace to `addr:port` succeeds
    /// within 2 s.
    pub(crate) fn connects_in(&self, addr: &str, port: u16) -> bool {
        self.connects_from("", addr, port)
    }

    /// Whether a TCP connection from `src` (any address when empty) inside the
    /// namespace to `addr:port` succeeds within 2 s.
    fn connects_from(&self, src: &str, addr: &str, port: u16) -> bool {
        self.ns
            .tcp_connects(src, addr, port, 2.0)
            .expect("connecting")
    }

    /// Sends one IPv4 datagram `payload` from the namespace's address, port `from`, to
    /// the host's, port `to`.
    fn datagram_in(&self, from: u16, to: u16, payload: &str) {
        let addr = |a: String, port| SocketAddr::new(a.parse().expect("address"), port);
        self.ns
            .udp_send(
                addr(self.peer(false), from),
                addr(self.host(false), to),
                payload.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("sending {payload} from the namespace: {e}"));
    }

    /// A python HTTP server in the namespace on its address, port `port`.
    pub(crate) fn http_server(&self, v6: bool, port: u16) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "hello from the namespace\n").expect("index");
        let child = self
            .ns
            .command("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                &self.peer(v6),
                &port.to_string(),
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server");
        let server = Server { child, _dir: dir };
        ironclad_testing::wait_for_server("http.server", || self.ns_listens(port))
            .expect("http.server");
        server
    }

    fn ns_listens(&self, port: u16) -> bool {
        let out = self
            .ns
            .exec(&["ss", "-Htln", &format!("sport = :{port}")])
            .expect("ss");
        !out.stdout.is_empty()
    }
}

pub(crate) struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-g", "--max-time", "3", url])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn url(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("http://[{addr}]:{port}/")
    } else {
        format!("http://{addr}:{port}/")
    }
}

fn loader(pins: &BpffsDir) -> Loader {
    Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader")
}

#[test]
fn default_inbound_drop_keeps_replies_to_the_hosts_own_connections_flowing() {
    require_privileges!();
    let net = Net::new("fwdef", 1);
    let pins = BpffsDir::new("fwdef").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .configure(&FirewallSettings::default().drop_inbound(true))
        .expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");

    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        // A listener on the host is reachable from nobody outside.
        let listener = TcpListener::bind((net.host(v6).as_str(), 0)).expect("listener");
        let port = listener.local_addr().expect("addr").port();
        assert!(
            !net.connects_in(&net.host(v6), port),
            "{family}: a new inbound connection is dropped"
        );
        // The host's own connection out: its replies pass as established.
        let server = net.http_server(v6, 8000 + u16::from(v6));
        let body = curl(&url(&net.peer(v6), 8000 + u16::from(v6)));
        assert_eq!(
            body.as_deref(),
            Some("hello from the namespace\n"),
            "{family}: curl out works"
        );
        drop(server);
        let conns = firewall.connections().expect("connections");
        let tcp = conns
            .iter()
            .find(|c| {
                c.proto == "tcp"
                    && c.orig.0.to_string() == net.host(v6)
                    && c.reply == (net.peer(v6).parse().expect("ip"), 8000 + u16::from(v6))
            })
            .unwrap_or_else(|| panic!("{family}: the curl connection is tracked: {conns:#?}"));
        assert!(!tcp.inbound, "{tcp:?}");
        assert!(
            matches!(
                tcp.state,
                CtState::FinWait | CtState::Closing | CtState::Established
            ),
            "{tcp:?}"
        );
        assert!(
            tcp.from_orig.packets >= 3 && tcp.from_reply.packets >= 2,
            "{tcp:?}"
        );

        // ping out works; ping in is dropped.
        let out = Command::new("ping")
            .args(["-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", &net.peer(v6)])
            .output()
            .expect("ping");
        assert!(out.status.success(), "{family}: ping out: {out:?}");
        assert_eq!(
            ping(&net.ns, &net.peer(v6), &net.host(v6), 2, "0.2").expect("ping"),
            0,
            "{family}: ping in is dropped"
        );

        // UDP out and its answer back: a python echo server in the namespace.
        let mut echo = udp_server(&net, v6, 5353, "d");
        let socket = UdpSocket::bind((net.host(v6).as_str(), 0)).expect("udp");
        let dst: SocketAddr = (net.peer(v6).parse::<std::net::IpAddr>().expect("ip"), 5353).into();
        assert_eq!(
            ask(&socket, dst, b"query").as_deref(),
            Some(&b"query"[..]),
            "{family}: the UDP answer came back"
        );
        let _ = echo.child.kill();

        // An ICMP port unreachable for an outbound datagram passes as related: a
        // connected UDP socket sees ECONNREFUSED.
        let related = firewall.total(FwTotal::Related).expect("total").packets;
        let err = udp_answer_error(&net.host(v6), &net.peer(v6), 9);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{family}: the port unreachable arrived: {err}"
        );
        assert!(
            firewall.total(FwTotal::Related).expect("total").packets > related,
            "{family}: counted as related"
        );
        drop(listener);
    }
    assert!(firewall.total(FwTotal::Dropped).expect("total").packets >= 4);
    assert!(firewall.total(FwTotal::Established).expect("total").packets > 10);
}

/// Regression (red team, round 3): under `default_inbound: drop`, UDP replies too large
/// for one packet (3,000 and 8,000 bytes) never arrived: their later fragments carry no
/// ports and were dropped. A later fragment of a datagram whose first fragment passed
/// as part of a tracked connection now passes too, in both families; a fragmented
/// datagram nobody asked for is still dropped whole.
#[test]
fn fragmented_replies_to_the_hosts_own_datagrams_arrive_whole_in_both_families() {
    require_privileges!();
    let net = Net::new("fwfrag", 13);
    let pins = BpffsDir::new("fwfrag").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .configure(&FirewallSettings::default().drop_inbound(true))
        .expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        // Answers a datagram "N" with N bytes (fragmented by the namespace's stack).
        let mut server = udp_server(&net, v6, 5354, "b'x'*int(d)");
        let socket = UdpSocket::bind((net.host(v6).as_str(), 0)).expect("udp");
        let dst: SocketAddr = (net.peer(v6).parse::<std::net::IpAddr>().expect("ip"), 5354).into();
        for size in [3000usize, 8000] {
            let got = ask(&socket, dst, size.to_string().as_bytes()).map(|a| a.len());
            assert_eq!(
                got,
                Some(size),
                "{family}: the {size}-byte answer arrived whole"
            );
        }
        let _ = server.child.kill();

        // Unasked: a fragmented datagram to a bound port on the host is dropped.
        let host = UdpSocket::bind((net.host(v6).as_str(), 0)).expect("udp");
        host.set_read_timeout(Some(Duration::from_millis(800)))
            .expect("timeout");
        let port = host.local_addr().expect("addr").port();
        let sent = net
            .ns
            .exec(&[
                "python3",
                "-c",
                &format!(
                    "import socket\ns=socket.socket(socket.{},socket.SOCK_DGRAM)\ns.sendto(b'y'*8000,('{}',{port}))",
                    if v6 { "AF_INET6" } else { "AF_INET" },
                    net.host(v6)
                ),
            ])
            .expect("send in");
        assert!(sent.status.success(), "{sent:?}");
        let mut buf = vec![0u8; 16384];
        assert!(
            host.recv_from(&mut buf).is_err(),
            "{family}: an unasked fragmented datagram is dropped"
        );
    }
}

/// A python UDP server in the namespace on its address, port `port`, answering each
/// datagram `d` from `a` with the python expression `answer`.
fn udp_server(net: &Net, v6: bool, port: u16, answer: &str) -> Server {
    let child = net
        .ns
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.socket(socket.{},socket.SOCK_DGRAM)\ns.bind(('{}',{port}))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto({answer},a)",
                if v6 { "AF_INET6" } else { "AF_INET" },
                net.peer(v6)
            ),
        ])
        .spawn()
        .expect("udp server");
    Server {
        child,
        _dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// Sends `query` from `socket` to `dst` until an answer comes (20 tries, 500 ms each:
/// the server may still be starting), and returns it.
fn ask(socket: &UdpSocket, dst: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = vec![0u8; 65536];
    for _ in 0..20 {
        socket.send_to(query, dst).expect("send");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Sends a datagram from a connected UDP socket on `host` to `peer:port` and returns the
/// error its read meets (an ICMP port unreachable makes it ECONNREFUSED).
fn udp_answer_error(host: &str, peer: &str, port: u16) -> std::io::Error {
    let socket = UdpSocket::bind((host, 0)).expect("udp");
    socket.connect((peer, port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket.send(b"anyone?").expect("send");
    let mut buf = [0u8; 16];
    socket.recv(&mut buf).expect_err("no answer but an error")
}

/// A TCP segment with only ACK set from `src` to `dst:dport` on a raw socket inside the
/// namespace (python computes the checksum).
fn bare_ack(net: &Net, src: &str, dst: &str, dport: u16) {
    let script = format!(
        r#"
import socket, struct
src, dst = socket.inet_aton('{src}'), socket.inet_aton('{dst}')
tcp = struct.pack('!HHIIBBHHH', 40000, {dport}, 12345, 67890, 5 << 4, 0x10, 65535, 0, 0)
pseudo = src + dst + struct.pack('!BBH', 0, 6, len(tcp))
data = pseudo + tcp
s = sum((data[i] << 8) + data[i + 1] for i in range(0, len(data), 2))
while s >> 16:
    s = (s & 0xffff) + (s >> 16)
tcp = tcp[:16] + struct.pack('!H', ~s & 0xffff) + tcp[18:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for _ in range(3):
    r.sendto(tcp, ('{dst}', 0))
"#
    );
    let status = net
        .ns
        .command("python3")
        .args(["-c", &script])
        .status()
        .expect("python3");
    assert!(status.success(), "raw socket send");
}

#[test]
fn a_bare_ack_for_no_connection_is_invalid_even_when_inbound_is_accepted() {
    require_privileges!();
    let net = Net::new("fwack", 2);
    let pins = BpffsDir::new("fwack").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .configure(&FirewallSettings::default())
        .expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let listener = TcpListener::bind((net.host(false).as_str(), 0)).expect("listener");
    let port = listener.local_addr().expect("addr").port();
    // Accepting inbound: a real connection opens.
    assert!(net.connects_in(&net.host(false), port));
    let invalid = firewall.total(FwTotal::Invalid).expect("total").packets;
    bare_ack(&net, &net.peer(false), &net.host(false), port);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        firewall.total(FwTotal::Invalid).expect("total").packets,
        invalid + 3,
        "every bare ACK is counted invalid (and dropped)"
    );
    // Stateless, the same probe is not the firewall's business.
    firewall
        .configure(&FirewallSettings::default().stateful(false))
        .expect("configure");
    let invalid = firewall.total(FwTotal::Invalid).expect("total").packets;
    bare_ack(&net, &net.peer(false), &net.host(false), port);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        firewall.total(FwTotal::Invalid).expect("total").packets,
        invalid
    );
}

#[test]
fn a_full_table_drops_new_connections_and_never_an_established_one() {
    require_privileges!();
    let net = Net::new("fwfull", 3);
    let pins = BpffsDir::new("fwfull").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load_with_table(&loader, 16).expect("load");
    firewall
        .configure(&FirewallSettings::default())
        .expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");

    // An established session: the host talks to a line echo in the namespace.
    let echo = net
        .ns
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.create_server(('{}',7000))\nc,_=s.accept()\nwhile True:\n d=c.recv(100)\n if not d: break\n c.sendall(d)",
                net.peer(false)
            ),
        ])
        .spawn()
        .expect("echo");
    let _echo = Server {
        child: echo,
        _dir: tempfile::tempdir().expect("tempdir"),
    };
    let start = Instant::now();
    while !net.ns_listens(7000) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut session = TcpStream::connect((net.peer(false).as_str(), 7000)).expect("session");
    session
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut roundtrip = |what: &str| {
        session.write_all(what.as_bytes()).expect("write");
        let mut buf = vec![0u8; what.len()];
        session.read_exact(&mut buf).expect("the session answers");
        assert_eq!(buf, what.as_bytes());
    };
    roundtrip("before");

    // A flood of new UDP flows from the namespace (each a new source port) fills the
    // table.
    let flood = format!(
        "import socket\nfor i in range(200):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n s.sendto(b'x',('{}',9999))\n s.close()",
        net.host(false)
    );
    let status = net
        .ns
        .command("python3")
        .args(["-c", &flood])
        .status()
        .expect("flood");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(200));
    let full = firewall.total(FwTotal::TableFull).expect("total").packets;
    assert!(
        full >= 150,
        "new flows beyond the table are dropped: {full}"
    );
    assert!(firewall.connections().expect("connections").len() <= 16);
    roundtrip("during the flood");
    for i in 0..20 {
        roundtrip(&format!("still here {i}"));
    }
}

/// The readers from the pins (`status`, the dashboard's sampler and top talkers) read
/// the connection table in batches of 1,024: a table of three batches and more is
/// counted and listed whole, as the walk over its keys sees it.
#[test]
fn the_table_read_from_the_pins_in_batches_sees_every_connection() {
    require_privileges!();
    let net = Net::new("fwbatch", 20);
    let pins = BpffsDir::new("fwbatch").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load_with_table(&loader, 8192).expect("load");
    firewall
        .configure(&FirewallSettings::default())
        .expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    // 3,500 new UDP flows from the namespace, each from a new socket.
    let flood = format!(
        "import socket\nfor i in range(3500):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n s.sendto(b'x',('{}',9999))\n s.close()",
        net.host(false)
    );
    let status = net
        .ns
        .command("python3")
        .args(["-c", &flood])
        .status()
        .expect("flood");
    assert!(status.success());
    // (A source port the kernel hands out again is the same flow: a few hundred fewer.)
    let walked = firewall.connections().expect("connections").len();
    assert!(
        walked > 3 * 1024,
        "{walked} connections: more than three batches"
    );
    let counted = Firewall::connection_count_from_pins(pins.path()).expect("count");
    let listed = Firewall::connections_from_pins(pins.path()).expect("list");
    assert_eq!(counted, walked, "counted in batches");
    assert_eq!(listed.len(), walked, "listed in batches");
    let mut ports: Vec<u16> = listed.iter().map(|c| c.orig.1).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), walked, "each connection once");
}

#[test]
fn pinned_enforcement_outlives_the_process_and_a_restart_adopts_it() {
    require_privileges!();
    let net = Net::new("fwpin", 4);
    let pins = BpffsDir::new("fwpin").expect("bpffs");
    let listener = TcpListener::bind((net.host(false).as_str(), 0)).expect("listener");
    let port = listener.local_addr().expect("addr").port();
    {
        let loader = loader(&pins);
        let firewall = Firewall::load(&loader).expect("load");
        firewall
            .configure(&FirewallSettings::default().drop_inbound(true))
            .expect("configure");
        let attached = firewall.attach_pinned(net.veth.host()).expect("attach");
        assert_eq!(attached.pin_paths().len(), 2);
        assert!(!net.connects_in(&net.host(false), port));
        // The handles go as with kill -9: nothing is detached.
    }
    assert!(
        !net.connects_in(&net.host(false), port),
        "still enforced with no process"
    );
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("reload");
    assert!(
        firewall.settings().expect("settings").drop_inbound,
        "the pinned configuration is adopted"
    );
    let dropped = firewall.total(FwTotal::Dropped).expect("total").packets;
    assert!(dropped >= 2, "counters survive the restart: {dropped}");
    let attached = firewall.attach_pinned(net.veth.host()).expect("adopt");
    assert!(!net.connects_in(&net.host(false), port));
    assert!(firewall.total(FwTotal::Dropped).expect("total").packets > dropped);
    attached.detach().expect("detach");
    assert!(
        net.connects_in(&net.host(false), port),
        "detached: open again"
    );
    let dir = loader.pin_dir(Firewall::OBJECT);
    let pinned = std::fs::read_dir(&dir).expect("pin dir").count();
    assert_eq!(pinned, 33, "the maps stay pinned, the links are gone");
    assert_eq!(loader.remove_pins(Firewall::OBJECT).expect("unpin"), pinned);
}

fn rule(n: usize, direction: Direction, proto: FwProto, action: FwAction) -> FwRule {
    let mut r = FwRule::new(
        Origin::field(format!("firewall.rules[{n}]")),
        direction,
        proto,
    );
    r.action = action;
    r
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("network")
}

#[test]
fn rules_decide_new_connections_first_match_wins_in_both_families() {
    require_privileges!();
    let ns = NetNs::new("fwrules").expect("netns");
    let veth = VethPair::new(
        &ns,
        &["10.214.5.1/24", "fd00:214:5::1/64"],
        &[
            "10.214.5.2/24",
            "10.214.5.3/24",
            "fd00:214:5::2/64",
            "fd00:214:5::3/64",
        ],
    )
    .expect("veth");
    let net5 = Net { ns, veth, net: 5 };
    let pins = BpffsDir::new("fwrules").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .configure(&FirewallSettings::default().drop_inbound(true))
        .expect("configure");
    let _attached = firewall.attach(net5.veth.host()).expect("attach");
    let admin = TcpListener::bind("10.214.5.1:0").expect("listener");
    let admin_port = admin.local_addr().expect("addr").port();
    let other = TcpListener::bind("10.214.5.1:0").expect("listener");
    let other_port = other.local_addr().expect("addr").port();
    let admin6 = TcpListener::bind("[fd00:214:5::1]:0").expect("listener");
    let admin6_port = admin6.local_addr().expect("addr").port();

    // `accept tcp dport ADMIN from .2` (and its IPv6 twin), ping in allowed.
    let mut ssh = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    ssh.src = vec![net("10.214.5.2/32")];
    ssh.dport = vec![(admin_port, admin_port)];
    let mut ssh6 = rule(1, Direction::In, FwProto::Tcp, FwAction::Accept);
    ssh6.src = vec![net("fd00:214:5::2/128")];
    ssh6.dport = vec![(admin6_port, admin6_port)];
    let mut echo = rule(2, Direction::In, FwProto::Icmp, FwAction::Accept);
    echo.icmp_type = vec![8];
    let report = firewall
        .replace(&[ssh.clone(), ssh6.clone(), echo.clone()])
        .expect("replace");
    assert_eq!(report.rules, 3);
    assert!(net5.connects_from("10.214.5.2", "10.214.5.1", admin_port));
    assert!(!net5.connects_from("10.214.5.3", "10.214.5.1", admin_port));
    assert!(!net5.connects_from("10.214.5.2", "10.214.5.1", other_port));
    assert!(net5.connects_from("fd00:214:5::2", "fd00:214:5::1", admin6_port));
    assert!(!net5.connects_from("fd00:214:5::3", "fd00:214:5::1", admin6_port));
    assert_eq!(
        ping(&net5.ns, "10.214.5.3", "10.214.5.1", 2, "0.2").expect("ping"),
        2
    );
    assert_eq!(
        ping(&net5.ns, "fd00:214:5::3", "fd00:214:5::1", 1, "0.2").expect("ping"),
        0,
        "no rule lets ICMPv6 echo in"
    );
    let counters = firewall.rule_counters().expect("counters");
    assert_eq!(counters.len(), 3, "{counters:?}");
    assert!(counters.iter().all(|(_, c)| c.packets >= 1), "{counters:?}");
    let ssh_id = counters[0].0;

    // First match wins: a drop for .3 before an accept of every high port; the ssh
    // rule is kept (same id, counters intact) after a new rule in front of it.
    let mut deny3 = rule(0, Direction::In, FwProto::Tcp, FwAction::Drop);
    deny3.src = vec![net("10.214.5.3/32")];
    let mut high = rule(2, Direction::In, FwProto::Tcp, FwAction::Accept);
    high.dport = vec![(1024, 65535)];
    let before = firewall.rule_counters().expect("counters");
    firewall
        .replace(&[deny3, ssh.clone(), high])
        .expect("replace");
    let after = firewall.rule_counters().expect("counters");
    let kept = after
        .iter()
        .find(|(id, _)| *id == ssh_id)
        .expect("ssh keeps its id");
    assert_eq!(
        kept.1,
        before
            .iter()
            .find(|(id, _)| *id == ssh_id)
            .expect("before")
            .1,
        "and its counters"
    );
    assert!(
        !net5.connects_from("10.214.5.3", "10.214.5.1", other_port),
        "the drop comes first"
    );
    assert!(
        net5.connects_from("10.214.5.2", "10.214.5.1", other_port),
        "high ports open"
    );
    assert!(net5.connects_from("10.214.5.2", "10.214.5.1", admin_port));
    assert_eq!(
        ping(&net5.ns, "10.214.5.2", "10.214.5.1", 1, "0.2").expect("ping"),
        0,
        "the echo rule is gone"
    );

    // Outbound: default drop with one exception; replies to it pass as established.
    firewall
        .configure(
            &FirewallSettings::default()
                .drop_inbound(true)
                .drop_outbound(true),
        )
        .expect("configure");
    let server = net5.http_server(false, 8080);
    let mut web = rule(0, Direction::Out, FwProto::Tcp, FwAction::Accept);
    web.dst = vec![net("10.214.5.2/32")];
    web.dport = vec![(8080, 8080)];
    firewall.replace(&[web]).expect("replace");
    assert!(
        curl(&url("10.214.5.2", 8080)).is_some(),
        "the allowed destination"
    );
    firewall.replace(&[]).expect("replace");
    assert!(
        curl(&url("10.214.5.2", 8080)).is_none(),
        "no rule: outbound dropped"
    );
    drop(server);

    // Refused before anything is written: the live rules stay.
    let good = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    let mut bad = rule(1, Direction::In, FwProto::Icmp, FwAction::Accept);
    bad.dport = vec![(80, 80)];
    let err = firewall.replace(&[good, bad]).expect_err("refused");
    let text = err.to_string();
    assert!(!text.contains("firewall.rules[0]"), "{text}");
    assert!(
        text.contains("firewall.rules[1]") && text.contains("dport"),
        "{text}"
    );
    assert!(firewall.rule_counters().expect("counters").is_empty());
}

/// A random rule over a small address and port space, so packets hit many of them.
fn random_rule(rng: &mut Rng, n: usize, v6: bool) -> FwRule {
    let proto = [FwProto::Tcp, FwProto::Udp, FwProto::Any, FwProto::Tcp][rng.below(4) as usize];
    let action = if rng.below(2) == 0 {
        FwAction::Accept
    } else {
        FwAction::Drop
    };
    let mut r = rule(n, Direction::In, proto, action);
    let prefix = |rng: &mut Rng| -> IpNetwork {
        let host = rng.below(64) as u8;
        if v6 {
            let len = [128u8, 124, 122, 120, 64][rng.below(5) as usize];
            IpNetwork::new(format!("fd00::{host:x}").parse().expect("v6"), len)
                .map(|n| IpNetwork::new(n.network(), len).expect("net"))
                .expect("net")
        } else {
            let len = [32u8, 30, 28, 26, 24][rng.below(5) as usize];
            IpNetwork::new(format!("10.9.0.{host}").parse().expect("v4"), len)
                .map(|n| IpNetwork::new(n.network(), len).expect("net"))
                .expect("net")
        }
    };
    if rng.below(3) > 0 {
        r.src = (0..=rng.below(2)).map(|_| prefix(rng)).collect();
    }
    if rng.below(4) == 0 {
        r.dst = vec![prefix(rng)];
    }
    if proto != FwProto::Any {
        if rng.below(3) > 0 {
            r.dport = (0..=rng.below(3))
                .map(|_| {
                    let lo = 1 + rng.below(100) as u16;
                    (lo, lo + rng.below(20) as u16)
                })
                .collect();
        }
        if rng.below(5) == 0 {
            let lo = 1000 + rng.below(1000) as u16;
            r.sport = vec![(lo, lo + rng.below(2000) as u16)];
        }
    }
    // Rules for port forwards only: no packet here was translated (no `nat:`), so the
    // kernel must pass over them to the next rule that matches.
    r.dnat = rng.below(5) == 0;
    r
}

#[test]
fn the_kernel_classifier_agrees_with_the_first_match_scan() {
    require_privileges!();
    let pins = BpffsDir::new("fwdiff").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    // Stateless: every packet is classified (nothing is remembered between them).
    firewall
        .configure(
            &FirewallSettings::default()
                .drop_inbound(true)
                .stateful(false),
        )
        .expect("configure");
    let object = firewall.object();
    let mut rng = Rng::new(19);
    for (count, v6) in [(50, false), (3000, false), (400, true)] {
        let rules: Vec<FwRule> = (0..count).map(|n| random_rule(&mut rng, n, v6)).collect();
        firewall.replace(&rules).expect("replace");
        let mut accepted = 0;
        for _ in 0..600 {
            let host = rng.below(80);
            let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                (
                    format!("fd00::{host:x}").parse().expect("v6"),
                    format!("fd00::{:x}", rng.below(80)).parse().expect("v6"),
                )
            } else {
                (
                    format!("10.9.0.{host}").parse().expect("v4"),
                    format!("10.9.0.{}", rng.below(80)).parse().expect("v4"),
                )
            };
            let proto = [6u8, 17, 47][rng.below(3) as usize];
            let (sport, dport) = if proto == 47 {
                (0, 0)
            } else {
                (1000 + rng.below(3000) as u16, 1 + rng.below(130) as u16)
            };
            let frame = frames::l4(src, dst, proto, sport, dport, 0x02);
            let packet = Packet {
                direction: Direction::In,
                proto: match proto {
                    6 => PacketProto::Tcp,
                    17 => PacketProto::Udp,
                    _ => PacketProto::Other,
                },
                src,
                dst,
                sport,
                dport,
                translated: false,
            };
            let expected =
                first_match(&rules, &packet).is_some_and(|i| rules[i].action == FwAction::Accept);
            let run = object.test_run("ic_fw_in", &frame, 1).expect("test run");
            // tcx: -1 (TCX_NEXT) passes, 2 (TCX_DROP) drops.
            let passed = run.return_value as i32 == -1;
            assert_eq!(
                passed,
                expected,
                "{count} rules, {packet:?}: first match {:?}",
                first_match(&rules, &packet).map(|i| &rules[i])
            );
            accepted += usize::from(passed);
        }
        assert!(
            (20..580).contains(&accepted),
            "both verdicts are exercised at least 20 times: {accepted} of 600 accepted"
        );
    }
}

#[test]
fn an_idle_flow_expires_and_its_late_reply_is_a_stranger() {
    require_privileges!();
    let net = Net::new("fwexp", 6);
    let pins = BpffsDir::new("fwexp").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut settings = FirewallSettings::default().drop_inbound(true);
    settings.udp_timeout = 1;
    settings.udp_stream_timeout = 1;
    firewall.configure(&settings).expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");

    // The host sends a datagram out; the namespace answers from the port it was sent to.
    let socket = UdpSocket::bind((net.host(false).as_str(), 0)).expect("udp");
    let port = socket.local_addr().expect("addr").port();
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    socket
        .send_to(b"out", (net.peer(false).as_str(), 7777))
        .expect("send");
    let answer = |what: &str| -> bool {
        net.datagram_in(7777, port, what);
        let mut buf = [0u8; 32];
        matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == what.as_bytes())
    };
    assert!(answer("reply"), "a reply within the timeout passes");
    let tracked = |fw: &Firewall| {
        fw.connections()
            .expect("connections")
            .into_iter()
            .any(|c| c.proto == "udp" && c.orig.1 == port)
    };
    assert!(tracked(&firewall));
    assert_eq!(
        firewall.expire().expect("expire").removed,
        0,
        "nothing is idle yet"
    );

    std::thread::sleep(Duration::from_millis(2200));
    let sweep = firewall.expire().expect("expire");
    assert!(sweep.removed >= 1, "the idle flow is removed: {sweep:?}");
    assert!(
        sweep.flows.is_empty(),
        "no flow record without `flows`: {sweep:?}"
    );
    assert!(!tracked(&firewall), "and gone from the table");
    let dropped = firewall.total(FwTotal::Dropped).expect("total").packets;
    assert!(
        !answer("late"),
        "a reply after expiry is a new inbound flow: dropped"
    );
    assert!(firewall.total(FwTotal::Dropped).expect("total").packets > dropped);
}

/// Packets of one connection are handled on several CPUs at once (a reply arriving
/// while the host still sends): the CPU that read the clock first can find the entry
/// stamped later than its `now`. Such an entry is fresh. The table is written here
/// from user space to stage that race (the stamp pushed 3 s ahead), which the kernel
/// only hits now and then: a real run of curl once lost its connection to it.
#[test]
fn a_connection_stamped_ahead_of_a_packets_clock_read_stays_tracked() {
    require_privileges!();
    let net = Net::new("fwrace", 12);
    let pins = BpffsDir::new("fwrace").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .configure(&FirewallSettings::default().drop_inbound(true))
        .expect("configure");
    let _attached = firewall.attach(net.veth.host()).expect("attach");

    let socket = UdpSocket::bind((net.host(false).as_str(), 0)).expect("udp");
    let port = socket.local_addr().expect("addr").port();
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    socket
        .send_to(b"out", (net.peer(false).as_str(), 7778))
        .expect("send");

    // The entry of that datagram, its last packet stamped 3 s from now.
    let ct =
        libbpf_rs::MapHandle::from_pinned_path(pins.path().join(Firewall::OBJECT).join("ic_fw_ct"))
            .expect("the pinned connection table");
    let key = ct
        .keys()
        .find(|k| {
            CtKey::from_bytes(k)
                .is_some_and(|k| k.proto == 17 && (k.port_lo == port || k.port_hi == port))
        })
        .expect("the datagram is tracked");
    let mut entry = ct
        .lookup(&key, libbpf_rs::MapFlags::ANY)
        .expect("lookup")
        .and_then(|v| CtEntry::from_bytes(&v))
        .expect("entry");
    let ahead = entry.last_seen_ns + 3_000_000_000;
    entry.last_seen_ns = ahead;
    ct.update(&key, &entry.to_bytes(), libbpf_rs::MapFlags::EXIST)
        .expect("update");

    // The answer passes as the connection's reply, not as a new inbound flow.
    net.datagram_in(7778, port, "back");
    let mut buf = [0u8; 16];
    let got = socket.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
    assert_eq!(
        got.ok().as_deref(),
        Some(&b"back"[..]),
        "the reply reaches the host"
    );
    let after = ct
        .lookup(&key, libbpf_rs::MapFlags::ANY)
        .expect("lookup")
        .and_then(|v| CtEntry::from_bytes(&v))
        .expect("the connection is still tracked");
    assert_eq!(
        after.packets_reply, 1,
        "the reply is counted on it: {after:?}"
    );
    assert_eq!(
        after.created_ns, entry.created_ns,
        "the same entry: {after:?}"
    );
    assert_eq!(
        after.last_seen_ns, ahead,
        "a stamp ahead of the packet's clock is kept, not moved back: {after:?}"
    );
    assert_eq!(
        firewall.total(FwTotal::Invalid).expect("total").packets,
        0,
        "nothing of it was taken for a stray packet"
    );
}

#[test]
fn a_reject_rule_makes_the_client_fail_at_once_in_both_directions_and_families() {
    require_privileges!();
    let net = Net::new("fwrej", 7);
    let pins = BpffsDir::new("fwrej").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut tcp_in = rule(0, Direction::In, FwProto::Tcp, FwAction::Reject);
    tcp_in.dport = vec![(7001, 7001)];
    let mut udp_in = rule(1, Direction::In, FwProto::Udp, FwAction::Reject);
    udp_in.dport = vec![(7002, 7002)];
    let mut tcp_out = rule(2, Direction::Out, FwProto::Tcp, FwAction::Reject);
    tcp_out.dport = vec![(7003, 7003)];
    let mut udp_out = rule(3, Direction::Out, FwProto::Udp, FwAction::Reject);
    udp_out.dport = vec![(7004, 7004)];
    firewall
        .apply(
            &FirewallSettings::default().drop_inbound(true),
            &[tcp_in, udp_in, tcp_out, udp_out],
        )
        .expect("apply");
    let _attached = firewall.attach(net.veth.host()).expect("attach");

    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let (host, peer) = (net.host(v6), net.peer(v6));
        // Listeners exist on both sides: a refusal can only come from the firewall.
        let _host_listener = TcpListener::bind((host.as_str(), 7001)).expect("listen");
        let _host_udp = UdpSocket::bind((host.as_str(), 7002)).expect("udp");
        let _peer_listener = net
            .ns
            .command("python3")
            .args([
                "-c",
                &format!(
                    "import socket,time\nf=socket.{}\nt=socket.create_server(('{peer}',7003),family=f)\nu=socket.socket(f,socket.SOCK_DGRAM)\nu.bind(('{peer}',7004))\ntime.sleep(30)",
                    if v6 { "AF_INET6" } else { "AF_INET" }
                ),
            ])
            .spawn()
            .map(|child| Server {
                child,
                _dir: tempfile::tempdir().expect("tempdir"),
            })
            .expect("listeners in the namespace");
        let start = Instant::now();
        while !net.ns_listens(7003) {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(50));
        }
        let rejected = firewall.total(FwTotal::Rejected).expect("total").packets;

        // Inbound TCP: the client in the namespace gets a RST at once.
        let script = format!(
            "import socket,sys,time\nt=time.monotonic()\ntry:\n socket.create_connection(('{host}',7001),timeout=5)\n print('open')\nexcept ConnectionRefusedError:\n print('refused %.3f' % (time.monotonic()-t))\nexcept OSError as e:\n print('other', e)"
        );
        let out = net.ns.exec(&["python3", "-c", &script]).expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let took: f64 = text
            .strip_prefix("refused ")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{family}: inbound TCP to a reject rule: {text}"));
        assert!(
            took < 1.0,
            "{family}: refused at once, not after a timeout: {took} s"
        );

        // Inbound UDP: an ICMP port unreachable; a connected socket sees ECONNREFUSED.
        let script = format!(
            "import socket\nf=socket.{}\ns=socket.socket(f,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.connect(('{host}',7002))\ns.send(b'x')\ntry:\n s.recv(16)\n print('answer')\nexcept ConnectionRefusedError:\n print('refused')\nexcept OSError as e:\n print('other', e)",
            if v6 { "AF_INET6" } else { "AF_INET" }
        );
        let out = net.ns.exec(&["python3", "-c", &script]).expect("python3");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "refused",
            "{family}: inbound UDP to a reject rule"
        );

        // Outbound TCP: the host's own connect() fails with ECONNREFUSED at once.
        let dst: SocketAddr = (peer.parse::<std::net::IpAddr>().expect("ip"), 7003).into();
        let started = Instant::now();
        let err = TcpStream::connect_timeout(&dst, Duration::from_secs(5))
            .expect_err("the connection is rejected");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{family}: outbound TCP: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{family}: at once"
        );

        // Outbound UDP: the host's connected socket sees ECONNREFUSED.
        let err = udp_answer_error(&host, &peer, 7004);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{family}: outbound UDP: {err}"
        );
        let now = firewall.total(FwTotal::Rejected).expect("total").packets;
        assert!(
            now >= rejected + 4,
            "{family}: four answers counted: {rejected} -> {now}"
        );
    }
    // Dry-run answers nothing: the packet passes and is counted.
    firewall
        .configure(&FirewallSettings::default().drop_inbound(true).dry_run(true))
        .expect("dry-run");
    let _listener = TcpListener::bind((net.host(false).as_str(), 7001)).expect("listen");
    assert!(
        net.connects_in(&net.host(false), 7001),
        "dry-run: the rejected connection passes"
    );
}

#[test]
fn a_rule_on_a_feed_of_scattered_prefixes_decides_by_the_feed() {
    require_privileges!();
    let net = Net::new("fwfeed", 8);
    let out = net
        .ns
        .exec(&["ip", "addr", "add", "10.214.8.3/24", "dev", net.veth.peer()])
        .expect("ip");
    assert!(out.status.success(), "{out:?}");
    // A feed as real ones are: 50,000 prefixes of every length, mostly scattered /24s
    // and /32s, with one of the namespace's addresses among them.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text: String = ironclad_testing::rules::table_v4(50_000, 7, &[net_of("10.214.8.0/24")])
        .iter()
        .map(|n| format!("{n}\n"))
        .collect();
    text.push_str("10.214.8.3\n");
    std::fs::write(dir.path().join("botnet.txt"), text).expect("feed");
    let yaml = format!(
        "shield:\n  mode: dry-run\n  deny_feeds:\n    - {{path: botnet.txt, format: plain}}\nfirewall:\n  interfaces: [{}]\n  rules:\n    - {{direction: in, proto: tcp, src: botnet, action: drop}}\n",
        net.veth.host()
    );
    let policy = ironclad_policy::config::compile_str(&yaml, &dir.path().join("p.yaml"))
        .unwrap_or_else(|e| panic!("policy: {e}"))
        .firewall
        .expect("firewall");
    assert_eq!(policy.rules.len(), 1, "no management valve in this policy");
    // The Shield aggregates the set (nested and adjacent prefixes merged).
    let prefixes = policy.rules[0].src.len();
    assert!(prefixes > 10_000, "{prefixes} prefixes after aggregation");
    let pins = BpffsDir::new("fwfeed").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let report = firewall
        .apply(&FirewallSettings::from_policy(&policy), &policy.rules)
        .expect("apply");
    assert_eq!(report.rules, 1);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let listener = TcpListener::bind((net.host(false).as_str(), 0)).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    assert!(
        !net.connects_from("10.214.8.3", &net.host(false), port),
        "the feed's address is dropped"
    );
    assert!(
        net.connects_from("10.214.8.2", &net.host(false), port),
        "another address passes"
    );
}

fn net_of(s: &str) -> IpNetwork {
    s.parse().expect("net")
}

#[test]
fn a_rate_limited_rule_lets_its_burst_through_and_drops_the_rest() {
    require_privileges!();
    let net = Net::new("fwrate", 9);
    let pins = BpffsDir::new("fwrate").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut limited = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    limited.dport = vec![(7100, 7100)];
    limited.rate_limit = Some(ironclad_policy::firewall::RuleRate {
        per_second: 1,
        burst: 5,
    });
    firewall
        .apply(&FirewallSettings::default().drop_inbound(true), &[limited])
        .expect("apply");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let listener = TcpListener::bind((net.host(false).as_str(), 7100)).expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    // 20 connections at once from the namespace (threads), each given 0.5 s: within the
    // burst they open, beyond it their SYN is dropped (and not retried in time).
    let script = format!(
        "import socket,threading\nok=[]\ndef go():\n try:\n  s=socket.create_connection(('{}',7100),timeout=0.5)\n  ok.append(1)\n  s.close()\n except OSError:\n  pass\nts=[threading.Thread(target=go) for _ in range(20)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nprint(len(ok))",
        net.host(false)
    );
    let out = net.ns.exec(&["python3", "-c", &script]).expect("python3");
    let opened: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert!(
        (5..=6).contains(&opened),
        "the burst of 5 (and at most one refilled token) opens: {opened}"
    );
    let limited = firewall.total(FwTotal::RateLimited).expect("total").packets;
    assert!(limited >= 14, "the rest was rate-limited: {limited}");
    // A second later one token is back.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(net.connects_in(&net.host(false), 7100), "refilled");
    drop(listener);
}

#[test]
fn a_logged_rule_reports_each_match_with_what_it_did() {
    use ironclad_events::{Event, Fanout, Overflow};
    use std::sync::Arc;
    require_privileges!();
    let net = Net::new("fwlog", 10);
    let pins = BpffsDir::new("fwlog").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut ssh = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    ssh.dport = vec![(7200, 7200)];
    ssh.log = true;
    let mut refused = rule(1, Direction::In, FwProto::Tcp, FwAction::Reject);
    refused.dport = vec![(7201, 7201)];
    refused.log = true;
    let mut quiet = rule(2, Direction::In, FwProto::Tcp, FwAction::Accept);
    quiet.dport = vec![(7202, 7202)];
    let report = firewall
        .apply(
            &FirewallSettings::default().drop_inbound(true),
            &[ssh, refused, quiet],
        )
        .expect("apply");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let reader = firewall.events(fanout.clone()).expect("events");
    let listeners: Vec<TcpListener> = [7200, 7201, 7202]
        .iter()
        .map(|p| TcpListener::bind((net.host(false).as_str(), *p)).expect("listen"))
        .collect();
    assert!(net.connects_in(&net.host(false), 7200));
    assert!(!net.connects_in(&net.host(false), 7201));
    assert!(net.connects_in(&net.host(false), 7202));
    let mut matches = Vec::new();
    let start = Instant::now();
    while matches.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        reader.poll(Duration::from_millis(100)).expect("poll");
        matches.extend(sub.receiver().try_iter().filter_map(|e| match e {
            // (The default policy's drops are reported too, sampled: not these.)
            Event::FirewallMatch(m) if m.rule_id != 0 => Some(m),
            _ => None,
        }));
    }
    reader.poll(Duration::from_millis(200)).expect("poll");
    matches.extend(sub.receiver().try_iter().filter_map(|e| match e {
        Event::FirewallMatch(m) if m.rule_id != 0 => Some(m),
        _ => None,
    }));
    assert_eq!(
        matches.len(),
        2,
        "one per logged match, none for the quiet rule: {matches:#?}"
    );
    assert_eq!(
        (matches[0].rule_id, matches[0].action, matches[0].verdict),
        (report.ids[0], "accept", "accept")
    );
    assert_eq!(matches[0].direction, "in");
    assert_eq!(matches[0].dport, 7200);
    assert_eq!(matches[0].src.to_string(), net.peer(false));
    assert_eq!(matches[0].proto, "tcp");
    assert!(!matches[0].time.is_empty());
    assert_eq!(
        (matches[1].rule_id, matches[1].verdict),
        (report.ids[1], "reject")
    );
    // Each event names its rule as the policy does; the handle knows every live rule.
    assert_eq!(matches[0].rule.as_deref(), Some("firewall.rules[0]"));
    assert_eq!(matches[1].rule.as_deref(), Some("firewall.rules[1]"));
    let labels = firewall.rule_labels();
    assert_eq!(labels.len(), 3, "{labels:?}");
    let quiet = &labels[&report.ids[2]];
    assert_eq!(
        (quiet.name.as_str(), quiet.summary.as_str()),
        ("firewall.rules[2]", "in tcp dport 7202 accept")
    );
    drop(listeners);
}

/// Operator experience: drops by the default policy produced no events at all, so an
/// operator could not see what the policy was refusing. Now they are reported, sampled:
/// at most `log_default_drops` a second (rule `default`), the rest counted only; 0
/// turns them off.
#[test]
fn the_default_policys_drops_are_reported_sampled() {
    use ironclad_events::{Event, Fanout, Overflow};
    use std::sync::Arc;
    require_privileges!();
    let pins = BpffsDir::new("fwdeflog").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut open = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    open.dport = vec![(80, 80)];
    let settings = FirewallSettings::default()
        .drop_inbound(true)
        .log_default_drops(3);
    firewall.apply(&settings, &[open]).expect("apply");
    assert_eq!(firewall.settings().expect("settings").log_default_drops, 3);
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let reader = firewall.events(fanout.clone()).expect("events");
    let object = firewall.object();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
        "10.9.2.2".parse().expect("v4"),
        "10.9.2.1".parse().expect("v4"),
    );
    let run = |dport: u16, n: u16| {
        for sport in 0..n {
            object
                .test_run(
                    "ic_fw_in",
                    &frames::l4(a, b, 6, 5000 + sport, dport, 0x02),
                    1,
                )
                .expect("test run");
        }
    };
    // 40 SYNs no rule admits, at once: the bucket's 3 are reported.
    run(99, 40);
    run(80, 5); // admitted by the rule: not reported
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        reader.poll(Duration::from_millis(50)).expect("poll");
        seen.extend(sub.receiver().try_iter().filter_map(|e| match e {
            Event::FirewallMatch(m) => Some(m),
            _ => None,
        }));
    }
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for m in &seen {
        assert_eq!(
            (m.rule_id, m.rule.as_deref(), m.action, m.verdict, m.dport),
            (0, Some("default"), "drop", "drop", 99),
            "{m:?}"
        );
    }
    // Off: none, and every drop still counted.
    let dropped = firewall.total(FwTotal::Dropped).expect("total").packets;
    firewall
        .configure(&settings.log_default_drops(0))
        .expect("configure");
    std::thread::sleep(Duration::from_millis(1100));
    run(99, 10);
    reader.poll(Duration::from_millis(200)).expect("poll");
    let after: Vec<Event> = sub.receiver().try_iter().collect();
    assert!(after.is_empty(), "{after:#?}");
    assert_eq!(
        firewall.total(FwTotal::Dropped).expect("total").packets,
        dropped + 10
    );
}

/// Each packet the firewall's program sees is counted under exactly one verdict
/// (`FwTotal::VERDICTS`), whatever else is said of it (a reject's answer, a rate limit,
/// a cookie): their sum is every packet run, so a sum over the metrics' `verdict` label
/// means something. Run through the program itself (BPF_PROG_TEST_RUN), one packet of
/// each path.
#[test]
fn each_packet_is_counted_under_exactly_one_verdict() {
    require_privileges!();
    let pins = BpffsDir::new("fwverdicts").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut open = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    open.dport = vec![(80, 80)];
    let mut refused = rule(1, Direction::In, FwProto::Tcp, FwAction::Reject);
    refused.dport = vec![(81, 81)];
    let mut limited = rule(2, Direction::In, FwProto::Tcp, FwAction::Accept);
    limited.dport = vec![(82, 82)];
    limited.rate_limit = Some(ironclad_policy::firewall::RuleRate {
        per_second: 1,
        burst: 1,
    });
    let mut dropped_udp = rule(3, Direction::In, FwProto::Udp, FwAction::Drop);
    dropped_udp.dport = vec![(53, 53)];
    firewall
        .apply(
            &FirewallSettings::default().drop_inbound(true),
            &[open, refused, limited, dropped_udp],
        )
        .expect("apply");
    let object = firewall.object();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
        "10.9.1.2".parse().expect("v4"),
        "10.9.1.1".parse().expect("v4"),
    );
    let (a6, b6): (std::net::IpAddr, std::net::IpAddr) = (
        "fd00:9::2".parse().expect("v6"),
        "fd00:9::1".parse().expect("v6"),
    );
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let mut arp = frames::l4(a, b, 17, 1, 1, 0);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let frames = vec![
        frames::l4(a, b, 6, 4000, 80, SYN),   // new, admitted
        frames::l4(a, b, 6, 4000, 80, ACK),   // of that connection
        frames::l4(a6, b6, 6, 4000, 80, SYN), // new, admitted (IPv6)
        frames::l4(a, b, 6, 4001, 81, SYN),   // rejected (dropped, answered)
        frames::l4(a, b, 6, 4002, 82, SYN),   // within the rate
        frames::l4(a, b, 6, 4003, 82, SYN),   // over it: dropped
        frames::l4(a, b, 6, 4004, 99, SYN),   // no rule: the default drops
        frames::l4(a, b, 6, 4005, 99, ACK),   // no connection, no SYN: invalid
        frames::l4(a, b, 17, 4006, 53, 0),    // a drop rule
        frames::l4(a, b, 47, 0, 0, 0),        // not tracked: the default drops
        arp,                                  // not IP
    ];
    let before = firewall.totals().expect("totals");
    for frame in &frames {
        object.test_run("ic_fw_in", frame, 1).expect("test run");
    }
    let after = firewall.totals().expect("totals");
    let delta = |t: FwTotal| {
        let of = |v: &[(FwTotal, ironclad_bpf::Counter)]| {
            v.iter()
                .find(|(x, _)| *x == t)
                .map_or(0, |(_, c)| c.packets)
        };
        of(&after) - of(&before)
    };
    let verdicts: Vec<(FwTotal, u64)> = FwTotal::VERDICTS.iter().map(|t| (*t, delta(*t))).collect();
    assert_eq!(
        verdicts.iter().map(|(_, n)| n).sum::<u64>(),
        frames.len() as u64,
        "{verdicts:?}"
    );
    for (t, n) in [
        (FwTotal::NewAccepted, 3),
        (FwTotal::Established, 1),
        (FwTotal::Dropped, 5),
        (FwTotal::Invalid, 1),
        (FwTotal::NonIp, 1),
    ] {
        assert_eq!(delta(t), n, "{t:?}: {verdicts:?}");
    }
    // What the verdicts do not say, beside them.
    assert_eq!(delta(FwTotal::Rejected), 1);
    assert_eq!(delta(FwTotal::RateLimited), 1);
    // An untracked packet a rule passes is untracked, not also something else.
    let mut gre = rule(4, Direction::In, FwProto::Any, FwAction::Accept);
    gre.src = vec![net("10.9.1.2/32")];
    firewall.replace(&[gre]).expect("replace");
    let before = firewall.totals().expect("totals");
    object
        .test_run("ic_fw_in", &frames::l4(a, b, 47, 0, 0, 0), 1)
        .expect("test run");
    let after = firewall.totals().expect("totals");
    let moved: Vec<(FwTotal, u64)> = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x.1.packets != y.1.packets)
        .map(|(x, y)| (x.0, y.1.packets - x.1.packets))
        .collect();
    assert_eq!(moved, [(FwTotal::Untracked, 1)]);
}

/// Collects flow records from `reader` until `enough` says so or `secs` pass.
fn flows_until(
    reader: &ironclad_bpf::EventReader,
    sub: &ironclad_events::Subscription<ironclad_events::Event>,
    out: &mut Vec<ironclad_events::FlowRecord>,
    secs: u64,
    enough: impl Fn(&[ironclad_events::FlowRecord]) -> bool,
) {
    let start = Instant::now();
    loop {
        reader.poll(Duration::from_millis(100)).expect("poll");
        out.extend(sub.receiver().try_iter().filter_map(|e| match e {
            ironclad_events::Event::Flow(f) => Some(f),
            _ => None,
        }));
        if enough(out) || start.elapsed() > Duration::from_secs(secs) {
            return;
        }
    }
}

#[test]
fn an_inbound_connection_names_the_process_that_accepted_it_and_no_other() {
    use ironclad_events::{Fanout, Overflow};
    use std::sync::Arc;
    require_privileges!();
    let net = Net::new("fwaccept", 14);
    let pins = BpffsDir::new("fwaccept").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut accepted = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    accepted.dport = vec![(7310, 7312)];
    accepted.flows = true;
    let mut settings = FirewallSettings::default().drop_inbound(true);
    settings.tcp_timeout[CtState::Closing as usize] = 1;
    firewall.apply(&settings, &[accepted]).expect("apply");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    // These test machines' kernel refuses fentry programs (EPERM at load, under its
    // lockdown): there the firewall loads and decides without the hook, attaching it
    // says why, and inbound connections name no process. Where the kernel allows it
    // (the guest kernels, whose suite requires it: firewall_guest) the hook names the
    // process that accepted each connection, here too.
    let accept = firewall.attach_accept();
    let locked = accept.is_err();
    if let Err(err) = &accept {
        assert!(
            matches!(err, ironclad_bpf::BpfError::NotLoaded { .. })
                && err.to_string().contains("the kernel refused it"),
            "{err}"
        );
    }
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let reader = firewall.events(fanout.clone()).expect("events");

    // A busy process on the host all along, in the same cgroup as the servers: the
    // task a softirq interrupts is often this one, and it must never be named.
    let busy = KillOnDrop(
        Command::new("python3")
            .args(["-c", "while True: pass"])
            .stdout(Stdio::null())
            .spawn()
            .expect("busy loop"),
    );
    // Servers in processes of their own, IPv4 and IPv6: each accepts one connection,
    // answers, and keeps it open until the client closes. A third listens and never
    // accepts: its connection completes in the kernel with no process taking it.
    let server = |addr: &str, port: u16, accept: bool| {
        let family = if addr.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        let body = if accept {
            "c,_=s.accept()\nc.recv(16)\nc.sendall(b'hi')\nc.recv(16)\nc.close()"
        } else {
            "import time\ntime.sleep(30)"
        };
        let mut child = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket\ns=socket.socket(socket.{family})\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{addr}',{port}))\ns.listen(4)\nprint('listening',flush=True)\n{body}"
                ),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("the server's first line");
        assert_eq!(line.trim(), "listening");
        KillOnDrop(child)
    };
    let v4 = server(&net.host(false), 7310, true);
    let v6 = server(&net.host(true), 7311, true);
    let never = server(&net.host(false), 7312, false);
    let (v4_pid, v6_pid) = if locked {
        (0, 0)
    } else {
        (v4.0.id(), v6.0.id())
    };
    // Clients in the namespace hold their connections open until told (stdin closes).
    let client = |addr: &str, port: u16, talk: bool| {
        let exchange = if talk {
            "s.sendall(b'hello')\nassert s.recv(16)==b'hi'\n"
        } else {
            ""
        };
        net.ns
            .command("python3")
            .args([
                "-c",
                &format!(
                    "import socket,sys\ns=socket.create_connection(('{addr}',{port}),2)\n{exchange}print('open',flush=True)\nsys.stdin.read()\ns.close()"
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map(KillOnDrop)
            .expect("client")
    };
    let mut clients: Vec<KillOnDrop> = vec![
        client(&net.host(false), 7310, true),
        client(&net.host(true), 7311, true),
        client(&net.host(false), 7312, false),
    ];
    for c in &mut clients {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.0.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("the client's line");
        assert_eq!(line.trim(), "open", "the client connected");
    }

    // While open: the table names each accepting process, and none for the connection
    // no process accepted.
    let conns = firewall.connections().expect("connections");
    let by_port = |port: u16| {
        conns
            .iter()
            .find(|c| c.inbound && c.reply.1 == port)
            .unwrap_or_else(|| panic!("no inbound connection to {port}: {conns:#?}"))
    };
    assert_eq!(by_port(7310).pid, v4_pid, "{conns:#?}");
    assert_eq!(by_port(7311).pid, v6_pid, "{conns:#?}");
    assert_eq!(by_port(7312).pid, 0, "accepted by no process: {conns:#?}");
    assert_eq!(by_port(7310).cgroup_id != 0, !locked);
    assert!(conns.iter().all(|c| c.pid != busy.0.id()), "{conns:#?}");

    // The start records came with the first packets, before any accept: no process.
    let mut flows = Vec::new();
    flows_until(&reader, &sub, &mut flows, 5, |f| f.len() >= 3);
    let starts: Vec<_> = flows.iter().filter(|f| f.phase == "start").collect();
    assert_eq!(starts.len(), 3, "{flows:#?}");
    assert!(starts.iter().all(|s| s.pid == 0), "{starts:#?}");

    // Closed, then swept: each end record names the process that accepted it.
    for mut c in clients {
        drop(c.0.stdin.take());
        let _ = c.0.wait();
    }
    let (mut v4, mut v6) = (v4, v6);
    let _ = v4.0.wait();
    let _ = v6.0.wait();
    std::thread::sleep(Duration::from_millis(2500));
    let ends = firewall.expire().expect("expire").flows;
    let end = |port: u16| {
        ends.iter()
            .find(|e| e.dport == port)
            .unwrap_or_else(|| panic!("no end record for {port}: {ends:#?}"))
    };
    assert_eq!(end(7310).pid, v4_pid, "{ends:#?}");
    assert_eq!(end(7311).pid, v6_pid, "{ends:#?}");
    assert_eq!(end(7310).cgroup_id != 0, !locked);
    drop((busy, never));
}

#[test]
fn flow_records_report_each_connection_with_its_process_bytes_and_end() {
    use ironclad_events::{Fanout, Overflow};
    use std::sync::Arc;
    require_privileges!();
    let net = Net::new("fwflow", 11);
    let pins = BpffsDir::new("fwflow").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let mut recorded_in = rule(0, Direction::In, FwProto::Tcp, FwAction::Accept);
    recorded_in.dport = vec![(7300, 7300)];
    recorded_in.flows = true;
    let mut quiet_in = rule(1, Direction::In, FwProto::Tcp, FwAction::Accept);
    quiet_in.dport = vec![(7301, 7301)];
    let mut out_tcp = rule(2, Direction::Out, FwProto::Tcp, FwAction::Accept);
    out_tcp.flows = true;
    let mut out_udp = rule(3, Direction::Out, FwProto::Udp, FwAction::Accept);
    out_udp.flows = true;
    let mut settings = FirewallSettings::default().drop_inbound(true);
    settings.tcp_timeout[CtState::Closing as usize] = 1;
    settings.udp_timeout = 1;
    settings.udp_stream_timeout = 1;
    let report = firewall
        .apply(&settings, &[recorded_in, quiet_in, out_tcp, out_udp])
        .expect("apply");
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let reader = firewall.events(fanout.clone()).expect("events");

    // Inbound: a client in the namespace sends 5 bytes, the host answers 11 and both
    // close; another closes with a RST (SO_LINGER 0); a third goes to the quiet rule.
    let host = net.host(false);
    let listener = TcpListener::bind((host.as_str(), 7300)).expect("listen");
    let quiet = TcpListener::bind((host.as_str(), 7301)).expect("listen");
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"hello world");
            let _ = s.read(&mut buf[n..]);
        }
    });
    let client = |linger0: bool| {
        let script = format!(
            "import socket,struct\ns=socket.create_connection(('{host}',7300),2)\ns.sendall(b'hello')\nassert s.recv(64)==b'hello world'\n{}\ns.close()",
            if linger0 {
                "s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))"
            } else {
                "s.shutdown(socket.SHUT_WR)\ns.recv(1)"
            }
        );
        let status = net
            .ns
            .command("python3")
            .args(["-c", &script])
            .status()
            .expect("python3");
        assert!(status.success(), "the inbound client ran");
    };
    client(false);
    client(true);
    server.join().expect("server");
    assert!(net.connects_in(&host, 7301));
    drop(quiet);

    // Outbound: the distribution's curl fetches a page from the namespace, and a short
    // python3 process sends a datagram that the namespace answers.
    let _http = net.http_server(false, 8080);
    let curl = Command::new("/usr/bin/curl")
        .args(["-s", "--max-time", "3", &url(&net.peer(false), 8080)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let curl_pid = curl.id();
    let page = curl.wait_with_output().expect("curl");
    assert!(String::from_utf8_lossy(&page.stdout).contains("hello from the namespace"));
    let mut echo = net
        .ns
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{}',7777))\nprint('bound',flush=True)\nd,a=s.recvfrom(64)\ns.sendto(d.upper(),a)",
                net.peer(false)
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo");
    // The datagram goes once the echo is bound (a python3 takes about a second to
    // start on a slow machine): sent earlier, it would meet a closed port.
    let mut bound = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(echo.stdout.as_mut().expect("the echo's stdout")),
        &mut bound,
    )
    .expect("the echo's first line");
    assert_eq!(bound.trim(), "bound");
    let udp = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.sendto(b'ping',('{}',7777))\nassert s.recv(64)==b'PING'",
                net.peer(false)
            ),
        ])
        .spawn()
        .expect("python3");
    let udp_pid = udp.id();
    let udp_status = udp.wait_with_output().expect("udp").status;
    assert!(udp_status.success(), "the datagram was answered");
    let _ = echo.wait_with_output();

    let mut flows = Vec::new();
    flows_until(&reader, &sub, &mut flows, 5, |f| f.len() >= 4);
    let starts: Vec<_> = flows.iter().filter(|f| f.phase == "start").collect();
    assert_eq!(
        starts.len(),
        4,
        "two inbound on the recorded rule, curl and the datagram; none for the quiet rule: {flows:#?}"
    );
    for s in &starts[..2] {
        assert_eq!((s.direction, s.proto, s.dport), ("in", "tcp", 7300));
        assert_eq!(s.src.to_string(), net.peer(false));
        assert_eq!(s.rule_id, report.ids[0]);
        assert_eq!(s.pid, 0, "nobody on this host opened it");
    }
    let curl_start = starts
        .iter()
        .find(|s| s.proto == "tcp" && s.direction == "out")
        .expect("curl's start");
    assert_eq!(curl_start.dport, 8080);
    assert_eq!(curl_start.dst.to_string(), net.peer(false));
    assert_eq!(curl_start.rule_id, report.ids[2]);
    assert_eq!(curl_start.pid, curl_pid, "the process that opened it");
    assert_eq!(curl_start.comm.as_deref(), Some("curl"));
    assert_ne!(curl_start.cgroup_id, 0);
    let udp_start = starts
        .iter()
        .find(|s| s.proto == "udp")
        .expect("the datagram's start");
    assert_eq!(
        (udp_start.pid, udp_start.dport, udp_start.rule_id),
        (udp_pid, 7777, report.ids[3])
    );
    assert_eq!(udp_start.comm.as_deref(), Some("python3"));
    assert!(!udp_start.time.is_empty());

    // The ends come from the sweep once the closed (1 s) and idle (1 s) entries expire.
    std::thread::sleep(Duration::from_millis(2500));
    let sweep = firewall.expire().expect("expire");
    flows_until(&reader, &sub, &mut flows, 1, |_| false);
    let ends = sweep.flows;
    assert_eq!(ends.len(), 4, "one end per recorded start: {ends:#?}");
    assert!(
        sweep.removed > ends.len(),
        "the quiet connection went without a record"
    );
    let inbound: Vec<_> = ends.iter().filter(|e| e.direction == "in").collect();
    let mut reasons: Vec<_> = inbound.iter().filter_map(|e| e.end_reason).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["fin", "reset"], "{inbound:#?}");
    for e in &inbound {
        assert!(e.orig_bytes > 0 && e.reply_bytes > 0, "{e:?}");
        assert!(e.orig_packets >= 3 && e.reply_packets >= 2, "{e:?}");
        assert!(e.duration_ms.is_some());
    }
    let curl_end = ends
        .iter()
        .find(|e| e.proto == "tcp" && e.direction == "out")
        .expect("curl's end");
    assert_eq!(curl_end.end_reason, Some("fin"));
    assert_eq!(curl_end.pid, curl_pid);
    assert!(
        curl_end.reply_bytes > page.stdout.len() as u64 && curl_end.orig_bytes > 0,
        "the page came back through it: {curl_end:?}"
    );
    let udp_end = ends.iter().find(|e| e.proto == "udp").expect("udp end");
    assert_eq!(
        (udp_end.end_reason, udp_end.state, udp_end.reply_packets),
        (Some("timeout"), "established", 1)
    );
    assert!(
        flows.iter().all(|f| f.phase == "start"),
        "the kernel reported no end itself: {flows:#?}"
    );
    assert!(firewall.connections().expect("connections").is_empty());
}

/// Checks `default_inbound: drop` on `net`'s host end: a new inbound connection to
/// the host's `port` is dropped, the host's own HTTP request out is answered.
pub(crate) fn drops_in_and_answers_out(net: &Net, port: u16) {
    assert!(
        !net.connects_in(&net.host(false), port),
        "a new inbound connection is dropped"
    );
    let server = net.http_server(false, 8000);
    assert_eq!(
        curl(&url(&net.peer(false), 8000)).as_deref(),
        Some("hello from the namespace\n"),
        "the host's own connection out and its replies pass"
    );
    drop(server);
}

/// Deletes the firewall's classic tc filters on `net`'s host end in both directions
/// (with either left, the egress one drops the answer to a SYN it never saw, the
/// ingress one the SYN), sees `port` open, and the next [`Firewall::verify`] put both
/// back and close it.
pub(crate) fn filters_deleted_and_put_back(
    net: &Net,
    firewall: &Firewall,
    attached: &mut ironclad_bpf::FirewallAttachment,
    port: u16,
) {
    let (dev, host) = (net.veth.host(), net.host(false));
    crate::firewall_guest::sh(&format!(
        "tc filter del dev {dev} ingress && tc filter del dev {dev} egress"
    ));
    assert!(
        net.connects_in(&host, port),
        "the filters deleted, the port is open"
    );
    let found = repairs(firewall, attached);
    assert!(
        found.iter().all(|f| f
            .as_deref()
            .is_some_and(|t| t.contains("removed from outside"))),
        "{found:?}"
    );
    assert!(!net.connects_in(&host, port), "the filters put back");
}

/// The results of one [`Firewall::verify`], ingress first: `None` for a hook found
/// as it should be, the repair's text for one put back; an error fails the test.
pub(crate) fn repairs(
    firewall: &Firewall,
    attached: &mut ironclad_bpf::FirewallAttachment,
) -> Vec<Option<String>> {
    firewall
        .verify(attached)
        .into_iter()
        .map(|r| r.expect("put back"))
        .collect()
}

/// Kernels without tcx links (before 6.6: Debian 12, Ubuntu 22.04, RHEL 9) get the
/// firewall as classic tc filters; the guests' 6.1 chooses them by itself
/// (`firewall_guest`), this host is asked for them. Root with `tc` or `bpf()` can
/// undo a filter as it cannot undo a link: each way — the filter deleted, the clsact
/// qdisc deleted with every filter in it, another program swapped into the filter — is
/// shown to open the port, and the next check to close it again.
#[test]
fn classic_tc_filters_enforce_and_a_deleted_or_swapped_filter_is_put_back() {
    use crate::firewall_guest::sh;
    use ironclad_bpf::tc::{priority, FILTER_HANDLE};
    use ironclad_bpf::TcMechanism;
    require_privileges!();
    let net = Net::new("fwtc", 21);
    let dev = net.veth.host().to_string();
    let pins = BpffsDir::new("fwtc").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .configure(&FirewallSettings::default().drop_inbound(true))
        .expect("configure");
    let listener = TcpListener::bind((net.host(false).as_str(), 0)).expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let host = net.host(false);
    let mut attached = firewall
        .attach_with(&dev, TcMechanism::Clsact)
        .expect("attach");
    assert_eq!(attached.mechanism(), TcMechanism::Clsact);
    assert_eq!(
        attached.link_ids().expect("ids"),
        Vec::<u32>::new(),
        "filters are not links"
    );
    for (point, program) in [("ingress", "ic_fw_in"), ("egress", "ic_fw_out")] {
        let shown = sh(&format!("tc filter show dev {dev} {point}"));
        assert!(
            shown.contains(&format!("pref {} bpf", priority::FIREWALL))
                && shown.contains(&format!("handle {FILTER_HANDLE:#x} {program}"))
                && shown.contains("direct-action"),
            "{point}: {shown}"
        );
    }
    drops_in_and_answers_out(&net, port);
    assert_eq!(repairs(&firewall, &mut attached), [None, None]);

    // 1. `tc filter del`, in both directions.
    filters_deleted_and_put_back(&net, &firewall, &mut attached, port);
    sh(&format!("tc filter del dev {dev} egress"));
    let found = repairs(&firewall, &mut attached);
    assert!(
        found[0].is_none() && found[1].is_some(),
        "only egress: {found:?}"
    );

    // 2. The clsact qdisc, and both filters with it.
    sh(&format!("tc qdisc del dev {dev} clsact"));
    assert!(
        net.connects_in(&host, port),
        "the qdisc deleted, the port is open"
    );
    let found = repairs(&firewall, &mut attached);
    assert!(found.iter().all(Option::is_some), "{found:?}");
    assert!(!net.connects_in(&host, port), "both filters put back");

    // 3. Another program (one that passes everything) swapped into both filters with
    // bpftool and tc, at their handle and priority.
    let dir = tempfile::tempdir().expect("tempdir");
    let elf = dir.path().join("pass.o");
    std::fs::write(&elf, ironclad_bpf::object::baseline().elf()).expect("write");
    let pinned = pins.path().join("attacker");
    sh(&format!(
        "bpftool prog loadall {} {} type classifier",
        elf.display(),
        pinned.display()
    ));
    for point in ["ingress", "egress"] {
        sh(&format!(
            "tc filter replace dev {dev} {point} pref {} handle {FILTER_HANDLE:#x} bpf da pinned {}/ic_baseline_tc",
            priority::FIREWALL,
            pinned.display()
        ));
    }
    assert!(
        net.connects_in(&host, port),
        "the programs swapped, the port is open"
    );
    let found = repairs(&firewall, &mut attached);
    assert!(
        found
            .iter()
            .all(|f| f.as_deref().is_some_and(|t| t.contains("ran program"))),
        "{found:?}"
    );
    assert!(
        !net.connects_in(&host, port),
        "the firewall's program swapped back"
    );
    let _ = std::fs::remove_dir_all(&pinned);

    // Dropped: the filters go (the qdisc stays for whoever else uses it).
    drop(attached);
    let left = sh(&format!("tc filter show dev {dev} ingress"));
    assert!(!left.contains("ic_fw_in"), "{left}");
    assert!(net.connects_in(&host, port), "detached: open again");

    // What `full_firewall detach` does when no process holds them (after kill -9):
    // found by handle and priority on every interface and removed.
    let again = firewall
        .attach_with(&dev, TcMechanism::Clsact)
        .expect("attach");
    assert!(!net.connects_in(&host, port));
    let removed = ironclad_bpf::tc::remove_filters().expect("remove");
    let ours: Vec<_> = removed.iter().filter(|(i, _, _)| *i == dev).collect();
    assert_eq!(
        ours,
        [
            &(dev.clone(), "ingress", priority::FIREWALL),
            &(dev.clone(), "egress", priority::FIREWALL)
        ],
        "{removed:?}"
    );
    assert!(net.connects_in(&host, port), "removed: open again");
    drop(again);
}
