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

/// The hooks the kernel holds on `dev`: whether an XDP program is attached.
fn xdp_attached(dev: &str) -> bool {
    let shown = ironclad_testing::bpftool(&["net", "show", "dev", dev]).expect("bpftool net");
    shown[0]["xdp"].as_array().is_some_and(|a| !a.is_empty())
}

/// The feature directories under the pin root.
fn pinned_features(pins: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pins)
        .expect("pin root")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A section removed from the policy is a feature removed: its hooks detached, its pins
/// gone, its traffic no longer enforced, for the Shield, the stateful firewall, the
/// identity firewall and telemetry alike, as the kernel shows it. Unconfirmed, the
/// removal is undone: every feature starts again and enforces as before.
#[test]
fn removing_sections_removes_their_enforcement_and_an_unconfirmed_removal_comes_back() {
    require_privileges!();
    let lab = Lab::new("ffremove", 71);
    // .2 passes everything, .3 is the Shield's, .4 the firewall's.
    let out = lab
        .ns
        .exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.addr(4)),
            "dev",
            lab.veth.peer(),
        ])
        .expect("ip addr");
    assert!(out.status.success(), "{out:?}");
    let cgroup = ironclad_testing::TestCgroup::new("ffremove").expect("cgroup");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let client = crate::common::net_client(lab.dir.path(), "client");
    let connect = || crate::common::connect_from(&cgroup, &client, &port);
    let full = format!(
        "{shield}firewall:\n  interfaces: [{dev}]\n  rules:\n    - {{direction: in, proto: icmp, src: {fw}, action: drop}}\n\
         egress:\n  default: allow\n  rules:\n    - exe: {client}\n      dst: 127.0.0.0/8\n      proto: tcp\n      action: deny\n\
         telemetry:\n  dns: true\n",
        shield = lab.policy_denying(&[3]),
        dev = lab.veth.host(),
        fw = lab.addr(4),
        client = client.display(),
    );
    let config = lab.write_config("policy.yaml", &full);
    let mut args = lab.run_args(&config);
    args.extend([
        "--cgroup".to_string(),
        cgroup.path().display().to_string(),
        "--confirm-within".to_string(),
        "20s".to_string(),
        "--detach-on-exit".to_string(),
    ]);
    let mut daemon = crate::common::Daemon::spawn(&args);
    daemon.wait_for("full_firewall: ready");
    let features = ["egress", "firewall", "shield", "telemetry"];
    let enforced = |lab: &Lab| {
        assert_eq!(lab.ping(2, 1), 1, "{}", daemon.log());
        assert_eq!(lab.ping(3, 1), 0, "the Shield drops .3: {}", daemon.log());
        assert_eq!(lab.ping(4, 1), 0, "the firewall drops .4: {}", daemon.log());
        assert!(
            connect().starts_with("ok=0 eperm=1"),
            "the identity firewall denies"
        );
        assert!(xdp_attached(lab.veth.host()));
        assert!(!ironclad_testing::cgroup_programs(cgroup.path())
            .expect("bpftool cgroup")
            .is_empty());
        let pinned = pinned_features(lab.pins.path());
        for f in features {
            assert!(pinned.iter().any(|p| p == f), "{f}: {pinned:?}");
        }
    };
    enforced(&lab);

    // Every section removed: nothing of them stays in the kernel.
    std::fs::write(&config, "{}\n").expect("policy");
    daemon.signal("HUP");
    daemon.wait_for("reload finished: the new policy is applied");
    assert!(lab.reaches(3), "the Shield is gone: {}", daemon.log());
    assert!(lab.reaches(4), "the firewall is gone: {}", daemon.log());
    assert!(
        connect().starts_with("ok=1"),
        "the identity firewall is gone"
    );
    assert!(!xdp_attached(lab.veth.host()), "no XDP program stays");
    assert_eq!(
        ironclad_testing::cgroup_programs(cgroup.path()).expect("bpftool cgroup"),
        Vec::<String>::new(),
        "no cgroup program stays"
    );
    let pinned = pinned_features(lab.pins.path());
    for f in features {
        assert!(!pinned.iter().any(|p| p == f), "{f} unpinned: {pinned:?}");
    }
    let status = lab.daemon_status();
    for f in features {
        assert!(
            status["daemon"]["features"].get(f).is_none(),
            "{f}: {status}"
        );
    }

    // Nobody confirms: the whole earlier policy comes back, every feature started again.
    daemon.wait_for_within(
        "not confirmed in time: the previous policy is back",
        Duration::from_secs(40),
    );
    enforced(&lab);
    let status = lab.daemon_status();
    for f in features {
        assert_eq!(status["daemon"]["features"][f]["up"], true, "{f}: {status}");
    }
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

/// `rules add` through the control API, on the daemon's socket in `run_dir`.
fn rule(run_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("rules")
        .arg("--socket")
        .arg(run_dir.join("api.sock"))
        .args(args)
        .output()
        .expect("rules");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The API rules in the store on disk.
fn stored_rules(lab: &Lab) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(lab.dir.path().join("state/runtime-rules.json"))
        .unwrap_or_else(|_| "{\"rules\": []}".to_string());
    let store: serde_json::Value = serde_json::from_str(&text).expect("store JSON");
    store["rules"].as_array().cloned().unwrap_or_default()
}

/// Regression (red team, round 3): `rules add shield.deny 0.0.0.0/0` exited 0 with no
/// warning, was enforced, kept across restarts and not covered by `--confirm-within`:
/// a permanent lock-out. API rules now get the policy file's lock-out guard (also for
/// halves that cover the family together) and its confirmation window: unconfirmed,
/// the rules before come back at the deadline, or at the next start.
#[test]
fn an_api_rule_that_locks_everyone_out_is_warned_of_and_undone_unless_confirmed() {
    require_privileges!();
    let lab = Lab::new("ffrollrule", 73);
    let config = lab.write_config("policy.yaml", &lab.policy_denying(&[3]));
    let mut daemon = start(&lab, &config, "4s");
    let run_dir = lab.dir.path().join("run");
    assert!(lab.reaches(2));

    // Half of IPv4 (not the operator's half): no lock-out yet, but provisional.
    let (ok, out, err) = rule(&run_dir, &["add", "shield.deny", "128.0.0.0/1"]);
    assert!(ok, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(
        out.starts_with("api-1 (enforced in ")
            && out.contains(" us, provisionally: run `full_firewall confirm` before "),
        "{out}"
    );
    // The other half completes it: warned of, by the rule that did.
    let (ok, out, err) = rule(&run_dir, &["add", "shield.deny", "0.0.0.0/1"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.starts_with(
            "warning: api-2: denies every IPv4 source (with the other deny rules and sets) \
             and `shield.management` has no IPv4 prefix"
        ),
        "{err}"
    );
    assert_eq!(lab.ping(2, 2), 0, "locked out");
    assert_eq!(stored_rules(&lab).len(), 2);

    // Nobody confirms: both rules go, from the kernel, the store and the list.
    daemon.wait_for("not confirmed in time: the previous policy is back");
    assert!(lab.reaches(2), "the operator is back in: {}", daemon.log());
    assert_eq!(lab.ping(3, 2), 0, "the policy's own rule stays");
    assert!(stored_rules(&lab).is_empty(), "{:?}", stored_rules(&lab));
    let (ok, listed, _) = rule(&run_dir, &["list"]);
    assert!(ok && !listed.contains("api-"), "{listed}");

    // Confirmed, a rule stays past the deadline.
    let (ok, out, err) = rule(&run_dir, &["add", "shield.deny", "0.0.0.0/0"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.starts_with("warning: api-3: denies every IPv4 source and"),
        "{err}"
    );
    assert!(confirm(&run_dir).status.success());
    daemon.wait_for("the new policy is confirmed");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.ping(2, 2), 0, "confirmed: it stays");
    assert_eq!(stored_rules(&lab).len(), 1);
    // Its removal is provisional too, and confirmed.
    let (ok, out, err) = rule(&run_dir, &["rm", "api-3"]);
    assert!(ok && out.contains("provisionally"), "{out}{err}");
    assert!(confirm(&run_dir).status.success());
    assert!(lab.reaches(2));

    // The daemon stops inside a window: at the next start the rules before are back.
    let (ok, out, err) = rule(&run_dir, &["add", "shield.deny", "0.0.0.0/0"]);
    assert!(ok, "{out}{err}");
    assert_eq!(lab.ping(2, 2), 0);
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
    let daemon = start(&lab, &config, "4s");
    assert!(
        daemon
            .log()
            .contains("a change to the runtime rules was not confirmed before the daemon stopped"),
        "{}",
        daemon.log()
    );
    assert!(stored_rules(&lab).is_empty(), "{:?}", stored_rules(&lab));
    assert!(lab.reaches(2), "{}", daemon.log());
    drop(daemon);
}
