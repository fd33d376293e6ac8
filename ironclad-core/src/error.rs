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

/// An error and its causes in one line, each text once.
///
/// The Ironclad crates' messages include their source's text (so that printing an
/// error alone says everything) and also return it as
/// [`source`](std::error::Error::source) (so that it stays typed). A reporter that
/// walks the chain would print each cause twice; this one skips a cause whose text the
/// line already holds.
///
/// ```
/// use std::io;
/// # #[derive(Debug)]
/// # struct Wrapped(io::Error);
/// # impl std::fmt::Display for Wrapped {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
/// #         write!(f, "/var/log/audit.jsonl: {}", self.0)
/// #     }
/// # }
/// # impl std::error::Error for Wrapped {
/// #     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
/// # }
/// let e = Wrapped(io::Error::new(io::ErrorKind::PermissionDenied, "Permission denied"));
/// assert_eq!(
///     ironclad_core::error::report(&e),
///     "/var/log/audit.jsonl: Permission denied"
/// );
/// ```
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}
