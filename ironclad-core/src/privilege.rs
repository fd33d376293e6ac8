//! The capabilities Ironclad needs, read from `/proc/self/status`.
//!
//! Loading programs and creating maps needs `CAP_BPF` (and `CAP_PERFMON` for tracing
//! programs), attaching XDP and creating network namespaces needs `CAP_NET_ADMIN`,
//! mounting bpffs and attaching to cgroups needs `CAP_SYS_ADMIN`. Checking up front turns
//! an opaque `EPERM` from the kernel into an error that names what is missing.

use std::path::Path;

use crate::error::CoreError;

/// A Linux capability Ironclad may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// `CAP_NET_ADMIN` (12): attach XDP/TC, configure interfaces and namespaces.
    NetAdmin,
    /// `CAP_SYS_ADMIN` (21): mount bpffs, attach to cgroups, pin objects.
    SysAdmin,
    /// `CAP_SYS_RESOURCE` (24): raise RLIMIT_MEMLOCK on kernels that still charge it.
    SysResource,
    /// `CAP_PERFMON` (38): tracing programs and pointer reads.
    Perfmon,
    /// `CAP_BPF` (39): load programs and create maps.
    Bpf,
}

impl Capability {
    /// The kernel's capability number.
    pub fn number(self) -> u32 {
        match self {
            Self::NetAdmin => 12,
            Self::SysAdmin => 21,
            Self::SysResource => 24,
            Self::Perfmon => 38,
            Self::Bpf => 39,
        }
    }

    /// The capability's name, e.g. `CAP_BPF`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::SysResource => "CAP_SYS_RESOURCE",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What loading and attaching Ironclad's network programs needs.
pub const LOAD_AND_ATTACH: &[Capability] = &[
    Capability::Bpf,
    Capability::Perfmon,
    Capability::NetAdmin,
    Capability::SysAdmin,
];

/// The effective capability set of the current process (`CapEff` in /proc/self/status).
pub fn effective() -> Result<u64, CoreError> {
    effective_from(Path::new("/proc/self/status"))
}

fn effective_from(path: &Path) -> Result<u64, CoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_cap_eff(&text).ok_or_else(|| CoreError::Parse {
        path: path.to_path_buf(),
        what: "no valid CapEff line".to_string(),
    })
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// The capabilities of `needed` that the current process does not have.
pub fn missing(needed: &[Capability]) -> Result<Vec<Capability>, CoreError> {
    let eff = effective()?;
    Ok(missing_in(eff, needed))
}

fn missing_in(eff: u64, needed: &[Capability]) -> Vec<Capability> {
    needed
        .iter()
        .copied()
        .filter(|c| eff & (1u64 << c.number()) == 0)
        .collect()
}

/// Fails with [`CoreError::MissingCapabilities`] naming every capability of `needed`
/// the process lacks, for `operation` (e.g. "loading BPF object `shield`").
pub fn require(operation: &str, needed: &[Capability]) -> Result<(), CoreError> {
    let missing = missing(needed)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CoreError::MissingCapabilities {
            operation: operation.to_string(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn names_exactly_the_missing_capabilities() {
        let only_net_admin = 1u64 << 12;
        let missing = missing_in(only_net_admin, LOAD_AND_ATTACH);
        assert_eq!(
            missing,
            vec![Capability::Bpf, Capability::Perfmon, Capability::SysAdmin]
        );
        let err = CoreError::MissingCapabilities {
            operation: "loading BPF object `shield`".into(),
            missing,
        };
        assert_eq!(
            err.to_string(),
            "loading BPF object `shield` needs CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN \
             (run as root, or grant these capabilities)"
        );
        assert!(missing_in(u64::MAX, LOAD_AND_ATTACH).is_empty());
    }
}
