//! Added cost of the Sentinel per `open()`+`close()` of an unprotected file.
//!
//! Runs only where BPF-LSM is active: `guest/run.sh --bench` boots the guest kernel and
//! runs it there (the build machines cannot load LSM programs). The benchmark process is
//! the agent: it times opens of `/run/ironclad-bench/free.txt` for reading and for
//! writing with no Sentinel (`bare`), then starts the Sentinel over a protected directory
//! beside it and times the same opens again (`sentinel`). A read-only open costs the
//! `file_open` hook's mode test; a write-open also looks the file and its directories up
//! in the inode table. The closing summary gives minimums over many rounds, the bare
//! figure measured before the Sentinel starts and again after it stops.
//! Under QEMU's TCG every instruction is emulated, so absolute times are far above a
//! real machine's; the ratio is the figure to read.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ironclad_benches::figures::{record, Unit};
use ironclad_bpf::{Loader, NullSink};
use ironclad_sentinel::Sentinel;

const DIR: &str = "/run/ironclad-bench";
/// Rounds of the summary's timing loops, and opens per round.
const ROUNDS: usize = 31;
const OPENS: u32 = 2_000;

fn open_close(path: &Path, write: bool) {
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    drop(file);
}

/// The mean time of `n` opens, for each of `rounds` rounds.
fn per_open(path: &Path, write: bool, rounds: usize, n: u32) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                open_close(path, write);
            }
            start.elapsed() / n
        })
        .collect()
}

fn ns(rounds: &[Duration]) -> Vec<f64> {
    rounds.iter().map(|d| d.as_nanos() as f64).collect()
}

fn min(rounds: &[Duration]) -> Duration {
    rounds.iter().copied().min().unwrap_or_default()
}

fn sentinel(c: &mut Criterion) {
    let lsm = std::fs::read_to_string(ironclad_sentinel::LSM_LIST).unwrap_or_default();
    assert!(
        lsm.split(',').any(|l| l.trim() == "bpf"),
        "the Sentinel benchmark needs BPF-LSM; run it with guest/run.sh --bench"
    );
    std::fs::create_dir_all(format!("{DIR}/protected")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(format!("{DIR}/protected/app.yaml"), "a: 1\n").unwrap_or_else(|e| panic!("{e}"));
    let free = Path::new(DIR).join("free.txt");
    std::fs::write(&free, "free\n").unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("sentinel/open_close");
    group.bench_function("read/bare", |b| b.iter(|| open_close(&free, false)));
    group.bench_function("write/bare", |b| b.iter(|| open_close(&free, true)));
    let mut bare = (
        per_open(&free, false, ROUNDS, OPENS),
        per_open(&free, true, ROUNDS, OPENS),
    );

    let loader = Loader::builder()
        .pin_root("/sys/fs/bpf/ironclad-bench")
        .audit_sink(Arc::new(NullSink))
        .build()
        .unwrap_or_else(|e| panic!("loader: {e}"));
    let sentinel = Sentinel::builder()
        .protect(format!("{DIR}/protected"))
        .pin(false)
        .start(&loader)
        .unwrap_or_else(|e| panic!("sentinel: {e}"));
    // The hooks are in force: another program's write-open of the protected file is
    // refused (this process is the agent, which the Sentinel lets through), or the
    // rows below would time opens with nothing attached.
    let protected = format!("{DIR}/protected/app.yaml");
    let status = std::process::Command::new("sh")
        .args(["-c", &format!(": > {protected}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    assert!(
        !status.success() && std::fs::read_to_string(&protected).ok().as_deref() == Some("a: 1\n"),
        "the Sentinel refuses another program's write to a protected file ({status})"
    );
    group.bench_function("read/sentinel", |b| b.iter(|| open_close(&free, false)));
    group.bench_function("write/sentinel", |b| b.iter(|| open_close(&free, true)));
    group.finish();
    let with = (
        per_open(&free, false, ROUNDS, OPENS),
        per_open(&free, true, ROUNDS, OPENS),
    );
    sentinel.stop().unwrap_or_else(|e| panic!("stop: {e}"));
    // Bare again after the Sentinel is gone: the lower of the two bare figures is the
    // baseline, so a slow stretch of the emulator does not pass for hook cost.
    bare.0.extend(per_open(&free, false, ROUNDS, OPENS));
    bare.1.extend(per_open(&free, true, ROUNDS, OPENS));
    for (name, rounds) in [
        ("read/bare", &bare.0),
        ("write/bare", &bare.1),
        ("read/sentinel", &with.0),
        ("write/sentinel", &with.1),
    ] {
        record(&format!("sentinel_rounds/{name}"), Unit::Ns, &ns(rounds));
    }

    println!(
        "\nSentinel: added cost per open+close of an unprotected file (minimum of {ROUNDS} rounds x {OPENS}; bare: before and after)"
    );
    println!("| open      | bare ns | with Sentinel ns | added ns | added % |");
    println!("|-----------|---------|------------------|----------|---------|");
    for (name, b, w) in [
        ("O_RDONLY", &bare.0, &with.0),
        ("O_WRONLY", &bare.1, &with.1),
    ] {
        let (b, w) = (min(b).as_nanos() as f64, min(w).as_nanos() as f64);
        println!(
            "| {name:<9} | {b:>7.0} | {w:>16.0} | {:>8.0} | {:>6.1}% |",
            w - b,
            (w - b) / b * 100.0
        );
    }
}

criterion_group!(benches, sentinel);
criterion_main!(benches);
