//! Fail closed, on a kernel without BPF-LSM (the machines that build Ironclad): starting
//! the Sentinel is an error with a reason, an alert goes to the audit log, and nothing
//! stays loaded; only the explicit override starts unprotected, and says so.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::sync::Arc;

use ironclad_bpf::auditlog::{AuditAction, Outcome};
use ironclad_bpf::{Loader, MemorySink};
use ironclad_sentinel::{Sentinel, SentinelError, SentinelMode};
use ironclad_testing::require_privileges;
use ironclad_testing::BpffsDir;

fn bpf_lsm_active() -> bool {
    std::fs::read_to_string(ironclad_sentinel::LSM_LIST)
        .is_ok_and(|l| l.split(',').any(|x| x.trim() == "bpf"))
}

/// A loader over a fresh pin directory, writing its audit records to memory.
fn loader(name: &str) -> (BpffsDir, Arc<MemorySink>, Loader) {
    assert!(
        !bpf_lsm_active(),
        "this test is for kernels without BPF-LSM; the guest suite covers the others"
    );
    let pins = BpffsDir::new(name).expect("bpffs dir");
    let sink = Arc::new(MemorySink::new());
    let loader = Loader::builder()
        .pin_root(pins.path())
        .audit_sink(sink.clone())
        .build()
        .expect("loader");
    (pins, sink, loader)
}

#[test]
fn without_bpf_lsm_start_fails_with_a_reason_and_an_alert() {
    require_privileges!();
    let (pins, sink, loader) = loader("sentinel-closed");
    let err = Sentinel::builder()
        .protect("/etc/hostname")
        .start(&loader)
        .expect_err("no BPF-LSM here");
    assert!(
        matches!(
            err,
            SentinelError::BpfLsmMissing { .. } | SentinelError::LsmListUnreadable { .. }
        ),
        "{err}"
    );
    let alerts: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|r| r.action == AuditAction::Alert)
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].outcome, Outcome::Failed);
    assert!(alerts[0].detail.contains("self-protection is NOT active"));
    assert!(
        !pins.path().join("sentinel").exists(),
        "nothing pinned after a refused start"
    );
}

#[test]
fn the_explicit_override_starts_unprotected_and_logs_it() {
    require_privileges!();
    let (_pins, sink, loader) = loader("sentinel-open");
    let sentinel = Sentinel::builder()
        .protect("/etc/hostname")
        .allow_unprotected_start(true)
        .start(&loader)
        .expect("override");
    let SentinelMode::Unprotected { reason: why } = sentinel.mode().clone() else {
        panic!("started protected on a kernel without BPF-LSM");
    };
    let status = sentinel.status().expect("status");
    assert_eq!((status.hooks, status.agent_pid), (0, 0));
    assert!(
        matches!(
            sentinel.event_source(),
            Err(ironclad_sentinel::SentinelError::NotRunning { reason }) if reason == why
        ),
        "no events without the Sentinel"
    );
    let alerts: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|r| r.action == AuditAction::Alert)
        .map(|r| (r.outcome, r.detail))
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[1].1.contains("running unprotected"));
}
