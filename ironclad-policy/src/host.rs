//! Interface selectors and the host they are resolved against.
//!
//! `firewall.interfaces` (and `firewall.quarantine.interfaces`) name interfaces by
//! selector, so that one policy fits hosts whose interfaces are named differently (a
//! fleet's ConfigMap):
//!
//! | selector | selects |
//! |---|---|
//! | `eth0` | the interface `eth0`, or the one with the alternative name `eth0` (`ip link property add altname`) |
//! | `eth*`, `enp?s0` | every interface whose name matches (`*` any run of characters, `?` one) |
//! | `auto` | the interfaces the IPv4 and IPv6 default routes leave through (loopback never) |
//! | `mac:52:54:00:12:34:56` | the interface with that hardware address |
//! | `!lo`, `!docker*`, ... | none of what the selector after `!` selects, whatever else selects it |
//!
//! A policy is compiled against the network namespace it runs in: the selectors resolve
//! to that host's interfaces there (a name it lacks, or selectors that select nothing,
//! are errors with their position). An agent resolves them again when interfaces
//! appear or vanish ([`HostView::read`] and [`crate::firewall::FirewallPolicy::resolve_interfaces`]).
//! `check --portable` ([`crate::config::check_str_portable`]) checks the selectors
//! without a host.
//!
//! ```
//! use ironclad_policy::host::{HostInterface, HostView, InterfaceSelector};
//!
//! let host = HostView::of(
//!     vec![HostInterface::new("lo"), HostInterface::new("ens5"), HostInterface::new("docker0")],
//!     ["ens5".to_string()].into(),
//! );
//! let pick = |text: &str| InterfaceSelector::parse(text).expect("a selector");
//! let chosen = host.select(&[pick("e*"), pick("d*"), pick("!docker*")]);
//! assert_eq!(chosen, vec![("ens5".to_string(), 0)]);
//! assert_eq!(host.select(&[pick("auto")]), vec![("ens5".to_string(), 0)]);
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::error::{Origin, PolicyError};
use crate::firewall::FirewallInterface;

/// What a selector selects (see the [module](self) documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selects {
    /// One interface by its name or an alternative name.
    Name(String),
    /// Every interface whose name matches a pattern with `*` and `?`.
    Pattern(String),
    /// The interfaces of the default routes.
    Auto,
    /// The interface with this hardware address.
    Mac([u8; 6]),
}

/// One entry of an interface list: what it selects, and whether it excludes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceSelector {
    /// What it selects.
    pub selects: Selects,
    /// `!`: it takes out what it selects.
    pub exclude: bool,
}

/// Why a selector's text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

impl InterfaceSelector {
    /// Reads one selector (`eth0`, `eth*`, `!lo`, `auto`, `mac:52:54:00:12:34:56`).
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let text = text.trim();
        let (exclude, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, text),
        };
        let selects = if body == "auto" {
            Selects::Auto
        } else if let Some(mac) = body.strip_prefix("mac:") {
            Selects::Mac(parse_mac(mac).ok_or_else(|| {
                SelectorError(format!(
                    "`{}` is not a hardware address (six hexadecimal bytes, `52:54:00:12:34:56`)",
                    crate::error::excerpt(mac, 40)
                ))
            })?)
        } else if body.contains(['*', '?']) {
            // Its fixed characters must fit a name; `*` may stand for none.
            if !valid_name(&body.replace('*', "").replace('?', "x")) && body != "*" {
                return Err(SelectorError(format!(
                    "`{}` is not an interface name pattern",
                    crate::error::excerpt(body, 40)
                )));
            }
            Selects::Pattern(body.to_string())
        } else if valid_name(body) {
            Selects::Name(body.to_string())
        } else {
            return Err(SelectorError(format!(
                "`{}` is not an interface name, a pattern (`eth*`), `auto` or `mac:...`",
                crate::error::excerpt(body, 40)
            )));
        };
        if exclude && selects == Selects::Auto {
            return Err(SelectorError(
                "`!auto` excludes the default-route interfaces from nothing else that selects them; name what to exclude".into(),
            ));
        }
        Ok(Self { selects, exclude })
    }

    /// Whether it selects `iface` on `host` (its default routes for `auto`).
    fn selects(&self, iface: &HostInterface, host: &HostView) -> bool {
        match &self.selects {
            Selects::Name(name) => iface.name == *name || iface.altnames.contains(name),
            Selects::Pattern(pattern) => matches_pattern(pattern, &iface.name),
            Selects::Auto => host.default_routes.contains(&iface.name),
            Selects::Mac(mac) => iface.mac == Some(*mac),
        }
    }

    /// Whether it may select an interface called `name` on some host: what a policy
    /// checked without a host can say (`auto` and `mac:` may select any).
    pub fn may_select(&self, name: &str) -> bool {
        match &self.selects {
            Selects::Name(n) => n == name,
            Selects::Pattern(pattern) => matches_pattern(pattern, name),
            Selects::Auto | Selects::Mac(_) => true,
        }
    }
}

impl fmt::Display for InterfaceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclude {
            f.write_str("!")?;
        }
        match &self.selects {
            Selects::Name(n) | Selects::Pattern(n) => f.write_str(n),
            Selects::Auto => f.write_str("auto"),
            Selects::Mac(m) => write!(
                f,
                "mac:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        }
    }
}

/// A selector with where the policy wrote it (`firewall.interfaces[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocatedSelector {
    /// The selector.
    pub selector: InterfaceSelector,
    /// Where it was written.
    pub origin: Origin,
}

/// The interfaces `selectors` (the list written at `list`) select on `host`, each with
/// the origin of the selector that chose it. Errors: an exact name the host has no
/// interface of (at its position), or a list that selects nothing (naming the host's
/// interfaces).
pub(crate) fn resolve(
    selectors: &[LocatedSelector],
    list: &str,
    host: &HostView,
) -> Result<Vec<FirewallInterface>, Vec<PolicyError>> {
    let learned;
    let host = if host.live {
        let mut view = host.clone();
        view.learn_altnames(
            &selectors
                .iter()
                .map(|s| s.selector.clone())
                .collect::<Vec<_>>(),
        );
        learned = view;
        &learned
    } else {
        host
    };
    let missing: Vec<PolicyError> = selectors
        .iter()
        .filter_map(|s| match &s.selector.selects {
            Selects::Name(name) if !s.selector.exclude && !host.has(name) => {
                Some(PolicyError::Invalid {
                    origin: s.origin.clone(),
                    message: format!("this host has no interface `{name}` (see `ip link`)"),
                })
            }
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    let plain: Vec<InterfaceSelector> = selectors.iter().map(|s| s.selector.clone()).collect();
    let chosen: Vec<FirewallInterface> = host
        .select(&plain)
        .into_iter()
        .filter_map(|(name, at)| {
            selectors.get(at).map(|s| FirewallInterface {
                name,
                origin: s.origin.clone(),
            })
        })
        .collect();
    if chosen.is_empty() && !selectors.is_empty() {
        return Err(vec![PolicyError::Invalid {
            origin: Origin {
                field: list.to_string(),
                at: selectors.first().and_then(|s| s.origin.at),
            },
            message: format!(
                "[{}] selects no interface of this host (it has {}{})",
                plain
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                host.names(),
                if plain.iter().any(|s| s.selects == Selects::Auto)
                    && host.default_routes.is_empty()
                {
                    "; `auto`: no default route"
                } else {
                    ""
                }
            ),
        }]);
    }
    Ok(chosen)
}

/// The interfaces a compiled firewall policy chose (its own and its quarantine's) and
/// the selectors it chose them by: what an agent keeps to notice interfaces that
/// appear or vanish under its selectors ([`changes_on`](Self::changes_on)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceChoice {
    firewall: Vec<LocatedSelector>,
    quarantine: Vec<LocatedSelector>,
    chosen: BTreeSet<String>,
}

/// Interfaces that appeared under a policy's selectors, and chosen ones that vanished.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InterfaceChange {
    /// Interfaces the selectors choose now that the policy did not.
    pub appeared: Vec<String>,
    /// Interfaces the policy chose that the selectors no longer choose (gone, or no
    /// longer the default route's).
    pub vanished: Vec<String>,
}

impl fmt::Display for InterfaceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interfaces changed: ")?;
        if !self.appeared.is_empty() {
            write!(f, "{} appeared", self.appeared.join(", "))?;
        }
        if !self.vanished.is_empty() {
            if !self.appeared.is_empty() {
                f.write_str(", ")?;
            }
            write!(f, "{} vanished", self.vanished.join(", "))?;
        }
        Ok(())
    }
}

impl InterfaceChoice {
    /// What `policy` (compiled on this host) chose.
    pub fn of(policy: &crate::firewall::FirewallPolicy) -> Self {
        let quarantine = policy.quarantine.as_ref();
        Self {
            firewall: policy.interface_selectors.clone(),
            quarantine: quarantine.map_or_else(Vec::new, |q| q.interface_selectors.clone()),
            chosen: policy
                .interfaces
                .iter()
                .map(|i| i.name.clone())
                .chain(
                    quarantine
                        .into_iter()
                        .flat_map(|q| q.interfaces.iter().cloned()),
                )
                .collect(),
        }
    }

    /// The interfaces chosen.
    pub fn chosen(&self) -> &BTreeSet<String> {
        &self.chosen
    }

    /// The calling thread's network namespace as its selectors need it read
    /// ([`HostView::read_macs`]: hardware addresses only for a `mac:` selector).
    pub fn read_host(&self) -> std::io::Result<HostView> {
        HostView::read_macs(
            self.firewall
                .iter()
                .chain(&self.quarantine)
                .any(|s| matches!(s.selector.selects, Selects::Mac(_))),
        )
    }

    /// What the selectors choose on `host` now (none of a list whose exact name is
    /// missing, or that chooses nothing: a compile would refuse it).
    pub fn on(&self, host: &HostView) -> BTreeSet<String> {
        [
            (&self.firewall, "firewall.interfaces"),
            (&self.quarantine, "firewall.quarantine.interfaces"),
        ]
        .into_iter()
        .filter(|(selectors, _)| !selectors.is_empty())
        .flat_map(|(selectors, list)| resolve(selectors, list, host).unwrap_or_default())
        .map(|i| i.name)
        .collect()
    }

    /// How what the selectors choose on `host` differs from what the policy chose;
    /// `None` when it does not.
    pub fn changes_on(&self, host: &HostView) -> Option<InterfaceChange> {
        let now = self.on(host);
        (now != self.chosen).then(|| InterfaceChange {
            appeared: now.difference(&self.chosen).cloned().collect(),
            vanished: self.chosen.difference(&now).cloned().collect(),
        })
    }
}

/// Whether `name` can name an interface (1 to 15 bytes, none of `/`, `:`, blanks).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `*` and `?` over an interface name. Written here rather than taken from a glob
/// crate: names are at most 15 bytes and these are the only two wildcards, so the
/// policy crate takes no dependency for it.
fn matches_pattern(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // Where the last `*` was, and the name's position it matches up to.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some(pi);
                mark = ni;
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ni = mark;
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// One interface of the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HostInterface {
    /// Its name.
    pub name: String,
    /// Its alternative names, where known.
    pub altnames: Vec<String>,
    /// Its hardware address, where it has one of six bytes.
    pub mac: Option<[u8; 6]>,
}

impl HostInterface {
    /// An interface called `name`, without an alternative name or a hardware address.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// The interfaces of a network namespace and its default routes' interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HostView {
    /// Every interface, in the kernel's order.
    pub interfaces: Vec<HostInterface>,
    /// The interfaces the up IPv4 and IPv6 default routes leave through (not `lo`).
    pub default_routes: BTreeSet<String>,
    /// Read from the calling thread's namespace ([`read`](Self::read)): an exact name
    /// no interface has is asked of the kernel as an alternative name.
    live: bool,
}

impl HostView {
    /// A view of the given interfaces and default-route interfaces (a test's, or one
    /// read elsewhere).
    pub fn of(interfaces: Vec<HostInterface>, default_routes: BTreeSet<String>) -> Self {
        Self {
            interfaces,
            default_routes,
            live: false,
        }
    }

    /// The calling thread's network namespace: its interfaces (`/proc/thread-self/net/dev`;
    /// `/sys/class/net` shows the namespace sysfs was mounted in, which a process that
    /// entered another one does not see), their hardware addresses (from sysfs, where
    /// its interface of that name has the same index), and the default routes.
    pub fn read() -> std::io::Result<Self> {
        Self::read_macs(true)
    }

    /// [`read`](Self::read), with the hardware addresses only when `macs` (a sysfs
    /// read and a system call per interface: a node with hundreds of pods' veths reads
    /// them only for a `mac:` selector).
    pub fn read_macs(macs: bool) -> std::io::Result<Self> {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev")?;
        let names: Vec<String> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
            .collect();
        let interfaces = names
            .into_iter()
            .map(|name| HostInterface {
                mac: if macs { mac_of(&name) } else { None },
                altnames: Vec::new(),
                name,
            })
            .collect();
        Ok(Self {
            interfaces,
            default_routes: default_route_interfaces()?,
            live: true,
        })
    }

    /// Learns the alternative names among `selectors`' exact names: each that no
    /// interface is called, but the kernel resolves to one ([`canonical_name`]), is
    /// recorded as that interface's (alternative names are not listed where
    /// [`read`](Self::read) looks).
    pub fn learn_altnames(&mut self, selectors: &[InterfaceSelector]) {
        for s in selectors {
            let Selects::Name(name) = &s.selects else {
                continue;
            };
            if self.has(name) {
                continue;
            }
            if let Some(real) = canonical_name(name) {
                if let Some(iface) = self.interfaces.iter_mut().find(|i| i.name == real) {
                    iface.altnames.push(name.clone());
                }
            }
        }
    }

    /// The interfaces `selectors` select, each with the index of the first selector
    /// that selected it, in the host's order: what no excluding selector selects and
    /// some other does. An exact name that is one interface's alternative name selects
    /// that interface ([`canonical_name`] fills alternative names in on a real host).
    pub fn select(&self, selectors: &[InterfaceSelector]) -> Vec<(String, usize)> {
        self.interfaces
            .iter()
            .filter(|i| !selectors.iter().any(|s| s.exclude && s.selects(i, self)))
            .filter_map(|i| {
                selectors
                    .iter()
                    .position(|s| !s.exclude && s.selects(i, self))
                    .map(|at| (i.name.clone(), at))
            })
            .collect()
    }

    /// Whether an interface is called `name` (or has it as an alternative name).
    pub fn has(&self, name: &str) -> bool {
        self.interfaces
            .iter()
            .any(|i| i.name == name || i.altnames.iter().any(|a| a == name))
    }

    /// The host's interface names, comma-separated (for messages).
    pub fn names(&self) -> String {
        self.interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The interface's own name when `name` is an alternative name of one in the calling
/// thread's network namespace (the kernel resolves alternative names to an index, and
/// the index to the name), `name` when it is an interface's name, `None` when no
/// interface has it.
pub fn canonical_name(name: &str) -> Option<String> {
    use rustix::net::{socket, AddressFamily, SocketType};
    let sock = socket(AddressFamily::INET, SocketType::DGRAM, None).ok()?;
    let index = rustix::net::netdevice::name_to_index(&sock, name).ok()?;
    rustix::net::netdevice::index_to_name(&sock, index).ok()
}

/// The hardware address of `name` from sysfs, when sysfs shows the calling thread's
/// namespace (its interface of that name has the kernel's index for the name).
fn mac_of(name: &str) -> Option<[u8; 6]> {
    use rustix::net::{socket, AddressFamily, SocketType};
    let dir = Path::new("/sys/class/net").join(name);
    let index: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let sock = socket(AddressFamily::INET, SocketType::DGRAM, None).ok()?;
    if rustix::net::netdevice::name_to_index(&sock, name).ok()? != index {
        return None;
    }
    parse_mac(std::fs::read_to_string(dir.join("address")).ok()?.trim())
}

/// The interfaces the up default routes of the calling thread's network namespace
/// leave through (`0.0.0.0/0` in `/proc/net/route`, `::/0` in `/proc/net/ipv6_route`;
/// loopback and reject routes excluded). Both are fixed-column text tables, read here
/// rather than through a procfs crate the policy crate would otherwise not need.
pub fn default_route_interfaces() -> std::io::Result<BTreeSet<String>> {
    let v4 = std::fs::read_to_string("/proc/thread-self/net/route")?;
    let mut found = ipv4_defaults(&v4);
    // No IPv6 in this kernel: the IPv4 routes are all there is.
    match std::fs::read_to_string("/proc/thread-self/net/ipv6_route") {
        Ok(v6) => found.extend(ipv6_defaults(&v6)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(found)
}

/// `/proc/net/route`: a header, then interface, destination, gateway, flags (hex), ...,
/// mask (the eighth column), each address in hexadecimal.
fn ipv4_defaults(text: &str) -> BTreeSet<String> {
    const RTF_UP: u32 = 0x1;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, mask) =
                (cols.first()?, cols.get(1)?, cols.get(3)?, cols.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (u32::from_str_radix(dest, 16).ok()? == 0
                && u32::from_str_radix(mask, 16).ok()? == 0
                && flags & RTF_UP != 0
                && *iface != "lo")
                .then(|| (*iface).to_string())
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination, prefix length, source, its length, next hop,
/// metric, references, use, flags (hex), interface.
fn ipv6_defaults(text: &str) -> BTreeSet<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [dest, plen, _, _, _, _, _, _, flags, iface] = cols.as_slice() else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (dest.bytes().all(|b| b == b'0')
                && *plen == "00"
                && flags & RTF_UP != 0
                && flags & RTF_REJECT == 0
                && *iface != "lo")
                .then(|| (*iface).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_shells_do() {
        for (pattern, name, want) in [
            ("eth*", "eth0", true),
            ("eth*", "eth", true),
            ("eth*", "veth0", false),
            ("*eth*", "veth0", true),
            ("en?s0", "enp0s0", false),
            ("enp?s0", "enp3s0", true),
            ("*", "lo", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("veth?", "veth10", false),
        ] {
            assert_eq!(matches_pattern(pattern, name), want, "{pattern} {name}");
        }
    }

    #[test]
    fn selectors_read_and_refuse_with_a_reason() {
        let s = InterfaceSelector::parse("!docker*").expect("exclusion");
        assert!(s.exclude && s.selects == Selects::Pattern("docker*".into()));
        assert_eq!(s.to_string(), "!docker*");
        let m = InterfaceSelector::parse("mac:52:54:00:AB:cd:0f").expect("mac");
        assert_eq!(m.selects, Selects::Mac([0x52, 0x54, 0, 0xab, 0xcd, 0x0f]));
        assert_eq!(m.to_string(), "mac:52:54:00:ab:cd:0f");
        for (bad, why) in [
            ("mac:52:54:00", "not a hardware address"),
            ("eth0/1", "not an interface name"),
            ("averyveryverylongname0", "not an interface name"),
            ("!auto", "excludes the default-route interfaces"),
            ("", "not an interface name"),
        ] {
            let e = InterfaceSelector::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn exclusions_win_and_the_first_selector_is_named() {
        let mut bond = HostInterface::new("bond0");
        bond.altnames = vec!["uplink".into()];
        bond.mac = Some([2, 0, 0, 0, 0, 1]);
        let host = HostView::of(
            vec![
                HostInterface::new("lo"),
                HostInterface::new("eth0"),
                HostInterface::new("eth1"),
                bond,
            ],
            ["eth1".to_string()].into(),
        );
        let sel = |t: &str| InterfaceSelector::parse(t).expect(t);
        assert_eq!(
            host.select(&[sel("auto"), sel("eth*"), sel("!eth0")]),
            vec![("eth1".to_string(), 0)]
        );
        assert_eq!(
            host.select(&[sel("uplink"), sel("mac:02:00:00:00:00:01")]),
            vec![("bond0".to_string(), 0)]
        );
        assert_eq!(
            host.select(&[sel("mac:02:00:00:00:00:01")]),
            vec![("bond0".to_string(), 0)]
        );
        assert!(host.select(&[sel("wlan*")]).is_empty());
        assert!(host.select(&[sel("*"), sel("!*")]).is_empty());
    }

    #[test]
    fn default_routes_of_both_tables() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  ens5\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  ens5\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                  lo\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(ipv4_defaults(v4), ["ens5".to_string()].into());
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 ens6\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(ipv6_defaults(v6), ["ens6".to_string()].into());
        // A router-advertised default, a /64 on-link route, the unreachable default
        // the kernel keeps on lo (wide spacing, as the kernel pads the name).
        let ra = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000021122fffe334455 00000400 00000001 00000000 00450003   enp3s0
20010db8000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   enp3s0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        assert_eq!(ipv6_defaults(ra), ["enp3s0".to_string()].into());
        assert!(ipv6_defaults("").is_empty());
        assert!(ipv6_defaults("garbage line\n").is_empty());
    }

    #[test]
    fn this_hosts_view_has_loopback() {
        let host = HostView::read().expect("/proc");
        assert!(host.has("lo"), "{}", host.names());
        // Loopback's hardware address is all zeros, read from sysfs.
        let zeros = InterfaceSelector::parse("mac:00:00:00:00:00:00").expect("mac");
        assert!(
            host.select(std::slice::from_ref(&zeros))
                .iter()
                .any(|(name, _)| name == "lo"),
            "{host:?}"
        );
        // Without the addresses, a `mac:` selector chooses nothing.
        let names_only = HostView::read_macs(false).expect("/proc");
        assert!(names_only.select(&[zeros]).is_empty());
        assert_eq!(canonical_name("lo").as_deref(), Some("lo"));
        assert_eq!(canonical_name("ironclad-none0"), None);
    }
}
