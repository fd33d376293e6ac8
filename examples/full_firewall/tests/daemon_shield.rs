//! The Shield through the reference daemon: the real binary, real packets through a
//! veth pair, `kill -9`, SIGHUP, `status` and `detach` as an operator uses them.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironclad_testing::require_privileges;
use ironclad_testing::BpffsDir;

use crate::common::{Daemon, Lab, BIN, LARGE_FEED};

/// `full_firewall run` without an interface (features other than the Shield), with
/// the audit log and events written to `dir/audit.jsonl` and `dir/events.jsonl`.
fn spawn_without_iface(config: &Path, pins: &Path, dir: &Path, extra: &[String]) -> Daemon {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--pin-dir".into(),
        pins.display().to_string(),
        "--audit-log".into(),
        dir.join("audit.jsonl").display().to_string(),
        "--events".into(),
        dir.join("events.jsonl").display().to_string(),
        "--run-dir".into(),
        dir.join("run").display().to_string(),
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(&args)
}

#[test]
fn check_prints_counts_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ok.yaml");
    std::fs::write(
        &path,
        "shield:\n  deny: [203.0.113.0/24, 203.0.113.0/24, 2001:db8::/32, 198.51.100.1]\n  allow: [203.0.113.9]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["ipv4_prefixes"], 3);
    assert_eq!(json["ipv6_prefixes"], 1);
    assert_eq!(json["duplicates_merged"], 1);
}

/// Regression (hardening): `check` passed a policy `run` could not load (a forced fast
/// path that does not fit), and said nothing of a `/0` deny that locks the operator out.
#[test]
fn check_refuses_what_run_cannot_load_and_warns_of_a_lockout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fast.yaml");
    // Hosts of four feeds in each of 21,000 /24s (five entries a /24 with the addresses
    // none lists): a group each while there are groups, then a leaf node of the span
    // table each, more than the span table holds (hosts of up to three rules in a /24
    // are smaller nodes).
    let feeds =
        ironclad_testing::rules::host_feeds(dir.path(), &[1, 3, 5, 7], 21_000).expect("feeds");
    std::fs::write(
        &path,
        format!("shield:\n  ipv4_lookup: fast\n  deny_feeds:\n{feeds}"),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:2:16: shield.ipv4_lookup: the IPv4 fast path needs ",
            path.display()
        )) && stderr.contains("span table"),
        "{stderr}"
    );
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, "shield:\n  deny: [0.0.0.0/0]\n").expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:2:10: warning: shield.deny[0]: denies every IPv4 source",
            path.display()
        )),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["warnings"], 1);
}

/// Regression (hardening): a feed path naming a FIFO hung `check` and wedged the daemon
/// (SIGTERM ignored, reloads stopped). Now it is refused at once, in `check` and on a
/// reload, and the daemon stays responsive.
#[test]
fn a_fifo_feed_neither_hangs_check_nor_wedges_the_daemon() {
    require_privileges!();
    let lab = Lab::new("fffifo", 45);
    let fifo = lab.dir.path().join("feed.txt");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let with_fifo = format!(
        "shield:\n  deny: [{}]\n  deny_feeds:\n    - path: feed.txt\n      format: plain\n",
        lab.addr(3)
    );
    let config = lab.write_config("policy.yaml", &with_fifo);
    let mut check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("check");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = check.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = check.kill();
            panic!("check hangs on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut check.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(stderr.contains("not a regular file (a FIFO)"), "{stderr}");
    // A running daemon whose policy comes to name the FIFO on a reload.
    std::fs::write(&config, lab.policy_denying(&[3])).expect("policy");
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    daemon.wait_for("full_firewall: ready");
    std::fs::write(&config, &with_fifo).expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("reload refused");
    assert!(
        daemon.log().contains("not a regular file (a FIFO)"),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.ping(3, 1), 0, "the old policy stays");
    daemon.signal("TERM");
    assert!(
        daemon.wait().success(),
        "SIGTERM still stops it: {}",
        daemon.log()
    );
}

#[test]
fn check_reports_each_bad_line_with_file_line_column_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "shield:\n  deny:\n    - 10.0.0.300/8\n    - 192.0.2.0/24\n    - nope\n  management:\n    - 192.0.2.1/24\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let p = path.display().to_string();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with(&format!("{p}:3:7: ")), "{stderr}");
    assert!(lines[1].starts_with(&format!("{p}:5:7: ")), "{stderr}");
    assert!(lines[2].starts_with(&format!("{p}:7:7: ")), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn run_with_a_bad_config_changes_nothing_in_the_kernel() {
    require_privileges!();
    let lab = Lab::new("ffbad", 1);
    let config = lab.write_config("bad.yaml", "shield:\n  deny: [10.211.1.3/33]\n");
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    let status = daemon.wait();
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    assert!(daemon.log().contains("bad.yaml:2:10:"), "{}", daemon.log());
    assert!(!lab.pins.path().join("shield").exists(), "nothing pinned");
    assert!(lab.reaches(3), "no program attached");
    // The Shield's program was loaded ahead while the policy compiled (the start's
    // path with a Shield and --iface), and released unpinned when the policy failed.
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit log");
    assert!(audit.contains("loaded ahead, not pinned"), "{audit}");
    assert!(
        audit.contains("loaded ahead and not used: released"),
        "{audit}"
    );
}

#[test]
fn enforcement_survives_kill_9_is_adopted_on_restart_and_detach_removes_everything() {
    require_privileges!();
    let lab = Lab::new("fflife", 2);
    let denied = format!("{}/32", lab.addr(3));
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let events = lab.dir.path().join("events.jsonl");
    let mut args = lab.run_args(&config);
    args.extend(["--events".to_string(), events.display().to_string()]);

    let first = Daemon::spawn(&args);
    first.wait_for("ready");
    assert!(
        first.log().contains("shield enforcing on"),
        "{}",
        first.log()
    );
    assert_eq!(lab.ping(3, 3), 0, "denied source dropped");
    assert_eq!(lab.ping(2, 2), 2, "allowed source passes");
    assert_eq!(lab.rule_packets(&denied), 3);

    // SIGKILL: no cleanup runs, the pinned link keeps enforcing.
    first.signal("KILL");
    drop(first);
    assert_eq!(lab.ping(3, 2), 0, "still dropped with the daemon dead");
    assert_eq!(lab.rule_packets(&denied), 5, "counters continue");
    let status = lab.status();
    assert_eq!(status["ipv4_lookup"], "fast", "{status}");
    let map_bytes = status["map_bytes"].as_u64().expect("map_bytes");
    let fast_table = status["maps"]
        .as_object()
        .expect("maps")
        .iter()
        .find(|(name, _)| name.starts_with("ic_v4_fast["))
        .and_then(|(_, bytes)| bytes.as_u64())
        .expect("the active fast-path table is reported");
    assert!(fast_table > 32 << 20 && map_bytes > fast_table, "{status}");

    // `ip link set dev X xdp off` cannot remove a link attachment.
    let off = Command::new("ip")
        .args(["link", "set", "dev", lab.veth.host(), "xdp", "off"])
        .output()
        .expect("ip");
    assert!(!off.status.success());
    assert_eq!(lab.ping(3, 1), 0, "still dropped after xdp off");

    // A new run adopts the pinned maps and link: the rule is kept, counters go on.
    let mut second = Daemon::spawn(&args);
    second.wait_for("ready");
    assert!(second.log().contains("0 added, 1 kept"), "{}", second.log());
    // The cold start loaded the Shield ahead while its policy compiled; the restart,
    // finding the pins, did not (its load reused them).
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit log");
    assert_eq!(
        audit.matches("loaded ahead, not pinned").count(),
        1,
        "{audit}"
    );
    assert!(!audit.contains("loaded ahead and not used"), "{audit}");
    assert_eq!(lab.ping(3, 2), 0);
    assert_eq!(lab.rule_packets(&denied), 8);

    // SIGTERM: the daemon exits, enforcement stays pinned.
    second.signal("TERM");
    assert!(second.wait().success(), "{}", second.log());
    assert!(
        second.log().contains("enforcement stays pinned"),
        "{}",
        second.log()
    );
    assert_eq!(lab.ping(3, 1), 0);

    let text = std::fs::read_to_string(&events).expect("events file");
    let drops: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert!(!drops.is_empty());
    assert!(drops
        .iter()
        .all(|d| d["kind"] == "shield_drop" && d["src"] == lab.addr(3)));

    let out = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .expect("detach");
    assert!(out.status.success(), "{out:?}");
    assert!(
        !lab.pins.path().exists()
            || std::fs::read_dir(lab.pins.path())
                .expect("dir")
                .next()
                .is_none()
    );
    assert!(lab.reaches(3), "detached: traffic flows");
}

#[test]
fn sighup_applies_a_valid_policy_and_keeps_the_old_one_when_invalid() {
    require_privileges!();
    let lab = Lab::new("ffhup", 3);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut args = lab.run_args(&config);
    args.push("--detach-on-exit".into());
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    assert!(lab.reaches(2));
    assert_eq!(lab.ping(3, 1), 0);

    std::fs::write(&config, lab.policy_denying(&[2])).expect("rewrite");
    daemon.signal("HUP");
    daemon.wait_for("reloaded: 1 added, 0 changed, 1 removed");
    assert_eq!(lab.ping(2, 1), 0, "new rule enforced");
    assert!(lab.reaches(3), "old rule gone");

    std::fs::write(&config, "shield:\n  deny: [not-an-ip]\n").expect("rewrite");
    daemon.signal("HUP");
    daemon.wait_for("reload refused");
    assert!(
        daemon.log().contains("policy.yaml:2:10:"),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.ping(2, 1), 0, "the old rules stay");

    daemon.signal("INT");
    assert!(daemon.wait().success(), "{}", daemon.log());
    assert!(daemon.log().contains("detached"), "{}", daemon.log());
    assert!(lab.reaches(2), "--detach-on-exit removed the shield");
    assert!(!lab.pins.path().join("shield").exists());
}

#[test]
fn a_missing_interface_fails_open_and_the_daemon_keeps_running() {
    require_privileges!();
    let lab = Lab::new("ffnoif", 4);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut args = lab.run_args(&config);
    let iface = args.iter().position(|a| a == "--iface").expect("iface") + 1;
    args[iface] = "ic-missing0".into();
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    assert!(
        daemon
            .log()
            .contains("shield disabled, traffic on ic-missing0 is not filtered"),
        "{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("network interface `ic-missing0` not found"),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon
            .child
            .as_mut()
            .expect("child")
            .try_wait()
            .expect("wait")
            .is_none(),
        "still running"
    );
    assert!(lab.reaches(3), "traffic untouched");
    // Regression (hardening): a daemon that does not enforce its policy said `ready`.
    assert!(
        daemon
            .log()
            .contains("not ready: the policy is NOT fully enforced"),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("full_firewall: ready"),
        "{}",
        daemon.log()
    );
    let run_dir = lab.dir.path().join("run");
    let probe = |ready: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["health", "--run-dir"]).arg(&run_dir);
        if ready {
            cmd.arg("--ready");
        }
        cmd.output().expect("health")
    };
    assert!(probe(false).status.success(), "alive: {:?}", probe(false));
    let not_ready = probe(true);
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&not_ready.stderr)
            .contains("shield: not running: traffic on ic-missing0 is not filtered"),
        "{not_ready:?}"
    );
    let status = lab.daemon_status();
    assert_eq!(status["daemon"]["alive"], true, "{status}");
    assert_eq!(status["daemon"]["ready"], false, "{status}");
    assert_eq!(
        status["daemon"]["features"]["shield"]["up"], false,
        "{status}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    assert!(
        probe(false).status.code() == Some(1),
        "no daemon, no health"
    );
}

/// Regression (hardening): a map of the wrong shape pinned where the Shield's goes made
/// the daemon run unprotected. Now it refuses, naming the pin and the ways out; with
/// `--replace-stale-pins` it replaces it and enforces.
#[test]
fn a_stale_pin_stops_the_start_or_is_replaced_on_request() {
    require_privileges!();
    let lab = Lab::new("ffstale", 42);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let dir = lab.pins.path().join("shield");
    std::fs::create_dir_all(&dir).expect("pin dir");
    let stale = dir.join("ic_shield_active");
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&stale)
        .args([
            "type",
            "hash",
            "key",
            "8",
            "value",
            "8",
            "entries",
            "4",
            "name",
            "ic_shield_active",
        ])
        .output()
        .expect("bpftool");
    assert!(made.status.success(), "{made:?}");
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    let status = daemon.wait();
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&format!("pinned map {} does not fit", stale.display())),
        "{log}"
    );
    assert!(
        log.contains("full_firewall detach --pin-dir") && log.contains("--replace-stale-pins"),
        "{log}"
    );
    assert!(lab.reaches(3), "nothing attached");
    let mut args = lab.run_args(&config);
    args.push("--replace-stale-pins".into());
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("full_firewall: ready");
    assert_eq!(lab.ping(3, 2), 0, "enforcing with a new map");
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("stale pin replaced"), "{audit}");
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}

/// Regression (hardening): `--events` on a full file system made the daemon exit on the
/// next drop event. Now events are lost (counted, the file named once in the log) and
/// enforcement goes on.
#[test]
fn a_full_disk_loses_events_not_enforcement() {
    require_privileges!();
    let lab = Lab::new("fffull", 43);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let full = lab.dir.path().join("full");
    std::fs::create_dir_all(&full).expect("dir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "ic-full"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    let events = full.join("events.jsonl");
    let mut args = lab.run_args(&config);
    let audit = args.iter().position(|a| a == "--audit-log").expect("audit") + 1;
    args[audit] = full.join("audit.jsonl").display().to_string();
    args.extend(["--events".into(), events.display().to_string()]);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("full_firewall: ready");
    // Fill the file system to the last byte: no free page, and no room left in the last
    // page of the audit log either (tmpfs gives a file whole pages, and appends fill
    // the one it has first; how much room that is depends on the records so far).
    let _ = std::fs::write(full.join("filler"), vec![0u8; 128 * 1024]);
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .append(true)
        .open(full.join("audit.jsonl"))
    {
        use std::io::Write;
        let _ = log.write_all(&[b'\n'; 4096]);
    }
    assert_eq!(lab.ping(3, 20), 0, "dropped");
    daemon.wait_for("events are being LOST");
    assert!(
        daemon.log().contains(&events.display().to_string()),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.ping(3, 5), 0, "still enforcing");
    let alive = daemon
        .child
        .as_mut()
        .expect("child")
        .try_wait()
        .expect("wait");
    assert!(
        alive.is_none(),
        "the daemon is still running: {}",
        daemon.log()
    );
    // A reload that changes the rules writes audit records: on a full disk they are
    // lost, counted, alerted. The config lives elsewhere, so it can still be written.
    std::fs::write(&config, lab.policy_denying(&[2, 3])).expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("audit records are being LOST");
    let lost =
        |s: &serde_json::Value, sink: &str| s["daemon"]["losses"][sink].as_u64().unwrap_or(0);
    let start = Instant::now();
    loop {
        let status = lab.daemon_status();
        if lost(&status, "events-file") > 0 && lost(&status, "audit-log") > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

#[test]
fn xdp_refused_on_a_busy_interface_fails_open() {
    require_privileges!();
    let lab = Lab::new("ffbusy", 5);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let first = Daemon::spawn(&lab.run_args(&config));
    first.wait_for("ready");
    // A second daemon with its own pin root (and run and state directories: one
    // daemon per run directory) cannot attach a second XDP link.
    let other_pins = BpffsDir::new("ffbusy2").expect("bpffs");
    let other = tempfile::tempdir().expect("tempdir");
    let mut args = lab.run_args(&config);
    for (flag, value) in [
        ("--pin-dir", other_pins.path().to_path_buf()),
        ("--run-dir", other.path().join("run")),
        ("--state-dir", other.path().join("state")),
    ] {
        let at = args.iter().position(|a| a == flag).expect("flag") + 1;
        args[at] = value.display().to_string();
    }
    let mut second = Daemon::spawn(&args);
    second.wait_for("ready");
    assert!(second.log().contains("shield disabled"), "{}", second.log());
    assert_eq!(lab.ping(3, 1), 0, "the first daemon's shield is untouched");
    second.signal("TERM");
    assert!(second.wait().success());
    first.signal("KILL");
    drop(first);
    let out = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .expect("detach");
    assert!(out.status.success());
}

/// An `openssl s_server -www` on a free loopback port with a fresh self-signed
/// certificate in `dir` (it answers GETs), and the path curl's executable resolves to
/// (what a TLS `exe` scope names), once the server accepts connections. The server is
/// killed on drop.
fn tls_server(dir: &Path) -> (crate::common::Server, u16, String) {
    let (cert, key) = ironclad_testing::self_signed_cert(dir).expect("openssl req");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s_server");
    let curl_path = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", "readlink -f \"$(command -v curl)\""])
            .output()
            .expect("sh")
            .stdout,
    )
    .trim()
    .to_string();
    // Answered from here on.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "s_server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (crate::common::Server(server), port, curl_path)
}

/// Regression (red team, round 3): DLP masked a card number in the TLS plaintext, but
/// the same number, and the password of `--user`, stood whole in `process.args` of the
/// very events that reported it (the daemon names every event's process). Now nothing
/// any event says carries the card number or the password, and the request's token in
/// the URL's query is redacted from the command line and from `http.path`.
#[test]
fn tls_and_dlp_events_carry_no_secret_of_the_command_line() {
    require_privileges!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pins = BpffsDir::new("fftlsdlp").expect("bpffs");
    let (server, port, curl_path) = tls_server(dir.path());
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        format!("tls:\n  scope:\n    - exe: {curl_path}\n  max_bytes: 4096\n  dlp: {{}}\n"),
    )
    .expect("config");
    let mut daemon = spawn_without_iface(&config, pins.path(), dir.path(), &[]);
    daemon.wait_for("ready");
    let (card, password, token) = ("4111 1111 1111 1111", "s3cr3t-Passw0rd", "tok-5e1f9a7b3c");
    // The answer does not matter (s_server -www answers GETs): the request is written.
    let _ = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "--user",
            &format!("alice:{password}"),
            "--data",
            &format!("card={card}&name=ironclad"),
            &format!("https://127.0.0.1:{port}/checkout?token={token}&page=2"),
        ])
        .status()
        .expect("curl");
    let events = dir.path().join("events.jsonl");
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("\"kind\":\"dlp\"") && text.contains("\"kind\":\"tls\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    drop(server);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let dlp = lines
        .iter()
        .find(|e| e["kind"] == "dlp")
        .unwrap_or_else(|| panic!("a dlp event: {text}"));
    assert_eq!(dlp["detector"], "credit_card", "{dlp}");
    let args: Vec<&str> = dlp["process"]["args"]
        .as_array()
        .unwrap_or_else(|| panic!("the process block's arguments: {dlp}"))
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"alice:[redacted]"), "{args:?}");
    assert!(args.contains(&"card=[redacted]&name=ironclad"), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a.ends_with("/checkout?token=[redacted]&page=2")),
        "{args:?}"
    );
    let request = lines
        .iter()
        .find(|e| e["kind"] == "tls" && e["direction"] == "write" && e["http"]["method"] == "POST")
        .unwrap_or_else(|| panic!("the request: {text}"));
    assert_eq!(
        request["http"]["path"], "/checkout?token=[redacted]&page=2",
        "{request}"
    );
    // No field of any event carries the card number (in any spacing) or the password.
    for line in text.lines() {
        for secret in [card, "4111111111111111", password] {
            assert!(!line.contains(secret), "`{secret}` in {line}");
        }
    }
}

#[test]
fn tls_section_writes_plaintext_events_as_json_lines() {
    require_privileges!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pins = BpffsDir::new("fftls").expect("bpffs");
    let (server, port, curl_path) = tls_server(dir.path());
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        format!("tls:\n  scope:\n    - exe: {curl_path}\n  max_bytes: 4096\n"),
    )
    .expect("config");
    let events = dir.path().join("events.jsonl");
    let mut daemon = spawn_without_iface(&config, pins.path(), dir.path(), &[]);
    daemon.wait_for("ready");
    assert!(daemon.log().contains("tls capture on"), "{}", daemon.log());
    let curl = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "-o",
            "/dev/null",
            &format!("https://127.0.0.1:{port}/secret-path"),
        ])
        .status()
        .expect("curl");
    assert!(curl.success());
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    drop(server);

    let text = std::fs::read_to_string(&events).expect("events");
    let tls: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .filter(|e: &serde_json::Value| e["kind"] == "tls")
        .collect();
    let request = tls
        .iter()
        .find(|e| e["direction"] == "write" && e["http"]["path"] == "/secret-path")
        .unwrap_or_else(|| panic!("no request event in {text}"));
    assert_eq!(request["http"]["method"], "GET");
    assert_eq!(request["comm"], "curl");
    assert_eq!(request["exe"], curl_path.as_str());
    assert!(request["data"]
        .as_str()
        .is_some_and(|d| d.starts_with("GET /secret-path HTTP/1.1\r\n")));
    assert!(request["pid"].as_u64().is_some() && request["truncated"] == false);
    assert!(tls
        .iter()
        .any(|e| e["direction"] == "read" && e["http"]["status"] == 200));
}

/// What TLS capture and the process cache count in the kernel besides their events
/// reaches the operator: a per-second budget of 100 bytes lets 100 bytes of a 3,000-byte
/// POST through and `withheld_bytes` says how much was not captured, on `/metrics` and
/// in the dashboard's features table (`/api/status`), with the records the kernel lost
/// (none) and the process cache's records (curl's exec among them).
#[test]
fn tls_withheld_bytes_and_the_process_caches_records_reach_metrics_and_the_dashboard() {
    require_privileges!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pins = BpffsDir::new("fftlscount").expect("bpffs");
    let (server, port, curl_path) = tls_server(dir.path());
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  scope:\n    - exe: {curl_path}\n  max_bytes: 4096\n  bytes_per_second: 100\n"
        ),
    )
    .expect("config");
    let mut daemon = spawn_without_iface(
        &config,
        pins.path(),
        dir.path(),
        &["--metrics".to_string(), "127.0.0.1:0".to_string()],
    );
    daemon.wait_for("ready");
    let metrics = daemon.metrics_port();
    let body = "x".repeat(3000);
    let _ = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "--data",
        ])
        .arg(&body)
        .arg(format!("https://127.0.0.1:{port}/upload"))
        .status()
        .expect("curl");
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{metrics}{path}"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "{path}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let sample = |page: &str, series: &str| -> Option<u64> {
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    // The daemon reads the counters every second: the page and the table agree once
    // both have the request's count.
    let withheld = r#"ironclad_feature_kernel_total{feature="tls",counter="withheld_bytes"}"#;
    let start = Instant::now();
    let (page, status) = loop {
        let page = get("/metrics");
        let status: serde_json::Value =
            serde_json::from_str(&get("/api/status")).expect("/api/status is JSON");
        let row = status["programs"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "tls"))
            .cloned()
            .unwrap_or_default();
        let on_page = sample(&page, withheld);
        if on_page >= Some(2900) && row["counters"]["withheld_bytes"].as_u64() == on_page {
            break (page, status);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{withheld} {on_page:?}, the tls row {row}\n{page}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        sample(&page, r#"ironclad_kernel_events_lost_total{source="tls"}"#),
        Some(0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            r#"ironclad_kernel_events_lost_total{source="processes"}"#
        ),
        Some(0),
        "{page}"
    );
    let records = sample(
        &page,
        r#"ironclad_feature_kernel_total{feature="processes",counter="records"}"#,
    );
    assert!(records >= Some(1), "the process cache's records: {page}");
    let cache = status["programs"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "processes"))
        .unwrap_or_else(|| panic!("a row for the process cache: {status}"));
    assert_eq!(cache["up"], true, "{cache}");
    assert!(
        cache["counters"]["records"].as_u64() >= Some(1)
            && cache["counters"]["events_lost"] == 0
            && cache["counters"]["not_cached"] == 0,
        "{cache}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    drop(server);
}

/// An identity-firewall lab: a scratch directory, a pin root, a cgroup, a listener on
/// 127.0.0.1 that accepts everything, and the test client (`net_client.c`) built there.
struct EgressLab {
    dir: tempfile::TempDir,
    pins: BpffsDir,
    cgroup: ironclad_testing::TestCgroup,
    port: String,
}

impl EgressLab {
    fn new(tag: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port().to_string();
        std::thread::spawn(move || for _ in listener.incoming() {});
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            pins: BpffsDir::new(tag).expect("bpffs"),
            cgroup: ironclad_testing::TestCgroup::new(tag).expect("cgroup"),
            port,
        }
    }

    /// The test client, compiled as `name` in the scratch directory.
    fn client(&self, name: &str) -> std::path::PathBuf {
        crate::common::net_client(self.dir.path(), name)
    }

    /// A policy denying `exe` TCP to 127.0.0.0/8, written to `policy.yaml`.
    fn deny_policy(&self, exe: &Path) -> std::path::PathBuf {
        let config = self.dir.path().join("policy.yaml");
        std::fs::write(
            &config,
            format!(
                "egress:\n  default: allow\n  rules:\n    - exe: {}\n      dst: 127.0.0.0/8\n      proto: tcp\n      action: deny\n",
                exe.display()
            ),
        )
        .expect("config");
        config
    }

    /// `run` with `config` on the lab's cgroup and pins, the audit log and run
    /// directory in the scratch directory.
    fn args(&self, config: &Path) -> Vec<String> {
        let at = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--pin-dir".into(),
            self.pins.path().display().to_string(),
            "--cgroup".into(),
            self.cgroup.path().display().to_string(),
            "--audit-log".into(),
            at("audit.jsonl"),
            "--run-dir".into(),
            at("run"),
        ]
    }

    /// What the client `exe`, run in the cgroup, says of a connection to the listener.
    fn connect(&self, exe: &Path) -> String {
        crate::common::connect_from(&self.cgroup, exe, &self.port)
    }
}

#[test]
fn egress_section_denies_by_executable_survives_kill_9_and_reports_json() {
    require_privileges!();
    let lab = EgressLab::new("ffegress");
    let good = lab.client("good");
    let bad = lab.dir.path().join("bad");
    std::fs::copy(&good, &bad).expect("copy");
    let config = lab.deny_policy(&bad);
    let events = lab.dir.path().join("events.jsonl");
    let mut args = lab.args(&config);
    args.extend(["--events".into(), events.display().to_string()]);
    let connect = |exe: &Path| lab.connect(exe);
    let first = Daemon::spawn(&args);
    first.wait_for("ready");
    assert!(
        first.log().contains("egress firewall on cgroup"),
        "{}",
        first.log()
    );
    assert!(connect(&good).starts_with("ok=1 eperm=0"));
    assert!(connect(&bad).starts_with("ok=0 eperm=1"));
    // A reload that inserts a rule before it: the deny rule moves to id 2 and keeps
    // its count (counters follow a rule's identity, not its place).
    std::fs::write(
        &config,
        format!(
            "egress:\n  default: allow\n  rules:\n    - exe: {}\n      dst: 192.0.2.0/24\n      action: deny\n    - exe: {}\n      dst: 127.0.0.0/8\n      proto: tcp\n      action: deny\n",
            good.display(),
            bad.display()
        ),
    )
    .expect("config");
    first.signal("HUP");
    first.wait_for("reload finished: the new policy is applied");
    assert!(connect(&bad).starts_with("ok=0 eperm=1"));
    std::thread::sleep(Duration::from_millis(400));
    first.signal("KILL");
    drop(first);
    assert!(
        connect(&bad).starts_with("ok=0 eperm=1"),
        "still denied with the daemon dead"
    );

    let out = Command::new(BIN)
        .args(["status", "--json", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["egress"]["rules"][0]["rule_id"], 1);
    assert_eq!(status["egress"]["rules"][0]["hits"], 0, "{status}");
    assert_eq!(status["egress"]["rules"][1]["rule_id"], 2);
    assert_eq!(
        status["egress"]["rules"][1]["hits"], 3,
        "the moved rule's two denials came along, and one after the reload: {status}"
    );
    assert_eq!(status["egress"]["totals"]["denied"], 3);
    assert_eq!(status["events"]["lost_in_kernel"]["egress"], 0);

    let text = std::fs::read_to_string(&events).expect("events");
    let denial: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .find(|e| e["kind"] == "connect")
        .unwrap_or_else(|| panic!("no connect event in {text}"));
    assert_eq!(denial["verdict"], "deny");
    assert_eq!(denial["exe"], bad.display().to_string());
    assert_eq!(denial["dst"], "127.0.0.1");
    assert_eq!(denial["comm"], "bad");
    assert_eq!(
        denial["process"]["exe"],
        bad.display().to_string(),
        "{denial}"
    );
    assert!(denial["pid"].as_u64().is_some());

    let detach = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .expect("detach");
    assert!(detach.status.success(), "{detach:?}");
    assert!(connect(&bad).starts_with("ok=1 eperm=0"), "detached");
}

#[test]
fn telemetry_section_writes_dns_and_bandwidth_events() {
    require_privileges!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pins = BpffsDir::new("fftele").expect("bpffs");
    let cgroup = ironclad_testing::TestCgroup::new("fftele").expect("cgroup");
    let responder = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = responder.recv_from(&mut buf) {
            let answer = ironclad_events::dns::build_response(
                &buf[..n],
                &[std::net::Ipv4Addr::new(192, 0, 2, 9)],
            );
            let _ = responder.send_to(&answer, from);
        }
    });
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        "telemetry:\n  dns: true\n  bandwidth: true\n  interval_seconds: 1\n",
    )
    .expect("config");
    let events = dir.path().join("events.jsonl");
    let cgroup_arg = ["--cgroup".to_string(), cgroup.path().display().to_string()];
    let mut daemon = spawn_without_iface(&config, pins.path(), dir.path(), &cgroup_arg);
    daemon.wait_for("ready");
    assert!(
        daemon.log().contains("telemetry on cgroup"),
        "{}",
        daemon.log()
    );
    let script = "import socket, struct, time\n\
        q = struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0) + b'\\x03www\\x07example\\x04test\\x00' + struct.pack('>HH', 1, 1)\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n\
        s.sendto(q, ('127.0.0.1', 53)); s.recv(512); time.sleep(1.5)\n";
    let client = cgroup
        .command("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    assert!(client.status.success(), "{client:?}");
    // The installed dig: multi-threaded, gone before the daemon reads its event.
    let dig = cgroup
        .command("/usr/bin/dig")
        .args(["@127.0.0.1", "+tries=1", "+time=2", "dig.example.test"])
        .output()
        .expect("dig");
    assert!(dig.status.success(), "{dig:?}");
    std::thread::sleep(Duration::from_millis(1500));
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    let text = std::fs::read_to_string(&events).expect("events");
    let all: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let query = all
        .iter()
        .find(|e| e["kind"] == "dns" && e["direction"] == "query")
        .unwrap_or_else(|| panic!("no dns query in {text}"));
    assert_eq!(query["qname"], "www.example.test");
    assert_eq!(query["qtype"], "A");
    assert!(query["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(query["comm"]
        .as_str()
        .is_some_and(|c| c.starts_with("python")));
    assert!(
        query["exe"].as_str().is_some_and(|e| e.contains("python")),
        "{query}"
    );
    assert!(query["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        query["process"]["comm"]
            .as_str()
            .is_some_and(|c| c.starts_with("python")),
        "{query}"
    );
    let dig = all
        .iter()
        .find(|e| e["kind"] == "dns" && e["qname"] == "dig.example.test")
        .unwrap_or_else(|| panic!("no dig query in {text}"));
    assert_eq!(dig["process"]["comm"], "dig", "{dig}");
    assert_eq!(dig["process"]["exe"], "/usr/bin/dig", "{dig}");
    {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata("/usr/bin/dig").expect("dig").ino();
        assert_eq!(dig["process"]["exe_file"]["ino"], ino, "{dig}");
    }
    assert_eq!(dig["exe"], "/usr/bin/dig", "{dig}");
    assert_eq!(dig["process"]["args"][4], "dig.example.test", "{dig}");
    assert_ne!(
        dig["comm"], "dig",
        "the sending thread keeps its own name: {dig}"
    );
    let response = all
        .iter()
        .find(|e| e["kind"] == "dns" && e["direction"] == "response")
        .unwrap_or_else(|| panic!("no dns response in {text}"));
    assert_eq!(response["answers"][0], "192.0.2.9");
    assert!(
        all.iter().any(|e| e["kind"] == "bandwidth"
            && e["pid"] == query["pid"]
            && e["tx_payload"].as_u64().is_some_and(|b| b > 0)),
        "a bandwidth report for the client: {text}"
    );
    let out = Command::new(BIN)
        .args(["status", "--json", "--pin-dir"])
        .arg(pins.path())
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["events"]["lost_in_kernel"]["dns"], 0, "{status}");
    // Regression (hardening): `detach` left the telemetry pins (six maps) behind.
    assert!(
        pins.path().join("telemetry").exists(),
        "telemetry stays pinned"
    );
    let out = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(pins.path())
        .output()
        .expect("detach");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("removed 0 pins"), "{said}");
    assert!(!pins.path().join("telemetry").exists(), "{said}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmRSS")
}

/// Regression (hardening): after reloads of a large policy the daemon's resident memory
/// stayed at 48-145 MiB instead of coming back to what it needs between reloads.
#[test]
fn memory_returns_after_reloading_a_large_policy() {
    require_privileges!();
    let lab = Lab::new("ffrss", 44);
    // 300,000 scattered /32s, as a real IP-level feed is shaped.
    lab.write_config(
        "feed.txt",
        &crate::common::scattered_hosts(0x9e37_79b9_7f4a_7c15, 300_000),
    );
    let config = lab.write_config(
        "policy.yaml",
        &format!(
            "shield:\n  deny_feeds:\n    - path: feed.txt\n      format: plain\n  deny: [{}]\n",
            lab.addr(3)
        ),
    );
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    daemon.wait_for_within("full_firewall: ready", LARGE_FEED);
    let pid = daemon.child.as_ref().expect("child").id();
    let settled = rss_kib(pid);
    for round in 1..=3 {
        let before = daemon.log().matches("reloaded").count();
        daemon.signal("HUP");
        daemon.wait_for_more_within("reloaded", before, LARGE_FEED);
        std::thread::sleep(Duration::from_millis(300));
        let now = rss_kib(pid);
        assert!(
            now <= settled + 8 * 1024,
            "after reload {round}: {now} KiB resident, {settled} KiB after start"
        );
    }
    // SIGHUP interrupts the event poll: that is not worth a warning.
    assert!(
        !daemon.log().contains("Interrupted system call"),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.ping(3, 1), 0, "still enforcing");
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}

/// The events file is rotated at `--events-max-bytes`: it becomes `FILE.1` and a new
/// file starts, so a flood of drop events cannot fill the disk.
/// The events file and the audit log rotate at their sizes (whole lines, nothing
/// lost), and SIGHUP reopens both after logrotate moved them away.
#[test]
fn the_events_file_and_the_audit_log_rotate_and_reopen_on_sighup() {
    require_privileges!();
    let lab = Lab::new("ffrotate", 46);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let events = lab.dir.path().join("events.jsonl");
    let audit = lab.dir.path().join("audit.jsonl");
    let mut args = lab.run_args(&config);
    args.extend([
        "--events".into(),
        events.display().to_string(),
        "--events-max-bytes".into(),
        "2000".into(),
        "--audit-max-bytes".into(),
        "3000".into(),
    ]);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("full_firewall: ready");
    // The start's records (load, pins, map updates) are more than 3000 bytes.
    let audit_older = std::fs::read_to_string(lab.dir.path().join("audit.jsonl.1"))
        .expect("the audit log rotated: FILE.1");
    let audit_newer = std::fs::read_to_string(&audit).expect("audit FILE");
    for text in [&audit_older, &audit_newer] {
        assert!(text.len() <= 3000, "{} bytes", text.len());
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            assert!(record["action"].is_string(), "{record}");
        }
    }
    assert_eq!(lab.ping(3, 30), 0, "dropped");
    daemon.wait_for("rotated");

    // logrotate's way: move both files, then SIGHUP; what follows goes to new files.
    let events_moved = lab.dir.path().join("events.jsonl.logrotate");
    let audit_moved = lab.dir.path().join("audit.jsonl.logrotate");
    std::fs::rename(&events, &events_moved).expect("move events");
    std::fs::rename(&audit, &audit_moved).expect("move audit");
    let moved_len = std::fs::metadata(&audit_moved).expect("moved audit").len();
    // A reload that changes the rules, so the audit log gets records.
    std::fs::write(&config, lab.policy_denying(&[2, 3])).expect("rewrite policy");
    let reloads = daemon.log().matches("reloaded:").count();
    daemon.signal("HUP");
    daemon.wait_for_more("reloaded:", reloads);
    assert_eq!(lab.ping(3, 2), 0, "dropped");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&events).is_ok_and(|t| t.contains("shield_drop")) {
        assert!(
            Instant::now() < deadline,
            "no new events file: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let audit_new = std::fs::read_to_string(&audit).expect("a new audit log");
    assert!(
        audit_new.lines().count() > 0
            && audit_new
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{audit_new}"
    );
    assert_eq!(
        std::fs::metadata(&audit_moved).expect("moved audit").len(),
        moved_len,
        "the reload's records went to the new file, none to the moved one"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    let older = std::fs::read_to_string(lab.dir.path().join("events.jsonl.1")).expect("FILE.1");
    let newer = std::fs::read_to_string(&events).expect("FILE");
    for text in [&older, &newer] {
        assert!(text.len() <= 2000, "{} bytes", text.len());
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            assert_eq!(event["kind"], "shield_drop");
        }
    }
    assert!(!older.is_empty());
}

/// Regression (hardening): `deny: [::ffff:10.251.0.2/128]` was accepted and never matched
/// the IPv4 source it names. It is now the IPv4 rule, and drops that source's pings.
#[test]
fn an_ipv4_mapped_deny_drops_the_ipv4_source() {
    require_privileges!();
    let lab = Lab::new("ffmapped", 47);
    let config = lab.write_config(
        "policy.yaml",
        &format!("shield:\n  deny: ['::ffff:{}/128']\n", lab.addr(3)),
    );
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    daemon.wait_for("full_firewall: ready");
    assert_eq!(
        lab.ping(3, 2),
        0,
        "the mapped address's IPv4 source is dropped"
    );
    assert!(lab.reaches(2), "others pass");
    assert_eq!(lab.rule_packets(&format!("{}/32", lab.addr(3))), 2);
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}

#[test]
fn a_process_cache_too_small_for_the_host_says_so_in_status_and_events() {
    require_privileges!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pins = BpffsDir::new("ffprocs").expect("bpffs");
    let cgroup = ironclad_testing::TestCgroup::new("ffprocs").expect("cgroup");
    let config = dir.path().join("policy.yaml");
    // 16 slots: the processes already running fill them at start.
    std::fs::write(
        &config,
        "telemetry:\n  dns: true\nprocesses:\n  capacity: 16\n",
    )
    .expect("config");
    let cgroup_arg = ["--cgroup".to_string(), cgroup.path().display().to_string()];
    let mut daemon = spawn_without_iface(&config, pins.path(), dir.path(), &cgroup_arg);
    daemon.wait_for("ready");
    daemon.wait_for("processes not cached");
    let start = Instant::now();
    let status = loop {
        let out = Command::new(BIN)
            .args(["status", "--json", "--pin-dir"])
            .arg(pins.path())
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .output()
            .expect("status");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        if status["daemon"]["losses"]["process-cache"]
            .as_u64()
            .is_some_and(|n| n > 0)
        {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).expect("events");
    let notice: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .find(|e| e["kind"] == "process_cache")
        .unwrap_or_else(|| panic!("no process_cache event in {text}"));
    assert!(
        notice["overflows"].as_u64().is_some_and(|n| n > 0),
        "{notice}"
    );
    assert!(
        notice["cached"].as_u64().is_some_and(|n| n <= 16),
        "{notice}"
    );
    assert_eq!(status["daemon"]["losses"]["process-records"], 0, "{status}");
}

/// An IP-level threat feed as a user runs it: 300,000 /32 hosts scattered over the
/// whole address space (before span nodes, about 8,200 /24s holding a host were the
/// most the compiled path took; this feed has 290,000 of them), one of them a source of
/// the lab and another in the same /24. The daemon enforces it on the fast path, and a
/// feed update (the lab's host leaves the feed, its neighbour joins) is made in place.
#[test]
fn a_feed_of_scattered_hosts_is_enforced_on_the_fast_path_and_updated_in_place() {
    require_privileges!();
    let lab = Lab::new("ffhosts", 51);
    let avoid: Vec<ipnetwork::IpNetwork> =
        vec![format!("10.211.{}.0/24", lab.net).parse().expect("cidr")];
    let hosts = ironclad_testing::rules::hosts_v4(300_000, 44, &avoid);
    let feed = |lab_hosts: &[String]| {
        let mut text = String::from("# scattered hosts\n");
        for h in &hosts {
            text.push_str(&h.network().to_string());
            text.push('\n');
        }
        for h in lab_hosts {
            text.push_str(h);
            text.push('\n');
        }
        std::fs::write(lab.dir.path().join("feed.txt"), text).expect("feed");
    };
    let neighbour = lab.addr(77);
    feed(&[lab.addr(3), neighbour.clone()]);
    let config = lab.write_config(
        "policy.yaml",
        "shield:\n  deny_feeds:\n    - path: feed.txt\n      format: plain\n",
    );
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    daemon.wait_for_within("full_firewall: ready", LARGE_FEED);
    assert!(
        daemon.log().contains("IPv4 via the fast path"),
        "{}",
        daemon.log()
    );
    let status = lab.status();
    assert_eq!(status["ipv4_lookup"], "fast", "{status}");
    assert_eq!(lab.ping(3, 3), 0, "the listed host is dropped");
    assert_eq!(lab.ping(2, 2), 2, "its /24 neighbour passes");

    // The lab's host leaves the feed, .2 joins it: two prefixes edited in place.
    feed(&[lab.addr(2), neighbour]);
    let before = daemon.log().matches("reloaded:").count();
    daemon.signal("HUP");
    daemon.wait_for_more_within("reloaded:", before, LARGE_FEED);
    assert!(
        daemon.log().contains("2 prefixes edited in place"),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.status()["slot"], status["slot"], "no switch");
    assert_eq!(lab.ping(2, 3), 0, "the new host is dropped");
    assert_eq!(lab.ping(3, 2), 2, "the removed one passes");
    daemon.signal("TERM");
    let _ = daemon.wait();
}

/// `--iface` repeated: one Shield policy enforced on each interface; `--iface auto`:
/// the interface of the network namespace's default route, found at start (a
/// DaemonSet's nodes name their uplinks differently).
#[test]
fn the_shield_enforces_on_every_listed_interface_and_on_the_default_route_one() {
    require_privileges!();
    let a = Lab::new("ffifa", 52);
    let b = Lab::new("ffifb", 53);
    let policy = format!(
        "shield:\n  deny: [{}, {}]\n  sample_rate: 1\n",
        a.addr(3),
        b.addr(3)
    );
    let config = a.write_config("policy.yaml", &policy);
    let mut args = a.run_args(&config);
    args.extend(["--iface".to_string(), b.veth.host().to_string()]);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("full_firewall: ready");
    let on = format!("shield enforcing on {} (", a.veth.host());
    assert!(daemon.log().contains(&on), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(", {} (", b.veth.host())),
        "{}",
        daemon.log()
    );
    for lab in [&a, &b] {
        assert_eq!(lab.ping(3, 2), 0, "denied source on {}", lab.veth.host());
        assert_eq!(lab.ping(2, 2), 2, "other source on {}", lab.veth.host());
    }
    let links: Vec<String> = a.status()["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    for lab in [&a, &b] {
        assert!(
            links
                .iter()
                .any(|l| l.ends_with(&format!("link_{}", lab.veth.host()))),
            "{links:?}"
        );
    }
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let detach = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(a.pins.path())
        .output()
        .expect("detach");
    assert!(detach.status.success(), "{detach:?}");
    for lab in [&a, &b] {
        assert!(lab.reaches(3), "detached from {}", lab.veth.host());
    }

    // A list whose second interface is missing: the Shield is down (fail open, not
    // ready), and the link this start made on the first interface is detached again:
    // the host is not half-filtered by a feature that reports itself down.
    let mut args = a.run_args(&config);
    args.extend(["--iface".to_string(), "ic-missing9".to_string()]);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("not ready");
    assert!(
        daemon
            .log()
            .contains("network interface `ic-missing9` not found"),
        "{}",
        daemon.log()
    );
    assert_eq!(a.ping(3, 2), 2, "no filter left on {}", a.veth.host());
    assert!(
        !a.pins
            .path()
            .join("shield")
            .join(format!("link_{}", a.veth.host()))
            .exists(),
        "no link pinned on {}",
        a.veth.host()
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let _ = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(a.pins.path())
        .output();

    // `auto`, in b's namespace (entered with nsenter: only the network namespace
    // changes, the pin root stays the host's): its default route leaves through the
    // peer end, so the Shield goes there and filters what the host sends in.
    let ns = b.ns.name();
    let route = Command::new("ip")
        .args(["-n", ns, "route", "add", "default", "via", &b.addr(1)])
        .status()
        .expect("ip route");
    assert!(route.success());
    let policy = format!("shield:\n  deny: [{}]\n", b.addr(1));
    let config = b.write_config("auto.yaml", &policy);
    let mut args = b.run_args(&config);
    let iface = args.iter().position(|x| x == "--iface").expect("iface") + 1;
    args[iface] = "auto".into();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg(BIN)
        .args(&args);
    let mut daemon = Daemon::spawn_command(cmd, false);
    daemon.wait_for("full_firewall: ready");
    assert!(
        daemon.log().contains(&format!(
            "--iface auto: the Shield attaches to {}",
            b.veth.peer()
        )),
        "{}",
        daemon.log()
    );
    let pings = |count: &str| {
        Command::new("ping")
            .args(["-q", "-n", "-c", count, "-i", "0.2", "-W", "1", &b.addr(2)])
            .output()
            .expect("ping")
    };
    let out = pings("2");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0 received"),
        "the host is denied in the namespace: {out:?}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let detach = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(b.pins.path())
        .output()
        .expect("detach");
    assert!(detach.status.success(), "{detach:?}");
    let out = pings("1");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 1 received"),
        "detached: {out:?}"
    );
    // A namespace without a default route: `auto` is a clear error, nothing loads.
    let del = Command::new("ip")
        .args(["-n", ns, "route", "del", "default"])
        .status()
        .expect("ip route");
    assert!(del.success());
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg(BIN)
        .args(&args);
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--iface auto: this network namespace has no default route"),
        "{out:?}"
    );
}

/// Writes `text` as `policy.yaml` of a Kubernetes ConfigMap volume in `dir`, the way
/// the kubelet updates one: a new timestamped directory, the `..data` symlink swapped
/// to it by rename, `policy.yaml` a symlink through `..data`.
fn configmap_update(dir: &Path, version: u32, text: &str) {
    use std::os::unix::fs::symlink;
    let data = dir.join(format!("..2026_11_27_{version}"));
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("policy.yaml"), text).expect("write policy");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(data.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let link = dir.join("policy.yaml");
    if link.symlink_metadata().is_err() {
        symlink("..data/policy.yaml", &link).expect("policy link");
    }
    if version > 1 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..2026_11_27_{}", version - 1)));
    }
}

/// `--watch-config`: a ConfigMap update (the kubelet's symlink swap) is applied without
/// a signal or a restart; an invalid one is refused once and the rules stay.
#[test]
fn watch_config_applies_a_configmap_update_and_refuses_an_invalid_one() {
    require_privileges!();
    let lab = Lab::new("ffwatch", 54);
    let cm = lab.dir.path().join("configmap");
    configmap_update(&cm, 1, &lab.policy_denying(&[3]));
    let mut args = lab.run_args(&cm.join("policy.yaml"));
    args.extend(["--watch-config".to_string(), "200ms".to_string()]);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("full_firewall: ready");
    assert_eq!(lab.ping(3, 1), 0);
    assert!(lab.reaches(2));

    configmap_update(&cm, 2, &lab.policy_denying(&[2, 3]));
    daemon.wait_for("changed: reloading");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.ping(2, 1) != 0 {
        assert!(
            Instant::now() < deadline,
            "update not applied: {}",
            daemon.log()
        );
    }
    assert_eq!(lab.ping(3, 1), 0);

    let reloads = daemon.log().matches("changed: reloading").count();
    configmap_update(&cm, 3, "shield:\n  deny: [10.211.54.999]\n");
    daemon.wait_for("reload refused");
    assert_eq!(lab.ping(2, 1), 0, "the old rules stay");
    // Refused once, not retried until the file changes again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        daemon.log().matches("changed: reloading").count(),
        reloads + 1,
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("policy.yaml:2:"), "{}", daemon.log());
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}

/// A reload that takes seconds (a feed of scattered /32s rewritten whole) is reported
/// while it runs: `busy` lines in the log naming the step, `status` showing it (and the
/// daemon alive though its control loop is busy), nothing once it is done.
#[test]
fn a_long_reload_is_reported_in_the_log_and_in_status_while_it_runs() {
    require_privileges!();
    let lab = Lab::new("ffbusy2", 56);
    let feed = |seed: u64| crate::common::scattered_hosts(seed, 1_000_000);
    lab.write_config("feed.txt", &feed(0x9e37_79b9_7f4a_7c15));
    let config = lab.write_config(
        "policy.yaml",
        &format!(
            "shield:\n  deny_feeds:\n    - path: feed.txt\n      format: plain\n  deny: [{}]\n",
            lab.addr(3)
        ),
    );
    // Steps are reported after 100 ms here (1 s by default): a million-prefix reload
    // takes about a second on the machines this runs on, and more under load.
    let mut args = lab.run_args(&config);
    args.extend(["--progress-after".to_string(), "100ms".to_string()]);
    let mut daemon = Daemon::spawn(&args);
    // A million-prefix start: as long as the reload below may take, not a small
    // policy's 20 s (the test build is unoptimised: 20 s was not enough on CI's CPUs).
    daemon.wait_for_within("full_firewall: ready", LARGE_FEED);
    // Another 1,000,000: every prefix changes, the whole policy is planned and written.
    lab.write_config("feed.txt", &feed(0x2545_f491_4f6c_dd1d));
    let reloads = daemon.log().matches("reloaded:").count();
    let busy_lines = daemon.log().matches("busy ").count();
    daemon.signal("HUP");
    let mut seen: Option<serde_json::Value> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while daemon.log().matches("reloaded:").count() == reloads {
        assert!(Instant::now() < deadline, "no reload: {}", daemon.log());
        let status = lab.daemon_status();
        if !status["daemon"]["activity"].is_null() && seen.is_none() {
            seen = Some(status["daemon"].clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = seen.unwrap_or_else(|| panic!("status never showed the reload: {}", daemon.log()));
    let what = seen["activity"]["what"].as_str().expect("what");
    assert!(what.starts_with("full_firewall.reload"), "{seen}");
    assert!(seen["activity"]["seconds"].as_f64() >= Some(0.1), "{seen}");
    assert_eq!(seen["alive"], true, "{seen}");
    let log = daemon.log();
    let busy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("busy ") && l.contains("full_firewall.reload"))
        .collect();
    assert!(
        log.matches("busy ").count() > busy_lines && !busy.is_empty(),
        "{log}"
    );
    // The steps below the reload are named as they run (compile, then the Shield's).
    assert!(busy.iter().any(|l| l.contains("ironclad.")), "{busy:#?}");
    // Done: no activity left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.daemon_status()["daemon"]["activity"].is_null() {
        assert!(Instant::now() < deadline, "activity left after the reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.ping(3, 1), 0);
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}

/// A second `run` on the live daemon's pins, on its run directory, or on both, as an
/// operator starting it twice (or a unit and a manual start) would: each is refused at
/// once naming the live daemon's pid, and the live one keeps its control socket, its
/// enforcement and its status; once it has exited, a start on the same directories
/// works.
#[test]
fn a_second_daemon_on_the_same_pins_or_run_directory_is_refused_and_changes_nothing() {
    require_privileges!();
    let lab = Lab::new("ffone", 66);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut first = Daemon::spawn(&lab.run_args(&config));
    first.wait_for("ready");
    let pid = first.child.as_ref().expect("child").id();
    let socket = lab.dir.path().join("run").join("api.sock");
    assert!(socket.exists(), "{}", first.log());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other_pins = BpffsDir::new("fftwo").expect("pins");
    let replace = |args: Vec<String>, flag: &str, value: &Path| -> Vec<String> {
        let mut args = args;
        let at = args.iter().position(|a| a == flag).expect("flag") + 1;
        args[at] = value.display().to_string();
        args
    };
    let cases = [
        ("the same pins and run directory", lab.run_args(&config)),
        (
            "the same pins",
            replace(
                lab.run_args(&config),
                "--run-dir",
                &elsewhere.path().join("run"),
            ),
        ),
        (
            "the same run directory",
            replace(lab.run_args(&config), "--pin-dir", other_pins.path()),
        ),
    ];
    for (what, args) in cases {
        let out = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("second run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains(&format!("another full_firewall (pid {pid}) is running on")),
            "{what}: {err}"
        );
        assert!(socket.exists(), "{what}: the live daemon's socket stays");
        assert_eq!(lab.ping(3, 1), 0, "{what}: still denied");
        assert!(lab.reaches(2), "{what}: still passed");
    }
    assert!(
        std::fs::read_dir(other_pins.path())
            .expect("pins")
            .next()
            .is_none(),
        "the refused start pinned nothing"
    );
    let status = lab.daemon_status();
    assert_eq!(status["daemon"]["pid"], pid, "{status}");
    // `status | head` as a shell runs it, the reader gone before anything is written:
    // a quiet success, not a panic (exit 101) about a broken pipe.
    for json in [false, true] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut cmd = Command::new(BIN);
        cmd.args(["status", "--pin-dir"]).arg(lab.pins.path());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.stdout(writer).output().expect("status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "json {json}: {err}");
        assert!(!err.contains("panicked"), "json {json}: {err}");
    }
    first.signal("TERM");
    assert!(first.wait().success(), "{}", first.log());
    // Released with the process: the same directories start again.
    let mut again = Daemon::spawn(&lab.run_args(&config));
    again.wait_for("ready");
    again.signal("TERM");
    assert!(again.wait().success(), "{}", again.log());
}

/// `bpftool link detach pinned PIN`, as a root attacker on the host detaches a link.
fn detach_link(pin: &Path) -> std::process::Output {
    Command::new("bpftool")
        .args(["link", "detach", "pinned"])
        .arg(pin)
        .output()
        .expect("bpftool")
}

/// An XDP program that passes everything, compiled here, attached to `iface` by `ip`
/// in generic mode (the legacy netlink attachment, no link) as an attacker would take
/// the interface; whether the kernel took it.
fn attach_foreign_xdp(dir: &Path, iface: &str) -> bool {
    let source = dir.join("pass.c");
    let object = dir.join("pass.o");
    if !object.exists() {
        std::fs::write(
            &source,
            "__attribute__((section(\"xdp\"), used)) int pass(void *ctx) { return 2; }\n\
             __attribute__((section(\"license\"), used)) char lic[] = \"GPL\";\n",
        )
        .expect("write pass.c");
        let built = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-c"])
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .output()
            .expect("clang");
        assert!(built.status.success(), "clang: {built:?}");
    }
    Command::new("ip")
        .args(["link", "set", "dev", iface, "xdpgeneric", "obj"])
        .arg(&object)
        .args(["sec", "xdp"])
        .output()
        .expect("ip")
        .status
        .success()
}

/// Polls `check` every 200 ms until it holds or `limit` passes; whether it held.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Regression (enforcement you can prove): root detached the Shield's XDP link behind
/// the daemon's back (`bpftool link detach`), the denied source's packets passed, and
/// `status`, `health --ready` and the log all went on saying the Shield enforced. Now
/// the daemon checks its links against the kernel every second: a detached link is
/// replaced (with a `repair` audit record), and when it cannot be (another XDP program
/// took the interface) the Shield is reported down and the daemon not ready, until the
/// interface is free again and the link is back.
#[test]
fn a_link_detached_behind_the_daemons_back_is_put_back_or_reported_down() {
    require_privileges!();
    let lab = Lab::new("ffrepair", 68);
    let iface = lab.veth.host().to_string();
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut daemon = Daemon::spawn(&lab.run_args(&config));
    daemon.wait_for("ready");
    assert_eq!(lab.ping(3, 1), 0, "denied source dropped");
    let pin = lab.pins.path().join("shield").join(format!("link_{iface}"));
    assert!(pin.exists(), "the link's pin: {}", pin.display());

    // The attacker detaches the link: the kernel lets root do it (no Sentinel here).
    let out = detach_link(&pin);
    assert!(out.status.success(), "bpftool link detach: {out:?}");
    assert!(
        eventually(Duration::from_secs(10), || lab.ping(3, 1) == 0),
        "the denied source is dropped again: {}",
        daemon.log()
    );
    daemon.wait_for("was detached from outside");
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit");
    let repairs: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|r| r["action"] == "repair")
        .collect();
    assert!(
        repairs
            .iter()
            .any(|r| r["outcome"] == "ok" && r["target"] == format!("xdp on {iface}")),
        "a repair record: {repairs:?}"
    );
    let status = lab.daemon_status();
    assert_eq!(status["daemon"]["ready"], true, "{status}");
    assert_eq!(
        status["daemon"]["features"]["shield"]["up"], true,
        "{status}"
    );
    // The new link is pinned where the old one was: it outlives the daemon.
    let shown = Command::new("bpftool")
        .args(["link", "show", "pinned"])
        .arg(&pin)
        .output()
        .expect("bpftool");
    assert!(
        shown.status.success() && String::from_utf8_lossy(&shown.stdout).contains("xdp"),
        "{shown:?}"
    );

    // Detached again, and the interface taken by another XDP program at once: the
    // daemon cannot put its link back, and says so.
    let taken = (0..5).any(|_| {
        let out = detach_link(&pin);
        assert!(out.status.success(), "bpftool link detach: {out:?}");
        attach_foreign_xdp(lab.dir.path(), &iface)
    });
    assert!(taken, "the attacker's program took the interface");
    let down = |s: &serde_json::Value| {
        s["daemon"]["ready"] == false && s["daemon"]["features"]["shield"]["up"] == false
    };
    assert!(
        eventually(Duration::from_secs(10), || down(&lab.daemon_status())),
        "reported down: {} {}",
        lab.daemon_status(),
        daemon.log()
    );
    let detail = lab.daemon_status()["daemon"]["features"]["shield"]["detail"].to_string();
    assert!(detail.contains("not enforcing"), "{detail}");
    let ready = crate::common::health_ready(&lab.dir.path().join("run"));
    assert_eq!(ready.status.code(), Some(1), "{ready:?}");
    assert!(
        daemon.log().contains("shield is NOT enforcing"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        lab.ping(3, 1),
        1,
        "nothing of ours filters: the report is the truth"
    );

    // The interface free again: the link is back within the retry interval.
    let off = Command::new("ip")
        .args(["link", "set", "dev", &iface, "xdpgeneric", "off"])
        .output()
        .expect("ip");
    assert!(off.status.success(), "{off:?}");
    assert!(
        eventually(Duration::from_secs(20), || {
            let s = lab.daemon_status();
            s["daemon"]["ready"] == true && s["daemon"]["features"]["shield"]["up"] == true
        }),
        "ready again: {} {}",
        lab.daemon_status(),
        daemon.log()
    );
    assert_eq!(lab.ping(3, 1), 0, "dropped again");

    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    crate::common::detach(lab.pins.path());
}

/// Regression (enforcement you can prove): the Shield's pinned link detached while no
/// daemon ran was a dead pin the next start could not adopt, and that start left the
/// Shield disabled. Now the dead pin is replaced by a new link.
#[test]
fn a_restart_replaces_a_link_detached_while_the_daemon_was_down() {
    require_privileges!();
    let lab = Lab::new("ffdead", 69);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let args = lab.run_args(&config);
    let first = Daemon::spawn(&args);
    first.wait_for("ready");
    first.signal("KILL");
    drop(first);
    let pin = lab
        .pins
        .path()
        .join("shield")
        .join(format!("link_{}", lab.veth.host()));
    let out = detach_link(&pin);
    assert!(out.status.success(), "bpftool link detach: {out:?}");
    assert!(lab.reaches(3), "detached: the denied source passes");

    let mut second = Daemon::spawn(&args);
    second.wait_for("ready");
    assert!(
        !second.log().contains("shield disabled"),
        "{}",
        second.log()
    );
    assert_eq!(lab.ping(3, 1), 0, "a new link enforces");
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit");
    assert!(
        audit.lines().any(|l| l.contains("\"action\":\"repair\"")
            && l.contains("was detached from outside")),
        "{audit}"
    );
    second.signal("TERM");
    assert!(second.wait().success(), "{}", second.log());
    crate::common::detach(lab.pins.path());
}

/// Regression (enforcement you can prove): root could detach the identity firewall's
/// cgroup links (`bpftool link detach`) and a denied executable connected while the
/// daemon reported it enforcing. Now every link detached is put back within a second,
/// with a `repair` audit record each, and the executable is denied again.
#[test]
fn the_identity_firewalls_links_detached_behind_the_daemons_back_are_put_back() {
    require_privileges!();
    let lab = EgressLab::new("ffegrepair");
    let bad = lab.client("bad");
    let args = lab.args(&lab.deny_policy(&bad));
    let connect = || lab.connect(&bad);
    let mut daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    assert!(connect().starts_with("ok=0 eperm=1"), "denied");

    // The attacker detaches every link pinned there that the kernel lets go of (the
    // cgroup hooks; the process-tracking tracepoints cannot be detached).
    let mut detached = 0;
    for entry in std::fs::read_dir(lab.pins.path().join("egress")).expect("pins") {
        let path = entry.expect("entry").path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.is_some_and(|n| n.starts_with("link_")) {
            continue;
        }
        let out = detach_link(&path);
        detached += usize::from(out.status.success());
    }
    assert_eq!(detached, 4, "the four cgroup hooks detach");
    let start = Instant::now();
    while daemon.log().matches("was detached from outside").count() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "all four put back: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(connect().starts_with("ok=0 eperm=1"), "denied again");
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit");
    let repairs = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"repair\"") && l.contains("\"outcome\":\"ok\""))
        .count();
    assert_eq!(repairs, 4, "{audit}");
    let ready = crate::common::health_ready(&lab.dir.path().join("run"));
    assert!(ready.status.success(), "ready: {ready:?}");

    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    crate::common::detach(lab.pins.path());
    assert!(connect().starts_with("ok=1 eperm=0"), "detached");
}

/// The entries under `dir` (a pin root): none when it does not exist.
fn pins_under(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Regression (enforcement you can prove): a start that failed left what it had
/// pinned (the Shield's maps, tens of MB, and its links) in the kernel. Now a start that
/// fails with `--require-all` detaches and unpins every feature it started on pins of
/// its own, and a feature that fails to start (fail-open) leaves none of its pins; a
/// feature that adopted an earlier run's pins goes on enforcing.
#[test]
fn a_start_that_fails_removes_what_it_pinned_and_keeps_what_it_adopted() {
    require_privileges!();
    let lab = Lab::new("fffailed", 70);
    let shield_only = lab.write_config("shield.yaml", &lab.policy_denying(&[3]));
    let with_egress = lab.write_config(
        "both.yaml",
        &format!(
            "{}egress:\n  default: allow\n  rules:\n    - exe: /usr/bin/false\n      dst: 192.0.2.0/24\n      action: deny\n",
            lab.policy_denying(&[3])
        ),
    );
    // The identity firewall's cgroup does not exist: it cannot start.
    let missing_cgroup = lab.dir.path().join("no-such-cgroup");
    let failing = |config: &Path| {
        let mut args = lab.run_args(config);
        args.extend([
            "--cgroup".to_string(),
            missing_cgroup.display().to_string(),
            "--require-all".to_string(),
        ]);
        let mut daemon = Daemon::spawn(&args);
        let status = daemon.wait();
        assert!(!status.success(), "{}", daemon.log());
        daemon.log()
    };

    // Nothing pinned before: the Shield started, the identity firewall failed, and both
    // are gone again.
    let log = failing(&with_egress);
    assert!(log.contains("shield enforcing on"), "{log}");
    assert!(log.contains("egress disabled"), "{log}");
    assert_eq!(pins_under(lab.pins.path()), Vec::<String>::new(), "{log}");
    assert!(lab.reaches(3), "nothing left filtering");

    // Fail-open (no --require-all): the failed feature's own pins are removed, the
    // running Shield keeps its.
    let mut args = lab.run_args(&with_egress);
    args.extend(["--cgroup".to_string(), missing_cgroup.display().to_string()]);
    let daemon = Daemon::spawn(&args);
    daemon.wait_for("not ready: the policy is NOT fully enforced");
    assert_eq!(pins_under(lab.pins.path()), vec!["shield".to_string()]);
    assert_eq!(lab.ping(3, 1), 0, "the Shield enforces");
    daemon.signal("KILL");
    drop(daemon);

    // An earlier run's Shield (killed, still enforcing) is adopted by a start that then
    // fails: it stays, pinned and enforcing.
    let first = Daemon::spawn(&lab.run_args(&shield_only));
    first.wait_for("ready");
    first.signal("KILL");
    drop(first);
    let log = failing(&with_egress);
    assert!(log.contains("0 added, 1 kept"), "adopted: {log}");
    assert_eq!(
        pins_under(lab.pins.path()),
        vec!["shield".to_string()],
        "{log}"
    );
    assert_eq!(lab.ping(3, 1), 0, "the adopted Shield still enforces");

    crate::common::detach(lab.pins.path());
}
