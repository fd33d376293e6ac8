//! The embedding example as a user runs it: the real binary with a real policy, pings
//! through a veth pair, a real `curl` in a test cgroup, and a TCP collector that must
//! receive the forwarded events.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ironclad_testing::require_privileges;
use ironclad_testing::{ping, BpffsDir, LineCollector, LineLog, NetNs, TestCgroup, VethPair};

const BIN: &str = env!("CARGO_BIN_EXE_embed_agent");

/// The agent's stderr, line by line.
struct Agent {
    child: Child,
    log: LineLog,
}

impl Agent {
    fn spawn(args: &[String]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn embed_agent");
        let stderr = child.stderr.take().expect("stderr");
        Self {
            child,
            log: LineLog::start(stderr),
        }
    }

    fn log(&self) -> String {
        self.log.text()
    }

    fn wait_for(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.log.contains(needle) {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("the agent exited ({status}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the agent never said `{needle}`:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exit(&mut self, signal: Option<&str>) -> std::process::ExitStatus {
        if let Some(signal) = signal {
            let pid = self.child.id().to_string();
            let sent = Command::new("kill").args(["-s", signal, &pid]).status();
            assert!(sent.expect("kill").success());
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Every line it wrote is collected before the caller reads the log.
                self.log.finish();
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the agent did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Received lines that parse as JSON and satisfy `f`.
fn received(
    lines: &LineCollector,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    lines
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| f(v))
        .collect()
}

fn wait_received(
    lines: &LineCollector,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(first) = received(lines, &f).into_iter().next() {
            return first;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the collector never received {what}; it has: {:?}",
            lines.lines()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_args(
    policy: &Path,
    iface: &str,
    cgroup: &Path,
    forward: u16,
    pins: &Path,
    audit: &Path,
) -> Vec<String> {
    vec![
        "--policy".into(),
        policy.display().to_string(),
        "--iface".into(),
        iface.into(),
        "--cgroup".into(),
        cgroup.display().to_string(),
        "--forward".into(),
        format!("127.0.0.1:{forward}"),
        "--pin-dir".into(),
        pins.display().to_string(),
        "--audit-log".into(),
        audit.display().to_string(),
        "--heartbeat-seconds".into(),
        "1".into(),
    ]
}

#[test]
fn the_embedded_agent_enforces_and_forwards_drop_and_connect_events() {
    require_privileges!();
    enforces_and_forwards("embed", 0, &[]);
}

/// The same agent with its main loop on tokio: the events come through `EventStream`.
#[test]
fn the_embedded_agent_on_tokio_enforces_and_forwards_drop_and_connect_events() {
    require_privileges!();
    enforces_and_forwards("embedtokio", 2, &["--tokio"]);
}

/// Runs the agent (with `extra` arguments) on subnet 10.212.`net`.0/24 and checks what
/// it enforces and what its collector receives.
fn enforces_and_forwards(tag: &str, net: u8, extra: &[&str]) {
    let addr = |host: u8| format!("10.212.{net}.{host}");
    let ns = NetNs::new(tag).expect("netns");
    let veth = VethPair::new(
        &ns,
        &[&format!("{}/24", addr(1))],
        &[&format!("{}/24", addr(2)), &format!("{}/24", addr(3))],
    )
    .expect("veth");
    let cgroup = TestCgroup::new(tag).expect("cgroup");
    let pins = BpffsDir::new(tag).expect("bpffs");
    let dir = tempfile::tempdir().expect("tempdir");
    // A local service the policy forbids the cgroup's processes to reach.
    let service = TcpListener::bind("127.0.0.1:0").expect("service");
    let service_port = service.local_addr().expect("addr").port();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "shield:\n  deny: [{}]\n  sample_rate: 1\n\
             egress:\n  default: allow\n  rules:\n    - dst: 127.0.0.1\n      ports: [{service_port}]\n      proto: tcp\n      action: deny\n",
            addr(2)
        ),
    )
    .expect("policy");
    let lines = LineCollector::start().expect("collector");
    let forward = lines.port();
    let mut args = agent_args(
        &policy,
        veth.host(),
        cgroup.path(),
        forward,
        pins.path(),
        &dir.path().join("audit.jsonl"),
    );
    args.push("--detach-on-exit".into());
    let run_dir = dir.path().join("run");
    args.extend(["--run-dir".to_string(), run_dir.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut agent = Agent::spawn(&args);
    agent.wait_for(if extra.contains(&"--tokio") {
        "agent running (tokio)"
    } else {
        "agent running"
    });

    // The Shield: .2 is dropped at the driver, .3 passes.
    let sent = 4;
    assert_eq!(ping(&ns, &addr(2), &addr(1), sent, "0.2").expect("ping"), 0);
    assert_eq!(ping(&ns, &addr(3), &addr(1), 2, "0.2").expect("ping"), 2);
    let drop = wait_received(&lines, "a shield_drop event", |v| {
        v["event"]["kind"] == "shield_drop" && v["event"]["src"] == addr(2).as_str()
    });
    assert_eq!(
        drop["agent"], "embed_agent",
        "the agent's own envelope: {drop}"
    );
    assert_eq!(drop["event"]["verdict"], "drop", "{drop}");

    // The egress firewall: curl in the cgroup cannot connect; the refusal is forwarded.
    let curl = cgroup
        .command("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{service_port}/"))
        .status()
        .expect("curl");
    assert_eq!(curl.code(), Some(7), "curl could not connect");
    service.set_nonblocking(true).expect("nonblocking");
    assert!(
        service.accept().is_err(),
        "no connection reached the service"
    );
    let connect = wait_received(&lines, "a connect event", |v| {
        v["event"]["kind"] == "connect" && v["event"]["comm"] == "curl"
    });
    assert_eq!(connect["event"]["verdict"], "deny", "{connect}");
    assert_eq!(connect["event"]["dport"], service_port, "{connect}");

    // Exactly the pings sent were forwarded as drops (sample_rate 1).
    let start = Instant::now();
    while received(&lines, |v| v["event"]["kind"] == "shield_drop").len() < sent as usize {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        received(&lines, |v| v["event"]["kind"] == "shield_drop").len(),
        sent as usize
    );

    // The agent's own heartbeat reads the Shield's drop total.
    agent.wait_for(&format!(", {sent} packets dropped"));
    let self_protection = ironclad_sentinel::bpf_lsm_status().is_ok();
    assert_eq!(
        agent
            .log()
            .contains("running WITHOUT Ironclad self-protection"),
        !self_protection,
        "the agent says whether the Sentinel protects it:\n{}",
        agent.log()
    );

    // Its health report, through the same probe as the reference daemon's: alive, and
    // ready exactly when the Sentinel protects it too.
    let report = ironclad_agent::health::read(&run_dir).expect("a health report");
    assert_eq!(report.pid, agent.child.id(), "{report:?}");
    assert!(
        report.features["shield"].up && report.features["egress"].up,
        "{report:?}"
    );
    assert_eq!(
        report.features["sentinel"].up, self_protection,
        "{report:?}"
    );
    assert_eq!(report.ready, self_protection, "{report:?}");
    let alive = ironclad_agent::health::probe(&run_dir, false);
    assert!(alive.healthy, "{alive:?}");
    assert_eq!(
        ironclad_agent::health::probe(&run_dir, true).healthy,
        self_protection
    );

    let status = agent.exit(Some("TERM"));
    assert!(status.success(), "{status}:\n{}", agent.log());
    assert!(agent.log().contains("ironclad detached"), "{}", agent.log());
    assert!(
        ironclad_agent::health::read(&run_dir).is_none(),
        "the report goes when the agent detaches"
    );
    assert_eq!(
        std::fs::read_dir(pins.path()).expect("pins").count(),
        0,
        "nothing left pinned"
    );
    assert_eq!(ping(&ns, &addr(2), &addr(1), 1, "0.2").expect("ping"), 1);
}

#[test]
fn require_sentinel_fails_closed_without_bpf_lsm_and_loads_nothing() {
    require_privileges!();
    let ns = NetNs::new("embedreq").expect("netns");
    let veth = VethPair::new(&ns, &["10.212.1.1/24"], &["10.212.1.2/24"]).expect("veth");
    let cgroup = TestCgroup::new("embedreq").expect("cgroup");
    let pins = BpffsDir::new("embedreq").expect("bpffs");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "shield:\n  deny: [10.212.1.2]\negress:\n  default: allow\n",
    )
    .expect("policy");
    let forward = LineCollector::start().expect("collector").port();
    let mut args = agent_args(
        &policy,
        veth.host(),
        cgroup.path(),
        forward,
        pins.path(),
        &dir.path().join("audit.jsonl"),
    );
    args.extend(["--require-sentinel".into(), "--detach-on-exit".into()]);
    let mut agent = Agent::spawn(&args);
    if ironclad_sentinel::bpf_lsm_status().is_ok() {
        // With BPF-LSM the Sentinel starts and the agent runs protected.
        agent.wait_for("agent running");
        assert!(!agent.log().contains("WITHOUT"), "{}", agent.log());
        assert!(agent.exit(Some("TERM")).success(), "{}", agent.log());
        return;
    }
    let status = agent.exit(None);
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(agent.log().contains("starting Ironclad"), "{}", agent.log());
    assert!(!pins.path().join("shield").exists(), "nothing pinned");
    assert_eq!(
        ping(&ns, "10.212.1.2", "10.212.1.1", 1, "0.2").expect("ping"),
        1,
        "no program attached"
    );
}
