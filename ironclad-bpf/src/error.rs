//! Errors of `ironclad-bpf`.

use std::path::PathBuf;

use crate::audit::Violation;

/// An error from loading, auditing, pinning, attaching or updating BPF objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// The process lacks capabilities, or another core-level failure.
    #[error(transparent)]
    Core(#[from] ironclad_core::CoreError),

    /// The helper audit refused the object; nothing of it was loaded into the kernel.
    #[error("audit refused BPF object `{object}`: {}{}; nothing was loaded",
        .violations.first().map(ToString::to_string).unwrap_or_default(),
        if .violations.len() > 1 { format!(" (and {} more)", .violations.len() - 1) } else { String::new() })]
    AuditRejected {
        /// The object.
        object: String,
        /// Every offending call found.
        violations: Vec<Violation>,
    },

    /// The object's ELF could not be parsed for the audit.
    #[error("cannot audit BPF object `{object}`: malformed ELF: {reason}")]
    MalformedObject {
        /// The object.
        object: String,
        /// What was wrong.
        reason: String,
    },

    /// libbpf sees a program the audit did not (fails closed).
    #[error("BPF object `{object}`: libbpf would load program `{program}`, which the audit did not examine; refusing to load")]
    AuditIncomplete {
        /// The object.
        object: String,
        /// The unexamined program.
        program: String,
    },

    /// libbpf could not open the object.
    #[error("cannot open BPF object `{object}`: {source}")]
    Open {
        /// The object.
        object: String,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },

    /// The kernel refused to load the object (the verifier log, if any, is included).
    #[error("kernel refused to load BPF object `{object}`: {source}{}", verifier_suffix(.verifier_log))]
    Load {
        /// The object.
        object: String,
        /// libbpf's error (with the errno).
        #[source]
        source: libbpf_rs::Error,
        /// What libbpf and the verifier printed during the load (last 16 KiB).
        verifier_log: String,
    },

    /// The pin directory is not on a bpffs and it could not be mounted.
    #[error("bpffs is not mounted at {path}: {reason} (mount it with `mount -t bpf bpf {path}`)")]
    BpffsNotMounted {
        /// The directory.
        path: PathBuf,
        /// Why it could not be used or mounted.
        reason: String,
    },

    /// A pin could not be created, reused or removed.
    #[error("pinning {what} at {path}: {reason}")]
    Pin {
        /// What was pinned (`map ic_v4_fast`, `link xdp`...).
        what: String,
        /// The pin path.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },

    /// A pin exists where a map of this build goes, but it is not a compatible map (left
    /// by another version or another program: wrong type, key or value size, capacity or
    /// flags, or not a map). Reusing it would fail; ignoring it would run unprotected.
    #[error(
        "pinned map {path} does not fit this build's `{map}` (pinned: {found}; needed: \
         {expected}): it was left by another version or another program; remove it \
         (`rm {path}`) or let the loader replace it"
    )]
    StalePin {
        /// The map's name in the object.
        map: String,
        /// The pin path.
        path: PathBuf,
        /// What is pinned there.
        found: String,
        /// What this build needs.
        expected: String,
    },

    /// A map the caller named does not exist in the object.
    #[error("BPF object `{object}` has no map `{map}`")]
    NoSuchMap {
        /// The object.
        object: String,
        /// The map name asked for.
        map: String,
    },

    /// A program the caller named does not exist in the object.
    #[error("BPF object `{object}` has no program `{program}`")]
    NoSuchProgram {
        /// The object.
        object: String,
        /// The program name asked for.
        program: String,
    },

    /// A map operation failed in the kernel.
    #[error("{op} on map `{map}` failed: {source}")]
    Map {
        /// `update`, `lookup` or `delete`.
        op: &'static str,
        /// The map.
        map: String,
        /// libbpf's error (with the errno).
        #[source]
        source: libbpf_rs::Error,
    },

    /// A key or value had the wrong size for the map.
    #[error("map `{map}`: {what} is {got} bytes, the map expects {expected}")]
    BadSize {
        /// The map.
        map: String,
        /// `key` or `value`.
        what: &'static str,
        /// Bytes given.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },

    /// The network interface does not exist.
    #[error("network interface `{iface}` not found: {reason}")]
    NoSuchInterface {
        /// The interface name.
        iface: String,
        /// Why it was not found.
        reason: String,
    },

    /// The kernel refused to attach a program.
    #[error("attaching program `{program}` to {target} failed: {source}")]
    Attach {
        /// The program.
        program: String,
        /// Where (`xdp on eth0`).
        target: String,
        /// libbpf's error (with the errno).
        #[source]
        source: libbpf_rs::Error,
    },

    /// A rule set does not fit the IPv4 fast path, and the policy asked for it
    /// (`ipv4_lookup: fast`).
    #[error(transparent)]
    FastPath(#[from] ironclad_policy::fastpath::FastPathError),

    /// Registering an event reader with an async runtime, or waiting on it, failed.
    #[error("waiting for events of {sources}: {source}")]
    EventWait {
        /// The ring buffers the reader reads.
        sources: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// A file system operation on the pin directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn verifier_suffix(log: &str) -> String {
    if log.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- libbpf/verifier log ---\n{}", log.trim_end())
    }
}

/// Result type of this crate.
pub type Result<T, E = BpfError> = std::result::Result<T, E>;
