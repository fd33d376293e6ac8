//! Egress by DNS name: what reading an answer costs on its way to the socket (the time
//! between the answer's arrival and its addresses being enforceable is inside it: the
//! addresses are in the kernel's table before the socket can read the answer), and
//! what a `connect()` costs with 10,000 live name-derived addresses, beside the same
//! number of plain CIDR rules.
//!
//! A DNS responder thread on 127.0.0.153:53 (outside the benchmark's cgroup) answers
//! every `nI.bench.test` with one A record, 10.222.(I/256).(I%256), TTL one hour. The
//! benchmark process moves into a cgroup and sends its own queries from a UDP socket it
//! connected to the responder (what glibc does), so the kernel reads them as it reads
//! any process's.
//!
//! `domains_answer/*`: one query and its answer (send + recv), round by round
//! (`ROUNDS` rounds of `ANSWERS` queries) on three sockets: in a cgroup with nothing
//! attached (`bare`), with the identity firewall and a `dst_domain` rule matching every
//! name but on a socket that connected before (`plain`: not marked, so its packets
//! cost the DNS programs one socket-storage lookup, what every other packet of the
//! cgroup pays while names are live; without names the programs are not attached),
//! and on a marked socket (`opened`: the answer is parsed, its name hashed and looked
//! up, its address opened, an event written and read by a live reader). The round trip is two
//! thread wake-ups, whose noise is larger than the programs: what the programs cost is
//! read from the kernel's own accounting (`kernel.bpf_stats_enabled`) in the same
//! rounds, per run of `ic_dns_in` (one per answer: the time from the answer's arrival
//! at the socket to its address being enforceable, paid before the application can read
//! it) and of `ic_dns_out` (one per query), `in_plain`/`out_plain` and
//! `in_opened`/`out_opened`.
//!
//! `domains_connect/*`: `connect()` of a UDP socket (the `cgroup/connect4` hook, as in
//! `egress`), paired the same way: `bare`, the empty program, `cidr_10000` (10,000
//! scattered /32 rules and one allowing the destination), `names_10000` (one domain rule
//! whose 10,000 addresses real answers opened, the destination among them) and
//! `names_miss` (the same, to an address no answer opened: one lookup, then the
//! default).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[path = "support/egress_cgroup.rs"]
mod egress_cgroup;

use criterion::{criterion_group, criterion_main, Criterion};
use egress_cgroup::{apply, enter, leave};
use ironclad_benches::figures::{record, Unit};
use ironclad_bpf::{EgressFirewall, Loader};
use ironclad_events::{Fanout, Overflow};
use ironclad_testing::{BpffsDir, TestCgroup};

const RESOLVER: &str = "127.0.0.153:53";
const NAMES: u32 = 10_000;
const ROUNDS: usize = 15;
const ANSWERS: u32 = 2_000;
const ROUND_CONNECTS: u32 = 50_000;

fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 222, (i >> 8) as u8, (i & 0xff) as u8)
}

/// A query for `nI.bench.test`, A, with id `id`.
fn query(i: u32, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in [format!("n{i}"), "bench".into(), "test".into()] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers every query with one A record for its name's number (an unparsable name gets
/// 10.222.255.255).
fn responder(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let socket = UdpSocket::bind(RESOLVER).unwrap_or_else(|e| panic!("binding {RESOLVER}: {e}"));
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            let Some(end) = q.iter().skip(12).position(|b| *b == 0).map(|p| p + 12 + 5) else {
                continue;
            };
            let label_len = usize::from(q[12]);
            let number: u32 = std::str::from_utf8(&q[14..13 + label_len])
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0xffff);
            let mut r = Vec::with_capacity(end + 16);
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
            r.extend_from_slice(&address(number).octets());
            let _ = socket.send_to(&r, peer);
        }
    })
}

/// One query and its answer on `socket` (connected to the responder); ns each, over
/// `count` names from `first`.
fn resolve(socket: &UdpSocket, first: u32, count: u32) -> f64 {
    let mut buf = [0u8; 512];
    let start = Instant::now();
    for i in first..first + count {
        let q = query(i % NAMES, (i & 0xffff) as u16);
        socket.send(&q).unwrap_or_else(|e| panic!("send: {e}"));
        socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("recv: {e}"));
    }
    start.elapsed().as_nanos() as f64 / f64::from(count)
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// (run time ns, runs) of the loaded program named `name`, from the kernel's own
/// accounting (`kernel.bpf_stats_enabled`), summed over programs of that name.
fn runs(name: &str) -> (u64, u64) {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|info| info.name.to_string_lossy() == name)
        .fold((0, 0), |(t, n), info| {
            (t + info.run_time_ns, n + info.run_cnt)
        })
}

/// Nanoseconds per run of `name` between two [`runs`] readings.
fn per_run(before: (u64, u64), after: (u64, u64)) -> f64 {
    let (t, n) = (after.0 - before.0, after.1 - before.1);
    assert!(n > 0, "the program ran");
    t as f64 / n as f64
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

const DOMAIN_POLICY: &str =
    "egress:\n  default: allow\n  rules:\n    - dst_domain: \"*.bench.test\"\n      action: allow\n";

fn domains(_: &mut Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    let round_connects = ironclad_benches::repeats(ROUND_CONNECTS);
    let answers = ironclad_benches::repeats(ANSWERS);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = responder(stop.clone());
    let resolver: SocketAddr = RESOLVER.parse().unwrap_or_else(|e| panic!("{e}"));
    let cgroups = ["bench-dn-bare", "bench-dn-empty", "bench-dn-fw"]
        .map(|tag| TestCgroup::new(tag).unwrap_or_else(|e| panic!("{e}")));
    let dns_sockets = cgroups.each_ref().map(|cgroup| {
        enter(cgroup.path());
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        s
    });
    let connect_sockets = cgroups.each_ref().map(|cgroup| {
        enter(cgroup.path());
        UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"))
    });
    leave();
    let pins = BpffsDir::new("bench-dn").unwrap_or_else(|e| panic!("{e}"));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let firewall = EgressFirewall::load(&loader).unwrap_or_else(|e| panic!("{e}"));
    // A live reader of the events, as the daemon has.
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("bench", 1 << 16, Overflow::DropOldest);
    let reader = firewall
        .events(fanout.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let reading = Arc::new(AtomicBool::new(true));
    let drain = {
        let reading = reading.clone();
        std::thread::spawn(move || {
            while reading.load(Ordering::Relaxed) {
                let _ = reader.poll(std::time::Duration::from_millis(50));
                while sub.receiver().try_recv().is_ok() {}
            }
        })
    };

    // The answer's way to the socket.
    for s in &dns_sockets {
        s.connect(resolver).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut answer: [Vec<f64>; 3] = Default::default();
    // The kernel's own accounting of the DNS programs: per answer (`ic_dns_in`) and
    // per query (`ic_dns_out`), without a domain policy and with one.
    let mut program: [Vec<f64>; 4] = Default::default();
    let stats_before = std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".to_string());
    std::fs::write(STATS, "1").unwrap_or_else(|e| panic!("{STATS}: {e}"));
    let mut next = 0u32;
    for _ in 0..round_count {
        answer[0].push(resolve(&dns_sockets[0], next, answers));
        // Names live, but this socket connected before they were: it is not marked,
        // so the programs see what every other packet of the cgroup costs them.
        apply(&firewall, DOMAIN_POLICY);
        let attached = firewall
            .attach(cgroups[1].path())
            .unwrap_or_else(|e| panic!("{e}"));
        let (in0, out0) = (runs("ic_dns_in"), runs("ic_dns_out"));
        answer[1].push(resolve(&dns_sockets[1], next, answers));
        program[0].push(per_run(in0, runs("ic_dns_in")));
        program[1].push(per_run(out0, runs("ic_dns_out")));
        drop(attached);
        let attached = firewall
            .attach(cgroups[2].path())
            .unwrap_or_else(|e| panic!("{e}"));
        // Connected again with the hooks on: the socket is marked as a DNS socket.
        dns_sockets[2]
            .connect(resolver)
            .unwrap_or_else(|e| panic!("{e}"));
        let (in0, out0) = (runs("ic_dns_in"), runs("ic_dns_out"));
        answer[2].push(resolve(&dns_sockets[2], next, answers));
        program[2].push(per_run(in0, runs("ic_dns_in")));
        program[3].push(per_run(out0, runs("ic_dns_out")));
        drop(attached);
        next += answers;
    }
    let _ = std::fs::write(STATS, stats_before.trim());
    record("domains_answer/in_plain", Unit::Ns, &program[0]);
    record("domains_answer/out_plain", Unit::Ns, &program[1]);
    record("domains_answer/in_opened", Unit::Ns, &program[2]);
    record("domains_answer/out_opened", Unit::Ns, &program[3]);
    let status = firewall.domain_status().unwrap_or_else(|e| panic!("{e}"));
    let responses = status
        .totals
        .iter()
        .find(|(t, _)| *t == ironclad_core::abi::DnsTotal::Responses)
        .map_or(0, |(_, n)| *n);
    assert!(
        responses >= (round_count as u64) * u64::from(answers),
        "every answer of the `opened` socket was read: {responses}"
    );
    record("domains_answer/bare", Unit::Ns, &answer[0]);
    record("domains_answer/plain", Unit::Ns, &answer[1]);
    record("domains_answer/opened", Unit::Ns, &answer[2]);

    // 10,000 live addresses for this executable: every name resolved once more.
    apply(&firewall, DOMAIN_POLICY);
    {
        let _attached = firewall
            .attach(cgroups[2].path())
            .unwrap_or_else(|e| panic!("{e}"));
        enter(cgroups[2].path());
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        s.connect(resolver).unwrap_or_else(|e| panic!("{e}"));
        leave();
        resolve(&s, 0, NAMES);
    }
    let live = firewall
        .domain_status()
        .unwrap_or_else(|e| panic!("{e}"))
        .opened
        .len();
    assert!(live >= NAMES as usize, "{live} addresses open");

    let baseline = libbpf_rs::ObjectBuilder::default()
        .open_memory(ironclad_bpf::object::baseline().elf())
        .and_then(|o| o.load())
        .unwrap_or_else(|e| panic!("loading the baseline object: {e}"));
    let empty_dir = std::fs::File::open(cgroups[1].path()).unwrap_or_else(|e| panic!("{e}"));
    let empty_program = baseline
        .progs_mut()
        .find(|p| p.name() == "ic_baseline_connect4")
        .unwrap_or_else(|| panic!("ic_baseline_connect4 in the baseline object"));
    let time = |socket: &UdpSocket, to: SocketAddr| {
        let start = Instant::now();
        for _ in 0..round_connects {
            socket
                .connect(to)
                .unwrap_or_else(|e| panic!("connect: {e}"));
        }
        start.elapsed().as_nanos() as f64 / f64::from(round_connects)
    };
    let opened = SocketAddr::from((address(4321), 8080));
    let missed = SocketAddr::from((Ipv4Addr::new(10, 223, 0, 1), 8080));
    let mut cidr = String::from("egress:\n  default: allow\n  rules:\n");
    let mut rng = ironclad_testing::rules::Rng::new(0xd0_3a15);
    cidr.push_str(&format!(
        "    - dst: {}/32\n      action: allow\n",
        address(4321)
    ));
    for _ in 1..NAMES {
        let mut a = Ipv4Addr::from(rng.next_u64() as u32);
        while a.octets()[0] == 127 || a.octets()[0] == 0 || a.octets()[0] == 10 {
            a = Ipv4Addr::from(rng.next_u64() as u32);
        }
        cidr.push_str(&format!("    - dst: {a}/32\n      action: deny\n"));
    }
    // The CIDR policy last: a policy without domain rules empties the table.
    let cases: [(&str, &str, SocketAddr); 3] = [
        ("names_10000", DOMAIN_POLICY, opened),
        ("names_miss", DOMAIN_POLICY, missed),
        ("cidr_10000", &cidr, opened),
    ];
    let mut table = Vec::new();
    let first_rule = || {
        firewall
            .rule_counters()
            .unwrap_or_else(|e| panic!("{e}"))
            .first()
            .map_or(0, |(_, n)| *n)
    };
    for (name, yaml, to) in cases {
        apply(&firewall, yaml);
        // A rule's count survives a reload that keeps it: this case's own decisions
        // are the difference.
        let counted_before = first_rule();
        let mut rounds: [Vec<f64>; 3] = Default::default();
        for _ in 0..round_count {
            rounds[0].push(time(&connect_sockets[0], to));
            {
                let _link = empty_program
                    .attach_cgroup(std::os::fd::AsRawFd::as_raw_fd(&empty_dir))
                    .unwrap_or_else(|e| panic!("attaching the empty connect4 program: {e}"));
                rounds[1].push(time(&connect_sockets[1], to));
            }
            let attached = firewall
                .attach(cgroups[2].path())
                .unwrap_or_else(|e| panic!("{e}"));
            rounds[2].push(time(&connect_sockets[2], to));
            drop(attached);
        }
        // Which rule decided: the domain rule (slot 1) for the opened destination, the
        // default for the other; the CIDR policy's first rule for its own.
        let hits = first_rule() - counted_before;
        let all = (round_count as u64) * u64::from(round_connects);
        assert_eq!(
            hits,
            if name == "names_miss" { 0 } else { all },
            "{name}: rule 1 decided"
        );
        record(&format!("domains_connect/{name}"), Unit::Ns, &rounds[2]);
        record(
            &format!("domains_connect/{name}/bare"),
            Unit::Ns,
            &rounds[0],
        );
        record(
            &format!("domains_connect/{name}/empty"),
            Unit::Ns,
            &rounds[1],
        );
        table.push((name, min(&rounds[0]), min(&rounds[1]), min(&rounds[2])));
    }
    reading.store(false, Ordering::Relaxed);
    let _ = drain.join();
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    println!(
        "\nDNS answer, send + recv (minimums of {round_count} rounds x {answers}): bare {:.0} ns, plain {:.0} ns, opened {:.0} ns",
        min(&answer[0]),
        min(&answer[1]),
        min(&answer[2]),
    );
    println!(
        "the kernel's DNS programs, ns per run (minimum of rounds): ic_dns_in {:.0} plain, {:.0} opening (answer to enforceable); ic_dns_out {:.0} plain, {:.0} remembering the query",
        min(&program[0]),
        min(&program[2]),
        min(&program[1]),
        min(&program[3]),
    );
    println!(
        "connect() with 10,000 addresses (paired minimums of {round_count} rounds x {round_connects}):"
    );
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8}",
        "case", "bare", "empty", "ns", "over"
    );
    for (name, bare, empty, fw) in table {
        println!(
            "{name:<14} {bare:>8.0} {empty:>8.0} {fw:>8.0} {:>8.0}",
            fw - bare
        );
    }
}

criterion_group!(benches, domains);
criterion_main!(benches);
