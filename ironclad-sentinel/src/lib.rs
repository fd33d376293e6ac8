//! Host self-defense with BPF-LSM: the preconditions every Sentinel feature relies on.
//!
//! BPF-LSM programs load only when the running kernel lists `bpf` among its active
//! LSMs (`CONFIG_BPF_LSM=y` and `lsm=...,bpf` at boot). [`bpf_lsm_status`] answers that
//! question with a typed error that says what is missing, so an agent can fail closed
//! (or, explicitly, run monitor-only) with a message an operator can act on.
//!
//! ```
//! use ironclad_sentinel::{parse_lsm_list, SentinelError};
//!
//! let active = parse_lsm_list("lockdown,capability,landlock,yama,apparmor,bpf\n");
//! assert!(active.iter().any(|l| l == "bpf"));
//!
//! let err = ironclad_sentinel::require_bpf_lsm_in("capability,yama\n", "/sys/kernel/security/lsm")
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "kernel lacks BPF LSM: /sys/kernel/security/lsm has no 'bpf' (active: capability,yama); \
//!      boot with lsm=...,bpf on a kernel built with CONFIG_BPF_LSM=y (5.7 or newer)"
//! );
//! ```
//!
//! # Minimum kernel
//! BPF-LSM: Linux 5.7 with `CONFIG_BPF_LSM=y` and `bpf` in the `lsm=` boot parameter.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

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

/// Checks that the running kernel has the BPF LSM active.
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
