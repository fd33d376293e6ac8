//! Writing a compiled bit-vector classifier ([`ironclad_policy::firewall::Classifier`])
//! into the kernel's maps, for both firewalls: the stateful firewall (a bucket per
//! direction and protocol) and the identity firewall (a bucket per identity key and
//! protocol). `bpf-src/lib/bitvec.h` reads what this writes.
//!
//! Every key carries a tag of four bytes, the first of which is the slot (or
//! generation) it belongs to, so the spare slot can be written while packets use the
//! live one, and cleared by tag.

use ipnetwork::IpNetwork;
use ironclad_core::abi::{FwAddrKey, FwPortKey, FwSummary, FwWordKey, FW_SUMMARY_WORDS};
use ironclad_policy::firewall::{Bitmap, Dimension};

use crate::loader::AuditedMap;
use crate::Result;

/// The map images of classifier buckets, ready to write.
#[derive(Debug, Default)]
pub(crate) struct ClassImages {
    /// Address prefixes to classes (LPM trie keyed by `struct ic_fw_addr_key`).
    pub(crate) addr: Vec<([u8; FwAddrKey::SIZE], [u8; 4])>,
    /// Port (or ICMP type) blocks to classes (`struct ic_fw_port_key`).
    pub(crate) ports: Vec<([u8; FwPortKey::SIZE], [u8; 4])>,
    /// Non-zero bitmap words (`struct ic_fw_word_key`).
    pub(crate) words: Vec<([u8; FwWordKey::SIZE], [u8; 8])>,
    /// Summaries, keyed by slot << 32 | class.
    pub(crate) summaries: Vec<([u8; 8], [u8; FwSummary::SIZE])>,
}

impl ClassImages {
    /// Every prefix of an address dimension under `tag` the lookup needs, its class
    /// numbered from `base`. `v6_only`: leave out IPv4 keys (a classifier whose rules
    /// name IPv4-mapped IPv6 prefixes only: its `0.0.0.0/0` key would hide `::/0` rules
    /// from IPv4-mapped addresses).
    ///
    /// A prefix whose class (in `classes`) is empty is left out when the prefix the
    /// trie would fall back to without it has an empty class too (or there is none):
    /// a miss reads as "no rule", so the kernel stops at the trie instead of looking up
    /// an empty class's summary. Most destinations match no rule of most keys, and
    /// then the lookup ends one map earlier.
    pub(crate) fn push_addresses(
        &mut self,
        tag: [u8; 4],
        base: u32,
        dimension: &Dimension,
        v6_only: bool,
        classes: &[Bitmap],
    ) {
        // The trie's own keys: one 128-bit space, IPv4 as IPv4-mapped.
        let mut keys: Vec<(u128, u32, u32)> = dimension
            .prefixes
            .iter()
            .filter_map(|(net, class)| match net {
                IpNetwork::V4(_) if v6_only => None,
                IpNetwork::V4(n) => Some((
                    u128::from(n.network().to_ipv6_mapped()),
                    96 + u32::from(n.prefix()),
                    *class,
                )),
                IpNetwork::V6(n) => Some((u128::from(n.network()), u32::from(n.prefix()), *class)),
            })
            .collect();
        // A prefix sorts after every prefix containing it (stable: a key written twice
        // keeps its order, the later write wins as before).
        keys.sort_by_key(|(addr, len, _)| (*addr, *len));
        // The chain of prefixes containing the current one: (address, length, whether
        // a lookup ending there finds an empty class or none).
        let mut chain: Vec<(u128, u32, bool)> = Vec::new();
        for (addr, len, class) in keys {
            while chain
                .last()
                .is_some_and(|(a, l, _)| *l > len || (addr ^ a) & prefix_mask(*l) != 0)
            {
                chain.pop();
            }
            let fallback_empty = chain.last().is_none_or(|(_, _, empty)| *empty);
            let empty = class_is_empty(classes, class);
            let keep = !(empty && fallback_empty);
            chain.push((addr, len, empty));
            if !keep {
                continue;
            }
            let key = FwAddrKey {
                prefixlen: 32 + len,
                tag,
                addr: addr.to_be_bytes(),
            };
            self.addr
                .push((key.to_bytes(), base.saturating_add(class).to_ne_bytes()));
        }
    }

    /// Each piece of a port (or ICMP type) dimension under `tag` whose class (in
    /// `classes`) is not empty, as the aligned prefixes covering it, its class
    /// numbered from `base`. The pieces do not nest: a value of a piece left out
    /// misses, which reads as "no rule".
    pub(crate) fn push_pieces(
        &mut self,
        tag: [u8; 4],
        base: u32,
        pieces: &[(u16, u32)],
        classes: &[Bitmap],
    ) {
        for (i, (start, class)) in pieces.iter().enumerate() {
            if class_is_empty(classes, *class) {
                continue;
            }
            let end = pieces
                .get(i + 1)
                .map_or(65_536u32, |(next, _)| u32::from(*next));
            for (value, bits) in aligned_blocks(u32::from(*start), end) {
                let key = FwPortKey {
                    prefixlen: 32 + bits,
                    tag,
                    port: u16::try_from(value).unwrap_or(0).to_be_bytes(),
                    _pad0: [0; 2],
                };
                self.ports
                    .push((key.to_bytes(), base.saturating_add(*class).to_ne_bytes()));
            }
        }
    }

    /// The words and summaries of `classes`, numbered from `first` in `slot`.
    pub(crate) fn push_classes(&mut self, slot: u8, first: u32, classes: &[Bitmap]) {
        for (i, bitmap) in classes.iter().enumerate() {
            let class = first.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            for (w, word) in bitmap.words.iter().enumerate().filter(|(_, w)| **w != 0) {
                let key = FwWordKey {
                    class_id: class,
                    word: u16::try_from(w).unwrap_or(u16::MAX),
                    slot,
                    _pad0: 0,
                };
                self.words.push((key.to_bytes(), word.to_ne_bytes()));
            }
            let key = (u64::from(slot) << 32) | u64::from(class);
            self.summaries
                .push((key.to_ne_bytes(), summary_of(bitmap).to_bytes()));
        }
    }

    /// How many map entries these are.
    pub(crate) fn len(&self) -> usize {
        self.addr.len() + self.ports.len() + self.words.len() + self.summaries.len()
    }

    /// Writes them (one audit record per map).
    pub(crate) fn write(
        &self,
        addr: &AuditedMap<'_>,
        ports: &AuditedMap<'_>,
        words: &AuditedMap<'_>,
        summaries: &AuditedMap<'_>,
    ) -> Result<()> {
        write_all(addr, &self.addr)?;
        write_all(ports, &self.ports)?;
        write_all(words, &self.words)?;
        write_all(summaries, &self.summaries)
    }
}

/// Removes every entry of `slot` from the four class maps.
pub(crate) fn clear_slot(
    slot: u8,
    addr: &AuditedMap<'_>,
    ports: &AuditedMap<'_>,
    words: &AuditedMap<'_>,
    summaries: &AuditedMap<'_>,
) -> Result<()> {
    let delete = |map: &AuditedMap<'_>, of_slot: &dyn Fn(&[u8]) -> bool| -> Result<()> {
        let keys: Vec<Vec<u8>> = map.keys().into_iter().filter(|k| of_slot(k)).collect();
        map.delete_many(keys.iter().map(Vec::as_slice)).map(|_| ())
    };
    delete(addr, &|k| {
        FwAddrKey::from_bytes(k).is_some_and(|k| k.tag[0] == slot)
    })?;
    delete(ports, &|k| {
        FwPortKey::from_bytes(k).is_some_and(|k| k.tag[0] == slot)
    })?;
    delete(words, &|k| {
        FwWordKey::from_bytes(k).is_some_and(|k| k.slot == slot)
    })?;
    delete(summaries, &|k| {
        k.get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .is_some_and(|k| k >> 32 == u64::from(slot))
    })
}

/// The summary of `bitmap` as the kernel reads it.
pub(crate) fn summary_of(bitmap: &Bitmap) -> FwSummary {
    let mut summary = FwSummary::default();
    for (i, s) in bitmap.summary.iter().take(FW_SUMMARY_WORDS).enumerate() {
        summary.words[i] = *s;
    }
    summary
}

/// Writes `entries` into `map` (one audit record for the batch).
pub(crate) fn write_all<const KS: usize, const VS: usize>(
    map: &AuditedMap<'_>,
    entries: &[([u8; KS], [u8; VS])],
) -> Result<()> {
    map.update_many(entries.iter().map(|(k, v)| (&k[..], &v[..])))
        .map(|_| ())
}

/// Whether class `class` of `classes` has no rule (a class not in `classes` counts
/// as not empty: it is written as it comes).
fn class_is_empty(classes: &[Bitmap], class: u32) -> bool {
    usize::try_from(class)
        .ok()
        .and_then(|c| classes.get(c))
        .is_some_and(|b| b.words.iter().all(|w| *w == 0))
}

/// The mask of the first `len` bits of a 128-bit address.
pub(crate) fn prefix_mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    }
}

/// `[start, end)` of the 16-bit space as aligned blocks: (first value, prefix bits).
fn aligned_blocks(mut start: u32, end: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while start < end {
        let mut size = if start == 0 {
            65_536
        } else {
            1u32 << start.trailing_zeros()
        };
        while start + size > end {
            size /= 2;
        }
        out.push((start, 16 - size.trailing_zeros()));
        start += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class a longest-prefix match over `keys` finds for `addr`, if any.
    fn trie_lookup(keys: &[([u8; FwAddrKey::SIZE], [u8; 4])], addr: u128) -> Option<u32> {
        keys.iter()
            .filter_map(|(k, v)| {
                let k = FwAddrKey::from_bytes(k)?;
                let len = k.prefixlen - 32;
                let net = u128::from_be_bytes(k.addr);
                ((addr ^ net) & prefix_mask(len) == 0).then(|| (len, u32::from_ne_bytes(*v)))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, class)| class)
    }

    #[test]
    fn empty_classes_are_left_out_only_where_the_fallback_is_empty_too() {
        let bitmap = |bits: u64| Bitmap {
            words: vec![bits],
            summary: vec![u64::from(bits != 0)],
        };
        // Class 0 empty, 1 and 2 not. `0.0.0.0/0` is empty under a non-empty `::/0`
        // (the stateful firewall's IPv4 key hiding IPv6 rules): it must stay, or IPv4
        // addresses would fall back to `::/0`.
        let classes = vec![bitmap(0), bitmap(1), bitmap(2)];
        let prefixes = [
            ("::/0", 1),
            ("0.0.0.0/0", 0),
            ("10.0.0.0/8", 0),
            ("10.1.0.0/16", 2),
            ("10.1.2.0/24", 0),
            ("fd00::/8", 0),
            ("fd00:1::/32", 0),
            ("2001:db8::/32", 2),
        ];
        let dimension = Dimension {
            prefixes: prefixes
                .iter()
                .map(|(n, c)| (n.parse().expect("net"), *c))
                .collect(),
            pieces: Vec::new(),
        };
        let mut all = ClassImages::default();
        for (net, class) in &dimension.prefixes {
            let (addr, len) = match net {
                IpNetwork::V4(n) => (
                    n.network().to_ipv6_mapped().octets(),
                    96 + u32::from(n.prefix()),
                ),
                IpNetwork::V6(n) => (n.network().octets(), u32::from(n.prefix())),
            };
            let key = FwAddrKey {
                prefixlen: 32 + len,
                tag: [0; 4],
                addr,
            };
            all.addr.push((key.to_bytes(), class.to_ne_bytes()));
        }
        let mut kept = ClassImages::default();
        kept.push_addresses([0; 4], 0, &dimension, false, &classes);
        assert!(
            kept.addr.len() < all.addr.len(),
            "some prefixes are left out"
        );
        let nonempty = |c: Option<u32>| c.filter(|c| !class_is_empty(&classes, *c));
        for probe in [
            "10.1.2.3",
            "10.1.3.4",
            "10.2.0.1",
            "1.2.3.4",
            "fd00::1",
            "fd00:1::1",
            "2001:db8::1",
            "2002::1",
            "::1",
        ] {
            let ip: std::net::IpAddr = probe.parse().expect("ip");
            let addr = match ip {
                std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
                std::net::IpAddr::V6(v6) => u128::from(v6),
            };
            assert_eq!(
                nonempty(trie_lookup(&kept.addr, addr)),
                nonempty(trie_lookup(&all.addr, addr)),
                "{probe}: the same rules as with every prefix written"
            );
        }
        // Left out: the empty prefixes under an empty one (`10.0.0.0/8` under
        // `0.0.0.0/0`, `fd00:1::/32` under `fd00::/8`). Kept: the empty ones that hide
        // a non-empty shorter one (`0.0.0.0/0` and `fd00::/8` under `::/0`,
        // `10.1.2.0/24` under `10.1.0.0/16`).
        let written: Vec<(u128, u32)> = kept
            .addr
            .iter()
            .filter_map(|(k, _)| FwAddrKey::from_bytes(k))
            .map(|k| (u128::from_be_bytes(k.addr), k.prefixlen - 32))
            .collect();
        let v4 = |s: &str, len: u32| {
            let ip: std::net::Ipv4Addr = s.parse().expect("ip");
            (u128::from(ip.to_ipv6_mapped()), 96 + len)
        };
        let v6 = |s: &str, len: u32| {
            let ip: std::net::Ipv6Addr = s.parse().expect("ip");
            (u128::from(ip), len)
        };
        assert_eq!(written.len(), prefixes.len() - 2, "{written:x?}");
        assert!(!written.contains(&v4("10.0.0.0", 8)));
        assert!(!written.contains(&v6("fd00:1::", 32)));
        for kept in [v4("0.0.0.0", 0), v6("fd00::", 8), v4("10.1.2.0", 24)] {
            assert!(written.contains(&kept), "{kept:x?} in {written:x?}");
        }
    }

    #[test]
    fn port_pieces_become_aligned_prefixes_that_cover_them_exactly() {
        assert_eq!(aligned_blocks(0, 65_536), vec![(0, 0)]);
        assert_eq!(aligned_blocks(22, 23), vec![(22, 16)]);
        assert_eq!(
            aligned_blocks(1000, 2001),
            vec![
                (1000, 13),
                (1008, 12),
                (1024, 7),
                (1536, 8),
                (1792, 9),
                (1920, 10),
                (1984, 12),
                (2000, 16)
            ]
        );
        for (lo, hi) in [
            (0u32, 1u32),
            (1, 65_536),
            (443, 444),
            (1024, 65_535),
            (7, 9000),
        ] {
            let blocks = aligned_blocks(lo, hi);
            let mut next = lo;
            for (start, bits) in blocks {
                assert_eq!(start, next, "contiguous");
                let size = 1u32 << (16 - bits);
                assert_eq!(start % size, 0, "aligned");
                next = start + size;
            }
            assert_eq!(next, hi);
        }
    }
}
