//! A prefix list in the memory it needs: [`PrefixList`].
//!
//! An [`IpNetwork`] takes 18 bytes; an IPv4 prefix needs 5 (its address and length),
//! and threat feeds are mostly IPv4. A policy's sets hold their prefixes for the whole
//! life of the daemon, and so does the source cache (to read a feed's next version by
//! its changed lines and to aggregate it again around them), so both keep them here:
//! 5 bytes an IPv4 prefix, 17 an IPv6 one (a 1M-line feed's list in 5 MB instead of
//! 18).
//!
//! ```
//! use ironclad_policy::compact::PrefixList;
//! use ipnetwork::IpNetwork;
//!
//! let nets: Vec<IpNetwork> = ["2001:db8::/32", "192.0.2.0/24", "10.0.0.0/8"]
//!     .iter()
//!     .map(|s| s.parse())
//!     .collect::<Result<_, _>>()?;
//! let mut list = PrefixList::from(nets);
//! assert_eq!((list.ipv4_len(), list.ipv6_len()), (2, 1));
//! list.sort_dedup();
//! assert!(list.contains(&"10.0.0.0/8".parse()?));
//! assert_eq!(list.get(0), Some("10.0.0.0/8".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// A list of prefixes of both families, compact: the IPv4 prefixes (5 bytes each)
/// apart from the IPv6 ones (17 bytes each). It keeps each family's order; every IPv4
/// prefix comes before every IPv6 one, as in `IpNetwork`'s order, so a sorted list of
/// `IpNetwork`s keeps its order here.
///
/// The searches ([`PrefixList::contains`], [`PrefixList::binary_search`],
/// [`PrefixList::position`]) need the list sorted and deduplicated
/// ([`PrefixList::is_sorted`]); a compiled policy's sets are.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PrefixList {
    v4: Vec<Ipv4Network>,
    v6: Vec<Ipv6Network>,
}

impl std::fmt::Debug for PrefixList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PrefixList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The list of `sorted` (sorted and deduplicated).
    pub(crate) fn of(sorted: &[IpNetwork]) -> Self {
        Self::from(sorted)
    }

    /// How many prefixes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// How many IPv4 prefixes (the first ones).
    pub fn ipv4_len(&self) -> usize {
        self.v4.len()
    }

    /// How many IPv6 prefixes (the last ones).
    pub fn ipv6_len(&self) -> usize {
        self.v6.len()
    }

    /// The IPv4 prefixes.
    pub fn ipv4(&self) -> &[Ipv4Network] {
        &self.v4
    }

    /// The IPv6 prefixes.
    pub fn ipv6(&self) -> &[Ipv6Network] {
        &self.v6
    }

    /// The prefix at position `i`.
    pub fn get(&self, i: usize) -> Option<IpNetwork> {
        match self.v4.get(i) {
            Some(n) => Some(IpNetwork::V4(*n)),
            None => self.v6.get(i - self.v4.len()).map(|n| IpNetwork::V6(*n)),
        }
    }

    /// The first prefix.
    pub fn first(&self) -> Option<IpNetwork> {
        self.get(0)
    }

    /// Every prefix, in order (IPv4 first).
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            v4: self.v4.iter(),
            v6: self.v6.iter(),
        }
    }

    /// The list as `IpNetwork`s.
    pub fn to_vec(&self) -> Vec<IpNetwork> {
        let mut out = Vec::with_capacity(self.len());
        self.extend_into(0, self.len(), &mut out);
        out
    }

    /// Appends `net` after the others of its family.
    pub fn push(&mut self, net: IpNetwork) {
        match net {
            IpNetwork::V4(n) => self.v4.push(n),
            IpNetwork::V6(n) => self.v6.push(n),
        }
    }

    /// Room for `v4` more IPv4 and `v6` more IPv6 prefixes.
    pub fn reserve(&mut self, v4: usize, v6: usize) {
        self.v4.reserve(v4);
        self.v6.reserve(v6);
    }

    /// Frees what it reserved beyond its prefixes.
    pub fn shrink_to_fit(&mut self) {
        self.v4.shrink_to_fit();
        self.v6.shrink_to_fit();
    }

    /// Whether it is sorted and deduplicated (each prefix above the one before).
    pub fn is_sorted(&self) -> bool {
        self.v4.windows(2).all(|w| w[0] < w[1]) && self.v6.windows(2).all(|w| w[0] < w[1])
    }

    /// Sorts it and drops repeated prefixes.
    pub fn sort_dedup(&mut self) {
        self.v4.sort_unstable();
        self.v4.dedup();
        self.v6.sort_unstable();
        self.v6.dedup();
    }

    /// Keeps only the prefixes `keep` is true for.
    pub fn retain(&mut self, mut keep: impl FnMut(IpNetwork) -> bool) {
        self.v4.retain(|n| keep(IpNetwork::V4(*n)));
        self.v6.retain(|n| keep(IpNetwork::V6(*n)));
    }

    /// How many of its prefixes sort before `net` (sorted list).
    pub fn position(&self, net: &IpNetwork) -> usize {
        match net {
            IpNetwork::V4(n) => self.v4.partition_point(|p| p < n),
            IpNetwork::V6(n) => self.v4.len() + self.v6.partition_point(|p| p < n),
        }
    }

    /// Where `net` is (`Ok`), or where it would go (`Err`), as
    /// [`slice::binary_search`] answers (sorted list).
    pub fn binary_search(&self, net: &IpNetwork) -> Result<usize, usize> {
        match net {
            IpNetwork::V4(n) => self.v4.binary_search(n),
            IpNetwork::V6(n) => self
                .v6
                .binary_search(n)
                .map(|i| i + self.v4.len())
                .map_err(|i| i + self.v4.len()),
        }
    }

    /// Whether it lists exactly `net` (sorted list).
    pub fn contains(&self, net: &IpNetwork) -> bool {
        match net {
            IpNetwork::V4(n) => self.v4.binary_search(n).is_ok(),
            IpNetwork::V6(n) => self.v6.binary_search(n).is_ok(),
        }
    }

    /// Appends its prefixes from position `from` to `to` (excluded) to `out`.
    pub(crate) fn extend_into(&self, from: usize, to: usize, out: &mut impl Extend<IpNetwork>) {
        let split = self.v4.len();
        if from < split.min(to) {
            out.extend(
                self.v4[from..split.min(to)]
                    .iter()
                    .map(|n| IpNetwork::V4(*n)),
            );
        }
        let (from, to) = (from.max(split) - split, to.max(split) - split);
        if from < to.min(self.v6.len()) {
            out.extend(
                self.v6[from..to.min(self.v6.len())]
                    .iter()
                    .map(|n| IpNetwork::V6(*n)),
            );
        }
    }

    /// Appends its prefixes from position `from` to `to` (excluded) to `out`, a
    /// whole run of a family at a time.
    pub(crate) fn copy_into(&self, from: usize, to: usize, out: &mut PrefixList) {
        let split = self.v4.len();
        if from < split.min(to) {
            out.v4.extend_from_slice(&self.v4[from..split.min(to)]);
        }
        let (from, to) = (from.max(split) - split, to.max(split) - split);
        if from < to.min(self.v6.len()) {
            out.v6
                .extend_from_slice(&self.v6[from..to.min(self.v6.len())]);
        }
    }

    /// Whether `net` is one of its prefixes or covers one (sorted list).
    pub(crate) fn reaches_into(&self, net: &IpNetwork) -> bool {
        match net {
            IpNetwork::V4(net) => {
                let start = self.v4.partition_point(|p| p.network() < net.network());
                self.v4[start..]
                    .iter()
                    .take_while(|p| net.contains(p.network()))
                    .any(|p| p.prefix() >= net.prefix())
            }
            IpNetwork::V6(net) => {
                let start = self.v6.partition_point(|p| p.network() < net.network());
                self.v6[start..]
                    .iter()
                    .take_while(|p| net.contains(p.network()))
                    .any(|p| p.prefix() >= net.prefix())
            }
        }
    }

    /// The prefixes it or `other` has and the other lacks, sorted (both sorted); `None`
    /// when there are more than `limit`.
    pub fn symmetric_difference(&self, other: &PrefixList, limit: usize) -> Option<Vec<IpNetwork>> {
        use crate::aggregate::symmetric_difference_into;
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        if !symmetric_difference_into(&self.v4, &other.v4, limit, &mut v4)
            || !symmetric_difference_into(&self.v6, &other.v6, limit - v4.len(), &mut v6)
        {
            return None;
        }
        let mut out = Vec::with_capacity(v4.len() + v6.len());
        out.extend(v4.into_iter().map(IpNetwork::V4));
        out.extend(v6.into_iter().map(IpNetwork::V6));
        Some(out)
    }
}

impl From<Vec<IpNetwork>> for PrefixList {
    fn from(nets: Vec<IpNetwork>) -> Self {
        Self::from(nets.as_slice())
    }
}

impl From<&[IpNetwork]> for PrefixList {
    /// Exactly as large as it needs (a list held for the daemon's life wastes
    /// nothing to growth).
    fn from(nets: &[IpNetwork]) -> Self {
        let v4 = nets.iter().filter(|n| n.is_ipv4()).count();
        let mut list = Self::new();
        list.reserve(v4, nets.len() - v4);
        list.extend(nets.iter().copied());
        list
    }
}

impl FromIterator<IpNetwork> for PrefixList {
    fn from_iter<I: IntoIterator<Item = IpNetwork>>(iter: I) -> Self {
        let mut list = Self::new();
        list.extend(iter);
        list
    }
}

impl Extend<IpNetwork> for PrefixList {
    fn extend<I: IntoIterator<Item = IpNetwork>>(&mut self, iter: I) {
        for net in iter {
            self.push(net);
        }
    }
}

impl<'a> IntoIterator for &'a PrefixList {
    type Item = IpNetwork;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl PartialEq<[IpNetwork]> for PrefixList {
    fn eq(&self, other: &[IpNetwork]) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter().copied())
    }
}

impl PartialEq<Vec<IpNetwork>> for PrefixList {
    fn eq(&self, other: &Vec<IpNetwork>) -> bool {
        *self == *other.as_slice()
    }
}

/// The prefixes of a [`PrefixList`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    v4: std::slice::Iter<'a, Ipv4Network>,
    v6: std::slice::Iter<'a, Ipv6Network>,
}

impl Iterator for Iter<'_> {
    type Item = IpNetwork;
    fn next(&mut self) -> Option<IpNetwork> {
        match self.v4.next() {
            Some(n) => Some(IpNetwork::V4(*n)),
            None => self.v6.next().map(|n| IpNetwork::V6(*n)),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.v4.len() + self.v6.len();
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<IpNetwork> {
        match self.v6.next_back() {
            Some(n) => Some(IpNetwork::V6(*n)),
            None => self.v4.next_back().map(|n| IpNetwork::V4(*n)),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl std::iter::FusedIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::symmetric_difference;

    fn list(items: &[&str]) -> Vec<IpNetwork> {
        let mut v: Vec<IpNetwork> = items
            .iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every question the cache asks of a compact list gets the answer the `IpNetwork`
    /// list gives, for both families and across the family boundary.
    #[test]
    fn a_compact_list_answers_as_the_list_it_was_made_of() {
        let full = list(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3/32",
            "192.0.2.0/24",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "fe80::1/128",
        ]);
        let compact = PrefixList::of(&full);
        assert_eq!(compact.len(), full.len());
        assert_eq!(compact.to_vec(), full);
        for from in 0..=full.len() {
            for to in from..=full.len() {
                let mut part = Vec::new();
                compact.extend_into(from, to, &mut part);
                assert_eq!(part, full[from..to], "{from}..{to}");
            }
        }
        let other = list(&[
            "10.1.0.0/16",
            "10.1.2.4/32",
            "192.0.2.0/24",
            "2001:db8::/32",
            "::/0",
        ]);
        assert_eq!(
            compact.symmetric_difference(&PrefixList::of(&other), usize::MAX),
            symmetric_difference(&full, &other, usize::MAX)
        );
        for probe in list(&[
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.1.2.0/24",
            "10.1.2.3/32",
            "10.2.0.0/16",
            "11.0.0.0/8",
            "::/0",
            "2001:db8::/32",
            "2001:db8:2::/48",
            "fe80::/10",
            "fe80::2/128",
        ]) {
            assert_eq!(
                compact.contains(&probe),
                full.binary_search(&probe).is_ok(),
                "{probe}"
            );
            assert_eq!(
                compact.position(&probe),
                full.partition_point(|n| *n < probe),
                "{probe}"
            );
            let covers = full.iter().any(|p| {
                p.is_ipv4() == probe.is_ipv4()
                    && probe.contains(p.network())
                    && p.prefix() >= probe.prefix()
            });
            assert_eq!(compact.reaches_into(&probe), covers, "{probe}");
        }
    }

    /// Built from prefixes in any order, a list keeps each family's order with IPv4
    /// first; sorted, it answers every question a sorted `IpNetwork` list answers, by
    /// position too, and iterates the same both ways.
    #[test]
    fn a_prefix_list_is_the_ipnetwork_list_in_family_order() {
        let given: Vec<IpNetwork> = [
            "2001:db8::/32",
            "192.0.2.0/24",
            "fe80::/10",
            "10.0.0.0/8",
            "192.0.2.0/24",
            "::/0",
        ]
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect();
        let mut prefixes = PrefixList::from(given.clone());
        let family_order: Vec<IpNetwork> = given
            .iter()
            .filter(|n| n.is_ipv4())
            .chain(given.iter().filter(|n| n.is_ipv6()))
            .copied()
            .collect();
        assert_eq!(prefixes, family_order);
        assert_eq!(
            (prefixes.ipv4_len(), prefixes.ipv6_len(), prefixes.len()),
            (3, 3, 6)
        );
        assert!(!prefixes.is_sorted(), "a repeat and IPv6 out of order");
        prefixes.sort_dedup();
        let mut sorted = given.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert!(prefixes.is_sorted());
        assert_eq!(prefixes, sorted);
        assert_eq!(prefixes.to_vec(), sorted);
        assert_eq!(prefixes.iter().len(), sorted.len());
        assert!(prefixes.iter().rev().eq(sorted.iter().rev().copied()));
        for i in 0..=sorted.len() {
            assert_eq!(prefixes.get(i), sorted.get(i).copied(), "position {i}");
        }
        for probe in list(&[
            "10.0.0.0/8",
            "10.0.0.0/9",
            "192.0.2.0/24",
            "::/0",
            "::/1",
            "ff00::/8",
        ]) {
            assert_eq!(
                prefixes.binary_search(&probe),
                sorted.binary_search(&probe),
                "{probe}"
            );
            assert_eq!(
                prefixes.contains(&probe),
                sorted.contains(&probe),
                "{probe}"
            );
        }
        prefixes.retain(|n| n.prefix() > 8);
        sorted.retain(|n| n.prefix() > 8);
        assert_eq!(prefixes, sorted);
        assert_eq!(PrefixList::from_iter(sorted.iter().copied()), sorted);
        assert_eq!(format!("{prefixes:?}"), format!("{sorted:?}"));
    }
}
