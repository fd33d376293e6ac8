//! The telemetry policy: which observations to make.

/// Default interval between bandwidth reports, seconds.
pub const DEFAULT_INTERVAL_SECONDS: u32 = 10;

/// The `telemetry` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelemetryPolicy {
    /// Report DNS queries and responses (UDP and TCP port 53) with the process.
    pub dns: bool,
    /// Count bytes and packets per process and report them periodically.
    pub bandwidth: bool,
    /// Seconds between bandwidth reports.
    pub interval_seconds: u32,
}

impl Default for TelemetryPolicy {
    fn default() -> Self {
        Self {
            dns: false,
            bandwidth: false,
            interval_seconds: DEFAULT_INTERVAL_SECONDS,
        }
    }
}
