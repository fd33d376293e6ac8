//! The stateful firewall's rules and their compilation into a classifier whose cost
//! does not grow with the number of rules.
//!
//! Rules are evaluated in order and the first match wins, as nftables and iptables
//! users expect. Scanning them in that order costs a packet one comparison per rule;
//! [`Classifier`] instead decides with a fixed number of lookups, however many rules
//! there are (the bit-vector scheme of Lakshman and Stiliadis, with aggregated bit
//! vectors):
//!
//! 1. Rules are split into **buckets** by direction and protocol (a rule with
//!    `proto: any` goes into every bucket of its direction). A packet looks at one.
//! 2. In a bucket, each **dimension** (source address, destination address, source
//!    port, destination port or ICMP type) maps a packet's value to a **class**: the set
//!    of the bucket's rules that accept that value, as a bitmap in rule order.
//!    - Addresses: every rule prefix is a key of a longest-prefix-match table; the
//!      longest key containing an address names exactly the rules whose prefixes
//!      contain it (prefixes are nested or disjoint, so every rule prefix containing
//!      the address contains the longest one).
//!    - Ports and ICMP types: the value space is cut at every rule's range bounds;
//!      each piece is one class.
//!
//!    Classes with the same bitmap share one id.
//! 3. The packet's rule is the lowest bit set in the AND of its classes' bitmaps. A
//!    summary of each bitmap (bit `w` set when word `w` is not zero) is ANDed first,
//!    so only words that can hold a match are read: with 10,000 rules a bitmap has 157
//!    words, its summary three.
//!
//! [`Classifier::classify`] is the algorithm in Rust, tested against the plain
//! first-match scan ([`first_match`]). It is the reference for the kernel program
//! (`bpf-src/firewall.bpf.c`), which runs steps 2 and 3 from maps that
//! `ironclad_bpf::Firewall::replace` writes from this module's [`Classifier`].
//!
//! The `firewall:` section of a policy file becomes a [`FirewallPolicy`]:
//!
//! ```
//! use std::path::Path;
//! use ironclad_policy::config::compile_str;
//! use ironclad_policy::firewall::{FwAction, FwProto};
//!
//! let yaml = "firewall:
//!   interfaces: [lo]
//!   default_inbound: drop
//!   rules:
//!     - {direction: in, proto: tcp, dport: 22, src: 10.0.0.0/24, action: accept, comment: ssh from admins}
//!     - {direction: in, proto: tcp, dport: [80, 443], action: accept}
//! ";
//! let policy = compile_str(yaml, Path::new("p.yaml"))?.firewall.expect("a firewall section");
//! assert_eq!(policy.default_inbound, FwAction::Drop);
//! assert_eq!(policy.rules[1].dport, vec![(80, 80), (443, 443)]);
//! assert_eq!(policy.rules[0].proto, FwProto::Tcp);
//! # Ok::<(), ironclad_policy::ConfigError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Origin, PolicyError};
use crate::host::{HostView, LocatedSelector};

/// Which way a packet goes, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Arriving on one of the firewall's interfaces.
    In,
    /// Leaving through one of them.
    Out,
}

impl Direction {
    /// The policy's word: `in` or `out`.
    pub fn name(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// The protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FwProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (IPv4).
    Icmp,
    /// ICMPv6.
    Icmpv6,
    /// Any protocol, including those without ports.
    Any,
}

impl FwProto {
    /// Whether packets of this protocol have ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }

    /// Whether packets of this protocol have an ICMP type.
    pub fn has_icmp_type(self) -> bool {
        matches!(self, Self::Icmp | Self::Icmpv6)
    }
}

/// The protocol of a packet, for bucketing: the four a rule can name, and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacketProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// ICMPv6.
    Icmpv6,
    /// Any other IP protocol (matched only by `proto: any` rules).
    Other,
}

const PACKET_PROTOS: [PacketProto; 5] = [
    PacketProto::Tcp,
    PacketProto::Udp,
    PacketProto::Icmp,
    PacketProto::Icmpv6,
    PacketProto::Other,
];

impl FwProto {
    fn covers(self, p: PacketProto) -> bool {
        matches!(
            (self, p),
            (Self::Any, _)
                | (Self::Tcp, PacketProto::Tcp)
                | (Self::Udp, PacketProto::Udp)
                | (Self::Icmp, PacketProto::Icmp)
                | (Self::Icmpv6, PacketProto::Icmpv6)
        )
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FwAction {
    /// Let the packet (and its connection) through.
    Accept,
    /// Drop it silently.
    Drop,
    /// Drop it and answer: a TCP RST, or ICMP port/administratively unreachable.
    Reject,
}

impl FwAction {
    /// The policy's word: `accept`, `drop` or `reject`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Drop => "drop",
            Self::Reject => "reject",
        }
    }
}

/// One firewall rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FwRule {
    /// Where it was written.
    pub origin: Origin,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The protocol.
    pub proto: FwProto,
    /// Source prefixes (empty: any source).
    pub src: Vec<IpNetwork>,
    /// Destination prefixes (empty: any destination).
    pub dst: Vec<IpNetwork>,
    /// Source port ranges, inclusive (empty: any port).
    pub sport: Vec<(u16, u16)>,
    /// Destination port ranges, inclusive (empty: any port).
    pub dport: Vec<(u16, u16)>,
    /// ICMP types (empty: any type).
    pub icmp_type: Vec<u8>,
    /// What a match does.
    pub action: FwAction,
    /// Report every match (sampled).
    pub log: bool,
    /// Flow records (start and end) for the connections the rule admits.
    pub flows: bool,
    /// The operator's note (`comment:`), shown with the rule's counters.
    pub comment: Option<String>,
    /// The Shield's named sets (feeds, `country:CODE`) this rule's `src` names; their
    /// prefixes are the last [`src_from_sets`](Self::src_from_sets) of `src` once the
    /// policy is compiled.
    pub src_sets: Vec<String>,
    /// The same for `dst`.
    pub dst_sets: Vec<String>,
    /// How many of `src`'s prefixes came from `src_sets` (the last ones).
    pub src_from_sets: usize,
    /// How many of `dst`'s prefixes came from `dst_sets` (the last ones).
    pub dst_from_sets: usize,
    /// At most this many new connections per second (after a burst) match the rule
    /// and take its action; the rest are dropped (`rate_limited`).
    pub rate_limit: Option<RuleRate>,
    /// Matches only connections a port forward (`nat.dnat`) translated, as nftables'
    /// `ct status dnat`: a rule admitting a forward's target then does not admit
    /// connections made to the target directly. Inbound rules only.
    pub dnat: bool,
}

/// A rule's rate limit: a token bucket of `burst` connections refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRate {
    /// Connections per second, at least 1.
    pub per_second: u32,
    /// The bucket's size, at least 1.
    pub burst: u32,
}

impl FwRule {
    /// A rule of `direction` and `proto` that matches everything else, accepting.
    pub fn new(origin: Origin, direction: Direction, proto: FwProto) -> Self {
        Self {
            origin,
            direction,
            proto,
            src: Vec::new(),
            dst: Vec::new(),
            sport: Vec::new(),
            dport: Vec::new(),
            icmp_type: Vec::new(),
            action: FwAction::Accept,
            log: false,
            flows: false,
            comment: None,
            src_sets: Vec::new(),
            dst_sets: Vec::new(),
            src_from_sets: 0,
            dst_from_sets: 0,
            rate_limit: None,
            dnat: false,
        }
    }

    /// Matches these source prefixes (replacing any set before).
    ///
    /// The setters build a rule in code as a policy file writes it:
    ///
    /// ```
    /// use ironclad_policy::error::Origin;
    /// use ironclad_policy::firewall::{Direction, FwAction, FwProto, FwRule};
    ///
    /// let ssh = FwRule::new(Origin::field("agent.ssh"), Direction::In, FwProto::Tcp)
    ///     .src(["10.0.0.0/24".parse()?])
    ///     .dport([22..=22])
    ///     .action(FwAction::Accept)
    ///     .rate_limit(20, 40)
    ///     .comment("ssh from the admins");
    /// assert!(ssh.check().is_empty());
    /// assert_eq!(ssh.summary(), "in tcp src 10.0.0.0/24 dport 22 limit 20/s burst 40 accept");
    /// # Ok::<(), ipnetwork::IpNetworkError>(())
    /// ```
    #[must_use]
    pub fn src(mut self, nets: impl IntoIterator<Item = IpNetwork>) -> Self {
        self.src = nets.into_iter().collect();
        self.src_from_sets = 0;
        self
    }

    /// Matches these destination prefixes (replacing any set before).
    #[must_use]
    pub fn dst(mut self, nets: impl IntoIterator<Item = IpNetwork>) -> Self {
        self.dst = nets.into_iter().collect();
        self.dst_from_sets = 0;
        self
    }

    /// Matches these source port ranges (`22..=22`, `8000..=8100`).
    #[must_use]
    pub fn sport(
        mut self,
        ranges: impl IntoIterator<Item = std::ops::RangeInclusive<u16>>,
    ) -> Self {
        self.sport = ranges.into_iter().map(|r| (*r.start(), *r.end())).collect();
        self
    }

    /// Matches these destination port ranges.
    #[must_use]
    pub fn dport(
        mut self,
        ranges: impl IntoIterator<Item = std::ops::RangeInclusive<u16>>,
    ) -> Self {
        self.dport = ranges.into_iter().map(|r| (*r.start(), *r.end())).collect();
        self
    }

    /// Matches these ICMP (or ICMPv6) types.
    #[must_use]
    pub fn icmp_type(mut self, types: impl IntoIterator<Item = u8>) -> Self {
        self.icmp_type = types.into_iter().collect();
        self
    }

    /// What a match does.
    #[must_use]
    pub fn action(mut self, action: FwAction) -> Self {
        self.action = action;
        self
    }

    /// Reports each match (`log: true`).
    #[must_use]
    pub fn log(mut self, log: bool) -> Self {
        self.log = log;
        self
    }

    /// Flow records for the connections it admits (`flows: true`).
    #[must_use]
    pub fn flows(mut self, flows: bool) -> Self {
        self.flows = flows;
        self
    }

    /// The operator's note, shown with the rule's counters.
    #[must_use]
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// At most `per_second` new connections a second after a burst of `burst`.
    #[must_use]
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.rate_limit = Some(RuleRate { per_second, burst });
        self
    }

    /// Matches only connections a port forward translated (`dnat: true`).
    #[must_use]
    pub fn dnat(mut self, dnat: bool) -> Self {
        self.dnat = dnat;
        self
    }

    /// The problems that make this rule unusable: ports on a protocol without ports, an
    /// ICMP type on a protocol without one, ICMP with IPv6 addresses (or ICMPv6 with
    /// IPv4), host bits set in a prefix.
    pub fn check(&self) -> Vec<PolicyError> {
        let mut errors = Vec::new();
        let mut invalid = |message: String| {
            errors.push(PolicyError::Invalid {
                origin: self.origin.clone(),
                message,
            });
        };
        let has_ports = !(self.sport.is_empty() && self.dport.is_empty());
        if has_ports && !self.proto.has_ports() {
            invalid(format!(
                "`sport`/`dport` need `proto: tcp` or `udp` (this rule has `{}`)",
                proto_name(self.proto)
            ));
        }
        if !self.proto.has_icmp_type() && !self.icmp_type.is_empty() {
            invalid(format!(
                "`icmp_type` needs `proto: icmp` or `icmpv6` (this rule has `{}`)",
                proto_name(self.proto)
            ));
        }
        for (lo, hi) in self.sport.iter().chain(&self.dport) {
            if lo > hi || *lo == 0 {
                invalid(format!("port range {lo}-{hi} is not within 1-65535"));
            }
        }
        for net in self.src.iter().chain(&self.dst) {
            if net.network() != net.ip() {
                invalid(format!(
                    "`{net}` has host bits set; did you mean `{}/{}`?",
                    net.network(),
                    net.prefix()
                ));
            }
            let wrong = match (self.proto, net) {
                (FwProto::Icmp, IpNetwork::V6(_)) => Some("icmp is IPv4: use `proto: icmpv6`"),
                (FwProto::Icmpv6, IpNetwork::V4(_)) => {
                    Some("icmpv6 is IPv6: use `proto: icmp` for IPv4")
                }
                _ => None,
            };
            if let Some(why) = wrong {
                invalid(format!("`{net}`: {why}"));
            }
        }
        errors
    }

    /// The rule in one line, as `status` and `rules list` show it:
    /// `in tcp src 203.0.113.0/24,feed:tor dport 22 accept`. Named sets are shown by
    /// name, and past four literal prefixes the rest are counted (`+12 more`).
    pub fn summary(&self) -> String {
        let nets = |nets: &[IpNetwork], from_sets: usize, sets: &[String]| {
            let literal = &nets[..nets.len().saturating_sub(from_sets)];
            let mut words: Vec<String> = literal.iter().take(4).map(ToString::to_string).collect();
            if literal.len() > 4 {
                words.push(format!("+{} more", literal.len() - 4));
            }
            words.extend(sets.iter().cloned());
            words.join(",")
        };
        let mut text = format!("{} {}", self.direction.name(), proto_name(self.proto));
        if !self.src.is_empty() || !self.src_sets.is_empty() {
            text += &format!(
                " src {}",
                nets(&self.src, self.src_from_sets, &self.src_sets)
            );
        }
        if !self.dst.is_empty() || !self.dst_sets.is_empty() {
            text += &format!(
                " dst {}",
                nets(&self.dst, self.dst_from_sets, &self.dst_sets)
            );
        }
        if !self.sport.is_empty() {
            text += &format!(" sport {}", ports_text(&self.sport).replace(' ', ""));
        }
        if !self.dport.is_empty() {
            text += &format!(" dport {}", ports_text(&self.dport).replace(' ', ""));
        }
        if !self.icmp_type.is_empty() {
            let types: Vec<String> = self.icmp_type.iter().map(ToString::to_string).collect();
            text += &format!(" type {}", types.join(","));
        }
        if self.dnat {
            text += " dnat";
        }
        if let Some(r) = self.rate_limit {
            text += &format!(" limit {}/s burst {}", r.per_second, r.burst);
        }
        text += " ";
        text += self.action.name();
        if self.log {
            text += " log";
        }
        text
    }

    /// The rule's identity for keeping its counters across replacements: its match and
    /// action, with named sets by name (a feed that changes keeps its rules' counters).
    pub fn identity(&self) -> String {
        let literal = |nets: &[IpNetwork], from_sets: usize| {
            nets[..nets.len().saturating_sub(from_sets)].to_vec()
        };
        format!(
            "{:?}|{:?}|{:?}{:?}|{:?}{:?}|{:?}|{:?}|{:?}|{:?}",
            self.direction,
            self.proto,
            literal(&self.src, self.src_from_sets),
            self.src_sets,
            literal(&self.dst, self.dst_from_sets),
            self.dst_sets,
            self.sport,
            self.dport,
            self.icmp_type,
            self.action
        ) + if self.dnat { "|dnat" } else { "" }
    }

    /// Whether this rule matches every packet `later` matches (so `later` can never
    /// match when this rule comes first).
    pub fn covers(&self, later: &Self) -> bool {
        fn nets(a: &[IpNetwork], b: &[IpNetwork]) -> bool {
            a.is_empty()
                || (!b.is_empty()
                    && b.iter().all(|n| {
                        a.iter()
                            .any(|m| m.prefix() <= n.prefix() && m.contains(n.network()))
                    }))
        }
        fn ranges(a: &[(u16, u16)], b: &[(u16, u16)]) -> bool {
            a.is_empty()
                || (!b.is_empty()
                    && b.iter().all(|(lo, hi)| {
                        // Covered by the union of a's ranges.
                        let mut next = u32::from(*lo);
                        let mut sorted = a.to_vec();
                        sorted.sort_unstable();
                        for (alo, ahi) in sorted {
                            if u32::from(alo) <= next && u32::from(ahi) >= next {
                                next = u32::from(ahi) + 1;
                            }
                        }
                        next > u32::from(*hi)
                    }))
        }
        let proto = self.proto == FwProto::Any || self.proto == later.proto;
        let types = self.icmp_type.is_empty()
            || (!later.icmp_type.is_empty()
                && later.icmp_type.iter().all(|t| self.icmp_type.contains(t)));
        self.direction == later.direction
            && (!self.dnat || later.dnat)
            && proto
            && nets(&self.src, &later.src)
            && nets(&self.dst, &later.dst)
            && ranges(&self.sport, &later.sport)
            && ranges(&self.dport, &later.dport)
            && types
    }
}

/// The policy name of a protocol.
pub fn proto_name(p: FwProto) -> &'static str {
    match p {
        FwProto::Tcp => "tcp",
        FwProto::Udp => "udp",
        FwProto::Icmp => "icmp",
        FwProto::Icmpv6 => "icmpv6",
        FwProto::Any => "any",
    }
}

/// For each rule that an earlier rule covers entirely (it can never match), the
/// index of the earlier rule and of the shadowed one.
pub fn shadowed(rules: &[FwRule]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (j, later) in rules.iter().enumerate() {
        if let Some(i) = rules[..j].iter().position(|r| r.covers(later)) {
            out.push((i, j));
        }
    }
    out
}

/// A packet as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Inbound or outbound.
    pub direction: Direction,
    /// Its protocol.
    pub proto: PacketProto,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination port, or the ICMP type for ICMP.
    pub dport: u16,
    /// A port forward translated it (what rules with [`FwRule::dnat`] match).
    pub translated: bool,
}

fn net_matches(nets: &[IpNetwork], addr: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(addr))
}

fn range_matches(ranges: &[(u16, u16)], v: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&v))
}

/// Whether `rule` matches `p`. A rule whose addresses are all of the other family
/// does not match.
pub fn matches(rule: &FwRule, p: &Packet) -> bool {
    let icmp = matches!(p.proto, PacketProto::Icmp | PacketProto::Icmpv6);
    rule.direction == p.direction
        && (!rule.dnat || p.translated)
        && rule.proto.covers(p.proto)
        && net_matches(&rule.src, p.src)
        && net_matches(&rule.dst, p.dst)
        && (icmp || range_matches(&rule.sport, p.sport))
        && if icmp {
            rule.icmp_type.is_empty()
                || u8::try_from(p.dport).is_ok_and(|t| rule.icmp_type.contains(&t))
        } else {
            range_matches(&rule.dport, p.dport)
        }
}

/// The reference: the index of the first rule that matches, scanning in order.
pub fn first_match(rules: &[FwRule], p: &Packet) -> Option<usize> {
    rules.iter().position(|r| matches(r, p))
}

/// A set of a bucket's rules, in rule order, with its summary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bitmap {
    /// Bit `i` of word `i / 64`: the bucket's `i`-th rule.
    pub words: Vec<u64>,
    /// Bit `w` of word `w / 64`: `words[w]` is not zero.
    pub summary: Vec<u64>,
}

/// The words of a set of `rules` rules, all clear (one word at least). The dimensions
/// below keep their sets as words and set or clear one bit as a rule comes in or goes
/// out: a set rebuilt from every rule at each key or cut made compiling 10,000 rules
/// quadratic in the rules (10^8 steps) instead of in their words.
fn no_rules(rules: usize) -> Vec<u64> {
    vec![0u64; rules.div_ceil(64).max(1)]
}

/// Puts rule `i` in `words` (`on`) or takes it out.
fn set_rule(words: &mut [u64], i: usize, on: bool) {
    if on {
        words[i / 64] |= 1 << (i % 64);
    } else {
        words[i / 64] &= !(1 << (i % 64));
    }
}

impl Bitmap {
    fn from_words(words: Vec<u64>) -> Self {
        let mut summary = vec![0u64; words.len().div_ceil(64)];
        for (w, word) in words.iter().enumerate() {
            if *word != 0 {
                summary[w / 64] |= 1 << (w % 64);
            }
        }
        Self { words, summary }
    }
}

/// One dimension of a bucket: values to class ids, class ids to bitmaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dimension {
    /// For addresses: every rule prefix (and `0.0.0.0/0`, `::/0`) with its class.
    pub prefixes: BTreeMap<IpNetwork, u32>,
    /// For ports and ICMP types: `(first value, class)` for each piece of the value
    /// space, ascending, the first piece starting at 0.
    pub pieces: Vec<(u16, u32)>,
}

impl Dimension {
    fn class_of_addr(&self, addr: IpAddr) -> Option<u32> {
        self.prefixes
            .iter()
            .filter(|(net, _)| net.contains(addr))
            .max_by_key(|(net, _)| net.prefix())
            .map(|(_, class)| *class)
    }

    fn class_of_value(&self, v: u16) -> Option<u32> {
        let at = self.pieces.partition_point(|(start, _)| *start <= v);
        at.checked_sub(1).map(|i| self.pieces[i].1)
    }
}

/// The rules of one direction and protocol, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bucket {
    /// The policy's rule index of each bucket rule, in order.
    pub rules: Vec<usize>,
    /// Source addresses.
    pub src: Dimension,
    /// Destination addresses.
    pub dst: Dimension,
    /// Source ports.
    pub sport: Dimension,
    /// Destination ports, or ICMP types for the ICMP buckets.
    pub dport: Dimension,
    /// The class of the bucket's rules without [`FwRule::dnat`]: what a packet no port
    /// forward translated may match (ANDed with the other four). `None` when every
    /// rule of the bucket matches either.
    pub untranslated: Option<u32>,
}

/// Every bucket's classes, and the bitmaps they share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Classifier {
    /// Buckets by direction and packet protocol.
    pub buckets: BTreeMap<(Direction, PacketProto), Bucket>,
    /// Class bitmaps, by class id (shared by every dimension and bucket).
    pub classes: Vec<Bitmap>,
}

/// Interns bitmaps: identical sets share one class id.
#[derive(Default)]
struct Interner {
    ids: HashMap<Bitmap, u32>,
    classes: Vec<Bitmap>,
}

impl Interner {
    fn id(&mut self, words: &[u64]) -> u32 {
        let bitmap = Bitmap::from_words(words.to_vec());
        if let Some(id) = self.ids.get(&bitmap) {
            return *id;
        }
        let id = u32::try_from(self.classes.len()).unwrap_or(u32::MAX);
        self.classes.push(bitmap.clone());
        self.ids.insert(bitmap, id);
        id
    }
}

/// The address dimension of `rules`: each rule prefix (and `0.0.0.0/0`, `::/0`) with the
/// class of the rules that contain it. A key's rules are found through its supernets
/// (at most 33 or 129 lookups), not by asking every rule: a 10,000-rule policy
/// compiles in milliseconds, not in the seconds a key-by-rule scan takes.
fn address_dimension(
    rules: &[&FwRule],
    nets: impl Fn(&FwRule) -> &[IpNetwork],
    interner: &mut Interner,
) -> Dimension {
    let mut keys: Vec<IpNetwork> = rules.iter().flat_map(|r| nets(r).to_vec()).collect();
    for any in [
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    ] {
        if let Ok(net) = IpNetwork::new(any, 0) {
            keys.push(net);
        }
    }
    keys.sort_unstable();
    keys.dedup();
    // The rules naming no address match every key; the others, by the network they name.
    let mut always = no_rules(rules.len());
    for (i, r) in rules.iter().enumerate() {
        set_rule(&mut always, i, nets(r).is_empty());
    }
    let mut naming: HashMap<(IpAddr, u8), Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        for net in nets(r) {
            naming
                .entry((net.network(), net.prefix()))
                .or_default()
                .push(i);
        }
    }
    // The prefix lengths the rules name, by family: a key's supernets are looked up at
    // these lengths only (a policy names a few lengths; trying all 33 or 129 for each of
    // 10,000 keys was most of a large policy's compile).
    let mut lengths: [std::collections::BTreeSet<u8>; 2] = Default::default();
    for (addr, len) in naming.keys() {
        lengths[usize::from(addr.is_ipv6())].insert(*len);
    }
    let mut prefixes = BTreeMap::new();
    for key in keys {
        // The rules whose prefixes contain all of `key` (or that name no address).
        let mut members = always.clone();
        for &len in lengths[usize::from(key.is_ipv6())].range(..=key.prefix()) {
            let Ok(supernet) = IpNetwork::new(key.network(), len) else {
                continue;
            };
            if let Some(listed) = naming.get(&(supernet.network(), len)) {
                for i in listed {
                    set_rule(&mut members, *i, true);
                }
            }
        }
        prefixes.insert(key, interner.id(&members));
    }
    Dimension {
        prefixes,
        pieces: Vec::new(),
    }
}

/// The value dimension of `rules` (ports, ICMP types): the value space cut where a
/// rule's range starts or ends, each piece with the class of the rules covering it
/// (neighbouring pieces of one class merged). One sweep over the cuts, each rule's
/// ranges counted in and out as it passes them.
fn value_dimension(
    rules: &[&FwRule],
    ranges: impl Fn(&FwRule) -> Vec<(u16, u16)>,
    interner: &mut Interner,
) -> Dimension {
    let ranges: Vec<Vec<(u16, u16)>> = rules.iter().map(|r| ranges(r)).collect();
    // Where ranges start and where they end (one past their last value), by rule.
    let mut starts: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut ends: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut cuts = vec![0u32];
    for (i, rs) in ranges.iter().enumerate() {
        for (lo, hi) in rs {
            let (lo, end) = (u32::from(*lo), u32::from(*hi) + 1);
            cuts.push(lo);
            cuts.push(end);
            starts.entry(lo).or_default().push(i);
            ends.entry(end).or_default().push(i);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    // A rule with no range covers every value; the others while one of theirs is open.
    let mut members = no_rules(ranges.len());
    for (i, rs) in ranges.iter().enumerate() {
        set_rule(&mut members, i, rs.is_empty());
    }
    let mut open = vec![0u32; ranges.len()];
    let mut pieces: Vec<(u16, u32)> = Vec::new();
    for cut in cuts {
        for i in ends.get(&cut).into_iter().flatten() {
            open[*i] = open[*i].saturating_sub(1);
            set_rule(&mut members, *i, open[*i] > 0);
        }
        for i in starts.get(&cut).into_iter().flatten() {
            open[*i] += 1;
            set_rule(&mut members, *i, true);
        }
        let Ok(start) = u16::try_from(cut) else {
            continue;
        };
        let class = interner.id(&members);
        // Neighbouring pieces of one class are one piece.
        if pieces.last().is_none_or(|(_, c)| *c != class) {
            pieces.push((start, class));
        }
    }
    Dimension {
        prefixes: BTreeMap::new(),
        pieces,
    }
}

impl Classifier {
    /// Compiles `rules` (already [checked](FwRule::check)).
    pub fn compile(rules: &[FwRule]) -> Self {
        let mut interner = Interner::default();
        let mut buckets = BTreeMap::new();
        for direction in [Direction::In, Direction::Out] {
            for proto in PACKET_PROTOS {
                let members: Vec<(usize, &FwRule)> = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.direction == direction && r.proto.covers(proto))
                    .collect();
                if members.is_empty() {
                    continue;
                }
                let in_bucket: Vec<&FwRule> = members.iter().map(|(_, r)| *r).collect();
                let icmp = matches!(proto, PacketProto::Icmp | PacketProto::Icmpv6);
                let untranslated = in_bucket.iter().any(|r| r.dnat).then(|| {
                    let mut plain = no_rules(in_bucket.len());
                    for (i, r) in in_bucket.iter().enumerate() {
                        set_rule(&mut plain, i, !r.dnat);
                    }
                    interner.id(&plain)
                });
                let bucket = Bucket {
                    rules: members.iter().map(|(i, _)| *i).collect(),
                    src: address_dimension(&in_bucket, |r| &r.src, &mut interner),
                    dst: address_dimension(&in_bucket, |r| &r.dst, &mut interner),
                    sport: value_dimension(
                        &in_bucket,
                        |r| if icmp { Vec::new() } else { r.sport.clone() },
                        &mut interner,
                    ),
                    dport: value_dimension(
                        &in_bucket,
                        |r| {
                            if icmp {
                                r.icmp_type
                                    .iter()
                                    .map(|t| (u16::from(*t), u16::from(*t)))
                                    .collect()
                            } else {
                                r.dport.clone()
                            }
                        },
                        &mut interner,
                    ),
                    untranslated,
                };
                buckets.insert((direction, proto), bucket);
            }
        }
        Self {
            buckets,
            classes: interner.classes,
        }
    }

    /// The policy index of the rule that decides `p`: the kernel's algorithm (four
    /// class lookups, then the lowest bit of the AND, summaries first).
    pub fn classify(&self, p: &Packet) -> Option<usize> {
        let bucket = self.buckets.get(&(p.direction, p.proto))?;
        let icmp = matches!(p.proto, PacketProto::Icmp | PacketProto::Icmpv6);
        let classes = [
            bucket.src.class_of_addr(p.src)?,
            bucket.dst.class_of_addr(p.dst)?,
            bucket
                .sport
                .class_of_value(if icmp { 0 } else { p.sport })?,
            bucket.dport.class_of_value(p.dport)?,
        ];
        let mask = bucket.untranslated.filter(|_| !p.translated);
        let maps: Vec<&Bitmap> = classes
            .iter()
            .chain(mask.as_ref())
            .map(|c| self.classes.get(*c as usize))
            .collect::<Option<_>>()?;
        let summary_words = maps[0].summary.len();
        for s in 0..summary_words {
            let mut summary = maps.iter().fold(u64::MAX, |acc, m| acc & m.summary[s]);
            while summary != 0 {
                let w = s * 64 + summary.trailing_zeros() as usize;
                summary &= summary - 1;
                let word = maps.iter().fold(u64::MAX, |acc, m| acc & m.words[w]);
                if word != 0 {
                    let i = w * 64 + word.trailing_zeros() as usize;
                    return bucket.rules.get(i).copied();
                }
            }
        }
        None
    }
}

/// The connection table's size unless the policy sets `table_size`.
pub const DEFAULT_TABLE_SIZE: u32 = 262_144;

/// Events a second for the default policy's drops unless the policy sets
/// `log_default_drops` (as ufw logs blocked packets, rate-limited, by default).
pub const DEFAULT_LOG_DEFAULT_DROPS: u32 = 10;

/// The largest `log_default_drops`.
pub const MAX_LOG_DEFAULT_DROPS: u32 = 10_000;

/// The smallest and largest `table_size` (connections) a policy may ask for.
pub const TABLE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16..=16_777_216;

/// An interface the firewall attaches to, with where the policy named it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirewallInterface {
    /// Its name (`eth0`).
    pub name: String,
    /// Where it was written (`firewall.interfaces[0]`).
    pub origin: Origin,
}

/// Idle seconds before a connection is forgotten, by state (the Linux conntrack
/// defaults unless the policy's `timeouts:` sets them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// A TCP handshake in progress (SYN sent or received).
    pub tcp_handshake: u32,
    /// An established TCP connection.
    pub tcp_established: u32,
    /// A TCP connection closing (FIN seen).
    pub tcp_closing: u32,
    /// A UDP flow seen one way.
    pub udp: u32,
    /// A UDP flow answered.
    pub udp_stream: u32,
    /// An ICMP echo flow.
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_handshake: 120,
            tcp_established: 432_000,
            tcp_closing: 120,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
        }
    }
}

/// The `firewall:` section: where it attaches, the default policies, connection
/// tracking, and the ordered rules.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirewallPolicy {
    /// The interfaces whose traffic it filters (ingress and egress on each): what
    /// [`interface_selectors`](Self::interface_selectors) select on the host the
    /// policy was compiled on (empty in a check without a host).
    pub interfaces: Vec<FirewallInterface>,
    /// `firewall.interfaces` as written: names, patterns, `auto`, `mac:`, exclusions
    /// ([`crate::host`]), for an agent to resolve again when interfaces come and go
    /// ([`resolve_interfaces`](Self::resolve_interfaces)).
    pub interface_selectors: Vec<LocatedSelector>,
    /// What a new inbound connection no rule matches meets (default accept, so adding
    /// the section changes nothing until rules or defaults say so).
    pub default_inbound: FwAction,
    /// What a new outbound connection no rule matches meets (default accept).
    pub default_outbound: FwAction,
    /// Track connections: replies and related ICMP errors pass before the rules,
    /// packets of no connection that cannot start one are dropped (default `true`).
    pub stateful: bool,
    /// `mode: dry-run`: count what would be dropped and pass it.
    pub dry_run: bool,
    /// `flows: true`: flow records for every connection, not only for those of rules
    /// with `flows: true`.
    pub flows: bool,
    /// The connection table's size.
    pub table_size: u32,
    /// `log_default_drops`: at most this many `firewall` events a second for packets
    /// the default policy drops (sampled: the rest are counted, not reported); 0: none.
    pub log_default_drops: u32,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// The rules, first match wins.
    pub rules: Vec<FwRule>,
    /// `syn_flood:`: SYN cookies answered in XDP for these ports.
    pub syn_flood: Option<SynFloodPolicy>,
    /// `limits:`: rate limits on new inbound connections.
    pub limits: Option<LimitsPolicy>,
    /// The policy's `nat:` section (port forwards, source translation), run by the
    /// firewall on its interfaces.
    pub nat: Option<crate::nat::NatPolicy>,
    /// `ids:`: content rules matched against the first bytes of the connections the
    /// firewall tracks.
    pub ids: Option<IdsPolicy>,
    /// `scrub:`: packet normalisation, per interface.
    pub scrub: Vec<ScrubPolicy>,
    /// `quarantine:`: sources tagged or redirected instead of dropped.
    pub quarantine: Option<QuarantinePolicy>,
}

/// One entry of `firewall.scrub`: what the scrubber does on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScrubPolicy {
    /// The interface.
    pub interface: String,
    /// IPv4 TTL floor (0: untouched).
    pub ttl_floor: u8,
    /// IPv6 hop-limit floor (0: untouched).
    pub hop_limit_floor: u8,
    /// Largest MSS a SYN may announce (0: untouched).
    pub mss_max: u16,
    /// Clear IPv4 DF.
    pub clear_df: bool,
    /// Randomise the IPv4 identification.
    pub random_ip_id: bool,
    /// Arriving packets too.
    pub ingress: bool,
    /// Where it is written.
    pub origin: Origin,
}

/// What a quarantined source gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuarantineTarget {
    /// An 802.1Q tag with this VLAN id.
    Vlan(u16),
    /// Out of this interface.
    Redirect(String),
    /// Into this interface, as if it arrived there.
    RedirectIngress(String),
}

/// One set of `firewall.quarantine.sets`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantineSet {
    /// The sources (IOCs).
    pub sources: Vec<IpNetwork>,
    /// What they get.
    pub target: QuarantineTarget,
    /// Where it is written.
    pub origin: Origin,
}

/// The `firewall.quarantine` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantinePolicy {
    /// The interfaces whose packets are looked up (ingress and egress): what
    /// [`interface_selectors`](Self::interface_selectors) select on the host.
    pub interfaces: Vec<String>,
    /// `firewall.quarantine.interfaces` as written ([`crate::host`]).
    pub interface_selectors: Vec<LocatedSelector>,
    /// The sets, in order (a source in two takes the later one's target).
    pub sets: Vec<QuarantineSet>,
    /// Where it is written.
    pub origin: Origin,
}

/// The `firewall.ids` section: rule files in the Suricata subset of
/// [`crate::ids`], and how much of each connection the kernel hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdsPolicy {
    /// The rule files, as resolved (relative paths from the policy's directory).
    pub rule_files: Vec<std::path::PathBuf>,
    /// Their rules, parsed.
    pub rules: IdsRules,
    /// Payload bytes per direction of a connection handed to the matcher.
    pub depth: u32,
    /// Also inspect one connection in this many of those no rule's port selects (0:
    /// none).
    pub sample_every: u32,
    /// `mode: dry-run`: `drop` rules report and block nothing.
    pub dry_run: bool,
    /// Where the section is written.
    pub origin: Origin,
}

/// Parsed IDS rules; two are equal when they were read from the same text.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IdsRules {
    /// The rules, in file order.
    pub rules: std::sync::Arc<Vec<crate::ids::IdsRule>>,
    /// A digest of the files' text and the variables.
    pub digest: u64,
}

impl PartialEq for IdsRules {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for IdsRules {}

/// The `firewall.limits` section: rate limits on new inbound connections, taken after
/// the rules admit a connection, narrowest first (source, subnet, port, interface).
/// The first spent one drops the connection; the wider ones are not charged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitsPolicy {
    /// `per_source`: one bucket per source address.
    pub per_source: Option<RuleRate>,
    /// `per_subnet`: one bucket per source subnet (`ipv4_prefix`, `ipv6_prefix`).
    pub per_subnet: Option<RuleRate>,
    /// The subnet limit's IPv4 prefix length (default 24).
    pub ipv4_prefix: u8,
    /// The subnet limit's IPv6 prefix length (default 64).
    pub ipv6_prefix: u8,
    /// `per_port`: one bucket per protocol and destination port.
    pub per_port: Option<RuleRate>,
    /// `per_interface`: one bucket per interface, a ceiling on every source together.
    pub per_interface: Option<RuleRate>,
    /// Where the section was written.
    pub origin: Origin,
}

/// When the SYN-flood defence answers with cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SynFloodMode {
    /// Every SYN to a protected port (`mode: always`, the default).
    Always,
    /// While SYNs to the protected ports arrive faster than `threshold_pps`, and for
    /// `hold_seconds` after (`mode: under_attack`).
    UnderAttack,
}

/// The `firewall.syn_flood` section: SYNs to `ports` are answered in XDP with the
/// kernel's SYN cookies; only a completed handshake reaches the listener or the
/// connection table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SynFloodPolicy {
    /// The protected TCP ports, as inclusive ranges.
    pub ports: Vec<(u16, u16)>,
    /// When cookies answer.
    pub mode: SynFloodMode,
    /// `under_attack`: SYNs a second to the protected ports (all sources together)
    /// from which cookies answer.
    pub threshold_pps: u32,
    /// `under_attack`: seconds cookies keep answering after the rate last exceeded the
    /// threshold (default 10).
    pub hold_seconds: u32,
    /// Where the section was written.
    pub origin: Origin,
}

/// `22, 80, 8000-8100`: port ranges as a policy writes them.
pub fn ports_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ranges a set of ports makes, adjacent ports joined.
pub fn port_ranges(ports: &std::collections::BTreeSet<u16>) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match ranges.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
            _ => ranges.push((p, p)),
        }
    }
    ranges
}

impl SynFloodPolicy {
    /// Every protected port.
    pub fn port_set(&self) -> std::collections::BTreeSet<u16> {
        self.ports.iter().flat_map(|&(lo, hi)| lo..=hi).collect()
    }
}

impl FirewallPolicy {
    /// Why the SYN-flood defence cannot run beside a Shield attached to `shield_iface`:
    /// both need the interface's XDP hook. `None` when they do not meet.
    pub fn syn_flood_conflict(&self, shield_iface: Option<&str>) -> Option<PolicyError> {
        let syn = self.syn_flood.as_ref()?;
        let shield = shield_iface?;
        self.interfaces.iter().find(|i| i.name == shield).map(|i| PolicyError::Invalid {
            origin: syn.origin.clone(),
            message: format!(
                "the Shield holds the XDP hook of `{}` ({}), which the SYN-flood defence needs; list only interfaces the Shield does not run on, or run the Shield elsewhere",
                i.name, i.origin
            ),
        })
    }
}

impl Default for FirewallPolicy {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            interface_selectors: Vec::new(),
            default_inbound: FwAction::Accept,
            default_outbound: FwAction::Accept,
            stateful: true,
            dry_run: false,
            flows: false,
            table_size: DEFAULT_TABLE_SIZE,
            log_default_drops: DEFAULT_LOG_DEFAULT_DROPS,
            timeouts: Timeouts::default(),
            rules: Vec::new(),
            syn_flood: None,
            limits: None,
            nat: None,
            ids: None,
            scrub: Vec::new(),
            quarantine: None,
        }
    }
}

/// A message about the rule written at an origin.
pub type Located = (Origin, String);

impl FirewallPolicy {
    /// The interfaces its selectors select on `host` now: the firewall's (each named
    /// after the selector that chose it) and the quarantine's. An agent compares them
    /// with [`interfaces`](Self::interfaces) to notice interfaces that appeared or
    /// vanished; an error is what a compile on this host would say.
    pub fn resolve_interfaces(
        &self,
        host: &HostView,
    ) -> Result<(Vec<FirewallInterface>, Vec<String>), Vec<PolicyError>> {
        let firewall = crate::host::resolve(&self.interface_selectors, "firewall.interfaces", host);
        let quarantine = match &self.quarantine {
            Some(q) => crate::host::resolve(
                &q.interface_selectors,
                "firewall.quarantine.interfaces",
                host,
            )
            .map(|list| list.into_iter().map(|i| i.name).collect()),
            None => Ok(Vec::new()),
        };
        match (firewall, quarantine) {
            (Ok(f), Ok(q)) => Ok((f, q)),
            (f, q) => Err(f.err().into_iter().chain(q.err()).flatten().collect()),
        }
    }

    /// Whether it filters `name`: one of its interfaces, or, in a check without a host
    /// (no interfaces resolved), a name its selectors may select on some host.
    pub fn covers_interface(&self, name: &str) -> bool {
        if self.interfaces.is_empty() {
            let chosen = self
                .interface_selectors
                .iter()
                .any(|s| !s.selector.exclude && s.selector.may_select(name));
            let excluded = self.interface_selectors.iter().any(|s| {
                s.selector.exclude
                    && !matches!(s.selector.selects, crate::host::Selects::Auto)
                    && s.selector.may_select(name)
                    && !matches!(s.selector.selects, crate::host::Selects::Mac(_))
            });
            chosen && !excluded
        } else {
            self.interfaces.iter().any(|i| i.name == name)
        }
    }

    /// What the rules and the port forwards (`nat.dnat`) say about each other:
    /// `(errors, warnings)`, each `(origin of the rule, message)`. An error for a rule
    /// with `dnat: true` when no port forward exists (it could never match); a warning
    /// for an inbound `accept` rule without `dnat: true` that admits a forward's target
    /// (its protocol, its port, its address): it also admits connections made to the
    /// target directly, by anyone who can route to it.
    pub fn dnat_checks(&self) -> (Vec<Located>, Vec<Located>) {
        let forwards = self.nat.as_ref().map_or(&[][..], |n| n.dnat.as_slice());
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for rule in &self.rules {
            if rule.dnat && forwards.is_empty() {
                errors.push((
                    rule.origin.clone(),
                    "`dnat: true` matches only connections a port forward translated, and `nat.dnat` has none".to_string(),
                ));
            }
            if rule.dnat || rule.direction != Direction::In || rule.action != FwAction::Accept {
                continue;
            }
            for f in forwards {
                let proto = match f.proto {
                    crate::nat::NatProto::Tcp => FwProto::Tcp,
                    crate::nat::NatProto::Udp => FwProto::Udp,
                };
                let port = f.to.port.or(f.dport);
                let admits = (rule.proto == FwProto::Any || rule.proto == proto)
                    && net_matches(&rule.dst, f.to.addr)
                    && port.map_or(rule.dport.is_empty(), |p| range_matches(&rule.dport, p));
                if admits {
                    warnings.push((
                        rule.origin.clone(),
                        format!(
                            "admits {} (the target of {}), and so connections made to it directly, not only those forwarded; add `dnat: true` to admit only forwarded ones",
                            match port {
                                Some(p) => format!("{} port {p} of {}", f.proto.name(), f.to.addr),
                                None => format!("{} to {}", f.proto.name(), f.to.addr),
                            },
                            f.origin.field
                        ),
                    ));
                    break;
                }
            }
        }
        (errors, warnings)
    }

    /// A warning for every rule an earlier rule covers entirely: `(origin of the
    /// shadowed rule, message naming both)`.
    pub fn shadow_warnings(&self) -> Vec<(Origin, String)> {
        shadowed(&self.rules)
            .into_iter()
            .map(|(i, j)| {
                let earlier = &self.rules[i].origin;
                let at = earlier
                    .at
                    .map(|(line, column)| format!(" (line {line}, column {column})"))
                    .unwrap_or_default();
                (
                    self.rules[j].origin.clone(),
                    format!("can never match: {earlier}{at} comes first and covers it"),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_read_back_as_the_ranges_they_make() {
        let set: std::collections::BTreeSet<u16> = [22, 80, 81, 82, 8000, 65535].into();
        assert_eq!(
            port_ranges(&set),
            vec![(22, 22), (80, 82), (8000, 8000), (65535, 65535)]
        );
        assert_eq!(ports_text(&port_ranges(&set)), "22, 80-82, 8000, 65535");
        assert_eq!(ports_text(&[]), "");
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn v4(a: u32) -> IpAddr {
        IpAddr::V4(a.into())
    }

    /// Addresses from a few /16s so that rules and packets meet often.
    fn addr(rng: &mut Rng) -> IpAddr {
        if rng.below(8) == 0 {
            let mut b = [0u8; 16];
            b[0] = 0x20;
            b[1] = 0x01;
            b[15] = rng.below(4) as u8;
            IpAddr::V6(b.into())
        } else {
            v4(0x0a00_0000 | ((rng.below(4) as u32) << 16) | rng.below(1024) as u32)
        }
    }

    fn net(rng: &mut Rng) -> IpNetwork {
        let a = addr(rng);
        let len = match a {
            IpAddr::V4(_) => [8, 16, 22, 24, 30, 32][rng.below(6) as usize],
            IpAddr::V6(_) => [16, 64, 126, 128][rng.below(4) as usize],
        };
        let n = IpNetwork::new(a, len).expect("prefix length");
        IpNetwork::new(n.network(), len).expect("prefix length")
    }

    fn ports(rng: &mut Rng) -> Vec<(u16, u16)> {
        (0..rng.below(3))
            .map(|_| {
                let lo = 1 + rng.below(100) as u16;
                (lo, lo + rng.below(20) as u16)
            })
            .collect()
    }

    fn rule(rng: &mut Rng, n: usize) -> FwRule {
        let proto = [
            FwProto::Tcp,
            FwProto::Udp,
            FwProto::Icmp,
            FwProto::Icmpv6,
            FwProto::Any,
        ][rng.below(5) as usize];
        let direction = if rng.below(2) == 0 {
            Direction::In
        } else {
            Direction::Out
        };
        let mut r = FwRule::new(
            Origin::field(format!("firewall.rules[{n}]")),
            direction,
            proto,
        );
        r.src = (0..rng.below(3)).map(|_| net(rng)).collect();
        r.dst = (0..rng.below(2)).map(|_| net(rng)).collect();
        if proto.has_ports() {
            r.sport = if rng.below(4) == 0 {
                ports(rng)
            } else {
                Vec::new()
            };
            r.dport = ports(rng);
        }
        if proto.has_icmp_type() {
            r.icmp_type = (0..rng.below(3)).map(|_| rng.below(12) as u8).collect();
        }
        r.action = [FwAction::Accept, FwAction::Drop, FwAction::Reject][rng.below(3) as usize];
        r.dnat = r.direction == Direction::In && rng.below(4) == 0;
        r
    }

    fn packet(rng: &mut Rng) -> Packet {
        let proto = PACKET_PROTOS[rng.below(5) as usize];
        let icmp = matches!(proto, PacketProto::Icmp | PacketProto::Icmpv6);
        Packet {
            direction: if rng.below(2) == 0 {
                Direction::In
            } else {
                Direction::Out
            },
            proto,
            src: addr(rng),
            dst: addr(rng),
            sport: if icmp { 0 } else { rng.below(130) as u16 },
            dport: if icmp {
                rng.below(14) as u16
            } else {
                rng.below(130) as u16
            },
            translated: rng.below(2) == 0,
        }
    }

    /// The classifier decides like the first-match scan, over random rule sets of
    /// every size up to 300 (five words of bitmap) and random packets.
    #[test]
    fn the_classifier_picks_the_first_matching_rule() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut decided = 0;
        for round in 0..60 {
            let n = [1, 5, 63, 64, 65, 130, 300][round % 7];
            let rules: Vec<FwRule> = (0..n).map(|i| rule(&mut rng, i)).collect();
            let classifier = Classifier::compile(&rules);
            for _ in 0..400 {
                let p = packet(&mut rng);
                let want = first_match(&rules, &p);
                assert_eq!(classifier.classify(&p), want, "{p:?} with {n} rules");
                decided += usize::from(want.is_some());
            }
        }
        assert!(decided > 1000, "packets that matched a rule: {decided}");
    }

    #[test]
    fn classes_are_shared_and_ports_are_pieces() {
        let mut ssh = FwRule::new(Origin::field("r0"), Direction::In, FwProto::Tcp);
        ssh.src = vec!["10.0.0.0/24".parse().expect("net")];
        ssh.dport = vec![(22, 22)];
        let mut web = FwRule::new(Origin::field("r1"), Direction::In, FwProto::Tcp);
        web.dport = vec![(443, 443), (8000, 8100)];
        let c = Classifier::compile(&[ssh, web]);
        let tcp = &c.buckets[&(Direction::In, PacketProto::Tcp)];
        let starts: Vec<u16> = tcp.dport.pieces.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, [0, 22, 23, 443, 444, 8000, 8101]);
        // The pieces outside every range share one class; so do 443 and 8000-8100.
        assert_eq!(tcp.dport.pieces[0].1, tcp.dport.pieces[2].1);
        assert_eq!(tcp.dport.pieces[3].1, tcp.dport.pieces[5].1);
        let p = |src: &str, dport| Packet {
            direction: Direction::In,
            proto: PacketProto::Tcp,
            src: src.parse().expect("addr"),
            dst: "192.0.2.1".parse().expect("addr"),
            sport: 40000,
            dport,
            translated: false,
        };
        assert_eq!(c.classify(&p("10.0.0.7", 22)), Some(0));
        assert_eq!(c.classify(&p("10.0.1.7", 22)), None);
        assert_eq!(c.classify(&p("10.0.1.7", 8050)), Some(1));
        assert!(!c.buckets.contains_key(&(Direction::Out, PacketProto::Tcp)));
    }

    /// 10,000 rules (each its own port) compile, and a packet's lookup reads a
    /// bounded number of words: the summary has three.
    #[test]
    fn ten_thousand_rules_compile_to_bounded_lookups() {
        let rules: Vec<FwRule> = (0..10_000u16)
            .map(|i| {
                let mut r = FwRule::new(
                    Origin::field(format!("firewall.rules[{i}]")),
                    Direction::In,
                    FwProto::Tcp,
                );
                r.dport = vec![(1000 + i, 1000 + i)];
                r
            })
            .collect();
        let c = Classifier::compile(&rules);
        assert_eq!(c.classes[0].words.len(), 157);
        assert_eq!(c.classes[0].summary.len(), 3);
        let p = Packet {
            direction: Direction::In,
            proto: PacketProto::Tcp,
            src: "198.51.100.1".parse().expect("addr"),
            dst: "192.0.2.1".parse().expect("addr"),
            sport: 5555,
            dport: 1000 + 9_999,
            translated: false,
        };
        assert_eq!(c.classify(&p), Some(9_999));
        assert_eq!(c.classify(&Packet { dport: 999, ..p }), None);
    }

    #[test]
    fn bad_rules_and_shadowed_rules_are_reported() {
        let mut icmp_ports = FwRule::new(
            Origin::field("firewall.rules[0]"),
            Direction::In,
            FwProto::Icmp,
        );
        icmp_ports.dport = vec![(22, 22)];
        let errors = icmp_ports.check();
        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .to_string()
            .contains("`sport`/`dport` need `proto: tcp` or `udp`"));

        let mut tcp_type = FwRule::new(
            Origin::field("firewall.rules[1]"),
            Direction::In,
            FwProto::Tcp,
        );
        tcp_type.icmp_type = vec![8];
        assert!(tcp_type.check()[0]
            .to_string()
            .contains("`icmp_type` needs"));

        let mut v6_icmp = FwRule::new(
            Origin::field("firewall.rules[2]"),
            Direction::In,
            FwProto::Icmp,
        );
        v6_icmp.src = vec!["2001:db8::/32".parse().expect("net")];
        assert!(v6_icmp.check()[0]
            .to_string()
            .contains("use `proto: icmpv6`"));

        let mut wide = FwRule::new(Origin::field("a"), Direction::In, FwProto::Tcp);
        wide.src = vec!["10.0.0.0/8".parse().expect("net")];
        wide.dport = vec![(1, 1024)];
        let mut narrow = FwRule::new(Origin::field("b"), Direction::In, FwProto::Tcp);
        narrow.src = vec!["10.1.0.0/16".parse().expect("net")];
        narrow.dport = vec![(22, 22), (80, 80)];
        let mut other = narrow.clone();
        other.dport = vec![(22, 22), (8080, 8080)];
        assert_eq!(
            shadowed(&[wide.clone(), narrow.clone(), other.clone()]),
            [(0, 1)]
        );
        assert!(
            shadowed(&[narrow, wide]).is_empty(),
            "a wider rule after a narrow one is fine"
        );
    }
}
