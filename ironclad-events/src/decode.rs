//! Total decoding of ring-buffer records into typed events.
//!
//! Every record starts with an [`EventHeader`]. Decoding never panics on any input: a
//! record that is too short, from another ABI version, of an unknown kind or with an
//! inconsistent size is a [`DecodeError`], which callers count rather than misparse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ironclad_core::abi::{
    CtState, DnsEvent, DnsPolicyEvent, EgressAction, EgressEvent, EventHeader, EventKind, FwEvent,
    FwFlowEvent, FwLimitEvent, FwLimitKind, SentinelEvent, SentinelOp, SentinelVerdict,
    ShieldEvent, ShieldVerdict, TlsEvent, ABI_VERSION, DIR_OUT, DNS_EVENT_ADDRS, DNS_EV_ANSWER,
    DNS_EV_FEED_ANSWER, DNS_EV_FEED_QUERY, FW_ACCEPT, FW_DROP, FW_END_FIN, FW_END_RESET,
    FW_END_TIMEOUT, FW_EV_DRY_RUN, FW_EV_INBOUND, FW_EV_RATE_LIMITED, FW_FLOW_END, FW_FLOW_INBOUND,
    FW_FLOW_START, FW_LIMIT_F_DRY_RUN, FW_REJECT, TLS_CHUNK, TLS_F_LAST, TLS_F_TRUNCATED, TLS_READ,
    TLS_WRITE,
};
use serde::Serialize;

use crate::http::{escape, Http};

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the record's kind needs.
    #[error("record of {got} bytes is shorter than the {need} its kind needs")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The record was written by a different ABI version.
    #[error("record has ABI version {0}, this build understands {ABI_VERSION}")]
    Version(u16),
    /// The kind is not one this build knows.
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    /// The header's size field disagrees with the record.
    #[error("header says {said} bytes, the record has {got}")]
    SizeMismatch {
        /// The header's size field.
        said: u32,
        /// The record's length.
        got: usize,
    },
    /// A field holds a value outside its enum.
    #[error("field {field} has invalid value {value}")]
    BadField {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
}

/// A packet the Shield dropped (or, in dry-run, would have dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ShieldDrop {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it happened (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP), 0 if none.
    pub sport: u16,
    /// Destination port (TCP/UDP), 0 if none.
    pub dport: u16,
    /// IP protocol number of the L4 header.
    pub proto: u8,
    /// The rule that matched (0 for the rate limit).
    pub rule_id: u32,
    /// What was done.
    #[serde(serialize_with = "verdict_name")]
    pub verdict: ShieldVerdict,
    /// Ingress interface index.
    pub ifindex: u32,
    /// Frame length.
    pub len: u32,
}

impl ShieldDrop {
    /// A drop of a packet from `src` to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr, verdict: ShieldVerdict) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            src,
            dst,
            sport: Default::default(),
            dport: Default::default(),
            proto: Default::default(),
            rule_id: Default::default(),
            verdict,
            ifindex: Default::default(),
            len: Default::default(),
        }
    }
}

fn verdict_name<S: serde::Serializer>(v: &ShieldVerdict, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

/// Which way TLS plaintext was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsDirection {
    /// Handed to `SSL_write`: about to be encrypted and sent.
    Write,
    /// Returned by `SSL_read`: received and decrypted.
    Read,
}

fn escaped<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape(data))
}

/// Who did it: the process (and thread) the kernel saw, the same fields in every event
/// kind that names one (`tls`, `connect`, `rate_limited`, `dns`, `sentinel`). In JSON
/// they sit at the event's top level, as before this type existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Actor {
    /// Process (thread-group) id (0 if unknown).
    pub pid: u32,
    /// Thread id, where the kernel records one (not for DNS packets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// User id.
    pub uid: u32,
    /// Command name (the thread's, as the kernel saw it).
    pub comm: String,
    /// The executable's path, resolved in user space (from the pid while it runs, else
    /// from the identity below, else from the process cache).
    pub exe: Option<String>,
    /// The executable's device (kernel encoding) as the kernel saw it; 0 if unknown
    /// (kernel threads).
    pub exe_dev: u32,
    /// The executable's inode as the kernel saw it; 0 if unknown.
    pub exe_ino: u64,
    /// The process, from the process cache (when one runs and knows it): the same
    /// block in every event kind, with the process's own name and executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::process::ProcessBlock>,
}

/// One chunk of TLS plaintext captured from OpenSSL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TlsData {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it was captured.
    pub ktime_ns: u64,
    /// Write or read.
    pub direction: TlsDirection,
    /// The process and thread that called OpenSSL.
    #[serde(flatten)]
    pub actor: Actor,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// The `SSL*` pointer, a connection key.
    pub ssl: u64,
    /// The connection's local address and port, when the kernel saw its TCP socket
    /// (the socket the thread used during this call, or an earlier call on this `SSL*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<std::net::SocketAddr>,
    /// The connection's remote address and port (the peer), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<std::net::SocketAddr>,
    /// Identifies the SSL call; the chunks of one call share it.
    pub call_id: u64,
    /// Offset of this chunk within the call's bytes.
    pub offset: u32,
    /// Bytes in this chunk.
    pub len: u32,
    /// Bytes the whole call moved.
    pub total_len: u32,
    /// The call moved more than the cap let through (set on its last chunk).
    pub truncated: bool,
    /// The last chunk reported for this call.
    pub last: bool,
    /// The plaintext; in JSON, UTF-8 as is, other bytes as `\xNN`, `\` as `\\`.
    #[serde(serialize_with = "escaped")]
    pub data: Vec<u8>,
    /// HTTP recognised at the start of the call (first chunk only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
}

impl TlsData {
    /// A chunk of plaintext going `direction`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(direction: TlsDirection) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            direction,
            actor: Default::default(),
            cgroup_id: Default::default(),
            ssl: Default::default(),
            local: Default::default(),
            remote: Default::default(),
            call_id: Default::default(),
            offset: Default::default(),
            len: Default::default(),
            total_len: Default::default(),
            truncated: Default::default(),
            last: Default::default(),
            data: Default::default(),
            http: Default::default(),
        }
    }
}

fn action_name<S: serde::Serializer>(v: &EgressAction, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

/// A connection attempt the identity firewall denied, rate-limited or logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EgressDecision {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it happened.
    pub ktime_ns: u64,
    /// What was done.
    #[serde(serialize_with = "action_name")]
    pub verdict: EgressAction,
    /// The process and thread that connected or sent.
    #[serde(flatten)]
    pub actor: Actor,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// Destination address (an IPv4-mapped destination is shown as IPv4).
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// `tcp`, `udp` or the protocol number.
    pub proto: String,
    /// The rule that decided (0: the default).
    pub rule_id: u32,
    /// `connect4`, `connect6`, `sendmsg4` or `sendmsg6`.
    pub hook: &'static str,
    /// The domain feed whose name resolved to `dst`, when that is why the attempt was
    /// refused (`rule_id` is then 0): its name once the reader knows it, else `feed<N>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    /// An allowed connection to encrypted DNS (port 853, or 443 of a known
    /// DNS-over-HTTPS resolver), reported because the names it resolves are not seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encrypted_dns: bool,
}

impl EgressDecision {
    /// A decision with `verdict` on a connection to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(verdict: EgressAction, dst: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            verdict,
            actor: Default::default(),
            cgroup_id: Default::default(),
            dst,
            dport: Default::default(),
            proto: Default::default(),
            rule_id: Default::default(),
            hook: Default::default(),
            feed: Default::default(),
            encrypted_dns: Default::default(),
        }
    }
}

/// What the domain policy saw in DNS (`egress.rules[].dst_domain`,
/// `egress.deny_domain_feeds`): an answer that opened addresses for domain rules, a
/// query for a feed's name (dropped when the feed blocks queries), or a feed name's
/// addresses put on the deny list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DnsPolicyRecord {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it was seen.
    pub ktime_ns: u64,
    /// `answer`, `feed_query` or `feed_answer`.
    pub what: &'static str,
    /// The process whose socket sent the query or received the answer.
    #[serde(flatten)]
    pub actor: Actor,
    /// The question's name.
    pub name: String,
    /// The question's type (`A`, `AAAA`...).
    pub qtype: String,
    /// The DNS server.
    pub server: IpAddr,
    /// Its port.
    pub server_port: u16,
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// The patterns the name matched (filled by the reader; bits until then).
    pub patterns: Vec<String>,
    /// The pattern bits, as the kernel reported them.
    #[serde(skip)]
    pub pattern_bits: u64,
    /// The feed listing the name (its name once the reader knows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    /// The feed's id (1-based; 0 none).
    #[serde(skip)]
    pub feed_id: u8,
    /// A feed query was dropped.
    pub blocked: bool,
    /// The answer's addresses (the first eight).
    pub addresses: Vec<IpAddr>,
    /// How many the answer had.
    pub address_count: u16,
    /// Of them, those not opened: the executable's or the user's share of the table,
    /// or the table itself, is full (the status's `owner_full` and `table_full`).
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub refused: u16,
    /// The smallest TTL among them, seconds (capped by `dns.max_ttl_seconds`).
    pub ttl: u32,
    /// The executable the addresses were opened for, as the kernel identifies it.
    #[serde(skip)]
    pub scope: ironclad_core::abi::ProcExe,
}

impl DnsPolicyRecord {
    /// A DNS policy record about a query sent to `server`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(server: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            what: Default::default(),
            actor: Default::default(),
            name: Default::default(),
            qtype: Default::default(),
            server,
            server_port: Default::default(),
            proto: Default::default(),
            patterns: Default::default(),
            pattern_bits: Default::default(),
            feed: Default::default(),
            feed_id: Default::default(),
            blocked: Default::default(),
            addresses: Default::default(),
            address_count: Default::default(),
            refused: Default::default(),
            ttl: Default::default(),
            scope: Default::default(),
        }
    }
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

/// A DNS packet a process sent or received (UDP or TCP port 53).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DnsRecord {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it was seen.
    pub ktime_ns: u64,
    /// `query` (sent) or `response` (received).
    pub direction: &'static str,
    /// The socket owner's process.
    #[serde(flatten)]
    pub actor: Actor,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// `udp` or `tcp`.
    pub proto: &'static str,
    /// DNS transaction id.
    pub id: Option<u16>,
    /// The first question's name.
    pub qname: Option<String>,
    /// The first question's type (`A`, `AAAA`...).
    pub qtype: Option<String>,
    /// Response code (responses only).
    pub rcode: Option<u8>,
    /// A and AAAA addresses in the answers.
    pub answers: Vec<IpAddr>,
    /// Why the payload could not be parsed, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DnsRecord {
    /// A DNS packet from `src` to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            direction: Default::default(),
            actor: Default::default(),
            src,
            dst,
            sport: Default::default(),
            dport: Default::default(),
            proto: Default::default(),
            id: Default::default(),
            qname: Default::default(),
            qtype: Default::default(),
            rcode: Default::default(),
            answers: Default::default(),
            error: Default::default(),
        }
    }
}

/// Traffic of one process over an interval (made in user space from the kernel's
/// per-process counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BandwidthSample {
    /// Wall-clock time, RFC 3339.
    pub time: String,
    /// Process id.
    pub pid: u32,
    /// Command name, if known.
    pub comm: Option<String>,
    /// Executable path, if known.
    pub exe: Option<String>,
    /// Bytes sent (IP packet lengths, headers included), since the process started
    /// being counted.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// TCP/UDP payload bytes sent.
    pub tx_payload: u64,
    /// Bytes received (IP packet lengths).
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// TCP/UDP payload bytes received.
    pub rx_payload: u64,
    /// The process, from the process cache (when one runs and knows it): the same
    /// block in every event kind, with the process's own name and executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::process::ProcessBlock>,
}

/// An audit record (a load, audit result, pin, attach, detach or map update), as the
/// audit log's fan-out sink publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// RFC 3339 time.
    pub time: String,
    /// What was done (`load`, `pin`, `map_update`...).
    pub action: String,
    /// The BPF object concerned.
    pub object: String,
    /// The map, program, link or pin path concerned.
    pub target: String,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// Free-form detail.
    pub detail: String,
    /// Process id of the actor.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its command name.
    pub comm: String,
    /// Its executable, if known.
    pub exe: Option<String>,
}

fn sentinel_op_name<S: serde::Serializer>(v: &SentinelOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

fn sentinel_verdict_name<S: serde::Serializer>(
    v: &SentinelVerdict,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

/// An operation on something the Sentinel protects or monitors: a refused attempt, a
/// monitored change, or the agent's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SentinelRecord {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it happened.
    pub ktime_ns: u64,
    /// What was attempted.
    #[serde(serialize_with = "sentinel_op_name")]
    pub op: SentinelOp,
    /// What the Sentinel did.
    #[serde(serialize_with = "sentinel_verdict_name")]
    pub verdict: SentinelVerdict,
    /// The actor: who attempted the operation.
    #[serde(flatten)]
    pub actor: Actor,
    /// The target's path, resolved in user space from its identity (when known).
    pub path: Option<String>,
    /// The target's name in its directory (empty for signals, ptrace and BPF objects).
    pub name: String,
    /// The target inode's device (kernel encoding); 0 if none (a file being created).
    pub target_dev: u32,
    /// The target inode.
    pub target_ino: u64,
    /// Its directory's device (kernel encoding).
    pub parent_dev: u32,
    /// Its directory's inode.
    pub parent_ino: u64,
    /// The process a signal or ptrace was aimed at (0 otherwise).
    pub target_pid: u32,
    /// By operation: the signal, the ptrace mode, the map or link id, open flags, mode.
    pub arg: u32,
}

impl SentinelRecord {
    /// A Sentinel decision of `verdict` on `op`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(op: SentinelOp, verdict: SentinelVerdict) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            op,
            verdict,
            actor: Default::default(),
            path: Default::default(),
            name: Default::default(),
            target_dev: Default::default(),
            target_ino: Default::default(),
            parent_dev: Default::default(),
            parent_ino: Default::default(),
            target_pid: Default::default(),
            arg: Default::default(),
        }
    }
}

/// The process cache could not name some processes: it was full of live ones, or the
/// kernel lost records (published by the agent when these counters grow).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProcessCacheNotice {
    /// Wall-clock time, RFC 3339.
    pub time: String,
    /// Processes not cached so far because the cache was full (their events carry no
    /// `process` block).
    pub overflows: u64,
    /// Exec, fork and exit records the kernel could not write so far.
    pub lost: u64,
    /// Processes held now.
    pub cached: usize,
    /// Of them, running.
    pub live: usize,
}

/// Every kind of event Ironclad reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A Shield drop or would-drop.
    ShieldDrop(ShieldDrop),
    /// TLS plaintext.
    #[serde(rename = "tls")]
    TlsData(TlsData),
    /// A connection attempt denied or logged by the identity firewall.
    Connect(EgressDecision),
    /// A connection attempt refused by the per-identity rate limit.
    RateLimited(EgressDecision),
    /// A DNS query or response.
    Dns(DnsRecord),
    /// Per-process traffic counters.
    Bandwidth(BandwidthSample),
    /// An audit record.
    Audit(AuditEntry),
    /// A Sentinel denial, monitored change or registration.
    Sentinel(SentinelRecord),
    /// The process cache overflowed or lost records.
    ProcessCache(ProcessCacheNotice),
    /// A stateful-firewall rule with `log: true` matched.
    #[serde(rename = "firewall")]
    FirewallMatch(FirewallMatch),
    /// A connection's start or end (flow records of the stateful firewall).
    Flow(FlowRecord),
    /// A rate limit on new inbound connections refused some (`firewall.limits`).
    FirewallLimit(LimitRecord),
    /// The domain policy saw a DNS answer or a query for a feed's name.
    DnsPolicy(DnsPolicyRecord),
    /// An IDS content rule matched a connection's payload.
    IdsAlert(IdsAlert),
    /// A DLP detector found a secret in TLS plaintext.
    Dlp(DlpFinding),
}

/// A secret found by a DLP detector (`tls.dlp`) in the TLS plaintext of one SSL call.
/// It carries the match redacted, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DlpFinding {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when the plaintext was captured.
    pub ktime_ns: u64,
    /// The detector (`credit_card`, `aws_keys`, `gcp_keys`, `private_keys`, `jwt`) or
    /// the user pattern's name.
    pub detector: String,
    /// The match, masked (`************1111`).
    pub redacted: String,
    /// `write` (about to be sent) or `read` (received).
    pub direction: TlsDirection,
    /// The process and thread that called OpenSSL.
    #[serde(flatten)]
    pub actor: Actor,
    /// Cgroup id.
    pub cgroup_id: u64,
    /// The `SSL*` pointer: the connection (the same as its `tls` events').
    pub ssl: u64,
    /// The connection's local address and port, when known (as in its `tls` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<std::net::SocketAddr>,
    /// The connection's remote address and port (the peer), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<std::net::SocketAddr>,
    /// The SSL call (the same as its `tls` events').
    pub call_id: u64,
    /// Where the match starts within the call's bytes.
    pub offset: u32,
}

impl DlpFinding {
    /// A finding in plaintext going `direction`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(direction: TlsDirection) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            detector: Default::default(),
            redacted: Default::default(),
            direction,
            actor: Default::default(),
            cgroup_id: Default::default(),
            ssl: Default::default(),
            local: Default::default(),
            remote: Default::default(),
            call_id: Default::default(),
            offset: Default::default(),
        }
    }
}

/// An IDS rule (`alert` or `drop`) matched the payload of a connection the firewall
/// handed to the matcher. Made in user space from the kernel's payload snippets; the
/// payload itself is never in the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IdsAlert {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` of the packet that completed the match.
    pub ktime_ns: u64,
    /// The rule's `sid`.
    pub sid: u32,
    /// Its `rev`.
    pub rev: u32,
    /// Its `msg`.
    pub msg: String,
    /// `alert` or `drop`.
    pub action: &'static str,
    /// Whether the rest of the connection is dropped (a `drop` rule outside dry-run).
    pub blocked: bool,
    /// Its `classtype`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classtype: Option<String>,
    /// Its `priority`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Where the rule is written (`FILE:LINE`).
    pub origin: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The packet's source.
    pub src: IpAddr,
    /// Its source port.
    pub sport: u16,
    /// Its destination.
    pub dst: IpAddr,
    /// Its destination port.
    pub dport: u16,
    /// `to_server` (from the side that opened the connection) or `to_client`.
    pub direction: &'static str,
    /// Whether the connection was opened from outside.
    pub inbound: bool,
    /// The interface.
    pub ifindex: u32,
    /// The local process that opened the connection, or 0.
    pub pid: u32,
    /// Its cgroup, or 0.
    pub cgroup_id: u64,
    /// Its command name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Its executable, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Who that process is (from the process cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::process::ProcessBlock>,
}

impl IdsAlert {
    /// An alert on a packet from `src` to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            sid: Default::default(),
            rev: Default::default(),
            msg: Default::default(),
            action: Default::default(),
            blocked: Default::default(),
            classtype: Default::default(),
            priority: Default::default(),
            origin: Default::default(),
            proto: Default::default(),
            src,
            sport: Default::default(),
            dst,
            dport: Default::default(),
            direction: Default::default(),
            inbound: Default::default(),
            ifindex: Default::default(),
            pid: Default::default(),
            cgroup_id: Default::default(),
            comm: Default::default(),
            exe: Default::default(),
            process: Default::default(),
        }
    }
}

/// A rate limit on new inbound connections (`firewall.limits`) refused connections:
/// reported at the first refusal, then at most once a second per bucket (a source, a
/// subnet, a port, an interface) while it keeps refusing, with the count since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LimitRecord {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` of the latest refusal.
    pub ktime_ns: u64,
    /// Which limit: `source`, `subnet`, `port` or `interface`.
    pub limit: &'static str,
    /// The bucket: the source address, or the subnet (`10.1.2.0/24`); absent for
    /// port and interface limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Connections it refused since this bucket's previous event.
    pub dropped: u64,
    /// The limit: connections a second.
    pub per_second: u32,
    /// The limit: burst.
    pub burst: u32,
    /// `true` in dry-run: the connections were only counted.
    pub dry_run: bool,
    /// The latest refused connection: `tcp`, `udp`, `icmp`, `icmpv6` or the number.
    pub proto: String,
    /// Its source.
    pub src: IpAddr,
    /// Its source port (0 for ICMP).
    pub sport: u16,
    /// Its destination.
    pub dst: IpAddr,
    /// Its destination port (the ICMP type for ICMP).
    pub dport: u16,
    /// The interface it arrived on.
    pub ifindex: u32,
}

impl LimitRecord {
    /// A rate-limit record for a packet from `src` to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            limit: Default::default(),
            key: Default::default(),
            dropped: Default::default(),
            per_second: Default::default(),
            burst: Default::default(),
            dry_run: Default::default(),
            proto: Default::default(),
            src,
            sport: Default::default(),
            dst,
            dport: Default::default(),
            ifindex: Default::default(),
        }
    }
}

/// A flow record: a connection the stateful firewall tracked, at its start (from the
/// kernel, with its first packet) or at its end (when its entry goes: the sweep, or a
/// new connection taking its place), with packets and bytes each way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FlowRecord {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `CLOCK_MONOTONIC` ns of the record: the first packet's time at the start, the
    /// last packet's at the end.
    pub ktime_ns: u64,
    /// `start` or `end`.
    pub phase: &'static str,
    /// `in` (opened from outside) or `out` (opened by the host, or forwarded out).
    pub direction: &'static str,
    /// `tcp`, `udp`, `icmp` or `icmpv6`.
    pub proto: &'static str,
    /// The side that opened it.
    pub src: IpAddr,
    /// Its port (the echo identifier for ICMP).
    pub sport: u16,
    /// The other side.
    pub dst: IpAddr,
    /// Its port (the echo identifier for ICMP).
    pub dport: u16,
    /// The rule that admitted it; 0: the default policy.
    pub rule_id: u32,
    /// That rule's name, as the policy, `status`, `rules list` and the metrics name it
    /// (`firewall.rules[2]`, `api-7`; `default` for the default policy), when the
    /// reader knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The interface it was first seen on.
    pub ifindex: u32,
    /// Its connection-tracking state when reported (`syn_sent`, `established`, ...).
    pub state: &'static str,
    /// Packets from the side that opened it.
    pub orig_packets: u64,
    /// Bytes from the side that opened it.
    pub orig_bytes: u64,
    /// Packets from the other side.
    pub reply_packets: u64,
    /// Bytes from the other side.
    pub reply_bytes: u64,
    /// At the end: milliseconds from its first packet to its last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// At the end: `fin` (both sides closed), `reset` or `timeout` (idle too long).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<&'static str>,
    /// The local process that opened it (sent its first packet through a socket), or,
    /// in an inbound TCP connection's end record, the one that accepted it (where the
    /// firewall's accept hook runs); 0 when the process is not known.
    pub pid: u32,
    /// That process's command name, as the kernel saw it at the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The local socket's cgroup (0: none).
    pub cgroup_id: u64,
    /// The process's executable, from the process cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The process, from the process cache (when one runs and knows it), as it was when
    /// the connection opened: an end record names it even after it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::process::ProcessBlock>,
    /// When it opened, `CLOCK_MONOTONIC` ns.
    #[serde(skip)]
    pub created_ns: u64,
}

impl FlowRecord {
    /// A flow record for a connection from `src` to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            phase: Default::default(),
            direction: Default::default(),
            proto: Default::default(),
            src,
            sport: Default::default(),
            dst,
            dport: Default::default(),
            rule_id: Default::default(),
            rule: Default::default(),
            ifindex: Default::default(),
            state: Default::default(),
            orig_packets: Default::default(),
            orig_bytes: Default::default(),
            reply_packets: Default::default(),
            reply_bytes: Default::default(),
            duration_ms: Default::default(),
            end_reason: Default::default(),
            pid: Default::default(),
            comm: Default::default(),
            cgroup_id: Default::default(),
            exe: Default::default(),
            process: Default::default(),
            created_ns: Default::default(),
        }
    }
}

impl FlowRecord {
    /// Decodes the kernel's record (or one user space built the same way for an end
    /// it saw in the connection table).
    pub fn from_raw(e: &FwFlowEvent) -> Result<Self, DecodeError> {
        let phase = match e.phase {
            FW_FLOW_START => "start",
            FW_FLOW_END => "end",
            other => {
                return Err(DecodeError::BadField {
                    field: "phase",
                    value: u64::from(other),
                })
            }
        };
        let end_reason = match (e.phase, e.reason) {
            (FW_FLOW_START, 0) => None,
            (FW_FLOW_END, FW_END_TIMEOUT) => Some("timeout"),
            (FW_FLOW_END, FW_END_FIN) => Some("fin"),
            (FW_FLOW_END, FW_END_RESET) => Some("reset"),
            (_, other) => {
                return Err(DecodeError::BadField {
                    field: "reason",
                    value: u64::from(other),
                })
            }
        };
        let proto = match e.proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            58 => "icmpv6",
            other => {
                return Err(DecodeError::BadField {
                    field: "proto",
                    value: u64::from(other),
                })
            }
        };
        let state = CtState::from_u8(e.state)
            .ok_or(DecodeError::BadField {
                field: "state",
                value: u64::from(e.state),
            })?
            .name();
        let end = e.phase == FW_FLOW_END;
        Ok(Self {
            time: String::new(),
            ktime_ns: if end { e.last_seen_ns } else { e.created_ns },
            phase,
            direction: if e.flags & FW_FLOW_INBOUND != 0 {
                "in"
            } else {
                "out"
            },
            proto,
            src: mapped_or_v6(e.src),
            sport: e.sport,
            dst: mapped_or_v6(e.dst),
            dport: e.dport,
            rule_id: e.rule_id,
            rule: None,
            ifindex: e.ifindex,
            state,
            orig_packets: e.packets_orig,
            orig_bytes: e.bytes_orig,
            reply_packets: e.packets_reply,
            reply_bytes: e.bytes_reply,
            duration_ms: end.then(|| e.last_seen_ns.saturating_sub(e.created_ns) / 1_000_000),
            end_reason,
            pid: e.pid,
            comm: (e.comm[0] != 0).then(|| comm_text(&e.comm)),
            cgroup_id: e.cgroup_id,
            exe: None,
            process: None,
            created_ns: e.created_ns,
        })
    }
}

/// A logged firewall rule's match: the first packet of a new connection (or an
/// untracked packet) and what the rule did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FirewallMatch {
    /// Wall-clock time, RFC 3339 (set by the reader; empty if unknown).
    pub time: String,
    /// `bpf_ktime_get_ns()` when it happened.
    pub ktime_ns: u64,
    /// `in` (arriving on the interface) or `out`.
    pub direction: &'static str,
    /// Source address (IPv4 shown as IPv4).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for ICMP).
    pub sport: u16,
    /// Destination port, or the ICMP type.
    pub dport: u16,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: String,
    /// The rule (0: the default policy).
    pub rule_id: u32,
    /// Its name (`firewall.rules[2]`, `api-7`, `default`), when the reader knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule's action: `accept`, `drop` or `reject`.
    pub action: &'static str,
    /// What happened: the action, `rate_limited` (over the rule's limit: dropped), or
    /// `would_drop` (dry-run).
    pub verdict: &'static str,
    /// The interface index.
    pub ifindex: u32,
}

impl FirewallMatch {
    /// A firewall match on a packet from `src` to `dst`; every other field zero, empty or `None`, for the caller to set
    /// (the struct is `#[non_exhaustive]`: fields added later come with a value here).
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            time: Default::default(),
            ktime_ns: Default::default(),
            direction: Default::default(),
            src,
            dst,
            sport: Default::default(),
            dport: Default::default(),
            proto: Default::default(),
            rule_id: Default::default(),
            rule: Default::default(),
            action: Default::default(),
            verdict: Default::default(),
            ifindex: Default::default(),
        }
    }
}

fn rfc3339(ktime_ns: u64, offset: i128) -> String {
    let wall = i128::from(ktime_ns) + offset;
    u64::try_from(wall)
        .map(|ns| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
            humantime::format_rfc3339_nanos(t).to_string()
        })
        .unwrap_or_default()
}

impl Event {
    /// Every value of the `kind` field events carry, in the order of the enum: what a
    /// filter by kind may name (a name not in it matches nothing, ever).
    pub const KINDS: &'static [&'static str] = &[
        "shield_drop",
        "tls",
        "connect",
        "rate_limited",
        "dns",
        "bandwidth",
        "audit",
        "sentinel",
        "process_cache",
        "firewall",
        "flow",
        "firewall_limit",
        "dns_policy",
        "ids_alert",
        "dlp",
    ];

    /// This event's `kind` field (one of [`KINDS`](Self::KINDS)).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ShieldDrop(_) => "shield_drop",
            Event::TlsData(_) => "tls",
            Event::Connect(_) => "connect",
            Event::RateLimited(_) => "rate_limited",
            Event::Dns(_) => "dns",
            Event::Bandwidth(_) => "bandwidth",
            Event::Audit(_) => "audit",
            Event::Sentinel(_) => "sentinel",
            Event::ProcessCache(_) => "process_cache",
            Event::FirewallMatch(_) => "firewall",
            Event::Flow(_) => "flow",
            Event::FirewallLimit(_) => "firewall_limit",
            Event::DnsPolicy(_) => "dns_policy",
            Event::IdsAlert(_) => "ids_alert",
            Event::Dlp(_) => "dlp",
        }
    }

    /// Sets the event's wall-clock `time` from its `ktime_ns` (CLOCK_MONOTONIC) and
    /// `offset`, the wall-clock minus monotonic nanoseconds measured by the reader.
    pub fn set_wall_time(&mut self, offset: i128) {
        match self {
            Event::ShieldDrop(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::TlsData(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::Connect(e) | Event::RateLimited(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::Dns(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::Sentinel(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::FirewallMatch(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::Flow(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::FirewallLimit(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::DnsPolicy(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::IdsAlert(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::Dlp(e) => e.time = rfc3339(e.ktime_ns, offset),
            Event::Bandwidth(_) | Event::Audit(_) | Event::ProcessCache(_) => {}
        }
    }

    /// Who did it, for kinds that name a process the kernel saw.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Event::TlsData(e) => Some(&e.actor),
            Event::Connect(e) | Event::RateLimited(e) => Some(&e.actor),
            Event::Dns(e) => Some(&e.actor),
            Event::Sentinel(e) => Some(&e.actor),
            Event::DnsPolicy(e) => Some(&e.actor),
            Event::Dlp(e) => Some(&e.actor),
            Event::Bandwidth(_)
            | Event::ShieldDrop(_)
            | Event::Audit(_)
            | Event::ProcessCache(_)
            | Event::FirewallMatch(_)
            | Event::FirewallLimit(_)
            | Event::IdsAlert(_)
            | Event::Flow(_) => None,
        }
    }

    /// Who did it, to fill in (the executable's path, the process block).
    pub fn actor_mut(&mut self) -> Option<&mut Actor> {
        match self {
            Event::TlsData(e) => Some(&mut e.actor),
            Event::Connect(e) | Event::RateLimited(e) => Some(&mut e.actor),
            Event::Dns(e) => Some(&mut e.actor),
            Event::Sentinel(e) => Some(&mut e.actor),
            Event::DnsPolicy(e) => Some(&mut e.actor),
            Event::Dlp(e) => Some(&mut e.actor),
            Event::Bandwidth(_)
            | Event::ShieldDrop(_)
            | Event::Audit(_)
            | Event::ProcessCache(_)
            | Event::FirewallMatch(_)
            | Event::FirewallLimit(_)
            | Event::IdsAlert(_)
            | Event::Flow(_) => None,
        }
    }

    /// Whose event it is, for the process cache: (pid, `ktime_ns` when it happened if
    /// the kernel stamped it, the executable's (device, inode) as the kernel saw it, 0
    /// if unknown). `None` for kinds that name no process.
    pub fn process_subject(&self) -> Option<(u32, Option<u64>, (u32, u64))> {
        let ktime = match self {
            Event::TlsData(e) => e.ktime_ns,
            Event::Connect(e) | Event::RateLimited(e) => e.ktime_ns,
            Event::Dns(e) => e.ktime_ns,
            Event::Sentinel(e) => e.ktime_ns,
            Event::DnsPolicy(e) => e.ktime_ns,
            Event::Dlp(e) => e.ktime_ns,
            Event::Bandwidth(e) => return Some((e.pid, None, (0, 0))),
            // The process as it was when the connection opened.
            Event::Flow(e) => return Some((e.pid, Some(e.created_ns), (0, 0))),
            Event::IdsAlert(e) if e.pid != 0 => return Some((e.pid, Some(e.ktime_ns), (0, 0))),
            Event::IdsAlert(_) => return None,
            Event::ShieldDrop(_)
            | Event::Audit(_)
            | Event::ProcessCache(_)
            | Event::FirewallMatch(_)
            | Event::FirewallLimit(_) => return None,
        };
        self.actor()
            .map(|a| (a.pid, Some(ktime), (a.exe_dev, a.exe_ino)))
    }

    /// Attaches the `process` block; an `exe` the event's own enrichment left unknown
    /// is taken from it.
    pub fn set_process(&mut self, block: crate::process::ProcessBlock) {
        if let Event::Bandwidth(e) = self {
            if e.exe.is_none() {
                e.exe.clone_from(&block.exe);
            }
            if e.comm.is_none() {
                e.comm = Some(block.comm.clone());
            }
            e.process = Some(block);
        } else if let Event::Flow(e) = self {
            if e.exe.is_none() {
                e.exe.clone_from(&block.exe);
            }
            if e.comm.is_none() {
                e.comm = Some(block.comm.clone());
            }
            e.process = Some(block);
        } else if let Event::IdsAlert(e) = self {
            if e.exe.is_none() {
                e.exe.clone_from(&block.exe);
            }
            if e.comm.is_none() {
                e.comm = Some(block.comm.clone());
            }
            e.process = Some(block);
        } else if let Some(actor) = self.actor_mut() {
            if actor.exe.is_none() {
                actor.exe.clone_from(&block.exe);
            }
            actor.process = Some(block);
        }
    }

    /// The event as one JSON line (no trailing newline), with a `kind` field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"kind\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
}

fn addr(family: u8, bytes: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[12], bytes[13], bytes[14], bytes[15],
        ))),
        6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
        other => Err(DecodeError::BadField {
            field: "family",
            value: u64::from(other),
        }),
    }
}

/// Decodes one record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let header = EventHeader::from_bytes(record).ok_or(DecodeError::Truncated {
        need: EventHeader::SIZE,
        got: record.len(),
    })?;
    if header.version != ABI_VERSION as u16 {
        return Err(DecodeError::Version(header.version));
    }
    if header.size as usize != record.len() {
        return Err(DecodeError::SizeMismatch {
            said: header.size,
            got: record.len(),
        });
    }
    match header.kind {
        k if k == EventKind::Shield as u16 => {
            let e = ShieldEvent::from_bytes(record).ok_or(DecodeError::Truncated {
                need: ShieldEvent::SIZE,
                got: record.len(),
            })?;
            let verdict = ShieldVerdict::from_raw(e.verdict).ok_or(DecodeError::BadField {
                field: "verdict",
                value: u64::from(e.verdict),
            })?;
            Ok(Event::ShieldDrop(ShieldDrop {
                time: String::new(),
                ktime_ns: e.hdr.ktime_ns,
                src: addr(e.family, e.src)?,
                dst: addr(e.family, e.dst)?,
                sport: e.sport,
                dport: e.dport,
                proto: e.proto,
                rule_id: e.rule_id,
                verdict,
                ifindex: e.ifindex,
                len: e.pkt_len,
            }))
        }
        k if k == EventKind::Tls as u16 => decode_tls(record),
        k if k == EventKind::Egress as u16 => decode_egress(record),
        k if k == EventKind::Dns as u16 => decode_dns(record),
        k if k == EventKind::Sentinel as u16 => decode_sentinel(record),
        k if k == EventKind::Firewall as u16 => decode_firewall(record),
        k if k == EventKind::FwLimit as u16 => decode_limit(record),
        k if k == EventKind::DnsPolicy as u16 => decode_dns_policy(record),
        k if k == EventKind::Flow as u16 => {
            let e = FwFlowEvent::from_bytes(record).ok_or(DecodeError::Truncated {
                need: FwFlowEvent::SIZE,
                got: record.len(),
            })?;
            FlowRecord::from_raw(&e).map(Event::Flow)
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The [`Actor`] of a kernel record, before user space resolves its executable.
fn actor(pid: u32, tid: Option<u32>, uid: u32, comm: &[u8; 16], dev: u32, ino: u64) -> Actor {
    Actor {
        pid,
        tid,
        uid,
        comm: comm_text(comm),
        exe: None,
        exe_dev: dev,
        exe_ino: ino,
        process: None,
    }
}

/// A NUL-padded kernel comm as text.
fn comm_text(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

fn decode_firewall(record: &[u8]) -> Result<Event, DecodeError> {
    let e = FwEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: FwEvent::SIZE,
        got: record.len(),
    })?;
    let action = match e.action {
        FW_ACCEPT => "accept",
        FW_DROP => "drop",
        FW_REJECT => "reject",
        other => {
            return Err(DecodeError::BadField {
                field: "action",
                value: u64::from(other),
            })
        }
    };
    let verdict = if e.flags & FW_EV_RATE_LIMITED != 0 {
        "rate_limited"
    } else if e.flags & FW_EV_DRY_RUN != 0 {
        "would_drop"
    } else {
        action
    };
    Ok(Event::FirewallMatch(FirewallMatch {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        direction: if e.flags & FW_EV_INBOUND != 0 {
            "in"
        } else {
            "out"
        },
        src: mapped_or_v6(e.src),
        dst: mapped_or_v6(e.dst),
        sport: e.sport,
        dport: e.dport,
        proto: proto_name(e.proto),
        rule_id: e.rule_id,
        rule: None,
        action,
        verdict,
        ifindex: e.ifindex,
    }))
}

/// An IP protocol number as events name it (`tcp`, `udp`, `icmp`, `icmpv6`; others as
/// the number).
pub fn proto_name(proto: u8) -> String {
    match proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        other => other.to_string(),
    }
}

fn decode_limit(record: &[u8]) -> Result<Event, DecodeError> {
    let e = FwLimitEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: FwLimitEvent::SIZE,
        got: record.len(),
    })?;
    let kind = FwLimitKind::from_code(e.kind).ok_or(DecodeError::BadField {
        field: "kind",
        value: u64::from(e.kind),
    })?;
    let key = match kind {
        FwLimitKind::Source => Some(mapped_or_v6(e.key).to_string()),
        FwLimitKind::Subnet => Some(format!("{}/{}", mapped_or_v6(e.key), e.prefix)),
        _ => None,
    };
    Ok(Event::FirewallLimit(LimitRecord {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        limit: kind.name(),
        key,
        dropped: e.dropped,
        per_second: e.per_sec,
        burst: e.burst,
        dry_run: e.flags & FW_LIMIT_F_DRY_RUN != 0,
        proto: proto_name(e.proto),
        src: mapped_or_v6(e.src),
        sport: e.sport,
        dst: mapped_or_v6(e.dst),
        dport: e.dport,
        ifindex: e.ifindex,
    }))
}

fn decode_dns_policy(record: &[u8]) -> Result<Event, DecodeError> {
    let e = DnsPolicyEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: DnsPolicyEvent::SIZE,
        got: record.len(),
    })?;
    let what = match e.what {
        DNS_EV_ANSWER => "answer",
        DNS_EV_FEED_QUERY => "feed_query",
        DNS_EV_FEED_ANSWER => "feed_answer",
        other => {
            return Err(DecodeError::BadField {
                field: "what",
                value: u64::from(other),
            })
        }
    };
    let shown = usize::from(e.naddrs).min(DNS_EVENT_ADDRS);
    Ok(Event::DnsPolicy(DnsPolicyRecord {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        what,
        actor: actor(e.pid, None, e.uid, &e.comm, e.exe.dev, e.exe.ino),
        name: e.name(),
        qtype: crate::dns::type_name(e.qtype),
        server: mapped_or_v6(e.server),
        server_port: e.port,
        proto: if e.proto == 6 { "tcp" } else { "udp" },
        patterns: Vec::new(),
        pattern_bits: e.patterns,
        feed: (e.feed != 0).then(|| format!("feed{}", e.feed)),
        feed_id: e.feed,
        blocked: e.blocked != 0,
        addresses: e
            .addrs
            .iter()
            .take(shown)
            .map(|a| mapped_or_v6(*a))
            .collect(),
        address_count: e.naddrs,
        refused: e.refused,
        ttl: e.ttl,
        scope: e.exe,
    }))
}

fn mapped_or_v6(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

fn decode_sentinel(record: &[u8]) -> Result<Event, DecodeError> {
    let e = SentinelEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: SentinelEvent::SIZE,
        got: record.len(),
    })?;
    let op = SentinelOp::from_raw(e.op).ok_or(DecodeError::BadField {
        field: "op",
        value: u64::from(e.op),
    })?;
    let verdict = SentinelVerdict::from_raw(e.verdict).ok_or(DecodeError::BadField {
        field: "verdict",
        value: u64::from(e.verdict),
    })?;
    let name_len = e.name.iter().position(|b| *b == 0).unwrap_or(e.name.len());
    Ok(Event::Sentinel(SentinelRecord {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        op,
        verdict,
        actor: actor(e.pid, Some(e.tid), e.uid, &e.comm, e.exe.dev, e.exe.ino),
        path: None,
        name: String::from_utf8_lossy(&e.name[..name_len]).into_owned(),
        target_dev: e.target.dev,
        target_ino: e.target.ino,
        parent_dev: e.parent.dev,
        parent_ino: e.parent.ino,
        target_pid: e.target_pid,
        arg: e.arg,
    }))
}

fn decode_dns(record: &[u8]) -> Result<Event, DecodeError> {
    let e = DnsEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: DnsEvent::RECORD_SIZE,
        got: record.len(),
    })?;
    let len = e.len as usize;
    let data = record
        .get(DnsEvent::DATA_OFFSET..DnsEvent::DATA_OFFSET + len)
        .ok_or(DecodeError::BadField {
            field: "len",
            value: u64::from(e.len),
        })?;
    let proto = match e.proto {
        17 => "udp",
        6 => "tcp",
        other => {
            return Err(DecodeError::BadField {
                field: "proto",
                value: u64::from(other),
            })
        }
    };
    // Over TCP a two-byte length comes first.
    let message = if proto == "tcp" {
        data.get(2..).unwrap_or(&[])
    } else {
        data
    };
    let parsed = crate::dns::parse(message);
    let (id, qname, qtype, rcode, answers, error) = match &parsed {
        Ok(m) => (
            Some(m.id),
            m.questions.first().map(|q| q.name.clone()),
            m.questions.first().map(|q| crate::dns::type_name(q.qtype)),
            m.response.then_some(m.rcode),
            m.answers.iter().filter_map(|a| a.address).collect(),
            None,
        ),
        Err(err) => (None, None, None, None, Vec::new(), Some(err.to_string())),
    };
    Ok(Event::Dns(DnsRecord {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        direction: if e.direction == DIR_OUT {
            "query"
        } else {
            "response"
        },
        actor: actor(e.pid, None, e.uid, &e.comm, e.exe.dev, e.exe.ino),
        src: mapped_or_v6(e.src),
        dst: mapped_or_v6(e.dst),
        sport: e.sport,
        dport: e.dport,
        proto,
        id,
        qname,
        qtype,
        rcode,
        answers,
        error,
    }))
}

fn decode_egress(record: &[u8]) -> Result<Event, DecodeError> {
    let e = EgressEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: EgressEvent::SIZE,
        got: record.len(),
    })?;
    let verdict = EgressAction::from_raw(e.verdict).ok_or(DecodeError::BadField {
        field: "verdict",
        value: u64::from(e.verdict),
    })?;
    let hook = match e.hook {
        1 => "connect4",
        2 => "connect6",
        3 => "sendmsg4",
        4 => "sendmsg6",
        other => {
            return Err(DecodeError::BadField {
                field: "hook",
                value: u64::from(other),
            })
        }
    };
    let v6 = Ipv6Addr::from(e.dst);
    let dst = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    let decision = EgressDecision {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        verdict,
        actor: actor(e.pid, Some(e.tid), e.uid, &e.comm, e.exe.dev, e.exe.ino),
        cgroup_id: e.cgroup_id,
        dst,
        dport: e.dport,
        proto: match e.proto {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            other => other.to_string(),
        },
        rule_id: e.rule_id,
        hook,
        feed: (e.feed != 0).then(|| format!("feed{}", e.feed)),
        encrypted_dns: e.note == ironclad_core::abi::EGRESS_NOTE_ENCRYPTED_DNS,
    };
    Ok(if verdict == EgressAction::RateLimited {
        Event::RateLimited(decision)
    } else {
        Event::Connect(decision)
    })
}

fn decode_tls(record: &[u8]) -> Result<Event, DecodeError> {
    let e = TlsEvent::from_bytes(record).ok_or(DecodeError::Truncated {
        need: TlsEvent::RECORD_SIZE,
        got: record.len(),
    })?;
    let len = e.len as usize;
    if len > TLS_CHUNK {
        return Err(DecodeError::BadField {
            field: "len",
            value: u64::from(e.len),
        });
    }
    let data = record
        .get(TlsEvent::DATA_OFFSET..TlsEvent::DATA_OFFSET + len)
        .ok_or(DecodeError::Truncated {
            need: TlsEvent::DATA_OFFSET + len,
            got: record.len(),
        })?
        .to_vec();
    let direction = match e.direction {
        TLS_WRITE => TlsDirection::Write,
        TLS_READ => TlsDirection::Read,
        other => {
            return Err(DecodeError::BadField {
                field: "direction",
                value: u64::from(other),
            })
        }
    };
    let http = if e.offset == 0 {
        crate::http::parse(&data)
    } else {
        None
    };
    Ok(Event::TlsData(TlsData {
        time: String::new(),
        ktime_ns: e.hdr.ktime_ns,
        direction,
        actor: actor(e.pid, Some(e.tid), e.uid, &e.comm, e.exe.dev, e.exe.ino),
        cgroup_id: e.cgroup_id,
        ssl: e.ssl,
        local: e.sock.addresses().map(|(local, _)| local),
        remote: e.sock.addresses().map(|(_, remote)| remote),
        call_id: e.call_id,
        offset: e.offset,
        len: e.len,
        total_len: e.total_len,
        truncated: e.flags & TLS_F_TRUNCATED != 0,
        last: e.flags & TLS_F_LAST != 0,
        data,
        http,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShieldEvent {
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&[203, 0, 113, 9]);
        let mut dst = src;
        dst[12..].copy_from_slice(&[192, 0, 2, 1]);
        ShieldEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Shield as u16,
                size: ShieldEvent::SIZE as u32,
                ktime_ns: 42,
            },
            src,
            dst,
            rule_id: 7,
            ifindex: 3,
            pkt_len: 98,
            sport: 40000,
            dport: 443,
            family: 4,
            proto: 6,
            verdict: ShieldVerdict::Drop as u8,
            _pad0: [0; 5],
        }
    }

    #[test]
    fn decodes_a_tls_chunk_with_http() {
        let request = b"GET /secret-path HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let fixed = TlsEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Tls as u16,
                size: TlsEvent::RECORD_SIZE as u32,
                ktime_ns: 1,
            },
            ssl: 0xdead,
            call_id: 7,
            pid: 42,
            tid: 43,
            total_len: request.len() as u32,
            len: request.len() as u32,
            direction: TLS_WRITE,
            flags: TLS_F_LAST,
            comm,
            ..TlsEvent::default()
        };
        let event = decode(&fixed.to_record(request)).expect("decodes");
        let Event::TlsData(tls) = &event else {
            panic!("not TLS: {event:?}");
        };
        assert_eq!(tls.data, request);
        assert_eq!(tls.actor.comm, "curl");
        assert!(tls.last && !tls.truncated);
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        assert_eq!(
            json["kind"],
            event.kind(),
            "Event::kind names what the JSON says"
        );
        assert!(Event::KINDS.contains(&event.kind()));
        assert_eq!(json["kind"], "tls");
        assert_eq!(json["direction"], "write");
        assert_eq!(json["http"]["method"], "GET");
        assert_eq!(json["http"]["path"], "/secret-path");
        assert_eq!(json["http"]["host"], "localhost");
        assert_eq!(
            json["data"].as_str(),
            Some("GET /secret-path HTTP/1.1\r\nHost: localhost\r\n\r\n")
        );

        let mut bad = fixed;
        bad.len = 5000;
        assert!(matches!(
            decode(&bad.to_record(request)),
            Err(DecodeError::BadField { field: "len", .. })
        ));
        let record = fixed.to_record(request);
        assert_eq!(
            record.len(),
            TlsEvent::SMALL_RECORD_SIZE,
            "a short chunk, a short record"
        );
        for len in [0, 16, 87, 100, TlsEvent::SMALL_RECORD_SIZE - 1] {
            assert!(decode(&record[..len]).is_err(), "len {len}");
        }
        // A record whose header claims the whole size but is cut short is refused.
        let mut cut = fixed.to_record(request);
        cut[4..8].copy_from_slice(&(TlsEvent::RECORD_SIZE as u32).to_ne_bytes());
        assert!(decode(&cut).is_err());

        // A chunk longer than the short record's room comes in a whole record.
        let long = vec![b'y'; ironclad_core::abi::TLS_SMALL_CHUNK + 1];
        let whole = TlsEvent {
            total_len: long.len() as u32,
            len: long.len() as u32,
            ..fixed
        };
        let record = whole.to_record(&long);
        assert_eq!(record.len(), TlsEvent::RECORD_SIZE);
        let Ok(Event::TlsData(tls)) = decode(&record) else {
            panic!("whole record does not decode");
        };
        assert_eq!(tls.data, long);
        assert!(decode(&record[..TlsEvent::RECORD_SIZE - 1]).is_err());
    }

    #[test]
    fn decodes_an_egress_decision() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"script");
        let e = EgressEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Egress as u16,
                size: EgressEvent::SIZE as u32,
                ktime_ns: 9,
            },
            pid: 77,
            rule_id: 2,
            dst: "::ffff:127.0.0.1".parse::<Ipv6Addr>().expect("ip").octets(),
            dport: 8080,
            proto: 6,
            verdict: EgressAction::Deny as u8,
            hook: 2,
            comm,
            ..EgressEvent::default()
        };
        let event = decode(&e.to_bytes()).expect("decodes");
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        assert_eq!(
            json["kind"],
            event.kind(),
            "Event::kind names what the JSON says"
        );
        assert!(Event::KINDS.contains(&event.kind()));
        assert_eq!(json["kind"], "connect");
        assert_eq!(
            json["dst"], "127.0.0.1",
            "a mapped destination reads as IPv4"
        );
        assert_eq!(json["verdict"], "deny");
        assert_eq!(json["hook"], "connect6");
        assert_eq!(json["comm"], "script");
        let mut limited = e;
        limited.verdict = EgressAction::RateLimited as u8;
        assert!(matches!(
            decode(&limited.to_bytes()),
            Ok(Event::RateLimited(_))
        ));
        let mut bad = e;
        bad.hook = 9;
        assert!(decode(&bad.to_bytes()).is_err());
    }

    #[test]
    fn decodes_flow_records_at_both_ends_and_refuses_unknown_phases_and_reasons() {
        let mut e = FwFlowEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Flow as u16,
                size: FwFlowEvent::SIZE as u32,
                ktime_ns: 5_000_000_000,
            },
            created_ns: 1_000_000_000,
            last_seen_ns: 3_500_000_000,
            packets_orig: 6,
            bytes_orig: 500,
            packets_reply: 4,
            bytes_reply: 9000,
            rule_id: 2,
            ifindex: 7,
            pid: 4242,
            sport: 51000,
            dport: 443,
            proto: 6,
            phase: FW_FLOW_START,
            state: CtState::SynSent as u8,
            ..FwFlowEvent::default()
        };
        e.src = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        e.dst = Ipv4Addr::new(192, 0, 2, 8).to_ipv6_mapped().octets();
        e.comm[..4].copy_from_slice(b"curl");
        let Ok(Event::Flow(start)) = decode(&e.to_bytes()) else {
            panic!("not a flow record");
        };
        assert_eq!(
            (start.phase, start.direction, start.proto, start.state),
            ("start", "out", "tcp", "syn_sent")
        );
        assert_eq!((start.pid, start.comm.as_deref()), (4242, Some("curl")));
        assert_eq!((start.end_reason, start.duration_ms), (None, None));
        assert_eq!(
            start.ktime_ns, 1_000_000_000,
            "a start is stamped when it opened"
        );
        assert_eq!(start.dst, IpAddr::from([192, 0, 2, 8]));
        let json: serde_json::Value =
            serde_json::from_str(&Event::Flow(start).to_json()).unwrap_or_default();
        assert_eq!(json["kind"], "flow");
        assert!(json.get("end_reason").is_none() && json.get("created_ns").is_none());

        let mut end = e;
        end.phase = FW_FLOW_END;
        end.reason = FW_END_RESET;
        end.state = CtState::Closing as u8;
        end.flags = FW_FLOW_INBOUND;
        end.comm = [0; 16];
        let Ok(Event::Flow(f)) = decode(&end.to_bytes()) else {
            panic!("not a flow record");
        };
        assert_eq!(
            (f.phase, f.direction, f.end_reason),
            ("end", "in", Some("reset"))
        );
        assert_eq!((f.duration_ms, f.ktime_ns), (Some(2500), 3_500_000_000));
        assert_eq!((f.reply_packets, f.reply_bytes, f.comm), (4, 9000, None));

        for (phase, reason) in [
            (3, 0),
            (FW_FLOW_START, FW_END_FIN),
            (FW_FLOW_END, 0),
            (FW_FLOW_END, 9),
        ] {
            let mut bad = e;
            bad.phase = phase;
            bad.reason = reason;
            assert!(
                decode(&bad.to_bytes()).is_err(),
                "phase {phase} reason {reason}"
            );
        }
        let mut bad = e;
        bad.proto = 47;
        assert!(decode(&bad.to_bytes()).is_err());
        assert!(decode(&e.to_bytes()[..100]).is_err(), "truncated");
    }

    #[test]
    fn decodes_a_firewall_match_with_its_verdict_and_refuses_unknown_actions() {
        let mut e = FwEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Firewall as u16,
                size: FwEvent::SIZE as u32,
                ktime_ns: 9,
            },
            rule_id: 3,
            ifindex: 4,
            sport: 40000,
            dport: 22,
            proto: 6,
            action: FW_REJECT,
            flags: FW_EV_INBOUND,
            ..FwEvent::default()
        };
        e.src = std::net::Ipv4Addr::new(10, 0, 0, 9)
            .to_ipv6_mapped()
            .octets();
        e.dst = "2001:db8::1"
            .parse::<Ipv6Addr>()
            .map(|a| a.octets())
            .unwrap_or_default();
        let Ok(Event::FirewallMatch(m)) = decode(&e.to_bytes()) else {
            panic!("not a firewall match");
        };
        assert_eq!(m.src, IpAddr::from([10, 0, 0, 9]));
        assert_eq!(m.dst.to_string(), "2001:db8::1");
        assert_eq!(
            (m.direction, m.action, m.verdict),
            ("in", "reject", "reject")
        );
        assert_eq!(
            (m.proto.as_str(), m.sport, m.dport, m.rule_id),
            ("tcp", 40000, 22, 3)
        );
        let json: serde_json::Value =
            serde_json::from_str(&Event::FirewallMatch(m).to_json()).unwrap_or_default();
        assert_eq!(json["kind"], "firewall");
        let mut limited = e;
        limited.flags = FW_EV_RATE_LIMITED;
        let Ok(Event::FirewallMatch(m)) = decode(&limited.to_bytes()) else {
            panic!("not a firewall match");
        };
        assert_eq!((m.direction, m.verdict), ("out", "rate_limited"));
        let mut bad = e;
        bad.action = 7;
        assert!(decode(&bad.to_bytes()).is_err());
    }

    #[test]
    fn decodes_a_limit_event_with_its_bucket() {
        let mut e = FwLimitEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::FwLimit as u16,
                size: FwLimitEvent::SIZE as u32,
                ktime_ns: 9,
            },
            dropped: 120,
            ifindex: 4,
            per_sec: 50,
            burst: 100,
            sport: 40000,
            dport: 80,
            proto: 6,
            kind: FwLimitKind::Subnet as u8,
            prefix: 24,
            ..FwLimitEvent::default()
        };
        e.key = Ipv4Addr::new(10, 1, 2, 0).to_ipv6_mapped().octets();
        e.src = Ipv4Addr::new(10, 1, 2, 77).to_ipv6_mapped().octets();
        e.dst = Ipv4Addr::new(10, 9, 0, 1).to_ipv6_mapped().octets();
        let Ok(Event::FirewallLimit(r)) = decode(&e.to_bytes()) else {
            panic!("not a limit record");
        };
        assert_eq!(
            (r.limit, r.key.as_deref(), r.dropped, r.per_second, r.burst),
            ("subnet", Some("10.1.2.0/24"), 120, 50, 100)
        );
        assert_eq!(
            (r.src, r.dport, r.dry_run),
            (IpAddr::from([10, 1, 2, 77]), 80, false)
        );
        let json: serde_json::Value =
            serde_json::from_str(&Event::FirewallLimit(r).to_json()).unwrap_or_default();
        assert_eq!(json["kind"], "firewall_limit");
        assert_eq!(json["key"], "10.1.2.0/24");
        let mut iface = e;
        iface.kind = FwLimitKind::Interface as u8;
        iface.flags = FW_LIMIT_F_DRY_RUN;
        let Ok(Event::FirewallLimit(r)) = decode(&iface.to_bytes()) else {
            panic!("not a limit record");
        };
        assert_eq!((r.limit, r.key, r.dry_run), ("interface", None, true));
        let mut bad = e;
        bad.kind = 9;
        assert!(decode(&bad.to_bytes()).is_err());
        assert!(decode(&e.to_bytes()[..60]).is_err());
    }

    #[test]
    fn decodes_a_sentinel_denial_and_refuses_unknown_ops() {
        let mut e = SentinelEvent {
            hdr: EventHeader {
                version: ABI_VERSION as u16,
                kind: EventKind::Sentinel as u16,
                size: SentinelEvent::SIZE as u32,
                ktime_ns: 7,
            },
            pid: 42,
            op: SentinelOp::Unlink as u16,
            verdict: SentinelVerdict::Denied as u8,
            ..SentinelEvent::default()
        };
        e.comm[..2].copy_from_slice(b"rm");
        e.name[..8].copy_from_slice(b"app.yaml");
        e.target.ino = 99;
        let Ok(Event::Sentinel(r)) = decode(&e.to_bytes()) else {
            panic!("not a sentinel record");
        };
        assert_eq!(
            (
                r.op,
                r.verdict,
                r.actor.pid,
                r.actor.comm.as_str(),
                r.name.as_str(),
                r.target_ino
            ),
            (
                SentinelOp::Unlink,
                SentinelVerdict::Denied,
                42,
                "rm",
                "app.yaml",
                99
            )
        );
        let json = Event::Sentinel(r).to_json();
        assert!(json.contains(r#""kind":"sentinel""#) && json.contains(r#""op":"unlink""#));
        assert!(json.contains(r#""verdict":"denied""#), "{json}");
        e.op = 999;
        assert_eq!(
            decode(&e.to_bytes()),
            Err(DecodeError::BadField {
                field: "op",
                value: 999
            })
        );
    }

    #[test]
    fn decodes_a_shield_drop() {
        let event = decode(&sample().to_bytes()).expect("decodes");
        let Event::ShieldDrop(drop) = &event else {
            panic!("not a drop: {event:?}");
        };
        assert_eq!(drop.src, "203.0.113.9".parse::<IpAddr>().expect("ip"));
        assert_eq!(drop.dst, "192.0.2.1".parse::<IpAddr>().expect("ip"));
        assert_eq!((drop.sport, drop.dport, drop.proto), (40000, 443, 6));
        assert_eq!(drop.rule_id, 7);
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("json");
        assert_eq!(
            json["kind"],
            event.kind(),
            "Event::kind names what the JSON says"
        );
        assert!(Event::KINDS.contains(&event.kind()));
        assert_eq!(json["kind"], "shield_drop");
        let mut stamped = event.clone();
        stamped.set_wall_time(1_795_334_400_000_000_000);
        let json: serde_json::Value = serde_json::from_str(&stamped.to_json()).expect("json");
        assert_eq!(json["time"], "2026-11-22T08:00:00.000000042Z");
        assert_eq!(json["ktime_ns"], 42);
        assert_eq!(json["src"], "203.0.113.9");
        assert_eq!(json["verdict"], "drop");
    }

    #[test]
    fn every_prefix_of_a_record_is_an_error_not_a_panic() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn unknown_kinds_versions_and_values_are_reported() {
        let mut e = sample();
        e.hdr.kind = 99;
        assert_eq!(decode(&e.to_bytes()), Err(DecodeError::UnknownKind(99)));
        let mut e = sample();
        e.hdr.version = 2;
        assert_eq!(decode(&e.to_bytes()), Err(DecodeError::Version(2)));
        let mut e = sample();
        e.verdict = 9;
        assert!(matches!(
            decode(&e.to_bytes()),
            Err(DecodeError::BadField {
                field: "verdict",
                ..
            })
        ));
        let mut e = sample();
        e.family = 5;
        assert!(matches!(
            decode(&e.to_bytes()),
            Err(DecodeError::BadField {
                field: "family",
                ..
            })
        ));
        let mut long = sample().to_bytes().to_vec();
        long.push(0);
        assert!(matches!(
            decode(&long),
            Err(DecodeError::SizeMismatch { .. })
        ));
    }

    /// Decoding is total: every input, random or a valid record with bytes flipped, is
    /// either an event (that serialises) or an error (that says something), never a
    /// panic; and both outcomes occur, so the check is not vacuous.
    #[test]
    fn arbitrary_bytes_decode_or_are_refused_never_panic() {
        let valid = sample().to_bytes().to_vec();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut decoded, mut refused) = (0u32, 0u32);
        for round in 0..20_000u32 {
            let r = next();
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (r % 100) as usize;
                (0..len).map(|i| (r >> (i % 8)) as u8).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..(r % 3) {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] ^= next() as u8;
                }
                b
            };
            match decode(&bytes) {
                Ok(event) => {
                    decoded += 1;
                    assert!(event.to_json().contains("\"kind\""), "{bytes:?}");
                    assert_eq!(decode(&bytes).ok(), Some(event), "deterministic");
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert_eq!(decoded + refused, 20_000, "every input accounted for");
        assert!(
            decoded > 0 && refused > 0,
            "decoded {decoded}, refused {refused}"
        );
    }

    /// The actor's fields stay at the event's top level in JSON (the format before
    /// `Actor` existed), with no `actor` key; a DNS record has no `tid`.
    #[test]
    fn the_actor_is_flattened_into_the_events_json() {
        let actor = Actor {
            pid: 7,
            tid: Some(8),
            uid: 1000,
            comm: "curl".to_string(),
            exe: Some("/usr/bin/curl".to_string()),
            exe_dev: 3,
            exe_ino: 99,
            process: None,
        };
        let connect = Event::Connect(EgressDecision {
            time: String::new(),
            ktime_ns: 1,
            verdict: EgressAction::Deny,
            actor: actor.clone(),
            cgroup_id: 5,
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dport: 443,
            proto: "tcp".to_string(),
            rule_id: 2,
            hook: "connect4",
            feed: None,
            encrypted_dns: false,
        });
        let json: serde_json::Value = serde_json::from_str(&connect.to_json()).expect("json");
        assert_eq!(
            json["kind"],
            connect.kind(),
            "Event::kind names what the JSON says"
        );
        assert!(Event::KINDS.contains(&connect.kind()));
        assert_eq!(json["kind"], "connect");
        assert_eq!(json["pid"], 7);
        assert_eq!(json["tid"], 8);
        assert_eq!(json["uid"], 1000);
        assert_eq!(json["comm"], "curl");
        assert_eq!(json["exe"], "/usr/bin/curl");
        assert_eq!(json["exe_dev"], 3);
        assert_eq!(json["exe_ino"], 99);
        assert_eq!(json["dport"], 443);
        assert!(
            json.get("actor").is_none() && json.get("process").is_none(),
            "{json}"
        );
        assert_eq!(connect.process_subject(), Some((7, Some(1), (3, 99))));

        let dns = Event::Dns(DnsRecord {
            time: String::new(),
            ktime_ns: 2,
            direction: "query",
            actor: Actor {
                tid: None,
                exe: None,
                ..actor
            },
            src: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dst: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport: 5353,
            dport: 53,
            proto: "udp",
            id: Some(1),
            qname: Some("example.org".to_string()),
            qtype: Some("A".to_string()),
            rcode: None,
            answers: Vec::new(),
            error: None,
        });
        let json: serde_json::Value = serde_json::from_str(&dns.to_json()).expect("json");
        assert!(json.get("tid").is_none(), "{json}");
        assert!(json["exe"].is_null(), "{json}");
        assert_eq!(json["pid"], 7);
    }

    #[test]
    fn a_dns_policy_record_decodes_its_name_addresses_and_what_it_reports() {
        use ironclad_core::abi::{DnsPolicyEvent, EventKind, DNS_EV_FEED_QUERY};
        let mut e = DnsPolicyEvent::default();
        e.hdr.version = u16::try_from(ironclad_core::abi::ABI_VERSION).expect("small");
        e.hdr.kind = EventKind::DnsPolicy as u16;
        e.hdr.size = u32::try_from(DnsPolicyEvent::SIZE).expect("size");
        e.what = DNS_EV_ANSWER;
        e.pid = 42;
        e.comm[..4].copy_from_slice(b"curl");
        e.server[10] = 0xff;
        e.server[11] = 0xff;
        e.server[12..].copy_from_slice(&[10, 0, 0, 53]);
        e.port = 53;
        e.proto = 17;
        e.qtype = 28;
        let wire = b"\x03WWW\x07example\x03com\x00";
        e.name[..wire.len()].copy_from_slice(wire);
        e.name_len = u16::try_from(wire.len()).expect("len");
        e.naddrs = 10;
        for (i, a) in e.addrs.iter_mut().enumerate() {
            a[15] = u8::try_from(i + 1).expect("small");
        }
        e.ttl = 30;
        e.patterns = 0b101;
        let Ok(Event::DnsPolicy(r)) = decode(&e.to_bytes()) else {
            panic!("decodes");
        };
        assert_eq!(r.name, "www.example.com", "lowercase, dotted");
        assert_eq!(
            (r.what, r.qtype.as_str(), r.proto),
            ("answer", "AAAA", "udp")
        );
        assert_eq!(r.server, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)));
        assert_eq!(r.addresses.len(), 8, "the first eight carried");
        assert_eq!(r.address_count, 10, "of ten");
        assert_eq!(r.pattern_bits, 0b101);
        assert_eq!(r.actor.comm, "curl");
        let json: serde_json::Value =
            serde_json::from_str(&Event::DnsPolicy(r).to_json()).expect("json");
        assert_eq!(json["kind"], "dns_policy");
        assert_eq!(json["ttl"], 30);
        // A hostile name length never reads past the buffer.
        e.name_len = u16::MAX;
        e.name = [63; ironclad_core::abi::DNS_NAME_BYTES];
        e.what = DNS_EV_FEED_QUERY;
        let Ok(Event::DnsPolicy(r)) = decode(&e.to_bytes()) else {
            panic!("decodes");
        };
        assert_eq!(r.what, "feed_query");
        assert!(r.name.len() <= 255, "{}", r.name.len());
        e.what = 9;
        assert!(
            decode(&e.to_bytes()).is_err(),
            "an unknown `what` is refused"
        );
    }
}
