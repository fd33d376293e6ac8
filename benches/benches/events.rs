//! Event throughput end to end: ring buffer → decode → fan-out → one subscriber.
//!
//! The Shield's program is run with `BPF_PROG_TEST_RUN` on a denied frame with drop
//! events for every packet, 3,000 at a time (the 256 KiB ring holds about 3,600, so none
//! is lost); then the reader drains the ring, decodes every record, publishes it to a
//! fan-out and one subscriber receives it. Only the drain and the receive are timed:
//! `events/decode_to_subscriber` is the time per event, its inverse the events/s.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ironclad_bpf::{EventReader, Loader, Shield};
use ironclad_core::abi::{Action, ShieldTotal};
use ironclad_events::{Fanout, Overflow};
use ironclad_testing::{frames, BpffsDir};

const BATCH: u32 = 3_000;

fn events(c: &mut Criterion) {
    let pins = BpffsDir::new("bench-events").unwrap_or_else(|e| panic!("{e}"));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let shield = Shield::load(&loader).unwrap_or_else(|e| panic!("{e}"));
    shield
        .insert_rule(
            "198.51.100.0/24".parse().unwrap_or_else(|e| panic!("{e}")),
            1,
            Action::Deny,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    shield.set_sample_rate(1).unwrap_or_else(|e| panic!("{e}"));
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("bench", BATCH as usize * 2, Overflow::DropNewest);
    let reader = EventReader::new(
        vec![shield.event_source().unwrap_or_else(|e| panic!("{e}"))],
        fanout.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let frame = frames::ipv4_udp(
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        18,
    );

    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_to_subscriber", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = u32::try_from(left.min(u64::from(BATCH))).unwrap_or(BATCH);
                shield.test_run(&frame, n).unwrap_or_else(|e| panic!("{e}"));
                let start = Instant::now();
                reader.drain().unwrap_or_else(|e| panic!("{e}"));
                let received = sub.receiver().try_iter().count();
                timed += start.elapsed();
                assert_eq!(received as u64, u64::from(n), "no event lost");
                left -= u64::from(n);
            }
            timed
        });
    });
    group.finish();
    let lost = shield
        .total(ShieldTotal::EventsLost)
        .map(|c| c.packets)
        .unwrap_or(u64::MAX);
    println!("events/decode_to_subscriber: {lost} events lost in the kernel");
    ironclad_benches::figures::record_one(
        "events/decode_to_subscriber/lost",
        ironclad_benches::figures::Unit::Count,
        lost as f64,
    );
}

criterion_group!(benches, events);
criterion_main!(benches);
