//! Reading the `firewall:` section of a policy file into a [`FirewallPolicy`], every
//! problem located at its line and column.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{parse_net, parse_port, position, RawPort, RawPorts};
use crate::error::{Origin, PolicyError};
use crate::firewall::{
    Direction, FirewallPolicy, FwAction, FwProto, FwRule, LimitsPolicy, RuleRate, SynFloodMode,
    SynFloodPolicy, TABLE_SIZE_RANGE,
};
use crate::host::{HostView, InterfaceSelector, LocatedSelector};

/// The largest `syn_flood.hold_seconds` (a day).
pub(crate) const MAX_HOLD_SECONDS: u64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFirewall {
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    default_inbound: Option<Spanned<String>>,
    default_outbound: Option<Spanned<String>>,
    stateful: Option<bool>,
    flows: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    table_size: Option<Spanned<u32>>,
    log_default_drops: Option<Spanned<u64>>,
    timeouts: Option<RawTimeouts>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    syn_flood: Option<Spanned<RawSynFlood>>,
    limits: Option<Spanned<RawLimits>>,
    ids: Option<Spanned<RawIds>>,
    #[serde(default)]
    scrub: Vec<Spanned<RawScrub>>,
    quarantine: Option<Spanned<RawQuarantine>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrub {
    interface: Option<Spanned<String>>,
    ttl_floor: Option<Spanned<u64>>,
    hop_limit_floor: Option<Spanned<u64>>,
    mss_max: Option<Spanned<u64>>,
    #[serde(default)]
    clear_df: bool,
    #[serde(default)]
    random_ip_id: bool,
    #[serde(default)]
    ingress: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    #[serde(default)]
    sets: Vec<Spanned<RawQuarantineSet>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantineSet {
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    vlan: Option<Spanned<u64>>,
    redirect: Option<Spanned<String>>,
    redirect_ingress: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIds {
    #[serde(default)]
    rules: Vec<Spanned<String>>,
    #[serde(default)]
    vars: std::collections::BTreeMap<String, Spanned<String>>,
    depth: Option<Spanned<u64>>,
    sample_every: Option<Spanned<u64>>,
    mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    per_source: Option<Spanned<RawLimit>>,
    per_subnet: Option<Spanned<RawLimit>>,
    per_port: Option<Spanned<RawLimit>>,
    per_interface: Option<Spanned<RawLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    per_second: Option<Spanned<u64>>,
    burst: Option<Spanned<u64>>,
    ipv4_prefix: Option<Spanned<u64>>,
    ipv6_prefix: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSynFlood {
    ports: Option<Spanned<RawPorts>>,
    mode: Option<Spanned<String>>,
    threshold_pps: Option<Spanned<u64>>,
    hold_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp_handshake: Option<Spanned<u32>>,
    tcp_established: Option<Spanned<u32>>,
    tcp_closing: Option<Spanned<u32>>,
    udp: Option<Spanned<u32>>,
    udp_stream: Option<Spanned<u32>>,
    icmp: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: u32,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAddrs {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawType {
    Number(u64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTypes {
    One(RawType),
    List(Vec<RawType>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    direction: Option<String>,
    proto: Option<String>,
    src: Option<RawAddrs>,
    dst: Option<RawAddrs>,
    sport: Option<RawPorts>,
    dport: Option<RawPorts>,
    icmp_type: Option<RawTypes>,
    action: Option<String>,
    log: Option<bool>,
    flows: Option<bool>,
    rate_limit: Option<RawRate>,
    comment: Option<String>,
    dnat: Option<bool>,
}

/// The ICMP type a name stands for, by protocol.
fn icmp_type_named(proto: FwProto, name: &str) -> Option<u8> {
    let v4 = [
        ("echo-reply", 0),
        ("destination-unreachable", 3),
        ("redirect", 5),
        ("echo-request", 8),
        ("time-exceeded", 11),
        ("parameter-problem", 12),
    ];
    let v6 = [
        ("destination-unreachable", 1),
        ("packet-too-big", 2),
        ("time-exceeded", 3),
        ("parameter-problem", 4),
        ("echo-request", 128),
        ("echo-reply", 129),
    ];
    let table: &[(&str, u8)] = match proto {
        FwProto::Icmp => &v4,
        FwProto::Icmpv6 => &v6,
        _ => return None,
    };
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Whether `name` is usable as an interface name (what the kernel accepts).
fn valid_ifname(name: &str) -> bool {
    crate::host::valid_name(name)
}

fn default_action(
    field: &str,
    value: Option<&Spanned<String>>,
    problems: &mut Vec<PolicyError>,
) -> FwAction {
    let Some(v) = value else {
        return FwAction::Accept;
    };
    match v.value.as_str() {
        "accept" => FwAction::Accept,
        "drop" => FwAction::Drop,
        other => {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: field.to_string(),
                    at: position(&v.referenced),
                },
                message: format!("`{other}` is not a default; use `accept` or `drop`"),
            });
            FwAction::Accept
        }
    }
}

/// Whether this network namespace (the calling thread's) has the interface `name`.
/// Asked of the kernel: `/sys/class/net` shows the namespace sysfs was mounted in,
/// which a process that entered another one (`nsenter --net`, a setns) does not see.
pub(crate) fn interface_exists(name: &str) -> bool {
    use rustix::net::{socket, AddressFamily, SocketType};
    match socket(AddressFamily::INET, SocketType::DGRAM, None) {
        Ok(sock) => rustix::net::netdevice::name_to_index(&sock, name).is_ok(),
        Err(_) => Path::new("/sys/class/net").join(name).exists(),
    }
}

/// Reads the `interfaces` list at `list` as selectors ([`crate::host`]), each checked
/// and located; a list of exclusions alone is refused.
fn parse_selectors(
    items: &[Spanned<String>],
    list: &str,
    list_at: Option<(u64, u64)>,
    problems: &mut Vec<PolicyError>,
) -> Vec<LocatedSelector> {
    let mut out: Vec<LocatedSelector> = Vec::new();
    let before = problems.len();
    for (i, item) in items.iter().enumerate() {
        let origin = Origin {
            field: format!("{list}[{i}]"),
            at: position(&item.referenced),
        };
        match InterfaceSelector::parse(&item.value) {
            Err(e) => problems.push(PolicyError::Invalid {
                origin,
                message: e.to_string(),
            }),
            Ok(selector) if out.iter().any(|s| s.selector == selector) => {
                problems.push(PolicyError::Invalid {
                    origin,
                    message: format!("`{selector}` is listed twice"),
                })
            }
            Ok(selector) => out.push(LocatedSelector { selector, origin }),
        }
    }
    if problems.len() == before && !out.is_empty() && out.iter().all(|s| s.selector.exclude) {
        problems.push(PolicyError::Invalid {
            origin: Origin {
                field: list.to_string(),
                at: list_at.or_else(|| out.first().and_then(|s| s.origin.at)),
            },
            message:
                "only exclusions (`!...`): say which interfaces to take (`eth*`, `auto`, a name)"
                    .into(),
        });
    }
    out
}

/// What `selectors` (the list at `list`) select on `host`, with its errors added to
/// `found` (which holds the list's own: with one of them, "selects nothing" may be the
/// refused selector's absence and is not said). Nothing without a host.
fn on_host(
    selectors: &[LocatedSelector],
    list: &str,
    host: Option<&HostView>,
    found: &mut Vec<PolicyError>,
) -> Vec<crate::firewall::FirewallInterface> {
    let Some(host) = host else {
        return Vec::new();
    };
    let refused = !found.is_empty();
    match crate::host::resolve(selectors, list, host) {
        Ok(chosen) => chosen,
        Err(errors) => {
            found.extend(
                errors
                    .into_iter()
                    .filter(|e| !(refused && e.origin().field == list)),
            );
            Vec::new()
        }
    }
}

/// Reads the section. With `host`, its interface selectors are resolved to that host's
/// interfaces (a name it lacks, or a list that selects nothing, is refused); without
/// one (`check --portable`) they are only checked.
pub(crate) fn parse(
    raw: &Spanned<RawFirewall>,
    host: Option<&HostView>,
    problems: &mut Vec<PolicyError>,
) -> FirewallPolicy {
    let section_at = position(&raw.referenced);
    let raw = &raw.value;
    let mut policy = FirewallPolicy {
        default_inbound: default_action(
            "firewall.default_inbound",
            raw.default_inbound.as_ref(),
            problems,
        ),
        default_outbound: default_action(
            "firewall.default_outbound",
            raw.default_outbound.as_ref(),
            problems,
        ),
        stateful: raw.stateful.unwrap_or(true),
        ..FirewallPolicy::default()
    };
    let mut invalid = |field: String, at: Option<(u64, u64)>, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin { field, at },
            message,
        });
    };

    if raw.interfaces.is_empty() {
        invalid(
            "firewall.interfaces".into(),
            section_at,
            "name the interfaces to filter (`interfaces: [eth0]`)".into(),
        );
    }
    let mut found = Vec::new();
    policy.interface_selectors = parse_selectors(
        &raw.interfaces,
        "firewall.interfaces",
        section_at,
        &mut found,
    );
    policy.interfaces = on_host(
        &policy.interface_selectors,
        "firewall.interfaces",
        host,
        &mut found,
    );
    for e in found {
        if let PolicyError::Invalid { origin, message } = e {
            invalid(origin.field, origin.at, message);
        }
    }

    if let Some(mode) = &raw.mode {
        match mode.value.as_str() {
            "enforce" => policy.dry_run = false,
            "dry-run" => policy.dry_run = true,
            other => invalid(
                "firewall.mode".into(),
                position(&mode.referenced),
                format!("`{other}` is not a mode; use `enforce` or `dry-run`"),
            ),
        }
    }
    if let Some(n) = &raw.log_default_drops {
        match u32::try_from(n.value) {
            Ok(v) if v <= crate::firewall::MAX_LOG_DEFAULT_DROPS => policy.log_default_drops = v,
            _ => invalid(
                "firewall.log_default_drops".into(),
                position(&n.referenced),
                format!(
                    "{} events a second is more than {} (0 turns the reports off)",
                    n.value,
                    crate::firewall::MAX_LOG_DEFAULT_DROPS
                ),
            ),
        }
    }
    if let Some(size) = &raw.table_size {
        if TABLE_SIZE_RANGE.contains(&size.value) {
            policy.table_size = size.value;
        } else {
            invalid(
                "firewall.table_size".into(),
                position(&size.referenced),
                format!(
                    "{} connections is outside {}..={}",
                    size.value,
                    TABLE_SIZE_RANGE.start(),
                    TABLE_SIZE_RANGE.end()
                ),
            );
        }
    }
    if let Some(t) = &raw.timeouts {
        let timeouts = &mut policy.timeouts;
        for (name, value, slot) in [
            (
                "tcp_handshake",
                &t.tcp_handshake,
                &mut timeouts.tcp_handshake,
            ),
            (
                "tcp_established",
                &t.tcp_established,
                &mut timeouts.tcp_established,
            ),
            ("tcp_closing", &t.tcp_closing, &mut timeouts.tcp_closing),
            ("udp", &t.udp, &mut timeouts.udp),
            ("udp_stream", &t.udp_stream, &mut timeouts.udp_stream),
            ("icmp", &t.icmp, &mut timeouts.icmp),
        ] {
            match value {
                None => {}
                Some(v) if v.value == 0 => invalid(
                    format!("firewall.timeouts.{name}"),
                    position(&v.referenced),
                    "must be at least 1 second".into(),
                ),
                Some(v) => *slot = v.value,
            }
        }
    }

    for (index, item) in raw.rules.iter().enumerate() {
        let origin = Origin {
            field: format!("firewall.rules[{index}]"),
            at: position(&item.referenced),
        };
        if let Some(rule) = parse_rule(&item.value, origin, problems) {
            policy.rules.push(rule);
        }
    }
    if let Some(flows) = &raw.flows {
        policy.flows = flows.value;
        if flows.value && !policy.stateful {
            problems.push(PolicyError::Invalid {
                origin: Origin {
                    field: "firewall.flows".into(),
                    at: position(&flows.referenced),
                },
                message: "flow records need connection tracking (`stateful: true`)".into(),
            });
        }
    }
    if let Some(syn) = &raw.syn_flood {
        policy.syn_flood = parse_syn_flood(syn, policy.stateful, problems);
    }
    if let Some(limits) = &raw.limits {
        policy.limits = parse_limits(limits, policy.stateful, problems);
    }
    if !policy.stateful {
        for rule in policy.rules.iter().filter(|r| r.flows) {
            problems.push(PolicyError::Invalid {
                origin: rule.origin.clone(),
                message: "`flows: true` needs connection tracking (`stateful: true`)".into(),
            });
        }
    }
    policy
}

fn parse_syn_flood(
    raw: &Spanned<RawSynFlood>,
    stateful: bool,
    problems: &mut Vec<PolicyError>,
) -> Option<SynFloodPolicy> {
    let before = problems.len();
    let section = Origin {
        field: "firewall.syn_flood".into(),
        at: position(&raw.referenced),
    };
    let mut invalid = |field: &str, at: Option<(u64, u64)>, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin {
                field: format!("firewall.syn_flood.{field}"),
                at: at.or(section.at),
            },
            message,
        });
    };
    let raw = &raw.value;
    let mut ports = Vec::new();
    match &raw.ports {
        None => invalid(
            "ports",
            None,
            "name the TCP ports to protect (`ports: [22, 443]`)".into(),
        ),
        Some(p) => {
            let at = position(&p.referenced);
            let list: Vec<&RawPort> = match &p.value {
                RawPorts::One(one) => vec![one],
                RawPorts::List(list) => list.iter().collect(),
            };
            if list.is_empty() {
                invalid("ports", at, "name at least one TCP port".into());
            }
            for (i, port) in list.into_iter().enumerate() {
                match parse_port(port) {
                    Ok(range) => ports.push(range),
                    Err(e) => invalid(&format!("ports[{i}]"), at, e),
                }
            }
        }
    }
    let mode = match raw.mode.as_ref() {
        None => SynFloodMode::Always,
        Some(m) => match m.value.as_str() {
            "always" => SynFloodMode::Always,
            "under_attack" => SynFloodMode::UnderAttack,
            other => {
                invalid(
                    "mode",
                    position(&m.referenced),
                    format!("`{other}` is not a mode; use `always` or `under_attack`"),
                );
                SynFloodMode::Always
            }
        },
    };
    let mut threshold_pps = 0;
    match (&raw.threshold_pps, mode) {
        (None, SynFloodMode::UnderAttack) => invalid(
            "threshold_pps",
            raw.mode.as_ref().and_then(|m| position(&m.referenced)),
            "`under_attack` needs `threshold_pps`: the SYNs a second from which cookies answer"
                .into(),
        ),
        (Some(t), SynFloodMode::Always) => invalid(
            "threshold_pps",
            position(&t.referenced),
            "`threshold_pps` goes with `mode: under_attack` (`always` answers every SYN)".into(),
        ),
        (Some(t), _) => match u32::try_from(t.value) {
            Ok(v) if v > 0 => threshold_pps = v,
            _ => invalid(
                "threshold_pps",
                position(&t.referenced),
                format!("{} is outside 1..={}", t.value, u32::MAX),
            ),
        },
        (None, _) => {}
    }
    let mut hold_seconds = 10;
    if let Some(h) = &raw.hold_seconds {
        if mode != SynFloodMode::UnderAttack {
            invalid(
                "hold_seconds",
                position(&h.referenced),
                "`hold_seconds` goes with `mode: under_attack`".into(),
            );
        } else if (1..=MAX_HOLD_SECONDS).contains(&h.value) {
            hold_seconds = u32::try_from(h.value).unwrap_or(10);
        } else {
            invalid(
                "hold_seconds",
                position(&h.referenced),
                format!("{} is outside 1..={MAX_HOLD_SECONDS}", h.value),
            );
        }
    }
    if !stateful {
        problems.push(PolicyError::Invalid {
            origin: section.clone(),
            message: "SYN cookies need connection tracking (`stateful: true`): the ACK that completes a handshake opens the connection".into(),
        });
    }
    (problems.len() == before).then_some(SynFloodPolicy {
        ports,
        mode,
        threshold_pps,
        hold_seconds,
        origin: section,
    })
}

fn parse_limits(
    raw: &Spanned<RawLimits>,
    stateful: bool,
    problems: &mut Vec<PolicyError>,
) -> Option<LimitsPolicy> {
    let before = problems.len();
    let section = Origin {
        field: "firewall.limits".into(),
        at: position(&raw.referenced),
    };
    let mut invalid = |field: String, at: Option<(u64, u64)>, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin {
                field: format!("firewall.limits.{field}"),
                at: at.or(section.at),
            },
            message,
        });
    };
    let mut one = |name: &str, raw: &Option<Spanned<RawLimit>>, subnet: bool| {
        let limit = raw.as_ref()?;
        let at = position(&limit.referenced);
        let l = &limit.value;
        let number =
            |n: &Spanned<u64>,
             field: &str,
             invalid: &mut dyn FnMut(String, Option<(u64, u64)>, String)| {
                match u32::try_from(n.value) {
                    Ok(v) if v > 0 => Some(v),
                    _ => {
                        invalid(
                            format!("{name}.{field}"),
                            position(&n.referenced),
                            format!("{} is outside 1..={}", n.value, u32::MAX),
                        );
                        None
                    }
                }
            };
        let per_second = match &l.per_second {
            None => {
                invalid(
                    format!("{name}.per_second"),
                    at,
                    "name the new connections a second it admits (`per_second: 100`)".into(),
                );
                None
            }
            Some(n) => number(n, "per_second", &mut invalid),
        };
        let burst = match &l.burst {
            None => per_second,
            Some(n) => number(n, "burst", &mut invalid),
        };
        if !subnet {
            for (field, value) in [
                ("ipv4_prefix", &l.ipv4_prefix),
                ("ipv6_prefix", &l.ipv6_prefix),
            ] {
                if let Some(v) = value {
                    invalid(
                        format!("{name}.{field}"),
                        position(&v.referenced),
                        format!("`{field}` goes with `per_subnet`"),
                    );
                }
            }
        }
        Some(RuleRate {
            per_second: per_second?,
            burst: burst?,
        })
    };
    let r = &raw.value;
    let per_source = one("per_source", &r.per_source, false);
    let per_subnet = one("per_subnet", &r.per_subnet, true);
    let per_port = one("per_port", &r.per_port, false);
    let per_interface = one("per_interface", &r.per_interface, false);
    let mut prefix = |value: Option<&Spanned<u64>>, field: &str, default: u8, max: u8| {
        let Some(v) = value else { return default };
        match u8::try_from(v.value) {
            Ok(p) if (1..=max).contains(&p) => p,
            _ => {
                invalid(
                    format!("per_subnet.{field}"),
                    position(&v.referenced),
                    format!("{} is outside 1..={max}", v.value),
                );
                default
            }
        }
    };
    let subnet = r.per_subnet.as_ref().map(|s| &s.value);
    let ipv4_prefix = prefix(
        subnet.and_then(|s| s.ipv4_prefix.as_ref()),
        "ipv4_prefix",
        24,
        32,
    );
    let ipv6_prefix = prefix(
        subnet.and_then(|s| s.ipv6_prefix.as_ref()),
        "ipv6_prefix",
        64,
        128,
    );
    if r.per_source.is_none()
        && r.per_subnet.is_none()
        && r.per_port.is_none()
        && r.per_interface.is_none()
    {
        invalid(
            "per_source".into(),
            None,
            "name at least one limit: `per_source`, `per_subnet`, `per_port` or `per_interface`"
                .into(),
        );
    }
    if !stateful {
        problems.push(PolicyError::Invalid {
            origin: section.clone(),
            message: "rate limits on new connections need connection tracking (`stateful: true`)"
                .into(),
        });
    }
    (problems.len() == before).then_some(LimitsPolicy {
        per_source,
        per_subnet,
        ipv4_prefix,
        ipv6_prefix,
        per_port,
        per_interface,
        origin: section,
    })
}

fn parse_rule(r: &RawRule, origin: Origin, problems: &mut Vec<PolicyError>) -> Option<FwRule> {
    let before = problems.len();
    let mut bad = |message: String| {
        problems.push(PolicyError::Invalid {
            origin: origin.clone(),
            message,
        });
    };
    let direction = match r.direction.as_deref() {
        Some("in") => Some(Direction::In),
        Some("out") => Some(Direction::Out),
        Some(other) => {
            bad(format!("`{other}` is not a direction; use `in` or `out`"));
            None
        }
        None => {
            bad("`direction: in` or `out` is missing".into());
            None
        }
    };
    let proto = match r.proto.as_deref() {
        None | Some("any") => Some(FwProto::Any),
        Some("tcp") => Some(FwProto::Tcp),
        Some("udp") => Some(FwProto::Udp),
        Some("icmp") => Some(FwProto::Icmp),
        Some("icmpv6") => Some(FwProto::Icmpv6),
        Some(other) => {
            bad(format!(
                "`{other}` is not a protocol; use `tcp`, `udp`, `icmp`, `icmpv6` or `any`"
            ));
            None
        }
    };
    let action = match r.action.as_deref() {
        Some("accept") => Some(FwAction::Accept),
        Some("drop") => Some(FwAction::Drop),
        Some("reject") => Some(FwAction::Reject),
        Some(other) => {
            bad(format!(
                "`{other}` is not an action; use `accept`, `drop` or `reject`"
            ));
            None
        }
        None => {
            bad("`action: accept`, `drop` or `reject` is missing".into());
            None
        }
    };
    if r.flows == Some(true) && matches!(action, Some(FwAction::Drop | FwAction::Reject)) {
        bad("`flows: true` goes with `accept` (a rule that admits no connection has no flow to record; `log: true` reports its matches)".into());
    }
    let rate_limit = match &r.rate_limit {
        None => None,
        Some(rate) if rate.per_second == 0 || rate.burst == Some(0) => {
            bad("rate_limit: `per_second` and `burst` must be at least 1".into());
            None
        }
        Some(_) if action == Some(FwAction::Drop) => {
            bad(
                "`rate_limit` goes with `accept` or `reject` (a drop rule has nothing to limit)"
                    .into(),
            );
            None
        }
        Some(rate) => Some(RuleRate {
            per_second: rate.per_second,
            burst: rate.burst.unwrap_or(rate.per_second),
        }),
    };
    // An address or CIDR, or the name of one of the Shield's sets (resolved when the
    // whole policy is compiled, where the sets are known).
    let mut nets = |which: &str, raw: &Option<RawAddrs>| {
        let texts: Vec<&String> = match raw {
            None => Vec::new(),
            Some(RawAddrs::One(t)) => vec![t],
            Some(RawAddrs::List(l)) => l.iter().collect(),
        };
        let (mut out, mut names) = (Vec::new(), Vec::new());
        for text in texts {
            match parse_net(text) {
                Some(net) => out.push(net),
                None if text.contains('/') || text.trim().is_empty() => bad(format!(
                    "{which} `{}` is not an IP address or CIDR",
                    crate::error::excerpt(text, 60)
                )),
                None => names.push(text.trim().to_string()),
            }
        }
        (out, names)
    };
    let (src, src_sets) = nets("src", &r.src);
    let (dst, dst_sets) = nets("dst", &r.dst);
    let mut ports = |which: &str, raw: &Option<RawPorts>| {
        let list: Vec<&RawPort> = match raw {
            None => Vec::new(),
            Some(RawPorts::One(p)) => vec![p],
            Some(RawPorts::List(l)) => l.iter().collect(),
        };
        let mut out = Vec::new();
        for p in list {
            match parse_port(p) {
                Ok(range) => out.push(range),
                Err(message) => bad(format!("{which}: {message}")),
            }
        }
        out
    };
    let sport = ports("sport", &r.sport);
    let dport = ports("dport", &r.dport);
    let mut icmp_type = Vec::new();
    let types: Vec<&RawType> = match &r.icmp_type {
        None => Vec::new(),
        Some(RawTypes::One(t)) => vec![t],
        Some(RawTypes::List(l)) => l.iter().collect(),
    };
    for t in types {
        match t {
            RawType::Number(n) => match u8::try_from(*n) {
                Ok(t) => icmp_type.push(t),
                Err(_) => bad(format!("icmp_type {n} is outside 0-255")),
            },
            RawType::Name(name) => match proto.and_then(|p| icmp_type_named(p, name)) {
                Some(t) => icmp_type.push(t),
                None => bad(format!(
                    "icmp_type `{}` is not a type number or a known name for this protocol (echo-request, echo-reply, destination-unreachable, time-exceeded, ...)",
                    crate::error::excerpt(name, 40)
                )),
            },
        }
    }
    if r.dnat == Some(true) && direction.is_some_and(|d| d != Direction::In) {
        bad("`dnat: true` goes with `direction: in` (a port forward translates the connections that arrive)".into());
    }
    let (Some(direction), Some(proto), Some(action)) = (direction, proto, action) else {
        return None;
    };
    let mut rule = FwRule::new(origin, direction, proto);
    rule.src = src;
    rule.dst = dst;
    rule.sport = sport;
    rule.dport = dport;
    rule.icmp_type = icmp_type;
    rule.action = action;
    rule.comment = r.comment.clone();
    rule.log = r.log.unwrap_or(false);
    rule.flows = r.flows.unwrap_or(false);
    rule.rate_limit = rate_limit;
    rule.dnat = r.dnat.unwrap_or(false);
    rule.src_sets = src_sets;
    rule.dst_sets = dst_sets;
    // What the rule says against itself (ports on icmp, a type on tcp, host bits).
    problems.extend(rule.check());
    (problems.len() == before).then_some(rule)
}

/// `firewall.scrub` and `firewall.quarantine`, each value checked and located.
pub(crate) fn parse_scrub_and_quarantine(
    raw: &Spanned<RawFirewall>,
    host: Option<&HostView>,
    problems: &mut Vec<PolicyError>,
) -> (
    Vec<crate::firewall::ScrubPolicy>,
    Option<crate::firewall::QuarantinePolicy>,
) {
    use crate::firewall::{QuarantinePolicy, QuarantineSet, QuarantineTarget, ScrubPolicy};
    let mut invalid = |field: String, at: Option<(u64, u64)>, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin { field, at },
            message,
        });
    };
    let iface = |field: String,
                 name: &Spanned<String>,
                 invalid: &mut dyn FnMut(String, Option<(u64, u64)>, String)|
     -> Option<String> {
        let at = position(&name.referenced);
        if !valid_ifname(&name.value) {
            invalid(
                field,
                at,
                format!(
                    "`{}` is not an interface name",
                    crate::error::excerpt(&name.value, 40)
                ),
            );
            None
        } else if host.is_some() && !interface_exists(&name.value) {
            invalid(
                field,
                at,
                format!(
                    "this host has no interface `{}` (see `ip link`)",
                    name.value
                ),
            );
            None
        } else {
            Some(name.value.clone())
        }
    };
    let mut scrub = Vec::new();
    for (i, entry) in raw.value.scrub.iter().enumerate() {
        let field = format!("firewall.scrub[{i}]");
        let at = position(&entry.referenced);
        let e = &entry.value;
        let Some(name) = &e.interface else {
            invalid(field, at, "name the `interface`".into());
            continue;
        };
        let Some(interface) = iface(format!("{field}.interface"), name, &mut invalid) else {
            continue;
        };
        if scrub.iter().any(|s: &ScrubPolicy| s.interface == interface) {
            invalid(
                format!("{field}.interface"),
                position(&name.referenced),
                format!("`{interface}` is scrubbed twice"),
            );
            continue;
        }
        let mut number =
            |key: &str, v: &Option<Spanned<u64>>, range: std::ops::RangeInclusive<u64>| match v {
                None => 0,
                Some(n) if range.contains(&n.value) => n.value,
                Some(n) => {
                    invalid(
                        format!("{field}.{key}"),
                        position(&n.referenced),
                        format!("{} is outside {}..={}", n.value, range.start(), range.end()),
                    );
                    0
                }
            };
        let ttl_floor = number("ttl_floor", &e.ttl_floor, 1..=255);
        let hop_limit_floor = number("hop_limit_floor", &e.hop_limit_floor, 1..=255);
        let mss_max = number("mss_max", &e.mss_max, 536..=65535);
        scrub.push(ScrubPolicy {
            interface,
            ttl_floor: u8::try_from(ttl_floor).unwrap_or(0),
            hop_limit_floor: u8::try_from(hop_limit_floor).unwrap_or(0),
            mss_max: u16::try_from(mss_max).unwrap_or(0),
            clear_df: e.clear_df,
            random_ip_id: e.random_ip_id,
            ingress: e.ingress,
            origin: Origin { field, at },
        });
    }
    let quarantine = raw.value.quarantine.as_ref().map(|q| {
        let origin = Origin {
            field: "firewall.quarantine".into(),
            at: position(&q.referenced),
        };
        let mut found = Vec::new();
        let interface_selectors = parse_selectors(
            &q.value.interfaces,
            "firewall.quarantine.interfaces",
            origin.at,
            &mut found,
        );
        let interfaces: Vec<String> = on_host(
            &interface_selectors,
            "firewall.quarantine.interfaces",
            host,
            &mut found,
        )
        .into_iter()
        .map(|i| i.name)
        .collect();
        for e in found {
            if let PolicyError::Invalid { origin, message } = e {
                invalid(origin.field, origin.at, message);
            }
        }
        if q.value.interfaces.is_empty() {
            invalid(
                "firewall.quarantine.interfaces".into(),
                origin.at,
                "name at least one interface".into(),
            );
        }
        let mut sets = Vec::new();
        for (i, set) in q.value.sets.iter().enumerate() {
            let field = format!("firewall.quarantine.sets[{i}]");
            let at = position(&set.referenced);
            let s = &set.value;
            let mut sources = Vec::new();
            for (j, src) in s.sources.iter().enumerate() {
                match crate::config::parse_net(&src.value) {
                    Some(net) => sources.push(net),
                    None => invalid(
                        format!("{field}.sources[{j}]"),
                        position(&src.referenced),
                        format!(
                            "`{}` is not an address or CIDR",
                            crate::error::excerpt(&src.value, 40)
                        ),
                    ),
                }
            }
            if s.sources.is_empty() {
                invalid(field.clone(), at, "name at least one of `sources`".into());
            }
            let given = [
                s.vlan.is_some(),
                s.redirect.is_some(),
                s.redirect_ingress.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                invalid(
                    field,
                    at,
                    "give exactly one of `vlan`, `redirect`, `redirect_ingress`".into(),
                );
                continue;
            }
            let target = if let Some(v) = &s.vlan {
                if !(1..=4094).contains(&v.value) {
                    invalid(
                        format!("{field}.vlan"),
                        position(&v.referenced),
                        format!("{} is outside 1..=4094", v.value),
                    );
                    continue;
                }
                QuarantineTarget::Vlan(u16::try_from(v.value).unwrap_or(1))
            } else if let Some(r) = &s.redirect {
                let Some(n) = iface(format!("{field}.redirect"), r, &mut invalid) else {
                    continue;
                };
                QuarantineTarget::Redirect(n)
            } else if let Some(r) = &s.redirect_ingress {
                let Some(n) = iface(format!("{field}.redirect_ingress"), r, &mut invalid) else {
                    continue;
                };
                QuarantineTarget::RedirectIngress(n)
            } else {
                continue;
            };
            sets.push(QuarantineSet {
                sources,
                target,
                origin: Origin { field, at },
            });
        }
        QuarantinePolicy {
            interfaces,
            interface_selectors,
            sets,
            origin,
        }
    });
    (scrub, quarantine)
}

/// The largest `firewall.ids.depth`: 1 MiB per direction.
pub(crate) const IDS_MAX_DEPTH: u32 = 1 << 20;

/// The `firewall.ids` section: its settings, and its rule files read and parsed (their
/// problems, located in those files, go to `file_problems`). `None` if it has none or
/// anything is wrong.
pub(crate) fn parse_ids(
    raw: &Spanned<RawFirewall>,
    stateful: bool,
    base: &Path,
    problems: &mut Vec<PolicyError>,
    file_problems: &mut Vec<crate::error::Diagnostic>,
) -> Option<crate::firewall::IdsPolicy> {
    use std::hash::{Hash as _, Hasher as _};
    let raw_ids = raw.value.ids.as_ref()?;
    let before = (problems.len(), file_problems.len());
    let origin = Origin {
        field: "firewall.ids".into(),
        at: position(&raw_ids.referenced),
    };
    let ids = &raw_ids.value;
    let mut invalid = |field: &str, at: Option<(u64, u64)>, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin {
                field: format!("firewall.ids.{field}"),
                at: at.or(origin.at),
            },
            message,
        });
    };
    if !stateful {
        invalid(
            "rules",
            None,
            "the IDS needs connection tracking (`stateful: true`)".into(),
        );
    }
    if ids.rules.is_empty() {
        invalid("rules", None, "name at least one rule file".into());
    }
    let depth = match &ids.depth {
        None => 4096,
        Some(d) => match u32::try_from(d.value) {
            Ok(v) if (1..=IDS_MAX_DEPTH).contains(&v) => v,
            _ => {
                invalid(
                    "depth",
                    position(&d.referenced),
                    format!("{} is outside 1..={IDS_MAX_DEPTH} bytes", d.value),
                );
                0
            }
        },
    };
    let sample_every = match &ids.sample_every {
        None => 0,
        Some(n) => u32::try_from(n.value).unwrap_or_else(|_| {
            invalid(
                "sample_every",
                position(&n.referenced),
                format!("{} is outside 0..={}", n.value, u32::MAX),
            );
            0
        }),
    };
    let dry_run = match &ids.mode {
        None => false,
        Some(m) => match m.value.as_str() {
            "enforce" => false,
            "dry-run" => true,
            other => {
                invalid(
                    "mode",
                    position(&m.referenced),
                    format!("`{other}`: `enforce` or `dry-run`"),
                );
                false
            }
        },
    };
    let mut vars = crate::ids::Vars::with_defaults();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (name, value) in &ids.vars {
        vars.set(name, &value.value);
        (name, &value.value).hash(&mut hasher);
    }
    let rule_files: Vec<std::path::PathBuf> =
        ids.rules.iter().map(|p| base.join(&p.value)).collect();
    for path in &rule_files {
        if let Ok(text) = std::fs::read(path) {
            text.hash(&mut hasher);
        }
    }
    let rules = match crate::ids::parse_files(&rule_files, &vars) {
        Ok(rules) => rules,
        Err(e) => {
            file_problems.extend(e.diagnostics);
            Vec::new()
        }
    };
    if (problems.len(), file_problems.len()) != before {
        return None;
    }
    Some(crate::firewall::IdsPolicy {
        rule_files,
        rules: crate::firewall::IdsRules {
            rules: std::sync::Arc::new(rules),
            digest: hasher.finish(),
        },
        depth,
        sample_every,
        dry_run,
        origin,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, reason = "tests fail with a message")]

    use std::path::Path;

    use crate::config::compile_str;
    use crate::firewall::{Direction, FwAction, FwProto};

    /// Each `(line, error)`: `line` under `firewall:` (with `interfaces: [lo]`) gives
    /// exactly one error, which starts with `error`.
    fn assert_each_located(cases: &[(&str, &str)]) {
        for (line, want) in cases {
            let yaml = format!("firewall:\n  interfaces: [lo]\n  {line}\n");
            let errors = errors(&yaml);
            assert_eq!(errors.len(), 1, "{line}: {errors:#?}");
            assert!(
                errors[0].starts_with(want),
                "{line}: {}\n  should start with\n{want}",
                errors[0]
            );
        }
    }

    fn errors(yaml: &str) -> Vec<String> {
        match compile_str(yaml, Path::new("f.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        }
    }

    /// Selectors resolve on this host (its loopback); a check without the host takes
    /// names it lacks (and executables and cgroups that are not there) but still
    /// refuses what is not a selector, with its position.
    #[test]
    fn interface_selectors_resolve_here_and_check_without_a_host() {
        let yaml = "firewall:\n  interfaces: [\"l?\", \"!ironclad-none*\", \"ironclad-fleet*\"]\n";
        let compiled = compile_str(yaml, Path::new("f.yaml")).expect("compiles here");
        let f = compiled.firewall.expect("firewall");
        assert_eq!(f.interfaces.len(), 1, "{:?}", f.interfaces);
        assert_eq!(f.interfaces[0].name, "lo");
        assert_eq!(f.interfaces[0].origin.field, "firewall.interfaces[0]");
        assert_eq!(f.interface_selectors.len(), 3);
        // Nothing of this host matches: the list is refused here, naming what it has.
        let fleet = "firewall:\n  interfaces: [\"ens*\", \"!ens9\"]\n  rules:\n    - {direction: out, proto: tcp, dport: 443, action: accept}\negress:\n  default: allow\n  rules:\n    - {exe: /opt/fleet/bin/agent, dst: 10.0.0.0/8, action: deny}\n    - {cgroup: /sys/fs/cgroup/fleet.slice/agent.service, action: deny}\n";
        let here = errors(fleet);
        assert!(
            here.iter().any(|e| e.starts_with("f.yaml:2:16: firewall.interfaces: [ens*, !ens9] selects no interface of this host (it has ")
                && e.contains("lo")),
            "{here:#?}"
        );
        assert!(
            here.iter().any(|e| e.contains("/opt/fleet/bin/agent")),
            "{here:#?}"
        );
        // Without the host it checks.
        assert_eq!(
            crate::config::check_str_portable(fleet, Path::new("f.yaml"))
                .map_err(|e| e.to_string()),
            Ok(Vec::new())
        );
        // What is not a selector is refused either way, located.
        for bad in ["[\"eth0/1\"]", "[\"!lo\"]", "[\"mac:zz\"]"] {
            let text = format!("firewall:\n  interfaces: {bad}\n");
            let e = crate::config::check_str_portable(&text, Path::new("f.yaml"))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("f.yaml:2:"), "{bad}: {e}");
        }
        // A relative executable is no more right without a host.
        let relative = "egress:\n  rules:\n    - {exe: bin/agent, action: deny}\n";
        assert!(
            crate::config::check_str_portable(relative, Path::new("f.yaml"))
                .expect_err("relative")
                .to_string()
                .contains("not an absolute path")
        );
    }

    #[test]
    fn a_full_section_reads_as_written() {
        let yaml = "\
firewall:
  interfaces: [lo]
  default_inbound: drop
  default_outbound: accept
  mode: dry-run
  table_size: 4096
  timeouts: {tcp_established: 3600, udp: 20}
  rules:
    - direction: in
      proto: tcp
      src: [10.0.0.0/24, 2001:db8::/32]
      dport: 22
      action: accept
      comment: ssh from the admins
    - {direction: in, proto: tcp, dport: [80, \"8000-8100\"], action: accept, rate_limit: {per_second: 50, burst: 200}}
    - {direction: in, proto: icmp, icmp_type: echo-request, action: accept}
    - {direction: in, proto: icmpv6, icmp_type: [128, echo-reply], action: accept}
    - {direction: out, proto: udp, dst: 192.0.2.53, dport: 53, sport: \"1024-65535\", action: drop}
";
        let compiled = compile_str(yaml, Path::new("f.yaml")).expect("compiles");
        let f = compiled.firewall.expect("firewall");
        assert_eq!(f.interfaces.len(), 1);
        assert_eq!(f.interfaces[0].name, "lo");
        assert_eq!(f.interfaces[0].origin.at, Some((2, 16)));
        assert_eq!(f.default_inbound, FwAction::Drop);
        assert!(f.dry_run && f.stateful);
        assert_eq!(f.table_size, 4096);
        assert_eq!(
            (f.timeouts.tcp_established, f.timeouts.udp, f.timeouts.icmp),
            (3600, 20, 30)
        );
        assert_eq!(f.rules.len(), 5);
        let ssh = &f.rules[0];
        assert_eq!(ssh.origin.field, "firewall.rules[0]");
        assert_eq!(ssh.origin.at, Some((9, 7)));
        assert_eq!((ssh.direction, ssh.proto), (Direction::In, FwProto::Tcp));
        assert_eq!(ssh.src.len(), 2);
        assert_eq!(ssh.dport, vec![(22, 22)]);
        assert_eq!(ssh.comment.as_deref(), Some("ssh from the admins"));
        assert_eq!(f.rules[1].dport, vec![(80, 80), (8000, 8100)]);
        assert_eq!(
            f.rules[1].rate_limit,
            Some(crate::firewall::RuleRate {
                per_second: 50,
                burst: 200
            })
        );
        assert_eq!(ssh.rate_limit, None);
        assert_eq!(f.rules[2].icmp_type, vec![8]);
        assert_eq!(f.rules[3].icmp_type, vec![128, 129]);
        assert_eq!(f.rules[4].sport, vec![(1024, 65535)]);
        assert_eq!(f.rules[4].action, FwAction::Drop);
        assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    }

    #[test]
    fn every_bad_rule_is_located_and_nothing_is_compiled() {
        let yaml = "\
firewall:
  interfaces: [lo, ironclad-nope0, lo]
  default_inbound: block
  table_size: 3
  rules:
    - {direction: in, proto: tcp, dport: 70000, action: accept}
    - {direction: in, proto: icmp, dport: 22, action: accept}
    - {direction: in, proto: tcp, icmp_type: 8, action: accept}
    - {direction: sideways, action: accept}
    - {direction: in, proto: tcp, action: deny}
    - {direction: in, src: 10.0.0.1/8, action: drop}
    - {direction: in, src: spamhaus_drop, action: drop}
    - {direction: in, proto: tcp, sport: 0, action: accept, log: true}
    - {direction: in, proto: gre, action: accept}
    - {direction: in, proto: icmp, src: 2001:db8::/32, action: accept}
    - {direction: in, proto: tcp, action: drop, rate_limit: {per_second: 5}}
    - {direction: in, proto: tcp, action: accept, rate_limit: {per_second: 0}}
    - {direction: in, proto: tcp, dport: 23, action: reject, flows: true}
";
        let errors = errors(yaml);
        let expect = [
            "f.yaml:2:20: firewall.interfaces[1]: this host has no interface `ironclad-nope0`",
            "f.yaml:2:36: firewall.interfaces[2]: `lo` is listed twice",
            "f.yaml:3:20: firewall.default_inbound: `block` is not a default",
            "f.yaml:4:15: firewall.table_size: 3 connections is outside 16..=16777216",
            "f.yaml:6:7: firewall.rules[0]: dport: port 70000 is out of range 1-65535",
            "f.yaml:7:7: firewall.rules[1]: `sport`/`dport` need `proto: tcp` or `udp` (this rule has `icmp`)",
            "f.yaml:8:7: firewall.rules[2]: `icmp_type` needs `proto: icmp` or `icmpv6` (this rule has `tcp`)",
            "f.yaml:9:7: firewall.rules[3]: `sideways` is not a direction",
            "f.yaml:10:7: firewall.rules[4]: `deny` is not an action; use `accept`, `drop` or `reject`",
            "f.yaml:11:7: firewall.rules[5]: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
            "f.yaml:12:7: firewall.rules[6]: src `spamhaus_drop` is not an IP address, a CIDR or the name of a shield set (the policy has no shield section)",
            "f.yaml:13:7: firewall.rules[7]: sport: port 0 is out of range 1-65535",
            "f.yaml:14:7: firewall.rules[8]: `gre` is not a protocol",
            "f.yaml:15:7: firewall.rules[9]: `2001:db8::/32`: icmp is IPv4: use `proto: icmpv6`",
            "f.yaml:16:7: firewall.rules[10]: `rate_limit` goes with `accept` or `reject`",
            "f.yaml:17:7: firewall.rules[11]: rate_limit: `per_second` and `burst` must be at least 1",
            "f.yaml:18:7: firewall.rules[12]: `flows: true` goes with `accept`",
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (got, want) in errors.iter().zip(expect) {
            assert!(got.starts_with(want), "{got}\n  should start with\n{want}");
        }
    }

    #[test]
    fn syn_flood_reads_its_ports_and_mode_and_every_mistake_is_located() {
        let policy = compile_str(
            "\
firewall:
  interfaces: [lo]
  syn_flood: {ports: [22, \"8000-8002\"], mode: under_attack, threshold_pps: 5000, hold_seconds: 30}
",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let syn = policy
            .firewall
            .as_ref()
            .and_then(|f| f.syn_flood.clone())
            .expect("syn_flood");
        assert_eq!(syn.ports, vec![(22, 22), (8000, 8002)]);
        assert_eq!(
            syn.port_set().into_iter().collect::<Vec<_>>(),
            vec![22, 8000, 8001, 8002]
        );
        assert_eq!(syn.mode, crate::firewall::SynFloodMode::UnderAttack);
        assert_eq!((syn.threshold_pps, syn.hold_seconds), (5000, 30));
        assert_eq!(syn.origin.field, "firewall.syn_flood");
        let plain = compile_str(
            "firewall:\n  interfaces: [lo]\n  syn_flood: {ports: 443}\n",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let syn = plain.firewall.and_then(|f| f.syn_flood).expect("syn_flood");
        assert_eq!(
            (syn.mode, syn.ports, syn.hold_seconds),
            (crate::firewall::SynFloodMode::Always, vec![(443, 443)], 10)
        );

        let cases = [
            (
                "syn_flood: {mode: always}",
                "f.yaml:3:14: firewall.syn_flood.ports: name the TCP ports to protect",
            ),
            (
                "syn_flood: {ports: [22, 0]}",
                "f.yaml:3:22: firewall.syn_flood.ports[1]: port 0 is out of range 1-65535",
            ),
            (
                "syn_flood: {ports: [22], mode: sometimes}",
                "f.yaml:3:34: firewall.syn_flood.mode: `sometimes` is not a mode; use `always` or `under_attack`",
            ),
            (
                "syn_flood: {ports: [22], mode: under_attack}",
                "f.yaml:3:34: firewall.syn_flood.threshold_pps: `under_attack` needs `threshold_pps`",
            ),
            (
                "syn_flood: {ports: [22], threshold_pps: 10}",
                "f.yaml:3:43: firewall.syn_flood.threshold_pps: `threshold_pps` goes with `mode: under_attack`",
            ),
            (
                "syn_flood: {ports: [22], mode: under_attack, threshold_pps: 0}",
                "f.yaml:3:63: firewall.syn_flood.threshold_pps: 0 is outside 1..=4294967295",
            ),
            (
                "syn_flood: {ports: [22], mode: under_attack, threshold_pps: 9, hold_seconds: 0}",
                "f.yaml:3:80: firewall.syn_flood.hold_seconds: 0 is outside 1..=86400",
            ),
            (
                "syn_flood: {ports: [22], when: always}",
                "f.yaml:3:",
            ),
        ];
        assert_each_located(&cases);
        let errors = errors(
            "firewall:\n  interfaces: [lo]\n  stateful: false\n  syn_flood: {ports: [22]}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "f.yaml:4:14: firewall.syn_flood: SYN cookies need connection tracking"
            ),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn limits_read_each_kind_and_every_mistake_is_located() {
        let policy = compile_str(
            "\
firewall:
  interfaces: [lo]
  limits:
    per_source: {per_second: 20, burst: 40}
    per_subnet: {per_second: 100, ipv4_prefix: 16, ipv6_prefix: 48}
    per_port: {per_second: 500, burst: 1000}
    per_interface: {per_second: 5000}
",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let limits = policy.firewall.and_then(|f| f.limits).expect("limits");
        let rate = |per_second, burst| Some(crate::firewall::RuleRate { per_second, burst });
        assert_eq!(limits.per_source, rate(20, 40));
        assert_eq!(limits.per_subnet, rate(100, 100));
        assert_eq!((limits.ipv4_prefix, limits.ipv6_prefix), (16, 48));
        assert_eq!(limits.per_port, rate(500, 1000));
        assert_eq!(limits.per_interface, rate(5000, 5000));
        assert_eq!(limits.origin.field, "firewall.limits");
        let defaults = compile_str(
            "firewall:\n  interfaces: [lo]\n  limits: {per_subnet: {per_second: 9}}\n",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let limits = defaults.firewall.and_then(|f| f.limits).expect("limits");
        assert_eq!((limits.ipv4_prefix, limits.ipv6_prefix), (24, 64));
        assert_eq!((limits.per_source, limits.per_port), (None, None));

        let cases = [
            (
                "limits: {}",
                "f.yaml:3:11: firewall.limits.per_source: name at least one limit",
            ),
            (
                "limits: {per_port: {burst: 5}}",
                "f.yaml:3:22: firewall.limits.per_port.per_second: name the new connections a second",
            ),
            (
                "limits: {per_source: {per_second: 0}}",
                "f.yaml:3:37: firewall.limits.per_source.per_second: 0 is outside 1..=4294967295",
            ),
            (
                "limits: {per_interface: {per_second: 10, burst: 5000000000}}",
                "f.yaml:3:51: firewall.limits.per_interface.burst: 5000000000 is outside 1..=4294967295",
            ),
            (
                "limits: {per_subnet: {per_second: 10, ipv4_prefix: 33}}",
                "f.yaml:3:54: firewall.limits.per_subnet.ipv4_prefix: 33 is outside 1..=32",
            ),
            (
                "limits: {per_subnet: {per_second: 10, ipv6_prefix: 0}}",
                "f.yaml:3:54: firewall.limits.per_subnet.ipv6_prefix: 0 is outside 1..=128",
            ),
            (
                "limits: {per_source: {per_second: 10, ipv4_prefix: 24}}",
                "f.yaml:3:54: firewall.limits.per_source.ipv4_prefix: `ipv4_prefix` goes with `per_subnet`",
            ),
            ("limits: {per_host: {per_second: 10}}", "f.yaml:3:"),
        ];
        assert_each_located(&cases);
        let errors = errors(
            "firewall:\n  interfaces: [lo]\n  stateful: false\n  limits: {per_port: {per_second: 5}}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "f.yaml:4:11: firewall.limits: rate limits on new connections need connection tracking"
            ),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn syn_flood_and_the_shield_cannot_share_an_interface() {
        let policy = compile_str(
            "firewall:\n  interfaces: [lo]\n  syn_flood: {ports: [22]}\n",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let fw = policy.firewall.expect("firewall");
        assert!(fw.syn_flood_conflict(None).is_none());
        assert!(fw.syn_flood_conflict(Some("eth9")).is_none());
        let e = fw.syn_flood_conflict(Some("lo")).expect("conflict");
        let crate::error::PolicyError::Invalid { origin, message } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(origin.at, Some((3, 14)), "{e}");
        assert!(
            message.starts_with("the Shield holds the XDP hook of `lo` (firewall.interfaces[0])"),
            "{e}"
        );
    }

    #[test]
    fn flow_records_are_asked_per_rule_or_for_every_connection_and_need_tracking() {
        let policy = compile_str(
            "\
firewall:
  interfaces: [lo]
  flows: true
  rules:
    - {direction: in, proto: tcp, dport: 22, action: accept, flows: true}
    - {direction: in, proto: tcp, dport: 80, action: accept}
",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let f = policy.firewall.expect("firewall");
        assert!(f.flows);
        assert_eq!(
            f.rules.iter().map(|r| r.flows).collect::<Vec<_>>(),
            [true, false]
        );
        let errors = errors(
            "\
firewall:
  interfaces: [lo]
  stateful: false
  flows: true
  rules:
    - {direction: in, proto: tcp, dport: 22, action: accept, flows: true}
",
        );
        assert_eq!(
            errors,
            [
                "f.yaml:4:10: firewall.flows: flow records need connection tracking (`stateful: true`)",
                "f.yaml:6:7: firewall.rules[0]: `flows: true` needs connection tracking (`stateful: true`)",
            ]
        );
    }

    #[test]
    fn a_rule_an_earlier_one_covers_is_a_warning_naming_both() {
        let yaml = "\
firewall:
  interfaces: [lo]
  rules:
    - {direction: in, proto: tcp, src: 10.0.0.0/8, action: drop}
    - {direction: in, proto: tcp, src: 10.1.0.0/16, dport: 22, action: accept}
    - {direction: in, proto: udp, src: 10.1.0.0/16, action: accept}
";
        let compiled = compile_str(yaml, Path::new("f.yaml")).expect("compiles");
        let warnings: Vec<String> = compiled.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            vec![
                "f.yaml:5:7: warning: firewall.rules[1]: can never match: firewall.rules[0] (line 4, column 7) comes first and covers it"
                    .to_string()
            ]
        );
    }

    #[test]
    fn the_shields_management_valve_comes_before_every_firewall_rule() {
        let yaml = "\
shield:
  deny: [192.0.2.0/24]
  management: [10.9.0.0/16]
firewall:
  interfaces: [lo]
  default_inbound: drop
  rules:
    - {direction: in, src: 10.0.0.0/8, action: drop}
";
        let f = compile_str(yaml, Path::new("f.yaml"))
            .expect("compiles")
            .firewall
            .expect("firewall");
        assert_eq!(f.rules.len(), 3);
        assert_eq!(f.rules[0].origin.field, "shield.management");
        assert_eq!(
            (f.rules[0].direction, f.rules[0].action),
            (Direction::In, FwAction::Accept)
        );
        assert_eq!(f.rules[0].src, vec!["10.9.0.0/16".parse().expect("net")]);
        assert_eq!(f.rules[1].direction, Direction::Out);
        assert_eq!(f.rules[1].dst, f.rules[0].src);
        assert_eq!(f.rules[2].origin.field, "firewall.rules[0]");
    }

    #[test]
    fn a_section_without_interfaces_or_a_rule_without_action_says_what_is_missing() {
        let errors = errors("firewall:\n  rules:\n    - {direction: in}\n");
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("f.yaml:2:3: firewall.interfaces: name the interfaces"),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with(
                "f.yaml:3:7: firewall.rules[0]: `action: accept`, `drop` or `reject` is missing"
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn rules_name_the_shields_sets_and_keep_their_identity_when_a_feed_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let feed = dir.path().join("c2.txt");
        std::fs::write(&feed, "192.0.2.0/24\n2001:db8:bad::/48\n").expect("feed");
        let yaml = format!(
            "shield:
  deny_feeds:
    - {{path: {}, format: plain}}
firewall:
  interfaces: [lo]
  rules:
    - {{direction: out, dst: [c2, 198.51.100.7], action: reject}}
    - {{direction: in, proto: icmp, src: c2, action: drop}}
    - {{direction: in, src: botnets, action: drop}}
",
            feed.display()
        );
        let policy = dir.path().join("p.yaml");
        let errors: Vec<String> = match compile_str(&yaml, &policy) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains(":9:7: firewall.rules[2]: src `botnets` is not an IP address, a CIDR or the name of a shield set (sets: c2)"),
            "{errors:#?}"
        );
        let yaml = yaml.replace("    - {direction: in, src: botnets, action: drop}\n", "");
        let f = compile_str(&yaml, &policy)
            .expect("compiles")
            .firewall
            .expect("firewall");
        let reject = &f.rules[0];
        assert_eq!(reject.dst_sets, vec!["c2".to_string()]);
        assert_eq!(reject.dst_from_sets, 2);
        assert_eq!(
            reject.dst,
            vec![
                "198.51.100.7/32".parse().expect("net"),
                "192.0.2.0/24".parse().expect("net"),
                "2001:db8:bad::/48".parse().expect("net"),
            ]
        );
        assert_eq!(
            f.rules[1].src,
            vec!["192.0.2.0/24".parse::<ipnetwork::IpNetwork>().expect("net")],
            "an icmp rule takes the set's IPv4 prefixes"
        );
        // The feed changes: the rule's prefixes follow, its identity (and so its
        // counters in the kernel) stays.
        let before = reject.identity();
        std::fs::write(&feed, "192.0.2.0/24\n203.0.113.0/24\n").expect("feed");
        let f2 = compile_str(&yaml, &policy)
            .expect("compiles")
            .firewall
            .expect("firewall");
        assert_eq!(f2.rules[0].dst.len(), 3);
        assert!(f2.rules[0]
            .dst
            .contains(&"203.0.113.0/24".parse().expect("net")));
        assert_eq!(f2.rules[0].identity(), before);
    }
}
