//! NAT in the firewall's programs: port forwards (DNAT, 1:1) and source translation
//! (SNAT, masquerade), IPv4 and IPv6, tied to the connection table. See
//! docs/firewall.md, "NAT", and `struct ic_nat_*` in `bpf-src/include/ironclad.h`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ironclad_core::abi::{
    Counter, CtKey, NatConfig, NatDnatKey, NatKey, NatSnatKey, NatTarget, NatValue, NAT_DNAT,
    NAT_MAX_RULES,
};
use ironclad_policy::nat::{NatPolicy, NatProto, SnatTo};

use super::{address, monotonic_ns, names, open_pinned, Firewall, MapRead};
use crate::attach::ifindex;
use crate::{BpfError, Result};

/// A translation older than this whose connection is not in the table goes with the
/// sweep (a connection is entered just after its translation, and one the rules
/// refused never is).
const ORPHAN_NS: u64 = 10_000_000_000;

/// A port forward: connections arriving on `iface` for `proto` port `dport` (every port
/// when `None`) go to `to` (port `to_port`, or the connection's own).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forward {
    /// The interface connections arrive on.
    pub iface: String,
    /// TCP or UDP.
    pub proto: NatProto,
    /// The port forwarded; `None`: every port (1:1).
    pub dport: Option<u16>,
    /// The target address.
    pub to: IpAddr,
    /// The target port; `None` keeps the connection's.
    pub to_port: Option<u16>,
}

/// A source translation: connections leaving through `iface` from `src` get the source
/// address `to` (and another port when theirs is taken).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceNat {
    /// The interface connections leave through.
    pub iface: String,
    /// The sources translated.
    pub src: IpNetwork,
    /// The new source address (masquerade resolved).
    pub to: IpAddr,
}

/// The NAT rules, as [`Firewall::set_nat`] writes them.
///
/// ```
/// use ironclad_bpf::{Forward, NatSettings, SourceNat};
///
/// let nat = NatSettings::default()
///     .forward(Forward::new("eth0", ironclad_policy::nat::NatProto::Tcp, Some(8080), "10.0.0.5".parse()?, Some(80)))
///     .source(SourceNat::new("eth0", "10.0.0.0/24".parse()?, "192.0.2.1".parse()?));
/// assert_eq!(nat.forwards.len() + nat.sources.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatSettings {
    /// Port forwards; the counter of each is its index.
    pub forwards: Vec<Forward>,
    /// Source translations; the counter of each is its index.
    pub sources: Vec<SourceNat>,
}

impl Forward {
    /// A forward of `proto` port `dport` on `iface` to `to`:`to_port`.
    pub fn new(
        iface: &str,
        proto: NatProto,
        dport: Option<u16>,
        to: IpAddr,
        to_port: Option<u16>,
    ) -> Self {
        Self {
            iface: iface.to_string(),
            proto,
            dport,
            to,
            to_port,
        }
    }
}

impl SourceNat {
    /// Sources `src` leaving through `iface` become `to`.
    pub fn new(iface: &str, src: IpNetwork, to: IpAddr) -> Self {
        Self {
            iface: iface.to_string(),
            src,
            to,
        }
    }
}

/// The first address of `family` (IPv6: global scope first) on `iface`, for
/// masquerade.
pub fn interface_address(iface: &str, v6: bool) -> Option<IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let mut found: Vec<IpAddr> = addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|a| a.is_ipv6() == v6)
        .collect();
    // A link-local IPv6 address cannot be a translated source: prefer any other.
    found.sort_by_key(|a| match a {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    });
    found.first().copied()
}

impl NatSettings {
    /// Adds a port forward.
    pub fn forward(mut self, forward: Forward) -> Self {
        self.forwards.push(forward);
        self
    }

    /// Adds a source translation.
    pub fn source(mut self, source: SourceNat) -> Self {
        self.sources.push(source);
        self
    }

    /// The rules of a policy's `nat:` section, each masquerade resolved to its
    /// interface's address now. A masquerade on an interface with no address of its
    /// sources' family is an error naming the rule's `to` with its line and column.
    pub fn from_policy(
        policy: &NatPolicy,
    ) -> std::result::Result<Self, ironclad_policy::PolicyError> {
        let mut settings = Self::default();
        for d in &policy.dnat {
            settings.forwards.push(Forward::new(
                &d.iface, d.proto, d.dport, d.to.addr, d.to.port,
            ));
        }
        for s in &policy.snat {
            let to = match s.to {
                SnatTo::Addr(addr) => addr,
                _ => interface_address(&s.iface, s.src.is_ipv6()).ok_or_else(|| {
                    let at = s
                        .to_origin
                        .at
                        .map_or(String::new(), |(l, c)| format!(" (line {l}, column {c})"));
                    ironclad_policy::PolicyError::Invalid {
                        origin: s.to_origin.clone(),
                        message: format!(
                            "masquerade{at}: `{}` has no {} address to translate {} to",
                            s.iface,
                            if s.src.is_ipv6() { "IPv6" } else { "IPv4" },
                            s.src
                        ),
                    }
                })?,
                // Other forms are resolved by the policy already.
            };
            settings.sources.push(SourceNat::new(&s.iface, s.src, to));
        }
        Ok(settings)
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty() && self.sources.is_empty()
    }

    /// Checks the rules as [`Firewall::set_nat`] does (interfaces resolved, sizes,
    /// ports, families, repeats), writing nothing.
    pub fn check(&self) -> Result<()> {
        self.images().map(|_| ())
    }

    /// The kernel's entries for these rules, interfaces resolved; checked (nothing is
    /// written by a caller when this fails).
    fn images(&self) -> Result<NatImages> {
        let invalid =
            |field: &'static str, reason: String| Err(BpfError::InvalidConfig { field, reason });
        if self.forwards.len() > NAT_MAX_RULES as usize {
            return invalid(
                "nat.dnat",
                format!("{} forwards; at most {NAT_MAX_RULES}", self.forwards.len()),
            );
        }
        if self.sources.len() > NAT_MAX_RULES as usize {
            return invalid(
                "nat.snat",
                format!(
                    "{} translations; at most {NAT_MAX_RULES}",
                    self.sources.len()
                ),
            );
        }
        let mut images = NatImages::default();
        for (i, f) in self.forwards.iter().enumerate() {
            if f.dport == Some(0) || f.to_port == Some(0) {
                return invalid("nat.dnat", format!("forward {i}: port 0"));
            }
            let key = NatDnatKey {
                ifindex: ifindex(&f.iface)?,
                dport: f.dport.unwrap_or(0),
                proto: f.proto.number(),
                family: if f.to.is_ipv6() { 6 } else { 4 },
            };
            let target = NatTarget {
                addr: mapped(f.to),
                port: f.to_port.unwrap_or(0),
                rule: u16::try_from(i).unwrap_or(u16::MAX),
                _pad0: 0,
            };
            if images
                .dnat
                .insert(key.to_bytes().to_vec(), target.to_bytes().to_vec())
                .is_some()
            {
                return invalid(
                    "nat.dnat",
                    format!(
                        "forward {i} repeats a port another forward on {} has",
                        f.iface
                    ),
                );
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if s.src.is_ipv6() != s.to.is_ipv6() {
                return invalid(
                    "nat.snat",
                    format!(
                        "translation {i}: {} and {} are of different families",
                        s.src, s.to
                    ),
                );
            }
            let (addr, bits) = match s.src {
                IpNetwork::V4(n) => (
                    n.network().to_ipv6_mapped().octets(),
                    96 + u32::from(n.prefix()),
                ),
                IpNetwork::V6(n) => (n.network().octets(), u32::from(n.prefix())),
            };
            let key = NatSnatKey {
                prefixlen: 32 + bits,
                ifindex: ifindex(&s.iface)?.to_be(),
                addr,
            };
            let target = NatTarget {
                addr: mapped(s.to),
                port: 0,
                rule: u16::try_from(i).unwrap_or(u16::MAX),
                _pad0: 0,
            };
            if images
                .snat
                .insert(key.to_bytes().to_vec(), target.to_bytes().to_vec())
                .is_some()
            {
                return invalid(
                    "nat.snat",
                    format!("translation {i} repeats {} on {}", s.src, s.iface),
                );
            }
        }
        Ok(images)
    }
}

/// The kernel entries of a set of rules.
#[derive(Default)]
struct NatImages {
    dnat: BTreeMap<Vec<u8>, Vec<u8>>,
    snat: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// One translated connection, as `full_firewall conntrack` shows it beside the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Translation {
    /// `dnat` or `snat`.
    pub kind: &'static str,
    /// The rule (its index in `nat.dnat` or `nat.snat`).
    pub rule: u16,
    /// The outside's view of the translated end: for a forward, the address and port
    /// the client connected to; for a source translation, the source the peer sees.
    pub outside: (IpAddr, u16),
    /// The inside's: the forward's target, or the source as it is.
    pub inside: (IpAddr, u16),
}

/// The translations in `map`, by the connection they belong to.
fn read_translations(map: &impl MapRead) -> Result<BTreeMap<[u8; CtKey::SIZE], Translation>> {
    let mut out = BTreeMap::new();
    for key in map.keys() {
        let Some(value) = map.get(&key)? else {
            continue;
        };
        let (Some(k), Some(v)) = (NatKey::from_bytes(&key), NatValue::from_bytes(&value)) else {
            continue;
        };
        if v.reply != 0 {
            continue;
        }
        let t = if v.kind == NAT_DNAT {
            Translation {
                kind: "dnat",
                rule: v.rule,
                outside: (address(k.dst), k.dport),
                inside: (address(v.addr), v.port),
            }
        } else {
            Translation {
                kind: "snat",
                rule: v.rule,
                outside: (address(v.addr), v.port),
                inside: (address(k.src), k.sport),
            }
        };
        out.insert(v.ct.to_bytes(), t);
    }
    Ok(out)
}

/// Attaches each connection's translation (by its key).
pub(super) fn annotate(connections: &mut [super::Connection], map: &impl MapRead) -> Result<()> {
    let translations = read_translations(map)?;
    if translations.is_empty() {
        return Ok(());
    }
    for c in connections.iter_mut() {
        c.nat = translations.get(&c.key_bytes()).cloned();
    }
    Ok(())
}

/// The packets and bytes each rule translated: (forwards, source translations), by
/// index.
fn read_counters(map: &impl MapRead) -> Result<(Vec<Counter>, Vec<Counter>)> {
    let mut forwards = Vec::new();
    let mut sources = Vec::new();
    for slot in 0..2 * NAT_MAX_RULES {
        let c = super::sum_counter(map, &slot.to_ne_bytes())?;
        if slot < NAT_MAX_RULES {
            forwards.push(c);
        } else {
            sources.push(c);
        }
    }
    Ok((forwards, sources))
}

/// What `status` shows of NAT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatStatus {
    /// Port forwards configured.
    pub forwards: usize,
    /// Source translations configured.
    pub sources: usize,
    /// Packets and bytes each forward translated, by index (as many as configured).
    pub forward_counters: Vec<Counter>,
    /// Packets and bytes each source translation translated, by index.
    pub source_counters: Vec<Counter>,
    /// Directions of translated connections held (two per connection).
    pub entries: usize,
}

pub(super) fn status(
    dnat: &impl MapRead,
    snat: &impl MapRead,
    counters: &impl MapRead,
    map: &impl MapRead,
) -> Result<NatStatus> {
    let forwards = dnat.keys().len();
    let sources = snat.keys().len();
    let (mut forward_counters, mut source_counters) = read_counters(counters)?;
    forward_counters.truncate(forwards);
    source_counters.truncate(sources);
    Ok(NatStatus {
        forwards,
        sources,
        forward_counters,
        source_counters,
        entries: map.keys().len(),
    })
}

impl Firewall {
    /// Makes `nat` the live NAT rules. Every interface is resolved and every rule
    /// checked first: a refusal writes nothing. New and changed rules are written, then
    /// the ones that went are removed (a packet meanwhile may meet either); connections
    /// already translated keep their translation until they end. Counters are kept by
    /// position (`nat.dnat[0]`, …) and never reset: a reload that reorders the rules
    /// carries a position's count over to the rule now there.
    pub fn set_nat(&self, nat: &NatSettings) -> Result<()> {
        let images = nat.images()?;
        let dnat = self.object.map(names::ic_nat_dnat)?;
        let snat = self.object.map(names::ic_nat_snat)?;
        let config = self.object.map(names::ic_nat_config)?;
        let replace = |map: &crate::loader::AuditedMap<'_>,
                       want: &BTreeMap<Vec<u8>, Vec<u8>>|
         -> Result<()> {
            let have: BTreeSet<Vec<u8>> = map.keys().into_iter().collect();
            for (k, v) in want {
                map.update(k, v)?;
            }
            for k in have.iter().filter(|k| !want.contains_key(*k)) {
                map.delete(k)?;
            }
            Ok(())
        };
        if !nat.is_empty() {
            replace(&dnat, &images.dnat)?;
            replace(&snat, &images.snat)?;
        }
        let active = NatConfig {
            active: u32::from(!nat.is_empty()),
            _pad0: 0,
        };
        config.update(&0u32.to_ne_bytes(), &active.to_bytes())?;
        if nat.is_empty() {
            replace(&dnat, &images.dnat)?;
            replace(&snat, &images.snat)?;
        }
        Ok(())
    }

    /// The NAT rules' counters and the translations held.
    pub fn nat_status(&self) -> Result<NatStatus> {
        status(
            &self.object.map(names::ic_nat_dnat)?,
            &self.object.map(names::ic_nat_snat)?,
            &self.object.map(names::ic_nat_counters)?,
            &self.object.map(names::ic_nat_map)?,
        )
    }

    /// [`nat_status`](Self::nat_status) read from the pins under `pin_root`.
    pub fn nat_status_from_pins(pin_root: &std::path::Path) -> Result<NatStatus> {
        status(
            &open_pinned(pin_root, names::ic_nat_dnat)?,
            &open_pinned(pin_root, names::ic_nat_snat)?,
            &open_pinned(pin_root, names::ic_nat_counters)?,
            &open_pinned(pin_root, names::ic_nat_map)?,
        )
    }

    /// Removes the translations whose connection has left the table (the sweep calls
    /// it after expiring connections). Returns how many went.
    pub(super) fn expire_translations(&self) -> Result<usize> {
        let map = self.object.map(names::ic_nat_map)?;
        let keys = map.keys();
        if keys.is_empty() {
            return Ok(0);
        }
        let ct = self.object.map(names::ic_fw_ct)?;
        let now = monotonic_ns();
        let mut orphans = Vec::new();
        for key in keys {
            let Some(v) = map.lookup(&key)?.and_then(|b| NatValue::from_bytes(&b)) else {
                continue;
            };
            if now.saturating_sub(v.created_ns) > ORPHAN_NS
                && ct.lookup(&v.ct.to_bytes())?.is_none()
            {
                orphans.push(key);
            }
        }
        map.delete_each(orphans.iter().map(Vec::as_slice), |_| {})
    }
}
