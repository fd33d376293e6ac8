//! The Shield's verdicts through `BPF_PROG_TEST_RUN`: the real program in the real
//! kernel, fed hand-built frames, no interface needed.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ironclad_bpf::{Loader, Shield};
use ironclad_core::abi::{
    Action, ShieldTotal, ShieldVerdict, ACTIVE_DRY_RUN, ACTIVE_SAMPLE_MAX, ACTIVE_SAMPLE_SHIFT,
};
use ironclad_events::{Event, Fanout, Overflow, ShieldDrop};
use ironclad_policy::shield::{Mode, RateLimit};
use ironclad_testing::require_privileges;
use ironclad_testing::{frames, frames6, BpffsDir};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn shield(tag: &str) -> (BpffsDir, Shield) {
    let pins = BpffsDir::new(tag).expect("bpffs dir");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load");
    shield
        .insert_rule("198.51.100.0/24".parse().expect("cidr"), 1, Action::Deny)
        .expect("rule");
    shield
        .insert_rule("198.51.100.7/32".parse().expect("cidr"), 2, Action::Allow)
        .expect("rule");
    shield
        .insert_rule("2001:db8:bad::/48".parse().expect("cidr"), 3, Action::Deny)
        .expect("rule");
    shield
        .add_valve("198.51.100.9/32".parse().expect("cidr"))
        .expect("valve");
    (pins, shield)
}

fn v4(last: u8) -> Vec<u8> {
    frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, last),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    )
}

fn total(shield: &Shield, which: ShieldTotal) -> u64 {
    shield
        .totals()
        .expect("totals")
        .into_iter()
        .find(|(t, _)| *t == which)
        .map_or(0, |(_, c)| c.packets)
}

#[test]
fn verdicts_follow_longest_prefix_and_the_valve() {
    require_privileges!();
    let (_pins, shield) = shield("verdicts");
    let run = |frame: &[u8]| shield.test_run(frame, 1).expect("test run").return_value;

    assert_eq!(run(&v4(1)), XDP_DROP, "inside the denied /24");
    assert_eq!(run(&v4(7)), XDP_PASS, "allow /32 inside the denied /24");
    assert_eq!(run(&v4(9)), XDP_PASS, "management valve beats the deny");
    let outside = frames::ipv4_udp(Ipv4Addr::new(192, 0, 2, 5), Ipv4Addr::new(192, 0, 2, 1), 18);
    assert_eq!(run(&outside), XDP_PASS, "no rule");
    let bad6: Ipv6Addr = "2001:db8:bad::1".parse().expect("addr");
    let good6: Ipv6Addr = "2001:db8:900d::1".parse().expect("addr");
    let dst6: Ipv6Addr = "2001:db8::1".parse().expect("addr");
    assert_eq!(run(&frames::ipv6_udp(bad6, dst6, 18)), XDP_DROP);
    assert_eq!(run(&frames::ipv6_udp(good6, dst6, 18)), XDP_PASS);
    assert_eq!(
        run(&frames::with_vlan(&v4(1), 42)),
        XDP_DROP,
        "one VLAN tag"
    );
    assert_eq!(
        run(&frames::with_vlan(&frames::with_vlan(&v4(1), 42), 7)),
        XDP_DROP,
        "two VLAN tags"
    );
    assert_eq!(run(&frames::arp()), XDP_PASS, "not IP");

    assert_eq!(shield.rule_counter(1).expect("counter").packets, 3);
    assert_eq!(shield.rule_counter(2).expect("counter").packets, 1);
    assert_eq!(shield.rule_counter(3).expect("counter").packets, 1);
    assert_eq!(total(&shield, ShieldTotal::Valve), 1);
    assert_eq!(total(&shield, ShieldTotal::NonIp), 1);
    assert_eq!(total(&shield, ShieldTotal::Dropped), 4);
}

#[test]
fn dry_run_passes_everything_but_counts_would_drop() {
    require_privileges!();
    let (_pins, shield) = shield("dryrun");
    shield.set_mode(Mode::DryRun).expect("dry-run on");
    assert_eq!(shield.mode().expect("read mode"), Mode::DryRun);
    let out = shield.test_run(&v4(1), 5).expect("test run");
    assert_eq!(out.return_value, XDP_PASS);
    assert_eq!(shield.rule_counter(1).expect("counter").packets, 5);
    assert_eq!(total(&shield, ShieldTotal::WouldDrop), 5);
    assert_eq!(total(&shield, ShieldTotal::Dropped), 0);
}

#[test]
fn truncated_and_malformed_frames_pass_and_are_counted() {
    require_privileges!();
    let (_pins, shield) = shield("malformed");
    let full = v4(1);
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44; // IHL 4 (< 5)
    let mut huge_ihl = full.clone();
    huge_ihl[14] = 0x4f; // IHL 15: 60-byte header past the end of this frame
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ethernet header only", full[..14].to_vec()),
        ("truncated IPv4 header", full[..14 + 12].to_vec()),
        ("IHL below 5", bad_ihl),
        ("IHL past the end", huge_ihl[..14 + 24].to_vec()),
        (
            "truncated VLAN tag",
            frames::with_vlan(&full, 1)[..16].to_vec(),
        ),
        (
            "truncated IPv6 header",
            frames::ipv6_udp(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 0)[..14 + 30].to_vec(),
        ),
    ];
    for (what, frame) in &cases {
        let out = shield.test_run(frame, 1).expect(what);
        assert_eq!(out.return_value, XDP_PASS, "{what}");
    }
    assert_eq!(total(&shield, ShieldTotal::Malformed), cases.len() as u64);
    assert_eq!(shield.rule_counter(1).expect("counter").packets, 0);
}

/// `bpftool map lookup`/`update` of the pinned active word (as the attacker, or as an
/// older build that left its pins, would).
fn active_word(pins: &BpffsDir, set: Option<u32>) -> u32 {
    let path = pins.path().join("shield").join("ic_shield_active");
    if let Some(word) = set {
        let mut args: Vec<String> = vec!["map".into(), "update".into(), "pinned".into()];
        args.push(path.display().to_string());
        args.extend(["key", "0", "0", "0", "0", "value"].map(String::from));
        args.extend(word.to_ne_bytes().iter().map(u8::to_string));
        let out = std::process::Command::new("bpftool")
            .args(&args)
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "bpftool update: {out:?}");
    }
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(&path)
        .args(["key", "0", "0", "0", "0"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool lookup: {out:?}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let bytes: Vec<u8> = value["value"]
        .as_array()
        .expect("value bytes")
        .iter()
        .map(|b| {
            u8::from_str_radix(b.as_str().expect("hex").trim_start_matches("0x"), 16)
                .expect("hex byte")
        })
        .collect();
    u32::from_ne_bytes(bytes[..4].try_into().expect("four bytes"))
}

#[test]
fn the_mode_reaches_packets_through_the_active_word_and_survives_older_pins() {
    require_privileges!();
    let (pins, shield) = shield("modeword");
    shield.set_mode(Mode::DryRun).expect("dry-run on");
    let word = active_word(&pins, None);
    assert_ne!(
        word & ACTIVE_DRY_RUN,
        0,
        "dry-run is mirrored in the active word"
    );
    assert_eq!(
        shield.test_run(&v4(1), 1).expect("run").return_value,
        XDP_PASS
    );

    // A policy switch keeps the mode (and the rate-limit and sampling bits).
    shield
        .insert_rule("203.0.113.0/24".parse().expect("cidr"), 4, Action::Deny)
        .expect("rule");
    shield
        .replace(&compiled(
            "shield:\n  mode: dry-run\n  deny: [198.51.100.0/24, 203.0.113.0/24]\n",
        ))
        .expect("replace");
    assert_ne!(active_word(&pins, None) & ACTIVE_DRY_RUN, 0);
    assert_eq!(
        shield.test_run(&v4(1), 1).expect("run").return_value,
        XDP_PASS
    );

    // Pins an older build left: its word had no dry-run bit. The kernel follows the
    // word, so packets would be dropped although the pinned configuration says dry-run;
    // a Shield loaded over those pins puts the bit back.
    let word = active_word(&pins, None);
    active_word(&pins, Some(word & !ACTIVE_DRY_RUN));
    assert_eq!(
        shield.test_run(&v4(1), 1).expect("run").return_value,
        XDP_DROP
    );
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let again = Shield::load(&loader).expect("load over the pins");
    assert_eq!(again.mode().expect("mode"), Mode::DryRun);
    assert_eq!(active_word(&pins, None), word);
    assert_eq!(
        again.test_run(&v4(1), 1).expect("run").return_value,
        XDP_PASS
    );

    // Back to enforce.
    again.set_mode(Mode::Enforce).expect("enforce");
    assert_eq!(active_word(&pins, None) & ACTIVE_DRY_RUN, 0);
    assert_eq!(
        again.test_run(&v4(1), 1).expect("run").return_value,
        XDP_DROP
    );
}

/// Keeps the calling thread on one CPU: the sampling countdowns are per CPU, and a test
/// run executes on the CPU that calls it.
fn stay_on_one_cpu() {
    let mut cpus = rustix::thread::CpuSet::new();
    let current = rustix::thread::sched_getcpu();
    cpus.set(current);
    rustix::thread::sched_setaffinity(None, &cpus).expect("pin the test to one CPU");
}

fn drain_events(shield: &Shield) -> Vec<ShieldDrop> {
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 100_000, Overflow::DropNewest);
    let reader = shield.events(fanout.clone()).expect("ring buffer");
    reader.drain().expect("drain");
    assert_eq!(reader.stats().undecodable(), 0);
    sub.receiver()
        .try_iter()
        .filter_map(|e| match e {
            Event::ShieldDrop(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn drop_events_carry_addresses_ports_protocol_and_rule() {
    require_privileges!();
    let (_pins, shield) = shield("events");
    shield.set_sample_rate(1).expect("sampling");
    let udp = frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    assert_eq!(
        shield.test_run(&udp, 1).expect("run").return_value,
        XDP_DROP
    );
    let src6: Ipv6Addr = "2001:db8:bad::5".parse().expect("addr");
    let dst6: Ipv6Addr = "2001:db8::1".parse().expect("addr");
    let chained = frames6::with_chain(
        src6,
        dst6,
        &[
            (0, frames6::opt8()),
            (60, frames6::opt8()),
            (43, frames6::opt8()),
            (44, frames6::fragment_first()),
        ],
        5353,
        853,
    );
    assert_eq!(
        shield.test_run(&chained, 1).expect("run").return_value,
        XDP_DROP
    );
    // Allowed and valve traffic produces no event.
    assert_eq!(
        shield.test_run(&v4(7), 1).expect("run").return_value,
        XDP_PASS
    );
    assert_eq!(
        shield.test_run(&v4(9), 1).expect("run").return_value,
        XDP_PASS
    );

    let events = drain_events(&shield);
    assert_eq!(events.len(), 2, "{events:?}");
    let e = &events[0];
    assert_eq!(
        e.src,
        "198.51.100.1".parse::<std::net::IpAddr>().expect("ip")
    );
    assert_eq!(e.dst, "192.0.2.1".parse::<std::net::IpAddr>().expect("ip"));
    assert_eq!((e.proto, e.sport, e.dport), (17, 40000, 53));
    assert_eq!((e.rule_id, e.verdict), (1, ShieldVerdict::Drop));
    assert_eq!(e.len as usize, udp.len());
    let e6 = &events[1];
    assert_eq!(e6.src, std::net::IpAddr::V6(src6));
    assert_eq!((e6.proto, e6.sport, e6.dport), (17, 5353, 853));
    assert_eq!(e6.rule_id, 3);
}

#[test]
fn sampling_reports_one_drop_in_n() {
    require_privileges!();
    let (pins, shield) = shield("sampling");
    shield.set_sample_rate(4).expect("sampling");
    // Every test run on one CPU, so the per-CPU sequence is exact.
    stay_on_one_cpu();
    shield.test_run(&v4(1), 20).expect("run");
    assert_eq!(drain_events(&shield).len(), 5);
    shield.set_sample_rate(0).expect("no events");
    shield.test_run(&v4(1), 20).expect("run");
    assert_eq!(drain_events(&shield).len(), 0);
    assert_eq!(shield.rule_counter(1).expect("counter").packets, 40);
    // A lower rate takes effect at once, whatever was left of the old countdown.
    shield.set_sample_rate(1000).expect("sampling");
    shield.test_run(&v4(1), 2).expect("run");
    assert_eq!(
        drain_events(&shield).len(),
        1,
        "the first drop of the new rate"
    );
    shield.set_sample_rate(2).expect("sampling");
    shield.test_run(&v4(1), 10).expect("run");
    assert_eq!(drain_events(&shield).len(), 5);
    // A rate the kernel cannot hold is refused and changes nothing.
    let err = shield
        .set_sample_rate(ACTIVE_SAMPLE_MAX + 1)
        .expect_err("too large a rate");
    assert!(
        err.to_string().contains("sample_rate") && err.to_string().contains("16777215"),
        "{err}"
    );
    assert_eq!(shield.config().expect("config").sample_rate, 2);
    assert_eq!(
        active_word(&pins, None) >> ACTIVE_SAMPLE_SHIFT,
        2,
        "the rate is mirrored in the active word"
    );
    // The same rate again keeps the countdown: the 10th drop was sampled, so of the
    // next three only the second is (a restarted countdown would sample two).
    shield.set_sample_rate(2).expect("same rate");
    shield.test_run(&v4(1), 3).expect("run");
    assert_eq!(drain_events(&shield).len(), 1);
    shield.test_run(&v4(1), 1).expect("run");
    assert_eq!(drain_events(&shield).len(), 1);
    // Each verdict counts down on its own: the drops' countdown now stands at 1, the
    // dry-run drops' at 0, so of three dry-run drops the first and the third are
    // sampled (a shared countdown would sample only the second).
    shield.set_mode(Mode::DryRun).expect("dry-run");
    shield.test_run(&v4(1), 3).expect("run");
    let events = drain_events(&shield);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.verdict == ShieldVerdict::WouldDrop));
}

#[test]
fn events_per_second_caps_a_flood_and_counts_what_it_held_back() {
    require_privileges!();
    let (_pins, shield) = shield("budget");
    shield.set_sample_rate(2).expect("sampling");
    stay_on_one_cpu();
    shield.set_events_per_second(3).expect("budget");
    // One test run executes all repeats on one CPU within a few microseconds: one
    // window. 40 drops sample 20; the budget reports 3 and counts the other 17.
    shield.test_run(&v4(1), 40).expect("run");
    assert_eq!(drain_events(&shield).len(), 3);
    assert_eq!(total(&shield, ShieldTotal::EventsOverBudget), 17);
    assert_eq!(total(&shield, ShieldTotal::Dropped), 40);
    // The next second opens a new window on that CPU.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    shield.test_run(&v4(1), 40).expect("run");
    assert_eq!(drain_events(&shield).len(), 3, "a new window");
    assert_eq!(total(&shield, ShieldTotal::EventsOverBudget), 34);
    // 0 removes the cap: every sampled drop is reported again.
    shield.set_events_per_second(0).expect("no cap");
    shield.test_run(&v4(1), 40).expect("run");
    assert_eq!(drain_events(&shield).len(), 20);
    assert_eq!(total(&shield, ShieldTotal::EventsOverBudget), 34);
}

#[test]
fn ipv6_extension_chains_are_walked_within_bounds() {
    require_privileges!();
    let (_pins, shield) = shield("ext6");
    shield.set_sample_rate(1).expect("sampling");
    let bad: Ipv6Addr = "2001:db8:bad::9".parse().expect("addr");
    let good: Ipv6Addr = "2001:db8:900d::9".parse().expect("addr");
    let dst: Ipv6Addr = "2001:db8::1".parse().expect("addr");
    let long_chain: Vec<(u8, Vec<u8>)> = (0..10).map(|_| (60, frames6::opt8())).collect();
    let later_fragment = vec![(44, frames6::fragment_later())];
    for src in [good, bad] {
        let expected = if src == bad { XDP_DROP } else { XDP_PASS };
        let long = frames6::with_chain(src, dst, &long_chain, 1, 2);
        assert_eq!(
            shield.test_run(&long, 1).expect("run").return_value,
            expected
        );
        let frag = frames6::with_chain(src, dst, &later_fragment, 1, 2);
        assert_eq!(
            shield.test_run(&frag, 1).expect("run").return_value,
            expected
        );
        // Truncated in the middle of the third extension header.
        let chain3 = frames6::with_chain(src, dst, &long_chain[..3], 1, 2);
        let cut = &chain3[..14 + 40 + 16 + 1];
        assert_eq!(shield.test_run(cut, 1).expect("run").return_value, expected);
    }
    let events = drain_events(&shield);
    assert_eq!(events.len(), 3);
    // Too long a chain, a later fragment and a truncated chain: no ports claimed.
    assert!(
        events.iter().all(|e| (e.sport, e.dport) == (0, 0)),
        "{events:?}"
    );
    assert_eq!(
        events[1].proto, 17,
        "a later fragment still names its protocol"
    );
}

#[test]
fn the_valve_beats_a_deny_of_everything() {
    require_privileges!();
    let (_pins, shield) = shield("denyall");
    shield
        .insert_rule("0.0.0.0/0".parse().expect("cidr"), 10, Action::Deny)
        .expect("deny all v4");
    shield
        .insert_rule("::/0".parse().expect("cidr"), 11, Action::Deny)
        .expect("deny all v6");
    shield
        .add_valve("2001:db8:feed::/48".parse().expect("cidr"))
        .expect("valve v6");
    let anywhere = frames::ipv4_udp(Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(192, 0, 2, 1), 18);
    assert_eq!(
        shield.test_run(&anywhere, 1).expect("run").return_value,
        XDP_DROP
    );
    assert_eq!(
        shield.test_run(&v4(9), 1).expect("run").return_value,
        XDP_PASS,
        "v4 valve"
    );
    let mgmt6 = frames::ipv6_udp(
        "2001:db8:feed::1".parse().expect("addr"),
        "2001:db8::1".parse().expect("addr"),
        18,
    );
    assert_eq!(
        shield.test_run(&mgmt6, 1).expect("run").return_value,
        XDP_PASS,
        "v6 valve"
    );
    assert_eq!(shield.rule_counter(10).expect("counter").packets, 1);
    assert_eq!(total(&shield, ShieldTotal::Valve), 2);
}

#[test]
fn the_rate_limit_cuts_a_burst_to_its_budget() {
    require_privileges!();
    let (_pins, shield) = shield("rate");
    let (pps, burst) = (1_000u32, 100u32);
    shield
        .set_rate_limit(Some(RateLimit { pps, burst }))
        .expect("rate limit");
    let source = frames::ipv4_udp(
        Ipv4Addr::new(192, 0, 2, 77),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    let sent = 1_000u32;
    let wall = std::time::Instant::now();
    shield.test_run(&source, sent).expect("run");
    let first_run = wall.elapsed();
    let passed = total(&shield, ShieldTotal::Passed);
    let limited = total(&shield, ShieldTotal::RateLimited);
    assert_eq!(passed + limited, u64::from(sent));
    // The bucket starts full (burst) and refills at pps for at most the wall time the
    // burst took (the kernel clock cannot run faster than this process's).
    let refill = (first_run.as_secs_f64() * f64::from(pps)).ceil() as u64;
    assert!(
        (u64::from(burst)..=u64::from(burst) + refill + 1).contains(&passed),
        "passed {passed}, budget {burst} + {refill}"
    );
    assert_eq!(
        total(&shield, ShieldTotal::Dropped),
        0,
        "rate drops are counted apart"
    );

    // After an idle gap the bucket holds pps x gap more tokens. The gap runs from the
    // first burst's last packet to the second's last: at least the sleep, at most the
    // wall time from the first burst's start to the second's end. (The reads of the
    // counters in between count too: on 5.10 under emulation they took 36 ms, and a
    // ceiling measured from the sleep alone failed there.)
    let inner = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let inner = inner.elapsed();
    let before = total(&shield, ShieldTotal::Passed);
    shield.test_run(&source, sent).expect("run");
    let outer = wall.elapsed();
    let more = total(&shield, ShieldTotal::Passed) - before;
    // The bucket holds at most `burst`: a sleep that overshoots (a loaded machine) does
    // not raise the floor above it.
    let low = ((inner.as_secs_f64() * f64::from(pps)).floor() as u64).min(u64::from(burst));
    let high = (outer.as_secs_f64() * f64::from(pps)).ceil() as u64;
    assert!(
        (low.saturating_sub(1)..=high + 1).contains(&more),
        "refilled {more} tokens; the gap allows {low}..={high} at {pps}/s \
         (slept {inner:?}, {outer:?} from the first burst's start to the second's end)"
    );

    // Another source has its own bucket; dry-run passes everything but counts.
    shield.set_mode(Mode::DryRun).expect("dry-run");
    let other = frames::ipv4_udp(
        Ipv4Addr::new(192, 0, 2, 78),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    let limited_before = total(&shield, ShieldTotal::RateLimited);
    let wall = std::time::Instant::now();
    let out = shield.test_run(&other, 500).expect("run");
    // Its bucket starts full and refills for at most the wall time the run took (a
    // loaded emulated guest may be descheduled inside the run).
    let refill = (wall.elapsed().as_secs_f64() * f64::from(pps)).ceil() as u64;
    assert_eq!(out.return_value, XDP_PASS);
    let limited = total(&shield, ShieldTotal::RateLimited) - limited_before;
    let floor = (500 - u64::from(burst)).saturating_sub(refill + 1);
    assert!(
        (floor..=400).contains(&limited),
        "dry-run counted {limited} over the limit; the budget allows {floor}..=400"
    );
}

fn compiled(yaml: &str) -> ironclad_policy::shield::CompiledShield {
    ironclad_policy::config::compile_str(yaml, std::path::Path::new("test.yaml"))
        .expect("valid policy")
        .shield
        .expect("shield section")
}

#[test]
fn replace_changes_only_what_differs_and_keeps_counters() {
    require_privileges!();
    let pins = BpffsDir::new("replace").expect("bpffs dir");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load");
    let first =
        compiled("shield:\n  deny: [198.51.100.0/24, 203.0.113.0/24]\n  management: [192.0.2.9]\n");
    let report = shield.replace(&first).expect("replace");
    assert_eq!((report.added, report.kept, report.removed), (2, 0, 0));
    let id_198 = report.ids[&"198.51.100.0/24".parse().expect("cidr")];
    shield.test_run(&v4(1), 3).expect("run");
    assert_eq!(shield.rule_counter(id_198).expect("counter").packets, 3);

    // A new rule first in the file, one removed, one kept, the valve moved.
    let second = compiled(
        "shield:\n  mode: dry-run\n  deny: [10.0.0.0/8, 198.51.100.0/24]\n  management: [192.0.2.10]\n",
    );
    let report = shield.replace(&second).expect("replace");
    assert_eq!((report.added, report.kept, report.removed), (1, 1, 1));
    assert_eq!(
        report.ids[&"198.51.100.0/24".parse().expect("cidr")],
        id_198,
        "id kept"
    );
    let status = shield.status().expect("status");
    let kept = status
        .rules
        .iter()
        .find(|r| r.label.to_string() == "198.51.100.0/24")
        .expect("kept rule");
    assert_eq!(kept.counter.packets, 3, "its counter continues");
    let added = status
        .rules
        .iter()
        .find(|r| r.label.to_string() == "10.0.0.0/8")
        .expect("new rule");
    assert_eq!(added.counter.packets, 0, "a reused id starts from zero");
    assert!(!status
        .rules
        .iter()
        .any(|r| r.label.to_string() == "203.0.113.0/24"));
    assert_eq!(
        status.management,
        vec!["192.0.2.10/32"
            .parse::<ipnetwork::IpNetwork>()
            .expect("cidr")]
    );
    assert_eq!(shield.mode().expect("mode"), Mode::DryRun);
}

#[test]
fn a_new_rule_gets_an_index_no_rule_or_set_uses_and_is_written_in_place() {
    require_privileges!();
    let pins = BpffsDir::new("newrule").expect("bpffs dir");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load");
    // A policy with rules 1 and 2 and an empty set (its index held, no prefix in it).
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("empty.txt"), "# nothing yet\n").expect("feed");
    let policy = ironclad_policy::config::compile_str(
        "shield:\n  deny: [198.51.100.0/24]\n  allow: [198.51.100.7]\n  deny_feeds:\n    - {path: empty.txt, format: plain}\n",
        &dir.path().join("p.yaml"),
    )
    .expect("policy")
    .shield
    .expect("shield");
    shield.replace(&policy).expect("replace");
    let used: Vec<u32> = shield
        .rules()
        .expect("rules")
        .iter()
        .map(|r| r.rule_id)
        .collect();
    assert_eq!(used.len(), 3, "two rules and the set: {used:?}");
    let id = shield
        .insert_new_rule("203.0.113.0/24".parse().expect("cidr"), Action::Deny)
        .expect("insert");
    assert!(!used.contains(&id), "{id} is new: {used:?}");
    let frame = frames::ipv4_udp(
        Ipv4Addr::new(203, 0, 113, 5),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    assert_eq!(
        shield.test_run(&frame, 3).expect("run").return_value,
        XDP_DROP
    );
    assert_eq!(shield.rule_counter(id).expect("counter").packets, 3);
    let second = shield
        .insert_new_rule("203.0.114.0/24".parse().expect("cidr"), Action::Deny)
        .expect("insert");
    assert!(second != id && !used.contains(&second));
    assert!(shield
        .remove_rule("203.0.113.0/24".parse().expect("cidr"))
        .expect("remove"));
    assert_eq!(
        shield.test_run(&frame, 1).expect("run").return_value,
        XDP_PASS
    );
    // Its index is free again, its counter zeroed when reused.
    let again = shield
        .insert_new_rule("192.0.2.128/25".parse().expect("cidr"), Action::Deny)
        .expect("insert");
    assert_eq!(again, id);
    assert_eq!(shield.rule_counter(again).expect("counter").packets, 0);
}

/// The verdicts of the loaded Shield for sources on either side of every rule, the
/// valve and nothing at all, in both families.
fn verdicts(shield: &Shield) -> Vec<(String, u32)> {
    let dst4 = Ipv4Addr::new(192, 0, 2, 1);
    let dst6: Ipv6Addr = "2001:db8::1".parse().expect("v6");
    let v4s = [
        "198.51.100.1",
        "198.51.100.7",
        "203.0.113.5",
        "10.1.2.3",
        "192.0.2.9",
        "8.8.8.8",
    ];
    let v6s = [
        "2001:db8:bad::5",
        "2001:db8:bad:1::5",
        "2001:db8::9",
        "2001:db8:1::1",
    ];
    let mut found = Vec::new();
    for src in v4s {
        let frame = frames::ipv4_udp(src.parse().expect("v4"), dst4, 18);
        found.push((
            src.to_string(),
            shield.test_run(&frame, 1).expect("run").return_value,
        ));
    }
    for src in v6s {
        let frame = frames::ipv6_udp(src.parse().expect("v6"), dst6, 18);
        found.push((
            src.to_string(),
            shield.test_run(&frame, 1).expect("run").return_value,
        ));
    }
    found
}

/// The sources of `verdicts` that were dropped.
fn dropped(verdicts: &[(String, u32)]) -> Vec<&str> {
    verdicts
        .iter()
        .filter(|(_, v)| *v == XDP_DROP)
        .map(|(s, _)| s.as_str())
        .collect()
}

/// Rules as the kernel holds them, without their counters (two pin roots counted
/// different packets).
fn held(shield: &Shield) -> Vec<(String, u32, u32, u32)> {
    shield
        .rules()
        .expect("rules")
        .into_iter()
        .map(|r| (r.label.to_string(), r.rule_id, r.prefixes_v4, r.prefixes_v6))
        .collect()
}

/// `load_with_policy` compiles the tables while the kernel verifies, planned for an
/// object with no rules. The way it could go wrong is to use that plan for an object
/// that has rules (a restart adopting an earlier run's pins): rule ids would move and
/// counters land on the wrong rules. So each step is done both ways, on two pin roots,
/// and the kernels must agree, with the ids and counters of an adopted rule kept.
#[test]
fn load_with_policy_is_load_then_replace_on_a_cold_start_and_on_adopted_pins() {
    require_privileges!();
    let first = compiled(
        "shield:\n  deny: [198.51.100.0/24, 203.0.113.0/24, 2001:db8:bad::/48]\n  allow: [198.51.100.7]\n  management: [192.0.2.9, 2001:db8::9]\n",
    );
    // The next run: one rule first in the file is new, one removed, the rest kept.
    let second = compiled(
        "shield:\n  deny: [10.0.0.0/8, 198.51.100.0/24, 2001:db8:bad::/48]\n  allow: [198.51.100.7]\n  management: [192.0.2.9, 2001:db8::9]\n",
    );
    let together_pins = BpffsDir::new("lwp_together").expect("bpffs dir");
    let apart_pins = BpffsDir::new("lwp_apart").expect("bpffs dir");
    let loader_of = |pins: &BpffsDir| {
        Loader::builder()
            .pin_root(pins.path())
            .build()
            .expect("loader")
    };
    let apart_shield = |policy| {
        let shield = Shield::load(&loader_of(&apart_pins)).expect("load");
        let report = shield.replace(policy).expect("replace");
        (shield, report)
    };

    // A cold start.
    let (together, report) =
        Shield::load_with_policy(&loader_of(&together_pins), &first).expect("load with policy");
    let (apart, apart_report) = apart_shield(&first);
    assert_eq!(report, apart_report);
    assert_eq!((report.added, report.kept), (4, 0));
    assert_eq!(held(&together), held(&apart));
    let cold = verdicts(&together);
    assert_eq!(cold, verdicts(&apart));
    let denied = "198.51.100.0/24".parse().expect("cidr");
    let id = report.ids[&denied];
    // Three packets for the denied /24 (`verdicts` sent it one too).
    together.test_run(&v4(1), 2).expect("run");
    assert_eq!(together.rule_counter(id).expect("counter").packets, 3);
    assert_eq!(
        dropped(&cold),
        [
            "198.51.100.1",
            "203.0.113.5",
            "2001:db8:bad::5",
            "2001:db8:bad:1::5"
        ]
    );
    drop((together, apart));

    // A restart with the next policy, adopting the pins.
    let (together, report) =
        Shield::load_with_policy(&loader_of(&together_pins), &second).expect("load with policy");
    let (apart, apart_report) = apart_shield(&second);
    assert_eq!(report, apart_report);
    assert_eq!((report.added, report.kept, report.removed), (1, 3, 1));
    assert_eq!(report.ids[&denied], id, "the kept rule keeps its id");
    assert_eq!(
        together.rule_counter(id).expect("counter").packets,
        3,
        "and its counter"
    );
    assert_eq!(held(&together), held(&apart));
    let warm = verdicts(&together);
    assert_eq!(warm, verdicts(&apart));
    // The packets land on the rules' own counters (a table compiled with other ids
    // would count 10.1.2.3 on someone else's).
    let new_id = report.ids[&"10.0.0.0/8".parse().expect("cidr")];
    assert_eq!(together.rule_counter(id).expect("counter").packets, 4);
    assert_eq!(together.rule_counter(new_id).expect("counter").packets, 1);
    assert_eq!(
        dropped(&warm),
        [
            "198.51.100.1",
            "10.1.2.3",
            "2001:db8:bad::5",
            "2001:db8:bad:1::5"
        ]
    );
}

/// The id the kernel gives the next map: every map with a smaller id was made before
/// this call (ids count up).
fn next_map_id() -> u32 {
    use libbpf_rs::{MapCore, MapHandle, MapType};
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    let marker =
        MapHandle::create(MapType::Array, Some("id_marker"), 4, 4, 1, &opts).expect("marker map");
    marker.info().expect("marker info").info.id
}

/// Whether `dir` is missing or holds nothing.
fn nothing_in(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// The daemon loads the Shield ahead while its policy compiles ([`Loader::preload`]),
/// pinning nothing until the policy is known to be valid. The next load must pin that
/// very object, not load a second one: the kernel's ids of the pinned maps are older
/// than a map made right after the preload. And the Shield must then enforce as one
/// loaded the usual way (same report, rules, verdicts). With pins already there
/// (a restart), nothing is loaded ahead; one loaded ahead and never used is released
/// with nothing pinned, and the audit log says so.
#[test]
fn a_shield_loaded_ahead_is_the_one_pinned_and_enforces_as_one_loaded_then() {
    require_privileges!();
    let policy = compiled(
        "shield:\n  deny: [198.51.100.0/24, 203.0.113.0/24, 2001:db8:bad::/48]\n  allow: [198.51.100.7]\n  management: [192.0.2.9, 2001:db8::9]\n",
    );
    let ahead_pins = BpffsDir::new("preload_ahead").expect("bpffs dir");
    let usual_pins = BpffsDir::new("preload_usual").expect("bpffs dir");
    let sink = Arc::new(ironclad_bpf::MemorySink::default());
    let loader_of = |pins: &BpffsDir| {
        Loader::builder()
            .pin_root(pins.path())
            .audit_sink(sink.clone())
            .build()
            .expect("loader")
    };
    let shield_dir = ahead_pins.path().join(Shield::OBJECT);

    // A cold start: loaded ahead, nothing pinned yet.
    let loader = loader_of(&ahead_pins);
    assert!(loader
        .preload(ironclad_bpf::object::shield())
        .expect("preload"));
    assert!(nothing_in(&shield_dir), "pinned before it was used");
    let after_preload = next_map_id();
    let (ahead, report) = Shield::load_with_policy(&loader, &policy).expect("load with policy");
    let pinned = ahead.object().pinned_maps();
    assert!(!pinned.is_empty());
    for pin in pinned {
        assert!(!pin.reused, "{pin:?}");
        let id = libbpf_rs::MapHandle::from_pinned_path(&pin.path)
            .and_then(|h| libbpf_rs::MapCore::info(&h))
            .expect("pinned map")
            .info
            .id;
        assert!(
            id < after_preload,
            "{} was made by a second load (id {id}, the preload's maps are below {after_preload})",
            pin.name
        );
    }
    let usual = Shield::load(&loader_of(&usual_pins)).expect("load");
    assert_eq!(report, usual.replace(&policy).expect("replace"));
    assert_eq!(held(&ahead), held(&usual));
    assert_eq!(verdicts(&ahead), verdicts(&usual));
    let loads = |sink: &ironclad_bpf::MemorySink| {
        sink.records()
            .iter()
            .filter(|r| {
                r.action == ironclad_bpf::AuditAction::Load
                    && r.object == Shield::OBJECT
                    && r.detail.starts_with("programs:")
            })
            .count()
    };
    assert_eq!(loads(&sink), 2, "one load for each pin root");
    drop((ahead, usual, loader));

    // A restart: the pins are there, so nothing is loaded ahead and the load reuses them.
    let loader = loader_of(&ahead_pins);
    assert!(!loader
        .preload(ironclad_bpf::object::shield())
        .expect("preload"));
    assert_eq!(loads(&sink), 2);
    let again = Shield::load(&loader).expect("load");
    assert!(again.object().pinned_maps().iter().all(|p| p.reused));
    assert_eq!(
        verdicts(&again),
        verdicts(&Shield::load(&loader_of(&usual_pins)).expect("load"))
    );
    drop((again, loader));

    // Loaded ahead and never used (the policy turned out invalid): nothing pinned.
    let unused_pins = BpffsDir::new("preload_unused").expect("bpffs dir");
    let loader = loader_of(&unused_pins);
    assert!(loader
        .preload(ironclad_bpf::object::shield())
        .expect("preload"));
    assert_eq!(loader.discard_preloaded(), 1);
    assert!(nothing_in(&unused_pins.path().join(Shield::OBJECT)));
    assert!(sink.records().iter().any(|r| r.object == Shield::OBJECT
        && r.detail.starts_with("loaded ahead and not used: released")));
    // A load now starts from nothing: no map of the released one was pinned.
    let fresh = Shield::load(&loader).expect("load");
    assert!(fresh.object().pinned_maps().iter().all(|p| !p.reused));
}
