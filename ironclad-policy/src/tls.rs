//! The TLS-visibility policy: who is captured and how much.

use std::path::PathBuf;

/// Default plaintext reported per SSL call.
pub const DEFAULT_MAX_BYTES: u32 = 16 * 1024;
/// The most plaintext reported per SSL call (64 events of 4 KiB).
pub const MAX_BYTES_LIMIT: u32 = 256 * 1024;

/// Who is captured. Capture is off for everyone not in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsScope {
    /// Processes running this executable (by device and inode, resolved at start: a
    /// file replaced later is a different executable).
    Exe(PathBuf),
    /// Processes whose command name is this (at most 15 bytes, as the kernel keeps it).
    Comm(String),
    /// Processes in this cgroup v2 directory.
    Cgroup(PathBuf),
    /// This process.
    Pid(u32),
}

/// What and how much TLS plaintext to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Who is captured; empty = nobody.
    pub scope: Vec<TlsScope>,
    /// Plaintext bytes reported per SSL call (at most [`MAX_BYTES_LIMIT`]), in 4 KiB
    /// events.
    pub max_bytes: u32,
    /// Per-process budget of reported bytes per second; 0 = no budget.
    pub bytes_per_second: u32,
    /// `libssl.so.3` to probe; found automatically when `None`.
    pub library: Option<PathBuf>,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self {
            scope: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            bytes_per_second: 0,
            library: None,
        }
    }
}
