//! Commit-confirm reloads: with a window set, every reload is provisional. Unless the
//! operator confirms before the deadline, the agent applies the previous policy again
//! by itself: a reload that locks the operator out undoes itself.
//!
//! The agent writes its pid to `RUN_DIR/NAME.pid` and, while a reload waits,
//! `RUN_DIR/pending-confirmation` (JSON: the deadline and the policy file).
//! [`confirm`], run from another process, sends SIGUSR1 and waits for the pending file
//! to go. Several reloads inside one window keep the policy from before the first as
//! the one to return to.
//!
//! The window is generic over what a rollback puts back (`S`): the agent decides which
//! parts of its policy are worth restoring.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{io_error, AgentError, Result};

/// The pending-confirmation file's name inside the run directory.
pub const PENDING_FILE: &str = "pending-confirmation";
/// How the last window ended (`confirmed` or `rolled back`).
pub const OUTCOME_FILE: &str = "last-outcome";

/// What [`ConfirmWindow::poll`] found.
#[derive(Debug)]
pub enum WindowOutcome<S> {
    /// The operator confirmed the pending policy.
    Confirmed,
    /// The deadline passed: apply this again.
    Expired(S),
}

#[derive(Debug)]
struct Pending<S> {
    deadline: Instant,
    previous: S,
}

/// The confirmation window of a running agent. Dropping it removes its files.
#[derive(Debug)]
pub struct ConfirmWindow<S> {
    window: Duration,
    run_dir: PathBuf,
    pid_file: PathBuf,
    confirm: Arc<AtomicBool>,
    pending: Option<Pending<S>>,
}

impl<S> ConfirmWindow<S> {
    /// Starts watching for confirmations (SIGUSR1) and writes `run_dir/NAME.pid`.
    pub fn start(window: Duration, run_dir: &Path, name: &str) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(io_error(run_dir))?;
        let confirm = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, confirm.clone()).map_err(
            |source| AgentError::Signal {
                signal: "SIGUSR1",
                source,
            },
        )?;
        let pid_file = run_dir.join(format!("{name}.pid"));
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(io_error(&pid_file))?;
        let _ = std::fs::remove_file(run_dir.join(PENDING_FILE));
        let _ = std::fs::remove_file(run_dir.join(OUTCOME_FILE));
        Ok(Self {
            window,
            run_dir: run_dir.to_path_buf(),
            pid_file,
            confirm,
            pending: None,
        })
    }

    /// A reload is about to replace `current` (from the policy file `config`):
    /// remember it, unless an earlier reload of this window already did, and start the
    /// window. Returns the deadline.
    pub fn provisional(&mut self, current: S, config: &Path) -> SystemTime {
        let deadline = Instant::now() + self.window;
        let previous = match self.pending.take() {
            Some(pending) => pending.previous,
            None => current,
        };
        self.pending = Some(Pending { deadline, previous });
        self.confirm.store(false, Ordering::Relaxed);
        let _ = std::fs::remove_file(self.run_dir.join(OUTCOME_FILE));
        let wall = SystemTime::now() + self.window;
        let unix = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let record = serde_json::json!({
            "deadline_unix": unix,
            "config": config.display().to_string(),
        });
        if let Err(e) = std::fs::write(self.run_dir.join(PENDING_FILE), record.to_string()) {
            tracing::warn!("writing the pending-confirmation file: {e}");
        }
        wall
    }

    /// Confirms the pending reload from inside the agent (its control API), as a
    /// SIGUSR1 would: the next [`poll`](Self::poll) returns
    /// [`WindowOutcome::Confirmed`]. `Ok(false)` when nothing waits;
    /// [`AgentError::TooLate`] when the deadline has passed (the next `poll` rolls
    /// back).
    pub fn confirm_now(&mut self) -> Result<bool> {
        match &self.pending {
            None => Ok(false),
            Some(pending) if Instant::now() >= pending.deadline => Err(AgentError::TooLate),
            Some(_) => {
                self.confirm.store(true, Ordering::Relaxed);
                Ok(true)
            }
        }
    }

    /// True while a reload waits for confirmation.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Checks for a confirmation or an expired deadline (call it from the control loop).
    pub fn poll(&mut self) -> Option<WindowOutcome<S>> {
        let pending = self.pending.as_ref()?;
        if self.confirm.swap(false, Ordering::Relaxed) {
            self.pending = None;
            self.close("confirmed");
            return Some(WindowOutcome::Confirmed);
        }
        if Instant::now() < pending.deadline {
            return None;
        }
        let pending = self.pending.take()?;
        self.close("rolled back");
        Some(WindowOutcome::Expired(pending.previous))
    }

    /// Ends the window: the outcome first, then the pending file goes.
    fn close(&self, outcome: &str) {
        let _ = std::fs::write(self.run_dir.join(OUTCOME_FILE), outcome);
        let _ = std::fs::remove_file(self.run_dir.join(PENDING_FILE));
    }
}

impl<S> Drop for ConfirmWindow<S> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.run_dir.join(PENDING_FILE));
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Confirms the reload the agent `name` in `run_dir` waits on (the operator's side):
/// signals it and waits up to 10 s for the window to close. An error says why the
/// policy is not confirmed: no such agent, nothing pending, or too late.
pub fn confirm(run_dir: &Path, name: &str) -> Result<()> {
    let pid_file = run_dir.join(format!("{name}.pid"));
    let pending = run_dir.join(PENDING_FILE);
    let not_running = || AgentError::NotRunning {
        pid_file: pid_file.clone(),
    };
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(|_| not_running())?
        .trim()
        .parse()
        .map_err(|_| not_running())?;
    if !pending.exists() {
        return Err(AgentError::NothingPending);
    }
    let target = rustix::process::Pid::from_raw(pid).ok_or_else(not_running)?;
    rustix::process::kill_process(target, rustix::process::Signal::USR1).map_err(|e| {
        AgentError::Kill {
            pid,
            source: e.into(),
        }
    })?;
    let start = Instant::now();
    let limit = Duration::from_secs(10);
    while pending.exists() {
        if start.elapsed() > limit {
            return Err(AgentError::NotAcknowledged {
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let outcome = std::fs::read_to_string(run_dir.join(OUTCOME_FILE)).unwrap_or_default();
    if outcome == "confirmed" {
        Ok(())
    } else {
        Err(AgentError::TooLate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test drives SIGUSR1 to this process: the handler is process-wide, so every
    // window case runs in it, one after another.
    #[test]
    fn a_window_rolls_back_unless_confirmed_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path();
        let config = Path::new("/etc/ironclad/policy.yaml");

        assert!(matches!(
            confirm(run, "agent"),
            Err(AgentError::NotRunning { .. })
        ));
        let mut window =
            ConfirmWindow::<&str>::start(Duration::from_secs(1), run, "agent").expect("start");
        assert_eq!(
            std::fs::read_to_string(run.join("agent.pid")).expect("pid file"),
            format!("{}\n", std::process::id())
        );
        assert!(matches!(
            confirm(run, "agent"),
            Err(AgentError::NothingPending)
        ));
        assert!(window.poll().is_none(), "nothing pending");

        // Two reloads in one window: the policy from before the first comes back.
        window.provisional("v1", config);
        window.provisional("v2", config);
        assert!(window.is_pending());
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join(PENDING_FILE)).expect("pending file"))
                .expect("json");
        assert_eq!(record["config"], "/etc/ironclad/policy.yaml");
        assert!(window.poll().is_none(), "the deadline is ahead");
        std::thread::sleep(Duration::from_millis(1050));
        match window.poll() {
            Some(WindowOutcome::Expired(previous)) => assert_eq!(previous, "v1"),
            other => panic!("expected the rollback to v1, got {other:?}"),
        }
        assert!(!run.join(PENDING_FILE).exists());
        assert_eq!(
            std::fs::read_to_string(run.join(OUTCOME_FILE)).expect("outcome"),
            "rolled back"
        );

        // Confirmed from "another process": the operator's side signals this one while
        // the control loop polls.
        window.provisional("v3", config);
        let dir_path = run.to_path_buf();
        let operator = std::thread::spawn(move || confirm(&dir_path, "agent"));
        let mut outcome = None;
        let start = Instant::now();
        while outcome.is_none() && start.elapsed() < Duration::from_secs(5) {
            outcome = window.poll();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            matches!(outcome, Some(WindowOutcome::Confirmed)),
            "{outcome:?}"
        );
        assert!(operator.join().expect("operator").is_ok());

        drop(window);
        assert!(
            !run.join("agent.pid").exists(),
            "the pid file goes with the window"
        );
    }
}
