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

/// Where the probes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsAttach {
    /// On the library, for every process that uses it: every SSL call of every process
    /// traps into the kernel (a few microseconds), and a process in scope is captured
    /// from its first call.
    #[default]
    Library,
    /// On each process in scope only (pid-filtered uprobes): a process out of scope
    /// carries no breakpoint and pays nothing. A process that comes into scope later is
    /// attached after its exec or fork is reported, which takes milliseconds: a program
    /// that ends or makes its first TLS call sooner is not captured (counted).
    PerProcess,
}

/// Which instruction of the library each probe traps on.
///
/// The kernel runs most probed instructions out of line and single-steps them (a
/// second trap); it emulates a few (calls, jumps, pushes), which saves that trap. On a
/// virtual machine the single step is the dearest part of a probe (about 11 µs here,
/// docs/performance.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsPlacement {
    /// Where the library allows it, the probes go on the internal function that
    /// `SSL_write_ex` (or `SSL_read_ex`) forwards to unchanged, when its first
    /// instruction is one the kernel emulates; that function serves `SSL_write` too
    /// when `SSL_write` calls it. Checked against the library's bytes; any other
    /// library, and any library that is not x86-64 code (arm64), gets
    /// [`Symbols`](Self::Symbols).
    #[default]
    Auto,
    /// On the four exported functions, whatever their first instruction.
    Symbols,
}

/// What and how much TLS plaintext to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Where the probes go.
    pub attach: TlsAttach,
    /// Which instructions of the library they trap on.
    pub placement: TlsPlacement,
    /// `dlp:`: detectors run over the captured plaintext.
    pub dlp: Option<DlpPolicy>,
}

/// The `tls.dlp` section: which detectors run over the captured plaintext, the user's
/// own patterns, and whether the matches are masked in the TLS events too.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DlpPolicy {
    /// Built-in detectors (all of them when the section names none).
    pub detectors: Vec<crate::dlp::Detector>,
    /// The user's `(name, regex)` patterns.
    pub patterns: Vec<(String, String)>,
    /// Mask every match in the `tls` events' data as well (default `true`): the
    /// secret is then in no event at all.
    pub redact_data: bool,
}

impl Default for DlpPolicy {
    fn default() -> Self {
        Self {
            detectors: crate::dlp::Detector::ALL.to_vec(),
            patterns: Vec::new(),
            redact_data: true,
        }
    }
}

impl DlpPolicy {
    /// The detectors, ready to scan.
    pub fn build(&self) -> Result<crate::dlp::Dlp, crate::dlp::DlpError> {
        crate::dlp::Dlp::new(&self.detectors, &self.patterns)
    }
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self {
            scope: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            bytes_per_second: 0,
            library: None,
            attach: TlsAttach::Library,
            placement: TlsPlacement::Auto,
            dlp: None,
        }
    }
}
