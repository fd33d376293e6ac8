//! Added cost of the process cache per process: fork + exec + exit + wait of the
//! installed `/bin/true`, as `std::process::Command` runs it (clone, execve, exit).
//!
//! `process/spawn/bare` runs with no tracepoint attached; `process/spawn/cache` with the
//! [`ProcessMonitor`] running as an agent runs it: the three `tp_btf` programs write an
//! exec, a fork and an exit record per process, and the monitor's reader thread reads
//! them into the cache while the benchmark spawns. The closing summary alternates bare
//! and cached rounds (the monitor started and stopped between them, outside the timing),
//! so the two columns share the machine's state; read the paired minimums.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ironclad_benches::figures::{record, Unit};
use ironclad_bpf::{Loader, NullSink, ProcessMonitor};
use ironclad_policy::process::ProcessPolicy;

/// Rounds of the summary, and processes per round.
const ROUNDS: usize = 15;
const SPAWNS: u32 = 200;

fn spawn_true() {
    let status = Command::new("/bin/true")
        .status()
        .unwrap_or_else(|e| panic!("/bin/true: {e}"));
    assert!(status.success());
}

fn spawns(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        spawn_true();
    }
    start.elapsed()
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Nanoseconds per run of each of the monitor's programs, from the kernel's own
/// accounting (`kernel.bpf_stats_enabled`): the cost a process pays in the kernel.
fn per_run() -> Vec<(String, f64)> {
    libbpf_rs::query::ProgInfoIter::default()
        .filter_map(|info| {
            let name = info.name.to_string_lossy().into_owned();
            (name.starts_with("ic_process_") && info.run_cnt > 0)
                .then(|| (name, info.run_time_ns as f64 / info.run_cnt as f64))
        })
        .collect()
}

fn monitor(loader: &Loader) -> ProcessMonitor {
    ProcessMonitor::start(loader, &ProcessPolicy::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn process(c: &mut Criterion) {
    let round_count = ironclad_benches::rounds(ROUNDS);
    let loader = Loader::builder()
        .audit_sink(std::sync::Arc::new(NullSink))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("process/spawn");
    group.bench_function("bare", |b| b.iter_custom(spawns));
    {
        let stats_before = std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".to_string());
        std::fs::write(STATS, "1").unwrap_or_else(|e| panic!("{STATS}: {e}"));
        let m = monitor(&loader);
        let before = m.stats().unwrap_or_else(|e| panic!("{e}")).records;
        let mut timed = 0u64;
        group.bench_function("cache", |b| {
            b.iter_custom(|iters| {
                timed += iters;
                spawns(iters)
            })
        });
        let after = m.stats().unwrap_or_else(|e| panic!("{e}"));
        // fork, exec and exit of every timed process (and more from the host).
        assert!(
            after.records - before >= 3 * timed,
            "the cache saw {} records for {timed} processes",
            after.records - before
        );
        assert_eq!(after.lost, 0, "records lost: {after:?}");
        let runs = per_run();
        let _ = std::fs::write(STATS, stats_before.trim());
        for op in ["exec", "fork", "exit"] {
            let name = format!("ic_process_{op}");
            let (_, ns) = runs
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no run statistics for {name} in {runs:?}"));
            ironclad_benches::figures::record_one(&format!("process_tp/{op}"), Unit::Ns, *ns);
        }
    }
    group.finish();

    let mut bare = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..round_count {
        bare.push(spawns(u64::from(SPAWNS)) / SPAWNS);
        let m = monitor(&loader);
        cached.push(spawns(u64::from(SPAWNS)) / SPAWNS);
        let last = Command::new("/bin/true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = last.id();
        let _ = last.wait_with_output();
        let named = m
            .process(pid)
            .unwrap_or_else(|| panic!("pid {pid} not cached"));
        assert_eq!(named.exe.as_deref(), Some("/bin/true"));
    }
    let ns = |v: &[Duration]| v.iter().map(|d| d.as_nanos() as f64).collect::<Vec<_>>();
    record("process_spawn/bare", Unit::Ns, &ns(&bare));
    record("process_spawn/cache", Unit::Ns, &ns(&cached));
    let min = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
    println!(
        "process/spawn summary: bare {:?}, with the process cache {:?} per fork+exec+exit (minimum of {round_count} paired rounds of {SPAWNS})",
        min(&bare),
        min(&cached)
    );
}

criterion_group!(benches, process);
criterion_main!(benches);
