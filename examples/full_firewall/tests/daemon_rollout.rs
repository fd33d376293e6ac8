//! Safe rollout: a reload under `--confirm-within` that cuts the operator's own path
//! undoes itself at the deadline; a confirmed one stays.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ironclad_testing::require_privileges;

use crate::common::{Daemon, Lab, BIN};

fn confirm(run_dir: &Path) -> Output {
    Command::new(BIN)
        .args(["confirm", "--run-dir"])
        .arg(run_dir)
        .output()
        .expect("confirm")
}

fn start(lab: &Lab, config: &Path, window: &str) -> Daemon {
    let mut args = lab.run_args(config);
    args.extend([
        "--confirm-within".to_string(),
        window.to_string(),
        // `--run-dir DIR/run` comes with the lab's arguments.
        "--detach-on-exit".to_string(),
    ]);
    let daemon = Daemon::spawn(&args);
    daemon.wait_for("ready");
    daemon
}

#[test]
fn an_unconfirmed_reload_that_blocks_the_management_path_rolls_back_by_itself() {
    require_privileges!();
    // .2 is "the operator's own management path", .3 an attacker.
    let lab = Lab::new("ffroll", 10);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut daemon = start(&lab, &config, "3s");
    let run_dir = lab.dir.path().join("run");
    assert_eq!(lab.ping(2, 2), 2, "the operator reaches the host");
    assert_eq!(lab.ping(3, 1), 0);
    let nothing = confirm(&run_dir);
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("nothing waits for confirmation"));

    // The mistake: a policy that denies the operator.
    std::fs::write(&config, lab.policy_denying(&[2])).expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("applying provisionally");
    daemon.wait_for("reloaded:");
    assert!(run_dir.join("pending-confirmation").exists());
    assert_eq!(lab.ping(2, 2), 0, "locked out");
    assert_eq!(lab.ping(3, 2), 2);

    // Nobody confirms: the previous policy comes back at the deadline.
    daemon.wait_for("not confirmed in time: the previous policy is back");
    assert_eq!(lab.ping(2, 2), 2, "the operator is back in");
    assert_eq!(lab.ping(3, 2), 0, "and the old rules with it");
    assert!(!run_dir.join("pending-confirmation").exists());
    let late = confirm(&run_dir);
    assert!(!late.status.success(), "nothing to confirm any more");
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("\"action\":\"policy\""), "{audit}");
    assert!(
        audit.contains("rolled back to the previous policy"),
        "{audit}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    assert!(!run_dir.join("full_firewall.pid").exists());
}

#[test]
fn a_confirmed_reload_stays_after_the_deadline() {
    require_privileges!();
    let lab = Lab::new("ffconfirm", 11);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut daemon = start(&lab, &config, "3s");
    let run_dir = lab.dir.path().join("run");
    std::fs::write(&config, lab.policy_denying(&[2])).expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("reloaded:");
    let out = confirm(&run_dir);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("confirmed"));
    daemon.wait_for("the new policy is confirmed");
    // Past the deadline, the confirmed policy is still the one enforced.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lab.ping(2, 2), 0, "the confirmed policy stays");
    assert_eq!(lab.ping(3, 2), 2);
    assert!(
        !daemon.log().contains("not confirmed in time"),
        "{}",
        daemon.log()
    );
    let audit = std::fs::read_to_string(lab.dir.path().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("\"detail\":\"confirmed\""), "{audit}");
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}
