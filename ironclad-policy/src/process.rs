//! The `processes` policy: what the process cache records and how much it keeps.

/// Ancestors reported per event by default.
pub const DEFAULT_LINEAGE_DEPTH: u32 = 4;
/// The deepest lineage a policy may ask for.
pub const MAX_LINEAGE_DEPTH: u32 = 16;
/// Processes the cache holds by default (live and recently exited).
pub const DEFAULT_CAPACITY: u32 = 65_536;
/// The smallest capacity a policy may set.
pub const MIN_CAPACITY: u32 = 16;
/// Seconds an exited process stays named by default (for events read late).
pub const DEFAULT_RETAIN_EXITED_SECONDS: u32 = 60;

/// The `processes` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessPolicy {
    /// Record argument vectors (bounded by the kernel's capture size).
    pub args: bool,
    /// Extra redaction patterns (regular expressions): a matching argument is replaced
    /// whole. The built-in rules always apply.
    pub redact_args: Vec<String>,
    /// Ancestors reported per event (0..=[`MAX_LINEAGE_DEPTH`]).
    pub lineage_depth: u32,
    /// Processes the cache holds (live and recently exited).
    pub capacity: u32,
    /// Seconds an exited process stays named.
    pub retain_exited_seconds: u32,
}

impl Default for ProcessPolicy {
    fn default() -> Self {
        Self {
            args: true,
            redact_args: Vec::new(),
            lineage_depth: DEFAULT_LINEAGE_DEPTH,
            capacity: DEFAULT_CAPACITY,
            retain_exited_seconds: DEFAULT_RETAIN_EXITED_SECONDS,
        }
    }
}
