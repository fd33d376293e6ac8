//! Egress rules by DNS name and domain feeds, on the identity firewall's side: the name
//! table the kernel matches questions against, the pattern bits, the domain rules of
//! each generation, and the live addresses answers opened.
//!
//! The kernel reads DNS where the host's processes receive it (`ic_dns_in`,
//! `cgroup_skb/ingress`, before the answer is queued to the socket), so the first
//! `connect()` after an answer already finds its addresses; see docs/firewall.md
//! ("Egress by name") for the mechanism and what an answer's scope is.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use ironclad_core::abi::{
    DnsAddr, DnsAddrKey, DnsConfig, DnsDenial, DnsFeedCounter, DnsLabel, DnsName, DnsOwner,
    DnsRule, DnsTotal, ProcExe, DNS_FEEDS, DNS_FEED_COUNTERS, DNS_F_ACTIVE, DNS_OWNER_SCOPE,
    DNS_OWNER_UID, DNS_PATTERNS, DNS_RULES,
};
use ironclad_policy::domains::DomainPattern;
use ironclad_policy::egress::CompiledEgress;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::error::{BpfError, Result};
use crate::loader::LoadedObject;
use crate::names;

/// The hash of a name (dotted, any case, without the final dot) as the kernel computes
/// it with `key`: SipHash-1-3 chained over the labels from the last (see `ironclad.h`,
/// "Domain policy"). Every suffix of the name has its own hash on the way.
pub fn name_hash(key: [u64; 2], name: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = 0u64;
    for label in name.trim_end_matches('.').rsplit('.') {
        let mut sip = siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]);
        sip.write(&h.to_le_bytes());
        sip.write(label.to_ascii_lowercase().as_bytes());
        h = sip.finish();
    }
    h
}

/// What the user space side remembers between policies: the hash key, which pattern
/// owns which bit, which feed which id, and the name table as written.
#[derive(Debug, Default)]
pub(crate) struct DomainState {
    key: Option<[u64; 2]>,
    /// Pattern → bit, for the live policy.
    bits: BTreeMap<DomainPattern, u8>,
    /// Feed names by id - 1, for the live policy.
    feeds: Vec<String>,
    /// The name table as last written (None: not read since the object was loaded).
    written: Option<HashMap<u64, DnsName>>,
}

impl DomainState {
    /// The patterns by bit, for reports.
    pub(crate) fn patterns(&self) -> Vec<(u8, DomainPattern)> {
        let mut out: Vec<(u8, DomainPattern)> =
            self.bits.iter().map(|(p, b)| (*b, p.clone())).collect();
        out.sort();
        out
    }

    /// The feeds' names, by id - 1.
    pub(crate) fn feed_names(&self) -> &[String] {
        &self.feeds
    }

    /// The name of the feed an event calls `feed<N>`.
    pub(crate) fn feed_name(&self, placeholder: &str) -> Option<String> {
        let id: usize = placeholder.strip_prefix("feed")?.parse().ok()?;
        self.feeds.get(id.checked_sub(1)?).cloned()
    }
}

fn random_key() -> Result<[u64; 2]> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        let Some(rest) = bytes.get_mut(filled..) else {
            break;
        };
        filled +=
            rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()).map_err(|e| {
                BpfError::Io {
                    path: "getrandom".into(),
                    source: e.into(),
                }
            })?;
    }
    let (a, b) = bytes.split_at(8);
    Ok([
        u64::from_le_bytes(a.try_into().unwrap_or([0; 8])),
        u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
    ])
}

fn live_config(object: &LoadedObject) -> Result<DnsConfig> {
    Ok(object
        .map(names::egress::ic_dns_config)?
        .lookup(&0u32.to_ne_bytes())?
        .and_then(|b| DnsConfig::from_bytes(&b))
        .unwrap_or_default())
}

/// The name table a policy needs, with its pattern bits and feed ids.
fn name_table(
    key: [u64; 2],
    bits: &BTreeMap<DomainPattern, u8>,
    policy: &CompiledEgress,
) -> HashMap<u64, DnsName> {
    let mut table: HashMap<u64, DnsName> = HashMap::new();
    for (pattern, bit) in bits {
        let entry = table.entry(name_hash(key, &pattern.name)).or_default();
        if pattern.wildcard {
            entry.wild |= 1u64 << bit;
        } else {
            entry.exact |= 1u64 << bit;
        }
    }
    for (i, feed) in policy.domain_feeds.iter().enumerate() {
        let id = u8::try_from(i + 1).unwrap_or(u8::MAX);
        for name in &feed.names {
            let entry = table.entry(name_hash(key, &name.name)).or_default();
            // The first feed listing a name is the one reported.
            if name.wildcard {
                if entry.feed_wild == 0 {
                    entry.feed_wild = id;
                }
            } else if entry.feed_exact == 0 {
                entry.feed_exact = id;
            }
        }
    }
    table
}

/// Writes `want` over the table as written (`have`): changed and new entries, then
/// deletes the ones `want` has not.
fn write_table(
    object: &LoadedObject,
    have: &mut HashMap<u64, DnsName>,
    want: &HashMap<u64, DnsName>,
) -> Result<()> {
    let map = object.map(names::egress::ic_dns_names)?;
    let changed: Vec<([u8; 8], [u8; DnsName::SIZE])> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.to_ne_bytes(), v.to_bytes()))
        .collect();
    map.update_many(changed.iter().map(|(k, v)| (&k[..], &v[..])))?;
    let gone: Vec<[u8; 8]> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| k.to_ne_bytes())
        .collect();
    map.delete_many(gone.iter().map(|k| &k[..]))?;
    have.clone_from(want);
    Ok(())
}

/// Clears `bits` from every live address (their patterns are gone: a new pattern that
/// takes the bit must not inherit what they opened). Entries left with nothing are
/// removed.
fn clear_bits(object: &LoadedObject, bits: u64) -> Result<()> {
    if bits == 0 {
        return Ok(());
    }
    let map = object.map(names::egress::ic_dns_addrs)?;
    let mut gone = Vec::new();
    for key in map.keys() {
        let Some(mut v) = map.lookup(&key)?.and_then(|b| DnsAddr::from_bytes(&b)) else {
            continue;
        };
        if v.patterns & bits == 0 {
            continue;
        }
        v.patterns &= !bits;
        for (b, e) in v.expires.iter_mut().enumerate() {
            if bits >> b & 1 == 1 {
                *e = 0;
            }
        }
        if v.patterns == 0 {
            gone.push(key);
        } else {
            map.update(&key, &v.to_bytes())?;
        }
    }
    forget(object, &gone)?;
    Ok(())
}

/// What a sweep of the opened addresses found ([`EgressFirewall::sweep_domains`](crate::EgressFirewall::sweep_domains)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainSweep {
    /// Entries the table held.
    pub entries: usize,
    /// Of them, expired and removed.
    pub removed: usize,
}

/// Removes the opened addresses whose every pattern has expired, and gives their room
/// back to their executable and user (`ic_dns_owners`). The table is a plain hash,
/// not an LRU, so that a flood of answers is refused rather than evicting what other
/// processes' answers opened; this sweep is what frees it. An answer that arrives in the
/// microseconds between reading an expired entry and deleting it is lost with it: the
/// next answer for the name opens the address again.
pub(crate) fn sweep(object: &LoadedObject) -> Result<DomainSweep> {
    let now = boot_seconds();
    let addrs = object.map(names::egress::ic_dns_addrs)?;
    let mut expired = Vec::new();
    let entries = addrs.for_each_entry(|key, value| {
        if DnsAddr::from_bytes(value)
            .is_some_and(|v| v.expires.iter().all(|&e| u64::from(e) <= now))
        {
            expired.push(key.to_vec());
        }
    })?;
    let removed = forget(object, &expired)?;
    Ok(DomainSweep { entries, removed })
}

/// Deletes `keys` from the opened addresses (and their names), and takes each deleted
/// entry off its executable's and its user's counts. Returns how many were deleted.
fn forget(object: &LoadedObject, keys: &[Vec<u8>]) -> Result<usize> {
    if keys.is_empty() {
        return Ok(0);
    }
    let addrs = object.map(names::egress::ic_dns_addrs)?;
    let mut freed: HashMap<Vec<u8>, u64> = HashMap::new();
    let removed = addrs.delete_each(keys.iter().map(Vec::as_slice), |at| {
        let Some(key) = keys.get(at).and_then(|k| DnsAddrKey::from_bytes(k)) else {
            return;
        };
        for owner in [
            DnsOwner {
                exe: key.exe,
                uid: key.uid,
                kind: DNS_OWNER_SCOPE,
            },
            DnsOwner {
                exe: ProcExe::default(),
                uid: key.uid,
                kind: DNS_OWNER_UID,
            },
        ] {
            *freed.entry(owner.to_bytes().to_vec()).or_default() += 1;
        }
    })?;
    object
        .map(names::egress::ic_dns_seen_names)?
        .delete_many(keys.iter().map(Vec::as_slice))?;
    // A count the kernel raises between this read and the write below loses that one
    // entry (the owner may then hold one more than its share until it expires): the
    // kernel's side is an atomic add, this one a read and a write.
    let owners = object.map(names::egress::ic_dns_owners)?;
    let mut lower = Vec::new();
    let mut drop = Vec::new();
    for (owner, n) in freed {
        let held = owners
            .lookup(&owner)?
            .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
            .map_or(0, u64::from_ne_bytes);
        match held.saturating_sub(n) {
            0 => drop.push(owner),
            left => lower.push((owner, left.to_ne_bytes())),
        }
    }
    owners.update_many(lower.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
    owners.delete_many(drop.iter().map(Vec::as_slice))?;
    Ok(removed)
}

/// Makes the domain part of `policy` current for generation `next` (its rules are
/// written there; the caller flips the generation). Returns whether DNS is read.
pub(crate) fn apply(
    object: &LoadedObject,
    state: &mut DomainState,
    policy: &CompiledEgress,
    next: u32,
) -> Result<bool> {
    let live = live_config(object)?;
    let key = match state.key {
        Some(k) => k,
        None => {
            // A restart over pinned maps keeps the key, so the table and the addresses
            // it opened stay valid; a first start makes one.
            let k = if live.key != [0, 0] {
                live.key
            } else {
                random_key()?
            };
            state.key = Some(k);
            k
        }
    };
    let names_map = object.map(names::egress::ic_dns_names)?;
    if state.written.is_none() {
        let mut written = HashMap::new();
        for k in names_map.keys() {
            let Some(hash) = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
            else {
                continue;
            };
            if let Some(v) = names_map.lookup(&k)?.and_then(|b| DnsName::from_bytes(&b)) {
                written.insert(hash, v);
            }
        }
        // The bits an earlier run gave the patterns this policy keeps.
        if state.bits.is_empty() {
            for pattern in policy.domain_patterns() {
                if let Some(v) = written.get(&name_hash(key, &pattern.name)) {
                    let mask = if pattern.wildcard { v.wild } else { v.exact };
                    if mask.count_ones() == 1 {
                        state
                            .bits
                            .insert(pattern, u8::try_from(mask.trailing_zeros()).unwrap_or(0));
                    }
                }
            }
        }
        state.written = Some(written);
    }
    let patterns = policy.domain_patterns();
    if patterns.len() > DNS_PATTERNS || policy.domain_rules.len() > DNS_RULES {
        return Err(BpfError::FirewallRules {
            problems: vec![format!(
                "{} dst_domain patterns and {} domain rule entries; the kernel takes {DNS_PATTERNS} and {DNS_RULES}",
                patterns.len(),
                policy.domain_rules.len()
            )],
        });
    }
    // Bits: kept by the patterns that stay, freed by the others, taken by new ones.
    let mut bits: BTreeMap<DomainPattern, u8> = state
        .bits
        .iter()
        .filter(|(p, _)| patterns.contains(p))
        .map(|(p, b)| (p.clone(), *b))
        .collect();
    let freed: u64 = state
        .bits
        .iter()
        .filter(|(p, _)| !bits.contains_key(*p))
        .fold(0, |m, (_, b)| m | 1u64 << b);
    let mut used: u64 = bits.values().fold(0, |m, b| m | 1u64 << b);
    let mut fresh: u64 = 0;
    for pattern in &patterns {
        if bits.contains_key(pattern) {
            continue;
        }
        // Prefer a bit never used, so a freed one is reused only when needed.
        let free = !used & !freed;
        let bit = if free != 0 {
            free.trailing_zeros()
        } else {
            (!used).trailing_zeros()
        };
        let bit = u8::try_from(bit).unwrap_or(0);
        used |= 1u64 << bit;
        fresh |= 1u64 << bit;
        bits.insert(pattern.clone(), bit);
    }
    let want = name_table(key, &bits, policy);
    let mut have = state.written.take().unwrap_or_default();
    // First without the new patterns' bits: no answer can set a freed bit while its old
    // addresses are cleared, then with them.
    let mut first = want.clone();
    for v in first.values_mut() {
        v.exact &= !fresh;
        v.wild &= !fresh;
    }
    first.retain(|_, v| v.exact != 0 || v.wild != 0 || v.feed_exact != 0 || v.feed_wild != 0);
    let result = write_table(object, &mut have, &first)
        .and_then(|()| clear_bits(object, freed))
        .and_then(|()| write_table(object, &mut have, &want));
    state.written = Some(have);
    result?;

    // Denials of feeds that are gone (or moved to another id) are lifted.
    let feeds: Vec<String> = policy.domain_feeds.iter().map(|f| f.name.clone()).collect();
    if feeds != state.feeds {
        let denied = object.map(names::egress::ic_dns_denied)?;
        let mut gone = Vec::new();
        for k in denied.keys() {
            let Some(d) = denied.lookup(&k)?.and_then(|b| DnsDenial::from_bytes(&b)) else {
                continue;
            };
            let id = usize::from(d.feed);
            let old = id.checked_sub(1).and_then(|i| state.feeds.get(i));
            let new = id.checked_sub(1).and_then(|i| feeds.get(i));
            if old.is_none() || old != new {
                gone.push(k);
            }
        }
        denied.delete_many(gone.iter().map(Vec::as_slice))?;
    }

    // The domain rules of generation `next`, in policy order, 0 ending the list.
    let rules = object.map(names::egress::ic_dns_rules)?;
    let images: Vec<([u8; 4], [u8; DnsRule::SIZE])> = (0..DNS_RULES)
        .map(|i| {
            let rule = policy
                .domain_rules
                .get(i)
                .map_or_else(DnsRule::default, |r| DnsRule {
                    slot: u32::from(r.slot),
                    _pad0: 0,
                    patterns: r
                        .patterns
                        .iter()
                        .filter_map(|p| bits.get(p))
                        .fold(0, |m, b| m | 1u64 << b),
                });
            let index =
                next * u32::try_from(DNS_RULES).unwrap_or(0) + u32::try_from(i).unwrap_or(0);
            (index.to_ne_bytes(), rule.to_bytes())
        })
        .collect();
    rules.update_many(images.iter().map(|(k, v)| (&k[..], &v[..])))?;

    // The texts of the bits and feeds, for status and metrics read from the pins.
    let pattern_labels = object.map(names::egress::ic_dns_patterns)?;
    let mut images: Vec<([u8; 4], [u8; DnsLabel::SIZE])> = Vec::new();
    for bit in 0..DNS_PATTERNS {
        let label = bits
            .iter()
            .find(|(_, b)| usize::from(**b) == bit)
            .map_or_else(DnsLabel::default, |(p, _)| {
                DnsLabel::new(&p.name, p.wildcard)
            });
        images.push((
            u32::try_from(bit).unwrap_or(0).to_ne_bytes(),
            label.to_bytes(),
        ));
    }
    pattern_labels.update_many(images.iter().map(|(k, v)| (&k[..], &v[..])))?;
    let feed_labels = object.map(names::egress::ic_dns_feed_names)?;
    let images: Vec<([u8; 4], [u8; DnsLabel::SIZE])> = (0..=DNS_FEEDS)
        .map(|id| {
            let label = id
                .checked_sub(1)
                .and_then(|i| feeds.get(i))
                .map_or_else(DnsLabel::default, |name| DnsLabel::new(name, false));
            (
                u32::try_from(id).unwrap_or(0).to_ne_bytes(),
                label.to_bytes(),
            )
        })
        .collect();
    feed_labels.update_many(images.iter().map(|(k, v)| (&k[..], &v[..])))?;

    // Encrypted DNS resolvers, reported on connect.
    let encrypted = object.map(names::egress::ic_dns_encrypted)?;
    let stale = encrypted.keys();
    encrypted.delete_many(stale.iter().map(Vec::as_slice))?;
    let resolvers: Vec<[u8; 16]> = policy
        .dns
        .encrypted_resolvers
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        })
        .collect();
    encrypted.update_many(resolvers.iter().map(|k| (&k[..], &[1u8][..])))?;

    let active = policy.uses_domains();
    let config = DnsConfig {
        key,
        flags: if active { DNS_F_ACTIVE } else { 0 },
        grace_sec: policy.dns.grace_seconds,
        max_ttl_sec: policy.dns.max_ttl_seconds,
        block_feeds: policy
            .domain_feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.block_queries)
            .fold(0u32, |m, (i, _)| {
                m | 1u32
                    .checked_shl(u32::try_from(i).unwrap_or(31))
                    .unwrap_or(0)
            }),
    };
    object
        .map(names::egress::ic_dns_config)?
        .update(&0u32.to_ne_bytes(), &config.to_bytes())?;
    if !active {
        // Nothing reads these any more: give their memory back.
        for map in [
            names::egress::ic_dns_addrs,
            names::egress::ic_dns_denied,
            names::egress::ic_dns_owners,
            names::egress::ic_dns_seen_names,
        ] {
            let m = object.map(map)?;
            let keys = m.keys();
            m.delete_many(keys.iter().map(Vec::as_slice))?;
        }
    }
    state.bits = bits;
    state.feeds = feeds;
    Ok(active)
}

/// An address a DNS answer opened, for one executable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenedAddress {
    /// The address (an IPv4-mapped address as IPv4).
    pub addr: IpAddr,
    /// The executable whose process received the answer (zeros: not known).
    pub exe: ProcExe,
    /// That process's user.
    pub uid: u32,
    /// Its path, when known.
    pub exe_path: Option<String>,
    /// The name the answer that opened it asked for (from the answer events, while a
    /// reader runs; `None` when none was read).
    pub name: Option<String>,
    /// The patterns it is open for, each with the time left.
    pub patterns: Vec<(DomainPattern, Duration)>,
}

/// An address a domain feed's name resolved to: `connect()` to it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeniedAddress {
    /// The address.
    pub addr: IpAddr,
    /// The feed's name.
    pub feed: String,
    /// Time left.
    pub expires_in: Duration,
}

/// One domain feed's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedCounters {
    /// The feed's name.
    pub name: String,
    /// Counters by [`DnsFeedCounter`].
    pub counters: Vec<(DnsFeedCounter, u64)>,
}

/// The domain policy as the kernel has it: patterns, live addresses, denials, counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DomainStatus {
    /// Whether DNS is read (domain rules or feeds are live).
    pub active: bool,
    /// The live patterns.
    pub patterns: Vec<DomainPattern>,
    /// Addresses answers opened and still open, by address.
    pub opened: Vec<OpenedAddress>,
    /// Addresses of feed names still denied.
    pub denied: Vec<DeniedAddress>,
    /// Totals by [`DnsTotal`].
    pub totals: Vec<(DnsTotal, u64)>,
    /// Per feed.
    pub feeds: Vec<FeedCounters>,
}

/// `CLOCK_BOOTTIME` in whole seconds, the clock of the kernel's expiries.
fn boot_seconds() -> u64 {
    rustix::time::clock_gettime(rustix::time::ClockId::Boottime)
        .tv_sec
        .try_into()
        .unwrap_or(0)
}

fn unmapped(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

fn lookup(map: &MapHandle, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
    map.lookup(key, MapFlags::ANY)
        .map_err(|source| BpfError::Map {
            op: "lookup",
            map: name.to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        })
}

fn sum_percpu(map: &MapHandle, name: &'static str, index: u32) -> Result<u64> {
    let values = map
        .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
        .map_err(|source| BpfError::Map {
            op: "lookup",
            map: name.to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        })?;
    Ok(values
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
        .map(u64::from_ne_bytes)
        .sum())
}

fn labels(map: &MapHandle, name: &'static str, count: usize) -> Result<Vec<Option<DnsLabel>>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..u32::try_from(count).unwrap_or(0) {
        out.push(
            lookup(map, name, &i.to_ne_bytes())?
                .and_then(|b| DnsLabel::from_bytes(&b))
                .filter(|l| l.used != 0),
        );
    }
    Ok(out)
}

/// Reads the domain policy's state from the object's maps (`open` gives each map by
/// name: from a loaded object or from its pins). `path_of` names executables.
/// The domain policy's totals alone, summed over CPUs: one map, whatever the tables
/// hold.
pub(crate) fn totals(
    open: &dyn Fn(&'static str) -> Result<MapHandle>,
) -> Result<Vec<(DnsTotal, u64)>> {
    let totals_map = open(names::egress::ic_dns_totals)?;
    DnsTotal::ALL
        .into_iter()
        .map(|t| {
            Ok((
                t,
                sum_percpu(&totals_map, names::egress::ic_dns_totals, t as u32)?,
            ))
        })
        .collect()
}

pub(crate) fn status(
    open: &dyn Fn(&'static str) -> Result<MapHandle>,
    path_of: &dyn Fn(&ProcExe) -> Option<String>,
) -> Result<DomainStatus> {
    let now = boot_seconds();
    let left = |expires: u32| Duration::from_secs(u64::from(expires).saturating_sub(now));
    let config = lookup(
        &open(names::egress::ic_dns_config)?,
        names::egress::ic_dns_config,
        &0u32.to_ne_bytes(),
    )?
    .and_then(|b| DnsConfig::from_bytes(&b))
    .unwrap_or_default();
    let by_bit: Vec<(u8, DomainPattern)> = labels(
        &open(names::egress::ic_dns_patterns)?,
        names::egress::ic_dns_patterns,
        DNS_PATTERNS,
    )?
    .into_iter()
    .enumerate()
    .filter_map(|(b, l)| {
        let l = l?;
        Some((
            u8::try_from(b).ok()?,
            DomainPattern {
                name: l.text()?,
                wildcard: l.wildcard != 0,
            },
        ))
    })
    .collect();
    let feed_names: Vec<Option<String>> = labels(
        &open(names::egress::ic_dns_feed_names)?,
        names::egress::ic_dns_feed_names,
        DNS_FEEDS + 1,
    )?
    .into_iter()
    .map(|l| l.and_then(|l| l.text()))
    .collect();
    let feed_name = |id: u8| {
        feed_names
            .get(usize::from(id))
            .cloned()
            .flatten()
            .unwrap_or_else(|| format!("feed{id}"))
    };
    let addrs = open(names::egress::ic_dns_addrs)?;
    let seen = open(names::egress::ic_dns_seen_names).ok();
    let mut opened = Vec::new();
    for k in addrs.keys() {
        let (Some(key), Some(v)) = (
            DnsAddrKey::from_bytes(&k),
            lookup(&addrs, names::egress::ic_dns_addrs, &k)?.and_then(|b| DnsAddr::from_bytes(&b)),
        ) else {
            continue;
        };
        let patterns: Vec<(DomainPattern, Duration)> = by_bit
            .iter()
            .filter_map(|(b, p)| {
                let expires = *v.expires.get(usize::from(*b))?;
                (v.patterns >> b & 1 == 1 && u64::from(expires) > now)
                    .then(|| (p.clone(), left(expires)))
            })
            .collect();
        if patterns.is_empty() {
            continue;
        }
        let name = seen
            .as_ref()
            .and_then(|m| m.lookup(&k, MapFlags::ANY).ok().flatten())
            .and_then(|b| DnsLabel::from_bytes(&b))
            .and_then(|l| l.text());
        opened.push(OpenedAddress {
            addr: unmapped(key.addr),
            exe: key.exe,
            uid: key.uid,
            exe_path: path_of(&key.exe),
            name,
            patterns,
        });
    }
    opened.sort_by_key(|a| a.addr);
    let denied_map = open(names::egress::ic_dns_denied)?;
    let mut denied = Vec::new();
    for k in denied_map.keys() {
        let Some(d) = lookup(&denied_map, names::egress::ic_dns_denied, &k)?
            .and_then(|b| DnsDenial::from_bytes(&b))
        else {
            continue;
        };
        let Ok(addr) = <[u8; 16]>::try_from(k.as_slice()) else {
            continue;
        };
        if u64::from(d.expires) <= now {
            continue;
        }
        denied.push(DeniedAddress {
            addr: unmapped(addr),
            feed: feed_name(d.feed),
            expires_in: left(d.expires),
        });
    }
    denied.sort_by_key(|a| a.addr);
    let totals = totals(open)?;
    let counters = open(names::egress::ic_dns_feed_counters)?;
    let mut feeds = Vec::new();
    for (id, name) in feed_names.iter().enumerate().skip(1) {
        let Some(name) = name else {
            continue;
        };
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let mut values = Vec::new();
        for c in DnsFeedCounter::ALL {
            let index = id * DNS_FEED_COUNTERS + c as u32;
            values.push((
                c,
                sum_percpu(&counters, names::egress::ic_dns_feed_counters, index)?,
            ));
        }
        feeds.push(FeedCounters {
            name: name.clone(),
            counters: values,
        });
    }
    Ok(DomainStatus {
        active: config.flags & DNS_F_ACTIVE != 0,
        patterns: by_bit.into_iter().map(|(_, p)| p).collect(),
        opened,
        denied,
        totals,
        feeds,
    })
}

/// Remembers the name an answer event was for, for each of its addresses (the status's
/// name -> addresses table). When the table is full, entries whose address is no longer
/// open go first.
pub(crate) fn remember_names(
    seen: &MapHandle,
    opened: &MapHandle,
    r: &ironclad_events::DnsPolicyRecord,
) {
    let label = DnsLabel::new(&r.name, false).to_bytes();
    for addr in &r.addresses {
        let key = DnsAddrKey {
            exe: r.scope,
            addr: match addr {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            },
            uid: r.actor.uid,
            _pad0: 0,
        }
        .to_bytes();
        if seen.update(&key, &label, MapFlags::ANY).is_ok() {
            continue;
        }
        let stale: Vec<Vec<u8>> = seen
            .keys()
            .filter(|k| opened.lookup(k, MapFlags::ANY).ok().flatten().is_none())
            .collect();
        for k in &stale {
            let _ = seen.delete(k);
        }
        let _ = seen.update(&key, &label, MapFlags::ANY);
    }
}

/// The executables of live processes by kernel identity (from `/proc/*/exe`), for
/// naming the scopes of opened addresses when nothing else knows their paths.
pub(crate) fn live_executables() -> HashMap<ProcExe, String> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(path) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if let Ok(id) = ironclad_core::identity::exe_identity(&path) {
            out.entry(id).or_insert_with(|| path.display().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_s_hash_is_the_chain_of_its_labels_whatever_the_case() {
        let key = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
        assert_eq!(
            name_hash(key, "WWW.Example.com."),
            name_hash(key, "www.example.com")
        );
        assert_ne!(
            name_hash(key, "www.example.com"),
            name_hash(key, "example.com")
        );
        assert_ne!(
            name_hash(key, "ab.c"),
            name_hash(key, "a.bc"),
            "labels, not bytes"
        );
        assert_ne!(
            name_hash(key, "example.com"),
            name_hash([1, 2], "example.com"),
            "keyed"
        );
        // The chain: the suffix's hash is where the whole name's hashing passes.
        let suffix = name_hash(key, "example.com");
        let mut sip = siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]);
        std::hash::Hasher::write(&mut sip, &suffix.to_le_bytes());
        std::hash::Hasher::write(&mut sip, b"www");
        assert_eq!(
            std::hash::Hasher::finish(&sip),
            name_hash(key, "www.example.com")
        );
    }
}
