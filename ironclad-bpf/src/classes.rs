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
    /// Every prefix of an address dimension under `tag`, its class numbered from
    /// `base`. `v6_only`: leave out IPv4 keys (a classifier whose rules name
    /// IPv4-mapped IPv6 prefixes only: its `0.0.0.0/0` key would hide `::/0` rules from
    /// IPv4-mapped addresses).
    pub(crate) fn push_addresses(
        &mut self,
        tag: [u8; 4],
        base: u32,
        dimension: &Dimension,
        v6_only: bool,
    ) {
        for (net, class) in &dimension.prefixes {
            let (addr, len) = match net {
                IpNetwork::V4(_) if v6_only => continue,
                IpNetwork::V4(n) => (
                    n.network().to_ipv6_mapped().octets(),
                    96 + u32::from(n.prefix()),
                ),
                IpNetwork::V6(n) => (n.network().octets(), u32::from(n.prefix())),
            };
            let key = FwAddrKey {
                prefixlen: 32 + len,
                tag,
                addr,
            };
            self.addr
                .push((key.to_bytes(), base.saturating_add(*class).to_ne_bytes()));
        }
    }

    /// Each piece of a port (or ICMP type) dimension under `tag`, as the aligned
    /// prefixes covering it, its class numbered from `base`.
    pub(crate) fn push_pieces(&mut self, tag: [u8; 4], base: u32, pieces: &[(u16, u32)]) {
        for (i, (start, class)) in pieces.iter().enumerate() {
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
            let mut summary = FwSummary::default();
            for (i, s) in bitmap.summary.iter().take(FW_SUMMARY_WORDS).enumerate() {
                summary.words[i] = *s;
            }
            let key = (u64::from(slot) << 32) | u64::from(class);
            self.summaries.push((key.to_ne_bytes(), summary.to_bytes()));
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

/// Writes `entries` into `map` (one audit record for the batch).
pub(crate) fn write_all<const KS: usize, const VS: usize>(
    map: &AuditedMap<'_>,
    entries: &[([u8; KS], [u8; VS])],
) -> Result<()> {
    map.update_many(entries.iter().map(|(k, v)| (&k[..], &v[..])))
        .map(|_| ())
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
