//! The Shield's policy: deny and allow CIDRs, the management safety valve, dry-run.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use ironclad_core::abi::{Action, LpmV4Key, LpmV6Key, Rule, SHIELD_MAX_RULES};

use crate::error::PolicyError;

/// What the operator wrote for the Shield.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShieldPolicy {
    /// Sources to drop.
    pub deny: Vec<IpNetwork>,
    /// Exceptions inside denied ranges (longest prefix wins).
    pub allow: Vec<IpNetwork>,
    /// Management sources that always pass, whatever the rules say.
    pub management: Vec<IpNetwork>,
    /// Count and report, never drop.
    pub dry_run: bool,
}

/// One rule with its own counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// Index of the rule's counter in the kernel.
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledShield {
    /// Rules in id order; ids start at 1 (0 is never used, so a zeroed entry is no rule).
    pub rules: Vec<CompiledRule>,
    /// The safety valve, deduplicated and sorted.
    pub management: Vec<IpNetwork>,
    /// Dry-run mode.
    pub dry_run: bool,
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

fn check_network(field: &str, cidr: IpNetwork) -> Result<(), PolicyError> {
    let network = IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
    if network.ip() == cidr.ip() {
        Ok(())
    } else {
        Err(PolicyError::HostBitsSet {
            field: field.to_string(),
            cidr,
            network,
        })
    }
}

/// Compiles `policy`. Every problem found is returned, not just the first.
///
/// An entry listed twice with the same action keeps one rule (the first); a prefix both
/// denied and allowed is an error.
pub fn compile(policy: &ShieldPolicy) -> Result<CompiledShield, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<IpNetwork, (Action, String)> = BTreeMap::new();
    let mut rules = Vec::new();
    let lists = [
        ("shield.deny", &policy.deny, Action::Deny),
        ("shield.allow", &policy.allow, Action::Allow),
    ];
    for (name, list, action) in lists {
        for (index, cidr) in list.iter().enumerate() {
            let field = format!("{name}[{index}]");
            if let Err(e) = check_network(&field, *cidr) {
                errors.push(e);
                continue;
            }
            match seen.get(cidr) {
                Some((a, _)) if *a == action => continue,
                Some((_, other)) => {
                    errors.push(PolicyError::Conflict {
                        field,
                        cidr: *cidr,
                        other: other.clone(),
                    });
                    continue;
                }
                None => {}
            }
            seen.insert(*cidr, (action, field.clone()));
            rules.push(CompiledRule {
                id: u32::try_from(rules.len() + 1).unwrap_or(u32::MAX),
                cidr: *cidr,
                action,
                origin: field,
            });
        }
    }
    if rules.len() >= SHIELD_MAX_RULES as usize {
        errors.push(PolicyError::TooManyRules {
            field: "shield".to_string(),
            count: rules.len(),
            limit: SHIELD_MAX_RULES - 1,
        });
    }
    let mut management = Vec::new();
    for (index, cidr) in policy.management.iter().enumerate() {
        let field = format!("shield.management[{index}]");
        match check_network(&field, *cidr) {
            Ok(()) => management.push(*cidr),
            Err(e) => errors.push(e),
        }
    }
    management.sort();
    management.dedup();
    if errors.is_empty() {
        Ok(CompiledShield {
            rules,
            management,
            dry_run: policy.dry_run,
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
        let policy = ShieldPolicy {
            deny: nets(&["10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"]),
            allow: nets(&["10.1.2.3/32"]),
            management: nets(&["192.0.2.1/32", "192.0.2.1/32"]),
            dry_run: false,
        };
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
        let policy = ShieldPolicy {
            deny: nets(&["10.0.0.1/8", "192.0.2.0/24"]),
            allow: nets(&["192.0.2.0/24"]),
            management: nets(&["fd00::1/64"]),
            dry_run: false,
        };
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
}
