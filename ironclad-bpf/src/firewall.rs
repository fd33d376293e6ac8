//! The stateful firewall's connection tracking (`bpf-src/firewall.bpf.c`): two tcx
//! programs on an interface's ingress and egress share one connection table, so
//! replies to the host's own connections pass and packets that belong to no connection
//! are dropped as invalid. New connections in each direction meet a default policy
//! (`accept` or `drop`).
//!
//! Rules (first match wins, compiled by `ironclad_policy::firewall` into a bit-vector
//! classifier), reject, rate limits, flow records, NAT ([`Firewall::set_nat`]), SYN
//! cookies and IDS selection run in the same programs; the reference daemon starts it
//! from the policy's `firewall:` section. See docs/firewall.md.
//!
//! ```no_run
//! use ironclad_bpf::{Firewall, FirewallSettings, Loader};
//!
//! let loader = Loader::builder().build()?;
//! let firewall = Firewall::load(&loader)?;
//! // Nothing new comes in; replies to what the host opens do.
//! firewall.configure(&FirewallSettings::default().drop_inbound(true))?;
//! let _attached = firewall.attach_pinned("eth0")?;
//! for c in firewall.connections()? {
//!     println!("{} {}:{} {}", c.proto, c.lo, c.lo_port, c.state.name());
//! }
//! # Ok::<(), ironclad_bpf::BpfError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use ironclad_core::abi::{
    Counter, CtEntry, CtKey, CtState, FwConfig, FwDefaultLog, FwFlowEvent, FwRuleEntry, FwTotal,
    CT_F_INBOUND, CT_F_INSPECT, CT_F_ORIG_LO, CT_F_RECORD, CT_F_RESET, FW_ACCEPT, FW_BUCKETS,
    FW_DIM_DPORT, FW_DIM_DST, FW_DIM_SPORT, FW_DIM_SRC, FW_DROP, FW_END_FIN, FW_END_RESET,
    FW_END_TIMEOUT, FW_FLOW_END, FW_FLOW_INBOUND, FW_F_DROP_IN, FW_F_DROP_OUT, FW_F_DRY_RUN,
    FW_F_FLOWS, FW_F_STATEFUL, FW_MAX_RULES, FW_PROTOS, FW_REJECT, FW_RULE_FLOWS, FW_RULE_LOG,
    SYN_ALWAYS, SYN_OFF, SYN_PORT_WORDS, SYN_UNDER_ATTACK,
};
use ironclad_core::abi::{FwLimitConfig, FwLimitRate};
pub use ironclad_core::abi::{FwLimitKind, SynConfig, SynState};
use ironclad_policy::firewall::{
    Classifier, Direction, FirewallPolicy, FwAction, FwRule, PacketProto,
};
use libbpf_rs::{AsRawLibbpf, Link, MapCore, MapFlags, MapHandle};

use crate::attach::{remove_dead_link_pin, XdpAttachment};
use crate::auditlog::{AuditAction, AuditLog};
use crate::classes::{self, ClassImages};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};
use crate::names::firewall as names;
use crate::tc::{priority, TcMechanism, TcPrograms};
use crate::{BpfError, Result};
use ironclad_events::{Event, Fanout, FlowRecord};

mod nat;
pub use nat::{interface_address, Forward, NatSettings, NatStatus, SourceNat, Translation};

/// The connection table's size unless set ([`Firewall::load_with_table`]).
pub const DEFAULT_TABLE_SIZE: u32 = 262_144;

/// The firewall's default policy and connection timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirewallSettings {
    /// New inbound connections are dropped (`default_inbound: drop`).
    pub drop_inbound: bool,
    /// New outbound connections are dropped (`default_outbound: drop`).
    pub drop_outbound: bool,
    /// Track connections and drop packets that belong to none (default `true`).
    pub stateful: bool,
    /// Count what would be dropped and pass it.
    pub dry_run: bool,
    /// Flow records for every connection (else only for rules with `flows: true`).
    pub flows: bool,
    /// Idle seconds per TCP state, indexed by [`CtState`].
    pub tcp_timeout: [u32; CtState::COUNT],
    /// Idle seconds of a UDP flow seen one way.
    pub udp_timeout: u32,
    /// Idle seconds of an answered UDP flow.
    pub udp_stream_timeout: u32,
    /// Idle seconds of an ICMP echo flow.
    pub icmp_timeout: u32,
    /// At most this many [`FirewallMatch`](ironclad_events::FirewallMatch) events a
    /// second (rule `default`) for packets the default policy drops; 0: none.
    pub log_default_drops: u32,
}

impl Default for FirewallSettings {
    /// Accept in both directions, stateful, with the Linux conntrack defaults
    /// (established TCP: 5 days).
    fn default() -> Self {
        Self {
            drop_inbound: false,
            drop_outbound: false,
            stateful: true,
            dry_run: false,
            flows: false,
            // new (unused for TCP), syn_sent, syn_recv, established, fin_wait, closing
            tcp_timeout: [120, 120, 60, 432_000, 120, 10],
            udp_timeout: 30,
            udp_stream_timeout: 120,
            icmp_timeout: 30,
            log_default_drops: ironclad_policy::firewall::DEFAULT_LOG_DEFAULT_DROPS,
        }
    }
}

impl FirewallSettings {
    /// Sets `default_inbound: drop` (`true`) or `accept`.
    pub fn drop_inbound(mut self, drop: bool) -> Self {
        self.drop_inbound = drop;
        self
    }

    /// Sets `default_outbound: drop` (`true`) or `accept`.
    pub fn drop_outbound(mut self, drop: bool) -> Self {
        self.drop_outbound = drop;
        self
    }

    /// Sets whether connections are tracked.
    pub fn stateful(mut self, stateful: bool) -> Self {
        self.stateful = stateful;
        self
    }

    /// Sets dry-run.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets whether every connection gets flow records (its start and end as
    /// [`FlowRecord`] events), not only those admitted by a
    /// rule with `flows: true`.
    pub fn flows(mut self, flows: bool) -> Self {
        self.flows = flows;
        self
    }

    /// Sets how many of the default policy's drops a second are reported (sampled; 0:
    /// none).
    pub fn log_default_drops(mut self, per_second: u32) -> Self {
        self.log_default_drops = per_second;
        self
    }

    /// The settings a policy's `firewall:` section asks for: its defaults, mode,
    /// `stateful` and timeouts (a TCP connection whose both sides closed keeps the
    /// Linux 10 s).
    pub fn from_policy(policy: &FirewallPolicy) -> Self {
        let t = policy.timeouts;
        let mut settings = Self::default()
            .drop_inbound(policy.default_inbound != FwAction::Accept)
            .drop_outbound(policy.default_outbound != FwAction::Accept)
            .stateful(policy.stateful)
            .dry_run(policy.dry_run)
            .flows(policy.flows)
            .log_default_drops(policy.log_default_drops);
        settings.tcp_timeout[CtState::New as usize] = t.tcp_handshake;
        settings.tcp_timeout[CtState::SynSent as usize] = t.tcp_handshake;
        settings.tcp_timeout[CtState::SynRecv as usize] = t.tcp_handshake;
        settings.tcp_timeout[CtState::Established as usize] = t.tcp_established;
        settings.tcp_timeout[CtState::FinWait as usize] = t.tcp_closing;
        settings.udp_timeout = t.udp;
        settings.udp_stream_timeout = t.udp_stream;
        settings.icmp_timeout = t.icmp;
        settings
    }

    fn to_config(self, slot: u32) -> FwConfig {
        let mut flags = 0;
        for (on, flag) in [
            (self.drop_inbound, FW_F_DROP_IN),
            (self.drop_outbound, FW_F_DROP_OUT),
            (self.stateful, FW_F_STATEFUL),
            (self.dry_run, FW_F_DRY_RUN),
            (self.flows, FW_F_FLOWS),
        ] {
            if on {
                flags |= flag;
            }
        }
        FwConfig {
            flags,
            slot,
            tcp_timeout: self.tcp_timeout,
            udp_timeout: self.udp_timeout,
            udp_stream_timeout: self.udp_stream_timeout,
            icmp_timeout: self.icmp_timeout,
        }
    }

    fn from_config(c: FwConfig) -> Self {
        Self {
            drop_inbound: c.flags & FW_F_DROP_IN != 0,
            drop_outbound: c.flags & FW_F_DROP_OUT != 0,
            stateful: c.flags & FW_F_STATEFUL != 0,
            dry_run: c.flags & FW_F_DRY_RUN != 0,
            flows: c.flags & FW_F_FLOWS != 0,
            tcp_timeout: c.tcp_timeout,
            udp_timeout: c.udp_timeout,
            udp_stream_timeout: c.udp_stream_timeout,
            icmp_timeout: c.icmp_timeout,
            log_default_drops: 0,
        }
    }

    /// The settings of `config` with the default-drop reports' rate from `log` (the
    /// map's entry; none: 0).
    fn read_back(config: FwConfig, log: Option<Vec<u8>>) -> Self {
        let mut settings = Self::from_config(config);
        settings.log_default_drops = log
            .and_then(|b| FwDefaultLog::from_bytes(&b))
            .map_or(0, |l| l.per_sec);
        settings
    }

    /// Seconds an entry in `state` of protocol `proto` may stay idle.
    fn timeout(&self, proto: u8, state: CtState) -> u64 {
        u64::from(match proto {
            6 => self.tcp_timeout[state as usize],
            17 if state == CtState::Established => self.udp_stream_timeout,
            17 => self.udp_timeout,
            _ => self.icmp_timeout,
        })
    }
}

/// When the SYN-flood defence answers SYNs with cookies (`firewall.syn_flood.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SynMode {
    /// Never: SYNs go to the tcx programs and the listener as usual.
    #[default]
    Off,
    /// Every SYN to a protected port.
    Always,
    /// While SYNs to protected ports arrive faster than the threshold (and for the hold
    /// time after).
    UnderAttack,
}

impl SynMode {
    /// Stable lower-case name (`off`, `always`, `under_attack`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Always => "always",
            Self::UnderAttack => "under_attack",
        }
    }

    fn code(self) -> u32 {
        match self {
            Self::Off => SYN_OFF,
            Self::Always => SYN_ALWAYS,
            Self::UnderAttack => SYN_UNDER_ATTACK,
        }
    }

    fn from_code(code: u32) -> Self {
        match code {
            SYN_ALWAYS => Self::Always,
            SYN_UNDER_ATTACK => Self::UnderAttack,
            _ => Self::Off,
        }
    }
}

/// The SYN-flood defence (`firewall.syn_flood`): SYNs to `ports` are answered in XDP
/// with the kernel's SYN cookies, and only a completed handshake reaches the listener
/// or the connection table. See docs/firewall.md.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SynFloodSettings {
    /// When cookies answer.
    pub mode: SynMode,
    /// The protected TCP ports.
    pub ports: BTreeSet<u16>,
    /// [`SynMode::UnderAttack`]: SYNs a second (to every protected port together) from
    /// which cookies answer.
    pub threshold_pps: u32,
    /// [`SynMode::UnderAttack`]: how long cookies keep answering after the rate last
    /// exceeded the threshold, in milliseconds.
    pub hold_ms: u32,
    /// The MSS announced in IPv4 SYN-ACKs (the interface's MTU minus 40).
    pub mss4: u16,
    /// The MSS announced in IPv6 SYN-ACKs (the interface's MTU minus 60).
    pub mss6: u16,
    /// The window scale announced to clients that offer one (Linux picks 7 for its
    /// default buffers).
    pub wscale: u8,
}

impl Default for SynFloodSettings {
    fn default() -> Self {
        Self {
            mode: SynMode::Off,
            ports: BTreeSet::new(),
            threshold_pps: 0,
            hold_ms: 10_000,
            mss4: 1460,
            mss6: 1440,
            wscale: 7,
        }
    }
}

impl SynFloodSettings {
    /// Cookies for every SYN to `ports`.
    pub fn always(ports: impl IntoIterator<Item = u16>) -> Self {
        Self {
            mode: SynMode::Always,
            ports: ports.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Cookies for SYNs to `ports` while more than `threshold_pps` arrive a second.
    pub fn under_attack(ports: impl IntoIterator<Item = u16>, threshold_pps: u32) -> Self {
        Self {
            mode: SynMode::UnderAttack,
            ports: ports.into_iter().collect(),
            threshold_pps,
            ..Self::default()
        }
    }

    /// The settings a policy's `firewall.syn_flood` asks for, announcing the MSS of an
    /// interface MTU of `mtu`.
    pub fn from_policy(policy: &ironclad_policy::firewall::SynFloodPolicy, mtu: u32) -> Self {
        let mode = match policy.mode {
            ironclad_policy::firewall::SynFloodMode::UnderAttack => SynMode::UnderAttack,
            _ => SynMode::Always,
        };
        Self {
            mode,
            ports: policy.port_set(),
            threshold_pps: policy.threshold_pps,
            hold_ms: policy.hold_seconds.saturating_mul(1000),
            ..Self::default()
        }
        .mtu(mtu)
    }

    /// Sets the hold time of [`SynMode::UnderAttack`].
    pub fn hold_ms(mut self, hold_ms: u32) -> Self {
        self.hold_ms = hold_ms;
        self
    }

    /// Sets the announced MSS for both families from an interface MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mss4 = u16::try_from(mtu.saturating_sub(40)).unwrap_or(u16::MAX);
        self.mss6 = u16::try_from(mtu.saturating_sub(60)).unwrap_or(u16::MAX);
        self
    }

    /// Checks the settings as [`Firewall::set_syn_flood`] does, writing nothing.
    pub fn check(&self) -> Result<()> {
        let invalid =
            |field: &'static str, reason: String| Err(BpfError::InvalidConfig { field, reason });
        if self.mode == SynMode::Off {
            return Ok(());
        }
        if self.ports.is_empty() {
            return invalid("syn_flood.ports", "no port to protect".to_string());
        }
        if self.ports.contains(&0) {
            return invalid("syn_flood.ports", "port 0 cannot be protected".to_string());
        }
        if self.mode == SynMode::UnderAttack && self.threshold_pps == 0 {
            return invalid(
                "syn_flood.threshold_pps",
                "under_attack needs a threshold above 0 SYNs a second".to_string(),
            );
        }
        if self.mss4 < 536 {
            return invalid("syn_flood.mss4", format!("{} is below 536", self.mss4));
        }
        if self.mss6 < 1220 {
            return invalid("syn_flood.mss6", format!("{} is below 1220", self.mss6));
        }
        if self.wscale > 14 {
            return invalid(
                "syn_flood.wscale",
                format!("{} is more than 14, TCP's largest", self.wscale),
            );
        }
        Ok(())
    }

    /// [`check`](Self::check), and whether this host can turn the defence on: a
    /// kernel of 6.9 or later, and `net.ipv4.tcp_syncookies` not 0. What
    /// [`Firewall::set_syn_flood`] checks before it writes anything, so a caller can
    /// check first and write other state after.
    pub fn preflight(&self) -> Result<()> {
        self.check()?;
        if self.mode != SynMode::Off {
            if let Some(running) = older_than((6, 9)) {
                return Err(BpfError::KernelTooOld {
                    feature: "the SYN-flood defence (bpf_sk_assign_tcp_reqsk)",
                    needs: "6.9",
                    running,
                    source: None,
                });
            }
            // The kernel takes a request made from a cookie only while SYN cookies are
            // on in its namespace: with 0 every protected connection would be reset.
            let sysctl = std::fs::read_to_string(SYNCOOKIES_SYSCTL).unwrap_or_default();
            if sysctl.trim() == "0" {
                return Err(BpfError::InvalidConfig {
                    field: "syn_flood",
                    reason: format!(
                        "{SYNCOOKIES_SYSCTL} is 0, and the kernel refuses the connections the cookies complete (each would be reset); set net.ipv4.tcp_syncookies to 1 (the default)"
                    ),
                });
            }
        }
        Ok(())
    }

    fn to_config(&self) -> SynConfig {
        SynConfig {
            mode: self.mode.code(),
            threshold_pps: self.threshold_pps,
            hold_ms: self.hold_ms,
            mss4: self.mss4,
            mss6: self.mss6,
            wscale: self.wscale,
            _pad0: [0; 3],
        }
    }

    fn from_config(c: SynConfig, ports: BTreeSet<u16>) -> Self {
        Self {
            mode: SynMode::from_code(c.mode),
            ports,
            threshold_pps: c.threshold_pps,
            hold_ms: c.hold_ms,
            mss4: c.mss4,
            mss6: c.mss6,
            wscale: c.wscale,
        }
    }
}

/// Where the kernel says whether it takes SYN cookies (this network namespace's).
const SYNCOOKIES_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_syncookies";

/// The protected-port bitmap's words (bit `p % 64` of word `p / 64`).
fn port_words(ports: &BTreeSet<u16>) -> Vec<u64> {
    let mut words = vec![0u64; SYN_PORT_WORDS as usize];
    for &p in ports {
        if let Some(w) = words.get_mut(usize::from(p / 64)) {
            *w |= 1 << (p % 64);
        }
    }
    words
}

fn read_syn(config: &impl MapRead, ports: &impl MapRead) -> Result<SynFloodSettings> {
    let c = config
        .get(&0u32.to_ne_bytes())?
        .and_then(|b| SynConfig::from_bytes(&b))
        .unwrap_or_default();
    let mut set = BTreeSet::new();
    for word in 0..SYN_PORT_WORDS {
        let Some(bytes) = ports.get(&word.to_ne_bytes())? else {
            continue;
        };
        let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) else {
            continue;
        };
        let bits = u64::from_ne_bytes(raw);
        for bit in 0..64u32 {
            if bits >> bit & 1 == 1 {
                if let Ok(port) = u16::try_from(word * 64 + bit) {
                    set.insert(port);
                }
            }
        }
    }
    Ok(SynFloodSettings::from_config(c, set))
}

fn read_syn_state(state: &impl MapRead) -> Result<SynState> {
    Ok(state
        .get(&0u32.to_ne_bytes())?
        .and_then(|b| SynState::from_bytes(&b))
        .unwrap_or_default())
}

/// One rate limit: a token bucket of `burst` new connections refilled at
/// `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LimitRate {
    /// New connections a second, at least 1.
    pub per_second: u32,
    /// Connections a full bucket admits at once, at least 1.
    pub burst: u32,
}

impl LimitRate {
    /// `per_second` a second after a burst of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// Rate limits on new inbound connections (`firewall.limits`), each a token bucket
/// shared by every CPU: per source address, per source subnet, per destination port,
/// and a ceiling per interface. A connection the rules admit takes a token from each
/// configured limit, narrowest first; the first with none left drops it (and is
/// counted in its own total, [`FwLimitKind::total`], and reported as a
/// `firewall_limit` event), and the wider ones are not charged. They need connection
/// tracking ([`FirewallSettings::stateful`]). See docs/firewall.md, "Rate limits".
///
/// ```
/// use ironclad_bpf::{LimitRate, LimitSettings};
///
/// let limits = LimitSettings::default()
///     .per_subnet(LimitRate::new(100, 200), 24, 64)
///     .per_interface(LimitRate::new(5_000, 10_000));
/// limits.check()?;
/// # Ok::<(), ironclad_bpf::BpfError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitSettings {
    /// One bucket per source address.
    pub per_source: Option<LimitRate>,
    /// One bucket per source subnet of `v4_prefix` / `v6_prefix` bits.
    pub per_subnet: Option<LimitRate>,
    /// The subnet limit's IPv4 prefix length (1-32; default 24).
    pub v4_prefix: u8,
    /// The subnet limit's IPv6 prefix length (1-128; default 64).
    pub v6_prefix: u8,
    /// One bucket per protocol and destination port (ICMP: one per protocol).
    pub per_port: Option<LimitRate>,
    /// One bucket per interface: a ceiling on every source together.
    pub per_interface: Option<LimitRate>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            per_source: None,
            per_subnet: None,
            v4_prefix: 24,
            v6_prefix: 64,
            per_port: None,
            per_interface: None,
        }
    }
}

impl LimitSettings {
    /// Sets the per-source limit.
    pub fn per_source(mut self, rate: LimitRate) -> Self {
        self.per_source = Some(rate);
        self
    }

    /// Sets the per-subnet limit and the subnets' prefix lengths.
    pub fn per_subnet(mut self, rate: LimitRate, v4_prefix: u8, v6_prefix: u8) -> Self {
        self.per_subnet = Some(rate);
        self.v4_prefix = v4_prefix;
        self.v6_prefix = v6_prefix;
        self
    }

    /// Sets the per-destination-port limit.
    pub fn per_port(mut self, rate: LimitRate) -> Self {
        self.per_port = Some(rate);
        self
    }

    /// Sets the interface ceiling.
    pub fn per_interface(mut self, rate: LimitRate) -> Self {
        self.per_interface = Some(rate);
        self
    }

    /// The limits a policy's `firewall.limits` asks for (none without the section).
    pub fn from_policy(policy: Option<&ironclad_policy::firewall::LimitsPolicy>) -> Self {
        let Some(p) = policy else {
            return Self::default();
        };
        let rate = |r: Option<ironclad_policy::firewall::RuleRate>| {
            r.map(|r| LimitRate::new(r.per_second, r.burst))
        };
        Self {
            per_source: rate(p.per_source),
            per_subnet: rate(p.per_subnet),
            v4_prefix: p.ipv4_prefix,
            v6_prefix: p.ipv6_prefix,
            per_port: rate(p.per_port),
            per_interface: rate(p.per_interface),
        }
    }

    /// The limit of `kind`.
    pub fn get(&self, kind: FwLimitKind) -> Option<LimitRate> {
        match kind {
            FwLimitKind::Source => self.per_source,
            FwLimitKind::Subnet => self.per_subnet,
            FwLimitKind::Port => self.per_port,
            _ => self.per_interface,
        }
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        FwLimitKind::ALL.iter().any(|k| self.get(*k).is_some())
    }

    /// Checks the settings as [`Firewall::set_limits`] does, writing nothing.
    pub fn check(&self) -> Result<()> {
        for kind in FwLimitKind::ALL {
            let Some(rate) = self.get(kind) else {
                continue;
            };
            let field = match kind {
                FwLimitKind::Source => "limits.per_source",
                FwLimitKind::Subnet => "limits.per_subnet",
                FwLimitKind::Port => "limits.per_port",
                _ => "limits.per_interface",
            };
            if rate.per_second == 0 || rate.burst == 0 {
                return Err(BpfError::InvalidConfig {
                    field,
                    reason: "`per_second` and `burst` must be at least 1".to_string(),
                });
            }
        }
        if !(1..=32).contains(&self.v4_prefix) {
            return Err(BpfError::InvalidConfig {
                field: "limits.per_subnet.ipv4_prefix",
                reason: format!("{} is outside 1..=32", self.v4_prefix),
            });
        }
        if !(1..=128).contains(&self.v6_prefix) {
            return Err(BpfError::InvalidConfig {
                field: "limits.per_subnet.ipv6_prefix",
                reason: format!("{} is outside 1..=128", self.v6_prefix),
            });
        }
        Ok(())
    }

    fn to_config(self) -> FwLimitConfig {
        let mut c = FwLimitConfig {
            v4_prefix: self.v4_prefix,
            v6_prefix: self.v6_prefix,
            ..FwLimitConfig::default()
        };
        for (slot, kind) in c.rates.iter_mut().zip(FwLimitKind::ALL) {
            if let Some(r) = self.get(kind) {
                *slot = FwLimitRate {
                    per_sec: r.per_second,
                    burst: r.burst,
                };
            }
        }
        c
    }

    fn from_config(c: FwLimitConfig) -> Self {
        let rate = |r: FwLimitRate| (r.per_sec != 0).then(|| LimitRate::new(r.per_sec, r.burst));
        let [source, subnet, port, interface] = c.rates;
        Self {
            per_source: rate(source),
            per_subnet: rate(subnet),
            v4_prefix: if c.v4_prefix == 0 { 24 } else { c.v4_prefix },
            v6_prefix: if c.v6_prefix == 0 { 64 } else { c.v6_prefix },
            per_port: rate(port),
            per_interface: rate(interface),
        }
    }
}

fn read_limits(config: &impl MapRead) -> Result<LimitSettings> {
    Ok(LimitSettings::from_config(
        config
            .get(&0u32.to_ne_bytes())?
            .and_then(|b| FwLimitConfig::from_bytes(&b))
            .unwrap_or_default(),
    ))
}

/// Sets the `rule` of a firewall event from `labels` (rule id 0: the default policy).
fn name_rule(labels: &Labels, event: &mut Event) {
    let (id, rule) = match event {
        Event::FirewallMatch(m) => (m.rule_id, &mut m.rule),
        Event::Flow(f) => (f.rule_id, &mut f.rule),
        _ => return,
    };
    if id == 0 {
        *rule = Some(DEFAULT_RULE_NAME.to_string());
    } else if let Some(label) = labels
        .read()
        .ok()
        .and_then(|l| l.get(&id).map(|l| l.name.clone()))
    {
        *rule = Some(label);
    }
}

/// What [`Firewall::replace`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirewallReport {
    /// Rules in the policy.
    pub rules: usize,
    /// Direction and protocol buckets with at least one rule.
    pub buckets: usize,
    /// Distinct classes (bitmaps) over every dimension.
    pub classes: usize,
    /// Map entries written.
    pub entries: usize,
    /// The slot now live.
    pub slot: u32,
    /// Each rule's counter id, in rule order ([`Firewall::rule_counters`] reports by id).
    pub ids: Vec<u32>,
}

/// What `full_firewall status` shows of a firewall, read from its pins.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirewallStatus {
    /// The live settings.
    pub settings: FirewallSettings,
    /// Every total, in index order.
    pub totals: Vec<(FwTotal, Counter)>,
    /// Per-rule counters of the live rules, by id.
    pub rules: Vec<(u32, Counter)>,
    /// Tracked connections.
    pub connections: usize,
    /// The SYN-flood defence's settings.
    pub syn_flood: SynFloodSettings,
    /// The SYN rate it measures (under attack) and how often the threshold was crossed.
    pub syn_state: SynState,
    /// The rate limits on new inbound connections.
    pub limits: LimitSettings,
    /// NAT: the rules configured, their counters, the translations held.
    pub nat: NatStatus,
}

/// One tracked connection, as `full_firewall conntrack` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connection {
    /// `tcp`, `udp`, `icmp`, `icmpv6`.
    pub proto: &'static str,
    /// The side that opened it.
    pub orig: (IpAddr, u16),
    /// The other side.
    pub reply: (IpAddr, u16),
    /// The key's lower end (address), as stored.
    pub lo: IpAddr,
    /// The key's lower end (port).
    pub lo_port: u16,
    /// Its state.
    pub state: CtState,
    /// Opened from outside.
    pub inbound: bool,
    /// Packets and bytes from the side that opened it.
    pub from_orig: Counter,
    /// Packets and bytes from the other side.
    pub from_reply: Counter,
    /// Seconds since its last packet.
    pub idle_secs: u64,
    /// Seconds since it opened.
    pub age_secs: u64,
    /// The interface index it was first seen on.
    pub ifindex: u32,
    /// The rule that admitted it; 0: the default policy.
    pub rule_id: u32,
    /// The local process that opened it (sent its first packet), or, opened from
    /// outside (TCP), the one that accepted it ([`Firewall::attach_accept`]); 0 when
    /// the process is not known.
    pub pid: u32,
    /// The local socket's cgroup when the host opened it; else 0.
    pub cgroup_id: u64,
    /// Its start was reported as a flow record, and its end will be.
    pub recorded: bool,
    /// The IDS inspects it (its first bytes go to the rule matcher).
    pub inspected: bool,
    /// Its translation, when a NAT rule translated it.
    pub nat: Option<Translation>,
    /// Its key in the table.
    key: CtKey,
}

impl Connection {
    /// Its key's image in the table.
    fn key_bytes(&self) -> [u8; CtKey::SIZE] {
        self.key.to_bytes()
    }
}

/// What one [`Firewall::expire`] sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sweep {
    /// Connections removed.
    pub removed: usize,
    /// The end records of the removed connections whose start was reported (rules
    /// with `flows: true`, or the section's `flows: true`), to publish.
    pub flows: Vec<FlowRecord>,
}

/// The hook that names the process accepting each inbound TCP connection
/// ([`Firewall::attach_accept`]); dropping it detaches it.
#[must_use = "dropping an AcceptHook detaches it"]
#[derive(Debug)]
pub struct AcceptHook {
    _links: Vec<libbpf_rs::Link>,
}

/// The firewall's programs attached to one interface (ingress and egress, by tcx links
/// or, on kernels without tcx, classic tc filters: [`mechanism`](Self::mechanism)).
/// Dropping it detaches them unless they are pinned.
#[must_use = "dropping a FirewallAttachment detaches the firewall unless it is pinned"]
#[derive(Debug)]
pub struct FirewallAttachment {
    programs: TcPrograms,
    pinned: Vec<PathBuf>,
}

impl FirewallAttachment {
    /// The interface.
    pub fn iface(&self) -> &str {
        self.programs.iface()
    }

    /// The interface's index (what the Sentinel protects).
    pub fn ifindex(&self) -> u32 {
        self.programs.ifindex()
    }

    /// How the programs are hooked: tcx links, or classic tc filters where the kernel
    /// has no tcx (before Linux 6.6).
    pub fn mechanism(&self) -> TcMechanism {
        self.programs.mechanism()
    }

    /// The pin paths of its links (empty unless pinned; classic tc filters have none:
    /// the kernel keeps them without a pin).
    pub fn pin_paths(&self) -> &[PathBuf] {
        &self.pinned
    }

    /// The links' kernel ids (as `bpftool link show` lists them), e.g. for the
    /// Sentinel to protect them; none for classic tc filters.
    pub fn link_ids(&self) -> Result<Vec<u32>> {
        self.programs.link_ids()
    }

    /// Detaches both programs now (removing their pins, if any).
    pub fn detach(mut self) -> Result<()> {
        let pinned = std::mem::take(&mut self.pinned);
        let log = self.programs.audit_log().clone();
        for ((name, link), path) in self.programs.links_mut().zip(pinned) {
            audited_link_pin(&log, AuditAction::Unpin, &path, name, link.unpin())?;
        }
        self.programs.detach()
    }
}

/// The two programs, in attach order, with their attach point.
const PROGRAMS: [(&str, &str); 2] = [(names::ic_fw_in, "ingress"), (names::ic_fw_out, "egress")];

/// The loaded firewall: its programs, connection table, configuration and totals.
pub struct Firewall {
    object: LoadedObject,
    /// The live rules' names by counter id, shared with the event source's enricher.
    labels: Labels,
}

/// The live rules' names by counter id (written at each replace, read by the event
/// reader's thread).
type Labels = std::sync::Arc<std::sync::RwLock<BTreeMap<u32, FwRuleLabel>>>;

/// What a rule is called and says, for one counter id ([`Firewall::rule_labels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FwRuleLabel {
    /// Its name, the same in `status`, `rules list`, the metrics and events: where it
    /// was written (`firewall.rules[2]`; a runtime rule's `api-7`).
    pub name: String,
    /// The rule in one line ([`FwRule::summary`]).
    pub summary: String,
    /// The operator's `comment:`.
    pub comment: Option<String>,
}

/// The name events give the default policy's decisions (rule id 0).
pub const DEFAULT_RULE_NAME: &str = "default";

impl Firewall {
    /// Name of the BPF object (and of its pin directory).
    pub const OBJECT: &'static str = "firewall";

    /// Audits and loads the programs with a table of [`DEFAULT_TABLE_SIZE`]
    /// connections. Maps are pinned: a restart keeps the connections and counters.
    /// Until [`configure`](Self::configure) is called (or when an earlier run's
    /// configuration is adopted) the configuration is the pinned one, or all zero: no
    /// tracking, accept everything.
    pub fn load(loader: &Loader) -> Result<Self> {
        Self::load_with_table(loader, DEFAULT_TABLE_SIZE)
    }

    /// Like [`load`](Self::load) with a table of `connections` entries. When it is full,
    /// new connections are dropped (counted as [`FwTotal::TableFull`]); tracked ones
    /// are never evicted to make room.
    pub fn load_with_table(loader: &Loader, connections: u32) -> Result<Self> {
        let object =
            loader.load_sized(crate::object::firewall(), &[(names::ic_fw_ct, connections)])?;
        Ok(Self {
            object,
            labels: Labels::default(),
        })
    }

    /// Makes `settings` live (one map write: every packet sees the old or the new).
    /// The rules stay as they are.
    pub fn configure(&self, settings: &FirewallSettings) -> Result<()> {
        let slot = self.live_config()?.slot;
        self.write_default_log(settings.log_default_drops)?;
        self.write_config(&settings.to_config(slot))
    }

    /// Sets the rate of the default policy's drop reports (a full bucket).
    fn write_default_log(&self, per_sec: u32) -> Result<()> {
        let log = FwDefaultLog {
            per_sec,
            _pad0: 0,
            tokens: i64::from(per_sec).saturating_mul(1_000_000_000),
            last_ns: 0,
        };
        self.object
            .map(names::ic_fw_default_log)?
            .update(&0u32.to_ne_bytes(), &log.to_bytes())
    }

    fn live_config(&self) -> Result<FwConfig> {
        let bytes = self
            .object
            .map(names::ic_fw_config)?
            .lookup(&0u32.to_ne_bytes())?;
        Ok(bytes
            .and_then(|b| FwConfig::from_bytes(&b))
            .unwrap_or_default())
    }

    fn write_config(&self, config: &FwConfig) -> Result<()> {
        self.object
            .map(names::ic_fw_config)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())
    }

    /// The live settings.
    pub fn settings(&self) -> Result<FirewallSettings> {
        let log = self
            .object
            .map(names::ic_fw_default_log)?
            .lookup(&0u32.to_ne_bytes())?;
        Ok(FirewallSettings::read_back(self.live_config()?, log))
    }

    /// Makes `rules` live atomically (first match wins; a packet no rule matches meets
    /// the default policy of its direction). They are compiled into the classifier of
    /// `ironclad_policy::firewall` and written to the slot packets do not use; one
    /// write of the configuration then flips the slot, so every packet sees the old
    /// rules or the new ones. A rule that the live set already has keeps its id and
    /// counters. Refused before anything is written: rules that do not
    /// [check](FwRule::check), more than
    /// 16,384 rules for one direction and protocol.
    pub fn replace(&self, rules: &[FwRule]) -> Result<FirewallReport> {
        self.replace_inner(None, rules)
    }

    /// [`replace`](Self::replace) and [`configure`](Self::configure) in one step: the
    /// write that makes `rules` live also sets `settings`, so no packet sees the new
    /// defaults with the old rules or the other way round (a policy reload).
    pub fn apply(&self, settings: &FirewallSettings, rules: &[FwRule]) -> Result<FirewallReport> {
        self.replace_inner(Some(settings), rules)
    }

    fn replace_inner(
        &self,
        settings: Option<&FirewallSettings>,
        rules: &[FwRule],
    ) -> Result<FirewallReport> {
        let _span = tracing::info_span!("ironclad.firewall.replace", rules = rules.len()).entered();
        let mut problems = Vec::new();
        for rule in rules {
            problems.extend(rule.check().iter().map(ToString::to_string));
        }
        let classifier = Classifier::compile(rules);
        for ((direction, proto), bucket) in &classifier.buckets {
            if bucket.rules.len() > FW_MAX_RULES as usize {
                problems.push(format!(
                    "{} rules apply to {direction:?} {proto:?} packets, more than the {FW_MAX_RULES} one direction and protocol can hold",
                    bucket.rules.len()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(BpfError::FirewallRules { problems });
        }

        let live = self.live_config()?;
        let next = 1 - (live.slot & 1);
        let slot = u8::try_from(next).unwrap_or(0);
        // The spare slot may hold an earlier policy: clear it first.
        self.clear_slot(slot)?;
        let ids = self.assign_ids(live.slot & 1, rules)?;

        let mut images = ClassImages::default();
        let mut rule_entries: Vec<(u32, FwRuleEntry)> = Vec::new();
        for ((direction, proto), bucket) in &classifier.buckets {
            let b = bucket_index(*direction, *proto);
            let classes = &classifier.classes;
            images.push_addresses([slot, b, FW_DIM_SRC, 0], 0, &bucket.src, false, classes);
            images.push_addresses([slot, b, FW_DIM_DST, 0], 0, &bucket.dst, false, classes);
            images.push_pieces([slot, b, FW_DIM_SPORT, 0], 0, &bucket.sport.pieces, classes);
            images.push_pieces([slot, b, FW_DIM_DPORT, 0], 0, &bucket.dport.pieces, classes);
            for (bit, index) in bucket.rules.iter().enumerate() {
                let rule = &rules[*index];
                let key = (next * FW_BUCKETS + u32::from(b)) * FW_MAX_RULES
                    + u32::try_from(bit).unwrap_or(0);
                rule_entries.push((
                    key,
                    FwRuleEntry {
                        rule_id: ids[*index],
                        action: match rule.action {
                            FwAction::Accept => FW_ACCEPT,
                            FwAction::Drop => FW_DROP,
                            FwAction::Reject => FW_REJECT,
                        },
                        flags: if rule.log { FW_RULE_LOG } else { 0 }
                            | if rule.flows { FW_RULE_FLOWS } else { 0 },
                        _pad0: [0; 2],
                        rate_per_sec: rule.rate_limit.map_or(0, |r| r.per_second),
                        rate_burst: rule.rate_limit.map_or(0, |r| r.burst),
                        digest: digest(rule),
                    },
                ));
            }
        }
        images.push_classes(slot, 0, &classifier.classes);
        // Each bucket's mask for packets no port forward translated (rules with `dnat:
        // true` left out): 1 + its class, 0 none.
        let mut masks = [0u32; FW_BUCKETS as usize];
        for ((direction, proto), bucket) in &classifier.buckets {
            if let (Some(class), Some(m)) = (
                bucket.untranslated,
                masks.get_mut(usize::from(bucket_index(*direction, *proto))),
            ) {
                *m = class + 1;
            }
        }
        let mask_images: Vec<([u8; 4], [u8; 4])> = (0u32..)
            .zip(masks)
            .map(|(b, m)| ((next * FW_BUCKETS + b).to_ne_bytes(), m.to_ne_bytes()))
            .collect();
        let rule_images: Vec<([u8; 4], [u8; FwRuleEntry::SIZE])> = rule_entries
            .iter()
            .map(|(k, r)| (k.to_ne_bytes(), r.to_bytes()))
            .collect();

        let write = || -> Result<()> {
            let map = |name| self.object.map(name);
            images.write(
                &map(names::ic_fw_addr)?,
                &map(names::ic_fw_ports)?,
                &map(names::ic_fw_words)?,
                &map(names::ic_fw_summaries)?,
            )?;
            classes::write_all(&map(names::ic_fw_untranslated)?, &mask_images)?;
            classes::write_all(&map(names::ic_fw_rules)?, &rule_images)
        };
        if let Err(e) = write() {
            // The live slot was never touched; give the spare one's memory back.
            let _ = self.clear_slot(slot);
            return Err(e);
        }
        if let Some(s) = settings {
            self.write_default_log(s.log_default_drops)?;
        }
        self.write_config(&match settings {
            Some(s) => s.to_config(next),
            None => FwConfig { slot: next, ..live },
        })?;
        tracing::info!(
            rules = rules.len(),
            classes = classifier.classes.len(),
            slot = next,
            "firewall rules replaced"
        );
        let labels: BTreeMap<u32, FwRuleLabel> = ids
            .iter()
            .zip(rules)
            .map(|(id, rule)| {
                (
                    *id,
                    FwRuleLabel {
                        name: rule.origin.field.clone(),
                        summary: rule.summary(),
                        comment: rule.comment.clone(),
                    },
                )
            })
            .collect();
        if let Ok(mut live) = self.labels.write() {
            *live = labels;
        }
        Ok(FirewallReport {
            rules: rules.len(),
            buckets: classifier.buckets.len(),
            classes: classifier.classes.len(),
            entries: images.len() + rule_entries.len(),
            slot: next,
            ids,
        })
    }

    /// The live rules' ids, in policy order, with their packets and bytes.
    pub fn rule_counters(&self) -> Result<Vec<(u32, Counter)>> {
        read_rule_counters(
            self.live_config()?.slot & 1,
            &self.object.map(names::ic_fw_rules)?,
            &self.object.map(names::ic_fw_rule_counters)?,
        )
    }

    /// Ids for `rules`: a rule the live slot already has (same digest) keeps its id;
    /// the others get the lowest free ids, their counters zeroed.
    fn assign_ids(&self, live_slot: u32, rules: &[FwRule]) -> Result<Vec<u32>> {
        let map = self.object.map(names::ic_fw_rules)?;
        let mut live: BTreeMap<u64, u32> = BTreeMap::new();
        for key in map.keys() {
            let Some(k) = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
            else {
                continue;
            };
            if k / (FW_BUCKETS * FW_MAX_RULES) != live_slot {
                continue;
            }
            if let Some(entry) = map.lookup(&key)?.and_then(|v| FwRuleEntry::from_bytes(&v)) {
                live.insert(entry.digest, entry.rule_id);
            }
        }
        let mut used: BTreeSet<u32> = BTreeSet::new();
        let mut ids = vec![0u32; rules.len()];
        for (i, rule) in rules.iter().enumerate() {
            if let Some(id) = live.get(&digest(rule)) {
                if used.insert(*id) {
                    ids[i] = *id;
                }
            }
        }
        let counters = self.object.map(names::ic_fw_rule_counters)?;
        let zero = vec![vec![0u8; Counter::SIZE]; libbpf_rs::num_possible_cpus().unwrap_or(1)];
        let mut next = 1u32;
        for id in ids.iter_mut().filter(|id| **id == 0) {
            while used.contains(&next) {
                next += 1;
            }
            *id = next;
            used.insert(next);
            counters.update_percpu(&next.to_ne_bytes(), &zero)?;
        }
        Ok(ids)
    }

    /// Removes every class and rule of `slot`.
    fn clear_slot(&self, slot: u8) -> Result<()> {
        classes::clear_slot(
            slot,
            &self.object.map(names::ic_fw_addr)?,
            &self.object.map(names::ic_fw_ports)?,
            &self.object.map(names::ic_fw_words)?,
            &self.object.map(names::ic_fw_summaries)?,
        )?;
        let rules = self.object.map(names::ic_fw_rules)?;
        let keys: Vec<Vec<u8>> = rules
            .keys()
            .into_iter()
            .filter(|k| {
                k.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_ne_bytes)
                    .is_some_and(|k| k / (FW_BUCKETS * FW_MAX_RULES) == u32::from(slot))
            })
            .collect();
        rules.delete_many(keys.iter().map(Vec::as_slice))?;
        Ok(())
    }

    /// Attaches both programs to `iface`, ingress and egress, by the kernel's
    /// mechanism ([`TcMechanism::probe`]): tcx links after the programs already there,
    /// or classic tc filters at handle [`crate::tc::FILTER_HANDLE`]. Detached when the
    /// returned handle is dropped.
    pub fn attach(&self, iface: &str) -> Result<FirewallAttachment> {
        self.attach_with(iface, TcMechanism::probe())
    }

    /// [`attach`](Self::attach) by `mechanism` rather than the kernel's choice: classic
    /// tc works on every kernel (e.g. beside tools that manage tc filters), tcx fails
    /// before Linux 6.6 with [`BpfError::KernelTooOld`].
    pub fn attach_with(&self, iface: &str, mechanism: TcMechanism) -> Result<FirewallAttachment> {
        Ok(FirewallAttachment {
            programs: TcPrograms::attach(
                mechanism,
                &self.object,
                Self::OBJECT,
                "the stateful firewall (tcx hooks)",
                &PROGRAMS,
                iface,
                priority::FIREWALL,
            )?,
            pinned: Vec::new(),
        })
    }

    /// Checks `attachment`'s hooks (one of this firewall's) against the kernel and
    /// puts back what was undone from outside: a link detached (`bpftool link
    /// detach`) or a filter deleted (`tc filter del`) is attached anew (a link pinned
    /// in its place), a program swapped into either is swapped out, a removed pin is
    /// pinned again, each with an audit record (`repair`). One result per program:
    /// `Ok(None)` all was well, `Ok(Some(what))` what was found and put back, an error
    /// found undone and not put back (that direction is not filtered).
    pub fn verify(&self, attachment: &mut FirewallAttachment) -> Vec<Result<Option<String>>> {
        attachment.programs.verify(&self.object)
    }

    /// Attaches like [`attach`](Self::attach) and pins the links (`link_<iface>_in`,
    /// `link_<iface>_out`), so the firewall keeps enforcing after this process exits or
    /// is killed. Links pinned by an earlier run are adopted and this run's programs
    /// swapped into them atomically. With classic tc (no tcx in the kernel) there is
    /// nothing to pin: the filters stay after this handle is dropped, and an earlier
    /// run's filters get this run's programs in place.
    pub fn attach_pinned(&self, iface: &str) -> Result<FirewallAttachment> {
        if TcMechanism::probe() == TcMechanism::Clsact {
            // Classic filters outlive the process without a pin; an earlier run's
            // filters (same handle and priority) get this run's programs in place.
            let mut attachment = self.attach(iface)?;
            attachment.programs.keep();
            return Ok(attachment);
        }
        let dir = self.object.pin_dir().to_path_buf();
        let paths: Vec<PathBuf> = ["in", "out"]
            .iter()
            .map(|d| dir.join(format!("link_{iface}_{d}")))
            .collect();
        // An earlier run's link detached from outside (dead) cannot be adopted: its pin
        // goes, and a new link takes its place.
        let mut dead = false;
        for path in &paths {
            dead |= remove_dead_link_pin(
                path,
                Self::OBJECT,
                &format!("link tcx on {iface}"),
                self.object.audit_log(),
            )?;
        }
        if dead {
            // Both new: the surviving pinned link of the pair goes too, so one program
            // does not run twice on its hook.
            for path in paths.iter().filter(|p| p.exists()) {
                if let Ok(mut link) = Link::open(path) {
                    let unpinned = link.unpin();
                    audited_link_pin(
                        self.object.audit_log(),
                        AuditAction::Unpin,
                        path,
                        "the other of a pair with a dead link",
                        unpinned,
                    )?;
                    let _ = link.detach();
                }
            }
        }
        let mut attachment = if paths.iter().all(|p| p.exists()) {
            let mut links = Vec::with_capacity(PROGRAMS.len());
            for (program, path) in PROGRAMS.iter().zip(&paths) {
                links.push((*program, self.adopt(program.0, path)?));
            }
            FirewallAttachment {
                programs: TcPrograms::from_links(
                    &self.object,
                    Self::OBJECT,
                    iface,
                    priority::FIREWALL,
                    links,
                )?,
                pinned: Vec::new(),
            }
        } else {
            self.attach(iface)?
        };
        attachment.programs.keep();
        let mut pinned = Vec::new();
        for ((name, link), path) in attachment.programs.links_mut().zip(&paths) {
            if !path.exists() {
                let result = link.pin(path);
                audited_link_pin(
                    self.object.audit_log(),
                    AuditAction::Pin,
                    path,
                    name,
                    result,
                )?;
            }
            pinned.push(path.clone());
        }
        attachment.pinned = pinned;
        Ok(attachment)
    }

    fn adopt(&self, name: &str, path: &Path) -> Result<Link> {
        let pin_error = |reason: String, e: libbpf_rs::Error| BpfError::Pin {
            what: format!("link {name}"),
            path: path.to_path_buf(),
            reason,
            source: Some(crate::error::KernelError::from_libbpf(e)),
        };
        let mut link = Link::open(path).map_err(|e| pin_error(e.to_string(), e))?;
        let prog = self.object.program(name)?;
        let result = link.update_prog(&prog);
        self.object.audit_log().result(
            AuditAction::Reuse,
            Self::OBJECT,
            &path.display().to_string(),
            &format!("{name}: program swapped in"),
            &result,
        );
        result.map_err(|e| pin_error(format!("cannot swap the program into it: {e}"), e))?;
        Ok(link)
    }

    /// Makes the SYN-flood defence's `settings` live. Checked first (nothing is
    /// written when they are refused). Turning it on writes the ports before the mode;
    /// turning it off writes the mode first, so no packet sees half of either.
    /// On a kernel older than 6.9 (no `bpf_sk_assign_tcp_reqsk`) turning it on fails
    /// with [`BpfError::KernelTooOld`]; turning it off works everywhere.
    pub fn set_syn_flood(&self, settings: &SynFloodSettings) -> Result<()> {
        settings.preflight()?;
        let config = self.object.map(names::ic_fw_syn_config)?;
        let ports = self.object.map(names::ic_fw_syn_ports)?;
        let write_ports = |set: &BTreeSet<u16>| -> Result<()> {
            for (i, word) in port_words(set).into_iter().enumerate() {
                let key = u32::try_from(i).unwrap_or(u32::MAX);
                ports.update(&key.to_ne_bytes(), &word.to_ne_bytes())?;
            }
            Ok(())
        };
        let image = settings.to_config().to_bytes();
        if settings.mode == SynMode::Off {
            config.update(&0u32.to_ne_bytes(), &image)?;
            write_ports(&BTreeSet::new())
        } else {
            write_ports(&settings.ports)?;
            config.update(&0u32.to_ne_bytes(), &image)
        }
    }

    /// The SYN-flood defence's live settings.
    pub fn syn_flood(&self) -> Result<SynFloodSettings> {
        read_syn(
            &self.object.map(names::ic_fw_syn_config)?,
            &self.object.map(names::ic_fw_syn_ports)?,
        )
    }

    /// The SYN rate the XDP program measures and how often the threshold was crossed.
    pub fn syn_state(&self) -> Result<SynState> {
        read_syn_state(&self.object.map(names::ic_fw_syn_state)?)
    }

    /// Attaches the SYN-flood defence's XDP program (`ic_fw_syn`) to `iface`: it
    /// answers SYNs to the protected ports with cookies and passes everything else to
    /// the tcx programs, so attach those too ([`attach`](Self::attach)). The interface's
    /// XDP hook must be free (the Shield holds it where it runs). Detached when the
    /// handle is dropped, unless pinned.
    pub fn attach_syn(&self, iface: &str) -> Result<XdpAttachment> {
        let prog = self.object.program(names::ic_fw_syn)?;
        XdpAttachment::attach(&prog, Self::OBJECT, iface, self.object.audit_log())
    }

    /// Attaches the hook that gives each inbound TCP connection the process that
    /// accepted it (`fentry` on `security_sock_graft`, which `accept()` calls in that
    /// process's context): its pid and cgroup go into the connection's entry, so its
    /// end record and [`connections`](Self::connections) name it. An inbound flow's
    /// start record comes with its first packet, before any process accepted it, and
    /// names none. Not pinned (it goes with its holder: enforcement never depends on
    /// it); one per host, whatever the interfaces. Needs BPF trampolines (x86_64 5.5,
    /// arm64 6.0) and a kernel built with `CONFIG_SECURITY`
    /// ([`BpfError::NotLoaded`] when it has no such function).
    pub fn attach_accept(&self) -> Result<AcceptHook> {
        Ok(AcceptHook {
            _links: self.object.attach_tracepoints(&[names::ic_fw_accept])?,
        })
    }

    /// Like [`attach_syn`](Self::attach_syn) and pins the link (`link_<iface>_xdp`);
    /// a link pinned by an earlier run is adopted and this program swapped into it.
    pub fn attach_syn_pinned(&self, iface: &str) -> Result<XdpAttachment> {
        let path = self.object.pin_dir().join(format!("link_{iface}_xdp"));
        let prog = self.object.program(names::ic_fw_syn)?;
        let dead = remove_dead_link_pin(
            &path,
            Self::OBJECT,
            &format!("link xdp on {iface}"),
            self.object.audit_log(),
        )?;
        if !dead && path.exists() {
            return XdpAttachment::adopt(
                &prog,
                Self::OBJECT,
                iface,
                &path,
                self.object.audit_log(),
            );
        }
        let mut attachment =
            XdpAttachment::attach(&prog, Self::OBJECT, iface, self.object.audit_log())?;
        attachment.pin(&path)?;
        Ok(attachment)
    }

    /// Checks a SYN-flood defence attachment of this firewall's against the kernel and
    /// puts back what was undone from outside, as
    /// [`Shield::verify`](crate::Shield::verify) does for the Shield's.
    pub fn verify_syn(&self, attachment: &mut XdpAttachment) -> Result<Option<String>> {
        let prog = self.object.program(names::ic_fw_syn)?;
        attachment.verify(&prog)
    }

    /// Makes the rate limits on new inbound connections `limits` live (checked first;
    /// nothing is written when they are refused). One write: no packet sees half of
    /// them. Buckets already filled keep their tokens, capped to a new burst at their
    /// next refill.
    pub fn set_limits(&self, limits: &LimitSettings) -> Result<()> {
        limits.check()?;
        self.object
            .map(names::ic_fw_limit_config)?
            .update(&0u32.to_ne_bytes(), &limits.to_config().to_bytes())
    }

    /// The live rate limits.
    pub fn limits(&self) -> Result<LimitSettings> {
        read_limits(&self.object.map(names::ic_fw_limit_config)?)
    }

    /// One total, summed over CPUs.
    pub fn total(&self, which: FwTotal) -> Result<Counter> {
        read_total(&self.object.map(names::ic_fw_totals)?, which)
    }

    /// Every total, in index order.
    pub fn totals(&self) -> Result<Vec<(FwTotal, Counter)>> {
        FwTotal::ALL
            .iter()
            .map(|t| Ok((*t, self.total(*t)?)))
            .collect()
    }

    /// Every tracked connection (expired ones the sweep has not removed yet included,
    /// with their idle time).
    pub fn connections(&self) -> Result<Vec<Connection>> {
        let now = monotonic_ns();
        let mut connections = Vec::new();
        self.object
            .map(names::ic_fw_ct)?
            .for_each_entry(|key, value| {
                if let (Some(k), Some(e)) = (CtKey::from_bytes(key), CtEntry::from_bytes(value)) {
                    connections.extend(connection(&k, &e, now));
                }
            })?;
        nat::annotate(&mut connections, &self.object.map(names::ic_nat_map)?)?;
        Ok(connections)
    }

    /// Removes the connections idle longer than their state's timeout. The programs
    /// treat such an entry as absent already; the sweep gives its room back, and
    /// reports the end of every removed connection whose start was reported (flow
    /// records). Call it periodically (the agent does every few seconds).
    pub fn expire(&self) -> Result<Sweep> {
        let settings = self.settings()?;
        let map = self.object.map(names::ic_fw_ct)?;
        let now = monotonic_ns();
        // The table read in batches (a system call per 1,024 connections, where a walk
        // of its keys took two per connection: the sweep runs every few seconds).
        let mut idle: Vec<(Vec<u8>, CtKey, CtEntry)> = Vec::new();
        map.for_each_entry(|key, value| {
            let (Some(k), Some(e)) = (CtKey::from_bytes(key), CtEntry::from_bytes(value)) else {
                return;
            };
            let state = CtState::from_u8(e.state).unwrap_or(CtState::Closing);
            if now.saturating_sub(e.last_seen_ns)
                > settings
                    .timeout(k.proto, state)
                    .saturating_mul(1_000_000_000)
            {
                idle.push((key.to_vec(), k, e));
            }
        })?;
        let mut stale: Vec<(Vec<u8>, CtKey, CtEntry)> = Vec::with_capacity(idle.len());
        for (key, k, e) in idle {
            // Re-read first: a packet may have refreshed it since.
            let fresh = map.lookup(&key)?.and_then(|v| CtEntry::from_bytes(&v));
            if let Some(f) = fresh.filter(|f| f.last_seen_ns == e.last_seen_ns) {
                stale.push((key, k, f));
            }
        }
        let mut flows = Vec::new();
        let offset = crate::events::monotonic_to_wall_offset();
        // One audit record for the sweep, not one per connection. An entry the programs
        // replaced meanwhile is not deleted here, and its end was reported by them.
        let removed = map.delete_each(stale.iter().map(|(key, _, _)| key.as_slice()), |at| {
            if let Some((_, k, e)) = stale.get(at) {
                if e.flags & CT_F_RECORD != 0 {
                    if let Ok(record) = FlowRecord::from_raw(&flow_end(k, e)) {
                        let mut event = Event::Flow(record);
                        event.set_wall_time(offset);
                        name_rule(&self.labels, &mut event);
                        if let Event::Flow(record) = event {
                            flows.push(record);
                        }
                    }
                }
            }
        })?;
        // Then the translations of the connections gone (and of ones never entered),
        // and the IDS entries of connections gone.
        self.expire_translations()?;
        self.expire_inspections()?;
        Ok(Sweep { removed, flows })
    }

    /// Deletes the IDS entries (`ic_ids_flows`) whose connection is no longer in the
    /// table: ended and swept, or replaced by a new connection on the same ports.
    fn expire_inspections(&self) -> Result<usize> {
        let flows = self.object.map(names::ic_ids_flows)?;
        let keys = flows.keys();
        if keys.is_empty() {
            return Ok(0);
        }
        let table = self.object.map(names::ic_fw_ct)?;
        let mut gone = Vec::new();
        for key in keys {
            let inspected = table
                .lookup(&key)?
                .and_then(|v| CtEntry::from_bytes(&v))
                .is_some_and(|e| e.flags & CT_F_INSPECT != 0);
            if !inspected {
                gone.push(key);
            }
        }
        flows.delete_each(gone.iter().map(Vec::as_slice), |_| {})
    }

    /// The loaded object (for the Sentinel to protect).
    pub fn object(&self) -> &LoadedObject {
        &self.object
    }

    /// The ring buffer of logged rules' matches (`log: true`), to read together with
    /// other sources in one [`EventReader`].
    pub fn event_source(&self) -> Result<EventSource> {
        let labels = self.labels.clone();
        Ok(EventSource::new(
            self.object.map(names::ic_fw_events)?.handle()?,
            names::ic_fw_events,
            Some(Box::new(move |event: &mut Event| name_rule(&labels, event))),
        ))
    }

    /// The live rules' names, summaries and comments by counter id (what
    /// [`rule_counters`](Self::rule_counters) reports by), as the last
    /// [`replace`](Self::replace) or [`apply`](Self::apply) of this handle wrote them.
    pub fn rule_labels(&self) -> BTreeMap<u32, FwRuleLabel> {
        self.labels.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Gives a firewall event (a logged match, a flow record) its rule's name
    /// (`rule`); the event reader does this for the events of
    /// [`event_source`](Self::event_source), [`expire`](Self::expire) for the ends it
    /// finds.
    pub fn name_rule(&self, event: &mut Event) {
        name_rule(&self.labels, event);
    }

    /// Opens the ring buffer of logged matches alone; each decoded event is published
    /// to `fanout`.
    pub fn events(&self, fanout: std::sync::Arc<Fanout<Event>>) -> Result<EventReader> {
        EventReader::new(vec![self.event_source()?], fanout)
    }

    /// Every tracked connection, read from the pinned table under `pin_root` without
    /// loading anything (what `full_firewall conntrack` shows while the daemon runs).
    pub fn connections_from_pins(pin_root: &Path) -> Result<Vec<Connection>> {
        let now = monotonic_ns();
        let mut connections = Vec::new();
        open_pinned(pin_root, names::ic_fw_ct)?.for_each_entry(|key, value| {
            if let (Some(k), Some(e)) = (CtKey::from_bytes(key), CtEntry::from_bytes(value)) {
                connections.extend(connection(&k, &e, now));
            }
        })?;
        nat::annotate(&mut connections, &open_pinned(pin_root, names::ic_nat_map)?)?;
        Ok(connections)
    }

    /// The totals alone, summed over CPUs, read from the pins under `pin_root` (cheap:
    /// [`Firewall::status_from_pins`] counts the connection table's entries too).
    pub fn totals_from_pins(pin_root: &Path) -> Result<Vec<(FwTotal, Counter)>> {
        let totals_map = open_pinned(pin_root, names::ic_fw_totals)?;
        FwTotal::ALL
            .iter()
            .map(|t| Ok((*t, read_total(&totals_map, *t)?)))
            .collect()
    }

    /// How many connections the table holds (expired ones the sweep has not removed
    /// yet included), read from the pin under `pin_root` in batches of 1,024 entries
    /// (one system call each).
    pub fn connection_count_from_pins(pin_root: &Path) -> Result<usize> {
        open_pinned(pin_root, names::ic_fw_ct)?.for_each_entry(|_, _| {})
    }

    /// The settings, totals, rule counters and connection count, read from the pins
    /// under `pin_root` without loading anything.
    pub fn status_from_pins(pin_root: &Path) -> Result<FirewallStatus> {
        let config = open_pinned(pin_root, names::ic_fw_config)?
            .get(&0u32.to_ne_bytes())?
            .and_then(|b| FwConfig::from_bytes(&b))
            .unwrap_or_default();
        let totals = Self::totals_from_pins(pin_root)?;
        let rules = read_rule_counters(
            config.slot & 1,
            &open_pinned(pin_root, names::ic_fw_rules)?,
            &open_pinned(pin_root, names::ic_fw_rule_counters)?,
        )?;
        let connections = Self::connection_count_from_pins(pin_root)?;
        let syn_flood = read_syn(
            &open_pinned(pin_root, names::ic_fw_syn_config)?,
            &open_pinned(pin_root, names::ic_fw_syn_ports)?,
        )?;
        let syn_state = read_syn_state(&open_pinned(pin_root, names::ic_fw_syn_state)?)?;
        let limits = read_limits(&open_pinned(pin_root, names::ic_fw_limit_config)?)?;
        let nat = Self::nat_status_from_pins(pin_root)?;
        Ok(FirewallStatus {
            limits,
            nat,
            settings: FirewallSettings::read_back(
                config,
                open_pinned(pin_root, names::ic_fw_default_log)
                    .ok()
                    .and_then(|m| m.get(&0u32.to_ne_bytes()).ok().flatten()),
            ),
            totals,
            rules,
            connections,
            syn_flood,
            syn_state,
        })
    }
}

/// Reading one of the firewall's maps, through the loaded object or through its pin
/// (tools that load nothing): the readers below serve the handle's methods and the
/// `*_from_pins` functions alike.
trait MapRead {
    fn keys(&self) -> Vec<Vec<u8>>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn get_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
}

impl MapRead for crate::loader::AuditedMap<'_> {
    fn keys(&self) -> Vec<Vec<u8>> {
        crate::loader::AuditedMap::keys(self)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lookup(key)
    }
    fn get_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        self.lookup_percpu(key)
    }
}

/// A map opened from its pin.
struct PinnedMap {
    map: MapHandle,
    name: &'static str,
}

impl PinnedMap {
    fn error(&self) -> impl Fn(libbpf_rs::Error) -> BpfError + '_ {
        move |source| BpfError::Map {
            op: "lookup",
            map: self.name.to_string(),
            source: crate::error::KernelError::from_libbpf(source),
        }
    }
}

impl PinnedMap {
    /// Hands every entry (key, value) to `each`, read in batches
    /// ([`crate::loader::for_each_entry`]), and returns how many there were.
    fn for_each_entry(&self, each: impl FnMut(&[u8], &[u8])) -> Result<usize> {
        use std::os::fd::AsFd;
        crate::loader::for_each_entry(
            self.map.as_fd(),
            self.map.key_size() as usize,
            self.map.value_size() as usize,
            self.name,
            each,
        )
    }
}

impl MapRead for PinnedMap {
    fn keys(&self) -> Vec<Vec<u8>> {
        self.map.keys().collect()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.map.lookup(key, MapFlags::ANY).map_err(self.error())
    }
    fn get_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        self.map
            .lookup_percpu(key, MapFlags::ANY)
            .map_err(self.error())
    }
}

/// One of the firewall's maps pinned under `pin_root`.
fn open_pinned(pin_root: &Path, name: &'static str) -> Result<PinnedMap> {
    let path = pin_root.join(Firewall::OBJECT).join(name);
    let map = MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
        what: format!("map {name}"),
        path: path.clone(),
        reason: e.to_string(),
        source: Some(crate::error::KernelError::from_libbpf(e)),
    })?;
    Ok(PinnedMap { map, name })
}

/// A per-CPU counter summed over CPUs (zero when absent).
fn sum_counter(map: &impl MapRead, key: &[u8]) -> Result<Counter> {
    let mut sum = Counter::default();
    for c in map
        .get_percpu(key)?
        .unwrap_or_default()
        .iter()
        .filter_map(|b| Counter::from_bytes(b))
    {
        sum.packets += c.packets;
        sum.bytes += c.bytes;
    }
    Ok(sum)
}

/// One total of the totals map.
fn read_total(totals: &impl MapRead, which: FwTotal) -> Result<Counter> {
    sum_counter(totals, &(which as u32).to_ne_bytes())
}

/// The counters of the rules in `slot` of the rules map, by id.
fn read_rule_counters(
    slot: u32,
    rules: &impl MapRead,
    counters: &impl MapRead,
) -> Result<Vec<(u32, Counter)>> {
    let mut ids = BTreeSet::new();
    for key in rules.keys() {
        let in_slot = key
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .is_some_and(|k| k / (FW_BUCKETS * FW_MAX_RULES) == slot);
        if !in_slot {
            continue;
        }
        if let Some(entry) = rules.get(&key)?.and_then(|v| FwRuleEntry::from_bytes(&v)) {
            ids.insert(entry.rule_id);
        }
    }
    ids.into_iter()
        .map(|id| Ok((id, sum_counter(counters, &id.to_ne_bytes())?)))
        .collect()
}

/// Writes the audit record of pinning (or unpinning) link `name` at `path` and turns
/// libbpf's error into ours.
fn audited_link_pin(
    log: &AuditLog,
    action: AuditAction,
    path: &std::path::Path,
    name: &str,
    result: std::result::Result<(), libbpf_rs::Error>,
) -> Result<()> {
    log.result(
        action,
        Firewall::OBJECT,
        &path.display().to_string(),
        name,
        &result,
    );
    result.map_err(|e| BpfError::Pin {
        what: format!("link {name}"),
        path: path.to_path_buf(),
        reason: e.to_string(),
        source: Some(crate::error::KernelError::from_libbpf(e)),
    })
}

/// Attaches `prog` to `ifindex`'s tcx hook named by its section (`tcx/ingress`,
/// `tcx/egress`). libbpf-rs has no tcx attach, so this calls libbpf's own.
pub(crate) fn attach_tcx(
    prog: &libbpf_rs::ProgramMut<'_>,
    ifindex: u32,
) -> std::result::Result<Link, libbpf_rs::Error> {
    let index = i32::try_from(ifindex).map_err(|_| libbpf_rs::Error::from_raw_os_error(22))?;
    let opts = libbpf_sys::bpf_tcx_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: the program pointer comes from a loaded libbpf-rs program that outlives
    // this call, and `opts` is a fully initialised bpf_tcx_opts with its size set, as
    // libbpf requires; libbpf only reads both.
    let link = unsafe {
        libbpf_sys::bpf_program__attach_tcx(prog.as_libbpf_object().as_ptr(), index, &opts)
    };
    match NonNull::new(link) {
        // SAFETY: a non-null bpf_link just returned by libbpf, owned by nobody else:
        // the Link takes it over and destroys it once.
        Some(link) => Ok(unsafe { Link::from_ptr(link) }),
        None => Err(libbpf_rs::Error::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(22),
        )),
    }
}

/// The running kernel's release when it is older than 6.6, the first with tcx links
/// (an attach that failed there failed for that reason, not for its arguments).
pub(crate) fn older_than_tcx() -> Option<String> {
    older_than((6, 6))
}

/// The running kernel's release when it is older than `version` (major, minor).
fn older_than(version: (u32, u32)) -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim().to_string();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let running = (numbers.next()?, numbers.next()?);
    (running < version).then_some(release)
}

/// The bucket of a direction and packet protocol (`ic_fw_bucket` in C).
fn bucket_index(direction: Direction, proto: PacketProto) -> u8 {
    let d = match direction {
        Direction::In => 0,
        Direction::Out => FW_PROTOS,
    };
    let p = match proto {
        PacketProto::Tcp => 0,
        PacketProto::Udp => 1,
        PacketProto::Icmp => 2,
        PacketProto::Icmpv6 => 3,
        _ => 4,
    };
    u8::try_from(d + p).unwrap_or(0)
}

/// A rule's identity across replacements: FNV-1a over what it matches and does
/// (not where it was written). Hand-written: eight lines, and it must stay stable
/// across releases, which std's hasher does not promise.
fn digest(rule: &FwRule) -> u64 {
    rule.identity()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

fn address(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The end of a tracked connection as the kernel would report it (`struct
/// ic_fw_flow_event`), from its key and entry: one decoder serves both.
fn flow_end(k: &CtKey, e: &CtEntry) -> FwFlowEvent {
    let orig_lo = e.flags & CT_F_ORIG_LO != 0;
    let reason = if e.flags & CT_F_RESET != 0 {
        FW_END_RESET
    } else if k.proto == 6 && e.state == CtState::Closing as u8 {
        FW_END_FIN
    } else {
        FW_END_TIMEOUT
    };
    FwFlowEvent {
        src: if orig_lo { k.addr_lo } else { k.addr_hi },
        dst: if orig_lo { k.addr_hi } else { k.addr_lo },
        sport: if orig_lo { k.port_lo } else { k.port_hi },
        dport: if orig_lo { k.port_hi } else { k.port_lo },
        cgroup_id: e.cgroup_id,
        created_ns: e.created_ns,
        last_seen_ns: e.last_seen_ns,
        packets_orig: e.packets_orig,
        bytes_orig: e.bytes_orig,
        packets_reply: e.packets_reply,
        bytes_reply: e.bytes_reply,
        rule_id: e.rule_id,
        ifindex: e.ifindex,
        pid: e.pid,
        proto: k.proto,
        flags: if e.flags & CT_F_INBOUND != 0 {
            FW_FLOW_INBOUND
        } else {
            0
        },
        phase: FW_FLOW_END,
        reason,
        state: e.state,
        ..FwFlowEvent::default()
    }
}

fn connection(k: &CtKey, e: &CtEntry, now: u64) -> Option<Connection> {
    let proto = match k.proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        _ => return None,
    };
    let lo = (address(k.addr_lo), k.port_lo);
    let hi = (address(k.addr_hi), k.port_hi);
    let (orig, reply) = if e.flags & CT_F_ORIG_LO != 0 {
        (lo, hi)
    } else {
        (hi, lo)
    };
    Some(Connection {
        proto,
        orig,
        reply,
        lo: lo.0,
        lo_port: lo.1,
        state: CtState::from_u8(e.state)?,
        inbound: e.flags & CT_F_INBOUND != 0,
        from_orig: Counter {
            packets: e.packets_orig,
            bytes: e.bytes_orig,
        },
        from_reply: Counter {
            packets: e.packets_reply,
            bytes: e.bytes_reply,
        },
        idle_secs: now.saturating_sub(e.last_seen_ns) / 1_000_000_000,
        age_secs: now.saturating_sub(e.created_ns) / 1_000_000_000,
        ifindex: e.ifindex,
        rule_id: e.rule_id,
        pid: e.pid,
        cgroup_id: e.cgroup_id,
        recorded: e.flags & CT_F_RECORD != 0,
        inspected: e.flags & CT_F_INSPECT != 0,
        nat: None,
        key: *k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_kernel_image() {
        let s = FirewallSettings::default().drop_inbound(true).dry_run(true);
        let log = FwDefaultLog {
            per_sec: s.log_default_drops,
            ..FwDefaultLog::default()
        };
        let back = FirewallSettings::read_back(
            FwConfig::from_bytes(&s.to_config(1).to_bytes()).expect("decodes"),
            Some(log.to_bytes().to_vec()),
        );
        assert_eq!(back, s);
        assert_eq!(
            s.to_config(0).flags,
            FW_F_DROP_IN | FW_F_STATEFUL | FW_F_DRY_RUN
        );
        assert_eq!(s.timeout(6, CtState::Established), 432_000);
        assert_eq!(s.timeout(17, CtState::New), 30);
        assert_eq!(s.timeout(17, CtState::Established), 120);
    }

    #[test]
    fn a_key_reads_back_with_the_opening_side_first() {
        let mut k = CtKey {
            proto: 6,
            port_lo: 80,
            port_hi: 40000,
            ..CtKey::default()
        };
        k.addr_lo[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        k.addr_hi[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 2]);
        let e = CtEntry {
            state: CtState::Established as u8,
            flags: CT_F_INBOUND, // opened by the higher end, from outside
            created_ns: 1_000_000_000,
            last_seen_ns: 3_000_000_000,
            ..CtEntry::default()
        };
        let c = connection(&k, &e, 5_000_000_000).expect("tcp");
        assert_eq!(c.orig, ("10.0.0.2".parse().expect("ip"), 40000));
        assert_eq!(c.reply, ("10.0.0.1".parse().expect("ip"), 80));
        assert!(c.inbound);
        assert_eq!((c.idle_secs, c.age_secs), (2, 4));
    }
}
