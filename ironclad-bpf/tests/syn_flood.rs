//! The flood defence against the kernel. SYN cookies answered in XDP on a veth: the
//! handshake completed by python clients inside a namespace into a listener on the
//! host (with the options negotiated, data both ways), forged ACKs refused, and a flood
//! of spoofed SYNs sent as fast as this machine allows while a real client keeps
//! connecting, with and without the defence (IPv4 and IPv6). Rate limits on new
//! connections (`firewall.limits`): each kind's burst, refill, counters and events
//! exactly, and each holding against a spoofed flood while a real client connects.
//!
//! The tests change `net.ipv4.tcp_syncookies` of the host's namespace for one
//! comparison, so they run one at a time (a lock), in this binary alone.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use ironclad_bpf::{Firewall, FirewallSettings, Loader, SynFloodSettings};
use ironclad_core::abi::{CtState, FwTotal};
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{Direction, FwAction, FwProto, FwRule};
use ironclad_testing::flood::{self, Flood};
use ironclad_testing::{require_privileges, run, BpffsDir, NetNs, VethPair};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A namespace behind a veth pair: IPv4 10.216.`net`.0/24, IPv6 fd00:216:`net`::/64
/// (host .1/::1, namespace .2/::2). Spoofed sources come from 10.`200 + net`.0.0/16
/// and fd00:217:`net`::/64, routed back into the namespace, which drops what is sent to
/// them.
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
                &format!("10.216.{net}.1/24"),
                &format!("fd00:216:{net}::1/64"),
            ],
            &[
                &format!("10.216.{net}.2/24"),
                &format!("fd00:216:{net}::2/64"),
            ],
        )
        .expect("veth");
        // Frames a veth sends back with XDP_TX wait in the other end's ring until that
        // end's NAPI runs, which the driver schedules for them only when that end has
        // an XDP program of its own: the namespace's end gets one that passes
        // everything (as a container's end would need; a physical NIC does not).
        let obj = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(obj.path(), ironclad_bpf::object::baseline().elf()).expect("write");
        ns.exec(&[
            "ip",
            "link",
            "set",
            "dev",
            veth.peer(),
            "xdp",
            "obj",
            &obj.path().display().to_string(),
            "sec",
            "xdp",
        ])
        .expect("XDP_PASS on the namespace's end");
        let spoofed = Self::spoofed_prefix(net);
        run(
            "ip",
            &[
                "route",
                "add",
                &spoofed.0,
                "via",
                &format!("10.216.{net}.2"),
            ],
        )
        .expect("route v4");
        run(
            "ip",
            &[
                "-6",
                "route",
                "add",
                &spoofed.1,
                "via",
                &format!("fd00:216:{net}::2"),
            ],
        )
        .expect("route v6");
        Self { ns, veth, net }
    }

    fn spoofed_prefix(net: u8) -> (String, String) {
        (
            format!("10.{}.0.0/16", 200 + u16::from(net)),
            format!("fd00:217:{net}::/64"),
        )
    }

    fn spoofed_base(&self, v6: bool) -> (IpAddr, u32) {
        if v6 {
            (format!("fd00:217:{}::", self.net).parse().expect("ip"), 64)
        } else {
            (
                format!("10.{}.0.0", 200 + u16::from(self.net))
                    .parse()
                    .expect("ip"),
                16,
            )
        }
    }

    fn host(&self, v6: bool) -> String {
        if v6 {
            format!("fd00:216:{}::1", self.net)
        } else {
            format!("10.216.{}.1", self.net)
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let (v4, v6) = Self::spoofed_prefix(self.net);
        let _ = run("ip", &["route", "del", &v4]);
        let _ = run("ip", &["-6", "route", "del", &v6]);
    }
}

fn loader(pins: &BpffsDir) -> Loader {
    Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader")
}

/// Inbound TCP to `port` accepted, everything else new inbound dropped.
fn accept_port(firewall: &Firewall, port: u16) {
    let mut rule = FwRule::new(
        Origin::field("firewall.rules[0]".to_string()),
        Direction::In,
        FwProto::Tcp,
    );
    rule.dport = vec![(port, port)];
    rule.action = FwAction::Accept;
    firewall
        .apply(&FirewallSettings::default().drop_inbound(true), &[rule])
        .expect("rules");
}

/// A listener that echoes whatever each connection sends until it closes.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(addr: &str) -> Self {
        let listener = TcpListener::bind((addr, 0)).expect("listener");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut buf = [0u8; 65536];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// python3 in the namespace: connects to `addr:port`, sends `bytes` random bytes and
/// reads them back; prints `ok <connect seconds>` when the echo matches.
fn python_roundtrip(net: &Net, addr: &str, port: u16, bytes: usize) -> String {
    let script = format!(
        r#"
import os, socket, time
data = os.urandom({bytes})
t = time.monotonic()
s = socket.create_connection(('{addr}', {port}), timeout=5)
connected = time.monotonic() - t
s.sendall(data)
got = b''
while len(got) < len(data):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
s.close()
print('ok' if got == data else 'mismatch %d of %d' % (len(got), len(data)), connected)
"#
    );
    let out = net
        .ns
        .command("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A TCP segment with only ACK set (a forged cookie) from the namespace to
/// `dst:dport`, three times (python computes the checksum).
fn forged_ack(net: &Net, dst: &str, dport: u16) {
    let script = format!(
        r#"
import socket, struct
src, dst = socket.inet_aton('10.216.{n}.2'), socket.inet_aton('{dst}')
tcp = struct.pack('!HHIIBBHHH', 40001, {dport}, 12345, 67890, 5 << 4, 0x10, 65535, 0, 0)
pseudo = src + dst + struct.pack('!BBH', 0, 6, len(tcp))
data = pseudo + tcp
s = sum((data[i] << 8) + data[i + 1] for i in range(0, len(data), 2))
while s >> 16:
    s = (s & 0xffff) + (s >> 16)
tcp = tcp[:16] + struct.pack('!H', ~s & 0xffff) + tcp[18:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for _ in range(3):
    r.sendto(tcp, ('{dst}', 0))
"#,
        n = net.net
    );
    let status = net
        .ns
        .command("python3")
        .args(["-c", &script])
        .status()
        .expect("python3");
    assert!(status.success(), "raw socket send");
}

/// A python listener on the host accepts one connection from a python client in the
/// namespace (through the cookie path: its port is protected too) and reports the
/// accepted socket's options from `TCP_INFO`, and the window scale the client offered.
fn server_options(net: &Net, firewall: &Firewall, v6: bool, port: u16) -> (String, String) {
    let probe = std::net::TcpListener::bind((net.host(v6).as_str(), 0)).expect("port");
    let port2 = probe.local_addr().expect("addr").port();
    drop(probe);
    let mut settings = firewall.syn_flood().expect("read");
    settings.ports.insert(port2);
    firewall.set_syn_flood(&settings).expect("syn flood");
    let mut rule = FwRule::new(
        Origin::field("firewall.rules[1]".to_string()),
        Direction::In,
        FwProto::Tcp,
    );
    rule.dport = vec![(port, port), (port2, port2)];
    rule.action = FwAction::Accept;
    firewall
        .apply(&FirewallSettings::default().drop_inbound(true), &[rule])
        .expect("rules");
    let family = if v6 { "AF_INET6" } else { "AF_INET" };
    let server = format!(
        r#"
import socket, struct
l = socket.socket(socket.{family}, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('{addr}', {port2}))
l.listen(8)
print('listening', flush=True)
s, _ = l.accept()
s.recv(1)
i = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
opts, ws = i[5], i[6]
snd_mss = struct.unpack_from('I', i, 16)[0]
names = [n for bit, n in ((1, 'ts'), (2, 'sack'), (4, 'wscale')) if opts & bit]
print(' '.join(names), 'snd_wscale=%d rcv_wscale=%d snd_mss=%d' % (ws & 15, ws >> 4, snd_mss), flush=True)
s.sendall(b'y')
"#,
        addr = net.host(v6)
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &server])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 server");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("listening");
    let client = format!(
        "import socket\ns=socket.create_connection(('{}',{port2}),timeout=5)\ns.sendall(b'x')\ns.recv(1)\nprint(s.getsockopt(socket.IPPROTO_TCP,socket.TCP_INFO,104)[6]>>4)",
        net.host(v6)
    );
    let client = net
        .ns
        .command("python3")
        .args(["-c", &client])
        .output()
        .expect("python3 client");
    assert!(client.status.success(), "the client connects");
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).expect("options");
    let _ = child.wait();
    (
        line.trim().to_string(),
        String::from_utf8_lossy(&client.stdout).trim().to_string(),
    )
}

#[test]
fn cookies_answer_syns_and_the_completed_handshake_reaches_the_listener() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::new("syn", 1);
    let pins = BpffsDir::new("syn").expect("bpffs");
    let loader = loader(&pins);
    let firewall = Firewall::load(&loader).expect("load");
    let _tcx = firewall.attach(net.veth.host()).expect("attach tcx");
    let xdp = firewall.attach_syn(net.veth.host()).expect("attach xdp");
    eprintln!("ic_fw_syn attached in {} mode", xdp.mode().name());

    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let echo = Echo::start(&net.host(v6));
        let port = echo.addr.port();
        accept_port(&firewall, port);
        firewall
            .set_syn_flood(&SynFloodSettings::always([port]).mtu(1500))
            .expect("syn flood");
        let before = |t| firewall.total(t).expect("total").packets;
        let (cookies, accepted) = (before(FwTotal::SynCookies), before(FwTotal::CookieAccepted));

        // A real client, 1 MB both ways: the handshake ends in the listener's socket.
        let got = python_roundtrip(&net, &net.host(v6), port, 1 << 20);
        assert!(
            got.starts_with("ok"),
            "{family}: {got} {:?}",
            firewall.totals().expect("totals")
        );
        assert_eq!(
            before(FwTotal::SynCookies),
            cookies + 1,
            "{family}: the SYN was answered with a cookie"
        );
        assert_eq!(
            before(FwTotal::CookieAccepted),
            accepted + 1,
            "{family}: its ACK was handed to the listener"
        );
        // The connection was tracked from the ACK on, never half-open.
        let conns = firewall.connections().expect("connections");
        let tracked: Vec<_> = conns
            .iter()
            .filter(|c| c.proto == "tcp" && c.reply.1 == port)
            .collect();
        assert_eq!(tracked.len(), 1, "{family}: {conns:#?}");
        assert!(tracked[0].inbound, "{:?}", tracked[0]);
        assert!(
            tracked[0].from_orig.packets > 10 && tracked[0].from_reply.packets > 10,
            "{family}: both directions counted: {:?}",
            tracked[0]
        );

        // The options the client offered survive the cookie: timestamps, SACK, window
        // scaling both ways, and the MSS class (as the listener's socket has them).
        let (info, offered) = server_options(&net, &firewall, v6, port);
        // The client's MSS (1460, 1440 for IPv6 over a 1500-byte MTU) is a class of the
        // kernel's table; less the 12 bytes of the timestamp option.
        let mss = if v6 { 1428 } else { 1448 };
        assert_eq!(
            info,
            format!("ts sack wscale snd_wscale={offered} rcv_wscale=7 snd_mss={mss}"),
            "{family}: the accepted socket's options"
        );

        // A forged ACK (no cookie) is invalid: dropped, counted, no socket.
        if !v6 {
            let invalid = before(FwTotal::CookieInvalid);
            forged_ack(&net, &net.host(false), port);
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(before(FwTotal::CookieInvalid), invalid + 3, "{family}");
        }

        // A port the rules do not admit gets no cookie: its SYN goes on to the tcx
        // program, which drops it.
        let cookies = before(FwTotal::SynCookies);
        firewall
            .set_syn_flood(&SynFloodSettings::always([port, port + 1]).mtu(1500))
            .expect("syn flood");
        let refused = net
            .ns
            .tcp_connects("", &net.host(v6), port + 1, 1.0)
            .expect("python3");
        assert!(!refused, "{family}: port + 1 is not admitted");
        assert_eq!(before(FwTotal::SynCookies), cookies, "{family}");
        drop(echo);
    }

    // Off: SYNs reach the tcx programs again, and a connection opens the usual way.
    firewall
        .set_syn_flood(&SynFloodSettings::default())
        .expect("off");
    assert!(firewall.syn_flood().expect("read").ports.is_empty());
    let echo = Echo::start(&net.host(false));
    accept_port(&firewall, echo.addr.port());
    let cookies = firewall.total(FwTotal::SynCookies).expect("total").packets;
    let got = python_roundtrip(&net, &net.host(false), echo.addr.port(), 1000);
    assert!(got.starts_with("ok"), "{got}");
    assert_eq!(
        firewall.total(FwTotal::SynCookies).expect("total").packets,
        cookies
    );
}

/// `net.ipv4.tcp_syncookies` of this namespace (it covers IPv6 too), restored on drop.
struct SyncookiesSysctl(String);

impl SyncookiesSysctl {
    const PATH: &'static str = "/proc/sys/net/ipv4/tcp_syncookies";

    fn set(value: &str) -> Self {
        let old = std::fs::read_to_string(Self::PATH).expect("read sysctl");
        std::fs::write(Self::PATH, value).expect("write sysctl");
        Self(old.trim().to_string())
    }
}

impl Drop for SyncookiesSysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// What a client saw while a flood ran.
#[derive(Debug)]
struct ClientRun {
    attempts: u32,
    ok: u32,
    connect_ms: Vec<f64>,
}

impl ClientRun {
    fn success(&self) -> f64 {
        f64::from(self.ok) / f64::from(self.attempts.max(1))
    }

    fn median_ms(&self) -> f64 {
        let mut v = self.connect_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn p99_ms(&self) -> f64 {
        let mut v = self.connect_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() * 99 / 100).copied().unwrap_or(f64::NAN)
    }
}

/// From inside the namespace, opens a connection to `addr` every 10 ms for `for_`
/// (3 s timeout each, so a SYN or SYN-ACK lost in the flood is retransmitted once, as a
/// real client's would be), sends a byte and reads its echo.
fn client(net: &Net, addr: SocketAddr, for_: Duration) -> ClientRun {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                flood::enter(net.ns.name()).expect("setns");
                let mut run = ClientRun {
                    attempts: 0,
                    ok: 0,
                    connect_ms: Vec::new(),
                };
                let start = Instant::now();
                while start.elapsed() < for_ {
                    run.attempts += 1;
                    let t = Instant::now();
                    if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                        let ms = t.elapsed().as_secs_f64() * 1e3;
                        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                        let mut b = [0u8; 1];
                        if s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() {
                            run.ok += 1;
                            run.connect_ms.push(ms);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                run
            })
            .join()
            .expect("client thread")
    })
}

/// A flood from random addresses of `from` (a base and the host bits replaced at
/// random: 0 for a single source) to `to`.
struct FloodSpec {
    from: (IpAddr, u32),
    to: SocketAddr,
}

/// Floods as `spec` says for `secs` while a client connects to `client_to`; returns
/// the client's run, the flood's rate and how many half-open entries from the spoofed
/// sources the table holds at the end.
fn flood_while_connecting(
    net: &Net,
    firewall: Option<&Firewall>,
    spec: &FloodSpec,
    client_to: SocketAddr,
    secs: u64,
) -> (ClientRun, f64, usize) {
    let flood = Flood::start(
        &net.ns,
        spec.from.0,
        spec.from.1,
        spec.to.ip(),
        spec.to.port(),
        21,
    )
    .expect("flood");
    std::thread::sleep(Duration::from_millis(300));
    let run = client(net, client_to, Duration::from_secs(secs));
    let report = flood.stop().expect("flood report");
    let v6 = spec.to.is_ipv6();
    let spoofed: IpNetwork = if v6 {
        Net::spoofed_prefix(net.net).1.parse().expect("net")
    } else {
        Net::spoofed_prefix(net.net).0.parse().expect("net")
    };
    let half_open = firewall.map_or(0, |f| {
        f.connections()
            .expect("connections")
            .iter()
            .filter(|c| {
                spoofed.contains(c.orig.0)
                    && matches!(c.state, CtState::SynSent | CtState::SynRecv | CtState::New)
            })
            .count()
    });
    (run, report.rate(), half_open)
}

/// Floods the echo listener from the whole spoofed prefix for `secs` while the client
/// connects to it (see [`flood_while_connecting`]).
fn under_flood(
    net: &Net,
    firewall: Option<&Firewall>,
    echo: &Echo,
    v6: bool,
    secs: u64,
) -> (ClientRun, f64, usize) {
    let spec = FloodSpec {
        from: net.spoofed_base(v6),
        to: echo.addr,
    };
    flood_while_connecting(net, firewall, &spec, echo.addr, secs)
}

#[test]
fn a_spoofed_syn_flood_leaves_a_real_client_connecting_with_cookies_in_xdp() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::new("synfl", 2);
    let secs = 3;
    let mut lines = Vec::new();
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let echo = Echo::start(&net.host(v6));
        let port = echo.addr.port();

        // 1. The kernel alone, without SYN cookies: the SYN queue fills.
        {
            let _sysctl = SyncookiesSysctl::set("0");
            let (run, rate, _) = under_flood(&net, None, &echo, v6, secs);
            lines.push(format!(
                "{family} no defence (tcp_syncookies=0): flood {rate:.0} SYN/s, client {}/{} ({:.1}%), connect median {:.2} ms",
                run.ok, run.attempts, run.success() * 100.0, run.median_ms()
            ));
        }
        // 2. The kernel alone with its own SYN cookies (the default).
        {
            let _sysctl = SyncookiesSysctl::set("1");
            let (run, rate, _) = under_flood(&net, None, &echo, v6, secs);
            lines.push(format!(
                "{family} kernel tcp_syncookies=1 only: flood {rate:.0} SYN/s, client {}/{} ({:.1}%), connect median {:.2} ms, p99 {:.2} ms",
                run.ok, run.attempts, run.success() * 100.0, run.median_ms(), run.p99_ms()
            ));
        }
        let pins = BpffsDir::new(&format!("synfl{}", u8::from(v6))).expect("bpffs");
        let firewall = Firewall::load(&loader(&pins)).expect("load");
        accept_port(&firewall, port);
        let tcx = firewall.attach(net.veth.host()).expect("attach tcx");
        // 3. The stateful firewall without the defence: every spoofed SYN takes an
        //    entry in the connection table.
        {
            let (run, rate, half_open) = under_flood(&net, Some(&firewall), &echo, v6, secs);
            lines.push(format!(
                "{family} firewall without syn_flood: flood {rate:.0} SYN/s, client {}/{} ({:.1}%), {half_open} half-open entries, table_full {}",
                run.ok,
                run.attempts,
                run.success() * 100.0,
                firewall.total(FwTotal::TableFull).expect("total").packets
            ));
            assert!(
                half_open > 1000,
                "{family}: the flood fills the table: {half_open}"
            );
        }
        // Start again from an empty table.
        drop(tcx);
        drop(firewall);
        drop(pins);
        let pins = BpffsDir::new(&format!("synfx{}", u8::from(v6))).expect("bpffs");
        let firewall = Firewall::load(&loader(&pins)).expect("load");
        accept_port(&firewall, port);
        let _tcx = firewall.attach(net.veth.host()).expect("attach tcx");
        let _xdp = firewall.attach_syn(net.veth.host()).expect("attach xdp");
        firewall
            .set_syn_flood(&SynFloodSettings::always([port]).mtu(1500))
            .expect("syn flood");
        // 4. With cookies answered in XDP.
        let (run, rate, half_open) = under_flood(&net, Some(&firewall), &echo, v6, secs);
        let cookies = firewall.total(FwTotal::SynCookies).expect("total").packets;
        lines.push(format!(
            "{family} firewall with syn_flood (XDP cookies): flood {rate:.0} SYN/s, {cookies} answered, client {}/{} ({:.1}%), connect median {:.2} ms, p99 {:.2} ms, {half_open} half-open entries",
            run.ok, run.attempts, run.success() * 100.0, run.median_ms(), run.p99_ms()
        ));
        assert!(
            run.success() >= 0.99,
            "{family}: the client keeps connecting: {run:?}"
        );
        assert_eq!(half_open, 0, "{family}: no state from the flood");
        assert!(
            cookies as f64 >= rate * secs as f64 * 0.5,
            "{family}: the flood was answered in XDP: {cookies} cookies at {rate:.0}/s"
        );
    }
    for l in &lines {
        eprintln!("{l}");
    }
}

/// Ones' complement sum of big-endian 16-bit words.
fn ones_sum(bytes: &[u8], mut acc: u32) -> u32 {
    for pair in bytes.chunks(2) {
        acc += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// An Ethernet frame carrying a SYN (with a random source port) from `src` to
/// `dst:dport`, as a Linux client sends it.
fn syn_frame(src: &str, dst: &str, dport: u16, rng: &mut ironclad_testing::rules::Rng) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().expect("ip"), dst.parse().expect("ip"));
    let mut seg = [0u8; 80];
    let len = flood::syn_segment(&mut seg, src, dst, dport, rng);
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    frame.extend_from_slice(if dst.is_ipv6() {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    frame.extend_from_slice(&seg[..len]);
    frame
}

#[test]
fn the_syn_ack_carries_the_cookie_the_clients_options_and_valid_checksums() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pins = BpffsDir::new("synrun").expect("bpffs");
    let firewall = Firewall::load(&loader(&pins)).expect("load");
    accept_port(&firewall, 443);
    firewall
        .set_syn_flood(&SynFloodSettings::always([443]).mtu(9000))
        .expect("syn flood");
    let mut rng = ironclad_testing::rules::Rng::new(5);
    for v6 in [false, true] {
        let frame = if v6 {
            syn_frame("fd00::10", "fd00::1", 443, &mut rng)
        } else {
            syn_frame("10.1.1.10", "10.1.1.1", 443, &mut rng)
        };
        let (run, out) = firewall
            .object()
            .test_run_frame("ic_fw_syn", &frame)
            .expect("test run");
        assert_eq!(run.return_value, 3, "XDP_TX");
        let iplen = if v6 { 40 } else { 20 };
        let (ip, tcp) = (&out[14..14 + iplen], &out[14 + iplen..]);
        let in_tcp = &frame[14 + iplen..];
        assert_eq!(&out[0..6], &frame[6..12], "back to the sender's MAC");
        assert_eq!(&out[6..12], &frame[0..6]);
        assert_eq!(tcp.len(), 40, "MSS, SACK, timestamps, window scale");
        let pseudo = if v6 {
            assert_eq!(&ip[8..24], &frame[14 + 24..14 + 40], "addresses swapped");
            assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 40);
            ones_sum(&ip[8..40], 6 + 40)
        } else {
            assert_eq!(ones_sum(ip, 0), 0xffff, "IPv4 header checksum");
            assert_eq!(&ip[12..16], &frame[14 + 16..14 + 20], "addresses swapped");
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 60);
            ones_sum(&ip[12..20], 6 + 40)
        };
        assert_eq!(ones_sum(tcp, pseudo), 0xffff, "TCP checksum");
        assert_eq!(&tcp[0..2], &in_tcp[2..4], "ports swapped");
        assert_eq!(&tcp[2..4], &in_tcp[0..2]);
        let seq = u32::from_be_bytes([in_tcp[4], in_tcp[5], in_tcp[6], in_tcp[7]]);
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        assert_eq!(ack, seq.wrapping_add(1));
        assert_eq!(tcp[13], 0x12, "SYN|ACK");
        let mss = if v6 { 8940u16 } else { 8960 };
        assert_eq!(&tcp[20..24], &[2, 4, (mss >> 8) as u8, mss as u8], "MSS");
        assert_eq!(&tcp[24..28], &[4, 2, 8, 10], "SACK permitted, timestamps");
        let tsval = u32::from_be_bytes([tcp[28], tcp[29], tcp[30], tcp[31]]);
        assert_eq!(
            tsval & 31,
            7 | 16,
            "the client's window scale and SACK in our timestamp"
        );
        assert_eq!(
            &tcp[32..36],
            &in_tcp[28..32],
            "the client's timestamp echoed"
        );
        assert_eq!(&tcp[36..40], &[1, 3, 3, 7], "window scale 7");
    }
    assert_eq!(
        firewall.total(FwTotal::SynCookies).expect("total").packets,
        2
    );
}

#[test]
fn under_attack_answers_only_above_the_threshold_and_for_the_hold_time() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pins = BpffsDir::new("synatk").expect("bpffs");
    let firewall = Firewall::load(&loader(&pins)).expect("load");
    accept_port(&firewall, 22);
    firewall
        .set_syn_flood(&SynFloodSettings::under_attack([22], 20).hold_ms(1500))
        .expect("syn flood");
    let read = firewall.syn_flood().expect("read");
    assert_eq!(read.mode, ironclad_bpf::SynMode::UnderAttack);
    assert_eq!((read.threshold_pps, read.hold_ms), (20, 1500));
    assert_eq!(read.ports.iter().copied().collect::<Vec<_>>(), vec![22]);

    let mut rng = ironclad_testing::rules::Rng::new(9);
    let mut syn = || {
        let frame = syn_frame("10.9.9.9", "10.9.9.1", 22, &mut rng);
        firewall
            .object()
            .test_run_frame("ic_fw_syn", &frame)
            .expect("test run")
            .0
            .return_value
    };
    const PASS: u32 = 2;
    const TX: u32 = 3;
    // Wait for the start of a fresh one-second window, so the burst below falls in one.
    std::thread::sleep(Duration::from_millis(1100));
    let verdicts: Vec<u32> = (0..25).map(|_| syn()).collect();
    assert!(
        verdicts[..20].iter().all(|v| *v == PASS),
        "below the threshold SYNs go on to the listener: {verdicts:?}"
    );
    assert!(
        verdicts[20..].iter().all(|v| *v == TX),
        "above it they get cookies: {verdicts:?}"
    );
    assert_eq!(firewall.syn_state().expect("state").attacks, 1);
    // The next second is quiet (one SYN, far below the threshold) but within the hold
    // time: still cookies...
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(syn(), TX, "within the hold time");
    // ...and once the hold time is over, SYNs pass again.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(syn(), PASS, "after the hold time");
    assert_eq!(firewall.syn_state().expect("state").attacks, 1);

    // Refused settings write nothing.
    let err = firewall
        .set_syn_flood(&SynFloodSettings::under_attack([23], 0))
        .expect_err("a zero threshold");
    assert!(err.to_string().contains("threshold"), "{err}");
    assert_eq!(firewall.syn_flood().expect("read"), read);
    // With the kernel's SYN cookies off the listener would reset every cookie
    // handshake: the defence is refused, naming the sysctl.
    {
        let _off = SyncookiesSysctl::set("0");
        let err = firewall
            .set_syn_flood(&SynFloodSettings::always([23]))
            .expect_err("tcp_syncookies=0");
        assert!(
            err.to_string().contains("net.ipv4.tcp_syncookies to 1"),
            "{err}"
        );
        assert_eq!(firewall.syn_flood().expect("read"), read);
    }
}

/// The firewall's limit events read so far.
fn limit_events(
    reader: &ironclad_bpf::EventReader,
    sub: &ironclad_events::Subscription<ironclad_events::Event>,
) -> Vec<ironclad_events::LimitRecord> {
    reader.poll(Duration::from_millis(50)).expect("poll");
    sub.receiver()
        .try_iter()
        .filter_map(|e| match e {
            ironclad_events::Event::FirewallLimit(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn each_limit_admits_its_burst_refuses_the_rest_and_reports_once_a_second() {
    use ironclad_bpf::{LimitRate, LimitSettings};
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pins = BpffsDir::new("rlim").expect("bpffs");
    let firewall = Firewall::load(&loader(&pins)).expect("load");
    let mut web = FwRule::new(
        Origin::field("firewall.rules[0]".to_string()),
        Direction::In,
        FwProto::Tcp,
    );
    web.dport = vec![(80, 81)];
    let mut dns = FwRule::new(
        Origin::field("firewall.rules[1]".to_string()),
        Direction::In,
        FwProto::Udp,
    );
    dns.dport = vec![(53, 53)];
    let rules = [web, dns];
    firewall
        .apply(&FirewallSettings::default().drop_inbound(true), &rules)
        .expect("rules");
    let fanout = std::sync::Arc::new(ironclad_events::Fanout::new());
    let sub = fanout.subscribe("test", 4096, ironclad_events::Overflow::DropNewest);
    let reader = firewall.events(fanout.clone()).expect("events");
    const PASS: i32 = -1;
    const DROP: i32 = 2;
    let mut rng = ironclad_testing::rules::Rng::new(3);
    let first = syn_frame("10.9.9.9", "10.0.0.1", 80, &mut rng);
    let run = |frame: &[u8]| {
        firewall
            .object()
            .test_run("ic_fw_in", frame, 1)
            .expect("test run")
            .return_value as i32
    };
    let mut syn = |src: &str, dport: u16| {
        let dst = if src.contains(':') {
            "fd00::1"
        } else {
            "10.0.0.1"
        };
        run(&syn_frame(src, dst, dport, &mut rng))
    };
    let total = |t| firewall.total(t).expect("total").packets;
    let set = |limits: LimitSettings| {
        firewall.set_limits(&limits).expect("limits");
        assert_eq!(firewall.limits().expect("read"), limits);
    };

    // Per source: a burst of 3, then refused; another source has its own bucket.
    set(LimitSettings::default().per_source(LimitRate::new(1, 3)));
    let mut verdicts = vec![run(&first)];
    verdicts.extend((0..7).map(|_| syn("10.9.9.9", 80)));
    assert_eq!(verdicts, [[PASS; 3].as_slice(), &[DROP; 5]].concat());
    assert_eq!(syn("10.9.9.10", 80), PASS, "another source");
    assert_eq!(total(FwTotal::LimitSource), 5);
    // Packets of a connection already admitted are never limited.
    let mut ack = first.clone();
    ack[14 + 20 + 13] = 0x10;
    let established = total(FwTotal::Established);
    assert_eq!(run(&ack), PASS, "an admitted connection's next packet");
    assert_eq!(total(FwTotal::Established), established + 1);
    // The first refusal was reported at once; the next four wait for the next report.
    let events = limit_events(&reader, &sub);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(
        (e.limit, e.key.as_deref(), e.dropped, e.per_second, e.burst),
        ("source", Some("10.9.9.9"), 1, 1, 3)
    );
    assert_eq!((e.proto.as_str(), e.dport, e.dry_run), ("tcp", 80, false));
    // A second later one token has come back; the refusal after it reports the five
    // refused since the first report.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(syn("10.9.9.9", 80), PASS, "refilled at 1/s");
    assert_eq!(syn("10.9.9.9", 80), DROP);
    let events = limit_events(&reader, &sub);
    assert_eq!(
        events.iter().map(|e| e.dropped).collect::<Vec<_>>(),
        vec![5],
        "{events:#?}"
    );

    // Per subnet: /24 and /64 buckets.
    set(LimitSettings::default().per_subnet(LimitRate::new(1, 4), 24, 64));
    for (family, a, b, other) in [
        ("IPv4", "10.8.8.", "", "10.8.9.1"),
        ("IPv6", "fd00:1:2:3::", "", "fd00:1:2:4::1"),
    ] {
        let verdicts: Vec<i32> = (1..=6).map(|i| syn(&format!("{a}{i}{b}"), 80)).collect();
        assert_eq!(
            verdicts,
            [[PASS; 4].as_slice(), &[DROP; 2]].concat(),
            "{family}: six sources of one subnet share its burst"
        );
        assert_eq!(syn(other, 80), PASS, "{family}: the next subnet");
    }
    assert_eq!(total(FwTotal::LimitSubnet), 4);
    let keys: Vec<Option<String>> = limit_events(&reader, &sub)
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            Some("10.8.8.0/24".to_string()),
            Some("fd00:1:2:3::/64".to_string())
        ]
    );

    // Per port, UDP included (a flow's first datagram is a new connection).
    set(LimitSettings::default().per_port(LimitRate::new(1, 2)));
    let verdicts: Vec<i32> = (1..=4).map(|i| syn(&format!("10.7.0.{i}"), 80)).collect();
    assert_eq!(verdicts, vec![PASS, PASS, DROP, DROP]);
    assert_eq!(syn("10.7.0.9", 81), PASS, "the next port");
    let udp_frame = |src: [u8; 4]| {
        ironclad_testing::frames::l4(src.into(), [10, 0, 0, 1].into(), 17, 5000, 53, 0)
    };
    let udp: Vec<i32> = (1..=3).map(|i| run(&udp_frame([10, 7, 1, i]))).collect();
    assert_eq!(udp, vec![PASS, PASS, DROP], "UDP flows to port 53");
    assert_eq!(
        run(&udp_frame([10, 7, 1, 1])),
        PASS,
        "an admitted flow's next datagram"
    );
    assert_eq!(total(FwTotal::LimitPort), 3);
    let ports: Vec<(String, u16)> = limit_events(&reader, &sub)
        .into_iter()
        .map(|e| (e.proto, e.dport))
        .collect();
    assert_eq!(
        ports,
        vec![("tcp".to_string(), 80), ("udp".to_string(), 53)]
    );

    // The interface's ceiling, with a per-source limit: narrowest first, and a
    // connection the source limit refuses does not spend the ceiling.
    set(LimitSettings::default()
        .per_source(LimitRate::new(1, 1))
        .per_interface(LimitRate::new(1, 3)));
    let verdicts: Vec<i32> = [
        "10.6.0.1", "10.6.0.1", "10.6.0.1", "10.6.0.2", "10.6.0.3", "10.6.0.4",
    ]
    .iter()
    .map(|src| syn(src, 81))
    .collect();
    assert_eq!(verdicts, vec![PASS, DROP, DROP, PASS, PASS, DROP]);
    assert_eq!(total(FwTotal::LimitSource), 5 + 1 + 2);
    assert_eq!(total(FwTotal::LimitInterface), 1);
    let events = limit_events(&reader, &sub);
    assert_eq!(
        events
            .iter()
            .map(|e| (e.limit, e.key.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("source", Some("10.6.0.1".to_string())),
            ("interface", None)
        ]
    );

    // Dry-run: refusals are counted (and reported as such) but pass.
    firewall
        .apply(
            &FirewallSettings::default().drop_inbound(true).dry_run(true),
            &rules,
        )
        .expect("dry-run");
    set(LimitSettings::default().per_source(LimitRate::new(1, 1)));
    let would = total(FwTotal::WouldDrop);
    assert_eq!(syn("10.5.0.1", 80), PASS);
    assert_eq!(syn("10.5.0.1", 80), PASS, "dry-run");
    assert_eq!(total(FwTotal::LimitSource), 9);
    assert_eq!(total(FwTotal::WouldDrop), would + 1);
    let events = limit_events(&reader, &sub);
    assert!(events.len() == 1 && events[0].dry_run, "{events:#?}");

    // Refused settings write nothing; off is off.
    let live = firewall.limits().expect("read");
    let err = firewall
        .set_limits(&LimitSettings::default().per_subnet(LimitRate::new(5, 5), 33, 64))
        .expect_err("a /33");
    assert!(err.to_string().contains("ipv4_prefix"), "{err}");
    assert_eq!(firewall.limits().expect("read"), live);
    set(LimitSettings::default());
    assert!(!firewall.limits().expect("read").any());
    assert_eq!(syn("10.5.0.1", 80), PASS);
    assert_eq!(total(FwTotal::LimitSource), 9);
}

/// Every limit against a spoofed SYN flood on a veth (no SYN cookies: each SYN the
/// rules admit would open a connection), with a real client connecting from the
/// namespace's own address: the flood's new connections stay within the limit's
/// budget, the limit counts and reports the rest, and the client, outside the flood's
/// bucket, keeps connecting.
#[test]
fn each_limit_holds_a_spoofed_flood_to_its_budget_while_a_real_client_connects() {
    use ironclad_bpf::{LimitRate, LimitSettings};
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::new("rlfl", 3);
    let secs = 2;
    let mut lines = Vec::new();
    let cases: [(&str, bool, LimitSettings, FwTotal); 5] = [
        (
            "per_subnet (one spoofed /24 floods)",
            false,
            LimitSettings::default().per_subnet(LimitRate::new(200, 200), 24, 64),
            FwTotal::LimitSubnet,
        ),
        (
            "per_subnet (one spoofed /64 floods)",
            true,
            LimitSettings::default().per_subnet(LimitRate::new(200, 200), 24, 64),
            FwTotal::LimitSubnet,
        ),
        (
            "per_source (one spoofed source floods)",
            false,
            LimitSettings::default().per_source(LimitRate::new(100, 100)),
            FwTotal::LimitSource,
        ),
        (
            "per_port (the whole /16 floods another port)",
            false,
            LimitSettings::default().per_port(LimitRate::new(300, 300)),
            FwTotal::LimitPort,
        ),
        (
            "per_interface (the whole /16 floods; the client shares the ceiling)",
            false,
            LimitSettings::default().per_interface(LimitRate::new(500, 500)),
            FwTotal::LimitInterface,
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(what, v6, limits, total)| (what, v6, limits, total, false));
    // The ceiling with SYN cookies in XDP: spoofed SYNs never complete a handshake, so
    // only real connections reach the limit, and the client keeps connecting.
    let with_cookies = (
        "per_interface with syn_flood (the whole /16 floods)",
        false,
        LimitSettings::default().per_interface(LimitRate::new(500, 500)),
        FwTotal::LimitInterface,
        true,
    );
    for (i, (what, v6, limits, total, cookies)) in cases.chain([with_cookies]).enumerate() {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let echo = Echo::start(&net.host(v6));
        let target = Echo::start(&net.host(v6));
        let pins = BpffsDir::new(&format!("rlfl{i}")).expect("bpffs");
        let firewall = Firewall::load(&loader(&pins)).expect("load");
        let mut rule = FwRule::new(
            Origin::field("firewall.rules[0]".to_string()),
            Direction::In,
            FwProto::Tcp,
        );
        rule.dport = vec![
            (echo.addr.port(), echo.addr.port()),
            (target.addr.port(), target.addr.port()),
        ];
        firewall
            .apply(&FirewallSettings::default().drop_inbound(true), &[rule])
            .expect("rules");
        firewall.set_limits(&limits).expect("limits");
        let _tcx = firewall.attach(net.veth.host()).expect("attach tcx");
        let _xdp = cookies.then(|| {
            firewall
                .set_syn_flood(&SynFloodSettings::always([echo.addr.port()]).mtu(1500))
                .expect("syn flood");
            firewall.attach_syn(net.veth.host()).expect("attach xdp")
        });
        let fanout = std::sync::Arc::new(ironclad_events::Fanout::new());
        let sub = fanout.subscribe("test", 65536, ironclad_events::Overflow::DropNewest);
        let reader = firewall.events(fanout.clone()).expect("events");

        let (base, bits) = net.spoofed_base(v6);
        let (from, flood_to) = match total {
            // One subnet of the spoofed prefix: its first /24 (/64).
            FwTotal::LimitSubnet => ((base, if v6 { 64 } else { 8 }), echo.addr),
            FwTotal::LimitSource => ((base, 0), echo.addr),
            // Another port than the client's.
            FwTotal::LimitPort => ((base, bits), target.addr),
            _ => ((base, bits), echo.addr),
        };
        let started = Instant::now();
        let (run, rate, admitted) = flood_while_connecting(
            &net,
            Some(&firewall),
            &FloodSpec { from, to: flood_to },
            echo.addr,
            secs,
        );
        let elapsed = started.elapsed().as_secs_f64();
        let refused = firewall.total(total).expect("total").packets;
        if cookies {
            let answered = firewall.total(FwTotal::SynCookies).expect("total").packets;
            lines.push(format!(
                "{family} {what}: flood {rate:.0} SYN/s, {answered} answered with cookies, {admitted} half-open, {refused} refused by the ceiling; client {}/{} ({:.1}%), connect median {:.2} ms, p99 {:.2} ms",
                run.ok,
                run.attempts,
                run.success() * 100.0,
                run.median_ms(),
                run.p99_ms()
            ));
            assert!(
                run.success() >= 0.99 && admitted == 0 && refused == 0,
                "{family} {what}: {run:?}, {admitted} half-open, {refused} refused"
            );
            assert!(
                answered as f64 >= rate * secs as f64 * 0.5,
                "{answered} cookies"
            );
            continue;
        }
        let rate_limit = ironclad_bpf::FwLimitKind::ALL
            .iter()
            .find_map(|k| limits.get(*k))
            .expect("one limit");
        // The budget over the flood's run, and some slack for CPUs refilling the same
        // bucket at once (lock-free).
        let budget = f64::from(rate_limit.burst) + f64::from(rate_limit.per_second) * elapsed;
        let events = limit_events(&reader, &sub);
        lines.push(format!(
            "{family} {what}: flood {rate:.0} SYN/s, {admitted} flood connections admitted (budget {budget:.0}), {refused} refused, {} limit events; client {}/{} ({:.1}%), connect median {:.2} ms",
            events.len(),
            run.ok,
            run.attempts,
            run.success() * 100.0,
            run.median_ms()
        ));
        assert!(
            (admitted as f64) <= budget * 1.2 + 20.0,
            "{family} {what}: {admitted} admitted over a budget of {budget:.0}"
        );
        assert!(
            admitted as f64 >= f64::from(rate_limit.burst) * 0.9,
            "{family} {what}: the limit admits its burst: {admitted}"
        );
        assert!(
            refused as f64 >= 10.0 * admitted as f64,
            "{family} {what}: the flood is refused: {refused} refused, {admitted} admitted"
        );
        // The events: the bucket's first refusal, then one a second, with the counts
        // adding up to what the counter says (less what the last second holds).
        assert!(
            !events.is_empty() && events.len() <= (secs as usize + 2) * 2,
            "{family} {what}: {} events",
            events.len()
        );
        let reported: u64 = events.iter().map(|e| e.dropped).sum();
        assert!(
            reported <= refused && reported as f64 >= refused as f64 * 0.3,
            "{family} {what}: events report {reported} of {refused}"
        );
        let want_limit = match total {
            FwTotal::LimitSubnet => "subnet",
            FwTotal::LimitSource => "source",
            FwTotal::LimitPort => "port",
            _ => "interface",
        };
        assert!(
            events.iter().all(|e| e.limit == want_limit),
            "{family} {what}: {events:#?}"
        );
        if total == FwTotal::LimitSubnet {
            let subnet = if v6 {
                format!("fd00:217:{}::/64", net.net)
            } else {
                format!("10.{}.0.0/24", 200 + u16::from(net.net))
            };
            assert_eq!(events[0].key.as_deref(), Some(subnet.as_str()));
        }
        if total != FwTotal::LimitInterface {
            assert!(
                run.success() >= 0.99,
                "{family} {what}: the client keeps connecting: {run:?}"
            );
        }
    }
    for l in &lines {
        eprintln!("{l}");
    }
}
