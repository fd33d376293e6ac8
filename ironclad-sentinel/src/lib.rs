//! Host self-defense with BPF-LSM: the kernel refuses to everyone but the registered
//! agent any change to the agent's files, BPF objects and process, and reports every
//! attempt, plus changes to monitored files, as typed events.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ironclad_bpf::{EventReader, Loader};
//! use ironclad_events::{Event, Fanout, Overflow};
//! use ironclad_sentinel::Sentinel;
//!
//! let loader = Loader::builder().build()?;
//! let sentinel = Sentinel::builder()
//!     .protect("/etc/my-agent")            // config directory, files added later too
//!     .protect("/usr/sbin/my-agent")       // the agent's binary
//!     .monitor("/etc/ssh/sshd_config")     // report changes, allow them
//!     .update_manager("/usr/bin/apt-get")  // may replace protected files
//!     .start(&loader)?;                    // fails closed: no BPF LSM, no start
//! let fanout = Arc::new(Fanout::new());
//! let events = fanout.subscribe("alerts", 1024, Overflow::DropOldest);
//! let reader = EventReader::new(vec![sentinel.event_source()?], fanout)?;
//! reader.poll(std::time::Duration::from_millis(100))?;
//! for event in events.receiver().try_iter() {
//!     if let Event::Sentinel(r) = event {
//!         println!("{} {} by {} ({:?})", r.verdict.name(), r.op.name(), r.actor.comm, r.path);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is refused
//! See `docs/sentinel.md` for the hook table. In short: write-opens, truncation, unlink,
//! rename to or from, hard links, chmod/chown/xattr and new entries on protected paths;
//! mounts over them or over a directory above them; writable fds to protected maps, fds
//! to protected links, write access to their pins; fatal and stop signals and ptrace
//! attach to the agent.
//!
//! # Fail closed
//! [`SentinelBuilder::start`] fails with a typed error when the Sentinel cannot load
//! (no BPF LSM, an audit refusal, a verifier rejection), after writing an alert to the
//! audit log. Only [`SentinelBuilder::allow_unprotected_start`] (logged) lets an agent
//! run without it.
//!
//! # Minimum kernel
//! BPF-LSM: Linux 5.7 with `CONFIG_BPF_LSM=y` and `bpf` in the `lsm=` boot parameter;
//! task storage and `bpf_get_current_task_btf`: 5.11. Tested on Debian's 6.1 kernel.
#![forbid(unsafe_code)]

mod sentinel;

use std::path::{Path, PathBuf};

pub use sentinel::{Sentinel, SentinelBuilder, SentinelMode, SentinelStatus};

/// Where the kernel lists its active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Errors of `ironclad-sentinel`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SentinelError {
    /// The running kernel does not have the BPF LSM active.
    #[error("kernel lacks BPF LSM: {path} has no 'bpf' (active: {active}); boot with lsm=...,bpf on a kernel built with CONFIG_BPF_LSM=y (5.7 or newer)")]
    BpfLsmMissing {
        /// The LSM list file.
        path: PathBuf,
        /// The LSMs it lists.
        active: String,
    },
    /// The LSM list could not be read (securityfs not mounted, or no LSM support).
    #[error("cannot read {path}: {source} (is securityfs mounted? `mount -t securityfs securityfs /sys/kernel/security`)")]
    LsmListUnreadable {
        /// The LSM list file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configured path cannot be used.
    #[error("{what} {path}: {source}")]
    Path {
        /// Which setting (`protect`, `monitor`, `update_manager`, `agent executable`).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// More inodes than the kernel table holds.
    #[error("the protected and monitored paths hold {count} files and directories; the Sentinel's table holds {max}")]
    TooManyNodes {
        /// Inodes found.
        count: usize,
        /// The table's capacity.
        max: u32,
    },
    /// Loading or attaching the programs, or writing their tables, failed.
    #[error("Sentinel: {0}")]
    Bpf(#[from] ironclad_bpf::BpfError),
    /// The kernel refused this process as the agent.
    #[error("Sentinel: {0}")]
    Register(#[from] ironclad_bpf::RegisterError),
    /// The Sentinel started unprotected ([`SentinelBuilder::allow_unprotected_start`]):
    /// nothing runs in the kernel, so there are no events to read.
    #[error("the Sentinel is not running (started unprotected: {reason})")]
    NotRunning {
        /// Why it could not start.
        reason: String,
    },
}

/// The LSM names in the kernel's comma-separated list.
pub fn parse_lsm_list(text: &str) -> Vec<String> {
    text.trim()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks an LSM list read from `path`: `Ok` if it names `bpf`.
pub fn require_bpf_lsm_in(text: &str, path: impl AsRef<Path>) -> Result<(), SentinelError> {
    let active = parse_lsm_list(text);
    if active.iter().any(|l| l == "bpf") {
        Ok(())
    } else {
        Err(SentinelError::BpfLsmMissing {
            path: path.as_ref().to_path_buf(),
            active: active.join(","),
        })
    }
}

/// Checks that the running kernel has the BPF LSM active: `bpf` in its LSM list
/// (`/sys/kernel/security/lsm`). It reads the list only: a kernel that lists `bpf` and
/// still refuses LSM programs (a lockdown that does; this project's test machines do
/// once securityfs is mounted) answers `Ok` here, and [`SentinelBuilder::start`] then
/// fails closed with the kernel's refusal.
pub fn bpf_lsm_status() -> Result<(), SentinelError> {
    let path = Path::new(LSM_LIST);
    let text =
        std::fs::read_to_string(path).map_err(|source| SentinelError::LsmListUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    require_bpf_lsm_in(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_list_with_bpf() {
        let debian = "lockdown,capability,landlock,yama,apparmor,tomoyo,bpf";
        assert!(require_bpf_lsm_in(debian, LSM_LIST).is_ok());
    }

    #[test]
    fn refuses_lists_without_bpf_and_says_what_is_active() {
        for text in ["", "capability,yama", "capability,bpfx,yama\n"] {
            let err = require_bpf_lsm_in(text, LSM_LIST).expect_err(text);
            assert!(matches!(err, SentinelError::BpfLsmMissing { .. }));
            assert!(err.to_string().contains("has no 'bpf'"));
        }
    }
}
