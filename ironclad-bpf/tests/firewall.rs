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

use ironclad_bpf::{Firewall, FirewallSettings, Loader};
use ironclad_core::abi::{CtState, FwTotal};
use ironclad_testing::{ping, require_privileges, BpffsDir, NetNs, VethPair};

/// A namespace behind a veth pair, IPv4 10.214.`net`.0/24 and IPv6 fd00:214:`net`::/64;
/// the host is .1/::1, the namespace .2/::2.
struct Net {
    ns: NetNs,
    veth: VethPair,
    net: u8,
}

impl Net {
    fn new(tag: &str, net: u8) -> Self {
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

    fn host(&self, v6: bool) -> String {
        if v6 {
            format!("fd00:214:{}::1", self.net)
        } else {
            format!("10.214.{}.1", self.net)
        }
    }

    fn peer(&self, v6: bool) -> String {
        if v6 {
            format!("fd00:214:{}::2", self.net)
        } else {
            format!("10.214.{}.2", self.net)
        }
    }

    /// Whether a TCP connection from inside the namespace to `addr:port` succeeds
    /// within 2 s.
    fn connects_in(&self, addr: &str, port: u16) -> bool {
        let script = format!(
            "import socket\ns=socket.create_connection(('{addr}',{port}),timeout=2)\ns.close()"
        );
        self.ns
            .command("python3")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("python3")
            .success()
    }

    /// A python HTTP server in the namespace on its address, port `port`.
    fn http_server(&self, v6: bool, port: u16) -> Server {
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
        // Wait until it listens.
        let start = Instant::now();
        while !self.ns_listens(port) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-g", "--max-time", "3", url])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn url(addr: &str, port: u16) -> String {
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
        let echo = net
            .ns
            .command("python3")
            .args([
                "-c",
                &format!(
                    "import socket\ns=socket.socket(socket.{},socket.SOCK_DGRAM)\ns.bind(('{}',5353))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)",
                    if v6 { "AF_INET6" } else { "AF_INET" },
                    net.peer(v6)
                ),
            ])
            .spawn()
            .expect("udp echo");
        let mut echo = Server {
            child: echo,
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        let socket = UdpSocket::bind((net.host(v6).as_str(), 0)).expect("udp");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let dst: SocketAddr = (net.peer(v6).parse::<std::net::IpAddr>().expect("ip"), 5353).into();
        let mut answered = false;
        for _ in 0..20 {
            socket.send_to(b"query", dst).expect("send");
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                answered = &buf[..n] == b"query";
                break;
            }
        }
        assert!(answered, "{family}: the UDP answer came back");
        let _ = echo.child.kill();

        // An ICMP port unreachable for an outbound datagram passes as related: a
        // connected UDP socket sees ECONNREFUSED.
        let related = firewall.total(FwTotal::Related).expect("total").packets;
        let socket = UdpSocket::bind((net.host(v6).as_str(), 0)).expect("udp");
        socket.connect((net.peer(v6).as_str(), 9)).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        socket.send(b"anyone?").expect("send");
        let mut buf = [0u8; 16];
        let err = socket.recv(&mut buf).expect_err("no answer but an error");
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
    assert_eq!(loader.remove_pins(Firewall::OBJECT).expect("unpin"), 3);
}
