//! Helpers shared by the daemon's suites: a namespace lab and a running daemon.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each suite uses part of the helpers"
)]
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ironclad_testing::{ping, BpffsDir, LineLog, NetNs, VethPair};

pub const BIN: &str = env!("CARGO_BIN_EXE_full_firewall");

/// How long a start or reload with a feed of hundreds of thousands of prefixes may
/// take in the unoptimised test build on a busy two-CPU machine (CI runs the guests
/// and the builds beside the tests): the Shield's load and write of 300,000 scattered
/// hosts took more than 20 s there. Its speed is measured by the benchmarks.
pub const LARGE_FEED: Duration = Duration::from_secs(120);

/// A plain feed of `count` scattered IPv4 hosts, one a line (xorshift from `seed`), as a
/// real IP-level feed is shaped: nothing aggregates, every prefix is a /32.
pub fn scattered_hosts(seed: u64, count: usize) -> String {
    let mut x = seed;
    let mut text = String::new();
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{}\n", std::net::Ipv4Addr::from((x >> 16) as u32)));
    }
    text
}

/// `full_firewall run` with `config` on the host end of `veth`, pins under `pins` and
/// the audit log in `dir`.
pub fn run_args(config: &Path, veth: &VethPair, pins: &BpffsDir, dir: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--iface".into(),
        veth.host().to_string(),
        "--pin-dir".into(),
        pins.path().display().to_string(),
        "--audit-log".into(),
        dir.join("audit.jsonl").display().to_string(),
        // Each daemon its own health report, so parallel tests do not share one.
        "--run-dir".into(),
        dir.join("run").display().to_string(),
        // And its own state (the control API's rules).
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ]
}

/// A child process (a server a test started) killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The identity firewall's test client (`ironclad-bpf/tests/data/net_client.c`),
/// compiled as `dir/name`: each copy is an executable of its own for `exe` rules.
pub fn net_client(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ironclad-bpf/tests/data/net_client.c");
    let cc = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(cc.status.success(), "{cc:?}");
    exe
}

/// What `client` ([`net_client`]), run in `cgroup`, says of a TCP connection to
/// `127.0.0.1:port`: `ok=1 ...`, or `ok=0 eperm=1 ...` when the identity firewall
/// refused it.
pub fn connect_from(cgroup: &ironclad_testing::TestCgroup, client: &Path, port: &str) -> String {
    let out = cgroup
        .command(&client.display().to_string())
        .args(["tcp4", "127.0.0.1", port])
        .output()
        .expect("client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `full_firewall detach --pin-dir PINS`: every hook and pin removed; it must succeed.
pub fn detach(pins: &Path) {
    let out = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(pins)
        .output()
        .expect("detach");
    assert!(out.status.success(), "detach: {out:?}");
}

/// `full_firewall health --ready --run-dir RUN_DIR`: exit 0 when the daemon there runs
/// everything its policy configures.
pub fn health_ready(run_dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["health", "--ready", "--run-dir"])
        .arg(run_dir)
        .output()
        .expect("health")
}

/// A namespace on subnet 10.211.`net`.0/24 (v6: fd21:`net`::/64), sources .2 and .3.
pub struct Lab {
    pub net: u8,
    pub ns: NetNs,
    pub veth: VethPair,
    pub pins: BpffsDir,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new(tag: &str, net: u8) -> Self {
        let ns = NetNs::new(tag).expect("netns");
        let veth = VethPair::new(
            &ns,
            &[&format!("10.211.{net}.1/24")],
            &[&format!("10.211.{net}.2/24"), &format!("10.211.{net}.3/24")],
        )
        .expect("veth");
        Self {
            net,
            ns,
            veth,
            pins: BpffsDir::new(tag).expect("bpffs dir"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn addr(&self, host: u8) -> String {
        format!("10.211.{}.{host}", self.net)
    }

    /// Pings .1 from `.from`, `count` times; returns how many were answered.
    pub fn ping(&self, from: u8, count: u32) -> u32 {
        ping(&self.ns, &self.addr(from), &self.addr(1), count, "0.2").expect("ping")
    }

    /// Whether `.from` reaches .1: up to three single pings, each given a second. For
    /// a source that must pass: its first packet may wait on address resolution (both
    /// ways) on a machine busy with guests and other suites. (A CI run lost all three:
    /// that was a benchmark's host-wide nftables chain beside the tests, since scoped
    /// to its own interface.) A source that must be dropped is checked with
    /// [`ping`](Self::ping), strictly.
    pub fn reaches(&self, from: u8) -> bool {
        (0..3).any(|_| self.ping(from, 1) == 1)
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn policy_denying(&self, hosts: &[u8]) -> String {
        let deny: Vec<String> = hosts.iter().map(|h| self.addr(*h)).collect();
        format!("shield:\n  deny: [{}]\n  sample_rate: 1\n", deny.join(", "))
    }

    pub fn run_args(&self, config: &Path) -> Vec<String> {
        run_args(config, &self.veth, &self.pins, self.dir.path())
    }

    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--pin-dir"])
            .arg(self.pins.path())
            .output()
            .expect("status");
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// `status --json` with the daemon's health report (`--run-dir DIR/run`).
    pub fn daemon_status(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--pin-dir"])
            .arg(self.pins.path())
            .arg("--run-dir")
            .arg(self.dir.path().join("run"))
            .output()
            .expect("status");
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    pub fn rule_packets(&self, cidr: &str) -> u64 {
        let status = self.status();
        status["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r["cidr"] == cidr)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or_else(|| panic!("no rule {cidr} in {status}"))
    }
}

/// A running daemon whose stderr is collected line by line.
pub struct Daemon {
    pub child: Option<Child>,
    log: LineLog,
}

impl Daemon {
    pub fn spawn(args: &[String]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        // A test's runtime rules and accepted bundles stay with the test: without
        // `--state-dir` the daemon would keep them in the host's /var/lib/ironclad,
        // where the next test's daemon would enforce them (seen: a rule one test added
        // through the API showed up in another's firewall).
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|at| args.get(at + 1))
        };
        if let (Some(run_dir), None, true) = (
            value("--run-dir"),
            value("--state-dir"),
            args.first().is_some_and(|a| a == "run"),
        ) {
            cmd.arg("--state-dir").arg(format!("{run_dir}-state"));
        }
        Self::spawn_command(cmd, false)
    }

    /// Spawns `cmd` with stderr collected line by line through a pipe; with `journal`,
    /// `$JOURNAL_STREAM` names that pipe, as systemd does for a service logging to the
    /// journal.
    pub fn spawn_command(mut cmd: Command, journal: bool) -> Self {
        let (reader, writer) = std::io::pipe().expect("pipe");
        if journal {
            let stat = rustix::fs::fstat(&writer).expect("fstat pipe");
            cmd.env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino));
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(writer)
            .spawn()
            .expect("spawn full_firewall");
        // The parent's copy of the write end went into `cmd`; drop it so EOF comes.
        drop(cmd);
        Self {
            child: Some(child),
            log: LineLog::start(reader),
        }
    }

    /// The port of `--metrics 127.0.0.1:0`, from the daemon's log.
    pub fn metrics_port(&self) -> u16 {
        let log = self.log();
        log.split("metrics on http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
    }

    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Waits up to 60 s for `needle` in the log. A passing test never waits that
    /// long; in CI the two CPUs are shared with the guests' emulated one and the
    /// other tests, and loading the stateful firewall's object there once took over
    /// 18 s, past the 20 s this used to allow for the whole start.
    pub fn wait_for(&self, needle: &str) {
        self.wait_for_within(needle, Duration::from_secs(60));
    }

    /// Waits up to `limit` for `needle` in the log, for a start or step that is long
    /// by design (a feed of hundreds of thousands of prefixes in an unoptimised test
    /// build: [`LARGE_FEED`]).
    pub fn wait_for_within(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log.contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon never said `{needle}`:\n{}", self.log());
    }

    /// Waits until the log holds `needle` more than `before` times.
    pub fn wait_for_more(&self, needle: &str, before: usize) {
        self.wait_for_more_within(needle, before, Duration::from_secs(30));
    }

    /// `wait_for_more` up to `limit`, for a step that is long by design.
    pub fn wait_for_more_within(&self, needle: &str, before: usize, limit: Duration) {
        let start = Instant::now();
        while self.log().matches(needle).count() <= before {
            assert!(
                start.elapsed() < limit,
                "no new `{needle}`:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                // Every line it wrote is collected before the caller reads the log.
                self.log.finish();
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon did not exit:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
