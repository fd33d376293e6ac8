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

use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "support/fw_veth.rs"]
mod fw_veth;
#[path = "support/veth.rs"]
mod veth;
use ironclad_benches::figures::{record, Unit};
use ironclad_benches::Baseline;
use ironclad_bpf::{Firewall, FirewallSettings, Loader};
use ironclad_core::abi::FwTotal;
use ironclad_policy::error::Origin;
use ironclad_policy::firewall::{Direction, FwAction, FwProto, FwRule};
use ironclad_testing::{frames, BpffsDir};

const ROUNDS: usize = 15;
const REPEAT: u32 = 1_000_000;
const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// tcx verdicts as the program returns them.
const PASS: i32 = -1;
const DROP: i32 = 2;

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
    let baseline = Baseline::load();
    let paired = |id: &str, frame: &[u8], run: &dyn Fn() -> Duration| {
        let (mut empty, mut config) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            empty.push(baseline.run_tc(frame, REPEAT));
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
    bench.run(
        "ic_fw_out",
        &frames::l4(host, peer, 6, 40000, 443, 0x02),
        1,
        PASS,
    );
    bench.run(
        "ic_fw_in",
        &frames::l4(peer, host, 6, 443, 40000, 0x12),
        1,
        PASS,
    );
    bench.run(
        "ic_fw_out",
        &frames::l4(host, peer, 6, 40000, 443, 0x10),
        1,
        PASS,
    );
    let ack = frames::l4(peer, host, 6, 443, 40000, 0x10);
    let before = bench
        .firewall
        .total(FwTotal::Established)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets;
    let (e, c) = paired("established", &ack, &|| {
        bench.run("ic_fw_in", &ack, REPEAT, PASS)
    });
    let after = bench
        .firewall
        .total(FwTotal::Established)
        .unwrap_or_else(|e| panic!("{e}"))
        .packets;
    assert!(
        after - before >= u64::from(REPEAT) * ROUNDS as u64,
        "every timed packet took the established path"
    );
    rows.push(("established".into(), e, c));
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
        let (e, c) = paired(&id, &syn, &|| bench.run("ic_fw_in", &syn, REPEAT, DROP));
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
        let (e, c) = paired(&id, &syn, &|| bench.run("ic_fw_in", &syn, REPEAT, PASS));
        rows.push((id, e, c));
    }

    println!("\nfirewall per packet (tcx ingress, paired minimums of {ROUNDS} rounds x {REPEAT}):");
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

criterion_group!(benches, summary, fw_veth::veth);
criterion_main!(benches);
