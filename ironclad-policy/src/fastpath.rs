//! The Shield's IPv4 fast path: a rule set compiled into a DIR-24-8 table.
//!
//! The kernel looks up a source address in at most two array reads instead of walking an
//! LPM trie. The table is made of 512-byte blocks of 256 `u16` entries:
//!
//! - blocks `0..65536` are the first level: block `a.b` holds one entry per `a.b.c.0/24`,
//!   indexed by `c`;
//! - blocks `65536 + g` are second-level groups: one per /24 that holds a prefix longer
//!   than /24, indexed by the last octet.
//!
//! An entry is `0` (no rule), [`FAST_VALVE`] (management source: always pass),
//! [`FAST_GROUP`]` | g` (look in group `g`), or a rule id with [`FAST_ALLOW`] for allow
//! rules. The management valve is compiled in with priority over every rule, so a packet
//! from the valve never needs a second lookup.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use ironclad_core::abi::Action;
//! use ironclad_policy::fastpath::{entry, FastTable};
//!
//! let rules = [
//!     ("10.0.0.0/8".parse()?, entry(1, Action::Deny)),
//!     ("10.1.2.128/25".parse()?, entry(2, Action::Allow)),
//! ];
//! let valve = ["10.9.9.9/32".parse()?];
//! let table = FastTable::build(&rules, &valve, 8192)?;
//! assert_eq!(table.lookup(Ipv4Addr::new(10, 1, 2, 3)), entry(1, Action::Deny));
//! assert_eq!(table.lookup(Ipv4Addr::new(10, 1, 2, 200)), entry(2, Action::Allow));
//! assert_eq!(table.lookup(Ipv4Addr::new(11, 0, 0, 1)), 0);
//! assert_eq!(table.groups(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use ironclad_core::abi::{
    Action, FAST_ALLOW, FAST_GROUP, FAST_GROUP_MASK, FAST_RULE_MASK, FAST_VALVE,
    SHIELD_V4_FIRST_BLOCKS,
};

/// Entries per block.
pub const BLOCK_ENTRIES: usize = 256;
const FIRST_ENTRIES: usize = SHIELD_V4_FIRST_BLOCKS as usize * BLOCK_ENTRIES;

/// The fast-path entry of a rule: its id, and [`FAST_ALLOW`] for an allow rule.
/// Ids are masked to [`FAST_RULE_MASK`] (the policy compiler never hands out larger).
pub fn entry(rule_id: u32, action: Action) -> u16 {
    let id = (rule_id & u32::from(FAST_RULE_MASK)) as u16;
    match action {
        Action::Allow => id | FAST_ALLOW,
        _ => id,
    }
}

/// What a rule entry means: `(rule id, action)`, or `None` for "no rule", the valve and
/// group pointers.
pub fn decode(entry: u16) -> Option<(u32, Action)> {
    if entry & FAST_GROUP != 0 || entry & FAST_RULE_MASK == 0 {
        return None;
    }
    let action = if entry & FAST_ALLOW != 0 {
        Action::Allow
    } else {
        Action::Deny
    };
    Some((u32::from(entry & FAST_RULE_MASK), action))
}

/// Why a rule set does not fit the fast path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FastPathError {
    /// More /24s hold prefixes longer than /24 than there are second-level groups.
    #[error(
        "the IPv4 fast path needs {needed} second-level groups (one per /24 holding a \
         prefix longer than /24) but has {limit}; aggregate the long prefixes or use \
         `ipv4_lookup: trie`"
    )]
    TooManyGroups {
        /// Groups the rule set needs.
        needed: usize,
        /// Groups the kernel table has.
        limit: u32,
    },
}

/// A compiled fast-path table, ready to be written block by block into the kernel.
#[derive(Clone, PartialEq, Eq)]
pub struct FastTable {
    /// First level (2^24 entries) followed by the groups (256 entries each).
    entries: Vec<u16>,
}

impl std::fmt::Debug for FastTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTable")
            .field("groups", &self.groups())
            .finish_non_exhaustive()
    }
}

fn range24(net: Ipv4Network) -> std::ops::Range<usize> {
    let start = (u32::from(net.network()) >> 8) as usize;
    start..start + (1usize << (24 - u32::from(net.prefix())))
}

fn range8(net: Ipv4Network) -> std::ops::Range<usize> {
    let start = (u32::from(net.network()) & 0xff) as usize;
    start..start + (1usize << (32 - u32::from(net.prefix())))
}

impl FastTable {
    /// Compiles `rules` (prefix, [`entry`]) and the management `valve` into a table with
    /// at most `max_groups` second-level groups.
    ///
    /// The longest prefix wins; a prefix listed twice keeps its last entry. Valve
    /// prefixes win over every rule, whatever their length. Host bits below a prefix
    /// length are ignored.
    pub fn build(
        rules: &[(Ipv4Network, u16)],
        valve: &[Ipv4Network],
        max_groups: u32,
    ) -> Result<Self, FastPathError> {
        let (mut entries, region_groups) = compile(0, 0, rules, valve);
        let groups = region_groups.len();
        if groups > max_groups as usize || groups > usize::from(FAST_GROUP_MASK) + 1 {
            return Err(FastPathError::TooManyGroups {
                needed: groups,
                limit: max_groups,
            });
        }
        entries.reserve(groups * BLOCK_ENTRIES);
        for group in &region_groups {
            entries.extend_from_slice(group);
        }
        Ok(Self { entries })
    }

    /// The entry the kernel finds for `addr` (what [`decode`] reads).
    pub fn lookup(&self, addr: Ipv4Addr) -> u16 {
        let a = u32::from(addr);
        let first = self.entries[(a >> 8) as usize];
        if first & FAST_GROUP == 0 {
            return first;
        }
        let group = usize::from(first & FAST_GROUP_MASK);
        self.entries
            .get(FIRST_ENTRIES + group * BLOCK_ENTRIES + (a & 0xff) as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Second-level groups in use.
    pub fn groups(&self) -> usize {
        (self.entries.len() - FIRST_ENTRIES) / BLOCK_ENTRIES
    }

    /// Blocks in use (first level and groups).
    pub fn blocks(&self) -> usize {
        self.entries.len() / BLOCK_ENTRIES
    }

    /// Block `index` (first level below 65536, groups above).
    pub fn block(&self, index: usize) -> Option<&[u16]> {
        self.entries
            .get(index * BLOCK_ENTRIES..(index + 1) * BLOCK_ENTRIES)
    }

    /// Every block that is not all zero, with its index: what a fresh (zeroed) kernel
    /// table needs written.
    pub fn nonzero_blocks(&self) -> impl Iterator<Item = (u32, &[u16])> + '_ {
        self.entries
            .chunks_exact(BLOCK_ENTRIES)
            .enumerate()
            .filter(|(_, block)| block.iter().any(|e| *e != 0))
            .map(|(i, block)| (i as u32, block))
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

type Groups = Vec<[u16; BLOCK_ENTRIES]>;

/// The one compiler behind [`FastTable::build`] and [`Region::build`]: the first-level
/// entries of the /24s in `addr/len` (`len <= 24`) and their groups, numbered from 0.
fn compile(
    addr: u32,
    len: u8,
    rules: &[(Ipv4Network, u16)],
    valve: &[Ipv4Network],
) -> (Vec<u16>, Groups) {
    let base = addr & mask(len);
    let first_slot = (base >> 8) as usize;
    let slots = 1usize << (24 - u32::from(len));
    // What a prefix does to the region: fill a run of /24s (a prefix up to /24, or one
    // covering the whole region) or part of one /24 (longer prefixes).
    enum Part {
        Slots(std::ops::Range<usize>),
        Long(usize, std::ops::Range<usize>),
    }
    let part = |net: &Ipv4Network| -> Option<Part> {
        let n = u32::from(net.network()) & mask(net.prefix());
        if net.prefix() <= len {
            (base & mask(net.prefix()) == n).then_some(Part::Slots(0..slots))
        } else if n & mask(len) != base {
            None
        } else if net.prefix() <= 24 {
            let r = range24(*net);
            Some(Part::Slots(r.start - first_slot..r.end - first_slot))
        } else {
            Some(Part::Long((n >> 8) as usize - first_slot, range8(*net)))
        }
    };
    // Shortest first, so longer prefixes overwrite; the valve after the rules.
    let mut order: Vec<(u8, Part, u16)> = rules
        .iter()
        .filter_map(|(n, v)| part(n).map(|p| (n.prefix(), p, *v)))
        .collect();
    order.sort_by_key(|(len, _, _)| *len);
    let valve: Vec<(u8, Part, u16)> = valve
        .iter()
        .filter_map(|n| part(n).map(|p| (n.prefix(), p, FAST_VALVE)))
        .collect();
    let mut first = vec![0u16; slots];
    for (_, p, value) in order.iter().chain(&valve) {
        if let Part::Slots(r) = p {
            first[r.clone()].fill(*value);
        }
    }
    let mut groups: Groups = Vec::new();
    for (_, p, value) in order.iter().chain(&valve) {
        let Part::Long(slot, r) = p else {
            continue;
        };
        let entry = first[*slot];
        if entry == FAST_VALVE {
            continue;
        }
        let group = if entry & FAST_GROUP != 0 {
            usize::from(entry & FAST_GROUP_MASK)
        } else {
            groups.push([entry; BLOCK_ENTRIES]);
            first[*slot] = FAST_GROUP | ((groups.len() - 1) as u16 & FAST_GROUP_MASK);
            groups.len() - 1
        };
        groups[group][r.clone()].fill(*value);
    }
    (first, groups)
}

/// The part of a fast-path table that covers one aligned range of /24s (a prefix of
/// length 0 to 24): what an edit inside that range must write. Groups are numbered
/// locally (0..), in the order of their /24s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The range.
    pub range: Ipv4Network,
    /// One first-level entry per /24 of the range; a group entry's number is local.
    pub first: Vec<u16>,
    /// The second-level groups, 256 entries each.
    pub groups: Vec<[u16; BLOCK_ENTRIES]>,
}

impl Region {
    /// Compiles the part of (`rules`, `valve`) inside `range` (lengths above 24 are
    /// taken as 24: the region is always whole /24s). Prefixes that cover the whole
    /// range fill it; prefixes outside it are ignored.
    pub fn build(range: Ipv4Network, rules: &[(Ipv4Network, u16)], valve: &[Ipv4Network]) -> Self {
        let len = range.prefix().min(24);
        let (first, groups) = compile(u32::from(range.network()), len, rules, valve);
        Self {
            range: Ipv4Network::new(range.network(), len).unwrap_or(range),
            first,
            groups,
        }
    }

    /// The first-level slot (index among all 2^24 /24s) of the region's first /24.
    pub fn first_slot(&self) -> usize {
        (u32::from(self.range.network()) >> 8) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().expect("cidr")
    }

    #[test]
    fn longest_prefix_wins_across_levels() {
        let rules = [
            (net("0.0.0.0/0"), entry(1, Action::Deny)),
            (net("10.0.0.0/8"), entry(2, Action::Allow)),
            (net("10.1.2.0/24"), entry(3, Action::Deny)),
            (net("10.1.2.64/26"), entry(4, Action::Allow)),
            (net("10.1.2.70/32"), entry(5, Action::Deny)),
        ];
        let t = FastTable::build(&rules, &[], 16).expect("fits");
        let at = |s: &str| decode(t.lookup(s.parse().expect("addr")));
        assert_eq!(at("1.2.3.4"), Some((1, Action::Deny)));
        assert_eq!(at("10.200.0.1"), Some((2, Action::Allow)));
        assert_eq!(at("10.1.2.1"), Some((3, Action::Deny)));
        assert_eq!(at("10.1.2.65"), Some((4, Action::Allow)));
        assert_eq!(at("10.1.2.70"), Some((5, Action::Deny)));
        assert_eq!(at("10.1.2.128"), Some((3, Action::Deny)));
        assert_eq!(t.groups(), 1);
    }

    #[test]
    fn valve_wins_over_longer_rules_and_needs_no_group_when_short() {
        let rules = [
            (net("192.0.2.0/24"), entry(1, Action::Deny)),
            (net("192.0.2.9/32"), entry(2, Action::Deny)),
            (net("198.51.100.0/24"), entry(3, Action::Deny)),
        ];
        let valve = [net("192.0.2.0/24"), net("198.51.100.7/32")];
        let t = FastTable::build(&rules, &valve, 16).expect("fits");
        assert_eq!(t.lookup("192.0.2.9".parse().expect("addr")), FAST_VALVE);
        assert_eq!(t.lookup("198.51.100.7".parse().expect("addr")), FAST_VALVE);
        assert_eq!(
            decode(t.lookup("198.51.100.8".parse().expect("addr"))),
            Some((3, Action::Deny))
        );
        assert_eq!(t.groups(), 1, "only 198.51.100.0/24 needs a group");
    }

    #[test]
    fn too_many_groups_is_a_clear_error() {
        let rules: Vec<_> = (0..10u32)
            .map(|i| {
                (
                    Ipv4Network::new(Ipv4Addr::from(i << 8), 32).expect("net"),
                    entry(1, Action::Deny),
                )
            })
            .collect();
        let err = FastTable::build(&rules, &[], 4).expect_err("too many");
        assert_eq!(
            err,
            FastPathError::TooManyGroups {
                needed: 10,
                limit: 4
            }
        );
        assert!(err.to_string().contains("ipv4_lookup: trie"));
    }

    #[test]
    fn a_region_matches_the_whole_table_inside_its_range() {
        let rules = [
            (net("0.0.0.0/0"), entry(1, Action::Deny)),
            (net("10.0.0.0/8"), entry(2, Action::Allow)),
            (net("10.1.0.0/16"), entry(3, Action::Deny)),
            (net("10.1.2.0/24"), entry(4, Action::Allow)),
            (net("10.1.2.64/26"), entry(5, Action::Deny)),
            (net("10.1.9.9/32"), entry(6, Action::Deny)),
            (net("10.2.0.0/16"), entry(7, Action::Deny)),
        ];
        let valve = [net("10.1.3.0/24"), net("10.1.2.66/32")];
        let whole = FastTable::build(&rules, &valve, 64).expect("fits");
        for range in ["10.1.0.0/16", "10.1.2.0/24", "10.0.0.0/8", "0.0.0.0/0"] {
            let region = Region::build(net(range), &rules, &valve);
            for (i, first) in region.first.iter().enumerate() {
                for last in [0u32, 65, 66, 70, 255] {
                    let addr = (((region.first_slot() + i) as u32) << 8) | last;
                    let got = if first & FAST_GROUP != 0 {
                        region.groups[usize::from(first & FAST_GROUP_MASK)][last as usize]
                    } else {
                        *first
                    };
                    assert_eq!(got, whole.lookup(Ipv4Addr::from(addr)), "{range} {addr:x}");
                }
            }
        }
    }

    #[test]
    fn nonzero_blocks_cover_exactly_the_rules() {
        let rules = [(net("10.1.0.0/16"), entry(7, Action::Deny))];
        let t = FastTable::build(&rules, &[], 1).expect("fits");
        let blocks: Vec<u32> = t.nonzero_blocks().map(|(i, _)| i).collect();
        assert_eq!(blocks, vec![(10 << 8) | 1]);
        assert_eq!(t.blocks(), SHIELD_V4_FIRST_BLOCKS as usize);
    }
}
