//! The Shield's policy: deny and allow CIDRs, named prefix sets (feeds, countries), the
//! management safety valve, the mode, per-source rate limiting, drop-event sampling and
//! the IPv4 lookup (compiled fast path or LPM trie).

use std::collections::{BTreeMap, BTreeSet};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ironclad_core::abi::{
    Action, LpmV4Key, LpmV6Key, Rule, ShieldConfig, SHIELD_F_DRY_RUN, SHIELD_MAX_RULES,
    SHIELD_MAX_V4_PREFIXES, SHIELD_MAX_V6_PREFIXES, SHIELD_MAX_VALVE_PREFIXES, SHIELD_V4_GROUPS,
    SHIELD_V6_RECORDS,
};

use crate::compact::PrefixList;
use crate::error::{Origin, PolicyError};
use crate::sources::Source;

/// Default drop-event sampling: one event per this many drops (per CPU).
pub const DEFAULT_SAMPLE_RATE: u32 = 64;

/// The largest sample rate (one event per 16,777,215 drops): the kernel keeps the rate
/// in 24 bits of the Shield's active word, which every packet reads anyway.
pub const MAX_SAMPLE_RATE: u32 = ironclad_core::abi::ACTIVE_SAMPLE_MAX;

/// Default cap on drop events: at most this many a second on each CPU. Under a flood,
/// 1-in-64 sampling alone would report hundreds of thousands of events a second, each
/// paid for on the drop path; past the cap a sampled drop is only counted
/// (`events_over_budget`).
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 1000;

/// A CIDR as written in the policy, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

/// How the Shield looks IPv4 sources up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ipv4Lookup {
    /// The compiled fast path when the rules fit it (see [`crate::fastpath`]), the LPM
    /// trie otherwise.
    #[default]
    Auto,
    /// Always the fast path; a rule set that does not fit is an error.
    Fast,
    /// Always the kernel's LPM trie.
    Trie,
}

impl Ipv4Lookup {
    /// The policy word: `auto`, `fast` or `trie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fast => "fast",
            Self::Trie => "trie",
        }
    }
}

/// How the Shield looks IPv6 sources up: the same three choices as for IPv4, with the
/// compiled IPv6 table ([`crate::fastpath6`]) as the fast path.
pub type Ipv6Lookup = Ipv4Lookup;

/// A named set of prefixes that share one rule id, so one counter says how much the
/// whole set (a threat feed, a country) matched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrefixSet {
    /// Name, 1 to 47 bytes, unique in the policy.
    pub name: String,
    /// Deny or allow.
    pub action: Action,
    /// The prefixes (either family). Shared: a source read again unchanged (see
    /// [`crate::sources::SourceCache`]) hands the same list to the next policy, and
    /// everything built from it can tell at a glance that it did not change.
    pub prefixes: std::sync::Arc<PrefixList>,
    /// Where the set was defined.
    pub origin: Origin,
}

impl PrefixSet {
    /// A set named `name` whose prefixes take `action`, defined at `origin`.
    pub fn new(
        name: impl Into<String>,
        action: Action,
        prefixes: impl IntoIterator<Item = IpNetwork>,
        origin: Origin,
    ) -> Self {
        Self {
            name: name.into(),
            action,
            prefixes: std::sync::Arc::new(prefixes.into_iter().collect()),
            origin,
        }
    }
}

/// What the operator wrote for the Shield.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// At most this many drop events a second on each CPU; 0 = no cap.
    pub events_per_second: u32,
    /// Named prefix sets, one rule (and counter) each.
    pub sets: Vec<PrefixSet>,
    /// How IPv4 sources are looked up.
    pub ipv4_lookup: Ipv4Lookup,
    /// How IPv6 sources are looked up.
    pub ipv6_lookup: Ipv6Lookup,
    /// Where the sets that came from feeds and countries were read from.
    pub sources: Vec<Source>,
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
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            sets: Vec::new(),
            ipv4_lookup: Ipv4Lookup::Auto,
            ipv6_lookup: Ipv6Lookup::Auto,
            sources: Vec::new(),
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
#[non_exhaustive]
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

/// A prefix set with its own counter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledSet {
    /// Proposed rule id (after the single rules, in policy order). When a policy is
    /// applied to a Shield that already has a set of this name, its existing id is kept.
    pub id: u32,
    /// The set's name.
    pub name: String,
    /// Deny or allow.
    pub action: Action,
    /// The prefixes, sorted and deduplicated.
    pub prefixes: std::sync::Arc<PrefixList>,
    /// Where it came from.
    pub origin: String,
}

impl CompiledSet {
    /// How many of the prefixes are IPv4 (the list keeps them apart: no walk over a
    /// million prefixes on every reload).
    pub fn ipv4_count(&self) -> usize {
        self.prefixes.ipv4_len()
    }
}

/// Which rule of a [`CompiledShield`] owns a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// `rules[i]`.
    Rule(usize),
    /// `sets[i]`.
    Set(usize),
}

/// The Shield policy compiled to what goes into the kernel maps. Compilation is pure
/// and deterministic: the same policy always gives the same rules, ids and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Drop events a second per CPU at most (0 = no cap).
    pub events_per_second: u32,
    /// Entries dropped because the same prefix with the same action was listed earlier.
    pub duplicates_merged: usize,
    /// Prefix sets in id order, after the rules.
    pub sets: Vec<CompiledSet>,
    /// How IPv4 sources are looked up.
    pub ipv4_lookup: Ipv4Lookup,
    /// How IPv6 sources are looked up.
    pub ipv6_lookup: Ipv6Lookup,
    /// Where the feed and country sets were read from.
    pub sources: Vec<Source>,
}

impl CompiledShield {
    /// Number of IPv4 prefixes of rules and sets (a prefix in several places counts
    /// once per place).
    pub fn ipv4_prefixes(&self) -> usize {
        self.rules.iter().filter(|r| r.cidr.is_ipv4()).count()
            + self.sets.iter().map(CompiledSet::ipv4_count).sum::<usize>()
    }

    /// Number of IPv6 prefixes of rules and sets.
    pub fn ipv6_prefixes(&self) -> usize {
        self.rules.iter().filter(|r| r.cidr.is_ipv6()).count()
            + self
                .sets
                .iter()
                .map(|s| s.prefixes.len() - s.ipv4_count())
                .sum::<usize>()
    }

    /// Every distinct prefix with the rule that owns it, sorted by prefix. When the same
    /// prefix is in several places, a single rule owns it before any set, an allow set
    /// before a deny set, and otherwise the one listed first.
    ///
    /// The rules and each set are sorted lists (a set's as compiled; one that is not is
    /// sorted here), so this is a merge of them in the order of who wins a tie: a
    /// million prefixes in a few lists cost a pass, not a sort.
    pub fn owners(&self) -> Vec<(IpNetwork, Owner)> {
        let mut out = Vec::with_capacity(self.ipv4_prefixes() + self.ipv6_prefixes());
        self.visit_owners(|net, owner| out.push((net, owner)));
        out
    }

    /// [`CompiledShield::owners`] one at a time, in order, without a list of them all
    /// (a million prefixes make a 40 MB list).
    pub fn visit_owners(&self, mut visit: impl FnMut(IpNetwork, Owner)) {
        use std::borrow::Cow;
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut rules: Vec<(IpNetwork, usize)> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.cidr, i))
            .collect();
        rules.sort_unstable();
        rules.dedup_by_key(|(net, _)| *net);
        let rule_nets: Vec<IpNetwork> = rules.iter().map(|(net, _)| *net).collect();
        // The lists in the order ties are settled: the rules, allow sets, deny sets.
        let mut sets: Vec<(usize, &CompiledSet)> = self.sets.iter().enumerate().collect();
        sets.sort_by_key(|(i, set)| (set.action != Action::Allow, *i));
        let rule_list = PrefixList::from(rule_nets);
        let mut lists: Vec<(Cow<'_, PrefixList>, Option<usize>)> =
            vec![(Cow::Borrowed(&rule_list), None)];
        for (i, set) in sets {
            let list = if set.prefixes.is_sorted() {
                Cow::Borrowed(&*set.prefixes)
            } else {
                let mut sorted = PrefixList::clone(&set.prefixes);
                sorted.sort_dedup();
                Cow::Owned(sorted)
            };
            lists.push((list, Some(i)));
        }
        let mut last: Option<IpNetwork> = None;
        // The next prefix of each list, smallest first, the earlier list first on a tie.
        let mut heads: BinaryHeap<Reverse<(IpNetwork, usize, usize)>> = lists
            .iter()
            .enumerate()
            .filter_map(|(l, (list, _))| list.first().map(|net| Reverse((net, l, 0))))
            .collect();
        let owner = |l: usize, at: usize| match lists[l].1 {
            Some(set) => Owner::Set(set),
            None => Owner::Rule(rules[at].1),
        };
        while let Some(Reverse((net, l, mut at))) = heads.pop() {
            if last != Some(net) {
                visit(net, owner(l, at));
            }
            // The run of this list below every other list's next prefix goes out as it
            // is (one feed beside a few rules is one long run).
            let list = &lists[l].0;
            let bound = heads.peek().map(|Reverse((next, _, _))| *next);
            at += 1;
            let mut visited = net;
            while let Some(next) = list.get(at).filter(|n| bound.is_none_or(|b| *n < b)) {
                visit(next, owner(l, at));
                visited = next;
                at += 1;
            }
            last = Some(visited);
            if let Some(next) = list.get(at) {
                heads.push(Reverse((next, l, at)));
            }
        }
    }

    /// The rule that owns exactly `net`, as [`CompiledShield::owners`] decides it (a
    /// single rule before any set, an allow set before a deny set, else the one listed
    /// first), found by a search of each set instead of a sort of every prefix.
    pub fn owner_of(&self, net: &IpNetwork) -> Option<Owner> {
        if let Some(i) = self.rules.iter().position(|r| r.cidr == *net) {
            return Some(Owner::Rule(i));
        }
        self.sets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.prefixes.contains(net))
            .min_by_key(|(i, s)| (u8::from(s.action != Action::Allow), *i))
            .map(|(i, _)| Owner::Set(i))
    }

    /// The action of `owner`.
    pub fn action_of(&self, owner: Owner) -> Action {
        match owner {
            Owner::Rule(i) => self.rules.get(i).map_or(Action::None, |r| r.action),
            Owner::Set(i) => self.sets.get(i).map_or(Action::None, |s| s.action),
        }
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
            events_per_sec: self.events_per_second,
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

/// Something a policy may mean but probably does not: it compiles, and `check` says so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// The field (`shield.deny[0]`, a feed's or country's field).
    pub field: String,
    /// Its position when known.
    pub at: Option<(u64, u64)>,
    /// What is probably wrong and what to do.
    pub message: String,
}

/// The fast-path compilers' inputs of a policy, by family.
struct FastInputs {
    v4: Vec<(Ipv4Network, u16)>,
    v6: Vec<(Ipv6Network, u16)>,
    valve4: Vec<Ipv4Network>,
    valve6: Vec<Ipv6Network>,
}

impl CompiledShield {
    /// Every prefix with a fast-path entry, and the valve, split by family, as the
    /// loader's compilers take them. What a table needs depends on where the prefixes
    /// are and on which of them share a rule (a span node holds one rule's runs), not on
    /// the ids: each owner gets an id of its own, as the loader's plan gives it.
    fn fast_inputs(&self) -> FastInputs {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        self.visit_owners(|net, owner| {
            let id = match owner {
                Owner::Rule(i) => i + 1,
                Owner::Set(i) => self.rules.len() + i + 1,
            };
            let entry = crate::fastpath::entry(id as u32, self.action_of(owner));
            match net {
                IpNetwork::V4(n) => v4.push((n, entry)),
                IpNetwork::V6(n) => v6.push((n, entry)),
            }
        });
        let (mut valve4, mut valve6) = (Vec::new(), Vec::new());
        for net in &self.management {
            match net {
                IpNetwork::V4(n) => valve4.push(*n),
                IpNetwork::V6(n) => valve6.push(*n),
            }
        }
        FastInputs {
            v4,
            v6,
            valve4,
            valve6,
        }
    }

    /// With `ipv4_lookup: fast`, why the IPv4 rules do not fit the kernel's fast-path
    /// table (the loader would refuse them); `None` when they fit or the lookup is not
    /// forced. Built with the loader's own compiler and limit, so `check` and `run`
    /// agree.
    pub fn fast_path_misfit(&self) -> Option<crate::fastpath::FastPathError> {
        if self.ipv4_lookup != Ipv4Lookup::Fast {
            return None;
        }
        let inputs = self.fast_inputs();
        crate::fastpath::FastTable::build(&inputs.v4, &inputs.valve4, SHIELD_V4_GROUPS).err()
    }

    /// With `ipv6_lookup: fast`, why the IPv6 rules do not fit the kernel's compiled
    /// IPv6 table; `None` when they fit or the lookup is not forced. Built with the
    /// loader's own compiler and limit, so `check` and `run` agree.
    pub fn fast_path_misfit_v6(&self) -> Option<crate::fastpath6::FastPath6Error> {
        if self.ipv6_lookup != Ipv6Lookup::Fast {
            return None;
        }
        let inputs = self.fast_inputs();
        crate::fastpath6::FastTable6::build(&inputs.v6, &inputs.valve6, SHIELD_V6_RECORDS).err()
    }

    /// Denials that cover a whole address family (`0.0.0.0/0`, `::/0`, or prefixes such
    /// as `0.0.0.0/1` and `128.0.0.0/1` together; inline, added through the API or from
    /// a feed) with no management prefix of that family: in enforce mode the host drops
    /// its own operator's traffic. The valve (`shield.management`) is the way out: its
    /// sources pass whatever the rules say. Each warning names a rule or set without
    /// which the family would not be covered (every one of them; when none is needed
    /// alone, each one denying the whole family, else `shield.deny`).
    pub fn lockout_warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        let deny_rules: Vec<&CompiledRule> = self
            .rules
            .iter()
            .filter(|r| r.action == Action::Deny)
            .collect();
        let deny_sets: Vec<&CompiledSet> = self
            .sets
            .iter()
            .filter(|s| s.action == Action::Deny)
            .collect();
        let set_origin = |set: &CompiledSet| {
            let origin = self
                .sources
                .iter()
                .find(|s| s.name == set.name)
                .map(|s| s.origin.clone());
            (
                origin
                    .as_ref()
                    .map_or_else(|| set.name.clone(), |o| o.field.clone()),
                origin.and_then(|o| o.at),
            )
        };
        for v4 in [true, false] {
            if self.management.iter().any(|n| n.is_ipv4() == v4) {
                continue;
            }
            // Every deny prefix of the family with its owner: rules 0..R, sets R...
            let mut owned: Vec<(IpNetwork, usize)> = deny_rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.cidr.is_ipv4() == v4)
                .map(|(i, r)| (r.cidr, i))
                .collect();
            // The family can only be covered when its prefixes hold as many addresses
            // as it has (a /0, or a sum that overflows): one pass with no allocation,
            // so that a million-line feed pays nothing more.
            let mut sum: Option<u128> = Some(0);
            let mut add = |prefix: u8| {
                let bits =
                    u32::from(if v4 { 32 } else { 128 } - prefix.min(if v4 { 32 } else { 128 }));
                sum = match (sum, 1u128.checked_shl(bits)) {
                    (Some(s), Some(n)) => s.checked_add(n),
                    _ => None,
                };
            };
            owned.iter().for_each(|(n, _)| add(n.prefix()));
            for set in &deny_sets {
                if v4 {
                    set.prefixes.ipv4().iter().for_each(|n| add(n.prefix()));
                } else {
                    set.prefixes.ipv6().iter().for_each(|n| add(n.prefix()));
                }
            }
            if sum.is_some_and(|s| !v4 || s <= u128::from(u32::MAX)) {
                continue;
            }
            for (i, set) in deny_sets.iter().enumerate() {
                let owner = deny_rules.len() + i;
                if v4 {
                    owned.extend(
                        set.prefixes
                            .ipv4()
                            .iter()
                            .map(|n| (IpNetwork::V4(*n), owner)),
                    );
                } else {
                    owned.extend(
                        set.prefixes
                            .ipv6()
                            .iter()
                            .map(|n| (IpNetwork::V6(*n), owner)),
                    );
                }
            }
            let Some(needed) = covering_owners(&owned, v4) else {
                continue;
            };
            let family = if v4 { "IPv4" } else { "IPv6" };
            let message = format!(
                "denies every {family} source{} and `shield.management` has no {family} \
                 prefix: the host will drop its own management traffic (SSH included); \
                 add the admin network to `shield.management`, whose sources always pass",
                if owned.iter().any(|(n, _)| n.prefix() == 0) {
                    ""
                } else {
                    " (with the other deny rules and sets)"
                }
            );
            let mut blamed: Vec<usize> = needed;
            if blamed.is_empty() {
                blamed = owned
                    .iter()
                    .filter(|(n, _)| n.prefix() == 0)
                    .map(|(_, i)| *i)
                    .collect();
                blamed.sort_unstable();
                blamed.dedup();
            }
            if blamed.is_empty() {
                out.push(Warning {
                    field: "shield.deny".to_string(),
                    at: None,
                    message: message.clone(),
                });
            }
            for owner in blamed {
                let (field, at) = match deny_rules.get(owner) {
                    Some(rule) => (rule.origin.clone(), None),
                    None => match deny_sets.get(owner - deny_rules.len()) {
                        Some(set) => set_origin(set),
                        None => continue,
                    },
                };
                out.push(Warning {
                    field,
                    at,
                    message: message.clone(),
                });
            }
        }
        out
    }
}

/// Whether `owned` (prefixes of one family, each with its owner's index) covers the
/// whole family: `None` when some address is left out, else the owners without which
/// it would not be (those that alone cover some address), in order. One sweep over
/// the sorted prefixes: where exactly one prefix covers an address, its owner is the
/// sum of the owners covering it.
fn covering_owners(owned: &[(IpNetwork, usize)], v4: bool) -> Option<Vec<usize>> {
    let bounds = |n: &IpNetwork| -> (u128, u128) {
        match n {
            IpNetwork::V4(n) => (
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            ),
            IpNetwork::V6(n) => {
                let first = u128::from(n.network());
                let host_bits = if n.prefix() >= 128 {
                    0
                } else {
                    u128::MAX >> n.prefix()
                };
                (first, first | host_bits)
            }
        }
    };
    // (address, 0 = a prefix starts there / 1 = one ends there (inclusive), owner)
    let mut events: Vec<(u128, u8, usize)> = Vec::with_capacity(owned.len() * 2);
    for (n, owner) in owned {
        let (first, last) = bounds(n);
        events.push((first, 0, *owner));
        events.push((last, 1, *owner));
    }
    events.sort_unstable();
    let top = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    // The first address not yet known to be covered; None: all of them are.
    let mut uncovered: Option<u128> = Some(0);
    let mut depth = 0usize;
    let mut owners_sum = 0usize;
    // Where the current run of constant depth starts; None: past the top.
    let mut run: Option<u128> = Some(0);
    let mut needed = Vec::new();
    for (at, kind, owner) in events {
        if kind == 0 {
            if depth == 0 && uncovered.is_some_and(|u| at > u) {
                return None;
            }
            if depth == 1 && run.is_some_and(|r| at > r) {
                needed.push(owners_sum);
            }
            depth += 1;
            owners_sum += owner;
            run = Some(at);
        } else {
            if depth == 1 && run.is_some_and(|r| r <= at) {
                needed.push(owners_sum);
            }
            depth = depth.saturating_sub(1);
            owners_sum = owners_sum.saturating_sub(owner);
            run = at.checked_add(1);
            if depth == 0 {
                uncovered = if at >= top { None } else { at.checked_add(1) };
            }
        }
    }
    if uncovered.is_some() {
        return None;
    }
    needed.sort_unstable();
    needed.dedup();
    Some(needed)
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
    let sets = compile_sets(policy, rules.len(), &mut errors);
    let v4 = rules.iter().filter(|r| r.cidr.is_ipv4()).count()
        + sets.iter().map(CompiledSet::ipv4_count).sum::<usize>();
    let all_prefixes = rules.len() + sets.iter().map(|s| s.prefixes.len()).sum::<usize>();
    let rule_count = rules.len() + sets.len();
    if rule_count > (SHIELD_MAX_RULES - 1) as usize {
        // Inline entries are one rule each (their own counters); a feed is one rule
        // for all its prefixes.
        errors.push(PolicyError::Invalid {
            origin: Origin::field("shield"),
            message: format!(
                "{rule_count} rules (each inline `deny`/`allow` entry is one) exceed the limit \
                 of {}; put long lists in a feed file (`shield.deny_feeds`, `allow_feeds`): a \
                 feed is one rule for up to {SHIELD_MAX_V4_PREFIXES} IPv4 and \
                 {SHIELD_MAX_V6_PREFIXES} IPv6 prefixes",
                SHIELD_MAX_RULES - 1
            ),
        });
    }
    let limits = [
        ("shield (IPv4)", v4, SHIELD_MAX_V4_PREFIXES),
        ("shield (IPv6)", all_prefixes - v4, SHIELD_MAX_V6_PREFIXES),
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
            events_per_second: policy.events_per_second,
            duplicates_merged,
            sets,
            ipv4_lookup: policy.ipv4_lookup,
            ipv6_lookup: policy.ipv6_lookup,
            sources: policy.sources.clone(),
        })
    } else {
        Err(errors)
    }
}

/// Compiles the prefix sets: names checked, prefixes checked, sorted and deduplicated,
/// ids after the `rules` single rules.
fn compile_sets(
    policy: &ShieldPolicy,
    rules: usize,
    errors: &mut Vec<PolicyError>,
) -> Vec<CompiledSet> {
    let mut names = BTreeSet::new();
    let mut sets = Vec::new();
    for set in &policy.sets {
        if set.name.is_empty() || set.name.len() > ironclad_core::abi::RuleInfo::NAME_MAX {
            errors.push(PolicyError::Invalid {
                origin: set.origin.clone(),
                message: format!(
                    "set name `{}` must be 1 to {} bytes",
                    set.name,
                    ironclad_core::abi::RuleInfo::NAME_MAX
                ),
            });
            continue;
        }
        if !names.insert(set.name.as_str()) {
            errors.push(PolicyError::Invalid {
                origin: set.origin.clone(),
                message: format!(
                    "set name `{}` is used twice (a feed is named after its file unless it has a `name`)",
                    set.name
                ),
            });
            continue;
        }
        if set.action == Action::None {
            errors.push(PolicyError::Invalid {
                origin: set.origin.clone(),
                message: "a set must deny or allow".to_string(),
            });
            continue;
        }
        // A prefix with host bits set is an error at its index (the origin is made
        // only then: a million feed entries cost no string each). One walk checks both
        // that and the order.
        let bad = |net: &IpNetwork| net.ip() != net.network();
        let mut clean = true;
        let sorted = set.prefixes.is_sorted();
        for (i, net) in set.prefixes.iter().enumerate() {
            if !bad(&net) {
                continue;
            }
            clean = false;
            let entry = Entry {
                net,
                origin: Origin {
                    field: format!("{}[{i}]", set.origin.field),
                    ..set.origin.clone()
                },
            };
            if let Err(e) = check_network(&entry) {
                errors.push(e);
            }
        }
        // A list already sorted, deduplicated and valid (a feed read or aggregated by
        // `sources`) is shared, not copied.
        let prefixes = if clean && sorted {
            std::sync::Arc::clone(&set.prefixes)
        } else {
            let mut prefixes = PrefixList::clone(&set.prefixes);
            prefixes.retain(|n| !bad(&n));
            prefixes.sort_dedup();
            std::sync::Arc::new(prefixes)
        };
        sets.push(CompiledSet {
            id: u32::try_from(rules + sets.len() + 1).unwrap_or(u32::MAX),
            name: set.name.clone(),
            action: set.action,
            prefixes,
            origin: set.origin.field.clone(),
        });
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn a_lockout_is_found_however_the_family_is_covered_and_blames_what_completes_it() {
        let warned = |deny: &[&str], management: &[&str]| -> Vec<String> {
            let policy = ShieldPolicy::from_lists(&nets(deny), &[], &nets(management));
            compile(&policy)
                .expect("valid")
                .lockout_warnings()
                .into_iter()
                .map(|w| {
                    format!(
                        "{}: {}",
                        w.field,
                        &w.message[..w.message.find(" and `shield").unwrap_or(0)]
                    )
                })
                .collect()
        };
        // Two halves: each is needed, each is named.
        assert_eq!(
            warned(&["0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8"], &[]),
            vec![
                "shield.deny[0]: denies every IPv4 source (with the other deny rules and sets)",
                "shield.deny[1]: denies every IPv4 source (with the other deny rules and sets)",
            ]
        );
        // Quarters and an IPv6 split in three; a rule inside another is not needed.
        assert_eq!(
            warned(
                &[
                    "0.0.0.0/2",
                    "64.0.0.0/2",
                    "128.0.0.0/2",
                    "192.0.0.0/2",
                    "::/1",
                    "8000::/2",
                    "c000::/2",
                    "2001:db8::/32"
                ],
                &[]
            )
            .len(),
            7
        );
        // One address left out: no warning; a management prefix: none either.
        assert!(warned(
            &[
                "0.0.0.0/1",
                "128.0.0.0/2",
                "192.0.0.0/3",
                "224.0.0.0/4",
                "240.0.0.0/5",
                "248.0.0.0/6",
                "252.0.0.0/7",
                "254.0.0.0/8",
                "255.0.0.0/9",
                "255.128.0.0/10",
                "255.192.0.0/11",
                "255.224.0.0/12",
                "255.240.0.0/13",
                "255.248.0.0/14",
                "255.252.0.0/15",
                "255.254.0.0/16",
                "255.255.0.0/17",
                "255.255.128.0/18",
                "255.255.192.0/19",
                "255.255.224.0/20",
                "255.255.240.0/21",
                "255.255.248.0/22",
                "255.255.252.0/23",
                "255.255.254.0/24",
                "255.255.255.0/25",
                "255.255.255.128/26",
                "255.255.255.192/27",
                "255.255.255.224/28",
                "255.255.255.240/29",
                "255.255.255.248/30",
                "255.255.255.252/31",
                "255.255.255.254/32"
            ],
            &[]
        )
        .is_empty());
        assert!(warned(&["0.0.0.0/1", "128.0.0.0/1"], &["192.0.2.7/32"]).is_empty());
        // ... and the last address makes it whole again.
        assert_eq!(
            warned(&["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/2"], &[]).len(),
            3
        );
        // A /0 with halves besides it: nothing is needed alone, the /0 is named.
        assert_eq!(
            warned(&["0.0.0.0/1", "128.0.0.0/1", "0.0.0.0/0"], &[]),
            vec!["shield.deny[2]: denies every IPv4 source"]
        );
    }

    #[test]
    fn set_counts_and_the_catch_all_check_read_the_sorted_list() {
        let set = |name: &str, list: &[&str]| PrefixSet {
            name: name.to_string(),
            action: Action::Deny,
            prefixes: std::sync::Arc::new(nets(list).into()),
            origin: Origin::field(name),
        };
        for (lists, v4, v6, warned) in [
            (
                vec![set(
                    "a",
                    &["2001:db8::/32", "10.0.0.0/8", "::/0", "0.0.0.0/0"],
                )],
                2,
                2,
                vec!["a", "a"],
            ),
            (
                vec![
                    set("a", &["192.0.2.0/24", "0.0.0.0/8", "2001:db8::/32"]),
                    set("b", &["::/0", "fd00::/8"]),
                ],
                2,
                3,
                vec!["b"],
            ),
        ] {
            let policy = ShieldPolicy {
                sets: lists,
                ..Default::default()
            };
            let compiled = compile(&policy).expect("valid");
            assert_eq!(
                (compiled.ipv4_prefixes(), compiled.ipv6_prefixes()),
                (v4, v6)
            );
            let plain: usize = compiled
                .sets
                .iter()
                .map(|s| s.prefixes.iter().filter(|n| n.is_ipv4()).count())
                .sum();
            assert_eq!(plain, v4, "the binary search counts what a walk counts");
            let fields: Vec<String> = compiled
                .lockout_warnings()
                .into_iter()
                .map(|w| w.field)
                .collect();
            assert_eq!(fields, warned);
        }
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

    /// The merge of the sorted lists against sorting every prefix with its rank, on
    /// random policies whose rules and sets share prefixes (and one set handed over
    /// unsorted, with repeats).
    #[test]
    fn owners_are_the_sorted_ranked_prefixes() {
        let mut rng = ironclad_testing::rules::Rng::new(31);
        let mut random = |count: u64| -> Vec<IpNetwork> {
            (0..count)
                .map(|_| {
                    let r = rng.next_u64();
                    let len = 20 + (r % 13) as u8;
                    let addr = std::net::Ipv4Addr::from(0x0a00_0000 | ((r >> 8) as u32 & 0xfff));
                    IpNetwork::new(addr.into(), len)
                        .and_then(|n| IpNetwork::new(n.network(), len))
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .collect()
        };
        for round in 0..30 {
            let rules = random(8);
            let sets: Vec<PrefixSet> = (0..5)
                .map(|i| PrefixSet {
                    name: format!("s{i}"),
                    action: if i % 2 == 1 {
                        Action::Allow
                    } else {
                        Action::Deny
                    },
                    prefixes: std::sync::Arc::new(random(300).into()),
                    origin: Origin::field(format!("s{i}")),
                })
                .collect();
            let mut deny: Vec<IpNetwork> = rules.clone();
            deny.sort_unstable();
            deny.dedup();
            let policy = ShieldPolicy {
                sets,
                ..ShieldPolicy::from_lists(&deny, &[], &[])
            };
            let mut compiled = compile(&policy).unwrap_or_else(|e| panic!("{e:?}"));
            if round % 3 == 0 {
                let mut unsorted = compiled.sets[2].prefixes.to_vec();
                unsorted.reverse();
                unsorted.extend(unsorted.clone().into_iter().take(10));
                compiled.sets[2].prefixes = std::sync::Arc::new(unsorted.into());
            }
            let rank = |o: Owner| match o {
                Owner::Rule(i) => (0u8, i),
                Owner::Set(i) if compiled.sets[i].action == Action::Allow => (1, i),
                Owner::Set(i) => (2, i),
            };
            let mut want: Vec<(IpNetwork, Owner)> =
                compiled
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.cidr, Owner::Rule(i)))
                    .chain(compiled.sets.iter().enumerate().flat_map(|(i, set)| {
                        set.prefixes.iter().map(move |net| (net, Owner::Set(i)))
                    }))
                    .collect();
            want.sort_by_key(|(net, owner)| (*net, rank(*owner)));
            want.dedup_by_key(|(net, _)| *net);
            assert_eq!(compiled.owners(), want, "round {round}");
        }
    }

    #[test]
    fn sets_get_ids_after_rules_and_owners_settle_overlaps() {
        let set = |name: &str, action, list: &[&str]| PrefixSet {
            name: name.to_string(),
            action,
            prefixes: std::sync::Arc::new(nets(list).into()),
            origin: Origin::field(format!("sets.{name}")),
        };
        let policy = ShieldPolicy {
            sets: vec![
                set(
                    "feed",
                    Action::Deny,
                    &["10.0.0.0/8", "192.0.2.0/24", "10.0.0.0/8"],
                ),
                set("ok", Action::Allow, &["192.0.2.0/24", "2001:db8::/32"]),
            ],
            ..ShieldPolicy::from_lists(&nets(&["10.0.0.0/8"]), &[], &[])
        };
        let compiled = compile(&policy).expect("valid");
        assert_eq!(compiled.sets[0].id, 2);
        assert_eq!(compiled.sets[1].id, 3);
        assert_eq!(compiled.sets[0].prefixes.len(), 2, "deduplicated");
        assert_eq!(compiled.ipv4_prefixes(), 4);
        assert_eq!(compiled.ipv6_prefixes(), 1);
        let owners: BTreeMap<String, Owner> = compiled
            .owners()
            .into_iter()
            .map(|(n, o)| (n.to_string(), o))
            .collect();
        assert_eq!(owners["10.0.0.0/8"], Owner::Rule(0), "a single rule first");
        assert_eq!(
            owners["192.0.2.0/24"],
            Owner::Set(1),
            "allow set before deny set"
        );
        assert_eq!(owners["2001:db8::/32"], Owner::Set(1));
        assert_eq!(owners.len(), 3);
        // One prefix at a time, the same owners.
        for (net, owner) in compiled.owners() {
            assert_eq!(compiled.owner_of(&net), Some(owner), "{net}");
        }
        assert_eq!(
            compiled.owner_of(&"198.51.100.0/24".parse().expect("cidr")),
            None
        );

        let bad = ShieldPolicy {
            sets: vec![
                set("", Action::Deny, &[]),
                set("x", Action::Deny, &["10.0.0.1/8"]),
                set("x", Action::Deny, &[]),
            ],
            ..ShieldPolicy::default()
        };
        let messages: Vec<String> = compile(&bad)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            vec![
                "sets.: set name `` must be 1 to 47 bytes",
                "sets.x[0]: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
                "sets.x: set name `x` is used twice (a feed is named after its file unless it has a `name`)",
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
