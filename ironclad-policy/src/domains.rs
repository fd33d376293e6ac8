//! Domain names in egress policy: the patterns of `dst_domain` and the names of
//! `deny_domain_feeds`.
//!
//! A pattern is a name (`github.com`: that name only) or a wildcard (`*.debian.org`:
//! every name below it, not `debian.org` itself, as in Cilium's `matchPattern`). Names
//! are compared without regard to case and without the final dot. A feed is a text
//! file of names, one per line, in any of the formats blocklists ship: plain names,
//! wildcards, or a hosts file (`0.0.0.0 name…`); `#` starts a comment.
//!
//! ```
//! use ironclad_policy::domains::{parse_feed, DomainPattern};
//!
//! let p: DomainPattern = "*.Example.COM.".parse()?;
//! assert_eq!(p.to_string(), "*.example.com");
//! assert!(p.matches("a.b.example.com") && !p.matches("example.com"));
//!
//! let names = parse_feed(b"# malware\n0.0.0.0 c2.evil.test ads.evil.test\n*.phish.test\n")
//!     .map_err(|e| e[0].2.clone())?;
//! assert_eq!(names.len(), 3);
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ironclad_core::abi::{DNS_FEEDS, DNS_LABELS, DNS_NAMES, DNS_PATTERNS, DNS_RULES};

/// Seconds an answer's addresses stay open after its TTL, unless the policy says.
pub const DEFAULT_GRACE_SECONDS: u32 = 60;
/// The TTL cap, unless the policy says (a day): a hostile answer's TTL of years opens
/// nothing for longer than this.
pub const DEFAULT_MAX_TTL_SECONDS: u32 = 86_400;
/// The largest grace or TTL cap the policy accepts (a week).
pub const MAX_SECONDS: u32 = 7 * 86_400;
/// Names a feed file may list, at most (the kernel's name table is shared by every
/// feed and pattern: [`DNS_NAMES`]).
pub const MAX_FEED_NAMES: usize = DNS_NAMES as usize;
/// Patterns, rule entries and feeds the kernel takes.
pub const LIMITS: (usize, usize, usize) = (DNS_PATTERNS, DNS_RULES, DNS_FEEDS);

/// A `dst_domain` pattern or a feed's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainPattern {
    /// The name, lowercase, without the final dot (and without `*.`).
    pub name: String,
    /// `*.name`: the names below `name`, not `name` itself.
    pub wildcard: bool,
}

impl DomainPattern {
    /// Whether `name` (any case, with or without the final dot) is matched.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            name.len() > self.name.len() + 1
                && name.ends_with(&self.name)
                && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
        } else {
            name == self.name
        }
    }

    /// The labels of the name, in order (without `*`).
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.name.split('.')
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

impl FromStr for DomainPattern {
    type Err = String;

    /// Parses `name` or `*.name`; the error says what is wrong.
    fn from_str(text: &str) -> Result<Self, String> {
        let shown = crate::error::excerpt(text, 80);
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.is_empty() {
            return Err(format!("`{shown}` is not a domain name"));
        }
        if rest.contains('*') {
            return Err(format!(
                "`{shown}`: `*` is only allowed as the whole first label (`*.example.com`)"
            ));
        }
        // The name as the kernel compares it: at most 255 bytes in wire format.
        if rest.len() + 2 > 255 {
            return Err(format!(
                "`{shown}` is longer than a domain name can be (253 characters)"
            ));
        }
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() > DNS_LABELS {
            return Err(format!(
                "`{shown}` has {} labels; at most {DNS_LABELS} are compared",
                labels.len()
            ));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(format!("`{shown}` has an empty label (`..`)"));
            }
            if label.len() > 63 {
                return Err(format!(
                    "`{shown}`: label `{}` is longer than 63 characters",
                    crate::error::excerpt(label, 20)
                ));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(format!(
                    "`{shown}`: `{}` is not allowed in a name (letters, digits, `-`, `_`; \
                     internationalised names in their `xn--` form)",
                    bad.escape_default()
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!(
                    "`{shown}`: label `{label}` starts or ends with `-`"
                ));
            }
        }
        if !wildcard && labels.len() == 1 && rest.parse::<u64>().is_ok() {
            return Err(format!("`{shown}` is a number, not a domain name"));
        }
        if rest.parse::<std::net::IpAddr>().is_ok() || looks_like_ipv4(rest) {
            return Err(format!("`{shown}` is an address; use `dst:` for addresses"));
        }
        Ok(Self {
            name: rest.to_ascii_lowercase(),
            wildcard,
        })
    }
}

fn looks_like_ipv4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Names hosts files list that are not names of hosts to block.
const HOSTS_LOCAL: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Parses a domain feed: one name or `*.name` per line, or hosts-file lines (an
/// address, then names); `#` starts a comment; blank lines are skipped, and so are a
/// hosts file's own names (`localhost`…). Every bad line is returned as (line, column,
/// message), 1-based.
pub fn parse_feed(bytes: &[u8]) -> Result<Vec<DomainPattern>, Vec<(u64, u64, String)>> {
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = u64::try_from(n + 1).unwrap_or(u64::MAX);
        let Ok(line) = std::str::from_utf8(raw) else {
            errors.push((line_no, 1, "not UTF-8 text".to_string()));
            continue;
        };
        let content = line.split('#').next().unwrap_or("").trim_end_matches('\r');
        let mut words = content
            .split_ascii_whitespace()
            .map(|w| (w, column_of(line, w)));
        let Some((first, first_col)) = words.next() else {
            continue;
        };
        let hosts = first.parse::<std::net::IpAddr>().is_ok();
        let listed: Vec<(&str, u64)> = if hosts {
            words.collect()
        } else {
            if let Some((extra, col)) = words.next() {
                errors.push((
                    line_no,
                    col,
                    format!(
                        "`{}` after the name: one name per line, or a hosts-file line (`0.0.0.0 name`)",
                        crate::error::excerpt(extra, 80)
                    ),
                ));
                continue;
            }
            vec![(first, first_col)]
        };
        if hosts && listed.is_empty() {
            errors.push((line_no, first_col, "an address without a name".to_string()));
            continue;
        }
        for (word, col) in listed {
            if hosts && HOSTS_LOCAL.contains(&word.to_ascii_lowercase().as_str()) {
                continue;
            }
            match word.parse::<DomainPattern>() {
                Ok(p) => names.push(p),
                Err(message) => errors.push((line_no, col, message)),
            }
        }
        if names.len() > MAX_FEED_NAMES {
            errors.push((
                line_no,
                1,
                format!("more than {MAX_FEED_NAMES} names (the kernel's name table)"),
            ));
            break;
        }
    }
    if errors.is_empty() {
        names.sort();
        names.dedup();
        Ok(names)
    } else {
        Err(errors)
    }
}

/// The 1-based column of `word`, a slice of `line`.
fn column_of(line: &str, word: &str) -> u64 {
    let offset = (word.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
    let chars = line.get(..offset).map_or(0, |p| p.chars().count());
    u64::try_from(chars + 1).unwrap_or(u64::MAX)
}

/// Public DNS-over-HTTPS resolvers a `connect()` to port 443 of is reported as
/// encrypted DNS, unless the policy gives its own list (`dns.encrypted_resolvers`):
/// Cloudflare, Google, Quad9, OpenDNS, AdGuard, in IPv4 and IPv6.
pub const DEFAULT_ENCRYPTED_RESOLVERS: &[&str] = &[
    "1.1.1.1",
    "1.0.0.1",
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
    "9.9.9.9",
    "149.112.112.112",
    "2620:fe::fe",
    "2620:fe::9",
    "208.67.222.222",
    "208.67.220.220",
    "2620:119:35::35",
    "2620:119:53::53",
    "94.140.14.14",
    "94.140.15.15",
    "2a10:50c0::ad1:ff",
    "2a10:50c0::ad2:ff",
];

/// How long answers keep addresses open, and which resolvers are encrypted DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainSettings {
    /// Seconds past the TTL.
    pub grace_seconds: u32,
    /// A TTL above this counts as this.
    pub max_ttl_seconds: u32,
    /// DNS-over-HTTPS resolvers: a `connect()` to their port 443 is reported (as is
    /// any to port 853, DNS over TLS or QUIC).
    pub encrypted_resolvers: Vec<std::net::IpAddr>,
}

impl Default for DomainSettings {
    fn default() -> Self {
        Self {
            grace_seconds: DEFAULT_GRACE_SECONDS,
            max_ttl_seconds: DEFAULT_MAX_TTL_SECONDS,
            encrypted_resolvers: DEFAULT_ENCRYPTED_RESOLVERS
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
        }
    }
}

/// One `egress.deny_domain_feeds` entry, read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainFeed {
    /// Its name (metrics label), the file's stem unless given.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Queries for its names are dropped (the lookup fails with EPERM).
    pub block_queries: bool,
    /// Its names, sorted, without duplicates.
    pub names: Vec<DomainPattern>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_normalise_and_match_as_documented() {
        let exact: DomainPattern = "GitHub.com.".parse().expect("valid");
        assert_eq!(exact.to_string(), "github.com");
        assert!(exact.matches("github.com") && exact.matches("GITHUB.COM."));
        assert!(!exact.matches("api.github.com") && !exact.matches("notgithub.com"));
        let wild: DomainPattern = "*.githubusercontent.com".parse().expect("valid");
        assert!(wild.matches("raw.githubusercontent.com"));
        assert!(wild.matches("a.b.githubusercontent.com"));
        assert!(!wild.matches("githubusercontent.com"));
        assert!(!wild.matches("xgithubusercontent.com"));
        assert!("_dmarc.example.com".parse::<DomainPattern>().is_ok());
        assert!("xn--bcher-kva.example".parse::<DomainPattern>().is_ok());
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (text, says) in [
            ("", "not a domain name"),
            ("*.", "not a domain name"),
            ("a..b", "empty label"),
            ("*.*.example.com", "only allowed as the whole first label"),
            ("ex*ample.com", "only allowed as the whole first label"),
            ("exa mple.com", "not allowed in a name"),
            ("bücher.example", "xn--"),
            ("-a.example", "starts or ends with `-`"),
            ("10.1.2.3", "is an address"),
            ("::1", "not allowed in a name"),
            ("12345", "is a number"),
        ] {
            let err = text.parse::<DomainPattern>().expect_err(text);
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(long
            .parse::<DomainPattern>()
            .expect_err("long")
            .contains("63"));
        let deep = vec!["a"; 33].join(".");
        assert!(deep
            .parse::<DomainPattern>()
            .expect_err("deep")
            .contains("33 labels"));
        let huge = vec!["abcdefghi"; 30].join(".");
        assert!(huge
            .parse::<DomainPattern>()
            .expect_err("huge")
            .contains("253"));
    }

    #[test]
    fn feeds_in_every_format_parse_and_bad_lines_are_located() {
        let text = b"# a blocklist\n\nevil.test\n*.phish.test   # wildcard\n0.0.0.0 ads.test tracker.test\n127.0.0.1 localhost\n::1 ip6-localhost\nEVIL.test\r\n";
        let names = parse_feed(text).expect("valid");
        let shown: Vec<String> = names.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["ads.test", "evil.test", "*.phish.test", "tracker.test"],
            "sorted by name, deduplicated, localhost entries skipped"
        );
        let errors = parse_feed(b"ok.test\n  bad name.test\n0.0.0.0\n0.0.0.0 a..b\n\xff\n")
            .expect_err("bad");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!((errors[0].0, errors[0].1), (2, 7));
        assert!(
            errors[0].2.contains("`name.test` after the name"),
            "{}",
            errors[0].2
        );
        assert_eq!((errors[1].0, errors[1].1), (3, 1));
        assert_eq!((errors[2].0, errors[2].1), (4, 9));
        assert!(errors[2].2.contains("empty label"));
        assert_eq!(errors[3].0, 5);
    }
}
