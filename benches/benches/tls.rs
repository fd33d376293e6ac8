//! Added cost of TLS capture per SSL call.
//!
//! A Python process (the system's libssl.so.3 through the `ssl` module) runs two
//! `SSLObject`s over memory BIOs, so no socket or syscall is involved. `tls/ssl_write/*`
//! times only the client's `write` calls (`SSL_write_ex` of 64 bytes);
//! `tls/ssl_read_write/*` times every call of a mix, the client's writes and the
//! server's reads of them (`SSL_read_ex`), one iteration a call. `tls/ssl_write/bare` runs
//! with no probe; `tls/ssl_write/probed` with the TLS monitor attached and the Python
//! interpreter in scope (every call captured into the ring buffer, drained by a thread).
//! The difference is the probe's cost per call. `probed_at_symbols` is the same with
//! the probes on the exported functions (`TlsPlacement::Symbols`), whose first
//! instruction the kernel single-steps out of line. `out_of_scope` attaches the probes to
//! the library with the process out of scope (the traps fire and return early);
//! `out_of_scope_per_process` attaches them per process in scope (`TlsAttach::PerProcess`),
//! so the process out of scope carries no breakpoint (checked).
//!
//! `tls/tcp_recv/*`: what the TLS section costs every other process on the host, through
//! the receive hook that names connections (`ic_tls_sock_read` runs for every receive
//! copied to user space): 64 bytes written and read back over a loopback TCP connection
//! per iteration, `bare` with no monitor, `monitored` with the monitor attached to the
//! library and this process out of scope. Measured in alternating rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ironclad_bpf::{Loader, TlsAttach, TlsMonitor, TlsPlacement, TlsPolicy, TlsScope};
use ironclad_events::{Fanout, Overflow};
use ironclad_testing::BpffsDir;

const SCRIPT: &str = r#"
import ssl, sys, time, subprocess, os
n = int(sys.argv[1])
cert, key = sys.argv[2], sys.argv[3]
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False; cctx.verify_mode = ssl.CERT_NONE
c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
c = cctx.wrap_bio(c_in, c_out); s = sctx.wrap_bio(s_in, s_out, server_side=True)
def pump():
    s_in.write(c_out.read()); c_in.write(s_out.read())
for _ in range(20):
    for side in (c, s):
        try: side.do_handshake()
        except ssl.SSLWantReadError: pass
    pump()
data = b"x" * 64
total = 0
if sys.argv[4] == "write":
    for _ in range(n):
        t = time.perf_counter_ns(); c.write(data); total += time.perf_counter_ns() - t
        s_in.write(c_out.read()); s.read(64)
else:
    # n calls, half of them the client's writes and half the server's reads of what
    # was written, each timed; the record's move between the BIOs is not.
    for i in range(n):
        if i % 2 == 0:
            t = time.perf_counter_ns(); c.write(data); total += time.perf_counter_ns() - t
            s_in.write(c_out.read())
        else:
            t = time.perf_counter_ns(); got = s.read(64); total += time.perf_counter_ns() - t
            assert len(got) == 64
print(total)
"#;

/// What the script times: `SSL_write_ex` calls alone, or SSL calls alternating a
/// write and a read of what it wrote.
#[derive(Clone, Copy)]
enum Calls {
    Write,
    ReadWrite,
}

fn python() -> PathBuf {
    ironclad_testing::python_interpreter().unwrap_or_else(|e| panic!("python3: {e}"))
}

fn run(python: &Path, dir: &Path, calls: Calls, iters: u64) -> Duration {
    let out = Command::new(python)
        .args(["-c", SCRIPT, &iters.to_string()])
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .arg(match calls {
            Calls::Write => "write",
            Calls::ReadWrite => "rw",
        })
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(out.status.success(), "{out:?}");
    let ns: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad output {out:?}: {e}"));
    Duration::from_nanos(ns)
}

fn tls(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    ironclad_testing::self_signed_cert(dir.path()).unwrap_or_else(|e| panic!("openssl req: {e}"));
    let python = python();
    for (group_name, calls) in [
        ("tls/ssl_write", Calls::Write),
        ("tls/ssl_read_write", Calls::ReadWrite),
    ] {
        ssl_calls(c, group_name, calls, &python, dir.path());
    }
}

/// One group: `bare`, then each placement and scope of the probes.
fn ssl_calls(c: &mut Criterion, group_name: &str, calls: Calls, python: &Path, dir: &Path) {
    let mut group = c.benchmark_group(group_name);
    // Thirty samples: the goals are judged on minimums (out of scope) and medians
    // (captured), and on this VM ten samples left both within ±0.3 µs of run-to-run
    // noise.
    group.sample_size(30);
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| run(python, dir, calls, iters))
    });

    for (name, scope, attach, placement) in [
        // Per-process probes, the process not in scope: no breakpoint in it at all.
        // Measured right after `bare`, which it is compared with.
        (
            "out_of_scope_per_process",
            TlsScope::Pid(u32::MAX),
            TlsAttach::PerProcess,
            TlsPlacement::Auto,
        ),
        (
            "probed",
            TlsScope::Exe(python.to_path_buf()),
            TlsAttach::Library,
            TlsPlacement::Auto,
        ),
        // The probes on the exported functions, whose first instruction the kernel
        // single-steps out of line (a second trap per probe).
        (
            "probed_at_symbols",
            TlsScope::Exe(python.to_path_buf()),
            TlsAttach::Library,
            TlsPlacement::Symbols,
        ),
        // Attached to the library, the process not in scope: the probes fire and
        // return early.
        (
            "out_of_scope",
            TlsScope::Pid(u32::MAX),
            TlsAttach::Library,
            TlsPlacement::Auto,
        ),
    ] {
        let monitor = MonitorThread::start(scope, attach, placement);
        let timed = std::cell::Cell::new(0u64);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed.set(timed.get() + iters);
                run(python, dir, calls, iters)
            })
        });
        let (decoded, lost) = monitor.stop();
        println!("{group_name}/{name}: {decoded} events decoded, {lost} lost to a full ring");
        // The figure is of the path its name says: every call captured (or counted as
        // lost) when in scope, none when out of scope.
        if name.starts_with("probed") {
            assert!(
                decoded + lost >= timed.get(),
                "probed: {} calls, {decoded} captured, {lost} lost",
                timed.get()
            );
        } else {
            assert_eq!((decoded, lost), (0, 0), "out of scope: nothing captured");
        }
    }
    group.finish();
}

/// A TLS monitor on its own thread, which keeps draining the ring buffer.
struct MonitorThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl MonitorThread {
    fn start(scope: TlsScope, attach: TlsAttach, placement: TlsPlacement) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let pins = BpffsDir::new("benchtls").unwrap_or_else(|e| panic!("{e}"));
            let loader = Loader::builder()
                .pin_root(pins.path())
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            let mut policy = TlsPolicy::default();
            policy.scope = vec![scope];
            policy.attach = attach;
            policy.placement = placement;
            policy.max_bytes = 64;
            let monitor = TlsMonitor::start(&loader, &policy).unwrap_or_else(|e| panic!("{e}"));
            let fanout = Arc::new(Fanout::new());
            let sub = fanout.subscribe("bench", 1024, Overflow::DropOldest);
            let reader = monitor.events(fanout).unwrap_or_else(|e| panic!("{e}"));
            let _ = ready_tx.send(());
            while !flag.load(Ordering::Relaxed) {
                // The daemon's poll interval.
                let _ = reader.poll(Duration::from_millis(100));
                while sub.receiver().try_recv().is_ok() {}
            }
            // What the last wait left behind.
            let _ = reader.drain();
            assert!(
                attach == TlsAttach::Library || monitor.probed_processes().is_empty(),
                "per-process probes on a process out of scope"
            );
            (reader.stats().decoded(), monitor.lost_chunks().unwrap_or(0))
        });
        let _ = ready_rx.recv();
        Self { stop, thread }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// Iterations of a 64-byte write and read back over a loopback TCP connection.
fn tcp_round_trips(pair: &mut (std::net::TcpStream, std::net::TcpStream), iters: u64) -> Duration {
    use std::io::{Read, Write};
    let data = [7u8; 64];
    let mut back = [0u8; 64];
    let start = std::time::Instant::now();
    for _ in 0..iters {
        pair.0.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
        pair.1
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    start.elapsed()
}

fn tcp_recv(c: &mut Criterion) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let client =
        std::net::TcpStream::connect(listener.local_addr().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let (server, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
    client.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    let mut pair = (client, server);
    let mut group = c.benchmark_group("tls/tcp_recv");
    group.sample_size(30);
    // Alternating rounds, so a drift of the machine shows in both.
    for round in 0..3 {
        group.bench_function(format!("bare/{round}"), |b| {
            b.iter_custom(|iters| tcp_round_trips(&mut pair, iters))
        });
        let monitor = MonitorThread::start(
            TlsScope::Pid(u32::MAX),
            TlsAttach::Library,
            TlsPlacement::Auto,
        );
        group.bench_function(format!("monitored/{round}"), |b| {
            b.iter_custom(|iters| tcp_round_trips(&mut pair, iters))
        });
        let (decoded, lost) = monitor.stop();
        assert_eq!((decoded, lost), (0, 0), "out of scope: nothing captured");
    }
    group.finish();
}

criterion_group!(benches, tls, tcp_recv);
criterion_main!(benches);
