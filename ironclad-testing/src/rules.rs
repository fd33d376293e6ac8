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
