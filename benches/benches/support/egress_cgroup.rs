//! Helpers of the benchmarks that time the identity firewall's hooks from a process in
//! a cgroup (`egress`, `domains`).

use std::path::Path;

use ironclad_bpf::EgressFirewall;
use ironclad_policy::config::compile_str;

/// Moves this process into `cgroup` (its sockets created from now on run that cgroup's
/// hooks).
pub(crate) fn enter(cgroup: &Path) {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| panic!("moving the benchmark into {}: {e}", cgroup.display()));
}

/// Back to the root cgroup, so the test cgroups can be removed.
pub(crate) fn leave() {
    if let Ok(root) = ironclad_core::identity::cgroup2_root() {
        let _ = std::fs::write(root.join("cgroup.procs"), std::process::id().to_string());
    }
}

/// Compiles `yaml` and makes it the firewall's live policy.
pub(crate) fn apply(firewall: &EgressFirewall, yaml: &str) {
    let compiled = compile_str(yaml, Path::new("bench.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .egress
        .unwrap_or_else(|| panic!("egress section"));
    firewall
        .replace(&compiled)
        .unwrap_or_else(|e| panic!("{e}"));
}
