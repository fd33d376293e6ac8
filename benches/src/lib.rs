//! Shared set-up for Ironclad's benchmarks: deterministic rule sets and a loaded Shield
//! on a throwaway bpffs directory. Benchmarks run against the real kernel (root needed).
//! [`figures`] records what they measure; [`perfdoc`] renders `docs/performance.md`
//! from those figures.
//!
//! ```no_run
//! use ironclad_benches::figures::{record, Unit};
//! // Appended to $IRONCLAD_FIGURES when it is set, for `perfdoc collect`.
//! record("example/paired_min", Unit::Ns, &[36.0, 35.0, 38.0]);
//! ```

pub mod figures;
pub mod perfdoc;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ironclad_bpf::{object, LoadedObject, Loader, Shield};
use ironclad_core::abi::Action;
use ironclad_policy::error::Origin;
use ironclad_policy::shield::{compile, CompiledShield, Ipv4Lookup, PrefixSet, ShieldPolicy};
use ironclad_testing::rules::{addr_in_v4, Rng};
use ironclad_testing::{frames, BpffsDir};

pub use ironclad_testing::rules::{table_v4, table_v6};

/// The environment variable that puts the benchmarks' own paired rounds in quick mode
/// (`./dev.sh test` sets it: its benchmarks measure and never fail on timing). Every
/// figure keeps its id and meaning, from fewer rounds and repeats; `./dev.sh perf`,
/// whose figures docs/performance.md quotes, runs them in full.
pub const QUICK_ENV: &str = "IRONCLAD_BENCH_QUICK";

/// Whether [`QUICK_ENV`] is set (to anything but `0`).
pub fn quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0")
}

/// `full` rounds, or at most 5 in quick mode.
pub fn rounds(full: usize) -> usize {
    if quick() {
        full.min(5)
    } else {
        full
    }
}

/// `full` repeats (runs, calls, packets) per round, or a tenth of them in quick mode.
pub fn repeats(full: u32) -> u32 {
    if quick() {
        (full / 10).max(1)
    } else {
        full
    }
}

/// Ranges no generated rule covers: the benchmark's "miss" traffic comes from them.
pub fn avoided() -> Vec<IpNetwork> {
    ["192.0.2.0/24", "203.0.113.0/24", "2001:db8::/32"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A policy denying `v4` and `v6` as one set, plus the known hits 203.0.113.0/24 and
/// 2001:db8:bad::/48 as single rules.
pub fn deny_policy(v4: &[Ipv4Network], v6: &[Ipv6Network], lookup: Ipv4Lookup) -> CompiledShield {
    let deny: Vec<IpNetwork> = ["203.0.113.0/24", "2001:db8:bad::/48"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let prefixes: Vec<IpNetwork> = v4
        .iter()
        .map(|n| IpNetwork::V4(*n))
        .chain(v6.iter().map(|n| IpNetwork::V6(*n)))
        .collect();
    let mut policy = ShieldPolicy::from_lists(&deny, &[], &[]);
    policy.sets = vec![PrefixSet::new(
        "bench",
        Action::Deny,
        prefixes,
        Origin::field("bench"),
    )];
    policy.ipv4_lookup = lookup;
    compile(&policy).unwrap_or_else(|e| panic!("bench policy: {e:?}"))
}

/// A frame from `src` to a fixed destination (64-byte IPv4 / 84-byte IPv6 UDP).
pub fn frame_from(src: IpAddr) -> Vec<u8> {
    match src {
        IpAddr::V4(a) => frames::ipv4_udp(a, Ipv4Addr::new(192, 0, 2, 2), 18),
        IpAddr::V6(a) => frames::ipv6_udp(a, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 18),
    }
}

/// `count` distinct-source IPv4 frames: half from inside `rules` (drops), half from
/// anywhere, so a replay touches the whole table instead of one warm cache line.
pub fn replay_frames(rules: &[Ipv4Network], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let src = if i % 2 == 0 && !rules.is_empty() {
                let net = rules[rng.below(rules.len() as u64) as usize];
                addr_in_v4(&mut rng, net)
            } else {
                Ipv4Addr::from(rng.next_u64() as u32)
            };
            frame_from(IpAddr::V4(src))
        })
        .collect()
}

/// An XDP verdict a benchmark expects (the kernel's `XDP_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_DROP`: the drop path.
    Drop = 1,
    /// `XDP_PASS`: the pass path.
    Pass = 2,
}

/// A Shield loaded on its own bpffs directory (removed on drop).
pub struct BenchShield {
    /// The Shield.
    pub shield: Shield,
    _loader: Loader,
    _pins: BpffsDir,
}

impl BenchShield {
    /// Loads a Shield and applies `policy`.
    pub fn with_policy(tag: &str, policy: &CompiledShield) -> Self {
        let pins = BpffsDir::new(tag).unwrap_or_else(|e| panic!("bpffs (run as root): {e}"));
        let loader = Loader::builder()
            .pin_root(pins.path())
            .build()
            .unwrap_or_else(|e| panic!("loader: {e}"));
        let shield = Shield::load(&loader).unwrap_or_else(|e| panic!("load: {e}"));
        shield
            .replace(policy)
            .unwrap_or_else(|e| panic!("applying the policy: {e}"));
        Self {
            shield,
            _loader: loader,
            _pins: pins,
        }
    }

    /// Kernel time of one run of the Shield on `frame`, averaged over `repeat` runs,
    /// after checking the program gave the verdict the benchmark claims to measure (a
    /// "hit" that passes would time the wrong path).
    pub fn run(&self, frame: &[u8], repeat: u32, expect: Verdict) -> Duration {
        let run = self
            .shield
            .test_run(frame, repeat)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        assert_eq!(
            run.return_value, expect as u32,
            "the Shield returned {} where the benchmark measures {expect:?}",
            run.return_value
        );
        run.per_run
    }
}

/// The empty XDP program (`bpf-src/baseline.bpf.c`), loaded without pins: what the
/// BPF_PROG_TEST_RUN round trip itself costs.
pub struct Baseline {
    object: LoadedObject,
    _loader: Loader,
}

impl Baseline {
    /// Loads the baseline program.
    pub fn load() -> Self {
        let loader = Loader::builder()
            .build()
            .unwrap_or_else(|e| panic!("loader: {e}"));
        let object = loader
            .load_unpinned(object::baseline())
            .unwrap_or_else(|e| panic!("load baseline: {e}"));
        Self {
            object,
            _loader: loader,
        }
    }

    /// Kernel time of one run of the empty tcx program on `frame` (the firewall's
    /// baseline), averaged over `repeat` runs.
    pub fn run_tc(&self, frame: &[u8], repeat: u32) -> Duration {
        let run = self
            .object
            .test_run("ic_baseline_tc", frame, repeat)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        assert_eq!(run.return_value as i32, -1, "the empty tcx program passes");
        run.per_run
    }

    /// Kernel time of one run of `ic_baseline_xdp_tx` (returns XDP_TX, the frame
    /// untouched) on `frame`: the floor under an XDP program that answers frames.
    pub fn run_tx(&self, frame: &[u8]) -> Duration {
        let run = self
            .object
            .test_run("ic_baseline_xdp_tx", frame, 1)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        assert_eq!(run.return_value, 3, "XDP_TX");
        run.per_run
    }

    /// Kernel time of one run on `frame`, averaged over `repeat` runs (the empty
    /// program passes everything; checked).
    pub fn run(&self, frame: &[u8], repeat: u32) -> Duration {
        let run = self
            .object
            .test_run("ic_baseline_xdp", frame, repeat)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        assert_eq!(
            run.return_value,
            Verdict::Pass as u32,
            "the empty program passes"
        );
        run.per_run
    }
}
