//! Egress by DNS name and domain feeds through the daemon as shipped: `check`, `run`
//! on a test cgroup with an events file and metrics, `status`, a reload refused for a
//! bad pattern, against `dnsmasq` in a namespace and the installed `curl`.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::process::Command;
use std::time::Duration;

use crate::common::{Daemon, BIN};
use ironclad_testing::dns::{DnsLab, HTTP_PORT};
use ironclad_testing::{require_privileges, BpffsDir, TestCgroup};

fn check(config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `run` on the lab's test cgroup and pins, its files in the lab's directory, detaching
/// on exit, with `extra` arguments.
fn run_args(
    dns: &DnsLab,
    config: &std::path::Path,
    cgroup: &TestCgroup,
    pins: &BpffsDir,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--cgroup".into(),
        cgroup.path().display().to_string(),
        "--pin-dir".into(),
        pins.path().display().to_string(),
        "--audit-log".into(),
        dns.path("audit.jsonl").display().to_string(),
        "--run-dir".into(),
        dns.path("run").display().to_string(),
        "--detach-on-exit".into(),
    ];
    args.extend(extra.iter().map(ToString::to_string));
    args
}

#[test]
fn the_daemon_enforces_names_and_feeds_and_shows_the_live_table() {
    use std::os::unix::fs::PermissionsExt;
    require_privileges!();
    let dns = DnsLab::start("ffdns", 7, 30).expect("dns lab");
    let cgroup = TestCgroup::new("ffdns").expect("cgroup");
    let pins = BpffsDir::new("ffdns").expect("pins");
    let (good, evil) = (dns.server(0), dns.server(1));
    dns.set_hosts(&[("api.good.test", &[good]), ("evil.test", &[evil])])
        .expect("hosts");
    std::fs::write(dns.path("malware.hosts"), "# feed\n0.0.0.0 evil.test\n").expect("feed");
    let policy = |pattern: &str| {
        format!(
            "egress:\n  default: deny\n  rules:\n    - dst: {}/32\n      ports: [53]\n      action: allow\n    - exe: /usr/bin/curl\n      dst_domain: \"{pattern}\"\n      ports: [{HTTP_PORT}]\n      action: allow\n    - dst: 10.218.7.11/32\n      action: allow\n  deny_domain_feeds:\n    - {{path: malware.hosts, name: malware}}\n  dns: {{grace_seconds: 0}}\n",
            dns.resolver()
        )
    };
    let config = dns.path("policy.yaml");
    std::fs::write(&config, policy("*.good.test")).expect("policy");
    let (code, out, err) = check(&config);
    assert_eq!(code, 0, "{err}");
    let checked: serde_json::Value = serde_json::from_str(&out).expect("check JSON");
    assert_eq!(
        checked["egress"]["domain_rules"][0]["patterns"],
        serde_json::json!(["*.good.test"]),
        "{checked}"
    );
    assert_eq!(
        checked["egress"]["domain_feeds"][0]["names"], 1,
        "{checked}"
    );

    let token = dns.path("metrics.token");
    std::fs::write(&token, "ironclad-test-token-0123456789\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let events = dns.path("events.jsonl");
    let args = run_args(
        &dns,
        &config,
        &cgroup,
        &pins,
        &[
            "--events",
            &events.display().to_string(),
            "--metrics",
            "127.0.0.1:0",
            "--metrics-token-file",
            &token.display().to_string(),
        ],
    );
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");

    let url = |host: &str| format!("http://{host}:{HTTP_PORT}/");
    assert_eq!(
        dns.curl(&cgroup, &[], &url(&good.to_string()))
            .expect("curl"),
        7,
        "by address: no answer opened it"
    );
    assert_eq!(
        dns.curl(&cgroup, &[], &url("api.good.test")).expect("curl"),
        0,
        "by name"
    );
    assert_eq!(
        dns.curl(&cgroup, &[], &url(&good.to_string()))
            .expect("curl"),
        0,
        "opened for curl"
    );
    assert_eq!(
        dns.curl(&cgroup, &[], &url(&evil.to_string()))
            .expect("curl"),
        0,
        "a rule allows .11"
    );
    assert_eq!(
        dns.curl(&cgroup, &[], &url("evil.test")).expect("curl"),
        7,
        "a feed's name"
    );

    // The name comes from the answer event, which the daemon's reader reads within
    // 100 ms (the kernel does not wake it for each answer); a busy machine's reader
    // may take seconds, so the test waits up to 30.
    let mut status = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let out = Command::new(BIN)
            .args(["status", "--json", "--pin-dir"])
            .arg(pins.path())
            .output()
            .expect("status");
        status = serde_json::from_slice(&out.stdout).expect("status JSON");
        let named = status["egress"]["domains"]["opened"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["name"] == "api.good.test"));
        if named {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let domains = &status["egress"]["domains"];
    assert_eq!(domains["active"], true, "{status}");
    let opened = domains["opened"].as_array().expect("opened");
    assert!(
        opened.iter().any(|o| o["address"] == good.to_string()
            && o["name"] == "api.good.test"
            && o["exe"] == "/usr/bin/curl"
            && o["patterns"][0]["pattern"] == "*.good.test"
            && o["patterns"][0]["expires_in_seconds"]
                .as_u64()
                .is_some_and(|s| s <= 31)),
        "{domains}"
    );
    assert_eq!(
        domains["denied"][0]["address"],
        evil.to_string(),
        "{domains}"
    );
    assert_eq!(domains["denied"][0]["feed"], "malware", "{domains}");
    assert_eq!(domains["feeds"][0]["counters"]["connects"], 1, "{domains}");
    let text = Command::new(BIN)
        .args(["status", "--pin-dir"])
        .arg(pins.path())
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("egress by name: *.good.test"), "{text}");
    assert!(
        text.contains("api.good.test"),
        "the name beside its address: {text}"
    );
    assert!(text.contains("DENIED by feed malware"), "{text}");
    // With the daemon's run directory, each egress rule is named where it was written,
    // with what it says, in a table (text) and in the JSON.
    let run_dir = dns.path("run");
    let named = Command::new(BIN)
        .args(["status", "--pin-dir"])
        .arg(pins.path())
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .expect("status");
    assert!(named.status.success(), "{named:?}");
    let named = String::from_utf8_lossy(&named.stdout);
    let line = |name: &str| {
        named
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {named}"))
            .to_string()
    };
    assert!(named.contains("egress rules ("), "{named}");
    let curl_rule = line("egress.rules[1]");
    assert!(
        curl_rule.contains("/usr/bin/curl") && curl_rule.contains("good.test"),
        "the rule's text beside its name: {named}"
    );
    assert!(line("egress.rules[2]").contains("10.218.7.11"), "{named}");
    // The table's columns line up: each rule's decision count ends where the header's
    // `decisions` does.
    let header = line("rule");
    let end = header.trim_end().len();
    for name in ["egress.rules[0]", "egress.rules[1]", "egress.rules[2]"] {
        assert_eq!(line(name).trim_end().len(), end, "{named}");
    }
    let json = Command::new(BIN)
        .args(["status", "--json", "--pin-dir"])
        .arg(pins.path())
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .expect("status");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status JSON");
    let rules = json["egress"]["rules"].as_array().expect("egress rules");
    assert_eq!(
        rules.iter().map(|r| r["name"].clone()).collect::<Vec<_>>(),
        ["egress.rules[0]", "egress.rules[1]", "egress.rules[2]"],
        "{json}"
    );
    assert!(
        rules[1]["rule"]
            .as_str()
            .is_some_and(|r| r.contains("/usr/bin/curl")),
        "{json}"
    );
    assert!(
        rules[1]["hits"].as_u64().is_some_and(|h| h >= 2),
        "curl's two connections by name: {json}"
    );

    let port = daemon.metrics_port();
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics
            .contains("ironclad_egress_domain_feed_total{feed=\"malware\",counter=\"connects\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ironclad_egress_domain_addresses{state=\"denied\"} 1"),
        "{metrics}"
    );
    // The dashboard's features table: the domain policy's totals on the identity
    // firewall's row, the same counters as /metrics (read from the totals map alone).
    let status = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/api/status")])
        .output()
        .expect("api/status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let egress = status["programs"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "egress"))
        .unwrap_or_else(|| panic!("an egress row: {status}"));
    let queries = egress["counters"]["queries"].as_u64();
    assert!(queries >= Some(2), "{egress}");
    assert_eq!(
        egress["counters"]["connect_denied"].as_u64(),
        Some(1),
        "{egress}"
    );
    assert!(
        metrics.contains("ironclad_egress_dns_total{what=\"connect_denied\"} 1"),
        "{metrics}"
    );

    // The events file: the feed answer with curl, the refused connect with the feed.
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        seen = std::fs::read_to_string(&events).unwrap_or_default();
        if seen.contains("\"feed_answer\"") && seen.contains("\"feed\":\"malware\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines: Vec<serde_json::Value> = seen
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|e| e["kind"] == "dns_policy"
            && e["what"] == "answer"
            && e["name"] == "api.good.test"
            && e["patterns"] == serde_json::json!(["*.good.test"])
            && e["comm"] == "curl"),
        "{seen}"
    );
    assert!(
        lines.iter().any(|e| e["kind"] == "connect"
            && e["feed"] == "malware"
            && e["dst"] == evil.to_string()),
        "{seen}"
    );

    // A root attacker detaches the DNS programs' links (`bpftool link detach`): without
    // them no answer opens anything, and rules by name stop working. The daemon puts
    // them back within its next check, and a name first resolved after that opens its
    // address as before.
    let fresh = dns.server(2);
    for name in ["ic_dns_out", "ic_dns_in"] {
        let pin = pins.path().join("egress").join(format!("link_{name}"));
        let out = Command::new("bpftool")
            .args(["link", "detach", "pinned"])
            .arg(&pin)
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "bpftool link detach {pin:?}: {out:?}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !["ic_dns_out", "ic_dns_in"].iter().all(|name| {
        daemon
            .log()
            .lines()
            .any(|l| l.contains(&format!("({name} on ")) && l.contains("was detached from outside"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "both DNS links put back: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dns.set_hosts(&[
        ("api.good.test", &[good]),
        ("evil.test", &[evil]),
        ("fresh.good.test", &[fresh]),
    ])
    .expect("hosts");
    assert_eq!(
        dns.curl(&cgroup, &[], &url(&fresh.to_string()))
            .expect("curl"),
        7,
        "by address: nothing opened it"
    );
    assert_eq!(
        dns.curl(&cgroup, &[], &url("fresh.good.test"))
            .expect("curl"),
        0,
        "a name resolved after the repair opens its address"
    );

    // A reload with a bad pattern is refused with its position; the policy stays.
    std::fs::write(&config, policy("*.bad..test")).expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("policy.yaml:8:19");
    assert_eq!(
        dns.curl(&cgroup, &[], &url("api.good.test")).expect("curl"),
        0,
        "still enforcing the old policy"
    );
    let (code, _, err) = check(&config);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "policy.yaml:8:19: egress.rules[1].dst_domain: `*.bad..test` has an empty label"
        ),
        "{err}"
    );
    daemon.signal("TERM");
    let _ = daemon.wait();

    // Without --detach-on-exit the enforcement outlives the daemon, the DNS programs
    // included; the next start adopts their pinned links.
    std::fs::write(&config, policy("*.good.test")).expect("policy");
    let programs = || ironclad_testing::cgroup_programs(cgroup.path()).expect("bpftool");
    assert!(programs().is_empty(), "detached on exit: {:?}", programs());
    let staying: Vec<String> = args
        .iter()
        .filter(|a| *a != "--detach-on-exit")
        .cloned()
        .collect();
    let mut daemon = Daemon::spawn(&staying);
    daemon.wait_for("ready");
    daemon.signal("TERM");
    let _ = daemon.wait();
    let all = [
        "ic_connect4",
        "ic_connect6",
        "ic_dns_in",
        "ic_dns_out",
        "ic_sendmsg4",
        "ic_sendmsg6",
    ];
    assert_eq!(programs(), all, "still attached with no daemon");
    assert_eq!(
        dns.curl(&cgroup, &[], &url("api.good.test")).expect("curl"),
        0,
        "names still work"
    );
    assert_eq!(
        dns.curl(&cgroup, &[], &url("evil.test")).expect("curl"),
        7,
        "the feed still refuses"
    );
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    assert_eq!(programs(), all, "the pinned links adopted, not doubled");
    daemon.signal("TERM");
    let _ = daemon.wait();
    assert!(programs().is_empty(), "detached on exit: {:?}", programs());
}

/// The entries of a pinned map, as `bpftool map dump` lists them.
fn pinned_entries(pin: &std::path::Path) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map dump {pin:?}: {out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("bpftool JSON")
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn the_daemon_sweeps_expired_names_and_gives_a_full_share_its_room_back() {
    use std::os::unix::fs::PermissionsExt;
    require_privileges!();
    // Answers live 15 s: the resolver below must finish inside their life, or the
    // daemon rightly sweeps the first answers out while the last are refused (on a
    // loaded CI machine 16,500 names took over 3 s, and a 2 s life lost 6,521 of the
    // share before it was counted).
    const TTL: Duration = Duration::from_secs(15);
    let dns = DnsLab::start("ffsweep", 15, TTL.as_secs() as u32).expect("dns lab");
    let cgroup = TestCgroup::new("ffsweep").expect("cgroup");
    let pins = BpffsDir::new("ffsweep").expect("pins");
    let names: Vec<(String, Vec<std::net::IpAddr>)> = (0..16_500u32)
        .map(|i| {
            (
                format!("n{i}.sweep.test"),
                vec![std::net::IpAddr::from([
                    198,
                    18,
                    (i >> 8) as u8,
                    (i & 0xff) as u8,
                ])],
            )
        })
        .collect();
    let refs: Vec<(&str, &[std::net::IpAddr])> = names
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_slice()))
        .collect();
    dns.set_hosts(&refs).expect("hosts");
    let config = dns.path("policy.yaml");
    std::fs::write(
        &config,
        format!(
            "egress:\n  default: deny\n  rules:\n    - dst: {}/32\n      ports: [53]\n      action: allow\n    - uid: 65534\n      dst_domain: \"*.sweep.test\"\n      ports: [{HTTP_PORT}]\n      action: allow\n  dns: {{grace_seconds: 0}}\n",
            dns.resolver()
        ),
    )
    .expect("policy");
    let args = run_args(&dns, &config, &cgroup, &pins, &[]);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    // An unprivileged user's program resolves more names than its share.
    let bin = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = bin.path().join("resolver");
    std::fs::copy(
        ironclad_testing::python_interpreter().expect("python"),
        &exe,
    )
    .expect("copy");
    let resolve = |label: &str, count: u32| -> u32 {
        let started = std::time::Instant::now();
        let answered = dns
            .resolve_many(&cgroup, &exe, 65534, label, "sweep.test", count)
            .expect("resolver");
        let took = started.elapsed();
        eprintln!("{count} names resolved in {took:?}");
        assert!(
            took < TTL,
            "the resolver took {took:?}, longer than the answers live ({TTL:?}): \
             the first answers may have been swept before the share was counted"
        );
        answered
    };
    assert_eq!(resolve("n", 16_500), 16_500);
    let addrs = pins.path().join("egress").join("ic_dns_addrs");
    let owners = pins.path().join("egress").join("ic_dns_owners");
    assert_eq!(
        pinned_entries(&addrs),
        ironclad_core::abi::DNS_PER_SCOPE as usize,
        "the share, no more"
    );
    // The answers expire after their life; the daemon sweeps them out within its
    // period (10 s) and gives the share back.
    let deadline = std::time::Instant::now() + TTL + Duration::from_secs(20);
    while pinned_entries(&addrs) > 0 || pinned_entries(&owners) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired entries swept: {} left, {} owners; {}",
            pinned_entries(&addrs),
            pinned_entries(&owners),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Room again: names it had been refused open now.
    assert_eq!(resolve("n", 16_500), 16_500);
    let out = Command::new(BIN)
        .args(["status", "--json", "--pin-dir"])
        .arg(pins.path())
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let domains = &status["egress"]["domains"];
    // 116 refused each time: the second time the whole share was free again.
    assert_eq!(domains["totals"]["owner_full"], 2 * 116, "{domains}");
    assert!(
        domains["opened"]
            .as_array()
            .expect("opened")
            .iter()
            .all(|o| o["uid"] == 65534),
        "{domains}"
    );
    daemon.signal("TERM");
    let _ = daemon.wait();
}
