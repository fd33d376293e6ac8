//! Every program of every embedded object passes this kernel's verifier with room to
//! spare. The verifier walks each path of a program and stops at 1,000,000 processed
//! instructions; how many a program needs differs by kernel (Debian 12's 6.1 needed
//! 908,799 for each identity hook and 916,346 for the stateful firewall's ingress
//! program, where 6.18 needs 52,603 and 165,784), so a program that loads on the
//! machine where it was written can be one change away from not loading on another.
//! Runs on the host and in each guest kernel (`guest/run.sh`), whose output keeps the
//! table it prints.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use ironclad_bpf::{object, BpfError, Loader, VerifierStats, VERIFIER_BUDGET};
use ironclad_testing::{require_privileges, BpffsDir};

/// The most a program may take of the budget on any kernel the suites run on: a
/// quarter is kept for the next change and for kernels not in the matrix.
const LIMIT: u32 = VERIFIER_BUDGET / 4 * 3;

/// Whether BPF-LSM programs can load here: `bpf` in the kernel's LSM list. The host's
/// lockdown refuses them (README: the Sentinel runs in the guests).
fn bpf_lsm() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|list| list.split(',').any(|lsm| lsm.trim() == "bpf"))
        .unwrap_or(false)
}

#[test]
fn every_program_of_every_object_verifies_within_three_quarters_of_the_budget() {
    require_privileges!();
    let pins = BpffsDir::new("verifier-budget").expect("bpffs");
    let loader = Loader::builder()
        .pin_root(pins.path())
        .build()
        .expect("loader");
    let mut rows: Vec<(String, VerifierStats)> = Vec::new();
    let mut checked = Vec::new();
    let mut lacking = Vec::new();
    // Each object as the loader loads it here: its main build, or where the kernel
    // lacks what that needs, its build for older kernels (IC_COMPAT). Those builds are
    // verified on the kernels they are for, not on every kernel: the Sentinel's takes
    // the xattr hooks' arguments as they were before 5.12, which 6.1 refuses.
    for obj in object::all() {
        if obj.name() == "sentinel" && !bpf_lsm() {
            eprintln!("sentinel: not loaded, `bpf` is not in this kernel's LSM list");
            continue;
        }
        let loaded = match loader.load_unpinned(obj) {
            Ok(loaded) => loaded,
            // What this kernel lacks (its BTF says), named: the object is not
            // verified here, and `daemon_kernel` checks that its feature says why.
            Err(e @ BpfError::KernelLacks { .. }) => {
                eprintln!("{}: not verified: {e}", obj.name());
                lacking.push(obj.name());
                continue;
            }
            Err(e) => panic!("{} does not load on this kernel: {e}", obj.name()),
        };
        let stats = loaded.verifier_stats().expect("the kernel's program info");
        assert!(
            !stats.is_empty(),
            "{}: no program of the object loaded",
            obj.name()
        );
        checked.push(obj.name());
        let label = if loaded.for_older_kernels() {
            format!("{} (compat)", obj.name())
        } else {
            obj.name().to_string()
        };
        rows.extend(stats.into_iter().map(|s| (label.clone(), s)));
    }
    // Every kernel this project runs on (5.10 and newer) has what these need; the
    // others need `bpf_loop` (5.17) and, for TLS, task storage (5.11).
    for must in ["shield", "telemetry", "process"] {
        assert!(checked.contains(&must), "{must} was not checked");
    }
    let newer = ironclad_bpf::kernel::KernelBpf::probe().is_some_and(|k| k.has_helper("loop"));
    for must in ["firewall", "egress", "tls"] {
        assert!(
            checked.contains(&must) || (!newer && lacking.contains(&must)),
            "{must} was not checked"
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    eprintln!("instructions verified on {}:", release.trim());
    for (obj, s) in &rows {
        eprintln!(
            "  {obj:<17} {:<24} {:>9} ({:.1}% of the budget)",
            s.program,
            s.verified_insns,
            f64::from(s.verified_insns) * 100.0 / f64::from(VERIFIER_BUDGET)
        );
    }
    // The kernel counts them from 5.16 on: before, every count is 0 and says nothing.
    if rows.iter().all(|(_, s)| s.verified_insns == 0) {
        assert!(
            crate::kernel_release() < (5, 16),
            "{release}: the kernel counted no verified instruction"
        );
        return;
    }
    let over: Vec<String> = rows
        .iter()
        .filter(|(_, s)| s.verified_insns > LIMIT)
        .map(|(obj, s)| format!("{obj}/{} {}", s.program, s.verified_insns))
        .collect();
    assert!(
        over.is_empty(),
        "over {LIMIT} of the verifier's {VERIFIER_BUDGET} instructions on {}: {}",
        release.trim(),
        over.join(", ")
    );
}
