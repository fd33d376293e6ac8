//! One policy with every feature, on whatever kernel this runs on (the host's 6.18 and
//! each guest kernel of `guest/kernels`, Debian 11's 5.10 among them): each feature
//! either runs or its health entry names what this kernel lacks, and the features that
//! run enforce. What the kernel has is read here with `bpftool` from its BTF, not from
//! the daemon, and a feature that is down says so in `health --ready` and the log.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{connect_from, detach, health_ready, net_client, Daemon, Lab};
use ironclad_testing::{require_privileges, TestCgroup};

/// The kernel's own BTF as `bpftool` prints it (raw: one line per enum member).
fn kernel_btf() -> String {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("bpftool btf dump");
    assert!(out.status.success(), "bpftool: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the BTF dump has enum member `name` (`'BPF_FUNC_loop' val=181`).
fn has_member(btf: &str, name: &str) -> bool {
    btf.contains(&format!("'{name}' val="))
}

#[test]
fn every_feature_runs_or_names_what_this_kernel_lacks_and_the_running_ones_enforce() {
    require_privileges!();
    let btf = kernel_btf();
    let has_loop = has_member(&btf, "BPF_FUNC_loop");
    let has_task_storage = has_member(&btf, "BPF_MAP_TYPE_TASK_STORAGE");
    let bpf_lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.split(',').any(|m| m.trim() == "bpf"));

    let lab = Lab::new("ickernel", 90);
    let cgroup = TestCgroup::new("ickernel").expect("cgroup");
    let client = net_client(lab.dir.path(), "reach_client");
    let denied = TcpListener::bind("127.0.0.1:0").expect("listener");
    let denied_port = denied.local_addr().expect("addr").port();
    std::thread::spawn(move || for _ in denied.incoming() {});
    let guarded = lab.dir.path().join("guarded");
    std::fs::create_dir(&guarded).expect("guarded dir");
    // Where the Sentinel runs it refuses the daemon's fatal signals to everyone but its
    // update manager, this test's own kill included: the manager is a copy of `kill`.
    let stopper = lab.dir.path().join("stopper");
    std::fs::copy("/usr/bin/kill", &stopper).expect("copy kill");
    let iface = lab.veth.host();
    let config = lab.write_config(
        "policy.yaml",
        &format!(
            "sentinel:\n  protect: [{guarded}]\n  update_manager: {stopper}\n  required: false\n\
             shield:\n  deny: [{attacker}]\n\
             firewall:\n  interfaces: [{iface}]\n  rules:\n    - {{direction: in, proto: tcp, dport: 9, action: drop}}\n\
             egress:\n  default: allow\n  rules:\n    - {{dst: 127.0.0.1, ports: [{denied_port}], proto: tcp, action: deny}}\n\
             telemetry:\n  dns: true\n  bandwidth: true\n\
             processes:\n  capacity: 1024\n\
             tls:\n  scope: [{{comm: openssl}}]\n",
            guarded = guarded.display(),
            stopper = stopper.display(),
            attacker = lab.addr(3),
        ),
    );
    let mut args = lab.run_args(&config);
    args.push("--cgroup".into());
    args.push(cgroup.path().display().to_string());
    // --detach-on-exit: stopped, the daemon removes its hooks and pins itself (the
    // Sentinel, which outlives a killed daemon, would refuse anyone else).
    args.push("--detach-on-exit".into());
    let stoppable = Stoppable {
        daemon: Daemon::spawn(&args),
        stopper,
    };
    let daemon = &stoppable.daemon;
    // Either line ends the start: everything runs, or what does not is listed.
    let start = Instant::now();
    while !daemon.log().contains("full_firewall: ready")
        && !daemon
            .log()
            .contains("not ready: the policy is NOT fully enforced")
    {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the daemon did not finish starting:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let health: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lab.dir.path().join("run/health.json")).expect("health.json"),
    )
    .expect("health JSON");
    let feature = |name: &str| -> (bool, String) {
        let f = &health["features"][name];
        assert!(f.is_object(), "no health entry for {name}: {health}");
        (
            f["up"].as_bool().expect("up"),
            f["detail"].as_str().unwrap_or_default().to_string(),
        )
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("release");
    eprintln!("on {}: {health:#}", release.trim());

    // Shield, telemetry and the process cache need nothing past 5.10's vocabulary.
    for always in ["shield", "telemetry"] {
        let (up, detail) = feature(always);
        assert!(up, "{always} is down on {release}: {detail}");
    }
    // Down, the detail names the missing helper or map type and its release, with the
    // programs or maps that need it: not the kernel's bare EINVAL.
    let expect = |name: &str, runs: bool, lack: &str| {
        let (up, detail) = feature(name);
        assert_eq!(up, runs, "{name} on {release}: {detail}");
        if !runs {
            assert!(
                detail.contains("lacks") && detail.contains(lack),
                "{name} is down on {release} without naming {lack}: {detail}"
            );
            assert!(!detail.contains("os error 22"), "{name}: {detail}");
        }
    };
    expect(
        "firewall",
        has_loop,
        "the helper bpf_loop (Linux 5.17), needed by ic_fw_",
    );
    expect(
        "egress",
        has_loop,
        "the helper bpf_loop (Linux 5.17), needed by ic_connect4",
    );
    // TLS capture has a build for kernels without either (an LRU hash for the calls
    // in flight, a bounded loop): it runs everywhere, and the audit log says which
    // build loaded.
    expect("tls", true, "");
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit log");
    let loaded_for_older_kernels = |object: &str| {
        audit.lines().any(|l| {
            l.contains(&format!("\"object\":\"{object}\""))
                && l.contains("loading the build for older kernels")
        })
    };
    assert_eq!(
        loaded_for_older_kernels("tls"),
        !(has_loop && has_task_storage),
        "which TLS build loaded on {release}: {audit}"
    );
    if bpf_lsm {
        // As TLS: a build without task storage where the kernel lacks it.
        expect("sentinel", true, "");
        assert_eq!(
            loaded_for_older_kernels("sentinel"),
            !has_task_storage,
            "which Sentinel build loaded on {release}"
        );
    } else {
        let (up, detail) = feature("sentinel");
        assert!(!up, "sentinel up without `bpf` in the LSM list: {detail}");
        // `bpf` missing from the LSM list, or no list to read (securityfs unmounted).
        assert!(detail.to_lowercase().contains("lsm"), "sentinel: {detail}");
    }

    // What is down is said where operators look: readiness and the log.
    let all_up = health["features"]
        .as_object()
        .expect("features")
        .values()
        .all(|f| f["up"] == true);
    let ready = health_ready(&lab.dir.path().join("run"));
    assert_eq!(ready.status.success(), all_up, "health --ready: {ready:?}");
    if !all_up {
        let log = daemon.log();
        assert!(
            log.contains("not ready: the policy is NOT fully enforced"),
            "{log}"
        );
    }

    // The features that run enforce: the Shield drops the denied source and passes
    // the other, ...
    assert_eq!(
        lab.ping(3, 3),
        0,
        "the Shield let the denied source through"
    );
    assert!(lab.reaches(2), "the Shield dropped an allowed source");
    // ... the identity firewall refuses the denied port to the cgroup's process, ...
    let answer = connect_from(&cgroup, &client, &denied_port.to_string());
    if has_loop {
        assert!(
            answer.contains("eperm=1"),
            "egress let it connect: {answer}"
        );
    } else {
        assert!(
            answer.starts_with("ok=1"),
            "nothing should refuse it: {answer}"
        );
    }
    // ... and the stateful firewall drops inbound tcp/9 while tcp/49999 gets a reset.
    if has_loop {
        let probe = |port: u16| {
            lab.ns
                .command("timeout")
                .args(["2", "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{}/{port}", lab.addr(1)))
                .output()
                .expect("probe")
        };
        // No listener on either: an RST ("refused", exit 1) unless dropped (timeout 124).
        assert_eq!(probe(9).status.code(), Some(124), "tcp/9 was not dropped");
        assert_eq!(
            probe(49999).status.code(),
            Some(1),
            "tcp/49999 should be refused"
        );
    }
    drop(stoppable);
    detach(lab.pins.path());
}

/// A daemon stopped through its Sentinel's update manager (a copy of `kill`, SIGTERM:
/// it detaches on exit), then as any: a test that fails does not leave it running, nor
/// wait forever on a kill the Sentinel refused.
struct Stoppable {
    daemon: Daemon,
    stopper: std::path::PathBuf,
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        let Some(child) = self.daemon.child.as_mut() else {
            return;
        };
        let _ = Command::new(&self.stopper)
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
