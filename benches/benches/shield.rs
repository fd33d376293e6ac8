//! Shield benchmarks against the real kernel. Per-packet figures are the kernel's own
//! BPF_PROG_TEST_RUN average (`per_run`), so the syscall is not in them; the round trip
//! inside the kernel is, which `shield_xdp/empty` (an XDP program that only returns
//! XDP_PASS) measures: subtract it to get the Shield's own cost.
//!
//! - `shield_xdp/empty`: the baseline program.
//! - `shield_xdp/{fast,trie}_{miss,hit}/N`: one IPv4 frame whose source matches none of
//!   N prefixes (miss) or a denied one (hit, the drop path), through the compiled fast
//!   path or the LPM trie.
//! - `shield_xdp/v6_{miss,hit}/N`: the same for IPv6 (the compiled bitmap trie, the
//!   default); `shield_summary/ipv6_{trie,fast}_{miss,hit,feed}/N` both paths side by side.
//! - `shield_replay/{empty,fast,trie}/1000000`: 65,536 frames with distinct sources
//!   (half inside the rules) run one after another, so the tables are not all in cache.
//! - `shield_policy/compile/1000000`: compiling a 1M-prefix policy and its fast path
//!   (user space).
//! - `shield_policy/swap/1000000`: replacing a whole policy of 1M IPv4 + 100k IPv6
//!   prefixes by another one, switch included.
//! - `shield_policy/edit_one_{v4,v6}/1000000`: adding (or removing) one rule on that
//!   policy (IPv4: the fast path is rebuilt and switched, IPv6 is kept; IPv6: one trie
//!   element in place).
//! - `shield_policy/feed_update_20_prefixes/N`: a feed update of 20 IPv4 prefixes applied
//!   in place on a policy of N (1M: with 100k IPv6 beside); `feed_update_20_v6/1000000`
//!   the same for 20 IPv6 prefixes on the IPv6 fast path.
//! - `shield_policy/swap/shared_prefixes`, `shield_memory/*`: recorded figures (see
//!   `ironclad_benches::figures`): how many prefixes the two swapped policies share, and
//!   the kernel memory of each map with the 1M + 100k policy loaded.
//! - `shield_summary/*`: the paired rounds of the closing table (`summary`), with the
//!   drop events read live as the daemon reads them; `ipv4_hosts_*` on a feed of 1M
//!   scattered /32 hosts (span nodes), and `shield_memory_hosts/total` its kernel memory.
//! - `shield_reload/*`: the daemon's reload of a policy file whose feeds hold 1M IPv4
//!   prefixes (a merged-blocklist feed beside a small one): compiling the file with the
//!   daemon's [`SourceCache`] and applying it with `replace`, when the small feed changed
//!   (`small_feed_changed`; `small_feed_changed_uncached` the same without the cache, as
//!   every reload was before it) or 20 lines of the big one did (`big_feed_changed`).
//! - `veth_drop/{ironclad,nftables}/N`: see `nftables.rs` in this directory.
//! - `audit/shield`, `map_update/valve`: the helper audit; one audited map write.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnetwork::IpNetwork;
use ironclad_benches::figures::{record, record_one, Unit};
use ironclad_benches::{
    avoided, deny_policy, frame_from, replay_frames, table_v4, table_v6, Baseline, BenchShield,
    Verdict,
};
use ironclad_bpf::{audit_object, object, Allowlist, EventReader};
use ironclad_core::abi::{Action, SHIELD_V4_GROUPS};
use ironclad_events::{Fanout, Overflow};
use ironclad_policy::fastpath::{self, FastTable};
use ironclad_policy::shield::Ipv4Lookup;

#[path = "support/nftables.rs"]
mod nftables;
#[path = "support/veth.rs"]
mod veth;

const SIZES: [usize; 4] = [1, 1_000, 100_000, 1_000_000];

fn per_packet(c: &mut Criterion) {
    let mut group = c.benchmark_group("shield_xdp");
    group.throughput(Throughput::Elements(1));
    let miss = frame_from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let hit = frame_from(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
    let baseline = Baseline::load();
    group.bench_function("empty", |b| {
        b.iter_custom(|iters| {
            let repeat = u32::try_from(iters).unwrap_or(u32::MAX);
            baseline.run(&miss, repeat) * repeat
        })
    });
    for count in SIZES {
        let rules = table_v4(count, 42, &avoided());
        let bench = BenchShield::with_policy(
            &format!("bench{count}"),
            &deny_policy(&rules, &[], Ipv4Lookup::Fast),
        );
        for lookup in [Ipv4Lookup::Fast, Ipv4Lookup::Trie] {
            // Loaded with the fast path above: compiled and loaded again only for the
            // trie (a million prefixes cost tens of seconds in the unoptimised short mode).
            if lookup != Ipv4Lookup::Fast {
                bench
                    .shield
                    .replace(&deny_policy(&rules, &[], lookup))
                    .unwrap_or_else(|e| panic!("policy: {e}"));
            }
            for (kind, frame, verdict) in
                [("miss", &miss, Verdict::Pass), ("hit", &hit, Verdict::Drop)]
            {
                let name = format!("{}_{kind}", lookup.as_str());
                group.bench_with_input(BenchmarkId::new(name, count), frame, |b, frame| {
                    b.iter_custom(|iters| {
                        let repeat = u32::try_from(iters).unwrap_or(u32::MAX);
                        bench.run(frame, repeat, verdict) * repeat
                    });
                });
            }
        }
    }
    let miss6 = frame_from(IpAddr::V6(
        "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}")),
    ));
    let hit6 = frame_from(IpAddr::V6(
        "2001:db8:bad::9".parse().unwrap_or_else(|e| panic!("{e}")),
    ));
    for count in [1_000usize, 100_000] {
        let rules = table_v6(count, 42, &avoided());
        let bench = BenchShield::with_policy(
            &format!("bench6_{count}"),
            &deny_policy(&[], &rules, Ipv4Lookup::Fast),
        );
        for (kind, frame, verdict) in [
            ("v6_miss", &miss6, Verdict::Pass),
            ("v6_hit", &hit6, Verdict::Drop),
        ] {
            group.bench_with_input(BenchmarkId::new(kind, count), frame, |b, frame| {
                b.iter_custom(|iters| {
                    let repeat = u32::try_from(iters).unwrap_or(u32::MAX);
                    bench.run(frame, repeat, verdict) * repeat
                });
            });
        }
    }
    group.finish();
}

/// The daemon's event path, live: a thread reading the Shield's drop events as
/// `full_firewall run` does (`EventReader::poll` with its 100 ms wait, each event
/// decoded and published to a subscriber, which the thread empties), so that a sampled
/// drop costs what it costs with a reader: without one the ring fills at once and every
/// later drop only counts a lost event, which is cheap and not what a user runs.
struct LiveReader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl LiveReader {
    fn start(shield: &ironclad_bpf::Shield) -> Self {
        let source = shield
            .event_source()
            .unwrap_or_else(|e| panic!("event source: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let fanout = Arc::new(Fanout::new());
            let events = fanout.subscribe("bench", 65_536, Overflow::DropOldest);
            let reader = EventReader::new(vec![source], fanout)
                .unwrap_or_else(|e| panic!("event reader: {e}"));
            let mut received = 0u64;
            while !done.load(Ordering::Relaxed) {
                reader
                    .poll(Duration::from_millis(100))
                    .unwrap_or_else(|e| panic!("poll: {e}"));
                received += events.receiver().try_iter().count() as u64;
            }
            reader.drain().unwrap_or_else(|e| panic!("drain: {e}"));
            received + events.receiver().try_iter().count() as u64
        });
        Self { stop, thread }
    }

    /// Stops the reader; the events its subscriber received.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the event reader thread panicked"))
    }
}

/// The first of `hosts` and an address of its /24 that is none of them.
fn host_and_near(hosts: &[ipnetwork::Ipv4Network]) -> (u32, u32) {
    let set: std::collections::HashSet<u32> =
        hosts.iter().map(|n| u32::from(n.network())).collect();
    let host = u32::from(hosts[0].network());
    let near = (1..256u32)
        .map(|d| (host & !0xff) | ((host + d) & 0xff))
        .find(|a| !set.contains(a))
        .unwrap_or_else(|| panic!("a /24 full of hosts"));
    (host, near)
}

/// The table `cargo bench` ends with: each configuration's kernel time per packet and
/// its cost over the empty program, measured as paired minimums (15 rounds, each one run
/// of the empty program and one of the configuration, 1M repeats apiece) so that noise
/// from other work on the machine cancels out instead of adding up. Each Shield's drop
/// events are read live ([`LiveReader`]) at the default sampling (1 in 64);
/// `ipv4_fast_hit_unsampled/1000000` is the 1M fast-path hit with sampling off, what the
/// drop costs without its events.
fn summary(_: &mut Criterion) {
    let rounds = ironclad_benches::rounds(15);
    let repeat = ironclad_benches::repeats(1_000_000);
    let miss = frame_from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let hit = frame_from(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
    let baseline = Baseline::load();
    // Each round's empty and configuration runs, recorded as `shield_summary/ID` and
    // `shield_summary/ID/empty` (the minimums are the figures; the spread is shown).
    let paired = |id: &str, run: &dyn Fn() -> Duration, frame: &[u8]| {
        let (mut empty, mut config) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            empty.push(baseline.run(frame, repeat));
            config.push(run());
        }
        let ns = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as f64).collect::<Vec<_>>();
        record(&format!("shield_summary/{id}"), Unit::Ns, &ns(&config));
        record(&format!("shield_summary/{id}/empty"), Unit::Ns, &ns(&empty));
        let min = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
        (min(&empty), min(&config))
    };
    let mut rows: Vec<(String, usize, Duration, Duration)> = Vec::new();
    for count in SIZES {
        let rules = table_v4(count, 42, &avoided());
        let bench = BenchShield::with_policy(
            &format!("sum{count}"),
            &deny_policy(&rules, &[], Ipv4Lookup::Trie),
        );
        let reader = LiveReader::start(&bench.shield);
        for lookup in [Ipv4Lookup::Trie, Ipv4Lookup::Fast] {
            // Loaded with the trie above: only the fast path is loaded again.
            if lookup != Ipv4Lookup::Trie {
                bench
                    .shield
                    .replace(&deny_policy(&rules, &[], lookup))
                    .unwrap_or_else(|e| panic!("policy: {e}"));
            }
            for (kind, frame, verdict) in
                [("miss", &miss, Verdict::Pass), ("hit", &hit, Verdict::Drop)]
            {
                let id = format!("ipv4_{}_{kind}/{count}", lookup.as_str());
                let (empty, run) = paired(&id, &|| bench.run(frame, repeat, verdict), frame);
                rows.push((
                    format!("ipv4 {} {kind}", lookup.as_str()),
                    count,
                    run,
                    empty,
                ));
            }
        }
        if count == 1_000_000 {
            // The fast path's hit again with sampling off: the drop without its events.
            bench
                .shield
                .set_sample_rate(0)
                .unwrap_or_else(|e| panic!("sampling: {e}"));
            let id = format!("ipv4_fast_hit_unsampled/{count}");
            let (empty, run) = paired(&id, &|| bench.run(&hit, repeat, Verdict::Drop), &hit);
            rows.push(("ipv4 fast hit, no events".to_string(), count, run, empty));
        }
        let received = reader.stop();
        assert!(
            received > 0,
            "{count} prefixes: the live reader received the sampled drops"
        );
    }
    // A feed of 1M /32 hosts scattered over the whole address space: the /24s that
    // hold hosts are span nodes. `miss` comes from a /24 with no host, `near` from a /24
    // that holds one (the span node is read, the source is not the host), `hit` is a
    // host (through its span node).
    for count in [1_000usize, 100_000, 1_000_000] {
        let hosts = ironclad_testing::rules::hosts_v4(count, 42, &avoided());
        let (host, near) = host_and_near(&hosts);
        let bench = BenchShield::with_policy(
            &format!("sumhosts{count}"),
            &deny_policy(&hosts, &[], Ipv4Lookup::Trie),
        );
        let reader = LiveReader::start(&bench.shield);
        for lookup in [Ipv4Lookup::Trie, Ipv4Lookup::Fast] {
            // Loaded with the trie above: only the fast path is loaded again.
            let path = if lookup == Ipv4Lookup::Trie {
                bench
                    .shield
                    .status()
                    .unwrap_or_else(|e| panic!("status: {e}"))
                    .ipv4_path
            } else {
                bench
                    .shield
                    .replace(&deny_policy(&hosts, &[], lookup))
                    .unwrap_or_else(|e| panic!("policy: {e}"))
                    .ipv4_path
            };
            assert_eq!(path.as_str(), lookup.as_str(), "stays on {lookup:?}");
            for (kind, addr, verdict) in [
                ("miss", Ipv4Addr::new(192, 0, 2, 1), Verdict::Pass),
                ("near", Ipv4Addr::from(near), Verdict::Pass),
                ("hit", Ipv4Addr::from(host), Verdict::Drop),
            ] {
                let frame = frame_from(IpAddr::V4(addr));
                let id = format!("ipv4_hosts_{}_{kind}/{count}", lookup.as_str());
                let (empty, run) = paired(&id, &|| bench.run(&frame, repeat, verdict), &frame);
                rows.push((
                    format!("hosts {} {kind}", lookup.as_str()),
                    count,
                    run,
                    empty,
                ));
            }
        }
        assert!(
            reader.stop() > 0,
            "hosts: the live reader received the sampled drops"
        );
        if count == 1_000_000 {
            let status = bench
                .shield
                .status()
                .unwrap_or_else(|e| panic!("status: {e}"));
            record_one(
                "shield_memory_hosts/total",
                Unit::Bytes,
                status.map_bytes() as f64,
            );
        }
    }
    // A million hosts clustered 3 to 42 in a /24 (`ironclad_testing::rules::
    // clustered_hosts_v4`): those /24s are bitmap nodes. `near` is a source in the first
    // host's /24 that is not a host (the node's header and a word of its bits are read),
    // `hit` that host.
    {
        let count = 1_000_000usize;
        let hosts = ironclad_testing::rules::clustered_hosts_v4(count, 42, &avoided());
        let (host, near) = host_and_near(&hosts);
        let bench =
            BenchShield::with_policy("sumclustered", &deny_policy(&hosts, &[], Ipv4Lookup::Fast));
        let status = bench
            .shield
            .status()
            .unwrap_or_else(|e| panic!("status: {e}"));
        assert_eq!(status.ipv4_path.as_str(), "fast", "clustered hosts");
        let reader = LiveReader::start(&bench.shield);
        for (kind, addr, verdict) in [
            ("near", Ipv4Addr::from(near), Verdict::Pass),
            ("hit", Ipv4Addr::from(host), Verdict::Drop),
        ] {
            let frame = frame_from(IpAddr::V4(addr));
            let id = format!("ipv4_clustered_fast_{kind}/{count}");
            let (empty, run) = paired(&id, &|| bench.run(&frame, repeat, verdict), &frame);
            rows.push((format!("clustered fast {kind}"), count, run, empty));
        }
        assert!(
            reader.stop() > 0,
            "clustered: the live reader received the sampled drops"
        );
    }
    // IPv6: a feed of /32 to /64 prefixes scattered over 2000::/3, through the kernel's
    // LPM trie and the compiled bitmap trie. `miss` comes from 2001:db8::/32 (no feed
    // prefix, but its /22 holds the /48 rule: the walk reads that lone node), `hit` is
    // that single /48 rule, `feed` a source inside a feed prefix (the first generated,
    // whose /22 holds another: the walk reads the /22's node, then a lone one).
    for count in [1_000usize, 100_000] {
        let rules = table_v6(count, 42, &avoided());
        let policy = |lookup: Ipv4Lookup| {
            let mut p = deny_policy(&[], &rules, Ipv4Lookup::Fast);
            p.ipv6_lookup = lookup;
            p
        };
        let bench = BenchShield::with_policy(&format!("sum6_{count}"), &policy(Ipv4Lookup::Trie));
        let reader = LiveReader::start(&bench.shield);
        let feed = std::net::Ipv6Addr::from(u128::from(rules[0].network()) | 0x1234);
        for lookup in [Ipv4Lookup::Trie, Ipv4Lookup::Fast] {
            // Loaded with the trie above: only the bitmap trie is loaded again.
            let path = if lookup == Ipv4Lookup::Trie {
                bench
                    .shield
                    .status()
                    .unwrap_or_else(|e| panic!("status: {e}"))
                    .ipv6_path
            } else {
                bench
                    .shield
                    .replace(&policy(lookup))
                    .unwrap_or_else(|e| panic!("policy: {e}"))
                    .ipv6_path
            };
            assert_eq!(path.as_str(), lookup.as_str(), "on {lookup:?}");
            for (kind, addr, verdict) in [
                (
                    "miss",
                    "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}")),
                    Verdict::Pass,
                ),
                (
                    "hit",
                    "2001:db8:bad::9".parse().unwrap_or_else(|e| panic!("{e}")),
                    Verdict::Drop,
                ),
                ("feed", feed, Verdict::Drop),
            ] {
                let frame = frame_from(IpAddr::V6(addr));
                let id = format!("ipv6_{}_{kind}/{count}", lookup.as_str());
                let (empty, run) = paired(&id, &|| bench.run(&frame, repeat, verdict), &frame);
                rows.push((
                    format!("ipv6 {} {kind}", lookup.as_str()),
                    count,
                    run,
                    empty,
                ));
            }
        }
        assert!(
            reader.stop() > 0,
            "IPv6 {count}: the live reader received the sampled drops"
        );
    }
    // Every country of a GeoLite2-Country-shaped database at once (synthetic: see
    // `ironclad_testing::rules::countries`): one deny set per country, aggregated as the
    // daemon aggregates them, with the default lookups. `hit` is a source in a country's
    // network, `miss` a private (LAN) source no country holds.
    {
        use ironclad_policy::shield::{compile, PrefixSet, ShieldPolicy};
        let mut sets: Vec<PrefixSet> = ironclad_testing::rules::countries(250, 150_000, 7)
            .into_iter()
            .map(|(code, nets)| {
                let name = format!("country:{code}");
                let origin = ironclad_policy::error::Origin::field(name.clone());
                PrefixSet::new(name, Action::Deny, nets, origin)
            })
            .collect();
        let raw: usize = sets.iter().map(|s| s.prefixes.len()).sum();
        ironclad_policy::sources::aggregate_sets(&mut sets, &[]);
        let hit4 = sets
            .iter()
            .flat_map(|s| s.prefixes.iter())
            .find_map(|n| match n {
                IpNetwork::V4(n) => Some(IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | 7))),
                IpNetwork::V6(_) => None,
            })
            .unwrap_or_else(|| panic!("an IPv4 country network"));
        let hit6 = sets
            .iter()
            .flat_map(|s| s.prefixes.iter())
            .find_map(|n| match n {
                IpNetwork::V6(n) => Some(IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(n.network()) | 7,
                ))),
                IpNetwork::V4(_) => None,
            })
            .unwrap_or_else(|| panic!("an IPv6 country network"));
        let policy = compile(&{
            let mut built = ShieldPolicy::default();
            built.sets = sets;
            built
        })
        .unwrap_or_else(|e| panic!("countries: {e:?}"));
        let (v4, v6) = (policy.ipv4_prefixes(), policy.ipv6_prefixes());
        record_one("shield_countries/raw_networks", Unit::Count, raw as f64);
        record_one("shield_countries/ipv4_prefixes", Unit::Count, v4 as f64);
        record_one("shield_countries/ipv6_prefixes", Unit::Count, v6 as f64);
        let bench = BenchShield::with_policy("sumgeo", &policy);
        let status = bench
            .shield
            .status()
            .unwrap_or_else(|e| panic!("status: {e}"));
        println!(
            "countries: {raw} networks, {v4} IPv4 + {v6} IPv6 prefixes after aggregation, \
             IPv4 via {}, IPv6 via {}, {} bytes of maps",
            status.ipv4_path.as_str(),
            status.ipv6_path.as_str(),
            status.map_bytes()
        );
        record_one(
            "shield_memory_countries/total",
            Unit::Bytes,
            status.map_bytes() as f64,
        );
        record_one(
            "shield_countries/ipv6_compiled",
            Unit::Count,
            f64::from(u8::from(status.ipv6_path.as_str() == "fast")),
        );
        let reader = LiveReader::start(&bench.shield);
        for (kind, addr, verdict) in [
            (
                "ipv4_miss",
                IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
                Verdict::Pass,
            ),
            ("ipv4_hit", hit4, Verdict::Drop),
            (
                "ipv6_miss",
                "fd00::9".parse().unwrap_or_else(|e| panic!("{e}")),
                Verdict::Pass,
            ),
            ("ipv6_hit", hit6, Verdict::Drop),
        ] {
            let frame = frame_from(addr);
            let id = format!("countries_{kind}/250");
            let (empty, run) = paired(&id, &|| bench.run(&frame, repeat, verdict), &frame);
            rows.push((format!("countries {kind}"), v4 + v6, run, empty));
        }
        assert!(
            reader.stop() > 0,
            "countries: the live reader received the sampled drops"
        );
    }
    println!("\nShield per packet (BPF_PROG_TEST_RUN, best of {rounds} paired rounds):");
    println!(
        "{:<22} {:>10} {:>12} {:>14}",
        "path", "prefixes", "ns/packet", "over empty"
    );
    for (name, count, run, empty) in &rows {
        println!(
            "{:<22} {:>10} {:>12} {:>14}",
            name,
            count,
            run.as_nanos(),
            run.as_nanos() as i128 - empty.as_nanos() as i128
        );
    }
    let added = |name: &str| {
        rows.iter()
            .find(|(n, c, _, _)| n == name && *c == 1_000_000)
            .map(|(_, _, run, empty)| run.as_nanos() as f64 - empty.as_nanos() as f64)
    };
    if let (Some(trie), Some(fast)) = (added("ipv4 trie miss"), added("ipv4 fast miss")) {
        println!(
            "at 1M prefixes (miss): the trie adds {trie:.0} ns, the fast path {fast:.0} ns \
             ({:.1}x less)",
            trie / fast.max(1.0)
        );
    }
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("shield_replay");
    group.throughput(Throughput::Elements(1));
    let count = 1_000_000;
    let rules = table_v4(count, 42, &avoided());
    let frames = replay_frames(&rules, 65_536, 7);
    let baseline = Baseline::load();
    let mut next = 0usize;
    group.bench_function(BenchmarkId::new("empty", count), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    next = (next + 1) % frames.len();
                    baseline.run(&frames[next], 1)
                })
                .sum()
        })
    });
    let bench = BenchShield::with_policy("replay", &deny_policy(&rules, &[], Ipv4Lookup::Fast));
    for lookup in [Ipv4Lookup::Fast, Ipv4Lookup::Trie] {
        bench
            .shield
            .replace(&deny_policy(&rules, &[], lookup))
            .unwrap_or_else(|e| panic!("policy: {e}"));
        // Every even frame comes from inside the rules: it must be dropped, or the
        // replay would time the pass path only.
        for frame in frames.iter().step_by(2) {
            bench.run(frame, 1, Verdict::Drop);
        }
        group.bench_function(BenchmarkId::new(lookup.as_str(), count), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        next = (next + 1) % frames.len();
                        bench
                            .shield
                            .test_run(&frames[next], 1)
                            .map_or_else(|e| panic!("test run: {e}"), |r| r.per_run)
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("shield_policy");
    group.sample_size(10);
    let count = 1_000_000;
    let (a4, b4) = (
        table_v4(count, 9, &avoided()),
        table_v4(count, 10, &avoided()),
    );
    let (a6, b6) = (
        table_v6(100_000, 9, &avoided()),
        table_v6(100_000, 10, &avoided()),
    );
    let (a4, b4, a6, b6) = (&a4[..], &b4[..], &a6[..], &b6[..]);

    group.bench_function(BenchmarkId::new("compile", count), |b| {
        b.iter(|| {
            let compiled = deny_policy(a4, &[], Ipv4Lookup::Fast);
            let entries: Vec<_> = compiled
                .sets
                .iter()
                .flat_map(|s| s.prefixes.iter())
                .filter_map(|n| match n {
                    IpNetwork::V4(n) => Some((n, fastpath::entry(1, Action::Deny))),
                    IpNetwork::V6(_) => None,
                })
                .collect();
            black_box(FastTable::build(&entries, &[], SHIELD_V4_GROUPS).map(|t| t.groups()))
        })
    });

    let policies = [
        deny_policy(a4, a6, Ipv4Lookup::Fast),
        deny_policy(b4, b6, Ipv4Lookup::Fast),
    ];
    // Two independent random sets of the same shape: how much they share is printed, so
    // the figure is not read as a swap between disjoint policies.
    let shared4 = {
        let a: std::collections::BTreeSet<_> = a4.iter().collect();
        b4.iter().filter(|n| a.contains(n)).count()
    };
    println!(
        "shield_policy/swap: the two policies share {shared4} of {} IPv4 prefixes",
        a4.len()
    );
    record_one(
        "shield_policy/swap/shared_prefixes",
        Unit::Count,
        shared4 as f64,
    );
    let bench = BenchShield::with_policy("swap", &policies[0]);
    // Kernel memory of a Shield holding 1M IPv4 + 100k IPv6 prefixes, map by map (the
    // kernel's memlock accounting, as `status` reports it).
    let status = bench
        .shield
        .status()
        .unwrap_or_else(|e| panic!("status: {e}"));
    assert_eq!(status.rules.len(), 3, "the bench set and two single rules");
    for map in &status.memory {
        record_one(
            &format!("shield_memory/{}", map.name),
            Unit::Bytes,
            map.bytes as f64,
        );
    }
    record_one(
        "shield_memory/total",
        Unit::Bytes,
        status.map_bytes() as f64,
    );
    let mut turn = 0usize;
    group.bench_function(BenchmarkId::new("swap", count), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                turn += 1;
                let start = Instant::now();
                let report = bench
                    .shield
                    .replace(&policies[turn % 2])
                    .unwrap_or_else(|e| panic!("swap: {e}"));
                total += start.elapsed();
                assert_eq!(report.in_place, 0, "a whole switch, not edits in place");
                assert_eq!(report.prefixes.0, policies[turn % 2].ipv4_prefixes());
            }
            total
        })
    });

    for (name, net) in [
        ("edit_one_v4", "198.51.100.77/32"),
        ("edit_one_v6", "2001:db8:77::/48"),
    ] {
        let net: IpNetwork = net.parse().unwrap_or_else(|e| panic!("{e}"));
        let mut present = false;
        group.bench_function(BenchmarkId::new(name, count), |b| {
            b.iter(|| {
                present = !present;
                let done = if present {
                    bench.shield.insert_rule(net, 9_999, Action::Deny)
                } else {
                    bench
                        .shield
                        .remove_rule(net)
                        .map(|removed| assert!(removed, "{name}: the rule was there"))
                };
                done.unwrap_or_else(|e| panic!("{name}: {e}"));
            })
        });
    }

    // A feed update: the same set with 10 IPv4 prefixes gone and 10 others new, applied
    // by `replace` as edits in place (no switch).
    // The new ones come from 192.0.2.0/24, which no generated prefix covers.
    let mut updated: Vec<ipnetwork::Ipv4Network> = a4[10..].to_vec();
    updated.extend((1..=10u8).filter_map(|i| {
        ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::new(192, 0, 2, i), 32).ok()
    }));
    let updates = [
        deny_policy(a4, a6, Ipv4Lookup::Fast),
        deny_policy(&updated, a6, Ipv4Lookup::Fast),
    ];
    let feed = BenchShield::with_policy("feedupdate", &updates[0]);
    let mut turn = 0usize;
    group.bench_function(BenchmarkId::new("feed_update_20_prefixes", count), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                turn += 1;
                let start = Instant::now();
                let report = feed
                    .shield
                    .replace(&updates[turn % 2])
                    .unwrap_or_else(|e| panic!("update: {e}"));
                total += start.elapsed();
                assert_eq!(report.in_place, 20, "applied in place");
            }
            total
        })
    });
    drop(feed);

    // The same IPv6 feed update: 10 IPv6 prefixes of the set gone, 10 new from
    // 2001:db8::/32 (no generated prefix is there), on the IPv6 fast path: each
    // first-level block (a /22 there) it touches is compiled again into unused records.
    let mut updated6: Vec<ipnetwork::Ipv6Network> = a6[10..].to_vec();
    updated6.extend((1..=10u16).filter_map(|i| {
        ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0), 48)
            .ok()
    }));
    let updates6 = [
        deny_policy(a4, a6, Ipv4Lookup::Fast),
        deny_policy(a4, &updated6, Ipv4Lookup::Fast),
    ];
    let feed6 = BenchShield::with_policy("feedupdate6", &updates6[0]);
    // Each bench starts from its loaded policy: the first update is the changed one.
    // Edits write new regions into unused records and leave the old ones until the next
    // rebuild; when the records run out, an update is a rebuild and a switch (which
    // compacts the table), counted in `rebuilds` and included in the time.
    let mut turn6 = 0usize;
    let mut rebuilds6 = 0usize;
    group.bench_function(BenchmarkId::new("feed_update_20_v6", count), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                turn6 += 1;
                let start = Instant::now();
                let report = feed6
                    .shield
                    .replace(&updates6[turn6 % 2])
                    .unwrap_or_else(|e| panic!("update: {e}"));
                total += start.elapsed();
                match report.in_place {
                    20 => {}
                    0 => rebuilds6 += 1,
                    other => panic!("{other} edits in place: 20 or a rebuild"),
                }
                assert_eq!(report.ipv6_path.as_str(), "fast");
            }
            total
        })
    });
    drop(feed6);
    record_one(
        "shield_policy/feed_update_20_v6/turns",
        Unit::Count,
        turn6 as f64,
    );
    record_one(
        "shield_policy/feed_update_20_v6/rebuilds",
        Unit::Count,
        rebuilds6 as f64,
    );

    // Feed updates of 20 IPv4 prefixes on smaller policies (IPv4 only).
    for small in [1_000usize, 100_000] {
        let base = table_v4(small, 42, &avoided());
        let mut changed: Vec<ipnetwork::Ipv4Network> = base[10..].to_vec();
        changed.extend((1..=10u8).filter_map(|i| {
            ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::new(192, 0, 2, i), 32).ok()
        }));
        let pair = [
            deny_policy(&base, &[], Ipv4Lookup::Fast),
            deny_policy(&changed, &[], Ipv4Lookup::Fast),
        ];
        let shield = BenchShield::with_policy(&format!("feedupdate{small}"), &pair[0]);
        let mut turn = 0usize;
        group.bench_function(BenchmarkId::new("feed_update_20_prefixes", small), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    turn += 1;
                    let start = Instant::now();
                    let report = shield
                        .shield
                        .replace(&pair[turn % 2])
                        .unwrap_or_else(|e| panic!("update: {e}"));
                    total += start.elapsed();
                    assert_eq!(report.in_place, 20, "applied in place");
                }
                total
            })
        });
    }
    group.finish();
}

/// A feed file written as a feed writer should: a temporary file renamed over it.
fn write_feed(path: &std::path::Path, lines: &[String]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("{e}"));
}

/// The daemon's reload path on a policy file with a 1M-prefix feed: compile the file (with
/// the daemon's source cache, or without) and `replace`; the feed files change between
/// iterations, outside the timed part.
fn reload(c: &mut Criterion) {
    use ironclad_policy::config::compile_file_cached;
    use ironclad_policy::sources::SourceCache;
    let mut group = c.benchmark_group("shield_reload");
    group.sample_size(10);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let big: Vec<String> = ironclad_testing::rules::blocklist_v4(1_000_000, 31, &avoided())
        .iter()
        .map(ToString::to_string)
        .collect();
    // The big feed's second version: 10 lines gone and 10 hosts of 192.0.2.0/24 new,
    // spread over the file (one of each every 100,000 lines).
    let mut big2: Vec<String> = Vec::with_capacity(big.len());
    for (i, line) in big.iter().enumerate() {
        if i % 100_000 == 50_000 {
            big2.push(format!("192.0.2.{}", i / 100_000 + 1));
        }
        if i % 100_000 != 0 {
            big2.push(line.clone());
        }
    }
    let small =
        |v: usize| -> Vec<String> { (1..=50).map(|i| format!("198.51.100.{}", i + v)).collect() };
    let (big_path, small_path) = (dir.path().join("big.txt"), dir.path().join("small.txt"));
    write_feed(&big_path, &big);
    write_feed(&small_path, &small(0));
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "shield:\n  deny_feeds:\n    - { path: big.txt, format: plain }\n    - { path: small.txt, format: plain }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let compile = |cache: Option<&SourceCache>| {
        compile_file_cached(&policy, cache)
            .unwrap_or_else(|e| panic!("{e}"))
            .shield
            .unwrap_or_else(|| panic!("a shield section"))
    };
    let cache = SourceCache::new();
    let first = compile(Some(&cache));
    let prefixes = first.ipv4_prefixes();
    let bench = BenchShield::with_policy("reload", &first);
    drop(first);
    // Which version of each feed is on disk (the first write of each bench is the other).
    let (mut big_v2, mut small_v2) = (false, false);
    for (id, cached) in [
        ("small_feed_changed", true),
        ("small_feed_changed_uncached", false),
        ("big_feed_changed", true),
    ] {
        group.bench_function(BenchmarkId::new(id, 1_000_000), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if id == "big_feed_changed" {
                        big_v2 = !big_v2;
                        write_feed(&big_path, if big_v2 { &big2 } else { &big });
                    } else {
                        small_v2 = !small_v2;
                        write_feed(&small_path, &small(usize::from(small_v2)));
                    }
                    let reads = cache.reads();
                    let start = Instant::now();
                    let policy = compile(cached.then_some(&cache));
                    let report = bench
                        .shield
                        .replace(&policy)
                        .unwrap_or_else(|e| panic!("reload: {e}"));
                    total += start.elapsed();
                    assert!(report.in_place > 0, "{id}: applied in place");
                    if cached {
                        // The changed feed was read as its changed lines, not whole.
                        let now = cache.reads();
                        // (The other feed may have changed since it was last read
                        // with the cache, and be read by its lines too.)
                        assert!(
                            now.by_changes > reads.by_changes && now.whole == reads.whole,
                            "{id}: {reads:?} then {now:?}"
                        );
                    }
                    assert!(
                        policy.ipv4_prefixes() + 30 >= prefixes,
                        "{id}: the whole policy"
                    );
                }
                total
            })
        });
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
    let bench = BenchShield::with_policy("benchupd", &deny_policy(&[], &[], Ipv4Lookup::Fast));
    let map = bench
        .shield
        .object()
        .map("ic_shield_config")
        .unwrap_or_else(|e| panic!("{e}"));
    let value = bench
        .shield
        .config()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    c.bench_function("map_update/config", |b| {
        b.iter(|| map.update(&0u32.to_ne_bytes(), &value))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = per_packet, replay, policy, reload, nftables::veth_drop, audit, map_update, summary
}
criterion_main!(benches);
