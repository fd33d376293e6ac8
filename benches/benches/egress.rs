//! Added cost of the identity firewall per `connect()`.
//!
//! The benchmark process moves itself into a fresh cgroup and times `connect()` of a UDP
//! socket to a listener on 127.0.0.1: the same `cgroup/connect4` hook a TCP connect
//! runs, without the handshake and TIME_WAIT noise of TCP on loopback (which dominated
//! and varied by milliseconds here). `egress/connect/bare` runs with no program
//! attached, `egress/connect/empty_program` with a program that only returns 1 (what
//! the kernel's hook costs whatever the program does), then `egress/connect/rules_10`
//! and `egress/connect/rules_10000` with the firewall attached to that cgroup. Ten rules
//! for this process's uid (none of which matches, so all are examined before the
//! default) are present in both policies; the second adds 9,990 rules for other uids,
//! which the kernel never looks at. `egress/connect/rules_0`: the hook with no rule
//! (what deciding costs before any rule is looked at). `egress/connect/shared_1000` and `shared_10000`:
//! that many rules all for this process's uid (the identity every rule shares), each
//! `dst 10.X.Y.0/24 port P deny`, none matching the loopback listener: the rows the
//! per-identity classifier is for (a scan of the identity's rules would grow with them).
//! `egress/connect/scattered_10000`: the same count, each rule's destination a /32 drawn
//! at random (a threat feed's shape, not networks side by side), none on loopback.
//! `egress/connect/named_10000`: `shared_10000` whose last rule names 127.0.0.0/8 (on
//! another port): the destination is one a rule names, so the key's classifier runs.
//! `egress/connect/exe_1` and `exe_10000`: rules as users write identity rules, on this
//! benchmark's executable (its inode, the process table's record of the caller), all
//! but one denying scattered /24s and /32s, the last allowing the listener's address
//! and port, the default denying: the executable's path through the firewall and the
//! destination lookup a named destination takes, with one rule and with 10,000.
//!
//! `egress_rounds/*`: the same policies, paired round by round. Criterion's rows run one
//! after the other, and on a noisy machine a whole row is sometimes slowed by a few
//! hundred nanoseconds (more than the programs differ). Here each round times
//! `ROUND_CONNECTS` `connect()` three times in a row: with nothing attached anywhere,
//! with the empty program attached to one cgroup, with the firewall attached to another
//! (each of the last two on a socket created in its cgroup: a socket runs the hooks of
//! the cgroup it was created in), so a slow spell lands on all three, and the minimums
//! of `ROUNDS` rounds are compared. Each round attaches the program it times and
//! detaches it after: a `connect4` program attached to any cgroup turns the hook on for
//! every socket on the host (a static key), so a socket in a cgroup with nothing
//! attached does not time the bare call while another cgroup has a program.

use std::net::UdpSocket;
use std::time::Instant;

#[path = "support/egress_cgroup.rs"]
mod egress_cgroup;

use criterion::{criterion_group, criterion_main, Criterion};
use egress_cgroup::{apply, enter, leave};
use ironclad_benches::figures::{record, Unit};
use ironclad_bpf::{EgressFirewall, Loader};
use ironclad_testing::{BpffsDir, TestCgroup};

fn policy(other_uids: u32) -> String {
    let mut yaml = String::from("egress:\n  default: allow\n  rules:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "    - uid: 0\n      dst: 10.{i}.0.0/16\n      action: deny\n"
        ));
    }
    for uid in 0..other_uids {
        yaml.push_str(&format!(
            "    - uid: {}\n      dst: 10.0.0.0/8\n      action: deny\n",
            100_000 + uid
        ));
    }
    yaml
}

/// `count` rules sharing this process's uid, none matching 127.0.0.1.
fn shared(count: u32) -> String {
    let mut yaml = String::from("egress:\n  default: allow\n  rules:\n");
    for i in 0..count {
        yaml.push_str(&format!(
            "    - uid: 0\n      dst: 10.{}.{}.0/24\n      ports: {}\n      action: deny\n",
            (i >> 8) & 0xff,
            i & 0xff,
            1000 + i % 5000
        ));
    }
    yaml
}

/// `count` rules sharing this process's uid, each `dst A.B.C.D port P deny` at an
/// address drawn at random (a feed's shape: scattered /32s, no two in one /24 but by
/// chance), none in 127.0.0.0/8.
fn scattered(count: u32) -> String {
    let mut rng = ironclad_testing::rules::Rng::new(0x5ca7_7e4e);
    let mut yaml = String::from("egress:\n  default: allow\n  rules:\n");
    for i in 0..count {
        let mut addr = std::net::Ipv4Addr::from(rng.next_u64() as u32);
        while addr.octets()[0] == 127 || addr.octets()[0] == 0 {
            addr = std::net::Ipv4Addr::from(rng.next_u64() as u32);
        }
        yaml.push_str(&format!(
            "    - uid: 0\n      dst: {addr}\n      ports: {}\n      action: deny\n",
            1000 + i % 5000
        ));
    }
    yaml
}

/// [`shared`]`(count - 1)` and a last rule naming the listener's network on another
/// port: the destination filter lets the connection through to the identity key's
/// classifier, which finds no rule for the port.
fn named(count: u32) -> String {
    let mut yaml = shared(count - 1);
    yaml.push_str("    - uid: 0\n      dst: 127.0.0.0/8\n      ports: 1\n      action: deny\n");
    yaml
}

/// Rules on this benchmark's own executable, as users write identity rules: `count - 1`
/// of them deny scattered destinations (a /24 or a /32 drawn at random, half each, on
/// ports 1000..6000, none in 127.0.0.0/8), and one, the last, allows the listener's
/// address and port; the default denies. Every timed `connect()` is allowed by that
/// rule: the executable's identity is looked up, its destination found among the
/// prefixes the other rules name, then its port's class.
fn exe_rules(count: u32, port: u16) -> String {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("this benchmark's path: {e}"));
    let exe = exe.display();
    let mut rng = ironclad_testing::rules::Rng::new(0xe4e_5eed);
    let mut yaml = String::from("egress:\n  default: deny\n  rules:\n");
    for i in 0..count - 1 {
        let mut addr = std::net::Ipv4Addr::from(rng.next_u64() as u32);
        while addr.octets()[0] == 127 || addr.octets()[0] == 0 {
            addr = std::net::Ipv4Addr::from(rng.next_u64() as u32);
        }
        let dst = if i % 2 == 0 {
            format!("{addr}/32")
        } else {
            let [a, b, c, _] = addr.octets();
            format!("{a}.{b}.{c}.0/24")
        };
        yaml.push_str(&format!(
            "    - exe: {exe}\n      dst: {dst}\n      ports: {}\n      action: deny\n",
            1000 + i % 5000
        ));
    }
    yaml.push_str(&format!(
        "    - exe: {exe}\n      dst: 127.0.0.1/32\n      ports: {port}\n      action: allow\n"
    ));
    yaml
}

/// Paired rounds per policy, and `connect()` calls per socket in each.
const ROUNDS: usize = 15;
const ROUND_CONNECTS: u32 = 50_000;

/// The policies of both groups, by row name; `port` is the listener's.
fn cases(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("rules_0", String::from("egress:\n  default: allow\n")),
        ("rules_10", policy(0)),
        ("rules_10000", policy(9_990)),
        ("shared_1000", shared(1_000)),
        ("shared_10000", shared(10_000)),
        ("scattered_10000", scattered(10_000)),
        ("named_10000", named(10_000)),
        ("exe_1", exe_rules(1, port)),
        ("exe_10000", exe_rules(10_000, port)),
    ]
}

/// The `connect()` calls the firewall has allowed so far (every timed one must be, or
/// a row would time the bare call).
fn allowed(firewall: &EgressFirewall) -> u64 {
    firewall
        .total(ironclad_core::abi::EgressTotal::Allowed)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn paired(_: &mut Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    let round_connects = ironclad_benches::repeats(ROUND_CONNECTS);
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let cgroups = ["bench-eg-bare", "bench-eg-empty", "bench-eg-fw"]
        .map(|tag| TestCgroup::new(tag).unwrap_or_else(|e| panic!("{e}")));
    let sockets = cgroups.each_ref().map(|cgroup| {
        enter(cgroup.path());
        UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"))
    });
    leave();
    let baseline = libbpf_rs::ObjectBuilder::default()
        .open_memory(ironclad_bpf::object::baseline().elf())
        .and_then(|o| o.load())
        .unwrap_or_else(|e| panic!("loading the baseline object: {e}"));
    let empty_dir = std::fs::File::open(cgroups[1].path()).unwrap_or_else(|e| panic!("{e}"));
    let empty_program = baseline
        .progs_mut()
        .find(|p| p.name() == "ic_baseline_connect4")
        .unwrap_or_else(|| panic!("ic_baseline_connect4 in the baseline object"));
    let pins = BpffsDir::new("bench-eg-rounds").unwrap_or_else(|e| panic!("{e}"));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let firewall = EgressFirewall::load(&loader).unwrap_or_else(|e| panic!("{e}"));
    // ns per connect() of one run of round_connects.
    let time = |socket: &UdpSocket| {
        let start = Instant::now();
        for _ in 0..round_connects {
            socket
                .connect(addr)
                .unwrap_or_else(|e| panic!("connect: {e}"));
        }
        start.elapsed().as_nanos() as f64 / f64::from(round_connects)
    };
    let mut table = Vec::new();
    for (name, yaml) in cases(addr.port()) {
        apply(&firewall, &yaml);
        let before = allowed(&firewall);
        let mut rounds: [Vec<f64>; 3] = Default::default();
        for _ in 0..round_count {
            rounds[0].push(time(&sockets[0]));
            {
                let _link = empty_program
                    .attach_cgroup(std::os::fd::AsRawFd::as_raw_fd(&empty_dir))
                    .unwrap_or_else(|e| panic!("attaching the empty connect4 program: {e}"));
                rounds[1].push(time(&sockets[1]));
            }
            let attached = firewall
                .attach(cgroups[2].path())
                .unwrap_or_else(|e| panic!("{e}"));
            rounds[2].push(time(&sockets[2]));
            drop(attached);
        }
        assert_eq!(
            allowed(&firewall) - before,
            round_count as u64 * u64::from(round_connects),
            "{name}: the firewall allowed every connect() of its socket, and no other"
        );
        let [bare, empty, fw] = &rounds;
        record(&format!("egress_rounds/{name}"), Unit::Ns, fw);
        record(&format!("egress_rounds/{name}/bare"), Unit::Ns, bare);
        record(&format!("egress_rounds/{name}/empty"), Unit::Ns, empty);
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        table.push((name, min(bare), min(empty), min(fw)));
    }
    drop(firewall);
    println!("\negress connect() (paired minimums of {round_count} rounds x {round_connects}):");
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "case", "bare", "empty", "ns", "over", "ratio"
    );
    for (name, bare, empty, fw) in table {
        println!(
            "{name:<18} {bare:>8.0} {empty:>8.0} {fw:>8.0} {:>8.0} {:>7.2}",
            fw - bare,
            fw / bare
        );
    }
}

fn egress(c: &mut Criterion) {
    use std::cell::Cell;
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let cgroup = TestCgroup::new("bench-egress").unwrap_or_else(|e| panic!("{e}"));
    enter(cgroup.path());
    // A socket belongs to the cgroup its creator was in when it was created: the
    // client must be created after the move, or no hook of this cgroup ever runs for
    // it (the decision count below checks that).
    let client = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("egress/connect");
    let connect = |iters: u64| {
        let start = Instant::now();
        for _ in 0..iters {
            client
                .connect(addr)
                .unwrap_or_else(|e| panic!("connect: {e}"));
        }
        start.elapsed()
    };
    group.bench_function("bare", |b| b.iter_custom(connect));
    {
        // The kernel's own cost of a cgroup/connect4 hook: the empty program
        // (bpf-src/baseline.bpf.c) attached to the same cgroup. Loaded with libbpf-rs
        // directly: it is a reference, not a feature of the library.
        let object = libbpf_rs::ObjectBuilder::default()
            .open_memory(ironclad_bpf::object::baseline().elf())
            .and_then(|o| o.load())
            .unwrap_or_else(|e| panic!("loading the baseline object: {e}"));
        let dir = std::fs::File::open(cgroup.path()).unwrap_or_else(|e| panic!("{e}"));
        let program = object
            .progs_mut()
            .find(|p| p.name() == "ic_baseline_connect4")
            .unwrap_or_else(|| panic!("ic_baseline_connect4 in the baseline object"));
        let _link = program
            .attach_cgroup(std::os::fd::AsRawFd::as_raw_fd(&dir))
            .unwrap_or_else(|e| panic!("attaching the empty connect4 program: {e}"));
        group.bench_function("empty_program", |b| b.iter_custom(connect));
    }

    let pins = BpffsDir::new("bench-egress").unwrap_or_else(|e| panic!("{e}"));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let firewall = EgressFirewall::load(&loader).unwrap_or_else(|e| panic!("{e}"));
    let _attached = firewall
        .attach(cgroup.path())
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, yaml) in cases(addr.port()) {
        apply(&firewall, &yaml);
        // Every timed connect() must have been decided by the hook (allowed: by the
        // default, or in the `exe_*` rows by the rule naming the listener), or the row
        // would time the bare call.
        let before = allowed(&firewall);
        let timed = Cell::new(0u64);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed.set(timed.get() + iters);
                connect(iters)
            })
        });
        assert_eq!(
            allowed(&firewall) - before,
            timed.get(),
            "{name}: the hook allowed every connect() timed"
        );
    }
    group.finish();
    drop(firewall);
    leave();
}

criterion_group!(benches, egress, paired);
criterion_main!(benches);
