//! The control API of the daemon as shipped (`full_firewall run` on a veth pair, its
//! events file written by its own reader), measured from a client:
//!
//! - `api_rules/add/grpc`, `api_rules/remove/grpc`: a rule added (removed) through the
//!   Rust client, from the call to its answer, which comes once the kernel enforces it
//!   (the whole policy compiled again with the rule and applied as a reload);
//!   `api_rules/list/grpc`: the bare call (a rule list) on the same socket;
//! - `api_rules/add_remove/cli`: `full_firewall rules add` then `rules rm`, two
//!   processes, beside `api_rules/add_remove/nft`: `nft add element` then `nft delete
//!   element` on a set, the same pair of commands for nftables;
//! - `api_stream/events/10000`: 10,000 drop events received through `StreamEvents`
//!   while a flood from a denied source runs (raw SYNs from the namespace); the stream's
//!   own losses are recorded as `api_stream/lost` (0: it kept up with the daemon).
//!
//! - `daemon_start/small` and `daemon_start/feed_1000000`: from the daemon's exec to its
//!   `ready` line (every feature of the policy loaded, attached and enforcing), cold: a
//!   fresh pin directory each time, so nothing is reused from an earlier start. `small`
//!   denies one address; `feed_1000000` denies a 1M-line feed file shaped like a merged
//!   blocklist (`ironclad_testing::rules::blocklist_v4`: /24s, wider and narrower
//!   prefixes scattered over the whole space), its parse and aggregation included.
//!   (The peer's load of the same shape, `nft -f`, is `veth_drop/load/nftables/feed_1000000`
//!   in `shield.rs`: one load takes some 25 s, too long to repeat here.)
//!
//! The daemon binary: `$IRONCLAD_DAEMON` (dev.sh sets it to the static release build
//! the footprint check makes), else `target/release/full_firewall` (built if missing).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ironclad_api::v1::{
    stream_events_response, AddRuleRequest, ListRulesRequest, RemoveRuleRequest, Section,
    StreamEventsRequest,
};
use ironclad_benches::figures::{record_one, Unit};
use ironclad_testing::{BpffsDir, NetNs, VethPair};

const NET: &str = "10.249.7";

fn daemon_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IRONCLAD_DAEMON") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = root.join("target/release/full_firewall");
    if !release.exists() {
        let built = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "full_firewall"])
            .status()
            .expect("cargo build");
        assert!(built.success(), "building full_firewall");
    }
    release
}

/// The daemon, stopped (SIGTERM) and its pins removed when dropped.
struct Daemon {
    child: Child,
    binary: PathBuf,
    pins: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = Command::new(&self.binary)
            .args(["detach", "--pin-dir"])
            .arg(&self.pins)
            .output();
    }
}

fn start(binary: &Path, veth: &VethPair, pins: &BpffsDir, dir: &Path) -> Daemon {
    let config = dir.join("policy.yaml");
    std::fs::write(
        &config,
        format!("shield:\n  deny: [{NET}.3]\n  sample_rate: 1\n  events_per_second: 0\n"),
    )
    .expect("policy");
    let mut child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--iface", veth.host(), "--pin-dir"])
        .arg(pins.path())
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("full_firewall run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("full_firewall: ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the daemon is ready");
    Daemon {
        child,
        binary: binary.to_path_buf(),
        pins: pins.path().to_path_buf(),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

fn api(c: &mut Criterion) {
    let binary = daemon_binary();
    let ns = NetNs::new("bapi").expect("netns");
    let veth = VethPair::new(
        &ns,
        &[&format!("{NET}.1/24")],
        &[&format!("{NET}.2/24"), &format!("{NET}.3/24")],
    )
    .expect("veth");
    let pins = BpffsDir::new("bapi").expect("bpffs");
    let dir = tempfile::tempdir().expect("tmp");
    let _daemon = start(&binary, &veth, &pins, dir.path());
    let socket = dir.path().join("run/api.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = rt
        .block_on(ironclad_api::client::connect(&socket))
        .expect("connect");
    let mut n = 0u32;
    let mut next_rule = move || {
        n += 1;
        format!("10.251.{}.{}/32", (n / 250) % 250, n % 250 + 1)
    };

    let mut g = c.benchmark_group("api_rules");
    g.sample_size(20);
    g.bench_function("add/grpc", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rule = next_rule();
                let started = Instant::now();
                let added = rt
                    .block_on(client.add_rule(AddRuleRequest {
                        section: Section::ShieldDeny as i32,
                        rule,
                        comment: String::new(),
                    }))
                    .expect("add")
                    .into_inner();
                total += started.elapsed();
                rt.block_on(client.remove_rule(RemoveRuleRequest { id: added.id }))
                    .expect("remove");
            }
            total
        });
    });
    g.bench_function("remove/grpc", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let added = rt
                    .block_on(client.add_rule(AddRuleRequest {
                        section: Section::ShieldDeny as i32,
                        rule: next_rule(),
                        comment: String::new(),
                    }))
                    .expect("add")
                    .into_inner();
                let started = Instant::now();
                rt.block_on(client.remove_rule(RemoveRuleRequest { id: added.id }))
                    .expect("remove");
                total += started.elapsed();
            }
            total
        });
    });
    g.bench_function("list/grpc", |b| {
        b.iter(|| {
            rt.block_on(client.list_rules(ListRulesRequest { section: 0 }))
                .expect("list")
        });
    });
    g.bench_function("add_remove/cli", |b| {
        b.iter(|| {
            let rule = next_rule();
            let out = Command::new(&binary)
                .args(["rules", "add", "shield.deny", &rule, "--socket"])
                .arg(&socket)
                .output()
                .expect("rules add");
            assert!(out.status.success(), "{out:?}");
            let id = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .expect("id")
                .to_string();
            run(Command::new(&binary)
                .args(["rules", "rm", &id, "--socket"])
                .arg(&socket));
        });
    });
    run(Command::new("nft").args(["add", "table", "inet", "ironclad_bench_api"]));
    run(Command::new("nft").args([
        "add",
        "set",
        "inet",
        "ironclad_bench_api",
        "deny",
        "{ type ipv4_addr; flags interval; }",
    ]));
    g.bench_function("add_remove/nft", |b| {
        b.iter(|| {
            let rule = next_rule();
            let element = format!("{{ {rule} }}");
            run(Command::new("nft").args([
                "add",
                "element",
                "inet",
                "ironclad_bench_api",
                "deny",
                &element,
            ]));
            run(Command::new("nft").args([
                "delete",
                "element",
                "inet",
                "ironclad_bench_api",
                "deny",
                &element,
            ]));
        });
    });
    g.finish();
    run(Command::new("nft").args(["delete", "table", "inet", "ironclad_bench_api"]));

    // Events through a stream while a denied source floods.
    const EVENTS: u64 = 10_000;
    let mut g = c.benchmark_group("api_stream");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    let mut lost_most = 0u64;
    g.bench_function(format!("events/{EVENTS}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut stream = rt
                    .block_on(client.stream_events(StreamEventsRequest {
                        kinds: vec!["shield_drop".to_string()],
                        queue: 65536,
                        ..Default::default()
                    }))
                    .expect("stream")
                    .into_inner();
                let flood = ironclad_testing::flood::Flood::start(
                    &ns,
                    format!("{NET}.3").parse().expect("addr"),
                    0,
                    format!("{NET}.1").parse().expect("addr"),
                    80,
                    11,
                )
                .expect("flood");
                let (got, lost, took) = rt.block_on(async {
                    let (mut got, mut lost) = (0u64, 0u64);
                    let mut started = None;
                    while got < EVENTS {
                        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
                            .await
                            .expect("events keep coming")
                            .expect("stream")
                            .expect("open");
                        match item.item {
                            Some(stream_events_response::Item::Event(_)) => {
                                started.get_or_insert_with(Instant::now);
                                got += 1;
                            }
                            Some(stream_events_response::Item::Lost(l)) => lost = l.total,
                            None => {}
                        }
                    }
                    (got, lost, started.map_or(Duration::ZERO, |s| s.elapsed()))
                });
                let _ = flood.stop();
                assert_eq!(got, EVENTS);
                lost_most = lost_most.max(lost);
                total += took;
            }
            total
        });
    });
    g.finish();
    record_one("api_stream/lost", Unit::Count, lost_most as f64);
}

/// The daemon's cold start with `config`: exec to `ready`, then stopped and its pins
/// removed (not timed).
fn start_once(binary: &Path, config: &Path, iface: &str, pins: &Path, dir: &Path) -> Duration {
    let began = Instant::now();
    let mut child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--iface", iface, "--pin-dir"])
        .arg(pins)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .arg("--detach-on-exit")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("full_firewall run");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("full_firewall: ready"));
    let took = began.elapsed();
    assert!(ready, "the daemon ended before it was ready");
    // The rest of its output, so that it never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let _ = child.wait();
    let _ = drain.join();
    let _ = Command::new(binary)
        .args(["detach", "--pin-dir"])
        .arg(pins)
        .output();
    took
}

fn daemon_start(c: &mut Criterion) {
    let binary = daemon_binary();
    let ns = NetNs::new("bstart").expect("netns");
    let veth = VethPair::new(&ns, &["10.249.8.1/24"], &["10.249.8.2/24"]).expect("veth");
    let pins = BpffsDir::new("bstart").expect("bpffs");
    let dir = tempfile::tempdir().expect("tmp");
    let feed = dir.path().join("feed.txt");
    let prefixes = ironclad_testing::rules::blocklist_v4(
        1_000_000,
        31,
        &["10.249.8.0/24".parse().expect("network")],
    );
    let mut text = String::with_capacity(prefixes.len() * 18);
    for p in &prefixes {
        text.push_str(&p.to_string());
        text.push('\n');
    }
    std::fs::write(&feed, &text).expect("feed");
    let small = dir.path().join("small.yaml");
    std::fs::write(&small, "shield:\n  deny: [192.0.2.7]\n").expect("policy");
    let big = dir.path().join("feed.yaml");
    std::fs::write(
        &big,
        format!(
            "shield:\n  deny_feeds:\n    - path: {}\n      format: plain\n",
            feed.display()
        ),
    )
    .expect("policy");
    let mut group = c.benchmark_group("daemon_start");
    group.sample_size(10);
    group.sampling_mode(criterion::SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    let mut n = 0u32;
    for (name, config) in [("small", &small), ("feed_1000000", &big)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        let pin = pins.path().join(format!("s{n}"));
                        start_once(&binary, config, veth.host(), &pin, dir.path())
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, api, daemon_start);
criterion_main!(benches);
