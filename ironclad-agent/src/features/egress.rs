//! The identity firewall (cgroup connect/sendmsg by process) as an agent feature.

use std::time::{Duration, Instant};

use ironclad_bpf::{CgroupAttachment, EgressFirewall, EventSource, LoadedObject, Loader};
use ironclad_core::abi::DnsTotal;
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::egress::CompiledEgress;
use tracing::{debug, info, warn};

use super::{Feature, Kind, Publisher, Reloaded, Start};
use crate::{AgentError, Result};

pub(super) const KIND: Kind = Kind {
    name: "egress",
    configured: |config| config.egress.is_some(),
    start,
    with_the_agent_only: false,
};

/// How often expired addresses that DNS answers opened are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How soon after an address was refused for want of room the sweep runs again.
const SWEEP_WHEN_FULL: Duration = Duration::from_secs(1);

/// The running identity firewall and its (pinned) hooks on the cgroup.
struct Running {
    firewall: EgressFirewall,
    attachment: CgroupAttachment,
    /// The last sweep of the opened addresses, and the refusals counted then.
    swept: Instant,
    refused: u64,
}

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = &config.egress else {
        return Err(AgentError::NotConfigured { feature: "egress" });
    };
    let cgroup = start.settings.cgroup();
    let firewall = EgressFirewall::load(start.loader).map_err(AgentError::bpf(KIND.name))?;
    firewall
        .replace(policy)
        .map_err(AgentError::bpf(KIND.name))?;
    let attachment = firewall
        .attach_pinned(cgroup)
        .map_err(AgentError::bpf(KIND.name))?;
    info!(
        "egress firewall on cgroup {}: {} rules{}",
        cgroup.display(),
        policy.rules.len(),
        domains_summary(policy)
    );
    Ok(Box::new(Running {
        firewall,
        attachment,
        swept: Instant::now(),
        refused: 0,
    }))
}

/// `, 2 by name (3 patterns), 1 domain feed (1000 names)`, or nothing.
fn domains_summary(policy: &CompiledEgress) -> String {
    let mut out = String::new();
    if !policy.domain_rules.is_empty() {
        out.push_str(&format!(
            ", {} by name ({} patterns)",
            policy.domain_rules.len(),
            policy.domain_patterns().len()
        ));
    }
    if !policy.domain_feeds.is_empty() {
        out.push_str(&format!(
            ", {} domain feeds ({} names)",
            policy.domain_feeds.len(),
            policy
                .domain_feeds
                .iter()
                .map(|f| f.names.len())
                .sum::<usize>()
        ));
    }
    out
}

impl Running {
    fn apply(&self, policy: &CompiledEgress) -> Result<ironclad_bpf::EgressReport> {
        self.firewall
            .replace(policy)
            .map_err(AgentError::bpf(KIND.name))
    }
}

impl Feature for Running {
    fn name(&self) -> &'static str {
        "egress"
    }

    /// Sweeps the expired addresses DNS answers opened: every [`SWEEP_EVERY`], and
    /// within [`SWEEP_WHEN_FULL`] of an address refused for want of room.
    fn tick(&mut self, _out: &Publisher<'_>) {
        let since = self.swept.elapsed();
        if since < SWEEP_WHEN_FULL {
            return;
        }
        let refused = [DnsTotal::OwnerFull, DnsTotal::TableFull]
            .into_iter()
            .filter_map(|t| self.firewall.domain_total(t).ok())
            .sum();
        if since < SWEEP_EVERY && refused == self.refused {
            return;
        }
        self.swept = Instant::now();
        self.refused = refused;
        match self.firewall.sweep_domains() {
            Ok(s) if s.removed > 0 => debug!(
                "egress by name: {} expired addresses removed, {} left",
                s.removed,
                s.entries - s.removed
            ),
            Ok(_) => {}
            Err(e) => warn!("egress by name: sweeping expired addresses: {e}"),
        }
    }

    fn verify(&mut self) -> super::Verified {
        super::Verified::of(self.firewall.verify(&mut self.attachment), "")
    }

    fn link_ids(&self) -> Vec<u32> {
        let mut ids = self.attachment.link_ids().unwrap_or_default();
        ids.extend(self.firewall.dns_link_ids().unwrap_or_default());
        ids
    }

    fn describe(&self) -> String {
        "cgroup connect4/6, sendmsg4/6 and the DNS of the sockets they mark (cgroup_skb)"
            .to_string()
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        let Some(policy) = &config.egress else {
            return Ok(Reloaded::Stop(
                "reload: the new policy has no egress section; the identity firewall stops: its hooks are detached and its pins removed"
                .to_string(),
            ));
        };
        let report = self.apply(policy)?;
        Ok(Reloaded::Applied(format!(
            "egress policy reloaded: {} rules{}",
            report.rules,
            domains_summary(policy)
        )))
    }

    fn event_source(&self) -> Option<Result<EventSource>> {
        Some(
            self.firewall
                .event_source()
                .map_err(AgentError::bpf(KIND.name)),
        )
    }

    fn object(&self) -> Option<&LoadedObject> {
        Some(self.firewall.object())
    }

    fn stop(self: Box<Self>, loader: &Loader, detach: bool) -> Result<String> {
        let Running {
            firewall,
            attachment,
            ..
        } = *self;
        if detach {
            attachment.detach().map_err(AgentError::bpf(KIND.name))?;
            drop(firewall);
            let removed = loader
                .remove_pins(EgressFirewall::OBJECT)
                .map_err(AgentError::bpf(KIND.name))?;
            Ok(format!("egress firewall detached; {removed} pins removed"))
        } else {
            // Dropping an attachment whose hooks are pinned leaves them in the kernel.
            drop(attachment);
            Ok("stopping; the egress policy stays pinned".to_string())
        }
    }
}
