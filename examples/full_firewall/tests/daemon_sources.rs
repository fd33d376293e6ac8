//! Feeds and countries through the daemon: a GeoLite2-shaped test database decides
//! which namespace sources are dropped, a feed file rewritten under a running daemon
//! changes what is dropped, and the counters and metrics name the feed or country.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ironclad_testing::require_privileges;
use ironclad_testing::{ping, BpffsDir, NetNs, VethPair};

use crate::common::{run_args, Daemon, BIN};

fn countries_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../ironclad-policy/tests/data/countries-test.mmdb")
}

/// A namespace whose sources sit in the test database's networks: 10.213.1.2 and
/// fd13:1::2 (NL), 10.213.2.2 and fd13:2::2 (DE), 10.213.3.2 (a record without a
/// country); the host end is 10.213.0.1/16 and fd13::1/16.
struct GeoLab {
    ns: NetNs,
    veth: VethPair,
    pins: BpffsDir,
    dir: tempfile::TempDir,
}

impl GeoLab {
    fn new(tag: &str) -> Self {
        let ns = NetNs::new(tag).expect("netns");
        let veth = VethPair::new(
            &ns,
            &["10.213.0.1/16", "fd13::1/16"],
            &[
                "10.213.1.2/16",
                "10.213.2.2/16",
                "10.213.3.2/16",
                "fd13:1::2/16",
                "fd13:2::2/16",
            ],
        )
        .expect("veth");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(countries_db(), dir.path().join("countries.mmdb")).expect("copy db");
        Self {
            ns,
            veth,
            pins: BpffsDir::new(tag).expect("bpffs"),
            dir,
        }
    }

    fn ping(&self, from: &str, count: u32) -> u32 {
        let to = if from.contains(':') {
            "fd13::1"
        } else {
            "10.213.0.1"
        };
        ping(&self.ns, from, to, count, "0.2").expect("ping")
    }

    fn spawn(&self, policy: &str) -> Daemon {
        let config = self.dir.path().join("policy.yaml");
        std::fs::write(&config, policy).expect("policy");
        let mut args = run_args(&config, &self.veth, &self.pins, self.dir.path());
        args.extend(["--metrics", "127.0.0.1:0", "--detach-on-exit"].map(String::from));
        let daemon = Daemon::spawn(&args);
        daemon.wait_for("ready");
        daemon
    }

    /// Packets counted by the rule labelled `label` (`set:NAME`).
    fn counted(&self, label: &str) -> u64 {
        let out = Command::new(BIN)
            .args(["status", "--json", "--pin-dir"])
            .arg(self.pins.path())
            .output()
            .expect("status");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let name = label.trim_start_matches("set:");
        status["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["set"] == name)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or_else(|| panic!("no set {name} in {status}"))
    }
}

/// The metrics page of a daemon started with `--metrics 127.0.0.1:0`.
fn metrics(daemon: &Daemon) -> String {
    let log = daemon.log();
    let port = log
        .split("metrics on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address:\n{log}"));
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn deny_countries_drops_a_country_in_both_families_and_counts_it() {
    require_privileges!();
    let lab = GeoLab::new("ffgeo");
    let mut daemon = lab
        .spawn("shield:\n  geoip_db: countries.mmdb\n  deny_countries: [DE]\n  sample_rate: 1\n");
    assert_eq!(lab.ping("10.213.2.2", 4), 0, "DE (IPv4) is dropped");
    assert_eq!(
        lab.counted("set:country:DE"),
        4,
        "the country's own counter"
    );
    assert_eq!(lab.ping("10.213.1.2", 2), 2, "NL passes");
    assert_eq!(lab.ping("10.213.3.2", 2), 2, "no country: not denied");
    assert_eq!(lab.counted("set:country:DE"), 4);
    // NL first: once fd13:2::2 (DE) has pinged, the namespace may probe its stale
    // neighbour entry for the host from that address, which the Shield drops (it denies
    // DE), and an NL ping after it went unanswered in half the runs here.
    assert_eq!(lab.ping("fd13:1::2", 2), 2, "NL (IPv6) passes");
    assert_eq!(lab.ping("fd13:2::2", 3), 0, "DE (IPv6) is dropped");
    // The three echo requests and the neighbour solicitations sent from fd13:2::2.
    assert!(lab.counted("set:country:DE") >= 7);
    let page = metrics(&daemon);
    assert!(
        page.contains(&format!(
            "ironclad_shield_rule_packets_total{{rule=\"set:country:DE\",action=\"deny\"}} {}",
            lab.counted("set:country:DE")
        )),
        "{page}"
    );
    assert!(
        page.contains("ironclad_source_prefixes{source=\"country:DE\",family=\"ipv4\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("ironclad_geoip_database_age_seconds "),
        "{page}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

#[test]
fn allow_countries_drops_every_other_country_but_leaves_local_space() {
    require_privileges!();
    let lab = GeoLab::new("ffgeoallow");
    // Global addresses: 198.51.100.0/24 is NL in the test database, 203.0.113.0/24 DE,
    // 198.18.0.0/24 (benchmarking space, global) in no country.
    for (host, peer) in [
        ("198.51.100.1/24", "198.51.100.2/24"),
        ("203.0.113.1/24", "203.0.113.2/24"),
        ("198.18.0.1/24", "198.18.0.2/24"),
    ] {
        let ok = Command::new("ip")
            .args(["addr", "add", host, "dev", lab.veth.host()])
            .status()
            .expect("ip");
        assert!(ok.success());
        let out = lab
            .ns
            .exec(&["ip", "addr", "add", peer, "dev", lab.veth.peer()])
            .expect("ip");
        assert!(out.status.success());
    }
    let mut daemon = lab.spawn("shield:\n  geoip_db: countries.mmdb\n  allow_countries: [NL]\n");
    let to = |from: &str, to: &str, n| {
        ping(&lab.ns, from, to, n, "0.2").unwrap_or_else(|e| panic!("ping from {from}: {e}"))
    };
    assert_eq!(to("198.51.100.2", "198.51.100.1", 2), 2, "NL is allowed");
    assert_eq!(to("203.0.113.2", "203.0.113.1", 2), 0, "DE is dropped");
    assert_eq!(
        to("198.18.0.2", "198.18.0.1", 3),
        0,
        "global space in no country is dropped"
    );
    assert_eq!(lab.counted("set:geo:other-countries"), 5);
    assert_eq!(lab.ping("10.213.2.2", 2), 2, "private space is left alone");
    assert_eq!(lab.ping("fd13:1::2", 2), 2, "NL (IPv6, ULA) passes");
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

/// Replaces `path` atomically, as a feed updater should: a temporary file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn a_refreshed_feed_file_changes_enforcement_under_the_running_daemon() {
    require_privileges!();
    let ns = NetNs::new("fffeed").expect("netns");
    let veth =
        VethPair::new(&ns, &["10.214.0.1/24"], &["10.214.0.2/24", "10.214.0.3/24"]).expect("veth");
    let pins = BpffsDir::new("fffeed").expect("bpffs");
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("blocklist.txt");
    std::fs::write(&list, "# test feed\n10.214.0.2\n").expect("feed");
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        "shield:\n  deny_feeds:\n    - path: blocklist.txt\n      format: plain\n      refresh: 1s\n",
    )
    .expect("policy");
    let mut args = run_args(&config, &veth, &pins, dir.path());
    args.extend(["--metrics", "127.0.0.1:0", "--detach-on-exit"].map(String::from));
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    let ping_from = |host: &str, n| ping(&ns, host, "10.214.0.1", n, "0.2").expect("ping");
    assert_eq!(ping_from("10.214.0.2", 2), 0);
    assert_eq!(ping_from("10.214.0.3", 2), 2);
    let page = metrics(&daemon);
    assert!(
        page.contains("ironclad_feed_age_seconds{feed=\"blocklist\"} "),
        "{page}"
    );
    assert!(
        page.contains("ironclad_feed_skipped_entries{feed=\"blocklist\"} 0"),
        "{page}"
    );

    // A bad line: the refresh is refused and the old set stays.
    replace_file(&list, "10.214.0.3\nnot-an-address\n");
    daemon.wait_for("feed `blocklist` changed");
    daemon.wait_for("reload refused");
    assert!(
        daemon.log().contains("blocklist.txt:2:1: `not-an-address`"),
        "{}",
        daemon.log()
    );
    assert_eq!(ping_from("10.214.0.2", 1), 0, "the last good set stays");
    // A good new list applies within the refresh interval.
    let reloads = daemon.log().matches("reloaded:").count();
    replace_file(&list, "10.214.0.3\n");
    daemon.wait_for_more("reloaded:", reloads);
    assert_eq!(ping_from("10.214.0.3", 2), 0, "the new entry is dropped");
    assert_eq!(ping_from("10.214.0.2", 2), 2, "the old one passes");
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

#[test]
fn check_reports_the_compiled_prefix_counts_per_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(countries_db(), dir.path().join("countries.mmdb")).expect("db");
    // Two adjacent /25s aggregate into one /24; an IPv6 entry counts as IPv6.
    std::fs::write(
        dir.path().join("drop.txt"),
        "; DROP\n198.18.0.0/25 ; SBL1\n198.18.0.128/25 ; SBL2\n2001:db8:1::/48 ; SBL3\n",
    )
    .expect("feed");
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        "shield:\n  deny: [192.0.2.0/24]\n  deny_feeds:\n    - path: drop.txt\n      format: spamhaus\n  geoip_db: countries.mmdb\n  deny_countries: [DE, FR]\n",
    )
    .expect("policy");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let sources = &json["sources"];
    let counts = |name: &str| {
        (
            sources[name]["ipv4_prefixes"].as_u64(),
            sources[name]["ipv6_prefixes"].as_u64(),
        )
    };
    assert_eq!(counts("drop"), (Some(1), Some(1)), "{json}");
    assert_eq!(counts("country:DE"), (Some(2), Some(1)), "{json}");
    assert_eq!(counts("country:FR"), (Some(0), Some(0)), "{json}");
    assert_eq!(sources["drop"]["format"], "spamhaus");
    assert_eq!(sources.as_object().map(|o| o.len()), Some(3), "{json}");
    assert_eq!(
        json["ipv4_prefixes"], 4,
        "the inline rule, the feed's /24, DE's two"
    );
}
