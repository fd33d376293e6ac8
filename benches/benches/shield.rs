//! Shield benchmarks against the real kernel.
//!
//! - `shield_xdp/lpm_miss/N`: kernel time per packet (BPF_PROG_TEST_RUN's own average) of
//!   the Shield on a 64-byte IPv4 frame whose source matches none of N IPv4 prefixes.
//! - `shield_xdp/lpm_hit/N`: the same for a source inside a denied prefix (drop path).
//! - `audit/shield`: the helper audit of the embedded Shield object (user space).
//! - `map_update/lpm_v4`: one audited update of the IPv4 trie (syscall + audit record).

use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ironclad_benches::{v4_rules, BenchShield};
use ironclad_bpf::{audit_object, object, Allowlist};
use ironclad_core::abi::{Action, LpmV4Key, Rule};
use ironclad_core::testing::frames;

fn shield_xdp(c: &mut Criterion) {
    let mut group = c.benchmark_group("shield_xdp");
    group.throughput(Throughput::Elements(1));
    let miss = frames::ipv4_udp(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2), 18);
    for count in [1usize, 1_000, 100_000] {
        let mut rules = v4_rules(count, 42);
        // One known hit: 203.0.113.0/24 is denied in every set.
        rules.push((
            LpmV4Key {
                prefixlen: 24,
                addr: [203, 0, 113, 0],
            },
            Rule::new(2, Action::Deny),
        ));
        let hit = frames::ipv4_udp(
            Ipv4Addr::new(203, 0, 113, 9),
            Ipv4Addr::new(192, 0, 2, 2),
            18,
        );
        let bench = BenchShield::with_v4_rules(&format!("bench{count}"), &rules);
        for (name, frame) in [("lpm_miss", &miss), ("lpm_hit", &hit)] {
            group.bench_with_input(BenchmarkId::new(name, count), frame, |b, frame| {
                b.iter_custom(|iters| {
                    let repeat = u32::try_from(iters).unwrap_or(u32::MAX);
                    let run = bench
                        .shield
                        .test_run(frame, repeat)
                        .unwrap_or_else(|e| panic!("test run: {e}"));
                    run.per_run * repeat
                });
            });
        }
    }
    group.finish();
}

fn audit(c: &mut Criterion) {
    let allowlist = Allowlist::builtin();
    c.bench_function("audit/shield", |b| {
        b.iter(|| audit_object(object::shield(), &allowlist).map(|r| r.programs.len()))
    });
}

fn map_update(c: &mut Criterion) {
    let bench = BenchShield::with_v4_rules("benchupd", &[]);
    let map = bench
        .shield
        .object()
        .map("ic_rules_v4")
        .unwrap_or_else(|e| panic!("{e}"));
    let value = Rule::new(1, Action::Deny).to_bytes();
    let mut n: u32 = 0;
    c.bench_function("map_update/lpm_v4", |b| {
        b.iter(|| {
            n = n.wrapping_add(1) % 1_000_000;
            let key = LpmV4Key {
                prefixlen: 32,
                addr: (0x0a00_0000 | n).to_be_bytes(),
            };
            map.update(&key.to_bytes(), &value)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = shield_xdp, audit, map_update
}
criterion_main!(benches);
