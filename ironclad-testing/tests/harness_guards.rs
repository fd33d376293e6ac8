//! The privileged test harness itself: every guard creates what it promises and removes
//! it on drop.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::path::PathBuf;

use ironclad_testing::require_privileges;
use ironclad_testing::{run, BpffsDir, NetNs, TestCgroup, VethPair};

fn netns_exists(name: &str) -> bool {
    let out = run("ip", &["netns", "list"]).expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn link_exists(name: &str) -> bool {
    PathBuf::from("/sys/class/net").join(name).exists()
}

#[test]
fn netns_and_veth_are_created_connected_and_removed() {
    require_privileges!();
    let (ns_name, host) = {
        let ns = NetNs::new("harness").expect("netns");
        let veth = VethPair::new(&ns, &["10.202.0.1/24"], &["10.202.0.2/24"]).expect("veth");
        assert!(netns_exists(ns.name()));
        assert!(link_exists(veth.host()));
        assert!(!link_exists(veth.peer()), "peer lives in the namespace");
        ns.exec(&["ping", "-c", "1", "-W", "2", "10.202.0.1"])
            .expect("the namespace reaches the host end");
        (ns.name().to_string(), veth.host().to_string())
    };
    assert!(!netns_exists(&ns_name), "namespace removed on drop");
    assert!(!link_exists(&host), "veth removed on drop");
}

#[test]
fn a_cgroup_runs_its_command_inside_and_is_removed_with_its_processes() {
    require_privileges!();
    let path = {
        let cg = TestCgroup::new("harness").expect("cgroup");
        let out = cg
            .command("cat")
            .arg("/proc/self/cgroup")
            .output()
            .expect("run cat");
        let text = String::from_utf8_lossy(&out.stdout);
        let name = cg
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            text.trim().ends_with(&name),
            "{text} should end with {name}"
        );
        let mut sleeper = cg.command("sleep").arg("60").spawn().expect("sleep");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(cg.pids().expect("pids").len(), 1);
        let path = cg.path().to_path_buf();
        drop(cg);
        let status = sleeper.wait().expect("wait");
        assert!(!status.success(), "the process was killed with its cgroup");
        path
    };
    assert!(!path.exists(), "cgroup removed on drop");
}

#[test]
fn a_bpffs_dir_is_on_bpffs_and_removed() {
    require_privileges!();
    let path = {
        let dir = BpffsDir::new("harness").expect("bpffs dir");
        assert!(dir.path().starts_with("/sys/fs/bpf"));
        assert!(dir.path().is_dir());
        dir.path().to_path_buf()
    };
    assert!(!path.exists());
}
