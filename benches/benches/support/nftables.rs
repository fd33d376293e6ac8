//! `veth_drop/{ironclad,nftables}/N`: the Shield against what a user would otherwise
//! deploy, an nftables `netdev` ingress chain with an interval set (`auto-merge`) of the
//! same N CIDRs, each dropping the same packets on the same veth pair.
//!
//! A small C sender (`blast.c`) in a network namespace pushes prebuilt 60-byte IPv4/UDP
//! frames from 4,096 denied sources out of the namespace's end with `sendmmsg` on an
//! `AF_PACKET` socket. On a veth pair the host end's receive path (XDP, or the ingress
//! hook) runs in the sender's own softirq, so the sender's time per packet is the cost
//! of the whole path: transmit + filter + drop. The figure is wall time per packet
//! (and packets/s); the filter's share is the difference between the two rows.

use std::cell::Cell;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use ipnetwork::Ipv4Network;
use ironclad_benches::figures::{record_one, Unit};
use ironclad_benches::{avoided, deny_policy, table_v4, BenchShield};
use ironclad_core::abi::ShieldTotal;
use ironclad_policy::shield::Ipv4Lookup;
use ironclad_testing::rules::{addr_in_v4, Rng};
use ironclad_testing::{NetNs, VethPair};

use crate::veth::{build_c, mac_of, sh, Blast};

const SIZES: [usize; 2] = [100_000, 1_000_000];
const SOURCES: usize = 4096;

/// Writes 4,096 source addresses, each inside one of `rules`, one per line.
fn write_sources(path: &Path, rules: &[Ipv4Network]) {
    let mut rng = Rng::new(17);
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..SOURCES {
        let net = rules[rng.below(rules.len() as u64) as usize];
        writeln!(file, "{}", addr_in_v4(&mut rng, net)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The nftables ruleset dropping `rules` at ingress of `device`.
fn write_ruleset(path: &Path, device: &str, rules: &[Ipv4Network]) {
    let mut text = String::with_capacity(rules.len() * 20 + 512);
    text.push_str("table netdev ironclad_bench {\n");
    text.push_str("  set deny { type ipv4_addr; flags interval; auto-merge; elements = {\n");
    for (i, net) in rules.iter().enumerate() {
        if i > 0 {
            text.push_str(",\n");
        }
        text.push_str(&net.to_string());
    }
    text.push_str("\n  } }\n");
    text.push_str(&format!(
        "  chain ingress {{ type filter hook ingress device \"{device}\" priority -500; \
         policy accept; ip saddr @deny counter drop; }}\n}}\n"
    ));
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// Packets the Shield has dropped (its `dropped` total).
fn dropped(bench: &BenchShield) -> u64 {
    let status = bench
        .shield
        .status()
        .unwrap_or_else(|e| panic!("status: {e}"));
    status
        .totals
        .iter()
        .find(|(t, _)| *t == ShieldTotal::Dropped)
        .map_or(0, |(_, c)| c.packets)
}

/// Packets the nftables rule's counter has seen (every one of them dropped).
fn nft_dropped() -> u64 {
    let text = sh(
        "nft",
        &["list", "chain", "netdev", "ironclad_bench", "ingress"],
    );
    text.split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {text}"))
}

/// The veth comparison (registered in `shield.rs`'s criterion group).
pub(crate) fn veth_drop(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin = build_c(dir.path(), "blast");
    let ns = NetNs::new("nftb").unwrap_or_else(|e| panic!("netns: {e}"));
    let veth = VethPair::new(&ns, &["10.231.0.1/24"], &["10.231.0.2/24"])
        .unwrap_or_else(|e| panic!("veth: {e}"));
    let mac = mac_of(veth.host());
    let mut group = c.benchmark_group("veth_drop");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    // Two shapes: a routing table's (`table_v4`: prefixes side by side, which an
    // interval set merges well) at each size, and a merged blocklist's at 1M
    // (`blocklist_v4`: /24s, wider and narrower prefixes scattered over the space, the
    // shape of the feeds users load), whose ids say `feed_`.
    let shapes = SIZES
        .iter()
        .map(|&count| (count.to_string(), table_v4(count, 23, &avoided())))
        .chain(std::iter::once((
            String::from("feed_1000000"),
            ironclad_testing::rules::blocklist_v4(1_000_000, 31, &avoided()),
        )));
    for (count, rules) in shapes {
        let sources = dir.path().join(format!("sources{count}"));
        write_sources(&sources, &rules);
        let blast = Blast {
            ns: &ns,
            bin: &bin,
            iface: veth.peer(),
            mac: mac.clone(),
            sources: &sources,
            to: Vec::new(),
        };
        // The Shield, attached to the host end.
        {
            let policy = deny_policy(&rules, &[], Ipv4Lookup::Fast);
            let started = Instant::now();
            let bench = BenchShield::with_policy(&format!("veth{count}"), &policy);
            let took = started.elapsed();
            println!(
                "veth_drop/load/ironclad/{count}: {:.2} s (load the Shield, apply {} CIDRs)",
                took.as_secs_f64(),
                rules.len()
            );
            record_one(
                &format!("veth_drop/load/ironclad/{count}"),
                Unit::Ns,
                took.as_nanos() as f64,
            );
            let _attachment = bench
                .shield
                .attach(veth.host())
                .unwrap_or_else(|e| panic!("attach: {e}"));
            let before = dropped(&bench);
            let sent = Cell::new(0u64);
            group.bench_function(BenchmarkId::new("ironclad", &count), |b| {
                b.iter_custom(|iters| {
                    sent.set(sent.get() + iters);
                    blast.send(iters)
                })
            });
            // Every frame sent comes from a denied source: all were dropped, by the Shield.
            assert_eq!(
                dropped(&bench) - before,
                sent.get(),
                "the Shield dropped what was sent"
            );
        }
        // nftables on the same end, same CIDRs.
        let ruleset = dir.path().join(format!("ruleset{count}.nft"));
        write_ruleset(&ruleset, veth.host(), &rules);
        let started = Instant::now();
        sh("nft", &["-f", &ruleset.display().to_string()]);
        let took = started.elapsed();
        println!(
            "veth_drop/load/nftables/{count}: {:.2} s (`nft -f` of the same {} CIDRs)",
            took.as_secs_f64(),
            rules.len()
        );
        record_one(
            &format!("veth_drop/load/nftables/{count}"),
            Unit::Ns,
            took.as_nanos() as f64,
        );
        let sent = Cell::new(0u64);
        group.bench_function(BenchmarkId::new("nftables", &count), |b| {
            b.iter_custom(|iters| {
                sent.set(sent.get() + iters);
                blast.send(iters)
            })
        });
        let counted = nft_dropped();
        sh("nft", &["delete", "table", "netdev", "ironclad_bench"]);
        assert_eq!(counted, sent.get(), "nftables dropped what was sent");
    }
    group.finish();
}
