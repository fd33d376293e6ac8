//! The Sentinel (BPF-LSM self-defense) as an agent feature. It starts first: it
//! registers the agent's process, and the supervisor puts every feature loaded after it
//! under its protection ([`Feature::as_guard`]).

use ironclad_bpf::{EventSource, Loader};
use ironclad_policy::config::CompiledConfig;
use ironclad_sentinel::{Sentinel, SentinelMode};
use tracing::{error, info};

use super::{Feature, Kind, Reloaded, Start};
use crate::{AgentError, Result};

pub(super) const KIND: Kind = Kind {
    name: "sentinel",
    configured: |config| config.sentinel.is_some(),
    start,
    with_the_agent_only: true,
};

/// The running Sentinel.
struct Running {
    sentinel: Sentinel,
}

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = &config.sentinel else {
        return Err(AgentError::NotConfigured {
            feature: "sentinel",
        });
    };
    let mut builder = Sentinel::builder()
        .monitor_only(policy.monitor_only)
        .allow_unprotected_start(!policy.required);
    for path in &policy.protect {
        builder = builder.protect(path);
    }
    for path in &policy.monitor {
        builder = builder.monitor(path);
    }
    if let Some(manager) = &policy.update_manager {
        builder = builder.update_manager(manager);
    }
    let sentinel = builder
        .start(start.loader)
        .map_err(|source| AgentError::Sentinel {
            context: "the sentinel could not start (sentinel.required is true)",
            source: Box::new(source),
        })?;
    if let SentinelMode::Unprotected { reason } = sentinel.mode() {
        error!("running WITHOUT self-protection (sentinel.required: false): {reason}");
        return Err(AgentError::Unprotected {
            reason: reason.clone(),
        });
    }
    let status = sentinel.status().map_err(|source| AgentError::Sentinel {
        context: "reading the sentinel's status",
        source: Box::new(source),
    })?;
    info!(
        "sentinel {}: {} protected and {} monitored files, {} hooks",
        if policy.monitor_only {
            "monitoring (monitor-only)"
        } else {
            "enforcing"
        },
        status.protected_inodes,
        status.monitored_inodes,
        status.hooks
    );
    Ok(Box::new(Running { sentinel }))
}

impl Feature for Running {
    fn name(&self) -> &'static str {
        "sentinel"
    }

    fn kernel_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let status = self
            .sentinel
            .status()
            .map_err(|source| AgentError::Sentinel {
                context: "reading the sentinel's status",
                source: Box::new(source),
            })?;
        Ok(vec![("events_lost", status.lost_events)])
    }

    fn describe(&self) -> String {
        match self.sentinel.mode() {
            SentinelMode::Unprotected { .. } => "unprotected".to_string(),
            mode => format!("BPF-LSM self-defense: {mode:?}"),
        }
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        // The protected set and the agent's registration are fixed at start.
        Ok(Reloaded::Kept(if config.sentinel.is_none() {
            "reload: the new policy has no sentinel section; the sentinel starts and stops only with the agent, and keeps protecting until the next start"
                .to_string()
        } else {
            String::new()
        }))
    }

    fn event_source(&self) -> Option<Result<EventSource>> {
        Some(
            self.sentinel
                .event_source()
                .map_err(|source| AgentError::Sentinel {
                    context: "reading the sentinel's events",
                    source: Box::new(source),
                }),
        )
    }

    fn as_guard(&mut self) -> Option<&mut Sentinel> {
        Some(&mut self.sentinel)
    }

    fn stop(self: Box<Self>, _loader: &Loader, detach: bool) -> Result<String> {
        if detach {
            self.sentinel
                .stop()
                .map_err(|source| AgentError::Sentinel {
                    context: "stopping the sentinel",
                    source: Box::new(source),
                })?;
            Ok("sentinel stopped; its pins removed".to_string())
        } else {
            Ok("stopping; the sentinel stays pinned and keeps protecting".to_string())
        }
    }
}
