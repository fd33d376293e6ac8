//! The Shield: an XDP source-address firewall (`bpf-src/shield.bpf.c`).
//!
//! For every IPv4/IPv6 packet the program checks, in order: the management safety valve
//! (always passes), then the longest matching prefix among the rules of the active
//! policy (deny drops; allow is an exception inside a denied range, because it is
//! longer), then the optional per-source token bucket. Non-IP and malformed frames pass
//! and are counted. Drops are sampled 1-in-N into a ring buffer ([`Shield::events`]).
//!
//! IPv4 sources are looked up in a compiled DIR-24-8 table
//! ([`ironclad_policy::fastpath`]: at most two array reads, whatever the number of
//! prefixes), IPv6 sources in a compiled bitmap trie ([`ironclad_policy::fastpath6`]: one
//! array read per 6 bits until a leaf or a lone prefix) or, for either family, by choice
//! or when the rules do not fit, in the kernel's LPM trie.
//!
//! ```no_run
//! use std::path::Path;
//! use ironclad_bpf::{Loader, Shield};
//! use ironclad_policy::config::compile_file;
//!
//! let loader = Loader::builder().build()?;
//! let policy = compile_file(Path::new("/etc/ironclad/policy.yaml"))?;
//! let shield = Shield::load(&loader)?;
//! let report = shield.replace(policy.shield.as_ref().expect("a shield section"))?;
//! println!("IPv4 through the {:?} path", report.ipv4_path);
//! // Adopts a link pinned by an earlier run (no gap), or attaches and pins a new one.
//! let attachment = shield.attach_pinned("eth0")?;
//! println!("attached in {:?} mode", attachment.mode());
//! for rule in shield.rules()? {
//!     println!("{} {:?}: {} packets", rule.label, rule.action, rule.counter.packets);
//! }
//! println!("{} bytes of map memory", shield.status()?.map_bytes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Whole-policy swaps
//! Rules live in per-slot tables (arrays of maps with two slots). A change builds the
//! complete new rule set into the slot packets do not use, then writes one word
//! (`ic_shield_active`) that moves every packet to it at once: each packet reads that
//! word once and takes all its lookups from one slot, so no packet ever sees half of a
//! change. Once every packet that could still be using the old slot has finished (an
//! RCU grace period, waited for with `membarrier(MEMBARRIER_CMD_GLOBAL)`), the old
//! slot's tables are released, so memory holds one policy except during a swap.
//!
//! # What survives a crash
//! The maps (per-slot tables, valve, counters, rule directory, mode) and, with
//! [`Shield::attach_pinned`], the XDP link are pinned under `<pin root>/shield/`. If the
//! agent dies, the kernel keeps enforcing the last policy; the next [`Shield::load`]
//! adopts the maps and [`Shield::attach_pinned`] swaps the new program into the pinned
//! link atomically. [`Loader::remove_pins`] (`full_firewall detach`) removes everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ironclad_core::abi::{
    Action, BookRun, Counter, LpmV4Key, LpmV6Key, Rule, RuleInfo, ShieldConfig, ShieldTotal,
    TotalValue, V4Block, V4Span, V6Node, ACTIVE_DRY_RUN, ACTIVE_FROM_CONFIG, ACTIVE_RATE_LIMIT,
    ACTIVE_SAMPLE_MAX, ACTIVE_SAMPLE_SHIFT, ACTIVE_SLOT, ACTIVE_V4_TRIE, ACTIVE_V6_FAST,
    BOOK_PAGE_BYTES, FAST_GROUP, FAST_GROUP_MASK, FAST_SPAN, FAST_SPAN_BASE, FAST_SPAN_MASK,
    RULE_FREE, SHIELD_F_DRY_RUN, SHIELD_MAX_RULES, SHIELD_MAX_V4_PREFIXES, SHIELD_MAX_V6_PREFIXES,
    SHIELD_SLOTS, SHIELD_V4_BLOCKS, SHIELD_V4_FIRST_BLOCKS, SHIELD_V4_GROUPS, SHIELD_V4_SPANS,
    SHIELD_V6_RECORDS,
};
use ironclad_events::{Event, Fanout};
use ironclad_policy::fastpath::{self, FastTable};
use ironclad_policy::fastpath6::{FastTable6, Top};
use ironclad_policy::shield::{CompiledShield, Ipv4Lookup, Ipv6Lookup, Mode, Owner, RateLimit};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use crate::attach::XdpAttachment;
use crate::auditlog::{AuditAction, Outcome};
use crate::error::{BpfError, Result};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};
use crate::names;

mod book;
pub(crate) mod plan;

use book::Book;
pub use plan::RuleLabel;
use plan::{lpm_key, net_of_key, Planned, RuleBook};

const V4_FAST: &str = names::shield::ic_v4_fast;
/// The most first-level blocks (/16s) an IPv4 edit rewrites in place: a /4's. An edit
/// reaching more rebuilds the table and switches to it.
const IN_PLACE_MAX_BLOCKS: usize = 1 << 12;
const V4_TRIE: &str = names::shield::ic_v4_trie;
const V6_TRIE: &str = names::shield::ic_v6_trie;
const V4_BOOK: &str = names::shield::ic_v4_book;
const V4_SPANS: &str = names::shield::ic_v4_spans;
const V6_FAST: &str = names::shield::ic_v6_fast;
const V6_BOOK: &str = names::shield::ic_v6_book;
const ACTIVE: &str = names::shield::ic_shield_active;
const RULE_INFO: &str = names::shield::ic_rule_info;
const VALVE_V4: &str = names::shield::ic_valve_v4;
const VALVE_V6: &str = names::shield::ic_valve_v6;
const RULE_COUNTERS: &str = names::shield::ic_rule_counters;
const TOTALS: &str = names::shield::ic_totals;
const CONFIG: &str = names::shield::ic_shield_config;
const EVENTS: &str = names::shield::ic_shield_events;
const PROGRAM: &str = names::shield::ic_shield_xdp;

/// The per-slot tables (arrays of maps).
const SLOTTED: [&str; 7] = [
    V4_FAST, V4_TRIE, V6_TRIE, V4_BOOK, V4_SPANS, V6_FAST, V6_BOOK,
];
/// Every map of the Shield, for the memory report.
const ALL_MAPS: [&str; 17] = [
    V4_FAST,
    V4_TRIE,
    V6_TRIE,
    V4_BOOK,
    V4_SPANS,
    V6_FAST,
    V6_BOOK,
    ACTIVE,
    RULE_INFO,
    VALVE_V4,
    VALVE_V6,
    RULE_COUNTERS,
    TOTALS,
    CONFIG,
    EVENTS,
    names::shield::ic_rate_buckets,
    names::shield::ic_sample_seq,
];
/// Elements per batch syscall when filling a table.
const BATCH: usize = 4096;

/// Whether a table on `path` may serve a policy that asked for `lookup` (either family).
fn allows(lookup: Ipv4Lookup, path: Ipv4Path) -> bool {
    match lookup {
        Ipv4Lookup::Auto => true,
        Ipv4Lookup::Fast => path == Ipv4Path::Fast,
        Ipv4Lookup::Trie => path == Ipv4Path::Trie,
    }
}

fn valve_map(net: IpNetwork) -> &'static str {
    if net.is_ipv4() {
        VALVE_V4
    } else {
        VALVE_V6
    }
}

/// How IPv4 sources are looked up now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Path {
    /// The compiled table (IPv4: DIR-24-8; IPv6: the bitmap trie).
    Fast,
    /// The kernel's LPM trie.
    Trie,
}

/// How IPv6 sources are looked up now: the compiled bitmap trie or the kernel's LPM trie.
pub type Ipv6Path = Ipv4Path;

impl Ipv4Path {
    /// `fast` or `trie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Trie => "trie",
        }
    }
}

/// A rule as the kernel holds it, with its counter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleStatus {
    /// The prefix or the set it stands for.
    pub label: RuleLabel,
    /// The counter index.
    pub rule_id: u32,
    /// Deny or allow.
    pub action: Action,
    /// IPv4 prefixes loaded under this rule.
    pub prefixes_v4: u32,
    /// IPv6 prefixes loaded under this rule.
    pub prefixes_v6: u32,
    /// Packets and bytes it matched, summed over CPUs.
    pub counter: Counter,
}

impl RuleStatus {
    /// The prefix of a single-prefix rule.
    pub fn cidr(&self) -> Option<IpNetwork> {
        match &self.label {
            RuleLabel::Cidr(net) => Some(*net),
            RuleLabel::Set(_) => None,
        }
    }
}

/// Kernel memory of one map: its `memlock` accounting, and for an LPM trie the nodes it
/// can hold for its prefixes (intermediate ones included), which the kernel's own figure
/// leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapMemory {
    /// The map; per-slot tables are named `table[slot]`.
    pub name: String,
    /// Bytes.
    pub bytes: u64,
}

/// Everything the Shield's pinned maps say, readable without loading anything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShieldStatus {
    /// Every rule, sorted by rule id.
    pub rules: Vec<RuleStatus>,
    /// Global totals.
    pub totals: Vec<(ShieldTotal, Counter)>,
    /// The management valve.
    pub management: Vec<IpNetwork>,
    /// Mode, rate limit, sampling.
    pub config: ShieldConfig,
    /// XDP links pinned under the Shield's pin directory (`link_<iface>`).
    pub links: Vec<PathBuf>,
    /// How IPv4 sources are looked up.
    pub ipv4_path: Ipv4Path,
    /// How IPv6 sources are looked up.
    pub ipv6_path: Ipv6Path,
    /// The policy slot packets use.
    pub slot: u32,
    /// Kernel memory of every Shield map and per-slot table.
    pub memory: Vec<MapMemory>,
}

impl ShieldStatus {
    /// Total kernel memory of the Shield's maps, in bytes.
    pub fn map_bytes(&self) -> u64 {
        self.memory.iter().map(|m| m.bytes).sum()
    }
}

/// The most prefixes [`Shield::replace`] changes in place; a bigger change is switched
/// as a whole.
pub const IN_PLACE_MAX: usize = 4096;

/// What [`Shield::replace`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaceReport {
    /// Rules added.
    pub added: usize,
    /// Rules whose action changed.
    pub changed: usize,
    /// Rules removed.
    pub removed: usize,
    /// Rules left as they were (their counters continue).
    pub kept: usize,
    /// The rule id of every single-prefix rule now loaded.
    pub ids: BTreeMap<IpNetwork, u32>,
    /// The rule id of every prefix set now loaded.
    pub set_ids: BTreeMap<String, u32>,
    /// How IPv4 sources are looked up now.
    pub ipv4_path: Ipv4Path,
    /// How IPv6 sources are looked up now.
    pub ipv6_path: Ipv6Path,
    /// Records of the IPv6 fast-path table (0 on the trie path).
    pub v6_records: usize,
    /// Second-level fast-path groups in use, counting those earlier in-place edits
    /// stopped using (0 on the trie path).
    pub fast_groups: usize,
    /// Fast-path span nodes in use, counting those earlier in-place edits stopped using
    /// (0 on the trie path).
    pub fast_spans: usize,
    /// Distinct IPv4 and IPv6 prefixes loaded.
    pub prefixes: (usize, usize),
    /// Prefixes changed in place in the active tables, without a switch: a small change
    /// to the loaded policy (the same rules and sets, some prefixes added or removed, as
    /// a feed update brings). 0 when the policy was switched as a whole.
    pub in_place: usize,
}

/// Owned handles on the Shield's maps, from a loaded object or from pins.
trait Maps {
    fn handle(&self, name: &str) -> Result<MapHandle>;
}

impl Maps for LoadedObject {
    fn handle(&self, name: &str) -> Result<MapHandle> {
        self.map(name)?.handle()
    }
}

/// The Shield's pinned maps, opened by path.
struct PinnedMaps {
    dir: PathBuf,
}

impl Maps for PinnedMaps {
    fn handle(&self, name: &str) -> Result<MapHandle> {
        let path = self.dir.join(name);
        MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
            what: format!("map {name}"),
            path,
            reason: e.to_string(),
            source: Some(crate::error::KernelError::from_libbpf(e)),
        })
    }
}

fn map_err(op: &'static str, map: &str) -> impl FnOnce(libbpf_rs::Error) -> BpfError {
    let map = map.to_string();
    move |source| BpfError::Map {
        op,
        map,
        source: crate::error::KernelError::from_libbpf(source),
    }
}

fn lookup(map: &MapHandle, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
    map.lookup(key, MapFlags::ANY)
        .map_err(map_err("lookup", name))
}

fn sum_percpu(values: Option<Vec<Vec<u8>>>) -> Counter {
    let per_cpu: Vec<Counter> = values
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Counter::from_bytes(v))
        .collect();
    Counter::sum(&per_cpu)
}

/// Sums the per-CPU values of one total (`struct ic_total`: a counter and the kernel's
/// sampling countdown).
fn sum_totals(values: Option<Vec<Vec<u8>>>) -> Counter {
    let per_cpu: Vec<Counter> = values
        .unwrap_or_default()
        .iter()
        .filter_map(|v| TotalValue::from_bytes(v).map(|t| t.counter()))
        .collect();
    Counter::sum(&per_cpu)
}

fn percpu(map: &MapHandle, name: &str, index: u32) -> Result<Counter> {
    Ok(sum_percpu(
        map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("lookup", name))?,
    ))
}

/// Every element of a map: in batches where the map type has them, else key by key.
fn entries(map: &MapHandle, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if matches!(map.map_type(), MapType::Array | MapType::Hash) {
        if let Ok(batch) = map.lookup_batch(BATCH as u32, MapFlags::ANY, MapFlags::ANY) {
            return Ok(batch.collect());
        }
    }
    let mut out = Vec::new();
    for key in map.keys() {
        if let Some(value) = lookup(map, name, &key)? {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// The table in `slot` of the array of maps `outer`, if any.
fn inner(outer: &MapHandle, name: &str, slot: u32) -> Result<Option<MapHandle>> {
    let Some(id) = lookup(outer, name, &slot.to_ne_bytes())? else {
        return Ok(None);
    };
    let id = id
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .unwrap_or(0);
    MapHandle::from_map_id(id)
        .map(Some)
        .map_err(map_err("open", name))
}

/// Kernel memory of the map behind `fd` (`memlock` in its fdinfo).
fn memlock(map: &MapHandle) -> u64 {
    let path = format!("/proc/self/fdinfo/{}", map.as_fd().as_raw_fd());
    std::fs::read_to_string(path)
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes of kernel memory one node of an LPM trie takes: the allocator's 64-byte object
/// for a node (24 to 40 bytes of node, depending on the kernel, the prefix's address
/// bytes and the 8-byte value; from 6.x the allocator's own 8-byte header too).
const LPM_NODE_BYTES: u64 = 64;

/// Kernel memory of an LPM trie holding `entries` prefixes, `reported` its own figure.
/// The kernel's figure (fdinfo `memlock`) counts each prefix at its bare size; the trie
/// also holds an intermediate node wherever two prefixes branch apart with no prefix
/// there, up to one fewer than the prefixes (nearly that many for a scattered feed), and
/// every node is a 64-byte object. Measured on 6.18 (`tests/shield_memory.rs`): a million
/// scattered /32 hosts and 100k IPv6 prefixes took 146 MiB of slab where the kernel's
/// figure said 39 MiB. This is the upper bound, which such a feed reaches.
fn trie_bytes(reported: u64, entries: u64) -> u64 {
    reported.max((entries * 2).saturating_sub(1) * LPM_NODE_BYTES)
}

fn memory(maps: &dyn Maps) -> Result<Vec<MapMemory>> {
    // The prefixes each family holds in the active slot, from the rule directory, and
    // in the valve: what the tries' node counts follow from.
    let active = read_active(maps)? & ACTIVE_SLOT;
    let (mut v4, mut v6) = (0u64, 0u64);
    for info in read_directory(maps)?.values() {
        v4 += u64::from(info.prefixes_v4);
        v6 += u64::from(info.prefixes_v6);
    }
    let valve = read_valve(maps)?;
    let valve_v4 = valve.iter().filter(|n| n.is_ipv4()).count() as u64;
    let valve_v6 = valve.len() as u64 - valve_v4;
    let mut out = Vec::new();
    for name in ALL_MAPS {
        let map = maps.handle(name)?;
        let bytes = memlock(&map);
        out.push(MapMemory {
            name: name.to_string(),
            bytes: match name {
                VALVE_V4 => trie_bytes(bytes, valve_v4),
                VALVE_V6 => trie_bytes(bytes, valve_v6),
                _ => bytes,
            },
        });
        if SLOTTED.contains(&name) {
            for slot in 0..SHIELD_SLOTS {
                if let Some(table) = inner(&map, name, slot)? {
                    let bytes = memlock(&table);
                    out.push(MapMemory {
                        name: format!("{name}[{slot}]"),
                        bytes: match (name, slot == active) {
                            (V4_TRIE, true) => trie_bytes(bytes, v4),
                            (V6_TRIE, true) => trie_bytes(bytes, v6),
                            _ => bytes,
                        },
                    });
                }
            }
        }
    }
    Ok(out)
}

fn read_active(maps: &dyn Maps) -> Result<u32> {
    Ok(lookup(&maps.handle(ACTIVE)?, ACTIVE, &0u32.to_ne_bytes())?
        .and_then(|b| b.get(..4).and_then(|b| b.try_into().ok()))
        .map(u32::from_ne_bytes)
        .unwrap_or(0))
}

/// The active word with its configuration mirrors ([`ACTIVE_FROM_CONFIG`]) set for
/// `config`: the rate-limit and dry-run bits and the sample rate.
fn config_bits(active: u32, config: &ShieldConfig) -> u32 {
    let mut word = active & !ACTIVE_FROM_CONFIG;
    if config.rate_pps > 0 {
        word |= ACTIVE_RATE_LIMIT;
    }
    if config.flags & SHIELD_F_DRY_RUN != 0 {
        word |= ACTIVE_DRY_RUN;
    }
    word | config.sample_rate.min(ACTIVE_SAMPLE_MAX) << ACTIVE_SAMPLE_SHIFT
}

/// The rule directory: every used id.
fn read_directory(maps: &dyn Maps) -> Result<BTreeMap<u32, RuleInfo>> {
    let map = maps.handle(RULE_INFO)?;
    let mut out = BTreeMap::new();
    for (key, value) in entries(&map, RULE_INFO)? {
        let id = key
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes);
        if let (Some(id), Some(info)) = (id, RuleInfo::from_bytes(&value)) {
            if info.kind != RULE_FREE {
                out.insert(id, info);
            }
        }
    }
    Ok(out)
}

/// The rule directory's rows of `ids` that are used: what an edit of a few rules' prefix
/// counts reads (the whole directory is 16,384 rows, milliseconds to read).
fn read_rows(maps: &dyn Maps, ids: impl Iterator<Item = u32>) -> Result<BTreeMap<u32, RuleInfo>> {
    let map = maps.handle(RULE_INFO)?;
    let mut out = BTreeMap::new();
    for id in ids {
        let info = lookup(&map, RULE_INFO, &id.to_ne_bytes())?
            .and_then(|value| RuleInfo::from_bytes(&value));
        if let Some(info) = info.filter(|i| i.kind != RULE_FREE) {
            out.insert(id, info);
        }
    }
    Ok(out)
}

fn read_valve(maps: &dyn Maps) -> Result<Vec<IpNetwork>> {
    let mut valve = Vec::new();
    for name in [VALVE_V4, VALVE_V6] {
        for (key, _) in entries(&maps.handle(name)?, name)? {
            if let Some(net) = net_of_key(&key) {
                valve.push(net);
            }
        }
    }
    valve.sort();
    Ok(valve)
}

/// What the last commit of this handle left in the kernel, so the next edit need not
/// read a million prefixes back. Valid while the active word and the active slot's
/// tables are the ones recorded (nobody else changed the pins).
#[derive(Debug, Clone)]
struct Committed {
    word: u32,
    tables: Vec<Option<u32>>,
    book: RuleBook,
    valve: Vec<IpNetwork>,
    /// Fast path: what the active table uses of its groups and span nodes.
    fast: FastUse,
    /// IPv6 fast path: records of the active table.
    v6_records: usize,
    /// The policy `replace` last applied, set by set, while the tables hold exactly it
    /// (an edit of single rules forgets it).
    sources: Option<Arc<Sources>>,
}

/// What a policy applied by `replace` was made of, so that the next one is compared set
/// by set: an unchanged set costs a pointer comparison (or one pass when it was read
/// again), a changed one a pass over its old and new prefixes, and only the prefixes
/// that differ are looked at after that.
#[derive(Debug)]
struct Sources {
    /// The single rules' prefixes and actions, in order.
    rules: Vec<(IpNetwork, Action)>,
    /// The sets' names, actions and prefixes (shared with the policy), in order.
    sets: Vec<(String, Action, Arc<ironclad_policy::PrefixList>)>,
    /// The rule id of each rule, then of each set.
    ids: Vec<u32>,
    lookup: Ipv4Lookup,
    lookup6: Ipv6Lookup,
}

impl Sources {
    /// The sources of `policy` as `report` applied it (its ids), if it names them all.
    fn of(policy: &CompiledShield, report: &ReplaceReport) -> Option<Self> {
        let ids = policy
            .rules
            .iter()
            .map(|r| report.ids.get(&r.cidr).copied())
            .chain(
                policy
                    .sets
                    .iter()
                    .map(|s| report.set_ids.get(&s.name).copied()),
            )
            .collect::<Option<Vec<u32>>>()?;
        Some(Self {
            rules: policy.rules.iter().map(|r| (r.cidr, r.action)).collect(),
            sets: policy
                .sets
                .iter()
                .map(|s| (s.name.clone(), s.action, Arc::clone(&s.prefixes)))
                .collect(),
            ids,
            lookup: policy.ipv4_lookup,
            lookup6: policy.ipv6_lookup,
        })
    }

    /// Whether `policy` has the same rules, sets (by name and action, in order) and
    /// lookups: then it differs from this one at most in its sets' prefixes.
    fn same_shape(&self, policy: &CompiledShield) -> bool {
        self.rules.len() == policy.rules.len()
            && self
                .rules
                .iter()
                .zip(&policy.rules)
                .all(|((net, action), r)| *net == r.cidr && *action == r.action)
            && self.sets.len() == policy.sets.len()
            && self
                .sets
                .iter()
                .zip(&policy.sets)
                .all(|((name, action, _), s)| *name == s.name && *action == s.action)
            && self.lookup == policy.ipv4_lookup
            && self.lookup6 == policy.ipv6_lookup
    }
}

/// What a fast-path table uses of its second level: the next group and the next span
/// node never used (what an in-place edit frees is not reused before the next rebuild).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FastUse {
    groups: usize,
    spans: usize,
}

/// What in-place edits of the fast path wrote.
#[derive(Debug, Clone, Copy, Default)]
struct BlockWrites {
    /// First-level blocks whose entries changed.
    blocks: usize,
    /// First-level blocks given a new span base.
    rebased: usize,
    /// Groups written.
    groups: usize,
    /// Span nodes written.
    spans: usize,
}

impl BlockWrites {
    fn add(&mut self, other: Self) {
        self.blocks += other.blocks;
        self.rebased += other.rebased;
        self.groups += other.groups;
        self.spans += other.spans;
    }
}

impl FastUse {
    /// Span nodes a table has room for: those it holds, and the rest for edits before
    /// the next rebuild.
    const SPAN_CAPACITY: usize = SHIELD_V4_SPANS as usize;
}

/// The map ids of the tables in `slot`, in [`SLOTTED`] order.
fn slot_tables(maps: &dyn Maps, slot: u32) -> Result<Vec<Option<u32>>> {
    SLOTTED
        .iter()
        .map(|name| {
            Ok(lookup(&maps.handle(name)?, name, &slot.to_ne_bytes())?
                .and_then(|b| b.get(..4).and_then(|b| b.try_into().ok()))
                .map(u32::from_ne_bytes))
        })
        .collect()
}

fn read_book(maps: &dyn Maps, active: u32) -> Result<RuleBook> {
    let slot = active & ACTIVE_SLOT;
    // Everything read, in order (a book's later edits after its first write), then
    // sorted into the books once.
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let v4_source = if active & ACTIVE_V4_TRIE != 0 {
        V4_TRIE
    } else {
        V4_BOOK
    };
    let v6_source = if active & ACTIVE_V6_FAST != 0 {
        V6_BOOK
    } else {
        V6_TRIE
    };
    for name in [v4_source, v6_source] {
        let Some(table) = inner(&maps.handle(name)?, name, slot)? else {
            continue;
        };
        if name == V4_BOOK || name == V6_BOOK {
            let mut pages = entries(&table, name)?;
            pages.sort_by_key(|(key, _)| {
                key.get(..4)
                    .and_then(|k| k.try_into().ok())
                    .map(u32::from_ne_bytes)
            });
            let stream: Vec<u8> = pages.into_iter().flat_map(|(_, page)| page).collect();
            // In order: an edit appended later wins over what the book held before it.
            if name == V4_BOOK {
                for (addr, len, rule) in plan::decode_book::<4>(&stream) {
                    if let Ok(net) = Ipv4Network::new(addr.into(), len) {
                        v4.push((net, rule));
                    }
                }
            } else {
                for (addr, len, rule) in plan::decode_book::<16>(&stream) {
                    if let Ok(net) = Ipv6Network::new(addr.into(), len) {
                        v6.push((net, rule));
                    }
                }
            }
            continue;
        }
        for (key, value) in entries(&table, name)? {
            match (net_of_key(&key), Rule::from_bytes(&value)) {
                (Some(IpNetwork::V4(n)), Some(rule)) => v4.push((n, Some(rule))),
                (Some(IpNetwork::V6(n)), Some(rule)) => v6.push((n, Some(rule))),
                _ => {}
            }
        }
    }
    Ok(RuleBook {
        v4: Arc::new(Book::from_changes(v4)),
        v6: Arc::new(Book::from_changes(v6)),
    })
}

/// Every global total, summed over CPUs.
fn read_totals(maps: &dyn Maps) -> Result<Vec<(ShieldTotal, Counter)>> {
    let totals_map = maps.handle(TOTALS)?;
    ShieldTotal::ALL
        .iter()
        .map(|t| {
            let values = totals_map
                .lookup_percpu(&(*t as u32).to_ne_bytes(), MapFlags::ANY)
                .map_err(map_err("lookup", TOTALS))?;
            Ok((*t, sum_totals(values)))
        })
        .collect()
}

fn read_status(maps: &dyn Maps, links: Vec<PathBuf>) -> Result<ShieldStatus> {
    let counters = maps.handle(RULE_COUNTERS)?;
    let mut rules = Vec::new();
    for (id, info) in read_directory(maps)? {
        let Some(label) = RuleLabel::of(&info) else {
            continue;
        };
        rules.push(RuleStatus {
            label,
            rule_id: id,
            action: Action::from_raw(info.action).unwrap_or(Action::None),
            prefixes_v4: info.prefixes_v4,
            prefixes_v6: info.prefixes_v6,
            counter: percpu(&counters, RULE_COUNTERS, id)?,
        });
    }
    let totals = read_totals(maps)?;
    let config = lookup(&maps.handle(CONFIG)?, CONFIG, &0u32.to_ne_bytes())?
        .and_then(|b| ShieldConfig::from_bytes(&b))
        .unwrap_or_default();
    let active = read_active(maps)?;
    Ok(ShieldStatus {
        rules,
        totals,
        management: read_valve(maps)?,
        config,
        links,
        ipv6_path: if active & ACTIVE_V6_FAST != 0 {
            Ipv6Path::Fast
        } else {
            Ipv6Path::Trie
        },
        ipv4_path: if active & ACTIVE_V4_TRIE != 0 {
            Ipv4Path::Trie
        } else {
            Ipv4Path::Fast
        },
        slot: active & ACTIVE_SLOT,
        memory: memory(maps)?,
    })
}

fn pinned_links(dir: &Path) -> Vec<PathBuf> {
    let mut links: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("link_"))
                })
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
}

/// A complete policy to build into the spare slot.
struct Plan {
    book: RuleBook,
    valve: Vec<IpNetwork>,
    lookup: Ipv4Lookup,
    lookup6: Ipv6Lookup,
    /// The whole rule directory after the change.
    directory: BTreeMap<u32, RuleInfo>,
    /// Ids whose counters start again from zero.
    fresh: BTreeSet<u32>,
}

/// How a commit provides the IPv4 tables of the new slot.
enum V4Build {
    /// The active slot's tables, unchanged, on this path (with the fast path's groups
    /// in use).
    Reuse(Ipv4Path, FastUse),
    /// A new fast-path table (and prefix book), with its rows as the maps take them.
    Fast(FastTable, EncodedV4),
    /// A new LPM trie.
    Trie,
}

/// An IPv4 fast-path table's rows, encoded for the kernel: the non-empty blocks (keys
/// and values), the prefix book's stream and the spans. Encoding a million-prefix
/// table takes tens of milliseconds, which a cold start does ahead, beside the
/// verifier ([`Prepared`]).
#[derive(Debug)]
struct EncodedV4 {
    block_keys: Vec<u8>,
    block_values: Vec<u8>,
    book: Vec<u8>,
    span_keys: Vec<u8>,
    span_values: Vec<u8>,
}

impl EncodedV4 {
    fn of(fast: &FastTable, book: &Book<Ipv4Network>) -> Self {
        let (mut block_keys, mut block_values) = (Vec::new(), Vec::new());
        for (i, block) in fast.nonzero_blocks() {
            block_keys.extend_from_slice(&i.to_ne_bytes());
            block_values.extend_from_slice(&block.to_bytes());
        }
        let spans = fast.spans();
        Self {
            block_keys,
            block_values,
            book: book_stream_v4(book),
            span_keys: (0..spans.len() as u32).flat_map(u32::to_ne_bytes).collect(),
            span_values: spans.iter().flat_map(V4Span::to_bytes).collect(),
        }
    }
}

/// How a commit provides the IPv6 tables of the new slot.
enum V6Build {
    /// The active slot's tables, unchanged, on this path (with the records the fast
    /// path's table uses).
    Reuse(Ipv6Path, usize),
    /// A new compiled table (and prefix book).
    Fast(FastTable6),
    /// A new LPM trie.
    Trie,
}

/// A policy's plan and fast-path tables worked out before the Shield's object is
/// loaded, for the object a cold start loads (no earlier rules): the kernel verifies
/// the program on one core while the other sorts the policy and compiles its tables
/// ([`Shield::load_with_policy`]). Each part is used only where it is what the
/// object's own plan would be: the plan when the loaded directory is empty, a table
/// when its prefix book equals the one being committed.
#[derive(Debug)]
struct Prepared {
    planned: Planned,
    tables: Ready,
}

/// Fast-path tables compiled ahead, each with the prefix book and valve it was
/// compiled from.
#[derive(Debug, Default)]
struct Ready {
    v4: Option<Compiled<Ipv4Network, (FastTable, EncodedV4)>>,
    v6: Option<Compiled<Ipv6Network, FastTable6>>,
}

/// A table compiled from a prefix book and a valve.
#[derive(Debug)]
struct Compiled<K, T> {
    book: Arc<Book<K>>,
    valve: Vec<IpNetwork>,
    table: T,
}

impl<K: PartialEq, T> Compiled<K, T> {
    /// The table, if it was compiled from `book` and `valve`.
    fn of(self, book: &Arc<Book<K>>, valve: &[IpNetwork]) -> Option<T> {
        ((Arc::ptr_eq(&self.book, book) || *self.book == **book) && self.valve == valve)
            .then_some(self.table)
    }
}

impl Ready {
    /// The IPv4 table, if it was compiled from `plan`'s prefixes and valve.
    fn v4_for(&mut self, plan: &Plan) -> Option<(FastTable, EncodedV4)> {
        self.v4.take()?.of(&plan.book.v4, &plan.valve)
    }

    /// The IPv6 table, if it was compiled from `plan`'s prefixes and valve.
    fn v6_for(&mut self, plan: &Plan) -> Option<FastTable6> {
        self.v6.take()?.of(&plan.book.v6, &plan.valve)
    }
}

impl Prepared {
    /// `policy` planned over an empty directory, with the tables its lookups would
    /// build (none where a lookup is the trie, or a table would not fit: the commit
    /// then decides as it always does).
    fn of(policy: &CompiledShield) -> Result<Self> {
        let planned = plan::plan(&BTreeMap::new(), policy)?;
        let valve = &policy.management;
        let v4 = (policy.ipv4_lookup != Ipv4Lookup::Trie)
            .then(|| {
                let book = &planned.book.v4;
                FastTable::build(&fast_entries(book), &v4_only(valve), SHIELD_V4_GROUPS)
                    .ok()
                    .map(|table| Compiled {
                        book: Arc::clone(book),
                        valve: valve.clone(),
                        table: {
                            let encoded = EncodedV4::of(&table, book);
                            (table, encoded)
                        },
                    })
            })
            .flatten();
        let v6 = (policy.ipv6_lookup == Ipv6Lookup::Fast
            || (policy.ipv6_lookup == Ipv6Lookup::Auto && !planned.book.v6.is_empty()))
        .then(|| {
            let book = &planned.book.v6;
            FastTable6::build(&fast_entries(book), &v6_only(valve), SHIELD_V6_RECORDS)
                .ok()
                .map(|table| Compiled {
                    book: Arc::clone(book),
                    valve: valve.clone(),
                    table,
                })
        })
        .flatten();
        Ok(Self {
            planned,
            tables: Ready { v4, v6 },
        })
    }
}

/// The IPv4 prefixes of a valve.
fn v4_only(valve: &[IpNetwork]) -> Vec<Ipv4Network> {
    valve
        .iter()
        .filter_map(|n| match n {
            IpNetwork::V4(n) => Some(*n),
            IpNetwork::V6(_) => None,
        })
        .collect()
}

/// The IPv6 prefixes of a valve.
fn v6_only(valve: &[IpNetwork]) -> Vec<Ipv6Network> {
    valve
        .iter()
        .filter_map(|n| match n {
            IpNetwork::V6(n) => Some(*n),
            IpNetwork::V4(_) => None,
        })
        .collect()
}

/// What a commit built.
struct Built {
    path: Ipv4Path,
    fast: FastUse,
    path6: Ipv6Path,
    /// Records of the IPv6 fast-path table (0 on the trie).
    v6_records: usize,
}

/// The BTF a slot table is created with: the object's BTF and the ids of its key and
/// value types, as libbpf gave the inner-map template. Kernels before 6.2 compare an inner
/// map's BTF-derived layout (e.g. its timer offset) with the template's, and refuse a
/// table created without BTF with EINVAL.
#[derive(Debug, Clone, Copy, Default)]
struct TableBtf {
    fd: i32,
    key: u32,
    value: u32,
}

impl TableBtf {
    /// Looks up `key` and `value` (type names) in `object`'s BTF; no BTF if either is
    /// missing (kernels from 6.2 accept that).
    fn of(object: &LoadedObject, key: &str, value: &str) -> Self {
        use libbpf_rs::AsRawLibbpf;
        let raw = object.libbpf().as_libbpf_object().as_ptr();
        // SAFETY: `raw` is the live bpf_object owned by `object`.
        let (fd, btf) = unsafe {
            (
                libbpf_sys::bpf_object__btf_fd(raw),
                libbpf_sys::bpf_object__btf(raw),
            )
        };
        if fd < 0 || btf.is_null() {
            return Self::default();
        }
        let find = |name: &str, kind: u32| -> Option<u32> {
            let name = std::ffi::CString::new(name).ok()?;
            // SAFETY: `btf` belongs to the live object; `name` is NUL-terminated.
            let id = unsafe { libbpf_sys::btf__find_by_name_kind(btf, name.as_ptr(), kind) };
            u32::try_from(id).ok().filter(|id| *id > 0)
        };
        let kind_of = |name: &str| {
            if name.starts_with("__") {
                libbpf_sys::BTF_KIND_TYPEDEF
            } else {
                libbpf_sys::BTF_KIND_STRUCT
            }
        };
        match (find(key, kind_of(key)), find(value, kind_of(value))) {
            (Some(key), Some(value)) => Self { fd, key, value },
            _ => Self::default(),
        }
    }
}

/// Creates an empty table for a slot.
fn create_table(
    kind: MapType,
    name: &str,
    key: usize,
    value: usize,
    max_entries: u32,
    flags: u32,
    btf: TableBtf,
) -> Result<MapHandle> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
        map_flags: flags,
        btf_fd: u32::try_from(btf.fd).unwrap_or(0),
        btf_key_type_id: btf.key,
        btf_value_type_id: btf.value,
        ..Default::default()
    };
    MapHandle::create(
        kind,
        Some(name),
        key as u32,
        value as u32,
        max_entries,
        &opts,
    )
    .map_err(map_err("create", name))
}

/// A book's prefixes with their fast-path entries (rule id and action), as the
/// compilers of the fast tables take them.
fn fast_entries<K: Ord + Copy>(book: &Book<K>) -> Vec<(K, u16)> {
    book.iter()
        .map(|(net, rule)| {
            let action = Action::from_raw(rule.action).unwrap_or(Action::Deny);
            (net, fastpath::entry(rule.rule_id, action))
        })
        .collect()
}

/// Runs `each` on every item at once, a thread each, and gives the results in order.
/// What it is for: a change to an array of maps from user space returns only after an
/// RCU grace period (the kernel's `maybe_wait_bpf_programs`), and waits that run at the
/// same time share their grace periods, so the five tables of a slot put in (or taken
/// out) together cost about one wait instead of five.
fn at_once<T: Sync, R: Send>(items: &[T], each: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let each = &each;
        // An item whose thread cannot be made (a thread limit) runs here, in turn.
        let running: Vec<_> = items
            .iter()
            .map(|item| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || each(item))
                    .map_err(|_| item)
            })
            .collect();
        running
            .into_iter()
            .map(|thread| match thread {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(item) => each(item),
            })
            .collect()
    })
}

/// Runs `first` on a thread of its own while `second` runs here, and gives both
/// results (`first` runs here too, after `second`, when no thread can be made).
fn side_by_side<A: Send, B>(first: impl Fn() -> A + Sync, second: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().spawn_scoped(scope, &first);
        let b = second();
        let a = match thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => first(),
        };
        (a, b)
    })
}

/// Writes the elements whose keys and values lie back to back in `keys` and `values`
/// (the map's key and value sizes each): in batches where the kernel has them for this
/// map type (arrays, LPM tries: a 100k-prefix IPv6 trie fills in about 55 ms instead of
/// 125 one element at a time), one by one otherwise.
fn fill(map: &MapHandle, name: &str, keys: &[u8], values: &[u8]) -> Result<()> {
    let (ks, vs) = (map.key_size() as usize, map.value_size() as usize);
    for (k, v) in keys.chunks(ks * BATCH).zip(values.chunks(vs * BATCH)) {
        let count = (k.len() / ks) as u32;
        let batched = matches!(map.map_type(), MapType::Array | MapType::LpmTrie)
            && map
                .update_batch(k, v, count, MapFlags::ANY, MapFlags::ANY)
                .is_ok();
        if !batched {
            for (key, value) in k.chunks(ks).zip(v.chunks(vs)) {
                map.update(key, value, MapFlags::ANY)
                    .map_err(map_err("update", name))?;
            }
        }
    }
    Ok(())
}

/// Flattens LPM entries for [`fill`].
fn lpm_entries(entries: impl Iterator<Item = (IpNetwork, Rule)>) -> (Vec<u8>, Vec<u8>) {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (net, rule) in entries {
        keys.extend_from_slice(&lpm_key(net));
        values.extend_from_slice(&rule.to_bytes());
    }
    (keys, values)
}

/// The prefix changes of an edit in place, IPv4 and IPv6: each prefix with its new
/// rule, or `None` when it goes.
type Changes<'a> = (
    &'a [(Ipv4Network, Option<Rule>)],
    &'a [(Ipv6Network, Option<Rule>)],
);

/// Where a prefix book's stream ends, so that an edit in place appends its changes
/// there (one or two pages written) instead of writing the whole book again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BookTail {
    /// The kernel's id of the book table.
    id: u32,
    /// Offset of the end header.
    end: usize,
    /// Pages the table holds.
    pages: usize,
}

/// A new prefix book for `slot` of the array of maps `outer` (`ic_v4_book`,
/// `ic_v6_book`) holding the byte stream `stream` ([`plan::encode_book`]), in pages,
/// with room after it for the edits in place of a while (a 32nd more, at least four
/// pages; when they fill it, the next edit writes a new book).
fn book_table(
    outer: &str,
    slot: u32,
    stream: &[u8],
    object: &LoadedObject,
) -> Result<(MapHandle, BookTail)> {
    let used = stream.len().div_ceil(BOOK_PAGE_BYTES).max(1);
    let pages = used + (used / 32).max(4);
    let mut values = stream.to_vec();
    // The last page's rest stays zero (an empty run: the end).
    values.resize(used * BOOK_PAGE_BYTES, 0);
    let keys: Vec<u8> = (0..used as u32).flat_map(u32::to_ne_bytes).collect();
    let table = create_table(
        MapType::Array,
        &format!("{outer}_{slot}"),
        4,
        BOOK_PAGE_BYTES,
        pages as u32,
        libbpf_sys::BPF_F_INNER_MAP,
        TableBtf::of(object, "__u32", names::shield::ic_book_page),
    )?;
    fill(&table, outer, &keys, &values)?;
    let id = table.info().map_err(map_err("info", outer))?.info.id;
    let end = stream.len().saturating_sub(BookRun::SIZE);
    Ok((table, BookTail { id, end, pages }))
}

/// The IPv4 prefix book stream of `v4`.
fn book_stream_v4(v4: &Book<Ipv4Network>) -> Vec<u8> {
    plan::encode_book(
        v4.iter()
            .map(|(n, r)| (n.network().octets(), n.prefix(), r)),
    )
}

/// The IPv6 prefix book stream of `v6`.
fn book_stream_v6(v6: &Book<Ipv6Network>) -> Vec<u8> {
    plan::encode_book(
        v6.iter()
            .map(|(n, r)| (n.network().octets(), n.prefix(), r)),
    )
}

/// A loaded Shield object. Its maps are pinned under `<pin root>/shield/`, so rules and
/// counters survive a restart of the process; a second `load` adopts them.
///
/// Changes (replace, rule and valve edits, configuration) are serialised inside the
/// handle, so it can be shared between threads.
#[derive(Debug)]
pub struct Shield {
    object: LoadedObject,
    edit: std::sync::Mutex<()>,
    committed: std::sync::Mutex<Option<Committed>>,
    /// Where the book tables this handle wrote end (the last few).
    books: std::sync::Mutex<Vec<BookTail>>,
}

impl Shield {
    /// Name of the Shield's BPF object (and of its pin directory).
    pub const OBJECT: &'static str = "shield";

    /// Audits and loads the Shield, reusing pinned maps from an earlier run.
    ///
    /// Tables an earlier agent left in the spare slot (it was killed while building a
    /// policy there, or before it released the slot it switched away from) are released:
    /// no packet reads the spare slot, and a crash during a reload of a large policy
    /// would otherwise keep its tables (tens of MiB) until the next reload.
    pub fn load(loader: &Loader) -> Result<Self> {
        let shield = Self {
            object: loader.load(crate::object::shield())?,
            edit: std::sync::Mutex::new(()),
            committed: std::sync::Mutex::new(None),
            books: std::sync::Mutex::new(Vec::new()),
        };
        shield.release_spare_slot()?;
        shield.sync_config_bits()?;
        Ok(shield)
    }

    /// Makes the active word's configuration mirrors agree with the pinned
    /// configuration (pins an older build left, whose word had no dry-run bit).
    fn sync_config_bits(&self) -> Result<()> {
        let _edit = self.lock();
        let config = self.config()?;
        let active = read_active(&self.object)?;
        let word = config_bits(active, &config);
        if word != active {
            self.object
                .map(ACTIVE)?
                .update(&0u32.to_ne_bytes(), &word.to_ne_bytes())?;
        }
        Ok(())
    }

    /// Releases whatever tables the spare slot (the one packets do not read) holds;
    /// returns how many there were. [`Shield::load`] calls it. Like every policy
    /// change, it assumes one writer per pin root: a second agent loading the Shield
    /// while another builds a policy in the spare slot would take that build away.
    pub fn release_spare_slot(&self) -> Result<usize> {
        let _edit = self
            .edit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let spare = (read_active(&self.object)? & ACTIVE_SLOT) ^ 1;
        let mut released = 0;
        for name in SLOTTED {
            let outer = self.object.map(name)?.handle()?;
            let key = spare.to_ne_bytes();
            if lookup(&outer, name, &key)?.is_some() && outer.delete(&key).is_ok() {
                released += 1;
                self.object.audit_log().record(
                    AuditAction::MapUpdate,
                    Self::OBJECT,
                    name,
                    Outcome::Ok,
                    format!("release slot {spare} left by an earlier agent"),
                );
            }
        }
        Ok(released)
    }

    /// Reads the Shield's pinned maps under `pin_root` without loading anything (no
    /// running agent needed).
    pub fn status_from_pins(pin_root: &Path) -> Result<ShieldStatus> {
        let dir = pin_root.join(Self::OBJECT);
        let maps = PinnedMaps { dir: dir.clone() };
        read_status(&maps, pinned_links(&dir))
    }

    /// The global totals alone, summed over CPUs, read from the pins under `pin_root`
    /// (cheap at any rule count: [`Shield::status_from_pins`] reads every rule's
    /// counter too).
    pub fn totals_from_pins(pin_root: &Path) -> Result<Vec<(ShieldTotal, Counter)>> {
        let maps = PinnedMaps {
            dir: pin_root.join(Self::OBJECT),
        };
        read_totals(&maps)
    }

    /// The loaded object (pins, maps, audit log).
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }

    /// Everything the maps say now.
    pub fn status(&self) -> Result<ShieldStatus> {
        read_status(&self.object, pinned_links(self.object.pin_dir()))
    }

    /// Every rule in the kernel with its counter.
    pub fn rules(&self) -> Result<Vec<RuleStatus>> {
        Ok(self.status()?.rules)
    }

    /// Kernel memory of every Shield map and per-slot table.
    pub fn memory(&self) -> Result<Vec<MapMemory>> {
        memory(&self.object)
    }

    /// How IPv4 sources are looked up now.
    pub fn ipv4_path(&self) -> Result<Ipv4Path> {
        Ok(if read_active(&self.object)? & ACTIVE_V4_TRIE != 0 {
            Ipv4Path::Trie
        } else {
            Ipv4Path::Fast
        })
    }

    /// Makes the kernel's state equal `policy` in one switch.
    ///
    /// Rule ids are kept for prefixes (and sets, by name) the kernel already has, so
    /// their counters continue; new rules get ids no current rule uses, with zeroed
    /// counters. The complete new rule set (and the valve, compiled into the IPv4 fast
    /// path) is built into the spare slot, new management prefixes are added, and then
    /// one word moves every packet to the new policy; afterwards the old slot is
    /// released and management prefixes no longer listed are removed.
    ///
    /// If anything fails before the switch (the kernel refuses a table, the rules do not
    /// fit `ipv4_lookup: fast`), nothing the packets see has changed and the error is
    /// returned.
    ///
    /// A small change is not switched but edited in place: when this handle made the
    /// loaded policy, the new one has the same rules and sets, valve, settings and
    /// lookup, and its prefixes differ in at most [`IN_PLACE_MAX`] places (and a quarter
    /// of all) — a feed update that adds and removes a few entries — each changed prefix
    /// is written into the active tables (one trie element, or the fast-path region it
    /// covers), and a packet sees each prefix's old or new rule
    /// ([`ReplaceReport::in_place`]). The same policy again writes nothing.
    ///
    /// When the policy this handle applied last is still what the tables hold, the new
    /// one is compared with it set by set: a set whose prefixes are the same (the same
    /// shared list, or equal) costs nothing more, a changed one a pass over its old and
    /// new prefixes, and only the prefixes that differ are looked up and written. A
    /// feed update of 20 prefixes beside a million others takes about as long as one
    /// of 20 beside a thousand (`shield_policy/feed_update_20_prefixes/*` in
    /// `docs/performance.md`). Edits in place append their changes to the slot's prefix
    /// book rather than writing it again, until the book's spare pages are used up.
    pub fn replace(&self, policy: &CompiledShield) -> Result<ReplaceReport> {
        self.replace_with(policy, None)
    }

    /// [`Shield::replace`], with what was worked out for `policy` ahead of the load.
    fn replace_with(
        &self,
        policy: &CompiledShield,
        prepared: Option<Prepared>,
    ) -> Result<ReplaceReport> {
        let _span =
            tracing::info_span!("ironclad.shield.replace", rules = policy.rules.len()).entered();
        let _edit = self.lock();
        if let Some(report) = self.replace_by_sets(policy)? {
            return Ok(report);
        }
        let report = self.replace_planned(policy, prepared)?;
        self.remember_sources(policy, &report);
        Ok(report)
    }

    /// Loads the Shield ([`Shield::load`]) and applies `policy` ([`Shield::replace`]),
    /// sooner than the two in turn: while the kernel verifies the program (a quarter
    /// of a second), another thread sorts the policy's prefixes and compiles its
    /// fast-path tables for an object with no earlier rules, and the replace uses
    /// whatever of that matches what the loaded object needs. A restart that adopts
    /// an earlier run's pins plans again over the rules they hold (their counters
    /// continue), and still takes a table whose prefixes and rule ids came out the
    /// same. The result is the same as `load` then `replace`.
    pub fn load_with_policy(
        loader: &Loader,
        policy: &CompiledShield,
    ) -> Result<(Self, ReplaceReport)> {
        let (prepared, loaded) = side_by_side(|| Prepared::of(policy), || Self::load(loader));
        let shield = loaded?;
        // A policy that cannot be planned is refused by the replace itself, with the
        // same error.
        let report = shield.replace_with(policy, prepared.ok())?;
        Ok((shield, report))
    }

    /// `replace` by a plan of the whole policy: every prefix of it is sorted and
    /// compared with the loaded ones.
    fn replace_planned(
        &self,
        policy: &CompiledShield,
        prepared: Option<Prepared>,
    ) -> Result<ReplaceReport> {
        let (planned, ready) = {
            let _span = tracing::info_span!("ironclad.shield.plan").entered();
            let old = read_directory(&self.object)?;
            match prepared {
                // Planned over an empty directory: what this plan would be.
                Some(prepared) if old.is_empty() => ((prepared.planned, old), prepared.tables),
                prepared => (
                    plan::plan(&old, policy).map(|p| (p, old))?,
                    prepared.map(|p| p.tables).unwrap_or_default(),
                ),
            }
        };
        let (
            Planned {
                mut report,
                book,
                directory,
                fresh,
            },
            old,
        ) = planned;
        let old_config = self.config()?;
        if report.added == 0
            && report.changed == 0
            && report.removed == 0
            && old_config == policy.config()
        {
            if let Some(done) = self.replace_in_place(&book, (&directory, &old), policy)? {
                self.fill_in_place_report(&mut report, done)?;
                return Ok(report);
            }
        }
        // Mode, rate limit and sampling go in just before the switch, and back if the
        // new policy never gets there.
        self.write_config(&policy.config())?;
        let _span = tracing::info_span!(
            "ironclad.shield.write",
            added = report.added,
            changed = report.changed,
            removed = report.removed
        )
        .entered();
        let built = self
            .commit_with(
                &Plan {
                    book,
                    valve: policy.management.clone(),
                    lookup: policy.ipv4_lookup,
                    lookup6: policy.ipv6_lookup,
                    directory,
                    fresh,
                },
                ready,
            )
            .inspect_err(|_| {
                let _ = self.write_config(&old_config);
            })?;
        report.ipv4_path = built.path;
        report.ipv6_path = built.path6;
        report.v6_records = built.v6_records;
        report.fast_groups = built.fast.groups;
        report.fast_spans = built.fast.spans;
        Ok(report)
    }

    /// The paths and fast-path use of an edit in place, into `report`.
    fn fill_in_place_report(
        &self,
        report: &mut ReplaceReport,
        (edits, path, fast): (usize, Ipv4Path, FastUse),
    ) -> Result<()> {
        let active = read_active(&self.object)?;
        report.in_place = edits;
        report.ipv4_path = path;
        if active & ACTIVE_V6_FAST != 0 {
            report.ipv6_path = Ipv6Path::Fast;
            report.v6_records = self.committed_state(active)?.map_or(0, |c| c.v6_records);
        } else {
            report.ipv6_path = Ipv6Path::Trie;
        }
        report.fast_groups = fast.groups;
        report.fast_spans = fast.spans;
        Ok(())
    }

    /// Remembers what `policy` was made of, now that the tables hold it.
    fn remember_sources(&self, policy: &CompiledShield, report: &ReplaceReport) {
        self.set_sources(Sources::of(policy, report).map(Arc::new));
    }

    /// Forgets what the last policy was made of: the tables are about to hold something
    /// else (an edit of a single rule).
    fn forget_sources(&self) {
        self.set_sources(None);
    }

    fn set_sources(&self, sources: Option<Arc<Sources>>) {
        if let Some(c) = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            c.sources = sources;
        }
    }

    /// `replace` set by set: when the policy this handle applied last is still what the
    /// tables hold, and the new one has the same rules, sets (names and actions),
    /// valve, settings and lookups, only the sets whose prefixes changed are compared,
    /// and only the prefixes that differ get their owner worked out again and written
    /// in place. A feed that changed a little beside a million unchanged prefixes costs
    /// its own change, not the million. `None` when the policy is not of that kind, or
    /// its change is too large or needs a switch (the caller then plans the whole
    /// policy).
    fn replace_by_sets(&self, policy: &CompiledShield) -> Result<Option<ReplaceReport>> {
        let active = read_active(&self.object)?;
        let Some(committed) = self.committed_state(active)? else {
            return Ok(None);
        };
        let Some(src) = committed.sources.clone() else {
            return Ok(None);
        };
        if !src.same_shape(policy)
            || committed.valve != policy.management
            || self.config()? != policy.config()
        {
            return Ok(None);
        }
        // The prefixes some set gained or lost.
        let mut touched = Vec::new();
        for ((_, _, old), set) in src.sets.iter().zip(&policy.sets) {
            if Arc::ptr_eq(old, &set.prefixes) || **old == *set.prefixes {
                continue;
            }
            match old.symmetric_difference(&set.prefixes, IN_PLACE_MAX - touched.len()) {
                Some(changed) => touched.extend(changed),
                None => return Ok(None),
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let index = |o: Owner| match o {
            Owner::Rule(i) => i,
            Owner::Set(i) => policy.rules.len() + i,
        };
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        // Prefixes each rule id gains (+) or loses (-), IPv4 and IPv6.
        let mut counts: HashMap<u32, (i64, i64)> = HashMap::new();
        for net in &touched {
            let new = policy
                .owner_of(net)
                .map(|o| Rule::new(src.ids[index(o)], policy.action_of(o)));
            let old = match net {
                IpNetwork::V4(n) => committed.book.v4.get(n),
                IpNetwork::V6(n) => committed.book.v6.get(n),
            };
            if old == new {
                continue;
            }
            for (rule, by) in [(old, -1i64), (new, 1)] {
                if let Some(rule) = rule {
                    let c = counts.entry(rule.rule_id).or_default();
                    if net.is_ipv4() {
                        c.0 += by;
                    } else {
                        c.1 += by;
                    }
                }
            }
            match net {
                IpNetwork::V4(n) => d4.push((*n, new)),
                IpNetwork::V6(n) => d6.push((*n, new)),
            }
        }
        let edits = d4.len() + d6.len();
        let total = committed.book.v4.len() + committed.book.v6.len();
        if edits > IN_PLACE_MAX || edits * 4 > total {
            return Ok(None);
        }
        drop(committed);
        // Only the rows whose prefix counts change are read and written.
        let old_directory = read_rows(&self.object, counts.keys().copied())?;
        // The remembered books become the new ones (edited, not copied). Should an edit
        // need a switch, nothing is remembered and the caller builds every table anew.
        let Some(mut taken) = self.take_committed(active)? else {
            return Ok(None);
        };
        Arc::make_mut(&mut taken.book.v4).apply(&d4);
        Arc::make_mut(&mut taken.book.v6).apply(&d6);
        let book = taken.book.clone();
        taken.sources = None;
        self.remember(Some(taken));
        let mut directory = old_directory.clone();
        for (id, (c4, c6)) in &counts {
            if let Some(info) = directory.get_mut(id) {
                info.prefixes_v4 = (i64::from(info.prefixes_v4) + c4).max(0) as u32;
                info.prefixes_v6 = (i64::from(info.prefixes_v6) + c6).max(0) as u32;
            }
        }
        let done = match self.apply_in_place(
            (&d4, &d6),
            &book,
            (&directory, &old_directory),
            &policy.management,
        ) {
            Ok(Some(done)) => done,
            other => {
                self.remember(None);
                return other.map(|_| None);
            }
        };
        let mut report = ReplaceReport {
            added: 0,
            changed: 0,
            removed: 0,
            kept: src.ids.len(),
            ids: policy
                .rules
                .iter()
                .zip(&src.ids)
                .map(|(r, id)| (r.cidr, *id))
                .collect(),
            set_ids: policy
                .sets
                .iter()
                .zip(&src.ids[policy.rules.len()..])
                .map(|(s, id)| (s.name.clone(), *id))
                .collect(),
            ipv4_path: Ipv4Path::Fast,
            ipv6_path: Ipv6Path::Fast,
            v6_records: 0,
            fast_groups: 0,
            fast_spans: 0,
            prefixes: (book.v4.len(), book.v6.len()),
            in_place: 0,
        };
        drop(book);
        self.fill_in_place_report(&mut report, done)?;
        self.remember_sources(policy, &report);
        Ok(Some(report))
    }

    /// Applies a policy whose rules, sets, valve, settings and lookup are those loaded,
    /// and whose prefixes differ in at most [`IN_PLACE_MAX`] places (and a quarter of
    /// all), as edits of the active tables: each changed prefix is one trie element or
    /// one recompiled fast-path region, which a packet sees before or after, never half
    /// done. Returns the number of edits, the IPv4 path and the fast-path groups in use,
    /// or `None` when the change must be switched as a whole (the caller does that; any
    /// edit made before is part of the new policy too).
    fn replace_in_place(
        &self,
        book: &RuleBook,
        (directory, old): (&BTreeMap<u32, RuleInfo>, &BTreeMap<u32, RuleInfo>),
        policy: &CompiledShield,
    ) -> Result<Option<(usize, Ipv4Path, FastUse)>> {
        let active = read_active(&self.object)?;
        let Some(committed) = self.committed_state(active)? else {
            return Ok(None);
        };
        let on_trie = active & ACTIVE_V4_TRIE != 0;
        let path = |trie: bool| if trie { Ipv4Path::Trie } else { Ipv4Path::Fast };
        let lookup_kept = allows(policy.ipv4_lookup, path(on_trie));
        let on_fast6 = active & ACTIVE_V6_FAST != 0;
        let lookup6_kept = allows(policy.ipv6_lookup, path(!on_fast6));
        if !lookup_kept || !lookup6_kept || committed.valve != policy.management {
            return Ok(None);
        }
        /// What changes from `old` to `new`: removed prefixes, then new or changed ones.
        /// One pass over both (they are sorted) instead of a search per prefix; `None`
        /// as soon as more than `limit` change (a swap of a whole policy is not walked to
        /// its end only to be refused).
        fn diff<K: Ord + Copy>(
            old: &Book<K>,
            new: &Book<K>,
            limit: usize,
        ) -> Option<Vec<(K, Option<Rule>)>> {
            let (mut removed, mut set) = (Vec::new(), Vec::new());
            let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
            loop {
                if removed.len() + set.len() > limit {
                    return None;
                }
                match (a.peek(), b.peek()) {
                    (None, None) => break,
                    (Some((k, _)), None) => {
                        removed.push((*k, None));
                        a.next();
                    }
                    (None, Some((k, r))) => {
                        set.push((*k, Some(*r)));
                        b.next();
                    }
                    (Some((ka, ra)), Some((kb, rb))) => match ka.cmp(kb) {
                        std::cmp::Ordering::Less => {
                            removed.push((*ka, None));
                            a.next();
                        }
                        std::cmp::Ordering::Greater => {
                            set.push((*kb, Some(*rb)));
                            b.next();
                        }
                        std::cmp::Ordering::Equal => {
                            if ra != rb {
                                set.push((*kb, Some(*rb)));
                            }
                            a.next();
                            b.next();
                        }
                    },
                }
            }
            removed.extend(set);
            Some(removed)
        }
        let total = book.v4.len() + book.v6.len();
        let limit = IN_PLACE_MAX.min(total / 4);
        let Some(d4) = diff(&committed.book.v4, &book.v4, limit) else {
            return Ok(None);
        };
        let Some(d6) = diff(&committed.book.v6, &book.v6, limit.saturating_sub(d4.len())) else {
            return Ok(None);
        };
        let edits = d4.len() + d6.len();
        if edits > IN_PLACE_MAX || edits * 4 > total {
            return Ok(None);
        }
        drop(committed);
        self.apply_in_place((&d4, &d6), book, (directory, old), &policy.management)
    }

    /// Writes the changes `d4` and `d6` (removed prefixes, then new or changed ones)
    /// into the active tables as edits in place, `book` being every prefix after them,
    /// and the rows of `directory` that differ from `old_directory` (what the kernel
    /// holds). `None` when an edit needs a switch.
    fn apply_in_place(
        &self,
        (d4, d6): Changes<'_>,
        book: &RuleBook,
        (directory, old_directory): (&BTreeMap<u32, RuleInfo>, &BTreeMap<u32, RuleInfo>),
        valve: &[IpNetwork],
    ) -> Result<Option<(usize, Ipv4Path, FastUse)>> {
        let active = read_active(&self.object)?;
        let on_trie = active & ACTIVE_V4_TRIE != 0;
        let on_fast6 = active & ACTIVE_V6_FAST != 0;
        let edits = d4.len() + d6.len();
        if on_fast6 && !d6.is_empty() {
            let nets: Vec<Ipv6Network> = d6.iter().map(|(n, _)| *n).collect();
            if !self.edit_fast6_in_place(&book.v6, valve, &nets)? {
                return Ok(None);
            }
        }
        for (net, rule) in d6.iter().filter(|_| !on_fast6) {
            if !self.edit_trie_in_place(IpNetwork::V6(*net), *rule)? {
                return Ok(None);
            }
        }
        if on_trie {
            for (net, rule) in d4 {
                if !self.edit_trie_in_place(IpNetwork::V4(*net), *rule)? {
                    return Ok(None);
                }
            }
        } else if !d4.is_empty() {
            // The edit reads the plan's prefixes and valve only.
            let committed = self.take_committed(read_active(&self.object)?)?;
            let plan = Plan {
                book: book.clone(),
                valve: valve.to_vec(),
                lookup: Ipv4Lookup::Auto,
                lookup6: Ipv6Lookup::Auto,
                directory: BTreeMap::new(),
                fresh: BTreeSet::new(),
            };
            let nets: Vec<Ipv4Network> = d4.iter().map(|(n, _)| *n).collect();
            if !self.edit_fast_in_place(committed, &plan, &nets)? {
                return Ok(None);
            }
        }
        // Prefix counts per rule, as the directory shows them.
        for (id, info) in directory {
            if old_directory.get(id) != Some(info) {
                self.write_row(*id, info)?;
            }
        }
        let fast = self
            .committed_state(read_active(&self.object)?)?
            .filter(|_| !on_trie)
            .map_or_else(FastUse::default, |c| c.fast);
        let path = if on_trie {
            Ipv4Path::Trie
        } else {
            Ipv4Path::Fast
        };
        Ok(Some((edits, path, fast)))
    }

    /// Remembers where a book table this handle wrote ends (the last eight: older
    /// tables are gone).
    fn note_book(&self, tail: BookTail) {
        let mut books = self
            .books
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        books.retain(|b| b.id != tail.id);
        books.push(tail);
        let excess = books.len().saturating_sub(8);
        books.drain(..excess);
    }

    /// Writes the changes `edits` of an edit in place (each prefix with its new rule,
    /// or `None` when it is gone) into the prefix book `outer` of the active `slot`.
    /// When this handle wrote that book and it has room, the changes are appended after
    /// its last run: the pages after the one holding the end first, then that one, so
    /// a reader sees the old end or the whole edit. Otherwise `full()` (the whole new
    /// book) is written as a new table and put in the slot. A book is read only by
    /// the handle that edits it or a later one (after a restart).
    fn write_book_edits<const N: usize>(
        &self,
        outer: &str,
        slot: u32,
        edits: &[([u8; N], u8, Option<Rule>)],
        full: impl FnOnce() -> Vec<u8>,
    ) -> Result<()> {
        let outer_map = self.object.handle(outer)?;
        if let Some(table) = inner(&outer_map, outer, slot)? {
            let id = table.info().map_err(map_err("info", outer))?.info.id;
            let known = self
                .books
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|b| b.id == id)
                .copied();
            if let Some(tail) = known {
                let bytes = plan::encode_edits(edits.iter().copied());
                let new_end = tail.end + bytes.len();
                if new_end + BookRun::SIZE <= tail.pages * BOOK_PAGE_BYTES {
                    let first = tail.end / BOOK_PAGE_BYTES;
                    let last = (new_end + BookRun::SIZE - 1) / BOOK_PAGE_BYTES;
                    let key = |page: usize| (page as u32).to_ne_bytes();
                    let mut image = lookup(&table, outer, &key(first))?
                        .unwrap_or_else(|| vec![0; BOOK_PAGE_BYTES]);
                    image.truncate(tail.end - first * BOOK_PAGE_BYTES);
                    image.extend_from_slice(&bytes);
                    image.resize((last + 1 - first) * BOOK_PAGE_BYTES, 0);
                    let keys: Vec<u8> = (first + 1..=last).flat_map(key).collect();
                    if !keys.is_empty() {
                        fill(&table, outer, &keys, &image[BOOK_PAGE_BYTES..])?;
                    }
                    table
                        .update(&key(first), &image[..BOOK_PAGE_BYTES], MapFlags::ANY)
                        .map_err(map_err("update", outer))?;
                    self.note_book(BookTail {
                        end: new_end,
                        ..tail
                    });
                    return Ok(());
                }
            }
        }
        let (table, tail) = book_table(outer, slot, &full(), &self.object)?;
        outer_map
            .update(
                &slot.to_ne_bytes(),
                &table.as_fd().as_raw_fd().to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(map_err("update", outer))?;
        self.note_book(tail);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.edit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current policy as a plan to edit: prefixes, valve, directory, and the lookup
    /// to keep (the trie stays the trie; the fast path stays fast while it fits).
    fn current(&self) -> Result<Plan> {
        let active = read_active(&self.object)?;
        let book = match self.committed_state(active)? {
            Some(committed) => committed.book,
            None => read_book(&self.object, active)?,
        };
        self.plan_with(active, book, true)
    }

    /// The plan of the active tables with `book`; `directory`: with the rule directory
    /// read (16,384 rows, milliseconds), which an edit in place does not need (it reads
    /// it only if it ends in a commit).
    fn plan_with(&self, active: u32, book: RuleBook, directory: bool) -> Result<Plan> {
        // IPv6 stays in its trie if it is there (a policy asked for it, or an earlier
        // version loaded it); a Shield with no IPv6 table yet compiles it.
        let v6_trie = active & ACTIVE_V6_FAST == 0
            && inner(&self.object.handle(V6_TRIE)?, V6_TRIE, active & ACTIVE_SLOT)?.is_some();
        Ok(Plan {
            book,
            valve: read_valve(&self.object)?,
            lookup: if active & ACTIVE_V4_TRIE != 0 {
                Ipv4Lookup::Trie
            } else {
                Ipv4Lookup::Auto
            },
            lookup6: if v6_trie {
                Ipv6Lookup::Trie
            } else {
                Ipv6Lookup::Auto
            },
            directory: if directory {
                read_directory(&self.object)?
            } else {
                BTreeMap::new()
            },
            fresh: BTreeSet::new(),
        })
    }

    /// What this handle last committed, if the kernel still holds exactly that.
    fn committed_state(&self, active: u32) -> Result<Option<Committed>> {
        let cached = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(cached) = cached else {
            return Ok(None);
        };
        let valid = cached.word & !ACTIVE_FROM_CONFIG == active & !ACTIVE_FROM_CONFIG
            && cached.tables == slot_tables(&self.object, active & ACTIVE_SLOT)?;
        Ok(valid.then_some(cached))
    }

    /// Like [`Shield::committed_state`], but takes it out of the handle, so its prefix
    /// sets are not shared while they are edited.
    fn take_committed(&self, active: u32) -> Result<Option<Committed>> {
        let valid = self.committed_state(active)?.is_some();
        let taken = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(taken.filter(|_| valid))
    }

    fn remember(&self, committed: Option<Committed>) {
        *self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = committed;
    }

    /// Builds `plan` into the spare slot and switches packets to it. A family whose
    /// prefixes (and, for the IPv4 fast path, valve) did not change keeps its table:
    /// the same kernel map is put into the new slot instead of a copy.
    fn commit(&self, plan: &Plan) -> Result<Built> {
        self.commit_with(plan, Ready::default())
    }

    /// [`Shield::commit`], taking the tables in `ready` that were compiled from
    /// `plan`'s own prefixes instead of compiling them again.
    fn commit_with(&self, plan: &Plan, mut ready: Ready) -> Result<Built> {
        let log = self.object.audit_log();
        let active = read_active(&self.object)?;
        let old_slot = active & ACTIVE_SLOT;
        let slot = old_slot ^ 1;
        let previous = self.committed_state(active)?;
        self.remember(None);
        if plan.book.v4.len() > SHIELD_MAX_V4_PREFIXES as usize
            || plan.book.v6.len() > SHIELD_MAX_V6_PREFIXES as usize
        {
            return Err(BpfError::BadSize {
                map: V4_TRIE.to_string(),
                what: "prefix count",
                got: plan.book.v4.len().max(plan.book.v6.len()),
                expected: SHIELD_MAX_V4_PREFIXES as usize,
            });
        }
        // IPv4 keeps its tables when neither its prefixes nor (on the fast path, where it
        // is compiled in) the valve changed, and the lookup asked for allows the path.
        let reuse_v4 = previous.as_ref().and_then(|p| {
            let path = if p.word & ACTIVE_V4_TRIE != 0 {
                Ipv4Path::Trie
            } else {
                Ipv4Path::Fast
            };
            let same = Arc::ptr_eq(&p.book.v4, &plan.book.v4) || p.book.v4 == plan.book.v4;
            let valve_same = path == Ipv4Path::Trie || v4_only(&p.valve) == v4_only(&plan.valve);
            (same && valve_same && allows(plan.lookup, path)).then_some((path, p.fast))
        });
        // IPv6 likewise (its fast path holds the IPv6 valve).
        let reuse_v6 = previous.as_ref().and_then(|p| {
            let path = if p.word & ACTIVE_V6_FAST != 0 {
                Ipv6Path::Fast
            } else {
                Ipv6Path::Trie
            };
            let same = Arc::ptr_eq(&p.book.v6, &plan.book.v6) || p.book.v6 == plan.book.v6;
            let valve_same = path == Ipv6Path::Trie || v6_only(&p.valve) == v6_only(&plan.valve);
            (same && valve_same && allows(plan.lookup6, path)).then_some((path, p.v6_records))
        });
        let ready_v6 = std::sync::Mutex::new(ready.v6_for(plan));
        let ready_v4 = ready.v4_for(plan);
        let build_v6 = || -> Result<V6Build> {
            let ready = ready_v6
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            Ok(match (reuse_v6, plan.lookup6, ready) {
                (Some((path, records)), _, _) => V6Build::Reuse(path, records),
                (None, Ipv6Lookup::Trie, _) => V6Build::Trie,
                // No IPv6 rule: an empty trie costs nothing, a compiled table its fixed size.
                (None, Ipv6Lookup::Auto, _) if plan.book.v6.is_empty() => V6Build::Trie,
                (None, _, Some(table)) => V6Build::Fast(table),
                (None, lookup, None) => {
                    let rules = fast_entries(&plan.book.v6);
                    match FastTable6::build(&rules, &v6_only(&plan.valve), SHIELD_V6_RECORDS) {
                        Ok(table) => V6Build::Fast(table),
                        Err(e) if lookup == Ipv6Lookup::Fast => return Err(e.into()),
                        Err(_) => V6Build::Trie,
                    }
                }
            })
        };
        let build_v4 = || -> Result<V4Build> {
            Ok(match (reuse_v4, plan.lookup, ready_v4) {
                (Some((path, fast)), _, _) => V4Build::Reuse(path, fast),
                (None, Ipv4Lookup::Trie, _) => V4Build::Trie,
                (None, _, Some((table, encoded))) => V4Build::Fast(table, encoded),
                (None, lookup, None) => {
                    let rules = fast_entries(&plan.book.v4);
                    match FastTable::build(&rules, &v4_only(&plan.valve), SHIELD_V4_GROUPS) {
                        Ok(table) => {
                            let encoded = EncodedV4::of(&table, &plan.book.v4);
                            V4Build::Fast(table, encoded)
                        }
                        Err(e) if lookup == Ipv4Lookup::Fast => return Err(e.into()),
                        Err(_) => V4Build::Trie,
                    }
                }
            })
        };
        // The two families' tables are compiled at once (a million IPv4 prefixes take
        // the longer; the IPv6 table is built beside them on the other core).
        let (v6, v4) = side_by_side(build_v6, build_v4);
        let (v6, v4) = (v6?, v4?);

        let outers: Vec<(&str, MapHandle)> = SLOTTED
            .iter()
            .map(|name| Ok((*name, self.object.map(name)?.handle()?)))
            .collect::<Result<_>>()?;
        let clear_slot = |slot: u32| {
            let deleted = at_once(&outers, |(_, outer)| outer.delete(&slot.to_ne_bytes()));
            for ((name, _), result) in outers.iter().zip(deleted) {
                if result.is_ok() {
                    log.record(
                        AuditAction::MapUpdate,
                        Self::OBJECT,
                        name,
                        Outcome::Ok,
                        format!("release slot {slot}"),
                    );
                }
            }
        };
        clear_slot(slot);
        let mut added_valve = Vec::new();
        let old_directory = read_directory(&self.object)?;
        // Ids taken over from rules this change removes: their counters restart once no
        // packet can reach the old rule any more, i.e. after the switch.
        let reused: Vec<u32> = plan
            .fresh
            .iter()
            .copied()
            .filter(|id| old_directory.contains_key(id))
            .collect();
        let built = (|| {
            let built = self.build_slot(plan, &v4, &v6, slot, &outers)?;
            let current_valve = read_valve(&self.object)?;
            for net in plan.valve.iter().filter(|n| !current_valve.contains(n)) {
                self.object
                    .map(valve_map(*net))?
                    .update(&lpm_key(*net), &1u32.to_ne_bytes())?;
                added_valve.push(*net);
            }
            let rows = self.object.map(RULE_INFO)?;
            for (id, info) in &plan.directory {
                if old_directory.get(id) != Some(info) {
                    rows.update(&id.to_ne_bytes(), &info.to_bytes())?;
                }
                if plan.fresh.contains(id) && !old_directory.contains_key(id) {
                    self.reset_counter(*id)?;
                }
            }
            Ok(built)
        })();
        let built: Built = match built {
            Ok(built) => built,
            Err(e) => {
                clear_slot(slot);
                for net in added_valve {
                    let _ = self.remove_valve_entry(net);
                }
                return Err(e);
            }
        };

        // The switch.
        let word =
            slot | if built.path == Ipv4Path::Trie {
                ACTIVE_V4_TRIE
            } else {
                0
            } | if built.path6 == Ipv6Path::Fast {
                ACTIVE_V6_FAST
            } else {
                0
            } | (active & ACTIVE_FROM_CONFIG);
        self.object
            .map(ACTIVE)?
            .update(&0u32.to_ne_bytes(), &word.to_ne_bytes())?;
        // Every packet that read the old word runs inside an RCU read-side section;
        // MEMBARRIER_CMD_GLOBAL returns after a grace period, when all have finished.
        rustix::thread::membarrier(rustix::thread::MembarrierCommand::Global).map_err(|e| {
            BpfError::Io {
                path: PathBuf::from("membarrier"),
                source: e.into(),
            }
        })?;
        clear_slot(old_slot);

        for net in read_valve(&self.object)? {
            if !plan.valve.contains(&net) {
                self.remove_valve_entry(net)?;
            }
        }
        let rows = self.object.map(RULE_INFO)?;
        for id in old_directory.keys() {
            if !plan.directory.contains_key(id) {
                rows.update(&id.to_ne_bytes(), &RuleInfo::default().to_bytes())?;
            }
        }
        for id in reused {
            self.reset_counter(id)?;
        }
        self.remember(Some(Committed {
            word,
            tables: slot_tables(&self.object, slot)?,
            book: plan.book.clone(),
            valve: plan.valve.clone(),
            fast: built.fast,
            v6_records: built.v6_records,
            sources: None,
        }));
        log.record(
            AuditAction::MapUpdate,
            Self::OBJECT,
            ACTIVE,
            Outcome::Ok,
            format!(
                "policy switch slot {old_slot} -> {slot}: {} IPv4 + {} IPv6 prefixes, {} rules, \
                 IPv4 via {}, IPv6 via {}",
                plan.book.v4.len(),
                plan.book.v6.len(),
                plan.directory.len(),
                built.path.as_str(),
                built.path6.as_str()
            ),
        );
        Ok(built)
    }

    /// A new array of `slot` for the array of maps `outer` (`u32` keys; values of
    /// `value_size` bytes, of BTF type `value_type`; `max` of them) holding `keys` and
    /// `values` (back to back).
    fn array_table(
        &self,
        (outer, slot): (&str, u32),
        (value_size, max): (usize, u32),
        value_type: &str,
        (keys, values): (&[u8], &[u8]),
    ) -> Result<MapHandle> {
        let table = create_table(
            MapType::Array,
            &format!("{outer}_{slot}"),
            4,
            value_size,
            max,
            0,
            TableBtf::of(&self.object, "__u32", value_type),
        )?;
        fill(&table, outer, keys, values)?;
        Ok(table)
    }

    /// A new LPM trie of `slot` (IPv4 or IPv6) holding `entries` (`count` of them), as
    /// a slot's table: (array of maps, table, what it holds).
    fn trie_table(
        &self,
        v4: bool,
        slot: u32,
        entries: impl Iterator<Item = (IpNetwork, Rule)>,
        count: usize,
    ) -> Result<(&'static str, MapHandle, String)> {
        let (name, key_size, max, key_type) = if v4 {
            (
                V4_TRIE,
                LpmV4Key::SIZE,
                SHIELD_MAX_V4_PREFIXES,
                names::shield::ic_lpm_v4_key,
            )
        } else {
            (
                V6_TRIE,
                LpmV6Key::SIZE,
                SHIELD_MAX_V6_PREFIXES,
                names::shield::ic_lpm_v6_key,
            )
        };
        let (keys, values) = lpm_entries(entries);
        let table = create_table(
            MapType::LpmTrie,
            &format!("{name}_{slot}"),
            key_size,
            Rule::SIZE,
            max,
            libbpf_sys::BPF_F_NO_PREALLOC,
            TableBtf::of(&self.object, key_type, names::shield::ic_rule),
        )?;
        fill(&table, name, &keys, &values)?;
        Ok((name, table, format!("new table with {count} elements")))
    }

    /// Creates and fills the tables of `slot` (or takes the active slot's table of a
    /// family that did not change) and puts them into the arrays of maps.
    fn build_slot(
        &self,
        plan: &Plan,
        v4: &V4Build,
        v6: &V6Build,
        slot: u32,
        outers: &[(&str, MapHandle)],
    ) -> Result<Built> {
        let log = self.object.audit_log();
        let outer = |name: &str| {
            outers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, m)| m)
                .ok_or_else(|| BpfError::NoSuchMap {
                    object: Self::OBJECT.to_string(),
                    map: name.to_string(),
                })
        };
        let active_table = |name: &str| -> Result<MapHandle> {
            inner(outer(name)?, name, slot ^ 1)?.ok_or_else(|| BpfError::NoSuchMap {
                object: Self::OBJECT.to_string(),
                map: format!("{name}[{}]", slot ^ 1),
            })
        };
        // (array of maps, table, what it holds)
        type Tables<'n> = Vec<(&'n str, MapHandle, String)>;
        let build_v6 = || -> Result<(Tables<'_>, Ipv6Path, usize)> {
            let mut tables: Tables<'_> = Vec::new();
            let (path6, v6_records) = match v6 {
                V6Build::Reuse(path, records) => {
                    let names: &[&str] = match path {
                        Ipv6Path::Fast => &[V6_FAST, V6_BOOK],
                        Ipv6Path::Trie => &[V6_TRIE],
                    };
                    for name in names {
                        tables.push((name, active_table(name)?, "unchanged table".into()));
                    }
                    (*path, *records)
                }
                V6Build::Fast(fast) => {
                    let records = fast.records();
                    // A new array is all zeros: the empty records (first-level records
                    // of blocks without a rule, most of them) are not written.
                    let used: Vec<(u32, &V6Node)> = (0u32..)
                        .zip(records)
                        .filter(|(_, r)| **r != V6Node::default())
                        .collect();
                    let keys: Vec<u8> = used.iter().flat_map(|(i, _)| i.to_ne_bytes()).collect();
                    let values: Vec<u8> = used.iter().flat_map(|(_, r)| r.to_bytes()).collect();
                    let table = self.array_table(
                        (V6_FAST, slot),
                        (V6Node::SIZE, SHIELD_V6_RECORDS),
                        names::shield::ic_v6_node,
                        (&keys, &values),
                    )?;
                    tables.push((
                        V6_FAST,
                        table,
                        format!(
                        "new table with {} of {SHIELD_V6_RECORDS} records ({} nodes, {} leaves)",
                        records.len(),
                        fast.nodes(),
                        fast.leaves()
                    ),
                    ));
                    let count = plan.book.v6.len();
                    let stream = book_stream_v6(&plan.book.v6);
                    let (table, tail) = book_table(V6_BOOK, slot, &stream, &self.object)?;
                    self.note_book(tail);
                    tables.push((V6_BOOK, table, format!("new table with {count} elements")));
                    (Ipv6Path::Fast, records.len())
                }
                V6Build::Trie => {
                    let entries = plan.book.v6.iter().map(|(n, r)| (IpNetwork::V6(n), r));
                    tables.push(self.trie_table(false, slot, entries, plan.book.v6.len())?);
                    (Ipv6Path::Trie, 0)
                }
            };
            Ok((tables, path6, v6_records))
        };
        let build_v4 = || -> Result<(Tables<'_>, Ipv4Path, FastUse)> {
            let mut tables: Tables<'_> = Vec::new();
            let (path, fast) = match v4 {
                V4Build::Reuse(path, fast) => {
                    let names: &[&str] = match path {
                        Ipv4Path::Fast => &[V4_FAST, V4_BOOK, V4_SPANS],
                        Ipv4Path::Trie => &[V4_TRIE],
                    };
                    for name in names {
                        tables.push((name, active_table(name)?, "unchanged table".into()));
                    }
                    (*path, *fast)
                }
                V4Build::Fast(fast, encoded) => {
                    let blocks = encoded.block_keys.len() / 4;
                    let table = self.array_table(
                        (V4_FAST, slot),
                        (V4Block::SIZE, SHIELD_V4_BLOCKS),
                        names::shield::ic_v4_block,
                        (&encoded.block_keys, &encoded.block_values),
                    )?;
                    tables.push((V4_FAST, table, format!("new table with {blocks} elements")));
                    let count = plan.book.v4.len();
                    let (table, tail) = book_table(V4_BOOK, slot, &encoded.book, &self.object)?;
                    self.note_book(tail);
                    tables.push((V4_BOOK, table, format!("new table with {count} elements")));
                    let spans = encoded.span_keys.len() / 4;
                    let table = self.array_table(
                        (V4_SPANS, slot),
                        (V4Span::SIZE, SHIELD_V4_SPANS),
                        names::shield::ic_v4_span,
                        (&encoded.span_keys, &encoded.span_values),
                    )?;
                    tables.push((
                        V4_SPANS,
                        table,
                        format!("new table with {spans} of {SHIELD_V4_SPANS} elements"),
                    ));
                    (
                        Ipv4Path::Fast,
                        FastUse {
                            groups: fast.groups(),
                            spans,
                        },
                    )
                }
                V4Build::Trie => {
                    let entries = plan.book.v4.iter().map(|(n, r)| (IpNetwork::V4(n), r));
                    tables.push(self.trie_table(true, slot, entries, plan.book.v4.len())?);
                    (Ipv4Path::Trie, FastUse::default())
                }
            };
            Ok((tables, path, fast))
        };
        // The families' tables are made and filled at once (filling is the kernel
        // copying them in, on the calling core).
        let (six, four) = side_by_side(build_v6, build_v4);
        let (mut tables, path6, v6_records) = six?;
        let (tables4, path, fast) = four?;
        tables.extend(tables4);
        let built = Built {
            path,
            fast,
            path6,
            v6_records,
        };
        let outers: Vec<&MapHandle> = tables
            .iter()
            .map(|(name, _, _)| outer(name))
            .collect::<Result<_>>()?;
        let jobs: Vec<(&MapHandle, &MapHandle)> = outers
            .into_iter()
            .zip(tables.iter().map(|(_, table, _)| table))
            .collect();
        let results = at_once(&jobs, |(outer, table)| {
            let fd = table.as_fd().as_raw_fd();
            outer.update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
        });
        for ((name, _, what), result) in tables.iter().zip(&results) {
            log.result(
                AuditAction::MapUpdate,
                Self::OBJECT,
                name,
                &format!("slot {slot}: {what}"),
                result,
            );
        }
        for ((name, _, _), result) in tables.iter().zip(results) {
            result.map_err(map_err("update", name))?;
        }
        Ok(built)
    }

    /// Adds or replaces the single-prefix rule for `net`: packets whose source it covers
    /// (and no longer prefix covers) are counted under `rule_id` and dropped (`Deny`) or
    /// passed (`Allow`). The change is made in place in the active tables (one trie
    /// element, or the region of the IPv4 fast path that `net` covers); only when that
    /// is not possible (a handle with nothing remembered, no unused fast-path group
    /// left) is IPv4 rebuilt and switched like [`Shield::replace`]. The counter of
    /// `rule_id` is left as it is.
    pub fn insert_rule(&self, net: IpNetwork, rule_id: u32, action: Action) -> Result<()> {
        let _edit = self.lock();
        self.insert_rule_locked(net, rule_id, action)
    }

    /// [`Shield::insert_rule`] under a counter index no rule or set uses (found from
    /// what the handle remembers and one directory row per candidate, not by reading
    /// the whole directory), its counter zeroed first. Returns the index.
    ///
    /// # Errors
    /// As [`Shield::insert_rule`]; [`BpfError::RulesFull`] when every index is used.
    pub fn insert_new_rule(&self, net: IpNetwork, action: Action) -> Result<u32> {
        let _edit = self.lock();
        let active = read_active(&self.object)?;
        let book = match self.committed_state(active)? {
            Some(committed) => committed.book,
            None => read_book(&self.object, active)?,
        };
        let used: BTreeSet<u32> = book
            .v4
            .iter()
            .map(|(_, r)| r.rule_id)
            .chain(book.v6.iter().map(|(_, r)| r.rule_id))
            .collect();
        let mut free = None;
        for id in (1..SHIELD_MAX_RULES).filter(|id| !used.contains(id)) {
            // A set with no prefix holds its row without appearing in the book.
            if read_rows(&self.object, std::iter::once(id))?.is_empty() {
                free = Some(id);
                break;
            }
        }
        let id = free.ok_or(BpfError::RulesFull {
            max: SHIELD_MAX_RULES,
        })?;
        self.reset_counter(id)?;
        self.insert_rule_locked(net, id, action)?;
        Ok(id)
    }

    fn insert_rule_locked(&self, net: IpNetwork, rule_id: u32, action: Action) -> Result<()> {
        // The tables stop being exactly the last policy: the next `replace` plans it whole.
        self.forget_sources();
        if rule_id == 0 || rule_id >= SHIELD_MAX_RULES {
            return Err(BpfError::BadSize {
                map: RULE_COUNTERS.to_string(),
                what: "rule id",
                got: rule_id as usize,
                expected: SHIELD_MAX_RULES as usize - 1,
            });
        }
        let rule = Rule::new(rule_id, action);
        let (v4, v6) = if net.is_ipv4() { (1, 0) } else { (0, 1) };
        let info = RuleLabel::Cidr(net).info(action, v4, v6);
        if self.edit_trie_in_place(net, Some(rule))? || self.edit_fast6_rule(net, Some(rule))? {
            self.write_row(rule_id, &info)?;
            return Ok(());
        }
        let (mut plan, committed) = self.current_for_edit()?;
        match net {
            IpNetwork::V4(n) => Arc::make_mut(&mut plan.book.v4).insert(n, rule),
            IpNetwork::V6(n) => Arc::make_mut(&mut plan.book.v6).insert(n, rule),
        };
        let v4_nets: Vec<Ipv4Network> = match net {
            IpNetwork::V4(n) => vec![n],
            IpNetwork::V6(_) => Vec::new(),
        };
        if !v4_nets.is_empty() && self.edit_fast_in_place(committed, &plan, &v4_nets)? {
            self.write_row(rule_id, &info)?;
            return Ok(());
        }
        plan.directory = read_directory(&self.object)?;
        plan.directory.insert(rule_id, info);
        self.commit(&plan).map(|_| ())
    }

    /// The current policy to edit, and what this handle committed last (taken out of
    /// the handle: an edit puts it back or commits anew).
    fn current_for_edit(&self) -> Result<(Plan, Option<Committed>)> {
        let active = read_active(&self.object)?;
        let mut committed = self.take_committed(active)?;
        let book = match committed.as_mut() {
            Some(c) => std::mem::take(&mut c.book),
            None => read_book(&self.object, active)?,
        };
        Ok((self.plan_with(active, book, false)?, committed))
    }

    /// An IPv4 edit on the fast path, made in the active table without a switch: each
    /// first-level block (/16) the edited prefixes reach is recompiled from the prefix
    /// book and written so that a packet sees its source's old or new rule, never a mix
    /// (see [`Shield::edit_fast_block`]), and the slot's prefix book is replaced. Groups
    /// and span nodes the edit stops using are left alone until the next rebuild.
    /// Returns `false` (the caller rebuilds and switches) when the edit needs a rebuild:
    /// not on the fast path, nothing remembered, no unused group or span node left, or
    /// more than [`IN_PLACE_MAX_BLOCKS`] blocks reached.
    fn edit_fast_in_place(
        &self,
        committed: Option<Committed>,
        plan: &Plan,
        nets: &[Ipv4Network],
    ) -> Result<bool> {
        let Some(mut committed) = committed else {
            return Ok(false);
        };
        if committed.word & ACTIVE_V4_TRIE != 0 || committed.valve != plan.valve {
            return Ok(false);
        }
        let slot = committed.word & ACTIVE_SLOT;
        let (Some(table), Some(spans)) = (
            inner(&self.object.handle(V4_FAST)?, V4_FAST, slot)?,
            inner(&self.object.handle(V4_SPANS)?, V4_SPANS, slot)?,
        ) else {
            return Ok(false);
        };
        // Every block once, however many of the edits fall into it.
        let mut blocks: BTreeSet<u32> = BTreeSet::new();
        for net in nets {
            let first = u32::from(net.network()) >> 16;
            blocks.extend(first..first + (1u32 << (16 - net.prefix().min(16))));
        }
        // A block edited in place is read from the kernel, recompiled and written: one
        // system call or more each. Past a /4's blocks a rebuild, written in batches,
        // is the quicker (a deny of 0.0.0.0/0 reaches all 65,536).
        if blocks.len() > IN_PLACE_MAX_BLOCKS {
            return Ok(false);
        }
        let valve: Vec<Ipv4Network> = plan
            .valve
            .iter()
            .filter_map(|n| match n {
                IpNetwork::V4(n) => Some(*n),
                IpNetwork::V6(_) => None,
            })
            .collect();
        let mut written = BlockWrites::default();
        let mut result = Ok(true);
        for block in blocks {
            match self.edit_fast_block(&table, &spans, &mut committed.fast, plan, block, &valve) {
                Ok(Some(w)) => written.add(w),
                Ok(None) => {
                    result = Ok(false);
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if written.rebased > 0 {
            // The next edit of a rebased block writes the base its old entries used:
            // every packet that may still hold such an entry must be done first.
            rustix::thread::membarrier(rustix::thread::MembarrierCommand::Global).map_err(|e| {
                BpfError::Io {
                    path: PathBuf::from("membarrier"),
                    source: e.into(),
                }
            })?;
        }
        if !matches!(result, Ok(true)) {
            return result;
        }
        let edits: Vec<([u8; 4], u8, Option<Rule>)> = nets
            .iter()
            .map(|n| (n.network().octets(), n.prefix(), plan.book.v4.get(n)))
            .collect();
        self.write_book_edits(V4_BOOK, slot, &edits, || book_stream_v4(&plan.book.v4))?;
        let what = match nets {
            [one] => one.to_string(),
            many => format!("{} prefixes", many.len()),
        };
        self.object.audit_log().record(
            AuditAction::MapUpdate,
            Self::OBJECT,
            V4_FAST,
            Outcome::Ok,
            format!(
                "slot {slot}: {what} edited in place ({} first-level blocks, {} groups, {} span nodes)",
                written.blocks, written.groups, written.spans
            ),
        );
        committed.book = plan.book.clone();
        committed.tables = slot_tables(&self.object, slot)?;
        self.remember(Some(committed));
        Ok(true)
    }

    /// Recompiles first-level block `block` (a /16) of the active fast-path `table` from
    /// `plan`'s prefix book and writes it, in an order that keeps every packet's view
    /// whole:
    ///
    /// 1. new groups and span nodes, where no entry names them yet (a group the block
    ///    kept is rewritten in place, each 16-bit entry from old to new value);
    /// 2. the block with its entries as they were and its new span nodes' base in the
    ///    base slot no entry uses;
    /// 3. the block with its new entries, which name that base: each 16-bit entry goes
    ///    from its old value (old base, old node) to its new one (new base, new node).
    ///
    /// Returns what was written, or `None` (nothing more written) when no unused group
    /// or span node is left.
    fn edit_fast_block(
        &self,
        table: &MapHandle,
        spans_table: &MapHandle,
        fast: &mut FastUse,
        plan: &Plan,
        block: u32,
        valve: &[Ipv4Network],
    ) -> Result<Option<BlockWrites>> {
        let Ok(range) = Ipv4Network::new(std::net::Ipv4Addr::from(block << 16), 16) else {
            return Ok(None);
        };
        // The prefixes that reach into the block: those covering it, those inside it.
        let entry_of = |r: &Rule| {
            fastpath::entry(
                r.rule_id,
                Action::from_raw(r.action).unwrap_or(Action::Deny),
            )
        };
        let mut rules: Vec<(Ipv4Network, u16)> = (0..=16u8)
            .filter_map(|len| {
                let cover = Ipv4Network::new(range.network(), len)
                    .and_then(|c| Ipv4Network::new(c.network(), len))
                    .ok()?;
                plan.book
                    .v4
                    .get(&cover)
                    .map(|rule| (cover, entry_of(&rule)))
            })
            .collect();
        let high = Ipv4Network::new(range.broadcast(), 32).unwrap_or(range);
        rules.extend(
            plan.book
                .v4
                .range(range, high)
                .filter(|(n, _)| n.prefix() > 16)
                .map(|(n, rule)| (n, entry_of(&rule))),
        );
        let bytes = lookup(table, V4_FAST, &block.to_ne_bytes())?.unwrap_or_default();
        let Some(current) = V4Block::from_bytes(&bytes) else {
            return Ok(None);
        };
        // Groups this block may use: those never used, and its own (a /24 keeps its
        // group). Beyond, a /24 of five values or more is a leaf node.
        let own_groups = current
            .entry
            .iter()
            .filter(|e| *e & (FAST_GROUP | FAST_SPAN) == FAST_GROUP)
            .count();
        let free_groups = (SHIELD_V4_GROUPS as usize).saturating_sub(fast.groups) + own_groups;
        let packed = fastpath::Packed::build(block << 16, 16, &rules, valve, free_groups);
        let mut written = BlockWrites::default();

        // 1. Span nodes, at the end of the span table, under the base no entry uses;
        // none when the block's nodes are those it has.
        let span_entries: Vec<u16> = current
            .entry
            .iter()
            .copied()
            .filter(|e| e & (FAST_GROUP | FAST_SPAN) == FAST_GROUP | FAST_SPAN)
            .collect();
        let uses_second = span_entries
            .first()
            .is_some_and(|e| e & FAST_SPAN_BASE != 0);
        let mut current_spans = Vec::with_capacity(span_entries.len());
        if span_entries.len() == packed.spans.len() {
            let base = current.span_base[usize::from(uses_second)];
            for e in &span_entries {
                let index = base + u32::from(e & FAST_SPAN_MASK);
                let bytes = lookup(spans_table, V4_SPANS, &index.to_ne_bytes())?;
                current_spans.extend(bytes.as_deref().and_then(V4Span::from_bytes));
            }
        }
        let unchanged = current_spans == packed.spans;
        let (base_slot, base_flag) = match (unchanged, uses_second) {
            (true, true) | (false, false) => (1, FAST_SPAN_BASE),
            (true, false) | (false, true) => (0, 0),
        };
        let mut span_base = current.span_base;
        if !unchanged && !packed.spans.is_empty() {
            let at = fast.spans;
            if at + packed.spans.len() > FastUse::SPAN_CAPACITY {
                return Ok(None);
            }
            let keys: Vec<u8> = (at as u32..(at + packed.spans.len()) as u32)
                .flat_map(u32::to_ne_bytes)
                .collect();
            let values: Vec<u8> = packed.spans.iter().flat_map(V4Span::to_bytes).collect();
            fill(spans_table, V4_SPANS, &keys, &values)?;
            fast.spans += packed.spans.len();
            span_base[base_slot] = at as u32;
            written.spans = packed.spans.len();
        }
        // 1. Groups: the /24's old group if it had one, else one never used.
        let mut next = current;
        next.span_base = span_base;
        let mut group_writes: Vec<(u32, V4Block)> = Vec::new();
        for (i, wanted) in packed.first.iter().enumerate() {
            let old = current.entry[i];
            next.entry[i] = if wanted & (FAST_GROUP | FAST_SPAN) == FAST_GROUP | FAST_SPAN {
                wanted | base_flag
            } else if wanted & FAST_GROUP != 0 {
                let Some(content) = packed.groups.get(usize::from(wanted & FAST_GROUP_MASK)) else {
                    return Ok(None);
                };
                let group = if old & (FAST_GROUP | FAST_SPAN) == FAST_GROUP {
                    usize::from(old & FAST_GROUP_MASK)
                } else {
                    fast.groups += 1;
                    fast.groups - 1
                };
                if group >= SHIELD_V4_GROUPS as usize {
                    return Ok(None);
                }
                group_writes.push((
                    SHIELD_V4_FIRST_BLOCKS + group as u32,
                    V4Block {
                        entry: *content,
                        span_base: [0; 2],
                    },
                ));
                FAST_GROUP | (group as u16 & FAST_GROUP_MASK)
            } else {
                *wanted
            };
        }
        let write = |items: &[(u32, V4Block)]| {
            let keys: Vec<u8> = items.iter().flat_map(|(i, _)| i.to_ne_bytes()).collect();
            let values: Vec<u8> = items.iter().flat_map(|(_, b)| b.to_bytes()).collect();
            fill(table, V4_FAST, &keys, &values)
        };
        write(&group_writes)?;
        written.groups = group_writes.len();
        // 2. The new base, beside the entries as they are.
        if span_base != current.span_base {
            let mut rebased = current;
            rebased.span_base = span_base;
            write(&[(block, rebased)])?;
            written.rebased = 1;
        }
        // 3. The entries.
        if next.entry != current.entry {
            write(&[(block, next)])?;
            written.blocks = 1;
        }
        Ok(Some(written))
    }

    /// A single IPv6 prefix set to `rule` (or removed) on the IPv6 fast path, in place
    /// (see [`Shield::edit_fast6_in_place`]). `false` for IPv4, or when the edit needs a
    /// rebuild.
    fn edit_fast6_rule(&self, net: IpNetwork, rule: Option<Rule>) -> Result<bool> {
        let IpNetwork::V6(n) = net else {
            return Ok(false);
        };
        let active = read_active(&self.object)?;
        if active & ACTIVE_V6_FAST == 0 {
            return Ok(false);
        }
        let Some(committed) = self.committed_state(active)? else {
            return Ok(false);
        };
        let mut v6 = (*committed.book.v6).clone();
        match rule {
            Some(rule) => v6.insert(n, rule),
            None => v6.remove(&n),
        };
        self.edit_fast6_in_place(&Arc::new(v6), &committed.valve, &[n])
    }

    /// An IPv6 edit on the fast path, made in the active table without a switch: each
    /// first-level block ([`Top`]: a /22 of 2000::/3, a /16 elsewhere) the edited
    /// prefixes `nets` fall into is compiled again from `v6` (the whole new IPv6 book)
    /// into records the table does not use yet, and then the block's first-level entry
    /// is pointed at them, so a packet walks either the old region or the new one. The
    /// old region is left alone until the next rebuild. The slot's IPv6 book is replaced.
    /// Returns `false` (the caller rebuilds and switches) when the edit needs a rebuild:
    /// not on the fast path, nothing remembered, another valve, a prefix as long as its
    /// block or shorter, or no unused records left.
    fn edit_fast6_in_place(
        &self,
        v6: &Arc<Book<Ipv6Network>>,
        valve: &[IpNetwork],
        nets: &[Ipv6Network],
    ) -> Result<bool> {
        let active = read_active(&self.object)?;
        if active & ACTIVE_V6_FAST == 0 {
            return Ok(false);
        }
        let Some(mut committed) = self.committed_state(active)? else {
            return Ok(false);
        };
        if committed.valve != valve || !nets.iter().all(Top::holds) {
            return Ok(false);
        }
        let slot = active & ACTIVE_SLOT;
        let Some(table) = inner(&self.object.handle(V6_FAST)?, V6_FAST, slot)? else {
            return Ok(false);
        };
        let valve6: Vec<Ipv6Network> = valve
            .iter()
            .filter_map(|n| match n {
                IpNetwork::V6(n) => Some(*n),
                IpNetwork::V4(_) => None,
            })
            .collect();
        let tops: BTreeSet<Top> = nets.iter().map(|n| Top::of(n.network())).collect();
        let mut next = committed.v6_records;
        let mut regions = Vec::with_capacity(tops.len());
        for top in tops {
            // The prefixes inside the block, and those as long as it or shorter that cover
            // it.
            let (Ok(from), Ok(to)) = (
                Ipv6Network::new(top.first(), 0),
                Ipv6Network::new(top.last(), 128),
            ) else {
                return Ok(false);
            };
            let mut rules: Vec<(Ipv6Network, u16)> = Vec::new();
            let mut take = |net: &Ipv6Network, rule: &Rule| {
                let action = Action::from_raw(rule.action).unwrap_or(Action::Deny);
                rules.push((*net, fastpath::entry(rule.rule_id, action)));
            };
            for (net, rule) in v6.range(from, to) {
                take(&net, &rule);
            }
            for len in 0..=top.bits() {
                if let Ok(cover) = Ipv6Network::new(top.first(), len)
                    .and_then(|n| Ipv6Network::new(n.network(), len))
                {
                    if let Some(rule) = v6.get(&cover) {
                        take(&cover, &rule);
                    }
                }
            }
            let region = FastTable6::region(&rules, &valve6, top, next as u32);
            next += region.records.len();
            regions.push(region);
        }
        if next > SHIELD_V6_RECORDS as usize {
            return Ok(false);
        }
        // The new regions first, where no packet looks yet; then the entries.
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for region in &regions {
            for (i, record) in region.records.iter().enumerate() {
                keys.extend_from_slice(&(region.first + i as u32).to_ne_bytes());
                values.extend_from_slice(&record.to_bytes());
            }
        }
        fill(&table, V6_FAST, &keys, &values)?;
        for region in &regions {
            let index = region.top.record();
            let current = lookup(&table, V6_FAST, &index.to_ne_bytes())?
                .and_then(|b| V6Node::from_bytes(&b))
                .unwrap_or_default();
            let record = FastTable6::with_entry(current, region.top, region.entry);
            table
                .update(&index.to_ne_bytes(), &record.to_bytes(), MapFlags::ANY)
                .map_err(map_err("update", V6_FAST))?;
        }
        let edits: Vec<([u8; 16], u8, Option<Rule>)> = nets
            .iter()
            .map(|n| (n.network().octets(), n.prefix(), v6.get(n)))
            .collect();
        self.write_book_edits(V6_BOOK, slot, &edits, || book_stream_v6(v6))?;
        let what = match nets {
            [one] => one.to_string(),
            many => format!("{} prefixes", many.len()),
        };
        self.object.audit_log().record(
            AuditAction::MapUpdate,
            Self::OBJECT,
            V6_FAST,
            Outcome::Ok,
            format!(
                "slot {slot}: {what} edited in place ({} first-level blocks, {} records)",
                regions.len(),
                next - committed.v6_records
            ),
        );
        committed.v6_records = next;
        committed.book.v6 = Arc::clone(v6);
        committed.tables = slot_tables(&self.object, slot)?;
        self.remember(Some(committed));
        Ok(true)
    }

    /// A single-prefix change to a family the active slot holds in an LPM trie (IPv6;
    /// IPv4 on the trie path) is made in place: one element, which every packet sees
    /// either before or after. Returns `false` when the family is on the fast path (the
    /// caller then rebuilds it and switches).
    fn edit_trie_in_place(&self, net: IpNetwork, rule: Option<Rule>) -> Result<bool> {
        let active = read_active(&self.object)?;
        let name = match net {
            IpNetwork::V6(_) if active & ACTIVE_V6_FAST != 0 => return Ok(false),
            IpNetwork::V6(_) => V6_TRIE,
            IpNetwork::V4(_) if active & ACTIVE_V4_TRIE != 0 => V4_TRIE,
            IpNetwork::V4(_) => return Ok(false),
        };
        let Some(table) = inner(&self.object.handle(name)?, name, active & ACTIVE_SLOT)? else {
            return Ok(false);
        };
        let cached = self.take_committed(active)?;
        let key = lpm_key(net);
        let result = match rule {
            Some(rule) => table.update(&key, &rule.to_bytes(), MapFlags::ANY),
            None => match table.delete(&key) {
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        self.object.audit_log().result(
            AuditAction::MapUpdate,
            Self::OBJECT,
            name,
            &format!(
                "slot {}: {} {net}",
                active & ACTIVE_SLOT,
                if rule.is_some() { "update" } else { "delete" }
            ),
            &result,
        );
        result.map_err(map_err("update", name))?;
        // Keep the remembered book in step with the table (copied only when it differs:
        // a `replace` set by set has put the new rule there already).
        self.remember(cached.map(|mut c| {
            match (net, rule) {
                (IpNetwork::V4(n), Some(r)) if c.book.v4.get(&n) != Some(r) => {
                    Arc::make_mut(&mut c.book.v4).insert(n, r);
                }
                (IpNetwork::V4(n), None) if c.book.v4.contains_key(&n) => {
                    Arc::make_mut(&mut c.book.v4).remove(&n);
                }
                (IpNetwork::V6(n), Some(r)) if c.book.v6.get(&n) != Some(r) => {
                    Arc::make_mut(&mut c.book.v6).insert(n, r);
                }
                (IpNetwork::V6(n), None) if c.book.v6.contains_key(&n) => {
                    Arc::make_mut(&mut c.book.v6).remove(&n);
                }
                _ => {}
            }
            c
        }));
        Ok(true)
    }

    /// The rule stored for exactly `net`, if any.
    pub fn rule(&self, net: IpNetwork) -> Result<Option<Rule>> {
        let book = self.current()?.book;
        Ok(match net {
            IpNetwork::V4(n) => book.v4.get(&n),
            IpNetwork::V6(n) => book.v6.get(&n),
        })
    }

    /// Removes the rule for exactly `net`, in place like [`Shield::insert_rule`];
    /// `Ok(false)` if there was none. If a prefix set also lists exactly `net`, the
    /// set's entry comes back when the policy is applied again.
    pub fn remove_rule(&self, net: IpNetwork) -> Result<bool> {
        let _edit = self.lock();
        self.forget_sources();
        // Which rule is there, and whether its id goes with it. Read without taking what
        // the handle remembers, so the edit below keeps that in step.
        let (rule, frees_id) = {
            let active = read_active(&self.object)?;
            let book = match self.committed_state(active)? {
                Some(committed) => committed.book,
                None => read_book(&self.object, active)?,
            };
            let existing = match net {
                IpNetwork::V4(n) => book.v4.get(&n),
                IpNetwork::V6(n) => book.v6.get(&n),
            };
            let Some(rule) = existing else {
                return Ok(false);
            };
            // Its own row only (the whole directory is milliseconds to read).
            let frees_id = read_rows(&self.object, std::iter::once(rule.rule_id))?
                .get(&rule.rule_id)
                .and_then(RuleLabel::of)
                .is_some_and(|l| l == RuleLabel::Cidr(net));
            (rule, frees_id)
        };
        let free_row = || {
            if frees_id {
                self.write_row(rule.rule_id, &RuleInfo::default())
            } else {
                Ok(())
            }
        };
        if self.edit_trie_in_place(net, None)? || self.edit_fast6_rule(net, None)? {
            free_row()?;
            return Ok(true);
        }
        let (mut plan, committed) = self.current_for_edit()?;
        match net {
            IpNetwork::V4(n) => Arc::make_mut(&mut plan.book.v4).remove(&n),
            IpNetwork::V6(n) => Arc::make_mut(&mut plan.book.v6).remove(&n),
        };
        let v4_nets: Vec<Ipv4Network> = match net {
            IpNetwork::V4(n) => vec![n],
            IpNetwork::V6(_) => Vec::new(),
        };
        if !v4_nets.is_empty() && self.edit_fast_in_place(committed, &plan, &v4_nets)? {
            free_row()?;
            return Ok(true);
        }
        plan.directory = read_directory(&self.object)?;
        if frees_id {
            plan.directory.remove(&rule.rule_id);
        }
        self.commit(&plan).map(|_| true)
    }

    /// Writes one row of the rule directory.
    fn write_row(&self, rule_id: u32, info: &RuleInfo) -> Result<()> {
        self.object
            .map(RULE_INFO)?
            .update(&rule_id.to_ne_bytes(), &info.to_bytes())
    }

    /// Zeroes the counter of `rule_id` on every CPU.
    pub fn reset_counter(&self, rule_id: u32) -> Result<()> {
        let map = self.object.map(RULE_COUNTERS)?;
        let cpus = map
            .lookup_percpu(&rule_id.to_ne_bytes())?
            .map_or(0, |v| v.len());
        let zero = vec![Counter::default().to_bytes().to_vec(); cpus];
        map.update_percpu(&rule_id.to_ne_bytes(), &zero)
    }

    /// Adds `net` to the management safety valve: its traffic always passes.
    pub fn add_valve(&self, net: IpNetwork) -> Result<()> {
        let _edit = self.lock();
        let mut plan = self.current()?;
        if !plan.valve.contains(&net) {
            plan.valve.push(net);
        }
        self.commit(&plan).map(|_| ())
    }

    /// Removes `net` from the safety valve; `Ok(false)` if it was not there.
    pub fn remove_valve(&self, net: IpNetwork) -> Result<bool> {
        let _edit = self.lock();
        let mut plan = self.current()?;
        let before = plan.valve.len();
        plan.valve.retain(|n| *n != net);
        if plan.valve.len() == before {
            return Ok(false);
        }
        self.commit(&plan).map(|_| true)
    }

    fn remove_valve_entry(&self, net: IpNetwork) -> Result<bool> {
        self.object.map(valve_map(net))?.delete(&lpm_key(net))
    }

    /// The runtime configuration (mode, rate limit, sampling).
    pub fn config(&self) -> Result<ShieldConfig> {
        let bytes = self.object.map(CONFIG)?.lookup(&0u32.to_ne_bytes())?;
        Ok(bytes
            .and_then(|b| ShieldConfig::from_bytes(&b))
            .unwrap_or_default())
    }

    /// Writes the runtime configuration.
    pub fn set_config(&self, config: &ShieldConfig) -> Result<()> {
        let _edit = self.lock();
        self.write_config(config)
    }

    fn write_config(&self, config: &ShieldConfig) -> Result<()> {
        if config.sample_rate > ACTIVE_SAMPLE_MAX {
            return Err(BpfError::InvalidConfig {
                field: "sample_rate",
                reason: format!(
                    "{} is more than the largest rate, {ACTIVE_SAMPLE_MAX}",
                    config.sample_rate
                ),
            });
        }
        self.object
            .map(CONFIG)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())?;
        // The kernel decides from the active word: packets without a rule read the
        // configuration only when a rate limit is set, packets with one only when an event
        // is sampled.
        let active = read_active(&self.object)?;
        let word = config_bits(active, config);
        if word != active {
            self.object
                .map(ACTIVE)?
                .update(&0u32.to_ne_bytes(), &word.to_ne_bytes())?;
        }
        Ok(())
    }

    /// Turns dry-run on (count and report, never drop) or off.
    pub fn set_mode(&self, mode: Mode) -> Result<()> {
        let _edit = self.lock();
        let mut config = self.config()?;
        config.flags = match mode {
            Mode::DryRun => config.flags | SHIELD_F_DRY_RUN,
            Mode::Enforce => config.flags & !SHIELD_F_DRY_RUN,
        };
        self.write_config(&config)
    }

    /// The current mode.
    pub fn mode(&self) -> Result<Mode> {
        Ok(if self.config()?.flags & SHIELD_F_DRY_RUN != 0 {
            Mode::DryRun
        } else {
            Mode::Enforce
        })
    }

    /// Sets (or with `None` removes) the per-source rate limit.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        let _edit = self.lock();
        let mut config = self.config()?;
        config.rate_pps = limit.map_or(0, |l| l.pps);
        config.rate_burst = limit.map_or(0, |l| l.burst);
        self.write_config(&config)
    }

    /// Reports one drop in `n` (per CPU) as an event; 0 turns events off.
    pub fn set_sample_rate(&self, n: u32) -> Result<()> {
        let _edit = self.lock();
        let mut config = self.config()?;
        config.sample_rate = n;
        self.write_config(&config)
    }

    /// Caps drop events at `n` a second on each CPU (sampled drops past the cap are
    /// counted as [`ShieldTotal::EventsOverBudget`]); 0 removes the cap.
    pub fn set_events_per_second(&self, n: u32) -> Result<()> {
        let _edit = self.lock();
        let mut config = self.config()?;
        config.events_per_sec = n;
        self.write_config(&config)
    }

    /// Packets and bytes counted under `rule_id`, summed over CPUs.
    pub fn rule_counter(&self, rule_id: u32) -> Result<Counter> {
        Ok(sum_percpu(
            self.object
                .map(RULE_COUNTERS)?
                .lookup_percpu(&rule_id.to_ne_bytes())?,
        ))
    }

    /// Every global total, summed over CPUs.
    pub fn totals(&self) -> Result<Vec<(ShieldTotal, Counter)>> {
        ShieldTotal::ALL
            .iter()
            .map(|t| Ok((*t, self.total(*t)?)))
            .collect()
    }

    /// One total, summed over CPUs.
    pub fn total(&self, which: ShieldTotal) -> Result<Counter> {
        Ok(sum_totals(
            self.object
                .map(TOTALS)?
                .lookup_percpu(&(which as u32).to_ne_bytes())?,
        ))
    }

    /// Runs the XDP program on one frame with `BPF_PROG_TEST_RUN` (`repeat` times) and
    /// returns the verdict and the kernel's time per run. Counters count these runs.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<crate::loader::TestRun> {
        self.object.test_run(PROGRAM, frame, repeat)
    }

    /// Attaches the Shield to `iface` through a `bpf_link` (native XDP where the driver
    /// supports it, generic otherwise: see [`XdpAttachment::mode`]). The program is
    /// detached when the returned guard is dropped, unless it is pinned.
    pub fn attach(&self, iface: &str) -> Result<XdpAttachment> {
        let prog = self.object.program(PROGRAM)?;
        XdpAttachment::attach(&prog, Shield::OBJECT, iface, self.object.audit_log())
    }

    /// The pin path of the link on `iface`: `<pin root>/shield/link_<iface>`.
    pub fn link_pin_path(&self, iface: &str) -> PathBuf {
        self.object.pin_dir().join(format!("link_{iface}"))
    }

    /// Attaches to `iface` and pins the link, so enforcement outlives the process. If a
    /// link is already pinned for `iface` (an earlier run, perhaps killed), it is
    /// adopted and this program is swapped into it atomically: no packet goes
    /// unfiltered in between.
    pub fn attach_pinned(&self, iface: &str) -> Result<XdpAttachment> {
        let path = self.link_pin_path(iface);
        let prog = self.object.program(PROGRAM)?;
        let dead = crate::attach::remove_dead_link_pin(
            &path,
            Shield::OBJECT,
            &format!("link xdp on {iface}"),
            self.object.audit_log(),
        )?;
        if !dead && path.exists() {
            return XdpAttachment::adopt(
                &prog,
                Shield::OBJECT,
                iface,
                &path,
                self.object.audit_log(),
            );
        }
        let mut attachment =
            XdpAttachment::attach(&prog, Shield::OBJECT, iface, self.object.audit_log())?;
        attachment.pin(&path)?;
        Ok(attachment)
    }

    /// Checks `attachment` (one of this Shield's) against the kernel and puts back what
    /// was undone from outside: a link detached (`bpftool link detach`) is replaced by
    /// a new one pinned in its place, a program swapped into it is swapped out, a
    /// removed pin is pinned again, each with an audit record (`repair`). `Ok(None)`:
    /// all was well; `Ok(Some(what))`: what was found and put back; an error: found
    /// undone and not put back (another XDP program holds the interface, say), so the
    /// Shield does not filter there.
    pub fn verify(&self, attachment: &mut XdpAttachment) -> Result<Option<String>> {
        let prog = self.object.program(PROGRAM)?;
        attachment.verify(&prog)
    }

    /// The drop-event ring buffer, to read together with other sources in one
    /// [`EventReader`].
    pub fn event_source(&self) -> Result<EventSource> {
        Ok(EventSource::new(
            self.object.map(EVENTS)?.handle()?,
            EVENTS,
            None,
        ))
    }

    /// Opens the drop-event ring buffer alone; each decoded event is published to
    /// `fanout`.
    pub fn events(&self, fanout: Arc<Fanout<Event>>) -> Result<EventReader> {
        EventReader::new(vec![self.event_source()?], fanout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Results come back in the items' order, each computed once, and the items run at
    /// the same time (each waits until it has seen another one running, or gives up
    /// after two seconds: run one after the other, none would see another).
    #[test]
    fn at_once_keeps_order_and_runs_together() {
        let items: Vec<u64> = (0..5).collect();
        let (calls, running, met) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let out = at_once(&items, |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            running.fetch_add(1, Ordering::SeqCst);
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(2) {
                if running.load(Ordering::SeqCst) > 1 {
                    met.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            n * 10
        });
        assert_eq!(out, [0, 10, 20, 30, 40]);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(met.load(Ordering::SeqCst) >= 2, "items ran side by side");
        let (a, b) = side_by_side(|| items.iter().sum::<u64>(), || items.len());
        assert_eq!((a, b), (10, 5));
    }
}
