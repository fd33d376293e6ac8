//! TLS plaintext capture with real clients on loopback: `openssl s_server`, `openssl
//! s_client`, `curl -k` and a Python client, against the system's libssl.so.3.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclad_bpf::{Loader, TlsMonitor, TlsPolicy, TlsScope};
use ironclad_events::{Event, Fanout, Http, Overflow, TlsData, TlsDirection};
use ironclad_testing::require_privileges;
use ironclad_testing::{self_signed_cert, BpffsDir};

const REQUEST: &str = "GET /secret-path HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A throwaway self-signed certificate and an `openssl s_server -www` on 127.0.0.1.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed_cert(dir.path()).expect("openssl req");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        ironclad_testing::wait_for_server("openssl s_server", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .expect("s_server");
        Self { child, port, dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("readlink -f \"$(command -v {program})\"")])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs `openssl s_client`, sends REQUEST, waits for the server to close; returns pid.
fn s_client(port: u16) -> u32 {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let pid = child.id();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(REQUEST.as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("s_client");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("HTTP/1.0 200 ok"),
        "s_client got no response: {out:?}"
    );
    pid
}

/// Runs `curl -k` for /secret-path; returns its pid.
fn curl(port: u16) -> u32 {
    let child = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{port}/secret-path"),
        ])
        .spawn()
        .expect("curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    pid
}

/// The tests of this file run one capture at a time: probes on the library (most
/// tests) put a breakpoint into every process that maps it, which the per-process test
/// must not see.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Capture {
    monitor: TlsMonitor,
    reader: ironclad_bpf::EventReader,
    sub: ironclad_events::Subscription<Event>,
    _pins: BpffsDir,
    _loader: Loader,
    /// Last: released after the monitor has detached (fields drop in order).
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Capture {
    fn start(config: TlsPolicy) -> Self {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pins = BpffsDir::new("tls").expect("bpffs");
        let loader = Loader::builder()
            .pin_root(pins.path())
            .build()
            .expect("loader");
        let monitor = TlsMonitor::start(&loader, &config).expect("start TLS monitor");
        let fanout = Arc::new(Fanout::new());
        let sub = fanout.subscribe("test", 100_000, Overflow::DropNewest);
        let reader = monitor.events(fanout.clone()).expect("events");
        Self {
            monitor,
            reader,
            sub,
            _pins: pins,
            _loader: loader,
            _serial: serial,
        }
    }

    /// Every event published so far (TLS data and DLP findings).
    fn all_events(&self) -> Vec<Event> {
        self.reader.drain().expect("drain");
        self.sub.receiver().try_iter().collect()
    }

    fn events(&self) -> Vec<TlsData> {
        self.reader.drain().expect("drain");
        assert_eq!(self.reader.stats().undecodable(), 0);
        self.sub
            .receiver()
            .try_iter()
            .filter_map(|e| match e {
                Event::TlsData(t) => Some(t),
                _ => None,
            })
            .collect()
    }
}

fn of_pid(events: &[TlsData], pid: u32, direction: TlsDirection) -> Vec<&TlsData> {
    events
        .iter()
        .filter(|e| e.actor.pid == pid && e.direction == direction)
        .collect()
}

#[test]
fn openssl_and_curl_plaintext_is_captured_in_both_directions() {
    require_privileges!();
    let server = Server::start();
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![
            TlsScope::Exe(which("openssl")),
            TlsScope::Exe(which("curl")),
        ];
        built
    });

    let client = s_client(server.port);
    let curl_pid = curl(server.port);
    let events = capture.events();

    let writes = of_pid(&events, client, TlsDirection::Write);
    let request: Vec<u8> = writes.iter().flat_map(|e| e.data.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&request), REQUEST, "{events:#?}");
    assert_eq!(
        writes[0].http,
        Some(Http::Request {
            method: "GET".into(),
            host: Some("localhost".into()),
            path: "/secret-path".into(),
            version: "HTTP/1.1".into()
        })
    );
    assert!(writes[0]
        .actor
        .exe
        .as_deref()
        .is_some_and(|e| e.ends_with("openssl")));
    assert_eq!(writes[0].actor.comm, "openssl");
    let reads = of_pid(&events, client, TlsDirection::Read);
    assert!(
        reads
            .iter()
            .any(|e| String::from_utf8_lossy(&e.data).starts_with("HTTP/1.0 200 ok")),
        "the server's response as the client read it: {reads:#?}"
    );
    assert!(reads
        .iter()
        .any(|e| matches!(e.http, Some(Http::Response { status: 200, .. }))));

    let curl_writes = of_pid(&events, curl_pid, TlsDirection::Write);
    let first = curl_writes.first().expect("curl's request captured");
    assert!(
        String::from_utf8_lossy(&first.data).starts_with("GET /secret-path HTTP/1.1\r\n"),
        "{first:?}"
    );
    assert!(
        matches!(&first.http, Some(Http::Request { path, host: Some(host), .. })
        if path == "/secret-path" && host == &format!("127.0.0.1:{}", server.port))
    );
    let json: serde_json::Value =
        serde_json::from_str(&Event::TlsData((*first).clone()).to_json()).expect("json");
    assert_eq!(json["kind"], "tls");
    assert_eq!(json["direction"], "write");
    assert_eq!(json["pid"], curl_pid);
    assert_eq!(json["http"]["path"], "/secret-path");
    assert_eq!(
        json["remote"],
        format!("127.0.0.1:{}", server.port),
        "the connection, from the socket the kernel saw: {json}"
    );

    // Every call of a connection names it the same way, reads (some served from bytes
    // OpenSSL had already decrypted, with no socket call) as well as writes: the server
    // as the remote end, an ephemeral port of the loopback as the local one.
    for pid in [client, curl_pid] {
        let calls: Vec<&TlsData> = events.iter().filter(|e| e.actor.pid == pid).collect();
        assert!(calls.len() >= 2, "{calls:#?}");
        let local = calls[0].local.expect("the local end");
        for call in &calls {
            assert_eq!(
                call.remote,
                Some(std::net::SocketAddr::from(([127, 0, 0, 1], server.port))),
                "{call:?}"
            );
            assert_eq!(call.local, Some(local), "{call:?}");
        }
        assert_eq!(local.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert_ne!(local.port(), server.port);
    }
    drop(capture.monitor);
}

#[test]
fn processes_outside_the_scope_produce_nothing() {
    require_privileges!();
    let server = Server::start();
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(which("curl"))];
        built
    });
    let client = s_client(server.port);
    let curl_pid = curl(server.port);
    let events = capture.events();
    // Tests run in parallel: another test's curl is in this scope too. What must never
    // appear is a process that is not curl.
    assert!(events.iter().all(|e| e.actor.comm == "curl"), "{events:#?}");
    assert!(!events.iter().any(|e| e.actor.pid == client));
    assert!(
        events.iter().any(|e| e.actor.pid == curl_pid),
        "curl, in scope, was captured"
    );

    // Changing the scope at run time: now only s_client's command name.
    capture
        .monitor
        .configure(&{
            let mut built = TlsPolicy::default();
            built.scope = vec![TlsScope::Comm("openssl".into())];
            built
        })
        .expect("rescope");
    let client = s_client(server.port);
    let curl_pid = curl(server.port);
    let events = capture.events();
    assert!(events.iter().any(|e| e.actor.pid == client));
    assert!(!events.iter().any(|e| e.actor.pid == curl_pid));
}

const PYTHON_BIG_WRITE: &str = r#"
import socket, ssl, sys, threading
cert = sys.argv[1]
size = int(sys.argv[2])
payload = bytes((i * 7 + 3) % 251 for i in range(size))
srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
srv_ctx.load_cert_chain(cert, sys.argv[3])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
received = bytearray()
def serve():
    conn, _ = listener.accept()
    with srv_ctx.wrap_socket(conn, server_side=True) as s:
        while len(received) < size:
            chunk = s.recv(65536)
            if not chunk:
                break
            received.extend(chunk)
        s.sendall(b"ok")
t = threading.Thread(target=serve)
t.start()
cli_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
cli_ctx.check_hostname = False
cli_ctx.verify_mode = ssl.CERT_NONE
with cli_ctx.wrap_socket(socket.create_connection(listener.getsockname())) as c:
    c.sendall(payload)
    assert c.recv(2) == b"ok"
t.join()
assert bytes(received) == payload
"#;

/// Runs `PYTHON_BIG_WRITE`: one `sendall` of `size` bytes over TLS to itself, checked.
fn big_write(python: &std::path::Path, server: &Server, size: u32) {
    let out = Command::new(python)
        .args(["-c", PYTHON_BIG_WRITE])
        .arg(server.cert())
        .arg(size.to_string())
        .arg(server.dir.path().join("key.pem"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_one_mebibyte_write_is_chunked_up_to_the_cap_and_marked_truncated() {
    require_privileges!();
    let server = Server::start(); // for its certificate
    let python = ironclad_testing::python_interpreter().expect("python3");
    let cap = 64 * 1024u32;
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(python.clone())];
        built.max_bytes = cap;
        built
    });
    let size = 1 << 20;
    big_write(&python, &server, size);
    let events = capture.events();
    let big: Vec<&TlsData> = events
        .iter()
        .filter(|e| e.direction == TlsDirection::Write && e.total_len == size)
        .collect();
    assert!(
        !big.is_empty(),
        "the 1 MiB write was captured: {} events",
        events.len()
    );
    let call = big[0].call_id;
    let mut chunks: Vec<&TlsData> = big.into_iter().filter(|e| e.call_id == call).collect();
    chunks.sort_by_key(|e| e.offset);
    assert_eq!(chunks.len(), (cap / 4096) as usize);
    let captured: Vec<u8> = chunks.iter().flat_map(|e| e.data.clone()).collect();
    let expected: Vec<u8> = (0..cap as usize)
        .map(|i| ((i * 7 + 3) % 251) as u8)
        .collect();
    assert!(
        captured == expected,
        "the concatenation is the first {cap} bytes"
    );
    let last = chunks.last().expect("chunks");
    assert!(last.last && last.truncated, "{last:?}");
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| !c.last && !c.truncated));
    assert_eq!(capture.monitor.lost_chunks().expect("stats"), 0);
}

/// Writes of sizes on each side of the short record's room (`IC_TLS_SMALL_CHUNK`) and of
/// a whole chunk come out byte-exact, in as many chunks as they need.
#[test]
fn writes_around_the_record_sizes_are_captured_byte_exact() {
    require_privileges!();
    let server = Server::start(); // for its certificate
    let python = ironclad_testing::python_interpreter().expect("python3");
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(python.clone())];
        built
    });
    let small = ironclad_core::abi::TLS_SMALL_CHUNK as u32;
    let chunk = ironclad_core::abi::TLS_CHUNK as u32;
    for size in [
        1,
        small - 1,
        small,
        small + 1,
        chunk,
        chunk + 1,
        2 * chunk + 7,
    ] {
        big_write(&python, &server, size);
        let events = capture.events();
        let mut chunks: Vec<&TlsData> = events
            .iter()
            .filter(|e| e.direction == TlsDirection::Write && e.total_len == size)
            .collect();
        chunks.sort_by_key(|e| e.offset);
        assert!(
            chunks.iter().all(|c| c.call_id == chunks[0].call_id),
            "size {size}: one call"
        );
        assert_eq!(
            chunks
                .iter()
                .map(|c| c.data.len() as u32)
                .collect::<Vec<_>>(),
            (0..size.div_ceil(chunk))
                .map(|i| (size - i * chunk).min(chunk))
                .collect::<Vec<_>>(),
            "size {size}: chunk lengths"
        );
        let captured: Vec<u8> = chunks.iter().flat_map(|e| e.data.clone()).collect();
        let expected: Vec<u8> = (0..size as usize)
            .map(|i| ((i * 7 + 3) % 251) as u8)
            .collect();
        assert!(captured == expected, "size {size}: the bytes written");
        assert!(
            chunks
                .iter()
                .enumerate()
                .all(|(i, c)| c.last == (i + 1 == chunks.len()) && !c.truncated),
            "size {size}: only the last chunk is marked last"
        );
    }
    assert_eq!(capture.monitor.lost_chunks().expect("stats"), 0);
}

/// The ids of the BPF programs named `name` that this process holds a descriptor of
/// (`prog_id` in /proc/self/fdinfo): another process's programs, such as the TLS
/// benchmark's when the benchmarks run beside the tests, are not this test's.
fn held_programs(name: &str) -> Vec<u64> {
    let mut held = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").expect("fdinfo") {
        let Ok(info) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue; // closed meanwhile
        };
        held.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u64>().ok()),
        );
    }
    loaded_programs(name)
        .into_iter()
        .filter(|id| held.contains(id))
        .collect()
}

/// The ids of the programs named `name` loaded in the kernel (`bpftool prog list`).
fn loaded_programs(name: &str) -> Vec<u64> {
    ironclad_testing::bpftool(&["prog", "list"])
        .expect("bpftool")
        .as_array()
        .expect("a list of programs")
        .iter()
        .filter(|p| p["name"] == name)
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn probes_detach_cleanly_and_the_traced_programs_keep_working() {
    require_privileges!();
    let server = Server::start();
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(which("curl"))];
        built
    });
    let ours = held_programs("ic_ssl_write");
    assert!(
        !ours.is_empty(),
        "the capture holds its ic_ssl_write programs"
    );
    curl(server.port);
    assert!(!capture.events().is_empty());
    let Capture {
        monitor,
        reader,
        sub,
        ..
    } = capture;
    monitor.stop();
    drop(reader);
    curl(server.port); // still works, and nothing is captured
    assert!(sub.receiver().try_recv().is_err());
    let start = Instant::now();
    while loaded_programs("ic_ssl_write")
        .iter()
        .any(|id| ours.contains(id))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "programs not unloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scope_by_cgroup_and_by_pid() {
    require_privileges!();
    let server = Server::start();
    let cgroup = ironclad_testing::TestCgroup::new("tls").expect("cgroup");
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Cgroup(cgroup.path().to_path_buf())];
        built
    });
    let inside = cgroup
        .command("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{}/in", server.port),
        ])
        .spawn()
        .expect("curl in cgroup");
    let inside_pid = inside.id();
    assert!(inside.wait_with_output().expect("curl").status.success());
    let outside_pid = curl(server.port);
    let events = capture.events();
    assert!(
        events.iter().any(|e| e.actor.pid == inside_pid),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e.actor.pid == outside_pid));

    // By pid: a process that is already running when it is put in scope.
    let mut waiting = Command::new("sh")
        .args(["-c", "read line; exec curl -sk -o /dev/null \"$0\""])
        .arg(format!("https://127.0.0.1:{}/pid", server.port))
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh");
    let pid = waiting.id();
    capture
        .monitor
        .configure(&{
            let mut built = TlsPolicy::default();
            built.scope = vec![TlsScope::Pid(pid)];
            built
        })
        .expect("rescope");
    waiting
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    assert!(waiting.wait().expect("wait").success());
    let events = capture.events();
    assert!(
        events.iter().any(
            |e| e.actor.pid == pid && String::from_utf8_lossy(&e.data).starts_with("GET /pid ")
        ),
        "{events:#?}"
    );
}

#[test]
fn the_per_second_budget_withholds_and_reports_it() {
    require_privileges!();
    let server = Server::start();
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(which("curl"))];
        built.bytes_per_second = 10;
        built
    });
    // The budget allows 10 bytes per started second the process ran: the bound comes
    // from curl's measured run time, so a slow machine cannot fail the test.
    let started = std::time::Instant::now();
    let pid = curl(server.port);
    let seconds = started.elapsed().as_secs() + 1;
    let events = capture.events();
    let mine: Vec<&TlsData> = events.iter().filter(|e| e.actor.pid == pid).collect();
    let reported: u64 = mine.iter().map(|e| u64::from(e.len)).sum();
    assert!(
        reported <= 10 * (seconds + 1),
        "at most 10 bytes per second over {seconds} s: {reported}"
    );
    assert!(mine.iter().any(|e| e.truncated), "truncation is reported");
    assert!(capture.monitor.withheld_bytes().expect("stats") > 0);
}

#[test]
fn the_library_is_found_in_a_running_process_through_its_root() {
    let server = Server::start();
    let found = ironclad_bpf::tls::find_libssl(Some(server.child.id())).expect("mapped libssl");
    let text = found.display().to_string();
    assert!(
        text.starts_with(&format!("/proc/{}/root/", server.child.id()))
            && text.ends_with("libssl.so.3"),
        "{text}"
    );
    assert!(found.exists());
    let system = ironclad_bpf::tls::find_libssl(None).expect("system libssl");
    assert!(system.exists());
}

/// The instruction a uprobe writes at its place: x86's `int3` (one byte), arm64's
/// `brk #0x5` (UPROBE_SWBP_INSN, four bytes, little-endian). The test read `int3` on
/// arm64 too and found no breakpoint where the probes were set.
#[cfg(target_arch = "aarch64")]
const BREAKPOINT: &[u8] = &0xd420_00a0_u32.to_le_bytes();
#[cfg(not(target_arch = "aarch64"))]
const BREAKPOINT: &[u8] = &[0xcc];

/// Breakpoints ([`BREAKPOINT`]) in the libssl.so.3 of process `pid`, read from its
/// memory where a uprobe puts them.
#[derive(Debug, PartialEq, Eq)]
struct Breakpoints {
    /// Distinct places the probe plan (automatic placement) names.
    planned: usize,
    /// How many of them hold a breakpoint.
    set: usize,
    /// Breakpoints anywhere among the plan's places and the four exported functions.
    anywhere: usize,
}

fn breakpoints(pid: u32) -> Option<Breakpoints> {
    use std::io::{Read, Seek, SeekFrom};
    let library = ironclad_bpf::tls::find_libssl(Some(pid)).ok()?;
    let plan = ironclad_bpf::tls::plan_probes(&library, ironclad_bpf::TlsPlacement::Auto)
        .expect("probe plan");
    let mut planned: Vec<u64> = plan.iter().map(|site| site.offset).collect();
    planned.sort_unstable();
    planned.dedup();
    let symbols: Vec<u64> = ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"]
        .iter()
        .map(|s| ironclad_bpf::tls::symbol_offset(&library, s).expect("offset"))
        .collect();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut breakpoint_at = |offset: u64| -> Option<bool> {
        let address = maps.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !f[5].ends_with("/libssl.so.3") || !f[1].contains('x') {
                return None;
            }
            let (start, end) = f[0].split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let file_off = u64::from_str_radix(f[2], 16).ok()?;
            (file_off <= offset && offset < file_off + (end - start))
                .then(|| start + offset - file_off)
        })?;
        mem.seek(SeekFrom::Start(address)).ok()?;
        let mut instruction = [0u8; BREAKPOINT.len()];
        mem.read_exact(&mut instruction).ok()?;
        Some(instruction == BREAKPOINT)
    };
    let mut set = 0;
    for offset in &planned {
        set += usize::from(breakpoint_at(*offset)?);
    }
    let mut anywhere = set;
    for offset in symbols.iter().filter(|o| !planned.contains(o)) {
        anywhere += usize::from(breakpoint_at(*offset)?);
    }
    Some(Breakpoints {
        planned: planned.len(),
        set,
        anywhere,
    })
}

/// A Python process with libssl loaded, sleeping.
fn python_with_libssl() -> Child {
    let python = ironclad_testing::python_interpreter().expect("python3");
    let child = Command::new(python)
        .args(["-c", "import ssl, time; print(flush=True); time.sleep(60)"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let start = Instant::now();
    while breakpoints(child.id()).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "libssl not mapped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn per_process_probes_put_no_breakpoint_in_processes_out_of_scope() {
    require_privileges!();
    let server = Server::start();
    let mut inside = python_with_libssl();
    let mut outside = python_with_libssl();
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![
            TlsScope::Pid(inside.id()),
            TlsScope::Comm("openssl".to_string()),
        ];
        built.attach = ironclad_bpf::TlsAttach::PerProcess;
        built
    });
    let probed = breakpoints(inside.id()).expect("libssl mapped");
    assert!(
        probed.planned > 0 && probed.set == probed.planned,
        "in scope: a breakpoint at every planned place: {probed:?}"
    );
    assert_eq!(
        breakpoints(outside.id()).map(|b| b.anywhere),
        Some(0),
        "out of scope: no breakpoint at all"
    );
    assert!(capture.monitor.probed_processes().contains(&inside.id()));
    assert!(!capture.monitor.probed_processes().contains(&outside.id()));

    // A program that comes into scope by its comm after the start: attached after its
    // exec is reported; the test waits for that before the program makes its TLS call.
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", server.port),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let pid = client.id();
    let start = Instant::now();
    while !capture.monitor.probed_processes().contains(&pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "s_client was never attached: {} attaches failed, {} processes missed, probed {:?}",
            capture.monitor.attach_failures(),
            capture.monitor.missed_processes(),
            capture.monitor.probed_processes()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(REQUEST.as_bytes())
        .expect("request");
    let out = client.wait_with_output().expect("s_client");
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP/1.0 200 ok"));
    let curl_pid = curl(server.port);
    std::thread::sleep(Duration::from_millis(100));
    let events = capture.events();
    let writes = of_pid(&events, pid, TlsDirection::Write);
    assert!(
        writes
            .iter()
            .any(|e| e.data.starts_with(b"GET /secret-path")),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.actor.pid == curl_pid),
        "curl is out of scope"
    );
    assert_eq!(capture.monitor.attach_failures(), 0);

    drop(capture);
    assert_eq!(
        breakpoints(inside.id()).map(|b| b.anywhere),
        Some(0),
        "stopping removes the breakpoints"
    );
    let _ = inside.kill();
    let _ = outside.kill();
    let _ = inside.wait();
    let _ = outside.wait();
}

/// A Python client (`SSL_write_ex`, `SSL_read_ex`) sending argv[2] to the server at
/// port argv[1] and reading the whole response.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as raw:
    with ctx.wrap_socket(raw) as tls:
        tls.sendall(sys.argv[2].encode())
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
sys.stdout.write(data[:15].decode())
"#;

/// What one program wrote (each call's total length, and the bytes of all) and the
/// first line it read, as captured.
type Calls = (Vec<u32>, Vec<u8>, Option<String>);

fn calls_of(events: &[TlsData], pid: u32) -> Calls {
    let writes = of_pid(events, pid, TlsDirection::Write);
    let reads: Vec<u8> = of_pid(events, pid, TlsDirection::Read)
        .iter()
        .flat_map(|e| e.data.clone())
        .collect();
    let first_line = String::from_utf8_lossy(&reads)
        .lines()
        .next()
        .map(str::to_string);
    (
        writes.iter().map(|e| e.total_len).collect(),
        writes.iter().flat_map(|e| e.data.clone()).collect(),
        first_line,
    )
}

#[test]
fn probes_on_the_shared_internal_functions_capture_what_probes_on_the_symbols_capture() {
    require_privileges!();
    let server = Server::start();
    let python = ironclad_testing::python_interpreter().expect("python3");
    let library = ironclad_bpf::tls::find_libssl(None).expect("libssl");

    let symbols = ironclad_bpf::tls::plan_probes(&library, ironclad_bpf::TlsPlacement::Symbols)
        .expect("plan");
    // An entry and a return probe on each of the four functions, and on the handshake.
    assert_eq!(symbols.len(), 10, "{symbols:#?}");
    assert!(symbols.iter().all(|s| !s.at.contains('→')), "{symbols:#?}");
    // The benchmark's figures depend on it: Debian's libssl.so.3 forwards SSL_write_ex
    // and SSL_read_ex to internal functions that SSL_write and SSL_read call too.
    let auto =
        ironclad_bpf::tls::plan_probes(&library, ironclad_bpf::TlsPlacement::Auto).expect("plan");
    // The placement reads x86-64 code only: arm64's library keeps the symbols' probes,
    // and both placements capture the same calls (below).
    if cfg!(target_arch = "aarch64") {
        assert_eq!(auto, symbols, "arm64: automatic placement is the symbols'");
    } else {
        assert_eq!(
            auto.len(),
            6,
            "one entry and one return probe per direction and on the handshake: {auto:#?}"
        );
        assert!(
            auto.iter()
                .filter(|s| s.covers != ["SSL_do_handshake"])
                .all(|s| s.at.contains('→') && s.covers.len() == 2),
            "{auto:#?}"
        );
        assert_eq!(
            auto.iter()
                .filter(|s| s.at == "SSL_do_handshake")
                .map(|s| s.retprobe)
                .collect::<Vec<_>>(),
            [false, true],
            "{auto:#?}"
        );
    }

    let mut seen = Vec::new();
    for placement in [
        ironclad_bpf::TlsPlacement::Auto,
        ironclad_bpf::TlsPlacement::Symbols,
    ] {
        let capture = Capture::start({
            let mut built = TlsPolicy::default();
            built.scope = vec![
                TlsScope::Exe(which("openssl")),
                TlsScope::Exe(python.clone()),
            ];
            built.placement = placement;
            built
        });
        assert_eq!(
            capture.monitor.probe_sites(),
            if placement == ironclad_bpf::TlsPlacement::Auto {
                auto.clone()
            } else {
                symbols.clone()
            }
        );
        let client = s_client(server.port);
        let out = Command::new(&python)
            .args(["-c", PYTHON_CLIENT, &server.port.to_string(), REQUEST])
            .output()
            .expect("python3");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "HTTP/1.0 200 ok");
        // Found by its name (s_server, an openssl in scope, writes too).
        let events = capture.events();
        let python_pid = events
            .iter()
            .find(|e| e.actor.comm.starts_with("python") && e.direction == TlsDirection::Write)
            .map(|e| e.actor.pid)
            .expect("the Python client's write captured");
        seen.push((calls_of(&events, client), calls_of(&events, python_pid)));
    }
    for (placement, (openssl, python)) in ["auto", "symbols"].iter().zip(&seen) {
        assert_eq!(
            String::from_utf8_lossy(&openssl.1),
            REQUEST,
            "{placement}: s_client (SSL_write)"
        );
        assert_eq!(
            (python.0.as_slice(), String::from_utf8_lossy(&python.1)),
            ([REQUEST.len() as u32].as_slice(), REQUEST.into()),
            "{placement}: Python (SSL_write_ex), one call"
        );
        assert_eq!(
            openssl.2.as_deref(),
            Some("HTTP/1.0 200 ok"),
            "{placement}: SSL_read"
        );
        assert_eq!(
            python.2.as_deref(),
            Some("HTTP/1.0 200 ok"),
            "{placement}: SSL_read_ex"
        );
    }
}

/// TLS records do not wake their reader one by one (`BPF_RB_NO_WAKEUP`, tls.bpf.c): the
/// reader's descriptor (`AsFd`) is not readable although records wait, and an agent on
/// tokio still receives them through `EventStream`, which drains on its timer.
#[test]
fn an_async_agent_receives_tls_records_through_the_event_stream_timer() {
    use futures_util::StreamExt;
    use std::os::fd::AsRawFd;

    require_privileges!();
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = Server::start(); // for its certificate
    let python = ironclad_testing::python_interpreter().expect("python3");
    let pins = BpffsDir::new("tlsstream").expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let monitor = TlsMonitor::start(&loader, &{
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(python.clone())];
        built
    })
    .expect("start TLS monitor");
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("agent", 10_000, Overflow::DropNewest);
    let reader =
        ironclad_bpf::EventReader::new(vec![monitor.event_source().expect("source")], fanout)
            .expect("reader");
    let size = 100u32;
    big_write(&python, &server, size);
    let mut waiting = libc::pollfd {
        fd: reader.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut waiting, 1, 0) };
    assert_eq!(ready, 0, "records wait without waking the reader");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let write = runtime.block_on(async {
        let mut stream = ironclad_bpf::EventStream::new(reader, sub, Duration::from_millis(100))
            .expect("stream");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("the waiting records within the drain interval")
                .expect("the stream goes on")
                .expect("no read error");
            if let Event::TlsData(tls) = event {
                if tls.direction == TlsDirection::Write && tls.total_len == size {
                    break tls;
                }
            }
        }
    });
    let expected: Vec<u8> = (0..size as usize)
        .map(|i| ((i * 7 + 3) % 251) as u8)
        .collect();
    assert_eq!(write.data, expected);
    assert!(write.actor.comm.starts_with("python"), "{write:?}");
}

#[test]
fn dlp_reports_a_card_number_curl_posts_through_tls_redacted_and_masks_the_data() {
    use ironclad_policy::tls::DlpPolicy;
    require_privileges!();
    // A Python HTTPS server that answers POSTs (s_server -www answers GETs only).
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed_cert(dir.path()).expect("openssl req");
    // Over IPv6, where the connection's addresses take their other form.
    let port = std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let script = format!(
        "import http.server, socket, ssl\nclass S(http.server.HTTPServer):\n address_family = socket.AF_INET6\nclass H(http.server.BaseHTTPRequestHandler):\n def do_POST(self):\n  self.rfile.read(int(self.headers['Content-Length']))\n  self.send_response(200)\n  self.send_header('Content-Length','2')\n  self.end_headers()\n  self.wfile.write(b'ok')\n def log_message(self,*a): pass\ns=S(('::1',{port}),H)\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nc.load_cert_chain('{}','{}')\ns.socket=c.wrap_socket(s.socket,server_side=True)\ns.serve_forever()",
        cert.display(),
        key.display()
    );
    let mut server = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let start = Instant::now();
    while TcpStream::connect(("::1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "server");
        std::thread::sleep(Duration::from_millis(50));
    }
    let capture = Capture::start({
        let mut built = TlsPolicy::default();
        built.scope = vec![TlsScope::Exe(which("curl"))];
        built.dlp = Some(DlpPolicy::default());
        built
    });
    let card = "4111 1111 1111 1111";
    let child = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "--data",
            &format!("card={card}&name=ironclad"),
            &format!("https://[::1]:{port}/checkout"),
        ])
        .spawn()
        .expect("curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl");
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "the POST was answered: {out:?}");
    let mut events = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        events.extend(capture.all_events());
        if events
            .iter()
            .any(|e| matches!(e, Event::Dlp(f) if f.actor.pid == pid))
        {
            break;
        }
    }
    events.extend(capture.all_events());
    let findings: Vec<&ironclad_events::DlpFinding> = events
        .iter()
        .filter_map(|e| match e {
            Event::Dlp(f) if f.actor.pid == pid => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(findings.len(), 1, "{events:#?}");
    let finding = findings[0];
    assert_eq!(finding.detector, "credit_card");
    assert_eq!(finding.redacted, "************1111");
    assert_eq!(finding.direction, TlsDirection::Write);
    assert_eq!(finding.actor.comm, "curl");
    assert!(finding.ssl != 0);
    // The same connection and call as the data that carried it.
    let carrier = events
        .iter()
        .find_map(|e| match e {
            Event::TlsData(t) if t.call_id == finding.call_id => Some(t),
            _ => None,
        })
        .expect("the TLS event of the call");
    assert_eq!(carrier.ssl, finding.ssl);
    let body = String::from_utf8_lossy(&carrier.data);
    assert!(
        body.contains("card=*******************&name=ironclad"),
        "{body}"
    );
    // The number is in no event, in no form.
    for event in &events {
        let json = event.to_json();
        assert!(!json.contains("4111 1111"), "{json}");
        assert!(!json.contains("4111111111111111"), "{json}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&Event::Dlp(finding.clone()).to_json()).expect("json");
    assert_eq!(json["kind"], "dlp");
    assert_eq!(json["pid"], pid);
    // The connection by its addresses, as the kernel saw curl's socket.
    assert_eq!(json["remote"], format!("[::1]:{port}"), "{json}");
    let local = finding.local.expect("the local end");
    assert_eq!(local.ip(), std::net::Ipv6Addr::LOCALHOST);
    assert_ne!(local.port(), port);
    assert_eq!(
        (carrier.local, carrier.remote),
        (finding.local, finding.remote)
    );
    drop(capture.monitor);
}
