//! Telemetry (DNS answers and bandwidth per process) as an agent feature.

use std::time::{Duration, Instant};

use ironclad_bpf::{EventSource, Loader, Telemetry};
use ironclad_events::Event;
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::telemetry::TelemetryPolicy;
use tracing::{info, warn};

use super::{Feature, Kind, Publisher, Reloaded, Start};
use crate::{AgentError, Result};

pub(super) const KIND: Kind = Kind {
    name: "telemetry",
    configured: |config| config.telemetry.is_some_and(|t| t.dns || t.bandwidth),
    start,
    with_the_agent_only: false,
};

/// Running telemetry and when it last reported bandwidth.
struct Running {
    telemetry: Telemetry,
    policy: TelemetryPolicy,
    last_report: Instant,
}

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = config.telemetry else {
        return Err(AgentError::NotConfigured {
            feature: "telemetry",
        });
    };
    let cgroup = start.settings.cgroup();
    let telemetry =
        Telemetry::start(start.loader, &policy, cgroup).map_err(AgentError::bpf(KIND.name))?;
    info!(
        "telemetry on cgroup {}: dns {}, bandwidth {} (every {} s)",
        cgroup.display(),
        policy.dns,
        policy.bandwidth,
        policy.interval_seconds
    );
    Ok(Box::new(Running {
        telemetry,
        policy,
        last_report: Instant::now(),
    }))
}

impl Running {
    /// One `bandwidth` event per process with traffic.
    fn report(&mut self, out: &Publisher<'_>) {
        self.last_report = Instant::now();
        match self.telemetry.bandwidth() {
            Ok(samples) => {
                for sample in samples {
                    out.publish(Event::Bandwidth(sample));
                }
            }
            Err(e) => warn!("reading bandwidth: {e}"),
        }
    }
}

impl Feature for Running {
    fn name(&self) -> &'static str {
        "telemetry"
    }

    fn verify(&mut self) -> super::Verified {
        super::Verified::of(self.telemetry.verify(), "")
    }

    fn link_ids(&self) -> Vec<u32> {
        self.telemetry.link_ids().unwrap_or_default()
    }

    fn kernel_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let lost = self
            .telemetry
            .lost_dns_events()
            .map_err(AgentError::bpf(KIND.name))?;
        Ok(vec![("events_lost", lost)])
    }

    fn describe(&self) -> String {
        let on = |yes: bool| if yes { "on" } else { "off" };
        format!(
            "dns {}, bandwidth {}",
            on(self.policy.dns),
            on(self.policy.bandwidth)
        )
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        let Some(telemetry) = config.telemetry else {
            return Ok(Reloaded::Stop(
                "reload: the new policy has no telemetry section; telemetry stops: its hooks are detached and its pins removed"
                    .to_string(),
            ));
        };
        // Its settings choose which programs attach: they apply at the next start.
        let changed = telemetry != self.policy;
        Ok(Reloaded::Kept(if changed {
            "reload: telemetry settings changed; they apply at the next start".to_string()
        } else {
            String::new()
        }))
    }

    fn event_source(&self) -> Option<Result<EventSource>> {
        Some(
            self.telemetry
                .event_source()
                .map_err(AgentError::bpf(KIND.name)),
        )
    }

    fn tick(&mut self, out: &Publisher<'_>) {
        let every = Duration::from_secs(u64::from(self.policy.interval_seconds));
        if self.policy.bandwidth && self.last_report.elapsed() >= every {
            self.report(out);
        }
    }

    fn flush(&mut self, out: &Publisher<'_>) {
        if self.policy.bandwidth {
            self.report(out);
        }
    }

    fn stop(self: Box<Self>, loader: &Loader, detach: bool) -> Result<String> {
        drop(self);
        if detach {
            let removed = loader
                .remove_pins(Telemetry::OBJECT)
                .map_err(AgentError::bpf(KIND.name))?;
            Ok(format!("telemetry detached; {removed} pins removed"))
        } else {
            Ok("stopping; telemetry stays pinned".to_string())
        }
    }
}
