//! The process cache with real processes: the installed `dig` (multi-threaded; its DNS
//! query is sent by a thread named `isc-net-*`) that exits before its event is read, an
//! exec chain bash → sh → dig, a pid reused by another program, a container-like
//! cgroup, and a cache too small for the host.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ironclad_bpf::{EventReader, Loader, ProcessMonitor, Telemetry};
use ironclad_events::{DnsRecord, Event, Fanout, Overflow, Subscription};
use ironclad_policy::process::ProcessPolicy;
use ironclad_policy::telemetry::TelemetryPolicy;
use ironclad_testing::require_privileges;
use ironclad_testing::{BpffsDir, TestCgroup};

const DIG: &str = "/usr/bin/dig";

struct Rig {
    _pins: BpffsDir,
    cgroup: TestCgroup,
    _telemetry: Telemetry,
    processes: Arc<ProcessMonitor>,
    reader: EventReader,
    sub: Subscription<Event>,
}

fn rig(tag: &str, policy: &ProcessPolicy) -> Rig {
    let pins = BpffsDir::new(tag).expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let cgroup = TestCgroup::new(tag).expect("cgroup");
    let telemetry = Telemetry::start(
        &loader,
        &{
            let mut built = TelemetryPolicy::default();
            built.dns = true;
            built
        },
        cgroup.path(),
    )
    .expect("telemetry");
    let processes = Arc::new(ProcessMonitor::start(&loader, policy).expect("process monitor"));
    let fanout = Arc::new(Fanout::new());
    let sub = fanout.subscribe("test", 4096, Overflow::DropNewest);
    let reader = EventReader::with_processes(
        vec![telemetry.event_source().expect("source")],
        fanout,
        processes.clone(),
    )
    .expect("reader");
    Rig {
        _pins: pins,
        cgroup,
        _telemetry: telemetry,
        processes,
        reader,
        sub,
    }
}

impl Rig {
    /// The DNS queries read so far (the reader runs only when this is called: every
    /// process the test started has exited by then).
    fn queries(&self) -> Vec<DnsRecord> {
        let mut out = Vec::new();
        for _ in 0..5 {
            self.reader.poll(Duration::from_millis(100)).expect("poll");
            out.extend(self.sub.receiver().try_iter().filter_map(|e| match e {
                Event::Dns(d) if d.direction == "query" => Some(d),
                _ => None,
            }));
        }
        out
    }

    /// The query for `name`, read as it comes: for a process the test did not wait for,
    /// whose start under a guest's emulated CPU can take a second or more.
    fn query_for(&self, name: &str, within: Duration) -> DnsRecord {
        let deadline = std::time::Instant::now() + within;
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            self.reader.poll(Duration::from_millis(100)).expect("poll");
            for e in self.sub.receiver().try_iter() {
                match e {
                    Event::Dns(d) if d.direction == "query" && d.qname.as_deref() == Some(name) => {
                        return d
                    }
                    Event::Dns(d) if d.direction == "query" => seen.push(d),
                    _ => {}
                }
            }
        }
        panic!("no query for {name} in {within:?}; other queries: {seen:#?}")
    }
}

fn dig_args(name: &str) -> Vec<String> {
    ["@127.0.0.1", "+tries=1", "+time=2", name]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
}

fn run_ok(cmd: &mut Command) -> u32 {
    let child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    pid
}

#[test]
fn a_short_lived_multithreaded_program_is_named_after_it_exited() {
    require_privileges!();
    crate::loopback_dns_responder();
    let rig = rig("pdig", &ProcessPolicy::default());
    let pid = run_ok(rig.cgroup.command(DIG).args(dig_args("dig.example.test")));
    let queries = rig.queries();
    let q = queries
        .iter()
        .find(|q| q.qname.as_deref() == Some("dig.example.test"))
        .unwrap_or_else(|| panic!("no query in {queries:#?}"));
    assert_eq!(q.actor.pid, pid);
    let p = q.actor.process.as_ref().expect("process block");
    assert_eq!(p.pid, pid);
    assert_eq!(p.comm, "dig", "the process's name, whatever thread sent");
    assert_ne!(
        q.actor.comm, "dig",
        "the event keeps the sending thread's own name apart"
    );
    assert_eq!(p.exe.as_deref(), Some(DIG));
    assert_eq!(
        q.actor.exe.as_deref(),
        Some(DIG),
        "exe filled from the cache"
    );
    let mut args = vec!["/usr/bin/dig".to_string()];
    args.extend(dig_args("dig.example.test"));
    assert_eq!(p.args, args);
    assert_eq!(
        p.exit_code,
        Some(0),
        "it had exited when the event was read"
    );
    assert_eq!(
        p.ancestors.first().map(|a| a.pid),
        Some(std::process::id()),
        "its parent is this test"
    );
    assert!(
        p.cgroup
            .as_deref()
            .is_some_and(|c| c.contains("ironclad-pdig-")),
        "{p:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&Event::Dns(q.clone()).to_json()).expect("json");
    assert_eq!(json["process"]["comm"], "dig");
    assert_eq!(json["process"]["exe"], DIG);
    let stats = rig.processes.stats().expect("stats");
    assert_eq!(
        (stats.lost, stats.overflows, stats.mismatches),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn an_exec_chain_is_reported_as_lineage_with_redacted_arguments() {
    require_privileges!();
    crate::loopback_dns_responder();
    let policy = {
        let mut built = ProcessPolicy::default();
        built.redact_args = vec!["^hmac-sha256:".to_string()];
        built
    };
    let rig = rig("pchain", &policy);
    // `; true` keeps each shell from replacing itself with its last command. dig sends
    // the query signed with the TSIG secret given by -y (and then refuses the unsigned
    // answer, which does not matter here).
    let script = format!(
        "sh -c '{DIG} @127.0.0.1 +tries=1 +time=2 -y hmac-sha256:tsigkey:c2VjcmV0aHVudGVy chain.example.test; true'; true"
    );
    let bash = run_ok(rig.cgroup.command("/usr/bin/bash").args(["-c", &script]));
    let queries = rig.queries();
    let q = queries
        .iter()
        .find(|q| q.qname.as_deref() == Some("chain.example.test"))
        .unwrap_or_else(|| panic!("no query in {queries:#?}"));
    let p = q.actor.process.as_ref().expect("process block");
    assert_eq!(p.exe.as_deref(), Some(DIG));
    assert!(p.args.iter().any(|a| a == "[redacted]"), "{:?}", p.args);
    assert!(
        !p.args.iter().any(|a| a.contains("c2VjcmV0")),
        "{:?}",
        p.args
    );
    let chain: Vec<(&str, Option<&str>)> = p
        .ancestors
        .iter()
        .map(|a| (a.comm.as_str(), a.exe.as_deref()))
        .collect();
    // The default depth, 4: sh, bash, this test, whatever started it.
    assert_eq!(chain.len(), 4, "{chain:?}");
    assert_eq!(chain[0].0, "sh", "{chain:?}");
    assert!(
        chain[0].1.is_some_and(|e| e.ends_with("bin/sh")),
        "the path sh was executed by (dash's file): {chain:?}"
    );
    assert_eq!(chain[1], ("bash", Some("/usr/bin/bash")), "{chain:?}");
    assert_eq!(p.ancestors[1].pid, bash);
    assert_eq!(p.ancestors[2].pid, std::process::id());
}

#[test]
fn a_reused_pid_names_each_process_by_the_time_of_its_event() {
    require_privileges!();
    crate::loopback_dns_responder();
    let rig = rig("preuse", &ProcessPolicy::default());
    let python = ironclad_testing::python_interpreter().expect("python3");
    let client = "import socket,struct\nq=struct.pack('>HHHHHH',7,256,1,0,0,0)+b'\\x05reuse\\x07example\\x04test\\x00'+struct.pack('>HH',1,1)\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.sendto(q,('127.0.0.1',53))\ns.recv(512)\n";
    let mut pair = None;
    for _ in 0..20 {
        let first = run_ok(rig.cgroup.command(DIG).args(dig_args("reuse.example.test")));
        // The kernel hands out ns_last_pid + 1 next (when it is free).
        std::fs::write("/proc/sys/kernel/ns_last_pid", (first - 1).to_string())
            .expect("ns_last_pid");
        let second = run_ok(
            rig.cgroup
                .command(&python.display().to_string())
                .args(["-c", client]),
        );
        if second == first {
            pair = Some(first);
            break;
        }
    }
    let pid = pair.expect("the pid was not reused in 20 tries");
    let queries: Vec<DnsRecord> = rig
        .queries()
        .into_iter()
        .filter(|q| q.actor.pid == pid && q.qname.as_deref() == Some("reuse.example.test"))
        .collect();
    assert_eq!(queries.len(), 2, "{queries:#?}");
    let exes: Vec<Option<String>> = queries
        .iter()
        .map(|q| q.actor.process.as_ref().and_then(|p| p.exe.clone()))
        .collect();
    assert_eq!(
        exes,
        [Some(DIG.to_string()), Some(python.display().to_string())],
        "one pid, two processes, each event names its own"
    );
    let starts: Vec<&str> = queries
        .iter()
        .filter_map(|q| q.actor.process.as_ref().map(|p| p.start_time.as_str()))
        .collect();
    assert_ne!(starts[0], starts[1], "start times tell them apart");
}

#[test]
fn an_ended_parent_whose_pid_was_reused_is_not_named_as_an_ancestor() {
    require_privileges!();
    crate::loopback_dns_responder();
    let rig = rig("preparent", &ProcessPolicy::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("go");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    // The outer sh starts the inner one, waits until it has exec'd, and ends; the inner
    // sh runs dig when the test writes into the FIFO.
    let inner = format!(
        "read x < {}; {DIG} @127.0.0.1 +tries=1 +time=2 reparent.example.test; true",
        fifo.display()
    );
    let outer = format!("/usr/bin/sh -c '{inner}' </dev/null >/dev/null 2>&1 & sleep 0.3");
    let ended = run_ok(rig.cgroup.command("/usr/bin/sh").args(["-c", &outer]));
    std::thread::sleep(Duration::from_millis(30)); // another start tick
    let holder = ironclad_testing::spawn_with_pid(ended, 20, || {
        let mut bash = rig.cgroup.command("/usr/bin/bash");
        bash.args(["-c", "sleep 30; true"]); // not `exec`ed into sleep
        bash
    })
    .expect("spawn bash");
    let mut holder = holder.expect("the ended sh's pid was not reused in 20 tries");
    std::thread::sleep(Duration::from_millis(100)); // bash has exec'd
    std::fs::write(&fifo, "go\n").expect("fifo");
    // dig runs in the background: wait for its query, not for a fixed time (500 ms was
    // too short once in the 6.12 guest under a busy host).
    let q = rig.query_for("reparent.example.test", Duration::from_secs(15));
    let _ = holder.kill();
    let _ = holder.wait();
    let p = q.actor.process.as_ref().expect("process block");
    assert_eq!(p.exe.as_deref(), Some(DIG));
    let chain: Vec<(u32, &str)> = p
        .ancestors
        .iter()
        .map(|a| (a.pid, a.comm.as_str()))
        .collect();
    // The inner sh, then the pid of the outer one, now bash's: the chain stops there.
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert_eq!(chain[0].1, "sh", "{chain:?}");
    assert!(
        !chain.iter().any(|(pid, _)| *pid == ended),
        "bash took the pid after the parent ended: {chain:?}"
    );
}

#[test]
fn a_program_run_by_a_relative_path_is_named_by_its_absolute_path_and_file() {
    require_privileges!();
    use std::os::unix::fs::MetadataExt;
    crate::loopback_dns_responder();
    let rig = rig("prelative", &ProcessPolicy::default());
    // dig and the shell have ended when the records are read: the path is found by
    // the file the kernel ran, not by a working directory that is gone.
    let script = format!(
        "cd {} && ./dig @127.0.0.1 +tries=1 +time=2 relative.example.test; true",
        Path::new(DIG).parent().expect("dir").display()
    );
    run_ok(rig.cgroup.command("/usr/bin/sh").args(["-c", &script]));
    let queries = rig.queries();
    let q = queries
        .iter()
        .find(|q| q.qname.as_deref() == Some("relative.example.test"))
        .unwrap_or_else(|| panic!("no query in {queries:#?}"));
    let p = q.actor.process.as_ref().expect("process block");
    assert_eq!(p.exe.as_deref(), Some(DIG), "{p:#?}");
    assert_eq!(p.args.first().map(String::as_str), Some("./dig"));
    let meta = std::fs::metadata(DIG).expect("dig");
    let file = p.exe_file.as_ref().expect("exe_file");
    assert_eq!(file.ino, meta.ino());
    // The device of the inode's superblock, as the kernel names the file: from the
    // mount table, not stat's st_dev, which on an overlayfs root (a container's, or
    // the QEMU guests') is the device of the layer holding the file.
    let id = ironclad_core::identity::exe_identity(Path::new(DIG)).expect("identity");
    let (major, minor) = (id.dev >> 20, id.dev & 0xf_ffff);
    assert_eq!(file.dev, format!("{major}:{minor}"));
}

#[test]
fn a_container_cgroup_names_the_container() {
    require_privileges!();
    crate::loopback_dns_responder();
    let rig = rig("pctr", &ProcessPolicy::default());
    let id = "4f1e5a0b6c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";
    let scope = rig.cgroup.path().join(format!("docker-{id}.scope"));
    std::fs::create_dir(&scope).expect("scope");
    let pid = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(scope.join("cgroup.procs"))
            .arg(DIG)
            .args(dig_args("ctr.example.test")),
    );
    let queries = rig.queries();
    std::fs::remove_dir(&scope).expect("remove scope");
    let q = queries
        .iter()
        .find(|q| q.actor.pid == pid)
        .unwrap_or_else(|| panic!("no query in {queries:#?}"));
    let p = q.actor.process.as_ref().expect("process block");
    let c = p.container.as_ref().expect("container");
    assert_eq!((c.runtime, c.id.as_str()), ("docker", id));
    assert!(
        p.cgroup
            .as_deref()
            .is_some_and(|g| g.ends_with(&format!("/docker-{id}.scope"))),
        "{p:?}"
    );
}

#[test]
fn a_full_cache_says_so_and_never_names_the_wrong_process() {
    require_privileges!();
    crate::loopback_dns_responder();
    // Fewer slots than the host has processes: the seed alone fills it.
    let policy = {
        let mut built = ProcessPolicy::default();
        built.capacity = 16;
        built
    };
    let rig = rig("pfull", &policy);
    let pid = run_ok(rig.cgroup.command(DIG).args(dig_args("full.example.test")));
    let queries = rig.queries();
    let q = queries
        .iter()
        .find(|q| q.actor.pid == pid)
        .unwrap_or_else(|| panic!("no query in {queries:#?}"));
    // A process exiting meanwhile may free a slot: then the block must be right.
    if let Some(p) = &q.actor.process {
        assert_eq!((p.pid, p.exe.as_deref()), (pid, Some(DIG)), "{p:?}");
    }
    let stats = rig.processes.stats().expect("stats");
    assert!(stats.overflows > 0, "{stats:?}");
    assert!(stats.cached <= 16, "{stats:?}");
}

/// Regression (red team, round 3): a reload ignored `processes:`, so a redaction pattern
/// added to hide a secret left it in every event of a process already running. Now
/// `reconfigure` applies the new patterns to the cached processes too: a long-lived
/// process whose command line carries a token is named with it before, and with the
/// token redacted in its very next event after.
#[test]
fn a_reconfigured_redaction_pattern_hides_the_secret_of_a_running_process() {
    require_privileges!();
    crate::loopback_dns_responder();
    let rig = rig("predact", &ProcessPolicy::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let python = ironclad_testing::python_interpreter().expect("python3");
    let script = "import os,socket,struct,sys,time\n\
def ask(labels):\n    q=struct.pack('>HHHHHH',9,256,1,0,0,0)+b''.join(bytes([len(l)])+l for l in labels)+b'\\x00'+struct.pack('>HH',1,1)\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n    s.settimeout(2)\n    s.sendto(q,('127.0.0.1',53))\n    s.recv(512)\n\
ask([b'first',b'example',b'test'])\n\
while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n\
ask([b'second',b'example',b'test'])\n";
    let token = "tok-7f3a9c2e51d84b6a";
    // The script from a file: its text on the command line would fill the arguments the
    // kernel captures before the token.
    let file = dir.path().join("ask.py");
    std::fs::write(&file, script).expect("script");
    let mut child = rig
        .cgroup
        .command(&python.display().to_string())
        .args([
            &file.display().to_string(),
            &go.display().to_string(),
            token,
        ])
        .spawn()
        .expect("python3");
    let first = rig.query_for("first.example.test", Duration::from_secs(30));
    let args = &first.actor.process.as_ref().expect("process block").args;
    assert!(
        args.iter().any(|a| a == token),
        "no pattern yet, so the token shows: {args:?}"
    );
    let changed = rig
        .processes
        .reconfigure(&{
            let mut built = ProcessPolicy::default();
            built.redact_args = vec!["^tok-".to_string()];
            built
        })
        .expect("reconfigure");
    assert!(!changed, "the same capacity");
    std::fs::write(&go, "").expect("go");
    let second = rig.query_for("second.example.test", Duration::from_secs(30));
    let args = &second.actor.process.as_ref().expect("process block").args;
    assert!(
        !args.iter().any(|a| a.contains("tok-")),
        "the running process's token is redacted: {args:?}"
    );
    assert!(args.iter().any(|a| a == "[redacted]"), "{args:?}");
    // A pattern that is not a regular expression changes nothing.
    let bad = rig.processes.reconfigure(&{
        let mut built = ProcessPolicy::default();
        built.redact_args = vec!["(unclosed".to_string()];
        built
    });
    assert!(bad.is_err(), "{bad:?}");
    assert!(child.wait().expect("python3").success());
}
