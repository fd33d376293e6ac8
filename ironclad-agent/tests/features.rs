//! The feature supervisor against the kernel: a policy's features start on a veth and a
//! cgroup, enforce (pings dropped by the Shield, a connect refused by the identity
//! firewall, the drop reported through the one event reader), reload, roll back and
//! detach; a feature that cannot start is down with its reason, or fails the start
//! when every feature is required.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test with a message"
)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclad_agent::features::{Features, Settings, Snapshot};
use ironclad_agent::AgentError;
use ironclad_bpf::Loader;
use ironclad_events::{Event, Fanout, Overflow};
use ironclad_policy::config::{compile_file, CompiledConfig};
use ironclad_testing::{ping, require_privileges, BpffsDir, NetNs, TestCgroup, VethPair};

fn policy(dir: &Path, name: &str, text: &str) -> CompiledConfig {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("policy");
    compile_file(&path).expect("compiles")
}

/// Whether a process of `cgroup` can open a TCP connection to 127.0.0.1:`port`.
fn connects(cgroup: &TestCgroup, port: u16) -> bool {
    cgroup
        .command("bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("bash")
        .success()
}

fn pinned(pins: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pins)
        .expect("pins")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn features_start_enforce_reload_roll_back_and_detach_through_one_supervisor() {
    require_privileges!();
    let ns = NetNs::new("agf").expect("netns");
    let veth = VethPair::new(&ns, &["10.213.0.1/24"], &["10.213.0.2/24"]).expect("veth");
    let cgroup = TestCgroup::new("agf").expect("cgroup");
    let pins = BpffsDir::new("agf").expect("bpffs");
    let dir = tempfile::tempdir().expect("tempdir");
    let service = TcpListener::bind("127.0.0.1:0").expect("service");
    let port = service.local_addr().expect("addr").port();
    let first = policy(
        dir.path(),
        "first.yaml",
        &format!(
            "shield:\n  deny: [10.213.0.2/32]\n  sample_rate: 1\n\
             egress:\n  default: allow\n  rules:\n    - dst: 127.0.0.1\n      ports: [{port}]\n      proto: tcp\n      action: deny\n\
             telemetry:\n  dns: true\n"
        ),
    );
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let fanout = Arc::new(Fanout::new());
    let events = fanout.subscribe("test", 4096, Overflow::DropOldest);
    let settings = Settings::new(cgroup.path())
        .iface(veth.host())
        .require_all(true);
    let mut features = Features::start(&loader, settings, &first, fanout).expect("start");

    assert_eq!(features.running(), ["shield", "egress", "telemetry"]);
    let states = features.states();
    assert!(states.values().all(|s| s.up), "{states:?}");
    assert!(
        states["shield"]
            .detail
            .starts_with(&format!("XDP on {} (", veth.host())),
        "{states:?}"
    );
    assert_eq!(pinned(pins.path()), ["egress", "shield", "telemetry"]);

    // Enforcing: the denied peer's pings are dropped, the denied connect is refused,
    // and the drops arrive through the supervisor's one reader.
    assert_eq!(
        ping(&ns, veth.peer(), "10.213.0.1", 3, "0.2").expect("ping"),
        0
    );
    assert!(
        !connects(&cgroup, port),
        "the egress rule refuses the connect"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut drops, mut refusals) = (0, 0);
    while Instant::now() < deadline && (drops == 0 || refusals == 0) {
        features.poll(Duration::from_millis(100));
        features.tick();
        for event in events.receiver().try_iter() {
            match event {
                Event::ShieldDrop(d) if d.src.to_string() == "10.213.0.2" => drops += 1,
                Event::Connect(e) if e.dport == port => refusals += 1,
                _ => {}
            }
        }
    }
    assert!(
        drops > 0 && refusals > 0,
        "drops {drops}, refusals {refusals}"
    );

    // A reload without the deny and without an egress section: the Shield takes the
    // new rules, the identity firewall stops, its hooks and pins gone.
    let second = policy(
        dir.path(),
        "second.yaml",
        "shield:\n  deny: [192.0.2.0/24]\ntelemetry:\n  dns: true\n",
    );
    assert!(features.reload(&second), "the reload applies");
    assert_eq!(
        ping(&ns, veth.peer(), "10.213.0.1", 3, "0.2").expect("ping"),
        3
    );
    assert!(connects(&cgroup, port), "the identity firewall is gone");
    assert_eq!(features.running(), ["shield", "telemetry"]);
    assert_eq!(pinned(pins.path()), ["shield", "telemetry"]);
    assert_eq!(
        features.reload_outcomes().get("egress"),
        Some(&ironclad_agent::features::ReloadOutcome::Stopped)
    );

    // Rolling back to the first policy's snapshot puts the deny back and starts the
    // identity firewall again with its rule.
    assert!(features.roll_back(&Snapshot::of(&first)));
    assert_eq!(
        ping(&ns, veth.peer(), "10.213.0.1", 3, "0.2").expect("ping"),
        0
    );
    assert!(!connects(&cgroup, port), "the egress rule is back");
    assert_eq!(pinned(pins.path()), ["egress", "shield", "telemetry"]);
    // With no earlier policy there is nothing to go back to: nothing changes.
    assert!(!features.roll_back(&Snapshot::default()));
    assert!(!connects(&cgroup, port), "the egress rule stays");

    // Detaching removes every hook and pin.
    features.stop(true).expect("stop");
    assert_eq!(pinned(pins.path()), Vec::<String>::new());
    let xdp = ironclad_testing::run("ip", &["-d", "link", "show", veth.host()]).expect("ip");
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("prog/xdp"),
        "no XDP program left on {}",
        veth.host()
    );
}

#[test]
fn a_feature_that_cannot_start_is_down_with_its_reason_unless_every_feature_is_required() {
    require_privileges!();
    let cgroup = TestCgroup::new("agd").expect("cgroup");
    let pins = BpffsDir::new("agd").expect("bpffs");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = policy(
        dir.path(),
        "p.yaml",
        "shield:\n  deny: [192.0.2.0/24]\negress:\n  default: allow\n",
    );
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let fanout = Arc::new(Fanout::new());

    // Failing open: the Shield is down with the reason, the identity firewall runs.
    let settings = Settings::new(cgroup.path()).iface("ic-missing0");
    let features =
        Features::start(&loader, settings.clone(), &config, fanout.clone()).expect("fails open");
    assert_eq!(features.running(), ["egress"]);
    let states = features.states();
    assert!(!states["shield"].up, "{states:?}");
    assert!(
        states["shield"]
            .detail
            .starts_with("not running: traffic on ic-missing0 is not filtered"),
        "{states:?}"
    );
    assert!(states["egress"].up, "{states:?}");
    features.stop(true).expect("stop");

    // Every feature required: the start fails with the Shield's error, and nothing
    // after it started.
    let strict = settings.require_all(true);
    match Features::start(&loader, strict, &config, fanout) {
        Err(AgentError::Unfiltered { iface, .. }) => assert_eq!(iface, "ic-missing0"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(f) => panic!("started {:?}", f.running()),
    }
    assert!(
        !pinned(pins.path()).contains(&"egress".to_string()),
        "{:?}",
        pinned(pins.path())
    );

    // No interface at all for a policy with a shield section: a clear error.
    let none = Settings::new(cgroup.path()).require_all(true);
    match Features::start(&loader, none, &config, Arc::new(Fanout::new())) {
        Err(AgentError::NoInterface) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(f) => panic!("started {:?}", f.running()),
    }
}
