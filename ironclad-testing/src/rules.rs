//! Deterministic random rule sets for tests and benchmarks.
//!
//! The same seed always gives the same prefixes, so a failing differential test or a
//! benchmark figure can be reproduced exactly.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `true` if the two networks share any address.
pub fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// `count` distinct IPv4 prefixes shaped like a routing table or a large merged
/// blocklist: about 1% /8–/15, 23% /16–/21, 17% /22–/23, 55% /24 and 4% longer than /24;
/// the long ones fall into `count / 170` (at least 1) "hot" /24s, as host lists cluster
/// in hosting ranges. No prefix overlaps any of `avoid`.
pub fn table_v4(count: usize, seed: u64, avoid: &[IpNetwork]) -> Vec<Ipv4Network> {
    let mut rng = Rng::new(seed);
    let hot: Vec<u32> = (0..(count / 170).max(1))
        .map(|_| (rng.next_u64() as u32) & 0xffff_ff00)
        .collect();
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let p = rng.below(1000);
        let (prefix, base) = match p {
            0..=9 => (8 + rng.below(8) as u8, rng.next_u64() as u32),
            10..=239 => (16 + rng.below(6) as u8, rng.next_u64() as u32),
            240..=409 => (22 + rng.below(2) as u8, rng.next_u64() as u32),
            410..=959 => (24, rng.next_u64() as u32),
            _ => (
                25 + rng.below(8) as u8,
                hot[rng.below(hot.len() as u64) as usize] | (rng.next_u64() as u32 & 0xff),
            ),
        };
        let Ok(net) = Ipv4Network::new(Ipv4Addr::from(base), prefix) else {
            continue;
        };
        let Ok(net) = Ipv4Network::new(net.network(), prefix) else {
            continue;
        };
        if avoid.iter().any(|a| overlaps(*a, IpNetwork::V4(net))) || !seen.insert(net) {
            continue;
        }
        out.push(net);
    }
    out
}

/// `count` distinct IPv4 /32 hosts drawn uniformly from the whole address space, none
/// inside `avoid`: an IP-level threat feed (abuse reports, scanners, C2s, Tor exits).
pub fn hosts_v4(count: usize, seed: u64, avoid: &[IpNetwork]) -> Vec<Ipv4Network> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let addr = Ipv4Addr::from(rng.next_u64() as u32);
        if avoid.iter().any(|a| a.contains(addr.into())) || !seen.insert(addr) {
            continue;
        }
        out.extend(Ipv4Network::new(addr, 32));
    }
    out
}

/// `count` distinct IPv4 /32 hosts clustered in /24s: each /24 drawn holds 3 to 42 of
/// them (its hosting range's abusers), none inside `avoid`. The /24s are scattered over
/// the whole address space; some are drawn twice.
pub fn clustered_hosts_v4(count: usize, seed: u64, avoid: &[IpNetwork]) -> Vec<Ipv4Network> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let block = (rng.next_u64() as u32) & 0xffff_ff00;
        for _ in 0..3 + rng.below(40) {
            let addr = Ipv4Addr::from(block | (rng.next_u64() as u32 & 0xff));
            if out.len() == count
                || avoid.iter().any(|a| a.contains(addr.into()))
                || !seen.insert(addr)
            {
                continue;
            }
            out.extend(Ipv4Network::new(addr, 32));
        }
    }
    out
}

/// Writes into `dir`, for each last octet of `hosts`, a plain feed `hostsN.txt` that lists
/// that host of each of `blocks` /24s from 10.0.0.0 on (hosts of several feeds side by
/// side in every /24); returns the `deny_feeds:` items naming them, indented for a
/// policy's `shield:` section.
pub fn host_feeds(dir: &std::path::Path, hosts: &[u32], blocks: u32) -> std::io::Result<String> {
    let mut items = String::new();
    for host in hosts {
        let lines: String = (0..blocks)
            .map(|i| format!("{}\n", Ipv4Addr::from(0x0a00_0000 + (i << 8) + host)))
            .collect();
        let name = format!("hosts{host}.txt");
        std::fs::write(dir.join(&name), lines)?;
        items.push_str(&format!("    - path: {name}\n      format: plain\n"));
    }
    Ok(items)
}

/// `count` distinct IPv4 prefixes shaped like a merged blocklist with many host entries:
/// 60% /24, 20% /16–/23, 20% /25–/32 scattered over the whole address space (no
/// clustering), none overlapping `avoid`. Prefixes may nest.
pub fn blocklist_v4(count: usize, seed: u64, avoid: &[IpNetwork]) -> Vec<Ipv4Network> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let prefix = match rng.below(10) {
            0..=5 => 24,
            6 | 7 => 16 + rng.below(8) as u8,
            _ => 25 + rng.below(8) as u8,
        };
        let Ok(net) = Ipv4Network::new(Ipv4Addr::from(rng.next_u64() as u32), prefix)
            .and_then(|n| Ipv4Network::new(n.network(), prefix))
        else {
            continue;
        };
        if avoid.iter().any(|a| overlaps(*a, IpNetwork::V4(net))) || !seen.insert(net) {
            continue;
        }
        out.push(net);
    }
    out
}

/// `count` distinct IPv6 prefixes in 2000::/3, /32 to /64, none overlapping `avoid`.
pub fn table_v6(count: usize, seed: u64, avoid: &[IpNetwork]) -> Vec<Ipv6Network> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let hi =
            (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 3 | (1u128 << 125);
        let prefix = 32 + rng.below(33) as u8;
        let Ok(net) = Ipv6Network::new(Ipv6Addr::from(hi), prefix) else {
            continue;
        };
        let Ok(net) = Ipv6Network::new(net.network(), prefix) else {
            continue;
        };
        if avoid.iter().any(|a| overlaps(*a, IpNetwork::V6(net))) || !seen.insert(net) {
            continue;
        }
        out.push(net);
    }
    out
}

/// A random IPv4 prefix of length `lo..=hi` inside `within`.
pub fn prefix_in_v4(rng: &mut Rng, within: Ipv4Network, lo: u8, hi: u8) -> Ipv4Network {
    let lo = lo.max(within.prefix());
    let prefix = lo + rng.below(u64::from(hi.saturating_sub(lo)) + 1) as u8;
    let host_bits = 32 - u32::from(within.prefix());
    let offset = if host_bits == 0 {
        0
    } else {
        (rng.next_u64() as u32) & (u32::MAX >> (32 - host_bits))
    };
    let addr = Ipv4Addr::from(u32::from(within.network()) | offset);
    Ipv4Network::new(addr, prefix)
        .and_then(|n| Ipv4Network::new(n.network(), prefix))
        .unwrap_or(within)
}

/// A random address inside `within`.
pub fn addr_in_v4(rng: &mut Rng, within: Ipv4Network) -> Ipv4Addr {
    let host_bits = 32 - u32::from(within.prefix());
    let offset = if host_bits == 0 {
        0
    } else {
        (rng.next_u64() as u32) & (u32::MAX >> (32 - host_bits))
    };
    Ipv4Addr::from(u32::from(within.network()) | offset)
}

/// Networks shaped like a GeoLite2-Country database, as one prefix list per country:
/// the IPv4 space from 1.0.0.0 to 223.255.255.255 (without the private, loopback,
/// shared and link-local ranges) is walked in blocks of realistic sizes (about 2% /12–/16,
/// 25% /17–/20, 25% /21–/22, 48% /23–/24), each given to a country (a run often stays
/// in one country, as registries allocate), with one block in ten left unallocated;
/// IPv6 likewise from 2001::/16 on, in /29–/32, /33–/44 and /48 blocks, until
/// `v6_count` of them. `countries` two-letter-like codes (`AA`, `AB`, …). Deterministic.
pub fn countries(countries: usize, v6_count: usize, seed: u64) -> Vec<(String, Vec<IpNetwork>)> {
    let mut rng = Rng::new(seed);
    let countries = countries.clamp(1, 26 * 26);
    let mut out: Vec<(String, Vec<IpNetwork>)> = (0..countries)
        .map(|i| {
            let code: String = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8]
                .iter()
                .map(|b| char::from(*b))
                .collect();
            (code, Vec::new())
        })
        .collect();
    let reserved: [(u32, u8); 6] = [
        (0x0A00_0000, 8),  // 10/8
        (0x6440_0000, 10), // 100.64/10
        (0x7F00_0000, 8),  // 127/8
        (0xA9FE_0000, 16), // 169.254/16
        (0xAC10_0000, 12), // 172.16/12
        (0xC0A8_0000, 16), // 192.168/16
    ];
    let in_reserved = |a: u32, len: u8| {
        reserved.iter().any(|(r, rl)| {
            let l = len.min(*rl);
            let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
            a & mask == r & mask
        })
    };
    let mut country = 0usize;
    let mut next_country = |rng: &mut Rng| {
        if rng.below(10) >= 7 {
            country = rng.below(countries as u64) as usize;
        }
        country
    };
    let mut addr: u64 = 0x0100_0000;
    while addr < 0xE000_0000 {
        let len: u8 = match rng.below(100) {
            0..=1 => 12 + rng.below(5) as u8,
            2..=26 => 17 + rng.below(4) as u8,
            27..=51 => 21 + rng.below(2) as u8,
            _ => 23 + rng.below(2) as u8,
        };
        let size = 1u64 << (32 - len);
        let start = addr.div_ceil(size) * size;
        if start + size > 0xE000_0000 {
            addr = start + size;
            continue;
        }
        addr = start + size;
        let a = start as u32;
        if in_reserved(a, len) || rng.below(10) == 0 {
            continue;
        }
        if let Ok(net) = Ipv4Network::new(Ipv4Addr::from(a), len) {
            let c = next_country(&mut rng);
            out[c].1.push(IpNetwork::V4(net));
        }
    }
    let mut addr: u128 = 0x2001_0000u128 << 96;
    let mut made = 0;
    while made < v6_count {
        let len: u8 = match rng.below(10) {
            0..=3 => 29 + rng.below(4) as u8,
            4 | 5 => 33 + rng.below(12) as u8,
            _ => 48,
        };
        let size = 1u128 << (128 - len);
        let start = addr.div_ceil(size) * size;
        addr = start + size;
        if rng.below(10) == 0 {
            continue;
        }
        if let Ok(net) = Ipv6Network::new(Ipv6Addr::from(start), len) {
            let c = next_country(&mut rng);
            out[c].1.push(IpNetwork::V6(net));
            made += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_distinct_deterministic_and_avoid_what_they_must() {
        let avoid: Vec<IpNetwork> = vec!["192.0.2.0/24".parse().expect("cidr")];
        let a = table_v4(20_000, 7, &avoid);
        assert_eq!(a, table_v4(20_000, 7, &avoid));
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), a.len());
        assert!(a.iter().all(|n| !overlaps(IpNetwork::V4(*n), avoid[0])));
        let long = a.iter().filter(|n| n.prefix() > 24).count();
        assert!((400..1200).contains(&long), "about 4% long: {long}");
        let v6 = table_v6(1000, 7, &[]);
        assert!(v6.iter().all(|n| (32..=64).contains(&n.prefix())));
        let mut rng = Rng::new(1);
        let within: Ipv4Network = "10.0.0.0/8".parse().expect("cidr");
        for _ in 0..100 {
            let p = prefix_in_v4(&mut rng, within, 8, 32);
            assert!(within.contains(p.network()) && p.prefix() >= 8);
            assert!(within.contains(addr_in_v4(&mut rng, within)));
        }
    }
}
