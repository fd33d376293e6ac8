//! Shared set-up for Ironclad's benchmarks: deterministic rule sets and a loaded Shield
//! on a throwaway bpffs directory. Benchmarks run against the real kernel (root needed).

use std::net::Ipv4Addr;

use ironclad_bpf::{Loader, Shield};
use ironclad_core::abi::{Action, LpmV4Key, Rule};
use ironclad_core::testing::BpffsDir;

/// A small deterministic generator (xorshift64*), so every run benchmarks the same rules.
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
}

/// `count` distinct IPv4 deny prefixes between /16 and /32, none covering 192.0.2.0/24
/// (the benchmark's traffic source), as LPM entries with rule id 1.
pub fn v4_rules(count: usize, seed: u64) -> Vec<(LpmV4Key, Rule)> {
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let r = rng.next_u64();
        let prefixlen = 16 + (r % 17) as u32;
        let addr = (r >> 32) as u32;
        let mask = if prefixlen == 0 {
            0
        } else {
            u32::MAX << (32 - prefixlen)
        };
        let net = addr & mask;
        if Ipv4Addr::from(net).octets()[..2] == [192, 0] || !seen.insert((net, prefixlen)) {
            continue;
        }
        out.push((
            LpmV4Key {
                prefixlen,
                addr: net.to_be_bytes(),
            },
            Rule::new(1, Action::Deny),
        ));
    }
    out
}

/// A Shield loaded on its own bpffs directory (removed on drop).
pub struct BenchShield {
    /// The Shield.
    pub shield: Shield,
    _loader: Loader,
    _pins: BpffsDir,
}

impl BenchShield {
    /// Loads a Shield and fills its IPv4 trie with `rules`.
    pub fn with_v4_rules(tag: &str, rules: &[(LpmV4Key, Rule)]) -> Self {
        let pins = BpffsDir::new(tag).unwrap_or_else(|e| panic!("bpffs (run as root): {e}"));
        let loader = Loader::builder()
            .pin_root(pins.path())
            .build()
            .unwrap_or_else(|e| panic!("loader: {e}"));
        let shield = Shield::load(&loader).unwrap_or_else(|e| panic!("load: {e}"));
        let keys: Vec<_> = rules
            .iter()
            .map(|(k, v)| (k.to_bytes(), v.to_bytes()))
            .collect();
        let map = shield
            .object()
            .map("ic_rules_v4")
            .unwrap_or_else(|e| panic!("{e}"));
        map.update_many(keys.iter().map(|(k, v)| (&k[..], &v[..])))
            .unwrap_or_else(|e| panic!("filling the trie: {e}"));
        Self {
            shield,
            _loader: loader,
            _pins: pins,
        }
    }
}
