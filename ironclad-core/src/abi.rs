//! Rust mirrors of `bpf-src/include/ironclad.h`, the kernel/user ABI.
//!
//! Each struct is `#[repr(C)]`, has no implicit padding and converts to and from its
//! exact byte image without `unsafe`: the conversions are zerocopy's derives
//! (`IntoBytes` refuses, at compile time, a struct with implicit padding), so no field
//! offset is written twice. The sizes are asserted here against the numbers in
//! the header; `ironclad-bpf` additionally asserts every size and field offset against
//! the types generated from the BTF of the compiled objects, so a drift between this file
//! and the header fails the build.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `IC_ABI_VERSION`: bumped on any change to a struct in the ABI header.
pub const ABI_VERSION: u32 = 1;

/// Maximum number of Shield rules with their own counters (`IC_SHIELD_MAX_RULES`).
pub const SHIELD_MAX_RULES: u32 = 16_384;
/// Capacity of the IPv4 rule trie (`IC_SHIELD_MAX_V4_PREFIXES`).
pub const SHIELD_MAX_V4_PREFIXES: u32 = 1_048_576;
/// Capacity of the IPv6 rule trie (`IC_SHIELD_MAX_V6_PREFIXES`).
pub const SHIELD_MAX_V6_PREFIXES: u32 = 262_144;
/// Capacity of each safety-valve trie (`IC_SHIELD_MAX_VALVE_PREFIXES`).
pub const SHIELD_MAX_VALVE_PREFIXES: u32 = 1_024;
/// First-level blocks of the IPv4 fast path, one per /16 (`IC_SHIELD_V4_FIRST_BLOCKS`).
pub const SHIELD_V4_FIRST_BLOCKS: u32 = 65_536;
/// Second-level groups of the IPv4 fast path, one per /24 holding a longer prefix
/// (`IC_SHIELD_V4_GROUPS`).
pub const SHIELD_V4_GROUPS: u32 = 4_096;
/// Span nodes of one IPv4 fast-path slot (`IC_SHIELD_V4_SPANS`).
pub const SHIELD_V4_SPANS: u32 = 1_048_576;
/// All blocks of one IPv4 fast-path table (`IC_SHIELD_V4_BLOCKS`).
pub const SHIELD_V4_BLOCKS: u32 = SHIELD_V4_FIRST_BLOCKS + SHIELD_V4_GROUPS;
/// Records of one IPv6 fast-path slot (`IC_SHIELD_V6_RECORDS`).
pub const SHIELD_V6_RECORDS: u32 = 278_528;
/// First-level records of the IPv6 fast path, [`V6_TOPS_PER_RECORD`] entries each: one
/// per /22 of 2000::/3, then one per /16 of the rest (`IC_SHIELD_V6_TOP_RECORDS`).
pub const SHIELD_V6_TOP_RECORDS: u32 = 98_304;
/// Policy slots of the per-slot rule tables (`IC_SHIELD_SLOTS`).
pub const SHIELD_SLOTS: u32 = 2;

/// Fast-path entry: mask of the rule id (`IC_FAST_RULE_MASK`).
pub const FAST_RULE_MASK: u16 = 0x3fff;
/// Fast-path entry: the rule allows (`IC_FAST_ALLOW`); deny otherwise.
pub const FAST_ALLOW: u16 = 0x4000;
/// Fast-path entry: the management safety valve (`IC_FAST_VALVE`).
pub const FAST_VALVE: u16 = 0x4000;
/// Fast-path entry: the low bits name a second-level group (`IC_FAST_GROUP`).
pub const FAST_GROUP: u16 = 0x8000;
/// Fast-path entry: mask of the group number (`IC_FAST_GROUP_MASK`).
pub const FAST_GROUP_MASK: u16 = 0x1fff;
/// Fast-path entry, with [`FAST_GROUP`]: a span node (`IC_FAST_SPAN`).
pub const FAST_SPAN: u16 = 0x4000;
/// Fast-path span entry: relative to the block's second span base (`IC_FAST_SPAN_BASE`).
pub const FAST_SPAN_BASE: u16 = 0x2000;
/// Fast-path span entry: mask of the node's record after its base (`IC_FAST_SPAN_MASK`;
/// bitmap nodes take five records each).
pub const FAST_SPAN_MASK: u16 = 0x1fff;

/// Active-policy word: the slot packets use (`IC_ACTIVE_SLOT`).
pub const ACTIVE_SLOT: u32 = 1;
/// Active-policy word: IPv4 goes through the slot's LPM trie (`IC_ACTIVE_V4_TRIE`).
pub const ACTIVE_V4_TRIE: u32 = 2;
/// Active-policy word: a rate limit is configured, so packets without a rule still read
/// the configuration (`IC_ACTIVE_RATE_LIMIT`).
pub const ACTIVE_RATE_LIMIT: u32 = 4;
/// Active-policy word: IPv6 goes through the slot's compiled table instead of its LPM
/// trie (`IC_ACTIVE_V6_FAST`).
pub const ACTIVE_V6_FAST: u32 = 8;
/// Active-policy word: the configuration is in dry-run (a mirror of
/// [`SHIELD_F_DRY_RUN`], so a packet that matches a rule reads only this word;
/// `IC_ACTIVE_DRY_RUN`).
pub const ACTIVE_DRY_RUN: u32 = 16;
/// Active-policy word: bits from this one up hold [`ShieldConfig::sample_rate`]
/// (`IC_ACTIVE_SAMPLE_SHIFT`), so a dropped packet counts down to its sample without
/// reading the configuration.
pub const ACTIVE_SAMPLE_SHIFT: u32 = 8;
/// The largest sample rate the active-policy word holds (`IC_ACTIVE_SAMPLE_MAX`).
pub const ACTIVE_SAMPLE_MAX: u32 = 0x00ff_ffff;
/// The bits of the active-policy word that mirror the configuration rather than the
/// policy: a policy switch keeps them.
pub const ACTIVE_FROM_CONFIG: u32 =
    ACTIVE_RATE_LIMIT | ACTIVE_DRY_RUN | (ACTIVE_SAMPLE_MAX << ACTIVE_SAMPLE_SHIFT);

/// IPv6 fast path, first-level entry: the low bits name the /16's node record
/// (`IC_V6_NODE`); a rule entry otherwise.
pub const V6_NODE: u32 = 0x4000_0000;
/// IPv6 fast path, `base[0]` of a node: a lone-prefix node (`IC_V6_LONE`).
pub const V6_LONE: u32 = 0x4000_0000;
/// IPv6 fast path: mask of a record index (`IC_V6_INDEX_MASK`).
pub const V6_INDEX_MASK: u32 = 0x3fff_ffff;
/// IPv6 fast path: mask of a lone node's prefix length (`IC_V6_LEN_MASK`).
pub const V6_LEN_MASK: u32 = 0xff;
/// IPv6 fast path: bits of a first-level entry outside 2000::/3 (`IC_V6_TOP_BITS`).
pub const V6_TOP_BITS: u32 = 16;
/// IPv6 fast path: bits of a first-level entry inside 2000::/3, the global unicast space
/// (`IC_V6_GLOBAL_BITS`).
pub const V6_GLOBAL_BITS: u32 = 22;
/// IPv6 fast path: first-level entries of 2000::/3 (its /22s), before those of the rest
/// (`IC_V6_GLOBAL_TOPS`).
pub const V6_GLOBAL_TOPS: u32 = 1 << 19;
/// IPv6 fast path: first-level entries to a record (`IC_V6_TOPS_PER_RECORD`).
pub const V6_TOPS_PER_RECORD: u32 = 6;
/// IPv6 fast path: bits of each later level (`IC_V6_STRIDE`).
pub const V6_STRIDE: u32 = 6;
/// IPv6 fast path: levels after the first (`IC_V6_LEVELS`).
pub const V6_LEVELS: u32 = 19;
/// IPv6 fast path: leaf entries packed into one record (`IC_V6_LEAVES_PER_RECORD`).
pub const V6_LEAVES_PER_RECORD: u32 = 8;

/// Rule-directory kind: unused id (`IC_RULE_FREE`).
pub const RULE_FREE: u8 = 0;
/// Rule-directory kind: one prefix (`IC_RULE_CIDR`).
pub const RULE_CIDR: u8 = 1;
/// Rule-directory kind: a named set of prefixes (`IC_RULE_SET`).
pub const RULE_SET: u8 = 2;

/// `enum ic_action`: what a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Action {
    /// `IC_ACTION_NONE`: no rule matched.
    None = 0,
    /// `IC_ACTION_DENY`: drop (or count as would-drop in dry-run).
    Deny = 1,
    /// `IC_ACTION_ALLOW`: an explicit exception, the packet passes.
    Allow = 2,
}

impl Action {
    /// Decodes the kernel's byte; unknown values give `None`.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::None),
            1 => Some(Self::Deny),
            2 => Some(Self::Allow),
            _ => None,
        }
    }

    /// The policy's word: `deny`, `allow` (`none`: no rule).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// `enum ic_shield_total`: index of the Shield's global totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ShieldTotal {
    /// `IC_TOTAL_PASSED`: packets that passed (dry-run would-drops included).
    Passed = 0,
    /// `IC_TOTAL_DROPPED`: packets dropped by a deny rule.
    Dropped = 1,
    /// `IC_TOTAL_MALFORMED`: truncated or malformed headers (passed).
    Malformed = 2,
    /// `IC_TOTAL_VALVE`: packets from a management (safety valve) source.
    Valve = 3,
    /// `IC_TOTAL_NON_IP`: frames that are neither IPv4 nor IPv6 (passed).
    NonIp = 4,
    /// `IC_TOTAL_WOULD_DROP`: dry-run matches of a deny rule or the rate limit (passed).
    WouldDrop = 5,
    /// `IC_TOTAL_RATE_LIMITED`: over the per-source rate limit (dropped unless dry-run).
    RateLimited = 6,
    /// `IC_TOTAL_EVENTS_LOST`: drop events the ring buffer had no room for.
    EventsLost = 7,
    /// `IC_TOTAL_EVENTS_OVER_BUDGET`: sampled drops not reported because the CPU had
    /// already reported [`ShieldConfig::events_per_sec`] events that second.
    EventsOverBudget = 8,
}

impl ShieldTotal {
    /// Number of totals (`IC_TOTAL_COUNT`).
    pub const COUNT: u32 = 9;
    /// Every total, in index order.
    pub const ALL: [Self; 9] = [
        Self::Passed,
        Self::Dropped,
        Self::Malformed,
        Self::Valve,
        Self::NonIp,
        Self::WouldDrop,
        Self::RateLimited,
        Self::EventsLost,
        Self::EventsOverBudget,
    ];

    /// Stable lower-case name, as used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Dropped => "dropped",
            Self::Malformed => "malformed",
            Self::Valve => "valve",
            Self::NonIp => "non_ip",
            Self::WouldDrop => "would_drop",
            Self::RateLimited => "rate_limited",
            Self::EventsLost => "events_lost",
            Self::EventsOverBudget => "events_over_budget",
        }
    }
}

/// `IC_SHIELD_F_DRY_RUN`: count and report, never drop.
pub const SHIELD_F_DRY_RUN: u32 = 1;

/// `IC_SHIELD_RING_BYTES`: capacity of the Shield's event ring buffer.
pub const SHIELD_RING_BYTES: u32 = 262_144;
/// `IC_SHIELD_RATE_SOURCES`: sources the rate limiter tracks (LRU).
pub const SHIELD_RATE_SOURCES: u32 = 65_536;

/// `enum ic_event_kind`: what follows an [`EventHeader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum EventKind {
    /// `IC_EVENT_SHIELD`: a [`ShieldEvent`].
    Shield = 1,
    /// `IC_EVENT_TLS`: a [`TlsEvent`].
    Tls = 2,
    /// `IC_EVENT_EGRESS`: an [`EgressEvent`].
    Egress = 3,
    /// `IC_EVENT_DNS`: a [`DnsEvent`].
    Dns = 4,
    /// `IC_EVENT_SENTINEL`: a [`SentinelEvent`].
    Sentinel = 5,
    /// `IC_EVENT_PROCESS`: a [`ProcessEvent`].
    Process = 6,
    /// `IC_EVENT_FIREWALL`: a [`FwEvent`].
    Firewall = 7,
    /// `IC_EVENT_FLOW`: a [`FwFlowEvent`].
    Flow = 8,
    /// `IC_EVENT_FW_LIMIT`: a [`FwLimitEvent`].
    FwLimit = 9,
    /// `IC_EVENT_DNS_POLICY`: a [`DnsPolicyEvent`].
    DnsPolicy = 10,
    /// `IC_EVENT_IDS_SNIPPET`: an [`IdsSnippet`] (on the IDS's own ring buffer).
    IdsSnippet = 11,
}

/// `IC_TLS_WRITE` (`enum ic_tls_direction`): plaintext about to be encrypted.
pub const TLS_WRITE: u8 = 1;
/// `IC_TLS_READ`: plaintext just decrypted.
pub const TLS_READ: u8 = 2;
/// `IC_TLS_F_TRUNCATED`: the call moved more bytes than the cap let through.
pub const TLS_F_TRUNCATED: u8 = 1;
/// `IC_TLS_F_LAST`: the last chunk reported for this call.
pub const TLS_F_LAST: u8 = 2;
/// `IC_TLS_CHUNK`: plaintext bytes per TLS event at most.
pub const TLS_CHUNK: usize = 4096;
/// `IC_TLS_SMALL_CHUNK`: a chunk of at most this many bytes comes in a record that ends
/// after them ([`TlsEvent::SMALL_RECORD_SIZE`]), not in a whole one.
pub const TLS_SMALL_CHUNK: usize = 256;
/// `IC_TLS_MAX_CHUNKS`: chunks reported per call at most.
pub const TLS_MAX_CHUNKS: u32 = 64;
/// `IC_TLS_SCOPE_ENTRIES`: entries per TLS scope map.
pub const TLS_SCOPE_ENTRIES: u32 = 4096;
/// `IC_TLS_PROCESSES`: processes whose executable is tracked.
pub const TLS_PROCESSES: u32 = 65_536;
/// `IC_TLS_SOCKS`: SSL connections whose socket the kernel remembers (LRU).
pub const TLS_SOCKS: u32 = 16_384;

/// `enum ic_shield_verdict`: what the Shield did to a reported packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ShieldVerdict {
    /// `IC_VERDICT_DROP`: dropped by a deny rule.
    Drop = 1,
    /// `IC_VERDICT_WOULD_DROP`: dry-run, a deny rule matched.
    WouldDrop = 2,
    /// `IC_VERDICT_RATE_LIMITED`: dropped by the per-source rate limit.
    RateLimited = 3,
    /// `IC_VERDICT_WOULD_RATE_LIMIT`: dry-run, over the rate limit.
    WouldRateLimit = 4,
}

impl ShieldVerdict {
    /// Decodes the kernel's byte; unknown values give `None`.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Drop),
            2 => Some(Self::WouldDrop),
            3 => Some(Self::RateLimited),
            4 => Some(Self::WouldRateLimit),
            _ => None,
        }
    }

    /// Stable lower-case name, as used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::WouldDrop => "would_drop",
            Self::RateLimited => "rate_limited",
            Self::WouldRateLimit => "would_rate_limit",
        }
    }
}

/// `struct ic_lpm_v4_key` (`N = 4`) and `struct ic_lpm_v6_key` (`N = 16`): keys of the
/// LPM tries.
// Not `IntoBytes`: zerocopy cannot prove a generic struct free of padding (it has none:
// 4 + N bytes, N a multiple of 4), so its image is written field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LpmKey<const N: usize> {
    /// Prefix length, host order, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub prefixlen: u32,
    /// Address, network order.
    pub addr: [u8; N],
}

/// `struct ic_lpm_v4_key`: key of the IPv4 LPM tries.
pub type LpmV4Key = LpmKey<4>;
/// `struct ic_lpm_v6_key`: key of the IPv6 LPM tries.
pub type LpmV6Key = LpmKey<16>;

impl<const N: usize> LpmKey<N> {
    /// Size of the C struct in bytes (no padding: 4 + N, N a multiple of 4).
    pub const SIZE: usize = 4 + N;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::SIZE);
        out.extend_from_slice(&self.prefixlen.to_ne_bytes());
        out.extend_from_slice(&self.addr);
        out
    }

    /// Decodes a key read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_rule`: value of a rule prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Rule {
    /// Rule id, host order: index into the per-rule counters.
    pub rule_id: u32,
    /// [`Action`] as its raw byte.
    pub action: u8,
    /// Explicit padding, always zero.
    pub _pad0: [u8; 3],
}

impl Rule {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// A rule with the given id and action.
    pub fn new(rule_id: u32, action: Action) -> Self {
        Self {
            rule_id,
            action: action as u8,
            _pad0: [0; 3],
        }
    }

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_v4_block`: one block of the IPv4 fast path (256 entries, host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct V4Block {
    /// Entries (see [`FAST_GROUP`], [`FAST_SPAN`], [`FAST_ALLOW`], [`FAST_VALVE`],
    /// [`FAST_RULE_MASK`]).
    pub entry: [u16; 256],
    /// The two bases span entries count from (index into the slot's span table).
    pub span_base: [u32; 2],
}

impl V4Block {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 520;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_v4_span`: a /24 of the IPv4 fast path whose last octet reads `inner` inside
/// `lo[0]..=hi[0]` or `lo[1]..=hi[1]` and `outer` elsewhere; or, with `lo[0] > hi[0]`, the
/// header of a bitmap node ([`V4Span::bitmap`], `lo[0]` 1), whose 256 bits follow in the
/// next four records, of a quad node ([`V4Span::quad`], `lo[0]` 2): four entries, a
/// 2-bit index per address in the eight records after the two of the header, or of a
/// runs node ([`V4Span::runs`], `lo[0]` 3): `inner` in up to five runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct V4Span {
    /// First address of each range (last octet).
    pub lo: [u8; 2],
    /// Last address of each range (last octet), inclusive.
    pub hi: [u8; 2],
    /// The entry inside the ranges (a rule entry or [`FAST_VALVE`]).
    pub inner: u16,
    /// The entry everywhere else in the /24.
    pub outer: u16,
}

impl V4Span {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// Records a bitmap node takes: its header and four of bits.
    pub const BITMAP_RECORDS: usize = 5;

    /// Records a quad node takes: its two of header and eight of 2-bit indexes.
    pub const QUAD_RECORDS: usize = 10;

    /// Records a runs node takes.
    pub const RUNS_RECORDS: usize = 2;

    /// Runs a runs node holds.
    pub const RUNS: usize = 5;

    /// Records a leaf node's entries take (its header takes one more).
    pub const LEAF_BODY_RECORDS: usize = 64;

    /// The header of a leaf node: a /24 whose 256 entries are the 64 records that start
    /// `distance` records after the header, four native `u16`s each (see
    /// [`V4Span::entries`]): address `a` (last octet) is entry `a % 4` of record `a / 4`.
    /// The distance is `inner` (low half) and `outer` (high half). What a /24 of five
    /// values or more becomes when the second-level groups are all in use; the entries
    /// lie after the other nodes, so that a block's headers stay within reach of its
    /// base.
    pub fn leaf(distance: u32) -> Self {
        Self {
            lo: [4, 0],
            hi: [0, 0],
            inner: distance as u16,
            outer: (distance >> 16) as u16,
        }
    }

    /// A leaf node header's distance to its entries.
    pub fn distance(&self) -> u32 {
        u32::from(self.inner) | u32::from(self.outer) << 16
    }

    /// A record of four entries of a leaf node.
    pub fn entries(entries: [u16; 4]) -> Self {
        let mut bytes = [0u8; Self::SIZE];
        for (at, e) in bytes.chunks_mut(2).zip(entries) {
            at.copy_from_slice(&e.to_ne_bytes());
        }
        Self::from_bytes(&bytes).unwrap_or_default()
    }

    /// Whether this is a leaf node's header (`lo[0] > hi[0]`, `lo[0]` 4).
    pub fn is_leaf(&self) -> bool {
        self.lo[0] > self.hi[0] && self.lo[0] == 4
    }

    /// The two records of a runs node: a /24 whose addresses read `inner` inside up to
    /// [`V4Span::RUNS`] runs `(first, last)` (last octets, inclusive) and `outer`
    /// elsewhere. The first run is in the first record's `lo[1]`/`hi[1]`, the others in
    /// the second record as (first, last) byte pairs; missing runs repeat the first.
    /// `None` without a run or with more than five.
    pub fn runs(inner: u16, outer: u16, runs: &[(u8, u8)]) -> Option<[Self; 2]> {
        let (head, rest) = runs.split_first()?;
        if rest.len() >= Self::RUNS {
            return None;
        }
        let mut second = [0u8; Self::SIZE];
        for (k, pair) in second.chunks_mut(2).enumerate() {
            let (lo, hi) = rest.get(k).unwrap_or(head);
            pair.copy_from_slice(&[*lo, *hi]);
        }
        Some([
            Self {
                lo: [3, head.0],
                hi: [0, head.1],
                inner,
                outer,
            },
            Self::from_bytes(&second)?,
        ])
    }

    /// The two header records of a quad node: a /24 whose addresses read one of four
    /// `entries`, each address's index (0 to 3) in 2 bits of the eight records that follow
    /// as native `u64` words: address `a` (last octet) is bits `2 × (a % 32)` and up of
    /// word `a / 32`. Entries 0 and 1 are the first record's `inner` and `outer`, 2 and 3
    /// the second record's first two `u16`s.
    pub fn quad(entries: [u16; 4]) -> [Self; 2] {
        let mut second = [0u8; Self::SIZE];
        second[..2].copy_from_slice(&entries[2].to_ne_bytes());
        second[2..4].copy_from_slice(&entries[3].to_ne_bytes());
        [
            Self {
                lo: [2, 0],
                hi: [0, 0],
                inner: entries[0],
                outer: entries[1],
            },
            Self::from_bytes(&second).unwrap_or_default(),
        ]
    }

    /// The header of a bitmap node: a /24 whose addresses read `inner` where their bit is
    /// set and `outer` elsewhere. The bits follow in the next four records, as native
    /// `u64` words: address `a` (last octet) is bit `a % 64` of word `a / 64`.
    pub fn bitmap(inner: u16, outer: u16) -> Self {
        Self {
            lo: [1, 0],
            hi: [0, 0],
            inner,
            outer,
        }
    }

    /// Whether this is a bitmap node's header (`lo[0] > hi[0]`, which no span has, and
    /// `lo[0]` 1).
    pub fn is_bitmap(&self) -> bool {
        self.lo[0] > self.hi[0] && self.lo[0] == 1
    }

    /// Whether this is a quad node's first header record (`lo[0] > hi[0]`, `lo[0]` 2).
    pub fn is_quad(&self) -> bool {
        self.lo[0] > self.hi[0] && self.lo[0] == 2
    }

    /// Whether this is a runs node's first record (`lo[0] > hi[0]`, `lo[0]` 3).
    pub fn is_runs(&self) -> bool {
        self.lo[0] > self.hi[0] && self.lo[0] == 3
    }

    /// A record holding one word of a bitmap node's bits.
    pub fn bits(word: u64) -> Self {
        Self::from_bytes(&word.to_ne_bytes()).unwrap_or_default()
    }

    /// The word of bits this record holds (the inverse of [`V4Span::bits`]).
    pub fn word(&self) -> u64 {
        u64::from_ne_bytes(self.to_bytes())
    }

    /// The entry the kernel reads for last octet `last` in the node at `index` of `spans`
    /// (a span, or a bitmap node's header and bits); 0 when `index` is out of range.
    pub fn value(spans: &[Self], index: usize, last: u8) -> u16 {
        let Some(node) = spans.get(index) else {
            return 0;
        };
        if node.is_leaf() {
            let record = spans
                .get(index + node.distance() as usize + usize::from(last >> 2))
                .map_or([0; Self::SIZE], Self::to_bytes);
            let at = 2 * usize::from(last & 3);
            return u16::from_ne_bytes([record[at], record[at + 1]]);
        }
        if node.is_runs() {
            let second = spans.get(index + 1).map_or([0; Self::SIZE], Self::to_bytes);
            let inside = |lo: u8, hi: u8| last.wrapping_sub(lo) <= hi.wrapping_sub(lo);
            let any =
                inside(node.lo[1], node.hi[1]) || second.chunks(2).any(|p| inside(p[0], p[1]));
            return if any { node.inner } else { node.outer };
        }
        if node.is_quad() {
            let word = spans
                .get(index + 2 + usize::from(last >> 5))
                .map_or(0, Self::word);
            let second = spans.get(index + 1).map_or([0; Self::SIZE], Self::to_bytes);
            return match word >> (2 * u32::from(last & 31)) & 3 {
                0 => node.inner,
                1 => node.outer,
                2 => u16::from_ne_bytes([second[0], second[1]]),
                _ => u16::from_ne_bytes([second[2], second[3]]),
            };
        }
        if !node.is_bitmap() {
            return node.get(last);
        }
        let word = spans
            .get(index + 1 + usize::from(last >> 6))
            .map_or(0, Self::word);
        if word >> (last & 63) & 1 == 1 {
            node.inner
        } else {
            node.outer
        }
    }

    /// The entry the kernel reads for last octet `last`.
    pub fn get(&self, last: u8) -> u16 {
        let inside =
            |i: usize| last.wrapping_sub(self.lo[i]) <= self.hi[i].wrapping_sub(self.lo[i]);
        if inside(0) || inside(1) {
            self.inner
        } else {
            self.outer
        }
    }

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_book_run`: the header of a run of prefixes in a slot's prefix book (the
/// prefixes a fast-path table was compiled from): `count` addresses of one length,
/// action and rule follow it (4 bytes each for IPv4, 16 for IPv6, network order); a run
/// of `count` 0 ends the book.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BookRun {
    /// Addresses that follow, host order.
    pub count: u32,
    /// Rule id, host order.
    pub rule_id: u16,
    /// Prefix length.
    pub prefixlen: u8,
    /// [`Action`] as its raw byte.
    pub action: u8,
}

impl BookRun {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image the kernel holds.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a header; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// Bytes of one page of a prefix book (`IC_BOOK_PAGE_BYTES`, `struct ic_book_page`).
pub const BOOK_PAGE_BYTES: usize = 4096;

/// The action of a prefix-book run that removes its prefixes (`IC_BOOK_REMOVED`): an
/// edit in place appends its changes to the book, and later runs win over earlier ones.
pub const BOOK_REMOVED: u8 = 0xff;

/// `struct ic_v6_node`: one record of the IPv6 fast path: an inner node (child and
/// leaf-run bitmaps, and where its children and leaves start), a lone-prefix node, four
/// first-level entries or eight leaves (see `enum ic_v6_fast` in the header).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct V6Node {
    /// Inner node: child bitmap, leaf-run bitmap. Lone node: the prefix's high and low
    /// 64 bits. Host order.
    pub bits: [u64; 2],
    /// Inner node: first child record, first leaf. Lone node: [`V6_LONE`] | length, and
    /// the entry inside | the entry outside << 16. Host order.
    pub base: [u32; 2],
}

impl V6Node {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_rule_info`: what a rule id stands for (the rule directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RuleInfo {
    /// IPv4 prefixes of the rule, host order.
    pub prefixes_v4: u32,
    /// IPv6 prefixes of the rule, host order.
    pub prefixes_v6: u32,
    /// [`RULE_FREE`], [`RULE_CIDR`] or [`RULE_SET`].
    pub kind: u8,
    /// [`Action`] as its raw byte.
    pub action: u8,
    /// [`RULE_CIDR`]: the prefix length.
    pub prefixlen: u8,
    /// [`RULE_CIDR`]: 4 or 6.
    pub family: u8,
    /// [`RULE_CIDR`]: the network, network order (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// [`RULE_SET`]: the name, NUL-padded.
    pub name: [u8; 48],
}

impl Default for RuleInfo {
    fn default() -> Self {
        Self {
            prefixes_v4: 0,
            prefixes_v6: 0,
            kind: RULE_FREE,
            action: 0,
            prefixlen: 0,
            family: 0,
            addr: [0; 16],
            name: [0; 48],
        }
    }
}

impl RuleInfo {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 76;
    /// Longest set name, in bytes.
    pub const NAME_MAX: usize = 47;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_counter`: a packet and byte counter (one per CPU in the kernel).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Counter {
    /// Packets, host order.
    pub packets: u64,
    /// Bytes (L2 frame length as seen by XDP), host order.
    pub bytes: u64,
}

impl Counter {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// Sums per-CPU values.
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a Counter>) -> Counter {
        values
            .into_iter()
            .fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
            })
    }
}

/// `struct ic_total`: one Shield total on one CPU (a value of the totals map). The
/// kernel keeps, beside the counter, the countdown to the total's next sampled event;
/// user space reads the counter ([`TotalValue::counter`]).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TotalValue {
    /// Packets, host order.
    pub packets: u64,
    /// Bytes (L2 frame length as seen by XDP), host order.
    pub bytes: u64,
    /// Kernel-private: events of this total until the next sampled one.
    pub countdown: u32,
    /// Padding (zero).
    pub _pad0: u32,
}

impl TotalValue {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The packet and byte counter.
    pub fn counter(&self) -> Counter {
        Counter {
            packets: self.packets,
            bytes: self.bytes,
        }
    }
}

/// `struct ic_shield_config`: runtime configuration of the Shield.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ShieldConfig {
    /// Flags, host order ([`SHIELD_F_DRY_RUN`]).
    pub flags: u32,
    /// One event per N drops (per CPU); 0 = no events.
    pub sample_rate: u32,
    /// Token refill per second per source; 0 = no rate limit.
    pub rate_pps: u32,
    /// Bucket size in packets.
    pub rate_burst: u32,
    /// At most this many drop events a second on each CPU; 0 = no cap.
    pub events_per_sec: u32,
}

impl ShieldConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 20;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_event_header`: the common header of every ring-buffer record.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EventHeader {
    /// ABI version of the record ([`ABI_VERSION`]).
    pub version: u16,
    /// Raw [`EventKind`].
    pub kind: u16,
    /// Size of the whole record, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the record was made.
    pub ktime_ns: u64,
}

impl EventHeader {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// Decodes a header; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_shield_event`: a sampled drop (or would-drop) reported by the Shield.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ShieldEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// Source address, network order; IPv4 as IPv4-mapped IPv6.
    pub src: [u8; 16],
    /// Destination address, network order; IPv4 as IPv4-mapped IPv6.
    pub dst: [u8; 16],
    /// The rule that matched; 0 for rate limiting.
    pub rule_id: u32,
    /// Ingress interface index.
    pub ifindex: u32,
    /// Frame length in bytes.
    pub pkt_len: u32,
    /// Source port (TCP/UDP), host order; 0 if none.
    pub sport: u16,
    /// Destination port (TCP/UDP), host order; 0 if none.
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol of the L4 header.
    pub proto: u8,
    /// Raw [`ShieldVerdict`].
    pub verdict: u8,
    /// Explicit padding, always zero.
    pub _pad0: [u8; 5],
}

impl ShieldEvent {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 72;

    /// Decodes a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_tls_config`: runtime configuration of TLS capture.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TlsConfig {
    /// Plaintext bytes reported per SSL call (at most 64 chunks).
    pub max_bytes: u32,
    /// Per-process budget of reported bytes per second; 0 = none.
    pub bytes_per_sec: u32,
}

impl TlsConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_exe_id`: an executable's device (kernel encoding) and inode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ExeId {
    /// Device, kernel encoding (`major << 20 | minor`).
    pub dev: u32,
    /// Explicit padding, always zero.
    pub _pad0: u32,
    /// Inode.
    pub ino: u64,
}

impl ExeId {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_tls_sock`: the TCP connection an SSL call moved its bytes through, as the
/// kernel saw it on the calling thread during the call (or an earlier call on the same
/// `SSL*`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TlsSock {
    /// `AF_INET` (2), `AF_INET6` (10), or 0 when no TCP socket was seen.
    pub family: u8,
    /// Explicit padding, always zero.
    pub _pad0: u8,
    /// Local port.
    pub lport: u16,
    /// Remote port.
    pub rport: u16,
    /// Explicit padding, always zero.
    pub _pad1: [u8; 2],
    /// Local address, network order (IPv4 in the first 4 bytes).
    pub laddr: [u8; 16],
    /// Remote address, network order (IPv4 in the first 4 bytes).
    pub raddr: [u8; 16],
}

impl TlsSock {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 40;

    /// The local and remote socket addresses, when the kernel saw the socket.
    pub fn addresses(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        let ip = |bytes: &[u8; 16]| -> Option<IpAddr> {
            match self.family {
                2 => Some(IpAddr::V4(Ipv4Addr::new(
                    bytes[0], bytes[1], bytes[2], bytes[3],
                ))),
                10 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
                _ => None,
            }
        };
        Some((
            SocketAddr::new(ip(&self.laddr)?, self.lport),
            SocketAddr::new(ip(&self.raddr)?, self.rport),
        ))
    }
}

/// `struct ic_tls_event` without its data: the fixed part of a TLS chunk record. The
/// record's `len` bytes of plaintext follow at [`TlsEvent::DATA_OFFSET`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TlsEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// The `SSL*` pointer: a connection key.
    pub ssl: u64,
    /// Unique per SSL call on this boot; the chunks of one call share it.
    pub call_id: u64,
    /// The caller's cgroup id.
    pub cgroup_id: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// User id.
    pub uid: u32,
    /// Bytes the call moved.
    pub total_len: u32,
    /// Offset of this chunk within the call's bytes.
    pub offset: u32,
    /// Bytes of data in this chunk.
    pub len: u32,
    /// [`TLS_WRITE`] or [`TLS_READ`].
    pub direction: u8,
    /// [`TLS_F_TRUNCATED`], [`TLS_F_LAST`].
    pub flags: u8,
    /// Explicit padding, always zero.
    pub _pad0: [u8; 6],
    /// The task's command name, NUL-padded.
    pub comm: [u8; 16],
    /// The process's executable (zeros if unknown).
    pub exe: ExeId,
    /// The TCP connection the call used (`family` 0 if unknown).
    pub sock: TlsSock,
}

impl TlsEvent {
    /// Offset of the plaintext in the C record (`offsetof(struct ic_tls_event, data)`).
    pub const DATA_OFFSET: usize = 144;
    /// Size of the whole C record (`sizeof(struct ic_tls_event)`).
    pub const RECORD_SIZE: usize = Self::DATA_OFFSET + TLS_CHUNK;
    /// Size of a record carrying at most [`TLS_SMALL_CHUNK`] bytes: the kernel cuts it
    /// after them (its `hdr.size` says so).
    pub const SMALL_RECORD_SIZE: usize = Self::DATA_OFFSET + TLS_SMALL_CHUNK;

    /// Decodes the fixed part of a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The byte image of the record the kernel writes for `data` (at most [`TLS_CHUNK`]
    /// bytes): [`SMALL_RECORD_SIZE`](Self::SMALL_RECORD_SIZE) bytes when `data` fits
    /// [`TLS_SMALL_CHUNK`], else [`RECORD_SIZE`](Self::RECORD_SIZE); `hdr.size` is set
    /// to match.
    pub fn to_record(&self, data: &[u8]) -> Vec<u8> {
        let size = if data.len() <= TLS_SMALL_CHUNK {
            Self::SMALL_RECORD_SIZE
        } else {
            Self::RECORD_SIZE
        };
        let mut out = vec![0u8; size];
        let fixed = Self {
            hdr: EventHeader {
                size: size as u32,
                ..self.hdr
            },
            ..*self
        };
        out[..Self::DATA_OFFSET].copy_from_slice(fixed.as_bytes());
        let n = data.len().min(TLS_CHUNK);
        out[Self::DATA_OFFSET..Self::DATA_OFFSET + n].copy_from_slice(&data[..n]);
        out
    }
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<TlsEvent>() == TlsEvent::DATA_OFFSET);
    assert!(size_of::<TlsSock>() == TlsSock::SIZE);
    assert!(size_of::<TlsConfig>() == TlsConfig::SIZE);
    assert!(size_of::<ExeId>() == ExeId::SIZE);
};

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<LpmV4Key>() == LpmV4Key::SIZE);
    assert!(size_of::<LpmV6Key>() == LpmV6Key::SIZE);
    assert!(size_of::<Rule>() == Rule::SIZE);
    assert!(size_of::<Counter>() == Counter::SIZE);
    assert!(size_of::<TotalValue>() == TotalValue::SIZE);
    assert!(size_of::<ShieldConfig>() == ShieldConfig::SIZE);
    assert!(size_of::<EventHeader>() == EventHeader::SIZE);
    assert!(size_of::<ShieldEvent>() == ShieldEvent::SIZE);
};

/// `IC_EGRESS_MAX_RULES`: rules per generation (index 0 unused).
pub const EGRESS_MAX_RULES: u32 = 16_384;
/// `IC_EGRESS_BUCKETS`: identity keys per generation.
pub const EGRESS_BUCKETS: u32 = 32_768;
/// `IC_EGRESS_CLASSES`: classes (bitmaps) per generation over all identity keys.
pub const EGRESS_CLASSES: u32 = 1_048_576;
/// `IC_EGRESS_PROTOS`: the classifier buckets of one identity key (tcp, udp, other).
pub const EGRESS_PROTOS: u32 = 3;
/// `IC_EGRESS_IDENTITIES`: identities tracked by the connect rate limiter.
pub const EGRESS_IDENTITIES: u32 = 65_536;
/// `IC_EGRESS_MAX_ANCESTORS`: ancestors an ancestor rule can look at.
pub const EGRESS_MAX_ANCESTORS: u8 = 8;

/// `enum ic_egress_match` flags.
pub mod egress_match {
    /// `IC_M_EXE`.
    pub const EXE: u16 = 1;
    /// `IC_M_COMM`.
    pub const COMM: u16 = 2;
    /// `IC_M_UID`.
    pub const UID: u16 = 4;
    /// `IC_M_CGROUP`.
    pub const CGROUP: u16 = 8;
    /// `IC_M_DST`.
    pub const DST: u16 = 16;
    /// `IC_M_PORTS`.
    pub const PORTS: u16 = 32;
    /// `IC_M_PROTO`.
    pub const PROTO: u16 = 64;
    /// `IC_M_ANCESTOR`.
    pub const ANCESTOR: u16 = 128;
    /// `IC_M_DOMAIN`: the destinations are the addresses DNS answers opened for the
    /// rule's `dst_domain` (not in the classifier).
    pub const DOMAIN: u16 = 256;
}

/// `enum ic_egress_action`: what a rule does, or what happened to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EgressAction {
    /// `IC_EGRESS_ALLOW`.
    Allow = 1,
    /// `IC_EGRESS_DENY`: the call fails with EPERM.
    Deny = 2,
    /// `IC_EGRESS_LOG`: allow and report.
    Log = 3,
    /// `IC_EGRESS_RATE_LIMITED`: allowed by policy, over the rate limit (EPERM).
    RateLimited = 4,
}

impl EgressAction {
    /// Decodes the kernel's byte.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Allow),
            2 => Some(Self::Deny),
            3 => Some(Self::Log),
            4 => Some(Self::RateLimited),
            _ => None,
        }
    }

    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Log => "log",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// `enum ic_egress_key_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EgressKeyKind {
    /// `IC_KEY_ANY`: rules with no identity field.
    Any = 0,
    /// `IC_KEY_EXE`.
    Exe = 1,
    /// `IC_KEY_COMM`.
    Comm = 2,
    /// `IC_KEY_UID`.
    Uid = 3,
    /// `IC_KEY_CGROUP`.
    Cgroup = 4,
}

/// `enum ic_egress_total`: index of the egress totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EgressTotal {
    /// `IC_ETOTAL_ALLOWED`.
    Allowed = 0,
    /// `IC_ETOTAL_DENIED`.
    Denied = 1,
    /// `IC_ETOTAL_LOGGED`.
    Logged = 2,
    /// `IC_ETOTAL_RATE_LIMITED`.
    RateLimited = 3,
    /// `IC_ETOTAL_UNKNOWN_PROCESS`.
    UnknownProcess = 4,
    /// `IC_ETOTAL_EVENTS_LOST`.
    EventsLost = 5,
}

impl EgressTotal {
    /// `IC_ETOTAL_COUNT`.
    pub const COUNT: u32 = 6;
    /// Every total, in index order.
    pub const ALL: [Self; 6] = [
        Self::Allowed,
        Self::Denied,
        Self::Logged,
        Self::RateLimited,
        Self::UnknownProcess,
        Self::EventsLost,
    ];

    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Logged => "logged",
            Self::RateLimited => "rate_limited",
            Self::UnknownProcess => "unknown_process",
            Self::EventsLost => "events_lost",
        }
    }
}

/// `struct ic_proc_exe`: an executable as the kernel identifies it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(C)]
pub struct ProcExe {
    /// Device, kernel encoding.
    pub dev: u32,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: u32,
    /// Inode.
    pub ino: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
}

impl ProcExe {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_proc_info`: a process in the identity firewall's process table.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ProcInfo {
    /// The executable.
    pub exe: ProcExe,
    /// Parent's thread-group id.
    pub ppid: u32,
    /// User id at exec.
    pub uid: u32,
    /// Group id at exec.
    pub gid: u32,
    /// Explicit padding.
    pub _pad0: u32,
    /// Cgroup id at exec.
    pub cgroup_id: u64,
    /// Command name at exec, NUL-padded.
    pub comm: [u8; 16],
    /// Start time, clock ticks since boot (`/proc/PID/stat` field 22).
    pub start: u64,
    /// The parent's start time, the same unit: the ancestor walk follows `ppid` only to
    /// the process that started then.
    pub pstart: u64,
}

/// Nanoseconds per clock tick of `/proc` (`IC_NSEC_PER_TICK`; `USER_HZ` is 100).
pub const NSEC_PER_TICK: u64 = 10_000_000;

impl ProcInfo {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 80;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_egress_rule`: one compiled egress rule.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressRule {
    /// Counter index.
    pub rule_id: u32,
    /// [`egress_match`] flags.
    pub match_: u16,
    /// [`EgressAction`] (allow, deny, log) as its byte.
    pub action: u8,
    /// IP protocol when [`egress_match::PROTO`].
    pub proto: u8,
    /// Destination network (IPv6 or IPv4-mapped), network order.
    pub dst: [u8; 16],
    /// Prefix length over the 128-bit address.
    pub prefixlen: u8,
    /// Explicit padding.
    pub _pad0: u8,
    /// Lowest port, inclusive.
    pub port_lo: u16,
    /// Highest port, inclusive.
    pub port_hi: u16,
    /// Explicit padding.
    pub _pad1: u16,
    /// User id.
    pub uid: u32,
    /// Explicit padding.
    pub _pad2: u32,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// Executable identity.
    pub exe: ProcExe,
    /// Command name, NUL-padded.
    pub comm: [u8; 16],
    /// [`egress_match::ANCESTOR`]: the ancestor's executable.
    pub ancestor: ProcExe,
    /// How many ancestors to look at (1 = the parent only).
    pub ancestor_depth: u8,
    /// Explicit padding.
    pub _pad3: [u8; 7],
}

impl EgressRule {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 120;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_egress_key`: one identity value rules are indexed by.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(C)]
pub struct EgressKey {
    /// [`EgressKeyKind`] as its byte.
    pub kind: u8,
    /// Explicit padding.
    pub _pad0: [u8; 7],
    /// The value: a [`ProcExe`] image, 16 comm bytes, a u32 uid or a u64 cgroup id,
    /// zero-padded.
    pub value: [u8; 24],
}

impl EgressKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 32;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_egress_bucket`: one identity key's id (its classes are tagged with it)
/// and rule count.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressBucket {
    /// The key's id in its generation.
    pub id: u32,
    /// How many rules (entries) the key has.
    pub rules: u32,
}

impl EgressBucket {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// The key of bit `bit` of protocol bucket `proto` (0 tcp, 1 udp, 2 other) of key
    /// `id` in `ic_egress_slots`.
    pub fn slot_key(generation: u32, proto: u32, id: u32, bit: u32) -> u32 {
        (generation & 1) << 31 | (proto & 3) << 29 | (id & 0x7fff) << 14 | (bit & 0x3fff)
    }
}

/// `IC_EGRESS_F_DST_FILTER`: every live rule names destinations and every prefix they
/// name is in the destination filter (`ic_egress_dst_trie`, or `ic_egress_dst` with
/// [`EGRESS_F_DST_HASH`]) with its [`EgressDstOwner`]; a destination in none is decided
/// by the default without looking up any identity key.
pub const EGRESS_F_DST_FILTER: u8 = 1;

/// `IC_EGRESS_F_DST_HASH`: with [`EGRESS_F_DST_FILTER`], the union has at most
/// [`EGRESS_DST_HASH_LENGTHS`] prefix lengths (one: a feed's /32s, networks of one
/// size) and the filter is the hash `ic_egress_dst` (one lookup per length, the
/// lengths in `ic_egress_dst_lengths`) instead of the trie.
pub const EGRESS_F_DST_HASH: u8 = 2;
/// `IC_EGRESS_NOTE_ENCRYPTED_DNS`: an allowed connect() to encrypted DNS (port 853,
/// or port 443 of a known DNS-over-HTTPS resolver), reported because the names it
/// resolves are never seen.
pub const EGRESS_NOTE_ENCRYPTED_DNS: u8 = 1;
/// `IC_DNS_ENCRYPTED`: known DNS-over-HTTPS resolver addresses the kernel takes.
pub const DNS_ENCRYPTED: usize = 256;
/// `IC_EGRESS_F_DOMAINS`: domain rules or domain feeds are live (a connect is also
/// looked up among the addresses DNS answers opened or a feed's names resolved to).
pub const EGRESS_F_DOMAINS: u8 = 4;

/// `IC_EGRESS_DST_HASH_LENGTHS`: prefix lengths the hashed destination filter takes.
pub const EGRESS_DST_HASH_LENGTHS: usize = 1;

/// `struct ic_egress_dst_key`: a prefix of the destination filter in `ic_egress_dst`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressDstKey {
    /// The generation (0 or 1).
    pub generation: u8,
    /// 0..=128, over the IPv4-mapped address.
    pub prefixlen: u8,
    /// Explicit padding.
    pub _pad0: [u8; 6],
    /// Network order, the bits past `prefixlen` zero.
    pub addr: [u8; 16],
}

impl EgressDstKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a key; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_egress_dst_lengths`: the prefix lengths of one generation's union in
/// `ic_egress_dst`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressDstLengths {
    /// How many of `prefixlen` are lengths (at most [`EGRESS_DST_HASH_LENGTHS`]).
    pub count: u8,
    /// The lengths.
    pub prefixlen: [u8; 7],
}

impl EgressDstLengths {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `IC_EGRESS_OWNERS_SEVERAL`: [`EgressDstOwner::kind`] when the rules of more than
/// one identity key name the destinations (each key is searched).
pub const EGRESS_OWNERS_SEVERAL: u8 = 255;

/// `IC_EGRESS_NO_CLASS`: [`EgressDstOwner::classes`] for a protocol none of whose
/// rules (of the owner key) names the destinations.
pub const EGRESS_NO_CLASS: u32 = 0x7fff_ffff;

/// `struct ic_egress_dst_owner`: what the destination filter knows of the destinations
/// whose longest prefix among every live rule's is its entry's. When the rules naming
/// them all belong to one identity key: that key, and its destination class per
/// protocol with the class's summary (the kernel then skips the key's index entry,
/// destination trie and summary).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressDstOwner {
    /// [`EgressKeyKind`] byte of the one key, or [`EGRESS_OWNERS_SEVERAL`].
    pub kind: u8,
    /// Explicit padding.
    pub _pad0: u8,
    /// The key's id ([`EgressBucket::id`]).
    pub id: u16,
    /// Per protocol (tcp, udp, other): the key's class of these destinations, or
    /// [`EGRESS_NO_CLASS`].
    pub classes: [u32; 3],
    /// The key's value, as in [`EgressKey::value`].
    pub value: [u8; 24],
    /// Each class's summary (zero for none).
    pub summaries: [FwSummary; 3],
}

impl EgressDstOwner {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 136;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_egress_config`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressConfig {
    /// The count of policy swaps: rule set `generation & 1` is live. The kernel's
    /// verdict memo is keyed by the whole count.
    pub generation: u32,
    /// [`EgressAction`] byte: allow or deny.
    pub default_action: u8,
    /// Bit `k`: the live rules have identity keys of [`EgressKeyKind`] `k` (the kinds
    /// with none are not looked up).
    pub kinds: u8,
    /// [`egress_match`] flags of the caller's fields the live rules compare
    /// (`EXE`, `COMM`, `CGROUP`, `ANCESTOR`): the others are not read for a decision,
    /// only for an event.
    pub needs: u8,
    /// `IC_EGRESS_F_*` flags ([`EGRESS_F_DST_FILTER`]).
    pub flags: u8,
    /// connect() attempts per second per identity; 0 = no limit.
    pub rate_per_sec: u32,
    /// Bucket size.
    pub rate_burst: u32,
}

impl EgressConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_egress_event`: a denied, rate-limited or logged attempt.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EgressEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// User id.
    pub uid: u32,
    /// The rule that decided; 0 for the default.
    pub rule_id: u32,
    /// The executable (zeros if unknown).
    pub exe: ProcExe,
    /// Destination (IPv6 or IPv4-mapped), network order.
    pub dst: [u8; 16],
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`EgressAction`] byte.
    pub verdict: u8,
    /// `enum ic_egress_hook`: 1 connect4, 2 connect6, 3 sendmsg4, 4 sendmsg6.
    pub hook: u8,
    /// The domain feed (1-based) whose name resolved to `dst`, when that is why the
    /// attempt was refused (`rule_id` is then 0); else 0.
    pub feed: u8,
    /// Why an allowed attempt is reported: [`EGRESS_NOTE_ENCRYPTED_DNS`]; else 0.
    pub note: u8,
    /// Explicit padding.
    pub _pad0: [u8; 1],
    /// Command name, NUL-padded.
    pub comm: [u8; 16],
}

impl EgressEvent {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 104;

    /// Decodes a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<ProcExe>() == ProcExe::SIZE);
    assert!(size_of::<ProcInfo>() == ProcInfo::SIZE);
    assert!(size_of::<EgressRule>() == EgressRule::SIZE);
    assert!(size_of::<EgressKey>() == EgressKey::SIZE);
    assert!(size_of::<EgressBucket>() == EgressBucket::SIZE);
    assert!(size_of::<EgressDstKey>() == EgressDstKey::SIZE);
    assert!(size_of::<EgressDstLengths>() == EgressDstLengths::SIZE);
    assert!(size_of::<EgressConfig>() == EgressConfig::SIZE);
    assert!(size_of::<EgressEvent>() == EgressEvent::SIZE);
};

/// `IC_DNS_CAPTURE`: DNS payload bytes copied per packet, at most.
pub const DNS_CAPTURE: usize = 512;
/// `IC_SOCKETS`: sockets whose owner is tracked.
pub const TELEMETRY_SOCKETS: u32 = 65_536;
/// `IC_DIR_OUT`: sent by the socket's owner.
pub const DIR_OUT: u8 = 1;
/// `IC_DIR_IN`: received by the socket's owner.
pub const DIR_IN: u8 = 2;

/// `struct ic_bandwidth`: traffic of one process.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Bandwidth {
    /// Bytes sent: IP packet lengths, headers included.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// TCP/UDP payload bytes sent.
    pub tx_payload: u64,
    /// Bytes received: IP packet lengths, headers included.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// TCP/UDP payload bytes received.
    pub rx_payload: u64,
    /// The process's executable when first counted.
    pub exe: ProcExe,
    /// Its command name when first counted, NUL-padded.
    pub comm: [u8; 16],
}

impl Bandwidth {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 88;

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_telemetry_config`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TelemetryConfig {
    /// Non-zero: report DNS packets.
    pub dns: u32,
    /// Non-zero: count bytes per process.
    pub bandwidth: u32,
}

impl TelemetryConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_sock_owner`: who created a socket.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SockOwner {
    /// Thread-group id.
    pub tgid: u32,
    /// User id.
    pub uid: u32,
    /// Command name, NUL-padded.
    pub comm: [u8; 16],
}

/// `struct ic_dns_event` without its data: the fixed part of a DNS record; `len` bytes
/// of payload follow at [`DnsEvent::DATA_OFFSET`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DnsEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// The socket owner's thread-group id (0 if unknown).
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its executable (zeros if unknown).
    pub exe: ProcExe,
    /// Its command name.
    pub comm: [u8; 16],
    /// Source address (IPv6 or IPv4-mapped).
    pub src: [u8; 16],
    /// Destination address (IPv6 or IPv4-mapped).
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol (UDP, or TCP with a 2-byte length before the message).
    pub proto: u8,
    /// [`DIR_OUT`] or [`DIR_IN`].
    pub direction: u8,
    /// Explicit padding.
    pub _pad0: [u8; 2],
    /// Payload bytes captured.
    pub len: u32,
    /// Payload bytes in the packet.
    pub total: u32,
}

impl DnsEvent {
    /// Offset of the payload (`offsetof(struct ic_dns_event, data)`).
    pub const DATA_OFFSET: usize = 112;
    /// Size of the whole C record.
    pub const RECORD_SIZE: usize = Self::DATA_OFFSET + DNS_CAPTURE;

    /// Decodes the fixed part of a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The byte image of a whole record carrying `data` (at most [`DNS_CAPTURE`] bytes).
    pub fn to_record(&self, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; Self::RECORD_SIZE];
        out[..Self::DATA_OFFSET].copy_from_slice(self.as_bytes());
        let n = data.len().min(DNS_CAPTURE);
        out[Self::DATA_OFFSET..Self::DATA_OFFSET + n].copy_from_slice(&data[..n]);
        out
    }
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Bandwidth>() == Bandwidth::SIZE);
    assert!(size_of::<TelemetryConfig>() == TelemetryConfig::SIZE);
    assert!(size_of::<SockOwner>() == 24);
    assert!(size_of::<DnsEvent>() == DnsEvent::DATA_OFFSET);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_socket_reads_as_its_addresses_in_each_family() {
        let mut sock = TlsSock {
            family: 2,
            lport: 40112,
            rport: 443,
            ..TlsSock::default()
        };
        sock.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        sock.raddr[..4].copy_from_slice(&[192, 0, 2, 7]);
        let (local, remote) = sock.addresses().unwrap();
        assert_eq!(local.to_string(), "10.0.0.2:40112");
        assert_eq!(remote.to_string(), "192.0.2.7:443");
        sock.family = 10;
        sock.laddr = std::net::Ipv6Addr::LOCALHOST.octets();
        sock.raddr = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let (local, remote) = sock.addresses().unwrap();
        assert_eq!(local.to_string(), "[::1]:40112");
        assert_eq!(remote.to_string(), "[2001:db8::1]:443");
        sock.family = 0;
        assert_eq!(sock.addresses(), None);
    }

    /// The derived images: fields where the C header puts them (native byte order),
    /// padding as stored, and a round trip back; a short slice decodes to nothing.
    #[test]
    fn byte_images_put_each_field_at_its_c_offset_and_read_back() {
        let rule = Rule::new(0x0102_0304, Action::Allow);
        let image = rule.to_bytes();
        assert_eq!(image[..4], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(image[4], Action::Allow as u8);
        assert_eq!(image[5..], [0, 0, 0]);
        assert_eq!(Rule::from_bytes(&image), Some(rule));
        assert_eq!(Rule::from_bytes(&image[..Rule::SIZE - 1]), None);

        let key = LpmV6Key {
            prefixlen: 48,
            addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        assert_eq!(LpmV6Key::from_bytes(&key.to_bytes()), Some(key));
        let bucket = EgressBucket { id: 7, rules: 2 };
        let image = bucket.to_bytes();
        assert_eq!(image[..4], 7u32.to_ne_bytes());
        assert_eq!(image[4..], 2u32.to_ne_bytes());
        assert_eq!(
            EgressBucket::slot_key(1, 2, 3, 4),
            1 << 31 | 2 << 29 | 3 << 14 | 4
        );
    }

    #[test]
    fn byte_images_round_trip() {
        let k = LpmV4Key {
            prefixlen: 24,
            addr: [10, 1, 2, 0],
        };
        assert_eq!(LpmV4Key::from_bytes(&k.to_bytes()), Some(k));
        let k6 = LpmV6Key {
            prefixlen: 64,
            addr: [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        assert_eq!(LpmV6Key::from_bytes(&k6.to_bytes()), Some(k6));
        let r = Rule::new(7, Action::Deny);
        assert_eq!(r.to_bytes(), [7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Rule::from_bytes(&r.to_bytes()), Some(r));
        let c = Counter {
            packets: 3,
            bytes: 180,
        };
        assert_eq!(Counter::from_bytes(&c.to_bytes()), Some(c));
        let cfg = ShieldConfig {
            flags: SHIELD_F_DRY_RUN,
            sample_rate: 10,
            rate_pps: 1000,
            rate_burst: 2000,
            events_per_sec: 500,
        };
        assert_eq!(ShieldConfig::from_bytes(&cfg.to_bytes()), Some(cfg));
        let ev = ShieldEvent {
            hdr: EventHeader {
                version: 1,
                kind: EventKind::Shield as u16,
                size: ShieldEvent::SIZE as u32,
                ktime_ns: 123,
            },
            src: [7; 16],
            dst: [9; 16],
            rule_id: 3,
            ifindex: 2,
            pkt_len: 98,
            sport: 40000,
            dport: 53,
            family: 6,
            proto: 17,
            verdict: ShieldVerdict::Drop as u8,
            _pad0: [0; 5],
        };
        assert_eq!(ShieldEvent::from_bytes(&ev.to_bytes()), Some(ev));
        // Fields where the C header puts them, native byte order.
        let image = ev.to_bytes();
        assert_eq!(image[8..16], 123u64.to_ne_bytes());
        assert_eq!(image[16..32], [7; 16]);
        assert_eq!(image[60..62], 40000u16.to_ne_bytes());
        assert_eq!(image[64], 6);
        // A longer slice (a record with data after the fixed part) decodes its prefix.
        let mut longer = image.to_vec();
        longer.extend_from_slice(&[9; 8]);
        assert_eq!(ShieldEvent::from_bytes(&longer), Some(ev));
    }

    #[test]
    fn short_buffers_are_rejected_not_panicking() {
        assert_eq!(LpmV4Key::from_bytes(&[1, 2, 3]), None);
        assert_eq!(LpmV6Key::from_bytes(&[0; 19]), None);
        assert_eq!(Rule::from_bytes(&[0; 7]), None);
        assert_eq!(Counter::from_bytes(&[0; 15]), None);
        assert_eq!(ShieldConfig::from_bytes(&[]), None);
        assert_eq!(EventHeader::from_bytes(&[0; 15]), None);
        assert_eq!(ShieldEvent::from_bytes(&[0; 71]), None);
    }

    #[test]
    fn counters_sum_across_cpus() {
        let per_cpu = [
            Counter {
                packets: 1,
                bytes: 60,
            },
            Counter {
                packets: 2,
                bytes: 120,
            },
        ];
        assert_eq!(
            Counter::sum(&per_cpu),
            Counter {
                packets: 3,
                bytes: 180
            }
        );
    }

    #[test]
    fn action_decoding_is_total() {
        assert_eq!(Action::from_raw(1), Some(Action::Deny));
        assert_eq!(Action::from_raw(2), Some(Action::Allow));
        assert_eq!(Action::from_raw(0), Some(Action::None));
        assert_eq!(Action::from_raw(3), None);
    }
}

// ---- Sentinel ----

/// `IC_SEN_PROTECT` (`enum ic_sentinel_node_flags`): changes refused to everyone but the
/// agent and the update manager.
pub const SEN_PROTECT: u32 = 1;
/// `IC_SEN_MONITOR`: changes reported.
pub const SEN_MONITOR: u32 = 2;
/// `IC_SEN_TREE`: a directory whose protect/monitor flags apply to everything below it.
pub const SEN_TREE: u32 = 4;
/// `IC_SEN_ANCESTOR`: a directory above a protected path (no mount over it, no rename).
pub const SEN_ANCESTOR: u32 = 8;
/// `IC_SEN_AGENT`: the agent's executable.
pub const SEN_AGENT: u32 = 16;
/// `IC_SEN_AGENT_DIR`: a protected directory whose executables are agent builds.
pub const SEN_AGENT_DIR: u32 = 32;
/// `IC_SEN_MANAGER`: the update manager's executable.
pub const SEN_MANAGER: u32 = 64;
/// `IC_SEN_F_ENFORCE` (`struct ic_sentinel_config.flags`): refuse, not only report.
pub const SEN_F_ENFORCE: u32 = 1;
/// `IC_SEN_NODES`: inodes the Sentinel knows, at most.
pub const SEN_NODES: u32 = 65_536;
/// `IC_SEN_OBJECTS`: protected BPF objects, at most.
pub const SEN_OBJECTS: u32 = 4_096;
/// `IC_SEN_DEPTH`: directory levels searched above a file for a protected tree.
pub const SEN_DEPTH: u32 = 16;
/// `IC_SEN_NAME`: bytes of a file name reported.
pub const SEN_NAME: usize = 64;
/// `IC_SEN_RING_BYTES`: capacity of the Sentinel's event ring buffer.
pub const SEN_RING_BYTES: u32 = 262_144;
/// `IC_SEN_PRCTL_REGISTER`: the `prctl` option of the agent registration handshake.
pub const SEN_PRCTL_REGISTER: i32 = 0x4943_4c44;

/// `enum ic_sentinel_op`: what a Sentinel event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum SentinelOp {
    /// Open for writing (O_WRONLY/O_RDWR, with O_TRUNC or O_APPEND too).
    OpenWrite = 1,
    /// A write through an open file.
    Write = 2,
    /// truncate(2).
    Truncate = 3,
    /// Unlink.
    Unlink = 4,
    /// Remove a directory.
    Rmdir = 5,
    /// Rename to or from.
    Rename = 6,
    /// A hard link to it or in it.
    Link = 7,
    /// A new file, directory, node or symlink.
    Create = 8,
    /// chmod.
    Chmod = 9,
    /// chown.
    Chown = 10,
    /// setxattr / removexattr.
    Xattr = 11,
    /// Mount (or move_mount) onto the path.
    Mount = 12,
    /// A writable fd to a protected map.
    BpfMap = 13,
    /// An fd to a protected link, or detaching or updating one.
    BpfLink = 14,
    /// A signal to the agent.
    Signal = 16,
    /// ptrace attach (or /proc/pid/mem, process_vm_writev, pidfd_getfd) on the agent.
    Ptrace = 17,
    /// The agent registration handshake.
    Register = 18,
    /// A tc filter, chain or clsact qdisc change, or a tcx attach, on a protected
    /// interface (arg: its ifindex).
    Tc = 19,
}

impl SentinelOp {
    /// Every operation, in ABI order.
    pub const ALL: [SentinelOp; 18] = [
        Self::OpenWrite,
        Self::Write,
        Self::Truncate,
        Self::Unlink,
        Self::Rmdir,
        Self::Rename,
        Self::Link,
        Self::Create,
        Self::Chmod,
        Self::Chown,
        Self::Xattr,
        Self::Mount,
        Self::BpfMap,
        Self::BpfLink,
        Self::Signal,
        Self::Ptrace,
        Self::Register,
        Self::Tc,
    ];

    /// The operation with ABI value `raw`.
    pub fn from_raw(raw: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|op| *op as u16 == raw)
    }

    /// A short lower-case name (`open_write`, `unlink`, `bpf_map`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenWrite => "open_write",
            Self::Write => "write",
            Self::Truncate => "truncate",
            Self::Unlink => "unlink",
            Self::Rmdir => "rmdir",
            Self::Rename => "rename",
            Self::Link => "link",
            Self::Create => "create",
            Self::Chmod => "chmod",
            Self::Chown => "chown",
            Self::Xattr => "xattr",
            Self::Mount => "mount",
            Self::BpfMap => "bpf_map",
            Self::BpfLink => "bpf_link",
            Self::Signal => "signal",
            Self::Ptrace => "ptrace",
            Self::Register => "register",
            Self::Tc => "tc",
        }
    }
}

/// `enum ic_sentinel_verdict`: what the Sentinel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum SentinelVerdict {
    /// Refused with EPERM.
    Denied = 1,
    /// Allowed and reported (a monitored path, or the agent's own change).
    Allowed = 2,
    /// Monitor-only mode: would have been refused.
    WouldDeny = 3,
    /// The agent registered.
    Registered = 4,
}

impl SentinelVerdict {
    /// The verdict with ABI value `raw`.
    pub fn from_raw(raw: u8) -> Option<Self> {
        [
            Self::Denied,
            Self::Allowed,
            Self::WouldDeny,
            Self::Registered,
        ]
        .into_iter()
        .find(|v| *v as u8 == raw)
    }

    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Allowed => "allowed",
            Self::WouldDeny => "would_deny",
            Self::Registered => "registered",
        }
    }
}

/// `enum ic_bpf_object_kind`: kinds of protected BPF objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum BpfObjectKind {
    /// A map.
    Map = 1,
    /// A program.
    Prog = 2,
    /// A link.
    Link = 3,
    /// An interface whose tc hooks carry protected programs (id: its ifindex, in the
    /// namespace of a [`Netns`](Self::Netns) entry).
    Iface = 4,
    /// The network namespace of the protected interfaces (id: its inode number).
    Netns = 5,
}

/// `struct ic_inode_key`: an inode as the kernel identifies it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
)]
#[repr(C)]
pub struct InodeKey {
    /// Inode number.
    pub ino: u64,
    /// Device, kernel encoding (`major << 20 | minor`).
    pub dev: u32,
    /// Explicit padding, always zero.
    pub _pad0: u32,
}

impl InodeKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a key; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// A Sentinel struct that is one `u32` of flags and explicit padding.
macro_rules! flags_struct {
    ($(#[$doc:meta])* $name:ident, $flags:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable,
            KnownLayout,
        )]
        #[repr(C)]
        pub struct $name {
            #[doc = $flags]
            pub flags: u32,
            /// Explicit padding, always zero.
            pub _pad0: u32,
        }

        impl $name {
            /// Size of the C struct in bytes.
            pub const SIZE: usize = 8;

            /// The exact byte image.
            pub fn to_bytes(&self) -> [u8; Self::SIZE] {
                zerocopy::transmute!(*self)
            }

            /// Decodes a value; `None` if `bytes` is too short.
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
            }
        }
    };
}

flags_struct!(
    /// `struct ic_sentinel_node`: what the Sentinel knows about an inode.
    SentinelNode,
    "`enum ic_sentinel_node_flags` bits ([`SEN_PROTECT`], ...)."
);

flags_struct!(
    /// `struct ic_sentinel_config`: the Sentinel's runtime configuration.
    SentinelConfig,
    "`enum ic_sentinel_flags` bits ([`SEN_F_ENFORCE`])."
);

/// `struct ic_bpf_object_key`: a protected BPF object.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BpfObjectKey {
    /// [`BpfObjectKind`] value.
    pub kind: u32,
    /// The kernel's id of the map, program or link (an ifindex, a namespace's inode
    /// number).
    pub id: u32,
}

impl BpfObjectKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Reads a key from its byte image (`None` if `bytes` is not [`Self::SIZE`] long).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        zerocopy::FromBytes::read_from_bytes(bytes).ok()
    }
}

/// `struct ic_sentinel_state`: who is registered as the agent.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SentinelState {
    /// Thread-group id of the registered agent; 0 when none is.
    pub agent_tgid: u64,
    /// CLOCK_MONOTONIC nanoseconds of the registration.
    pub registered_ns: u64,
}

impl SentinelState {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// Decodes a value; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_agent_mark`: the task storage of the registered agent.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct AgentMark {
    /// The executable it registered with.
    pub exe: ExeId,
}

/// `struct ic_sentinel_event`: a protected or monitored operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SentinelEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// The actor's thread-group id.
    pub pid: u32,
    /// The actor's thread id.
    pub tid: u32,
    /// The actor's uid.
    pub uid: u32,
    /// Signal or ptrace target (thread-group id), else 0.
    pub target_pid: u32,
    /// [`SentinelOp`] value.
    pub op: u16,
    /// [`SentinelVerdict`] value.
    pub verdict: u8,
    /// Explicit padding.
    pub _pad0: u8,
    /// Signal, ptrace mode, map/link id, open flags or mode, by operation.
    pub arg: u32,
    /// The actor's executable (dev 0 for kernel threads).
    pub exe: ExeId,
    /// The inode acted on (zeros if none yet, e.g. a file being created).
    pub target: ExeId,
    /// Its directory.
    pub parent: ExeId,
    /// The actor's command name, NUL-padded.
    pub comm: [u8; 16],
    /// The target's name in its directory, NUL-terminated.
    pub name: [u8; SEN_NAME],
}

impl Default for SentinelEvent {
    fn default() -> Self {
        Self {
            hdr: EventHeader::default(),
            pid: 0,
            tid: 0,
            uid: 0,
            target_pid: 0,
            op: 0,
            verdict: 0,
            _pad0: 0,
            arg: 0,
            exe: ExeId::default(),
            target: ExeId::default(),
            parent: ExeId::default(),
            comm: [0; 16],
            name: [0; SEN_NAME],
        }
    }
}

impl SentinelEvent {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 168;

    /// Decodes a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<InodeKey>() == InodeKey::SIZE);
    assert!(size_of::<SentinelNode>() == SentinelNode::SIZE);
    assert!(size_of::<BpfObjectKey>() == BpfObjectKey::SIZE);
    assert!(size_of::<SentinelConfig>() == SentinelConfig::SIZE);
    assert!(size_of::<SentinelState>() == SentinelState::SIZE);
    assert!(size_of::<AgentMark>() == ExeId::SIZE);
    assert!(size_of::<SentinelEvent>() == SentinelEvent::SIZE);
};

/// `IC_PROC_PATH`: bytes of the path as executed in a [`ProcessEvent`].
pub const PROC_PATH: usize = 256;
/// `IC_PROC_ARGS`: bytes of the argument vector in a [`ProcessEvent`].
pub const PROC_ARGS: usize = 256;
/// `IC_PROC_RING_BYTES`: capacity of the process monitor's ring buffer.
pub const PROC_RING_BYTES: u32 = 1 << 20;

/// `enum ic_process_op`: what happened to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProcessOp {
    /// `IC_PROC_OP_EXEC`: it executed a new program.
    Exec = 1,
    /// `IC_PROC_OP_FORK`: it was created (a process, not a thread).
    Fork = 2,
    /// `IC_PROC_OP_EXIT`: its last thread ended.
    Exit = 3,
}

impl ProcessOp {
    /// The op of a raw value, if it is one.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            _ => None,
        }
    }
}

/// Flags of a [`ProcessEvent`] (`enum ic_process_flags`).
pub mod process_flags {
    /// `IC_PROC_F_PATH_TRUNCATED`: the path was longer than [`super::PROC_PATH`].
    pub const PATH_TRUNCATED: u8 = 1;
    /// `IC_PROC_F_ARGS_TRUNCATED`: the arguments were longer than [`super::PROC_ARGS`].
    pub const ARGS_TRUNCATED: u8 = 2;
    /// `IC_PROC_F_SCRIPT`: the path names a script; the executable is its interpreter.
    pub const SCRIPT: u8 = 4;
}

/// `enum ic_process_stat`: indices of the process monitor's per-CPU counters.
pub mod process_stat {
    /// `IC_PSTAT_EVENTS`: records written.
    pub const EVENTS: u32 = 0;
    /// `IC_PSTAT_LOST`: records the ring buffer had no room for.
    pub const LOST: u32 = 1;
}

/// `struct ic_process_event`: one exec, fork or exit.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ProcessEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// Thread-group id.
    pub pid: u32,
    /// The parent's thread-group id.
    pub ppid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Cgroup id (the cgroup directory's inode).
    pub cgroup_id: u64,
    /// The process's start, ns since boot (`start_boottime`, as /proc/PID/stat counts).
    pub start_ns: u64,
    /// The executable (all zero if none).
    pub exe: ProcExe,
    /// Exit: the wait status.
    pub exit_code: i32,
    /// [`ProcessOp`] as a raw value.
    pub op: u8,
    /// [`process_flags`].
    pub flags: u8,
    /// Bytes of `path` used.
    pub path_len: u16,
    /// Bytes of `args` used.
    pub args_len: u16,
    /// Explicit padding.
    pub _pad0: [u8; 6],
    /// The process's command name, NUL-padded.
    pub comm: [u8; 16],
    /// Exec: the path as executed.
    pub path: [u8; PROC_PATH],
    /// Exec: the argument vector, NUL-separated.
    pub args: [u8; PROC_ARGS],
}

impl ProcessEvent {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// Decodes a record; `None` if `bytes` is too short. Offsets come from this
    /// `repr(C)` struct, which ironclad-bpf's layout checks compare with the C header.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The path as executed (empty unless an exec).
    pub fn path(&self) -> &[u8] {
        &self.path[..usize::from(self.path_len).min(PROC_PATH)]
    }

    /// The argument vector's bytes (empty unless an exec).
    pub fn args(&self) -> &[u8] {
        &self.args[..usize::from(self.args_len).min(PROC_ARGS)]
    }
}

/// `enum ic_ct_state`: the state of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum CtState {
    /// `IC_CT_NEW`: UDP or ICMP, one direction seen.
    New = 0,
    /// `IC_CT_SYN_SENT`: TCP, the opening SYN seen.
    SynSent = 1,
    /// `IC_CT_SYN_RECV`: TCP, the SYN-ACK seen.
    SynRecv = 2,
    /// `IC_CT_ESTABLISHED`: TCP handshake done; UDP or ICMP answered.
    Established = 3,
    /// `IC_CT_FIN_WAIT`: TCP, one side closed.
    FinWait = 4,
    /// `IC_CT_CLOSING`: TCP, both sides closed or reset.
    Closing = 5,
}

impl CtState {
    /// Number of states (`IC_CT_STATE_COUNT`).
    pub const COUNT: usize = 6;

    /// The state a kernel byte names, if any.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::New,
            1 => Self::SynSent,
            2 => Self::SynRecv,
            3 => Self::Established,
            4 => Self::FinWait,
            5 => Self::Closing,
            _ => return None,
        })
    }

    /// Stable lower-case name, as used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::SynSent => "syn_sent",
            Self::SynRecv => "syn_recv",
            Self::Established => "established",
            Self::FinWait => "fin_wait",
            Self::Closing => "closing",
        }
    }
}

/// `IC_CT_F_ORIG_LO`: the side that opened the connection is the key's lower end.
pub const CT_F_ORIG_LO: u8 = 1;
/// `IC_CT_F_INBOUND`: the connection was opened from outside.
pub const CT_F_INBOUND: u8 = 2;
/// `IC_CT_F_FIN_LO`: the lower end sent FIN.
pub const CT_F_FIN_LO: u8 = 4;
/// `IC_CT_F_FIN_HI`: the higher end sent FIN.
pub const CT_F_FIN_HI: u8 = 8;
/// `IC_CT_F_RECORD`: the connection's start was reported as a flow record; its end is
/// reported too.
pub const CT_F_RECORD: u8 = 16;
/// `IC_CT_F_RESET`: a RST closed the connection.
pub const CT_F_RESET: u8 = 32;
/// `IC_CT_F_INSPECT`: the IDS inspects the connection (its payload goes to user space).
pub const CT_F_INSPECT: u8 = 64;
/// `IC_CT_F_WINDOW`: both sides' sequence numbers and windows are known; a RST or FIN
/// outside the window is invalid.
pub const CT_F_WINDOW: u8 = 128;

/// `struct ic_ct_key`: a connection's two ends in canonical order (IPv4 as IPv4-mapped
/// IPv6).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CtKey {
    /// The lower address, network order.
    pub addr_lo: [u8; 16],
    /// The higher address, network order.
    pub addr_hi: [u8; 16],
    /// The lower end's port (ICMP echo: the identifier), host order.
    pub port_lo: u16,
    /// The higher end's port, host order.
    pub port_hi: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Padding, zero.
    pub _pad0: [u8; 3],
}

impl CtKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 40;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a key read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_ct_entry`: a tracked connection.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CtEntry {
    /// When it opened, `CLOCK_MONOTONIC` ns.
    pub created_ns: u64,
    /// Its last packet, `CLOCK_MONOTONIC` ns.
    pub last_seen_ns: u64,
    /// Packets from the side that opened it.
    pub packets_orig: u64,
    /// Bytes from the side that opened it.
    pub bytes_orig: u64,
    /// Packets from the other side.
    pub packets_reply: u64,
    /// Bytes from the other side.
    pub bytes_reply: u64,
    /// The local socket's cgroup when the host opened it through a socket; else 0.
    pub cgroup_id: u64,
    /// The interface it was first seen on.
    pub ifindex: u32,
    /// The rule that admitted it; 0: the default policy.
    pub rule_id: u32,
    /// The process that sent its first packet, when the host opened it; opened from
    /// outside (TCP), the process that accepted it, where the accept hook runs
    /// (`Firewall::attach_accept`); else 0.
    pub pid: u32,
    /// [`CtState`] as a byte.
    pub state: u8,
    /// `CT_F_*` flags.
    pub flags: u8,
    /// TCP: each side's window scale (`[0]` the lower address's side, `[1]` the
    /// other's); [`CT_WSCALE_NONE`]: its SYN offered none.
    pub wscale: [u8; 2],
    /// TCP: each side's next sequence number, after the last data, SYN or FIN it sent
    /// inside the window.
    pub seq_end: [u32; 2],
    /// TCP: the largest window each side advertised, in bytes (scaled).
    pub max_win: [u32; 2],
}

/// `IC_CT_WSCALE_NONE`: [`CtEntry::wscale`] of a side whose SYN offered no scale.
pub const CT_WSCALE_NONE: u8 = 0xff;

impl CtEntry {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 88;

    /// The exact byte image (tests write entries to see how user space reads them).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `IC_FW_F_DROP_IN`: new inbound connections are dropped by default.
pub const FW_F_DROP_IN: u32 = 1;
/// `IC_FW_F_DROP_OUT`: new outbound connections are dropped by default.
pub const FW_F_DROP_OUT: u32 = 2;
/// `IC_FW_F_STATEFUL`: connections are tracked and invalid packets dropped.
pub const FW_F_STATEFUL: u32 = 4;
/// `IC_FW_F_DRY_RUN`: count and report, never drop.
pub const FW_F_DRY_RUN: u32 = 8;
/// `IC_FW_F_FLOWS`: flow records for every connection, not only flow rules'.
pub const FW_F_FLOWS: u32 = 16;

/// `struct ic_fw_config`: the firewall's runtime configuration.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwConfig {
    /// `FW_F_*` flags.
    pub flags: u32,
    /// The rule slot packets use (0 or 1).
    pub slot: u32,
    /// Seconds a TCP connection may stay idle, per [`CtState`].
    pub tcp_timeout: [u32; CtState::COUNT],
    /// Seconds a UDP flow seen one way may stay idle.
    pub udp_timeout: u32,
    /// Seconds an answered UDP flow may stay idle.
    pub udp_stream_timeout: u32,
    /// Seconds an ICMP echo flow may stay idle.
    pub icmp_timeout: u32,
}

impl FwConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 44;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `enum ic_syn_mode`: when the SYN-flood defence answers with cookies.
pub const SYN_OFF: u32 = 0;
/// `IC_SYN_ALWAYS`: every SYN to a protected port.
pub const SYN_ALWAYS: u32 = 1;
/// `IC_SYN_UNDER_ATTACK`: while SYNs to protected ports exceed the threshold.
pub const SYN_UNDER_ATTACK: u32 = 2;
/// `IC_SYN_PORT_WORDS`: 64-bit words of the protected-port bitmap.
pub const SYN_PORT_WORDS: u32 = 1024;
/// `IC_SYN_TS_WSCALE_NONE`: no window scale, in our timestamp's low bits.
pub const SYN_TS_WSCALE_NONE: u32 = 15;
/// `IC_SYN_TS_SACK`: SACK offered, in our timestamp's low bits.
pub const SYN_TS_SACK: u32 = 16;
/// `IC_SYN_TS_BITS`: the timestamp's low bits that carry the client's options.
pub const SYN_TS_BITS: u32 = 32;

/// `struct ic_syn_config`: the SYN-flood defence's configuration.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SynConfig {
    /// [`SYN_OFF`], [`SYN_ALWAYS`] or [`SYN_UNDER_ATTACK`].
    pub mode: u32,
    /// Under attack: SYNs a second to protected ports from which cookies answer.
    pub threshold_pps: u32,
    /// Under attack: how long cookies keep answering after the rate last exceeded it.
    pub hold_ms: u32,
    /// The MSS announced in IPv4 SYN-ACKs.
    pub mss4: u16,
    /// The MSS announced in IPv6 SYN-ACKs.
    pub mss6: u16,
    /// The window scale announced (to clients that offer one).
    pub wscale: u8,
    /// Padding.
    pub _pad0: [u8; 3],
}

impl SynConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 20;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_syn_state`: the SYN rate the XDP program measures.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SynState {
    /// CLOCK_MONOTONIC start of the current one-second window.
    pub window_ns: u64,
    /// SYNs to protected ports in it.
    pub window_syns: u64,
    /// Under attack: cookies answer until then (CLOCK_MONOTONIC).
    pub attack_until_ns: u64,
    /// Times the threshold was crossed.
    pub attacks: u64,
}

impl SynState {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 32;

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `enum ic_fw_total`: index of the firewall's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum FwTotal {
    /// Packets of a tracked connection, passed by the connection table (an IDS `drop`
    /// rule or NAT may still drop some: [`IdsBlocked`](Self::IdsBlocked),
    /// [`NatFailed`](Self::NatFailed)).
    Established = 0,
    /// ICMP errors quoting a tracked connection, passed.
    Related = 1,
    /// Packets that opened a connection.
    NewAccepted = 2,
    /// Packets that would have opened a connection (or, stateless, any packet) that a
    /// rule or the default policy dropped or rejected, a rule's rate limit or a
    /// new-connection limit refused ([`Rejected`](Self::Rejected),
    /// [`RateLimited`](Self::RateLimited) and the `Limit*` totals say which).
    Dropped = 3,
    /// Packets that belong to no connection and cannot open one.
    Invalid = 4,
    /// New connections dropped because the table was full.
    TableFull = 5,
    /// Packets not tracked (other protocols, fragments, neighbour discovery, and every
    /// packet when the firewall is stateless) that the rules passed; those they did not
    /// are [`Dropped`](Self::Dropped).
    Untracked = 6,
    /// Dry-run: would have been dropped, passed.
    WouldDrop = 7,
    /// Frames that are neither IPv4 nor IPv6, passed.
    NonIp = 8,
    /// Dropped by a reject rule and answered (TCP RST, ICMP port unreachable).
    Rejected = 9,
    /// Matched a rule whose rate limit was spent: dropped.
    RateLimited = 10,
    /// Log events the ring buffer had no room for.
    EventsLost = 11,
    /// SYNs to protected ports answered with a SYN cookie (XDP).
    SynCookies = 12,
    /// Handshakes completed with a valid cookie and handed to the listener.
    CookieAccepted = 13,
    /// ACKs to protected ports with no connection and no valid cookie (within
    /// [`Invalid`](Self::Invalid)).
    CookieInvalid = 14,
    /// New inbound connections over the per-source limit (`firewall.limits`).
    LimitSource = 15,
    /// Over the per-subnet limit.
    LimitSubnet = 16,
    /// Over the per-destination-port limit.
    LimitPort = 17,
    /// Over the interface's ceiling.
    LimitInterface = 18,
    /// Packets rewritten by NAT (either direction).
    NatTranslated = 19,
    /// New connections a source translation found no free port for: dropped.
    NatNoPort = 20,
    /// Translations the kernel could not write (a full table, a failed rewrite):
    /// dropped.
    NatFailed = 21,
    /// Payload snippets handed to the IDS matcher (bytes: payload bytes handed over).
    IdsSnippets = 22,
    /// Snippets the IDS ring buffer had no room for.
    IdsLost = 23,
    /// Packets of connections an IDS `drop` rule blocked: dropped (counted, not
    /// dropped, in dry-run).
    IdsBlocked = 24,
    /// First payload packets a `drop` rule's prefix matched in the kernel: dropped,
    /// their connection blocked.
    IdsKernelMatched = 25,
}

impl FwTotal {
    /// Number of totals (`IC_FW_TOTAL_COUNT`).
    pub const COUNT: u32 = 26;
    /// Every total, in index order.
    pub const ALL: [Self; 26] = [
        Self::Established,
        Self::Related,
        Self::NewAccepted,
        Self::Dropped,
        Self::Invalid,
        Self::TableFull,
        Self::Untracked,
        Self::WouldDrop,
        Self::NonIp,
        Self::Rejected,
        Self::RateLimited,
        Self::EventsLost,
        Self::SynCookies,
        Self::CookieAccepted,
        Self::CookieInvalid,
        Self::LimitSource,
        Self::LimitSubnet,
        Self::LimitPort,
        Self::LimitInterface,
        Self::NatTranslated,
        Self::NatNoPort,
        Self::NatFailed,
        Self::IdsSnippets,
        Self::IdsLost,
        Self::IdsBlocked,
        Self::IdsKernelMatched,
    ];

    /// The totals that classify a packet: the stateful firewall's programs count
    /// each packet they see under exactly one of them, so their sum is every packet
    /// seen. The other totals say more about some of those packets (why a drop, what
    /// NAT or the IDS did, events not reported) and overlap with these.
    pub const VERDICTS: [Self; 8] = [
        Self::Established,
        Self::Related,
        Self::NewAccepted,
        Self::Dropped,
        Self::Invalid,
        Self::TableFull,
        Self::Untracked,
        Self::NonIp,
    ];

    /// Whether it is one of [`VERDICTS`](Self::VERDICTS).
    pub fn is_verdict(self) -> bool {
        Self::VERDICTS.contains(&self)
    }

    /// Stable lower-case name, as used in JSON output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Related => "related",
            Self::NewAccepted => "new_accepted",
            Self::Dropped => "dropped",
            Self::Invalid => "invalid",
            Self::TableFull => "table_full",
            Self::Untracked => "untracked",
            Self::WouldDrop => "would_drop",
            Self::NonIp => "non_ip",
            Self::Rejected => "rejected",
            Self::RateLimited => "rate_limited",
            Self::EventsLost => "events_lost",
            Self::SynCookies => "syn_cookies",
            Self::CookieAccepted => "cookie_accepted",
            Self::CookieInvalid => "cookie_invalid",
            Self::LimitSource => "limit_source",
            Self::LimitSubnet => "limit_subnet",
            Self::LimitPort => "limit_port",
            Self::LimitInterface => "limit_interface",
            Self::NatTranslated => "nat_translated",
            Self::NatNoPort => "nat_no_port",
            Self::NatFailed => "nat_failed",
            Self::IdsSnippets => "ids_snippets",
            Self::IdsLost => "ids_lost",
            Self::IdsBlocked => "ids_blocked",
            Self::IdsKernelMatched => "ids_kernel_matched",
        }
    }
}

/// `enum ic_fw_limit_kind`: the rate limits on new inbound connections, narrowest
/// first (their index in [`FwLimitConfig::rates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum FwLimitKind {
    /// One bucket per source address.
    Source = 0,
    /// One per source subnet (`v4_prefix`, `v6_prefix`).
    Subnet = 1,
    /// One per protocol and destination port.
    Port = 2,
    /// One per interface: a ceiling on every source together.
    Interface = 3,
}

impl FwLimitKind {
    /// Number of kinds (`IC_FW_LIMIT_KINDS`).
    pub const COUNT: usize = 4;
    /// Every kind, narrowest first.
    pub const ALL: [Self; 4] = [Self::Source, Self::Subnet, Self::Port, Self::Interface];

    /// Stable lower-case name, as used in policies, JSON output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Subnet => "subnet",
            Self::Port => "port",
            Self::Interface => "interface",
        }
    }

    /// The kind with this code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The total that counts its refusals.
    pub fn total(self) -> FwTotal {
        match self {
            Self::Source => FwTotal::LimitSource,
            Self::Subnet => FwTotal::LimitSubnet,
            Self::Port => FwTotal::LimitPort,
            Self::Interface => FwTotal::LimitInterface,
        }
    }
}

/// `IC_FW_LIMIT_KEYS`: the limits' buckets (an LRU hash).
pub const FW_LIMIT_KEYS: u32 = 131_072;
/// `IC_FW_LIMIT_F_DRY_RUN`: a limit event's connections were only counted.
pub const FW_LIMIT_F_DRY_RUN: u8 = 1;

/// A `#[repr(C)]` mirror of a kernel struct with its size and byte conversions.
macro_rules! abi_struct {
    ($(#[$doc:meta])* $name:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable,
            KnownLayout,
        )]
        #[repr(C)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Default for $name {
            /// All zeros (arrays of any length included).
            fn default() -> Self {
                <Self as zerocopy::FromZeros>::new_zeroed()
            }
        }

        impl $name {
            /// Size of the C struct in bytes.
            pub const SIZE: usize = $size;

            /// The exact byte image the kernel expects.
            pub fn to_bytes(&self) -> [u8; Self::SIZE] {
                zerocopy::transmute!(*self)
            }

            /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
            pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
                Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
            }
        }
    };
}

abi_struct!(
    /// `struct ic_fw_limit_rate`: one limit's rate (`per_sec` 0: off).
    FwLimitRate, 8, {
        /// New connections a second.
        per_sec: u32,
        /// Connections a full bucket admits at once.
        burst: u32,
    }
);

abi_struct!(
    /// `struct ic_fw_limit_config`: the rate limits on new inbound connections.
    FwLimitConfig, 40, {
        /// By [`FwLimitKind`].
        rates: [FwLimitRate; FwLimitKind::COUNT],
        /// The subnet limit's IPv4 prefix length.
        v4_prefix: u8,
        /// The subnet limit's IPv6 prefix length.
        v6_prefix: u8,
        /// Padding.
        _pad0: [u8; 6],
    }
);

abi_struct!(
    /// `struct ic_fw_limit_key`: a limit bucket's key.
    FwLimitKey, 24, {
        /// Source or masked subnet, IPv4 as IPv4-mapped; else zero.
        addr: [u8; 16],
        /// The interface (interface limit); else 0.
        ifindex: u32,
        /// The destination port (port limit); else 0.
        port: u16,
        /// The protocol (port limit); else 0.
        proto: u8,
        /// [`FwLimitKind`] code.
        kind: u8,
    }
);

abi_struct!(
    /// `struct ic_fw_limit_bucket`: a limit's bucket (tokens in nano-connections).
    FwLimitBucket, 32, {
        /// Tokens × 10⁹.
        tokens: i64,
        /// Last refill, `CLOCK_MONOTONIC` ns.
        last_ns: u64,
        /// Refused since the bucket last reported.
        dropped: u64,
        /// When it last reported.
        event_ns: u64,
    }
);

abi_struct!(
    /// `struct ic_fw_limit_event`: a limit refused connections (the first refusal at
    /// once, then at most once a second per bucket, with the count since the last event).
    FwLimitEvent, 96, {
        /// The common header.
        hdr: EventHeader,
        /// The bucket's address: the source, or the subnet's base; zero for port and
        /// interface limits. IPv4 as IPv4-mapped.
        key: [u8; 16],
        /// The latest refused connection's source.
        src: [u8; 16],
        /// Its destination.
        dst: [u8; 16],
        /// Refused since this bucket's previous event.
        dropped: u64,
        /// Where the latest one arrived.
        ifindex: u32,
        /// The limit: connections a second.
        per_sec: u32,
        /// The limit: burst.
        burst: u32,
        /// The latest one's source port (0 for ICMP).
        sport: u16,
        /// Its destination port (the ICMP type for ICMP).
        dport: u16,
        /// IP protocol.
        proto: u8,
        /// [`FwLimitKind`] code.
        kind: u8,
        /// The subnet limit's prefix length; else 0.
        prefix: u8,
        /// `FW_LIMIT_F_*`.
        flags: u8,
        /// Padding, zero.
        _pad0: [u8; 4],
    }
);

/// `IC_NAT_MAX_RULES`: port forwards, and source translations.
pub const NAT_MAX_RULES: u32 = 256;
/// `IC_NAT_ENTRIES`: directions of translated connections (two each).
pub const NAT_ENTRIES: u32 = 262_144;
/// `IC_NAT_PORT_TRIES`: source ports tried when a connection's is taken.
pub const NAT_PORT_TRIES: u32 = 16;
/// `IC_NAT_PORT_FIRST`: the first port of the range a taken source port is replaced
/// from.
pub const NAT_PORT_FIRST: u32 = 32_768;
/// `IC_NAT_PORT_COUNT`: the range's size.
pub const NAT_PORT_COUNT: u32 = 28_232;
/// `IC_NAT_REWRITE_SRC`.
pub const NAT_REWRITE_SRC: u8 = 1;
/// `IC_NAT_REWRITE_DST`.
pub const NAT_REWRITE_DST: u8 = 2;
/// `IC_NAT_DNAT`: a port forward's translation.
pub const NAT_DNAT: u8 = 1;
/// `IC_NAT_SNAT`: a source translation's.
pub const NAT_SNAT: u8 = 2;

abi_struct!(
    /// `struct ic_nat_dnat_key`: a port forward's key.
    NatDnatKey, 8, {
        /// The interface connections arrive on.
        ifindex: u32,
        /// The port (0: the forward of every port).
        dport: u16,
        /// IP protocol.
        proto: u8,
        /// 4 or 6: the target's family.
        family: u8,
    }
);

abi_struct!(
    /// `struct ic_nat_target`: where a forward sends connections, or the address a
    /// source translation writes.
    NatTarget, 24, {
        /// Network order; IPv4 as IPv4-mapped.
        addr: [u8; 16],
        /// 0: keep the connection's port.
        port: u16,
        /// The rule's counter.
        rule: u16,
        /// Padding.
        _pad0: u32,
    }
);

abi_struct!(
    /// `struct ic_nat_snat_key`: a source translation's key (LPM trie).
    NatSnatKey, 24, {
        /// 32 (the interface) + the address bits (IPv4 as IPv4-mapped: 96 + its length).
        prefixlen: u32,
        /// The interface, network order.
        ifindex: u32,
        /// The source prefix's address.
        addr: [u8; 16],
    }
);

abi_struct!(
    /// `struct ic_nat_key`: a packet as it arrives at the hook that rewrites it.
    NatKey, 44, {
        /// Network order; IPv4 as IPv4-mapped.
        src: [u8; 16],
        /// Network order.
        dst: [u8; 16],
        /// The interface.
        ifindex: u32,
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// IP protocol.
        proto: u8,
        /// 1: egress, 0: ingress.
        egress: u8,
        /// Padding.
        _pad0: [u8; 2],
    }
);

abi_struct!(
    /// `struct ic_nat_value`: the rewrite for one direction of a translated connection.
    NatValue, 72, {
        /// The new address.
        addr: [u8; 16],
        /// The new port.
        port: u16,
        /// [`NAT_REWRITE_SRC`] or [`NAT_REWRITE_DST`].
        rewrite: u8,
        /// [`NAT_DNAT`] or [`NAT_SNAT`].
        kind: u8,
        /// The rule's counter.
        rule: u16,
        /// 1: the reply direction's entry.
        reply: u8,
        /// Padding.
        _pad0: u8,
        /// When it was made, `CLOCK_MONOTONIC` ns.
        created_ns: u64,
        /// The connection it belongs to (the inner tuple, canonical).
        ct: CtKey,
    }
);

abi_struct!(
    /// `struct ic_nat_config`: the NAT configuration.
    NatConfig, 8, {
        /// 0: no rule, nothing looked up.
        active: u32,
        /// Padding.
        _pad0: u32,
    }
);

/// `IC_FW_SLOTS`: rule slots (one live, one being written).
pub const FW_SLOTS: u32 = 2;
/// `IC_FW_PROTOS`: protocols per direction in the bucket index.
pub const FW_PROTOS: u32 = 5;
/// `IC_FW_BUCKETS`: direction × protocol.
pub const FW_BUCKETS: u32 = 10;
/// `IC_FW_MAX_RULES`: rules per bucket.
pub const FW_MAX_RULES: u32 = 16384;
/// `IC_FW_SUMMARY_WORDS`: words of a class summary.
pub const FW_SUMMARY_WORDS: usize = 4;
/// `IC_FW_MAX_PREFIXES`: entries of the address-class trie.
pub const FW_MAX_PREFIXES: u32 = 1_048_576;
/// `IC_FW_MAX_PIECES`: entries of the port-class trie.
pub const FW_MAX_PIECES: u32 = 1_048_576;
/// `IC_FW_MAX_WORDS`: non-zero bitmap words.
pub const FW_MAX_WORDS: u32 = 4_194_304;
/// `IC_FW_NO_MASK`: a bucket of `ic_fw_untranslated` with no rule that has `dnat: true`
/// (otherwise 1 + the class of its other rules).
pub const FW_NO_MASK: u32 = 0;
/// `IC_FW_MAX_CLASSES`: class summaries.
pub const FW_MAX_CLASSES: u32 = 1_048_576;
/// `IC_FW_DIM_SRC`.
pub const FW_DIM_SRC: u8 = 0;
/// `IC_FW_DIM_DST`.
pub const FW_DIM_DST: u8 = 1;
/// `IC_FW_DIM_SPORT`.
pub const FW_DIM_SPORT: u8 = 2;
/// `IC_FW_DIM_DPORT` (the ICMP type in the ICMP buckets).
pub const FW_DIM_DPORT: u8 = 3;
/// `IC_FW_ACCEPT`.
pub const FW_ACCEPT: u8 = 0;
/// `IC_FW_DROP`.
pub const FW_DROP: u8 = 1;
/// `IC_FW_REJECT`: drop and answer (TCP RST, ICMP port unreachable).
pub const FW_REJECT: u8 = 2;

/// `struct ic_fw_addr_key`: an address-class prefix behind its (slot, bucket,
/// dimension) tag.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwAddrKey {
    /// 32 (the tag) plus the prefix length over the 16-byte address.
    pub prefixlen: u32,
    /// Slot, bucket, dimension, 0.
    pub tag: [u8; 4],
    /// The address, network order (IPv4 as IPv4-mapped IPv6).
    pub addr: [u8; 16],
}

impl FwAddrKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a key read back from the kernel.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_fw_port_key`: a port (or ICMP type) prefix behind its tag.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwPortKey {
    /// 32 (the tag) plus the prefix length over the 16-bit value.
    pub prefixlen: u32,
    /// Slot, bucket, dimension, 0.
    pub tag: [u8; 4],
    /// The value, network order.
    pub port: [u8; 2],
    /// Padding, zero.
    pub _pad0: [u8; 2],
}

impl FwPortKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 12;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a key read back from the kernel.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_fw_word_key`: one 64-rule word of a class bitmap.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwWordKey {
    /// The class.
    pub class_id: u32,
    /// The word's number.
    pub word: u16,
    /// The slot.
    pub slot: u8,
    /// Padding, zero.
    pub _pad0: u8,
}

impl FwWordKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a key read back from the kernel.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_fw_summary`: which words of a class bitmap are not zero.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwSummary {
    /// Bit `w` of word `w / 64`: bitmap word `w` is not zero.
    pub words: [u64; FW_SUMMARY_WORDS],
}

impl FwSummary {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 32;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `IC_FW_RULE_LOG`: report every match of the rule.
pub const FW_RULE_LOG: u8 = 1;
/// `IC_FW_RULE_FLOWS`: flow records for the connections the rule admits.
pub const FW_RULE_FLOWS: u8 = 2;
/// `IC_FW_FLOW_INBOUND`: the flow was opened from outside.
pub const FW_FLOW_INBOUND: u8 = 1;
/// `IC_FW_FLOW_START`: a flow record of a connection's start.
pub const FW_FLOW_START: u8 = 1;
/// `IC_FW_FLOW_END`: a flow record of a connection's end.
pub const FW_FLOW_END: u8 = 2;
/// `IC_FW_END_TIMEOUT`: the connection was idle longer than its state's timeout.
pub const FW_END_TIMEOUT: u8 = 1;
/// `IC_FW_END_FIN`: both sides sent FIN.
pub const FW_END_FIN: u8 = 2;
/// `IC_FW_END_RESET`: a RST closed it.
pub const FW_END_RESET: u8 = 3;
/// `IC_FW_EV_RATE_LIMITED`: the match was over the rule's rate limit and dropped.
pub const FW_EV_RATE_LIMITED: u8 = 1;
/// `IC_FW_EV_DRY_RUN`: dry-run; a drop or reject was only counted.
pub const FW_EV_DRY_RUN: u8 = 2;
/// `IC_FW_EV_INBOUND`: the packet arrived on the interface (else it was leaving).
pub const FW_EV_INBOUND: u8 = 4;
/// `IC_FW_RING_BYTES`: the firewall's event ring buffer.
pub const FW_RING_BYTES: u32 = 262_144;

/// `struct ic_fw_event`: a logged rule's match.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// Source, IPv4 as IPv4-mapped, network order.
    pub src: [u8; 16],
    /// Destination, IPv4 as IPv4-mapped, network order.
    pub dst: [u8; 16],
    /// The rule.
    pub rule_id: u32,
    /// The interface.
    pub ifindex: u32,
    /// Source port (0 for ICMP).
    pub sport: u16,
    /// Destination port, or the ICMP type.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// The rule's action (`FW_ACCEPT`, `FW_DROP`, `FW_REJECT`).
    pub action: u8,
    /// `FW_EV_*`.
    pub flags: u8,
    /// Padding, zero.
    pub _pad0: u8,
}

impl FwEvent {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 64;

    /// Decodes a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_fw_flow_event`: a flow record (a connection's start or end).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwFlowEvent {
    /// The common header.
    pub hdr: EventHeader,
    /// The side that opened it, IPv4 as IPv4-mapped, network order.
    pub src: [u8; 16],
    /// The other side.
    pub dst: [u8; 16],
    /// The local socket's cgroup, or 0.
    pub cgroup_id: u64,
    /// When it opened, `CLOCK_MONOTONIC` ns.
    pub created_ns: u64,
    /// Its last packet, `CLOCK_MONOTONIC` ns.
    pub last_seen_ns: u64,
    /// Packets from the side that opened it.
    pub packets_orig: u64,
    /// Bytes from the side that opened it.
    pub bytes_orig: u64,
    /// Packets from the other side.
    pub packets_reply: u64,
    /// Bytes from the other side.
    pub bytes_reply: u64,
    /// The rule that admitted it; 0: the default policy.
    pub rule_id: u32,
    /// The interface it was first seen on.
    pub ifindex: u32,
    /// The local process that opened it, or 0.
    pub pid: u32,
    /// The opening side's port (the echo identifier for ICMP).
    pub sport: u16,
    /// The other side's port (the echo identifier for ICMP).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// `FW_FLOW_INBOUND`.
    pub flags: u8,
    /// `FW_FLOW_START` or `FW_FLOW_END`.
    pub phase: u8,
    /// `FW_END_*` at the end; 0 at the start.
    pub reason: u8,
    /// [`CtState`] as a byte.
    pub state: u8,
    /// Padding, zero.
    pub _pad0: [u8; 3],
    /// The process's command name when `pid` is set.
    pub comm: [u8; 16],
}

impl FwFlowEvent {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 144;

    /// Decodes a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `struct ic_fw_default_log`: the rate of the default policy's drop reports and its
/// token bucket (map `ic_fw_default_log`, one entry).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwDefaultLog {
    /// Reports a second; 0: none.
    pub per_sec: u32,
    /// Padding, zero.
    pub _pad0: u32,
    /// Nanosecond-scaled tokens.
    pub tokens: i64,
    /// When the bucket was last refilled (`CLOCK_MONOTONIC` ns).
    pub last_ns: u64,
}

impl FwDefaultLog {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_fw_rule`: a bucket's rule at one bit.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FwRuleEntry {
    /// 1-based id, the index of its counter.
    pub rule_id: u32,
    /// `FW_ACCEPT`, `FW_DROP` or `FW_REJECT`.
    pub action: u8,
    /// `FW_RULE_LOG`.
    pub flags: u8,
    /// Padding, zero.
    pub _pad0: [u8; 2],
    /// New connections per second the rule lets through; 0: no limit.
    pub rate_per_sec: u32,
    /// The rate limit's burst.
    pub rate_burst: u32,
    /// The rule's identity.
    pub digest: u64,
}

impl FwRuleEntry {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 24;

    /// The exact byte image the kernel expects.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

// ---- Domain policy (egress by DNS name, domain feeds) ----

/// `IC_DNS_PATTERNS`: distinct `dst_domain` patterns (bits of a mask).
pub const DNS_PATTERNS: usize = 64;
/// `IC_DNS_RULES`: rule entries with `dst_domain`, per generation.
pub const DNS_RULES: usize = 64;
/// `IC_DNS_FEEDS`: domain feeds (1-based ids).
pub const DNS_FEEDS: usize = 16;
/// `IC_DNS_NAMES`: patterns and feed names together.
pub const DNS_NAMES: u32 = 1_048_576;
/// `IC_DNS_ADDRS`: live (executable, address) entries.
pub const DNS_ADDRS: u32 = 65_536;
/// `IC_DNS_PER_SCOPE`: opened-address entries one (executable, user) may hold.
pub const DNS_PER_SCOPE: u32 = 16_384;
/// `IC_DNS_PER_UID`: opened-address entries one user's executables may hold together.
pub const DNS_PER_UID: u32 = 32_768;
/// `IC_DNS_OWNERS`: entries of the owners' counts.
pub const DNS_OWNERS: u32 = 131_072;
/// `IC_DNS_OWNER_SCOPE`: a [`DnsOwner`] counting one (executable, user).
pub const DNS_OWNER_SCOPE: u32 = 0;
/// `IC_DNS_OWNER_UID`: a [`DnsOwner`] counting one user.
pub const DNS_OWNER_UID: u32 = 1;
/// `IC_DNS_DENIED`: live addresses of feed names.
pub const DNS_DENIED: u32 = 32_768;
/// `IC_DNS_LABELS`: labels of a name the kernel compares, from the last.
pub const DNS_LABELS: usize = 32;
/// `IC_DNS_PENDING`: queries in flight remembered per socket.
pub const DNS_PENDING: usize = 8;
/// `IC_DNS_ANSWERS`: answer records read per response.
pub const DNS_ANSWERS: usize = 64;
/// `IC_DNS_EVENT_ADDRS`: addresses a [`DnsPolicyEvent`] carries.
pub const DNS_EVENT_ADDRS: usize = 8;
/// `IC_DNS_NAME_BYTES`: bytes of a name in an event.
pub const DNS_NAME_BYTES: usize = 256;
/// `IC_DNS_MSG_BYTES`: bytes of a DNS message the kernel reads.
pub const DNS_MSG_BYTES: usize = 4096;
/// `IC_DNS_F_ACTIVE`: read DNS traffic.
pub const DNS_F_ACTIVE: u32 = 1;
/// `IC_DNS_FEED_COUNTERS`: counters per feed.
pub const DNS_FEED_COUNTERS: u32 = 4;

/// `enum ic_dns_total`: totals of the domain policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum DnsTotal {
    /// Queries read.
    Queries = 0,
    /// Responses that answered a query in flight.
    Responses = 1,
    /// Addresses opened for domain rules.
    Opened = 2,
    /// Addresses of feed names put on the deny list.
    Denied = 3,
    /// Responses to no query of the socket (ignored).
    Unsolicited = 4,
    /// Messages that could not be read (ignored).
    Malformed = 5,
    /// Answers past the bytes or records the kernel reads (the rest ignored).
    Oversized = 6,
    /// DNS over TCP not starting a whole message in one segment (not read).
    Split = 7,
    /// Queries dropped (a feed's name, `block_queries`).
    QueryBlocked = 8,
    /// `connect()`s refused because the address is a feed name's.
    ConnectDenied = 9,
    /// Events the ring buffer had no room for.
    EventsLost = 10,
    /// Responses on a socket that was never marked (sent before domain policy was on).
    Untracked = 11,
    /// `connect()`s to encrypted DNS (reported; what they resolve is not seen).
    Encrypted = 12,
    /// Queries for a rule's name by a process no rule with it can match (their answers
    /// open nothing).
    OutOfScope = 13,
    /// Addresses not opened: the executable or user holds its share of the table.
    OwnerFull = 14,
    /// Addresses not opened: the table is full.
    TableFull = 15,
}

impl DnsTotal {
    /// `IC_DTOTAL_COUNT`.
    pub const COUNT: u32 = 16;
    /// Every total, in index order.
    pub const ALL: [Self; 16] = [
        Self::Queries,
        Self::Responses,
        Self::Opened,
        Self::Denied,
        Self::Unsolicited,
        Self::Malformed,
        Self::Oversized,
        Self::Split,
        Self::QueryBlocked,
        Self::ConnectDenied,
        Self::EventsLost,
        Self::Untracked,
        Self::Encrypted,
        Self::OutOfScope,
        Self::OwnerFull,
        Self::TableFull,
    ];

    /// The name used in status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queries => "queries",
            Self::Responses => "responses",
            Self::Opened => "opened",
            Self::Denied => "denied",
            Self::Unsolicited => "unsolicited",
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::Split => "split",
            Self::QueryBlocked => "query_blocked",
            Self::ConnectDenied => "connect_denied",
            Self::EventsLost => "events_lost",
            Self::Untracked => "untracked",
            Self::Encrypted => "encrypted_dns",
            Self::OutOfScope => "out_of_scope",
            Self::OwnerFull => "owner_full",
            Self::TableFull => "table_full",
        }
    }
}

/// `enum ic_dns_feed_counter`: counters per feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum DnsFeedCounter {
    /// Queries for its names.
    Queries = 0,
    /// Of which dropped.
    Blocked = 1,
    /// Addresses its names resolved to.
    Addresses = 2,
    /// `connect()`s to them refused.
    Connects = 3,
}

impl DnsFeedCounter {
    /// Every counter, in index order.
    pub const ALL: [Self; 4] = [
        Self::Queries,
        Self::Blocked,
        Self::Addresses,
        Self::Connects,
    ];

    /// The name used in status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queries => "queries",
            Self::Blocked => "blocked",
            Self::Addresses => "addresses",
            Self::Connects => "connects",
        }
    }
}

/// `IC_DNS_EV_ANSWER`: a response opened addresses for domain rules.
pub const DNS_EV_ANSWER: u8 = 1;
/// `IC_DNS_EV_FEED_QUERY`: a query for a feed's name.
pub const DNS_EV_FEED_QUERY: u8 = 2;
/// `IC_DNS_EV_FEED_ANSWER`: a feed name's addresses put on the deny list.
pub const DNS_EV_FEED_ANSWER: u8 = 3;

abi_struct!(
    /// `struct ic_dns_config`: the domain policy's settings.
    DnsConfig, 32, {
        /// The SipHash-1-3 key of name hashes.
        key: [u64; 2],
        /// `IC_DNS_F_*`.
        flags: u32,
        /// Seconds an answer's addresses stay open past its TTL.
        grace_sec: u32,
        /// A TTL above this counts as this.
        max_ttl_sec: u32,
        /// Bit `f`: queries for feed `f + 1`'s names are dropped.
        block_feeds: u32,
    }
);

abi_struct!(
    /// `struct ic_dns_name`: a name's entry (key: its hash).
    DnsName, 24, {
        /// Pattern bits this whole name is.
        exact: u64,
        /// Pattern bits `*.this` (names below it).
        wild: u64,
        /// A feed (1-based) listing the name itself.
        feed_exact: u8,
        /// A feed listing `*.this`.
        feed_wild: u8,
        /// Padding.
        _pad0: [u8; 6],
    }
);

abi_struct!(
    /// `struct ic_dns_rule`: a rule entry with `dst_domain`.
    DnsRule, 16, {
        /// Its rule slot.
        slot: u32,
        /// Padding.
        _pad0: u32,
        /// The pattern bits it names.
        patterns: u64,
    }
);

abi_struct!(
    /// `struct ic_dns_addr_key`: an opened address, for one executable and user.
    DnsAddrKey, 48, {
        /// The executable whose process received the answer (zero: unknown).
        exe: ProcExe,
        /// The address (IPv4 as IPv4-mapped), network order.
        addr: [u8; 16],
        /// That process's user.
        uid: u32,
        /// Padding.
        _pad0: u32,
    }
);

abi_struct!(
    /// `struct ic_dns_owner`: whose opened-address entries a count is.
    DnsOwner, 32, {
        /// The executable ([`DNS_OWNER_SCOPE`]); zero for [`DNS_OWNER_UID`].
        exe: ProcExe,
        /// The user.
        uid: u32,
        /// [`DNS_OWNER_SCOPE`] or [`DNS_OWNER_UID`].
        kind: u32,
    }
);

abi_struct!(
    /// `struct ic_dns_addr`: when each pattern's opening of the address ends.
    DnsAddr, 264, {
        /// Bits ever set.
        patterns: u64,
        /// `CLOCK_BOOTTIME` seconds, per pattern bit.
        expires: [u32; DNS_PATTERNS],
    }
);

abi_struct!(
    /// `struct ic_dns_denial`: an address a feed's name resolved to.
    DnsDenial, 8, {
        /// `CLOCK_BOOTTIME` seconds.
        expires: u32,
        /// The feed, 1-based.
        feed: u8,
        /// Padding.
        _pad0: [u8; 3],
    }
);

abi_struct!(
    /// `struct ic_dns_pending`: a query in flight on a socket.
    DnsPending, 40, {
        /// The question's name hash.
        qhash: u64,
        /// The pattern bits its answer may open (the name's, of rules that can match
        /// the socket's owner).
        patterns: u64,
        /// The server (IPv4 as IPv4-mapped).
        server: [u8; 16],
        /// Transaction id.
        txid: u16,
        /// The server's port.
        port: u16,
        /// The question's type.
        qtype: u16,
        /// Padding.
        _pad0: u16,
    }
);

abi_struct!(
    /// `struct ic_dns_sock`: socket storage of a socket that sent to port 53.
    DnsSock, 400, {
        /// Its owner's executable (zero if unknown).
        exe: ProcExe,
        /// Thread-group id.
        tgid: u32,
        /// User id.
        uid: u32,
        /// Command name.
        comm: [u8; 16],
        /// The pending slot the next query takes.
        next: u32,
        /// The owner's parent (thread-group id).
        ppid: u32,
        /// The parent's start (ticks).
        pstart: u64,
        /// The owner's cgroup id.
        cgroup: u64,
        /// `exe`, `ppid` and `pstart` are known.
        known: u32,
        /// Padding.
        _pad0: u32,
        /// Queries in flight.
        pending: [DnsPending; DNS_PENDING],
    }
);

abi_struct!(
    /// `struct ic_dns_policy_event`: an answer that opened addresses, a query for a
    /// feed's name, or a feed name's addresses denied.
    DnsPolicyEvent, 496, {
        /// The common header.
        hdr: EventHeader,
        /// The socket owner's thread-group id.
        pid: u32,
        /// Its user id.
        uid: u32,
        /// Its executable.
        exe: ProcExe,
        /// Its command name.
        comm: [u8; 16],
        /// The server (IPv4 as IPv4-mapped).
        server: [u8; 16],
        /// Pattern bits the name matched.
        patterns: u64,
        /// The smallest TTL of the addresses, seconds (capped).
        ttl: u32,
        /// The server's port.
        port: u16,
        /// The question's type.
        qtype: u16,
        /// `IC_DNS_EV_*`.
        what: u8,
        /// The feed, 1-based; 0 none.
        feed: u8,
        /// The query was dropped.
        blocked: u8,
        /// `IPPROTO_UDP` or `IPPROTO_TCP`.
        proto: u8,
        /// Addresses in the answer (all, not only those carried here).
        naddrs: u16,
        /// Bytes of `name`.
        name_len: u16,
        /// Of the answer's addresses, those not opened (the owner's share or the table
        /// full).
        refused: u16,
        /// Padding.
        _pad0: [u8; 6],
        /// The first addresses.
        addrs: [[u8; 16]; DNS_EVENT_ADDRS],
        /// The question's name, wire format.
        name: [u8; DNS_NAME_BYTES],
    }
);

abi_struct!(
    /// `struct ic_dns_label`: a pattern's or a feed's text, for readers of the pins.
    DnsLabel, 264, {
        /// 0: none here.
        used: u8,
        /// A pattern `*.name`.
        wildcard: u8,
        /// Bytes of `text`.
        len: u16,
        /// Padding.
        _pad0: u32,
        /// The text.
        text: [u8; 256],
    }
);

impl DnsLabel {
    /// A label holding `text` (cut at 256 bytes).
    pub fn new(text: &str, wildcard: bool) -> Self {
        let mut label = Self {
            used: 1,
            wildcard: u8::from(wildcard),
            ..Self::default()
        };
        let n = text.len().min(label.text.len());
        label.text[..n].copy_from_slice(&text.as_bytes()[..n]);
        label.len = u16::try_from(n).unwrap_or(0);
        label
    }

    /// The text, when used.
    pub fn text(&self) -> Option<String> {
        (self.used != 0).then(|| {
            let n = usize::from(self.len).min(self.text.len());
            String::from_utf8_lossy(&self.text[..n]).into_owned()
        })
    }
}

impl DnsPolicyEvent {
    /// The question's name, dotted, lowercase, without the final dot (labels past a
    /// malformed length are dropped).
    pub fn name(&self) -> String {
        let len = usize::from(self.name_len).min(DNS_NAME_BYTES);
        let wire = &self.name[..len];
        let mut out = String::new();
        let mut at = 0;
        while let Some(&n) = wire.get(at) {
            let n = usize::from(n);
            if n == 0 || n > 63 {
                break;
            }
            let Some(label) = wire.get(at + 1..at + 1 + n) else {
                break;
            };
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
            at += 1 + n;
        }
        out
    }
}

/// `IC_IDS_SNAP`: payload bytes one IDS snippet carries at most.
pub const IDS_SNAP: usize = 1024;
/// `IC_IDS_FLOWS`: inspected connections at once (past it, new ones are not inspected).
pub const IDS_FLOWS: u32 = 65536;
/// `IC_IDS_PORTS`: entries of `ic_ids_ports`, one per port.
pub const IDS_PORTS: u32 = 65536;
/// `IC_IDS_RING_BYTES`: the snippet ring buffer's size.
pub const IDS_RING_BYTES: u32 = 4_194_304;
/// `IC_IDS_PREFIX_MAX`: the longest content the kernel matches itself.
pub const IDS_PREFIX_MAX: usize = 16;
/// `IC_IDS_PREFIXES`: such contents at most.
pub const IDS_PREFIXES: u32 = 4096;

/// `struct ic_ids_prefix_key`: a `drop` rule's content the kernel matches at the start
/// of a direction's payload.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IdsPrefixKey {
    /// The connection's server port; 0: any.
    pub port: u16,
    /// Bytes of `bytes` that count.
    pub len: u8,
    /// 1: sent by the side that opened the connection.
    pub to_server: u8,
    /// The content, zero after `len`.
    pub bytes: [u8; IDS_PREFIX_MAX],
}

impl IdsPrefixKey {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 20;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `IC_IDS_F_ON`: the firewall selects connections for the IDS.
pub const IDS_F_ON: u32 = 1;
/// `IC_IDS_F_ALL_PORTS`: every TCP and UDP connection is inspected.
pub const IDS_F_ALL_PORTS: u32 = 2;
/// `IC_IDS_F_DRY_RUN`: blocked connections' packets are counted, not dropped.
pub const IDS_F_DRY_RUN: u32 = 4;
/// `IC_IDS_PORT_TCP`: an `ic_ids_ports` entry selects TCP connections on the port.
pub const IDS_PORT_TCP: u8 = 1;
/// `IC_IDS_PORT_UDP`: and UDP ones.
pub const IDS_PORT_UDP: u8 = 2;
/// `IC_IDS_SNIP_ORIG`: the snippet was sent by the side that opened the connection.
pub const IDS_SNIP_ORIG: u8 = 1;
/// `IC_IDS_SNIP_INBOUND`: the connection was opened from outside.
pub const IDS_SNIP_INBOUND: u8 = 2;
/// `IC_IDS_SNIP_INGRESS`: the packet was seen arriving (else leaving).
pub const IDS_SNIP_INGRESS: u8 = 4;
/// `IC_IDS_SNIP_LAST`: the packet's last snippet (a payload larger than [`IDS_SNAP`]
/// comes as several snippets, in order).
pub const IDS_SNIP_LAST: u8 = 8;

/// `struct ic_ids_config`: the IDS selection's configuration.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IdsConfig {
    /// `IDS_F_*` flags.
    pub flags: u32,
    /// Payload bytes per direction of a connection handed to user space.
    pub depth: u32,
    /// Also one connection in this many of the others; 0: none.
    pub sample_every: u32,
    /// Bit L-1: `ic_ids_prefixes` holds contents of L bytes for a given port; bit
    /// 16+L-1: for any port.
    pub prefix_lens: u32,
}

impl IdsConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_ids_flow`: an inspected connection (value of `ic_ids_flows`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IdsFlow {
    /// Payload bytes counted from the side that opened it.
    pub seen_orig: u32,
    /// From the other side.
    pub seen_reply: u32,
    /// Non-zero: its packets are dropped (a `drop` rule matched).
    pub blocked: u32,
    /// Padding, zero.
    pub _pad0: u32,
}

impl IdsFlow {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 16;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `struct ic_ids_snippet`: a packet's payload handed to the IDS matcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdsSnippet {
    /// The common header.
    pub hdr: EventHeader,
    /// The connection's key.
    pub key: CtKey,
    /// This packet's source, IPv4 as IPv4-mapped, network order.
    pub src: [u8; 16],
    /// Its destination.
    pub dst: [u8; 16],
    /// The connection's local socket's cgroup, or 0.
    pub cgroup_id: u64,
    /// The process that opened it when local, or 0.
    pub pid: u32,
    /// The interface.
    pub ifindex: u32,
    /// TCP: the sequence number of `data[0]`; UDP: `data[0]`'s offset in the datagram.
    pub seq: u32,
    /// Payload bytes of this direction the kernel counted before `data[0]`.
    pub offset: u32,
    /// The packet's whole payload length.
    pub payload_len: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Bytes of `data` filled.
    pub len: u16,
    /// IP protocol.
    pub proto: u8,
    /// `IDS_SNIP_*` flags.
    pub flags: u8,
    /// `len` bytes of the payload, from `seq`.
    pub data: [u8; IDS_SNAP],
    /// Padding to the C struct's alignment.
    pub _pad_end: [u8; 4],
}

impl IdsSnippet {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 1152;

    /// Decodes a record; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }

    /// The payload bytes it carries.
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len).min(IDS_SNAP)]
    }
}

/// `IC_SCRUB_F_CLEAR_DF`: clear the IPv4 Don't Fragment bit.
pub const SCRUB_F_CLEAR_DF: u32 = 1;
/// `IC_SCRUB_F_RANDOM_ID`: randomise the IPv4 identification of unfragmented packets.
pub const SCRUB_F_RANDOM_ID: u32 = 2;
/// `IC_SCRUB_F_INGRESS`: scrub arriving packets too.
pub const SCRUB_F_INGRESS: u32 = 4;
/// `IC_SCRUB_INTERFACES`: interfaces the scrubber can be configured on.
pub const SCRUB_INTERFACES: u32 = 64;

/// `struct ic_scrub_config`: one interface's scrubbing.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ScrubConfig {
    /// IPv4 TTL floor; 0: untouched.
    pub ttl_floor: u8,
    /// IPv6 hop-limit floor; 0: untouched.
    pub hop_floor: u8,
    /// Largest MSS a TCP SYN may announce; 0: untouched.
    pub mss_max: u16,
    /// `SCRUB_F_*` flags.
    pub flags: u32,
}

impl ScrubConfig {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes a value read back from the kernel; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read_from_prefix(bytes).ok().map(|(value, _)| value)
    }
}

/// `enum ic_scrub_total`: index of the scrubber's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum ScrubTotal {
    /// Packets on a scrubbed interface.
    Seen = 0,
    /// TTL or hop limit raised.
    Ttl = 1,
    /// SYNs whose MSS was lowered.
    Mss = 2,
    /// DF cleared.
    Df = 3,
    /// IPv4 identification randomised.
    Id = 4,
    /// Rewrites the kernel refused (the packet passed as it was).
    Failed = 5,
}

impl ScrubTotal {
    /// Number of totals (`IC_SCRUB_TOTAL_COUNT`).
    pub const COUNT: u32 = 6;
    /// Every total, in index order.
    pub const ALL: [Self; 6] = [
        Self::Seen,
        Self::Ttl,
        Self::Mss,
        Self::Df,
        Self::Id,
        Self::Failed,
    ];

    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Seen => "seen",
            Self::Ttl => "ttl_raised",
            Self::Mss => "mss_clamped",
            Self::Df => "df_cleared",
            Self::Id => "id_randomised",
            Self::Failed => "failed",
        }
    }
}

/// `IC_QUARANTINE_VLAN`: push an 802.1Q tag and pass.
pub const QUARANTINE_VLAN: u8 = 1;
/// `IC_QUARANTINE_REDIRECT`: send the packet out of another interface.
pub const QUARANTINE_REDIRECT: u8 = 2;
/// `IC_QUARANTINE_REDIRECT_INGRESS`: hand it to another interface as if it arrived there.
pub const QUARANTINE_REDIRECT_INGRESS: u8 = 3;
/// `IC_QUARANTINE_PREFIXES`: prefixes per family in the IOC set.
pub const QUARANTINE_PREFIXES: u32 = 262_144;

/// `struct ic_quarantine_action`: what a source in the IOC set gets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct QuarantineAction {
    /// The redirect's target interface.
    pub ifindex: u32,
    /// The VLAN id.
    pub vlan: u16,
    /// `QUARANTINE_*`.
    pub kind: u8,
    /// Padding, zero.
    pub _pad0: u8,
}

impl QuarantineAction {
    /// Size of the C struct in bytes.
    pub const SIZE: usize = 8;

    /// The exact byte image.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        zerocopy::transmute!(*self)
    }
}

/// `enum ic_quarantine_total`: index of the quarantine's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum QuarantineTotal {
    /// Packets looked up.
    Seen = 0,
    /// Tagged with the VLAN.
    Tagged = 1,
    /// Redirected.
    Redirected = 2,
    /// The kernel refused the tag or redirect (the packet passed as it was).
    Failed = 3,
}

impl QuarantineTotal {
    /// Number of totals.
    pub const COUNT: u32 = 4;
}
