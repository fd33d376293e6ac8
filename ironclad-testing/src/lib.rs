//! Test harness for Ironclad's privileged tests and benchmarks (not published).
//!
//! A dev-dependency of every crate in the workspace, never a dependency of a library
//! crate: RAII guards create and always remove a network namespace ([`NetNs`]), a veth
//! pair with one end in it ([`VethPair`]), a cgroup v2 directory to run processes in
//! ([`TestCgroup`]) and a directory on bpffs for pins ([`BpffsDir`]); [`frames`] and
//! [`frames6`] build packets; [`rules`] generates deterministic random rule sets.
//!
//! Privileged tests start with [`require_privileges!`]. Without the capabilities they
//! **fail** with a message naming what is missing, unless the environment sets
//! `IRONCLAD_SKIP_PRIVILEGED=1` (for developers without root). CI never sets it, and the
//! harness refuses the opt-out when `CI` is set.
//!
//! ```no_run
//! use ironclad_testing::{require_privileges, NetNs, VethPair};
//!
//! fn a_privileged_test() {
//!     require_privileges!();
//!     let ns = NetNs::new("doc").expect("netns");
//!     let veth = VethPair::new(&ns, &["10.250.0.1/24"], &["10.250.0.2/24"]).expect("veth");
//!     // ... attach to veth.host, send from inside `ns` ...
//!     # let _ = veth;
//! } // the pair and the namespace are removed here
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ironclad_core::privilege::{self, Capability};
use rustix::net::{AddressFamily, SendFlags, SocketType};

pub mod dns;
pub mod flood;
pub mod go;
pub mod probe;
pub mod rules;

/// Environment variable that lets privileged tests skip instead of fail.
pub const OPT_OUT_VAR: &str = "IRONCLAD_SKIP_PRIVILEGED";

/// What every privileged test needs.
pub const TEST_CAPABILITIES: &[Capability] = &[
    Capability::Bpf,
    Capability::Perfmon,
    Capability::NetAdmin,
    Capability::SysAdmin,
];

/// Returns early from a privileged test when the opt-out is set and privileges are
/// missing; panics (fails the test) when they are missing without the opt-out.
#[macro_export]
macro_rules! require_privileges {
    () => {
        if !$crate::privileged_or_opted_out(module_path!()) {
            return;
        }
        // Held to the end of the test: no other suite's privileged test runs meanwhile.
        let _suite = $crate::SuiteGuard::enter(module_path!());
    };
}

/// Keeps the privileged tests of one suite (a file of `tests/`, a module of its crate's
/// one test binary) from running beside another suite's.
///
/// Each crate's integration tests are one binary whose modules are the suites; libtest
/// runs its tests on several threads. A suite's tests were written to run beside each
/// other (unique names, their own addresses), but two suites may both use, say, the
/// host-side address 10.1.0.1 on different veths, or measure a process's traffic: they
/// ran in separate processes one after the other before they shared a binary. A guard
/// lets the tests of the suite that holds the lock in and makes every other suite's wait,
/// so suites never overlap and a suite's own tests still run in parallel. libtest starts
/// tests in name order, so a suite's tests are started together and a waiting test waits
/// only for the previous suite's last ones. (No crate offers this shared-within,
/// exclusive-across lock: `serial_test`'s keys are exclusive or parallel, not both.)
#[derive(Debug)]
#[must_use = "the suite is held while the guard lives"]
pub struct SuiteGuard {
    suite: String,
}

struct Suites {
    /// The suite whose tests are running, and how many of them.
    current: std::sync::Mutex<Option<(String, usize)>>,
    changed: std::sync::Condvar,
}

static SUITES: Suites = Suites {
    current: std::sync::Mutex::new(None),
    changed: std::sync::Condvar::new(),
};

impl SuiteGuard {
    /// Waits until no other suite's privileged test runs, then holds `module_path`'s
    /// suite: its crate and first module (`bpf::nat` of `bpf::nat::v6`).
    pub fn enter(module_path: &str) -> Self {
        let suite: String = module_path
            .split("::")
            .take(2)
            .collect::<Vec<_>>()
            .join("::");
        // A test that panicked while holding the lock left its state consistent (the
        // count is changed under the lock only): poisoning carries no meaning here.
        let mut current = SUITES
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            match current.as_mut() {
                None => {
                    *current = Some((suite.clone(), 1));
                    break;
                }
                Some((held, count)) if *held == suite => {
                    *count += 1;
                    break;
                }
                Some(_) => {
                    current = SUITES
                        .changed
                        .wait(current)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
        SuiteGuard { suite }
    }
}

impl Drop for SuiteGuard {
    fn drop(&mut self) {
        let mut current = SUITES
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((held, count)) = current.as_mut() {
            if *held == self.suite {
                *count -= 1;
                if *count == 0 {
                    *current = None;
                    SUITES.changed.notify_all();
                }
            }
        }
    }
}

/// `true` if the process has [`TEST_CAPABILITIES`]; `false` (with a printed reason) if
/// it does not and the opt-out is set; otherwise panics naming the missing capabilities.
pub fn privileged_or_opted_out(test: &str) -> bool {
    let missing = match privilege::missing(TEST_CAPABILITIES) {
        Ok(missing) => missing,
        Err(e) => panic!("privileged test {test}: cannot read capabilities: {e}"),
    };
    if missing.is_empty() {
        return true;
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
    let opted_out = std::env::var(OPT_OUT_VAR).is_ok_and(|v| v == "1");
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    if opted_out && !in_ci {
        eprintln!(
            "SKIPPED privileged test {test}: missing {} and {OPT_OUT_VAR}=1 is set",
            names.join(", ")
        );
        return false;
    }
    panic!(
        "privileged test {test} cannot run: the process lacks {} (uid {}). Run the tests \
         as root{}.",
        names.join(", "),
        current_uid(),
        if in_ci {
            "; CI may not opt out"
        } else {
            ", or set IRONCLAD_SKIP_PRIVILEGED=1 to skip privileged tests"
        }
    );
}

fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "?".to_string())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, e.g. `ic12345x3`.
pub fn unique_name(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// How long a test waits for a server it started (python's http.server, `openssl
/// s_server`, dnsmasq) to accept connections. Generous on purpose: in an emulated guest
/// on a CI machine that runs other guests beside it, starting python alone has taken
/// more than ten seconds. A server that never starts still fails the test, only later.
pub const SERVER_START: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `ready` every 50 ms until it holds or [`SERVER_START`] has passed; the error
/// names `what` and how long was waited.
pub fn wait_for_server(what: &str, mut ready: impl FnMut() -> bool) -> io::Result<()> {
    let start = std::time::Instant::now();
    while !ready() {
        if start.elapsed() >= SERVER_START {
            return Err(io::Error::other(format!(
                "{what} did not start within {} s",
                SERVER_START.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `bpftool -j ARGS`, parsed: the kernel's view of programs, maps and links, as an
/// operator (or an attacker) sees it. An error if bpftool is missing, fails, or prints
/// something that is not JSON.
pub fn bpftool(args: &[&str]) -> io::Result<serde_json::Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run("bpftool", &all)?;
    serde_json::from_slice(&out.stdout).map_err(io::Error::other)
}

/// The names of the BPF programs attached to the cgroup at `path`, sorted
/// (`bpftool cgroup show`, which prints nothing at all when none is).
pub fn cgroup_programs(path: &Path) -> io::Result<Vec<String>> {
    let out = run(
        "bpftool",
        &["-j", "cgroup", "show", &path.display().to_string()],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let shown: serde_json::Value = serde_json::from_str(&text).map_err(io::Error::other)?;
    let mut names: Vec<String> = shown
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `ip netns` namespace with a unique name derived from `tag`.
    pub fn new(tag: &str) -> io::Result<Self> {
        let name = unique_name(&format!("ic-{tag}-"));
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `args` inside the namespace; fails if it exits non-zero.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread of its own that has entered the namespace (`setns`):
    /// the sockets it opens live there, while the test's own threads stay where they
    /// are. Probes that a process per probe would make slow (a python3 takes most of a
    /// second to start on a slow machine, longer than the timeouts some tests
    /// exercise) run this way.
    pub fn run_in<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> io::Result<T> + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                flood::enter(&self.name)?;
                f()
            })
            .join()
            .map_err(|_| io::Error::other("the thread inside the namespace panicked"))?
        })
    }

    /// Whether a TCP connection from `src` (any of the namespace's addresses when
    /// empty) to `dst:port` opens within `timeout` seconds.
    pub fn tcp_connects(&self, src: &str, dst: &str, port: u16, timeout: f64) -> io::Result<bool> {
        Ok(self.tcp_connects_in_turn(src, dst, port, timeout, 1)? == [true])
    }

    /// Makes `count` TCP connections from `src` (any of the namespace's addresses
    /// when empty) to `dst:port` one right after another (each closed at once, each
    /// with `timeout` seconds to connect): whether each was accepted, in order. For
    /// rate limits, where the attempts must come closer together than the budget
    /// refills.
    pub fn tcp_connects_in_turn(
        &self,
        src: &str,
        dst: &str,
        port: u16,
        timeout: f64,
        count: usize,
    ) -> io::Result<Vec<bool>> {
        let src = parse_addr_or_any(src)?;
        let dst = SocketAddr::new(parse_addr(dst)?, port);
        let timeout = Duration::from_secs_f64(timeout);
        self.run_in(|| {
            (0..count)
                .map(|_| tcp_connect_once(src, dst, timeout))
                .collect()
        })
    }

    /// Sends one UDP datagram `payload` from `src` (bound with `SO_REUSEADDR`) to
    /// `dst`, from inside the namespace.
    pub fn udp_send(&self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> io::Result<()> {
        self.run_in(|| {
            let fd = rustix::net::socket(family(&dst), SocketType::DGRAM, None)?;
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
            rustix::net::bind(&fd, &src)?;
            let sent = rustix::net::sendto(&fd, payload, SendFlags::empty(), &dst)?;
            if sent == payload.len() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "{sent} of {} bytes sent",
                    payload.len()
                )))
            }
        })
    }
}

fn parse_addr(text: &str) -> io::Result<IpAddr> {
    text.parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{text:?}: {e}")))
}

fn parse_addr_or_any(text: &str) -> io::Result<Option<IpAddr>> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_addr(text).map(Some)
    }
}

fn family(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    }
}

/// One TCP connection attempt, closed at once: whether it opened within `timeout`.
/// A blocking `connect` gives up after the socket's send timeout (`SO_SNDTIMEO`);
/// any failure to connect (refused, reset, unreachable, timed out) is a `false`, a
/// failure to make or bind the socket an error.
fn tcp_connect_once(src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> io::Result<bool> {
    let fd = rustix::net::socket(family(&dst), SocketType::STREAM, None)?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Send,
        Some(timeout),
    )?;
    if let Some(src) = src {
        rustix::net::bind(&fd, &SocketAddr::new(src, 0))?;
    }
    Ok(rustix::net::connect(&fd, &dst).is_ok())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Writes a throwaway self-signed certificate for `localhost` (EC P-256, one day) and
/// its key into `dir` with `openssl req`; returns (certificate, key) paths.
pub fn self_signed_cert(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key_arg,
            "-out",
            &cert_arg,
        ],
    )?;
    Ok((cert, key))
}

/// Writes a throwaway CA (`ca.pem`) and a certificate for `127.0.0.1` it signed
/// (`server.pem`, key `server.key`) into `dir` with `openssl`: what a TLS client that
/// checks names and chains (rustls) accepts when told to trust `ca.pem`. Returns (CA,
/// certificate, key).
pub fn ca_signed_cert(dir: &Path) -> io::Result<(PathBuf, PathBuf, PathBuf)> {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-days", "1", "-subj", "/CN=Ironclad test CA"]);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca)?;
    let mut csr = vec!["req"];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&[
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&csr)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    Ok((
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))
}

/// Lines received on a TCP listener on 127.0.0.1, from every connection: a stand-in for
/// a log collector. The listener runs until the process ends.
#[derive(Debug, Clone)]
pub struct LineCollector {
    port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LineCollector {
    /// Starts listening on a free port.
    pub fn start() -> io::Result<Self> {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for line in io::BufReader::new(conn).lines().map_while(Result::ok) {
                        if let Ok(mut all) = sink.lock() {
                            all.push(line);
                        }
                    }
                });
            }
        });
        Ok(Self { port, lines })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The lines of a stream (a child's stderr, a pipe), read by a background thread and
/// kept for the test to search.
#[derive(Debug)]
pub struct LineLog {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LineLog {
    /// Starts reading `stream` line by line until EOF.
    pub fn start(stream: impl io::Read + Send + 'static) -> Self {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in io::BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut all) = sink.lock() {
                    all.push(line);
                }
            }
        });
        Self {
            lines,
            reader: Some(reader),
        }
    }

    /// Every line read so far, joined by newlines.
    pub fn text(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Whether a line read so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .map(|l| l.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    /// Waits until the stream reaches EOF (every writer closed it, e.g. the child
    /// exited): every line written is then in the log.
    pub fn finish(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Starts `command()` again and again until its process gets pid `pid` (the kernel
/// hands out `ns_last_pid + 1` next, when it is free): for tests of pid reuse. The
/// misses are killed. `Ok(None)` if `pid` was not obtained in `tries`.
pub fn spawn_with_pid(
    pid: u32,
    tries: u32,
    mut command: impl FnMut() -> std::process::Command,
) -> io::Result<Option<std::process::Child>> {
    for _ in 0..tries {
        std::fs::write(
            "/proc/sys/kernel/ns_last_pid",
            pid.saturating_sub(1).to_string(),
        )?;
        let mut child = command().spawn()?;
        if child.id() == pid {
            return Ok(Some(child));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(None)
}

/// The Python interpreter itself (not a wrapper script that execs it), as
/// `os.path.realpath(sys.executable)` reports it: the file whose identity the kernel
/// sees when `python3` runs.
pub fn python_interpreter() -> io::Result<PathBuf> {
    let out = run(
        "python3",
        &[
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ],
    )?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Pings `to` from source address `from` inside `ns`, `count` echo requests `interval`
/// seconds apart (e.g. `"0.2"`), waiting 1 s for the last reply. Returns how many were
/// answered (ping's own summary).
pub fn ping(ns: &NetNs, from: &str, to: &str, count: u32, interval: &str) -> io::Result<u32> {
    let mut cmd = ns.command("ping");
    if to.contains(':') {
        cmd.arg("-6");
    }
    let out = cmd
        .args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1",
            "-I",
            from,
            to,
        ])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(", ")
        .find(|part| part.ends_with("received"))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "no ping summary (is iputils-ping installed?): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })
}

/// A veth pair: `host` in the current namespace, `peer` inside a [`NetNs`]. Both ends are
/// up, with the given addresses (CIDR notation, v4 or v6). Deleted on drop.
#[derive(Debug)]
pub struct VethPair {
    host: String,
    peer: String,
}

impl VethPair {
    /// Creates the pair and configures both ends. IPv6 duplicate address detection is
    /// turned off so addresses are usable at once.
    pub fn new(ns: &NetNs, host_addrs: &[&str], peer_addrs: &[&str]) -> io::Result<Self> {
        let host = unique_name("ich");
        let peer = unique_name("icp");
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
        )?;
        let pair = Self { host, peer };
        run("ip", &["link", "set", &pair.peer, "netns", ns.name()])?;
        let _ = run(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{}.accept_dad=0", pair.host)],
        );
        ns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.accept_dad=0", pair.peer),
        ])?;
        // Each end's addresses and its `up` in one `ip -batch` per namespace, not one
        // `ip` per address: under TCG (the guest kernels) a process costs about a
        // quarter of a second, and a DNS lab's 22 addresses took 5.7 s of each test.
        ip_batch(None, &pair.host, host_addrs)?;
        ip_batch(Some(ns), &pair.peer, peer_addrs)?;
        Ok(pair)
    }

    /// The end in the current namespace (where XDP is attached).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The end inside the namespace.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Makes the peer's neighbour entry for `addr` (an address of the host's end) the
    /// host end's MAC, permanent: the peer's packets to it never wait for ARP or
    /// neighbour discovery (whose queue drops what overflows it, counted by no
    /// interface), and no solicitation joins the traffic a test counts.
    pub fn pin_neighbour(&self, ns: &NetNs, addr: std::net::IpAddr) -> io::Result<()> {
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", self.host))?;
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            mac.trim(),
            "dev",
            &self.peer,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// What the pair dropped on the way from the peer to the host's end, before any
    /// program or netfilter hook of the host's end saw it: the peer's `tx_dropped`
    /// (read inside `ns`) plus the host end's `rx_dropped`. On a loaded machine the
    /// receiving CPU's backlog fills and veth drops there; a test or benchmark that
    /// counts packets at the host's end subtracts these. Drops the other way are not
    /// counted.
    pub fn drops_towards_host(&self, ns: &NetNs) -> io::Result<u64> {
        let host = std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/rx_dropped",
            self.host
        ))?;
        let peer = ns.exec(&[
            "cat",
            &format!("/sys/class/net/{}/statistics/tx_dropped", self.peer),
        ])?;
        let parse = |text: &str, which: &str| {
            text.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{which} drop counter {text:?}: {e}"),
                )
            })
        };
        Ok(parse(&host, &self.host)? + parse(&String::from_utf8_lossy(&peer.stdout), &self.peer)?)
    }
}

/// Adds `addrs` to `dev` and sets it up, in one `ip -batch` run inside `ns` (the
/// current namespace when `None`). IPv6 addresses are added `nodad`, usable at once.
fn ip_batch(ns: Option<&NetNs>, dev: &str, addrs: &[&str]) -> io::Result<()> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut script = String::new();
    for addr in addrs {
        let nodad = if addr.contains(':') { " nodad" } else { "" };
        let _ = writeln!(script, "address add {addr} dev {dev}{nodad}");
    }
    let _ = writeln!(script, "link set {dev} up");
    let mut command = Command::new("ip");
    if let Some(ns) = ns {
        command.args(["-n", ns.name()]);
    }
    let mut child = command
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // A write that fails (ip ended early) is reported after ip's own message.
    let wrote = child
        .stdin
        .take()
        .map_or(Ok(()), |mut stdin| stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output()?;
    if out.status.success() {
        wrote
    } else {
        Err(io::Error::other(format!(
            "`ip -batch` on {dev} failed ({}): {}\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host]);
    }
}

pub use ironclad_core::identity::cgroup2_root;

/// A cgroup v2 directory for test processes; its processes are killed and the directory
/// removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates a fresh cgroup under the cgroup v2 root.
    pub fn new(tag: &str) -> io::Result<Self> {
        let path = cgroup2_root()?.join(unique_name(&format!("ironclad-{tag}-")));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// Creates a fresh cgroup below `parent` (e.g. another [`TestCgroup`]).
    pub fn new_in(parent: &Path, tag: &str) -> io::Result<Self> {
        let path = parent.join(unique_name(&format!("{tag}-")));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `Command` that moves itself into this cgroup and then execs `program`, so the
    /// program runs in the cgroup from its first instruction.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.path.join("cgroup.procs"))
            .arg(program);
        cmd
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let text = std::fs::read_to_string(self.path.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A fresh directory on bpffs for pins, removed (with everything pinned in it) on drop.
#[derive(Debug)]
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    /// Creates `/sys/fs/bpf/ironclad-<tag>-…`, mounting bpffs at /sys/fs/bpf if needed.
    pub fn new(tag: &str) -> io::Result<Self> {
        let root = Path::new("/sys/fs/bpf");
        if !is_bpffs(root)? {
            std::fs::create_dir_all(root)?;
            run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])?;
        }
        let path = root.join(unique_name(&format!("ironclad-{tag}-")));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        matches!((f.next(), f.next(), f.next()), (Some(_), Some(dir), Some("bpf")) if Path::new(dir) == path)
    }))
}

/// Scripts that watch a wire from inside a namespace.
pub mod wire {
    /// How long the tests listen with [`UDP_7777`] (its `argv[2]`): the senders start
    /// after the capture, a python3 each, and one takes about a second to start on CI's
    /// machines (with 2 s, a second sender's datagrams came after the capture ended).
    pub const LISTEN_SECONDS: &str = "8";

    /// Python: prints `SOURCE TTL VLAN` (VLAN 0: untagged) for every IPv4 UDP datagram
    /// to port 7777 seen on interface `argv[1]` for `argv[2]` seconds, after a
    /// `listening` line. The kernel strips a tag on receipt and reports it beside the
    /// frame (PACKET_AUXDATA).
    pub const UDP_7777: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
s.bind((sys.argv[1], 0))
s.settimeout(0.1)
print("listening", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        f, anc, _, _ = s.recvmsg(65535, 64)
    except socket.timeout:
        continue
    vlan = 0
    for level, kind, data in anc:
        if level == 263 and kind == 8:
            status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", data[:20])
            if status & 0x10: vlan = tci & 0xfff
    if f[12:14] != b"\x08\x00": continue
    ip = f[14:]
    if ip[9] != 17: continue
    l4 = ip[(ip[0] & 15) * 4:]
    if struct.unpack("!H", l4[2:4])[0] == 7777:
        print(socket.inet_ntoa(ip[12:16]), ip[8], vlan, flush=True)
"#;
}

/// Hand-built Ethernet frames for `BPF_PROG_TEST_RUN` tests and benchmarks.
pub mod frames {
    use std::net::{Ipv4Addr, Ipv6Addr};

    const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn ethernet(ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&MAC_DST);
        f.extend_from_slice(&MAC_SRC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// An Ethernet + IPv4 + UDP frame (`payload` bytes of zeros) from `src` to `dst`.
    pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
        let mut f = ethernet(0x0800);
        let total = 20 + 8 + payload;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.resize(f.len() + payload, 0);
        f
    }

    /// An Ethernet + IPv6 + UDP frame (`payload` bytes of zeros) from `src` to `dst`.
    pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> Vec<u8> {
        let mut f = ethernet(0x86DD);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[17, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.resize(f.len() + payload, 0);
        f
    }

    /// An Ethernet + IP + L4 frame from `src:sport` to `dst:dport` of IP protocol
    /// `proto` (6 TCP with `tcp_flags`, 17 UDP, 1/58 ICMP with type `dport`, anything
    /// else with no L4 header). IPv4 or IPv6 by the addresses' family (both the same).
    /// L4 checksums are zero: `BPF_PROG_TEST_RUN` does not check them.
    pub fn l4(
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
        tcp_flags: u8,
    ) -> Vec<u8> {
        let l4: Vec<u8> = match proto {
            6 => {
                let mut t = Vec::with_capacity(20);
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 5 << 4, tcp_flags]);
                t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
                t
            }
            17 => {
                let mut u = Vec::with_capacity(8);
                u.extend_from_slice(&sport.to_be_bytes());
                u.extend_from_slice(&dport.to_be_bytes());
                u.extend_from_slice(&[0, 8, 0, 0]);
                u
            }
            1 | 58 => vec![dport as u8, 0, 0, 0, 0, 1, 0, 1],
            _ => vec![0; 8],
        };
        match (src, dst) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                let mut f = ethernet(0x0800);
                let total = 20 + l4.len();
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&(total as u16).to_be_bytes());
                ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let sum = checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&ip);
                f.extend_from_slice(&l4);
                f
            }
            (s, d) => {
                let v6 = |a: std::net::IpAddr| match a {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    std::net::IpAddr::V6(v6) => v6,
                };
                let mut f = ethernet(0x86DD);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[proto, 64]);
                f.extend_from_slice(&v6(s).octets());
                f.extend_from_slice(&v6(d).octets());
                f.extend_from_slice(&l4);
                f
            }
        }
    }

    /// Inserts an 802.1Q VLAN tag (`vid`) after the MAC addresses of `frame`.
    pub fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
        let mut f = frame[..12].to_vec();
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        f.extend_from_slice(&frame[12..]);
        f
    }

    /// An ARP request frame (not IP).
    pub fn arp() -> Vec<u8> {
        let mut f = ethernet(0x0806);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&MAC_SRC);
        f.extend_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 1]);
        f
    }
}

/// IPv6 frames with extension-header chains, for parser tests.
pub mod frames6 {
    use std::net::Ipv6Addr;

    /// An IPv6 frame whose fixed header is followed by `chain` (each a next-header
    /// number and its raw bytes, the next-header byte at offset 0 filled in here) and
    /// then a UDP header with the given ports.
    pub fn with_chain(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        chain: &[(u8, Vec<u8>)],
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let mut ext = Vec::new();
        for (i, (_, bytes)) in chain.iter().enumerate() {
            let mut bytes = bytes.clone();
            bytes[0] = chain.get(i + 1).map_or(17, |(n, _)| *n);
            ext.extend_from_slice(&bytes);
        }
        let first = chain.first().map_or(17, |(n, _)| *n);
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xDD];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + 8) as u16).to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&ext);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    /// An 8-byte hop-by-hop / destination-options / routing header (next header filled
    /// in by [`with_chain`]).
    pub fn opt8() -> Vec<u8> {
        vec![0, 0, 1, 4, 0, 0, 0, 0]
    }

    /// A fragment header for the first fragment (offset 0).
    pub fn fragment_first() -> Vec<u8> {
        vec![0, 0, 0, 1, 0, 0, 0, 42]
    }

    /// A fragment header for a later fragment (offset 8 bytes).
    pub fn fragment_later() -> Vec<u8> {
        vec![0, 0, 0, 8, 0, 0, 0, 42]
    }
}

#[cfg(test)]
mod tests {
    use super::SuiteGuard;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_suite_shares_its_turn_and_another_suite_waits_for_all_of_it() {
        let first = SuiteGuard::enter("it::alpha::v4");
        // The same suite (another test of it, or a nested module) enters at once.
        let second = SuiteGuard::enter("it::alpha");
        let (entered, seen) = mpsc::channel();
        let other = std::thread::spawn(move || {
            let guard = SuiteGuard::enter("it::beta");
            entered.send(()).ok();
            drop(guard);
        });
        drop(first);
        assert!(
            seen.recv_timeout(Duration::from_millis(300)).is_err(),
            "another suite entered while one of alpha's tests still ran"
        );
        drop(second);
        assert!(
            seen.recv_timeout(Duration::from_secs(10)).is_ok(),
            "another suite never entered after alpha's last test ended"
        );
        other.join().ok();
    }
}
