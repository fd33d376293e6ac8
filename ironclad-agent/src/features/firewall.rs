//! The stateful firewall (tcx ingress and egress on the policy's interfaces, classic
//! tc filters on kernels without tcx, with connection tracking) as an agent feature.

use std::time::{Duration, Instant};

use ironclad_bpf::{
    AcceptHook, Firewall, FirewallAttachment, FirewallSettings, IdsMatcher, IdsSettings,
    LimitSettings, LoadedObject, Loader, NatSettings, Quarantine, QuarantineAction,
    QuarantineAttachment, ScrubAttachment, ScrubSettings, Scrubber, SynFloodSettings,
    XdpAttachment,
};
use ironclad_events::Event;
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::firewall::FirewallPolicy;
use ironclad_policy::firewall::QuarantineTarget;
use ironclad_policy::ids::RuleSet;
use tracing::{info, warn};

use super::{Feature, Kind, Publisher, Reloaded, Start};
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

/// The running firewall: the object and its (pinned) hooks, one per interface, and
/// the SYN-flood defence's XDP hooks when the policy asks for it.
struct Running {
    firewall: Firewall,
    attachments: Vec<FirewallAttachment>,
    syn: Vec<XdpAttachment>,
    /// The interfaces the agent's Shield attaches to (`--iface`), whose XDP hooks the
    /// defence cannot share.
    shield_ifaces: Vec<String>,
    last_sweep: Instant,
    /// The IDS matcher (with no rules when the policy has no `ids:`), whose rules a
    /// reload replaces.
    ids: IdsMatcher,
    /// Whether the policy has `ids:`: only then is the snippet ring read (mapping it
    /// costs the daemon twice its 4 MiB in resident memory).
    ids_on: bool,
    /// `ids_on` changed in the last reload.
    sources_changed: bool,
    /// `scrub:` and `quarantine:`: loaded and attached when the policy has them (not
    /// pinned: they go with the daemon).
    extras: Extras,
    /// Names the process accepting each inbound TCP connection (None where the kernel
    /// cannot: its flows' ends then name none, as the warning at start says).
    _accept: Option<AcceptHook>,
}

/// The scrubber and the quarantine, each loaded when a policy first asks for it (a
/// reload may), attached where the policy says, so that a policy without them loads
/// nothing of them.
struct Extras {
    loader: Loader,
    scrubber: Option<Scrubber>,
    scrubbed: Vec<ScrubAttachment>,
    quarantine: Option<Quarantine>,
    quarantined_on: Vec<QuarantineAttachment>,
    sources: Vec<ipnetwork::IpNetwork>,
}

impl Extras {
    fn new(loader: &Loader) -> Self {
        Self {
            loader: loader.clone(),
            scrubber: None,
            scrubbed: Vec::new(),
            quarantine: None,
            quarantined_on: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Makes the kernel do what `policy.scrub` and `policy.quarantine` say: settings
    /// and IOC sets written, hooks attached where they are missing and detached where
    /// the policy no longer lists them.
    fn apply(&mut self, policy: &FirewallPolicy) -> Result<()> {
        let bpf = AgentError::bpf(KIND.name);
        if self.scrubber.is_none() && !policy.scrub.is_empty() {
            self.scrubber = Some(Scrubber::load(&self.loader).map_err(&bpf)?);
        }
        let quarantined = policy
            .quarantine
            .as_ref()
            .is_some_and(|q| !q.sets.is_empty());
        if self.quarantine.is_none() && quarantined {
            self.quarantine = Some(Quarantine::load(&self.loader).map_err(&bpf)?);
        }
        if let Some(scrubber) = &self.scrubber {
            Self::apply_scrub(scrubber, &mut self.scrubbed, policy)?;
        }
        if let Some(quarantine) = &self.quarantine {
            Self::apply_quarantine(
                quarantine,
                &mut self.quarantined_on,
                &mut self.sources,
                policy,
            )?;
        }
        Ok(())
    }

    fn apply_scrub(
        scrubber: &Scrubber,
        scrubbed: &mut Vec<ScrubAttachment>,
        policy: &FirewallPolicy,
    ) -> Result<()> {
        let bpf = AgentError::bpf(KIND.name);
        for s in &policy.scrub {
            let settings = ScrubSettings {
                ttl_floor: s.ttl_floor,
                hop_limit_floor: s.hop_limit_floor,
                mss_max: s.mss_max,
                clear_df: s.clear_df,
                random_ip_id: s.random_ip_id,
                ingress: s.ingress,
            };
            scrubber.set(&s.interface, &settings).map_err(&bpf)?;
            if !scrubbed.iter().any(|a| a.iface() == s.interface) {
                scrubbed.push(scrubber.attach(&s.interface).map_err(&bpf)?);
            }
        }
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(scrubbed)
            .into_iter()
            .partition(|a| policy.scrub.iter().any(|s| s.interface == a.iface()));
        for a in gone {
            let _ = scrubber.unset(a.iface());
        }
        *scrubbed = kept;
        Ok(())
    }

    fn apply_quarantine(
        quarantine: &Quarantine,
        quarantined_on: &mut Vec<QuarantineAttachment>,
        sources: &mut Vec<ipnetwork::IpNetwork>,
        policy: &FirewallPolicy,
    ) -> Result<()> {
        let bpf = AgentError::bpf(KIND.name);

        let empty = Vec::new();
        let (sets, ifaces) = match &policy.quarantine {
            Some(q) => (&q.sets, &q.interfaces),
            None => (&empty, &Vec::new()),
        };
        let mut now: Vec<ipnetwork::IpNetwork> = Vec::new();
        for set in sets {
            let action = match &set.target {
                QuarantineTarget::Vlan(v) => QuarantineAction::Vlan(*v),
                QuarantineTarget::Redirect(i) => QuarantineAction::Redirect(i.clone()),
                QuarantineTarget::RedirectIngress(i) => {
                    QuarantineAction::RedirectIngress(i.clone())
                }
                _ => continue,
            };
            quarantine.set(&set.sources, action).map_err(&bpf)?;
            now.extend(set.sources.iter().copied());
        }
        let stale: Vec<ipnetwork::IpNetwork> = sources
            .iter()
            .filter(|p| !now.contains(p))
            .copied()
            .collect();
        quarantine.remove(&stale).map_err(&bpf)?;
        *sources = now;
        for iface in ifaces {
            if !quarantined_on.iter().any(|a| a.iface() == iface) {
                quarantined_on.push(quarantine.attach(iface).map_err(&bpf)?);
            }
        }
        quarantined_on.retain(|a| ifaces.iter().any(|i| i == a.iface()));
        Ok(())
    }
}

/// `, scrubbing eth0, quarantine of 2 sets on eth0` (or nothing).
fn extras_description(policy: &FirewallPolicy) -> String {
    let mut out = String::new();
    if !policy.scrub.is_empty() {
        let names: Vec<&str> = policy.scrub.iter().map(|s| s.interface.as_str()).collect();
        out.push_str(&format!(", scrubbing {}", names.join(", ")));
    }
    if let Some(q) = &policy.quarantine {
        out.push_str(&format!(
            ", quarantine of {} sources in {} sets on {}",
            q.sets.iter().map(|s| s.sources.len()).sum::<usize>(),
            q.sets.len(),
            q.interfaces.join(", ")
        ));
    }
    out
}

/// The smallest MTU of the firewall's interfaces (1500 where /sys does not say): the
/// MSS the SYN-ACKs announce must fit every one of them.
fn smallest_mtu(policy: &FirewallPolicy) -> u32 {
    policy
        .interfaces
        .iter()
        .filter_map(|i| {
            std::fs::read_to_string(format!("/sys/class/net/{}/mtu", i.name))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
        })
        .min()
        .unwrap_or(1500)
}

/// The SYN-flood defence the policy asks for (off when it has none).
fn syn_settings(policy: &FirewallPolicy) -> SynFloodSettings {
    policy
        .syn_flood
        .as_ref()
        .map(|s| SynFloodSettings::from_policy(s, smallest_mtu(policy)))
        .unwrap_or_default()
}

/// The interfaces the Shield attaches to, when the policy runs it.
fn shield_ifaces<'a>(ifaces: &'a [String], config: &CompiledConfig) -> &'a [String] {
    if config.shield.is_some() {
        ifaces
    } else {
        &[]
    }
}

/// What keeps the SYN-flood defence's answers (SYN-ACKs sent with `XDP_TX`) from
/// leaving, one line per interface where something does: a veth whose peer end runs
/// no XDP program. Empty when nothing is known to.
fn syn_warnings(syn: &[XdpAttachment]) -> Vec<String> {
    syn.iter()
        .filter_map(|a| {
            let iface = a.iface();
            match ironclad_bpf::xdp_tx_path(iface, a.mode()) {
                ironclad_bpf::XdpTxPath::VethPeerWithoutXdp { peer } => Some(format!(
                    "syn_flood on {iface}: a veth whose peer {peer} runs no XDP program; the SYN cookies' SYN-ACKs are dropped unless {peer} has GRO on (`ethtool -K {peer} gro on`) or an XDP program of its own, and clients' connections hang"
                )),
                ironclad_bpf::XdpTxPath::VethPeerElsewhere => Some(format!(
                    "syn_flood on {iface}: a veth whose peer is in another network namespace; the SYN cookies' SYN-ACKs reach it only if that end has GRO on or an XDP program of its own, otherwise clients' connections hang"
                )),
                _ => None,
            }
        })
        .collect()
}

/// The first interface both the Shield and the SYN-flood defence would hold.
fn syn_conflict(
    policy: &FirewallPolicy,
    shield_ifaces: &[String],
) -> Option<ironclad_policy::PolicyError> {
    shield_ifaces
        .iter()
        .find_map(|i| policy.syn_flood_conflict(Some(i)))
}

/// Attaches the SYN-flood defence's XDP program to every interface of `policy` that
/// `have` lacks; on a failure, what this call attached goes again.
fn attach_syn(
    firewall: &Firewall,
    policy: &FirewallPolicy,
    have: &[XdpAttachment],
) -> Result<Vec<XdpAttachment>> {
    let mut added: Vec<XdpAttachment> = Vec::new();
    if policy.syn_flood.is_none() {
        return Ok(added);
    }
    for iface in &policy.interfaces {
        if have.iter().any(|a| a.iface() == iface.name) {
            continue;
        }
        match firewall.attach_syn_pinned(&iface.name) {
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
    Ok(added)
}

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = &config.firewall else {
        return Err(AgentError::NotConfigured { feature: KIND.name });
    };
    if let Some(conflict) = syn_conflict(policy, shield_ifaces(start.settings.interfaces(), config))
    {
        return Err(AgentError::Conflict {
            feature: KIND.name,
            source: Box::new(conflict),
        });
    }
    let firewall = Firewall::load_with_table(start.loader, policy.table_size)
        .map_err(AgentError::bpf(KIND.name))?;
    // Rules and settings before any hook exists: the first packet already meets the
    // policy.
    let ids = IdsMatcher::new(empty_rules()?, false);
    let report = apply_policy(&firewall, policy, &ids)?;
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
    let syn = match attach_syn(&firewall, policy, &[]) {
        Ok(syn) => syn,
        Err(e) => {
            for a in attachments {
                let _ = a.detach();
            }
            return Err(e);
        }
    };
    let mut extras = Extras::new(start.loader);
    let extras = match extras.apply(policy).map(|()| extras) {
        Ok(x) => x,
        Err(e) => {
            for a in syn {
                let _ = a.detach();
            }
            for a in attachments {
                let _ = a.detach();
            }
            return Err(e);
        }
    };
    info!(
        "firewall on {}: {} ingress and egress, {} rules, default inbound {}, outbound {}, {}{}{}{}{}{}{}",
        names(&attachments),
        attachments
            .first()
            .map_or("no interface", |a| a.mechanism().name()),
        report.rules,
        policy.default_inbound.name(),
        policy.default_outbound.name(),
        if policy.stateful {
            format!("stateful ({} connections)", policy.table_size)
        } else {
            "stateless".to_string()
        },
        if policy.dry_run { ", dry-run" } else { "" },
        syn_description(policy),
        limits_description(policy),
        nat_description(policy),
        ids_description(policy),
        extras_description(policy),
    );
    for w in syn_warnings(&syn) {
        warn!("firewall: {w}");
    }
    // Observability, not enforcement: without it the firewall runs the same.
    let accept = firewall
        .attach_accept()
        .inspect_err(|e| {
            warn!("firewall: inbound connections will name no accepting process: {e}");
        })
        .ok();
    Ok(Box::new(Running {
        firewall,
        attachments,
        syn,
        shield_ifaces: start.settings.interfaces().to_vec(),
        last_sweep: Instant::now(),
        ids,
        ids_on: policy.ids.is_some(),
        sources_changed: false,
        extras,
        _accept: accept,
    }))
}

fn empty_rules() -> Result<RuleSet> {
    RuleSet::new(Vec::new()).map_err(|source| AgentError::Ids { source })
}

/// The IDS's rules and kernel selection for `policy` (none and off without `ids:`).
/// The rules are built before anything is written: a refusal changes nothing.
fn apply_ids(firewall: &Firewall, policy: &FirewallPolicy, matcher: &IdsMatcher) -> Result<()> {
    let Some(ids) = &policy.ids else {
        firewall.clear_ids().map_err(AgentError::bpf(KIND.name))?;
        matcher.set_rules(empty_rules()?, false);
        return Ok(());
    };
    let set = RuleSet::new(ids.rules.rules.as_ref().clone())
        .map_err(|source| AgentError::Ids { source })?;
    let settings = IdsSettings {
        depth: ids.depth,
        sample_every: ids.sample_every,
        dry_run: ids.dry_run,
    };
    firewall
        .set_ids_with_prefixes(&settings, &set.selection(), &set.kernel_prefixes())
        .map_err(AgentError::bpf(KIND.name))?;
    matcher.set_rules(set, ids.dry_run);
    Ok(())
}

/// `, IDS: 12 rules from 2 files (dry-run)` (or nothing).
fn ids_description(policy: &FirewallPolicy) -> String {
    let Some(ids) = &policy.ids else {
        return String::new();
    };
    format!(
        ", IDS: {} rules from {} files, {} bytes each way{}",
        ids.rules.rules.len(),
        ids.rule_files.len(),
        ids.depth,
        if ids.dry_run { " (dry-run)" } else { "" }
    )
}

/// `, SYN cookies (always) on ports 22, 443` (or nothing without the defence).
fn syn_description(policy: &FirewallPolicy) -> String {
    let Some(syn) = &policy.syn_flood else {
        return String::new();
    };
    let ports = ironclad_policy::firewall::ports_text(&syn.ports);
    let when = match syn.mode {
        ironclad_policy::firewall::SynFloodMode::UnderAttack => {
            format!("above {} SYN/s", syn.threshold_pps)
        }
        _ => "always".to_string(),
    };
    let plural = if syn.port_set().len() == 1 { "" } else { "s" };
    format!(", SYN cookies ({when}) on port{plural} {ports}")
}

fn names(attachments: &[FirewallAttachment]) -> String {
    attachments
        .iter()
        .map(FirewallAttachment::iface)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rules, settings, SYN-flood defence and rate limits of `policy`. The defence
/// and the limits are checked (the defence against this host too) before the rules
/// are written, so a refusal leaves everything as it was.
fn apply_policy(
    firewall: &Firewall,
    policy: &FirewallPolicy,
    ids: &IdsMatcher,
) -> Result<ironclad_bpf::FirewallReport> {
    let syn = syn_settings(policy);
    syn.preflight().map_err(AgentError::bpf(KIND.name))?;
    let limits = LimitSettings::from_policy(policy.limits.as_ref());
    limits.check().map_err(AgentError::bpf(KIND.name))?;
    let nat = match &policy.nat {
        Some(n) => NatSettings::from_policy(n).map_err(|e| AgentError::Unresolved {
            feature: KIND.name,
            source: Box::new(e),
        })?,
        None => NatSettings::default(),
    };
    nat.check().map_err(AgentError::bpf(KIND.name))?;
    if !nat.is_empty() {
        for (family, sysctl) in [
            ("IPv4", "/proc/sys/net/ipv4/ip_forward"),
            ("IPv6", "/proc/sys/net/ipv6/conf/all/forwarding"),
        ] {
            if std::fs::read_to_string(sysctl).is_ok_and(|v| v.trim() == "0") {
                warn!(
                    "firewall: NAT is configured but {sysctl} is 0: {family} connections forwarded or translated will not pass through this host until forwarding is on"
                );
            }
        }
    }
    let report = firewall
        .apply(&FirewallSettings::from_policy(policy), &policy.rules)
        .map_err(AgentError::bpf(KIND.name))?;
    firewall
        .set_syn_flood(&syn)
        .map_err(AgentError::bpf(KIND.name))?;
    firewall
        .set_limits(&limits)
        .map_err(AgentError::bpf(KIND.name))?;
    firewall.set_nat(&nat).map_err(AgentError::bpf(KIND.name))?;
    apply_ids(firewall, policy, ids)?;
    Ok(report)
}

/// `, limits: 20/s per source, 100/s per /24 (/64) subnet, ...` (or nothing).
fn limits_description(policy: &FirewallPolicy) -> String {
    let Some(l) = &policy.limits else {
        return String::new();
    };
    let parts: Vec<String> = [
        (l.per_source, "per source".to_string()),
        (
            l.per_subnet,
            format!("per /{} (/{}) subnet", l.ipv4_prefix, l.ipv6_prefix),
        ),
        (l.per_port, "per port".to_string()),
        (l.per_interface, "per interface".to_string()),
    ]
    .into_iter()
    .filter_map(|(rate, what)| rate.map(|r| format!("{}/s {what}", r.per_second)))
    .collect();
    format!(", new connections limited to {}", parts.join(", "))
}

/// `, NAT: 2 port forwards, 1 source translation` (or nothing).
fn nat_description(policy: &FirewallPolicy) -> String {
    let Some(n) = &policy.nat else {
        return String::new();
    };
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        ", NAT: {}, {}",
        plural(n.dnat.len(), "port forward", "port forwards"),
        plural(n.snat.len(), "source translation", "source translations")
    )
}

impl Feature for Running {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn verify(&mut self) -> super::Verified {
        let mut found = super::Verified::default();
        for attachment in &mut self.attachments {
            let on = format!(
                "{} on {}",
                attachment.mechanism().name(),
                attachment.iface()
            );
            found.add(self.firewall.verify(attachment), &on);
        }
        for attachment in &mut self.syn {
            let on = format!("SYN defence XDP on {}", attachment.iface());
            found.add([self.firewall.verify_syn(attachment)], &on);
        }
        let extras = &mut self.extras;
        if let Some(scrubber) = &extras.scrubber {
            for a in &mut extras.scrubbed {
                let on = format!("scrub on {}", a.iface());
                found.add(scrubber.verify(a), &on);
            }
        }
        if let Some(quarantine) = &extras.quarantine {
            for a in &mut extras.quarantined_on {
                let on = format!("quarantine on {}", a.iface());
                found.add(quarantine.verify(a), &on);
            }
        }
        found
    }

    fn link_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        for a in &self.attachments {
            ids.extend(a.link_ids().unwrap_or_default());
        }
        ids.extend(self.syn.iter().filter_map(|a| a.link_id().ok()));
        for a in &self.extras.scrubbed {
            ids.extend(a.link_ids().unwrap_or_default());
        }
        for a in &self.extras.quarantined_on {
            ids.extend(a.link_ids().unwrap_or_default());
        }
        ids
    }

    fn protected_ifaces(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .attachments
            .iter()
            .map(FirewallAttachment::ifindex)
            .collect();
        out.extend(self.extras.scrubbed.iter().map(|a| a.ifindex()));
        out.extend(self.extras.quarantined_on.iter().map(|a| a.ifindex()));
        out
    }

    fn describe(&self) -> String {
        let mode = match self.firewall.settings() {
            Ok(s) if s.dry_run => "dry-run",
            Ok(_) => "enforce",
            Err(_) => "unknown mode",
        };
        let syn = match self.firewall.syn_flood() {
            Ok(s) if s.mode != ironclad_bpf::SynMode::Off => {
                format!(", SYN cookies in XDP ({})", s.mode.name())
            }
            _ => String::new(),
        };
        let mechanism = self.attachments.first().map_or(
            ironclad_bpf::TcMechanism::probe(),
            FirewallAttachment::mechanism,
        );
        let mut out = format!(
            "{} ingress and egress on {} {mode}{syn}",
            mechanism.name(),
            names(&self.attachments)
        );
        if mechanism == ironclad_bpf::TcMechanism::Clsact {
            // Filters are not links: said, with how they are kept.
            out.push_str(
                " (classic tc filters: this kernel has no tcx; the Sentinel guards the interface's tc hooks, and a filter removed where none runs is put back at the next health check)",
            );
        }
        // Read from the kernel on every report: a peer given an XDP program later
        // clears it.
        for w in syn_warnings(&self.syn) {
            out.push_str(&format!("; warning: {w}"));
        }
        out
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        let Some(policy) = &config.firewall else {
            return Ok(Reloaded::Stop(
                "reload: the new policy has no firewall section; the firewall stops: its hooks are detached and its pins removed"
                .to_string(),
            ));
        };
        if let Some(conflict) = syn_conflict(policy, shield_ifaces(&self.shield_ifaces, config)) {
            return Err(AgentError::Conflict {
                feature: KIND.name,
                source: Box::new(conflict),
            });
        }
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
        let syn_added = match attach_syn(&self.firewall, policy, &self.syn) {
            Ok(a) => a,
            Err(e) => {
                for a in added {
                    let _ = a.detach();
                }
                return Err(e);
            }
        };
        let report = match apply_policy(&self.firewall, policy, &self.ids) {
            Ok(r) => r,
            Err(e) => {
                for a in syn_added {
                    let _ = a.detach();
                }
                for a in added {
                    let _ = a.detach();
                }
                return Err(e);
            }
        };
        if let Err(e) = self.extras.apply(policy) {
            for a in syn_added {
                let _ = a.detach();
            }
            for a in added {
                let _ = a.detach();
            }
            return Err(e);
        }
        // The defence's hooks on interfaces the policy no longer lists, or all of them
        // when it no longer asks for the defence.
        let (syn_kept, syn_removed): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.syn).into_iter().partition(|a| {
                policy.syn_flood.is_some() && policy.interfaces.iter().any(|i| i.name == a.iface())
            });
        for a in syn_removed {
            let iface = a.iface().to_string();
            if let Err(e) = a.detach() {
                warn!("firewall: detaching the SYN-flood defence from {iface}: {e}");
            }
        }
        self.syn = syn_kept;
        self.syn.extend(syn_added);
        for w in syn_warnings(&self.syn) {
            warn!("firewall: {w}");
        }
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
        if self.ids_on != policy.ids.is_some() {
            self.ids_on = policy.ids.is_some();
            self.sources_changed = true;
        }
        let mut message = format!(
            "firewall reloaded: {} rules, {} classes{}{}{}{}{}",
            report.rules,
            report.classes,
            syn_description(policy),
            limits_description(policy),
            nat_description(policy),
            ids_description(policy),
            extras_description(policy)
        );
        if !new.is_empty() {
            message.push_str(&format!("; attached to {new}"));
        }
        if !gone.is_empty() {
            message.push_str(&format!("; detached from {gone}"));
        }
        Ok(Reloaded::Applied(message))
    }

    fn event_source(&self) -> Option<Result<ironclad_bpf::EventSource>> {
        Some(
            self.firewall
                .event_source()
                .map_err(AgentError::bpf(KIND.name)),
        )
    }

    fn more_event_sources(&self) -> Vec<Result<ironclad_bpf::EventSource>> {
        if !self.ids_on {
            return Vec::new();
        }
        vec![self
            .firewall
            .ids_source(self.ids.clone())
            .map_err(AgentError::bpf(KIND.name))]
    }

    fn take_sources_changed(&mut self) -> bool {
        std::mem::take(&mut self.sources_changed)
    }

    fn object(&self) -> Option<&LoadedObject> {
        Some(self.firewall.object())
    }

    fn as_firewall(&self) -> Option<&Firewall> {
        Some(&self.firewall)
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
            syn,
            ..
        } = *self;
        let on = names(&attachments);
        if detach {
            for a in syn {
                a.detach().map_err(AgentError::bpf(KIND.name))?;
            }
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
            drop(syn);
            drop(attachments);
            Ok(format!("stopping; the firewall stays pinned on {on}"))
        }
    }
}
