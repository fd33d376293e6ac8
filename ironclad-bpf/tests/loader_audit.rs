//! The helper audit against the real kernel: a refused object leaves no trace in it.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::sync::Arc;

use ironclad_bpf::object::test_objects;
use ironclad_bpf::{AuditAction, BpfError, Callee, Loader, MemorySink, Outcome, Reason};
use ironclad_testing::require_privileges;
use ironclad_testing::BpffsDir;

/// Names of every BPF program loaded in the kernel, as `bpftool prog list` reports them.
fn kernel_program_names() -> Vec<String> {
    let list = ironclad_testing::bpftool(&["prog", "list"])
        .expect("bpftool must be installed (the README's test command installs it)");
    list.as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn audit_refuses_probe_write_user_and_nothing_reaches_the_kernel() {
    require_privileges!();
    let pins = BpffsDir::new("audit").expect("bpffs dir");
    let sink = Arc::new(MemorySink::new());
    let loader = Loader::builder()
        .pin_root(pins.path())
        .audit_sink(sink.clone())
        .build()
        .expect("loader");

    let before = kernel_program_names();
    let err = loader
        .load(test_objects::audit_forbidden())
        .expect_err("the audit must refuse this object");
    let after = kernel_program_names();

    let BpfError::AuditRejected { object, violations } = &err else {
        panic!("expected an audit refusal, got: {err}");
    };
    assert_eq!(object, "audit_forbidden");
    let write = violations
        .iter()
        .find(|v| v.callee == Callee::Helper(36))
        .expect("bpf_probe_write_user reported");
    assert_eq!(write.program, "ic_test_write_user");
    assert_eq!(write.reason, Reason::NeverAllowed);
    let message = err.to_string();
    assert!(
        message.contains("bpf_probe_write_user (helper 36)"),
        "message names the helper: {message}"
    );
    assert!(
        message.contains(&format!("at instruction {}", write.insn_index)),
        "message names the instruction index: {message}"
    );
    assert!(message.contains("nothing was loaded"), "{message}");

    // No program of that object is in the kernel, and no pin directory was made for it.
    assert!(
        !after.iter().any(|name| name.starts_with("ic_test_")),
        "bpftool shows a program of the refused object: {after:?}"
    );
    assert_eq!(
        before.iter().filter(|n| n.starts_with("ic_test_")).count(),
        0
    );
    assert!(!loader.pin_dir("audit_forbidden").exists());

    let refusals: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|r| r.action == AuditAction::Audit && r.outcome == Outcome::Refused)
        .collect();
    assert!(
        refusals
            .iter()
            .any(|r| r.target == "ic_test_write_user" && r.detail.contains("probe_write_user")),
        "audit record of the refusal: {refusals:?}"
    );
    assert!(!sink.records().iter().any(|r| r.action == AuditAction::Load));
}

#[test]
fn a_narrowed_allowlist_refuses_the_shield_before_load() {
    require_privileges!();
    let pins = BpffsDir::new("narrow").expect("bpffs dir");
    let mut allowlist = ironclad_bpf::Allowlist::builtin();
    assert!(allowlist.revoke("shield", "ic_shield_xdp", "map_lookup_elem"));
    let loader = Loader::builder()
        .pin_root(pins.path())
        .allowlist(allowlist)
        .build()
        .expect("loader");
    let err = ironclad_bpf::Shield::load(&loader).expect_err("narrowed list refuses");
    assert!(matches!(err, BpfError::AuditRejected { .. }), "{err}");
    assert!(!loader.pin_dir("shield").exists());
}
