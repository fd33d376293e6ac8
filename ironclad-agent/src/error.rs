//! Errors of `ironclad-agent`.

use std::path::PathBuf;

/// An error of the agent machinery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file of the run directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// A signal handler could not be installed.
    #[error("installing the {signal} handler: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// No agent with a confirmation window runs with this run directory.
    #[error(
        "no agent with a confirmation window runs here ({pid_file} is missing or holds no pid)"
    )]
    NotRunning {
        /// The pid file looked for.
        pid_file: PathBuf,
    },

    /// The agent could not be signalled.
    #[error("signalling the agent (pid {pid}): {source}")]
    Kill {
        /// The agent's pid.
        pid: i32,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// Nothing waits for confirmation.
    #[error("nothing waits for confirmation (the last reload was confirmed or rolled back)")]
    NothingPending,

    /// The agent did not take the confirmation in time.
    #[error("the agent did not acknowledge the confirmation within {seconds} s")]
    NotAcknowledged {
        /// How long the confirmation waited.
        seconds: u64,
    },

    /// The deadline had passed: the previous policy came back.
    #[error("too late: the deadline passed and the previous policy came back")]
    TooLate,

    /// A feature's kernel part failed to load, attach, read or update.
    #[error("{feature}: {source}")]
    Bpf {
        /// The feature (`shield`, `egress`, ...).
        feature: &'static str,
        /// The error, with its errno where the kernel gave one.
        #[source]
        source: Box<ironclad_bpf::BpfError>,
    },

    /// The Shield could not start: traffic on the interface is not filtered.
    #[error("traffic on {iface} is not filtered: {source}")]
    Unfiltered {
        /// The interface.
        iface: String,
        /// Why.
        #[source]
        source: Box<ironclad_bpf::BpfError>,
    },

    /// The policy has a `shield` section but no interface was given.
    #[error("the policy has a shield section but no interface was given (--iface)")]
    NoInterface,

    /// A feature was started without its policy section.
    #[error("{feature}: the policy has no {feature} section")]
    NotConfigured {
        /// The feature.
        feature: &'static str,
    },

    /// The Sentinel failed.
    #[error("{context}: {source}")]
    Sentinel {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: Box<ironclad_sentinel::SentinelError>,
    },

    /// The Sentinel started unprotected (`sentinel.required: false` on a kernel that
    /// cannot run it).
    #[error("running without self-protection: {reason}")]
    Unprotected {
        /// Why it could not protect.
        reason: String,
    },

    /// Two features the policy asks for cannot run together as configured.
    #[error("{feature}: {source}")]
    Conflict {
        /// The feature that cannot start.
        feature: &'static str,
        /// What the policy asks for, located.
        #[source]
        source: Box<ironclad_policy::PolicyError>,
    },

    /// The IDS rules could not be made ready to match (their prefilter).
    #[error("firewall.ids: {source}")]
    Ids {
        /// Why.
        #[source]
        source: ironclad_policy::ids::IdsError,
    },

    /// The policy names something this host does not have (a masquerade on an
    /// interface with no address of its family).
    #[error("{feature}: {source}")]
    Unresolved {
        /// The feature that cannot start.
        feature: &'static str,
        /// What the policy asks for, located.
        #[source]
        source: Box<ironclad_policy::PolicyError>,
    },
}

impl AgentError {
    /// Wraps a kernel-side error of `feature` (for `map_err`).
    pub(crate) fn bpf(feature: &'static str) -> impl Fn(ironclad_bpf::BpfError) -> Self {
        move |source| Self::Bpf {
            feature,
            source: Box::new(source),
        }
    }

    /// Whether this error stops an agent's start instead of leaving the feature down
    /// (failing open): a Sentinel the policy requires, or a pin left by another build
    /// (enforcing through it could apply rules the policy never had).
    pub fn stops_the_agent(&self) -> bool {
        match self {
            Self::Sentinel { .. } => true,
            Self::Bpf { source, .. } => matches!(**source, ironclad_bpf::BpfError::StalePin { .. }),
            _ => false,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.into();
    move |source| AgentError::Io { path, source }
}
