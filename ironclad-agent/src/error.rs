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
}

/// Result type of this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.into();
    move |source| AgentError::Io { path, source }
}
