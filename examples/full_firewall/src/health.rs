//! `full_firewall health`: the daemon's health report ([`ironclad_agent::health`],
//! written to `RUN_DIR/health.json` by the control loop) as an exit code for liveness
//! and readiness probes.

use std::path::Path;
use std::process::ExitCode;

/// Exit 0 when the daemon's control loop turned within
/// [`STALE_AFTER`](ironclad_agent::health::STALE_AFTER) (and, with `ready`, every
/// configured feature runs); 1 otherwise, with the reason on stderr. It needs no
/// network.
pub(crate) fn probe(run_dir: &Path, ready: bool) -> ExitCode {
    let verdict = ironclad_agent::health::probe(run_dir, ready);
    if verdict.healthy {
        println!("{}", verdict.message);
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", verdict.message);
        ExitCode::FAILURE
    }
}
