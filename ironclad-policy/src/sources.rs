//! Where the Shield's prefix sets come from: feed files and countries. Each source is
//! one named set with its own rule id, so the counters say which feed or country
//! matched a packet.
//!
//! Sources are read while the policy is read: a feed file with a bad entry (strict
//! mode), an unreadable file or a bad GeoIP database fails the whole policy, with the
//! position of each problem, before anything reaches the kernel.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use ironclad_core::abi::Action;

use std::collections::HashMap;

use crate::aggregate::{aggregate_except, subtract};
use crate::feeds::{read_feed, FeedFormat, Strictness};
use crate::fetch::FetchSpec;
use crate::geo::country_networks;
use crate::shield::PrefixSet;
use crate::{ConfigError, Diagnostic, Origin, PolicyError};

/// What a source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A feed file.
    Feed {
        /// The file, as resolved (relative paths are relative to the policy file).
        path: PathBuf,
        /// Its format.
        format: FeedFormat,
        /// Strict or lenient.
        strictness: Strictness,
        /// How often the daemon reads it again (`None`: on reload only); for a fetched
        /// feed, how often it is fetched.
        refresh: Option<Duration>,
        /// For a feed with `url`: how it is fetched (`path` is then its cached copy).
        fetch: Option<FetchSpec>,
    },
    /// A country of a GeoIP database.
    Country {
        /// ISO 3166-1 alpha-2 code.
        code: String,
        /// The database.
        db: PathBuf,
    },
    /// Every global address ([`everything_but_local`]): the deny set of
    /// `allow_countries`.
    Everything,
}

/// One source of a prefix set, and what reading it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The set's name (also the rule's label in counters and metrics).
    pub name: String,
    /// What it is.
    pub kind: SourceKind,
    /// Deny or allow.
    pub action: Action,
    /// Entries skipped as bad (lenient feeds).
    pub skipped: usize,
    /// Entries whose host bits were masked (lenient feeds).
    pub masked: usize,
    /// When the data was produced: a feed file's modification time (a fetched feed: when
    /// the server last confirmed it), the database's.
    pub modified: Option<SystemTime>,
    /// Where it was defined in the policy.
    pub origin: Origin,
    /// What a lenient feed skipped or masked, with positions (at most
    /// [`crate::feeds::MAX_REPORTED`], then a summary): `check` and the daemon print them.
    pub warnings: Vec<Diagnostic>,
}

/// A feed entry of the policy (`shield.deny_feeds[i]`), before reading.
#[derive(Debug, Clone)]
pub struct FeedSpec {
    /// `name`, or the file's stem.
    pub name: String,
    /// The file (already resolved against the policy's directory).
    pub path: PathBuf,
    /// The format.
    pub format: FeedFormat,
    /// Strict unless `strict: false`.
    pub strictness: Strictness,
    /// `refresh`.
    pub refresh: Option<Duration>,
    /// Deny or allow.
    pub action: Action,
    /// Where in the policy.
    pub origin: Origin,
    /// For a feed with `url`: how it is fetched.
    pub fetch: Option<FetchSpec>,
}

/// The sets and their sources, plus problems found in the source files themselves
/// (reported with the file's own path and position).
#[derive(Debug, Default)]
pub struct Loaded {
    /// One set per source.
    pub sets: Vec<PrefixSet>,
    /// What each set came from, in the same order.
    pub sources: Vec<Source>,
    /// Problems in feed files and databases, at their lines.
    pub file_problems: Vec<Diagnostic>,
    /// Files that could not be used at all (missing, not a regular file, too large, not
    /// a database), reported at the policy field that names them.
    pub problems: Vec<PolicyError>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Loaded {
    /// Keeps a source file's problems: line problems under the file's own name; a file
    /// that could not be used at all at `origin`, the policy entry that names it.
    fn failed(&mut self, error: ConfigError, origin: &Origin) {
        match error.diagnostics.as_slice() {
            [d] if d.is_whole_file() => self.problems.push(PolicyError::Invalid {
                origin: origin.clone(),
                message: format!("`{}`: {}", d.path.display(), d.message),
            }),
            _ => self.file_problems.extend(error.diagnostics),
        }
    }

    fn push(&mut self, source: Source, prefixes: Vec<IpNetwork>) {
        self.sets.push(PrefixSet {
            name: source.name.clone(),
            action: source.action,
            prefixes,
            origin: source.origin.clone(),
        });
        self.sources.push(source);
    }

    /// Reads each feed.
    pub fn feeds(&mut self, feeds: &[FeedSpec]) {
        for feed in feeds {
            let source = |skipped, masked, modified, warnings| Source {
                name: feed.name.clone(),
                kind: SourceKind::Feed {
                    path: feed.path.clone(),
                    format: feed.format.clone(),
                    strictness: feed.strictness,
                    refresh: feed.refresh,
                    fetch: feed.fetch.clone(),
                },
                action: feed.action,
                skipped,
                masked,
                modified,
                origin: feed.origin.clone(),
                warnings,
            };
            if feed.fetch.is_some() && !feed.path.exists() {
                // Not fetched yet: an empty set until the first download succeeds.
                self.push(source(0, 0, None, Vec::new()), Vec::new());
                continue;
            }
            let fetched_at = feed
                .fetch
                .as_ref()
                .and_then(FetchSpec::meta)
                .map(|m| m.checked());
            match read_feed(&feed.path, &feed.format, feed.strictness) {
                Ok(parsed) => self.push(
                    source(
                        parsed.skipped,
                        parsed.masked,
                        fetched_at.or_else(|| modified(&feed.path)),
                        parsed.warnings,
                    ),
                    parsed.prefixes,
                ),
                Err(e) => self.failed(e, &feed.origin),
            }
        }
    }

    /// Reads the countries' networks from `db`: `deny` lists countries to deny;
    /// `allow` (allow-list mode) denies every global address and allows the listed
    /// countries; [`LOCAL_SPACE`] is left alone.
    pub fn countries(
        &mut self,
        db: &Path,
        codes: &[(String, Origin)],
        allow_list: bool,
        db_origin: &Origin,
    ) {
        let wanted: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
        let found = match country_networks(db, &wanted) {
            Ok(found) => found,
            Err(e) => {
                self.failed(e, db_origin);
                return;
            }
        };
        let when = modified(db);
        if allow_list {
            self.push(
                Source {
                    name: "geo:other-countries".to_string(),
                    kind: SourceKind::Everything,
                    action: Action::Deny,
                    skipped: 0,
                    masked: 0,
                    modified: when,
                    origin: db_origin.clone(),
                    warnings: Vec::new(),
                },
                everything_but_local(),
            );
        }
        for (code, origin) in codes {
            let prefixes = found.get(code).cloned().unwrap_or_default();
            self.push(
                Source {
                    name: format!("country:{code}"),
                    kind: SourceKind::Country {
                        code: code.clone(),
                        db: db.to_path_buf(),
                    },
                    action: if allow_list {
                        Action::Allow
                    } else {
                        Action::Deny
                    },
                    skipped: 0,
                    masked: 0,
                    modified: when,
                    origin: origin.clone(),
                    warnings: Vec::new(),
                },
                prefixes,
            );
        }
    }
}

/// Aggregates each set's prefixes (adjacent and overlapping prefixes of one source
/// merge, covered ones go) without changing which rule any address matches: `rules` are
/// the policy's single-prefix rules, and every other set counts too.
pub fn aggregate_sets(sets: &mut [PrefixSet], rules: &[IpNetwork]) {
    let mut listed: HashMap<IpNetwork, usize> = HashMap::new();
    for set in sets.iter_mut() {
        set.prefixes.sort_unstable();
        set.prefixes.dedup();
    }
    for net in rules.iter().chain(sets.iter().flat_map(|s| &s.prefixes)) {
        *listed.entry(*net).or_default() += 1;
    }
    for set in sets.iter_mut() {
        let own = &set.prefixes;
        let elsewhere = |net: &IpNetwork| {
            let total = listed.get(net).copied().unwrap_or(0);
            total > usize::from(own.binary_search(net).is_ok())
        };
        set.prefixes = aggregate_except(own, elsewhere);
    }
}

/// Address space no GeoIP database places in a country and a host must keep reaching:
/// private, shared (CGNAT), loopback, link-local, multicast, ULA. `allow_countries`
/// leaves it alone; deny it explicitly if wanted.
pub const LOCAL_SPACE: [&str; 12] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Both families' whole address space without [`LOCAL_SPACE`].
pub fn everything_but_local() -> Vec<IpNetwork> {
    let local: Vec<IpNetwork> = LOCAL_SPACE.iter().filter_map(|s| s.parse().ok()).collect();
    ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .flat_map(|whole| subtract(whole, &local))
        .collect()
}

/// A feed's default name: its file stem (`drop` for `/x/drop.txt`).
pub fn default_name(path: &Path) -> Option<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shield::{compile, Owner, ShieldPolicy};
    use ipnetwork::Ipv4Network;
    use ironclad_testing::rules::Rng;
    use std::net::Ipv4Addr;

    /// The owner's label of the longest matching prefix of `addr`: the rule the kernel's
    /// longest-prefix match would pick, computed here in user space from the compiled
    /// policy (owners settle ties). The kernel's own lookups are not consulted.
    fn winner(
        owners: &[(IpNetwork, Owner)],
        policy: &crate::shield::CompiledShield,
        addr: Ipv4Addr,
    ) -> Option<String> {
        owners
            .iter()
            .filter(|(net, _)| net.contains(std::net::IpAddr::V4(addr)))
            .max_by_key(|(net, _)| net.prefix())
            .map(|(_, owner)| match owner {
                Owner::Rule(i) => format!("rule {}", policy.rules[*i].cidr),
                Owner::Set(i) => format!("set {}", policy.sets[*i].name),
            })
    }

    #[test]
    fn aggregation_never_changes_which_rule_an_address_matches() {
        let mut rng = Rng::new(11);
        let base =
            Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 0), 20).unwrap_or_else(|e| panic!("{e}"));
        let mut merged = 0;
        for round in 0..40 {
            let mut random = |count: u64| -> Vec<IpNetwork> {
                (0..count)
                    .map(|_| {
                        IpNetwork::V4(ironclad_testing::rules::prefix_in_v4(
                            &mut rng, base, 23, 32,
                        ))
                    })
                    .collect()
            };
            let deny_rules = random(5);
            let allow_rules: Vec<IpNetwork> = random(3)
                .into_iter()
                .filter(|n| !deny_rules.contains(n))
                .collect();
            let sets: Vec<PrefixSet> = (0..4)
                .map(|i| PrefixSet {
                    name: format!("s{i}"),
                    action: if i == 1 { Action::Allow } else { Action::Deny },
                    prefixes: random(150),
                    origin: Origin::field(format!("s{i}")),
                })
                .collect();
            let mut policy = ShieldPolicy::from_lists(&deny_rules, &allow_rules, &[]);
            policy.sets = sets.clone();
            let before = compile(&policy).unwrap_or_else(|e| panic!("{e:?}"));
            let mut aggregated = sets;
            let inline: Vec<IpNetwork> = deny_rules.iter().chain(&allow_rules).copied().collect();
            aggregate_sets(&mut aggregated, &inline);
            policy.sets = aggregated;
            let after = compile(&policy).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(after.ipv4_prefixes() <= before.ipv4_prefixes());
            merged += before.ipv4_prefixes() - after.ipv4_prefixes();
            let (owners_before, owners_after) = (before.owners(), after.owners());
            // Every address of the /20 the prefixes were drawn from.
            for offset in 0..(1u32 << 12) {
                let addr = Ipv4Addr::from(u32::from(base.network()) + offset);
                assert_eq!(
                    winner(&owners_before, &before, addr),
                    winner(&owners_after, &after, addr),
                    "round {round}, {addr}: before {:?} after {:?}",
                    owners_before
                        .iter()
                        .filter(|(n, _)| n.contains(std::net::IpAddr::V4(addr)))
                        .collect::<Vec<_>>(),
                    owners_after
                        .iter()
                        .filter(|(n, _)| n.contains(std::net::IpAddr::V4(addr)))
                        .collect::<Vec<_>>(),
                );
            }
        }
        assert!(
            merged > 100,
            "the sets did aggregate ({merged} prefixes fewer)"
        );
    }
}
