//! The Shield's IPv6 fast path: a rule set compiled into a bitmap trie (Poptrie-style).
//!
//! The kernel's LPM trie walks an IPv6 source bit by bit through nodes it compares and
//! branches on; at 100k prefixes that costs ~120 ns a packet. This table is read with one
//! array access per level instead, every one inlined into the program:
//!
//! - the first level has one `u32` entry ([`Top`]) per /22 of 2000::/3, the global
//!   unicast space feeds and country lists are made of, and one per /16 of the rest (six
//!   to a record): a rule entry, or the record of the block's node. At 100k prefixes most
//!   /22s hold none or one, so a source is decided by its entry or one lone node;
//! - a node covers the next 6 bits. Its 64 values are either child nodes or leaves; two
//!   64-bit maps say which (`bits[0]`) and where a run of equal leaves starts
//!   (`bits[1]`), so a child is `base[0] + popcount(bits[0] & 0..=v) - 1` and a leaf is
//!   `base[1] + popcount(bits[1] & 0..=v) - 1`: children and leaves of a node lie side by
//!   side and nothing is stored for the values a run repeats;
//! - a subtree that holds one prefix is a *lone* node: the prefix itself, the entry
//!   inside it and the entry around it. A feed's scattered /48s end there after two or
//!   three levels instead of running down to their length.
//!
//! Entries are those of the IPv4 fast path ([`crate::fastpath::entry`]): `0` (no rule),
//! [`FAST_VALVE`] (management source: always pass, compiled in with priority over every
//! rule) or a rule id with [`FAST_ALLOW`](ironclad_core::abi::FAST_ALLOW) for allow
//! rules. Everything lives in one array of 24-byte records
//! ([`V6Node`], [`SHIELD_V6_RECORDS`](ironclad_core::abi::SHIELD_V6_RECORDS) of them).
//!
//! ```
//! use std::net::Ipv6Addr;
//! use ironclad_core::abi::Action;
//! use ironclad_policy::fastpath::entry;
//! use ironclad_policy::fastpath6::FastTable6;
//!
//! let rules = [
//!     ("2001:db8::/32".parse()?, entry(1, Action::Deny)),
//!     ("2001:db8:1::/48".parse()?, entry(2, Action::Allow)),
//!     ("2a00:1450::1/128".parse()?, entry(3, Action::Deny)),
//! ];
//! let valve = ["2001:db8:ffff::/48".parse()?];
//! let table = FastTable6::build(&rules, &valve, 196_608)?;
//! let at = |a: &str| table.lookup(a.parse::<Ipv6Addr>().expect("address"));
//! assert_eq!(at("2001:db8:2::1"), entry(1, Action::Deny));
//! assert_eq!(at("2001:db8:1::1"), entry(2, Action::Allow));
//! assert_eq!(at("2a00:1450::1"), entry(3, Action::Deny));
//! assert_eq!(at("2a00:1450::2"), 0);
//! assert_eq!(at("2001:db8:ffff::9"), ironclad_core::abi::FAST_VALVE);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;
use ironclad_core::abi::{
    V6Node, FAST_VALVE, SHIELD_V6_TOP_RECORDS, V6_GLOBAL_BITS, V6_GLOBAL_TOPS, V6_INDEX_MASK,
    V6_LEAVES_PER_RECORD, V6_LEN_MASK, V6_LONE, V6_NODE, V6_STRIDE, V6_TOPS_PER_RECORD,
    V6_TOP_BITS,
};

/// Why a rule set does not fit the IPv6 fast path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FastPath6Error {
    /// The compiled table needs more records than the kernel table has.
    #[error(
        "the IPv6 fast path needs {needed} records (nodes and leaves) but has {limit}; \
         aggregate the prefixes or use `ipv6_lookup: trie`"
    )]
    TooManyRecords {
        /// Records the rule set needs.
        needed: usize,
        /// Records the kernel table has.
        limit: u32,
    },
}

/// A compiled IPv6 fast-path table, ready to be written record by record into the kernel.
#[derive(Clone, PartialEq, Eq)]
pub struct FastTable6 {
    records: Vec<V6Node>,
    nodes: usize,
    lone: usize,
    leaves: usize,
}

impl std::fmt::Debug for FastTable6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTable6")
            .field("records", &self.records.len())
            .field("nodes", &self.nodes)
            .field("lone", &self.lone)
            .field("leaves", &self.leaves)
            .finish()
    }
}

/// A prefix as the builder works with it: network, length, entry.
type Prefix = (u128, u8, u16);

const TOP_ENTRIES: usize = (SHIELD_V6_TOP_RECORDS * V6_TOPS_PER_RECORD) as usize;
const FANOUT: usize = 1 << V6_STRIDE;
/// 2000::/3, the global unicast space.
const GLOBAL: u128 = 1 << 125;

/// One first-level entry of the IPv6 fast path: a /22 of 2000::/3, or a /16 elsewhere.
/// Each is compiled (and edited in place) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Top(u32);

impl Top {
    /// The block `addr` is in.
    pub fn of(addr: Ipv6Addr) -> Self {
        Self::of_bits(u128::from(addr))
    }

    fn of_bits(addr: u128) -> Self {
        if addr >> 125 == 1 {
            Self((addr >> (128 - V6_GLOBAL_BITS)) as u32 & (V6_GLOBAL_TOPS - 1))
        } else {
            Self(V6_GLOBAL_TOPS + (addr >> (128 - V6_TOP_BITS)) as u32)
        }
    }

    /// Its prefix length: 22 inside 2000::/3, 16 elsewhere.
    pub fn bits(self) -> u8 {
        if self.0 < V6_GLOBAL_TOPS {
            V6_GLOBAL_BITS as u8
        } else {
            V6_TOP_BITS as u8
        }
    }

    fn base(self) -> u128 {
        if self.0 < V6_GLOBAL_TOPS {
            GLOBAL | u128::from(self.0) << (128 - V6_GLOBAL_BITS)
        } else {
            u128::from(self.0 - V6_GLOBAL_TOPS) << (128 - V6_TOP_BITS)
        }
    }

    /// The block's first address.
    pub fn first(self) -> Ipv6Addr {
        Ipv6Addr::from(self.base())
    }

    /// The block's last address.
    pub fn last(self) -> Ipv6Addr {
        Ipv6Addr::from(self.base() | u128::MAX >> self.bits())
    }

    /// Whether `net` is compiled below this block's entry (longer than the block, inside
    /// it) rather than into first-level entries.
    pub fn holds(net: &Ipv6Network) -> bool {
        net.prefix() > Self::of(net.network()).bits()
    }

    /// The entry's position in the first level.
    pub fn index(self) -> u32 {
        self.0
    }

    /// The first-level record holding the entry, as the program computes it (`top / 6`
    /// by a multiplication).
    pub fn record(self) -> u32 {
        ((u64::from(self.0) * 699_051) >> 22) as u32
    }

    /// The entry's place in its record.
    pub fn slot(self) -> usize {
        (self.0 - self.record() * V6_TOPS_PER_RECORD) as usize
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// The 6-bit value of `addr` at `depth` (the last stride, at 124, padded with zeros),
/// exactly as the program computes it.
fn stride(addr: u128, depth: u32) -> usize {
    if depth + V6_STRIDE <= 128 {
        ((addr >> (128 - V6_STRIDE - depth)) & 0x3f) as usize
    } else {
        ((addr << (depth + V6_STRIDE - 128)) & 0x3f) as usize
    }
}

/// Record image of four first-level entries or eight leaves (native order, as the
/// program reads them through a `__u32 *` or `__u16 *`).
fn packed(bytes: &[u8]) -> V6Node {
    let mut image = [0u8; V6Node::SIZE];
    image[..bytes.len()].copy_from_slice(bytes);
    V6Node::from_bytes(&image).unwrap_or_default()
}

struct Builder {
    records: Vec<V6Node>,
    leaves: Vec<u16>,
    /// Records that are inner nodes (their leaf base is patched once the leaf region's
    /// place is known).
    inner: Vec<usize>,
    lone: usize,
}

impl Builder {
    fn reserve(&mut self, count: usize) -> usize {
        let at = self.records.len();
        self.records.resize(at + count, V6Node::default());
        at
    }

    /// Writes into record `at` the subtree below `depth` that holds `rules` (each longer
    /// than `depth`, sorted by address) and reads `def` wherever none of them matches.
    fn fill(&mut self, at: usize, depth: u32, rules: &[Prefix], def: u16) {
        if let [(net, len, entry)] = rules {
            self.records[at] = V6Node {
                bits: [(net >> 64) as u64, *net as u64],
                base: [
                    V6_LONE | u32::from(*len),
                    u32::from(*entry) | u32::from(def) << 16,
                ],
            };
            self.lone += 1;
            return;
        }
        let next = depth + V6_STRIDE;
        // What each value reads before anything deeper: the longest rule ending in this
        // stride that covers it.
        let mut defaults = [def; FANOUT];
        let mut shallow: Vec<&Prefix> = rules
            .iter()
            .filter(|(_, len, _)| u32::from(*len) <= next)
            .collect();
        shallow.sort_by_key(|(_, len, _)| *len);
        for (net, len, entry) in shallow {
            let first = stride(*net, depth);
            let count = 1usize << (next - u32::from(*len));
            defaults[first..first + count].fill(*entry);
        }
        // Longer rules go to the child of their value (still in address order).
        let deep: Vec<Prefix> = rules
            .iter()
            .filter(|(_, len, _)| u32::from(*len) > next)
            .copied()
            .collect();
        let mut ranges = [(0usize, 0usize); FANOUT];
        let mut i = 0;
        while i < deep.len() {
            let v = stride(deep[i].0, depth);
            let j = i + deep[i..]
                .iter()
                .take_while(|p| stride(p.0, depth) == v)
                .count();
            ranges[v] = (i, j);
            i = j;
        }
        let mut children = 0u64;
        for (v, (from, to)) in ranges.iter().enumerate() {
            if to > from {
                children |= 1 << v;
            }
        }
        let first_child = self.reserve(children.count_ones() as usize);
        let first_leaf = self.leaves.len();
        let mut runs = 0u64;
        let mut last = None;
        for (v, value) in defaults.iter().enumerate() {
            if children & (1 << v) == 0 && last != Some(*value) {
                runs |= 1 << v;
                self.leaves.push(*value);
                last = Some(*value);
            }
        }
        self.records[at] = V6Node {
            bits: [children, runs],
            base: [first_child as u32, first_leaf as u32],
        };
        self.inner.push(at);
        let mut child = first_child;
        for (v, (from, to)) in ranges.iter().enumerate() {
            if to > from {
                self.fill(child, next, &deep[*from..*to], defaults[v]);
                child += 1;
            }
        }
    }
}

/// The rules as the table holds them: one entry per prefix (the last listed), host bits
/// cleared, rules inside a valve prefix gone and the valve prefixes in as rules of their
/// own (so the longest match of a valve address is the valve); sorted by address, then
/// length, so every subtree is a contiguous run.
fn normalize(rules: &[(Ipv6Network, u16)], valve: &[Ipv6Network]) -> Vec<Prefix> {
    let mut book: BTreeMap<(u128, u8), u16> = BTreeMap::new();
    for (net, entry) in rules {
        let len = net.prefix();
        book.insert((u128::from(net.ip()) & mask(len), len), *entry);
    }
    let valve: BTreeSet<(u128, u8)> = valve
        .iter()
        .map(|n| (u128::from(n.ip()) & mask(n.prefix()), n.prefix()))
        .collect();
    if !valve.is_empty() {
        let lengths: BTreeSet<u8> = valve.iter().map(|(_, len)| *len).collect();
        book.retain(|(net, len), _| {
            !lengths
                .iter()
                .any(|v| v <= len && valve.contains(&(net & mask(*v), *v)))
        });
        for v in &valve {
            book.insert(*v, FAST_VALVE);
        }
    }
    book.into_iter().map(|((n, l), e)| (n, l, e)).collect()
}

/// The first-level entries the prefixes as long as their block or shorter give (longest
/// wins).
fn first_level(prefixes: &[Prefix]) -> Vec<u32> {
    let mut top = vec![0u32; TOP_ENTRIES];
    let mut short: Vec<&Prefix> = prefixes
        .iter()
        .filter(|(net, len, _)| *len <= Top::of_bits(*net).bits())
        .collect();
    short.sort_by_key(|(_, len, _)| *len);
    let global_end = GLOBAL | (GLOBAL - 1);
    for (net, len, entry) in short {
        let last = net | !mask(*len);
        let entry = u32::from(*entry);
        // Its /22s inside 2000::/3.
        let (lo, hi) = ((*net).max(GLOBAL), last.min(global_end));
        if lo <= hi && u32::from(*len) <= V6_GLOBAL_BITS {
            let (a, b) = (Top::of_bits(lo).0 as usize, Top::of_bits(hi).0 as usize);
            top[a..=b].fill(entry);
        }
        // Its /16s elsewhere.
        if u32::from(*len) <= V6_TOP_BITS {
            let (a, b) = ((net >> 112) as u32, (last >> 112) as u32);
            for (from, to) in [(a, b.min(0x1fff)), (a.max(0x4000), b)] {
                if from <= to {
                    top[(V6_GLOBAL_TOPS + from) as usize..=(V6_GLOBAL_TOPS + to) as usize]
                        .fill(entry);
                }
            }
        }
    }
    top
}

/// The first-level entry of `top` alone: the longest of `prefixes` that covers the block.
fn first_entry(prefixes: &[Prefix], top: Top) -> u16 {
    let base = top.base();
    prefixes
        .iter()
        .filter(|(net, len, _)| *len <= top.bits() && base & mask(*len) == *net)
        .max_by_key(|(_, len, _)| *len)
        .map_or(0, |(_, _, entry)| *entry)
}

/// The compiled subtree of one first-level block ([`Top`]): its records (nodes, then its
/// leaves, eight to a record) for the table from record `first` on, and the block's
/// first-level entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Region {
    /// The block.
    pub top: Top,
    /// The first-level entry: a rule entry, or [`V6_NODE`] | `first`.
    pub entry: u32,
    /// Index of the first record.
    pub first: u32,
    /// The records to write at `first`, `first + 1`, ...
    pub records: Vec<V6Node>,
    nodes: usize,
    lone: usize,
    leaves: usize,
}

/// Compiles the block `top` whose longer prefixes are `long` (sorted, all inside it) and
/// whose addresses read `def` outside them, into records from `first` on.
fn region(top: Top, long: &[Prefix], def: u16, first: usize) -> Region {
    if long.is_empty() {
        return Region {
            top,
            entry: u32::from(def),
            first: first as u32,
            records: Vec::new(),
            nodes: 0,
            lone: 0,
            leaves: 0,
        };
    }
    let mut b = Builder {
        records: Vec::new(),
        leaves: Vec::new(),
        inner: Vec::new(),
        lone: 0,
    };
    let root = b.reserve(1);
    b.fill(root, u32::from(top.bits()), long, def);
    // Record indices so far count from the region's start; leaves go after the nodes.
    let nodes = b.records.len();
    let leaf_start = ((first + nodes) * V6_LEAVES_PER_RECORD as usize) as u32;
    for at in &b.inner {
        let node = &mut b.records[*at];
        node.base[0] += first as u32;
        node.base[1] += leaf_start;
    }
    for chunk in b.leaves.chunks(V6_LEAVES_PER_RECORD as usize) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|e| e.to_ne_bytes()).collect();
        b.records.push(packed(&bytes));
    }
    Region {
        top,
        entry: V6_NODE | first as u32,
        first: first as u32,
        records: b.records,
        nodes: b.inner.len() + b.lone,
        lone: b.lone,
        leaves: b.leaves.len(),
    }
}

impl FastTable6 {
    /// Compiles `rules` (prefix, [`entry`](crate::fastpath::entry)) and the management
    /// `valve` into a table of at most `max_records` records.
    ///
    /// The longest prefix wins; a prefix listed twice keeps its last entry. Valve
    /// prefixes win over every rule, whatever their length. Host bits below a prefix
    /// length are ignored. Each /16 that holds longer prefixes is a [`Region`] of its
    /// own, built as [`FastTable6::region`] builds it for an in-place edit.
    pub fn build(
        rules: &[(Ipv6Network, u16)],
        valve: &[Ipv6Network],
        max_records: u32,
    ) -> Result<Self, FastPath6Error> {
        let prefixes = normalize(rules, valve);
        let mut top = first_level(&prefixes);
        let long: Vec<Prefix> = prefixes
            .into_iter()
            .filter(|(net, len, _)| *len > Top::of_bits(*net).bits())
            .collect();
        let mut table = Self {
            records: vec![V6Node::default(); SHIELD_V6_TOP_RECORDS as usize],
            nodes: 0,
            lone: 0,
            leaves: 0,
        };
        let mut i = 0;
        while i < long.len() {
            let t = Top::of_bits(long[i].0);
            let j = i + long[i..]
                .iter()
                .take_while(|p| Top::of_bits(p.0) == t)
                .count();
            let at = t.0 as usize;
            let r = region(t, &long[i..j], top[at] as u16, table.records.len());
            top[at] = r.entry;
            table.add(&r);
            i = j;
        }
        let needed = table.records.len();
        if needed > max_records as usize || needed > V6_INDEX_MASK as usize {
            return Err(FastPath6Error::TooManyRecords {
                needed,
                limit: max_records,
            });
        }
        for (r, chunk) in top.chunks(V6_TOPS_PER_RECORD as usize).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|e| e.to_ne_bytes()).collect();
            table.records[r] = packed(&bytes);
        }
        Ok(table)
    }

    fn add(&mut self, r: &Region) {
        self.records.extend_from_slice(&r.records);
        self.nodes += r.nodes;
        self.lone += r.lone;
        self.leaves += r.leaves;
    }

    /// The block `top` of the table `rules` and `valve` compile to (the same arguments as
    /// [`FastTable6::build`]; only prefixes inside the block or covering it matter, and a
    /// caller may pass only those), as records from `first` on: what an in-place edit
    /// writes into unused records before it points the block's first-level entry at them.
    pub fn region(
        rules: &[(Ipv6Network, u16)],
        valve: &[Ipv6Network],
        top: Top,
        first: u32,
    ) -> Region {
        let inside = |n: &Ipv6Network| {
            n.prefix() <= top.bits() && n.contains(top.first()) || Top::of(n.network()) == top
        };
        let rules: Vec<(Ipv6Network, u16)> =
            rules.iter().filter(|(n, _)| inside(n)).copied().collect();
        let valve: Vec<Ipv6Network> = valve.iter().filter(|n| inside(n)).copied().collect();
        let prefixes = normalize(&rules, &valve);
        let def = first_entry(&prefixes, top);
        let long: Vec<Prefix> = prefixes
            .into_iter()
            .filter(|(_, len, _)| *len > top.bits())
            .collect();
        region(top, &long, def, first as usize)
    }

    /// Applies a region as the kernel edit does: its records at its place, then the
    /// /16's first-level entry.
    pub fn apply(&mut self, r: &Region) {
        let end = r.first as usize + r.records.len();
        if self.records.len() < end {
            self.records.resize(end, V6Node::default());
        }
        self.records[r.first as usize..end].copy_from_slice(&r.records);
        let at = r.top.record() as usize;
        self.records[at] = Self::with_entry(self.records[at], r.top, r.entry);
        self.nodes += r.nodes;
        self.lone += r.lone;
        self.leaves += r.leaves;
    }

    /// The first-level record holding `top`'s entry, with that entry set to `entry`.
    pub fn with_entry(record: V6Node, top: Top, entry: u32) -> V6Node {
        let mut bytes = record.to_bytes();
        let at = 4 * top.slot();
        bytes[at..at + 4].copy_from_slice(&entry.to_ne_bytes());
        V6Node::from_bytes(&bytes).unwrap_or(record)
    }

    fn record(&self, index: u32) -> V6Node {
        self.records
            .get(index as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The entry the kernel reads for `addr`: the same walk as the program's.
    pub fn lookup(&self, addr: Ipv6Addr) -> u16 {
        let a = u128::from(addr);
        let (hi, lo) = ((a >> 64) as u64, a as u64);
        let t = Top::of(addr);
        let top = self.record(t.record()).to_bytes();
        let at = 4 * t.slot();
        let entry = u32::from_ne_bytes([top[at], top[at + 1], top[at + 2], top[at + 3]]);
        if entry & V6_NODE == 0 {
            return entry as u16;
        }
        let mut index = entry & V6_INDEX_MASK;
        let mut depth = u32::from(t.bits());
        while depth < 128 {
            let node = self.record(index);
            if node.base[0] & V6_LONE != 0 {
                let len = node.base[0] & V6_LEN_MASK;
                let inside = if len <= 64 {
                    len == 0 || (hi ^ node.bits[0]) >> (64 - len) == 0
                } else {
                    hi == node.bits[0] && (lo ^ node.bits[1]) >> (128 - len) == 0
                };
                return if inside {
                    node.base[1] as u16
                } else {
                    (node.base[1] >> 16) as u16
                };
            }
            let v = stride(a, depth) as u32;
            let below = if v == 63 { u64::MAX } else { (2u64 << v) - 1 };
            if node.bits[0] & (1 << v) != 0 {
                index = node.base[0] + (node.bits[0] & below).count_ones() - 1;
                depth += V6_STRIDE;
                continue;
            }
            let leaf = node.base[1] + (node.bits[1] & below).count_ones() - 1;
            let record = self.record(leaf / V6_LEAVES_PER_RECORD).to_bytes();
            let at = 2 * (leaf % V6_LEAVES_PER_RECORD) as usize;
            return u16::from_ne_bytes([record[at], record[at + 1]]);
        }
        0
    }

    /// Every record, first level first.
    pub fn records(&self) -> &[V6Node] {
        &self.records
    }

    /// Nodes (inner and lone).
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Lone-prefix nodes.
    pub fn lone(&self) -> usize {
        self.lone
    }

    /// Leaf entries.
    pub fn leaves(&self) -> usize {
        self.leaves
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::{decode, entry};
    use ironclad_core::abi::{Action, SHIELD_V6_RECORDS};
    use ironclad_testing::rules::{table_v6, Rng};

    fn net(s: &str) -> Ipv6Network {
        s.parse().expect("cidr")
    }

    /// The plain reference: the longest matching rule, the valve first.
    fn reference(rules: &[(Ipv6Network, u16)], valve: &[Ipv6Network], addr: Ipv6Addr) -> u16 {
        if valve.iter().any(|v| v.contains(addr)) {
            return FAST_VALVE;
        }
        let mut best: Option<(u8, u16)> = None;
        for (n, e) in rules {
            if n.contains(addr) && best.is_none_or(|(l, _)| n.prefix() >= l) {
                best = Some((n.prefix(), *e));
            }
        }
        best.map_or(0, |(_, e)| e)
    }

    /// Addresses that probe every prefix: its first and last address, one inside, and
    /// the addresses just outside it.
    fn probes(rules: &[(Ipv6Network, u16)], valve: &[Ipv6Network], rng: &mut Rng) -> Vec<Ipv6Addr> {
        let mut out = Vec::new();
        for n in rules.iter().map(|(n, _)| n).chain(valve) {
            let first = u128::from(n.network());
            let last = first | !mask(n.prefix());
            let inside = first
                | (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
                    & !mask(n.prefix());
            for a in [
                first,
                last,
                inside,
                first.wrapping_sub(1),
                last.wrapping_add(1),
            ] {
                out.push(Ipv6Addr::from(a));
            }
        }
        for _ in 0..2000 {
            out.push(Ipv6Addr::from(
                u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
            ));
        }
        out
    }

    fn check(rules: &[(Ipv6Network, u16)], valve: &[Ipv6Network], seed: u64) -> FastTable6 {
        let table = FastTable6::build(rules, valve, SHIELD_V6_RECORDS).expect("fits");
        let mut rng = Rng::new(seed);
        for addr in probes(rules, valve, &mut rng) {
            assert_eq!(
                table.lookup(addr),
                reference(rules, valve, addr),
                "{addr} in {table:?}"
            );
        }
        table
    }

    #[test]
    fn longest_prefix_wins_at_every_depth() {
        let rules = [
            (net("::/0"), entry(1, Action::Deny)),
            (net("2000::/3"), entry(2, Action::Allow)),
            (net("2001:db8::/32"), entry(3, Action::Deny)),
            (net("2001:db8:1::/48"), entry(4, Action::Allow)),
            (net("2001:db8:1:2::/64"), entry(5, Action::Deny)),
            (net("2001:db8:1:2::7/128"), entry(6, Action::Allow)),
            (net("2001:db8:1:2::6/127"), entry(7, Action::Deny)),
            (net("2001:db8:1:2::8/126"), entry(8, Action::Deny)),
        ];
        let t = check(&rules, &[], 1);
        let at = |s: &str| decode(t.lookup(s.parse().expect("addr")));
        assert_eq!(at("::1"), Some((1, Action::Deny)));
        assert_eq!(at("2400::1"), Some((2, Action::Allow)));
        assert_eq!(at("2001:db8:5::1"), Some((3, Action::Deny)));
        assert_eq!(at("2001:db8:1:3::1"), Some((4, Action::Allow)));
        assert_eq!(at("2001:db8:1:2::5"), Some((5, Action::Deny)));
        assert_eq!(at("2001:db8:1:2::6"), Some((7, Action::Deny)));
        assert_eq!(at("2001:db8:1:2::7"), Some((6, Action::Allow)));
        assert_eq!(at("2001:db8:1:2::b"), Some((8, Action::Deny)));
        assert_eq!(at("2001:db8:1:2::c"), Some((5, Action::Deny)));
    }

    #[test]
    fn a_lone_prefix_ends_the_walk_with_the_entry_around_it() {
        let rules = [
            (net("2a01::/16"), entry(1, Action::Deny)),
            (net("2a01:4f8:1:2::/64"), entry(2, Action::Allow)),
        ];
        let t = check(&rules, &[], 2);
        // The /16's node is the lone /64 itself.
        assert_eq!((t.nodes(), t.lone()), (1, 1));
        assert_eq!(
            decode(t.lookup("2a01:4f8:1:2::99".parse().expect("addr"))),
            Some((2, Action::Allow))
        );
        assert_eq!(
            decode(t.lookup("2a01:4f8:1:3::".parse().expect("addr"))),
            Some((1, Action::Deny))
        );
    }

    #[test]
    fn valve_wins_over_longer_and_shorter_rules() {
        let rules = [
            (net("2001:db8::/32"), entry(1, Action::Deny)),
            (net("2001:db8:0:1::/64"), entry(2, Action::Deny)),
            (net("2001:db8:0:1::9/128"), entry(3, Action::Deny)),
            (net("2001:db8:0:2::/64"), entry(4, Action::Deny)),
        ];
        let valve = [net("2001:db8:0:1::/64"), net("2001:db8:0:2::7/128")];
        let t = check(&rules, &valve, 3);
        assert_eq!(
            t.lookup("2001:db8:0:1::9".parse().expect("addr")),
            FAST_VALVE
        );
        assert_eq!(
            t.lookup("2001:db8:0:2::7".parse().expect("addr")),
            FAST_VALVE
        );
        assert_eq!(
            decode(t.lookup("2001:db8:0:2::8".parse().expect("addr"))),
            Some((4, Action::Deny))
        );
    }

    /// The first level's two kinds of block meet at 2000::/3's edges; prefixes across
    /// them fill both kinds of entry.
    #[test]
    fn blocks_are_22_bits_in_2000_3_and_16_bits_elsewhere() {
        let at = |s: &str| Top::of(s.parse().expect("addr"));
        assert_eq!(at("2001:db8::1").bits(), 22);
        assert_eq!(
            at("2001:db8::1").first(),
            "2001:c00::".parse::<Ipv6Addr>().expect("a")
        );
        assert_eq!(
            at("2001:db8::1").last(),
            "2001:fff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<Ipv6Addr>()
                .expect("a")
        );
        assert_eq!(at("fe80::1").bits(), 16);
        assert_eq!(
            at("fe80::1").first(),
            "fe80::".parse::<Ipv6Addr>().expect("a")
        );
        assert_eq!(at("2000::").index(), 0);
        assert_eq!(at("3fff:ffff::").index(), V6_GLOBAL_TOPS - 1);
        assert_eq!(at("1fff::").index(), V6_GLOBAL_TOPS + 0x1fff);
        assert_eq!(at("4000::").index(), V6_GLOBAL_TOPS + 0x4000);
        assert!(Top::holds(&net("2001:db8::/32")));
        assert!(!Top::holds(&net("2001:db8::/22")));
        assert!(Top::holds(&net("fe80::/17")));
        assert!(!Top::holds(&net("fe80::/16")));
        let rules = [
            (net("::/1"), entry(1, Action::Deny)),
            (net("2000::/4"), entry(2, Action::Allow)),
            (net("3fff:fc00::/22"), entry(3, Action::Deny)),
            (net("1fff::/16"), entry(4, Action::Deny)),
            (net("4000::/2"), entry(5, Action::Deny)),
            (net("3000::/20"), entry(6, Action::Deny)),
            (net("3000:0:1::/48"), entry(7, Action::Allow)),
            (net("4000:1::/17"), entry(8, Action::Allow)),
        ];
        let t = check(&rules, &[], 5);
        let at = |s: &str| decode(t.lookup(s.parse().expect("addr")));
        assert_eq!(at("::1"), Some((1, Action::Deny)));
        assert_eq!(at("2400::1"), Some((2, Action::Allow)));
        assert_eq!(at("3fff:ffff::1"), Some((3, Action::Deny)));
        assert_eq!(at("3fff:fbff::1"), Some((1, Action::Deny)));
        assert_eq!(at("1fff:1::"), Some((4, Action::Deny)));
        assert_eq!(at("4001::1"), Some((5, Action::Deny)));
        assert_eq!(at("3000:fff::1"), Some((6, Action::Deny)));
        assert_eq!(at("3000:0:1::9"), Some((7, Action::Allow)));
        assert_eq!(at("3000:1000::"), Some((1, Action::Deny)));
        assert_eq!(at("4000:1::1"), Some((8, Action::Allow)));
        assert_eq!(at("4000:8000::1"), Some((5, Action::Deny)));
        assert_eq!(at("7fff::1"), Some((5, Action::Deny)));
        assert_eq!(at("c000::1"), None);
    }

    /// The program finds a first-level entry's record by a multiplication and a shift
    /// instead of a division by six: the same for every entry.
    #[test]
    fn the_programs_division_by_six_is_exact_for_every_entry() {
        for t in 0..TOP_ENTRIES as u32 {
            let top = Top(t);
            assert_eq!(top.record(), t / V6_TOPS_PER_RECORD, "{t}");
            assert_eq!(top.slot(), (t % V6_TOPS_PER_RECORD) as usize, "{t}");
        }
        assert_eq!(
            TOP_ENTRIES as u32,
            SHIELD_V6_TOP_RECORDS * V6_TOPS_PER_RECORD
        );
    }

    #[test]
    fn host_bits_are_ignored_and_the_last_duplicate_wins() {
        let rules = [
            (net("2001:db8::1/32"), entry(1, Action::Deny)),
            (net("2001:db8::/32"), entry(2, Action::Allow)),
        ];
        let t = check(&rules, &[], 4);
        assert_eq!(
            decode(t.lookup("2001:db8:9::".parse().expect("addr"))),
            Some((2, Action::Allow))
        );
    }

    /// Random policies of every shape against the reference: a feed of /32–/64s, nested
    /// exceptions, hosts side by side in one /64, short prefixes across the first level,
    /// and a valve over some of it.
    #[test]
    fn random_policies_of_every_shape_match_the_reference() {
        for seed in 0..20u64 {
            let mut rng = Rng::new(seed);
            let mut rules: Vec<(Ipv6Network, u16)> = table_v6(300, seed, &[])
                .into_iter()
                .map(|n| (n, entry(1 + rng.below(50) as u32, Action::Deny)))
                .collect();
            let base: Vec<Ipv6Network> = rules.iter().map(|(n, _)| *n).take(40).collect();
            for n in base {
                let len = (n.prefix() + 1 + rng.below(129 - u64::from(n.prefix())) as u8).min(128);
                let inside = u128::from(n.network())
                    | (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
                        & !mask(n.prefix());
                let action = if rng.below(2) == 0 {
                    Action::Allow
                } else {
                    Action::Deny
                };
                if let Ok(sub) = Ipv6Network::new(Ipv6Addr::from(inside & mask(len)), len) {
                    rules.push((sub, entry(60 + rng.below(50) as u32, action)));
                }
            }
            let host = u128::from(rng.next_u64()) << 64;
            for k in 0..10u128 {
                let len = 120 + rng.below(9) as u8;
                let a = Ipv6Addr::from((host | (k * 37)) & mask(len));
                rules.push((
                    Ipv6Network::new(a, len).expect("len"),
                    entry(200 + k as u32, Action::Deny),
                ));
            }
            for _ in 0..5 {
                let len = rng.below(23) as u8;
                let a = Ipv6Addr::from((u128::from(rng.next_u64()) << 64) & mask(len));
                rules.push((
                    Ipv6Network::new(a, len).expect("len"),
                    entry(300, Action::Allow),
                ));
            }
            let valve: Vec<Ipv6Network> = rules.iter().step_by(97).map(|(n, _)| *n).collect();
            check(&rules, &valve, seed);
            check(&rules, &[], seed + 100);
        }
    }

    /// 100k prefixes shaped like a real IPv6 feed fit with room to spare.
    #[test]
    fn a_hundred_thousand_feed_prefixes_fit() {
        let rules: Vec<(Ipv6Network, u16)> = table_v6(100_000, 7, &[])
            .into_iter()
            .map(|n| (n, entry(1, Action::Deny)))
            .collect();
        let t = FastTable6::build(&rules, &[], SHIELD_V6_RECORDS).expect("fits");
        // Nodes and leaves use at most three quarters of the records after the first level.
        let top = SHIELD_V6_TOP_RECORDS as usize;
        assert!(
            t.records().len() - top < (SHIELD_V6_RECORDS as usize - top) * 3 / 4,
            "{t:?}"
        );
        let mut rng = Rng::new(8);
        for (n, _) in rules.iter().step_by(101) {
            let a = Ipv6Addr::from(
                u128::from(n.network()) | u128::from(rng.next_u64()) & !mask(n.prefix()),
            );
            assert_eq!(t.lookup(a), entry(1, Action::Deny), "{a} in {n}");
        }
    }

    /// An edit as the Shield makes it: each /16 a change touches is compiled again into
    /// unused records and its first-level entry is pointed there. The edited table
    /// reads exactly as the new rules do.
    #[test]
    fn regions_rebuilt_in_place_read_as_the_new_rules() {
        for seed in 0..10u64 {
            let mut rng = Rng::new(seed + 500);
            let old: Vec<(Ipv6Network, u16)> = table_v6(2000, seed, &[])
                .into_iter()
                .map(|n| (n, entry(1 + rng.below(9) as u32, Action::Deny)))
                .collect();
            let valve = [old[5].0];
            let mut table = FastTable6::build(&old, &valve, SHIELD_V6_RECORDS).expect("fits");
            let mut new = old.clone();
            let mut changed = Vec::new();
            for _ in 0..20 {
                let i = rng.below(new.len() as u64) as usize;
                changed.push(new.remove(i).0);
            }
            for (n, _) in table_v6(20, seed + 1000, &[]).into_iter().map(|n| (n, 0)) {
                new.push((n, entry(70, Action::Allow)));
                changed.push(n);
            }
            // A longer exception inside a kept prefix.
            let keep = new[7].0;
            let sub = Ipv6Network::new(keep.network(), (keep.prefix() + 8).min(128)).expect("len");
            new.push((sub, entry(71, Action::Allow)));
            changed.push(sub);
            let tops: BTreeSet<Top> = changed.iter().map(|n| Top::of(n.network())).collect();
            for t in tops {
                let r = FastTable6::region(&new, &valve, t, table.records().len() as u32);
                table.apply(&r);
            }
            let mut rng = Rng::new(seed);
            for addr in
                probes(&new, &valve, &mut rng)
                    .into_iter()
                    .chain(probes(&old, &[], &mut rng))
            {
                assert_eq!(table.lookup(addr), reference(&new, &valve, addr), "{addr}");
            }
        }
    }

    #[test]
    fn too_many_records_is_a_named_error() {
        let rules: Vec<(Ipv6Network, u16)> = table_v6(1000, 9, &[])
            .into_iter()
            .map(|n| (n, entry(1, Action::Deny)))
            .collect();
        let err =
            FastTable6::build(&rules, &[], SHIELD_V6_TOP_RECORDS + 10).expect_err("too small");
        assert!(
            matches!(err, FastPath6Error::TooManyRecords { limit, .. } if limit == SHIELD_V6_TOP_RECORDS + 10),
            "{err}"
        );
        assert!(err.to_string().contains("ipv6_lookup: trie"), "{err}");
    }
}
