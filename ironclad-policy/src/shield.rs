//! The Shield's policy: deny and allow CIDRs, the management safety valve, the mode,
//! per-source rate limiting and drop-event sampling.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use ironclad_core::abi::{
    Action, LpmV4Key, LpmV6Key, Rule, ShieldConfig, SHIELD_F_DRY_RUN, SHIELD_MAX_RULES,
    SHIELD_MAX_V4_PREFIXES, SHIELD_MAX_V6_PREFIXES, SHIELD_MAX_VALVE_PREFIXES,
};

use crate::error::{Origin, PolicyError};

/// Default drop-event sampling: one event per this many drops (per CPU).
pub const DEFAULT_SAMPLE_RATE: u32 = 64;

/// A CIDR as written in the policy, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The prefix.
    pub net: IpNetwork,
    /// Where it was written.
    pub origin: Origin,
}

impl Entry {
    /// An entry for `net` written at `field`.
    pub fn new(net: IpNetwork, field: impl Into<String>) -> Self {
        Self {
            net,
            origin: Origin::field(field),
        }
    }
}

/// Enforce, or only count and report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Drop what the policy denies.
    #[default]
    Enforce,
    /// Count and report what would be dropped; pass everything.
    DryRun,
}

/// A per-source token bucket: `pps` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Packets per second per source address.
    pub pps: u32,
    /// Packets a source may send at once after being idle.
    pub burst: u32,
}

/// What the operator wrote for the Shield.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldPolicy {
    /// Sources to drop.
    pub deny: Vec<Entry>,
    /// Exceptions inside denied ranges (longest prefix wins).
    pub allow: Vec<Entry>,
    /// Management sources that always pass, whatever the rules say.
    pub management: Vec<Entry>,
    /// Enforce or dry-run.
    pub mode: Mode,
    /// Optional per-source rate limit.
    pub rate_limit: Option<RateLimit>,
    /// One drop event per this many drops (per CPU); 0 = no events.
    pub sample_rate: u32,
}

impl Default for ShieldPolicy {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            allow: Vec::new(),
            management: Vec::new(),
            mode: Mode::Enforce,
            rate_limit: None,
            sample_rate: DEFAULT_SAMPLE_RATE,
        }
    }
}

impl ShieldPolicy {
    /// A policy denying `deny`, allowing `allow` and never blocking `management`, with
    /// the other settings at their defaults. Fields are named `shield.<list>[i]`.
    pub fn from_lists(deny: &[IpNetwork], allow: &[IpNetwork], management: &[IpNetwork]) -> Self {
        let entries = |name: &str, list: &[IpNetwork]| {
            list.iter()
                .enumerate()
                .map(|(i, net)| Entry::new(*net, format!("shield.{name}[{i}]")))
                .collect()
        };
        Self {
            deny: entries("deny", deny),
            allow: entries("allow", allow),
            management: entries("management", management),
            ..Self::default()
        }
    }
}

/// One rule with its own counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// Proposed index of the rule's counter (1-based, in policy order). When a policy is
    /// applied to a Shield that already has the prefix, its existing id is kept.
    pub id: u32,
    /// The prefix.
    pub cidr: IpNetwork,
    /// Deny or allow.
    pub action: Action,
    /// Where it came from (`shield.deny[0]`).
    pub origin: String,
}

/// The Shield policy compiled to what goes into the kernel maps. Compilation is pure
/// and deterministic: the same policy always gives the same rules, ids and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledShield {
    /// Rules in id order.
    pub rules: Vec<CompiledRule>,
    /// The safety valve, deduplicated and sorted.
    pub management: Vec<IpNetwork>,
    /// Enforce or dry-run.
    pub mode: Mode,
    /// Per-source rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Drop-event sampling (0 = none).
    pub sample_rate: u32,
    /// Entries dropped because the same prefix with the same action was listed earlier.
    pub duplicates_merged: usize,
}

impl CompiledShield {
    /// Number of IPv4 rule prefixes.
    pub fn ipv4_prefixes(&self) -> usize {
        self.rules.iter().filter(|r| r.cidr.is_ipv4()).count()
    }

    /// Number of IPv6 rule prefixes.
    pub fn ipv6_prefixes(&self) -> usize {
        self.rules.iter().filter(|r| r.cidr.is_ipv6()).count()
    }

    /// The runtime configuration record for the kernel.
    pub fn config(&self) -> ShieldConfig {
        ShieldConfig {
            flags: if self.mode == Mode::DryRun {
                SHIELD_F_DRY_RUN
            } else {
                0
            },
            sample_rate: self.sample_rate,
            rate_pps: self.rate_limit.map_or(0, |r| r.pps),
            rate_burst: self.rate_limit.map_or(0, |r| r.burst),
        }
    }

    /// The IPv4 trie entries.
    pub fn v4_entries(&self) -> impl Iterator<Item = (LpmV4Key, Rule)> + '_ {
        self.rules.iter().filter_map(|r| match r.cidr {
            IpNetwork::V4(n) => Some((
                LpmV4Key {
                    prefixlen: u32::from(n.prefix()),
                    addr: n.network().octets(),
                },
                Rule::new(r.id, r.action),
            )),
            IpNetwork::V6(_) => None,
        })
    }

    /// The IPv6 trie entries.
    pub fn v6_entries(&self) -> impl Iterator<Item = (LpmV6Key, Rule)> + '_ {
        self.rules.iter().filter_map(|r| match r.cidr {
            IpNetwork::V6(n) => Some((
                LpmV6Key {
                    prefixlen: u32::from(n.prefix()),
                    addr: n.network().octets(),
                },
                Rule::new(r.id, r.action),
            )),
            IpNetwork::V4(_) => None,
        })
    }
}

fn check_network(entry: &Entry) -> Result<(), PolicyError> {
    let cidr = entry.net;
    let network = IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
    if network.ip() == cidr.ip() {
        Ok(())
    } else {
        Err(PolicyError::HostBitsSet {
            origin: entry.origin.clone(),
            cidr,
            network,
        })
    }
}

/// Compiles `policy`. Every problem found is returned, not just the first.
///
/// An entry listed twice with the same action keeps one rule (the first) and is counted
/// in `duplicates_merged`; overlapping entries stay separate rules, so each keeps its
/// own counter (the longest prefix decides which one counts a packet). A prefix both
/// denied and allowed is an error.
pub fn compile(policy: &ShieldPolicy) -> Result<CompiledShield, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<IpNetwork, (Action, String)> = BTreeMap::new();
    let mut rules = Vec::new();
    let mut duplicates_merged = 0;
    for (list, action) in [(&policy.deny, Action::Deny), (&policy.allow, Action::Allow)] {
        for entry in list {
            if let Err(e) = check_network(entry) {
                errors.push(e);
                continue;
            }
            match seen.get(&entry.net) {
                Some((a, _)) if *a == action => {
                    duplicates_merged += 1;
                    continue;
                }
                Some((_, other)) => {
                    errors.push(PolicyError::Conflict {
                        origin: entry.origin.clone(),
                        cidr: entry.net,
                        other: other.clone(),
                    });
                    continue;
                }
                None => {}
            }
            seen.insert(entry.net, (action, entry.origin.field.clone()));
            rules.push(CompiledRule {
                id: u32::try_from(rules.len() + 1).unwrap_or(u32::MAX),
                cidr: entry.net,
                action,
                origin: entry.origin.field.clone(),
            });
        }
    }
    let v4 = rules.iter().filter(|r| r.cidr.is_ipv4()).count();
    let limits = [
        ("shield", rules.len(), SHIELD_MAX_RULES - 1),
        ("shield (IPv4)", v4, SHIELD_MAX_V4_PREFIXES),
        ("shield (IPv6)", rules.len() - v4, SHIELD_MAX_V6_PREFIXES),
    ];
    for (field, count, limit) in limits {
        if count > limit as usize {
            errors.push(PolicyError::TooMany {
                origin: Origin::field(field),
                count,
                limit,
            });
        }
    }
    let mut management = Vec::new();
    for entry in &policy.management {
        match check_network(entry) {
            Ok(()) => management.push(entry.net),
            Err(e) => errors.push(e),
        }
    }
    management.sort();
    management.dedup();
    for family_v4 in [true, false] {
        let count = management
            .iter()
            .filter(|n| n.is_ipv4() == family_v4)
            .count();
        if count > SHIELD_MAX_VALVE_PREFIXES as usize {
            errors.push(PolicyError::TooMany {
                origin: Origin::field("shield.management"),
                count,
                limit: SHIELD_MAX_VALVE_PREFIXES,
            });
        }
    }
    if let Some(rate) = policy.rate_limit {
        if rate.pps == 0 || rate.burst == 0 {
            errors.push(PolicyError::Invalid {
                origin: Origin::field("shield.rate_limit"),
                message: "pps and burst must both be at least 1".to_string(),
            });
        }
    }
    if errors.is_empty() {
        Ok(CompiledShield {
            rules,
            management,
            mode: policy.mode,
            rate_limit: policy.rate_limit,
            sample_rate: policy.sample_rate,
            duplicates_merged,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn compiles_rules_with_stable_ids_and_keys() {
        let policy = ShieldPolicy::from_lists(
            &nets(&["10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"]),
            &nets(&["10.1.2.3/32"]),
            &nets(&["192.0.2.1/32", "192.0.2.1/32"]),
        );
        let compiled = compile(&policy).expect("valid");
        let ids: Vec<(u32, &str)> = compiled
            .rules
            .iter()
            .map(|r| (r.id, r.origin.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (1, "shield.deny[0]"),
                (2, "shield.deny[1]"),
                (3, "shield.allow[0]")
            ]
        );
        assert_eq!(compiled.duplicates_merged, 1);
        assert_eq!(compiled.ipv4_prefixes(), 2);
        assert_eq!(compiled.ipv6_prefixes(), 1);
        assert_eq!(compiled.management.len(), 1);
        let v4: Vec<_> = compiled.v4_entries().collect();
        assert_eq!(v4[0].0.to_bytes(), [8, 0, 0, 0, 10, 0, 0, 0]);
        assert_eq!(v4[1].1, Rule::new(3, Action::Allow));
        assert_eq!(compile(&policy), compile(&policy), "deterministic");
    }

    #[test]
    fn reports_every_error_with_its_field() {
        let policy = ShieldPolicy::from_lists(
            &nets(&["10.0.0.1/8", "192.0.2.0/24"]),
            &nets(&["192.0.2.0/24"]),
            &nets(&["fd00::1/64"]),
        );
        let errors = compile(&policy).expect_err("invalid");
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                "shield.deny[0]: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
                "shield.allow[0]: `192.0.2.0/24` is also listed at shield.deny[1], with the opposite action",
                "shield.management[0]: `fd00::1/64` has host bits set; did you mean `fd00::/64`?",
            ]
        );
    }

    #[test]
    fn config_record_carries_mode_rate_and_sampling() {
        let policy = ShieldPolicy {
            mode: Mode::DryRun,
            rate_limit: Some(RateLimit {
                pps: 1000,
                burst: 2000,
            }),
            sample_rate: 1,
            ..ShieldPolicy::default()
        };
        let config = compile(&policy).expect("valid").config();
        assert_eq!(config.flags, SHIELD_F_DRY_RUN);
        assert_eq!((config.rate_pps, config.rate_burst), (1000, 2000));
        assert_eq!(config.sample_rate, 1);
        let bad = ShieldPolicy {
            rate_limit: Some(RateLimit { pps: 0, burst: 5 }),
            ..ShieldPolicy::default()
        };
        assert!(compile(&bad).is_err());
    }
}
