//! What `run` keeps of root's powers: the capabilities its features use while running,
//! nothing else. Dropped first thing, before any thread starts (capabilities belong to
//! threads, and every later one inherits the smaller sets), so the listeners a network
//! peer or a local user reaches never hold more. Once started, a system-call filter of
//! its own ([`deny_unneeded_calls`]) takes away the calls it never makes from then on,
//! in every thread.

use rustix::thread::{CapabilitySet, CapabilitySets};

/// The capabilities `run` keeps: the systemd unit's bounding set (`CapabilityBoundingSet`,
/// the set the service tests run the daemon under) and those a daemon started by hand
/// may use for files and processes it does not own (`/proc/PID/maps` of a TLS library's
/// users, pins and run files of another owner, a port below 1024 for `--metrics`).
pub(crate) const KEPT: CapabilitySet = CapabilitySet::BPF
    .union(CapabilitySet::PERFMON)
    .union(CapabilitySet::NET_ADMIN)
    .union(CapabilitySet::SYS_ADMIN)
    .union(CapabilitySet::SYS_RESOURCE)
    .union(CapabilitySet::DAC_READ_SEARCH)
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::SYS_PTRACE)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::IPC_LOCK)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::CHOWN)
    .union(CapabilitySet::FOWNER);

/// Drops every capability but [`KEPT`] from the bounding set and the permitted,
/// effective and inheritable sets, and sets `no_new_privs` (nothing it could execute
/// gains privileges). Returns what was dropped, for the log. A process without
/// `CAP_SETPCAP` (an unprivileged `run`, which fails later anyway) keeps its bounding
/// set and drops the rest.
pub(crate) fn drop_unneeded() -> std::io::Result<CapabilitySet> {
    let mut dropped = CapabilitySet::empty();
    for cap in CapabilitySet::all().iter() {
        if KEPT.contains(cap) {
            continue;
        }
        // Not in the set: dropped already, or a capability this kernel does not know.
        if rustix::thread::capability_is_in_bounding_set(cap).unwrap_or(false)
            && rustix::thread::remove_capability_from_bounding_set(cap).is_ok()
        {
            dropped |= cap;
        }
    }
    let now = rustix::thread::capabilities(None)?;
    dropped |= (now.permitted | now.effective) - KEPT;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: now.effective & KEPT,
            permitted: now.permitted & KEPT,
            inheritable: now.inheritable & KEPT,
        },
    )?;
    rustix::thread::set_no_new_privs(true)?;
    Ok(dropped)
}

/// The system calls `run` never makes once it has started: no program is executed, no
/// file system mounted, no module loaded, no namespace entered, no other process
/// traced or its memory touched, no identity, clock or host name changed.
fn denied_calls() -> Vec<i64> {
    #[allow(unused_mut, reason = "more on x86_64")]
    let mut calls = vec![
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_adjtimex,
        libc::SYS_clock_adjtime,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
        libc::SYS_personality,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_modify_ldt]);
    calls
}

/// Installs the daemon's own system-call filter in every thread (`SECCOMP_FILTER_FLAG_TSYNC`;
/// later threads inherit it): [`denied_calls`] fail with `EPERM`, everything else is
/// allowed. Called once `run` has started (after the loads, the pins and the mount of
/// bpffs). A denylist, not the unit's allowlist: the unit's filter applies under
/// systemd (docs/operations.md); this one is what a daemon started by hand, or in a
/// container, keeps. Returns how many calls are denied.
pub(crate) fn deny_unneeded_calls() -> anyhow::Result<usize> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        other => anyhow::bail!("no system-call filter is built for {other}"),
    };
    let calls = denied_calls();
    let rules = calls.iter().map(|call| (*call, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter_all_threads(&program)?;
    Ok(calls.len())
}
