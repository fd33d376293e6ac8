//! Prefix aggregation: the smallest list of CIDRs that covers exactly the same addresses.
//!
//! ```
//! use ironclad_policy::aggregate::aggregate;
//!
//! let input = ["10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "10.0.0.7/32", "2001:db8::/33", "2001:db8:8000::/33"];
//! let nets: Vec<_> = input.iter().map(|s| s.parse().unwrap()).collect();
//! let out: Vec<String> = aggregate(&nets).iter().map(ToString::to_string).collect();
//! assert_eq!(out, ["10.0.0.0/23", "2001:db8::/32"]);
//! ```
//!
//! Covered prefixes are dropped, then sibling halves are merged into their parent, again
//! and again. The result is the unique minimal cover: disjoint blocks, none of which can
//! be merged. Families are aggregated separately; the output is sorted, IPv4 first.
//! [`aggregate_except`] leaves alone prefixes that another rule of the policy also
//! lists, so aggregation never changes which rule a packet matches.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::compact::PrefixList;

/// A block: its first address (IPv4 in the low 32 bits) and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Block {
    start: u128,
    len: u8,
}

impl Block {
    fn size(self, bits: u8) -> u128 {
        // A /0 of IPv6 has 2^128 addresses: represent its size as 0 (wraps), used only
        // through `end`, which saturates.
        1u128.checked_shl(u32::from(bits - self.len)).unwrap_or(0)
    }

    /// The last address of the block.
    fn end(self, bits: u8) -> u128 {
        match self.size(bits) {
            0 => u128::MAX,
            n => self.start + (n - 1),
        }
    }
}

fn to_block(net: IpNetwork) -> (bool, Block) {
    match net {
        IpNetwork::V4(n) => (
            true,
            Block {
                start: u128::from(u32::from(n.network())),
                len: n.prefix(),
            },
        ),
        IpNetwork::V6(n) => (
            false,
            Block {
                start: u128::from(n.network()),
                len: n.prefix(),
            },
        ),
    }
}

fn from_block(v4: bool, b: Block) -> Option<IpNetwork> {
    if v4 {
        let addr = Ipv4Addr::from(u32::try_from(b.start).ok()?);
        Ipv4Network::new(addr, b.len).ok().map(IpNetwork::V4)
    } else {
        Ipv6Network::new(Ipv6Addr::from(b.start), b.len)
            .ok()
            .map(IpNetwork::V6)
    }
}

/// Aggregates one family's blocks (`bits` = 32 or 128). A block for which `keep` is true
/// stays as it is (not dropped when covered, not merged into a parent), and no merge
/// creates a parent for which it is true.
/// All address bits of a family set.
fn family_mask(bits: u8) -> u128 {
    if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn aggregate_family(mut blocks: Vec<Block>, bits: u8, keep: &dyn Fn(Block) -> bool) -> Vec<Block> {
    // Networks ascending; for the same network the shortest prefix (the cover) first.
    blocks.sort_unstable();
    blocks.dedup();
    let mut out: Vec<Block> = Vec::with_capacity(blocks.len());
    // Remove covered blocks, then merge siblings on a stack. A covered block stays when
    // it, or a prefix between it and its cover, is kept: dropping it would hand its
    // addresses to that other prefix (or, when the cover itself is listed elsewhere, to
    // whichever of the two wins the tie).
    let mut cover: Option<Block> = None;
    for b in blocks {
        if let Some(c) = cover.filter(|c| b.start <= c.end(bits)) {
            let between = (c.len..=b.len).any(|len| {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (bits - len) & family_mask(bits)
                };
                keep(Block {
                    start: b.start & mask,
                    len,
                })
            });
            if !between {
                continue;
            }
        } else {
            cover = Some(b);
        }
        out.push(b);
        // Merge the top two while they are the two halves of one parent.
        while out.len() >= 2 {
            let (right, left) = (out[out.len() - 1], out[out.len() - 2]);
            if left.len != right.len || left.len == 0 {
                break;
            }
            let parent_len = left.len - 1;
            let half = left.size(bits);
            let aligned =
                left.start & (half.wrapping_mul(2).wrapping_sub(1)) == 0 || parent_len == 0;
            if !(aligned && left.start.wrapping_add(half) == right.start) {
                break;
            }
            let parent = Block {
                start: left.start,
                len: parent_len,
            };
            if keep(left) || keep(right) || keep(parent) {
                break;
            }
            out.truncate(out.len() - 2);
            out.push(parent);
        }
    }
    out
}

/// The prefixes in exactly one of `old` and `new` (both sorted), in order; `None` as
/// soon as there are more than `limit`.
pub fn symmetric_difference(
    old: &[IpNetwork],
    new: &[IpNetwork],
    limit: usize,
) -> Option<Vec<IpNetwork>> {
    let mut out = Vec::new();
    symmetric_difference_into(old, new, limit, &mut out).then_some(out)
}

/// [`symmetric_difference`] of two sorted lists of any kind, appended to `out`; false
/// when `out` grows past `limit`.
pub(crate) fn symmetric_difference_into<T: Ord + Copy>(
    old: &[T],
    new: &[T],
    limit: usize,
    out: &mut Vec<T>,
) -> bool {
    const RUN: usize = 32;
    let (mut a, mut b) = (0, 0);
    loop {
        // Equal runs a block at a time: two versions of a big list are mostly equal.
        while a + RUN <= old.len() && b + RUN <= new.len() && old[a..a + RUN] == new[b..b + RUN] {
            a += RUN;
            b += RUN;
        }
        match (old.get(a), new.get(b)) {
            (Some(x), Some(y)) if x == y => {
                a += 1;
                b += 1;
                continue;
            }
            (Some(x), Some(y)) if x < y => {
                out.push(*x);
                a += 1;
            }
            (_, Some(y)) => {
                out.push(*y);
                b += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                a += 1;
            }
            (None, None) => return true,
        }
        if out.len() > limit {
            return false;
        }
    }
}

/// The minimal list of CIDRs covering exactly the addresses of `prefixes`.
pub fn aggregate(prefixes: &[IpNetwork]) -> Vec<IpNetwork> {
    aggregate_except(prefixes, |_| false)
}

/// Like [`aggregate`], for prefixes that share the longest-prefix match with other rules:
/// `reserved` is true for the prefixes other rules list. A reserved prefix is neither
/// merged nor created by a merge, and a covered prefix stays when it, its cover or a
/// prefix between the two is reserved. So every address still matches the same rule
/// after aggregation.
pub fn aggregate_except(
    prefixes: &[IpNetwork],
    reserved: impl Fn(&IpNetwork) -> bool,
) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    aggregate_except_into(prefixes.iter().copied(), reserved, &mut out);
    out
}

/// [`aggregate_except`] of any prefixes, appended to `out`.
pub(crate) fn aggregate_except_into(
    prefixes: impl IntoIterator<Item = IpNetwork>,
    reserved: impl Fn(&IpNetwork) -> bool,
    out: &mut impl Extend<IpNetwork>,
) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for net in prefixes {
        let (is_v4, block) = to_block(net);
        if is_v4 {
            v4.push(block);
        } else {
            v6.push(block);
        }
    }
    let keep_v4 = |b: Block| from_block(true, b).is_some_and(|n| reserved(&n));
    let keep_v6 = |b: Block| from_block(false, b).is_some_and(|n| reserved(&n));
    let v4 = aggregate_family(v4, 32, &keep_v4);
    let v6 = aggregate_family(v6, 128, &keep_v6);
    out.extend(
        v4.into_iter()
            .filter_map(|b| from_block(true, b))
            .chain(v6.into_iter().filter_map(|b| from_block(false, b))),
    );
}

/// A sorted, deduplicated prefix list the incremental aggregation reads: a slice of
/// `IpNetwork`s or a [`PrefixList`].
pub(crate) trait SortedList {
    /// How many prefixes.
    fn count(&self) -> usize;
    /// The prefix at `i` (below `count`).
    fn at(&self, i: usize) -> IpNetwork;
    /// Whether it lists exactly `net`.
    fn has(&self, net: &IpNetwork) -> bool;
    /// Appends the prefixes `from..to` to `out`.
    fn copy_range(&self, from: usize, to: usize, out: &mut PrefixList);
}

impl SortedList for [IpNetwork] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> IpNetwork {
        self[i]
    }
    fn has(&self, net: &IpNetwork) -> bool {
        self.binary_search(net).is_ok()
    }
    fn copy_range(&self, from: usize, to: usize, out: &mut PrefixList) {
        out.extend(self[from..to].iter().copied());
    }
}

impl SortedList for PrefixList {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> IpNetwork {
        // Below `count`, so always there; the fallback is never taken.
        self.get(i)
            .unwrap_or(IpNetwork::V4(Ipv4Network::from(Ipv4Addr::UNSPECIFIED)))
    }
    fn has(&self, net: &IpNetwork) -> bool {
        self.contains(net)
    }
    fn copy_range(&self, from: usize, to: usize, out: &mut PrefixList) {
        self.copy_into(from, to, out);
    }
}

/// The prefixes `from..to` of `list`.
fn range_iter<L: SortedList + ?Sized>(
    list: &L,
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = IpNetwork> + '_ {
    range.map(move |i| list.at(i))
}

/// The block of length `len` (at most `b.len`) that holds `b`.
fn ancestor(b: Block, len: u8, bits: u8) -> Block {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (bits - len) & family_mask(bits)
    };
    Block {
        start: b.start & mask,
        len,
    }
}

/// The positions in `sorted` (a sorted list) of the prefixes of `block`'s family that
/// lie in it.
fn range_of<L: SortedList + ?Sized>(
    sorted: &L,
    v4: bool,
    block: Block,
    bits: u8,
) -> std::ops::Range<usize> {
    let key = |n: IpNetwork| {
        let (is_v4, b) = to_block(n);
        (!is_v4, b.start)
    };
    // The first position from `lo` where `below` is false (it is true, then false).
    let partition = |mut lo: usize, below: &dyn Fn(IpNetwork) -> bool| {
        let mut hi = sorted.count();
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(sorted.at(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let lo = partition(0, &|n| key(n) < (!v4, block.start));
    let hi = partition(lo, &|n| key(n) <= (!v4, block.end(bits)));
    lo..hi
}

/// How deep a change's window starts (IPv4, IPv6): the block of this length around a
/// changed prefix, widened only as far as aggregation can reach from it.
const WINDOW_LEN: (u8, u8) = (24, 64);

/// [`aggregate_except`] of `new`, computed from the aggregation of an earlier list:
/// `old` (sorted, deduplicated) aggregated to `old_after`, `new` (sorted, deduplicated)
/// differing from it in `points`, which also holds every prefix whose `reserved`
/// answer changed since. Only the region around each point is aggregated again; the
/// rest of `old_after` is copied. Equal to `aggregate_except(new, reserved)`.
///
/// Why a region is enough: aggregation (covered prefixes dropped, sibling halves
/// merged) reaches across the edge of a block `W` only through a prefix that contains
/// `W` (which drops what `W` holds) or through `W` becoming whole (which merges with
/// its sibling). So a point's window starts as the /24 (IPv4) or /64 (IPv6) around it
/// (or the point itself when shorter), and widens to the largest input, new or old, or
/// old result that contains it, and to its parent while its new inputs aggregate to
/// the whole block. Inside the window the aggregation sees exactly the window's
/// inputs; outside, nothing it sees changed.
pub fn aggregate_except_update(
    old: &[IpNetwork],
    old_after: &[IpNetwork],
    new: &[IpNetwork],
    points: &[IpNetwork],
    reserved: impl Fn(&IpNetwork) -> bool,
) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    aggregate_except_update_into(old, old_after, new, points, reserved, &mut out);
    out
}

/// [`aggregate_except_update`] into `out` (cleared first; its capacity is reused). The
/// result is built as a [`PrefixList`], as the source cache keeps it, then copied.
pub fn aggregate_except_update_into(
    old: &[IpNetwork],
    old_after: &[IpNetwork],
    new: &[IpNetwork],
    points: &[IpNetwork],
    reserved: impl Fn(&IpNetwork) -> bool,
    out: &mut Vec<IpNetwork>,
) {
    let mut list = PrefixList::new();
    update_into(
        |net| old.binary_search(net).is_ok(),
        old_after,
        new,
        points,
        reserved,
        &mut list,
    );
    out.clear();
    out.extend(list.iter());
}

/// [`aggregate_except_update_into`] asking whether the old list has a prefix of
/// `old_has` (the source cache keeps it in another form): the old list is only ever
/// searched.
pub(crate) fn update_into<A: SortedList + ?Sized, N: SortedList + ?Sized>(
    old_has: impl Fn(&IpNetwork) -> bool,
    old_after: &A,
    new: &N,
    points: &[IpNetwork],
    reserved: impl Fn(&IpNetwork) -> bool,
    out: &mut PrefixList,
) {
    *out = PrefixList::new();
    let listed = |net: &IpNetwork| old_has(net) || new.has(net) || old_after.has(net);
    let mut windows: Vec<(bool, Block)> = Vec::with_capacity(points.len());
    for point in points {
        let (v4, b) = to_block(*point);
        let (bits, base) = if v4 {
            (32, WINDOW_LEN.0)
        } else {
            (128, WINDOW_LEN.1)
        };
        let mut w = ancestor(b, b.len.min(base), bits);
        loop {
            let cover = (0..w.len)
                .map(|len| ancestor(w, len, bits))
                .find(|a| from_block(v4, *a).is_some_and(|n| listed(&n)));
            if let Some(cover) = cover {
                w = cover;
                continue;
            }
            let Some(whole) = from_block(v4, w) else {
                aggregate_except_into(range_iter(new, 0..new.count()), reserved, out);
                return;
            };
            let mut inside = Vec::new();
            aggregate_except_into(
                range_iter(new, range_of(new, v4, w, bits)),
                &reserved,
                &mut inside,
            );
            if w.len > 0 && inside == [whole] {
                w = ancestor(w, w.len - 1, bits);
                continue;
            }
            break;
        }
        windows.push((v4, w));
    }
    // Nested windows go into the largest: sorted by family, start, then length.
    windows.sort_unstable_by_key(|(v4, w)| (!*v4, w.start, w.len));
    let split = range_of(old_after, false, Block { start: 0, len: 0 }, 128).start;
    out.reserve(
        split + points.len(),
        old_after.count() - split + points.len(),
    );
    let mut copied = 0;
    let mut last: Option<(bool, Block)> = None;
    for (v4, w) in windows {
        let bits = if v4 { 32 } else { 128 };
        if last.is_some_and(|(lv4, l)| lv4 == v4 && w.start <= l.end(bits)) {
            continue;
        }
        last = Some((v4, w));
        let gone = range_of(old_after, v4, w, bits);
        old_after.copy_range(copied, gone.start, out);
        aggregate_except_into(range_iter(new, range_of(new, v4, w, bits)), &reserved, out);
        copied = gone.end;
    }
    old_after.copy_range(copied, old_after.count(), out);
}

/// `whole` without the addresses of `holes`: the prefixes covering exactly the rest
/// (holes of the other family, or outside `whole`, change nothing).
pub fn subtract(whole: IpNetwork, holes: &[IpNetwork]) -> Vec<IpNetwork> {
    let mut pieces = vec![whole];
    for hole in holes {
        let mut next = Vec::with_capacity(pieces.len() + 32);
        for piece in pieces {
            if piece.is_ipv4() != hole.is_ipv4() || !overlaps(piece, *hole) {
                next.push(piece);
            } else if hole.prefix() <= piece.prefix() {
                // The hole swallows the piece.
            } else {
                // Split the piece down to the hole: keep the halves that miss it.
                let mut current = piece;
                while current.prefix() < hole.prefix() {
                    let (left, right) = halves(current);
                    let (inside, outside) = if left.contains(hole.network()) {
                        (left, right)
                    } else {
                        (right, left)
                    };
                    next.push(outside);
                    current = inside;
                }
            }
        }
        pieces = next;
    }
    aggregate(&pieces)
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The two halves of a prefix that is not a single address.
fn halves(net: IpNetwork) -> (IpNetwork, IpNetwork) {
    let (v4, block) = to_block(net);
    let bits = if v4 { 32 } else { 128 };
    let len = block.len + 1;
    let half = 1u128 << (bits - len);
    let left = Block {
        start: block.start,
        len,
    };
    let right = Block {
        start: block.start + half,
        len,
    };
    match (from_block(v4, left), from_block(v4, right)) {
        (Some(l), Some(r)) => (l, r),
        _ => (net, net),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    }

    fn strings(list: &[IpNetwork]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn merges_siblings_drops_covered_and_keeps_families_apart() {
        let input = nets(&[
            "10.0.0.0/25",
            "10.0.0.128/26",
            "10.0.0.192/26",
            "10.0.0.5/32",
            "10.0.2.0/24",
            "0.0.0.0/1",
            "2001:db8::/33",
            "2001:db8:8000::/33",
            "2001:db8::1/128",
        ]);
        assert_eq!(
            strings(&aggregate(&input)),
            ["0.0.0.0/1", "2001:db8::/32"],
            "everything under 0.0.0.0/1 is covered by it"
        );
        let input = nets(&[
            "10.0.0.0/25",
            "10.0.0.128/26",
            "10.0.0.192/26",
            "10.0.2.0/24",
        ]);
        assert_eq!(strings(&aggregate(&input)), ["10.0.0.0/24", "10.0.2.0/24"]);
    }

    #[test]
    fn subtracting_holes_leaves_exactly_the_rest() {
        let rest = subtract(
            "10.0.0.0/8".parse().expect("cidr"),
            &nets(&["10.128.0.0/9", "10.1.2.0/24", "192.168.0.0/16", "::/0"]),
        );
        let rest = strings(&rest);
        assert_eq!(rest.first().map(String::as_str), Some("10.0.0.0/16"));
        assert!(!rest.iter().any(|n| n.starts_with("10.1.2.")));
        // Addresses add up: 2^24 - 2^23 - 2^8.
        let size: u64 = subtract(
            "10.0.0.0/8".parse().expect("cidr"),
            &nets(&["10.128.0.0/9", "10.1.2.0/24"]),
        )
        .iter()
        .map(|n| 1u64 << (32 - n.prefix()))
        .sum();
        assert_eq!(size, (1 << 24) - (1 << 23) - (1 << 8));
        assert!(subtract("10.1.2.0/24".parse().expect("cidr"), &nets(&["10.0.0.0/8"])).is_empty());
    }

    #[test]
    fn unaligned_neighbours_do_not_merge() {
        // 10.0.1.0/24 and 10.0.2.0/24 are adjacent but not halves of one /23.
        let input = nets(&["10.0.1.0/24", "10.0.2.0/24"]);
        assert_eq!(strings(&aggregate(&input)), ["10.0.1.0/24", "10.0.2.0/24"]);
    }

    #[test]
    fn whole_address_spaces() {
        let input = nets(&["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]);
        assert_eq!(strings(&aggregate(&input)), ["0.0.0.0/0", "::/0"]);
        assert_eq!(
            strings(&aggregate(&nets(&["0.0.0.0/0", "1.2.3.4/32"]))),
            ["0.0.0.0/0"]
        );
    }

    #[test]
    fn reserved_prefixes_are_neither_created_dropped_nor_merged() {
        let input = nets(&["10.0.0.0/25", "10.0.0.128/25", "10.1.0.0/16", "10.1.2.0/24"]);
        let reserved = nets(&["10.0.0.0/24", "10.1.2.0/24"]);
        let out = aggregate_except(&input, |n| reserved.contains(n));
        assert_eq!(
            strings(&out),
            ["10.0.0.0/25", "10.0.0.128/25", "10.1.0.0/16", "10.1.2.0/24"]
        );
    }

    #[test]
    fn a_covered_prefix_stays_when_another_rule_sits_between_it_and_its_cover() {
        let input = nets(&["10.0.0.0/16", "10.0.1.0/28", "10.0.2.0/28"]);
        let reserved = nets(&["10.0.1.0/24"]);
        let out = aggregate_except(&input, |n| reserved.contains(n));
        assert_eq!(strings(&out), ["10.0.0.0/16", "10.0.1.0/28"]);
    }

    /// The canonical minimal cover of a set of addresses in 10.0.0.0/16, by brute force:
    /// at each address in the set, the largest aligned block inside the set.
    fn brute_force(members: &[bool]) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        let mut addr = 0usize;
        while addr < members.len() {
            if !members[addr] {
                addr += 1;
                continue;
            }
            let mut size = 1usize;
            while size * 2 <= members.len()
                && addr.is_multiple_of(size * 2)
                && members[addr..addr + size * 2].iter().all(|m| *m)
            {
                size *= 2;
            }
            let len = 32 - size.trailing_zeros() as u8;
            let start = Ipv4Addr::from(0x0a00_0000u32 + addr as u32);
            out.push(IpNetwork::V4(Ipv4Network::new(start, len).expect("valid")));
            addr += size;
        }
        out
    }

    /// A xorshift generator: random test inputs, the same every run.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn matches_a_brute_force_reference_on_random_sets() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let mut members = vec![false; 1 << 16];
            let mut input = Vec::new();
            for _ in 0..(1 + next() % 300) {
                let len = 16 + (next() % 17) as u8;
                let size = 1usize << (32 - len);
                let offset = (next() as usize % (1 << 16)) & !(size - 1);
                members[offset..offset + size].fill(true);
                let start = Ipv4Addr::from(0x0a00_0000u32 + offset as u32);
                input.push(IpNetwork::V4(Ipv4Network::new(start, len).expect("valid")));
            }
            let got = aggregate(&input);
            assert_eq!(got, brute_force(&members), "round {round}: {input:?}");
        }
    }

    /// The update of an aggregation against aggregating afresh, round after round of
    /// random changes, each round starting from the previous round's updated result:
    /// prefixes added and removed (covers of whole regions, hosts, sibling halves that
    /// merge far up) in both families, and reserved prefixes appearing and going.
    #[test]
    fn an_updated_aggregation_is_the_fresh_one() {
        use std::collections::BTreeSet;
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        // Prefixes in 10.0.0.0/22 (/20 to /32) and 2001:db8::/118 (/110 to /128), or a
        // short one now and then: dense enough that halves merge and covers swallow.
        let mut random = move || -> IpNetwork {
            let r = next();
            if r.is_multiple_of(2) {
                let len = if r.is_multiple_of(97) {
                    8 + (r >> 8) % 12
                } else {
                    20 + (r >> 8) % 13
                } as u8;
                let addr = 0x0a00_0000u32 | ((r >> 16) as u32 & 0x3ff);
                IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from(addr), len)
                        .and_then(|n| Ipv4Network::new(n.network(), len))
                        .expect("valid"),
                )
            } else {
                let len = if r.is_multiple_of(89) {
                    32 + (r >> 8) % 60
                } else {
                    110 + (r >> 8) % 19
                } as u8;
                let addr = 0x2001_0db8u128 << 96 | u128::from((r >> 16) & 0x3ff);
                IpNetwork::V6(
                    Ipv6Network::new(Ipv6Addr::from(addr), len)
                        .and_then(|n| Ipv6Network::new(n.network(), len))
                        .expect("valid"),
                )
            }
        };
        let (mut updated, mut merges) = (0, 0);
        for run in 0..40 {
            let mut list: BTreeSet<IpNetwork> = (0..200).map(|_| random()).collect();
            let mut reserved: BTreeSet<IpNetwork> = (0..10).map(|_| random()).collect();
            let old: Vec<IpNetwork> = list.iter().copied().collect();
            let mut old = (
                old.clone(),
                aggregate_except(&old, |n| reserved.contains(n)),
            );
            for round in 0..30 {
                let mut points = Vec::new();
                for _ in 0..(1 + next_count(round)) {
                    let net = random();
                    if !list.insert(net) {
                        list.remove(&net);
                    }
                    points.push(net);
                }
                if round % 3 == 0 {
                    let net = random();
                    if !reserved.insert(net) {
                        reserved.remove(&net);
                    }
                    points.push(net);
                }
                let new: Vec<IpNetwork> = list.iter().copied().collect();
                let is_reserved = |n: &IpNetwork| reserved.contains(n);
                let got = aggregate_except_update(&old.0, &old.1, &new, &points, is_reserved);
                let want = aggregate_except(&new, is_reserved);
                assert_eq!(
                    strings(&got),
                    strings(&want),
                    "run {run} round {round}: points {points:?}"
                );
                updated += 1;
                merges += new.len() - want.len();
                old = (new, got);
            }
        }
        assert_eq!(updated, 1200);
        assert!(merges > 10_000, "aggregation merged and dropped ({merges})");
    }

    /// How many prefixes a round changes: mostly one to three, now and then twenty.
    fn next_count(round: usize) -> usize {
        if round % 7 == 6 {
            20
        } else {
            round % 3
        }
    }
}
