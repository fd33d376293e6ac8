//! The stateful firewall through the daemon as shipped: a `firewall:` policy on a veth
//! pair into a namespace, IPv4 and IPv6, real servers and clients; `kill -9`, a
//! restart that adopts the pins, SIGHUP reloads (a good one and a bad one),
//! `conntrack`, `status` and `detach`.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Daemon, Server, BIN};
use ironclad_testing::{ping, require_privileges, BpffsDir, NetNs, VethPair};

/// Host .1/::1, namespace sources .2/::2 (the admin) and .3/::3 (anyone else).
struct Net {
    ns: NetNs,
    veth: VethPair,
    net: u8,
    pins: BpffsDir,
    dir: tempfile::TempDir,
}

impl Net {
    fn new(tag: &str, net: u8) -> Self {
        let ns = NetNs::new(tag).expect("netns");
        let veth = VethPair::new(
            &ns,
            &[
                &format!("10.215.{net}.1/24"),
                &format!("fd00:215:{net}::1/64"),
            ],
            &[
                &format!("10.215.{net}.2/24"),
                &format!("10.215.{net}.3/24"),
                &format!("fd00:215:{net}::2/64"),
                &format!("fd00:215:{net}::3/64"),
            ],
        )
        .expect("veth");
        Self {
            ns,
            veth,
            net,
            pins: BpffsDir::new(tag).expect("bpffs"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn addr(&self, v6: bool, host: u8) -> String {
        if v6 {
            format!("fd00:215:{}::{host}", self.net)
        } else {
            format!("10.215.{}.{host}", self.net)
        }
    }

    /// Whether a TCP connection from `src` in the namespace to `dst:port` opens within
    /// 2 s.
    fn connects(&self, src: &str, dst: &str, port: u16) -> bool {
        self.ns
            .tcp_connects(src, dst, port, 2.0)
            .expect("connecting")
    }

    fn policy(&self, admins_only: bool) -> String {
        let admins = if admins_only {
            format!("[{}, {}]", self.addr(false, 2), self.addr(true, 2))
        } else {
            format!(
                "[{}, {}, {}, {}]",
                self.addr(false, 2),
                self.addr(true, 2),
                self.addr(false, 3),
                self.addr(true, 3)
            )
        };
        format!(
            "firewall:
  interfaces: [{iface}]
  default_inbound: drop
  timeouts: {{tcp_closing: 1}}
  rules:
    - direction: in
      proto: tcp
      dport: 2222
      src: {admins}
      action: accept
      flows: true
      comment: ssh from the admins
    - {{direction: in, proto: icmp, icmp_type: echo-request, src: {admin4}, action: accept}}
    - {{direction: in, proto: tcp, dport: 2224, action: reject, log: true, comment: refused at once}}
",
            iface = self.veth.host(),
            admin4 = self.addr(false, 2),
        )
    }

    fn args(&self, config: &Path) -> Vec<String> {
        vec![
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--pin-dir".into(),
            self.pins.path().display().to_string(),
            "--audit-log".into(),
            self.dir.path().join("audit.jsonl").display().to_string(),
            "--run-dir".into(),
            self.dir.path().join("run").display().to_string(),
            // The test's own: runtime rules added through the API stay with it.
            "--state-dir".into(),
            self.dir.path().join("state").display().to_string(),
            "--events".into(),
            self.dir.path().join("events.jsonl").display().to_string(),
        ]
    }

    fn cli(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(args)
            .arg("--pin-dir")
            .arg(self.pins.path())
            .arg("--json")
            .output()
            .expect("full_firewall");
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    fn firewall_status(&self) -> serde_json::Value {
        self.cli(&["status"])["firewall"].clone()
    }
}

/// A python line echo in the namespace on `addr:port`, waited for.
fn echo_server(net: &Net, addr: &str, port: u16) -> Server {
    let child = net
        .ns
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.create_server(('{addr}',{port}),family=socket.{})\nc,_=s.accept()\nwhile True:\n d=c.recv(100)\n if not d: break\n c.sendall(d)",
                if addr.contains(':') { "AF_INET6" } else { "AF_INET" }
            ),
        ])
        .spawn()
        .expect("echo");
    wait_listening(net, port);
    Server(child)
}

/// Waits (up to 30 s: a python3 server starting on a busy machine took more than 10)
/// until something in the namespace listens on TCP `port`.
fn wait_listening(net: &Net, port: u16) {
    let start = Instant::now();
    while net
        .ns
        .exec(&["ss", "-Htln", &format!("sport = :{port}")])
        .expect("ss")
        .stdout
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn roundtrip(session: &mut TcpStream, what: &str) {
    session.write_all(what.as_bytes()).expect("write");
    let mut buf = vec![0u8; what.len()];
    session.read_exact(&mut buf).expect("the session answers");
    assert_eq!(buf, what.as_bytes());
}

fn curl(url: &str) -> bool {
    Command::new("curl")
        .args(["-s", "-g", "-o", "/dev/null", "--max-time", "3", url])
        .status()
        .expect("curl")
        .success()
}

/// The events of `kind` in the daemon's events file, read until `enough` says so or
/// `secs` pass.
fn events_of(
    path: &Path,
    kind: &str,
    secs: u64,
    enough: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == kind)
            .collect();
        if enough(&found) || start.elapsed() > Duration::from_secs(secs) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `full_firewall check --config FILE`, which must pass; its JSON.
fn check(config: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn total(status: &serde_json::Value, which: &str) -> u64 {
    status["totals"][which]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total {which}: {status}"))
}

/// The daemon's metrics page, read with the test token.
fn metrics_page(daemon: &Daemon) -> String {
    let port = daemon.metrics_port();
    let page = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-H",
            "Authorization: Bearer ironclad-test-token-0123456789",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&page.stdout).into_owned()
}

/// The metrics arguments, with the token file the tests read with.
fn metrics_args(net: &Net) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let token = net.dir.path().join("metrics.token");
    std::fs::write(&token, "ironclad-test-token-0123456789\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    vec![
        "--metrics".to_string(),
        "127.0.0.1:0".to_string(),
        "--metrics-token-file".to_string(),
        token.display().to_string(),
    ]
}

/// A sample's value on a metrics page.
fn sample(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Operator experience: a firewall rule had three names (`firewall.rules[1]` in `rules
/// list`, `firewall rule 3` in `status`, `rule_id="3"` in the metrics) and its comment
/// showed nowhere. Now it has one, where it was written (`firewall.rules[2]`; `api-1`
/// for a rule the control API added), in `rules list`, `status`, the metrics and the
/// events, with its text and comment beside it. And the metrics' verdicts count each
/// packet once (the reasons, answers and cookies are families of their own), so a sum
/// over `verdict` means something.
#[test]
fn a_firewall_rule_has_one_name_in_rules_list_status_metrics_and_events() {
    require_privileges!();
    let net = Net::new("fwnames", 11);
    let config = net.dir.path().join("policy.yaml");
    std::fs::write(&config, net.policy(true)).expect("policy");
    let mut args = net.args(&config);
    args.extend(metrics_args(&net));
    let daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    let host4 = net.addr(false, 1);
    let _listeners: Vec<TcpListener> = [2222, 2224, 2225]
        .iter()
        .map(|p| TcpListener::bind((host4.as_str(), *p)).expect("listen"))
        .collect();
    // A rule added through the control API, logged, with a comment.
    let socket = net.dir.path().join("run").join("api.sock");
    let out = Command::new(BIN)
        .args(["rules", "--socket"])
        .arg(&socket)
        .args([
            "add",
            "firewall.rules",
            "{direction: in, proto: tcp, dport: 2225, action: drop, log: true, comment: added live}",
        ])
        .output()
        .expect("rules add");
    assert!(out.status.success(), "{out:?}");
    let added = String::from_utf8_lossy(&out.stdout);
    assert!(added.starts_with("api-1"), "{added}");
    let admin = net.addr(false, 2);
    assert!(
        net.connects(&admin, &host4, 2222),
        "the admins' rule admits"
    );
    assert!(
        !net.connects(&admin, &host4, 2224),
        "the reject rule refuses"
    );
    assert!(!net.connects(&admin, &host4, 2225), "the API's rule drops");
    assert!(
        !net.connects(&admin, &host4, 2226),
        "no rule: the default drops"
    );

    // Events: the logged matches and the flow name their rules.
    let path = net.dir.path().join("events.jsonl");
    let logged = events_of(&path, "firewall", 10, |found| {
        [2224, 2225, 2226]
            .iter()
            .all(|p| found.iter().any(|e| e["dport"] == *p))
    });
    // The default policy's drops are reported too (sampled: 10 a second unless the
    // policy says otherwise).
    for (port, name) in [
        (2224, "firewall.rules[2]"),
        (2225, "api-1"),
        (2226, "default"),
    ] {
        let e = logged
            .iter()
            .find(|e| e["dport"] == port)
            .unwrap_or_else(|| panic!("no event for {port}: {logged:#?}"));
        assert_eq!(e["rule"], name, "{e}");
    }
    let flows = events_of(&path, "flow", 10, |found| !found.is_empty());
    assert_eq!(flows[0]["rule"], "firewall.rules[0]", "{flows:#?}");

    // status --json: each rule's counters with its name, text and comment.
    let status_of = |json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["status", "--pin-dir"])
            .arg(net.pins.path())
            .arg("--run-dir")
            .arg(net.dir.path().join("run"));
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("status");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status: serde_json::Value = serde_json::from_str::<serde_json::Value>(&status_of(true))
        .expect("JSON")["firewall"]
        .clone();
    let rules = status["rules"].as_array().expect("rules");
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no rule {name}: {status}"))
            .clone()
    };
    let admins = rule("firewall.rules[0]");
    assert_eq!(admins["comment"], "ssh from the admins", "{admins}");
    assert!(
        admins["rule"].as_str().is_some_and(
            |r| r.starts_with("in tcp src 10.215.11.2/32") && r.ends_with("dport 2222 accept")
        ),
        "{admins}"
    );
    assert!(admins["packets"].as_u64() >= Some(1), "{admins}");
    assert_eq!(rule("firewall.rules[2]")["comment"], "refused at once");
    assert_eq!(rule("api-1")["comment"], "added live");
    assert!(rule("api-1")["packets"].as_u64() >= Some(1), "{status}");
    // status as people read it: the same names, the comments, aligned columns.
    let text = status_of(false);
    // The rules' table (the API's rules are also listed above it, with who added them).
    let table = text
        .split("firewall rules (")
        .nth(1)
        .unwrap_or_else(|| panic!("no rules table:\n{text}"));
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    assert!(
        line("firewall.rules[2]").ends_with("refused at once"),
        "{text}"
    );
    assert!(line("api-1").contains("dport 2225 drop log"), "{text}");
    let columns: Vec<usize> = ["firewall.rules[0]", "firewall.rules[2]", "api-1"]
        .iter()
        .map(|n| line(n).find(" in tcp").expect("matches column"))
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "aligned:\n{text}");
    // rules list: the same names, the comments.
    let out = Command::new(BIN)
        .args(["rules", "--socket"])
        .arg(&socket)
        .args(["list", "--json"])
        .output()
        .expect("rules list");
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let entry = listed
        .iter()
        .find(|r| r["id"] == "firewall.rules[0]")
        .unwrap_or_else(|| panic!("{listed:#?}"));
    assert!(
        entry["rule"]
            .as_str()
            .is_some_and(|r| r.ends_with("accept  # ssh from the admins")),
        "{entry}"
    );
    assert!(listed.iter().any(|r| r["id"] == "api-1"), "{listed:#?}");

    // conntrack: a held connection names the rule that admitted it.
    let _held = Server(
        net.ns
            .command("python3")
            .args([
                "-c",
                &format!(
                    "import socket,time\ns=socket.create_connection(('{host4}',2222))\ntime.sleep(60)"
                ),
            ])
            .spawn()
            .expect("python3"),
    );
    let start = Instant::now();
    let held = loop {
        let out = Command::new(BIN)
            .args(["conntrack", "--json", "--pin-dir"])
            .arg(net.pins.path())
            .arg("--run-dir")
            .arg(net.dir.path().join("run"))
            .output()
            .expect("conntrack");
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let found = list
            .as_array()
            .expect("array")
            .iter()
            .find(|c| c["reply"]["port"] == 2222 && c["state"] == "established")
            .cloned();
        if let Some(c) = found {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(held["rule"], "firewall.rules[0]", "{held}");

    // The metrics: the same names, and an info series with the text and comment.
    let page = metrics_page(&daemon);
    assert!(
        sample(
            &page,
            "ironclad_firewall_rule_packets_total{rule=\"firewall.rules[2]\"}"
        )
        .is_some_and(|n| n >= 1)
            && sample(
                &page,
                "ironclad_firewall_rule_packets_total{rule=\"api-1\"}"
            )
            .is_some_and(|n| n >= 1),
        "{page}"
    );
    assert!(
        page.lines().any(|l| l.starts_with("ironclad_firewall_rule_info{rule=\"firewall.rules[0]\",matches=\"in tcp src 10.215.11.2/32")
            && l.ends_with("comment=\"ssh from the admins\"} 1")),
        "{page}"
    );
    assert!(!page.contains("rule_id="), "{page}");
    // Verdicts: the eight that classify a packet, nothing else under the label.
    let verdicts: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("ironclad_firewall_packets_total{verdict=\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(
        verdicts,
        [
            "established",
            "related",
            "new_accepted",
            "dropped",
            "invalid",
            "table_full",
            "untracked",
            "non_ip"
        ],
        "{page}"
    );
    assert!(
        sample(&page, "ironclad_firewall_rejects_sent_total").is_some_and(|n| n >= 1),
        "{page}"
    );
    assert!(
        sample(
            &page,
            "ironclad_firewall_packets_total{verdict=\"dropped\"}"
        )
        .is_some_and(|n| n >= 2),
        "the reject and the API's drop: {page}"
    );
}

#[test]
fn a_stateful_default_deny_through_the_daemon_survives_kill_9_restarts_and_reloads() {
    require_privileges!();
    let net = Net::new("fwd", 1);
    let config = net.dir.path().join("policy.yaml");
    std::fs::write(&config, net.policy(true)).expect("policy");
    let checked = check(&config);
    assert_eq!(checked["firewall"]["rules"], 3, "{checked}");
    assert_eq!(checked["firewall"]["default_inbound"], "drop");

    let args = net.args(&config);
    let first = Daemon::spawn(&args);
    first.wait_for("ready");
    assert!(first.log().contains("firewall on"), "{}", first.log());

    // Listeners on the host: the admitted port and another.
    let mut listeners = Vec::new();
    for v6 in [false, true] {
        for port in [2222, 2223, 2224] {
            listeners.push(TcpListener::bind((net.addr(v6, 1).as_str(), port)).expect("listen"));
        }
    }
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let (host, admin, other) = (net.addr(v6, 1), net.addr(v6, 2), net.addr(v6, 3));
        assert!(
            net.connects(&admin, &host, 2222),
            "{family}: the admin reaches 2222"
        );
        assert!(
            !net.connects(&other, &host, 2222),
            "{family}: anyone else does not"
        );
        assert!(
            !net.connects(&admin, &host, 2223),
            "{family}: 2223 is reachable from nobody"
        );
    }
    // A reject rule: the client is refused at once (a RST), not left to time out.
    for v6 in [false, true] {
        let script = format!(
            "import socket,time\nt=time.monotonic()\ntry:\n socket.create_connection(('{}',2224),timeout=5)\n print('open')\nexcept ConnectionRefusedError:\n print('refused' if time.monotonic()-t < 1 else 'late')\nexcept OSError as e:\n print(e)",
            net.addr(v6, 1)
        );
        let out = net.ns.exec(&["python3", "-c", &script]).expect("python3");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "refused",
            "v6={v6}: a reject rule refuses at once"
        );
    }
    // The reject rule logs: one event per refused connection, in the events file.
    let events = net.dir.path().join("events.jsonl");
    // (The default policy's drops are reported too, sampled: not these.)
    let logged: Vec<serde_json::Value> = events_of(&events, "firewall", 10, |found| {
        found.iter().filter(|e| e["rule"] != "default").count() >= 2
    })
    .into_iter()
    .filter(|e| e["rule"] != "default")
    .collect();
    assert_eq!(logged.len(), 2, "{logged:#?}");
    for (e, v6) in logged.iter().zip([false, true]) {
        assert_eq!(e["dport"], 2224, "{e}");
        assert_eq!(e["verdict"], "reject", "{e}");
        assert_eq!(e["direction"], "in", "{e}");
        assert!(
            e["src"] == net.addr(v6, 2).as_str() || e["src"] == net.addr(v6, 3).as_str(),
            "{e}"
        );
    }
    // The admitted rule records flows: a start for each admitted connection (IPv4 and
    // IPv6) and, once the sweep removes it (every 5 s, after the 1 s closing timeout),
    // its end with packets each way.
    let flows = events_of(&events, "flow", 15, |found| {
        found.iter().filter(|e| e["phase"] == "end").count() >= 2
    });
    // The sweep ends flows in the order of the table's buckets, not the order they
    // started: each family's flow is found by its address.
    for phase in ["start", "end"] {
        let of: Vec<_> = flows.iter().filter(|e| e["phase"] == phase).collect();
        assert_eq!(of.len(), 2, "{phase}: {flows:#?}");
        for v6 in [false, true] {
            let src = net.addr(v6, 2);
            let mine: Vec<_> = of.iter().filter(|e| e["src"] == src.as_str()).collect();
            assert_eq!(mine.len(), 1, "{phase} of {src}: {flows:#?}");
            let e = mine[0];
            assert_eq!(e["dport"], 2222, "{e}");
            assert_eq!(e["direction"], "in", "{e}");
            assert_eq!(e["rule_id"], 1, "the admins' rule: {e}");
            assert!(!e["time"].as_str().unwrap_or_default().is_empty(), "{e}");
        }
    }
    for e in flows.iter().filter(|e| e["phase"] == "end") {
        assert!(e["orig_packets"].as_u64() >= Some(2), "{e}");
        assert!(e["reply_packets"].as_u64() >= Some(1), "{e}");
        assert!(
            e["end_reason"].is_string() && e["duration_ms"].is_u64(),
            "{e}"
        );
    }
    // Outbound: curl to a server in the namespace; its replies pass as established.
    let site = tempfile::tempdir().expect("site");
    std::fs::write(site.path().join("index.html"), "hello\n").expect("index");
    let _http = Server(
        net.ns
            .command("python3")
            .args(["-m", "http.server", "--bind", "::", "8080"])
            .current_dir(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server"),
    );
    let start = Instant::now();
    while !curl(&format!("http://{}:8080/", net.addr(false, 2))) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "curl out to the namespace"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        curl(&format!("http://[{}]:8080/", net.addr(true, 2))),
        "curl out over IPv6"
    );
    // ping: out works; in only where a rule allows it.
    let out = Command::new("ping")
        .args([
            "-n",
            "-q",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            &net.addr(false, 2),
        ])
        .output()
        .expect("ping");
    assert!(out.status.success(), "ping out: {out:?}");
    let host4 = net.addr(false, 1);
    assert_eq!(
        ping(&net.ns, &net.addr(false, 2), &host4, 2, "0.2").expect("ping"),
        2
    );
    assert_eq!(
        ping(&net.ns, &net.addr(false, 3), &host4, 2, "0.2").expect("ping"),
        0
    );

    let status = net.firewall_status();
    assert_eq!(status["default_inbound"], "drop", "{status}");
    assert!(total(&status, "dropped") >= 6, "{status}");
    assert!(total(&status, "established") > 5, "{status}");
    let rules = status["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 3, "{status}");
    assert!(
        rules.iter().all(|r| r["packets"].as_u64() >= Some(1)),
        "{status}"
    );
    assert!(total(&status, "rejected") >= 2, "{status}");

    // An established session from the host to an echo server in the namespace.
    let _echo = echo_server(&net, &net.addr(false, 2), 7000);
    let mut session = TcpStream::connect((net.addr(false, 2).as_str(), 7000)).expect("session");
    session
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    roundtrip(&mut session, "before");
    let conntrack = net.cli(&["conntrack"]);
    let listed = conntrack.as_array().expect("array").iter().any(|c| {
        c["proto"] == "tcp"
            && c["reply"]["port"] == 7000
            && c["state"] == "established"
            && c["direction"] == "out"
    });
    assert!(listed, "conntrack lists the session: {conntrack}");

    // kill -9: the session keeps working, new denied connections stay denied.
    first.signal("KILL");
    drop(first);
    roundtrip(&mut session, "with the daemon dead");
    assert!(!net.connects(&net.addr(false, 3), &host4, 2222));
    assert!(net.connects(&net.addr(false, 2), &host4, 2222));
    let before_restart = net.firewall_status();

    // A restart adopts the pins: counters go on, the session survives.
    let mut second = Daemon::spawn(&args);
    second.wait_for("ready");
    let after_restart = net.firewall_status();
    for which in ["dropped", "established"] {
        assert!(
            total(&after_restart, which) >= total(&before_restart, which),
            "{which}: {before_restart} then {after_restart}"
        );
    }
    assert_eq!(
        after_restart["rules"], before_restart["rules"],
        "rule counters kept across the restart"
    );
    roundtrip(&mut session, "after the restart");

    // SIGHUP with .3 admitted; then a bad policy, refused, the good one stays.
    std::fs::write(&config, net.policy(false)).expect("policy");
    let reloads = second.log().matches("firewall reloaded").count();
    second.signal("HUP");
    second.wait_for_more("firewall reloaded", reloads);
    assert!(net.connects(&net.addr(false, 3), &host4, 2222), "reloaded");
    assert!(net.connects(&net.addr(true, 3), &net.addr(true, 1), 2222));
    std::fs::write(
        &config,
        net.policy(false).replace("dport: 2222", "dport: 70000"),
    )
    .expect("policy");
    let refused = second.log().matches("dport: port 70000").count();
    second.signal("HUP");
    second.wait_for_more("dport: port 70000", refused);
    assert!(
        net.connects(&net.addr(false, 3), &host4, 2222),
        "the refused reload left the good policy"
    );
    assert!(!net.connects(&net.addr(false, 3), &host4, 2223));
    roundtrip(&mut session, "after the reloads");

    second.signal("TERM");
    assert!(second.wait().success(), "{}", second.log());
    assert!(
        !net.connects(&net.addr(false, 3), &host4, 2223),
        "enforcement stays pinned after a clean stop"
    );
    let out = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(net.pins.path())
        .output()
        .expect("detach");
    assert!(out.status.success(), "{out:?}");
    assert!(
        net.connects(&net.addr(false, 3), &host4, 2223),
        "detached: open again"
    );
    drop(listeners);
}

/// The namespace's end of the veth gets an XDP program that passes everything: frames
/// the host's end sends back with XDP_TX (the SYN-ACKs of the SYN-flood defence) wait
/// in a veth's ring until its peer's NAPI runs, which the driver schedules for them
/// only when the peer has an XDP program of its own.
fn xdp_pass_on_peer(net: &Net) {
    let obj = net.dir.path().join("pass.bpf.o");
    std::fs::write(&obj, ironclad_bpf::object::baseline().elf()).expect("object");
    net.ns
        .exec(&[
            "ip",
            "link",
            "set",
            "dev",
            net.veth.peer(),
            "xdp",
            "obj",
            &obj.display().to_string(),
            "sec",
            "xdp",
        ])
        .expect("XDP_PASS on the namespace's end");
}

#[test]
fn syn_cookies_through_the_daemon_answer_in_xdp_and_reload_off() {
    require_privileges!();
    let net = Net::new("fwsyn", 2);
    xdp_pass_on_peer(&net);
    let config = net.dir.path().join("policy.yaml");
    let policy = |syn: &str| {
        format!(
            "firewall:\n  interfaces: [{}]\n  default_inbound: drop\n  rules:\n    - {{direction: in, proto: tcp, dport: [2222, 2223], action: accept}}\n{syn}",
            net.veth.host()
        )
    };
    std::fs::write(
        &config,
        policy("  syn_flood: {ports: [2222, 2223], mode: always}\n"),
    )
    .expect("policy");
    let checked = check(&config);
    assert_eq!(
        checked["firewall"]["syn_flood"],
        serde_json::json!({"ports": ["2222", "2223"], "mode": "always", "threshold_pps": 0, "hold_seconds": 10}),
        "{checked}"
    );

    let daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    assert!(
        daemon
            .log()
            .contains("SYN cookies (always) on ports 2222, 2223"),
        "{}",
        daemon.log()
    );
    let host4 = net.addr(false, 1);
    let host6 = net.addr(true, 1);
    let listeners: Vec<TcpListener> = [host4.as_str(), host6.as_str()]
        .iter()
        .map(|a| TcpListener::bind((*a, 2222)).expect("listener"))
        .collect();
    assert!(net.connects(&net.addr(false, 2), &host4, 2222), "IPv4");
    assert!(net.connects(&net.addr(true, 2), &host6, 2222), "IPv6");
    let status = net.firewall_status();
    assert_eq!(status["syn_flood"]["mode"], "always", "{status}");
    assert_eq!(status["syn_flood"]["ports"], "2222-2223");
    assert!(total(&status, "syn_cookies") >= 2, "{status}");
    assert!(total(&status, "cookie_accepted") >= 2, "{status}");
    // No listener on 2223: the cookie handshake completes in the firewall, and the
    // kernel answers the ACK with a RST, as for any closed port.
    assert!(!net.connects(&net.addr(false, 2), &host4, 2223));

    // Reloaded without the section: SYNs reach the listener the usual way.
    std::fs::write(&config, policy("")).expect("policy");
    let reloads = daemon.log().matches("firewall reloaded").count();
    daemon.signal("HUP");
    daemon.wait_for_more("firewall reloaded", reloads);
    let cookies = total(&net.firewall_status(), "syn_cookies");
    assert!(net.connects(&net.addr(false, 2), &host4, 2222));
    let status = net.firewall_status();
    assert_eq!(status["syn_flood"]["mode"], "off", "{status}");
    assert_eq!(total(&status, "syn_cookies"), cookies, "{status}");
    drop(listeners);
    drop(daemon);

    // The Shield on the same interface holds its XDP hook: the firewall does not start,
    // says why, and the daemon is not ready.
    let both = net.dir.path().join("both.yaml");
    std::fs::write(
        &both,
        format!(
            "shield:\n  deny: [192.0.2.0/24]\n{}",
            policy("  syn_flood: {ports: [2222]}\n")
        ),
    )
    .expect("policy");
    let mut args = net.args(&both);
    args.extend(["--iface".to_string(), net.veth.host().to_string()]);
    let daemon = Daemon::spawn(&args);
    daemon.wait_for("the Shield holds the XDP hook");
    assert!(
        daemon.log().contains("firewall.syn_flood"),
        "the message names the field: {}",
        daemon.log()
    );
    daemon.wait_for("not ready: the policy is NOT fully enforced");
    assert!(
        !daemon.log().lines().any(|l| l.ends_with(": ready")),
        "{}",
        daemon.log()
    );
}

#[test]
fn rate_limits_through_the_daemon_refuse_count_report_and_reload() {
    require_privileges!();
    let net = Net::new("fwlim", 3);
    let config = net.dir.path().join("policy.yaml");
    let policy = |limits: &str| {
        format!(
            "firewall:\n  interfaces: [{}]\n  default_inbound: drop\n  rules:\n    - {{direction: in, proto: tcp, dport: 2222, action: accept}}\n{limits}",
            net.veth.host()
        )
    };
    std::fs::write(
        &config,
        policy("  limits:\n    per_source: {per_second: 1, burst: 3}\n    per_interface: {per_second: 1000}\n"),
    )
    .expect("policy");
    let checked = check(&config);
    assert_eq!(
        checked["firewall"]["limits"],
        serde_json::json!({
            "per_source": {"per_second": 1, "burst": 3},
            "per_interface": {"per_second": 1000, "burst": 1000},
        }),
        "{checked}"
    );

    let mut args = net.args(&config);
    args.extend(metrics_args(&net));
    let daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    assert!(
        daemon
            .log()
            .contains("new connections limited to 1/s per source, 1000/s per interface"),
        "{}",
        daemon.log()
    );
    let host4 = net.addr(false, 1);
    let listener = TcpListener::bind((host4.as_str(), 2222)).expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    // Three connections from .2 (its burst), then refused: the SYN is dropped, so the
    // client times out (0.5 s, before its retransmission a second later). All four
    // from one process, back to back: a process per connection took more than the
    // second in which the budget refills by one.
    let from2 = net
        .ns
        .tcp_connects_in_turn(&net.addr(false, 2), &host4, 2222, 0.5, 4)
        .expect("python3");
    assert_eq!(from2, vec![true, true, true, false]);
    assert!(
        net.connects(&net.addr(false, 3), &host4, 2222),
        "another source has its own budget"
    );
    let status = net.firewall_status();
    assert_eq!(
        status["limits"]["per_source"],
        serde_json::json!({"per_second": 1, "burst": 3}),
        "{status}"
    );
    assert!(total(&status, "limit_source") >= 1, "{status}");
    assert_eq!(total(&status, "limit_interface"), 0, "{status}");
    let events = events_of(
        &net.dir.path().join("events.jsonl"),
        "firewall_limit",
        5,
        |e| !e.is_empty(),
    );
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["limit"], "source");
    assert_eq!(events[0]["key"], net.addr(false, 2));
    assert_eq!(events[0]["dport"], 2222);
    assert!(!events[0]["time"].as_str().unwrap_or_default().is_empty());

    // The metrics: the refusals under their total, the limits as gauges.
    let page = metrics_page(&daemon);
    assert!(
        page.contains("ironclad_firewall_limit_per_second{limit=\"source\"} 1\n")
            && page.contains("ironclad_firewall_limit_per_second{limit=\"interface\"} 1000\n")
            && page.contains("ironclad_firewall_limit_per_second{limit=\"port\"} 0\n"),
        "{page}"
    );
    // The refusals: a reason of drops, and among the dropped verdicts.
    let refused = sample(
        &page,
        "ironclad_firewall_drop_reasons_total{reason=\"limit_source\"}",
    )
    .unwrap_or_else(|| panic!("{page}"));
    assert!(refused >= 1, "{page}");
    assert!(
        sample(
            &page,
            "ironclad_firewall_packets_total{verdict=\"dropped\"}"
        )
        .is_some_and(|d| d >= refused),
        "{page}"
    );
    assert!(!page.contains("verdict=\"limit_source\""), "{page}");

    // A reload with a mistake in the limits is refused, located, and nothing changes.
    std::fs::write(
        &config,
        policy("  limits:\n    per_subnet: {per_second: 5, ipv4_prefix: 40}\n"),
    )
    .expect("policy");
    let refused = daemon.log().matches("ipv4_prefix: 40 is outside").count();
    daemon.signal("HUP");
    daemon.wait_for_more("ipv4_prefix: 40 is outside", refused);
    assert!(
        daemon
            .log()
            .contains("policy.yaml:7:46: firewall.limits.per_subnet.ipv4_prefix"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        net.firewall_status()["limits"]["per_source"]["burst"],
        3,
        "the refused reload left the limits"
    );
    // Reloaded without limits: .2 connects again at once.
    std::fs::write(&config, policy("")).expect("policy");
    let reloads = daemon.log().matches("firewall reloaded").count();
    daemon.signal("HUP");
    daemon.wait_for_more("firewall reloaded", reloads);
    assert_eq!(net.firewall_status()["limits"], serde_json::json!({}));
    assert!(net.connects(&net.addr(false, 2), &host4, 2222));
    drop(listener);
}

/// The daemon as shipped, run inside a router namespace R between namespaces A
/// (outside) and B (inside), with a `nat:` section: port forwards from R's address
/// towards A to a server in B, a masquerade of B's network; `check`, `status`,
/// `conntrack`, a reload, and a masquerade on an interface with no address.
#[test]
fn nat_through_the_daemon_forwards_masquerades_and_shows_translations() {
    use ironclad_testing::probe::{checksum_errors, offload_off, servers, tcp_client, udp_client};
    require_privileges!();
    let (a, b, r) = (
        NetNs::new("dnata").expect("netns"),
        NetNs::new("dnatb").expect("netns"),
        NetNs::new("dnatr").expect("netns"),
    );
    let pins = BpffsDir::new("dnat").expect("bpffs");
    let dir = tempfile::tempdir().expect("tempdir");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // This thread, and every process it starts (the daemon included), is in R.
                ironclad_testing::flood::enter(r.name()).expect("enter R");
                let to_a = VethPair::new(
                    &a,
                    &["10.217.11.1/24", "fd00:218:11::1/64"],
                    &["10.217.11.2/24", "fd00:218:11::2/64"],
                )
                .expect("veth to A");
                let to_b = VethPair::new(
                    &b,
                    &["10.217.12.1/24", "fd00:218:12::1/64"],
                    &["10.217.12.2/24", "fd00:218:12::2/64"],
                )
                .expect("veth to B");
                // A third interface with no address, for the masquerade that cannot be.
                let bare = VethPair::new(&a, &[], &[]).expect("veth");
                for (ns, dev) in [(Some(&a), to_a.peer()), (Some(&b), to_b.peer()), (None, to_a.host()), (None, to_b.host())] {
                    offload_off(ns, dev).expect("ethtool -K");
                }
                b.exec(&["ip", "route", "add", "default", "via", "10.217.12.1"])
                    .expect("route");
                b.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:218:12::1"])
                    .expect("route6");
                ironclad_testing::run(
                    "sysctl",
                    &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
                )
                .expect("forwarding in R");
                let x = to_a.host();
                let policy = format!(
                    "firewall:
  interfaces: [{x}, {y}]
  default_inbound: drop
  rules:
    - {{direction: in, proto: tcp, dport: 80, action: accept}}
    - {{direction: in, proto: udp, dport: 53, action: accept}}
nat:
  dnat:
    - {{iface: {x}, proto: tcp, dport: 8080, to: \"10.217.12.2:80\"}}
    - {{iface: {x}, proto: udp, dport: 5353, to: \"10.217.12.2:53\"}}
    - {{iface: {x}, proto: tcp, dport: 8080, to: \"[fd00:218:12::2]:80\"}}
  snat:
    - {{iface: {x}, src: 10.217.12.0/24, to: masquerade}}
    - {{iface: {x}, src: \"fd00:218:12::/64\", to: masquerade}}
",
                    y = bare.host()
                );
                let config = dir.path().join("policy.yaml");
                std::fs::write(&config, &policy).expect("policy");
                // The daemon and its commands run in R as `nsenter --net` runs them:
                // R's interfaces, the host's /sys and bpffs (`ip netns exec` would mount
                // a private /sys without them).
                let in_r = |args: &[&str]| {
                    let out = Command::new(BIN).args(args).output().expect("full_firewall");
                    assert!(out.status.success(), "{args:?}: {out:?}");
                    out.stdout
                };
                let config_arg = config.display().to_string();
                let pins_arg = pins.path().display().to_string();
                let checked: serde_json::Value =
                    serde_json::from_slice(&in_r(&["check", "--config", &config_arg]))
                        .expect("JSON");
                assert_eq!(
                    checked["firewall"]["nat"]["dnat"][0],
                    serde_json::json!({"iface": x, "proto": "tcp", "dport": 8080, "to": "10.217.12.2:80"}),
                    "{checked}"
                );
                assert_eq!(checked["firewall"]["nat"]["snat"][1]["to"], "masquerade");
                let args: Vec<String> = vec![
                    "run".into(),
                    "--config".into(),
                    config.display().to_string(),
                    "--pin-dir".into(),
                    pins.path().display().to_string(),
                    "--audit-log".into(),
                    dir.path().join("audit.jsonl").display().to_string(),
                    "--run-dir".into(),
                    dir.path().join("run").display().to_string(),
                ];
                let daemon = Daemon::spawn(&args);
                daemon.wait_for("ready");
                assert!(
                    daemon.log().contains("NAT: 3 port forwards, 2 source translations"),
                    "{}",
                    daemon.log()
                );
                let _web = servers(&b, 80).expect("servers in B");
                let _dns = servers(&b, 53).expect("servers in B");
                let _outside = servers(&a, 9000).expect("servers in A");
                let errors = (checksum_errors(&a).expect("snmp"), checksum_errors(&b).expect("snmp"));
                for (family, r_a, a_addr, a_server) in [
                    ("IPv4", "10.217.11.1", "10.217.11.2", "10.217.11.2"),
                    ("IPv6", "fd00:218:11::1", "fd00:218:11::2", "fd00:218:11::2"),
                ] {
                    assert_eq!(
                        tcp_client(&a, r_a, 8080, 1 << 20).expect("python3"),
                        format!("{a_addr} intact"),
                        "{family}: the forward reaches B, which sees A"
                    );
                    assert_eq!(
                        tcp_client(&b, a_server, 9000, 1 << 20).expect("python3"),
                        format!("{r_a} intact"),
                        "{family}: B's connection leaves as R"
                    );
                }
                assert_eq!(
                    udp_client(&a, "10.217.11.1", 5353, 1000).expect("python3"),
                    "10.217.11.2 intact"
                );
                assert_eq!(
                    (checksum_errors(&a).expect("snmp"), checksum_errors(&b).expect("snmp")),
                    errors
                );

                // conntrack shows each translation; status counts each rule. The
                // connections above have closed, and a closed connection's entry goes
                // 10 s after both sides closed: on a busy machine the clients after the
                // first took longer than that. Two IPv4 connections are held open while
                // the table is listed, one forwarded and one masqueraded, each past its
                // server's greeting (the server saw the translated peer).
                let hold = |ns: &NetNs, to: &str| {
                    let to: std::net::SocketAddr = to.parse().expect("address");
                    ns.run_in(|| {
                        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
                        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                        let mut greeting = [0u8; 64];
                        let n = (&stream).read(&mut greeting)?;
                        Ok((stream, String::from_utf8_lossy(&greeting[..n]).trim().to_string()))
                    })
                    .expect("a held connection")
                };
                let (_forwarded, seen) = hold(&a, "10.217.11.1:8080");
                assert_eq!(seen, "10.217.11.2", "the held forward reaches B, which sees A");
                let (_masqueraded, seen) = hold(&b, "10.217.11.2:9000");
                assert_eq!(seen, "10.217.11.1", "the held connection from B leaves as R");
                let text = String::from_utf8_lossy(&in_r(&["conntrack", "--pin-dir", &pins_arg]))
                    .into_owned();
                assert!(
                    text.contains("dnat: the client connected to 10.217.11.1:8080, forwarded to 10.217.12.2:80 (nat.dnat[0])")
                        && text.contains("snat: 10.217.12.2:")
                        && text.contains("leaves as 10.217.11.1:"),
                    "{text}"
                );
                let list: serde_json::Value =
                    serde_json::from_slice(&in_r(&["conntrack", "--json", "--pin-dir", &pins_arg]))
                        .expect("JSON");
                assert!(
                    list.as_array().expect("array").iter().any(|c| c["nat"]["kind"] == "dnat"
                        && c["nat"]["outside"]["port"] == 8080
                        && c["reply"]["port"] == 80),
                    "{list}"
                );
                let status: serde_json::Value =
                    serde_json::from_slice(&in_r(&["status", "--json", "--pin-dir", &pins_arg]))
                        .expect("JSON");
                let nat = &status["firewall"]["nat"];
                for (kind, i) in [("dnat", 0), ("dnat", 1), ("dnat", 2), ("snat", 0), ("snat", 1)] {
                    assert!(
                        nat[kind][i]["packets"].as_u64().unwrap_or(0) > 0,
                        "{kind}[{i}] counted: {nat}"
                    );
                }

                // A reload with a masquerade on an interface with no address is refused,
                // located; the running translations go on.
                let bad_rule = format!(
                    "    - {{iface: {y}, src: 10.217.12.0/24, to: masquerade}}",
                    y = bare.host()
                );
                std::fs::write(&config, format!("{policy}{bad_rule}\n")).expect("policy");
                let (line, column) = (
                    policy.lines().count() + 1,
                    bad_rule.find("masquerade").expect("masquerade") + 1,
                );
                let refused = daemon.log().matches("has no IPv4 address").count();
                daemon.signal("HUP");
                daemon.wait_for_more("has no IPv4 address", refused);
                assert!(
                    daemon.log().contains(&format!(
                        "nat.snat[2].to: masquerade (line {line}, column {column}): `{}` has no IPv4 address to translate 10.217.12.0/24 to",
                        bare.host()
                    )),
                    "{}",
                    daemon.log()
                );
                assert_eq!(
                    tcp_client(&a, "10.217.11.1", 8080, 1000).expect("python3"),
                    "10.217.11.2 intact",
                    "the refused reload left the forwards"
                );
                drop(daemon);
                drop(bare);
                drop(to_a);
                drop(to_b);
            })
            .join()
            .expect("the test thread");
    });
}

#[test]
fn ids_rules_through_the_daemon_alert_drop_and_check_locates_a_bad_rule() {
    require_privileges!();
    let net = Net::new("fwids", 5);
    let rules = net.dir.path().join("local.rules");
    std::fs::write(
        &rules,
        concat!(
            "alert tcp any any -> any 8090 (msg:\"ironclad test string\"; content:\"ironclad-ids-test\"; nocase; sid:1000001; rev:2;)\n",
            "drop tcp any any -> any 8090 (msg:\"evil path\"; content:\"GET /evil\"; depth:9; sid:1000002;)\n",
        ),
    )
    .expect("rules");
    let config = net.dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        format!(
            "firewall:\n  interfaces: [{}]\n  ids:\n    rules: [local.rules]\n    depth: 2048\n",
            net.veth.host()
        ),
    )
    .expect("policy");
    let checked = check(&config);
    assert_eq!(checked["firewall"]["ids"]["rules"], 2, "{checked}");
    assert_eq!(checked["firewall"]["ids"]["depth"], 2048, "{checked}");

    // A server in the namespace that answers after 300 ms, so that the block of a
    // `drop` rule is in place before the answer comes.
    let script = format!(
        "import http.server, time\nclass H(http.server.BaseHTTPRequestHandler):\n def do_GET(self):\n  time.sleep(0.3)\n  b=b'hello'\n  self.send_response(200)\n  self.send_header('Content-Length','5')\n  self.end_headers()\n  self.wfile.write(b)\n def log_message(self,*a): pass\nhttp.server.ThreadingHTTPServer(('{}',8090),H).serve_forever()",
        net.addr(false, 2)
    );
    let _server = Server(
        net.ns
            .command("python3")
            .args(["-c", &script])
            .spawn()
            .expect("server"),
    );
    wait_listening(&net, 8090);
    let daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    assert!(
        daemon
            .log()
            .contains("IDS: 2 rules from 1 files, 2048 bytes each way"),
        "{}",
        daemon.log()
    );
    let base = format!("http://{}:8090", net.addr(false, 2));
    assert!(
        curl(&format!("{base}/Ironclad-IDS-Test")),
        "an alert blocks nothing"
    );
    assert!(
        !curl(&format!("{base}/evil")),
        "a drop rule stops the answer"
    );
    assert!(curl(&format!("{base}/fine")), "other connections pass");
    let events = net.dir.path().join("events.jsonl");
    let alerts = events_of(&events, "ids_alert", 10, |found| found.len() >= 2);
    let sids: Vec<(u64, bool)> = alerts
        .iter()
        .map(|a| (a["sid"].as_u64().unwrap_or(0), a["blocked"] == true))
        .collect();
    assert_eq!(sids, vec![(1000001, false), (1000002, true)], "{alerts:#?}");
    assert_eq!(alerts[0]["msg"], "ironclad test string");
    assert_eq!(alerts[0]["dport"], 8090);
    assert_eq!(alerts[0]["process"]["comm"], "curl", "{:#?}", alerts[0]);
    assert!(total(&net.firewall_status(), "ids_blocked") >= 1);

    // A reload re-reads the rule file: a new rule alerts on the next connection.
    std::fs::write(
        &rules,
        "alert tcp any any -> any 8090 (msg:\"reloaded\"; content:\"/fine\"; sid:1000003;)\n",
    )
    .expect("rules");
    let reloads = daemon.log().matches("firewall reloaded").count();
    daemon.signal("HUP");
    daemon.wait_for_more("firewall reloaded", reloads);
    assert!(
        daemon.log().contains("IDS: 1 rules from 1 files"),
        "{}",
        daemon.log()
    );
    assert!(curl(&format!("{base}/fine")));
    let alerts = events_of(&events, "ids_alert", 10, |found| found.len() >= 3);
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    assert_eq!(alerts[2]["sid"], 1000003);

    // A rule file with a mistake: `check` names the file, line, column and option.
    std::fs::write(
        &rules,
        "alert tcp any any -> any 8090 (msg:\"x\"; flowbits:set,a; sid:1;)\n",
    )
    .expect("rules");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("local.rules:1:41: option `flowbits` is not supported"),
        "{stderr}"
    );
    drop(daemon);
}

/// What the namespace's side of the wire sees of three datagrams from each of `srcs`
/// on the host (TTL 3): `SOURCE TTL VLAN` lines.
fn on_the_wire(net: &Net, srcs: &[String]) -> Vec<String> {
    use std::io::BufRead as _;
    let mut capture = net
        .ns
        .command("python3")
        .args([
            "-c",
            ironclad_testing::wire::UDP_7777,
            net.veth.peer(),
            ironclad_testing::wire::LISTEN_SECONDS,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("capture");
    let mut out = std::io::BufReader::new(capture.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert_eq!(first.trim(), "listening");
    // Sent by the test itself: a python3 per source took longer to start on a busy
    // machine than the capture's window left.
    let dst = net.addr(false, 2);
    for src in srcs {
        let socket = std::net::UdpSocket::bind((src.as_str(), 0)).expect("bind");
        socket.set_ttl(3).expect("ttl");
        for _ in 0..3 {
            socket.send_to(b"x", (dst.as_str(), 7777)).expect("send");
        }
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    capture.wait().expect("capture");
    rest.lines().map(str::to_string).collect()
}

#[test]
fn scrub_and_quarantine_through_the_daemon_rewrite_tag_reload_and_check_locates_mistakes() {
    require_privileges!();
    let net = Net::new("fwscr", 6);
    // A second host address, the quarantined one.
    let quarantined = "10.215.6.5".to_string();
    let added = Command::new("ip")
        .args(["addr", "add", "10.215.6.5/24", "dev", net.veth.host()])
        .status()
        .expect("ip");
    assert!(added.success());
    let config = net.dir.path().join("policy.yaml");
    let policy = |scrub: bool| {
        let mut p = format!(
            "firewall:\n  interfaces: [{iface}]\n",
            iface = net.veth.host()
        );
        if scrub {
            p.push_str(&format!(
                "  scrub:\n    - {{interface: {}, ttl_floor: 64, mss_max: 1200, clear_df: true}}\n",
                net.veth.host()
            ));
        }
        p.push_str(&format!(
            "  quarantine:\n    interfaces: [{}]\n    sets:\n      - {{sources: [{quarantined}/32], vlan: 666}}\n",
            net.veth.host()
        ));
        p
    };
    std::fs::write(&config, policy(true)).expect("policy");
    let checked = check(&config);
    assert_eq!(
        checked["firewall"]["scrub"][0]["mss_max"], 1200,
        "{checked}"
    );
    assert_eq!(
        checked["firewall"]["quarantine"]["sets"][0]["target"], "vlan 666",
        "{checked}"
    );
    let daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    assert!(
        daemon.log().contains(&format!(
            "scrubbing {iface}, quarantine of 1 sources in 1 sets on {iface}",
            iface = net.veth.host()
        )),
        "{}",
        daemon.log()
    );
    let host = net.addr(false, 1);
    let seen = on_the_wire(&net, &[host.clone(), quarantined.clone()]);
    let count = |v: &[String], line: &str| v.iter().filter(|l| *l == line).count();
    assert_eq!(count(&seen, &format!("{host} 64 0")), 3, "{seen:?}");
    assert_eq!(
        count(&seen, &format!("{quarantined} 64 666")),
        3,
        "{seen:?}"
    );

    // Reloaded without `scrub`: TTLs as sent; the quarantine stays.
    std::fs::write(&config, policy(false)).expect("policy");
    let reloads = daemon.log().matches("firewall reloaded").count();
    daemon.signal("HUP");
    daemon.wait_for_more("firewall reloaded", reloads);
    let seen = on_the_wire(&net, &[host.clone(), quarantined.clone()]);
    assert_eq!(count(&seen, &format!("{host} 3 0")), 3, "{seen:?}");
    assert_eq!(count(&seen, &format!("{quarantined} 3 666")), 3, "{seen:?}");

    // Mistakes, located.
    std::fs::write(
        &config,
        format!(
            "firewall:\n  interfaces: [{iface}]\n  scrub:\n    - {{interface: {iface}, mss_max: 100}}\n  quarantine:\n    interfaces: [{iface}]\n    sets:\n      - {{sources: [10.0.0.0/8], vlan: 5000}}\n",
            iface = net.veth.host()
        ),
    )
    .expect("policy");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("firewall.scrub[0].mss_max: 100 is outside 536..=65535"),
        "{stderr}"
    );
    assert!(
        stderr.contains("firewall.quarantine.sets[0].vlan: 5000 is outside 1..=4094"),
        "{stderr}"
    );
    drop(daemon);
}

#[test]
fn ids_added_by_a_reload_is_read_and_alerts() {
    require_privileges!();
    let net = Net::new("fwids2", 7);
    let rules = net.dir.path().join("local.rules");
    std::fs::write(
        &rules,
        "alert tcp any any -> any 8091 (msg:\"added later\"; content:\"ironclad-ids-late\"; sid:1000101;)\n",
    )
    .expect("rules");
    let config = net.dir.path().join("policy.yaml");
    let base = format!("firewall:\n  interfaces: [{}]\n", net.veth.host());
    std::fs::write(&config, &base).expect("policy");
    let _server = Server(
        net.ns
            .command("python3")
            .args(["-m", "http.server", "--bind", &net.addr(false, 2), "8091"])
            .current_dir(net.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server"),
    );
    wait_listening(&net, 8091);
    let daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    std::fs::write(&config, format!("{base}  ids:\n    rules: [local.rules]\n")).expect("policy");
    let reloads = daemon.log().matches("firewall reloaded").count();
    daemon.signal("HUP");
    daemon.wait_for_more("firewall reloaded", reloads);
    assert!(daemon.log().contains("IDS: 1 rules"), "{}", daemon.log());
    // A new connection after the reload: selected, handed over, matched.
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "3"])
        .arg(format!(
            "http://{}:8091/ironclad-ids-late",
            net.addr(false, 2)
        ))
        .status()
        .expect("curl");
    let alerts = events_of(
        &net.dir.path().join("events.jsonl"),
        "ids_alert",
        10,
        |found| !found.is_empty(),
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["sid"], 1000101);
    drop(daemon);
}

/// Regression (enforcement you can prove): root could detach the firewall's tcx links
/// (`bpftool link detach`) and the daemon went on reporting it enforcing. Now each
/// link detached is put back within a second, pinned where the old one was, with a
/// `repair` audit record, and the default deny holds again.
#[test]
fn the_firewalls_links_detached_behind_the_daemons_back_are_put_back() {
    require_privileges!();
    let net = Net::new("fwrepair", 8);
    let config = net.dir.path().join("policy.yaml");
    std::fs::write(&config, net.policy(true)).expect("policy");
    let mut daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    let (host, admin, other) = (net.addr(false, 1), net.addr(false, 2), net.addr(false, 3));
    let _listeners: Vec<TcpListener> = [2222, 2223]
        .iter()
        .map(|port| TcpListener::bind((host.as_str(), *port)).expect("listen"))
        .collect();
    assert!(net.connects(&admin, &host, 2222), "the admin reaches 2222");
    assert!(!net.connects(&other, &host, 2223), "the default deny holds");

    let iface = net.veth.host().to_string();
    let pins: Vec<std::path::PathBuf> = ["in", "out"]
        .iter()
        .map(|d| {
            net.pins
                .path()
                .join("firewall")
                .join(format!("link_{iface}_{d}"))
        })
        .collect();
    let link_id = |pin: &Path| -> u64 {
        let out = Command::new("bpftool")
            .args(["-j", "link", "show", "pinned"])
            .arg(pin)
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["id"].as_u64().expect("id")
    };
    let before: Vec<u64> = pins.iter().map(|p| link_id(p)).collect();
    for pin in &pins {
        let out = Command::new("bpftool")
            .args(["link", "detach", "pinned"])
            .arg(pin)
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "bpftool link detach: {out:?}");
    }
    let start = Instant::now();
    while daemon.log().matches("was detached from outside").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "both links put back: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after: Vec<u64> = pins.iter().map(|p| link_id(p)).collect();
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new, "a new link is pinned in the old one's place");
    }
    assert!(
        !net.connects(&other, &host, 2223),
        "the default deny holds again"
    );
    assert!(
        net.connects(&admin, &host, 2222),
        "the admin still reaches 2222"
    );
    let audit = std::fs::read_to_string(net.dir.path().join("audit.jsonl")).expect("audit");
    for point in ["ingress", "egress"] {
        let target = format!("tcx {point} on {iface}");
        assert!(
            audit.lines().any(|l| {
                let r: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                r["action"] == "repair" && r["outcome"] == "ok" && r["target"] == target
            }),
            "a repair record for {target}: {audit}"
        );
    }
    // And an event on the daemon's stream (here its events file) for each, as any
    // subscriber (the API's stream, the forwarder) receives it.
    let repairs = events_of(&net.dir.path().join("events.jsonl"), "audit", 10, |found| {
        found.iter().filter(|e| e["action"] == "repair").count() >= 2
    });
    for point in ["ingress", "egress"] {
        let target = format!("tcx {point} on {iface}");
        assert!(
            repairs.iter().any(|e| e["action"] == "repair"
                && e["outcome"] == "ok"
                && e["target"] == target
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("was detached from outside"))),
            "a repair event for {target}: {repairs:#?}"
        );
    }
    assert!(
        repairs.iter().all(|e| e["action"] == "repair"),
        "only repairs of the audit log reach the stream: {repairs:#?}"
    );
    let status = crate::common::health_ready(&net.dir.path().join("run"));
    assert!(status.status.success(), "ready: {status:?}");

    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    crate::common::detach(net.pins.path());
}

/// The firewall's line in the daemon's own status (`status --json --run-dir`).
fn firewall_detail(dir: &Path, pins: &Path) -> String {
    let out = Command::new(BIN)
        .args(["status", "--json", "--pin-dir"])
        .arg(pins)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .expect("status");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["daemon"]["features"]["firewall"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A veth pair made by hand in this namespace, deleted on drop.
struct LocalVeth(String, String);

impl Drop for LocalVeth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// SYN cookies on a veth answer with `XDP_TX`, which the kernel delivers to the peer
/// end only when that end runs an XDP program (or GRO): otherwise every client's
/// connection hangs. The daemon says so at start and in its status, naming the peer it
/// can see, and the warning goes once the peer gets a program; when the peer is in
/// another namespace (a container's) it says that it cannot tell. The hang is real:
/// the namespace's client cannot connect until its end gets a program.
#[test]
fn syn_flood_on_a_veth_whose_peer_drops_the_answers_is_said_at_start_and_in_status() {
    require_privileges!();
    let net = Net::new("fwsynveth", 9);
    let listener = TcpListener::bind((net.addr(false, 1).as_str(), 2222)).expect("listen");
    let config = net.dir.path().join("policy.yaml");
    let local = LocalVeth(
        format!("icsv{}a", std::process::id() % 100_000),
        format!("icsv{}b", std::process::id() % 100_000),
    );
    let made = Command::new("ip")
        .args([
            "link", "add", &local.0, "type", "veth", "peer", "name", &local.1,
        ])
        .status()
        .expect("ip link add");
    assert!(made.success());
    for dev in [&local.0, &local.1] {
        let up = Command::new("ip")
            .args(["link", "set", dev, "up"])
            .status()
            .expect("ip link set up");
        assert!(up.success());
    }
    std::fs::write(
        &config,
        format!(
            "firewall:\n  interfaces: [{}, {}]\n  syn_flood: {{ports: [2222], mode: always}}\n",
            net.veth.host(),
            local.0
        ),
    )
    .expect("policy");
    let daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    let log = daemon.log();
    let elsewhere = format!(
        "syn_flood on {}: a veth whose peer is in another network namespace",
        net.veth.host()
    );
    let here = format!(
        "syn_flood on {}: a veth whose peer {} runs no XDP program",
        local.0, local.1
    );
    assert!(log.contains(&elsewhere), "{log}");
    assert!(log.contains(&here), "{log}");
    let detail = firewall_detail(net.dir.path(), net.pins.path());
    assert!(
        detail.contains(&elsewhere) && detail.contains(&here),
        "{detail}"
    );
    // What the warning says happens: the SYN-ACK never reaches the client.
    assert!(!net.connects(&net.addr(false, 2), &net.addr(false, 1), 2222));

    // The local peer gets an XDP program: its warning goes at the next check.
    let obj = net.dir.path().join("pass.bpf.o");
    std::fs::write(&obj, ironclad_bpf::object::baseline().elf()).expect("object");
    let set = Command::new("ip")
        .args(["link", "set", "dev", &local.1, "xdp", "obj"])
        .arg(&obj)
        .args(["sec", "xdp"])
        .status()
        .expect("ip link set xdp");
    assert!(set.success());
    let start = Instant::now();
    loop {
        let detail = firewall_detail(net.dir.path(), net.pins.path());
        if !detail.contains(&here) {
            assert!(detail.contains(&elsewhere), "{detail}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{detail}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // And the namespace's end: the cookies' answers arrive, the client connects.
    xdp_pass_on_peer(&net);
    assert!(net.connects(&net.addr(false, 2), &net.addr(false, 1), 2222));
    drop(listener);
    drop(daemon);
}

/// Regression (red team, round 3): any RST or FIN with a connection's addresses and
/// ports closed it, whatever its sequence number, and after `tcp_closing` its packets
/// were dropped as invalid while both ends still held it open: a blind attacker who
/// knows the 4-tuple tears down established connections (a reset one is kept 10 s).
/// Now a RST or FIN outside the
/// receiver's window is invalid (dropped, counted), and one inside the window but not
/// at its start passes on without closing anything (the receiver answers with a
/// challenge ACK). The attacker forges from the client's own address in the namespace
/// (scapy); the connection is live and idle, as a blind reset finds it.
#[test]
fn a_blind_reset_or_fin_outside_the_window_leaves_the_connection_open() {
    require_privileges!();
    let net = Net::new("fwblind", 10);
    let config = net.dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        format!(
            "firewall:\n  interfaces: [{}]\n  default_inbound: drop\n  rules:\n    - {{direction: in, proto: tcp, dport: 2222, action: accept}}\n",
            net.veth.host()
        ),
    )
    .expect("policy");
    let daemon = Daemon::spawn(&net.args(&config));
    daemon.wait_for("ready");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/blind_reset.py");
    for v6 in [false, true] {
        let host = net.addr(v6, 1);
        let listener = TcpListener::bind((host.as_str(), 2222)).expect("listener");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 100];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let invalid = total(&net.firewall_status(), "invalid");
        let out = net
            .ns
            .command("/usr/bin/python3")
            .arg(&script)
            // Past the 10 s a reset connection is kept: a RST taken for real would
            // have removed it by then, and the next line been dropped.
            .args([net.veth.peer(), &net.addr(v6, 2), &host, "2222", "11"])
            .output()
            .expect("python3 with scapy");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("forged"),
            "v6={v6}: {out:?}"
        );
        assert!(
            said.contains("after ping2"),
            "v6={v6}: the connection outlived the forged RST and FIN: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The blind RST, FIN and RST+ACK were refused as invalid (the one inside the
        // window went on to the receiver).
        let refused = total(&net.firewall_status(), "invalid") - invalid;
        assert!(refused >= 3, "v6={v6}: {refused} invalid");
    }
    drop(daemon);
}

/// Two namespaces standing for two hosts of a fleet: the daemon's (`host`, where the
/// interfaces under test are made with the names a test chooses: no other test's
/// interface is in it) and the clients' (`clients`).
struct Fleet {
    host: NetNs,
    clients: NetNs,
    pins: BpffsDir,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new(tag: &str) -> Self {
        Self {
            host: NetNs::new(tag).expect("netns"),
            clients: NetNs::new(&format!("{tag}c")).expect("netns"),
            pins: BpffsDir::new(tag).expect("bpffs"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A veth pair `name` (in the host) – `c-name` (with the clients), 10.216.`net`.1 and
    /// .2; with `default_route`, the host's default route leaves through it.
    fn link(&self, name: &str, net: u8, default_route: bool) {
        let client = format!("c-{name}");
        let ok = Command::new("ip")
            .args([
                "link",
                "add",
                name,
                "netns",
                self.host.name(),
                "type",
                "veth",
            ])
            .args(["peer", "name", &client, "netns", self.clients.name()])
            .status()
            .expect("ip link");
        assert!(ok.success(), "veth {name}");
        self.host
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.216.{net}.1/24"),
                "dev",
                name,
            ])
            .expect("addr");
        self.clients
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("10.216.{net}.2/24"),
                "dev",
                &client,
            ])
            .expect("addr");
        self.host
            .exec(&["ip", "link", "set", name, "up"])
            .expect("up");
        self.clients
            .exec(&["ip", "link", "set", &client, "up"])
            .expect("up");
        if default_route {
            self.host
                .exec(&[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.216.{net}.2"),
                ])
                .expect("route");
        }
    }

    /// How many of `count` pings from the clients to the host's end of link `net` are
    /// answered.
    fn pings(&self, net: u8, count: u32) -> u32 {
        ping(
            &self.clients,
            &format!("10.216.{net}.2"),
            &format!("10.216.{net}.1"),
            count,
            "0.2",
        )
        .expect("ping")
    }

    /// `full_firewall ARGS` run in the host namespace (only the network namespace
    /// changes: the pin root and files stay the test's).
    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host.name()))
            .arg(BIN)
            .args(args);
        cmd
    }

    /// `full_firewall detach` of the pins: nothing of the firewall is left.
    fn detach(&self) {
        let detach = Command::new(BIN)
            .args(["detach", "--pin-dir"])
            .arg(self.pins.path())
            .output()
            .expect("detach");
        assert!(detach.status.success(), "{detach:?}");
    }

    /// The daemon on `config`, in the host namespace, ready.
    fn daemon(&self, config: &Path) -> Daemon {
        let args: Vec<String> = [
            "run",
            "--config",
            &config.display().to_string(),
            "--pin-dir",
            &self.pins.path().display().to_string(),
            "--audit-log",
            &self.dir.path().join("audit.jsonl").display().to_string(),
            "--run-dir",
            &self.dir.path().join("run").display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let daemon = Daemon::spawn_command(self.command(&args), false);
        daemon.wait_for("full_firewall: ready");
        daemon
    }
}

/// One policy for a fleet whose uplinks are named differently (a ConfigMap):
/// `interfaces: [auto]` passes `check --portable` where it is kept (this machine's
/// namespace, which has neither uplink), `check` on each host says which interface it
/// chose there, and the daemon enforces it on each: the uplink is `wan0` on one host
/// and `enp7s0` on the other, and inbound pings are dropped on both.
#[test]
fn one_policy_with_auto_checks_without_a_host_and_enforces_on_hosts_with_other_names() {
    require_privileges!();
    let policy = "firewall:\n  interfaces: [auto, \"!lo\"]\n  default_inbound: drop\n";
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("policy.yaml");
    std::fs::write(&config, policy).expect("policy");
    let out = Command::new(BIN)
        .args(["check", "--portable", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["portable"], true, "{report}");
    assert!(
        report["not_checked"]
            .as_str()
            .is_some_and(|t| t.contains("interfaces")),
        "{report}"
    );
    for (tag, uplink, net) in [("ffauto1", "wan0", 1u8), ("ffauto2", "enp7s0", 2)] {
        let fleet = Fleet::new(tag);
        fleet.link(uplink, net, true);
        // A second interface without the default route: `auto` leaves it alone.
        fleet.link("mgmt0", net + 10, false);
        let check = fleet
            .command(&[
                "check".into(),
                "--config".into(),
                config.display().to_string(),
            ])
            .output()
            .expect("check");
        assert!(check.status.success(), "{check:?}");
        let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("JSON");
        assert_eq!(
            report["firewall"]["interfaces"],
            serde_json::json!([uplink]),
            "{report}"
        );
        assert_eq!(
            report["firewall"]["interface_selectors"][0],
            serde_json::json!({"selector": "auto", "field": "firewall.interfaces[0]", "chose": [uplink]}),
            "{report}"
        );
        assert_eq!(fleet.pings(net, 2), 2, "{uplink}: no filter yet");
        let mut daemon = fleet.daemon(&config);
        assert!(
            daemon.log().contains(&format!("firewall on {uplink}")),
            "{}",
            daemon.log()
        );
        assert_eq!(fleet.pings(net, 2), 0, "{uplink}: dropped by the firewall");
        assert_eq!(fleet.pings(net + 10, 2), 2, "mgmt0: not chosen by auto");
        daemon.signal("TERM");
        assert!(daemon.wait().success(), "{}", daemon.log());
        fleet.detach();
        assert_eq!(fleet.pings(net, 2), 2, "{uplink}: detached");
    }
    // Where nothing is chosen (this machine has no `wan0`, and `auto` is its own
    // uplink here, so a name is used): refused, naming what the host has.
    std::fs::write(&config, "firewall:\n  interfaces: [\"wan*\"]\n").expect("policy");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "policy.yaml:2:16: firewall.interfaces: [wan*] selects no interface of this host (it has lo"
        ),
        "{out:?}"
    );
}

/// Interfaces that appear and vanish under a pattern (hotplug): a new `up*` interface
/// gets the firewall within seconds, with an audit record saying so; one the policy
/// excludes (`!up9`) does not; one that vanishes is let go and the daemon is ready
/// again (it judges by the links the kernel holds).
#[test]
fn a_new_interface_matching_a_pattern_gets_the_firewall_and_a_vanished_one_is_let_go() {
    require_privileges!();
    let fleet = Fleet::new("ffhotplug");
    fleet.link("up0", 1, false);
    let config = fleet.dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        "firewall:\n  interfaces: [\"up*\", \"!up9\"]\n  default_inbound: drop\n",
    )
    .expect("policy");
    let mut daemon = fleet.daemon(&config);
    assert!(daemon.log().contains("firewall on up0"), "{}", daemon.log());
    assert_eq!(fleet.pings(1, 2), 0, "up0: dropped");

    // Excluded: nothing changes (three verification periods).
    fleet.link("up9", 9, false);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!daemon.log().contains("up9"), "{}", daemon.log());
    assert_eq!(fleet.pings(9, 2), 2, "up9: excluded, not filtered");

    // Chosen: attached by the reload the change starts.
    let reloads = daemon.log().matches("reloaded:").count();
    fleet.link("up1", 2, false);
    daemon.wait_for("interfaces changed: up1 appeared");
    let start = Instant::now();
    while daemon.log().matches("reloaded:").count() == reloads {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.log().contains("attached to up1"), "{}", daemon.log());
    assert_eq!(fleet.pings(2, 2), 0, "up1: dropped by the firewall");
    assert_eq!(fleet.pings(1, 2), 0, "up0: still dropped");

    // Gone: let go, and ready again once the kernel's links and the policy agree.
    fleet
        .host
        .exec(&["ip", "link", "del", "up0"])
        .expect("ip link del");
    daemon.wait_for("interfaces changed: up0 vanished");
    let ready = |run: &Path| {
        Command::new(BIN)
            .args(["health", "--ready", "--run-dir"])
            .arg(run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("health")
            .success()
    };
    let run = fleet.dir.path().join("run");
    let start = Instant::now();
    while !(daemon.log().contains("detached from up0") && ready(&run)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fleet.pings(2, 2), 0, "up1: still dropped");
    let audit = std::fs::read_to_string(fleet.dir.path().join("audit.jsonl")).expect("audit");
    assert!(
        audit.contains("interfaces changed: up1 appeared")
            && audit.contains("interfaces changed: up0 vanished"),
        "{audit}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());

    // Under --confirm-within a reload is provisional and its rollback would bring the
    // old interfaces back: the change is said, not applied by itself.
    let args: Vec<String> = [
        "run",
        "--config",
        &config.display().to_string(),
        "--pin-dir",
        &fleet.pins.path().display().to_string(),
        "--audit-log",
        &fleet.dir.path().join("audit2.jsonl").display().to_string(),
        "--run-dir",
        &fleet.dir.path().join("run2").display().to_string(),
        "--confirm-within",
        "60s",
    ]
    .map(String::from)
    .to_vec();
    let mut daemon = Daemon::spawn_command(fleet.command(&args), false);
    daemon.wait_for("full_firewall: ready");
    fleet.link("up2", 3, false);
    daemon
        .wait_for("interfaces changed: up2 appeared: not applied by itself under --confirm-within");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!daemon.log().contains("reloading"), "{}", daemon.log());
    assert_eq!(
        fleet.pings(3, 2),
        2,
        "up2: not filtered until a confirmed reload"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    fleet.detach();
}
