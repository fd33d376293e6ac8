//! An agent's health, for its operator and for probes: which configured features run
//! and which do not (with the reason), and a heartbeat from the control loop.
//!
//! [`Health`] writes `RUN_DIR/health.json` atomically, every second and on every
//! change; [`read`] and [`probe`] read it from another process (a status command, a
//! liveness or readiness probe that needs no network).
//!
//! Ready means every feature the policy configures runs. An agent that fails open (the
//! Shield could not attach, say) keeps running and keeps its other features, but it is
//! *not ready*, and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name inside the run directory.
pub const HEALTH_FILE: &str = "health.json";

/// How old a heartbeat may be before the agent counts as hung (a control loop that
/// turns ten times a second writes the file every second).
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// One configured feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeatureState {
    /// Running (enforcing or reporting).
    pub up: bool,
    /// What runs, or why it does not.
    pub detail: String,
}

impl FeatureState {
    /// A running feature and what runs (`xdp on eth0`).
    #[must_use]
    pub fn up(detail: impl Into<String>) -> Self {
        Self {
            up: true,
            detail: detail.into(),
        }
    }

    /// A configured feature that does not run, and why.
    #[must_use]
    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            up: false,
            detail: detail.into(),
        }
    }
}

/// A long operation the control loop is in (a reload of a large policy, say), as the
/// agent's progress reporter sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Activity {
    /// The steps running, outermost first (`full_firewall.reload >
    /// ironclad.shield.replace rules=1000001`).
    pub what: String,
    /// Unix time it began.
    pub since_unix: f64,
    /// Unix time this was last confirmed: while it is recent the agent is busy, not
    /// hung.
    pub updated_unix: f64,
}

impl Activity {
    /// `what`, begun at `since`, confirmed now.
    pub fn new(what: impl Into<String>, since: SystemTime) -> Self {
        Self {
            what: what.into(),
            since_unix: since
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            updated_unix: unix_now(),
        }
    }

    /// Seconds it has run.
    pub fn elapsed(&self) -> f64 {
        (unix_now() - self.since_unix).max(0.0)
    }
}

/// How long a busy control loop counts as alive: a step that runs longer (or that
/// stopped confirming) makes the probe fail as a hung loop does.
pub const BUSY_LIMIT: Duration = Duration::from_secs(600);

/// What an agent reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The agent's pid.
    pub pid: u32,
    /// Unix time of the control loop's last turn.
    pub heartbeat_unix: f64,
    /// Every configured feature runs.
    pub ready: bool,
    /// Configured features by name.
    pub features: BTreeMap<String, FeatureState>,
    /// Sinks that lost records (events file, audit log): name → records lost.
    pub losses: BTreeMap<String, u64>,
    /// The long operation running now, if one has run a second or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
}

impl Report {
    /// The features that are configured but not running, with their reasons.
    pub fn not_running(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(_, f)| !f.up)
            .map(|(name, f)| format!("{name}: {}", f.detail))
            .collect()
    }

    /// Seconds since the last heartbeat.
    pub fn age(&self) -> f64 {
        (unix_now() - self.heartbeat_unix).max(0.0)
    }

    /// The heartbeat is recent ([`STALE_AFTER`]).
    pub fn is_fresh(&self) -> bool {
        self.age() <= STALE_AFTER.as_secs_f64()
    }

    /// The control loop is in a long operation that is still confirmed (within
    /// [`STALE_AFTER`]) and has not run past [`BUSY_LIMIT`].
    pub fn is_busy(&self) -> bool {
        self.activity.as_ref().is_some_and(|a| {
            unix_now() - a.updated_unix <= STALE_AFTER.as_secs_f64()
                && a.elapsed() <= BUSY_LIMIT.as_secs_f64()
        })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The agent's side: cheap to clone and share (a metrics listener serves the same
/// report), written to the run directory by [`beat`](Self::beat).
#[derive(Clone)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Health")
            .field("file", &inner.file)
            .field("report", &inner.report)
            .finish()
    }
}

struct Inner {
    report: Report,
    file: PathBuf,
    last_write: Option<Instant>,
    dirty: bool,
    failing: bool,
}

impl Inner {
    /// Writes the report (a temporary file renamed over the old one).
    fn write(&mut self) {
        let tmp = self
            .file
            .with_extension(format!("json.{}", std::process::id()));
        let text = serde_json::to_vec(&self.report).unwrap_or_default();
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file));
        match written {
            // Said once per run of failures, not every second.
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!("writing {}: {e}", self.file.display());
            }
            Err(_) => {}
            Ok(()) => self.failing = false,
        }
        self.last_write = Some(Instant::now());
        self.dirty = false;
    }
}

impl Health {
    /// A health report written to `run_dir/health.json` (the directory is created). A
    /// run directory that cannot be written is logged, not fatal: the report still
    /// serves in-process readers, only other processes cannot read it.
    pub fn new(run_dir: &Path) -> Self {
        if let Err(e) = std::fs::create_dir_all(run_dir) {
            tracing::warn!(
                "creating {}: {e}: status and health probes will not see this agent",
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
    pub fn features(&self, features: BTreeMap<String, FeatureState>) {
        let mut inner = self.lock();
        inner.report.ready = features.values().all(|f| f.up);
        if inner.report.features != features {
            inner.report.features = features;
            inner.dirty = true;
        }
    }

    /// Records a sink's total losses.
    pub fn losses(&self, sink: &str, lost: u64) {
        let mut inner = self.lock();
        if inner.report.losses.get(sink) != Some(&lost) {
            inner.report.losses.insert(sink.to_string(), lost);
            inner.dirty = true;
        }
    }

    /// The long operation running now (`None`: none), written to the file at once:
    /// `status` shows it, and the probe counts a busy loop as alive.
    pub fn activity(&self, activity: Option<Activity>) {
        let mut inner = self.lock();
        if inner.report.activity.is_none() && activity.is_none() {
            return;
        }
        inner.report.activity = activity;
        inner.write();
    }

    /// The control loop turned: the heartbeat moves, and the file is written when a
    /// second has passed or something changed.
    pub fn beat(&self) {
        let mut inner = self.lock();
        inner.report.heartbeat_unix = unix_now();
        let due = inner
            .last_write
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !(due || inner.dirty) {
            return;
        }
        inner.write();
    }

    /// A copy of the report as it is now.
    pub fn report(&self) -> Report {
        self.lock().report.clone()
    }

    /// Removes the file (the agent stops).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.lock().file);
    }
}

/// Reads an agent's report from `run_dir`; `None` when no agent wrote one (or it is not
/// a regular file of at most 1 MiB).
pub fn read(run_dir: &Path) -> Option<Report> {
    let bytes =
        ironclad_core::fsutil::read_regular_file(&run_dir.join(HEALTH_FILE), 1 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a probe of an agent found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// The probe passes.
    pub healthy: bool,
    /// One line for the operator: the state, or why the probe fails.
    pub message: String,
}

/// Probes the agent of `run_dir`: healthy when its process lives and its control loop
/// turned within [`STALE_AFTER`] and, with `ready`, every configured feature runs. For
/// liveness and readiness probes: it needs no network.
pub fn probe(run_dir: &Path, ready: bool) -> Verdict {
    let fail = |message| Verdict {
        healthy: false,
        message,
    };
    let Some(report) = read(run_dir) else {
        return fail(format!(
            "no daemon health at {}",
            run_dir.join(HEALTH_FILE).display()
        ));
    };
    let alive = Path::new(&format!("/proc/{}", report.pid)).exists();
    let age = report.age();
    if alive && !report.is_fresh() && report.is_busy() {
        let activity = report.activity.as_ref().map_or_else(String::new, |a| {
            format!("{} for {:.1} s", a.what, a.elapsed())
        });
        if ready && !report.ready {
            return fail(format!(
                "not ready: configured but not running: {} (busy: {activity})",
                report.not_running().join("; ")
            ));
        }
        return Verdict {
            healthy: true,
            message: format!("daemon {} busy: {activity}", report.pid),
        };
    }
    if !alive || !report.is_fresh() {
        return fail(format!(
            "daemon {} is {}: its control loop last turned {age:.1} s ago",
            report.pid,
            if alive { "hung" } else { "gone" }
        ));
    }
    if ready && !report.ready {
        return fail(format!(
            "not ready: configured but not running: {}",
            report.not_running().join("; ")
        ));
    }
    Verdict {
        healthy: true,
        message: format!(
            "daemon {} {} (heartbeat {age:.1} s ago)",
            report.pid,
            if report.ready {
                "ready"
            } else {
                "alive, not ready"
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(up: bool, detail: &str) -> FeatureState {
        FeatureState {
            up,
            detail: detail.to_string(),
        }
    }

    /// Regression: a heartbeat read back one unit in the last place off (serde_json's
    /// default float parser), so the report read differed from the one written about
    /// one run in a few hundred. The value is the one a CI run met.
    #[test]
    fn a_heartbeat_reads_back_exactly() {
        let report = Report {
            heartbeat_unix: 1_795_516_692.284_504_7,
            ..Report::default()
        };
        let text = serde_json::to_string(&report).expect("json");
        let back: Report = serde_json::from_str(&text).expect("json");
        assert_eq!(
            back.heartbeat_unix.to_bits(),
            report.heartbeat_unix.to_bits(),
            "{text}"
        );
    }

    #[test]
    fn the_report_another_process_reads_is_the_one_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let health = Health::new(dir.path());
        assert_eq!(
            read(dir.path()),
            None,
            "nothing written before the first beat"
        );
        health.features(BTreeMap::from([
            ("shield".to_string(), state(true, "xdp on eth0")),
            ("egress".to_string(), state(false, "no cgroup v2")),
        ]));
        health.losses("events-file", 3);
        health.beat();
        let report = read(dir.path()).expect("a report after a beat");
        assert_eq!(report, health.report());
        assert_eq!(report.pid, std::process::id());
        assert!(!report.ready, "a feature is down");
        assert_eq!(report.not_running(), ["egress: no cgroup v2"]);
        assert_eq!(report.losses.get("events-file"), Some(&3));
        assert!(report.is_fresh());

        let verdict = probe(dir.path(), false);
        assert!(verdict.healthy, "{verdict:?}");
        assert!(verdict.message.contains("alive, not ready"), "{verdict:?}");
        let verdict = probe(dir.path(), true);
        assert!(!verdict.healthy);
        assert_eq!(
            verdict.message,
            "not ready: configured but not running: egress: no cgroup v2"
        );

        // Everything up: ready, written at once (a change does not wait a second).
        health.features(BTreeMap::from([(
            "shield".to_string(),
            state(true, "xdp on eth0"),
        )]));
        health.beat();
        assert!(probe(dir.path(), true).healthy);

        health.remove();
        assert!(!probe(dir.path(), false).healthy);
    }

    #[test]
    fn a_stale_heartbeat_or_a_dead_pid_fails_the_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |report: &Report| {
            let text = serde_json::to_vec(report).expect("json");
            std::fs::write(dir.path().join(HEALTH_FILE), text).expect("write");
        };
        let mut report = Report {
            pid: std::process::id(),
            heartbeat_unix: unix_now() - 60.0,
            ready: true,
            ..Report::default()
        };
        write(&report);
        let verdict = probe(dir.path(), false);
        assert!(!verdict.healthy);
        assert!(verdict.message.contains("is hung"), "{verdict:?}");

        // A pid no process has (beyond pid_max).
        report.pid = u32::MAX;
        report.heartbeat_unix = unix_now();
        write(&report);
        let verdict = probe(dir.path(), false);
        assert!(verdict.message.contains("is gone"), "{verdict:?}");
    }

    #[test]
    fn a_loop_busy_with_a_confirmed_operation_is_alive_until_it_stops_confirming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |report: &Report| {
            let text = serde_json::to_vec(report).expect("json");
            std::fs::write(dir.path().join(HEALTH_FILE), text).expect("write");
        };
        let began = SystemTime::now() - Duration::from_secs(30);
        let mut report = Report {
            pid: std::process::id(),
            heartbeat_unix: unix_now() - 30.0,
            ready: true,
            activity: Some(Activity::new(
                "full_firewall.reload > ironclad.shield.replace",
                began,
            )),
            ..Report::default()
        };
        write(&report);
        let verdict = probe(dir.path(), true);
        assert!(verdict.healthy, "{verdict:?}");
        assert!(
            verdict
                .message
                .contains("busy: full_firewall.reload > ironclad.shield.replace for 3"),
            "{verdict:?}"
        );
        // Its reporter stopped confirming it: hung after all.
        if let Some(a) = report.activity.as_mut() {
            a.updated_unix = unix_now() - 20.0;
        }
        write(&report);
        assert!(probe(dir.path(), false).message.contains("is hung"));
        // Past the busy limit: hung too.
        report.activity = Some(Activity::new(
            "full_firewall.reload",
            SystemTime::now() - BUSY_LIMIT - Duration::from_secs(1),
        ));
        write(&report);
        assert!(!probe(dir.path(), false).healthy);
        // The report reads back with the activity; one without it has none.
        let back = read(dir.path()).expect("report");
        assert!(back.activity.is_some());
        let old: Report = serde_json::from_str(
            r#"{"pid":1,"heartbeat_unix":1.0,"ready":true,"features":{},"losses":{}}"#,
        )
        .expect("a report without activity");
        assert!(old.activity.is_none());
    }
}
