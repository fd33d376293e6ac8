//! The policy file: YAML, read with positions so every problem is reported as
//! `FILE:LINE:COLUMN: message`.
//!
//! ```yaml
//! shield:
//!   mode: enforce            # or dry-run
//!   deny: [203.0.113.0/24, 2001:db8:bad::/48, 198.51.100.7]
//!   allow: [203.0.113.7]      # an exception inside a denied range
//!   management: [192.0.2.10]  # always passes, whatever the rules say
//!   rate_limit: { pps: 1000, burst: 2000 }
//!   sample_rate: 64           # one drop event per 64 drops; 0 = none
//!   events_per_second: 1000   # at most this many drop events a second per CPU; 0 = no cap
//!   ipv4_lookup: auto         # fast (DIR-24-8), trie, or auto: fast when it fits
//!   ipv6_lookup: auto         # fast (bitmap trie), trie, or auto: fast when it fits
//! ```
//!
//! ```yaml
//! tls:
//!   scope:                    # who is captured; nobody by default
//!     - exe: /usr/bin/curl
//!     - comm: openssl
//!     - cgroup: /sys/fs/cgroup/unified/app
//!     - pid: 1234
//!   max_bytes: 16384          # plaintext reported per SSL call (<= 262144)
//!   bytes_per_second: 0       # per-process budget; 0 = none
//! ```
//!
//! ```yaml
//! sentinel:
//!   protect: [/etc/ironclad, /usr/local/bin/full_firewall]
//!   monitor: [/etc/ssh/sshd_config]
//!   update_manager: /usr/bin/dpkg
//!   mode: enforce             # or monitor-only
//!   required: true            # false: start unprotected (with an alert) without BPF-LSM
//! ```
//!
//! Duplicate keys and unknown keys are errors; alias expansion is bounded (the YAML
//! reader's default budget).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use ironclad_core::abi::Action;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::egress::{
    CompiledEgress, ConnectRateLimit, EgressAction, EgressPolicy, EgressRuleSpec, Proto,
};
use crate::error::{ConfigError, Diagnostic, Origin, PolicyError};
use crate::feeds::{FeedFormat, Strictness};
use crate::fetch::{cache_data_path, FetchSpec, DEFAULT_REFRESH, DEFAULT_TIMEOUT};
use crate::firewall::{Direction as FwDirection, FirewallPolicy, FwProto, FwRule};
use crate::geo::is_country_code;
use crate::process::{ProcessPolicy, MAX_LINEAGE_DEPTH, MIN_CAPACITY};
use crate::sentinel::SentinelPolicy;
use crate::shield::{
    compile, CompiledShield, Entry, Ipv4Lookup, Mode, RateLimit, ShieldPolicy,
    DEFAULT_EVENTS_PER_SECOND, DEFAULT_SAMPLE_RATE, MAX_SAMPLE_RATE,
};
use crate::sources::{aggregate_sets_cached, default_name, FeedSpec, Loaded, SourceCache};
use crate::telemetry::{TelemetryPolicy, DEFAULT_INTERVAL_SECONDS};
use crate::tls::{
    TlsAttach, TlsPlacement, TlsPolicy, TlsScope, DEFAULT_MAX_BYTES, MAX_BYTES_LIMIT,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    shield: Option<Spanned<RawShield>>,
    tls: Option<RawTls>,
    egress: Option<RawEgress>,
    telemetry: Option<RawTelemetry>,
    sentinel: Option<RawSentinel>,
    processes: Option<RawProcesses>,
    firewall: Option<Spanned<crate::firewall_section::RawFirewall>>,
    nat: Option<Spanned<crate::nat::RawNat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcesses {
    args: Option<bool>,
    #[serde(default)]
    redact_args: Vec<Spanned<String>>,
    lineage_depth: Option<Spanned<u32>>,
    capacity: Option<Spanned<u32>>,
    retain_exited_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSentinel {
    #[serde(default)]
    protect: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    monitor: Vec<Spanned<PathBuf>>,
    update_manager: Option<Spanned<PathBuf>>,
    mode: Option<Spanned<String>>,
    required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    dns: bool,
    #[serde(default)]
    bandwidth: bool,
    interval_seconds: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    default: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawEgressRule>>,
    rate_limit: Option<Spanned<RawConnectRate>>,
    #[serde(default)]
    deny_domain_feeds: Vec<Spanned<RawDomainFeed>>,
    dns: Option<Spanned<RawDns>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDomainFeed {
    Path(PathBuf),
    Full(RawDomainFeedFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomainFeedFull {
    path: PathBuf,
    name: Option<String>,
    #[serde(default)]
    block_queries: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    grace_seconds: Option<u32>,
    max_ttl_seconds: Option<u32>,
    encrypted_resolvers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDomains {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnectRate {
    per_second: u32,
    burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgressRule {
    exe: Option<PathBuf>,
    parent_exe: Option<PathBuf>,
    ancestor_exe: Option<PathBuf>,
    ancestor_depth: Option<u32>,
    comm: Option<String>,
    uid: Option<u32>,
    cgroup: Option<PathBuf>,
    dst: Option<String>,
    // Spanned outside the untagged enum: inside it, positions are lost.
    dst_domain: Option<Spanned<RawDomains>>,
    ports: Option<RawPorts>,
    proto: Option<String>,
    action: String,
}

/// A port as written. Anything that is not a port still parses (`Negative`, `Other`),
/// so that the compiler says what is wrong with it, at its place, instead of the
/// parser's "data did not match any variant".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPort {
    Number(u64),
    Range(String),
    Negative(i64),
    Other(serde::de::IgnoredAny),
}

/// One port or a list (the list first: a list is never taken for one odd port).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPorts {
    List(Vec<RawPort>),
    One(RawPort),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    scope: Vec<Spanned<RawTlsScope>>,
    max_bytes: Option<Spanned<u32>>,
    bytes_per_second: Option<u32>,
    library: Option<PathBuf>,
    attach: Option<Spanned<String>>,
    placement: Option<Spanned<String>>,
    dlp: Option<Spanned<RawDlp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDlp {
    detectors: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    patterns: Vec<Spanned<RawDlpPattern>>,
    redact_data: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDlpPattern {
    name: Spanned<String>,
    regex: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsScope {
    exe: Option<PathBuf>,
    comm: Option<String>,
    cgroup: Option<PathBuf>,
    pid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShield {
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    management: Vec<Spanned<String>>,
    mode: Option<Spanned<String>>,
    rate_limit: Option<Spanned<RawRate>>,
    sample_rate: Option<Spanned<u32>>,
    events_per_second: Option<Spanned<u32>>,
    ipv4_lookup: Option<Spanned<String>>,
    ipv6_lookup: Option<Spanned<String>>,
    #[serde(default)]
    deny_feeds: Vec<Spanned<RawFeed>>,
    #[serde(default)]
    allow_feeds: Vec<Spanned<RawFeed>>,
    geoip_db: Option<Spanned<PathBuf>>,
    #[serde(default)]
    deny_countries: Vec<Spanned<String>>,
    #[serde(default)]
    allow_countries: Vec<Spanned<String>>,
    feed_cache: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    name: Option<String>,
    path: Option<PathBuf>,
    url: Option<String>,
    format: Spanned<String>,
    column: Option<String>,
    field: Option<String>,
    strict: Option<bool>,
    refresh: Option<Spanned<String>>,
    max_bytes: Option<u64>,
    timeout: Option<Spanned<String>>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    pps: u32,
    burst: u32,
}

/// A parsed, validated policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Config {
    /// The `shield` section, if present.
    pub shield: Option<ShieldPolicy>,
    /// The `tls` section, if present.
    pub tls: Option<TlsPolicy>,
    /// The `egress` section, if present.
    pub egress: Option<EgressPolicy>,
    /// The `telemetry` section, if present.
    pub telemetry: Option<TelemetryPolicy>,
    /// The `sentinel` section, if present.
    pub sentinel: Option<SentinelPolicy>,
    /// The `processes` section, if present.
    pub processes: Option<ProcessPolicy>,
    /// The `firewall` section, if present.
    pub firewall: Option<FirewallPolicy>,
}

/// A policy file compiled for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledConfig {
    /// The compiled `shield` section, if present.
    pub shield: Option<CompiledShield>,
    /// The `tls` section, if present.
    pub tls: Option<TlsPolicy>,
    /// The compiled `egress` section, if present.
    pub egress: Option<CompiledEgress>,
    /// The `telemetry` section, if present.
    pub telemetry: Option<TelemetryPolicy>,
    /// The `sentinel` section, if present.
    pub sentinel: Option<SentinelPolicy>,
    /// The `processes` section, if present.
    pub processes: Option<ProcessPolicy>,
    /// The `firewall` section, if present. When the policy also has a Shield with a
    /// management valve, its rules start with the valve (inbound from and outbound to
    /// `shield.management` accepted), so the valve beats every firewall rule.
    pub firewall: Option<FirewallPolicy>,
    /// What compiles but is probably a mistake (a `/0` deny with no management
    /// valve: the host locks its operator out), as `FILE:LINE:COLUMN: warning: ...`.
    /// `check` prints them; the daemon logs them.
    pub warnings: Vec<Diagnostic>,
}

/// A file a compiled policy reads, whose content decides what is enforced
/// ([`CompiledConfig::files_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadFile {
    /// What reads it, as the policy names it (`shield feed spamhaus`,
    /// `egress.deny_domain_feeds malware`, `firewall.ids.rules`).
    pub what: String,
    /// The file, as the policy resolved it (relative paths from the policy's directory).
    pub path: PathBuf,
}

impl CompiledConfig {
    /// Every file this policy reads whose content decides what is enforced: the
    /// Shield's feeds (a fetched feed's cached copy and its CA file) and GeoIP
    /// databases, the identity firewall's domain feeds, the IDS's rule files. One walk
    /// over the whole compiled policy, for every section: a signed bundle refuses a
    /// policy that reads any of them from outside the bundle
    /// ([`crate::bundle::outside_paths`]). The walk names every section, so a section
    /// added to the policy does not compile until it says what it reads here.
    pub fn files_read(&self) -> Vec<ReadFile> {
        let CompiledConfig {
            shield,
            tls,
            egress,
            telemetry,
            sentinel,
            processes,
            firewall,
            warnings: _,
        } = self;
        let mut out = Vec::new();
        let mut add = |what: String, path: &Path| {
            out.push(ReadFile {
                what,
                path: path.to_path_buf(),
            });
        };
        for source in shield.iter().flat_map(|s| &s.sources) {
            match &source.kind {
                crate::sources::SourceKind::Feed { path, fetch, .. } => {
                    add(format!("shield feed {}", source.name), path);
                    if let Some(ca) = fetch.as_ref().and_then(|f| f.ca_file.as_ref()) {
                        add(format!("shield feed {} ca_file", source.name), ca);
                    }
                }
                crate::sources::SourceKind::Country { db, .. } => {
                    add(format!("shield country {} database", source.name), db);
                }
                crate::sources::SourceKind::Everything => {}
            }
        }
        for feed in egress.iter().flat_map(|e| &e.domain_feeds) {
            add(
                format!("egress.deny_domain_feeds {}", feed.name),
                &feed.path,
            );
        }
        for file in firewall
            .iter()
            .filter_map(|f| f.ids.as_ref())
            .flat_map(|i| &i.rule_files)
        {
            add("firewall.ids.rules".to_string(), file);
        }
        // These read no file: TLS capture attaches to its library (the code it
        // watches, not policy data) and its DLP detectors are in the policy; the
        // Sentinel's paths are what it protects; telemetry and the process cache have
        // only settings.
        let _ = (tls, telemetry, sentinel, processes);
        out
    }
}

pub(crate) fn position(location: &Location) -> Option<(u64, u64)> {
    let (line, column) = (location.line(), location.column());
    (line > 0).then_some((line, column))
}

fn diagnostic(path: &Path, at: Option<(u64, u64)>, message: String) -> Diagnostic {
    let (line, column) = at.unwrap_or((0, 0));
    Diagnostic {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Parses an address (`192.0.2.1`, a /32 or /128) or a CIDR (`192.0.2.0/24`).
///
/// An IPv4-mapped IPv6 prefix (`::ffff:192.0.2.1`, `::ffff:10.0.0.0/104`) is read as the
/// IPv4 prefix it stands for: packets carry IPv4 sources as IPv4, so the IPv6 form
/// would never match.
///
/// ```
/// use ironclad_policy::config::parse_net;
/// assert_eq!(parse_net("::ffff:10.251.0.2/128"), parse_net("10.251.0.2/32"));
/// assert_eq!(parse_net("::ffff:10.0.0.0/104").map(|n| n.to_string()).as_deref(), Some("10.0.0.0/8"));
/// assert_eq!(parse_net("2001:db8::/32").map(|n| n.is_ipv6()), Some(true));
/// ```
pub fn parse_net(text: &str) -> Option<IpNetwork> {
    let text = text.trim();
    let net = if text.contains('/') {
        text.parse().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNetwork::from)
    }?;
    Some(unmap_v4(net))
}

/// The IPv4 prefix an IPv4-mapped IPv6 prefix (`::ffff:0:0/96` and longer) stands for;
/// any other prefix unchanged.
pub fn unmap_v4(net: IpNetwork) -> IpNetwork {
    match net {
        IpNetwork::V6(v6) if v6.prefix() >= 96 => match v6.ip().to_ipv4_mapped() {
            Some(v4) => {
                ipnetwork::Ipv4Network::new(v4, v6.prefix() - 96).map_or(net, IpNetwork::V4)
            }
            None => net,
        },
        _ => net,
    }
}

fn entries(name: &str, list: &[Spanned<String>], problems: &mut Vec<PolicyError>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (index, item) in list.iter().enumerate() {
        let origin = Origin {
            field: format!("shield.{name}[{index}]"),
            at: position(&item.referenced),
        };
        match parse_net(&item.value) {
            Some(net) => out.push(Entry { net, origin }),
            None => problems.push(PolicyError::Invalid {
                origin,
                message: format!(
                    "`{}` is not an IP address or CIDR",
                    crate::error::excerpt(&item.value, 80)
                ),
            }),
        }
    }
    out
}

/// The feed entries of `shield.<list>`, checked, with paths resolved against `base`.
fn feed_specs(
    list_name: &str,
    list: &[Spanned<RawFeed>],
    action: Action,
    (base, cache): (&Path, &Path),
    problems: &mut Vec<PolicyError>,
) -> Vec<FeedSpec> {
    let mut specs = Vec::new();
    for (index, item) in list.iter().enumerate() {
        let origin = Origin {
            field: format!("shield.{list_name}[{index}]"),
            at: position(&item.referenced),
        };
        let f = &item.value;
        let mut bad = |message: String| {
            problems.push(PolicyError::Invalid {
                origin: origin.clone(),
                message,
            });
        };
        let (path, url) = match (&f.path, &f.url) {
            (Some(path), None) => (base.join(path), None),
            (None, Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
                let Some(name) = f.name.clone().or_else(|| url_name(url)) else {
                    bad("give the feed a `name` (its URL has no file name)".to_string());
                    continue;
                };
                (cache_data_path(cache, &name), Some(url.clone()))
            }
            (None, Some(url)) => {
                bad(format!("`{url}` is not an https:// or http:// URL"));
                continue;
            }
            _ => {
                bad("give exactly one of `path` and `url`".to_string());
                continue;
            }
        };
        if url.is_none() && (f.max_bytes.is_some() || f.timeout.is_some() || f.ca_file.is_some()) {
            bad("`max_bytes`, `timeout` and `ca_file` are for feeds with a `url`".to_string());
            continue;
        }
        let format = match (f.format.value.as_str(), &f.column, &f.field) {
            ("csv", Some(column), None) => FeedFormat::Csv {
                column: column.clone(),
            },
            ("csv", None, _) => {
                bad(
                    "a `csv` feed needs `column`: the header name of the address column"
                        .to_string(),
                );
                continue;
            }
            ("json", None, field) => FeedFormat::Json {
                field: field.clone(),
            },
            (name, None, None) => match name {
                "plain" => FeedFormat::Plain,
                "spamhaus" => FeedFormat::Spamhaus,
                "feodo" => FeedFormat::Feodo,
                "firehol" => FeedFormat::Firehol,
                other => {
                    problems.push(PolicyError::Invalid {
                        origin: Origin {
                            field: format!("shield.{list_name}[{index}].format"),
                            at: position(&f.format.referenced),
                        },
                        message: format!(
                            "`{other}` is not a feed format; use one of {}",
                            FeedFormat::NAMES.join(", ")
                        ),
                    });
                    continue;
                }
            },
            (name, _, _) => {
                bad(format!(
                    "`column` is for `csv` feeds and `field` for `json` feeds, not `{name}`"
                ));
                continue;
            }
        };
        let timeout = match &f.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => match humantime::parse_duration(&t.value) {
                Ok(d) if d >= std::time::Duration::from_millis(100) => d,
                _ => {
                    problems.push(PolicyError::Invalid {
                        origin: Origin {
                            field: format!("shield.{list_name}[{index}].timeout"),
                            at: position(&t.referenced),
                        },
                        message: format!("`{}` is not a duration (e.g. `30s`)", t.value),
                    });
                    continue;
                }
            },
        };
        let refresh = match &f.refresh {
            None if url.is_some() => Some(DEFAULT_REFRESH),
            None => None,
            Some(r) => match humantime::parse_duration(&r.value) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => Some(d),
                _ => {
                    problems.push(PolicyError::Invalid {
                        origin: Origin {
                            field: format!("shield.{list_name}[{index}].refresh"),
                            at: position(&r.referenced),
                        },
                        message: format!(
                            "`{}` is not a duration of at least 1s (e.g. `30m`, `6h`)",
                            r.value
                        ),
                    });
                    continue;
                }
            },
        };
        let name = match (&url, f.name.clone()) {
            (_, Some(name)) => name,
            (Some(url), None) => url_name(url).unwrap_or_default(),
            (None, None) => match default_name(&path) {
                Some(name) => name,
                None => {
                    bad("give the feed a `name`".to_string());
                    continue;
                }
            },
        };
        let strictness = if f.strict == Some(false) {
            Strictness::Lenient
        } else {
            Strictness::Strict
        };
        let fetch = url.map(|url| FetchSpec {
            name: name.clone(),
            url,
            format: format.clone(),
            strictness,
            max_bytes: f.max_bytes.unwrap_or(crate::fetch::DEFAULT_MAX_BYTES),
            timeout,
            ca_file: f.ca_file.as_ref().map(|c| base.join(c)),
            cache: cache.to_path_buf(),
        });
        specs.push(FeedSpec {
            name,
            path,
            format,
            strictness,
            refresh,
            action,
            origin,
            fetch,
        });
    }
    specs
}

/// Where fetched feeds are cached unless `shield.feed_cache` says otherwise.
pub const DEFAULT_FEED_CACHE: &str = "/var/lib/ironclad/feeds";

/// A feed's default name from its URL: the last path segment without extension.
fn url_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    if last.contains(':') || last.is_empty() {
        return None;
    }
    default_name(Path::new(last))
}

/// Country codes of `shield.<list>`, checked.
fn country_codes(
    list_name: &str,
    list: &[Spanned<String>],
    problems: &mut Vec<PolicyError>,
) -> Vec<(String, Origin)> {
    let mut codes: Vec<(String, Origin)> = Vec::new();
    for (index, item) in list.iter().enumerate() {
        let origin = Origin {
            field: format!("shield.{list_name}[{index}]"),
            at: position(&item.referenced),
        };
        let code = item.value.trim();
        if !is_country_code(code) {
            problems.push(PolicyError::Invalid {
                origin,
                message: format!(
                    "`{code}` is not an ISO 3166-1 alpha-2 country code (two capitals, e.g. `NL`)"
                ),
            });
        } else if !codes.iter().any(|(c, _)| c == code) {
            codes.push((code.to_string(), origin));
        }
    }
    codes
}

/// Reads the feeds and countries of a `shield` section into prefix sets.
fn load_sources(
    shield: &RawShield,
    base: &Path,
    problems: &mut Vec<PolicyError>,
    sources: Option<&SourceCache>,
) -> Loaded {
    let cache = base.join(
        shield
            .feed_cache
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_FEED_CACHE)),
    );
    let dirs = (base, cache.as_path());
    let mut specs = feed_specs(
        "deny_feeds",
        &shield.deny_feeds,
        Action::Deny,
        dirs,
        problems,
    );
    specs.extend(feed_specs(
        "allow_feeds",
        &shield.allow_feeds,
        Action::Allow,
        dirs,
        problems,
    ));
    let no_countries = shield.deny_countries.is_empty() && shield.allow_countries.is_empty();
    let deny = country_codes("deny_countries", &shield.deny_countries, problems);
    let allow = country_codes("allow_countries", &shield.allow_countries, problems);
    let mut loaded = Loaded::default();
    loaded.feeds_cached(&specs, sources);
    let countries = match (deny.is_empty(), allow.is_empty()) {
        (true, true) => None,
        (false, true) => Some((deny, false)),
        (true, false) => Some((allow, true)),
        (false, false) => {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "shield.allow_countries".into(),
                    at: shield.allow_countries.first().and_then(|c| position(&c.referenced)),
                },
                message: "use either `deny_countries` or `allow_countries` (allow-list mode denies every other country)".to_string(),
            });
            None
        }
    };
    if let Some((codes, allow_list)) = countries {
        match &shield.geoip_db {
            Some(db) => {
                let origin = Origin {
                    field: "shield.geoip_db".into(),
                    at: position(&db.referenced),
                };
                loaded.countries(&base.join(&db.value), &codes, allow_list, &origin);
            }
            None => problems.push(PolicyError::Invalid {
                origin: codes[0].1.clone(),
                message: "countries need `shield.geoip_db`: the path of a GeoLite2/GeoIP2 Country database (.mmdb)".to_string(),
            }),
        }
    } else if let Some(db) = &shield.geoip_db {
        if no_countries && !base.join(&db.value).exists() {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "shield.geoip_db".into(),
                    at: position(&db.referenced),
                },
                message: format!("`{}` does not exist", db.value.display()),
            });
        }
    }
    loaded
}

/// Edit distance between two short words (insertions, deletions, substitutions and
/// transpositions of neighbours).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev2: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, row);
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, when it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The YAML reader's message made for a person: the position (already in front) is
/// dropped from the end, and an unknown key gets a "did you mean" hint.
fn explain(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(", column ") => &message[..at],
        _ => message,
    };
    // The reader's advice is for the program that calls it, not for the person who
    // wrote the policy: say what is wrong in the policy's own terms.
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set ").next().unwrap_or(key);
        return format!("duplicate key `{key}`: each key may appear once here");
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("missing key {field}");
    }
    let plain = [
        (
            "expected sequence start",
            "expected a list (`[a, b]` or `- a` lines)",
        ),
        (
            "expected mapping start",
            "expected a mapping (`key: value` lines)",
        ),
        (
            "expected string scalar",
            "expected a single value (a string)",
        ),
        ("invalid boolean", "expected `true` or `false`"),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "invalid u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
    ];
    if let Some((_, better)) = plain.iter().find(|(raw, _)| message == *raw) {
        return (*better).to_string();
    }
    if let Some(what) = message.strip_prefix("budget breached: ") {
        // The reader's budget (its defaults, kept: they bound what a hostile file can
        // make the daemon allocate), named instead of its Debug form.
        let budget = serde_saphyr::Budget::default();
        let limit = match what.split_whitespace().next().unwrap_or_default() {
            "Nodes" => format!("more than {} YAML values", budget.max_nodes),
            "Events" => format!("more than {} YAML events", budget.max_events),
            "Depth" => format!("nesting deeper than {} levels", budget.max_depth),
            "Aliases" | "Anchors" => format!(
                "more than {} aliases or anchors",
                budget.max_aliases.max(budget.max_anchors)
            ),
            "ScalarBytes" => format!(
                "more than {} bytes of values",
                budget.max_total_scalar_bytes
            ),
            _ => "more than the YAML reader's limits".to_string(),
        };
        return format!(
            "the policy is too large for the YAML reader ({limit}): put long prefix lists in a \
             feed file (`shield.deny_feeds`)"
        );
    }
    // Other hints addressed to programmers (`use Option<...>`, `... in Options`) are
    // cut off.
    let message = ["; use Option<", ", use Option<", " in Options", ", set "]
        .iter()
        .filter_map(|hint| message.find(hint))
        .min()
        .map_or(message, |at| &message[..at]);
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((key, rest)) = rest.split_once('`') else {
        return message.to_string();
    };
    let expected: Vec<&str> = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))
        .map(|list| {
            list.split(", ")
                .map(|k| k.trim_matches('`'))
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    match did_you_mean(key, &expected) {
        Some(hint) => format!(
            "unknown key `{key}`; did you mean `{hint}`? (keys here: {})",
            expected.join(", ")
        ),
        None if expected.is_empty() => format!("unknown key `{key}`"),
        None => format!("unknown key `{key}` (keys here: {})", expected.join(", ")),
    }
}

/// Parses policy `text` (read from `path`, used in messages) without compiling it.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let (config, problems, file_problems, _) = parse_inner(text, path, None, Target::ThisHost)?;
    if problems.is_empty() && file_problems.is_empty() {
        Ok(config)
    } else {
        Err(to_config_error(path, problems, file_problems))
    }
}

/// The policy as far as it could be read (bad entries left out), and the problems.
/// Also the problems found in the files the policy refers to (feeds, databases), each
/// with that file's own path and position.
/// The last element: positions of fields whose compile errors carry only the field name
/// (section-level limits, the IPv4 lookup), so those errors are located too.
type Parsed = (Config, Vec<PolicyError>, Vec<Diagnostic>, Positions);

/// Field name → line and column.
type Positions = std::collections::BTreeMap<String, (u64, u64)>;

pub(crate) fn parse_port(port: &RawPort) -> Result<(u16, u16), String> {
    let one = |n: u64| u16::try_from(n).ok().filter(|p| *p > 0);
    match port {
        RawPort::Number(n) => one(*n)
            .map(|p| (p, p))
            .ok_or_else(|| format!("port {n} is out of range 1-65535")),
        RawPort::Range(text) => {
            let (lo, hi) = text.split_once('-').unwrap_or((text, text));
            let parse = |s: &str| s.trim().parse::<u64>().ok().and_then(one);
            match (parse(lo), parse(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                _ => Err(format!(
                    "`{text}` is not a port or a range `LO-HI` within 1-65535"
                )),
            }
        }
        RawPort::Negative(n) => Err(format!("port {n} is out of range 1-65535")),
        RawPort::Other(_) => {
            Err("not a port (1-65535), a range `\"LO-HI\"` or a list of them".to_string())
        }
    }
}

fn parse_egress(
    raw: &RawEgress,
    base: &Path,
    problems: &mut Vec<PolicyError>,
    file_problems: &mut Vec<Diagnostic>,
) -> EgressPolicy {
    let default = match &raw.default {
        None => EgressAction::Allow,
        Some(d) => match d.value.as_str() {
            "allow" => EgressAction::Allow,
            "deny" => EgressAction::Deny,
            other => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: "egress.default".into(),
                        at: position(&d.referenced),
                    },
                    message: format!("`{other}` is not a default; use `allow` or `deny`"),
                });
                EgressAction::Allow
            }
        },
    };
    let mut rules = Vec::new();
    for (index, item) in raw.rules.iter().enumerate() {
        let origin = Origin {
            field: format!("egress.rules[{index}]"),
            at: position(&item.referenced),
        };
        let r = &item.value;
        let mut bad = |message: String| {
            problems.push(PolicyError::Invalid {
                origin: origin.clone(),
                message,
            })
        };
        let action = match r.action.as_str() {
            "allow" => EgressAction::Allow,
            "deny" => EgressAction::Deny,
            "log" => EgressAction::Log,
            other => {
                bad(format!(
                    "`{other}` is not an action; use `allow`, `deny` or `log`"
                ));
                continue;
            }
        };
        let proto = match r.proto.as_deref() {
            None | Some("any") => Proto::Any,
            Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some(other) => {
                bad(format!(
                    "`{other}` is not a protocol; use `tcp`, `udp` or `any`"
                ));
                continue;
            }
        };
        let dst = match &r.dst {
            None => None,
            Some(text) => match parse_net(text) {
                Some(net) => Some(net),
                None => {
                    bad(format!(
                        "`{}` is not an IP address or CIDR",
                        crate::error::excerpt(text, 80)
                    ));
                    continue;
                }
            },
        };
        let domains_at = r.dst_domain.as_ref().and_then(|d| position(&d.referenced));
        let raw_domains: Vec<&String> = match r.dst_domain.as_ref().map(|d| &d.value) {
            None => Vec::new(),
            Some(RawDomains::One(d)) => vec![d],
            Some(RawDomains::List(list)) => list.iter().collect(),
        };
        let mut dst_domain = Vec::new();
        let mut bad_at = Vec::new();
        let mut ok = true;
        if matches!(r.dst_domain.as_ref().map(|d| &d.value), Some(RawDomains::List(l)) if l.is_empty())
        {
            bad("`dst_domain` is an empty list: name at least one domain".to_string());
            continue;
        }
        for (i, d) in raw_domains.iter().enumerate() {
            match d.parse::<crate::domains::DomainPattern>() {
                Ok(p) => dst_domain.push(p),
                Err(message) => {
                    let field = match r.dst_domain.as_ref().map(|d| &d.value) {
                        Some(RawDomains::List(_)) => format!("dst_domain[{i}]"),
                        _ => "dst_domain".to_string(),
                    };
                    bad_at.push((field, domains_at, message));
                    ok = false;
                }
            }
        }
        if !ok {
            for (field, at, message) in bad_at {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: format!("{}.{field}", origin.field),
                        at,
                    },
                    message,
                });
            }
            continue;
        }
        let raw_ports: Vec<&RawPort> = match &r.ports {
            None => Vec::new(),
            Some(RawPorts::One(p)) => vec![p],
            Some(RawPorts::List(list)) => list.iter().collect(),
        };
        let mut ports = Vec::new();
        for p in raw_ports {
            match parse_port(p) {
                Ok(range) => ports.push(range),
                Err(message) => {
                    bad(message);
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let ancestor = match (&r.parent_exe, &r.ancestor_exe, r.ancestor_depth) {
            (Some(_), Some(_), _) => {
                bad("`parent_exe` and `ancestor_exe` together: use one (the parent is the first ancestor)".to_string());
                continue;
            }
            (Some(_), None, Some(_)) => {
                bad("`ancestor_depth` goes with `ancestor_exe` (`parent_exe` looks at the parent only)".to_string());
                continue;
            }
            (None, None, Some(_)) => {
                bad("`ancestor_depth` without `ancestor_exe`".to_string());
                continue;
            }
            (Some(parent), None, None) => Some((parent.clone(), 1)),
            (None, Some(ancestor), depth) => {
                let depth = depth.unwrap_or(u32::from(ironclad_core::abi::EGRESS_MAX_ANCESTORS));
                match u8::try_from(depth) {
                    Ok(d) if (1..=ironclad_core::abi::EGRESS_MAX_ANCESTORS).contains(&d) => {
                        Some((ancestor.clone(), d))
                    }
                    _ => {
                        bad(format!(
                            "ancestor_depth {depth} is outside 1..={} (the ancestors the kernel walks)",
                            ironclad_core::abi::EGRESS_MAX_ANCESTORS
                        ));
                        continue;
                    }
                }
            }
            (None, None, None) => None,
        };
        rules.push(EgressRuleSpec {
            exe: r.exe.clone(),
            ancestor,
            comm: r.comm.clone(),
            uid: r.uid,
            cgroup: r.cgroup.clone(),
            dst,
            dst_domain,
            ports,
            proto,
            action,
            origin,
        });
    }
    let rate_limit = raw.rate_limit.as_ref().and_then(|r| {
        if r.value.per_second == 0 || r.value.burst == 0 {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "egress.rate_limit".into(),
                    at: position(&r.referenced),
                },
                message: "per_second and burst must both be at least 1".to_string(),
            });
            return None;
        }
        Some(ConnectRateLimit {
            per_second: r.value.per_second,
            burst: r.value.burst,
        })
    });
    let mut domain_feeds: Vec<crate::domains::DomainFeed> = Vec::new();
    for (index, item) in raw.deny_domain_feeds.iter().enumerate() {
        let origin = Origin {
            field: format!("egress.deny_domain_feeds[{index}]"),
            at: position(&item.referenced),
        };
        let (path, name, block_queries) = match &item.value {
            RawDomainFeed::Path(p) => (p, None, false),
            RawDomainFeed::Full(f) => (&f.path, f.name.clone(), f.block_queries),
        };
        let path = base.join(path);
        let name = name.unwrap_or_else(|| {
            path.file_stem().map_or_else(
                || format!("feed{index}"),
                |s| s.to_string_lossy().into_owned(),
            )
        });
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems.push(PolicyError::Invalid {
                origin,
                message: format!(
                    "`{}` is not a feed name (letters, digits, `-`, `_`, `.`: it labels metrics)",
                    crate::error::excerpt(&name, 40)
                ),
            });
            continue;
        }
        if let Some(other) = domain_feeds.iter().position(|f| f.name == name) {
            problems.push(PolicyError::Invalid {
                origin,
                message: format!(
                    "the feed name `{name}` is also egress.deny_domain_feeds[{other}]'s; give one a `name:`"
                ),
            });
            continue;
        }
        let bytes = match crate::feeds::read_feed_bytes(&path) {
            Ok(b) => b,
            Err(e) => {
                file_problems.extend(e.diagnostics);
                continue;
            }
        };
        match crate::domains::parse_feed(&bytes) {
            Ok(names) => domain_feeds.push(crate::domains::DomainFeed {
                name,
                path,
                block_queries,
                names,
            }),
            Err(errors) => {
                let shown = errors.len().min(20);
                for (line, column, message) in errors.iter().take(shown) {
                    file_problems.push(diagnostic(&path, Some((*line, *column)), message.clone()));
                }
                if errors.len() > shown {
                    file_problems.push(diagnostic(
                        &path,
                        None,
                        format!("{} more bad lines not shown", errors.len() - shown),
                    ));
                }
            }
        }
    }
    let mut dns = crate::domains::DomainSettings::default();
    if let Some(d) = &raw.dns {
        let at = position(&d.referenced);
        for (field, given, target) in [
            (
                "grace_seconds",
                d.value.grace_seconds,
                &mut dns.grace_seconds,
            ),
            (
                "max_ttl_seconds",
                d.value.max_ttl_seconds,
                &mut dns.max_ttl_seconds,
            ),
        ] {
            match given {
                Some(v) if v > crate::domains::MAX_SECONDS => problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: format!("egress.dns.{field}"),
                        at,
                    },
                    message: format!(
                        "{v} is more than a week ({} seconds)",
                        crate::domains::MAX_SECONDS
                    ),
                }),
                Some(v) => *target = v,
                None => {}
            }
        }
        if let Some(list) = &d.value.encrypted_resolvers {
            dns.encrypted_resolvers.clear();
            for (i, text) in list.iter().enumerate() {
                match text.parse::<std::net::IpAddr>() {
                    Ok(a) => dns.encrypted_resolvers.push(a),
                    Err(_) => problems.push(PolicyError::Invalid {
                        origin: Origin {
                            field: format!("egress.dns.encrypted_resolvers[{i}]"),
                            at,
                        },
                        message: format!(
                            "`{}` is not an IP address",
                            crate::error::excerpt(text, 80)
                        ),
                    }),
                }
            }
            if dns.encrypted_resolvers.len() > ironclad_core::abi::DNS_ENCRYPTED {
                problems.push(PolicyError::TooMany {
                    origin: Origin {
                        field: "egress.dns.encrypted_resolvers".into(),
                        at,
                    },
                    count: dns.encrypted_resolvers.len(),
                    limit: u32::try_from(ironclad_core::abi::DNS_ENCRYPTED).unwrap_or(u32::MAX),
                });
            }
        }
        if dns.max_ttl_seconds == 0 {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "egress.dns.max_ttl_seconds".into(),
                    at,
                },
                message: "must be at least 1 (0 would open nothing)".to_string(),
            });
        }
    }
    EgressPolicy {
        default,
        rules,
        rate_limit,
        domain_feeds,
        dns,
    }
}

fn parse_tls(raw: &RawTls, problems: &mut Vec<PolicyError>) -> TlsPolicy {
    let mut scope = Vec::new();
    for (index, item) in raw.scope.iter().enumerate() {
        let origin = Origin {
            field: format!("tls.scope[{index}]"),
            at: position(&item.referenced),
        };
        let s = &item.value;
        let given = [
            s.exe.is_some(),
            s.comm.is_some(),
            s.cgroup.is_some(),
            s.pid.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            problems.push(PolicyError::Invalid {
                origin,
                message: "give exactly one of `exe`, `comm`, `cgroup`, `pid`".to_string(),
            });
            continue;
        }
        let entry = match (&s.exe, &s.comm, &s.cgroup, s.pid) {
            (Some(exe), ..) if exe.is_absolute() => TlsScope::Exe(exe.clone()),
            (Some(exe), ..) => {
                problems.push(PolicyError::Invalid {
                    origin,
                    message: format!("`{}` is not an absolute path", exe.display()),
                });
                continue;
            }
            (_, Some(comm), ..) if !comm.is_empty() && comm.len() <= 15 => {
                TlsScope::Comm(comm.clone())
            }
            (_, Some(comm), ..) => {
                problems.push(PolicyError::Invalid {
                    origin,
                    message: format!("`{comm}` is not a command name (1 to 15 bytes)"),
                });
                continue;
            }
            (_, _, Some(cgroup), _) => TlsScope::Cgroup(cgroup.clone()),
            (.., Some(pid)) => TlsScope::Pid(pid),
            _ => continue,
        };
        scope.push(entry);
    }
    let max_bytes = match &raw.max_bytes {
        Some(m) if m.value == 0 || m.value > MAX_BYTES_LIMIT => {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "tls.max_bytes".into(),
                    at: position(&m.referenced),
                },
                message: format!("must be between 1 and {MAX_BYTES_LIMIT}"),
            });
            DEFAULT_MAX_BYTES
        }
        Some(m) => m.value,
        None => DEFAULT_MAX_BYTES,
    };
    let attach = one_of(
        raw.attach.as_ref(),
        "tls.attach",
        "an attach mode",
        (
            &[
                ("library", TlsAttach::Library),
                ("process", TlsAttach::PerProcess),
            ],
            TlsAttach::Library,
        ),
        problems,
    );
    let placement = one_of(
        raw.placement.as_ref(),
        "tls.placement",
        "a placement",
        (
            &[
                ("auto", TlsPlacement::Auto),
                ("symbols", TlsPlacement::Symbols),
            ],
            TlsPlacement::Auto,
        ),
        problems,
    );
    let dlp = raw.dlp.as_ref().map(|d| parse_dlp(d, problems));
    TlsPolicy {
        scope,
        max_bytes,
        bytes_per_second: raw.bytes_per_second.unwrap_or(0),
        library: raw.library.clone(),
        attach,
        placement,
        dlp,
    }
}

/// `tls.dlp`: each detector named, each pattern compiled here (so `check` refuses a
/// bad one at its line), all of them located.
fn parse_dlp(raw: &Spanned<RawDlp>, problems: &mut Vec<PolicyError>) -> crate::tls::DlpPolicy {
    use crate::dlp::Detector;
    let mut policy = crate::tls::DlpPolicy::default();
    let d = &raw.value;
    if let Some(names) = &d.detectors {
        policy.detectors.clear();
        for (i, name) in names.iter().enumerate() {
            match Detector::from_name(&name.value) {
                Some(det) => policy.detectors.push(det),
                None => problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: format!("tls.dlp.detectors[{i}]"),
                        at: position(&name.referenced),
                    },
                    message: format!(
                        "`{}` is not a detector: {}",
                        crate::error::excerpt(&name.value, 40),
                        Detector::ALL.map(Detector::name).join(", ")
                    ),
                }),
            }
        }
    }
    for (i, p) in d.patterns.iter().enumerate() {
        let pair = (p.value.name.value.clone(), p.value.regex.value.clone());
        if let Err(e) = crate::dlp::Dlp::new(&[], std::slice::from_ref(&pair)) {
            let at = match e {
                crate::dlp::DlpError::Name(_) => position(&p.value.name.referenced),
                _ => position(&p.value.regex.referenced),
            };
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: format!("tls.dlp.patterns[{i}]"),
                    at,
                },
                message: e.to_string(),
            });
            continue;
        }
        policy.patterns.push(pair);
    }
    if let Some(r) = d.redact_data {
        policy.redact_data = r;
    }
    policy
}

/// The value of a key that takes one of a few words (`choices`; `default` when the key
/// is absent); any other word is a located problem naming the choices.
fn one_of<T: Copy>(
    raw: Option<&Spanned<String>>,
    field: &str,
    what: &str,
    (choices, default): (&[(&str, T)], T),
    problems: &mut Vec<PolicyError>,
) -> T {
    let Some(given) = raw else {
        return default;
    };
    if let Some((_, value)) = choices.iter().find(|(word, _)| *word == given.value) {
        return *value;
    }
    let words: Vec<String> = choices.iter().map(|(w, _)| format!("`{w}`")).collect();
    problems.push(PolicyError::Invalid {
        origin: Origin {
            field: field.into(),
            at: position(&given.referenced),
        },
        message: format!(
            "`{}` is not {what}; use {}",
            given.value,
            words.join(" or ")
        ),
    });
    default
}

fn parse_sentinel(raw: &RawSentinel, problems: &mut Vec<PolicyError>) -> SentinelPolicy {
    let mut absolute = |field: String, item: &Spanned<PathBuf>| -> Option<PathBuf> {
        if item.value.is_absolute() {
            Some(item.value.clone())
        } else {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field,
                    at: position(&item.referenced),
                },
                message: format!("`{}` is not an absolute path", item.value.display()),
            });
            None
        }
    };
    let mut paths = |name: &str, list: &[Spanned<PathBuf>]| -> Vec<PathBuf> {
        list.iter()
            .enumerate()
            .filter_map(|(i, item)| absolute(format!("sentinel.{name}[{i}]"), item))
            .collect()
    };
    let protect = paths("protect", &raw.protect);
    let monitor = paths("monitor", &raw.monitor);
    let update_manager = raw
        .update_manager
        .as_ref()
        .and_then(|m| absolute("sentinel.update_manager".to_string(), m));
    let monitor_only = match &raw.mode {
        None => false,
        Some(m) => match m.value.as_str() {
            "enforce" => false,
            "monitor-only" => true,
            other => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: "sentinel.mode".into(),
                        at: position(&m.referenced),
                    },
                    message: format!("`{other}` is not a mode; use `enforce` or `monitor-only`"),
                });
                false
            }
        },
    };
    SentinelPolicy {
        protect,
        monitor,
        update_manager,
        monitor_only,
        required: raw.required.unwrap_or(true),
    }
}

/// How many unknown keys one read reports before it stops looking for more.
const MAX_UNKNOWN_KEYS: usize = 50;

/// `text` with the unknown key at `at` and its block value (the lines below it that are
/// indented deeper) blanked out, line numbers kept; `None` where that cannot be done
/// safely (a key inside a flow mapping `{...}`).
fn without_key(text: &str, (line, column): (u64, u64)) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let key_line = *lines.get(index)?;
    let start = key_line
        .char_indices()
        .nth(usize::try_from(column).ok()?.checked_sub(1)?)
        .map(|(i, _)| i)?;
    if key_line[..start].contains(['{', '[']) {
        return None;
    }
    let indent = key_line[..start].chars().count();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    out[index] = format!(
        "{}{}",
        &key_line[..start],
        " ".repeat(key_line[start..].chars().count())
    );
    for (i, l) in lines.iter().enumerate().skip(index + 1) {
        let deeper = l.chars().take_while(|c| *c == ' ').count() > indent;
        if !(deeper || l.trim().is_empty()) {
            break;
        }
        out[i] = String::new();
    }
    Some(out.join("\n"))
}

/// Reads the raw YAML. Every unknown key is reported (not only the first): each one
/// found is blanked out and the text read again.
fn read_raw(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut unknown: Vec<Diagnostic> = Vec::new();
    let mut text = std::borrow::Cow::Borrowed(text);
    loop {
        let e = match serde_saphyr::from_str_with_options::<RawConfig>(&text, options.clone()) {
            Ok(raw) if unknown.is_empty() => return Ok(raw),
            Ok(_) => {
                return Err(ConfigError {
                    diagnostics: unknown,
                })
            }
            Err(e) => e,
        };
        let at = e.location().and_then(|l| position(&l));
        let message = e.to_string();
        let message = explain(message.lines().next().unwrap_or_default());
        let is_unknown = message.starts_with("unknown key `");
        if !unknown.is_empty() && !is_unknown {
            // Whatever else is wrong may be an artefact of the blanking: fix the
            // unknown keys first.
            return Err(ConfigError {
                diagnostics: unknown,
            });
        }
        unknown.push(diagnostic(path, at, message));
        let next = match at {
            Some(at) if is_unknown && unknown.len() < MAX_UNKNOWN_KEYS => without_key(&text, at),
            _ => None,
        };
        match next {
            Some(next) => text = std::borrow::Cow::Owned(next),
            None => {
                return Err(ConfigError {
                    diagnostics: unknown,
                })
            }
        }
    }
}

fn parse_processes(raw: &RawProcesses, problems: &mut Vec<PolicyError>) -> ProcessPolicy {
    let mut policy = ProcessPolicy {
        args: raw.args.unwrap_or(true),
        retain_exited_seconds: raw
            .retain_exited_seconds
            .unwrap_or(crate::process::DEFAULT_RETAIN_EXITED_SECONDS),
        ..ProcessPolicy::default()
    };
    let mut invalid = |field: &str, at: &Location, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin {
                field: field.into(),
                at: position(at),
            },
            message,
        });
    };
    if let Some(depth) = &raw.lineage_depth {
        if depth.value > MAX_LINEAGE_DEPTH {
            invalid(
                "processes.lineage_depth",
                &depth.referenced,
                format!(
                    "{} is deeper than the {MAX_LINEAGE_DEPTH} ancestors an event can carry",
                    depth.value
                ),
            );
        } else {
            policy.lineage_depth = depth.value;
        }
    }
    if let Some(capacity) = &raw.capacity {
        if capacity.value < MIN_CAPACITY {
            invalid(
                "processes.capacity",
                &capacity.referenced,
                format!("must be at least {MIN_CAPACITY}"),
            );
        } else {
            policy.capacity = capacity.value;
        }
    }
    for pattern in &raw.redact_args {
        match regex::Regex::new(&pattern.value) {
            Ok(_) => policy.redact_args.push(pattern.value.clone()),
            Err(e) => invalid(
                "processes.redact_args",
                &pattern.referenced,
                format!("not a regular expression: {e}"),
            ),
        }
    }
    policy
}

/// What a compile resolves the host-dependent parts of a policy against (interface
/// selectors, executables, cgroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The host (network namespace, file system) the compile runs on.
    ThisHost,
    /// None: the policy's text and files are checked, nothing of the host is looked up
    /// (`check --portable`).
    Portable,
}

fn parse_inner(
    text: &str,
    path: &Path,
    cache: Option<&SourceCache>,
    target: Target,
) -> Result<Parsed, ConfigError> {
    let raw = read_raw(text, path)?;
    let mut problems = Vec::new();
    let tls = raw.tls.as_ref().map(|t| parse_tls(t, &mut problems));
    let base = path.parent().unwrap_or(Path::new("."));
    let mut egress_file_problems = Vec::new();
    let egress = raw
        .egress
        .as_ref()
        .map(|e| parse_egress(e, base, &mut problems, &mut egress_file_problems));
    let sentinel = raw
        .sentinel
        .as_ref()
        .map(|s| parse_sentinel(s, &mut problems));
    let telemetry = raw.telemetry.as_ref().map(|t| {
        let interval_seconds = match &t.interval_seconds {
            Some(i) if i.value == 0 => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: "telemetry.interval_seconds".into(),
                        at: position(&i.referenced),
                    },
                    message: "must be at least 1".to_string(),
                });
                DEFAULT_INTERVAL_SECONDS
            }
            Some(i) => i.value,
            None => DEFAULT_INTERVAL_SECONDS,
        };
        TelemetryPolicy {
            dns: t.dns,
            bandwidth: t.bandwidth,
            interval_seconds,
        }
    });
    let processes = raw
        .processes
        .as_ref()
        .map(|p| parse_processes(p, &mut problems));
    // The host's interfaces, read once for the whole section.
    let host = match (target, &raw.firewall) {
        (Target::ThisHost, Some(f)) => match crate::host::HostView::read() {
            Ok(view) => Some(view),
            Err(e) => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: "firewall.interfaces".into(),
                        at: position(&f.referenced),
                    },
                    message: format!("reading this host's interfaces (/proc/thread-self/net): {e}"),
                });
                Some(crate::host::HostView::default())
            }
        },
        _ => None,
    };
    let mut firewall = raw.firewall.as_ref().map(|f| {
        let mut policy = crate::firewall_section::parse(f, host.as_ref(), &mut problems);
        policy.ids = crate::firewall_section::parse_ids(
            f,
            policy.stateful,
            base,
            &mut problems,
            &mut egress_file_problems,
        );
        (policy.scrub, policy.quarantine) =
            crate::firewall_section::parse_scrub_and_quarantine(f, host.as_ref(), &mut problems);
        policy
    });
    if let Some(nat) = &raw.nat {
        let parsed = crate::nat::parse(nat, firewall.as_ref(), &mut problems);
        if let Some(f) = firewall.as_mut() {
            f.nat = parsed;
        }
    }
    let mut positions = Positions::new();
    let Some(shield) = raw.shield else {
        return Ok((
            Config {
                shield: None,
                tls,
                egress,
                telemetry,
                sentinel,
                processes,
                firewall,
            },
            problems,
            egress_file_problems,
            positions,
        ));
    };
    if let Some(at) = position(&shield.referenced) {
        for field in ["shield", "shield (IPv4)", "shield (IPv6)"] {
            positions.insert(field.to_string(), at);
        }
    }
    let shield = shield.value;
    for (field, item) in [
        (
            "shield.ipv4_lookup",
            shield.ipv4_lookup.as_ref().map(|s| &s.referenced),
        ),
        (
            "shield.ipv6_lookup",
            shield.ipv6_lookup.as_ref().map(|s| &s.referenced),
        ),
        (
            "shield.rate_limit",
            shield.rate_limit.as_ref().map(|s| &s.referenced),
        ),
        (
            "shield.management",
            shield.management.first().map(|s| &s.referenced),
        ),
    ] {
        if let Some(at) = item.and_then(position) {
            positions.insert(field.to_string(), at);
        }
    }
    let mut loaded = load_sources(&shield, base, &mut problems, cache);
    problems.append(&mut loaded.problems);
    let mut file_problems = std::mem::take(&mut loaded.file_problems);
    file_problems.append(&mut egress_file_problems);
    let deny = entries("deny", &shield.deny, &mut problems);
    let allow = entries("allow", &shield.allow, &mut problems);
    let inline: Vec<IpNetwork> = deny.iter().chain(&allow).map(|e| e.net).collect();
    aggregate_sets_cached(&mut loaded.sets, &inline, cache);
    let management = entries("management", &shield.management, &mut problems);
    // Catch-all entries are positioned for the lock-out warning.
    for entry in deny.iter().filter(|e| e.net.prefix() == 0) {
        if let Some(at) = entry.origin.at {
            positions.insert(entry.origin.field.clone(), at);
        }
    }
    let mode = match &shield.mode {
        None => Mode::Enforce,
        Some(m) => match m.value.as_str() {
            "enforce" => Mode::Enforce,
            "dry-run" => Mode::DryRun,
            other => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: "shield.mode".into(),
                        at: position(&m.referenced),
                    },
                    message: format!("`{other}` is not a mode; use `enforce` or `dry-run`"),
                });
                Mode::Enforce
            }
        },
    };
    let mut lookup = |field: &str, given: &Option<Spanned<String>>| match given {
        None => Ipv4Lookup::Auto,
        Some(m) => match m.value.as_str() {
            "auto" => Ipv4Lookup::Auto,
            "fast" => Ipv4Lookup::Fast,
            "trie" => Ipv4Lookup::Trie,
            other => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: field.into(),
                        at: position(&m.referenced),
                    },
                    message: format!("`{other}` is not a lookup; use `auto`, `fast` or `trie`"),
                });
                Ipv4Lookup::Auto
            }
        },
    };
    let ipv4_lookup = lookup("shield.ipv4_lookup", &shield.ipv4_lookup);
    let ipv6_lookup = lookup("shield.ipv6_lookup", &shield.ipv6_lookup);
    let rate_limit = shield.rate_limit.as_ref().and_then(|r| {
        if r.value.pps == 0 || r.value.burst == 0 {
            // Reported here, with its position, rather than again by `compile`.
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "shield.rate_limit".into(),
                    at: position(&r.referenced),
                },
                message: "pps and burst must both be at least 1".to_string(),
            });
            return None;
        }
        Some(RateLimit {
            pps: r.value.pps,
            burst: r.value.burst,
        })
    });
    let policy = ShieldPolicy {
        deny,
        allow,
        management,
        mode,
        rate_limit,
        sample_rate: match &shield.sample_rate {
            Some(s) if s.value > MAX_SAMPLE_RATE => {
                problems.push(PolicyError::Invalid {
                    origin: Origin {
                        field: "shield.sample_rate".into(),
                        at: position(&s.referenced),
                    },
                    message: format!(
                        "{} is more than the largest rate, {MAX_SAMPLE_RATE} (one event per \
                         16.7 million drops); use 0 for no events",
                        s.value
                    ),
                });
                DEFAULT_SAMPLE_RATE
            }
            Some(s) => s.value,
            None => DEFAULT_SAMPLE_RATE,
        },
        events_per_second: shield
            .events_per_second
            .as_ref()
            .map_or(DEFAULT_EVENTS_PER_SECOND, |s| s.value),
        sets: loaded.sets,
        ipv4_lookup,
        ipv6_lookup,
        sources: loaded.sources,
    };
    Ok((
        Config {
            shield: Some(policy),
            tls,
            egress,
            telemetry,
            sentinel,
            processes,
            firewall,
        },
        problems,
        file_problems,
        positions,
    ))
}

/// Puts the prefixes of the Shield's sets that firewall rules name into their `src` and
/// `dst` (after the written ones): an ICMP rule takes a set's IPv4 prefixes, an ICMPv6
/// rule its IPv6 ones. An unknown name is an error at the rule.
fn resolve_sets(
    firewall: &mut FirewallPolicy,
    shield: Option<&CompiledShield>,
    problems: &mut Vec<PolicyError>,
) {
    for rule in &mut firewall.rules {
        let proto = rule.proto;
        let family = |net: &IpNetwork| match proto {
            FwProto::Icmp => net.is_ipv4(),
            FwProto::Icmpv6 => net.is_ipv6(),
            _ => true,
        };
        let mut resolve = |which: &str, names: &[String]| -> Vec<IpNetwork> {
            let mut out = Vec::new();
            for name in names {
                match shield.and_then(|s| s.sets.iter().find(|set| &set.name == name)) {
                    Some(set) => out.extend(set.prefixes.iter().filter(|n| family(n))),
                    None => {
                        let known = match shield {
                            None => "the policy has no shield section".to_string(),
                            Some(s) if s.sets.is_empty() => {
                                "the shield has no named sets".to_string()
                            }
                            Some(s) => format!(
                                "sets: {}",
                                s.sets
                                    .iter()
                                    .map(|set| set.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        problems.push(PolicyError::Invalid {
                            origin: rule.origin.clone(),
                            message: format!(
                                "{which} `{}` is not an IP address, a CIDR or the name of a shield set ({known})",
                                crate::error::excerpt(name, 60)
                            ),
                        });
                    }
                }
            }
            out
        };
        let src = resolve("src", &rule.src_sets);
        let dst = resolve("dst", &rule.dst_sets);
        rule.src_from_sets = src.len();
        rule.dst_from_sets = dst.len();
        rule.src.extend(src);
        rule.dst.extend(dst);
    }
}

/// The firewall rules the Shield's management valve adds in front of the policy's: its
/// sources always reach this host and its replies always leave.
fn management_valve(management: &[IpNetwork]) -> Vec<FwRule> {
    if management.is_empty() {
        return Vec::new();
    }
    let origin = Origin::field("shield.management");
    let mut inbound = FwRule::new(origin.clone(), FwDirection::In, FwProto::Any);
    inbound.src = management.to_vec();
    let mut outbound = FwRule::new(origin, FwDirection::Out, FwProto::Any);
    outbound.dst = management.to_vec();
    vec![inbound, outbound]
}

/// The policy file's problems in file order, then those of the files it refers to.
fn to_config_error(
    path: &Path,
    mut problems: Vec<PolicyError>,
    file_problems: Vec<Diagnostic>,
) -> ConfigError {
    problems.sort_by_key(|p| p.origin().at.unwrap_or((u64::MAX, 0)));
    ConfigError {
        diagnostics: problems
            .iter()
            .map(|p| diagnostic(path, p.origin().at, p.to_string()))
            .chain(file_problems)
            .collect(),
    }
}

/// Parses and compiles policy `text` (read from `path`): every problem in the file,
/// syntax or semantics, comes back with its line and column.
pub fn compile_str(text: &str, path: &Path) -> Result<CompiledConfig, ConfigError> {
    compile_str_cached(text, path, None)
}

/// [`compile_str`], with the feeds and aggregated sets of earlier compiles taken from
/// `cache` where their files did not change (see [`SourceCache`]): what a daemon that
/// reloads its policy uses. The result is the same as without the cache.
pub fn compile_str_cached(
    text: &str,
    path: &Path,
    cache: Option<&SourceCache>,
) -> Result<CompiledConfig, ConfigError> {
    compile_str_with_rules(text, path, cache, &[])
}

/// The policy of one runtime rule alone, checked as [`compile_str`] checks a file, and
/// parsed ([`crate::runtime::RuntimeRule::validate`]).
pub(crate) fn parse_for_rule(text: &str, path: &Path) -> Result<Config, ConfigError> {
    compile_str(text, path)?;
    let (config, problems, file_problems, _) = parse_inner(text, path, None, Target::ThisHost)?;
    if problems.is_empty() && file_problems.is_empty() {
        Ok(config)
    } else {
        Err(to_config_error(path, problems, file_problems))
    }
}

/// [`compile_str_cached`] with rules added at run time (see [`crate::runtime`]: they
/// come first in first-match lists, and a conflict with the file fails the compile
/// naming the rule).
pub fn compile_str_with_rules(
    text: &str,
    path: &Path,
    cache: Option<&SourceCache>,
    rules: &[crate::runtime::RuntimeRule],
) -> Result<CompiledConfig, ConfigError> {
    compile_for(text, path, cache, rules, Target::ThisHost)
}

/// Checks policy `text` (read from `path`) as [`compile_str`] does, without the host:
/// its syntax, values and files (feeds, rule files), but not whether this host has
/// the interfaces its selectors name, the executables or cgroups its rules name (only
/// that their paths are absolute). What a fleet's CI runs on a policy meant for other
/// hosts (`full_firewall check --portable`). Returns the compile's warnings. The
/// compiled result is not handed out: it is resolved against no host, so nothing could
/// load it.
pub fn check_str_portable(text: &str, path: &Path) -> Result<Vec<Diagnostic>, ConfigError> {
    compile_for(text, path, None, &[], Target::Portable).map(|c| c.warnings)
}

/// [`check_str_portable`] of the policy file at `path`.
pub fn check_file_portable(path: &Path) -> Result<Vec<Diagnostic>, ConfigError> {
    let bytes =
        crate::feeds::read_regular_file(path, MAX_POLICY_BYTES).map_err(|message| ConfigError {
            diagnostics: vec![diagnostic(path, None, message)],
        })?;
    let text = utf8(bytes, path)?;
    check_str_portable(&text, path)
}

fn compile_for(
    text: &str,
    path: &Path,
    cache: Option<&SourceCache>,
    rules: &[crate::runtime::RuntimeRule],
    target: Target,
) -> Result<CompiledConfig, ConfigError> {
    let (mut config, mut problems, file_problems, positions) =
        parse_inner(text, path, cache, target)?;
    crate::runtime::merge(&mut config, rules, &mut problems);
    let shield = match config.shield.as_ref().map(compile) {
        None => None,
        Some(Ok(compiled)) => Some(compiled),
        Some(Err(errors)) => {
            problems.extend(errors);
            None
        }
    };
    // `check` must refuse what `run` could not load: `ipv4_lookup: fast` is built here
    // exactly as the loader builds it, against the kernel table's group limit.
    if let Some(err) = shield.as_ref().and_then(|s| s.fast_path_misfit()) {
        problems.push(PolicyError::Invalid {
            origin: Origin::field("shield.ipv4_lookup"),
            message: err.to_string(),
        });
    }
    if let Some(err) = shield.as_ref().and_then(|s| s.fast_path_misfit_v6()) {
        problems.push(PolicyError::Invalid {
            origin: Origin::field("shield.ipv6_lookup"),
            message: err.to_string(),
        });
    }
    for problem in &mut problems {
        let origin = problem.origin_mut();
        if origin.at.is_none() {
            origin.at = positions.get(origin.field.as_str()).copied();
        }
    }
    let mut warnings: Vec<Diagnostic> = shield
        .as_ref()
        .map(|s| {
            s.lockout_warnings()
                .into_iter()
                .map(|w| {
                    let at =
                        w.at.or_else(|| positions.get(&w.field).copied())
                            .or_else(|| positions.get("shield").copied());
                    diagnostic(path, at, format!("warning: {}: {}", w.field, w.message))
                })
                .collect()
        })
        .unwrap_or_default();
    let identities = match target {
        Target::ThisHost => crate::egress::Identities::ThisHost,
        Target::Portable => crate::egress::Identities::Portable,
    };
    let egress = match config
        .egress
        .as_ref()
        .map(|e| crate::egress::compile_with(e, identities))
    {
        None => None,
        Some(Ok(compiled)) => Some(compiled),
        Some(Err(errors)) => {
            problems.extend(errors);
            None
        }
    };
    let firewall = config.firewall.map(|mut f| {
        resolve_sets(&mut f, shield.as_ref(), &mut problems);
        for (origin, message) in f.shadow_warnings() {
            warnings.push(diagnostic(
                path,
                origin.at,
                format!("warning: {}: {message}", origin.field),
            ));
        }
        let (errors, dnat_warnings) = f.dnat_checks();
        for (origin, message) in errors {
            problems.push(PolicyError::Invalid { origin, message });
        }
        for (origin, message) in dnat_warnings {
            warnings.push(diagnostic(
                path,
                origin.at,
                format!("warning: {}: {message}", origin.field),
            ));
        }
        if let Some(management) = shield.as_ref().map(|s| &s.management) {
            f.rules.splice(0..0, management_valve(management));
        }
        f
    });
    if problems.is_empty() && file_problems.is_empty() {
        Ok(CompiledConfig {
            shield,
            tls: config.tls,
            egress,
            telemetry: config.telemetry,
            sentinel: config.sentinel,
            processes: config.processes,
            firewall,
            warnings,
        })
    } else {
        Err(to_config_error(path, problems, file_problems))
    }
}

/// The largest policy file read (16 MiB; long lists belong in feed files).
pub const MAX_POLICY_BYTES: u64 = 16 << 20;

/// Reads, parses and compiles the policy file at `path`.
pub fn compile_file(path: &Path) -> Result<CompiledConfig, ConfigError> {
    compile_file_cached(path, None)
}

/// [`compile_file`] with a [`SourceCache`]: feed files that did not change since the
/// last compile with the same cache are not read again, and their sets keep the very
/// prefix lists they had (shared, so a reload costs the memory of what changed).
pub fn compile_file_cached(
    path: &Path,
    cache: Option<&SourceCache>,
) -> Result<CompiledConfig, ConfigError> {
    compile_file_with_rules(path, cache, &[])
}

/// [`compile_file_cached`] with rules added at run time ([`compile_str_with_rules`]).
pub fn compile_file_with_rules(
    path: &Path,
    cache: Option<&SourceCache>,
    rules: &[crate::runtime::RuntimeRule],
) -> Result<CompiledConfig, ConfigError> {
    let bytes =
        crate::feeds::read_regular_file(path, MAX_POLICY_BYTES).map_err(|message| ConfigError {
            diagnostics: vec![diagnostic(path, None, message)],
        })?;
    let text = utf8(bytes, path)?;
    compile_str_with_rules(&text, path, cache, rules)
}

/// The text of a policy file, or a positioned error at its first byte that is not UTF-8.
fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let bad = e.utf8_error().valid_up_to();
        let before = &bytes[..bad];
        let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count() as u64
            + 1;
        ConfigError {
            diagnostics: vec![diagnostic(
                path,
                Some((line, column)),
                format!(
                    "not UTF-8 text (byte 0x{:02x}); a policy file is UTF-8",
                    bytes[bad]
                ),
            )],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
shield:
  mode: dry-run
  deny:
    - 203.0.113.0/24
    - 2001:db8:bad::/48
    - 198.51.100.7
  allow: [203.0.113.7]
  management: [192.0.2.10]
  rate_limit: { pps: 1000, burst: 2000 }
  sample_rate: 1
";

    /// Regression (red team, round 3): `cgroup: /etc` was accepted (a rule that
    /// matches nothing), and a port that is not a number stopped the whole file at
    /// "data did not match any variant of untagged enum RawPorts".
    #[test]
    fn a_directory_outside_cgroup2_and_every_bad_port_are_refused_at_their_place() {
        let text = "egress:\n  default: allow\n  rules:\n    - {cgroup: /etc, action: deny}\n    - {uid: 0, ports: -5, action: deny}\nfirewall:\n  interfaces: [lo]\n  rules:\n    - {direction: in, proto: tcp, dport: true, action: drop}\n    - {direction: in, proto: tcp, dport: [80, 99999], action: drop}\n    - {direction: in, proto: tcp, sport: \"9-1\", action: drop}\n";
        let e = compile_str(text, Path::new("p.yaml")).expect_err("invalid");
        let lines: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "p.yaml:4:7: egress.rules[0]: `/etc` is not a cgroup directory (a directory under the cgroup v2 mount, such as /sys/fs/cgroup/system.slice/nginx.service)",
                "p.yaml:5:7: egress.rules[1]: port -5 is out of range 1-65535",
                "p.yaml:9:7: firewall.rules[0]: dport: not a port (1-65535), a range `\"LO-HI\"` or a list of them",
                "p.yaml:10:7: firewall.rules[1]: dport: port 99999 is out of range 1-65535",
                "p.yaml:11:7: firewall.rules[2]: sport: `9-1` is not a port or a range `LO-HI` within 1-65535",
            ],
            "{lines:#?}"
        );
    }

    /// Regression (hardening): only the first unknown key was reported.
    #[test]
    fn every_unknown_key_is_reported_with_its_position() {
        let text =
            "shield:\n  bogus: 1\n  deny: [192.0.2.1]\n  modee: enforce\ntls:\n  max_byte: 10\n";
        let err = compile_str(text, Path::new("p.yaml")).expect_err("unknown keys");
        let lines: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("p.yaml:2:3: unknown key `bogus`"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("p.yaml:4:3: unknown key `modee`; did you mean `mode`?"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("p.yaml:6:3: unknown key `max_byte`; did you mean `max_bytes`?"),
            "{}",
            lines[2]
        );
    }

    /// Regression (hardening): messages carried the YAML reader's advice to programmers.
    #[test]
    fn messages_speak_of_the_policy_not_of_serde() {
        let cases = [
            (
                "shield:\n  deny: [192.0.2.1]\n  deny: [192.0.2.2]\n",
                "p.yaml:3:3: duplicate key `deny`: each key may appear once here",
            ),
            (
                "shield:\n  rate_limit: { pps: 1 }\n",
                "p.yaml:2:17: missing key `burst`",
            ),
            (
                "shield:\n  sample_rate: -1\n",
                "p.yaml:2:16: expected a whole number from 0 to 4294967295",
            ),
            (
                "shield:\n  deny: 192.0.2.1\n",
                "p.yaml:2:9: expected a list (`[a, b]` or `- a` lines)",
            ),
            (
                "shield:\n  sample_rate: 16777216\n",
                "p.yaml:2:16: shield.sample_rate: 16777216 is more than the largest rate, \
                 16777215 (one event per 16.7 million drops); use 0 for no events",
            ),
        ];
        for (text, want) in cases {
            let err = compile_str(text, Path::new("p.yaml")).expect_err(want);
            let got = err.to_string();
            assert_eq!(got, want);
            for leak in ["DuplicateKeyPolicy", "Option<", "Options", "u32"] {
                assert!(!got.contains(leak), "{got}");
            }
        }
    }

    /// Regression (hardening): a non-UTF-8 policy was reported without a position.
    #[test]
    fn a_non_utf8_policy_is_reported_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, b"shield:\n  deny: [192.0.2.1] # caf\xe9\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = compile_file(&path).expect_err("not UTF-8");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2:26: not UTF-8 text (byte 0xe9); a policy file is UTF-8",
                path.display()
            )
        );
    }

    /// Regression (hardening): a FIFO as the policy or as a feed hung `check` (and the
    /// daemon) in `open(2)`.
    #[test]
    fn a_fifo_policy_or_feed_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("feed.txt");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let err = compile_file(&fifo).expect_err("a FIFO policy");
        assert_eq!(
            err.to_string(),
            format!("{}: not a regular file (a FIFO)", fifo.display())
        );
        let policy = dir.path().join("p.yaml");
        std::fs::write(
            &policy,
            "shield:\n  deny_feeds:\n    - path: feed.txt\n      format: plain\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = compile_file(&policy).expect_err("a FIFO feed");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:7: shield.deny_feeds[0]: ", policy.display()))
                && err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
    }

    /// Regression (hardening): `::ffff:10.251.0.2/128` was accepted and never matched
    /// the IPv4 source it names.
    #[test]
    fn ipv4_mapped_prefixes_become_ipv4() {
        let text = "shield:\n  deny: ['::ffff:10.251.0.2/128', '::ffff:10.0.0.0/104']\n  management: ['::ffff:192.0.2.10']\n";
        let compiled = compile_str(text, Path::new("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let shield = compiled.shield.unwrap_or_else(|| panic!("shield"));
        let rules: Vec<String> = shield.rules.iter().map(|r| r.cidr.to_string()).collect();
        assert_eq!(rules, ["10.251.0.2/32", "10.0.0.0/8"]);
        assert_eq!(shield.ipv4_prefixes(), 2);
        assert_eq!(shield.ipv6_prefixes(), 0);
        assert_eq!(shield.management[0].to_string(), "192.0.2.10/32");
    }

    /// Regression (hardening): `deny: [0.0.0.0/0]` with no management entry locked the
    /// host out without a word.
    #[test]
    fn denying_everything_without_a_valve_is_a_located_warning() {
        let text = "shield:\n  deny:\n    - 198.51.100.0/24\n    - 0.0.0.0/0\n    - ::/0\n";
        let compiled = compile_str(text, Path::new("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let warnings: Vec<String> = compiled.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0]
                .starts_with("p.yaml:4:7: warning: shield.deny[1]: denies every IPv4 source"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1]
                .starts_with("p.yaml:5:7: warning: shield.deny[2]: denies every IPv6 source"),
            "{}",
            warnings[1]
        );
        let valved = format!("{text}  management: [192.0.2.10, 2001:db8::1]\n");
        let compiled = compile_str(&valved, Path::new("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    }

    /// Regression (hardening): `check` passed `ipv4_lookup: fast` with 9,000 scattered
    /// /32s, which `run` then could not load. (Those now fit, as span nodes, and so do
    /// hosts of up to three rules in a /24; hosts of four feeds in each of 5,000 /24s,
    /// five entries a /24, need a group each, more than there are.)
    #[test]
    fn a_forced_fast_path_that_cannot_fit_is_refused_by_check() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Five values in each of 21,000 /24s: 4,096 groups, and more leaf nodes than the
        // span table holds.
        let feeds = ironclad_testing::rules::host_feeds(dir.path(), &[1, 3, 5, 7], 21_000)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = format!("shield:\n  ipv4_lookup: fast\n  deny_feeds:\n{feeds}");
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        let err = compile_file(&path).expect_err("does not fit");
        let got = err.to_string();
        assert!(
            got.starts_with(&format!(
                "{}:2:16: shield.ipv4_lookup: the IPv4 fast path needs ",
                path.display()
            )) && got.contains("second-level groups")
                && got.contains("span table"),
            "{got}"
        );
        let auto = text.replace("ipv4_lookup: fast", "ipv4_lookup: auto");
        std::fs::write(&path, auto).unwrap_or_else(|e| panic!("{e}"));
        assert!(compile_file(&path).is_ok(), "auto falls back to the trie");
    }

    /// `ipv6_lookup` takes the same words as `ipv4_lookup`, and a wrong one is refused
    /// at its place.
    #[test]
    fn ipv6_lookup_is_read_and_a_wrong_word_is_located() {
        let ok = compile_str(
            "shield:\n  ipv6_lookup: trie\n  deny: [2001:db8::/32]\n",
            Path::new("p.yaml"),
        )
        .expect("valid");
        let shield = ok.shield.expect("shield");
        assert_eq!(shield.ipv6_lookup, Ipv4Lookup::Trie);
        assert_eq!(shield.ipv4_lookup, Ipv4Lookup::Auto);
        let err = compile_str(
            "shield:\n  ipv6_lookup: quick\n  deny: [2001:db8::/32]\n",
            Path::new("p.yaml"),
        )
        .expect_err("not a lookup")
        .to_string();
        assert!(
            err.starts_with("p.yaml:2:16: shield.ipv6_lookup: `quick` is not a lookup"),
            "{err}"
        );
    }

    /// A long inline list is refused at its place with the limit it breaks and the way
    /// out (a feed file), never with the YAML reader's Debug form: beyond the Shield's
    /// rule limit, and beyond the reader's node budget.
    #[test]
    fn long_inline_lists_are_refused_with_the_limit_and_the_way_out() {
        let list = |n: u32| {
            let mut text = String::from("shield:\n  deny:\n");
            for i in 0..n {
                let a = 0x0b00_0001 + (i << 8);
                text.push_str(&format!("    - {}\n", std::net::Ipv4Addr::from(a)));
            }
            text
        };
        let err = compile_str(&list(20_000), Path::new("p.yaml")).expect_err("too many rules");
        let got = err.to_string();
        assert!(
            got.starts_with("p.yaml:2:3: shield: 20000 rules (each inline `deny`/`allow` entry is one) exceed the limit of 16383; put long lists in a feed file (`shield.deny_feeds`"),
            "{got}"
        );
        let err = compile_str(&list(260_000), Path::new("p.yaml")).expect_err("too large");
        let got = err.to_string();
        assert!(
            got.starts_with("p.yaml:")
                && got.contains(": the policy is too large for the YAML reader (more than 250000 YAML values): put long prefix lists in a feed file (`shield.deny_feeds`)"),
            "{got}"
        );
        assert!(!got.contains("Nodes {"), "{got}");
        let line: u64 = got
            .split(':')
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("no line in {got}"));
        assert!(line > 200_000, "located where the budget ran out: {got}");
    }

    /// Regression (hardening): an error about a 10 MB feed line echoed the whole line
    /// and raw terminal escapes.
    #[test]
    fn quoted_input_is_capped_and_escaped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let feed = dir.path().join("feed.txt");
        let mut line = String::from("\x1b[2J");
        line.push_str(&"9".repeat(10 << 20));
        std::fs::write(&feed, format!("192.0.2.1\n{line}\n")).unwrap_or_else(|e| panic!("{e}"));
        let policy = dir.path().join("p.yaml");
        std::fs::write(
            &policy,
            "shield:\n  deny_feeds:\n    - path: feed.txt\n      format: plain\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = compile_file(&policy).expect_err("bad line").to_string();
        assert!(err.len() < 2048, "{} bytes", err.len());
        assert!(!err.contains('\x1b'), "{err}");
        assert!(err.contains("\\u{1b}[2J999"), "{err}");
        assert!(err.contains("more characters)"), "{err}");
    }

    /// Over-limit errors name the section's position, not only a field.
    #[test]
    fn over_limit_errors_are_located() {
        let text = "shield:\n  management:\n    - 192.0.2.1\n";
        let mut big = String::from(text);
        for i in 0..300u32 {
            big.push_str(&format!("    - 198.51.{}.{}\n", i / 200, i % 200));
        }
        if let Err(err) = compile_str(&big, Path::new("p.yaml")) {
            assert!(
                err.to_string()
                    .starts_with("p.yaml:3:7: shield.management:"),
                "{err}"
            );
        } else {
            assert!(
                ironclad_core::abi::SHIELD_MAX_VALVE_PREFIXES as usize >= 301,
                "301 valve prefixes fit the limit"
            );
        }
    }

    #[test]
    fn unknown_keys_get_a_did_you_mean_hint() {
        let err = compile_str("sheild:\n  deny: []\n", Path::new("p.yaml")).expect_err("typo");
        assert_eq!(
            err.to_string(),
            "p.yaml:1:1: unknown key `sheild`; did you mean `shield`? (keys here: shield, tls, egress, telemetry, sentinel, processes, firewall, nat)"
        );
        let err = compile_str(
            "shield:\n  deny_feeds:\n    - path: x\n      fromat: plain\n",
            Path::new("p.yaml"),
        )
        .expect_err("typo");
        assert!(
            err.to_string()
                .starts_with("p.yaml:4:7: unknown key `fromat`; did you mean `format`?"),
            "{err}"
        );
        let err =
            compile_str("shield:\n  bogus_thing: 1\n", Path::new("p.yaml")).expect_err("unknown");
        assert!(
            err.to_string()
                .starts_with("p.yaml:2:3: unknown key `bogus_thing` (keys here: deny, allow,"),
            "{err}"
        );
        assert_eq!(
            did_you_mean("deny_country", &["deny_countries", "deny_feeds"]),
            Some("deny_countries")
        );
        assert_eq!(did_you_mean("x", &["shield"]), None);
    }

    #[test]
    fn the_sentinel_section_parses_and_names_bad_fields() {
        let text = "sentinel:\n  protect: [/etc/ironclad, /usr/sbin/agent]\n  monitor: [/etc/passwd]\n  update_manager: /usr/bin/dpkg\n  mode: monitor-only\n  required: false\n";
        let compiled = compile_str(text, Path::new("p.yaml")).expect("valid");
        let s = compiled.sentinel.expect("sentinel section");
        assert_eq!(
            s.protect,
            [
                PathBuf::from("/etc/ironclad"),
                PathBuf::from("/usr/sbin/agent")
            ]
        );
        assert_eq!(s.monitor, [PathBuf::from("/etc/passwd")]);
        assert_eq!(s.update_manager, Some(PathBuf::from("/usr/bin/dpkg")));
        assert!(s.monitor_only && !s.required);

        let bad = "sentinel:\n  protect: [etc/ironclad]\n  mode: strict\n";
        let err = compile_str(bad, Path::new("p.yaml")).expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("p.yaml:2:"), "{text}");
        assert!(
            text.contains("sentinel.protect[0]") && text.contains("not an absolute path"),
            "{text}"
        );
        assert!(
            text.contains("p.yaml:3:") && text.contains("sentinel.mode"),
            "{text}"
        );

        let unknown = "sentinel:\n  protected: [/etc]\n";
        let err = compile_str(unknown, Path::new("p.yaml")).expect_err("unknown key");
        assert!(err.to_string().contains("protected"), "{err}");
    }

    #[test]
    fn a_good_file_compiles() {
        let compiled = compile_str(GOOD, Path::new("p.yaml")).expect("valid");
        let shield = compiled.shield.expect("shield section");
        assert_eq!(shield.ipv4_prefixes(), 3);
        assert_eq!(shield.ipv6_prefixes(), 1);
        assert_eq!(shield.mode, Mode::DryRun);
        assert_eq!(shield.rules[2].cidr.to_string(), "198.51.100.7/32");
        assert_eq!(
            shield.rate_limit,
            Some(RateLimit {
                pps: 1000,
                burst: 2000
            })
        );
        assert_eq!(shield.sample_rate, 1);
        assert_eq!(shield.events_per_second, DEFAULT_EVENTS_PER_SECOND);
        assert_eq!(shield.config().events_per_sec, DEFAULT_EVENTS_PER_SECOND);
    }

    #[test]
    fn events_per_second_reaches_the_kernel_record_and_zero_lifts_the_cap() {
        for (text, want) in [("5", 5), ("0", 0)] {
            let yaml = format!("shield:\n  deny: [192.0.2.1]\n  events_per_second: {text}\n");
            let shield = compile_str(&yaml, Path::new("p.yaml"))
                .expect("valid")
                .shield
                .expect("shield");
            assert_eq!(shield.config().events_per_sec, want);
        }
        let err = compile_str("shield:\n  events_per_second: -3\n", Path::new("p.yaml"))
            .expect_err("negative");
        assert!(err.to_string().contains("p.yaml:2:"), "{err}");
    }

    #[test]
    fn three_bad_lines_give_three_positioned_errors() {
        let text = "\
shield:
  deny:
    - 10.0.0.300/8
    - 192.0.2.0/24
    - not-an-address
  allow:
    - 10.1.1.1/8
  mode: enforce
";
        let err = compile_str(text, Path::new("bad.yaml")).expect_err("invalid");
        let lines: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("bad.yaml:3:7: shield.deny[0]: `10.0.0.300/8`"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("bad.yaml:5:7: shield.deny[2]: `not-an-address`"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("bad.yaml:7:7: shield.allow[0]: `10.1.1.1/8` has host bits set"),
            "{lines:#?}"
        );
    }

    #[test]
    fn unknown_keys_duplicate_keys_and_bad_modes_are_positioned() {
        let err = compile_str("shield:\n  dney: [10.0.0.0/8]\n", Path::new("x.yaml"))
            .expect_err("unknown key");
        let d = &err.diagnostics[0];
        assert_eq!((d.line, d.column > 0), (2, true), "{d}");
        assert!(d.message.contains("dney"), "{d}");

        let err = compile_str(
            "shield:\n  deny: [10.0.0.0/8]\n  deny: [10.0.0.0/8]\n",
            Path::new("x.yaml"),
        )
        .expect_err("duplicate key");
        assert_eq!(err.diagnostics[0].line, 3, "{err}");

        let err = compile_str("shield:\n  mode: block\n", Path::new("x.yaml")).expect_err("mode");
        assert_eq!(
            err.diagnostics[0].to_string(),
            "x.yaml:2:9: shield.mode: `block` is not a mode; use `enforce` or `dry-run`"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        assert!(compile_str(&text, Path::new("bomb.yaml")).is_err());
    }

    #[test]
    fn the_tls_section_is_read_and_checked() {
        let ok = compile_str(
            "tls:\n  scope:\n    - exe: /usr/bin/curl\n    - comm: openssl\n    - pid: 42\n  max_bytes: 65536\n",
            Path::new("t.yaml"),
        )
        .expect("valid");
        let tls = ok.tls.expect("tls section");
        assert_eq!(
            tls.scope,
            vec![
                TlsScope::Exe("/usr/bin/curl".into()),
                TlsScope::Comm("openssl".into()),
                TlsScope::Pid(42)
            ]
        );
        assert_eq!(tls.max_bytes, 65536);
        assert!(ok.shield.is_none());
        let err = compile_str(
            "tls:\n  scope:\n    - exe: curl\n    - {comm: x, pid: 1}\n  max_bytes: 0\n",
            Path::new("t.yaml"),
        )
        .expect_err("invalid");
        let lines: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("t.yaml:3:7: tls.scope[0]: `curl` is not an absolute path"),
            "{lines:#?}"
        );
        assert!(
            lines[1].contains("tls.scope[1]: give exactly one of"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("t.yaml:5:14: tls.max_bytes: must be between 1 and 262144"),
            "{lines:#?}"
        );
    }

    #[test]
    fn domain_patterns_and_domain_feeds_are_checked_with_their_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("bad.txt"),
            "# feed\nok.test\n0.0.0.0 fine.test bad..name\nev il.test\n",
        )
        .expect("feed");
        std::fs::write(
            dir.path().join("good.txt"),
            "*.c2.test\n0.0.0.0 evil.test\n",
        )
        .expect("feed");
        let text = "\
egress:
  rules:
    - dst_domain: [github.com, \"*.*.example.com\"]
      action: allow
    - dst: 10.0.0.0/8
      dst_domain: example.org
      action: allow
    - dst_domain: 10.1.2.3
      action: allow
  deny_domain_feeds:
    - bad.txt
    - {path: good.txt, block_queries: true, name: \"c2 list\"}
  dns: {grace_seconds: 999999}
";
        let path = dir.path().join("p.yaml");
        let err = compile_str(text, &path).expect_err("invalid");
        let lines: Vec<String> = err
            .diagnostics
            .iter()
            .map(|d| {
                d.to_string()
                    .replace(&format!("{}/", dir.path().display()), "")
            })
            .collect();
        assert_eq!(lines.len(), 7, "{lines:#?}");
        let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
        assert!(
            has("p.yaml:3:19: egress.rules[0].dst_domain[1]: `*.*.example.com`: `*` is only allowed"),
            "{lines:#?}"
        );
        assert!(
            has("p.yaml:5:7: egress.rules[1]: `dst` and `dst_domain` together"),
            "{lines:#?}"
        );
        assert!(
            has("p.yaml:8:19: egress.rules[2].dst_domain: `10.1.2.3` is an address"),
            "{lines:#?}"
        );
        assert!(
            has("p.yaml:12:7: egress.deny_domain_feeds[1]: `c2 list` is not a feed name"),
            "{lines:#?}"
        );
        assert!(
            has("p.yaml:13:8: egress.dns.grace_seconds: 999999 is more than a week"),
            "{lines:#?}"
        );
        assert!(
            has("bad.txt:3:19: `bad..name` has an empty label"),
            "{lines:#?}"
        );
        assert!(has("bad.txt:4:4: `il.test` after the name"), "{lines:#?}");
        // The good ones compile.
        let ok = "egress:\n  rules:\n    - dst_domain: [GitHub.com., \"*.githubusercontent.com\"]\n      ports: [443]\n      action: allow\n  deny_domain_feeds:\n    - {path: good.txt, block_queries: true}\n  dns: {grace_seconds: 5, max_ttl_seconds: 600}\n";
        let compiled = compile_str(ok, &path)
            .expect("valid")
            .egress
            .expect("egress");
        assert_eq!(compiled.domain_rules.len(), 1);
        assert_eq!(
            compiled
                .domain_patterns()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["github.com", "*.githubusercontent.com"]
        );
        assert_eq!(compiled.domain_feeds[0].name, "good");
        assert_eq!(compiled.domain_feeds[0].names.len(), 2);
        assert!(compiled.domain_feeds[0].block_queries);
        assert_eq!(
            (compiled.dns.grace_seconds, compiled.dns.max_ttl_seconds),
            (5, 600)
        );
        assert!(
            compiled.index.is_empty(),
            "a rule by name is not in the classifier"
        );
    }

    #[test]
    fn the_egress_section_reports_each_bad_rule_with_its_position() {
        let text = "\
egress:
  default: deny
  rules:
    - exe: /nonexistent/client
      action: allow
    - dst: 10.0.0.300/8
      action: deny
    - ports: 70000
      action: deny
    - ports: [80, \"8000-8100\"]
      proto: tcp
      action: log
";
        let err = compile_str(text, Path::new("e.yaml")).expect_err("invalid");
        let lines: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("e.yaml:4:7: egress.rules[0]: executable `/nonexistent/client`"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("e.yaml:6:7: egress.rules[1]: `10.0.0.300/8`"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("e.yaml:8:7: egress.rules[2]: port 70000 is out of range"),
            "{lines:#?}"
        );

        let ok = compile_str(
            "egress:\n  default: deny\n  rules:\n    - ports: [80, \"8000-8100\"]\n      proto: tcp\n      action: log\n  rate_limit: {per_second: 100, burst: 200}\n",
            Path::new("e.yaml"),
        )
        .expect("valid");
        let egress = ok.egress.expect("egress");
        assert_eq!(egress.entries.len(), 2);
        assert_eq!(
            (egress.entries[1].port_lo, egress.entries[1].port_hi),
            (8000, 8100)
        );
        assert_eq!(egress.rate_limit.map(|r| r.burst), Some(200));
    }

    #[test]
    fn ancestor_rules_are_checked_where_they_are_written() {
        let ok = compile_str(
            "egress:\n  rules:\n    - exe: /bin/sh\n      parent_exe: /bin/sh\n      action: allow\n    - ancestor_exe: /bin/sh\n      ancestor_depth: 3\n      action: deny\n",
            Path::new("e.yaml"),
        )
        .expect("valid");
        let e = ok.egress.expect("egress");
        assert_eq!(
            (e.entries[0].ancestor_depth, e.entries[1].ancestor_depth),
            (1, 3)
        );
        assert_eq!(e.entries[0].ancestor, e.entries[1].ancestor);
        assert_ne!(
            e.entries[1].match_ & ironclad_core::abi::egress_match::ANCESTOR,
            0
        );

        let err = compile_str(
            "egress:\n  rules:\n    - ancestor_exe: /bin/sh\n      ancestor_depth: 9\n      action: deny\n    - parent_exe: /bin/sh\n      ancestor_exe: /bin/sh\n      action: deny\n    - parent_exe: /nonexistent/backup\n      action: allow\n    - parent_exe: /etc/passwd\n      action: allow\n",
            Path::new("e.yaml"),
        )
        .expect_err("bad ancestors");
        let lines: Vec<String> = err.to_string().lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("e.yaml:3:7: egress.rules[0]: ancestor_depth 9 is outside 1..=8"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with(
                "e.yaml:6:7: egress.rules[1]: `parent_exe` and `ancestor_exe` together"
            ),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("e.yaml:9:7: egress.rules[2]: ancestor `/nonexistent/backup`"),
            "{lines:#?}"
        );
        assert!(
            lines[3].starts_with(
                "e.yaml:11:7: egress.rules[3]: ancestor `/etc/passwd`: not executable"
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn the_tls_probe_placement_is_read_and_checked() {
        let ok = compile_str("tls:\n  placement: symbols\n", Path::new("t.yaml")).expect("valid");
        assert_eq!(ok.tls.expect("tls").placement, TlsPlacement::Symbols);
        let ok = compile_str("tls:\n  max_bytes: 64\n", Path::new("t.yaml")).expect("valid");
        assert_eq!(ok.tls.expect("tls").placement, TlsPlacement::Auto);
        let err = compile_str("tls:\n  placement: anywhere\n", Path::new("t.yaml"))
            .expect_err("bad placement");
        assert!(
            err.to_string()
                .starts_with("t.yaml:2:14: tls.placement: `anywhere` is not a placement"),
            "{err}"
        );
    }

    #[test]
    fn the_tls_dlp_section_is_read_and_every_mistake_located() {
        let ok = compile_str(
            "tls:\n  dlp:\n    detectors: [credit_card, jwt]\n    patterns: [{name: employee_id, regex: 'EMP-[0-9]{6}'}]\n    redact_data: false\n",
            Path::new("t.yaml"),
        )
        .expect("valid");
        let dlp = ok.tls.expect("tls").dlp.expect("dlp");
        assert_eq!(
            dlp.detectors,
            vec![crate::dlp::Detector::CreditCard, crate::dlp::Detector::Jwt]
        );
        assert_eq!(
            dlp.patterns,
            vec![("employee_id".to_string(), "EMP-[0-9]{6}".to_string())]
        );
        assert!(!dlp.redact_data);
        let all = compile_str("tls:\n  dlp: {}\n", Path::new("t.yaml")).expect("valid");
        let all = all.tls.expect("tls").dlp.expect("dlp");
        assert_eq!(all.detectors.len(), crate::dlp::Detector::ALL.len());
        assert!(all.redact_data, "masked by default");
        let err = compile_str(
            "tls:\n  dlp:\n    detectors: [credit_card, ssn]\n    patterns: [{name: x, regex: '(unclosed'}]\n",
            Path::new("t.yaml"),
        )
        .expect_err("bad");
        let text = err.to_string();
        assert!(
            text.contains("t.yaml:3:30: tls.dlp.detectors[1]: `ssn` is not a detector"),
            "{text}"
        );
        assert!(
            text.contains("t.yaml:4:33: tls.dlp.patterns[0]: pattern `x`"),
            "{text}"
        );
    }

    #[test]
    fn the_tls_attach_mode_is_read_and_checked() {
        let ok = compile_str("tls:\n  attach: process\n", Path::new("t.yaml")).expect("valid");
        assert_eq!(ok.tls.expect("tls").attach, TlsAttach::PerProcess);
        let ok = compile_str("tls: {}\n", Path::new("t.yaml")).expect("valid");
        assert_eq!(ok.tls.expect("tls").attach, TlsAttach::Library);
        let err =
            compile_str("tls:\n  attach: everywhere\n", Path::new("t.yaml")).expect_err("bad mode");
        assert!(
            err.to_string()
                .starts_with("t.yaml:2:11: tls.attach: `everywhere` is not an attach mode"),
            "{err}"
        );
    }

    #[test]
    fn the_processes_section_is_read_and_checked() {
        let ok = compile_str(
            "processes:\n  args: false\n  redact_args: ['^AKIA']\n  lineage_depth: 16\n  capacity: 1024\n  retain_exited_seconds: 5\n",
            Path::new("p.yaml"),
        )
        .expect("valid");
        let p = ok.processes.expect("processes");
        assert_eq!(
            (p.args, p.lineage_depth, p.capacity, p.retain_exited_seconds),
            (false, 16, 1024, 5)
        );
        assert_eq!(p.redact_args, ["^AKIA"]);
        assert_eq!(
            compile_str("processes: {}\n", Path::new("p.yaml"))
                .expect("defaults")
                .processes,
            Some(crate::process::ProcessPolicy::default())
        );

        let err = compile_str(
            "processes:\n  lineage_depth: 17\n  capacity: 3\n  redact_args:\n    - '(unclosed'\n",
            Path::new("p.yaml"),
        )
        .expect_err("bad values");
        let lines: Vec<String> = err.to_string().lines().map(str::to_string).collect();
        assert!(
            lines[0].starts_with("p.yaml:2:18: processes.lineage_depth: 17 is deeper than the 16"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("p.yaml:3:13: processes.capacity: must be at least 16"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("p.yaml:5:7: processes.redact_args: not a regular expression"),
            "{lines:#?}"
        );
    }

    #[test]
    fn the_telemetry_switches_are_read() {
        let ok = compile_str(
            "telemetry:\n  dns: true\n  bandwidth: true\n",
            Path::new("t.yaml"),
        )
        .expect("valid");
        let t = ok.telemetry.expect("telemetry");
        assert!(t.dns && t.bandwidth);
        assert_eq!(t.interval_seconds, DEFAULT_INTERVAL_SECONDS);
        let err = compile_str("telemetry:\n  dns: yes please\n", Path::new("t.yaml"))
            .expect_err("not a boolean");
        assert_eq!(err.diagnostics[0].line, 2, "{err}");
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = compile_file(Path::new("/nonexistent/policy.yaml")).expect_err("missing");
        assert!(err
            .to_string()
            .starts_with("/nonexistent/policy.yaml: cannot read"));
    }
}
