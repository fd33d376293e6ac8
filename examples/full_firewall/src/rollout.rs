//! Safe rollout: `run --confirm-within DURATION` makes every reload provisional
//! ([`ironclad_agent::confirm`]). Unless the operator runs `full_firewall confirm`
//! before the deadline, the daemon applies the previous policy again by itself: a
//! reload that locks the operator out undoes itself.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// Where the daemon keeps its pid, health and pending-confirmation files by default.
pub(crate) const DEFAULT_RUN_DIR: &str = "/run/ironclad";
/// The name of the daemon's pid file (`full_firewall.pid`) in the run directory.
pub(crate) const DAEMON: &str = "full_firewall";

/// `full_firewall confirm`: confirms the reload the daemon in `run_dir` waits on.
pub(crate) fn confirm(run_dir: &Path) -> Result<ExitCode> {
    ironclad_agent::confirm::confirm(run_dir, DAEMON)?;
    println!("confirmed: the new policy stays");
    Ok(ExitCode::SUCCESS)
}
