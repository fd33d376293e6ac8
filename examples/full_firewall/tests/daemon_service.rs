//! The shipped service definitions, exercised: the daemon under the systemd unit's
//! capability bounding set and `NoNewPrivileges`, logging to a journal stream, reloaded
//! with SIGHUP and stopped with SIGTERM (enforcement stays pinned).

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::Path;
use std::process::Command;

use ironclad_testing::require_privileges;

mod common;

use common::{Daemon, Lab, BIN};

/// The unit file's value of `key` (the last assignment wins, as in systemd).
fn unit_setting(key: &str) -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ironclad.service");
    let text = std::fs::read_to_string(&unit).expect("the unit file");
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("{key} not set in {}", unit.display()))
        .to_string()
}

/// `CAP_BPF CAP_NET_ADMIN` → `-all,+bpf,+net_admin`, setpriv's syntax.
fn setpriv_caps(bounding: &str) -> String {
    let caps: Vec<String> = bounding
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

#[test]
fn the_daemon_enforces_under_the_units_hardening_and_logs_for_the_journal() {
    require_privileges!();
    assert_eq!(unit_setting("NoNewPrivileges"), "yes");
    let caps = setpriv_caps(&unit_setting("CapabilityBoundingSet"));
    let lab = Lab::new("ffunit", 9);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[2]));
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--no-new-privs",
        "--bounding-set",
        &caps,
        "--inh-caps",
        "-all",
        BIN,
    ]);
    cmd.args(lab.run_args(&config));
    let mut daemon = Daemon::spawn_command(cmd, true);
    daemon.wait_for("<6>full_firewall: ready");
    assert_eq!(lab.ping(2, 3), 0, "the denied source is dropped");
    assert_eq!(lab.ping(3, 2), 2, "the other source passes");

    // systemctl reload: SIGHUP applies the new policy.
    std::fs::write(&config, lab.policy_denying(&[3])).expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("<6>full_firewall: reloaded: 1 added");
    assert_eq!(lab.ping(2, 2), 2);
    assert_eq!(lab.ping(3, 2), 0);
    // A refused reload is a warning in the journal.
    std::fs::write(&config, "shield:\n  deny: [nonsense]\n").expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("<4>full_firewall: warning: reload refused");

    // systemctl stop: SIGTERM, exit 0, enforcement stays pinned.
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    assert!(
        daemon.log().contains("enforcement stays pinned"),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.ping(3, 2), 0, "still dropped with the daemon gone");
    let detach = Command::new(BIN)
        .args(["detach", "--pin-dir"])
        .arg(lab.pins.path())
        .status()
        .expect("detach");
    assert!(detach.success());
    assert_eq!(lab.ping(3, 1), 1);
}

#[test]
fn outside_systemd_lines_carry_no_priority_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "shield:\n  deny: [nonsense]\n").expect("policy");
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("--config").arg(&config);
    let mut daemon = Daemon::spawn_command(cmd, false);
    assert_eq!(daemon.wait().code(), Some(2));
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l == "full_firewall: error: the policy is invalid; nothing was changed"),
        "{log}"
    );
    assert!(!log.contains("<3>"), "{log}");
}
