//! The `nat:` section: port forwards (`dnat`) and source translation (`snat`, with
//! `masquerade`), run by the stateful firewall on its interfaces. Every mistake is
//! located at its line and column; see docs/firewall.md, "NAT".
//!
//! ```
//! use ironclad_policy::config::compile_str;
//!
//! let policy = compile_str(
//!     "firewall:\n  interfaces: [lo]\nnat:\n  dnat:\n    - {iface: lo, proto: tcp, dport: 8080, to: \"10.0.0.5:80\"}\n  snat:\n    - {iface: lo, src: 10.0.0.0/24, to: masquerade}\n",
//!     std::path::Path::new("p.yaml"),
//! )?;
//! let nat = policy.firewall.and_then(|f| f.nat).expect("nat");
//! assert_eq!(nat.dnat[0].to.to_string(), "10.0.0.5:80");
//! # Ok::<(), ironclad_policy::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{parse_net, position};
use crate::error::{Origin, PolicyError};
use crate::firewall::FirewallPolicy;

/// The most port forwards, and the most source translations, a policy may have (the
/// kernel's tables are sized for them).
pub const MAX_NAT_RULES: usize = 256;

/// A line and column in the policy file.
type At = Option<(u64, u64)>;
/// A problem found: the field, where, and the message.
type Problem = (String, At, String);
/// A forward's identity: interface, protocol, port (`None`: every port), IPv6.
type ForwardKey = (String, NatProto, Option<u16>, bool);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNat {
    #[serde(default)]
    dnat: Vec<Spanned<RawDnat>>,
    #[serde(default)]
    snat: Vec<Spanned<RawSnat>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnat {
    iface: Option<Spanned<String>>,
    proto: Option<Spanned<String>>,
    dport: Option<Spanned<u64>>,
    to: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnat {
    iface: Option<Spanned<String>>,
    src: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
}

/// A protocol NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NatProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl NatProto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// Where a forward sends connections: an address, and a port (`None`: the port the
/// connection was made to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct NatTarget {
    /// The address connections are forwarded to.
    pub addr: IpAddr,
    /// The port; `None` keeps the connection's.
    pub port: Option<u16>,
}

impl std::fmt::Display for NatTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.addr, self.port) {
            (addr, None) => write!(f, "{addr}"),
            (addr, Some(port)) => write!(f, "{}", SocketAddr::new(addr, port)),
        }
    }
}

/// `nat.dnat[]`: connections arriving on `iface` for `proto` port `dport` (every port
/// when `None`: 1:1) are forwarded to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnatRule {
    /// The interface connections arrive on (one of `firewall.interfaces`).
    pub iface: String,
    /// TCP or UDP.
    pub proto: NatProto,
    /// The port forwarded; `None`: every port (1:1 NAT).
    pub dport: Option<u16>,
    /// Where to.
    pub to: NatTarget,
    /// Where the rule was written.
    pub origin: Origin,
}

/// What a source translation rewrites the source address to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnatTo {
    /// This address.
    Addr(IpAddr),
    /// The interface's own address of the connection's family, read when the policy is
    /// applied.
    Masquerade,
}

/// `nat.snat[]`: connections leaving through `iface` from `src` get their source
/// rewritten to `to` (and a free port when theirs is taken).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnatRule {
    /// The interface connections leave through (one of `firewall.interfaces`).
    pub iface: String,
    /// The sources translated.
    pub src: IpNetwork,
    /// The new source.
    pub to: SnatTo,
    /// Where the rule was written.
    pub origin: Origin,
    /// Where its `to` was written (a masquerade the interface cannot serve is reported
    /// there).
    pub to_origin: Origin,
}

/// The `nat:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatPolicy {
    /// Port forwards, in policy order.
    pub dnat: Vec<DnatRule>,
    /// Source translations, in policy order (the longest `src` prefix wins).
    pub snat: Vec<SnatRule>,
}

/// Parses `to:` of a forward: `ADDR`, `ADDR:PORT` or `[ADDR6]:PORT`.
fn parse_target(text: &str) -> Result<NatTarget, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(NatTarget { addr, port: None });
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        if sock.port() == 0 {
            return Err(format!("`{text}`: port 0 is out of range 1-65535"));
        }
        return Ok(NatTarget {
            addr: sock.ip(),
            port: Some(sock.port()),
        });
    }
    if let Some((addr, port)) = text.rsplit_once(':') {
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if addr.parse::<IpAddr>().is_ok() {
            return Err(format!("`{text}`: port `{port}` is out of range 1-65535"));
        }
    }
    Err(format!(
        "`{text}` is not an address: write ADDR, ADDR:PORT or [IPV6]:PORT (`10.0.0.5:80`, `[fd00::5]:80`)"
    ))
}

pub(crate) fn parse(
    raw: &Spanned<RawNat>,
    firewall: Option<&FirewallPolicy>,
    problems: &mut Vec<PolicyError>,
) -> Option<NatPolicy> {
    let before = problems.len();
    let section_at = position(&raw.referenced);
    let mut invalid = |field: String, at: Option<(u64, u64)>, message: String| {
        problems.push(PolicyError::Invalid {
            origin: Origin {
                field,
                at: at.or(section_at),
            },
            message,
        });
    };
    let Some(firewall) = firewall else {
        invalid(
            "nat".into(),
            section_at,
            "NAT runs in the stateful firewall: add a `firewall:` section with the interfaces"
                .into(),
        );
        return None;
    };
    if !firewall.stateful {
        invalid(
            "nat".into(),
            section_at,
            "NAT needs connection tracking (`firewall.stateful: true`): replies are translated back by their connection".into(),
        );
    }
    let raw = &raw.value;
    // The interface of a rule, which must be one the firewall runs on.
    let iface = |field: &str,
                 value: &Option<Spanned<String>>,
                 at: Option<(u64, u64)>|
     -> Result<String, Problem> {
        let Some(v) = value else {
            return Err((
                format!("{field}.iface"),
                at,
                "name the interface (one of firewall.interfaces)".into(),
            ));
        };
        let name = v.value.trim();
        if firewall.covers_interface(name) {
            return Ok(name.to_string());
        }
        // The interfaces on this host, or (a check without a host) the selectors.
        let listed: Vec<String> = if firewall.interfaces.is_empty() {
            firewall
                .interface_selectors
                .iter()
                .map(|s| s.selector.to_string())
                .collect()
        } else {
            firewall.interfaces.iter().map(|i| i.name.clone()).collect()
        };
        Err((
            format!("{field}.iface"),
            position(&v.referenced),
            format!(
                "`{name}` is not one of firewall.interfaces ({}): NAT runs in the firewall's programs on them",
                listed.join(", ")
            ),
        ))
    };
    let mut policy = NatPolicy::default();
    for (kind, count) in [("dnat", raw.dnat.len()), ("snat", raw.snat.len())] {
        if count > MAX_NAT_RULES {
            invalid(
                format!("nat.{kind}"),
                None,
                format!("{count} rules; at most {MAX_NAT_RULES}"),
            );
        }
    }
    // (iface, proto, port, family) -> the rule that has it first.
    let mut forwards: BTreeMap<ForwardKey, (String, At)> = BTreeMap::new();
    for (i, item) in raw.dnat.iter().enumerate() {
        let field = format!("nat.dnat[{i}]");
        let at = position(&item.referenced);
        let r = &item.value;
        let name = iface(&field, &r.iface, at)
            .map_err(|(f, a, m)| invalid(f, a, m))
            .ok();
        let proto = match r
            .proto
            .as_ref()
            .map(|p| (p.value.trim(), position(&p.referenced)))
        {
            Some(("tcp", _)) => Some(NatProto::Tcp),
            Some(("udp", _)) => Some(NatProto::Udp),
            Some((other, pat)) => {
                invalid(
                    format!("{field}.proto"),
                    pat,
                    format!("`{other}` cannot be forwarded; use `tcp` or `udp`"),
                );
                None
            }
            None => {
                invalid(
                    format!("{field}.proto"),
                    at,
                    "name the protocol forwarded (`tcp` or `udp`)".into(),
                );
                None
            }
        };
        let dport = match &r.dport {
            None => Some(None),
            Some(p) => match u16::try_from(p.value) {
                Ok(port) if port > 0 => Some(Some(port)),
                _ => {
                    invalid(
                        format!("{field}.dport"),
                        position(&p.referenced),
                        format!("port {} is out of range 1-65535", p.value),
                    );
                    None
                }
            },
        };
        let to = match &r.to {
            None => {
                invalid(
                    format!("{field}.to"),
                    at,
                    "name where connections go (`to: 10.0.0.5:80`)".into(),
                );
                None
            }
            Some(t) => match parse_target(&t.value) {
                Ok(target) => {
                    if target.port.is_some() && matches!(dport, Some(None)) {
                        invalid(
                            format!("{field}.to"),
                            position(&t.referenced),
                            "a target port needs `dport` (a forward of every port keeps each connection's port)".into(),
                        );
                        None
                    } else {
                        Some(target)
                    }
                }
                Err(e) => {
                    invalid(format!("{field}.to"), position(&t.referenced), e);
                    None
                }
            },
        };
        let (Some(name), Some(proto), Some(dport), Some(to)) = (name, proto, dport, to) else {
            continue;
        };
        let key = (name.clone(), proto, dport, to.addr.is_ipv6());
        if let Some((first, first_at)) = forwards.get(&key) {
            let port = dport.map_or("every port".to_string(), |p| format!("port {p}"));
            let line = first_at.map_or(String::new(), |(l, c)| format!(" (line {l}, column {c})"));
            invalid(
                field.clone(),
                at,
                format!(
                    "{first}{line} already forwards {} {port} on {name} for {}; one forward per port",
                    proto.name(),
                    if to.addr.is_ipv6() { "IPv6" } else { "IPv4" }
                ),
            );
            continue;
        }
        // SYN cookies are answered in XDP before any translation, and the ACK that
        // completes one would reach this host's own (absent) listener: a forwarded TCP
        // port cannot be protected by them.
        if let (NatProto::Tcp, Some(syn)) = (proto, firewall.syn_flood.as_ref()) {
            let protected = syn.port_set();
            let clash = match dport {
                Some(p) => protected.contains(&p).then_some(p),
                None => protected.iter().next().copied(),
            };
            if let Some(port) = clash {
                let line = syn
                    .origin
                    .at
                    .map_or(String::new(), |(l, c)| format!(" (line {l}, column {c})"));
                invalid(
                    field.clone(),
                    at,
                    format!(
                        "forwards TCP port {port}, which firewall.syn_flood{line} protects: its cookies are answered before translation, so the handshake would end on this host; protect the port on the target's host instead"
                    ),
                );
                continue;
            }
        }
        forwards.insert(key, (field.clone(), at));
        policy.dnat.push(DnatRule {
            iface: name,
            proto,
            dport,
            to,
            origin: Origin { field, at },
        });
    }
    let mut sources: BTreeMap<(String, IpNetwork), String> = BTreeMap::new();
    for (i, item) in raw.snat.iter().enumerate() {
        let field = format!("nat.snat[{i}]");
        let at = position(&item.referenced);
        let r = &item.value;
        let name = iface(&field, &r.iface, at)
            .map_err(|(f, a, m)| invalid(f, a, m))
            .ok();
        let src = match &r.src {
            None => {
                invalid(
                    format!("{field}.src"),
                    at,
                    "name the sources translated (`src: 10.0.0.0/24`)".into(),
                );
                None
            }
            Some(s) => match parse_net(&s.value) {
                Some(net) if net.network() == net.ip() => Some(net),
                Some(net) => {
                    invalid(
                        format!("{field}.src"),
                        position(&s.referenced),
                        format!(
                            "`{}` has host bits set; did you mean `{}/{}`?",
                            s.value.trim(),
                            net.network(),
                            net.prefix()
                        ),
                    );
                    None
                }
                None => {
                    invalid(
                        format!("{field}.src"),
                        position(&s.referenced),
                        format!(
                            "`{}` is not an address or a CIDR with no host bits set",
                            s.value.trim()
                        ),
                    );
                    None
                }
            },
        };
        let to = match &r.to {
            None => {
                invalid(
                    format!("{field}.to"),
                    at,
                    "name the new source: an address or `masquerade`".into(),
                );
                None
            }
            Some(t) if t.value.trim() == "masquerade" => {
                Some((SnatTo::Masquerade, position(&t.referenced)))
            }
            Some(t) => match t.value.trim().parse::<IpAddr>() {
                Ok(addr) => Some((SnatTo::Addr(addr), position(&t.referenced))),
                Err(_) => {
                    invalid(
                        format!("{field}.to"),
                        position(&t.referenced),
                        format!("`{}` is not an address (or `masquerade`)", t.value.trim()),
                    );
                    None
                }
            },
        };
        let (Some(name), Some(src), Some((to, to_at))) = (name, src, to) else {
            continue;
        };
        if let SnatTo::Addr(addr) = to {
            if addr.is_ipv6() != src.is_ipv6() {
                invalid(
                    format!("{field}.to"),
                    to_at,
                    format!("{addr} and the sources {src} are of different families"),
                );
                continue;
            }
        }
        if let Some(first) = sources.get(&(name.clone(), src)) {
            invalid(
                field.clone(),
                at,
                format!("{first} already translates {src} on {name}"),
            );
            continue;
        }
        sources.insert((name.clone(), src), field.clone());
        policy.snat.push(SnatRule {
            iface: name,
            src,
            to,
            origin: Origin {
                field: field.clone(),
                at,
            },
            to_origin: Origin {
                field: format!("{field}.to"),
                at: to_at,
            },
        });
    }
    (problems.len() == before).then_some(policy)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::compile_str;

    fn errors(yaml: &str) -> Vec<String> {
        match compile_str(yaml, Path::new("f.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    /// A rule that admits a forward's target admits connections made to it directly
    /// (red team round 3, L4): `check` says so, and `dnat: true` limits a rule to what
    /// a forward translated.
    #[test]
    fn rules_for_forwarded_connections_only_and_a_warning_for_those_that_admit_a_target_directly() {
        let yaml = "\
firewall:
  interfaces: [lo]
  rules:
    - {direction: in, proto: tcp, dport: 80, action: accept}
    - {direction: in, proto: udp, dport: 53, action: accept, dnat: true}
    - {direction: in, proto: udp, dst: 10.9.0.0/16, dport: 53, action: accept}
nat:
  dnat:
    - {iface: lo, proto: tcp, dport: 8080, to: \"10.0.0.5:80\"}
    - {iface: lo, proto: udp, dport: 5353, to: \"10.0.0.5:53\"}
";
        let compiled = compile_str(yaml, Path::new("f.yaml")).expect("compiles");
        let warnings: Vec<String> = compiled.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["f.yaml:4:7: warning: firewall.rules[0]: admits tcp port 80 of 10.0.0.5 (the target of nat.dnat[0]), and so connections made to it directly, not only those forwarded; add `dnat: true` to admit only forwarded ones"]
        );
        let rules = compiled.firewall.expect("firewall").rules;
        assert_eq!(
            rules.iter().map(|r| r.dnat).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert_eq!(
            errors("firewall:\n  interfaces: [lo]\n  rules:\n    - {direction: out, proto: tcp, action: accept, dnat: true}\nnat:\n  dnat:\n    - {iface: lo, proto: tcp, dport: 8080, to: 10.0.0.5}\n"),
            ["f.yaml:4:7: firewall.rules[0]: `dnat: true` goes with `direction: in` (a port forward translates the connections that arrive)"]
        );
        assert_eq!(
            errors("firewall:\n  interfaces: [lo]\n  rules:\n    - {direction: in, proto: tcp, action: accept, dnat: true}\n"),
            ["f.yaml:4:7: firewall.rules[0]: `dnat: true` matches only connections a port forward translated, and `nat.dnat` has none"]
        );
    }

    #[test]
    fn forwards_and_translations_read_with_their_targets() {
        let policy = compile_str(
            "\
firewall:
  interfaces: [lo]
nat:
  dnat:
    - {iface: lo, proto: tcp, dport: 8080, to: \"10.0.0.5:80\"}
    - {iface: lo, proto: udp, dport: 53, to: \"[fd00::5]:5353\"}
    - {iface: lo, proto: tcp, to: 10.0.0.6}
  snat:
    - {iface: lo, src: 10.0.0.0/24, to: masquerade}
    - {iface: lo, src: fd00::/64, to: \"2001:db8::1\"}
",
            Path::new("f.yaml"),
        )
        .expect("compiles");
        let nat = policy.firewall.and_then(|f| f.nat).expect("nat");
        let forwards: Vec<String> = nat
            .dnat
            .iter()
            .map(|d| format!("{} {:?} {}", d.proto.name(), d.dport, d.to))
            .collect();
        assert_eq!(
            forwards,
            vec![
                "tcp Some(8080) 10.0.0.5:80",
                "udp Some(53) [fd00::5]:5353",
                "tcp None 10.0.0.6"
            ]
        );
        assert_eq!(nat.dnat[0].origin.at, Some((5, 7)));
        assert_eq!(nat.snat[0].to, super::SnatTo::Masquerade);
        assert_eq!(nat.snat[0].to_origin.field, "nat.snat[0].to");
        assert_eq!(
            nat.snat[1].to,
            super::SnatTo::Addr("2001:db8::1".parse().expect("ip"))
        );
    }

    #[test]
    fn every_mistake_is_located() {
        let cases = [
            (
                "  dnat:\n    - {iface: lo, proto: tcp, dport: 80, to: example.com}",
                "f.yaml:5:46: nat.dnat[0].to: `example.com` is not an address",
            ),
            (
                "  dnat:\n    - {iface: lo, proto: tcp, dport: 70000, to: 10.0.0.5}",
                "f.yaml:5:38: nat.dnat[0].dport: port 70000 is out of range 1-65535",
            ),
            (
                "  dnat:\n    - {iface: lo, proto: tcp, dport: 80, to: \"10.0.0.5:0\"}",
                "f.yaml:5:46: nat.dnat[0].to: `10.0.0.5:0`: port 0 is out of range",
            ),
            (
                "  dnat:\n    - {iface: lo, proto: tcp, dport: 80, to: \"10.0.0.5:99999\"}",
                "f.yaml:5:46: nat.dnat[0].to: `10.0.0.5:99999`: port `99999` is out of range",
            ),
            (
                "  dnat:\n    - {iface: lo, proto: tcp, dport: 80, to: 10.0.0.5}\n    - {iface: lo, proto: tcp, dport: 80, to: 10.0.0.6}",
                "f.yaml:6:7: nat.dnat[1]: nat.dnat[0] (line 5, column 7) already forwards tcp port 80 on lo",
            ),
            (
                "  dnat:\n    - {iface: lo, proto: icmp, dport: 80, to: 10.0.0.5}",
                "f.yaml:5:26: nat.dnat[0].proto: `icmp` cannot be forwarded",
            ),
            (
                "  dnat:\n    - {iface: eth7, proto: tcp, dport: 80, to: 10.0.0.5}",
                "f.yaml:5:15: nat.dnat[0].iface: `eth7` is not one of firewall.interfaces (lo)",
            ),
            (
                "  dnat:\n    - {iface: lo, proto: tcp, to: \"10.0.0.5:80\"}",
                "f.yaml:5:35: nat.dnat[0].to: a target port needs `dport`",
            ),
            (
                "  snat:\n    - {iface: lo, src: 10.0.0.1/24, to: masquerade}",
                "f.yaml:5:24: nat.snat[0].src: `10.0.0.1/24` has host bits set; did you mean `10.0.0.0/24`?",
            ),
            (
                "  snat:\n    - {iface: lo, src: 10.0.0.0/24, to: \"fd00::1\"}",
                "f.yaml:5:41: nat.snat[0].to: fd00::1 and the sources 10.0.0.0/24 are of different families",
            ),
            (
                "  snat:\n    - {iface: lo, src: 10.0.0.0/24, to: masq}",
                "f.yaml:5:41: nat.snat[0].to: `masq` is not an address (or `masquerade`)",
            ),
            (
                "  snat:\n    - {iface: lo, src: 10.0.0.0/24, to: masquerade}\n    - {iface: lo, src: 10.0.0.0/24, to: 10.9.9.9}",
                "f.yaml:6:7: nat.snat[1]: nat.snat[0] already translates 10.0.0.0/24 on lo",
            ),
            ("  forward: []", "f.yaml:4:"),
        ];
        for (section, want) in cases {
            let yaml = format!("firewall:\n  interfaces: [lo]\nnat:\n{section}\n");
            let errors = errors(&yaml);
            assert_eq!(errors.len(), 1, "{section}: {errors:#?}");
            assert!(
                errors[0].starts_with(want),
                "{section}: {}\n  should start with\n{want}",
                errors[0]
            );
        }
        let errors = errors("nat:\n  dnat: []\n");
        assert!(
            errors.len() == 1 && errors[0].contains("nat: NAT runs in the stateful firewall"),
            "{errors:#?}"
        );
        let errors = errors_of_stateless();
        assert!(
            errors.len() == 1 && errors[0].contains("NAT needs connection tracking"),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_forwarded_port_cannot_also_be_protected_by_syn_cookies() {
        let errors = errors(
            "firewall:\n  interfaces: [lo]\n  syn_flood: {ports: [22, 8080]}\nnat:\n  dnat:\n    - {iface: lo, proto: udp, dport: 8080, to: 10.0.0.5}\n    - {iface: lo, proto: tcp, dport: 8080, to: 10.0.0.5}\n    - {iface: lo, proto: tcp, to: 10.0.0.6}\n",
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("f.yaml:7:7: nat.dnat[1]: forwards TCP port 8080, which firewall.syn_flood (line 3, column 14) protects"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("f.yaml:8:7: nat.dnat[2]: forwards TCP port 22"),
            "{}",
            errors[1]
        );
    }

    fn errors_of_stateless() -> Vec<String> {
        errors("firewall:\n  interfaces: [lo]\n  stateful: false\nnat:\n  snat:\n    - {iface: lo, src: 10.0.0.0/8, to: masquerade}\n")
    }
}
