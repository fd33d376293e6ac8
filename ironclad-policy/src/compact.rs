//! A sorted prefix list as the source cache keeps it between reloads.
//!
//! An [`IpNetwork`] takes 18 bytes; an IPv4 prefix needs 5 (its address and length),
//! and threat feeds are mostly IPv4. The cache holds each feed's sorted list for the
//! whole life of the daemon (to read the next version by its changed lines and to
//! aggregate it again around them), so it keeps it here: 5 bytes an IPv4 prefix, 17 an
//! IPv6 one (a 1M-line feed's list in 5 MB instead of 18). A reload that needs the list
//! as `IpNetwork`s expands it for that reload only.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// A sorted, deduplicated prefix list, the IPv4 prefixes apart from the IPv6 ones (in
/// `IpNetwork`'s order every IPv4 prefix comes first).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CompactList {
    v4: Vec<Ipv4Network>,
    v6: Vec<Ipv6Network>,
}

impl CompactList {
    /// The list of `sorted` (sorted and deduplicated).
    pub(crate) fn of(sorted: &[IpNetwork]) -> Self {
        let split = sorted.partition_point(IpNetwork::is_ipv4);
        let v4 = sorted[..split]
            .iter()
            .filter_map(|n| match n {
                IpNetwork::V4(n) => Some(*n),
                IpNetwork::V6(_) => None,
            })
            .collect();
        let v6 = sorted[split..]
            .iter()
            .filter_map(|n| match n {
                IpNetwork::V6(n) => Some(*n),
                IpNetwork::V4(_) => None,
            })
            .collect();
        Self { v4, v6 }
    }

    /// How many prefixes.
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Every prefix, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.v4
            .iter()
            .map(|n| IpNetwork::V4(*n))
            .chain(self.v6.iter().map(|n| IpNetwork::V6(*n)))
    }

    /// The list as `IpNetwork`s.
    pub(crate) fn to_vec(&self) -> Vec<IpNetwork> {
        let mut out = Vec::with_capacity(self.len());
        self.extend_into(0, self.len(), &mut out);
        out
    }

    /// How many of its prefixes sort before `net`.
    pub(crate) fn position(&self, net: &IpNetwork) -> usize {
        match net {
            IpNetwork::V4(n) => self.v4.partition_point(|p| p < n),
            IpNetwork::V6(n) => self.v4.len() + self.v6.partition_point(|p| p < n),
        }
    }

    /// Appends its prefixes from position `from` to `to` (excluded) to `out`.
    pub(crate) fn extend_into(&self, from: usize, to: usize, out: &mut Vec<IpNetwork>) {
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

    /// Whether it lists exactly `net`.
    pub(crate) fn contains(&self, net: &IpNetwork) -> bool {
        match net {
            IpNetwork::V4(n) => self.v4.binary_search(n).is_ok(),
            IpNetwork::V6(n) => self.v6.binary_search(n).is_ok(),
        }
    }

    /// Whether `net` is one of its prefixes or covers one.
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

    /// The prefixes it or `list` (sorted) has and the other lacks, sorted.
    pub(crate) fn symmetric_difference(&self, list: &[IpNetwork]) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        let mut mine = self.iter().peekable();
        let mut theirs = list.iter().copied().peekable();
        loop {
            match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    mine.next();
                    theirs.next();
                }
                (Some(a), Some(b)) if a < b => {
                    out.push(*a);
                    mine.next();
                }
                (Some(_), Some(b)) | (None, Some(b)) => {
                    out.push(*b);
                    theirs.next();
                }
                (Some(a), None) => {
                    out.push(*a);
                    mine.next();
                }
            }
        }
        out
    }
}

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
        let compact = CompactList::of(&full);
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
            compact.symmetric_difference(&other),
            symmetric_difference(&full, &other, usize::MAX).unwrap_or_default()
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
}
