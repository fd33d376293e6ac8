//! Safe rollout: `run --confirm-within DURATION` makes every reload provisional. Unless
//! the operator runs `full_firewall confirm` before the deadline, the daemon applies the
//! previous policy again by itself: a reload that locks the operator out undoes itself.
//!
//! The daemon writes its pid to `RUN_DIR/full_firewall.pid` and, while a reload waits,
//! `RUN_DIR/pending-confirmation` (JSON: the deadline and the policy file). `confirm`
//! sends SIGUSR1 and waits for the pending file to go. Several reloads inside one
//! window keep the policy from before the first as the one to return to.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ironclad_policy::egress::CompiledEgress;
use ironclad_policy::shield::CompiledShield;

/// Where the daemon keeps its pid and pending-confirmation files by default.
pub(crate) const DEFAULT_RUN_DIR: &str = "/run/ironclad";
const PID_FILE: &str = "full_firewall.pid";
const PENDING_FILE: &str = "pending-confirmation";
/// How the last window ended: `confirmed` or `rolled back`.
const OUTCOME_FILE: &str = "last-outcome";

/// The parts of a policy a rollback puts back.
#[derive(Clone, Default)]
pub(crate) struct Applied {
    /// The Shield policy, if the daemon runs the Shield.
    pub(crate) shield: Option<CompiledShield>,
    /// The egress policy, if the daemon runs the egress firewall.
    pub(crate) egress: Option<CompiledEgress>,
}

/// What [`Rollout::poll`] found.
pub(crate) enum Outcome {
    /// The operator confirmed the pending policy.
    Confirmed,
    /// The deadline passed: apply this again.
    Expired(Box<Applied>),
}

struct Pending {
    deadline: Instant,
    previous: Applied,
}

/// The confirmation window of a running daemon.
pub(crate) struct Rollout {
    window: Duration,
    run_dir: PathBuf,
    confirm: Arc<AtomicBool>,
    pending: Option<Pending>,
}

impl Rollout {
    /// Starts watching for confirmations (SIGUSR1) and writes the pid file.
    pub(crate) fn start(window: Duration, run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let confirm = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, confirm.clone())
            .context("installing the SIGUSR1 handler")?;
        std::fs::write(run_dir.join(PID_FILE), format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", run_dir.join(PID_FILE).display()))?;
        let _ = std::fs::remove_file(run_dir.join(PENDING_FILE));
        let _ = std::fs::remove_file(run_dir.join(OUTCOME_FILE));
        Ok(Self {
            window,
            run_dir: run_dir.to_path_buf(),
            confirm,
            pending: None,
        })
    }

    /// A reload is about to replace `current`: remember it (unless an earlier reload of
    /// this window already did) and start the window. Returns the deadline.
    pub(crate) fn provisional(&mut self, current: Applied, config: &Path) -> SystemTime {
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

    /// True while a reload waits for confirmation.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Checks for a confirmation or an expired deadline.
    pub(crate) fn poll(&mut self) -> Option<Outcome> {
        let pending = self.pending.as_ref()?;
        if self.confirm.swap(false, Ordering::Relaxed) {
            self.pending = None;
            self.close("confirmed");
            return Some(Outcome::Confirmed);
        }
        if Instant::now() < pending.deadline {
            return None;
        }
        let pending = self.pending.take()?;
        self.close("rolled back");
        Some(Outcome::Expired(Box::new(pending.previous)))
    }

    /// Ends the window: the outcome first, then the pending file goes.
    fn close(&self, outcome: &str) {
        let _ = std::fs::write(self.run_dir.join(OUTCOME_FILE), outcome);
        let _ = std::fs::remove_file(self.run_dir.join(PENDING_FILE));
    }
}

impl Drop for Rollout {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.run_dir.join(PENDING_FILE));
        let _ = std::fs::remove_file(self.run_dir.join(PID_FILE));
    }
}

/// `full_firewall confirm`: confirms the reload the daemon in `run_dir` waits on.
pub(crate) fn confirm(run_dir: &Path) -> Result<ExitCode> {
    let pid_file = run_dir.join(PID_FILE);
    let pending = run_dir.join(PENDING_FILE);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| {
            format!(
                "no daemon with --confirm-within runs here ({} is missing)",
                pid_file.display()
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pid_file.display()))?;
    if !pending.exists() {
        bail!("nothing waits for confirmation (the last reload was confirmed or rolled back)");
    }
    let pid = rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("{} holds no pid", pid_file.display()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR1)
        .with_context(|| format!("signalling the daemon (pid {})", pid.as_raw_nonzero()))?;
    let start = Instant::now();
    while pending.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the daemon did not acknowledge the confirmation within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let outcome = std::fs::read_to_string(run_dir.join(OUTCOME_FILE)).unwrap_or_default();
    if outcome != "confirmed" {
        bail!("too late: the deadline passed and the previous policy came back");
    }
    println!("confirmed: the new policy stays");
    Ok(ExitCode::SUCCESS)
}
