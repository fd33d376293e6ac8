//! The Shield (XDP source blocklist) as an agent feature.

use ironclad_bpf::{EventSource, LoadedObject, Loader, Shield, XdpAttachment};
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::shield::{CompiledShield, Mode};
use tracing::info;

use super::{Feature, Kind, Reloaded, Start};
use crate::{AgentError, Result};

pub(super) const KIND: Kind = Kind {
    name: "shield",
    configured: |config| config.shield.is_some(),
    start,
    with_the_agent_only: false,
};

/// The running Shield: the object and its attachment on each interface.
struct Running {
    shield: Shield,
    attachments: Vec<XdpAttachment>,
}

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = &config.shield else {
        return Err(AgentError::NotConfigured { feature: "shield" });
    };
    let ifaces = start.settings.interfaces();
    if ifaces.is_empty() {
        return Err(AgentError::NoInterface);
    }
    fn unfiltered(iface: &str) -> impl FnOnce(ironclad_bpf::BpfError) -> AgentError + '_ {
        move |e| match e {
            e @ ironclad_bpf::BpfError::StalePin { .. } => AgentError::bpf(KIND.name)(e),
            e => AgentError::Unfiltered {
                iface: iface.to_string(),
                source: Box::new(e),
            },
        }
    }
    let first = ifaces[0].as_str();
    // The policy's tables are compiled while the kernel verifies the program.
    let (shield, report) =
        Shield::load_with_policy(start.loader, policy).map_err(unfiltered(first))?;
    // One program and one set of maps; a link on each interface. An interface that
    // cannot be attached stops the start: the Shield is down naming it, and the links
    // this start made on the interfaces before it are detached again, so the host is
    // not left half-filtered by a feature that reports itself down (and that nothing
    // would detach on exit). Links adopted from an earlier run's pins stay: they were
    // enforcing before this start, and now enforce its policy.
    let mut attachments: Vec<XdpAttachment> = Vec::with_capacity(ifaces.len());
    for iface in ifaces {
        match shield.attach_pinned(iface) {
            Ok(attachment) => attachments.push(attachment),
            Err(e) => {
                for made in attachments.into_iter().filter(|a| !a.adopted()) {
                    let on = made.iface().to_string();
                    if let Err(undo) = made.detach() {
                        tracing::warn!("shield: could not detach the new link on {on}: {undo}");
                    }
                }
                return Err(unfiltered(iface)(e));
            }
        }
    }
    let modes: Vec<String> = attachments
        .iter()
        .map(|a| format!("{} ({})", a.iface(), a.mode().name()))
        .collect();
    info!(
        "shield enforcing on {} ({}): {} rules ({} added, {} kept, {} removed), {} management prefixes, IPv4 via the {} path, IPv6 via the {} path",
        modes.join(", "),
        if policy.mode == Mode::DryRun { "dry-run" } else { "enforce" },
        policy.rules.len() + policy.sets.len(),
        report.added,
        report.kept,
        report.removed,
        policy.management.len(),
        report.ipv4_path.as_str(),
        report.ipv6_path.as_str(),
    );
    Ok(Box::new(Running {
        shield,
        attachments,
    }))
}

impl Running {
    fn apply(&self, policy: &CompiledShield) -> Result<ironclad_bpf::ReplaceReport> {
        self.shield
            .replace(policy)
            .map_err(AgentError::bpf(KIND.name))
    }
}

impl Feature for Running {
    fn name(&self) -> &'static str {
        "shield"
    }

    fn as_shield(&self) -> Option<&Shield> {
        Some(&self.shield)
    }

    fn verify(&mut self) -> super::Verified {
        let mut found = super::Verified::default();
        for attachment in &mut self.attachments {
            let on = format!("XDP on {}", attachment.iface());
            found.add([self.shield.verify(attachment)], &on);
        }
        found
    }

    fn link_ids(&self) -> Vec<u32> {
        self.attachments
            .iter()
            .filter_map(|a| a.link_id().ok())
            .collect()
    }

    fn describe(&self) -> String {
        let mode = match self.shield.mode() {
            Ok(Mode::DryRun) => "dry-run",
            Ok(Mode::Enforce) => "enforce",
            Err(_) => "unknown mode",
        };
        let on: Vec<String> = self
            .attachments
            .iter()
            .map(|a| format!("{} ({})", a.iface(), a.mode().name()))
            .collect();
        format!("XDP on {} {mode}", on.join(", "))
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        let Some(policy) = &config.shield else {
            return Ok(Reloaded::Stop(
                "reload: the new policy has no shield section; the shield stops: its XDP program is detached and its pins removed"
                .to_string(),
            ));
        };
        let report = self.apply(policy)?;
        Ok(Reloaded::Applied(format!(
            "reloaded: {} added, {} changed, {} removed, {} kept, {} prefixes edited in place",
            report.added, report.changed, report.removed, report.kept, report.in_place
        )))
    }

    fn event_source(&self) -> Option<Result<EventSource>> {
        Some(
            self.shield
                .event_source()
                .map_err(AgentError::bpf(KIND.name)),
        )
    }

    fn object(&self) -> Option<&LoadedObject> {
        Some(self.shield.object())
    }

    fn stop(self: Box<Self>, loader: &Loader, detach: bool) -> Result<String> {
        let Running {
            shield,
            attachments,
        } = *self;
        let ifaces: Vec<String> = attachments.iter().map(|a| a.iface().to_string()).collect();
        if detach {
            for attachment in attachments {
                attachment.detach().map_err(AgentError::bpf(KIND.name))?;
            }
            drop(shield);
            let removed = loader
                .remove_pins(Shield::OBJECT)
                .map_err(AgentError::bpf(KIND.name))?;
            Ok(format!(
                "shield detached from {}; {removed} pins removed",
                ifaces.join(", ")
            ))
        } else {
            let pins: Vec<String> = attachments
                .iter()
                .filter_map(|a| a.pin_path().map(|p| p.display().to_string()))
                .collect();
            Ok(format!(
                "stopping; enforcement stays pinned at {}",
                pins.join(", ")
            ))
        }
    }
}
