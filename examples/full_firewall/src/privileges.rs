//! What `run` keeps of root's powers: the capabilities its features use while running,
//! nothing else. Dropped first thing, before any thread starts (capabilities belong to
//! threads, and every later one inherits the smaller sets), so the listeners a network
//! peer or a local user reaches never hold more.

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
