//! The stateful firewall's per-packet cost in the kernel (BPF_PROG_TEST_RUN of its tcx
//! ingress program), paired with the empty tcx program (`ic_baseline_tc`) round by
//! round: 15 rounds of 1M repeats each, minimums, so noise from other work cancels out.
//!
//! - `firewall_summary/established`: an ACK of a TCP connection in the table (opened by
//!   an outbound SYN, answered, acknowledged): the path every packet of a live
//!   connection takes.
//! - `firewall_summary/new_miss/N`: an inbound SYN that N rules are evaluated for, none
//!   matches, and `default_inbound: drop` drops (nothing is remembered, so every run
//!   evaluates the rules again). The rules are what an operator writes: `accept tcp
//!   dport P from S/24`, S spread over 10.0.0.0/8, P over 1000-5999.
//! - `firewall_summary/stateless_last/N`: the same rules plus one last rule the packet
//!   matches, connection tracking off: every run finds the N+1-th rule.
//!
//! Each row is recorded as `firewall_summary/ID` and `firewall_summary/ID/empty`.
//!
//! `firewall_policy/classify_compile/N`: the same N rules compiled into the classifier
//! (user space: what `check` and a reload cost before any map is written).
//!
//! `firewall_table/*/N`: the connection table read with N connections in it, in
//! batches (a count, the table, the sweep of idle connections) and by the walk over its
//! keys that the batches replaced (see [`table_reads`]).
//!
//! `syn_cookie/answer_v4|v6`: the SYN-flood defence's XDP program (`ic_fw_syn`)
//! answering a SYN as Linux sends it (40-byte header: MSS, SACK, timestamps, window
//! scale) to a protected port with a cookie SYN-ACK. The program rewrites its frame,
//! so a repeated run would see its own answer: each sample is the minimum of 2,000
//! single runs, paired with as many of `ic_baseline_xdp_tx`, which returns XDP_TX
//! without touching the frame (`syn_cookie/ID/empty`). The difference is the defence's
//! own work (parsing, the rule and table checks, the kernel's cookie, the rewrite and
//! checksums).
//!
//! `firewall_limits/*`: the rate limits on new inbound connections (`firewall.limits`)
//! in the tcx ingress program. `admitted_none|admitted_all`: a SYN from a new source
//! that the rules admit, opening a connection, with no limit and with all four set
//! (generous: every bucket has tokens; the source's and subnet's buckets are new, as
//! under a flood from many sources). Each connection is new, so each sample is the
//! minimum of 2,000 single runs over distinct SYNs, paired with as many runs of the
//! empty tcx program. `refused_<kind>`: a SYN refused by a spent limit of that kind
//! (single runs the same way); `refused_default`: a SYN dropped by the default policy
//! instead (no rule admits it), the cheapest refusal there is.

use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "support/fw_veth.rs"]
mod fw_veth;
#[path = "support/nat_veth.rs"]
mod nat_veth;
#[path = "support/veth.rs"]
mod veth;
use ironclad_benches::figures::{record, Unit};
use ironclad_benches::Baseline;
use ironclad_bpf::{Firewall, FirewallSettings, Loader};
use ironclad_core::abi::FwTotal;
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{Classifier, Direction, FwAction, FwProto, FwRule};
use ironclad_testing::{frames, BpffsDir};

const ROUNDS: usize = 15;
const REPEAT: u32 = 1_000_000;
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// tcx verdicts as the program returns them.
const PASS: i32 = -1;
const DROP: i32 = 2;
/// The XDP verdict of an answered SYN.
const XDP_TX: i32 = 3;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// `count` rules `accept tcp dport P from S/24`, none of which covers 192.0.2.0/24 or
/// port 443.
fn rules(count: usize) -> Vec<FwRule> {
    (0..count)
        .map(|i| {
            let mut r = FwRule::new(
                Origin::field(format!("firewall.rules[{i}]")),
                Direction::In,
                FwProto::Tcp,
            );
            let n = i as u32;
            r.src = vec![format!("10.{}.{}.0/24", (n >> 8) & 0xff, n & 0xff)
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))];
            let port = 1000 + (n % 5000) as u16;
            r.dport = vec![(port, port)];
            r.action = FwAction::Accept;
            r
        })
        .collect()
}

struct Bench {
    firewall: Firewall,
    _loader: Loader,
    _pins: BpffsDir,
}

impl Bench {
    fn new(tag: &str) -> Self {
        let pins = BpffsDir::new(tag).unwrap_or_else(|e| panic!("{e}"));
        let loader = Loader::builder()
            .pin_root(pins.path())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let firewall = Firewall::load(&loader).unwrap_or_else(|e| panic!("{e}"));
        Self {
            firewall,
            _loader: loader,
            _pins: pins,
        }
    }

    /// A firewall that admits inbound TCP to `port` only.
    fn accepting(tag: &str, port: u16) -> Self {
        let bench = Self::new(tag);
        let mut accept = FwRule::new(
            Origin::field("firewall.rules[0]"),
            Direction::In,
            FwProto::Tcp,
        );
        accept.dport = vec![(port, port)];
        bench
            .firewall
            .apply(&FirewallSettings::default().drop_inbound(true), &[accept])
            .unwrap_or_else(|e| panic!("{e}"));
        bench
    }

    /// A firewall that admits inbound TCP to `port` only and protects it with SYN
    /// cookies (always).
    fn protecting(tag: &str, port: u16) -> Self {
        let bench = Self::accepting(tag, port);
        bench
            .firewall
            .set_syn_flood(&ironclad_bpf::SynFloodSettings::always([port]))
            .unwrap_or_else(|e| panic!("{e}"));
        bench
    }

    /// Opens a TCP connection from `host:sport` to `peer:dport` the way the host
    /// does: SYN out, SYN-ACK in, ACK out (each passed).
    fn handshake(&self, host: IpAddr, peer: IpAddr, sport: u16, dport: u16) {
        self.run(
            "ic_fw_out",
            &frames::l4(host, peer, 6, sport, dport, 0x02),
            1,
            PASS,
        );
        self.run(
            "ic_fw_in",
            &frames::l4(peer, host, 6, dport, sport, 0x12),
            1,
            PASS,
        );
        self.run(
            "ic_fw_out",
            &frames::l4(host, peer, 6, sport, dport, 0x10),
            1,
            PASS,
        );
    }

    fn run(&self, program: &str, frame: &[u8], repeat: u32, want: i32) -> Duration {
        let run = self
            .firewall
            .object()
            .test_run(program, frame, repeat)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        assert_eq!(run.return_value as i32, want, "{program}: verdict");
        run.per_run
    }
}

fn summary(_: &mut Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    let repeat = ironclad_benches::repeats(REPEAT);
    let baseline = Baseline::load();
    let paired = |id: &str, frame: &[u8], run: &dyn Fn() -> Duration| {
        let (mut empty, mut config) = (Vec::new(), Vec::new());
        for _ in 0..round_count {
            empty.push(baseline.run_tc(frame, repeat));
            config.push(run());
        }
        let ns = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as f64).collect::<Vec<_>>();
        record(&format!("firewall_summary/{id}"), Unit::Ns, &ns(&config));
        record(
            &format!("firewall_summary/{id}/empty"),
            Unit::Ns,
            &ns(&empty),
        );
        let min = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
        (min(&empty), min(&config))
    };
    let mut rows: Vec<(String, Duration, Duration)> = Vec::new();
    let (host, peer) = (ip("192.0.2.1"), ip("192.0.2.2"));

    // An established connection: SYN out, SYN-ACK in, ACK out; then ACKs in.
    let bench = Bench::new("fwbench-est");
    bench
        .firewall
        .configure(&FirewallSettings::default().drop_inbound(true))
        .unwrap_or_else(|e| panic!("{e}"));
    bench.handshake(host, peer, 40000, 443);
    let ack = frames::l4(peer, host, 6, 443, 40000, 0x10);
    let before = bench
        .firewall
        .total(FwTotal::Established)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets;
    let (e, c) = paired("established", &ack, &|| {
        bench.run("ic_fw_in", &ack, repeat, PASS)
    });
    let after = bench
        .firewall
        .total(FwTotal::Established)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets;
    assert!(
        after - before >= u64::from(repeat) * round_count as u64,
        "every timed packet took the established path"
    );
    rows.push(("established".into(), e, c));

    // The IDS on, selecting port 80 only: the same established connection (port 443)
    // is not inspected, and costs one more flag test. A new connection opened after
    // the selection is on, so that the table holds it as it would.
    let ids_rules = ironclad_policy::ids::RuleSet::new(
        ironclad_policy::ids::parse(
            "alert tcp any any -> any 80 (msg:\"x\"; content:\"evil\"; sid:1;)",
            std::path::Path::new("bench.rules"),
            &ironclad_policy::ids::Vars::with_defaults(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    bench
        .firewall
        .set_ids(
            &ironclad_bpf::IdsSettings::default(),
            &ids_rules.selection(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let open = |port: u16| bench.handshake(host, peer, 40001, port);
    open(443);
    let ack_443 = frames::l4(peer, host, 6, 443, 40001, 0x10);
    let (e, c) = paired("established_ids_unselected", &ack_443, &|| {
        bench.run("ic_fw_in", &ack_443, repeat, PASS)
    });
    rows.push(("established_ids_unselected".into(), e, c));
    // An inspected connection (port 80) past its depth: its packets look up the IDS
    // entry (blocked?) and hand nothing over. The payload is 100 bytes; the first
    // 4096 bytes each way were handed over in the first runs.
    open(80);
    let mut data = frames::l4(peer, host, 6, 80, 40001, 0x18);
    data.extend_from_slice(&[b'a'; 100]);
    let total = u16::try_from(data.len() - 14).unwrap_or(u16::MAX);
    data[16..18].copy_from_slice(&total.to_be_bytes());
    bench.run("ic_fw_in", &data, 100, PASS);
    let snippets = bench
        .firewall
        .total(FwTotal::IdsSnippets)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets;
    assert_eq!(
        snippets, 41,
        "4096 bytes of 100-byte packets handed over, no more"
    );
    let (e, c) = paired("established_ids_past_depth", &data, &|| {
        bench.run("ic_fw_in", &data, repeat, PASS)
    });
    rows.push(("established_ids_past_depth".into(), e, c));
    drop(bench);

    let syn = frames::l4(ip("192.0.2.7"), host, 6, 40000, 443, 0x02);
    for count in SIZES {
        let bench = Bench::new(&format!("fwbench-{count}"));
        let mut set = rules(count);
        bench
            .firewall
            .apply(&FirewallSettings::default().drop_inbound(true), &set)
            .unwrap_or_else(|e| panic!("{e}"));
        let id = format!("new_miss/{count}");
        let (e, c) = paired(&id, &syn, &|| bench.run("ic_fw_in", &syn, repeat, DROP));
        rows.push((id, e, c));

        let mut last = FwRule::new(
            Origin::field("firewall.rules[last]"),
            Direction::In,
            FwProto::Tcp,
        );
        last.src = vec!["192.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}"))];
        last.dport = vec![(443, 443)];
        set.push(last);
        bench
            .firewall
            .apply(
                &FirewallSettings::default()
                    .drop_inbound(true)
                    .stateful(false),
                &set,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let id = format!("stateless_last/{count}");
        let (e, c) = paired(&id, &syn, &|| bench.run("ic_fw_in", &syn, repeat, PASS));
        rows.push((id, e, c));
    }

    println!(
        "\nfirewall per packet (tcx ingress, paired minimums of {round_count} rounds x {repeat}):"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>10}",
        "case", "empty ns", "ns", "over"
    );
    for (id, e, c) in rows {
        println!(
            "{id:<24} {:>10} {:>10} {:>10}",
            e.as_nanos(),
            c.as_nanos(),
            c.as_nanos().saturating_sub(e.as_nanos())
        );
    }
}

/// The SYN-flood defence's cost per SYN answered.
fn syn_cookies(_: &mut Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    use ironclad_testing::flood;

    /// Single runs per round; each round's minimum is its sample.
    const CALLS: usize = 2_000;
    let bench = Bench::protecting("fwbench-syn", 443);
    let baseline = Baseline::load();
    let mut rng = ironclad_testing::rules::Rng::new(3);
    let mut rows = Vec::new();
    for (id, src, dst) in [
        ("answer_v4", ip("10.231.0.2"), ip("10.231.0.1")),
        ("answer_v6", ip("fd00:231::2"), ip("fd00:231::1")),
    ] {
        let mut seg = [0u8; 80];
        let len = flood::syn_segment(&mut seg, src, dst, 443, &mut rng);
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        frame.extend_from_slice(if src.is_ipv6() {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        });
        frame.extend_from_slice(&seg[..len]);
        let before = bench
            .firewall
            .total(FwTotal::SynCookies)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        let (mut empty, mut answered) = (Vec::new(), Vec::new());
        for _ in 0..round_count {
            let (mut e, mut a) = (Duration::MAX, Duration::MAX);
            for _ in 0..CALLS {
                e = e.min(baseline.run_tx(&frame));
                a = a.min(bench.run("ic_fw_syn", &frame, 1, XDP_TX));
            }
            empty.push(e);
            answered.push(a);
        }
        let after = bench
            .firewall
            .total(FwTotal::SynCookies)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        assert_eq!(
            after - before,
            (round_count * CALLS) as u64,
            "{id}: every run answered with a cookie"
        );
        let ns = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as f64).collect::<Vec<_>>();
        record(&format!("syn_cookie/{id}"), Unit::Ns, &ns(&answered));
        record(&format!("syn_cookie/{id}/empty"), Unit::Ns, &ns(&empty));
        let min = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
        rows.push((id, min(&empty), min(&answered)));
    }
    println!(
        "\nSYN cookies answered in XDP (BPF_PROG_TEST_RUN, minimum of {CALLS} single runs, {round_count} rounds):"
    );
    println!(
        "{:<12} {:>12} {:>10} {:>10}",
        "case", "XDP_TX ns", "ns", "over"
    );
    for (id, e, c) in rows {
        println!(
            "{id:<12} {:>12} {:>10} {:>10}",
            e.as_nanos(),
            c.as_nanos(),
            c.as_nanos().saturating_sub(e.as_nanos())
        );
    }
}

/// The rate limits' cost: admitting new connections with and without them, and
/// refusing one with a spent limit of each kind.
fn limits(_: &mut Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    use ironclad_bpf::{FwLimitKind, LimitRate, LimitSettings};

    /// Single runs per round; each round's minimum is its sample.
    const CALLS: usize = 2_000;
    let baseline = Baseline::load();
    let bench = Bench::accepting("fwbench-lim", 443);
    let host = ip("192.0.2.1");
    let ns = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as f64).collect::<Vec<_>>();
    let min = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
    let mut rows = Vec::new();

    // Admitted: a new source each run (10.s.s.s), so each run opens a connection.
    let generous = LimitRate::new(u32::MAX, u32::MAX);
    let mut next = 0u32;
    for (id, limits) in [
        ("admitted_none", LimitSettings::default()),
        (
            "admitted_all",
            LimitSettings::default()
                .per_source(generous)
                .per_subnet(generous, 24, 64)
                .per_port(generous)
                .per_interface(generous),
        ),
    ] {
        bench
            .firewall
            .set_limits(&limits)
            .unwrap_or_else(|e| panic!("{e}"));
        let opened = bench
            .firewall
            .total(FwTotal::NewAccepted)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        let (mut empty, mut timed) = (Vec::new(), Vec::new());
        for _ in 0..round_count {
            let (mut e, mut t) = (Duration::MAX, Duration::MAX);
            for _ in 0..CALLS {
                next += 1;
                let src = IpAddr::from([10, (next >> 16) as u8, (next >> 8) as u8, next as u8]);
                let syn = frames::l4(src, host, 6, 40000, 443, 0x02);
                e = e.min(baseline.run_tc(&syn, 1));
                t = t.min(bench.run("ic_fw_in", &syn, 1, PASS));
            }
            empty.push(e);
            timed.push(t);
        }
        let after = bench
            .firewall
            .total(FwTotal::NewAccepted)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        assert_eq!(
            after - opened,
            (round_count * CALLS) as u64,
            "{id}: every run opened a connection"
        );
        record(&format!("firewall_limits/{id}"), Unit::Ns, &ns(&timed));
        record(
            &format!("firewall_limits/{id}/empty"),
            Unit::Ns,
            &ns(&empty),
        );
        rows.push((id.to_string(), min(&empty), min(&timed)));
    }

    // Refused: one spent limit at a time. A SYN from another port each run (a
    // refused SYN leaves nothing behind, but one the 1/s refill lets through would
    // open a connection and take the established path from then on).
    let spent = LimitRate::new(1, 1);
    let single = |bench: &Bench, sport: &mut u16, dport: u16| {
        let (mut e, mut t) = (Duration::MAX, Duration::MAX);
        for _ in 0..CALLS {
            *sport = sport.wrapping_add(1).max(1024);
            let syn = frames::l4(ip("10.250.0.9"), host, 6, *sport, dport, 0x02);
            e = e.min(baseline.run_tc(&syn, 1));
            let run = bench
                .firewall
                .object()
                .test_run("ic_fw_in", &syn, 1)
                .unwrap_or_else(|e| panic!("test run: {e}"));
            t = t.min(run.per_run);
        }
        (e, t)
    };
    let mut sport = 1024u16;
    for kind in FwLimitKind::ALL {
        let limits = match kind {
            FwLimitKind::Source => LimitSettings::default().per_source(spent),
            FwLimitKind::Subnet => LimitSettings::default().per_subnet(spent, 24, 64),
            FwLimitKind::Port => LimitSettings::default().per_port(spent),
            _ => LimitSettings::default().per_interface(spent),
        };
        // A fresh table and buckets for each kind; a first SYN spends the one token.
        let bench = Bench::accepting(&format!("fwbench-lim-{}", kind.name()), 443);
        bench
            .firewall
            .set_limits(&limits)
            .unwrap_or_else(|e| panic!("{e}"));
        bench.run(
            "ic_fw_in",
            &frames::l4(ip("10.250.0.9"), host, 6, 1000, 443, 0x02),
            1,
            PASS,
        );
        let id = format!("refused_{}", kind.name());
        let (mut empty, mut timed) = (Vec::new(), Vec::new());
        for _ in 0..round_count {
            let (e, t) = single(&bench, &mut sport, 443);
            empty.push(e);
            timed.push(t);
        }
        let refused = bench
            .firewall
            .total(kind.total())
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        // The refill lets about one a second through.
        assert!(
            refused + 30 >= (round_count * CALLS) as u64,
            "{id}: the timed runs were refused by the limit ({refused})"
        );
        record(&format!("firewall_limits/{id}"), Unit::Ns, &ns(&timed));
        record(
            &format!("firewall_limits/{id}/empty"),
            Unit::Ns,
            &ns(&empty),
        );
        rows.push((id, min(&empty), min(&timed)));
    }
    // The default policy's drop of a SYN no rule admits.
    let dropped = bench
        .firewall
        .total(FwTotal::Dropped)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets;
    let (mut empty, mut timed) = (Vec::new(), Vec::new());
    for _ in 0..round_count {
        let (e, t) = single(&bench, &mut sport, 444);
        empty.push(e);
        timed.push(t);
    }
    let dropped = bench
        .firewall
        .total(FwTotal::Dropped)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets
        - dropped;
    assert_eq!(dropped, (round_count * CALLS) as u64, "refused_default");
    record("firewall_limits/refused_default", Unit::Ns, &ns(&timed));
    record(
        "firewall_limits/refused_default/empty",
        Unit::Ns,
        &ns(&empty),
    );
    rows.push(("refused_default".to_string(), min(&empty), min(&timed)));

    println!("\nrate limits on new connections (tcx ingress, paired minimums):");
    println!(
        "{:<20} {:>10} {:>10} {:>10}",
        "case", "empty ns", "ns", "over"
    );
    for (id, e, c) in rows {
        println!(
            "{id:<20} {:>10} {:>10} {:>10}",
            e.as_nanos(),
            c.as_nanos(),
            c.as_nanos().saturating_sub(e.as_nanos())
        );
    }
}

/// SyncookiesSent of this namespace's TCP (`/proc/net/netstat`, TcpExt).
fn kernel_syncookies_sent() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_else(|e| panic!("{e}"));
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next(), lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no TcpExt in /proc/net/netstat");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "SyncookiesSent")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no SyncookiesSent"))
}

/// A spoofed SYN flood at a listener behind a veth, as fast as one sender thread in the
/// namespace goes: answered by the kernel's own SYN cookies (no firewall), by the
/// firewall's in XDP, and (from one /24) refused by a per-subnet limit. Records SYNs
/// sent and answered (refused) per second, per round.
fn syn_flood(_: &mut Criterion) {
    use ironclad_testing::flood::Flood;
    use ironclad_testing::{run, NetNs, VethPair};

    const FLOOD_ROUNDS: usize = 3;
    const FOR: Duration = Duration::from_millis(1500);
    let ns = NetNs::new("fwsynfl").unwrap_or_else(|e| panic!("{e}"));
    let pair = VethPair::new(
        &ns,
        &["10.231.0.1/24", "fd00:231::1/64"],
        &["10.231.0.2/24", "fd00:231::2/64"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The namespace's end takes what XDP_TX sends it only with an XDP program of its
    // own (docs/firewall.md); the spoofed sources are routed back into the namespace.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let obj = dir.path().join("pass.bpf.o");
    std::fs::write(&obj, ironclad_bpf::object::baseline().elf()).unwrap_or_else(|e| panic!("{e}"));
    let obj = obj.display().to_string();
    ns.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        pair.peer(),
        "xdp",
        "obj",
        &obj,
        "sec",
        "xdp",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    run(
        "ip",
        &["route", "add", "10.232.0.0/16", "via", "10.231.0.2"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    struct Route;
    impl Drop for Route {
        fn drop(&mut self) {
            let _ = run("ip", &["route", "del", "10.232.0.0/16"]);
        }
    }
    let _route = Route;
    let listener = std::net::TcpListener::bind("10.231.0.1:7443").unwrap_or_else(|e| panic!("{e}"));
    let target = ip("10.231.0.1");
    let spoofed = ip("10.232.0.0");

    let bench = Bench::protecting("fwbench-synfl", 7443);
    // The same rules without cookies, and a per-subnet limit of 100 new connections a
    // second.
    let limited = Bench::protecting("fwbench-synlim", 7443);
    limited
        .firewall
        .set_syn_flood(&ironclad_bpf::SynFloodSettings::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let subnet_limit = ironclad_bpf::LimitSettings::default().per_subnet(
        ironclad_bpf::LimitRate::new(100, 100),
        24,
        64,
    );

    let mut figures: Vec<(&str, Vec<f64>)> = [
        "syn_flood/kernel/sent_per_s",
        "syn_flood/kernel/answered_per_s",
        "syn_flood/xdp/sent_per_s",
        "syn_flood/xdp/answered_per_s",
        "syn_flood/limit/sent_per_s",
        "syn_flood/limit/refused_per_s",
    ]
    .into_iter()
    .map(|id| (id, Vec::new()))
    .collect();
    for round in 0..FLOOD_ROUNDS {
        // The kernel alone (tcp_syncookies=1, this machine's default).
        let before = kernel_syncookies_sent();
        let flood = Flood::start(&ns, spoofed, 16, target, 7443, round as u64)
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(FOR);
        let report = flood.stop().unwrap_or_else(|e| panic!("{e}"));
        let answered = kernel_syncookies_sent() - before;
        figures[0].1.push(report.rate());
        figures[1]
            .1
            .push(answered as f64 / report.elapsed.as_secs_f64());

        // The firewall's cookies in XDP.
        let tcx = bench
            .firewall
            .attach(pair.host())
            .unwrap_or_else(|e| panic!("{e}"));
        let xdp = bench
            .firewall
            .attach_syn(pair.host())
            .unwrap_or_else(|e| panic!("{e}"));
        let before = bench
            .firewall
            .total(FwTotal::SynCookies)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        let flood = Flood::start(&ns, spoofed, 16, target, 7443, 100 + round as u64)
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(FOR);
        let report = flood.stop().unwrap_or_else(|e| panic!("{e}"));
        let answered = bench
            .firewall
            .total(FwTotal::SynCookies)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets
            - before;
        drop(xdp);
        drop(tcx);
        figures[2].1.push(report.rate());
        figures[3]
            .1
            .push(answered as f64 / report.elapsed.as_secs_f64());

        // No cookies, a per-subnet limit, the flood from one /24: refused at tcx.
        limited
            .firewall
            .set_limits(&subnet_limit)
            .unwrap_or_else(|e| panic!("{e}"));
        let tcx = limited
            .firewall
            .attach(pair.host())
            .unwrap_or_else(|e| panic!("{e}"));
        let before = limited
            .firewall
            .total(FwTotal::LimitSubnet)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        let flood = Flood::start(&ns, ip("10.232.7.0"), 8, target, 7443, 200 + round as u64)
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(FOR);
        let report = flood.stop().unwrap_or_else(|e| panic!("{e}"));
        let refused = limited
            .firewall
            .total(FwTotal::LimitSubnet)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets
            - before;
        drop(tcx);
        figures[4].1.push(report.rate());
        figures[5]
            .1
            .push(refused as f64 / report.elapsed.as_secs_f64());
    }
    drop(listener);
    println!(
        "\nspoofed SYN flood on a veth (one sender thread, {FLOOD_ROUNDS} rounds of {FOR:?}):"
    );
    for (id, v) in &figures {
        record(id, Unit::Count, v);
        let best = v.iter().copied().fold(0.0, f64::max);
        println!("{id:<34} {best:>12.0} /s (best round)");
    }
}

/// `firewall_policy/classify_compile/N`: compiling N rules (as [`rules`] writes them) into
/// the classifier's classes, what `check` and every reload of the policy do before the
/// maps are written.
fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("firewall_policy");
    group.sample_size(10);
    for count in SIZES {
        let set = rules(count);
        group.bench_function(format!("classify_compile/{count}"), |b| {
            b.iter(|| Classifier::compile(&set))
        });
    }
    group.finish();
}

/// `firewall_table/*/N`: reading the connection table when it holds N connections
/// (outbound SYNs run through `ic_fw_out`, each a new entry), as the daemon does: the
/// history sampler's count and the status page's table from the pins
/// (`count_batched`, `read_batched`: BPF_MAP_LOOKUP_BATCH, 1,024 entries a call), the
/// sweep of idle connections every few seconds on the loaded firewall (`sweep`:
/// nothing is idle long enough, so it reads the whole table and removes nothing), and
/// the walk over the keys they replaced (`read_key_walk`: a lookup per key, two system
/// calls per entry, as libbpf-rs's `keys()` and `lookup` make it), round by round.
fn table_reads(_: &mut Criterion) {
    use libbpf_rs::{MapCore, MapFlags, MapHandle};
    let round_count = ironclad_benches::rounds(ROUNDS);
    for n in [10_000usize, 100_000] {
        let bench = Bench::new(&format!("fwbench-table-{n}"));
        bench
            .firewall
            .configure(&FirewallSettings::default().drop_inbound(true))
            .unwrap_or_else(|e| panic!("{e}"));
        let pins = bench._pins.path().to_path_buf();
        let host = ip("192.0.2.1");
        for i in 0..n {
            // Distinct peers (10.x.y.z) and ports: every SYN a new connection.
            let peer = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let sport = 1024 + (i % 60_000) as u16;
            bench.run(
                "ic_fw_out",
                &frames::l4(host, peer, 6, sport, 443, 0x02),
                1,
                PASS,
            );
        }
        let count = Firewall::connection_count_from_pins(&pins).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count, n, "the table holds every connection");
        let ct = MapHandle::from_pinned_path(pins.join(Firewall::OBJECT).join("ic_fw_ct"))
            .unwrap_or_else(|e| panic!("{e}"));
        let timed = |f: &mut dyn FnMut() -> usize| {
            let start = std::time::Instant::now();
            let got = f();
            let took = start.elapsed();
            assert_eq!(got, n, "every connection read");
            took.as_nanos() as f64
        };
        let (mut counted, mut batched, mut walked, mut swept) = (vec![], vec![], vec![], vec![]);
        for _ in 0..round_count {
            counted.push(timed(&mut || {
                Firewall::connection_count_from_pins(&pins).unwrap_or_else(|e| panic!("{e}"))
            }));
            batched.push(timed(&mut || {
                Firewall::connections_from_pins(&pins)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .len()
            }));
            walked.push(timed(&mut || {
                ct.keys()
                    .filter(|k| ct.lookup(k, MapFlags::ANY).ok().flatten().is_some())
                    .count()
            }));
            swept.push(timed(&mut || {
                let sweep = bench.firewall.expire().unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(sweep.removed, 0, "nothing idle long enough");
                n
            }));
        }
        for (id, samples) in [
            ("count_batched", &counted),
            ("read_batched", &batched),
            ("read_key_walk", &walked),
            ("sweep", &swept),
        ] {
            record(&format!("firewall_table/{id}/{n}"), Unit::Ns, samples);
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "firewall_table/{n}: count {:.1} ms, read {:.1} ms, key walk {:.1} ms ({:.1}x the batched read), sweep {:.1} ms (minimums of {round_count})",
            min(&counted) / 1e6,
            min(&batched) / 1e6,
            min(&walked) / 1e6,
            min(&walked) / min(&batched),
            min(&swept) / 1e6,
        );
    }
}

/// The IDS on the packets that hand payload over: the first payload packet of a
/// direction of an inspected connection (a 1,000-byte answer from port 80), which
/// reserves a ring-buffer record and copies the payload into it, without and with
/// the kernel's prefix check of 100 `drop` rules (contents of 4 to 16 bytes for port
/// 80: 13 lengths, one lookup each, none matching). Each run is single (the connection's
/// counters are reset before it, so every run is a first packet), paired with the
/// empty tcx program; a reader drains the ring (and matches the snippets) between
/// rounds, as the daemon's does.
fn ids_capture(_: &mut Criterion) {
    use ironclad_bpf::{EventReader, IdsMatcher, IdsSettings};
    use ironclad_events::Fanout;
    use ironclad_policy::ids::{parse, RuleSet, Vars};
    const CALLS: usize = 2_000;
    let round_count = ironclad_benches::rounds(ROUNDS);
    let baseline = Baseline::load();
    let bench = Bench::new("fwbench-ids");
    bench
        .firewall
        .configure(&FirewallSettings::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let (host, peer) = (ip("192.0.2.1"), ip("192.0.2.2"));
    let mut text =
        String::from("alert tcp any 80 -> any any (msg:\"x\"; content:\"evil\"; sid:1;)\n");
    for i in 0..100u32 {
        let len = 4 + (i % 13) as usize;
        let content: String = format!("Z{i:03}zzzzzzzzzzzzzzzz")
            .chars()
            .take(len)
            .collect();
        text.push_str(&format!(
            "drop tcp any any -> any 80 (msg:\"p\"; content:\"{content}\"; depth:{len}; sid:{};)\n",
            100 + i
        ));
    }
    let set = |t: &str| {
        RuleSet::new(
            parse(
                t,
                std::path::Path::new("bench.rules"),
                &Vars::with_defaults(),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let rules = set(&text);
    assert_eq!(
        rules.kernel_prefixes().len(),
        200,
        "100 rules, both directions"
    );
    let fanout = std::sync::Arc::new(Fanout::new());
    let reader = EventReader::new(
        vec![bench
            .firewall
            .ids_source(IdsMatcher::new(set(&text), false))
            .unwrap_or_else(|e| panic!("{e}"))],
        fanout,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = IdsSettings::default();
    bench
        .firewall
        .set_ids(&settings, &rules.selection())
        .unwrap_or_else(|e| panic!("{e}"));
    bench.handshake(host, peer, 40002, 80);
    let mut data = frames::l4(peer, host, 6, 80, 40002, 0x18);
    let body: Vec<u8> = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
        .iter()
        .copied()
        .cycle()
        .take(1000)
        .collect();
    data.extend_from_slice(&body);
    let total = u16::try_from(data.len() - 14).unwrap_or(u16::MAX);
    data[16..18].copy_from_slice(&total.to_be_bytes());
    let object = bench.firewall.object();
    let flows = object.map("ic_ids_flows").unwrap_or_else(|e| panic!("{e}"));
    let key = flows
        .keys()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no inspected connection"));
    let fresh = [0u8; 16];
    let ns = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as f64).collect::<Vec<_>>();
    let min = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
    let mut rows = Vec::new();
    for (id, prefixes) in [
        ("snippet", Vec::new()),
        ("snippet_prefixes_100", rules.kernel_prefixes()),
    ] {
        bench
            .firewall
            .set_ids_with_prefixes(&settings, &rules.selection(), &prefixes)
            .unwrap_or_else(|e| panic!("{e}"));
        let before = bench
            .firewall
            .total(FwTotal::IdsSnippets)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        let (mut empty, mut timed) = (Vec::new(), Vec::new());
        for _ in 0..round_count {
            let (mut e, mut t) = (Duration::MAX, Duration::MAX);
            for _ in 0..CALLS {
                flows.update(&key, &fresh).unwrap_or_else(|e| panic!("{e}"));
                e = e.min(baseline.run_tc(&data, 1));
                t = t.min(bench.run("ic_fw_in", &data, 1, PASS));
            }
            reader.drain().unwrap_or_else(|e| panic!("{e}"));
            empty.push(e);
            timed.push(t);
        }
        let after = bench
            .firewall
            .total(FwTotal::IdsSnippets)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets;
        assert_eq!(
            after - before,
            (round_count * CALLS) as u64,
            "{id}: every run handed its payload over"
        );
        record(&format!("firewall_ids/{id}"), Unit::Ns, &ns(&timed));
        record(&format!("firewall_ids/{id}/empty"), Unit::Ns, &ns(&empty));
        rows.push((id, min(&empty), min(&timed)));
    }
    assert_eq!(
        bench
            .firewall
            .total(FwTotal::IdsLost)
            .unwrap_or_else(|e| panic!("{e}"))
            .packets,
        0,
        "the reader kept up: no snippet lost"
    );
    println!("\nIDS payload hand-over (single runs, minimum of {CALLS} per round, {round_count} rounds):");
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "case", "empty ns", "ns", "over"
    );
    for (id, e, c) in rows {
        println!(
            "{id:<22} {:>10} {:>10} {:>10}",
            e.as_nanos(),
            c.as_nanos(),
            c.as_nanos().saturating_sub(e.as_nanos())
        );
    }
}

criterion_group!(
    benches,
    compile,
    table_reads,
    summary,
    ids_capture,
    syn_cookies,
    limits,
    syn_flood,
    fw_veth::veth,
    nat_veth::nat
);
criterion_main!(benches);
