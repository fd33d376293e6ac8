//! The IDS: the stateful firewall selects connections in the kernel and hands their
//! first bytes to user space, where [`ironclad_policy::ids::RuleSet`] matches them.
//!
//! The kernel side lives in the firewall's tcx programs (`bpf-src/firewall.bpf.c`):
//! when a connection opens, its server or client port (or sampling) decides whether it
//! is inspected; an inspected connection's payload, up to `depth` bytes each way, goes
//! to the `ic_ids_ring` ring buffer as snippets, every byte of it (a payload larger than
//! a snippet, such as a GSO or GRO packet, comes as several). A connection that is not
//! inspected costs one flag test per packet. [`IdsMatcher`] puts each TCP direction's
//! snippets back in sequence order and each UDP datagram's together, runs the rules
//! over the bytes so far once a packet's last snippet is in, publishes an
//! [`IdsAlert`] per rule and connection, and for a `drop` rule marks the connection
//! blocked in `ic_ids_flows`: the firewall drops its later packets both ways. The
//! packet that completed the match has already been delivered (matching is not on
//! the packet's path); the rest of the connection is not.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ironclad_core::abi::{
    CtKey, IdsConfig, IdsFlow, IdsPrefixKey, IdsSnippet, IDS_F_ALL_PORTS, IDS_F_DRY_RUN, IDS_F_ON,
    IDS_PORTS, IDS_PORT_TCP, IDS_PORT_UDP, IDS_PREFIXES, IDS_PREFIX_MAX, IDS_SNIP_INBOUND,
    IDS_SNIP_LAST, IDS_SNIP_ORIG,
};
use ironclad_events::{Event, IdsAlert};
use ironclad_policy::ids::{IdsAction, IdsRule, KernelPrefix, Packet, RuleSet, Selection};
use libbpf_rs::{MapCore as _, MapFlags, MapHandle};

use crate::error::{BpfError, Result};
use crate::events::EventSource;
use crate::firewall::Firewall;
use crate::names::firewall as names;

/// How much of each connection the kernel hands over, and what `drop` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdsSettings {
    /// Payload bytes per direction of an inspected connection (default 4096).
    pub depth: u32,
    /// Also inspect one connection in this many of those the ports do not select
    /// (0, the default: none).
    pub sample_every: u32,
    /// `drop` rules report (with `blocked: false`) but block nothing.
    pub dry_run: bool,
}

impl Default for IdsSettings {
    fn default() -> Self {
        Self {
            depth: 4096,
            sample_every: 0,
            dry_run: false,
        }
    }
}

impl IdsSettings {
    /// The largest `depth` accepted: 1 MiB per direction.
    pub const MAX_DEPTH: u32 = 1 << 20;

    /// Refuses settings the kernel cannot hold.
    pub fn check(&self) -> Result<()> {
        if self.depth == 0 || self.depth > Self::MAX_DEPTH {
            return Err(BpfError::InvalidConfig {
                field: "ids.depth",
                reason: format!(
                    "{} bytes: between 1 and {} per direction",
                    self.depth,
                    Self::MAX_DEPTH
                ),
            });
        }
        Ok(())
    }
}

/// The kernel's port table for `selection`: one byte per port, `IDS_PORT_*` bits.
fn port_table(selection: &Selection) -> Vec<u8> {
    let mut table = vec![0u8; IDS_PORTS as usize];
    for (side, bit) in [
        (&selection.tcp, IDS_PORT_TCP),
        (&selection.udp, IDS_PORT_UDP),
    ] {
        if side.all {
            table.iter_mut().for_each(|slot| *slot |= bit);
        }
        for &(lo, hi) in &side.ranges {
            for port in lo..=hi {
                if let Some(slot) = table.get_mut(usize::from(port)) {
                    *slot |= bit;
                }
            }
        }
    }
    table
}

impl Firewall {
    /// Turns the IDS selection on for the connections `selection` names (new
    /// connections from now on; open ones are not inspected). The firewall must be
    /// stateful: the selection lives in its connection table.
    pub fn set_ids(&self, settings: &IdsSettings, selection: &Selection) -> Result<()> {
        self.set_ids_with_prefixes(settings, selection, &[])
    }

    /// [`set_ids`](Self::set_ids), and the `drop` rules' contents the kernel matches
    /// itself on the packet's path ([`RuleSet::kernel_prefixes`]): the first payload
    /// packet of a direction that starts with one is dropped and its connection
    /// blocked before any of it reaches the other side.
    pub fn set_ids_with_prefixes(
        &self,
        settings: &IdsSettings,
        selection: &Selection,
        prefixes: &[KernelPrefix],
    ) -> Result<()> {
        settings.check()?;
        if !self.settings()?.stateful {
            return Err(BpfError::InvalidConfig {
                field: "ids",
                reason: "the IDS needs the stateful firewall (`stateful: true`)".to_string(),
            });
        }
        let table = port_table(selection);
        let ports = self.object().map(names::ic_ids_ports)?;
        let keys: Vec<[u8; 4]> = (0..IDS_PORTS).map(u32::to_ne_bytes).collect();
        ports.update_many(
            keys.iter()
                .zip(table.chunks(1))
                .map(|(k, v)| (k.as_slice(), v)),
        )?;
        let prefix_lens = self.set_kernel_prefixes(prefixes)?;
        let mut flags = IDS_F_ON;
        if selection.tcp.all && selection.udp.all {
            flags |= IDS_F_ALL_PORTS;
        }
        if settings.dry_run {
            flags |= IDS_F_DRY_RUN;
        }
        let config = IdsConfig {
            flags,
            depth: settings.depth,
            sample_every: settings.sample_every,
            prefix_lens,
        };
        self.object()
            .map(names::ic_ids_config)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())
    }

    /// Replaces the kernel's prefix table; the lengths present, as `prefix_lens` bits
    /// (bits 0-15 for contents of one port, 16-31 for those of any port).
    fn set_kernel_prefixes(&self, prefixes: &[KernelPrefix]) -> Result<u32> {
        if prefixes.len() > IDS_PREFIXES as usize {
            return Err(BpfError::InvalidConfig {
                field: "ids",
                reason: format!(
                    "{} drop-rule prefixes for the kernel: at most {IDS_PREFIXES}",
                    prefixes.len()
                ),
            });
        }
        let map = self.object().map(names::ic_ids_prefixes)?;
        for key in map.keys() {
            map.delete(&key)?;
        }
        let mut lens = 0u32;
        let entries: Vec<([u8; IdsPrefixKey::SIZE], [u8; 4])> = prefixes
            .iter()
            .filter(|p| (1..=IDS_PREFIX_MAX).contains(&p.bytes.len()))
            .map(|p| {
                let mut bytes = [0u8; IDS_PREFIX_MAX];
                bytes[..p.bytes.len()].copy_from_slice(&p.bytes);
                let any_port = if p.port == 0 { 16 } else { 0 };
                lens |= 1 << (any_port + p.bytes.len() - 1);
                let key = IdsPrefixKey {
                    port: p.port,
                    len: u8::try_from(p.bytes.len()).unwrap_or(0),
                    to_server: u8::from(p.to_server),
                    bytes,
                };
                (key.to_bytes(), p.sid.to_ne_bytes())
            })
            .collect();
        map.update_many(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
        Ok(lens)
    }

    /// Turns the IDS selection off: new connections are not inspected (open inspected
    /// ones keep their blocks until they end).
    pub fn clear_ids(&self) -> Result<()> {
        self.set_kernel_prefixes(&[])?;
        self.object()
            .map(names::ic_ids_config)?
            .update(&0u32.to_ne_bytes(), &IdsConfig::default().to_bytes())
    }

    /// The live IDS configuration.
    pub fn ids_config(&self) -> Result<IdsConfig> {
        let bytes = self
            .object()
            .map(names::ic_ids_config)?
            .lookup(&0u32.to_ne_bytes())?;
        Ok(bytes
            .and_then(|b| IdsConfig::from_bytes(&b))
            .unwrap_or_default())
    }

    /// The source of IDS alerts: the snippet ring buffer, matched by `matcher`. Read
    /// it with an [`EventReader`](crate::EventReader) like any other source.
    pub fn ids_source(&self, matcher: IdsMatcher) -> Result<EventSource> {
        let ring = self.object().map(names::ic_ids_ring)?.handle()?;
        let flows = self.object().map(names::ic_ids_flows)?.handle()?;
        let mut state = MatcherState {
            shared: matcher,
            flows: HashMap::new(),
            blocker: flows,
            last_sweep_ns: 0,
        };
        Ok(EventSource::with_handler(
            ring,
            names::ic_ids_ring,
            Box::new(move |record, publish| state.record(record, publish)),
        ))
    }
}

/// Counters of an [`IdsMatcher`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct IdsStats {
    snippets: AtomicU64,
    bytes: AtomicU64,
    alerts: AtomicU64,
    blocked: AtomicU64,
    gaps: AtomicU64,
}

impl IdsStats {
    /// Snippets matched.
    pub fn snippets(&self) -> u64 {
        self.snippets.load(Ordering::Relaxed)
    }

    /// Payload bytes they carried.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Alerts published (one per rule and connection).
    pub fn alerts(&self) -> u64 {
        self.alerts.load(Ordering::Relaxed)
    }

    /// Connections blocked by `drop` rules.
    pub fn blocked(&self) -> u64 {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Snippets that left a hole in their stream (a lost snippet, a segment ahead of
    /// the bytes so far): the bytes from there are put together and matched apart
    /// from those before.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }
}

/// The rules and counters of the IDS matcher, shared between the reader that runs it
/// and whoever reloads the rules or reads the counters. Cloning shares them.
#[derive(Debug, Clone)]
pub struct IdsMatcher {
    rules: Arc<RwLock<Arc<RuleSet>>>,
    dry_run: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<IdsStats>,
}

impl IdsMatcher {
    /// A matcher of `rules`; `dry_run`: `drop` rules block nothing.
    pub fn new(rules: RuleSet, dry_run: bool) -> Self {
        Self {
            rules: Arc::new(RwLock::new(Arc::new(rules))),
            dry_run: Arc::new(std::sync::atomic::AtomicBool::new(dry_run)),
            stats: Arc::new(IdsStats::default()),
        }
    }

    /// Replaces the rules (connections already alerted on keep their alerts).
    pub fn set_rules(&self, rules: RuleSet, dry_run: bool) {
        if let Ok(mut live) = self.rules.write() {
            *live = Arc::new(rules);
        }
        self.dry_run.store(dry_run, Ordering::Relaxed);
    }

    /// The rules in force.
    pub fn rules(&self) -> Option<Arc<RuleSet>> {
        self.rules.read().ok().map(|r| Arc::clone(&r))
    }

    /// The counters.
    pub fn stats(&self) -> &IdsStats {
        &self.stats
    }
}

/// The bytes of one direction of a TCP connection in sequence order, or of the UDP
/// datagram being put together.
#[derive(Debug, Default)]
struct Stream {
    /// Sequence number of `bytes[0]` (UDP: 0, the datagram's start).
    base: Option<u32>,
    bytes: Vec<u8>,
    /// Past a hole (a lost snippet, or a segment ahead of the bytes so far): the bytes
    /// put together from there, with the sequence number of their first. The stream
    /// itself stays as it was, so that a forged segment ahead of it cannot cut it.
    island: Option<(u32, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct FlowState {
    streams: [Stream; 2],
    alerted: Vec<u32>,
    reply_seen: bool,
    last_ns: u64,
}

/// Connections the matcher remembers; past this, the least recently seen half goes.
const MAX_FLOWS: usize = 65_536;
/// A connection with no snippet for this long is forgotten (it ended, or has sent its
/// `depth`): its stream bytes are freed.
const IDLE_NS: u64 = 60_000_000_000;
/// How often the idle ones are looked for.
const SWEEP_NS: u64 = 5_000_000_000;
/// The stream bytes held for all connections at most; past it, the least recently
/// seen half of the connections goes.
const BUFFER_BUDGET: usize = 64 << 20;

struct MatcherState {
    shared: IdsMatcher,
    flows: HashMap<[u8; CtKey::SIZE], FlowState>,
    blocker: MapHandle,
    last_sweep_ns: u64,
}

fn ip_of(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl MatcherState {
    /// One snippet: place it, match, report, block. `false` for a record that is not
    /// a snippet.
    fn record(&mut self, record: &[u8], publish: &mut dyn FnMut(Event)) -> bool {
        let Some(snippet) = IdsSnippet::from_bytes(record) else {
            return false;
        };
        if record.len() != IdsSnippet::SIZE {
            return false;
        }
        let stats = Arc::clone(&self.shared.stats);
        stats.snippets.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(u64::from(snippet.len), Ordering::Relaxed);
        let Some(rules) = self.shared.rules() else {
            return true;
        };
        let now = snippet.hdr.ktime_ns;
        if now.saturating_sub(self.last_sweep_ns) >= SWEEP_NS {
            self.last_sweep_ns = now;
            self.flows
                .retain(|_, f| now.saturating_sub(f.last_ns) < IDLE_NS);
            while self.buffered() > BUFFER_BUDGET && !self.flows.is_empty() {
                self.forget_oldest();
            }
        }
        if self.flows.len() >= MAX_FLOWS {
            self.forget_oldest();
        }
        let key: [u8; CtKey::SIZE] = snippet.key.to_bytes();
        let flow = self.flows.entry(key).or_default();
        flow.last_ns = snippet.hdr.ktime_ns;
        let orig = snippet.flags & IDS_SNIP_ORIG != 0;
        if !orig {
            flow.reply_seen = true;
        }
        let payload = snippet.payload();
        let tcp = snippet.proto == 6;
        // TCP: the direction's bytes so far, in order; UDP: the datagram so far (its
        // snippets come in order, the first at 0).
        let stream = &mut flow.streams[usize::from(!orig)];
        if !tcp && snippet.seq == 0 {
            stream.bytes.clear();
            stream.base = Some(0);
            stream.island = None;
        }
        let matched = place(stream, &snippet, payload, &stats);
        // A packet is matched once its last snippet is in (so a rule sees a datagram
        // whole, and a stream is matched once per packet, not once per snippet).
        if snippet.flags & IDS_SNIP_LAST == 0 {
            return true;
        }
        let (src, dst) = (ip_of(snippet.src), ip_of(snippet.dst));
        let packet = Packet {
            protocol: snippet.proto,
            src: SocketAddr::new(src, snippet.sport),
            dst: SocketAddr::new(dst, snippet.dport),
            to_server: orig,
            established: tcp || flow.reply_seen,
            payload: matched,
        };
        let hits = rules.matches(&packet);
        if hits.iter().any(|r| r.action == IdsAction::Pass) {
            return true;
        }
        let fresh: Vec<&IdsRule> = hits
            .into_iter()
            .filter(|r| !flow.alerted.contains(&r.sid))
            .collect();
        if fresh.is_empty() {
            return true;
        }
        flow.alerted.extend(fresh.iter().map(|r| r.sid));
        let dry_run = self.shared.dry_run.load(Ordering::Relaxed);
        let block = !dry_run && fresh.iter().any(|r| r.action == IdsAction::Drop);
        let blocked = block && self.block(&snippet.key);
        if blocked {
            stats.blocked.fetch_add(1, Ordering::Relaxed);
        }
        for rule in fresh {
            stats.alerts.fetch_add(1, Ordering::Relaxed);
            publish(Event::IdsAlert({
                let mut ev = IdsAlert::new(src, dst);
                ev.ktime_ns = snippet.hdr.ktime_ns;
                ev.sid = rule.sid;
                ev.rev = rule.rev;
                ev.msg = rule.msg.clone();
                ev.action = if rule.action == IdsAction::Drop {
                    "drop"
                } else {
                    "alert"
                };
                ev.blocked = blocked && rule.action == IdsAction::Drop;
                ev.classtype = rule.classtype.clone();
                ev.priority = rule.priority;
                ev.origin = rule.origin.clone();
                ev.proto = if tcp { "tcp" } else { "udp" };
                ev.sport = snippet.sport;
                ev.dport = snippet.dport;
                ev.direction = if orig { "to_server" } else { "to_client" };
                ev.inbound = snippet.flags & IDS_SNIP_INBOUND != 0;
                ev.ifindex = snippet.ifindex;
                ev.pid = snippet.pid;
                ev.cgroup_id = snippet.cgroup_id;
                ev
            }));
        }
        true
    }

    /// Marks the connection blocked in the kernel; `false` when it is gone from the
    /// kernel's table (it ended, or was forgotten).
    fn block(&self, key: &CtKey) -> bool {
        let key_bytes: [u8; CtKey::SIZE] = key.to_bytes();
        let current = match self.blocker.lookup(&key_bytes, MapFlags::ANY) {
            Ok(Some(bytes)) => IdsFlow::from_bytes(&bytes).unwrap_or_default(),
            _ => return false,
        };
        let value = IdsFlow {
            blocked: 1,
            ..current
        };
        // EXIST: never re-create an entry the connection's end already removed.
        self.blocker
            .update(&key_bytes, &value.to_bytes(), MapFlags::EXIST)
            .is_ok()
    }

    /// Stream bytes held, all connections together.
    fn buffered(&self) -> usize {
        self.flows
            .values()
            .flat_map(|f| f.streams.iter())
            .map(|s| s.bytes.capacity() + s.island.as_ref().map_or(0, |(_, b)| b.capacity()))
            .sum()
    }

    fn forget_oldest(&mut self) {
        let mut ages: Vec<u64> = self.flows.values().map(|f| f.last_ns).collect();
        ages.sort_unstable();
        let cut = ages.get(ages.len() / 2).copied().unwrap_or(u64::MAX);
        self.flows.retain(|_, f| f.last_ns > cut);
    }
}

/// Puts a snippet into its stream and returns the bytes to match: the stream so far.
/// A retransmission or overlap keeps the bytes first seen (as a receiver does). A
/// snippet past the end of the stream (after a hole) starts an island, which the
/// snippets after it continue: they are put together and matched from there, never
/// joined to the bytes before the hole.
fn place<'a>(
    stream: &'a mut Stream,
    snippet: &IdsSnippet,
    payload: &[u8],
    stats: &IdsStats,
) -> &'a [u8] {
    let seq = snippet.seq;
    let base = *stream
        .base
        .get_or_insert_with(|| seq.wrapping_sub(snippet.offset));
    let have = stream.bytes.len();
    // Where the payload starts relative to the stream's first byte: negative for a
    // retransmission of bytes from before it (streams are at most MAX_DEPTH long).
    let delta = i64::from(seq.wrapping_sub(base).cast_signed());
    let have_i = i64::try_from(have).unwrap_or(i64::MAX);
    if delta <= have_i {
        let skip = usize::try_from(have_i - delta).unwrap_or(usize::MAX);
        stream
            .bytes
            .extend_from_slice(payload.get(skip..).unwrap_or_default());
        return &stream.bytes;
    }
    let max = IdsSettings::MAX_DEPTH as usize;
    let continues = stream.island.as_ref().is_some_and(|(start, bytes)| {
        seq.wrapping_sub(*start) as usize == bytes.len() && bytes.len() + payload.len() <= max
    });
    if !continues {
        stats.gaps.fetch_add(1, Ordering::Relaxed);
        stream.island = Some((seq, Vec::new()));
    }
    match &mut stream.island {
        Some((_, bytes)) => {
            bytes.extend_from_slice(payload);
            bytes
        }
        None => &stream.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironclad_policy::ids::PortSelection;

    fn snippet(seq: u32, offset: u32, data: &[u8]) -> IdsSnippet {
        let mut s = IdsSnippet::from_bytes(&[0u8; IdsSnippet::SIZE]).expect("zeroes");
        s.seq = seq;
        s.offset = offset;
        s.len = u16::try_from(data.len()).unwrap_or(0);
        s.data[..data.len()].copy_from_slice(data);
        s
    }

    #[test]
    fn a_stream_is_put_back_in_order_and_a_hole_is_not_papered_over() {
        let stats = IdsStats::default();
        let mut stream = Stream::default();
        let first = snippet(1000, 0, b"GET /ev");
        assert_eq!(
            place(&mut stream, &first, first.payload(), &stats),
            b"GET /ev"
        );
        let second = snippet(1007, 7, b"il HTTP/1.1");
        assert_eq!(
            place(&mut stream, &second, second.payload(), &stats),
            b"GET /evil HTTP/1.1"
        );
        // A retransmission of the first segment changes nothing.
        let again = snippet(1000, 18, b"GET /ev");
        assert_eq!(
            place(&mut stream, &again, again.payload(), &stats),
            b"GET /evil HTTP/1.1"
        );
        // A segment past a hole: matched from there, never joined to the bytes before;
        // the segments after it are put together with it.
        let later = snippet(1100, 25, b"tail ");
        assert_eq!(
            place(&mut stream, &later, later.payload(), &stats),
            b"tail "
        );
        let next = snippet(1105, 30, b"end");
        assert_eq!(
            place(&mut stream, &next, next.payload(), &stats),
            b"tail end"
        );
        assert_eq!(stats.gaps(), 1);
        // The stream itself is not cut by it: the segment that continues it (the one
        // the receiver takes) still joins the bytes before.
        let resumed = snippet(1018, 35, b" more");
        assert_eq!(
            place(&mut stream, &resumed, resumed.payload(), &stats),
            b"GET /evil HTTP/1.1 more"
        );
        // A retransmission that starts before the stream's first byte and brings new
        // bytes at its end adds only those.
        let overlapping = snippet(995, 40, b"xxxxxGET /evil HTTP/1.1 more!");
        assert_eq!(
            place(&mut stream, &overlapping, overlapping.payload(), &stats),
            b"GET /evil HTTP/1.1 more!"
        );
        assert_eq!(stats.gaps(), 1);
    }

    #[test]
    fn the_port_table_marks_each_selected_port_for_its_protocol() {
        let selection = Selection {
            tcp: PortSelection {
                all: false,
                ranges: vec![(80, 80), (8000, 8002)],
            },
            udp: PortSelection {
                all: false,
                ranges: vec![(53, 53), (80, 80)],
            },
        };
        let table = port_table(&selection);
        assert_eq!(table[80], IDS_PORT_TCP | IDS_PORT_UDP);
        assert_eq!(table[8001], IDS_PORT_TCP);
        assert_eq!(table[53], IDS_PORT_UDP);
        assert_eq!(table[22], 0);
        assert_eq!(table.iter().filter(|b| **b != 0).count(), 5);
    }

    #[test]
    fn settings_outside_the_kernels_bounds_are_refused() {
        assert!(IdsSettings::default().check().is_ok());
        for depth in [0, IdsSettings::MAX_DEPTH + 1] {
            let settings = IdsSettings {
                depth,
                ..IdsSettings::default()
            };
            assert!(settings.check().is_err(), "{depth}");
        }
    }
}
