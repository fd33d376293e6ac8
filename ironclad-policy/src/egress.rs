//! The identity firewall's policy: ordered egress rules matched on who connects
//! (executable, comm, uid, cgroup) and where (destination CIDR, ports, protocol).
//!
//! Compiling resolves executable paths to the kernel's identity of the file (device,
//! inode, change time) and cgroup paths to cgroup ids, then indexes every rule under
//! its most specific identity field, and compiles each identity's rules into the
//! stateful firewall's bit-vector [`Classifier`] (destination and port, per protocol),
//! so a connect costs a fixed number of lookups however many rules share an identity.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// `statfs(2)`'s `f_type` of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

use ipnetwork::IpNetwork;
use ironclad_core::abi::{
    egress_match, EgressAction as RawAction, EgressKey, EgressKeyKind, EgressRule, ProcExe,
    EGRESS_BUCKETS, EGRESS_CLASSES, EGRESS_MAX_ANCESTORS, EGRESS_MAX_RULES,
};

use crate::domains::{DomainFeed, DomainPattern, DomainSettings};
use crate::error::{Origin, PolicyError};
use crate::firewall::{Classifier, Direction, FwProto, FwRule};

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressAction {
    /// Let the connection (or datagram) through.
    Allow,
    /// Fail `connect()`/`sendmsg()` with EPERM; no packet leaves.
    Deny,
    /// Allow and report an event.
    Log,
}

impl EgressAction {
    fn raw(self) -> u8 {
        match self {
            Self::Allow => RawAction::Allow as u8,
            Self::Deny => RawAction::Deny as u8,
            Self::Log => RawAction::Log as u8,
        }
    }
}

/// Which transport a rule covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Proto {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// Both.
    #[default]
    Any,
}

/// One rule as written. Fields left `None` match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressRuleSpec {
    /// The executable (resolved to its identity when compiled).
    pub exe: Option<PathBuf>,
    /// An ancestor's executable and how many ancestors to look at (1: `parent_exe`,
    /// the parent only; up to [`EGRESS_MAX_ANCESTORS`]: `ancestor_exe`).
    pub ancestor: Option<(PathBuf, u8)>,
    /// The command name (at most 15 bytes).
    pub comm: Option<String>,
    /// The user id.
    pub uid: Option<u32>,
    /// A cgroup v2 directory.
    pub cgroup: Option<PathBuf>,
    /// Destination network (IPv4 also matches IPv4-mapped IPv6 destinations).
    pub dst: Option<IpNetwork>,
    /// Destination names instead: the addresses DNS answers for them opened (see
    /// [`crate::domains`]). Not with `dst`.
    pub dst_domain: Vec<DomainPattern>,
    /// Inclusive port ranges; empty = any port.
    pub ports: Vec<(u16, u16)>,
    /// Transport.
    pub proto: Proto,
    /// What it does.
    pub action: EgressAction,
    /// Where it was written.
    pub origin: Origin,
}

impl EgressRuleSpec {
    /// The rule as one line, from what it matches and does, never from where it is
    /// written: `comm=curl dst=198.51.100.0/24 ports=80,443 proto=tcp deny`. The same
    /// rule gives the same line after a reload that moves it, so it names the rule's
    /// series in metrics (`rule` label).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(exe) = &self.exe {
            parts.push(format!("exe={}", exe.display()));
        }
        if let Some((exe, depth)) = &self.ancestor {
            parts.push(format!("ancestor_exe={}/{depth}", exe.display()));
        }
        if let Some(comm) = &self.comm {
            parts.push(format!("comm={comm}"));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("uid={uid}"));
        }
        if let Some(cgroup) = &self.cgroup {
            parts.push(format!("cgroup={}", cgroup.display()));
        }
        if let Some(dst) = &self.dst {
            parts.push(format!("dst={dst}"));
        }
        if !self.dst_domain.is_empty() {
            let names: Vec<String> = self.dst_domain.iter().map(ToString::to_string).collect();
            parts.push(format!("dst_domain={}", names.join(",")));
        }
        if !self.ports.is_empty() {
            let ports = crate::firewall::ports_text(&self.ports).replace(", ", ",");
            parts.push(format!("ports={ports}"));
        }
        match self.proto {
            Proto::Tcp => parts.push("proto=tcp".to_string()),
            Proto::Udp => parts.push("proto=udp".to_string()),
            Proto::Any => {}
        }
        parts.push(
            match self.action {
                EgressAction::Allow => "allow",
                EgressAction::Deny => "deny",
                EgressAction::Log => "log",
            }
            .to_string(),
        );
        parts.join(" ")
    }
}

/// Per-identity connect() rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectRateLimit {
    /// Attempts per second per executable identity.
    pub per_second: u32,
    /// Attempts allowed at once after being idle.
    pub burst: u32,
}

/// The `egress` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressPolicy {
    /// What happens when no rule matches: `Allow` or `Deny`.
    pub default: EgressAction,
    /// Rules in order: the first that matches decides.
    pub rules: Vec<EgressRuleSpec>,
    /// Optional per-identity connect() rate limit.
    pub rate_limit: Option<ConnectRateLimit>,
    /// Domain feeds whose names' addresses are refused (`deny_domain_feeds`), read.
    pub domain_feeds: Vec<DomainFeed>,
    /// How long answers keep addresses open (`dns:`).
    pub dns: DomainSettings,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            default: EgressAction::Allow,
            rules: Vec::new(),
            rate_limit: None,
            domain_feeds: Vec::new(),
            dns: DomainSettings::default(),
        }
    }
}

/// A rule entry with `dst_domain`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledDomainRule {
    /// Its rule array slot (1-based, as [`CompiledEgress::entries`] index + 1).
    pub slot: u16,
    /// The rule's id.
    pub rule_id: u32,
    /// Its patterns.
    pub patterns: Vec<DomainPattern>,
}

/// A compiled rule's provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledEgressRule {
    /// Counter index (1-based, in policy order).
    pub rule_id: u32,
    /// Where it was written (`egress.rules[3]`).
    pub origin: String,
    /// What it matches and does ([`EgressRuleSpec::summary`]): the same after a
    /// reload that moves the rule, where `rule_id` is its place in the policy.
    pub summary: String,
    /// What it does.
    pub action: EgressAction,
}

/// The egress policy compiled for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledEgress {
    /// Kernel rule entries; index `i` of this vector is rule array slot `i + 1`.
    pub entries: Vec<EgressRule>,
    /// Rule array slots by identity key, ascending.
    pub index: BTreeMap<EgressKey, Vec<u16>>,
    /// Each identity key's rules (in the order of its `index` slots) compiled into the
    /// bit-vector classifier: buckets `(Out, Tcp)`, `(Out, Udp)` and `(Out, Other)`,
    /// with destination (IPv4-mapped) and port dimensions.
    pub classifiers: BTreeMap<EgressKey, Classifier>,
    /// One per policy rule, in order.
    pub rules: Vec<CompiledEgressRule>,
    /// The default action's raw byte.
    pub default_action: u8,
    /// The rate limit, if any.
    pub rate_limit: Option<ConnectRateLimit>,
    /// Every executable the rules name, by identity.
    pub executables: BTreeMap<ProcExe, PathBuf>,
    /// The entries with `dst_domain`, in policy order (not in `index`: their
    /// destinations come from DNS answers, not from the classifier).
    pub domain_rules: Vec<CompiledDomainRule>,
    /// Domain feeds.
    pub domain_feeds: Vec<DomainFeed>,
    /// How long answers keep addresses open.
    pub dns: DomainSettings,
}

impl CompiledEgress {
    /// Whether the policy reads DNS (it has domain rules or domain feeds).
    pub fn uses_domains(&self) -> bool {
        !self.domain_rules.is_empty() || !self.domain_feeds.is_empty()
    }

    /// Every distinct pattern of the domain rules, sorted.
    pub fn domain_patterns(&self) -> Vec<DomainPattern> {
        let mut all: Vec<DomainPattern> = self
            .domain_rules
            .iter()
            .flat_map(|r| r.patterns.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// The kernel's identity of the executable at `path`: see
/// [`ironclad_core::identity::exe_identity`].
pub use ironclad_core::identity::exe_identity;

fn mapped(net: IpNetwork) -> ([u8; 16], u8) {
    match net {
        IpNetwork::V4(n) => (n.network().to_ipv6_mapped().octets(), n.prefix() + 96),
        IpNetwork::V6(n) => (n.network().octets(), n.prefix()),
    }
}

fn comm_bytes(comm: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = comm.len().min(15);
    out[..n].copy_from_slice(&comm.as_bytes()[..n]);
    out
}

/// Why `path` cannot be an executable a process runs (`None` when it can, or when it
/// cannot be read: the identity's own error then names the cause).
fn not_executable(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return Some("not a regular file".to_string());
    }
    let mode = meta.permissions().mode();
    (mode & 0o111 == 0).then(|| format!("not executable (mode {:04o})", mode & 0o7777))
}

fn key(kind: EgressKeyKind, value: &[u8]) -> EgressKey {
    let mut k = EgressKey {
        kind: kind as u8,
        _pad0: [0; 7],
        value: [0; 24],
    };
    let n = value.len().min(24);
    k.value[..n].copy_from_slice(&value[..n]);
    k
}

/// One kernel rule entry as the classifier sees it: outbound, its protocol, its
/// destination as an IPv4-mapped (or IPv6) prefix, its port range. The identity fields
/// are not dimensions: the key indexes them, and the kernel checks the rest of a
/// candidate's identity (uid, cgroup, comm, ancestry) on the entry itself.
fn classifier_rule(e: &EgressRule) -> FwRule {
    let proto = if e.match_ & egress_match::PROTO == 0 {
        FwProto::Any
    } else if e.proto == 6 {
        FwProto::Tcp
    } else {
        FwProto::Udp
    };
    let mut rule = FwRule::new(Origin::field("egress"), Direction::Out, proto);
    if e.match_ & egress_match::DST != 0 {
        if let Ok(net) = ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::from(e.dst), e.prefixlen) {
            rule.dst = vec![IpNetwork::V6(net)];
        }
    }
    if e.match_ & egress_match::PORTS != 0 {
        rule.dport = vec![(e.port_lo, e.port_hi)];
    }
    rule
}

/// How a compile learns what the host's files are: this host's (the identities the
/// kernel will compare), or none (a check without a host: each path stands for itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identities {
    /// Executables and cgroups are looked up on this host.
    ThisHost,
    /// Paths must be absolute; nothing is looked up.
    Portable,
}

impl Identities {
    /// Why `path` cannot be an executable (never, without a host).
    fn not_executable(self, path: &std::path::Path) -> Option<String> {
        match self {
            Self::ThisHost => not_executable(path),
            Self::Portable => None,
        }
    }

    /// The identity of the executable `path`: its file's on this host (its mount's
    /// device from `mounts`, which reads the mount table only for a mount it has not
    /// seen: once per compile, not once per rule), a stand-in per path without one
    /// (distinct paths stay distinct, so conflicts are still found).
    fn exe(
        self,
        path: &std::path::Path,
        mounts: &mut ironclad_core::identity::MountDevices,
    ) -> std::io::Result<ProcExe> {
        match self {
            Self::ThisHost => {
                mounts.exe_identity(path, std::path::Path::new("/proc/self/mountinfo"))
            }
            Self::Portable => Ok(ProcExe {
                ino: stand_in(path),
                ..ProcExe::default()
            }),
        }
    }
}

/// A number for `path` alone (FNV-1a of its bytes), for the identities of a compile
/// without a host.
fn stand_in(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Compiles `policy`: resolves paths, expands port lists, indexes rules by identity.
/// Every problem is returned, each with its rule's origin.
pub fn compile(policy: &EgressPolicy) -> Result<CompiledEgress, Vec<PolicyError>> {
    compile_with(policy, Identities::ThisHost)
}

/// [`compile`], learning the files' identities as `ids` says.
pub(crate) fn compile_with(
    policy: &EgressPolicy,
    ids: Identities,
) -> Result<CompiledEgress, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut entries = Vec::new();
    let mut index: BTreeMap<EgressKey, Vec<u16>> = BTreeMap::new();
    let mut rules = Vec::new();
    let mut executables = BTreeMap::new();
    let mut domain_rules = Vec::new();
    // The mount table read once for the whole compile (10,000 rules naming one
    // executable read it 10,000 times when each lookup read it).
    let mut mounts = ironclad_core::identity::MountDevices::new();
    let mut exe_of = |path: &std::path::Path| ids.exe(path, &mut mounts);
    for (n, spec) in policy.rules.iter().enumerate() {
        let rule_id = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let invalid = |message: String| PolicyError::Invalid {
            origin: spec.origin.clone(),
            message,
        };
        let mut base = EgressRule {
            rule_id,
            action: spec.action.raw(),
            ..EgressRule::default()
        };
        let mut identity = key(EgressKeyKind::Any, &[]);
        if let Some(comm) = &spec.comm {
            if comm.is_empty() || comm.len() > 15 {
                errors.push(invalid(format!(
                    "`{comm}` is not a command name (1 to 15 bytes)"
                )));
                continue;
            }
            base.match_ |= egress_match::COMM;
            base.comm = comm_bytes(comm);
            identity = key(EgressKeyKind::Comm, &base.comm);
        }
        if let Some(uid) = spec.uid {
            base.match_ |= egress_match::UID;
            base.uid = uid;
            identity = key(EgressKeyKind::Uid, &uid.to_ne_bytes());
        }
        if let Some(cgroup) = &spec.cgroup {
            // A directory of the cgroup v2 hierarchy: any other directory (`/etc`) has an
            // inode number that no cgroup id is, and the rule would match nothing.
            if ids == Identities::Portable {
                if cgroup.is_absolute() {
                    base.match_ |= egress_match::CGROUP;
                    base.cgroup_id = stand_in(cgroup);
                    identity = key(EgressKeyKind::Cgroup, &base.cgroup_id.to_ne_bytes());
                } else {
                    errors.push(invalid(format!(
                        "`{}` is not an absolute path",
                        cgroup.display()
                    )));
                    continue;
                }
            } else {
                let cgroup2 = rustix::fs::statfs(cgroup)
                    .is_ok_and(|s| s.f_type as u64 == CGROUP2_SUPER_MAGIC);
                match std::fs::metadata(cgroup) {
                    Ok(meta) if meta.is_dir() && cgroup2 => {
                        base.match_ |= egress_match::CGROUP;
                        base.cgroup_id = meta.ino();
                        identity = key(EgressKeyKind::Cgroup, &base.cgroup_id.to_ne_bytes());
                    }
                    Ok(_) => {
                        errors.push(invalid(format!(
                            "`{}` is not a cgroup directory (a directory under the cgroup v2 \
                         mount, such as /sys/fs/cgroup/system.slice/nginx.service)",
                            cgroup.display()
                        )));
                        continue;
                    }
                    Err(e) => {
                        errors.push(invalid(format!("cgroup `{}`: {e}", cgroup.display())));
                        continue;
                    }
                }
            }
        }
        if let Some(exe) = &spec.exe {
            // A rule naming a file nothing can execute would never match: refuse it.
            if let Some(why) = ids.not_executable(exe) {
                errors.push(invalid(format!("executable `{}`: {why}", exe.display())));
                continue;
            }
            match exe_of(exe) {
                Ok(id) if exe.is_absolute() => {
                    base.match_ |= egress_match::EXE;
                    base.exe = id;
                    executables.insert(id, exe.clone());
                    identity = key(EgressKeyKind::Exe, &id.to_bytes());
                }
                Ok(_) => {
                    errors.push(invalid(format!(
                        "`{}` is not an absolute path",
                        exe.display()
                    )));
                    continue;
                }
                Err(e) => {
                    errors.push(invalid(format!("executable `{}`: {e}", exe.display())));
                    continue;
                }
            }
        }
        if let Some((path, depth)) = &spec.ancestor {
            // Not an index key: a rule naming only an ancestor is looked at for every
            // process (the kernel walks at most `depth` parent links for it).
            if *depth == 0 || *depth > EGRESS_MAX_ANCESTORS {
                errors.push(invalid(format!(
                    "ancestor depth {depth} is outside 1..={EGRESS_MAX_ANCESTORS}"
                )));
                continue;
            }
            if let Some(why) = ids.not_executable(path) {
                errors.push(invalid(format!("ancestor `{}`: {why}", path.display())));
                continue;
            }
            match exe_of(path) {
                Ok(id) if path.is_absolute() => {
                    base.match_ |= egress_match::ANCESTOR;
                    base.ancestor = id;
                    base.ancestor_depth = *depth;
                    executables.insert(id, path.clone());
                }
                Ok(_) => {
                    errors.push(invalid(format!(
                        "`{}` is not an absolute path",
                        path.display()
                    )));
                    continue;
                }
                Err(e) => {
                    errors.push(invalid(format!("ancestor `{}`: {e}", path.display())));
                    continue;
                }
            }
        }
        if spec.dst.is_some() && !spec.dst_domain.is_empty() {
            errors.push(invalid(
                "`dst` and `dst_domain` together: a rule names addresses or names (write two rules)"
                    .to_string(),
            ));
            continue;
        }
        if !spec.dst_domain.is_empty() {
            base.match_ |= egress_match::DOMAIN;
        }
        if let Some(dst) = spec.dst {
            let network = IpNetwork::new(dst.network(), dst.prefix()).unwrap_or(dst);
            if network.ip() != dst.ip() {
                errors.push(PolicyError::HostBitsSet {
                    origin: spec.origin.clone(),
                    cidr: dst,
                    network,
                });
                continue;
            }
            base.match_ |= egress_match::DST;
            (base.dst, base.prefixlen) = mapped(dst);
        }
        match spec.proto {
            Proto::Tcp => {
                base.match_ |= egress_match::PROTO;
                base.proto = 6;
            }
            Proto::Udp => {
                base.match_ |= egress_match::PROTO;
                base.proto = 17;
            }
            Proto::Any => {}
        }
        let ranges: Vec<Option<(u16, u16)>> = if spec.ports.is_empty() {
            vec![None]
        } else {
            spec.ports.iter().map(|r| Some(*r)).collect()
        };
        for range in ranges {
            let mut entry = base;
            if let Some((lo, hi)) = range {
                if lo > hi || lo == 0 {
                    errors.push(invalid(format!(
                        "port range {lo}-{hi} is empty or starts at 0"
                    )));
                    continue;
                }
                entry.match_ |= egress_match::PORTS;
                entry.port_lo = lo;
                entry.port_hi = hi;
            }
            entries.push(entry);
            let slot = u16::try_from(entries.len()).unwrap_or(u16::MAX);
            if spec.dst_domain.is_empty() {
                index.entry(identity).or_default().push(slot);
            } else {
                domain_rules.push(CompiledDomainRule {
                    slot,
                    rule_id,
                    patterns: spec.dst_domain.clone(),
                });
            }
        }
        rules.push(CompiledEgressRule {
            rule_id,
            origin: spec.origin.field.clone(),
            summary: spec.summary(),
            action: spec.action,
        });
    }
    if entries.len() >= EGRESS_MAX_RULES as usize {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.rules"),
            count: entries.len(),
            limit: EGRESS_MAX_RULES - 1,
        });
    }
    if index.len() > EGRESS_BUCKETS as usize {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.rules (distinct identities)"),
            count: index.len(),
            limit: EGRESS_BUCKETS,
        });
    }
    let (max_patterns, max_rules, max_feeds) = crate::domains::LIMITS;
    let mut patterns: Vec<&DomainPattern> =
        policy.rules.iter().flat_map(|r| &r.dst_domain).collect();
    patterns.sort();
    patterns.dedup();
    if patterns.len() > max_patterns {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.rules (distinct dst_domain patterns)"),
            count: patterns.len(),
            limit: u32::try_from(max_patterns).unwrap_or(u32::MAX),
        });
    }
    if domain_rules.len() > max_rules {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.rules (with dst_domain, one per port range)"),
            count: domain_rules.len(),
            limit: u32::try_from(max_rules).unwrap_or(u32::MAX),
        });
    }
    if policy.domain_feeds.len() > max_feeds {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.deny_domain_feeds"),
            count: policy.domain_feeds.len(),
            limit: u32::try_from(max_feeds).unwrap_or(u32::MAX),
        });
    }
    let names = patterns.len()
        + policy
            .domain_feeds
            .iter()
            .map(|f| f.names.len())
            .sum::<usize>();
    if names > crate::domains::MAX_FEED_NAMES {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.deny_domain_feeds (names of every feed)"),
            count: names,
            limit: ironclad_core::abi::DNS_NAMES,
        });
    }
    if policy.default == EgressAction::Log {
        errors.push(PolicyError::Invalid {
            origin: Origin::field("egress.default"),
            message: "the default is `allow` or `deny`".to_string(),
        });
    }
    if let Some(rate) = policy.rate_limit {
        if rate.per_second == 0 || rate.burst == 0 {
            errors.push(PolicyError::Invalid {
                origin: Origin::field("egress.rate_limit"),
                message: "per_second and burst must both be at least 1".to_string(),
            });
        }
    }
    let classifiers: BTreeMap<EgressKey, Classifier> = index
        .iter()
        .map(|(key, slots)| {
            let rules: Vec<FwRule> = slots
                .iter()
                .filter_map(|slot| entries.get(usize::from(*slot).checked_sub(1)?))
                .map(classifier_rule)
                .collect();
            (*key, Classifier::compile(&rules))
        })
        .collect();
    let classes: usize = classifiers.values().map(|c| c.classes.len()).sum();
    if classes > EGRESS_CLASSES as usize {
        errors.push(PolicyError::TooMany {
            origin: Origin::field("egress.rules (destination and port classes)"),
            count: classes,
            limit: EGRESS_CLASSES,
        });
    }
    if errors.is_empty() {
        Ok(CompiledEgress {
            entries,
            index,
            classifiers,
            rules,
            default_action: policy.default.raw(),
            rate_limit: policy.rate_limit,
            executables,
            domain_rules,
            domain_feeds: policy.domain_feeds.clone(),
            dns: policy.dns.clone(),
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: EgressAction) -> EgressRuleSpec {
        EgressRuleSpec {
            exe: None,
            ancestor: None,
            comm: None,
            uid: None,
            cgroup: None,
            dst: None,
            dst_domain: Vec::new(),
            ports: Vec::new(),
            proto: Proto::Any,
            action,
            origin: Origin::field("egress.rules[0]"),
        }
    }

    #[test]
    fn a_rules_summary_names_what_it_matches_and_does_not_where_it_is() {
        let mut r = rule(EgressAction::Deny);
        r.comm = Some("curl".to_string());
        r.uid = Some(1000);
        r.dst = "198.51.100.0/24".parse().ok();
        r.ports = vec![(80, 80), (443, 443), (8000, 8100)];
        r.proto = Proto::Tcp;
        let text = r.summary();
        assert_eq!(
            text,
            "comm=curl uid=1000 dst=198.51.100.0/24 ports=80,443,8000-8100 proto=tcp deny"
        );
        // Where it is written does not enter it.
        r.origin = Origin::default();
        assert_eq!(r.summary(), text);
        assert_eq!(rule(EgressAction::Log).summary(), "log");
    }

    #[test]
    fn rules_are_indexed_by_their_most_specific_identity() {
        let exe = std::env::current_exe().expect("exe");
        let policy = EgressPolicy {
            default: EgressAction::Deny,
            rules: vec![
                EgressRuleSpec {
                    exe: Some(exe.clone()),
                    uid: Some(0),
                    dst: Some("10.0.0.0/8".parse().expect("cidr")),
                    ports: vec![(80, 80), (8000, 8100)],
                    proto: Proto::Tcp,
                    ..rule(EgressAction::Allow)
                },
                EgressRuleSpec {
                    comm: Some("curl".into()),
                    ..rule(EgressAction::Log)
                },
                rule(EgressAction::Deny),
            ],
            ..EgressPolicy::default()
        };
        let c = compile(&policy).expect("valid");
        assert_eq!(c.entries.len(), 4, "two port ranges expand the first rule");
        assert_eq!(c.entries[0].rule_id, 1);
        assert_eq!(c.entries[1].rule_id, 1);
        assert_eq!(c.entries[0].prefixlen, 8 + 96);
        assert_eq!(
            &c.entries[0].dst[..12],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        let exe_key = key(
            EgressKeyKind::Exe,
            &exe_identity(&exe).expect("stat").to_bytes(),
        );
        assert_eq!(c.index[&exe_key], vec![1, 2]);
        assert_eq!(
            c.index[&key(EgressKeyKind::Comm, &comm_bytes("curl"))],
            vec![3]
        );
        assert_eq!(c.index[&key(EgressKeyKind::Any, &[])], vec![4]);
        assert_eq!(c.default_action, RawAction::Deny as u8);
    }

    #[test]
    fn each_identity_s_rules_compile_into_one_classifier_with_no_limit_of_64() {
        use crate::firewall::{Packet, PacketProto};
        // 300 rules for one uid, then one for any process.
        let mut rules: Vec<EgressRuleSpec> = (0..300u32)
            .map(|i| EgressRuleSpec {
                uid: Some(1000),
                dst: Some(format!("10.0.{}.0/24", i % 250).parse().expect("cidr")),
                ports: vec![(
                    u16::try_from(2000 + i).expect("port"),
                    u16::try_from(2000 + i).expect("port"),
                )],
                proto: if i % 2 == 0 { Proto::Tcp } else { Proto::Any },
                ..rule(EgressAction::Deny)
            })
            .collect();
        rules.push(rule(EgressAction::Allow));
        let c = compile(&EgressPolicy {
            default: EgressAction::Deny,
            rules,
            ..EgressPolicy::default()
        })
        .expect("300 rules share one identity");
        let uid_key = key(EgressKeyKind::Uid, &1000u32.to_ne_bytes());
        assert_eq!(c.index[&uid_key].len(), 300);
        let classifier = &c.classifiers[&uid_key];
        let tcp = &classifier.buckets[&(Direction::Out, PacketProto::Tcp)];
        let udp = &classifier.buckets[&(Direction::Out, PacketProto::Udp)];
        assert_eq!(
            (tcp.rules.len(), udp.rules.len()),
            (300, 150),
            "udp: the `any` half"
        );
        // The kernel's algorithm in user space: rule 257 (10.0.7.0/24, port 2257, any
        // protocol) is the first match for a UDP datagram there.
        let packet = |proto, dport| Packet {
            direction: Direction::Out,
            proto,
            src: "::".parse().expect("any"),
            dst: "::ffff:10.0.7.9".parse().expect("mapped"),
            sport: 40000,
            dport,
            translated: false,
        };
        assert_eq!(
            classifier.classify(&packet(PacketProto::Udp, 2257)),
            Some(257)
        );
        assert_eq!(udp.rules[128], 257, "bit 128 of the udp bucket");
        assert_eq!(
            classifier.classify(&packet(PacketProto::Tcp, 2257)),
            Some(257)
        );
        assert_eq!(
            classifier.classify(&packet(PacketProto::Udp, 2256)),
            None,
            "a tcp rule"
        );
        assert_eq!(c.classifiers.len(), 2, "the uid and the `any` key");
    }

    #[test]
    fn unknown_paths_bad_ports_and_long_comms_are_errors() {
        let policy = EgressPolicy {
            default: EgressAction::Allow,
            rules: vec![
                EgressRuleSpec {
                    exe: Some("/nonexistent/bin".into()),
                    ..rule(EgressAction::Allow)
                },
                EgressRuleSpec {
                    ports: vec![(90, 80)],
                    ..rule(EgressAction::Allow)
                },
                EgressRuleSpec {
                    comm: Some("a-very-long-command".into()),
                    ..rule(EgressAction::Allow)
                },
                EgressRuleSpec {
                    exe: Some("/etc/passwd".into()),
                    ..rule(EgressAction::Allow)
                },
                EgressRuleSpec {
                    exe: Some("/usr/bin".into()),
                    ..rule(EgressAction::Allow)
                },
            ],
            ..EgressPolicy::default()
        };
        let errors = compile(&policy).expect_err("invalid");
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[3]
                .to_string()
                .contains("executable `/etc/passwd`: not executable (mode 0644)"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4]
                .to_string()
                .contains("executable `/usr/bin`: not a regular file"),
            "{}",
            errors[4]
        );
        assert!(errors[0]
            .to_string()
            .contains("executable `/nonexistent/bin`"));
        assert!(errors[1].to_string().contains("port range 90-80"));
        assert!(errors[2].to_string().contains("not a command name"));
    }
}
