//! Event delivery end to end: one poller over several ring buffers, and a flood of more
//! than a million kernel events with a fast and a deliberately slow subscriber, where
//! every event is accounted for at every layer.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironclad_bpf::{EgressFirewall, EventReader, Loader, Shield};
use ironclad_core::abi::{Action, ShieldTotal};
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::config::compile_str;
use ironclad_testing::require_privileges;
use ironclad_testing::{frames, BpffsDir, TestCgroup};

fn shield(pins: &BpffsDir) -> (Loader, Shield) {
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let shield = Shield::load(&loader).expect("load");
    shield
        .insert_rule("198.51.100.0/24".parse().expect("cidr"), 1, Action::Deny)
        .expect("rule");
    shield.set_sample_rate(1).expect("sampling");
    (loader, shield)
}

#[test]
fn one_poller_reads_several_ring_buffers_with_wall_clock_times() {
    require_privileges!();
    let pins = BpffsDir::new("multi").expect("bpffs");
    let (loader, shield) = shield(&pins);
    let egress = EgressFirewall::load(&loader).expect("egress");
    let cgroup = TestCgroup::new("multi").expect("cgroup");
    let policy = compile_str("egress:\n  default: deny\n", std::path::Path::new("p.yaml"))
        .expect("policy")
        .egress
        .expect("egress");
    egress.replace(&policy).expect("replace");
    let _attached = egress.attach(cgroup.path()).expect("attach");

    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 1024, Overflow::DropNewest);
    let reader = EventReader::new(
        vec![
            shield.event_source().expect("shield source"),
            egress.event_source().expect("egress source"),
        ],
        fanout.clone(),
    )
    .expect("reader");

    let frame = frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    shield.test_run(&frame, 1).expect("run");
    let out = cgroup
        .command("bash")
        .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/9"])
        .output()
        .expect("sh");
    assert!(!out.status.success(), "the connect is denied");
    reader.poll(Duration::from_millis(500)).expect("poll");
    reader.drain().expect("drain");
    let events: Vec<Event> = sub.receiver().try_iter().collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::ShieldDrop(_))),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Connect(_))),
        "{events:?}"
    );
    for event in &events {
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        let time = json["time"].as_str().expect("time");
        assert!(time.starts_with("20") && time.ends_with('Z'), "{time}");
    }
}

#[test]
fn a_flood_of_a_million_events_is_accounted_for_exactly() {
    require_privileges!();
    let pins = BpffsDir::new("flood").expect("bpffs");
    let (_loader, shield) = shield(&pins);
    let fanout = Arc::new(Fanout::new());
    let fast = fanout.subscribe("fast", 4_000_000, Overflow::DropNewest);
    let slow = fanout.subscribe("slow", 1_000, Overflow::DropOldest);
    let source = shield.event_source().expect("source");

    // The reader runs on its own thread, sleeping in epoll between batches.
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let reader_fanout = fanout.clone();
    let reader = std::thread::spawn(move || {
        let reader = EventReader::new(vec![source], reader_fanout).expect("reader");
        while !stop.load(Ordering::Relaxed) {
            reader.poll(Duration::from_millis(20)).expect("poll");
        }
        reader.drain().expect("drain");
        (reader.stats().decoded(), reader.stats().undecodable())
    });

    let frame = frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    let mut attempts = 0u64;
    let emitted = |shield: &Shield, attempts: u64| {
        attempts - shield.total(ShieldTotal::EventsLost).expect("lost").packets
    };
    while emitted(&shield, attempts) < 1_000_000 {
        shield.test_run(&frame, 2_000).expect("run");
        attempts += 2_000;
    }
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Relaxed);
    let (decoded, undecodable) = reader.join().expect("reader thread");

    let emitted = emitted(&shield, attempts);
    let lost_in_kernel = attempts - emitted;
    assert!(emitted >= 1_000_000);
    assert_eq!(undecodable, 0);
    assert_eq!(
        decoded, emitted,
        "every record the kernel wrote was decoded"
    );
    let fast_received = fast.receiver().try_iter().count() as u64;
    assert_eq!(
        fast_received, emitted,
        "the fast subscriber got every event"
    );
    let s = slow.stats();
    assert_eq!(s.published, emitted);
    assert_eq!(s.published, s.delivered + s.dropped, "{s:?}");
    assert_eq!(slow.receiver().try_iter().count() as u64, s.delivered);
    assert!(
        s.dropped > 0,
        "the slow subscriber lost (and counted) events"
    );
    assert_eq!(
        shield.rule_counter(1).expect("counter").packets,
        attempts,
        "every packet was counted, reported or not ({lost_in_kernel} not reported for lack of ring space)"
    );
}
