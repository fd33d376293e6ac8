//! Errors of `ironclad-policy`.

use std::fmt;
use std::path::PathBuf;

use ipnetwork::IpNetwork;

/// Where a policy value came from: its field path and, when it was read from a file, its
/// line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Origin {
    /// The field, written as its path in the policy (`shield.deny[2]`).
    pub field: String,
    /// Line and column in the source file, if any.
    pub at: Option<(u64, u64)>,
}

impl Origin {
    /// An origin without a file position.
    pub fn field(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            at: None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field)
    }
}

/// A policy that cannot be compiled. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A CIDR has bits set below its prefix length (`10.0.0.1/8`).
    #[error("{origin}: `{cidr}` has host bits set; did you mean `{network}`?")]
    HostBitsSet {
        /// Where in the policy.
        origin: Origin,
        /// As written.
        cidr: IpNetwork,
        /// The network it probably means.
        network: IpNetwork,
    },
    /// The same prefix is both denied and allowed.
    #[error("{origin}: `{cidr}` is also listed at {other}, with the opposite action")]
    Conflict {
        /// Where in the policy.
        origin: Origin,
        /// The prefix.
        cidr: IpNetwork,
        /// Where it was listed first.
        other: String,
    },
    /// More entries than the kernel map holds.
    #[error("{origin}: {count} entries exceed the limit of {limit}")]
    TooMany {
        /// Where in the policy.
        origin: Origin,
        /// How many the policy has.
        count: usize,
        /// The limit.
        limit: u32,
    },
    /// A value is out of its allowed range or not one of the allowed words.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where in the policy.
        origin: Origin,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl PolicyError {
    /// Where in the policy the problem is, to be completed (a position found later).
    pub fn origin_mut(&mut self) -> &mut Origin {
        match self {
            Self::HostBitsSet { origin, .. }
            | Self::Conflict { origin, .. }
            | Self::TooMany { origin, .. }
            | Self::Invalid { origin, .. } => origin,
        }
    }

    /// Where in the policy the problem is.
    pub fn origin(&self) -> &Origin {
        match self {
            Self::HostBitsSet { origin, .. }
            | Self::Conflict { origin, .. }
            | Self::TooMany { origin, .. }
            | Self::Invalid { origin, .. } => origin,
        }
    }
}

/// One problem in a policy file, rendered as `FILE:LINE:COLUMN: message`, or
/// `FILE: message` for a problem with the whole file (line 0).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// Line, 1-based (0: the whole file, no position).
    pub line: u64,
    /// Column, 1-based (0 when unknown).
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// True for a problem with the whole file (it cannot be read, is not a regular
    /// file, is too large, is not a database) rather than with a line of it.
    pub fn is_whole_file(&self) -> bool {
        self.line == 0
    }
}

/// The longest message a [`Diagnostic`] prints (characters).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `text` as it may be shown on a terminal or in a log: control characters (terminal
/// escapes, newlines) written as escapes, and at most `max` characters, then how many
/// more there were.
///
/// ```
/// use ironclad_policy::error::excerpt;
/// assert_eq!(excerpt("10.0.0.1\x1b[2J", 80), "10.0.0.1\\u{1b}[2J");
/// assert_eq!(excerpt(&"x".repeat(100), 10), "xxxxxxxxxx… (90 more characters)");
/// ```
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown == max {
            let rest = text.chars().count() - max;
            out.push_str(&format!("… ({rest} more characters)"));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages quote what the file says: a 10 MB line or terminal escapes in a feed
        // must not reach the terminal as they are.
        let message = excerpt(&self.message, MAX_MESSAGE_CHARS);
        if self.is_whole_file() {
            return write!(f, "{}: {message}", self.path.display());
        }
        write!(
            f,
            "{}:{}:{}: {message}",
            self.path.display(),
            self.line,
            self.column,
        )
    }
}

/// A policy file that could not be loaded: every problem found, each with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
#[non_exhaustive]
pub struct ConfigError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}
