//! Policy sources in user space: aggregating a million random CIDRs into their minimal
//! cover, and parsing a million-line feed. Neither touches the kernel; they bound how
//! long a feed or country update takes before the Shield's map update starts.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ironclad_policy::aggregate::aggregate;
use ironclad_policy::feeds::{parse_feed, FeedFormat, Strictness};
use ironclad_testing::rules::Rng;

/// `count` random prefixes, 90% IPv4 of length /16 to /32 (mostly long, as in feeds),
/// 10% IPv6 of length /16 to /128.
fn random_cidrs(count: usize, seed: u64) -> Vec<IpNetwork> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            if rng.below(10) < 9 {
                let len = [16, 20, 22, 24, 24, 24, 28, 30, 32, 32, 32, 32][rng.below(12) as usize];
                let addr = Ipv4Addr::from(rng.next_u64() as u32);
                let net = Ipv4Network::new(addr, len).unwrap_or_else(|e| panic!("{e}"));
                IpNetwork::V4(
                    Ipv4Network::new(net.network(), len).unwrap_or_else(|e| panic!("{e}")),
                )
            } else {
                let len = 16 + rng.below(113) as u8;
                let addr =
                    Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
                let net = Ipv6Network::new(addr, len).unwrap_or_else(|e| panic!("{e}"));
                IpNetwork::V6(
                    Ipv6Network::new(net.network(), len).unwrap_or_else(|e| panic!("{e}")),
                )
            }
        })
        .collect()
}

fn sources(c: &mut Criterion) {
    let cidrs = random_cidrs(1_000_000, 7);
    let minimal = aggregate(&cidrs);
    eprintln!(
        "sources/aggregate: 1,000,000 random CIDRs -> {} prefixes",
        minimal.len()
    );
    ironclad_benches::figures::record_one(
        "sources/aggregate_1m_random_cidrs/prefixes",
        ironclad_benches::figures::Unit::Count,
        minimal.len() as f64,
    );
    let mut group = c.benchmark_group("sources");
    group.sample_size(10);
    group.bench_function("aggregate_1m_random_cidrs", |b| {
        b.iter_batched(
            || cidrs.clone(),
            |input| aggregate(&input),
            BatchSize::LargeInput,
        );
    });
    let text: String = cidrs.iter().map(|n| format!("{n}  # entry\n")).collect();
    group.bench_function("parse_1m_line_plain_feed", |b| {
        b.iter(|| {
            parse_feed(
                &text,
                Path::new("bench.txt"),
                &FeedFormat::Plain,
                Strictness::Strict,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        });
    });
    group.finish();
}

criterion_group!(benches, sources);
criterion_main!(benches);
