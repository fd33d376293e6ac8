//! The IDS against the kernel: the firewall selects connections on a veth pair, real
//! HTTP traffic (curl on the host, a python server in a namespace) carries a test
//! string, and the alerts come back with the rule's sid; a `drop` rule stops the rest
//! of the connection.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ironclad_bpf::{
    EventReader, Firewall, FirewallSettings, IdsMatcher, IdsSettings, Loader, TcMechanism,
};
use ironclad_core::abi::FwTotal;
use ironclad_events::{Event, Fanout, IdsAlert, Overflow, Subscription};
use ironclad_policy::ids::{parse_files, RuleSet, Vars};
use ironclad_testing::{require_privileges, BpffsDir, NetNs, VethPair};

/// A python HTTP server in the namespace that answers every GET after `delay_ms`
/// with `hello from the namespace` and the path it was asked for.
const SERVER: &str = r#"
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if len(sys.argv) > 4:
            open(sys.argv[4], "a").write(self.path + "\n")
        time.sleep(int(sys.argv[3]) / 1000)
        body = ("hello from the namespace " + self.path + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

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
            &[&format!("10.219.{net}.1/24")],
            &[&format!("10.219.{net}.2/24")],
        )
        .expect("veth");
        Self { ns, veth, net }
    }

    fn peer(&self) -> String {
        format!("10.219.{}.2", self.net)
    }

    fn server(&self, port: u16, delay_ms: u32) -> Server {
        self.server_logging(port, delay_ms, None)
    }

    /// A server that also appends each path it is asked for to `log`.
    fn server_logging(&self, port: u16, delay_ms: u32, log: Option<&std::path::Path>) -> Server {
        let mut args = vec![
            "-c".to_string(),
            SERVER.to_string(),
            self.peer(),
            port.to_string(),
            delay_ms.to_string(),
        ];
        if let Some(log) = log {
            args.push(log.display().to_string());
        }
        let child = self
            .ns
            .command("python3")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        ironclad_testing::wait_for_server("the python server", || {
            let out = self
                .ns
                .exec(&["ss", "-Htln", &format!("sport = :{port}")])
                .expect("ss");
            !out.stdout.is_empty()
        })
        .expect("server");
        Server(child)
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rules(dir: &std::path::Path, text: &str) -> RuleSet {
    let path = dir.join("local.rules");
    std::fs::write(&path, text).expect("rules");
    RuleSet::new(parse_files(&[path], &Vars::with_defaults()).expect("parse")).expect("set")
}

/// Runs curl for `url` while reading alerts; returns curl's success, its output and
/// the alerts seen until it ended and a little after.
fn curl_reading(
    reader: &EventReader,
    sub: &Subscription<Event>,
    url: &str,
    max_secs: u32,
) -> (bool, String, Vec<IdsAlert>) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-g", "--max-time", &max_secs.to_string(), url]);
    run_reading(reader, sub, curl)
}

/// Runs `command` while reading alerts; returns its success, its output and the
/// alerts seen until it ended and a little after.
fn run_reading(
    reader: &EventReader,
    sub: &Subscription<Event>,
    mut command: Command,
) -> (bool, String, Vec<IdsAlert>) {
    let mut child = command.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut alerts = Vec::new();
    // Polls for `wait` and keeps the alerts published meanwhile.
    let mut read = |wait: u64| {
        reader.poll(Duration::from_millis(wait)).expect("poll");
        alerts.extend(sub.receiver().try_iter().filter_map(|e| match e {
            Event::IdsAlert(a) => Some(a),
            _ => None,
        }));
    };
    let status = loop {
        read(20);
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
    };
    read(200);
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read as _;
        stdout.read_to_string(&mut out).expect("stdout");
    }
    (status.success(), out, alerts)
}

/// A client that sends `GET /padded` with `pad` bytes of header before the header
/// carrying `marker`, all in one write (one packet, or one GSO packet when larger than
/// a segment), then prints what comes back within 3 s. `udp`: instead, one datagram of
/// `pad` bytes, then `marker`, then 100 bytes.
const PADDED_CLIENT: &str = r#"
import socket, sys
host, port, pad, marker, udp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode(), sys.argv[5] == "udp"
if udp:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"p" * pad + marker + b"p" * 100, (host, port))
    sys.exit(0)
s = socket.create_connection((host, port), timeout=3)
s.sendall(b"GET /padded HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * pad + b"\r\nX-Note: " + marker + b"\r\nConnection: close\r\n\r\n")
out = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
except OSError:
    pass
sys.stdout.write(out.decode(errors="replace"))
sys.exit(0 if out else 1)
"#;

/// The bytes of the padded request before its padding.
const PADDED_HEAD: usize = "GET /padded HTTP/1.1\r\nHost: x\r\nX-Pad: ".len();

fn padded(net: &Net, port: u16, pad: usize, marker: &str, udp: bool) -> Command {
    let mut command = Command::new("python3");
    command.args([
        "-c",
        PADDED_CLIENT,
        &net.peer(),
        &port.to_string(),
        &pad.to_string(),
        marker,
        if udp { "udp" } else { "tcp" },
    ]);
    command
}

/// What a test's setup gives: the veth pair, the pins, the firewall with the rules'
/// selection, the matcher, the rules' directory and the fan-out alerts go to.
type Setup = (
    Net,
    BpffsDir,
    Firewall,
    IdsMatcher,
    tempfile::TempDir,
    Arc<Fanout<Event>>,
);

fn setup(tag: &str, net: u8, text: &str) -> Setup {
    setup_with(tag, net, text, &IdsSettings::default())
}

fn setup_with(tag: &str, net: u8, text: &str, settings: &IdsSettings) -> Setup {
    let net = Net::new(tag, net);
    let pins = BpffsDir::new(tag).expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let firewall = Firewall::load(&loader).expect("load");
    firewall
        .apply(&FirewallSettings::default(), &[])
        .expect("apply");
    let dir = tempfile::tempdir().expect("tempdir");
    let set = rules(dir.path(), text);
    firewall
        .set_ids_with_prefixes(settings, &set.selection(), &set.kernel_prefixes())
        .expect("set_ids");
    let matcher = IdsMatcher::new(set, settings.dry_run);
    (net, pins, firewall, matcher, dir, Arc::new(Fanout::new()))
}

/// A reader of the firewall's IDS snippets, matched by `matcher`, and a subscription
/// to what it publishes.
fn alerts_of(
    firewall: &Firewall,
    matcher: &IdsMatcher,
    fanout: &Arc<Fanout<Event>>,
) -> (EventReader, Subscription<Event>) {
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let reader = EventReader::new(
        vec![firewall.ids_source(matcher.clone()).expect("source")],
        fanout.clone(),
    )
    .expect("reader");
    (reader, sub)
}

#[test]
fn an_http_request_carrying_the_test_string_raises_its_rules_alert() {
    require_privileges!();
    let (net, _pins, firewall, matcher, _dir, fanout) = setup(
        "idsalert",
        1,
        concat!(
            "# the test string, in the request line, split over no packet boundary\n",
            "alert tcp any any -> any 8080 (msg:\"ironclad test string\"; flow:to_server,established; ",
            "content:\"GET\"; depth:3; content:\"ironclad-ids-test\"; nocase; distance:0; ",
            "classtype:misc-activity; sid:1000001; rev:3;)\n",
            "alert tcp any 8080 -> any any (msg:\"the answer\"; flow:to_client; ",
            "content:\"hello from the namespace /IRONCLAD\"; sid:1000002; rev:1;)\n",
            "alert tcp any any -> any 9999 (msg:\"another port\"; content:\"GET\"; sid:1000003;)\n",
        ),
    );
    let _server = net.server(8080, 0);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);

    // A clean request: inspected, no alert.
    let (ok, body, alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8080/index", net.peer()),
        5,
    );
    assert!(ok && body.contains("/index"), "clean request: {body}");
    assert!(
        alerts.is_empty(),
        "no alert for a clean request: {alerts:#?}"
    );
    assert!(
        matcher.stats().snippets() >= 2,
        "request and answer were handed over"
    );

    let (ok, body, mut alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8080/IRONCLAD-IDS-TEST", net.peer()),
        5,
    );
    assert!(
        ok && body.contains("IRONCLAD-IDS-TEST"),
        "an alert blocks nothing: {body}"
    );
    alerts.sort_by_key(|a| a.sid);
    let sids: Vec<u32> = alerts.iter().map(|a| a.sid).collect();
    assert_eq!(sids, vec![1000001, 1000002], "{alerts:#?}");
    let request = &alerts[0];
    assert_eq!(request.msg, "ironclad test string");
    assert_eq!(
        (request.rev, request.action, request.blocked),
        (3, "alert", false)
    );
    assert_eq!(request.classtype.as_deref(), Some("misc-activity"));
    assert_eq!(request.direction, "to_server");
    assert_eq!(request.dst.to_string(), net.peer());
    assert_eq!(request.dport, 8080);
    assert_eq!(request.src.to_string(), format!("10.219.{}.1", net.net));
    assert!(!request.inbound, "curl on the host opened it");
    assert!(
        request.pid != 0,
        "the local process that opened it: {request:?}"
    );
    assert!(
        request.origin.ends_with("local.rules:2"),
        "{}",
        request.origin
    );
    assert!(!request.time.is_empty());
    let answer = &alerts[1];
    assert_eq!((answer.direction, answer.sport), ("to_client", 8080));
    assert_eq!(answer.src.to_string(), net.peer());

    // Once a connection alerted on a rule, the same rule stays quiet for it; a new
    // connection alerts again.
    let (_, _, again) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8080/ironclad-ids-test", net.peer()),
        5,
    );
    assert_eq!(again.iter().filter(|a| a.sid == 1000001).count(), 1);
    assert_eq!(
        firewall.total(FwTotal::IdsBlocked).expect("total").packets,
        0
    );
    assert!(firewall.total(FwTotal::IdsSnippets).expect("total").packets >= 6);
}

#[test]
fn content_behind_padding_is_seen_in_every_byte_of_large_and_gso_packets_up_to_the_depth() {
    require_privileges!();
    let settings = IdsSettings {
        depth: 16384,
        ..IdsSettings::default()
    };
    let (net, _pins, firewall, matcher, _dir, fanout) = setup_with(
        "idspad",
        7,
        concat!(
            "alert tcp any any -> any 8087 (msg:\"padded\"; content:\"ironclad-padded-marker\"; sid:7000001;)\n",
            "drop tcp any any -> any 8088 (msg:\"padded drop\"; content:\"ironclad-padded-drop\"; nocase; sid:7000002;)\n",
            "alert udp any any -> any 5357 (msg:\"padded datagram\"; content:\"ironclad-padded-udp\"; sid:7000003;)\n",
        ),
        &settings,
    );
    let _alerting = net.server(8087, 0);
    let _dropping = net.server(8088, 300);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);
    let marker = "ironclad-padded-marker";
    let sids = |alerts: &[IdsAlert]| alerts.iter().map(|a| a.sid).collect::<Vec<u32>>();

    // 1,100 bytes of padding: one packet of ~1,200 bytes, the marker past the first
    // snippet's 1,024. Then the marker across the boundary of the second and third
    // snippets (offset 2,043), and 9,000 bytes into a write that leaves as one GSO
    // packet (the first flight of a new connection is ten segments).
    for (pad, what) in [
        (1100, "behind 1,100 bytes"),
        (2048 - 5 - PADDED_HEAD, "across a snippet boundary"),
        (9000, "9,000 bytes into one write"),
    ] {
        let before = firewall.total(FwTotal::IdsSnippets).expect("total").packets;
        let (ok, body, alerts) = run_reading(&reader, &sub, padded(&net, 8087, pad, marker, false));
        assert!(ok && body.contains("200"), "{what}: answered: {body}");
        assert_eq!(sids(&alerts), vec![7000001], "{what}: {alerts:#?}");
        let handed = firewall.total(FwTotal::IdsSnippets).expect("total");
        assert!(
            handed.packets - before > 1,
            "{what}: the request came in more than one snippet"
        );
    }
    // The request's bytes past the depth are not seen (what docs/ids.md says).
    let (ok, _, alerts) = run_reading(&reader, &sub, padded(&net, 8087, 17000, marker, false));
    assert!(ok);
    assert!(alerts.is_empty(), "past the depth: {alerts:#?}");

    // A `drop` rule (matched in user space) behind the padding stops the answer.
    let (ok, body, alerts) = run_reading(
        &reader,
        &sub,
        padded(&net, 8088, 1100, "IRONCLAD-PADDED-DROP", false),
    );
    assert!(
        !ok && !body.contains("200"),
        "the answer never arrives: {body}"
    );
    assert_eq!(sids(&alerts), vec![7000002], "{alerts:#?}");
    assert!(alerts[0].blocked, "{alerts:#?}");

    // A datagram of 1,129 bytes with the marker at 1,010 (across the first snippet's
    // end; small enough not to be fragmented): matched whole.
    let (_, _, alerts) = run_reading(
        &reader,
        &sub,
        padded(&net, 5357, 1010, "ironclad-padded-udp", true),
    );
    assert_eq!(sids(&alerts), vec![7000003], "datagram: {alerts:#?}");
    assert_eq!(matcher.stats().gaps(), 0);
}

#[test]
fn a_drop_rule_stops_the_rest_of_the_connection_and_only_that_one() {
    require_privileges!();
    let (net, _pins, firewall, matcher, _dir, fanout) = setup(
        "idsdrop",
        2,
        // `nocase`: matched in user space, after the request went through (the kernel
        // matches exact prefixes only; the next test).
        "drop tcp any any -> any 8081 (msg:\"evil path\"; content:\"GET /evil\"; depth:9; nocase; sid:2000001; rev:1;)\n",
    );
    // The server answers after 300 ms: the block is in place by then.
    let _server = net.server(8081, 300);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);

    let (ok, body, alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8081/evil", net.peer()),
        3,
    );
    assert!(!ok, "the answer never arrives: {body}");
    assert!(!body.contains("hello"), "{body}");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        (alerts[0].sid, alerts[0].action, alerts[0].blocked),
        (2000001, "drop", true)
    );
    assert!(firewall.total(FwTotal::IdsBlocked).expect("total").packets >= 1);
    assert_eq!(matcher.stats().blocked(), 1);

    // Another connection to the same server, without the string, is untouched.
    let (ok, body, alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8081/fine", net.peer()),
        5,
    );
    assert!(ok && body.contains("/fine"), "{body}");
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn in_dry_run_a_drop_rule_reports_and_blocks_nothing() {
    require_privileges!();
    let (net, _pins, firewall, _, dir, fanout) = setup(
        "idsdry",
        3,
        "drop tcp any any -> any 8082 (msg:\"evil path\"; content:\"/evil\"; sid:3000001;)\n",
    );
    let set = rules(
        dir.path(),
        "drop tcp any any -> any 8082 (msg:\"evil path\"; content:\"/evil\"; sid:3000001;)\n",
    );
    let settings = IdsSettings {
        dry_run: true,
        ..IdsSettings::default()
    };
    firewall
        .set_ids(&settings, &set.selection())
        .expect("set_ids");
    let matcher = IdsMatcher::new(set, true);
    let _server = net.server(8082, 300);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);
    let (ok, body, alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8082/evil", net.peer()),
        5,
    );
    assert!(ok && body.contains("/evil"), "{body}");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!((alerts[0].action, alerts[0].blocked), ("drop", false));
}

#[test]
fn connections_on_ports_no_rule_names_are_not_handed_over() {
    require_privileges!();
    let (net, _pins, firewall, matcher, dir, fanout) = setup(
        "idsports",
        4,
        "alert tcp any any -> any 8083 (msg:\"x\"; content:\"GET\"; sid:4000001;)\n",
    );
    let _server = net.server(8084, 0);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);
    let (ok, _, alerts) = curl_reading(&reader, &sub, &format!("http://{}:8084/", net.peer()), 5);
    assert!(ok);
    assert!(alerts.is_empty());
    assert_eq!(matcher.stats().snippets(), 0);
    assert_eq!(
        firewall.total(FwTotal::IdsSnippets).expect("total").packets,
        0
    );
    let inspected = firewall
        .connections()
        .expect("connections")
        .iter()
        .filter(|c| c.inspected)
        .count();
    assert_eq!(inspected, 0);

    // Sampling: one connection in 1 of those no rule names is every one of them.
    let set = rules(
        dir.path(),
        "alert tcp any any -> any 8083 (msg:\"x\"; content:\"GET\"; sid:4000001;)\n",
    );
    let sampled = IdsSettings {
        sample_every: 1,
        ..IdsSettings::default()
    };
    firewall
        .set_ids(&sampled, &set.selection())
        .expect("set_ids");
    let (ok, _, _) = curl_reading(&reader, &sub, &format!("http://{}:8084/", net.peer()), 5);
    assert!(ok);
    assert!(
        matcher.stats().snippets() >= 2,
        "the sampled connection was handed over"
    );
}

#[test]
fn a_short_anchored_drop_rule_is_matched_in_the_kernel_and_the_request_never_arrives() {
    require_privileges!();
    kernel_anchored_drop(TcMechanism::probe(), "idskern", 5);
}

/// The same, with the firewall as classic tc filters (kernels before 6.6).
#[test]
fn on_classic_tc_filters_a_kernel_anchored_drop_stops_the_request_too() {
    require_privileges!();
    kernel_anchored_drop(TcMechanism::Clsact, "idskernc", 15);
}

/// A server behind `net` (tag, subnet), two kernel-anchored drop rules, the firewall
/// attached by `mechanism`: the matching request never reaches the server.
fn kernel_anchored_drop(mechanism: TcMechanism, tag: &str, subnet: u8) {
    let (net, _pins, firewall, matcher, dir, fanout) = setup(
        tag,
        subnet,
        concat!(
            "drop tcp any any -> any 8086 (msg:\"kernel prefix\"; content:\"GET /kernel\"; depth:11; flow:to_server; sid:6000001;)\n",
            "drop tcp any any -> any any (msg:\"any port\"; content:\"QUIT\"; depth:4; flow:to_server; sid:6000002;)\n",
        ),
    );
    assert_eq!(
        matcher.rules().expect("rules").kernel_prefixes().len(),
        2,
        "both rules are the kernel's"
    );
    let log = dir.path().join("requests.log");
    let _server = net.server_logging(8086, 0, Some(&log));
    let attached = firewall
        .attach_with(net.veth.host(), mechanism)
        .expect("attach");
    assert_eq!(attached.mechanism(), mechanism);
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);
    let (ok, _, alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8086/kernel", net.peer()),
        3,
    );
    assert!(!ok, "no answer");
    let served = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !served.contains("/kernel"),
        "the request itself never reached the server: {served}"
    );
    assert!(
        firewall
            .total(FwTotal::IdsKernelMatched)
            .expect("total")
            .packets
            >= 1
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!((alerts[0].sid, alerts[0].blocked), (6000001, true));
    let (ok, body, _) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8086/kernelized", net.peer()),
        5,
    );
    assert!(!ok, "the prefix matches /kernelized too: {body}");
    let (ok, body, alerts) = curl_reading(
        &reader,
        &sub,
        &format!("http://{}:8086/fine", net.peer()),
        5,
    );
    assert!(ok && body.contains("/fine"), "{body}");
    assert!(alerts.is_empty());
    assert!(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("/fine"));
}

#[test]
fn an_inspected_connections_entry_goes_with_it_at_the_sweep() {
    require_privileges!();
    let (net, _pins, firewall, matcher, _dir, fanout) = setup(
        "idssweep",
        6,
        "alert tcp any any -> any 8087 (msg:\"x\"; content:\"nothing here\"; sid:7000001;)\n",
    );
    let _server = net.server(8087, 0);
    let _attached = firewall.attach(net.veth.host()).expect("attach");
    let (reader, sub) = alerts_of(&firewall, &matcher, &fanout);
    let entries = || {
        firewall
            .object()
            .map("ic_ids_flows")
            .expect("map")
            .keys()
            .len()
    };
    for path in ["/a", "/b", "/c"] {
        let (ok, _, _) = curl_reading(
            &reader,
            &sub,
            &format!("http://{}:8087{path}", net.peer()),
            5,
        );
        assert!(ok);
    }
    assert_eq!(entries(), 3, "one entry per inspected connection");
    // Every state's timeout 1 s once the connections are over, not while they run: on
    // a busy machine the server's python3 can be idle for longer than that in the
    // middle of an answer, and a connection idle past its timeout starts over.
    let mut settings = FirewallSettings::default();
    settings.tcp_timeout = [1; ironclad_core::abi::CtState::COUNT];
    firewall.configure(&settings).expect("configure");
    std::thread::sleep(Duration::from_millis(2_200));
    let sweep = firewall.expire().expect("expire");
    assert!(sweep.removed >= 3, "{sweep:?}");
    assert_eq!(entries(), 0, "the entries went with their connections");
}
