//! The stateful firewall (tcx ingress and egress on the policy's interfaces, with
//! connection tracking) as an agent feature.

use std::time::{Duration, Instant};

use ironclad_bpf::{Firewall, FirewallAttachment, FirewallSettings, LoadedObject, Loader};
use ironclad_events::Event;
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::firewall::FirewallPolicy;
use tracing::{info, warn};

use super::{Feature, Kind, Publisher, Reloaded, Snapshot, Start};
use crate::{AgentError, Result};

pub(super) const KIND: Kind = Kind {
    name: "firewall",
    configured: |config| config.firewall.is_some(),
    start,
    with_the_agent_only: false,
};

/// How often idle connections are swept out of the table. The programs already treat
/// an expired entry as absent; the sweep gives its room back.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The running firewall: the object and its (pinned) hooks, one per interface.
struct Running {
    firewall: Firewall,
    attachments: Vec<FirewallAttachment>,
    last_sweep: Instant,
}

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = &config.firewall else {
        return Err(AgentError::NotConfigured { feature: KIND.name });
    };
    let firewall = Firewall::load_with_table(start.loader, policy.table_size)
        .map_err(AgentError::bpf(KIND.name))?;
    // Rules and settings in one write, before any hook exists: the first packet
    // already meets the policy.
    let report = firewall
        .apply(&FirewallSettings::from_policy(policy), &policy.rules)
        .map_err(AgentError::bpf(KIND.name))?;
    let mut attachments = Vec::new();
    for iface in &policy.interfaces {
        match firewall.attach_pinned(&iface.name) {
            Ok(a) => attachments.push(a),
            Err(e) => {
                // Not half-attached: what was attached goes again.
                for a in attachments {
                    let _ = a.detach();
                }
                return Err(AgentError::Unfiltered {
                    iface: iface.name.clone(),
                    source: Box::new(e),
                });
            }
        }
    }
    info!(
        "firewall on {}: {} rules, default inbound {:?}, outbound {:?}, {}{}",
        names(&attachments),
        report.rules,
        policy.default_inbound,
        policy.default_outbound,
        if policy.stateful {
            format!("stateful ({} connections)", policy.table_size)
        } else {
            "stateless".to_string()
        },
        if policy.dry_run { ", dry-run" } else { "" },
    );
    Ok(Box::new(Running {
        firewall,
        attachments,
        last_sweep: Instant::now(),
    }))
}

fn names(attachments: &[FirewallAttachment]) -> String {
    attachments
        .iter()
        .map(FirewallAttachment::iface)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Running {
    fn apply(&self, policy: &FirewallPolicy) -> Result<ironclad_bpf::FirewallReport> {
        self.firewall
            .apply(&FirewallSettings::from_policy(policy), &policy.rules)
            .map_err(AgentError::bpf(KIND.name))
    }
}

impl Feature for Running {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn describe(&self) -> String {
        let mode = match self.firewall.settings() {
            Ok(s) if s.dry_run => "dry-run",
            Ok(_) => "enforce",
            Err(_) => "unknown mode",
        };
        format!(
            "tcx ingress and egress on {} {mode}",
            names(&self.attachments)
        )
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        let Some(policy) = &config.firewall else {
            return Ok(Reloaded::Kept(
                "reload: the new policy has no firewall section; the firewall is left as it is"
                    .to_string(),
            ));
        };
        // Interfaces the new policy adds are attached first (under the rules in
        // force); if one fails, or the rules are refused, they go again and the kernel
        // state is as it was.
        let mut added = Vec::new();
        for iface in &policy.interfaces {
            if self.attachments.iter().any(|a| a.iface() == iface.name) {
                continue;
            }
            match self.firewall.attach_pinned(&iface.name) {
                Ok(a) => added.push(a),
                Err(e) => {
                    for a in added {
                        let _ = a.detach();
                    }
                    return Err(AgentError::Unfiltered {
                        iface: iface.name.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }
        let report = match self.apply(policy) {
            Ok(r) => r,
            Err(e) => {
                for a in added {
                    let _ = a.detach();
                }
                return Err(e);
            }
        };
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attachments)
            .into_iter()
            .partition(|a| policy.interfaces.iter().any(|i| i.name == a.iface()));
        let gone = names(&removed);
        for a in removed {
            let iface = a.iface().to_string();
            if let Err(e) = a.detach() {
                warn!("firewall: detaching from {iface}: {e}");
            }
        }
        let new = names(&added);
        self.attachments = kept;
        self.attachments.extend(added);
        let mut message = format!(
            "firewall reloaded: {} rules, {} classes",
            report.rules, report.classes
        );
        if !new.is_empty() {
            message.push_str(&format!("; attached to {new}"));
        }
        if !gone.is_empty() {
            message.push_str(&format!("; detached from {gone}"));
        }
        Ok(Reloaded::Applied(message))
    }

    fn roll_back(&mut self, previous: &Snapshot) -> Option<Result<String>> {
        let policy = previous.firewall.clone().unwrap_or_default();
        Some(
            self.apply(&policy)
                .map(|_| "firewall rolled back".to_string()),
        )
    }

    fn event_source(&self) -> Option<Result<ironclad_bpf::EventSource>> {
        Some(
            self.firewall
                .event_source()
                .map_err(AgentError::bpf(KIND.name)),
        )
    }

    fn object(&self) -> Option<&LoadedObject> {
        Some(self.firewall.object())
    }

    fn tick(&mut self, out: &Publisher<'_>) {
        if self.last_sweep.elapsed() < SWEEP_EVERY {
            return;
        }
        self.last_sweep = Instant::now();
        match self.firewall.expire() {
            Ok(sweep) => {
                if sweep.removed > 0 {
                    tracing::debug!(removed = sweep.removed, "idle connections expired");
                }
                // The ends of the recorded connections the sweep removed.
                for record in sweep.flows {
                    out.publish(Event::Flow(record));
                }
            }
            Err(e) => warn!("firewall: the expiry sweep failed: {e}"),
        }
    }

    fn stop(self: Box<Self>, loader: &Loader, detach: bool) -> Result<String> {
        let Running {
            firewall,
            attachments,
            ..
        } = *self;
        let on = names(&attachments);
        if detach {
            for a in attachments {
                a.detach().map_err(AgentError::bpf(KIND.name))?;
            }
            drop(firewall);
            let removed = loader
                .remove_pins(Firewall::OBJECT)
                .map_err(AgentError::bpf(KIND.name))?;
            Ok(format!(
                "firewall detached from {on}; {removed} pins removed"
            ))
        } else {
            drop(attachments);
            Ok(format!("stopping; the firewall stays pinned on {on}"))
        }
    }
}
