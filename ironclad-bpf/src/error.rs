//! Errors of `ironclad-bpf`.

use std::fmt;
use std::io;
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
        source: KernelError,
    },

    /// The kernel refused to load the object (the verifier log, if any, is included).
    #[error("kernel refused to load BPF object `{object}`: {source}{}", verifier_suffix(.verifier_log))]
    Load {
        /// The object.
        object: String,
        /// libbpf's error (with the errno).
        #[source]
        source: KernelError,
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
        /// The kernel's or libbpf's error, when the failure came from a call (its errno
        /// through [`KernelError::errno`]).
        #[source]
        source: Option<KernelError>,
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

    /// The running kernel is older than a feature needs.
    #[error("{feature} needs Linux {needs} or newer; this kernel is {running}")]
    KernelTooOld {
        /// What needs it.
        feature: &'static str,
        /// The first kernel release that has it.
        needs: &'static str,
        /// The running kernel's release (`uname -r`).
        running: String,
        /// What the kernel answered.
        #[source]
        source: Option<KernelError>,
    },

    /// The running kernel lacks helpers, map types or program types the object needs
    /// (read from its BTF before anything was loaded: [`crate::kernel`]).
    #[error("BPF object `{object}` needs what this kernel ({running}) lacks: {}", lacks.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    KernelLacks {
        /// The object.
        object: String,
        /// The running kernel's release (`uname -r`).
        running: String,
        /// Each missing piece and what needs it.
        lacks: Vec<crate::kernel::Lack>,
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

    /// A program of the object was left out when it loaded (the kernel lacks what it
    /// hooks), so it cannot be attached.
    #[error("program `{program}` of BPF object `{object}` is {reason}")]
    NotLoaded {
        /// The object.
        object: String,
        /// The program.
        program: String,
        /// Why it was left out (`not loaded: the kernel has no function X`).
        reason: String,
    },

    /// The kernel's information about a loaded program could not be read.
    #[error("reading what the kernel holds of program `{program}` of BPF object `{object}`")]
    ProgramInfo {
        /// The object.
        object: String,
        /// The program.
        program: String,
        /// libbpf's error (with the errno).
        #[source]
        source: KernelError,
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
        source: KernelError,
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
        source: KernelError,
    },

    /// A rule set does not fit the IPv4 fast path, and the policy asked for it
    /// (`ipv4_lookup: fast`).
    #[error(transparent)]
    FastPath(#[from] ironclad_policy::fastpath::FastPathError),

    /// A rule set does not fit the IPv6 fast path, and the policy asked for it
    /// (`ipv6_lookup: fast`).
    #[error(transparent)]
    FastPath6(#[from] ironclad_policy::fastpath6::FastPath6Error),

    /// Every Shield rule counter index is in use: a new rule has none (nothing was
    /// written).
    #[error("every Shield rule index (1..{max}) is in use: no room for another rule")]
    RulesFull {
        /// How many indexes there are.
        max: u32,
    },

    /// A configuration value the kernel cannot hold (checked before anything is
    /// written: the live configuration stays).
    #[error("configuration `{field}`: {reason}")]
    InvalidConfig {
        /// The field (`rate_limit.pps`, `syn_flood.ports`, `ids.depth`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// Firewall rules the kernel program cannot enforce (checked before anything is
    /// written: the live rules stay).
    #[error("firewall rules refused: {}", problems.join("; "))]
    FirewallRules {
        /// Each problem, naming the rule.
        problems: Vec<String>,
    },

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

/// An error of a call into libbpf or the kernel, with its errno when it has one.
///
/// This wraps the error of the libbpf bindings so that their type stays out of this
/// crate's public API. It is a leaf: its message is the whole chain libbpf reported
/// (its context and the system error), and the errno and kind are kept as values.
///
/// ```
/// # use ironclad_bpf::error::KernelError;
/// let e = KernelError::from(std::io::Error::from_raw_os_error(libc::EPERM));
/// assert_eq!(e.errno(), Some(libc::EPERM));
/// assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
/// ```
///
/// The bindings' error type does not convert into it outside this crate (nothing public
/// names libbpf-rs, so its version can change under an embedder):
///
/// ```compile_fail
/// fn convert(e: libbpf_rs::Error) -> ironclad_bpf::error::KernelError {
///     e.into()
/// }
/// ```
pub struct KernelError {
    errno: Option<i32>,
    kind: io::ErrorKind,
    source: libbpf_rs::Error,
}

impl KernelError {
    /// The errno of the failed call (positive, e.g. `libc::EPERM`), when the error came
    /// from a system call or a libbpf function returning one.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The error's classification, as `std::io` names it.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }

    /// The same error as an [`io::Error`]: from the errno when there is one (so
    /// `raw_os_error` works), otherwise of [`kind`](Self::kind) with this message.
    pub fn to_io_error(&self) -> io::Error {
        match self.errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::new(self.kind, self.to_string()),
        }
    }
}

/// The errno libbpf-rs keeps inside its error without an accessor for it: the
/// `io::Error` it wraps prints as std's `... (os error N)`, the only way to reach N.
/// Context it adds is printed before it, so the last occurrence is the one.
fn errno_of(display: &str) -> Option<i32> {
    let start = display.rfind("(os error ")? + "(os error ".len();
    let digits: String = display[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|n: &i32| *n > 0)
}

fn io_kind(kind: libbpf_rs::ErrorKind) -> io::ErrorKind {
    use libbpf_rs::ErrorKind as K;
    match kind {
        K::NotFound => io::ErrorKind::NotFound,
        K::PermissionDenied => io::ErrorKind::PermissionDenied,
        K::AlreadyExists => io::ErrorKind::AlreadyExists,
        K::WouldBlock => io::ErrorKind::WouldBlock,
        K::InvalidInput => io::ErrorKind::InvalidInput,
        K::InvalidData => io::ErrorKind::InvalidData,
        K::TimedOut => io::ErrorKind::TimedOut,
        K::WriteZero => io::ErrorKind::WriteZero,
        K::Interrupted => io::ErrorKind::Interrupted,
        K::Unsupported => io::ErrorKind::Unsupported,
        K::UnexpectedEof => io::ErrorKind::UnexpectedEof,
        K::OutOfMemory => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    }
}

impl KernelError {
    /// Classifies an error of libbpf-rs (crate-private: the public API never names
    /// libbpf-rs, so its version can change without breaking embedders).
    pub(crate) fn from_libbpf(source: libbpf_rs::Error) -> Self {
        // `{:#}` prints the context layers and the innermost error, where the errno is.
        let errno = errno_of(&format!("{source:#}"));
        let kind = match errno {
            Some(errno) => io::Error::from_raw_os_error(errno).kind(),
            None => io_kind(source.kind()),
        };
        Self {
            errno,
            kind,
            source,
        }
    }
}

impl From<io::Error> for KernelError {
    fn from(error: io::Error) -> Self {
        let errno = error.raw_os_error();
        let kind = error.kind();
        Self {
            errno,
            kind,
            source: libbpf_rs::Error::from(error),
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole chain: libbpf's plain Display stops at its outermost context, which
        // hides the errno's text.
        write!(f, "{:#}", self.source)
    }
}

impl fmt::Debug for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelError")
            .field("errno", &self.errno)
            .field("kind", &self.kind)
            .field("message", &self.source.to_string())
            .finish()
    }
}

impl std::error::Error for KernelError {}

impl BpfError {
    /// The errno behind this error, when a kernel or libbpf call failed with one (for
    /// example `EPERM` without the capabilities, `ENOENT` for a missing pin).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Open { source, .. }
            | Self::Load { source, .. }
            | Self::Map { source, .. }
            | Self::Attach { source, .. }
            | Self::Pin {
                source: Some(source),
                ..
            }
            | Self::KernelTooOld {
                source: Some(source),
                ..
            } => source.errno(),
            Self::EventWait { source, .. } | Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::ErrorExt as _;

    #[test]
    fn the_errno_survives_libbpfs_context_layers() {
        let inner = libbpf_rs::Error::from(io::Error::from_raw_os_error(libc::EPERM));
        let layered: std::result::Result<(), _> = Err(inner);
        let layered = layered
            .context("failed to load object")
            .context("opening skeleton")
            .err();
        let Some(layered) = layered else {
            panic!("the error vanished");
        };
        let e = KernelError::from_libbpf(layered);
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(e.to_io_error().raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            e.to_string(),
            format!(
                "opening skeleton: failed to load object: {}",
                io::Error::from_raw_os_error(libc::EPERM)
            )
        );
        let bpf = BpfError::Map {
            op: "update",
            map: "ic_v4_fast".into(),
            source: e,
        };
        assert_eq!(bpf.errno(), Some(libc::EPERM));
    }

    #[test]
    fn an_error_without_errno_keeps_its_kind() {
        let e = KernelError::from(io::Error::new(io::ErrorKind::InvalidData, "bad ELF"));
        assert_eq!(e.errno(), None);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_io_error().kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "bad ELF");
        assert_eq!(errno_of("x (os error 13) then (os error 2)"), Some(2));
        assert_eq!(errno_of("no errno here"), None);
        assert_eq!(errno_of("(os error )"), None);
    }
}
