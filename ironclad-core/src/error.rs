//! Errors of `ironclad-core`.

use std::path::PathBuf;

/// An error from the shared core: reading process or privilege state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A file under /proc (or another system file) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A system file had content this crate could not parse.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// The process lacks capabilities an operation needs.
    #[error("{operation} needs {} (run as root, or grant these capabilities)", missing_names(.missing))]
    MissingCapabilities {
        /// What was attempted.
        operation: String,
        /// The capabilities the process does not have.
        missing: Vec<crate::privilege::Capability>,
    },
}

fn missing_names(missing: &[crate::privilege::Capability]) -> String {
    missing
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}
