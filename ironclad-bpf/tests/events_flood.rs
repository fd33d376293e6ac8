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

/// A live reader is not woken for every sampled drop (a wake-up per event cost the drop
/// path several microseconds under a flood): the first drop after a quiet spell wakes
/// it, the drops that follow within 50 ms do not, a quarter of the ring waiting does;
/// and with the daemon's loop (a 100 ms wait, then a drain) every event still arrives
/// within a second. Wake-ups are watched on the ring's own descriptor, edge-triggered:
/// each one the kernel sends is seen once, and nothing is consumed by watching.
#[test]
fn drops_wake_the_reader_once_per_50_ms_or_at_a_quarter_ring_and_arrive_within_a_second() {
    use rustix::event::{epoll, Timespec};
    use std::time::Instant;

    require_privileges!();
    let pins = BpffsDir::new("wake").expect("bpffs");
    let (_loader, shield) = shield(&pins);
    let frame = frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );
    let ring =
        libbpf_rs::MapHandle::from_pinned_path(pins.path().join("shield").join("ic_shield_events"))
            .expect("the pinned ring buffer");
    let watch = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
    epoll::add(
        &watch,
        &ring,
        epoll::EventData::new_u64(1),
        epoll::EventFlags::IN | epoll::EventFlags::ET,
    )
    .expect("epoll add");
    // Whether the ring woke its readers within `ms` (or since the last call).
    let woken = |ms: u64| -> bool {
        let mut events = Vec::with_capacity(1);
        let timeout = Timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000) as i64,
        };
        epoll::wait(
            &watch,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        )
        .expect("epoll wait")
            > 0
    };
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("wake", 65_536, Overflow::DropNewest);
    let drainer = EventReader::new(vec![shield.event_source().expect("source")], fanout.clone())
        .expect("reader");
    // The kernel times (ns) of the drop events waiting, read and removed.
    let drain = || -> Vec<u64> {
        drainer.drain().expect("drain");
        sub.receiver()
            .try_iter()
            .filter_map(|e| match e {
                Event::ShieldDrop(d) => Some(d.ktime_ns),
                _ => None,
            })
            .collect()
    };
    let mut delivered = 0;

    // One drop after a quiet spell, then `runs` runs of `each` drops once its wake-up
    // was seen, the ring read after each run when `keep_up` (a reader that keeps up, as
    // a live one does: the ring buffer's default wakes its reader for a record whenever
    // it has caught up): whether the later drops woke the reader again (watched after
    // each run, and for `ms` at the end). None when they were not all written within 45 ms of the first (by the
    // events' own kernel times: this thread was preempted, as on a busy machine), when
    // the answer says nothing of the 50 ms rule; the caller tries again.
    let mut burst = |runs: u32, each: u32, keep_up: bool, ms: u64| -> Option<bool> {
        std::thread::sleep(Duration::from_millis(60));
        woken(0);
        shield.test_run(&frame, 1).expect("run");
        assert!(
            woken(1000),
            "the first drop after a quiet spell woke the reader"
        );
        // Unread, the first record keeps the ring from looking caught up to the kernel.
        let mut times = if keep_up { drain() } else { Vec::new() };
        let mut again = false;
        for _ in 0..runs {
            shield.test_run(&frame, each).expect("run");
            if keep_up {
                // Before the records are read: epoll reports a wake-up only while the
                // ring holds something.
                again |= woken(0);
                times.extend(drain());
            }
        }
        again |= woken(ms);
        times.extend(drain());
        delivered += times.len() as u64;
        assert_eq!(
            times.len() as u32,
            1 + runs * each,
            "every drop was reported"
        );
        let first = times.iter().min().copied().unwrap_or_default();
        let last = times.iter().max().copied().unwrap_or_default();
        (last - first < 45_000_000).then_some(again)
    };
    // 200 drops one at a time within 50 ms of a wake-up, each read at once: no wake-up.
    let quiet = (0..10).find_map(|_| burst(200, 1, true, 20));
    assert_eq!(
        quiet,
        Some(false),
        "200 drops within 50 ms of a wake-up woke nobody"
    );
    // 1,500 at once, unread (a quarter of the ring, 65,536 bytes, is ~820 records): the
    // waiting quarter wakes the reader.
    let full = (0..10).find_map(|_| burst(1, 1_500, false, 1000));
    assert_eq!(
        full,
        Some(true),
        "a quarter of the ring waiting woke the reader"
    );

    // The daemon's loop on its own thread; one drop and 500 more, the 500 woken by
    // nobody: all arrive within a second through the drain after each wait.
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let (source, reader_fanout) = (shield.event_source().expect("source"), fanout.clone());
    let daemon = std::thread::spawn(move || {
        let reader = EventReader::new(vec![source], reader_fanout).expect("reader");
        while !stop.load(Ordering::Relaxed) {
            reader.poll(Duration::from_millis(100)).expect("poll");
        }
    });
    std::thread::sleep(Duration::from_millis(60));
    shield.test_run(&frame, 1).expect("run");
    shield.test_run(&frame, 500).expect("run");
    let received = || sub.receiver().try_iter().count() as u64;
    let written = || {
        let lost = shield.total(ShieldTotal::EventsLost).expect("lost").packets;
        assert_eq!(lost, 0, "the ring never filled");
        shield.rule_counter(1).expect("counter").packets
    };
    let start = Instant::now();
    while delivered < written() && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
        delivered += received();
    }
    done.store(true, Ordering::Relaxed);
    daemon.join().expect("daemon loop");
    assert_eq!(
        delivered,
        written(),
        "every drop's event arrived within 1 s of its drop"
    );
}
