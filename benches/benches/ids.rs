//! The IDS rule engine's matcher in user space (`ironclad_policy::ids`): throughput of
//! `RuleSet::matches` over packet-sized payloads, for 100 and 10,000 content rules.
//!
//! `ids_match/rules_N`: N rules `alert tcp any any -> any any (content:"W"; ...)`, W a
//! random word of 8–15 letters and digits (a third `nocase`, a fifth with a second,
//! relative content), matched against 1,448-byte payloads of HTTP-like text in which one
//! packet in 16 carries one rule's word (so the exact check runs, as on real traffic
//! where a rule's pattern shows up now and then). Throughput is payload bytes a second
//! on one core, the matcher alone: the kernel's side (the firewall selecting the
//! connections and handing over their first bytes) is in `firewall_summary/*ids*`.
//!
//! `dlp_scan/clean|card`: the DLP detectors (`ironclad_policy::dlp`, all five built in)
//! over one 4 KiB chunk of TLS plaintext (the largest chunk the TLS capture reports; a
//! captured call is one chunk up to 4 KiB): HTTP-like text with no secret, and the same
//! text with a card number in its body (found, Luhn-checked, redacted). This is the
//! user-space cost DLP adds per captured TLS call of that size.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ironclad_policy::ids::{parse, Packet, RuleSet, Vars};
use ironclad_testing::rules::Rng;

const PAYLOAD: usize = 1_448;
const PACKETS: usize = 256;

fn word(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = 8 + (rng.next_u64() % 8) as usize;
    (0..len)
        .map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn rules(count: usize, rng: &mut Rng) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut words = Vec::new();
    for sid in 1..=count {
        let w = word(rng);
        let nocase = if sid % 3 == 0 { " nocase;" } else { "" };
        let second = if sid % 5 == 0 {
            format!(" content:\"{}\"; distance:0; within:64;", word(rng))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "alert tcp any any -> any any (msg:\"rule {sid}\"; content:\"{w}\";{nocase}{second} sid:{sid};)\n"
        ));
        words.push(w);
    }
    (text, words)
}

fn payloads(words: &[String], rng: &mut Rng) -> Vec<Vec<u8>> {
    let filler = "GET /static/app.js HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\nCookie: session=0123456789abcdef\r\n\r\n";
    (0..PACKETS)
        .map(|i| {
            let mut p: Vec<u8> = filler.bytes().cycle().take(PAYLOAD).collect();
            if i % 16 == 0 {
                let w = &words[(rng.next_u64() % words.len() as u64) as usize];
                let at = (rng.next_u64() % (PAYLOAD - w.len()) as u64) as usize;
                p[at..at + w.len()].copy_from_slice(w.as_bytes());
            }
            p
        })
        .collect()
}

fn matcher(c: &mut Criterion) {
    let mut group = c.benchmark_group("ids_match");
    group.throughput(Throughput::Bytes((PAYLOAD * PACKETS) as u64));
    for count in [100usize, 10_000] {
        let mut rng = Rng::new(0x1d5 + count as u64);
        let (text, words) = rules(count, &mut rng);
        let parsed =
            parse(&text, Path::new("bench.rules"), &Vars::new()).unwrap_or_else(|e| panic!("{e}"));
        let set = RuleSet::new(parsed).unwrap_or_else(|e| panic!("{e}"));
        let packets = payloads(&words, &mut rng);
        let (client, server) = (
            "10.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}")),
            "10.0.0.2:80".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let hits: usize = packets
            .iter()
            .map(|p| set.matches(&Packet::tcp(client, server, p)).len())
            .sum();
        assert!(hits >= PACKETS / 16 / 2, "{count} rules: {hits} matches");
        println!(
            "ids_match/rules_{count}: prefilter {} KiB",
            set.prefilter_bytes() / 1024
        );
        group.bench_function(format!("rules_{count}"), |b| {
            b.iter(|| {
                for p in &packets {
                    black_box(set.matches(&Packet::tcp(client, server, p)));
                }
            })
        });
    }
    group.finish();
}

fn dlp(c: &mut Criterion) {
    use ironclad_policy::dlp::{Detector, Dlp};
    let dlp = Dlp::new(&Detector::ALL, &[]).unwrap_or_else(|e| panic!("{e}"));
    let filler = "POST /api/v1/orders HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: application/x-www-form-urlencoded\r\nCookie: session=0123456789abcdef\r\n\r\nitem=42&qty=1&note=please+deliver+after+six&";
    let clean: Vec<u8> = filler.bytes().cycle().take(4096).collect();
    let mut card = clean.clone();
    card[2000..2026].copy_from_slice(b"&card=4111 1111 1111 1111&");
    assert!(dlp.scan(&clean).is_empty());
    assert_eq!(dlp.scan(&card).len(), 1);
    let mut group = c.benchmark_group("dlp_scan");
    group.throughput(Throughput::Bytes(4096));
    group.bench_function("clean", |b| b.iter(|| black_box(dlp.scan(&clean))));
    group.bench_function("card", |b| b.iter(|| black_box(dlp.scan(&card))));
    group.finish();
}

criterion_group!(benches, matcher, dlp);
criterion_main!(benches);
