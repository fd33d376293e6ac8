//! The daemon's health, for the operator and for probes: which configured features
//! enforce and which do not (with the reason), and a heartbeat from the control loop.
//!
//! The daemon writes `RUN_DIR/health.json` (atomically, every second and on every
//! change); `full_firewall status` prints it beside the pinned counters, `full_firewall
//! health` turns it into an exit code for liveness and readiness probes, and the metrics
//! listener serves the same as `/healthz`, `/readyz` and `ironclad_ready`.
//!
//! Ready means every feature the policy configures runs. A daemon that fails open (the
//! Shield could not attach, say) keeps running and keeps its other features, but it is
//! *not ready*, and says so everywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The file's name inside the run directory.
pub(crate) const HEALTH_FILE: &str = "health.json";
/// How old a heartbeat may be before the daemon counts as hung (the control loop turns
/// ten times a second and writes the file every second).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(10);

/// One feature of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Feature {
    /// Running (enforcing or reporting).
    pub(crate) up: bool,
    /// What runs, or why it does not.
    pub(crate) detail: String,
}

/// What the daemon reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    /// The daemon's pid.
    pub(crate) pid: u32,
    /// Unix time of the control loop's last turn.
    pub(crate) heartbeat_unix: f64,
    /// Every configured feature runs.
    pub(crate) ready: bool,
    /// Configured features by name.
    pub(crate) features: BTreeMap<String, Feature>,
    /// Sinks that lost records (events file, audit log): name → records lost.
    pub(crate) losses: BTreeMap<String, u64>,
}

impl Report {
    /// The features that are configured but not running, with their reasons.
    pub(crate) fn not_running(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(_, f)| !f.up)
            .map(|(name, f)| format!("{name}: {}", f.detail))
            .collect()
    }

    /// Seconds since the last heartbeat.
    pub(crate) fn age(&self) -> f64 {
        (unix_now() - self.heartbeat_unix).max(0.0)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The daemon's side: shared with the metrics listener, written to the run directory.
#[derive(Clone)]
pub(crate) struct Health {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    report: Report,
    file: PathBuf,
    last_write: Option<Instant>,
    dirty: bool,
    failing: bool,
}

impl Health {
    /// A health report written to `run_dir/health.json` (the directory is created). A
    /// run directory that cannot be written is logged, not fatal: the report still
    /// serves `/healthz` and `/readyz`, only `status` and `health` cannot read it.
    pub(crate) fn new(run_dir: &Path) -> Self {
        if let Err(e) = std::fs::create_dir_all(run_dir) {
            tracing::warn!(
                "creating {}: {e}: `full_firewall status` and `health` will not see this daemon",
                run_dir.display()
            );
        }
        Self {
            inner: Arc::new(Mutex::new(Inner {
                report: Report {
                    pid: std::process::id(),
                    heartbeat_unix: unix_now(),
                    ..Report::default()
                },
                file: run_dir.join(HEALTH_FILE),
                last_write: None,
                dirty: true,
                failing: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the feature list (after start-up and after every reload).
    pub(crate) fn features(&self, features: BTreeMap<String, Feature>) {
        let mut inner = self.lock();
        inner.report.ready = features.values().all(|f| f.up);
        if inner.report.features != features {
            inner.report.features = features;
            inner.dirty = true;
        }
    }

    /// Records a sink's total losses.
    pub(crate) fn losses(&self, sink: &str, lost: u64) {
        let mut inner = self.lock();
        if inner.report.losses.get(sink) != Some(&lost) {
            inner.report.losses.insert(sink.to_string(), lost);
            inner.dirty = true;
        }
    }

    /// The control loop turned: the heartbeat moves, and the file is written when a
    /// second has passed or something changed.
    pub(crate) fn beat(&self) {
        let mut inner = self.lock();
        inner.report.heartbeat_unix = unix_now();
        let due = inner
            .last_write
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !(due || inner.dirty) {
            return;
        }
        let tmp = inner
            .file
            .with_extension(format!("json.{}", std::process::id()));
        let text = serde_json::to_vec(&inner.report).unwrap_or_default();
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &inner.file));
        match written {
            // Said once per run of failures, not every second.
            Err(e) if !inner.failing => {
                inner.failing = true;
                tracing::warn!("writing {}: {e}", inner.file.display());
            }
            Err(_) => {}
            Ok(()) => inner.failing = false,
        }
        inner.last_write = Some(Instant::now());
        inner.dirty = false;
    }

    /// A copy of the report as it is now.
    pub(crate) fn report(&self) -> Report {
        self.lock().report.clone()
    }

    /// Removes the file (the daemon stops).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.lock().file);
    }
}

/// Reads a daemon's report from `run_dir`; `None` when no daemon wrote one.
pub(crate) fn read(run_dir: &Path) -> Option<Report> {
    let bytes =
        ironclad_core::fsutil::read_regular_file(&run_dir.join(HEALTH_FILE), 1 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `full_firewall health`: exit 0 when a daemon's control loop turned within
/// [`STALE_AFTER`] (and, with `ready`, every configured feature runs); 1 otherwise, with
/// the reason on stderr. For liveness and readiness probes: it needs no network.
pub(crate) fn probe(run_dir: &Path, ready: bool) -> Result<ExitCode> {
    let Some(report) = read(run_dir) else {
        eprintln!(
            "no daemon health at {}",
            run_dir.join(HEALTH_FILE).display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let alive = std::path::Path::new(&format!("/proc/{}", report.pid)).exists();
    let age = report.age();
    if !alive || age > STALE_AFTER.as_secs_f64() {
        eprintln!(
            "daemon {} is {}: its control loop last turned {age:.1} s ago",
            report.pid,
            if alive { "hung" } else { "gone" }
        );
        return Ok(ExitCode::FAILURE);
    }
    if ready && !report.ready {
        eprintln!(
            "not ready: configured but not running: {}",
            report.not_running().join("; ")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "daemon {} {} (heartbeat {age:.1} s ago)",
        report.pid,
        if report.ready {
            "ready"
        } else {
            "alive, not ready"
        }
    );
    Ok(ExitCode::SUCCESS)
}
