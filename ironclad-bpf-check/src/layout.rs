//! Compile-time proof that the Rust mirrors in `ironclad_core::abi` match the C ABI
//! header: every size, field offset and constant is compared with the types
//! libbpf-cargo generated from the BTF of the compiled objects. A drift fails the build.

use core::mem::{offset_of, size_of};

use ironclad_core::abi;

use crate::skel::shield_skel::types as c;

macro_rules! same_layout {
    ($rust:ty, $c:ty, [$($field:ident),* $(,)?]) => {
        const _: () = {
            assert!(size_of::<$rust>() == size_of::<$c>(), concat!("size of ", stringify!($rust)));
            $(assert!(
                offset_of!($rust, $field) == offset_of!($c, $field),
                concat!("offset of ", stringify!($rust), ".", stringify!($field))
            );)*
        };
    };
}

same_layout!(abi::LpmV4Key, c::ic_lpm_v4_key, [prefixlen, addr]);
same_layout!(abi::LpmV6Key, c::ic_lpm_v6_key, [prefixlen, addr]);
same_layout!(abi::Rule, c::ic_rule, [rule_id, action, _pad0]);
same_layout!(abi::Counter, c::ic_counter, [packets, bytes]);
same_layout!(
    abi::TotalValue,
    c::ic_total,
    [packets, bytes, countdown, _pad0]
);
same_layout!(abi::V4Block, c::ic_v4_block, [entry, span_base]);
same_layout!(abi::V4Span, c::ic_v4_span, [lo, hi, inner, outer]);
same_layout!(
    abi::BookRun,
    c::ic_book_run,
    [count, rule_id, prefixlen, action]
);
const _: () = assert!(
    size_of::<c::ic_book_page>() == abi::BOOK_PAGE_BYTES,
    "size of ic_book_page"
);
same_layout!(abi::V6Node, c::ic_v6_node, [bits, base]);
same_layout!(
    abi::RuleInfo,
    c::ic_rule_info,
    [
        prefixes_v4,
        prefixes_v6,
        kind,
        action,
        prefixlen,
        family,
        addr,
        name
    ]
);
same_layout!(
    abi::ShieldConfig,
    c::ic_shield_config,
    [flags, sample_rate, rate_pps, rate_burst, events_per_sec]
);
same_layout!(
    abi::EventHeader,
    c::ic_event_header,
    [version, kind, size, ktime_ns]
);
same_layout!(
    abi::ShieldEvent,
    c::ic_shield_event,
    [hdr, src, dst, rule_id, ifindex, pkt_len, sport, dport, family, proto, verdict, _pad0]
);

mod tls {
    use super::*;
    use crate::skel::tls_skel::types as t;

    same_layout!(abi::TlsConfig, t::ic_tls_config, [max_bytes, bytes_per_sec]);
    same_layout!(abi::ExeId, t::ic_exe_id, [dev, _pad0, ino]);
    same_layout!(
        abi::EventHeader,
        t::ic_event_header,
        [version, kind, size, ktime_ns]
    );

    // The fixed part of the TLS record, then the data at DATA_OFFSET.
    macro_rules! same_offsets {
        ($rust:ty, $c:ty, [$($field:ident),* $(,)?]) => {
            const _: () = {
                $(assert!(
                    offset_of!($rust, $field) == offset_of!($c, $field),
                    concat!("offset of ", stringify!($rust), ".", stringify!($field))
                );)*
            };
        };
    }
    same_offsets!(
        abi::TlsEvent,
        t::ic_tls_event,
        [
            hdr, ssl, call_id, cgroup_id, pid, tid, uid, total_len, offset, len, direction, flags,
            _pad0, comm, exe, sock
        ]
    );
    same_layout!(
        abi::TlsSock,
        t::ic_tls_sock,
        [family, _pad0, lport, rport, _pad1, laddr, raddr]
    );
    const _: () = {
        assert!(abi::TlsEvent::DATA_OFFSET == offset_of!(t::ic_tls_event, data));
        assert!(abi::TlsEvent::RECORD_SIZE == size_of::<t::ic_tls_event>());
        assert!(abi::TLS_CHUNK as u32 == t::ic_tls_limits::IC_TLS_CHUNK.0);
        assert!(abi::TLS_MAX_CHUNKS == t::ic_tls_limits::IC_TLS_MAX_CHUNKS.0);
        assert!(abi::TLS_SMALL_CHUNK as u32 == t::ic_tls_limits::IC_TLS_SMALL_CHUNK.0);
        assert!(abi::TLS_SCOPE_ENTRIES == t::ic_tls_limits::IC_TLS_SCOPE_ENTRIES.0);
        assert!(abi::TLS_PROCESSES == t::ic_tls_limits::IC_TLS_PROCESSES.0);
        assert!(abi::TLS_SOCKS == t::ic_tls_limits::IC_TLS_SOCKS.0);
        assert!(abi::TLS_WRITE as u32 == t::ic_tls_direction::IC_TLS_WRITE.0);
        assert!(abi::TLS_READ as u32 == t::ic_tls_direction::IC_TLS_READ.0);
        assert!(abi::TLS_F_TRUNCATED as u32 == t::ic_tls_flags::IC_TLS_F_TRUNCATED.0);
        assert!(abi::TLS_F_LAST as u32 == t::ic_tls_flags::IC_TLS_F_LAST.0);
        assert!(abi::EventKind::Tls as u32 == t::ic_event_kind::IC_EVENT_TLS.0);
    };
}

mod telemetry {
    use super::*;
    use crate::skel::telemetry_skel::types as t;

    same_layout!(
        abi::Bandwidth,
        t::ic_bandwidth,
        [tx_bytes, tx_packets, tx_payload, rx_bytes, rx_packets, rx_payload, exe, comm]
    );
    same_layout!(
        abi::TelemetryConfig,
        t::ic_telemetry_config,
        [dns, bandwidth]
    );
    same_layout!(abi::SockOwner, t::ic_sock_owner, [tgid, uid, comm]);
    const _: () = {
        assert!(offset_of!(abi::DnsEvent, hdr) == offset_of!(t::ic_dns_event, hdr));
        assert!(offset_of!(abi::DnsEvent, pid) == offset_of!(t::ic_dns_event, pid));
        assert!(offset_of!(abi::DnsEvent, uid) == offset_of!(t::ic_dns_event, uid));
        assert!(offset_of!(abi::DnsEvent, exe) == offset_of!(t::ic_dns_event, exe));
        assert!(offset_of!(abi::DnsEvent, comm) == offset_of!(t::ic_dns_event, comm));
        assert!(offset_of!(abi::DnsEvent, src) == offset_of!(t::ic_dns_event, src));
        assert!(offset_of!(abi::DnsEvent, dst) == offset_of!(t::ic_dns_event, dst));
        assert!(offset_of!(abi::DnsEvent, sport) == offset_of!(t::ic_dns_event, sport));
        assert!(offset_of!(abi::DnsEvent, dport) == offset_of!(t::ic_dns_event, dport));
        assert!(offset_of!(abi::DnsEvent, proto) == offset_of!(t::ic_dns_event, proto));
        assert!(offset_of!(abi::DnsEvent, direction) == offset_of!(t::ic_dns_event, direction));
        assert!(offset_of!(abi::DnsEvent, len) == offset_of!(t::ic_dns_event, len));
        assert!(offset_of!(abi::DnsEvent, total) == offset_of!(t::ic_dns_event, total));
        assert!(abi::DnsEvent::DATA_OFFSET == offset_of!(t::ic_dns_event, data));
        assert!(abi::DnsEvent::RECORD_SIZE == size_of::<t::ic_dns_event>());
        assert!(abi::DNS_CAPTURE as u32 == t::ic_telemetry_limits::IC_DNS_CAPTURE.0);
        assert!(abi::TELEMETRY_SOCKETS == t::ic_telemetry_limits::IC_SOCKETS.0);
        assert!(abi::DIR_OUT as u32 == t::ic_telemetry_dir::IC_DIR_OUT.0);
        assert!(abi::DIR_IN as u32 == t::ic_telemetry_dir::IC_DIR_IN.0);
        assert!(abi::EventKind::Dns as u32 == t::ic_event_kind::IC_EVENT_DNS.0);
    };
}

mod egress {
    use super::*;
    use crate::skel::egress_skel::types as e;

    same_layout!(
        abi::ProcExe,
        e::ic_proc_exe,
        [dev, mtime_nsec, ino, mtime_sec]
    );
    same_layout!(
        abi::ProcInfo,
        e::ic_proc_info,
        [exe, ppid, uid, gid, _pad0, cgroup_id, comm, start, pstart]
    );
    const _: () = assert!(abi::ProcInfo::SIZE == size_of::<e::ic_proc_info>());
    same_layout!(abi::EgressKey, e::ic_egress_key, [kind, _pad0, value]);
    same_layout!(abi::EgressBucket, e::ic_egress_bucket, [id, rules]);
    same_layout!(
        abi::EgressDstKey,
        e::ic_egress_dst_key,
        [generation, prefixlen, _pad0, addr]
    );
    same_layout!(
        abi::EgressDstOwner,
        e::ic_egress_dst_owner,
        [kind, _pad0, id, classes, value, summaries]
    );
    same_layout!(
        abi::EgressDstLengths,
        e::ic_egress_dst_lengths,
        [count, prefixlen]
    );
    same_layout!(
        abi::EgressConfig,
        e::ic_egress_config,
        [
            generation,
            default_action,
            kinds,
            needs,
            flags,
            rate_per_sec,
            rate_burst
        ]
    );
    same_layout!(
        abi::EgressEvent,
        e::ic_egress_event,
        [
            hdr, cgroup_id, pid, tid, uid, rule_id, exe, dst, dport, proto, verdict, hook, feed,
            note, _pad0, comm
        ]
    );
    same_layout!(
        abi::DnsConfig,
        e::ic_dns_config,
        [key, flags, grace_sec, max_ttl_sec, block_feeds]
    );
    same_layout!(
        abi::DnsName,
        e::ic_dns_name,
        [exact, wild, feed_exact, feed_wild, _pad0]
    );
    same_layout!(abi::DnsRule, e::ic_dns_rule, [slot, _pad0, patterns]);
    same_layout!(
        abi::DnsLabel,
        e::ic_dns_label,
        [used, wildcard, len, _pad0, text]
    );
    same_layout!(abi::DnsAddrKey, e::ic_dns_addr_key, [exe, addr, uid, _pad0]);
    same_layout!(abi::DnsOwner, e::ic_dns_owner, [exe, uid, kind]);
    same_layout!(abi::DnsAddr, e::ic_dns_addr, [patterns, expires]);
    same_layout!(abi::DnsDenial, e::ic_dns_denial, [expires, feed, _pad0]);
    same_layout!(
        abi::DnsPending,
        e::ic_dns_pending,
        [qhash, patterns, server, txid, port, qtype, _pad0]
    );
    same_layout!(
        abi::DnsSock,
        e::ic_dns_sock,
        [exe, tgid, uid, comm, next, ppid, pstart, cgroup, known, _pad0, pending]
    );
    same_layout!(
        abi::DnsPolicyEvent,
        e::ic_dns_policy_event,
        [
            hdr, pid, uid, exe, comm, server, patterns, ttl, port, qtype, what, feed, blocked,
            proto, naddrs, name_len, refused, _pad0, addrs, name
        ]
    );
    const _: () = {
        assert!(abi::EventKind::DnsPolicy as u32 == e::ic_event_kind::IC_EVENT_DNS_POLICY.0);
        assert!(abi::egress_match::DOMAIN as u32 == e::ic_egress_match::IC_M_DOMAIN.0);
        assert!(
            abi::EGRESS_NOTE_ENCRYPTED_DNS as u32
                == e::ic_egress_note::IC_EGRESS_NOTE_ENCRYPTED_DNS.0
        );
        assert!(abi::DNS_ENCRYPTED as u32 == e::ic_dns_limits::IC_DNS_ENCRYPTED.0);
        assert!(abi::DnsTotal::Encrypted as u32 == e::ic_dns_total::IC_DTOTAL_ENCRYPTED.0);
        assert!(abi::EGRESS_F_DOMAINS as u32 == e::ic_egress_config_flags::IC_EGRESS_F_DOMAINS.0);
        assert!(abi::DNS_PATTERNS as u32 == e::ic_dns_limits::IC_DNS_PATTERNS.0);
        assert!(abi::DNS_RULES as u32 == e::ic_dns_limits::IC_DNS_RULES.0);
        assert!(abi::DNS_FEEDS as u32 == e::ic_dns_limits::IC_DNS_FEEDS.0);
        assert!(abi::DNS_NAMES == e::ic_dns_limits::IC_DNS_NAMES.0);
        assert!(abi::DNS_ADDRS == e::ic_dns_limits::IC_DNS_ADDRS.0);
        assert!(abi::DNS_DENIED == e::ic_dns_limits::IC_DNS_DENIED.0);
        assert!(abi::DNS_PER_SCOPE == e::ic_dns_limits::IC_DNS_PER_SCOPE.0);
        assert!(abi::DNS_PER_UID == e::ic_dns_limits::IC_DNS_PER_UID.0);
        assert!(abi::DNS_OWNERS == e::ic_dns_limits::IC_DNS_OWNERS.0);
        assert!(abi::DNS_OWNER_SCOPE == e::ic_dns_owner_kind::IC_DNS_OWNER_SCOPE.0);
        assert!(abi::DNS_OWNER_UID == e::ic_dns_owner_kind::IC_DNS_OWNER_UID.0);
        assert!(abi::DnsTotal::TableFull as u32 == e::ic_dns_total::IC_DTOTAL_TABLE_FULL.0);
        assert!(abi::DnsTotal::OwnerFull as u32 == e::ic_dns_total::IC_DTOTAL_OWNER_FULL.0);
        assert!(abi::DnsTotal::OutOfScope as u32 == e::ic_dns_total::IC_DTOTAL_OUT_OF_SCOPE.0);
        assert!(abi::DNS_LABELS as u32 == e::ic_dns_limits::IC_DNS_LABELS.0);
        assert!(abi::DNS_PENDING as u32 == e::ic_dns_limits::IC_DNS_PENDING.0);
        assert!(abi::DNS_ANSWERS as u32 == e::ic_dns_limits::IC_DNS_ANSWERS.0);
        assert!(abi::DNS_EVENT_ADDRS as u32 == e::ic_dns_limits::IC_DNS_EVENT_ADDRS.0);
        assert!(abi::DNS_NAME_BYTES as u32 == e::ic_dns_limits::IC_DNS_NAME_BYTES.0);
        assert!(abi::DNS_MSG_BYTES as u32 == e::ic_dns_limits::IC_DNS_MSG_BYTES.0);
        assert!(abi::DNS_F_ACTIVE == e::ic_dns_flags::IC_DNS_F_ACTIVE.0);
        assert!(abi::DnsTotal::COUNT == e::ic_dns_total::IC_DTOTAL_COUNT.0);
        assert!(abi::DnsTotal::Untracked as u32 == e::ic_dns_total::IC_DTOTAL_UNTRACKED.0);
        assert!(abi::DnsTotal::EventsLost as u32 == e::ic_dns_total::IC_DTOTAL_EVENTS_LOST.0);
        assert!(abi::DNS_FEED_COUNTERS == e::ic_dns_feed_counter::IC_DNS_FEED_COUNTERS.0);
        assert!(
            abi::DnsFeedCounter::Connects as u32 == e::ic_dns_feed_counter::IC_DFEED_CONNECTS.0
        );
        assert!(abi::DNS_EV_ANSWER as u32 == e::ic_dns_policy_what::IC_DNS_EV_ANSWER.0);
        assert!(abi::DNS_EV_FEED_QUERY as u32 == e::ic_dns_policy_what::IC_DNS_EV_FEED_QUERY.0);
        assert!(abi::DNS_EV_FEED_ANSWER as u32 == e::ic_dns_policy_what::IC_DNS_EV_FEED_ANSWER.0);
    };
    const _: () = {
        assert!(size_of::<abi::EgressRule>() == size_of::<e::ic_egress_rule>());
        assert!(offset_of!(abi::EgressRule, rule_id) == offset_of!(e::ic_egress_rule, rule_id));
        assert!(offset_of!(abi::EgressRule, match_) == offset_of!(e::ic_egress_rule, r#match));
        assert!(offset_of!(abi::EgressRule, action) == offset_of!(e::ic_egress_rule, action));
        assert!(offset_of!(abi::EgressRule, dst) == offset_of!(e::ic_egress_rule, dst));
        assert!(offset_of!(abi::EgressRule, prefixlen) == offset_of!(e::ic_egress_rule, prefixlen));
        assert!(offset_of!(abi::EgressRule, port_lo) == offset_of!(e::ic_egress_rule, port_lo));
        assert!(offset_of!(abi::EgressRule, port_hi) == offset_of!(e::ic_egress_rule, port_hi));
        assert!(offset_of!(abi::EgressRule, uid) == offset_of!(e::ic_egress_rule, uid));
        assert!(offset_of!(abi::EgressRule, cgroup_id) == offset_of!(e::ic_egress_rule, cgroup_id));
        assert!(offset_of!(abi::EgressRule, exe) == offset_of!(e::ic_egress_rule, exe));
        assert!(offset_of!(abi::EgressRule, comm) == offset_of!(e::ic_egress_rule, comm));
        assert!(offset_of!(abi::EgressRule, ancestor) == offset_of!(e::ic_egress_rule, ancestor));
        assert!(
            offset_of!(abi::EgressRule, ancestor_depth)
                == offset_of!(e::ic_egress_rule, ancestor_depth)
        );
        assert!(abi::EgressRule::SIZE == size_of::<e::ic_egress_rule>());
        assert!(abi::EGRESS_MAX_ANCESTORS as u32 == e::ic_egress_limits::IC_EGRESS_MAX_ANCESTORS.0);
        assert!(abi::egress_match::ANCESTOR as u32 == e::ic_egress_match::IC_M_ANCESTOR.0);
        assert!(abi::EGRESS_MAX_RULES == e::ic_egress_limits::IC_EGRESS_MAX_RULES.0);
        assert!(abi::EGRESS_CLASSES == e::ic_egress_limits::IC_EGRESS_CLASSES.0);
        assert!(abi::EGRESS_PROTOS == e::ic_egress_limits::IC_EGRESS_PROTOS.0);
        assert!(abi::EGRESS_BUCKETS == e::ic_egress_limits::IC_EGRESS_BUCKETS.0);
        assert!(abi::EGRESS_IDENTITIES == e::ic_egress_limits::IC_EGRESS_IDENTITIES.0);
        assert!(abi::egress_match::EXE as u32 == e::ic_egress_match::IC_M_EXE.0);
        assert!(abi::egress_match::COMM as u32 == e::ic_egress_match::IC_M_COMM.0);
        assert!(abi::egress_match::UID as u32 == e::ic_egress_match::IC_M_UID.0);
        assert!(abi::egress_match::CGROUP as u32 == e::ic_egress_match::IC_M_CGROUP.0);
        assert!(abi::egress_match::DST as u32 == e::ic_egress_match::IC_M_DST.0);
        assert!(abi::egress_match::PORTS as u32 == e::ic_egress_match::IC_M_PORTS.0);
        assert!(abi::egress_match::PROTO as u32 == e::ic_egress_match::IC_M_PROTO.0);
        assert!(abi::EgressAction::Allow as u32 == e::ic_egress_action::IC_EGRESS_ALLOW.0);
        assert!(abi::EgressAction::Deny as u32 == e::ic_egress_action::IC_EGRESS_DENY.0);
        assert!(abi::EgressAction::Log as u32 == e::ic_egress_action::IC_EGRESS_LOG.0);
        assert!(
            abi::EgressAction::RateLimited as u32 == e::ic_egress_action::IC_EGRESS_RATE_LIMITED.0
        );
        assert!(abi::EgressKeyKind::Any as u32 == e::ic_egress_key_kind::IC_KEY_ANY.0);
        assert!(abi::EgressKeyKind::Exe as u32 == e::ic_egress_key_kind::IC_KEY_EXE.0);
        assert!(abi::EgressKeyKind::Comm as u32 == e::ic_egress_key_kind::IC_KEY_COMM.0);
        assert!(abi::EgressKeyKind::Uid as u32 == e::ic_egress_key_kind::IC_KEY_UID.0);
        assert!(abi::EgressKeyKind::Cgroup as u32 == e::ic_egress_key_kind::IC_KEY_CGROUP.0);
        assert!(abi::EgressTotal::COUNT == e::ic_egress_total::IC_ETOTAL_COUNT.0);
        assert!(abi::EgressTotal::EventsLost as u32 == e::ic_egress_total::IC_ETOTAL_EVENTS_LOST.0);
        assert!(abi::EventKind::Egress as u32 == e::ic_event_kind::IC_EVENT_EGRESS.0);
        assert!(
            abi::EGRESS_F_DST_FILTER as u32 == e::ic_egress_config_flags::IC_EGRESS_F_DST_FILTER.0
        );
        assert!(
            abi::EGRESS_OWNERS_SEVERAL as u32 == e::ic_egress_owner::IC_EGRESS_OWNERS_SEVERAL.0
        );
        assert!(abi::EGRESS_NO_CLASS == e::ic_egress_owner::IC_EGRESS_NO_CLASS.0);
        assert!(abi::EGRESS_F_DST_HASH as u32 == e::ic_egress_config_flags::IC_EGRESS_F_DST_HASH.0);
        assert!(
            abi::EGRESS_DST_HASH_LENGTHS as u32
                == e::ic_egress_dst_limits::IC_EGRESS_DST_HASH_LENGTHS.0
        );
    };
}

const _: () = {
    assert!(abi::ABI_VERSION == c::ic_abi::IC_ABI_VERSION.0);
    assert!(abi::Action::None as u32 == c::ic_action::IC_ACTION_NONE.0);
    assert!(abi::Action::Deny as u32 == c::ic_action::IC_ACTION_DENY.0);
    assert!(abi::Action::Allow as u32 == c::ic_action::IC_ACTION_ALLOW.0);
    assert!(abi::ShieldTotal::Passed as u32 == c::ic_shield_total::IC_TOTAL_PASSED.0);
    assert!(abi::ShieldTotal::Dropped as u32 == c::ic_shield_total::IC_TOTAL_DROPPED.0);
    assert!(abi::ShieldTotal::Malformed as u32 == c::ic_shield_total::IC_TOTAL_MALFORMED.0);
    assert!(abi::ShieldTotal::Valve as u32 == c::ic_shield_total::IC_TOTAL_VALVE.0);
    assert!(abi::ShieldTotal::NonIp as u32 == c::ic_shield_total::IC_TOTAL_NON_IP.0);
    assert!(abi::ShieldTotal::WouldDrop as u32 == c::ic_shield_total::IC_TOTAL_WOULD_DROP.0);
    assert!(abi::ShieldTotal::RateLimited as u32 == c::ic_shield_total::IC_TOTAL_RATE_LIMITED.0);
    assert!(abi::ShieldTotal::EventsLost as u32 == c::ic_shield_total::IC_TOTAL_EVENTS_LOST.0);
    assert!(
        abi::ShieldTotal::EventsOverBudget as u32
            == c::ic_shield_total::IC_TOTAL_EVENTS_OVER_BUDGET.0
    );
    assert!(abi::EventKind::Shield as u32 == c::ic_event_kind::IC_EVENT_SHIELD.0);
    assert!(abi::ShieldVerdict::Drop as u32 == c::ic_shield_verdict::IC_VERDICT_DROP.0);
    assert!(abi::ShieldVerdict::WouldDrop as u32 == c::ic_shield_verdict::IC_VERDICT_WOULD_DROP.0);
    assert!(
        abi::ShieldVerdict::RateLimited as u32 == c::ic_shield_verdict::IC_VERDICT_RATE_LIMITED.0
    );
    assert!(
        abi::ShieldVerdict::WouldRateLimit as u32
            == c::ic_shield_verdict::IC_VERDICT_WOULD_RATE_LIMIT.0
    );
    assert!(abi::SHIELD_RING_BYTES == c::ic_shield_ring::IC_SHIELD_RING_BYTES.0);
    assert!(abi::SHIELD_RATE_SOURCES == c::ic_shield_ring::IC_SHIELD_RATE_SOURCES.0);
    assert!(abi::ShieldTotal::COUNT == c::ic_shield_total::IC_TOTAL_COUNT.0);
    assert!(abi::SHIELD_F_DRY_RUN == c::ic_shield_flags::IC_SHIELD_F_DRY_RUN.0);
    assert!(abi::SHIELD_MAX_RULES == c::ic_shield_limits::IC_SHIELD_MAX_RULES.0);
    assert!(abi::SHIELD_MAX_V4_PREFIXES == c::ic_shield_limits::IC_SHIELD_MAX_V4_PREFIXES.0);
    assert!(abi::SHIELD_MAX_V6_PREFIXES == c::ic_shield_limits::IC_SHIELD_MAX_V6_PREFIXES.0);
    assert!(abi::SHIELD_MAX_VALVE_PREFIXES == c::ic_shield_limits::IC_SHIELD_MAX_VALVE_PREFIXES.0);
    assert!(abi::SHIELD_V4_FIRST_BLOCKS == c::ic_shield_limits::IC_SHIELD_V4_FIRST_BLOCKS.0);
    assert!(abi::SHIELD_V4_GROUPS == c::ic_shield_limits::IC_SHIELD_V4_GROUPS.0);
    assert!(abi::SHIELD_V4_BLOCKS == c::ic_shield_limits::IC_SHIELD_V4_BLOCKS.0);
    assert!(abi::SHIELD_V4_SPANS == c::ic_shield_limits::IC_SHIELD_V4_SPANS.0);
    assert!(abi::SHIELD_SLOTS == c::ic_shield_limits::IC_SHIELD_SLOTS.0);
    assert!(abi::SHIELD_V6_RECORDS == c::ic_shield_limits::IC_SHIELD_V6_RECORDS.0);
    assert!(abi::SHIELD_V6_TOP_RECORDS == c::ic_shield_limits::IC_SHIELD_V6_TOP_RECORDS.0);
    assert!(abi::ACTIVE_V6_FAST == c::ic_shield_active_bits::IC_ACTIVE_V6_FAST.0);
    assert!(abi::V6_NODE == c::ic_v6_fast::IC_V6_NODE.0);
    assert!(abi::V6_LONE == c::ic_v6_fast::IC_V6_LONE.0);
    assert!(abi::V6_INDEX_MASK == c::ic_v6_fast::IC_V6_INDEX_MASK.0);
    assert!(abi::V6_LEN_MASK == c::ic_v6_fast::IC_V6_LEN_MASK.0);
    assert!(abi::V6_TOP_BITS == c::ic_v6_fast::IC_V6_TOP_BITS.0);
    assert!(abi::V6_STRIDE == c::ic_v6_fast::IC_V6_STRIDE.0);
    assert!(abi::V6_LEVELS == c::ic_v6_fast::IC_V6_LEVELS.0);
    assert!(abi::V6_LEAVES_PER_RECORD == c::ic_v6_fast::IC_V6_LEAVES_PER_RECORD.0);
    assert!(abi::V6_GLOBAL_BITS == c::ic_v6_fast::IC_V6_GLOBAL_BITS.0);
    assert!(abi::V6_GLOBAL_TOPS == c::ic_v6_fast::IC_V6_GLOBAL_TOPS.0);
    assert!(abi::V6_TOPS_PER_RECORD == c::ic_v6_fast::IC_V6_TOPS_PER_RECORD.0);
    assert!(abi::V6_GLOBAL_TOPS == 1 << (abi::V6_GLOBAL_BITS - 3));
    assert!(
        abi::SHIELD_V6_TOP_RECORDS * abi::V6_TOPS_PER_RECORD
            == abi::V6_GLOBAL_TOPS + (1 << abi::V6_TOP_BITS)
    );
    assert!((abi::V6_GLOBAL_BITS - abi::V6_TOP_BITS).is_multiple_of(abi::V6_STRIDE));
    assert!(abi::SHIELD_V6_RECORDS <= abi::V6_INDEX_MASK);
    assert!(abi::BOOK_PAGE_BYTES as u32 == c::ic_book::IC_BOOK_PAGE_BYTES.0);
    assert!(abi::BOOK_REMOVED as u32 == c::ic_book::IC_BOOK_REMOVED.0);
    assert!(abi::FAST_RULE_MASK as u32 == c::ic_fast_entry::IC_FAST_RULE_MASK.0);
    assert!(abi::FAST_ALLOW as u32 == c::ic_fast_entry::IC_FAST_ALLOW.0);
    assert!(abi::FAST_VALVE as u32 == c::ic_fast_entry::IC_FAST_VALVE.0);
    assert!(abi::FAST_GROUP as u32 == c::ic_fast_entry::IC_FAST_GROUP.0);
    assert!(abi::FAST_GROUP_MASK as u32 == c::ic_fast_entry::IC_FAST_GROUP_MASK.0);
    assert!(abi::FAST_SPAN as u32 == c::ic_fast_entry::IC_FAST_SPAN.0);
    assert!(abi::FAST_SPAN_BASE as u32 == c::ic_fast_entry::IC_FAST_SPAN_BASE.0);
    assert!(abi::FAST_SPAN_MASK as u32 == c::ic_fast_entry::IC_FAST_SPAN_MASK.0);
    assert!(abi::SHIELD_V4_GROUPS <= abi::FAST_GROUP_MASK as u32 + 1);
    assert!(abi::ACTIVE_SLOT == c::ic_shield_active_bits::IC_ACTIVE_SLOT.0);
    assert!(abi::ACTIVE_V4_TRIE == c::ic_shield_active_bits::IC_ACTIVE_V4_TRIE.0);
    assert!(abi::ACTIVE_RATE_LIMIT == c::ic_shield_active_bits::IC_ACTIVE_RATE_LIMIT.0);
    assert!(abi::ACTIVE_V6_FAST == c::ic_shield_active_bits::IC_ACTIVE_V6_FAST.0);
    assert!(abi::ACTIVE_DRY_RUN == c::ic_shield_active_bits::IC_ACTIVE_DRY_RUN.0);
    assert!(abi::ACTIVE_SAMPLE_SHIFT == c::ic_shield_active_bits::IC_ACTIVE_SAMPLE_SHIFT.0);
    assert!(abi::ACTIVE_SAMPLE_MAX == c::ic_shield_active_bits::IC_ACTIVE_SAMPLE_MAX.0);
    assert!(abi::ACTIVE_SAMPLE_MAX == u32::MAX >> abi::ACTIVE_SAMPLE_SHIFT);
    assert!(
        abi::ACTIVE_FROM_CONFIG & (abi::ACTIVE_SLOT | abi::ACTIVE_V4_TRIE | abi::ACTIVE_V6_FAST)
            == 0
    );
    assert!(abi::RULE_FREE as u32 == c::ic_rule_kind::IC_RULE_FREE.0);
    assert!(abi::RULE_CIDR as u32 == c::ic_rule_kind::IC_RULE_CIDR.0);
    assert!(abi::RULE_SET as u32 == c::ic_rule_kind::IC_RULE_SET.0);
    assert!(abi::SHIELD_MAX_RULES - 1 <= abi::FAST_RULE_MASK as u32);
};

mod sentinel {
    use super::*;
    use crate::skel::sentinel_skel::types as s;

    same_layout!(abi::InodeKey, s::ic_inode_key, [ino, dev, _pad0]);
    same_layout!(abi::SentinelNode, s::ic_sentinel_node, [flags, _pad0]);
    same_layout!(abi::BpfObjectKey, s::ic_bpf_object_key, [kind, id]);
    same_layout!(abi::SentinelConfig, s::ic_sentinel_config, [flags, _pad0]);
    same_layout!(
        abi::SentinelState,
        s::ic_sentinel_state,
        [agent_tgid, registered_ns]
    );
    same_layout!(abi::AgentMark, s::ic_agent_mark, [exe]);
    same_layout!(abi::ExeId, s::ic_exe_id, [dev, _pad0, ino]);
    same_layout!(
        abi::SentinelEvent,
        s::ic_sentinel_event,
        [
            hdr, pid, tid, uid, target_pid, op, verdict, _pad0, arg, exe, target, parent, comm,
            name
        ]
    );

    const _: () = {
        assert!(abi::EventKind::Sentinel as u32 == s::ic_event_kind::IC_EVENT_SENTINEL.0);
        assert!(abi::SEN_PROTECT == s::ic_sentinel_node_flags::IC_SEN_PROTECT.0);
        assert!(abi::SEN_MONITOR == s::ic_sentinel_node_flags::IC_SEN_MONITOR.0);
        assert!(abi::SEN_TREE == s::ic_sentinel_node_flags::IC_SEN_TREE.0);
        assert!(abi::SEN_ANCESTOR == s::ic_sentinel_node_flags::IC_SEN_ANCESTOR.0);
        assert!(abi::SEN_AGENT == s::ic_sentinel_node_flags::IC_SEN_AGENT.0);
        assert!(abi::SEN_AGENT_DIR == s::ic_sentinel_node_flags::IC_SEN_AGENT_DIR.0);
        assert!(abi::SEN_MANAGER == s::ic_sentinel_node_flags::IC_SEN_MANAGER.0);
        assert!(abi::SEN_F_ENFORCE == s::ic_sentinel_flags::IC_SEN_F_ENFORCE.0);
        assert!(abi::SEN_NODES == s::ic_sentinel_limits::IC_SEN_NODES.0);
        assert!(abi::SEN_OBJECTS == s::ic_sentinel_limits::IC_SEN_OBJECTS.0);
        assert!(abi::SEN_DEPTH == s::ic_sentinel_limits::IC_SEN_DEPTH.0);
        assert!(abi::SEN_NAME as u32 == s::ic_sentinel_limits::IC_SEN_NAME.0);
        assert!(abi::SEN_RING_BYTES == s::ic_sentinel_limits::IC_SEN_RING_BYTES.0);
        assert!(abi::SEN_PRCTL_REGISTER as u32 == s::ic_sentinel_limits::IC_SEN_PRCTL_REGISTER.0);
        assert!(abi::BpfObjectKind::Map as u32 == s::ic_bpf_object_kind::IC_BPF_MAP.0);
        assert!(abi::BpfObjectKind::Prog as u32 == s::ic_bpf_object_kind::IC_BPF_PROG.0);
        assert!(abi::BpfObjectKind::Link as u32 == s::ic_bpf_object_kind::IC_BPF_LINK.0);
        assert!(abi::BpfObjectKind::Iface as u32 == s::ic_bpf_object_kind::IC_BPF_IFACE.0);
        assert!(abi::BpfObjectKind::Netns as u32 == s::ic_bpf_object_kind::IC_BPF_NETNS.0);
        assert!(abi::SentinelVerdict::Denied as u32 == s::ic_sentinel_verdict::IC_SEN_DENIED.0);
        assert!(abi::SentinelVerdict::Allowed as u32 == s::ic_sentinel_verdict::IC_SEN_ALLOWED.0);
        assert!(
            abi::SentinelVerdict::WouldDeny as u32 == s::ic_sentinel_verdict::IC_SEN_WOULD_DENY.0
        );
        assert!(
            abi::SentinelVerdict::Registered as u32 == s::ic_sentinel_verdict::IC_SEN_REGISTERED.0
        );
        assert!(abi::SentinelOp::OpenWrite as u32 == s::ic_sentinel_op::IC_SEN_OP_OPEN_WRITE.0);
        assert!(abi::SentinelOp::Register as u32 == s::ic_sentinel_op::IC_SEN_OP_REGISTER.0);
        assert!(abi::SentinelOp::Mount as u32 == s::ic_sentinel_op::IC_SEN_OP_MOUNT.0);
        assert!(abi::SentinelOp::Ptrace as u32 == s::ic_sentinel_op::IC_SEN_OP_PTRACE.0);
        assert!(abi::SentinelOp::Tc as u32 == s::ic_sentinel_op::IC_SEN_OP_TC.0);
    };
}

mod process {
    use super::*;
    use crate::skel::process_skel::types as p;

    same_layout!(
        abi::ProcessEvent,
        p::ic_process_event,
        [
            hdr, pid, ppid, uid, gid, cgroup_id, start_ns, exe, exit_code, op, flags, path_len,
            args_len, _pad0, comm, path, args
        ]
    );
    const _: () = {
        assert!(abi::PROC_PATH as u32 == p::ic_process_limits::IC_PROC_PATH.0);
        assert!(abi::PROC_ARGS as u32 == p::ic_process_limits::IC_PROC_ARGS.0);
        assert!(abi::PROC_RING_BYTES == p::ic_process_limits::IC_PROC_RING_BYTES.0);
        assert!(abi::ProcessOp::Exec as u32 == p::ic_process_op::IC_PROC_OP_EXEC.0);
        assert!(abi::ProcessOp::Fork as u32 == p::ic_process_op::IC_PROC_OP_FORK.0);
        assert!(abi::ProcessOp::Exit as u32 == p::ic_process_op::IC_PROC_OP_EXIT.0);
        assert!(
            abi::process_flags::PATH_TRUNCATED as u32
                == p::ic_process_flags::IC_PROC_F_PATH_TRUNCATED.0
        );
        assert!(
            abi::process_flags::ARGS_TRUNCATED as u32
                == p::ic_process_flags::IC_PROC_F_ARGS_TRUNCATED.0
        );
        assert!(abi::process_flags::SCRIPT as u32 == p::ic_process_flags::IC_PROC_F_SCRIPT.0);
        assert!(abi::process_stat::EVENTS == p::ic_process_stat::IC_PSTAT_EVENTS.0);
        assert!(abi::process_stat::LOST == p::ic_process_stat::IC_PSTAT_LOST.0);
        assert!(abi::EventKind::Process as u32 == p::ic_event_kind::IC_EVENT_PROCESS.0);
    };
}

mod quarantine {
    use super::*;
    use crate::skel::quarantine_skel::types as q;

    same_layout!(
        abi::QuarantineAction,
        q::ic_quarantine_action,
        [ifindex, vlan, kind, _pad0]
    );
    const _: () = {
        assert!(abi::QuarantineAction::SIZE == size_of::<q::ic_quarantine_action>());
        assert!(abi::QUARANTINE_VLAN as u32 == q::ic_quarantine_kind::IC_QUARANTINE_VLAN.0);
        assert!(abi::QUARANTINE_REDIRECT as u32 == q::ic_quarantine_kind::IC_QUARANTINE_REDIRECT.0);
        assert!(
            abi::QUARANTINE_REDIRECT_INGRESS as u32
                == q::ic_quarantine_kind::IC_QUARANTINE_REDIRECT_INGRESS.0
        );
        assert!(abi::QuarantineTotal::COUNT == q::ic_quarantine_total::IC_QUARANTINE_TOTAL_COUNT.0);
        assert!(
            abi::QuarantineTotal::Tagged as u32 == q::ic_quarantine_total::IC_QUARANTINE_TAGGED.0
        );
        assert!(
            abi::QuarantineTotal::Redirected as u32
                == q::ic_quarantine_total::IC_QUARANTINE_REDIRECTED.0
        );
        assert!(
            abi::QuarantineTotal::Failed as u32 == q::ic_quarantine_total::IC_QUARANTINE_FAILED.0
        );
        assert!(abi::QUARANTINE_PREFIXES == q::ic_quarantine_total::IC_QUARANTINE_PREFIXES.0);
    };
}

mod scrub {
    use super::*;
    use crate::skel::scrub_skel::types as s;

    same_layout!(
        abi::ScrubConfig,
        s::ic_scrub_config,
        [ttl_floor, hop_floor, mss_max, flags]
    );
    const _: () = {
        assert!(abi::ScrubConfig::SIZE == size_of::<s::ic_scrub_config>());
        assert!(abi::SCRUB_F_CLEAR_DF == s::ic_scrub_flags::IC_SCRUB_F_CLEAR_DF.0);
        assert!(abi::SCRUB_F_RANDOM_ID == s::ic_scrub_flags::IC_SCRUB_F_RANDOM_ID.0);
        assert!(abi::SCRUB_F_INGRESS == s::ic_scrub_flags::IC_SCRUB_F_INGRESS.0);
        assert!(abi::ScrubTotal::COUNT == s::ic_scrub_total::IC_SCRUB_TOTAL_COUNT.0);
        assert!(abi::ScrubTotal::Seen as u32 == s::ic_scrub_total::IC_SCRUB_SEEN.0);
        assert!(abi::ScrubTotal::Ttl as u32 == s::ic_scrub_total::IC_SCRUB_TTL.0);
        assert!(abi::ScrubTotal::Mss as u32 == s::ic_scrub_total::IC_SCRUB_MSS.0);
        assert!(abi::ScrubTotal::Df as u32 == s::ic_scrub_total::IC_SCRUB_DF.0);
        assert!(abi::ScrubTotal::Id as u32 == s::ic_scrub_total::IC_SCRUB_ID.0);
        assert!(abi::ScrubTotal::Failed as u32 == s::ic_scrub_total::IC_SCRUB_FAILED.0);
        assert!(abi::SCRUB_INTERFACES == s::ic_scrub_total::IC_SCRUB_INTERFACES.0);
    };
}

mod firewall {
    use super::*;
    use crate::skel::firewall_skel::types as f;

    same_layout!(
        abi::CtKey,
        f::ic_ct_key,
        [addr_lo, addr_hi, port_lo, port_hi, proto, _pad0]
    );
    same_layout!(
        abi::CtEntry,
        f::ic_ct_entry,
        [
            created_ns,
            last_seen_ns,
            packets_orig,
            bytes_orig,
            packets_reply,
            bytes_reply,
            cgroup_id,
            ifindex,
            rule_id,
            pid,
            state,
            flags,
            wscale,
            seq_end,
            max_win
        ]
    );
    same_layout!(
        abi::FwConfig,
        f::ic_fw_config,
        [
            flags,
            slot,
            tcp_timeout,
            udp_timeout,
            udp_stream_timeout,
            icmp_timeout
        ]
    );
    const _: () = {
        assert!(abi::CtKey::SIZE == size_of::<f::ic_ct_key>());
        assert!(abi::CtEntry::SIZE == size_of::<f::ic_ct_entry>());
        assert!(abi::FwConfig::SIZE == size_of::<f::ic_fw_config>());
        assert!(abi::FwAddrKey::SIZE == size_of::<f::ic_fw_addr_key>());
        assert!(abi::FwPortKey::SIZE == size_of::<f::ic_fw_port_key>());
        assert!(abi::FwWordKey::SIZE == size_of::<f::ic_fw_word_key>());
        assert!(abi::FwSummary::SIZE == size_of::<f::ic_fw_summary>());
        assert!(abi::FwRuleEntry::SIZE == size_of::<f::ic_fw_rule>());
        assert!(abi::FwDefaultLog::SIZE == size_of::<f::ic_fw_default_log>());
        assert!(abi::FW_SLOTS == f::ic_fw_limits::IC_FW_SLOTS.0);
        assert!(abi::FW_PROTOS == f::ic_fw_limits::IC_FW_PROTOS.0);
        assert!(abi::FW_BUCKETS == f::ic_fw_limits::IC_FW_BUCKETS.0);
        assert!(abi::FW_MAX_RULES == f::ic_fw_limits::IC_FW_MAX_RULES.0);
        assert!(abi::FW_SUMMARY_WORDS as u32 == f::ic_fw_limits::IC_FW_SUMMARY_WORDS.0);
        assert!(abi::FW_MAX_PREFIXES == f::ic_fw_limits::IC_FW_MAX_PREFIXES.0);
        assert!(abi::FW_MAX_PIECES == f::ic_fw_limits::IC_FW_MAX_PIECES.0);
        assert!(abi::FW_MAX_WORDS == f::ic_fw_limits::IC_FW_MAX_WORDS.0);
        assert!(abi::FW_NO_MASK == f::ic_fw_limits::IC_FW_NO_MASK.0);
        assert!(abi::FW_MAX_CLASSES == f::ic_fw_limits::IC_FW_MAX_CLASSES.0);
        assert!(abi::CtState::COUNT as u32 == f::ic_ct_state::IC_CT_STATE_COUNT.0);
        assert!(abi::CtState::Established as u32 == f::ic_ct_state::IC_CT_ESTABLISHED.0);
        assert!(abi::CtState::Closing as u32 == f::ic_ct_state::IC_CT_CLOSING.0);
        assert!(abi::FwTotal::COUNT == f::ic_fw_total::IC_FW_TOTAL_COUNT.0);
        assert!(abi::FwTotal::NonIp as u32 == f::ic_fw_total::IC_FW_NON_IP.0);
        assert!(abi::FwTotal::TableFull as u32 == f::ic_fw_total::IC_FW_TABLE_FULL.0);
        assert!(abi::FwTotal::Rejected as u32 == f::ic_fw_total::IC_FW_REJECTED.0);
        assert!(abi::FwTotal::RateLimited as u32 == f::ic_fw_total::IC_FW_RATE_LIMITED.0);
        assert!(abi::FwTotal::EventsLost as u32 == f::ic_fw_total::IC_FW_EVENTS_LOST.0);
        assert!(abi::FwTotal::SynCookies as u32 == f::ic_fw_total::IC_FW_SYN_COOKIES.0);
        assert!(abi::FwTotal::CookieAccepted as u32 == f::ic_fw_total::IC_FW_COOKIE_ACCEPTED.0);
        assert!(abi::FwTotal::CookieInvalid as u32 == f::ic_fw_total::IC_FW_COOKIE_INVALID.0);
        assert!(abi::SynConfig::SIZE == size_of::<f::ic_syn_config>());
        assert!(abi::FwTotal::LimitSource as u32 == f::ic_fw_total::IC_FW_LIMIT_SOURCE_DROPS.0);
        assert!(abi::FwTotal::LimitSubnet as u32 == f::ic_fw_total::IC_FW_LIMIT_SUBNET_DROPS.0);
        assert!(abi::FwTotal::LimitPort as u32 == f::ic_fw_total::IC_FW_LIMIT_PORT_DROPS.0);
        assert!(
            abi::FwTotal::LimitInterface as u32 == f::ic_fw_total::IC_FW_LIMIT_INTERFACE_DROPS.0
        );
        assert!(abi::FwTotal::NatTranslated as u32 == f::ic_fw_total::IC_FW_NAT_TRANSLATED.0);
        assert!(abi::FwTotal::NatNoPort as u32 == f::ic_fw_total::IC_FW_NAT_NO_PORT.0);
        assert!(abi::FwTotal::NatFailed as u32 == f::ic_fw_total::IC_FW_NAT_FAILED.0);
        assert!(abi::FwTotal::IdsSnippets as u32 == f::ic_fw_total::IC_FW_IDS_SNIPPETS.0);
        assert!(abi::FwTotal::IdsLost as u32 == f::ic_fw_total::IC_FW_IDS_LOST.0);
        assert!(abi::FwTotal::IdsBlocked as u32 == f::ic_fw_total::IC_FW_IDS_BLOCKED.0);
        assert!(
            abi::FwTotal::IdsKernelMatched as u32 == f::ic_fw_total::IC_FW_IDS_KERNEL_MATCHED.0
        );
        assert!(abi::IdsPrefixKey::SIZE == size_of::<f::ic_ids_prefix_key>());
        assert!(abi::IDS_PREFIX_MAX as u32 == f::ic_ids_limits::IC_IDS_PREFIX_MAX.0);
        assert!(abi::IDS_PREFIXES == f::ic_ids_limits::IC_IDS_PREFIXES.0);
        assert!(abi::NAT_MAX_RULES == f::ic_nat_sizes::IC_NAT_MAX_RULES.0);
        assert!(abi::NAT_ENTRIES == f::ic_nat_sizes::IC_NAT_ENTRIES.0);
        assert!(abi::NAT_PORT_TRIES == f::ic_nat_sizes::IC_NAT_PORT_TRIES.0);
        assert!(abi::NAT_PORT_FIRST == f::ic_nat_sizes::IC_NAT_PORT_FIRST.0);
        assert!(abi::NAT_PORT_COUNT == f::ic_nat_sizes::IC_NAT_PORT_COUNT.0);
        assert!(abi::NAT_REWRITE_SRC as u32 == f::ic_nat_rewrite::IC_NAT_REWRITE_SRC.0);
        assert!(abi::NAT_REWRITE_DST as u32 == f::ic_nat_rewrite::IC_NAT_REWRITE_DST.0);
        assert!(abi::NAT_DNAT as u32 == f::ic_nat_kind::IC_NAT_DNAT.0);
        assert!(abi::NAT_SNAT as u32 == f::ic_nat_kind::IC_NAT_SNAT.0);
        assert!(abi::NatDnatKey::SIZE == size_of::<f::ic_nat_dnat_key>());
        assert!(abi::NatTarget::SIZE == size_of::<f::ic_nat_target>());
        assert!(abi::NatSnatKey::SIZE == size_of::<f::ic_nat_snat_key>());
        assert!(abi::NatKey::SIZE == size_of::<f::ic_nat_key>());
        assert!(abi::NatValue::SIZE == size_of::<f::ic_nat_value>());
        assert!(abi::NatConfig::SIZE == size_of::<f::ic_nat_config>());
        assert!(abi::FwLimitKind::COUNT as u32 == f::ic_fw_limit_kind::IC_FW_LIMIT_KINDS.0);
        assert!(abi::FwLimitKind::Source as u32 == f::ic_fw_limit_kind::IC_FW_LIMIT_SOURCE.0);
        assert!(abi::FwLimitKind::Subnet as u32 == f::ic_fw_limit_kind::IC_FW_LIMIT_SUBNET.0);
        assert!(abi::FwLimitKind::Port as u32 == f::ic_fw_limit_kind::IC_FW_LIMIT_PORT.0);
        assert!(abi::FwLimitKind::Interface as u32 == f::ic_fw_limit_kind::IC_FW_LIMIT_INTERFACE.0);
        assert!(abi::FW_LIMIT_KEYS == f::ic_fw_limit_sizes::IC_FW_LIMIT_KEYS.0);
        assert!(abi::FW_LIMIT_F_DRY_RUN as u32 == f::ic_fw_limit_flags::IC_FW_LIMIT_F_DRY_RUN.0);
        assert!(abi::EventKind::FwLimit as u32 == f::ic_event_kind::IC_EVENT_FW_LIMIT.0);
        assert!(abi::FwLimitRate::SIZE == size_of::<f::ic_fw_limit_rate>());
        assert!(abi::FwLimitConfig::SIZE == size_of::<f::ic_fw_limit_config>());
        assert!(abi::FwLimitKey::SIZE == size_of::<f::ic_fw_limit_key>());
        assert!(abi::FwLimitBucket::SIZE == size_of::<f::ic_fw_limit_bucket>());
        assert!(abi::FwLimitEvent::SIZE == size_of::<f::ic_fw_limit_event>());
        assert!(abi::SynState::SIZE == size_of::<f::ic_syn_state>());
        assert!(abi::SYN_OFF == f::ic_syn_mode::IC_SYN_OFF.0);
        assert!(abi::SYN_ALWAYS == f::ic_syn_mode::IC_SYN_ALWAYS.0);
        assert!(abi::SYN_UNDER_ATTACK == f::ic_syn_mode::IC_SYN_UNDER_ATTACK.0);
        assert!(abi::SYN_PORT_WORDS == f::ic_syn_limits::IC_SYN_PORT_WORDS.0);
        assert!(abi::SYN_TS_WSCALE_NONE == f::ic_syn_limits::IC_SYN_TS_WSCALE_NONE.0);
        assert!(abi::SYN_TS_SACK == f::ic_syn_limits::IC_SYN_TS_SACK.0);
        assert!(abi::SYN_TS_BITS == f::ic_syn_limits::IC_SYN_TS_BITS.0);
        assert!(abi::FW_RULE_LOG as u32 == f::ic_fw_rule_flags::IC_FW_RULE_LOG.0);
        assert!(abi::FW_RULE_FLOWS as u32 == f::ic_fw_rule_flags::IC_FW_RULE_FLOWS.0);
        assert!(abi::FwFlowEvent::SIZE == size_of::<f::ic_fw_flow_event>());
        assert!(abi::EventKind::Flow as u32 == f::ic_event_kind::IC_EVENT_FLOW.0);
        assert!(abi::FW_FLOW_INBOUND as u32 == f::ic_fw_flow_flags::IC_FW_FLOW_INBOUND.0);
        assert!(abi::FW_FLOW_START as u32 == f::ic_fw_flow_phase::IC_FW_FLOW_START.0);
        assert!(abi::FW_FLOW_END as u32 == f::ic_fw_flow_phase::IC_FW_FLOW_END.0);
        assert!(abi::FW_END_TIMEOUT as u32 == f::ic_fw_flow_end::IC_FW_END_TIMEOUT.0);
        assert!(abi::FW_END_FIN as u32 == f::ic_fw_flow_end::IC_FW_END_FIN.0);
        assert!(abi::FW_END_RESET as u32 == f::ic_fw_flow_end::IC_FW_END_RESET.0);
        assert!(abi::CT_F_ORIG_LO as u32 == f::ic_ct_flags::IC_CT_F_ORIG_LO.0);
        assert!(abi::CT_F_INBOUND as u32 == f::ic_ct_flags::IC_CT_F_INBOUND.0);
        assert!(abi::CT_F_RECORD as u32 == f::ic_ct_flags::IC_CT_F_RECORD.0);
        assert!(abi::CT_F_RESET as u32 == f::ic_ct_flags::IC_CT_F_RESET.0);
        assert!(abi::CT_F_INSPECT as u32 == f::ic_ct_flags::IC_CT_F_INSPECT.0);
        assert!(abi::CT_F_WINDOW as u32 == f::ic_ct_flags::IC_CT_F_WINDOW.0);
        assert!(abi::CT_WSCALE_NONE as u32 == f::ic_ct_window_limits::IC_CT_WSCALE_NONE.0);
        assert!(abi::EventKind::IdsSnippet as u32 == f::ic_event_kind::IC_EVENT_IDS_SNIPPET.0);
        assert!(abi::IDS_SNAP as u32 == f::ic_ids_limits::IC_IDS_SNAP.0);
        assert!(abi::IDS_FLOWS == f::ic_ids_limits::IC_IDS_FLOWS.0);
        assert!(abi::IDS_PORTS == f::ic_ids_limits::IC_IDS_PORTS.0);
        assert!(abi::IDS_RING_BYTES == f::ic_ids_limits::IC_IDS_RING_BYTES.0);
        assert!(abi::IDS_F_ON == f::ic_ids_flags::IC_IDS_F_ON.0);
        assert!(abi::IDS_F_ALL_PORTS == f::ic_ids_flags::IC_IDS_F_ALL_PORTS.0);
        assert!(abi::IDS_F_DRY_RUN == f::ic_ids_flags::IC_IDS_F_DRY_RUN.0);
        assert!(abi::IDS_PORT_TCP as u32 == f::ic_ids_port_bits::IC_IDS_PORT_TCP.0);
        assert!(abi::IDS_PORT_UDP as u32 == f::ic_ids_port_bits::IC_IDS_PORT_UDP.0);
        assert!(abi::IDS_SNIP_ORIG as u32 == f::ic_ids_snippet_flags::IC_IDS_SNIP_ORIG.0);
        assert!(abi::IDS_SNIP_INBOUND as u32 == f::ic_ids_snippet_flags::IC_IDS_SNIP_INBOUND.0);
        assert!(abi::IDS_SNIP_INGRESS as u32 == f::ic_ids_snippet_flags::IC_IDS_SNIP_INGRESS.0);
        assert!(abi::IDS_SNIP_LAST as u32 == f::ic_ids_snippet_flags::IC_IDS_SNIP_LAST.0);
        assert!(abi::IdsConfig::SIZE == size_of::<f::ic_ids_config>());
        assert!(abi::IdsFlow::SIZE == size_of::<f::ic_ids_flow>());
        assert!(abi::IdsSnippet::SIZE == size_of::<f::ic_ids_snippet>());
        assert!(abi::FW_F_DROP_IN == f::ic_fw_flags::IC_FW_F_DROP_IN.0);
        assert!(abi::FW_F_STATEFUL == f::ic_fw_flags::IC_FW_F_STATEFUL.0);
        assert!(abi::FW_F_DRY_RUN == f::ic_fw_flags::IC_FW_F_DRY_RUN.0);
        assert!(abi::FW_F_FLOWS == f::ic_fw_flags::IC_FW_F_FLOWS.0);
        assert!(abi::FW_EV_RATE_LIMITED as u32 == f::ic_fw_event_flags::IC_FW_EV_RATE_LIMITED.0);
        assert!(abi::FW_EV_DRY_RUN as u32 == f::ic_fw_event_flags::IC_FW_EV_DRY_RUN.0);
        assert!(abi::FW_EV_INBOUND as u32 == f::ic_fw_event_flags::IC_FW_EV_INBOUND.0);
        assert!(abi::FW_RING_BYTES == f::ic_fw_ring::IC_FW_RING_BYTES.0);
        assert!(abi::EventKind::Firewall as u32 == f::ic_event_kind::IC_EVENT_FIREWALL.0);
        assert!(abi::FW_ACCEPT as u32 == f::ic_fw_action::IC_FW_ACCEPT.0);
        assert!(abi::FW_DROP as u32 == f::ic_fw_action::IC_FW_DROP.0);
        assert!(abi::FW_REJECT as u32 == f::ic_fw_action::IC_FW_REJECT.0);
    };
    same_layout!(
        abi::SynConfig,
        f::ic_syn_config,
        [mode, threshold_pps, hold_ms, mss4, mss6, wscale, _pad0]
    );
    same_layout!(abi::FwLimitRate, f::ic_fw_limit_rate, [per_sec, burst]);
    same_layout!(
        abi::NatDnatKey,
        f::ic_nat_dnat_key,
        [ifindex, dport, proto, family]
    );
    same_layout!(abi::NatTarget, f::ic_nat_target, [addr, port, rule, _pad0]);
    same_layout!(
        abi::NatSnatKey,
        f::ic_nat_snat_key,
        [prefixlen, ifindex, addr]
    );
    same_layout!(
        abi::NatKey,
        f::ic_nat_key,
        [src, dst, ifindex, sport, dport, proto, egress, _pad0]
    );
    same_layout!(
        abi::NatValue,
        f::ic_nat_value,
        [addr, port, rewrite, kind, rule, reply, _pad0, created_ns, ct]
    );
    same_layout!(abi::NatConfig, f::ic_nat_config, [active, _pad0]);
    same_layout!(
        abi::FwLimitConfig,
        f::ic_fw_limit_config,
        [rates, v4_prefix, v6_prefix, _pad0]
    );
    same_layout!(
        abi::FwLimitKey,
        f::ic_fw_limit_key,
        [addr, ifindex, port, proto, kind]
    );
    same_layout!(
        abi::FwLimitBucket,
        f::ic_fw_limit_bucket,
        [tokens, last_ns, dropped, event_ns]
    );
    same_layout!(
        abi::FwLimitEvent,
        f::ic_fw_limit_event,
        [
            hdr, key, src, dst, dropped, ifindex, per_sec, burst, sport, dport, proto, kind,
            prefix, flags, _pad0
        ]
    );
    same_layout!(
        abi::SynState,
        f::ic_syn_state,
        [window_ns, window_syns, attack_until_ns, attacks]
    );
    same_layout!(abi::FwAddrKey, f::ic_fw_addr_key, [prefixlen, tag, addr]);
    same_layout!(
        abi::FwPortKey,
        f::ic_fw_port_key,
        [prefixlen, tag, port, _pad0]
    );
    same_layout!(
        abi::FwWordKey,
        f::ic_fw_word_key,
        [class_id, word, slot, _pad0]
    );
    same_layout!(abi::FwSummary, f::ic_fw_summary, [words]);
    same_layout!(
        abi::FwEvent,
        f::ic_fw_event,
        [hdr, src, dst, rule_id, ifindex, sport, dport, proto, action, flags, _pad0]
    );
    same_layout!(
        abi::FwFlowEvent,
        f::ic_fw_flow_event,
        [
            hdr,
            src,
            dst,
            cgroup_id,
            created_ns,
            last_seen_ns,
            packets_orig,
            bytes_orig,
            packets_reply,
            bytes_reply,
            rule_id,
            ifindex,
            pid,
            sport,
            dport,
            proto,
            flags,
            phase,
            reason,
            state,
            _pad0,
            comm
        ]
    );
    same_layout!(
        abi::IdsConfig,
        f::ic_ids_config,
        [flags, depth, sample_every, prefix_lens]
    );
    same_layout!(
        abi::IdsPrefixKey,
        f::ic_ids_prefix_key,
        [port, len, to_server, bytes]
    );
    same_layout!(
        abi::IdsFlow,
        f::ic_ids_flow,
        [seen_orig, seen_reply, blocked, _pad0]
    );
    same_layout!(
        abi::IdsSnippet,
        f::ic_ids_snippet,
        [
            hdr,
            key,
            src,
            dst,
            cgroup_id,
            pid,
            ifindex,
            seq,
            offset,
            payload_len,
            sport,
            dport,
            len,
            proto,
            flags,
            data
        ]
    );
    same_layout!(
        abi::FwDefaultLog,
        f::ic_fw_default_log,
        [per_sec, _pad0, tokens, last_ns]
    );
    same_layout!(
        abi::FwRuleEntry,
        f::ic_fw_rule,
        [
            rule_id,
            action,
            flags,
            _pad0,
            rate_per_sec,
            rate_burst,
            digest
        ]
    );
}
