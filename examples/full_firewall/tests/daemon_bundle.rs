//! Signed policy bundles through the daemon: a valid bundle is applied; a flipped byte,
//! an older serial and a bundle signed with another key are refused with the kernel's
//! maps unchanged (same rules, same active slot) and an audit record each.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::Path;
use std::process::Command;

use ironclad_testing::require_privileges;

use crate::common::{Daemon, Lab, BIN};

fn cli(args: &[&str], paths: &[&Path]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(paths)
        .output()
        .expect("full_firewall")
}

fn sign(key: &Path, bundle: &Path, serial: Option<u64>) {
    let serial = serial.map(|s| s.to_string());
    let mut args = vec!["sign", "--key"];
    let key = key.to_str().expect("utf-8");
    args.push(key);
    if let Some(s) = &serial {
        args.extend(["--serial", s.as_str()]);
    }
    let out = cli(&args, &[bundle]);
    assert!(out.status.success(), "sign: {out:?}");
}

/// `run` for `lab` with the signed bundle `bundle` and the trusted key `key` instead of
/// `--config`.
fn bundle_args(lab: &Lab, bundle: &Path, key: &Path) -> Vec<String> {
    let mut args = lab.run_args(Path::new("unused"));
    let at = args.iter().position(|a| a == "--config").expect("--config");
    args.drain(at..at + 2);
    args.extend(
        [
            "--bundle",
            bundle.to_str().expect("utf-8"),
            "--trusted-key",
            key.to_str().expect("utf-8"),
        ]
        .map(String::from),
    );
    args
}

/// The Shield as the pinned maps say: rules (labels and prefix counts) and the slot.
fn kernel_state(lab: &Lab) -> serde_json::Value {
    let status = lab.status();
    serde_json::json!({
        "slot": status["slot"],
        "rules": status["rules"].as_array().expect("rules").iter().map(|r| {
            serde_json::json!([r["set"], r["cidr"], r["ipv4_prefixes"], r["action"]])
        }).collect::<Vec<_>>(),
    })
}

#[test]
fn signed_bundles_are_applied_and_tampered_old_or_foreign_ones_refused() {
    require_privileges!();
    let lab = Lab::new("ffbundle", 12);
    let dir = lab.dir.path();
    let (bundle, state, key) = (dir.join("bundle"), dir.join("state"), dir.join("signing"));
    std::fs::create_dir_all(bundle.join("feeds")).expect("bundle dir");
    std::fs::write(
        bundle.join("policy.yaml"),
        "shield:\n  deny_feeds:\n    - path: feeds/blocked.txt\n      format: plain\n  sample_rate: 1\n",
    )
    .expect("policy");
    let list = bundle.join("feeds/blocked.txt");
    std::fs::write(&list, format!("{}\n", lab.addr(3))).expect("feed");
    let out = cli(&["keygen", "--out"], &[&key]);
    assert!(out.status.success(), "{out:?}");
    sign(&key, &bundle, None);
    let manifest = std::fs::read_to_string(bundle.join("manifest.json")).expect("manifest");
    assert!(manifest.contains("\"serial\": 1"), "{manifest}");

    let run = |extra: &[&str]| {
        let mut args = bundle_args(&lab, &bundle, &dir.join("signing.pub"));
        let at = args
            .iter()
            .position(|a| a == "--state-dir")
            .expect("--state-dir");
        args.drain(at..at + 2);
        args.extend(
            [
                "--state-dir",
                state.to_str().expect("utf-8"),
                "--detach-on-exit",
            ]
            .iter()
            .chain(extra)
            .map(ToString::to_string),
        );
        Daemon::spawn(&args)
    };
    let mut daemon = run(&[]);
    daemon.wait_for("ready");
    assert!(
        daemon.log().contains("bundle serial 1 accepted"),
        "{}",
        daemon.log()
    );
    assert_eq!(lab.ping(3, 2), 0, "the signed feed's entry is dropped");
    assert_eq!(lab.ping(2, 2), 2);
    let applied = kernel_state(&lab);

    let refused = |daemon: &Daemon, why: &str, count: usize| {
        daemon.signal("HUP");
        daemon.wait_for_more("reload refused", count - 1);
        assert!(
            daemon.log().contains(why),
            "expected `{why}` in:\n{}",
            daemon.log()
        );
        assert_eq!(
            kernel_state(&lab),
            applied,
            "the kernel's maps did not change"
        );
        assert_eq!(lab.ping(3, 1), 0);
        assert!(lab.reaches(2));
    };

    // One flipped byte in a listed file, not re-signed.
    std::fs::write(&list, format!("{}\n", lab.addr(2))).expect("tamper");
    refused(
        &daemon,
        "feeds/blocked.txt: the content does not match the signed manifest",
        1,
    );
    // One flipped byte in the manifest itself.
    let text = std::fs::read_to_string(bundle.join("manifest.json")).expect("manifest");
    std::fs::write(
        bundle.join("manifest.json"),
        text.replace("\"serial\": 1", "\"serial\": 7"),
    )
    .expect("tamper");
    refused(
        &daemon,
        "the signature does not verify with the trusted key",
        2,
    );

    // Serial 2, properly signed: applied.
    sign(&key, &bundle, Some(2));
    daemon.signal("HUP");
    daemon.wait_for("bundle serial 2 accepted");
    assert_eq!(lab.ping(2, 2), 0, "serial 2 denies .2");
    assert_eq!(lab.ping(3, 2), 2);
    let applied_2 = kernel_state(&lab);

    // Back to serial 1 (rollback), validly signed: refused.
    std::fs::write(&list, format!("{}\n", lab.addr(3))).expect("feed");
    sign(&key, &bundle, Some(1));
    daemon.signal("HUP");
    daemon.wait_for("serial 1 is older than the accepted serial 2");
    assert_eq!(kernel_state(&lab), applied_2);
    assert_eq!(lab.ping(2, 1), 0);

    // Serial 3 signed with another key: refused.
    let other = dir.join("other");
    assert!(cli(&["keygen", "--out"], &[&other]).status.success());
    sign(&other, &bundle, Some(3));
    // Each refusal says it twice (the audit record's echo and the reason): wait for a
    // new one, not for a count the earlier refusal already reached.
    let before = daemon.log().matches("signature does not verify").count();
    daemon.signal("HUP");
    daemon.wait_for_more("signature does not verify", before);
    assert_eq!(kernel_state(&lab), applied_2);

    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit");
    let policy_records: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["action"] == "policy")
        .collect();
    let refusals = policy_records
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .count();
    let accepts = policy_records
        .iter()
        .filter(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("bundle accepted"))
        })
        .count();
    assert_eq!((refusals, accepts), (4, 2), "{policy_records:#?}");
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());

    // A fresh start with the foreign-key bundle: refused before anything loads.
    let mut again = run(&[]);
    let status = again.wait();
    assert_eq!(status.code(), Some(2), "{}", again.log());
    assert!(again.log().contains("bundle refused"), "{}", again.log());
    assert!(!lab.pins.path().join("shield").exists(), "nothing pinned");
    assert!(lab.reaches(2), "no program attached");
}

/// A bundle's files by their path in it, as `ApplyPolicy` takes them.
fn bundle_files(dir: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let mut files = std::collections::HashMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("inside");
                files.insert(
                    rel.to_str().expect("utf-8").to_string(),
                    std::fs::read(&path).expect("read"),
                );
            }
        }
    }
    files
}

#[test]
fn a_bundle_sent_through_the_control_api_is_verified_before_it_replaces_the_running_one() {
    require_privileges!();
    let lab = Lab::new("ffbundleapi", 62);
    let dir = lab.dir.path();
    let (bundle, key, other) = (dir.join("bundle"), dir.join("signing"), dir.join("other"));
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(bundle.join("policy.yaml"), lab.policy_denying(&[3])).expect("policy");
    for k in [&key, &other] {
        let out = cli(&["keygen", "--out"], &[k]);
        assert!(out.status.success(), "{out:?}");
    }
    sign(&key, &bundle, None);
    let mut daemon = Daemon::spawn(&bundle_args(&lab, &bundle, &dir.join("signing.pub")));
    daemon.wait_for("ready");
    assert_eq!(lab.ping(3, 1), 0);

    // The next bundle, made elsewhere (as a fleet's signing host would), with a feed
    // shaped like a real one: 250,000 lines, 4 MB, which a request of 64 KiB could
    // not carry (red team round 3, L2).
    let next = dir.join("next");
    std::fs::create_dir_all(next.join("feeds")).expect("next");
    std::fs::write(
        next.join("policy.yaml"),
        "shield:\n  deny_feeds:\n    - path: feeds/blocked.txt\n      format: plain\n  sample_rate: 1\n",
    )
    .expect("policy");
    let mut feed = format!("# a blocklist\n{}\n", lab.addr(2));
    for i in 0..250_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        feed.push_str(&format!("100.{}.{b}.{c}/32\n", 64 + a));
    }
    assert!(feed.len() > 4_000_000, "{}", feed.len());
    std::fs::write(next.join("feeds/blocked.txt"), &feed).expect("feed");
    sign(&key, &next, Some(2));
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(&foreign).expect("foreign");
    std::fs::write(foreign.join("policy.yaml"), lab.policy_denying(&[2])).expect("policy");
    sign(&other, &foreign, Some(3));
    let first = bundle_files(&bundle);
    let socket = dir.join("run").join("api.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut api = ironclad_api::client::connect(&socket)
            .await
            .expect("connect");
        let send = |files| ironclad_api::v1::ApplyPolicyRequest {
            bundle_files: files,
            ..Default::default()
        };
        let e = api
            .apply_policy(send(bundle_files(&foreign)))
            .await
            .expect_err("another key");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("bundle refused"), "{e:?}");
        let mut escaping = bundle_files(&next);
        escaping.insert("../outside".to_string(), b"x".to_vec());
        let e = api
            .apply_policy(send(escaping))
            .await
            .expect_err("a path outside");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(!dir.join("outside").exists());
        assert_eq!(lab.ping(3, 1), 0, "nothing changed");
        assert!(lab.reaches(2));
        assert_eq!(
            std::fs::read_to_string(bundle.join("policy.yaml")).expect("policy"),
            lab.policy_denying(&[3])
        );
        api.apply_policy(send(bundle_files(&next)))
            .await
            .expect("the next bundle");
        assert_eq!(lab.ping(2, 2), 0, "the new bundle is enforced");
        assert!(lab.reaches(3));
        // The first bundle again: its serial is older than the one accepted.
        let e = api.apply_policy(send(first)).await.expect_err("replayed");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("serial"), "{e:?}");
        assert_eq!(lab.ping(2, 1), 0, "the replay changed nothing");
    });
    assert!(
        daemon.log().contains("bundle serial 2 accepted"),
        "{}",
        daemon.log()
    );
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.log());
}

/// Regression (red team, round 3): only the Shield's feeds were checked to lie inside a
/// bundle, so a domain feed or an IDS rule file named by an absolute path was read from
/// wherever it pointed, and editing it (plus a SIGHUP) changed enforcement while the log
/// said the signed serial was accepted. Every file a policy reads is now checked, with
/// one walk over the compiled policy: `sign` refuses a policy reading a file outside
/// the bundle, and `run` refuses a bundle whose verified copy would read one (here:
/// absolute paths into the signing directory, inside it when signed, outside the
/// verified copy the daemon compiles), before anything loads.
#[test]
fn a_bundle_whose_policy_reads_any_file_outside_it_is_refused_by_sign_and_run() {
    require_privileges!();
    let lab = Lab::new("ffbundleout", 72);
    let dir = lab.dir.path();
    let (bundle, key) = (dir.join("bundle"), dir.join("signing"));
    for sub in ["feeds", "rules"] {
        std::fs::create_dir_all(bundle.join(sub)).expect("bundle dir");
    }
    std::fs::write(
        bundle.join("feeds/blocked.txt"),
        format!("{}\n", lab.addr(3)),
    )
    .expect("feed");
    let domains = bundle.join("feeds/malware.hosts");
    std::fs::write(&domains, "0.0.0.0 evil.test\n").expect("domain feed");
    let rules = bundle.join("rules/local.rules");
    std::fs::write(
        &rules,
        "alert tcp any any -> any 80 (msg:\"evil\"; content:\"evil\"; sid:1000001;)\n",
    )
    .expect("rules");
    let policy = |domain_feed: &Path, rule_file: &Path| {
        format!(
            "shield:\n  deny_feeds:\n    - path: feeds/blocked.txt\n      format: plain\n\
             egress:\n  default: allow\n  deny_domain_feeds:\n    - {{path: {}, name: malware}}\n\
             firewall:\n  interfaces: [{}]\n  ids:\n    rules: [{}]\n",
            domain_feed.display(),
            lab.veth.host(),
            rule_file.display()
        )
    };
    let out = cli(&["keygen", "--out"], &[&key]);
    assert!(out.status.success(), "{out:?}");

    // Files outside the directory being signed: `sign` names each and signs nothing.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("elsewhere");
    let (outside_domains, outside_rules) = (
        elsewhere.join("malware.hosts"),
        elsewhere.join("local.rules"),
    );
    std::fs::copy(&domains, &outside_domains).expect("copy");
    std::fs::copy(&rules, &outside_rules).expect("copy");
    std::fs::write(
        bundle.join("policy.yaml"),
        policy(&outside_domains, &outside_rules),
    )
    .expect("policy");
    let key_arg = key.to_str().expect("utf-8");
    let out = cli(&["sign", "--key", key_arg], &[&bundle]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    for what in [
        format!(
            "egress.deny_domain_feeds malware reads {}, which is not in the bundle",
            outside_domains.display()
        ),
        format!(
            "firewall.ids.rules reads {}, which is not in the bundle",
            outside_rules.display()
        ),
    ] {
        assert!(err.contains(&what), "`{what}` in: {err}");
    }
    assert!(!bundle.join("manifest.json").exists(), "nothing signed");

    // Absolute paths into the signing directory: inside it when signed, outside the
    // verified copy the daemon compiles. `run` refuses the bundle before loading.
    std::fs::write(bundle.join("policy.yaml"), policy(&domains, &rules)).expect("policy");
    sign(&key, &bundle, None);
    let mut daemon = Daemon::spawn(&bundle_args(&lab, &bundle, &dir.join("signing.pub")));
    let status = daemon.wait();
    let log = daemon.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("bundle refused: its policy reads files that are not in the bundle"),
        "{log}"
    );
    for what in [
        format!(
            "egress.deny_domain_feeds malware reads {}",
            domains.display()
        ),
        format!("firewall.ids.rules reads {}", rules.display()),
    ] {
        assert!(log.contains(&what), "`{what}` in: {log}");
    }
    assert!(!lab.pins.path().join("shield").exists(), "nothing pinned");
    assert!(!lab.pins.path().join("egress").exists(), "nothing pinned");
}
