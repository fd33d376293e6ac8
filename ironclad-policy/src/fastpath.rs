//! The Shield's IPv4 fast path: a rule set compiled into a DIR-24-8 table.
//!
//! The kernel looks up a source address in at most two array reads instead of walking an
//! LPM trie. The table is made of blocks of 256 `u16` entries:
//!
//! - blocks `0..65536` are the first level: block `a.b` holds one entry per `a.b.c.0/24`,
//!   indexed by `c`, and two span bases;
//! - a /24 that holds prefixes longer than /24 is, when it can be, a *span node* of 8
//!   bytes in the slot's span table: its addresses read one entry inside at most two
//!   runs of the last octet and another everywhere else (a feed's scattered hosts: one
//!   host, or hosts of one rule, in a /24);
//!   (runs, bitmap and quad nodes of a few records hold up to four values in any
//!   pattern);
//! - any other such /24 (five values or more) is a second-level group, block
//!   `65536 + g`, indexed by the last octet, while there are groups (at most
//!   [`SHIELD_V4_GROUPS`](ironclad_core::abi::SHIELD_V4_GROUPS)), and then a leaf node of
//!   the span table (the same 256 entries, one read more), so that only the span
//!   table's records limit what fits.
//!
//! An entry is `0` (no rule), [`FAST_VALVE`] (management source: always pass),
//! [`FAST_GROUP`]` | g` (look in group `g`), [`FAST_GROUP`]` | `[`FAST_SPAN`]` | i`
//! (span node `i` after the block's base), or a rule id with [`FAST_ALLOW`] for allow
//! rules. The management valve is compiled in with priority over every rule, so a packet
//! from the valve never needs another lookup.
//!
//! A million scattered /32 hosts are a million span nodes (8 MiB) beside the 32 MiB
//! first level, where 256-entry groups would take 512 MiB.
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
//! let table = FastTable::build(&rules, &valve, 4096)?;
//! assert_eq!(table.lookup(Ipv4Addr::new(10, 1, 2, 3)), entry(1, Action::Deny));
//! assert_eq!(table.lookup(Ipv4Addr::new(10, 1, 2, 200)), entry(2, Action::Allow));
//! assert_eq!(table.lookup(Ipv4Addr::new(11, 0, 0, 1)), 0);
//! // 10.1.2.0/24 and 10.9.9.0/24 each read one entry in one run and another outside it.
//! assert_eq!((table.groups(), table.spans().len()), (0, 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use ironclad_core::abi::{
    Action, V4Block, V4Span, FAST_ALLOW, FAST_GROUP, FAST_GROUP_MASK, FAST_RULE_MASK, FAST_SPAN,
    FAST_SPAN_BASE, FAST_SPAN_MASK, FAST_VALVE, SHIELD_V4_FIRST_BLOCKS, SHIELD_V4_SPANS,
};

/// Entries per block.
pub const BLOCK_ENTRIES: usize = 256;
const FIRST_ENTRIES: usize = SHIELD_V4_FIRST_BLOCKS as usize * BLOCK_ENTRIES;
/// Records of a slot's span table: spans take one, bitmap nodes five.
const SPAN_RECORDS: usize = SHIELD_V4_SPANS as usize;

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
    /// More /24s need a group than there are second-level groups, and the span table
    /// has no room left for them as leaf nodes.
    #[error(
        "the IPv4 fast path needs {needed} second-level groups (one per /24 that no \
         longer fits the span table: its records are all in use) but has {limit}; \
         aggregate the long prefixes or use `ipv4_lookup: trie`"
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
    /// Per first-level block, the two bases its span entries count from.
    bases: Vec<[u32; 2]>,
    /// The span nodes, block after block.
    spans: Vec<V4Span>,
}

impl std::fmt::Debug for FastTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTable")
            .field("groups", &self.groups())
            .field("spans", &self.spans.len())
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
    /// length are ignored. A /24 that holds longer prefixes becomes a node of the span
    /// table when its addresses take at most four values (a span, runs, bitmap or quad
    /// node: one host, or hosts of one or two rules, in a /24: what real feeds are made
    /// of), else a 256-entry group, and once the groups are all in use a leaf node of
    /// the span table (the same 256 entries, one more read). Only the span table's
    /// records are limited.
    pub fn build(
        rules: &[(Ipv4Network, u16)],
        valve: &[Ipv4Network],
        max_groups: u32,
    ) -> Result<Self, FastPathError> {
        let packed = Packed::build(0, 0, rules, valve, max_groups as usize);
        let groups = packed.groups.len();
        if groups > max_groups as usize || groups > usize::from(FAST_GROUP_MASK) + 1 {
            return Err(FastPathError::TooManyGroups {
                needed: groups,
                limit: max_groups,
            });
        }
        let mut entries = packed.first;
        entries.reserve(groups * BLOCK_ENTRIES);
        for group in &packed.groups {
            entries.extend_from_slice(group);
        }
        Ok(Self {
            entries,
            bases: packed.bases,
            spans: packed.spans,
        })
    }

    /// The entry the kernel finds for `addr` (what [`decode`] reads).
    pub fn lookup(&self, addr: Ipv4Addr) -> u16 {
        let a = u32::from(addr);
        let first = self.entries[(a >> 8) as usize];
        if first & FAST_GROUP == 0 {
            return first;
        }
        if first & FAST_SPAN != 0 {
            let bases = self
                .bases
                .get((a >> 16) as usize)
                .copied()
                .unwrap_or([0; 2]);
            let base = bases[usize::from(first & FAST_SPAN_BASE != 0)];
            let index = base as usize + usize::from(first & FAST_SPAN_MASK);
            return V4Span::value(&self.spans, index, (a & 0xff) as u8);
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

    /// Span nodes in use.
    pub fn spans(&self) -> &[V4Span] {
        &self.spans
    }

    /// Blocks in use (first level and groups).
    pub fn blocks(&self) -> usize {
        self.entries.len() / BLOCK_ENTRIES
    }

    /// Block `index` (first level below 65536, groups above).
    pub fn block(&self, index: usize) -> Option<V4Block> {
        let entries = self
            .entries
            .get(index * BLOCK_ENTRIES..(index + 1) * BLOCK_ENTRIES)?;
        let mut block = V4Block {
            entry: [0; BLOCK_ENTRIES],
            span_base: self.bases.get(index).copied().unwrap_or([0; 2]),
        };
        block.entry.copy_from_slice(entries);
        Some(block)
    }

    /// Every block that is not all zero, with its index: what a fresh (zeroed) kernel
    /// table needs written.
    pub fn nonzero_blocks(&self) -> impl Iterator<Item = (u32, V4Block)> + '_ {
        const ZERO: [u16; BLOCK_ENTRIES] = [0; BLOCK_ENTRIES];
        // Each of the 65,536 first-level blocks is compared whole with a zero block (one
        // memcmp, fast even in an unoptimised build) and copied only when it differs:
        // element by element, a debug build's commit spent most of a Shield's load
        // here (seconds per load in an emulated guest).
        self.entries
            .chunks_exact(BLOCK_ENTRIES)
            .enumerate()
            .filter(|(i, entries)| {
                *entries != ZERO || self.bases.get(*i).is_some_and(|b| *b != [0; 2])
            })
            .filter_map(|(i, _)| Some((i as u32, self.block(i)?)))
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// One prefix longer than /24 inside a region: the /24 it lies in (index in the region),
/// whether it is a valve prefix, its length, the addresses it covers (last octet) and
/// its entry.
struct Long {
    slot: usize,
    valve: bool,
    len: u8,
    range: std::ops::Range<usize>,
    value: u16,
}

/// What the addresses of a /24 that holds longer prefixes compile to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Second {
    /// Every address has the same entry: no second level at all.
    Entry(u16),
    /// A span node.
    Span(V4Span),
    /// A runs node: its two records.
    Runs([V4Span; 2]),
    /// A bitmap node: its header and its four words of bits.
    Bitmap(V4Span, [u64; 4]),
    /// A quad node: its two header records and its eight words of 2-bit indexes.
    Quad([V4Span; 2], [u64; 8]),
    /// A 256-entry group.
    Group,
}

impl Second {
    /// A node's records for the span table, in a fixed array (no allocation per /24)
    /// with how many are used; `None` for an entry or a group.
    fn records(&self) -> Option<([V4Span; V4Span::QUAD_RECORDS], usize)> {
        let mut out = [V4Span::default(); V4Span::QUAD_RECORDS];
        let mut put = |records: &[V4Span], words: &[u64]| {
            out[..records.len()].copy_from_slice(records);
            for (at, word) in out[records.len()..].iter_mut().zip(words) {
                *at = V4Span::bits(*word);
            }
            Some((out, records.len() + words.len()))
        };
        match self {
            Second::Entry(_) | Second::Group => None,
            Second::Span(span) => put(&[*span], &[]),
            Second::Runs(records) => put(records, &[]),
            Second::Bitmap(header, words) => put(&[*header], words),
            Second::Quad(header, words) => put(header, words),
        }
    }
}

/// Three or four values: a quad node of each address's value index; more: a group.
fn quad(content: &[u16; BLOCK_ENTRIES]) -> Second {
    let mut values: Vec<u16> = Vec::with_capacity(4);
    let mut words = [0u64; 8];
    for (a, v) in content.iter().enumerate() {
        let i = match values.iter().position(|x| x == v) {
            Some(i) => i,
            None if values.len() < 4 => {
                values.push(*v);
                values.len() - 1
            }
            None => return Second::Group,
        };
        words[a >> 5] |= (i as u64) << (2 * (a & 31));
    }
    values.resize(4, 0);
    Second::Quad(
        V4Span::quad([values[0], values[1], values[2], values[3]]),
        words,
    )
}

/// The cheapest second level for the 256 entries of a /24.
fn classify(content: &[u16; BLOCK_ENTRIES]) -> Second {
    // One pass: the second value, and the runs of equal entries (entry, first, last)
    // while there are at most eleven (a runs node's five inside and six around).
    let first = content[0];
    let mut other = None;
    let mut runs = [(0u16, 0u8, 0u8); 2 * V4Span::RUNS + 1];
    let mut count = 0;
    let mut spannable = true;
    for (i, value) in content.iter().enumerate() {
        if *value != first && other != Some(*value) {
            if other.is_some() {
                return quad(content);
            }
            other = Some(*value);
        }
        if !spannable {
            continue;
        }
        match runs[..count].last_mut() {
            Some(run) if run.0 == *value => run.2 = i as u8,
            _ if count == 2 * V4Span::RUNS + 1 => spannable = false,
            _ => {
                runs[count] = (*value, i as u8, i as u8);
                count += 1;
            }
        }
    }
    let Some(other) = other else {
        return Second::Entry(first);
    };
    if spannable {
        // The value in fewer runs is the inside: a span holds two, a runs node five.
        let (inner, outer) = if runs[..count].iter().filter(|r| r.0 == other).count() * 2 <= count {
            (other, first)
        } else {
            (first, other)
        };
        let inside: Vec<(u8, u8)> = runs[..count]
            .iter()
            .filter(|r| r.0 == inner)
            .map(|r| (r.1, r.2))
            .collect();
        if let [a, rest @ ..] = inside.as_slice() {
            if rest.len() <= 1 {
                let b = rest.first().unwrap_or(a);
                return Second::Span(V4Span {
                    lo: [a.0, b.0],
                    hi: [a.1, b.1],
                    inner,
                    outer,
                });
            }
        }
        if let Some(node) = V4Span::runs(inner, outer, &inside) {
            return Second::Runs(node);
        }
    }
    // Two values in more runs than a span holds (many hosts of one rule): a bitmap of
    // where the other value is.
    let mut words = [0u64; 4];
    for (a, v) in content.iter().enumerate() {
        if *v == other {
            words[a >> 6] |= 1 << (a & 63);
        }
    }
    Second::Bitmap(V4Span::bitmap(other, first), words)
}

/// A compiled region of the table: the whole table, or the /16 of one first-level block
/// (what an in-place edit rewrites). Groups and spans are numbered from 0 in the region;
/// span entries use base 0 of their block.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Packed {
    /// One first-level entry per /24 of the region.
    pub first: Vec<u16>,
    /// The second-level groups, 256 entries each.
    pub groups: Vec<[u16; BLOCK_ENTRIES]>,
    /// The span nodes, block after block.
    pub spans: Vec<V4Span>,
    /// Per first-level block of the region, the bases of its spans (the first into
    /// [`Packed::spans`], the second 0).
    pub bases: Vec<[u32; 2]>,
}

impl Packed {
    /// Compiles the part of (`rules`, `valve`) inside `addr/len` (`len` is 0 or 16).
    /// Prefixes that cover the whole region fill it; prefixes outside it are ignored. A
    /// /24 that needs a group once `max_groups` are in use is a leaf node instead, where
    /// the span table has room.
    pub fn build(
        addr: u32,
        len: u8,
        rules: &[(Ipv4Network, u16)],
        valve: &[Ipv4Network],
        max_groups: usize,
    ) -> Self {
        let len = len.min(16);
        let (mut first, longs) = compile(addr, len, rules, valve);
        let mut groups: Vec<[u16; BLOCK_ENTRIES]> = Vec::new();
        let mut spans: Vec<V4Span> = Vec::new();
        let mut bases = vec![[0u32; 2]; first.len() / BLOCK_ENTRIES];
        let mut block_spans = usize::MAX;
        // Leaf nodes' entries, placed after every other node; their headers' places.
        let mut bodies: Vec<V4Span> = Vec::new();
        let mut leaves: Vec<usize> = Vec::new();
        let mut at = 0;
        while at < longs.len() {
            let slot = longs[at].slot;
            let end = longs[at..]
                .iter()
                .position(|l| l.slot != slot)
                .map_or(longs.len(), |n| at + n);
            let parts = &longs[at..end];
            at = end;
            let default = first[slot];
            if default == FAST_VALVE {
                continue;
            }
            let mut content = [default; BLOCK_ENTRIES];
            for part in parts {
                content[part.range.clone()].fill(part.value);
            }
            // A node's place after its block's base (set by the block's first node),
            // which the entry holds in 13 bits (a block's 256 /24s as bitmap nodes take
            // 1,280 records).
            let block = slot / BLOCK_ENTRIES;
            let start = if block_spans == block {
                bases[block][0] as usize
            } else {
                spans.len()
            };
            let offset = spans.len() - start;
            let node = |records: usize| {
                offset <= usize::from(FAST_SPAN_MASK)
                    && spans.len() + bodies.len() + records <= SPAN_RECORDS
            };
            let mut based = || {
                block_spans = block;
                bases[block][0] = start as u32;
            };
            let second = classify(&content);
            first[slot] = match (second, second.records()) {
                (Second::Entry(value), _) => value,
                (_, Some((records, count))) if node(count) => {
                    based();
                    spans.extend_from_slice(&records[..count]);
                    FAST_GROUP | FAST_SPAN | offset as u16
                }
                (Second::Group, _)
                    if groups.len() >= max_groups && node(1 + V4Span::LEAF_BODY_RECORDS) =>
                {
                    based();
                    // The distance is set once every other node is in place.
                    leaves.push(spans.len());
                    spans.push(V4Span::leaf(bodies.len() as u32));
                    bodies.extend(
                        content
                            .chunks_exact(4)
                            .map(|e| V4Span::entries([e[0], e[1], e[2], e[3]])),
                    );
                    FAST_GROUP | FAST_SPAN | offset as u16
                }
                _ => {
                    groups.push(content);
                    FAST_GROUP | ((groups.len() - 1) as u16 & FAST_GROUP_MASK)
                }
            };
        }
        let start = spans.len();
        for header in leaves {
            let body = spans[header].distance() as usize;
            spans[header] = V4Span::leaf((start + body - header) as u32);
        }
        spans.extend(bodies);
        Self {
            first,
            groups,
            spans,
            bases,
        }
    }

    /// The entry this region gives `addr` (an address inside the region).
    pub fn lookup(&self, addr: u32, region: u32) -> u16 {
        let slot = ((addr - region) >> 8) as usize;
        let first = self.first.get(slot).copied().unwrap_or(0);
        if first & FAST_GROUP == 0 {
            first
        } else if first & FAST_SPAN != 0 {
            let base = self.bases.get(slot / BLOCK_ENTRIES).map_or(0, |b| b[0]);
            let index = base as usize + usize::from(first & FAST_SPAN_MASK);
            V4Span::value(&self.spans, index, (addr & 0xff) as u8)
        } else {
            self.groups
                .get(usize::from(first & FAST_GROUP_MASK))
                .map_or(0, |g| g[(addr & 0xff) as usize])
        }
    }
}

/// The one compiler behind [`Packed::build`]: the first-level entries of the /24s in
/// `addr/len` (`len <= 24`) and the prefixes longer than /24 inside it, sorted by /24,
/// then rules before valve, then length (input order among equals).
fn compile(
    addr: u32,
    len: u8,
    rules: &[(Ipv4Network, u16)],
    valve: &[Ipv4Network],
) -> (Vec<u16>, Vec<Long>) {
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
    let mut order: Vec<(u8, std::ops::Range<usize>, u16)> = Vec::new();
    let mut longs: Vec<Long> = Vec::new();
    let all = rules
        .iter()
        .map(|(n, v)| (n, *v, false))
        .chain(valve.iter().map(|n| (n, FAST_VALVE, true)));
    for (net, value, is_valve) in all {
        match part(net) {
            Some(Part::Slots(r)) => {
                order.push((if is_valve { 33 } else { net.prefix() }, r, value))
            }
            Some(Part::Long(slot, range)) => longs.push(Long {
                slot,
                valve: is_valve,
                len: net.prefix(),
                range,
                value,
            }),
            None => {}
        }
    }
    order.sort_by_key(|(len, _, _)| *len);
    let mut first = vec![0u16; slots];
    for (_, r, value) in &order {
        first[r.clone()].fill(*value);
    }
    longs.sort_by_key(|l| (l.slot, l.valve, l.len));
    (first, longs)
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
        // 10.1.2.0/24 reads three entries: a quad node, no group.
        assert_eq!((t.groups(), t.spans().len()), (0, V4Span::QUAD_RECORDS));
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
        assert_eq!(t.groups(), 0);
        assert_eq!(
            t.spans().len(),
            1,
            "only 198.51.100.0/24 needs a second level"
        );
    }

    #[test]
    fn five_values_beyond_the_groups_are_leaf_nodes() {
        // Four hosts of different rules in each of ten /24s: five values (with the
        // addresses no rule covers), more than a quad node holds: a group each while
        // there are groups, then a leaf node each.
        let rules: Vec<_> = (0..10u32)
            .flat_map(|i| {
                [1u32, 2, 3, 4].map(|h| {
                    (
                        Ipv4Network::new(Ipv4Addr::from((i << 16) | (h * 50)), 32).expect("net"),
                        entry(h, if h == 4 { Action::Allow } else { Action::Deny }),
                    )
                })
            })
            .collect();
        let t = FastTable::build(&rules, &[], 4).expect("fits");
        assert_eq!(t.groups(), 4);
        assert_eq!(t.spans().len(), 6 * (1 + V4Span::LEAF_BODY_RECORDS));
        assert!(
            t.spans()[..6].iter().all(V4Span::is_leaf),
            "the headers first"
        );
        for i in 0..10u32 {
            for last in 0..256u32 {
                let want = match last {
                    50 | 100 | 150 => entry(last / 50, Action::Deny),
                    200 => entry(4, Action::Allow),
                    _ => 0,
                };
                assert_eq!(t.lookup(Ipv4Addr::from(i << 16 | last)), want, "{i} {last}");
            }
        }
    }

    /// Every /24 of a /16 with five values and no group: 256 leaf nodes, whose headers
    /// stay within reach of the block's base (the entries come after them), in the
    /// whole table and in a region rebuilt for an edit.
    #[test]
    fn a_16_of_leaf_nodes_keeps_its_headers_within_reach() {
        let rules: Vec<_> = (0..256u32)
            .flat_map(|c| {
                [1u32, 2, 3, 4].map(|h| {
                    (
                        Ipv4Network::new(Ipv4Addr::from(10 << 24 | 7 << 16 | c << 8 | (h * 9)), 32)
                            .expect("net"),
                        entry(h + c % 3, Action::Deny),
                    )
                })
            })
            .collect();
        let t = FastTable::build(&rules, &[], 0).expect("fits");
        assert_eq!(t.groups(), 0);
        assert_eq!(t.spans().len(), 256 * (1 + V4Span::LEAF_BODY_RECORDS));
        let base = 10 << 24 | 7 << 16;
        let region = Packed::build(base, 16, &rules, &[], 0);
        assert_eq!(region.spans, t.spans().to_vec());
        for a in base..base + (1 << 16) {
            let want = reference(&rules, &[], Ipv4Addr::from(a));
            assert_eq!(t.lookup(Ipv4Addr::from(a)), want, "{}", Ipv4Addr::from(a));
            assert_eq!(region.lookup(a, base), want);
        }
    }

    #[test]
    fn groups_and_a_full_span_table_is_a_clear_error() {
        // 300k /24s of five values: more leaf nodes than the span table holds.
        let rules: Vec<_> = (0..300_000u32)
            .flat_map(|i| {
                let block = (i * 37 % (1 << 24)) << 8;
                [1u32, 2, 3, 4].map(|h| {
                    (
                        Ipv4Network::new(Ipv4Addr::from(block | h), 32).expect("net"),
                        entry(h, Action::Deny),
                    )
                })
            })
            .collect();
        let err = FastTable::build(&rules, &[], 4096).expect_err("too many");
        let FastPathError::TooManyGroups { needed, limit } = err.clone();
        assert_eq!(limit, 4096);
        assert!(needed > 4096, "{needed}");
        assert!(err.to_string().contains("span table"), "{err}");
        assert!(err.to_string().contains("ipv4_lookup: trie"), "{err}");
    }

    #[test]
    fn a_block_matches_the_whole_table_inside_its_range() {
        let rules = [
            (net("0.0.0.0/0"), entry(1, Action::Deny)),
            (net("10.0.0.0/8"), entry(2, Action::Allow)),
            (net("10.1.0.0/16"), entry(3, Action::Deny)),
            (net("10.1.2.0/24"), entry(4, Action::Allow)),
            (net("10.1.2.64/26"), entry(5, Action::Deny)),
            (net("10.1.9.9/32"), entry(6, Action::Deny)),
            (net("10.1.9.11/32"), entry(6, Action::Deny)),
            (net("10.2.0.0/16"), entry(7, Action::Deny)),
        ];
        let valve = [net("10.1.3.0/24"), net("10.1.2.66/32")];
        let whole = FastTable::build(&rules, &valve, 64).expect("fits");
        // 10.1.2.0/24 (three entries) is a quad node, 10.1.9.0/24 a span node.
        assert_eq!(
            (whole.groups(), whole.spans().len()),
            (0, 1 + V4Span::QUAD_RECORDS)
        );
        for block in ["10.1.0.0", "10.2.0.0", "10.3.0.0", "11.0.0.0"] {
            let base = u32::from(block.parse::<Ipv4Addr>().expect("addr"));
            let packed = Packed::build(base, 16, &rules, &valve, usize::MAX);
            for third in 0..256u32 {
                for last in [0u32, 9, 10, 11, 12, 65, 66, 70, 255] {
                    let addr = base | third << 8 | last;
                    assert_eq!(
                        packed.lookup(addr, base),
                        whole.lookup(Ipv4Addr::from(addr)),
                        "{block} {addr:x}"
                    );
                }
            }
        }
    }

    /// The node at record 1 of `records` reads as `content`, address by address.
    fn reads_as(records: &[V4Span], content: &[u16; BLOCK_ENTRIES]) {
        for last in 0..=255u8 {
            assert_eq!(
                V4Span::value(records, 1, last),
                content[usize::from(last)],
                "{last}"
            );
        }
    }

    #[test]
    fn spans_take_two_values_in_two_runs_and_bitmaps_in_any() {
        let mut c = [7u16; BLOCK_ENTRIES];
        assert_eq!(classify(&c), Second::Entry(7));
        c[9] = 3;
        let one = classify(&c);
        assert_eq!(
            one,
            Second::Span(V4Span {
                lo: [9, 9],
                hi: [9, 9],
                inner: 3,
                outer: 7
            })
        );
        c[200..].fill(3);
        assert_eq!(
            classify(&c),
            Second::Span(V4Span {
                lo: [9, 200],
                hi: [9, 255],
                inner: 3,
                outer: 7
            })
        );
        // Three runs of 3 and of 7: a runs node of the 3s.
        c[100] = 3;
        let Second::Runs(node) = classify(&c) else {
            panic!("a runs node: {:?}", classify(&c));
        };
        assert!(node[0].is_runs() && !node[0].is_bitmap() && !node[0].is_quad());
        assert_eq!(
            Some(node),
            V4Span::runs(3, 7, &[(9, 9), (100, 100), (200, 255)])
        );
        let mut records = vec![V4Span::default()];
        records.extend(node);
        reads_as(&records, &c);
        // Six runs of 3: more than a runs node holds, a bitmap of the 3s.
        for at in [20, 40, 60] {
            c[at] = 3;
        }
        let Second::Bitmap(header, words) = classify(&c) else {
            panic!("a bitmap: {:?}", classify(&c));
        };
        assert_eq!(header, V4Span::bitmap(3, 7));
        assert!(header.is_bitmap());
        assert_eq!(
            words,
            [
                1 << 9 | 1 << 20 | 1 << 40 | 1 << 60,
                1 << (100 - 64),
                0,
                u64::MAX << (200 - 192)
            ]
        );
        let mut records = vec![V4Span::default(), header];
        records.extend(words.iter().map(|w| V4Span::bits(*w)));
        reads_as(&records, &c);
        for at in [20, 40, 60] {
            c[at] = 7;
        }
        // Three runs of 3: the 7s (two runs) are the inside instead.
        c[..9].fill(3);
        assert_eq!(
            classify(&c),
            Second::Span(V4Span {
                lo: [10, 101],
                hi: [99, 199],
                inner: 7,
                outer: 3
            })
        );
        c[50] = 4;
        let Second::Quad(header, words) = classify(&c) else {
            panic!("three values: a quad node: {:?}", classify(&c));
        };
        assert!(header[0].is_quad() && !header[0].is_bitmap());
        let mut records = vec![V4Span::default()];
        records.extend(header);
        records.extend(words.iter().map(|w| V4Span::bits(*w)));
        reads_as(&records, &c);
        c[60] = 5;
        assert!(matches!(classify(&c), Second::Quad(..)), "four values");
        c[70] = 6;
        assert_eq!(classify(&c), Second::Group, "five values");
        for (last, want) in [(0u8, 3u16), (10, 7), (99, 7), (100, 3), (150, 7), (255, 3)] {
            let span = V4Span {
                lo: [10, 101],
                hi: [99, 199],
                inner: 7,
                outer: 3,
            };
            assert_eq!(span.get(last), want, "{last}");
        }
    }

    /// Longest prefix match by scanning every rule: the reference the table must equal.
    fn reference(rules: &[(Ipv4Network, u16)], valve: &[Ipv4Network], a: Ipv4Addr) -> u16 {
        if valve.iter().any(|v| v.contains(a)) {
            return FAST_VALVE;
        }
        let mut best: Option<(u8, u16)> = None;
        for (n, v) in rules {
            if n.contains(a) && best.is_none_or(|(len, _)| n.prefix() >= len) {
                best = Some((n.prefix(), *v));
            }
        }
        best.map_or(0, |(_, v)| v)
    }

    #[test]
    fn random_tables_of_every_shape_match_a_scan_of_the_rules() {
        use ironclad_testing::rules::{addr_in_v4, prefix_in_v4, Rng};
        let mut leaves = 0;
        for seed in 1..=60u64 {
            let mut rng = Rng::new(seed);
            // Dense in a /12 so prefixes nest and share /24s: hosts, runs, groups; every
            // third seed in a /20, with no group at all: its /24s of five values or more
            // are all leaf nodes.
            let short = seed % 3 == 0;
            let within = Ipv4Network::new(
                Ipv4Addr::from(rng.next_u64() as u32 & 0xffff_f000),
                if short { 20 } else { 12 },
            )
            .and_then(|n| Ipv4Network::new(n.network(), n.prefix()))
            .expect("net");
            let count = 1 + rng.below(400) as usize;
            let rules: Vec<(Ipv4Network, u16)> = (0..count)
                .map(|_| {
                    let (lo, hi) = match rng.below(4) {
                        0 => (12, 24),
                        1 => (20, 28),
                        _ => (25, 32),
                    };
                    let n = prefix_in_v4(&mut rng, within, lo, hi);
                    let id = 1 + rng.below(if seed % 2 == 0 { 3 } else { 40 }) as u32;
                    let action = if rng.below(4) == 0 {
                        Action::Allow
                    } else {
                        Action::Deny
                    };
                    (n, entry(id, action))
                })
                .collect();
            let valve: Vec<Ipv4Network> = (0..rng.below(3))
                .map(|_| prefix_in_v4(&mut rng, within, 20, 32))
                .collect();
            let t = FastTable::build(&rules, &valve, if short { 0 } else { 4096 }).expect("fits");
            if short {
                assert_eq!(t.groups(), 0);
                leaves += t.spans().iter().filter(|s| s.is_leaf()).count();
            }
            for _ in 0..4000 {
                let a = if rng.below(2) == 0 {
                    // Near a rule: inside the /24 of one.
                    let (n, _) = rules[rng.below(rules.len() as u64) as usize];
                    let wide = Ipv4Network::new(n.network(), n.prefix().min(24)).expect("net");
                    addr_in_v4(&mut rng, wide)
                } else {
                    addr_in_v4(&mut rng, within)
                };
                assert_eq!(t.lookup(a), reference(&rules, &valve, a), "seed {seed} {a}");
            }
            for (n, _) in &rules {
                for a in [n.network(), n.broadcast()] {
                    assert_eq!(t.lookup(a), reference(&rules, &valve, a), "seed {seed} {a}");
                }
            }
        }
        assert!(leaves > 0, "some seeds compiled leaf nodes");
    }

    #[test]
    fn a_million_scattered_hosts_are_span_nodes() {
        let hosts = ironclad_testing::rules::hosts_v4(1_000_000, 7, &[]);
        let rules: Vec<_> = hosts.iter().map(|n| (*n, entry(1, Action::Deny))).collect();
        let t = FastTable::build(&rules, &[], 4096).expect("fits");
        // A /24 holds three or more of the hosts about 600 times in a million (Poisson,
        // 0.06 hosts per /24): those few are bitmap nodes, every other /24 a span node.
        assert_eq!(t.groups(), 0);
        assert!(t.spans().len() > 900_000, "{}", t.spans().len());
        let set: std::collections::HashSet<Ipv4Addr> = hosts.iter().map(|n| n.network()).collect();
        for n in hosts.iter().step_by(997) {
            for delta in [0u32, 1, 2, 255] {
                let a = Ipv4Addr::from(u32::from(n.network()).wrapping_add(delta));
                let want = if set.contains(&a) {
                    entry(1, Action::Deny)
                } else {
                    0
                };
                assert_eq!(t.lookup(a), want, "{a}");
            }
        }
    }

    /// Hosts of one feed clustered in /24s (a hosting range's abusers): far more /24s
    /// with three or more hosts than there are groups, each a 40-byte bitmap node; the
    /// exceptions of another rule among them make the few /24s of three values groups.
    #[test]
    fn clustered_hosts_are_bitmap_nodes_beyond_the_group_limit() {
        let mut rng = ironclad_testing::rules::Rng::new(11);
        let mut rules: Vec<(Ipv4Network, u16)> = Vec::new();
        for _ in 0..30_000 {
            let block = (rng.next_u64() as u32) & 0xffff_ff00;
            for _ in 0..(3 + rng.below(40)) {
                let host = block | (rng.next_u64() as u32 & 0xff);
                rules.push((
                    Ipv4Network::new(Ipv4Addr::from(host), 32).expect("host"),
                    entry(1, Action::Deny),
                ));
            }
            if rng.below(100) == 0 {
                let host = block | (rng.next_u64() as u32 & 0xff);
                rules.push((
                    Ipv4Network::new(Ipv4Addr::from(host), 32).expect("host"),
                    entry(2, Action::Allow),
                ));
            }
        }
        let t = FastTable::build(&rules, &[], 4096).expect("fits");
        assert!(t.groups() < 400, "{}", t.groups());
        let bitmaps = t.spans().iter().filter(|s| s.is_bitmap()).count();
        assert!(bitmaps > 25_000, "{bitmaps}");
        let mut want: std::collections::HashMap<u32, u16> = std::collections::HashMap::new();
        for (n, e) in &rules {
            want.insert(u32::from(n.network()), *e);
        }
        for (n, _) in rules.iter().step_by(7) {
            let block = u32::from(n.network()) & 0xffff_ff00;
            for last in 0..256u32 {
                let a = block | last;
                assert_eq!(
                    t.lookup(Ipv4Addr::from(a)),
                    want.get(&a).copied().unwrap_or(0),
                    "{}",
                    Ipv4Addr::from(a)
                );
            }
        }
    }

    /// A million hosts three to a /24 (333,333 /24s): runs nodes of two records each, no
    /// group; the most /24s a million hosts of one feed can hold beyond two apiece.
    #[test]
    fn a_million_hosts_three_to_a_24_are_runs_nodes() {
        let rules: Vec<(Ipv4Network, u16)> = (0..1_000_000u32)
            .map(|i| {
                let block = (i / 3) * 7919 % (1 << 24);
                let host = block << 8 | [5u32, 77, 200][(i % 3) as usize];
                (
                    Ipv4Network::new(Ipv4Addr::from(host), 32).expect("host"),
                    entry(1, Action::Deny),
                )
            })
            .collect();
        let t = FastTable::build(&rules, &[], 4096).expect("fits");
        assert_eq!(t.groups(), 0);
        // The last /24 holds one host: a span node.
        assert_eq!(t.spans().iter().filter(|s| s.is_runs()).count(), 333_333);
        for (n, _) in rules.iter().step_by(997) {
            let a = u32::from(n.network());
            assert_eq!(t.lookup(Ipv4Addr::from(a)), entry(1, Action::Deny));
            assert_eq!(t.lookup(Ipv4Addr::from(a + 1)), 0);
        }
    }

    /// Bitmap nodes take five span records: when the span table runs out, the rest are
    /// groups, and the table still reads as the rules.
    #[test]
    fn bitmap_nodes_stop_at_the_span_table_size() {
        let mut rules: Vec<(Ipv4Network, u16)> = Vec::new();
        // 300k /24s of six hosts: 1.5M records as bitmaps, more than the table holds.
        for i in 0..300_000u32 {
            let block = (i * 37 % (1 << 24)) << 8;
            for last in [1u32, 20, 40, 60, 100, 200] {
                rules.push((
                    Ipv4Network::new(Ipv4Addr::from(block | last), 32).expect("host"),
                    entry(1, Action::Deny),
                ));
            }
        }
        let packed = Packed::build(0, 0, &rules, &[], usize::MAX);
        assert!(packed.spans.len() <= SPAN_RECORDS, "{}", packed.spans.len());
        assert!(packed.spans.len() + V4Span::BITMAP_RECORDS > SPAN_RECORDS);
        assert!(!packed.groups.is_empty());
        for (n, _) in rules.iter().step_by(101) {
            let a = u32::from(n.network());
            assert_eq!(packed.lookup(a, 0), entry(1, Action::Deny));
            assert_eq!(packed.lookup(a + 1, 0), 0);
        }
    }

    #[test]
    fn nonzero_blocks_cover_exactly_the_rules() {
        let rules = [(net("10.1.0.0/16"), entry(7, Action::Deny))];
        let t = FastTable::build(&rules, &[], 1).expect("fits");
        let blocks: Vec<u32> = t.nonzero_blocks().map(|(i, _)| i).collect();
        assert_eq!(t.spans().len(), 0);
        assert_eq!(blocks, vec![(10 << 8) | 1]);
        assert_eq!(t.blocks(), SHIELD_V4_FIRST_BLOCKS as usize);
    }
}
