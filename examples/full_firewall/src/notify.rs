//! systemd's service notifications (`Type=notify`, `WatchdogSec=`), through the
//! `sd-notify` crate. Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.
//!
//! - `READY=1` only when every configured feature runs (enforcing what the policy
//!   says); a daemon that fails open sends `STATUS=not ready: …` instead, so the unit
//!   never becomes active on a host it does not protect. A reload that brings the
//!   missing feature up sends `READY=1` then.
//! - `WATCHDOG=1` from the control loop, at a quarter of `WatchdogSec`: a hung loop is
//!   restarted by systemd.
//! - `STOPPING=1` when a stop signal arrives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ironclad_agent::health::FeatureState;
use sd_notify::NotifyState;
use tracing::debug;

/// What the daemon has told systemd.
pub(crate) struct Notifier {
    watchdog: Option<Duration>,
    last_beat: Instant,
    ready_sent: bool,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub(crate) fn from_env() -> Self {
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 4).max(Duration::from_millis(1)));
        Self {
            watchdog,
            last_beat: Instant::now(),
            ready_sent: false,
        }
    }

    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            debug!("systemd notification not sent: {e}");
        }
    }

    /// Says what runs: `READY=1` (once) when every configured feature is up, a
    /// `STATUS=` line either way.
    pub(crate) fn features(&mut self, states: &BTreeMap<String, FeatureState>) {
        let down: Vec<String> = states
            .iter()
            .filter(|(_, f)| !f.up)
            .map(|(name, f)| format!("{name} ({})", f.detail))
            .collect();
        if down.is_empty() {
            let up: Vec<&str> = states.keys().map(String::as_str).collect();
            let status = format!("enforcing: {}", up.join(", "));
            if self.ready_sent {
                Self::send(&[NotifyState::Status(&status)]);
            } else {
                self.ready_sent = true;
                Self::send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
        } else {
            let status = format!("not ready: {}", down.join("; "));
            Self::send(&[NotifyState::Status(&status)]);
        }
    }

    /// Once per turn of the control loop: `WATCHDOG=1` when due.
    pub(crate) fn beat(&mut self) {
        if let Some(every) = self.watchdog {
            if self.last_beat.elapsed() >= every {
                self.last_beat = Instant::now();
                Self::send(&[NotifyState::Watchdog]);
            }
        }
    }

    /// The daemon is stopping.
    pub(crate) fn stopping(&self) {
        Self::send(&[NotifyState::Stopping]);
    }
}
