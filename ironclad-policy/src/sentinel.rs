//! The Sentinel policy: what the kernel keeps immutable for everyone but the agent, and
//! what it watches.
//!
//! ```yaml
//! sentinel:
//!   protect: [/etc/ironclad, /usr/local/bin/full_firewall]
//!   monitor: [/etc/ssh/sshd_config, /etc/sudoers]
//!   update_manager: /usr/bin/dpkg   # may replace protected files
//!   mode: enforce                   # or monitor-only: report, never refuse
//!   required: true                  # false: run without it if BPF-LSM is missing
//! ```

use std::path::PathBuf;

/// The `sentinel` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentinelPolicy {
    /// Files and directories only the agent (and the update manager) may change.
    pub protect: Vec<PathBuf>,
    /// Files and directories whose changes are reported (and allowed).
    pub monitor: Vec<PathBuf>,
    /// The executable that may replace protected files (an updater).
    pub update_manager: Option<PathBuf>,
    /// Report what would be refused instead of refusing it.
    pub monitor_only: bool,
    /// Refuse to start without the Sentinel (default). `false` starts unprotected, with
    /// an alert, when BPF-LSM is unavailable.
    pub required: bool,
}

impl Default for SentinelPolicy {
    fn default() -> Self {
        Self {
            protect: Vec::new(),
            monitor: Vec::new(),
            update_manager: None,
            monitor_only: false,
            required: true,
        }
    }
}
