//! Feed files of every format and GeoIP countries, read through the policy file:
//! sample files give the expected sets, bad files give exact `FILE:LINE:COLUMN` errors
//! and nothing is loaded from them.

#![allow(clippy::expect_used, reason = "tests fail with a message")]

use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use ironclad_policy::config::compile_str;
use ironclad_policy::feeds::{read_feed, FeedFormat, Strictness};
use ironclad_policy::shield::CompiledShield;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn feed(name: &str) -> PathBuf {
    data("feeds").join(name)
}

fn strings<'a>(list: impl IntoIterator<Item = &'a IpNetwork>) -> Vec<String> {
    list.into_iter().map(ToString::to_string).collect()
}

fn list_strings(list: &ironclad_policy::PrefixList) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

/// Each set's name and prefix count, in order.
fn set_sizes(shield: &CompiledShield) -> Vec<(&str, usize)> {
    shield
        .sets
        .iter()
        .map(|s| (s.name.as_str(), s.prefixes.len()))
        .collect()
}

/// Errors of reading `name` strictly, as `FILE:LINE:COLUMN: message` with the file name
/// only.
fn errors(name: &str, format: &FeedFormat) -> Vec<String> {
    let err = read_feed(&feed(name), format, Strictness::Strict).expect_err("bad feed");
    let dir = format!("{}/", data("feeds").display());
    err.diagnostics
        .iter()
        .map(|d| d.to_string().replace(&dir, ""))
        .collect()
}

fn csv() -> FeedFormat {
    FeedFormat::Csv {
        column: "ip_address".into(),
    }
}

#[test]
fn every_format_parses_its_sample_to_the_expected_set() {
    let cases: [(&str, FeedFormat, &[&str]); 7] = [
        (
            "plain.txt",
            FeedFormat::Plain,
            &[
                "192.0.2.1/32",
                "198.51.100.0/24",
                "2001:db8:bad::/48",
                "203.0.113.7/32",
            ],
        ),
        (
            "drop.txt",
            FeedFormat::Spamhaus,
            &[
                "1.10.16.0/20",
                "1.19.0.0/16",
                "2.57.122.0/24",
                "2001:db8:1000::/36",
            ],
        ),
        (
            "feodo.txt",
            FeedFormat::Feodo,
            &["50.16.16.211/32", "162.243.103.246/32", "167.86.75.145/32"],
        ),
        (
            "firehol.netset",
            FeedFormat::Firehol,
            &["0.0.0.0/8", "1.10.16.0/20", "1.19.0.0/16", "223.254.0.0/16"],
        ),
        (
            "list.csv",
            csv(),
            &["192.0.2.10/32", "2001:db8::10/128", "198.51.100.0/25"],
        ),
        (
            "list.json",
            FeedFormat::Json { field: None },
            &["192.0.2.20/32", "198.51.100.128/25", "2001:db8:20::/48"],
        ),
        (
            "objects.json",
            FeedFormat::Json {
                field: Some("ip".into()),
            },
            &["192.0.2.30/32", "2001:db8:30::/48"],
        ),
    ];
    for (name, format, expected) in cases {
        let parsed = read_feed(&feed(name), &format, Strictness::Strict)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(strings(&parsed.prefixes), expected, "{name}");
        assert_eq!((parsed.skipped, parsed.masked), (0, 0), "{name}");
    }
}

#[test]
fn every_format_reports_bad_lines_with_file_line_and_column() {
    assert_eq!(
        errors("plain-bad.txt", &FeedFormat::Plain),
        [
            "plain-bad.txt:3:1: `192.0.2.256` is not an IP address or CIDR",
            "plain-bad.txt:4:1: `198.51.100.1/24` has host bits set; did you mean `198.51.100.0/24`?",
            "plain-bad.txt:5:15: unexpected `203.0.113.8` after the entry",
            "plain-bad.txt:6:1: `2001:db8::/129` is not an IP address or CIDR",
        ]
    );
    assert_eq!(
        errors("drop-bad.txt", &FeedFormat::Spamhaus),
        [
            "drop-bad.txt:3:13: unexpected `SBL434604` after the entry",
            "drop-bad.txt:4:1: `1.19.0.0/33` is not an IP address or CIDR",
        ]
    );
    assert_eq!(
        errors("feodo-bad.txt", &FeedFormat::Feodo),
        ["feodo-bad.txt:3:1: `50.16.16` is not an IP address or CIDR"]
    );
    assert_eq!(
        errors("firehol-bad.netset", &FeedFormat::Firehol),
        ["firehol-bad.netset:3:1: `1.10.16.0/-1` is not an IP address or CIDR"]
    );
    assert_eq!(
        errors("list-bad.csv", &csv()),
        [
            "list-bad.csv:3:24: `bogus` is not an IP address or CIDR",
            "list-bad.csv:4:22: the row has 1 fields; column `ip_address` is field 2",
        ]
    );
    assert_eq!(
        errors("list-bad.json", &FeedFormat::Json { field: None }),
        [
            "list-bad.json:3:3: `192.0.2.20/16` has host bits set; did you mean `192.0.0.0/16`?",
            "list-bad.json:4:3: 42 is not a string",
        ]
    );
}

fn policy(dir: &Path, yaml: &str) -> Result<CompiledShield, Vec<String>> {
    let path = dir.join("policy.yaml");
    compile_str(yaml, &path)
        .map(|c| c.shield.expect("shield section"))
        .map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| d.to_string().replace(&format!("{}/", dir.display()), ""))
                .collect()
        })
}

/// A policy directory with copies of the sample feeds.
fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(feed("")).expect("feeds") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    std::fs::copy(
        data("countries-test.mmdb"),
        dir.path().join("countries.mmdb"),
    )
    .expect("db");
    dir
}

#[test]
fn feeds_become_named_sets_with_relative_paths_and_aggregation() {
    let dir = policy_dir();
    let shield = policy(
        dir.path(),
        "shield:\n  deny_feeds:\n    - path: drop.txt\n      format: spamhaus\n    - name: c2\n      path: list.csv\n      format: csv\n      column: ip_address\n      refresh: 30m\n  allow_feeds:\n    - path: list.json\n      format: json\n",
    )
    .expect("valid");
    let sets = set_sizes(&shield);
    assert_eq!(sets, [("drop", 4), ("c2", 3), ("list", 3)]);
    assert_eq!(shield.sources.len(), 3);
    assert!(shield.sources.iter().all(|s| s.modified.is_some()));
    // Two adjacent /25s in one feed become one /24.
    std::fs::write(
        dir.path().join("halves.txt"),
        "10.9.0.0/25\n10.9.0.128/25\n10.9.0.7\n",
    )
    .expect("write");
    let shield = policy(
        dir.path(),
        "shield:\n  deny_feeds:\n    - path: halves.txt\n      format: plain\n",
    )
    .expect("valid");
    assert_eq!(list_strings(&shield.sets[0].prefixes), ["10.9.0.0/24"]);
}

#[test]
fn a_bad_feed_fails_the_whole_policy_with_its_positions() {
    let dir = policy_dir();
    let errors = policy(
        dir.path(),
        "shield:\n  deny: [192.0.2.0/24]\n  deny_feeds:\n    - path: feodo.txt\n      format: feodo\n    - path: feodo-bad.txt\n      format: feodo\n",
    )
    .expect_err("strict");
    assert_eq!(
        errors,
        ["feodo-bad.txt:3:1: `50.16.16` is not an IP address or CIDR"]
    );
    // Lenient: the bad line is skipped and counted.
    let shield = policy(
        dir.path(),
        "shield:\n  deny_feeds:\n    - path: plain-bad.txt\n      format: plain\n      strict: false\n",
    )
    .expect("lenient");
    assert_eq!(
        list_strings(&shield.sets[0].prefixes),
        ["192.0.2.1/32", "198.51.100.0/24"],
        "the good entry and the masked one"
    );
    assert_eq!(
        (shield.sources[0].skipped, shield.sources[0].masked),
        (3, 1)
    );
    let dir_prefix = format!("{}/", dir.path().display());
    let warnings: Vec<String> = shield.sources[0]
        .warnings
        .iter()
        .map(|w| w.to_string().replace(&dir_prefix, ""))
        .collect();
    assert_eq!(
        warnings,
        [
            "plain-bad.txt:3:1: `192.0.2.256` is not an IP address or CIDR",
            "plain-bad.txt:4:1: `198.51.100.1/24` has host bits set; using `198.51.100.0/24`",
            "plain-bad.txt:5:15: unexpected `203.0.113.8` after the entry",
            "plain-bad.txt:6:1: `2001:db8::/129` is not an IP address or CIDR",
        ],
        "lenient mode reports what it skipped and masked"
    );
}

#[test]
fn feed_and_country_settings_are_checked_with_positions() {
    let dir = policy_dir();
    let errors = policy(
        dir.path(),
        "shield:\n  deny_feeds:\n    - path: a.txt\n      format: xml\n    - path: list.csv\n      format: csv\n    - url: ftp://example.com/drop.txt\n      format: spamhaus\n    - path: drop.txt\n      format: spamhaus\n      refresh: soon\n    - path: missing.txt\n      format: plain\n  deny_countries: [NL, nl]\n",
    )
    .expect_err("invalid");
    assert_eq!(
        errors,
        [
            "policy.yaml:4:15: shield.deny_feeds[0].format: `xml` is not a feed format; use one of plain, spamhaus, feodo, firehol, csv, json",
            "policy.yaml:5:7: shield.deny_feeds[1]: a `csv` feed needs `column`: the header name of the address column",
            "policy.yaml:7:7: shield.deny_feeds[2]: `ftp://example.com/drop.txt` is not an https:// or http:// URL",
            "policy.yaml:11:16: shield.deny_feeds[3].refresh: `soon` is not a duration of at least 1s (e.g. `30m`, `6h`)",
            "policy.yaml:12:7: shield.deny_feeds[4]: `missing.txt`: cannot read: No such file or directory (os error 2)",
            "policy.yaml:14:20: shield.deny_countries[0]: countries need `shield.geoip_db`: the path of a GeoLite2/GeoIP2 Country database (.mmdb)",
            "policy.yaml:14:24: shield.deny_countries[1]: `nl` is not an ISO 3166-1 alpha-2 country code (two capitals, e.g. `NL`)",
        ]
    );
    // A database that is not one is reported where the policy names it.
    let errors = policy(
        dir.path(),
        "shield:
  geoip_db: drop.txt
  deny_countries: [NL]
",
    )
    .expect_err("invalid");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "policy.yaml:2:13: shield.geoip_db: `drop.txt`: cannot open the GeoIP database: "
        ),
        "{errors:?}"
    );
    let errors = policy(
        dir.path(),
        "shield:\n  geoip_db: countries.mmdb\n  deny_countries: [NL]\n  allow_countries: [DE]\n  deny_feeds:\n    - path: drop.txt\n      format: spamhaus\n    - path: drop.txt\n      format: spamhaus\n",
    )
    .expect_err("invalid");
    assert_eq!(
        errors,
        [
            "policy.yaml:4:21: shield.allow_countries: use either `deny_countries` or `allow_countries` (allow-list mode denies every other country)",
            "policy.yaml:8:7: shield.deny_feeds[1]: set name `drop` is used twice (a feed is named after its file unless it has a `name`)",
        ]
    );
}

#[test]
fn countries_become_one_set_each_and_allow_lists_deny_the_rest() {
    let dir = policy_dir();
    let shield = policy(
        dir.path(),
        "shield:\n  geoip_db: countries.mmdb\n  deny_countries: [NL, DE, FR]\n",
    )
    .expect("valid");
    let sets: Vec<(&str, Vec<String>)> = shield
        .sets
        .iter()
        .map(|s| (s.name.as_str(), list_strings(&s.prefixes)))
        .collect();
    assert_eq!(
        sets,
        [
            (
                "country:NL",
                vec![
                    "10.213.1.0/24".to_string(),
                    "10.213.4.0/24".into(),
                    "198.51.100.0/24".into(),
                    "fd13:1::/48".into()
                ]
            ),
            (
                "country:DE",
                vec![
                    "10.213.2.0/24".to_string(),
                    "203.0.113.0/24".into(),
                    "fd13:2::/48".into()
                ]
            ),
            ("country:FR", vec![]),
        ]
    );
    let shield = policy(
        dir.path(),
        "shield:\n  geoip_db: countries.mmdb\n  allow_countries: [NL]\n  management: [10.0.0.1]\n",
    )
    .expect("valid");
    let sets = set_sizes(&shield);
    let rest = ironclad_policy::sources::everything_but_local();
    assert_eq!(
        sets,
        [("geo:other-countries", rest.len()), ("country:NL", 4)]
    );
    let covers = |addr: &str| {
        let ip: std::net::IpAddr = addr.parse().expect("ip");
        shield.sets[0].prefixes.iter().any(|n| n.contains(ip))
    };
    assert!(covers("203.0.113.5") && covers("192.0.2.1") && covers("2001:db8::1"));
    assert!(!covers("10.213.3.2") && !covers("192.168.1.1") && !covers("fe80::1"));
}

/// Writes `text` to `path` as a feed writer should: a temporary file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A daemon's reloads with a [`SourceCache`]: an unchanged feed is not read again and its
/// set keeps the very list it had (shared with the last policy), a changed one is read,
/// and whatever changed, the policy is exactly the one a compile without the cache
/// gives — also when a change in one feed changes how another aggregates (a prefix the
/// other lists becomes listed elsewhere too, so it may no longer merge away).
#[test]
fn a_source_cache_rereads_only_changed_feeds_and_compiles_the_same_policy() {
    use ironclad_policy::config::{compile_file, compile_file_cached};
    use ironclad_policy::sources::SourceCache;
    use std::sync::Arc;
    let dir = policy_dir();
    // `big`: 2,000 /32s that merge pairwise into /31s, and some scattered hosts.
    let mut big: Vec<String> = (0..2_000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a80_0000 + i).to_string())
        .collect();
    big.extend((0..500u32).map(|i| std::net::Ipv4Addr::from(0x2d00_0000 + i * 977).to_string()));
    replace_file(&dir.path().join("big.txt"), &big.join("\n"));
    replace_file(
        &dir.path().join("small.txt"),
        "198.51.100.1\n198.51.100.2\n",
    );
    replace_file(
        &dir.path().join("lenient.txt"),
        "203.0.113.7/24\nnot-an-address\n",
    );
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "shield:\n  deny_feeds:\n    - { path: big.txt, format: plain }\n    - { path: small.txt, format: plain }\n    - { path: lenient.txt, format: plain, strict: false }\n  allow_feeds:\n    - { path: allow.txt, format: plain }\n",
    )
    .expect("policy");
    replace_file(&dir.path().join("allow.txt"), "10.128.0.9\n");
    let cache = SourceCache::new();
    let compile = |what: &str| {
        let cached = compile_file_cached(&path, Some(&cache)).expect("valid policy");
        let plain = compile_file(&path).expect("valid policy");
        let (cached, plain) = (
            cached.shield.expect("shield"),
            plain.shield.expect("shield"),
        );
        assert_eq!(
            cached, plain,
            "{what}: the same policy with and without the cache"
        );
        cached
    };
    let first = compile("first");
    assert_eq!(cache.len(), (4, 4), "four feeds read, four sets aggregated");
    assert!(first.sets[0].prefixes.len() < 2_500, "big.txt aggregates");
    assert_eq!(first.sources[2].skipped, 1, "the lenient feed skips a line");

    // Nothing changed: every set is the same shared list, nothing read again.
    let again = compile("again");
    for (a, b) in first.sets.iter().zip(&again.sets) {
        assert!(Arc::ptr_eq(&a.prefixes, &b.prefixes), "{} shared", a.name);
    }
    assert_eq!(
        again.sources[2].warnings, first.sources[2].warnings,
        "warnings kept"
    );

    // small.txt changes: only its set is new.
    replace_file(
        &dir.path().join("small.txt"),
        "198.51.100.1\n198.51.100.3\n",
    );
    let third = compile("small changed");
    assert!(Arc::ptr_eq(
        &again.sets[0].prefixes,
        &third.sets[0].prefixes
    ));
    assert!(!Arc::ptr_eq(
        &again.sets[1].prefixes,
        &third.sets[1].prefixes
    ));
    assert!(Arc::ptr_eq(
        &again.sets[3].prefixes,
        &third.sets[3].prefixes
    ));

    // small.txt now lists a host big.txt lists too: big.txt is read from the cache but
    // aggregated again (that host must stay whole), and the result is still the plain one.
    replace_file(&dir.path().join("small.txt"), "10.128.0.4\n");
    let fourth = compile("shared host");
    assert!(fourth.sets[0]
        .prefixes
        .contains(&"10.128.0.4/32".parse().expect("cidr")));

    // The same content in a new file (another inode) is read again; same result.
    replace_file(&dir.path().join("big.txt"), &big.join("\n"));
    let fifth = compile("big rewritten");
    assert_eq!(fifth.sets[0].prefixes, fourth.sets[0].prefixes);

    // A bad edit fails the policy as without the cache; fixed, it loads again.
    replace_file(&dir.path().join("small.txt"), "10.128.0.4/33\n");
    let bad = compile_file_cached(&path, Some(&cache)).expect_err("bad feed");
    assert_eq!(
        bad.to_string(),
        compile_file(&path).expect_err("bad feed").to_string()
    );
    replace_file(&dir.path().join("small.txt"), "10.128.0.4\n");
    compile("fixed");

    // A feed the policy no longer names leaves the cache.
    std::fs::write(
        &path,
        "shield:\n  deny_feeds:\n    - { path: big.txt, format: plain }\n",
    )
    .expect("policy");
    compile("one feed");
    assert_eq!(cache.len(), (1, 1));
}
